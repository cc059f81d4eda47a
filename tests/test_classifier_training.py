"""The PreActResNet18 trainer (SGD and SAM): SAM's step is the gradient at the ascended point,
batch-norm statistics move once per step, resume reproduces an uninterrupted run, bad options
are typed errors, and the command line trains and reports."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import interrupted_at_second_checkpoint
from torch import nn

from convexrobust import classifier_training
from convexrobust.classifier_training import (
    ClassifierConfig,
    accuracy,
    sam_step,
    train_classifier,
)
from convexrobust.cli import main
from convexrobust.data import digits
from convexrobust.errors import InvalidInputError
from convexrobust.networks import PreActResNet18
from convexrobust.training_common import as_tensors


def _data(n: int = 96):
    split = digits()
    return as_tensors(split.X_train[:n], split.y_train[:n])


def _config(epochs: int, sam_rho: float = 0.0) -> ClassifierConfig:
    return ClassifierConfig(data="digits", width=2, head_hidden=8, epochs=epochs, batch_size=32,
                            sam_rho=sam_rho)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def test_sam_steps_with_the_gradient_at_the_ascended_point():
    model = _mlp()
    x = torch.randn(10, 3, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    rho, lr = 0.3, 0.5
    # by hand: g at w, w + ρ g/‖g‖, the gradient there, a plain step from w
    probe = copy.deepcopy(model)
    grads = torch.autograd.grad(F.cross_entropy(probe(x), y), list(probe.parameters()))
    norm = torch.sqrt(sum(g.square().sum() for g in grads))
    with torch.no_grad():
        for p, g in zip(probe.parameters(), grads, strict=True):
            p.add_(rho * g / norm)
    ascended = torch.autograd.grad(F.cross_entropy(probe(x), y), list(probe.parameters()))
    expected = [p.detach() - lr * g for p, g in zip(model.parameters(), ascended, strict=True)]
    loss = sam_step(model, torch.optim.SGD(model.parameters(), lr=lr), x, y, rho)
    assert torch.isclose(loss, F.cross_entropy(_mlp()(x), y))  # the loss at w
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-12)
    # the ascent matters: an SGD step lands elsewhere
    sgd = _mlp()
    sam_step(sgd, torch.optim.SGD(sgd.parameters(), lr=lr), x, y, 0.0)
    assert any(not torch.allclose(a, b) for a, b in zip(sgd.parameters(), model.parameters(),
                                                          strict=True))


def test_sam_moves_batch_norm_statistics_once_per_step():
    torch.manual_seed(0)
    model = PreActResNet18(num_classes=3, in_channels=1, width=2, head_hidden=4)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))
    reference = copy.deepcopy(model)
    reference(x)  # one training-mode forward pass at w
    sam_step(model, torch.optim.SGD(model.parameters(), lr=0.1), x, y, 0.05)
    for (name, a), (_, b) in zip(model.named_buffers(), reference.named_buffers(), strict=True):
        if "running" in name:
            torch.testing.assert_close(a, b, msg=name)
    momenta = {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert momenta == {0.1}  # restored


@pytest.mark.parametrize("sam_rho", [0.0, 0.05])
def test_resume_continues_to_the_same_weights(tmp_path, monkeypatch, sam_rho):
    x, y = _data()
    straight = train_classifier(_config(3, sam_rho), x, y, tmp_path / "a", progress=False)
    interrupted_at_second_checkpoint(classifier_training, lambda: train_classifier(
        _config(3, sam_rho), x, y, tmp_path / "b", progress=False), monkeypatch)
    assert not (tmp_path / "b" / "model.pt").exists()
    resumed = train_classifier(_config(3, sam_rho), x, y, tmp_path / "b", resume=True,
                               progress=False)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    epochs = [json.loads(line)["epoch"] for line in
              (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    loaded = PreActResNet18.load(tmp_path / "b" / "model.pt").eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), resumed.eval()(x))


def test_training_learns_digits(tmp_path):
    split = digits()
    x, y = as_tensors(split.X_train, split.y_train)
    x_test, y_test = as_tensors(split.X_test, split.y_test)
    cfg = ClassifierConfig(data="digits", width=4, epochs=3, batch_size=64)
    model = train_classifier(cfg, x, y, tmp_path, progress=False, x_val=x_test, y_val=y_test)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]
    assert log[-1]["val_accuracy"] == accuracy(model, x_test, y_test)
    assert accuracy(model, x_test, y_test) > 0.3  # chance is 0.1


@pytest.mark.parametrize("field, value", [
    ("width", 0), ("epochs", 1.5), ("batch_size", True), ("warmup_epochs", -1), ("lr", 0.0),
    ("lr", float("nan")), ("momentum", 1.0), ("weight_decay", -1e-4), ("sam_rho", -0.1)])
def test_bad_options_are_typed_errors(field, value):
    cfg = ClassifierConfig(**{field: value})
    with pytest.raises(InvalidInputError, match=field):
        cfg.check()
    x, y = _data(8)
    with pytest.raises(InvalidInputError, match=field):
        train_classifier(cfg, x, y, "unused", progress=False)


def test_images_must_be_a_batch_with_one_label_each():
    x, y = _data(8)
    with pytest.raises(InvalidInputError, match="images"):
        train_classifier(_config(1), x[0], y, "unused", progress=False)
    with pytest.raises(InvalidInputError, match="labels"):
        train_classifier(_config(1), x, y[:4], "unused", progress=False)


def test_command_line_trains_and_reports(tmp_path, capsys):
    out = tmp_path / "sam"
    assert main(["train-preact", "--data", "digits", "--width", "2", "--epochs", "1",
                 "--sam-rho", "0.05", "--out", str(out), "--quiet"]) == 0
    assert "SAM, width 2, features 16" in capsys.readouterr().out
    assert PreActResNet18.load(out / "model.pt").config["width"] == 2
    assert main(["train-preact", "--data", "digits", "--width", "0", "--out",
                 str(tmp_path / "bad")]) == 1
    assert "width must be a positive integer" in capsys.readouterr().err


def test_an_unusable_device_is_a_typed_error():
    x, y = _data(8)
    with pytest.raises(InvalidInputError, match="device"):
        train_classifier(_config(1), x, y, "unused", progress=False, device="nope")
