"""Function extraction for the corpus builder: Python through ``ast``, the rest through tree-sitter.

An extractor turns one decoded source file into :class:`Function` records: the documented function
as written (``text``), the same code without its documentation (``code``), the cleaned doc prose,
the signature and the line range a fill-in-the-middle hole may cover. Files that do not parse raise
:class:`ParseError`; tree-sitter never fails outright, so there a function whose subtree holds a
parse error is dropped and the file is reported as partly broken.
"""

from __future__ import annotations

import ast
import importlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from training.corpus import docs as docs


class ParseError(Exception):
    """The file is not valid source for its language."""


@dataclass
class Function:
    name: str
    text: str  # documented function as written (doc comment / decorators / attributes included), dedented
    code: str  # the function without its documentation: what code2doc shows and dedup hashes
    doc: str | None  # cleaned prose, or None when the function has no usable documentation
    summary: str | None  # the doc's description part (no parameter lists), used in questions
    signature: str  # header up to the body
    hole_lines: tuple[int, int]  # [first, end) line indexes of ``text`` that a FIM hole may cover
    line: int  # 1-based line of the function in its file


@dataclass
class FileResult:
    functions: list[Function] = field(default_factory=list)
    had_errors: bool = False  # tree-sitter reported ERROR/MISSING nodes somewhere in the file


def _dedent(text: str, prefix: str | int) -> str:
    """Remove the first line's indentation ``prefix`` from every line.

    Unlike textwrap.dedent, a string literal flush at column 0 does not stop the rest from being
    dedented, and lines that indent with tabs where the prefix used spaces (libstdc++ mixes both)
    are measured in columns with 8-column tab stops instead of losing their indentation.
    """
    if isinstance(prefix, int):
        prefix = " " * prefix
    if not prefix:
        return text
    width = len(prefix.expandtabs(8))
    out = []
    for line in text.split("\n"):
        if line.startswith(prefix):
            out.append(line[len(prefix):])
            continue
        body = line.lstrip(" \t")
        ws = line[: len(line) - len(body)].expandtabs(8)
        out.append(ws[width:] + body if body else "")
    return "\n".join(out)


# --- Python -----------------------------------------------------------------------------------

def extract_python(source: str) -> FileResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences etc. in old files
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            raise ParseError(str(exc)) from exc
    lines = source.split("\n")  # not splitlines(): form feeds would shift ast's line numbers
    result = FileResult()
    for node in _python_defs(tree):
        fn = _python_function(node, lines)
        if fn is not None:
            result.functions.append(fn)
    return result


def _python_defs(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Module-level functions and methods (also of nested classes), not functions inside functions."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield child
            elif isinstance(child, ast.ClassDef | ast.If | ast.Try | ast.With):
                stack.append(child)


def _python_function(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> Function | None:
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
        doc = docs.clean_docstring(raw_doc)
        summary = doc
        if len(node.body) == 1:
            return None  # nothing but a docstring: an abstract stub
    # Comments between the header and the body belong to the body; the header is decorators + def.
    signature = _dedent("\n".join(text_lines[node.lineno - start : header_end]), width).strip()
    return Function(
        name=node.name,
        text=_dedent("\n".join(text_lines), width),
        code=_dedent("\n".join(code_lines), width),
        doc=doc,
        summary=summary,
        signature=signature,
        hole_lines=(hole_start, len(text_lines)),
        line=start,
    )


# --- tree-sitter languages ------------------------------------------------------------------

Node = Any  # tree_sitter.Node; kept loose so that this module imports without tree-sitter


@dataclass(frozen=True)
class TSSpec:
    grammar: str  # importable grammar module
    entry: str  # function in that module returning the language pointer
    functions: frozenset[str]  # node types that are function definitions
    wrappers: frozenset[str]  # node types that wrap a definition and carry its doc comment
    comments: frozenset[str]
    doc: Callable[[list[Node], bytes], tuple[str | None, str | None] | None]
    skip_before: frozenset[str] = frozenset()  # siblings allowed between doc and definition


def _ntext(node: Node, src: bytes) -> str:
    return src[node.start_byte : node.end_byte].decode("utf-8", "replace")


def _block_doc(comments: list[Node], src: bytes, plain_ok: bool = False) -> tuple[str | None, str | None] | None:
    """Nearest comment must be a ``/** */`` block (or ``/*!``; a plain ``/* */`` too for C)."""
    raw = _ntext(comments[-1], src)
    if not raw.startswith("/*") or raw.startswith("/**/"):
        return None
    if not (raw.startswith(("/**", "/*!")) or plain_ok):
        return None
    cleaned = docs.clean_tagged_block(raw)
    return (cleaned, docs.block_description(cleaned)) if cleaned else None


def _line_run(comments: list[Node], src: bytes, prefix: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """The contiguous run of line comments nearest the definition that start with ``prefix``."""
    run: list[str] = []
    for c in reversed(comments):
        raw = _ntext(c, src).rstrip("\r\n")
        if not raw.startswith(prefix) or raw.startswith(exclude):
            break
        run.append(raw)
    return run[::-1]


def _java_doc(comments: list[Node], src: bytes) -> tuple[str | None, str | None] | None:
    return _block_doc(comments, src)


def _go_doc(comments: list[Node], src: bytes) -> tuple[str | None, str | None] | None:
    run = _line_run(comments, src, "//")
    doc = docs.clean_go(run) if run else None
    return (doc, doc) if doc else None


def _rust_doc(comments: list[Node], src: bytes) -> tuple[str | None, str | None] | None:
    run = _line_run(comments, src, "///", exclude=("////",))
    if run:
        doc = docs.clean_rust(run)
    else:
        raw = _ntext(comments[-1], src)
        doc = docs.clean_rust(docs.strip_block_markers(raw).splitlines()) if raw.startswith("/**") else None
    if not doc:
        return None
    summary = doc.split("\n# ", 1)[0].strip()
    return doc, summary


def _c_family_doc(plain_ok: bool) -> Callable[[list[Node], bytes], tuple[str | None, str | None] | None]:
    def doc(comments: list[Node], src: bytes) -> tuple[str | None, str | None] | None:
        raw = _ntext(comments[-1], src)
        if raw.startswith("/*"):
            return _block_doc(comments, src, plain_ok=plain_ok)
        run = _line_run(comments, src, "//", exclude=("//!",))
        cleaned = docs.clean_cpp_lines(run) if run else None
        return (cleaned, docs.block_description(cleaned)) if cleaned else None

    return doc


_JS_FUNCS = frozenset({"function_declaration", "generator_function_declaration", "method_definition"})
_JS_WRAPPERS = frozenset({"export_statement", "lexical_declaration", "variable_declaration", "expression_statement"})

SPECS: dict[str, TSSpec] = {
    "java": TSSpec("tree_sitter_java", "language", frozenset({"method_declaration", "constructor_declaration"}),
                   frozenset(), frozenset({"block_comment", "line_comment"}), _java_doc),
    "go": TSSpec("tree_sitter_go", "language", frozenset({"function_declaration", "method_declaration"}),
                 frozenset(), frozenset({"comment"}), _go_doc),
    "rust": TSSpec("tree_sitter_rust", "language", frozenset({"function_item"}), frozenset(),
                   frozenset({"line_comment", "block_comment"}), _rust_doc,
                   skip_before=frozenset({"attribute_item"})),
    "javascript": TSSpec("tree_sitter_javascript", "language", _JS_FUNCS, _JS_WRAPPERS,
                         frozenset({"comment"}), _java_doc),
    "typescript": TSSpec("tree_sitter_typescript", "language_typescript", _JS_FUNCS, _JS_WRAPPERS,
                         frozenset({"comment"}), _java_doc),
    "tsx": TSSpec("tree_sitter_typescript", "language_tsx", _JS_FUNCS, _JS_WRAPPERS,
                  frozenset({"comment"}), _java_doc),
    "cpp": TSSpec("tree_sitter_cpp", "language", frozenset({"function_definition"}),
                  frozenset({"template_declaration"}), frozenset({"comment"}), _c_family_doc(False)),
    "c": TSSpec("tree_sitter_c", "language", frozenset({"function_definition"}), frozenset(),
                frozenset({"comment"}), _c_family_doc(True)),
}

_FUNCTION_VALUES = frozenset({"function_expression", "function", "arrow_function", "generator_function"})


@cache
def _parser(grammar_key: str) -> Any:
    """One parser per grammar; an ImportError names the wheel to install."""
    spec = SPECS[grammar_key]
    try:
        import tree_sitter
        module = importlib.import_module(spec.grammar)
    except ImportError as exc:
        wheel = spec.grammar.replace("_", "-")
        raise ImportError(f"the {grammar_key} extractor needs `pip install tree-sitter {wheel}`") from exc
    return tree_sitter.Parser(tree_sitter.Language(getattr(module, spec.entry)()))


def grammar_available(grammar_key: str) -> bool:
    try:
        _parser(grammar_key)
    except ImportError:
        return False
    return True


def _match(node: Node, spec: TSSpec) -> tuple[Node, Node, str | None] | None:
    """(function node, anchor node that owns the doc comment, name) when ``node`` defines a function."""
    t = node.type
    if t in spec.functions:
        return node, node, _name(node)
    if t in spec.wrappers:
        if t in ("lexical_declaration", "variable_declaration"):
            decls = [c for c in node.named_children if c.type == "variable_declarator"]
            if len(decls) == 1:
                value = decls[0].child_by_field_name("value")
                if value is not None and value.type in _FUNCTION_VALUES:
                    return value, node, _name(decls[0])
            return None
        if t == "expression_statement":
            expr = node.named_children[0] if node.named_child_count else None
            if expr is not None and expr.type == "assignment_expression":
                right = expr.child_by_field_name("right")
                if right is not None and right.type in _FUNCTION_VALUES:
                    left = expr.child_by_field_name("left")
                    name = left.child_by_field_name("property") if left is not None else None
                    return right, node, (name.text.decode() if name is not None else None)
            return None
        inner = node.child_by_field_name("declaration")
        if inner is None:
            inner = next((c for c in reversed(node.named_children)
                          if c.type in spec.functions or c.type in spec.wrappers), None)
        if inner is not None:
            found = _match(inner, spec)
            if found is not None:
                return found[0], node, found[2]
    return None


def _name(node: Node) -> str | None:
    name = node.child_by_field_name("name")
    if name is None:
        # C/C++: the name sits at the bottom of a chain of declarators.
        decl = node.child_by_field_name("declarator")
        while decl is not None and decl.child_by_field_name("declarator") is not None:
            decl = decl.child_by_field_name("declarator")
        name = decl
    # ``bitset<_Nb>::\n      _M_copy`` and the like: a name is one token.
    return "".join(name.text.decode("utf-8", "replace").split()) if name is not None else None


def _doc_comments(anchor: Node, spec: TSSpec) -> tuple[list[Node], Node]:
    """Comments directly above ``anchor`` (no blank line between), nearest last, and the first node
    that belongs to the definition (an attribute in Rust)."""
    first = anchor
    row = anchor.start_point[0]
    comments: list[Node] = []
    prev = anchor.prev_sibling
    while prev is not None and prev.end_point[0] >= row - 1:
        if prev.type in spec.skip_before and not comments:
            first = prev
        elif prev.type in spec.comments:
            comments.append(prev)
        else:
            break
        row = prev.start_point[0]
        prev = prev.prev_sibling
    # A comment on the same line as code before it (``x = 1; // note``) is not a doc comment.
    if comments and prev is not None and prev.end_point[0] == comments[-1].start_point[0]:
        comments.pop()
    return comments[::-1], first


def extract_tree_sitter(source: str, grammar_key: str) -> FileResult:
    spec = SPECS[grammar_key]
    src = source.encode("utf-8")
    tree = _parser(grammar_key).parse(src)
    result = FileResult(had_errors=tree.root_node.has_error)
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        for child in reversed(node.named_children):
            found = _match(child, spec)
            if found is None:
                stack.append(child)
                continue
            fn_node, anchor, name = found
            if name is None:
                stack.append(fn_node)  # anonymous wrappers such as IIFEs hold the real functions
                continue
            fn = _ts_function(fn_node, anchor, name, src, spec)
            if fn is not None:
                result.functions.append(fn)
    result.functions.sort(key=lambda f: f.line)
    return result


def _ts_function(fn_node: Node, anchor: Node, name: str, src: bytes, spec: TSSpec) -> Function | None:
    body = fn_node.child_by_field_name("body")
    if body is None or fn_node.has_error or anchor.has_error:
        return None
    comments, first = _doc_comments(anchor, spec)
    doc = summary = None
    if comments:
        found = spec.doc(comments, src)
        if found is not None:
            doc, summary = found
    start_node = comments[0] if doc is not None else first
    code_start = src.rfind(b"\n", 0, first.start_byte) + 1
    code_prefix = src[code_start : first.start_byte]
    if code_prefix.strip():
        return None  # something else shares the line (``x = 1; void f() {``): not a clean unit
    # Doc and definition are dedented separately: their indentation does not always agree.
    indent = code_prefix.decode("utf-8", "replace")
    end = max(fn_node.end_byte, anchor.end_byte)  # ``var f = function () {...};`` keeps its ``;``
    code = _dedent(src[code_start:end].decode("utf-8", "replace"), indent)
    text = code
    if doc is not None:
        doc_start = src.rfind(b"\n", 0, start_node.start_byte) + 1
        doc_prefix = src[doc_start : start_node.start_byte]
        if doc_prefix.strip():
            return None
        doc_text = src[doc_start:code_start].decode("utf-8", "replace").rstrip("\n")
        text = _dedent(doc_text, doc_prefix.decode("utf-8", "replace")) + "\n" + code
    sig = _dedent(src[code_start : body.start_byte].decode("utf-8", "replace"), indent).strip()
    body_row = text.count("\n") - code.count("\n") + body.start_point[0] - first.start_point[0]
    lines = text.count("\n") + 1
    # The closing brace line is never a hole; an expression-bodied arrow has none.
    hole_end = lines - 1 if code.rstrip().endswith(("}", "};", "})")) else lines
    return Function(
        name=name,
        text=text,
        code=code,
        doc=doc,
        summary=summary,
        signature=sig,
        hole_lines=(body_row + 1, hole_end),
        line=start_node.start_point[0] + 1,
    )


def extract(source: str, grammar_key: str) -> FileResult:
    """Functions of one file; ``grammar_key`` is "python" or a key of :data:`SPECS`."""
    if grammar_key == "python":
        return extract_python(source)
    return extract_tree_sitter(source, grammar_key)
