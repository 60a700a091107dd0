"""Lifecycle: initialize (settings from initializationOptions), initialized (background model load),
workspace/didChangeConfiguration, shutdown."""

from __future__ import annotations

import asyncio

from lsprotocol import types

from mole_lsp.server.state import MoleServer


def register(server: MoleServer) -> None:
    """Declare the lifecycle handlers (initialize, initialized, configuration, shutdown)."""

    @server.feature(types.INITIALIZE)
    def initialize(ls: MoleServer, params: types.InitializeParams) -> None:
        ls.loop = asyncio.get_running_loop()
        if params.initialization_options is not None:
            ls.apply_settings(params.initialization_options)

    @server.feature(types.INITIALIZED)
    def initialized(ls: MoleServer, params: types.InitializedParams) -> None:
        ls.loop = asyncio.get_running_loop()
        ls.set_status(state="starting", offline=ls.is_offline())
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
