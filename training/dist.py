"""Processes and devices of a run: torchrun ranks, the device, bf16 autocast, seeding, gradient sums.

Several processes (torchrun; NCCL on CUDA, gloo on CPU): every process builds the same batch plan and
takes its share of each step's micro-batches; gradients are summed with one all-reduce per optimizer step
(adapters are small, and experts absent from a step stay without a gradient on every process, exactly as
in a single process).
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as tdist

from mole_lsp.engine.device import pick_device
from training.config import TrainConfig


@dataclass
class Dist:
    """This process's place in the run (rank 0 of 1 without torchrun) and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()


def setup_dist(cfg: TrainConfig) -> Dist:
    """Read the torchrun environment, pick the device and start the process group when there are several."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(pick_device(cfg.device, mps=False))
    if device.type == "cuda":
        device = torch.device("cuda", local if world > 1 else (device.index or 0))
        torch.cuda.set_device(device)
    if world > 1 and not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local, device)


def autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``precision = "bf16"`` (on CPU too with ``cpu_bf16``); else fp32."""
    if cfg.precision == "bf16" and (device.type == "cuda" or (device.type == "cpu" and cfg.cpu_bf16)):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def sync_grads(params: Sequence[torch.nn.Parameter], dist: Dist) -> None:
    """Sum gradients over processes; a parameter no process touched keeps grad None (AdamW skips it)."""
    if not dist.enabled:
        return
    dev = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=dev)
    dist.all_reduce(has)
    live = [p for p, h in zip(params, has.tolist(), strict=True) if h > 0]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if live:
        flat = torch.cat([p.grad.reshape(-1) for p in live])
        dist.all_reduce(flat)
        off = 0
        for p in live:
            n = p.numel()
            p.grad.copy_(flat[off:off + n].view_as(p))
            off += n
