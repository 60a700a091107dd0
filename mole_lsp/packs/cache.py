"""The pack store's local cache: its folder layout, what one revision holds, and which packs are intact.

Layout under ``mole_lsp.paths.packs_dir(cache_dir)``:

- ``hub/`` is a plain huggingface_hub cache (``snapshot_download(cache_dir=...)``): files land as
  ``.incomplete`` and are renamed when complete, interrupted downloads resume, and every commit has its
  own ``snapshots/<sha>/`` folder, so a pinned revision keeps its files when the repository moves on;
- ``local/<owner>--<name>/local-<sha12>/`` holds pack repositories installed from a folder (see
  :mod:`mole_lsp.packs.folder_install`; ``sha12``: the first 12 hex digits of the sha256 of their index.json).

Both hold pack repositories laid out as :mod:`mole_lsp.packs.format` writes them. Packs are named
:data:`~mole_lsp.packs.format.CORE_PACK` or by language id. Verifying a pack hashes its files, so the
result is remembered per folder until a file changes (size, mtime or inode).
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mole_lsp import paths
from mole_lsp.io import atomic_dir
from mole_lsp.lang.registry import LANGUAGE_ID
from mole_lsp.packs.errors import StoreError
from mole_lsp.packs.format import (
    CORE_DIR,
    CORE_PACK,
    EXPERTS_DIR,
    INDEX,
    BaseIdentity,
    PackError,
    core_sha256,
    read_index,
    verify_pack,
)

__all__ = [
    "COMMIT_SHA",
    "LOCAL_PREFIX",
    "InstalledPack",
    "PackCache",
    "Source",
    "check_compatible",
    "check_language",
    "pack_entries",
    "pack_folder",
    "read_store_index",
    "require_listed",
    "short_revision",
]

log = logging.getLogger(__name__)

HUB_DIR = "hub"  # the huggingface_hub cache
LOCAL_DIR = "local"  # folder installs, one folder per pack repository
LOCKS_DIR = "locks"  # one lock file per pack folder, shared by every process using the cache
LOCAL_PREFIX = "local-"  # revision names of folder installs: local-<sha12>
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")


def short_revision(rev: str) -> str:
    """A commit sha cut to 12 digits for messages; other revisions (branches, folder installs) as they are."""
    return rev[:12] if COMMIT_SHA.match(rev) else rev


def check_language(language: str) -> str:
    """``language`` when it can name an expert pack (a language id, never the core); StoreError otherwise.

    It becomes a folder name, so nothing else (``..``, slashes) may pass."""
    if language == CORE_PACK or not LANGUAGE_ID.fullmatch(language or ""):
        raise StoreError(f"{language!r} is not a language id")
    return language


def pack_folder(repo_root: Path, name: str) -> Path:
    """Folder of the pack ``name`` (CORE_PACK or a language id) in the pack repository at ``repo_root``."""
    return repo_root / CORE_DIR if name == CORE_PACK else repo_root / EXPERTS_DIR / name


@dataclass(frozen=True)
class InstalledPack:
    """A verified pack in the cache."""

    language: str  # CORE_PACK for the core pack
    path: Path  # the pack folder (manifest.json + adapters.safetensors)
    revision: str  # commit sha, or "local-<sha12>" for a folder install
    size_bytes: int  # sum of the files the manifest lists


@dataclass
class Source:
    """Where the packs of this session come from: one Hub commit, or one folder install."""

    revision: str  # commit sha or "local-<sha12>"
    root: Path  # folder with index.json, core/, experts/
    hub: bool
    index: dict[str, Any]

    def pack_dir(self, name: str) -> Path:
        """Folder of the pack ``name`` in this source."""
        return pack_folder(self.root, name)

    def installed(self, name: str, path: Path, manifest: dict[str, Any]) -> InstalledPack:
        """The :class:`InstalledPack` of pack ``name`` at ``path`` with this manifest."""
        size = sum(int(f["size"]) for f in manifest["files"].values())
        return InstalledPack(name, path, self.revision, size)


def pack_entries(index: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The packs an index lists, by name: ``{CORE_PACK: core entry, language: expert entry, ...}``."""
    out: dict[str, dict[str, Any]] = {}
    if index.get("core"):
        out[CORE_PACK] = index["core"]
    out.update(index["experts"])
    return out


def read_store_index(path: Path) -> dict[str, Any]:
    """:func:`mole_lsp.packs.format.read_index`, its PackError turned into a StoreError."""
    try:
        return read_index(path)
    except PackError as e:
        raise StoreError(str(e)) from e


def require_listed(src: Source, names: Iterable[str], repo_id: str) -> None:
    """StoreError unless every pack in ``names`` is listed by ``src`` (and, for a folder install, present)."""
    entries = pack_entries(src.index)
    for name in names:
        if name in entries and (src.hub or src.pack_dir(name).is_dir()):
            continue
        where = f"{repo_id}@{short_revision(src.revision)}"
        if name == CORE_PACK:
            raise StoreError(f"{where} has no core pack")
        have = sorted(n for n in entries if n != CORE_PACK and (src.hub or src.pack_dir(n).is_dir()))
        raise StoreError(f"no {name} expert pack in {where} (available: {', '.join(have) or 'none'})")


def check_compatible(repo_id: str, base: BaseIdentity | None, d: Path, name: str,
                     core: dict[str, Any] | None) -> None:
    """Refuse, with the reason, a pack made for another base, rank layout or core (``core``: the manifest of
    the core next to an expert). Nothing is deleted: downloading it again would not help."""
    try:
        if name == CORE_PACK:
            verify_pack(d, kind="core", base=base, check_hashes=False)
        else:
            assert core is not None
            verify_pack(d, kind="expert", language=name, base=BaseIdentity.from_dict(core["base"]),
                        layout=core["layout"], core_sha256=core_sha256(core), check_hashes=False)
    except PackError as e:
        what = "core pack" if name == CORE_PACK else f"{name} pack"
        raise StoreError(f"the {what} of {repo_id} is refused: {e}") from e


class PackCache:
    """The cached packs of one pack repository: where they are, whether they are intact, removing and copying."""

    def __init__(self, repo_id: str, cache_dir: str | Path | None = None) -> None:
        """``cache_dir``: overrides the default cache location (read from the settings at call time)."""
        self.repo_id = repo_id
        self._cache_override = cache_dir
        # folder -> (stamp, manifest, damage): hashing is done once per state of the files
        self._verified: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None, str | None]] = {}

    @property
    def root(self) -> Path:
        """The cache folder of all pack repositories."""
        return paths.packs_dir(self._cache_override)

    @property
    def hub_cache(self) -> Path:
        """The huggingface_hub cache the Hub downloads go to."""
        return self.root / HUB_DIR

    @property
    def local_root(self) -> Path:
        """The folder installs of this repository, one folder per ``local-<sha12>`` revision."""
        return self.root / LOCAL_DIR / self.repo_id.replace("/", "--")

    # ---- sources
    def hub_source(self, folder: Path) -> Source:
        """The Hub snapshot in ``folder`` (snapshot folders are named after the commit they hold)."""
        if not (folder / INDEX).is_file():
            raise StoreError(f"{self.repo_id}@{short_revision(folder.name)} is not a mole-lsp pack repository "
                             f"(no {INDEX})")
        return Source(folder.name, folder, True, read_store_index(folder / INDEX))

    def local_source(self, rev: str) -> Source:
        """The folder install named ``rev`` (``local-<sha12>``)."""
        folder = self.local_root / rev
        return Source(rev, folder, False, read_store_index(folder / INDEX))

    def newest_local(self) -> str | None:
        """The revision of the most recent folder install of this repository, if any."""
        if not self.local_root.is_dir():
            return None
        found = [d for d in self.local_root.iterdir() if d.name.startswith(LOCAL_PREFIX) and (d / INDEX).is_file()]
        return max(found, key=lambda d: (d / INDEX).stat().st_mtime_ns).name if found else None

    def cached_roots(self) -> list[Path]:
        """Every cached revision of this repository: Hub snapshots and folder installs."""
        roots: list[Path] = []
        if self.hub_cache.is_dir():
            from huggingface_hub import scan_cache_dir

            try:
                info = scan_cache_dir(self.hub_cache)
            except Exception as e:  # an unreadable cache holds nothing we can remove
                log.warning("cannot scan %s: %s", self.hub_cache, e)
            else:
                for repo in info.repos:
                    if repo.repo_id == self.repo_id and repo.repo_type == "model":
                        roots += [Path(r.snapshot_path) for r in repo.revisions]
        if self.local_root.is_dir():
            roots += [d for d in self.local_root.iterdir() if d.is_dir() and d.name.startswith(LOCAL_PREFIX)]
        return roots

    # ---- verification
    @staticmethod
    def _stamp(d: Path) -> tuple[Any, ...]:
        # stat() follows the HF cache's symlinks to the blobs, so a rewritten blob changes the stamp
        return tuple(sorted((p.name, st.st_size, st.st_mtime_ns, st.st_ino)
                            for p in d.iterdir() if p.is_file() for st in [p.stat()]))

    def intact(self, d: Path, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """(manifest, None) when the pack's files are complete and match their sha256; (None, why) when a
        copy is present but damaged; (None, None) when absent."""
        if not d.is_dir():
            return None, None
        try:
            stamp = self._stamp(d)
        except OSError as e:
            self._verified.pop(str(d), None)
            return None, str(e)
        hit = self._verified.get(str(d))
        if hit is not None and hit[0] == stamp:
            return hit[1], hit[2]
        try:
            m: dict[str, Any] | None = verify_pack(d, kind="core" if name == CORE_PACK else "expert",
                                                   language=None if name == CORE_PACK else name)
            damage = None
        except (PackError, OSError) as e:
            m, damage = None, str(e)
        self._verified[str(d)] = (stamp, m, damage)
        return m, damage

    @contextmanager
    def pack_lock(self, revision: str, name: str, timeout: float) -> Iterator[bool]:
        """Hold the lock of one pack folder (every process sharing this cache takes it around install,
        verify and repair, so nobody judges a download in progress as damage). Yields False when it
        could not be had within ``timeout`` seconds (0: do not wait)."""
        from filelock import FileLock, Timeout

        path = self.root / LOCKS_DIR / self.repo_id.replace("/", "--") / f"{revision}--{name}.lock"
        lock = FileLock(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=timeout)
        except Timeout:
            yield False
            return
        except OSError as e:  # a read-only cache: nobody can install into it, reading needs no lock
            log.debug("no lock for %s: %s", path, e)
            yield True
            return
        try:
            yield True
        finally:
            lock.release()

    # ---- changing the cache
    def delete_pack(self, d: Path) -> None:
        """Remove a pack folder; in the HF cache also the blobs its links point to (a damaged blob must not
        be linked again)."""
        self._verified.pop(str(d), None)
        if not d.exists():
            return
        hub = self.hub_cache.resolve()
        for p in sorted(d.rglob("*"), reverse=True):
            if p.is_symlink():
                target = p.resolve()
                p.unlink()
                if target.is_file() and target.is_relative_to(hub):
                    target.unlink()
            elif p.is_dir():
                p.rmdir()
            else:
                p.unlink()
        d.rmdir()

    def copy_pack(self, src: Path, dst: Path) -> None:
        """Copy a pack folder to ``dst``, replacing what is there; a half-copied pack is never visible."""
        with atomic_dir(dst) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            if dst.exists():
                self.delete_pack(dst)
