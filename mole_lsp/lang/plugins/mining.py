"""Plugin API for corpus mining: what a plugin's ``CORPUS`` declares and what its extractors return.

The corpus builder (``training/corpus``) is generic: it finds a language's files through the registry,
then asks the plugin's :class:`Corpus` how to find documented functions in them. Most languages
describe a tree-sitter grammar with data (:class:`TreeSitterMiner`) plus a doc-comment reader; a
language may instead give a plain function from source text to :class:`FileResult` (Python uses
``ast``). Doc readers clean prose with :mod:`mole_lsp.lang.plugins.doc_comments` (standard library
only). tree-sitter itself is only imported by the builder, when it parses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from mole_lsp.lang.plugins import doc_comments as docs

__all__ = [
    "JAVADOC_SNIPPET_TAG",
    "Binding",
    "Corpus",
    "DocReader",
    "Extractor",
    "FileResult",
    "Function",
    "Grammar",
    "Miner",
    "Node",
    "ParseError",
    "TreeSitterMiner",
    "dedent",
    "javadoc_block",
    "line_run",
]

Node = Any  # tree_sitter.Node; kept loose so that plugins import without tree-sitter


class ParseError(Exception):
    """The file is not valid source for its language."""


@dataclass
class Function:
    """One function found in a source file, as the sample builders use it."""

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
    """The functions of one file, in line order."""

    functions: list[Function] = field(default_factory=list)
    had_errors: bool = False  # tree-sitter reported ERROR/MISSING nodes somewhere in the file


# Raw comments directly above a definition (nearest last, as written) → (doc, summary), or None when
# they are not documentation. ``summary`` is the description without parameter lists.
DocReader = Callable[[list[str]], tuple[str | None, str | None] | None]
# A node that may bind a function value to a name (``const f = () => ...``) → (function node, the node
# holding its name or None), or None when it binds something else.
Binding = Callable[[Node], tuple[Node, Node | None] | None]
# Source text → functions; raises ParseError for a file that is not valid source.
Extractor = Callable[[str], FileResult]


@dataclass(frozen=True)
class Grammar:
    """A tree-sitter grammar wheel."""

    module: str  # importable grammar module, e.g. "tree_sitter_java"
    entry: str = "language"  # function of that module that returns the language pointer

    @property
    def wheel(self) -> str:
        """The PyPI name to install (``tree_sitter_c_sharp`` → ``tree-sitter-c-sharp``)."""
        return self.module.replace("_", "-")


@dataclass(frozen=True)
class TreeSitterMiner:
    """Which nodes of a tree-sitter grammar are functions and how their doc comments read."""

    grammar: Grammar  # the grammar to parse with
    functions: frozenset[str]  # node types that are function definitions (with a ``body`` field)
    comments: frozenset[str]  # node types that are comments
    doc: DocReader  # reads the comments directly above a definition
    wrappers: frozenset[str] = frozenset()  # node types wrapping a definition and owning its doc comment
    bindings: frozenset[str] = frozenset()  # node types that may bind a function value to a name
    bind: Binding | None = None  # reads a node of ``bindings``
    skip_before: frozenset[str] = frozenset()  # siblings allowed between doc and definition (attributes)
    # Node types that end with their line's newline (C#'s #region): a comment right after one is not
    # "on the same line as code", although the node ends on the comment's row.
    own_line: frozenset[str] = frozenset()


Miner = TreeSitterMiner | Extractor


@dataclass(frozen=True)
class Corpus:
    """How the corpus builder mines a language (a plugin's ``CORPUS``)."""

    miner: Miner  # finds the functions of a file
    by_suffix: Mapping[str, Miner] = field(default_factory=dict)  # lower-case file suffix → another miner
    # Files beyond the registry's extensions: (path, the language the registry gives it or None) → wanted.
    claims: Callable[[str, str | None], bool] | None = None
    # (path, text) → False when a wanted file turns out to be another language.
    accepts: Callable[[str, str], bool] | None = None

    def miner_for(self, path: str) -> Miner:
        """The miner for a file: the longest matching suffix in ``by_suffix``, else ``miner``."""
        name = PurePosixPath(path).name.lower()
        hits = [s for s in self.by_suffix if name.endswith(s)]
        return self.by_suffix[max(hits, key=len)] if hits else self.miner


def dedent(text: str, prefix: str | int) -> str:
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


# --- doc readers several languages share ---------------------------------------------------------

# Javadoc's {@snippet} holds Java code; JSDoc and Doxygen blocks go through the same cleaner.
JAVADOC_SNIPPET_TAG = "java"


def line_run(comments: list[str], prefix: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """The contiguous run of line comments nearest the definition that start with ``prefix``."""
    run: list[str] = []
    for c in reversed(comments):
        raw = c.rstrip("\r\n")
        if not raw.startswith(prefix) or raw.startswith(exclude):
            break
        run.append(raw)
    return run[::-1]


def javadoc_block(comments: list[str], plain_ok: bool = False) -> tuple[str | None, str | None] | None:
    """Nearest comment must be a ``/** */`` block (or ``/*!``; a plain ``/* */`` too when ``plain_ok``)."""
    raw = comments[-1]
    if not raw.startswith("/*") or raw.startswith("/**/"):
        return None
    if not (raw.startswith(("/**", "/*!")) or plain_ok):
        return None
    cleaned = docs.clean_tagged_block(raw, snippet_tag=JAVADOC_SNIPPET_TAG)
    return (cleaned, docs.block_description(cleaned)) if cleaned else None
