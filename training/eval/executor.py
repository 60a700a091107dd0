"""Sandboxed compile-and-run of generated programs, one fresh temporary directory per sample.

A sample is one complete source file (solution + tests) in a language whose plugin declares a
TOOLCHAIN (:func:`training.eval.toolchains.runner_languages`). Every sample is compiled and run in a
fresh temporary directory that is removed afterwards, in the sandbox of :mod:`training.eval.sandbox`
(network namespace, resource limits, a throw-away uid, a wall-clock limit); compilers run as the calling
user (they do not execute the sample) with their own time and memory limits. The verdict is read by
:mod:`training.eval.verdicts`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from mole_lsp.lang.plugins.execution import Build, CargoCrates, LinkedCrates, NpmPackages, Toolchain
from training.eval import sandbox
from training.eval.libraries import (
    LibraryError,
    build_prelude,
    copy_npm_packages,
    crates_used,
    parse_npm_packages,
    prepare_libraries,
    required_npm_packages,
)
from training.eval.sandbox import SHARED_DIRS, Limits, base_env, is_root, sandbox_info, spawn, uid_switch_ok
from training.eval.toolchains import (
    ToolchainStatus,
    available_toolchains,
    compiler,
    interpreter,
    toolchain_spec,
)
from training.eval.uids import UidPool, user_task_count
from training.eval.verdicts import ExecResult, Status, classify_run, first_error_line, run_notes

__all__ = ["Executor", "default_cache_dir", "run_program"]


def default_cache_dir() -> Path:
    """Where built libraries and compiler caches live: MOLE_EVAL_CACHE, else the user cache."""
    env = os.environ.get("MOLE_EVAL_CACHE")
    if env:
        return Path(env)
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("mole-lsp")) / "eval"
    except ImportError:  # pragma: no cover - platformdirs is a project dependency
        return Path.home() / ".cache" / "mole-lsp" / "eval"


class Executor:
    """Runs samples in sandboxes, one temporary directory each, ``workers`` at a time.

    ``npm_packages``: npm packages JavaScript programs may require besides the plugin's (``name`` or
    ``name@version``); they come from the local ``node_modules`` folder when one is given (and so do
    the plugin's packages found there), else they are installed with npm into the cache."""

    def __init__(self, limits: Limits | None = None, *, workers: int = 1, cache_dir: Path | None = None,
                 switch_user: bool = True, npm_packages: Sequence[str] | Mapping[str, str] = (),
                 node_modules: Path | None = None) -> None:
        self.limits = limits or Limits()
        self.workers = max(1, workers)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.npm_packages = dict(npm_packages) if isinstance(npm_packages, Mapping) else parse_npm_packages(npm_packages)
        self.node_modules = Path(node_modules) if node_modules else None
        self.info = sandbox_info()
        # Without a private /tmp per run, what a sample's uid leaves in the shared directories is swept.
        sweep = () if sandbox.private_tmp_ok() else SHARED_DIRS
        self._pool = UidPool(sweep_dirs=sweep) if switch_user and uid_switch_ok() else None
        self._lock = threading.Lock()  # guards the dictionaries below and hands out per-language locks
        self._lang_locks: dict[str, threading.Lock] = {}
        self._libraries: dict[str, LinkedCrates | Path] = {}
        self._library_errors: dict[str, str] = {}
        self._preludes: dict[str, Path | None] = {}  # None: precompiling failed, compile without it
        self._toolchains: dict[str, ToolchainStatus] = {}

    # -- toolchains -------------------------------------------------------------------------------

    def toolchain(self, language: str) -> ToolchainStatus:
        with self._lock:
            if language not in self._toolchains:
                self._toolchains[language] = available_toolchains([language])[language]
            return self._toolchains[language]

    def prepare(self, languages: Iterable[str]) -> dict[str, ToolchainStatus]:
        """Check the toolchains and do the one-time work (libraries to build or install) up front, so
        that a missing piece is reported before any sample runs instead of as a wall of failures."""
        out = {}
        for lang in languages:
            tc = self.toolchain(lang)
            spec = toolchain_spec(lang)
            if spec is not None and spec.libraries is not None and tc.ready:
                self._libraries_for(lang, spec)
                errors = [self._library_errors.get(lang, "")]
                if isinstance(spec.libraries, NpmPackages) and self.node_modules is not None:
                    absent = [n for n in self.npm_packages if not self._local_npm(n)]
                    errors.append(f"npm packages missing from {self.node_modules}: {', '.join(absent)}" if absent else "")
                if any(errors):
                    tc = replace(tc, extras_missing=(*tc.extras_missing, *filter(None, errors)))
                    with self._lock:
                        self._toolchains[lang] = tc
            out[lang] = tc
        return out

    def _lang_lock(self, language: str) -> threading.Lock:
        with self._lock:
            return self._lang_locks.setdefault(language, threading.Lock())

    def _local_npm(self, name: str) -> bool:
        return self.node_modules is not None and (self.node_modules / name / "package.json").is_file()

    def _npm_wanted(self, spec: NpmPackages) -> NpmPackages:
        """Every package programs may require: the plugin's and the run's."""
        return NpmPackages({**spec.packages, **self.npm_packages}) if self.npm_packages else spec

    def _npm_to_install(self, spec: NpmPackages) -> NpmPackages:
        """The packages npm installs into the cache: the plugin's not found in the local node_modules,
        and the run's when no local folder is given."""
        if self.node_modules is None:
            return self._npm_wanted(spec)
        return NpmPackages({n: v for n, v in spec.packages.items() if not self._local_npm(n)})

    def _libraries_for(self, language: str, spec: Toolchain) -> LinkedCrates | Path | None:
        """The toolchain's libraries, prepared on first use (None when that failed)."""
        assert spec.libraries is not None
        libraries = self._npm_to_install(spec.libraries) if isinstance(spec.libraries, NpmPackages) else spec.libraries
        with self._lang_lock(language):
            if language not in self._libraries and language not in self._library_errors:
                try:
                    self._libraries[language] = prepare_libraries(libraries, lambda: compiler(language),
                                                                  self.cache_dir)
                except LibraryError as e:
                    self._library_errors[language] = str(e)
            return self._libraries.get(language)

    def _prelude_for(self, language: str, spec: Toolchain) -> Path | None:
        assert spec.prelude is not None
        with self._lang_lock(language):
            if language not in self._preludes:
                try:
                    self._preludes[language] = build_prelude(spec.prelude, compiler(language), self.cache_dir)
                except (OSError, subprocess.SubprocessError):
                    self._preludes[language] = None  # compile without it
            return self._preludes[language]

    # -- running ----------------------------------------------------------------------------------

    def run(self, language: str, program: str, limits: Limits | None = None) -> ExecResult:
        limits = limits or self.limits
        spec = toolchain_spec(language)
        if spec is None:
            return ExecResult(language, Status.TOOLCHAIN_MISSING, f"no runner for language {language!r}")
        tc = self.toolchain(language)
        if not tc.available:
            return ExecResult(language, Status.TOOLCHAIN_MISSING, "missing: " + "; ".join(tc.missing))
        try:
            return self._run(language, spec, program, limits)
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

    def _write_sources(self, language: str, spec: Toolchain, program: str, workdir: Path,
                       limits: Limits) -> tuple[str, Build]:
        """Write the program (and the libraries it uses) into ``workdir``: (source as written, its Build)."""
        source, pch_dir, crates = program, None, None
        if spec.prelude is not None and program.startswith(spec.prelude.text):
            pch_dir = self._prelude_for(language, spec)
            if pch_dir is not None:
                source = f'#include "{spec.prelude.header}"\n' + program[len(spec.prelude.text):]
        src = workdir / spec.source
        src.write_text(source, encoding="utf-8")
        os.chmod(src, 0o644)
        libraries = spec.libraries
        if isinstance(libraries, NpmPackages):
            # Copies, not links: the sandbox uid cannot traverse the (private) cache directory, and a
            # private /tmp hides folders there.
            wanted = required_npm_packages(self._npm_wanted(libraries), program)
            local = [n for n in wanted if self._local_npm(n)]
            if local and self.node_modules is not None:
                copy_npm_packages(self.node_modules, local, workdir / "node_modules")
            installed = [n for n in wanted if n in self._npm_to_install(libraries).packages]
            modules = self._libraries_for(language, spec) if installed else None
            if isinstance(modules, Path):
                copy_npm_packages(modules, installed, workdir / "node_modules")
        elif isinstance(libraries, CargoCrates) and crates_used(libraries, program):
            built = self._libraries_for(language, spec)  # programs that use no crate do not wait for it
            crates = built if isinstance(built, LinkedCrates) else None
        return source, Build(workdir, self.cache_dir, program,
                             compiler=compiler(language) if spec.compile is not None else "",
                             interpreter=(interpreter(spec.run_tool) or spec.run_tool) if spec.run_tool else "",
                             wall_s=limits.wall_s, memory_mb=limits.memory_mb, crates=crates, pch_dir=pch_dir)

    def _run(self, language: str, spec: Toolchain, program: str, limits: Limits) -> ExecResult:
        base = os.environ.get("MOLE_EXEC_TMPDIR") or None
        workdir = Path(tempfile.mkdtemp(prefix=f"mole-{language}-", dir=base))
        lease = None
        try:
            os.chmod(workdir, 0o700)
            source, build = self._write_sources(language, spec, program, workdir, limits)
            compile_s = 0.0
            if spec.compile is not None:
                for d in spec.cache_dirs:
                    (self.cache_dir / d).mkdir(parents=True, exist_ok=True)
                env = {**base_env(workdir), **(spec.compile_env(build) if spec.compile_env else {})}
                if spec.compiler_dir_on_path:
                    env["PATH"] = f"{os.path.dirname(build.compiler)}:{env['PATH']}"
                c = spawn(spec.compile(build), cwd=workdir, env=env, wall_s=limits.compile_wall_s,
                          cpu_s=int(limits.compile_wall_s), data_mb=limits.compile_memory_mb,
                          fsize_mb=max(256, limits.output_mb), nproc=None, uid=None, tag="compile",
                          excerpt=limits.excerpt_chars)
                compile_s = c.wall_s
                if c.timed_out or c.signal in (signal.SIGXCPU, signal.SIGKILL):
                    return ExecResult(language, Status.TIMEOUT, f"compilation exceeded {limits.compile_wall_s:g} s",
                                      compile_s=compile_s, stderr=c.stderr + c.stdout)
                if c.exit_code != 0:
                    out = (c.stderr + c.stdout).strip()
                    reason = first_error_line(out, spec.source)
                    if self._library_errors.get(language):
                        reason += f" ({self._library_errors[language]})"
                    return ExecResult(language, Status.COMPILE_ERROR, reason, exit_code=c.exit_code,
                                      signal=c.signal, stderr=out, compile_s=compile_s)
            uid = None
            if self._pool is not None:
                lease = self._pool.acquire()
                uid = lease[0]
                os.chown(workdir, uid, uid)
            env = {**base_env(workdir), **spec.env}
            p = spawn(spec.run(build), cwd=workdir, env=env, wall_s=limits.wall_s, cpu_s=limits.cpu_s,
                      data_mb=limits.memory_mb, fsize_mb=limits.output_mb, nproc=self._nproc(limits),
                      uid=uid, tag="run", excerpt=limits.excerpt_chars, private_tmp=True)
            status, reason = classify_run(spec.verdicts, p, limits, source)
            return ExecResult(language, status, reason, exit_code=p.exit_code, signal=p.signal, stdout=p.stdout,
                              stderr=p.stderr, compile_s=compile_s, run_s=p.wall_s, cpu_s=p.cpu_s,
                              max_rss_mb=p.max_rss_mb, notes=run_notes(spec.verdicts, p))
        finally:
            if lease is not None:
                self._pool.release(*lease)  # type: ignore[union-attr]
            shutil.rmtree(workdir, ignore_errors=True)

    def _nproc(self, limits: Limits) -> int | None:
        if self._pool is not None:
            return limits.nproc
        if is_root():
            return None  # would not bind root anyway
        # Shared with every other process of this user: leave room for what already runs.
        return user_task_count(os.getuid()) + limits.nproc * self.workers + 64


_DEFAULT: Executor | None = None
_DEFAULT_LOCK = threading.Lock()


def run_program(language: str, program: str, limits: Limits | None = None) -> ExecResult:
    """Run one program with a shared default executor (convenience for scripts and tests)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Executor()
    return _DEFAULT.run(language, program, limits)
