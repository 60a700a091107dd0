"""Patches to pygls' JSON-RPC protocol: malformed params get an answer, and ``$/cancelRequest`` reaches
command jobs.

pygls types params while parsing a message; when that fails it only logs, and the client would wait
forever for an answer. Commands run as a nested handler that pygls' cancel does not reach.
"""

from __future__ import annotations

from typing import Any

from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.protocol import LanguageServerProtocol


class MoleProtocol(LanguageServerProtocol):
    """Answers requests whose params do not fit the LSP types with InvalidParams, and stops the job of
    a cancelled request directly."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if not (isinstance(data, dict) and "id" in data and "method" in data):
                raise
            why = leaf_error(exc)
            err = JsonRpcInvalidParams(f"invalid params for {data['method']}: {why}")
            self._send_response(data["id"], error=err.to_response_error())
            return _ANSWERED

    def _handle_cancel_notification(self, msg_id: Any) -> None:
        # The server's job board (mole_lsp.server.jobs.Jobs) knows which generation serves the request.
        jobs = getattr(self._server, "jobs", None)
        if jobs is not None:
            jobs.cancel_request(msg_id)
        super()._handle_cancel_notification(msg_id)


class _Answered:
    jsonrpc = "answered"  # handle_message ignores messages of another JSON-RPC version


_ANSWERED = _Answered()


def leaf_error(exc: BaseException) -> str:
    """The innermost message of a (cattrs) validation error chain."""
    cur: BaseException | None = exc
    while cur is not None:
        subs = getattr(cur, "exceptions", None)
        if subs:
            cur = subs[0]
            continue
        if cur.__cause__ is not None:
            cur = cur.__cause__
            continue
        break
    text = str(cur) if cur is not None else ""
    if isinstance(cur, KeyError):
        return f"missing field {text}"
    return text.splitlines()[0] if text else "malformed"
