"""Where mole-lsp keeps downloaded and derived files, and how it reaches the Hub.

The cache root is, in order: an explicit override, ``$MOLE_CACHE_DIR``, or the platform's user cache
folder for "mole-lsp" (``~/.cache/mole-lsp`` on Linux). Folders are created when first asked for.

Hub settings are read from the environment at call time, not at import time: huggingface_hub freezes
``HF_ENDPOINT``/``HF_HUB_OFFLINE`` when it is imported, so code that passes ``endpoint=hub_endpoint()``
follows the environment even when it changes later (tests, a server re-configured by the editor).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "mole-lsp"
CACHE_ENV = "MOLE_CACHE_DIR"


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The mole-lsp cache root (created if missing)."""
    if override is not None:
        root = Path(override)
    elif os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV])
    else:
        root = Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    root = root.expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Base models converted or derived locally (e.g. a dequantized GGUF)."""
    return _sub(override, "models")


def packs_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Installed core and expert packs."""
    return _sub(override, "packs")


def _sub(override: str | os.PathLike[str] | None, name: str) -> Path:
    path = cache_dir(override) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def hub_endpoint() -> str | None:
    """``$HF_ENDPOINT`` as it is now (None: huggingface_hub's default), for ``endpoint=`` arguments."""
    value = os.environ.get("HF_ENDPOINT", "").strip()
    return value.rstrip("/") or None


def hub_offline() -> bool:
    """Whether the Hub must not be contacted: ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` now, or as
    huggingface_hub saw them at import."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return True
    return bool(constants.HF_HUB_OFFLINE)
