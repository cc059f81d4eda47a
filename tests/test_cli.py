"""The `convexrobust` command: global options in either position, examples in every --help,
exit codes, reading networks as TorchScript archives or state_dicts of a named class, --data
as a name or a path (images of one's own through every network command, tables through fit
and evaluate, the wrong kind a typed error), and --attack."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from convexrobust import cli
from convexrobust.data import CIFAR10_CLASSES
from convexrobust.errors import InvalidInputError
from convexrobust.networks import LiResNet
from convexrobust.networks.registry import TorchScriptNetwork, load_network
from convexrobust.robust_model import RobustModel

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.* is deprecated:DeprecationWarning")

#: Each subcommand with the fewest arguments it parses.
REQUIRED = {"demo": [], "fit": ["--data", "t.csv", "--out", "o"],
            "retrain": ["--checkpoint", "c.pt", "--eps", "0.1", "--out", "o"],
            "evaluate": ["--model", "m.pt", "--radii", "0.1"], "train-liresnet": ["--out", "o"],
            "train-preact": ["--out", "o"], "certify": ["--checkpoint", "c.pt"]}
FAST = ["--limit", "120", "--pgd-steps", "2", "--pgd-restarts", "1", "--radii", "0,0.05"]
MODULE = "convexrobust_test_tiny"
SOURCE = '''
import torch
from torch import nn


class Tiny(nn.Module):
    """Digits (8x8) -> width ReLU features -> num_classes scores."""

    def __init__(self, num_classes: int = 10, width: int = 6):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU())
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))

    @torch.jit.export
    def features(self, x):
        return self.body(x)


class NoFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(x.flatten(1))


def make_tiny():
    return Tiny()
'''


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The module MODULE (classes Tiny, NoFeatures; function make_tiny), importable by name."""
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    module = __import__(MODULE)
    yield module
    sys.modules.pop(MODULE, None)


@pytest.fixture
def files(tiny, tmp_path):
    """One Tiny's weights as a TorchScript archive, a state_dict and a checkpoint dict."""
    torch.manual_seed(0)
    net = tiny.Tiny(num_classes=10, width=5).eval()
    paths = {"net": net, "script": tmp_path / "script.pt", "state": tmp_path / "state.pt",
             "checkpoint": tmp_path / "checkpoint.pt"}
    torch.jit.save(torch.jit.script(net), paths["script"])
    torch.save(net.state_dict(), paths["state"])
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, paths["checkpoint"])
    return paths


# ------------------------------------------------------------------ options and help
def test_the_tests_cover_every_subcommand():
    usage = cli.build_parser().format_usage()
    assert set(re.search(r"\{([a-z,-]+)\}", usage).group(1).split(",")) == set(REQUIRED)


@pytest.mark.parametrize("command", list(REQUIRED))
def test_global_options_go_before_or_after_the_subcommand(command):
    parser = cli.build_parser()
    args = REQUIRED[command]
    default = parser.parse_args([command, *args])
    assert (default.threads, default.quiet, default.verbose) == (os.cpu_count() or 1, False,
                                                                False)
    assert default.device == ("cuda" if torch.cuda.is_available() else "cpu")
    before = parser.parse_args(["--threads", "3", "--device", "cpu", "--quiet", "-v", command,
                                *args])
    after = parser.parse_args([command, *args, "--threads", "3", "--device", "cpu", "--quiet",
                               "--verbose"])
    for ns in (before, after):
        assert (ns.threads, ns.device, ns.quiet, ns.verbose) == (3, "cpu", True, True)
    # before and after: the later one (after the subcommand) wins; flags stay set
    both = parser.parse_args(["--threads", "3", "--device", "meta", "-v", command, *args,
                              "--threads", "2", "--device", "cpu"])
    assert (both.threads, both.device, both.verbose) == (2, "cpu", True)


@pytest.mark.parametrize("command", list(REQUIRED))
def test_every_subcommand_help_shows_examples_that_parse(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "global options" in text and "--device" in text
    examples = text.split("examples:\n", 1)[1]
    lines = [line.split(" #")[0] for line in examples.replace("\\\n", " ").splitlines()
             if line.strip().startswith("convexrobust ")]
    assert lines and all(command in shlex.split(line) for line in lines)
    parser = cli.build_parser()
    for line in lines:
        assert parser.parse_args(shlex.split(line)[1:]).command == command


# ------------------------------------------------------------------ exit codes
def test_a_typed_error_exits_1_with_one_line_and_no_traceback(tmp_path, capsys):
    code = cli.main(["certify", "--checkpoint", str(tmp_path / "none.pt"), "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("convexrobust: error: no LiResNet file")
    assert "Traceback" not in err


def test_verbose_adds_the_traceback_of_a_typed_error(tmp_path, capsys):
    code = cli.main(["-v", "--threads", "1", "certify", "--checkpoint", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and "InvalidInputError" in err
    assert err.splitlines()[-1].startswith("convexrobust: error: no LiResNet file")


def test_an_unknown_device_is_a_typed_error(capsys):
    assert cli.main(["--threads", "1", "certify", "--checkpoint", "c.pt",
                     "--device", "nonsense"]) == 1
    assert "unknown device 'nonsense'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["retrain"], ["certify", "--checkpoint", "c", "--bogus"],
                                  ["--threads", "0", "certify", "--checkpoint", "c"]])
def test_a_usage_error_exits_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert "convexrobust" in capsys.readouterr().err


def test_any_other_exception_keeps_its_traceback(monkeypatch):
    def broken(cls, path, map_location="cpu"):
        raise RuntimeError("a bug")

    monkeypatch.setattr(LiResNet, "load", classmethod(broken))
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["--threads", "1", "certify", "--checkpoint", "c.pt"])


def test_success_exits_0_and_reads_the_device_option(tmp_path, capsys):
    torch.manual_seed(0)
    LiResNet(depth=1, width=2, num_classes=10, in_channels=1, input_size=8, neck_stride=4,
             neck_channels=2, neck_dim=4).save(tmp_path / "model.pt")
    assert cli.main(["certify", "--checkpoint", str(tmp_path / "model.pt"), "--device", "cpu",
                     "--threads", "1", "--eps", "0.1", "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert 0 <= report["vra"]["0.1"] <= report["clean_accuracy"] <= 1
    assert "clean accuracy" in capsys.readouterr().out


# ------------------------------------------------------------------ loading networks
def test_torchscript_round_trip(files):
    x = torch.rand(7, 1, 8, 8)
    model = load_network(files["script"])
    assert isinstance(model, TorchScriptNetwork) and not model.training
    torch.testing.assert_close(model(x), files["net"](x), rtol=0, atol=0)
    torch.testing.assert_close(model.features(x), files["net"].features(x), rtol=0, atol=0)
    # it pickles (as its archive), so a RobustModel built on it can be saved
    path = files["script"].parent / "pickled.pt"
    torch.save(model, path)
    torch.testing.assert_close(torch.load(path, weights_only=False)(x), model(x), rtol=0, atol=0)


def test_torchscript_without_features_says_how_to_add_them(tiny, tmp_path):
    torch.jit.save(torch.jit.script(tiny.NoFeatures()), tmp_path / "s.pt")
    with pytest.raises(InvalidInputError, match="@torch.jit.export"):
        load_network(tmp_path / "s.pt").features(torch.rand(2, 1, 8, 8))


@pytest.mark.parametrize("kwargs", ['{"num_classes": 10, "width": 5}', {"width": 5}])
@pytest.mark.parametrize("kind", ["state", "checkpoint"])
def test_model_class_round_trip(files, kwargs, kind):
    model = load_network(files[kind], model_class=f"{MODULE}:Tiny", model_kwargs=kwargs)
    assert type(model).__name__ == "Tiny" and not model.training
    x = torch.rand(7, 1, 8, 8)
    torch.testing.assert_close(model(x), files["net"](x), rtol=0, atol=0)


@pytest.mark.parametrize(("spec", "kwargs", "message"), [
    ("no_colon", None, "not of the form package.module:Class"),
    ("no_such_module_xyz:Tiny", None, "cannot import module 'no_such_module_xyz'"),
    (f"{MODULE}:Missing", None, "has no attribute 'Missing'; its nn.Module classes: "
                                "NoFeatures, Tiny"),
    (f"{MODULE}:make_tiny", None, "is a function, not a torch.nn.Module subclass"),
    (f"{MODULE}:Tiny", "[10]", "must be a JSON object"),
    (f"{MODULE}:Tiny", "{num_classes: 10}", "are not JSON"),
    (f"{MODULE}:Tiny", '{"depth": 3}', "unexpected keyword argument 'depth'"),
    (f"{MODULE}:Tiny", None, r"size mismatch for body\.1\.weight"),  # width 6, file has 5
    (f"{MODULE}:NoFeatures", None, "missing keys: head.bias, head.weight; unexpected keys: "
                                   "body.1.bias, body.1.weight, fc.bias, fc.weight;"),
])
def test_bad_model_class_is_a_typed_error(files, spec, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        load_network(files["state"], model_class=spec, model_kwargs=kwargs)


def test_model_kwargs_need_a_model_class(files):
    with pytest.raises(InvalidInputError, match="need a model class"):
        load_network(files["state"], model_kwargs='{"width": 5}')


def test_unreadable_files_name_every_format_tried(files, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a network")
    with pytest.raises(InvalidInputError) as err:
        load_network(garbage)
    assert "tried, in order: (1) TorchScript archive: RuntimeError" in str(err.value)
    assert "; (2) torch.save file: " in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InvalidInputError, match="state_dict with no architecture.*--model-class"):
        load_network(files["state"])
    torch.save(files["net"], tmp_path / "pickled.pt")
    with pytest.raises(InvalidInputError, match="Weights only load failed.*--trust-pickle"):
        load_network(tmp_path / "pickled.pt")
    assert type(load_network(tmp_path / "pickled.pt", trust_pickle=True)).__name__ == "Tiny"
    with pytest.raises(InvalidInputError, match="no network file at"):
        load_network(tmp_path / "missing.pt")


# ------------------------------------------------------------------ through the command
def test_evaluate_scores_a_torchscript_and_a_state_dict_of_one_net_alike(files, tmp_path):
    out = tmp_path / "eval"
    code = cli.main(["--quiet", "--threads", "1", "evaluate", "--model", str(files["script"]),
                     str(files["state"]), "--model-class", f"{MODULE}:Tiny", "--model-kwargs",
                     '{"width": 5}', "--data", "digits", "--out", str(out), *FAST,
                     "--device", "cpu"])
    assert code == 0
    rows = json.loads((out / "results.json").read_text())

    def scores(name: str) -> list[tuple]:
        return [(r["radius"], r["clean"], r["pgd"]) for r in rows if r["model"] == name]

    assert scores("script") == scores("state") and len(scores("script")) == 2


@pytest.mark.parametrize("source", ["script", "state"])
def test_retrain_takes_a_torchscript_or_a_model_class(files, tmp_path, source, capsys):
    out = tmp_path / "retrain"
    load = (["--checkpoint", str(files["script"])] if source == "script" else
            ["--checkpoint", str(files["state"]), "--model-class", f"{MODULE}:Tiny",
             "--model-kwargs", '{"width": 5}', "--feature-module", "fc"])
    code = cli.main(["--quiet", "--threads", "1", "retrain", *load, "--head", "relu",
                     "--eps", "0.05", "--lipschitz", "none", "--feature-radius", "0.05",
                     "--beta", "1e-2", "--radius-scale", "1", "--n-patterns", "4",
                     "--out", str(out), *FAST])
    assert code == 0, capsys.readouterr().err
    assert "empirical only" in capsys.readouterr().out
    for row in json.loads((out / "results.json").read_text()):
        assert row["pgd"] <= row["clean"]
    if source == "state":  # a class of one's own is pickled ...
        with pytest.raises(InvalidInputError, match="--trust-pickle"):
            load_network(out / "model.pt")
        robust = load_network(out / "model.pt", trust_pickle=True)
    else:  # ... a TorchScript backbone is stored as its archive: nothing to unpickle
        robust = load_network(out / "model.pt")
        assert isinstance(robust.extractor.model, TorchScriptNetwork)
    assert isinstance(robust, RobustModel)
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(robust.extractor(x), files["net"].features(x), rtol=0, atol=0)




# ------------------------------------------------------------------ --data: a name or a path
def _images(path, n_train: int = 60, n_test: int = 30, shape=(3, 12, 12), classes: int = 3):
    """An npz of uint8 images (n, C, H, W) whose class sets the brightness of channel 0."""
    rng = torch.Generator().manual_seed(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = torch.arange(n) % classes
        x = torch.randint(0, 120, (n, *shape), generator=rng)
        x[:, 0] += (60 * y).reshape(-1, *([1] * (len(shape) - 1)))
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x.to(torch.uint8).numpy(), y.numpy()
    np.savez(path, **arrays)
    return path


@pytest.fixture
def table(tmp_path):
    """A CSV of 40 rows, 3 numeric columns and a text label in the last column."""
    rows = ["a,b,c,label"] + [f"{i % 7},{(i * 3) % 5},{i / 10},{'yes' if i % 2 else 'no'}"
                              for i in range(40)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "t.csv"


def test_images_of_ones_own_flow_through_every_network_command(tmp_path, capsys):
    """An npz of 3-channel 12x12 images in 3 classes: train-liresnet builds the LiResNet from
    its shape and class count; certify, retrain and evaluate read it; --data-path is --data."""
    data = _images(tmp_path / "imgs.npz")
    lir = tmp_path / "lir"
    common = ["--quiet", "--threads", "1", "--device", "cpu"]
    assert cli.main([*common, "train-liresnet", "--data", str(data), "--arch", "L1W4",
                     "--epochs", "1", "--neck-dim", "4", "--batch-size", "32", "--eps", "0.1",
                     "--out", str(lir)]) == 0, capsys.readouterr().err
    model = LiResNet.load(lir / "model.pt")
    assert (model.config["in_channels"], model.config["input_size"],
            model.config["num_classes"]) == (3, 12, 3)
    reports = []
    for option in ("--data", "--data-path"):
        path = tmp_path / f"vra{option}.json"
        assert cli.main([*common, "certify", "--checkpoint", str(lir / "model.pt"), option,
                         str(data), "--eps", "0.1", "--json", str(path)]) == 0
        reports.append(json.loads(path.read_text()))
    assert reports[0] == reports[1] and 0 <= reports[0]["vra"]["0.1"] <= 1
    out = tmp_path / "retrain"
    assert cli.main([*common, "retrain", "--checkpoint", str(lir / "model.pt"), "--data",
                     str(data), "--head", "relu", "--eps", "0.05", "--beta", "1e-2",
                     "--radius-scale", "1", "--n-patterns", "4", "--components", "4",
                     "--out", str(out), *FAST]) == 0, capsys.readouterr().err
    assert cli.main([*common, "evaluate", "--model", str(out / "model.pt"), "--data",
                     str(data), "--out", str(tmp_path / "eval"), *FAST]) == 0
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert [r["radius"] for r in rows] == [0.0, 0.05]
    for r in rows:
        assert r["certified"] <= r["pgd"] <= r["clean"]


def test_the_wrong_kind_of_data_is_a_typed_error_naming_the_command_that_takes_it(
        tmp_path, table, capsys):
    torch.manual_seed(0)
    checkpoint = tmp_path / "model.pt"
    LiResNet(depth=1, width=2, num_classes=10, in_channels=1, input_size=8, neck_stride=4,
             neck_channels=2, neck_dim=4).save(checkpoint)
    common = ["--quiet", "--threads", "1"]
    for argv in (["train-liresnet", "--data", str(table), "--out", str(tmp_path / "o")],
                 ["retrain", "--checkpoint", str(checkpoint), "--data", str(table), "--eps",
                  "0.1", "--out", str(tmp_path / "o")],
                 ["certify", "--checkpoint", str(checkpoint), "--data", str(table)]):
        assert cli.main([*common, *argv]) == 1
        err = capsys.readouterr().err
        assert "is a table, not images" in err and f"convexrobust fit --data {table}" in err
    images = _images(tmp_path / "imgs.npz")
    assert cli.main([*common, "fit", "--data", str(images), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "holds images, not a table" in err and f"convexrobust demo --data {images}" in err
    # images of another shape than the checkpoint takes
    assert cli.main([*common, "certify", "--checkpoint", str(checkpoint), "--data",
                     str(images)]) == 1
    assert "takes images of shape (1, 8, 8)" in capsys.readouterr().err
    # a LiResNet takes square images
    wide = _images(tmp_path / "wide.npz", shape=(1, 8, 12))
    assert cli.main([*common, "train-liresnet", "--data", str(wide), "--out",
                     str(tmp_path / "o")]) == 1
    assert "takes square images" in capsys.readouterr().err
    # --data-path is --data PATH: naming two datasets is an error
    assert cli.main([*common, "certify", "--checkpoint", str(checkpoint), "--data", "digits",
                     "--data-path", str(images)]) == 1
    assert "--data-path is the older spelling of --data PATH" in capsys.readouterr().err
    # a label column is for tables
    assert cli.main([*common, "evaluate", "--model", str(checkpoint), "--data", "digits",
                     "--label-column", "y", "--radii", "0"]) == 1
    assert "label_column applies to CSV/TSV tables" in capsys.readouterr().err


# ------------------------------------------------------------------ --attack
@pytest.mark.parametrize("command", ["demo", "fit", "retrain", "evaluate"])
def test_unknown_attacks_are_a_usage_error_listing_the_choices(command, capsys):
    from convexrobust.evaluation import ATTACKS

    args = cli.build_parser().parse_args([command, *REQUIRED[command], "--attack",
                                          "pgd,autoattack,pgd"])
    assert args.attack == ("pgd", "autoattack")
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, *REQUIRED[command], "--attack", "pgd,cw"])
    assert exit_.value.code == 2
    assert f"unknown attack 'cw': choose from {', '.join(ATTACKS)}" in capsys.readouterr().err


def test_autoattack_without_its_package_fails_before_any_work(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # as if not installed
    code = cli.main(["--threads", "1", "fit", "--data", str(tmp_path / "missing.csv"),
                     "--attack", "pgd,autoattack", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "pip install 'convexrobust[attack]'" in err  # not the missing file
    assert cli.main(["--threads", "1", "fit", "--data", str(tmp_path / "missing.csv"),
                     "--out", str(tmp_path / "o")]) == 1
    assert "no file or folder" in capsys.readouterr().err


SHARED_ZIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.zip"


@pytest.mark.skipif(not SHARED_ZIP.exists(), reason=f"CIFAR-10 zip not at {SHARED_ZIP}")
def test_cifar10_by_name_by_data_path_and_by_path_alike(tmp_path, monkeypatch):
    """--data cifar10 (found through CONVEXROBUST_CIFAR10), --data cifar10 --data-path ZIP and
    --data ZIP read the same images: a tiny LiResNet certifies alike on all three."""
    small = tmp_path / "cifar-small.zip"
    with zipfile.ZipFile(SHARED_ZIP) as source, zipfile.ZipFile(small, "w") as target:
        for split in ("train", "test"):
            for cls in CIFAR10_CLASSES:
                names = sorted(n for n in source.namelist()
                               if n.startswith(f"{split}/{cls}/") and n.endswith(".jpg"))
                for name in names[:2]:
                    target.writestr(name, source.read(name))
    monkeypatch.setenv("HOME", str(tmp_path))  # the decoded-image cache goes there
    monkeypatch.setenv("CONVEXROBUST_CIFAR10", str(small))
    torch.manual_seed(0)
    LiResNet(depth=1, width=2, num_classes=10, in_channels=3, input_size=32, neck_stride=4,
             neck_channels=2, neck_dim=4).save(tmp_path / "model.pt")
    reports = []
    for data in (["--data", "cifar10"], ["--data", "cifar10", "--data-path", str(small)],
                 ["--data", str(small)], ["--data-path", str(small)]):
        path = tmp_path / "vra.json"
        assert cli.main(["--quiet", "--threads", "1", "certify", "--checkpoint",
                         str(tmp_path / "model.pt"), *data, "--eps", "36/255", "--json",
                         str(path)]) == 0
        reports.append(json.loads(path.read_text()))
    assert all(report == reports[0] for report in reports)
