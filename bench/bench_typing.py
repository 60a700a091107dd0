"""Replayed typing (not a test): how often, how fast and how well ghost text shows while someone types.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_typing.py [--languages python,go,rust,javascript]
        [--files 2] [--lines 4] [--cps 8] [--context 1024] [--packs DIR] [--anchor]

A simulated user retypes ``--lines`` lines of real source files of this machine (CPython's stdlib, Go's
own source, Debian's Rust crates and Node packages), character by character at about ``--cps`` characters
per second on average (seeded log-normal key intervals, short pauses after some words, a pause at each line end; a new line arrives with its indentation, as an
editor's auto-indent writes it). Every keystroke goes to the real server subprocess exactly as VS Code
sends it: an incremental ``didChange``, then ``textDocument/inlineCompletion``; the request of the
previous keystroke is cancelled with ``$/cancelRequest`` when it has not been answered yet. The server's
own debounce (``debounceMs``) applies.

Per keystroke: a suggestion is *shown* when a non-empty answer arrives before the next keystroke; its
*latency* is last keystroke -> answer minus the debounce (an answer faster than the debounce, served
without it, counts whole); its *predicted characters* are the longest
common prefix of the suggestion and what the user then typed (and the file's following text).

Configurations, all in the same run and over the same replay:

- ``base only``: the GGUF base, no packs;
- ``core + expert``: the same base with the core and the document's expert from ``--packs`` (a pack
  repository folder, e.g. the export of ``python -m training.finetune``);
- each of them once per ``--backends`` value (the server's ``backend`` setting: auto, torch, llamacpp);
- ``anchor`` (``--anchor``): llama-cpp-python's OpenAI-compatible server on the same GGUF, which keeps its
  KV cache and reuses the longest common prefix of consecutive prompts; the client debounces as our
  server does, sends the text of the very prompt our server builds (``completion_prompt``: the same
  budget and the same stable start, so both sides can reuse their caches alike), stops at the line end
  when code follows the cursor on its line, and cancels superseded requests by closing the stream.

Prints one table (p50/p90 latency, share of keystrokes with a suggestion, predicted characters per
keystroke; and apart, the suggestions that ran the model, i.e. not answered by typed-ahead reuse) with ratios against the anchor, and appends it with the exact command to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
GGUF = ROOT.parent / "shared" / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"

from bench_server import Bench, _rss_mb  # noqa: E402
from lsprotocol import types  # noqa: E402
from pygls.exceptions import JsonRpcRequestCancelled  # noqa: E402

from mole_lsp.engine.prompts import completion_prompt  # noqa: E402

# language id -> (VS Code languageId, glob patterns of real files on this machine)
SOURCES: dict[str, tuple[str, list[str]]] = {
    "python": ("python", [f"{sys.base_prefix}/lib/python3*/*.py", f"{sys.base_prefix}/lib/python3*/*/*.py"]),
    "go": ("go", ["/usr/lib/go/src/*/*.go", "/usr/lib/go/src/*/*/*.go", "/usr/share/go-*/src/*/*/*.go"]),
    "rust": ("rust", ["/usr/share/cargo/registry/*/src/*.rs", "/usr/share/cargo/registry/*/src/*/*.rs"]),
    "javascript": ("javascript", ["/usr/lib/node_modules/npm/lib/*/*.js",
                                  "/usr/lib/node_modules/npm/node_modules/*/lib/*.js", "/usr/share/nodejs/*/lib/*.js"]),
}
PAUSE_AT_LINE_END_S = 0.6  # a user looks at the next line before typing it


@dataclass
class Key:
    """One edit of the replay: insert ``text`` at (line, col); ``truth`` = what follows in the real file."""

    at: float  # seconds from the start of the file's replay
    line: int
    col: int  # UTF-16 units
    text: str
    truth: str


@dataclass
class Replay:
    language: str
    vscode_id: str
    name: str
    suffix: str  # the file's extension, for the document URI
    start_text: str  # the document when opened (the retyped lines removed)
    keys: list[Key] = field(default_factory=list)


def _utf16(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def pick_files(language: str, n: int, rng: random.Random, min_prefix_chars: int) -> list[Path]:
    pats = SOURCES[language][1]
    files = sorted({p for pat in pats for p in glob.glob(pat)})
    good = []
    for p in files:
        try:
            text = Path(p).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        lines = text.splitlines()
        # Real, hand-written code: long enough for a full context, no minified lines, no generated files.
        if len(text) > min_prefix_chars + 4000 and max(map(len, lines)) < 160 and "DO NOT EDIT" not in text[:2000]:
            good.append(Path(p))
    rng.shuffle(good)
    return good[:n]


def build_replay(path: Path, language: str, n_lines: int, cps: float, rng: random.Random,
                 min_prefix_chars: int) -> Replay:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    # The retyped block: n_lines consecutive non-blank lines after at least min_prefix_chars of prefix.
    starts = []
    total = 0
    for i, ln in enumerate(lines):
        if total >= min_prefix_chars and i + n_lines < len(lines) and \
                all(_is_code(lines[j]) for j in range(i, i + n_lines)):
            starts.append(i)
        total += len(ln)
    k = rng.choice(starts)
    block = [ln.rstrip("\n") for ln in lines[k:k + n_lines]]
    indent0 = block[0][: len(block[0]) - len(block[0].lstrip())]
    after = "".join(lines[k + n_lines:])
    # The document opens with the block's lines gone and the cursor on an indented empty line.
    start_text = "".join(lines[:k]) + indent0 + "\n" + after
    replay = Replay(language, SOURCES[language][0], f"{path.parent.name}/{path.name}:{k + 1}", path.suffix,
                    start_text)
    t, line, col = 0.0, k, _utf16(indent0)
    for bi, ln in enumerate(block):
        body = ln[len(ln) - len(ln.lstrip()):] if bi else ln[len(indent0):]
        rest_of_block = "\n".join([body] + block[bi + 1:])
        for ci, ch in enumerate(body):
            t += _interval(ch, cps, rng)
            replay.keys.append(Key(t, line, col, ch, rest_of_block[ci + 1:] + "\n" + after))
            col += _utf16(ch)
        if bi + 1 < len(block):
            nxt = block[bi + 1]
            ind = nxt[: len(nxt) - len(nxt.lstrip())]
            t += PAUSE_AT_LINE_END_S
            truth = "\n".join([nxt.lstrip()] + block[bi + 2:]) + "\n" + after
            replay.keys.append(Key(t, line, col, "\n" + ind, truth))
            line, col = line + 1, _utf16(ind)
    return replay


_STRING = re.compile(r"\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'")
_COMMENT = re.compile(r"(#|//).*$")


def _is_code(line: str) -> bool:
    """A line someone writes, not an entry of a data table: a word of 3+ letters outside strings and
    comments, and more than a brace."""
    bare = _COMMENT.sub("", _STRING.sub("", line)).strip()
    return len(bare) > 3 and re.search(r"[A-Za-z_]{3,}", bare) is not None


def _interval(ch: str, cps: float, rng: random.Random) -> float:
    """Seconds before typing ``ch``: log-normal key intervals (as measured typing is) plus short pauses
    after words, scaled so that the mean speed is ``cps`` characters per second."""
    # E[lognormal(mu, 0.6)] = exp(mu + 0.18); the word pauses add 0.15 * 0.65 s every ~6 characters.
    mean_key = max(0.01, 1 / cps - 0.15 * 0.65 / 6)
    t = rng.lognormvariate(math.log(mean_key) - 0.18, 0.6)
    if ch in " ,.;:()[]{}" and rng.random() < 0.15:
        t += rng.uniform(0.3, 1.0)
    return t


def common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class Outcome:
    shown: bool
    latency_ms: float | None
    predicted: int
    ran_model: bool = True  # False: answered faster than the debounce (typed-ahead reuse)


class LspUser(Bench):
    """Types into the real mole-lsp server subprocess as VS Code does (started and stopped by
    bench_server's client, which registers the same notifications)."""

    def __init__(self, cmd: list[str], env: dict[str, str], options: dict[str, Any], docs: Path) -> None:
        super().__init__(cmd, env, options, docs)
        self.debounce_s = options.get("debounceMs", 150) / 1000

    async def replay(self, r: Replay, warm: bool = True) -> list[Outcome]:
        uri = (self.docs / f"{r.language}-{abs(hash(r.name))}{r.suffix}").as_uri()
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=r.vscode_id, version=1, text=r.start_text)))
        version = 1
        if warm:  # the user opened the file a moment ago: model and expert are loaded
            k = r.keys[0]
            await self._request(uri, k.line, k.col, "warm")
        outcomes: list[Outcome] = []
        pending: tuple[asyncio.Task[Any], str] | None = None
        t0 = time.perf_counter()
        for i, k in enumerate(r.keys):
            await asyncio.sleep(max(0.0, t0 + k.at - time.perf_counter()))
            if pending is not None and not pending[0].done():
                self.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=pending[1]))
            version += 1
            pos = types.Position(line=k.line, character=k.col)
            self.client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=pos, end=pos),
                                                                        text=k.text)]))
            lines = k.text.split("\n")
            line = k.line + len(lines) - 1
            col = (k.col if len(lines) == 1 else 0) + _utf16(lines[-1])
            msg_id = f"k{i}-{uri[-12:]}"
            sent = time.perf_counter()
            task = asyncio.ensure_future(self._request(uri, line, col, msg_id))
            task.add_done_callback(_quiet)
            pending = (task, msg_id)
            deadline = t0 + r.keys[i + 1].at if i + 1 < len(r.keys) else sent + 30
            outcomes.append(await _outcome(task, sent, deadline, self.debounce_s, k.truth))
        self.client.text_document_did_close(types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))
        return outcomes

    async def _request(self, uri: str, line: int, col: int, msg_id: str) -> str:
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=col),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))
        res = await self.client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params,
                                                            msg_id=msg_id)
        items = getattr(res, "items", None) or []
        return items[0].insert_text if items else ""


async def _outcome(task: asyncio.Task[Any], sent: float, deadline: float, debounce_s: float,
                   truth: str) -> Outcome:
    """Wait for the answer until the next keystroke is due; then score it."""
    try:
        text = await asyncio.wait_for(asyncio.shield(task), timeout=max(0.0, deadline - time.perf_counter()))
    except TimeoutError:
        return Outcome(False, None, 0)
    except Exception as e:  # cancelled by the server (superseded); anything else is said
        if not isinstance(e, (asyncio.CancelledError, JsonRpcRequestCancelled)):
            print(f"request failed: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
        return Outcome(False, None, 0)
    raw = time.perf_counter() - sent
    # An answer faster than the debounce was served without it (typed-ahead reuse): count it whole.
    latency = (raw - debounce_s if raw > debounce_s else raw) * 1e3
    if not text:
        return Outcome(False, latency, 0, raw > debounce_s)
    return Outcome(True, latency, common_prefix(text, truth), raw > debounce_s)


class AnchorUser:
    """The same replay against llama-cpp-python's OpenAI-compatible server (KV prefix reuse built in)."""

    def __init__(self, port: int, tokenizer: Any, context: int, max_tokens: int, debounce_s: float) -> None:
        import httpx

        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60)
        self.tok, self.context, self.max_tokens, self.debounce_s = tokenizer, context, max_tokens, debounce_s

    async def _complete(self, prefix: str, line_tail: str, language: str) -> str:
        await asyncio.sleep(self.debounce_s)  # the client debounces (llama.vim, llama.vscode do)
        # The very prompt our server builds (same tokens, same stable start on a grid of lines), so both
        # sides can reuse their KV cache alike; the same single-line rule.
        prompt = completion_prompt(self.tok, prefix, line_tail, language, self.context)
        text = self.tok.decode(prompt.ids, skip_special_tokens=True)  # its server takes text, not ids
        body = {"prompt": text, "max_tokens": self.max_tokens, "temperature": 0.0, "stream": True,
                "repeat_penalty": 1.0, "stop": ["\n"] if prompt.single_line else ["\n\n"]}
        text = ""
        async with self.http.stream("POST", "/v1/completions", json=body) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    text += json.loads(line[6:])["choices"][0]["text"]
        return text

    async def replay(self, r: Replay, warm: bool = True) -> list[Outcome]:
        doc = r.start_text
        line_starts = _line_offsets(doc)
        offset = line_starts[r.keys[0].line] + r.keys[0].col  # ASCII-safe enough for the chosen files
        if warm:
            await self._complete(doc[:offset], doc[offset:doc.find("\n", offset)], r.language)
        outcomes: list[Outcome] = []
        task: asyncio.Task[str] | None = None
        t0 = time.perf_counter()
        for i, k in enumerate(r.keys):
            await asyncio.sleep(max(0.0, t0 + k.at - time.perf_counter()))
            if task is not None and not task.done():
                task.cancel()  # closes the stream: the server stops generating
            doc = doc[:offset] + k.text + doc[offset:]
            offset += len(k.text)
            end = doc.find("\n", offset)
            sent = time.perf_counter()
            task = asyncio.ensure_future(self._complete(doc[:offset], doc[offset:end if end >= 0 else None],
                                                        r.language))
            task.add_done_callback(_quiet)
            deadline = t0 + r.keys[i + 1].at if i + 1 < len(r.keys) else sent + 30
            outcomes.append(await _outcome(task, sent, deadline, self.debounce_s, k.truth))
        if task is not None and not task.done():
            task.cancel()
        return outcomes


def _quiet(task: asyncio.Task[Any]) -> None:
    """A superseded request's error (cancelled) is expected: retrieve it so asyncio does not log it."""
    if not task.cancelled():
        task.exception()


def _line_offsets(text: str) -> list[int]:
    out = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            out.append(i + 1)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summarize(outcomes: list[Outcome]) -> dict[str, float]:
    lat = sorted(o.latency_ms for o in outcomes if o.shown and o.latency_ms is not None)

    def q(f: float) -> float:
        return lat[min(len(lat) - 1, int(f * len(lat)))] if lat else float("nan")

    # Answers that ran the model (slower than the debounce it waited), apart from typed-ahead reuse.
    run = sorted(o.latency_ms for o in outcomes if o.shown and o.latency_ms is not None and o.ran_model)

    def r(f: float) -> float:
        return run[min(len(run) - 1, int(f * len(run)))] if run else float("nan")

    return {"keys": len(outcomes), "p50": q(0.5), "p90": q(0.9), "run_p50": r(0.5), "run_p90": r(0.9),
            "runs": len(run),
            "shown": sum(o.shown for o in outcomes) / max(1, len(outcomes)),
            "chars_per_key": sum(o.predicted for o in outcomes) / max(1, len(outcomes))}


async def run_lsp(replays: list[Replay], args: argparse.Namespace, packs: str | None, backend: str,
                  tmp: Path) -> list[Outcome]:
    cmd = [sys.executable, "-m", "mole_lsp", "serve", "--base-model", str(args.gguf), "--device", "cpu",
           "--cache-dir", str(args.cache_dir or tmp / "cache"), "--pack-repo", packs or str(tmp / "no-packs")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MOLE_LSP_TRACE": "1"}
    docs = tmp / "docs"
    docs.mkdir(exist_ok=True)
    user = LspUser(cmd, env, {"contextTokens": args.context, "maxNewTokens": args.max_new_tokens,
                              "debounceMs": args.debounce_ms, "autoInstallPacks": bool(packs),
                              "backend": backend}, docs)
    await user.start()
    out: list[Outcome] = []
    rss: list[float] = []  # the server's RSS after each file's replay (the first: model and expert loaded)
    for r in replays:
        out += await user.replay(r)
        rss.append(_rss_mb(user.pid))
    await user.stop()
    RSS[f"{backend} {'core + expert' if packs else 'base only'}"] = rss
    return out


RSS: dict[str, list[float]] = {}  # configuration -> server RSS (MB) after each file, for the memory goal


async def run_anchor(replays: list[Replay], args: argparse.Namespace) -> list[Outcome]:
    from transformers import AutoTokenizer

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(args.gguf), "--n_ctx",
                             str(args.context + args.max_new_tokens + 64), "--port", str(port),
                             "--host", "127.0.0.1", "--n_threads", str(os.cpu_count())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
        tok = AutoTokenizer.from_pretrained(str(args.gguf.parent))
        user = AnchorUser(port, tok, args.context, args.max_new_tokens, args.debounce_ms / 1000)
        out: list[Outcome] = []
        for r in replays:
            out += await user.replay(r)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def table(rows: dict[str, dict[str, float]], anchor: str | None) -> str:
    head = ("| configuration | keys | p50 ms | p90 ms | shown | predicted chars / key "
            "| model runs shown | their p50 / p90 ms |")
    if anchor:
        head += " p50 ÷ anchor | p90 ÷ anchor |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, s in rows.items():
        line = (f"| {name} | {s['keys']} | {s['p50']:.0f} | {s['p90']:.0f} | {s['shown']:.0%} | "
                f"{s['chars_per_key']:.2f} | {s['runs']} | {s['run_p50']:.0f} / {s['run_p90']:.0f} |")
        if anchor:
            a = rows[anchor]
            line += f" {s['p50'] / a['p50']:.2f} | {s['p90'] / a['p90']:.2f} |"
        lines.append(line)
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> str:
    rng = random.Random(args.seed)
    min_prefix = args.context * 5  # about 5 characters per token of code: a full context window
    replays = []
    for lang in args.languages.split(","):
        want, tries = args.files, 0
        while want and tries < 20:  # a file without a run of --lines code lines is replaced by another
            tries += 1
            for path in pick_files(lang, want, rng, min_prefix):
                try:
                    replays.append(build_replay(path, lang, args.lines, args.cps, rng, min_prefix))
                    want -= 1
                except IndexError:
                    continue
    print("files:", ", ".join(f"{r.language}:{r.name}" for r in replays), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="mole-typing-"))
    rows: dict[str, dict[str, float]] = {}
    per_lang: dict[str, dict[str, dict[str, float]]] = {}
    configs: list[tuple[str, str | None, str]] = []
    for backend in args.backends.split(","):
        configs.append((f"mole-lsp ({backend}), base only", None, backend))
        if args.packs:
            configs.append((f"mole-lsp ({backend}), core + expert", args.packs, backend))
    for name, packs, backend in configs:
        outs = await run_lsp(replays, args, packs, backend, tmp)
        rows[name] = summarize(outs)
        per_lang[name] = _by_language(replays, outs)
        print(name, rows[name], flush=True)
    anchor = None
    if args.anchor:
        anchor = "anchor: llama-cpp-python server, same GGUF"
        outs = await run_anchor(replays, args)
        rows[anchor] = summarize(outs)
        per_lang[anchor] = _by_language(replays, outs)
    shutil.rmtree(tmp, ignore_errors=True)
    text = table(rows, anchor)
    text += "\n\nPer language (p50 ms / p90 ms / shown / predicted chars per key):\n\n"
    langs = list(dict.fromkeys(r.language for r in replays))
    text += "| configuration | " + " | ".join(langs) + " |\n|---|" + "---|" * len(langs) + "\n"
    for name, by in per_lang.items():
        text += f"| {name} | " + " | ".join(
            f"{by[lg]['p50']:.0f} / {by[lg]['p90']:.0f} / {by[lg]['shown']:.0%} / {by[lg]['chars_per_key']:.2f}"
            for lg in langs) + " |\n"
    text += "\nServer RSS after the first file's replay → after the last (memory goal: within 100 MB):\n\n"
    for name, rss in RSS.items():
        text += f"- {name}: {rss[0]:.0f} MB → {rss[-1]:.0f} MB ({rss[-1] - rss[0]:+.0f} MB, max {max(rss):.0f} MB)\n"
    typed = sum(len(k.text) for r in replays for k in r.keys)
    text += ("\nfiles: " + ", ".join(f"{r.language}:{r.name}" for r in replays) + "\n\n"
             f"replay: {typed} characters in {sum(r.keys[-1].at for r in replays):.0f} s of typing "
             f"({typed / sum(r.keys[-1].at for r in replays):.1f} characters/s with the pauses)\n")
    return text


def _by_language(replays: list[Replay], outs: list[Outcome]) -> dict[str, dict[str, float]]:
    by: dict[str, list[Outcome]] = {}
    i = 0
    for r in replays:
        by.setdefault(r.language, []).extend(outs[i:i + len(r.keys)])
        i += len(r.keys)
    return {lang: summarize(o) for lang, o in by.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--languages", default="python,go,rust,javascript")
    p.add_argument("--files", type=int, default=2, help="files per language")
    p.add_argument("--lines", type=int, default=3, help="lines retyped per file")
    p.add_argument("--cps", type=float, default=8.0, help="typing speed, characters per second")
    p.add_argument("--context", type=int, default=1024, help="prompt token budget (contextTokens)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--debounce-ms", type=int, default=150)
    p.add_argument("--packs", default=None, help="pack repository folder for the core + expert configuration")
    p.add_argument("--backends", default="auto", help="the server's backend setting(s), comma-separated "
                   "(auto, torch, llamacpp): one configuration each")
    p.add_argument("--anchor", action="store_true", help="also replay against llama-cpp-python's server")
    p.add_argument("--gguf", type=Path, default=GGUF)
    p.add_argument("--cache-dir", default=None, help="mole-lsp cache (reuse the converted base between runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args()
    text = asyncio.run(main_async(args))
    print(text)
    if not args.no_append:
        command = "OMP_WAIT_POLICY=PASSIVE python " + " ".join(shlex.quote(a) for a in sys.argv)
        load = os.getloadavg()[0]
        with open(ROOT / "bench" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(f"\n## bench_typing — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n`{command}`  \n"
                    f"machine: {os.cpu_count()} CPUs, load average {load:.1f}, python {platform.python_version()}"
                    f"\n\n{text}")


if __name__ == "__main__":
    main()
