"""PEFT LoRA folders (``adapter_config.json`` + ``adapter_model.safetensors``) that ``peft``, vLLM
(``--enable-lora --lora-modules name=DIR``) and other PEFT readers load on the untouched base.

Written by hand (no ``peft`` import: it is not a runtime dependency) in PEFT's own key layout:
``base_model.model.<module>.lora_A.weight`` [r, in] and ``...lora_B.weight`` [out, r]; PEFT computes
``W x + (lora_alpha / r) B A x`` (``use_rslora`` false), so ``lora_alpha = r`` applies the factors as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"


def write_peft_lora(
    out_dir: Path,
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    base_model: str,
    revision: str | None,
    target_modules: Sequence[str],
    dtype: torch.dtype = torch.float32,
) -> Path:
    """A PEFT LoRA folder applying ``W x + B A x`` to every module of ``factors`` (all of one rank)."""
    ranks = {a.shape[0] for a, _ in factors.values()}
    if len(ranks) != 1:
        raise ValueError(f"every module needs the same rank, got {sorted(ranks)}")
    (r,) = ranks
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for module, (a, b) in factors.items():
        key = f"base_model.model.{module}"
        tensors[f"{key}.lora_A.weight"] = a.to(dtype).contiguous()
        tensors[f"{key}.lora_B.weight"] = b.to(dtype).contiguous()
    save_file(tensors, str(out_dir / WEIGHTS), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "revision": revision,
        "r": r,
        "lora_alpha": r,  # scaling alpha / r = 1: the route's scales are folded into A
        "use_rslora": False,
        "use_dora": False,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "target_modules": sorted(set(target_modules)),
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    (out_dir / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out_dir
