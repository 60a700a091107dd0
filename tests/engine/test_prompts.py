"""Prompt building: FIM vs prefix-only, token-budget cuts, completion stop rules, chat prompts, training samples."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from lsp_fixtures import make_tokenizer

from mole_lsp.engine.prompts import (
    PLAIN_LAYOUT,
    Prompt,
    chat_layout,
    chat_sample,
    chat_text,
    completion_prompt,
    completion_stop,
    explain_prompt,
    heal_completion,
    translate_prompt,
)
from mole_lsp.lang.fence import NL


@dataclass
class Fim:
    prefix: str = "<fim_prefix>"
    suffix: str = "<fim_suffix>"
    middle: str = "<fim_middle>"


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _ids(tok, name):
    return tok.convert_tokens_to_ids(name)


def test_prefix_only_without_fim_tokens(tok):
    p = completion_prompt(tok, "def fib(n):\n    ", "\nprint(fib(3))\n", "python", budget=256)
    assert p.kind == "prefix"
    # This tokenizer adds no BOS of its own, so none is added (chat models may name a chat token BOS).
    # the auto-indent of the cursor's line is left out and written by the model (token healing)
    assert tok.decode(p.ids) == "def fib(n):\n" and p.heal == "    "
    assert set(p.labels) == {"python"} and len(p.labels) == len(p.ids)


def test_fim_layout_with_fim_tokens(tok):
    p = completion_prompt(tok, "def f():\n    ", "\nreturn 1\n", "python", budget=256, fim=Fim())
    assert p.kind == "fim"
    ids = p.ids
    pre, suf, mid = (_ids(tok, t) for t in ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))
    assert ids[0] == pre and ids[-1] == mid
    i = ids.index(suf)
    assert tok.decode(ids[1:i]) == "def f():\n" and p.heal == "    "
    assert tok.decode(ids[i + 1 : -1]) == "\nreturn 1\n"


def test_budget_keeps_text_nearest_the_cursor(tok):
    prefix = "".join(f"x{i} = {i}\n" for i in range(300)) + "y = "
    suffix = "".join(f"z{i} = {i}\n" for i in range(300))
    p = completion_prompt(tok, prefix, suffix, "python", budget=64, fim=Fim())
    assert len(p.ids) <= 64
    text = tok.decode(p.ids, skip_special_tokens=False)
    before, after = text.split("<fim_suffix>")
    assert before.endswith("x299 = 299\ny = ")  # the cursor's side survives
    assert "x0 = 0\n" not in before  # the far start is cut
    assert after.startswith("z0 = 0\n") and "z299" not in after
    # The suffix never takes more than a quarter of the budget.
    assert len(tok(after)["input_ids"]) <= 64 // 4 + 2
    p2 = completion_prompt(tok, prefix, suffix, "python", budget=64)
    assert len(p2.ids) <= 64 and tok.decode(p2.ids).endswith("x299 = 299\ny = ")


def _cp(line_prefix="", suffix="", prefix=None):
    prefix = line_prefix if prefix is None else prefix
    line = prefix[prefix.rfind("\n") + 1 :]
    return Prompt(ids=[1], labels=["python"], kind="prefix", suffix=suffix, line_prefix=line)


def test_stop_blank_line():
    p = _cp("    ")
    assert completion_stop("x = 1\n    y = 2\n", p) is None
    assert completion_stop("x = 1\n    y = 2\n\n    z = 3", p) == ("x = 1\n    y = 2", "blank_line")


def test_stop_end_of_block_dedent():
    p = _cp("    ")
    assert completion_stop("return n\nprint(1)\n", p) == ("return n", "end_of_block")


def test_stop_keeps_closing_brace():
    p = _cp("    ")
    assert completion_stop("return a + b;\n}\nfunction g() {", p) == ("return a + b;\n}", "end_of_block")
    # ... unless the suffix already has it (no echo of the suffix).
    p2 = _cp("    ", suffix="\n}\n")
    assert completion_stop("return a + b;\n}\n", p2) == ("return a + b;", "suffix")


def test_stop_no_echo_of_suffix():
    p = _cp("    ", suffix="\n    return total\n")
    out = completion_stop("total += x\n    return total\n", p)
    assert out == ("total += x", "suffix")


def test_stop_waits_for_complete_lines():
    p = _cp("    ")
    assert completion_stop("return n\npri", p) is None  # the second line may still grow
    assert completion_stop("return n\npri", p, final=True) == ("return n", "end_of_block")


def test_explain_prompt_labels_code_with_its_language(tok):
    p = explain_prompt(tok, "print('hi')\n", "python")
    assert "python" in p.labels and p.labels[-1] == NL  # the answer starts in prose
    assert p.text is not None and "```python\nprint('hi')\n```\n" in p.text
    assert "<|im_start|>assistant" in p.text


def test_translate_prompt_opens_target_fence(tok):
    p = translate_prompt(tok, "print('hi')\n", "python", "rust")
    assert "python" in p.labels and p.labels[-1] == "rust"  # the answer starts inside ```rust
    assert p.text.endswith("```rust\n") and "\n```" in p.stop


def test_code_with_backticks_gets_a_longer_fence(tok):
    p = explain_prompt(tok, "s = '```'\n", "python")
    assert "````python\n" in p.text and p.labels[-1] == NL


def test_heal_completion_strips_the_indentation_the_model_wrote(tok):
    p = completion_prompt(tok, "if x:\n        ", "", "python", budget=64)
    assert heal_completion("        return 1", p) == "return 1"
    assert heal_completion("    y", p) == "y"  # wrote less than the cursor's indentation
    assert heal_completion("\nfoo", p) == "\nfoo"
    q = completion_prompt(tok, "x = ", "", "python", budget=64)
    assert q.heal == "" and heal_completion(" 1", q) == " 1"



def test_chat_sample_starts_with_the_chat_prompt(tok):
    text, start = chat_sample(tok, "Add 1?", "```python\nx + 1\n```")
    assert text[:start] == chat_text(tok, "Add 1?")
    assert text[start:] == "```python\nx + 1\n```<|im_end|>\n"  # answer + the template's end of turn
    sys_text, sys_start = chat_sample(tok, "Add 1?", "ok", system="Be brief.")
    assert sys_text[:sys_start] == chat_text(tok, "Add 1?", system="Be brief.")
    assert sys_text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


def test_plain_layout_without_a_template_or_on_request(tok):
    assert chat_layout(tok) == "chat" and chat_layout(tok, "plain") == "plain"
    text, start = chat_sample(tok, "Q?", "A.", layout="plain")
    assert text == PLAIN_LAYOUT.format(user="Q?") + "A." + tok.eos_token
    assert text[:start] == chat_text(tok, "Q?", layout="plain") == "### Instruction\nQ?\n\n### Response\n"
    plain_tok = make_tokenizer()
    plain_tok.chat_template = None
    assert chat_layout(plain_tok) == "plain"
    with pytest.raises(ValueError, match="no chat template"):
        chat_layout(plain_tok, "chat")
    with pytest.raises(ValueError, match="must be one of"):
        chat_layout(tok, "markdown")


def test_prefix_start_stays_on_a_line_while_typing(tok):
    """Typing at the cursor keeps the prompt's start (KV reuse needs a stable prefix) within the budget;
    the start moves a few lines forward at a time, and always to the start of a line."""
    doc = "".join(f"x{i} = {i}\n" for i in range(300))
    typed = "def total(values):\n    return sum(v for v in values if v > 0)\n"
    starts, prev = [], None
    for k in range(len(typed) + 1):
        p = completion_prompt(tok, doc + typed[:k], "", "python", budget=256)
        prefix, ids = (doc + typed[:k])[: len(doc) + k - len(p.heal)], p.ids
        assert 200 < len(ids) <= 256
        text = tok.decode(ids)
        assert prefix.endswith(text) and prefix[: len(prefix) - len(text)].endswith("\n")
        if not starts or text[:12] != starts[-1]:
            starts.append(text[:12])
        elif prev is not None:  # same start: the previous prompt's tokens are kept but for the tail
            same = next((i for i, (a, b) in enumerate(zip(prev, ids, strict=False)) if a != b), len(prev))
            assert same >= len(prev) - 4  # BPE merges the last few tokens again
        prev = ids
    assert len(starts) <= 3  # a start per keystroke before (the last 256 tokens)


def test_single_line_when_code_follows_the_cursor(tok):
    assert completion_prompt(tok, "x = foo(", ")\nbar()\n", "python").single_line
    assert completion_prompt(tok, "x = fo", "o.bar\n", "python").single_line  # mid-word
    assert not completion_prompt(tok, "x = foo(1)", "\nbar()\n", "python").single_line  # line end
    assert not completion_prompt(tok, "def f():\n    ", "  \n", "python").single_line  # blank line
