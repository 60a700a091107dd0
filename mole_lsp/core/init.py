"""Initialising MoLE factors: PiSSA split of the base weight's singular components, or plain LoRA.

PiSSA (shared-first, the authors' layout), with W = U S Vᴴ in fp32 and R = r_shared + r_expert:

- shared takes components [0, r_shared), every expert the same components [r_shared, R),
  NL takes [0, R);  ``pissa-shared-last`` gives experts [0, r_expert) and shared [r_expert, R);
- a component block k is split as A = sqrt(S_k / scale) Vᴴ_k, B = U_k sqrt(S_k / scale), so that
  ``scale * B @ A`` reproduces it;
- the residual ``W_res = W - U_R S_R Vᴴ_R`` subtracts the union once; the removed factors are kept
  (``res_A``, ``res_B``) so a pack can rebuild W_res from the original checkpoint.

Right after init every labelling gives the base model's output: NL adds back [0, R), a code token adds
back shared + expert = [0, R). (``unknown`` code adds back only the shared part, by design.)
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
    shared_sl, expert_sl = (slice(0, r_s), slice(r_s, big_r))
    if cfg.init == "pissa-shared-last":
        shared_sl, expert_sl = (slice(r_e, big_r), slice(0, r_e))
    if layer.shared is not None:
        _assign(layer.shared, u[:, shared_sl], s[shared_sl], vh[shared_sl])
    for pair in layer.experts.values():
        _assign(pair, u[:, expert_sl], s[expert_sl], vh[expert_sl])
    if layer.nl is not None:
        _assign(layer.nl, u, s, vh)
    layer.res_A = vh.contiguous()
    layer.res_B = (u * s[None, :]).contiguous()
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


def init_expert_like_pissa(layer: MoleLinear, pair: LoraPair, original: torch.Tensor | None = None) -> None:
    """Initialise a NEW expert the way joint training did (used when a language is added to a frozen core).

    The expert components are taken from the SVD of the original weight (W_res + res_B @ res_A).
    """
    cfg = layer.config
    with torch.no_grad():
        w = original if original is not None else original_weight(layer)
        u, s, vh = top_components(w, cfg.r_code, cfg.svd, cfg.svd_oversample, cfg.svd_niter)
        sl = slice(0, cfg.r_expert) if cfg.init == "pissa-shared-last" else slice(cfg.r_shared, cfg.r_code)
        _assign(pair, u[:, sl], s[sl], vh[sl])


def original_weight(layer: MoleLinear) -> torch.Tensor:
    """The base weight before the residual was taken (fp32)."""
    w = layer.base.weight.detach().float()
    if layer.res_A.numel():
        w = torch.addmm(w, layer.res_B.to(w.device), layer.res_A.to(w.device))
    return w


def _pairs(layer: MoleLinear) -> list[LoraPair]:
    pairs = [p for p in (layer.shared, layer.nl) if p is not None]
    return pairs + list(layer.experts.values())
