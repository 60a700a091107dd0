"""Server benchmark (not a test): overhead per inline completion, an edit storm, memory after many requests.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_server.py [--model tiny|smollm2] [--requests 1000]

Starts the real server (``python -m mole_lsp serve``) as a subprocess and drives it with pygls' LSP
client over stdio, the same way an editor does. The server reports each generation's own timings with
``mole/trace`` (MOLE_LSP_TRACE=1), so

- *overhead* = latency the client sees - the engine's total time for that generation (goal <= 20 ms);
- *edit storm*: 50 didChange + inlineCompletion pairs in 2 s with the default debounce -> generations
  actually run (goal <= 3) and the latency of the last request;
- *RSS* of the server process after ``--requests`` completions.

``--model tiny`` (default) uses the random tiny Llama with tiny packs of the test suite (measures the
server, not the model); ``--model smollm2`` uses ../shared/models/smollm2-135m-instruct (base only).
Prints a table and appends it, with the exact command, to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from lsprotocol import types  # noqa: E402
from pytest_lsp.client import make_test_lsp_client  # noqa: E402

SHARED_SMOLLM2 = ROOT.parent / "shared" / "models" / "smollm2-135m-instruct"


def _plain(obj: Any) -> Any:
    if hasattr(obj, "_asdict"):
        return {k: _plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "__dict__"):
        return {k: _plain(v) for k, v in vars(obj).items()}
    return obj


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Bench:
    def __init__(self, cmd: list[str], env: dict[str, str], options: dict[str, Any], docs: Path) -> None:
        self.cmd, self.env, self.options, self.docs = cmd, env, options, docs
        self.traces: list[dict[str, Any]] = []
        self.client = make_test_lsp_client()
        self.version = 1

        @self.client.feature("mole/trace")
        def on_trace(params: Any) -> None:
            self.traces.append(_plain(params))

        @self.client.feature("mole/status")
        def on_status(params: Any) -> None:
            pass

    async def start(self) -> None:
        await self.client.start_io(*self.cmd, env=self.env)
        caps = types.ClientCapabilities(text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities()))
        await self.client.initialize_session(types.InitializeParams(capabilities=caps,
                                                                    initialization_options=self.options))

    @property
    def pid(self) -> int:
        return self.client._server.pid  # type: ignore[union-attr]

    def open(self, name: str, text: str) -> str:
        uri = (self.docs / name).as_uri()
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
        return uri

    def type_char(self, uri: str, line: int, col: int, ch: str) -> None:
        self.version += 1
        pos = types.Position(line=line, character=col)
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.version),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos), text=ch)]))

    def inline(self, uri: str, line: int, col: int):
        return self.client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=col),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))

    def configure(self, **settings: Any) -> None:
        self.client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"mole": settings}))

    async def stop(self) -> None:
        await self.client.shutdown_session()
        await self.client.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mole-bench-"))
    (tmp / "docs").mkdir()
    if args.model == "tiny":
        import conftest  # noqa: F401  (tiny Llama factory)
        from lsp_fixtures import build_tiny_world

        world = build_tiny_world(tmp / "world")
        base, packs = str(world.base_dir), str(world.packs_dir)
    else:
        if not SHARED_SMOLLM2.exists():
            raise SystemExit(f"{SHARED_SMOLLM2} not found")
        base, packs = str(SHARED_SMOLLM2), str(tmp / "no-packs")
    cmd = [sys.executable, "-m", "mole_lsp", "serve", "--base-model", base, "--pack-repo", packs,
           "--cache-dir", str(tmp / "cache"), "--device", "cpu"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "MOLE_LSP_TRACE": "1", "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    b = Bench(cmd, env, {"debounceMs": 0, "maxNewTokens": args.max_new_tokens}, tmp / "docs")
    t0 = time.perf_counter()
    await b.start()
    text = "def fib(n):\n    if n < 2:\n        return n\n    return "
    uri = b.open("fib.py", text)
    await b.inline(uri, 3, 11)  # loads the model and the expert
    startup = time.perf_counter() - t0

    # 1. overhead per completion beyond model time
    overheads, latencies = [], []
    for _ in range(args.overhead_requests):
        n = len(b.traces)
        t = time.perf_counter()
        await b.inline(uri, 3, 11)
        lat = (time.perf_counter() - t) * 1e3
        while len(b.traces) == n:
            await asyncio.sleep(0.001)
        model_ms = b.traces[-1]["timings"]["total"]
        latencies.append(lat)
        overheads.append(lat - model_ms)

    # 2. edit storm with the default debounce
    b.configure(debounceMs=150)
    await asyncio.sleep(0.2)
    n = len(b.traces)
    storm_uri = b.open("storm.py", "x = ")
    pending = []
    t_storm = time.perf_counter()
    for i in range(50):
        b.type_char(storm_uri, 0, 4 + i, "a")
        sent = time.perf_counter()
        pending.append((sent, asyncio.ensure_future(b.inline(storm_uri, 0, 5 + i))))
        await asyncio.sleep(2.0 / 50)
    sent_last, last = pending[-1]
    await last
    last_latency = (time.perf_counter() - sent_last) * 1e3
    await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
    storm_s = time.perf_counter() - t_storm
    await asyncio.sleep(0.3)
    storm_runs = [t for t in b.traces[n:] if t.get("started")]

    # 3. RSS after many requests
    b.configure(debounceMs=0, maxNewTokens=1)
    await asyncio.sleep(0.2)
    rss_before = _rss_mb(b.pid)
    t_many = time.perf_counter()
    for i in range(args.requests):
        await b.inline(uri, 3, 11 if i % 2 else 4)
    many_s = time.perf_counter() - t_many
    rss_after = _rss_mb(b.pid)
    await b.stop()
    return {
        "model": args.model, "startup_s": startup,
        "overhead_ms_median": statistics.median(overheads), "overhead_ms_p90": sorted(overheads)[int(0.9 * len(overheads))],
        "latency_ms_median": statistics.median(latencies),
        "storm_generations": len(storm_runs), "storm_last_latency_ms": last_latency, "storm_s": storm_s,
        "rss_mb_before": rss_before, "rss_mb_after": rss_after, "requests": args.requests,
        "requests_per_s": args.requests / many_s,
    }


def table(r: dict[str, Any]) -> str:
    rows = [
        ("server overhead per inline completion, median (goal <= 20 ms)", f"{r['overhead_ms_median']:.1f} ms"),
        ("server overhead, p90", f"{r['overhead_ms_p90']:.1f} ms"),
        ("inline completion latency, median", f"{r['latency_ms_median']:.1f} ms"),
        ("edit storm: generations run for 50 edits in 2 s (goal <= 3)", f"{r['storm_generations']}"),
        ("edit storm: latency of the last request", f"{r['storm_last_latency_ms']:.0f} ms"),
        (f"RSS before / after {r['requests']} requests", f"{r['rss_mb_before']:.0f} / {r['rss_mb_after']:.0f} MB"),
        ("requests per second (1-token completions)", f"{r['requests_per_s']:.1f}"),
        ("startup to first completion", f"{r['startup_s']:.1f} s"),
    ]
    width = max(len(a) for a, _ in rows)
    lines = [f"| {'measure':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {a:<{width}} | {b} |" for a, b in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--overhead-requests", type=int, default=30)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-append", action="store_true", help="do not append to bench/RESULTS.md")
    args = p.parse_args()
    result = asyncio.run(run(args))
    text = table(result)
    print(text)
    if not args.no_append:
        command = "OMP_WAIT_POLICY=PASSIVE python " + " ".join(shlex.quote(a) for a in sys.argv)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        header = (f"\n## bench_server ({result['model']} model) — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
                  f"`{command}`  \nmachine: {os.cpu_count()} CPUs, load average {load:.1f}, "
                  f"python {platform.python_version()}\n\n")
        with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(header + text + "\n")


if __name__ == "__main__":
    main()
