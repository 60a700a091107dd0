"""The local Hub stand-in, exercised with real huggingface_hub calls over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import hub_server
import huggingface_hub
import pytest
from hub_server import LocalHub, git_blob_oid
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

# the fixture lives in the helper module; re-exporting it here makes pytest find it
local_hub = hub_server.local_hub

PACK_FILES = {
    "index.json": json.dumps({"languages": ["python", "rust"]}),
    "core/manifest.json": "{}",
    "core/shared.safetensors": b"\x01" * 300,
    "experts/python/manifest.json": '{"language": "python"}',
    "experts/python/expert.safetensors": b"\x02" * 500,
    "experts/rust/manifest.json": '{"language": "rust"}',
    "experts/rust/expert.safetensors": b"\x03" * 700,
}


def _all_files(folder: str | Path) -> set[str]:
    root = Path(folder)
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_hf_hub_download_reads_file_and_commit_headers(local_hub: LocalHub) -> None:
    sha = local_hub.commit("acme/tiny", {"config.json": '{"a": 1}', "sub/data.bin": b"xyz"})
    path = hf_hub_download("acme/tiny", "sub/data.bin")
    assert Path(path).read_bytes() == b"xyz"
    assert f"snapshots/{sha}/sub/data.bin" in Path(path).as_posix()
    assert local_hub.file_requests("HEAD") == ["sub/data.bin"]
    assert local_hub.file_requests("GET") == ["sub/data.bin"]

    with urllib.request.urlopen(
        urllib.request.Request(f"{local_hub.url}/acme/tiny/resolve/main/sub/data.bin", method="HEAD")
    ) as resp:
        assert resp.headers["X-Repo-Commit"] == sha
        assert resp.headers["ETag"] == f'"{git_blob_oid(b"xyz")}"'
        assert resp.headers["Content-Length"] == "3"


def test_same_state_gives_same_sha_and_range_requests(local_hub: LocalHub) -> None:
    first = local_hub.commit("acme/r", {"f.txt": "0123456789"})
    assert local_hub.head("acme/r") == first
    assert local_hub.commit("acme/r", {"f.txt": "0123456789"}) == first
    req = urllib.request.Request(f"{local_hub.url}/acme/r/resolve/main/f.txt", headers={"Range": "bytes=3-5"})
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == "bytes 3-5/10"
        assert resp.read() == b"345"


def test_snapshot_download_fetches_only_the_wanted_folder(local_hub: LocalHub) -> None:
    local_hub.commit("acme/packs", PACK_FILES)
    folder = snapshot_download("acme/packs", allow_patterns=["experts/python/*"])
    assert _all_files(folder) == {"experts/python/manifest.json", "experts/python/expert.safetensors"}
    fetched = set(local_hub.file_requests("GET")) | set(local_hub.file_requests("HEAD"))
    assert fetched == {"experts/python/manifest.json", "experts/python/expert.safetensors"}
    paths = [r.path for r in local_hub.request_log]
    assert any(p.startswith("/api/models/acme/packs/tree/") for p in paths)


def test_tree_listing_recursive_and_by_folder(local_hub: LocalHub) -> None:
    sha = local_hub.commit("acme/packs", PACK_FILES)
    api = HfApi(endpoint=local_hub.url)
    top = {(type(e).__name__, e.path) for e in api.list_repo_tree("acme/packs")}
    assert top == {("RepoFile", "index.json"), ("RepoFolder", "core"), ("RepoFolder", "experts")}
    below = {e.path for e in api.list_repo_tree("acme/packs", path_in_repo="experts", recursive=True)}
    assert "experts/rust/expert.safetensors" in below and "experts/python" in below
    info = api.model_info("acme/packs")
    assert info.sha == sha and {s.rfilename for s in info.siblings} == set(PACK_FILES)
    files = api.list_repo_files("acme/packs")
    assert set(files) == set(PACK_FILES)


def test_pinned_revision_still_resolves_after_main_moved(local_hub: LocalHub) -> None:
    old = local_hub.commit("acme/m", {"weights.bin": b"old", "keep.txt": "k"})
    local_hub.set_ref("acme/m", "v1")
    new = local_hub.commit("acme/m", {"weights.bin": b"new!"}, delete=["keep.txt"])
    assert old != new
    refs = HfApi(endpoint=local_hub.url).list_repo_refs("acme/m")
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", new)]
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", old)]
    assert Path(hf_hub_download("acme/m", "weights.bin", revision=old)).read_bytes() == b"old"
    assert Path(hf_hub_download("acme/m", "weights.bin")).read_bytes() == b"new!"
    assert Path(hf_hub_download("acme/m", "keep.txt", revision="v1")).read_text() == "k"
    pinned = snapshot_download("acme/m", revision=old)
    assert _all_files(pinned) == {"weights.bin", "keep.txt"}
    assert Path(pinned).name == old
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("acme/m", "keep.txt")


def test_files_written_directly_into_the_root_are_served(local_hub: LocalHub) -> None:
    repo = local_hub.root / "plain" / "folder"
    (repo / "a").mkdir(parents=True)
    (repo / "a" / "b.txt").write_text("hello")
    assert Path(hf_hub_download("plain/folder", "a/b.txt")).read_text() == "hello"


def test_create_repo_and_upload_folder_then_download(local_hub: LocalHub, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for rel, content in PACK_FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        data = content if isinstance(content, bytes) else content.encode()
        (src / rel).write_bytes(data)
    url = huggingface_hub.create_repo("me/packs")  # module-level client: checks the endpoint patch
    assert str(url).startswith(local_hub.url)
    huggingface_hub.create_repo("me/packs", exist_ok=True)
    with pytest.raises(huggingface_hub.errors.HfHubHTTPError):
        huggingface_hub.create_repo("me/packs")

    api = HfApi(endpoint=local_hub.url)
    info = api.upload_folder(repo_id="me/packs", folder_path=src, commit_message="first")
    assert info.oid == local_hub.head("me/packs")
    assert _all_files(snapshot_download("me/packs")) == set(PACK_FILES)

    # second upload: one changed file, one deletion by pattern
    (src / "core" / "manifest.json").write_text('{"v": 2}')
    shutil_rm = src / "experts" / "rust"
    for p in shutil_rm.iterdir():
        p.unlink()
    shutil_rm.rmdir()
    info2 = api.upload_folder(repo_id="me/packs", folder_path=src, delete_patterns=["experts/rust/*"])
    assert info2.oid != info.oid
    files = _all_files(snapshot_download("me/packs"))
    assert files == set(PACK_FILES) - {"experts/rust/manifest.json", "experts/rust/expert.safetensors"}
    assert local_hub.file_bytes("me/packs", "core/manifest.json") == b'{"v": 2}'
    # the first commit is still there
    assert local_hub.file_bytes("me/packs", "experts/rust/manifest.json", revision=info.oid)
    api.delete_file("index.json", repo_id="me/packs")
    assert "index.json" not in api.list_repo_files("me/packs")


def test_errors_are_huggingface_hub_exceptions(local_hub: LocalHub) -> None:
    local_hub.commit("acme/e", {"a.txt": "a"})
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/missing", "a.txt")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("acme/e", "nope.txt")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("acme/e", "a.txt", revision="f" * 40)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download("acme/e", revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("acme/missing")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{local_hub.url}/api/agent-harnesses")
    assert err.value.code == 404


def test_interrupted_download_is_resumed_with_range(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # huggingface_hub writes in 10 MiB chunks; smaller ones let bytes reach the file before the cut
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    payload = os.urandom(300_000)
    local_hub.commit("acme/big", {"big.bin": payload})
    local_hub.cut_download("big.bin", after_bytes=100_000, times=1)
    path = hf_hub_download("acme/big", "big.bin")
    assert Path(path).read_bytes() == payload
    gets = [r for r in local_hub.request_log if r.method == "GET" and r.path.endswith("/big.bin")]
    assert gets[0].cut and gets[0].range is None
    assert gets[-1].status == 206 and gets[-1].range is not None and gets[-1].range.startswith("bytes=")


def test_failed_download_leaves_no_half_file(local_hub: LocalHub) -> None:
    payload = os.urandom(200_000)
    local_hub.commit("acme/big", {"big.bin": payload})
    local_hub.cut_download("acme/big/big.bin", after_bytes=50_000, times=1)
    local_hub.fail("big.bin", status=500, times=None)  # and so does every retry
    with pytest.raises(huggingface_hub.errors.HfHubHTTPError):
        hf_hub_download("acme/big", "big.bin")
    cache = Path(huggingface_hub.constants.HF_HUB_CACHE)
    leftovers = [
        p for p in cache.rglob("*") if p.is_file() and ("big.bin" in p.name or p.suffix == ".incomplete")
    ]
    assert leftovers == []
    assert not any((cache / "models--acme--big").rglob("snapshots/*/big.bin"))
    # healthy again: the download completes and is the real content
    local_hub.clear_faults()
    assert Path(hf_hub_download("acme/big", "big.bin")).read_bytes() == payload


def test_subprocess_inherits_the_endpoint(local_hub: LocalHub, tmp_path: Path) -> None:
    local_hub.commit("acme/sub", {"x.txt": "from subprocess"})
    code = "import huggingface_hub as h; print(open(h.hf_hub_download('acme/sub', 'x.txt')).read())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "from subprocess"
    assert local_hub.file_requests("GET", repo_id="acme/sub") == ["x.txt"]


def test_hub_without_fixture_context_manager(tmp_path: Path) -> None:
    with LocalHub(tmp_path / "root") as hub:
        sha = hub.commit("o/n", {"f": b"1"})
        with urllib.request.urlopen(f"{hub.url}/api/models/o/n/revision/{sha}") as resp:
            assert json.load(resp)["sha"] == sha
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{hub.url}/api/models/o/n/revision/{'0' * 40}")
        assert err.value.headers["X-Error-Code"] == "RevisionNotFound"
