"""Function extraction for the corpus builder: one source file → documented functions.

What a language's functions and doc comments look like is its plugin's ``CORPUS``
(:mod:`mole_lsp.lang.plugins.mining`): a function of the source text, or a tree-sitter grammar
described by node types plus a doc-comment reader, which the generic walker here applies. Files
that do not parse raise :class:`~mole_lsp.lang.plugins.mining.ParseError`; tree-sitter never fails
outright, so there a function whose subtree holds a parse error is dropped and the file is reported
as partly broken.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from mole_lsp.lang.plugins import feature
from mole_lsp.lang.plugins.mining import (
    Corpus,
    FileResult,
    Function,
    Grammar,
    Node,
    TreeSitterMiner,
    dedent,
)

__all__ = ["corpus_of", "extract", "extract_tree_sitter"]


def corpus_of(language: str) -> Corpus:
    """The ``CORPUS`` of a registry id; ValueError when its plugin declares none."""
    corpus = feature(language, "CORPUS")
    if not isinstance(corpus, Corpus):
        raise ValueError(f"no corpus miner for language {language!r}")
    return corpus


def extract(source: str, language: str, path: str = "") -> FileResult:
    """Functions of one file of ``language`` (a registry id); ``path`` picks a per-suffix miner (.tsx)."""
    miner = corpus_of(language).miner_for(path)
    if isinstance(miner, TreeSitterMiner):
        return extract_tree_sitter(source, miner)
    return miner(source)


@cache
def _parser(grammar: Grammar) -> Any:
    """One parser per grammar; an ImportError names the wheel to install."""
    try:
        import tree_sitter

        module = importlib.import_module(grammar.module)
    except ImportError as exc:
        raise ImportError(f"the {grammar.module} grammar needs `pip install tree-sitter {grammar.wheel}`") from exc
    return tree_sitter.Parser(tree_sitter.Language(getattr(module, grammar.entry)()))


def _match(node: Node, spec: TreeSitterMiner) -> tuple[Node, Node, str | None] | None:
    """(function node, anchor node that owns the doc comment, name) when ``node`` defines a function."""
    t = node.type
    if t in spec.functions:
        return node, node, _name(node)
    if t in spec.bindings and spec.bind is not None:
        bound = spec.bind(node)
        return (bound[0], node, _token(bound[1])) if bound is not None else None
    if t in spec.wrappers:
        inner = node.child_by_field_name("declaration")
        if inner is None:
            inner = next((c for c in reversed(node.named_children)
                          if c.type in spec.functions or c.type in spec.wrappers or c.type in spec.bindings),
                         None)
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
    return _token(name)


def _token(name: Node | None) -> str | None:
    # ``bitset<_Nb>::\n      _M_copy`` and the like: a name is one token.
    return "".join(name.text.decode("utf-8", "replace").split()) if name is not None else None


def _text(node: Node, src: bytes) -> str:
    return src[node.start_byte : node.end_byte].decode("utf-8", "replace")


def _doc_comments(anchor: Node, spec: TreeSitterMiner) -> tuple[list[Node], Node]:
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
    if (comments and prev is not None and prev.end_point[0] == comments[-1].start_point[0]
            and prev.type not in spec.own_line):
        comments.pop()
    return comments[::-1], first


def extract_tree_sitter(source: str, spec: TreeSitterMiner) -> FileResult:
    """Functions of one file, found by walking the tree that ``spec``'s grammar parses."""
    src = source.encode("utf-8")
    tree = _parser(spec.grammar).parse(src)
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


def _ts_function(fn_node: Node, anchor: Node, name: str, src: bytes, spec: TreeSitterMiner) -> Function | None:
    body = fn_node.child_by_field_name("body")
    if body is None or fn_node.has_error or anchor.has_error:
        return None
    comments, first = _doc_comments(anchor, spec)
    doc = summary = None
    if comments:
        found = spec.doc([_text(c, src) for c in comments])
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
    code = dedent(src[code_start:end].decode("utf-8", "replace"), indent)
    text = code
    if doc is not None:
        doc_start = src.rfind(b"\n", 0, start_node.start_byte) + 1
        doc_prefix = src[doc_start : start_node.start_byte]
        if doc_prefix.strip():
            return None
        doc_text = src[doc_start:code_start].decode("utf-8", "replace").rstrip("\n")
        text = dedent(doc_text, doc_prefix.decode("utf-8", "replace")) + "\n" + code
    sig = dedent(src[code_start : body.start_byte].decode("utf-8", "replace"), indent).strip()
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
