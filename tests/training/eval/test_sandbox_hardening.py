"""The sandbox against other local users and against what samples leave behind (issue 12 #17, #18)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from training.eval.sandbox import UID_BASE, UID_COUNT, UidPool


@pytest.fixture
def tmp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private stand-in for /tmp, where the pool's lock directory goes by default."""
    monkeypatch.delenv("MOLE_SANDBOX_LOCK_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_lock_directory_planted_as_a_symlink_is_refused(tmp_root: Path) -> None:
    target = tmp_root / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_root / "mole-lsp-sandbox-uids").symlink_to(target)
    with pytest.raises(RuntimeError, match="refusing"):
        UidPool()


def test_lock_directory_open_to_others_is_refused(tmp_root: Path) -> None:
    d = tmp_root / "mole-lsp-sandbox-uids"
    d.mkdir()
    os.chmod(d, 0o777)
    with pytest.raises(RuntimeError, match="mode 777"):
        UidPool()


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a directory owned by another user needs root")
def test_lock_directory_owned_by_another_user_is_refused(tmp_root: Path) -> None:
    d = tmp_root / "mole-lsp-sandbox-uids"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    with pytest.raises(RuntimeError, match="owned by uid 65534"):
        UidPool()


def test_lock_files_never_follow_planted_symlinks(tmp_root: Path) -> None:
    """Every lock file is a symlink to a victim file: the pool neither creates nor opens the victim."""
    pool = UidPool()
    d = tmp_root / "mole-lsp-sandbox-uids"
    assert oct(d.stat().st_mode & 0o777) == "0o700"
    victim = tmp_root / "victim"
    for uid in range(UID_BASE, UID_BASE + UID_COUNT):
        (d / f"{uid}.lock").symlink_to(victim)
    with pytest.raises(RuntimeError, match="no free sandbox uid"):
        pool.acquire()
    assert not victim.exists()


def test_a_private_lock_directory_is_used(tmp_root: Path) -> None:
    pool = UidPool()
    uid, fd = pool.acquire()
    try:
        assert UID_BASE <= uid < UID_BASE + UID_COUNT
        assert (tmp_root / "mole-lsp-sandbox-uids" / f"{uid}.lock").is_file()
    finally:
        os.close(fd)
