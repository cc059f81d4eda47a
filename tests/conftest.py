"""Shared test setup: one torch thread (two cores, and Clarabel/SCS use threads too)."""

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def xor_data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A small nonlinear binary problem: the sign of x0·x1."""
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, d))
    return X, (X[:, 0] * X[:, 1] > 0).astype(int)


def three_class_data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes split along x0 (not linearly separable in the bias-free lift)."""
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, d))
    return X, np.digitize(X[:, 0] + 0.5 * X[:, 1] ** 2, [-0.3, 0.6])


def interrupted_at_second_checkpoint(module: object, train: object, monkeypatch) -> None:
    """Run ``train()`` with ``module.save_atomic`` dying while it writes the second checkpoint
    (a run stopped mid-write), then restore the real writer."""
    real_save, calls = module.save_atomic, []

    def interrupted(obj, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_save(obj, path)

    monkeypatch.setattr(module, "save_atomic", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train()
    monkeypatch.setattr(module, "save_atomic", real_save)
