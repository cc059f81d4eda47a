"""benchmarks/retrain_preact.py on a tiny backbone and tiny stand-in CIFAR-10 data: the record
it writes, and what ``--resume`` keeps — a stage is reused only when it was made with the same
settings (a backbone's evaluation with the same radii, a head with the same β grid and solve
cap), and the PGD-trained baseline is trained again with the ReLU head it copies."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from convexrobust.networks import PreActResNet18

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

pytestmark = pytest.mark.slow  # five small runs of the whole benchmark (~1 min)


@pytest.fixture
def preact(monkeypatch, tmp_path):
    """The benchmark module with CIFAR-10 replaced by 10 random images per class (5 per class
    for the test split), and the path of a width-2 PreActResNet18."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import retrain_preact

    def fake_cifar10(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        per_class = 10 if split == "train" else 5
        rng = np.random.default_rng(0 if split == "train" else 1)
        labels = np.repeat(np.arange(10), per_class)
        images = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
        return images, labels

    monkeypatch.setattr(retrain_preact, "cifar10", fake_cifar10)
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    PreActResNet18(width=2).save(path)
    yield retrain_preact, path
    sys.modules.pop("retrain_preact", None)


def run(module, monkeypatch, capsys, backbone: Path, out: Path, *extra: str) -> tuple[dict, str]:
    argv = ["retrain_preact.py", "--backbones", f"tiny={backbone}", "--heads", "relu,polynomial",
            "--radius-scales", "1", "--validation", "30", "--select-limit", "10",
            "--select-steps", "1", "--test-limit", "20", "--pgd-steps", "2",
            "--pgd-restarts", "1", "--pgd-head-epochs", "1", "--patterns", "4",
            "--components", "4", "--solve-time-limit", "20", "--threads", "1",
            "--cache", str(out / "cache"), "--out", str(out), "--quiet", *extra]
    monkeypatch.setattr(sys, "argv", argv)
    module.main()
    return json.loads((out / "retrain-preact.json").read_text()), capsys.readouterr().out


def stages(out: str, word: str) -> set[str]:
    """The stages a run's output says it kept ("resumed from") or made again."""
    return {line.split()[0] for line in out.splitlines() if word in line}


def test_record_and_resume_keep_only_stages_of_the_same_settings(preact, monkeypatch, capsys,
                                                                 tmp_path):
    module, backbone = preact
    record, _ = run(module, monkeypatch, capsys, backbone, tmp_path, "--eps", "1,2")
    rows = {row["model"]: row for row in record["results"]}
    assert set(rows) == {"tiny", "relu-tiny@1", "polynomial-tiny@1", "pgd-head-tiny@1",
                         "relu-tiny@2", "polynomial-tiny@2", "pgd-head-tiny@2"}
    assert [r["radius"] * 255 for r in rows["tiny"]["records"]] == pytest.approx([1, 2])
    for name, row in rows.items():
        for r in row["records"]:
            assert 0 <= r["pgd"] <= r["clean"] <= 1 and 0 <= r["fgsm"] <= 1, name
    candidates = rows["relu-tiny@1"]["scales"][0]["candidates"]
    assert [c["beta"] for c in candidates] == [1e-3, 1e-2]
    first = rows

    # the same settings at one radius: the stages at 1/255 are kept, the backbone (evaluated
    # at two radii) is evaluated again
    record, out = run(module, monkeypatch, capsys, backbone, tmp_path, "--eps", "1", "--resume")
    assert stages(out, "made again") == {"tiny"}
    assert stages(out, "resumed from") == {"relu-tiny@1", "polynomial-tiny@1", "pgd-head-tiny@1"}
    rows = {row["model"]: row for row in record["results"]}
    assert [r["radius"] * 255 for r in rows["tiny"]["records"]] == pytest.approx([1])
    for name in ("relu-tiny@1", "polynomial-tiny@1", "pgd-head-tiny@1"):
        assert rows[name] == first[name]

    # another β grid: both heads are trained again, and the baseline with the ReLU head
    record, out = run(module, monkeypatch, capsys, backbone, tmp_path, "--eps", "1",
                      "--betas", "0.01", "--resume")
    assert stages(out, "made again") == {"relu-tiny@1", "polynomial-tiny@1", "pgd-head-tiny@1"}
    assert stages(out, "resumed from") == {"tiny"}
    rows = {row["model"]: row for row in record["results"]}
    assert [c["beta"] for c in rows["relu-tiny@1"]["scales"][0]["candidates"]] == [1e-2]
    assert rows["pgd-head-tiny@1"]["settings"]["betas"] == [1e-2]
    assert record["config"]["betas"] == [1e-2]

    # a report of what is kept for these settings makes nothing and discards nothing
    record, out = run(module, monkeypatch, capsys, backbone, tmp_path, "--eps", "1,2",
                      "--betas", "0.01", "--kept-only")
    assert stages(out, "left out") == {"tiny", "relu-tiny@2", "polynomial-tiny@2",
                                       "pgd-head-tiny@2"}
    assert {row["model"] for row in record["results"]} == {
        "relu-tiny@1", "polynomial-tiny@1", "pgd-head-tiny@1"}
    assert (tmp_path / "cache" / "stages" / "relu-tiny-at-2.json").is_file()

    # another backbone file under the same name: nothing is kept
    torch.manual_seed(1)
    PreActResNet18(width=2).save(backbone)
    _, out = run(module, monkeypatch, capsys, backbone, tmp_path, "--eps", "1", "--betas",
                 "0.01", "--resume")
    assert stages(out, "made again") == {"tiny", "relu-tiny@1", "polynomial-tiny@1",
                                         "pgd-head-tiny@1"}
    assert not stages(out, "resumed from")
