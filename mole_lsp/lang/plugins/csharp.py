"""C#: what the language needs beyond its registry entry (see :mod:`mole_lsp.lang.plugins`)."""

from __future__ import annotations

# ---- corpus mining (CORPUS, read by training/corpus) ----------------------------------------------
import html
import re
import textwrap

from mole_lsp.lang.plugins import doc_comments as docs
from mole_lsp.lang.plugins.mining import Corpus, Grammar, TreeSitterMiner, line_run

# Top-level XML doc elements; <example>, <seealso>, <value>, <include> and the like are not used.
_ELEMENT = re.compile(r"<(summary|remarks|param|typeparam|returns|exception)\b([^>]*)>(.*?)</\1\s*>",
                      re.DOTALL | re.IGNORECASE)
_ATTR = re.compile(r"""\b(name|cref|langword|href)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
_CODE = re.compile(r"<code\b[^>]*>(.*?)</code\s*>", re.DOTALL | re.IGNORECASE)
_REFERENCE = re.compile(r"<(see|seealso|paramref|typeparamref)\b([^>]*?)(?:/>|>(.*?)</\1\s*>)",
                        re.DOTALL | re.IGNORECASE)


def _attr(attrs: str, key: str) -> str:
    return next((v for k, v in _ATTR.findall(attrs) if k.lower() == key), "")


def _cref(cref: str) -> str:
    """``T:System.String`` → ``System.String``; ``List{T}`` → ``List<T>``."""
    cref = re.sub(r"^[A-Z]:", "", cref.strip())
    return cref.replace("{", "<").replace("}", ">")


def _reference(m: re.Match[str]) -> str:
    attrs, label = m.group(2), (m.group(3) or "").strip()
    if label:
        return label
    target = _attr(attrs, "langword") or _attr(attrs, "name") or _cref(_attr(attrs, "cref"))
    # Escaped so that ``List<T>`` survives the tag stripping; _inline unescapes at the end.
    return f"`{html.escape(target, quote=False)}`" if target else ""


def _inline(text: str) -> str:
    """XML doc markup inside one element → markdown-ish prose."""
    text = _CODE.sub(lambda m: "\n```csharp\n" + _code_block(m.group(1)) + "\n```\n", text)
    text = _REFERENCE.sub(_reference, text)
    text = re.sub(r"<c>(.*?)</c\s*>", r"`\1`", text, flags=re.DOTALL | re.IGNORECASE)
    text = re.sub(r"</?para\s*/?>", "\n\n", text, flags=re.IGNORECASE)
    text = re.sub(r"<br\s*/?>", "\n", text, flags=re.IGNORECASE)
    text = re.sub(r"<item\b[^>]*>", "\n- ", text, flags=re.IGNORECASE)
    text = re.sub(r"</term\s*>\s*<description\s*>", ": ", text, flags=re.IGNORECASE)
    text = re.sub(r"</?[A-Za-z][^>]{0,300}>", "", text)
    lines, in_code = [], False
    for line in html.unescape(text).split("\n"):
        if line.strip().startswith("```"):
            in_code = not in_code
            lines.append(line.strip())
        else:
            lines.append(line if in_code else line.strip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _code_block(code: str) -> str:
    return textwrap.dedent(html.unescape(code).strip("\n")).rstrip()


def _item(label: str, body: str) -> str:
    desc = " ".join(_inline(body).split())
    return f"- `{label}`: {desc}" if desc else f"- `{label}`"


def clean_xml_doc(text: str) -> tuple[str | None, str | None] | None:
    """A C# XML documentation comment (markers already stripped) → (doc, summary)."""
    elements = [(tag.lower(), attrs, body) for tag, attrs, body in _ELEMENT.findall(text)]
    if elements:
        parts = (_inline(body) for tag, _, body in elements if tag in ("summary", "remarks"))
        desc = "\n\n".join(p for p in parts if p)
    else:  # plain prose after ///; a lone <inheritdoc/> leaves nothing
        desc = _inline(text)
    if not docs.is_prose(desc):
        return None
    params = [_item(_attr(attrs, "name"), body) for tag, attrs, body in elements if tag in ("param", "typeparam")]
    returns = [" ".join(_inline(body).split()) for tag, _, body in elements if tag == "returns"]
    throws = [_item(_cref(_attr(attrs, "cref")), body) for tag, attrs, body in elements if tag == "exception"]
    parts = [desc]
    if params:
        parts.append("Parameters:\n" + "\n".join(params))
    if any(returns):
        parts.append("Returns: " + " ".join(r for r in returns if r))
    if throws:
        parts.append("Throws:\n" + "\n".join(throws))
    doc = docs.finish("\n\n".join(parts))
    if doc is None:
        return None
    summary = next((_inline(body) for tag, _, body in elements if tag == "summary"), "")
    return doc, docs.limit_length(summary) or docs.block_description(doc)


def read_doc(comments: list[str]) -> tuple[str | None, str | None] | None:
    """``///`` XML documentation (a ``/** */`` block is read the same way)."""
    run = line_run(comments, "///", exclude=("////",))
    if run:
        return clean_xml_doc(docs.strip_line_markers(run, "///"))
    if comments[-1].startswith("/**") and not comments[-1].startswith("/**/"):
        return clean_xml_doc(docs.strip_block_markers(comments[-1]))
    return None


# Methods, constructors and local functions: those of top-level programs, which sit in a
# global_statement next to their doc comment (functions nested in a mined function stay part of it).
CORPUS = Corpus(
    miner=TreeSitterMiner(
        grammar=Grammar("tree_sitter_c_sharp"),
        functions=frozenset({"method_declaration", "constructor_declaration", "local_function_statement"}),
        comments=frozenset({"comment"}),
        doc=read_doc,
        wrappers=frozenset({"global_statement"}),
        own_line=frozenset({
            "preproc_region", "preproc_endregion", "preproc_if", "preproc_elif", "preproc_else", "preproc_define",
            "preproc_undef", "preproc_pragma", "preproc_nullable", "preproc_line", "preproc_error",
            "preproc_warning",
        }),
    )
)

# ---- execution (TOOLCHAIN and PROGRAM, read by training/eval) ----------------------------------------

import re  # noqa: E402 - this section follows the corpus section's code

from mole_lsp.lang.plugins.execution import Toolchain, Verdicts  # noqa: E402

# Mono (Debian: mono-mcs): ``mcs`` compiles, ``mono`` runs. Tests assert with Debug.Assert (compiled in
# with DEBUG), which only logs on Mono: the trace listener writes the failure to stderr, and the verdict
# counts it as a failed test even though the program goes on and exits with status 0.
TOOLCHAIN = Toolchain(
    source="prog.cs", packages="mono-mcs", compile_tools=("mcs",), run_tool="mono",
    compile=lambda b: [b.compiler, "-debug", "-d:DEBUG", "-warn:0", "-r:System.Numerics.dll", "-out:prog.exe",
                       "prog.cs"],
    run=lambda b: [b.interpreter, "--debug", "prog.exe"],
    env={"MONO_TRACE_LISTENER": "Console.Error"}, version=("mcs", "--version"),
    verdicts=Verdicts(failure=("DefaultTraceListener.Fail",), assertions_log=True,
                      memory=("System.OutOfMemoryException",), location=re.compile(r"prog\.cs:(\d+)"),
                      error_line=re.compile(r"^[\w.]+Exception: .*$", re.M)),
)
