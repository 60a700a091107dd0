"""Training data: read glaive-shaped rows, classify them by their code fences, split, encode, batch.

Rows are dicts with ``question`` and ``answer`` (glaive-code-assistant-v3, or ``python -m training.corpus``
output, which adds ``language``/``kind``/``source``/``split``). Sources:

- local ``.jsonl`` / ``.json`` (one object per line) and ``.parquet`` files, folders of them, globs;
- ``hub:OWNER/NAME`` -- a Hub dataset whose parquet files are fetched with huggingface_hub (the
  ``datasets`` package is not needed).

Classification uses the project's one fence parser (:mod:`mole_lsp.lang.fence`) over question and answer, so
fence aliases resolve through the registry: ```c++ is C++, ```c# is C#, ```js is JavaScript (the authors'
regex sent the first two to C and dropped the last kind). A sample's *main language* is the language with
the most characters inside its code blocks; samples are kept when that language is one of the configured
ones and at least ``min_code_fraction`` of all characters are inside code blocks. Everything else is
counted as a bad row by reason and skipped, never fatal.

Prompt format: the base's chat template when it has one (user = question, assistant = answer), else the
plain format ``### Instruction\\n{question}\\n\\n### Response\\n{answer}{eos}`` (the layout
:mod:`mole_lsp.engine.prompts` sends at inference; no BOS, as the server encodes without special tokens). The loss covers the
answer tokens only (from the first token that reaches into the answer, through the end-of-turn tokens).
Per-token labels come from the fence parser over the whole formatted text (the same function
:func:`mole_lsp.lang.detok.token_labels` uses), so question tokens are routed like the answer's.
"""

from __future__ import annotations

import glob
import json
import math
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mole_lsp.lang.fence import NL, UNKNOWN, label_chars, label_offsets
from mole_lsp.lang.registry import Registry, load_registry

# Samples per language after filtering in the paper (Table I).
PAPER_TABLE_I: dict[str, int] = {
    "c": 15_773, "cpp": 37_136, "csharp": 11_320, "go": 9_533,
    "java": 24_010, "javascript": 22_958, "python": 52_642, "rust": 18_835,
}
HUB_PREFIX = "hub:"
VAL_SPLITS = frozenset({"heldout", "validation", "valid", "val", "test", "dev"})
PLAIN_TEMPLATE = "### Instruction\n{question}\n\n### Response\n{answer}{eos}"
PAD_LABEL = "pad"

Log = Callable[[str], None]


# -- bad rows ---------------------------------------------------------------------------------------------
class BadRows(Counter):
    """Counts of skipped rows by reason (no_text, no_code, little_code, unknown_language, ...)."""

    def summary(self) -> str:
        if not self:
            return "bad rows: none"
        return "bad rows: " + ", ".join(f"{k} {v}" for k, v in sorted(self.items()))


# -- reading ----------------------------------------------------------------------------------------------
def _read_jsonl(path: Path, bad: BadRows) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad["unparsable"] += 1
                continue
            if isinstance(row, dict):
                yield row
            else:
                bad["not_an_object"] += 1


def _read_parquet(path: Path, bad: BadRows) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # optional: only Parquet sources need it
        raise RuntimeError(f"reading {path} needs pyarrow (pip install pyarrow)") from e
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=4096):
        yield from batch.to_pylist()


def _files_of(spec: str) -> list[Path]:
    p = Path(spec).expanduser()
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.suffix in (".jsonl", ".json", ".parquet") and f.is_file())
    if p.is_file():
        return [p]
    hits = sorted(Path(x) for x in glob.glob(os.path.expanduser(spec), recursive=True))
    return [h for h in hits if h.is_file()]


def hub_parquet_files(repo_id: str, revision: str | None = None, offline: bool = False) -> list[Path]:
    """Download (or find cached) the parquet files of a Hub dataset; train split files first."""
    from huggingface_hub import HfApi, hf_hub_download

    from mole_lsp.paths import hub_endpoint

    api = HfApi(endpoint=hub_endpoint())
    names = [n for n in api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
             if n.endswith(".parquet")]
    if not names:
        # Datasets stored as JSON get an automatic parquet conversion under this ref.
        revision = "refs/convert/parquet"
        names = [n for n in api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
                 if n.endswith(".parquet")]
    return [Path(hf_hub_download(repo_id, n, repo_type="dataset", revision=revision,
                                 endpoint=hub_endpoint(), local_files_only=offline)) for n in sorted(names)]


def iter_rows(sources: Sequence[str], bad: BadRows, max_rows: int | None = None,
              offline: bool = False) -> Iterator[dict[str, Any]]:
    """Rows of every source in order; missing sources raise (a typo should not train on nothing)."""
    for spec in sources:
        if spec.startswith(HUB_PREFIX):
            repo, _, rev = spec[len(HUB_PREFIX):].partition("@")
            files = hub_parquet_files(repo, rev or None, offline)
        else:
            files = _files_of(spec)
        if not files:
            raise FileNotFoundError(f"no data found at {spec!r} (expected .jsonl/.parquet files, a folder or hub:REPO)")
        n = 0
        for f in files:
            reader = _read_parquet if f.suffix == ".parquet" else _read_jsonl
            for row in reader(f, bad):
                yield row
                n += 1
                if max_rows is not None and n >= max_rows:
                    break
            if max_rows is not None and n >= max_rows:
                break


# -- classification ---------------------------------------------------------------------------------------
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
    split: str | None = None  # from the row ("train"/"heldout"), None = to be drawn
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


# -- prompt format ----------------------------------------------------------------------------------------
class PromptFormat:
    """Turns (question, answer) into one text and the character offset where the answer part starts.

    ``chat``: the tokenizer's chat template; the answer part is everything the template adds after the
    generation prompt (the answer and the end-of-turn tokens). ``plain``: :data:`PLAIN_TEMPLATE`.
    """

    def __init__(self, tokenizer: Any, mode: str = "auto", system_prompt: str | None = None) -> None:
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if mode == "auto":
            mode = "chat" if has_template else "plain"
        if mode == "chat" and not has_template:
            raise ValueError("prompt_format='chat' but the tokenizer has no chat template")
        self.mode = mode
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.eos = getattr(tokenizer, "eos_token", None) or ""

    def _messages(self, question: str, answer: str | None) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        msgs.append({"role": "user", "content": question})
        if answer is not None:
            msgs.append({"role": "assistant", "content": answer})
        return msgs

    def prompt(self, question: str) -> str:
        """The text a model sees before it writes the answer (what inference should send)."""
        if self.mode == "chat":
            return self.tokenizer.apply_chat_template(self._messages(question, None), tokenize=False,
                                                      add_generation_prompt=True)
        return PLAIN_TEMPLATE.split("{answer}")[0].format(question=question)

    def render(self, question: str, answer: str) -> tuple[str, int]:
        if self.mode == "plain":
            text = PLAIN_TEMPLATE.format(question=question, answer=answer, eos=self.eos)
            return text, len(self.prompt(question))
        prompt = self.prompt(question)
        full = self.tokenizer.apply_chat_template(self._messages(question, answer), tokenize=False)
        if full.startswith(prompt):
            return full, len(prompt)
        at = full.rfind(answer)  # templates that rewrite the history: fall back to the answer's position
        if at < 0:
            raise ValueError("chat template does not reproduce the answer text")
        return full, at


# -- encoding ---------------------------------------------------------------------------------------------
@dataclass
class Example:
    """One tokenized sample. ``labels`` index into the dataset's label vocabulary."""

    input_ids: torch.Tensor  # int32 [T]
    labels: torch.Tensor  # int16 [T]
    answer_start: int  # first token of the answer part (loss on targets t >= answer_start)
    language: str

    def __len__(self) -> int:
        return int(self.input_ids.numel())

    @property
    def n_targets(self) -> int:
        return len(self) - max(1, self.answer_start)


@dataclass
class EncodedSet:
    examples: list[Example]
    label_vocab: list[str]  # label index -> fence label ("nl", "unknown", language ids)

    def __len__(self) -> int:
        return len(self.examples)

    def lengths(self) -> list[int]:
        return [len(e) for e in self.examples]

    def subset(self, languages: Iterable[str]) -> EncodedSet:
        keep = set(languages)
        return EncodedSet([e for e in self.examples if e.language in keep], self.label_vocab)


class LabelVocab:
    def __init__(self) -> None:
        self.names: list[str] = [NL, UNKNOWN]
        self.index = {n: i for i, n in enumerate(self.names)}

    def ids(self, labels: Sequence[str]) -> list[int]:
        out = []
        for lb in labels:
            i = self.index.get(lb)
            if i is None:
                i = self.index[lb] = len(self.names)
                self.names.append(lb)
            out.append(i)
        return out


def encode_samples(samples: Sequence[Sample], tokenizer: Any, fmt: PromptFormat, max_length: int,
                   too_long: str, registry: Registry, bad: BadRows, vocab: LabelVocab | None = None,
                   chunk: int = 512) -> EncodedSet:
    """Tokenize (one pass, with offsets), label every token with the fence parser, mark the answer."""
    vocab = vocab or LabelVocab()
    out: list[Example] = []
    for c0 in range(0, len(samples), chunk):
        part = samples[c0:c0 + chunk]
        texts, starts, kept = [], [], []
        for s in part:
            try:
                text, start = fmt.render(s.question, s.answer)
            except Exception:  # noqa: BLE001 - template errors on odd rows are counted, not fatal
                bad["template_error"] += 1
                continue
            texts.append(text)
            starts.append(start)
            kept.append(s)
        if not texts:
            continue
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        for s, text, start, ids, offsets in zip(kept, texts, starts, enc["input_ids"], enc["offset_mapping"],
                                                strict=True):
            # First token that reaches into the answer part.
            a_tok = next((i for i, (_, e) in enumerate(offsets) if e > start), len(ids))
            if len(ids) > max_length:
                if too_long == "skip" or a_tok >= max_length - 1:
                    bad["too_long"] += 1
                    continue
                bad["truncated (kept)"] += 1
            if a_tok >= len(ids):
                bad["empty_answer"] += 1
                continue
            labels = label_offsets(text, offsets, registry)
            ids, labels = ids[:max_length], labels[:max_length]
            out.append(Example(torch.tensor(ids, dtype=torch.int32),
                               torch.tensor(vocab.ids(labels), dtype=torch.int16), a_tok, s.language))
    return EncodedSet(out, vocab.names)


# -- the whole pipeline ----------------------------------------------------------------------------------
@dataclass
class DataBundle:
    train: EncodedSet
    val: EncodedSet
    bad: BadRows
    table: str
    fmt: PromptFormat


def language_table(train: EncodedSet, val: EncodedSet, languages: Sequence[str], registry: Registry) -> str:
    """Samples and tokens per language, with the paper's Table I sample counts beside."""
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
        paper = PAPER_TABLE_I.get(lang)
        name = registry.get(lang).name if lang in registry else lang
        rows.append(f"{name:<12}{len(tr):>9,}{len(va):>7,}{toks:>12,}{ans:>12,}"
                    f"{(f'{paper:,}' if paper else '-'):>17}")
        for i, v in enumerate((len(tr), len(va), toks, ans)):
            tot[i] += v
    rows.append("-" * len(head))
    paper_total = sum(PAPER_TABLE_I.get(x, 0) for x in languages)
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
                                   cfg.max_val_samples)
    fmt = PromptFormat(tokenizer, cfg.prompt_format, cfg.system_prompt)
    vocab = LabelVocab()
    train = encode_samples(train_s, tokenizer, fmt, cfg.max_length, cfg.too_long, registry, bad, vocab)
    val = encode_samples(val_s, tokenizer, fmt, cfg.max_length, cfg.too_long, registry, bad, vocab)
    train.label_vocab = val.label_vocab = vocab.names
    table = language_table(train, val, cfg.languages, registry)
    log(f"prompt format: {fmt.mode}\n{table}\n{bad.summary()}")
    return DataBundle(train, val, bad, table, fmt)


# -- batching ---------------------------------------------------------------------------------------------
def plan_epoch(lengths: Sequence[int], micro: int, accum: int, world: int, seed: int, epoch: int,
               bucket_chunk: int = 64) -> list[list[list[int]]]:
    """Optimizer steps of one epoch; each is ``accum * world`` micro-batches of sample indices.

    Length bucketing: a seeded shuffle, then samples are sorted by length inside chunks of
    ``bucket_chunk`` global batches and cut into global batches, whose order is shuffled again. A global
    batch is cut into consecutive micro-batches (similar lengths, little padding); micro-batch ``k`` of a
    step belongs to rank ``k % world`` at accumulation index ``k // world``. The plan depends only on the
    global batch, never on how it is spread over processes.
    """
    g = micro * accum * world
    rng = random.Random(seed * 1_000_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    batches: list[list[int]] = []
    span = g * max(1, bucket_chunk)
    for c in range(0, len(idx), span):
        part = sorted(idx[c:c + span], key=lambda i: (lengths[i], i))
        batches += [part[b:b + g] for b in range(0, len(part), g)]
    rng.shuffle(batches)
    steps = []
    for b in batches:
        per = math.ceil(len(b) / (accum * world)) if len(b) < g else micro  # a short last batch is spread out
        steps.append([b[k * per:(k + 1) * per] for k in range(accum * world)])
    return steps


def collate(examples: Sequence[Example], route_table: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors: input_ids, attention_mask, route_ids, targets (-100 = no loss)."""
    from mole_lsp.core.routing import ROUTE_PAD

    t = max(len(e) for e in examples)
    n = len(examples)
    ids = torch.full((n, t), pad_id, dtype=torch.long)
    mask = torch.zeros((n, t), dtype=torch.long)
    routes = torch.full((n, t), ROUTE_PAD, dtype=torch.long)
    targets = torch.full((n, t), -100, dtype=torch.long)
    for i, e in enumerate(examples):
        k = len(e)
        ids[i, :k] = e.input_ids.long()
        mask[i, :k] = 1
        routes[i, :k] = route_table[e.labels.long()]
        start = max(1, e.answer_start)
        targets[i, start:k] = ids[i, start:k]
    # targets[t] is predicted at position t-1: shift so that targets line up with logits.
    shifted = torch.full_like(targets, -100)
    shifted[:, :-1] = targets[:, 1:]
    return {"input_ids": ids, "attention_mask": mask, "route_ids": routes, "targets": shifted}
