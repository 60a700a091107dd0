"""A real ``python -m mole_lsp serve`` subprocess on the tiny world, driven by pytest-lsp's client, for the
server tests (test_server.py, test_host_reload.py, test_idle_unload.py, test_remote_backend.py) and
bench/bench_team.py: it records every ``mole/status`` and ``mole/trace`` and can send completions,
commands and settings."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp.client import make_test_lsp_client

from mole_lsp.server import protocol

PY = "def fib(n):\n    if n < 2:\n        return n\n    return "


def plain(obj: Any) -> Any:
    """lsprotocol/pygls objects as plain dicts and lists."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple) and not hasattr(obj, "_fields"):
        return [plain(v) for v in obj]
    if hasattr(obj, "_asdict"):
        return {k: plain(v) for k, v in obj._asdict().items()}
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return {k: plain(v) for k, v in vars(obj).items()}
    return obj


async def until(cond, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def server_env(cache: Path, hub_url: str | None = None, offline: bool = False, **extra: str) -> dict[str, str]:
    """The server's environment: this process's without HF_* and MOLE_*, the hub at ``hub_url`` (offline
    without one, or with ``offline``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MOLE_"))}
    env.update(OMP_WAIT_POLICY="PASSIVE", MOLE_LSP_TRACE="1", HF_HOME=str(cache / "hf-home"),
               HF_HUB_DISABLE_TELEMETRY="1", PYTHONUNBUFFERED="1", **extra)
    if hub_url is not None:
        env["HF_ENDPOINT"] = hub_url
    if hub_url is None or offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


class Served:
    """One server subprocess and its client."""

    def __init__(self, cache: Path, args: list[str], env: dict[str, str]) -> None:
        self.cache, self.args, self.env = cache, args, env
        self.traces: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.client = make_test_lsp_client()
        (cache / "docs").mkdir(exist_ok=True)

        @self.client.feature("mole/trace")
        def on_trace(params: Any) -> None:
            self.traces.append(plain(params))

        @self.client.feature(protocol.NOTIFY_STATUS)
        def on_status(params: Any) -> None:
            self.statuses.append(plain(params))

    async def start(self, options: dict[str, Any], process_id: int | None = None) -> types.InitializeResult:
        cmd = [sys.executable, "-m", "mole_lsp", "serve", "--cache-dir", str(self.cache), "--threads", "1",
               *self.args]
        await self.client.start_io(*cmd, env=self.env)
        caps = types.ClientCapabilities(
            window=types.WindowClientCapabilities(work_done_progress=True),
            text_document=types.TextDocumentClientCapabilities(
                inline_completion=types.InlineCompletionClientCapabilities(),
                completion=types.CompletionClientCapabilities()))
        return await self.client.initialize_session(types.InitializeParams(
            capabilities=caps, initialization_options=options, process_id=process_id))

    async def stop(self, timeout: float = 20) -> None:
        """shutdown and exit; a server that has not exited within ``timeout`` is killed (and this raises)."""
        server = self.client._server
        try:
            if server is not None and server.returncode is None:
                await asyncio.wait_for(self.client.shutdown_session(), timeout)
        finally:
            if server is not None and server.returncode is None:
                server.kill()
            await self.client.stop()

    def open(self, name: str, language_id: str, text: str) -> str:
        uri = (self.cache / "docs" / name).as_uri()
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=language_id, version=1, text=text)))
        return uri

    async def inline(self, uri: str, line: int, character: int) -> types.InlineCompletionList | None:
        """An invoked inline completion; returns its answer."""
        return await self.client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))

    async def complete(self, uri: str, line: int, character: int) -> dict[str, Any]:
        """An inline completion; returns the trace of the generation it ran."""
        n = len(self.traces)
        await self.inline(uri, line, character)
        await until(lambda: len(self.traces) > n, 10, "the trace of the completion")
        return self.traces[-1]

    async def complete_new(self) -> dict[str, Any]:
        """A completion in a new Python document (a request repeated at the same place may be answered
        from the last one without generating); returns its trace."""
        self._docs = getattr(self, "_docs", 0) + 1
        uri = self.open(f"new{self._docs}.py", "python", PY)
        return await self.complete(uri, 3, 11)

    async def command(self, name: str, *args: Any) -> Any:
        return plain(await self.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=name, arguments=list(args))))

    async def status(self) -> dict[str, Any]:
        return await self.command(protocol.CMD_STATUS)

    def configure(self, **settings: Any) -> None:
        self.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"mole": settings}))

    def messages(self, needle: str) -> list[str]:
        return [m.message for m in self.client.messages if needle in m.message]

    async def ready(self, timeout: float = 60) -> None:
        await until(lambda: any(s["state"] in ("ready", "error") for s in self.statuses), timeout, "the model load")
