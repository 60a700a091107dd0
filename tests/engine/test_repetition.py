"""Degenerate repetition: the detector over token sequences (loops of every period, near-loops, code
that legitimately repeats itself), and the engine stopping a tiny model that loops, in every mode."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_tiny_llama
from lsp_fixtures import make_tokenizer
from lsprotocol import types
from pytest_lsp.client import make_test_lsp_client

from mole_lsp.cli import main
from mole_lsp.engine.engine import Engine
from mole_lsp.engine.repetition import NOTE, Loop, RepetitionDetector, RepetitionRule

RULE = RepetitionRule()


def _ids(pieces: list[str], vocab: dict[str, int]) -> list[int]:
    return [vocab.setdefault(p, len(vocab)) for p in pieces]


def _words(text: str, vocab: dict[str, int]) -> tuple[list[int], list[str]]:
    """A word-level stand-in for a BPE tokenizer: words and punctuation runs with their leading space."""
    pieces = re.findall(r" ?\w+| ?[^\w\s]+|\s+", text)
    assert "".join(pieces) == text
    return _ids(pieces, vocab), pieces


def _first_loop(ids: list[int], rule: RepetitionRule = RULE) -> tuple[int, Loop] | None:
    det = RepetitionDetector(rule)
    for n, t in enumerate(ids, 1):
        loop = det.push(t)
        if loop is not None:
            return n, loop
    return None


def _keep(text_pieces: list[str], loop: Loop) -> str:
    ends, text = [], ""
    for p in text_pieces[: loop.end]:
        text += p
        ends.append(len(text))
    return loop.keep(text, ends)


# -- the detector -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("period", [1, 2, 3, 5, 7, 11, 16, 33, 64])
def test_a_loop_of_any_period_is_found_as_soon_as_it_is_long_enough(period):
    prefix = list(range(1000, 1010))  # distinct from the unit: the loop starts right after it
    unit = list(range(period))
    hit = _first_loop(prefix + unit * 100)
    assert hit is not None
    n, loop = hit
    need = max(RULE.min_repeats * period, RULE.min_tokens)
    assert (loop.start, loop.period, loop.end) == (len(prefix), period, n)
    assert n == len(prefix) + need  # not a token later
    assert loop.repeats >= RULE.min_repeats


def test_the_rule_is_configurable_and_longer_units_are_not_looked_for():
    unit = list(range(10))
    assert _first_loop(unit * 20, RepetitionRule(max_period=9)) is None
    n, loop = _first_loop(unit * 20, RepetitionRule(max_period=10, min_repeats=2, min_tokens=1))
    assert (n, loop.period) == (20, 10)
    n, loop = _first_loop([7] * 10, RepetitionRule(min_repeats=2, min_tokens=5))
    assert (n, loop.start, loop.period) == (5, 0, 1)
    with pytest.raises(ValueError):
        RepetitionDetector(RepetitionRule(min_repeats=1))


def test_the_shortest_unit_is_reported_and_feed_stops_at_the_first_loop():
    ab = [1, 2] * 40  # also periodic with 4, 6, ...
    loop = RepetitionDetector().feed(ab)
    assert loop is not None and loop.period == 2 and loop.end == RULE.min_tokens
    assert RepetitionDetector().feed(list(range(200))) is None


def test_near_loops_are_not_loops():
    # A counter in every copy: x0 = 0, x1 = 1, ... is a sequence, not a loop.
    vocab: dict[str, int] = {}
    ids, _ = _words("".join(f"    x{i} = {i}\n" for i in range(80)), vocab)
    assert _first_loop(ids) is None
    # A copy that differs every third time (each time differently) restarts the count: never 32 exact
    # tokens in a row. (The same glitch every time would make a loop of three copies.)
    glitchy = [t for k in range(10) for t in [1, 2, 3, 4, 5, 6, 7] * 2 + [1, 2, 3, 4, 5, 6, 100 + k]]
    assert _first_loop(glitchy) is None
    # Until the model settles into exact copies.
    hit = _first_loop(glitchy + [1, 2, 3, 4, 5, 6, 7] * 10)
    assert hit is not None and hit[1].start == len(glitchy)


LEGIT = {
    "switch": "".join(f"        case {i}: return \"{w}\";\n" for i, w in
                      enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight"])),
    "number table": "static const int T[] = {\n" + "".join(
        "    " + ", ".join(str((r * 8 + c) * 37 % 101) for c in range(8)) + ",\n" for r in range(8)) + "};\n",
    "zero row": "int pad[16] = {" + ", ".join(["0"] * 16) + "};\n",
    "zero rows": "int m[4][8] = {\n" + "    {0, 0, 0, 0, 0, 0, 0, 0},\n" * 3 + "    {0, 0, 0, 0, 0, 0, 0, 0}\n};\n",
    "closers": "".join("    " * d + "{\n" for d in range(6)) + "".join("    " * d + "}\n" for d in reversed(range(6))),
    "lisp": "(define (f x) (if (< x 1) 0 (+ 1 (f (- x 1)))))))))\n",
    "two equal lines": "    print()\n    print()\n    done = True\n",
    "unrolled": "    h ^= h >> 16;\n    h *= 0x85ebca6b;\n    h ^= h >> 13;\n    h *= 0xc2b2ae35;\n    h ^= h >> 16;\n",
    "markdown table": "| a | b | c |\n|---|---|---|\n| 1 | 2 | 3 |\n| 4 | 5 | 6 |\n",
    "rule": "# " + "-" * 70 + "\n# " + "=" * 70 + "\n",
    "asserts": "".join(f"    assert fib({i}) == {f}\n" for i, f in enumerate([0, 1, 1, 2, 3, 5, 8, 13, 21, 34])),
}


@pytest.mark.parametrize("name", sorted(LEGIT))
def test_code_that_repeats_itself_is_not_cut(name):
    vocab: dict[str, int] = {}
    ids, _ = _words(LEGIT[name], vocab)
    assert _first_loop(ids) is None


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.mark.parametrize("name", sorted(LEGIT))
def test_code_that_repeats_itself_is_not_cut_with_a_real_tokenizer(name, smollm2_tokenizer):
    assert _first_loop(smollm2_tokenizer(LEGIT[name], add_special_tokens=False)["input_ids"]) is None


def test_the_quick_start_loop_keeps_the_text_before_it_and_one_copy():
    vocab: dict[str, int] = {}
    ids, pieces = _words("#!/usr/bin/env smol\n\n" + "#!/usr/bin/emacs\n\n" * 30, vocab)
    n, loop = _first_loop(ids)
    assert n < 8 + 7 * 8  # about 7 copies, not 30
    assert _keep(pieces, loop) == "#!/usr/bin/env smol\n\n#!/usr/bin/emacs"


def test_a_loop_starting_mid_line_is_cut_back_to_whole_lines():
    vocab: dict[str, int] = {}
    text = "fn main() {\n    let a = f();\n" + "    g();\n" * 40
    ids, pieces = _words(text, vocab)
    _, loop = _first_loop(ids)
    assert _keep(pieces, loop) == "fn main() {\n    let a = f();\n    g();"
    # A loop inside a line keeps the line's start and one copy.
    ids, pieces = _words("let v = vec![" + "0, " * 60, vocab)
    _, loop = _first_loop(ids)
    kept = _keep(pieces, loop)
    assert kept.startswith("let v = vec![0") and len(kept) < len("let v = vec![") + 8


# -- the engine ---------------------------------------------------------------------------------------------
LOOP_TEXT = "x = 1\n"


def looping_model(tok) -> torch.nn.Module:
    """A tiny Llama that writes ``LOOP_TEXT`` forever: attention and MLP outputs are zeroed, so the last
    hidden state is the current token's embedding, and the lm_head maps each loop token to the next
    (every other token to the first)."""
    cycle = tok(LOOP_TEXT, add_special_tokens=False)["input_ids"]
    assert len(set(cycle)) == len(cycle) and tok.decode(cycle) == LOOP_TEXT
    model = make_tiny_llama(vocab_size=len(tok))
    basis = torch.eye(model.config.hidden_size)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        emb.copy_(basis[len(cycle)].expand_as(emb))
        head.zero_()
        for i, t in enumerate(cycle):
            emb[t] = basis[i]
            head[cycle[(i + 1) % len(cycle)]] = 10 * basis[i]
        head[cycle[0]] += 10 * basis[len(cycle)]
    return model


@pytest.fixture(scope="module")
def looping_engine():
    tok = make_tokenizer()
    return Engine(looping_model(tok), tok)


@pytest.mark.parametrize("task", ["complete", "explain", "translate"])
def test_the_engine_stops_a_looping_model_in_every_mode(looping_engine, task):
    calls = {
        "complete": lambda e: e.complete("y = 0\n", "", "python", max_new_tokens=120),
        "explain": lambda e: e.explain("y = 0\n", "python", max_new_tokens=120),
        "translate": lambda e: e.translate("y = 0\n", "python", "rust", max_new_tokens=120),
    }
    r = calls[task](looping_engine)
    assert r.stop_reason == "repetition"
    assert r.text.strip() == LOOP_TEXT.strip()  # one copy, the loop cut
    assert r.new_tokens == RULE.min_tokens  # stopped as soon as the loop was certain, not at 120


def test_the_rule_can_be_switched_off(looping_engine):
    from mole_lsp.engine.prompts import raw_prompt

    e = looping_engine
    prompt = raw_prompt(e.tokenizer, "y = 0\n", e.registry)
    r = e.decoder.run(prompt, "automated", None, 40, [], 0.0, None, None, repetition=None)
    assert r.stop_reason == "max_tokens" and r.text.startswith(LOOP_TEXT * 6)


# -- the user is told: CLI and LSP commands ----------------------------------------------------------------
@pytest.fixture(scope="module")
def looping_base(tmp_path_factory) -> Path:
    """The looping model saved as a base model folder, and an empty pack repository beside it."""
    root = tmp_path_factory.mktemp("looping")
    tok = make_tokenizer()
    looping_model(tok).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    (root / "packs").mkdir()
    return root


def test_the_cli_says_the_answer_was_cut(looping_base, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = tmp_path / "a.py"
    src.write_text("y = 0\n")
    common = ["--base-model", str(looping_base / "base"), "--pack-repo", str(looping_base / "packs"),
              "--cache-dir", str(tmp_path / "cache"), "--threads", "1", "--offline"]
    for argv in (["translate", str(src), "--to", "rust"], ["explain", str(src)],
                 ["complete", str(src), "--line", "2", "--col", "1"]):
        assert main([*common, *argv, "--max-new-tokens", "120"]) == 0
        out, err = capsys.readouterr()
        assert out.strip() == LOOP_TEXT.strip() and f"note: {NOTE}" in err, argv


async def test_lsp_commands_return_the_stop_reason_and_say_the_cut(looping_base, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MOLE_"))}
    env.update(OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    client = make_test_lsp_client()
    await client.start_io(sys.executable, "-m", "mole_lsp", "serve", "--base-model", str(looping_base / "base"),
                          "--pack-repo", str(looping_base / "packs"), "--cache-dir", str(tmp_path / "cache"),
                          "--threads", "1", env=env)
    try:
        await client.initialize_session(types.InitializeParams(
            capabilities=types.ClientCapabilities(), initialization_options={"explainMaxNewTokens": 120}))
        uri = (tmp_path / "a.py").as_uri()
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text="y = 0\n")))
        rng = {"start": {"line": 0, "character": 0}, "end": {"line": 1, "character": 0}}
        for command, extra, field in (("mole.explain", {}, "markdown"), ("mole.translate", {"target": "rust"}, "code")):
            out = await client.workspace_execute_command_async(types.ExecuteCommandParams(
                command=command, arguments=[{"uri": uri, "range": rng, **extra}]))
            assert out["stopReason"] == "repetition" and out[field].strip() == LOOP_TEXT.strip()
        said = [m.message for m in client.messages if NOTE in m.message]
        assert len(said) == 2 and said[0].startswith("mole-lsp: explain") and "translate" in said[1]
    finally:
        await client.shutdown_session()
        await client.stop()
