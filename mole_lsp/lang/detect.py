"""Light language detector for untagged code (DESIGN §6): weighted regex features, no model.

Used only when the language of a block is unknown (``` without a tag, or an unknown tag), to pick
an expert instead of the shared adapter alone. It prefers to answer None over guessing: prose,
very short snippets and close calls give None.

Only the algorithm lives here. The evidence is per-language data in ``packs/languages.toml``
(``detect``: weighted regex features, ``interpreters``: shebang names), and a language plugin may
declare ``RECOGNIZE``, an exact test tried before the features (JSON parses or it does not).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable

from mole_lsp.lang.plugins import feature
from mole_lsp.lang.registry import Registry, UnknownLanguageError, load_registry

__all__ = ["detect_language", "score_languages"]

_MIN_SCORE = 3.0  # evidence needed before any answer
_MIN_CONFIDENCE = 0.45
_SINGLE_FEATURE_SCORE = 4.0  # a lone feature must be this strong (<?php, package main + ...)
_MAX_CHARS = 6000  # detection looks at the head of long inputs only
_MAX_COUNT = 3  # repeated hits of one feature saturate: 1, 1.5, 2 times its weight

# Interpreter name of a shebang line; the registry maps it to a language.
_SHEBANG = re.compile(r"\A#![^\n]*?\b(?:env\s+(?:-S\s+)?)?([\w.+-]+)(?:\s[^\n]*)?$", re.M)


def _horizontal(pattern: str) -> str:
    """Keep every feature on one line: ``\\s`` → space/tab, ``[^...]`` never matches a newline.

    Besides matching what is meant, this avoids ``^\\s*`` rescanning whole blank regions from
    every line start, which is quadratic.
    """
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            pair = pattern[i : i + 2]
            out.append((" \\t" if in_class else "[ \\t]") if pair == "\\s" else pair)
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
            if pattern.startswith("[^", i):  # negated classes must not run into the next line
                out.append("[^\\n")
                i += 2
                continue
        elif c == "]" and in_class and out and out[-1] != "[":
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)


_Features = tuple[tuple[re.Pattern[str], float], ...]


@functools.lru_cache(maxsize=8)
def _features(registry: Registry) -> dict[str, _Features]:
    """Compiled detector features of every language of ``registry`` that has some, in registry order."""
    return {
        lang.id: tuple((re.compile(_horizontal(p), re.M), w) for p, w in lang.detect)
        for lang in registry
        if lang.detect
    }


_LONG_LINE = re.compile(r"^(.{400}).*$", re.M)
# Whole-line comments hold prose that looks like anything; preprocessor lines, shebangs and Rust
# attributes (#include, #!, #[...]) are features, not comments.
_COMMENT_LINE = re.compile(
    r"^[ \t]*(//|/\*|\*(?=[ \t/]|$)"
    r"|#(?![ \t]*(include|define|undef|if|ifdef|ifndef|elif|else|endif|pragma|import|error)\b|!|\[))"
    r".*$",
    re.M,
)


def _shebang_language(code: str, registry: Registry) -> str | None:
    m = _SHEBANG.match(code.lstrip("\ufeff"))
    if not m:
        return None
    name = m.group(1).lower()
    name = re.sub(r"[\d.]+$", "", name)  # python3.12 → python
    return registry.by_interpreter(name)


def _recognized(code: str, registry: Registry, allowed: set[str]) -> str | None:
    """The first allowed language whose plugin's exact test (``RECOGNIZE``) accepts ``code``."""
    for lang in registry.ids:
        if lang in allowed:
            recognize = feature(lang, "RECOGNIZE")
            if recognize is not None and recognize(code):
                return lang
    return None


def _count(pattern: re.Pattern[str], text: str) -> int:
    n = 0
    for _ in pattern.finditer(text):
        n += 1
        if n >= _MAX_COUNT:
            break
    return n


def _scores(code: str, wanted: set[str] | None, registry: Registry) -> dict[str, tuple[float, int]]:
    """(score, number of positive feature matches) per language."""
    # Clip long lines too: features are per line, and this bounds any regex backtracking.
    text = _LONG_LINE.sub(r"\1", _COMMENT_LINE.sub("", code[:_MAX_CHARS]))
    out: dict[str, tuple[float, int]] = {}
    for lang, feats in _features(registry).items():
        if wanted is not None and lang not in wanted:
            continue
        total = 0.0
        hits = 0
        for pattern, weight in feats:
            n = _count(pattern, text)
            if n:
                total += weight * (1 + 0.5 * (n - 1))
                hits += n if weight > 0 else 0
        out[lang] = (total, hits)
    return out


def score_languages(code: str, candidates: Iterable[str] | None = None) -> dict[str, float]:
    """Raw feature score of every language with features (restricted to ``candidates``)."""
    wanted = None if candidates is None else set(candidates)
    return {lang: score for lang, (score, _) in _scores(code, wanted, load_registry()).items()}


def detect_language(
    code: str, candidates: Iterable[str] | None = None, registry: Registry | None = None
) -> tuple[str, float] | None:
    """Guess the language of untagged ``code``: ``(language id, confidence in (0, 1])`` or None.

    ``candidates`` (ids or any name the registry resolves) limits the answer, e.g. to installed
    experts; only languages of ``registry`` are returned.
    """
    reg = registry if registry is not None else load_registry()
    if candidates is None:
        allowed = set(reg.ids)
    else:
        allowed = set()
        for name in candidates:
            lang = reg.resolve(name)
            if lang is None:
                raise UnknownLanguageError(
                    f"unknown candidate language {name!r}; known ids: {', '.join(reg.ids)}"
                )
            allowed.add(lang)
    if not code.strip() or not allowed:
        return None

    shebang = _shebang_language(code, reg)
    if shebang in allowed:
        return shebang, 0.99
    recognized = _recognized(code, reg, allowed)
    if recognized is not None:
        return recognized, 0.95

    scores = _scores(code, allowed, reg)
    ranked = sorted(scores.items(), key=lambda kv: kv[1][0], reverse=True)
    if not ranked:
        return None
    best_lang, (best, hits) = ranked[0]
    # One match is a phrase, not a program, unless it is near proof on its own.
    if best < _MIN_SCORE or (hits < 2 and best < _SINGLE_FEATURE_SCORE):
        return None
    second = max(ranked[1][1][0], 0.0) if len(ranked) > 1 else 0.0
    confidence = best / (best + second) * (1 - math.exp(-best / 3))
    if confidence < _MIN_CONFIDENCE:
        return None
    return best_lang, round(confidence, 3)
