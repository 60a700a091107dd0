"""Commands that generate: ``mole.explain`` and ``mole.translate``; plus ``mole.status``.

Arguments follow :mod:`mole_lsp.server.protocol`: ``arguments`` is a list holding one object. Anything else
is answered with a JSON-RPC InvalidParams error that says what is wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from mole_lsp.server import protocol
from mole_lsp.server.app import MoleServer


def single_argument(arguments: Any, command: str) -> Mapping[str, Any]:
    """The one object a command takes (an empty object when no argument was sent)."""
    if arguments is None or (isinstance(arguments, list | tuple) and len(arguments) == 0):
        return {}
    if not isinstance(arguments, list | tuple) or len(arguments) != 1 or not isinstance(arguments[0], Mapping):
        raise JsonRpcInvalidParams(f"{command}: arguments must be a list holding one object")
    return arguments[0]


def _position(value: Any, what: str) -> types.Position:
    if (not isinstance(value, Mapping) or not all(isinstance(value.get(k), int) and not isinstance(value.get(k), bool)
                                                  and value.get(k) >= 0 for k in ("line", "character"))):
        raise JsonRpcInvalidParams(f"{what} must be {{line, character}} with non-negative integers")
    return types.Position(line=value["line"], character=value["character"])


def range_text(ls: MoleServer, args: Mapping[str, Any], command: str) -> tuple[Any, str]:
    """The document and the text of ``args["range"]`` in it."""
    doc = ls.document(args.get("uri"))
    rng = args.get("range")
    if not isinstance(rng, Mapping):
        raise JsonRpcInvalidParams(f"{command}: range must be {{start, end}}")
    start, end = _position(rng.get("start"), "range.start"), _position(rng.get("end"), "range.end")
    a, b = doc.offset_at_position(start), doc.offset_at_position(end)
    if b < a:
        raise JsonRpcInvalidParams(f"{command}: range ends before it starts")
    text = doc.source[a:b]
    if not text.strip():
        raise JsonRpcInvalidParams(f"{command}: the range is empty")
    return doc, text


async def _run(ls: MoleServer, key: str, kind: str, language: str | None, call, *, uri: str | None,
               vscode_language_id: str | None) -> Any:
    job = ls.begin_job(key, kind)
    try:
        return await ls.generate(job, language, call, uri=uri, vscode_language_id=vscode_language_id)
    except asyncio.CancelledError:
        job.token.cancel()
        raise
    finally:
        ls.end_job(job)


def register(server: MoleServer) -> None:
    @server.command(protocol.CMD_EXPLAIN)
    async def explain(ls: MoleServer, *arguments: Any) -> dict[str, Any]:
        args = single_argument(list(arguments), protocol.CMD_EXPLAIN)
        doc, code = range_text(ls, args, protocol.CMD_EXPLAIN)
        language = ls.document_language(doc)
        limit = ls.settings.explainMaxNewTokens
        result = await _run(ls, f"explain:{doc.uri}", "explain", language,
                            lambda engine, token: engine.explain(code, language, max_new_tokens=limit,
                                                                          cancel=token),
                            uri=args["uri"], vscode_language_id=doc.language_id or None)
        if result is None:
            raise asyncio.CancelledError
        return {"markdown": result.text.strip(), "language": language or "unknown"}

    @server.command(protocol.CMD_TRANSLATE)
    async def translate(ls: MoleServer, *arguments: Any) -> dict[str, Any]:
        args = single_argument(list(arguments), protocol.CMD_TRANSLATE)
        target_raw = args.get("target")
        if not isinstance(target_raw, str) or not target_raw.strip():
            raise JsonRpcInvalidParams(f"{protocol.CMD_TRANSLATE}: target must be a language name")
        target = ls.registry.resolve(target_raw)
        if target is None:
            raise JsonRpcInvalidParams(f"{protocol.CMD_TRANSLATE}: unknown target language {target_raw!r}")
        doc, code = range_text(ls, args, protocol.CMD_TRANSLATE)
        source = ls.document_language(doc)
        limit = ls.settings.explainMaxNewTokens
        # The status after a translation names the target's expert: no document is in that language yet.
        result = await _run(ls, f"translate:{doc.uri}", "translate", target,
                            lambda engine, token: engine.translate(code, source, target, max_new_tokens=limit,
                                                                            cancel=token),
                            uri=None, vscode_language_id=ls.vscode_language_id(target) or target)
        if result is None:
            raise asyncio.CancelledError
        return {"code": result.text, "language": target,
                "vscodeLanguageId": ls.vscode_language_id(target) or target}

    @server.command(protocol.CMD_STATUS)
    def status(ls: MoleServer, *arguments: Any) -> dict[str, Any]:
        single_argument(list(arguments), protocol.CMD_STATUS)
        return dict(ls.status)
