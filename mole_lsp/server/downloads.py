"""Pack downloads in the background: on the pack thread, never on the model thread, so completions go on
(with the fallback adapters) while a pack downloads; progress and cancel reach the client.

A generation never downloads (:mod:`~mole_lsp.server.jobs` runs the engine with installing off); when it
lacked the core or its language's expert and ``autoInstallPacks`` is on, :meth:`Downloads.want` starts
installing them here, and the next request loads them. ``mole.installPack`` installs through
:meth:`Downloads.install` too. Each download shows a cancellable work-done progress; cancelling it stops
the download (nothing half-downloaded is used) and the pack is not fetched again automatically this
session. A failed download is retried automatically after :data:`RETRY_AFTER` seconds at the earliest.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import weakref
from typing import Any

from lsprotocol import types

from mole_lsp.packs.errors import Cancelled, StoreError
from mole_lsp.packs.format import CORE_PACK
from mole_lsp.server.base import ServerBase
from mole_lsp.server.progress import ProgressReporter

log = logging.getLogger(__name__)

RETRY_AFTER = 300.0  # seconds before a failed automatic install is tried again
_ids = itertools.count(1)


def can_install(store: Any) -> bool:
    """Whether ``store`` downloads packs (a PackStore; not a local pack folder)."""
    return store is not None and hasattr(store, "install") and hasattr(store, "hub")


class Downloads:
    """The running and failed automatic installs of one server, by pack (a language id or ``core``)."""

    def __init__(self, server: ServerBase) -> None:
        self.server = server
        self.running: dict[str, asyncio.Task[Any]] = {}
        self._failed: dict[str, float] = {}  # pack -> when an automatic install failed
        self._cancelled: set[str] = set()  # packs the user cancelled: not fetched again automatically
        self._watched: weakref.WeakSet[Any] = weakref.WeakSet()  # stores whose reachability is followed

    def watch(self, store: Any) -> None:
        """Keep the status's ``offline`` true to the Hub's reachability as ``store`` finds it."""
        if not can_install(store) or store in self._watched:
            return
        self._watched.add(store)
        store.hub.on_change = lambda: self.sync_offline(store)
        self.sync_offline(store)

    def sync_offline(self, store: Any) -> None:
        """``offline`` in the status: the setting/flag/environment, or the Hub found unreachable (with why)."""
        reason = store.hub.unreachable_reason if can_install(store) else None
        if self.server.is_offline() or reason is None:
            self.server.set_status(offline=self.server.is_offline())
        else:
            self.server.set_status(offline=True, message=f"offline: {reason}")

    def want(self, engine: Any, language: str | None) -> None:
        """Install, in the background, what a generation of ``engine`` lacked: the core and ``language``'s
        expert."""
        store = engine.packs
        name = language or CORE_PACK
        if (not can_install(store) or name in self.running or name in self._cancelled
                or time.monotonic() - self._failed.get(name, -RETRY_AFTER) < RETRY_AFTER):
            return
        task = asyncio.ensure_future(self._auto(engine, name, [language] if language else []))
        self.running[name] = task

    async def _auto(self, engine: Any, name: str, languages: list[str]) -> None:
        try:
            listed = await self.server.run_io(engine.packs.available)
            if any(x not in listed for x in [CORE_PACK, *languages]):
                return  # not published (or the Hub is down): the engine's notes already say so
            await self.install(engine, languages)
        except Cancelled:
            self._cancelled.add(name)
        except StoreError as e:  # not published, offline, refused: said once, tried again later
            self._failed[name] = time.monotonic()
            self.server.say(f"could not install the {name} pack: {e}", types.MessageType.Warning)
        except Exception:  # a bug: logged with its traceback, not retried in a loop
            self._failed[name] = time.monotonic()
            log.exception("installing the %s pack failed", name)
        finally:
            self.running.pop(name, None)

    async def install(self, engine: Any, languages: list[str], *, retry: bool = False) -> list[str]:
        """Install the core and ``languages``' experts of ``engine``'s store on the pack thread with a
        cancellable progress; returns the packs installed. StoreError (Cancelled when the user cancelled)
        says why not. The engine looks for its core again at the next request."""
        store = engine.packs
        what = ", ".join(languages) or "core"
        report = ProgressReporter(self.server, "mole-lsp: downloading packs",
                                  f"mole-{os.getpid()}-download-{next(_ids)}", cancellable=True)
        await report.begin(f"installing the {what} pack")
        self.server.set_status(state="downloading", message=f"installing the {what} pack")
        outcome = "failed"
        try:
            installed = await self.server.run_io(
                lambda: store.install(languages, progress=report.report, cancel=report.cancel, retry=retry))
            outcome = "installed"
            retry_core = getattr(engine, "retry_core", None)
            if retry_core is not None:
                retry_core()  # a base-only engine takes the new core at its next request
            return sorted(installed)
        except Cancelled:
            outcome = "cancelled"
            raise
        finally:
            report.end(f"{what}: {outcome}")
            if self.server.status.get("state") == "downloading":
                self.server.set_status(state="ready", message=None)
            self.sync_offline(store)
