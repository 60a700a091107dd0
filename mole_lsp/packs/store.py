"""The pack store: core and expert packs downloaded from the Hub (or copied from a folder) into a local cache.

One Hub repository per base model holds ``core/``, ``experts/<language>/`` and ``index.json`` (see
:mod:`mole_lsp.packs.format`); :func:`default_pack_repo` names it. A :class:`PackStore` installs only what is
asked for: ``expert_path("rust")`` fetches ``core/`` (once) and ``experts/rust/`` and nothing else. The
cache layout is described in :mod:`mole_lsp.packs.cache`, Hub access and offline handling in
:mod:`mole_lsp.packs.hub`, folder installs in :mod:`mole_lsp.packs.folder_install`.

Revisions: the store resolves its revision (branch, tag or commit) to a commit sha once, on first use,
and every pack of that store comes from that commit. A revision named ``local-<sha12>`` selects a
folder install. When the Hub cannot give a commit (offline and never resolved, or the repository does
not exist there) the newest folder install of the repository is used instead.

Every pack is verified with :func:`mole_lsp.packs.format.verify_pack` before its path is returned: sizes and
sha256 of every file, experts against the sha256, base and rank layout of the core next to them. A
damaged cached pack is deleted and downloaded again once.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from mole_lsp.packs.cache import (
    COMMIT_SHA,
    LOCAL_PREFIX,
    InstalledPack,
    PackCache,
    Source,
    check_compatible,
    check_language,
    pack_entries,
    pack_folder,
    require_listed,
    short_revision,
)
from mole_lsp.packs.errors import NotInstalled, OfflineError, StoreError
from mole_lsp.packs.folder_install import install_folder
from mole_lsp.packs.format import (
    CORE_DIR,
    CORE_PACK,
    EXPERTS_DIR,
    INDEX,
    BaseIdentity,
    PackError,
    verify_pack,
)
from mole_lsp.packs.hub import PackHub, Progress

__all__ = ["PackStore", "default_pack_repo"]

log = logging.getLogger(__name__)

PACK_REPO_OWNER = "mole-lsp"
T = TypeVar("T")


def default_pack_repo(base_repo_id: str, owner: str = PACK_REPO_OWNER) -> str:
    """The Hub repository holding the packs of a base model: ``<owner>/<base-name>-packs``.

    ``<base-name>`` is the last component of the base's repo id (or local path), e.g.
    ``HuggingFaceTB/SmolLM2-135M-Instruct`` -> ``mole-lsp/SmolLM2-135M-Instruct-packs``. Characters the
    Hub does not allow in names become ``-``.
    """
    name = re.split(r"[\\/]", base_repo_id.strip().rstrip("/\\"))[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "base"
    return f"{owner}/{name}-packs"


class PackStore:
    """Installs, verifies and finds the packs of one pack repository (one base model); see the module doc.

    Thread-safe: concurrent calls for the same pack share one download.
    """

    def __init__(self, repo_id: str, revision: str = "main", cache_dir: str | os.PathLike[str] | None = None,
                 offline: bool | None = None, endpoint: str | None = None, token: str | None = None,
                 *, base: BaseIdentity | None = None) -> None:
        """``offline=True`` never contacts the Hub; False/None follow ``HF_HUB_OFFLINE``. ``endpoint``
        defaults to ``$HF_ENDPOINT`` read at call time. ``base``: when given, a core pack made for
        another base model is refused."""
        self.repo_id = repo_id
        self.revision = revision or "main"
        self.base = base
        self.cache = PackCache(repo_id, cache_dir)
        self.hub = PackHub(self.cache, endpoint, token, bool(offline))
        self._lock = threading.RLock()
        self._inflight: dict[tuple[str, str], Future[Any]] = {}
        self._src: Source | None = None
        self._removed: dict[tuple[str, str], str] = {}  # (revision, pack) -> the damage of a removed copy
        self.install_wait = 600.0  # seconds an install waits for another process installing the same pack

    # ---- settings
    @property
    def root(self) -> Path:
        """The cache folder of all pack repositories."""
        return self.cache.root

    @property
    def endpoint(self) -> str | None:
        """The Hub URL asked (None: huggingface_hub's default)."""
        return self.hub.endpoint

    @property
    def forced_offline(self) -> bool:
        """Offline whatever the network says (a setting or flag); the server sets it when that changes."""
        return self.hub.forced_offline

    @forced_offline.setter
    def forced_offline(self, value: bool) -> None:
        self.hub.forced_offline = value

    @property
    def offline(self) -> bool:
        """True when the Hub must not (explicit flag, ``HF_HUB_OFFLINE``) or cannot (a recent connection
        failure) be reached."""
        return self.hub.offline

    # ---- resolution
    def _source(self, language: str | None = None) -> Source:
        with self._lock:
            if self._src is None:
                self._src = self._resolve(language)
            return self._src

    def _resolve(self, language: str | None) -> Source:
        rev = self.revision
        if rev.startswith(LOCAL_PREFIX):
            if (self.cache.local_root / rev / INDEX).is_file():
                return self.cache.local_source(rev)
            raise StoreError(f"no folder install {rev} of {self.repo_id} in {self.root}: "
                             f"install one with `mole-lsp install-pack --from DIR`")
        src, not_found = self.hub.open_revision(rev, self.cache.hub_source)
        if src is not None:
            return src
        local = self.cache.newest_local()
        if local is not None:
            log.info("pack store %s: using folder install %s", self.repo_id, local)
            return self.cache.local_source(local)
        if not_found is not None:
            raise StoreError(not_found)
        what = f"the pack index of {self.repo_id}@{rev}" + (f" (needed for the {language} pack)" if language else "")
        raise self.hub.offline_error(what, language, "index")

    def resolved_revision(self) -> str | None:
        """The commit sha (or ``local-<sha12>``) this store's packs come from; None when unknown (offline,
        nothing cached)."""
        try:
            return self._source().revision
        except StoreError:
            return None

    # ---- listing
    def index(self, refresh: bool = False) -> dict[str, Any]:
        """index.json at the pinned revision. ``refresh`` re-resolves a branch or tag (online), so later
        installs come from its newest commit."""
        if refresh and not self.offline and not COMMIT_SHA.match(self.revision):
            with self._lock:
                try:
                    self._src = self._resolve(None)
                except StoreError:
                    if self._src is None:
                        raise
                    log.warning("pack store %s: keeping %s, the refresh failed", self.repo_id, self._src.revision)
        return self._source().index

    def available(self) -> dict[str, dict[str, Any]]:
        """What can be installed: ``{"core"|language: {"files": {name: {sha256, size}}, "size_bytes": n}}``.

        Empty when the index cannot be had (offline and not cached; ``offline`` then says so). For a folder
        install: the packs it holds.
        """
        try:
            src = self._source()
        except OfflineError:
            return {}
        out = {}
        for name, entry in pack_entries(src.index).items():
            if not src.hub and not src.pack_dir(name).is_dir():
                continue
            files = dict(entry.get("files") or {})
            out[name] = {"files": files, "size_bytes": sum(int(f.get("size", 0)) for f in files.values())}
        return out

    def installed(self) -> dict[str, InstalledPack]:
        """Packs of this store's revision present in the cache with the sizes their manifests record
        (sha256 is checked when a pack is used)."""
        try:
            src = self._source()
        except StoreError:
            return {}
        out: dict[str, InstalledPack] = {}
        experts = src.root / EXPERTS_DIR
        names = [CORE_PACK] + (sorted(p.name for p in experts.iterdir() if p.is_dir()) if experts.is_dir() else [])
        for name in names:
            d = src.pack_dir(name)
            if not d.is_dir():
                continue
            try:
                m = verify_pack(d, kind="core" if name == CORE_PACK else "expert",
                                language=None if name == CORE_PACK else name, check_hashes=False)
            except PackError:
                continue
            out[name] = src.installed(name, d, m)
        return out

    # ---- getting packs
    def core_path(self, install: bool = True, progress: Progress | None = None) -> Path | None:
        """The verified core pack folder; None when it is not installed and ``install`` is False."""
        try:
            src = self._source()
        except OfflineError:
            if not install:
                return None
            raise
        try:
            return self._ensure(src, CORE_PACK, install, progress, None)
        except NotInstalled:
            return None

    def expert_path(self, language: str, install: bool = True, progress: Progress | None = None) -> Path:
        """The verified expert pack folder of ``language`` (downloading core and expert when needed and
        ``install``). Raises StoreError (OfflineError when offline) saying why it cannot be had."""
        lang = check_language(language)
        src = self._source(lang)
        try:
            return self._ensure(src, lang, install, progress, lang)
        except NotInstalled as e:
            raise StoreError(str(e)) from None

    def install(self, languages: Iterable[str], progress: Progress | None = None, *,
                cancel: threading.Event | None = None, retry: bool = False) -> dict[str, InstalledPack]:
        """Install (and verify) the core and the given languages' experts; returns what is installed.

        ``cancel``: setting it stops a download with :class:`~mole_lsp.packs.errors.Cancelled`.
        ``retry``: ask the Hub again even after a recent connection failure (an explicit install)."""
        if retry:
            self.hub.ask_again()
        langs = [check_language(x) for x in languages]
        src = self._source(langs[0] if langs else None)
        require_listed(src, [CORE_PACK, *langs], self.repo_id)  # fail before downloading anything
        out: dict[str, InstalledPack] = {}
        for name in [CORE_PACK, *langs]:
            d = self._ensure(src, name, True, progress, None if name == CORE_PACK else name, cancel)
            m, _ = self.cache.intact(d, name)
            assert m is not None
            out[name] = src.installed(name, d, m)
        return out

    def _ensure(self, src: Source, name: str, install: bool, progress: Progress | None,
                needed_by: str | None, cancel: threading.Event | None = None) -> Path:
        core = None
        if name != CORE_PACK:
            require_listed(src, [name], self.repo_id)  # an unknown language must not cost a core download
            core_dir = self._ensure(src, CORE_PACK, install, progress, needed_by, cancel)
            core, _ = self.cache.intact(core_dir, CORE_PACK)
        if not install:  # never waits for a download in progress (completions go on meanwhile)
            return self._ensure_one(src, name, False, progress, needed_by, core)
        return self._once((src.revision, name),
                          lambda: self._ensure_one(src, name, True, progress, needed_by, core, cancel))

    def _ensure_one(self, src: Source, name: str, install: bool, progress: Progress | None,
                    needed_by: str | None, core: dict[str, Any] | None,
                    cancel: threading.Event | None = None) -> Path:
        what = "core pack" if name == CORE_PACK else f"{name} pack"
        if name == CORE_PACK and needed_by:
            what = f"core pack (needed by the {needed_by} pack)"
        # The folder's lock (shared with other processes on this cache) is held from the check to the end
        # of a repair: a half-downloaded pack is someone's download in progress, never damage.
        with self.cache.pack_lock(src.revision, name, self.install_wait if install else 0) as held:
            if not held and not install:
                raise NotInstalled(f"{what} is being downloaded; it is used once the download ends")
            if not held:
                raise StoreError(f"the {what} is still being installed by another process after "
                                 f"{self.install_wait:.0f} s: try again later")
            d = src.pack_dir(name)
            m, damage = self.cache.intact(d, name)
            if m is None:
                self._get(src, name, d, damage, what, install, progress, needed_by, cancel)
            check_compatible(self.repo_id, self.base, d, name, core)
            return d

    def _get(self, src: Source, name: str, d: Path, damage: str | None, what: str, install: bool,
             progress: Progress | None, needed_by: str | None, cancel: threading.Event | None) -> None:
        """Download the missing or damaged pack ``name`` into ``d`` (lock held), or raise why it cannot be."""
        removed = self._removed.get((src.revision, name))
        hint = (f" (the cached copy is incomplete or damaged: {damage})" if damage else
                f" (the cached copy was damaged and has been removed: {removed})" if removed else "")
        if src.hub:
            require_listed(src, [name], self.repo_id)
        if not install:
            cmd = needed_by or (name if name != CORE_PACK else "<language>")
            raise NotInstalled(f"{what} is not installed{hint}: run `mole-lsp install-pack {cmd}`")
        if not src.hub:
            if damage is not None:
                self.cache.delete_pack(d)
            raise StoreError(f"{what} is missing from the folder install {src.revision}{hint}: "
                             f"install it again with `mole-lsp install-pack --from DIR`")
        if self.offline:
            if damage is not None:  # kept: it is named until a repair can replace it
                cmd = needed_by or (name if name != CORE_PACK else "<language>")
                raise OfflineError(f"the cached {what} is damaged ({damage}) and cannot be repaired while the "
                                   f"Hub is offline ({self.hub.offline_reason()}): run `mole-lsp install-pack "
                                   f"{cmd}` when online", name)
            err = self.hub.offline_error(what, needed_by, name)
            raise OfflineError(f"{err}{hint}", name) if hint else err
        if damage is not None:
            log.warning("%s: cached %s is damaged (%s); downloading it again", self.repo_id, what, damage)
            self.cache.delete_pack(d)
            self._removed[(src.revision, name)] = damage
            hint = f" (the cached copy was damaged and has been removed: {damage})"
        try:
            self._download(src, name, needed_by, progress, cancel)
        except OfflineError as e:
            if not hint:
                raise
            raise OfflineError(f"{e}{hint}", name) from e
        m, damage = self.cache.intact(d, name)
        if m is None:
            raise StoreError(f"the {what} downloaded from {self.repo_id}@{short_revision(src.revision)} "
                             f"does not verify: {damage or 'its files are missing'}")
        self._removed.pop((src.revision, name), None)

    def _download(self, src: Source, name: str, needed_by: str | None, progress: Progress | None,
                  cancel: threading.Event | None = None) -> None:
        what = "core pack" if name == CORE_PACK else f"{name} pack"
        entry = pack_entries(src.index)[name]
        total = sum(int(f.get("size", 0)) for f in (entry.get("files") or {}).values())
        folder = CORE_DIR if name == CORE_PACK else f"{EXPERTS_DIR}/{name}"
        offline_what = what + (f" (needed by the {needed_by} pack)" if name == CORE_PACK and needed_by else "")
        self.hub.download(src.revision, folder, what, total, progress, offline_what, needed_by, name, cancel)

    def _once(self, key: tuple[str, str], work: Callable[[], T]) -> T:
        """``work()``, or the outcome of the call already doing it for the same pack (one download at a time)."""
        with self._lock:
            fut = self._inflight.get(key)
            owner = fut is None
            if fut is None:
                fut = self._inflight[key] = Future()
        if not owner:
            return fut.result()  # someone else is fetching this pack: share the outcome
        try:
            result = work()
        except BaseException as e:
            fut.set_exception(e)
            raise
        else:
            fut.set_result(result)
            return result
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    # ---- folder installs and removal
    def install_from(self, folder: str | os.PathLike[str],
                     languages: Iterable[str] | None = None) -> dict[str, InstalledPack]:
        """Verify a local pack repository folder (``core/``, ``experts/<lang>/``, ``index.json``, as
        ``training --out DIR`` writes it) and copy its core and the given (default: all) experts into the
        cache under the revision ``local-<sha12 of its index.json>``."""
        rev, out = install_folder(self.cache, folder, languages, self.base)
        with self._lock:
            if self._src is not None and self._src.revision == rev:
                self._src = self.cache.local_source(rev)
        return out

    def remove(self, language: str) -> bool:
        """Delete ``language``'s expert pack (or the core, with ``"core"``) from every cached revision of
        this repository. True when something was removed."""
        name = language if language == CORE_PACK else check_language(language)
        removed = False
        for root in self.cache.cached_roots():
            d = pack_folder(root, name)
            if d.exists():
                with self._lock:
                    self.cache.delete_pack(d)
                removed = True
        return removed
