"""Arguments of the ``mole.*`` commands (protocol.py: ``arguments`` is a list holding ONE object).

Anything else is answered with a JSON-RPC InvalidParams error that says what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from mole_lsp.server.base import ServerBase


def single_argument(arguments: Any, command: str) -> Mapping[str, Any]:
    """The one object a command takes (an empty object when no argument was sent)."""
    if arguments is None or (isinstance(arguments, list | tuple) and len(arguments) == 0):
        return {}
    if not isinstance(arguments, list | tuple) or len(arguments) != 1 or not isinstance(arguments[0], Mapping):
        raise JsonRpcInvalidParams(f"{command}: arguments must be a list holding one object")
    return arguments[0]


def position(value: Any, what: str) -> types.Position:
    """An LSP position given as ``{line, character}`` with non-negative integers."""
    if (not isinstance(value, Mapping) or not all(isinstance(value.get(k), int) and not isinstance(value.get(k), bool)
                                                  and value.get(k) >= 0 for k in ("line", "character"))):
        raise JsonRpcInvalidParams(f"{what} must be {{line, character}} with non-negative integers")
    return types.Position(line=value["line"], character=value["character"])


def range_text(ls: ServerBase, args: Mapping[str, Any], command: str) -> tuple[Any, str]:
    """The document and the text of ``args["range"]`` in it."""
    doc = ls.document(args.get("uri"))
    rng = args.get("range")
    if not isinstance(rng, Mapping):
        raise JsonRpcInvalidParams(f"{command}: range must be {{start, end}}")
    start, end = position(rng.get("start"), "range.start"), position(rng.get("end"), "range.end")
    a, b = doc.offset_at_position(start), doc.offset_at_position(end)
    if b < a:
        raise JsonRpcInvalidParams(f"{command}: range ends before it starts")
    text = doc.source[a:b]
    if not text.strip():
        raise JsonRpcInvalidParams(f"{command}: the range is empty")
    return doc, text


def languages_argument(arguments: Any, command: str) -> list[str]:
    """The ``languages`` list of a pack command: non-empty, of non-blank names."""
    args = single_argument(list(arguments), command)
    langs = args.get("languages")
    if not isinstance(langs, list) or not langs or not all(isinstance(x, str) and x.strip() for x in langs):
        raise JsonRpcInvalidParams(f"{command}: languages must be a non-empty list of language names")
    return langs
