"""Patches to pygls' JSON-RPC layer (written against pygls 2.1.1), all in this module:

- framing: pygls' reader (``pygls.io_.run_async``) allocates whatever ``Content-Length`` says (a huge one
  kills the process with MemoryError) and waits forever after a wrong or missing one. :func:`serve_io` and
  :func:`serve_tcp` read through :class:`~mole_lsp.server.framing.Framer` instead (a size bound, resync on
  the next header) and every request whose id can be read gets a JSON-RPC answer: -32700 parse error
  (id null), -32600 invalid request, -32601 unknown method, -32602 invalid params, -32603 internal error.
- malformed params: pygls types params while parsing a message; when that fails it only logs, and the
  client would wait forever: they are answered with InvalidParams.
- ``$/cancelRequest`` reaches command jobs (commands run as a nested handler pygls' cancel does not reach).
- pygls 2.1.1 keeps the Future of every notification handled by a generator, thread or async handler in
  ``_request_futures`` forever (~2 KB per didChange; reported upstream as a leak in
  ``JsonRPCProtocol._execute_handler``): finished handlers are dropped from it here.
- a second ``initialize`` (which would replace the workspace, dropping every open document) is refused;
  ``didChange`` of a document that was never opened is ignored with a log line instead of a KeyError;
  lone UTF-16 surrogates in document text (which no tokenizer takes) become U+FFFD, one UTF-16 unit
  like the surrogate, so positions stay right.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO
from urllib.parse import unquote

import attrs
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.io_ import StdoutWriter
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from mole_lsp.errors import one_line
from mole_lsp.server.framing import INVALID_REQUEST, Event, Framer, Problem, request_id

log = logging.getLogger(__name__)

INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
STALL_S = 0.5  # no input for this long in the middle of a message: answer what has arrived
_SURROGATE = re.compile("[\ud800-\udfff]")


class MoleProtocol(LanguageServerProtocol):
    """pygls' LSP protocol with the patches above."""

    # -- messages from the framer ---------------------------------------------------------------------------
    def receive(self, event: Event) -> None:
        """Handle one framed message, or answer a framing problem."""
        if isinstance(event, Problem):
            log.warning("bad input from the client: %s", event.reason)
            self.send_error(event.msg_id, event.code, event.reason)
            return
        data = event.data
        if isinstance(data, list):  # a JSON-RPC batch: LSP has none
            ids = [i for i in map(request_id, data) if i is not None]
            for msg_id in ids or [None]:
                self.send_error(msg_id, INVALID_REQUEST, "batch messages are not part of LSP")
            return
        problem = envelope_problem(data)
        if problem is not None:
            log.warning("invalid message from the client: %s", problem)
            self.send_error(_readable_id(data), INVALID_REQUEST, problem)
            return
        msg_id = request_id(data)
        if msg_id is not None and self._takes_no_id(data["method"]):
            # pygls would handle it as the notification and leave the request unanswered.
            self.send_error(msg_id, INVALID_REQUEST, f"{data['method']} is a notification: it takes no id")
            return
        if self._shutdown and msg_id is not None and data["method"] != types.EXIT:
            self.send_error(msg_id, INVALID_REQUEST, "the server is shutting down")
            return
        try:
            message = self.structure_message(data)
        except Exception as exc:  # a notification or response that does not fit its type: nobody waits
            log.warning("unreadable %s: %s", data.get("method", "response"), leaf_error(exc))
            if msg_id is not None:
                self.send_error(msg_id, INVALID_PARAMS, f"invalid params for {data['method']}: {leaf_error(exc)}")
            return
        if message is _ANSWERED:
            return
        try:
            self.handle_message(message)
        except Exception as exc:  # pygls answers a handler's own errors; this is anything around them
            log.exception("could not handle %s", data.get("method", "a response"))
            if msg_id is not None:
                self.send_error(msg_id, INTERNAL_ERROR, f"{data['method']} failed: {one_line(exc)}")

    def _takes_no_id(self, method: str) -> bool:
        """Whether ``method`` is an LSP notification (its message type has no id)."""
        message_type = self.get_message_type(method)
        return message_type is not None and attrs.has(message_type) and "id" not in attrs.fields_dict(message_type)

    def send_error(self, msg_id: int | str | None, code: int, message: str) -> None:
        """An error response; ``id`` null when the request's id could not be read (JSON-RPC 2.0)."""
        self._send_data({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}})

    # -- pygls internals --------------------------------------------------------------------------------------
    def _execute_handler(self, msg_id: Any, handler: Any, callback: Any, args: Any = None, kwargs: Any = None
                         ) -> None:
        # pygls 2.1.1 pops a request's future when it answers but never a notification's: drop it when done.
        # Not when cancelled: pygls' shutdown cancels futures while it iterates over this dict.
        def done(future: Any) -> None:
            if not future.cancelled() and self._request_futures.get(msg_id) is future:
                del self._request_futures[msg_id]
            callback(future)

        super()._execute_handler(msg_id, handler, done, args, kwargs)

    def _handle_request(self, msg_id: Any, method_name: str, params: Any) -> None:
        if method_name == types.INITIALIZE and self._workspace is not None:
            # pygls would build a new workspace, forgetting every open document.
            self.send_error(msg_id, INVALID_REQUEST, "server already initialized")
            return
        super()._handle_request(msg_id, method_name, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> Any:
        params.text_document.text = clean_text(params.text_document.text)
        return (yield from super().lsp_text_document__did_open(params))

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> Any:
        uri = params.text_document.uri
        if self._workspace is None or not _is_open(self.workspace, uri):
            log.warning("didChange for %s, which is not open: ignored", uri)
            return None
        for change in params.content_changes:
            change.text = clean_text(change.text)
        return (yield from super().lsp_text_document__did_change(params))

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if not (isinstance(data, dict) and "id" in data and "method" in data):
                raise
            why = leaf_error(exc)
            err = JsonRpcInvalidParams(f"invalid params for {data['method']}: {why}")
            self._send_response(data["id"], error=err.to_response_error())
            return _ANSWERED

    def _handle_cancel_notification(self, msg_id: Any) -> None:
        # The server's job board (mole_lsp.server.jobs.Jobs) knows which generation serves the request.
        jobs = getattr(self._server, "jobs", None)
        if jobs is not None:
            jobs.cancel_request(msg_id)
        super()._handle_cancel_notification(msg_id)


class _Answered:
    jsonrpc = "answered"  # handle_message ignores messages of another JSON-RPC version


_ANSWERED = _Answered()


def leaf_error(exc: BaseException) -> str:
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


def envelope_problem(data: Any) -> str | None:
    """Why ``data`` is not a JSON-RPC 2.0 request, notification or response; None when it is one."""
    if not isinstance(data, dict):
        return "a message must be a JSON object"
    if data.get("jsonrpc") != "2.0":
        return 'a message must have "jsonrpc": "2.0"'
    if "id" in data and _readable_id(data) is None:
        return "id must be a string or an integer"
    if "method" in data:
        if not isinstance(data["method"], str):
            return "method must be a string"
        if data.get("params") is not None and not isinstance(data["params"], dict | list):
            return "params must be an object or an array"
    elif "id" not in data:
        return "a message needs a method (or an id, for a response)"
    elif "result" not in data and "error" not in data:
        return "a response needs a result or an error"
    return None


def _readable_id(data: Any) -> int | str | None:
    msg_id = data.get("id") if isinstance(data, dict) else None
    return msg_id if isinstance(msg_id, str) or (isinstance(msg_id, int) and not isinstance(msg_id, bool)) else None


def clean_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (the same UTF-16 length)."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _is_open(workspace: Any, uri: str) -> bool:
    return unquote(uri) in workspace.text_documents


# -- reading frames (replaces pygls.io_.run_async) ---------------------------------------------------------
async def serve_stream(protocol: MoleProtocol, read: Callable[[], Awaitable[bytes]], stop: threading.Event) -> None:
    """Read chunks until EOF or ``stop``, cut them into frames and hand each to ``protocol``."""
    framer = Framer()
    reading: asyncio.Future[bytes] | None = None
    stalled = False
    while not stop.is_set():
        if reading is None:
            reading = asyncio.ensure_future(read())
        if framer.pending and not stalled:
            done, _ = await asyncio.wait({reading}, timeout=STALL_S)
            if not done:  # the client waits for an answer to what it sent
                stalled = True
                for event in framer.stall():
                    protocol.receive(event)
                continue
        chunk = await reading
        reading, stalled = None, False
        if not chunk:
            break
        for event in framer.feed(chunk):
            protocol.receive(event)
    if reading is not None:
        reading.cancel()


class StdinChunks:
    """stdin read on a daemon thread with ``os.read`` (no buffered reader's lock held at exit, so the
    process can always exit), at most a few chunks ahead of the event loop."""

    def __init__(self, stdin: BinaryIO, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.slots = threading.Semaphore(4)
        try:
            fd = stdin.fileno()
            self._read_some: Callable[[], bytes] = lambda: os.read(fd, 65536)
        except (AttributeError, OSError, ValueError):  # not a real file (tests)
            self._read_some = lambda: getattr(stdin, "read1", stdin.read)(65536)
        threading.Thread(target=self._pump, name="mole-stdin", daemon=True).start()

    def _pump(self) -> None:
        while True:
            self.slots.acquire()
            try:
                chunk = self._read_some()
            except OSError:
                chunk = b""
            try:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, chunk)
            except RuntimeError:  # the loop is closed: the server is exiting
                return
            if not chunk:
                return

    async def read(self) -> bytes:
        chunk = await self.queue.get()
        self.slots.release()
        return chunk


def serve_io(server: Any, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
    """pygls' ``start_io`` (pygls 2.1.1 ``JsonRPCServer._start_io_async``) with :func:`serve_stream`."""
    server._stop_event = stop = threading.Event()
    server.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))

    async def main() -> None:
        chunks = StdinChunks(stdin or sys.stdin.buffer, asyncio.get_running_loop())
        await serve_stream(server.protocol, chunks.read, stop)

    try:
        asyncio.run(main())
    except BrokenPipeError:
        log.error("the connection to the client is lost: shutting down")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.shutdown()


def serve_tcp(server: Any, host: str, port: int) -> None:
    """pygls' ``start_tcp`` (pygls 2.1.1) with :func:`serve_stream`."""
    server._stop_event = stop = threading.Event()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.protocol.set_writer(writer)
        await serve_stream(server.protocol, lambda: reader.read(65536), stop)
        server.shutdown()

    async def main() -> None:
        server._server = await asyncio.start_server(connection, host, port)
        async with server._server:
            await server._server.serve_forever()

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        pass
