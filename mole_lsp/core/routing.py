"""Per-token routing: which adapter each token goes through.

A route id is an integer per token:

- ``ROUTE_PAD``     (-3): padding, base weights only (its output is never read);
- ``ROUTE_UNKNOWN`` (-2): code of an unknown language: shared adapter + the frozen generic expert;
- ``ROUTE_NL``      (-1): natural language, NL adapter;
- ``i >= 0``          : code of the language in expert slot ``i``: shared + expert ``i``.

Every wrapped layer of one model reads the same :class:`RoutingState`. The token permutation that groups
tokens by adapter is computed once per forward pass (:class:`Plan`) and reused by all layers, so routing
costs one argsort and one host sync per forward, not per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ROUTE_PAD = -3
ROUTE_UNKNOWN = -2
ROUTE_NL = -1

# Sort key: pad < NL < unknown < expert 0 < expert 1 ... so that all code tokens (unknown + experts),
# which share the shared adapter, form one contiguous run after sorting.
_KEY_OFFSET = 3
_KEY_PAD, _KEY_NL, _KEY_UNKNOWN = 0, 1, 2


@dataclass(frozen=True)
class Group:
    """A run of tokens that take the same route, as a slice of the sorted non-pad tokens."""

    route: int  # ROUTE_NL, ROUTE_UNKNOWN or an expert slot
    start: int  # slice of the sorted non-pad tokens
    stop: int


@dataclass(frozen=True)
class Plan:
    """How one forward pass's tokens are grouped by route."""

    n_tokens: int
    order: torch.Tensor | None  # indices of non-pad tokens sorted by group; None = identity (one group)
    groups: tuple[Group, ...]

    @property
    def single_route(self) -> int | None:
        """The route when every token (no padding) shares one adapter group, else None."""
        if self.order is None and len(self.groups) == 1:
            return self.groups[0].route
        return None


def _route_of_key(key: int) -> int:
    if key == _KEY_NL:
        return ROUTE_NL
    if key == _KEY_UNKNOWN:
        return ROUTE_UNKNOWN
    return key - _KEY_OFFSET


def make_plan(route_ids: torch.Tensor, n_slots: int) -> Plan:
    """Group the tokens of ``route_ids`` by route (pad tokens dropped), with one host sync."""
    flat = route_ids.reshape(-1)
    n = flat.numel()
    if n == 0:
        return Plan(0, None, ())
    lo, hi = torch.stack([flat.min(), flat.max()]).tolist()
    if lo < ROUTE_PAD or hi >= n_slots:
        raise ValueError(f"route ids must lie in [{ROUTE_PAD}, {n_slots}), got values {lo}..{hi}")
    key = torch.where(flat == ROUTE_NL, _KEY_NL, torch.where(flat == ROUTE_UNKNOWN, _KEY_UNKNOWN, flat + _KEY_OFFSET))
    key = torch.where(flat == ROUTE_PAD, _KEY_PAD, key)
    counts = torch.bincount(key, minlength=n_slots + _KEY_OFFSET).tolist()  # the one host sync
    present = [k for k, c in enumerate(counts) if c and k != _KEY_PAD]
    if counts[_KEY_PAD] == 0 and len(present) == 1:
        return Plan(n, None, (Group(_route_of_key(present[0]), 0, n),))
    order = torch.argsort(key, stable=True)[counts[_KEY_PAD]:]
    groups, start = [], 0
    for k in present:
        groups.append(Group(_route_of_key(k), start, start + counts[k]))
        start += counts[k]
    return Plan(n, order, tuple(groups))


class RoutingState:
    """Holds the route ids of the current forward pass for all wrapped layers of one model.

    The state is kept after the forward pass on purpose: activation checkpointing re-runs the layers
    during backward and must see the same routing.
    """

    def __init__(self) -> None:
        self.route_ids: torch.Tensor | None = None
        self.n_slots = 0
        self._plan: Plan | None = None
        self._plan_key: tuple[int, int, int] | None = None

    def set(self, route_ids: torch.Tensor | None, n_slots: int) -> None:
        """Route the next forward pass by ``route_ids`` (one per token; ``n_slots`` expert slots)."""
        self.route_ids = route_ids
        self.n_slots = n_slots
        self._plan = None

    def plan(self, n_tokens: int) -> Plan:
        """The grouping of the current route ids, computed once per route-id tensor and reused by every layer."""
        if self.route_ids is None:
            raise RuntimeError(
                "no routing set: call the MoleModel with route_ids=..., or use `with mole.routing(ids):`"
            )
        if self.route_ids.numel() != n_tokens:
            raise ValueError(
                f"routing has {self.route_ids.numel()} token ids but the layer got {n_tokens} tokens; "
                "pass one route id per input token (same shape as input_ids)"
            )
        try:
            version = self.route_ids._version
        except RuntimeError:  # inference tensors have no version counter; they cannot change in place
            version = -1
        key = (id(self.route_ids), version, self.n_slots)
        if self._plan is None or self._plan_key != key:
            self._plan = make_plan(self.route_ids, self.n_slots)
            self._plan_key = key
        return self._plan
