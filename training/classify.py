"""Which rows train which language: classification by code fences, the ⅓ rule, the stratified split.

Classification uses the project's one fence parser (:mod:`mole_lsp.lang.fence`) over question and answer, so
fence aliases resolve through the registry: ```c++ is C++, ```c# is C#, ```js is JavaScript (the authors'
regex sent the first two to C and dropped the last kind). A sample's *main language* is the language with
the most characters inside its code blocks; samples are kept when that language is one of the configured
ones and at least ``min_code_fraction`` of all characters are inside code blocks. Everything else is
counted as a bad row by reason and skipped, never fatal.

Rows of ``kind: completion`` (raw source windows, ``code`` + ``language``; :mod:`training.corpus`) are not
chat samples: their language is the row's (resolved by the registry), the ⅓ rule does not apply (every
character is code), and they are encoded with the engine's completion prompt (:mod:`training.encode`).
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

    @property
    def is_completion(self) -> bool:
        """A raw source window for the completion objective (``answer`` holds the code)."""
        return self.meta.get("kind") == COMPLETION


COMPLETION = "completion"  # the row kind of raw source windows


def _completion_row(row: dict[str, Any], wanted: set[str], registry: Registry, bad: BadRows,
                    use_row_split: bool) -> Sample | None:
    code, lang = row.get("code"), row.get("language")
    if not isinstance(code, str) or not code.strip():
        bad["no_text"] += 1
        return None
    main = registry.resolve(lang) if isinstance(lang, str) else None
    if main is None:
        bad["unknown_language"] += 1
        return None
    if main not in wanted:
        bad["other_language"] += 1
        return None
    split = row.get("split") if use_row_split else None
    if split is not None:
        split = "val" if str(split).lower() in VAL_SPLITS else "train"
    meta = {k: row[k] for k in ("kind", "source", "line") if k in row}
    return Sample("", code, main, split, meta)


def select_rows(rows: Iterable[dict[str, Any]], languages: Sequence[str], min_code_fraction: float,
                registry: Registry, bad: BadRows, use_row_split: bool = True) -> list[Sample]:
    """Classify rows and keep those whose main language is wanted and which are code enough."""
    wanted = set(languages)
    out: list[Sample] = []
    for row in rows:
        if row.get("kind") == COMPLETION:
            sample = _completion_row(row, wanted, registry, bad, use_row_split)
            if sample is not None:
                out.append(sample)
            continue
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
                  max_train: int | None = None, max_val: int | None = None,
                  completion_share: float | None = None) -> tuple[list[Sample], list[Sample]]:
    """Stratified split: per main language a seeded ``val_fraction`` share goes to validation.

    Samples that already carry a split (from the row) keep it. Caps per language are applied after the
    split by a seeded draw, so a capped run is a subset of the full one. ``completion_share``: the share
    of completion windows among each language's samples on both sides (None: as the data has them), met
    by drawing fewer of the more plentiful kind.
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
        train += _mix(t, max_train, completion_share, rng)
        val += _mix(v, max_val, completion_share, rng)
    return train, val


def _mix(items: list[Sample], cap: int | None, share: float | None, rng: random.Random) -> list[Sample]:
    """At most ``cap`` items, of which ``share`` are completion windows (as near as the data allows)."""
    if share is None:
        return _cap(items, cap, rng)
    comp = [s for s in items if s.is_completion]
    chat = [s for s in items if not s.is_completion]
    n = len(items) if cap is None else min(cap, len(items))
    # The largest total that keeps the share with what there is of each kind.
    if share >= 1:
        n_comp, n_chat = min(n, len(comp)), 0
    elif share <= 0:
        n_comp, n_chat = 0, min(n, len(chat))
    else:
        n = min(n, int(len(comp) / share) if share else n, int(len(chat) / (1 - share)))
        n_comp = round(n * share)
        n_chat = min(len(chat), n - n_comp)
    kept = set(map(id, _cap(comp, n_comp, rng))) | set(map(id, _cap(chat, n_chat, rng)))
    return [s for s in items if id(s) in kept]


def _cap(items: list[Sample], n: int | None, rng: random.Random) -> list[Sample]:
    if n is None or len(items) <= n:
        return items
    keep = sorted(rng.sample(range(len(items)), n))
    return [items[i] for i in keep]
