"""Masking: comments and string/char literals blanked, so code structure can be searched with plain
regular expressions (braces, definitions, imports). Each language's syntax comes from its plugin's
``PROGRAM.lexicon``; a language without one is read as C."""

from __future__ import annotations

import re

from mole_lsp.lang.plugins import feature
from mole_lsp.lang.plugins.execution import Lexicon

__all__ = ["lexicon", "mask"]

_C = Lexicon()
_NOT_NEWLINE = re.compile(r"[^\n]")
_NESTED_COMMENT_EDGE = re.compile(r"/\*|\*/")
_QUOTE_STOPS = {(q, ml): re.compile("|".join([r"\\", re.escape(q)] + ([] if ml else [r"\n"])))
                for q in ('"', "'", "`", '"""', "'''") for ml in (False, True)}
_CHAR_LIT = re.compile(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]{1,6}\}|u[0-9a-fA-F]{4}|[0-7]{1,3}|.)|[^\\'\n])'")
_REGEX_BEFORE = set("(,=:[!&|?{};+-*%<>~^")  # a / after these starts a regular expression literal


def lexicon(language: str) -> Lexicon:
    """The lexical syntax of ``language`` (its plugin's, else C's)."""
    program = feature(language, "PROGRAM")
    return program.lexicon if program is not None else _C


def mask(text: str, language: str) -> str:
    """``text`` with the contents of comments and string/char literals replaced by spaces (newlines
    and length kept), so code structure can be searched with plain regular expressions."""
    lex = lexicon(language)
    out = list(text)
    n = len(text)

    def blank(a: int, b: int) -> None:
        b = min(b, n)
        if a < b:
            out[a:b] = _NOT_NEWLINE.sub(" ", text[a:b])

    def quoted(i: int, quote: str, multiline: bool = False) -> int:
        """End (exclusive) of a quoted literal starting at i (which holds the quote)."""
        stops = _QUOTE_STOPS[(quote, multiline)]
        j = i + len(quote)
        while True:
            m = stops.search(text, j)
            if m is None:
                return n
            if m.group() == "\\":
                j = m.end() + 1
                continue
            return m.end() if m.group() == quote else m.start()

    i = 0
    while i < n:
        found = lex.starts.search(text, i)  # jump over plain code at C speed
        if found is None:
            break
        i = found.start()
        ch = text[i]
        if text.startswith(lex.line_comment, i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
            continue
        if lex.block_comments and text.startswith("/*", i):
            if lex.nested_comments:
                depth, j = 1, i + 2
                while depth:
                    m = _NESTED_COMMENT_EDGE.search(text, j)
                    if m is None:
                        j = n
                        break
                    depth += 1 if m.group() == "/*" else -1
                    j = m.end()
            else:
                j = text.find("*/", i + 2)
                j = n if j < 0 else j + 2
            blank(i, j)
            i = j
            continue
        raw = lex.raw_string(text, i) if lex.raw_string is not None else None
        if raw is not None:
            start, end, i = raw
            blank(start, end)
            continue
        if lex.triple_quotes and text[i:i + 3] in ('"""', "'''"):
            j = quoted(i, text[i:i + 3], multiline=True)
            blank(i + 3, j - 3)
            i = j
            continue
        if ch == '"' or (ch == "'" and not lex.char_literals):
            j = quoted(i, ch, multiline=ch == '"' and lex.multiline_strings)
            blank(i + 1, j - 1)
            i = j
            continue
        if ch == "'":
            m = _CHAR_LIT.match(text, i)
            if m:
                blank(i + 1, m.end() - 1)
                i = m.end()
                continue
            i += 1  # a Rust lifetime or label
            continue
        if ch == "`" and lex.backtick:
            if lex.backtick == "raw":  # no escapes
                j = text.find("`", i + 1)
                j = n if j < 0 else j + 1
            else:
                j = quoted(i, "`", multiline=True)
            blank(i + 1, j - 1)
            i = j
            continue
        if ch == "/" and lex.regex_literals:
            k = i - 1
            while k >= 0 and text[k] in " \t":
                k -= 1
            before = text[max(0, k - 5):k + 1]
            if k < 0 or text[k] in _REGEX_BEFORE or text[k] == "\n" or before.endswith(("return", "typeof")):
                j, in_class = i + 1, False
                while j < n and text[j] != "\n":
                    if text[j] == "\\":
                        j += 2
                        continue
                    if text[j] == "[":
                        in_class = True
                    elif text[j] == "]":
                        in_class = False
                    elif text[j] == "/" and not in_class:
                        break
                    j += 1
                if j < n and text[j] == "/":
                    blank(i + 1, j)
                    i = j + 1
                    continue
        i += 1
    return "".join(out)
