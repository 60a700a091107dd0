"""The seam between the decoding loop and whatever runs the model.

A backend runs ``forward(ids, labels, past) -> (float logits of the last position, past)``: the positions
``ids`` appended after the ``past`` positions, each routed by its label (the decoder's ``Forward``), and
keeps KV caches across requests in ``kv`` (``take``: reuse the longest prefix whose ids AND routes match,
trimmed to it; ``put``: keep what the generation computed). torch (:mod:`.torch_backend`) is the exact
reference; llama.cpp (:mod:`.llamacpp`) the CPU fast path for GGUF bases.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from typing import Any, Protocol

import torch

BACKENDS = ("auto", "torch", "llamacpp")


class KVCaches(Protocol):
    """What the decoder needs of a KV cache store (see :class:`~mole_lsp.engine.kvcache.KVStore`)."""

    max_bytes: int

    def take(self, key: str, ids: Sequence[int], routes: Sequence[str], stamp: Hashable) -> tuple[int, Any]: ...

    def put(self, key: str, ids: Sequence[int], routes: Sequence[str], past: Any, stamp: Hashable) -> None: ...

    def clear(self) -> None: ...


class Backend(ABC):
    """Runs the model for the decoder. ``merges``: whether the torch merged fast path applies."""

    name: str = ""
    merges: bool = False
    kv: KVCaches

    @abstractmethod
    def forward(self, ids: list[int], labels: Sequence[str], past: Any) -> tuple[torch.Tensor, Any]:
        """Run ``ids`` (route label per id) after the positions of ``past`` (None: none)."""

    def close(self) -> None:  # noqa: B027 - most backends hold nothing native
        """Free what the backend holds outside Python objects (native contexts)."""
