"""LSP base-protocol framing that survives bad input: ``Content-Length`` frames are cut from a byte
stream with a size bound, and after any framing error the reader resynchronises on the next
``Content-Length`` header instead of dying (a huge length) or waiting forever (a wrong length, a
missing header).

:class:`Framer` is pure (bytes in, events out); :mod:`mole_lsp.server.rpc` drives it from stdio or TCP
and answers :class:`Problem` events. Lenient where the intent is clear: header names in any case, LF-only
line endings, blank lines between frames.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_FRAME = 64 * 1024 * 1024  # no LSP message comes near this; a larger length is an error, not an allocation
MAX_HEADER_LINE = 8192
KEEP_GARBAGE = 1024 * 1024  # bytes of unframed input kept to find the id of the request it held

PARSE_ERROR = -32700
INVALID_REQUEST = -32600

_LENGTH = re.compile(rb"content-length[ \t]*:", re.IGNORECASE)
_HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*:(.*)")
# The id of a message too large or too broken to parse, when it comes first (after "jsonrpc"), as every
# client writes it.
_HEAD_ID = re.compile(rb'\s*\{\s*(?:"jsonrpc"\s*:\s*"[^"\\]*"\s*,\s*)?"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,200}")')


@dataclass
class Message:
    """The JSON value of a well-formed frame."""

    data: Any


@dataclass
class Problem:
    """Input that is not a well-formed frame of JSON: answer it with ``code`` (to ``msg_id`` when a
    request's id could be read, else with ``id: null``)."""

    code: int
    reason: str
    msg_id: int | str | None = None


Event = Message | Problem


def request_id(data: Any) -> int | str | None:
    """The id of a request (an object with a method and a valid id), else None."""
    if isinstance(data, dict) and "method" in data:
        msg_id = data.get("id")
        if isinstance(msg_id, str) or (isinstance(msg_id, int) and not isinstance(msg_id, bool)):
            return msg_id
    return None


def _decode_prefix(data: bytes | bytearray) -> tuple[Any, int] | None:
    """The JSON value at the start of ``data`` and the bytes it takes, None when there is none (yet)."""
    try:
        text = bytes(data).decode()
    except UnicodeDecodeError as e:  # up to the first bad byte (or a character cut at the end)
        text = bytes(data[: e.start]).decode()
    start = len(text) - len(text.lstrip())
    try:
        value, end = json.JSONDecoder().raw_decode(text, start)
    except (ValueError, RecursionError):
        return None
    return value, len(text[:end].encode())


class Framer:
    """Cuts LSP frames from a byte stream; :meth:`feed` returns the messages and problems found so far."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.buf = bytearray()
        self.state = "headers"  # "headers" → "body" → "headers"; "resync" after bad input
        self._length: int | None = None
        self._header_seen = False
        self._header_problem: str | None = None
        self._garbage = bytearray()
        self._garbage_cut = False
        self._garbage_reason: str | None = None

    @property
    def pending(self) -> bool:
        """Whether part of a message is waiting for more input (see :meth:`stall`)."""
        return bool(self.buf) or bool(self._garbage) or self._garbage_reason is not None

    def feed(self, data: bytes) -> list[Event]:
        self.buf += data
        return self._drain()

    def stall(self) -> list[Event]:
        """Input stopped in the middle of a message: a client waits for an answer, so what has arrived is
        all there is. A body shorter than its Content-Length, or JSON without headers, is answered now."""
        if self.state == "body":
            found = _decode_prefix(self.buf)
            if found is None:
                return []  # a large message still on its way
            value, end = found
            declared = self._length
            del self.buf[:end]
            self._reset_headers()
            return [Problem(INVALID_REQUEST, f"Content-Length {declared} is longer than the message ({end} bytes)",
                            request_id(value)), *self._drain()]
        if self.state == "headers" and self.buf.lstrip()[:1] in (b"{", b"["):
            self._resync("missing Content-Length header")
        if self.state == "resync":
            self._add_garbage(self.buf)
            self.buf.clear()
            events = self._end_garbage()
            self.state = "headers"
            return events
        return []

    # -- states -----------------------------------------------------------------------------------------
    def _drain(self) -> list[Event]:
        events: list[Event] = []
        while True:
            if self.state == "body":
                assert self._length is not None
                if len(self.buf) < self._length:
                    return events
                body = bytes(self.buf[: self._length])
                del self.buf[: self._length]
                self._reset_headers()
                events.append(self._body(body))
            elif self.state == "headers":
                if not self._header_line(events):
                    return events
            else:
                m = _LENGTH.search(self.buf)
                if m is None:
                    keep = 32  # a header split across two reads
                    if len(self.buf) > keep:
                        self._add_garbage(self.buf[:-keep])
                        del self.buf[:-keep]
                    return events
                self._add_garbage(self.buf[: m.start()])
                del self.buf[: m.start()]
                events.extend(self._end_garbage())
                self.state = "headers"

    def _header_line(self, events: list[Event]) -> bool:
        """Take one header line; False when it has not fully arrived."""
        nl = self.buf.find(b"\n")
        if nl < 0:
            if len(self.buf) > MAX_HEADER_LINE:
                self._resync("a header line is too long")
                return True
            return False
        raw = bytes(self.buf[: nl + 1])
        line = raw[:-1].rstrip(b"\r")
        del self.buf[: nl + 1]
        if not line.strip():  # the end of a header block
            if not self._header_seen:
                return True  # blank lines between frames
            if self._header_problem is not None or self._length is None:
                self._resync("missing Content-Length header")
            else:
                self.state = "body"
            return True
        m = _HEADER.fullmatch(line)
        if m is None:  # scan the line itself too: a body without headers runs into the next header
            self.buf[:0] = raw
            self._resync("not an LSP header")
            return True
        self._header_seen = True
        if m.group(1).lower() == b"content-length":
            value = m.group(2).strip().decode("latin-1")
            if not value.isascii() or not value.isdigit():
                self._header_problem = f"invalid Content-Length header {value[:40]!r}"
            elif int(value) > self.max_frame:
                self._header_problem = f"a message of {int(value)} bytes is over the limit of {self.max_frame} bytes"
            else:
                self._length = int(value)
        return True

    def _body(self, body: bytes) -> Event:
        try:
            return Message(json.loads(body))
        except (ValueError, RecursionError) as exc:
            why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        found = _decode_prefix(body)
        if found is not None:  # a Content-Length longer than the message: what follows it is the next input
            value, end = found
            self.buf[:0] = body[end:]
            return Problem(INVALID_REQUEST, f"Content-Length {len(body)} is longer than the message ({end} bytes)",
                           request_id(value))
        # A Content-Length shorter than the message: the rest of it is the next input.
        found = _decode_prefix(body + self.buf)
        if found is not None and found[1] > len(body):
            value, end = found
            del self.buf[: end - len(body)]
            return Problem(INVALID_REQUEST, f"Content-Length {len(body)} is shorter than the message ({end} bytes)",
                           request_id(value))
        return Problem(PARSE_ERROR, f"Parse error: {why}")

    # -- resynchronising ----------------------------------------------------------------------------------
    def _reset_headers(self) -> None:
        self.state = "headers"
        self._length = None
        self._header_seen = False
        self._header_problem = None

    def _resync(self, reason: str) -> None:
        self._garbage_reason = self._header_problem or reason
        self._reset_headers()
        self.state = "resync"

    def _add_garbage(self, data: bytes | bytearray) -> None:
        room = KEEP_GARBAGE - len(self._garbage)
        if len(data) > room:
            self._garbage_cut = True
        self._garbage += data[: max(room, 0)]

    def _end_garbage(self) -> list[Event]:
        """One problem for the input skipped since the last framing error (with the id it held)."""
        garbage, reason = bytes(self._garbage), self._garbage_reason
        cut = self._garbage_cut
        self._garbage.clear()
        self._garbage_cut = False
        self._garbage_reason = None
        if reason is None and not garbage.strip():
            return []
        msg_id = None
        if garbage.strip() and not cut:
            try:
                msg_id = request_id(json.loads(garbage))
            except (ValueError, RecursionError):
                pass
        if msg_id is None and (m := _HEAD_ID.match(garbage)) is not None:
            try:
                msg_id = json.loads(m.group(1))
            except ValueError:
                msg_id = None
        code = INVALID_REQUEST if msg_id is not None else PARSE_ERROR
        return [Problem(code, reason or "input outside of a Content-Length frame", msg_id)]
