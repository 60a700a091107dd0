"""Commands that generate: ``mole.explain`` and ``mole.translate``; plus ``mole.status``.

Arguments follow :mod:`mole_lsp.server.protocol` (parsed by :mod:`mole_lsp.server.arguments`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from mole_lsp.engine.repetition import NOTE as REPETITION_NOTE
from mole_lsp.engine.repetition import STOP_REASON as REPETITION
from mole_lsp.server import protocol
from mole_lsp.server.arguments import range_text, single_argument
from mole_lsp.server.state import MoleServer


async def _run(ls: MoleServer, key: str, kind: str, language: str | None, call, *, uri: str | None,
               vscode_language_id: str | None) -> Any:
    job = ls.jobs.begin(key, kind)
    try:
        return await ls.jobs.generate(job, language, call, uri=uri, vscode_language_id=vscode_language_id)
    except asyncio.CancelledError:
        job.token.cancel()
        raise
    finally:
        ls.jobs.end(job)


def _stopped(ls: MoleServer, kind: str, result: Any) -> dict[str, Any]:
    """The result's ``stopReason``; an answer cut because the model looped is also said to the user."""
    if result.stop_reason == REPETITION:
        ls.say(f"{kind}: {REPETITION_NOTE}", types.MessageType.Info, once=False)
    return {"stopReason": result.stop_reason}


def register(server: MoleServer) -> None:
    """Declare ``mole.explain``, ``mole.translate`` and ``mole.status``."""

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
        return {"markdown": result.text.strip(), "language": language or "unknown",
                **_stopped(ls, "explain", result)}

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
                "vscodeLanguageId": ls.vscode_language_id(target) or target, **_stopped(ls, "translate", result)}

    @server.command(protocol.CMD_STATUS)
    def status(ls: MoleServer, *arguments: Any) -> dict[str, Any]:
        single_argument(list(arguments), protocol.CMD_STATUS)
        if ls.host.engine is not None:  # offline as the store found the Hub, also before any generation
            ls.jobs.downloads.watch(ls.host.engine.packs)
        return dict(ls.status)
