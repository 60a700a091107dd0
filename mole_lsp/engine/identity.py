"""Which weights a model folder holds: the layout-independent weights sha256 (cached by file stats), and
the Hub repo and commit a Hugging Face cache folder belongs to.

:func:`weights_identity` hashes the state dict (tensor name, dtype, shape, bytes, in name order, tied
``lm_head`` included), which equals ``mole_lsp.packs.format.fingerprint_model`` of the model loaded in the
checkpoint's dtype: packs record it so they are only loaded onto the weights they were trained on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from contextlib import ExitStack
from pathlib import Path

import torch

from mole_lsp.engine.model_info import BaseModelError
from mole_lsp.io import atomic_write_json, read_json_object
from mole_lsp.paths import cache_dir

log = logging.getLogger(__name__)

IDENTITY_FILE = ".mole-weights-sha256.json"
IDENTITY_SCHEME = "state-dict-sha256-v1"
WEIGHTS_FILE = "model.safetensors"


def weights_identity(path: str | os.PathLike[str]) -> str:
    """sha256 over the safetensors weights of a model folder (or one ``.safetensors`` file).

    Hashes the state dict, not the files: tensor name, dtype and shape, then the raw bytes, in name
    order, with a tied ``lm_head.weight`` included as the embedding it is tied to -- so resharding or
    header changes keep the identity, and it matches ``mole_lsp.packs.format.fingerprint_model``. The result is
    cached beside the files (or in the mole-lsp cache if the folder is read-only), keyed by file stats."""
    folder, files = _weight_files(Path(path))
    stamp = {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}
    # HF cache snapshot folders stay pristine; elsewhere the record sits beside the weights
    beside = None if hub_identity_of_cache_path(folder)[0] else folder / IDENTITY_FILE

    def cached(place: Path) -> str | None:
        record = read_json_object(place)
        if record and record.get("scheme") == IDENTITY_SCHEME and record.get("files") == stamp:
            return str(record["sha256"])
        return None

    if beside is not None and (hit := cached(beside)):
        return hit
    if hit := cached(_fallback_identity_path(folder)):
        return hit
    digest = _hash_state_dict(files, tied=_ties_embeddings(folder))
    record = {"scheme": IDENTITY_SCHEME, "files": stamp, "sha256": digest}
    for place in ([beside] if beside is not None else []) + [_fallback_identity_path(folder)]:
        try:
            atomic_write_json(place, record, mode=0o644)  # a plain cache record, not private
            break
        except OSError as err:  # read-only folder: try the next place; at worst it is recomputed next time
            log.debug("could not cache the weights identity in %s: %s", place, err)
    return digest


def hub_identity_of_cache_path(path: Path) -> tuple[str | None, str | None]:
    """``.../models--owner--name/snapshots/<sha>`` (a Hugging Face cache folder) -> (repo id, sha)."""
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        parts = path.parent.parent.name.split("--")[1:]
        if len(parts) >= 2 and re.fullmatch(r"[0-9a-f]{40}", path.name):
            return "/".join(parts), path.name
    return None, None


def _weight_files(path: Path) -> tuple[Path, list[Path]]:
    if path.is_file():
        if path.suffix != ".safetensors":
            raise BaseModelError(f"{path} is not a .safetensors file")
        return path.parent, [path]
    index = read_json_object(path / "model.safetensors.index.json")
    if index and isinstance(index.get("weight_map"), dict):
        files = [path / name for name in sorted(set(index["weight_map"].values()))]
    elif (path / WEIGHTS_FILE).is_file():
        files = [path / WEIGHTS_FILE]
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files or not all(f.is_file() for f in files):
        raise BaseModelError(f"{path} has no (complete set of) safetensors weight files")
    return path, files


def _ties_embeddings(folder: Path) -> bool:
    config = read_json_object(folder / "config.json")
    if config is None:
        return False
    if "tie_word_embeddings" in config:
        return bool(config["tie_word_embeddings"])
    try:  # the default differs per architecture
        from transformers import AutoConfig

        return bool(getattr(AutoConfig.from_pretrained(folder), "tie_word_embeddings", False))
    except (OSError, ValueError, KeyError):
        return False


def _hash_state_dict(files: list[Path], tied: bool) -> str:
    from safetensors import safe_open

    with ExitStack() as stack:
        handles = [stack.enter_context(safe_open(file, framework="pt")) for file in files]
        where = {key: handle for handle in handles for key in handle.keys()}  # noqa: SIM118 - not a mapping
        if tied and "lm_head.weight" not in where and "model.embed_tokens.weight" in where:
            where["lm_head.weight"] = where["model.embed_tokens.weight"]
            aliases = {"lm_head.weight": "model.embed_tokens.weight"}
        else:
            aliases = {}
        digest = hashlib.sha256()
        for name in sorted(where):
            tensor = where[name].get_tensor(aliases.get(name, name)).contiguous()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            if tensor.numel():
                digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _fallback_identity_path(folder: Path) -> Path:
    """Where the identity of a folder we should not (or cannot) write into is cached."""
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:32]
    return cache_dir() / "identities" / f"{key}.json"
