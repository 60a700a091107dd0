"""The one device and dtype rule (mole_lsp/engine/device.py)."""

from __future__ import annotations

import torch

from mole_lsp.engine.device import default_dtype, pick_device


def test_auto_device_follows_torch(monkeypatch):
    auto = pick_device("auto")
    assert auto in ("cpu", "cuda", "mps")
    assert (auto == "cuda") == torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto") == "mps"
    assert pick_device("auto", mps=False) == "cpu"  # training's rule: CUDA or CPU
    assert pick_device("mps", mps=False) == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == "cpu"
    # An explicit device is taken as given, whatever torch says is available.
    for device in ("cpu", "cuda", "cuda:1", "mps"):
        assert pick_device(device) == device


def test_default_dtype_is_fp32_on_cpu_and_bf16_elsewhere():
    assert default_dtype("cpu") is torch.float32
    assert default_dtype(torch.device("cpu")) is torch.float32
    for device in ("cuda", "cuda:1", "mps", torch.device("cuda", 0)):
        assert default_dtype(device) is torch.bfloat16
