"""The language server's plumbing that every part builds on: threads and the event loop, messages,
the ``mole/status`` and ``mole/trace`` notifications, progress, settings and open documents.

Threads: pygls handlers run on the asyncio loop. The model runs on ONE worker thread (loading and
generating; the engine is not thread-safe), pack commands on a second one so a download never blocks
completions of installed languages. Anything that talks to the client from a worker thread goes
through :meth:`ServerBase.in_loop` (pygls' writer belongs to the loop).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from mole_lsp.errors import one_line
from mole_lsp.lang.registry import load_registry
from mole_lsp.server import protocol
from mole_lsp.server.progress import ProgressReporter
from mole_lsp.server.rpc import MoleProtocol, serve_io, serve_tcp
from mole_lsp.server.settings import Settings

T = TypeVar("T")


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
    backend: str | None = None  # auto, torch, llamacpp (engine/backends) or openai (engine/remote.py)
    endpoint: str | None = None  # the openai backend's server
    api_key: str | None = None
    preload: bool = True  # load the model in the background after `initialized`
    llamacpp_merge: bool | None = None  # merged routes on the llamacpp backend (setting llamacppMerge)


class ServerBase(LanguageServer):
    """pygls' server with mole-lsp's threads, status, messages, settings and document helpers."""

    def __init__(self, options: Options | None = None) -> None:
        super().__init__("mole-lsp", _version(), text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
                         protocol_cls=MoleProtocol)
        self.options = options or Options()
        self.settings = Settings()
        self.registry = load_registry()
        self.model_pool = ThreadPoolExecutor(1, thread_name_prefix="mole-model")
        self.io_pool = ThreadPoolExecutor(1, thread_name_prefix="mole-packs")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.status: protocol.Status = {"state": "starting", "activeExpert": None, "activeLanguage": None,
                                        "activeUri": None, "vscodeLanguageId": None, "baseOnly": False,
                                        "offline": self.options.offline, "message": None}
        self._said: set[str] = set()
        self._progress_ids = itertools.count(1)
        self.trace = os.environ.get(protocol.DEBUG_TRACE_ENV, "") not in ("", "0")

    # -- transports: pygls' own, with the framing of mole_lsp.server.rpc -------------------------------------
    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        serve_io(self, stdin, stdout)

    def start_tcp(self, host: str, port: int) -> None:
        serve_tcp(self, host, port)

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
        """``fn()`` on the model thread (loading, generating, unloading an expert)."""
        return await asyncio.get_running_loop().run_in_executor(self.model_pool, fn)

    async def run_io(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the pack thread (store calls that may touch the network)."""
        return await asyncio.get_running_loop().run_in_executor(self.io_pool, fn)

    # -- messages, status, trace, progress ----------------------------------------------------------------
    def say(self, message: str, kind: types.MessageType = types.MessageType.Warning, once: bool = True) -> None:
        """``window/showMessage`` (by default each message only once per session)."""
        if once and message in self._said:
            return
        self._said.add(message)
        self.in_loop(self.window_show_message, types.ShowMessageParams(type=kind, message=f"mole-lsp: {message}"))

    def set_status(self, **changes: Any) -> None:
        """Change fields of the status; ``mole/status`` is sent when it really changed."""

        def apply() -> None:
            new = {**self.status, **changes}
            if new != self.status:
                self.status = new  # type: ignore[assignment]
                self.protocol.notify(protocol.NOTIFY_STATUS, dict(new))

        self.in_loop(apply)

    def send_trace(self, record: dict[str, Any]) -> None:
        """``mole/trace`` when tracing is on (see protocol.py: debug only)."""
        if self.trace:
            self.in_loop(self.protocol.notify, protocol.DEBUG_TRACE, record)

    def new_progress(self, title: str) -> ProgressReporter:
        """A new work-done progress titled ``title`` (named apart from pygls' ``progress``, which sends ``$/progress``)."""
        return ProgressReporter(self, title, f"mole-{os.getpid()}-{next(self._progress_ids)}")

    # -- settings ------------------------------------------------------------------------------------------
    def is_offline(self) -> bool:
        """Whether the Hub is off limits: the setting, ``--offline`` or the Hub's environment."""
        from mole_lsp.paths import hub_offline

        return bool(self.settings.offline or self.options.offline or hub_offline())

    # -- documents -----------------------------------------------------------------------------------------
    def document(self, uri: Any):
        """The open document ``uri``; InvalidParams when it is not a URI of an open document."""
        if not isinstance(uri, str) or not uri:
            raise JsonRpcInvalidParams("uri must be a non-empty string")
        try:
            doc = self.workspace.get_text_document(uri)
            _ = doc.source  # reading a document that was never opened may fail here
        except Exception as e:
            raise JsonRpcInvalidParams(f"unknown document {uri}: {one_line(e)}") from None
        return doc

    def vscode_language_id(self, language: str | None) -> str | None:
        """The VS Code languageId of a registry language (its first one), None when it has none."""
        if language is None or language not in self.registry:
            return None
        ids = self.registry.get(language).vscode_ids
        return ids[0] if ids else None

    def document_language(self, doc: Any) -> str | None:
        """The registry language of an open document (its languageId, file name, then its start)."""
        from mole_lsp.engine.language import resolve_document_language

        return resolve_document_language(doc.language_id, doc.filename, doc.source[:4000], self.registry)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("mole-lsp")
    except Exception:
        return "0"
