"""The line-completion benchmark (training/eval/line_completion.py) and the engine's single-line switch."""

from __future__ import annotations

import json
from pathlib import Path

from lsp_fixtures import load_tiny_base, tiny_world  # noqa: F401


def _tiny_engine(world):
    from mole_lsp.engine.engine import Engine

    model, tok = load_tiny_base(world)
    return Engine(model, tok, packs=None, auto_install=False)


def test_complete_single_line_stops_at_the_end_of_the_line(tiny_world) -> None:  # noqa: F811
    """single_line=True: the first line of what the default rule writes (greedy), and nothing after it."""
    engine = _tiny_engine(tiny_world)
    prefixes = ["if n < 2:\n", "a\n", "x = ", "def f(", "    return "]
    multi = 0
    for prefix in prefixes:
        free = engine.complete(prefix, "\n", "python", max_new_tokens=40)
        one = engine.complete(prefix, "\n", "python", max_new_tokens=40, single_line=True)
        assert "\n" not in one.text
        assert one.text == free.text.split("\n", 1)[0] or free.stop_reason == "max_tokens"
        if "\n" in free.text.strip("\n"):
            multi += 1
            assert one.stop_reason == "end_of_line" and one.new_tokens < free.new_tokens
    assert multi, "no prefix made the tiny model write several lines: the check proves nothing"


# -- positions --------------------------------------------------------------------------------------------

_PY = "\n".join([
    "import os",
    "",
    "def walk(root):",
    "    for name in os.listdir(root):",
    "        path = os.path.join(root, name)",
    "        if os.path.isdir(path):",
    "            yield from walk(path)",
    "        else:",
    "            yield path",
    "",
    "x = 1",
    "def total(xs):",
    "    return sum(x for x in xs)",
    "",
])


def _tree(root: Path, n: int = 60) -> Path:
    """``n`` Python files; the held-out share is decided by the corpus builder's hash of each path."""
    for i in range(n):
        (root / f"pkg{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"pkg{i % 3}" / f"mod{i}.py").write_text(f"# module {i}\n" + _PY.replace("walk", f"walk{i}"))
    (root / "notes.txt").write_text("not code\n" * 10)
    return root


def test_positions_are_seeded_heldout_and_of_both_kinds(tmp_path: Path) -> None:
    from training.corpus.build import split_of
    from training.eval.line_completion import MIN_AFTER_CURSOR, sample_language

    root = _tree(tmp_path / "src")
    ps = sample_language("python", [root], 12, per_file=4, seed=3, heldout_fraction=0.3)
    assert len(ps) == 12
    assert ps == sample_language("python", [root], 12, per_file=4, seed=3, heldout_fraction=0.3)  # seeded
    assert ps != sample_language("python", [root], 12, per_file=4, seed=4, heldout_fraction=0.3)
    files = {p.file for p in ps}
    assert len(files) >= 3 and all(split_of(f, 0.3) == "heldout" for f in files)  # never a training file
    assert all(sum(p.file == f for p in ps) <= 4 for f in files)  # the per-file cap
    assert [p.kind for p in ps].count("mid") == 6  # half mid-line, half line start
    for p in ps:
        line = p.text.split("\n")[p.line - 1]
        assert sum(not c.isspace() for c in line) >= 4
        assert p.prefix + line[p.col:] + p.suffix == p.text  # the truth is withheld from the suffix
        assert p.suffix.startswith("\n") and p.truth == line[p.col:].rstrip()
        if p.kind == "start":
            assert p.col == len(line) - len(line.lstrip())  # after the indentation
        else:
            assert 0 < p.col and line[:p.col].strip() and sum(not c.isspace() for c in p.truth) >= MIN_AFTER_CURSOR
    every = sample_language("python", [root], 5000, per_file=100, split="all")
    assert len({p.file for p in every}) == 60  # every file, .txt never


def test_a_files_positions_are_consecutive_lines_or_spread(tmp_path: Path) -> None:
    import random

    from training.eval.line_completion import sample_positions

    text = "\n".join(f"    value_{i} = compute({i})" if i % 4 else "" for i in range(200))
    eligible = [i + 1 for i in range(200) if i % 4]

    def lines(**kw) -> list[int]:
        ps = sample_positions(text, "python", "f.py", random.Random(7), 8, **kw)
        assert [p.offset for p in ps] == sorted(p.offset for p in ps)  # cursor order: the KV cache grows
        assert [p.kind for p in ps] == ["mid", "start"] * 4
        return [p.line for p in ps]

    run = lines()
    assert run == eligible[eligible.index(run[0]) : eligible.index(run[0]) + 8]  # one region, no line skipped
    spread = lines(spread=True)
    assert spread != run and len(set(spread)) == 8 and set(spread) <= set(eligible)
    assert spread[-1] - spread[0] > 16


def test_metrics_on_hand_cases() -> None:
    from training.eval.line_completion import edit_similarity, levenshtein, score

    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3 and levenshtein("ab", "ab") == 0
    assert edit_similarity("", "") == 1.0 and edit_similarity("abcd", "abxd") == 0.75
    assert score("return x  ", "return x") == {"exact": True, "edit_sim": 1.0, "kept": 8, "truth_chars": 8}
    s = score("return y + 1\nmore", "return x")  # only the first line counts
    assert not s["exact"] and s["kept"] == 7 and s["edit_sim"] == round(1 - 5 / 12, 4)
    assert score("", "pass")["kept"] == 0 and score("", "pass")["edit_sim"] == 0.0


# -- end to end --------------------------------------------------------------------------------------------

_RS = "fn main() {\n    let xs = vec![1, 2, 3];\n    for x in xs {\n        println!(\"{}\", x);\n    }\n}\n"


def test_command_line_end_to_end(tmp_path: Path, tiny_world, capsys) -> None:  # noqa: F811
    """Base, a pack repository and PerLang folders side by side on Python and Rust; --append resumes."""
    from training.eval.cli import main

    py = _tree(tmp_path / "py", 12)
    rs = tmp_path / "rs"
    rs.mkdir()
    for i in range(6):
        (rs / f"m{i}.rs").write_text(_RS.replace("main", f"main{i}"))
    (tmp_path / "pl").mkdir()
    (tmp_path / "pl" / "python").symlink_to(tiny_world.packs_dir)  # PerLang: python only; rust = the base
    out = tmp_path / "out"
    args = ["--tasks", "line-completion", "--base-model", str(tiny_world.base_dir), "--sources", f"python={py}",
            "--sources", f"rs={rs}", "--languages", "python,rust", "--split", "all", "--positions", "6",
            "--per-file", "3", "--max-new-tokens", "8",
            "--base-only", "--packs", f"mole={tiny_world.packs_dir}", "--packs", f"perlang={tmp_path / 'pl'}",
            "--out", str(out)]
    assert main(args) == 0
    rows = [json.loads(x) for x in (out / "line_completion.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2 * 6
    assert {(r["setting"], r["language"]) for r in rows} == {(s, lang) for s in ("No-FT", "mole", "perlang")
                                                            for lang in ("python", "rust")}
    for r in rows:
        assert {"file", "line", "kind", "prefix_tail", "truth", "suggestion", "exact", "edit_sim", "kept",
                "ms"} <= set(r)
        assert "\n" not in r["suggestion"] and r["new_tokens"] <= 8
    assert all(r["base_only"] for r in rows if r["setting"] == "No-FT")
    assert {r["expert"] for r in rows if r["setting"] == "mole"} == {"python", "rust"}
    perlang = {r["language"]: r["base_only"] for r in rows if r["setting"] == "perlang"}
    assert perlang == {"python": False, "rust": True}
    # KV reuse: a file's later positions start from the cache of the earlier ones.
    assert any(r["reused_tokens"] > 0 for r in rows)
    report = (out / "line_completion.md").read_text()
    assert "| language | n | No-FT | mole | perlang |" in report and "| all | 12 |" in report
    assert "Exact match by cursor kind" in report and "| python mid | 3 |" in report
    assert "line_completion.md" in capsys.readouterr().out
    # Resume: the positions already done are skipped, a new setting is added to the same table.
    assert main([*args[: args.index("--base-only")], "--packs", f"again={tiny_world.packs_dir}", "--append",
                 "--out", str(out)]) == 0
    again = [json.loads(x) for x in (out / "line_completion.jsonl").read_text().splitlines()]
    assert len(again) == 4 * 12 and again[:36] == rows
    assert [r["suggestion"] for r in again if r["setting"] == "again"] == [r["suggestion"] for r in rows
                                                                          if r["setting"] == "mole"]


def test_report_groups_seeds_of_one_method() -> None:
    from training.eval.line_completion import render_report

    def row(setting: str, exact: bool, line: int, language: str = "python") -> dict:
        return {"setting": setting, "language": language, "file": "a.py", "line": line, "col": 4, "kind": "mid",
                "exact": exact, "edit_sim": 0.5, "kept": 3, "truth_chars": 6, "ms": 10.0}

    rows = [row("No-FT", False, 1), row("No-FT", True, 2), row("mole-s42", True, 1), row("mole-s42", True, 2),
            row("mole-s43", True, 1), row("mole-s43", False, 2), row("alllang_seed1", False, 1),
            row("alllang_seed1", False, 2)]
    report = render_report(rows)
    assert "| language | n | No-FT | mole-s42 | mole-s43 | alllang_seed1 |" in report
    assert "| python | 2 | 0.500 | 1.000 | 0.500 | 0.000 |" in report
    assert "| language | No-FT (1) | mole (2) | alllang (1) |" in report
    assert "| python | 0.500 | 0.750 ± 0.250 | 0.000 |" in report  # exact match: mean ± half the range
    assert "mean over seeds" not in render_report([r for r in rows if r["setting"] != "mole-s43"])


def test_report_compares_settings_on_the_positions_they_all_have() -> None:
    from training.eval.line_completion import render_report

    def row(setting: str, exact: bool, line: int) -> dict:
        return {"setting": setting, "language": "go", "file": "a.go", "line": line, "col": 0, "kind": "start",
                "exact": exact, "edit_sim": 1.0 if exact else 0.0, "kept": 2, "truth_chars": 4, "ms": 5.0}

    # No-FT was asked 4 positions (a longer run), mole 2 of them: both are scored on those 2.
    rows = [row("No-FT", True, 1), row("No-FT", False, 2), row("No-FT", True, 3), row("No-FT", True, 4),
            row("mole", True, 1), row("mole", True, 2)]
    report = render_report(rows)
    assert "| go | 2 | 0.500 | 1.000 |" in report
    assert "compared on the 2 positions every setting has (2 rows" in report
    assert "| go | 4 | 0.750 |" in render_report(rows[:4])
