"""The demo command: its records are consistent, it takes a table of one's own, and a failure
never leaves a broken file."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys

import numpy as np
import pytest
import torch

from convexrobust import cli
from convexrobust._io import write_json_atomic
from convexrobust.demo_tabular import DEMO_CONFIG
from convexrobust.errors import InvalidInputError
from convexrobust.robust_model import RobustModel

HAVE_AUTOATTACK = importlib.util.find_spec("pyautoattack") is not None


@pytest.mark.slow  # the whole breast-cancer demo (~30 s); test_demo_on_a_table_of_ones_own
# and tests/test_cli_fit.py run the same tabular route on small tables by default
def test_demo_command_writes_consistent_results(tmp_path, capsys):
    code = cli.main(["--quiet", "--threads", "1", "demo", "--data", "breast-cancer",
                     "--components", "3", "--autoattack-limit", "0", "--out", str(tmp_path)])
    assert code == 0
    records = json.loads((tmp_path / "results.json").read_text())
    radii = DEMO_CONFIG.radii
    models = {r["model"] for r in records}
    assert models == {"polynomial", "polynomial-l2(0.5)", "relu", "relu-l2(0.5)"}
    assert (tmp_path / "accuracy.png").stat().st_size > 1000
    for name in models:  # each model reloads from weights alone: the identity extractor
        model = RobustModel.load(tmp_path / f"{name}.pt")
        assert model.certifiable and model.info["components"] == 3
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


def test_demo_on_a_table_of_ones_own(tmp_path, capsys):
    """A CSV path routes the demo to the tabular heads; --label-column names its labels."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((100, 3))
    labels = np.where(x[:, 0] + 0.5 * x[:, 1] > 0, "benign", "malignant")
    rows = [f"{c},{a:.5f},{b:.5f},{d:.5f}" for c, (a, b, d) in zip(labels, x, strict=True)]
    (tmp_path / "t.csv").write_text("kind,a,b,c\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    code = cli.main(["--quiet", "--threads", "1", "demo", "--data", str(tmp_path / "t.csv"),
                     "--label-column", "kind", "--components", "0", "--eps", "0.2",
                     "--radii", "0,0.2", "--autoattack-limit", "0", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    records = json.loads((out / "results.json").read_text())
    assert {r["model"] for r in records} == {"polynomial", "polynomial-l2(0.2)", "relu",
                                             "relu-l2(0.2)"}
    for r in records:
        assert r["certified"] <= r["pgd"] + 1e-12 <= r["clean"] + 1e-12
        assert r["clean"] > 0.8  # a linear rule: every head learns it
    model = RobustModel.load(out / "polynomial-l2(0.2).pt")
    assert model.info["classes"] == ["benign", "malignant"] and model.input_shape == (3,)
    assert "t.csv" in capsys.readouterr().out


def test_failed_run_keeps_the_previous_results(tmp_path, monkeypatch):
    (tmp_path / "results.json").write_text("[]")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("json.dump", boom)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(tmp_path / "results.json", [{"a": 1}])
    assert (tmp_path / "results.json").read_text() == "[]"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_invalid_threads_is_a_usage_error():
    with pytest.raises(SystemExit):
        cli.main(["--threads", "0", "demo"])


def test_main_demo_writes_records_models_and_plot(tmp_path):
    """The image demo end to end, short: PGD on every test image, AutoAttack's cheap mode on a
    stratified subset of 12 at the training radius, each record saying on how many."""
    from convexrobust.demo import DemoConfig, run_demo
    from convexrobust.robust_model import RobustModel

    attacks = ("pgd", "autoattack_fast") if HAVE_AUTOATTACK else ("pgd",)
    cfg = DemoConfig(epochs=3, components=4, grid={"beta": (1e-2,), "radius_scale": (1.0,),
                                                   "n_patterns": (10,)},
                     solver_options={"max_iters": 150}, pgd_steps=10, pgd_restarts=1,
                     attacks=attacks, autoattack_limit=12, test_limit=120)
    assert cfg.radii == (0.1, 0.3, 0.5)  # digits' own radii; other data: eps/2, eps, 2·eps
    assert cfg.autoattack_radii == (0.3,)  # the training radius
    assert DemoConfig(data="mine.npz", eps=0.2).radii == (0.1, 0.2, 0.4)
    records = run_demo(cfg, tmp_path, progress=False)
    models = ["liresnet", "liresnet+polynomial", "liresnet+relu"]
    assert [r["model"] for r in records] == [m for m in models for _ in cfg.radii]
    stored = json.loads((tmp_path / "results.json").read_text())
    keys = ("model", "radius", "clean", "pgd", "certified", "n", "n_pgd", "autoattack_fast")
    assert [{k: r.get(k) for k in keys} for r in stored] == [{k: r.get(k) for k in keys}
                                                              for r in records]
    for r in records:
        assert 0 <= r["certified"] <= r["pgd"] <= r["clean"] <= 1
        assert r["n"] == r["n_pgd"] == 120  # every image of the test subset
        if HAVE_AUTOATTACK and r["radius"] == 0.3:
            assert r["n_autoattack_fast"] == 12
            assert r["autoattack_fast"] <= r["clean_on_autoattack_subset"]
            assert r["certified_on_autoattack_subset"] <= r["autoattack_fast"]
        else:
            assert r.get("autoattack_fast") is None and "n_autoattack_fast" not in r
    assert json.loads((tmp_path / "config.json").read_text())["autoattack_limit"] == 12
    assert (tmp_path / "accuracy.png").stat().st_size > 1000
    for name in models[1:]:
        model = RobustModel.load(tmp_path / f"{name}.pt")
        assert model.certifiable and model.info["components"] == 4


def test_demo_without_pyautoattack_falls_back_to_pgd_with_a_warning(monkeypatch, caplog,
                                                                    tmp_path, capsys):
    from convexrobust.demo import DemoConfig

    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # as if not installed
    with caplog.at_level(logging.WARNING, logger="convexrobust.demo"):
        assert DemoConfig().attacks == ("pgd",)
    assert "pip install 'convexrobust[attack]'" in caplog.text and "PGD only" in caplog.text
    assert DemoConfig(autoattack_limit=0).attacks == ("pgd",)
    # named, AutoAttack is a typed error before any work, as is a limit that asks for it
    for extra in (["--attack", "pgd,autoattack"], ["--autoattack-limit", "10"]):
        assert cli.main(["--threads", "1", "demo", "--out", str(tmp_path), *extra]) == 1
        assert "pip install 'convexrobust[attack]'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_demo_options_that_do_not_apply_are_typed_errors(tmp_path, capsys):
    from convexrobust.demo import DemoConfig

    csv = tmp_path / "t.csv"
    csv.write_text("a,b,label\n" + "\n".join(f"{i},{i % 3},{i % 2}" for i in range(20)) + "\n")
    for extra, named in ((["--epochs", "3"], "--epochs"), (["--checkpoint", "m.pt"],
                                                          "--checkpoint"),
                         (["--test-limit", "5", "--head-train-limit", "5"],
                          "--head-train-limit and --test-limit")):
        assert cli.main(["--threads", "1", "demo", "--data", str(csv), *extra]) == 1
        err = capsys.readouterr().err
        assert f"{named} appl" in err and "is a table" in err
    for extra, named in ((["--attack", "pgd", "--autoattack-limit", "5"], "--autoattack-limit"),
                         (["--attack", "pgd", "--autoattack-radii", "0.3"],
                          "--autoattack-radii")):
        assert cli.main(["--threads", "1", "demo", *extra]) == 1
        assert f"{named} apply to AutoAttack" in capsys.readouterr().err
    assert cli.main(["--threads", "1", "demo", "--attack", "pgd,autoattack_fast",
                     "--autoattack-limit", "0"]) == 1
    assert "turns AutoAttack off" in capsys.readouterr().err
    with pytest.raises(InvalidInputError, match="not among the test radii"):
        DemoConfig(attacks=("autoattack_fast",), autoattack_radii=(0.2,))
    assert not any(p.name != "t.csv" for p in tmp_path.iterdir())


def test_demo_runs_on_the_global_device(monkeypatch, tmp_path):
    """--device reaches both routes (a spy stands in for the run: the device is the point)."""
    import convexrobust.demo
    import convexrobust.demo_tabular

    seen = {}

    def spy(*args, device=None, **kwargs):
        seen["device"] = device
        raise KeyboardInterrupt  # stop before any work

    monkeypatch.setattr(convexrobust.demo, "run_demo", spy)
    monkeypatch.setattr(convexrobust.demo_tabular, "run_tabular_demo", spy)
    for data in ("digits", "breast-cancer"):
        seen.clear()
        with pytest.raises(KeyboardInterrupt):
            cli.main(["--threads", "1", "demo", "--data", data, "--attack", "pgd", "--device",
                      "cpu", "--out", str(tmp_path)])
        assert seen["device"] == torch.device("cpu")


def test_cifar10_demo_starts_from_the_committed_backbone(monkeypatch, tmp_path):
    """Without --epochs the CIFAR-10 demo uses the committed LiResNet at its training radius,
    with the dataset's sample sizes; --epochs trains instead, and 0 lifts a limit (a spy stands
    in for the run, and for the data: the configuration is the point)."""
    import types

    import convexrobust.demo
    from convexrobust.demo import COMMITTED_BACKBONES, committed_backbone

    assert committed_backbone("cifar10") == COMMITTED_BACKBONES["cifar10"]  # in the checkout
    assert committed_backbone("digits") is None
    seen = {}

    def spy(cfg, out, **kwargs):
        seen["cfg"] = cfg
        raise KeyboardInterrupt  # stop before any work

    monkeypatch.setattr(convexrobust.demo, "run_demo", spy)
    monkeypatch.setattr(cli, "load", lambda *a, **k: types.SimpleNamespace(kind="images"))

    def config(*options: str) -> convexrobust.demo.DemoConfig:
        with pytest.raises(KeyboardInterrupt):
            cli.main(["--threads", "1", "demo", "--data", "cifar10", "--attack", "pgd",
                      "--out", str(tmp_path), *options])
        return seen.pop("cfg")

    cfg = config()
    assert cfg.checkpoint == str(COMMITTED_BACKBONES["cifar10"])
    assert cfg.eps == pytest.approx(36 / 255)
    assert (cfg.head_train_limit, cfg.test_limit) == (5000, 200)
    assert cfg.solver_options == {"time_limit": 90.0}
    cfg = config("--epochs", "3", "--test-limit", "0", "--head-train-limit", "100",
                 "--solve-time-limit", "0")
    assert cfg.checkpoint is None and cfg.epochs == 3
    assert (cfg.head_train_limit, cfg.test_limit) == (100, None)
    assert cfg.solver_options == {}
    assert config("--checkpoint", "mine.pt", "--eps", "0.5").checkpoint == "mine.pt"
    monkeypatch.setitem(COMMITTED_BACKBONES, "cifar10", tmp_path / "absent.pt")
    assert config().checkpoint is None  # an installed package has no benchmarks: train


def test_pgd_restarts_reach_both_routes_with_their_defaults(monkeypatch, tmp_path):
    """--pgd-restarts reaches the image and the tabular demo; without it each keeps its own
    default (a spy stands in for the run: the configuration is the point)."""
    import convexrobust.demo
    import convexrobust.demo_tabular
    from convexrobust.demo import IMAGE_PGD_RESTARTS
    from convexrobust.tabular import TabularConfig

    seen = {}

    def spy(cfg, *args, **kwargs):
        seen["restarts"] = cfg.pgd_restarts
        raise KeyboardInterrupt  # stop before any work

    monkeypatch.setattr(convexrobust.demo, "run_demo", spy)
    monkeypatch.setattr(convexrobust.demo_tabular, "run_tabular_demo", spy)
    for data, default in (("digits", IMAGE_PGD_RESTARTS),
                          ("breast-cancer", TabularConfig.pgd_restarts)):
        for extra, expected in (((), default), (("--pgd-restarts", "2"), 2)):
            with pytest.raises(KeyboardInterrupt):
                cli.main(["--threads", "1", "demo", "--data", data, "--attack", "pgd",
                          "--out", str(tmp_path), *extra])
            assert seen.pop("restarts") == expected
    assert IMAGE_PGD_RESTARTS != TabularConfig.pgd_restarts  # the test tells them apart
