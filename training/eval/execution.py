"""Sandboxed compile-and-run of generated programs, one fresh temporary directory per sample.

A sample is one complete source file (solution + tests) in one of the languages that have a runner
(:data:`RUNNERS`). It passes when the program exits with status 0. Every sample is compiled and run:

- in a fresh temporary directory that is removed afterwards;
- under util-linux wrappers: ``unshare --net`` (a private network namespace with only a down loopback:
  no network at all), ``prlimit`` (CPU seconds, data segment size as the memory limit, file size,
  no core files, process count) and, when we are root, ``setpriv`` to drop to a throw-away uid taken
  from a pool of unused uids. RLIMIT_NPROC does not bind root, so the uid switch is what makes the
  process limit (fork bombs) work; a fresh uid also means ``kill(-1)`` as that uid reaches every
  process the sample started, even ones that left the process group with ``setsid``;
- with a wall-clock limit that kills the whole process group.

Compilers run as the calling user (they do not execute the sample) inside the network namespace with
their own time and memory limits. What could not be enforced on this machine is reported by
:func:`sandbox_info`, never silently assumed. Known gaps: the memory limit is per process (a sample
that forks can use ``nproc`` times the limit), and a sample can write to world-writable directories
such as /tmp (each file is capped by the file-size limit).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cache
from pathlib import Path

__all__ = [
    "CPP_PRELUDE",
    "NODE_PACKAGES",
    "RUNNERS",
    "RUST_CRATES",
    "ExecResult",
    "Executor",
    "Limits",
    "SandboxInfo",
    "Status",
    "Toolchain",
    "available_toolchains",
    "node_packages_dir",
    "run_program",
    "sandbox_info",
]


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"  # the tests ran and an assertion failed
    COMPILE_ERROR = "compile_error"
    TIMEOUT = "timeout"  # wall-clock or CPU limit (compile or run)
    MEMORY = "memory"  # the memory limit was hit
    RUNTIME_ERROR = "runtime_error"  # crash, uncaught exception, output limit, killed by a signal
    TOOLCHAIN_MISSING = "toolchain_missing"  # not a verdict on the sample: nothing was run
    SANDBOX_ERROR = "sandbox_error"  # the executor itself failed


@dataclass(frozen=True)
class Limits:
    wall_s: float = 20.0
    cpu_s: int = 20
    memory_mb: int = 2048  # RLIMIT_DATA of the sample (and JVM/V8 heap sizes derived from it)
    nproc: int = 64  # processes + threads of the sample's uid
    output_mb: int = 16  # RLIMIT_FSIZE: largest file (stdout/stderr included) the sample may write
    compile_wall_s: float = 120.0
    compile_memory_mb: int = 4096
    excerpt_chars: int = 4000  # how much of stdout/stderr a result keeps (head + tail)


@dataclass
class ExecResult:
    language: str
    status: Status
    reason: str = ""  # one line saying why, for reports
    exit_code: int | None = None  # None when killed by a signal or never run
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""  # the run's stderr, or the compiler's output for compile errors
    compile_s: float = 0.0
    run_s: float = 0.0
    cpu_s: float = 0.0  # user + system CPU of the sample's main process (and children it waited for)
    max_rss_mb: float = 0.0
    notes: tuple[str, ...] = ()  # e.g. "no tests ran" when the harness says so

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED


@dataclass(frozen=True)
class Toolchain:
    language: str
    available: bool  # compiler / interpreter present and usable by the sandbox
    version: str = ""
    missing: tuple[str, ...] = ()  # what is absent (with the package that provides it)
    extras_missing: tuple[str, ...] = ()  # optional parts (libraries some benchmark programs need)

    @property
    def ready(self) -> bool:
        return self.available and not self.extras_missing


@dataclass(frozen=True)
class SandboxInfo:
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


def _is_root() -> bool:
    return os.geteuid() == 0


@cache
def _which(name: str) -> str | None:
    return shutil.which(name)


def _others_can_execute(path: str) -> bool:
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
    unshare = _which("unshare")
    if unshare is None:
        return [], "NOT isolated: `unshare` (util-linux) is missing"
    variants = [[unshare, "--net", "--"]] if _is_root() else []
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


@cache
def _uid_switch_ok() -> bool:
    setpriv = _which("setpriv")
    if not _is_root() or setpriv is None:
        return False
    uid = _UID_BASE + 1
    cmd = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--", "true"]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def sandbox_info() -> SandboxInfo:
    """What isolation the executor gets on this machine (probed once, cached)."""
    _, network = _probe_unshare()
    notes = ["memory is limited per process (RLIMIT_DATA): a sample that forks may use up to nproc times as much",
             "samples can write to world-writable directories (/tmp, /dev/shm); each file is capped at output_mb"]
    if _which("prlimit") is None:
        raise RuntimeError("`prlimit` (util-linux) is missing: the executor cannot apply resource limits")
    if _uid_switch_ok():
        user = f"a throw-away uid per sample from [{_UID_BASE}, {_UID_BASE + _UID_COUNT}) (dropped from root with setpriv)"
        procs = "RLIMIT_NPROC per sample uid; leftovers killed with kill(-1) as that uid"
    elif _is_root():
        user = "root (setpriv missing or refused: NOT isolated from the host's files)"
        procs = "NOT limited: RLIMIT_NPROC does not apply to root"
    else:
        user = f"the current user (uid {os.getuid()}); samples can read and write this user's files"
        procs = "RLIMIT_NPROC shared with this user's other processes; escaped processes are not tracked"
    return SandboxInfo(user=user, network_isolated=bool(_probe_unshare()[0]), network=network,
                       process_limit=procs, memory_limit="RLIMIT_DATA per process + JVM/V8 heap caps",
                       notes=tuple(notes))


# --------------------------------------------------------------------------------------------------
# Throw-away uids

_UID_BASE = int(os.environ.get("MOLE_SANDBOX_UID_BASE", "420000"))
_UID_COUNT = 4096


class _UidPool:
    """Leases uids that no account uses. A lease is an exclusive flock on a file in a root-only
    directory, so concurrent executors (other processes on this machine) never share a uid."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.gettempdir()) / "mole-lsp-sandbox-uids"
        self._dir.mkdir(mode=0o700, exist_ok=True)
        self._lock = threading.Lock()
        self._quarantined: set[int] = set()

    def acquire(self) -> tuple[int, int]:
        start = random.randrange(_UID_COUNT)
        for i in range(_UID_COUNT):
            uid = _UID_BASE + (start + i) % _UID_COUNT
            with self._lock:
                if uid in self._quarantined:
                    continue
            fd = os.open(self._dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT, 0o600)
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
        if not _kill_uid(uid):
            with self._lock:
                self._quarantined.add(uid)  # keep the lock: nobody else may inherit its processes
            return
        os.close(fd)


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
    kill = _which("kill") or "/bin/kill"
    for _ in range(attempts):
        if not _uid_processes(uid, live_only=True):
            return True
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([kill, "-KILL", "-1"], user=uid, group=uid, extra_groups=[],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        time.sleep(0.02)
    return not _uid_processes(uid, live_only=True)


# --------------------------------------------------------------------------------------------------
# Language runners

_EXTRA_BIN_DIRS = ("/usr/local/go/bin", "/usr/lib/go/bin")


@dataclass(frozen=True)
class _Runner:
    language: str
    source: str  # file name of the program
    compile_tools: tuple[str, ...]  # executables the compile step needs (run as the calling user)
    run_tool: str | None  # interpreter the sample runs under (must be reachable by the sandbox uid)
    packages: str  # where to get the toolchain (Debian)
    compile: Callable[[_Ctx], list[str]] | None
    run: Callable[[_Ctx], list[str]]
    env: Callable[[_Ctx], dict[str, str]] = lambda ctx: {}
    compile_env: Callable[[_Ctx], dict[str, str]] = lambda ctx: {}
    version: tuple[str, ...] = ()


@dataclass
class _Ctx:
    workdir: Path
    limits: Limits
    cache_dir: Path
    rust: _RustDeps | None = None
    pch_dir: Path | None = None
    program: str = ""


def _tool(name: str) -> str:
    found = _which(name)
    if found is None:
        for d in _EXTRA_BIN_DIRS:
            if os.access(os.path.join(d, name), os.X_OK):
                return os.path.join(d, name)
        raise FileNotFoundError(name)
    return found


def _interpreter(name: str) -> str | None:
    """The interpreter to run samples with. When samples run under a throw-away uid it must be
    reachable by that uid (a venv's python under /root is not), so look at every PATH entry."""
    candidates = [os.path.join(d, name) for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    candidates += [f"/usr/bin/{name}", f"/usr/local/bin/{name}"]
    usable = [c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)]
    if _uid_switch_ok():
        usable = [c for c in usable if _others_can_execute(c)]
    return usable[0] if usable else None


# Standard headers most C++ test programs start with. A program that begins with exactly this text
# compiles against a precompiled header built once per compiler (parsing these headers is most of
# the compile time of a small program).
CPP_PRELUDE = "".join(f"#include <{h}>\n" for h in (
    "algorithm", "cassert", "climits", "cmath", "cstdio", "cstdlib", "cstring", "deque", "functional",
    "iostream", "list", "map", "numeric", "queue", "set", "sstream", "stack", "string", "unordered_map",
    "unordered_set", "utility", "vector")) + "using namespace std;\n"
_CPP_FLAGS = ("-std=c++17", "-O0", "-w", "-fno-diagnostics-color")
_PCH_NAME = "mole_prelude.h"


def _cpp_compile(ctx: _Ctx) -> list[str]:
    cmd = [_tool("g++"), *_CPP_FLAGS, "-o", "prog", "prog.cpp", "-lm"]
    if ctx.pch_dir is not None:
        cmd[1:1] = ["-I", str(ctx.pch_dir)]
    if re.search(r"#\s*include\s*[<\"]openssl/", ctx.program):
        cmd.append("-lcrypto")
    return cmd


_GOPATH_CANDIDATES = ("/usr/share/gocode",)


def _gopath() -> str | None:
    for p in [os.environ.get("MOLE_GOPATH", ""), *_GOPATH_CANDIDATES]:
        if p and os.path.isdir(p):
            return p
    return None


def _go_compile_env(ctx: _Ctx) -> dict[str, str]:
    env = {"GO111MODULE": "off", "GOCACHE": str(ctx.cache_dir / "go-build"), "GOPROXY": "off",
           "GOFLAGS": "", "GOENV": "off", "CGO_ENABLED": "0", "GOTMPDIR": str(ctx.workdir),
           "GOTOOLCHAIN": "local"}
    gopath = _gopath()
    if gopath:
        env["GOPATH"] = gopath
    return env


def _java_heap_mb(limits: Limits) -> int:
    return max(64, limits.memory_mb // 2)  # the rest covers metaspace, code cache, thread stacks


def _java_run(ctx: _Ctx) -> list[str]:
    return [_interpreter("java") or "java", "-ea", f"-Xmx{_java_heap_mb(ctx.limits)}m",
            "-XX:+UseSerialGC", "-XX:-UsePerfData", "-XX:TieredStopAtLevel=1", "-XX:ErrorFile=/dev/null",
            "-XX:ActiveProcessorCount=1", "-Djava.io.tmpdir=.", "-cp", ".", "Main"]


@cache
def _rustc() -> str:
    """The real compiler binary: rustup's proxy needs the caller's HOME/RUSTUP_HOME, which the compile
    environment does not carry."""
    proxy = _tool("rustc")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        sysroot = subprocess.run([proxy, "--print", "sysroot"], capture_output=True, text=True,
                                 timeout=60).stdout.strip()
        real = os.path.join(sysroot, "bin", "rustc")
        if sysroot and os.access(real, os.X_OK):
            return real
    return proxy


def _rust_compile(ctx: _Ctx) -> list[str]:
    cmd = [_rustc(), "--edition", "2021", "--test", "--cap-lints", "allow", "-C", "debuginfo=0",
           "-o", "prog", "prog.rs"]
    if ctx.rust is not None:
        cmd += ["-L", f"dependency={ctx.rust.deps_dir}"]
        for name, path in sorted(ctx.rust.externs.items()):
            cmd += ["--extern", f"{name}={path}"]
    return cmd


RUNNERS: dict[str, _Runner] = {
    "cpp": _Runner("cpp", "prog.cpp", ("g++",), None, "g++", _cpp_compile, lambda c: ["./prog"],
                   version=("g++", "-dumpfullversion")),
    "go": _Runner("go", "prog_test.go", ("go",), None, "golang-go",
                  lambda c: [_tool("go"), "test", "-c", "-vet=off", "-o", "prog.test", "."],
                  lambda c: ["./prog.test", "-test.v", f"-test.timeout={int(c.limits.wall_s) + 5}s"],
                  env=lambda c: {"GOMAXPROCS": "2"}, compile_env=_go_compile_env, version=("go", "version")),
    "java": _Runner("java", "Main.java", ("javac",), "java", "default-jdk-headless",
                    lambda c: [_tool("javac"), "-encoding", "UTF-8", "-nowarn", "-J-Xmx1g", "-J-XX:+UseSerialGC",
                               "-J-XX:TieredStopAtLevel=1", "-d", ".", "Main.java"],
                    _java_run, version=("javac", "-version")),
    "javascript": _Runner("javascript", "prog.js", (), "node", "nodejs", None,
                          lambda c: [_interpreter("node") or "node",
                                     f"--max-old-space-size={max(64, c.limits.memory_mb // 2)}", "prog.js"],
                          env=lambda c: {"UV_THREADPOOL_SIZE": "2"}, version=("node", "--version")),
    "python": _Runner("python", "prog.py", (), "python3", "python3", None,
                      lambda c: [_interpreter("python3") or "python3", "-I", "-B", "prog.py"],
                      version=("python3", "--version")),
    "rust": _Runner("rust", "prog.rs", ("rustc",), None, "rustc (rustup or Debian)", _rust_compile,
                    lambda c: ["./prog", "--test-threads=1"], env=lambda c: {"RUST_BACKTRACE": "0"},
                    version=("rustc", "--version")),
}


# --------------------------------------------------------------------------------------------------
# Rust crates for benchmark programs (rand, regex, md5), built once per rustc into the cache

RUST_CRATES = ("rand", "regex", "md5")
_CARGO_REGISTRIES = ("/usr/share/cargo/registry",)


@dataclass(frozen=True)
class _RustDeps:
    deps_dir: Path
    externs: dict[str, str]
    versions: dict[str, str]


def _cargo_registry() -> Path | None:
    for p in [os.environ.get("MOLE_CARGO_REGISTRY", ""), *_CARGO_REGISTRIES]:
        if p and os.path.isdir(p):
            return Path(p)
    return None


def _registry_has_crates(registry: Path) -> list[str]:
    names = {re.sub(r"-\d+\.\d+.*$", "", d.name) for d in registry.iterdir()}
    return [c for c in RUST_CRATES if c not in names]


def _build_rust_deps(cache_dir: Path) -> _RustDeps:
    """Compile the crates once with cargo from the Debian sources (a cargo directory source, fully
    offline) and return the rlibs to pass with --extern, so no sample rebuilds them."""
    registry = _cargo_registry()
    if registry is None:
        raise RuntimeError("no cargo registry with crate sources (apt install librust-rand-dev librust-regex-dev "
                           "librust-md5-dev, or set MOLE_CARGO_REGISTRY)")
    missing = _registry_has_crates(registry)
    if missing:
        raise RuntimeError(f"crates missing from {registry}: {', '.join(missing)}")
    cargo, rustc = _tool("cargo"), _rustc()
    rustc_id = subprocess.run([rustc, "-vV"], capture_output=True, text=True, check=True).stdout
    listing = "\n".join(sorted(d.name for d in registry.iterdir()))
    key = hashlib.sha256(f"{rustc_id}\n{registry}\n{listing}".encode()).hexdigest()[:16]
    root = cache_dir / "rust-deps" / key
    manifest = root / "externs.json"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same key
        if manifest.exists():
            data = json.loads(manifest.read_text())
            if all(os.path.exists(p) for p in data["externs"].values()):
                return _RustDeps(Path(data["deps_dir"]), data["externs"], data["versions"])
        (root / "src").mkdir(exist_ok=True)
        (root / "src" / "lib.rs").write_text("")
        deps = "\n".join(f'{c} = "*"' for c in RUST_CRATES)
        (root / "Cargo.toml").write_text(
            f'[package]\nname = "mole_eval_deps"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n{deps}\n')
        (root / ".cargo").mkdir(exist_ok=True)
        (root / ".cargo" / "config.toml").write_text(
            f'[source.crates-io]\nreplace-with = "local"\n\n[source.local]\ndirectory = "{registry}"\n')
        env = {**os.environ, "CARGO_HOME": str(root / "cargo-home"), "CARGO_TARGET_DIR": str(root / "target"),
               "RUSTC": rustc}
        proc = subprocess.run([cargo, "build", "--release", "--offline", "--message-format=json"], cwd=root,
                              env=env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"building the Rust crates failed:\n{proc.stderr[-3000:]}")
        externs: dict[str, str] = {}
        versions: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                msg = json.loads(line)
                if msg.get("reason") != "compiler-artifact" or msg["target"]["name"] not in RUST_CRATES:
                    continue
                rlibs = [f for f in msg["filenames"] if f.endswith(".rlib")]
                if rlibs:
                    externs[msg["target"]["name"]] = rlibs[0]
                    versions[msg["target"]["name"]] = msg["package_id"]
        if set(externs) != set(RUST_CRATES):
            raise RuntimeError(f"cargo did not report rlibs for {sorted(set(RUST_CRATES) - set(externs))}")
        deps_dir = Path(next(iter(externs.values()))).parent
        manifest.write_text(json.dumps({"deps_dir": str(deps_dir), "externs": externs, "versions": versions}))
        return _RustDeps(deps_dir, externs, versions)


# npm packages benchmark programs require (HumanEval-X JavaScript/162 uses js-md5), pinned to the
# release current when the benchmark was written. Installed once from the npm registry into the cache
# and copied into the sample's directory when its program requires them.
NODE_PACKAGES = {"js-md5": "0.7.3"}


def node_packages_dir(cache_dir: Path) -> Path:
    """Where the NODE_PACKAGES install lives: ``<dir>/node_modules/<name>``."""
    spec = sorted(f"{name}@{version}" for name, version in NODE_PACKAGES.items())
    return cache_dir / "node-packages" / hashlib.sha256("\n".join(spec).encode()).hexdigest()[:16]


def _build_node_packages(cache_dir: Path) -> Path:
    spec = sorted(f"{name}@{version}" for name, version in NODE_PACKAGES.items())
    root = node_packages_dir(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    modules = root / "node_modules"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all((modules / name / "package.json").exists() for name in NODE_PACKAGES):
            return modules
        npm = _tool("npm")
        proc = subprocess.run([npm, "install", "--prefix", str(root), "--no-audit", "--no-fund", "--no-save",
                               "--no-package-lock", *spec], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not all((modules / n / "package.json").exists() for n in NODE_PACKAGES):
            raise RuntimeError(f"npm install {' '.join(spec)} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return modules


def _required_node_packages(program: str) -> list[str]:
    return [n for n in NODE_PACKAGES if re.search(rf"require\(\s*['\"`]{re.escape(n)}['\"`]\s*\)", program)]


def _build_cpp_pch(cache_dir: Path) -> Path:
    """Precompile CPP_PRELUDE with the flags samples use; GCC ignores a stale or mismatched .gch and
    parses the header itself, so the result is only ever faster, never different."""
    gxx = _tool("g++")
    ident = subprocess.run([gxx, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(f"{ident}\n{_CPP_FLAGS}\n{CPP_PRELUDE}".encode()).hexdigest()[:16]
    root = cache_dir / "cpp-pch" / key
    root.mkdir(parents=True, exist_ok=True)
    header, gch = root / _PCH_NAME, root / f"{_PCH_NAME}.gch"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not gch.exists():
            header.write_text(CPP_PRELUDE)
            tmp = root / f"{_PCH_NAME}.gch.tmp"
            subprocess.run([gxx, *_CPP_FLAGS, "-x", "c++-header", str(header), "-o", str(tmp)], check=True,
                           capture_output=True, timeout=600)
            os.replace(tmp, gch)
    return root


# --------------------------------------------------------------------------------------------------
# Toolchains


def _default_cache_dir() -> Path:
    env = os.environ.get("MOLE_EVAL_CACHE")
    if env:
        return Path(env)
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("mole-lsp")) / "eval"
    except ImportError:  # pragma: no cover - platformdirs is a project dependency
        return Path.home() / ".cache" / "mole-lsp" / "eval"


@cache
def _version(cmd: tuple[str, ...], run_tool: str | None) -> str:
    exe = _interpreter(run_tool) if run_tool == cmd[0] else _rustc() if cmd[0] == "rustc" else None
    try:
        proc = subprocess.run([exe or _tool(cmd[0]), *cmd[1:]], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if text else ""


def _toolchain(language: str) -> Toolchain:
    runner = RUNNERS[language]
    missing: list[str] = []
    for t in runner.compile_tools:
        try:
            _tool(t)
        except FileNotFoundError:
            missing.append(f"{t} (apt: {runner.packages})")
    if runner.run_tool and _interpreter(runner.run_tool) is None:
        where = " reachable by the sandbox uid" if _uid_switch_ok() and _which(runner.run_tool) else ""
        missing.append(f"{runner.run_tool}{where} (apt: {runner.packages})")
    extras: list[str] = []
    if language == "cpp" and not missing:
        if not os.path.exists("/usr/include/boost/any.hpp"):
            extras.append("boost headers (apt: libboost-dev)")
        if not os.path.exists("/usr/include/openssl/md5.h"):
            extras.append("OpenSSL headers (apt: libssl-dev)")
    if language == "javascript" and not missing and _which("npm") is None:
        extras.append(f"npm (to install {', '.join(NODE_PACKAGES)}; apt: npm)")
    if language == "go" and not missing:
        gopath = _gopath()
        if gopath is None or not os.path.isdir(os.path.join(gopath, "src/github.com/stretchr/testify")):
            extras.append("testify (apt: golang-github-stretchr-testify-dev)")
    if language == "rust" and not missing:
        registry = _cargo_registry()
        if _which("cargo") is None:
            extras.append("cargo (to build rand/regex/md5)")
        if registry is None:
            extras.append("crates rand, regex, md5 (apt: librust-rand-dev librust-regex-dev librust-md5-dev)")
        else:
            extras += [f"crate {c} (apt: librust-{c}-dev)" for c in _registry_has_crates(registry)]
    version = _version(runner.version, runner.run_tool) if not missing and runner.version else ""
    return Toolchain(language, not missing, version, tuple(missing), tuple(extras))


def available_toolchains(languages: Iterable[str] | None = None) -> dict[str, Toolchain]:
    """Which runners can work here, what is missing and where to get it (cheap: no compilation)."""
    langs = list(RUNNERS) if languages is None else list(languages)
    unknown = [lang for lang in langs if lang not in RUNNERS]
    if unknown:
        raise ValueError(f"no runner for {unknown}; runners exist for {sorted(RUNNERS)}")
    return {lang: _toolchain(lang) for lang in langs}


# --------------------------------------------------------------------------------------------------
# Running one process under the limits


@dataclass
class _Proc:
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


def _base_env(workdir: Path) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _spawn(argv: Sequence[str], *, cwd: Path, env: dict[str, str], wall_s: float, cpu_s: int, data_mb: int,
           fsize_mb: int, nproc: int | None, uid: int | None, tag: str, excerpt: int) -> _Proc:
    prefix, _ = _probe_unshare()
    cmd = list(prefix)
    cmd += [_tool("prlimit"), f"--cpu={cpu_s}:{cpu_s + 1}", f"--data={data_mb << 20}",
            f"--fsize={fsize_mb << 20}", "--core=0"]
    if nproc is not None:
        cmd.append(f"--nproc={nproc}")
    cmd.append("--")
    if uid is not None:
        cmd += [_tool("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--"]
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
    return _Proc(exit_code=code if code >= 0 else None, signal=-code if code < 0 else None,
                 timed_out=timed_out.is_set(), wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime,
                 max_rss_mb=usage.ru_maxrss / 1024, stdout=_excerpt(out_path, excerpt),
                 stderr=_excerpt(err_path, excerpt))


# --------------------------------------------------------------------------------------------------
# Verdicts

_MEMORY_MARKERS = {
    "python": ("MemoryError",),
    "cpp": ("std::bad_alloc",),
    "java": ("java.lang.OutOfMemoryError", "Native memory allocation", "Cannot allocate memory"),
    "javascript": ("heap out of memory", "Fatal process out of memory", "Fatal JavaScript invalid size"),
    "go": ("runtime: out of memory", "cannot allocate memory"),
    "rust": ("memory allocation of",),
}
_FAILURE_MARKERS = {
    "python": ("AssertionError",),
    "cpp": ("Assertion `",),
    "java": ("java.lang.AssertionError",),
    "javascript": ("AssertionError",),
    "go": ("--- FAIL",),
    "rust": ("assertion failed", "assertion `left", "assertion left"),
}


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _first_error_line(text: str) -> str:
    for ln in text.splitlines():
        if re.search(r"\berror\b", ln, re.IGNORECASE):
            return ln.strip()[:200]
    return _last_line(text)


def _classify_run(language: str, p: _Proc, limits: Limits, source: str = "") -> tuple[Status, str]:
    both = p.stdout + "\n" + p.stderr
    if p.timed_out:
        return Status.TIMEOUT, f"wall-clock limit ({limits.wall_s:g} s)"
    if p.signal == signal.SIGXCPU or (p.signal == signal.SIGKILL and p.cpu_s >= limits.cpu_s):
        return Status.TIMEOUT, f"CPU time limit ({limits.cpu_s} s)"
    hit = next((m for m in _MEMORY_MARKERS.get(language, ()) if m in both), None)
    if hit is not None:
        return Status.MEMORY, f"memory limit ({limits.memory_mb} MB): {_first_line_with(both, hit)}"
    if p.exit_code == 0:
        return Status.PASSED, ""
    if p.signal == signal.SIGXFSZ or "File too large" in both:  # Python ignores SIGXFSZ: EFBIG instead
        return Status.RUNTIME_ERROR, f"output limit ({limits.output_mb} MB)"
    if language == "go" and "panic:" in both:
        return Status.RUNTIME_ERROR, _first_line_with(both, "panic:")
    if language == "rust" and "panicked at" in both and not any(m in both for m in _FAILURE_MARKERS["rust"]):
        return Status.RUNTIME_ERROR, _first_line_with(both, "panicked at")
    if any(m in both for m in _FAILURE_MARKERS.get(language, ())):
        return Status.FAILED, _failure_reason(language, both, source)
    how = f"signal {signal.Signals(p.signal).name}" if p.signal else f"exit code {p.exit_code}"
    return Status.RUNTIME_ERROR, f"{how}: {_last_line(p.stderr) or _last_line(p.stdout)}"


def _first_line_with(text: str, needle: str) -> str:
    for ln in text.splitlines():
        if needle in ln:
            return ln.strip()[:200]
    return ""


# Where a failing assertion is, in the output of each language's runtime (file names as written here).
_LOCATION = {
    "python": re.compile(r'File "[^"]*prog\.py", line (\d+)'),
    "javascript": re.compile(r"^\s*at (?!console\.assert\b).*?prog\.js:(\d+):\d+", re.M),
    "java": re.compile(r"Main\.java:(\d+)"),
    "go": re.compile(r"prog_test\.go:(\d+)"),
    "rust": re.compile(r"prog\.rs:(\d+):\d+"),
    "cpp": re.compile(r"prog\.cpp:(\d+):"),
}


def _failure_reason(language: str, text: str, source: str) -> str:
    """Quote the failing test line of the source when the runtime says where it is."""
    found = list(_LOCATION[language].finditer(text))
    if found:
        n = int((found[-1] if language == "python" else found[0]).group(1))
        lines = source.splitlines()
        if 0 < n <= len(lines) and lines[n - 1].strip():
            return f"test failed at line {n}: {lines[n - 1].strip()[:160]}"
    for m in _FAILURE_MARKERS[language]:
        line = _first_line_with(text, m)
        if line:
            return f"test failed: {line}"
    return "test failed"


def _test_count_notes(language: str, p: _Proc) -> tuple[str, ...]:
    text = p.stdout + p.stderr
    if language == "rust":
        counts = [int(n) for n in re.findall(r"running (\d+) tests?", text)]
        if counts and sum(counts) == 0:
            return ("no tests ran",)
    if language == "go" and "no tests to run" in text:
        return ("no tests ran",)
    return ()


# --------------------------------------------------------------------------------------------------
# The executor


class Executor:
    """Runs samples in sandboxes, one temporary directory each, ``workers`` at a time."""

    def __init__(self, limits: Limits | None = None, *, workers: int = 1, cache_dir: Path | None = None,
                 switch_user: bool = True) -> None:
        self.limits = limits or Limits()
        self.workers = max(1, workers)
        self.cache_dir = Path(cache_dir) if cache_dir else _default_cache_dir()
        self.info = sandbox_info()
        self._pool = _UidPool() if switch_user and _uid_switch_ok() else None
        self._rust: _RustDeps | None = None
        self._rust_error: str | None = None
        self._rust_lock = threading.Lock()
        self._node: Path | None = None
        self._node_error: str | None = None
        self._node_lock = threading.Lock()
        self._pch: Path | None = None
        self._pch_failed = False
        self._pch_lock = threading.Lock()
        self._toolchains: dict[str, Toolchain] = {}
        self._tc_lock = threading.Lock()

    # -- toolchains -------------------------------------------------------------------------------

    def toolchain(self, language: str) -> Toolchain:
        with self._tc_lock:
            if language not in self._toolchains:
                self._toolchains[language] = available_toolchains([language])[language]
            return self._toolchains[language]

    def prepare(self, languages: Iterable[str]) -> dict[str, Toolchain]:
        """Check the toolchains and do the one-time work (the Rust crates) up front, so that a missing
        piece is reported before any sample runs instead of as a wall of failures."""
        out = {}
        for lang in languages:
            tc = self.toolchain(lang)
            error = None
            if lang == "rust" and tc.ready:
                self._rust_deps()
                error = self._rust_error
            if lang == "javascript" and tc.ready:
                self._node_modules()
                error = self._node_error
            if error:
                tc = replace(tc, extras_missing=(*tc.extras_missing, error))
                with self._tc_lock:
                    self._toolchains[lang] = tc
            out[lang] = tc
        return out

    def _rust_deps(self) -> _RustDeps | None:
        with self._rust_lock:
            if self._rust is None and self._rust_error is None:
                try:
                    self.cache_dir.mkdir(parents=True, exist_ok=True)
                    self._rust = _build_rust_deps(self.cache_dir)
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    self._rust_error = f"Rust crates unavailable: {str(e).strip().splitlines()[0]}"
            return self._rust

    def _node_modules(self) -> Path | None:
        with self._node_lock:
            if self._node is None and self._node_error is None:
                try:
                    self._node = _build_node_packages(self.cache_dir)
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    self._node_error = f"npm packages unavailable: {str(e).strip().splitlines()[0]}"
            return self._node

    def _cpp_pch(self) -> Path | None:
        with self._pch_lock:
            if self._pch is None and not self._pch_failed:
                try:
                    self._pch = _build_cpp_pch(self.cache_dir)
                except (OSError, subprocess.SubprocessError):
                    self._pch_failed = True  # compile without it
            return self._pch

    # -- running ----------------------------------------------------------------------------------

    def run(self, language: str, program: str, limits: Limits | None = None) -> ExecResult:
        limits = limits or self.limits
        if language not in RUNNERS:
            return ExecResult(language, Status.TOOLCHAIN_MISSING, f"no runner for language {language!r}")
        tc = self.toolchain(language)
        if not tc.available:
            return ExecResult(language, Status.TOOLCHAIN_MISSING, "missing: " + "; ".join(tc.missing))
        try:
            return self._run(RUNNERS[language], program, limits)
        except Exception as e:  # noqa: BLE001 - a broken sandbox must not look like a failed sample
            return ExecResult(language, Status.SANDBOX_ERROR, f"{type(e).__name__}: {e}")

    def run_many(self, jobs: Iterable[tuple[str, str]], *,
                 on_result: Callable[[int, ExecResult], None] | None = None) -> list[ExecResult]:
        """Run ``(language, program)`` jobs in parallel; results come back in job order."""
        jobs = list(jobs)
        results: list[ExecResult | None] = [None] * len(jobs)

        def work(i: int) -> None:
            results[i] = self.run(*jobs[i])
            if on_result is not None:
                on_result(i, results[i])

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for fut in [pool.submit(work, i) for i in range(len(jobs))]:
                fut.result()
        return [r for r in results if r is not None]

    def _run(self, runner: _Runner, program: str, limits: Limits) -> ExecResult:
        lang = runner.language
        base = os.environ.get("MOLE_EXEC_TMPDIR") or None
        workdir = Path(tempfile.mkdtemp(prefix=f"mole-{lang}-", dir=base))
        lease = None
        try:
            os.chmod(workdir, 0o700)
            ctx = _Ctx(workdir, limits, self.cache_dir, program=program)
            source = program
            if lang == "cpp" and program.startswith(CPP_PRELUDE):
                ctx.pch_dir = self._cpp_pch()
                if ctx.pch_dir is not None:
                    source = f'#include "{_PCH_NAME}"\n' + program[len(CPP_PRELUDE):]
            src = workdir / runner.source
            src.write_text(source, encoding="utf-8")
            os.chmod(src, 0o644)
            wanted = _required_node_packages(program) if lang == "javascript" else []
            modules = self._node_modules() if wanted else None
            for name in wanted if modules is not None else []:
                # A copy, not a link: the sandbox uid cannot traverse the (private) cache directory.
                shutil.copytree(modules / name, workdir / "node_modules" / name)
            if lang == "rust" and re.search(rf"\b(?:{'|'.join(RUST_CRATES)})\b", program):
                ctx.rust = self._rust_deps()  # built once; programs that use no crate do not wait for it
            compile_s = 0.0
            if runner.compile is not None:
                if lang == "go":
                    (self.cache_dir / "go-build").mkdir(parents=True, exist_ok=True)
                env = {**_base_env(workdir), **runner.compile_env(ctx)}
                if lang == "rust":  # rustc runs the system linker (cc) found on PATH
                    env["PATH"] = f"{os.path.dirname(_rustc())}:{env['PATH']}"
                c = _spawn(runner.compile(ctx), cwd=workdir, env=env, wall_s=limits.compile_wall_s,
                           cpu_s=int(limits.compile_wall_s), data_mb=limits.compile_memory_mb,
                           fsize_mb=max(256, limits.output_mb), nproc=None, uid=None, tag="compile",
                           excerpt=limits.excerpt_chars)
                compile_s = c.wall_s
                if c.timed_out or c.signal in (signal.SIGXCPU, signal.SIGKILL):
                    return ExecResult(lang, Status.TIMEOUT, f"compilation exceeded {limits.compile_wall_s:g} s",
                                      compile_s=compile_s, stderr=c.stderr + c.stdout)
                if c.exit_code != 0:
                    out = (c.stderr + c.stdout).strip()
                    reason = _first_error_line(out)
                    if lang == "rust" and self._rust_error:
                        reason += f" ({self._rust_error})"
                    return ExecResult(lang, Status.COMPILE_ERROR, reason, exit_code=c.exit_code,
                                      signal=c.signal, stderr=out, compile_s=compile_s)
            uid = None
            if self._pool is not None:
                lease = self._pool.acquire()
                uid = lease[0]
                os.chown(workdir, uid, uid)
            env = {**_base_env(workdir), **runner.env(ctx)}
            p = _spawn(runner.run(ctx), cwd=workdir, env=env, wall_s=limits.wall_s, cpu_s=limits.cpu_s,
                       data_mb=limits.memory_mb, fsize_mb=limits.output_mb, nproc=self._nproc(limits),
                       uid=uid, tag="run", excerpt=limits.excerpt_chars)
            status, reason = _classify_run(lang, p, limits, source)
            return ExecResult(lang, status, reason, exit_code=p.exit_code, signal=p.signal, stdout=p.stdout,
                              stderr=p.stderr, compile_s=compile_s, run_s=p.wall_s, cpu_s=p.cpu_s,
                              max_rss_mb=p.max_rss_mb, notes=_test_count_notes(lang, p))
        finally:
            if lease is not None:
                self._pool.release(*lease)  # type: ignore[union-attr]
            shutil.rmtree(workdir, ignore_errors=True)

    def _nproc(self, limits: Limits) -> int | None:
        if self._pool is not None:
            return limits.nproc
        if _is_root():
            return None  # would not bind root anyway
        # Shared with every other process of this user: leave room for what already runs.
        return _user_task_count(os.getuid()) + limits.nproc * self.workers + 64


def _user_task_count(uid: int) -> int:
    n = 0
    for pid in _uid_processes(uid):
        with contextlib.suppress(OSError):
            n += len(os.listdir(f"/proc/{pid}/task"))
    return n


_DEFAULT: Executor | None = None
_DEFAULT_LOCK = threading.Lock()


def run_program(language: str, program: str, limits: Limits | None = None) -> ExecResult:
    """Run one program with a shared default executor (convenience for scripts and tests)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Executor()
    return _DEFAULT.run(language, program, limits)

