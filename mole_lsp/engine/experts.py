"""The MoLE adapters on a base model: the core pack (loaded once), language experts loaded on demand into
a bounded LRU, registry fallbacks, the merged single-language fast path, and the routed forward pass.

Degrades instead of failing: no core pack -> the bare base model; a missing expert -> the registry's
fallback expert -> the shared adapter plus the generic expert (the frozen residual components every
expert starts from, :meth:`~mole_lsp.core.layer.MoleLinear.generic`). Each degradation is noted once
(:meth:`ExpertManager.take_notes`).
Only the pack errors degrade (PackError, StoreError and its OfflineError): any other exception is a bug and
reaches the caller. "No core pack" is not final: see :meth:`ExpertManager.ensure_core`.
Not thread-safe: the :class:`~mole_lsp.engine.engine.Engine` serialises calls.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mole_lsp.engine.sources import PackSource, Progress
from mole_lsp.lang.fence import NL
from mole_lsp.lang.registry import Registry
from mole_lsp.packs.errors import StoreError
from mole_lsp.packs.format import BaseIdentity, PackError, load_core, load_expert

# Route names in GenerationResult.routes besides language ids.
ROUTE_BASE = "base"  # no core pack: the bare base model
ROUTE_SHARED = "shared"  # code without an expert: shared adapter + the generic expert
ROUTE_NL = "nl"

CORE_RETRY_S = 60.0  # while base only, a lookup that may download is retried this often (PackHub.unreachable_for)
STAMP_EVERY_S = 1.0  # while base only, the pack folder is looked at (for packs installed meanwhile) this often
STAMP_DEPTH = 5  # folder levels of the pack cache (hub/models--o--n/snapshots/<commit>/core) that are looked at


class ExpertManager:
    """Which adapters are on ``model``; ``mole`` is the MoleModel once a core pack is loaded."""

    def __init__(self, model: torch.nn.Module, packs: PackSource | None, base: BaseIdentity | None,
                 registry: Registry, max_experts: int = 4) -> None:
        self.model = model
        self.packs = packs
        self.base = base
        self.registry = registry
        self.max_experts = max(1, max_experts)
        self.mole: Any = None  # MoleModel once a core pack is loaded
        self._core_done = False
        self._core_retry = False  # look for the core again at the next request (retry_core)
        self._core_at = 0.0  # monotonic time of the last core lookup
        self._stamp_at = 0.0
        self._stamp: object = None  # the pack folder as last looked at (_folder_stamp)
        self._loaded: OrderedDict[str, None] = OrderedDict()  # LRU of loaded experts
        self._merged: str | None = None
        self._said: set[str] = set()
        self._notes: list[str] = []
        # Bumped on every change of the weights behind a route (core, expert loaded/removed/evicted):
        # KV caches computed before are stale (engine/kvcache.py).
        self.epoch = 0

    # -- notices ------------------------------------------------------------------------------------------
    def _note(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            self._notes.append(message)

    def take_notes(self) -> list[str]:
        """Degradations noted since the last call (each message is noted once per manager)."""
        notes, self._notes = self._notes, []
        return notes

    # -- packs ------------------------------------------------------------------------------------------
    @property
    def base_only(self) -> bool:
        return self._core_done and self.mole is None

    @property
    def loaded(self) -> list[str]:
        """Loaded experts, least recently used first."""
        return list(self._loaded)

    def ensure_core(self, install: bool, progress: Progress | None = None) -> bool:
        """Load the core pack (installing it when ``install``); False = base model only, for now.

        Without a core the lookup is repeated, never on every request: at once after :meth:`retry_core`
        (a pack was installed, a setting changed); when the pack folder changed on disk (another process
        installed a pack; a local look every :data:`STAMP_EVERY_S` seconds); and, when installing is
        allowed, every :data:`CORE_RETRY_S` seconds (the Hub may be back)."""
        if self.mole is not None:
            return True
        if self._core_done and not self._look_again(install):
            return False
        self._core_retry = False
        self._core_at = time.monotonic()
        self._stamp = _folder_stamp(getattr(self.packs, "root", None))
        path = None
        why = "no pack source configured"
        if self.packs is not None:
            try:
                path = self.packs.core_path(install=install, progress=progress)
                why = ("no core pack published for this base model" if install else
                       "the core pack is not installed: run `mole-lsp install-pack <language>`")
            except StoreError as e:  # not published, offline, a failed download: degrade, say why
                why = str(e)
        if path is not None:
            try:
                self.mole = load_core(self.model, path, base=self.base, registry=self.registry)
                self.epoch += 1
            except PackError as e:
                why = f"core pack refused: {e}"
                path = None
        if self.mole is None:
            self._note(f"No MoLE core pack ({why}): answering with the base model only.")
        elif self._core_done:
            self._note("MoLE core pack found: answering with the MoLE adapters from now on.")
        self._core_done = True
        return self.mole is not None

    def retry_core(self) -> None:
        """Look for the core pack again at the next request (after an install or a settings change)."""
        self._core_retry = True

    def _look_again(self, install: bool) -> bool:
        now = time.monotonic()
        if self._core_retry or (install and now - self._core_at >= CORE_RETRY_S):
            return True
        if now - self._stamp_at < STAMP_EVERY_S:
            return False
        self._stamp_at = now
        return _folder_stamp(getattr(self.packs, "root", None)) != self._stamp

    def _find_expert_path(self, lang: str, install: bool, progress: Progress | None) -> Path | None:
        if self.packs is None:
            return None
        try:
            return self.packs.expert_path(lang, install=install, progress=progress)
        except StoreError as e:  # not published / offline / download failed: try the fallback
            self._note(f"{self.registry.get(lang).name} expert unavailable: {e}")
            return None

    def ensure_expert(self, language: str | None, install: bool, pinned: Sequence[str] = (),
                      progress: Progress | None = None) -> str | None:
        """Make ``language``'s expert (or its registry fallback) available; return the expert used or
        None (shared + generic expert / base only: also before :meth:`ensure_core` loaded a core pack).
        ``pinned`` experts are not evicted to make room."""
        if language is None or language not in self.registry or self.mole is None:
            return None
        for cand in self.registry.fallback_chain(language):
            if cand in self._loaded:
                self._loaded.move_to_end(cand)
                break
            path = self._find_expert_path(cand, install, progress)
            if path is None:
                continue
            try:
                load_expert(self.mole, path, language=cand)
            except PackError as e:
                self._note(f"{self.registry.get(cand).name} expert refused: {e}")
                continue
            self._loaded[cand] = None
            self.epoch += 1
            self._unmerge()
            self._evict(keep={cand, language, *pinned})
            break
        else:
            self._note(f"No {self.registry.get(language).name} expert: using {self._no_expert_route()}.")
            return None
        if cand != language:
            self._note(f"No {self.registry.get(language).name} expert: using the "
                       f"{self.registry.get(cand).name} expert instead.")
        return cand

    def _no_expert_route(self) -> str:
        """What code without an expert goes through (core/layer.py): a core without a PiSSA residual
        (plain LoRA init) has no generic expert."""
        generic = any(layer.generic() is not None for layer in self.mole.layers.values())
        return "the shared adapter and the generic expert" if generic else "the shared adapter only"

    def unload(self, lang: str) -> None:
        """Remove ``lang``'s expert from the model (if loaded)."""
        if lang in self._loaded:
            del self._loaded[lang]
            self.epoch += 1
            self._unmerge()
            self.mole.remove_language(lang)

    def _evict(self, keep: set[str]) -> None:
        while len(self._loaded) > self.max_experts:
            victim = next((lang for lang in self._loaded if lang not in keep), None)
            if victim is None:
                return
            del self._loaded[victim]
            self.epoch += 1
            self.mole.remove_language(victim)

    def _unmerge(self) -> None:
        if self.mole is not None and self._merged is not None:
            self.mole.unmerge()
        self._merged = None

    @property
    def merged(self) -> str | None:
        """The label whose route is folded into the weights (the merged fast path), if any."""
        return self._merged

    def merge(self, label: str) -> None:
        """Single-language fast path; kept merged across requests for the same language."""
        if self.mole is None or self._merged == label:
            return
        self.mole.merge(label)
        self._merged = label

    # -- routing ----------------------------------------------------------------------------------------
    def route_name(self, label: str) -> str:
        """The adapter a position labelled ``label`` takes: a language id, ``shared``, ``nl`` or ``base``."""
        if self.mole is None:
            return ROUTE_BASE
        if label == NL:
            return ROUTE_NL
        return self.mole.expert_for(label) or ROUTE_SHARED

    @functools.cached_property
    def _cache_kw(self) -> str:
        """The model's name for the KV cache argument: ``cache`` from transformers 5.24 (which warns on
        ``past_key_values``, to be removed in 5.40), ``past_key_values`` before."""
        params = inspect.signature(self.model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def forward(self, ids: list[int], labels: Sequence[str], past: Any) -> tuple[torch.Tensor, Any]:
        """One forward pass over ``ids``, each position routed by its label (the decoder's ``Forward``)."""
        input_ids = torch.tensor([ids], device=next(self.model.parameters()).device)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": True}
        if past is not None:
            kwargs[self._cache_kw] = past
        if self.mole is not None:
            route = self.mole.route_ids(labels, device=input_ids.device).view(input_ids.shape)
            out = self.mole(route_ids=route, **kwargs)
        else:
            out = self.model(**kwargs)
        return out.logits[0, -1].float(), getattr(out, self._cache_kw)


def _folder_stamp(root: os.PathLike[str] | str | None) -> object:
    """The modification times of the folders under ``root`` (to :data:`STAMP_DEPTH` levels): installing a
    pack, from any process, creates a folder there. A few dozen stat calls, no network."""
    if root is None:
        return None
    stamp: list[tuple[str, int]] = []
    todo = [(os.fspath(root), 0)]
    while todo:
        folder, depth = todo.pop()
        try:
            stamp.append((folder, os.stat(folder).st_mtime_ns))
            if depth < STAMP_DEPTH:
                with os.scandir(folder) as it:
                    todo += [(e.path, depth + 1) for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
    return sorted(stamp)
