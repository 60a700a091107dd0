"""MoLE vs alllang vs perlang at equal steps on one corpus: per-language held-out loss table.

    python bench/bench_train.py --out /tmp/mole-exp -- --preset quick --base DIR --data CORPUS [--field value ...]

Everything after ``--`` is passed to training.config (same flags as ``python -m training.finetune``); the
script runs the three methods one after another with those settings (perlang: each language gets its
share of the steps, see training.methods) and prints a markdown table: the untrained base (validation
at step 0 of the MoLE run -- PiSSA init leaves the model equal to the base), then each method's final
held-out loss per language.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from training.config import load_config
from training.finetune import run

METHODS = ("mole", "alllang", "perlang")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    rest = [a for a in args.rest if a != "--"]
    base_cfg = load_config(rest)
    rows: dict[str, dict[str, float]] = {}
    times: dict[str, float] = {}
    langs: list[str] = []
    for i, method in enumerate(args.methods.split(",")):
        cfg = dataclasses.replace(base_cfg, method=method, out=str(Path(args.out) / method),
                                  eval_at_start=(i == 0), export=True)
        t0 = time.perf_counter()
        res = run(cfg)
        times[method] = time.perf_counter() - t0
        results = res["results"]
        if i == 0:
            first = next(iter(results.values()))
            rows["base (untrained)"] = first.val_history[0][1]
            langs = [k for k in first.val_history[0][1] if k != "all"]
        if method == "perlang":
            rows[method] = {lang: r.final_val[lang] for lang, r in results.items() if lang in r.final_val}
            rows[method]["steps"] = sum(r.steps for r in results.values())
        else:
            r = next(iter(results.values()))
            rows[method] = dict(r.final_val, steps=r.steps)
        Path(args.out, "table.json").write_text(json.dumps({"rows": rows, "seconds": times}, indent=1))
    head = "| model | steps | " + " | ".join(langs) + " | mean |"
    print(head)
    print("|" + "---|" * (len(langs) + 3))
    for name, v in rows.items():
        mean = sum(v[x] for x in langs if x in v) / max(1, sum(x in v for x in langs))
        cells = " | ".join(f"{v[x]:.4f}" if x in v else "-" for x in langs)
        print(f"| {name} | {int(v.get('steps', 0))} | {cells} | {mean:.4f} |")
    print("seconds: " + ", ".join(f"{k} {t:.0f}" for k, t in times.items()))


if __name__ == "__main__":
    main()
