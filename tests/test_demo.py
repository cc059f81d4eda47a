"""The demo command: its records are consistent, and a failure never leaves a broken file."""

from __future__ import annotations

import json

import pytest

from convexrobust import cli
from convexrobust.demo import DemoConfig


def test_demo_command_writes_consistent_results(tmp_path, capsys):
    code = cli.main(["--quiet", "--threads", "1", "demo", "--components", "3",
                     "--out", str(tmp_path)])
    assert code == 0
    records = json.loads((tmp_path / "results.json").read_text())
    radii = DemoConfig().radii
    models = {r["model"] for r in records}
    assert models == {"polynomial", "polynomial-l2(0.5)", "relu", "relu-l2(0.5)"}
    assert len(records) == len(models) * len(radii)
    for r in records:
        # a certificate that PGD breaks would make certified exceed pgd accuracy
        assert 0 <= r["certified"] <= r["pgd"] + 1e-12 <= r["clean"] + 1e-12 <= 1 + 1e-12
        assert r["violation"] <= 1e-4 and r["solve_time"] > 0
    by = {(r["model"], r["radius"]): r for r in records}
    # robust training at eps = 0.5 keeps more certified accuracy there than nominal training
    assert by[("polynomial-l2(0.5)", 0.5)]["certified"] >= by[("polynomial", 0.5)]["certified"]
    table = capsys.readouterr().out
    assert "cert@0.5" in table and "polynomial-l2(0.5)" in table


def test_failed_run_keeps_the_previous_results(tmp_path, monkeypatch):
    (tmp_path / "results.json").write_text("[]")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("json.dump", boom)
    with pytest.raises(KeyboardInterrupt):
        cli._write_json_atomic(tmp_path / "results.json", [{"a": 1}])
    assert (tmp_path / "results.json").read_text() == "[]"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_invalid_threads_is_a_usage_error():
    with pytest.raises(SystemExit):
        cli.main(["--threads", "0", "demo"])
