"""Fence parser (DESIGN §3) and the token/label bridge in mole_lsp.lang.detok."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mole_lsp.lang.detok import IncrementalDecoder, token_labels
from mole_lsp.lang.fence import NL, UNKNOWN, FenceParser, label_chars, label_offsets
from mole_lsp.lang.registry import load_registry

REG = load_registry()
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def lines_labels(text: str) -> list[str]:
    """Label after each line's newline plus the final label (compact expectations)."""
    labels = label_chars(text, REG)
    out = [labels[i] for i, c in enumerate(text) if c == "\n"]
    return out + [labels[-1] if labels else NL]


# -- an independent whole-text reference: one regex per complete line ----------------------
_OPEN = re.compile(r"[ \t]*(`{3,}|~{3,})(.*)")
_CLOSE = re.compile(r"[ \t]*(`{3,}|~{3,})[ \t\r]*")


def reference_labels(text: str) -> list[str]:
    labels: list[str] = []
    state, fence = NL, ""
    for line in text.split("\n"):
        labels.extend([state] * len(line))
        if len(labels) == len(text):
            break  # last line has no newline: it cannot change the state
        if not fence:
            m = _OPEN.fullmatch(line)
            if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
                fence = m.group(1)
                state = REG.by_fence_tag(m.group(2)) or UNKNOWN
        else:
            m = _CLOSE.fullmatch(line)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                state, fence = NL, ""
        labels.append(state)
    return labels


# -- unit tests ------------------------------------------------------------------------------


def test_basic_block_boundaries() -> None:
    text = "Try:\n```rust\nfn main() {}\n```\nDone."
    labels = label_chars(text, REG)
    assert len(labels) == len(text)
    open_nl = text.index("```rust") + len("```rust")
    assert set(labels[:open_nl]) == {NL}  # the opening line is prose ...
    assert labels[open_nl] == "rust"  # ... until its newline is read
    close_nl = text.index("```\nDone") + 3
    assert set(labels[open_nl:close_nl]) == {"rust"}  # body and closing fence
    assert labels[close_nl] == NL
    assert set(labels[close_nl:]) == {NL}


@pytest.mark.parametrize(
    ("tag", "lang"),
    [
        ("c++", "cpp"),
        ("cpp", "cpp"),
        ("cc", "cpp"),
        ("cxx", "cpp"),
        ("hpp", "cpp"),
        ("c#", "csharp"),
        ("C#", "csharp"),
        ("cs", "csharp"),
        ("c", "c"),
        ("js", "javascript"),
        ("jsx", "javascript"),
        ("node", "javascript"),
        ("py", "python"),
        ("Python3", "python"),
        ("{.python}", "python"),
        ("python title=x.py", "python"),
        ("rs", "rust"),
        ("rust,ignore", "rust"),
        ("golang", "go"),
        ("ts", "typescript"),
        ("bash", "shell"),
        ("", UNKNOWN),
        ("mermaid", UNKNOWN),
        ("   ", UNKNOWN),
    ],
)
def test_aliases_via_registry(tag: str, lang: str) -> None:
    assert lines_labels(f"x\n```{tag}\nbody\n```\ny") == [NL, lang, lang, NL, NL]


def test_tilde_fences_and_mixing() -> None:
    # ``` inside a ~~~ block is code; only ~~~ closes it.
    text = "~~~python\n```\nx\n~~~\n"
    assert lines_labels(text) == ["python", "python", "python", NL, NL]
    # Tilde info strings may contain backticks.
    assert lines_labels("~~~ py `x`\na\n~~~\n") == ["python", "python", NL, NL]


def test_long_fences_need_long_closers() -> None:
    text = "````markdown\n```python\nx\n```\n````\nafter\n"
    assert lines_labels(text) == [UNKNOWN] * 4 + [NL, NL, NL]
    # A closer may be longer than the opener but not shorter; a closer with text is code.
    assert lines_labels("```go\nx\n``` go\n`````\n") == ["go", "go", "go", NL, NL]
    assert lines_labels("~~~~\n~~~\n~~~~~~\n") == [UNKNOWN, UNKNOWN, NL, NL]


def test_indented_fences() -> None:
    text = "1. step:\n\n    ```sh\n    ls -l\n    ```\n\t```py\n\tx\n  \t```\n"
    assert lines_labels(text) == [NL, NL, "shell", "shell", NL, "python", "python", NL, NL]


def test_backtick_info_with_backticks_is_not_a_fence() -> None:
    assert lines_labels("```js `x` ```\nstill prose\n") == [NL, NL, NL]
    assert lines_labels("``not a fence\n") == [NL, NL]


def test_crlf() -> None:
    text = "a\r\n```rust\r\nlet x = 1;\r\n```  \r\nb\r\n"
    assert lines_labels(text) == [NL, "rust", "rust", NL, NL, NL]


def test_unterminated_and_unclosed_end() -> None:
    assert lines_labels("x\n```python\nprint(1)\nmore") == [NL, "python", "python", "python"]
    # A closing fence without its newline has not been read yet: still code.
    assert label_chars("```py\nx\n```", REG)[-1] == "python"
    assert label_chars("```py\nx\n```\n", REG)[-1] == NL


def test_fence_must_start_the_line() -> None:
    assert lines_labels("text ```python\nx\n") == [NL, NL, NL]
    assert lines_labels("> ```python\nx\n") == [NL, NL, NL]


def test_feed_returns_label_and_copy_is_independent() -> None:
    p = FenceParser(REG)
    assert p.feed("```cs\n") == "csharp"
    assert p.info == "cs" and p.fence == ("`", 3) and p.in_code
    q = p.copy()
    assert q.feed("```\n") == NL
    assert p.label == "csharp" and q.label == NL and q.info is None
    # copy keeps a half-read line
    p.feed("  ``")
    r = p.copy()
    assert p.feed("`\n") == NL and r.feed("`x\n") == "csharp"


def test_document_mode_and_state_validation() -> None:
    p = FenceParser(REG, state="python")
    assert p.feed('"""\n```\nExample\n```\n"""\n') == "python"  # fences inside docstrings
    assert label_chars("```\n", REG, state="go") == ["go"] * 4
    with pytest.raises(KeyError, match="known ids"):
        FenceParser(REG, state="cobol")
    assert FenceParser(REG, state=UNKNOWN).feed("x\n```\n") == UNKNOWN


def test_default_registry_is_used() -> None:
    assert FenceParser().feed("```c++\n") == "cpp"
    assert label_chars("") == []


def test_label_offsets_running_max() -> None:
    text = "```py\nx\n```\n"
    # (0, 0) special token first; overlapping spans like byte pieces of one character.
    offsets = [(0, 0), (0, 3), (3, 5), (5, 6), (5, 6), (6, 7), (7, 8), (8, 11), (11, 12), (0, 0)]
    assert label_offsets(text, offsets, REG) == [
        NL,
        NL,
        NL,
        "python",
        "python",
        "python",
        "python",
        "python",
        NL,
        NL,
    ]
    assert label_offsets("abc", [(0, 3)], REG, state="rust") == ["rust"]
    with pytest.raises(ValueError):
        label_offsets("ab", [(0, 3)], REG)


def test_long_lines_stay_linear() -> None:
    # A huge info string and a huge blank-ish closing candidate must not be rescanned per chunk.
    p = FenceParser(REG)
    p.feed("```python")
    for _ in range(20000):
        p.feed(" x")
    assert p.feed("\n") == "python"
    for _ in range(20000):
        p.feed("  ")
    assert p.feed("```\n") == NL
    assert len(p._parts) <= 256


# -- properties ------------------------------------------------------------------------------

TAGS = [
    "",
    "python",
    "py",
    "py3",
    "c++",
    "C#",
    "cs",
    "c",
    "js",
    "node",
    "rust",
    "rs",
    "go",
    "golang",
    "ts",
    "tsx",
    "java",
    "{.python}",
    "python title=x.py",
    "rust,ignore",
    "Python3",
    "text",
    "mermaid",
    "sh",
    "console",
    "🦀",
    "ä",
    "kotlin",
]
PROSE_CHARS = st.sampled_from(
    list("abcxyz ABC019.,;:()[]{}<>=+-*/#'\"!?\t`~")
    + ["é", "ß", "ø", "中", "文", "ж", "🦀", "👍", "🏽", "\u0301", "€", "𝄞"]
)
CODE_CHARS = st.sampled_from(list("abcdefxyz _(){}[];:=+-*/<>.,'\"#!&|\\0123456789\t`~") + ["é", "🦀", "中"])
FENCES = ["```", "~~~", "````", "~~~~~"]
INDENTS = ["", "", " ", "  ", "    ", "\t", " \t"]


@st.composite
def markdown(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["prose", "prose", "block", "inline"]))
        if kind == "prose":
            lines.extend(draw(st.lists(st.text(PROSE_CHARS, max_size=25), min_size=1, max_size=3)))
        elif kind == "inline":
            lines.append(f"```{draw(st.sampled_from(TAGS))} ``` and `x`")
        else:
            fence = draw(st.sampled_from(FENCES))
            indent = draw(st.sampled_from(INDENTS))
            lines.append(f"{indent}{fence}{draw(st.sampled_from(TAGS))}")
            for _ in range(draw(st.integers(0, 4))):
                lines.append(
                    draw(
                        st.one_of(
                            st.text(CODE_CHARS, max_size=25),
                            st.sampled_from(
                                ["```", "~~~", "``` inner", "```python", fence[:3], fence + " x"]
                            ),
                        )
                    )
                )
            end = draw(st.sampled_from(["close", "close", "longer", "spaces", "open"]))
            if end == "close":
                lines.append(draw(st.sampled_from(INDENTS)) + fence)
            elif end == "longer":
                lines.append(fence + fence[0])
            elif end == "spaces":
                lines.append(fence + " \t ")
            else:
                break  # unterminated: code until the end
    eol = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    return eol.join(lines) + draw(st.sampled_from(["", eol]))


chaos = st.text(st.sampled_from(list("`~ \t\r\n\nabpy+#{}.,") + ["🦀", "é"]), max_size=80)
texts = st.one_of(markdown(), chaos)


@st.composite
def chunked(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(texts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@PROPERTY
@given(texts)
def test_matches_line_reference(text: str) -> None:
    assert label_chars(text, REG) == reference_labels(text)


@PROPERTY
@given(chunked())
def test_chunking_invariance(case: tuple[str, list[str]]) -> None:
    text, chunks = case
    whole = label_chars(text, REG)
    p = FenceParser(REG)
    pos = 0
    for chunk in chunks:
        pos += len(chunk)
        assert p.feed(chunk) == (whole[pos - 1] if pos else NL)
    assert pos == len(text)


@PROPERTY
@given(texts, st.data())
def test_label_offsets_equals_char_labels(text: str, data: st.DataObject) -> None:
    ends = data.draw(st.lists(st.integers(0, len(text)), max_size=20))
    offsets = [(0, e) for e in ends]
    whole = [NL, *label_chars(text, REG)]  # whole[e] = state after text[:e]
    expected, running = [], 0
    for e in ends:
        running = max(running, e)
        expected.append(whole[running])
    assert label_offsets(text, offsets, REG) == expected


# -- tokenizer replay: decoding labels == training labels --------------------------------------


def _replay(tokenizer, text: str) -> None:
    ids, labels = token_labels(tokenizer, text, REG)
    assert len(ids) == len(labels)
    decoder = IncrementalDecoder(tokenizer)
    parser = FenceParser(REG)
    pieces, got = [], []
    for tid in ids:
        piece = decoder.push(tid)
        pieces.append(piece)
        got.append(parser.feed(piece))
    assert got == labels
    assert "".join(pieces) + decoder.flush() == text


@pytest.fixture(scope="module")
def tiny_bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [
        "Here is code:\n```python\ndef f(x):\n    return x\n```\n",
        "```c++\nint main() { return 0; }\n```\r\n~~~rust\nfn main() {}\n~~~\n",
        "Emoji 🦀 and 中文 text, café, naïve.\n```js\nconsole.log('hi')\n```\n",
    ] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|end|>"]
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|end|>", clean_up_tokenization_spaces=False
    )


@pytest.fixture(scope="module")
def tiny_sentencepiece_style():
    """Llama-2-style BPE: '▁' for spaces, <0xNN> byte fallback, decoder strips one leading space."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    corpus = ["Here is code:\n```python\ndef f(x):\n    return x\n```\n", "```c++\nint main() {}\n```\n"] * 20
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", *byte_tokens], limit_alphabet=40)
    tok.train_from_iterator(corpus, trainer)
    data = json.loads(tok.to_str())
    # Byte tokens are ordinary vocabulary in Llama tokenizers, not special tokens to skip.
    data["added_tokens"] = [t for t in data["added_tokens"] if not t["content"].startswith("<0x")]
    data["model"]["byte_fallback"] = True
    tok = Tokenizer.from_str(json.dumps(data))
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return tok


def _shared_dir() -> Path:
    return SHARED


@pytest.fixture(scope="module")
def smollm2():
    path = _shared_dir() / "models" / "smollm2-135m-instruct"
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"SmolLM2 tokenizer not found at {path}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


@PROPERTY
@given(texts)
def test_replay_tiny_bpe(tiny_bpe, text: str) -> None:
    _replay(tiny_bpe, text)


@PROPERTY
@given(texts)
def test_replay_sentencepiece_style(tiny_sentencepiece_style, text: str) -> None:
    _replay(tiny_sentencepiece_style, text)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts)
def test_replay_smollm2(smollm2, text: str) -> None:
    _replay(smollm2, text)


def test_replay_raw_tokenizer_and_emoji_split(tiny_bpe) -> None:
    raw = tiny_bpe.backend_tokenizer
    text = "𝄞🦀\n```rs\nlet 🦀 = 1;\n```\n"
    ids, _ = token_labels(raw, text, REG)
    assert len(ids) > len(text) // 2  # rare characters split into byte tokens
    _replay(raw, text)
    _replay(tiny_bpe, text)


def test_special_tokens_are_skipped(tiny_bpe) -> None:
    eos = tiny_bpe.convert_tokens_to_ids("<|end|>")
    ids, labels = token_labels(tiny_bpe, "```py\nx", REG)
    decoder, parser = IncrementalDecoder(tiny_bpe), FenceParser(REG)
    got = [parser.feed(decoder.push(i)) for i in [*ids, eos]]
    assert got == [*labels, "python"]


def test_decoder_with_prompt_context(tiny_bpe) -> None:
    text = "Here is code:\n```python\ndef f(x):\n    return x 🦀\n```\nok"
    ids, labels = token_labels(tiny_bpe, text, REG)
    for k in range(len(ids) + 1):
        prompt = tiny_bpe.decode(ids[:k], clean_up_tokenization_spaces=False)
        if prompt.endswith("\ufffd"):
            continue  # prompts end on whole characters
        parser = FenceParser(REG)
        parser.feed(prompt)
        decoder = IncrementalDecoder(tiny_bpe, ids[:k])
        pieces = [decoder.push(i) for i in ids[k:]]
        assert prompt + "".join(pieces) == text
        replayed = []
        for piece in pieces:
            replayed.append(parser.feed(piece))
        assert replayed == labels[k:]


def test_slow_tokenizer_refused() -> None:
    class Slow:
        is_fast = False

    with pytest.raises(TypeError):
        token_labels(Slow(), "x")
