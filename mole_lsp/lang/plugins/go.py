"""Go: what the language needs beyond its registry entry (see :mod:`mole_lsp.lang.plugins`)."""

from __future__ import annotations

# ---- corpus mining (CORPUS, read by training/corpus) ----------------------------------------------
import re

from mole_lsp.lang.plugins.mining import Corpus, Grammar, TreeSitterMiner, line_run

# Compiler and tool directives are not documentation.
_DIRECTIVE = re.compile(r"\s*//(?:go:|line |export |extern |lint:|nolint)")


def read_doc(comments: list[str]) -> tuple[str | None, str | None] | None:
    """Go doc comment: the run of ``//`` lines above a declaration, directives left out."""
    from training.corpus import docs

    run = line_run(comments, "//")
    if not run:
        return None
    kept = [ln for ln in run if not _DIRECTIVE.match(ln)]
    # Doc links [pkg.Name] read fine as prose; keep them.
    doc = docs.finish(docs.strip_line_markers(kept, "//"))
    return (doc, doc) if doc else None


CORPUS = Corpus(
    miner=TreeSitterMiner(
        grammar=Grammar("tree_sitter_go"),
        functions=frozenset({"function_declaration", "method_declaration"}),
        comments=frozenset({"comment"}),
        doc=read_doc,
    )
)

# ---- execution (TOOLCHAIN and PROGRAM, read by training/eval) ----------------------------------------
