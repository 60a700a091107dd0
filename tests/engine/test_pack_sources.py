"""Pack sources: a local pack folder, and the choice between it and the Hub pack store."""

from __future__ import annotations

from pathlib import Path

from mole_lsp.engine.sources import FolderPacks, open_pack_source
from mole_lsp.packs.format import CORE_DIR, EXPERTS_DIR, BaseIdentity
from mole_lsp.packs.store import PackStore

BASE = BaseIdentity("acme/tiny-llama", None, "0" * 64, {})


def test_folder_packs_finds_only_existing_pack_folders(tmp_path: Path) -> None:
    packs = FolderPacks(tmp_path)
    assert packs.core_path() is None and packs.expert_path("rust") is None
    (tmp_path / CORE_DIR).mkdir()
    (tmp_path / EXPERTS_DIR / "rust").mkdir(parents=True)
    assert packs.core_path(install=False) == tmp_path / CORE_DIR
    assert packs.expert_path("rust") == tmp_path / EXPERTS_DIR / "rust"
    assert packs.expert_path("python") is None


def test_a_folder_is_used_as_is_and_anything_else_names_a_hub_pack_repo(tmp_path: Path) -> None:
    local = open_pack_source(str(tmp_path), BASE.repo_id, BASE)
    assert isinstance(local, FolderPacks) and local.root == tmp_path
    store = open_pack_source(None, BASE.repo_id, BASE, cache_dir=str(tmp_path / "cache"), offline=True)
    assert isinstance(store, PackStore) and store.repo_id == "mole-lsp/tiny-llama-packs"
    assert store.revision == "main" and store.base == BASE
    named = open_pack_source("acme/packs", BASE.repo_id, BASE, revision="v1", cache_dir=str(tmp_path / "c"))
    assert isinstance(named, PackStore) and (named.repo_id, named.revision) == ("acme/packs", "v1")
