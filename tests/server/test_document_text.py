"""Document text the model cannot read as is: a lone UTF-16 surrogate (which an editor may hold, and JSON
can carry as ``\\ud800``) becomes U+FFFD when the document arrives, so completions still answer and
positions after it stay right. A real server on the tiny model."""

from __future__ import annotations

import pytest
from lsp_fixtures import tiny_world  # noqa: F401
from lsp_wire import Wire

from mole_lsp.server.rpc import clean_text

TEXT = "s = '\ud800'\nt = '\udfff\ud83d\ude00'\ndef f(x):\n    return "


def test_clean_text_keeps_utf16_length():
    cleaned = clean_text(TEXT)
    assert "\ud800" not in cleaned and "\udfff" not in cleaned and "\U0001f600" in clean_text("\U0001f600")
    assert cleaned.count("\ufffd") == 4  # the pair was never joined: two lone surrogates
    assert len(cleaned.encode("utf-16-le")) == len(TEXT.encode("utf-16-le", "surrogatepass"))


@pytest.fixture(scope="module")
def wire(tiny_world, tmp_path_factory):  # noqa: F811
    w = Wire(tmp_path_factory.mktemp("doc-text"), "--base-model", str(tiny_world.base_dir),
             "--pack-repo", str(tiny_world.packs_dir))
    assert "result" in w.initialize({"debounceMs": 0, "maxNewTokens": 4, "explainMaxNewTokens": 4})
    yield w
    assert w.close() == 0


def test_a_lone_surrogate_does_not_break_completions(wire):
    uri = "file:///tmp/surrogate.py"
    wire.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                          "text": TEXT}})
    end = {"line": 3, "character": 11}
    where = {"textDocument": {"uri": uri}, "position": end}
    for method, params in (("textDocument/completion", where),
                           ("textDocument/inlineCompletion", {**where, "context": {"triggerKind": 1}})):
        reply = wire.request(method, params, timeout=120)
        assert "result" in reply, reply
    # An edit that types a lone surrogate after the first line: the edit lands where the editor meant.
    wire.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [
        {"range": {"start": {"line": 0, "character": 6}, "end": {"line": 0, "character": 6}}, "text": "\udc00!"}]})
    reply = wire.request("workspace/executeCommand", {"command": "mole.explain", "arguments": [
        {"uri": uri, "range": {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 9}}}]},
        timeout=120)
    assert "result" in reply, reply
