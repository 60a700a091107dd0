"""Base models from GGUF files: dequantized once into a plain safetensors folder that transformers loads.

A GGUF is dequantized with transformers (fp32) and stored in ``models_dir()/gguf-<sha256 prefix>``,
keyed by the GGUF's sha256; later calls reuse it. The folder is built in a temporary directory and
renamed into place, so an interrupted run never leaves a half folder in use. Its ``mole-model.json``
records where the weights come from and the weights sha256 the folder must still have.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from mole_lsp.engine.folder import TOKENIZER_FILES, check_model_type, info_from_folder
from mole_lsp.engine.identity import WEIGHTS_FILE, weights_identity
from mole_lsp.engine.model_info import BaseModelError, BaseModelInfo, Progress
from mole_lsp.io import atomic_write_json, read_json_object, sha256_file

log = logging.getLogger(__name__)

META_FILE = "mole-model.json"  # written into every converted folder

Repo = tuple[str, str | None]  # (repo id, revision) recorded as the weights' source


def resolve_gguf(gguf: Path, root: Path, report: Progress, known_repos: Mapping[str, Repo]) -> BaseModelInfo:
    """The converted folder for the ``gguf`` file under ``root``, converting it first if needed.

    ``known_repos`` maps GGUF sha256s whose source is known to their (repo id, revision); any other file
    is recorded as ``gguf:<file name>``."""
    report(f"Checking {gguf.name}")
    gguf_sha = sha256_file(gguf)
    target = root / gguf_cache_name(gguf_sha)
    describe = {"name": gguf.stem, "source": "gguf"}
    info = cached_gguf_model(target, gguf_sha, **describe)
    if info is not None:
        return info
    from huggingface_hub.utils import WeakFileLock

    with WeakFileLock(root / f".{target.name}.lock"):
        info = cached_gguf_model(target, gguf_sha, **describe)
        if info is None:
            repo = known_repos.get(gguf_sha, (f"gguf:{gguf.name}", None))
            convert_gguf(
                gguf, gguf_sha, target, repo=repo, side_dir=gguf.parent, extra_files=(), report=report,
                origin="gguf",
            )  # fmt: skip
            info = cached_gguf_model(target, gguf_sha, **describe)
    if info is None:  # pragma: no cover - the folder was just written
        raise BaseModelError(f"Converted model at {target} is unreadable")
    return info


def gguf_cache_name(gguf_sha256: str) -> str:
    """The folder name, under the models cache, of the GGUF with this sha256."""
    return f"gguf-{gguf_sha256[:20]}"


def cached_gguf_model(target: Path, gguf_sha256: str, name: str, source: str) -> BaseModelInfo | None:
    """The converted folder for this GGUF if it is complete and intact (a damaged one is removed)."""
    meta = read_json_object(target / META_FILE)
    if not meta or meta.get("gguf_sha256") != gguf_sha256 or not (target / WEIGHTS_FILE).is_file():
        return None
    if weights_identity(target) != meta.get("weights_sha256"):
        log.warning("cached model %s does not match its recorded weights sha256; rebuilding it", target)
        shutil.rmtree(target, ignore_errors=True)
        return None
    return info_from_folder(
        target,
        repo_id=meta["repo_id"],
        revision=meta.get("revision"),
        name=name,
        source=source,
        gguf_sha256=gguf_sha256,
    )


def convert_gguf(
    gguf: Path,
    gguf_sha: str,
    target: Path,
    *,
    repo: Repo,
    side_dir: Path | None,
    extra_files: Iterable[Path],
    report: Progress,
    origin: str,
) -> None:
    """Dequantize ``gguf`` into a safetensors folder at ``target`` (caller holds the target's lock).

    Tokenizer files beside the GGUF (in ``side_dir``) are copied, else the tokenizer is rebuilt from the
    GGUF; ``extra_files`` (licences) are copied too. ``origin`` ("gguf", "pypi") is recorded in the meta."""
    from transformers import AutoConfig, AutoModelForCausalLM

    # Not mole_lsp.io.atomic_dir: the stale-folder sweep needs its own prefix (the lock file shares
    # the ``.<name>.`` one), and a folder another process renamed into place first is kept.
    for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a killed run; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        try:
            config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except (OSError, ValueError, KeyError) as err:
            raise BaseModelError(f"transformers cannot read {gguf}: {err}") from err
        check_model_type(getattr(config, "model_type", None), getattr(config, "architectures", None), gguf)

        report(f"Dequantizing {gguf.name} to fp32 safetensors (once)")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        state = {
            k: v.detach().contiguous()
            for k, v in model.state_dict().items()
            if not (tied and k == "lm_head.weight")
        }
        from safetensors.torch import save_file

        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        _save_plain_config(model, tmp)
        del model, state
        gc.collect()

        side_has_tokenizer = side_dir is not None and any(
            (side_dir / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")
        )
        if side_has_tokenizer:
            assert side_dir is not None
            for name in (*TOKENIZER_FILES, "generation_config.json"):
                if (side_dir / name).is_file():
                    shutil.copyfile(side_dir / name, tmp / name)
        else:
            report(f"Building the tokenizer from {gguf.name}")
            _save_gguf_tokenizer(gguf, tmp, getattr(config, "max_position_embeddings", None))
        for extra in [*extra_files, *(sorted(side_dir.glob("LICENSE*")) if side_dir else [])]:
            if extra.is_file():
                shutil.copyfile(extra, tmp / extra.name)

        repo_id, revision = repo
        meta = {
            "format": 1,
            "repo_id": repo_id,
            "revision": revision,
            "gguf_file": gguf.name,
            "gguf_sha256": gguf_sha,
            "weights_sha256": weights_identity(tmp),
            "origin": origin,
            "converted_with": _versions(),
        }
        atomic_write_json(tmp / META_FILE, meta, mode=0o644)
        tmp.chmod(0o755)  # mkdtemp made it private; the finished folder is an ordinary cache folder
        try:
            tmp.rename(target)
        except OSError:
            if not (target / META_FILE).is_file():
                raise
            log.info("%s appeared meanwhile; keeping it", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save_plain_config(model: Any, folder: Path) -> None:
    """The model's config without the GGUF quantization marker, so the folder loads as a plain model."""
    config = model.config
    config_dict = config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config_dict.pop(key, None)
    config_dict["architectures"] = [type(model).__name__]
    config_dict["dtype"] = "float32"
    type(config).from_dict(config_dict).save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)


# llama.cpp pre-tokenizer names that transformers turns into a bare ByteLevel, but whose original
# tokenizers split digits one by one first (the HF tokenizer.json of SmolLM / StarCoder does this).
_DIGIT_SPLIT_PRE = frozenset({"smollm", "starcoder"})


def _save_gguf_tokenizer(gguf: Path, folder: Path, max_length: int | None) -> None:
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError, KeyError) as err:
        raise BaseModelError(
            f"{gguf.name} carries no usable tokenizer ({err}); put tokenizer.json/tokenizer_config.json beside it"
        ) from err
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and _gguf_pre_tokenizer(gguf) in _DIGIT_SPLIT_PRE:
        if json.loads(backend.to_str()).get("pre_tokenizer", {}).get("type") == "ByteLevel":
            backend.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Digits(individual_digits=True),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
                ]
            )
    if max_length:
        tokenizer.model_max_length = int(max_length)
    tokenizer.save_pretrained(folder)


def _gguf_pre_tokenizer(gguf: Path) -> str | None:
    """``tokenizer.ggml.pre`` of a GGUF file."""
    try:  # transformers' reader skips the big token arrays: ~0.1 s instead of ~5 s for gguf's GGUFReader
        from transformers.integrations.gguf.reader import read_gguf_metadata

        value = read_gguf_metadata(str(gguf))[0].get("tokenizer.ggml.pre")
    except (ImportError, AttributeError, TypeError):
        from gguf import GGUFReader

        field = GGUFReader(gguf).fields.get("tokenizer.ggml.pre")
        value = field.contents() if field is not None else None
    return str(value) if value is not None else None


def _versions() -> dict[str, str]:
    """Versions of the libraries that did the conversion (recorded in the meta file)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("transformers", "gguf", "torch", "safetensors"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out
