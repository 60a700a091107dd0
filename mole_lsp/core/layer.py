"""The MoLE linear layer: one frozen base linear plus token-routed low-rank adapters.

For a token x routed to

- an expert slot ``e``: ``y = W_res x + s_s B_s A_s x + s_e B_e A_e x``
- NL:                   ``y = W_res x + s_nl B_nl A_nl x``
- unknown code:         ``y = W_res x + s_s B_s A_s x + G x``
- padding:              ``y = W_res x``

``G`` is the **generic expert** (:meth:`MoleLinear.generic`): the PiSSA components every expert starts
from, read from the residual factors the core already carries (no tensor of its own in a pack, never
trained). Untagged code, and code of a language with no expert nor fallback, thus goes through what an
untrained expert would add: the base model exactly at init, and after training the trained shared adapter
plus the components the residual took out (what a language added later starts from).

The base linear runs once over all tokens. Tokens are then sorted by adapter group (one permutation per
forward, see :mod:`mole_lsp.core.routing`) and every group runs one rank-(r_s + r_e) product over its
contiguous slice: shared and expert factors are concatenated (scales folded into A), so a code token
costs the same as one rank-64 LoRA, and no adapter ever sees tokens that are not its own.

How the layer is put into a model lives in :mod:`mole_lsp.core.model`; how its factors are initialised, in
:mod:`mole_lsp.core.init`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mole_lsp.core.config import MoleConfig
from mole_lsp.core.routing import ROUTE_NL, ROUTE_PAD, ROUTE_UNKNOWN, RoutingState


class LoraPair(nn.Module):
    """Low-rank factors ``scale * B @ A`` (A: r x in, B: out x r)."""

    def __init__(self, in_features: int, out_features: int, r: int, scale: float, dtype: torch.dtype,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.r = r
        self.scale = scale
        self.A = nn.Parameter(torch.zeros(r, in_features, dtype=dtype, device=device))
        self.B = nn.Parameter(torch.zeros(out_features, r, dtype=dtype, device=device))

    def delta_weight(self) -> torch.Tensor:
        """The pair's weight update ``scale * B @ A``."""
        return self.scale * (self.B @ self.A)


@dataclass(frozen=True, eq=False)
class FrozenPair:
    """Low-rank factors ``scale * B @ A`` that are not trained (the generic expert): same fields as LoraPair."""

    A: torch.Tensor
    B: torch.Tensor
    scale: float = 1.0


class MoleLinear(nn.Module):
    """Wraps one ``nn.Linear``; its weight becomes the frozen residual ``W_res``."""

    def __init__(self, base: nn.Linear, config: MoleConfig, state: RoutingState, slots: list[str]) -> None:
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.config = config
        self.state = state  # shared by all layers of the model; not a submodule
        self.slots = slots  # expert slot -> language id; the model's list, shared by reference
        self.adapter_dtype = getattr(torch, config.adapter_dtype)
        dev = base.weight.device
        self.shared = self._pair(config.r_shared, config.scale_shared, dev) if config.r_shared else None
        self.nl = (
            self._pair(config.r_nl or 0, config.scale_nl, dev)
            if config.nl_mode == "adapter" and config.r_nl
            else None
        )
        self.experts = nn.ModuleDict()
        # Low-rank components removed from the ORIGINAL weight: W_res = W - res_B @ res_A. Packs carry
        # them so the untouched base checkpoint can be turned into the trained residual.
        self.register_buffer("res_A", torch.zeros(0, self.in_features, dtype=torch.float32, device=dev))
        self.register_buffer("res_B", torch.zeros(self.out_features, 0, dtype=torch.float32, device=dev))
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self._merged: tuple[int, torch.Tensor] | None = None
        self._merged_buf: torch.Tensor | None = None
        self._cache: dict[int, tuple[tuple[int, ...], torch.Tensor, torch.Tensor]] = {}
        self._generic: tuple[tuple, FrozenPair | None] | None = None

    def _pair(self, r: int, scale: float, device: torch.device) -> LoraPair:
        return LoraPair(self.in_features, self.out_features, r, scale, self.adapter_dtype, device)

    # -- experts ---------------------------------------------------------------------------------------
    def add_expert(self, lang: str) -> LoraPair | None:
        """Add zero factors for ``lang``'s expert; None when experts have rank 0."""
        if not self.config.r_expert:
            return None
        pair = self._pair(self.config.r_expert, self.config.scale_expert, self.base.weight.device)
        self.experts[lang] = pair
        return pair

    def remove_expert(self, lang: str) -> None:
        """Drop ``lang``'s expert factors and every cached or merged weight that used them."""
        if lang in self.experts:
            del self.experts[lang]
        self.clear_cache()
        self._merged = None

    def clear_cache(self) -> None:
        """Forget the concatenated factors of every route (call after changing an adapter's weights)."""
        self._cache.clear()

    def generic(self) -> FrozenPair | None:
        """The generic expert of unknown code: rows :meth:`MoleConfig.expert_components` of the residual
        factors, i.e. the components the residual removed and the experts' init put back. None without a
        PiSSA residual (plain LoRA init, rank-0 experts): unknown code then takes the shared adapter only,
        which is already exact at init."""
        ra, rb = self.res_A, self.res_B
        # Holding the source tensors keeps their ids from being reused while the entry lives.
        key = (ra, rb, _version(ra), _version(rb), self.adapter_dtype)
        hit = self._generic
        if hit is not None and all(a is b if isinstance(a, torch.Tensor) else a == b for a, b in zip(hit[0], key, strict=True)):
            return hit[1]
        sl = self.config.expert_components(ra.shape[0])
        pair = None if sl is None else FrozenPair(ra[sl].to(self.adapter_dtype), rb[:, sl].to(self.adapter_dtype))
        self._generic = (key, pair)
        return pair

    # -- factors per route --------------------------------------------------------------------------------
    def _parts(self, route: int) -> list[LoraPair | FrozenPair]:
        if route == ROUTE_NL:
            return [self.nl] if self.nl is not None else []
        if route == ROUTE_PAD:
            return []
        parts: list[LoraPair | FrozenPair] = [self.shared] if self.shared is not None else []
        if route == ROUTE_UNKNOWN:
            expert = self.generic()
        else:
            expert = self.experts[self.slots[route]] if self.slots[route] in self.experts else None
        if expert is not None:
            parts.append(expert)
        return parts

    def factors(self, route: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(A, B) of the route with scales folded into A, shared and expert concatenated; None = no adapter."""
        parts = self._parts(route)
        if not parts:
            return None
        if torch.is_grad_enabled() and any(p.A.requires_grad for p in parts):
            return self._concat(parts)
        # Inference: reuse the concatenation while no factor changed (in-place updates bump _version).
        key = tuple(_version(t) for p in parts for t in (p.A, p.B)) + tuple(id(p) for p in parts)
        hit = self._cache.get(route)
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]
        with torch.no_grad():
            a, b = self._concat(parts)
        self._cache[route] = (key, a, b)
        return a, b

    @staticmethod
    def _concat(parts: Sequence[LoraPair | FrozenPair]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(parts) == 1:
            return parts[0].A * parts[0].scale, parts[0].B
        return torch.cat([p.A * p.scale for p in parts]), torch.cat([p.B for p in parts], dim=1)

    # -- merged fast path ------------------------------------------------------------------------------
    @torch.no_grad()
    def merge(self, route: int) -> None:
        """Fold the route's adapters into a second weight, used while every token takes that route.

        The residual weight is kept (other routes still need it), and the merged buffer is reused by the
        next merge, so switching languages costs one addmm per layer and no allocation.
        """
        f = self.factors(route)
        w = self.base.weight
        buf = self._merged_buf
        if buf is None or buf.shape != w.shape or buf.dtype != w.dtype or buf.device != w.device:
            buf = self._merged_buf = torch.empty_like(w)
        if f is None:
            buf.copy_(w)
        elif w.dtype == f[0].dtype:
            torch.addmm(w, f[1], f[0], out=buf)
        else:  # e.g. bf16 base with fp32 adapters: add in fp32, round once
            buf.copy_(torch.addmm(w.float(), f[1].float(), f[0].float()))
        self._merged = (route, buf)

    def unmerge(self, free: bool = False) -> None:
        """Leave the merged fast path; ``free`` also releases the merged weight buffer."""
        self._merged = None
        if free:
            self._merged_buf = None

    # -- forward -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        plan = self.state.plan(lead.numel())
        single = plan.single_route
        if self._merged is not None and single == self._merged[0]:
            return F.linear(x, self._merged[1], self.base.bias)
        x2 = x.reshape(-1, self.in_features)
        y = F.linear(x2, self.base.weight, self.base.bias)
        if single is not None:  # every token takes one route (decoding, completions): no gather/scatter
            f = self.factors(single)
            if f is None:
                return y.view(*lead, self.out_features)
            a, b = f
            h = F.linear(self.dropout(x2 if x2.dtype == a.dtype else x2.to(a.dtype)), a)
            if h.dtype == y.dtype:
                return torch.addmm(y, h, b.t()).view(*lead, self.out_features)  # add fused into the GEMM
            return (y + F.linear(h, b).to(y.dtype)).view(*lead, self.out_features)
        if not plan.groups:
            return y.view(*lead, self.out_features)
        xs = x2.index_select(0, plan.order)
        if xs.dtype != self.adapter_dtype:
            xs = xs.to(self.adapter_dtype)
        xs = self.dropout(xs)
        # torch.split (not repeated slicing): its backward is one concatenation, whereas every slice's
        # backward would materialise a zero gradient of the whole batch.
        nl_n = plan.groups[0].stop if plan.groups[0].route == ROUTE_NL else 0
        outs = []
        if nl_n:
            x_nl, x_code = torch.split(xs, [nl_n, xs.shape[0] - nl_n])
            outs.append(self._lora(self.nl, x_nl))
        else:
            x_code = xs
        if x_code.shape[0]:
            outs.append(self._code_delta(x_code, plan.groups[1:] if nl_n else plan.groups))
        upd = (torch.cat(outs) if len(outs) > 1 else outs[0]).to(y.dtype)
        return y.index_add(0, plan.order, upd).view(*lead, self.out_features)

    def _lora(self, pair: LoraPair | FrozenPair | None, x: torch.Tensor) -> torch.Tensor:
        if pair is None:
            return x.new_zeros(x.shape[0], self.out_features)
        return F.linear(F.linear(x, pair.A * pair.scale), pair.B)

    def _code_delta(self, x_code: torch.Tensor, groups: Sequence) -> torch.Tensor:
        """Shared adapter over ALL code tokens in one product (they are contiguous after sorting), plus
        each expert (the generic one for unknown code) over its own slice: those carry only rank r_expert."""
        parts = torch.split(x_code, [g.stop - g.start for g in groups])
        expert_outs = []
        for g, xg in zip(groups, parts, strict=True):
            if g.route == ROUTE_UNKNOWN:
                pair = self.generic()
            else:
                lang = self.slots[g.route]
                pair = self.experts[lang] if lang in self.experts else None
            expert_outs.append(self._lora(pair, xg))
        experts = torch.cat(expert_outs) if len(expert_outs) > 1 else expert_outs[0]
        return experts if self.shared is None else self._lora(self.shared, x_code) + experts

    def extra_repr(self) -> str:
        c = self.config
        return (f"in={self.in_features}, out={self.out_features}, r_shared={c.r_shared}, r_expert={c.r_expert}, "
                f"r_nl={c.r_nl if self.nl is not None else 0}, experts={list(self.experts)}")


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference-mode tensors carry no version counter
        return -1
