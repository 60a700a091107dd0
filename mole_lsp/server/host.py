"""The engine's host in the server: its configuration (editor settings over command-line options), one
background load shared by every request, what a settings change does to a loaded engine, and freeing
the model when nobody uses it (``idleUnloadMinutes``).

Loads are numbered: a load that a newer one (or a drop) replaced is stale. A stale load never becomes
the engine, never touches the state of the load that replaced it, and its model is freed. A reload for
new settings loads beside the engine in use, which keeps serving when the new one cannot be loaded.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from typing import Any

from lsprotocol import types

from mole_lsp.engine.engine import Engine
from mole_lsp.errors import UserError, is_user_error, one_line
from mole_lsp.server.base import ServerBase
from mole_lsp.server.settings import RELOAD

log = logging.getLogger(__name__)

# Tests and debugging: the idle time in seconds, over the idleUnloadMinutes setting.
IDLE_UNLOAD_ENV = "MOLE_LSP_IDLE_UNLOAD_SECONDS"
API_KEY_ENV = "MOLE_LSP_API_KEY"  # the openai backend's key, kept off the command line


class EngineUnavailable(Exception):
    """The model could not be loaded (the message says why)."""


class _Stale(Exception):
    """A load that a newer load (or a drop) replaced; its awaiters wait for the current one."""


class EngineHost:
    """Loads the engine once on the model thread and hands it to every request that needs it."""

    def __init__(self, server: ServerBase) -> None:
        self.server = server
        self.engine: Engine | None = None
        self.load_error: str | None = None
        self._future: asyncio.Future[Engine] | None = None
        self._load_id = 0  # number of the current load; older loads are stale
        # The RELOAD settings the engine was loaded with (value, sent by the editor), restored when a
        # reload with new ones fails.
        self._engine_settings: dict[str, tuple[Any, bool]] = {}
        self.last_used = time.monotonic()  # when a request last asked for the engine
        self._idle_task: asyncio.Task[None] | None = None

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
            "backend": sent("backend") or o.backend or "auto",
            # The openai backend (engine/remote.py): the server, its key, route -> served model name.
            "endpoint": s.endpoint or o.endpoint or None,
            "api_key": s.apiKey or o.api_key or os.environ.get(API_KEY_ENV) or None,
            "remote_models": s.remoteModels,
        }

    def start_loading(self) -> asyncio.Future[Engine]:
        """Load the engine once on the model thread; every caller awaits the same future."""
        if self._future is None:
            self._future = self._new_load(previous=None)
        return self._future

    def _new_load(self, previous: Engine | None) -> asyncio.Future[Engine]:
        self._load_id += 1
        fut = asyncio.ensure_future(self._load(self._load_id, previous))
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # failures are reported in _load
        return fut

    async def get_engine(self) -> Engine:
        """The loaded engine (loading it first if needed); EngineUnavailable when loading fails."""
        self.last_used = time.monotonic()
        while True:
            fut = self.start_loading()
            try:
                engine = await asyncio.shield(fut)
            except _Stale:
                continue  # settings changed during the load: wait for the load that replaced it
            except Exception as e:
                raise EngineUnavailable(str(e)) from e
            self.last_used = time.monotonic()
            return engine

    def drop(self) -> None:
        """Forget the engine; the next request (or a preload) loads a new one. A load in progress is
        stale from now on: it frees its model instead of becoming the engine."""
        self._load_id += 1
        self._future = None
        self.engine = None
        self.load_error = None

    def settings_changed(self, changed: set[str]) -> None:
        """Apply changed settings: reload for model/pack settings, else update the loaded engine."""
        server = self.server
        if changed & RELOAD and (self.engine is not None or self._future is not None):
            previous = self.engine
            if previous is not None:  # load beside it: it serves on if the new settings fail
                self._future = self._new_load(previous)
            else:
                self.drop()
                if server.options.preload:
                    self.start_loading()
        elif self.engine is not None:
            if "autoInstallPacks" in changed:
                self.engine.auto_install = server.settings.autoInstallPacks
            if "offline" in changed:
                self._set_store_offline(self.engine)
            if changed & {"autoInstallPacks", "offline"}:
                self.engine.retry_core()  # a core pack may be had now
        if "idleUnloadMinutes" in changed:
            self.watch_idle()

    def _set_store_offline(self, engine: Engine) -> None:
        store = engine.packs
        if hasattr(store, "forced_offline"):
            store.forced_offline = self.server.is_offline()  # type: ignore[union-attr]

    # -- idle unload ----------------------------------------------------------------------------------------
    def idle_seconds(self) -> float:
        """Seconds without a request after which the model is freed; 0 = never."""
        env = os.environ.get(IDLE_UNLOAD_ENV)
        if env:
            try:
                return max(0.0, float(env))
            except ValueError:
                log.warning("%s=%r is not a number of seconds", IDLE_UNLOAD_ENV, env)
        return 60.0 * self.server.settings.idleUnloadMinutes

    def watch_idle(self) -> None:
        """(Re)start the idle watch on the event loop (after ``initialized`` and when the setting changes)."""
        if self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None
        if self.idle_seconds() > 0:
            self._idle_task = asyncio.ensure_future(self._watch_idle())

    async def _watch_idle(self) -> None:
        while (limit := self.idle_seconds()) > 0:
            await asyncio.sleep(min(30.0, max(0.05, limit / 4)))
            jobs = getattr(self.server, "jobs", None)
            if jobs is not None and jobs.by_key:  # a generation is running: in use, however long it takes
                self.last_used = time.monotonic()
                continue
            idle = time.monotonic() - self.last_used
            if self.engine is not None and idle >= limit and self._future_done():
                self.unload_idle(idle)

    def _future_done(self) -> bool:
        return self._future is None or self._future.done()

    def unload_idle(self, idle: float) -> None:
        """Free the model after ``idle`` seconds without a request; the next request loads it again."""
        log.info("no request for %.0f s: freeing the model", idle)
        self.drop()
        _free()
        self.server.set_status(state="ready", activeExpert=None, message=(
            f"model unloaded after {idle / 60:.1f} idle minutes; the next request loads it again"))

    # -- loading --------------------------------------------------------------------------------------------
    async def _load(self, load_id: int, previous: Engine | None) -> Engine:
        server = self.server
        cfg = self.config()
        kept = {name: (server.settings.values[name], name in server.settings.sent) for name in RELOAD}
        report = server.new_progress("mole-lsp: loading the model")
        server.set_status(state="loading", message="loading the base model", offline=cfg["offline"])
        await report.begin("resolving the base model")

        def work() -> Engine:
            t0 = time.perf_counter()
            if cfg["backend"] == "openai":  # a remote server runs the model: nothing loads here
                from mole_lsp.engine.remote import open_remote

                engine = open_remote(cfg)
                engine.ensure_core()
                return engine  # type: ignore[return-value]
            check_device(cfg["device"])
            engine = Engine.from_spec(cfg["base_model"], cache_dir=cfg["cache_dir"], pack_repo=cfg["pack_repo"],
                                      revision=cfg["revision"], offline=cfg["offline"], device=cfg["device"],
                                      progress=report.report, auto_install=cfg["auto_install"],
                                      threads=cfg["threads"], backend=cfg["backend"])
            if load_id != self._load_id:  # replaced while loading: skip the core pack
                return engine
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
            if not is_user_error(e):
                log.error("loading the model failed", exc_info=e)
            if load_id != self._load_id:
                report.end("replaced by a newer load")
                raise _Stale() from e
            error = one_line(e)
            report.end(f"failed: {error}")
            if previous is not None:
                # The new settings cannot be served: the model in use stays, and so do its settings.
                _restore(server.settings, self._engine_settings)
                self._future = _done(previous)
                self.engine = previous
                message = f"could not load the model with the new settings ({error}); keeping the previous model"
                server.set_status(state="ready", baseOnly=previous.base_only, message=message)
                server.say(message, types.MessageType.Error, once=False)
                return previous
            self.load_error = error
            server.set_status(state="error", message=error)
            server.say(f"could not load the model: {error}", types.MessageType.Error)
            self._future = None  # a later request (or a settings change) tries again
            raise
        if load_id != self._load_id:
            report.end("replaced by a newer load")
            del engine
            _free()
            raise _Stale()
        report.end("ready")
        self.engine = engine
        self._engine_settings = kept
        self.load_error = None
        if previous is not None:
            del previous
            _free()
        for note in engine.take_notes():
            server.say(note, types.MessageType.Warning)
        server.set_status(state="ready", baseOnly=engine.base_only, message=None)
        return engine


def _restore(settings: Any, kept: dict[str, tuple[Any, bool]]) -> None:
    for name, (value, sent) in kept.items():
        settings.values[name] = value
        (settings.sent.add if sent else settings.sent.discard)(name)


def check_device(device: str) -> None:
    """UserError when ``device`` names hardware this machine lacks (before any weight is loaded)."""
    import torch

    kind, _, index = device.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"device {device}: CUDA is not available on this machine")
        if index and int(index) >= count:
            raise UserError(f"device {device} does not exist: this machine has {count} CUDA device(s), "
                            f"cuda:0 to cuda:{count - 1}")
    elif kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UserError("device mps: Apple's MPS is not available on this machine")


def _done(engine: Engine) -> asyncio.Future[Engine]:
    fut: asyncio.Future[Engine] = asyncio.get_running_loop().create_future()
    fut.set_result(engine)
    return fut


def _free() -> None:
    """Give a dropped model's memory back (tensors die with the last reference; CUDA keeps a cache)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - freeing is best effort
        pass
