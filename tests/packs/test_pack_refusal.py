"""A refused pack changes nothing: a core that fails late leaves the base model as it was, an expert that
fails leaves no slot; manifest file names cannot reach outside the pack folder."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from helpers import make_tiny_llama, perturb
from safetensors.torch import load_file, save_file

from mole_lsp.core.config import MoleConfig
from mole_lsp.core.layer import MoleLinear
from mole_lsp.core.model import attach_mole
from mole_lsp.io import sha256_file
from mole_lsp.packs.format import (
    ADAPTERS,
    MANIFEST,
    BaseIdentity,
    PackError,
    export_packs,
    fingerprint_model,
    load_core,
    load_expert,
    verify_pack,
)

LANGS = ("python", "rust")
LAST = "model.layers.1.mlp.down_proj"  # the last wrapped linear: a check that fails there fails late


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    base = make_tiny_llama(seed=4)
    ident = BaseIdentity("tiny/llama", "r1", fingerprint_model(base))
    mole = attach_mole(base, MoleConfig(r_shared=6, r_expert=2, languages=LANGS))
    perturb(mole, seed=8, std=0.1)
    return ident, export_packs(mole, tmp_path_factory.mktemp("refusal") / "repo", ident)


@pytest.fixture
def repo(packs, tmp_path):
    dst = tmp_path / "repo"
    shutil.copytree(packs[1], dst)
    return dst


def rewrite_tensors(pack, edit) -> None:
    """Change a pack's tensors with ``edit(dict)`` and record the new file in its manifest (hash and size
    pass, so only the later checks can refuse it)."""
    f = pack / ADAPTERS
    tensors = load_file(str(f))
    edit(tensors)
    save_file(tensors, str(f))
    m = json.loads((pack / MANIFEST).read_text())
    m["files"][ADAPTERS] = {"sha256": sha256_file(f), "size": f.stat().st_size}
    (pack / MANIFEST).write_text(json.dumps(m))


def logits(model) -> torch.Tensor:
    ids = torch.arange(10)[None]
    with torch.no_grad():
        return model(input_ids=ids).logits


def wrapped(model) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, MoleLinear)]


@pytest.mark.parametrize("edit", [
    pytest.param(lambda t: t.__setitem__(f"{LAST}.res_A", torch.zeros(3, 3)), id="residual-shape"),
    pytest.param(lambda t: t.__setitem__(f"{LAST}.shared.B", torch.zeros(5, 6)), id="shared-shape"),
    pytest.param(lambda t: t.pop(f"{LAST}.nl.B"), id="missing-tensor"),
    pytest.param(lambda t: t.__setitem__(f"{LAST}.res_B", torch.zeros(64, 5)), id="residual-rank"),
])
def test_core_refused_late_leaves_base_untouched(packs, repo, edit):
    ident, _ = packs
    rewrite_tensors(repo / "core", edit)
    model = make_tiny_llama(seed=4)
    before = logits(model)
    with pytest.raises(PackError):
        load_core(model, repo / "core", base=ident)
    assert wrapped(model) == []  # no MoLE layer left behind ("no routing set" on the next forward)
    assert torch.equal(logits(model), before)
    assert fingerprint_model(model) == ident.weights_sha256
    # and the intact core still loads onto that model afterwards
    load_core(model, packs[1] / "core", base=ident)


def test_core_of_another_architecture_leaves_base_untouched(packs):
    bigger = make_tiny_llama(seed=4, num_hidden_layers=3)
    before = logits(bigger)
    with pytest.raises(PackError, match="other modules"):
        load_core(bigger, packs[1] / "core")
    assert wrapped(bigger) == [] and torch.equal(logits(bigger), before)


@pytest.mark.parametrize("edit", [
    pytest.param(lambda t: t.__setitem__(f"{LAST}.expert.B", torch.zeros(7, 2)), id="shape"),
    pytest.param(lambda t: t.pop(f"{LAST}.expert.A"), id="missing-tensor"),
])
def test_expert_refused_leaves_no_slot(packs, repo, edit):
    ident, _ = packs
    mole = load_core(make_tiny_llama(seed=4), repo / "core", base=ident)
    load_expert(mole, repo / "experts" / "python")
    good = {k: v.clone() for k, v in mole.adapter_tensors("python").items()}
    rewrite_tensors(repo / "experts" / "rust", edit)
    with pytest.raises(PackError):
        load_expert(mole, repo / "experts" / "rust")
    assert mole.slots == ["python"]
    assert all("rust" not in layer.experts for layer in mole.layers.values())
    # replacing a loaded expert with a broken pack keeps the loaded one as it was
    rewrite_tensors(repo / "experts" / "python", edit)
    with pytest.raises(PackError):
        load_expert(mole, repo / "experts" / "python")
    assert mole.slots == ["python"]
    assert all(torch.equal(v, good[k]) for k, v in mole.adapter_tensors("python").items())


# -- manifest file names --------------------------------------------------------------------------------
def point_manifest_at(pack, name: str, target) -> None:
    """Make the manifest list ``name`` with the size and hash of ``target``: only the name can refuse it."""
    m = json.loads((pack / MANIFEST).read_text())
    m["files"] = {name: {"sha256": sha256_file(target), "size": target.stat().st_size}}
    (pack / MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "dot-part", "backslash"])
def test_manifest_names_stay_inside_the_pack(repo, tmp_path, kind):
    outside = tmp_path / "secret.txt"
    outside.write_text("not part of any pack\n")
    pack = repo / "core"
    name = {"dotdot": "../../secret.txt", "absolute": str(outside), "dot-part": f"./{ADAPTERS}",
            "backslash": "..\\..\\secret.txt"}[kind]
    if kind == "dot-part":
        outside = pack / ADAPTERS
    point_manifest_at(pack, name, outside)
    with pytest.raises(PackError, match="file name"):
        verify_pack(pack)


def test_symlink_leaving_the_pack_is_refused(repo, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not part of any pack\n")
    pack = repo / "core"
    os.symlink(outside, pack / "link.txt")
    point_manifest_at(pack, "link.txt", outside)
    with pytest.raises(PackError, match="outside"):
        verify_pack(pack)
    # a symlinked folder on the way out is refused the same way
    (tmp_path / "dir").mkdir()
    shutil.copy(outside, tmp_path / "dir" / "secret.txt")
    os.symlink(tmp_path / "dir", pack / "sub")
    point_manifest_at(pack, "sub/secret.txt", outside)
    with pytest.raises(PackError, match="outside"):
        verify_pack(pack)


def test_hub_cache_blob_links_are_accepted(repo, tmp_path):
    """huggingface_hub's cache keeps files as links from snapshots/<sha>/ to the repository's blobs/."""
    cache = tmp_path / "models--o--packs"
    snap = cache / "snapshots" / ("a" * 40) / "core"
    snap.mkdir(parents=True)
    (cache / "blobs").mkdir()
    for f in (repo / "core").iterdir():
        blob = cache / "blobs" / sha256_file(f)
        shutil.copy(f, blob)
        os.symlink(os.path.relpath(blob, snap), snap / f.name)
    assert verify_pack(snap)["kind"] == "core"
