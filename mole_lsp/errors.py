"""Errors as users see them: :class:`UserError`, which exceptions count as the user's to fix, and
:func:`one_line`, the short description that the CLI prints and the server shows in its status."""

from __future__ import annotations

# Exception types (matched by class name anywhere in the MRO, so optional modules need not be imported)
# whose message tells the user what to fix: the CLI prints them as one line instead of a traceback.
# Plain ValueError is not one: a ValueError nobody raised for the user is a bug and keeps its traceback;
# code that reports a user's mistake raises UserError or one of the typed errors below.
USER_ERROR_NAMES = frozenset({
    "UserError", "BaseModelError", "StoreError", "OfflineError", "PackError", "RegistryError",
    "FileNotFoundError", "IsADirectoryError", "PermissionError",
})


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


def is_user_error(e: BaseException) -> bool:
    """Whether ``e`` is a problem the user can fix (see :data:`USER_ERROR_NAMES`)."""
    return any(c.__name__ in USER_ERROR_NAMES for c in type(e).__mro__)


def one_line(e: BaseException, max_lines: int = 1) -> str:
    """The first ``max_lines`` non-blank lines of ``str(e)``, stripped and joined by spaces; the
    exception's type name when its message is empty."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return " ".join(lines[:max_lines]) if lines else type(e).__name__
