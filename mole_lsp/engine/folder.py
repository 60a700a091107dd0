"""Reading and checking a transformers model folder (config, tokenizer, safetensors) into a
:class:`~mole_lsp.engine.model_info.BaseModelInfo`: only Llama-family causal LMs, whose gated FFN
projections MoLE adapts, are accepted."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mole_lsp.engine.identity import weights_identity
from mole_lsp.engine.model_info import FIM_PRESETS, BaseModelError, BaseModelInfo, FimTokens
from mole_lsp.io import read_json_object

# Architectures whose decoder layers carry a gated FFN with gate_proj/up_proj/down_proj (MoLE's targets).
LLAMA_FAMILY = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "granite", "olmo", "olmo2", "gemma", "gemma2", "helium", "smollm3"}
)
FFN_MODULES = ("gate_proj", "up_proj", "down_proj")

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)


def info_from_folder(
    path: Path,
    repo_id: str,
    revision: str | None,
    name: str,
    source: str,
    gguf_sha256: str | None = None,
) -> BaseModelInfo:
    """Check the folder (model type, tokenizer) and describe it; the weights sha256 is computed (or cached)."""
    config = read_json_object(path / "config.json")
    if config is None:
        raise BaseModelError(f"{path} has no readable config.json")
    check_model_type(config.get("model_type"), config.get("architectures"), path)
    if not has_tokenizer(path):
        raise BaseModelError(
            f"{path} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json + merges.txt)"
        )
    text = config.get("text_config") or config
    return BaseModelInfo(
        path=path,
        repo_id=repo_id,
        revision=revision,
        weights_sha256=weights_identity(path),
        fim=detect_fim_tokens(path),
        name=name,
        source=source,
        model_type=str(config["model_type"]),
        num_layers=int(text.get("num_hidden_layers", 0)),
        hidden_size=int(text.get("hidden_size", 0)),
        intermediate_size=int(text.get("intermediate_size", 0)),
        vocab_size=int(text.get("vocab_size", 0)),
        gguf_sha256=gguf_sha256,
    )


def check_model_type(model_type: str | None, architectures: list[str] | None, where: Path) -> None:
    """Refuse anything but a Llama-family causal LM (``where`` names the model in the message)."""
    if model_type not in LLAMA_FAMILY:
        raise BaseModelError(
            f"{where}: model type {model_type!r} is not a supported Llama-family causal LM "
            f"(supported: {', '.join(sorted(LLAMA_FAMILY))}); MoLE adapts the gate/up/down FFN projections"
        )
    if architectures and not any(a.endswith("ForCausalLM") for a in architectures):
        raise BaseModelError(f"{where}: {architectures} is not a causal language model")


def check_ffn_layout(model: Any, where: Path) -> None:
    """Refuse a loaded model whose decoder layers lack the gated FFN linears MoLE adapts."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not layers:
        raise BaseModelError(f"{where}: the model has no decoder layers at model.model.layers")
    for index, layer in enumerate(layers):
        mlp = getattr(layer, "mlp", None)
        if mlp is None or not all(isinstance(getattr(mlp, m, None), torch.nn.Linear) for m in FFN_MODULES):
            raise BaseModelError(
                f"{where}: layer {index} has no gated FFN with {'/'.join(FFN_MODULES)} linears"
            )


def has_tokenizer(folder: Path) -> bool:
    """Whether the folder holds tokenizer files transformers can load."""
    return (
        (folder / "tokenizer.json").is_file()
        or (folder / "tokenizer.model").is_file()
        or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())
    )


def detect_fim_tokens(folder: str | os.PathLike[str]) -> FimTokens | None:
    """The FIM preset whose three tokens are all in the folder's tokenizer, or None (prefix-only model)."""
    vocab = _tokenizer_vocabulary(Path(folder))
    for preset in FIM_PRESETS:
        if {preset.prefix, preset.suffix, preset.middle} <= vocab:
            return preset
    return None


def _tokenizer_vocabulary(folder: Path) -> set[str]:
    """Token strings listed in the folder's tokenizer.json / tokenizer_config.json / vocab.json."""
    vocab: set[str] = set()
    data = read_json_object(folder / "tokenizer.json") or {}
    vocab.update(t.get("content", "") for t in data.get("added_tokens") or [])
    model_vocab = (data.get("model") or {}).get("vocab")
    if isinstance(model_vocab, dict):
        vocab.update(model_vocab)
    elif isinstance(model_vocab, list):  # unigram: [[piece, score], ...]
        vocab.update(str(item[0]) for item in model_vocab if item)
    config = read_json_object(folder / "tokenizer_config.json") or {}
    vocab.update(t.get("content", "") for t in (config.get("added_tokens_decoder") or {}).values())
    vocab.update(read_json_object(folder / "vocab.json") or {})
    return vocab
