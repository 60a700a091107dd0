"""Verdicts and reasons of the executor on programs the held-out audit found misjudged, with the real
toolchains (each test skips when its toolchain is missing)."""

from __future__ import annotations

import pytest

from training.eval.executor import Executor
from training.eval.sandbox import Limits
from training.eval.toolchains import available_toolchains
from training.eval.verdicts import Status

TOOLCHAINS = available_toolchains()
OK = Limits(wall_s=60, cpu_s=30, memory_mb=1024, compile_wall_s=300)


def needs(lang: str) -> None:
    tc = TOOLCHAINS[lang]
    if not tc.available:
        pytest.skip(f"{lang} toolchain missing: {'; '.join(tc.missing)}")


@pytest.fixture(scope="module")
def executor() -> Executor:
    return Executor(OK)


def test_go_file_without_test_functions_is_not_a_pass(executor: Executor) -> None:
    """A corrupted program whose tests are gone compiles and exits 0 ("no tests to run"): nothing
    was tested, so it must not count as passed (issue 12 #16)."""
    needs("go")
    r = executor.run("go", 'package main\nimport "testing"\nvar _ = testing.Short\n'
                           "func twice(x int) int { return 2 * x }\n")
    assert r.status is Status.FAILED and not r.passed, (r.status, r.reason, r.stdout)
    assert "no tests ran" in r.reason


def test_rust_harness_without_tests_is_not_a_pass(executor: Executor) -> None:
    needs("rust")
    r = executor.run("rust", "fn unused() {}\n#[cfg(test)]\nmod tests {}\n")
    assert r.status is Status.FAILED and "no tests ran" in r.reason, (r.status, r.reason)


def test_javascript_reason_is_the_error_not_the_node_banner(executor: Executor) -> None:
    needs("javascript")
    r = executor.run("javascript", "const x = undefinedThing();\n")
    assert r.status is Status.RUNTIME_ERROR
    assert "ReferenceError: undefinedThing is not defined" in r.reason and "Node.js v" not in r.reason, r.reason
    r = executor.run("javascript", "throw 'no such item';\n")  # not an Error: Node prints the value alone
    assert r.status is Status.RUNTIME_ERROR and "no such item" in r.reason, r.reason


def test_go_syntax_error_reason_is_the_diagnostic(executor: Executor) -> None:
    needs("go")
    r = executor.run("go", 'package main\nimport "testing"\nfunc twice(x int) int { return 2 * x\n'
                           "func TestX(t *testing.T) {}\n")
    assert r.status is Status.COMPILE_ERROR
    assert "prog_test.go:4" in r.reason and "expected" in r.reason, r.reason


def test_go_stack_overflow_reason(executor: Executor) -> None:
    needs("go")
    r = executor.run("go", 'package main\nimport "testing"\nfunc f(n int) int { return f(n+1) + 1 }\n'
                           "func TestX(t *testing.T) { f(0) }\n")
    assert r.status is Status.RUNTIME_ERROR
    assert "goroutine stack exceeds" in r.reason, r.reason


def test_java_and_csharp_reasons_name_the_exception(executor: Executor) -> None:
    for lang, prog in (
        ("java", 'public class Main { public static void main(String[] a) { throw new RuntimeException("boom"); } }\n'),
        ("csharp", 'class Program {\n  static void Main() { throw new System.InvalidOperationException("boom"); }\n}\n'),
    ):
        if not TOOLCHAINS[lang].available:
            continue
        r = executor.run(lang, prog)
        assert r.status is Status.RUNTIME_ERROR and "Exception" in r.reason and "boom" in r.reason, (lang, r.reason)


def test_cpp_narrowing_in_braces_is_a_compile_error(executor: Executor) -> None:
    """Plain g++ (as the benchmarks' harnesses compile) rejects a narrowing constant in braces; -w
    used to hide it (issue 12 #21)."""
    needs("cpp")
    r = executor.run("cpp", "#include <vector>\nint main() { std::vector<int> v{1, 2.5}; return v[0] - 1; }\n")
    assert r.status is Status.COMPILE_ERROR and "narrowing" in r.reason, (r.status, r.reason)
