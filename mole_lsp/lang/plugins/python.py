"""Python: what the language needs beyond its registry entry (see :mod:`mole_lsp.lang.plugins`)."""

from __future__ import annotations

# ---- corpus mining (CORPUS, read by training/corpus) ----------------------------------------------
import ast
import inspect
import warnings
from collections.abc import Iterator

from mole_lsp.lang.plugins import doc_comments as docs
from mole_lsp.lang.plugins.mining import Corpus, FileResult, Function, ParseError, dedent


def extract_functions(source: str) -> FileResult:
    """Documented and undocumented functions of a Python file, read with ``ast``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences etc. in old files
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            raise ParseError(str(exc)) from exc
    lines = source.split("\n")  # not splitlines(): form feeds would shift ast's line numbers
    result = FileResult()
    for node in _defs(tree):
        fn = _function(node, lines)
        if fn is not None:
            result.functions.append(fn)
    return result


def _defs(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Module-level functions and methods (also of nested classes), not functions inside functions."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield child
            elif isinstance(child, ast.ClassDef | ast.If | ast.Try | ast.With):
                stack.append(child)


def _function(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> Function | None:
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    end = node.end_lineno or node.lineno
    first_body = node.body[0]
    if first_body.lineno == node.lineno:
        return None  # one-line ``def f(): ...``
    width = lines[node.lineno - 1][: node.col_offset]
    text_lines = lines[start - 1 : end]
    header_end = first_body.lineno - start  # index of the first body line within text_lines
    raw_doc = ast.get_docstring(node, clean=False)
    doc = summary = None
    code_lines = list(text_lines)
    hole_start = header_end
    if raw_doc is not None:
        ds_first = first_body.lineno - start
        ds_last = (first_body.end_lineno or first_body.lineno) - start
        code_lines = text_lines[:ds_first] + text_lines[ds_last + 1 :]
        hole_start = ds_last + 1
        # Indentation normalised the way ``help()`` shows a docstring.
        doc = docs.finish(inspect.cleandoc(raw_doc))
        summary = doc
        if len(node.body) == 1:
            return None  # nothing but a docstring: an abstract stub
    # Comments between the header and the body belong to the body; the header is decorators + def.
    signature = dedent("\n".join(text_lines[node.lineno - start : header_end]), width).strip()
    return Function(
        name=node.name,
        text=dedent("\n".join(text_lines), width),
        code=dedent("\n".join(code_lines), width),
        doc=doc,
        summary=summary,
        signature=signature,
        hole_lines=(hole_start, len(text_lines)),
        line=start,
    )


CORPUS = Corpus(miner=extract_functions)

# ---- execution (TOOLCHAIN and PROGRAM, read by training/eval) ----------------------------------------

import re  # noqa: E402 - this section follows the corpus section's code

from mole_lsp.lang.plugins.execution import Assembly, CodeOps, Lexicon, Program, Toolchain, Verdicts  # noqa: E402

TOOLCHAIN = Toolchain(
    source="prog.py", packages="python3", run_tool="python3",
    run=lambda b: [b.interpreter, "-I", "-B", "prog.py"], version=("python3", "--version"),
    verdicts=Verdicts(failure=("AssertionError",), memory=("MemoryError",),
                      location=re.compile(r'File "[^"]*prog\.py", line (\d+)'), innermost_last=True),
)

# The imports the HumanEvalPack harness adds to every Python program.
_HEADER = ("import math\nimport re\nimport sys\nimport copy\nimport heapq\nimport string\nimport itertools\n"
           "import functools\nimport collections\nimport hashlib\nfrom typing import *\n\n")


def _assemble(a: Assembly, ops: CodeOps) -> str:
    # HumanEval's own format defines check(candidate) without calling it.
    needs_call = re.search(r"^def check\(", a.test, re.M) and not re.search(r"^check\(", a.test, re.M)
    call = f"\n\ncheck({a.entry_point})\n" if needs_call else ""
    return _HEADER + a.source.rstrip("\n") + "\n\n" + a.test + call


def _docstring(prompt: str) -> str:
    """The last triple-quoted string of the prompt."""
    blocks = re.findall(r'"""(.*?)"""|\'\'\'(.*?)\'\'\'', prompt, re.S)
    return (blocks[-1][0] or blocks[-1][1]) if blocks else ""


# Top-level lines after the body that belong to the solution: helpers it calls may follow the entry
# point (MBXP references do), with their decorators and imports.
_KEPT_TOP_LEVEL = re.compile(r"(?:async[ \t]+)?def\b|class\b|@|import\b|from[ \t]+\S+[ \t]+import\b")


def _fix_body(code: str) -> str:
    """Indent a body written at column 0; after it keep top-level definitions and imports (with their
    indented lines) and drop other top-level statements (tests or prints the model added)."""
    lines = code.split("\n")
    first = next((ln for ln in lines if ln.strip()), "")
    if first and not first[0].isspace():
        lines = [("    " + ln) if ln.strip() else ln for ln in lines]
    kept: list[str] = []
    seen_body, keep = False, True
    for ln in lines:
        if ln.strip() and not ln[0].isspace():
            if seen_body:
                keep = _KEPT_TOP_LEVEL.match(ln) is not None
        elif ln.strip():
            seen_body = True
        if keep:
            kept.append(ln)
    return "\n".join(kept).rstrip("\n") + "\n" if kept != lines else "\n".join(lines)


def _reconcile(context: str, code: str, masked: str, ops: CodeOps) -> tuple[str, str]:
    # A script's main block would run before the tests.
    code = re.split(r"^if\s+__name__\s*==\s*['\"]__main__['\"]\s*:", code, maxsplit=1, flags=re.M)[0]
    return context, code


PROGRAM = Program(
    lexicon=Lexicon(starts=re.compile(r"[#'\"]"), line_comment="#", block_comments=False, triple_quotes=True,
                    char_literals=False),
    definition=lambda name: re.compile(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+({name})[ \t]*\(", re.M),
    header_line=re.compile(r"^\s*(import\s+\S.*|from\s+\S+\s+import\s+.*)$"),
    assemble=_assemble,
    indented=True,
    close_header="\n    pass\n",
    entry_call=re.compile(r"^check\((\w+)\)", re.M),
    docstring=_docstring,
    fix_body=_fix_body,
    reconcile=_reconcile,
)
