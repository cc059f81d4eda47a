"""Atomic writes: ordinary permissions, a failed write keeps the good file; the one JSON
writer; typed errors when reading torch files."""

from __future__ import annotations

import json
import os

import pytest

from convexrobust._io import append_json_line, read_torch, write_atomic, write_json_atomic
from convexrobust.errors import InvalidInputError


def test_written_file_has_ordinary_permissions(tmp_path):
    path = write_atomic(tmp_path / "a.json", lambda p: p.write_text("{}"))
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert path.read_text() == "{}"


def test_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("good")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_atomic(path, broken)
    assert path.read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_one_json_writer_keeps_the_previous_file_on_failure(tmp_path):
    path = write_json_atomic(tmp_path / "r.json", {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]} and path.read_text().endswith("\n")
    with pytest.raises(TypeError):  # not JSON: nothing is written, the old file stays
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_json_lines_are_appended_whole(tmp_path):
    path = tmp_path / "log.jsonl"
    for epoch in (1, 2, 3):
        append_json_line(path, {"epoch": epoch})
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]


def test_reading_a_missing_or_foreign_file_is_a_typed_error(tmp_path):
    with pytest.raises(InvalidInputError, match="no checkpoint"):
        read_torch(tmp_path / "none.pt", what="checkpoint")
    (tmp_path / "bad.pt").write_bytes(b"not torch")
    with pytest.raises(InvalidInputError, match="trust_pickle"):
        read_torch(tmp_path / "bad.pt", what="checkpoint")
