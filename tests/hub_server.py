"""A small local stand-in for the Hugging Face Hub, for offline tests.

`LocalHub` serves model repositories kept as plain folders ``ROOT/<owner>/<name>/...`` over HTTP,
speaking the subset of the Hub protocol that ``huggingface_hub`` 2.x uses for downloads and simple
uploads:

* ``HEAD``/``GET /{owner}/{name}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``,
  ``Content-Length`` and ``Range`` (206), errors flagged by ``X-Error-Code``
  (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``);
* ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` (id, sha, siblings);
* ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=...``; ``GET /api/models/{repo}/refs``;
* ``POST /api/repos/create``, ``POST /api/models/{repo}/preupload/{rev}`` and
  ``POST /api/models/{repo}/commit/{rev}`` (NDJSON, base64 contents, file/folder deletions), so that
  ``create_repo`` + ``upload_folder``/``create_commit`` work;
* 404 for anything else (a fresh ``HF_HOME`` also asks ``/api/agent-harnesses``; a 404 is fine).

Revisions: ``main`` is whatever the repo folder holds now. Every state the hub sees (on a request, or
through `LocalHub.commit`) gets a deterministic 40-hex commit sha and its files are kept in a
content-addressed blob store, so a revision pinned to an older sha keeps resolving after the folder
changed. Tags can be added with `LocalHub.set_ref`. If a test edits a file in place, do it through
`LocalHub.commit` (or call `LocalHub.refresh`): change detection of the folder uses file stats.

Fault injection: `LocalHub.cut_download` closes the connection after some bytes of a file body,
`LocalHub.fail` answers a status code instead of the file, `LocalHub.hold` stops a body half-way until
an event is set, `LocalHub.slow_download` delays it; `LocalHub.request_log` records every
request (method, path, query, Range header, status) so tests can check what was fetched.

Pointing huggingface_hub at the server
--------------------------------------
``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` ... once,
at import time, into ``huggingface_hub.constants``; the top-level helpers (``huggingface_hub.create_repo``
and friends) are bound to a module-level ``HfApi`` whose endpoint is fixed when it is built. Setting the
environment inside a running test is therefore not enough. `point_huggingface_hub_at` does all three:
it sets the environment (inherited by subprocesses, e.g. an LSP server started by a test, which import
``huggingface_hub`` afresh and so pick it up normally), patches the import-time constants, and re-points
``huggingface_hub.hf_api.api``. Project code should additionally pass ``endpoint=`` explicitly to
``snapshot_download``/``hf_hub_download``/``HfApi`` (``mole_lsp.paths.hub_endpoint()`` reads
``HF_ENDPOINT`` at call time), which keeps it correct even where the constants were not patched.

The `local_hub` pytest fixture (function scope) starts a hub on 127.0.0.1 with a free port, points
huggingface_hub at it with a fresh ``HF_HOME`` and yields the `LocalHub`. To use it, list
``"hub_server"`` in ``pytest_plugins`` of ``tests/conftest.py``, or re-export it in a test module with
``import hub_server`` and ``local_hub = hub_server.local_hub`` (ruff flags a plain ``from ... import``
of a fixture as redefined by the test arguments).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_CHUNK = 1 << 16

# (oid, size) of one file in a snapshot
Entry = tuple[str, int]
Snapshot = dict[str, Entry]


@dataclass
class LoggedRequest:
    """One request as the hub saw it."""

    method: str
    path: str  # URL path, percent-decoded
    query: dict[str, list[str]]
    range: str | None
    status: int = 0
    cut: bool = False  # the body was cut short by `LocalHub.cut_download`


@dataclass
class _Fault:
    pattern: str  # fnmatch pattern on "<owner>/<name>/<path in repo>" or on "<path in repo>"
    remaining: int | None  # None = forever
    cut_after: int | None = None
    status: int | None = None
    methods: tuple[str, ...] = ("GET",)
    only_ranged: bool = False
    gate: threading.Event | None = None  # `LocalHub.hold`: the body waits half-way until it is set
    delay: float = 0.0  # `LocalHub.slow_download`: seconds before the body

    def matches(self, repo_id: str, path: str, method: str, ranged: bool) -> bool:
        if method not in self.methods or (self.only_ranged and not ranged):
            return False
        if self.remaining is not None and self.remaining <= 0:
            return False
        return fnmatch.fnmatchcase(path, self.pattern) or fnmatch.fnmatchcase(
            f"{repo_id}/{path}", self.pattern
        )


class HubError(Exception):
    """An error answered to the client: status code, ``X-Error-Code`` and message."""

    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.commit = commit


def git_blob_oid(data: bytes) -> str:
    """The git blob sha1 of ``data``: what the Hub reports as a regular file's oid/ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LocalHub:
    """A local Hub serving ``root/<owner>/<name>`` folders; see the module docstring."""

    def __init__(
        self, root: str | os.PathLike[str] | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="localhub-root-") if root is None else root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._host, self._port = host, port
        self._store = Path(tempfile.mkdtemp(prefix="localhub-blobs-"))
        self._lock = threading.RLock()
        self._stat_cache: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        self._history: dict[str, dict[str, Snapshot]] = {}
        self._refs: dict[str, dict[str, str]] = {}
        self._faults: list[_Fault] = []
        self.request_log: list[LoggedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> LocalHub:
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer((self._host, self._port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.clear_faults()  # release held downloads
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        shutil.rmtree(self._store, ignore_errors=True)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalHub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ----------------------------------------------------------------- repo content
    def repo_dir(self, repo_id: str) -> Path:
        owner, name = _split_repo_id(repo_id)
        return self.root / owner / name

    def create_repo(self, repo_id: str, exist_ok: bool = True) -> str:
        """Create an empty repo; return its ``main`` sha."""
        folder = self.repo_dir(repo_id)
        with self._lock:
            if folder.is_dir() and not exist_ok:
                raise FileExistsError(repo_id)
            folder.mkdir(parents=True, exist_ok=True)
            return self.head(repo_id)

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes | str | os.PathLike[str]] | None = None,
        delete: Iterable[str] = (),
    ) -> str:
        """Write ``files`` (path in repo -> bytes, text, or a local file to copy) into ``main``, delete the
        paths in ``delete`` (a trailing ``/`` or an existing folder deletes the folder); return the new sha."""
        folder = self.repo_dir(repo_id)
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            for rel in delete:
                target = folder / _safe_relpath(rel.rstrip("/"))
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
                else:
                    raise FileNotFoundError(rel)
            for rel, content in (files or {}).items():
                target = folder / _safe_relpath(rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    target.write_bytes(content)
                elif isinstance(content, str):
                    target.write_text(content, encoding="utf-8")
                else:
                    shutil.copyfile(content, target)
                self._stat_cache.pop(str(target), None)
            return self.head(repo_id)

    def upload_folder(self, repo_id: str, source: str | os.PathLike[str], path_in_repo: str = "") -> str:
        """Copy every file below ``source`` into the repo (under ``path_in_repo``); return the new sha."""
        source = Path(source)
        files: dict[str, Path] = {}
        for path in sorted(source.rglob("*")):
            if path.is_file():
                rel = path.relative_to(source).as_posix()
                files[f"{path_in_repo.strip('/')}/{rel}".lstrip("/")] = path
        return self.commit(repo_id, files)

    def head(self, repo_id: str) -> str:
        """The commit sha of the repo's current ``main`` (recording that state in the history)."""
        with self._lock:
            return self._scan(repo_id)[0]

    def refresh(self) -> None:
        """Forget cached file stats, so in-place edits of repo folders are noticed on the next request."""
        with self._lock:
            self._stat_cache.clear()

    def set_ref(self, repo_id: str, name: str, sha: str | None = None) -> str:
        """Make ``name`` (a tag or branch name other than main) point at ``sha`` (default: current main)."""
        with self._lock:
            sha = sha or self.head(repo_id)
            if sha not in self._history.get(repo_id, {}):
                raise KeyError(f"unknown commit {sha} in {repo_id}")
            self._refs.setdefault(repo_id, {})[name] = sha
            return sha

    def file_bytes(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        sha, snap = self._resolve(repo_id, revision)
        if path not in snap:
            raise HubError(404, "EntryNotFound", f"{path} not in {repo_id}@{sha}", sha)
        return self._blob(snap[path][0]).read_bytes()

    # ----------------------------------------------------------------- faults and log
    def cut_download(self, pattern: str, after_bytes: int, times: int | None = 1) -> None:
        """Close the connection after ``after_bytes`` of the body of files matching ``pattern`` (fnmatch on
        the path in the repo, or on ``owner/name/path``), for the next ``times`` GETs (None: always)."""
        self._faults.append(_Fault(pattern, times, cut_after=after_bytes))

    def fail(
        self,
        pattern: str,
        status: int = 500,
        times: int | None = 1,
        methods: Iterable[str] = ("GET",),
        only_ranged: bool = False,
    ) -> None:
        """Answer ``status`` instead of the file for matching requests (``only_ranged``: only requests that
        carry a Range header, i.e. resumed downloads)."""
        self._faults.append(
            _Fault(pattern, times, status=status, methods=tuple(methods), only_ranged=only_ranged)
        )

    def hold(self, pattern: str, times: int | None = None) -> threading.Event:
        """Stop the body of matching GETs half-way until the returned event is set (a download in progress
        for as long as a test needs); `stop` sets it."""
        gate = threading.Event()
        self._faults.append(_Fault(pattern, times, gate=gate))
        return gate

    def slow_download(self, pattern: str, seconds: float, times: int | None = None) -> None:
        """Wait ``seconds`` before sending the body of matching GETs."""
        self._faults.append(_Fault(pattern, times, delay=seconds))

    def clear_faults(self) -> None:
        for fault in self._faults:
            if fault.gate is not None:
                fault.gate.set()
        self._faults.clear()

    def clear_log(self) -> None:
        self.request_log.clear()

    def file_requests(self, method: str = "GET", repo_id: str | None = None) -> list[str]:
        """Paths in the repo fetched through ``/resolve/`` with ``method`` (in request order)."""
        out = []
        for req in list(self.request_log):
            parsed = _parse_resolve(req.path)
            if req.method == method and parsed and (repo_id is None or parsed[0] == repo_id):
                out.append(parsed[2])
        return out

    # ----------------------------------------------------------------- internals
    def _blob(self, oid: str) -> Path:
        return self._store / oid[:2] / oid

    def _store_file(self, path: Path) -> Entry:
        data = path.read_bytes()
        oid = git_blob_oid(data)
        blob = self._blob(oid)
        if not blob.exists():
            blob.parent.mkdir(exist_ok=True)
            tmp = blob.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(blob)
        return oid, len(data)

    def _scan(self, repo_id: str) -> tuple[str, Snapshot]:
        """Snapshot of the folder as it is now, recorded in the history under its sha."""
        folder = self.repo_dir(repo_id)
        if not folder.is_dir():
            raise HubError(404, "RepoNotFound", f"Repository {repo_id} not found")
        snap: Snapshot = {}
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            for name in sorted(filenames):
                path = Path(dirpath) / name
                st = path.stat()
                key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                cached = self._stat_cache.get(str(path))
                if cached is not None and cached[0] == key and self._blob(cached[1]).exists():
                    entry = (cached[1], st.st_size)
                else:
                    entry = self._store_file(path)
                    self._stat_cache[str(path)] = (key, entry[0])
                snap[path.relative_to(folder).as_posix()] = entry
        listing = "".join(f"{p}\0{oid}\n" for p, (oid, _) in sorted(snap.items()))
        sha = hashlib.sha1(f"localhub {repo_id}\n{listing}".encode()).hexdigest()
        self._history.setdefault(repo_id, {})[sha] = snap
        return sha, snap

    def _resolve(self, repo_id: str, revision: str) -> tuple[str, Snapshot]:
        with self._lock:
            head_sha, head_snap = self._scan(repo_id)  # raises RepoNotFound
            if revision in ("main", "refs/heads/main"):
                return head_sha, head_snap
            history = self._history.get(repo_id, {})
            sha = self._refs.get(repo_id, {}).get(revision, revision)
            if _SHA_RE.match(sha) and sha in history:
                return sha, history[sha]
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")


def _split_repo_id(repo_id: str) -> tuple[str, str]:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(_NAME_RE.match(p) for p in parts):
        raise HubError(400, None, f"Invalid repo id {repo_id!r}: expected '<owner>/<name>'")
    return parts[0], parts[1]


def _safe_relpath(rel: str) -> str:
    parts = rel.replace("\\", "/").split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise HubError(400, None, f"Invalid path in repo: {rel!r}")
    return "/".join(parts)


def _parse_resolve(path: str) -> tuple[str, str, str] | None:
    """``/{owner}/{name}/resolve/{rev}/{file}`` -> (repo_id, rev, file)."""
    parts = path.lstrip("/").split("/")
    if len(parts) >= 5 and parts[2] == "resolve" and parts[0] != "api":
        return f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
    return None


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass

    # --- dispatch
    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        # split on the raw path first: a revision like "refs%2Fpr%2F1" is one quoted segment
        raw_parts = split.path.lstrip("/").split("/")
        parts = [unquote(p) for p in raw_parts]
        self._entry = LoggedRequest(
            method, unquote(split.path), parse_qs(split.query), self.headers.get("Range")
        )
        self.hub.request_log.append(self._entry)
        body = self._read_body()
        try:
            self._route(method, parts, self._entry.query, body)
        except HubError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _route(self, method: str, parts: list[str], query: dict[str, list[str]], body: bytes) -> None:
        if method in ("GET", "HEAD") and len(parts) >= 5 and parts[0] != "api" and parts[2] == "resolve":
            return self._resolve_file(method, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        if len(parts) >= 3 and parts[:2] == ["api", "models"]:
            if len(parts) < 4:
                raise HubError(404, None, "Not Found")
            repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
            if method == "GET" and not rest:
                return self._model_info(repo_id, "main")
            if method == "GET" and len(rest) == 2 and rest[0] == "revision":
                return self._model_info(repo_id, rest[1])
            if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                return self._tree(repo_id, rest[1], "/".join(rest[2:]), query)
            if method == "GET" and rest == ["refs"]:
                return self._list_refs(repo_id)
            if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                return self._preupload(repo_id, rest[1], body)
            if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                return self._commit(repo_id, rest[1], body, query)
        if method == "POST" and parts == ["api", "repos", "create"]:
            return self._create_repo(body)
        raise HubError(404, None, "Not Found")

    # --- endpoints
    def _resolve_file(self, method: str, repo_id: str, revision: str, path: str) -> None:
        _split_repo_id(repo_id)
        sha, snap = self.hub._resolve(repo_id, revision)
        if path not in snap:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {revision}", sha)
        oid, size = snap[path]
        range_header = self.headers.get("Range")
        fault = self._take_fault(repo_id, path, method, range_header is not None)
        if fault is not None and fault.status is not None:
            raise HubError(fault.status, None, f"injected failure for {path}", sha)
        start, end = 0, size - 1
        status = HTTPStatus.OK
        if range_header:
            parsed = _parse_range(range_header, size)
            if parsed is None:
                self._entry.status = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = parsed
            status = HTTPStatus.PARTIAL_CONTENT
        length = max(0, end - start + 1)
        self._entry.status = int(status)
        self.send_response(status)
        self.send_header("X-Repo-Commit", sha)
        self.send_header("ETag", f'"{oid}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if method == "HEAD" or length == 0:
            return
        budget = fault.cut_after if fault is not None and fault.cut_after is not None else None
        gate = fault.gate if fault is not None else None
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        with self.hub._blob(oid).open("rb") as fh:
            fh.seek(start)
            left = length
            while left > 0:
                if gate is not None and left <= length // 2:
                    self.wfile.flush()
                    gate.wait(60)
                    gate = None
                step = min(_CHUNK, left) if gate is None else min(_CHUNK, left - length // 2)
                chunk = fh.read(step if budget is None else min(step, budget))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)
                if budget is not None:
                    budget -= len(chunk)
                    if budget <= 0:
                        self._entry.cut = True
                        self._cut_connection()
                        return

    def _cut_connection(self) -> None:
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _take_fault(self, repo_id: str, path: str, method: str, ranged: bool) -> _Fault | None:
        with self.hub._lock:
            for fault in self.hub._faults:
                if fault.matches(repo_id, path, method, ranged):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    def _model_info(self, repo_id: str, revision: str) -> None:
        _split_repo_id(repo_id)
        sha, snap = self.hub._resolve(repo_id, revision)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        self._send_json(
            200,
            {
                "_id": sha[:24],
                "id": repo_id,
                "modelId": repo_id,
                "sha": sha,
                "private": False,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "createdAt": now,
                "lastModified": now,
                "siblings": [
                    {"rfilename": p, "size": s, "blobId": oid} for p, (oid, s) in sorted(snap.items())
                ],
            },
        )

    def _tree(self, repo_id: str, revision: str, prefix: str, query: dict[str, list[str]]) -> None:
        _split_repo_id(repo_id)
        sha, snap = self.hub._resolve(repo_id, revision)
        prefix = prefix.strip("/")
        recursive = _truthy(query.get("recursive"))
        files: dict[str, Entry] = {}
        folders: set[str] = set()
        for path, entry in snap.items():
            if prefix and not path.startswith(prefix + "/"):
                continue
            rel = path[len(prefix) + 1 :] if prefix else path
            pieces = rel.split("/")
            base = f"{prefix}/" if prefix else ""
            for depth in range(1, len(pieces)):
                if depth > 1 and not recursive:
                    break
                folders.add(base + "/".join(pieces[:depth]))
            if recursive or len(pieces) == 1:
                files[path] = entry
        if prefix and not files and not folders:
            raise HubError(404, "EntryNotFound", f"{prefix} does not exist on {revision}", sha)
        listing: list[dict[str, Any]] = []
        for folder in sorted(folders):
            tree_oid = hashlib.sha1(f"tree {sha} {folder}".encode()).hexdigest()
            listing.append({"type": "directory", "oid": tree_oid, "size": 0, "path": folder})
        for path, (oid, size) in sorted(files.items()):
            listing.append({"type": "file", "oid": oid, "size": size, "path": path})
        self._send_json(200, listing)

    def _list_refs(self, repo_id: str) -> None:
        _split_repo_id(repo_id)
        head = self.hub.head(repo_id)
        tags = self.hub._refs.get(repo_id, {})
        self._send_json(
            200,
            {
                "branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": head}],
                "tags": [
                    {"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in sorted(tags.items())
                ],
                "converts": [],
            },
        )

    def _create_repo(self, body: bytes) -> None:
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        if repo_type != "model":
            raise HubError(400, None, f"LocalHub only serves model repos, not {repo_type!r}")
        if not payload.get("organization"):
            raise HubError(400, None, "LocalHub needs an explicit '<owner>/<name>' repo id")
        repo_id = f"{payload['organization']}/{payload.get('name')}"
        _split_repo_id(repo_id)
        url = f"{self.hub.url}/{repo_id}"
        with self.hub._lock:
            if self.hub.repo_dir(repo_id).is_dir():
                self._send_json(409, {"error": "You already created this model repo", "url": url})
                return
            self.hub.create_repo(repo_id)
        self._send_json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _branch_for_write(self, repo_id: str, revision: str) -> str:
        _split_repo_id(repo_id)
        head = self.hub.head(repo_id)  # raises RepoNotFound
        if revision not in ("main", "refs/heads/main"):
            raise HubError(404, "RevisionNotFound", f"LocalHub only commits to main, not {revision!r}")
        return head

    def _preupload(self, repo_id: str, revision: str, body: bytes) -> None:
        head = self._branch_for_write(repo_id, revision)
        snap = self.hub._history[repo_id][head]
        answer = []
        for item in json.loads(body or b"{}").get("files", []):
            path = item["path"]
            existing = snap.get(path)
            answer.append(
                {
                    "path": path,
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": existing[0] if existing else None,
                }
            )
        self._send_json(200, {"files": answer, "commitOid": head})

    def _commit(self, repo_id: str, revision: str, body: bytes, query: dict[str, list[str]]) -> None:
        head = self._branch_for_write(repo_id, revision)
        if _truthy(query.get("create_pr")):
            raise HubError(400, None, "LocalHub does not support pull requests")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, None, "commit payload must start with a header line")
        parent = lines[0]["value"].get("parentCommit")
        if parent and parent != head:
            raise HubError(412, None, f"parent commit {parent} is not the head of main ({head})")
        files: dict[str, bytes] = {}
        deletions: list[str] = []
        snap = self.hub._history[repo_id][head]
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, None, f"unsupported encoding {value.get('encoding')!r}")
                files[_safe_relpath(value["path"])] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if value["path"] not in snap:
                    raise HubError(404, "EntryNotFound", "A file with this name doesn't exist", head)
                deletions.append(value["path"])
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/")
                if not any(p.startswith(folder + "/") for p in snap):
                    raise HubError(404, "EntryNotFound", "A folder with this name doesn't exist", head)
                deletions.append(folder + "/")
            else:
                raise HubError(400, None, f"LocalHub does not support commit operation {key!r}")
        sha = self.hub.commit(repo_id, files, delete=deletions)
        self._send_json(
            200,
            {"commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None},
        )

    # --- responses
    def _send_json(self, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self._entry.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        if err.commit:
            headers["X-Repo-Commit"] = err.commit
        self._send_json(err.status, {"error": err.message}, headers)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> inclusive (start, end), or None if unsatisfiable."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or (not match[1] and not match[2]):
        return None
    if not match[1]:
        start, end = max(0, size - int(match[2])), size - 1
    else:
        start = int(match[1])
        end = min(int(match[2]), size - 1) if match[2] else size - 1
    if start >= size or start > end:
        return None
    return start, end


# --------------------------------------------------------------------------- huggingface_hub wiring
_HF_ENV_TO_CLEAR = (
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HF_XET_CACHE",
    "HF_TOKEN",
    "HF_TOKEN_PATH",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)


def point_huggingface_hub_at(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, hf_home: str | os.PathLike[str]
) -> None:
    """Send this process's huggingface_hub (and subprocesses started later) to ``endpoint`` with a fresh
    ``hf_home``; every change is undone by ``monkeypatch`` at the end of the test."""
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api

    endpoint = endpoint.rstrip("/")
    home = str(Path(hf_home).resolve())
    Path(home).mkdir(parents=True, exist_ok=True)
    for name in _HF_ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", home)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_UPDATE_CHECK", "1")

    # every path constant derived from the old HF_HOME moves under the new one
    old_home = constants.HF_HOME
    for name in dir(constants):
        value = getattr(constants, name)
        if name.isupper() and isinstance(value, str) and value.startswith(old_home + os.sep):
            monkeypatch.setattr(constants, name, home + value[len(old_home) :])
    for name, sub in (
        ("HF_HUB_CACHE", "hub"),
        ("HUGGINGFACE_HUB_CACHE", "hub"),
        ("HF_ASSETS_CACHE", "assets"),
        ("HUGGINGFACE_ASSETS_CACHE", "assets"),
        ("HF_XET_CACHE", "xet"),
    ):
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, os.path.join(home, sub))
    monkeypatch.setattr(constants, "HF_HOME", home)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", os.path.join(home, "token"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    if hasattr(constants, "HF_HUB_DISABLE_UPDATE_CHECK"):
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_UPDATE_CHECK", True)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    # the module-level client behind huggingface_hub.create_repo & co. froze the endpoint when built
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)


@pytest.fixture
def local_hub(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalHub]:
    """A running `LocalHub` (empty root) with huggingface_hub pointed at it and a fresh ``HF_HOME``."""
    base = tmp_path_factory.mktemp("local-hub")
    hub = LocalHub(base / "root").start()
    try:
        point_huggingface_hub_at(monkeypatch, hub.url, base / "hf-home")
        yield hub
    finally:
        hub.stop()


__all__ = [
    "HubError",
    "LocalHub",
    "LoggedRequest",
    "git_blob_oid",
    "local_hub",
    "point_huggingface_hub_at",
]
