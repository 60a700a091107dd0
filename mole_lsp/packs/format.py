"""Packs: the files that carry trained adapters, and the one place where they are written, read and verified.

A pack is a folder with ``manifest.json`` and ``adapters.safetensors`` (safetensors only; never pickle):

- **core pack**: per wrapped linear the residual factors (``res_A``, ``res_B``: what to subtract from the
  ORIGINAL base weight), the shared adapter and the NL adapter;
- **expert pack** (one per language): that language's expert factors. It names the core it was trained
  with (sha256 of the core's adapters file) and is refused with any other core.

A pack repository (on the Hub or on disk) is laid out as ``core/``, ``experts/<language-id>/`` and
``index.json`` (see :func:`write_index`).

Manifest fields: ``format``, ``format_version``, ``kind``, ``language`` (experts), ``base`` (repo id,
revision, weights sha256, architecture and FFN shape), ``layout`` (ranks, scales, target modules, NL
mode), ``modules`` (wrapped linear names), ``languages`` (trained jointly), ``core_sha256`` (experts),
``files`` (sha256 and size of every file), ``provenance`` (free-form training facts), ``created``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mole_lsp.core.config import MoleConfig
from mole_lsp.core.init import apply_residual
from mole_lsp.core.model import MoleModel, attach_mole
from mole_lsp.io import atomic_dir, sha256_file

FORMAT = "mole-pack"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ADAPTERS = "adapters.safetensors"
INDEX = "index.json"
CORE_DIR = "core"  # folder of the core pack in a pack repository
EXPERTS_DIR = "experts"  # folder holding one folder per expert pack, named by language id
CORE_PACK = "core"  # the core pack's name where packs are listed next to languages (store listings)


class PackError(ValueError):
    """A pack that cannot be used; the message says why."""


@dataclass(frozen=True)
class BaseIdentity:
    """Which base checkpoint a pack belongs to. weights_sha256 decides when both sides know it."""

    repo_id: str
    revision: str | None = None
    weights_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "revision": self.revision, "weights_sha256": self.weights_sha256,
                **self.extra}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BaseIdentity:
        extra = {k: v for k, v in d.items() if k not in ("repo_id", "revision", "weights_sha256")}
        return cls(d.get("repo_id", ""), d.get("revision"), d.get("weights_sha256"), extra)

    def mismatch(self, other: BaseIdentity) -> str | None:
        """Why ``other`` is not this base, or None when it is."""
        if self.weights_sha256 and other.weights_sha256:
            if self.weights_sha256 != other.weights_sha256:
                return (f"base weights differ: pack was trained on {other.repo_id or '?'} "
                        f"(sha256 {other.weights_sha256[:12]}…), loaded base is {self.repo_id or '?'} "
                        f"(sha256 {self.weights_sha256[:12]}…)")
            return None
        if self.repo_id != other.repo_id:
            return f"pack was trained on base {other.repo_id!r}, loaded base is {self.repo_id!r}"
        if self.revision and other.revision and self.revision != other.revision:
            return f"pack was trained on {other.repo_id}@{other.revision}, loaded base is @{self.revision}"
        return None


def fingerprint_model(model: nn.Module) -> str:
    """sha256 over a model's parameters (name, dtype, shape, bytes): a base identity for in-memory models.

    Call it on the UNMODIFIED base (before attach_mole changes FFN weights into residuals).
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# -- writing --------------------------------------------------------------------------------------------
def _model_shape(mole: MoleModel) -> dict[str, Any]:
    cfg = getattr(mole.model, "config", None)
    return {
        "architecture": (getattr(cfg, "architectures", None) or [type(mole.model).__name__])[0],
        "model_type": getattr(cfg, "model_type", None),
        "hidden_size": getattr(cfg, "hidden_size", None),
        "intermediate_size": getattr(cfg, "intermediate_size", None),
        "num_hidden_layers": getattr(cfg, "num_hidden_layers", None),
    }


def _write_pack(out: Path, tensors: dict[str, torch.Tensor], manifest: dict[str, Any]) -> Path:
    """Write atomically: a half-written pack is never visible under its final name."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp / ADAPTERS),
                  metadata={"format": FORMAT})
        manifest["files"] = {ADAPTERS: {"sha256": sha256_file(tmp / ADAPTERS), "size": (tmp / ADAPTERS).stat().st_size}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out


def _manifest(mole: MoleModel, kind: str, base: BaseIdentity, provenance: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "base": {**base.to_dict(), **_model_shape(mole)},
        "layout": mole.config.layout(),
        "mole_config": mole.config.to_dict(),
        "modules": sorted(mole.layers),
        "languages": list(mole.languages),
        "provenance": dict(provenance or {}),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def export_core(mole: MoleModel, out_dir: str | os.PathLike, base: BaseIdentity,
                provenance: Mapping[str, Any] | None = None) -> Path:
    """Write the core pack of ``mole`` (residuals, shared and NL adapters) to ``out_dir``."""
    return _write_pack(Path(out_dir), mole.adapter_tensors("core"), _manifest(mole, "core", base, provenance))


def export_expert(mole: MoleModel, lang: str, out_dir: str | os.PathLike, base: BaseIdentity, core_sha256: str,
                  provenance: Mapping[str, Any] | None = None) -> Path:
    """Write the expert pack of ``lang`` to ``out_dir``, bound to the core whose adapters hash is ``core_sha256``."""
    if lang not in mole.slots:
        raise PackError(f"the model has no expert for {lang!r} (it has: {', '.join(mole.languages) or 'none'})")
    manifest = _manifest(mole, "expert", base, provenance)
    manifest.update(language=lang, core_sha256=core_sha256)
    return _write_pack(Path(out_dir), mole.adapter_tensors(lang), manifest)


def export_packs(mole: MoleModel, repo_dir: str | os.PathLike, base: BaseIdentity | None = None,
                 languages: Iterable[str] | None = None, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``core/`` + ``experts/<lang>/`` for every expert (or the given ones), and ``index.json``.

    Every expert slot is exported by default, including the ``nl`` expert of ``nl_mode="expert"``.
    """
    base = base or _identity_of(mole)
    repo = Path(repo_dir)
    core = export_core(mole, repo / CORE_DIR, base, provenance)
    core_sha = read_manifest(core)["files"][ADAPTERS]["sha256"]
    for lang in languages if languages is not None else list(mole.slots):
        export_expert(mole, lang, repo / EXPERTS_DIR / lang, base, core_sha, provenance)
    write_index(repo)
    return repo


def _identity_of(mole: MoleModel) -> BaseIdentity:
    if mole.base_identity is None:
        raise PackError("no base identity: pass base=BaseIdentity(...) or set mole.base_identity")
    return BaseIdentity.from_dict(mole.base_identity)


def write_index(repo_dir: str | os.PathLike) -> Path:
    """``index.json`` of a pack repository: what can be installed, with files, sizes and sha256."""
    repo = Path(repo_dir)
    index: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "core": None, "experts": {}}
    if (repo / CORE_DIR / MANIFEST).exists():
        m = read_manifest(repo / CORE_DIR)
        index["core"] = {"path": CORE_DIR, "files": m["files"], "base": m["base"], "layout": m["layout"]}
    for d in sorted((repo / EXPERTS_DIR).glob("*/")) if (repo / EXPERTS_DIR).is_dir() else []:
        if (d / MANIFEST).exists():
            m = read_manifest(d)
            index["experts"][m["language"]] = {"path": f"{EXPERTS_DIR}/{d.name}", "files": m["files"],
                                               "core_sha256": m.get("core_sha256")}
    path = repo / INDEX
    path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return path


# -- reading and verifying --------------------------------------------------------------------------------
def _read_json(path: Path, what: str) -> dict[str, Any]:
    """A pack file (manifest or index) of this format version, or PackError saying why not."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackError(f"{path}: unreadable {what} ({e})") from e
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise PackError(f"{path}: not a {FORMAT} {what}")
    if d.get("format_version") != FORMAT_VERSION:
        raise PackError(f"{path}: pack format version {d.get('format_version')!r} is not supported "
                        f"(this mole-lsp reads version {FORMAT_VERSION}); update mole-lsp or re-export the pack")
    return d


def read_index(path: str | os.PathLike) -> dict[str, Any]:
    """``index.json`` of a pack repository (see :func:`write_index`)."""
    index = _read_json(Path(path), "pack index")
    index.setdefault("experts", {})
    return index


def read_manifest(pack_dir: str | os.PathLike) -> dict[str, Any]:
    """``manifest.json`` of a pack folder, with the fields every pack has; PackError saying why not."""
    path = Path(pack_dir) / MANIFEST
    if not path.exists():
        raise PackError(f"{pack_dir}: not a pack (no {MANIFEST})")
    m = _read_json(path, "manifest")
    for key in ("kind", "base", "layout", "modules", "files"):
        if key not in m:
            raise PackError(f"{path}: manifest lacks {key!r}")
    return m


def verify_pack(pack_dir: str | os.PathLike, *, kind: str | None = None, language: str | None = None,
                base: BaseIdentity | None = None, layout: Mapping[str, Any] | None = None,
                core_sha256: str | None = None, check_hashes: bool = True) -> dict[str, Any]:
    """Check a pack before use and return its manifest; raise PackError saying why it is refused."""
    pack_dir = Path(pack_dir)
    if not pack_dir.is_dir():
        raise PackError(f"missing pack: {pack_dir} does not exist" + (f" (language {language!r})" if language else ""))
    m = read_manifest(pack_dir)
    if kind and m["kind"] != kind:
        raise PackError(f"{pack_dir}: expected a {kind} pack, found a {m['kind']} pack")
    if language and m.get("language") != language:
        raise PackError(f"{pack_dir}: expected the {language!r} expert, found {m.get('language')!r}")
    for name, meta in m["files"].items():
        f = _pack_file(pack_dir, name)
        if not f.exists():
            raise PackError(f"{pack_dir}: file {name} is missing")
        if not f.is_file():
            raise PackError(f"{pack_dir}: {name} is not a regular file")
        size = f.stat().st_size
        if size != meta["size"]:
            what = "truncated" if size < meta["size"] else "larger than recorded"
            raise PackError(f"{f}: {what} ({size} bytes, manifest says {meta['size']})")
        if check_hashes and sha256_file(f) != meta["sha256"]:
            raise PackError(f"{f}: sha256 mismatch (file is corrupt or was modified)")
    if base is not None:
        why = base.mismatch(BaseIdentity.from_dict(m["base"]))
        if why:
            raise PackError(f"{pack_dir}: made for another base model: {why}")
    if layout is not None and dict(layout) != m["layout"]:
        diff = {k: (m["layout"].get(k), v) for k, v in layout.items() if m["layout"].get(k) != v}
        raise PackError(f"{pack_dir}: another rank layout: " +
                        ", ".join(f"{k} is {a} in the pack, {b} here" for k, (a, b) in diff.items()))
    if core_sha256 is not None and m["kind"] == "expert" and m.get("core_sha256") != core_sha256:
        raise PackError(f"{pack_dir}: this {m.get('language')} expert was trained with another core pack "
                        f"(core sha256 {str(m.get('core_sha256'))[:12]}…, loaded core {core_sha256[:12]}…)")
    return m


def _pack_file(pack_dir: Path, name: Any) -> Path:
    """The file a manifest names, refused unless it is a plain relative name that stays in ``pack_dir``.

    A manifest is data from the pack's publisher: ``../``, absolute names or links leaving the folder
    would make verifying it read any file. The one link allowed out is huggingface_hub's cache layout
    (``snapshots/<commit>/...`` links to the same repository's ``blobs/``)."""
    parts = name.split("/") if isinstance(name, str) else []
    if not parts or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise PackError(f"{pack_dir}: manifest lists an invalid file name {name!r} (plain relative names only)")
    f = pack_dir / name
    root = pack_dir.resolve()
    folder = f.parent.resolve()
    if not folder.is_relative_to(root):
        raise PackError(f"{pack_dir}: manifest file {name!r} lies outside the pack folder")
    if f.is_symlink():
        target = f.resolve()
        if not (target.is_relative_to(root) or _is_hub_blob(target, root)):
            raise PackError(f"{pack_dir}: manifest file {name!r} links outside the pack folder")
    return f


def _is_hub_blob(target: Path, root: Path) -> bool:
    """Whether ``target`` is a blob of the huggingface_hub cache repository whose snapshot holds ``root``."""
    snapshots = next((a for a in root.parents if a.name == "snapshots"), None)
    return (snapshots is not None and target.parent.name == "blobs"
            and target.parent.parent == snapshots.parent)


def _load_tensors(pack_dir: Path, expected: Iterable[str]) -> dict[str, torch.Tensor]:
    try:
        tensors = load_file(str(pack_dir / ADAPTERS))
    except (SafetensorError, OSError) as e:
        raise PackError(f"{pack_dir}: unreadable adapters file ({e})") from e
    missing = sorted(k for k in expected if k not in tensors)
    if missing:
        raise PackError(f"{pack_dir}: adapters file lacks {len(missing)} tensors, e.g. {missing[0]}")
    return tensors


def _check_shape(src: torch.Tensor, shape: tuple[int, ...], key: str, pack_dir: Path) -> None:
    if tuple(src.shape) != shape:
        raise PackError(f"{pack_dir}: tensor {key} has shape {tuple(src.shape)}, the model needs {shape}")


def core_sha256(manifest: Mapping[str, Any]) -> str:
    """The sha256 that identifies a core pack (of its adapters file), as its experts record it."""
    return manifest["files"][ADAPTERS]["sha256"]


def _detach_mole(mole: MoleModel) -> None:
    """Put the original linears back in place of the MoLE layers (a refused core leaves no trace)."""
    for full, layer in mole.layers.items():
        parent, _, child = full.rpartition(".")
        setattr(mole.model.get_submodule(parent) if parent else mole.model, child, layer.base)


def load_core(model: nn.Module, core_dir: str | os.PathLike, base: BaseIdentity | None = None,
              registry=None) -> MoleModel:
    """Attach MoLE to an UNMODIFIED base model and load a core pack (no experts yet).

    Every check (manifest, modules, layout, each tensor's presence and shape) passes before the base
    weights change; a refused pack leaves ``model`` exactly as it was."""
    core_dir = Path(core_dir)
    m = verify_pack(core_dir, kind="core", base=base)
    cfg = MoleConfig.from_dict({**m["mole_config"], "languages": ()})
    mole = attach_mole(model, cfg, registry=registry, init=False)  # wraps the linears, weights unchanged
    try:
        tensors = _checked_core_tensors(mole, m, core_dir)
    except BaseException:
        _detach_mole(mole)
        raise
    with torch.no_grad():
        for name, layer in mole.layers.items():
            layer.res_A = tensors[f"{name}.res_A"].to(layer.base.weight.device, torch.float32)
            layer.res_B = tensors[f"{name}.res_B"].to(layer.base.weight.device, torch.float32)
            apply_residual(layer, layer.base.weight.detach())
            for kind in ("shared", "nl"):
                pair = getattr(layer, kind)
                if pair is not None:
                    pair.A.data.copy_(tensors[f"{name}.{kind}.A"].to(pair.A.dtype))
                    pair.B.data.copy_(tensors[f"{name}.{kind}.B"].to(pair.B.dtype))
    mole.base_identity = {k: m["base"].get(k) for k in ("repo_id", "revision", "weights_sha256")}
    mole.core_manifest = m
    return mole


def _checked_core_tensors(mole: MoleModel, m: Mapping[str, Any], core_dir: Path) -> dict[str, torch.Tensor]:
    """The core pack's tensors once they all fit ``mole`` (PackError saying which does not)."""
    if sorted(mole.layers) != m["modules"]:
        raise PackError(f"{core_dir}: made for other modules ({len(m['modules'])} wrapped linears, "
                        f"this model has {len(mole.layers)}): another base architecture")
    if mole.config.layout() != m["layout"]:
        raise PackError(f"{core_dir}: layout mismatch")
    tensors = _load_tensors(core_dir, mole.adapter_tensors("core"))
    for name, layer in mole.layers.items():
        rank = tensors[f"{name}.res_A"].shape[0] if tensors[f"{name}.res_A"].dim() == 2 else -1
        _check_shape(tensors[f"{name}.res_A"], (rank, layer.in_features), f"{name}.res_A", core_dir)
        _check_shape(tensors[f"{name}.res_B"], (layer.out_features, rank), f"{name}.res_B", core_dir)
        for kind in ("shared", "nl"):
            pair = getattr(layer, kind)
            if pair is not None:
                for x in "AB":
                    key = f"{name}.{kind}.{x}"
                    _check_shape(tensors[key], tuple(getattr(pair, x).shape), key, core_dir)
    return tensors


def load_expert(mole: MoleModel, expert_dir: str | os.PathLike, language: str | None = None) -> str:
    """Verify an expert pack against the loaded core and add (or replace) its language. Returns the id.

    Every tensor is checked before the model changes: a refused pack adds no slot and leaves a loaded
    expert of the same language as it was."""
    expert_dir = Path(expert_dir)
    core = mole.core_manifest
    m = verify_pack(expert_dir, kind="expert", language=language, layout=mole.config.layout(),
                    core_sha256=core_sha256(core) if core else None,
                    base=BaseIdentity.from_dict(core["base"]) if core else None)
    lang = m["language"]
    if sorted(mole.layers) != m["modules"]:
        raise PackError(f"{expert_dir}: made for other modules than the loaded core")
    r = mole.config.r_expert
    tensors = _load_tensors(expert_dir, [f"{n}.expert.{x}" for n in mole.layers for x in "AB"] if r else [])
    if r:
        for name, layer in mole.layers.items():
            _check_shape(tensors[f"{name}.expert.A"], (r, layer.in_features), f"{name}.expert.A", expert_dir)
            _check_shape(tensors[f"{name}.expert.B"], (layer.out_features, r), f"{name}.expert.B", expert_dir)
    mole.add_language(lang)
    with torch.no_grad():
        for name, layer in mole.layers.items():
            if lang not in layer.experts:  # r_expert == 0: the pack carries no tensors
                continue
            pair = layer.experts[lang]
            pair.A.data.copy_(tensors[f"{name}.expert.A"].to(pair.A.dtype))
            pair.B.data.copy_(tensors[f"{name}.expert.B"].to(pair.B.dtype))
            layer.clear_cache()
    return lang


def load_packs(model: nn.Module, repo_dir: str | os.PathLike, languages: Iterable[str] | None = None,
               base: BaseIdentity | None = None, registry=None) -> MoleModel:
    """Base + ``core/`` + the wanted ``experts/<lang>/`` of a pack repository folder."""
    repo = Path(repo_dir)
    mole = load_core(model, repo / CORE_DIR, base=base, registry=registry)
    if languages is None:
        languages = sorted(p.name for p in (repo / EXPERTS_DIR).glob("*") if p.is_dir())
    for lang in languages:
        d = repo / EXPERTS_DIR / lang
        if not d.is_dir():
            have = sorted(p.name for p in (repo / EXPERTS_DIR).glob("*") if p.is_dir())
            raise PackError(f"missing language: no expert pack for {lang!r} in {repo} (available: {', '.join(have) or 'none'})")
        load_expert(mole, d, language=lang)
    return mole


def pack_size_mb(pack_dir: str | os.PathLike) -> float:
    """Size of all files under ``pack_dir`` in MB (10^6 bytes)."""
    return sum(f.stat().st_size for f in Path(pack_dir).rglob("*") if f.is_file()) / 1e6
