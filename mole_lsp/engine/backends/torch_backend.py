"""The torch backend: today's path, the exact reference (training, tests, GPU)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mole_lsp.engine.backends.base import Backend
from mole_lsp.engine.experts import ExpertManager
from mole_lsp.engine.kvcache import KVStore


class TorchBackend(Backend):
    """The routed MoleModel forward of ``experts`` with Hugging Face dynamic caches kept in a KVStore."""

    name = "torch"
    merges = True

    def __init__(self, experts: ExpertManager) -> None:
        self.experts = experts
        self.kv = KVStore()

    def forward(self, ids: list[int], labels: Sequence[str], past: Any) -> tuple[torch.Tensor, Any]:
        return self.experts.forward(ids, labels, past)
