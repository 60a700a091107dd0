"""The engine's life in a running server: a core pack installed while serving is used by the next request
(mole.installPack, `mole-lsp install-pack` from another process, autoInstallPacks turned on); a reload
that cannot load its model keeps the previous one serving; a load replaced by a newer one never becomes
the engine and never touches the newer load (issue 12 #1, #3, #12)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hub_server import LocalHub
from lsp_fixtures import PACK_REPO, tiny_world  # noqa: F401
from lsprotocol import types
from serve_client import Served, server_env, until

from mole_lsp.engine.engine import Engine
from mole_lsp.server import protocol
from mole_lsp.server.app import create_server
from mole_lsp.server.base import Options

pytestmark = pytest.mark.asyncio


@pytest.fixture
def hub(tiny_world):  # noqa: F811
    with LocalHub() as h:
        h.upload_folder(PACK_REPO, tiny_world.packs_dir)
        yield h


async def _base_only_server(hub: LocalHub, world: Any, cache: Path) -> Served:
    """A server whose cache has no pack and that may not install one by itself."""
    srv = Served(cache, ["--base-model", str(world.base_dir), "--pack-repo", PACK_REPO], server_env(cache, hub.url))
    await srv.start({"debounceMs": 0, "maxNewTokens": 3, "autoInstallPacks": False})
    assert set((await srv.complete_new())["routes"]) == {"base"}
    assert (await srv.status())["baseOnly"] is True
    return srv


async def _until_routed(srv: Served, routes: set[str], timeout: float = 15.0) -> None:
    """Complete until a generation takes ``routes`` (the server looks at the pack folder once a second)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while set((await srv.complete_new()).get("routes", ())) != routes:
        assert asyncio.get_running_loop().time() < deadline, f"never routed to {routes}: {srv.traces[-3:]}"
        await asyncio.sleep(0.3)
    assert (await srv.status())["baseOnly"] is False


async def test_pack_installed_by_command_is_used_without_restart(hub, tiny_world, tmp_path):  # noqa: F811
    srv = await _base_only_server(hub, tiny_world, tmp_path)
    try:
        out = await srv.command(protocol.CMD_INSTALL_PACK, {"languages": ["python"]})
        assert out == {"installed": ["python"], "errors": {}}
        await _until_routed(srv, {"python"})
    finally:
        await srv.stop()


async def test_pack_installed_by_another_process_is_used(hub, tiny_world, tmp_path):  # noqa: F811
    srv = await _base_only_server(hub, tiny_world, tmp_path)
    try:
        cli = subprocess.run(
            [sys.executable, "-m", "mole_lsp", "install-pack", "python", "--base-model", str(tiny_world.base_dir),
             "--pack-repo", PACK_REPO, "--cache-dir", str(tmp_path), "--threads", "1"],
            env=server_env(tmp_path, hub.url), capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr
        await _until_routed(srv, {"python"})
    finally:
        await srv.stop()


async def test_turning_auto_install_on_installs_the_core(hub, tiny_world, tmp_path):  # noqa: F811
    srv = await _base_only_server(hub, tiny_world, tmp_path)
    try:
        srv.configure(autoInstallPacks=True)
        await _until_routed(srv, {"python"}, timeout=5.0)
    finally:
        await srv.stop()


@pytest.mark.parametrize("setting", ["device", "baseModel"])
async def test_a_reload_that_fails_keeps_the_previous_model(tiny_world, tmp_path, setting):  # noqa: F811
    srv = Served(tmp_path, ["--base-model", str(tiny_world.base_dir), "--pack-repo", str(tiny_world.packs_dir)],
                 server_env(tmp_path))
    await srv.start({"debounceMs": 0, "maxNewTokens": 3})
    try:
        assert set((await srv.complete_new())["routes"]) == {"python"}
        bad = {"device": "cuda:7", "baseModel": str(tmp_path / "no-such-model")}[setting]
        srv.configure(**{setting: bad})
        await until(lambda: srv.messages("keeping the previous model"), 60, "the reload's error")
        status = await srv.status()
        assert status["state"] == "ready" and "keeping the previous model" in status["message"]
        assert {"device": "cuda:7", "baseModel": "no-such-model"}[setting] in status["message"]  # says why
        assert set((await srv.complete_new())["routes"]) == {"python"}
        # the failed value is not in force: an unrelated change does not try it again
        n = len(srv.messages("keeping the previous model"))
        srv.configure(maxNewTokens=2)
        assert set((await srv.complete_new())["routes"]) == {"python"}
        assert len(srv.messages("keeping the previous model")) == n
        assert not [s for s in srv.statuses if s["state"] == "error"]
    finally:
        await srv.stop()


# -- the reload race, on the server object itself --------------------------------------------------------
def _server(base_model: Path, packs: Path, cache: Path) -> Any:
    server = create_server(Options(base_model=str(base_model), pack_repo=str(packs), cache_dir=str(cache),
                                   offline=True, threads=1))
    server.protocol.client_capabilities = types.ClientCapabilities()  # as after `initialize`
    return server


@contextlib.asynccontextmanager
async def _model_thread_held(server: Any) -> AsyncIterator[None]:
    """Hold the model thread: a load started inside waits there, its settings already read."""
    gate = threading.Event()
    server.model_pool.submit(gate.wait)
    try:
        yield
        for _ in range(20):  # let the loads started inside reach the model thread
            await asyncio.sleep(0)
    finally:
        gate.set()


def _engines() -> list[Engine]:
    gc.collect()
    return [o for o in gc.get_objects() if type(o) is Engine]


async def test_a_replaced_load_never_becomes_the_engine(tiny_world, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("MOLE_BASE_MODEL", raising=False)
    before = len(_engines())
    server = _server(tiny_world.base_dir, tiny_world.packs_dir, tmp_path)
    host = server.host
    (tmp_path / "other-packs").mkdir()
    async with _model_thread_held(server):
        first = host.start_loading()
        for _ in range(20):
            await asyncio.sleep(0)
        server.apply_settings({"packRepo": str(tmp_path / "other-packs")})  # a reload while the first load runs
        second = host._future
    assert second is not None and second is not first
    await asyncio.wait([first])
    assert host.engine is None  # the stale load did not install itself
    assert host._future is second
    engine = await host.get_engine()
    assert host.engine is engine and engine.packs.root == tmp_path / "other-packs"
    assert len(_engines()) == before + 1  # the stale model was freed


async def test_a_failed_stale_load_leaves_the_new_load_alone(tiny_world, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("MOLE_BASE_MODEL", raising=False)
    server = _server(tmp_path / "no-such-model", tiny_world.packs_dir, tmp_path)
    host = server.host
    async with _model_thread_held(server):
        first = host.start_loading()
        for _ in range(20):
            await asyncio.sleep(0)
        server.apply_settings({"baseModel": str(tiny_world.base_dir)})
        second = host._future
    await asyncio.wait([first])
    assert host._future is second and host.load_error is None
    engine = await host.get_engine()
    assert host.engine is engine and engine.mole is not None


async def test_a_request_waiting_on_a_replaced_load_gets_the_new_engine(tiny_world, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("MOLE_BASE_MODEL", raising=False)
    server = _server(tiny_world.base_dir, tiny_world.packs_dir, tmp_path)
    host = server.host
    (tmp_path / "other-packs").mkdir()
    async with _model_thread_held(server):
        waiting = asyncio.ensure_future(host.get_engine())
        for _ in range(20):
            await asyncio.sleep(0)
        server.apply_settings({"packRepo": str(tmp_path / "other-packs")})
    engine = await waiting
    assert engine is host.engine and engine.packs.root == tmp_path / "other-packs"
