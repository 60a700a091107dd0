"""The data pipeline end to end: JSONL with broken lines to encoded splits and the language table."""

from __future__ import annotations

from helpers import make_rows, tiny_tokenizer, write_jsonl

from training.config import TrainConfig
from training.data import build_data


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
