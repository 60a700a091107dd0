"""The finetune loop on a tiny random Llama: loss goes down, exact resume, 2-process gloo DDP, methods."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO_ROOT, make_rows, quiet, tiny_base_dir, tiny_train_config, write_jsonl
from safetensors.torch import load_file

from training.checkpoint import latest_checkpoint
from training.config import TrainConfig
from training.finetune import run

LANGS = ["python", "rust", "go"]


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    base = tiny_base_dir(d / "base")
    data = write_jsonl(d / "train.jsonl", make_rows(16, tuple(LANGS)))
    return base, data


def tiny_cfg(tiny_setup, out: Path, **kw) -> TrainConfig:
    base, data = tiny_setup
    return tiny_train_config(base, data, out, LANGS, **kw)


def test_tiny_mole_run_lowers_heldout_loss_and_logs(tiny_setup, tmp_path):
    res = run(tiny_cfg(tiny_setup, tmp_path / "run", max_steps=12), log=quiet)
    r = res["results"]["mole"]
    first, last = r.val_history[0][1], r.val_history[-1][1]
    assert r.val_history[0][0] == 0 and r.val_history[-1][0] == 12
    assert set(first) == {*LANGS, "all"}
    assert all(last[k] < first[k] for k in first), (first, last)
    assert r.losses[-1] < r.losses[0]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 12 + 2 and '"tokens_per_s"' in lines[1] and '"lr"' in lines[1]
    assert (tmp_path / "run" / "packs" / "index.json").exists()


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tiny_setup, tmp_path):
    kw = dict(max_steps=6, save_every=2, export=False, eval_at_start=False, dropout=0.1)
    full = run(tiny_cfg(tiny_setup, tmp_path / "a", **kw), log=quiet)["results"]["mole"]
    part = run(tiny_cfg(tiny_setup, tmp_path / "b", stop_after=3, **kw), log=quiet)["results"]["mole"]
    assert part.interrupted and part.steps == 3
    assert latest_checkpoint(tmp_path / "b").name == "step-00000003"
    rest = run(tiny_cfg(tiny_setup, tmp_path / "b", resume=True, **kw), log=quiet)["results"]["mole"]
    assert part.losses + rest.losses == full.losses  # bit-exact on CPU
    a = load_file(str(latest_checkpoint(tmp_path / "a") / "trainable.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "b") / "trainable.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.final_val == rest.final_val


def test_two_process_gloo_ddp_matches_one_process(tiny_setup, tmp_path):
    kw = dict(max_steps=4, eval_at_start=False, micro_batch=2)
    one = run(tiny_cfg(tiny_setup, tmp_path / "one", grad_accum=2, **kw), log=quiet)
    cfg2 = tiny_cfg(tiny_setup, tmp_path / "two", grad_accum=1, **kw)
    toml = tmp_path / "ddp.toml"
    toml.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in cfg2.to_dict().items() if v is not None))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "training.finetune", "--config", str(toml)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    rows = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses == pytest.approx(one["results"]["mole"].losses, rel=1e-5)
    a = load_file(str(tmp_path / "one" / "packs" / "experts" / "rust" / "adapters.safetensors"))
    b = load_file(str(tmp_path / "two" / "packs" / "experts" / "rust" / "adapters.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


@pytest.mark.parametrize("method,extra", [
    ("alllang", {}),
    ("perlang", {}),
    ("full", {"lr": 1e-3}),
    ("mole", {"nl_expert": True, "init": "standard"}),
    ("mole", {"variant": "4+4", "init": "shared-last"}),
])
def test_every_method_trains(tiny_setup, tmp_path, method, extra):
    res = run(tiny_cfg(tiny_setup, tmp_path / "m", method=method, max_steps=6, **extra), log=quiet)
    for r in res["results"].values():
        first, last = r.val_history[0][1], r.val_history[-1][1]
        assert last["all"] < first["all"]
    if method == "perlang":
        assert sorted(res["results"]) == sorted(LANGS)
        assert sum(r.steps for r in res["results"].values()) == pytest.approx(6, abs=1)
        for lang in LANGS:
            assert (tmp_path / "m" / "perlang" / lang / "packs" / "core" / "manifest.json").exists()
    elif method == "full":
        assert (tmp_path / "m" / "full-model" / "model.safetensors").exists()
    elif method == "alllang":
        assert not (tmp_path / "m" / "packs" / "experts").exists()
    elif extra.get("nl_expert"):
        assert (tmp_path / "m" / "packs" / "experts" / "nl" / "manifest.json").exists()
