"""Server-initiated work-done progress (``$/progress``) that any thread may report to.

A reporter is a no-op when the client lacks ``window.workDoneProgress`` or refuses the token. A
cancellable one (downloads) sets :attr:`ProgressReporter.cancel` when the client sends
``window/workDoneProgress/cancel`` for its token.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from lsprotocol import types

log = logging.getLogger(__name__)


class ProgressHost(Protocol):
    """What a reporter needs from the server (pygls' LanguageServer plus ``in_loop``)."""

    @property
    def client_capabilities(self) -> Any: ...

    @property
    def work_done_progress(self) -> Any: ...

    def in_loop(self, fn: Callable[..., Any], *args: Any) -> None: ...


class ProgressReporter:
    """One work-done progress: ``begin`` on the loop, then ``report``/``end`` from any thread."""

    def __init__(self, server: ProgressHost, title: str, token: str, cancellable: bool = False) -> None:
        self.server = server
        self.title = title
        self.token = token
        self.cancellable = cancellable
        self.cancel = threading.Event()  # set when the client cancels this progress
        self.active = False
        self.ended = False  # end() may come before the client answered the create request
        self._last = 0.0

    def _supported(self) -> bool:
        caps = self.server.client_capabilities
        window = getattr(caps, "window", None) if caps is not None else None
        return bool(window and window.work_done_progress)

    async def begin(self, message: str | None = None) -> None:
        if not self._supported():
            return
        try:
            await self.server.work_done_progress.create_async(self.token)
        except Exception as e:  # the client refused: no progress, no error
            log.debug("progress create refused: %s", e)
            return
        if self.ended:
            return
        self.active = True
        progress = self.server.work_done_progress
        progress.begin(self.token, types.WorkDoneProgressBegin(title=self.title, message=message,
                                                               cancellable=self.cancellable))
        future = progress.tokens.get(self.token)  # pygls cancels it on window/workDoneProgress/cancel
        if self.cancellable and future is not None:
            future.add_done_callback(lambda f: f.cancelled() and self.cancel.set())

    def report(self, message: str, fraction: float | None = None) -> None:
        now = time.monotonic()
        if fraction not in (0.0, 1.0, None) and now - self._last < 0.1:
            return  # download callbacks are frequent; a few updates a second are enough
        self._last = now

        def send() -> None:
            if self.active:
                pct = None if fraction is None else max(0, min(100, int(fraction * 100)))
                self.server.work_done_progress.report(
                    self.token, types.WorkDoneProgressReport(message=message, percentage=pct))

        self.server.in_loop(send)

    def end(self, message: str | None = None) -> None:
        def send() -> None:
            self.ended = True
            if self.active:
                self.active = False
                self.server.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))
                self.server.work_done_progress.tokens.pop(self.token, None)  # pygls keeps every token

        self.server.in_loop(send)
