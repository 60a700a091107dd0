"""C++: what the language needs beyond its registry entry (see :mod:`mole_lsp.lang.plugins`)."""

from __future__ import annotations

# ---- corpus mining (CORPUS, read by training/corpus) ----------------------------------------------
import re
from pathlib import PurePosixPath

from mole_lsp.lang.plugins.mining import (
    JAVADOC_SNIPPET_TAG,
    Corpus,
    DocReader,
    Grammar,
    TreeSitterMiner,
    javadoc_block,
    line_run,
)

# libstdc++ ships template bodies in .tcc files and most headers without any suffix; the registry
# maps .h to C. When mining C++ these are read with the C++ grammar anyway.
_EXTRA_SUFFIXES = (".h", ".tcc")
MODE_LINE = re.compile(r"-\*-\s*(?:mode:\s*)?c\+\+\s*-\*-", re.IGNORECASE)


def has_mode_line(text: str) -> bool:
    """An Emacs ``-*- C++ -*-`` mode line in the first two lines marks a C++ file whatever its name."""
    return any(MODE_LINE.search(ln) for ln in text.split("\n", 2)[:2])


def _claims(path: str, owner: str | None) -> bool:
    """.h and .tcc files, and extensionless files the registry does not know (confirmed by ``_accepts``)."""
    name = PurePosixPath(path).name
    return path.lower().endswith(_EXTRA_SUFFIXES) or ("." not in name and owner is None)


def _accepts(path: str, text: str) -> bool:
    return "." in PurePosixPath(path).name or has_mode_line(text)


def doc_reader(plain_ok: bool) -> DocReader:
    """C-family docs: a ``/** */`` block (any ``/* */`` when ``plain_ok``) or a ``//`` / ``///`` run."""

    def read(comments: list[str]) -> tuple[str | None, str | None] | None:
        from training.corpus import docs

        if comments[-1].startswith("/*"):
            return javadoc_block(comments, plain_ok=plain_ok)
        run = line_run(comments, "//", exclude=("//!",))
        if not run:
            return None
        # Doxygen tags inside the run are handled like a block's.
        marker = "///" if all(ln.strip().startswith("///") for ln in run) else "//"
        text = docs.strip_line_markers(run, marker)
        cleaned = docs.clean_tagged_block("/**\n" + text + "\n*/", snippet_tag=JAVADOC_SNIPPET_TAG)
        return (cleaned, docs.block_description(cleaned)) if cleaned else None

    return read


CORPUS = Corpus(
    miner=TreeSitterMiner(
        grammar=Grammar("tree_sitter_cpp"),
        functions=frozenset({"function_definition"}),
        comments=frozenset({"comment"}),
        doc=doc_reader(plain_ok=False),
        wrappers=frozenset({"template_declaration"}),
    ),
    claims=_claims,
    accepts=_accepts,
)

# ---- execution (TOOLCHAIN and PROGRAM, read by training/eval) ----------------------------------------
