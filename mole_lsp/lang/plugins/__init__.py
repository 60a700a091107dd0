"""Language plugins: the code a language needs beyond its entry in ``packs/languages.toml``.

Adding a language is one registry entry (names, aliases, extensions, fallback, detector features) and,
optionally, one module here named after the language id (``-`` and ``+`` become ``_``). A plugin
module declares, as module-level names, only what it supports:

- ``CORPUS``: how the corpus builder mines its source files (:mod:`mole_lsp.lang.plugins.mining`).
- ``TOOLCHAIN`` and ``PROGRAM``: how evaluation compiles and runs a program in the sandbox, and how a
  HumanEval-X test program is assembled (:mod:`mole_lsp.lang.plugins.execution`).
- ``RECOGNIZE``: an exact ``str -> bool`` test for untagged code that the detector tries before its
  weighted features (JSON: it parses), for languages whose registry features cannot be sure.

Plugins are plain Python without heavy imports at module level (tree-sitter grammars, compilers and
the like are reached lazily), so asking what a language supports is cheap. Everything else asks the
registry and these functions, never a hard-coded list of language ids. The checklist is
``docs/ADD_A_LANGUAGE.md``.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from functools import cache
from types import ModuleType
from typing import Any

__all__ = ["feature", "languages_with", "module_name", "plugin"]

_NON_IDENT = re.compile(r"[^a-z0-9_]")
# Modules in this package that are APIs for plugins, not plugins.
_API_MODULES = frozenset({"mining", "execution", "doc_comments"})


def module_name(lang_id: str) -> str:
    """The plugin module name of a language id (``objective-c`` → ``objective_c``)."""
    return _NON_IDENT.sub("_", lang_id)


@cache
def plugin(lang_id: str) -> ModuleType | None:
    """The plugin module of ``lang_id``, or None when the language has no plugin."""
    name = module_name(lang_id)
    if name in _API_MODULES:
        return None
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{name}":
            return None
        raise  # a plugin that fails to import is a bug, not "no plugin"


def feature(lang_id: str, name: str) -> Any | None:
    """What ``lang_id``'s plugin declares as ``name`` (``"CORPUS"``, ``"TOOLCHAIN"``, ``"PROGRAM"``), or None."""
    mod = plugin(lang_id)
    return getattr(mod, name, None) if mod is not None else None


@cache
def _plugin_ids() -> tuple[str, ...]:
    from mole_lsp.lang.registry import load_registry

    present = {m.name for m in pkgutil.iter_modules(__path__)} - _API_MODULES
    return tuple(lang for lang in load_registry().ids if module_name(lang) in present)


def languages_with(name: str) -> tuple[str, ...]:
    """Registry ids whose plugin declares ``name``, in registry order."""
    return tuple(lang for lang in _plugin_ids() if feature(lang, name) is not None)
