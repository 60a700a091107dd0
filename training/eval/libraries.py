"""Libraries and headers that some benchmark programs need, prepared once per toolchain into the cache.

Plugins say what (:class:`~mole_lsp.lang.plugins.execution.CargoCrates`,
:class:`~mole_lsp.lang.plugins.execution.NpmPackages`, :class:`~mole_lsp.lang.plugins.execution.Prelude`);
this module knows how, per tool: crates are compiled with cargo from a local registry of crate sources
(offline) and linked with --extern, npm packages are installed from the npm registry and copied into
each sample that requires one, and a prelude of common headers is precompiled with GCC. Every cache
entry is keyed by what it was built from and guarded by a file lock (several processes may share it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from mole_lsp.lang.plugins.execution import CargoCrates, LinkedCrates, NpmPackages, Prelude
from training.eval.sandbox import which

__all__ = [
    "LibraryError",
    "build_crates",
    "build_prelude",
    "cargo_registry",
    "copy_npm_packages",
    "crates_used",
    "install_npm_packages",
    "missing_libraries",
    "npm_packages_dir",
    "parse_npm_packages",
    "prepare_libraries",
    "required_npm_packages",
]


class LibraryError(RuntimeError):
    """Libraries a toolchain declares could not be prepared (the message says which and why)."""


def _tool(name: str) -> str:
    found = which(name)
    if found is None:
        raise FileNotFoundError(name)
    return found


# --------------------------------------------------------------------------------------------------
# Crates (cargo)


def cargo_registry(spec: CargoCrates) -> Path | None:
    """The directory of crate sources to build from: MOLE_CARGO_REGISTRY, then the spec's defaults."""
    for p in [os.environ.get("MOLE_CARGO_REGISTRY", ""), *spec.registries]:
        if p and os.path.isdir(p):
            return Path(p)
    return None


def _crates_missing_from(spec: CargoCrates, registry: Path) -> list[str]:
    names = {re.sub(r"-\d+\.\d+.*$", "", d.name) for d in registry.iterdir()}
    return [c for c in spec.crates if c not in names]


def crates_used(spec: CargoCrates, program: str) -> bool:
    """Whether ``program`` names one of the crates (programs that use none do not wait for the build)."""
    return re.search(rf"\b(?:{'|'.join(spec.crates)})\b", program) is not None


def build_crates(spec: CargoCrates, rustc: str, cache_dir: Path) -> LinkedCrates:
    """Compile the crates once with cargo from the local registry (a cargo directory source, fully
    offline) and return the rlibs to pass with --extern, so no sample rebuilds them."""
    crates = list(spec.crates)
    registry = cargo_registry(spec)
    if registry is None:
        raise RuntimeError(f"no cargo registry with crate sources (apt install {' '.join(spec.crates.values())}, "
                           "or set MOLE_CARGO_REGISTRY)")
    missing = _crates_missing_from(spec, registry)
    if missing:
        raise RuntimeError(f"crates missing from {registry}: {', '.join(missing)}")
    cargo = _tool("cargo")
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
                return LinkedCrates(Path(data["deps_dir"]), data["externs"])
        (root / "src").mkdir(exist_ok=True)
        (root / "src" / "lib.rs").write_text("")
        deps = "\n".join(f'{c} = "*"' for c in crates)
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
                if msg.get("reason") != "compiler-artifact" or msg["target"]["name"] not in crates:
                    continue
                rlibs = [f for f in msg["filenames"] if f.endswith(".rlib")]
                if rlibs:
                    externs[msg["target"]["name"]] = rlibs[0]
                    versions[msg["target"]["name"]] = msg["package_id"]
        if set(externs) != set(crates):
            raise RuntimeError(f"cargo did not report rlibs for {sorted(set(crates) - set(externs))}")
        deps_dir = Path(next(iter(externs.values()))).parent
        manifest.write_text(json.dumps({"deps_dir": str(deps_dir), "externs": externs, "versions": versions}))
        return LinkedCrates(deps_dir, externs)


# --------------------------------------------------------------------------------------------------
# npm packages


def _npm_spec(spec: NpmPackages) -> list[str]:
    return sorted(f"{name}@{version}" for name, version in spec.packages.items())


def npm_packages_dir(spec: NpmPackages, cache_dir: Path) -> Path:
    """Where the install of ``spec`` lives: ``<dir>/node_modules/<name>``."""
    return cache_dir / "node-packages" / hashlib.sha256("\n".join(_npm_spec(spec)).encode()).hexdigest()[:16]


def install_npm_packages(spec: NpmPackages, cache_dir: Path) -> Path:
    """The node_modules folder with every package of ``spec`` (installed on first use)."""
    root = npm_packages_dir(spec, cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    modules = root / "node_modules"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all((modules / name / "package.json").exists() for name in spec.packages):
            return modules
        npm = _tool("npm")
        wanted = _npm_spec(spec)
        proc = subprocess.run([npm, "install", "--prefix", str(root), "--no-audit", "--no-fund", "--no-save",
                               "--no-package-lock", *wanted], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not all((modules / n / "package.json").exists() for n in spec.packages):
            raise RuntimeError(f"npm install {' '.join(wanted)} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return modules


def parse_npm_packages(items: Iterable[str]) -> dict[str, str]:
    """``name`` or ``name@version`` (scoped names too: ``@scope/name@1.2``) -> {name: version or "*"}."""
    out = {}
    for item in items:
        name, at, version = item.strip().rpartition("@")
        if not name or name.endswith("/") or not at:  # no version: "lodash", "@scope/name"
            name, version = item.strip(), "*"
        out[name] = version or "*"
    return out


def copy_npm_packages(modules: Path, names: Iterable[str], dest: Path) -> None:
    """Copy packages of a flat ``node_modules`` folder into ``dest`` with the dependencies their
    package.json declares (found beside them; nested node_modules folders come along in the copy)."""
    todo, done = list(names), set()
    while todo:
        name = todo.pop()
        src = modules / name
        if name in done or not (src / "package.json").is_file():
            continue
        done.add(name)
        shutil.copytree(src, dest / name, symlinks=False, dirs_exist_ok=True)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            todo += list(json.loads((src / "package.json").read_text(encoding="utf-8")).get("dependencies") or {})


def required_npm_packages(spec: NpmPackages, program: str) -> list[str]:
    """The packages of ``spec`` that ``program`` requires."""
    return [n for n in spec.packages if re.search(rf"require\(\s*['\"`]{re.escape(n)}['\"`]\s*\)", program)]


# --------------------------------------------------------------------------------------------------
# Precompiled headers (GCC)


def build_prelude(spec: Prelude, compiler: str, cache_dir: Path) -> Path:
    """Precompile the prelude with the flags samples use; returns the folder to add with -I."""
    ident = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(f"{ident}\n{spec.flags}\n{spec.text}".encode()).hexdigest()[:16]
    root = cache_dir / "cpp-pch" / key
    root.mkdir(parents=True, exist_ok=True)
    header, gch = root / spec.header, root / f"{spec.header}.gch"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not gch.exists():
            header.write_text(spec.text)
            tmp = root / f"{spec.header}.gch.tmp"
            subprocess.run([compiler, *spec.flags, "-x", spec.header_language, str(header), "-o", str(tmp)], check=True,
                           capture_output=True, timeout=600)
            os.replace(tmp, gch)
    return root


# --------------------------------------------------------------------------------------------------
# Either kind


def missing_libraries(spec: CargoCrates | NpmPackages) -> list[str]:
    """What is missing to prepare ``spec`` here, with where to get it (cheap: nothing is built)."""
    if isinstance(spec, NpmPackages):
        return [] if which("npm") is not None else [f"npm (to install {', '.join(spec.packages)}; apt: npm)"]
    out = []
    registry = cargo_registry(spec)
    if which("cargo") is None:
        out.append(f"cargo (to build {'/'.join(spec.crates)})")
    if registry is None:
        out.append(f"crates {', '.join(spec.crates)} (apt: {' '.join(spec.crates.values())})")
    else:
        out += [f"crate {c} (apt: {spec.crates[c]})" for c in _crates_missing_from(spec, registry)]
    return out


def prepare_libraries(spec: CargoCrates | NpmPackages, compiler: Callable[[], str],
                      cache_dir: Path) -> LinkedCrates | Path:
    """Build or install ``spec`` (cached) with the toolchain's ``compiler`` (found when needed); raises
    LibraryError with a one-line reason that says what is unavailable."""
    what = "npm packages" if isinstance(spec, NpmPackages) else "Rust crates"
    try:
        if isinstance(spec, NpmPackages):
            return install_npm_packages(spec, cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        return build_crates(spec, compiler(), cache_dir)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        raise LibraryError(f"{what} unavailable: {str(e).strip().splitlines()[0]}") from e
