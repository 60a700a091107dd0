"""Which toolchains this machine has: the plugins' TOOLCHAINs, the tools they need found on this host,
their versions, and what is missing (with the package that provides it)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from mole_lsp.lang.plugins import feature, languages_with
from mole_lsp.lang.plugins.execution import Toolchain
from training.eval.libraries import missing_libraries
from training.eval.sandbox import others_can_execute, uid_switch_ok, which

__all__ = [
    "ToolchainStatus",
    "available_toolchains",
    "compiler",
    "interpreter",
    "runner_languages",
    "toolchain_spec",
    "tool",
]


@dataclass(frozen=True)
class ToolchainStatus:
    """Whether a language's programs can run here."""

    language: str
    available: bool  # compiler / interpreter present and usable by the sandbox
    version: str = ""
    missing: tuple[str, ...] = ()  # what is absent (with the package that provides it)
    extras_missing: tuple[str, ...] = ()  # optional parts (libraries some benchmark programs need)

    @property
    def ready(self) -> bool:
        return self.available and not self.extras_missing


def runner_languages() -> tuple[str, ...]:
    """Languages whose plugin declares a TOOLCHAIN, in registry order."""
    return languages_with("TOOLCHAIN")


def toolchain_spec(language: str) -> Toolchain | None:
    """The TOOLCHAIN of ``language``'s plugin, or None."""
    return feature(language, "TOOLCHAIN")


def tool(name: str, extra_dirs: Iterable[str] = ()) -> str:
    """Path of executable ``name`` on PATH or in ``extra_dirs``; FileNotFoundError if there is none."""
    found = which(name)
    if found is None:
        for d in extra_dirs:
            if os.access(os.path.join(d, name), os.X_OK):
                return os.path.join(d, name)
        raise FileNotFoundError(name)
    return found


def interpreter(name: str) -> str | None:
    """The interpreter to run samples with. When samples run under a throw-away uid it must be
    reachable by that uid (a venv's python under /root is not), so look at every PATH entry."""
    candidates = [os.path.join(d, name) for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    candidates += [f"/usr/bin/{name}", f"/usr/local/bin/{name}"]
    usable = [c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)]
    if uid_switch_ok():
        usable = [c for c in usable if others_can_execute(c)]
    return usable[0] if usable else None


@cache
def compiler(language: str) -> str:
    """The binary the compile step runs (the toolchain's first compile tool, as its plugin resolves it)."""
    spec = _spec(language)
    found = tool(spec.compile_tools[0], spec.bin_dirs)
    return spec.resolve_compiler(found) if spec.resolve_compiler else found


@cache
def _version(language: str) -> str:
    spec = _spec(language)
    cmd = spec.version
    try:
        if cmd[0] == spec.run_tool:
            exe = interpreter(cmd[0]) or tool(cmd[0], spec.bin_dirs)
        elif spec.compile_tools and cmd[0] == spec.compile_tools[0]:
            exe = compiler(language)
        else:
            exe = tool(cmd[0], spec.bin_dirs)
        proc = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if text else ""


def _spec(language: str) -> Toolchain:
    spec = toolchain_spec(language)
    if spec is None:
        raise ValueError(f"no runner for language {language!r}")
    return spec


def _status(language: str) -> ToolchainStatus:
    spec = _spec(language)
    missing: list[str] = []
    for t in spec.compile_tools:
        try:
            tool(t, spec.bin_dirs)
        except FileNotFoundError:
            missing.append(f"{t} (apt: {spec.packages})")
    if spec.run_tool and interpreter(spec.run_tool) is None:
        where = " reachable by the sandbox uid" if uid_switch_ok() and which(spec.run_tool) else ""
        missing.append(f"{spec.run_tool}{where} (apt: {spec.packages})")
    extras: list[str] = []
    if not missing:
        extras += [extra.what for extra in spec.extras if not extra.present()]
        if spec.libraries is not None:
            extras += missing_libraries(spec.libraries)
    version = _version(language) if not missing and spec.version else ""
    return ToolchainStatus(language, not missing, version, tuple(missing), tuple(extras))


def available_toolchains(languages: Iterable[str] | None = None) -> dict[str, ToolchainStatus]:
    """Which toolchains can work here, what is missing and where to get it (cheap: no compilation)."""
    runners = runner_languages()
    langs = list(runners) if languages is None else list(languages)
    unknown = [lang for lang in langs if toolchain_spec(lang) is None]
    if unknown:
        raise ValueError(f"no runner for {unknown}; runners exist for {sorted(runners)}")
    return {lang: _status(lang) for lang in langs}
