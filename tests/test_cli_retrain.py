"""`convexrobust retrain` and `convexrobust evaluate` on a tiny LiResNet (digits)."""

from __future__ import annotations

import json

import pytest
import torch

from convexrobust import cli
from convexrobust.networks import LiResNet
from convexrobust.robust_model import RobustModel

FAST = ["--limit", "300", "--pgd-steps", "5", "--pgd-restarts", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = LiResNet(depth=2, width=4, num_classes=10, in_channels=1, input_size=8,
                     neck_stride=4, neck_channels=2, neck_dim=8)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    model.save(path)
    return path


def test_retrain_then_evaluate(checkpoint, tmp_path, capsys):
    out = tmp_path / "retrain"
    code = cli.main(["--quiet", "--threads", "1", "retrain", "--checkpoint", str(checkpoint),
                     "--data", "digits", "--head", "relu", "--eps", "0.05", "--beta", "1e-2",
                     "--radius-scale", "1", "--n-patterns", "8", "--radii", "0,0.05",
                     "--baseline", "--out", str(out), *FAST])
    assert code == 0
    printed = capsys.readouterr().out
    assert "certified (guaranteed K_h" in printed and "convex-relu" in printed
    records = json.loads((out / "results.json").read_text())
    assert {r["model"] for r in records} == {"original", "convex-relu", "pgd-head"}
    for r in records:
        assert r["certified"] <= r["pgd"] <= r["clean"]
    assert (out / "accuracy.png").stat().st_size > 1000
    model = RobustModel.load(out / "model.pt")
    assert model.certifiable and model.info["chosen"]["beta"] == 1e-2

    code = cli.main(["--quiet", "--threads", "1", "evaluate", "--model", str(out / "model.pt"),
                     str(checkpoint), "--data", "digits", "--radii", "0,0.05",
                     "--out", str(tmp_path / "eval"), *FAST])
    assert code == 0
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {r["model"] for r in again} == {"retrain", checkpoint.parent.name}

    def scores(rows: list[dict], name: str) -> list[tuple]:
        return [(r["radius"], r["clean"], r["pgd"], r["certified"]) for r in rows
                if r["model"] == name]

    assert scores(again, "retrain") == scores(records, "convex-relu")  # same model, same data


def test_bad_checkpoint_and_missing_bound_are_typed_errors(tmp_path, checkpoint, capsys):
    code = cli.main(["--quiet", "--threads", "1", "retrain", "--checkpoint",
                     str(tmp_path / "none.pt"), "--eps", "0.1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("convexrobust: error: no network file at")
    code = cli.main(["--quiet", "--threads", "1", "retrain", "--checkpoint", str(checkpoint),
                     "--eps", "0.1", "--lipschitz", "none", "--out", str(tmp_path), *FAST])
    err = capsys.readouterr().err
    assert code == 1 and "feature_radius" in err and err.count("\n") == 1


def test_retrain_keeps_capped_solves_and_resume_continues_them(checkpoint, tmp_path, capsys):
    """--solve-time-limit reaches the solver (a microsecond stops every solve at once);
    --resume with no limit continues the kept solves instead of starting them again."""
    out = tmp_path / "retrain"
    common = ["--quiet", "--threads", "1", "retrain", "--checkpoint", str(checkpoint),
              "--data", "digits", "--head", "polynomial", "--solver", "torch", "--eps", "0.05",
              "--beta", "1e-2", "--radius-scale", "1", "--radii", "0.05", "--out", str(out),
              *FAST]
    assert cli.main([*common, "--solve-time-limit", "1e-6", "--cache"]) == 0
    (capped,) = RobustModel.load(out / "model.pt").info["candidates"]
    assert capped["status"] == "time_limit" and capped["segments"] == 1
    assert cli.main([*common, "--resume"]) == 0
    (done,) = RobustModel.load(out / "model.pt").info["candidates"]
    assert done["segments"] == 2 and done["status"] != "time_limit"
    assert done["continued_from"] == capped["solve_time"]
    assert done["objective"] < capped["objective"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli.main([*common, "--checkpoint-every", "-1"])
    assert exited.value.code == 2 and "--checkpoint-every" in capsys.readouterr().err
