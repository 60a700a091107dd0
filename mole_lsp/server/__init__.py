"""The mole-lsp language server (pygls 2.x).

:mod:`~mole_lsp.server.app` builds it (``create_server``); :mod:`~mole_lsp.server.state` is the server
object, made of :mod:`~mole_lsp.server.base` (loop, status, messages, documents),
:mod:`~mole_lsp.server.host` (the engine) and :mod:`~mole_lsp.server.jobs` (generations);
:mod:`~mole_lsp.server.rpc` and :mod:`~mole_lsp.server.progress` adapt pygls. One module per editor
feature: ``lifecycle``, ``inline``, ``commands``, ``packs``. :mod:`~mole_lsp.server.protocol` documents
everything beyond standard LSP; :mod:`~mole_lsp.server.settings` validates the settings.
"""
