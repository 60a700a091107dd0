"""Notifications leave nothing behind: pygls 2.1.1 kept one Future per notification in
``_request_futures`` (~2 KB per didChange, never freed). The real server object handles the messages as
pygls parses them."""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
from typing import Any

from mole_lsp.server.app import create_server
from mole_lsp.server.base import Options

URI = "file:///tmp/memory-doc.py"


class _Sink:
    def __init__(self) -> None:
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def close(self) -> None:
        pass


def test_ten_thousand_notifications_do_not_grow_memory():
    server = create_server(Options(preload=False, offline=True))
    proto = server.protocol
    sink = _Sink()
    proto.set_writer(sink)

    def send(message: dict[str, Any]) -> None:
        proto.handle_message(proto.structure_message(json.loads(json.dumps(message))))

    def change(version: int) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
            "textDocument": {"uri": URI, "version": version},
            "contentChanges": [{"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 1}},
                                "text": "xy"[version % 2]}]}}

    async def main() -> tuple[int, int, int]:
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"processId": None, "rootUri": None,
                                                                            "capabilities": {}}})
        send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": URI, "languageId": "python", "version": 1, "text": "x = 1\n"}}})
        for v in range(2, 8002):
            send(change(v))
        await asyncio.sleep(0)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for v in range(8002, 10002):  # traced: the last 2,000 of 10,000 (tracing is slow)
            send(change(v))
        await asyncio.sleep(0)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
        return len(proto._request_futures), grown, len(server.workspace.get_text_document(URI).source)

    futures, grown, length = asyncio.run(main())
    assert length == 6  # every change was applied
    assert futures == 0
    assert grown < 100_000, f"2,000 notifications kept {grown} bytes"
