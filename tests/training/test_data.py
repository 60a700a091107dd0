"""Training data: classification through the registry, the 1/3 rule, split, prompt mask, labels, batches.

Also home of the small helpers the other training tests import (tiny tokenizer, tiny base folder, rows).
"""

from __future__ import annotations

import pytest
import torch
from helpers import make_rows, tiny_tokenizer, write_jsonl

from mole_lsp.lang.detok import token_labels
from mole_lsp.lang.registry import load_registry
from training.config import TrainConfig
from training.data import (
    BadRows,
    PromptFormat,
    Sample,
    build_data,
    classify_text,
    collate,
    encode_samples,
    plan_epoch,
    select_rows,
    split_samples,
)

REG = load_registry()


def test_classification_resolves_aliases_through_registry():
    for q, a, want in [
        ("x", "```c++\nint main() { return 0; }\n```", "cpp"),
        ("x", "```c#\nclass A { void M() {} }\n```", "csharp"),
        ("x", "```js\nconsole.log(1)\n```", "javascript"),
        ("x", "```py\nprint(1)\n```", "python"),
        ("x", "~~~rs\nfn main() {}\n~~~", "rust"),
        ("x", "```C\nint x;\n```", "c"),
    ]:
        assert classify_text(q, a, REG).main_language == want, a


def test_main_language_is_the_one_with_most_code():
    a = "```bash\nls\n```\nthen\n```python\nimport os\nprint(os.listdir('.'))\n```\n"
    c = classify_text("run it", a, REG)
    assert c.main_language == "python" and set(c.code_chars) == {"shell", "python"}


def test_filtering_counts_bad_rows_and_applies_the_third_rule():
    prose = "This is a long explanation in plain English without any code at all. " * 3
    rows = [
        {"question": "q", "answer": "```python\nprint(1)\n```"},  # kept
        {"question": prose, "answer": "```python\nx = 1\n```"},  # < 1/3 code
        {"question": "Which library?", "answer": "Use requests."},  # NL only
        {"question": "q", "answer": "```\nsome code\n```"},  # untagged only
        {"question": "q", "answer": "```haskell\nmain = pure ()\n```"},  # not a paper language
        {"question": "q", "answer": "```brainfuckish\n+++\n```"},  # unknown tag
        {"question": "", "answer": "```python\nx\n```"},  # no text
        {"question": None, "answer": 3},  # wrong types
        {"answer": "```go\nfunc f() {}\n```"},  # missing field
    ]
    bad = BadRows()
    kept = select_rows(rows, ["python", "go"], 1 / 3, REG, bad)
    assert [s.language for s in kept] == ["python"]
    assert bad == {"little_code": 1, "no_code": 1, "unknown_language": 2, "other_language": 1, "no_text": 3}


def test_exactly_one_third_is_kept():
    code_body = "x=1\n"
    a = f"```python\n{code_body}```"
    # Code = the parser's code states: the opening line's newline, the body and the closing fence.
    code = 1 + len(code_body) + 3
    filler = "y" * (3 * code - len(a))
    assert len(filler) + len(a) == 3 * code
    kept = select_rows([{"question": filler, "answer": a}], ["python"], 1 / 3, REG, BadRows())
    assert len(kept) == 1
    kept = select_rows([{"question": filler + "z", "answer": a}], ["python"], 1 / 3, REG, BadRows())
    assert kept == []


def test_stratified_split_is_seeded_and_per_language():
    samples = [Sample("q", "a", lang) for lang in ("python", "rust") for _ in range(40)]
    samples += [Sample("q", "a", "go") for _ in range(3)]
    tr, va = split_samples(samples, 0.05, 42)
    count = {lang: sum(s.language == lang for s in va) for lang in ("python", "rust", "go")}
    assert count == {"python": 2, "rust": 2, "go": 1}
    assert len(tr) + len(va) == len(samples)
    tr2, va2 = split_samples(samples, 0.05, 42)
    assert [id(s) for s in va2] == [id(s) for s in va]
    # Rows that carry a split keep it.
    fixed = [Sample("q", "a", "python", "val"), Sample("q", "a", "python", "train")]
    tr, va = split_samples(fixed, 0.5, 0)
    assert va == [fixed[0]] and tr == [fixed[1]]


@pytest.mark.parametrize("chat", [True, False])
def test_answer_only_mask_and_fence_labels(chat):
    tok = tiny_tokenizer(chat)
    fmt = PromptFormat(tok, "auto")
    assert fmt.mode == ("chat" if chat else "plain")
    s = Sample("Add:\n```py\nx\n```\n?", "Here:\n```rs\nfn f() {}\n```\nok", "rust")
    enc = encode_samples([s], tok, fmt, 512, "truncate", REG, BadRows())
    ex = enc.examples[0]
    text, start = fmt.render(s.question, s.answer)
    ids, labels = token_labels(tok, text, REG)
    assert ex.input_ids.tolist() == ids
    assert [enc.label_vocab[i] for i in ex.labels.tolist()] == labels  # the one fence parser's labels
    assert "rust" in labels and "python" in labels
    # Loss covers exactly the tokens from the answer on.
    answer_text = tok.decode(ids[ex.answer_start:])
    assert answer_text.startswith("Here:") and s.question not in answer_text
    assert not tok.decode(ids[:ex.answer_start]).endswith("Here:")
    batch = collate([ex], torch.arange(len(enc.label_vocab)), tok.pad_token_id)
    tgt = batch["targets"][0]
    assert (tgt[: ex.answer_start - 1] == -100).all()
    assert tgt[ex.answer_start - 1:len(ids) - 1].tolist() == ids[ex.answer_start:]
    assert tgt[len(ids) - 1] == -100


def test_too_long_rows_are_cut_or_skipped():
    tok = tiny_tokenizer()
    fmt = PromptFormat(tok)
    long = Sample("short?", "```python\n" + "x = 1\n" * 200 + "```", "python")
    huge_q = Sample("why " * 300, "```python\nx\n```", "python")
    bad = BadRows()
    enc = encode_samples([long, huge_q], tok, fmt, 64, "truncate", REG, bad)
    assert len(enc) == 1 and len(enc.examples[0]) == 64
    assert bad == {"truncated (kept)": 1, "too_long": 1}
    bad = BadRows()
    assert len(encode_samples([long], tok, fmt, 64, "skip", REG, bad)) == 0 and bad["too_long"] == 1


def test_build_data_from_jsonl_with_broken_lines(tmp_path, capsys):
    f = write_jsonl(tmp_path / "d.jsonl", make_rows(10))
    with open(f, "a") as fh:
        fh.write("{not json\n[1, 2]\n")
    cfg = TrainConfig(data=[str(f)], languages=["python", "rust", "go"], max_length=128)
    bundle = build_data(cfg, tiny_tokenizer())
    assert len(bundle.train) + len(bundle.val) == 30
    assert {e.language for e in bundle.val.examples} == {"python", "rust", "go"}
    assert bundle.bad == {"unparsable": 1, "not_an_object": 1}
    out = capsys.readouterr().out
    assert "52,642" in out and "Python" in out  # paper Table I beside our counts


def test_batch_plan_is_independent_of_world_size():
    lengths = [5 + (i * 7) % 23 for i in range(37)]
    one = plan_epoch(lengths, micro=2, accum=4, world=1, seed=1, epoch=0)
    two = plan_epoch(lengths, micro=2, accum=2, world=2, seed=1, epoch=0)
    assert one == two
    flat = sorted(i for step in one for mb in step for i in mb)
    assert flat == list(range(37))
    # Length bucketing: within a micro-batch lengths are close.
    spread = [max(lengths[i] for i in mb) - min(lengths[i] for i in mb) for step in one for mb in step if mb]
    assert sum(spread) / len(spread) < 6


def test_config_presets_toml_sections_and_flags(tmp_path):
    from training.config import load_config

    paper = load_config(["--preset", "paper"])
    assert (paper.base, paper.r_shared, paper.r_expert, paper.lr, paper.beta1, paper.beta2) == (
        "deepseek-ai/deepseek-coder-1.3b-base", 48, 16, 1e-4, 0.9, 0.95)
    assert (paper.micro_batch * paper.grad_accum, paper.epochs, paper.warmup_ratio, paper.max_length) == (64, 2.0, 0.05, 2048)
    assert (paper.weight_decay, paper.seed, paper.split_seed, paper.val_fraction) == (0.0, 42, 42, 0.05)
    f = tmp_path / "run.toml"
    f.write_text('preset = "quick"\n[optim]\nlr = 2e-4\n[adapters]\nmethod = "alllang"\n')
    cfg = load_config(["--config", str(f), "--variant", "32+32", "--no-export", "--data", "a.jsonl,b.jsonl"])
    assert (cfg.lr, cfg.method, cfg.r_shared, cfg.r_expert, cfg.export) == (2e-4, "alllang", 32, 32, False)
    assert cfg.data == ["a.jsonl", "b.jsonl"] and cfg.max_length == 192  # the rest comes from the preset
    with pytest.raises(ValueError, match="unknown setting"):
        f.write_text("learning_rate = 1\n")
        load_config(["--config", str(f)])
    with pytest.raises(ValueError, match="method must be one of"):
        load_config(["--method", "moe"])


def test_parquet_rows_read_like_jsonl(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    from training.data import iter_rows

    rows = make_rows(2)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    assert list(iter_rows([str(tmp_path / "d.parquet")], BadRows())) == rows
    with pytest.raises(FileNotFoundError, match="no data found"):
        list(iter_rows([str(tmp_path / "missing.jsonl")], BadRows()))
