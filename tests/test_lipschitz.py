"""Guaranteed operator-norm bounds are never below the exact norm, and close to it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convexrobust.errors import InvalidInputError
from convexrobust.lipschitz import (
    conv2d_norm_bound,
    conv2d_power_iteration,
    linear_norm_bound,
    linear_power_iteration,
)


def _conv_matrix(weight, size, stride, padding) -> torch.Tensor:
    """The convolution as an explicit matrix (columns: images of the basis vectors)."""
    c_in = weight.shape[1]
    eye = torch.eye(c_in * size * size, dtype=torch.float64).reshape(-1, c_in, size, size)
    out = F.conv2d(eye, weight, stride=stride, padding=padding)
    return out.reshape(out.shape[0], -1).T


def _cases(count: int):
    rng = np.random.default_rng(0)
    for _ in range(count):
        k = int(rng.choice([1, 2, 3, 5]))
        size = int(rng.integers(max(k, 3), 9))
        yield (int(rng.integers(1, 5)), int(rng.integers(1, 5)), k, size,
               int(rng.choice([1, 2])), int(rng.integers(0, k // 2 + 2)), int(rng.integers(1e6)))




@pytest.mark.parametrize(("c_out", "c_in", "k", "size", "stride", "padding", "seed"),
                         list(_cases(200)))
def test_conv_bound_is_above_the_exact_norm(c_out, c_in, k, size, stride, padding, seed):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(c_out, c_in, k, k, generator=g, dtype=torch.float64)
    exact = float(torch.linalg.matrix_norm(_conv_matrix(weight, size, stride, padding), ord=2))
    bound = conv2d_norm_bound(weight, size, stride=stride, padding=padding)
    assert bound >= exact * (1 - 1e-12)
    # stated factor (measured on these 200 cases: stride 1 at most 1.66x, median 1.05x;
    # stride 2 at most 2.08x, the bound ignores the subsampling)
    assert bound <= (1.75 if stride == 1 else 2.25) * exact + 1e-12


@pytest.mark.parametrize("k", [2, 4])
def test_patchify_conv_bound_is_exact(k):
    weight = torch.randn(5, 3, k, k, dtype=torch.float64)
    exact = float(torch.linalg.matrix_norm(_conv_matrix(weight, 8, k, 0), ord=2))
    assert conv2d_norm_bound(weight, 8, stride=k) == pytest.approx(exact, rel=1e-9)


def test_conv_bound_is_exact_for_circular_like_cases():
    """A 1×1 convolution is the same matrix at every pixel: the bound equals its norm."""
    weight = torch.randn(4, 3, 1, 1, dtype=torch.float64)
    expected = float(torch.linalg.matrix_norm(weight[:, :, 0, 0], ord=2))
    assert conv2d_norm_bound(weight, 6) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("shape", [(3, 5), (10, 2), (7, 7), (1, 9)])
def test_dense_bound_and_power_iteration(shape):
    weight = torch.randn(*shape, dtype=torch.float64)
    exact = float(torch.linalg.svdvals(weight)[0])
    bound = linear_norm_bound(weight)
    assert exact <= bound <= exact * (1 + 1e-9)
    estimate, _ = linear_power_iteration(weight, torch.randn(shape[1], dtype=torch.float64),
                                         steps=200)
    assert float(estimate) <= bound
    assert float(estimate) == pytest.approx(exact, rel=1e-4)


@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 1), (1, 0), (2, 2)])
def test_conv_power_iteration_stays_below_the_bound(stride, padding):
    torch.manual_seed(0)  # some random weights need more than 300 steps (close singular values)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    u = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    for _ in range(300):
        estimate, u = conv2d_power_iteration(weight, u, stride=stride, padding=padding)
    exact = float(torch.linalg.matrix_norm(
        _conv_matrix(weight.detach(), 8, stride, padding), ord=2))
    assert float(estimate.detach()) <= conv2d_norm_bound(weight, 8, stride=stride, padding=padding)
    assert float(estimate.detach()) == pytest.approx(exact, rel=1e-3)
    estimate.backward()  # the surrogate is differentiable in the kernel
    assert weight.grad is not None and torch.isfinite(weight.grad).all()


def test_bad_shapes_raise():
    with pytest.raises(InvalidInputError):
        conv2d_norm_bound(torch.randn(3, 3), 8)
    with pytest.raises(InvalidInputError):
        conv2d_norm_bound(torch.randn(2, 2, 5, 5), 1)
    with pytest.raises(InvalidInputError):
        linear_norm_bound(torch.randn(2, 2, 2))
