"""The openai backend end to end: a real llama-cpp-python server (``python -m llama_cpp.server``) on
loopback serves a tiny F32 GGUF base with the exported GGUF adapters (one model name per route), and a
real ``mole-lsp serve --backend openai`` subprocess sends it the completions of an editor."""

from __future__ import annotations

import asyncio
import http.server
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers import make_tiny_llama, perturb
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled
from serve_client import Served, server_env, until

from mole_lsp.cli import main
from mole_lsp.core.config import MoleConfig
from mole_lsp.core.model import attach_mole
from mole_lsp.engine.remote import BASE, SHARED, RemoteEngine, match_routes
from mole_lsp.errors import UserError
from mole_lsp.lang.registry import load_registry
from mole_lsp.packs.format import BaseIdentity, export_packs, fingerprint_model
from mole_lsp.server.settings import validate

LANGS = ("python", "rust")
ROUTES = (*LANGS, "nl", SHARED)
SEED = 21
NONLOOP = "tiny-nonloop"  # served name of the ring base (ring_base): its output never loops


def _gguf_base():
    """tests/export/gguf_base.py (a helper of the export tests: the tiny F32 GGUF writer)."""
    spec = importlib.util.spec_from_file_location("gguf_base", Path(__file__).parents[1] / "export" / "gguf_base.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server --config_file`` with one model name per exported route."""

    def __init__(self, root: Path, base: Path, adapters: dict[str, Path], extra: dict[str, Path]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        common = {"model": str(base), "n_ctx": 1024, "n_threads": 1, "n_batch": 64, "verbose": False}
        models = [{**common, "model_alias": "tiny-base"}]
        models += [{**common, "model_alias": f"tiny-{route}", "lora_path": str(path)} for route, path in adapters.items()]
        models += [{**common, "model_alias": name, "model": str(path)} for name, path in extra.items()]
        config = root / "llama-server.json"
        config.write_text(json.dumps({"host": "127.0.0.1", "port": self.port, "models": models,
                                      "interrupt_requests": False}))  # only a client going away stops a stream
        self.log = root / "llama-server.log"
        self._log = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--config_file", str(config)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"llama server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def posts(self) -> int:
        """Completion requests the server has answered (uvicorn logs each when its response starts)."""
        return self.text().count('"POST /v1/completions')

    def dropped(self) -> int:
        """Streams the server stopped because the client went away."""
        return self.text().count("Disconnected from client")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def ascii_only(model, vocab: list[str]):
    """Zero the output rows of every byte token that is not printable ASCII or space: the
    greedy pick is then (almost surely, the best of ~95 random logits being > 0) plain text.
    llama-cpp-python holds back an incomplete UTF-8 sequence without counting it against max_tokens,
    so a random byte model writing continuation bytes would never stop."""
    import torch

    keep = {chr(b) for b in range(0x21, 0x7F)} | {"\u0120"}  # "Ġ" = space; no newline: no stop rule cuts
    with torch.no_grad():
        for i, tok in enumerate(vocab):
            if len(tok) == 1 and tok not in keep:
                model.lm_head.weight[i].zero_()
    return model


def ring_base(vocab: list[str]):
    """A tiny base whose greedy output is a ring through the printable ASCII tokens (95 > the repetition
    detector's longest unit, 64): its layers add nothing to the residual stream (zero ``o_proj`` and
    ``down_proj``) and the output head maps each ring token's embedding to the next token. A long
    generation for the cancel tests (the random base falls into a loop within ~100 tokens)."""
    import torch

    model = make_tiny_llama(seed=SEED, vocab_size=len(vocab), hidden_size=64)
    keep = {chr(b) for b in range(0x21, 0x7F)} | {"\u0120"}
    ring = [i for i, tok in enumerate(vocab) if len(tok) == 1 and tok in keep]
    nxt = ring[1:] + ring[:1]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        model.lm_head.weight.zero_()
        model.lm_head.weight[nxt] = emb[ring]
        assert (torch.argmax(emb[ring] @ model.lm_head.weight.T, dim=1) == torch.tensor(nxt)).all()
    return model


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """A tiny GGUF base, its packs exported as GGUF adapters, and a llama server serving them."""
    from mole_lsp.export.bundle import export_packs_as_lora, gguf_file_name

    pytest.importorskip("llama_cpp.server.app")  # llama-cpp-python[server]
    gb = _gguf_base()
    root = tmp_path_factory.mktemp("remote")
    base = ascii_only(make_tiny_llama(seed=SEED, vocab_size=len(gb.tiny_gguf_vocab())), gb.tiny_gguf_vocab())
    gguf = gb.write_f32_gguf(root / "base.gguf", base)
    mole = attach_mole(base, MoleConfig(r_shared=4, r_expert=2, languages=LANGS))
    perturb(mole, seed=3, std=0.3)
    repo = export_packs(mole, root / "packs", BaseIdentity("tiny/remote", None, fingerprint_model(base)))
    out = root / "lora"
    export_packs_as_lora(repo / "core", {x: repo / "experts" / x for x in LANGS}, out, "gguf")
    adapters = {route: out / route / gguf_file_name(route) for route in ROUTES}
    nonloop = gb.write_f32_gguf(root / "ring.gguf", ring_base(gb.tiny_gguf_vocab()))
    server = LlamaServer(root, gguf, adapters, {NONLOOP: nonloop})
    yield root, gguf, adapters, server
    server.stop()


def direct(gguf: Path, lora: Path | None, prompt: str, max_tokens: int, stop: list[str] | None = None) -> str:
    """Greedy text of llama.cpp itself (no server) on the base with ``lora``."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), lora_path=str(lora) if lora else None, n_ctx=1024, n_batch=64, n_threads=1,
                verbose=False, seed=0)
    try:
        out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stop=stop, repeat_penalty=1.0)
        return out["choices"][0]["text"]
    finally:
        llm.close()


def test_served_names_map_to_routes():
    reg = load_registry()
    names = ["smollm2", "smollm2-python", "rust", "team/base_nl", "objective-c", "smollm2-code", "x:python"]
    table = match_routes(names, reg)
    # An exact name beats a suffix; "objective-c" is Objective-C when the registry has it, never C.
    assert table["python"] == "smollm2-python"  # the first of two suffix matches
    assert table["rust"] == "rust" and table["nl"] == "team/base_nl" and table[SHARED] == "smollm2-code"
    assert table[BASE] == "smollm2" and "c" not in table
    assert match_routes(names, reg, {"py": "mine", "base": "b"})["python"] == "mine"
    with pytest.raises(Exception, match="unknown language"):
        match_routes(names, reg, {"cobol-ish": "x"})


def test_settings_and_command_line(capsys):
    assert validate("backend", "openai") == ("openai", None)
    assert validate("remoteModels", {"python": "team-python"}) == ({"python": "team-python"}, None)
    assert "must map languages to model names" in validate("remoteModels", {"python": 1})[1]
    assert main(["complete", "x.py", "--line", "1", "--col", "1", "--backend", "openai"]) == 2
    assert "--backend openai is for `mole-lsp serve`" in capsys.readouterr().err
    with pytest.raises(UserError, match="needs an endpoint"):
        RemoteEngine("")


class ScriptedServer(http.server.ThreadingHTTPServer):
    """A stand-in OpenAI server whose "model" writes a fixed answer (a random tiny model never writes a
    fence): each request streams, one character per event, the part of ANSWER after what its prompt
    already holds, and is recorded as (model, prompt)."""

    ANSWER = "It sets x.\n```python\nx = 1\n```\nDone."
    PROMPT_END = "### Response\n"  # the plain layout's end (no local tokenizer, no chat template)

    # llama-server's adapter list (GET /lora-adapters), when it stands in for llama-server
    ADAPTERS = [{"id": 0, "path": "out/nl/mole-nl-lora.gguf", "scale": 0.0},
                {"id": 1, "path": "out/python/adapter.gguf", "scale": 0.0}]

    def __init__(self, llama_server: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.llama_server = llama_server
        self.requests: list[tuple[str, str]] = []  # (model, or "lora <id>" on llama-server; prompt)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _ScriptedHandler(http.server.BaseHTTPRequestHandler):
    server: ScriptedServer

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/lora-adapters":
            if not self.server.llama_server:
                return self.send_error(404)
            return self._send(json.dumps(ScriptedServer.ADAPTERS).encode())
        names = ["base.gguf"] if self.server.llama_server else ["tiny", "tiny-nl", "tiny-python"]
        self._send(json.dumps({"data": [{"id": m} for m in names]}).encode())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model = body["model"]
        if self.server.llama_server:
            assert model == "base.gguf" and sorted(a["id"] for a in body["lora"]) == [0, 1]
            model = " ".join(f"lora {a['id']}" for a in body["lora"] if a["scale"] == 1.0) or "base"
        self.server.requests.append((model, body["prompt"]))
        done = body["prompt"].split(ScriptedServer.PROMPT_END, 1)[1]
        assert ScriptedServer.ANSWER.startswith(done)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for ch in ScriptedServer.ANSWER[len(done):][: body["max_tokens"]]:
                self.wfile.write(b"data: " + json.dumps({"choices": [{"text": ch}]}).encode() + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b'data: {"choices": [{"text": "", "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n')
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client closed the stream at a fence

    def _send(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.mark.parametrize("llama_server", [False, True], ids=["adapters-by-name", "llama-server-lora-ids"])
def test_explain_switches_adapter_at_fences(llama_server):
    server = ScriptedServer(llama_server)
    try:
        engine = RemoteEngine(server.url)
        result = engine.explain("x = 1\n", "python", max_new_tokens=200)
        assert result.text == ScriptedServer.ANSWER and result.expert == "python"
        # One request per segment: prose (nl), the fenced code (python), prose again; each starts from the
        # prompt plus the answer so far, and the segment's adapter reads all of it.
        models = [m for m, _ in server.requests]
        nl, py = ("lora 0", "lora 1") if llama_server else ("tiny-nl", "tiny-python")
        assert models == [nl, py, nl]
        prompts = [p.split(ScriptedServer.PROMPT_END, 1)[1] for _, p in server.requests]
        assert prompts == ["", "It sets x.\n```python\n", "It sets x.\n```python\nx = 1\n```\n"]
        assert set(result.routes[:11]) == {"nl"} and "python" in result.routes
    finally:
        server.shutdown()


PY = "def fib(n):\n    if n < 2:\n        return n\n    return "
RS = "fn fib(n: u64) -> u64 {\n    if n < 2 {\n        return n;\n    }\n    "


async def served(cache: Path, server: LlamaServer, *, by_settings: bool = False, **options) -> Served:
    """``mole-lsp serve`` on the llama server: by command-line options, or by the editor's settings."""
    args = [] if by_settings else ["--backend", "openai", "--endpoint", server.url]
    if by_settings:
        options.update(backend="openai", endpoint=server.url + "/v1")
    s = Served(cache, args, server_env(cache))
    await s.start({"debounceMs": 0, **options})
    await s.ready()
    return s


async def test_completion_takes_the_adapter_of_the_document_language(world, tmp_path):
    root, gguf, adapters, server = world
    s = await served(tmp_path, server, maxNewTokens=12)
    try:
        assert s.statuses[-1]["state"] == "ready" and not s.statuses[-1]["baseOnly"]
        trace = await s.complete(s.open("a.py", "python", PY), 3, 11)
        assert trace["expert"] == "python" and trace["routes"] == ["python"] * trace["new_tokens"]
        want = {r: direct(gguf, adapters[r], PY, 12) for r in ("python", "rust")}
        assert want["python"] != want["rust"]  # the adapters write different text
        # Byte tokenizer (no local base): the prompt is the text before the cursor, as llama.cpp reads it.
        assert trace["text"] == want["python"] and trace["stop_reason"] == "max_tokens"
        trace = await s.complete(s.open("b.rs", "rust", RS), 4, 4)
        assert trace["expert"] == "rust" and trace["text"] == direct(gguf, adapters["rust"], RS, 12)
        status = await s.status()
        assert status["activeExpert"] == "rust" and status["vscodeLanguageId"] == "rust"
        # A language without an adapter on the server takes the shared code route.
        trace = await s.complete(s.open("c.go", "go", "package main\n"), 1, 0)
        assert trace["expert"] is None and set(trace["routes"]) == {"shared"}
        assert trace["text"] == direct(gguf, adapters[SHARED], "package main\n", 12)
    finally:
        await s.stop()


def _inline(uri: str, line: int, character: int) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked))


async def test_cancel_and_supersede_close_the_stream_upstream(world, tmp_path):
    root, gguf, adapters, server = world
    # The python route served by the ring base (remoteModels): 900 tokens unless the stream is closed.
    s = await served(tmp_path, server, by_settings=True, maxNewTokens=900, multiLineTimeMs=0,
                     remoteModels={"python": NONLOOP})
    try:
        uri = s.open("long.py", "python", PY)
        # $/cancelRequest while the server streams: the stream is closed, the server stops generating.
        posts, dropped = server.posts(), server.dropped()
        first = asyncio.ensure_future(s.client.text_document_inline_completion_async(_inline(uri, 3, 11)))
        await until(lambda: server.posts() > posts, 20, "the upstream request")
        (msg_id,) = list(s.client.protocol._request_futures)
        s.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
        await until(lambda: server.dropped() > dropped, 20, "the llama server to see the stream closed")
        await asyncio.wait([first], timeout=10)
        assert isinstance(first.exception(), JsonRpcRequestCancelled)
        # A newer request for the document supersedes the running one: its stream is closed too.
        posts, dropped, n = server.posts(), server.dropped(), len(s.traces)
        older = asyncio.ensure_future(s.client.text_document_inline_completion_async(_inline(uri, 3, 11)))
        await until(lambda: server.posts() > posts, 20, "the upstream request")
        newer = await s.client.text_document_inline_completion_async(_inline(uri, 2, 8))
        assert server.dropped() == dropped + 1  # the older stream was closed before the newer one began
        assert not (await older).items and newer.items
        runs = [t for t in s.traces[n:] if t.get("started")]
        assert runs[0]["superseded"] and runs[0]["stop_reason"] == "cancelled" and runs[0]["new_tokens"] < 900
    finally:
        await s.stop()


def test_the_base_tokenizer_cuts_the_prompt_as_the_local_engine_does(world):
    """With the base on this machine (here the GGUF file) its tokenizer builds the local engine's prompt."""
    from mole_lsp.engine.prompts import completion_prompt
    from mole_lsp.engine.remote import open_remote

    root, gguf, adapters, server = world
    engine = open_remote({"endpoint": server.url + "/v1", "base_model": str(gguf)})
    assert engine.tokenizer is not None
    long = "".join(f"x{i} = {i}\n" for i in range(40)) + PY  # far over 64 tokens
    result = engine.complete(long, "", "python", max_new_tokens=8, context_tokens=64)
    prompt = completion_prompt(engine.tokenizer, long, "", "python", 64)
    text = engine.tokenizer.decode(prompt.ids)
    assert len(prompt.ids) <= 64 and len(text) < len(long) and long.endswith(text)
    assert result.text == direct(gguf, adapters["python"], text, 8) and result.expert == "python"


def test_a_loop_stops_the_stream_upstream(world):
    """The random base falls into loops: each answer stops with ``repetition``, its stream closed."""
    root, gguf, adapters, server = world
    engine = RemoteEngine(server.url)
    dropped = server.dropped()
    result = engine.complete(PY, "", "python", max_new_tokens=600)
    assert result.stop_reason == "repetition" and result.new_tokens < 600
    # The text before the loop plus one copy of its unit: a prefix of what llama.cpp writes on.
    full = direct(gguf, adapters["python"], PY, 600)
    assert full.startswith(result.text) and len(full) > len(result.text) + 20
    deadline = time.monotonic() + 10
    while server.dropped() == dropped and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.dropped() == dropped + 1  # the server saw the stream closed and stopped generating
    for other in (engine.explain("x = 1\n", "python", max_new_tokens=600),
                  engine.translate("x = 1\n", "python", "rust", max_new_tokens=600)):
        assert other.stop_reason == "repetition" and other.new_tokens < 600
