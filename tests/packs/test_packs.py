"""Packs: export from a 'trained' model, load onto the untouched base, refuse bad packs with the reason."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import make_tiny_llama, perturb

from mole_lsp.core.config import MoleConfig
from mole_lsp.core.model import attach_mole
from mole_lsp.packs.format import (
    ADAPTERS,
    MANIFEST,
    BaseIdentity,
    PackError,
    export_packs,
    fingerprint_model,
    load_core,
    load_expert,
    load_packs,
    verify_pack,
    write_index,
)

LANGS = ("python", "rust", "go")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model whose adapters were perturbed as if trained, exported as a pack repository."""
    base = make_tiny_llama(seed=4)
    ident = BaseIdentity("tiny/llama", "r1", fingerprint_model(base))
    mole = attach_mole(base, MoleConfig(r_shared=6, r_expert=2, languages=LANGS))
    perturb(mole, seed=8, std=0.1)
    repo = export_packs(mole, tmp_path_factory.mktemp("packs") / "repo", ident, provenance={"steps": 3})
    return mole, ident, repo


def mixed_batch(mole):
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(2))
    labels = ["nl"] * 3 + ["python"] * 5 + ["nl"] * 2 + ["rust"] * 2 + ["go"] * 6 + ["unknown"] * 2 + ["nl"] * 4
    return ids, labels


def test_packs_reproduce_trained_model_on_untouched_base(trained):
    mole, ident, repo = trained
    ids, labels = mixed_batch(mole)
    with torch.no_grad():
        want = mole(input_ids=ids, route_ids=mole.route_ids(labels).view(2, 12)).logits
    fresh = make_tiny_llama(seed=4)  # the unmodified base checkpoint
    loaded = load_packs(fresh, repo, base=BaseIdentity("tiny/llama", "r1", fingerprint_model(fresh)))
    assert set(loaded.languages) == set(LANGS)
    with torch.no_grad():
        got = loaded(input_ids=ids, route_ids=loaded.route_ids(labels).view(2, 12)).logits
    assert rel_err(got, want) < 1e-5


def test_experts_load_one_at_a_time(trained):
    mole, ident, repo = trained
    loaded = load_core(make_tiny_llama(seed=4), repo / "core", base=ident)
    assert loaded.languages == []
    assert load_expert(loaded, repo / "experts" / "rust") == "rust"
    ids = torch.randint(0, 128, (1, 6))
    labels = ["rust"] * 6
    with torch.no_grad():
        want = mole(input_ids=ids, route_ids=mole.route_ids(labels)[None]).logits
        got = loaded(input_ids=ids, route_ids=loaded.route_ids(labels)[None]).logits
    assert rel_err(got, want) < 1e-5


def test_manifest_and_index_contents(trained):
    _, ident, repo = trained
    core = json.loads((repo / "core" / MANIFEST).read_text())
    assert core["format_version"] == 1 and core["kind"] == "core"
    assert core["base"]["weights_sha256"] == ident.weights_sha256
    assert core["layout"]["r_shared"] == 6 and core["layout"]["target_modules"] == ["gate_proj", "up_proj", "down_proj"]
    assert core["files"][ADAPTERS]["size"] == (repo / "core" / ADAPTERS).stat().st_size
    assert core["provenance"] == {"steps": 3}
    index = json.loads((repo / "index.json").read_text())
    assert sorted(index["experts"]) == sorted(LANGS)
    assert index["experts"]["go"]["path"] == "experts/go"
    # safetensors only: no pickle anywhere
    assert not [p for p in repo.rglob("*") if p.suffix in (".bin", ".pt", ".pkl", ".pth")]


@pytest.fixture
def repo_copy(trained, tmp_path):
    _, _, repo = trained
    dst = tmp_path / "repo"
    shutil.copytree(repo, dst)
    return dst


def _edit_manifest(pack, **changes):
    m = json.loads((pack / MANIFEST).read_text())
    for k, v in changes.items():
        m[k] = v
    (pack / MANIFEST).write_text(json.dumps(m))


def test_refuses_wrong_sha256(repo_copy):
    f = repo_copy / "experts" / "rust" / ADAPTERS
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(PackError, match="sha256 mismatch"):
        verify_pack(repo_copy / "experts" / "rust")


def test_refuses_truncated_file(repo_copy):
    f = repo_copy / "core" / ADAPTERS
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(PackError, match=r"truncated \(100 bytes"):
        verify_pack(repo_copy / "core")


def test_refuses_another_base(repo_copy):
    other = make_tiny_llama(seed=99)
    with pytest.raises(PackError, match="another base model: base weights differ"):
        load_packs(other, repo_copy, base=BaseIdentity("tiny/llama", "r1", fingerprint_model(other)))
    with pytest.raises(PackError, match="trained on base 'tiny/llama'"):
        verify_pack(repo_copy / "core", base=BaseIdentity("someone/else"))


def test_refuses_another_architecture(repo_copy):
    bigger = make_tiny_llama(seed=4, num_hidden_layers=3)
    with pytest.raises(PackError, match="other modules"):
        load_core(bigger, repo_copy / "core")


def test_refuses_another_rank_layout(repo_copy, trained):
    mole, _, _ = trained
    other = attach_mole(make_tiny_llama(seed=4), MoleConfig(r_shared=4, r_expert=4, languages=()))
    with pytest.raises(PackError, match="another rank layout: r_shared is 6 in the pack, 4 here"):
        verify_pack(repo_copy / "experts" / "go", layout=other.config.layout())


def test_refuses_unknown_format_version(repo_copy):
    _edit_manifest(repo_copy / "core", format_version=7)
    with pytest.raises(PackError, match="format version 7 is not supported"):
        verify_pack(repo_copy / "core")


def test_refuses_missing_language(repo_copy):
    with pytest.raises(PackError, match="no expert pack for 'java'.*available: go, python, rust"):
        load_packs(make_tiny_llama(seed=4), repo_copy, languages=["java"])
    with pytest.raises(PackError, match="expected the 'python' expert, found 'go'"):
        verify_pack(repo_copy / "experts" / "go", language="python")


def test_refuses_expert_of_another_core(repo_copy, tmp_path):
    # Re-export the core from a differently trained model: the old experts no longer fit it.
    base = make_tiny_llama(seed=4)
    ident = BaseIdentity("tiny/llama", "r1", fingerprint_model(base))
    mole = attach_mole(base, MoleConfig(r_shared=6, r_expert=2, languages=LANGS))
    perturb(mole, seed=21)
    other_repo = export_packs(mole, tmp_path / "other", ident, languages=[])
    loaded = load_core(make_tiny_llama(seed=4), other_repo / "core", base=ident)
    with pytest.raises(PackError, match="trained with another core pack"):
        load_expert(loaded, repo_copy / "experts" / "python")
    assert loaded.languages == []  # nothing half-added


def test_not_a_pack(tmp_path):
    with pytest.raises(PackError, match="does not exist"):
        verify_pack(tmp_path / "nope")
    (tmp_path / "x").mkdir()
    with pytest.raises(PackError, match="no manifest.json"):
        verify_pack(tmp_path / "x")
    (tmp_path / "x" / MANIFEST).write_text("{not json")
    with pytest.raises(PackError, match="unreadable manifest"):
        verify_pack(tmp_path / "x")


def test_export_is_atomic_and_index_rebuilds(repo_copy):
    shutil.rmtree(repo_copy / "experts" / "go")
    index = json.loads(write_index(repo_copy).read_text())
    assert sorted(index["experts"]) == ["python", "rust"]
    assert not [p for p in repo_copy.rglob(".*") if p.is_dir()]  # no leftover temp folders
