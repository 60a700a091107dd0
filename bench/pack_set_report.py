"""Tables of a pack-set experiment (issue 13): held-out loss per kind, line completion per method, goals.

    python bench/pack_set_report.py --runs RUNS_DIR --line-completion OUT/line_completion.jsonl \
        [--languages cpp,go,java,javascript,python,rust] [--skip SETTING ...]

``RUNS_DIR`` holds one ``training.finetune`` output per run, named ``METHOD-sSEED`` (perlang runs keep one
``metrics.jsonl`` per language under ``perlang/LANG``); the base's held-out loss is the first run's step-0
validation (every method starts exactly at the base). Line-completion rows come from
``python -m training.evaluate --tasks line-completion`` with settings named the same way (the base:
``No-FT``), compared on the positions every setting has. Each method is shown as the mean over its seeds
with the range (min-max) beside it; a method "beats the base" on a language when its mean exact match
exceeds the base's by more than that range.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from training.eval.line_completion import common_positions

BASE = "No-FT"


def _vals(path: Path) -> list[dict[str, float]]:
    return [row["val"] for row in map(json.loads, path.read_text().splitlines()) if "val" in row]


def held_out_losses(runs: Path, languages: list[str]) -> dict[str, dict[str, float]]:
    """Run name -> {"LANG", "LANG/completion", "LANG/chat": final held-out loss}, plus the base."""
    out: dict[str, dict[str, float]] = {}
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        if (run / "metrics.jsonl").exists():
            vals = _vals(run / "metrics.jsonl")
            if vals and vals[0] and "base (step 0)" not in out and len(vals) > 1:
                out["base (step 0)"] = vals[0]
            if vals:
                out[run.name] = vals[-1]
        elif (run / "perlang").is_dir():
            merged: dict[str, float] = {}
            for lang in languages:
                m = run / "perlang" / lang / "metrics.jsonl"
                vals = _vals(m) if m.exists() else []
                if vals:  # each language's own model: its "all" keys are that language's
                    merged.update({(lang + k[3:]) if k.startswith("all") else k: v for k, v in vals[-1].items()})
            out[run.name] = merged
    return dict(sorted(out.items(), key=lambda kv: kv[0] != "base (step 0)"))


def _method(setting: str) -> str:
    head, _, seed = setting.rpartition("-s")
    return head if head and seed.isdigit() else setting


def _metric(rows: list[dict[str, Any]], setting: str, lang: str, key: str) -> float:
    rs = [r for r in rows if r["setting"] == setting and lang in ("all", r["language"])]
    if not rs:
        return float("nan")
    if key == "kept_share":
        return sum(r["kept"] for r in rs) / max(1, sum(r["truth_chars"] for r in rs))
    return sum(float(r[key]) for r in rs) / len(rs)


def report(runs: Path | None, lc: Path | None, languages: list[str], skip: set[str]) -> str:
    lines: list[str] = []
    if runs is not None:
        losses = held_out_losses(runs, languages)
        for kind, title in (("", "held-out loss, both kinds"), ("/completion", "held-out loss, completion windows"),
                            ("/chat", "held-out loss, chat samples")):
            lines += ["", f"| {title} | " + " | ".join(languages) + " |", "|---|" + "---:|" * len(languages)]
            for name, v in losses.items():
                lines.append(f"| {name} | " + " | ".join(f"{v[lang + kind]:.3f}" if lang + kind in v else "–"
                                                         for lang in languages) + " |")
    if lc is not None:
        rows = [json.loads(x) for x in lc.read_text().splitlines() if x.strip()]
        rows = common_positions([r for r in rows if r["setting"] not in skip])
        methods: dict[str, list[str]] = {}
        for s in dict.fromkeys(r["setting"] for r in rows):
            methods.setdefault(_method(s), []).append(s)
        n = {lang: sum(r["language"] == lang for r in rows) // max(1, len({r["setting"] for r in rows}))
             for lang in languages}
        n["all"] = sum(n.values())
        for key, title in (("exact", "exact match"), ("edit_sim", "edit similarity"),
                           ("kept_share", "kept characters ÷ truth characters")):
            lines += ["", f"| {title} | n | " + " | ".join(f"{m} ({len(v)})" for m, v in methods.items()) + " |",
                      "|---|---:|" + "---:|" * len(methods)]
            for lang in [*languages, "all"]:
                cells = []
                for members in methods.values():
                    vals = [_metric(rows, s, lang, key) for s in members]
                    mean = sum(vals) / len(vals)
                    cells.append(f"{mean:.3f}" + (f" ({min(vals):.3f}-{max(vals):.3f})" if len(vals) > 1 else ""))
                lines.append(f"| {lang} | {n[lang]} | " + " | ".join(cells) + " |")
        if BASE in methods:
            lines.append("")
            base = {lang: _metric(rows, BASE, lang, "exact") for lang in languages}
            means: dict[str, dict[str, float]] = {}
            for m, members in methods.items():
                vals = {lang: [_metric(rows, s, lang, "exact") for s in members] for lang in languages}
                means[m] = {lang: sum(v) / len(v) for lang, v in vals.items()}
                if m == BASE:
                    continue
                beat = [lang for lang in languages if means[m][lang] - base[lang] > max(vals[lang]) - min(vals[lang])]
                lines.append(f"- {m}: exact match above the base by more than its seed range in {len(beat)}/"
                             f"{len(languages)} languages ({', '.join(beat) or 'none'})")
            if "mole" in means and "alllang" in means:
                ge = [lang for lang in languages if means["mole"][lang] >= means["alllang"][lang]]
                lines.append(f"- MoLE ≥ AllLang (mean exact match) in {len(ge)}/{len(languages)} languages "
                             f"({', '.join(ge) or 'none'})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, help="folder of training runs named METHOD-sSEED")
    ap.add_argument("--line-completion", type=Path, help="line_completion.jsonl of the same settings")
    ap.add_argument("--languages", default="cpp,go,java,javascript,python,rust")
    ap.add_argument("--skip", nargs="*", default=[], help="settings left out (e.g. an unfinished run)")
    args = ap.parse_args(argv)
    print(report(args.runs, args.line_completion, args.languages.split(","), set(args.skip)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
