"""Initialising MoLE factors: PiSSA split of the base weight's singular components, or plain LoRA.

PiSSA (shared-first, the authors' layout), with W = U S Vᴴ in fp32 and R = r_shared + r_expert:

- shared takes components [0, r_shared), every expert the same components [r_shared, R),
  NL takes [0, R);  ``pissa-shared-last`` gives experts [0, r_expert) and shared [r_expert, R);
- a component block k is split as A = sqrt(S_k / scale) Vᴴ_k, B = U_k sqrt(S_k / scale), so that
  ``scale * B @ A`` reproduces it;
- the residual ``W_res = W - U_R S_R Vᴴ_R`` subtracts the union once; the removed factors are kept
  (``res_A``, ``res_B``) so a pack can rebuild W_res from the original checkpoint.

Right after init every labelling gives the base model's output: NL adds back [0, R), a code token adds
back shared + expert = [0, R), and unknown code (untagged, or a language with no expert nor fallback)
shared + the generic expert, which the layer reads from the residual factors' expert rows
(:meth:`MoleLinear.generic`). Experts are set from those same rows (:func:`init_expert_from_residual`):
the joint init and a language added later to a frozen core get bit-identical factors, with no new SVD
(an SVD of the rebuilt weight may pick other vectors where singular values at r_shared or R are nearly
equal, which took ``add_language`` off the base by rel 2.7e-5 on SmolLM2).
"""

from __future__ import annotations

import math

import torch

from mole_lsp.core.layer import LoraPair, MoleLinear


def top_components(w: torch.Tensor, k: int, method: str = "exact", oversample: int = 16,
                   niter: int = 4, generator_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k singular triplets (U: out x k, S: k, Vh: k x in) of ``w`` in fp32."""
    w = w.float()
    if method == "exact":
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u[:, :k], s[:k], vh[:k]
    if method == "randomized":
        q = min(k + oversample, min(w.shape))
        # svd_lowrank draws its test matrix from the global RNG; fork it so init stays reproducible.
        with torch.random.fork_rng(devices=[w.device] if w.device.type == "cuda" else []):
            torch.manual_seed(generator_seed)
            u, s, v = torch.svd_lowrank(w, q=q, niter=niter)
        return u[:, :k], s[:k], v[:, :k].T
    raise ValueError(f"unknown SVD method {method!r} (exact or randomized)")


def _assign(pair: LoraPair, u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor) -> None:
    root = torch.sqrt(s / pair.scale)
    pair.A.data.copy_((root[:, None] * vh).to(pair.A.dtype))
    pair.B.data.copy_((u * root[None, :]).to(pair.B.dtype))


@torch.no_grad()
def init_pissa(layer: MoleLinear, seed: int = 0) -> None:
    """PiSSA split: the adapters take the top singular components of the base weight, which keeps the rest."""
    cfg = layer.config
    r_s, r_e, big_r = cfg.r_shared, cfg.r_expert, cfg.r_code
    if big_r == 0:
        return
    w = layer.base.weight
    u, s, vh = top_components(w, big_r, cfg.svd, cfg.svd_oversample, cfg.svd_niter, seed)
    shared_sl = slice(r_e, big_r) if cfg.init == "pissa-shared-last" else slice(0, r_s)
    if layer.shared is not None:
        _assign(layer.shared, u[:, shared_sl], s[shared_sl], vh[shared_sl])
    if layer.nl is not None:
        _assign(layer.nl, u, s, vh)
    layer.res_A = vh.contiguous()
    layer.res_B = (u * s[None, :]).contiguous()
    for pair in layer.experts.values():
        init_expert_from_residual(layer, pair)
    apply_residual(layer, w.detach().float())


@torch.no_grad()
def apply_residual(layer: MoleLinear, original: torch.Tensor) -> None:
    """Set the base weight to ``original - res_B @ res_A`` (fp32 arithmetic, one rounding at the end).

    Training and pack loading both go through here, so the residual is bit-identical in both.
    """
    w = original.float()
    if layer.res_A.numel():
        w = torch.addmm(w, layer.res_B.to(w.device), layer.res_A.to(w.device), alpha=-1.0)
    layer.base.weight.data.copy_(w.to(layer.base.weight.dtype))
    layer.unmerge()
    layer.clear_cache()


@torch.no_grad()
def init_lora(layer: MoleLinear, generator: torch.Generator | None = None) -> None:
    """Standard LoRA: A ~ Kaiming-uniform (as PEFT), B = 0, base weight untouched."""
    for pair in _pairs(layer):
        init_lora_pair(pair, generator)


@torch.no_grad()
def init_lora_pair(pair: LoraPair, generator: torch.Generator | None = None) -> None:
    """LoRA init of one pair: A ~ Kaiming-uniform, B = 0 (so the adapter starts as a no-op)."""
    bound = 1.0 / math.sqrt(pair.A.shape[1])  # kaiming_uniform with a=sqrt(5) on fan_in
    # Drawn on the CPU so one seed gives the same factors on every device.
    a = torch.empty(pair.A.shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
    pair.A.data.copy_(a)
    pair.B.data.zero_()


@torch.no_grad()
def init_expert_from_residual(layer: MoleLinear, pair: LoraPair) -> None:
    """Set an expert to the components every expert starts from, read from the residual factors
    (``res_B = U S``, ``res_A = Vᴴ``; rows :meth:`MoleConfig.expert_components`), split as :func:`_assign`
    does. Used by the joint init and when a language is added to a frozen core, so both are identical."""
    sl = layer.config.expert_components(layer.res_A.shape[0])
    if sl is None:
        raise ValueError("the core has no PiSSA residual of this rank layout to start an expert from; "
                         "add the language with init='lora'")
    b = layer.res_B[:, sl].float()
    s = torch.linalg.vector_norm(b, dim=0)  # U's columns have unit norm
    root = torch.sqrt(s / pair.scale)
    pair.A.data.copy_((root[:, None] * layer.res_A[sl].float()).to(pair.A.dtype))
    pair.B.data.copy_((b * (root / s.clamp_min(torch.finfo(s.dtype).tiny))[None, :]).to(pair.B.dtype))
    layer.clear_cache()


def _pairs(layer: MoleLinear) -> list[LoraPair]:
    pairs = [p for p in (layer.shared, layer.nl) if p is not None]
    return pairs + list(layer.experts.values())
