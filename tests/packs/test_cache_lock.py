"""One pack folder, several users: a lock per pack folder around install/verify/repair, so a download
in progress (in this process or another one sharing the cache) is never judged as damage, and a caller
that may not install never waits for it. Also: a damaged pack with the Hub down is named, quickly."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import hub_server
import pytest
from helpers import make_tiny_llama, perturb
from hub_server import LocalHub

from mole_lsp.core.config import MoleConfig
from mole_lsp.core.model import attach_mole
from mole_lsp.packs.errors import Cancelled, NotInstalled, OfflineError, StoreError
from mole_lsp.packs.format import ADAPTERS, BaseIdentity, export_packs, fingerprint_model
from mole_lsp.packs.store import PackStore

local_hub = hub_server.local_hub
REPO = "mole-lsp/lock-packs"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def packs_dir(tmp_path_factory) -> Path:
    base = make_tiny_llama(seed=4)
    mole = attach_mole(base, MoleConfig(r_shared=6, r_expert=2, languages=("python", "rust")))
    perturb(mole, seed=3, std=0.1)
    return export_packs(mole, tmp_path_factory.mktemp("lock-packs") / "repo",
                        BaseIdentity("tiny/llama", "r1", fingerprint_model(base)))


@pytest.fixture
def hub(local_hub: LocalHub, packs_dir: Path) -> LocalHub:
    local_hub.upload_folder(REPO, packs_dir)
    local_hub.clear_log()
    return local_hub


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_INSTALL = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from mole_lsp.packs.store import PackStore
    while not Path(sys.argv[4]).exists():  # imported: wait for the test's go
        time.sleep(0.02)
    out = PackStore(sys.argv[1], cache_dir=sys.argv[2], endpoint=sys.argv[3]).install(["python"])
    print(json.dumps(sorted(out)))
""")


def test_two_processes_installing_into_one_cache_both_end_verified(hub: LocalHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    gate = hub.hold("core/adapters.safetensors", times=1)  # the first process's core stays half-downloaded

    def start(go: Path) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", _INSTALL, REPO, str(cache), hub.url, str(go)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def requests(part: str) -> int:
        return sum(part in r.path and r.method == "GET" for r in list(hub.request_log))

    procs = [start(tmp_path / "go-1"), start(tmp_path / "go-2")]
    try:
        (tmp_path / "go-1").touch()
        deadline = time.monotonic() + 60
        while requests("core/adapters.safetensors") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert requests("core/adapters.safetensors") == 1, "the first install never reached the core"
        resolved = requests("/revision/")
        (tmp_path / "go-2").touch()  # a second server on the same cache starts installing meanwhile
        while requests("/revision/") <= resolved and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.0)  # the second one meets the half-downloaded core now
        gate.set()
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        gate.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1]) == ["core", "python"]
        assert "damaged" not in err, err[-2000:]  # a download in progress is not damage
    # the second one waited for the first one's download instead of starting over
    assert requests("core/manifest.json") == 1 and requests("core/adapters.safetensors") == 1
    s = PackStore(REPO, cache_dir=cache, offline=True)
    assert set(s.installed()) == {"core", "python"}
    assert s.expert_path("python", install=False).is_dir()  # hashes verify


def test_a_caller_that_may_not_install_does_not_wait_for_a_download(hub: LocalHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    s = PackStore(REPO, cache_dir=cache)
    s.core_path()
    gate = hub.hold("experts/python/adapters.safetensors", times=1)
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(s.expert_path("python")))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not any("experts/python/adapters" in r.path for r in list(hub.request_log)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for other in (s, PackStore(REPO, cache_dir=cache)):  # this store, and another one on the cache
            t0 = time.monotonic()
            with pytest.raises(StoreError, match="python pack is being downloaded"):
                other.expert_path("python", install=False)
            assert time.monotonic() - t0 < 2
            assert other.core_path(install=False) is not None
    finally:
        gate.set()
        worker.join(30)
    assert got and Path(got[0]).is_dir()
    assert s.expert_path("python", install=False) == got[0]


def test_damaged_pack_with_the_hub_down_is_named_quickly(hub: LocalHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = PackStore(REPO, cache_dir=cache).expert_path("python")
    f = path / ADAPTERS
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    down = PackStore(REPO, cache_dir=cache, endpoint=f"http://127.0.0.1:{_free_port()}")
    for _ in range(2):  # said again on the next call: the damaged copy is not silently forgotten
        t0 = time.monotonic()
        with pytest.raises(OfflineError) as err:
            down.expert_path("python")
        assert time.monotonic() - t0 < 5
        msg = str(err.value)
        assert "cached python pack is damaged" in msg and "sha256 mismatch" in msg
        assert "cannot be repaired while the Hub is offline (cannot reach http://127" in msg
        assert "not cached" not in msg
    with pytest.raises(NotInstalled):
        down._ensure(down._source(), "python", False, None, "python")


def test_a_cancelled_download_stops_and_leaves_nothing_in_use(hub: LocalHub, tmp_path: Path) -> None:
    s = PackStore(REPO, cache_dir=tmp_path / "cache")
    s.core_path()
    gate = hub.hold("experts/python/adapters.safetensors", times=1)
    cancel = threading.Event()
    outcome: list[BaseException] = []

    def install() -> None:
        try:
            s.install(["python"], cancel=cancel)
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            outcome.append(e)

    worker = threading.Thread(target=install)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not any("experts/python/adapters" in r.path for r in list(hub.request_log)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        cancel.set()
    finally:
        gate.set()  # the next chunk arrives: the download stops there
        worker.join(30)
    assert outcome and isinstance(outcome[0], Cancelled), outcome
    assert "python" not in s.installed()
    with pytest.raises(StoreError, match="python pack is not installed"):
        s.expert_path("python", install=False)
    assert set(s.install(["python"])) == {"core", "python"}  # a later install completes it
