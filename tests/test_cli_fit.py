"""`convexrobust fit`: a convex robust classifier on a table of one's own, end to end — the model
reloads from weights alone, its records are its own certificates and attacks, and `evaluate`
on the same table reproduces them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from convexrobust import cli
from convexrobust.errors import InvalidInputError
from convexrobust.robust_model import RobustModel
from convexrobust.tabular import load_table, model_test_rows

FAST = ["--quiet", "--threads", "1", "--device", "cpu"]
PGD = ["--pgd-steps", "10", "--pgd-restarts", "1"]


def _csv(path, *, n: int = 120, classes: int = 2, label_first: bool = False):
    """``n`` rows of four columns in different units (standardisation matters) and a text
    label set by thresholds of x0 + x1/10 (a linear rule)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 4)) * np.array([1.0, 10.0, 0.1, 1.0])
    score = x[:, 0] + x[:, 1] / 10
    y = np.digitize(score, np.quantile(score, np.arange(1, classes) / classes))
    names = np.array(["low", "mid", "high"] if classes == 3 else ["no", "yes"])[y]
    header = ["label", "f0", "f1", "f2", "f3"] if label_first else ["f0", "f1", "f2", "f3",
                                                                    "label"]
    lines = [",".join(header)]
    for label, row in zip(names, x, strict=True):
        cells = [f"{v:.6f}" for v in row]
        lines.append(",".join([label, *cells] if label_first else [*cells, label]))
    path.write_text("\n".join(lines) + "\n")
    return path


def _scores(records: list[dict]) -> list[tuple]:
    return [(r["radius"], r["clean"], r["pgd"], r["certified"]) for r in records]


def test_fit_a_polynomial_head_on_a_csv_end_to_end(tmp_path, capsys):
    csv = _csv(tmp_path / "t.csv")
    out = tmp_path / "fit"
    code = cli.main([*FAST, "fit", "--data", str(csv), "--head", "polynomial", "--norm", "2",
                     "--eps", "0.5", "--out", str(out), *PGD])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "96 training and 24 test rows" in printed and "cert@0.5" in printed
    records = json.loads((out / "results.json").read_text())
    assert [r["radius"] for r in records] == [0.25, 0.5, 1.0]  # eps/2, eps, 2·eps
    assert {r["model"] for r in records} == {"polynomial-l2(0.5)"}
    for r in records:
        assert r["certified"] <= r["pgd"] <= r["clean"] and r["clean"] >= 0.8
        assert r["violation"] <= 1e-6 and r["neurons"] > 0
    assert (out / "accuracy.png").stat().st_size > 1000

    model = RobustModel.load(out / "model.pt")  # weights only: the identity extractor
    assert model.certifiable and model.lipschitz == pytest.approx(1.0, abs=1e-12)
    table = load_table(csv)
    assert model.info["classes"] == ["no", "yes"]
    np.testing.assert_allclose(model.info["mean"], table.mean)
    x, y = torch.as_tensor(table.x_test), torch.as_tensor(table.y_test)
    radii = model.certified_radius(x, y)
    correct = (model.predict(x) == y).numpy()
    for r in records:  # the records are the model's own certificates
        assert r["certified"] == float(np.mean(correct & (radii.numpy() > r["radius"])))

    # evaluate, on the same table, standardises it the same way and finds the same numbers
    assert cli.main([*FAST, "evaluate", "--model", str(out / "model.pt"), "--data", str(csv),
                     "--radii", "0.25,0.5,1", "--out", str(tmp_path / "eval"), *PGD]) == 0
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {r["model"] for r in again} == {"fit"} and _scores(again) == _scores(records)


def test_fit_a_relu_head_in_linf_on_three_classes(tmp_path, capsys):
    csv = _csv(tmp_path / "t.csv", n=150, classes=3, label_first=True)
    out = tmp_path / "fit"
    code = cli.main([*FAST, "fit", "--data", str(csv), "--label-column", "0", "--head", "relu",
                     "--norm", "inf", "--eps", "0.05", "--radii", "0,0.05", "--components",
                     "3", "--n-patterns", "10", "--out", str(out), *PGD])
    assert code == 0, capsys.readouterr().err
    records = json.loads((out / "results.json").read_text())
    assert {r["model"] for r in records} == {"relu-linf(0.05)"}
    for r in records:
        assert r["certified"] <= r["pgd"] <= r["clean"] and r["clean"] >= 0.7
    model = RobustModel.load(out / "model.pt")
    assert model.info["classes"] == ["high", "low", "mid"] and model.info["components"] == 3
    # trained at the l2 radius sqrt(D)·eps; certified in linf through l2: R_inf = R_2 / sqrt(D)
    assert model.info["feature_radius"] == pytest.approx(0.05 * math.sqrt(4), rel=1e-12)
    x = torch.as_tensor(load_table(csv, label_column=0).x_test)
    y = model.predict(x)
    torch.testing.assert_close(model.certified_radius(x, y, norm="inf"),
                               model.certified_radius(x, y, norm=2) / 2)


def test_fit_a_gated_relu_head_is_never_certified(tmp_path, capsys):
    out = tmp_path / "fit"
    code = cli.main([*FAST, "fit", "--data", str(_csv(tmp_path / "t.csv")), "--head",
                     "gated_relu", "--n-patterns", "10", "--out", str(out), *PGD])
    assert code == 0, capsys.readouterr().err
    assert "never certified" in capsys.readouterr().out
    for r in json.loads((out / "results.json").read_text()):
        assert r["model"] == "gated_relu" and r["certified"] is None
        assert r["pgd"] <= r["clean"]
    assert not RobustModel.load(out / "model.pt").certifiable


def test_fit_attacked_by_pgd_and_autoattack(tmp_path, capsys):
    pytest.importorskip("pyautoattack")
    out = tmp_path / "fit"
    code = cli.main([*FAST, "fit", "--data", str(_csv(tmp_path / "t.csv")), "--head", "relu",
                     "--n-patterns", "10", "--radii", "0.5", "--attack", "pgd,autoattack_fast",
                     "--out", str(out), *PGD])
    assert code == 0, capsys.readouterr().err
    assert "autoattack_fast@0.5" in capsys.readouterr().out
    (record,) = json.loads((out / "results.json").read_text())
    # pgd counts the points that survive every attack
    assert record["certified"] <= record["pgd"] <= record["autoattack_fast"] <= record["clean"]


def test_fit_errors_are_typed(tmp_path, capsys):
    csv = _csv(tmp_path / "t.csv")
    assert cli.main([*FAST, "fit", "--data", str(csv), "--label-column", "outcome", "--out",
                     str(tmp_path / "o")]) == 1
    assert "outcome" in capsys.readouterr().err
    for bad in (["--head", "linear"], ["--norm", "1"], ["--eps", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main([*FAST, "fit", "--data", str(csv), "--out", str(tmp_path / "o"), *bad])
        assert exit_.value.code == 2


def test_evaluate_on_a_table_uses_the_split_and_standardisation_of_fit(tmp_path, capsys):
    """`evaluate` finds the test rows `fit` held out (its --seed, --test-size and label column)
    and standardises them with the model's stored mean and scale, not with defaults."""
    csv = _csv(tmp_path / "t.csv", n=150, label_first=True)
    out = tmp_path / "fit"
    assert cli.main([*FAST, "fit", "--data", str(csv), "--label-column", "label", "--seed", "3",
                     "--test-size", "0.3", "--radii", "0,0.5", "--out", str(out), *PGD]) == 0
    records = json.loads((out / "results.json").read_text())
    model = RobustModel.load(out / "model.pt")
    assert model.info["split"] == {"label_column": "label", "test_size": 0.3, "seed": 3}
    table = load_table(csv, label_column="label", test_size=0.3, seed=3)
    x, y = model_test_rows(model, csv)
    np.testing.assert_allclose(x, table.x_test)
    np.testing.assert_array_equal(y, table.y_test)
    default = load_table(csv, label_column="label")  # the split a default reading would use
    assert len(default.y_test) != len(y)
    capsys.readouterr()
    assert cli.main([*FAST, "evaluate", "--model", str(out / "model.pt"), "--data", str(csv),
                     "--radii", "0,0.5", "--out", str(tmp_path / "eval"), *PGD]) == 0
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert _scores(again) == _scores(records)

    # the model's class list labels the rows; columns or classes it does not know are errors
    wide = tmp_path / "wide.csv"
    wide.write_text("\n".join(line + ",0" for line in csv.read_text().splitlines()) + "\n")
    with pytest.raises(InvalidInputError, match="fitted on 4 columns but"):
        model_test_rows(model, wide)
    other = tmp_path / "other.csv"
    other.write_text(csv.read_text().replace("\nyes,", "\nmaybe,"))
    with pytest.raises(InvalidInputError, match="maybe"):
        model_test_rows(model, other)
