"""Right after init, every labelling reproduces the bare base model (PiSSA split and plain LoRA)."""

from __future__ import annotations

import pytest
import torch
from helpers import make_tiny_llama

from mole_lsp.core.config import MoleConfig
from mole_lsp.core.init import top_components
from mole_lsp.core.model import attach_mole

LANGS = ("python", "rust", "cpp", "go")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def labellings(n: int) -> dict[str, list[str]]:
    g = torch.Generator().manual_seed(0)
    pool = ["nl", *LANGS]
    mixed = [pool[i] for i in torch.randint(0, len(pool), (n,), generator=g).tolist()]
    out = {"nl": ["nl"] * n, "mixed": mixed}
    out.update({lang: [lang] * n for lang in LANGS})
    out["fallback-ts"] = ["typescript"] * n  # javascript absent: unknown route (shared + generic expert)
    return out


@pytest.mark.parametrize("init", ["pissa", "pissa-shared-last", "lora"])
@pytest.mark.parametrize("svd", ["exact", "randomized"])
def test_init_reproduces_base_logits(init, svd):
    if init == "lora" and svd == "randomized":
        pytest.skip("plain LoRA init does no SVD")
    base = make_tiny_llama(seed=2)
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = base(input_ids=ids).logits.clone()
    mole = attach_mole(base, MoleConfig(r_shared=6, r_expert=3, init=init, svd=svd, languages=LANGS))
    for name, labels in labellings(32).items():
        routes = mole.route_ids(labels).view(2, 16)
        with torch.no_grad():
            out = mole(input_ids=ids, route_ids=routes).logits
        assert rel_err(out, ref) < 1e-5, (init, svd, name)


def test_pissa_layout_of_components():
    """Shared gets the top components, experts the next ones, NL the union (authors' layout)."""
    base = make_tiny_llama(seed=3)
    w = base.model.layers[0].mlp.down_proj.weight.detach().clone()
    mole = attach_mole(base, MoleConfig(r_shared=5, r_expert=3, languages=LANGS))
    layer = mole.layers["model.layers.0.mlp.down_proj"]
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    torch.testing.assert_close(layer.shared.delta_weight(), (u[:, :5] * s[:5]) @ vh[:5], rtol=1e-4, atol=1e-5)
    for lang in LANGS:
        torch.testing.assert_close(layer.experts[lang].delta_weight(), (u[:, 5:8] * s[5:8]) @ vh[5:8],
                                   rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.nl.delta_weight(), (u[:, :8] * s[:8]) @ vh[:8], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.base.weight, w - (u[:, :8] * s[:8]) @ vh[:8], rtol=1e-4, atol=1e-5)
    # rsLoRA scales as in the authors' code
    assert layer.shared.scale == pytest.approx(32 / 5**0.5)
    assert layer.experts["python"].scale == pytest.approx(16 / 3**0.5)


def test_randomized_svd_matches_exact():
    g = torch.Generator().manual_seed(0)
    # A matrix with a decaying spectrum, like trained weights.
    u, _ = torch.linalg.qr(torch.randn(96, 96, generator=g))
    v, _ = torch.linalg.qr(torch.randn(64, 64, generator=g))
    s = torch.exp(-torch.arange(64, dtype=torch.float) / 6)
    w = (u[:, :64] * s) @ v.T
    ue, se, vhe = top_components(w, 10, "exact")
    ur, sr, vhr = top_components(w, 10, "randomized", oversample=16, niter=4)
    torch.testing.assert_close(sr, se, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close((ur * sr) @ vhr, (ue * se) @ vhe, rtol=1e-3, atol=1e-5)


def test_config_rejects_inconsistent_ranks():
    with pytest.raises(ValueError, match="r_nl"):
        MoleConfig(r_shared=8, r_expert=4, r_nl=16)
    with pytest.raises(ValueError, match="init"):
        MoleConfig(init="svd")
    assert MoleConfig().r_nl == 64
    assert MoleConfig(r_nl=16, init="lora").r_nl == 16
