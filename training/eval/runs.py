"""Model-driven runs: settings × tasks × analyses, chunk by chunk, every sample to a JSONL row.

One setting is one row of the paper's tables (No-FT = the base alone, a pack repository, or
per-language pack folders; see :mod:`training.eval.models`); :func:`run_setting` runs a
:class:`RunPlan` for it, :func:`sample_row` is the row written per sample (its execution verdict
included), and :mod:`training.eval.report` renders the tables and heatmaps from the rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from training.eval.executor import Executor
from training.eval.problems import BENCHMARK_LANGUAGES, Problem, language_id
from training.eval.tasks import (
    SampleResult,
    evaluate_code_task,
    evaluate_summarization,
    synthesis_prompts,
    translation_prompts,
)

__all__ = [
    "ALL_TASKS",
    "RunPlan",
    "evaluate_settings",
    "model_label",
    "order_languages",
    "parse_pairs",
    "run_setting",
    "sample_row",
]

ALL_TASKS = ("synthesis", "summarization", "translation")
_TAIL = 2000  # characters of stdout/stderr kept per sample in the JSONL


def parse_pairs(spec: str | None, languages: Sequence[str]) -> list[tuple[str, str]]:
    """Ordered language pairs: ``None``/``all`` = every ordered pair of ``languages``; otherwise a
    comma list of ``from:L`` (L to every other), ``to:L`` (every other to L) and ``A->B`` / ``A-B``."""
    langs = list(languages)
    every = [(a, b) for a in langs for b in langs if a != b]
    if spec is None or spec.strip().lower() in ("", "all"):
        return every
    out: list[tuple[str, str]] = []
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        if item.startswith(("from:", "to:")):
            side, _, name = item.partition(":")
            lang = language_id(name)
            picked = [p for p in every if p[0 if side == "from" else 1] == lang]
        else:
            a, sep, b = item.partition("->")
            if not sep:
                a, sep, b = item.partition("-")
            if not sep:
                raise ValueError(f"bad pair {item!r}: use from:L, to:L or A->B")
            picked = [(language_id(a), language_id(b))]
        for pair in picked:
            if pair[0] == pair[1]:
                raise ValueError(f"pair {item!r} translates a language into itself")
            if pair not in out:
                out.append(pair)
    missing = sorted({x for p in out for x in p} - set(langs))
    if missing:
        raise ValueError(f"pairs name languages that are not loaded: {', '.join(missing)}")
    return out


def _tail(text: str) -> str:
    return text[-_TAIL:]


def sample_row(model: str, result: SampleResult, *, setting: str, mode: str, forced_expert: str | None = None,
               nl_only: bool = False, generation: Mapping[str, Any] | None = None,
               summary_generation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One JSONL row: the sample, how it was generated and how its execution ended."""
    r = result.result
    return {
        "model": model,
        "setting": setting,
        "mode": mode,
        "routing": "nl-only" if nl_only else (f"expert:{forced_expert}" if forced_expert else "default"),
        "forced_expert": forced_expert,
        "task": result.task,
        "task_id": result.task_id,
        "language": result.language,
        "source_language": result.source_language,
        "sample": result.sample,
        "passed": r.passed,
        "status": r.status.value,
        "reason": r.reason,
        "exit_code": r.exit_code,
        "signal": r.signal,
        "stdout_tail": _tail(r.stdout),
        "stderr_tail": _tail(r.stderr),
        "compile_s": round(r.compile_s, 3),
        "run_s": round(r.run_s, 3),
        "cpu_s": round(r.cpu_s, 3),
        "max_rss_mb": round(r.max_rss_mb, 1),
        "exec_notes": list(r.notes),
        "response": result.response,
        "summary": result.summary,
        "generation": dict(generation) if generation is not None else None,
        "summary_generation": dict(summary_generation) if summary_generation is not None else None,
    }


def model_label(setting: str, mode: str, nl_only: bool = False) -> str:
    """The table row of a run: the setting, plus the mode and routing when not the paper's default."""
    return setting + (" [automated]" if mode == "automated" else "") + (" [NL only]" if nl_only else "")


@dataclass
class RunPlan:
    """What to run for each setting."""

    tasks: Sequence[str] = ALL_TASKS
    pairs: Sequence[tuple[str, str]] | None = None  # translation; None = every ordered pair
    modes: Sequence[str] = ("manual",)
    nl_only: bool = False
    misassign: bool = False
    n_samples: int = 1
    example_tests: bool = False


def run_setting(gen: Any, problems: Mapping[str, Sequence[Problem]], executor: Executor, plan: RunPlan,
                sink: Callable[[list[dict[str, Any]]], None], log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run the plan's tasks for one setting with ``gen`` (an :class:`training.eval.models.EngineGenerate`
    or anything with ``setting``, ``options``, ``records`` and ``__call__``), chunk by chunk (one
    language, or one translation pair), handing each chunk's rows to ``sink`` as soon as it is done."""
    setting = gen.setting
    base_options = gen.options
    rows_all: list[dict[str, Any]] = []
    variants: list[tuple[str, str | None, bool]] = []  # (mode, forced expert, nl only)
    if plan.misassign:
        if not setting.has_packs or setting.kind == "perlang":
            log(f"[{setting.name}] misassigned experts need a MoLE pack set with experts: skipped")
        else:
            variants += [("manual", expert, False) for expert in order_languages(problems)]
    elif plan.nl_only:
        if not setting.has_packs:
            log(f"[{setting.name}] NL only needs packs (an NL adapter): skipped")
        else:
            variants += [(mode, None, True) for mode in plan.modes]
    else:
        variants += [(mode, None, False) for mode in plan.modes]
    for mode, forced, nl_only in variants:
        gen.options = replace(base_options, mode=mode, forced_expert=forced, nl_only=nl_only)
        label = model_label(setting.name, mode, nl_only)
        for task in plan.tasks:
            if task == "translation" and (forced is not None):
                continue  # the misassignment analysis covers synthesis and summarization (paper Fig. 6)
            if task == "translation" and setting.kind == "perlang":
                log(f"[{setting.name}] translation: not applicable to per-language models (paper: N/A)")
                continue
            for chunk_name, chunk in _chunks(task, problems, plan.pairs):
                t0 = time.monotonic()
                start = len(gen.records)
                if task == "synthesis":
                    results = evaluate_code_task(synthesis_prompts(chunk), gen, executor, n_samples=plan.n_samples,
                                                 example_tests=plan.example_tests)
                    gens, sums = gen.records[start:], [None] * len(results)
                elif task == "summarization":
                    results = evaluate_summarization(chunk, gen, executor, n_samples=plan.n_samples)
                    recs = gen.records[start:]
                    sums, gens = recs[: len(results)], recs[len(results):]
                else:
                    src, tgt = chunk_name.split("->")
                    results = evaluate_code_task(translation_prompts(chunk, [(src, tgt)]), gen, executor,
                                                 n_samples=plan.n_samples, example_tests=plan.example_tests)
                    gens, sums = gen.records[start:], [None] * len(results)
                rows = [sample_row(label, r, setting=setting.name, mode=mode, forced_expert=forced, nl_only=nl_only,
                                   generation=g, summary_generation=s)
                        for r, g, s in zip(results, gens, sums, strict=True)]
                sink(rows)
                rows_all += rows
                passed = sum(r["passed"] for r in rows)
                what = f"{task} {chunk_name}" + (f" with the {forced} expert" if forced else "")
                log(f"[{label}] {what}: {passed}/{len(rows)} passed ({time.monotonic() - t0:.0f} s)")
    gen.options = base_options
    return rows_all


def order_languages(problems: Mapping[str, Sequence[Problem]]) -> list[str]:
    """The loaded languages: benchmark languages in registry order, then any others alphabetically."""
    return [x for x in BENCHMARK_LANGUAGES if x in problems] + sorted(set(problems) - set(BENCHMARK_LANGUAGES))


def _chunks(task: str, problems: Mapping[str, Sequence[Problem]], pairs: Sequence[tuple[str, str]] | None
            ) -> list[tuple[str, dict[str, Sequence[Problem]]]]:
    if task != "translation":
        return [(lang, {lang: problems[lang]}) for lang in order_languages(problems)]
    pairs = list(pairs) if pairs is not None else parse_pairs(None, order_languages(problems))
    return [(f"{a}->{b}", {a: problems[a], b: problems[b]}) for a, b in pairs if a in problems and b in problems]


def evaluate_settings(settings: Sequence[Any], problems: Mapping[str, Sequence[Problem]], executor: Executor,
                      plan: RunPlan, options: Any, loader: Any, out: Path, *, append: bool = False,
                      command: str = "", decoding: str = "", log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Run ``plan`` for every setting (:class:`training.eval.models.Setting`) on the base of ``loader``
    with generation ``options``, append the rows to ``out/generations.jsonl`` (started afresh unless
    ``append``) and write the report over all rows there; returns (rows file, report file)."""
    from training.eval.models import setting_generate
    from training.eval.report import load_rows, write_report

    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "generations.jsonl"
    if not append and jsonl.exists():
        jsonl.unlink()

    def sink(rows: list[dict[str, Any]]) -> None:
        with jsonl.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    started = time.monotonic()
    n_problems = {lang: len(ps) for lang, ps in problems.items()}
    names = [s.name for s in settings]
    log(f"base {loader.name} on {loader.device}; settings: {', '.join(names)}; problems per language: {n_problems}")
    for setting in settings:
        with setting_generate(setting, loader, options, log=log) as gen:
            run_setting(gen, problems, executor, plan, sink, log=log)
    secs = time.monotonic() - started
    meta = [f"command: `{command}`", f"base: {loader.name} ({loader.info.repo_id}), device {loader.device}",
            "settings: " + ", ".join(f"{s.name} = {s.path or 'base only'}" for s in settings),
            f"problems per language: {n_problems}; decoding: {decoding}", f"wall time of this run: {secs / 60:.1f} min"]
    rows = load_rows([jsonl])
    report = write_report(rows, out, title="Evaluation (HumanEval-X / HumanEvalPack tasks)", meta=meta)
    return jsonl, report
