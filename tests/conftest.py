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
