"""The engine's "no core pack" is not final, and is not asked again on every request: a core that appears
in the pack folder is loaded by the next request after the folder changed; a source that may install is
asked again after CORE_RETRY_S or a retry_core(). Only pack errors degrade: a bug in a pack source
reaches the caller (issue 12 #1, #8)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lsp_fixtures import load_tiny_base, tiny_world  # noqa: F401

from mole_lsp.engine import experts
from mole_lsp.engine.experts import ExpertManager
from mole_lsp.engine.sources import FolderPacks
from mole_lsp.lang.registry import load_registry
from mole_lsp.packs.errors import OfflineError
from mole_lsp.packs.format import CORE_DIR, EXPERTS_DIR, BaseIdentity


class CountingFolder(FolderPacks):
    """A real pack folder that counts how often the engine asks it for the core."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.asked: list[bool] = []

    def core_path(self, install: bool = True, progress=None):
        self.asked.append(install)
        return super().core_path(install, progress)


class OfflineFolder(CountingFolder):
    def core_path(self, install: bool = True, progress=None):
        self.asked.append(install)
        raise OfflineError("the core pack is not cached and the Hub is offline", "core")


class BuggyFolder(FolderPacks):
    def core_path(self, install: bool = True, progress=None):
        return super().core_path(install, progress, "one argument too many")  # a bug: TypeError

    def expert_path(self, lang: str, install: bool = True, progress=None):
        raise TypeError("a bug in expert_path")


def _manager(world, packs) -> ExpertManager:
    model, _ = load_tiny_base(world)
    base = BaseIdentity(f"local:{world.base_dir.name}", None, world.weights_sha256)
    return ExpertManager(model, packs, base, load_registry())


def test_core_copied_in_later_is_loaded_once_the_folder_changed(tiny_world, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(experts, "STAMP_EVERY_S", 0.0)
    packs = CountingFolder(tmp_path / "packs")
    (tmp_path / "packs").mkdir()
    m = _manager(tiny_world, packs)
    assert m.ensure_core(install=False) is False and m.base_only
    for _ in range(5):  # nothing changed on disk: the source is not asked again
        assert m.ensure_core(install=False) is False
    assert packs.asked == [False]
    shutil.copytree(tiny_world.packs_dir / CORE_DIR, tmp_path / "packs" / CORE_DIR)
    shutil.copytree(tiny_world.packs_dir / EXPERTS_DIR / "python", tmp_path / "packs" / EXPERTS_DIR / "python")
    assert m.ensure_core(install=False) is True and not m.base_only
    assert m.ensure_expert("python", install=False) == "python"
    assert any("core pack found" in n for n in m.take_notes())


def test_a_source_that_may_install_is_asked_again_later(tiny_world, tmp_path, monkeypatch):  # noqa: F811
    packs = OfflineFolder(tmp_path)
    m = _manager(tiny_world, packs)
    assert m.ensure_core(install=True) is False
    assert m.ensure_core(install=True) is False
    assert packs.asked == [True]  # not once per request
    monkeypatch.setattr(experts, "CORE_RETRY_S", 0.0)
    assert m.ensure_core(install=True) is False
    assert packs.asked == [True, True]  # the Hub may be back
    monkeypatch.setattr(experts, "CORE_RETRY_S", 3600.0)
    m.retry_core()  # e.g. autoInstallPacks turned on, a pack installed
    m.ensure_core(install=True)
    assert packs.asked == [True, True, True]
    assert [n for n in m.take_notes() if "offline" in n]  # the reason is said


def test_a_bug_in_a_pack_source_is_not_a_missing_pack(tiny_world, tmp_path):  # noqa: F811
    shutil.copytree(tiny_world.packs_dir, tmp_path / "packs")
    m = _manager(tiny_world, BuggyFolder(tmp_path / "packs"))
    with pytest.raises(TypeError):
        m.ensure_core(install=True)
    assert m.take_notes() == []  # not reported as "no core pack"
    ok = _manager(tiny_world, FolderPacks(tmp_path / "packs"))
    assert ok.ensure_core(install=True)
    ok.packs = BuggyFolder(tmp_path / "packs")
    with pytest.raises(TypeError, match="a bug in expert_path"):
        ok.ensure_expert("python", install=True)
