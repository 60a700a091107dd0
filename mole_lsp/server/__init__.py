"""The mole-lsp language server (pygls 2.x): see :mod:`mole_lsp.server.app` and one module per feature."""

from mole_lsp.server.app import MoleServer, Options, create_server

__all__ = ["MoleServer", "Options", "create_server"]
