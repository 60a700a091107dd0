"""mole.installPack: a store error (not published, offline, refused) is one line per language in the
result; anything else is a bug and must surface as the request's error, not as "not installed"."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from mole_lsp.packs.errors import StoreError
from mole_lsp.packs.store import PackStore
from mole_lsp.server import protocol
from mole_lsp.server.app import create_server


class _Engine:
    def __init__(self, packs: Any) -> None:
        self.packs = packs


class _BrokenStore(PackStore):
    def __init__(self, cache: Path, error: BaseException) -> None:
        super().__init__("mole-test/none", cache_dir=cache, offline=True)
        self.error = error

    def install(self, languages, progress=None, **kwargs):  # type: ignore[override]
        raise self.error


def _install(store: PackStore, languages: list[str]) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        server = create_server()
        server.protocol.client_capabilities = types.ClientCapabilities()  # as after `initialize`
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(_Engine(store))
        server.host._future = fut
        handler = server.protocol.fm.commands[protocol.CMD_INSTALL_PACK]
        return await handler({"languages": languages})

    return asyncio.run(run())


def test_store_errors_are_reported_per_language(tmp_path: Path) -> None:
    out = _install(_BrokenStore(tmp_path, StoreError("no python expert pack here")), ["python"])
    assert out == {"installed": [], "errors": {"python": "no python expert pack here"}}


def test_a_bug_in_the_store_is_not_turned_into_a_missing_pack(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="a bug"):
        _install(_BrokenStore(tmp_path, TypeError("a bug")), ["python"])
