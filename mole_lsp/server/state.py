"""The server object every feature handler receives: the plumbing of :mod:`~mole_lsp.server.base`
plus the engine's host (``host``) and the generation jobs (``jobs``).

Feature modules (``lifecycle``, ``inline``, ``commands``, ``packs``) import this module; only
:mod:`mole_lsp.server.app` imports the features, so imports go one way.
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from mole_lsp.server.base import Options, ServerBase
from mole_lsp.server.host import EngineHost
from mole_lsp.server.jobs import Jobs


class MoleServer(ServerBase):
    """The mole-lsp language server's state: settings, status, the engine and the running jobs."""

    def __init__(self, options: Options | None = None) -> None:
        super().__init__(options)
        self.host = EngineHost(self)
        self.jobs = Jobs(self, self.host)

    def apply_settings(self, payload: Any) -> None:
        """Take settings from the client: report invalid ones, reload or update the engine as needed."""
        changed, problems = self.settings.update(payload)
        for problem in problems:
            self.say(f"invalid setting: {problem}", types.MessageType.Error, once=False)
        if not changed:
            return
        self.host.settings_changed(changed)
        if "offline" in changed:
            self.set_status(offline=self.is_offline())
