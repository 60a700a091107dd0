"""Training configuration: presets, TOML sections, flags and validation."""

from __future__ import annotations

import pytest

from training.config import load_config


def test_config_presets_toml_sections_and_flags(tmp_path):
    paper = load_config(["--preset", "paper"])
    assert (paper.base, paper.r_shared, paper.r_expert, paper.lr, paper.beta1, paper.beta2) == (
        "deepseek-ai/deepseek-coder-1.3b-base", 48, 16, 1e-4, 0.9, 0.95)
    assert (paper.micro_batch * paper.grad_accum, paper.epochs, paper.warmup_ratio, paper.max_length) == (64, 2.0, 0.05, 2048)
    assert (paper.weight_decay, paper.seed, paper.split_seed, paper.val_fraction) == (0.0, 42, 42, 0.05)
    f = tmp_path / "run.toml"
    f.write_text('preset = "quick"\n[optim]\nlr = 2e-4\n[adapters]\nmethod = "alllang"\n')
    cfg = load_config(["--config", str(f), "--variant", "32+32", "--no-export", "--data", "a.jsonl,b.jsonl"])
    assert (cfg.lr, cfg.method, cfg.r_shared, cfg.r_expert, cfg.export) == (2e-4, "alllang", 32, 32, False)
    assert cfg.data == ["a.jsonl", "b.jsonl"] and cfg.max_length == 192  # the rest comes from the preset
    with pytest.raises(ValueError, match="unknown setting"):
        f.write_text("learning_rate = 1\n")
        load_config(["--config", str(f)])
    with pytest.raises(ValueError, match="method must be one of"):
        load_config(["--method", "moe"])
