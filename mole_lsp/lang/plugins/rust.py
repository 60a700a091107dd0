"""Rust: what the language needs beyond its registry entry (see :mod:`mole_lsp.lang.plugins`)."""

from __future__ import annotations

# ---- corpus mining (CORPUS, read by training/corpus) ----------------------------------------------
import re

from mole_lsp.lang.plugins import doc_comments as docs
from mole_lsp.lang.plugins.mining import Corpus, Grammar, TreeSitterMiner, line_run

_HEADING = re.compile(r"#{1,3} ")
_HIDDEN_DOCTEST_LINE = re.compile(r"#(?: |$)")


def clean_markdown(lines: list[str]) -> str | None:
    """Rust ``///`` markdown: drop the Examples section, tag untagged fences as rust."""
    text = docs.strip_line_markers(lines, "///")
    out: list[str] = []
    skipping = False
    in_fence = False
    for line in text.splitlines():
        stripped = line.strip()
        if not in_fence and _HEADING.match(stripped):
            skipping = stripped.lstrip("# ").lower().startswith("example")
        if stripped.startswith("```"):
            if not in_fence:
                in_fence = True
                if stripped == "```" and not skipping:
                    line = line.replace("```", "```rust", 1)
            else:
                in_fence = False
        elif in_fence and _HIDDEN_DOCTEST_LINE.match(stripped):
            continue  # hidden doctest lines
        if not skipping:
            out.append(line)
    return docs.finish("\n".join(out))


def read_doc(comments: list[str]) -> tuple[str | None, str | None] | None:
    """``///`` lines (not ``////``) or a ``/** */`` block; the summary stops at the first heading."""
    run = line_run(comments, "///", exclude=("////",))
    if run:
        doc = clean_markdown(run)
    else:
        raw = comments[-1]
        doc = clean_markdown(docs.strip_block_markers(raw).splitlines()) if raw.startswith("/**") else None
    if not doc:
        return None
    summary = doc.split("\n# ", 1)[0].strip()
    return doc, summary


CORPUS = Corpus(
    miner=TreeSitterMiner(
        grammar=Grammar("tree_sitter_rust"),
        functions=frozenset({"function_item"}),
        comments=frozenset({"line_comment", "block_comment"}),
        doc=read_doc,
        skip_before=frozenset({"attribute_item"}),
    )
)

# ---- execution (TOOLCHAIN and PROGRAM, read by training/eval) ----------------------------------------

import contextlib  # noqa: E402 - this section follows the corpus section's code
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402

from mole_lsp.lang.plugins.execution import (  # noqa: E402
    Build,
    CargoCrates,
    CodeOps,
    Lexicon,
    Program,
    Toolchain,
    Verdicts,
)


def _real_rustc(proxy: str) -> str:
    """The real compiler binary: rustup's proxy needs the caller's HOME/RUSTUP_HOME, which the compile
    environment does not carry."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        sysroot = subprocess.run([proxy, "--print", "sysroot"], capture_output=True, text=True,
                                 timeout=60).stdout.strip()
        real = os.path.join(sysroot, "bin", "rustc")
        if sysroot and os.access(real, os.X_OK):
            return real
    return proxy


def _compile(b: Build) -> list[str]:
    cmd = [b.compiler, "--edition", "2021", "--test", "--cap-lints", "allow", "-C", "debuginfo=0",
           "-o", "prog", "prog.rs"]
    if b.crates is not None:
        cmd += ["-L", f"dependency={b.crates.deps_dir}"]
        for name, path in sorted(b.crates.externs.items()):
            cmd += ["--extern", f"{name}={path}"]
    return cmd


def _no_tests(output: str) -> bool:
    counts = [int(n) for n in re.findall(r"running (\d+) tests?", output)]
    return bool(counts) and sum(counts) == 0


TOOLCHAIN = Toolchain(
    source="prog.rs", packages="rustc (rustup or Debian)", compile_tools=("rustc",), compile=_compile,
    run=lambda b: ["./prog", "--test-threads=1"], env={"RUST_BACKTRACE": "0"}, version=("rustc", "--version"),
    resolve_compiler=_real_rustc,
    compiler_dir_on_path=True,  # rustc runs the system linker (cc) found on PATH
    # Crates HumanEval-X Rust declarations use.
    libraries=CargoCrates({"rand": "librust-rand-dev", "regex": "librust-regex-dev", "md5": "librust-md5-dev"}),
    verdicts=Verdicts(failure=("assertion failed", "assertion `left", "assertion left"),
                      memory=("memory allocation of",), panic="panicked at", assertions_panic=True,
                      location=re.compile(r"prog\.rs:(\d+):\d+"), no_tests=_no_tests),
)


_RAW_STRING = re.compile(r"b?r(#*)\"")


def _raw_string(text: str, i: int) -> tuple[int, int, int] | None:
    """A raw (byte) string literal r#"..."# at ``i``."""
    if text[i] not in "rb" or (i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")):
        return None
    m = _RAW_STRING.match(text, i)
    if m is None:
        return None
    hashes = m.group(1)
    end = text.find('"' + hashes, m.end())
    end = len(text) if end < 0 else end
    return m.end(), end, end + 1 + len(hashes)


def _use_leaves(tree: str) -> list[tuple[str, str]]:
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


_USE = re.compile(r"^[ \t]*(?:pub[ \t]+)?use[ \t]+([^;]*);[ \t]*\n?", re.M)


def _merge_uses(context: str, code: str, masked_code: str, ops: CodeOps) -> tuple[str, str]:
    """Keep the problem's use declarations only for names the model's code does not import or define."""
    taken = {name for m in _USE.finditer(masked_code) for _, name in _use_leaves(code[m.start(1):m.end(1)])}
    taken |= set(re.findall(r"\b(?:fn|struct|enum|trait|type|const|static|mod)[ \t]+([A-Za-z_]\w*)", masked_code))
    taken.discard("*")
    masked = ops.mask(context)
    for m in reversed(list(_USE.finditer(masked))):
        leaves = [(p, n) for p, n in _use_leaves(context[m.start(1):m.end(1)]) if n not in taken]
        kept = "".join(f"use {p};\n" for p, _ in leaves)
        context = context[:m.start()] + kept + context[m.end():]
    return context, code


PROGRAM = Program(
    lexicon=Lexicon(starts=re.compile(r"//|/\*|[\"']|(?<![\w])b?r#*\""), nested_comments=True,
                    multiline_strings=True, raw_string=_raw_string),
    definition=lambda name: re.compile(rf"\bfn[ \t]+({name})[ \t]*[<(]"),
    header_line=re.compile(r"^\s*(pub\s+)?(use|extern\s+crate)\s+[^;]*;\s*$"),
    assemble=lambda a, ops: a.source + "\n" + a.test,
    reconcile=_merge_uses,
)
