"""The LiResNet trainer: resume reproduces an uninterrupted run; artifacts round-trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import interrupted_at_second_checkpoint

from convexrobust import training
from convexrobust.data import digits
from convexrobust.errors import InvalidInputError
from convexrobust.networks.liresnet import LiResNet
from convexrobust.training import TrainConfig, train_liresnet
from convexrobust.training_common import as_tensors, augment, epoch_batches


def _data(n: int = 160):
    split = digits()
    return as_tensors(split.X_train[:n], split.y_train[:n])


def _config(epochs: int) -> TrainConfig:
    return TrainConfig(arch="L1W4", epochs=epochs, batch_size=40, neck_dim=8, warmup_epochs=1)


def test_resume_continues_to_the_same_weights(tmp_path, monkeypatch):
    x, y = _data()
    straight = train_liresnet(_config(3), x, y, tmp_path / "a", progress=False)
    interrupted_at_second_checkpoint(training, lambda: train_liresnet(
        _config(3), x, y, tmp_path / "b", progress=False), monkeypatch)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["epoch"] == 1
    assert not (tmp_path / "b" / "model.pt").exists()
    resumed = train_liresnet(_config(3), x, y, tmp_path / "b", resume=True, progress=False)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    epochs = [json.loads(line)["epoch"] for line in
              (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_saved_model_loads_with_identical_outputs(tmp_path):
    x, y = _data(80)
    model = train_liresnet(_config(1), x, y, tmp_path, progress=False).eval()
    loaded = LiResNet.load(tmp_path / "model.pt").eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.lipschitz_bound() == model.lipschitz_bound()


def test_augment_is_a_seeded_crop_and_flip():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    a = augment(x, torch.Generator().manual_seed(0), pad=1, flip=True)
    b = augment(x, torch.Generator().manual_seed(0), pad=1, flip=True)
    assert torch.equal(a, b) and a.shape == x.shape
    same = augment(x, torch.Generator().manual_seed(0), pad=0, flip=False)
    assert torch.equal(same, x)  # no padding, no flip: identity
    # a crop only moves pixels (or brings in zeros): every nonzero value comes from x
    assert set(a[a != 0].tolist()) <= set(x.flatten().tolist())


def test_epoch_batches_cover_every_sample_once_and_are_seeded():
    x = torch.rand(23, 1, 8, 8)
    y = torch.arange(23)
    cpu = torch.device("cpu")

    def run(epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(epoch_batches(x, y, 5, 0, epoch, cpu))

    first = run(0)
    assert [len(yb) for _, yb in first] == [5, 5, 5, 5, 3]
    assert sorted(torch.cat([yb for _, yb in first]).tolist()) == list(range(23))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, run(0), strict=True))
    assert not torch.equal(torch.cat([yb for _, yb in first]),
                           torch.cat([yb for _, yb in run(1)]))


def _distributed_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        x, y = _data()
        train_liresnet(_config(2), x, y, Path(out), progress=False)
        dist.barrier()  # no rank tears the group down while the other is still in a collective
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # the solvers' two-process runs are checked by test_torch_data_parallel.py
def test_two_process_data_parallel_matches_single_process(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:  # a free loopback port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_distributed_worker, args=(2, port, str(tmp_path / "ddp")), nprocs=2, join=True)
    x, y = _data()
    single = train_liresnet(_config(2), x, y, tmp_path / "single", progress=False)
    parallel = LiResNet.load(tmp_path / "ddp" / "model.pt")
    for (name, a), (_, b) in zip(single.state_dict().items(), parallel.state_dict().items(),
                                 strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name


def test_any_square_side_gets_a_neck_stride_that_tiles_it():
    """The neck stride divides the side (LiResNet would refuse one that does not): 4 or 2 as
    before where they fit, else the next divisor down."""
    cfg = TrainConfig(arch="L1W4", neck_dim=8, neck_channels=2)
    for side, stride in ((8, 2), (9, 1), (15, 1), (16, 4), (18, 3), (28, 4), (30, 3), (32, 4)):
        assert training.neck_stride(side) == stride
        model = training.build_model(cfg, 1, side, 3).eval()
        assert model.config["neck_stride"] == stride
        assert model(torch.rand(2, 1, side, side)).shape == (2, 3)
        assert math.isfinite(model.lipschitz_bound("guaranteed", "backbone"))
    for bad in (0, -4, 2.5):
        with pytest.raises(InvalidInputError, match="image side"):
            training.neck_stride(bad)


def test_the_class_count_comes_from_the_dataset(tmp_path, capsys):
    """A dataset whose last class has no training image still gives a C-way model."""
    from convexrobust import cli

    x, y = _data(60)
    y = y % 3  # classes 0, 1, 2 in training
    model = train_liresnet(_config(1), x, y, tmp_path / "a", progress=False, num_classes=5)
    assert model.config["num_classes"] == 5 and model(x[:2]).shape == (2, 5)
    assert train_liresnet(_config(1), x, y, tmp_path / "b", progress=False
                          ).config["num_classes"] == 3  # no class list: max(y) + 1
    for bad, match in ((2, r"labels must lie in 0\.\.1"), (1, "num_classes"),
                       (True, "num_classes")):
        with pytest.raises(InvalidInputError, match=match):
            train_liresnet(_config(1), x, y, tmp_path / "c", progress=False, num_classes=bad)

    images = (x.numpy() * 255).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x_train=images, y_train=y.numpy(), x_test=images[:4],
             y_test=np.array([0, 1, 2, 3]), classes=np.array(["a", "b", "c", "d"]))
    assert cli.main(["--quiet", "--threads", "1", "train-liresnet", "--data",
                     str(tmp_path / "d.npz"), "--arch", "L1W4", "--epochs", "1", "--neck-dim",
                     "8", "--out", str(tmp_path / "cli")]) == 0, capsys.readouterr().err
    assert LiResNet.load(tmp_path / "cli" / "model.pt").config["num_classes"] == 4
