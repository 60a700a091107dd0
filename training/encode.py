"""Samples to token ids: the prompt layout, per-token fence labels and the answer-only loss mask.

Prompt layout: :func:`mole_lsp.engine.prompts.chat_sample`, the same module the engine builds its chat
prompts with -- the base's chat template when it has one (user = question, assistant = answer), else the
plain layout ``### Instruction\\n{question}\\n\\n### Response\\n{answer}{eos}`` (no BOS, as the server
encodes without special tokens). The loss covers the answer tokens only (from the first token that
reaches into the answer, through the end-of-turn tokens). Per-token labels come from the fence parser
over the whole formatted text (the same function :func:`mole_lsp.lang.detok.token_labels` uses), so
question tokens are routed like the answer's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mole_lsp.engine.prompts import chat_layout, chat_sample, chat_text
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
