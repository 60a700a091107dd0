"""mole_lsp/io.py: atomic writes never leave a half file or folder under the final name."""

from __future__ import annotations

import hashlib
import stat

import pytest

from mole_lsp.io import atomic_dir, atomic_write_json, atomic_write_text, read_json_object, sha256_file


def test_sha256_file_matches_hashlib_across_chunks(tmp_path):
    data = bytes(range(256)) * 1000
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=999) == hashlib.sha256(data).hexdigest()


def test_atomic_write_replaces_and_sets_mode(tmp_path):
    p = tmp_path / "sub" / "a.json"
    atomic_write_json(p, {"b": 1, "a": [2]}, mode=0o644)
    assert p.read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    atomic_write_text(p, "x")
    assert p.read_text() == "x" and list(p.parent.iterdir()) == [p]


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "a.txt"
    p.write_text("old")

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr("mole_lsp.io.os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(p, "new")
    assert p.read_text() == "old" and list(tmp_path.iterdir()) == [p]


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    target = tmp_path / "pack"
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("1")
        assert not target.exists()  # nothing visible under the final name while it is built
    assert (target / "f").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "f").write_text("half")
        raise RuntimeError("interrupted")
    assert (target / "f").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["pack"]
    with atomic_dir(target) as tmp:
        (tmp / "g").write_text("2")
    assert [p.name for p in target.iterdir()] == ["g"] and [p.name for p in tmp_path.iterdir()] == ["pack"]


@pytest.mark.parametrize("content", [None, "", "{bad", "[1, 2]", "\xff"])
def test_read_json_object_is_none_for_anything_but_an_object(tmp_path, content):
    p = tmp_path / "x.json"
    if content is not None:
        p.write_bytes(content.encode("latin-1"))
    assert read_json_object(p) is None
    p.write_text('{"a": 1}')
    assert read_json_object(p) == {"a": 1}
