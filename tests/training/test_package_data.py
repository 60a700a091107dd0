"""Data files the code reads at run time (presets, tables, the language registry) are package data, so a
non-editable install (a wheel) has them: every tracked non-Python file inside a package folder must be
matched by ``[tool.setuptools.package-data]``, and presets load through importlib.resources."""

from __future__ import annotations

import fnmatch
import subprocess
import tomllib
from pathlib import Path

from training.config import load_config, preset_names

ROOT = Path(__file__).resolve().parents[2]


def _glob_match(rel: str, pattern: str) -> bool:
    """setuptools' package-data globs: ``*`` stays within one folder (unlike fnmatch)."""
    parts, pats = rel.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(fnmatch.fnmatch(a, b) for a, b in zip(parts, pats, strict=True))


def _package_dirs(tool: dict) -> dict[str, Path]:
    mapped = tool.get("package-dir", {})
    return {pkg: ROOT / mapped.get(pkg, pkg.replace(".", "/")) for pkg in tool["packages"]}


def test_every_data_file_in_a_package_folder_is_package_data() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = _package_dirs(tool)
    data = tool.get("package-data", {})
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    missing = []
    for rel in tracked.splitlines():
        path = ROOT / rel
        if path.suffix == ".py":
            continue
        # the innermost package folder holding the file owns it (a plain subfolder such as presets/ too)
        owners = [(pkg, d) for pkg, d in dirs.items() if path.is_relative_to(d)]
        if not owners:
            continue
        pkg, d = max(owners, key=lambda o: len(o[1].parts))
        inside = path.relative_to(d).as_posix()
        if not any(_glob_match(inside, pat) for pat in data.get(pkg, [])):
            missing.append(f"{rel} (package {pkg})")
    assert not missing, f"not package data, so missing from a wheel: {missing}"


def test_presets_load_through_package_resources() -> None:
    assert {"paper", "quick"} <= set(preset_names())
    assert load_config(["--preset", "quick"]).max_length > 0
