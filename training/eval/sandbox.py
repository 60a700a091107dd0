"""The sandbox: runs one command under resource limits, network isolation and a throw-away uid.

Every command runs under util-linux wrappers: ``unshare --net`` (a private network namespace with only
a down loopback: no network at all), ``prlimit`` (CPU seconds, data segment size as the memory limit,
file size, no core files, process count) and, when we are root, ``setpriv`` to drop to a throw-away
uid taken from a pool of unused uids. RLIMIT_NPROC does not bind root, so the uid switch is what makes
the process limit (fork bombs) work; a fresh uid also means ``kill(-1)`` as that uid reaches every
process the sample started, even ones that left the process group with ``setsid``. A wall-clock
limit kills the whole process group.

What could not be enforced on this machine is reported by :func:`sandbox_info`, never silently
assumed. Known gaps: the memory limit is per process (a sample that forks can use ``nproc`` times the
limit).

Files a sample writes outside its directory do not outlive its run: where mount namespaces work, the
run gets private tmpfs mounts over the shared writable directories (/tmp, /var/tmp, /dev/shm,
/run/lock), with its own directory bound back in; elsewhere, what the throw-away uid owns there is
swept when its lease ends.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from training.eval.uids import UID_BASE, UID_COUNT

__all__ = [
    "UID_BASE",
    "UID_COUNT",
    "Limits",
    "Proc",
    "SandboxInfo",
    "base_env",
    "is_root",
    "others_can_execute",
    "sandbox_info",
    "private_tmp_ok",
    "spawn",
    "uid_switch_ok",
    "which",
]

# World-writable directories a sample could leave files in: private per run, or swept afterwards.
SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")

# Runs first in the run's mount namespace (as root there): $0 the sample's directory (the cwd), $1
# the size cap in MB, then the command. unshare --mount makes every mount private to the namespace,
# so the tmpfs mounts vanish with the run. The sample's directory, hidden by the new /tmp, is bound
# back from the cwd (--no-canonicalize: /proc/self/cwd must not be resolved by path).
_PRIVATE_TMP = f"""set -e
for d in {' '.join(SHARED_DIRS)}; do
  if [ -d "$d" ] && [ ! -L "$d" ]; then mount -t tmpfs -o "size=${{1}}m,mode=1777,nosuid,nodev" tmpfs "$d"; fi
done
mkdir -p "$0"
mount --no-canonicalize --bind /proc/self/cwd "$0"
cd "$0"
shift
exec "$@"
"""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sample (run) and of its compile step."""

    wall_s: float = 20.0
    cpu_s: int = 20
    memory_mb: int = 2048  # RLIMIT_DATA of the sample (and JVM/V8 heap sizes derived from it)
    nproc: int = 64  # processes + threads of the sample's uid
    output_mb: int = 16  # RLIMIT_FSIZE: largest file (stdout/stderr included) the sample may write
    compile_wall_s: float = 120.0
    compile_memory_mb: int = 4096
    excerpt_chars: int = 4000  # how much of stdout/stderr a result keeps (head + tail)


@dataclass(frozen=True)
class SandboxInfo:
    """What isolation samples get on this machine, in words for reports."""

    user: str
    network_isolated: bool
    network: str
    process_limit: str
    memory_limit: str
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        out = [f"user: {self.user}", f"network: {self.network}", f"processes: {self.process_limit}",
               f"memory: {self.memory_limit}"]
        out += [f"note: {n}" for n in self.notes]
        return out


# --------------------------------------------------------------------------------------------------
# Host probing


def is_root() -> bool:
    return os.geteuid() == 0


@cache
def which(name: str) -> str | None:
    """``shutil.which``, cached (tools do not come and go while evaluating)."""
    return shutil.which(name)


def others_can_execute(path: str) -> bool:
    """True if a uid with no groups in common with the owner can run ``path`` (every parent must be
    searchable), i.e. the sandbox uid can use an interpreter installed there."""
    real = Path(os.path.realpath(path))
    try:
        if not real.stat().st_mode & stat.S_IXOTH:
            return False
        return all(p.stat().st_mode & stat.S_IXOTH for p in real.parents)
    except OSError:
        return False


@cache
def _probe_unshare() -> tuple[list[str], str]:
    """The command prefix that gives a private network namespace here, and a description."""
    unshare = which("unshare")
    if unshare is None:
        return [], "NOT isolated: `unshare` (util-linux) is missing"
    variants = [[unshare, "--net", "--"]] if is_root() else []
    variants.append([unshare, "--user", "--map-root-user", "--net", "--"])
    for prefix in variants:
        try:
            ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            how = "user + network namespace" if "--user" in prefix else "network namespace"
            return prefix, f"isolated: private {how} (loopback down, no interfaces)"
    return [], "NOT isolated: creating a network namespace is not permitted here"


def _private_tmp_prefix(workdir: Path, size_mb: int) -> list[str]:
    prefix, _ = _probe_unshare()
    return [prefix[0], "--mount", *prefix[1:], which("sh") or "/bin/sh", "-c", _PRIVATE_TMP, str(workdir),
            str(size_mb)]


@cache
def private_tmp_ok() -> bool:
    """Whether runs get private tmpfs mounts over SHARED_DIRS here (mount namespaces permitted): probed
    by writing to /tmp inside one and checking that nothing appears outside."""
    if not _probe_unshare()[0] or which("mount") is None:
        return False
    leak = Path("/tmp") / f"mole-probe-{os.getpid()}-{random.randrange(1 << 30)}"
    with tempfile.TemporaryDirectory(prefix="mole-probe-") as d:
        Path(d, "marker").write_text("")
        script = f'test -e "{d}/marker" && touch {leak}'
        cmd = [*_private_tmp_prefix(Path(d), 1), which("sh") or "/bin/sh", "-c", script]
        try:
            ok = subprocess.run(cmd, cwd=d, capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
    if leak.exists():
        leak.unlink()
        return False
    return ok


@cache
def uid_switch_ok() -> bool:
    """Whether samples can run under throw-away uids here (root with a working ``setpriv``)."""
    setpriv = which("setpriv")
    if not is_root() or setpriv is None:
        return False
    uid = UID_BASE + 1
    cmd = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--", "true"]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def sandbox_info() -> SandboxInfo:
    """What isolation the executor gets on this machine (probed once, cached)."""
    _, network = _probe_unshare()
    notes = ["memory is limited per process (RLIMIT_DATA): a sample that forks may use up to nproc times as much"]
    if private_tmp_ok():
        notes.append(f"each run gets private tmpfs mounts over {', '.join(SHARED_DIRS)} (output_mb each)")
    elif uid_switch_ok():
        notes.append(f"files a sample's uid leaves in {', '.join(SHARED_DIRS)} are swept after its run")
    else:
        notes.append("samples can write to world-writable directories (/tmp, /dev/shm) and those files stay; "
                     "each file is capped at output_mb")
    if which("prlimit") is None:
        raise RuntimeError("`prlimit` (util-linux) is missing: the executor cannot apply resource limits")
    if uid_switch_ok():
        user = f"a throw-away uid per sample from [{UID_BASE}, {UID_BASE + UID_COUNT}) (dropped from root with setpriv)"
        procs = "RLIMIT_NPROC per sample uid; leftovers killed with kill(-1) as that uid"
    elif is_root():
        user = "root (setpriv missing or refused: NOT isolated from the host's files)"
        procs = "NOT limited: RLIMIT_NPROC does not apply to root"
    else:
        user = f"the current user (uid {os.getuid()}); samples can read and write this user's files"
        procs = "RLIMIT_NPROC shared with this user's other processes; escaped processes are not tracked"
    return SandboxInfo(user=user, network_isolated=bool(_probe_unshare()[0]), network=network,
                       process_limit=procs, memory_limit="RLIMIT_DATA per process + JVM/V8 heap caps",
                       notes=tuple(notes))


# --------------------------------------------------------------------------------------------------
# Running one process under the limits


@dataclass
class Proc:
    """How one sandboxed process ended."""

    exit_code: int | None
    signal: int | None
    timed_out: bool
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    stdout: str
    stderr: str


def _excerpt(path: Path, limit: int) -> str:
    """Head and tail of a possibly huge file: compilers put the first error first, crashes put the
    reason last."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size <= limit:
                return f.read().decode("utf-8", "replace")
            head = f.read(limit // 2).decode("utf-8", "replace")
            f.seek(size - limit // 2)
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return f"{head}\n[... {size - limit} bytes skipped ...]\n{tail}"


def base_env(workdir: Path) -> dict[str, str]:
    """The environment every sandboxed command starts from (nothing of the caller's)."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def spawn(argv: Sequence[str], *, cwd: Path, env: dict[str, str], wall_s: float, cpu_s: int, data_mb: int,
          fsize_mb: int, nproc: int | None, uid: int | None, tag: str, excerpt: int,
          private_tmp: bool = False) -> Proc:
    """Run ``argv`` in ``cwd`` under the limits (``uid``: as that uid; ``tag`` names its output files;
    ``private_tmp``: with private tmpfs mounts over SHARED_DIRS of ``fsize_mb`` each, where possible)."""
    prlimit, setpriv = which("prlimit"), which("setpriv")
    if prlimit is None:
        raise FileNotFoundError("prlimit")
    prefix, _ = _probe_unshare()
    cmd = _private_tmp_prefix(cwd, max(1, fsize_mb)) if private_tmp and private_tmp_ok() else list(prefix)
    cmd += [prlimit, f"--cpu={cpu_s}:{cpu_s + 1}", f"--data={data_mb << 20}", f"--fsize={fsize_mb << 20}", "--core=0"]
    if nproc is not None:
        cmd.append(f"--nproc={nproc}")
    cmd.append("--")
    if uid is not None:
        if setpriv is None:
            raise FileNotFoundError("setpriv")
        cmd += [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--"]
    cmd += list(argv)
    out_path, err_path = cwd / f".{tag}.out", cwd / f".{tag}.err"
    timed_out = threading.Event()
    start = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, close_fds=True)

    def on_deadline() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(wall_s, on_deadline)
    timer.daemon = True
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # background children left in the group
    code = proc.returncode
    return Proc(exit_code=code if code >= 0 else None, signal=-code if code < 0 else None,
                timed_out=timed_out.is_set(), wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime,
                max_rss_mb=usage.ru_maxrss / 1024, stdout=_excerpt(out_path, excerpt),
                stderr=_excerpt(err_path, excerpt))
