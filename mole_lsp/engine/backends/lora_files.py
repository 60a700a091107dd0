"""The parts of a loaded MoLE model as GGUF LoRA files for llama.cpp, converted once and cached.

One route is one standard LoRA on the untouched base weight (DESIGN.md §9): a code token of language L
takes ``W + [-res, shared, expert_L]``, NL takes ``W + [-res, nl]``. Each route is written as ONE adapter
(the parts' factors concatenated, every scale, -1 for the residual, folded into A; ``alpha = 0`` so
llama.cpp applies ``B A`` as is) by :func:`mole_lsp.export.gguf_lora.write_gguf_lora`: one adapter per
route costs llama.cpp two small products per linear, three separate parts cost six (measured on the
quick-start base: decode with an expert 0.55x the bare base with parts, see bench/bench_backends.py).

Files are cached under ``<cache>/gguf-lora/`` keyed by the sha256 of the route's factors as loaded from
the (verified) packs, so packs are converted once per content, whatever path they were installed at.
Each file's own sha256 is recorded beside it and checked before use, like a pack file: a damaged or
modified file is written again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from mole_lsp.io import atomic_write_json, read_json_object, sha256_file

RESIDUAL = "res"  # the low-rank components the core removed from W (applied with scale -1)
GENERIC = "generic"  # the generic expert of code without an expert (rows of the residual, see core/layer.py)
FORMAT = 1  # bump when the written files change for the same factors


def write_gguf_file(path: Path, write: Callable[[Path], None]) -> str:
    """Write a cached GGUF through ``write`` into a temporary file beside ``path``, then move it in place
    (a reader never sees half a file); the file's sha256, for its metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".gguf", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        digest = sha256_file(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return digest


def part_factors(mole: Any, part: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module: (A [r, in], B [out, r])}`` of one part: ``res``, ``generic``, ``shared``, ``nl`` or an
    expert's language, with the part's scale folded into A. Empty when the part has no factors (rank 0)."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, layer in mole.layers.items():
        if part == RESIDUAL:
            a, b = layer.res_A, layer.res_B
        elif part == GENERIC:
            pair = layer.generic()
            if pair is None:
                continue
            a, b = pair.A * pair.scale, pair.B
        else:
            pair = getattr(layer, part, None) if part in ("shared", "nl") else layer.experts[part] \
                if part in layer.experts else None
            if pair is None:
                continue
            a, b = pair.A * pair.scale, pair.B
        if a.shape[0]:
            out[name] = (a.detach().float().cpu().contiguous(), b.detach().float().cpu().contiguous())
    return out


def route_factors(mole: Any, parts: list[tuple[str, float]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One LoRA for a route: the factors of ``parts`` (name, scale) concatenated per module, each scale
    folded into A."""
    per_part = [(part_factors(mole, p), s) for p, s in parts]
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name in mole.layers:
        got = [(f[name][0] * s, f[name][1]) for f, s in per_part if name in f]
        if got:
            out[name] = (torch.cat([a for a, _ in got]).contiguous(), torch.cat([b for _, b in got], dim=1).contiguous())
    return out


def factors_sha256(part: str, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> str:
    h = hashlib.sha256(f"mole-gguf-lora:{FORMAT}:{part}".encode())
    for name in sorted(factors):
        a, b = factors[name]
        h.update(f"{name}:{tuple(a.shape)}:{tuple(b.shape)}".encode())
        h.update(a.numpy().tobytes())
        h.update(b.numpy().tobytes())
    return h.hexdigest()


def adapter_file(factors: dict[str, tuple[torch.Tensor, torch.Tensor]], part: str, root: Path, *,
                 n_head: int | None, n_head_kv: int | None, arch: str = "llama",
                 dtype: Literal["f32", "f16"] = "f32") -> Path | None:
    """The GGUF LoRA file of ``factors`` (named ``part``) under ``root``, written if missing or damaged;
    None: no factors."""
    from mole_lsp.export.gguf_lora import write_gguf_lora

    if not factors:
        return None
    key = factors_sha256(f"{part}:{dtype}", factors)
    path = root / f"{key[:32]}.gguf"
    meta_path = path.with_suffix(".json")
    meta = read_json_object(meta_path)
    if meta and path.is_file() and meta.get("key") == key and sha256_file(path) == meta.get("sha256"):
        return path
    digest = write_gguf_file(path, lambda tmp: write_gguf_lora(tmp, factors, 0.0, arch=arch, name=f"mole {part}",
                                                              n_head=n_head, n_head_kv=n_head_kv, dtype=dtype))
    atomic_write_json(meta_path, {"key": key, "part": part, "sha256": digest}, mode=0o644)
    return path
