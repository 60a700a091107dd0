"""Typed-ahead reuse through a real ``python -m mole_lsp serve`` subprocess (tiny model, tiny packs on the
local hub): typing the start of the last suggestion answers with its rest without running the model
(``mole/trace``: no generation started), and only then."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import pytest
from hub_server import LocalHub
from lsp_fixtures import PACK_REPO, tiny_world  # noqa: F401
from lsprotocol import types
from pytest_lsp.client import make_test_lsp_client

from mole_lsp.server import protocol

pytestmark = pytest.mark.asyncio(loop_scope="function")

DOC = "def fib(n):\n    if n < 2:\n        return n\n    return "


def _position(text: str) -> types.Position:
    line = text[text.rfind("\n") + 1 :]
    return types.Position(line=text.count("\n"), character=len(line.encode("utf-16-le")) // 2)


def _fields(params: Any) -> dict[str, Any]:
    """A notification's params (pygls hands them over as a named tuple) as a dict."""
    return params._asdict() if hasattr(params, "_asdict") else dict(vars(params))


async def _until(cond, what: str, timeout: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_typing_through_a_suggestion_reuses_its_rest(tiny_world, tmp_path):  # noqa: F811
    traces: list[dict[str, Any]] = []
    states: list[str] = []
    client = make_test_lsp_client()
    client.feature(protocol.DEBUG_TRACE)(lambda params: traces.append(_fields(params)))
    client.feature(protocol.NOTIFY_STATUS)(lambda params: states.append(params.state))
    with LocalHub() as hub:
        hub.upload_folder(PACK_REPO, tiny_world.packs_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MOLE_"))}
        env.update(OMP_WAIT_POLICY="PASSIVE", MOLE_LSP_TRACE="1", HF_HOME=str(tmp_path / "hf-home"),
                   HF_ENDPOINT=hub.url, PYTHONUNBUFFERED="1")
        await client.start_io(sys.executable, "-m", "mole_lsp", "serve", "--base-model", str(tiny_world.base_dir),
                              "--pack-repo", PACK_REPO, "--cache-dir", str(tmp_path), "--threads", "1", env=env)
        try:
            await client.initialize_session(types.InitializeParams(
                capabilities=types.ClientCapabilities(), initialization_options={"debounceMs": 0, "maxNewTokens": 12}))
            uri = (tmp_path / "a.py").as_uri()
            client.text_document_did_open(types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=DOC)))
            version = 1

            async def ask(text: str) -> str:
                nonlocal version
                version += 1
                client.text_document_did_change(types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                    content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))
                got = await client.text_document_inline_completion_async(types.InlineCompletionParams(
                    text_document=types.TextDocumentIdentifier(uri=uri), position=_position(text),
                    context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
                return got.items[0].insert_text if got and got.items else ""

            def generations() -> int:
                return sum(1 for t in traces if t.get("started"))

            first = await ask(DOC)
            await _until(lambda: generations() == 1, "generation")
            assert len(first) >= 3
            for typed in (1, 2):
                assert await ask(DOC + first[:typed]) == first[typed:]
                await _until(lambda n=typed + 1: len(traces) >= n, "trace")
                assert traces[-1]["stop_reason"] == "typed_ahead" and not traces[-1]["started"]
            assert generations() == 1  # the model never ran again
            # Something else typed: the model runs.
            other = "#" if first[2] != "#" else "@"
            await ask(DOC + first[:2] + other)
            await _until(lambda: generations() == 2, "generation")
            # Turned off: the model runs even when the user types through the suggestion.
            client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
                settings={"mole": {"reuseSuggestions": False}}))
            await ask(DOC + first[:1])
            await _until(lambda: generations() == 3, "generation")
        finally:
            await client.shutdown_session()
            await client.stop()
