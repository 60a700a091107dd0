"""Shared fixtures: tiny random Llama models (no network, no ../shared needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the real Hub; local hubs set their own
torch.set_num_threads(1)

pytest_plugins = ["hub_server"]  # the local_hub fixture (a stdlib stand-in for the Hugging Face Hub)

from helpers import SMOLLM2, make_tiny_llama  # noqa: E402


@pytest.fixture
def tiny_llama():
    return make_tiny_llama()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    if not (SMOLLM2 / "tokenizer.json").exists():
        pytest.skip("SmolLM2 quick-start model not present (../shared/models)")
    return SMOLLM2
