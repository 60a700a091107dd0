"""Hub access of the pack store: resolving a revision, downloading one pack folder, and knowing when to stay offline.

Downloads use huggingface_hub's ``snapshot_download`` into the store's HF cache with ``allow_patterns``
limited to one pack folder (or ``index.json``), so nothing else of the repository is fetched. Its
progress bars are replaced by counters that report ``progress(message, fraction)``.

Offline (``offline=True``, ``HF_HUB_OFFLINE=1``, or a connection failure, remembered for
:attr:`PackHub.unreachable_for` seconds): no request is made, and a missing pack raises
:class:`~mole_lsp.packs.errors.OfflineError` saying what is missing and how to get it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mole_lsp import paths
from mole_lsp.packs.cache import PackCache, short_revision
from mole_lsp.packs.errors import Cancelled, OfflineError, StoreError
from mole_lsp.packs.format import INDEX

__all__ = ["PackHub", "Progress", "ProgressSink", "format_size", "is_unreachable", "short_error"]

log = logging.getLogger(__name__)

Progress = Callable[[str, "float | None"], None]
"""``progress(message, fraction)``: fraction in [0, 1], or None when unknown. Called from download threads."""

T = TypeVar("T")


# -- progress -----------------------------------------------------------------------------------------------
def format_size(n: int) -> str:
    """``n`` bytes as MB, or as kB below 0.1 MB."""
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


class ProgressSink:
    """Collects the byte counts huggingface_hub reports to its progress bars and forwards them as
    ``progress(message, fraction)``; throttled to about one call per percent."""

    def __init__(self, callback: Progress | None, label: str, total_bytes: int,
                 cancel: threading.Event | None = None) -> None:
        """``cancel``: once set, the next progress update (every downloaded chunk) raises Cancelled."""
        self.callback, self.label, self.total, self.cancel = callback, label, total_bytes, cancel
        self._bars: list[_Bar] = []
        self._lock = threading.Lock()
        self._last = -1.0

    def bar_class(self) -> type:
        """A ``tqdm_class`` for huggingface_hub whose bars report to this sink."""
        return type("_BoundBar", (_Bar,), {"sink": self})

    def add(self, bar: _Bar) -> None:
        with self._lock:
            self._bars.append(bar)

    def check(self) -> None:
        """Raise Cancelled when the download was cancelled."""
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(f"the download of the {self.label} was cancelled")

    def changed(self) -> None:
        self.check()  # raised inside huggingface_hub's chunk loop: the .incomplete file is never renamed
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
        self.say(f"Downloading {self.label} ({format_size(done)} of {format_size(total)})", frac)

    def say(self, message: str, fraction: float | None) -> None:
        """Pass one message to the callback; a failing callback is logged, never raised."""
        if self.callback is None:
            return
        try:
            self.callback(message, fraction)
        except Exception:  # a broken progress display must not break an install
            log.exception("progress callback failed")


class _Bar:
    """Just enough of tqdm for huggingface_hub's ``tqdm_class=``: counts, never prints."""

    sink: ProgressSink | None = None

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


def is_unreachable(exc: BaseException) -> bool:
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


def short_error(exc: BaseException) -> str:
    """``Type: first line of the message``, for one-line reports."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mole-lsp")
    except PackageNotFoundError:
        return "unknown"


# -- the Hub ------------------------------------------------------------------------------------------------
class PackHub:
    """The Hub side of one pack repository, downloading into the HF cache of a :class:`PackCache`."""

    unreachable_for: float = 60.0  # seconds a failed connection keeps the store offline
    probe_timeout: float = 10.0  # seconds the reachability probe waits for an answer

    def __init__(self, cache: PackCache, endpoint: str | None = None, token: str | None = None,
                 offline: bool = False) -> None:
        """``endpoint`` defaults to ``$HF_ENDPOINT`` read at call time; ``offline`` never contacts the Hub."""
        self.cache = cache
        self.repo_id = cache.repo_id
        self.forced_offline = offline  # offline whatever the network says (a setting or flag)
        self._endpoint = endpoint
        self._token = token
        self._down_until = 0.0
        self._down_reason = ""
        self.on_change: Callable[[], None] | None = None  # called when the Hub becomes (un)reachable

    @property
    def endpoint(self) -> str | None:
        """The Hub URL asked (None: huggingface_hub's default)."""
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

    @property
    def unreachable_reason(self) -> str | None:
        """Why the Hub is taken as unreachable now (a recent connection failure), None when it is not."""
        return self._down_reason if time.monotonic() < self._down_until else None

    def mark_unreachable(self, exc: BaseException) -> None:
        """Stay offline for :attr:`unreachable_for` seconds after the connection failure ``exc``."""
        self._down_until = time.monotonic() + self.unreachable_for
        self._down_reason = f"cannot reach {self.endpoint or 'the Hub'}: {short_error(exc)}"
        log.info("pack store %s: %s", self.repo_id, self._down_reason)  # the status and the engine's note tell the user
        self._changed()

    def mark_reachable(self) -> None:
        """The Hub answered (or is to be asked again): forget an earlier connection failure."""
        was_down = self.unreachable_reason is not None
        self._down_until = 0.0
        if was_down:
            self._changed()

    def ask_again(self) -> None:
        """Let the next call try the Hub despite a recent connection failure (an explicit install); the
        outcome of that call says whether it is reachable."""
        self._down_until = 0.0

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # a status display must not break a download
                log.exception("reachability callback failed")

    def offline_reason(self) -> str:
        """Why the Hub is not asked (offline flag, HF_HUB_OFFLINE, a connection failure)."""
        return self._offline_reason()

    def _probe(self, revision: str) -> None:
        """One plain request for ``revision``: an unreachable Hub fails it at once, where huggingface_hub's
        downloads would retry with backoff for about 23 s (or silently fall back to the cache)."""
        from huggingface_hub import HfApi

        api = HfApi(endpoint=self.endpoint, token=self._token, library_name="mole-lsp", library_version=_version())
        api.repo_info(self.repo_id, revision=revision, timeout=self.probe_timeout)
        self.mark_reachable()

    def offline_error(self, what: str, language: str | None, missing: str) -> OfflineError:
        """The error for ``what`` not being cached while offline, with the command that gets it."""
        cmd = f"mole-lsp install-pack {language}" if language else "mole-lsp install-pack <language>"
        return OfflineError(f"{what} is not cached and the Hub is offline ({self._offline_reason()}): "
                            f"run `{cmd}` when online, or install from a folder with --from", missing)

    def _kwargs(self) -> dict[str, Any]:
        return {"cache_dir": self.cache.hub_cache, "endpoint": self.endpoint, "token": self._token,
                "library_name": "mole-lsp", "library_version": _version()}

    def open_revision(self, rev: str, open_snapshot: Callable[[Path], T]) -> tuple[T | None, str | None]:
        """Resolve ``rev`` to a commit, fetch its ``index.json`` and ``open_snapshot(snapshot folder)``.

        Online first (the HF cache's ``refs/`` then remembers the commit for offline use), else from the
        cache. Returns ``(opened, None)``; ``(None, None)`` when nothing can be had; ``(None, why)`` when the
        Hub says the repository does not exist. A missing revision or any other answer raises StoreError.
        """
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        not_found: str | None = None
        if not self.offline:
            try:
                self._probe(rev)
                folder = snapshot_download(self.repo_id, revision=rev, allow_patterns=[INDEX],
                                           tqdm_class=_Bar, **self._kwargs())
                return open_snapshot(Path(folder)), None
            except RevisionNotFoundError as e:
                raise StoreError(f"revision {rev!r} of pack repository {self.repo_id} does not exist "
                                 f"on {self.endpoint or 'the Hub'}") from e
            except RepositoryNotFoundError:
                not_found = (f"pack repository {self.repo_id} was not found on {self.endpoint or 'the Hub'}: "
                             f"no packs are published for this base model under that name; train packs and "
                             f"install them with `mole-lsp install-pack --from DIR`")
            except Exception as e:
                if not is_unreachable(e):
                    raise StoreError(f"cannot read pack repository {self.repo_id}@{rev}: {short_error(e)}") from e
                self.mark_unreachable(e)
        if not_found is None:
            try:
                folder = snapshot_download(self.repo_id, revision=rev, allow_patterns=[INDEX],
                                           local_files_only=True, **self._kwargs())
                return open_snapshot(Path(folder)), None
            except Exception as e:  # nothing cached for this revision
                log.debug("no cached index for %s@%s: %s", self.repo_id, rev, e)
        return None, not_found

    def download(self, revision: str, folder: str, what: str, total_bytes: int, progress: Progress | None,
                 offline_what: str, language: str | None, missing: str,
                 cancel: threading.Event | None = None) -> None:
        """Download the pack ``folder`` (e.g. ``experts/rust``) of commit ``revision`` into the HF cache.

        ``what`` names it in progress and errors; when the Hub turns out unreachable, OfflineError
        ``offline_error(offline_what, language, missing)`` is raised; setting ``cancel`` stops it with
        Cancelled; any other failure is a StoreError.
        """
        from huggingface_hub import snapshot_download

        sink = ProgressSink(progress, what, total_bytes, cancel)
        sink.check()
        sink.say(f"Downloading {what} ({format_size(total_bytes)})", 0.0)
        try:
            self._probe(revision)
            snapshot_download(self.repo_id, revision=revision, allow_patterns=[f"{folder}/*"],
                              tqdm_class=sink.bar_class(), max_workers=4, **self._kwargs())
        except Cancelled:
            raise
        except Exception as e:
            if is_unreachable(e):
                self.mark_unreachable(e)
                raise self.offline_error(offline_what, language, missing) from e
            raise StoreError(f"downloading the {what} from {self.repo_id}@{short_revision(revision)} failed "
                             f"({short_error(e)}); run the command again to resume") from e
        sink.say(f"Downloaded {what}", 1.0)
