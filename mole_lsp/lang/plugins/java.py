"""Java: what the language needs beyond its registry entry (see :mod:`mole_lsp.lang.plugins`)."""

from __future__ import annotations

# ---- corpus mining (CORPUS, read by training/corpus) ----------------------------------------------
from mole_lsp.lang.plugins.mining import Corpus, Grammar, TreeSitterMiner, javadoc_block

CORPUS = Corpus(
    miner=TreeSitterMiner(
        grammar=Grammar("tree_sitter_java"),
        functions=frozenset({"method_declaration", "constructor_declaration"}),
        comments=frozenset({"block_comment", "line_comment"}),
        doc=javadoc_block,
    )
)

# ---- execution (TOOLCHAIN and PROGRAM, read by training/eval) ----------------------------------------

import re  # noqa: E402 - this section follows the corpus section's code

from mole_lsp.lang.plugins.execution import (  # noqa: E402
    Build,
    CodeOps,
    Lexicon,
    Program,
    Toolchain,
    Verdicts,
)


def _run(b: Build) -> list[str]:
    heap_mb = max(64, b.memory_mb // 2)  # the rest covers metaspace, code cache, thread stacks
    return [b.interpreter, "-ea", f"-Xmx{heap_mb}m", "-XX:+UseSerialGC", "-XX:-UsePerfData",
            "-XX:TieredStopAtLevel=1", "-XX:ErrorFile=/dev/null", "-XX:ActiveProcessorCount=1",
            "-Djava.io.tmpdir=.", "-cp", ".", "Main"]


TOOLCHAIN = Toolchain(
    source="Main.java", packages="default-jdk-headless", compile_tools=("javac",), run_tool="java",
    compile=lambda b: [b.compiler, "-encoding", "UTF-8", "-nowarn", "-J-Xmx1g", "-J-XX:+UseSerialGC",
                       "-J-XX:TieredStopAtLevel=1", "-d", ".", "Main.java"],
    run=_run, version=("javac", "-version"),
    verdicts=Verdicts(failure=("java.lang.AssertionError",),
                      memory=("java.lang.OutOfMemoryError", "Native memory allocation", "Cannot allocate memory"),
                      location=re.compile(r"Main\.java:(\d+)"),
                      error_line=re.compile(r"^Exception in thread .*$", re.M)),
)


# The imports the HumanEvalPack harness adds to every Java program.
_HEADER = "import java.util.*;\nimport java.util.stream.*;\nimport java.lang.*;\n"
_HEADER_LINE = re.compile(r"^\s*import\s+[\w.*]+\s*;\s*$")


def _strip_packages(code: str, ops: CodeOps) -> str:
    masked = ops.mask(code)
    spans = [m.span() for m in re.finditer(r"^[ \t]*package[ \t]+[\w.]+[ \t]*;?[ \t]*$", masked, re.M)]
    for a, b in reversed(spans):
        code = code[:a] + code[b:]
    return code


def _remove_class(code: str, name: str, ops: CodeOps) -> str:
    masked = ops.mask(code)
    m = re.search(rf"^[ \t]*(?:public\s+)?(?:final\s+)?class\s+{name}\b[^{{]*\{{", masked, re.M)
    if m is None:
        return code
    depth = 0
    for j in range(m.end() - 1, len(masked)):
        depth += {"{": 1, "}": -1}.get(masked[j], 0)
        if depth == 0:
            return code[:m.start()] + code[j + 1:]
    return code[:m.start()]


def _adopt(context: str, code: str, masked: str, ops: CodeOps) -> tuple[str, str]:
    """A whole class Solution replaces the problem's: keep only its imports, and make the class
    package-private (the file's public class is the tests' Main)."""
    if re.search(r"\bclass\s+Solution\b", masked):
        context = "\n".join(ln for ln in context.splitlines() if _HEADER_LINE.match(ln)) + "\n"
        code = re.sub(r"\bpublic\s+(?=(?:final\s+)?class\s+Solution\b)", "", code)
    return context, code


def _reconcile(context: str, code: str, masked: str, ops: CodeOps) -> tuple[str, str]:
    if re.search(r"\bclass\s+Main\b", masked):
        code = _remove_class(code, "Main", ops)  # the tests bring their own
    return context, code


# A type (or modifier) before the name, a parameter list, then the body's brace.
_PARAMS = r"\((?:[^;{}()]|\([^;{}()]*\))*\)"

PROGRAM = Program(
    lexicon=Lexicon(starts=re.compile(r"//|/\*|[\"']")),
    definition=lambda name: re.compile(rf"[\w>\]&*][ \t\n]+[&*]*({name})[ \t]*{_PARAMS}[^;{{}}()=]*\{{"),
    header_line=_HEADER_LINE,
    assemble=lambda a, ops: _HEADER + _strip_packages(a.source, ops) + "\n" + a.test,
    adopt=_adopt,
    reconcile=_reconcile,
)
