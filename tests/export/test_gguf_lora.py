"""GGUF LoRA files loaded by llama.cpp reproduce W + (alpha / r) B A computed with torch on the same base.

The bare-base floor (llama.cpp vs torch on identical F32 weights) is measured first; the adapter must
agree within a small multiple of it while moving the logits far more than that."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf_base import llama_cpp_logits, tiny_gguf_vocab, write_f32_gguf
from helpers import make_tiny_llama

from mole_lsp.export.gguf_lora import gguf_tensor_name, write_gguf_lora

pytest.importorskip("llama_cpp")

TOKENS = [5, 80, 81, 120, 7, 33, 200, 64, 90, 12]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory):
    model = make_tiny_llama(seed=7, vocab_size=len(tiny_gguf_vocab()))
    path = write_f32_gguf(tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf", model)
    return path, model


def torch_logits(model, factors=None, alpha: float = 0.0) -> np.ndarray:
    """Logits with every factor pair merged as W + (alpha / r) B A (alpha 0: W + B A), llama.cpp's rule."""
    model = copy.deepcopy(model)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, (a, b) in (factors or {}).items():
            scale = alpha / a.shape[0] if alpha else 1.0
            modules[name].weight += scale * (b @ a)
        return model(torch.tensor([TOKENS])).logits[0].numpy()


def random_factors(model, ranks: dict[str, int], seed: int = 0, std: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    out = {}
    for name, r in ranks.items():
        w = modules[name].weight
        out[name] = (
            torch.randn(r, w.shape[1], generator=g) * std,
            torch.randn(w.shape[0], r, generator=g) * std,
        )
    return out


def floor(base) -> float:
    path, model = base
    return float(np.abs(llama_cpp_logits(path, TOKENS) - torch_logits(model)).max())


def test_tensor_names_follow_llama_cpp() -> None:
    assert gguf_tensor_name("model.layers.3.mlp.gate_proj") == "blk.3.ffn_gate.weight"
    assert gguf_tensor_name("base_model.model.model.layers.0.mlp.down_proj.weight") == "blk.0.ffn_down.weight"
    assert gguf_tensor_name("model.layers.1.self_attn.o_proj") == "blk.1.attn_output.weight"
    with pytest.raises(ValueError, match="no llama.cpp tensor"):
        gguf_tensor_name("model.embed_tokens")


def test_ffn_adapter_with_per_tensor_ranks_matches_torch(base, tmp_path: Path) -> None:
    path, model = base
    bare = floor(base)
    assert bare < 1e-3, f"llama.cpp F32 vs torch floor unexpectedly large: {bare}"
    ranks = {
        f"model.layers.{i}.mlp.{p}_proj": r
        for i in range(2)
        for p, r in zip(("gate", "up", "down"), (4, 6, 3), strict=True)
    }
    factors = random_factors(model, ranks)
    alpha = 8.0  # llama.cpp scales each tensor by alpha / ITS rank
    lora = tmp_path / "ffn.gguf"
    write_gguf_lora(lora, factors, alpha, name="test adapter")
    got = llama_cpp_logits(path, TOKENS, lora)
    want = torch_logits(model, factors, alpha)
    moved = float(np.abs(want - torch_logits(model)).max())
    err = float(np.abs(got - want).max())
    assert moved > 100 * max(bare, 1e-5), "adapter too weak to test anything"
    assert err <= 5 * max(bare, 1e-5), f"adapter error {err} vs bare floor {bare}"
    # the same file at alpha 0 means "B A as is" (scale 1)
    write_gguf_lora(lora, factors, 0.0, dtype="f32")
    got0 = llama_cpp_logits(path, TOKENS, lora)
    assert float(np.abs(got0 - torch_logits(model, factors, 0.0)).max()) <= 5 * max(bare, 1e-5)


def test_attention_adapter_and_f16(base, tmp_path: Path) -> None:
    path, model = base
    bare = floor(base)
    cfg = model.config
    ranks = {f"model.layers.{i}.self_attn.{p}_proj": 2 for i in range(2) for p in ("q", "k", "v", "o")}
    factors = random_factors(model, ranks, seed=1)
    lora = tmp_path / "attn.gguf"
    with pytest.raises(ValueError, match="n_head"):
        write_gguf_lora(lora, factors, 0.0)
    write_gguf_lora(lora, factors, 0.0, n_head=cfg.num_attention_heads, n_head_kv=cfg.num_key_value_heads)
    want = torch_logits(model, factors)
    assert float(np.abs(llama_cpp_logits(path, TOKENS, lora) - want).max()) <= 5 * max(bare, 1e-5)
    # F16 factors: fp16 rounding of A and B, far above the F32 floor but far below the adapter's effect
    write_gguf_lora(
        lora, factors, 0.0, dtype="f16", n_head=cfg.num_attention_heads, n_head_kv=cfg.num_key_value_heads
    )
    err16 = float(np.abs(llama_cpp_logits(path, TOKENS, lora) - want).max())
    assert err16 < 0.01 * float(np.abs(want - torch_logits(model)).max())
