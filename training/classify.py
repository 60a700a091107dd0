"""Which rows train which language: classification by code fences, the ⅓ rule, the stratified split.

Classification uses the project's one fence parser (:mod:`mole_lsp.lang.fence`) over question and answer, so
fence aliases resolve through the registry: ```c++ is C++, ```c# is C#, ```js is JavaScript (the authors'
regex sent the first two to C and dropped the last kind). A sample's *main language* is the language with
the most characters inside its code blocks; samples are kept when that language is one of the configured
ones and at least ``min_code_fraction`` of all characters are inside code blocks. Everything else is
counted as a bad row by reason and skipped, never fatal.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mole_lsp.lang.fence import NL, UNKNOWN, label_chars
from mole_lsp.lang.registry import Registry
from training.sources import BadRows

# A row's ``split`` field values that mean validation; any other value means training.
VAL_SPLITS = frozenset({"heldout", "validation", "valid", "val", "test", "dev"})


@dataclass
class Classification:
    code_chars: dict[str, int]  # label (language id or "unknown") -> characters inside its code blocks
    total_chars: int

    @property
    def code_fraction(self) -> float:
        return sum(self.code_chars.values()) / max(1, self.total_chars)

    @property
    def main_language(self) -> str | None:
        """The registry language with the most code characters (untagged code does not count)."""
        known = {k: v for k, v in self.code_chars.items() if k != UNKNOWN}
        if not known:
            return None
        return max(sorted(known), key=lambda k: known[k])


def classify_text(question: str, answer: str, registry: Registry) -> Classification:
    """Characters per code-block language over question and answer, read by the fence parser.

    A character counts as code when the parser's state after it is a code state: block bodies and closing
    fence lines (the opening fence line is prose by the parser's definition).
    """
    counts: Counter[str] = Counter()
    for part in (question, answer):
        counts.update(lb for lb in label_chars(part, registry) if lb != NL)
    return Classification(dict(counts), len(question) + len(answer))


@dataclass
class Sample:
    question: str
    answer: str
    language: str  # main language
    split: str | None = None  # from the row ("train"/"val"), None = to be drawn
    meta: dict[str, Any] = field(default_factory=dict)


def select_rows(rows: Iterable[dict[str, Any]], languages: Sequence[str], min_code_fraction: float,
                registry: Registry, bad: BadRows, use_row_split: bool = True) -> list[Sample]:
    """Classify rows and keep those whose main language is wanted and which are code enough."""
    wanted = set(languages)
    out: list[Sample] = []
    for row in rows:
        q, a = row.get("question"), row.get("answer")
        if not isinstance(q, str) or not isinstance(a, str) or not q.strip() or not a.strip():
            bad["no_text"] += 1
            continue
        try:
            c = classify_text(q, a, registry)
        except Exception:  # noqa: BLE001 - a pathological row must never stop a long run
            bad["parse_error"] += 1
            continue
        if not c.code_chars:
            bad["no_code"] += 1
            continue
        main = c.main_language
        if main is None:
            bad["unknown_language"] += 1
            continue
        if main not in wanted:
            bad["other_language"] += 1
            continue
        if c.code_fraction < min_code_fraction:
            bad["little_code"] += 1
            continue
        split = row.get("split") if use_row_split else None
        if split is not None:
            split = "val" if str(split).lower() in VAL_SPLITS else "train"
        meta = {k: row[k] for k in ("kind", "source") if k in row}
        out.append(Sample(q, a, main, split, meta))
    return out


def split_samples(samples: Sequence[Sample], val_fraction: float, seed: int,
                  max_train: int | None = None, max_val: int | None = None) -> tuple[list[Sample], list[Sample]]:
    """Stratified split: per main language a seeded ``val_fraction`` share goes to validation.

    Samples that already carry a split (from the row) keep it. Caps per language are applied after the
    split by a seeded draw, so a capped run is a subset of the full one.
    """
    by_lang: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_lang[s.language].append(s)
    train: list[Sample] = []
    val: list[Sample] = []
    for lang in sorted(by_lang):
        group = by_lang[lang]
        fixed_train = [s for s in group if s.split == "train"]
        fixed_val = [s for s in group if s.split == "val"]
        free = [s for s in group if s.split is None]
        rng = random.Random(f"{seed}:{lang}")
        order = list(range(len(free)))
        rng.shuffle(order)
        n_val = round(len(free) * val_fraction)
        if val_fraction > 0 and n_val == 0 and len(free) >= 2:
            n_val = 1  # every language gets a validation sample when it can spare one
        v = fixed_val + [free[i] for i in sorted(order[:n_val])]
        t = fixed_train + [free[i] for i in sorted(order[n_val:])]
        train += _cap(t, max_train, rng)
        val += _cap(v, max_val, rng)
    return train, val


def _cap(items: list[Sample], n: int | None, rng: random.Random) -> list[Sample]:
    if n is None or len(items) <= n:
        return items
    keep = sorted(rng.sample(range(len(items)), n))
    return [items[i] for i in keep]
