"""The pack store against a local Hub over real HTTP: partial installs, pinning, offline use, repair of
damaged and interrupted downloads, shared downloads, folder installs, removal and refusals."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import hub_server
import pytest
from helpers import make_tiny_llama, perturb
from hub_server import LocalHub

from mole_lsp.core.config import MoleConfig
from mole_lsp.core.model import attach_mole
from mole_lsp.io import sha256_file
from mole_lsp.packs.cache import InstalledPack
from mole_lsp.packs.errors import OfflineError, StoreError
from mole_lsp.packs.format import (
    ADAPTERS,
    MANIFEST,
    BaseIdentity,
    export_packs,
    fingerprint_model,
    load_core,
    load_expert,
    read_manifest,
    write_index,
)
from mole_lsp.packs.store import PackStore, default_pack_repo

local_hub = hub_server.local_hub
REPO = "mole-lsp/tiny-packs"
LANGS = ("python", "rust", "go")
RUST_FILES = {"experts/rust/manifest.json", "experts/rust/adapters.safetensors"}
CORE_FILES = {"core/manifest.json", "core/adapters.safetensors"}


def _export(tmp: Path, seed: int, name: str, langs=LANGS) -> tuple[Path, BaseIdentity]:
    base = make_tiny_llama(seed=4)
    ident = BaseIdentity("tiny/llama", "r1", fingerprint_model(base))
    mole = attach_mole(base, MoleConfig(r_shared=6, r_expert=2, languages=langs))
    perturb(mole, seed=seed, std=0.1)
    return export_packs(mole, tmp / name, ident), ident


@pytest.fixture(scope="module")
def packs(tmp_path_factory) -> dict[str, object]:
    """Two trainings of the same tiny base (v1, v2) and one of another base (rust only)."""
    tmp = tmp_path_factory.mktemp("store-packs")
    v1, ident = _export(tmp, 8, "v1")
    v2, _ = _export(tmp, 9, "v2")
    other_base = make_tiny_llama(seed=77)
    other = attach_mole(other_base, MoleConfig(r_shared=6, r_expert=2, languages=("rust",)))
    other_repo = export_packs(other, tmp / "other", BaseIdentity("someone/else", None, fingerprint_model(other_base)))
    return {"v1": v1, "v2": v2, "other": other_repo, "ident": ident}


@pytest.fixture
def hub(local_hub: LocalHub, packs) -> LocalHub:
    local_hub.upload_folder(REPO, packs["v1"])
    return local_hub


def gets(hub: LocalHub) -> list[str]:
    return hub.file_requests("GET", REPO)


def store(tmp_path: Path, **kw) -> PackStore:
    return PackStore(REPO, cache_dir=tmp_path / "cache", **kw)


def same_file(a: Path, b: Path) -> bool:
    return sha256_file(a) == sha256_file(b)


def test_default_pack_repo_naming() -> None:
    assert default_pack_repo("HuggingFaceTB/SmolLM2-135M-Instruct") == "mole-lsp/SmolLM2-135M-Instruct-packs"
    assert default_pack_repo("deepseek-ai/deepseek-coder-1.3b-base") == "mole-lsp/deepseek-coder-1.3b-base-packs"
    assert default_pack_repo("/models/my base/") == "mole-lsp/my-base-packs"
    assert default_pack_repo("a/b", owner="me") == "me/b-packs"


def test_installing_rust_fetches_only_core_and_rust(hub: LocalHub, packs, tmp_path: Path) -> None:
    sha = hub.head(REPO)
    seen: list[tuple[str, float | None]] = []
    s = store(tmp_path)
    path = s.expert_path("rust", progress=lambda msg, frac: seen.append((msg, frac)))
    assert set(gets(hub)) == {"index.json"} | CORE_FILES | RUST_FILES
    assert len(gets(hub)) == 5  # each file once
    snapshot = path.parents[1]
    assert snapshot.name == sha == s.resolved_revision()
    on_disk = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    assert on_disk == {"index.json"} | CORE_FILES | RUST_FILES
    assert same_file(path / ADAPTERS, packs["v1"] / "experts" / "rust" / ADAPTERS)
    # progress: per pack from 0 to 1
    fracs = [f for _, f in seen if f is not None]
    assert fracs[0] == 0.0 and fracs[-1] == 1.0
    assert any("rust pack" in m for m, _ in seen) and any("core pack" in m for m, _ in seen)

    # what was installed is usable: base + core + rust
    model = make_tiny_llama(seed=4)
    mole = load_core(model, s.core_path(install=False), base=packs["ident"])
    assert load_expert(mole, path, language="rust") == "rust"

    hub.clear_log()
    assert s.expert_path("rust") == path and s.core_path() == path.parents[1] / "core"
    assert gets(hub) == []  # verified from the cache, nothing fetched


def test_available_and_installed_sizes(hub: LocalHub, packs, tmp_path: Path) -> None:
    s = store(tmp_path)
    avail = s.available()
    assert set(avail) == {"core", *LANGS}
    for name in avail:
        sub = "core" if name == "core" else f"experts/{name}"
        assert avail[name]["size_bytes"] == (packs["v1"] / sub / ADAPTERS).stat().st_size
        assert set(avail[name]["files"]) == {ADAPTERS}
    assert s.installed() == {}
    got = s.install(["python", "go"])
    assert set(got) == {"core", "python", "go"}
    inst = s.installed()
    assert set(inst) == {"core", "python", "go"}
    for name, pack in inst.items():
        assert isinstance(pack, InstalledPack) and pack.language == name
        assert pack.size_bytes == avail[name]["size_bytes"] and pack.revision == hub.head(REPO)
        assert pack == got[name]
    assert not {f for f in gets(hub) if f.startswith("experts/rust/")}


def test_pinned_revision_keeps_old_files(hub: LocalHub, packs, tmp_path: Path) -> None:
    first = hub.head(REPO)
    session = store(tmp_path / "a")
    session.core_path()  # this store is now pinned to the first commit
    second = hub.upload_folder(REPO, packs["v2"])
    assert second != first

    pinned = store(tmp_path / "b", revision=first).expert_path("rust")
    assert same_file(pinned / ADAPTERS, packs["v1"] / "experts" / "rust" / ADAPTERS)
    # a store resolved before the new commit keeps serving the old one (packs must fit its core)
    later = session.expert_path("python")
    assert later.parents[1].name == first
    assert same_file(later / ADAPTERS, packs["v1"] / "experts" / "python" / ADAPTERS)
    # a new store follows main
    fresh = store(tmp_path / "c")
    assert same_file(fresh.expert_path("rust") / ADAPTERS, packs["v2"] / "experts" / "rust" / ADAPTERS)
    assert fresh.resolved_revision() == second
    # refresh moves a branch-pinned store to the new commit
    assert session.index(refresh=True) == json.loads((packs["v2"] / "index.json").read_text())
    assert session.resolved_revision() == second


def test_offline_uses_cached_packs_and_names_what_is_missing(hub: LocalHub, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cached = store(tmp_path).expert_path("rust")
    hub.clear_log()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = store(tmp_path)
    assert s.offline
    assert s.expert_path("rust") == cached
    assert set(s.installed()) == {"core", "rust"}
    assert set(s.available()) == {"core", *LANGS}  # the cached index
    with pytest.raises(OfflineError) as err:
        s.expert_path("python")
    assert str(err.value) == (
        "python pack is not cached and the Hub is offline (HF_HUB_OFFLINE=1): run `mole-lsp install-pack "
        "python` when online, or install from a folder with --from")
    assert err.value.missing == "python"
    assert hub.request_log == []  # offline means no request at all

    # explicit flag, and a store that never saw the repository
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert store(tmp_path, offline=True).expert_path("rust") == cached
    empty = store(tmp_path / "empty", offline=True)
    assert empty.available() == {} and empty.installed() == {} and empty.resolved_revision() is None
    with pytest.raises(OfflineError, match="pack index of mole-lsp/tiny-packs@main .*needed for the go pack"):
        empty.expert_path("go")
    assert empty.core_path(install=False) is None
    assert hub.request_log == []


def test_unreachable_hub_is_remembered_as_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = PackStore(REPO, cache_dir=tmp_path, endpoint=f"http://127.0.0.1:{port}")
    assert not s.offline
    assert s.available() == {}
    assert s.offline
    with pytest.raises(OfflineError, match=r"rust.* is not cached and the Hub is offline \(cannot reach http://127"):
        s.expert_path("rust")


def test_corrupted_cached_pack_is_refused_and_fetched_again(hub: LocalHub, packs, tmp_path: Path) -> None:
    path = store(tmp_path).expert_path("rust")
    f = path / ADAPTERS
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size: only the sha256 can tell
    f.write_bytes(bytes(data))
    hub.clear_log()
    s = store(tmp_path)
    assert s.expert_path("rust") == path
    assert same_file(f, packs["v1"] / "experts" / "rust" / ADAPTERS)
    assert set(gets(hub)) <= RUST_FILES and "experts/rust/adapters.safetensors" in gets(hub)

    # damaged while offline: refused with the reason, and kept (named again) until a repair can replace it
    f.write_bytes(f.read_bytes()[:-10])
    for _ in range(2):
        with pytest.raises(OfflineError, match="cached rust pack is damaged .*truncated.*cannot be repaired "
                                               r"while the Hub is offline \(offline mode is on\)"):
            store(tmp_path, offline=True).expert_path("rust")
    assert "rust" not in store(tmp_path, offline=True).installed()


def test_interrupted_download_leaves_nothing_in_use_and_next_call_succeeds(hub: LocalHub, packs,
                                                                          tmp_path: Path) -> None:
    s = store(tmp_path)
    s.core_path()
    target = "experts/rust/adapters.safetensors"
    hub.cut_download(target, after_bytes=200)  # the transfer breaks off ...
    hub.fail(target, status=503, times=None)  # ... and huggingface_hub's own retry is refused
    with pytest.raises(StoreError, match="downloading the rust pack .* failed.*run the command again"):
        s.expert_path("rust")
    assert any(r.cut for r in hub.request_log)
    snapshot = Path(s.core_path()).parent
    assert not (snapshot / target).exists()  # nothing half-written under the real name
    assert "rust" not in s.installed()
    assert not s.offline  # the Hub answered: this was not a network outage

    hub.clear_faults()
    path = s.expert_path("rust")
    assert same_file(path / ADAPTERS, packs["v1"] / "experts" / "rust" / ADAPTERS)
    assert set(s.installed()) == {"core", "rust"}


def test_concurrent_requests_share_one_download(hub: LocalHub, tmp_path: Path) -> None:
    s = store(tmp_path)
    s.index()  # resolve first, so only pack downloads race
    start = threading.Barrier(4)
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        start.wait()
        try:
            results.append(s.expert_path("rust"))
        except BaseException as e:  # surfaced by the asserts below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(set(results)) == 1 and len(results) == 4
    assert gets(hub).count("experts/rust/adapters.safetensors") == 1
    assert gets(hub).count("core/adapters.safetensors") == 1


def test_install_from_folder(packs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no Hub at all
    s = store(tmp_path)
    got = s.install_from(packs["v1"], languages=["rust"])
    digest = __import__("hashlib").sha256((packs["v1"] / "index.json").read_bytes()).hexdigest()[:12]
    rev = f"local-{digest}"
    assert set(got) == {"core", "rust"} and {p.revision for p in got.values()} == {rev}
    assert got["rust"].path.is_relative_to(tmp_path / "cache")
    assert same_file(got["rust"].path / ADAPTERS, packs["v1"] / "experts" / "rust" / ADAPTERS)

    # a fresh store on "main" with no Hub falls back to the folder install
    fresh = store(tmp_path)
    assert fresh.expert_path("rust") == got["rust"].path
    assert fresh.resolved_revision() == rev
    assert set(fresh.installed()) == {"core", "rust"} and set(fresh.available()) == {"core", "rust"}
    with pytest.raises(StoreError, match=r"no python expert pack in .*local-.*available: rust"):
        fresh.expert_path("python")
    assert set(store(tmp_path, revision=rev).install_from(packs["v1"])) == {"core", *LANGS}
    assert set(store(tmp_path, revision=rev).installed()) == {"core", *LANGS}

    with pytest.raises(StoreError, match="not a pack repository"):
        s.install_from(tmp_path)
    with pytest.raises(StoreError, match="no java expert pack"):
        s.install_from(packs["v1"], languages=["java"])
    with pytest.raises(StoreError, match="core pack of .* is refused: .*another base model"):
        store(tmp_path, base=BaseIdentity("someone/else")).install_from(packs["v1"])
    broken = tmp_path / "broken"
    shutil.copytree(packs["v1"], broken)
    (broken / "experts" / "go" / ADAPTERS).write_bytes(b"x")
    with pytest.raises(StoreError, match="go pack in .* does not verify: .*truncated"):
        s.install_from(broken, languages=["go"])


def test_remove(hub: LocalHub, tmp_path: Path) -> None:
    s = store(tmp_path)
    s.install(["rust", "python"])
    assert s.remove("rust") is True
    assert set(s.installed()) == {"core", "python"}
    assert s.remove("rust") is False
    with pytest.raises(StoreError, match="rust pack is not installed: run `mole-lsp install-pack rust`"):
        s.expert_path("rust", install=False)
    hub.clear_log()
    assert s.expert_path("rust").is_dir()  # fetched again
    assert "experts/rust/adapters.safetensors" in gets(hub)
    with pytest.raises(StoreError, match="not a language id"):
        s.remove("../core")


def test_pack_for_another_base_is_refused(local_hub: LocalHub, packs, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(packs["v1"], mixed)
    shutil.rmtree(mixed / "experts" / "rust")
    shutil.copytree(packs["other"] / "experts" / "rust", mixed / "experts" / "rust")
    write_index(mixed)
    local_hub.upload_folder(REPO, mixed)
    s = store(tmp_path)
    with pytest.raises(StoreError, match=r"rust pack of mole-lsp/tiny-packs is refused: .*another base model"):
        s.expert_path("rust")
    assert gets(local_hub).count("experts/rust/adapters.safetensors") == 1  # not fetched again: it is intact
    assert s.expert_path("python").is_dir()  # the others are fine
    # and a store told which base it serves refuses a core made for another one
    with pytest.raises(StoreError, match="core pack of .* is refused: .*trained on base 'tiny/llama'"):
        store(tmp_path, base=BaseIdentity("someone/else")).core_path()


def test_unknown_language_repo_and_revision(hub: LocalHub, tmp_path: Path) -> None:
    s = store(tmp_path)
    with pytest.raises(StoreError, match=r"no java expert pack in mole-lsp/tiny-packs@\w{12} \(available: go, python, rust\)"):
        s.expert_path("java")
    with pytest.raises(StoreError, match="not a language id"):
        s.expert_path("core")
    with pytest.raises(StoreError, match="pack repository mole-lsp/nothing was not found"):
        PackStore("mole-lsp/nothing", cache_dir=tmp_path).expert_path("rust")
    with pytest.raises(StoreError, match="revision 'v9' of pack repository"):
        store(tmp_path, revision="v9").expert_path("rust")
    assert gets(hub) == ["index.json"]


def test_manifest_of_cached_pack_is_the_published_one(hub: LocalHub, packs, tmp_path: Path) -> None:
    path = store(tmp_path).expert_path("go")
    assert read_manifest(path) == json.loads((packs["v1"] / "experts" / "go" / MANIFEST).read_text())


def test_folder_install_used_when_the_hub_has_no_such_repo(local_hub: LocalHub, packs, tmp_path: Path) -> None:
    got = store(tmp_path).install_from(packs["v1"], languages=["go"])
    s = store(tmp_path)  # online, but nothing is published under REPO
    assert s.expert_path("go") == got["go"].path
    assert s.resolved_revision() == got["go"].revision
    with pytest.raises(StoreError, match="no folder install local-000000000000"):
        store(tmp_path, revision="local-000000000000").core_path()
    # a damaged folder install cannot be fetched again: it is removed and the user told how to repair it
    f = got["go"].path / ADAPTERS
    f.write_bytes(f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 1]))
    with pytest.raises(StoreError, match="go pack is missing from the folder install .*damaged.*sha256 mismatch"):
        store(tmp_path).expert_path("go")
    assert not got["go"].path.exists()
    assert store(tmp_path).install_from(packs["v1"], languages=["go"])["go"].path == got["go"].path
