"""The reference check: every problem's reference solution run against its tests (the executor's
self-test on known-good code), with progress and the tables the command line prints."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from training.eval.executor import Executor
from training.eval.problems import Problem
from training.eval.programs import build_program
from training.eval.prompts import (
    TaskPrompt,
    program_from_response,
    summary_synthesis_prompt,
    synthesis_prompt,
    translation_prompt,
)
from training.eval.toolchains import ToolchainStatus
from training.eval.verdicts import ExecResult, Status

__all__ = [
    "Progress",
    "check_reference",
    "reference_response",
    "check_reference",
    "describe_toolchain",
    "format_failures",
    "format_notes",
    "format_reference_table",
    "reference_response",
]


def reference_response(problem: Problem, mode: str) -> tuple[TaskPrompt, str]:
    """A task's prompt and the reference solution written as that task's answer."""
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
            prompt, response = reference_response(p, as_response)
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
    """Passed / failed / total and seconds per language, and the sum."""
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
    """One line per run that did not pass: task id, status, reason."""
    out = []
    for p, r in outcomes:
        if not r.passed:
            out.append(f"{p.task_id:<16} {r.status.value:<14} {r.reason}")
    return out


def format_notes(outcomes: Sequence[tuple[Problem, ExecResult]]) -> list[str]:
    """One line per run with notes (e.g. no tests ran)."""
    return [f"{p.task_id:<16} {'; '.join(r.notes)}" for p, r in outcomes if r.notes]



@dataclass
class Progress:
    """Prints how many runs are done (a live line on a terminal, every 50 runs otherwise)."""

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


def describe_toolchain(tc: ToolchainStatus) -> str:
    """One report line: the toolchain's version, or what is missing."""
    if not tc.available:
        return f"{tc.language:<12}MISSING: {'; '.join(tc.missing)}"
    extra = f"  (missing extras: {'; '.join(tc.extras_missing)})" if tc.extras_missing else ""
    return f"{tc.language:<12}{tc.version}{extra}"
