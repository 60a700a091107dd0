"""The pack store: core and expert packs downloaded from the Hub (or copied from a folder) into a local cache.

One Hub repository per base model holds ``core/``, ``experts/<language>/`` and ``index.json`` (see
:mod:`mole_lsp.packs.format`); :func:`default_pack_repo` names it. A :class:`PackStore` installs only what is
asked for: ``expert_path("rust")`` fetches ``core/`` (once) and ``experts/rust/`` and nothing else.

Cache layout under ``mole_lsp.paths.packs_dir(cache_dir)``:

- ``hub/`` is a plain huggingface_hub cache (``snapshot_download(cache_dir=...)``): files land as
  ``.incomplete`` and are renamed when complete, interrupted downloads resume, and every commit has its
  own ``snapshots/<sha>/`` folder, so a pinned revision keeps its files when the repository moves on;
- ``local/<owner>--<name>/local-<sha12>/`` holds pack repositories installed from a folder with
  :meth:`PackStore.install_from` (``sha12``: the first 12 hex digits of the sha256 of their index.json).

Revisions: the store resolves its revision (branch, tag or commit) to a commit sha once, on first use,
and every pack of that store comes from that commit. A revision named ``local-<sha12>`` selects a
folder install. When the Hub cannot give a commit (offline and never resolved, or the repository does
not exist there) the newest folder install of the repository is used instead.

Offline (``offline=True``, ``HF_HUB_OFFLINE=1``, or a connection failure, remembered for
``PackStore.unreachable_for`` seconds): cached packs only; a missing pack raises :class:`OfflineError`
that says what is missing and how to get it.

Every pack is verified with :func:`mole_lsp.packs.format.verify_pack` before its path is returned: sizes and
sha256 of every file, experts against the sha256, base and rank layout of the core next to them. A
damaged cached pack is deleted and downloaded again once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mole_lsp import paths
from mole_lsp.lang.registry import LANGUAGE_ID
from mole_lsp.packs.format import (
    CORE_DIR,
    EXPERTS_DIR,
    INDEX,
    BaseIdentity,
    PackError,
    core_sha256,
    read_index,
    verify_pack,
)

__all__ = [
    "InstalledPack",
    "OfflineError",
    "PackStore",
    "Progress",
    "StoreError",
    "default_pack_repo",
]

log = logging.getLogger(__name__)

Progress = Callable[[str, "float | None"], None]
"""``progress(message, fraction)``: fraction in [0, 1], or None when unknown. Called from download threads."""

CORE = "core"
LOCAL_PREFIX = "local-"
PACK_REPO_OWNER = "mole-lsp"
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
T = TypeVar("T")


class StoreError(RuntimeError):
    """A pack cannot be provided; the message is meant for the user."""


class OfflineError(StoreError):
    """A pack is not cached and the Hub cannot be asked for it."""

    def __init__(self, message: str, missing: str | None = None) -> None:
        super().__init__(message)
        self.missing = missing  # "core", a language id, or "index"


@dataclass(frozen=True)
class InstalledPack:
    language: str  # "core" for the core pack
    path: Path  # the pack folder (manifest.json + adapters.safetensors)
    revision: str  # commit sha, or "local-<sha12>" for a folder install
    size_bytes: int  # sum of the files the manifest lists


def default_pack_repo(base_repo_id: str, owner: str = PACK_REPO_OWNER) -> str:
    """The Hub repository holding the packs of a base model: ``<owner>/<base-name>-packs``.

    ``<base-name>`` is the last component of the base's repo id (or local path), e.g.
    ``HuggingFaceTB/SmolLM2-135M-Instruct`` -> ``mole-lsp/SmolLM2-135M-Instruct-packs``. Characters the
    Hub does not allow in names become ``-``.
    """
    name = re.split(r"[\\/]", base_repo_id.strip().rstrip("/\\"))[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "base"
    return f"{owner}/{name}-packs"


# -- progress -----------------------------------------------------------------------------------------------
def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


class _ProgressSink:
    """Collects the byte counts huggingface_hub reports to its progress bars and forwards them as
    ``progress(message, fraction)``; throttled to about one call per percent."""

    def __init__(self, callback: Progress | None, label: str, total_bytes: int) -> None:
        self.callback, self.label, self.total = callback, label, total_bytes
        self._bars: list[_Bar] = []
        self._lock = threading.Lock()
        self._last = -1.0

    def bar_class(self) -> type:
        return type("_BoundBar", (_Bar,), {"sink": self})

    def add(self, bar: _Bar) -> None:
        with self._lock:
            self._bars.append(bar)

    def changed(self) -> None:
        if self.callback is None:
            return
        with self._lock:
            # several byte bars count the same bytes (network and disk): the furthest one is the truth;
            # their totals grow as files start and include files the index does not size (manifest.json)
            byte_bars = [b for b in self._bars if b.unit == "B"]
            done = max((int(b.n) for b in byte_bars), default=0)
            total = max([self.total, *(int(b.total or 0) for b in byte_bars)])
            frac = min(1.0, done / total) if total else None
            if frac is not None and frac - self._last < 0.01 and not (frac >= 1.0 > self._last):
                return
            self._last = frac if frac is not None else self._last
        self.say(f"Downloading {self.label} ({_mb(done)} of {_mb(total)})", frac)

    def say(self, message: str, fraction: float | None) -> None:
        if self.callback is None:
            return
        try:
            self.callback(message, fraction)
        except Exception:  # a broken progress display must not break an install
            log.exception("progress callback failed")


class _Bar:
    """Just enough of tqdm for huggingface_hub's ``tqdm_class=``: counts, never prints."""

    sink: _ProgressSink | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.n = kwargs.get("initial") or 0
        self.total = kwargs.get("total")
        self.unit = kwargs.get("unit", "it")
        self.desc = kwargs.get("desc", "")
        self.format_dict: dict[str, Any] = {}
        if self.sink is not None:
            self.sink.add(self)

    def update(self, n: float | None = 1) -> None:
        self.n += n or 0
        if self.sink is not None:
            self.sink.changed()

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Callable[..., None]:
        # refresh, close, set_description, set_postfix_str, ...: nothing to show
        if name.startswith("__"):
            raise AttributeError(name)
        return _ignore


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


# -- errors -------------------------------------------------------------------------------------------------
_NET_ERROR_NAMES = {"ConnectError", "ConnectTimeout", "NetworkError", "TimeoutException", "ReadTimeout",
                    "PoolTimeout", "ProxyError"}


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means "the Hub cannot be reached" (rather than "it answered no")."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, HfHubHTTPError):
            return False  # the Hub answered
        if isinstance(seen, (OfflineModeIsEnabled, LocalEntryNotFoundError, ConnectionError, TimeoutError)):
            return True
        if _NET_ERROR_NAMES & {c.__name__ for c in type(seen).__mro__}:
            return True
        seen = seen.__cause__  # not __context__: a retry that failed differently is not a network outage
    return False


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mole-lsp")
    except PackageNotFoundError:
        return "unknown"


def _short_rev(rev: str) -> str:
    return rev[:12] if _SHA_RE.match(rev) else rev


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# -- the store ----------------------------------------------------------------------------------------------
@dataclass
class _Source:
    """Where the packs of this session come from: one Hub commit, or one folder install."""

    revision: str  # commit sha or "local-<sha12>"
    root: Path  # folder with index.json, core/, experts/
    hub: bool
    index: dict[str, Any]


class PackStore:
    """Installs, verifies and finds the packs of one pack repository (one base model); see the module doc.

    Thread-safe: concurrent calls for the same pack share one download.
    """

    unreachable_for: float = 60.0  # seconds a failed connection keeps the store offline

    def __init__(self, repo_id: str, revision: str = "main", cache_dir: str | os.PathLike[str] | None = None,
                 offline: bool | None = None, endpoint: str | None = None, token: str | None = None,
                 *, base: BaseIdentity | None = None) -> None:
        """``offline=True`` never contacts the Hub; False/None follow ``HF_HUB_OFFLINE``. ``endpoint``
        defaults to ``$HF_ENDPOINT`` read at call time. ``base``: when given, a core pack made for
        another base model is refused."""
        self.repo_id = repo_id
        self.revision = revision or "main"
        self.base = base
        self._cache_override = cache_dir
        self.forced_offline = bool(offline)  # offline whatever the network says (a setting or flag)
        self._endpoint = endpoint
        self._token = token
        self._lock = threading.RLock()
        self._inflight: dict[tuple[str, str], Future[Any]] = {}
        self._verified: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._src: _Source | None = None
        self._down_until = 0.0
        self._down_reason = ""

    # ---- locations and settings
    @property
    def root(self) -> Path:
        return paths.packs_dir(self._cache_override)

    @property
    def hub_cache(self) -> Path:
        return self.root / "hub"

    @property
    def local_root(self) -> Path:
        return self.root / "local" / self.repo_id.replace("/", "--")

    @property
    def endpoint(self) -> str | None:
        return self._endpoint or paths.hub_endpoint()

    @property
    def offline(self) -> bool:
        """True when the Hub must not (explicit flag, ``HF_HUB_OFFLINE``) or cannot (a recent connection
        failure) be reached."""
        return self.forced_offline or paths.hub_offline() or time.monotonic() < self._down_until

    def _offline_reason(self) -> str:
        if self.forced_offline:
            return "offline mode is on"
        if paths.hub_offline():
            return "HF_HUB_OFFLINE=1" if os.environ.get("HF_HUB_OFFLINE") else "offline mode is on (HF_HUB_OFFLINE)"
        return self._down_reason or "the Hub cannot be reached"

    def _mark_unreachable(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.unreachable_for
        self._down_reason = f"cannot reach {self.endpoint or 'the Hub'}: {_short(exc)}"
        log.warning("pack store %s: %s", self.repo_id, self._down_reason)

    def _hub_kwargs(self) -> dict[str, Any]:
        return {"cache_dir": self.hub_cache, "endpoint": self.endpoint, "token": self._token,
                "library_name": "mole-lsp", "library_version": _version()}

    def _offline_error(self, what: str, language: str | None, missing: str) -> OfflineError:
        cmd = f"mole-lsp install-pack {language}" if language else "mole-lsp install-pack <language>"
        return OfflineError(f"{what} is not cached and the Hub is offline ({self._offline_reason()}): "
                            f"run `{cmd}` when online, or install from a folder with --from", missing)

    # ---- resolution
    def _source(self, language: str | None = None) -> _Source:
        with self._lock:
            if self._src is None:
                self._src = self._resolve(language)
            return self._src

    def _resolve(self, language: str | None) -> _Source:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        rev = self.revision
        if rev.startswith(LOCAL_PREFIX):
            if (self.local_root / rev / INDEX).is_file():
                return self._local_source(rev)
            raise StoreError(f"no folder install {rev} of {self.repo_id} in {self.root}: "
                             f"install one with `mole-lsp install-pack --from DIR`")
        not_found: str | None = None
        if not self.offline:
            try:
                # resolves the revision to a commit (recorded in the HF cache's refs/ for offline use)
                # and fetches index.json; packs are then downloaded from that commit only
                folder = snapshot_download(self.repo_id, revision=rev, allow_patterns=[INDEX],
                                           tqdm_class=_Bar, **self._hub_kwargs())
                return self._hub_source(Path(folder))
            except RevisionNotFoundError as e:
                raise StoreError(f"revision {rev!r} of pack repository {self.repo_id} does not exist "
                                 f"on {self.endpoint or 'the Hub'}") from e
            except RepositoryNotFoundError:
                not_found = (f"pack repository {self.repo_id} was not found on {self.endpoint or 'the Hub'}: "
                             f"no packs are published for this base model under that name; train packs and "
                             f"install them with `mole-lsp install-pack --from DIR`")
            except Exception as e:
                if not _unreachable(e):
                    raise StoreError(f"cannot read pack repository {self.repo_id}@{rev}: {_short(e)}") from e
                self._mark_unreachable(e)
        if not_found is None:
            try:
                folder = snapshot_download(self.repo_id, revision=rev, allow_patterns=[INDEX],
                                           local_files_only=True, **self._hub_kwargs())
                return self._hub_source(Path(folder))
            except Exception as e:  # nothing cached for this revision
                log.debug("no cached index for %s@%s: %s", self.repo_id, rev, e)
        local = self._newest_local()
        if local is not None:
            log.info("pack store %s: using folder install %s", self.repo_id, local)
            return self._local_source(local)
        if not_found is not None:
            raise StoreError(not_found)
        what = f"the pack index of {self.repo_id}@{rev}" + (f" (needed for the {language} pack)" if language else "")
        raise self._offline_error(what, language, "index")

    def _hub_source(self, folder: Path) -> _Source:
        # snapshot folders are named after the commit they hold
        if not (folder / INDEX).is_file():
            raise StoreError(f"{self.repo_id}@{_short_rev(folder.name)} is not a mole-lsp pack repository (no {INDEX})")
        return _Source(folder.name, folder, True, self._read_index(folder / INDEX))

    def _local_source(self, rev: str) -> _Source:
        folder = self.local_root / rev
        return _Source(rev, folder, False, self._read_index(folder / INDEX))

    def _newest_local(self) -> str | None:
        if not self.local_root.is_dir():
            return None
        found = [d for d in self.local_root.iterdir() if d.name.startswith(LOCAL_PREFIX) and (d / INDEX).is_file()]
        return max(found, key=lambda d: (d / INDEX).stat().st_mtime_ns).name if found else None

    @staticmethod
    def _read_index(path: Path) -> dict[str, Any]:
        try:
            return read_index(path)
        except PackError as e:
            raise StoreError(str(e)) from e

    def resolved_revision(self) -> str | None:
        """The commit sha (or ``local-<sha12>``) this store's packs come from; None when unknown (offline,
        nothing cached)."""
        try:
            return self._source().revision
        except StoreError:
            return None

    # ---- index
    def index(self, refresh: bool = False) -> dict[str, Any]:
        """index.json at the pinned revision. ``refresh`` re-resolves a branch or tag (online), so later
        installs come from its newest commit."""
        if refresh and not self.offline and not _SHA_RE.match(self.revision):
            with self._lock:
                try:
                    self._src = self._resolve(None)
                except StoreError:
                    if self._src is None:
                        raise
                    log.warning("pack store %s: keeping %s, the refresh failed", self.repo_id, self._src.revision)
        return self._source().index

    @staticmethod
    def _entries(index: dict[str, Any]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if index.get("core"):
            out[CORE] = index["core"]
        out.update(index["experts"])
        return out

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
        for name, entry in self._entries(src.index).items():
            if not src.hub and not self._pack_dir(src, name).is_dir():
                continue
            files = dict(entry.get("files") or {})
            out[name] = {"files": files, "size_bytes": sum(int(f.get("size", 0)) for f in files.values())}
        return out

    # ---- what is on disk
    @staticmethod
    def _pack_dir(src: _Source, name: str) -> Path:
        return src.root / CORE_DIR if name == CORE else src.root / EXPERTS_DIR / name

    def installed(self) -> dict[str, InstalledPack]:
        """Packs of this store's revision present in the cache with the sizes their manifests record
        (sha256 is checked when a pack is used)."""
        try:
            src = self._source()
        except StoreError:
            return {}
        out: dict[str, InstalledPack] = {}
        names = [CORE] + (sorted(p.name for p in (src.root / EXPERTS_DIR).iterdir() if p.is_dir())
                          if (src.root / EXPERTS_DIR).is_dir() else [])
        for name in names:
            d = self._pack_dir(src, name)
            if not d.is_dir():
                continue
            try:
                m = verify_pack(d, kind="core" if name == CORE else "expert",
                                language=None if name == CORE else name, check_hashes=False)
            except PackError:
                continue
            out[name] = self._installed(src, name, d, m)
        return out

    @staticmethod
    def _installed(src: _Source, name: str, path: Path, manifest: dict[str, Any]) -> InstalledPack:
        size = sum(int(f["size"]) for f in manifest["files"].values())
        return InstalledPack(name, path, src.revision, size)

    # ---- verification
    @staticmethod
    def _stamp(d: Path) -> tuple[Any, ...]:
        # stat() follows the HF cache's symlinks to the blobs, so a rewritten blob changes the stamp
        return tuple(sorted((p.name, st.st_size, st.st_mtime_ns, st.st_ino)
                            for p in d.iterdir() if p.is_file() for st in [p.stat()]))

    def _intact(self, d: Path, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """(manifest, None) when the pack's files are complete and match their sha256; (None, why) when a
        copy is present but damaged; (None, None) when absent."""
        if not d.is_dir():
            return None, None
        try:
            stamp = self._stamp(d)
            hit = self._verified.get(str(d))
            if hit is not None and hit[0] == stamp:
                return hit[1], None
            m = verify_pack(d, kind="core" if name == CORE else "expert", language=None if name == CORE else name)
        except (PackError, OSError) as e:
            self._verified.pop(str(d), None)
            return None, str(e)
        self._verified[str(d)] = (stamp, m)
        return m, None

    def _compatible(self, d: Path, name: str, manifest: dict[str, Any], core: dict[str, Any] | None) -> None:
        """Refuse, with the reason, a pack made for another base, rank layout or core (nothing is deleted:
        downloading it again would not help)."""
        try:
            if name == CORE:
                verify_pack(d, kind="core", base=self.base, check_hashes=False)
            else:
                assert core is not None
                verify_pack(d, kind="expert", language=name, base=BaseIdentity.from_dict(core["base"]),
                            layout=core["layout"], core_sha256=core_sha256(core), check_hashes=False)
        except PackError as e:
            what = "core pack" if name == CORE else f"{name} pack"
            raise StoreError(f"the {what} of {self.repo_id} is refused: {e}") from e

    # ---- deleting
    def _delete_pack(self, d: Path) -> None:
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

    # ---- one download per pack at a time
    def _once(self, key: tuple[str, str], work: Callable[[], T]) -> T:
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

    # ---- getting packs
    def _check_language(self, language: str) -> str:
        if language == CORE or not LANGUAGE_ID.fullmatch(language or ""):
            raise StoreError(f"{language!r} is not a language id")
        return language

    def core_path(self, install: bool = True, progress: Progress | None = None) -> Path | None:
        """The verified core pack folder; None when it is not installed and ``install`` is False."""
        try:
            src = self._source()
        except OfflineError:
            if not install:
                return None
            raise
        try:
            return self._ensure(src, CORE, install, progress, None)
        except _NotInstalled:
            return None

    def expert_path(self, language: str, install: bool = True, progress: Progress | None = None) -> Path:
        """The verified expert pack folder of ``language`` (downloading core and expert when needed and
        ``install``). Raises StoreError (OfflineError when offline) saying why it cannot be had."""
        lang = self._check_language(language)
        src = self._source(lang)
        try:
            return self._ensure(src, lang, install, progress, lang)
        except _NotInstalled as e:
            raise StoreError(str(e)) from None

    def install(self, languages: Iterable[str], progress: Progress | None = None) -> dict[str, InstalledPack]:
        """Install (and verify) the core and the given languages' experts; returns what is installed."""
        langs = [self._check_language(x) for x in languages]
        src = self._source(langs[0] if langs else None)
        self._require_listed(src, [CORE, *langs])  # fail before downloading anything
        out: dict[str, InstalledPack] = {}
        for name in [CORE, *langs]:
            d = self._ensure(src, name, True, progress, None if name == CORE else name)
            m, _ = self._intact(d, name)
            assert m is not None
            out[name] = self._installed(src, name, d, m)
        return out

    def _require_listed(self, src: _Source, names: Iterable[str]) -> None:
        entries = self._entries(src.index)
        for name in names:
            if name in entries and (src.hub or self._pack_dir(src, name).is_dir()):
                continue
            where = f"{self.repo_id}@{_short_rev(src.revision)}"
            if name == CORE:
                raise StoreError(f"{where} has no core pack")
            have = sorted(n for n in entries if n != CORE and (src.hub or self._pack_dir(src, n).is_dir()))
            raise StoreError(f"no {name} expert pack in {where} (available: {', '.join(have) or 'none'})")

    def _ensure(self, src: _Source, name: str, install: bool, progress: Progress | None,
                needed_by: str | None) -> Path:
        core = None
        if name != CORE:
            self._require_listed(src, [name])  # an unknown language must not cost a core download
            core_dir = self._ensure(src, CORE, install, progress, needed_by)
            core, _ = self._intact(core_dir, CORE)
        return self._once((src.revision, name), lambda: self._ensure_one(src, name, install, progress, needed_by, core))

    def _ensure_one(self, src: _Source, name: str, install: bool, progress: Progress | None,
                    needed_by: str | None, core: dict[str, Any] | None) -> Path:
        what = "core pack" if name == CORE else f"{name} pack"
        if name == CORE and needed_by:
            what = f"core pack (needed by the {needed_by} pack)"
        d = self._pack_dir(src, name)
        m, damage = self._intact(d, name)
        if m is None:
            if damage is not None:
                log.warning("%s: cached %s is damaged (%s); removing it", self.repo_id, what, damage)
                self._delete_pack(d)
            if src.hub:
                self._require_listed(src, [name])
            hint = f" (the cached copy was damaged and has been removed: {damage})" if damage else ""
            if not install:
                cmd = needed_by or (name if name != CORE else "<language>")
                raise _NotInstalled(f"{what} is not installed{hint}: run `mole-lsp install-pack {cmd}`")
            if not src.hub:
                raise StoreError(f"{what} is missing from the folder install {src.revision}{hint}: "
                                 f"install it again with `mole-lsp install-pack --from DIR`")
            if self.offline:
                err = self._offline_error(what, needed_by, name)
                raise OfflineError(f"{err}{hint}", name) if hint else err
            self._download(src, name, "core pack" if name == CORE else f"{name} pack", needed_by, progress)
            m, damage = self._intact(d, name)
            if m is None:
                raise StoreError(f"the {what} downloaded from {self.repo_id}@{_short_rev(src.revision)} does not verify: "
                                 f"{damage or 'its files are missing'}")
        self._compatible(d, name, m, core)
        return d

    def _download(self, src: _Source, name: str, what: str, needed_by: str | None,
                  progress: Progress | None) -> None:
        from huggingface_hub import snapshot_download

        entry = self._entries(src.index)[name]
        total = sum(int(f.get("size", 0)) for f in (entry.get("files") or {}).values())
        sink = _ProgressSink(progress, what, total)
        sink.say(f"Downloading {what} ({_mb(total)})", 0.0)
        prefix = CORE_DIR if name == CORE else f"{EXPERTS_DIR}/{name}"
        try:
            snapshot_download(self.repo_id, revision=src.revision, allow_patterns=[f"{prefix}/*"],
                              tqdm_class=sink.bar_class(), max_workers=4, **self._hub_kwargs())
        except Exception as e:
            if _unreachable(e):
                self._mark_unreachable(e)
                what += f" (needed by the {needed_by} pack)" if name == CORE and needed_by else ""
                raise self._offline_error(what, needed_by, name) from e
            raise StoreError(f"downloading the {what} from {self.repo_id}@{_short_rev(src.revision)} failed "
                             f"({_short(e)}); run the command again to resume") from e
        sink.say(f"Downloaded {what}", 1.0)

    # ---- folder installs
    def install_from(self, folder: str | os.PathLike[str],
                     languages: Iterable[str] | None = None) -> dict[str, InstalledPack]:
        """Verify a local pack repository folder (``core/``, ``experts/<lang>/``, ``index.json``, as
        ``training --out DIR`` writes it) and copy its core and the given (default: all) experts into the
        cache under the revision ``local-<sha12 of its index.json>``."""
        folder = Path(folder).expanduser()
        index_path = folder / INDEX
        if not index_path.is_file():
            raise StoreError(f"{folder} is not a pack repository (no {INDEX}; export_packs and "
                             f"`training --out DIR` write one)")
        raw = index_path.read_bytes()
        rev = LOCAL_PREFIX + hashlib.sha256(raw).hexdigest()[:12]
        src = _Source(rev, folder, False, self._read_index(index_path))
        langs = sorted(src.index["experts"]) if languages is None else [self._check_language(x) for x in languages]
        self._require_listed(src, [CORE, *langs])
        dest = _Source(rev, self.local_root / rev, False, src.index)
        out: dict[str, InstalledPack] = {}
        core: dict[str, Any] | None = None
        for name in [CORE, *langs]:
            what = "core pack" if name == CORE else f"{name} pack"
            m, damage = self._intact(self._pack_dir(src, name), name)
            if m is None:
                raise StoreError(f"the {what} in {folder} does not verify: {damage or 'missing'}")
            self._compatible(self._pack_dir(src, name), name, m, core)
            if name == CORE:
                core = m
            target = self._pack_dir(dest, name)
            if self._intact(target, name)[0] is None:  # not there yet, or a damaged copy
                self._copy_pack(self._pack_dir(src, name), target)
                m, damage = self._intact(target, name)
                if m is None:
                    raise StoreError(f"copying the {what} into {target} failed: {damage}")
            out[name] = self._installed(dest, name, target, m)
        self._atomic_write(dest.root / INDEX, raw)  # written last: its mtime marks the newest install
        with self._lock:
            if self._src is not None and self._src.revision == rev:
                self._src = self._local_source(rev)
        return out

    def _copy_pack(self, src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
        try:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            if dst.exists():
                self._delete_pack(dst)
            os.replace(tmp, dst)  # a half-copied pack is never visible under its name
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # ---- removing
    def remove(self, language: str) -> bool:
        """Delete ``language``'s expert pack (or the core, with ``"core"``) from every cached revision of
        this repository. True when something was removed."""
        name = language if language == CORE else self._check_language(language)
        removed = False
        for root in self._cached_roots():
            d = root / CORE_DIR if name == CORE else root / EXPERTS_DIR / name
            if d.exists():
                with self._lock:
                    self._delete_pack(d)
                removed = True
        return removed

    def _cached_roots(self) -> list[Path]:
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


class _NotInstalled(StoreError):
    """Internal: a pack is absent and installing was not allowed."""
