"""Pieces of the decoding loop that need no model: relabelling, cancellation, end tokens, token healing."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import torch

from mole_lsp.engine.decode import CancelToken, TokenHealer, eos_token_ids, is_cancelled, relabeller


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
