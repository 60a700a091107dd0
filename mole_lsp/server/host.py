"""The engine's host in the server: its configuration (editor settings over command-line options), one
background load shared by every request, and what a settings change does to a loaded engine."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from lsprotocol import types

from mole_lsp.engine.engine import Engine
from mole_lsp.errors import one_line
from mole_lsp.server.base import ServerBase
from mole_lsp.server.settings import RELOAD

log = logging.getLogger(__name__)


class EngineUnavailable(Exception):
    """The model could not be loaded (the message says why)."""


class EngineHost:
    """Loads the engine once on the model thread and hands it to every request that needs it."""

    def __init__(self, server: ServerBase) -> None:
        self.server = server
        self.engine: Engine | None = None
        self.load_error: str | None = None
        self._future: asyncio.Future[Engine] | None = None

    def config(self) -> dict[str, Any]:
        """Engine arguments: ``$MOLE_BASE_MODEL``, then the editor settings, then the command line.
        A setting the editor sent wins even at its default ("auto", "main"); an empty one names nothing."""
        s, o = self.server.settings, self.server.options

        def sent(name: str) -> Any:
            return s[name] if name in s.sent else None

        return {
            "base_model": os.environ.get("MOLE_BASE_MODEL") or s.baseModel or o.base_model or None,
            "pack_repo": s.packRepo or o.pack_repo or None,
            "revision": sent("packRevision") or o.revision or "main",
            "cache_dir": s.cacheDir or o.cache_dir or None,
            "device": sent("device") or o.device or "auto",
            "offline": self.server.is_offline(),
            "auto_install": s.autoInstallPacks,
            "threads": o.threads,
        }

    def start_loading(self) -> asyncio.Future[Engine]:
        """Load the engine once on the model thread; every caller awaits the same future."""
        if self._future is None:
            self._future = asyncio.ensure_future(self._load())
        return self._future

    async def get_engine(self) -> Engine:
        """The loaded engine (loading it first if needed); EngineUnavailable when loading fails."""
        fut = self.start_loading()
        try:
            return await asyncio.shield(fut)
        except Exception as e:
            raise EngineUnavailable(str(e)) from e

    def drop(self) -> None:
        """Forget the engine; the next request (or a preload) loads a new one."""
        self._future = None
        self.engine = None
        self.load_error = None

    def settings_changed(self, changed: set[str]) -> None:
        """Apply changed settings: reload for model/pack settings, else update the loaded engine."""
        server = self.server
        if changed & RELOAD and (self.engine is not None or self._future is not None):
            self.drop()
            if server.options.preload:
                self.start_loading()
        elif self.engine is not None:
            if "autoInstallPacks" in changed:
                self.engine.auto_install = server.settings.autoInstallPacks
            if "offline" in changed:
                self._set_store_offline(self.engine)

    def _set_store_offline(self, engine: Engine) -> None:
        store = engine.packs
        if hasattr(store, "forced_offline"):
            store.forced_offline = self.server.is_offline()  # type: ignore[union-attr]

    async def _load(self) -> Engine:
        server = self.server
        cfg = self.config()
        report = server.new_progress("mole-lsp: loading the model")
        server.set_status(state="loading", message="loading the base model", offline=cfg["offline"])
        await report.begin("resolving the base model")

        def work() -> Engine:
            t0 = time.perf_counter()
            engine = Engine.from_spec(cfg["base_model"], cache_dir=cfg["cache_dir"], pack_repo=cfg["pack_repo"],
                                      revision=cfg["revision"], offline=cfg["offline"], device=cfg["device"],
                                      progress=report.report, auto_install=cfg["auto_install"],
                                      threads=cfg["threads"])
            report.report("loading the core pack", None)
            engine.progress = report.report
            try:
                engine.ensure_core()
            finally:
                engine.progress = None
            log.info("model loaded in %.1f s", time.perf_counter() - t0)
            return engine

        try:
            engine = await server.run_model(work)
        except Exception as e:
            self.load_error = one_line(e)
            report.end(f"failed: {self.load_error}")
            server.set_status(state="error", message=self.load_error)
            server.say(f"could not load the model: {self.load_error}", types.MessageType.Error)
            self._future = None  # a later request (or a settings change) tries again
            raise
        report.end("ready")
        self.engine = engine
        for note in engine.take_notes():
            server.say(note, types.MessageType.Warning)
        server.set_status(state="ready", baseOnly=engine.base_only, message=None)
        return engine
