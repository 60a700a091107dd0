"""Incremental markdown code-fence state machine (DESIGN §3).

One parser labels training tokens (through tokenizer offsets, see ``label_offsets``) and switches
adapters while generating (``FenceParser.feed`` per decoded token), so both always agree.

Label of a position = parser state after reading the text up to and including that position:

* ``NL`` for prose; the opening fence line, including its newline, is read in this state and the
  state becomes the block's language when that newline is read;
* a registry language id (or ``UNKNOWN`` for untagged fences and unknown tags) for the code body
  and the closing fence line; the state is ``NL`` again once the closing line's newline is read.

The state only changes when a newline is read, and whether it changes depends only on the
completed line, which makes the labels independent of how the text is split into chunks.
Fences follow CommonMark with LLM-friendly relaxations: ``` or ~~~, three or more characters,
any indentation, closing fence of the same character at least as long as the opening one with
nothing but whitespace after it, backtick info strings must not contain backticks, CRLF allowed.
An unterminated fence is code until the end of the text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mole_lsp.lang.registry import Registry, load_registry

__all__ = ["NL", "UNKNOWN", "FenceParser", "label_chars", "label_offsets"]

NL = "nl"
UNKNOWN = "unknown"

# Phases of the scan of the current line.
_START = 0  # only indentation so far
_RUN = 1  # inside the run of fence characters
_INFO = 2  # after the run: info string (opening) or trailing blanks (closing)
_DEAD = 3  # this line cannot change the state; skip to its newline

_INFO_CAP = 256  # characters of an info string kept; the tag is its first word
_INDENT_RE = re.compile(r"[ \t]*")
_RUN_RE = {"`": re.compile(r"`*"), "~": re.compile(r"~*")}


class FenceParser:
    """Streaming fence parser; ``feed`` any chunks, ``label`` is the state after them.

    ``state`` other than NL starts in *document mode*: the whole text is code of that language
    (editor completion inside a source file), so fence-like lines never switch it back to prose.
    """

    __slots__ = (
        "_registry",
        "_label",
        "_fence_char",
        "_fence_len",
        "_info",
        "_phase",
        "_run_char",
        "_run_len",
        "_parts",
        "_parts_len",
    )

    def __init__(self, registry: Registry | None = None, state: str = NL) -> None:
        self._registry = registry if registry is not None else load_registry()
        if state not in (NL, UNKNOWN):
            self._registry.get(state)  # raises with the list of known ids
        self._label = state
        self._fence_char: str | None = None  # set while inside a fenced block
        self._fence_len = 0
        self._info: str | None = None
        self._run_char = ""
        self._run_len = 0
        self._parts: list[str] = []
        self._parts_len = 0
        self._phase = _START if state == NL else _DEAD

    # -- public API ------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """Current state: ``NL``, a language id, or ``UNKNOWN``."""
        return self._label

    @property
    def in_code(self) -> bool:
        return self._label != NL

    @property
    def info(self) -> str | None:
        """Info string of the open fence (``"python title=x"``), None outside fences."""
        return self._info

    @property
    def fence(self) -> tuple[str, int] | None:
        """(character, length) of the open fence, None outside fences and in document mode."""
        return None if self._fence_char is None else (self._fence_char, self._fence_len)

    @property
    def registry(self) -> Registry:
        return self._registry

    def feed(self, text: str) -> str:
        """Consume ``text`` and return the label after it."""
        if self._fence_char is None and self._label != NL:
            return self._label  # document mode: nothing can change the state
        pos = 0
        end = len(text)
        while pos < end:
            nl = text.find("\n", pos)
            stop = end if nl < 0 else nl
            if self._phase != _DEAD and pos < stop:
                self._scan(text, pos, stop)
            if nl < 0:
                break
            self._end_line()
            pos = nl + 1
        return self._label

    def copy(self) -> FenceParser:
        new = FenceParser.__new__(FenceParser)
        for name in FenceParser.__slots__:
            setattr(new, name, getattr(self, name))
        new._parts = list(self._parts)
        return new

    __copy__ = copy

    def __repr__(self) -> str:
        return f"FenceParser(label={self._label!r}, fence={self.fence!r})"

    # -- line scanning ---------------------------------------------------------------------
    def _scan(self, text: str, i: int, end: int) -> None:
        """Advance the current line's scan over ``text[i:end]`` (which holds no newline)."""
        phase = self._phase
        closing = self._fence_char is not None
        while i < end:
            if phase == _START:
                i = _INDENT_RE.match(text, i, end).end()  # type: ignore[union-attr]
                if i == end:
                    break
                c = text[i]
                if c not in _RUN_RE or (closing and c != self._fence_char):
                    phase = _DEAD
                    break
                self._run_char = c
                self._run_len = 0
                phase = _RUN
            elif phase == _RUN:
                j = _RUN_RE[self._run_char].match(text, i, end).end()  # type: ignore[union-attr]
                self._run_len += j - i
                i = j
                if i == end:
                    break
                if self._run_len < (self._fence_len if closing else 3):
                    phase = _DEAD
                    break
                phase = _INFO
            else:  # _INFO
                if closing:
                    # A closing fence may only be followed by blanks (and the CR of CRLF).
                    if text[i:end].strip(" \t\r"):
                        phase = _DEAD
                elif self._run_char == "`" and text.find("`", i, end) >= 0:
                    phase = _DEAD  # CommonMark: inline code like ```a```, not a fence
                elif self._parts_len < _INFO_CAP:
                    piece = text[i : min(end, i + _INFO_CAP - self._parts_len)]
                    self._parts.append(piece)
                    self._parts_len += len(piece)
                break
        self._phase = phase

    def _end_line(self) -> None:
        """A newline was read: apply the completed line, then reset the line scan."""
        if self._phase in (_RUN, _INFO):
            if self._fence_char is None:
                if self._run_len >= 3:
                    info = "".join(self._parts).strip()
                    self._fence_char = self._run_char
                    self._fence_len = self._run_len
                    self._info = info
                    self._label = self._registry.by_fence_tag(info) or UNKNOWN
            elif self._run_len >= self._fence_len:
                self._fence_char = None
                self._fence_len = 0
                self._info = None
                self._label = NL
        self._phase = _START
        self._run_len = 0
        if self._parts:
            self._parts = []
            self._parts_len = 0


def label_chars(text: str, registry: Registry | None = None, state: str = NL) -> list[str]:
    """Label after each character of ``text``."""
    parser = FenceParser(registry, state)
    out: list[str] = []
    pos = 0
    while True:
        nl = text.find("\n", pos)
        stop = len(text) if nl < 0 else nl
        # Within a line the state is constant; only the newline can change it.
        out.extend([parser.feed(text[pos:stop])] * (stop - pos))
        if nl < 0:
            return out
        out.append(parser.feed("\n"))
        pos = nl + 1


def label_offsets(
    text: str,
    offsets: Sequence[tuple[int, int]],
    registry: Registry | None = None,
    state: str = NL,
) -> list[str]:
    """One label per token: the state after ``text[:e]``, ``e`` = running max of end offsets.

    The running max gives tokens without text (special tokens, (0, 0)) and byte-level pieces
    sharing one character the state reached so far, exactly what a streaming decoder sees.
    """
    parser = FenceParser(registry, state)
    n = len(text)
    done = 0
    out: list[str] = []
    for span in offsets:
        e = int(span[1])
        if e > done:
            if e > n:
                raise ValueError(f"token offset {e} is past the end of the text ({n} characters)")
            parser.feed(text[done:e])
            done = e
        out.append(parser.label)
    return out
