"""The exports on the real quick-start base (SmolLM2-135M, skipped without ../shared/models): PEFT on the
untouched base reproduces the python and NL routes (fp32 rel < 1e-5), and llama.cpp on an F32 copy of the GGUF
with the GGUF export stays at llama.cpp's bare floor (and near the bare one on the Q4_1 file itself)."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch
from gguf_base import dequantized_gguf, llama_cpp_logits
from helpers import SMOLLM2, perturb

from mole_lsp.core.config import MoleConfig
from mole_lsp.core.model import attach_mole
from mole_lsp.export.bundle import export_packs_as_lora, gguf_file_name
from mole_lsp.packs.format import BaseIdentity, export_packs, load_packs

GGUF = SMOLLM2 / "SmolLM2-135M-Instruct.Q4_1.gguf"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not GGUF.is_file(), reason="SmolLM2 GGUF not present (../shared/models)"),
]
TEXT = "def reverse(xs):\n    return xs[::-1]\n# reverse a list"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    from mole_lsp.engine.base_model import load_base_model, resolve_base_model

    tmp = tmp_path_factory.mktemp("smol-export")
    # MOLE_TEST_MODEL_CACHE lets repeated runs reuse one converted copy (the conversion is the slow part)
    cache = os.environ.get("MOLE_TEST_MODEL_CACHE", str(tmp / "cache"))
    info = resolve_base_model(str(GGUF), cache_dir=cache)
    base, tok = load_base_model(info)
    mole = attach_mole(
        copy.deepcopy(base), MoleConfig(r_shared=8, r_expert=4, languages=("python",), svd="randomized")
    )
    perturb(mole, seed=3, std=0.005)
    repo = export_packs(mole, tmp / "packs", BaseIdentity(info.repo_id, info.revision, info.weights_sha256))
    del mole
    ids = tok(TEXT, return_tensors="pt").input_ids
    return base, ids, repo, tmp


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_smollm2_peft_and_gguf_exports(world) -> None:
    peft = pytest.importorskip("peft")
    base, ids, repo, tmp = world
    experts = {"python": repo / "experts" / "python"}
    export_packs_as_lora(repo / "core", experts, tmp / "peft", "peft")
    mole = load_packs(copy.deepcopy(base), repo)
    want, peft_out = {}, {}
    with torch.no_grad():
        bare = base(input_ids=ids).logits[0]
        for route in ("python", "nl"):
            want[route] = mole(input_ids=ids, route_ids=mole.route_ids([route] * ids.shape[1])[None]).logits[
                0
            ]
            model = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp / "peft" / route)).eval()
            peft_out[route] = model(input_ids=ids).logits[0]
            assert rel(peft_out[route], want[route]) < 1e-5, route
            assert rel(bare, want[route]) > 1e-3, route
    pytest.importorskip("llama_cpp")
    export_packs_as_lora(repo / "core", experts, tmp / "gguf", "gguf")
    tokens = ids[0].tolist()
    # F32 copy of the GGUF (the weights torch runs): llama.cpp's arithmetic floor, the adapter must stay at it
    f32 = dequantized_gguf(GGUF, tmp / "smollm2-f32.gguf")
    floor = float(np.abs(llama_cpp_logits(f32, tokens) - bare.numpy()).max())
    for route in ("python", "nl"):
        got = llama_cpp_logits(f32, tokens, tmp / "gguf" / route / gguf_file_name(route))
        err = float(np.abs(got - peft_out[route].numpy()).max())
        moved = float((peft_out[route] - bare).abs().max())
        assert err <= 5 * max(floor, 1e-4), f"{route}: llama.cpp {err} vs bare floor {floor}"
        assert moved > 100 * err, f"{route}: adapter effect {moved} vs error {err}"
    # the Q4_1 file itself (activations quantized to Q8_1 by llama.cpp): the adapter keeps the relative
    # error near the bare one and brings llama.cpp far closer to the route than the bare base is
    q_floor = rel(torch.from_numpy(llama_cpp_logits(GGUF, tokens)), bare)
    for route in ("python", "nl"):
        got = torch.from_numpy(llama_cpp_logits(GGUF, tokens, tmp / "gguf" / route / gguf_file_name(route)))
        assert rel(got, peft_out[route]) < 2 * q_floor, route
        assert rel(got, peft_out[route]) < 0.25 * rel(bare, peft_out[route]), route
