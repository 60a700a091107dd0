"""Instruction samples from extracted functions, in the glaive-code-assistant question/answer shape.

Three kinds: doc2code (description + signature → fenced function), code2doc (fenced function →
the doc as prose) and fim (function with a hole marker → fenced missing lines). Phrasings vary a
little, chosen by the caller's seeded RNG, so that the model does not learn one fixed wording.
"""

from __future__ import annotations

import random

from mole_lsp.lang.plugins.doc_comments import first_sentence
from mole_lsp.lang.plugins.mining import Function

HOLE = "<FILL_ME>"
MAX_HOLE_LINES = 6


def fence(tag: str, code: str) -> str:
    """A markdown fence that survives code containing backtick runs of its own."""
    ticks = "```"
    while ticks in code:
        ticks += "`"
    return f"{ticks}{tag}\n{code.rstrip()}\n{ticks}"


def doc2code(fn: Function, tag: str, display: str, rng: random.Random) -> dict[str, str] | None:
    if not fn.doc:
        return None
    sig = fence(tag, fn.signature)
    summary = first_sentence(fn.summary or fn.doc)
    templates = [
        f"Write a {display} function that matches this description:\n\n{fn.doc}\n\nUse this signature:\n\n{sig}",
        f"Implement the following {display} function.\n\n{sig}\n\nIt is documented as:\n\n{fn.doc}",
        f"I need a {display} function `{fn.name}`. {summary}\n\nFull description:\n\n{fn.doc}\n\n"
        f"Start from this signature:\n\n{sig}",
    ]
    intros = ["Here is an implementation:", "Here is the function:", "One way to write it:"]
    return {"question": rng.choice(templates), "answer": f"{rng.choice(intros)}\n\n{fence(tag, fn.text)}"}


def code2doc(fn: Function, tag: str, display: str, rng: random.Random) -> dict[str, str] | None:
    if not fn.doc:
        return None
    code = fence(tag, fn.code)
    templates = [
        f"Explain this code:\n\n{code}",
        f"What does this {display} function do?\n\n{code}",
        f"Describe the behaviour of `{fn.name}`:\n\n{code}",
    ]
    return {"question": rng.choice(templates), "answer": fn.doc}


def fim(fn: Function, tag: str, display: str, rng: random.Random) -> dict[str, str] | None:
    """Cut 1..MAX_HOLE_LINES whole body lines out of the function; None when the body is too short."""
    lines = fn.text.split("\n")
    first, end = fn.hole_lines
    starts = [i for i in range(first, end) if _worth_a_hole(lines[i])]
    if len(starts) < 2:
        return None  # a one-line body would make the answer the whole body
    start = rng.choice(starts[:-1] if len(starts) > 2 else starts)
    size = min(rng.choice([1, 1, 2, 2, 3, 4, MAX_HOLE_LINES]), end - start)
    stop = start + size
    middle = lines[start:stop]
    while middle and not middle[-1].strip():  # no trailing blank lines in the answer
        middle.pop()
        stop -= 1
    if not any(_worth_a_hole(ln) for ln in middle):
        return None
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    holed = "\n".join(lines[:start] + [indent + HOLE] + lines[stop:])
    templates = [
        f"Fill in the missing lines marked {HOLE} in this {display} function:\n\n{fence(tag, holed)}\n\n"
        "Reply with only the missing lines.",
        f"Complete the {display} code at {HOLE}:\n\n{fence(tag, holed)}",
        f"What code belongs at {HOLE}?\n\n{fence(tag, holed)}",
    ]
    return {"question": rng.choice(templates), "answer": fence(tag, "\n".join(middle))}


def _worth_a_hole(line: str) -> bool:
    """Lines that carry code: not blank, not a lone brace or a comment."""
    s = line.strip()
    return len(s) >= 3 and not s.startswith(("//", "#", "/*", "*")) and s not in ("});", "end", "})")


BUILDERS = {"doc2code": doc2code, "code2doc": code2doc, "fim": fim}
