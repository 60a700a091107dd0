"""The decoding loop: prefill a :class:`~mole_lsp.engine.prompts.Prompt`, then pick one token at a time
until a stop rule fires, routing every position by its label.

The loop sees the model only through a :data:`Forward` callable (token ids, the route label of each,
the cache -> logits of the last position and the new cache); the engine's adapter manager supplies it.
Stop rules, in the order they are checked: cancellation, an end-of-sequence token, a stop string, the
end of the cursor's line (``end_of_line``: a completion with code after the cursor on its line,
``Prompt.single_line``, without the line's existing rest when the model wrote it again), the completion rules of :func:`~mole_lsp.engine.prompts.completion_stop`,
degenerate repetition in every mode (``repetition``: the output ends in a loop, see
:mod:`~mole_lsp.engine.repetition`; the text before the loop and one copy of its unit are kept), the
time budget of a multi-line completion (``time_budget``: once a line is complete and ``time_budget_ms``
has passed since the first token, the complete lines are kept, like llama.cpp's ``t_max_predict_ms``),
the token budget.

KV reuse: with a :class:`~mole_lsp.engine.kvcache.KVStore`, the prefill starts from the longest cached
prefix with the same tokens and routes, and the cache of the prompt and the generated tokens is kept for
the next request (``GenerationResult.reused_tokens`` says how many positions were not computed again).

Token healing: a completion prompt may leave trailing indentation out (``Prompt.heal``); the first tokens
are then constrained to write it back (see :class:`TokenHealer`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mole_lsp.engine.kvcache import KVStore
from mole_lsp.engine.prompts import Prompt, completion_stop
from mole_lsp.engine.repetition import DEFAULT_RULE, RepetitionDetector, RepetitionRule
from mole_lsp.engine.repetition import STOP_REASON as REPETITION
from mole_lsp.lang.detok import IncrementalDecoder
from mole_lsp.lang.fence import FenceParser
from mole_lsp.lang.registry import Registry

# (token ids, route label per id, cache or None) -> (float logits of the last position, new cache)
Forward = Callable[[list[int], Sequence[str], Any], tuple[torch.Tensor, Any]]

# End-of-turn tokens of common chat templates, stopped at besides the model's own eos ids.
_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<｜end▁of▁sentence｜>", "<|EOT|>")


class CancelToken:
    """A stop flag checked between two tokens; set from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


Cancel = CancelToken | threading.Event | None


def is_cancelled(cancel: Cancel) -> bool:
    """Whether a :class:`CancelToken` or ``threading.Event`` (or None: never) has been set."""
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return cancel.cancelled


@dataclass
class GenerationResult:
    text: str
    mode: str
    language: str | None  # the language generated (document language, target, or None for automated)
    expert: str | None  # expert pack used for ``language`` (may be a fallback); None = shared/base only
    routes: list[str]  # per generated token: the adapter its position took (language id, shared, nl, base)
    labels: list[str]  # per generated token: the fence-parser label
    # eos, max_tokens, stop, end_of_line, blank_line, end_of_block, suffix, repetition, time_budget, cancelled,
    # empty
    stop_reason: str
    prompt_tokens: int
    new_tokens: int
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds: load, prefill, decode, total
    notes: list[str] = field(default_factory=list)  # degradations met for the first time
    base_only: bool = False
    reused_tokens: int = 0  # prompt positions whose keys/values came from the KV store (not prefilled)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a generation: the model's and tokenizer's eos plus known end-of-turn tokens."""
    ids: set[int] = set()
    cfg = getattr(model, "generation_config", None)
    for src in (getattr(cfg, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, Iterable):
            ids.update(int(i) for i in src)
    vocab = tokenizer.get_vocab()
    for tok in _END_TOKENS:
        if tok in vocab:
            ids.add(int(vocab[tok]))
    return ids


def relabeller(relabel: Mapping[str, str] | None) -> Callable[[str], str]:
    """The label a position is routed as: ``relabel[label]``, ``relabel["*"]`` for any other label when
    given, else the label itself (see ``Engine.generate``)."""
    if not relabel:
        return _identity
    table = dict(relabel)
    every = table.pop("*", None)
    if every is not None:
        return lambda label: table.get(label, every)
    return lambda label: table.get(label, label)


class TokenHealer:
    """Constrains logits to tokens that write a pending text (the indentation a prompt left out)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._texts: list[str] | None = None
        self._allowed: dict[str, torch.Tensor] = {}

    def token_texts(self) -> list[str]:
        """Text of every vocabulary id (decoded once)."""
        if self._texts is None:
            self._texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))],
                                                      clean_up_tokenization_spaces=False)
        return self._texts

    def constrain(self, logits: torch.Tensor, pending: str) -> torch.Tensor:
        """Keep only tokens that write the next part of ``pending`` (or all of it and more)."""
        allowed = self._allowed.get(pending)
        if allowed is None:
            ids = [i for i, t in enumerate(self.token_texts())
                   if t and (t.startswith(pending) or pending.startswith(t))]
            allowed = self._allowed[pending] = torch.tensor(ids, dtype=torch.long)
        if not len(allowed):
            return logits
        masked = torch.full_like(logits, float("-inf"))
        idx = allowed.to(logits.device)
        masked[..., idx] = logits[..., idx]
        return masked


class Decoder:
    """The token loop of one model: ``forward`` runs it, ``route_name`` names the adapter a routed label
    takes (for ``GenerationResult.routes``)."""

    def __init__(self, tokenizer: Any, registry: Registry, forward: Forward, route_name: Callable[[str], str],
                 eos_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.registry = registry
        self.forward = forward
        self.route_name = route_name
        self.eos_ids = eos_ids
        self.healer = TokenHealer(tokenizer)

    # no_grad, not inference_mode: the routing plan cache reads tensor version counters.
    @torch.no_grad()
    def run(self, prompt: Prompt, mode: str, out_label: str | None, max_new_tokens: int, stop: list[str],
            temperature: float, cancel: Cancel, seed: int | None,
            route_as: Callable[[str], str] | None = None, *, kv: KVStore | None = None, kv_key: str = "",
            kv_stamp: Hashable = None, time_budget_ms: float | None = None,
            repetition: RepetitionRule | None = DEFAULT_RULE) -> GenerationResult:
        """Decode up to ``max_new_tokens`` after ``prompt``. New tokens are labelled by the fence parser
        (``mode == "automated"``) or take ``out_label``; every position is routed as ``route_as(label)``.
        Greedy unless ``temperature`` > 0 (then ``seed`` makes sampling repeatable).

        ``kv``: reuse and keep KV caches under ``kv_key``, valid while ``kv_stamp`` (the weights behind
        every route) is unchanged. ``time_budget_ms``: a multi-line completion's time budget. ``repetition``:
        when the output is a loop (None: never stop for repetition)."""
        # Automated mode: the parser starts in the state the prompt leaves it (e.g. inside a fence).
        parser = _parser_after(self.tokenizer, prompt, self.registry) if mode == "automated" else None
        gen = torch.Generator(device="cpu").manual_seed(seed) if seed is not None and temperature > 0 else None
        decoder = IncrementalDecoder(self.tokenizer, prompt.ids)
        routes: list[str] = []
        labels: list[str] = []
        ids_out: list[int] = []
        text = ""
        ends: list[int] = []  # len(text) after each generated token, where a loop's cut falls
        repeats = RepetitionDetector(repetition) if repetition is not None else None
        reason = "max_tokens"
        names: dict[str, str] = {}
        route_as = route_as or _identity

        t0 = time.perf_counter()
        if is_cancelled(cancel):
            return _result("", mode, routes, labels, "cancelled", prompt, 0, {})
        # The positions the cache holds: their ids and the adapter each went through.
        fed_ids = list(prompt.ids)
        fed_routes = [self._name(route_as(lb), names) for lb in prompt.labels]
        reused, past = kv.take(kv_key, fed_ids, fed_routes, kv_stamp) if kv is not None else (0, None)
        logits, past = self.forward(prompt.ids[reused:], [route_as(lb) for lb in prompt.labels[reused:]], past)
        t_prefill = time.perf_counter()
        final_text: str | None = None
        pending = prompt.heal  # indentation the model must write first (token healing)
        single_line = mode == "completion" and prompt.single_line
        budget_s = time_budget_ms / 1e3 if time_budget_ms and mode == "completion" and not single_line else None
        for _ in range(max_new_tokens):
            if is_cancelled(cancel):
                reason = "cancelled"
                break
            if pending:
                logits = self.healer.constrain(logits, pending)
            next_id = _pick(logits, temperature, gen)
            if pending:
                piece_text = self.healer.token_texts()[next_id]
                pending = pending[len(piece_text):] if pending.startswith(piece_text) else ""
            if next_id in self.eos_ids:
                reason = "eos"
                break
            ids_out.append(next_id)
            piece = decoder.push(next_id)
            text += piece
            ends.append(len(text))
            label = parser.feed(piece) if parser is not None else out_label  # type: ignore[assignment]
            labels.append(label)
            routes.append(self._name(route_as(label), names))
            hit = _find_stop(text, piece, stop)
            if hit is not None:
                final_text, reason = hit
                break
            if single_line and "\n" in text:
                final_text, reason = _without_line_rest(text[: text.index("\n")], prompt.suffix), "end_of_line"
                break
            if mode == "completion" and "\n" in piece:
                cut = completion_stop(text, prompt)
                if cut is not None:
                    final_text, reason = cut
                    break
            loop = repeats.push(next_id) if repeats is not None else None
            if loop is not None:
                final_text, reason = loop.keep(text, ends), REPETITION
                break
            # The time budget counts from the first token and ends only a completion with a whole line.
            if budget_s is not None and "\n" in text and time.perf_counter() - t_prefill > budget_s:
                final_text, reason = text[: text.rfind("\n")], "time_budget"
                break
            if len(ids_out) == max_new_tokens:
                break
            logits, past = self.forward([next_id], [route_as(label)], past)
            fed_ids.append(next_id)
            fed_routes.append(routes[-1])
        if final_text is None:
            text += decoder.flush()
            final_text = text
            if mode == "completion" and reason in ("max_tokens", "eos"):
                cut = completion_stop(text, prompt, final=True)
                if cut is not None:
                    final_text, reason = cut
                if single_line:
                    final_text = _without_line_rest(final_text, prompt.suffix)
        t_end = time.perf_counter()
        if kv is not None:
            kv.put(kv_key, fed_ids, fed_routes, past, kv_stamp)
        timings = {"prefill": (t_prefill - t0) * 1e3, "decode": (t_end - t_prefill) * 1e3}
        result = _result(final_text, mode, routes, labels, reason, prompt, len(ids_out), timings)
        result.reused_tokens = reused
        return result

    def _name(self, label: str, names: dict[str, str]) -> str:
        """``route_name(label)``, looked up once per label and generation."""
        name = names.get(label)
        if name is None:
            name = names[label] = self.route_name(label)
        return name


def _result(text: str, mode: str, routes: list[str], labels: list[str], reason: str, prompt: Prompt,
            n_new: int, timings: dict[str, float]) -> GenerationResult:
    return GenerationResult(text=text, mode=mode, language=None, expert=None, routes=routes, labels=labels,
                            stop_reason=reason, prompt_tokens=len(prompt.ids), new_tokens=n_new,
                            timings=timings)


def _without_line_rest(line: str, suffix: str) -> str:
    """A single-line completion minus what the cursor's line already has after the cursor (the model
    often writes a line to its end: ``x)`` before an existing ``)``)."""
    rest = suffix.split("\n", 1)[0].strip()
    body = line.rstrip()
    return body[: len(body) - len(rest)] if rest and body.endswith(rest) else line


def _pick(logits: torch.Tensor, temperature: float, gen: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.cpu() / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


def _identity(label: str) -> str:
    return label


def _parser_after(tokenizer: Any, prompt: Prompt, registry: Registry) -> FenceParser:
    """A fence parser in the state the prompt's text leaves it (where the answer starts)."""
    parser = FenceParser(registry)
    parser.feed(prompt.text if prompt.text is not None else tokenizer.decode(prompt.ids))
    return parser


def _find_stop(text: str, piece: str, stop: Sequence[str]) -> tuple[str, str] | None:
    for s in stop:
        # Only the tail can hold a new match; search from just before the new piece.
        start = max(0, len(text) - len(piece) - len(s))
        i = text.find(s, start)
        if i >= 0:
            return text[:i], "stop"
        # A translation can close its fence on the very first line.
        if s.startswith("\n") and text.startswith(s[1:]) and len(text) >= len(s) - 1:
            return "", "stop"
    return None
