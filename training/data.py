"""The training-data pipeline: read rows, classify and split them, encode both splits, report per language.

The steps live in their own modules: :mod:`training.sources` (reading rows), :mod:`training.classify`
(fence classification, the ⅓ rule, the stratified split), :mod:`training.encode` (prompt layout, labels,
answer mask) and :mod:`training.batching` (batch plans and padding, used by the loop).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from mole_lsp.lang.registry import Registry, load_registry
from training.classify import select_rows, split_samples
from training.encode import CompletionFormat, EncodedSet, LabelVocab, PromptFormat, encode_samples
from training.sources import BadRows, iter_rows

PAPER_TABLE_FILE = Path(__file__).resolve().parent / "paper_table_i.toml"

Log = Callable[[str], None]


@cache
def paper_table_i() -> dict[str, int]:
    """Samples per language after filtering in the paper (Table I), by registry id."""
    return dict(tomllib.loads(PAPER_TABLE_FILE.read_text(encoding="utf-8")))


@dataclass
class DataBundle:
    train: EncodedSet
    val: EncodedSet
    bad: BadRows
    table: str
    fmt: PromptFormat


def language_table(train: EncodedSet, val: EncodedSet, languages: Sequence[str], registry: Registry) -> str:
    """Samples and tokens per language, with the paper's Table I sample counts beside."""
    table_i = paper_table_i()
    rows = []
    head = f"{'language':<12}{'train':>9}{'val':>7}{'tokens':>12}{'answer tok':>12}{'paper (Table I)':>17}"
    rows.append(head)
    rows.append("-" * len(head))
    tot = [0, 0, 0, 0]
    for lang in languages:
        tr = [e for e in train.examples if e.language == lang]
        va = [e for e in val.examples if e.language == lang]
        toks = sum(len(e) for e in tr + va)
        ans = sum(e.n_targets for e in tr + va)
        paper = table_i.get(lang)
        name = registry.get(lang).name if lang in registry else lang
        rows.append(f"{name:<12}{len(tr):>9,}{len(va):>7,}{toks:>12,}{ans:>12,}"
                    f"{(f'{paper:,}' if paper else '-'):>17}")
        for i, v in enumerate((len(tr), len(va), toks, ans)):
            tot[i] += v
    rows.append("-" * len(head))
    paper_total = sum(table_i.get(x, 0) for x in languages)
    rows.append(f"{'total':<12}{tot[0]:>9,}{tot[1]:>7,}{tot[2]:>12,}{tot[3]:>12,}{paper_total:>17,}")
    return "\n".join(rows)


def build_data(cfg: Any, tokenizer: Any, registry: Registry | None = None, log: Log = print) -> DataBundle:
    """Read, classify, split and encode ``cfg.data`` (a TrainConfig); print the language table."""
    registry = registry or load_registry()
    for lang in cfg.languages:
        registry.get(lang)  # unknown ids fail early, with the list of known ones
    bad = BadRows()
    rows = iter_rows(cfg.data, bad, cfg.max_rows, cfg.offline)
    samples = select_rows(rows, cfg.languages, cfg.min_code_fraction, registry, bad, cfg.use_row_split)
    train_s, val_s = split_samples(samples, cfg.val_fraction, cfg.split_seed, cfg.max_train_samples,
                                   cfg.max_val_samples, cfg.completion_share)
    fmt = PromptFormat(tokenizer, cfg.prompt_format, cfg.system_prompt)
    vocab = LabelVocab()
    comp = CompletionFormat(tokenizer, cfg.fim_rate, cfg.split_seed)
    train = encode_samples(train_s, tokenizer, fmt, cfg.max_length, cfg.too_long, registry, bad, vocab, comp=comp)
    val = encode_samples(val_s, tokenizer, fmt, cfg.max_length, cfg.too_long, registry, bad, vocab, comp=comp)
    train.label_vocab = val.label_vocab = vocab.names
    table = language_table(train, val, cfg.languages, registry)
    log(f"prompt format: {fmt.mode}; completion windows: {comp.describe()}\n{table}\n{bad.summary()}")
    return DataBundle(train, val, bad, table, fmt)
