"""Generation jobs: one per document at a time (a newer request supersedes the older one and stops its
generation), found by JSON-RPC id for ``$/cancelRequest``, and run on the model thread.

A generation never downloads: it runs with the packs already installed (falling back as the engine
does), and what it lacked is installed in the background (:mod:`~mole_lsp.server.downloads`) when
``autoInstallPacks`` is on; the next request uses it.

The status follows each generation (protocol.py: ``mole/status``); with tracing on, every request
ends with a ``mole/trace`` record, also when it never started a generation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lsprotocol import types

from mole_lsp.engine.decode import CancelToken, GenerationResult
from mole_lsp.engine.engine import Engine
from mole_lsp.errors import one_line
from mole_lsp.server.base import ServerBase
from mole_lsp.server.downloads import Downloads
from mole_lsp.server.host import EngineHost


@dataclass
class Job:
    """One generation request: its stop flag, and whether a newer request replaced it."""

    key: str
    kind: str
    token: CancelToken = field(default_factory=CancelToken)
    id: int = 0
    superseded: bool = False
    request: Any = None  # JSON-RPC id of the request that asked for it


class _Skipped(Exception):
    """The job was superseded while it waited for the model thread."""


class Jobs:
    """The running jobs, by document key and by request id, and the generations they run."""

    def __init__(self, server: ServerBase, host: EngineHost) -> None:
        self.server = server
        self.host = host
        self.by_key: dict[str, Job] = {}  # document key -> its running request
        self.by_request: dict[Any, Job] = {}  # JSON-RPC request id -> job ($/cancelRequest)
        self._ids = itertools.count(1)
        self.generations = 0  # generations actually started (bench, tests)
        self.downloads = Downloads(server)

    def begin(self, key: str, kind: str) -> Job:
        """A new request for ``key`` (a document) supersedes the previous one: its generation stops."""
        old = self.by_key.get(key)
        if old is not None:
            old.superseded = True
            old.token.cancel()
        job = Job(key, kind, id=next(self._ids), request=self.server.protocol.msg_id)
        self.by_key[key] = job
        if job.request is not None:
            self.by_request[job.request] = job
        return job

    def end(self, job: Job) -> None:
        """Forget a finished job (unless a newer one already took its place)."""
        if self.by_key.get(job.key) is job:
            del self.by_key[job.key]
        if job.request is not None and self.by_request.get(job.request) is job:
            del self.by_request[job.request]

    def cancel_request(self, msg_id: Any) -> None:
        """Stop the job of request ``msg_id``, if any (``$/cancelRequest``)."""
        job = self.by_request.get(msg_id)
        if job is not None:
            job.token.cancel()

    def cancel_all(self) -> None:
        """Stop every running job (shutdown)."""
        for job in list(self.by_key.values()):
            job.token.cancel()

    async def generate(self, job: Job, language: str | None, call: Callable[[Engine, CancelToken], GenerationResult],
                       *, uri: str | None = None, vscode_language_id: str | None = None) -> GenerationResult | None:
        """Run one generation on the model thread; None when cancelled before it started.

        ``language`` is the registry id the generation is for; ``uri`` the document it came from when
        that is the document's language (None for a translation), ``vscode_language_id`` the VS Code
        languageId of ``language``. The status takes all of them together once the generation ends
        (protocol.py: ``activeUri``, ``vscodeLanguageId``, ``activeLanguage``, ``activeExpert``).
        """
        server = self.server
        engine = await self.host.get_engine()
        if job.token.cancelled:
            server.send_trace({"job": job.id, "kind": job.kind, "started": False, "stop_reason": "superseded"})
            return None
        self.downloads.watch(engine.packs)

        def work() -> GenerationResult:
            if job.token.cancelled:  # superseded while queued behind another generation
                raise _Skipped
            self.generations += 1
            # Only the state: the active* fields keep describing the last finished generation until this
            # one knows which expert it used.
            server.set_status(state="generating")
            engine.auto_install = False  # downloads run on the pack thread (downloads.py), never here
            try:
                return call(engine, job.token)
            finally:
                engine.auto_install = server.settings.autoInstallPacks

        try:
            result = await server.run_model(work)
        except _Skipped:
            server.send_trace({"job": job.id, "kind": job.kind, "started": False, "stop_reason": "superseded"})
            return None
        except Exception as e:
            server.set_status(state="ready", message=one_line(e))
            raise
        auto = server.settings.autoInstallPacks and not server.is_offline()
        if auto and (result.base_only or (language in server.registry and result.expert != language)):
            self.downloads.want(engine, language if language in server.registry else None)
        for note in result.notes:
            if auto and ("is not installed" in note or "is being downloaded" in note):
                continue  # being installed in the background: its progress says so
            server.say(note, types.MessageType.Warning)
        server.set_status(state="ready", activeExpert=result.expert, activeLanguage=language, activeUri=uri,
                          vscodeLanguageId=vscode_language_id, baseOnly=result.base_only, message=None)
        self.downloads.sync_offline(engine.packs)
        record = {"job": job.id, "kind": job.kind, "started": True, "superseded": job.superseded, **result.to_dict()}
        server.send_trace(record)
        return result
