"""The publish path end to end: what `--add-language` writes installs with `mole-lsp install-pack --from`,
and bench/bench_publish.py (train, push to a local Hub, install, serve) passes on a tiny model."""

from __future__ import annotations

import json
import shutil

import hub_server
import pytest
from helpers import REPO_ROOT, make_rows, quiet, tiny_base_dir, tiny_train_config, write_jsonl

from mole_lsp.cli import main as mole_lsp
from mole_lsp.engine.base_model import load_base_model, resolve_base_model
from mole_lsp.io import sha256_file
from mole_lsp.packs.format import PackError, load_packs, verify_pack
from mole_lsp.packs.store import PackStore
from training.finetune import run
from training.publish import add_to_pack_set, push_to_hub
from training.publish import main as publish_main

local_hub = hub_server.local_hub

JOINT = ["python", "rust"]


@pytest.fixture(scope="module")
def added(tmp_path_factory):
    """A joint python+rust pack set, then go added to its core with --add-language."""
    d = tmp_path_factory.mktemp("publish-path")
    base = tiny_base_dir(d / "base", seed=5)
    data = write_jsonl(d / "train.jsonl", make_rows(8, ("python", "rust", "go")))
    joint = run(tiny_train_config(base, data, d / "joint", JOINT, max_steps=2, eval_at_start=False), log=quiet)
    run(tiny_train_config(base, data, d / "add", ["go"], add_language="go", core=str(d / "joint" / "packs"),
                          max_steps=2, eval_at_start=False), log=quiet)
    return base, d, joint


def test_add_language_output_is_a_complete_pack_set(added):
    base, d, joint = added
    repo, out = d / "joint" / "packs", d / "add" / "packs"
    index = json.loads((out / "index.json").read_text())
    # The core it was trained against and the experts already made for that core come along, unchanged.
    assert index["core"] is not None and sorted(index["experts"]) == ["go", *JOINT]
    for rel in ("core/adapters.safetensors", "experts/python/adapters.safetensors"):
        assert sha256_file(out / rel) == sha256_file(repo / rel)
    model, _ = load_base_model(resolve_base_model(str(base), offline=True))
    loaded = load_packs(model, out, base=joint["identity"])
    assert sorted(loaded.languages) == ["go", *JOINT]


def test_add_language_output_installs_with_install_pack_from(added, tmp_path, capsys):
    base, d, joint = added
    cache = tmp_path / "cache"
    argv = ["install-pack", "go", "python", "--from", str(d / "add" / "packs"), "--base-model", str(base),
            "--cache-dir", str(cache), "--pack-repo", "tester/tiny-packs", "--offline"]
    assert mole_lsp(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "installed core" in printed and "installed go" in printed
    store = PackStore("tester/tiny-packs", cache_dir=cache, offline=True, base=joint["identity"])
    assert store.core_path(install=False) is not None
    go = store.expert_path("go", install=False)
    model, _ = load_base_model(resolve_base_model(str(base), offline=True))
    assert load_packs(model, go.parent.parent, languages=["go"], base=joint["identity"]).languages == ["go"]


def test_pushing_an_added_language_never_replaces_another_core(added, local_hub):
    base, d, _ = added
    data = write_jsonl(d / "other.jsonl", make_rows(8, ("python",)))
    run(tiny_train_config(base, data, d / "other", ["python"], max_steps=1, seed=9, eval_at_start=False), log=quiet)
    repo_id = "tester/tiny-packs"
    push_to_hub(d / "other" / "packs", repo_id, log=quiet)
    before = local_hub.head(repo_id)
    with pytest.raises(PackError, match="another core"):
        push_to_hub(d / "add" / "packs", repo_id, log=quiet, keep_core=True)
    assert local_hub.head(repo_id) == before
    push_to_hub(d / "joint" / "packs", repo_id, log=quiet)  # a joint run may replace the core
    push_to_hub(d / "add" / "packs", repo_id, log=quiet, keep_core=True)
    index = json.loads(local_hub.file_bytes(repo_id, "index.json"))
    assert sorted(index["experts"]) == ["go", *JOINT]


GO_SOURCE = "package calc\n\n" + "".join(
    f"// Add{i} returns the sum of a, b and {i}.\n// It never overflows in tests.\n"
    f"func Add{i}(a int, b int) int {{\n\ts := a + b\n\ts += {i}\n\treturn s\n}}\n\n" for i in range(12))


@pytest.mark.slow
def test_bench_publish_trains_pushes_installs_and_serves_the_experts(tmp_path, monkeypatch):
    """bench/bench_publish.py on the tiny model: every step's real command, and completions through the experts."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    import bench_publish

    (tmp_path / "go").mkdir()
    (tmp_path / "go" / "calc.go").write_text(GO_SOURCE)
    args = bench_publish.build_parser().parse_args(
        ["--add-language", "go", "--src", f"go={tmp_path / 'go'}", "--max-samples", "12", "--max-new-tokens", "4",
         "--threads", "1"])
    steps = bench_publish.publish_path(args, tmp_path / "work", say=quiet)
    names = [name for name, _, _ in steps.done]
    assert names == ["base", "corpus python", "corpus typescript", "train+push", "corpus go", "add-language",
                     "install --from", "install", "serve"]
    served = steps.done[-1][2]
    for lang in ("python", "typescript", "go"):
        assert f"{lang}: expert {lang}," in served


def test_publish_command_pushes_a_trained_pack_folder(added, local_hub, capsys):
    _, d, _ = added
    assert publish_main([str(d / "add" / "packs"), "tester/cli-packs"]) == 0
    index = json.loads(local_hub.file_bytes("tester/cli-packs", "index.json"))
    assert sorted(index["experts"]) == ["go", *JOINT] and index["core"] is not None
    assert "tester/cli-packs" in capsys.readouterr().out


def test_adding_a_language_into_the_core_s_own_folder_keeps_the_core(added, tmp_path):
    _, d, _ = added
    repo = tmp_path / "packs"
    shutil.copytree(d / "joint" / "packs", repo)
    shutil.copytree(d / "add" / "packs" / "experts" / "go", repo / "experts" / "go")
    add_to_pack_set(repo, "go", repo / "core", log=quiet)
    assert sorted(json.loads((repo / "index.json").read_text())["experts"]) == ["go", *JOINT]
    verify_pack(repo / "core", kind="core")
