"""HumanEval-X / HumanEvalPack problems, the paper's task prompts, and runnable test programs.

Data. Both formats are JSON records per problem and language (``task_id`` like ``"Rust/12"``, ``prompt``,
``declaration``, ``canonical_solution``, ``test``, ``example_test``; HumanEvalPack adds ``entry_point``,
``import``, ``test_setup``, ``docstring``, ``instruction``, ``buggy_solution``...; HumanEval-X has some of
those for some languages only). :func:`load_problems` reads a local directory or file in either format
(jsonl, jsonl.gz, json, parquet) or downloads HumanEvalPack from the Hub, and returns :class:`Problem`
objects normalised across formats, with registry language ids.

Tasks (MoLE §III-B, evaluated as HumanEvalPack does): *synthesis* (instruction → code), *summarization*
(code → description, then description → code; the code is what gets tested) and *translation*
(reference solution in language A → code in language B). Each builder returns a :class:`TaskPrompt`:
the user instruction plus the start of the answer, which opens a code fence of the target language and
repeats the function header, as in the authors' evaluation harness (their fork of
bigcode-evaluation-harness), so generation can stop at the closing fence.

Programs. :func:`build_program` turns a completion into one source file with the problem's tests.
It accepts both shapes models produce: a continuation of the function header (a body, like the
reference solutions) or whole code that defines the function itself; imports, package lines, helper
functions given by the problem, duplicate ``main`` functions and unbalanced closing braces are
reconciled per language. Like the HumanEvalPack harness it adds a fixed set of common imports for
Python, C++ and Java and imports the Go standard packages the code uses.
"""

from __future__ import annotations

import gzip
import json
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from training.eval.execution import CPP_PRELUDE

__all__ = [
    "BENCHMARK_LANGUAGES",
    "HUMANEVALPACK_REPO",
    "Problem",
    "TaskPrompt",
    "build_program",
    "clean_summary",
    "display_name",
    "download_humanevalpack",
    "extract_code",
    "load_file",
    "language_id",
    "load_problems",
    "mask",
    "problem_from_record",
    "program_from_response",
    "read_records",
    "reference_code",
    "summarization_prompt",
    "summary_synthesis_prompt",
    "synthesis_prompt",
    "translation_prompt",
]

# The benchmark's own language set (HumanEval-X and HumanEvalPack cover exactly these six).
BENCHMARK_LANGUAGES = ("cpp", "go", "java", "javascript", "python", "rust")
HUMANEVALPACK_REPO = "bigcode/humanevalpack"
# Config names of the HumanEvalPack dataset repository, where they differ from our ids.
_PACK_CONFIG = {"javascript": "js"}


# --------------------------------------------------------------------------------------------------
# Languages (the registry is the source of names; the benchmark only needs six)


def _registry() -> Any:
    from mole_lsp.lang.registry import load_registry

    return load_registry()


def language_id(name: str) -> str:
    """Registry id for a dataset's language name (task-id prefix, file suffix, config name)."""
    lang = _registry().resolve(name)
    if lang is None:
        raise ValueError(f"unknown language {name!r}")
    return lang


def display_name(lang: str) -> str:
    return _registry().get(lang).name


# --------------------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True)
class Problem:
    task_id: str  # as in the source, e.g. "Python/0"
    language: str  # registry id
    index: int  # problem number shared by all languages (pairs problems for translation)
    prompt: str  # docstring + function header, as given
    declaration: str  # function header (+ imports, helpers) without the docstring
    solution: str  # reference solution, continuing ``prefix``
    test: str
    example_test: str = ""
    entry_point: str = ""  # the function the tests call
    docstring: str = ""  # the problem statement as plain text
    instruction: str = ""  # natural-language task (given by HumanEvalPack, built otherwise)
    imports: str = ""  # Go: the import block the prompt uses
    test_setup: str = ""  # Go: package clause and imports of the test file
    buggy_solution: str = ""
    source_format: str = ""  # "humanevalpack" or "humaneval-x"
    prefix: str = ""  # the text the reference solution continues (header + helpers + docstring)
    open_name: str = ""  # the function whose header ends ``prefix``
    signature: str = ""  # header line of the entry point, without the opening brace
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def reference_code(problem: Problem) -> str:
    """The complete reference implementation (no tests): what translation shows as its source."""
    return problem.prefix + problem.solution


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Records of a .jsonl / .jsonl.gz / .json(.gz) / .parquet file."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError(f"reading {path} needs pyarrow (pip install pyarrow)") from e
        return pq.read_table(path).to_pylist()
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    stem = name.removesuffix(".gz")
    if stem.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), [data])
    return list(data)


def _text(rec: Mapping[str, Any], key: str) -> str:
    value = rec.get(key)
    return value if isinstance(value, str) else ""


def problem_from_record(rec: Mapping[str, Any], language: str | None = None) -> Problem:
    """Normalise one HumanEval-X or HumanEvalPack record."""
    task_id = str(rec["task_id"])
    head, _, number = task_id.rpartition("/")
    lang = language or language_id(head)
    index = int(number) if number.isdigit() else -1
    fmt = "humanevalpack" if "entry_point" in rec and "instruction" in rec else "humaneval-x"
    prompt, declaration = _text(rec, "prompt"), _text(rec, "declaration")
    solution, test = _text(rec, "canonical_solution"), _text(rec, "test")
    prefix = _prefix(lang, prompt, declaration)
    open_name = _open_function(lang, prefix)
    entry = _text(rec, "entry_point") or _entry_point(lang, prefix + solution, test) or open_name
    docstring = _text(rec, "docstring") or _text(rec, "text")
    if not docstring or (lang != "python" and re.match(r"\s*(//|/\*)", docstring)):
        docstring = _docstring_of(lang, docstring or prompt)  # HumanEval-X Go gives it as // comments
    docstring = textwrap.dedent(docstring).strip("\n")
    signature = _signature(lang, prefix + solution, entry) or _signature(lang, prefix, open_name)
    instruction = _text(rec, "instruction") or (
        f"Implement the {display_name(lang)} function `{signature}` described below.\n\n{docstring.strip()}")
    known = {"task_id", "prompt", "declaration", "canonical_solution", "test", "example_test", "entry_point",
             "docstring", "text", "instruction", "import", "test_setup", "buggy_solution"}
    return Problem(task_id=task_id, language=lang, index=index, prompt=prompt, declaration=declaration,
                   solution=solution, test=test, example_test=_text(rec, "example_test"), entry_point=entry,
                   docstring=docstring, instruction=instruction, imports=_text(rec, "import"),
                   test_setup=_text(rec, "test_setup"), buggy_solution=_text(rec, "buggy_solution"),
                   source_format=fmt, prefix=prefix, open_name=open_name, signature=signature,
                   extra={k: v for k, v in rec.items() if k not in known})


def load_file(path: str | Path, language: str | None = None) -> list[Problem]:
    """Problems of one file (language from each record's task id unless given)."""
    return [problem_from_record(r, language) for r in read_records(path) if "task_id" in r and "test" in r]


_DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")


def load_problems(source: str | Path | None = None, languages: Iterable[str] | None = None, *,
                  revision: str | None = None, cache_dir: str | Path | None = None) -> dict[str, list[Problem]]:
    """Problems per language id, sorted by problem number.

    ``source``: a local file or directory in either format (any layout: files are recognised by
    their records), or None / ``"bigcode/humanevalpack"`` to fetch HumanEvalPack from the Hub
    (``revision`` pins a commit)."""
    wanted = None if languages is None else {language_id(x) for x in languages}
    if source is None or str(source) == HUMANEVALPACK_REPO:
        files = download_humanevalpack(sorted(wanted or BENCHMARK_LANGUAGES), revision=revision,
                                       cache_dir=cache_dir)
        paths = [(p, lang) for lang, ps in files.items() for p in ps]
    else:
        root = Path(source)
        if root.is_file():
            paths = [(root, None)]
        elif root.is_dir():
            paths = [(p, None) for p in sorted(root.rglob("*"))
                     if p.is_file() and p.name.lower().endswith(_DATA_SUFFIXES)]
        else:
            raise FileNotFoundError(f"no such data file or directory: {root}")
    out: dict[str, dict[str, Problem]] = {}
    for path, lang in paths:
        hinted = _language_hint(path) if lang is None else lang
        if wanted is not None and hinted is not None and hinted not in wanted:
            continue  # skip reading files of other languages
        try:
            problems = load_file(path, lang)
        except (ValueError, KeyError, json.JSONDecodeError):
            continue  # not a problem file
        for p in problems:
            if wanted is None or p.language in wanted:
                out.setdefault(p.language, {})[p.task_id] = p
    if not out:
        raise ValueError(f"no HumanEval-X/HumanEvalPack problems found in {source}")
    return {lang: sorted(ps.values(), key=lambda p: (p.index, p.task_id)) for lang, ps in sorted(out.items())}


def _language_hint(path: Path) -> str | None:
    """Language suggested by a file or folder name (humaneval_js.jsonl.gz, data/rust/...)."""
    for part in (path.name.split(".")[0].rsplit("_", 1)[-1], path.parent.name, path.parent.parent.name):
        try:
            lang = language_id(part)
        except ValueError:
            continue
        if lang in BENCHMARK_LANGUAGES:
            return lang
    return None


def download_humanevalpack(languages: Iterable[str], *, revision: str | None = None,
                           cache_dir: str | Path | None = None) -> dict[str, list[Path]]:
    """Fetch HumanEvalPack files from the Hub (dataset ``bigcode/humanevalpack``) into the HF cache.
    Older revisions keep ``data/<config>/data/humanevalpack.jsonl``; newer ones parquet files under
    ``<config>/``. Honours HF_HUB_OFFLINE / HF_ENDPOINT like any huggingface_hub call."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    from mole_lsp.paths import hub_endpoint

    endpoint = hub_endpoint()  # read now: huggingface_hub froze HF_ENDPOINT at import
    out: dict[str, list[Path]] = {}
    api = None
    for lang in languages:
        config = _PACK_CONFIG.get(lang, lang)
        try:
            path = hf_hub_download(HUMANEVALPACK_REPO, f"data/{config}/data/humanevalpack.jsonl",
                                   repo_type="dataset", revision=revision, cache_dir=cache_dir, endpoint=endpoint)
            out[lang] = [Path(path)]
            continue
        except EntryNotFoundError:
            pass
        api = api or HfApi(endpoint=endpoint)
        names = [f for f in api.list_repo_files(HUMANEVALPACK_REPO, repo_type="dataset", revision=revision)
                 if f.startswith(f"{config}/") and f.endswith(".parquet")]
        if not names:
            raise FileNotFoundError(f"{HUMANEVALPACK_REPO}@{revision or 'main'} has no files for {config}")
        out[lang] = [Path(hf_hub_download(HUMANEVALPACK_REPO, n, repo_type="dataset", revision=revision,
                                          cache_dir=cache_dir, endpoint=endpoint)) for n in sorted(names)]
    return out


# --------------------------------------------------------------------------------------------------
# Lexical helpers: masking comments and literals so braces, definitions and imports can be found


# Characters where a comment or literal may start, per language.
_SPECIAL = {
    "python": re.compile(r"[#'\"]"),
    "rust": re.compile(r"//|/\*|[\"']|(?<![\w])b?r#*\""),
    "cpp": re.compile(r"//|/\*|[\"']|(?<![\w])R\""),
    "javascript": re.compile(r"//|/\*|[\"'`/]"),
    "go": re.compile(r"//|/\*|[\"'`]"),
    "java": re.compile(r"//|/\*|[\"']"),
}
_NOT_NEWLINE = re.compile(r"[^\n]")
_RUST_COMMENT_EDGE = re.compile(r"/\*|\*/")
_QUOTE_STOPS = {(q, ml): re.compile("|".join([r"\\", re.escape(q)] + ([] if ml else [r"\n"])))
                for q in ('"', "'", "`", '"""', "'''") for ml in (False, True)}
_CHAR_LIT = re.compile(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]{1,6}\}|u[0-9a-fA-F]{4}|[0-7]{1,3}|.)|[^\\'\n])'")
_JS_REGEX_BEFORE = set("(,=:[!&|?{};+-*%<>~^")


def mask(text: str, language: str) -> str:
    """``text`` with the contents of comments and string/char literals replaced by spaces (newlines
    and length kept), so code structure can be searched with plain regular expressions."""
    out = list(text)
    n = len(text)

    def blank(a: int, b: int) -> None:
        b = min(b, n)
        if a < b:
            out[a:b] = _NOT_NEWLINE.sub(" ", text[a:b])

    def quoted(i: int, quote: str, multiline: bool = False) -> int:
        """End (exclusive) of a quoted literal starting at i (which holds the quote)."""
        stops = _QUOTE_STOPS[(quote, multiline)]
        j = i + len(quote)
        while True:
            m = stops.search(text, j)
            if m is None:
                return n
            if m.group() == "\\":
                j = m.end() + 1
                continue
            return m.end() if m.group() == quote else m.start()

    special = _SPECIAL.get(language, _SPECIAL["cpp"])
    i = 0
    while i < n:
        found = special.search(text, i)  # jump over plain code at C speed
        if found is None:
            break
        i = found.start()
        ch = text[i]
        if language == "python":
            if ch == "#":
                j = text.find("\n", i)
                j = n if j < 0 else j
                blank(i, j)
                i = j
                continue
            if ch in "'\"":
                q = text[i:i + 3] if text[i:i + 3] in ('"""', "'''") else ch
                j = quoted(i, q, multiline=len(q) == 3)
                blank(i + len(q), j - len(q))
                i = j
                continue
            i += 1
            continue
        # C-like languages
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
            continue
        if text.startswith("/*", i):
            if language == "rust":  # Rust block comments nest
                depth, j = 1, i + 2
                while depth:
                    m = _RUST_COMMENT_EDGE.search(text, j)
                    if m is None:
                        j = n
                        break
                    depth += 1 if m.group() == "/*" else -1
                    j = m.end()
            else:
                j = text.find("*/", i + 2)
                j = n if j < 0 else j + 2
            blank(i, j)
            i = j
            continue
        prev_ident = i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")
        if language == "rust" and ch in "rb" and not prev_ident:
            m = re.match(r"b?r(#*)\"", text[i:])
            if m:
                end = text.find('"' + m.group(1), i + m.end())
                end = n if end < 0 else end
                blank(i + m.end(), end)
                i = end + 1 + len(m.group(1))
                continue
        if language == "cpp" and ch == "R" and text.startswith('R"', i) and not prev_ident:
            m = re.match(r'R"([^()\\\s]{0,16})\(', text[i:])
            if m:
                end = text.find(")" + m.group(1) + '"', i + m.end())
                end = n if end < 0 else end
                blank(i + m.end(), end)
                i = end + len(m.group(1)) + 2
                continue
        if ch == '"':
            j = quoted(i, '"', multiline=language == "rust")
            blank(i + 1, j - 1)
            i = j
            continue
        if ch == "'":
            if language == "javascript":
                j = quoted(i, "'")
                blank(i + 1, j - 1)
                i = j
                continue
            m = _CHAR_LIT.match(text, i)
            if m:
                blank(i + 1, m.end() - 1)
                i = m.end()
                continue
            i += 1  # a Rust lifetime or label
            continue
        if ch == "`" and language in ("go", "javascript"):
            j = text.find("`", i + 1) if language == "go" else quoted(i, "`", multiline=True)
            j = n if j < 0 else (j + 1 if language == "go" else j)
            blank(i + 1, j - 1)
            i = j
            continue
        if ch == "/" and language == "javascript":
            k = i - 1
            while k >= 0 and text[k] in " \t":
                k -= 1
            before = text[max(0, k - 5):k + 1]
            if k < 0 or text[k] in _JS_REGEX_BEFORE or text[k] == "\n" or before.endswith(("return", "typeof")):
                j, in_class = i + 1, False
                while j < n and text[j] != "\n":
                    if text[j] == "\\":
                        j += 2
                        continue
                    if text[j] == "[":
                        in_class = True
                    elif text[j] == "]":
                        in_class = False
                    elif text[j] == "/" and not in_class:
                        break
                    j += 1
                if j < n and text[j] == "/":
                    blank(i + 1, j)
                    i = j + 1
                    continue
        i += 1
    return "".join(out)


_KEYWORDS = {"if", "for", "while", "switch", "catch", "return", "else", "new", "sizeof", "do", "case", "throw",
             "delete", "synchronized", "try"}


@lru_cache(maxsize=4096)
def _def_pattern(language: str, name: str = r"[A-Za-z_]\w*") -> re.Pattern[str]:
    """Where a function called ``name`` is defined (run on masked text); group 1 is the name."""
    n = f"({name})"
    if language == "python":
        return re.compile(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{n}[ \t]*\(", re.M)
    if language == "go":
        return re.compile(rf"\bfunc[ \t]+(?:\([^)]*\)[ \t]*)?{n}[ \t]*[\[(]")
    if language == "rust":
        return re.compile(rf"\bfn[ \t]+{n}[ \t]*[<(]")
    if language == "javascript":
        value = r"(?:async[ \t]*)?(?:function\b|\(|[A-Za-z_$][\w$]*[ \t]*=>)"  # a function, not any variable
        return re.compile(rf"\bfunction\b[ \t]*\*?[ \t]*{n}[ \t]*\(|\b(?:const|let|var)[ \t]+{n}[ \t]*=[ \t]*{value}")
    # C++ / Java: a type (or modifier) before the name, a parameter list, then the body's brace.
    params = r"\((?:[^;{}()]|\([^;{}()]*\))*\)"
    return re.compile(rf"[\w>\]&*][ \t\n]+[&*]*{n}[ \t]*{params}[^;{{}}()=]*\{{")


def _defined_names(code: str, language: str, masked: str | None = None) -> list[str]:
    masked = mask(code, language) if masked is None else masked
    names = []
    for m in _def_pattern(language).finditer(masked):
        name = next(g for g in m.groups() if g)
        if name not in _KEYWORDS:
            names.append(name)
    return names


def _find_definition(masked: str, language: str, name: str) -> re.Match[str] | None:
    found = None
    for m in _def_pattern(language, re.escape(name)).finditer(masked):
        found = m  # the last one: helpers come before the function that uses them
    return found


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def _definition_span(masked: str, language: str, m: re.Match[str]) -> tuple[int, int]:
    """Character span of the whole definition found by ``m`` (from the start of its line)."""
    start = _line_start(masked, m.start(1) if language == "python" else m.start())
    if language == "python":
        indent = len(masked[start:m.start(1)]) - len(masked[start:m.start(1)].lstrip())
        pos = masked.find("\n", m.end())
        while pos != -1:
            line_end = masked.find("\n", pos + 1)
            line = masked[pos + 1:line_end if line_end != -1 else len(masked)]
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                return start, pos + 1
            pos = line_end
        return start, len(masked)
    depth_paren, j = 0, m.end() - 1 if masked[m.end() - 1] == "{" else m.end()
    while j < len(masked):  # find the body's opening brace (or the end of a JS expression)
        c = masked[j]
        if c in "([":
            depth_paren += 1
        elif c in ")]":
            depth_paren -= 1
        elif c == "{" and depth_paren <= 0:
            break
        elif c == ";" and depth_paren <= 0:
            return start, j + 1
        j += 1
    depth = 0
    while j < len(masked):
        if masked[j] == "{":
            depth += 1
        elif masked[j] == "}":
            depth -= 1
            if depth == 0:
                end = j + 1
                if language == "javascript" and masked[end:end + 1] == ";":
                    end += 1
                return start, end
        j += 1
    return start, len(masked)


def _remove_definitions(code: str, language: str, names: Iterable[str]) -> str:
    for name in names:
        masked = mask(code, language)
        m = _find_definition(masked, language, name)
        if m is not None:
            a, b = _definition_span(masked, language, m)
            code = code[:a] + code[b:]
    return code


def _brace_deficit(code: str, language: str) -> int:
    masked = mask(code, language)
    return masked.count("{") - masked.count("}")


# --------------------------------------------------------------------------------------------------
# Deriving what HumanEval-X leaves implicit


_HEADER_LINE = {
    "cpp": re.compile(r"^\s*(#\s*include\b.*|using\s+namespace\s+\w+\s*;)\s*$"),
    "java": re.compile(r"^\s*import\s+[\w.*]+\s*;\s*$"),
    "rust": re.compile(r"^\s*(pub\s+)?(use|extern\s+crate)\s+[^;]*;\s*$"),
    "python": re.compile(r"^\s*(import\s+\S.*|from\s+\S+\s+import\s+.*)$"),
    "go": re.compile(r"^\s*import\s+\S.*$"),
    "javascript": re.compile(r"^\s*(const|let|var)\s+\w+\s*=\s*require\(.*\)\s*;?\s*$"),
}


def _last_code_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _header_line(language: str, declaration: str) -> str:
    """The line of the last function header in the declaration (not simply its last line: HumanEval-X
    Python/142's declaration ends with a stray quote)."""
    masked = mask(declaration + ("\n    pass\n" if language == "python" else "}"), language)
    matches = [m for m in _def_pattern(language).finditer(masked) if next(g for g in m.groups() if g) not in _KEYWORDS]
    if not matches:
        return _last_code_line(declaration)
    m = matches[-1]
    start = _line_start(declaration, m.start(1) if language == "python" else m.start())
    end = declaration.find("\n", m.start(1))
    return declaration[start:end if end != -1 else len(declaration)].strip()


def _prefix(language: str, prompt: str, declaration: str) -> str:
    """The text a reference solution continues. The prompt (it has the docstring) when it contains
    the declaration's header line, completed with header lines (includes, imports) that only the
    declaration has; otherwise the declaration (HumanEval-X Rust prompts are only a comment)."""
    header_line = _header_line(language, declaration)
    if not prompt.strip() or (header_line and header_line not in {ln.strip() for ln in prompt.splitlines()}):
        return declaration or prompt
    pattern = _HEADER_LINE[language]
    prompt_lines = {ln.strip() for ln in prompt.splitlines()}
    missing = [ln for ln in declaration.splitlines() if pattern.match(ln) and ln.strip() not in prompt_lines]
    return ("\n".join(missing) + "\n" + prompt) if missing else prompt


def _open_function(language: str, prefix: str) -> str:
    names = _defined_names(prefix + ("\n    pass\n" if language == "python" else "}"), language)
    return names[-1] if names else ""


def _entry_point(language: str, code: str, test: str) -> str:
    """The function the tests call: the last function defined by header + solution whose name occurs
    in the test (HumanEval-X has no entry_point field)."""
    if language == "python":
        calls = re.findall(r"^check\((\w+)\)", test, re.M)
        if calls:
            return calls[-1]
    for name in reversed(_defined_names(code, language)):
        if re.search(rf"\b{re.escape(name)}\b", test):
            return name
    return ""


def _signature(language: str, code: str, name: str) -> str:
    if not name:
        return ""
    masked = mask(code, language)
    m = _find_definition(masked, language, name)
    if m is None:
        return ""
    start = _line_start(code, m.start(1) if language == "python" else m.start())
    end = code.find("\n", m.end() - 1)
    line = code[start:end if end != -1 else len(code)].strip()
    return line.rstrip("{").rstrip(":").strip() if language != "python" else line.rstrip(":").strip()


def _docstring_of(language: str, prompt: str) -> str:
    """The last comment block (or Python docstring) of the prompt, as plain text."""
    if language == "python":
        blocks = re.findall(r'"""(.*?)"""|\'\'\'(.*?)\'\'\'', prompt, re.S)
        return (blocks[-1][0] or blocks[-1][1]) if blocks else ""
    found: list[tuple[int, str]] = []
    for m in re.finditer(r"/\*+(.*?)\*/", prompt, re.S):
        lines = [re.sub(r"^\s*\*?", "", ln) if ln.lstrip().startswith("*") else ln for ln in m.group(1).splitlines()]
        found.append((m.end(), "\n".join(lines)))
    for m in re.finditer(r"(?:^[ \t]*//.*\n?)+", prompt, re.M):
        found.append((m.end(), "\n".join(re.sub(r"^\s*//+ ?", "", ln) for ln in m.group(0).splitlines())))
    if not found:
        return ""
    return textwrap.dedent(max(found)[1]).strip("\n")


# --------------------------------------------------------------------------------------------------
# Program construction

_PY_HEADER = ("import math\nimport re\nimport sys\nimport copy\nimport heapq\nimport string\nimport itertools\n"
              "import functools\nimport collections\nimport hashlib\nfrom typing import *\n\n")
_JAVA_HEADER = "import java.util.*;\nimport java.util.stream.*;\nimport java.lang.*;\n"
# console.assert only logs; HumanEval-X's JavaScript tests rely on it, so make a false assertion fatal.
_JS_HEADER = ("console.assert = (cond, ...msg) => {\n"
              "  if (!cond) { const e = new Error(['Assertion failed', ...msg].join(' ')); e.name = 'AssertionError'; throw e; }\n"
              "};\n")
# Standard packages Go code may use without importing them (the test file adds imports it needs).
_GO_STD = ("fmt", "math", "strings", "strconv", "sort", "bytes", "regexp", "time", "unicode", "errors", "math/rand",
           "math/bits", "crypto/md5", "encoding/hex", "unicode/utf8", "reflect", "container/heap")


def build_program(problem: Problem, completion: str, *, example_tests: bool = False) -> str:
    """One source file: the problem's code with ``completion`` and its tests (``example_tests``: the
    docstring examples only, when the problem has them)."""
    lang = problem.language
    test = problem.example_test if example_tests and problem.example_test.strip() else problem.test
    code = completion.replace("\r\n", "\n")
    if _is_whole_code(problem, code):
        source = _full_source(problem, code)
    else:
        source = problem.prefix + _fix_body(code, lang)
    if lang != "python":
        source = source.rstrip("\n") + "\n" + "}\n" * max(0, _brace_deficit(source, lang))
    if lang == "python":
        # HumanEval's own format defines check(candidate) without calling it.
        needs_call = re.search(r"^def check\(", test, re.M) and not re.search(r"^check\(", test, re.M)
        call = f"\n\ncheck({problem.entry_point})\n" if needs_call else ""
        return _PY_HEADER + source.rstrip("\n") + "\n\n" + test + call
    if lang == "cpp":
        return CPP_PRELUDE + source + "\n" + test
    if lang == "java":
        return _JAVA_HEADER + _strip_packages(source, lang) + "\n" + test
    if lang == "javascript":
        return _JS_HEADER + source + "\n" + test
    if lang == "go":
        return _go_file(problem.test_setup + "\n" + source + "\n" + test)
    if lang == "rust":
        return source + "\n" + test
    raise ValueError(f"no program builder for language {lang!r}")


def _is_whole_code(problem: Problem, code: str) -> bool:
    """Whether ``code`` defines the function itself rather than continuing its header. A continuation
    may define later functions too (HumanEval-X Rust/10's solution finishes a helper, then defines the
    entry point), but it closes a block it did not open, or (Python) it is indented."""
    lang = problem.language
    masked = mask(code, lang)
    names = [n for n in (problem.open_name, problem.entry_point) if n]
    if lang == "python":
        return any(re.search(rf"^(?:async[ \t]+)?def[ \t]+{re.escape(n)}[ \t]*\(", masked, re.M) for n in names)
    if not any(_find_definition(masked, lang, n) for n in names):
        return False
    depth = 0
    for c in masked:
        depth += {"{": 1, "}": -1}.get(c, 0)
        if depth < 0:
            return False
    return True


def _fix_body(code: str, language: str) -> str:
    """A continuation of the header. For Python: indent a body written at column 0 and stop at the
    first top-level statement after it (tests or prints the model added)."""
    if language != "python":
        return code
    lines = code.split("\n")
    first = next((ln for ln in lines if ln.strip()), "")
    if first and not first[0].isspace():
        lines = [("    " + ln) if ln.strip() else ln for ln in lines]
    seen_body = False
    for i, ln in enumerate(lines):
        if ln.strip() and not ln[0].isspace():
            if seen_body:
                return "\n".join(lines[:i]) + "\n"
        elif ln.strip():
            seen_body = True
    return "\n".join(lines)


def _full_source(problem: Problem, code: str) -> str:
    """Whole code from the model: keep the problem's imports and helpers that the code does not
    define itself, drop what would clash with the test harness."""
    lang = problem.language
    masked_prefix = mask(problem.prefix, lang)
    m = _find_definition(masked_prefix + ("\n    pass\n" if lang == "python" else "}"), lang, problem.open_name)
    context = problem.prefix[:_line_start(problem.prefix, m.start(1) if lang == "python" else m.start())] \
        if m else problem.prefix
    masked_code = mask(code, lang)
    if lang == "java" and re.search(r"\bclass\s+Solution\b", masked_code):
        context = "\n".join(ln for ln in context.splitlines() if _HEADER_LINE["java"].match(ln)) + "\n"
        code = re.sub(r"\bpublic\s+(?=(?:final\s+)?class\s+Solution\b)", "", code)
    redefined = [n for n in dict.fromkeys(_defined_names(code, lang, masked_code))
                 if _find_definition(mask(context, lang), lang, n)]
    context = _remove_definitions(context, lang, redefined)
    if lang == "cpp":
        code = _remove_definitions(code, lang, ["main"])
    elif lang == "java" and re.search(r"\bclass\s+Main\b", masked_code):
        code = _remove_java_class(code, "Main")
    elif lang == "python":
        code = re.split(r"^if\s+__name__\s*==\s*['\"]__main__['\"]\s*:", code, maxsplit=1, flags=re.M)[0]
    elif lang == "rust":
        context = _rust_merge_uses(context, code)
    return context.rstrip("\n") + "\n" + code.strip("\n") + "\n"


def _remove_java_class(code: str, name: str) -> str:
    masked = mask(code, "java")
    m = re.search(rf"^[ \t]*(?:public\s+)?(?:final\s+)?class\s+{name}\b[^{{]*\{{", masked, re.M)
    if m is None:
        return code
    depth = 0
    for j in range(m.end() - 1, len(masked)):
        depth += {"{": 1, "}": -1}.get(masked[j], 0)
        if depth == 0:
            return code[:m.start()] + code[j + 1:]
    return code[:m.start()]


def _strip_packages(code: str, language: str) -> str:
    masked = mask(code, language)
    spans = [m.span() for m in re.finditer(r"^[ \t]*package[ \t]+[\w.]+[ \t]*;?[ \t]*$", masked, re.M)]
    for a, b in reversed(spans):
        code = code[:a] + code[b:]
    return code


# -- Go: one package clause, one import block with exactly the packages used ------------------------


def _go_imports(code: str) -> tuple[str, list[tuple[str, str]]]:
    """Remove package clauses and import declarations; return the rest and (alias, path) specs."""
    masked = mask(code, "go")
    specs: list[tuple[str, str]] = []
    spans: list[tuple[int, int]] = []
    for m in re.finditer(r"^[ \t]*import\b[ \t]*", masked, re.M):
        j = m.end()
        if masked.startswith("(", j):
            end = masked.find(")", j)
            end = len(code) if end < 0 else end + 1
        else:
            end = masked.find("\n", j)
            end = len(code) if end < 0 else end
        block = code[j:end]
        specs += [(a, p) for a, p in re.findall(r"(?:([A-Za-z_]\w*|\.)[ \t]+)?\"([^\"]+)\"", block)]
        spans.append((m.start(), end))
    for m in re.finditer(r"^[ \t]*package[ \t]+\w+[ \t]*;?", masked, re.M):
        spans.append(m.span())
    for a, b in sorted(spans, reverse=True):
        code = code[:a] + code[b:]
    return code, specs


def _go_file(code: str) -> str:
    body, specs = _go_imports(code)
    masked = mask(body, "go")
    used = set(re.findall(r"(?<![\w.])([A-Za-z_]\w*)[ \t]*\.[ \t]*[A-Za-z_]", masked))
    chosen: dict[str, tuple[str, str]] = {}  # bound name -> (alias, path)
    for alias, path in specs + [("", p) for p in _GO_STD]:
        name = alias or path.rsplit("/", 1)[-1]
        if alias in ("_", "."):
            chosen.setdefault(f"{alias}{path}", (alias, path))
        elif name in used and name not in chosen:
            chosen[name] = (alias, path)
    lines = "".join(f"\t{alias + ' ' if alias else ''}\"{path}\"\n" for alias, path in chosen.values())
    imports = f"import (\n{lines})\n" if lines else ""
    return f"package main\n\n{imports}\n{body.strip()}\n"


# -- Rust: use declarations, deduplicated against what the model's code imports or defines -----------


def _rust_use_leaves(tree: str) -> list[tuple[str, str]]:
    """Flatten a use tree (``std::{a, b::{c, self}, d as e}``) into (path, bound name) leaves."""
    tokens = re.findall(r"::|[{},*]|\w+", tree)
    pos = 0

    def parse(prefix: list[str]) -> list[tuple[str, str]]:
        nonlocal pos
        path = list(prefix)
        while pos < len(tokens):
            tok = tokens[pos]
            if tok == "{":
                pos += 1
                leaves = []
                while pos < len(tokens) and tokens[pos] != "}":
                    if tokens[pos] == ",":
                        pos += 1
                        continue
                    leaves += parse(path)
                pos += 1
                return leaves
            if tok == "*":
                pos += 1
                return [("::".join([*path, "*"]), "*")]
            if tok == "::":
                pos += 1
                continue
            if tok in (",", "}"):
                break
            pos += 1
            if tok == "as" and pos < len(tokens):
                alias = tokens[pos]
                pos += 1
                return [("::".join(path) + f" as {alias}", alias)]
            if tok == "self":
                return [("::".join(path), path[-1] if path else "self")]
            path.append(tok)
        return [("::".join(path), path[-1])] if len(path) > len(prefix) else []

    out = []
    while pos < len(tokens):
        before = pos
        out += parse([])
        if pos == before:
            pos += 1
    return out


_RUST_USE = re.compile(r"^[ \t]*(?:pub[ \t]+)?use[ \t]+([^;]*);[ \t]*\n?", re.M)


def _rust_merge_uses(context: str, code: str) -> str:
    masked_code = mask(code, "rust")
    taken = {name for m in _RUST_USE.finditer(masked_code) for _, name in _rust_use_leaves(code[m.start(1):m.end(1)])}
    taken |= set(re.findall(r"\b(?:fn|struct|enum|trait|type|const|static|mod)[ \t]+([A-Za-z_]\w*)", masked_code))
    taken.discard("*")
    masked = mask(context, "rust")
    for m in reversed(list(_RUST_USE.finditer(masked))):
        leaves = [(p, n) for p, n in _rust_use_leaves(context[m.start(1):m.end(1)]) if n not in taken]
        kept = "".join(f"use {p};\n" for p, _ in leaves)
        context = context[:m.start()] + kept + context[m.end():]
    return context


# --------------------------------------------------------------------------------------------------
# Code extraction from model answers


def extract_code(text: str, language: str) -> str | None:
    """The first fenced code block of ``language`` in a model answer (labelled by the project's fence
    parser). Failing that, the first untagged block or block of a language that falls back to
    ``language`` (```c for C++); answers without any fence are taken as code. None if the answer has
    fences but none of them fits."""
    from mole_lsp.lang.fence import NL, UNKNOWN, label_chars

    registry = _registry()
    labels = label_chars(text, registry)
    runs: list[tuple[str, int, int]] = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            if labels[start] != NL:
                runs.append((labels[start], start, i))
            start = i
    if not runs:
        return None if re.search(r"^[ \t]*(```|~~~)", text, re.M) else text

    def fits(label: str) -> bool:
        return label == UNKNOWN or (label in registry and language in registry.fallback_chain(label))

    chosen = next((r for r in runs if r[0] == language), None) or next((r for r in runs if fits(r[0])), None)
    if chosen is None:
        return None
    _, a, b = chosen
    body = text[a:b]
    if body.startswith("\n"):  # the opening fence line's newline already carries the language label
        body = body[1:]
    lines = body.split("\n")
    if lines and re.fullmatch(r"[ \t]*(`{1,}|~{1,})[ \t]*\r?", lines[-1]):
        lines = lines[:-1]  # the closing fence (or the start of one where generation stopped)
    return "\n".join(lines).rstrip() + "\n" if lines else ""


# --------------------------------------------------------------------------------------------------
# Task prompts


@dataclass(frozen=True)
class TaskPrompt:
    task: str  # "synthesis", "summarization", "summary_synthesis" or "translation"
    problem: Problem  # whose tests judge the result (the target for translation)
    instruction: str  # the user's turn
    response_prefix: str  # how the answer starts ("```rust\n" + function header for code answers)
    language: str | None  # language of the code to extract from the answer; None for prose answers
    stop: tuple[str, ...] = ()
    source: Problem | None = None  # translation: the problem whose solution is shown
    max_chars: int | None = None  # summarization: length budget of the description


def _fence(lang: str, code: str) -> str:
    return f"```{lang}\n{code.strip(chr(10))}\n```"


def synthesis_prompt(problem: Problem) -> TaskPrompt:
    """Instruction → code; the answer starts with the function header and its docstring."""
    return TaskPrompt("synthesis", problem, problem.instruction, f"```{problem.language}\n{problem.prefix}",
                      problem.language, ("```",))


def summarization_prompt(problem: Problem) -> TaskPrompt:
    """Code (without docstring) → a description no longer than the original docstring."""
    budget = max(1, len(problem.docstring))
    code = problem.declaration + problem.solution
    instruction = (f"{_fence(problem.language, code)}\n\nExplain what this {display_name(problem.language)} code "
                   f"does in plain language, in at most {budget} characters.")
    return TaskPrompt("summarization", problem, instruction, "", None, (), max_chars=budget)


def clean_summary(problem: Problem, text: str) -> str:
    """The description as the second step gets it: cut to the budget, with lines copied from the
    reference solution removed (so a summary cannot pass by quoting the code)."""
    long_lines = {ln.strip() for ln in problem.solution.splitlines() if len(ln.strip()) > 20}
    kept = [ln for ln in text.strip().splitlines() if ln.strip() not in long_lines]
    budget = max(1, len(problem.docstring))
    return "\n".join(kept)[:budget].strip()


def summary_synthesis_prompt(problem: Problem, summary: str) -> TaskPrompt:
    """Description → code; the answer starts with the function header (no docstring)."""
    instruction = f"{summary.strip()}\n\nWrite {display_name(problem.language)} code that does what is described above."
    return TaskPrompt("summary_synthesis", problem, instruction, f"```{problem.language}\n{problem.declaration}",
                      problem.language, ("```",))


def translation_prompt(source: Problem, target: Problem) -> TaskPrompt:
    """Reference solution in the source language → code in the target language."""
    if source.index != target.index:
        raise ValueError(f"{source.task_id} and {target.task_id} are different problems")
    instruction = (f"Translate this {display_name(source.language)} code to {display_name(target.language)}.\n\n"
                   f"{_fence(source.language, reference_code(source))}")
    return TaskPrompt("translation", target, instruction, f"```{target.language}\n{target.declaration}",
                      target.language, ("```",), source=source)


def program_from_response(prompt: TaskPrompt, response: str, *, example_tests: bool = False) -> str | None:
    """The test program for a generated answer (``response`` continues ``prompt.response_prefix``);
    None when the answer holds no code of the target language."""
    if prompt.language is None:
        raise ValueError(f"{prompt.task} answers are prose; use clean_summary and summary_synthesis_prompt")
    code = extract_code(prompt.response_prefix + response, prompt.language)
    if code is None:
        return None
    return build_program(prompt.problem, code, example_tests=example_tests)
