"""Rust: what the language needs beyond its registry entry (see :mod:`mole_lsp.lang.plugins`)."""

from __future__ import annotations

# ---- corpus mining (CORPUS, read by training/corpus) ----------------------------------------------
import re

from mole_lsp.lang.plugins.mining import Corpus, Grammar, TreeSitterMiner, line_run

_HEADING = re.compile(r"#{1,3} ")
_HIDDEN_DOCTEST_LINE = re.compile(r"#(?: |$)")


def clean_markdown(lines: list[str]) -> str | None:
    """Rust ``///`` markdown: drop the Examples section, tag untagged fences as rust."""
    from training.corpus import docs

    text = docs.strip_line_markers(lines, "///")
    out: list[str] = []
    skipping = False
    in_fence = False
    for line in text.splitlines():
        stripped = line.strip()
        if not in_fence and _HEADING.match(stripped):
            skipping = stripped.lstrip("# ").lower().startswith("example")
        if stripped.startswith("```"):
            if not in_fence:
                in_fence = True
                if stripped == "```" and not skipping:
                    line = line.replace("```", "```rust", 1)
            else:
                in_fence = False
        elif in_fence and _HIDDEN_DOCTEST_LINE.match(stripped):
            continue  # hidden doctest lines
        if not skipping:
            out.append(line)
    return docs.finish("\n".join(out))


def read_doc(comments: list[str]) -> tuple[str | None, str | None] | None:
    """``///`` lines (not ``////``) or a ``/** */`` block; the summary stops at the first heading."""
    from training.corpus import docs

    run = line_run(comments, "///", exclude=("////",))
    if run:
        doc = clean_markdown(run)
    else:
        raw = comments[-1]
        doc = clean_markdown(docs.strip_block_markers(raw).splitlines()) if raw.startswith("/**") else None
    if not doc:
        return None
    summary = doc.split("\n# ", 1)[0].strip()
    return doc, summary


CORPUS = Corpus(
    miner=TreeSitterMiner(
        grammar=Grammar("tree_sitter_rust"),
        functions=frozenset({"function_item"}),
        comments=frozenset({"line_comment", "block_comment"}),
        doc=read_doc,
        skip_before=frozenset({"attribute_item"}),
    )
)

# ---- execution (TOOLCHAIN and PROGRAM, read by training/eval) ----------------------------------------
