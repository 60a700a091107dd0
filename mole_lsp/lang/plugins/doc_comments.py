"""Doc-comment cleaning for the corpus builder: comment markers off, tags made readable, prose checks.

Each language writes its documentation differently; the language plugins' doc readers
(``mole_lsp/lang/plugins``) pick the comments and use the shared pieces here: marker stripping,
Javadoc/JSDoc/Doxygen tag rendering, length limits and the check that the result is prose that can
stand as the question of a doc2code sample or the answer of a code2doc sample (not a licence block,
commented-out code or a section marker).
"""

from __future__ import annotations

import html
import inspect
import re

# Long docs are cut at a paragraph boundary; a first paragraph longer than this is not used.
MAX_DOC_CHARS = 1200

_LICENCE_RE = re.compile(
    r"copyright\b|\(c\)\s*\d{4}|spdx-license-identifier|all rights reserved|"
    r"licen[cs]ed under|gnu (?:lesser |library )?general public licen[cs]e|apache licen[cs]e|"
    r"permission is hereby granted|this (?:file|library|program) is free software|"
    r"without warranty|warranty of merchantability",
    re.IGNORECASE,
)
_NOT_DOC_START_RE = re.compile(r"^\s*(?:_[A-Z][A-Z0-9_]+\b|\d+\.\s|todo|fixme|xxx|hack|nolint|noqa|eslint|prettier|istanbul|jshint|"
                               r"@ts-|clang-format|dr \d|lwg \d|\[|-\*-|#|pragma)", re.IGNORECASE)
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'-]+")


def looks_like_licence(text: str) -> bool:
    """True for licence headers and copyright notices, which must never become training prose."""
    return bool(_LICENCE_RE.search(text))


def is_prose(text: str, min_words: int = 3) -> bool:
    """A cheap check that a cleaned comment reads as sentences rather than code or markers."""
    if not text or looks_like_licence(text) or _NOT_DOC_START_RE.match(text):
        return False
    words = _WORD_RE.findall(text)
    if len(words) < min_words:
        return False
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Commented-out code: most lines end like statements do.
    codeish = sum(1 for ln in lines if ln.endswith((";", "{", "}", ");")) or ln.startswith(("#include", "#if")))
    if codeish * 2 > len(lines):
        return False
    letters = sum(ch.isalpha() for ch in text)
    return letters >= 0.4 * len(text.replace(" ", "").replace("\n", ""))


def limit_length(text: str, limit: int = MAX_DOC_CHARS) -> str | None:
    """Keep whole paragraphs up to ``limit`` characters; None when even the first is longer."""
    text = text.strip()
    if len(text) <= limit:
        return text
    kept: list[str] = []
    size = 0
    for para in re.split(r"\n\s*\n", text):
        if size + len(para) > limit:
            break
        kept.append(para)
        size += len(para) + 2
    if not kept:
        return None
    joined = "\n\n".join(kept).strip()
    # Cutting inside a fenced example would leave an unterminated fence in the prose.
    if joined.count("```") % 2:
        joined = joined[: joined.rfind("```")].rstrip()
    return joined or None


def finish(text: str) -> str | None:
    """Last step of every cleaner: squeeze blank lines, limit the length, keep fences closed; None
    unless the result reads as prose."""
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    text = limit_length(text) or ""
    if text.count("```") % 2:  # an unterminated fence would swallow the rest of a sample as code
        text = text[: text.rfind("```")].rstrip()
    return text if is_prose(text) else None


# --- /** ... */ blocks: Javadoc, JSDoc, Doxygen ------------------------------------------------

def strip_block_markers(raw: str) -> str:
    """Remove ``/**``, ``*/`` and the leading `` * `` gutter of a block comment."""
    body = raw.strip()
    body = re.sub(r"^/\*[*!]?", "", body)
    body = re.sub(r"\*+/$", "", body)
    out = []
    for line in body.splitlines():
        out.append(re.sub(r"^\s*\*(?!/) ?", "", line) if line.lstrip().startswith("*") else line.strip())
    return inspect.cleandoc("\n".join(out))


_INLINE_TAG_RE = re.compile(r"\{@(code|literal|link|linkplain|value)\s+([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_TAG_LINE_RE = re.compile(r"^[@\\]([A-Za-z]+)\b\s*(.*)$")
# Tags whose content is not worth rendering as prose (bookkeeping, visibility, examples).
_DROPPED_TAGS = {
    "author", "since", "version", "see", "serial", "serialdata", "serialfield", "private", "public",
    "protected", "static", "memberof", "category", "example", "ingroup", "file", "internal",
    "headername", "namespace", "type", "typedef", "callback", "function", "func", "method", "name",
    "alias", "implements", "extends", "augments", "override", "inheritdoc", "module", "ignore",
    "hideinitializer", "addtogroup", "defgroup", "sa", "copydoc", "class", "struct", "fn", "var",
    "const", "readonly", "constructor", "async", "generator", "template", "jsx", "flags", "apinote",
    "implspec", "implnote", "spec", "hidden", "uses", "provides", "moduleGraph", "lends", "this",
    "default", "enum", "interface", "package", "summary", "exports", "requires", "abstract",
    "virtual", "kind", "event", "fires", "listens", "mixes", "mixin", "global", "inner", "instance",
    "todo", "nosideeffects", "suppress", "pre", "post", "invariant", "overload", "overridden",
}


def _inline_tags(text: str, snippet_tag: str | None) -> str:
    def repl(m: re.Match[str]) -> str:
        kind, content = m.group(1), m.group(2).strip()
        if kind.startswith("link"):
            parts = content.split(None, 1)
            label = parts[1] if len(parts) > 1 else parts[0].lstrip("#").replace("#", ".")
            return f"`{label}`"
        return f"`{content}`"

    text = re.sub(r"\{@inheritDoc\}\.?", "", text)  # points at another doc; says nothing itself
    # JDK 18+ {@snippet lang=... : code } blocks become fenced code.
    if snippet_tag is not None:
        text = re.sub(r"\{@snippet[^:\n]*:[ \t]*\n(.*?)\n[ \t]*\}",
                      lambda m: f"```{snippet_tag}\n{m.group(1)}\n```", text, flags=re.DOTALL)
    text = re.sub(r"\{*@\{|@\}\}*", "", text)  # Doxygen member groups
    text = re.sub(r"\{@return\s+([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}", r"Returns \1.", text)
    text = text.replace("{@docRoot}", "")
    text = _INLINE_TAG_RE.sub(repl, text)
    text = re.sub(r"\{@\w+\s*([^{}]*)\}", r"\1", text)  # other inline tags ({@jls 9.6}, ...): keep the text
    text = re.sub(r"</?(?:code|tt|var|b|strong|em|i)>", "`", text, flags=re.IGNORECASE)
    text = re.sub(r"(?<!`)``([^`\n]+)``(?!`)", r"`\1`", text)  # <code>{@link X}</code>
    text = re.sub(r"(?<!`)``(?!`)", "", text)  # empty spans from <code></code>; fences stay
    text = re.sub(r"<(?:p|br|/p|li|/li|ul|/ul|ol|/ol|pre|/pre|dl|/dl|dt|/dt|dd|/dd)\s*/?>", "\n",
                  text, flags=re.IGNORECASE)
    text = re.sub(r"</?[a-zA-Z][^>]{0,300}>", "", text)
    # Doxygen: %name suppresses auto-linking, @a/@p/@c mark a word.
    text = re.sub(r"%(?=[A-Za-z_])", "", text)
    text = re.sub(r"[@\\](?:a|p|c|e|em|b)\s+([\w:<>~.]*\w)", r"`\1`", text)
    return html.unescape(text)


def _unindent_prose(lines: list[str]) -> list[str]:
    """Left-align prose lines (gutters and tag continuations leave odd indentation) but keep the
    indentation inside <pre> blocks and fences, where it is code."""
    out = []
    in_code = False
    for line in lines:
        lower = line.lower()
        opens = "<pre" in lower or line.strip().startswith("```")
        closes = "</pre" in lower or (in_code and line.strip().startswith("```"))
        out.append(line if in_code else line.strip())
        if opens and not closes:
            in_code = True
        elif closes:
            in_code = False
    return out


def clean_tagged_block(raw: str, snippet_tag: str | None = None) -> str | None:
    """Javadoc / JSDoc / Doxygen block → description plus readable parameter and return lines.

    ``snippet_tag``: fence tag for the code of Javadoc ``{@snippet ... :}`` blocks; None leaves them
    to the generic inline-tag rule."""
    text = strip_block_markers(raw)
    # Doxygen formulas: @f$ inline @f$ and @f[ display @f] become TeX-style dollars, not tags.
    text = text.replace("@f$", "$").replace("\\f$", "$")
    text = re.sub(r"[@\\]f[\[\]]", "$$", text)
    description: list[str] = []
    params: list[str] = []
    returns: list[str] = []
    throws: list[str] = []
    current: list[str] | None = description
    for line in text.splitlines():
        m = _TAG_LINE_RE.match(line.strip())
        if not m:
            if current is not None:
                if current is description or not line.strip():
                    current.append(line)
                else:
                    current[-1] += " " + line.strip()
            continue
        tag, rest = m.group(1).lower(), m.group(2).strip()
        rest = re.sub(r"^\{[^}]*\}\s*", "", rest)  # JSDoc {Type}
        if tag in ("brief", "short", "details", "description", "desc", "remark", "remarks", "note"):
            description.append(rest)
            current = description
        elif tag in ("param", "arg", "argument", "tparam", "prop", "property"):
            rest = re.sub(r"^\[[^\]]*\]", lambda mm: mm.group(0)[1:-1].split("=")[0], rest)
            parts = rest.split(None, 1)
            if parts:
                name = parts[0].strip("[]")
                desc = parts[1].lstrip("- ").strip() if len(parts) > 1 else ""
                params.append(f"- `{name}`: {desc}" if desc else f"- `{name}`")
                current = params
            else:
                current = None
        elif tag in ("return", "returns", "retval", "result"):
            if rest:
                returns.append(rest)
                current = returns
            else:
                current = None
        elif tag in ("throws", "throw", "exception", "raises"):
            if rest:
                throws.append(f"- {rest}")
                current = throws
            else:
                current = None
        elif tag == "deprecated":
            description.append("Deprecated" + (f": {rest}" if rest else "."))
            current = description
        else:  # dropped tags swallow their continuation lines too
            current = None
    # A <p> turned into a line break leaves the space that followed it.
    desc = re.sub(r"(?m)^ (?=\S)", "", _inline_tags("\n".join(_unindent_prose(description)), snippet_tag)).strip()
    if not is_prose(desc):
        return None
    parts = [desc]
    if params:
        parts.append("Parameters:\n" + "\n".join(_inline_tags(p, snippet_tag) for p in params))
    if returns:
        parts.append("Returns: " + _inline_tags(" ".join(returns), snippet_tag))
    if throws:
        parts.append("Throws:\n" + "\n".join(_inline_tags(t, snippet_tag) for t in throws))
    return finish("\n\n".join(parts))


def block_description(cleaned: str) -> str:
    """The description part of a cleaned tagged block (before Parameters/Returns/Throws)."""
    return re.split(r"\n\n(?:Parameters:|Returns:|Throws:)", cleaned, maxsplit=1)[0].strip()


# --- line-comment runs (Go //, Rust ///, C++ // and ///, C# ///) --------------------------------

def strip_line_markers(lines: list[str], marker: str) -> str:
    """Drop ``marker`` (and one following space) from each comment line, keep relative indentation."""
    out = []
    for line in lines:
        s = line.strip()
        if s.startswith(marker):
            s = s[len(marker):]
        out.append(s[1:] if s.startswith(" ") else s)
    return "\n".join(out).strip("\n")


def first_sentence(doc: str) -> str:
    """The summary sentence of a doc, for compact question phrasings."""
    para = doc.strip().split("\n\n", 1)[0].replace("\n", " ")
    m = re.match(r"(.+?[.!?])(?:\s|$)", para)
    return (m.group(1) if m else para).strip()
