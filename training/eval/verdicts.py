"""Verdicts: what a sample's run means (passed, failed test, timeout, memory, crash), and why, in one line.

A run passes when the program exits with status 0, unless its runtime only logs failed assertions
and one was logged, or its test harness says that no test ran (nothing tested is not a pass). The output is read with the language's
:class:`~mole_lsp.lang.plugins.execution.Verdicts` markers.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from enum import StrEnum

from mole_lsp.lang.plugins.execution import Verdicts
from training.eval.sandbox import Limits, Proc

__all__ = ["ExecResult", "Status", "classify_run", "first_error_line", "run_notes"]


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"  # the tests ran and an assertion failed
    COMPILE_ERROR = "compile_error"
    TIMEOUT = "timeout"  # wall-clock or CPU limit (compile or run)
    MEMORY = "memory"  # the memory limit was hit
    RUNTIME_ERROR = "runtime_error"  # crash, uncaught exception, output limit, killed by a signal
    TOOLCHAIN_MISSING = "toolchain_missing"  # not a verdict on the sample: nothing was run
    SANDBOX_ERROR = "sandbox_error"  # the executor itself failed


@dataclass
class ExecResult:
    """The verdict on one sample, with what it is based on."""

    language: str
    status: Status
    reason: str = ""  # one line saying why, for reports
    exit_code: int | None = None  # None when killed by a signal or never run
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""  # the run's stderr, or the compiler's output for compile errors
    compile_s: float = 0.0
    run_s: float = 0.0
    cpu_s: float = 0.0  # user + system CPU of the sample's main process (and children it waited for)
    max_rss_mb: float = 0.0
    notes: tuple[str, ...] = ()  # e.g. "no tests ran" when the harness says so

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED


def _last_line(text: str, noise: re.Pattern[str] | None = None) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not (noise and noise.match(ln.strip()))]
    return lines[-1][:200] if lines else ""


def first_error_line(text: str, source: str = "") -> str:
    """The first line that mentions an error (compiler output), else the first diagnostic that names
    the ``source`` file with a line number (Go's parser says "prog_test.go:4:6: expected '('"), else
    the last line."""
    for ln in text.splitlines():
        if re.search(r"\berror\b", ln, re.IGNORECASE):
            return ln.strip()[:200]
    if source:
        for ln in text.splitlines():
            if re.search(rf"{re.escape(source)}:\d+", ln):
                return ln.strip()[:200]
    return _last_line(text)


def _first_line_with(text: str, needle: str) -> str:
    for ln in text.splitlines():
        if needle in ln:
            return ln.strip()[:200]
    return ""


def classify_run(verdicts: Verdicts, p: Proc, limits: Limits, source: str = "") -> tuple[Status, str]:
    """The status of a finished run and the reason, read from its exit and output."""
    both = p.stdout + "\n" + p.stderr
    if p.timed_out:
        return Status.TIMEOUT, f"wall-clock limit ({limits.wall_s:g} s)"
    if p.signal == signal.SIGXCPU or (p.signal == signal.SIGKILL and p.cpu_s >= limits.cpu_s):
        return Status.TIMEOUT, f"CPU time limit ({limits.cpu_s} s)"
    hit = next((m for m in verdicts.memory if m in both), None)
    if hit is not None:
        return Status.MEMORY, f"memory limit ({limits.memory_mb} MB): {_first_line_with(both, hit)}"
    failed = any(m in both for m in verdicts.failure)
    if p.exit_code == 0:
        if verdicts.assertions_log and failed:
            return Status.FAILED, _failure_reason(verdicts, both, source)
        if verdicts.no_tests is not None and verdicts.no_tests(both):
            return Status.FAILED, "no tests ran: the program defines no test the harness runs"
        return Status.PASSED, ""
    if p.signal == signal.SIGXFSZ or "File too large" in both:  # Python ignores SIGXFSZ: EFBIG instead
        return Status.RUNTIME_ERROR, f"output limit ({limits.output_mb} MB)"
    if verdicts.panic and verdicts.panic in both and not (verdicts.assertions_panic and failed):
        return Status.RUNTIME_ERROR, _first_line_with(both, verdicts.panic)
    if failed:
        return Status.FAILED, _failure_reason(verdicts, both, source)
    how = f"signal {signal.Signals(p.signal).name}" if p.signal else f"exit code {p.exit_code}"
    found = verdicts.error_line.search(both) if verdicts.error_line is not None else None
    why = found.group(0).strip()[:200] if found else (_last_line(p.stderr, verdicts.noise)
                                                       or _last_line(p.stdout, verdicts.noise))
    return Status.RUNTIME_ERROR, f"{how}: {why}"


def _failure_reason(verdicts: Verdicts, text: str, source: str) -> str:
    """Quote the failing test line of the source when the runtime says where it is."""
    found = list(verdicts.location.finditer(text)) if verdicts.location is not None else []
    if found:
        n = int((found[-1] if verdicts.innermost_last else found[0]).group(1))
        lines = source.splitlines()
        if 0 < n <= len(lines) and lines[n - 1].strip():
            return f"test failed at line {n}: {lines[n - 1].strip()[:160]}"
    for m in verdicts.failure:
        line = _first_line_with(text, m)
        if line:
            return f"test failed: {line}"
    return "test failed"


def run_notes(verdicts: Verdicts, p: Proc) -> tuple[str, ...]:
    """Notes on how many tests ran, when the harness says none did."""
    if verdicts.no_tests is not None and verdicts.no_tests(p.stdout + p.stderr):
        return ("no tests ran",)
    return ()
