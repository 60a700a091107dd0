"""Throw-away uids for samples: leases on uids no account uses, and cleaning up after one.

A lease is an exclusive flock on a lock file in a private directory, so concurrent executors (other
processes on this machine) never share a uid. When a lease ends, every process of the uid is killed
(``kill(-1)`` as that uid, which a fork bomb cannot outrun) and, where runs have no private /tmp, the
files it left in shared writable directories are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["UID_BASE", "UID_COUNT", "UidPool", "private_directory", "sweep_uid_files", "user_task_count"]

# The throw-away uids: [UID_BASE, UID_BASE + UID_COUNT), chosen to be unused by any account.
UID_BASE = int(os.environ.get("MOLE_SANDBOX_UID_BASE", "420000"))
UID_COUNT = 4096


def private_directory(path: Path) -> int:
    """An O_DIRECTORY descriptor of ``path``, created 0700 if absent, after checking that it is a real
    directory (not a symlink) owned by us and closed to everyone else. In a shared directory such as
    /tmp another local user may have created it first to plant symlinks: refuse it then."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise RuntimeError(f"refusing {path}: not a plain directory ({e.strerror})") from e
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        os.close(fd)
        raise RuntimeError(f"refusing {path}: owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):o} "
                           f"(must be uid {os.geteuid()}, mode 700); remove it or set MOLE_SANDBOX_LOCK_DIR")
    return fd


class UidPool:
    """Leases uids that no account uses. A lease is an exclusive flock on a file in a private
    directory (ours, mode 0700), so concurrent executors (other processes on this machine) never
    share a uid."""

    def __init__(self, directory: Path | None = None, *, sweep_dirs: Sequence[str] = ()) -> None:
        default = Path(tempfile.gettempdir()) / "mole-lsp-sandbox-uids"
        self._dir = directory or Path(os.environ.get("MOLE_SANDBOX_LOCK_DIR") or default)
        self._dir_fd = private_directory(self._dir)  # lock files are opened relative to the checked directory
        self._lock = threading.Lock()
        self._quarantined: set[int] = set()
        self._sweep_dirs = tuple(sweep_dirs)

    def acquire(self) -> tuple[int, int]:
        """A free uid and the descriptor holding its lease."""
        start = random.randrange(UID_COUNT)
        for i in range(UID_COUNT):
            uid = UID_BASE + (start + i) % UID_COUNT
            with self._lock:
                if uid in self._quarantined:
                    continue
            try:
                fd = os.open(f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=self._dir_fd)
            except OSError:  # not a plain file (a planted symlink): never follow it, take another uid
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            if _uid_processes(uid):  # leftovers (a crashed run, zombies not yet reaped): take another
                _kill_uid(uid)
                os.close(fd)
                continue
            return uid, fd
        raise RuntimeError("no free sandbox uid")

    def release(self, uid: int, fd: int) -> None:
        """Kill what the uid left running, remove the files it left in ``sweep_dirs`` (shared writable
        directories, where runs have no private ones), and give the lease back."""
        if not _kill_uid(uid):
            with self._lock:
                self._quarantined.add(uid)  # keep the lock: nobody else may inherit its processes
            return
        sweep_uid_files(uid, self._sweep_dirs)
        os.close(fd)


def sweep_uid_files(uid: int, dirs: Sequence[str], depth: int = 3) -> None:
    """Remove what ``uid`` owns in ``dirs`` and in the world-writable folders below them (where it could
    write), never following a symlink. Run once the uid has no process left (nothing races it)."""
    for d in dirs:
        with contextlib.suppress(OSError), os.scandir(d) as entries:
            for e in list(entries):
                with contextlib.suppress(OSError):
                    st = e.stat(follow_symlinks=False)
                    if st.st_uid == uid:
                        if stat.S_ISDIR(st.st_mode):
                            shutil.rmtree(e.path, ignore_errors=True)  # fd-based: safe against symlinks
                        else:
                            os.unlink(e.path)
                    elif stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_IWOTH and depth > 1:
                        sweep_uid_files(uid, [e.path], depth - 1)


def _uid_processes(uid: int, *, live_only: bool = False) -> list[int]:
    """Processes of ``uid`` (``live_only``: not counting zombies, which only wait to be reaped)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                if live_only:
                    with open(f"/proc/{entry}/stat", "rb") as f:
                        if f.read().rpartition(b")")[2].split()[0] in (b"Z", b"X"):
                            continue
                pids.append(int(entry))
    return pids


def _kill_uid(uid: int, attempts: int = 100) -> bool:
    """SIGKILL every process of ``uid``. kill(-1) issued as that uid is atomic with respect to fork,
    so a fork bomb cannot outrun it. True when no live process is left; the killed ones may stay
    zombies for a moment, until init reaps them (the pool does not lease a uid before that)."""
    kill = shutil.which("kill") or "/bin/kill"
    for _ in range(attempts):
        if not _uid_processes(uid, live_only=True):
            return True
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([kill, "-KILL", "-1"], user=uid, group=uid, extra_groups=[],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        time.sleep(0.02)
    return not _uid_processes(uid, live_only=True)


def user_task_count(uid: int) -> int:
    """Threads of every process of ``uid`` (what RLIMIT_NPROC counts)."""
    n = 0
    for pid in _uid_processes(uid):
        with contextlib.suppress(OSError):
            n += len(os.listdir(f"/proc/{pid}/task"))
    return n
