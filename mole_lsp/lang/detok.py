"""Tokens → text → fence labels: the only place that maps tokens to adapter labels.

Training uses ``token_labels`` (tokenizer offsets + ``label_offsets``); generation uses
``IncrementalDecoder`` + ``FenceParser.feed``. Both read the same text through the same state
machine, so a label seen while decoding equals the label the token had in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenizers import Tokenizer

from mole_lsp.lang.fence import NL, label_offsets
from mole_lsp.lang.registry import Registry

__all__ = ["IncrementalDecoder", "token_labels"]

_REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Streaming detokenizer: ``push`` one generated id, get the text it made visible.

    Decodes a short window of recent ids rather than the whole sequence: the window starts at a
    token boundary that is known to end a complete character, and the text of the window's own
    prefix is subtracted, so decoders that treat the first token specially (SentencePiece's
    leading-space strip) still give the right continuation. Text ending in U+FFFD (an incomplete
    UTF-8 sequence split across byte-level tokens) is held back until the character completes.
    """

    _CONTEXT = 4  # prompt ids kept as left context for the first generated token
    _MAX_HOLD = 8  # after this many held ids a trailing U+FFFD is taken to be a real character
    _TRIM = 256  # drop consumed ids from the buffer past this many

    def __init__(
        self, tokenizer: Any, prompt_ids: Sequence[int] = (), *, skip_special_tokens: bool = True
    ) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        self._raw = isinstance(tokenizer, Tokenizer)
        self._ids: list[int] = [int(i) for i in list(prompt_ids)[-self._CONTEXT :]]
        context = self._decode(self._ids)
        if context.endswith(_REPLACEMENT):
            # The prompt ends inside a character: show that character once it is complete.
            self._prefix = 0
            self._read = 0
            self._emitted = len(context.rstrip(_REPLACEMENT))
        else:
            self._prefix = 0
            self._read = len(self._ids)
            self._emitted = len(context)

    def _decode(self, ids: Sequence[int]) -> str:
        if not ids:
            return ""
        if self._raw:
            return self._tokenizer.decode(list(ids), skip_special_tokens=self._skip_special)
        return self._tokenizer.decode(
            list(ids), skip_special_tokens=self._skip_special, clean_up_tokenization_spaces=False
        )

    def push(self, token_id: int) -> str:
        """Add one id; return the newly visible text ("" while a character is incomplete)."""
        self._ids.append(int(token_id))
        text = self._decode(self._ids[self._prefix :])
        if text.endswith(_REPLACEMENT) and len(self._ids) - self._read < self._MAX_HOLD:
            visible = text.rstrip(_REPLACEMENT)
            if len(visible) <= self._emitted:
                return ""
            out = visible[self._emitted :]
            self._emitted = len(visible)
            return out
        out = text[self._emitted :]
        self._advance()
        return out

    def flush(self) -> str:
        """Return any held-back text (e.g. at the end of generation), even if incomplete."""
        text = self._decode(self._ids[self._prefix :])
        out = text[self._emitted :]
        self._advance()
        return out

    def _advance(self) -> None:
        # Everything decoded so far is shown: the old read point becomes the window start.
        self._prefix = self._read
        self._read = len(self._ids)
        self._emitted = len(self._decode(self._ids[self._prefix : self._read]))
        if self._prefix > self._TRIM:
            del self._ids[: self._prefix]
            self._read -= self._prefix
            self._prefix = 0


def token_labels(
    tokenizer: Any,
    text: str,
    registry: Registry | None = None,
    add_special_tokens: bool = False,
    state: str = NL,
) -> tuple[list[int], list[str]]:
    """Token ids of ``text`` and the fence label of each token (training labels).

    ``tokenizer`` is a transformers fast tokenizer or a ``tokenizers.Tokenizer``; offsets are
    character offsets into ``text``.
    """
    if isinstance(tokenizer, Tokenizer):
        enc = tokenizer.encode(text, add_special_tokens=add_special_tokens)
        ids, offsets = list(enc.ids), enc.offsets
    else:
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("token_labels needs a fast tokenizer (offset mapping); got a slow one")
        enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    return ids, label_offsets(text, offsets, registry, state)
