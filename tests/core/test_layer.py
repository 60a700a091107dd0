"""The grouped MoLE layer against the plain masked reference, over many routings (forward + grads)."""

from __future__ import annotations

import pytest
import torch
from helpers import make_tiny_llama, perturb

from mole_lsp.core.config import MoleConfig
from mole_lsp.core.model import attach_mole
from mole_lsp.core.reference import reference_forward, reference_mode
from mole_lsp.core.routing import ROUTE_NL, ROUTE_PAD, ROUTE_UNKNOWN, make_plan

LANGS = ("python", "rust", "cpp", "go", "java", "javascript", "csharp", "c")


def routing(kind: str, shape: tuple[int, int], n_slots: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = shape[0] * shape[1]
    if kind == "one-language":
        r = torch.full((n,), 2)
    elif kind == "nl-only":
        r = torch.full((n,), ROUTE_NL)
    elif kind == "all-distinct":
        choices = torch.tensor([ROUTE_NL, ROUTE_UNKNOWN, *range(n_slots)])
        r = choices[torch.arange(n) % len(choices)]
    elif kind == "zipf":
        w = 1.0 / torch.arange(1, n_slots + 3, dtype=torch.float)
        r = torch.multinomial(w, n, replacement=True, generator=g) - 2  # -2..n_slots-1
        r = torch.where(r == -2, ROUTE_NL, torch.where(r == -1, ROUTE_UNKNOWN, r))
    elif kind == "mixed-padded":
        r = torch.randint(-2, n_slots, (n,), generator=g)
        r = r.view(shape)
        r[0, -3:] = ROUTE_PAD  # right padding
        r[-1, :2] = ROUTE_PAD  # left padding
        return r
    else:
        raise ValueError(kind)
    return r.view(shape)


KINDS = ("one-language", "nl-only", "all-distinct", "zipf", "mixed-padded")


@pytest.fixture(scope="module")
def mole():
    m = attach_mole(make_tiny_llama(), MoleConfig(r_shared=6, r_expert=2, languages=LANGS))
    perturb(m)
    return m


@pytest.mark.parametrize("kind", KINDS)
def test_layer_matches_reference_forward_and_grads(mole, kind):
    layer = mole.layers["model.layers.0.mlp.up_proj"]
    routes = routing(kind, (3, 11), len(mole.slots), seed=KINDS.index(kind))
    x = torch.randn(3, 11, layer.in_features, requires_grad=True)
    mole.state.set(routes, len(mole.slots))
    params = [p for p in layer.parameters() if p.requires_grad]

    y = layer(x)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, *params], gy, allow_unused=True)
    y_ref = reference_forward(layer, x, routes)
    grads_ref = torch.autograd.grad(y_ref, [x, *params], gy, allow_unused=True)

    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for g, gr in zip(grads, grads_ref, strict=True):
        if g is None:  # unused by the fast path: the reference must give exactly zero there
            assert gr is None or torch.count_nonzero(gr) == 0
        else:  # summation order differs (grouped vs masked): compare relative to the gradient's size
            assert ((g - gr).norm() / gr.norm().clamp_min(1e-12)).item() < 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_whole_model_matches_reference(mole, kind):
    ids = torch.randint(0, 128, (3, 11), generator=torch.Generator().manual_seed(5))
    routes = routing(kind, (3, 11), len(mole.slots), seed=10 + KINDS.index(kind))
    mask = (routes != ROUTE_PAD).long()
    fast = mole(input_ids=ids, attention_mask=mask, route_ids=routes).logits
    with reference_mode(mole.layers):
        ref = mole(input_ids=ids, attention_mask=mask, route_ids=routes).logits
    keep = mask.bool()
    torch.testing.assert_close(fast[keep], ref[keep], rtol=1e-5, atol=1e-5)


def test_gradient_isolation(mole):
    layer = mole.layers["model.layers.1.mlp.down_proj"]
    py, rs = mole.slots.index("python"), mole.slots.index("rust")
    x = torch.randn(2, 8, layer.in_features)

    def grads_for(routes: torch.Tensor) -> dict[str, torch.Tensor | None]:
        mole.zero_grad(set_to_none=True)
        mole.state.set(routes, len(mole.slots))
        layer(x).pow(2).sum().backward()
        named = {"shared": layer.shared.A, "nl": layer.nl.A}
        named.update({lang: layer.experts[lang].A for lang in layer.experts})
        return {k: p.grad for k, p in named.items()}

    only_nl = grads_for(torch.full((2, 8), ROUTE_NL))
    assert only_nl["nl"] is not None
    assert all(only_nl[k] is None for k in ["shared", *LANGS]), "NL tokens touched code adapters"

    mixed = torch.full((2, 8), py)
    mixed[1] = ROUTE_NL
    g = grads_for(mixed)
    assert g["python"] is not None and g["shared"] is not None and g["nl"] is not None
    assert all(g[k] is None for k in LANGS if k != "python"), "an absent expert got a gradient"

    unknown = grads_for(torch.tensor([[ROUTE_UNKNOWN] * 8, [rs] * 8]))
    assert unknown["nl"] is None and unknown["python"] is None and unknown["rust"] is not None


def test_plan_groups_are_contiguous_and_cover_tokens():
    routes = torch.tensor([3, ROUTE_NL, ROUTE_PAD, 0, ROUTE_UNKNOWN, 3, ROUTE_NL, 0])
    plan = make_plan(routes, n_slots=4)
    assert [g.route for g in plan.groups] == [ROUTE_NL, ROUTE_UNKNOWN, 0, 3]
    assert plan.groups[-1].stop == 7  # the pad token is not in the plan
    sorted_routes = routes[plan.order].tolist()
    for grp in plan.groups:
        assert set(sorted_routes[grp.start:grp.stop]) == {grp.route}
    with pytest.raises(ValueError, match="route ids"):
        make_plan(torch.tensor([0, 9]), n_slots=4)


def test_r_expert_zero_equals_plain_lora():
    model = make_tiny_llama()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = MoleConfig(r_shared=8, r_expert=0, languages=("python",), init="lora")
    mole = attach_mole(model, cfg)
    perturb(mole, seed=3)
    layer = mole.layers["model.layers.0.mlp.gate_proj"]
    x = torch.randn(4, 5, layer.in_features)
    mole.state.set(torch.zeros(4, 5, dtype=torch.long), len(mole.slots))
    w = base["model.layers.0.mlp.gate_proj.weight"]
    s = layer.shared
    expected = x @ w.T + s.scale * (x @ s.A.T) @ s.B.T  # LoRA of rank r_shared, nothing else
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    assert not layer.experts


@pytest.mark.parametrize("label", ["python", "nl", "rust"])
def test_merged_fast_path_equals_grouped_path(mole, label):
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(7))
    routes = mole.route_ids([label] * 18).view(2, 9)
    with torch.no_grad():
        plain = mole(input_ids=ids, route_ids=routes).logits
        mole.merge(label)
        try:
            merged = mole(input_ids=ids, route_ids=routes).logits
            # other routes still take the grouped path while merged
            other = mole.route_ids(["cpp"] * 18).view(2, 9)
            mixed = mole(input_ids=ids, route_ids=other).logits
        finally:
            mole.unmerge()
        mixed_ref = mole(input_ids=ids, route_ids=other).logits
    torch.testing.assert_close(merged, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed, mixed_ref, rtol=0, atol=0)


def test_kv_cache_decoding_matches_full_forward(mole):
    """Switching adapters token by token while the KV cache is kept equals one full forward."""
    ids = torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(9))
    labels = ["nl"] * 4 + ["rust"] * 5 + ["nl"] * 3
    routes = mole.route_ids(labels).view(1, 12)
    with torch.no_grad():
        full = mole(input_ids=ids, route_ids=routes).logits
        out = mole(input_ids=ids[:, :3], route_ids=routes[:, :3], use_cache=True)
        steps, cache = [out.logits], out.past_key_values
        for t in range(3, 12):
            out = mole(input_ids=ids[:, t:t + 1], route_ids=routes[:, t:t + 1], past_key_values=cache, use_cache=True)
            steps.append(out.logits)
            cache = out.past_key_values
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)


def test_route_for_uses_registry_fallbacks():
    mole = attach_mole(make_tiny_llama(), MoleConfig(r_shared=4, r_expert=2, languages=("javascript", "java")))
    assert mole.route_for("typescript") == mole.slots.index("javascript")
    assert mole.route_for("kotlin") == mole.slots.index("java")
    assert mole.route_for("nl") == ROUTE_NL
    assert mole.route_for("unknown") == ROUTE_UNKNOWN
    assert mole.route_for("not-a-language") == ROUTE_UNKNOWN
    assert mole.route_for("haskell") == ROUTE_UNKNOWN  # no pack, no fallback: shared only
    with pytest.raises(ValueError, match="route_ids"):
        mole(input_ids=torch.zeros(1, 2, dtype=torch.long))


def test_inference_mode_works(mole):
    ids = torch.randint(0, 128, (1, 5))
    with torch.inference_mode():
        routes = mole.route_ids(["python"] * 5)[None]
        fast = mole(input_ids=ids, route_ids=routes).logits
    with torch.no_grad():
        ref = mole(input_ids=ids, route_ids=mole.route_ids(["python"] * 5)[None]).logits
    torch.testing.assert_close(fast, ref)
