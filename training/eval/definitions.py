"""Function definitions in code, found on masked text with the plugins' patterns, and what HumanEval-X
leaves implicit that they let us derive (the prefix a solution continues, the entry point, the
signature, the docstring)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable
from functools import lru_cache

from mole_lsp.lang.plugins import feature
from mole_lsp.lang.plugins.execution import CodeOps, Program
from training.eval.lexer import mask

__all__ = [
    "brace_deficit",
    "code_ops",
    "def_pattern",
    "defined_names",
    "definition_span",
    "docstring_of",
    "entry_point_of",
    "find_definition",
    "line_start",
    "open_function",
    "prefix_of",
    "program_spec",
    "remove_definitions",
    "signature_of",
]


def program_spec(language: str) -> Program:
    """The PROGRAM of ``language``'s plugin; ValueError when it has none."""
    spec = feature(language, "PROGRAM")
    if spec is None:
        raise ValueError(f"no program builder for language {language!r}")
    return spec


def code_ops(language: str) -> CodeOps:
    """The lexical helpers lent to ``language``'s assembly functions."""
    return CodeOps(mask=lambda text: mask(text, language),
                   remove_definitions=lambda code, names: remove_definitions(code, language, names))


@lru_cache(maxsize=4096)
def def_pattern(language: str, name: str = r"[A-Za-z_]\w*") -> re.Pattern[str]:
    """Where a function called ``name`` (a regex) is defined, on masked text; the first non-empty group
    is the name."""
    return program_spec(language).definition(name)


def _name(m: re.Match[str]) -> str:
    return next(g for g in m.groups() if g)


def defined_names(code: str, language: str, masked: str | None = None) -> list[str]:
    """Names of the functions ``code`` defines, in order."""
    masked = mask(code, language) if masked is None else masked
    keywords = program_spec(language).keywords
    return [name for name in map(_name, def_pattern(language).finditer(masked)) if name not in keywords]


def find_definition(masked: str, language: str, name: str) -> re.Match[str] | None:
    """The last definition of ``name`` (helpers come before the function that uses them)."""
    found = None
    for m in def_pattern(language, re.escape(name)).finditer(masked):
        found = m
    return found


def line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def definition_span(masked: str, language: str, m: re.Match[str]) -> tuple[int, int]:
    """Character span of the whole definition found by ``m`` (from the start of its line)."""
    spec = program_spec(language)
    start = line_start(masked, m.start())
    if spec.indented:
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
    while j < len(masked):  # find the body's opening brace (or the end of an expression)
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
                if spec.trailing_semicolon and masked[end:end + 1] == ";":
                    end += 1
                return start, end
        j += 1
    return start, len(masked)


def remove_definitions(code: str, language: str, names: Iterable[str]) -> str:
    """``code`` without the definitions of ``names`` (the last one of each)."""
    for name in names:
        masked = mask(code, language)
        m = find_definition(masked, language, name)
        if m is not None:
            a, b = definition_span(masked, language, m)
            code = code[:a] + code[b:]
    return code


def brace_deficit(code: str, language: str) -> int:
    """How many more ``{`` than ``}`` the code has outside comments and literals."""
    masked = mask(code, language)
    return masked.count("{") - masked.count("}")


# --------------------------------------------------------------------------------------------------
# Deriving what HumanEval-X leaves implicit


def _last_code_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _header_line(language: str, declaration: str) -> str:
    """The line of the last function header in the declaration (not simply its last line: HumanEval-X
    Python/142's declaration ends with a stray quote)."""
    spec = program_spec(language)
    masked = mask(declaration + spec.close_header, language)
    matches = [m for m in def_pattern(language).finditer(masked) if _name(m) not in spec.keywords]
    if not matches:
        return _last_code_line(declaration)
    m = matches[-1]
    start = line_start(declaration, m.start())
    end = declaration.find("\n", m.start(1))
    return declaration[start:end if end != -1 else len(declaration)].strip()


def prefix_of(language: str, prompt: str, declaration: str) -> str:
    """The text a reference solution continues. The prompt (it has the docstring) when it contains
    the declaration's header line, completed with header lines (includes, imports) that only the
    declaration has; otherwise the declaration (HumanEval-X Rust prompts are only a comment)."""
    header_line = _header_line(language, declaration)
    if not prompt.strip() or (header_line and header_line not in {ln.strip() for ln in prompt.splitlines()}):
        return declaration or prompt
    pattern = program_spec(language).header_line
    prompt_lines = {ln.strip() for ln in prompt.splitlines()}
    missing = [ln for ln in declaration.splitlines() if pattern.match(ln) and ln.strip() not in prompt_lines]
    return ("\n".join(missing) + "\n" + prompt) if missing else prompt


def open_function(language: str, prefix: str) -> str:
    """The function whose header ends ``prefix``."""
    names = defined_names(prefix + program_spec(language).close_header, language)
    return names[-1] if names else ""


def entry_point_of(language: str, code: str, test: str) -> str:
    """The function the tests call: the last function defined by header + solution whose name occurs
    in the test (HumanEval-X has no entry_point field)."""
    call = program_spec(language).entry_call
    if call is not None:
        calls = call.findall(test)
        if calls:
            return calls[-1]
    for name in reversed(defined_names(code, language)):
        if re.search(rf"\b{re.escape(name)}\b", test):
            return name
    return ""


def signature_of(language: str, code: str, name: str) -> str:
    """The header line of function ``name`` in ``code``, without the opening of its body."""
    if not name:
        return ""
    masked = mask(code, language)
    m = find_definition(masked, language, name)
    if m is None:
        return ""
    start = line_start(code, m.start())
    end = code.find("\n", m.end() - 1)
    line = code[start:end if end != -1 else len(code)].strip()
    return (line if program_spec(language).indented else line.rstrip("{")).rstrip(":").strip()


def docstring_of(language: str, prompt: str) -> str:
    """The prompt's docstring as plain text: what the plugin says, else its last comment block."""
    own = program_spec(language).docstring
    if own is not None:
        return own(prompt)
    found: list[tuple[int, str]] = []
    for m in re.finditer(r"/\*+(.*?)\*/", prompt, re.S):
        lines = [re.sub(r"^\s*\*?", "", ln) if ln.lstrip().startswith("*") else ln for ln in m.group(1).splitlines()]
        found.append((m.end(), "\n".join(lines)))
    for m in re.finditer(r"(?:^[ \t]*//.*\n?)+", prompt, re.M):
        found.append((m.end(), "\n".join(re.sub(r"^\s*//+ ?", "", ln) for ln in m.group(0).splitlines())))
    if not found:
        return ""
    return textwrap.dedent(max(found)[1]).strip("\n")
