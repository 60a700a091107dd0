"""Builds the mole-lsp language server: :class:`~mole_lsp.server.state.MoleServer` with every feature
registered.

Each editor feature is one module that declares its capability and handlers in ``register(server)``:
``lifecycle`` (initialize, settings, shutdown), ``inline`` (inline completion and completion),
``commands`` (explain, translate, status) and ``packs`` (install, remove, list packs).
"""

from __future__ import annotations

from mole_lsp.server import commands, inline, lifecycle, packs
from mole_lsp.server.base import Options
from mole_lsp.server.state import MoleServer

FEATURES = (lifecycle, inline, commands, packs)


def create_server(options: Options | None = None) -> MoleServer:
    """The server with every feature registered."""
    server = MoleServer(options)
    for feature in FEATURES:
        feature.register(server)
    return server
