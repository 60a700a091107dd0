"""Evaluation reports in the paper's layout, from the JSONL rows ``training.eval.runs`` writes.

One row per generated sample (see :func:`training.eval.runs.sample_row`); the fields used here:
``model`` (the table row: setting, plus mode/routing when not the default), ``task``
(``synthesis``, ``summarization``, ``translation``), ``task_id``, ``language`` (of the tested code),
``source_language`` (translation), ``forced_expert`` (misassignment analysis), ``passed``, ``status``.

Tables (Markdown), pass@k in percent (pass@1 with greedy decoding as in the paper):

- Table II: one row per model, one column per task (mean over every problem of every language);
- per-language tables like Tables III (summarization) and IV (synthesis);
- the 6×6 translation matrix per model (rows: source, columns: target);
- the misassignment matrix per model and task (rows: the problem's language, columns: the expert
  used; the diagonal is the right expert), paper RQ4 / Figure 6;
- outcome counts (exit reasons) and generation facts per model and task.

Heatmaps (PNG, matplotlib with the Agg backend) for the translation and misassignment matrices.

Command line (re-render, or merge the rows of several runs into one report)::

    python -m training.eval_report RUN1/generations.jsonl [RUN2/generations.jsonl ...] --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from training.eval.passk import pass_at_k_table
from training.eval.problems import BENCHMARK_LANGUAGES

Row = Mapping[str, Any]
TASKS = ("summarization", "synthesis", "translation")  # the paper's column order
TASK_TITLES = {"summarization": "Summarization", "synthesis": "Synthesis", "translation": "Translation"}

__all__ = [
    "aggregate",
    "heatmap",
    "language_table",
    "load_rows",
    "misassign_matrix",
    "outcome_table",
    "render_report",
    "summary_table",
    "translation_matrix",
    "write_report",
]


def _name(lang: str) -> str:
    from training.eval.problems import display_name

    try:
        return display_name(lang)
    except (KeyError, ValueError):
        return lang


def _order(langs: Iterable[str]) -> list[str]:
    """Benchmark languages in the paper's order, then any others alphabetically."""
    langs = set(langs)
    return [x for x in BENCHMARK_LANGUAGES if x in langs] + sorted(langs - set(BENCHMARK_LANGUAGES))


def _models(rows: Iterable[Row]) -> list[str]:
    return list(dict.fromkeys(r["model"] for r in rows))


def load_rows(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


# --------------------------------------------------------------------------------------------------
# Aggregation


def _group_key(row: Row) -> str:
    if row.get("forced_expert"):
        return f"{row['language']}@{row['forced_expert']}"
    if row.get("source_language"):
        return f"{row['source_language']}->{row['language']}"
    return str(row["language"])


def aggregate(rows: Iterable[Row], ks: Iterable[int] = (1,)) -> dict[tuple[str, str, bool], dict[str, dict[int, float]]]:
    """``(model, task, misassign) -> key -> {k: pass@k}`` with the unbiased estimator over the samples
    of each problem. Keys: language, ``"src->tgt"`` (translation), ``"lang@expert"`` (misassignment),
    and ``"all"`` (mean over every problem of every key)."""
    ks = tuple(ks)
    grouped: dict[tuple[str, str, bool], dict[str, dict[str, list[bool]]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        g = (r["model"], r["task"], bool(r.get("forced_expert")))
        grouped[g][_group_key(r)].setdefault(str(r["task_id"]), []).append(bool(r["passed"]))
    out: dict[tuple[str, str, bool], dict[str, dict[int, float]]] = {}
    for g, by_key in grouped.items():
        table = {key: pass_at_k_table(pp, ks) for key, pp in sorted(by_key.items())}
        table["all"] = pass_at_k_table({f"{key}:{t}": v for key, pp in by_key.items() for t, v in pp.items()}, ks)
        out[g] = table
    return out


def _problems(rows: Iterable[Row]) -> dict[tuple[str, str, bool], dict[str, int]]:
    """Number of problems behind each aggregate cell (for the tables' notes)."""
    seen: dict[tuple[str, str, bool], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in rows:
        g = (r["model"], r["task"], bool(r.get("forced_expert")))
        seen[g][_group_key(r)].add(str(r["task_id"]))
        seen[g]["all"].add(f"{_group_key(r)}:{r['task_id']}")
    return {g: {k: len(v) for k, v in d.items()} for g, d in seen.items()}


def _pct(value: float | None) -> str:
    return "N/A" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def _md_table(head: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def _value(agg: Mapping[tuple[str, str, bool], Mapping[str, Mapping[int, float]]], model: str, task: str,
           key: str, k: int, misassign: bool = False) -> float | None:
    return agg.get((model, task, misassign), {}).get(key, {}).get(k)


# --------------------------------------------------------------------------------------------------
# Tables


def summary_table(rows: Sequence[Row], k: int = 1) -> str:
    """Table II: pass@k per model and task, averaged over every problem of every language."""
    agg = aggregate(rows, (k,))
    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    body = [[m, *(_pct(_value(agg, m, t, "all", k)) for t in tasks)] for m in _models(rows)
            if any((m, t, False) in agg for t in tasks)]
    return _md_table(["Model", *(TASK_TITLES[t] for t in tasks)], body)


def language_table(rows: Sequence[Row], task: str, k: int = 1) -> str:
    """Tables III/IV: pass@k per model and language, with the average over every problem."""
    agg = aggregate(rows, (k,))
    sel = [r for r in rows if r["task"] == task and not r.get("forced_expert")]
    langs = _order(r["language"] for r in sel)
    body = [[m, *(_pct(_value(agg, m, task, lang, k)) for lang in langs), _pct(_value(agg, m, task, "all", k))]
            for m in _models(sel)]
    return _md_table(["Model", *(_name(x) for x in langs), "Avg"], body)


def _matrix(cells: Mapping[tuple[str, str], float], rows_: Sequence[str], cols: Sequence[str]
            ) -> tuple[list[list[float]], list[float], list[float]]:
    """Cell values (NaN where absent) with row and column means over the present cells."""
    grid = [[cells.get((a, b), math.nan) for b in cols] for a in rows_]

    def mean(xs: Iterable[float]) -> float:
        xs = [x for x in xs if not math.isnan(x)]
        return sum(xs) / len(xs) if xs else math.nan

    return grid, [mean(line) for line in grid], [mean(col) for col in zip(*grid, strict=True)] if grid else []


def _translation_cells(rows: Sequence[Row], model: str, k: int) -> tuple[dict[tuple[str, str], float], list[str], list[str]]:
    sel = [r for r in rows if r["model"] == model and r["task"] == "translation" and not r.get("forced_expert")]
    agg = aggregate(sel, (k,)).get((model, "translation", False), {})
    cells = {}
    for key, v in agg.items():
        if "->" in key and k in v:
            src, tgt = key.split("->")
            cells[(src, tgt)] = v[k]
    return cells, _order(a for a, _ in cells), _order(b for _, b in cells)


def translation_matrix(rows: Sequence[Row], model: str, k: int = 1) -> str:
    """The 6×6 translation matrix of one model: rows source, columns target, with means."""
    cells, srcs, tgts = _translation_cells(rows, model, k)
    if not cells:
        return ""
    grid, row_mean, col_mean = _matrix(cells, srcs, tgts)
    body = [[f"**{_name(s)}**", *(_pct(v) if (s, t) in cells else ("—" if s == t else "N/A")
                                  for t, v in zip(tgts, line, strict=True)), _pct(m)]
            for s, line, m in zip(srcs, grid, row_mean, strict=True)]
    body.append(["**Avg**", *(_pct(v) for v in col_mean), _pct(sum(cells.values()) / len(cells))])
    return _md_table(["source \\ target", *(_name(t) for t in tgts), "Avg"], body)


def _misassign_cells(rows: Sequence[Row], model: str, task: str, k: int
                     ) -> tuple[dict[tuple[str, str], float], list[str], list[str]]:
    sel = [r for r in rows if r["model"] == model and r["task"] == task and r.get("forced_expert")]
    agg = aggregate(sel, (k,)).get((model, task, True), {})
    cells = {}
    for key, v in agg.items():
        if "@" in key and k in v:
            lang, expert = key.split("@")
            cells[(lang, expert)] = v[k]
    return cells, _order(a for a, _ in cells), _order(b for _, b in cells)


def misassign_matrix(rows: Sequence[Row], model: str, task: str, k: int = 1) -> str:
    """RQ4: pass@k of language L (rows) answered with the expert of M (columns); the diagonal is
    the right expert. "Δ wrong" = mean over the wrong experts minus the right one."""
    cells, langs, experts = _misassign_cells(rows, model, task, k)
    if not cells:
        return ""
    grid, row_mean, col_mean = _matrix(cells, langs, experts)
    body = []
    for lang, line in zip(langs, grid, strict=True):
        right = cells.get((lang, lang))
        wrong = [v for (a, b), v in cells.items() if a == lang and b != lang]
        delta = (sum(wrong) / len(wrong) - right) if wrong and right is not None else None
        shown = [(f"**{_pct(v)}**" if e == lang else _pct(v)) if (lang, e) in cells else "N/A"
                 for e, v in zip(experts, line, strict=True)]
        body.append([_name(lang), *shown, "N/A" if delta is None else f"{100 * delta:+.2f}"])
    body.append(["**Avg**", *(_pct(v) for v in col_mean), ""])
    return _md_table(["language \\ expert", *(_name(e) for e in experts), "Δ wrong"], body)


def outcome_table(rows: Sequence[Row]) -> str:
    """How the samples ended, per model and task: execution statuses and generation stop reasons."""
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in rows:
        task = r["task"] + (" (misassigned)" if r.get("forced_expert") else "")
        groups[(r["model"], task)].append(r)
    statuses = sorted({r["status"] for r in rows})
    body = []
    for (model, task), rs in groups.items():
        st = Counter(r["status"] for r in rs)
        stops = Counter((r.get("generation") or {}).get("stop_reason", "?") for r in rs)
        toks = [(r.get("generation") or {}).get("new_tokens", 0) for r in rs]
        ms = sum((r.get("generation") or {}).get("ms", 0.0) for r in rs)
        if any(r.get("summary_generation") for r in rs):
            ms += sum((r.get("summary_generation") or {}).get("ms", 0.0) for r in rs)
        body.append([model, task, str(len(rs)), *(str(st.get(s, 0)) for s in statuses),
                     ", ".join(f"{k} {v}" for k, v in stops.most_common()),
                     f"{sum(toks) / max(1, len(toks)):.0f}", f"{ms / 1000:.0f}"])
    return _md_table(["Model", "Task", "samples", *statuses, "stop reasons", "mean new tokens", "gen s"], body)


# --------------------------------------------------------------------------------------------------
# Heatmaps


def heatmap(cells: Mapping[tuple[str, str], float], rows_: Sequence[str], cols: Sequence[str], path: str | Path,
            title: str, xlabel: str, ylabel: str, highlight_diagonal: bool = False) -> Path:
    """A percent heatmap (0..100) of ``cells`` written as PNG; absent cells are blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid, _, _ = _matrix(cells, rows_, cols)
    data = [[100 * v for v in line] for line in grid]
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2.2, 0.9 * len(rows_) + 1.6), dpi=110)
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(cols)), [_name(c) for c in cols])
    ax.set_yticks(range(len(rows_)), [_name(r) for r in rows_])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    for i, line in enumerate(data):
        for j, v in enumerate(line):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8,
                        color="black" if v > 60 else "white",
                        fontweight="bold" if highlight_diagonal and rows_[i] == cols[j] else "normal")
    fig.colorbar(im, ax=ax, label="pass@k (%)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


# --------------------------------------------------------------------------------------------------
# The whole report


def available_ks(rows: Sequence[Row]) -> list[int]:
    """pass@k levels every problem has samples for (1 always; 10, 100 with enough samples)."""
    per: dict[tuple[str, str, str, str], int] = Counter((r["model"], r["task"], _group_key(r), str(r["task_id"]))
                                                        for r in rows)
    n = min(per.values(), default=1)
    return [k for k in (1, 10, 100) if k <= n]


def render_report(rows: Sequence[Row], out_dir: str | Path | None = None, *, title: str = "Evaluation",
                  meta: Sequence[str] = (), heatmaps: bool = True) -> str:
    """The Markdown report; with ``out_dir``, heatmaps are written there and linked."""
    out = Path(out_dir) if out_dir is not None else None
    std = [r for r in rows if not r.get("forced_expert")]
    mis = [r for r in rows if r.get("forced_expert")]
    ks = available_ks(rows) if rows else [1]
    counts = _problems(rows)
    parts = [f"# {title}", ""]
    parts += [f"- {m}" for m in meta]
    if meta:
        parts.append("")
    for k in ks:
        parts += [f"## pass@{k} (%)", ""]
        if std:
            parts += [f"### Summary (Table II layout), pass@{k}", "", summary_table(std, k), ""]
            n_all = {f"{m} / {t}": c["all"] for (m, t, ma), c in counts.items() if not ma}
            parts += ["Problems per cell: " + ", ".join(f"{key}: {n}" for key, n in n_all.items()), ""]
        for task, label in (("summarization", "Table III layout"), ("synthesis", "Table IV layout")):
            if any(r["task"] == task for r in std):
                parts += [f"### {TASK_TITLES[task]} per language ({label}), pass@{k}", "",
                          language_table(std, task, k), ""]
        for model in _models(std):
            table = translation_matrix(std, model, k)
            if not table:
                continue
            parts += [f"### Translation matrix — {model}, pass@{k} (rows: source, columns: target)", "", table, ""]
            if out is not None and heatmaps:
                cells, srcs, tgts = _translation_cells(std, model, k)
                png = heatmap(cells, srcs, tgts, out / f"translation_{_slug(model)}_pass{k}.png",
                              f"Translation pass@{k} — {model}", "target", "source")
                parts += [f"![translation {model}]({png.name})", ""]
        for model in _models(mis):
            for task in TASKS:
                table = misassign_matrix(mis, model, task, k)
                if not table:
                    continue
                parts += [f"### Misassigned expert (RQ4) — {model}, {task}, pass@{k} "
                          "(rows: problem language, columns: expert used; bold: the right expert)", "", table, ""]
                if out is not None and heatmaps:
                    cells, langs, experts = _misassign_cells(mis, model, task, k)
                    png = heatmap(cells, langs, experts, out / f"misassign_{_slug(model)}_{task}_pass{k}.png",
                                  f"{TASK_TITLES[task]} pass@{k} with expert M on language L — {model}",
                                  "expert used (M)", "problem language (L)", highlight_diagonal=True)
                    parts += [f"![misassign {model} {task}]({png.name})", ""]
    if rows:
        parts += ["## Outcomes", "", outcome_table(rows), ""]
    return "\n".join(parts).rstrip() + "\n"


def write_report(rows: Sequence[Row], out_dir: str | Path, *, title: str = "Evaluation", meta: Sequence[str] = (),
                 heatmaps: bool = True) -> Path:
    """Write ``report.md`` (and the heatmaps) and ``results.json`` (every aggregate) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = render_report(rows, out, title=title, meta=meta, heatmaps=heatmaps)
    (out / "report.md").write_text(text, encoding="utf-8")
    ks = available_ks(rows) if rows else [1]
    agg = aggregate(rows, ks)
    results = [{"model": m, "task": t, "misassign": ma, "key": key, **{f"pass@{k}": v for k, v in vals.items()}}
               for (m, t, ma), table in agg.items() for key, vals in table.items()]
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    return out / "report.md"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.eval_report", description=__doc__.split("\n\n")[0])
    ap.add_argument("jsonl", nargs="+", help="generations.jsonl files written by training.eval.runs")
    ap.add_argument("--out", required=True, help="folder for report.md, results.json and the heatmaps")
    ap.add_argument("--title", default="Evaluation")
    ap.add_argument("--no-heatmaps", action="store_true")
    args = ap.parse_args(argv)
    rows = load_rows(args.jsonl)
    path = write_report(rows, args.out, title=args.title, meta=[f"rows from {', '.join(args.jsonl)}"],
                        heatmaps=not args.no_heatmaps)
    print(path.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
