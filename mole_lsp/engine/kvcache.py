"""KV cache reuse across requests: the keys/values of recent prompts (and of the tokens generated after
them), so that the next request prefills only what changed.

A position's keys and values depend on its token, on every position before it and on the adapters it
went through. An entry is therefore reusable for the longest common prefix whose token ids AND routes
(the adapter each position took, ``Decoder.route_name`` after relabelling) are equal, and only while the
weights behind every route are the ones it was computed with: the ``stamp`` (the expert manager's weight
epoch and merged route, see :class:`~mole_lsp.engine.experts.ExpertManager`) must match too.

Entries are kept per key (a document URI, or a mode), least recently used evicted first, within
``max_bytes`` of key/value tensors. A lookup hands the cache object out (the model extends it in place)
and the decoder puts it back once the generation ends, so a failed forward never leaves a half-updated
cache behind. Only plain dynamic caches are kept: sliding-window or linear-attention layers cannot be
cut back to a prefix.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_MB = 256


@dataclass
class _Entry:
    ids: list[int]
    routes: list[str]
    past: Any
    stamp: Hashable
    nbytes: int


def _common_prefix(a: Sequence[Any], b: Sequence[Any], limit: int) -> int:
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def cache_nbytes(past: Any) -> int | None:
    """Bytes held by a plain dynamic KV cache; None for any other cache (not reusable)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if not isinstance(past, DynamicCache):
        return None
    total = 0
    for layer in past.layers:
        if type(layer) is not DynamicLayer:
            return None
        for t in (layer.keys, layer.values):
            if t is not None:
                total += t.untyped_storage().nbytes()  # a cropped view still holds its whole storage
    return total


class KVStore:
    """Recent KV caches by key, bounded by ``max_bytes`` (0 turns reuse off)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_MB << 20) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def take(self, key: str, ids: Sequence[int], routes: Sequence[str], stamp: Hashable) -> tuple[int, Any]:
        """The longest reusable prefix of ``ids``/``routes``: ``(n, cache holding exactly n positions)``,
        or ``(0, None)``. The entry is removed; :meth:`put` stores the extended cache again.

        At most ``len(ids) - 1`` positions are reused: the last prompt token is always run again, its
        logits start the generation. Every entry is a candidate (an explanation and a translation share
        a chat template, two documents a licence header); on equal length the key's own entry wins.
        """
        if self.max_bytes <= 0:
            return 0, None
        best_key, best_n = None, 0
        for k, entry in self._entries.items():
            if entry.stamp != stamp:
                continue
            n = _common_prefix(entry.ids, ids, len(ids) - 1)
            n = _common_prefix(entry.routes, routes, n)
            if n > best_n or (n == best_n and n and k == key):
                best_key, best_n = k, n
        if best_key is None:
            return 0, None
        entry = self._entries.pop(best_key)
        drop = len(entry.ids) - best_n
        if drop:
            entry.past.crop(-drop)
        return best_n, entry.past

    def put(self, key: str, ids: Sequence[int], routes: Sequence[str], past: Any, stamp: Hashable) -> None:
        """Keep ``past`` (holding exactly the positions ``ids``, routed by ``routes``) under ``key``,
        replacing the key's previous entry; least recently used entries go when over budget."""
        self._entries.pop(key, None)
        nbytes = cache_nbytes(past)
        if (nbytes is None or nbytes > self.max_bytes or not ids or len(ids) != len(routes)
                or past.get_seq_length() != len(ids)):
            return
        self._entries[key] = _Entry(list(ids), list(routes), past, stamp, nbytes)
        while self.nbytes > self.max_bytes:
            self._entries.popitem(last=False)
