"""HumanEval-X / HumanEvalPack problems: reading the records, normalising both formats, downloading.

Both formats are JSON records per problem and language (``task_id`` like ``"Rust/12"``, ``prompt``,
``declaration``, ``canonical_solution``, ``test``, ``example_test``; HumanEvalPack adds ``entry_point``,
``import``, ``test_setup``, ``docstring``, ``instruction``, ``buggy_solution``...; HumanEval-X has some of
those for some languages only). :func:`load_problems` reads a local directory or file in either format
(jsonl, jsonl.gz, json, parquet) or downloads HumanEvalPack from the Hub, and returns :class:`Problem`
objects normalised across formats, with registry language ids. A language's problems need its
plugin's PROGRAM (records of other languages are not problems here).

Other benchmarks load as they are: a problem's language is the one given (``language=``, the CLI's
``--language``), else its record's ``language`` field (MBXP, MultiPL-E), else its task-id prefix
(HumanEval-X); MultiPL-E's ``name`` and ``tests`` stand for ``task_id`` and ``test``.
"""

from __future__ import annotations

import gzip
import json
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mole_lsp.lang.plugins import feature, languages_with
from training.eval.definitions import (
    docstring_of,
    entry_point_of,
    open_function,
    prefix_of,
    program_spec,
    signature_of,
)

__all__ = [
    "BENCHMARK_LANGUAGES",
    "HUMANEVALPACK_REPO",
    "Problem",
    "display_name",
    "download_humanevalpack",
    "language_id",
    "load_file",
    "load_problems",
    "problem_from_record",
    "read_records",
    "record_language",
    "reference_code",
]

# The benchmark's languages: those whose plugin assembles HumanEval-X programs, in registry order
# (HumanEval-X and HumanEvalPack cover exactly these).
BENCHMARK_LANGUAGES: tuple[str, ...] = languages_with("PROGRAM")
HUMANEVALPACK_REPO = "bigcode/humanevalpack"


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


def record_language(rec: Mapping[str, Any]) -> str:
    """The language of a record: its ``language`` field (MultiPL-E writes e.g. "py", "go_test.go"), else
    its task-id prefix."""
    value = rec.get("language")
    if isinstance(value, str) and value.strip():
        try:
            return language_id(value)
        except ValueError:
            return language_id(re.split(r"[_.]", value.strip(), maxsplit=1)[0])
    return language_id(str(_field(rec, "task_id", "name")).rpartition("/")[0])


def _field(rec: Mapping[str, Any], *keys: str) -> Any:
    return next((rec[k] for k in keys if k in rec), None)


def problem_from_record(rec: Mapping[str, Any], language: str | None = None) -> Problem:
    """Normalise one record (HumanEval-X, HumanEvalPack, MBXP, MultiPL-E); ``language`` overrides the
    record's own."""
    task_id = str(_field(rec, "task_id", "name"))
    number = task_id.rpartition("/")[2]
    lang = language_id(language) if language else record_language(rec)
    index = int(number) if number.isdigit() else -1
    fmt = "humanevalpack" if "entry_point" in rec and "instruction" in rec else "humaneval-x"
    prompt, declaration = _text(rec, "prompt"), _text(rec, "declaration")
    solution, test = _text(rec, "canonical_solution"), _text(rec, "test") or _text(rec, "tests")
    prefix = prefix_of(lang, prompt, declaration)
    open_name = open_function(lang, prefix)
    entry = _text(rec, "entry_point") or entry_point_of(lang, prefix + solution, test) or open_name
    docstring = _text(rec, "docstring") or _text(rec, "text")
    comment_docs = program_spec(lang).docstring is None
    if not docstring or (comment_docs and re.match(r"\s*(//|/\*)", docstring)):
        docstring = docstring_of(lang, docstring or prompt)  # HumanEval-X Go gives it as // comments
    docstring = textwrap.dedent(docstring).strip("\n")
    signature = signature_of(lang, prefix + solution, entry) or signature_of(lang, prefix, open_name)
    instruction = _text(rec, "instruction") or (
        f"Implement the {display_name(lang)} function `{signature}` described below.\n\n{docstring.strip()}")
    known = {"task_id", "name", "language", "prompt", "declaration", "canonical_solution", "test", "tests",
             "example_test", "entry_point", "docstring", "text", "instruction", "import", "test_setup",
             "buggy_solution"}
    return Problem(task_id=task_id, language=lang, index=index, prompt=prompt, declaration=declaration,
                   solution=solution, test=test, example_test=_text(rec, "example_test"), entry_point=entry,
                   docstring=docstring, instruction=instruction, imports=_text(rec, "import"),
                   test_setup=_text(rec, "test_setup"), buggy_solution=_text(rec, "buggy_solution"),
                   source_format=fmt, prefix=prefix, open_name=open_name, signature=signature,
                   extra={k: v for k, v in rec.items() if k not in known})


def load_file(path: str | Path, language: str | None = None) -> list[Problem]:
    """Problems of one file (language from each record unless given)."""
    return [problem_from_record(r, language) for r in read_records(path)
            if _field(r, "task_id", "name") is not None and _field(r, "test", "tests") is not None]


_DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")


def load_problems(source: str | Path | None = None, languages: Iterable[str] | None = None, *,
                  revision: str | None = None, cache_dir: str | Path | None = None,
                  language: str | None = None) -> dict[str, list[Problem]]:
    """Problems per language id, sorted by problem number.

    ``source``: a local file or directory in either format (any layout: files are recognised by
    their records), or None / ``"bigcode/humanevalpack"`` to fetch HumanEvalPack from the Hub
    (``revision`` pins a commit). ``language``: the language of every problem of a local source
    (default: each record's own, see :func:`record_language`)."""
    wanted = None if languages is None else {language_id(x) for x in languages}
    if source is None or str(source) == HUMANEVALPACK_REPO:
        files = download_humanevalpack(sorted(wanted or BENCHMARK_LANGUAGES), revision=revision,
                                       cache_dir=cache_dir)
        paths = [(p, lang) for lang, ps in files.items() for p in ps]
    else:
        root = Path(source)
        forced = language_id(language) if language else None
        if root.is_file():
            paths = [(root, forced)]
        elif root.is_dir():
            paths = [(p, forced) for p in sorted(root.rglob("*"))
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
        raise ValueError(f"no HumanEval-X/HumanEvalPack problems found in {source}"
                         + ("" if language else " (--language names the language of records that do not)"))
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
        program = feature(lang, "PROGRAM")
        config = (program.humanevalpack_config if program is not None else "") or lang
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
