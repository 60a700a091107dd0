"""``mole-lsp export`` in-process: from a pack folder (no base model needed) and from installed packs."""

from __future__ import annotations

import json

import pytest
from lsp_fixtures import tiny_world  # noqa: F401

from mole_lsp.cli import main


@pytest.fixture
def common(tiny_world, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MOLE_BASE_MODEL", raising=False)
    return [
        "--base-model",
        str(tiny_world.base_dir),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--threads",
        "1",
    ]


def test_export_from_a_pack_folder(tiny_world, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    argv = [
        "export",
        "--pack-repo",
        str(tiny_world.packs_dir),
        "--format",
        "gguf",
        "--languages",
        "python,rs",
    ]
    assert main([*argv, "--out", str(out)]) == 0
    for route in ("python", "rust", "nl", "code"):
        assert (out / route / f"mole-{route}-lora.gguf").is_file()
    assert not (out / "go").exists()
    routes = json.loads((out / "routes.json").read_text())["routes"]
    assert routes["rust"]["rank"] == 4 + 2 + 6  # residual + shared + expert
    printed = capsys.readouterr().out
    assert "rust" in printed and "README.md" in printed
    half = tmp_path / "half"
    assert main([*argv, "--out", str(half), "--half"]) == 0
    size = (out / "rust" / "mole-rust-lora.gguf").stat().st_size
    assert (half / "rust" / "mole-rust-lora.gguf").stat().st_size < 0.6 * size


def test_export_installed_packs(common, tiny_world, tmp_path, capsys):  # noqa: F811
    assert main([*common, "install-pack", "python", "--from", str(tiny_world.packs_dir)]) == 0
    out = tmp_path / "peft"
    assert main([*common, "export", "--format", "peft", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["code", "nl", "python"]
    cfg = json.loads((out / "python" / "adapter_config.json").read_text())
    assert cfg["r"] == cfg["lora_alpha"] == 12 and cfg["base_model_name_or_path"] == "local:tiny-base"


def test_export_user_errors(common, tiny_world, tmp_path, capsys):  # noqa: F811
    folder = ["--pack-repo", str(tiny_world.packs_dir)]
    assert (
        main(["export", *folder, "--format", "peft", "--languages", "cobol", "--out", str(tmp_path / "o")])
        == 2
    )
    assert "unknown language 'cobol'" in capsys.readouterr().err
    assert main([*common, "export", "--format", "peft", "--out", str(tmp_path / "o")]) == 2
    assert "core pack is not installed" in capsys.readouterr().err
