"""Packs written by training: they reproduce the trained model, add-a-language keeps the rest intact,
and a push to a local Hub installs through the server's pack store."""

from __future__ import annotations

import json
import shutil

import hub_server
import pytest
import torch
from helpers import make_rows, quiet, tiny_base_dir, tiny_train_config, write_jsonl
from safetensors.torch import load_file

from mole_lsp.engine.base_model import load_base_model, resolve_base_model
from mole_lsp.io import sha256_file
from mole_lsp.packs.format import ADAPTERS, PackError, load_packs, write_index
from mole_lsp.packs.store import PackStore
from training.batching import collate
from training.finetune import run
from training.publish import merge_index, push_to_hub

local_hub = hub_server.local_hub
JOINT = ["python", "rust"]
LANGS = ["python", "rust", "go"]


def tiny_cfg(setup, out, **kw):
    base, data = setup
    return tiny_train_config(base, data, out, LANGS, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("packs")
    base = tiny_base_dir(d / "base", seed=3)
    data = write_jsonl(d / "train.jsonl", make_rows(12, ("python", "rust", "go")))
    setup = (base, data)
    res = run(tiny_cfg(setup, d / "joint", languages=JOINT, max_steps=6, eval_at_start=False), log=quiet)
    return setup, d, res


def fresh_base(setup):
    model, _ = load_base_model(resolve_base_model(str(setup[0]), offline=True))
    return model


def logits_of(mole, res, langs):
    data, tok = res["data"], res["tokenizer"]
    exs = [e for e in data.train.examples if e.language in langs][:4]
    table = torch.tensor([mole.route_for(lb) for lb in data.train.label_vocab])
    b = collate(exs, table, tok.pad_token_id)
    with torch.no_grad():
        out = mole(input_ids=b["input_ids"], attention_mask=b["attention_mask"], route_ids=b["route_ids"]).logits
    return out[b["attention_mask"].bool()]


def rel_err(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_exported_packs_reproduce_the_trained_model_on_the_untouched_base(trained):
    setup, d, res = trained
    mole = res["models"]["mole"].mole
    mole.eval()
    loaded = load_packs(fresh_base(setup), d / "joint" / "packs", base=res["identity"])
    assert sorted(loaded.languages) == JOINT
    m = json.loads((d / "joint" / "packs" / "core" / "manifest.json").read_text())
    assert m["provenance"]["method"] == "mole" and m["provenance"]["steps"] == 6
    assert m["base"]["weights_sha256"] == res["identity"].weights_sha256
    assert rel_err(logits_of(loaded, res, JOINT), logits_of(mole, res, JOINT)) < 1e-5


def test_add_language_trains_only_the_new_expert(trained, tmp_path):
    setup, d, res = trained
    repo = d / "joint" / "packs"
    before = {p.relative_to(repo): sha256_file(p) for p in repo.rglob("*.safetensors")}
    add = run(tiny_cfg(setup, tmp_path / "add", add_language="go", core=str(repo), max_steps=4,
                       eval_at_start=True), log=quiet)
    r = add["results"]["go"]
    assert r.val_history[-1][1]["go"] < r.val_history[0][1]["go"]
    new = add["models"]["go"].mole
    # The core and the other experts are bit-identical: in memory after training, and on disk.
    core_file = load_file(str(repo / "core" / "adapters.safetensors"))
    assert all(torch.equal(new.adapter_tensors("core")[k], v) for k, v in core_file.items())
    assert before == {p.relative_to(repo): sha256_file(p) for p in repo.rglob("*.safetensors")}
    out = tmp_path / "add" / "packs"
    # OUT/packs is the pack set with go added: the same core, the other experts copied unchanged.
    assert sorted(p.name for p in (out / "experts").iterdir()) == ["go", *JOINT]
    assert sha256_file(out / "core" / "adapters.safetensors") == sha256_file(repo / "core" / "adapters.safetensors")
    # Combined with the original repository, every language loads and python/rust are unchanged.
    combined = tmp_path / "combined"
    shutil.copytree(repo, combined)
    shutil.copytree(out / "experts" / "go", combined / "experts" / "go")
    write_index(combined)
    loaded = load_packs(fresh_base(setup), combined, base=res["identity"])
    assert sorted(loaded.languages) == ["go", *JOINT]
    old = res["models"]["mole"].mole
    for lang in JOINT:
        a, b = loaded.adapter_tensors(lang), old.adapter_tensors(lang)
        assert all(torch.equal(a[k], b[k]) for k in a)
    go_file = load_file(str(out / "experts" / "go" / "adapters.safetensors"))
    assert all(torch.equal(new.adapter_tensors("go")[k], v) for k, v in go_file.items())


def test_push_to_local_hub_then_install_with_pack_store(trained, local_hub, tmp_path):
    setup, d, res = trained
    repo_id = "tester/tiny-mole-packs"
    push_to_hub(d / "joint" / "packs", repo_id, log=quiet)
    store = PackStore(repo_id, cache_dir=tmp_path / "cache", endpoint=local_hub.url)
    rust = store.expert_path("rust")
    assert (rust / "adapters.safetensors").exists() and store.core_path() is not None
    # An added language pushed later joins the index next to the jointly trained ones.
    run(tiny_cfg(setup, tmp_path / "add", add_language="go", core=str(d / "joint" / "packs"), max_steps=2,
                 eval_at_start=False, push_to_hub=repo_id), log=quiet)
    index = json.loads(local_hub.file_bytes(repo_id, "index.json"))
    assert sorted(index["experts"]) == ["go", "python", "rust"] and index["core"] is not None
    store2 = PackStore(repo_id, cache_dir=tmp_path / "cache2", endpoint=local_hub.url)
    go = store2.expert_path("go")
    loaded = load_packs(fresh_base(setup), go.parent.parent, languages=["go"], base=res["identity"])
    assert loaded.languages == ["go"]


def test_merge_index_keeps_experts_of_the_listed_core_only():
    def core(sha):
        return {"files": {ADAPTERS: {"sha256": sha}}}

    remote = {"format": "x", "core": core("a"), "experts": {"rust": {"core_sha256": "a"}}}
    added = merge_index(remote, {"experts": {"go": {"core_sha256": "a"}}})
    assert sorted(added["experts"]) == ["go", "rust"] and added["core"] == core("a")
    replaced = merge_index(remote, {"core": core("b"), "experts": {"go": {"core_sha256": "b"}}})
    assert replaced["core"] == core("b") and sorted(replaced["experts"]) == ["go"]
    with pytest.raises(PackError, match="another core"):
        merge_index(remote, {"experts": {"go": {"core_sha256": "b"}}})
    assert merge_index(None, {"core": core("a"), "experts": {}})["experts"] == {}
