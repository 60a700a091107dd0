"""The sandboxed executor on handmade programs, with the real compilers and interpreters.

Every language test skips when its toolchain is not installed. Containment tests (fork bomb, network)
skip where this machine cannot provide the isolation, which `sandbox_info` reports.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from mole_lsp.lang.plugins import plugin
from mole_lsp.lang.plugins.execution import NpmPackages
from training.eval import sandbox
from training.eval.executor import Executor
from training.eval.libraries import npm_packages_dir
from training.eval.sandbox import Limits, sandbox_info
from training.eval.toolchains import available_toolchains, runner_languages
from training.eval.verdicts import Status

TOOLCHAINS = available_toolchains()

# Generous wall time for programs that should pass (a shared 2-core machine may be busy), short ones
# where a limit is the point.
OK = Limits(wall_s=60, cpu_s=30, memory_mb=1024, compile_wall_s=300)
SHORT = Limits(wall_s=3, cpu_s=2, memory_mb=512, compile_wall_s=300)
MEM = Limits(wall_s=40, cpu_s=20, memory_mb=512, compile_wall_s=300)


def needs(lang: str) -> None:
    tc = TOOLCHAINS[lang]
    if not tc.available:
        pytest.skip(f"{lang} toolchain missing: {'; '.join(tc.missing)}")


@pytest.fixture(scope="module")
def executor() -> Executor:
    return Executor(OK, workers=2)


# Per language: (passing test program, failing test program, infinite loop, memory bomb).
PROGRAMS: dict[str, tuple[str, str, str, str]] = {
    "python": (
        "def twice(x):\n    return 2 * x\n\nassert twice(21) == 42\n",
        "def twice(x):\n    return x + 1\n\nassert twice(21) == 42\n",
        "while True:\n    pass\n",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(50_000_000))\n",
    ),
    "javascript": (
        "const twice = (x) => 2 * x;\nif (twice(21) !== 42) { throw new Error('AssertionError'); }\n",
        "const assert = require('assert');\nconst twice = (x) => x + 1;\nassert.strictEqual(twice(21), 42);\n",
        "for (;;) {}\n",
        "const a = [];\nfor (;;) { a.push(new Array(1e6).fill(1.5)); }\n",
    ),
    "cpp": (
        "#include <cassert>\nint twice(int x) { return 2 * x; }\nint main() { assert(twice(21) == 42); }\n",
        "#include <cassert>\nint twice(int x) { return x + 1; }\nint main() { assert(twice(21) == 42); }\n",
        "int main() { volatile unsigned long i = 0; for (;;) { ++i; } }\n",
        "#include <cstring>\n#include <vector>\nint main() {\n  std::vector<char*> v;\n"
        "  for (;;) { char* p = new char[1 << 24]; std::memset(p, 1, 1 << 24); v.push_back(p); }\n}\n",
    ),
    "java": (
        "public class Main {\n  static int twice(int x) { return 2 * x; }\n"
        "  public static void main(String[] a) { if (twice(21) != 42) throw new AssertionError(); }\n}\n",
        "public class Main {\n  static int twice(int x) { return x + 1; }\n"
        "  public static void main(String[] a) { if (twice(21) != 42) throw new AssertionError(); }\n}\n",
        "public class Main {\n  public static void main(String[] a) { long i = 0; while (true) { i++; } }\n}\n",
        "import java.util.*;\npublic class Main {\n  public static void main(String[] a) {\n"
        "    List<long[]> l = new ArrayList<>();\n    while (true) { l.add(new long[1 << 20]); }\n  }\n}\n",
    ),
    "go": (
        'package main\nimport "testing"\nfunc twice(x int) int { return 2 * x }\n'
        'func TestTwice(t *testing.T) { if twice(21) != 42 { t.Fatal("wrong") } }\n',
        'package main\nimport "testing"\nfunc twice(x int) int { return x + 1 }\n'
        'func TestTwice(t *testing.T) { if twice(21) != 42 { t.Fatal("wrong") } }\n',
        'package main\nimport "testing"\nfunc TestLoop(t *testing.T) { i := 0; for { i++ } }\n',
        'package main\nimport "testing"\nvar keep [][]byte\n'
        "func TestMem(t *testing.T) { for { b := make([]byte, 1<<24); for i := 0; i < len(b); i += 4096 { b[i] = 1 }; "
        "keep = append(keep, b) } }\n",
    ),
    "rust": (
        "fn twice(x: i32) -> i32 { 2 * x }\n#[cfg(test)]\nmod tests {\n    use super::*;\n"
        "    #[test]\n    fn t() { assert_eq!(twice(21), 42); }\n}\n",
        "fn twice(x: i32) -> i32 { x + 1 }\n#[cfg(test)]\nmod tests {\n    use super::*;\n"
        "    #[test]\n    fn t() { assert_eq!(twice(21), 42); }\n}\n",
        "#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() { let mut i: u64 = 0; loop { i = i.wrapping_add(1); "
        "std::hint::black_box(i); } }\n}\n",
        "#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() { let mut v: Vec<Vec<u8>> = Vec::new(); "
        "loop { v.push(vec![1u8; 1 << 24]); } }\n}\n",
    ),
    "csharp": (
        "using System.Diagnostics;\nclass Program {\n  static int Twice(int x) { return 2 * x; }\n"
        "  static void Main() { Debug.Assert(Twice(21) == 42); }\n}\n",
        "using System.Diagnostics;\nclass Program {\n  static int Twice(int x) { return x + 1; }\n"
        "  static void Main() { Debug.Assert(Twice(21) == 42); }\n}\n",
        "class Program {\n  static void Main() { long i = 0; while (true) { i++; } }\n}\n",
        "using System.Collections.Generic;\nclass Program {\n  static void Main() {\n"
        "    var l = new List<long[]>();\n    while (true) { l.Add(new long[1 << 20]); }\n  }\n}\n",
    ),
}


@pytest.mark.parametrize("lang", sorted(PROGRAMS))
def test_pass_fail_timeout_memory(executor: Executor, lang: str) -> None:
    needs(lang)
    good, bad, loop, bomb = PROGRAMS[lang]
    jobs = [(lang, good), (lang, bad)]
    r_good, r_bad = executor.run_many(jobs)
    assert r_good.status is Status.PASSED, (r_good.reason, r_good.stderr)
    assert r_good.passed and r_good.exit_code == 0
    assert r_bad.status is Status.FAILED, (r_bad.status, r_bad.reason, r_bad.stderr)
    assert not r_bad.passed
    r_loop = executor.run(lang, loop, SHORT)
    assert r_loop.status is Status.TIMEOUT, (r_loop.status, r_loop.reason, r_loop.stderr)
    assert r_loop.run_s < SHORT.wall_s + 10
    r_bomb = executor.run(lang, bomb, MEM)
    assert r_bomb.status is Status.MEMORY, (r_bomb.status, r_bomb.reason, r_bomb.stderr)
    # No bound on max_rss_mb: Linux folds the launcher's pre-exec RSS (the forked pytest process,
    # large once torch models are loaded) into ru_maxrss, so it says little about the sample itself.


def test_compile_and_runtime_errors(executor: Executor) -> None:
    needs("python")
    r = executor.run("python", "def f(:\n")
    assert r.status is Status.RUNTIME_ERROR and "SyntaxError" in r.stderr
    r = executor.run("python", "raise ValueError('boom')\n")
    assert r.status is Status.RUNTIME_ERROR and "boom" in r.reason
    if TOOLCHAINS["cpp"].available:
        r = executor.run("cpp", "int main() { return undefined_name; }\n")
        assert r.status is Status.COMPILE_ERROR
        assert "undefined_name" in r.stderr and "error" in r.reason


def test_csharp_verdicts(executor: Executor) -> None:
    """Mono's Debug.Assert only logs a failure and goes on: the run still counts as a failed test.
    Uncaught exceptions are runtime errors, and compile errors say what the compiler said."""
    needs("csharp")
    r = executor.run("csharp", PROGRAMS["csharp"][1])
    assert r.exit_code == 0 and r.status is Status.FAILED and "test failed" in r.reason, (r.reason, r.stderr)
    r = executor.run("csharp", "class Program {\n  static void Main() { throw new System.InvalidOperationException(\"boom\"); }\n}\n")
    assert r.status is Status.RUNTIME_ERROR and "boom" in r.stderr, (r.status, r.reason, r.stderr)
    r = executor.run("csharp", "class Program { static void Main() { return undefined_name; } }\n")
    assert r.status is Status.COMPILE_ERROR and "undefined_name" in r.stderr and "error" in r.reason


def test_output_limit(executor: Executor) -> None:
    needs("python")
    r = executor.run("python", "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
                     Limits(wall_s=20, cpu_s=10, output_mb=1))
    assert r.status is Status.RUNTIME_ERROR and "output limit" in r.reason
    assert len(r.stdout) <= OK.excerpt_chars + 100  # the result keeps an excerpt, not the flood


def test_rust_crates_for_benchmark_programs(executor: Executor) -> None:
    """rand, regex and md5 are built once into the cache and linked with --extern."""
    needs("rust")
    tc = executor.prepare(["rust"])["rust"]
    if not tc.ready:
        pytest.skip(f"crates unavailable: {tc.extras_missing}")
    program = (
        "use rand::Rng;\nuse regex::Regex;\nuse md5;\n"
        "fn digest(s: &str) -> String { format!(\"{:x}\", md5::compute(s.as_bytes())) }\n"
        "#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n    fn t() {\n"
        "        assert_eq!(digest(\"\"), \"d41d8cd98f00b204e9800998ecf8427e\");\n"
        "        assert!(Regex::new(r\"^a+b$\").unwrap().is_match(\"aaab\"));\n"
        "        let x: u8 = rand::thread_rng().gen_range(0..10);\n        assert!(x < 10);\n    }\n}\n"
    )
    r = executor.run("rust", program)
    assert r.status is Status.PASSED, (r.reason, r.stderr)


# --------------------------------------------------------------------------------------------------
# Containment


def _sandbox_uid_processes() -> list[str]:
    """Live processes (not zombies waiting for init to reap them) of any sandbox uid."""
    base = sandbox.UID_BASE
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
                with open(f"/proc/{entry}/stat", "rb") as f:
                    state = f.read().rpartition(b")")[2].split()[0]
            except OSError:
                continue
            if base <= uid < base + sandbox.UID_COUNT and state not in (b"Z", b"X"):
                found.append(f"{entry} (uid {uid}, state {state.decode()})")
    return found


def _needs_uid_isolation() -> None:
    if not sandbox.uid_switch_ok():
        pytest.skip("fork-bomb containment needs root (samples run under throw-away uids): " + sandbox_info().user)


FORK_BOMB_PY = """
import os, sys, time
made = 0
for _ in range(100000):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.setsid()  # leave the process group: only the per-sample uid still finds it
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.05)
    made += 1
print("forked", made, flush=True)
while True:
    time.sleep(1)
"""


def test_fork_bomb_is_contained_and_cleaned_up(executor: Executor) -> None:
    needs("python")
    _needs_uid_isolation()
    limits = Limits(wall_s=4, cpu_s=4, nproc=24)
    r = executor.run("python", FORK_BOMB_PY, limits)
    assert r.status is Status.TIMEOUT
    made = int(r.stdout.split()[1])
    assert made < limits.nproc  # the process limit stopped it
    assert _sandbox_uid_processes() == []  # including the children that called setsid


def test_fork_bomb_compiled(executor: Executor) -> None:
    needs("cpp")
    _needs_uid_isolation()
    r = executor.run("cpp", "#include <unistd.h>\nint main() { for (;;) fork(); }\n",
                     Limits(wall_s=3, cpu_s=3, nproc=32))
    assert r.status is Status.TIMEOUT
    assert _sandbox_uid_processes() == []


@pytest.fixture
def host_server():
    """A TCP server on the host's loopback that records whether anybody connected."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    hits: list[bool] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            hits.append(True)
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], hits
    stop.set()
    t.join(timeout=2)
    srv.close()


def test_network_is_unreachable(executor: Executor, host_server: tuple[int, list[bool]]) -> None:
    needs("python")
    info = sandbox_info()
    if not info.network_isolated:
        pytest.skip(f"no network isolation here: {info.network}")
    port, hits = host_server
    # The probe itself shows the server is reachable from outside the sandbox.
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    program = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
        "except OSError as e:\n"
        "    print('blocked', e)\n"
        "    sys.exit(0)\n"
        "print('connected')\nsys.exit(1)\n"
    )
    r = executor.run("python", program)
    assert r.status is Status.PASSED and "blocked" in r.stdout, (r.stdout, r.stderr)
    if TOOLCHAINS["javascript"].available:
        js = (f"const s = require('net').connect({port}, '127.0.0.1');\n"
              "s.on('connect', () => { console.log('connected'); process.exit(1); });\n"
              "s.on('error', (e) => { console.log('blocked', e.code); process.exit(0); });\n")
        r = executor.run("javascript", js)
        assert r.status is Status.PASSED and "blocked" in r.stdout, (r.stdout, r.stderr)
    assert len(hits) == 1  # only the probe from outside


def test_samples_cannot_read_each_others_files(executor: Executor) -> None:
    needs("python")
    _needs_uid_isolation()
    secret = Path(tempfile.mkdtemp(prefix="mole-test-secret-"))  # root-only, like another sample's dir
    try:
        (secret / "key").write_text("42")
        r = executor.run("python", f"open({str(secret / 'key')!r}).read()\n")
        # Unreadable to the sample's uid, or not even visible under a private /tmp.
        assert r.status is Status.RUNTIME_ERROR
        assert "PermissionError" in r.stderr or ("FileNotFoundError" in r.stderr and sandbox.private_tmp_ok())
    finally:
        (secret / "key").unlink()
        secret.rmdir()


def test_temporary_directories_are_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    needs("python")
    base = Path(tempfile.mkdtemp(prefix="mole-test-exec-"))
    os.chmod(base, 0o711)  # the sample's uid must be able to reach its own directory below
    try:
        monkeypatch.setenv("MOLE_EXEC_TMPDIR", str(base))
        ex = Executor(OK, workers=2)
        results = ex.run_many([("python", "open('scratch.txt', 'w').write('x')\n")] * 3
                              + [("python", "raise SystemExit(3)\n")])
        assert [r.status for r in results] == [Status.PASSED] * 3 + [Status.RUNTIME_ERROR]
        assert results[-1].exit_code == 3
        assert list(base.iterdir()) == []
    finally:
        for p in base.iterdir():
            pytest.fail(f"left behind: {p}")
        base.rmdir()


# --------------------------------------------------------------------------------------------------
# Toolchains and reports


def test_toolchain_report() -> None:
    assert set(TOOLCHAINS) == set(runner_languages())
    for lang, tc in TOOLCHAINS.items():
        assert tc.language == lang
        if tc.available:
            assert tc.version and not tc.missing
        else:
            assert tc.missing and not tc.ready
    with pytest.raises(ValueError, match="no runner"):
        available_toolchains(["cobol"])


def test_unknown_language_is_not_a_failure(executor: Executor) -> None:
    r = executor.run("cobol", "DISPLAY 'HI'.")
    assert r.status is Status.TOOLCHAIN_MISSING and not r.passed


def test_sandbox_info_describes_isolation() -> None:
    info = sandbox_info()
    text = "\n".join(info.lines())
    assert "network:" in text and "processes:" in text and "memory:" in text
    assert info.network_isolated == info.network.startswith("isolated")


def test_node_packages_are_copied_into_the_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Programs that require a listed npm package get a private copy (the cache itself may be
    unreachable for the sandbox uid). A package already in the cache is never fetched again."""
    needs("javascript")
    js = plugin("javascript")
    packages = NpmPackages({"mole-test-pkg": "1.0.0"})
    monkeypatch.setattr(js, "TOOLCHAIN", replace(js.TOOLCHAIN, libraries=packages))
    pkg = npm_packages_dir(packages, tmp_path) / "node_modules" / "mole-test-pkg"
    pkg.mkdir(parents=True)
    (pkg / "package.json").write_text('{"name": "mole-test-pkg", "version": "1.0.0", "main": "index.js"}')
    (pkg / "index.js").write_text("module.exports = (x) => x * 2;\n")
    ex = Executor(OK, cache_dir=tmp_path)
    assert ex.prepare(["javascript"])["javascript"].ready
    r = ex.run("javascript", "const twice = require('mole-test-pkg');\nif (twice(21) !== 42) process.exit(1);\n")
    assert r.status is Status.PASSED, (r.reason, r.stderr)
    r = ex.run("javascript", "require('not-installed-anywhere');\n")
    assert r.status is Status.RUNTIME_ERROR and "Cannot find module" in r.stderr
