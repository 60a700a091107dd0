"""Installing packs from a local pack repository folder (as ``training --out DIR`` writes it) into the cache.

The folder's core and the chosen experts are verified (files, sha256, base, rank layout, core) and copied
to ``local/<owner>--<name>/local-<sha12>/`` of the cache (``sha12``: the first 12 hex digits of the sha256
of its index.json), which is then a revision the store can use offline.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mole_lsp.io import atomic_write_bytes
from mole_lsp.packs.cache import (
    LOCAL_PREFIX,
    InstalledPack,
    PackCache,
    Source,
    check_compatible,
    check_language,
    read_store_index,
    require_listed,
)
from mole_lsp.packs.errors import StoreError
from mole_lsp.packs.format import CORE_PACK, INDEX, BaseIdentity

__all__ = ["install_folder"]


def install_folder(cache: PackCache, folder: str | os.PathLike[str], languages: Iterable[str] | None = None,
                   base: BaseIdentity | None = None) -> tuple[str, dict[str, InstalledPack]]:
    """Verify the pack repository ``folder`` and copy its core and the given (default: all) experts into
    ``cache``; returns the revision ``local-<sha12>`` and what is installed. ``base``: refuse a core made
    for another base model. StoreError says why a pack is refused."""
    folder = Path(folder).expanduser()
    index_path = folder / INDEX
    if not index_path.is_file():
        raise StoreError(f"{folder} is not a pack repository (no {INDEX}; export_packs and "
                         f"`training --out DIR` write one)")
    raw = index_path.read_bytes()
    rev = LOCAL_PREFIX + hashlib.sha256(raw).hexdigest()[:12]
    src = Source(rev, folder, False, read_store_index(index_path))
    langs = sorted(src.index["experts"]) if languages is None else [check_language(x) for x in languages]
    require_listed(src, [CORE_PACK, *langs], cache.repo_id)
    dest = Source(rev, cache.local_root / rev, False, src.index)
    out: dict[str, InstalledPack] = {}
    core: dict[str, Any] | None = None
    for name in [CORE_PACK, *langs]:
        what = "core pack" if name == CORE_PACK else f"{name} pack"
        m, damage = cache.intact(src.pack_dir(name), name)
        if m is None:
            raise StoreError(f"the {what} in {folder} does not verify: {damage or 'missing'}")
        check_compatible(cache.repo_id, base, src.pack_dir(name), name, core)
        if name == CORE_PACK:
            core = m
        target = dest.pack_dir(name)
        if cache.intact(target, name)[0] is None:  # not there yet, or a damaged copy
            cache.copy_pack(src.pack_dir(name), target)
            m, damage = cache.intact(target, name)
            if m is None:
                raise StoreError(f"copying the {what} into {target} failed: {damage}")
        out[name] = dest.installed(name, target, m)
    atomic_write_bytes(dest.root / INDEX, raw)  # written last: its mtime marks the newest install
    return rev, out
