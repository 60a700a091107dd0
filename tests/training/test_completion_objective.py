"""The completion objective: raw source windows rendered by the engine's own completion prompt."""

from __future__ import annotations

import io
import json
import random

import pytest
import torch
from helpers import CODE, make_rows, quiet, tiny_base_dir, tiny_tokenizer, tiny_train_config, write_jsonl

from mole_lsp.engine.model_info import FIM_PRESETS, fim_tokens_of
from mole_lsp.engine.prompts import completion_prompt
from mole_lsp.lang.registry import load_registry
from training.batching import collate
from training.classify import Sample, select_rows, split_samples
from training.corpus.build import Options, build_corpus, file_windows, split_of
from training.encode import CompletionFormat, PromptFormat, encode_samples, fim_hole
from training.sources import BadRows

REG = load_registry()
WINDOW = "".join(CODE["python"].replace("add", f"add{i}") for i in range(6))


def _window(language: str = "python") -> Sample:
    return Sample("", WINDOW, language, None, {"kind": "completion", "source": "a.py", "line": 0})


def _fim_tokenizer():
    tok = tiny_tokenizer()
    fim = FIM_PRESETS[-1]
    tok.add_special_tokens({"additional_special_tokens": [fim.prefix, fim.suffix, fim.middle]})
    return tok, fim


@pytest.mark.parametrize("budget", [512, 24])
def test_a_window_is_the_engines_completion_prompt_with_loss_on_every_code_token(budget):
    tok = tiny_tokenizer()
    enc = encode_samples([_window()], tok, PromptFormat(tok), budget, "truncate", REG, BadRows())
    ex = enc.examples[0]
    # The one prompt function: training sees exactly what Engine.complete sends for a cursor there.
    prompt = completion_prompt(tok, WINDOW, "", "python", budget)
    assert ex.input_ids.tolist() == prompt.ids and ex.kind == "completion"
    assert {enc.label_vocab[i] for i in ex.labels.tolist()} == {"python"}
    lead = 1 if prompt.ids[0] == tok.bos_token_id and tok("a")["input_ids"][0] == tok.bos_token_id else 0
    assert ex.answer_start == lead
    tgt = collate([ex], torch.arange(len(enc.label_vocab)), tok.pad_token_id)["targets"][0]
    assert (tgt != -100).sum().item() == len(ex) - max(1, lead)
    if budget == 24:
        assert len(ex) <= 24 and not tok.decode(ex.input_ids.tolist()).startswith("def add0")


def test_fim_windows_use_the_engines_fim_prompt_then_the_middle_and_eos():
    tok, fim = _fim_tokenizer()
    assert fim_tokens_of(tok) == fim and fim_tokens_of(tiny_tokenizer()) is None
    comp = CompletionFormat(tok, fim_rate=1.0, seed=3)
    kinds = set()
    for i in range(12):
        key = f"k{i}"
        cs = comp.render(WINDOW, "python", 512, key)
        kinds.add(cs.kind)
        head, tail = cs.ids[:cs.answer_start], cs.ids[cs.answer_start:]
        assert tail[-1] == tok.eos_token_id
        middle = tok.decode(tail[:-1])
        # The prompt part is completion_prompt's FIM prompt for that cursor: the window is prefix+middle+suffix.
        pre_i, suf_i, mid_i = (tok.convert_tokens_to_ids(t) for t in (fim.prefix, fim.suffix, fim.middle))
        assert head[-1] == mid_i and pre_i in head and suf_i in head
        prefix = tok.decode(head[head.index(pre_i) + 1:head.index(suf_i)])
        suffix = tok.decode(head[head.index(suf_i) + 1:-1])
        assert prefix + middle + suffix == WINDOW
        assert completion_prompt(tok, prefix, suffix, "python", 512 - len(tail), fim).ids == head
        assert middle.strip()
    assert kinds == {"fim"}


def test_fim_holes_start_in_a_code_line_and_end_at_a_line_end():
    for seed in range(200):
        a, b = fim_hole(WINDOW, random.Random(seed))
        assert a < b <= len(WINDOW) and WINDOW[a:b].strip()
        assert b == len(WINDOW) or WINDOW[b] == "\n"
        line_start = WINDOW.rfind("\n", 0, a) + 1
        assert WINDOW[line_start:a].strip() == "" or a < WINDOW.find("\n", a)


def test_completion_rows_are_selected_by_their_language_and_mixed_by_share():
    rows = [{"kind": "completion", "code": WINDOW, "language": "py", "source": f"f{i}.py", "line": 0}
            for i in range(30)]
    rows += [{"kind": "completion", "code": "x", "language": "cobol"}, {"kind": "completion", "code": " "}]
    rows += make_rows(10, ("python",))
    bad = BadRows()
    samples = select_rows(rows, ["python"], 1 / 3, REG, bad)
    assert bad == {"unknown_language": 1, "no_text": 1}
    assert sum(s.is_completion for s in samples) == 30 and len(samples) == 40
    for share, want in ((None, 30), (0.5, 10), (0.0, 0), (1.0, 30)):
        train, val = split_samples(samples, 0.0, 0, completion_share=share)
        assert sum(s.is_completion for s in train) == want, share
        if share == 0.5:
            assert len(train) == 20
    train, _ = split_samples(samples, 0.0, 0, max_train=8, completion_share=0.25)
    assert len(train) == 8 and sum(s.is_completion for s in train) == 2


def test_the_corpus_builder_writes_windows_of_whole_lines_split_by_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        body = "".join(f'def f{i}_{k}(a, b):\n    """Add {k}."""\n    return a + b + {k}\n\n' for k in range(40))
        (src / f"m{i}.py").write_text(body)
    out = io.StringIO()
    stats = build_corpus([src], "python", out, Options(windows_per_file=2, window_chars=400, max_per_file=1))
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    windows = [r for r in rows if r["kind"] == "completion"]
    assert stats.samples["completion"] == len(windows) == 16
    for r in windows:
        text = (src / r["source"]).read_text()
        lines = text.splitlines(keepends=True)
        assert "".join(lines[r["line"]:]).startswith(r["code"]) and r["code"].endswith("\n")
        assert len(r["code"]) <= 400 and r["split"] == split_of(r["source"], 0.05)
    assert len({r["code"] for r in windows}) == len(windows)


def test_file_windows_skip_overlong_lines():
    text = "a\n" + "x" * 50 + "\nb\nc\n"
    assert file_windows(text, 10) == [(0, "a\n"), (2, "b\nc\n")]


def test_validation_reports_the_completion_loss_apart(tmp_path):
    from training.finetune import run

    langs = ["python", "go"]
    rows = make_rows(8, tuple(langs))
    rows += [{"kind": "completion", "code": CODE[lang].replace("add", f"add{i}") * 3, "language": lang,
              "source": f"{lang}{i}", "split": "heldout" if i < 2 else "train"} for lang in langs for i in range(8)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    base = tiny_base_dir(tmp_path / "base")
    cfg = tiny_train_config(base, data, tmp_path / "run", langs, max_steps=2, completion_share=0.5)
    res = run(cfg, log=quiet)
    val = res["results"]["mole"].val_history[-1][1]
    assert {"python/completion", "go/chat", "all/completion", "all/chat", "python", "all"} <= set(val)


def test_cpu_bf16_autocast_only_when_asked():
    from training.config import TrainConfig
    from training.dist import autocast

    x = torch.randn(4, 4)
    cpu = torch.device("cpu")
    for cfg, dtype in ((TrainConfig(precision="bf16"), torch.float32), (TrainConfig(precision="fp32", cpu_bf16=True),
                       torch.float32), (TrainConfig(precision="bf16", cpu_bf16=True), torch.bfloat16)):
        with autocast(cfg, cpu):
            assert (x @ x).dtype == dtype


def test_max_samples_caps_the_windows_too_unless_max_windows_says_otherwise(tmp_path):
    from training.corpus.build import main

    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"m{i}.py").write_text("".join(f"def f{i}_{k}(a):\n    return a + {k}\n\n\n" for k in range(30)))
    for extra, want in (([], 3), (["--max-windows", "5"], 5), (["--max-windows", "0"], 12)):
        out = tmp_path / f"out{len(extra)}{want}.jsonl"
        assert main([str(src), "--language", "python", "--out", str(out), "--max-samples", "3",
                     "--window-chars", "200", *extra]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert sum(r["kind"] == "completion" for r in rows) == want, extra
