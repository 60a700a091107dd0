"""Lifecycle: initialize (settings from initializationOptions; the client's process is watched),
initialized (background model load, idle unload), workspace/didChangeConfiguration, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from lsprotocol import types

from mole_lsp.server.state import MoleServer

log = logging.getLogger(__name__)

PARENT_POLL_S = 1.0  # how often the client's process (initialize's processId) is checked


def register(server: MoleServer) -> None:
    """Declare the lifecycle handlers (initialize, initialized, configuration, shutdown)."""

    @server.feature(types.INITIALIZE)
    def initialize(ls: MoleServer, params: types.InitializeParams) -> None:
        ls.loop = asyncio.get_running_loop()
        if params.initialization_options is not None:
            ls.apply_settings(params.initialization_options)
        if params.process_id is not None and params.process_id != os.getpid() and sys.platform != "win32":
            # The LSP spec: exit when the client's process dies (its pipes may outlive it, e.g. when an
            # editor host is killed and a grandchild still holds them). pygls 2.1.1 records the id only.
            asyncio.ensure_future(_watch_client(ls, params.process_id))

    @server.feature(types.INITIALIZED)
    def initialized(ls: MoleServer, params: types.InitializedParams) -> None:
        ls.loop = asyncio.get_running_loop()
        ls.set_status(state="starting", offline=ls.is_offline())
        ls.host.watch_idle()
        if ls.options.preload:
            # In the background: initialize must not wait for a model, and a failure is reported
            # through showMessage/status, not as an unhandled task error.
            ls.host.start_loading().add_done_callback(lambda f: f.cancelled() or f.exception())

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: MoleServer, params: types.DidChangeConfigurationParams) -> None:
        ls.apply_settings(params.settings)

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: MoleServer, params: None) -> None:
        ls.jobs.cancel_all()
        ls.model_pool.shutdown(wait=False, cancel_futures=True)
        ls.io_pool.shutdown(wait=False, cancel_futures=True)


def _alive(pid: int, parent: int | None) -> bool:
    if parent is not None and os.getppid() != parent:  # our parent was the client: we were re-parented
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


async def _watch_client(ls: MoleServer, pid: int) -> None:
    parent = pid if pid == os.getppid() else None  # a dead parent may linger as a zombie
    while _alive(pid, parent):
        await asyncio.sleep(PARENT_POLL_S)
    log.warning("the client process %d is gone: exiting", pid)
    ls.jobs.cancel_all()
    ls.model_pool.shutdown(wait=False, cancel_futures=True)
    ls.io_pool.shutdown(wait=False, cancel_futures=True)
    os._exit(0)  # nobody reads our output any more; a generation on the model thread must not hold us
