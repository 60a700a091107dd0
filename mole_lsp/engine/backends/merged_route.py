"""One route folded into a copy of the base GGUF, for llama.cpp decoding without LoRA.

A LoRA adapter costs llama.cpp two extra products per adapted linear at every decode step whatever its
rank (bench/bench_backends.py: the quick-start base decodes at 0.6x with one route adapter). A route that
a whole request runs through (a completion: every position is the document language's code) can run on a
model whose adapted weights are ``W + B A`` instead: the base tensor is dequantized with the ``gguf``
package, the route's delta added in fp32 and the sum quantized again, which decodes at the bare base's
speed. Requantizing ``W + delta`` is a new rounding the LoRA path does not have: back to the base's Q4_1 it
costs agreement (median |logit difference| 4x the bare floor, bench/RESULTS.md), so tensors coarser than
``qtype`` (the backend's default: Q8_0) are written in it (at the floor; the quick-start file a third
larger, still the bare base's speed); finer ones keep their type. Base types the gguf package cannot
quantize (K-quants, IQ) are written in ``qtype`` too.

Files are cached under ``<cache>/gguf-merged/`` keyed by the sha256 of the route's factors (as loaded from
the verified packs) and of the base GGUF file; each file's own sha256 is recorded beside it and checked
before first use in a process, like a pack file: a damaged or modified file is written again. Only the
:data:`KEEP` most recently used files are kept (each about as large as the base).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from mole_lsp.engine.backends.lora_files import factors_sha256, write_gguf_file
from mole_lsp.export.gguf_lora import _permute_rows, gguf_tensor_name
from mole_lsp.io import atomic_write_json, read_json_object, sha256_file

FORMAT = 1  # bump when the written files change for the same factors and base
KEEP = 8  # merged files kept in the cache folder (least recently used go first)

_verified: dict[Path, tuple[int, int, int]] = {}  # path -> (inode, size, mtime) checked in this process


class MergeUnsupported(ValueError):
    """The base GGUF has an adapted tensor of a type the ``gguf`` package cannot quantize (K-quants, IQ)."""


def can_requantize(qtype: object) -> bool:
    """Whether ``gguf.quants`` can write tensors of ``qtype`` (Q4_0/1, Q5_0/1, Q8_0, F16, BF16, F32: yes)."""
    from gguf import quants
    from gguf.constants import GGML_QUANT_SIZES

    block = GGML_QUANT_SIZES[qtype][0]  # type: ignore[index]
    try:
        quants.quantize(np.zeros((1, block), dtype=np.float32), qtype)  # type: ignore[arg-type]
    except NotImplementedError:
        return False
    return True


def write_merged(base: Path, out: Path, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], *,
                 n_head: int | None, n_head_kv: int | None, qtype: str | None = None) -> None:
    """Write ``base`` with ``W + B A`` in every tensor ``factors`` adapts (HF module -> (A [r, in], B [out, r])),
    quantized to each tensor's own type, or to ``qtype`` (a ggml type name, e.g. ``Q8_0``) where that has
    more bits per weight (a Q4_1 tensor becomes Q8_0, an F16 one stays F16). When every tensor keeps its
    type the file keeps the base's layout and size, and the new tensors are written in place over a copy."""
    import gguf
    from gguf import quants

    target = gguf.GGMLQuantizationType[qtype.upper()] if qtype else None
    if target is not None and not can_requantize(target):
        raise MergeUnsupported(f"the gguf package cannot quantize to {qtype}")
    reader = gguf.GGUFReader(str(base))
    tensors = {t.name: t for t in reader.tensors}
    plan = []
    for module, (a, b) in factors.items():
        name = gguf_tensor_name(module)
        t = tensors.get(name)
        if t is None:
            raise ValueError(f"{base.name} has no tensor {name} for {module}")
        delta = (b.double() @ a.double()).float().numpy()
        for proj, heads in (("attn_q", n_head), ("attn_k", n_head_kv)):
            if f".{proj}." in name:
                if heads is None:
                    raise ValueError(f"{module}: q/k deltas need n_head and n_head_kv (llama.cpp row order)")
                delta = _permute_rows(delta, heads)
        plan.append((t, delta))
    types = {t.name: target if target is not None and _bits(target) > _bits(t.tensor_type) else t.tensor_type
             for t, _ in plan}
    for t, _ in plan:
        if not can_requantize(types[t.name]):
            raise MergeUnsupported(f"{t.name} is {t.tensor_type.name}, which the gguf package cannot quantize")
    if any(types[t.name] != t.tensor_type for t, _ in plan):
        _rewrite(reader, out, {t.name: (quants.quantize(_summed(t, delta), types[t.name]), types[t.name])
                               for t, delta in plan})
        return
    shutil.copyfile(base, out)
    with open(out, "r+b") as fh:
        for t, delta in plan:
            data = quants.quantize(_summed(t, delta), t.tensor_type)
            if data.nbytes != t.n_bytes:
                raise ValueError(f"{t.name}: requantized to {data.nbytes} bytes, the base has {t.n_bytes}")
            fh.seek(t.data_offset)
            fh.write(np.ascontiguousarray(data).tobytes())
    del reader


def _summed(t: object, delta: np.ndarray) -> np.ndarray:
    """The base tensor ``t`` (a gguf ReaderTensor) dequantized, plus ``delta``, in fp32."""
    from gguf import quants

    w = quants.dequantize(np.asarray(t.data), t.tensor_type)  # type: ignore[attr-defined]
    if w.shape != delta.shape:
        raise ValueError(f"{t.name}: base {w.shape} vs delta {delta.shape}")  # type: ignore[attr-defined]
    return (w.astype(np.float32) + delta).astype(np.float32)


def _bits(qtype: object) -> float:
    """Bits per weight of a ggml type."""
    from gguf.constants import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[qtype]  # type: ignore[index]
    return 8 * size / block


def _rewrite(reader: object, out: Path, new: dict[str, tuple[np.ndarray, object]]) -> None:
    """A copy of the GGUF ``reader`` reads (every metadata field, every tensor) with the tensors ``new``
    (name -> (data, its ggml type)) in place of the base's (as gguf's own gguf_new_metadata copies)."""
    import gguf

    r: gguf.GGUFReader = reader  # type: ignore[assignment]
    arch = r.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(str(out), arch, endianess=r.endianess)
    for field in r.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        kind = field.types[0]
        writer.add_key_value(field.name, field.contents(), kind,
                             sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    tensors = [(t.name, *new.get(t.name, (t.data, t.tensor_type))) for t in r.tensors]
    for name, data, qtype in tensors:
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, qtype)  # type: ignore[arg-type]
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data, _ in tensors:
        writer.write_tensor_data(data, tensor_endianess=r.endianess)
    writer.close()


def merged_file(base: Path, base_sha256: str, factors: dict[str, tuple[torch.Tensor, torch.Tensor]], route: str,
                root: Path, *, n_head: int | None, n_head_kv: int | None, qtype: str | None = None,
                write: bool = True) -> Path | None:
    """The GGUF of ``base`` with ``route``'s factors folded in, under ``root``: written if missing or
    damaged (atomically), reused otherwise. None: no factors, or not there yet and not ``write``."""
    if not factors:
        return None
    key = factors_sha256(f"merged:{FORMAT}:{base_sha256}:{route}:{qtype or 'same'}", factors)
    path = root / f"{key[:32]}.gguf"
    meta_path = path.with_suffix(".json")
    if _good(path, meta_path, key):
        st = path.stat()
        os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))  # most recently used (atime): kept by _prune
        return path
    if not write:
        return None
    digest = write_gguf_file(path, lambda tmp: write_merged(base, tmp, factors, n_head=n_head, n_head_kv=n_head_kv,
                                                            qtype=qtype))
    atomic_write_json(meta_path, {"key": key, "route": route, "base_sha256": base_sha256, "qtype": qtype,
                                  "sha256": digest},
                      mode=0o644)
    _verified[path] = _stat(path)
    _prune(root, keep=path)
    return path


def _stat(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _good(path: Path, meta_path: Path, key: str) -> bool:
    """The file is the one recorded for ``key`` (its sha256 checked once per process and file stats)."""
    meta = read_json_object(meta_path)
    if not meta or meta.get("key") != key or not path.is_file():
        return False
    stat = _stat(path)
    if _verified.get(path) == stat:
        return True
    if sha256_file(path) != meta.get("sha256"):
        return False
    _verified[path] = stat
    return True


def _prune(root: Path, keep: Path) -> None:
    files = sorted(root.glob("*.gguf"), key=lambda p: p.stat().st_atime_ns, reverse=True)
    for old in files[KEEP:]:
        if old != keep:
            for p in (old, old.with_suffix(".json")):
                p.unlink(missing_ok=True)
            _verified.pop(old, None)
