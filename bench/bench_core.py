"""MoLE core benchmarks: train-step cost, decode speed, merge/switch cost, pack sizes.

Random weights of the real shapes (SmolLM2-135M, deepseek-coder-1.3b); ratios are measured side by
side in one run, interleaved, because these machines are noisy. Prints a table and appends it, with
the exact command, to bench/RESULTS.md.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_core.py train  --shape smollm2
    OMP_WAIT_POLICY=PASSIVE python bench/bench_core.py decode --shape deepseek-1.3b
    OMP_WAIT_POLICY=PASSIVE python bench/bench_core.py sizes
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from mole_lsp.core.config import MoleConfig  # noqa: E402
from mole_lsp.core.model import attach_mole  # noqa: E402
from mole_lsp.core.reference import reference_mode  # noqa: E402
from mole_lsp.lang.registry import PAPER_LANGUAGES  # noqa: E402
from mole_lsp.packs.format import BaseIdentity, export_packs, pack_size_mb  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

SHAPES = {
    # SmolLM2-135M-Instruct (the quick-start base)
    "smollm2": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
    # deepseek-coder-1.3b-base (the paper's base)
    "deepseek-1.3b": dict(vocab_size=32256, hidden_size=2048, intermediate_size=5504, num_hidden_layers=24,
                          num_attention_heads=16, num_key_value_heads=16, tie_word_embeddings=False),
}


def build(shape: str, layers: int | None, dtype: torch.dtype, device: str) -> LlamaForCausalLM:
    kw = dict(SHAPES[shape])
    if layers:
        kw["num_hidden_layers"] = layers
    cfg = LlamaConfig(**kw, max_position_embeddings=4096, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    return model.to(dtype).eval()


class PlainLora(nn.Module):
    """One ordinary LoRA on a linear: the baseline MoLE is compared with."""

    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.scale = alpha / r**0.5
        self.A = nn.Parameter(torch.randn(r, base.in_features, device=base.weight.device) / base.in_features**0.5)
        self.B = nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x.to(self.A.dtype), self.A * self.scale), self.B).to(x.dtype)


def attach_plain_lora(model: nn.Module, r: int = 64, targets=("gate_proj", "up_proj", "down_proj")) -> nn.Module:
    model.requires_grad_(False)
    for _, module in list(model.named_modules()):
        for name, child in list(module.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(module, name, PlainLora(child, r, 32.0))
    return model


def mixed_labels(batch: int, seq: int, seed: int = 0) -> list[list[str]]:
    """8 languages mixed with NL inside and across sequences: prose, then fenced blocks of various languages."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        row: list[str] = []
        while len(row) < seq:
            row += ["nl"] * int(torch.randint(10, 60, (1,), generator=g))
            lang = PAPER_LANGUAGES[int(torch.randint(0, 8, (1,), generator=g))]
            row += [lang] * int(torch.randint(30, 150, (1,), generator=g))
        rows.append(row[:seq])
    return rows


def timeit(fn: Callable[[], None], reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def interleaved(fns: dict[str, Callable[[], None]], reps: int, warmup: int = 1
                ) -> tuple[dict[str, float], dict[str, float]]:
    """Median time per key, and the median over rounds of each key's time ÷ the first key's.

    Rounds run every function once, back to back, so a ratio compares runs that saw the same load.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            times[k].append(timeit(fn, 1))
    first = next(iter(fns))
    ratios = {k: statistics.median(a / b for a, b in zip(v, times[first], strict=True)) for k, v in times.items()}
    return {k: statistics.median(v) for k, v in times.items()}, ratios


def machine_note(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
            f"load average {os.getloadavg()[0]:.1f} (other work shared the machine; ratios are per round)")


RECORD = True


def append_results(title: str, table: str, device: str) -> None:
    cmd = "OMP_WAIT_POLICY=PASSIVE python " + " ".join(["bench/bench_core.py", *sys.argv[1:]])
    block = (f"\n## {title}\n\n`{cmd}`  \n{time.strftime('%Y-%m-%d')}, {machine_note(device)}\n\n{table}\n")
    if RECORD:
        with open(RESULTS, "a") as f:
            f.write(block)
    print(block)


# -- train step ------------------------------------------------------------------------------------------
def bench_train(args: argparse.Namespace) -> None:
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    labels = mixed_labels(args.batch, args.seq)
    ids = torch.randint(0, 1000, (args.batch, args.seq), device=args.device)

    def step_fn(model: nn.Module, call: Callable[[], torch.Tensor], params) -> Callable[[], None]:
        def step() -> None:
            for p in params:
                p.grad = None
            with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.device == "cuda"):
                loss = call().logits.float().logsumexp(-1).mean()
            loss.backward()
            if args.device == "cuda":
                torch.cuda.synchronize()
        return step

    mole = attach_mole(build(args.shape, args.layers, dtype, args.device),
                       MoleConfig(languages=PAPER_LANGUAGES, init="lora"))
    routes = torch.stack([mole.route_ids(r) for r in labels])
    mole.train()
    mole_params = mole.trainable_parameters()
    mole_step = step_fn(mole, lambda: mole(input_ids=ids, route_ids=routes), mole_params)

    def ref_step() -> None:
        with reference_mode(mole.layers):
            mole_step()

    lora = attach_plain_lora(build(args.shape, args.layers, dtype, args.device)).train()
    lora_params = [p for p in lora.parameters() if p.requires_grad]
    lora_step = step_fn(lora, lambda: lora(input_ids=ids), lora_params)

    fns = {"lora": lora_step, "mole": mole_step}
    if not args.no_reference:  # the masked loop keeps every adapter's output for backward: memory-hungry
        fns["reference"] = ref_step
    t, ratio = interleaved(fns, args.reps)
    toks = args.batch * args.seq
    rows = ["| method | s/step (median) | tokens/s | time ÷ single LoRA r64 (median of rounds) |", "|---|---|---|---|"]
    names = {"lora": "single LoRA r64 (same modules)", "mole": "MoLE 48+16 / NL 64 (grouped)",
             "reference": "MoLE, reference masked loop"}
    for k in t:
        rows.append(f"| {names[k]} | {t[k]:.3f} | {toks / t[k]:.0f} | {ratio[k]:.3f} |")
    ref_note = f"; masked reference ÷ MoLE: {ratio['reference'] / ratio['mole']:.2f}×" if "reference" in t else ""
    depth = args.layers or SHAPES[args.shape]["num_hidden_layers"]
    title = (f"Train step (fwd+bwd), {args.shape} shape, {depth} layers, random weights, "
             f"batch {args.batch} × seq {args.seq}, 8 languages + NL, {args.device} {str(dtype).split('.')[-1]}")
    append_results(title, "\n".join(rows) + f"\n\nGoal: MoLE ≤ 1.10× single LoRA → **{ratio['mole']:.3f}×**"
                   f"{ref_note}.", args.device)


@contextlib.contextmanager
def bare_base(mole) -> Iterator[None]:
    saved = {layer: layer.forward for layer in mole.layers.values()}
    for layer in saved:
        layer.forward = layer.base.forward
    try:
        yield
    finally:
        for layer, fwd in saved.items():
            layer.forward = fwd


# -- decode --------------------------------------------------------------------------------------------------
@torch.no_grad()
def greedy(call: Callable[..., object], prompt: torch.Tensor, new: int) -> float:
    out = call(prompt, None)
    cache = out.past_key_values
    tok = out.logits[:, -1:].argmax(-1)
    t0 = time.perf_counter()
    for _ in range(new):
        out = call(tok, cache)
        cache = out.past_key_values
        tok = out.logits[:, -1:].argmax(-1)
    if prompt.device.type == "cuda":
        torch.cuda.synchronize()
    return new / (time.perf_counter() - t0)


def bench_decode(args: argparse.Namespace) -> None:
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    prompt = torch.randint(0, 1000, (1, args.prompt), device=args.device)
    # One model serves both rows: "bare base" swaps every MoLE layer for its plain base linear, so the
    # 1.3B shape fits in memory once (plus the merged buffers).
    mole = attach_mole(build(args.shape, args.layers, dtype, args.device),
                       MoleConfig(languages=PAPER_LANGUAGES, init="lora"))
    with torch.no_grad():  # non-zero B so the adapters do real work
        for p in mole.trainable_parameters():
            p.normal_(0, 0.01)

    def base_call(x, cache):
        with bare_base(mole):
            return mole.model(input_ids=x, past_key_values=cache, use_cache=True)

    py = mole.route_for("python")

    def mole_call(x, cache):
        return mole(input_ids=x, route_ids=torch.full_like(x, py), past_key_values=cache, use_cache=True)

    tps: dict[str, list[float]] = {"base": [], "mole": [], "merged": []}
    for rep in range(args.reps + 1):
        for k in tps:
            if k == "merged":
                mole.merge("python")
            r = greedy(base_call if k == "base" else mole_call, prompt, args.new)
            if k == "merged":
                mole.unmerge()
            if rep:  # the first round is warm-up
                tps[k].append(r)
    med = {k: statistics.median(v) for k, v in tps.items()}
    rel = {k: statistics.median(a / b for a, b in zip(v, tps["base"], strict=True)) for k, v in tps.items()}

    # switch cost: merge another language into the (already allocated) buffers
    switch = []
    for lang in ("rust", "go", "python", "java", "cpp"):
        t0 = time.perf_counter()
        mole.merge(lang)
        if args.device == "cuda":
            torch.cuda.synchronize()
        switch.append((time.perf_counter() - t0) * 1000)
    mole.unmerge()
    switch_ms = statistics.median(switch[1:])

    rows = ["| model | tokens/s (median) | ÷ bare base (median of rounds) |", "|---|---|---|",
            f"| bare base | {med['base']:.1f} | 1.000 |",
            f"| MoLE, one expert active (grouped path) | {med['mole']:.1f} | {rel['mole']:.3f} |",
            f"| MoLE, merged fast path | {med['merged']:.1f} | {rel['merged']:.3f} |"]
    depth = args.layers or SHAPES[args.shape]["num_hidden_layers"]
    title = (f"Greedy decode, {args.shape} shape, {depth} layers, random weights, batch 1, prompt {args.prompt}, "
             f"{args.new} new tokens, {args.device} {str(dtype).split('.')[-1]}")
    append_results(title, "\n".join(rows) + f"\n\nGoals: grouped ≥ 0.87 → **{rel['mole']:.3f}**; merged ≥ 0.97 → "
                   f"**{rel['merged']:.3f}**; language switch (re-merge all {len(mole.layers)} linears) "
                   f"**{switch_ms:.1f} ms** (goal ≤ 50 ms at 1.3B shape).", args.device)


# -- sizes ----------------------------------------------------------------------------------------------------
def bench_sizes(args: argparse.Namespace) -> None:
    rows = ["| shape | full model fp32 (MB) | full model bf16 (MB) | core pack (MB) | one expert pack (MB) | expert ÷ full bf16 |",
            "|---|---|---|---|---|---|"]
    for shape in ("smollm2", "deepseek-1.3b"):
        model = build(shape, None, torch.float32, "cpu")
        n_params = sum(p.numel() for p in model.parameters())
        mole = attach_mole(model, MoleConfig(languages=("python",), init="lora"))
        for layer in mole.layers.values():  # residual factors of PiSSA's size, without running 72 SVDs
            layer.res_A = torch.zeros(mole.config.r_code, layer.in_features)
            layer.res_B = torch.zeros(layer.out_features, mole.config.r_code)
        with tempfile.TemporaryDirectory() as tmp:
            repo = export_packs(mole, tmp, BaseIdentity(shape))
            core, expert = pack_size_mb(repo / "core"), pack_size_mb(repo / "experts" / "python")
        full32, full16 = n_params * 4 / 1e6, n_params * 2 / 1e6
        rows.append(f"| {shape} | {full32:.0f} | {full16:.0f} | {core:.1f} | {expert:.1f} | {expert / full16:.3%} |")
        del model, mole
    append_results("Pack sizes (fp32 adapters, MoLE 48+16 / NL 64, PiSSA residual factors included in core)",
                   "\n".join(rows), "cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["train", "decode", "sizes"])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="smollm2")
    ap.add_argument("--layers", type=int, default=None, help="override the depth (keeps every other dimension)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-reference", action="store_true", help="train: skip the masked reference loop")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = ap.parse_args()
    global RECORD
    RECORD = not args.no_record
    if args.threads:
        torch.set_num_threads(args.threads)
    {"train": bench_train, "decode": bench_decode, "sizes": bench_sizes}[args.what](args)


if __name__ == "__main__":
    main()
