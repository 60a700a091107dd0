"""The mole-lsp command in-process (same engine as the server): one-shot tools, pack management from a
folder, doctor, and one-line user errors."""

from __future__ import annotations

import pytest
from lsp_fixtures import tiny_world  # noqa: F401

from mole_lsp.cli import main


@pytest.fixture
def common(tiny_world, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MOLE_BASE_MODEL", raising=False)
    return ["--base-model", str(tiny_world.base_dir), "--cache-dir", str(tmp_path / "cache"), "--threads", "1"]


def test_complete_explain_translate_from_a_pack_folder(common, tiny_world, tmp_path, capsys):  # noqa: F811
    src = tmp_path / "fib.py"
    src.write_text("def fib(n):\n    \n")
    packs = ["--pack-repo", str(tiny_world.packs_dir)]
    assert main([*common, *packs, "complete", str(src), "--line", "2", "--col", "5", "--max-new-tokens", "4"]) == 0
    assert main([*common, *packs, "explain", str(src), "--lines", "1-2", "--max-new-tokens", "4"]) == 0
    assert main([*common, *packs, "translate", str(src), "--to", "rust", "--max-new-tokens", "4"]) == 0
    err = capsys.readouterr().err
    assert "error" not in err


def test_base_only_is_said(common, tmp_path, capsys):
    src = tmp_path / "a.py"
    src.write_text("x = 1\n")
    assert main([*common, "--offline", "complete", str(src), "--line", "2", "--col", "1",
                 "--max-new-tokens", "2"]) == 0
    assert "base model only" in capsys.readouterr().err


def test_install_list_remove_from_folder(common, tiny_world, capsys):  # noqa: F811
    assert main([*common, "install-pack", "python", "rs", "--from", str(tiny_world.packs_dir)]) == 0
    out = capsys.readouterr().out
    assert "installed core" in out and "installed python" in out and "installed rust" in out
    assert main([*common, "list-packs"]) == 0
    listing = capsys.readouterr().out
    assert "offline" in listing
    rows = {ln.split()[0]: ln.split()[1] for ln in listing.splitlines()[2:]}
    assert rows["python"] == "yes" and rows["rust"] == "yes" and rows["core"] == "yes"
    assert main([*common, "remove-pack", "rust"]) == 0
    assert main([*common, "remove-pack", "rust"]) == 2
    assert "not installed: rust" in capsys.readouterr().err
    assert main([*common, "doctor"]) == 0
    doctor = capsys.readouterr().out
    assert "core pack" in doctor and "python" in doctor and "fim" in doctor


@pytest.mark.parametrize("argv,needle", [
    (["complete", "missing.py", "--line", "1", "--col", "1"], "no such file"),
    (["translate", "x.py", "--to", "klingon"], "unknown target language"),
    (["install-pack", "cobol"], "unknown language"),
    (["install-pack", "rust"], "offline"),
])
def test_user_errors_are_one_line(common, argv, needle, capsys):
    assert main([*common, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mole-lsp: error:") and needle in err.lower() and "Traceback" not in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("line,col,needle", [("0", "1", "--line 0 is outside"), ("9", "1", "--line 9 is outside"),
                                             ("1", "99", "--col 99 is outside line 1 (1-")])
def test_positions_are_one_based_and_checked(common, tmp_path, line, col, needle, capsys):
    src = tmp_path / "a.py"
    src.write_text("x = 1\n")
    assert main([*common, "complete", str(src), "--line", line, "--col", col]) == 2
    assert needle in capsys.readouterr().err



def test_a_file_that_is_not_utf8_is_a_user_error(common, tmp_path, capsys):
    src = tmp_path / "latin1.py"
    src.write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    assert main([*common, "complete", str(src), "--line", "1", "--col", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mole-lsp: error:") and "latin1.py is not UTF-8 text" in err and "Traceback" not in err


def test_a_bug_is_not_a_user_error(monkeypatch):
    """A ValueError that no command raises on purpose surfaces with its traceback (exit status 1)."""
    from mole_lsp import cli

    def bug(args):
        raise ValueError("a bug, not the user's")

    monkeypatch.setitem(cli.COMMANDS, "list-packs", bug)
    with pytest.raises(ValueError, match="a bug"):
        main(["list-packs"])
