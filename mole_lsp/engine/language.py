"""Which registry language a document is written in, from what the editor tells about it."""

from __future__ import annotations

from mole_lsp.lang.registry import Registry, load_registry


def resolve_document_language(language_id: str | None, path: str | None = None, text: str = "",
                              registry: Registry | None = None) -> str | None:
    """Registry id of a document: its editor languageId, then its file name, then a detector's guess."""
    reg = registry or load_registry()
    if language_id:
        hit = reg.by_vscode_id(language_id) or reg.resolve(language_id)
        if hit:
            return hit
    if path:
        hit = reg.by_path(path)
        if hit:
            return hit
    if text.strip():
        try:
            from mole_lsp.lang.detect import detect_language  # optional: the light classifier
        except ImportError:
            return None
        try:
            guess = detect_language(text)
        except Exception:  # a guess must never break a request
            return None
        if isinstance(guess, tuple):  # (language, confidence)
            guess = guess[0]
        return guess if isinstance(guess, str) and guess in reg else None
    return None
