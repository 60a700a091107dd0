"""Shared fixtures: tiny random Llama models (no network, no ../shared needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the real Hub; local hubs set their own
torch.set_num_threads(1)

pytest_plugins = ["hub_server"]  # the local_hub fixture (a stdlib stand-in for the Hugging Face Hub)

SHARED = Path(os.environ.get("MOLE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SMOLLM2 = SHARED / "models" / "smollm2-135m-instruct"


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    kw = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              tie_word_embeddings=False, attn_implementation="eager")
    kw.update(overrides)
    return LlamaConfig(**kw)


def make_tiny_llama(seed: int = 0, **overrides):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(**overrides)).float().eval()
    # Random init has tiny FFN weights; widen them so adapter errors show up in the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "mlp" in name:
                p.normal_(0, 0.2)
    return model


@pytest.fixture
def tiny_llama():
    return make_tiny_llama()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    if not (SMOLLM2 / "tokenizer.json").exists():
        pytest.skip("SmolLM2 quick-start model not present (../shared/models)")
    return SMOLLM2
