"""Init exactness on the real quick-start base (SmolLM2-135M, skipped without ../shared/models): every route
of a chat with python, bash and untagged fences, and a language added to a frozen core, give the bare base's
logits at init (fp32 rel < 1e-5). Their FFN spectra have near-equal singular values at ranks 48 and 64,
where a fresh SVD of a rebuilt weight drifts (the old ``add_language``: rel ~2.7e-5 on the full model).

To stay fast it reads a few decoder layers straight from the GGUF into a Llama of that depth, with the
vocabulary cut to the tokens in play (logits over a subset of rows are the same numbers).
"""

from __future__ import annotations

import copy
import mmap
import struct
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


_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value types


def gguf_tensors(path: Path) -> tuple[mmap.mmap, int, dict[str, tuple[int, tuple[int, ...], int]]]:
    """(file map, data start, name -> (quant type, dims, offset)) from a GGUF header. gguf.GGUFReader
    builds a field for each of the 100k tokenizer strings first (~11 s on these machines); skipping them
    takes 0.1 s. Dequantization stays gguf's own."""
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        out = struct.unpack_from("<" + fmt, mm, pos)
        pos += struct.calcsize("<" + fmt)
        return out

    def skip(kind: int) -> None:
        nonlocal pos
        if kind == 8:  # string
            n = take("Q")[0]  # before the += (which would read pos first)
            pos += n
        elif kind == 9:  # array
            elem, n = take("IQ")
            if elem in _SCALAR_BYTES:
                pos += _SCALAR_BYTES[elem] * n
            else:
                for _ in range(n):
                    skip(elem)
        else:
            pos += _SCALAR_BYTES[kind]

    def name() -> str:
        nonlocal pos
        n = take("Q")[0]
        pos += n
        return mm[pos - n:pos].decode()

    _magic, _version, n_tensors, n_kv = take("IIQQ")
    align = 32
    for _ in range(n_kv):
        key, kind = name(), take("I")[0]
        if key == "general.alignment":
            align = take("I")[0]
        else:
            skip(kind)
    infos = {}
    for _ in range(n_tensors):
        tname = name()
        dims = take("Q" * take("I")[0])
        infos[tname] = (*take("I"), dims, take("Q")[0])
    return mm, -(-pos // align) * align, {k: (v[0], v[1], v[2]) for k, v in infos.items()}


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
    mm, start, infos = gguf_tensors(GGUF)

    def get(name: str, rows: list[int] | None = None) -> torch.Tensor:
        kind, dims, offset = infos[name]
        qtype = gguf.GGMLQuantizationType(kind)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        n_rows, row_bytes = int(np.prod(dims[1:])), dims[0] // block * size
        data = np.frombuffer(mm, np.uint8, count=n_rows * row_bytes, offset=start + offset).reshape(n_rows, row_bytes)
        w = gguf.quants.dequantize(data if rows is None else data[rows], qtype)
        w = np.array(w, dtype=np.float32)
        return torch.from_numpy(w.reshape(dims[0]) if len(dims) == 1 else w.reshape(-1, dims[0]))

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
