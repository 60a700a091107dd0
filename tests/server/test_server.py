"""The language server end to end: a real ``python -m mole_lsp serve`` subprocess driven by pytest-lsp's
client, on the tiny random Llama, with tiny packs served by the local hub (tests/hub_server.py).

Routing is asserted through ``mole/trace`` notifications (MOLE_LSP_TRACE=1), never through wording.

Every test stands alone: tests on what the server downloads or caches start their own server on a fresh
cache and hub; the others share one loaded server (``srv``), whose settings go back to ``OPTIONS`` after
each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hub_server import LocalHub
from lsp_fixtures import PACK_REPO, TinyWorld, tiny_world  # noqa: F401
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from serve_client import Served, server_env, until

from mole_lsp.server import protocol

pytestmark = pytest.mark.asyncio(loop_scope="module")

PY = "def fib(n):\n    if n < 2:\n        return n\n    return "
RS = "fn main() {\n    let x = 1;\n    "
OPTIONS = {"debounceMs": 0, "maxNewTokens": 8, "explainMaxNewTokens": 8}  # initializationOptions of srv


class Harness(Served):
    """A server on the tiny world's base model and pack repo (served by ``hub``), plus what tests of its
    own need: raw and cancelled requests, and the pack downloads the hub saw."""

    def __init__(self, hub: LocalHub | None, cache: Path, world: Any, offline: bool = False) -> None:
        super().__init__(cache, ["--base-model", str(world.base_dir), "--pack-repo", PACK_REPO],
                         server_env(cache, hub.url if hub else None, offline=offline))
        self.hub, self.world = hub, world

    async def raw_request(self, method: str, params: Any, msg_id: str | None = None) -> Any:
        """Send a request exactly as given (no client-side typing), return the result or raise."""
        proto = self.client.protocol
        msg_id = msg_id or str(uuid.uuid4())
        fut = proto._request_futures[msg_id] = asyncio.get_running_loop().create_future()
        proto._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return await asyncio.wait_for(_wrap(fut), 60)

    def cancel(self, msg_id: str) -> None:
        self.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))

    def generated(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [t for t in self.traces if t.get("started") and (kind is None or t["kind"] == kind)]

    def hub_expert_downloads(self) -> set[str]:
        assert self.hub is not None
        paths = [r.path for r in self.hub.request_log if r.method == "GET" and "/resolve/" in r.path]
        return {p.split("/experts/")[1].split("/")[0] for p in paths if "/experts/" in p}


async def _wrap(fut: Any) -> Any:
    return await fut


def installed_in_background(srv: Harness, lang: str) -> bool:
    """Whether a background download of ``lang``'s pack has ended installed (server/downloads.py)."""
    return any(r and r[-1].kind == "end" and f"{lang}: installed" in (r[-1].message or "")
               for r in list(srv.client.progress_reports.values()))


@contextlib.contextmanager
def _pack_hub(world: Any) -> Any:
    with LocalHub() as h:
        h.upload_folder(PACK_REPO, world.packs_dir)
        h.clear_log()
        yield h


@pytest.fixture(scope="module")
def shared_hub(tiny_world):  # noqa: F811
    """The hub of the shared server."""
    with _pack_hub(tiny_world) as h:
        yield h


@pytest.fixture
def hub(tiny_world):  # noqa: F811
    """A hub of this test's own: its request log holds this test's downloads only."""
    with _pack_hub(tiny_world) as h:
        yield h


@pytest.fixture
def cache(tmp_path) -> Path:
    """This test's own cache folder: nothing is installed yet."""
    (tmp_path / "docs").mkdir()
    return tmp_path


@contextlib.asynccontextmanager
async def serving(hub: LocalHub | None, cache: Path, world: Any, options: dict[str, Any] | None = None,
                  offline: bool = False) -> AsyncIterator[Harness]:
    """A server of this test's own, stopped at the end."""
    h = Harness(hub, cache, world, offline=offline)
    h.init_result = await h.start(dict(options or OPTIONS))
    try:
        yield h
    finally:
        await h.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_srv(shared_hub, tmp_path_factory, tiny_world):  # noqa: F811
    cache = tmp_path_factory.mktemp("server-cache")
    (cache / "docs").mkdir()
    async with serving(shared_hub, cache, tiny_world) as h:
        # Loaded before any test uses it: no test depends on being the one that waited for the load.
        await until(lambda: any(s["state"] in ("ready", "error") for s in h.statuses), what="model load")
        # ... with the experts installed: no test depends on being the first to use a language.
        await h.command(protocol.CMD_INSTALL_PACK, {"languages": ["python", "rust"]})
        yield h


@pytest_asyncio.fixture(loop_scope="module")
async def srv(shared_srv):
    """The shared server; the settings a test changed go back to ``OPTIONS`` afterwards."""
    yield shared_srv
    shared_srv.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"mole": dict(OPTIONS)}))
    await shared_srv.command(protocol.CMD_STATUS)  # a round trip: the server has taken the settings


# -- the main server ------------------------------------------------------------------------------------------
async def test_initialize_advertises_inline_completion_and_commands(srv):
    caps = srv.init_result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert set(protocol.COMMANDS) <= set(caps.execute_command_provider.commands)
    await until(lambda: any(s["state"] in ("ready", "error") for s in srv.statuses), what="model load")
    assert srv.statuses[-1]["state"] == "ready"
    load = [p for p in srv.client.progress_reports.values() if p and "loading the model" in p[0].title]
    assert load and load[-1][-1].kind == "end"


async def test_python_completion_uses_python_expert_and_downloads_lazily(hub, cache, tiny_world):  # noqa: F811
    async with serving(hub, cache, tiny_world) as srv:
        # The expert is missing: the shared adapter answers at once while the pack downloads meanwhile ...
        await srv.inline(srv.open("a0.py", "python", PY), 3, 11)
        first = srv.generated("inline")[-1]
        assert first["language"] == "python" and first["expert"] is None
        await until(lambda: installed_in_background(srv, "python"), what="the python pack download")
        uri = srv.open("a.py", "python", PY)  # ... and the next request uses it
        result = await srv.inline(uri, 3, 11)
        assert result is not None and len(result.items) <= 1
        trace = srv.generated("inline")[-1]
        assert trace["language"] == "python" and trace["expert"] == "python"
        assert set(trace["routes"]) == {"python"} and 0 < trace["new_tokens"] <= 8
        assert srv.hub_expert_downloads() == {"python"}
        status = await srv.command(protocol.CMD_STATUS)
        assert status["activeExpert"] == "python" and status["baseOnly"] is False


async def test_rust_document_downloads_only_the_rust_folder(hub, cache, tiny_world):  # noqa: F811
    async with serving(hub, cache, tiny_world) as srv:
        await srv.inline(srv.open("a.py", "python", PY), 3, 11)  # a session that already used Python
        await until(lambda: installed_in_background(srv, "python"), what="the python pack download")
        before = set(srv.client.progress_reports)
        await srv.inline(srv.open("main0.rs", "rust", RS), 2, 4)  # the fallback, while Rust downloads
        await until(lambda: installed_in_background(srv, "rust"), what="the rust pack download")
        uri = srv.open("main.rs", "rust", RS)
        await srv.inline(uri, 2, 4)
        trace = srv.generated("inline")[-1]
        assert set(trace["routes"]) == {"rust"} and trace["expert"] == "rust"
        assert srv.hub_expert_downloads() == {"python", "rust"}
        cached = {p.parent.name for p in cache.rglob("experts/*/manifest.json")}
        assert cached == {"python", "rust"}
        new = [srv.client.progress_reports[t] for t in set(srv.client.progress_reports) - before]
        assert any(r and r[0].kind == "begin" and "rust" in (r[0].message or "") for r in new)
        assert any(r and r[-1].kind == "end" for r in new)


async def test_status_names_the_document_its_languageid_and_expert(srv):
    uri = srv.open("status.py", "python", PY)
    n = len(srv.statuses)
    await srv.inline(uri, 3, 11)
    await until(lambda: any(s.get("activeUri") == uri for s in srv.statuses[n:]), what="status naming the document")
    new = srv.statuses[n:]
    done = next(s for s in new if s["activeUri"] == uri)
    assert done["state"] == "ready" and done["vscodeLanguageId"] == "python"
    assert done["activeLanguage"] == "python" and done["activeExpert"] == "python" and done["baseOnly"] is False
    # While generating, the active* fields still describe the previous (finished) generation.
    generating = [s for s in new if s["state"] == "generating"]
    assert generating and all(s["activeUri"] != uri for s in generating)
    assert (await srv.command(protocol.CMD_STATUS))["activeUri"] == uri

    # The document's own languageId, the registry id, and null = the shared adapter (no shell pack).
    sh = srv.open("run.sh", "shellscript", "#!/bin/sh\nfor f in *; do\n  ")
    n = len(srv.statuses)
    await srv.inline(sh, 2, 2)
    await until(lambda: any(s.get("activeUri") == sh for s in srv.statuses[n:]), what="status naming run.sh")
    done = next(s for s in srv.statuses[n:] if s["activeUri"] == sh)
    assert (done["vscodeLanguageId"], done["activeLanguage"], done["activeExpert"]) == ("shellscript", "shell", None)
    assert set(srv.generated("inline")[-1]["routes"]) == {"shared"}


async def test_completion_request_for_older_clients(srv):
    uri = srv.open("b.py", "python", "import os\nos.pa")
    result = await srv.client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=1, character=5)))
    trace = srv.generated("completion")[-1]
    assert set(trace["routes"]) == {"python"}
    for item in result.items:
        assert item.text_edit.range.start.character == 3  # the edit starts at the word "pa"


async def test_explain_uses_nl_adapter_and_code_expert(srv):
    uri = srv.open("c.py", "python", "def add(a, b):\n    return a + b\n")
    rng = {"start": {"line": 0, "character": 0}, "end": {"line": 2, "character": 0}}
    out = await srv.command(protocol.CMD_EXPLAIN, {"uri": uri, "range": rng})
    assert isinstance(out["markdown"], str) and out["language"] == "python"
    trace = srv.generated("explain")[-1]
    assert trace["mode"] == "automated" and trace["routes"][0] == "nl"


async def test_translate_uses_target_expert(srv):
    uri = srv.open("d.py", "python", "print('hi')\n")
    rng = {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}}
    out = await srv.command(protocol.CMD_TRANSLATE, {"uri": uri, "range": rng, "target": "rs"})
    assert out["language"] == "rust" and out["vscodeLanguageId"] == "rust" and isinstance(out["code"], str)
    trace = srv.generated("translate")[-1]
    assert trace["mode"] == "manual" and set(trace["routes"]) == {"rust"}
    # The status names the target's expert, so it names no document (d.py is not in Rust).
    status = await srv.command(protocol.CMD_STATUS)
    assert (status["activeUri"], status["vscodeLanguageId"], status["activeLanguage"]) == (None, "rust", "rust")
    assert status["activeExpert"] == "rust"


async def test_new_request_supersedes_the_running_one(srv):
    srv.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"mole": {"maxNewTokens": 1024}}))
    uri = srv.open("e.py", "python", "x = [")
    n, k = len(srv.traces), len(srv.statuses)
    first = asyncio.ensure_future(srv.inline(uri, 0, 5))
    await until(lambda: any(s["state"] == "generating" for s in srv.statuses[k:]), what="generation start")
    # at once: the tiny random model falls into a loop, which the repetition stop ends after 48 tokens
    second = await srv.inline(uri, 0, 5)
    first_result = await first
    assert not first_result.items  # superseded: nothing shown
    runs = [t for t in srv.traces[n:] if t["kind"] == "inline" and t.get("started")]
    assert runs[0]["superseded"] and runs[0]["stop_reason"] == "cancelled" and runs[0]["new_tokens"] < 1024
    assert second is not None


def ring_world(root: Path) -> TinyWorld:
    """A tiny base whose greedy output never loops: every layer adds nothing to the residual stream (zero
    ``o_proj`` and ``down_proj``) and the output head maps each token to the next one of a ring through all
    non-special tokens, so the output is that ring: a unit of ~400 tokens, far over the repetition
    detector's 64 (engine/repetition.py). No packs: the server runs it base only."""
    import torch
    from helpers import make_tiny_llama
    from lsp_fixtures import SPECIALS, make_tokenizer

    tok = make_tokenizer()
    model = make_tiny_llama(0, vocab_size=len(tok), hidden_size=64, bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    special = set(tok.convert_tokens_to_ids(SPECIALS))  # end-of-turn tokens end a generation
    ring = [i for i in range(len(tok)) if i not in special]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        head = torch.zeros_like(model.lm_head.weight)
        head[ring[1:] + ring[:1]] = emb[ring]
        model.lm_head.weight.copy_(head)
        assert (torch.argmax(emb[ring] @ head.T, dim=1) == torch.tensor(ring[1:] + ring[:1])).all()
    model.save_pretrained(root / "ring-base")
    tok.save_pretrained(root / "ring-base")
    return TinyWorld(root / "ring-base", root / "no-packs", "")


async def test_cancel_request_stops_the_generation(cache):
    # A long generation: the ring model writes explainMaxNewTokens tokens unless cancelled (the tiny
    # world's model falls into a loop, and stops for repetition, within ~100 tokens).
    world = ring_world(cache)
    async with serving(None, cache, world, {**OPTIONS, "explainMaxNewTokens": 4096}, offline=True) as srv:
        await until(lambda: any(s["state"] in ("ready", "error") for s in srv.statuses), what="model load")
        uri = srv.open("f.py", "python", "print(1)\n")
        rng = {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}}
        n = len(srv.traces)
        msg_id = "cancel-me"
        pending = asyncio.ensure_future(srv.raw_request(
            types.WORKSPACE_EXECUTE_COMMAND,
            {"command": protocol.CMD_EXPLAIN, "arguments": [{"uri": uri, "range": rng}]}, msg_id))
        await until(lambda: srv.statuses and srv.statuses[-1]["state"] == "generating", what="generation start")
        srv.cancel(msg_id)
        with pytest.raises(JsonRpcException):
            await pending
        await until(lambda: any(t["kind"] == "explain" for t in srv.traces[n:]), what="trace")
        t = [t for t in srv.traces[n:] if t["kind"] == "explain"][0]
        assert t["stop_reason"] == "cancelled" and t["new_tokens"] < 4096


@pytest.mark.parametrize("method,params,needle", [
    ("workspace/executeCommand", {"command": protocol.CMD_EXPLAIN, "arguments": [42]}, "one object"),
    ("workspace/executeCommand", {"command": protocol.CMD_EXPLAIN,
                                  "arguments": [{"uri": "file:///nope.py", "range": {}}]}, ""),
    ("workspace/executeCommand", {"command": protocol.CMD_TRANSLATE, "arguments": [{"uri": "x", "target": "klingon"}]},
     "unknown target"),
    ("workspace/executeCommand", {"command": protocol.CMD_INSTALL_PACK, "arguments": [{"languages": "rust"}]},
     "languages"),
    ("workspace/executeCommand", {"command": "mole.nope", "arguments": []}, ""),
    ("textDocument/inlineCompletion", {"textDocument": {"uri": "file:///x.py"}}, ""),
    ("textDocument/inlineCompletion", {"textDocument": {"uri": "file:///x.py"},
                                       "position": {"line": -1, "character": 0}, "context": {"triggerKind": 1}}, ""),
])
async def test_malformed_params_get_errors_and_the_server_keeps_serving(srv, method, params, needle):
    with pytest.raises(JsonRpcException) as err:
        await srv.raw_request(method, params)
    assert needle in str(err.value)
    status = await srv.command(protocol.CMD_STATUS)
    assert status["state"] in ("ready", "generating")


async def test_bad_setting_is_reported_and_old_value_kept(srv):
    n = len(srv.client.messages)
    srv.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"mole": {"maxNewTokens": -5, "debounceMs": "soon"}}))
    await until(lambda: len(srv.client.messages) >= n + 2, what="showMessage")
    texts = " ".join(m.message for m in srv.client.messages[n:])
    assert "mole.maxNewTokens" in texts and "mole.debounceMs" in texts and "keeping 8" in texts
    uri = srv.open("g.py", "python", "y = ")
    await srv.inline(uri, 0, 4)
    assert srv.generated("inline")[-1]["new_tokens"] <= 8


async def test_pack_commands(hub, cache, tiny_world):  # noqa: F811
    async with serving(hub, cache, tiny_world) as srv:
        # Python and Rust installed first, as after a session that used them.
        await srv.command(protocol.CMD_INSTALL_PACK, {"languages": ["python", "rust"]})
        out = await srv.command(protocol.CMD_INSTALL_PACK, {"languages": ["js", "cobol"]})
        assert out["installed"] == ["javascript"] and "cobol" in out["errors"]
        listing = await srv.command(protocol.CMD_LIST_PACKS)
        assert listing["repo"] == PACK_REPO and listing["offline"] is False and len(listing["revision"]) == 40
        packs = {p["language"]: p for p in listing["packs"]}
        assert {"python", "rust", "javascript"} <= {k for k, p in packs.items() if p["installed"]}
        assert packs["rust"]["sizeBytes"] > 0 and packs["rust"]["name"] == "Rust"
        assert packs["rust"]["vscodeLanguageIds"] == ["rust"]
        assert packs["javascript"]["vscodeLanguageIds"] == ["javascript", "javascriptreact"]
        assert all(isinstance(p["vscodeLanguageIds"], list) for p in listing["packs"])
        out = await srv.command(protocol.CMD_REMOVE_PACK, {"languages": ["javascript"]})
        assert out == {"removed": ["javascript"], "errors": {}}
        assert not list(cache.rglob("experts/javascript/manifest.json"))


# -- a server on a cache that an earlier server filled --------------------------------------------------------
async def test_offline_uses_cached_packs_only(hub, cache, tiny_world):  # noqa: F811
    async with serving(hub, cache, tiny_world) as online:
        out = await online.command(protocol.CMD_INSTALL_PACK, {"languages": ["python"]})
        assert out == {"installed": ["python"], "errors": {}}
    hub.clear_log()
    h = Harness(hub, cache, tiny_world, offline=True)
    await h.start({"debounceMs": 0, "maxNewTokens": 4})
    try:
        uri = h.open("h.py", "python", PY)
        await h.inline(uri, 3, 11)
        assert set(h.generated("inline")[-1]["routes"]) == {"python"}
        uri = h.open("i.js", "javascript", "let a = ")  # not cached: shared adapter only
        await h.inline(uri, 0, 8)
        t = h.generated("inline")[-1]
        assert set(t["routes"]) == {"shared"} and t["expert"] is None
        await until(lambda: any("JavaScript expert unavailable" in m.message for m in h.client.messages),
                    what="offline message")
        assert any(s["offline"] for s in h.statuses)
        assert [r for r in hub.request_log if "/resolve/" in r.path] == []
    finally:
        await h.stop()


async def test_corrupted_cached_pack_is_refused_and_fetched_again(hub, cache, tiny_world):  # noqa: F811
    async with serving(hub, cache, tiny_world) as online:
        out = await online.command(protocol.CMD_INSTALL_PACK, {"languages": ["rust"]})
        assert out == {"installed": ["rust"], "errors": {}}
    blob = next(p for p in cache.rglob("experts/rust/adapters.safetensors")).resolve()
    data = bytearray(blob.read_bytes())
    data[-10:] = b"\0" * 10
    blob.write_bytes(bytes(data))
    hub.clear_log()
    h = Harness(hub, cache, tiny_world)
    await h.start({"debounceMs": 0, "maxNewTokens": 4})
    try:
        await h.inline(h.open("j0.rs", "rust", RS), 2, 4)  # refused: the fallback, while it is fetched again
        await until(lambda: installed_in_background(h, "rust"), what="the rust pack download")
        uri = h.open("j.rs", "rust", RS)
        await h.inline(uri, 2, 4)
        assert set(h.generated("inline")[-1]["routes"]) == {"rust"}
        assert h.hub_expert_downloads() == {"rust"}
    finally:
        await h.stop()


async def test_no_core_pack_means_base_only_said_once(tiny_world, tmp_path):  # noqa: F811
    h = Harness(None, tmp_path, tiny_world, offline=True)
    await h.start({"debounceMs": 0, "maxNewTokens": 3})
    try:
        uri = h.open("k.py", "python", PY)
        await h.inline(uri, 3, 11)
        await h.inline(uri, 3, 11)
        assert set(h.generated("inline")[-1]["routes"]) == {"base"}
        status = await h.command(protocol.CMD_STATUS)
        assert status["baseOnly"] is True
        said = [m for m in h.client.messages if "base model only" in m.message]
        assert len(said) == 1
    finally:
        await h.stop()
