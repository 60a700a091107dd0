"""Pieces of the decoding loop that need no model: relabelling, cancellation, end tokens, token healing,
single-line and time-budget stops (on a scripted forward)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import torch
from lsp_fixtures import make_tokenizer

from mole_lsp.engine.decode import CancelToken, Decoder, TokenHealer, eos_token_ids, is_cancelled, relabeller
from mole_lsp.engine.prompts import completion_prompt
from mole_lsp.lang.registry import load_registry


class FakeTokenizer:
    """A tokenizer whose ids decode to fixed texts."""

    def __init__(self, texts: list[str], eos: int | None = None) -> None:
        self.texts = texts
        self.eos_token_id = eos

    def __len__(self) -> int:
        return len(self.texts)

    def batch_decode(self, ids: list[list[int]], clean_up_tokenization_spaces: bool = False) -> list[str]:
        return ["".join(self.texts[i] for i in row) for row in ids]

    def get_vocab(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.texts)}


def test_relabel_maps_labels_and_star_matches_the_rest() -> None:
    assert relabeller(None)("python") == "python"
    swap = relabeller({"python": "rust"})
    assert (swap("python"), swap("nl")) == ("rust", "nl")
    every = relabeller({"*": "nl", "go": "go"})
    assert (every("python"), every("go")) == ("nl", "go")


def test_cancellation_accepts_tokens_events_and_none() -> None:
    token, event = CancelToken(), threading.Event()
    assert not is_cancelled(token) and not is_cancelled(event) and not is_cancelled(None)
    token.cancel()
    event.set()
    assert is_cancelled(token) and is_cancelled(event)


def test_eos_ids_join_model_tokenizer_and_end_of_turn_tokens() -> None:
    tok = FakeTokenizer(["a", "<|im_end|>", "b", "<|EOT|>"], eos=0)
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[2]))
    assert eos_token_ids(model, tok) == {0, 1, 2, 3}


def test_token_healing_keeps_tokens_that_write_the_pending_text() -> None:
    tok = FakeTokenizer(["  ", "    x", "x", "", " "])
    healer = TokenHealer(tok)
    logits = torch.zeros(len(tok))
    kept = healer.constrain(logits, "    ").isfinite().nonzero()[:, 0].tolist()
    assert kept == [0, 1, 4]  # prefixes of the indentation, or all of it and more; never the empty token
    assert torch.equal(healer.constrain(logits, "zzz"), logits)  # nothing fits: unconstrained


class Scripted:
    """A Forward that writes a fixed text (one-hot logits), optionally slowly; counts prefilled ids."""

    def __init__(self, tok, text: str, delay_s: float = 0.0) -> None:
        self.ids = tok(text, add_special_tokens=False)["input_ids"]
        self.vocab = len(tok)
        self.delay_s = delay_s
        self.step = 0

    def __call__(self, ids, labels, past):
        time.sleep(self.delay_s)
        logits = torch.zeros(self.vocab)
        logits[self.ids[min(self.step, len(self.ids) - 1)]] = 1.0
        self.step += 1
        return logits, past


def _decoder(tok, forward) -> Decoder:
    return Decoder(tok, load_registry(), forward, lambda label: label, set())


def test_code_after_the_cursor_gets_one_line():
    tok = make_tokenizer()
    prompt = completion_prompt(tok, "x = foo(", ")\nbar()\n", "python")
    r = _decoder(tok, Scripted(tok, "1, 2\n    y = 3\n")).run(prompt, "completion", "python", 30, [], 0.0, None, None)
    assert (r.text, r.stop_reason) == ("1, 2", "end_of_line")
    # The model writing the line to its end: what the line already has is not suggested again.
    r = _decoder(tok, Scripted(tok, "1, 2)\n")).run(prompt, "completion", "python", 30, [], 0.0, None, None)
    assert (r.text, r.stop_reason) == ("1, 2", "end_of_line")
    n = len(tok("1, 2)", add_special_tokens=False)["input_ids"])
    r = _decoder(tok, Scripted(tok, "1, 2)\n")).run(prompt, "completion", "python", n, [], 0.0, None, None)
    assert (r.text, r.stop_reason) == ("1, 2", "max_tokens")
    # At a line end the same text goes on over several lines.
    prompt = completion_prompt(tok, "x = foo(1)\n", "", "python")
    r = _decoder(tok, Scripted(tok, "y = 2\nz = 3\n")).run(prompt, "completion", "python", 8, [], 0.0, None, None)
    assert r.text == "y = 2\nz = 3" and r.stop_reason == "blank_line"


def test_a_multi_line_completion_keeps_whole_lines_within_its_time_budget():
    tok = make_tokenizer()
    prompt = completion_prompt(tok, "x = 0\n", "", "python")
    text = "".join(f"y{i} = {i}\n" for i in range(40))
    r = _decoder(tok, Scripted(tok, text, delay_s=0.01)).run(prompt, "completion", "python", 400, [], 0.0, None,
                                                            None, time_budget_ms=60)
    assert r.stop_reason == "time_budget"
    assert r.text and text.startswith(r.text + "\n")  # whole lines only
    assert r.timings["decode"] < 1000
    # A single-line completion ignores it (it ends at its line's end anyway).
    prompt = completion_prompt(tok, "x = (", ")\n", "python")
    r = _decoder(tok, Scripted(tok, "1 + 2 + 3\n", delay_s=0.01)).run(prompt, "completion", "python", 40, [], 0.0,
                                                                     None, None, time_budget_ms=1)
    assert (r.text, r.stop_reason) == ("1 + 2 + 3", "end_of_line")
