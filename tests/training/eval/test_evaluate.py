"""Evaluation runs end to end (tiny random model, real engine, real executor) and the reports.

The two problems are handmade (the largest element of a list, and counting vowels), written in the
HumanEval-X record shapes for Python and JavaScript; none comes from the benchmark. A random model
writes nonsense, so these tests check the plumbing (rows, execution verdicts, tables, heatmaps),
never scores.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
from lsp_fixtures import tiny_world  # noqa: F401

from training.eval.passk import pass_at_k
from training.eval.toolchains import available_toolchains

TOOLCHAINS = available_toolchains()

DOC0 = "Return the largest number of a non-empty list."
DOC1 = "Count the vowels (a, e, i, o, u) of a lower-case word."

RECORDS: dict[str, list[dict[str, str]]] = {
    "python": [
        {
            "task_id": "Python/0",
            "prompt": f'def largest(xs: list) -> int:\n    """ {DOC0}\n    >>> largest([3, 9, 2])\n    9\n    """\n',
            "declaration": "def largest(xs: list) -> int:\n",
            "canonical_solution": "    best = xs[0]\n    for x in xs:\n        if x > best:\n            best = x\n"
                                  "    return best\n",
            "test": "\n\ndef check(largest):\n    assert largest([3, 9, 2]) == 9\n    assert largest([-4, -2]) == -2\n\n"
                    "check(largest)\n",
            "example_test": "",
            "text": f"    {DOC0}\n    >>> largest([3, 9, 2])\n    9",
        },
        {
            "task_id": "Python/1",
            "prompt": f'def vowels(word: str) -> int:\n    """ {DOC1}\n    >>> vowels("banana")\n    3\n    """\n',
            "declaration": "def vowels(word: str) -> int:\n",
            "canonical_solution": "    return sum(1 for c in word if c in 'aeiou')\n",
            "test": "\n\ndef check(vowels):\n    assert vowels('banana') == 3\n    assert vowels('xyz') == 0\n\n"
                    "check(vowels)\n",
            "example_test": "",
            "text": f"    {DOC1}\n    >>> vowels(\"banana\")\n    3",
        },
    ],
    "javascript": [
        {
            "task_id": "JavaScript/0",
            "prompt": f"/* {DOC0}\n  >>> largest([3, 9, 2])\n  9\n  */\nconst largest = (xs) => {{\n",
            "declaration": "\nconst largest = (xs) => {\n",
            "canonical_solution": "  return Math.max(...xs);\n}\n",
            "test": "const testLargest = () => {\n  console.assert(largest([3, 9, 2]) === 9)\n"
                    "  console.assert(largest([-4, -2]) === -2)\n}\n\ntestLargest()\n",
            "example_test": "",
        },
        {
            "task_id": "JavaScript/1",
            "prompt": f"/* {DOC1}\n  >>> vowels('banana')\n  3\n  */\nconst vowels = (word) => {{\n",
            "declaration": "\nconst vowels = (word) => {\n",
            "canonical_solution": "  return [...word].filter((c) => 'aeiou'.includes(c)).length;\n}\n",
            "test": "const testVowels = () => {\n  console.assert(vowels('banana') === 3)\n"
                    "  console.assert(vowels('xyz') === 0)\n}\n\ntestVowels()\n",
            "example_test": "",
        },
    ],
}


def write_data(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for lang, suffix in (("python", "python"), ("javascript", "js")):
        with gzip.open(root / f"humaneval_{suffix}.jsonl.gz", "wt", encoding="utf-8") as f:
            for rec in RECORDS[lang]:
                f.write(json.dumps(rec) + "\n")
    return root


def needs(*langs: str) -> None:
    for lang in langs:
        if not TOOLCHAINS[lang].available:
            pytest.skip(f"{lang} toolchain missing: {'; '.join(TOOLCHAINS[lang].missing)}")


# --------------------------------------------------------------------------------------------------
# End to end: the command line on the tiny model, base only and packs side by side


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_command_line_end_to_end(tmp_path: Path, tiny_world, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    from training.eval.cli import main

    needs("python", "javascript")
    data = write_data(tmp_path / "hx")
    out = tmp_path / "out"
    common = ["--data", str(data), "--base-model", str(tiny_world.base_dir), "--max-new-tokens", "6",
              "--workers", "2", "--out", str(out)]
    assert main([*common, "--base-only", "--packs", f"mole={tiny_world.packs_dir}"]) == 0
    rows = _rows(out / "generations.jsonl")
    # 2 settings × (2 synthesis + 2 summarization + 2 translation pairs × 2 problems) samples.
    assert len(rows) == 2 * (2 + 2 + 2) * 2
    assert {r["model"] for r in rows} == {"No-FT", "mole"}
    for r in rows:
        assert r["status"] in {"passed", "failed", "compile_error", "runtime_error", "timeout", "memory"}
        assert r["reason"] or r["passed"]
        assert {"stdout_tail", "stderr_tail", "exit_code", "response"} <= set(r)
        assert r["generation"]["new_tokens"] <= 6
    mole = [r for r in rows if r["model"] == "mole"]
    base = [r for r in rows if r["model"] == "No-FT"]
    assert all(set(r["generation"]["routes"]) == {"base"} for r in base)
    assert all(set(r["generation"]["routes"]) == {r["language"]} for r in mole)  # manual: the target expert
    summ = [r for r in mole if r["task"] == "summarization"]
    assert summ and all(set(r["summary_generation"]["routes"]) == {"nl"} for r in summ)  # explanation: NL
    pairs = {(r["source_language"], r["language"]) for r in rows if r["task"] == "translation"}
    assert pairs == {("python", "javascript"), ("javascript", "python")}
    report = (out / "report.md").read_text()
    for heading in ("Summary (Table II layout)", "Synthesis per language", "Summarization per language",
                    "Translation matrix — mole", "Outcomes"):
        assert heading in report
    assert (out / "translation_mole_pass1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "results.json").read_text())

    # Analyses appended to the same report: misassigned experts and NL only.
    assert main([*common, "--append", "--packs", f"mole={tiny_world.packs_dir}", "--misassign",
                 "--tasks", "synthesis", "--languages", "python", "javascript"]) == 0
    assert main([*common, "--append", "--packs", f"mole={tiny_world.packs_dir}", "--nl-only",
                 "--tasks", "synthesis", "--limit", "1"]) == 0
    capsys.readouterr()
    rows = _rows(out / "generations.jsonl")
    mis = [r for r in rows if r["forced_expert"]]
    assert len(mis) == 2 * 2 * 2  # languages × experts × problems
    for r in mis:
        assert set(r["generation"]["routes"]) == {r["forced_expert"]}
    nl = [r for r in rows if r["routing"] == "nl-only"]
    assert len(nl) == 2 and all(set(r["generation"]["routes"]) == {"nl"} for r in nl)
    report = (out / "report.md").read_text()
    assert "Misassigned expert (RQ4) — mole, synthesis" in report and "mole [NL only]" in report
    assert (out / "misassign_mole_synthesis_pass1.png").exists()
    assert len({r["model"] for r in rows}) == 3


def test_automated_mode_and_sampling(tmp_path: Path, tiny_world) -> None:  # noqa: F811
    """Automated mode through the engine seam, and n samples per problem with pass@k aggregation."""
    import copy

    from mole_lsp.engine.engine import Engine
    from mole_lsp.engine.sources import FolderPacks
    from training.eval.executor import Executor
    from training.eval.models import EngineGenerate, GenOptions, parse_packs
    from training.eval.problems import load_problems
    from training.eval.report import aggregate
    from training.eval.runs import RunPlan, run_setting
    from training.eval.sandbox import Limits

    needs("python")
    from lsp_fixtures import load_tiny_base

    model, tok = load_tiny_base(tiny_world)
    setting = parse_packs(f"mole={tiny_world.packs_dir}")

    def make_engine(pack_dir):
        return Engine(copy.deepcopy(model), tok, packs=FolderPacks(pack_dir) if pack_dir else None)

    gen = EngineGenerate(setting, make_engine, GenOptions(max_new_tokens=5, temperature=1.0, seed=3))
    problems = load_problems(write_data(tmp_path / "hx"), ["python"])
    got: list[dict] = []
    rows = run_setting(gen, problems, Executor(Limits(wall_s=10), workers=2),
                       RunPlan(tasks=["synthesis"], modes=["automated"], n_samples=3), got.extend, log=lambda m: None)
    assert rows == got and len(rows) == 2 * 3
    assert {r["model"] for r in rows} == {"mole [automated]"}
    assert sorted(r["sample"] for r in rows) == [0, 0, 1, 1, 2, 2]
    assert all(r["generation"]["mode"] == "automated" for r in rows)
    agg = aggregate(rows, (1, 3))
    assert set(agg[("mole [automated]", "synthesis", False)]["python"]) == {1, 3}


# --------------------------------------------------------------------------------------------------
# Aggregation and reports from handmade rows


def _row(model: str, task: str, task_id: str, lang: str, passed: bool, *, source: str | None = None,
         forced: str | None = None, status: str | None = None) -> dict:
    return {"model": model, "task": task, "task_id": task_id, "language": lang, "source_language": source,
            "forced_expert": forced, "passed": passed, "status": status or ("passed" if passed else "failed"),
            "generation": {"stop_reason": "stop", "new_tokens": 10, "ms": 100.0}}


def test_pass_at_k_aggregation() -> None:
    from training.eval.report import aggregate, available_ks

    # Problem 0: 2 of 3 samples pass; problem 1: none of 3; JavaScript/0: all 3.
    rows = ([_row("m", "synthesis", "Python/0", "python", p) for p in (True, False, True)]
            + [_row("m", "synthesis", "Python/1", "python", False) for _ in range(3)]
            + [_row("m", "synthesis", "JavaScript/0", "javascript", True) for _ in range(3)])
    assert available_ks(rows) == [1]  # 10 needs 10 samples per problem
    agg = aggregate(rows, (1, 2, 3))[("m", "synthesis", False)]
    assert agg["python"][1] == pytest.approx((2 / 3 + 0) / 2)
    assert agg["python"][2] == pytest.approx((pass_at_k(3, 2, 2) + 0) / 2) == pytest.approx(0.5)
    assert agg["javascript"] == {1: 1.0, 2: 1.0, 3: 1.0}
    assert agg["all"][1] == pytest.approx((2 / 3 + 0 + 1) / 3)  # mean over every problem, not languages
    # Translation keys are pairs; the same task id under two pairs are two problems.
    tr = [_row("m", "translation", "Python/0", "python", True, source="javascript"),
          _row("m", "translation", "Python/0", "python", False, source="cpp")]
    t = aggregate(tr)[("m", "translation", False)]
    assert t["javascript->python"] == {1: 1.0} and t["cpp->python"] == {1: 0.0} and t["all"] == {1: 0.5}


def test_report_rendering_from_handmade_rows(tmp_path: Path) -> None:
    from training.eval.report import (
        language_table,
        misassign_matrix,
        summary_table,
        translation_matrix,
        write_report,
    )

    langs = ["cpp", "python", "rust"]
    rows = []
    for model, bonus in (("No-FT", 0), ("MoLE", 1)):
        for i, lang in enumerate(langs):
            for n in range(4):
                rows.append(_row(model, "synthesis", f"{lang}/{n}", lang, n < i + bonus))
                rows.append(_row(model, "summarization", f"{lang}/{n}", lang, n < bonus))
            for src in langs:
                if src != lang:
                    rows += [_row(model, "translation", f"{lang}/{n}", lang, n < 2, source=src) for n in range(4)]
    rows += [_row("PerLang", "synthesis", f"python/{n}", "python", n == 0, status="compile_error") for n in range(4)]
    for lang in langs:
        for expert in langs:
            rows += [_row("MoLE", "synthesis", f"{lang}/{n}", lang, lang == expert and n == 0, forced=expert)
                     for n in range(2)]

    summary = summary_table([r for r in rows if not r["forced_expert"]])
    assert summary.splitlines()[0] == "| Model | Summarization | Synthesis | Translation |"
    assert "| No-FT | 0.00 | 25.00 | 50.00 |" in summary  # synthesis: (0 + 1 + 2) / 12
    assert "| MoLE | 25.00 | 50.00 | 50.00 |" in summary
    assert "| PerLang | N/A | 25.00 | N/A |" in summary  # no translation for per-language models
    table = language_table([r for r in rows if not r["forced_expert"]], "synthesis")
    assert table.splitlines()[0] == "| Model | C++ | Python | Rust | Avg |"
    assert "| MoLE | 25.00 | 50.00 | 75.00 | 50.00 |" in table
    assert "| PerLang | N/A | 25.00 | N/A | 25.00 |" in table
    matrix = translation_matrix(rows, "MoLE")
    assert matrix.splitlines()[0] == "| source \\ target | C++ | Python | Rust | Avg |"
    assert "| **C++** | — | 50.00 | 50.00 | 50.00 |" in matrix
    assert "| **Avg** | 50.00 | 50.00 | 50.00 | 50.00 |" in matrix
    mis = misassign_matrix(rows, "MoLE", "synthesis")
    assert "| Python | 0.00 | **50.00** | 0.00 | -50.00 |" in mis
    assert misassign_matrix(rows, "No-FT", "synthesis") == ""

    report = write_report(rows, tmp_path / "rep", meta=["handmade rows"])
    text = report.read_text()
    assert "- handmade rows" in text and "compile_error" in text
    for name in ("translation_MoLE_pass1.png", "translation_No-FT_pass1.png", "misassign_MoLE_synthesis_pass1.png"):
        assert (tmp_path / "rep" / name).read_bytes()[:4] == b"\x89PNG"
        assert f"]({name})" in text
    results = json.loads((tmp_path / "rep" / "results.json").read_text())
    cell = next(x for x in results if x["model"] == "MoLE" and x["task"] == "translation" and x["key"] == "cpp->rust")
    assert math.isclose(cell["pass@1"], 0.5)


# --------------------------------------------------------------------------------------------------
# Command-line pieces


def test_parse_pairs() -> None:
    from training.eval.runs import parse_pairs

    six = ["cpp", "go", "java", "javascript", "python", "rust"]
    assert len(parse_pairs(None, six)) == 30
    py = parse_pairs("from:python,to:python", six)
    assert len(py) == 10 and ("python", "rust") in py and ("go", "python") in py
    assert parse_pairs("js->py, rust-go", six) == [("javascript", "python"), ("rust", "go")]
    with pytest.raises(ValueError, match="itself"):
        parse_pairs("python->py", six)
    with pytest.raises(ValueError, match="not loaded"):
        parse_pairs("python->rust", ["python", "cpp"])


def test_parse_packs_layouts(tmp_path: Path) -> None:
    from training.eval.models import parse_packs

    (tmp_path / "mole" / "core").mkdir(parents=True)
    assert parse_packs(f"mole={tmp_path / 'mole'}").kind == "packs"
    (tmp_path / "run" / "packs" / "core").mkdir(parents=True)
    assert parse_packs(f"alllang={tmp_path / 'run'}").path == tmp_path / "run" / "packs"
    for lang in ("python", "rust"):  # training.finetune --method perlang: OUT/perlang/<lang>/packs
        (tmp_path / "pl" / "perlang" / lang / "packs" / "core").mkdir(parents=True)
    s = parse_packs(f"perlang={tmp_path / 'pl'}")
    assert s.kind == "perlang" and s.pack_dir("rust") == tmp_path / "pl" / "perlang" / "rust" / "packs"
    assert s.pack_dir("go") is None  # answered by the base alone
    with pytest.raises(ValueError, match="NAME=DIR"):
        parse_packs(str(tmp_path))
    with pytest.raises(ValueError, match="no core pack"):
        parse_packs(f"x={tmp_path}")
