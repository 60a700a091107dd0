"""Backends that run the model for the decoder (see :mod:`.base`), and which one an engine uses.

``auto`` picks llama.cpp when llama-cpp-python is installed, the base model is a GGUF file and the model
runs on the CPU; torch otherwise. ``torch`` / ``llamacpp`` force one (llamacpp falls back to torch, with
the reason, when it cannot run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mole_lsp.engine.backends.base import BACKENDS, Backend
from mole_lsp.engine.backends.torch_backend import TorchBackend

__all__ = ["BACKENDS", "Backend", "TorchBackend", "choose_backend", "make_backend"]


def choose_backend(choice: str, gguf: Path | None, device: str) -> tuple[str, str]:
    """``(backend name, why)`` for the setting ``choice`` (auto, torch, llamacpp)."""
    from mole_lsp.engine.backends.llamacpp import available

    if choice not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {choice!r}")
    if choice == "torch":
        return "torch", "the backend setting is torch"
    asked = "the backend setting is llamacpp" if choice == "llamacpp" else "auto"
    if not available():
        return "torch", f"{asked}, but llama-cpp-python is not installed (pip install 'mole-lsp[fast]')"
    if gguf is None:
        return "torch", f"{asked}, but the base model is not a GGUF file"
    if device != "cpu":
        return "torch", f"{asked}, but the model runs on {device} (llama.cpp is used on the CPU)"
    if choice == "llamacpp":
        return "llamacpp", "the backend setting is llamacpp"
    return "llamacpp", "auto: llama-cpp-python is installed and the base model is a GGUF file"


def make_backend(choice: str, experts: Any, *, gguf: Path | None, device: str, config: Any = None,
                 threads: int | None = None) -> tuple[Backend, str]:
    """The backend for ``choice`` over ``experts`` (an ExpertManager) and why it was chosen."""
    name, why = choose_backend(choice, gguf, device)
    if name == "torch":
        return TorchBackend(experts), why
    from mole_lsp.engine.backends.llamacpp import LlamaCppBackend
    from mole_lsp.paths import cache_dir

    heads = (getattr(config, "num_attention_heads", None), getattr(config, "num_key_value_heads", None))
    backend = LlamaCppBackend(gguf, experts, lora_dir=cache_dir() / "gguf-lora", threads=threads,  # type: ignore[arg-type]
                              n_head=heads[0], n_head_kv=heads[1])
    return backend, why
