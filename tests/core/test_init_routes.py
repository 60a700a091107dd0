"""Init exactness on EVERY route: right after init (joint attach, packs loaded back, a language added to a
frozen core), NL, each language, a registry fallback, a language with no expert and untagged code all give
the bare base's logits (fp32 rel < 1e-5)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from helpers import make_tiny_llama, perturb

from mole_lsp.core.config import MoleConfig
from mole_lsp.core.model import attach_mole
from mole_lsp.core.reference import reference_mode
from mole_lsp.packs.format import BaseIdentity, export_packs, load_core, load_packs

LANGS = ("python", "rust", "javascript")
N = 24
# label -> what it exercises: typescript falls back to javascript; kotlin's fallback (java) has no expert
# and haskell has none at all (both: unknown route); "unknown" = an untagged fence.
ROUTE_LABELS = ("nl", *LANGS, "typescript", "kotlin", "haskell", "unknown")
CONFIGS = {
    "pissa": MoleConfig(r_shared=6, r_expert=3, languages=LANGS),
    "shared-last": MoleConfig(r_shared=6, r_expert=3, init="pissa-shared-last", languages=LANGS),
    "randomized": MoleConfig(r_shared=6, r_expert=3, svd="randomized", languages=LANGS),
    "nl-expert": MoleConfig(r_shared=6, r_expert=3, nl_mode="expert", languages=LANGS),
    "lora": MoleConfig(r_shared=6, r_expert=3, init="lora", languages=LANGS),
}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def labellings() -> dict[str, list[str]]:
    out = {label: [label] * N for label in ROUTE_LABELS}
    g = torch.Generator().manual_seed(0)
    out["mixed"] = [ROUTE_LABELS[i] for i in torch.randint(0, len(ROUTE_LABELS), (N,), generator=g).tolist()]
    return out


IDS = torch.randint(0, 128, (2, N // 2), generator=torch.Generator().manual_seed(1))


def logits(model, mole=None, labels=None) -> torch.Tensor:
    with torch.no_grad():
        if mole is None:
            return model(input_ids=IDS).logits
        return mole(input_ids=IDS, route_ids=mole.route_ids(labels).view(IDS.shape)).logits


def assert_every_route_is_base(mole, ref: torch.Tensor, what: str) -> None:
    errs = {name: rel_err(logits(None, mole, labels), ref) for name, labels in labellings().items()}
    bad = {k: f"{v:.2e}" for k, v in errs.items() if not v < 1e-5}
    assert not bad, f"{what}: routes off the base at init: {bad}"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_route_is_the_base_at_init(name):
    base = make_tiny_llama(seed=2)
    ref = logits(base)
    mole = attach_mole(base, copy.deepcopy(CONFIGS[name]))
    assert mole.route_for("kotlin") == mole.route_for("haskell") == mole.route_for("unknown") < 0
    assert_every_route_is_base(mole, ref, name)
    with reference_mode(mole.layers):  # the slow masked reference agrees
        assert_every_route_is_base(mole, ref, f"{name} (reference)")
    mole.merge("unknown")  # the merged fast path of untagged code
    try:
        assert rel_err(logits(None, mole, ["unknown"] * N), ref) < 1e-5
    finally:
        mole.unmerge()


@pytest.mark.parametrize("name", ["pissa", "shared-last"])
def test_every_route_is_the_base_after_loading_packs(name, tmp_path: Path):
    """The unknown route needs nothing beyond the pack format: it is rebuilt from the core's residual factors."""
    base = make_tiny_llama(seed=2)
    ref = logits(base)
    mole = attach_mole(copy.deepcopy(base), copy.deepcopy(CONFIGS[name]))
    export_packs(mole, tmp_path / "packs", BaseIdentity("tiny/base"))
    loaded = load_packs(copy.deepcopy(base), tmp_path / "packs")
    assert_every_route_is_base(loaded, ref, name)


def degenerate_llama():
    """A tiny Llama whose FFN weights have EQUAL singular values across both split points (r_s and r_code):
    any fresh SVD of a rebuilt weight may pick another basis of those planes than the one the core removed."""
    model = make_tiny_llama(seed=4)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for layer in model.model.layers:
            for lin in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                out_f, in_f = lin.weight.shape
                k = min(out_f, in_f)
                u, _ = torch.linalg.qr(torch.randn(out_f, k, generator=g))
                v, _ = torch.linalg.qr(torch.randn(in_f, k, generator=g))
                s = torch.linspace(3.0, 0.2, k)
                s[5:7] = s[5]  # components 5, 6 (r_shared = 6)
                s[8:10] = s[8]  # components 8, 9 (r_code = 9)
                lin.weight.copy_((u * s) @ v.T)
    return model


@pytest.mark.parametrize("name", ["pissa", "shared-last"])
def test_added_language_starts_exactly_like_a_joint_expert(name, tmp_path: Path):
    base = degenerate_llama()
    ref = logits(base)
    cfg = copy.deepcopy(CONFIGS[name])
    cfg.languages = ("python",)
    joint = attach_mole(copy.deepcopy(base), cfg)
    export_packs(joint, tmp_path / "packs", BaseIdentity("tiny/base"))
    perturb(joint)  # the joint model trains on; the core on disk is what add_language starts from

    mole = load_core(copy.deepcopy(base), tmp_path / "packs" / "core")
    mole.add_language("rust", init="pissa")
    assert rel_err(logits(None, mole, ["rust"] * N), ref) < 1e-5
    # the new expert holds the very factors every joint expert started from (no new SVD)
    fresh = attach_mole(copy.deepcopy(base), cfg)
    for key, layer in mole.layers.items():
        assert torch.equal(layer.experts["rust"].A, fresh.layers[key].experts["python"].A), key
        assert torch.equal(layer.experts["rust"].B, fresh.layers[key].experts["python"].B), key


def test_prepare_add_language_is_exact(tmp_path: Path):
    from training.methods import prepare_add_language

    base = degenerate_llama()
    ref = logits(base)
    joint = attach_mole(copy.deepcopy(base), MoleConfig(r_shared=6, r_expert=3, languages=("python",)))
    export_packs(joint, tmp_path / "packs", BaseIdentity("tiny/base"))
    prepared = prepare_add_language(copy.deepcopy(base), tmp_path / "packs" / "core", "go")
    for label in ("go", "unknown", "nl", "python"):  # python: no expert loaded, so the unknown route
        assert rel_err(logits(None, prepared.mole, [label] * N), ref) < 1e-5, label
    names = set(prepared.named_trainable())
    assert names and all(".experts.go." in n for n in names)


def test_unknown_code_trains_only_the_shared_adapter():
    """The generic components unknown code goes through are frozen: derived from the core, never trained."""
    mole = attach_mole(make_tiny_llama(seed=2), copy.deepcopy(CONFIGS["pissa"]))
    out = mole(input_ids=IDS, route_ids=mole.route_ids(["unknown"] * N).view(IDS.shape))
    out.logits.sum().backward()
    layer = mole.layers["model.layers.0.mlp.up_proj"]
    assert layer.shared.A.grad is not None
    assert all(p.A.grad is None for p in layer.experts.values()) and layer.nl.A.grad is None
    assert {n for n, p in mole.named_parameters() if p.requires_grad} == {
        n for n, p in mole.named_parameters() if ".shared." in n or ".nl." in n or ".experts." in n
    }
