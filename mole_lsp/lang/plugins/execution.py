"""The plugin API for execution: what a language plugin declares so evaluation can run its programs.

- ``TOOLCHAIN = Toolchain(...)``: how the sandbox finds the compiler or interpreter, compiles and runs
  one program file, which libraries some programs need, and how a run's output reads (failure and
  memory markers, where a failing test is) — used by :mod:`training.eval.executor`.
- ``PROGRAM = Program(...)``: how a HumanEval-X test program is assembled from a problem, a model's
  completion and the tests (lexical syntax for masking, function definitions, headers, whole-code
  answers) — used by :mod:`training.eval.programs`. Only benchmark languages declare it.

Functions given as fields receive plain values (:class:`Build`, :class:`CodeOps`, :class:`Assembly`),
never evaluation objects, so plugins import nothing from ``training``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CONTROL_KEYWORDS",
    "Assembly",
    "Build",
    "CargoCrates",
    "CodeOps",
    "Extra",
    "Lexicon",
    "LinkedCrates",
    "NpmPackages",
    "Prelude",
    "Program",
    "Toolchain",
    "Verdicts",
]


# --------------------------------------------------------------------------------------------------
# TOOLCHAIN: compiling and running


@dataclass(frozen=True)
class LinkedCrates:
    """Rust crates built once into the cache, as the compile step links them."""

    deps_dir: Path  # folder of the crates' rlibs and their dependencies (-L dependency=...)
    externs: Mapping[str, str]  # crate name -> rlib path (--extern name=path)


@dataclass(frozen=True)
class Build:
    """What a toolchain's command builders get for one sample."""

    workdir: Path  # the sample's private directory; the program file is written there
    cache_dir: Path  # the executor's cache directory (compiler caches live below it)
    program: str  # the program as given (before a precompiled prelude replaced its first lines)
    compiler: str = ""  # path of Toolchain.compile_tools[0] (resolved), "" for interpreted languages
    interpreter: str = ""  # path of Toolchain.run_tool usable by the sandbox uid, else its bare name
    wall_s: float = 0.0  # wall-clock limit of the run
    memory_mb: int = 0  # memory limit of the run (managed runtimes' heap caps derive from it)
    crates: LinkedCrates | None = None  # Toolchain.libraries (CargoCrates), when the program uses one
    pch_dir: Path | None = None  # folder of the precompiled Toolchain.prelude, when the program uses it


@dataclass(frozen=True)
class Extra:
    """An optional part of a toolchain: some benchmark programs need it, most do not."""

    what: str  # what is missing and where to get it, e.g. "boost headers (apt: libboost-dev)"
    present: Callable[[], bool]  # cheap check (no compilation)


@dataclass(frozen=True)
class CargoCrates:
    """Rust crates benchmark programs use, built once per compiler with cargo from a local
    registry of crate sources (a cargo directory source: fully offline) and linked with --extern."""

    crates: Mapping[str, str]  # crate name -> Debian package that ships its sources
    registries: tuple[str, ...] = ("/usr/share/cargo/registry",)  # where to look (after MOLE_CARGO_REGISTRY)


@dataclass(frozen=True)
class NpmPackages:
    """npm packages benchmark programs require, installed once from the npm registry into the cache
    and copied into the directory of each sample that requires one."""

    packages: Mapping[str, str]  # package name -> pinned version


@dataclass(frozen=True)
class Prelude:
    """Headers most test programs start with, precompiled once per compiler: a program that starts
    with exactly ``text`` compiles against the precompiled header instead (GCC ignores a stale or
    mismatched .gch and parses the header itself, so this is only ever faster, never different)."""

    text: str  # the program's first lines that the header replaces
    flags: tuple[str, ...]  # the compile step's language flags (GCC uses a .gch built with the same)
    header: str = "mole_prelude.h"  # file name of the header in the cache
    header_language: str = "c++-header"  # what GCC compiles the header as (-x)


@dataclass(frozen=True)
class Verdicts:
    """How a run's output reads: which failed runs are failed tests, memory exhaustion or crashes."""

    failure: tuple[str, ...] = ()  # output text that means a test assertion failed
    memory: tuple[str, ...] = ()  # output text that means the memory limit was hit
    panic: str = ""  # output text of an uncaught panic: a runtime error, not a failed test ...
    assertions_panic: bool = False  # ... unless failed assertions panic too and a failure marker shows
    assertions_log: bool = False  # failed assertions only log: a failure marker fails even an exit status 0
    location: re.Pattern[str] | None = None  # where a failing assertion is; group 1: line number in the source
    innermost_last: bool = False  # the runtime lists the innermost frame last (quote the last location)
    no_tests: Callable[[str], bool] | None = None  # whether the run's output says that no test ran
    # The line that says why a failed run failed, where the output's last line does not (first match wins).
    error_line: re.Pattern[str] | None = None
    noise: re.Pattern[str] | None = None  # lines that never say why (a runtime's banner), skipped otherwise


@dataclass(frozen=True)
class Toolchain:
    """How the sandbox compiles and runs one program file of a language (see training.eval.executor)."""

    source: str  # file name of the program in the sample's directory
    packages: str  # where to get the toolchain (Debian packages), for "missing" messages
    run: Callable[[Build], list[str]]  # argv of the test run (runs as the sandbox uid)
    compile: Callable[[Build], list[str]] | None = None  # argv of the compile step (as the caller); None: interpreted
    compile_tools: tuple[str, ...] = ()  # executables the compile step needs; the first is Build.compiler
    run_tool: str | None = None  # interpreter the sample runs under (must be reachable by the sandbox uid)
    version: tuple[str, ...] = ()  # command whose first output line is the toolchain's version
    env: Mapping[str, str] = field(default_factory=dict)  # run environment, on top of the sandbox's own
    compile_env: Callable[[Build], dict[str, str]] | None = None  # compile environment, on top of the sandbox's
    bin_dirs: tuple[str, ...] = ()  # where else to look for compile tools (installs outside PATH)
    resolve_compiler: Callable[[str], str] | None = None  # the binary to run for the compile tool found
    compiler_dir_on_path: bool = False  # compile with the compiler's folder first on PATH
    cache_dirs: tuple[str, ...] = ()  # folders below Build.cache_dir the compile step writes (created first)
    extras: tuple[Extra, ...] = ()  # optional parts some programs need
    libraries: CargoCrates | NpmPackages | None = None  # libraries built or installed once, on demand
    prelude: Prelude | None = None  # common headers to precompile
    verdicts: Verdicts = Verdicts()  # how the output reads


# --------------------------------------------------------------------------------------------------
# PROGRAM: assembling HumanEval-X test programs

# Words a C-family definition pattern could take for a function name (``if (x) {``, ``catch (e) {``).
CONTROL_KEYWORDS = frozenset({"if", "for", "while", "switch", "catch", "return", "else", "new", "sizeof", "do",
                              "case", "throw", "delete", "synchronized", "try"})


@dataclass(frozen=True)
class Lexicon:
    """Where comments and string/char literals are, so masking can blank them (training.eval.lexer).
    The defaults describe C: // and /* */ comments, "strings" and 'c'haracter literals."""

    starts: re.Pattern[str] = re.compile(r"//|/\*|[\"']")  # where a comment or literal may start
    line_comment: str = "//"  # starts a comment that ends at the end of the line
    block_comments: bool = True  # /* ... */
    nested_comments: bool = False  # block comments nest
    triple_quotes: bool = False  # \"\"\"...\"\"\" and '''...''' strings, which may span lines
    multiline_strings: bool = False  # "..." may span lines
    char_literals: bool = True  # '...' is a character literal (if it is not one: a lifetime); False: a string
    backtick: str = ""  # "raw": `...` is a raw string; "template": a template literal with escapes
    regex_literals: bool = False  # /.../ after an operator or at a line start is a regular expression
    # A raw string starting at position i of the text: (content start, content end, where scanning goes on).
    raw_string: Callable[[str, int], tuple[int, int, int] | None] | None = None


@dataclass(frozen=True)
class CodeOps:
    """Lexical helpers evaluation lends a plugin's assembly functions, bound to the language."""

    mask: Callable[[str], str]  # comments and literals blanked (length and newlines kept)
    remove_definitions: Callable[[str, Iterable[str]], str]  # the code without these functions' definitions


@dataclass(frozen=True)
class Assembly:
    """The parts of one test program."""

    source: str  # the problem's code with the completion (balanced)
    test: str  # the tests to run
    entry_point: str  # the function the tests call
    test_setup: str = ""  # package clause and imports of the test file, where the dataset gives them


@dataclass(frozen=True)
class Program:
    """How a HumanEval-X test program of a language is assembled (see training.eval.programs)."""

    lexicon: Lexicon  # comments and literals, for masking
    definition: Callable[[str], re.Pattern[str]]  # a function definition named by a regex, on masked text
    header_line: re.Pattern[str]  # an include/import line that a prefix must keep
    assemble: Callable[[Assembly, CodeOps], str]  # source + tests -> the whole file (common imports etc.)
    keywords: frozenset[str] = CONTROL_KEYWORDS  # names that are never functions
    indented: bool = False  # blocks are indented, not braced (definition ends, balancing, signatures)
    close_header: str = "}"  # completes an open function header into a definition
    trailing_semicolon: bool = False  # a definition may end with ";" after its body (const f = () => {...};)
    entry_call: re.Pattern[str] | None = None  # the tests' call naming the entry point (group 1)
    docstring: Callable[[str], str] | None = None  # a prompt's docstring, if it is not its last comment block
    fix_body: Callable[[str], str] | None = None  # normalise a completion that continues the header
    # Whole code from the model, as (context, code, masked code) -> (context, code): ``adopt`` runs
    # before the problem's helpers that the code redefines are dropped, ``reconcile`` after.
    adopt: Callable[[str, str, str, CodeOps], tuple[str, str]] | None = None
    reconcile: Callable[[str, str, str, CodeOps], tuple[str, str]] | None = None
    humanevalpack_config: str = ""  # the HumanEvalPack dataset config, where it differs from the id
