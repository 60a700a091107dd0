"""Reading training rows: local JSONL/Parquet files, folders and globs, and Hub datasets.

Rows are dicts with ``question`` and ``answer`` (glaive-code-assistant-v3, or ``python -m training.corpus``
output, which adds ``language``/``kind``/``source``/``split``). Sources:

- local ``.jsonl`` / ``.json`` (one object per line) and ``.parquet`` files, folders of them, globs;
- ``hub:OWNER/NAME[@REVISION]`` -- a Hub dataset whose parquet files are fetched with huggingface_hub
  (the ``datasets`` package is not needed).

Broken lines are counted in :class:`BadRows` by reason and skipped, never fatal.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HUB_PREFIX = "hub:"
ROW_SUFFIXES = (".jsonl", ".json", ".parquet")


class BadRows(Counter):
    """Counts of skipped rows by reason (no_text, no_code, little_code, unknown_language, ...)."""

    def summary(self) -> str:
        if not self:
            return "bad rows: none"
        return "bad rows: " + ", ".join(f"{k} {v}" for k, v in sorted(self.items()))


def read_jsonl(path: Path, bad: BadRows) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON-lines file; unparsable lines and non-objects are counted in ``bad``."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad["unparsable"] += 1
                continue
            if isinstance(row, dict):
                yield row
            else:
                bad["not_an_object"] += 1


def read_parquet(path: Path, bad: BadRows) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet file as dicts (needs pyarrow)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # optional: only Parquet sources need it
        raise RuntimeError(f"reading {path} needs pyarrow (pip install pyarrow)") from e
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=4096):
        yield from batch.to_pylist()


def files_of(spec: str) -> list[Path]:
    """Row files named by ``spec``: a file, a folder (searched recursively) or a glob."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.suffix in ROW_SUFFIXES and f.is_file())
    if p.is_file():
        return [p]
    hits = sorted(Path(x) for x in glob.glob(os.path.expanduser(spec), recursive=True))
    return [h for h in hits if h.is_file()]


def hub_parquet_files(repo_id: str, revision: str | None = None, offline: bool = False) -> list[Path]:
    """Download (or find cached) the parquet files of a Hub dataset; train split files first."""
    from huggingface_hub import HfApi, hf_hub_download

    from mole_lsp.paths import hub_endpoint

    api = HfApi(endpoint=hub_endpoint())
    names = [n for n in api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
             if n.endswith(".parquet")]
    if not names:
        # Datasets stored as JSON get an automatic parquet conversion under this ref.
        revision = "refs/convert/parquet"
        names = [n for n in api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
                 if n.endswith(".parquet")]
    return [Path(hf_hub_download(repo_id, n, repo_type="dataset", revision=revision,
                                 endpoint=hub_endpoint(), local_files_only=offline)) for n in sorted(names)]


def iter_rows(sources: Sequence[str], bad: BadRows, max_rows: int | None = None,
              offline: bool = False) -> Iterator[dict[str, Any]]:
    """Rows of every source in order; missing sources raise (a typo should not train on nothing)."""
    for spec in sources:
        if spec.startswith(HUB_PREFIX):
            repo, _, rev = spec[len(HUB_PREFIX):].partition("@")
            files = hub_parquet_files(repo, rev or None, offline)
        else:
            files = files_of(spec)
        if not files:
            raise FileNotFoundError(f"no data found at {spec!r} (expected .jsonl/.parquet files, a folder or hub:REPO)")
        n = 0
        for f in files:
            reader = read_parquet if f.suffix == ".parquet" else read_jsonl
            for row in reader(f, bad):
                yield row
                n += 1
                if max_rows is not None and n >= max_rows:
                    break
            if max_rows is not None and n >= max_rows:
                break
