"""Test programs: a problem's code with a model's completion and the problem's tests, as one source file.

:func:`build_program` accepts both shapes models produce: a continuation of the function header (a
body, like the reference solutions) or whole code that defines the function itself. Imports, package
lines, helper functions given by the problem, duplicate ``main`` functions and unbalanced closing
braces are reconciled with the language's plugin PROGRAM, which also adds the common imports the
HumanEvalPack harness adds (and, for Go, imports the standard packages the code uses).
"""

from __future__ import annotations

import re

from mole_lsp.lang.plugins.execution import Assembly
from training.eval.definitions import (
    brace_deficit,
    code_ops,
    def_pattern,
    defined_names,
    find_definition,
    line_start,
    program_spec,
    remove_definitions,
)
from training.eval.lexer import mask
from training.eval.problems import Problem

__all__ = ["build_program"]


def build_program(problem: Problem, completion: str, *, example_tests: bool = False) -> str:
    """One source file: the problem's code with ``completion`` and its tests (``example_tests``: the
    docstring examples only, when the problem has them)."""
    lang = problem.language
    spec = program_spec(lang)
    test = problem.example_test if example_tests and problem.example_test.strip() else problem.test
    code = completion.replace("\r\n", "\n")
    if _is_whole_code(problem, code):
        source = _full_source(problem, code)
    else:
        source = problem.prefix + (spec.fix_body(code) if spec.fix_body is not None else code)
    if not spec.indented:
        source = source.rstrip("\n") + "\n" + "}\n" * max(0, brace_deficit(source, lang))
    return spec.assemble(Assembly(source, test, problem.entry_point, problem.test_setup), code_ops(lang))


def _is_whole_code(problem: Problem, code: str) -> bool:
    """Whether ``code`` defines the function itself rather than continuing its header. A continuation
    may define later functions too (HumanEval-X Rust/10's solution finishes a helper, then defines the
    entry point), but it closes a block it did not open, or (indented languages) it is indented."""
    lang = problem.language
    masked = mask(code, lang)
    names = [n for n in (problem.open_name, problem.entry_point) if n]
    if program_spec(lang).indented:  # a definition at the top level
        return any(masked[m.start()] not in " \t"
                   for n in names for m in def_pattern(lang, re.escape(n)).finditer(masked))
    if not any(find_definition(masked, lang, n) for n in names):
        return False
    depth = 0
    for c in masked:
        depth += {"{": 1, "}": -1}.get(c, 0)
        if depth < 0:
            return False
    return True


def _full_source(problem: Problem, code: str) -> str:
    """Whole code from the model: keep the problem's imports and helpers that the code does not
    define itself, drop what would clash with the test harness."""
    lang = problem.language
    spec = program_spec(lang)
    ops = code_ops(lang)
    masked_prefix = mask(problem.prefix, lang)
    m = find_definition(masked_prefix + spec.close_header, lang, problem.open_name)
    context = problem.prefix[:line_start(problem.prefix, m.start())] if m else problem.prefix
    masked_code = mask(code, lang)
    if spec.adopt is not None:
        context, code = spec.adopt(context, code, masked_code, ops)
    redefined = [n for n in dict.fromkeys(defined_names(code, lang, masked_code))
                 if find_definition(mask(context, lang), lang, n)]
    context = remove_definitions(context, lang, redefined)
    if spec.reconcile is not None:
        context, code = spec.reconcile(context, code, masked_code, ops)
    return context.rstrip("\n") + "\n" + code.strip("\n") + "\n"
