"""Prompt building: what the model reads for a completion, an explanation or a translation.

Every builder returns a :class:`Prompt`: the token ids, the text they decode to (labelled by the one
fence parser, so routing of the prompt matches training), and what the generation loop needs to stop
well (stop strings, the suffix a completion must not repeat).

Completion prompts are cut to a token budget with the real tokenizer. The text nearest the cursor
matters most, so the prefix is filled first (from the cursor backwards) and the suffix gets what is
left, at most a quarter of the budget. The prefix starts at a line on a fixed grid of lines (see
:func:`cut_prefix`), so that while the user types the prompt keeps its start and the KV cache of the
previous request is reused up to the edit (:mod:`~mole_lsp.engine.kvcache`). With a FIM layout the
suffix comes after the prefix: reuse still covers the prefix up to the cursor.

Chat layouts are built here only: :func:`chat_text` renders what the model reads before its answer,
:func:`chat_sample` a whole training sample (question + answer) in the same layout, so training and
serving cannot drift apart.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mole_lsp.lang.detok import token_labels
from mole_lsp.lang.fence import NL
from mole_lsp.lang.registry import Registry, load_registry

# A rough upper bound of characters per token, used only to avoid tokenizing megabytes of a file
# before the exact cut: the exact cut is always made on tokens.
_CHARS_PER_TOKEN_BOUND = 12
_SUFFIX_SHARE = 4  # the suffix gets at most budget // 4 tokens
_GRID_TOKENS = 64  # a prefix starts on a line number divisible by budget // 64 (see cut_prefix)


class FimLike(Protocol):
    """The fill-in-the-middle token strings of a base model (BaseModelInfo.fim)."""

    prefix: str
    suffix: str
    middle: str


@dataclass
class Prompt:
    ids: list[int]
    labels: list[str]  # fence label per prompt token (completion prompts: the document language)
    kind: str  # "fim", "prefix", "explain", "translate", "raw"
    stop: list[str] = field(default_factory=list)  # generation ends before any of these strings
    suffix: str = ""  # completion: text after the cursor (never echoed)
    indent: str = ""  # completion: indentation of the cursor's line (end-of-block rule)
    line_prefix: str = ""  # completion: text of the cursor's line before the cursor (minus ``heal``)
    heal: str = ""  # completion: trailing indentation left out of the prompt, see completion_prompt
    prefilled: str = ""  # assistant text already in the prompt (e.g. the opening fence of a translation)
    text: str | None = None  # the prompt as text, when it was built from text (fence state at its end)
    single_line: bool = False  # completion: code follows the cursor on its line, complete that line only


# -- completion ---------------------------------------------------------------------------------------
def _encode(tokenizer: Any, text: str) -> list[int]:
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _special_id(tokenizer: Any, token: str) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or tid == getattr(tokenizer, "unk_token_id", None):
        raise ValueError(f"the tokenizer has no token {token!r}")
    return int(tid)


def cut_prefix(tokenizer: Any, prefix: str, budget: int) -> list[int]:
    """Ids of at most ``budget`` tokens of the text before the cursor, from a stable line start.

    The text starts at the earliest line that fits the budget among the lines whose number (counted
    from the document start) is a multiple of ``budget // 64``; failing that at the earliest line start
    that fits; failing that (a line longer than the budget) it is the last ``budget`` tokens. Typing at
    the cursor leaves that start where it is until the budget is exceeded, and then moves it a whole
    grid step forward, so consecutive prompts share their tokens up to the edit (KV reuse) instead of
    sliding by one token per keystroke.
    """
    if budget <= 0:
        return []
    lo = max(0, len(prefix) - budget * _CHARS_PER_TOKEN_BOUND)
    window = prefix[lo:]
    try:
        enc = tokenizer(window, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    except (NotImplementedError, KeyError, TypeError, ValueError):  # no offsets (slow tokenizer)
        return _encode(tokenizer, window)[-budget:]
    if lo == 0 and len(ids) <= budget:
        return ids
    starts = [o[0] for o in offsets]
    first_line = prefix.count("\n", 0, lo) + (0 if lo == 0 or prefix[lo - 1] == "\n" else 1)
    lines = [0] if lo == 0 or prefix[lo - 1] == "\n" else []  # line starts in the window
    pos = window.find("\n")
    while pos >= 0:
        lines.append(pos + 1)
        pos = window.find("\n", pos + 1)
    step = max(1, budget // _GRID_TOKENS)
    grid = [p for i, p in enumerate(lines) if (first_line + i) % step == 0]
    for candidates in (grid, lines):
        for p in candidates:
            # Tokens from p on, estimated from the window's tokens (a token may straddle p): check exactly.
            if len(ids) - bisect.bisect_left(starts, p) > budget:
                continue
            exact = _encode(tokenizer, window[p:])
            if len(exact) <= budget:
                return exact
    return ids[-budget:]


def cut_suffix(tokenizer: Any, suffix: str, budget: int) -> list[int]:
    """Ids of the first ``budget`` tokens of ``suffix``."""
    if budget <= 0:
        return []
    ids = _encode(tokenizer, suffix[: budget * _CHARS_PER_TOKEN_BOUND])
    return ids[:budget]


def _line_info(prefix: str) -> tuple[str, str]:
    line = prefix[prefix.rfind("\n") + 1 :]
    indent = line[: len(line) - len(line.lstrip(" \t"))]
    return line, indent


def _bos_ids(tokenizer: Any) -> list[int]:
    """BOS only where the tokenizer itself adds one: some chat models name a chat token as BOS
    (SmolLM2: <|im_start|>), which would make a source file look like the start of a chat."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [bos] if probe and probe[0] == bos else []


def completion_prompt(
    tokenizer: Any,
    prefix: str,
    suffix: str,
    language: str,
    budget: int = 1024,
    fim: FimLike | None = None,
    bos: bool = True,
) -> Prompt:
    """Prompt for the text at the cursor: FIM when the base has FIM tokens, the prefix alone otherwise.

    Every prompt position is code of ``language`` (no fences inside a source file).
    """
    line, indent = _line_info(prefix)
    # A cursor on an auto-indented empty line: BPE vocabularies merge indentation with the next word
    # (" return"), so a prompt ending in bare spaces pushes the model to odd tokens. Leave that
    # indentation out, let the model write it, and strip it again (see heal_completion).
    heal = line if line and not line.strip(" \t") else ""
    if heal:
        prefix, line = prefix[: len(prefix) - len(heal)], ""
    bos_ids = _bos_ids(tokenizer) if bos else []
    room = max(1, budget - len(bos_ids))
    if fim is not None:
        specials = [_special_id(tokenizer, t) for t in (fim.prefix, fim.suffix, fim.middle)]
        room = max(1, room - len(specials))
        suf_ids = cut_suffix(tokenizer, suffix, room // _SUFFIX_SHARE)
        pre_ids = cut_prefix(tokenizer, prefix, room - len(suf_ids))
        ids = bos_ids + [specials[0]] + pre_ids + [specials[1]] + suf_ids + [specials[2]]
        kind = "fim"
    else:
        ids = bos_ids + cut_prefix(tokenizer, prefix, room)
        kind = "prefix"
    if not ids:  # an empty document without BOS: give the model something to start from
        ids = _encode(tokenizer, "\n")
    return Prompt(ids=ids, labels=[language] * len(ids), kind=kind, suffix=suffix, indent=indent,
                  line_prefix=line, heal=heal, single_line=bool(suffix.split("\n", 1)[0].strip()))


@dataclass
class CompletionSample:
    """A training sample of the completion objective: what the engine would send, plus the answer."""

    ids: list[int]
    labels: list[str]
    answer_start: int  # first token the loss covers
    kind: str  # "completion" (raw prefix) or "fim"


def completion_sample(tokenizer: Any, code: str, language: str, budget: int, fim: FimLike | None = None,
                      hole: tuple[int, int] | None = None, bos: bool = True) -> CompletionSample:
    """A window of a real source file rendered for training by :func:`completion_prompt` itself.

    Without ``hole``: the prompt of a cursor at the window's end (the raw prefix, BOS as the engine sends
    it), every position code of ``language``; the loss covers every code token. With ``hole=(a, b)`` and
    FIM tokens: the engine's FIM prompt for a cursor at ``a`` with ``code[b:]`` after it, followed by the
    middle ``code[a:b]`` and EOS (the model learns to stop); the loss covers the middle and EOS.
    The cut to ``budget`` is the engine's own (a prefix keeps its last tokens, from a line start).
    """
    if hole is None or fim is None:
        prompt = completion_prompt(tokenizer, code, "", language, budget, None, bos)
        lead = len(_bos_ids(tokenizer)) if bos else 0
        return CompletionSample(prompt.ids, prompt.labels, lead, "completion")
    a, b = hole
    middle = _encode(tokenizer, code[a:b])
    eos = getattr(tokenizer, "eos_token_id", None)
    tail = middle + ([int(eos)] if eos is not None else [])
    prompt = completion_prompt(tokenizer, code[:a], code[b:], language, max(1, budget - len(tail)), fim, bos)
    # completion_prompt leaves an indentation-only line out of the prompt (``heal``): the middle then
    # starts with that indentation, as the model is asked to write it at serving time.
    if prompt.heal:
        tail = _encode(tokenizer, prompt.heal + code[a:b]) + tail[len(middle):]
    ids = prompt.ids + tail
    return CompletionSample(ids, [language] * len(ids), len(prompt.ids), "fim")


def heal_completion(text: str, prompt: Prompt) -> str:
    """Drop the indentation the prompt left out (``Prompt.heal``) from the start of a completion."""
    if not prompt.heal:
        return text
    k = 0
    while k < min(len(text), len(prompt.heal)) and text[k] == prompt.heal[k]:
        k += 1
    return text[k:]


# -- completion stop rules ----------------------------------------------------------------------------
_CLOSERS = ("}", ")", "]", "end", "fi", "done", "esac")


def _indent_of(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


def _first_code_line(text: str) -> str | None:
    for ln in text.splitlines():
        if ln.strip():
            return ln.strip()
    return None


def completion_stop(generated: str, prompt: Prompt, final: bool = False) -> tuple[str, str] | None:
    """Where a completion should end: ``(text to keep, reason)`` or None to keep going.

    Rules, checked on complete lines only (a partial line may still grow), except with ``final``:
    - ``blank_line``: an empty line after some code ends the completion (one statement/paragraph);
    - ``suffix``: a line equal to the first non-blank line after the cursor would echo the suffix;
    - ``end_of_block``: a line indented less than the block the cursor is in leaves that block; a
      closing bracket/keyword on it is kept (it closes the completed block), anything else is cut.
    """
    lines = generated.split("\n")
    complete = lines if final else lines[:-1]
    suffix_line = _first_code_line(prompt.suffix)
    # The cursor's line counts as the first line: its indentation is the block's (also when the line
    # holds only that indentation, as when an editor auto-indents a new line).
    cursor_line = prompt.line_prefix + prompt.heal
    base = _indent_of(cursor_line) if cursor_line else None
    kept: list[str] = []
    seen_code = bool(prompt.line_prefix.strip())
    for i, ln in enumerate(complete):
        stripped = ln.strip()
        if i > 0 and not stripped:
            if seen_code:
                return "\n".join(kept), "blank_line"
            kept.append(ln)
            continue
        if i > 0 and suffix_line is not None and stripped == suffix_line:
            return "\n".join(kept), "suffix"
        if stripped:
            width = _indent_of(ln) if i > 0 else _indent_of(prompt.line_prefix + ln)
            if base is None:
                base = width
            elif i > 0 and width < base:
                if stripped.startswith(_CLOSERS) and (suffix_line is None or not suffix_line.startswith(stripped)):
                    kept.append(ln)
                return "\n".join(kept), "end_of_block"
            seen_code = True
        kept.append(ln)
    return None


# -- chat prompts ---------------------------------------------------------------------------------------
CHAT_LAYOUTS = ("auto", "chat", "plain")
# The layout for bases without a chat template ("plain").
PLAIN_LAYOUT = "### Instruction\n{user}\n\n### Response\n"


def _has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_layout(tokenizer: Any, layout: str = "auto") -> str:
    """The layout a chat is rendered in: ``"chat"`` (the tokenizer's template) or ``"plain"``.

    ``"auto"`` takes the template when the tokenizer has one; ``"chat"`` without a template is an error.
    """
    if layout not in CHAT_LAYOUTS:
        raise ValueError(f"chat layout must be one of {', '.join(CHAT_LAYOUTS)}; got {layout!r}")
    has_template = _has_chat_template(tokenizer)
    if layout == "auto":
        return "chat" if has_template else "plain"
    if layout == "chat" and not has_template:
        raise ValueError("prompt_format='chat' but the tokenizer has no chat template")
    return layout


def _messages(user: str, system: str | None, answer: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    msgs.append({"role": "user", "content": user})
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    return msgs


def chat_text(tokenizer: Any, user: str, assistant_prefix: str = "", *, layout: str = "auto",
              system: str | None = None) -> str:
    """Text of a one-turn chat up to the assistant's answer (plus ``assistant_prefix``).

    The model's chat template, or :data:`PLAIN_LAYOUT` without one (``layout`` as in :func:`chat_layout`);
    ``system`` is an optional system message (template layouts only).
    """
    if chat_layout(tokenizer, layout) == "chat":
        text = tokenizer.apply_chat_template(_messages(user, system), tokenize=False, add_generation_prompt=True)
    else:
        text = PLAIN_LAYOUT.format(user=user)
    return text + assistant_prefix


def chat_sample(tokenizer: Any, user: str, answer: str, *, layout: str = "auto",
                system: str | None = None) -> tuple[str, int]:
    """A training sample in the layout :func:`chat_text` sends: (text, offset where the answer part starts).

    The text before the offset is exactly ``chat_text(tokenizer, user, ...)``; the answer part is the
    answer and what the layout adds after it (the template's end-of-turn tokens, or EOS in the plain
    layout). Templates that rewrite the history fall back to the answer's last position.
    """
    prompt = chat_text(tokenizer, user, layout=layout, system=system)
    if chat_layout(tokenizer, layout) == "plain":
        return prompt + answer + (getattr(tokenizer, "eos_token", None) or ""), len(prompt)
    full = tokenizer.apply_chat_template(_messages(user, system, answer), tokenize=False)
    if full.startswith(prompt):
        return full, len(prompt)
    at = full.rfind(answer)
    if at < 0:
        raise ValueError("chat template does not reproduce the answer text")
    return full, at


def _fence_for(code: str) -> str:
    """A backtick fence longer than any run inside the code, so the code cannot close it."""
    longest, run = 0, 0
    for ch in code:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def _fenced(code: str, tag: str) -> str:
    fence = _fence_for(code)
    body = code if code.endswith("\n") else code + "\n"
    # The newline after the closing fence matters: the parser only closes a fence on a complete line,
    # and a chat template may put an end-of-turn token right after the message.
    return f"{fence}{tag}\n{body}{fence}\n"


def _chat_prompt(tokenizer: Any, text: str, registry: Registry | None, kind: str, stop: Sequence[str],
                 prefilled: str = "") -> Prompt:
    # The chat template may already start with BOS; labelling the whole text gives the training labels.
    ids, labels = token_labels(tokenizer, text, registry)
    return Prompt(ids=ids, labels=labels, kind=kind, stop=list(stop), prefilled=prefilled, text=text)


def _end_strings(tokenizer: Any) -> list[str]:
    out = []
    for tok in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        if tok in tokenizer.get_vocab():
            out.append(tok)
    return out


def explain_prompt(tokenizer: Any, code: str, language: str, registry: Registry | None = None) -> Prompt:
    """Ask for a short explanation of ``code``; the code sits in a fence tagged with its language."""
    reg = registry or load_registry()
    name = reg.get(language).name if language in reg else "this"
    user = f"Explain what this {name} code does, briefly.\n\n{_fenced(code, language if language in reg else '')}"
    return _chat_prompt(tokenizer, chat_text(tokenizer, user), reg, "explain", _end_strings(tokenizer))


def translate_prompt(tokenizer: Any, code: str, source: str, target: str,
                     registry: Registry | None = None) -> Prompt:
    """Ask for ``code`` rewritten in ``target``; the answer starts inside an opened ``target`` fence."""
    reg = registry or load_registry()
    src_name = reg.get(source).name if source in reg else "this"
    dst_name = reg.get(target).name
    user = (f"Translate this {src_name} code to {dst_name}. Answer with the code only.\n\n"
            f"{_fenced(code, source if source in reg else '')}")
    opening = f"```{target}\n"
    text = chat_text(tokenizer, user, opening)
    # The answer ends with the closing fence (or the end-of-turn token).
    return _chat_prompt(tokenizer, text, reg, "translate", ["\n```", *_end_strings(tokenizer)], prefilled=opening)


def raw_prompt(tokenizer: Any, text: str, registry: Registry | None = None, state: str = NL) -> Prompt:
    """A prompt given as text (evaluation, tests): labelled by the fence parser from ``state``."""
    ids, labels = token_labels(tokenizer, text, registry or load_registry(), state=state)
    return Prompt(ids=ids, labels=labels, kind="raw", text=text)
