"""C++: what the language needs beyond its registry entry (see :mod:`mole_lsp.lang.plugins`)."""

from __future__ import annotations

# ---- corpus mining (CORPUS, read by training/corpus) ----------------------------------------------

# ---- execution (TOOLCHAIN and PROGRAM, read by training/eval) ----------------------------------------
