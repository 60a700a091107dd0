"""Encoding: the prompt layout of the engine's prompt module, the answer-only mask, fence labels, cuts."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_tokenizer

from mole_lsp.engine.prompts import chat_text
from mole_lsp.lang.detok import token_labels
from mole_lsp.lang.registry import load_registry
from training.batching import collate
from training.classify import Sample
from training.encode import PromptFormat, encode_samples
from training.sources import BadRows

REG = load_registry()


@pytest.mark.parametrize("chat", [True, False])
def test_answer_only_mask_and_fence_labels(chat):
    tok = tiny_tokenizer(chat)
    fmt = PromptFormat(tok, "auto")
    assert fmt.mode == ("chat" if chat else "plain")
    s = Sample("Add:\n```py\nx\n```\n?", "Here:\n```rs\nfn f() {}\n```\nok", "rust")
    enc = encode_samples([s], tok, fmt, 512, "truncate", REG, BadRows())
    ex = enc.examples[0]
    text, start = fmt.render(s.question, s.answer)
    # The training prompt is the engine's chat prompt for the same question: they cannot drift.
    assert text[:start] == fmt.prompt(s.question) == chat_text(tok, s.question)
    ids, labels = token_labels(tok, text, REG)
    assert ex.input_ids.tolist() == ids
    assert [enc.label_vocab[i] for i in ex.labels.tolist()] == labels  # the one fence parser's labels
    assert "rust" in labels and "python" in labels
    # Loss covers exactly the tokens from the answer on.
    answer_text = tok.decode(ids[ex.answer_start:])
    assert answer_text.startswith("Here:") and s.question not in answer_text
    assert not tok.decode(ids[:ex.answer_start]).endswith("Here:")
    batch = collate([ex], torch.arange(len(enc.label_vocab)), tok.pad_token_id)
    tgt = batch["targets"][0]
    assert (tgt[: ex.answer_start - 1] == -100).all()
    assert tgt[ex.answer_start - 1:len(ids) - 1].tolist() == ids[ex.answer_start:]
    assert tgt[len(ids) - 1] == -100


def test_too_long_rows_are_cut_or_skipped():
    tok = tiny_tokenizer()
    fmt = PromptFormat(tok)
    long = Sample("short?", "```python\n" + "x = 1\n" * 200 + "```", "python")
    huge_q = Sample("why " * 300, "```python\nx\n```", "python")
    bad = BadRows()
    enc = encode_samples([long, huge_q], tok, fmt, 64, "truncate", REG, bad)
    assert len(enc) == 1 and len(enc.examples[0]) == 64
    assert bad == {"truncated (kept)": 1, "too_long": 1}
    bad = BadRows()
    assert len(encode_samples([long], tok, fmt, 64, "skip", REG, bad)) == 0 and bad["too_long"] == 1
