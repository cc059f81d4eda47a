"""The LiResNet trainer: resume reproduces an uninterrupted run; artifacts round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from convexrobust import training
from convexrobust.data import digits
from convexrobust.networks.liresnet import LiResNet
from convexrobust.training import TrainConfig, as_tensors, augment, train_liresnet


def _data(n: int = 160):
    split = digits()
    return as_tensors(split.X_train[:n], split.y_train[:n])


def _config(epochs: int) -> TrainConfig:
    return TrainConfig(arch="L1W4", epochs=epochs, batch_size=40, neck_dim=8, warmup_epochs=1)


def test_resume_continues_to_the_same_weights(tmp_path, monkeypatch):
    x, y = _data()
    straight = train_liresnet(_config(3), x, y, tmp_path / "a", progress=False)
    real_save, calls = training.save_atomic, []

    def interrupted(obj, path):  # the run dies while writing its second checkpoint
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_save(obj, path)

    monkeypatch.setattr(training, "save_atomic", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_liresnet(_config(3), x, y, tmp_path / "b", progress=False)
    monkeypatch.setattr(training, "save_atomic", real_save)
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
