"""TypeScript: what the language needs beyond its registry entry (see :mod:`mole_lsp.lang.plugins`)."""

from __future__ import annotations

# ---- corpus mining (CORPUS, read by training/corpus) ----------------------------------------------
from mole_lsp.lang.plugins.javascript import miner
from mole_lsp.lang.plugins.mining import Corpus, Grammar

# .tsx files need the TSX grammar of the same wheel.
CORPUS = Corpus(
    miner=miner(Grammar("tree_sitter_typescript", "language_typescript")),
    by_suffix={".tsx": miner(Grammar("tree_sitter_typescript", "language_tsx"))},
)

# ---- execution (TOOLCHAIN and PROGRAM, read by training/eval) ----------------------------------------
