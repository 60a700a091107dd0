"""Degenerate repetition: a small model decoding greedily can fall into a loop (the same line, or the
same few tokens, over and over) and then writes it until the token limit. :class:`RepetitionDetector`
is fed the generated token ids one by one and says when the output ends in such a loop; the decoder
then stops with ``stop_reason == "repetition"`` and keeps the text before the loop plus one copy of its
unit (:meth:`Loop.keep`).

The rule (like vLLM's ``RepetitionDetectionParams``): the output ends in a pattern of ``period``
tokens (the n-gram; ``1 <= period <= max_period``) repeated back to back, covering at least
``min_repeats`` copies AND at least ``min_tokens`` tokens. Only exact, consecutive copies count: code
that repeats a shape with different content (``case 1: ...`` / ``case 2: ...``, a table of numbers,
``a[0] = 0`` / ``a[1] = 1``) never matches, however long.

Why the defaults (tuned on the quick-start SmolLM2-135M base's loops, e.g. ``#!/usr/bin/emacs\\n\\n``
= 8 tokens, and on real code that repeats itself):

- ``max_period = 64``: a loop unit of up to a few lines; longer units cost more tokens to see repeated
  than most answers' limit (256);
- ``min_repeats = 4``: two or three identical lines in a row happen in real code (``i++;``, ``print()``,
  the rows of a small zero matrix); four identical units in a row are where loops are. The price: a
  literal table with four or more identical rows in a row is cut after its first row;
- ``min_tokens = 48``: short units need more copies before they are a loop: a row of sixteen ``0, ``
  (47 SmolLM2 tokens), ``)))))`` or ``# -----`` are legitimate; 48 tokens of one short pattern rarely
  are. The quick-start loop above stops after 6 copies (48 tokens) instead of running to the limit.

The check is incremental: ``run[p]`` counts how many tokens in a row equal the token ``p`` before them,
so a push costs ``max_period`` integer comparisons whatever the output's length.
"""

from __future__ import annotations

from dataclasses import dataclass

STOP_REASON = "repetition"
# What the CLI and the server tell the user when a generation stopped for repetition.
NOTE = "the model began repeating itself: the output stops before the repeated part"


@dataclass(frozen=True)
class RepetitionRule:
    """When a repeated tail is a loop (see the module docstring for the defaults)."""

    max_period: int = 64  # longest repeated unit looked for, in tokens (the n-gram size)
    min_repeats: int = 4  # consecutive copies of the unit
    min_tokens: int = 48  # tokens the copies cover together


DEFAULT_RULE = RepetitionRule()


@dataclass(frozen=True)
class Loop:
    """A repeated tail: tokens ``[start, end)`` of the output are ``period``-periodic."""

    start: int
    period: int
    end: int

    @property
    def repeats(self) -> float:
        return (self.end - self.start) / self.period

    def keep(self, text: str, ends: list[int]) -> str:
        """The text to keep: before the loop plus one copy of its unit. ``ends[i]`` is ``len(text)``
        once token ``i`` was decoded. A loop of lines may start mid-line (the unit ``();\\n    g`` when
        ``f();`` comes before ``g();`` repeated): its copy is completed to the end of its line, and the
        trailing newlines are left out."""
        def offset(k: int) -> int:
            return ends[k - 1] if k > 0 else 0

        start, stop = offset(self.start), offset(self.start + self.period)
        if "\n" not in text[start:stop]:
            return text[:stop]
        if not text[:stop].endswith("\n"):
            eol = text.find("\n", stop)
            stop = eol if eol >= 0 else len(text)
        return text[:stop].rstrip("\n")


class RepetitionDetector:
    """Fed the generated token ids one by one; :meth:`push` returns the :class:`Loop` the output now
    ends in, or None."""

    def __init__(self, rule: RepetitionRule | None = None) -> None:
        self.rule = rule or RepetitionRule()
        if self.rule.max_period < 1 or self.rule.min_repeats < 2:
            raise ValueError(f"a loop needs max_period >= 1 and min_repeats >= 2, got {self.rule}")
        self.tokens: list[int] = []
        self._run = [0] * (self.rule.max_period + 1)  # run[p]: tokens in a row equal to the one p before

    def push(self, token: int) -> Loop | None:
        tokens, run, rule = self.tokens, self._run, self.rule
        n = len(tokens)
        tokens.append(token)
        found: Loop | None = None
        for p in range(1, min(rule.max_period, n) + 1):
            run[p] = run[p] + 1 if tokens[n - p] == token else 0
            span = run[p] + p  # the tail of this length is p-periodic
            if found is None and run[p] and span >= rule.min_repeats * p and span >= rule.min_tokens:
                found = Loop(start=n + 1 - span, period=p, end=n + 1)  # the shortest unit wins
        return found

    def feed(self, tokens: list[int]) -> Loop | None:
        """Push every token; the first loop found (the output is meant to stop there), or None."""
        for t in tokens:
            loop = self.push(t)
            if loop is not None:
                return loop
        return None
