"""Completions at the cursor: ``textDocument/inlineCompletion`` (ghost text, LSP 3.18) and
``textDocument/completion`` (one item, for clients without inline completion).

Both share :func:`complete_at`: debounce, one job per document (a newer request supersedes the older
one and stops its generation), the generation on the model thread with a stop flag that
``$/cancelRequest`` sets too (handlers are ``async``, so pygls cancels their task).

Latency tricks (each a setting, see docs/editors.md): the engine keeps the KV cache of each document's
last prompt (``kvCacheMB``) and prefills only what changed; a completion with code after the cursor is
one line, a multi-line one has a time budget (``multiLineTimeMs``); and typing the start of a recent
suggestion answers with its rest at once, without the model (``reuseSuggestions``, :class:`Suggestions`).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from mole_lsp.engine.decode import GenerationResult
from mole_lsp.server.state import MoleServer

_WORD_TAIL = re.compile(r"[\w$]*$")
_AROUND = 2048  # characters on each side of the cursor that identify a suggestion's place
TYPED_AHEAD = "typed_ahead"  # stop_reason (and trace) of an answer taken from a recent suggestion


@dataclass
class _Shown:
    uri: str
    stamp: Hashable  # language and the settings the text depends on
    before: str  # the last _AROUND characters before the cursor
    whole: bool  # ``before`` is the whole text before the cursor
    after: str  # the first _AROUND characters after it
    result: GenerationResult


class Suggestions:
    """Recent completions: when the text before the cursor is a suggestion's place plus the start of the
    suggestion (the user typed through it), the rest of it is the answer."""

    def __init__(self, size: int = 16) -> None:
        self._items: deque[_Shown] = deque(maxlen=size)

    def add(self, uri: str, stamp: Hashable, prefix: str, suffix: str, result: GenerationResult) -> None:
        if result.text:
            self._items.append(_Shown(uri, stamp, prefix[-_AROUND:], len(prefix) <= _AROUND, suffix[:_AROUND],
                                      result))

    def find(self, uri: str, stamp: Hashable, prefix: str, suffix: str) -> tuple[GenerationResult, str] | None:
        """(the suggestion, its part not typed yet) or None."""
        for shown in reversed(self._items):
            text = shown.result.text
            if shown.uri != uri or shown.stamp != stamp or suffix[:_AROUND] != shown.after:
                continue
            for typed in range(len(text) - 1, -1, -1):
                if not prefix.endswith(text[:typed]):
                    continue
                head = prefix[: len(prefix) - typed]
                if head == shown.before if shown.whole else head.endswith(shown.before):
                    return shown.result, text[typed:]
        return None


async def complete_at(ls: MoleServer, uri: str, position: types.Position, kind: str, shown: Suggestions
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
    s = ls.settings

    def stamp() -> Hashable:  # what a suggestion depends on besides the text around the cursor
        return language, s.maxNewTokens, s.contextTokens, s.multiLineTimeMs, id(ls.host.engine)

    job = ls.jobs.begin(uri, kind)
    if s.reuseSuggestions and (hit := shown.find(uri, stamp(), prefix, suffix)) is not None:
        ls.jobs.end(job)  # the older request of this document, if any, is stopped all the same
        old, rest = hit
        ls.send_trace({"job": job.id, "kind": kind, "started": False, "stop_reason": TYPED_AHEAD, "text": rest})
        return GenerationResult(text=rest, mode=old.mode, language=old.language, expert=old.expert, routes=[],
                                labels=[], stop_reason=TYPED_AHEAD, prompt_tokens=0, new_tokens=0,
                                base_only=old.base_only), prefix
    try:
        delay = ls.settings.debounceMs / 1000
        if delay > 0:
            await asyncio.sleep(delay)
        if job.token.cancelled:
            ls.send_trace({"job": job.id, "kind": kind, "started": False, "stop_reason": "superseded"})
            return None, prefix

        def run(engine, token):  # on the model thread
            engine.kv.max_bytes = s.kvCacheMB << 20
            backend = getattr(engine, "backend", None)  # a remote engine (engine/remote.py) has none
            if hasattr(backend, "merge"):  # the llamacpp backend (engine/backends/merged_route.py)
                given = ls.options.llamacpp_merge  # the command line, unless the editor sent the setting
                backend.merge = s.llamacppMerge if given is None or "llamacppMerge" in s.sent else given
            return engine.complete(prefix, suffix, language, max_new_tokens=s.maxNewTokens,
                                   context_tokens=s.contextTokens, cancel=token, cache_key=uri,
                                   multi_line_ms=s.multiLineTimeMs or None)

        result = await ls.jobs.generate(job, language, run, uri=uri, vscode_language_id=doc.language_id or None)
    except asyncio.CancelledError:  # $/cancelRequest: stop the generation between two tokens
        job.token.cancel()
        raise
    finally:
        ls.jobs.end(job)
    if result is None or result.stop_reason == "cancelled":
        return None, prefix
    shown.add(uri, stamp(), prefix, suffix, result)
    return result, prefix


def register(server: MoleServer) -> None:
    """Declare the inline completion and completion capabilities and their handlers."""
    shown = Suggestions()

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: MoleServer, params: types.InlineCompletionParams
                                ) -> types.InlineCompletionList:
        result, _ = await complete_at(ls, params.text_document.uri, params.position, "inline", shown)
        if result is None or not result.text:
            return types.InlineCompletionList(items=[])
        where = types.Range(start=params.position, end=params.position)
        return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=result.text, range=where)])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
    async def completion(ls: MoleServer, params: types.CompletionParams) -> types.CompletionList:
        result, prefix = await complete_at(ls, params.text_document.uri, params.position, "completion", shown)
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
