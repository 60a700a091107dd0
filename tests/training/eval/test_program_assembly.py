"""Program assembly and problem loading for benchmarks other than HumanEval-X (MBXP, MultiPL-E shapes),
on handmade records; programs run with the real toolchains (skipped when absent)."""

from __future__ import annotations

import pytest

from training.eval.executor import Executor
from training.eval.problems import problem_from_record
from training.eval.programs import build_program
from training.eval.sandbox import Limits
from training.eval.toolchains import available_toolchains

OK = Limits(wall_s=60, cpu_s=30, memory_mb=1024, compile_wall_s=300)

# An MBXP-style reference: the body of the entry point, then a helper it calls, defined after it.
HELPER_AFTER = {
    "task_id": "Python/3",
    "prompt": 'def count_even(xs):\n    """How many even numbers xs holds."""\n',
    "canonical_solution": "    return sum(1 for x in xs if is_even(x))\n\n\ndef is_even(x):\n    return x % 2 == 0\n",
    "test": "def check(candidate):\n    assert candidate([1, 2, 4]) == 2\n",
    "entry_point": "count_even",
}


def test_python_helpers_after_the_entry_point_are_kept() -> None:
    """Helpers defined after the entry point belong to the solution (issue 12 #19); statements the
    model added at the top level (prints, tests) are still dropped."""
    p = problem_from_record(HELPER_AFTER)
    program = build_program(p, p.solution + "\nprint(count_even([2]))\n\n@staticmethod\ndef twice(x):\n    return 2 * x\n")
    assert "def is_even(x):\n    return x % 2 == 0" in program
    assert "def twice" in program and "@staticmethod" in program
    assert "print(count_even([2]))" not in program
    if not available_toolchains(["python"])["python"].available:
        pytest.skip("python toolchain missing")
    r = Executor(OK).run("python", build_program(p, p.solution))
    assert r.passed, (r.status, r.reason, r.stderr)
