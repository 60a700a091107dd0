"""The publish path end to end (not a test): train a pack set, push it to a local Hub, install it, serve it.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_publish.py [--base tiny|FOLDER|REPO] [--packs DIR]
        [--src LANG=PATH[,PATH] ...] [--max-steps 2] [--max-samples 40] [--add-language LANG] [--work DIR]

Every step runs the real command in a subprocess, as a maintainer would:

1. ``corpus``: ``python -m training.corpus`` mines each language's sources (default: this repository's own
   Python and TypeScript sources, so it runs anywhere the repository is);
2. ``train+push``: ``python -m training.finetune --preset quick --max-steps 2 ... --push-to-hub REPO`` into a
   local Hub (``tests/hub_server.py``'s LocalHub, a stdlib stand-in for the Hub, pointed at with
   ``HF_ENDPOINT``; nothing leaves the machine). ``REPO`` is the pack repository the server looks for by
   default for that base (``mole_lsp.packs.store.default_pack_repo``). ``--packs DIR`` skips training and
   pushes an existing pack set instead (``python -m training.publish DIR REPO``);
3. ``add-language`` (with ``--add-language L`` and its ``--src``): an expert for L trained against the pushed
   core, installed with ``mole-lsp install-pack --from`` its output, then pushed next to the others;
4. ``install``: ``mole-lsp install-pack LANG...`` from the local Hub into a fresh cache, without
   ``--pack-repo`` (the default repository of the base);
5. ``serve``: ``mole-lsp serve --offline`` on that cache (the installed packs only), driven over stdio by
   bench_server's LSP client: per language, a document of that language and an inline completion whose
   ``mole/trace`` must name the language's expert and route the generated tokens through it.

``--base tiny`` (default) builds the test suite's tiny random Llama (it checks the path, not the model's
quality; seconds); ``--base ../shared/models/smollm2-135m-instruct`` runs the quick-start base (minutes).
Prints each step with its time; exits 1 when a step fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_server import Bench  # noqa: E402
from hub_server import LocalHub  # noqa: E402
from lsprotocol import types  # noqa: E402

DEFAULT_SOURCES = {"python": [ROOT / "mole_lsp", ROOT / "training"], "typescript": [ROOT / "vscode-extension" / "src"]}
# Settings that would send huggingface_hub elsewhere than the local Hub, or keep it offline.
HF_ENV_CLEARED = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HF_XET_CACHE", "HF_TOKEN",
                  "HF_TOKEN_PATH", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# The tiny random Llama (hidden 32) cannot hold the quick preset's ranks.
TINY_FLAGS = ["--r-shared", "6", "--r-expert", "2", "--max-length", "96", "--micro-batch", "2",
              "--attn-implementation", "eager", "--base-dtype", "float32"]


class StepFailed(RuntimeError):
    """A step of the path did not do what it must; the message says what."""


class Steps:
    """Runs the steps in order, printing and keeping (name, seconds, detail) of each."""

    def __init__(self, say: Callable[[str], None] = print) -> None:
        self.done: list[tuple[str, float, str]] = []
        self.say = say

    def __call__(self, name: str, work: Callable[[], str]) -> None:
        t = time.perf_counter()
        detail = work()
        s = time.perf_counter() - t
        self.done.append((name, s, detail))
        self.say(f"[{s:7.1f} s] {name:<14} {detail}")


def sh(cmd: list[str], env: dict[str, str], timeout: float = 1800) -> str:
    """Run one command; its stdout, or StepFailed with the end of its output."""
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
        raise StepFailed(f"`{' '.join(cmd[1:4])} ...` exited {p.returncode}:\n{tail}")
    return p.stdout


def hub_env(hub: LocalHub, work: Path) -> dict[str, str]:
    """The environment of every step: huggingface_hub pointed at the local Hub with a fresh home."""
    env = {k: v for k, v in os.environ.items() if k not in HF_ENV_CLEARED}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(work / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_UPDATE_CHECK="1", OMP_WAIT_POLICY="PASSIVE", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return env


def pack_repo_of(base: str) -> str:
    """The Hub repository the server and install-pack look in for ``base``'s packs when none is set."""
    from mole_lsp.engine.base_model import resolve_base_model
    from mole_lsp.packs.store import default_pack_repo

    return default_pack_repo(resolve_base_model(base, offline=True).repo_id)


def parse_sources(items: list[str]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for item in items:
        lang, sep, paths = item.partition("=")
        if not sep or not paths:
            raise SystemExit(f"--src expects LANG=PATH[,PATH], got {item!r}")
        out[lang.strip()] = [Path(p).expanduser() for p in paths.split(",")]
    return out


def mine(lang: str, srcs: list[Path], dest: Path, args: argparse.Namespace, env: dict[str, str]) -> str:
    dest.parent.mkdir(parents=True, exist_ok=True)
    sh([sys.executable, "-m", "training.corpus", *map(str, srcs), "--language", lang, "--out", str(dest),
        "--max-samples", str(args.max_samples)], env)
    n = sum(1 for _ in dest.open())
    if n == 0:
        raise StepFailed(f"no {lang} samples mined from {', '.join(map(str, srcs))}")
    return f"{n} samples -> {dest}"


def train_cmd(args: argparse.Namespace, base: str, data: list[Path], langs: list[str], out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "training.finetune", "--preset", "quick", "--base", base,
           "--data", ",".join(map(str, data)), "--languages", ",".join(langs), "--max-steps", str(args.max_steps),
           "--max-val-samples", "4", "--eval-at-start", "false", "--out", str(out)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd + (TINY_FLAGS if args.base == "tiny" else [])


def installed(stdout: str) -> list[str]:
    return sorted(line.split()[1] for line in stdout.splitlines() if line.startswith("installed "))


async def lsp_session(base: str, cache: Path, env: dict[str, str], langs: list[str], docs: Path,
                      max_new_tokens: int) -> dict[str, dict[str, Any]]:
    """Serve the installed packs offline and ask one inline completion per language; its trace per language."""
    from mole_lsp.lang.registry import load_registry

    reg = load_registry()
    docs.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mole_lsp", "serve", "--base-model", base, "--cache-dir", str(cache),
           "--device", "cpu", "--offline", "--threads", "1"]
    b = Bench(cmd, {**env, "MOLE_LSP_TRACE": "1"}, {"debounceMs": 0, "maxNewTokens": max_new_tokens}, docs)
    await b.start()
    out: dict[str, dict[str, Any]] = {}
    try:
        for lang in langs:
            info = reg.get(lang)
            uri = (docs / f"sample{info.extensions[0]}").as_uri()
            text = f"{info.line_comment or '#'} add two numbers\n"
            b.client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
                uri=uri, language_id=(info.vscode_ids or (lang,))[0], version=1, text=text)))
            n = len(b.traces)
            await asyncio.wait_for(b.inline(uri, 1, 0), 600)
            for _ in range(500):  # the trace follows the answer
                started = [t for t in b.traces[n:] if t.get("started")]
                if started:
                    out[lang] = started[0]
                    break
                await asyncio.sleep(0.01)
            else:
                raise StepFailed(f"no generation traced for the {lang} completion: {b.traces[n:]}")
    finally:
        await b.stop()
    return out


def check_routes(traces: dict[str, dict[str, Any]]) -> str:
    """Each completion must have used its language's expert: named by the trace, and the route of every
    generated token."""
    for lang, t in traces.items():
        if t.get("base_only") or t.get("expert") != lang:
            raise StepFailed(f"the {lang} completion used expert {t.get('expert')!r} (base only: "
                             f"{t.get('base_only')}), not {lang!r}; notes: {t.get('notes')}")
        if set(t.get("routes") or [lang]) != {lang}:
            raise StepFailed(f"the {lang} completion's tokens took the routes {sorted(set(t['routes']))}")
    return "; ".join(f"{lang}: expert {t['expert']}, {t['new_tokens']} tokens routed {lang}, "
                     f"{t['timings'].get('total', 0):.0f} ms" for lang, t in traces.items())


def publish_path(args: argparse.Namespace, work: Path, say: Callable[[str], None] = print) -> Steps:
    """Every step of the path (see the module doc); raises StepFailed when one fails."""
    steps = Steps(say)
    sources = {**DEFAULT_SOURCES, **parse_sources(args.src)}
    if args.add_language and args.add_language not in sources:
        raise StepFailed(f"--add-language {args.add_language} needs --src {args.add_language}=PATH")
    hub = LocalHub(work / "hub").start()
    try:
        env = hub_env(hub, work)
        base = args.base
        if base == "tiny":
            base = str(work / "base")
            steps("base", lambda: tiny_base(Path(base)))
        repo = pack_repo_of(base)
        say(f"base {base}; pack repository (the default for this base) {repo} on the local Hub {hub.url}")

        def listed() -> str:
            return ", ".join(sorted(json.loads(hub.file_bytes(repo, "index.json"))["experts"]))

        if args.packs:
            packs = Path(args.packs)
            langs = sorted(json.loads((packs / "index.json").read_text())["experts"])

            def push() -> str:
                sh([sys.executable, "-m", "training.publish", str(packs), repo], env)
                return f"{packs} -> {repo}: {listed()}"
            steps("push", push)
        else:
            langs = [x for x in sources if x != args.add_language]
            for lang in langs:
                steps(f"corpus {lang}", lambda lang=lang: mine(lang, sources[lang], corpus(work, lang), args, env))
            packs = work / "run" / "packs"

            def train() -> str:
                sh([*train_cmd(args, base, [corpus(work, x) for x in langs], langs, work / "run"),
                    "--push-to-hub", repo], env)
                return f"{args.max_steps} steps, pushed to {repo}: {listed()}"
            steps("train+push", train)
        if args.add_language:
            lang = args.add_language
            steps(f"corpus {lang}", lambda: mine(lang, sources[lang], corpus(work, lang), args, env))

            def add() -> str:
                sh([*train_cmd(args, base, [corpus(work, lang)], [lang], work / "add"), "--add-language", lang,
                    "--core", str(packs), "--push-to-hub", repo], env)
                return f"{lang} trained against the pushed core, pushed next to its experts: {listed()}"
            steps("add-language", add)
            steps("install --from", lambda: install_from(work, base, lang, env))
            langs = [*langs, lang]
        cache = work / "cache"

        def install() -> str:
            got = installed(sh([sys.executable, "-m", "mole_lsp", "install-pack", *langs, "--base-model", base,
                                "--cache-dir", str(cache)], env))
            if got != sorted(["core", *langs]):
                raise StepFailed(f"install-pack installed {got}, not core + {langs}")
            return f"core + {', '.join(langs)} from {repo} into {cache}"
        steps("install", install)
        hub.clear_log()

        def serve() -> str:
            traces = asyncio.run(lsp_session(base, cache, env, langs, work / "docs", args.max_new_tokens))
            if hub.request_log:
                raise StepFailed(f"the offline server asked the Hub: {hub.request_log[:3]}")
            return check_routes(traces)
        steps("serve", serve)
    finally:
        hub.stop()
    return steps


def tiny_base(dest: Path) -> str:
    from helpers import tiny_base_dir

    return f"tiny random Llama -> {tiny_base_dir(dest, seed=0)}"


def corpus(work: Path, lang: str) -> Path:
    return work / "corpus" / f"{lang}.jsonl"


def install_from(work: Path, base: str, lang: str, env: dict[str, str]) -> str:
    """``install-pack --from`` the add-language output into a cache of its own: it must be a whole pack set."""
    stdout = sh([sys.executable, "-m", "mole_lsp", "install-pack", lang, "--from", str(work / "add" / "packs"),
                 "--base-model", base, "--cache-dir", str(work / "cache-from"), "--offline"], env)
    if installed(stdout) != sorted(["core", lang]):
        raise StepFailed(f"install-pack --from installed {installed(stdout)}, not core + {lang}")
    return f"core + {lang} from {work / 'add' / 'packs'}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="tiny", help="tiny (a random tiny Llama), a model folder or a Hub repo id")
    p.add_argument("--packs", help="push this pack set instead of training one")
    p.add_argument("--src", action="append", default=[], metavar="LANG=PATH[,PATH]",
                   help="sources to mine for a language (default: this repository's python and typescript)")
    p.add_argument("--max-steps", type=int, default=2)
    p.add_argument("--max-samples", type=int, default=40, help="training.corpus --max-samples per language")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--threads", type=int, help="training threads (default: the quick preset's)")
    p.add_argument("--add-language", metavar="LANG", help="also add LANG (from its --src) to the pushed core")
    p.add_argument("--work", help="working folder (default: a new temporary folder, kept)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mole-publish-"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    try:
        publish_path(args, work)
    except (StepFailed, subprocess.TimeoutExpired) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(f"publish path OK in {time.perf_counter() - t:.1f} s (work folder {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
