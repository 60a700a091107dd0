"""Mining C#: XML doc comments, methods / constructors / local functions, samples and the split by file."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from mole_lsp.lang.plugins import feature, languages_with
from mole_lsp.lang.plugins.csharp import clean_xml_doc
from training.corpus.build import Options, build_corpus, split_of
from training.corpus.extract import extract
from training.corpus.samples import HOLE

pytest.importorskip("tree_sitter")
pytest.importorskip("tree_sitter_c_sharp")

SOURCE = '''\
using System;
using System.Collections.Generic;

namespace Demo.Text;

/// <summary>Helpers for strings.</summary>
public static class Words
{
    /// <summary>
    /// Counts the words of <paramref name="text"/> that are longer than
    /// <paramref name="min"/> characters.
    /// </summary>
    /// <param name="text">The text to scan.</param>
    /// <param name="min">The shortest length that counts.</param>
    /// <returns>The number of long words, or <see langword="null"/> never.</returns>
    /// <exception cref="T:System.ArgumentNullException">When <c>text</c> is null.</exception>
    [Obsolete("use CountLong")]
    public static int CountLongWords(string text, int min)
    {
        if (text == null) throw new ArgumentNullException(nameof(text));
        var count = 0;
        foreach (var word in text.Split(' '))
        {
            if (word.Length > min) count++;
        }
        return count;
    }

    /// <inheritdoc/>
    public override string ToString()
    {
        var parts = new List<string>();
        parts.Add("Words");
        parts.Add("helper");
        return string.Join(" ", parts);
    }

    public static int Twice(int x) => x * 2;
}

public class Counter
{
    private int _value;

    /// <summary>
    /// Creates a counter that starts at the given value and counts upwards.
    /// </summary>
    public Counter(int start)
    {
        _value = start;
        Console.WriteLine("created");
        Console.WriteLine(_value);
    }
}

public interface IShape
{
    /// <summary>Computes the area of the shape in square units.</summary>
    double Area();
}
'''

TOP_LEVEL = '''\
using System;

Console.WriteLine(Sum(3));

/// <summary>Adds up the integers from one to <paramref name="n"/>, both included.</summary>
static int Sum(int n)
{
    var total = 0;
    for (var i = 1; i <= n; i++)
        total += i;
    return total;
}
'''


def test_csharp_is_a_mined_language() -> None:
    assert "csharp" in languages_with("CORPUS")
    assert feature("csharp", "CORPUS").miner.grammar.wheel == "tree-sitter-c-sharp"


def test_methods_constructors_and_local_functions() -> None:
    fns = {f.name: f for f in extract(SOURCE, "csharp", "Words.cs").functions}
    # Interface members have no body; Twice is expression-bodied and still a function.
    assert set(fns) == {"CountLongWords", "ToString", "Twice", "Counter"}
    count = fns["CountLongWords"]
    assert count.summary == "Counts the words of `text` that are longer than\n`min` characters."
    assert count.doc == (
        "Counts the words of `text` that are longer than\n`min` characters.\n\n"
        "Parameters:\n- `text`: The text to scan.\n- `min`: The shortest length that counts.\n\n"
        "Returns: The number of long words, or `null` never.\n\n"
        "Throws:\n- `System.ArgumentNullException`: When `text` is null."
    )
    assert count.text.startswith("/// <summary>") and "[Obsolete" in count.code
    assert count.code.startswith('[Obsolete("use CountLong")]\npublic static int CountLongWords')
    assert "///" not in count.code and "CountLongWords(string text, int min)" in count.signature
    assert fns["ToString"].doc is None  # <inheritdoc/> says nothing itself
    assert fns["Counter"].doc == "Creates a counter that starts at the given value and counts upwards."
    top = extract(TOP_LEVEL, "csharp", "Program.cs").functions
    assert [f.name for f in top] == ["Sum"] and top[0].doc.startswith("Adds up the integers from one to `n`")


def test_xml_doc_cleaning() -> None:
    doc, summary = clean_xml_doc(
        "<summary>\nSorts the list in place.\n<para>Uses <see cref=\"M:List{T}.Sort\"/> underneath.</para>\n"
        "</summary>\n<remarks>Stable for equal keys &amp; fast.</remarks>\n<example><code>xs.Sort();</code></example>")
    assert summary == "Sorts the list in place.\n\nUses `List<T>.Sort` underneath."
    assert doc == summary + "\n\nStable for equal keys & fast."
    doc, _ = clean_xml_doc("<summary>Runs it like this:\n<code>\n  var x = 1;\n  Run(x);\n</code></summary>")
    assert doc == "Runs it like this:\n\n```csharp\nvar x = 1;\nRun(x);\n```"
    assert clean_xml_doc("Plain prose after triple slashes works too.") == (
        "Plain prose after triple slashes works too.", "Plain prose after triple slashes works too.")
    assert clean_xml_doc("<summary>TODO</summary>") is None
    assert clean_xml_doc("<inheritdoc cref=\"Base\"/>") is None


def test_builder_emits_every_kind_and_splits_by_file(tmp_path: Path) -> None:
    files = {"src/Words.cs": SOURCE, "src/Program.cs": TOP_LEVEL, "README.md": "not C#"}
    for i in range(12):
        files[f"gen/Part{i}.cs"] = TOP_LEVEL.replace("Sum", f"Sum{i}").replace("i <= n", f"i <= n + {i}")
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")

    def run(**kw: object) -> list[dict]:
        out = io.StringIO()
        build_corpus([tmp_path], "c#", out, Options(windows_per_file=0, **kw))  # type: ignore[arg-type]
        return [json.loads(line) for line in out.getvalue().splitlines()]

    rows = run(fim_rate=0.0, seed=3, heldout_fraction=0.4)
    assert {r["kind"] for r in rows} == {"doc2code", "code2doc"}
    assert all(r["language"] == "csharp" and r["source"].endswith(".cs") for r in rows)
    assert {r["symbol"] for r in rows if r["source"] == "src/Words.cs"} == {"CountLongWords", "Counter"}
    d2c = next(r for r in rows if r["kind"] == "doc2code")
    assert "C# function" in d2c["question"] and "```csharp\n" in d2c["answer"]
    c2d = next(r for r in rows if r["kind"] == "code2doc")
    assert "///" not in c2d["answer"] and "```csharp\n" in c2d["question"]
    # Held-out split by file: one file never feeds both sides, and both sides exist.
    splits = {r["source"]: r["split"] for r in rows}
    assert all(r["split"] == splits[r["source"]] == split_of(r["source"], 0.4) for r in rows)
    assert set(splits.values()) == {"train", "heldout"}

    fim_rows = run(fim_rate=1.0, seed=3)
    assert {r["kind"] for r in fim_rows} == {"fim"}
    fim = next(r for r in fim_rows if r["symbol"] == "CountLongWords")
    assert HOLE in fim["question"] and re.fullmatch(r"```csharp\n.+\n```", fim["answer"], re.DOTALL)


def test_region_directives_do_not_eat_the_first_doc_line() -> None:
    src = (
        "class A\n{\n    #region Serialize\n    /// <summary>\n    /// Serializes the value to a JSON string.\n"
        "    /// </summary>\n    [DebuggerStepThrough]\n    public static string S(object value)\n    {\n"
        "        var s = value.ToString();\n        return s;\n    }\n    #endregion\n\n"
        "    /// <summary>Writes a comment <c>/*...*/</c> holding the text.</summary>\n"
        "    public void WriteComment(string text)\n    {\n        Write(text);\n    }\n}\n"
    )
    docs = {f.name: f.doc for f in extract(src, "csharp").functions}
    assert docs == {"S": "Serializes the value to a JSON string.",
                    "WriteComment": "Writes a comment `/*...*/` holding the text."}
