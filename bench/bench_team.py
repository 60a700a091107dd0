"""Many editors against one OpenAI-compatible server through ``mole-lsp serve --backend openai`` (not a test).

    OMP_WAIT_POLICY=PASSIVE python bench/bench_team.py [--editors 50] [--seconds 60] [--endpoint URL
        --server-log FILE] [--keystroke-ms 150] [--debounce-ms 150] [--max-new-tokens 24]
    OMP_WAIT_POLICY=PASSIVE python bench/bench_team.py --approximation

Each simulated editor is one ``mole-lsp serve --backend openai`` subprocess (as each real editor runs its
own) driven by an LSP client: it opens a source file (python, rust or javascript in turn) and replays
typing it for ``--seconds``: one character every ``--keystroke-ms`` (jittered), an inline completion
request after each, without waiting for the previous answer (the server supersedes the older request of
the document, whose upstream stream is closed). Without ``--endpoint`` a llama-cpp-python server
(``python -m llama_cpp.server``) is started on loopback with a tiny F32 GGUF base and the GGUF adapters
``mole-lsp export`` wrote for it (one served name per route, as the export's README says).

Reported: requests, answers with text, empty answers, errors, requests still unanswered when an editor
stopped, p50/p90/max latency of the answers (request to response, debounce included), and the upstream
side from the llama server's own log: completions it accepted (its access log), streams it stopped
because the client went away (its ``Disconnected from client``). llama-cpp-python's server has no
metrics endpoint, and a request whose client leaves while it waits for the model (the server runs one
at a time) leaves no line, so the server started here is ``python -m llama_cpp.server`` run through
:func:`serve_llama`, which also logs every generation the model starts and how it ends: ran to its
end, or stopped early because its stream was closed, with the tokens streamed. The load average is
sampled every 5 s during the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "export"), str(ROOT / "tests" / "server")]

from lsprotocol import types  # noqa: E402

LANGS = ("python", "rust", "javascript")
FILES = {
    "python": ("a.py", "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total / len(xs)\n"),
    "rust": ("a.rs", "fn mean(xs: &[f64]) -> f64 {\n    let total: f64 = xs.iter().sum();\n    total / xs.len() as f64\n}\n"),
    "javascript": ("a.js", "function mean(xs) {\n  let total = 0;\n  for (const x of xs) total += x;\n  return total / xs.length;\n}\n"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama_server(root: Path) -> tuple[subprocess.Popen, str, Path]:
    """A tiny GGUF base, synthetic packs exported as GGUF adapters, served by llama-cpp-python."""
    import httpx
    import torch
    from gguf_base import tiny_gguf_vocab, write_f32_gguf
    from helpers import make_tiny_llama, perturb

    from mole_lsp.core.config import MoleConfig
    from mole_lsp.core.model import attach_mole
    from mole_lsp.export.bundle import export_packs_as_lora, gguf_file_name
    from mole_lsp.packs.format import BaseIdentity, export_packs, fingerprint_model

    vocab = tiny_gguf_vocab()
    base = make_tiny_llama(seed=21, vocab_size=len(vocab))
    with torch.no_grad():  # printable ASCII and space only (see tests/server/test_remote_backend.py)
        keep = {chr(b) for b in range(0x21, 0x7F)} | {"\u0120", "\u010a"}
        for i, tok in enumerate(vocab):
            if len(tok) == 1 and tok not in keep:
                base.lm_head.weight[i].zero_()
    gguf = write_f32_gguf(root / "base.gguf", base)
    mole = attach_mole(base, MoleConfig(r_shared=4, r_expert=2, languages=LANGS))
    perturb(mole, seed=3, std=0.3)
    repo = export_packs(mole, root / "packs", BaseIdentity("tiny/team", None, fingerprint_model(base)))
    out = root / "lora"
    export_packs_as_lora(repo / "core", {x: repo / "experts" / x for x in LANGS}, out, "gguf")
    port = _free_port()
    common = {"model": str(gguf), "n_ctx": 1024, "n_threads": 1, "n_batch": 64, "verbose": False}
    models = [{**common, "model_alias": "tiny-base"}]
    models += [{**common, "model_alias": f"tiny-{r}", "lora_path": str(out / r / gguf_file_name(r))}
               for r in (*LANGS, "nl", "code")]
    config = root / "llama-server.json"
    # interrupt_requests off: a waiting request must not end the running stream (only our cancel may)
    config.write_text(json.dumps({"host": "127.0.0.1", "port": port, "models": models, "interrupt_requests": False}))
    log = root / "llama-server.log"
    proc = subprocess.Popen([sys.executable, __file__, "--serve-llama", str(config)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"the llama server did not start: {log.read_text()[-2000:]}")


HOOK = "bench-team generation"  # the lines serve_llama writes to the llama server's log


def serve_llama(config: str) -> None:
    """``python -m llama_cpp.server --config_file CONFIG``, logging each streamed generation the model
    starts (``HOOK started``) and how it ends (``HOOK finished|stopped tokens=N``): the generator is
    closed (stopped) when the server drops a stream whose client went away."""
    import llama_cpp
    from llama_cpp.server.__main__ import main as server_main

    call = llama_cpp.Llama.__call__

    def say(line: str) -> None:  # one write: the server's worker threads and its access log share stdout
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def counted(chunks: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        n, finished = 0, False
        say(f"{HOOK} started")
        try:
            for chunk in chunks:
                n += 1  # the server streams one chunk per token
                finished = finished or bool(chunk["choices"][0].get("finish_reason"))
                yield chunk
        finally:
            say(f"{HOOK} {'finished' if finished else 'stopped'} tokens={n}")

    def llama_call(self: Any, *a: Any, **kw: Any) -> Any:
        out = call(self, *a, **kw)
        return counted(out) if kw.get("stream") else out

    llama_cpp.Llama.__call__ = llama_call  # the server looks it up per request
    sys.argv = ["llama_cpp.server", "--config_file", config]
    server_main()


def upstream_counts(log: Path | None) -> dict[str, int]:
    """What the llama server's log says so far."""
    text = log.read_text(errors="replace") if log else ""
    # found anywhere in a line: the server's threads may still write into each other's lines
    hooks = re.findall(rf"{HOOK} (started|finished|stopped)(?: tokens=(\d+))?", text)
    return {"accepted": text.count('"POST /v1/completions'), "disconnected": text.count("Disconnected from client"),
            "started": sum(k == "started" for k, _ in hooks), "finished": sum(k == "finished" for k, _ in hooks),
            "stopped": sum(k == "stopped" for k, _ in hooks),
            "stopped_tokens": sum(int(n) for k, n in hooks if k == "stopped")}


async def editor(n: int, url: str, cache: Path, args: argparse.Namespace, stats: dict[str, Any],
                 starting: asyncio.Semaphore, eds: list[Any]) -> None:
    """One editor: its server started, ``args.seconds`` of typing, its last answers awaited (run() stops
    the servers, after the counts are taken)."""
    from serve_client import Served, server_env

    lang = LANGS[n % len(LANGS)]
    name, text = FILES[lang]
    ed = Served(cache, ["--backend", "openai", "--endpoint", url], server_env(cache))
    eds.append(ed)
    async with starting:  # 50 servers importing at once on 2 cores would each take minutes to load
        await ed.start({"debounceMs": args.debounce_ms, "maxNewTokens": args.max_new_tokens})
        await ed.ready(timeout=300)
    rng = random.Random(n)
    pending: set[asyncio.Task[None]] = set()
    uri = (cache / "docs" / name).as_uri()
    ed.client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=lang, version=1, text="")))
    typed, version, line, col = "", 1, 0, 0
    stats["ready"] += 1
    await stats["start"].wait()
    deadline = time.monotonic() + args.seconds

    async def ask(line: int, col: int) -> None:
        t0 = time.perf_counter()
        stats["requests"] += 1
        try:
            result = await ed.client.text_document_inline_completion_async(types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=col),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
        except Exception as e:  # noqa: BLE001 - counted
            stats["errors"] += 1
            stats["error_kinds"][type(e).__name__] = stats["error_kinds"].get(type(e).__name__, 0) + 1
            return
        items = result.items if result is not None else []
        if items:
            stats["latencies"].append(time.perf_counter() - t0)
        else:
            stats["empty"] += 1

    while time.monotonic() < deadline:
        ch = text[len(typed) % len(text)]
        if len(typed) and len(typed) % len(text) == 0:  # start the file over
            typed, line, col = "", 0, 0
            version += 1
            ed.client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text="")]))
        version += 1
        ed.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(start=types.Position(line=line, character=col),
                                  end=types.Position(line=line, character=col)), text=ch)]))
        typed += ch
        line, col = (line + 1, 0) if ch == "\n" else (line, col + 1)
        task = asyncio.ensure_future(ask(line, col))
        pending.add(task)
        task.add_done_callback(pending.discard)
        await asyncio.sleep(args.keystroke_ms / 1000 * rng.uniform(0.5, 1.5))
    if pending:
        await asyncio.wait(pending, timeout=30)
    stats["unanswered"] += len(pending)
    stats["superseded"] += sum(1 for t in ed.traces if t.get("stop_reason") in ("superseded", "cancelled"))


async def stop_all(eds: list[Any]) -> int:
    """Stop every editor's server (killed when it has not exited in time); returns how many were killed."""
    done = await asyncio.gather(*(ed.stop(timeout=120) for ed in eds), return_exceptions=True)
    return sum(isinstance(r, BaseException) for r in done)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-team-"))
    proc = None
    if args.endpoint:
        url, log = args.endpoint, Path(args.server_log) if args.server_log else None
    else:
        proc, url, log = start_llama_server(root)

    stats: dict[str, Any] = {"requests": 0, "empty": 0, "errors": 0, "error_kinds": {}, "latencies": [],
                             "superseded": 0, "unanswered": 0, "ready": 0, "start": asyncio.Event()}
    for i in range(args.editors):
        (root / f"ed{i}").mkdir()
    starting = asyncio.Semaphore(args.start_at_once)
    eds: list[Any] = []
    tasks = [asyncio.ensure_future(editor(i, url, root / f"ed{i}", args, stats, starting, eds))
             for i in range(args.editors)]
    try:
        t_start = time.monotonic()
        while stats["ready"] < args.editors:
            if any(t.done() and t.exception() for t in tasks):
                raise next(t.exception() for t in tasks if t.done() and t.exception())  # type: ignore[misc]
            await asyncio.sleep(0.2)
        startup = time.monotonic() - t_start
        before = upstream_counts(log)
        t0 = time.monotonic()
        stats["start"].set()
        loads: list[float] = []
        run_all = asyncio.gather(*tasks)
        while not run_all.done():
            loads.append(os.getloadavg()[0])
            await asyncio.wait([run_all], timeout=5)
        await run_all
        wall = time.monotonic() - t0
        await asyncio.sleep(2)  # the server's last lines
        after = upstream_counts(log)
    finally:  # no server outlives the run, whatever happened
        for t in tasks:
            t.cancel()
        killed = await stop_all(eds)
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    lat = sorted(stats["latencies"])

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3 if lat else float("nan")

    return {"editors": args.editors, "seconds": args.seconds, "startup_s": round(startup, 1), "wall_s": round(wall, 1),
            "requests": stats["requests"], "answers": len(lat), "empty": stats["empty"], "errors": stats["errors"],
            "unanswered": stats["unanswered"], "error_kinds": stats["error_kinds"], "p50_ms": round(pct(0.5)),
            "p90_ms": round(pct(0.9)), "max_ms": round(pct(1.0)),
            "mean_ms": round(statistics.mean(lat) * 1e3) if lat else None,
            "superseded_or_cancelled": stats["superseded"], "servers_killed_at_stop": killed,
            "upstream": {k: after[k] - before[k] for k in after},
            "load_avg_1m": {"mean": round(statistics.mean(loads), 1) if loads else None,
                            "max": round(max(loads), 1) if loads else None, "end": os.getloadavg()}}


def approximation() -> dict[str, Any]:
    """How far the segment-by-segment explanation is from mole-lsp's own routing, on a tiny random model
    (4 layers, attention weights at std 0.3 so positions mix, PiSSA-initialised adapters perturbed at std
    0.1): an explanation prompt plus an answer with a fenced block, teacher
    forced. Exact: every position takes its own label's route. Segment: the logits that pick token t+1
    come from a forward where EVERY position takes the route of position t's label (what one served
    adapter per request computes). Reported per segment kind: median and max relative logit difference
    and the share of positions whose greedy token agrees."""
    import torch
    from helpers import make_tiny_llama, perturb
    from lsp_fixtures import make_tokenizer

    from mole_lsp.core.config import MoleConfig
    from mole_lsp.core.model import attach_mole
    from mole_lsp.engine.prompts import explain_prompt
    from mole_lsp.lang.detok import token_labels

    tok = make_tokenizer()
    model = make_tiny_llama(seed=5, vocab_size=len(tok), num_hidden_layers=4)
    with torch.no_grad():  # the tests' tiny model barely attends (init std 0.02): positions would not mix
        for name, p in model.named_parameters():
            if "self_attn" in name:
                p.normal_(0, 0.3)
    mole = attach_mole(model, MoleConfig(r_shared=4, r_expert=2, languages=LANGS))
    perturb(mole, seed=6, std=0.1)
    code = "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n"
    prompt = explain_prompt(tok, code, "python")
    answer = "It computes Fibonacci numbers.\n```python\nprint(fib(10))\n```\nIt prints 55.\n"
    ids, labels = token_labels(tok, (prompt.text or "") + answer)
    start = len(prompt.ids) - 1  # the logits of the last prompt position pick the first answer token
    x = torch.tensor([ids])
    with torch.no_grad():
        exact = mole(input_ids=x, route_ids=mole.route_ids(labels)[None]).logits[0]
        per_label = {lb: mole(input_ids=x, route_ids=mole.route_ids([lb] * len(ids))[None]).logits[0]
                     for lb in ("nl", "python")}
    rows: dict[str, list[tuple[float, bool]]] = {}
    for t in range(start, len(ids) - 1):
        kind = "nl" if labels[t] == "nl" else "code"
        # segment: the position's own route everywhere; reference: the OTHER route everywhere (a wrong
        # adapter for the position itself), to give the segment's difference a scale
        for what, lb in (("segment", labels[t]), ("wrong_adapter", "python" if kind == "nl" else "nl")):
            got = per_label[lb][t]
            rel = float((got - exact[t]).norm() / exact[t].norm())
            rows.setdefault(f"{kind}/{what}", []).append((rel, bool(got.argmax() == exact[t].argmax())))
    return {key: {"positions": len(r), "median_rel": round(statistics.median(a for a, _ in r), 4),
                  "max_rel": round(max(a for a, _ in r), 4),
                  "greedy_agree": round(sum(b for _, b in r) / len(r), 3)} for key, r in rows.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--editors", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--endpoint", help="an OpenAI-compatible server to use instead of starting one")
    p.add_argument("--server-log", help="with --endpoint: its log, for the upstream counts")
    p.add_argument("--keystroke-ms", type=float, default=150)
    p.add_argument("--debounce-ms", type=int, default=150)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--start-at-once", type=int, default=2, help="editors' servers starting at the same time")
    p.add_argument("--serve-llama", metavar="CONFIG", help=argparse.SUPPRESS)  # the llama server process
    p.add_argument("--approximation", action="store_true", help="only measure how far a served adapter per "
                   "explanation segment is from per-position routing (tiny model)")
    args = p.parse_args()
    if args.serve_llama:
        return serve_llama(args.serve_llama)
    print(json.dumps(approximation() if args.approximation else asyncio.run(run(args)), indent=1))


if __name__ == "__main__":
    main()
