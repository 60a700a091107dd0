"""Classification through the registry's fence aliases, the main language, the 1/3 rule, the split."""

from __future__ import annotations

from mole_lsp.lang.registry import load_registry
from training.classify import Sample, classify_text, select_rows, split_samples
from training.sources import BadRows

REG = load_registry()


def test_classification_resolves_aliases_through_registry():
    for q, a, want in [
        ("x", "```c++\nint main() { return 0; }\n```", "cpp"),
        ("x", "```c#\nclass A { void M() {} }\n```", "csharp"),
        ("x", "```js\nconsole.log(1)\n```", "javascript"),
        ("x", "```py\nprint(1)\n```", "python"),
        ("x", "~~~rs\nfn main() {}\n~~~", "rust"),
        ("x", "```C\nint x;\n```", "c"),
    ]:
        assert classify_text(q, a, REG).main_language == want, a


def test_main_language_is_the_one_with_most_code():
    a = "```bash\nls\n```\nthen\n```python\nimport os\nprint(os.listdir('.'))\n```\n"
    c = classify_text("run it", a, REG)
    assert c.main_language == "python" and set(c.code_chars) == {"shell", "python"}


def test_filtering_counts_bad_rows_and_applies_the_third_rule():
    prose = "This is a long explanation in plain English without any code at all. " * 3
    rows = [
        {"question": "q", "answer": "```python\nprint(1)\n```"},  # kept
        {"question": prose, "answer": "```python\nx = 1\n```"},  # < 1/3 code
        {"question": "Which library?", "answer": "Use requests."},  # NL only
        {"question": "q", "answer": "```\nsome code\n```"},  # untagged only
        {"question": "q", "answer": "```haskell\nmain = pure ()\n```"},  # not a paper language
        {"question": "q", "answer": "```brainfuckish\n+++\n```"},  # unknown tag
        {"question": "", "answer": "```python\nx\n```"},  # no text
        {"question": None, "answer": 3},  # wrong types
        {"answer": "```go\nfunc f() {}\n```"},  # missing field
    ]
    bad = BadRows()
    kept = select_rows(rows, ["python", "go"], 1 / 3, REG, bad)
    assert [s.language for s in kept] == ["python"]
    assert bad == {"little_code": 1, "no_code": 1, "unknown_language": 2, "other_language": 1, "no_text": 3}


def test_exactly_one_third_is_kept():
    code_body = "x=1\n"
    a = f"```python\n{code_body}```"
    # Code = the parser's code states: the opening line's newline, the body and the closing fence.
    code = 1 + len(code_body) + 3
    filler = "y" * (3 * code - len(a))
    assert len(filler) + len(a) == 3 * code
    kept = select_rows([{"question": filler, "answer": a}], ["python"], 1 / 3, REG, BadRows())
    assert len(kept) == 1
    kept = select_rows([{"question": filler + "z", "answer": a}], ["python"], 1 / 3, REG, BadRows())
    assert kept == []


def test_stratified_split_is_seeded_and_per_language():
    samples = [Sample("q", "a", lang) for lang in ("python", "rust") for _ in range(40)]
    samples += [Sample("q", "a", "go") for _ in range(3)]
    tr, va = split_samples(samples, 0.05, 42)
    count = {lang: sum(s.language == lang for s in va) for lang in ("python", "rust", "go")}
    assert count == {"python": 2, "rust": 2, "go": 1}
    assert len(tr) + len(va) == len(samples)
    tr2, va2 = split_samples(samples, 0.05, 42)
    assert [id(s) for s in va2] == [id(s) for s in va]
    # Rows that carry a split keep it.
    fixed = [Sample("q", "a", "python", "val"), Sample("q", "a", "python", "train")]
    tr, va = split_samples(fixed, 0.5, 0)
    assert va == [fixed[0]] and tr == [fixed[1]]
