"""Corpus builder: extraction per language, sample kinds, dedup, licences, split, zips, bad files."""

from __future__ import annotations

import io
import json
import random
import re
import zipfile
from pathlib import Path

import pytest

from mole_lsp.lang.plugins import doc_comments as docs
from training.corpus.build import Options, build_corpus, main, split_of
from training.corpus.extract import extract
from training.corpus.samples import HOLE, fim
from training.corpus.sources import strip_licence_header

GRAMMARS = {"java": "tree_sitter_java", "go": "tree_sitter_go", "rust": "tree_sitter_rust",
            "javascript": "tree_sitter_javascript", "typescript": "tree_sitter_typescript",
            "cpp": "tree_sitter_cpp", "c": "tree_sitter_c"}


def needs(*languages: str) -> None:
    """Skip when a tree-sitter grammar wheel is missing (Python itself needs only ``ast``)."""
    pytest.importorskip("tree_sitter")
    for lang in languages:
        if lang in GRAMMARS:
            pytest.importorskip(GRAMMARS[lang])

# One documented function per language, plus enough body lines to pass the size filter.
SOURCES: dict[str, tuple[str, str, str, str]] = {
    # language: (file name, source, function name, a phrase of its doc)
    "python": ("pkg/mathutil.py", '''\
import math


def clamp(value, low, high):
    """Limit value to the closed range from low to high.

    Values below low become low and values above high become high.
    """
    if value < low:
        return low
    if value > high:
        return high
    return value
''', "clamp", "Limit value to the closed range"),
    "java": ("src/org/demo/Util.java", '''\
package org.demo;

public class Util {
    /**
     * Returns the larger of two {@code int} values.
     *
     * @param a the first value
     * @param b the second value
     * @return the larger value
     */
    public static int max(int a, int b) {
        if (a >= b) {
            return a;
        }
        return b;
    }
}
''', "max", "Returns the larger of two `int` values."),
    "go": ("strs/reverse.go", '''\
package strs

// Reverse returns its argument string reversed rune-wise left to right.
// It allocates a new slice of runes for the result.
func Reverse(s string) string {
\tr := []rune(s)
\tfor i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
\t\tr[i], r[j] = r[j], r[i]
\t}
\treturn string(r)
}
''', "Reverse", "Reverse returns its argument string reversed"),
    "rust": ("src/lib.rs", '''\
/// Adds every number of the slice and returns the total sum.
///
/// # Examples
///
/// ```
/// assert_eq!(total(&[1, 2]), 3);
/// ```
#[inline]
pub fn total(xs: &[i64]) -> i64 {
    let mut sum = 0;
    for x in xs {
        sum += x;
    }
    sum
}
''', "total", "Adds every number of the slice"),
    "javascript": ("lib/chunk.js", '''\
/**
 * Splits an array into groups of the given size.
 *
 * @param {Array} array The array to process.
 * @param {number} [size=1] The length of each chunk.
 * @returns {Array} Returns the new array of chunks.
 */
function chunk(array, size) {
  const out = [];
  for (let i = 0; i < array.length; i += size) {
    out.push(array.slice(i, i + size));
  }
  return out;
}

module.exports = chunk;
''', "chunk", "Splits an array into groups of the given size."),
    "typescript": ("src/greet.ts", '''\
/**
 * Builds a greeting message for the named person.
 * @param name Who to greet.
 */
export function greet(name: string): string {
  const trimmed: string = name.trim();
  if (trimmed.length === 0) {
    return "Hello, stranger";
  }
  return `Hello, ${trimmed}`;
}
''', "greet", "Builds a greeting message"),
    "cpp": ("include/demo/algo.hpp", '''\
namespace demo {
  /**
   *  @brief  Counts the elements of a range equal to a value.
   *  @param  first  Start of the range.
   *  @param  value  The value to look for.
   */
  template<typename It, typename T>
    int
    count_equal(It first, It last, const T& value)
    {
      int n = 0;
      for (; first != last; ++first)
        if (*first == value)
          ++n;
      return n;
    }
}
''', "count_equal", "Counts the elements of a range equal to a value."),
    "c": ("src/sum.c", '''\
#include <stddef.h>

/* Return the sum of the first n integers of the array xs. */
long sum_ints(const int *xs, size_t n)
{
    long total = 0;
    for (size_t i = 0; i < n; i++)
        total += xs[i];
    return total;
}
''', "sum_ints", "Return the sum of the first n integers"),
}


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def run(roots: list[Path], language: str, **kw: object) -> tuple[list[dict], object]:
    """Chat samples only unless ``windows_per_file`` is given (test_completion_objective covers windows)."""
    kw.setdefault("windows_per_file", 0)
    out = io.StringIO()
    stats = build_corpus(roots, language, out, Options(**kw))  # type: ignore[arg-type]
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    return rows, stats


# --- extraction -------------------------------------------------------------------------------

@pytest.mark.parametrize("language", sorted(SOURCES))
def test_extracts_documented_function(language: str) -> None:
    needs(language)
    name, source, symbol, phrase = SOURCES[language]
    grammar = "typescript" if language == "typescript" else language
    fns = extract(source, grammar).functions
    fn = next(f for f in fns if f.name == symbol)
    assert fn.doc is not None and phrase in fn.doc
    # Comment markers are gone from the prose, and the doc is not part of the bare code.
    assert not re.search(r"/\*\*|\*/|^\s*///|^\s*//|\"\"\"", fn.doc, re.MULTILINE)
    assert phrase not in fn.code
    assert fn.text.rstrip().endswith(fn.code.rstrip().split("\n")[-1])
    assert symbol in fn.signature
    # text starts with the documentation (Python: the def line holding the docstring).
    first, end = fn.hole_lines
    assert 0 < first < end <= len(fn.text.split("\n"))


@pytest.mark.parametrize("language", sorted(SOURCES))
def test_builder_emits_all_kinds_per_language(tmp_path: Path, language: str) -> None:
    needs(language)
    name, source, symbol, phrase = SOURCES[language]
    root = write_tree(tmp_path / "src", {name: source})
    rows, stats = run([root], language, fim_rate=0.0)
    assert len(rows) == 1 and rows[0]["kind"] in ("doc2code", "code2doc")
    row = rows[0]
    assert row["language"] == language and row["source"] == name and row["symbol"] == symbol
    assert f"```{language}\n" in row["question"] + row["answer"]
    rows_fim, _ = run([root], language, fim_rate=1.0)
    assert [r["kind"] for r in rows_fim] == ["fim"]
    assert HOLE in rows_fim[0]["question"] and rows_fim[0]["answer"].startswith(f"```{language}\n")
    assert stats.files_scanned == 1 and stats.functions >= 1 and stats.documented >= 1


def test_doc2code_and_code2doc_shapes(tmp_path: Path) -> None:
    needs("java")
    name, source, _, _ = SOURCES["java"]
    root = write_tree(tmp_path, {name: source})
    kinds = {}
    for seed in range(12):
        rows, _ = run([root], "java", fim_rate=0.0, seed=seed)
        kinds[rows[0]["kind"]] = rows[0]
    d2c, c2d = kinds["doc2code"], kinds["code2doc"]
    # doc2code: prose + signature hint in, fenced documented function out.
    assert "Returns the larger of two `int` values." in d2c["question"]
    assert "public static int max(int a, int b)" in d2c["question"]
    assert re.search(r"```java\n/\*\*.*public static int max.*\n}\n```$", d2c["answer"], re.DOTALL)
    # code2doc: fenced code without its Javadoc in, prose without markers out.
    assert "```java\npublic static int max" in c2d["question"] and "/**" not in c2d["question"]
    assert c2d["answer"].startswith("Returns the larger of two `int` values.")
    assert "- `a`: the first value" in c2d["answer"] and "Returns: the larger value" in c2d["answer"]
    assert "@param" not in c2d["answer"] and "*" not in c2d["answer"]


def test_fim_answer_fills_the_hole_exactly() -> None:
    _, source, _, _ = SOURCES["python"]
    fn = extract(source, "python").functions[0]
    for seed in range(30):
        qa = fim(fn, "python", "Python", random.Random(seed))
        assert qa is not None
        holed = re.search(r"```python\n(.*)\n```", qa["question"], re.DOTALL).group(1)
        middle = re.fullmatch(r"```python\n(.*)\n```", qa["answer"], re.DOTALL).group(1)
        line = next(ln for ln in holed.split("\n") if ln.strip() == HOLE)
        assert holed.replace(line, middle, 1) == fn.text.rstrip("\n")
        assert '"""' not in middle  # holes stay inside the body, after the docstring


def test_undocumented_functions_only_feed_fim(tmp_path: Path) -> None:
    src = "def plain(a, b):\n    x = a + b\n    y = x * 2\n    z = y - 1\n    return z\n"
    root = write_tree(tmp_path, {"m.py": src})
    rows, stats = run([root], "python", fim_rate=0.0)
    assert rows == [] and stats.dropped["undocumented"] == 1
    rows, _ = run([root], "python", fim_rate=1.0)
    assert [r["kind"] for r in rows] == ["fim"]


def test_tiny_and_huge_functions_are_dropped(tmp_path: Path) -> None:
    big = "\n".join(f"    x{i} = {i}" for i in range(100))
    src = f'def tiny():\n    """Return one as a number."""\n    return 1\n\n\ndef huge():\n    """Do a lot of things."""\n{big}\n'
    root = write_tree(tmp_path, {"m.py": src})
    rows, stats = run([root], "python")
    assert rows == [] and stats.dropped["tiny"] == 1 and stats.dropped["huge"] == 1


def test_nested_functions_and_methods(tmp_path: Path) -> None:
    src = '''\
class Box:
    def put(self, item):
        """Store an item inside the box for later use."""
        def helper():
            return item
        self.item = helper()
        return self.item
'''
    names = [f.name for f in extract(src, "python").functions]
    assert names == ["put"]
    fn = extract(src, "python").functions[0]
    assert fn.text.startswith("def put(self, item):")  # dedented out of the class


def test_go_directives_and_rust_examples_are_not_prose() -> None:
    needs("go", "rust")
    go = "package p\n\n// Sum adds up the numbers of the slice and returns it.\n//go:noinline\nfunc Sum(xs []int) int {\n\tt := 0\n\tfor _, x := range xs {\n\t\tt += x\n\t}\n\treturn t\n}\n"
    fn = extract(go, "go").functions[0]
    assert fn.doc == "Sum adds up the numbers of the slice and returns it."
    rust_fn = extract(SOURCES["rust"][1], "rust").functions[0]
    assert "Examples" not in rust_fn.doc and "assert_eq" not in rust_fn.doc
    assert rust_fn.code.startswith("#[inline]\npub fn total")  # attributes belong to the code


def test_form_feeds_do_not_shift_python_lines() -> None:
    src = "import os\n\x0c\n\ndef f(a):\n    \"\"\"Return a plus one, computed slowly.\"\"\"\n    b = a\n    b += 1\n    return b\n"
    fn = extract(src, "python").functions[0]
    assert fn.text.startswith("def f(a):") and fn.signature == "def f(a):"


def test_inherit_doc_and_issue_numbers_are_not_prose() -> None:
    needs("java", "cpp")
    body = " int size() {\n    int n = 0;\n    n += 1;\n    return n;\n  }\n"
    java = "class A {\n  /** {@inheritDoc} */\n  public" + body + "}\n"
    assert extract(java, "java").functions[0].doc is None
    cpp = "struct A {\n  // 438. Ambiguity in the clause\n " + body + "};\n"
    assert extract(cpp, "cpp").functions[0].doc is None


def test_javadoc_snippets_become_fences_and_ts_arrows_are_functions() -> None:
    needs("typescript")
    doc = docs.clean_tagged_block("/**\n * Opens it.\n * <p> Same as:\n * {@snippet lang=java :\n * open(null);\n * }\n */",
                                 snippet_tag="java")
    assert doc == "Opens it.\n\nSame as:\n```java\nopen(null);\n```"
    ts = ("/**\n * Doubles every number of the list it receives.\n */\nexport const double =\n"
          "  (xs: number[]): number[] =>\n    xs.map((x) => x * 2)\n      .filter((x) => x > 0)\n")
    fn = extract(ts, "typescript").functions[0]
    assert fn.name == "double" and fn.doc and fn.text.endswith(".filter((x) => x > 0)")
    assert fn.hole_lines[1] == len(fn.text.split("\n"))  # no closing brace: the last line may be a hole


def test_comment_separated_by_blank_line_is_not_a_doc() -> None:
    needs("go")
    src = "package p\n\n// A file comment far away from the function.\n\nfunc F(a int) int {\n\tb := a + 1\n\tc := b * 2\n\treturn c\n}\n"
    assert extract(src, "go").functions[0].doc is None


def test_javascript_assignment_and_iife_functions() -> None:
    needs("javascript")
    src = '''\
;(function() {
  /**
   * Adds two numbers and returns the result to the caller.
   */
  function add(a, b) {
    var s = a + b;
    return s;
  }

  /** Greets the given user politely by name. */
  exports.greet = function(user) {
    var msg = "hi " + user;
    return msg;
  };
}());
'''
    fns = {f.name: f for f in extract(src, "javascript").functions}
    assert set(fns) == {"add", "greet"}
    assert fns["greet"].code.startswith("exports.greet = function(user)") and fns["greet"].code.endswith("};")
    assert fns["add"].doc == "Adds two numbers and returns the result to the caller."


def test_doc_cleaning_helpers() -> None:
    assert docs.is_prose("Return the index of the first match.")
    assert not docs.is_prose("x = 1;\ny = 2;")
    assert not docs.is_prose("TODO: make this faster later on")
    assert not docs.is_prose("Copyright 2020 The Authors. All rights reserved.")
    cleaned = docs.clean_tagged_block("/**\n * @brief Finds it in {@code xs}.\n * @tparam T the type\n */")
    assert cleaned is not None and cleaned.startswith("Finds it in `xs`.")
    assert docs.limit_length("a " * 10, 5) is None
    javadoc = docs.clean_tagged_block(
        "/**\n * {@return the first element}\n * See <code>{@link List#get}</code> and <a href=\n"
        " * \"{@docRoot}/x.html\">the spec</a> (JLS {@jls 9.6}).\n */")
    assert javadoc == "Returns the first element.\nSee `List.get` and the spec (JLS 9.6)."


# --- dedup, licences, caps ----------------------------------------------------------------------

def test_duplicates_keep_one_sample(tmp_path: Path) -> None:
    _, source, _, _ = SOURCES["python"]
    reformatted = source.replace("if value < low:", "if value  <  low :")
    root = write_tree(tmp_path, {"a/m.py": source, "b/m.py": source, "c/m.py": reformatted})
    rows, stats = run([root], "python")
    assert len(rows) == 1 and stats.dropped["duplicate"] == 2


def test_licence_headers_are_stripped(tmp_path: Path) -> None:
    needs("java", "go")
    header = "/*\n * Copyright (c) 2009, Example Corp. All rights reserved.\n * Licensed under the Apache License.\n */\n"
    java = SOURCES["java"][1].replace("package org.demo;\n\npublic class Util {\n",
                                      "public class Util {\n")
    undocumented = "// Copyright 2021 Someone. Licensed under the MIT License.\nfunc F(a int) int {\n\tb := a + 1\n\tc := b * 2\n\treturn c\n}\n"
    root = write_tree(tmp_path, {"Util.java": header + java, "f.go": "package p\n" + undocumented})
    rows, _ = run([root], "java", fim_rate=0.5)
    rows_go, _ = run([root], "go", fim_rate=1.0)
    assert rows and rows_go
    for row in rows + rows_go:
        text = row["question"] + row["answer"]
        assert "Copyright" not in text and "Licensed" not in text
    # The helper blanks lines instead of deleting them, so line numbers survive.
    stripped = strip_licence_header(header + java)
    assert stripped.count("\n") == (header + java).count("\n") and "Copyright" not in stripped
    py = "#!/usr/bin/env python3\n# Copyright 2001 Someone\n# SPDX-License-Identifier: MIT\n\n# Helpers.\nx = 1\n"
    assert strip_licence_header(py, hash_comments=True) == "#!/usr/bin/env python3\n\n\n\n# Helpers.\nx = 1\n"


def test_per_file_cap_and_total_cap(tmp_path: Path) -> None:
    funcs = "\n\n".join(
        f'def f{i}(a):\n    """Compute variant number {i} of the thing."""\n    b = a + {i}\n    c = b * {i}\n    return c\n'
        for i in range(10)
    )
    root = write_tree(tmp_path, {"m.py": funcs, "n.py": funcs.replace("def f", "def g").replace("+", "-")})
    rows, stats = run([root], "python", max_per_file=3)
    assert len(rows) == 6 and stats.dropped["file_cap"] == 14
    rows, _ = run([root], "python", max_per_file=10, max_samples=4)
    assert len(rows) == 4


# --- split, determinism ----------------------------------------------------------------------------

def test_split_is_by_file_and_deterministic(tmp_path: Path) -> None:
    files = {}
    for i in range(40):
        files[f"pkg{i % 4}/mod{i}.py"] = "\n\n".join(
            f'def f{i}_{j}(a):\n    """Return variant {i} {j} of the input value."""\n    b = a + {i}\n    c = b * {j}\n    return c\n'
            for j in range(3)
        )
    root = write_tree(tmp_path / "tree", files)
    rows_a, stats = run([root], "python", heldout_fraction=0.3, seed=1)
    rows_b, _ = run([root], "python", heldout_fraction=0.3, seed=1)
    rows_c, _ = run([root], "python", heldout_fraction=0.3, seed=2)
    assert rows_a == rows_b  # same seed: identical output
    by_file: dict[str, set[str]] = {}
    for row in rows_a + rows_c:
        by_file.setdefault(row["source"], set()).add(row["split"])
    assert all(len(s) == 1 for s in by_file.values())  # a file never straddles the split
    assert {s for v in by_file.values() for s in v} == {"train", "heldout"}
    assert all(split_of(src, 0.3) == next(iter(s)) for src, s in by_file.items())
    assert stats.splits["heldout"] + stats.splits["train"] == len(rows_a)
    assert all(not Path(r["source"]).is_absolute() and str(tmp_path) not in r["source"] for r in rows_a)
    assert split_of("x.py", 0.0) == "train" and split_of("x.py", 1.0) == "heldout"


def test_cli_is_byte_for_byte_deterministic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_tree(tmp_path / "src", {n: s for n, s, _, _ in SOURCES.values() if n.endswith(".py")})
    write_tree(root, {"more/extra.py": SOURCES["python"][1].replace("clamp", "clip")})
    outs = []
    for i in range(2):
        out = tmp_path / f"out{i}" / "py.jsonl"
        assert main([str(root), "--language", "py", "--out", str(out), "--seed", "7", "--fim-rate", "0.5"]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0]
    summary = capsys.readouterr().out
    assert "files scanned" in summary and "samples: fim" in summary and "split: heldout" in summary
    assert main([str(root), "--language", "cobol", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert not (tmp_path / "x.jsonl").exists()


# --- zips -----------------------------------------------------------------------------------

def test_reads_zip_archives(tmp_path: Path) -> None:
    needs("java")
    name, source, symbol, _ = SOURCES["java"]
    archive = tmp_path / "src.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("java.base/" + name, source)
        zf.writestr("java.base/README.txt", "not java")
        zf.writestr("../evil/Escape.java", source)  # never read: path escapes the archive
    rows, stats = run([archive], "java")
    assert [r["source"] for r in rows] == ["java.base/" + name] and rows[0]["symbol"] == symbol
    # An archive inside a directory tree is opened too, its members named archive!/member.
    tree = tmp_path / "jdk"
    (tree / "lib").mkdir(parents=True)
    archive.rename(tree / "lib" / "src.zip")
    rows, _ = run([tree], "java")
    assert [r["source"] for r in rows] == ["lib/src.zip!/java.base/" + name]


# --- bad files --------------------------------------------------------------------------------

def test_bad_files_are_skipped_and_counted(tmp_path: Path) -> None:
    _, good, _, _ = SOURCES["python"]
    root = write_tree(tmp_path, {
        "good.py": good,
        "broken.py": "def f(:\n    return )\n",
        "binary.py": b"\x7fELF\x00\x00\x01\x02" + bytes(range(256)),
        "latin1.py": "# -*- coding: latin-1 -*-\ns = 'caf\xe9'\n".encode("latin-1"),
        "gen_pb2.py": good.replace("clamp", "clamp2"),
        "made.py": "# Code generated by mkerrors; DO NOT EDIT.\n" + good.replace("clamp", "clamp3"),
        "huge.py": "x = 1\n" * 300_000,
        "notes.txt": "not python at all",
    })
    (root / "dangling.py").symlink_to(root / "missing.py")
    rows, stats = run([root], "python")
    assert [r["source"] for r in rows] == ["good.py"]
    assert stats.skipped == {"syntax_error": 1, "binary": 1, "encoding": 1, "generated": 2, "too_large": 1}
    assert stats.files_scanned == 1


def test_tree_sitter_errors_drop_only_broken_functions(tmp_path: Path) -> None:
    needs("go")
    _, good, _, _ = SOURCES["go"]
    broken = "package strs\n\nfunc Broken(s string) string {\n\treturn s +* ) (\n\tx :=\n}\n"
    root = write_tree(tmp_path, {"ok.go": good, "bad.go": broken, "bin.go": b"\x00\x01\x02garbage"})
    rows, stats = run([root], "go")
    assert [r["symbol"] for r in rows] == ["Reverse"]
    assert stats.files_with_parse_errors == 1 and stats.skipped["binary"] == 1


def test_cpp_extensionless_headers_need_a_mode_line(tmp_path: Path) -> None:
    needs("cpp")
    _, source, symbol, _ = SOURCES["cpp"]
    root = write_tree(tmp_path, {
        "include/algo": "// <algo> -*- C++ -*-\n\n" + source,
        "include/README": "Plain text with no mode line.\n",
        "include/bits/impl.tcc": source.replace("count_equal", "count_same"),
    })
    rows, stats = run([root], "cpp")
    assert sorted(r["symbol"] for r in rows) == ["count_equal", "count_same"]
    assert stats.skipped["other_language"] == 1


def test_cpp_headers_stay_out_of_a_c_corpus(tmp_path: Path) -> None:
    needs("c")
    _, c_source, _, _ = SOURCES["c"]
    _, cpp_source, _, _ = SOURCES["cpp"]
    root = write_tree(tmp_path, {"sum.h": c_source, "algo.h": cpp_source})
    rows, stats = run([root], "c")
    assert [r["symbol"] for r in rows] == ["sum_ints"] and stats.skipped["other_language"] == 1


def test_unknown_language_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported language"):
        build_corpus([tmp_path], "cobol", io.StringIO())
