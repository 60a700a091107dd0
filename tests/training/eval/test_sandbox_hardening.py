"""The sandbox against other local users and against what samples leave behind (issue 12 #17, #18)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from training.eval import sandbox
from training.eval.uids import UID_BASE, UID_COUNT, UidPool, sweep_uid_files


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


@pytest.mark.parametrize("how", ["private tmp", "sweep"])
def test_files_written_outside_the_sample_directory_do_not_survive_the_run(
        how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A program that writes to /tmp, /var/tmp and /dev/shm leaves nothing there once its run is over
    (a private /tmp per run, or else a sweep of what the throw-away uid owns)."""
    from training.eval.executor import Executor
    from training.eval.sandbox import Limits
    from training.eval.toolchains import available_toolchains

    if not available_toolchains(["python"])["python"].available:
        pytest.skip("python toolchain missing")
    if how == "private tmp" and not sandbox.private_tmp_ok():
        pytest.skip("mount namespaces are not permitted here")
    if how == "sweep":
        if not sandbox.uid_switch_ok():
            pytest.skip("no throw-away uid here")
        monkeypatch.setattr(sandbox, "private_tmp_ok", lambda: False)
    name = f"mole-leak-{os.getpid()}-{os.urandom(4).hex()}"
    targets = [Path(d) / name for d in ("/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(d)]
    program = "".join(f"open({str(t)!r}, 'w').write('x')\n" for t in targets)
    program += f"import os\nos.makedirs({str(targets[0])!r} + '.d/sub')\n"
    try:
        r = Executor(Limits(wall_s=60, cpu_s=30)).run("python", program)
        assert r.passed, (r.status, r.reason, r.stderr)
        left = [str(t) for t in [*targets, Path(str(targets[0]) + ".d")] if os.path.lexists(t)]
        assert left == []
    finally:
        for t in targets:
            if t.exists():
                t.unlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="files of another uid need root")
def test_sweep_removes_what_the_sample_uid_owns(tmp_path: Path) -> None:
    """The fallback without a private /tmp: everything the uid owns in shared directories goes,
    nothing of anyone else's, and symlinks are removed, never followed."""
    uid = UID_BASE + 7
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    keep = shared / "roots-file"
    keep.write_text("x")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data").write_text("x")
    nested = shared / "world-writable"
    nested.mkdir()
    os.chmod(nested, 0o1777)
    made = [shared / "a", shared / "d", shared / "d" / "f", nested / "b", shared / "link"]
    made[0].write_text("x")
    made[1].mkdir()
    made[2].write_text("x")
    made[3].write_text("x")
    made[4].symlink_to(victim)
    for p in made:
        os.lchown(p, uid, uid)
    sweep_uid_files(uid, [str(shared)])
    assert sorted(p.name for p in shared.iterdir()) == ["roots-file", "world-writable"]
    assert list(nested.iterdir()) == [] and (victim / "data").exists() and keep.exists()
