"""Evaluation on the paper's HumanEvalPack tasks (MoLE §III-B; pass@1 with greedy decoding, §IV-C).

Building blocks, usable from code:

- :func:`check_reference`: run the dataset's reference solutions (the executor's self-test);
- :func:`evaluate_code_task`: prompts → ``generate`` → extract code → run the tests, for synthesis,
  translation and the second step of summarization;
- :func:`evaluate_summarization`: description first, then code from the description;
- :func:`pass_rates`: pass@k per task and language (or language pair).

``generate`` is any callable taking a batch of :class:`~training.eval.humaneval.TaskPrompt` and returning,
per prompt, the text generated after ``prompt.response_prefix`` (the model side lives in the server's
engine and plugs in here).

Model runs (:func:`run_setting`) generate with :mod:`mole_lsp.engine.engine` through
:mod:`training.eval.models` (one setting per row of the tables: No-FT = the base alone, a pack
repository, or per-language pack folders), chunk by chunk, and write every sample with its execution
verdict to ``generations.jsonl``; :mod:`training.eval.report` renders the paper's tables and heatmaps.

Command line::

    python -m training.evaluate --check-reference --data ../shared/data/humaneval-x \
        [--languages cpp go ...] [--limit N] [--workers N] [--as-response synthesis]
    python -m training.evaluate --data ../shared/data/humaneval-x --base-model quickstart \
        --base-only --packs mole=DIR --packs alllang=DIR [--tasks synthesis,summarization,translation] \
        [--pairs from:python,to:python] [--mode manual|automated] [--nl-only | --misassign] \
        [--n-samples N --temperature T] [--limit N] --out OUT [--append]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool (2-core machines)

from training.eval.execution import ExecResult, Executor, Limits, Status, Toolchain
from training.eval.humaneval import (
    HUMANEVALPACK_REPO,
    Problem,
    TaskPrompt,
    build_program,
    clean_summary,
    load_problems,
    program_from_response,
    summarization_prompt,
    summary_synthesis_prompt,
    synthesis_prompt,
    translation_prompt,
)
from training.eval.passk import pass_at_k_table

Generate = Callable[[Sequence[TaskPrompt]], list[str]]


@dataclass
class SampleResult:
    task: str
    task_id: str
    language: str  # language of the tested code
    source_language: str | None  # translation source
    sample: int  # index among the samples of this prompt
    result: ExecResult
    response: str = ""
    summary: str | None = None  # summarization: the cleaned description the code was written from

    @property
    def key(self) -> str:
        """Groups results for reports: language, or "source->target" for translation."""
        return f"{self.source_language}->{self.language}" if self.source_language else self.language


# --------------------------------------------------------------------------------------------------
# Reference check


def _reference_response(problem: Problem, mode: str) -> tuple[TaskPrompt, str]:
    if mode == "synthesis":
        prompt = synthesis_prompt(problem)
    elif mode == "translation":
        prompt = translation_prompt(problem, problem)
    elif mode == "summary_synthesis":
        prompt = summary_synthesis_prompt(problem, problem.docstring)
    else:
        raise ValueError(f"unknown response mode {mode!r}")
    return prompt, problem.solution.rstrip("\n") + "\n```\n"


def check_reference(problems: Mapping[str, Sequence[Problem]], executor: Executor, *, as_response: str | None = None,
                    example_tests: bool = False,
                    on_result: Callable[[Problem, ExecResult], None] | None = None) -> list[tuple[Problem, ExecResult]]:
    """Run every problem's reference solution against its tests. ``as_response`` routes the solution
    through a task's answer path instead (fenced answer → extract_code → whole-code assembly), which
    checks that path on 164 known-good answers per language."""
    flat = [p for ps in problems.values() for p in ps]
    results: list[ExecResult | None] = [None] * len(flat)
    jobs, where = [], []
    for i, p in enumerate(flat):
        if as_response:
            prompt, response = _reference_response(p, as_response)
            program = program_from_response(prompt, response, example_tests=example_tests)
        else:
            program = build_program(p, p.solution, example_tests=example_tests)
        if program is None:
            results[i] = ExecResult(p.language, Status.FAILED, "no code extracted from the answer")
            if on_result is not None:
                on_result(p, results[i])
        else:
            jobs.append((p.language, program))
            where.append(i)

    def report(j: int, r: ExecResult) -> None:
        if on_result is not None:
            on_result(flat[where[j]], r)

    for j, r in enumerate(executor.run_many(jobs, on_result=report)):
        results[where[j]] = r
    return [(p, r) for p, r in zip(flat, results, strict=True) if r is not None]


def format_reference_table(outcomes: Sequence[tuple[Problem, ExecResult]]) -> str:
    rows: dict[str, list[ExecResult]] = defaultdict(list)
    for p, r in outcomes:
        rows[p.language].append(r)
    head = f"{'language':<12}{'passed':>8}{'failed':>8}{'total':>8}{'compile+run s':>15}"
    lines = [head, "-" * len(head)]
    tot_p = tot = 0
    for lang in sorted(rows):
        rs = rows[lang]
        passed = sum(r.passed for r in rs)
        secs = sum(r.compile_s + r.run_s for r in rs)
        lines.append(f"{lang:<12}{passed:>8}{len(rs) - passed:>8}{len(rs):>8}{secs:>15.1f}")
        tot_p, tot = tot_p + passed, tot + len(rs)
    lines.append("-" * len(head))
    lines.append(f"{'all':<12}{tot_p:>8}{tot - tot_p:>8}{tot:>8}")
    return "\n".join(lines)


def format_failures(outcomes: Sequence[tuple[Problem, ExecResult]]) -> list[str]:
    out = []
    for p, r in outcomes:
        if not r.passed:
            out.append(f"{p.task_id:<16} {r.status.value:<14} {r.reason}")
    return out


def format_notes(outcomes: Sequence[tuple[Problem, ExecResult]]) -> list[str]:
    return [f"{p.task_id:<16} {'; '.join(r.notes)}" for p, r in outcomes if r.notes]


# --------------------------------------------------------------------------------------------------
# Model-driven tasks


def evaluate_code_task(prompts: Sequence[TaskPrompt], generate: Generate, executor: Executor, *, n_samples: int = 1,
                       example_tests: bool = False) -> list[SampleResult]:
    """Generate ``n_samples`` answers per prompt, build each test program and run them all."""
    batch = [p for p in prompts for _ in range(n_samples)]
    responses = generate(batch)
    if len(responses) != len(batch):
        raise ValueError(f"generate returned {len(responses)} answers for {len(batch)} prompts")
    programs = [program_from_response(p, r, example_tests=example_tests) for p, r in zip(batch, responses, strict=True)]
    idx = [i for i, prog in enumerate(programs) if prog is not None]
    ran = dict(zip(idx, executor.run_many([(batch[i].problem.language, programs[i]) for i in idx]), strict=True))
    out = []
    for i, (p, r) in enumerate(zip(batch, responses, strict=True)):
        res = ran.get(i) or ExecResult(p.problem.language, Status.FAILED, "no code block of the target language")
        out.append(SampleResult(p.task, p.problem.task_id, p.problem.language,
                                p.source.language if p.source else None, i % n_samples, res, r))
    return out


def synthesis_prompts(problems: Mapping[str, Sequence[Problem]]) -> list[TaskPrompt]:
    return [synthesis_prompt(p) for ps in problems.values() for p in ps]


def translation_prompts(problems: Mapping[str, Sequence[Problem]],
                        pairs: Iterable[tuple[str, str]] | None = None) -> list[TaskPrompt]:
    """All ordered pairs of distinct languages (30 for six), problems paired by number."""
    langs = sorted(problems)
    pairs = list(pairs) if pairs is not None else [(a, b) for a in langs for b in langs if a != b]
    out = []
    for src, tgt in pairs:
        by_index = {p.index: p for p in problems[src]}
        out += [translation_prompt(by_index[t.index], t) for t in problems[tgt] if t.index in by_index]
    return out


def evaluate_summarization(problems: Mapping[str, Sequence[Problem]], generate: Generate, executor: Executor, *,
                           n_samples: int = 1) -> list[SampleResult]:
    """Describe each reference solution, then write code from the (cleaned) description alone."""
    first = [summarization_prompt(p) for ps in problems.values() for p in ps for _ in range(n_samples)]
    summaries = [clean_summary(p.problem, s) for p, s in zip(first, generate(first), strict=True)]
    second = [summary_synthesis_prompt(p.problem, s) for p, s in zip(first, summaries, strict=True)]
    results = evaluate_code_task(second, generate, executor)
    for i, (r, s) in enumerate(zip(results, summaries, strict=True)):
        r.task, r.summary, r.sample = "summarization", s, i % n_samples
    return results


def pass_rates(results: Iterable[SampleResult], ks: Iterable[int] = (1,)) -> dict[str, dict[str, dict[int, float]]]:
    """task -> key (language or pair) -> {k: pass@k}, plus key "all" (mean over every problem)."""
    grouped: dict[str, dict[str, dict[str, list[bool]]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        grouped[r.task][r.key].setdefault(r.task_id, []).append(r.result.passed)
    ks = tuple(ks)
    out: dict[str, dict[str, dict[int, float]]] = {}
    for task, by_key in grouped.items():
        out[task] = {key: pass_at_k_table(per_problem, ks) for key, per_problem in sorted(by_key.items())}
        everything = {f"{key}:{tid}": v for key, pp in by_key.items() for tid, v in pp.items()}
        out[task]["all"] = pass_at_k_table(everything, ks)
    return out


# --------------------------------------------------------------------------------------------------
# Command line


@dataclass
class _Progress:
    total: int
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)

    def __call__(self, problem: Problem, result: ExecResult) -> None:
        self.done += 1
        self.failed += not result.passed
        tty = sys.stderr.isatty()
        if tty or self.done % 50 == 0 or self.done == self.total:
            last = self.done == self.total
            print(f"{chr(13) if tty else ''}{self.done}/{self.total} run, {self.failed} not passed, "
                  f"{time.monotonic() - self.started:.0f} s", end="\n" if last or not tty else "",
                  file=sys.stderr, flush=True)


def _describe_toolchain(tc: Toolchain) -> str:
    if not tc.available:
        return f"{tc.language:<12}MISSING: {'; '.join(tc.missing)}"
    extra = f"  (missing extras: {'; '.join(tc.extras_missing)})" if tc.extras_missing else ""
    return f"{tc.language:<12}{tc.version}{extra}"


# --------------------------------------------------------------------------------------------------
# Model-driven runs: settings × tasks × analyses, every sample to JSONL

ALL_TASKS = ("synthesis", "summarization", "translation")
_TAIL = 2000  # characters of stdout/stderr kept per sample in the JSONL


def parse_pairs(spec: str | None, languages: Sequence[str]) -> list[tuple[str, str]]:
    """Ordered language pairs: ``None``/``all`` = every ordered pair of ``languages``; otherwise a
    comma list of ``from:L`` (L to every other), ``to:L`` (every other to L) and ``A->B`` / ``A-B``."""
    from training.eval.humaneval import language_id

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
    from dataclasses import replace

    setting = gen.setting
    base_options = gen.options
    rows_all: list[dict[str, Any]] = []
    variants: list[tuple[str, str | None, bool]] = []  # (mode, forced expert, nl only)
    if plan.misassign:
        if not setting.has_packs or setting.kind == "perlang":
            log(f"[{setting.name}] misassigned experts need a MoLE pack set with experts: skipped")
        else:
            variants += [("manual", expert, False) for expert in _order_langs(problems)]
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


def _order_langs(problems: Mapping[str, Sequence[Problem]]) -> list[str]:
    from training.eval.humaneval import BENCHMARK_LANGUAGES

    return [x for x in BENCHMARK_LANGUAGES if x in problems] + sorted(set(problems) - set(BENCHMARK_LANGUAGES))


def _chunks(task: str, problems: Mapping[str, Sequence[Problem]], pairs: Sequence[tuple[str, str]] | None
            ) -> list[tuple[str, dict[str, Sequence[Problem]]]]:
    if task != "translation":
        return [(lang, {lang: problems[lang]}) for lang in _order_langs(problems)]
    pairs = list(pairs) if pairs is not None else parse_pairs(None, _order_langs(problems))
    return [(f"{a}->{b}", {a: problems[a], b: problems[b]}) for a, b in pairs if a in problems and b in problems]


# --------------------------------------------------------------------------------------------------
# Command line


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
    data = ap.add_argument_group("data")
    data.add_argument("--data", default=HUMANEVALPACK_REPO,
                      help="HumanEval-X/HumanEvalPack directory or file, or the Hub dataset id (default)")
    data.add_argument("--revision", default=None, help="Hub revision of the dataset")
    data.add_argument("--languages", nargs="+", default=None,
                      help="language ids or names, space or comma separated (default: all found)")
    data.add_argument("--limit", type=int, default=None, help="first N problems per language")
    tasks = ap.add_argument_group("tasks and analyses")
    tasks.add_argument("--check-reference", action="store_true",
                       help="run the dataset's reference solutions through the executor (self-test)")
    tasks.add_argument("--as-response", choices=["synthesis", "translation", "summary_synthesis"], default=None,
                       help="with --check-reference: feed each reference through that task's answer path")
    tasks.add_argument("--tasks", default=",".join(ALL_TASKS), help="comma list of synthesis, summarization, "
                       "translation (default: all three)")
    tasks.add_argument("--pairs", default=None, help="translation pairs: all (default: the 30 ordered pairs of the "
                       "loaded languages), or a comma list of from:L, to:L, A->B")
    tasks.add_argument("--mode", default="manual", help="code answers in manual mode (the target expert; default) "
                       "or automated mode (the live fence parser); 'manual,automated' runs both")
    tasks.add_argument("--nl-only", action="store_true", help="route every token through the NL adapter (packs only)")
    tasks.add_argument("--misassign", action="store_true",
                       help="RQ4: answer language L with the expert of M for every L, M (6×6; synthesis and "
                            "summarization; diagonal = the right expert)")
    models = ap.add_argument_group("models")
    models.add_argument("--base-model", default=None,
                        help="base model: local folder, .gguf, Hub id, or 'quickstart' (default: MOLE_BASE_MODEL "
                             "or the quick-start SmolLM2-135M-Instruct)")
    models.add_argument("--packs", action="append", default=[], metavar="NAME=DIR",
                        help="a pack set to evaluate (repeatable): a pack repository folder (core/, experts/), or "
                             "a folder of per-language pack folders (PerLang-FT)")
    models.add_argument("--base-only", action="store_true",
                        help=f"evaluate the base model alone ({BASE_ONLY_NAME}); the default without --packs")
    models.add_argument("--device", default="auto")
    models.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable cores)")
    gen = ap.add_argument_group("generation")
    gen.add_argument("--n-samples", type=int, default=1, help="samples per problem (pass@k for k <= n)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the paper's pass@1)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--max-new-tokens", type=int, default=512)
    gen.add_argument("--summary-max-new-tokens", type=int, default=None,
                     help="explanations (default: about half the description's character budget, capped by "
                          "--max-new-tokens)")
    run = ap.add_argument_group("execution and output")
    run.add_argument("--workers", type=int, default=2)
    run.add_argument("--timeout", type=float, default=Limits.wall_s, help="wall-clock seconds per test run")
    run.add_argument("--memory-mb", type=int, default=Limits.memory_mb)
    run.add_argument("--example-tests", action="store_true", help="use the docstring examples as tests")
    run.add_argument("--out", default=None, help="output folder: generations.jsonl, report.md, results.json, PNGs "
                     "(required for model runs)")
    run.add_argument("--append", action="store_true",
                     help="add to the rows already in --out and report over all of them (several runs, one report)")
    return ap


_EPILOG = """\
examples:
  python -m training.evaluate --check-reference --data ../shared/data/humaneval-x --workers 2
  python -m training.evaluate --data ../shared/data/humaneval-x --base-model ../shared/models/smollm2-135m-instruct \\
      --base-only --packs mole=/tmp/exp/mole/packs --tasks synthesis --limit 20 --out out/eval
  python -m training.evaluate ... --tasks translation --pairs from:python,to:python --limit 10 --out out/eval --append
  python -m training.evaluate ... --packs mole=DIR --misassign --tasks synthesis --limit 10 --out out/rq4
"""
BASE_ONLY_NAME = "No-FT"


def _executor(args: argparse.Namespace) -> Executor:
    limits = Limits(wall_s=args.timeout, cpu_s=max(1, int(args.timeout)), memory_mb=args.memory_mb)
    return Executor(limits, workers=args.workers)


def _load(args: argparse.Namespace) -> dict[str, list[Problem]]:
    langs = None
    if args.languages:
        langs = [x for item in args.languages for x in item.split(",") if x.strip()]
    problems = load_problems(None if args.data == HUMANEVALPACK_REPO else args.data, langs, revision=args.revision)
    if args.limit is not None:
        problems = {lang: ps[: args.limit] for lang, ps in problems.items()}
    return problems


def _runnable(problems: dict[str, list[Problem]], executor: Executor) -> dict[str, list[Problem]]:
    print("sandbox:")
    for line in executor.info.lines():
        print(f"  {line}")
    toolchains = executor.prepare(sorted(problems))
    print("toolchains:")
    for tc in toolchains.values():
        print(f"  {_describe_toolchain(tc)}")
    skipped = sorted(lang for lang, tc in toolchains.items() if not tc.available)
    if skipped:
        print(f"skipped (toolchain missing, not counted): {', '.join(skipped)}")
    return {lang: ps for lang, ps in problems.items() if lang not in skipped}


def main(argv: Sequence[str] | None = None) -> int:
    ap = _build_parser()
    args = ap.parse_args(argv)
    if args.check_reference:
        return _check_reference_main(args)
    if args.out is None:
        ap.error("--out DIR is required for model runs")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = sorted(set(tasks) - set(ALL_TASKS))
    if bad or not tasks:
        ap.error(f"--tasks: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(ALL_TASKS)}")
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    if not modes or set(modes) - {"manual", "automated"}:
        ap.error("--mode: manual, automated or both (comma separated)")
    if args.n_samples < 1:
        ap.error("--n-samples must be >= 1")
    if args.n_samples > 1 and args.temperature <= 0:
        ap.error("--n-samples > 1 needs --temperature > 0 (greedy samples are all the same)")
    if args.misassign and args.nl_only:
        ap.error("--misassign and --nl-only are separate runs")

    from training.eval.models import BaseLoader, GenOptions, base_only_setting, parse_packs, setting_generate
    from training.eval.report import load_rows, write_report

    try:
        settings = [parse_packs(spec) for spec in args.packs]
    except ValueError as e:
        ap.error(str(e))
    if args.base_only or not settings:
        settings.insert(0, base_only_setting(BASE_ONLY_NAME))
    names = [s.name for s in settings]
    if len(set(names)) != len(names):
        ap.error(f"setting names must differ: {names}")

    problems = _load(args)
    try:
        pairs = parse_pairs(args.pairs, _order_langs(problems)) if "translation" in tasks else None
    except ValueError as e:
        ap.error(str(e))
    executor = _executor(args)
    runnable = _runnable(problems, executor)
    if pairs is not None:
        pairs = [p for p in pairs if p[0] in runnable and p[1] in runnable]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "generations.jsonl"
    if not args.append and jsonl.exists():
        jsonl.unlink()

    def sink(rows: list[dict[str, Any]]) -> None:
        with jsonl.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.monotonic()
    loader = BaseLoader(args.base_model, device=args.device, threads=args.threads, log=log)
    plan = RunPlan(tasks=tasks, pairs=pairs, modes=modes, nl_only=args.nl_only, misassign=args.misassign,
                   n_samples=args.n_samples, example_tests=args.example_tests)
    options = GenOptions(mode=modes[0], max_new_tokens=args.max_new_tokens,
                         summary_max_new_tokens=args.summary_max_new_tokens, temperature=args.temperature,
                         seed=args.seed)
    n_problems = {lang: len(ps) for lang, ps in runnable.items()}
    log(f"base {loader.name} on {loader.device}; settings: {', '.join(names)}; problems per language: {n_problems}")
    for setting in settings:
        with setting_generate(setting, loader, options, log=log) as gen:
            run_setting(gen, runnable, executor, plan, sink, log=log)
    secs = time.monotonic() - started
    command = "python -m training.evaluate " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = [f"command: `{command}`", f"base: {loader.name} ({loader.info.repo_id}), device {loader.device}",
            "settings: " + ", ".join(f"{s.name} = {s.path or 'base only'}" for s in settings),
            f"problems per language: {n_problems}; decoding: "
            + ("greedy" if args.temperature <= 0 else f"T={args.temperature}, {args.n_samples} samples")
            + f", max {args.max_new_tokens} new tokens", f"wall time of this run: {secs / 60:.1f} min"]
    rows = load_rows([jsonl])
    report = write_report(rows, out, title="Evaluation (HumanEval-X / HumanEvalPack tasks)", meta=meta)
    print(report.read_text(encoding="utf-8"))
    print(f"rows: {jsonl}\nreport: {report}")
    return 0


def _check_reference_main(args: argparse.Namespace) -> int:
    problems = _load(args)
    executor = _executor(args)
    runnable = _runnable(problems, executor)
    total = sum(len(ps) for ps in runnable.values())
    mode = f"as {args.as_response} answers" if args.as_response else "as completions"
    print(f"\nreference solutions {mode}, {'example' if args.example_tests else 'full'} tests, "
          f"{args.workers} workers:\n")
    outcomes = check_reference(runnable, executor, as_response=args.as_response, example_tests=args.example_tests,
                               on_result=_Progress(total))
    print(format_reference_table(outcomes))
    failures = format_failures(outcomes)
    if failures:
        print("\nfailures:")
        for line in failures:
            print(f"  {line}")
    notes = format_notes(outcomes)
    if notes:
        print("\nnotes:")
        for line in notes:
            print(f"  {line}")
    return 0 if not failures else 1

if __name__ == "__main__":
    sys.exit(main())
