"""Program assembly and problem loading for benchmarks other than HumanEval-X (MBXP, MultiPL-E shapes),
on handmade records; programs run with the real toolchains (skipped when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.eval import cli
from training.eval.executor import Executor
from training.eval.problems import load_problems, problem_from_record
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


# --------------------------------------------------------------------------------------------------
# Other benchmarks' records: the language comes from the data or the command line (issue 12 #22)

MBXP_JS = {"task_id": "MBJSP/2", "language": "javascript",
           "prompt": "/**\n * Twice x.\n */\nconst twice = function (x) {\n",
           "canonical_solution": "  return 2 * x;\n};\n",
           "test": "const assert = require('assert');\nassert.strictEqual(twice(21), 42);\n", "entry_point": "twice"}
MULTIPLE_PY = {"name": "HumanEval_5_twice", "language": "py", "prompt": "def twice(x: int) -> int:\n",
               "tests": "def check(candidate):\n    assert candidate(21) == 42\n\ndef test_check():\n"
                        "    check(twice)\n\ntest_check()\n"}


def _write_jsonl(path: Path, records: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_language_from_the_records_language_field(tmp_path: Path) -> None:
    data = _write_jsonl(tmp_path / "mbjsp_release.jsonl", [MBXP_JS])
    problems = load_problems(data)
    assert list(problems) == ["javascript"] and problems["javascript"][0].task_id == "MBJSP/2"
    multiple = _write_jsonl(tmp_path / "multiple.jsonl", [MULTIPLE_PY])
    (p,) = load_problems(multiple)["python"]
    assert p.task_id == "HumanEval_5_twice" and "check(twice)" in p.test and p.entry_point == "twice"


def test_language_from_the_command_line(tmp_path: Path) -> None:
    rec = {k: v for k, v in MBXP_JS.items() if k != "language"}
    data = _write_jsonl(tmp_path / "mbxp.jsonl", [rec])
    with pytest.raises(ValueError):
        load_problems(data)  # "MBJSP" names no language
    assert load_problems(data, language="javascript")["javascript"][0].task_id == "MBJSP/2"
    args = cli._build_parser().parse_args(["--check-reference", "--data", str(data), "--language", "js"])
    assert list(cli._load(args)) == ["javascript"]


def _local_package(modules: Path, name: str, code: str, deps: tuple[str, ...] = ()) -> None:
    pkg = modules / name
    pkg.mkdir(parents=True)
    manifest = {"name": name, "version": "1.0.0", "main": "index.js", "dependencies": {d: "1.0.0" for d in deps}}
    (pkg / "package.json").write_text(json.dumps(manifest))
    (pkg / "index.js").write_text(code)


def test_extra_npm_packages_from_a_local_node_modules(tmp_path: Path) -> None:
    """MBXP's JavaScript tests require lodash: a run names extra packages, taken from a local
    node_modules folder (no network), with the dependencies they declare."""
    modules = tmp_path / "node_modules"
    _local_package(modules, "mole-dep", "module.exports = 2;\n")
    _local_package(modules, "mole-extra", "const k = require('mole-dep');\nmodule.exports = (x) => k * x;\n",
                   deps=("mole-dep",))
    args = cli._build_parser().parse_args(["--check-reference", "--npm-packages", "mole-extra", "mole-absent",
                                           "--node-modules", str(modules)])
    ex = cli._executor(args)
    assert ex.npm_packages == {"mole-extra": "*", "mole-absent": "*"} and ex.node_modules == modules
    if not available_toolchains(["javascript"])["javascript"].available:
        pytest.skip("javascript toolchain missing")
    ex = Executor(OK, cache_dir=tmp_path / "cache", npm_packages=["mole-extra"], node_modules=modules)
    assert ex.prepare(["javascript"])["javascript"].ready
    r = ex.run("javascript", "const twice = require('mole-extra');\nif (twice(21) !== 42) process.exit(1);\n")
    assert r.passed, (r.status, r.reason, r.stderr)
    missing = Executor(OK, cache_dir=tmp_path / "cache", npm_packages=["mole-absent"], node_modules=modules)
    assert any("mole-absent" in m for m in missing.prepare(["javascript"])["javascript"].extras_missing)
