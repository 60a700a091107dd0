"""Init exactness on the real quick-start base (SmolLM2-135M, skipped without ../shared/models): every route
of a chat with python, bash and untagged fences, and a language added to a frozen core, give the bare base's
logits at init (fp32 rel < 1e-5). Their FFN spectra have near-equal singular values at ranks 48 and 64,
where a fresh SVD of a rebuilt weight drifts (the old ``add_language``: rel ~2.7e-5 on the full model).

To stay fast it reads a few decoder layers straight from the GGUF into a Llama of that depth, with the
vocabulary cut to the tokens in play (logits over a subset of rows are the same numbers).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SMOLLM2

from mole_lsp.core.config import MoleConfig
from mole_lsp.core.model import attach_mole
from mole_lsp.lang.detok import token_labels
from mole_lsp.packs.format import BaseIdentity, export_packs, load_core

GGUF = SMOLLM2 / "SmolLM2-135M-Instruct.Q4_1.gguf"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (GGUF.is_file() and (SMOLLM2 / "tokenizer.json").is_file()),
                       reason="SmolLM2 GGUF not present (../shared/models)"),
]
LAYERS = (1, 5, 11, 19)  # among those whose spectra drift most under a fresh SVD (measured)
VOCAB = 1024  # logit rows kept besides the text's own tokens
CHAT = ("<|im_start|>user\nWhat does this do?\n```bash\nls -la | grep '.py$' | wc -l\n```\n<|im_end|>\n"
        "<|im_start|>assistant\nIt counts files. In Python:\n```python\nimport glob\nprint(len(glob.glob('*.py')))\n"
        "```\nor untagged:\n```\nfind . -name '*.py'\n```\n<|im_end|>\n")


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order (its rope layout)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="module")
def world():
    """(model, input ids [1, n], fence labels): SmolLM2's real weights for LAYERS, vocab cut to the text's."""
    import gguf
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = Tokenizer.from_file(str(SMOLLM2 / "tokenizer.json"))
    ids, labels = token_labels(tok, CHAT)
    assert {"nl", "python", "unknown"} <= set(labels)  # ```bash: shell has no expert nor fallback here
    vocab = sorted(set(ids) | set(range(VOCAB)))
    remap = {t: i for i, t in enumerate(vocab)}
    reader = gguf.GGUFReader(str(GGUF))
    tensors = {t.name: t for t in reader.tensors}

    def get(name: str, rows: list[int] | None = None) -> torch.Tensor:
        t = tensors[name]
        data = t.data if rows is None else t.data[rows]
        return torch.from_numpy(np.array(gguf.quants.dequantize(data, t.tensor_type), dtype=np.float32))

    cfg = LlamaConfig.from_pretrained(SMOLLM2)
    cfg.num_hidden_layers, cfg.vocab_size, cfg._attn_implementation = len(LAYERS), len(vocab), "eager"
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).float().eval()
    sd = {"model.embed_tokens.weight": get("token_embd.weight", vocab), "model.norm.weight": get("output_norm.weight")}
    heads = (cfg.num_attention_heads, cfg.num_key_value_heads)
    for i, src in enumerate(LAYERS):
        p, b = f"model.layers.{i}.", f"blk.{src}."
        sd[p + "input_layernorm.weight"] = get(b + "attn_norm.weight")
        sd[p + "post_attention_layernorm.weight"] = get(b + "ffn_norm.weight")
        sd[p + "self_attn.q_proj.weight"] = torch.from_numpy(_unpermute(get(b + "attn_q.weight").numpy(), heads[0]))
        sd[p + "self_attn.k_proj.weight"] = torch.from_numpy(_unpermute(get(b + "attn_k.weight").numpy(), heads[1]))
        sd[p + "self_attn.v_proj.weight"] = get(b + "attn_v.weight")
        sd[p + "self_attn.o_proj.weight"] = get(b + "attn_output.weight")
        for proj in ("gate", "up", "down"):
            sd[p + f"mlp.{proj}_proj.weight"] = get(b + f"ffn_{proj}.weight")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied to the embedding
    model.tie_weights()
    return model, torch.tensor([[remap[t] for t in ids]]), labels


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def run(model, ids, mole=None, labels=None) -> torch.Tensor:
    with torch.no_grad():
        if mole is None:
            return model(input_ids=ids).logits
        return mole(input_ids=ids, route_ids=mole.route_ids(labels)[None]).logits


def test_every_route_of_a_chat_is_the_base_at_init(world):
    model, ids, labels = world
    ref = run(model, ids)
    mole = attach_mole(copy.deepcopy(model), MoleConfig(languages=("python", "rust")))  # the paper's 48 + 16
    n = len(labels)
    cases = {"chat": labels, "all-unknown": ["unknown"] * n, "all-shell": ["shell"] * n,
             "all-typescript": ["typescript"] * n, "all-python": ["python"] * n, "all-nl": ["nl"] * n}
    errs = {k: rel_err(run(None, ids, mole, v), ref) for k, v in cases.items()}
    print({k: f"{v:.1e}" for k, v in errs.items()})
    assert all(v < 1e-5 for v in errs.values()), errs


def test_added_language_is_the_base_at_init(world, tmp_path: Path):
    model, ids, labels = world
    ref = run(model, ids)
    joint = attach_mole(copy.deepcopy(model), MoleConfig(languages=("python",)))
    export_packs(joint, tmp_path / "packs", BaseIdentity("smollm2-test"))
    mole = load_core(copy.deepcopy(model), tmp_path / "packs" / "core")
    mole.add_language("rust", init="pissa")
    errs = {"joint python": rel_err(run(None, ids, joint, ["python"] * len(labels)), ref),
            "added rust": rel_err(run(None, ids, mole, ["rust"] * len(labels)), ref)}
    print({k: f"{v:.1e}" for k, v in errs.items()})
    assert all(v < 1e-5 for v in errs.values()), errs
