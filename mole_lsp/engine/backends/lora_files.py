"""The parts of a loaded MoLE model as GGUF LoRA files for llama.cpp, converted once and cached.

One route is one standard LoRA on the untouched base weight (DESIGN.md §9): a code token of language L
takes ``W + [-res, shared, expert_L]``, NL takes ``W + [-res, nl]``. Each part is written once (by
:func:`mole_lsp.export.gguf_lora.write_gguf_lora`, scale folded into A, ``alpha = 0`` so llama.cpp
applies ``B A`` as is) and the backend sets the parts of a route with their scales (-1 for the residual).

Files are cached under ``<cache>/gguf-lora/`` keyed by the sha256 of the part's factors as loaded from
its (verified) pack, so a pack is converted once per content, whatever path it was installed at. Each
file's own sha256 is recorded beside it and checked before use, like a pack file: a damaged or modified
file is written again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mole_lsp.io import atomic_write_json, read_json_object, sha256_file

RESIDUAL = "res"  # the low-rank components the core removed from W (applied with scale -1)
FORMAT = 1  # bump when the written files change for the same factors


def part_factors(mole: Any, part: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module: (A [r, in], B [out, r])}`` of one part: ``res``, ``shared``, ``nl`` or an expert's
    language, with the part's scale folded into A. Empty when the part has no factors (rank 0)."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, layer in mole.layers.items():
        if part == RESIDUAL:
            a, b = layer.res_A, layer.res_B
        else:
            pair = getattr(layer, part, None) if part in ("shared", "nl") else layer.experts[part] \
                if part in layer.experts else None
            if pair is None:
                continue
            a, b = pair.A * pair.scale, pair.B
        if a.shape[0]:
            out[name] = (a.detach().float().cpu().contiguous(), b.detach().float().cpu().contiguous())
    return out


def factors_sha256(part: str, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> str:
    h = hashlib.sha256(f"mole-gguf-lora:{FORMAT}:{part}".encode())
    for name in sorted(factors):
        a, b = factors[name]
        h.update(f"{name}:{tuple(a.shape)}:{tuple(b.shape)}".encode())
        h.update(a.numpy().tobytes())
        h.update(b.numpy().tobytes())
    return h.hexdigest()


def adapter_file(mole: Any, part: str, root: Path, *, n_head: int | None, n_head_kv: int | None,
                 arch: str = "llama") -> Path | None:
    """The GGUF LoRA file of ``part`` under ``root`` (written if missing or damaged); None: no factors."""
    from mole_lsp.export.gguf_lora import write_gguf_lora

    factors = part_factors(mole, part)
    if not factors:
        return None
    key = factors_sha256(part, factors)
    path = root / f"{key[:32]}.gguf"
    meta_path = path.with_suffix(".json")
    meta = read_json_object(meta_path)
    if meta and path.is_file() and meta.get("key") == key and sha256_file(path) == meta.get("sha256"):
        return path
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".gguf", dir=root)
    os.close(fd)
    try:
        write_gguf_lora(Path(tmp), factors, 0.0, arch=arch, name=f"mole {part}", n_head=n_head,
                        n_head_kv=n_head_kv)
        digest = sha256_file(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    atomic_write_json(meta_path, {"key": key, "part": part, "sha256": digest}, mode=0o644)
    return path
