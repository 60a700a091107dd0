"""JSON: what the language needs beyond its registry entry (see :mod:`mole_lsp.lang.plugins`)."""

from __future__ import annotations

import json

# ---- detection (RECOGNIZE, read by mole_lsp.lang.detect) ------------------------------------------


def recognize(code: str) -> bool:
    """True when ``code`` is a non-empty JSON object or array: a parse is proof, no features needed."""
    s = code.strip()
    if not s or s[0] not in "[{" or s[-1] not in "]}":
        return False
    try:
        value = json.loads(s)
    except ValueError:
        return False
    return isinstance(value, dict | list) and bool(value)


RECOGNIZE = recognize
