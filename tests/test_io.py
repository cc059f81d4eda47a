"""Atomic writes: ordinary permissions, and a failed write keeps the good file."""

from __future__ import annotations

import os

import pytest

from convexrobust._io import write_atomic


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
