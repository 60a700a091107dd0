"""Language registry: the one place that knows language ids, aliases, VS Code ids and extensions.

The data lives in ``packs/languages.toml`` (shipped in wheels as ``mole_lsp.data/languages.toml``).
Nothing else in the project should hard-code language names; resolve them through a ``Registry``.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

__all__ = [
    "LANGUAGE_ID",
    "PAPER_LANGUAGES",
    "RESERVED_IDS",
    "Language",
    "Registry",
    "RegistryError",
    "UnknownLanguageError",
    "load_registry",
    "normalize_fence_tag",
]

# The eight languages evaluated in the MoLE paper (arXiv 2506.18923).
PAPER_LANGUAGES: tuple[str, ...] = ("c", "cpp", "csharp", "go", "java", "javascript", "python", "rust")

# Labels the fence parser uses for non-language states; a language may never take them.
RESERVED_IDS: frozenset[str] = frozenset({"nl", "unknown"})

# The shape of a canonical language id: also the name of its expert folder in packs (experts/<id>/).
LANGUAGE_ID = re.compile(r"[a-z][a-z0-9_+-]*")
# Fence tags are matched after normalisation, so they must survive it unchanged.
_TAG_FORBIDDEN = re.compile(r"[\s,:{}`]")
# Prefixes used by HTML-derived markdown (class="language-python").
_TAG_PREFIXES = ("language-", "lang-")

# Shebang interpreter names are looked up with version digits dropped (python3.12 -> python).
_INTERPRETER = re.compile(r"[a-z_][a-z0-9_+-]*(?<![0-9])")

_FIELDS = {
    "id", "name", "vscode_ids", "aliases", "extensions", "fallback", "line_comment", "detect", "interpreters",
}
_REQUIRED = {"id", "name"}


class RegistryError(ValueError):
    """Invalid registry data or an unknown language."""


class UnknownLanguageError(RegistryError, KeyError):
    """A language id that the registry does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Language:
    """One registry entry; the fields are documented in the header of ``packs/languages.toml``."""

    id: str
    name: str
    vscode_ids: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    fallback: str | None = None
    line_comment: str | None = None
    detect: tuple[tuple[str, float], ...] = ()  # detector features: (regex, weight)
    interpreters: tuple[str, ...] = ()  # shebang interpreter names

    def __post_init__(self) -> None:
        # Accept lists from callers but keep the object hashable and immutable.
        for field in ("vscode_ids", "aliases", "extensions", "interpreters"):
            value = getattr(self, field)
            if isinstance(value, list):
                object.__setattr__(self, field, tuple(value))
        if isinstance(self.detect, list):
            pairs = (tuple(f) if isinstance(f, list) else f for f in self.detect)
            object.__setattr__(self, "detect", tuple(pairs))


def normalize_fence_tag(info: str) -> str:
    """Reduce a fence info string to the lower-case tag used for lookups.

    Handles ``python title=x``, ``{.python .numberLines}``, ``{r setup}``, ``rust,ignore``,
    ``python:main.py`` and surrounding whitespace; returns "" when there is no tag.
    """
    s = info.strip().lower()
    if s.startswith("{"):
        s = s[1:].lstrip()
    # First word; commas/colons/braces end it too (rustdoc "rust,ignore", "{.python}").
    m = re.match(r"[^\s,:{}]*", s)
    word = m.group(0) if m else ""
    return word.lstrip(".")


class Registry:
    """Validated, immutable collection of languages with lookup tables."""

    def __init__(self, languages: Iterable[Language]) -> None:
        langs = tuple(languages)
        by_id: dict[str, Language] = {}
        for lang in langs:
            if not isinstance(lang, Language):
                raise RegistryError(f"expected Language, got {type(lang).__name__}")
            _check_language(lang)
            if lang.id in by_id:
                raise RegistryError(f"duplicate language id {lang.id!r}")
            by_id[lang.id] = lang
        self._by_id = by_id
        self._ids = tuple(by_id)

        self._fence: dict[str, str] = {}
        self._vscode: dict[str, str] = {}
        self._ext: dict[str, str] = {}
        self._names: dict[str, str] = {}
        self._interpreters: dict[str, str] = {}
        for lang in langs:
            for tag in (lang.id, *lang.aliases):
                _claim(self._fence, tag.lower(), lang.id, "fence alias")
            for vid in lang.vscode_ids:
                _claim(self._vscode, vid.lower(), lang.id, "VS Code id")
            for ext in lang.extensions:
                _claim(self._ext, ext.lower(), lang.id, "extension")
            for interpreter in lang.interpreters:
                _claim(self._interpreters, interpreter, lang.id, "interpreter")
        # resolve() accepts every kind of name, so they must be unambiguous together.
        for lang in langs:
            for name in (lang.id, lang.name, *lang.aliases, *lang.vscode_ids):
                _claim(self._names, name.lower(), lang.id, "name")

        for lang in langs:
            if lang.fallback is not None and lang.fallback not in by_id:
                raise RegistryError(
                    f"language {lang.id!r}: fallback {lang.fallback!r} is not a known language"
                )
        for lang in langs:
            seen = [lang.id]
            cur = lang.fallback
            while cur is not None:
                if cur in seen:
                    raise RegistryError(f"fallback cycle: {' -> '.join([*seen, cur])}")
                seen.append(cur)
                cur = by_id[cur].fallback

    # -- collection protocol -------------------------------------------------------------
    @property
    def ids(self) -> tuple[str, ...]:
        """Language ids in file order."""
        return self._ids

    def __contains__(self, lang_id: object) -> bool:
        return isinstance(lang_id, str) and lang_id in self._by_id

    def __iter__(self) -> Iterator[Language]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        return f"Registry({len(self)} languages: {', '.join(self._ids)})"

    # -- lookups -------------------------------------------------------------------------
    def get(self, lang_id: str) -> Language:
        try:
            return self._by_id[lang_id]
        except (KeyError, TypeError):
            raise UnknownLanguageError(
                f"unknown language id {lang_id!r}; known ids: {', '.join(self._ids)}"
            ) from None

    def by_fence_tag(self, tag: str) -> str | None:
        """Language id for a fence info string ("```C++", "```{.python}", ...), or None."""
        word = normalize_fence_tag(tag)
        if not word:
            return None
        hit = self._fence.get(word)
        if hit is None:
            for prefix in _TAG_PREFIXES:
                if word.startswith(prefix):
                    hit = self._fence.get(word[len(prefix) :])
                    break
        return hit

    def by_vscode_id(self, language_id: str) -> str | None:
        return self._vscode.get(language_id.strip().lower())

    def by_path(self, path: str | os.PathLike[str]) -> str | None:
        """Language id from a file name's extension (longest matching suffix wins)."""
        name = PurePath(os.fspath(path)).name.lower()
        if not name:
            return None
        # Dot-files like ".bashrc" are registered under their whole name.
        if name.startswith(".") and name in self._ext:
            return self._ext[name]
        # Try ".d.ts" before ".ts" so multi-part extensions can be registered.
        pos = name.find(".", 1)
        while pos != -1:
            hit = self._ext.get(name[pos:])
            if hit is not None:
                return hit
            pos = name.find(".", pos + 1)
        return None

    def by_interpreter(self, name: str) -> str | None:
        """Language id of a shebang interpreter name (already lower case, version digits dropped)."""
        return self._interpreters.get(name)

    def resolve(self, name: str) -> str | None:
        """Language id from an id, fence alias, VS Code id or display name (case-insensitive)."""
        key = name.strip().lower()
        return self._names.get(key) or self.by_fence_tag(key)

    def fallback_chain(self, lang_id: str) -> list[str]:
        """``[lang_id, fallback, fallback's fallback, ...]`` (acyclic, checked at load)."""
        chain = [self.get(lang_id).id]
        cur = self._by_id[lang_id].fallback
        while cur is not None:
            chain.append(cur)
            cur = self._by_id[cur].fallback
        return chain


def _claim(table: dict[str, str], key: str, lang_id: str, kind: str) -> None:
    owner = table.setdefault(key, lang_id)
    if owner != lang_id:
        raise RegistryError(f"{kind} {key!r} is claimed by both {owner!r} and {lang_id!r}")


def _check_language(lang: Language) -> None:
    where = f"language {lang.id!r}"
    if not isinstance(lang.id, str) or not LANGUAGE_ID.fullmatch(lang.id):
        raise RegistryError(f"{where}: id must be lower case [a-z][a-z0-9_+-]*")
    if lang.id in RESERVED_IDS:
        raise RegistryError(
            f"{where}: id is reserved for the fence parser ({', '.join(sorted(RESERVED_IDS))})"
        )
    if not isinstance(lang.name, str) or not lang.name.strip():
        raise RegistryError(f"{where}: name must be a non-empty string")
    for field in ("vscode_ids", "aliases", "extensions"):
        values = getattr(lang, field)
        if not isinstance(values, tuple) or not all(isinstance(v, str) and v for v in values):
            raise RegistryError(f"{where}: {field} must be a tuple of non-empty strings")
    for alias in lang.aliases:
        if alias != alias.lower() or _TAG_FORBIDDEN.search(alias) or alias.startswith("."):
            raise RegistryError(
                f"{where}: alias {alias!r} must be lower case without spaces, ',', ':', braces, "
                "backticks or a leading '.'"
            )
        if alias in RESERVED_IDS:
            raise RegistryError(f"{where}: alias {alias!r} is reserved")
    for ext in lang.extensions:
        if not ext.startswith(".") or len(ext) < 2 or "/" in ext or "\\" in ext:
            raise RegistryError(f"{where}: extension {ext!r} must look like '.ext'")
    if lang.fallback is not None and not isinstance(lang.fallback, str):
        raise RegistryError(f"{where}: fallback must be a string")
    if lang.fallback == lang.id:
        raise RegistryError(f"{where}: a language cannot fall back to itself")
    if lang.line_comment is not None and (not isinstance(lang.line_comment, str) or not lang.line_comment):
        raise RegistryError(f"{where}: line_comment must be a non-empty string")
    _check_detect(lang.detect, where)
    for interpreter in lang.interpreters:
        if not isinstance(interpreter, str) or not _INTERPRETER.fullmatch(interpreter):
            raise RegistryError(
                f"{where}: interpreter {interpreter!r} must be a lower-case name without version digits"
            )


def _check_detect(features: object, where: str) -> None:
    """Detector features are (regex, weight) pairs: a pattern that compiles, a finite non-zero weight."""
    if not isinstance(features, tuple):
        raise RegistryError(f"{where}: detect must be a tuple of (regex, weight) pairs")
    for i, feature in enumerate(features, 1):
        if not (isinstance(feature, tuple) and len(feature) == 2 and isinstance(feature[0], str)):
            raise RegistryError(f"{where}: detect feature #{i} must be a [regex, weight] pair, got {feature!r}")
        pattern, weight = feature
        try:
            re.compile(pattern)
        except re.error as exc:
            raise RegistryError(f"{where}: detect feature #{i} {pattern!r} is not a valid regex: {exc}") from None
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or not weight:
            raise RegistryError(
                f"{where}: detect feature #{i} {pattern!r}: weight must be a non-zero number, got {weight!r}"
            )


# -- loading ---------------------------------------------------------------------------------


def _entry_to_language(entry: Any, where: str) -> Language:
    if not isinstance(entry, Mapping):
        raise RegistryError(f"{where}: expected a table, got {type(entry).__name__}")
    unknown = set(entry) - _FIELDS
    if unknown:
        raise RegistryError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    missing = _REQUIRED - set(entry)
    if missing:
        raise RegistryError(f"{where}: missing field(s) {', '.join(sorted(missing))}")

    def text(key: str, optional: bool) -> str | None:
        value = entry.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise RegistryError(f"{where}: {key} must be a string")
        return value

    def strings(key: str) -> tuple[str, ...]:
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RegistryError(f"{where}: {key} must be a list of strings")
        return tuple(value)

    def features() -> tuple[tuple[str, float], ...]:
        value = entry.get("detect", [])
        if not isinstance(value, list) or not all(isinstance(f, list) and len(f) == 2 for f in value):
            raise RegistryError(f"{where}: detect must be a list of [regex, weight] pairs")
        return tuple((f[0], f[1]) for f in value)

    lang = Language(
        id=text("id", False) or "",
        name=text("name", False) or "",
        vscode_ids=strings("vscode_ids"),
        aliases=strings("aliases"),
        extensions=strings("extensions"),
        fallback=text("fallback", True),
        line_comment=text("line_comment", True),
        detect=features(),
        interpreters=strings("interpreters"),
    )
    try:
        _check_language(lang)
    except RegistryError as exc:
        raise RegistryError(f"{where}: {exc}") from None
    return lang


def _parse(data: Mapping[str, Any], source: str) -> Registry:
    raw = data.get("language")
    entries: list[tuple[str, Any]] = []
    if isinstance(raw, list):  # [[language]] array of tables
        for i, entry in enumerate(raw):
            label = entry.get("id", "?") if isinstance(entry, Mapping) else "?"
            entries.append((f"{source}: [[language]] #{i + 1} (id {label!r})", entry))
    elif isinstance(raw, Mapping):  # [language.<id>] tables; the key is the id
        for key, entry in raw.items():
            if isinstance(entry, Mapping):
                if "id" in entry and entry["id"] != key:
                    raise RegistryError(f"{source}: [language.{key}] has a different id {entry['id']!r}")
                entry = {"id": key, **entry}
            entries.append((f"{source}: [language.{key}]", entry))
    else:
        raise RegistryError(f"{source}: expected [[language]] entries")
    langs = [_entry_to_language(entry, where) for where, entry in entries]
    try:
        return Registry(langs)
    except RegistryError as exc:
        raise RegistryError(f"{source}: {exc}") from None


def _packaged_text() -> tuple[str, str]:
    """Text and a display name of the shipped languages.toml."""
    try:
        res = importlib.resources.files("mole_lsp.data") / "languages.toml"
        if res.is_file():
            return res.read_text(encoding="utf-8"), str(res)
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    # Source tree / editable install: packs/ sits next to the package directory.
    path = Path(__file__).resolve().parents[2] / "packs" / "languages.toml"
    return path.read_text(encoding="utf-8"), str(path)


def _load_text(text: str, source: str) -> Registry:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{source}: invalid TOML: {exc}") from None
    return _parse(data, source)


@functools.cache
def _default_registry() -> Registry:
    text, source = _packaged_text()
    return _load_text(text, source)


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """Load a registry from ``path``, or the packaged ``languages.toml`` (cached) when None."""
    if path is None:
        return _default_registry()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"{p}: cannot read registry: {exc}") from None
    return _load_text(text, str(p))
