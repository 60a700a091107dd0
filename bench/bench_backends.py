"""llama.cpp backend vs the torch reference on the quick-start GGUF (not a test): how close, how fast.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_backends.py [--gguf FILE] [--packs DIR] [--cursors 3]
        [--tokens 32] [--context 1024] [--decode 64]

1. The floor: the bare base (no packs) on both backends. torch runs the dequantized Q4_1 weights in fp32;
   llama.cpp's Q4_1 kernels quantize activations to 8 bits, so the logits differ a little.
2. With adapters: a core pack and the python, go and rust experts (``--packs``, a pack repository folder;
   default: synthetic packs made here from the base, PiSSA-initialised and perturbed like trained ones).
   The torch engine completes real source files of this machine (CPython's stdlib, Go's source, Debian's
   Rust crates) at ``--cursors`` line starts each, greedily; every forward call it made (its tokens and
   route labels) is replayed on the llama.cpp backend (teacher forcing), so every position compares the
   logits of the same context. Plus one automated prompt mixing prose and a fenced block (NL + expert).
   Reported: max and median |logit difference| and the share of positions whose greedy token agrees.
   Both ways the llama.cpp backend runs a route: as one GGUF LoRA adapter on the base ("LoRA"), and, for a
   request whose positions all take one route (the completions), on a copy of the base GGUF with the
   route folded into its weights, requantized (as Q8_0 where the base is coarser; ``--merged-type``)
   ("merged", backends/merged_route.py; the mixed prompt still takes the LoRA path there).
3. Decode speed: tokens/s of single-token decodes after a ``--context``-token prompt, on the llama.cpp
   backend with the python expert's route as a LoRA adapter and merged, vs the same backend on the bare
   base (no adapters) vs llama-cpp-python's own ``Llama.eval`` on the bare base. Plus the merged file's
   size, the time to write it (once per route content) and to load it.

The machine may be shared: the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GGUF = ROOT.parent / "shared" / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mole_lsp.core.config import MoleConfig  # noqa: E402
from mole_lsp.core.model import attach_mole  # noqa: E402
from mole_lsp.engine.backends import llamacpp  # noqa: E402
from mole_lsp.engine.base_model import load_base_model, resolve_base_model  # noqa: E402
from mole_lsp.engine.engine import Engine  # noqa: E402
from mole_lsp.engine.sources import FolderPacks  # noqa: E402
from mole_lsp.packs.format import export_packs  # noqa: E402

LANGS = ("python", "go", "rust")
SOURCES = {
    "python": ["/usr/lib/python3*/json/decoder.py"],
    "go": ["/usr/lib/go/src/strings/builder.go", "/usr/share/go*/src/strings/builder.go"],
    "rust": ["/usr/share/cargo/registry/aho-corasick-*/src/ahocorasick.rs", "/usr/share/cargo/registry/*/src/lib.rs"],
}
MIXED = ("Here is a helper:\n```python\ndef mean(xs):\n    return sum(xs) / len(xs)\n```\n"
         "It returns the average. In Rust:\n```rust\nfn mean(xs: &[f64]) -> f64 {\n")


def source(lang: str) -> str:
    for pattern in SOURCES[lang]:
        hits = sorted(glob.glob(pattern))
        if hits:
            return Path(hits[0]).read_text(errors="replace")
    raise SystemExit(f"no {lang} source file found ({SOURCES[lang]})")


def synthetic_packs(info: Any, out: Path) -> Path:
    """Core + experts made from the base itself: PiSSA init, then every factor perturbed (5% of its std)
    so that each route really changes the logits."""
    model, _ = load_base_model(info)
    mole = attach_mole(model, MoleConfig(languages=LANGS))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in mole.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * float(p.std()) * 0.05)
    export_packs(mole, out, info.identity())
    return out


def engine(info: Any, backend: str, packs: Path | None, threads: int | None, merge_dir: Path | None = None) -> Engine:
    """An engine without KV reuse; ``merge_dir``: the llama.cpp backend runs one-route requests merged."""
    model, tok = load_base_model(info)
    e = Engine(model, tok, packs=FolderPacks(packs) if packs else None, base=info.identity(), info=info,
               backend=backend, auto_install=False, threads=threads)
    e.kv.max_bytes = 0
    if e.backend.name != backend:
        raise SystemExit(f"{backend} backend unavailable: {e.backend_reason}")
    if backend == "llamacpp":
        e.backend.merge = e.backend.merge_wait = merge_dir is not None  # every merged file before use
        if merge_dir is not None:
            e.backend.merge_dir = merge_dir
    e.calls = []
    inner = e.decoder.forward

    def recording(ids, labels, past):
        logits, past = inner(ids, labels, past)
        e.calls.append((list(ids), list(labels), logits.clone()))
        return logits, past

    e.decoder.forward = recording
    return e


def requests(cursors: int, context: int, tokens: int) -> list[tuple[str, tuple, dict]]:
    out: list[tuple[str, tuple, dict]] = []
    for lang in LANGS:
        text = source(lang)
        lines = text.splitlines(keepends=True)
        for k in range(cursors):  # line starts spread over the file's second half
            at = len(lines) // 2 + k * max(1, len(lines) // (2 * cursors + 1))
            prefix = "".join(lines[:at]) + lines[at][: len(lines[at]) - len(lines[at].lstrip())]
            out.append(("complete", (prefix, "", lang), {"context_tokens": context, "max_new_tokens": tokens}))
    out.append(("generate", (MIXED,), {"mode": "automated", "max_new_tokens": tokens}))
    return out


def reference_calls(t: Engine, reqs: list) -> list[list[tuple]]:
    """The torch engine's forward calls (ids, labels, logits) of each request, greedy."""
    out = []
    for method, args, kw in reqs:
        t.calls.clear()
        getattr(t, method)(*args, **kw)
        out.append(list(t.calls))
    return out


def compare(ref: list[list[tuple]], c: Engine, reqs: list) -> dict[str, float]:
    """Teacher-forced comparison of every position (see the module docstring)."""
    diffs: list[float] = []
    agree = n = 0
    for (method, args, kw), calls in zip(reqs, ref, strict=True):
        getattr(c, method)(*args, **{**kw, "max_new_tokens": 1})  # the llama engine loads the same experts
        past = None
        for i, (ids, labels, want) in enumerate(calls):
            logits, past = c.backend.forward(ids, labels, None if i == 0 else past)
            diffs.append(float((logits - want).abs().max()))
            agree += int(logits.argmax()) == int(want.argmax())
            n += 1
    return {"positions": n, "max": max(diffs), "median": statistics.median(diffs), "agree": agree / n}


def backend_decoder(c: Engine, lang: str | None, prompt: list[int], n: int) -> Callable[[], float]:
    """Prefill ``prompt`` once; each call then times ``n`` more greedy single-token decodes (tok/s)."""
    label = lang or "unknown"
    if lang:
        c.ensure_expert(lang)
    logits, past = c.backend.forward(prompt, [label] * len(prompt), None)
    state = {"tok": int(logits.argmax()), "past": past}

    def run() -> float:
        tok, past = state["tok"], state["past"]
        t0 = time.perf_counter()
        for _ in range(n):
            logits, past = c.backend.forward([tok], [label], past)
            tok = int(logits.argmax())
        state["tok"], state["past"] = tok, past
        return n / (time.perf_counter() - t0)

    return run


def llama_eval_decoder(gguf: Path, prompt: list[int], n: int, threads: int, reps: int) -> Callable[[], float]:
    """The same with llama-cpp-python's own ``Llama.eval`` on the bare GGUF (no mole-lsp code)."""
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf), n_ctx=len(prompt) + reps * n + 8, n_threads=threads,
                          n_threads_batch=threads, n_batch=512, verbose=False)
    llm.eval(prompt)

    def pick() -> int:  # Llama keeps scores only with logits_all: read the context's last logits
        return int(np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).argmax())

    def run() -> float:
        tok = pick()
        t0 = time.perf_counter()
        for _ in range(n):
            llm.eval([tok])
            tok = pick()
        return n / (time.perf_counter() - t0)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", type=Path, default=GGUF)
    ap.add_argument("--packs", type=Path, help="pack repository folder (default: synthetic packs)")
    ap.add_argument("--cursors", type=int, default=3, help="completions per language")
    ap.add_argument("--tokens", type=int, default=32, help="most new tokens per completion")
    ap.add_argument("--context", type=int, default=1024, help="prompt token budget")
    ap.add_argument("--decode", type=int, default=64, help="tokens timed per decode-speed run")
    ap.add_argument("--reps", type=int, default=5, help="interleaved decode-speed runs (best is kept)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--speed-only", action="store_true", help="skip the logit comparison")
    ap.add_argument("--lora-dtype", choices=("f32", "f16"), help="adapter tensor type (default: the backend's)")
    ap.add_argument("--merged-type", help="ggml type of merged tensors coarser than it, e.g. Q8_0 (default: the "
                    "backend's), or 'same': each base tensor's own")
    ap.add_argument("--merged-only", action="store_true", help="compare only the merged path (no floor, no LoRA)")
    args = ap.parse_args()
    if args.merged_type:
        llamacpp.MERGED_TYPE = None if args.merged_type == "same" else args.merged_type
    if not args.gguf.is_file():
        raise SystemExit(f"{args.gguf} not found")
    if args.lora_dtype:
        llamacpp.LORA_DTYPE = args.lora_dtype
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    info = resolve_base_model(args.gguf)
    work = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    packs = args.packs or synthetic_packs(info, work / "packs")
    reqs = requests(args.cursors, args.context, args.tokens)
    merged = engine(info, "llamacpp", packs, threads, merge_dir=work / "merged")
    merged.ensure_expert("python")
    t0 = time.perf_counter()
    path = merged.backend.merged_path("python")
    if path is None:
        raise SystemExit(f"the python route cannot be merged: {merged.backend.merge_off}")
    write_s = time.perf_counter() - t0
    variants = {"bare base": [("", None)], "with adapters": [(", LoRA", None), (", merged", work / "merged")]}
    if args.merged_only:
        variants = {"bare base": [], "with adapters": [(", merged", work / "merged")]}
    for name, p in (("bare base", None), ("with adapters", packs)):
        if args.speed_only:
            break
        if not variants[name]:
            continue
        ref = reference_calls(engine(info, "torch", p, threads), reqs)
        for suffix, merge_dir in variants[name]:
            c = merged if merge_dir is not None else engine(info, "llamacpp", p, threads)
            r = compare(ref, c, reqs)
            print(f"{name + suffix:<22} positions {r['positions']:>4}  max|dlogit| {r['max']:.3f}  "
                  f"median {r['median']:.3f}  greedy agree {100 * r['agree']:.1f}%", flush=True)
    prompt = merged.tokenizer(source("python"), add_special_tokens=False)["input_ids"][: args.context]
    bare, lora = engine(info, "llamacpp", None, threads), engine(info, "llamacpp", packs, threads)
    runs = {"llama.cpp backend, bare base": backend_decoder(bare, None, prompt, args.decode),
            "llama.cpp backend, python LoRA": backend_decoder(lora, "python", prompt, args.decode),
            "llama.cpp backend, python merged": backend_decoder(merged, "python", prompt, args.decode),
            "llama-cpp-python Llama.eval, bare": llama_eval_decoder(args.gguf, prompt, args.decode, threads,
                                                                    args.reps)}
    speeds = dict.fromkeys(runs, 0.0)
    for _ in range(args.reps):  # interleaved, best of each: a shared machine slows some runs down
        for k, run in runs.items():
            speeds[k] = max(speeds[k], run())
    for k, v in speeds.items():
        print(f"{k:<36} {v:6.1f} tok/s (best of {args.reps})")
    bare_speed = speeds["llama.cpp backend, bare base"]
    for k in ("python LoRA", "python merged"):
        got = speeds[f"llama.cpp backend, {k}"]
        print(f"{k} / backend bare: {got / bare_speed:.2f}   "
              f"{k} / Llama.eval bare: {got / speeds['llama-cpp-python Llama.eval, bare']:.2f}")
    b = merged.backend
    for seq in list(b._merged.values()):  # load the merged model again, cold for llama.cpp (warm page cache)
        seq.close(model=True)
    b._merged.clear()
    b.seq_for(["python"])
    print(f"merged file: {path.stat().st_size / 2**20:.1f} MiB (base {args.gguf.stat().st_size / 2**20:.1f} MiB), "
          f"written in {write_s:.1f} s (once per route content), loaded in {1e3 * (b.merge_load_s or 0):.0f} ms")
    print(f"threads {threads}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"context {len(prompt)} tokens, packs {'given' if args.packs else 'synthetic'}, "
          f"adapters {llamacpp.LORA_DTYPE}, merged tensors {llamacpp.MERGED_TYPE or 'as the base'}")

if __name__ == "__main__":
    main()
