"""C++: what the language needs beyond its registry entry (see :mod:`mole_lsp.lang.plugins`)."""

from __future__ import annotations

# ---- corpus mining (CORPUS, read by training/corpus) ----------------------------------------------
import re
from pathlib import PurePosixPath

from mole_lsp.lang.plugins import doc_comments as docs
from mole_lsp.lang.plugins.mining import (
    JAVADOC_SNIPPET_TAG,
    Corpus,
    DocReader,
    Grammar,
    TreeSitterMiner,
    javadoc_block,
    line_run,
)

# libstdc++ ships template bodies in .tcc files and most headers without any suffix; the registry
# maps .h to C. When mining C++ these are read with the C++ grammar anyway.
_EXTRA_SUFFIXES = (".h", ".tcc")
MODE_LINE = re.compile(r"-\*-\s*(?:mode:\s*)?c\+\+\s*-\*-", re.IGNORECASE)


def has_mode_line(text: str) -> bool:
    """An Emacs ``-*- C++ -*-`` mode line in the first two lines marks a C++ file whatever its name."""
    return any(MODE_LINE.search(ln) for ln in text.split("\n", 2)[:2])


def _claims(path: str, owner: str | None) -> bool:
    """.h and .tcc files, and extensionless files the registry does not know (confirmed by ``_accepts``)."""
    name = PurePosixPath(path).name
    return path.lower().endswith(_EXTRA_SUFFIXES) or ("." not in name and owner is None)


def _accepts(path: str, text: str) -> bool:
    return "." in PurePosixPath(path).name or has_mode_line(text)


def doc_reader(plain_ok: bool) -> DocReader:
    """C-family docs: a ``/** */`` block (any ``/* */`` when ``plain_ok``) or a ``//`` / ``///`` run."""

    def read(comments: list[str]) -> tuple[str | None, str | None] | None:
        if comments[-1].startswith("/*"):
            return javadoc_block(comments, plain_ok=plain_ok)
        run = line_run(comments, "//", exclude=("//!",))
        if not run:
            return None
        # Doxygen tags inside the run are handled like a block's.
        marker = "///" if all(ln.strip().startswith("///") for ln in run) else "//"
        text = docs.strip_line_markers(run, marker)
        cleaned = docs.clean_tagged_block("/**\n" + text + "\n*/", snippet_tag=JAVADOC_SNIPPET_TAG)
        return (cleaned, docs.block_description(cleaned)) if cleaned else None

    return read


CORPUS = Corpus(
    miner=TreeSitterMiner(
        grammar=Grammar("tree_sitter_cpp"),
        functions=frozenset({"function_definition"}),
        comments=frozenset({"comment"}),
        doc=doc_reader(plain_ok=False),
        wrappers=frozenset({"template_declaration"}),
    ),
    claims=_claims,
    accepts=_accepts,
)

# ---- execution (TOOLCHAIN and PROGRAM, read by training/eval) ----------------------------------------
import os  # noqa: E402 - this section follows the corpus section's code
import re  # noqa: E402

from mole_lsp.lang.plugins.execution import (  # noqa: E402
    Build,
    CodeOps,
    Extra,
    Lexicon,
    Prelude,
    Program,
    Toolchain,
    Verdicts,
)

# Standard headers most C++ test programs start with (HumanEval-X programs always do): precompiled once.
PRELUDE = "".join(f"#include <{h}>\n" for h in (
    "algorithm", "cassert", "climits", "cmath", "cstdio", "cstdlib", "cstring", "deque", "functional",
    "iostream", "list", "map", "numeric", "queue", "set", "sstream", "stack", "string", "unordered_map",
    "unordered_set", "utility", "vector")) + "using namespace std;\n"
# As the benchmarks' harnesses compile (plain g++ -std=c++11/17): no -w, which would also silence
# diagnostics GCC reports as errors (a narrowing constant in braces).
_FLAGS = ("-std=c++17", "-O0", "-fno-diagnostics-color")


def _compile(b: Build) -> list[str]:
    cmd = [b.compiler, *_FLAGS, "-o", "prog", "prog.cpp", "-lm"]
    if b.pch_dir is not None:
        cmd[1:1] = ["-I", str(b.pch_dir)]
    if re.search(r"#\s*include\s*[<\"]openssl/", b.program):
        cmd.append("-lcrypto")
    return cmd


TOOLCHAIN = Toolchain(
    source="prog.cpp", packages="g++", compile=_compile, run=lambda b: ["./prog"], compile_tools=("g++",),
    version=("g++", "-dumpfullversion"),
    extras=(Extra("boost headers (apt: libboost-dev)", lambda: os.path.exists("/usr/include/boost/any.hpp")),
            Extra("OpenSSL headers (apt: libssl-dev)", lambda: os.path.exists("/usr/include/openssl/md5.h"))),
    prelude=Prelude(PRELUDE, _FLAGS),
    verdicts=Verdicts(failure=("Assertion `",), memory=("std::bad_alloc",), location=re.compile(r"prog\.cpp:(\d+):")),
)


def _raw_string(text: str, i: int) -> tuple[int, int, int] | None:
    """A raw string literal R"delim(...)delim" at ``i``."""
    if text[i] != "R" or not text.startswith('R"', i) or (i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")):
        return None
    m = re.match(r'R"([^()\\\s]{0,16})\(', text[i:])
    if m is None:
        return None
    end = text.find(")" + m.group(1) + '"', i + m.end())
    end = len(text) if end < 0 else end
    return i + m.end(), end, end + len(m.group(1)) + 2


# A type (or modifier) before the name, a parameter list, then the body's brace.
_PARAMS = r"\((?:[^;{}()]|\([^;{}()]*\))*\)"


def _reconcile(context: str, code: str, masked: str, ops: CodeOps) -> tuple[str, str]:
    return context, ops.remove_definitions(code, ["main"])  # the tests bring their own main


PROGRAM = Program(
    lexicon=Lexicon(starts=re.compile(r"//|/\*|[\"']|(?<![\w])R\""), raw_string=_raw_string),
    definition=lambda name: re.compile(rf"[\w>\]&*][ \t\n]+[&*]*({name})[ \t]*{_PARAMS}[^;{{}}()=]*\{{"),
    header_line=re.compile(r"^\s*(#\s*include\b.*|using\s+namespace\s+\w+\s*;)\s*$"),
    assemble=lambda a, ops: PRELUDE + a.source + "\n" + a.test,
    reconcile=_reconcile,
)
