"""Tests for the neural decomposition of Bartan & Pilanci (arXiv:2101.02429)."""

from __future__ import annotations

import numpy as np
import pytest

from convexrobust.networks.decomposition import (
    Decomposition,
    _null_combination,
    neural_decomposition,
)

A, B, C = 0.09375, 0.5, 0.46875


def _lifted(weights: np.ndarray, scales: np.ndarray) -> np.ndarray:
    lifted = np.hstack([weights, np.ones((weights.shape[0], 1))])
    return (lifted * scales[:, None]).T @ lifted


def _random_network(d: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    u = rng.standard_normal((k, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    alpha = rng.uniform(0.1, 2.0, size=k)
    return u, alpha


def _check_valid(dec: Decomposition, d: int) -> None:
    m = dec.scales.shape[0]
    assert dec.weights.shape == (m, d)
    assert dec.weights.dtype == np.float64 and dec.scales.dtype == np.float64
    assert np.all(np.isfinite(dec.weights)) and np.all(np.isfinite(dec.scales))
    assert np.isfinite(dec.residual)
    assert np.all(dec.scales >= 0)
    if m:
        np.testing.assert_allclose(np.linalg.norm(dec.weights, axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("d", [1, 2, 5, 20])
@pytest.mark.parametrize("k", [1, 2, 3, 7, 30])
def test_exact_reconstruction(d: int, k: int) -> None:
    rng = np.random.default_rng(1000 * d + k)
    u, alpha = _random_network(d, k, rng)
    Z = _lifted(u, alpha)
    assert np.isclose(np.trace(Z[:d, :d]), Z[d, d])

    dec = neural_decomposition(Z)
    _check_valid(dec, d)
    rank = np.linalg.matrix_rank(Z)
    assert 1 <= dec.width <= rank <= d + 1
    assert dec.width == dec.scales.shape[0]
    rel = np.linalg.norm(dec.reconstruct() - Z) / np.linalg.norm(Z)
    assert rel <= 1e-9
    assert dec.residual <= 1e-9

    # The polynomial-activation predictions of Z and of the recovered network agree.
    x = rng.standard_normal(d)
    z1, z2, z4 = Z[:d, :d], Z[:d, d], Z[d, d]
    sdp_pred = A * x @ z1 @ x + B * x @ z2 + C * z4
    proj = dec.weights @ x
    net_pred = float(dec.scales @ (A * proj**2 + B * proj + C))
    assert abs(sdp_pred - net_pred) <= 1e-9 * max(1.0, abs(sdp_pred))


def _g(v: np.ndarray) -> float:
    return float(v[:-1] @ v[:-1] - v[-1] ** 2)


@pytest.mark.parametrize("seed", range(20))
def test_pair_rotation_identity(seed: int) -> None:
    """y is G-null and y y^T + z z^T = p_i p_i^T + p_j p_j^T."""
    rng = np.random.default_rng(seed)
    d = int(rng.integers(1, 6))
    p_i = rng.standard_normal(d + 1)
    p_i[-1] *= 0.1  # G-positive
    p_j = 0.1 * rng.standard_normal(d + 1)
    p_j[-1] = 3.0 * rng.choice([-1.0, 1.0])  # G-negative
    if seed % 2:  # also cover B = p_i^T G p_j = 0 exactly
        p_i, p_j = np.eye(d + 1)[0] * 2.0, np.eye(d + 1)[d] * 0.5
    assert _g(p_i) > 0 > _g(p_j)
    y, z = _null_combination(p_i, p_j)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(z))
    assert abs(_g(y)) <= 1e-12 * (y @ y)
    np.testing.assert_allclose(
        np.outer(y, y) + np.outer(z, z), np.outer(p_i, p_i) + np.outer(p_j, p_j), atol=1e-12
    )
    assert np.isclose(_g(y) + _g(z), _g(p_i) + _g(p_j))


@pytest.mark.parametrize("d", [1, 3, 10])
@pytest.mark.parametrize("r", [1, 2, 4])
def test_generic_feasible_psd_matrix(d: int, r: int) -> None:
    """Any PSD Z with tr(Z1) = z4 (not built from neurons) decomposes exactly."""
    rng = np.random.default_rng(100 * d + r)
    F = rng.standard_normal((d + 1, r))
    Z = F @ F.T
    gap = np.trace(Z[:d, :d]) - Z[d, d]
    if gap > 0:
        Z[d, d] += gap
    else:
        Z[:d, :d] += (-gap / d) * np.eye(d)
    assert np.isclose(np.trace(Z[:d, :d]), Z[d, d])
    dec = neural_decomposition(Z)
    _check_valid(dec, d)
    assert dec.width <= np.linalg.matrix_rank(Z)
    assert np.linalg.norm(dec.reconstruct() - Z) / np.linalg.norm(Z) <= 1e-9
    assert dec.residual <= 1e-9


def test_single_neuron_recovered_exactly() -> None:
    u = np.array([[0.6, -0.8]])
    dec = neural_decomposition(_lifted(u, np.array([2.5])))
    assert dec.width == 1
    np.testing.assert_allclose(dec.weights, u, atol=1e-12)
    np.testing.assert_allclose(dec.scales, [2.5], atol=1e-12)


def test_width_bounded_by_rank_in_low_rank_case() -> None:
    rng = np.random.default_rng(0)
    d, k = 20, 4
    u, alpha = _random_network(d, k, rng)
    Z = _lifted(u, alpha)
    dec = neural_decomposition(Z)
    assert dec.width <= np.linalg.matrix_rank(Z) == k
    assert dec.residual <= 1e-9


def test_scale_invariance() -> None:
    rng = np.random.default_rng(3)
    u, alpha = _random_network(5, 8, rng)
    Z = _lifted(u, alpha)
    for factor in (1e-150, 1e150):
        dec = neural_decomposition(factor * Z)
        _check_valid(dec, 5)
        assert dec.residual <= 1e-9
        rel = np.linalg.norm(dec.reconstruct() - factor * Z) / np.linalg.norm(factor * Z)
        assert rel <= 1e-9


def test_negative_eigenvalue_noise_gives_no_nan() -> None:
    rng = np.random.default_rng(7)
    d = 6
    u, alpha = _random_network(d, 3, rng)  # rank 3, so Z has a 4-dim null space
    Z = _lifted(u, alpha)
    _, vecs = np.linalg.eigh(Z)
    noise = -1e-12 * sum(np.outer(v, v) for v in vecs[:, :4].T)
    noisy = Z + noise + 1e-15 * rng.standard_normal(Z.shape)  # also slightly asymmetric
    assert np.linalg.eigvalsh(0.5 * (noisy + noisy.T)).min() < 0
    dec = neural_decomposition(noisy)
    _check_valid(dec, d)
    assert dec.width <= 3
    assert np.linalg.norm(dec.reconstruct() - Z) / np.linalg.norm(Z) <= 1e-9


def test_zero_matrix() -> None:
    for d in (1, 4):
        dec = neural_decomposition(np.zeros((d + 1, d + 1)))
        assert dec.width == 0
        assert dec.weights.shape == (0, d)
        assert dec.scales.shape == (0,)
        assert dec.residual == 0.0
        assert dec.reconstruct().shape == (d + 1, d + 1)


@pytest.mark.parametrize("excess", [-0.3, 0.3])
def test_trace_violation_reports_residual(excess: float) -> None:
    rng = np.random.default_rng(11)
    d = 4
    u, alpha = _random_network(d, 3, rng)
    Z = _lifted(u, alpha)
    # Add a PSD term that breaks tr(Z1) = z4 (excess > 0: tr Z1 too big; < 0: z4 too big).
    e = np.zeros(d + 1)
    if excess > 0:
        e[:d] = rng.standard_normal(d)
        e[:d] /= np.linalg.norm(e[:d])
    else:
        e[d] = 1.0
    Zbad = Z + abs(excess) * np.outer(e, e)
    dec = neural_decomposition(Zbad)
    _check_valid(dec, d)
    assert dec.residual > 1e-3
    assert dec.width <= np.linalg.matrix_rank(Zbad)


def test_identity_violating_trace() -> None:
    d = 3  # tr Z1 = 3 != z4 = 1
    dec = neural_decomposition(np.eye(d + 1))
    _check_valid(dec, d)
    assert dec.residual > 0.1


def test_pure_one_sign_matrices() -> None:
    dec = neural_decomposition(np.diag([1.0, 2.0, 0.0]))  # only G-positive directions
    _check_valid(dec, 2)
    assert dec.width == 0 and dec.residual > 0.99
    dec = neural_decomposition(-np.eye(3))  # negative definite: PSD part is zero
    _check_valid(dec, 2)
    assert dec.width == 0


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), np.zeros(3), np.array([[np.nan, 0], [0, 1]])])
def test_invalid_input(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        neural_decomposition(bad)
