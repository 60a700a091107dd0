"""The MoLE adapters on a base model: the core pack (loaded once), language experts loaded on demand into
a bounded LRU, registry fallbacks, the merged single-language fast path, and the routed forward pass.

Degrades instead of failing: no core pack -> the bare base model; a missing expert -> the registry's
fallback expert -> the shared adapter only. Each degradation is noted once (:meth:`ExpertManager.take_notes`).
Not thread-safe: the :class:`~mole_lsp.engine.engine.Engine` serialises calls.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mole_lsp.engine.sources import PackSource, Progress
from mole_lsp.lang.fence import NL
from mole_lsp.lang.registry import Registry
from mole_lsp.packs.format import BaseIdentity, PackError, load_core, load_expert

# Route names in GenerationResult.routes besides language ids.
ROUTE_BASE = "base"  # no core pack: the bare base model
ROUTE_SHARED = "shared"  # code without an expert: shared adapter only
ROUTE_NL = "nl"


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
        self._loaded: OrderedDict[str, None] = OrderedDict()  # LRU of loaded experts
        self._merged: str | None = None
        self._said: set[str] = set()
        self._notes: list[str] = []

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
        """Load the core pack once (installing it when ``install``); False = base model only."""
        if self._core_done:
            return self.mole is not None
        path = None
        why = "no pack source configured"
        if self.packs is not None:
            try:
                path = self.packs.core_path(install=install, progress=progress)
                why = ("no core pack published for this base model" if install else
                       "the core pack is not installed: run `mole-lsp install-pack <language>`")
            except Exception as e:  # StoreError/OfflineError: degrade to the base, say why
                why = str(e)
        if path is not None:
            try:
                self.mole = load_core(self.model, path, base=self.base, registry=self.registry)
            except PackError as e:
                why = f"core pack refused: {e}"
                path = None
        self._core_done = True
        if self.mole is None:
            self._note(f"No MoLE core pack ({why}): answering with the base model only.")
        return self.mole is not None

    def _find_expert_path(self, lang: str, install: bool, progress: Progress | None) -> Path | None:
        if self.packs is None:
            return None
        try:
            return self.packs.expert_path(lang, install=install, progress=progress)
        except Exception as e:  # not published / offline / download failed: try the fallback
            self._note(f"{self.registry.get(lang).name} expert unavailable: {e}")
            return None

    def ensure_expert(self, language: str | None, install: bool, pinned: Sequence[str] = (),
                      progress: Progress | None = None) -> str | None:
        """Make ``language``'s expert (or its registry fallback) available; return the expert used or
        None (shared adapter only / base only: also before :meth:`ensure_core` loaded a core pack).
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
            self._unmerge()
            self._evict(keep={cand, language, *pinned})
            break
        else:
            self._note(f"No {self.registry.get(language).name} expert: using the shared adapter only.")
            return None
        if cand != language:
            self._note(f"No {self.registry.get(language).name} expert: using the "
                       f"{self.registry.get(cand).name} expert instead.")
        return cand

    def unload(self, lang: str) -> None:
        """Remove ``lang``'s expert from the model (if loaded)."""
        if lang in self._loaded:
            del self._loaded[lang]
            self._unmerge()
            self.mole.remove_language(lang)

    def _evict(self, keep: set[str]) -> None:
        while len(self._loaded) > self.max_experts:
            victim = next((lang for lang in self._loaded if lang not in keep), None)
            if victim is None:
                return
            del self._loaded[victim]
            self.mole.remove_language(victim)

    def _unmerge(self) -> None:
        if self.mole is not None and self._merged is not None:
            self.mole.unmerge()
        self._merged = None

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

    def forward(self, ids: list[int], labels: Sequence[str], past: Any) -> tuple[torch.Tensor, Any]:
        """One forward pass over ``ids``, each position routed by its label (the decoder's ``Forward``)."""
        input_ids = torch.tensor([ids], device=next(self.model.parameters()).device)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": True}
        if past is not None:
            kwargs["past_key_values"] = past
        if self.mole is not None:
            route = self.mole.route_ids(labels, device=input_ids.device).view(input_ids.shape)
            out = self.mole(route_ids=route, **kwargs)
        else:
            out = self.model(**kwargs)
        return out.logits[0, -1].float(), out.past_key_values
