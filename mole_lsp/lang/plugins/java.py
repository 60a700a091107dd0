"""Java: what the language needs beyond its registry entry (see :mod:`mole_lsp.lang.plugins`)."""

from __future__ import annotations

# ---- corpus mining (CORPUS, read by training/corpus) ----------------------------------------------
from mole_lsp.lang.plugins.mining import Corpus, Grammar, TreeSitterMiner, javadoc_block

CORPUS = Corpus(
    miner=TreeSitterMiner(
        grammar=Grammar("tree_sitter_java"),
        functions=frozenset({"method_declaration", "constructor_declaration"}),
        comments=frozenset({"block_comment", "line_comment"}),
        doc=javadoc_block,
    )
)

# ---- execution (TOOLCHAIN and PROGRAM, read by training/eval) ----------------------------------------
