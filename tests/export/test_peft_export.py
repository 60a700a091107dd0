"""Exports of every route as one standard LoRA: PEFT on the untouched base reproduces mole-lsp's routes
(fp32 rel < 1e-5), and llama.cpp with the GGUF export agrees with PEFT at llama.cpp's own floor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf_base import llama_cpp_logits, tiny_gguf_vocab, write_f32_gguf
from helpers import make_tiny_llama, perturb

from mole_lsp.core.config import MoleConfig
from mole_lsp.core.model import attach_mole
from mole_lsp.export.bundle import export_packs_as_lora, gguf_file_name
from mole_lsp.packs.format import BaseIdentity, export_packs, fingerprint_model, load_packs

peft = pytest.importorskip("peft")

LANGS = ("python", "rust")
SEED = 11
TOKENS = [5, 80, 81, 120, 7, 33, 200, 64, 90, 12, 150, 3]


def tiny_base():
    return make_tiny_llama(seed=SEED, vocab_size=len(tiny_gguf_vocab()))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def packs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PiSSA-initialised MoLE (so the residual is not zero) with perturbed adapters, as a pack repo."""
    base = tiny_base()
    ident = BaseIdentity("tiny/export-base", "r1", fingerprint_model(base))
    mole = attach_mole(base, MoleConfig(r_shared=4, r_expert=2, languages=LANGS))
    perturb(mole, seed=5, std=0.1)
    return export_packs(mole, tmp_path_factory.mktemp("packs") / "repo", ident)


def experts(repo: Path) -> dict[str, Path]:
    return {lang: repo / "experts" / lang for lang in LANGS}


def mole_logits(repo: Path, label: str) -> torch.Tensor:
    mole = load_packs(tiny_base(), repo)
    ids = torch.tensor([TOKENS])
    with torch.no_grad():
        return mole(input_ids=ids, route_ids=mole.route_ids([label] * len(TOKENS))[None]).logits[0]


def peft_logits(folder: Path) -> torch.Tensor:
    model = peft.PeftModel.from_pretrained(tiny_base(), str(folder)).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([TOKENS])).logits[0]


def test_peft_export_reproduces_every_route(packs: Path, tmp_path: Path) -> None:
    routes = export_packs_as_lora(packs / "core", experts(packs), tmp_path, "peft")
    assert set(routes.routes) == {*LANGS, "nl", "code"}
    cfg = json.loads((tmp_path / "rust" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "tiny/export-base" and cfg["revision"] == "r1"
    assert cfg["r"] == cfg["lora_alpha"] == 4 + 2 + 6  # residual (r_shared + r_expert) + shared + expert
    assert sorted(cfg["target_modules"]) == ["down_proj", "gate_proj", "up_proj"]
    bare = peft_logits_bare()
    for route, label in (("python", "python"), ("rust", "rust"), ("nl", "nl"), ("code", "unknown")):
        want = mole_logits(packs, label)
        got = peft_logits(tmp_path / route)
        assert rel(got, want) < 1e-5, route
        assert rel(bare, want) > 1e-2, f"{route}: the route should differ from the bare base"
    readme = (tmp_path / "README.md").read_text()
    assert "vllm serve tiny/export-base --enable-lora" in readme and "rust=./rust" in readme


def peft_logits_bare() -> torch.Tensor:
    with torch.no_grad():
        return tiny_base()(input_ids=torch.tensor([TOKENS])).logits[0]


def test_gguf_export_agrees_with_peft_at_llama_cpp_floor(packs: Path, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    base_gguf = write_f32_gguf(tmp_path / "base-f32.gguf", tiny_base())
    floor = float(np.abs(llama_cpp_logits(base_gguf, TOKENS) - peft_logits_bare().numpy()).max())
    export_packs_as_lora(packs / "core", experts(packs), tmp_path / "peft", "peft")
    export_packs_as_lora(packs / "core", experts(packs), tmp_path / "gguf", "gguf")
    assert (
        "llama-server -m base.gguf --lora ./python/mole-python-lora.gguf"
        in (tmp_path / "gguf" / "README.md").read_text()
    )
    for route in ("python", "nl"):
        want = peft_logits(tmp_path / "peft" / route).numpy()
        got = llama_cpp_logits(base_gguf, TOKENS, tmp_path / "gguf" / route / gguf_file_name(route))
        err = float(np.abs(got - want).max())
        assert err <= 5 * max(floor, 1e-5), f"{route}: llama.cpp {err} vs bare floor {floor}"


def test_nl_as_an_expert_exports_the_nl_route(tmp_path: Path) -> None:
    """nl_mode="expert" (the ablation): NL tokens take shared + the "nl" expert, and so does the export."""
    base = tiny_base()
    mole = attach_mole(base, MoleConfig(r_shared=4, r_expert=2, languages=("python",), nl_mode="expert"))
    perturb(mole, seed=6, std=0.1)
    repo = export_packs(
        mole, tmp_path / "repo", BaseIdentity("tiny/export-base", None, fingerprint_model(tiny_base()))
    )
    routes = export_packs_as_lora(
        repo / "core", {x: repo / "experts" / x for x in ("python", "nl")}, tmp_path / "out", "peft"
    )
    assert set(routes.routes) == {"python", "nl", "code"}
    assert rel(peft_logits(tmp_path / "out" / "nl"), mole_logits(repo, "nl")) < 1e-5
    assert rel(peft_logits(tmp_path / "out" / "python"), mole_logits(repo, "python")) < 1e-5
