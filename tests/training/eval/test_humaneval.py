"""Problem loading (both formats), task prompts, code extraction and program assembly.

The problems here are handmade (digit sums and even counts), written in the shapes of HumanEval-X
and HumanEvalPack records; none comes from the benchmark. Programs are run with the real toolchains
(skipped when absent).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from training.eval.executor import Executor
from training.eval.extract import extract_code
from training.eval.lexer import mask
from training.eval.problems import (
    Problem,
    load_file,
    load_problems,
    problem_from_record,
    read_records,
    reference_code,
)
from training.eval.programs import build_program
from training.eval.prompts import (
    clean_summary,
    program_from_response,
    summarization_prompt,
    summary_synthesis_prompt,
    synthesis_prompt,
    translation_prompt,
)
from training.eval.sandbox import Limits
from training.eval.toolchains import available_toolchains
from training.eval.verdicts import Status

TOOLCHAINS = available_toolchains()

# --------------------------------------------------------------------------------------------------
# Handmade records. Problem 0: digit sum. Problem 1: count the even numbers, with a helper is_even
# given in the prompt (like the benchmark's problems with helpers).

DOC = "Return the sum of the decimal digits of a non-negative integer."
DOC1 = "Count how many numbers of the list are even, using is_even."

X_RECORDS: dict[str, list[dict[str, str]]] = {
    "python": [
        {
            "task_id": "Python/0",
            "prompt": f'from typing import List\n\n\ndef digit_sum(n: int) -> int:\n    """ {DOC}\n'
                      '    >>> digit_sum(123)\n    6\n    """\n',
            "declaration": "from typing import List\n\n\ndef digit_sum(n: int) -> int:\n",
            "canonical_solution": "    return sum(int(c) for c in str(n))\n",
            "test": "\n\ndef check(digit_sum):\n    assert digit_sum(0) == 0\n    assert digit_sum(123) == 6\n"
                    "    assert digit_sum(9999) == 36\n\ncheck(digit_sum)\n",
            "example_test": "def check(digit_sum):\n    assert digit_sum(123) == 6\ncheck(digit_sum)\n",
            "text": f"    {DOC}\n    >>> digit_sum(123)\n    6",
        },
        {
            "task_id": "Python/1",
            "prompt": "def is_even(x: int) -> bool:\n    return x % 2 == 0\n\n\n"
                      f'def count_even(xs: list) -> int:\n    """ {DOC1}\n    """\n',
            "declaration": "def is_even(x: int) -> bool:\n    return x % 2 == 0\n\n\ndef count_even(xs: list) -> int:\n",
            "canonical_solution": "    return sum(1 for x in xs if is_even(x))\n",
            "test": "def check(count_even):\n    assert count_even([1, 2, 4, 7]) == 2\n    assert count_even([]) == 0\n\n"
                    "check(count_even)\n",
            "example_test": "",
            "text": f"    {DOC1}",
        },
    ],
    "cpp": [
        {
            "task_id": "CPP/0",
            "prompt": f"/*\n{DOC}\n>>> digit_sum(123)\n6\n*/\n#include<stdio.h>\nusing namespace std;\n"
                      "int digit_sum(int n){\n",
            "declaration": "#include<stdio.h>\nusing namespace std;\n#include<string>\nint digit_sum(int n){\n",
            "canonical_solution": "    int s = 0;\n    for (char c : to_string(n)) s += c - '0';\n    return s;\n}\n",
            "test": "#undef NDEBUG\n#include<assert.h>\nint main(){\n    assert (digit_sum(0) == 0);\n"
                    "    assert (digit_sum(123) == 6);\n    assert (digit_sum(9999) == 36);\n}\n",
            "example_test": "#undef NDEBUG\n#include<assert.h>\nint main(){\n    assert (digit_sum(123) == 6);\n}\n",
        },
        {
            "task_id": "CPP/1",
            "prompt": f"#include<vector>\nusing namespace std;\nbool is_even(int x){{ return x % 2 == 0; }}\n/*\n{DOC1}\n*/\n"
                      "int count_even(vector<int> xs){\n",
            "declaration": "#include<vector>\nusing namespace std;\nbool is_even(int x){ return x % 2 == 0; }\n"
                           "int count_even(vector<int> xs){\n",
            "canonical_solution": "    int n = 0;\n    for (int x : xs) if (is_even(x)) n++;\n    return n;\n}\n",
            "test": "#undef NDEBUG\n#include<assert.h>\nint main(){\n    assert (count_even({1, 2, 4, 7}) == 2);\n"
                    "    assert (count_even({}) == 0);\n}\n",
            "example_test": "",
        },
    ],
    "go": [
        {
            "task_id": "Go/0",
            "prompt": f'import (\n    "strconv"\n)\n\n// {DOC}\n// >>> DigitSum(123)\n// 6\nfunc DigitSum(n int) int {{\n',
            "import": 'import (\n    "strconv"\n)\n',
            "docstring": f"// {DOC}\n// >>> DigitSum(123)\n// 6\n",
            "declaration": "\nfunc DigitSum(n int) int {\n",
            "canonical_solution": "    s := 0\n    for _, c := range strconv.Itoa(n) {\n        s += int(c - '0')\n    }\n"
                                  "    return s\n}\n",
            "test_setup": 'package main\n\nimport (\n    "testing"\n)\n',
            "test": "func TestDigitSum(t *testing.T) {\n    for in, want := range map[int]int{0: 0, 123: 6, 9999: 36} {\n"
                    '        if got := DigitSum(in); got != want {\n            t.Fatalf("DigitSum(%d) = %d", in, got)\n'
                    "        }\n    }\n}\n",
            "example_test": "",
        },
        {
            "task_id": "Go/1",
            "prompt": f"func IsEven(x int) bool {{\n    return x%2 == 0\n}}\n\n// {DOC1}\nfunc CountEven(xs []int) int {{\n",
            "import": "",
            "docstring": f"// {DOC1}\n",
            "declaration": "\nfunc CountEven(xs []int) int {\n",
            "canonical_solution": "    n := 0\n    for _, x := range xs {\n        if IsEven(x) {\n            n++\n        }\n"
                                  "    }\n    return n\n}\n",
            "test_setup": 'package main\n\nimport (\n    "testing"\n)\n',
            "test": "func TestCountEven(t *testing.T) {\n    if CountEven([]int{1, 2, 4, 7}) != 2 || CountEven(nil) != 0 {\n"
                    '        t.Fatal("wrong")\n    }\n}\n',
            "example_test": "",
        },
    ],
    "java": [
        {
            "task_id": "Java/0",
            "prompt": f"import java.util.*;\nimport java.lang.*;\n\nclass Solution {{\n    /**\n    {DOC}\n"
                      "    >>> digitSum(123)\n    6\n     */\n    public int digitSum(int n) {\n",
            "declaration": "import java.util.*;\nimport java.lang.*;\n\nclass Solution {\n    public int digitSum(int n) {\n",
            "canonical_solution": "        int s = 0;\n        while (n > 0) { s += n % 10; n /= 10; }\n        return s;\n"
                                  "    }\n}",
            "test": "public class Main {\n    public static void main(String[] args) {\n        Solution s = new Solution();\n"
                    "        List<Boolean> correct = Arrays.asList(s.digitSum(0) == 0, s.digitSum(123) == 6, "
                    "s.digitSum(9999) == 36);\n        if (correct.contains(false)) {\n"
                    "            throw new AssertionError();\n        }\n    }\n}\n",
            "example_test": "",
            "text": f"    {DOC}\n    >>> digitSum(123)\n    6",
        },
        {
            "task_id": "Java/1",
            "prompt": "import java.util.*;\n\nclass Solution {\n    public boolean isEven(int x) {\n        return x % 2 == 0;\n"
                      f"    }}\n    /**\n    {DOC1}\n     */\n    public int countEven(List<Integer> xs) {{\n",
            "declaration": "import java.util.*;\n\nclass Solution {\n    public boolean isEven(int x) {\n"
                           "        return x % 2 == 0;\n    }\n    public int countEven(List<Integer> xs) {\n",
            "canonical_solution": "        int n = 0;\n        for (int x : xs) if (isEven(x)) n++;\n        return n;\n    }\n}",
            "test": "public class Main {\n    public static void main(String[] args) {\n        Solution s = new Solution();\n"
                    "        if (s.countEven(Arrays.asList(1, 2, 4, 7)) != 2) throw new AssertionError();\n    }\n}\n",
            "example_test": "",
            "text": f"    {DOC1}",
        },
    ],
    "javascript": [
        {
            "task_id": "JavaScript/0",
            "prompt": f"/* {DOC}\n  >>> digitSum(123)\n  6\n  */\nconst digitSum = (n) => {{\n",
            "declaration": "\nconst digitSum = (n) => {\n",
            "canonical_solution": "  return String(n).split('').reduce((s, c) => s + Number(c), 0);\n}\n",
            "test": "const testDigitSum = () => {\n  console.assert(digitSum(0) === 0)\n  console.assert(digitSum(123) === 6)\n"
                    "  console.assert(digitSum(9999) === 36)\n}\n\ntestDigitSum()\n",
            "example_test": "",
        },
        {
            "task_id": "JavaScript/1",
            "prompt": f"const isEven = (x) => {{\n  return x % 2 === 0;\n}}\n\n/* {DOC1} */\nconst countEven = (xs) => {{\n",
            "declaration": "const isEven = (x) => {\n  return x % 2 === 0;\n}\n\nconst countEven = (xs) => {\n",
            "canonical_solution": "  return xs.filter(isEven).length;\n}\n",
            "test": "console.assert(countEven([1, 2, 4, 7]) === 2)\nconsole.assert(countEven([]) === 0)\n",
            "example_test": "",
        },
    ],
    "rust": [
        {
            "task_id": "Rust/0",
            "prompt": f"\n/*\n {DOC}\n    \n*/\n",
            "declaration": "\nuse std::{collections::{HashSet, HashMap}, cmp::max};\n\nfn digit_sum(n: u64) -> u64 {\n",
            "canonical_solution": "\n    n.to_string().chars().map(|c| c.to_digit(10).unwrap() as u64).sum()\n}\n",
            "test": "\n#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n    fn test_digit_sum() {\n"
                    "        assert_eq!(digit_sum(0), 0);\n        assert_eq!(digit_sum(123), 6);\n"
                    "        assert_eq!(digit_sum(9999), 36);\n    }\n\n}\n",
            "example_test": "",
        },
        {
            "task_id": "Rust/1",
            "prompt": f"\n/*\n {DOC1}\n*/\n",
            "declaration": "\nuse std::collections::HashMap;\n\nfn is_even(x: i64) -> bool {\n",
            # Like the benchmark's Rust/10: the solution finishes the helper, then defines the entry point.
            "canonical_solution": "    x % 2 == 0\n}\n\nfn count_even(xs: Vec<i64>) -> usize {\n"
                                  "    xs.into_iter().filter(|x| is_even(*x)).count()\n}\n",
            "test": "\n#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n    fn t() {\n"
                    "        assert_eq!(count_even(vec![1, 2, 4, 7]), 2);\n    }\n}\n",
            "example_test": "",
        },
    ],
}

FILE_SUFFIX = {"javascript": "js"}


def write_humaneval_x(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for lang, recs in X_RECORDS.items():
        with gzip.open(root / f"humaneval_{FILE_SUFFIX.get(lang, lang)}.jsonl.gz", "wt", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
    return root


def pack_record(lang: str, i: int) -> dict[str, str]:
    """A HumanEvalPack-shaped record built from the handmade HumanEval-X one."""
    r = dict(X_RECORDS[lang][i])
    entry = {"python": ["digit_sum", "count_even"], "go": ["DigitSum", "CountEven"]}[lang][i]
    r.update(entry_point=entry, instruction=f"Write a function {entry} for the problem: {DOC if i == 0 else DOC1}",
             docstring=r.pop("text", r.get("docstring", "")), buggy_solution=r["canonical_solution"].replace("0", "1"),
             bug_type="value misuse", failure_symptoms="incorrect output", signature="sig",
             test_setup=r.get("test_setup", ""), **{"import": r.get("import", "")})
    return r


@pytest.fixture(scope="module")
def problems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Problem]]:
    return load_problems(write_humaneval_x(tmp_path_factory.mktemp("hx")))


@pytest.fixture(scope="module")
def executor() -> Executor:
    return Executor(Limits(wall_s=60, cpu_s=30, compile_wall_s=300), workers=2)


def needs(lang: str) -> None:
    if not TOOLCHAINS[lang].available:
        pytest.skip(f"{lang} toolchain missing: {'; '.join(TOOLCHAINS[lang].missing)}")


# --------------------------------------------------------------------------------------------------
# Loading


def test_load_humaneval_x_directory(problems: dict[str, list[Problem]]) -> None:
    assert sorted(problems) == ["cpp", "go", "java", "javascript", "python", "rust"]
    entry = {"cpp": "digit_sum", "go": "DigitSum", "java": "digitSum", "javascript": "digitSum",
             "python": "digit_sum", "rust": "digit_sum"}
    for lang, ps in problems.items():
        assert [p.index for p in ps] == [0, 1]
        p = ps[0]
        assert p.language == lang and p.source_format == "humaneval-x"
        assert p.entry_point == entry[lang] and p.open_name == entry[lang]
        assert p.docstring.startswith(DOC), (lang, p.docstring)
        assert entry[lang] in p.signature and not p.signature.endswith("{")
        assert DOC in p.instruction and p.signature in p.instruction
    # Rust prompts are only a comment: the reference continues the declaration.
    assert problems["rust"][0].prefix == X_RECORDS["rust"][0]["declaration"]
    # C++: the prompt carries the docstring, the declaration adds includes the prompt lacks.
    cpp = problems["cpp"][0]
    assert cpp.prefix.startswith("#include<string>\n") and DOC in cpp.prefix
    # The helper's header ends the Rust/1 declaration; the tests call count_even.
    assert problems["rust"][1].open_name == "is_even" and problems["rust"][1].entry_point == "count_even"
    assert problems["python"][1].entry_point == "count_even"
    assert problems["go"][0].imports.strip().startswith("import")


def test_language_filter_and_errors(tmp_path: Path) -> None:
    root = write_humaneval_x(tmp_path / "hx")
    only = load_problems(root, ["js", "C++"])  # any registry name works
    assert sorted(only) == ["cpp", "javascript"]
    with pytest.raises(FileNotFoundError):
        load_problems(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.json").write_text('{"hello": "world"}')
    with pytest.raises(ValueError, match="no HumanEval"):
        load_problems(tmp_path / "empty")


def test_benchmark_languages_come_from_the_plugins() -> None:
    """The languages whose plugin assembles HumanEval-X programs are exactly the benchmark's six, in
    registry order; languages that only run programs (C#) or none (C, TypeScript) declare no PROGRAM."""
    from mole_lsp.lang.plugins import feature
    from training.eval.problems import BENCHMARK_LANGUAGES

    assert BENCHMARK_LANGUAGES == ("cpp", "go", "java", "javascript", "python", "rust")
    for lang in ("c", "csharp", "typescript"):
        assert feature(lang, "PROGRAM") is None
    assert feature("csharp", "TOOLCHAIN") is not None
    with pytest.raises(ValueError, match="no program builder"):
        problem_from_record({"task_id": "C#/0", "prompt": "class A {\n", "test": ""})


def test_load_humanevalpack_layouts(tmp_path: Path) -> None:
    # The Hub layout: data/<config>/data/humanevalpack.jsonl
    for lang in ("python", "go"):
        d = tmp_path / "pack" / "data" / lang / "data"
        d.mkdir(parents=True)
        (d / "humanevalpack.jsonl").write_text("".join(json.dumps(pack_record(lang, i)) + "\n" for i in (0, 1)))
    ps = load_problems(tmp_path / "pack")
    assert sorted(ps) == ["go", "python"]
    p = ps["python"][0]
    assert p.source_format == "humanevalpack"
    assert p.instruction.startswith("Write a function digit_sum")  # given instructions are kept
    assert p.entry_point == "digit_sum" and p.buggy_solution
    assert p.extra["bug_type"] == "value misuse"
    go = ps["go"][0]
    assert go.docstring.startswith(DOC)  # comment markers removed
    # A single .json file with a list, and a language given explicitly.
    single = tmp_path / "one.json"
    single.write_text(json.dumps([pack_record("python", 1)]))
    (q,) = load_file(single)
    assert q.task_id == "Python/1" and q.entry_point == "count_even"
    assert read_records(single)[0]["task_id"] == "Python/1"


def test_load_parquet(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    path = tmp_path / "python" / "test-00000-of-00001.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist([pack_record("python", 0), pack_record("python", 1)]), path)
    ps = load_problems(tmp_path)
    assert [p.task_id for p in ps["python"]] == ["Python/0", "Python/1"]


class _DatasetHub(BaseHTTPRequestHandler):
    """Serves files of one dataset repository the way hf_hub_download fetches them."""

    files: dict[str, bytes] = {}
    requests: list[str] = []
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, body: bool) -> None:
        self.requests.append(f"{self.command} {self.path}")
        m = re.match(r"^/datasets/bigcode/humanevalpack/resolve/([^/]+)/(.+)$", self.path)
        data = self.files.get(m.group(2)) if m else None
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(True)


def test_download_humanevalpack_from_a_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hub_server

    _DatasetHub.files = {"data/python/data/humanevalpack.jsonl":
                         "".join(json.dumps(pack_record("python", i)) + "\n" for i in (0, 1)).encode()}
    _DatasetHub.requests = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _DatasetHub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        hub_server.point_huggingface_hub_at(monkeypatch, f"http://127.0.0.1:{srv.server_address[1]}", tmp_path / "hf")
        ps = load_problems(None, ["python"])
    finally:
        srv.shutdown()
        srv.server_close()
    assert [p.task_id for p in ps["python"]] == ["Python/0", "Python/1"]
    assert any(r.startswith("GET /datasets/bigcode/humanevalpack/resolve/main/data/python/") for r in _DatasetHub.requests)


# --------------------------------------------------------------------------------------------------
# Masking and extraction (pure text)


def test_mask_hides_braces_in_literals_and_comments() -> None:
    js = "const s = '{'; // }\nconst r = /[{]/g; const t = `${x} }`; f(a / b, '}')\n"
    masked = mask(js, "javascript")
    assert len(masked) == len(js) and masked.count("\n") == js.count("\n")
    assert masked.count("{") == masked.count("}") == 0
    rust = "fn f<'a>(x: &'a str) -> char { let c = '}'; let s = r#\"}\"#; /* { /* } */ } */ c }"
    m = mask(rust, "rust")
    assert m.count("{") == m.count("}") == 1
    py = "x = '''\n{\n'''  # }\ny = \"}\"\n"
    assert "{" not in mask(py, "python") and "}" not in mask(py, "python")
    go = "s := `{\n` + \"}\" // {\n"
    assert "{" not in mask(go, "go") and "}" not in mask(go, "go")


def test_extract_code() -> None:
    answer = ("Here you go:\n```python\nprint('py')\n```\nand in Rust:\n```rust\nfn main() {}\n```\nDone.\n")
    assert extract_code(answer, "rust") == "fn main() {}\n"
    assert extract_code(answer, "python") == "print('py')\n"
    assert extract_code(answer, "go") is None  # fences, none of them Go
    assert extract_code("```\nint x;\n```", "cpp") == "int x;\n"  # untagged block
    assert extract_code("```c\nint x;\n```", "cpp") == "int x;\n"  # C falls back to C++
    assert extract_code("```js\nlet a = 1;\n```", "javascript") == "let a = 1;\n"
    assert extract_code("```go\nfunc F() {\n}\n", "go") == "func F() {\n}\n"  # unterminated
    assert extract_code("```go\nfunc F() {\n}\n``", "go") == "func F() {\n}\n"  # stopped inside the fence
    assert extract_code("x = 1\ny = 2\n", "python") == "x = 1\ny = 2\n"  # no fence at all: code
    assert extract_code("Text\r\n```cpp\r\nint a;\r\n```\r\n", "cpp").strip() == "int a;"
    assert extract_code("~~~~python\nprint(1)\n~~~~\n", "python") == "print(1)\n"


# --------------------------------------------------------------------------------------------------
# Program assembly (text checks, no toolchain needed)


def test_program_text_per_language(problems: dict[str, list[Problem]]) -> None:
    py = build_program(problems["python"][0], "return sum(map(int, str(n)))\n")
    assert "\n    return sum(map(int, str(n)))" in py  # a body written at column 0 is indented
    py = build_program(problems["python"][0], "    return sum(map(int, str(n)))\nprint(digit_sum(5))\n")
    assert "print(digit_sum(5))" not in py  # the body ends at the first top-level statement
    go_code = ('package main\n\nimport (\n    "fmt"\n    "strconv"\n)\n\nfunc DigitSum(n int) int {\n'
               "    s := 0\n    for _, c := range strconv.Itoa(n) { s += int(c - '0') }\n    return s\n}\n")
    go = build_program(problems["go"][0], go_code)
    assert go.count("package main") == 1 and go.count('"strconv"') == 1 and '"fmt"' not in go
    assert go.count("import (") == 1 and '"testing"' in go
    go2 = build_program(problems["go"][0], "func DigitSum(n int) int {\n    return len(strings.Split(fmt.Sprint(n), \"\"))\n}\n")
    assert '"strings"' in go2 and '"fmt"' in go2 and '"strconv"' not in go2  # used std packages imported
    rs = build_program(problems["rust"][0], "use std::collections::HashMap;\n\nfn digit_sum(n: u64) -> u64 {\n    n\n}\n")
    assert rs.count("use std::collections::HashMap;") == 1 and "use std::collections::HashSet;" in rs
    java = build_program(problems["java"][0], "public class Solution {\n    public int digitSum(int n) { return n; }\n}\n")
    assert "public class Solution" not in java and "class Solution" in java
    cpp = build_program(problems["cpp"][0], "int digit_sum(int n) {\n    return n;\n}\nint main() { return 1; }\n")
    assert cpp.count("int main") == 1
    # Missing closing braces are added (a body that stopped early).
    js = build_program(problems["javascript"][0], "  return 0;\n")
    assert js.count("{") - js.count("${") == js.count("}")


# --------------------------------------------------------------------------------------------------
# Programs with the real toolchains

# Whole-code answers per language, written the way models answer (own imports, a main, a class...).
WHOLE: dict[str, list[str]] = {
    "python": [
        "import math\n\n\ndef digit_sum(n: int) -> int:\n    return sum(map(int, str(n)))\n\n\n"
        "if __name__ == '__main__':\n    print(digit_sum(int(input())))\n",
        "def is_even(x):\n    return x % 2 == 0\n\ndef count_even(xs):\n    return len([x for x in xs if is_even(x)])\n",
    ],
    "cpp": [
        "#include <string>\nusing namespace std;\nint digit_sum(int n) {\n    int s = 0;\n"
        "    for (char c : to_string(n)) s += c - '0';\n    return s;\n}\nint main() {\n    printf(\"%d\\n\", digit_sum(5));\n}\n",
        "bool is_even(int x) { return x % 2 == 0; }\nint count_even(vector<int> xs) {\n"
        "    return count_if(xs.begin(), xs.end(), is_even);\n}\n",
    ],
    "go": [
        "package main\n\nimport (\n    \"fmt\"\n    \"strconv\"\n)\n\nfunc DigitSum(n int) int {\n    s := 0\n"
        "    for _, c := range strconv.Itoa(n) {\n        s += int(c - '0')\n    }\n    return s\n}\n",
        "func IsEven(x int) bool { return x%2 == 0 }\n\nfunc CountEven(xs []int) int {\n    n := 0\n"
        "    for _, x := range xs {\n        if IsEven(x) {\n            n++\n        }\n    }\n    return n\n}\n",
    ],
    "java": [
        "import java.util.*;\n\npublic class Solution {\n    public int digitSum(int n) {\n"
        "        return String.valueOf(n).chars().map(c -> c - '0').sum();\n    }\n}\n",
        "public int countEven(List<Integer> xs) {\n    int n = 0;\n    for (int x : xs) if (isEven(x)) n++;\n    return n;\n}\n",
    ],
    "javascript": [
        "function digitSum(n) {\n  let s = 0;\n  for (const c of String(n)) s += +c;\n  return s;\n}\n"
        "console.log(digitSum(12));\n",
        "const isEven = (x) => x % 2 === 0;\nconst countEven = (xs) => {\n  return xs.filter(isEven).length;\n};\n",
    ],
    "rust": [
        "use std::collections::HashMap;\n\nfn digit_sum(n: u64) -> u64 {\n    let _m: HashMap<u8, u8> = HashMap::new();\n"
        "    n.to_string().bytes().map(|b| (b - b'0') as u64).sum()\n}\n",
        "fn count_even(xs: Vec<i64>) -> usize {\n    xs.iter().filter(|x| is_even(**x)).count()\n}\n\n"
        "fn is_even(x: i64) -> bool {\n    x % 2 == 0\n}\n",
    ],
}
WRONG_BODY = {"python": "    return 0\n", "cpp": "    return 0;\n}\n", "go": "    return 0\n}\n",
              "java": "        return 0;\n    }\n}", "javascript": "  return 0;\n}\n", "rust": "    0\n}\n"}


@pytest.mark.parametrize("lang", sorted(X_RECORDS))
def test_programs_run(problems: dict[str, list[Problem]], executor: Executor, lang: str) -> None:
    needs(lang)
    p0, p1 = problems[lang]
    cases = {
        "reference": build_program(p0, p0.solution),
        "reference with helper": build_program(p1, p1.solution),
        "example tests": build_program(p0, p0.solution, example_tests=True),
        "whole code": build_program(p0, WHOLE[lang][0]),
        "whole code with helper": build_program(p1, WHOLE[lang][1]),
        "wrong": build_program(p0, WRONG_BODY[lang]),
    }
    results = dict(zip(cases, executor.run_many([(lang, prog) for prog in cases.values()]), strict=True))
    for name, r in results.items():
        want = Status.FAILED if name == "wrong" else Status.PASSED
        assert r.status is want, (name, r.status, r.reason, cases[name], r.stderr[-2000:])


# --------------------------------------------------------------------------------------------------
# Task prompts


def test_synthesis_prompt_and_answer(problems: dict[str, list[Problem]], executor: Executor) -> None:
    p = problems["python"][0]
    tp = synthesis_prompt(p)
    assert tp.task == "synthesis" and tp.language == "python" and tp.stop == ("```",)
    assert DOC in tp.instruction and "digit_sum(n: int) -> int" in tp.instruction
    assert tp.response_prefix == "```python\n" + p.prefix  # the answer starts with header + docstring
    body = "    return sum(int(c) for c in str(n))\n```\nThis sums the digits."
    program = program_from_response(tp, body)
    assert program is not None and "This sums" not in program
    assert program_from_response(tp, "I cannot do that.\n```\n") is not None  # still code, will fail
    needs("python")
    assert executor.run("python", program).passed


def test_summarization_prompts(problems: dict[str, list[Problem]]) -> None:
    p = problems["rust"][0]
    tp = summarization_prompt(p)
    assert tp.language is None and tp.max_chars == len(p.docstring)
    assert "```rust\n" in tp.instruction and p.solution.strip() in tp.instruction
    assert DOC not in tp.instruction  # the code is shown without its docstring
    with pytest.raises(ValueError, match="prose"):
        program_from_response(tp, "It adds digits.")
    copied = "n.to_string().chars().map(|c| c.to_digit(10).unwrap() as u64).sum()"
    summary = clean_summary(p, f"Adds up the digits.\n{copied}\n" + "x" * 500)
    assert copied not in summary and summary.startswith("Adds up the digits.")
    assert len(summary) <= len(p.docstring)
    tp2 = summary_synthesis_prompt(p, summary)
    assert summary in tp2.instruction and "Rust" in tp2.instruction
    assert tp2.response_prefix == "```rust\n" + p.declaration and tp2.language == "rust"


def test_translation_prompt(problems: dict[str, list[Problem]], executor: Executor) -> None:
    src, tgt = problems["python"][0], problems["go"][0]
    tp = translation_prompt(src, tgt)
    assert tp.problem is tgt and tp.source is src and tp.language == "go"
    assert "Python" in tp.instruction and "Go" in tp.instruction
    assert "```python\n" in tp.instruction and reference_code(src).strip() in tp.instruction
    assert tp.response_prefix == "```go\n" + tgt.declaration
    with pytest.raises(ValueError, match="different problems"):
        translation_prompt(src, problems["go"][1])
    # An answer that continues the target header, as a model would, runs against the Go tests.
    needs("go")
    program = program_from_response(tp, tgt.solution + "```\n")
    assert program is not None
    r = executor.run("go", program)
    assert r.passed, (r.reason, program)


def test_problem_from_record_minimal() -> None:
    rec = {"task_id": "Python/7", "prompt": "def f(x):\n", "canonical_solution": "    return x\n",
           "test": "assert f(1) == 1\n"}
    p = problem_from_record(rec)
    assert p.index == 7 and p.entry_point == "f" and p.prefix == "def f(x):\n"
    assert "check(" not in build_program(p, p.solution)
    q = problem_from_record({**rec, "test": "def check(candidate):\n    assert candidate(2) == 2\n"})
    assert build_program(q, q.solution).rstrip().endswith("check(f)")  # HumanEval style: call added


# --------------------------------------------------------------------------------------------------
# Evaluation building blocks (training.eval.tasks) with stand-in generators


def _oracle(prompts):
    """Answers every code prompt with the reference continuation and describes code by its docstring."""
    out = []
    for tp in prompts:
        if tp.language is None:
            out.append(tp.problem.docstring)
        elif tp.task == "synthesis":
            out.append(tp.problem.solution + "```\nDone.")
        else:  # translation and summary synthesis continue the target's declaration
            out.append(tp.problem.solution + "```")
    return out


def test_evaluate_tasks_with_an_oracle(problems: dict[str, list[Problem]], executor: Executor) -> None:
    from training.eval.tasks import (
        evaluate_code_task,
        evaluate_summarization,
        pass_rates,
        synthesis_prompts,
        translation_prompts,
    )

    needs("python")
    needs("javascript")
    subset = {lang: problems[lang] for lang in ("javascript", "python")}
    results = evaluate_code_task(synthesis_prompts(subset), _oracle, executor)
    results += evaluate_code_task(translation_prompts(subset), _oracle, executor)
    results += evaluate_summarization(subset, _oracle, executor)
    assert all(r.result.passed for r in results), [(r.task, r.task_id, r.result.reason) for r in results]
    rates = pass_rates(results)
    assert set(rates) == {"synthesis", "translation", "summarization"}
    assert set(rates["translation"]) == {"javascript->python", "python->javascript", "all"}
    assert rates["synthesis"]["all"] == {1: 1.0}
    assert all(r.summary for r in results if r.task == "summarization")
    # A generator that writes nothing useful fails every problem, and a count mismatch is an error.
    bad = evaluate_code_task(synthesis_prompts(subset), lambda ps: ["    pass\n```"] * len(ps), executor)
    assert not any(r.result.passed for r in bad)
    with pytest.raises(ValueError, match="answers"):
        evaluate_code_task(synthesis_prompts(subset), lambda ps: [], executor)


def test_check_reference_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.eval.cli import main

    needs("python")
    root = write_humaneval_x(tmp_path / "hx")
    for mode in ([], ["--as-response", "synthesis"], ["--as-response", "translation"]):
        code = main(["--check-reference", "--data", str(root), "--languages", "python", "--workers", "2", *mode])
        out = capsys.readouterr().out
        assert code == 0, out
        assert re.search(r"^python\s+2\s+0\s+2\s", out, re.M), out
    # A dataset defect (a wrong reference) is reported with its reason and a non-zero exit code.
    broken = tmp_path / "broken"
    broken.mkdir()
    rec = dict(X_RECORDS["python"][0], canonical_solution="    return 0\n")
    (broken / "humaneval_python.jsonl").write_text(json.dumps(rec) + "\n")
    assert main(["--check-reference", "--data", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "failures:" in out and "Python/0" in out and "failed" in out
