"""Training configuration: one dataclass, presets, TOML files and command-line overrides.

Every knob of the MoLE paper's recipe (arXiv 2506.18923, plus what the authors' code fixes) is a field;
the ``paper`` preset carries the paper's value for each, ``quick`` a small CPU run on the quick-start
base. Precedence, lowest first: dataclass defaults < preset < TOML file < ``--field value`` flags.

A TOML file may be flat or grouped in tables (``[optim] lr = 2e-4``); table names are only for
reading, every key must be a field name. ``preset = "paper"`` inside the file selects a preset.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from mole_lsp.engine.prompts import CHAT_LAYOUTS
from mole_lsp.lang.registry import PAPER_LANGUAGES

# Presets are package data (pyproject.toml), read as resources so an installed wheel finds them too.
PRESETS = files("training") / "presets"

Method = Literal["mole", "alllang", "perlang", "full"]
Init = Literal["pissa", "standard", "shared-last"]


def _f(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - mirrors argparse's name
    if isinstance(default, (list, tuple, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    # -- base model --------------------------------------------------------------------------------------
    base: str = _f("quickstart", "Base model: 'quickstart', a Hub repo id or a local folder (mole_lsp.engine.base_model).")
    base_cache_dir: str | None = _f(None, "Cache folder for downloaded/converted base models.")
    offline: bool = _f(False, "Never contact the Hub (cached files only).")
    base_dtype: str = _f("float32", "dtype of the frozen base weights (float32 | bfloat16).")
    attn_implementation: str = _f("sdpa", "Attention kernel passed to transformers (sdpa | eager | flash_attention_2).")

    # -- data --------------------------------------------------------------------------------------------
    data: list[str] = _f([], "Training data: local JSONL/Parquet files, folders or globs, or hub:OWNER/NAME datasets.")
    languages: list[str] = _f(list(PAPER_LANGUAGES), "Registry ids kept (a sample's main language must be one).")
    min_code_fraction: float = _f(1 / 3, "Drop samples with a smaller share of characters inside code blocks.")
    val_fraction: float = _f(0.05, "Validation share, drawn per main language (stratified).")
    split_seed: int = _f(42, "Seed of the stratified validation split.")
    use_row_split: bool = _f(True, "Honour a row's 'split' field (train | heldout | validation) when present.")
    max_rows: int | None = _f(None, "Read at most this many rows per data source (None = all).")
    max_train_samples: int | None = _f(None, "Keep at most this many training samples per language (None = all).")
    max_val_samples: int | None = _f(None, "Keep at most this many validation samples per language (None = all).")
    max_length: int = _f(2048, "Tokens per sequence; longer samples are cut (or skipped, see too_long).")
    too_long: str = _f("truncate", "truncate: cut at max_length (the authors' choice); skip: drop the sample.")
    prompt_format: str = _f("auto", "auto: the base's chat template when it has one, else plain; chat | plain.")
    system_prompt: str | None = _f(None, "System message for chat templates (None = the template's default).")
    completion_share: float | None = _f(None, "Share of raw-source completion windows (the editor's task) per language; None: as the data has them; 0: chat only.")
    fim_rate: float = _f(0.5, "Share of completion windows trained as fill-in-the-middle (bases with FIM tokens only).")

    # -- method ------------------------------------------------------------------------------------------
    method: Method = _f("mole", "mole | alllang (one LoRA r64) | perlang (one LoRA r64 per language) | full.")
    variant: str | None = _f(None, "MoLE rank split 'SHARED+EXPERT' (64+0, 56+8, 48+16, 32+32); sets r_shared/r_expert.")
    r_shared: int = _f(48, "Rank of the shared adapter (MoLE).")
    r_expert: int = _f(16, "Rank of each language expert (MoLE).")
    r_lora: int = _f(64, "Rank of the single LoRA of alllang / perlang.")
    alpha_shared: float = _f(32.0, "LoRA alpha of the shared adapter (and of the alllang/perlang LoRA).")
    alpha_expert: float = _f(16.0, "LoRA alpha of each expert.")
    alpha_nl: float = _f(32.0, "LoRA alpha of the NL adapter.")
    scaling: str = _f("rslora", "rslora (alpha/sqrt(r), the authors') | lora (alpha/r).")
    init: Init = _f("pissa", "pissa (shared takes the top components) | standard (random A, zero B) | shared-last.")
    nl_expert: bool = _f(False, "Ablation: NL tokens use shared + an 'nl' expert instead of their own adapter.")
    dropout: float = _f(0.0, "Dropout on adapter inputs.")
    svd: str = _f("exact", "SVD for PiSSA: exact (torch.linalg.svd, fp32) | randomized.")

    # -- optimisation ------------------------------------------------------------------------------------
    lr: float = _f(1e-4, "Peak learning rate (AdamW).")
    beta1: float = _f(0.9, "AdamW beta1.")
    beta2: float = _f(0.95, "AdamW beta2.")
    eps: float = _f(1e-8, "AdamW epsilon.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_grad_norm: float = _f(0.0, "Clip the gradient norm to this (0 = no clipping, as the authors).")
    micro_batch: int = _f(16, "Sequences per forward pass on each process.")
    grad_accum: int = _f(4, "Micro-batches accumulated per optimizer step (global batch = micro x accum x world).")
    epochs: float = _f(2.0, "Passes over the training data.")
    max_steps: int | None = _f(None, "Optimizer steps (overrides epochs; sets the schedule length).")
    warmup_ratio: float = _f(0.05, "Share of steps with linear warm-up.")
    schedule: str = _f("linear", "linear (decay to 0 after warm-up) | constant.")
    seed: int = _f(42, "Seed of initialisation, data order and dropout.")
    bucket_chunk: int = _f(64, "Length bucketing: sort by length within chunks of this many global batches.")

    # -- engine ------------------------------------------------------------------------------------------
    device: str = _f("auto", "auto | cpu | cuda | cuda:N.")
    precision: str = _f("bf16", "bf16: bfloat16 autocast on CUDA (on CPU only with cpu_bf16); fp32.")
    cpu_bf16: bool = _f(False, "With precision bf16, autocast on CPU too (CPUs with AVX512-BF16/AMX: 1.5-2x faster measured).")
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward (less memory).")
    compile: bool = _f(False, "torch.compile the decoder layers.")
    threads: int | None = _f(None, "torch CPU threads (None = torch default).")

    # -- output ------------------------------------------------------------------------------------------
    out: str = _f("runs/mole", "Output folder: metrics.jsonl, checkpoints/, packs/.")
    log_every: int = _f(10, "Log training metrics every N optimizer steps.")
    eval_every: int = _f(0, "Validation every N steps (0 = only before and after training).")
    eval_at_start: bool = _f(True, "Validate before the first step (the untrained baseline).")
    save_every: int = _f(0, "Checkpoint every N steps (0 = only at the end).")
    keep_checkpoints: int = _f(2, "How many recent checkpoints to keep.")
    resume: bool = _f(False, "Resume from the latest checkpoint in OUT/checkpoints.")
    stop_after: int | None = _f(None, "Stop after this step without changing the schedule (simulates an interruption).")
    export: bool = _f(True, "Export packs (mole/alllang/perlang) or the full model at the end.")
    push_to_hub: str | None = _f(None, "After export, upload the pack repository to this Hub repo id.")
    hub_revision: str = _f("main", "Branch to push to.")
    add_language: str | None = _f(None, "Train only a new expert for this language against a frozen core (--core).")
    core: str | None = _f(None, "Pack repository (or its core/ folder) to add a language to.")
    progress: bool = _f(True, "Show a tqdm progress bar.")

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        if isinstance(self.languages, str):
            self.languages = [s.strip() for s in self.languages.split(",") if s.strip()]
        self.data, self.languages = list(self.data), list(self.languages)
        if self.variant:
            try:
                a, b = (int(x) for x in self.variant.split("+"))
            except ValueError as e:
                raise ValueError(f"variant must look like '48+16', got {self.variant!r}") from e
            self.r_shared, self.r_expert = a, b
        checks = {
            "method": ("mole", "alllang", "perlang", "full"),
            "init": ("pissa", "standard", "shared-last"),
            "too_long": ("truncate", "skip"),
            "prompt_format": CHAT_LAYOUTS,
            "schedule": ("linear", "constant"),
            "precision": ("bf16", "fp32"),
        }
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        for name in ("micro_batch", "grad_accum", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 <= self.val_fraction < 1:
            raise ValueError("val_fraction must be in [0, 1)")
        if self.completion_share is not None and not 0 <= self.completion_share <= 1:
            raise ValueError("completion_share must be in [0, 1] (or None)")
        if not 0 <= self.fim_rate <= 1:
            raise ValueError("fim_rate must be in [0, 1]")
        if self.add_language and not self.core:
            raise ValueError("--add-language needs --core PACKDIR (the frozen core to train against)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- presets and files --------------------------------------------------------------------------------------
def preset_names() -> list[str]:
    """The presets shipped with the package (``paper``, ``quick``, ...)."""
    return sorted(p.name.removesuffix(".toml") for p in PRESETS.iterdir() if p.name.endswith(".toml"))


def read_preset(name: str) -> dict[str, Any]:
    """The settings of the preset ``name``; ValueError naming the available ones when there is none."""
    res = PRESETS / f"{name}.toml"
    if not res.is_file():
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    return _read_toml_text(res.read_text(encoding="utf-8"), f"preset {name}")


def _flatten(d: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name for f in fields(TrainConfig)}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = k.replace("-", "_")
        if isinstance(v, dict):  # a [section] table (no field is a table): its keys are fields
            out.update(_flatten(v, f"{where}[{k}]"))
        elif key in known:
            out[key] = v
        elif key != "preset":
            raise ValueError(f"{where}: unknown setting {k!r}")
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    return _read_toml_text(Path(path).read_text(), str(path))


def _read_toml_text(text: str, where: str) -> dict[str, Any]:
    raw = tomllib.loads(text)
    values: dict[str, Any] = {}
    if "preset" in raw:
        values.update(read_preset(raw["preset"]))
    values.update(_flatten(raw, where))
    return values


def _base_type(tp: Any) -> Any:
    """The non-None member of ``X | None``; Literal -> str."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin is Literal:
        return str
    return tp


def _parse_value(text: str, tp: Any) -> Any:
    hints = _base_type(tp)
    if text.lower() in ("none", "null") and type(None) in typing.get_args(tp):
        return None
    if hints is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")
    if hints is int:
        return int(text)
    if hints is float:
        return float(text)
    if typing.get_origin(hints) is list:
        return [s.strip() for s in text.split(",") if s.strip()]
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.finetune",
        description="MoLE joint finetune (and baselines); exports core + expert packs.",
    )
    p.add_argument("--config", help="TOML file with settings (may name a preset).")
    p.add_argument("--preset", help="Start from training/presets/NAME.toml (paper, quick).")
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        tp = hints[f.name]
        if _base_type(tp) is bool:
            # --flag sets true, --flag false / --no-flag sets false.
            p.add_argument(flag, dest=f.name, nargs="?", const=True, default=None,
                           type=lambda s, t=tp: _parse_value(s, t), help=f.metadata["help"])
            p.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                           default=None, help=argparse.SUPPRESS)
        else:
            p.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(),
                           type=lambda s, t=tp: _parse_value(s, t), help=f.metadata["help"])
    return p


def load_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults < --preset < --config file < flags."""
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    if args.preset:
        values.update(read_preset(args.preset))
    if args.config:
        values.update(read_toml(args.config))
    for f in fields(TrainConfig):
        v = getattr(args, f.name)
        if v is not None:
            values[f.name] = v
    return TrainConfig(**values)
