"""Reading rows: Parquet reads like JSONL, a missing source is an error."""

from __future__ import annotations

import pytest
from helpers import make_rows

from training.sources import BadRows, iter_rows


def test_parquet_rows_read_like_jsonl(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    rows = make_rows(2)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    assert list(iter_rows([str(tmp_path / "d.parquet")], BadRows())) == rows
    with pytest.raises(FileNotFoundError, match="no data found"):
        list(iter_rows([str(tmp_path / "missing.jsonl")], BadRows()))
