"""Go: what the language needs beyond its registry entry (see :mod:`mole_lsp.lang.plugins`)."""

from __future__ import annotations

# ---- corpus mining (CORPUS, read by training/corpus) ----------------------------------------------
import re

from mole_lsp.lang.plugins import doc_comments as docs
from mole_lsp.lang.plugins.mining import Corpus, Grammar, TreeSitterMiner, line_run

# Compiler and tool directives are not documentation.
_DIRECTIVE = re.compile(r"\s*//(?:go:|line |export |extern |lint:|nolint)")


def read_doc(comments: list[str]) -> tuple[str | None, str | None] | None:
    """Go doc comment: the run of ``//`` lines above a declaration, directives left out."""
    run = line_run(comments, "//")
    if not run:
        return None
    kept = [ln for ln in run if not _DIRECTIVE.match(ln)]
    # Doc links [pkg.Name] read fine as prose; keep them.
    doc = docs.finish(docs.strip_line_markers(kept, "//"))
    return (doc, doc) if doc else None


CORPUS = Corpus(
    miner=TreeSitterMiner(
        grammar=Grammar("tree_sitter_go"),
        functions=frozenset({"function_declaration", "method_declaration"}),
        comments=frozenset({"comment"}),
        doc=read_doc,
    )
)

# ---- execution (TOOLCHAIN and PROGRAM, read by training/eval) ----------------------------------------
import os  # noqa: E402 - this section follows the corpus section's code
import re  # noqa: E402

from mole_lsp.lang.plugins.execution import (  # noqa: E402
    Assembly,
    Build,
    CodeOps,
    Extra,
    Lexicon,
    Program,
    Toolchain,
    Verdicts,
)

# GOPATH with the libraries tests import (testify), for GO111MODULE=off builds: MOLE_GOPATH, then Debian's.
_GOPATH_CANDIDATES = ("/usr/share/gocode",)


def gopath() -> str | None:
    """The GOPATH compiles use, or None when there is none."""
    for p in [os.environ.get("MOLE_GOPATH", ""), *_GOPATH_CANDIDATES]:
        if p and os.path.isdir(p):
            return p
    return None


def _compile_env(b: Build) -> dict[str, str]:
    env = {"GO111MODULE": "off", "GOCACHE": str(b.cache_dir / "go-build"), "GOPROXY": "off",
           "GOFLAGS": "", "GOENV": "off", "CGO_ENABLED": "0", "GOTMPDIR": str(b.workdir),
           "GOTOOLCHAIN": "local"}
    path = gopath()
    if path:
        env["GOPATH"] = path
    return env


def _has_testify() -> bool:
    path = gopath()
    return path is not None and os.path.isdir(os.path.join(path, "src/github.com/stretchr/testify"))


TOOLCHAIN = Toolchain(
    source="prog_test.go", packages="golang-go", compile_tools=("go",),
    compile=lambda b: [b.compiler, "test", "-c", "-vet=off", "-o", "prog.test", "."],
    run=lambda b: ["./prog.test", "-test.v", f"-test.timeout={int(b.wall_s) + 5}s"],
    env={"GOMAXPROCS": "2"}, compile_env=_compile_env, version=("go", "version"),
    bin_dirs=("/usr/local/go/bin", "/usr/lib/go/bin"), cache_dirs=("go-build",),
    extras=(Extra("testify (apt: golang-github-stretchr-testify-dev)", _has_testify),),
    verdicts=Verdicts(failure=("--- FAIL",), memory=("runtime: out of memory", "cannot allocate memory"),
                      panic="panic:", location=re.compile(r"prog_test\.go:(\d+)"),
                      no_tests=lambda out: "no tests to run" in out,
                      error_line=re.compile(r"^(?:panic: |fatal error: |runtime: goroutine stack exceeds).*$", re.M)),
)


# Standard packages Go code may use without importing them (the test file adds imports it needs).
_STD = ("fmt", "math", "strings", "strconv", "sort", "bytes", "regexp", "time", "unicode", "errors", "math/rand",
        "math/bits", "crypto/md5", "encoding/hex", "unicode/utf8", "reflect", "container/heap")


def _imports(code: str, ops: CodeOps) -> tuple[str, list[tuple[str, str]]]:
    """Remove package clauses and import declarations; return the rest and (alias, path) specs."""
    masked = ops.mask(code)
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


def _assemble(a: Assembly, ops: CodeOps) -> str:
    """One package clause and one import block with exactly the packages the file uses."""
    body, specs = _imports(a.test_setup + "\n" + a.source + "\n" + a.test, ops)
    masked = ops.mask(body)
    used = set(re.findall(r"(?<![\w.])([A-Za-z_]\w*)[ \t]*\.[ \t]*[A-Za-z_]", masked))
    chosen: dict[str, tuple[str, str]] = {}  # bound name -> (alias, path)
    for alias, path in specs + [("", p) for p in _STD]:
        name = alias or path.rsplit("/", 1)[-1]
        if alias in ("_", "."):
            chosen.setdefault(f"{alias}{path}", (alias, path))
        elif name in used and name not in chosen:
            chosen[name] = (alias, path)
    lines = "".join(f"\t{alias + ' ' if alias else ''}\"{path}\"\n" for alias, path in chosen.values())
    imports = f"import (\n{lines})\n" if lines else ""
    return f"package main\n\n{imports}\n{body.strip()}\n"


PROGRAM = Program(
    lexicon=Lexicon(starts=re.compile(r"//|/\*|[\"'`]"), backtick="raw"),
    definition=lambda name: re.compile(rf"\bfunc[ \t]+(?:\([^)]*\)[ \t]*)?({name})[ \t]*[\[(]"),
    header_line=re.compile(r"^\s*import\s+\S.*$"),
    assemble=_assemble,
)
