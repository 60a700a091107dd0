"""Malformed frames and messages sent to a real ``mole-lsp serve`` over stdio: each gets the JSON-RPC
answer it deserves (an error with the request's id when the id can be read, ``id: null`` otherwise) and
the server keeps answering the next, valid request. Also the Framer alone, byte by byte."""

from __future__ import annotations

import json

import pytest
from lsp_wire import Wire, frame

from mole_lsp.server.framing import MAX_FRAME, Framer, Message, Problem

PARSE, INVALID, NO_METHOD, BAD_PARAMS = -32700, -32600, -32601, -32602
STATUS = {"command": "mole.status", "arguments": [{}]}


def req(msg_id, method="workspace/executeCommand", params=STATUS) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}).encode()


R = req(1)

# name -> (bytes sent, expected answers as (id, error code or None for a result))
CASES = {
    "huge length": (b"Content-Length: 1000000000000\r\n\r\n" + R, [(1, INVALID)]),
    "2^31 length": (b"Content-Length: 2147483648\r\n\r\n" + R, [(1, INVALID)]),
    "over the frame limit": (b"Content-Length: %d\r\n\r\n" % (MAX_FRAME + 1) + R, [(1, INVALID)]),
    "length too short": (b"Content-Length: %d\r\n\r\n" % (len(R) - 10) + R, [(1, INVALID)]),
    "length too long": (b"Content-Length: %d\r\n\r\n" % (len(R) + 300) + R, [(1, INVALID)]),
    "no Content-Length": (b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n" + R, [(1, INVALID)]),
    "no headers at all": (R, [(1, INVALID)]),
    "non-numeric length": (b"Content-Length: abc\r\n\r\n" + R, [(1, INVALID)]),
    "negative length": (b"Content-Length: -5\r\n\r\n" + R, [(1, INVALID)]),
    "zero length": (b"Content-Length: 0\r\n\r\n", [(None, PARSE)]),
    "lowercase header": (b"content-length: %d\r\n\r\n" % len(R) + R, [(1, None)]),
    "LF-only line endings": (b"Content-Length: %d\n\n" % len(R) + R, [(1, None)]),
    "blank lines between frames": (b"\r\n\r\n" + frame(R), [(1, None)]),
    "garbage line": (b"hello there\r\n", [(None, PARSE)]),
    "endless header line": (b"x" * 20000, [(None, PARSE)]),
    "invalid JSON": (frame(b'{"jsonrpc": "2.0", "id": 1,'), [(None, PARSE)]),
    "invalid UTF-8": (frame(b'{"jsonrpc": "2.0", "id": 1, "method": "\xff"}'), [(None, PARSE)]),
    "deep nesting": (frame(b"[" * 100000 + b"]" * 100000), [(None, PARSE)]),
    "huge integer": (frame(b'{"jsonrpc": "2.0", "id": 1, "method": "x", "params": [' + b"9" * 5000 + b"]}"),
                     [(None, PARSE)]),
    "not an object": (frame(b"42"), [(None, INVALID)]),
    "empty batch": (frame(b"[]"), [(None, INVALID)]),
    "batch": (frame(b"[" + req(1) + b"," + req(2) + b"]"), [(1, INVALID), (2, INVALID)]),
    "jsonrpc 1.0": (frame(R.replace(b'"2.0"', b'"1.0"')), [(1, INVALID)]),
    "no jsonrpc": (frame(b'{"id": 1, "method": "workspace/executeCommand"}'), [(1, INVALID)]),
    "float id": (frame(req(1.5)), [(None, INVALID)]),
    "object id": (frame(req({"a": 1})), [(None, INVALID)]),
    "null id": (frame(req(None)), [(None, INVALID)]),
    "numeric method": (frame(req(1, method=7)), [(1, INVALID)]),
    "scalar params": (frame(req(1, params=3)), [(1, INVALID)]),
    "neither method nor id": (frame(b'{"jsonrpc": "2.0", "params": {}}'), [(None, INVALID)]),
    "response without result": (frame(b'{"jsonrpc": "2.0", "id": 1}'), [(1, INVALID)]),
    "unknown method": (frame(req(1, method="mole/nope", params={})), [(1, NO_METHOD)]),
    "params of the wrong type": (frame(req(1, method="textDocument/completion", params={"x": 1})),
                                 [(1, BAD_PARAMS)]),
    "string id": (frame(req("abc")), [("abc", None)]),
    "notification sent with an id": (frame(req(1, method="workspace/didChangeConfiguration", params={"settings": {}})),
                                     [(1, INVALID)]),
    "cancel sent with an id": (frame(req(1, method="$/cancelRequest", params={"id": 3})), [(1, INVALID)]),
    "unknown notification": (frame(b'{"jsonrpc": "2.0", "method": "mole/nope", "params": {}}'), []),
    "notification with bad params": (frame(b'{"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {}}'),
                                     []),
    "response to nothing": (frame(b'{"jsonrpc": "2.0", "id": 99, "result": null}'), []),
}


@pytest.fixture(scope="module")
def wire(tmp_path_factory):
    w = Wire(tmp_path_factory.mktemp("framing"), "--no-preload", "--base-model", "no-such-model")
    assert "result" in w.initialize()
    yield w
    assert w.close() == 0


def _answers(w: Wire, start: int, skip: int) -> list[tuple]:
    return sorted(((m.get("id"), m["error"]["code"] if "error" in m else None) for m in w.messages[start:]
                   if "method" not in m and m.get("id") != skip), key=repr)


@pytest.mark.parametrize("wait_first", [False, True], ids=["then-next", "client-waits"])
@pytest.mark.parametrize("name", list(CASES))
def test_malformed_input_is_answered_and_the_server_keeps_serving(wire, name, wait_first):
    data, expected = CASES[name]
    start = len(wire.messages)
    wire.send_raw(data)
    if wait_first and expected:  # the client sends nothing more until it has its answer
        want = expected[0][0]
        wire.wait(lambda m: "method" not in m and m.get("id") == want, 10, f"answer to {name}", start)
    reply = wire.status(timeout=10)  # the next request is answered
    assert reply["result"]["state"] in ("starting", "loading", "ready", "error")
    assert _answers(wire, start, reply["id"]) == sorted(expected, key=repr)
    assert wire.proc.poll() is None


def test_a_second_initialize_is_refused_and_documents_stay_open(wire):
    uri = "file:///tmp/framing-doc.py"
    wire.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                          "text": "x = 1\n"}})
    again = wire.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
    assert again["error"]["code"] == INVALID and "already initialized" in again["error"]["message"]
    # The document is still open: explain reaches the engine instead of "unknown document".
    reply = wire.request("workspace/executeCommand", {"command": "mole.explain", "arguments": [
        {"uri": uri, "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 5}}}]})
    assert "unknown document" not in json.dumps(reply)


def test_did_change_of_a_document_never_opened_is_ignored(wire):
    start = len(wire.messages)
    wire.notify("textDocument/didChange", {"textDocument": {"uri": "file:///never-opened.py", "version": 2},
                                           "contentChanges": [{"text": "y = 2\n"}]})
    assert "result" in wire.status()
    assert not [m for m in wire.messages[start:] if m.get("method") == "window/showMessage"]


# -- the Framer alone ------------------------------------------------------------------------------------------
def _feed_bytewise(framer: Framer, data: bytes) -> list:
    events = []
    for i in range(len(data)):
        events += framer.feed(data[i : i + 1])
    return events


def test_frames_split_anywhere_are_read_whole():
    a, b = req(1), req(2)
    events = _feed_bytewise(Framer(), frame(a) + b"content-length:%d\n\n" % len(b) + b)
    assert events == [Message(json.loads(a)), Message(json.loads(b))]


def test_a_body_without_headers_running_into_the_next_frame_is_answered_by_id():
    events = Framer().feed(req(7) + frame(req(8)))
    assert events == [Problem(INVALID, "not an LSP header", 7), Message(json.loads(req(8)))]


def test_stall_answers_a_body_shorter_than_its_length_and_nothing_else():
    f = Framer()
    assert f.feed(b"Content-Length: 500\r\n\r\n" + req(3)) == []
    assert f.pending
    [problem] = f.stall()
    assert problem.msg_id == 3 and problem.code == INVALID and "longer than the message" in problem.reason
    assert not f.pending
    g = Framer()  # a large message still arriving is not cut short
    g.feed(b"Content-Length: 500\r\n\r\n" + req(3)[:-5])
    assert g.stall() == [] and g.pending
