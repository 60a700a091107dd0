"""Evaluation on the paper's HumanEvalPack tasks (MoLE §III-B; pass@1 with greedy decoding, §IV-C).

Building blocks, usable from code:

- :func:`check_reference`: run the dataset's reference solutions (the executor's self-test);
- :func:`evaluate_code_task`: prompts → ``generate`` → extract code → run the tests, for synthesis,
  translation and the second step of summarization;
- :func:`evaluate_summarization`: description first, then code from the description;
- :func:`pass_rates`: pass@k per task and language (or language pair).

``generate`` is any callable taking a batch of :class:`~training.humaneval.TaskPrompt` and returning,
per prompt, the text generated after ``prompt.response_prefix`` (the model side lives in the server's
engine and plugs in here).

Command line (only the reference check runs without a model)::

    python -m training.evaluate --check-reference --data ../shared/data/humaneval-x \
        [--languages cpp go ...] [--limit N] [--workers N] [--as-response synthesis]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from training.execution import ExecResult, Executor, Limits, Status, Toolchain
from training.humaneval import (
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
from training.passk import pass_at_k_table

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


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check-reference", action="store_true",
                    help="run the dataset's reference solutions through the executor (self-test)")
    ap.add_argument("--data", default=HUMANEVALPACK_REPO,
                    help="HumanEval-X/HumanEvalPack directory or file, or the Hub dataset id (default)")
    ap.add_argument("--revision", default=None, help="Hub revision of the dataset")
    ap.add_argument("--languages", nargs="+", default=None, help="language ids or names (default: all found)")
    ap.add_argument("--limit", type=int, default=None, help="first N problems per language")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=Limits.wall_s, help="wall-clock seconds per test run")
    ap.add_argument("--memory-mb", type=int, default=Limits.memory_mb)
    ap.add_argument("--example-tests", action="store_true", help="use the docstring examples as tests")
    ap.add_argument("--as-response", choices=["synthesis", "translation", "summary_synthesis"], default=None,
                    help="feed each reference through that task's answer path (fence, extraction, assembly)")
    args = ap.parse_args(argv)
    if not args.check_reference:
        ap.error("only --check-reference is available yet; model-driven tasks come with the engine")

    problems = load_problems(None if args.data == HUMANEVALPACK_REPO else args.data, args.languages,
                             revision=args.revision)
    if args.limit is not None:
        problems = {lang: ps[: args.limit] for lang, ps in problems.items()}
    limits = Limits(wall_s=args.timeout, cpu_s=max(1, int(args.timeout)), memory_mb=args.memory_mb)
    executor = Executor(limits, workers=args.workers)
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
    runnable = {lang: ps for lang, ps in problems.items() if lang not in skipped}
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
