"""The mole-lsp language server object: lifecycle, settings, the engine, status and progress.

Threads: pygls handlers run on the asyncio loop. The model runs on ONE worker thread (loading and
generating; the engine is not thread-safe), pack commands on a second one so a download never blocks
completions of installed languages. Anything that talks to the client from a worker thread goes
through :meth:`MoleServer.in_loop` (pygls' writer belongs to the loop).

Features live in sibling modules (``inline``, ``commands``, ``packs``); each registers its own
handlers and capability in ``register(server)``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from mole_lsp.engine.engine import CancelToken, Engine, GenerationResult
from mole_lsp.lang.registry import load_registry
from mole_lsp.server import protocol
from mole_lsp.server.settings import RELOAD, Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

TRACE_ENV = "MOLE_LSP_TRACE"  # "1": send a mole/trace notification after every generation (tests, bench)
NOTIFY_TRACE = "mole/trace"


@dataclass
class Options:
    """Command-line defaults; editor settings override them when set."""

    base_model: str | None = None
    pack_repo: str | None = None
    revision: str | None = None
    cache_dir: str | None = None
    device: str | None = None
    offline: bool = False
    threads: int | None = None
    preload: bool = True  # load the model in the background after `initialized`


@dataclass
class Job:
    """One generation request: its stop flag, and whether a newer request replaced it."""

    key: str
    kind: str
    token: CancelToken = field(default_factory=CancelToken)
    id: int = 0
    superseded: bool = False
    request: Any = None  # JSON-RPC id of the request that asked for it


class MoleProtocol(LanguageServerProtocol):
    """Answers requests whose params do not fit the LSP types with InvalidParams.

    pygls types params while parsing the message; when that fails it only logs, and the client would
    wait forever for an answer.
    """

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if not (isinstance(data, dict) and "id" in data and "method" in data):
                raise
            why = _leaf_error(exc)
            err = JsonRpcInvalidParams(f"invalid params for {data['method']}: {why}")
            self._send_response(data["id"], error=err.to_response_error())
            return _ANSWERED

    def _handle_cancel_notification(self, msg_id: Any) -> None:
        # Commands run as a nested handler that pygls' cancel does not reach: stop their job directly.
        job = getattr(self._server, "requests", {}).get(msg_id)
        if job is not None:
            job.token.cancel()
        super()._handle_cancel_notification(msg_id)


class _Answered:
    jsonrpc = "answered"  # handle_message ignores messages of another JSON-RPC version


_ANSWERED = _Answered()


def _leaf_error(exc: BaseException) -> str:
    """The innermost message of a (cattrs) validation error chain."""
    cur: BaseException | None = exc
    while cur is not None:
        subs = getattr(cur, "exceptions", None)
        if subs:
            cur = subs[0]
            continue
        if cur.__cause__ is not None:
            cur = cur.__cause__
            continue
        break
    text = str(cur) if cur is not None else ""
    if isinstance(cur, KeyError):
        return f"missing field {text}"
    return text.splitlines()[0] if text else "malformed"


class MoleServer(LanguageServer):
    def __init__(self, options: Options | None = None) -> None:
        super().__init__("mole-lsp", _version(), text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
                         protocol_cls=MoleProtocol)
        self.options = options or Options()
        self.settings = Settings()
        self.registry = load_registry()
        self.model_pool = ThreadPoolExecutor(1, thread_name_prefix="mole-model")
        self.io_pool = ThreadPoolExecutor(1, thread_name_prefix="mole-packs")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.engine: Engine | None = None
        self._engine_future: asyncio.Future[Engine] | None = None
        self.load_error: str | None = None
        self.status: protocol.Status = {"state": "starting", "activeExpert": None, "activeLanguage": None,
                                        "activeUri": None, "vscodeLanguageId": None, "baseOnly": False,
                                        "offline": self.options.offline, "message": None}
        self.jobs: dict[str, Job] = {}  # document key -> its running request
        self.requests: dict[Any, Job] = {}  # JSON-RPC request id -> job ($/cancelRequest)
        self._job_ids = itertools.count(1)
        self._said: set[str] = set()
        self._progress_ids = itertools.count(1)
        self.trace = os.environ.get(TRACE_ENV, "") not in ("", "0")
        self.generations = 0  # generations actually started (bench, tests)

    # -- loop plumbing ------------------------------------------------------------------------------------
    def in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` on the event loop (safe from any thread)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            if _running_loop() is loop:
                fn(*args)
            else:
                loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop shut down during exit
            pass

    async def run_model(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.model_pool, fn)

    async def run_io(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.io_pool, fn)

    # -- messages and status ------------------------------------------------------------------------------
    def say(self, message: str, kind: types.MessageType = types.MessageType.Warning, once: bool = True) -> None:
        if once and message in self._said:
            return
        self._said.add(message)
        self.in_loop(self.window_show_message, types.ShowMessageParams(type=kind, message=f"mole-lsp: {message}"))

    def set_status(self, **changes: Any) -> None:
        def apply() -> None:
            new = {**self.status, **changes}
            if new != self.status:
                self.status = new  # type: ignore[assignment]
                self.protocol.notify(protocol.NOTIFY_STATUS, dict(new))

        self.in_loop(apply)

    def send_trace(self, record: dict[str, Any]) -> None:
        if self.trace:
            self.in_loop(self.protocol.notify, NOTIFY_TRACE, record)

    # -- work-done progress -------------------------------------------------------------------------------
    def progress(self, title: str) -> ProgressReporter:
        return ProgressReporter(self, title)

    # -- settings -----------------------------------------------------------------------------------------
    def apply_settings(self, payload: Any) -> None:
        changed, problems = self.settings.update(payload)
        for problem in problems:
            self.say(f"invalid setting: {problem}", types.MessageType.Error, once=False)
        if not changed:
            return
        if changed & RELOAD and (self.engine is not None or self._engine_future is not None):
            self.drop_engine()
            if self.options.preload:
                self.start_loading()
        elif self.engine is not None:
            if "autoInstallPacks" in changed:
                self.engine.auto_install = self.settings.autoInstallPacks
            if "offline" in changed:
                self._set_store_offline(self.engine)
        if "offline" in changed:
            self.set_status(offline=self.is_offline())

    def is_offline(self) -> bool:
        from mole_lsp.paths import hub_offline

        return bool(self.settings.offline or self.options.offline or hub_offline())

    def _set_store_offline(self, engine: Engine) -> None:
        store = engine.packs
        if hasattr(store, "forced_offline"):
            store.forced_offline = self.is_offline()  # type: ignore[union-attr]

    # -- the engine ---------------------------------------------------------------------------------------
    def engine_config(self) -> dict[str, Any]:
        s, o = self.settings, self.options
        return {
            "base_model": os.environ.get("MOLE_BASE_MODEL") or s.baseModel or o.base_model or None,
            "pack_repo": s.packRepo or o.pack_repo or None,
            "revision": (s.packRevision if s.packRevision != "main" else None) or o.revision or "main",
            "cache_dir": s.cacheDir or o.cache_dir or None,
            "device": (s.device if s.device != "auto" else None) or o.device or "auto",
            "offline": self.is_offline(),
            "auto_install": s.autoInstallPacks,
            "threads": o.threads,
        }

    def start_loading(self) -> asyncio.Future[Engine]:
        """Load the engine once on the model thread; every caller awaits the same future."""
        if self._engine_future is None:
            self._engine_future = asyncio.ensure_future(self._load())
        return self._engine_future

    async def get_engine(self) -> Engine:
        fut = self.start_loading()
        try:
            return await asyncio.shield(fut)
        except Exception as e:
            raise EngineUnavailable(str(e)) from e

    def drop_engine(self) -> None:
        self._engine_future = None
        self.engine = None
        self.load_error = None

    async def _load(self) -> Engine:
        cfg = self.engine_config()
        report = self.progress("mole-lsp: loading the model")
        self.set_status(state="loading", message="loading the base model", offline=cfg["offline"])
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
            engine = await self.run_model(work)
        except Exception as e:
            self.load_error = _one_line(e)
            report.end(f"failed: {self.load_error}")
            self.set_status(state="error", message=self.load_error)
            self.say(f"could not load the model: {self.load_error}", types.MessageType.Error)
            self._engine_future = None  # a later request (or a settings change) tries again
            raise
        report.end("ready")
        self.engine = engine
        notes = engine.take_notes()
        for note in notes:
            self.say(note, types.MessageType.Warning)
        self.set_status(state="ready", baseOnly=engine.base_only, message=None)
        return engine

    # -- generation jobs ----------------------------------------------------------------------------------
    def begin_job(self, key: str, kind: str) -> Job:
        """A new request for ``key`` (a document) supersedes the previous one: its generation stops."""
        old = self.jobs.get(key)
        if old is not None:
            old.superseded = True
            old.token.cancel()
        job = Job(key, kind, id=next(self._job_ids), request=self.protocol.msg_id)
        self.jobs[key] = job
        if job.request is not None:
            self.requests[job.request] = job
        return job

    def end_job(self, job: Job) -> None:
        if self.jobs.get(job.key) is job:
            del self.jobs[job.key]
        if job.request is not None and self.requests.get(job.request) is job:
            del self.requests[job.request]

    async def generate(self, job: Job, language: str | None, call: Callable[[Engine, CancelToken], GenerationResult],
                       *, uri: str | None = None, vscode_language_id: str | None = None) -> GenerationResult | None:
        """Run one generation on the model thread; None when cancelled before it started.

        ``language`` is the registry id the generation is for; ``uri`` the document it came from when
        that is the document's language (None for a translation), ``vscode_language_id`` the VS Code
        languageId of ``language``. The status takes all of them together once the generation ends
        (protocol.py: ``activeUri``, ``vscodeLanguageId``, ``activeLanguage``, ``activeExpert``).
        """
        engine = await self.get_engine()
        if job.token.cancelled:
            self.send_trace({"job": job.id, "kind": job.kind, "started": False, "stop_reason": "superseded"})
            return None
        report: ProgressReporter | None = None

        def on_progress(message: str, fraction: float | None) -> None:
            nonlocal report
            if report is None:
                report = self.progress("mole-lsp: downloading packs")
                self.set_status(state="downloading", message=message)
                self.in_loop(lambda: asyncio.ensure_future(report.begin(message)))  # type: ignore[union-attr]
            else:
                report.report(message, fraction)

        def work() -> GenerationResult:
            if job.token.cancelled:  # superseded while queued behind another generation
                raise _Skipped
            self.generations += 1
            # Only the state: the active* fields keep describing the last finished generation until this
            # one knows which expert it used.
            self.set_status(state="generating")
            engine.progress = on_progress
            try:
                return call(engine, job.token)
            finally:
                engine.progress = None

        try:
            result = await self.run_model(work)
        except _Skipped:
            self.send_trace({"job": job.id, "kind": job.kind, "started": False, "stop_reason": "superseded"})
            return None
        except Exception as e:
            self.set_status(state="ready", message=_one_line(e))
            raise
        finally:
            if report is not None:
                report.end("done")
        for note in result.notes:
            self.say(note, types.MessageType.Warning)
        self.set_status(state="ready", activeExpert=result.expert, activeLanguage=language, activeUri=uri,
                        vscodeLanguageId=vscode_language_id, baseOnly=result.base_only, message=None)
        record = {"job": job.id, "kind": job.kind, "started": True, "superseded": job.superseded, **result.to_dict()}
        self.send_trace(record)
        return result

    # -- documents -----------------------------------------------------------------------------------------
    def document(self, uri: Any):
        if not isinstance(uri, str) or not uri:
            raise JsonRpcInvalidParams("uri must be a non-empty string")
        try:
            doc = self.workspace.get_text_document(uri)
            _ = doc.source  # reading a document that was never opened may fail here
        except Exception as e:
            raise JsonRpcInvalidParams(f"unknown document {uri}: {_one_line(e)}") from None
        return doc

    def vscode_language_id(self, language: str | None) -> str | None:
        """The VS Code languageId of a registry language (its first one), None when it has none."""
        if language is None or language not in self.registry:
            return None
        ids = self.registry.get(language).vscode_ids
        return ids[0] if ids else None

    def document_language(self, doc: Any) -> str | None:
        from mole_lsp.engine.engine import resolve_document_language

        return resolve_document_language(doc.language_id, doc.filename, doc.source[:4000], self.registry)


class EngineUnavailable(Exception):
    """The model could not be loaded (the message says why)."""


class _Skipped(Exception):
    pass


class ProgressReporter:
    """Server-initiated work-done progress usable from any thread (no-op if the client lacks it)."""

    def __init__(self, server: MoleServer, title: str) -> None:
        self.server = server
        self.title = title
        self.token = f"mole-{os.getpid()}-{next(server._progress_ids)}"
        self.active = False
        self.ended = False  # end() may come before the client answered the create request
        self._last = 0.0

    def _supported(self) -> bool:
        caps = self.server.client_capabilities
        window = getattr(caps, "window", None) if caps is not None else None
        return bool(window and window.work_done_progress)

    async def begin(self, message: str | None = None) -> None:
        if not self._supported():
            return
        try:
            await self.server.work_done_progress.create_async(self.token)
        except Exception as e:  # the client refused: no progress, no error
            log.debug("progress create refused: %s", e)
            return
        if self.ended:
            return
        self.active = True
        self.server.work_done_progress.begin(
            self.token, types.WorkDoneProgressBegin(title=self.title, message=message, cancellable=False))

    def report(self, message: str, fraction: float | None = None) -> None:
        now = time.monotonic()
        if fraction not in (0.0, 1.0, None) and now - self._last < 0.1:
            return  # download callbacks are frequent; a few updates a second are enough
        self._last = now

        def send() -> None:
            if self.active:
                pct = None if fraction is None else max(0, min(100, int(fraction * 100)))
                self.server.work_done_progress.report(
                    self.token, types.WorkDoneProgressReport(message=message, percentage=pct))

        self.server.in_loop(send)

    def end(self, message: str | None = None) -> None:
        def send() -> None:
            self.ended = True
            if self.active:
                self.active = False
                self.server.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))

        self.server.in_loop(send)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("mole-lsp")
    except Exception:
        return "0"


def create_server(options: Options | None = None) -> MoleServer:
    """The server with every feature registered."""
    from mole_lsp.server import commands, inline, lifecycle, packs

    server = MoleServer(options)
    for feature in (lifecycle, inline, commands, packs):
        feature.register(server)
    return server

