"""Errors of the pack store: why a pack cannot be provided, worded for the user.

:class:`mole_lsp.packs.format.PackError` says what is wrong with a pack's files; these say why the store
cannot hand one out (not published, not cached while offline, refused, a failed download).
"""

from __future__ import annotations

__all__ = ["Cancelled", "NotInstalled", "OfflineError", "StoreError"]


class StoreError(RuntimeError):
    """A pack cannot be provided; the message is meant for the user."""


class OfflineError(StoreError):
    """A pack is not cached and the Hub cannot be asked for it."""

    def __init__(self, message: str, missing: str | None = None) -> None:
        super().__init__(message)
        self.missing = missing  # "core", a language id, or "index"


class NotInstalled(StoreError):
    """A pack is absent and installing it was not allowed (``install=False``)."""


class Cancelled(StoreError):
    """A download was cancelled; nothing half-downloaded is used (huggingface_hub resumes it next time)."""
