"""Samples to token ids: the prompt layout, per-token fence labels and the answer-only loss mask.

Prompt layout: :func:`mole_lsp.engine.prompts.chat_sample`, the same module the engine builds its chat
prompts with -- the base's chat template when it has one (user = question, assistant = answer), else the
plain layout ``### Instruction\\n{question}\\n\\n### Response\\n{answer}{eos}`` (no BOS, as the server
encodes without special tokens). The loss covers the answer tokens only (from the first token that
reaches into the answer, through the end-of-turn tokens). Per-token labels come from the fence parser
over the whole formatted text (the same function :func:`mole_lsp.lang.detok.token_labels` uses), so
question tokens are routed like the answer's.

Completion windows (raw source, :class:`~training.classify.Sample` with ``is_completion``) are rendered by
:func:`mole_lsp.engine.prompts.completion_sample`, i.e. by the engine's own completion prompt: the raw
prefix with BOS as the server sends it, every position routed as the file's language, loss on every code
token; with FIM tokens a ``fim_rate`` share becomes the engine's FIM prompt plus the middle and EOS.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mole_lsp.engine.model_info import fim_tokens_of
from mole_lsp.engine.prompts import CompletionSample, chat_layout, chat_sample, chat_text, completion_sample
from mole_lsp.lang.fence import NL, UNKNOWN, label_offsets
from mole_lsp.lang.registry import Registry
from training.classify import Sample
from training.sources import BadRows


class PromptFormat:
    """The chat layout of a run: turns (question, answer) into one text and the answer's character offset.

    ``mode``: ``chat`` (the tokenizer's template) or ``plain``, resolved from ``auto`` by
    :func:`mole_lsp.engine.prompts.chat_layout`; rendering is :mod:`mole_lsp.engine.prompts`'s.
    """

    def __init__(self, tokenizer: Any, mode: str = "auto", system_prompt: str | None = None) -> None:
        self.mode = chat_layout(tokenizer, mode)
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt

    def prompt(self, question: str) -> str:
        """The text a model sees before it writes the answer (what inference should send)."""
        return chat_text(self.tokenizer, question, layout=self.mode, system=self.system_prompt)

    def render(self, question: str, answer: str) -> tuple[str, int]:
        """The whole sample's text and the character offset where its answer part starts."""
        return chat_sample(self.tokenizer, question, answer, layout=self.mode, system=self.system_prompt)


class CompletionFormat:
    """How completion windows become training samples: the engine's completion prompt, FIM when the
    base has FIM tokens (a seeded ``fim_rate`` share, holes of one to a few whole or partial lines)."""

    def __init__(self, tokenizer: Any, fim_rate: float = 0.5, seed: int = 0) -> None:
        self.tokenizer = tokenizer
        self.fim = fim_tokens_of(tokenizer)
        self.fim_rate = fim_rate if self.fim is not None else 0.0
        self.seed = seed

    def describe(self) -> str:
        return f"FIM {self.fim_rate:.0%} ({self.fim.prefix})" if self.fim else "prefix (the base has no FIM tokens)"

    def render(self, code: str, language: str, budget: int, key: str) -> CompletionSample:
        rng = random.Random(f"{self.seed}\0{key}")
        if self.fim is None or rng.random() >= self.fim_rate:
            return completion_sample(self.tokenizer, code, language, budget)
        return completion_sample(self.tokenizer, code, language, budget, self.fim, hole=fim_hole(code, rng))


def fim_hole(code: str, rng: random.Random, max_lines: int = 4) -> tuple[int, int]:
    """A seeded middle: from a cursor inside a non-blank line (its start after the indentation, or
    mid-line) to the end of that line or up to ``max_lines`` lines further, as an editor user asks."""
    spans, pos = [], 0  # (start, end) of every line, end before its newline
    for line in code.split("\n"):
        spans.append((pos, pos + len(line)))
        pos += len(line) + 1
    filled = [k for k, (a, e) in enumerate(spans) if code[a:e].strip()]
    if not filled:
        return len(code), len(code)
    k = rng.choice(filled)
    a, e = spans[k]
    line = code[a:e]
    indent = len(line) - len(line.lstrip(" \t"))
    cursor = a + (indent if rng.random() < 0.5 else rng.randint(indent, max(indent, len(line) - 1)))
    last = min(len(spans) - 1, k + rng.randint(0, max_lines - 1))
    return cursor, spans[last][1]


@dataclass
class Example:
    """One tokenized sample. ``labels`` index into the dataset's label vocabulary."""

    input_ids: torch.Tensor  # int32 [T]
    labels: torch.Tensor  # int16 [T]
    answer_start: int  # first token of the answer part (loss on targets t >= answer_start)
    language: str
    kind: str = "chat"  # chat | completion | fim (validation reports each kind apart)

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
    """Fence label <-> small integer, growing as labels appear (NL and UNKNOWN first)."""

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
                   chunk: int = 512, comp: CompletionFormat | None = None) -> EncodedSet:
    """Tokenize (one pass, with offsets), label every token with the fence parser, mark the answer.
    Completion windows go through ``comp`` (the engine's completion prompt), in the same order."""
    vocab = vocab or LabelVocab()
    out: list[Example] = []
    comp = comp or CompletionFormat(tokenizer, 0.0)
    for s in samples:
        if s.is_completion:
            key = f"{s.meta.get('source', '')}\0{s.meta.get('line', '')}\0{s.answer[:64]}"
            cs = comp.render(s.answer, s.language, max_length, key)
            if len(cs.ids) - cs.answer_start < 2:
                bad["empty_answer"] += 1
                continue
            out.append(Example(torch.tensor(cs.ids, dtype=torch.int32), torch.tensor(vocab.ids(cs.labels),
                                                                                     dtype=torch.int16),
                               cs.answer_start, s.language, cs.kind))
    samples = [s for s in samples if not s.is_completion]
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
