"""Servers nobody uses let go: the server exits when the client process named in ``initialize`` dies,
and frees its model after ``idleUnloadMinutes`` without a request, loading it again (with progress) on
the next one (issue 12 #4)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from lsp_fixtures import tiny_world  # noqa: F401
from serve_client import Served, server_env, until

from mole_lsp.server.host import IDLE_UNLOAD_ENV
from mole_lsp.server.settings import validate


def _served(world, tmp_path, **env: str) -> Served:
    return Served(tmp_path, ["--base-model", str(world.base_dir), "--pack-repo", str(world.packs_dir)],
                  server_env(tmp_path, **env))


async def test_server_exits_when_the_client_process_dies(tiny_world, tmp_path):  # noqa: F811
    editor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    srv = _served(tiny_world, tmp_path)
    try:
        await srv.start({"debounceMs": 0}, process_id=editor.pid)
        await srv.ready()
        assert srv.client._server.returncode is None
        editor.kill()
        editor.wait()
        await asyncio.wait_for(srv.client._server.wait(), 15)  # exits by itself, stdin still open
    finally:
        editor.kill()
        editor.wait()
        await srv.stop()


async def test_idle_model_is_freed_and_loaded_again(tiny_world, tmp_path):  # noqa: F811
    srv = _served(tiny_world, tmp_path, **{IDLE_UNLOAD_ENV: "1.5"})
    await srv.start({"debounceMs": 0, "maxNewTokens": 3})
    try:
        assert set((await srv.complete_new())["routes"]) == {"python"}
        loads = sum(s["state"] == "loading" for s in srv.statuses)
        await until(lambda: "unloaded" in (srv.statuses[-1]["message"] or ""), 20, "the idle unload")
        status = await srv.status()
        assert status["state"] == "ready" and "unloaded" in status["message"]
        begun = len(srv.client.progress_reports)
        assert set((await srv.complete_new())["routes"]) == {"python"}  # loaded again, packs and all
        assert sum(s["state"] == "loading" for s in srv.statuses) == loads + 1
        assert len(srv.client.progress_reports) > begun  # the reload shows progress
        assert (await srv.status())["message"] is None
    finally:
        await srv.stop()


def test_idle_unload_setting_range():
    assert validate("idleUnloadMinutes", 0) == (0, None)
    assert validate("idleUnloadMinutes", 45) == (45, None)
    assert validate("idleUnloadMinutes", -1)[1] is not None
