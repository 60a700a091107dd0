"""Code extraction: the code block of the target language in a model's answer, found by the project's
fence parser (so a fence tag means what it means everywhere else)."""

from __future__ import annotations

import re

__all__ = ["extract_code"]


def extract_code(text: str, language: str) -> str | None:
    """The first fenced code block of ``language`` in a model answer (labelled by the project's fence
    parser). Failing that, the first untagged block or block of a language that falls back to
    ``language`` (```c for C++); answers without any fence are taken as code. None if the answer has
    fences but none of them fits."""
    from mole_lsp.lang.fence import NL, UNKNOWN, label_chars
    from mole_lsp.lang.registry import load_registry

    registry = load_registry()
    labels = label_chars(text, registry)
    runs: list[tuple[str, int, int]] = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            if labels[start] != NL:
                runs.append((labels[start], start, i))
            start = i
    if not runs:
        return None if re.search(r"^[ \t]*(```|~~~)", text, re.M) else text

    def fits(label: str) -> bool:
        return label == UNKNOWN or (label in registry and language in registry.fallback_chain(label))

    chosen = next((r for r in runs if r[0] == language), None) or next((r for r in runs if fits(r[0])), None)
    if chosen is None:
        return None
    _, a, b = chosen
    body = text[a:b]
    if body.startswith("\n"):  # the opening fence line's newline already carries the language label
        body = body[1:]
    lines = body.split("\n")
    if lines and re.fullmatch(r"[ \t]*(`{1,}|~{1,})[ \t]*\r?", lines[-1]):
        lines = lines[:-1]  # the closing fence (or the start of one where generation stopped)
    return "\n".join(lines).rstrip() + "\n" if lines else ""
