"""C: what the language needs beyond its registry entry (see :mod:`mole_lsp.lang.plugins`)."""

from __future__ import annotations

# ---- corpus mining (CORPUS, read by training/corpus) ----------------------------------------------
import re

from mole_lsp.lang.plugins.cpp import doc_reader, has_mode_line
from mole_lsp.lang.plugins.mining import Corpus, Grammar, TreeSitterMiner

# A .h file is C by the registry, but many are C++: this keeps them out of a C corpus.
_CPP_ONLY = re.compile(
    r"^\s*(?:namespace\s+[\w:]+\s*\{|template\s*<|class\s+\w+[^;(]*\{|using\s+namespace\b|"
    r"extern\s+\"C\+\+\"|#include\s*<(?:iostream|string|vector|memory|utility|cstddef|cstdint)>)",
    re.MULTILINE,
)


def _accepts(path: str, text: str) -> bool:
    return not (_CPP_ONLY.search(text) or has_mode_line(text))


CORPUS = Corpus(
    miner=TreeSitterMiner(
        grammar=Grammar("tree_sitter_c"),
        functions=frozenset({"function_definition"}),
        comments=frozenset({"comment"}),
        doc=doc_reader(plain_ok=True),
    ),
    accepts=_accepts,
)

# ---- execution (TOOLCHAIN and PROGRAM, read by training/eval) ----------------------------------------
