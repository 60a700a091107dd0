"""GGUF LoRA adapter files that llama.cpp (``llama_adapter_lora_init``, ``llama-server --lora``, Ollama's
``ADAPTER``) loads on a GGUF base of the same architecture.

What llama.cpp does with such a file (llama-adapter.cpp, llama-graph.cpp ``build_lora_mm``):

- metadata: ``general.type`` must be ``adapter``, ``general.architecture`` must equal the base's
  architecture, ``adapter.type`` must be ``lora``; ``adapter.lora.alpha`` is read as a float (0 when
  absent).
- tensors: for every base tensor ``X`` that is adapted, ``X.lora_a`` and ``X.lora_b``. In numpy
  (row-major) order ``lora_a`` is ``[r, in]`` and ``lora_b`` is ``[out, r]``, i.e. exactly PyTorch's
  ``lora_A.weight`` / ``lora_B.weight`` (ggml's ``ne`` is the reversed shape: the base ``ne = [in, out]``,
  ``a.ne = [in, r]``, ``b.ne = [r, out]``; llama.cpp checks ``a.ne[1] == b.ne[0]``).
- math: ``y = W x + scale * B (A x)`` with ``scale = user_scale * alpha / r`` where ``r = b.ne[0]`` is the
  rank of THAT tensor (ranks may differ per tensor) and ``user_scale`` is the per-request / ``--lora-scaled``
  scale (1 by default); when ``alpha == 0`` the scale is ``user_scale`` alone (no ``alpha / r``).

So ``write_gguf_lora(path, factors, alpha)`` makes llama.cpp compute ``W x + (alpha / r_t) B_t A_t x`` for
every tensor ``t`` of rank ``r_t``. To reproduce ``W x + B A x`` with the scale already folded into B,
pass ``alpha=0`` (or ``alpha = r`` when every tensor has rank r).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch

# HF Llama module (relative to ``model.layers.N.``) -> llama.cpp tensor stem (before ``.weight``)
_LLAMA_MODULES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_LAYER = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(.+?)(?:\.weight)?$")


def gguf_tensor_name(module: str) -> str:
    """The llama.cpp tensor name of an HF Llama linear, e.g. ``model.layers.3.mlp.gate_proj`` ->
    ``blk.3.ffn_gate.weight`` (a PEFT ``base_model.model.`` prefix or ``.weight`` suffix is accepted)."""
    m = _LAYER.match(module)
    if m is None or m.group(2) not in _LLAMA_MODULES:
        raise ValueError(f"no llama.cpp tensor for module {module!r} (supported: {sorted(_LLAMA_MODULES)})")
    return f"blk.{m.group(1)}.{_LLAMA_MODULES[m.group(2)]}.weight"


def _permute_rows(b: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k output-row order (its converter permutes q/k weights for its rope layout; the LoRA
    B rows, being output rows, take the same permutation)."""
    out = b.shape[0]
    return b.reshape(n_head, 2, out // n_head // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


def write_gguf_lora(
    path: Path,
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    alpha: float,
    *,
    arch: str = "llama",
    name: str = "",
    dtype: Literal["f32", "f16"] = "f32",
    n_head: int | None = None,
    n_head_kv: int | None = None,
) -> None:
    """Write a GGUF LoRA adapter: ``factors`` maps HF module names to ``(A [r, in], B [out, r])``; llama.cpp
    then computes ``W x + (alpha / r_t) B A x`` per tensor (``alpha == 0``: ``W x + B A x``).

    q_proj / k_proj factors need the base's head counts (``n_head``, ``n_head_kv``) for llama.cpp's row
    order. ``dtype="f16"`` halves the file at fp16 precision."""
    import gguf

    if not factors:
        raise ValueError("no LoRA factors to write")
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    if name:
        writer.add_name(name)
    np_dtype = np.float16 if dtype == "f16" else np.float32
    file_type = gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(file_type)
    for module, (a, b) in factors.items():
        a_np = a.detach().to(torch.float32).cpu().numpy()
        b_np = b.detach().to(torch.float32).cpu().numpy()
        if a_np.ndim != 2 or b_np.ndim != 2 or a_np.shape[0] != b_np.shape[1]:
            raise ValueError(
                f"{module}: expected A [r, in] and B [out, r], got {a_np.shape} and {b_np.shape}"
            )
        tensor = gguf_tensor_name(module)
        for proj, heads in (("attn_q", n_head), ("attn_k", n_head_kv)):
            if f".{proj}." in tensor:
                if heads is None:
                    raise ValueError(f"{module}: q/k factors need n_head and n_head_kv (llama.cpp row order)")
                b_np = _permute_rows(b_np, heads)
        writer.add_tensor(f"{tensor}.lora_a", np.ascontiguousarray(a_np, dtype=np_dtype))
        writer.add_tensor(f"{tensor}.lora_b", np.ascontiguousarray(b_np, dtype=np_dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
