"""A raw JSON-RPC client for ``python -m mole_lsp serve`` over stdio: sends exactly the bytes a test gives
(malformed frames included) and collects every message the server writes, so tests see what a real
client would see, without pytest-lsp's typing in the way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def frame(body: bytes | str | dict[str, Any]) -> bytes:
    """One well-formed LSP frame."""
    if isinstance(body, dict):
        body = json.dumps(body)
    data = body.encode() if isinstance(body, str) else body
    return b"Content-Length: %d\r\n\r\n" % len(data) + data


class Wire:
    """One server subprocess and the messages it sent (read on a thread)."""

    def __init__(self, cache: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        run_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MOLE_"))}
        run_env.update(OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1", HF_HOME=str(cache / "hf-home"),
                       PYTHONUNBUFFERED="1", **(env or {}))
        cmd = [sys.executable, "-m", "mole_lsp", "serve", "--cache-dir", str(cache), "--threads", "1", *extra]
        self.stderr_path = cache / "server-stderr.txt"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     env=run_env)
        self.messages: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._ids = 0
        threading.Thread(target=self._read, daemon=True).start()

    # -- sending -------------------------------------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(frame(message))

    def next_id(self) -> int:
        self._ids += 1
        return 10_000 + self._ids

    def request(self, method: str, params: Any = None, timeout: float = 30.0) -> dict[str, Any]:
        """Send a request and wait for its response (the whole response message)."""
        msg_id = self.next_id()
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return self.response(msg_id, timeout)

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def initialize(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = self.request("initialize", {"processId": None, "rootUri": None, "capabilities": {},
                                            "initializationOptions": options})
        self.notify("initialized", {})
        return reply

    def status(self, timeout: float = 30.0) -> dict[str, Any]:
        """A request every live server answers at once: ``mole.status``."""
        return self.request("workspace/executeCommand", {"command": "mole.status", "arguments": [{}]}, timeout)

    # -- receiving -----------------------------------------------------------------------------------------
    def response(self, msg_id: Any, timeout: float = 30.0) -> dict[str, Any]:
        found = self.wait(lambda m: "method" not in m and m.get("id") == msg_id, timeout, f"response {msg_id}")
        return found

    def wait(self, pred, timeout: float = 30.0, what: str = "message", start: int = 0) -> dict[str, Any]:
        """The first message from index ``start`` on that satisfies ``pred``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages[start:]:
                    if pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._alive_reader):
                    raise AssertionError(f"no {what} within {timeout} s (server exit code {self.proc.poll()}); "
                                         f"stderr tail: {self.stderr_tail()}")
                self._cond.wait(min(left, 0.2))

    def shown(self) -> list[str]:
        """Texts of the ``window/showMessage`` notifications so far."""
        with self._cond:
            return [m["params"]["message"] for m in self.messages if m.get("method") == "window/showMessage"]

    def stderr_tail(self, n: int = 2000) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-n:]

    _alive_reader = True

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        try:
            while True:
                length = None
                while True:
                    line = out.readline()
                    if not line:
                        return
                    if line in (b"\r\n", b"\n"):
                        break
                    name, _, value = line.decode().partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                assert length is not None, "server wrote a frame without Content-Length"
                message = json.loads(out.read(length))
                with self._cond:
                    self.messages.append(message)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._alive_reader = False
                self._cond.notify_all()

    def close(self) -> int | None:
        """Shut down politely, then make sure the process is gone; its exit code."""
        try:
            if self.proc.poll() is None:
                self.request("shutdown", None, timeout=10)
                self.notify("exit")
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(10)
        except Exception:
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._stderr.close()
        return self.proc.returncode
