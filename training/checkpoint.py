"""Checkpoints for exact resume: ``OUT/checkpoints/step-N`` with safetensors + JSON, no pickle.

A checkpoint holds the trainable tensors, the AdamW state, the RNG state and the step. The data order is a
pure function of seed, epoch and step and the learning rate a function of the step, so a resumed run gives
the same losses as an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mole_lsp.io import atomic_dir, read_json_object
from training.config import TrainConfig
from training.methods import Prepared

CKPT_DIR = "checkpoints"
TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"


def checkpoint_root(out: Path) -> Path:
    """The folder holding a run's ``step-N`` checkpoints."""
    return out / CKPT_DIR


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint of the run in ``out`` (None when there is none)."""
    root = checkpoint_root(out)
    steps = sorted(root.glob(f"step-*/{STATE}")) if root.is_dir() else []
    return steps[-1].parent if steps else None


def save_checkpoint(out: Path, step: int, prep: Prepared, opt: torch.optim.Optimizer, cfg: TrainConfig,
                    extra: dict[str, Any]) -> Path:
    """Write ``step-N`` atomically (built beside its name, then renamed); keep the newest few."""
    root = checkpoint_root(out)
    final = root / f"step-{step:08d}"
    with atomic_dir(final) as tmp:
        save_file({n: p.detach().cpu().contiguous() for n, p in prep.named_trainable().items()}, str(tmp / TRAINABLE))
        sd = opt.state_dict()
        tensors = {f"state.{i}.{k}": v.detach().cpu().contiguous()
                   for i, st in sd["state"].items() for k, v in st.items() if torch.is_tensor(v)}
        tensors["rng.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        save_file(tensors, str(tmp / OPTIMIZER))
        # The folder is renamed into place whole, so its files need no atomic write of their own.
        state = {"step": step, "param_groups": sd["param_groups"], "config": cfg.to_dict(), **extra}
        (tmp / STATE).write_text(json.dumps(state, indent=1))
    for old in sorted(root.glob("step-*"))[:-max(1, cfg.keep_checkpoints)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, prep: Prepared, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore trainable tensors, optimizer and RNG state from ``path``; returns its state.json."""
    state = read_json_object(path / STATE)
    if state is None:
        raise ValueError(f"{path}: no readable {STATE}")
    named = prep.named_trainable()
    weights = load_file(str(path / TRAINABLE))
    if set(weights) != set(named):
        raise ValueError(f"{path}: checkpoint holds other tensors than this run trains (another method?)")
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(weights[n].to(p.device, p.dtype))
    tensors = load_file(str(path / OPTIMIZER))
    per: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("state."):
            _, i, k = key.split(".", 2)
            per.setdefault(int(i), {})[k] = v
    groups = state["param_groups"]
    for g in groups:
        g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": per, "param_groups": groups})
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(tensors["rng.cuda"]))
    for g in opt.param_groups:  # AdamW moves state to the param device; keep step counters on CPU
        for p in g["params"]:
            st = opt.state.get(p)
            if st and "step" in st and torch.is_tensor(st["step"]):
                st["step"] = st["step"].cpu()
    return state
