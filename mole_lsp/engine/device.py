"""The one device and dtype rule for serving, evaluation and training, and CPU thread set-up.

``auto`` takes CUDA, then Apple's MPS, then the CPU. Weights run in fp32 on the CPU (bf16 matmuls are
slower than fp32 on the CPUs we measured) and in bf16 on accelerators.
"""

from __future__ import annotations

import os

import torch

__all__ = ["configure_threads", "default_dtype", "pick_device"]


def pick_device(device: str = "auto", *, mps: bool = True) -> str:
    """``device`` itself, or for ``"auto"`` the best available: ``"cuda"``, ``"mps"`` or ``"cpu"``.

    ``mps=False`` leaves Apple's MPS out of ``"auto"`` (training: bf16 autocast, DDP and exact resume
    are untested there; asking for ``"mps"`` explicitly still works).
    """
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if mps and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def default_dtype(device: str | torch.device) -> torch.dtype:
    """The weight dtype for inference on ``device``: fp32 on the CPU, bf16 elsewhere."""
    kind = device.type if isinstance(device, torch.device) else str(device).split(":", 1)[0]
    return torch.float32 if kind == "cpu" else torch.bfloat16


def configure_threads(threads: int | None = None) -> int:
    """Thread setup that keeps CPU timings steady on small shared machines.

    OMP_WAIT_POLICY=PASSIVE only works when set before torch starts its pool: entry points set it
    before importing torch; here we only pick the thread count (default: the cores we may use).
    """
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            threads = os.cpu_count() or 1
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already started
        pass
    return threads
