"""Completions at the cursor: ``textDocument/inlineCompletion`` (ghost text, LSP 3.18) and
``textDocument/completion`` (one item, for clients without inline completion).

Both share :func:`complete_at`: debounce, one job per document (a newer request supersedes the older
one and stops its generation), the generation on the model thread with a stop flag that
``$/cancelRequest`` sets too (handlers are ``async``, so pygls cancels their task).
"""

from __future__ import annotations

import asyncio
import re

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from mole_lsp.engine.decode import GenerationResult
from mole_lsp.server.state import MoleServer

_WORD_TAIL = re.compile(r"[\w$]*$")


async def complete_at(ls: MoleServer, uri: str, position: types.Position, kind: str
                      ) -> tuple[GenerationResult | None, str]:
    """Generate text for ``position`` of ``uri``; (None, prefix) when disabled, superseded or cancelled."""
    doc = ls.document(uri)
    if not ls.settings.enabled_for(doc.language_id):
        return None, ""
    lines = doc.lines
    if position.line > len(lines):
        raise JsonRpcInvalidParams(f"position line {position.line} is past the end of {uri} ({len(lines)} lines)")
    offset = doc.offset_at_position(position)
    text = doc.source
    prefix, suffix = text[:offset], text[offset:]
    language = ls.document_language(doc)
    job = ls.jobs.begin(uri, kind)
    try:
        delay = ls.settings.debounceMs / 1000
        if delay > 0:
            await asyncio.sleep(delay)
        if job.token.cancelled:
            ls.send_trace({"job": job.id, "kind": kind, "started": False, "stop_reason": "superseded"})
            return None, prefix
        s = ls.settings
        result = await ls.jobs.generate(job, language, lambda engine, token: engine.complete(
            prefix, suffix, language, max_new_tokens=s.maxNewTokens, context_tokens=s.contextTokens,
            cancel=token), uri=uri, vscode_language_id=doc.language_id or None)
    except asyncio.CancelledError:  # $/cancelRequest: stop the generation between two tokens
        job.token.cancel()
        raise
    finally:
        ls.jobs.end(job)
    if result is None or result.stop_reason == "cancelled":
        return None, prefix
    return result, prefix


def register(server: MoleServer) -> None:
    """Declare the inline completion and completion capabilities and their handlers."""

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: MoleServer, params: types.InlineCompletionParams
                                ) -> types.InlineCompletionList:
        result, _ = await complete_at(ls, params.text_document.uri, params.position, "inline")
        if result is None or not result.text:
            return types.InlineCompletionList(items=[])
        where = types.Range(start=params.position, end=params.position)
        return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=result.text, range=where)])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
    async def completion(ls: MoleServer, params: types.CompletionParams) -> types.CompletionList:
        result, prefix = await complete_at(ls, params.text_document.uri, params.position, "completion")
        if result is None or not result.text.strip():
            return types.CompletionList(is_incomplete=True, items=[])
        # Clients filter items by the word before the cursor: the edit starts at that word so the
        # item survives the filter, and re-inserts it unchanged.
        word = _WORD_TAIL.search(prefix[prefix.rfind("\n") + 1 :]).group(0)  # type: ignore[union-attr]
        start = types.Position(line=params.position.line,
                               character=params.position.character - len(word.encode("utf-16-le")) // 2)
        new_text = word + result.text
        label = new_text.strip().splitlines()[0][:80] if new_text.strip() else new_text
        item = types.CompletionItem(
            label=label,
            kind=types.CompletionItemKind.Text,
            detail=f"mole-lsp ({result.expert or ('base model' if result.base_only else 'shared')})",
            filter_text=new_text,
            text_edit=types.TextEdit(range=types.Range(start=start, end=params.position), new_text=new_text),
            insert_text_format=types.InsertTextFormat.PlainText,
        )
        return types.CompletionList(is_incomplete=True, items=[item])
