"""Pack downloads run beside the model, not inside a generation: a real ``mole_lsp serve`` subprocess on
the tiny model, with packs from the local hub (tests/hub_server.py) whose download can be held half-way.

A completion whose expert is missing answers at once with the fallback while the pack downloads in the
background; the next one after the download uses the expert. Cancelling the download's progress stops
it and nothing half-downloaded is used. The status says ``offline`` while the Hub is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hub_server import LocalHub
from lsp_fixtures import PACK_REPO, tiny_world  # noqa: F401
from lsprotocol import types
from pytest_lsp.client import make_test_lsp_client

from mole_lsp.server import protocol

pytestmark = pytest.mark.asyncio(loop_scope="function")

PY = "def fib(n):\n    if n < 2:\n        return n\n    return "
PY_ADAPTERS = "experts/python/adapters.safetensors"
DOWNLOAD_TITLE = "mole-lsp: downloading packs"


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple) and not hasattr(obj, "_fields"):
        return [_plain(v) for v in obj]
    if hasattr(obj, "_asdict"):  # pygls hands custom notifications' params over as named tuples
        return {k: _plain(v) for k, v in obj._asdict().items()}
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return {k: _plain(v) for k, v in vars(obj).items()}
    return obj


async def until(cond, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Server:
    """One server subprocess and what it told us."""

    def __init__(self, endpoint: str, cache: Path, world: Any) -> None:
        self.endpoint, self.cache, self.world = endpoint, cache, world
        self.traces: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.client = make_test_lsp_client()
        self.client.feature("mole/trace")(lambda params: self.traces.append(_plain(params)))
        self.client.feature(protocol.NOTIFY_STATUS)(lambda params: self.statuses.append(_plain(params)))

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MOLE_"))}
        env.update(OMP_WAIT_POLICY="PASSIVE", MOLE_LSP_TRACE="1", HF_HOME=str(self.cache / "hf-home"),
                   HF_HUB_DISABLE_TELEMETRY="1", PYTHONUNBUFFERED="1", HF_ENDPOINT=self.endpoint)
        await self.client.start_io(sys.executable, "-m", "mole_lsp", "serve", "--base-model",
                                   str(self.world.base_dir), "--pack-repo", PACK_REPO, "--cache-dir",
                                   str(self.cache), "--threads", "1", env=env)
        caps = types.ClientCapabilities(
            window=types.WindowClientCapabilities(work_done_progress=True),
            text_document=types.TextDocumentClientCapabilities(
                inline_completion=types.InlineCompletionClientCapabilities()))
        await self.client.initialize_session(types.InitializeParams(
            capabilities=caps, initialization_options={"debounceMs": 0, "maxNewTokens": 4}))
        await until(lambda: any(s["state"] in ("ready", "error") for s in self.statuses), 120, "model load")

    async def inline(self) -> tuple[dict[str, Any], float]:
        """One completion at the end of PY in a new document: its trace and how long it took."""
        uri = self.open_py()
        n = len(self.traces)
        t0 = time.monotonic()
        await self.client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=3, character=11),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
        await until(lambda: len(self.traces) > n, what="trace")
        trace = self.traces[-1]
        assert trace.get("started"), trace
        return trace, time.monotonic() - t0

    def open_py(self) -> str:
        self.docs = getattr(self, "docs", 0) + 1
        uri = (self.cache / f"doc{self.docs}.py").as_uri()
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=PY)))
        return uri

    async def command(self, name: str, *args: Any) -> Any:
        return _plain(await self.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=name, arguments=list(args))))

    def downloads(self) -> dict[str, list[Any]]:
        """Work-done progresses of pack downloads, by token."""
        return {t: r for t, r in self.client.progress_reports.items()
                if r and getattr(r[0], "title", "") == DOWNLOAD_TITLE}

    def ended(self, outcome: str) -> bool:
        return any(r[-1].kind == "end" and outcome in (r[-1].message or "") for r in self.downloads().values())


@contextlib.asynccontextmanager
async def serving(endpoint: str, cache: Path, world: Any) -> AsyncIterator[Server]:
    srv = Server(endpoint, cache, world)
    try:
        await srv.start()
        yield srv
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(srv.client.shutdown_session(), 20)
        await srv.client.stop()


@pytest.fixture
def hub(tiny_world):  # noqa: F811
    with LocalHub() as h:
        h.upload_folder(PACK_REPO, tiny_world.packs_dir)
        h.clear_log()
        yield h


def _gets(hub: LocalHub, path: str) -> int:
    return sum(r.method == "GET" and r.path.endswith(path) for r in list(hub.request_log))


async def test_completions_go_on_during_a_download_and_use_the_expert_after_it(hub, tmp_path, tiny_world):  # noqa: F811
    async with serving(hub.url, tmp_path, tiny_world) as srv:
        gate = hub.hold(PY_ADAPTERS, times=1)
        trace, _ = await srv.inline()
        assert trace["expert"] is None and set(trace["routes"]) == {"shared"}  # the fallback, at once
        await until(lambda: _gets(hub, PY_ADAPTERS) == 1, what="the download to start")
        trace, took = await srv.inline()  # the pack is half-downloaded now
        assert trace["expert"] is None and took < 5, took
        assert not srv.ended("python")
        assert any(r[0].cancellable for r in srv.downloads().values())
        gate.set()
        await until(lambda: srv.ended("python: installed"), what="the download to end")
        trace, _ = await srv.inline()
        assert trace["expert"] == "python" and set(trace["routes"]) == {"python"}
        assert _gets(hub, PY_ADAPTERS) == 1  # downloaded once


async def test_cancelling_the_download_stops_it_and_uses_nothing_of_it(hub, tmp_path, tiny_world):  # noqa: F811
    async with serving(hub.url, tmp_path, tiny_world) as srv:
        gate = hub.hold(PY_ADAPTERS, times=1)
        await srv.inline()
        await until(lambda: _gets(hub, PY_ADAPTERS) == 1 and srv.downloads(), what="the download to start")
        (token,) = srv.downloads()
        srv.client.protocol.notify(types.WINDOW_WORK_DONE_PROGRESS_CANCEL,
                                   types.WorkDoneProgressCancelParams(token=token))
        await asyncio.sleep(0.3)
        gate.set()  # the next chunk arrives: the download stops there
        await until(lambda: srv.ended("python: cancelled"), what="the cancelled download to end")
        assert not list(tmp_path.rglob(PY_ADAPTERS))  # nothing half-downloaded under the real name
        trace, _ = await srv.inline()
        assert trace["expert"] is None
        await asyncio.sleep(0.5)
        assert _gets(hub, PY_ADAPTERS) == 1  # a cancelled pack is not fetched again on its own
        gate = hub.hold(PY_ADAPTERS, times=1)  # ... but on request, and completions go on meanwhile
        install = asyncio.ensure_future(srv.command(protocol.CMD_INSTALL_PACK, {"languages": ["python"]}))
        await until(lambda: _gets(hub, PY_ADAPTERS) == 2, what="the requested download to start")
        trace, took = await srv.inline()
        assert trace["expert"] is None and took < 5, took
        gate.set()
        assert await install == {"installed": ["python"], "errors": {}}
        trace, _ = await srv.inline()
        assert trace["expert"] == "python"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_status_says_offline_while_the_hub_is_unreachable(tiny_world, tmp_path):  # noqa: F811
    port = _free_port()
    async with serving(f"http://127.0.0.1:{port}", tmp_path, tiny_world) as srv:
        for _ in range(2):  # as the load found it, and after a completion
            status = await srv.command(protocol.CMD_STATUS)
            assert status["offline"] is True and "cannot reach" in (status["message"] or "")
            await srv.inline()
        with LocalHub(port=port) as hub:  # the Hub comes back
            hub.upload_folder(PACK_REPO, tiny_world.packs_dir)
            out = await srv.command(protocol.CMD_INSTALL_PACK, {"languages": ["python"]})
            assert out == {"installed": ["python"], "errors": {}}
            await until(lambda: srv.statuses[-1]["offline"] is False, 10, "offline: false")
            assert (await srv.command(protocol.CMD_STATUS))["offline"] is False
