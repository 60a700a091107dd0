"""Plain reference of the MoLE layer: every adapter over every token, masked. Slow on purpose.

Used by the tests (the fast grouped path must match it) and by the train-step benchmark.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from mole_lsp.core.layer import FrozenPair, LoraPair, MoleLinear
from mole_lsp.core.routing import ROUTE_NL, ROUTE_PAD, ROUTE_UNKNOWN


def _lora(pair: LoraPair | FrozenPair, x: torch.Tensor, dropout: torch.nn.Module) -> torch.Tensor:
    return pair.scale * F.linear(F.linear(dropout(x.to(pair.A.dtype)), pair.A), pair.B)


def reference_forward(layer: MoleLinear, x: torch.Tensor, route_ids: torch.Tensor) -> torch.Tensor:
    """What ``layer(x)`` must return for these route ids, computed densely (tests compare against it)."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, layer.in_features)
    r = route_ids.reshape(-1, 1)
    y = F.linear(x2, layer.base.weight, layer.base.bias)
    delta = torch.zeros(x2.shape[0], layer.out_features, dtype=layer.adapter_dtype, device=x.device)
    code = ((r != ROUTE_NL) & (r != ROUTE_PAD)).to(delta.dtype)
    if layer.nl is not None:
        delta = delta + (r == ROUTE_NL).to(delta.dtype) * _lora(layer.nl, x2, layer.dropout)
    if layer.shared is not None:
        delta = delta + code * _lora(layer.shared, x2, layer.dropout)
    for slot, lang in enumerate(layer.slots):
        if lang in layer.experts:
            delta = delta + (r == slot).to(delta.dtype) * _lora(layer.experts[lang], x2, layer.dropout)
    generic = layer.generic()
    if generic is not None:
        delta = delta + (r == ROUTE_UNKNOWN).to(delta.dtype) * _lora(generic, x2, layer.dropout)
    return (y + delta.to(y.dtype)).view(*lead, layer.out_features)


@contextlib.contextmanager
def reference_mode(layers: dict[str, MoleLinear]) -> Iterator[None]:
    """Temporarily make every MoLE layer run the masked reference instead of the grouped path."""
    originals = {}
    for layer in layers.values():
        originals[layer] = layer.forward
        layer.forward = (lambda lyr: (lambda x: reference_forward(lyr, x, lyr.state.route_ids)))(layer)
    try:
        yield
    finally:
        for layer, fwd in originals.items():
            layer.forward = fwd
