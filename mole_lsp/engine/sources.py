"""Where packs come from: the :class:`PackSource` protocol the engine loads packs through, a local pack
folder (:class:`FolderPacks`), and :func:`open_pack_source`, which picks one for a ``pack_repo`` setting."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from mole_lsp.packs.format import CORE_DIR, EXPERTS_DIR, BaseIdentity

# (message, fraction done or None) about slow work such as downloads
Progress = Callable[[str, float | None], None]


class PackSource(Protocol):
    """Where packs come from: mole_lsp.packs.store.PackStore, or :class:`FolderPacks` for a local folder."""

    def core_path(self, install: bool = True, progress: Progress | None = None) -> Path | None: ...

    def expert_path(self, lang: str, install: bool = True, progress: Progress | None = None) -> Path | None: ...


class FolderPacks:
    """A pack repository folder on disk (``core/``, ``experts/<lang>/``), e.g. packs you trained."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def core_path(self, install: bool = True, progress: Progress | None = None) -> Path | None:
        p = self.root / CORE_DIR
        return p if p.is_dir() else None

    def expert_path(self, lang: str, install: bool = True, progress: Progress | None = None) -> Path | None:
        p = self.root / EXPERTS_DIR / lang
        return p if p.is_dir() else None


def open_pack_source(pack_repo: str | None, base_repo_id: str, base: BaseIdentity, *, revision: str | None = None,
                     cache_dir: str | None = None, offline: bool = False) -> PackSource:
    """``pack_repo`` as a local :class:`FolderPacks` when it is an existing folder, else a Hub pack store
    (``pack_repo`` or the default pack repo of the base model ``base_repo_id``) checked against ``base``."""
    if pack_repo and Path(pack_repo).expanduser().is_dir():
        return FolderPacks(Path(pack_repo).expanduser())
    from mole_lsp.packs.store import PackStore, default_pack_repo
    from mole_lsp.paths import hub_endpoint

    return PackStore(pack_repo or default_pack_repo(base_repo_id), revision or "main", cache_dir,
                     offline or None, hub_endpoint(), base=base)
