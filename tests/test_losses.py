"""The loss table (convexrobust/problems/losses.py): every proximal map is the minimiser it
claims to be (its exact optimality condition, and Clarabel on the prox problem itself), and a
loss without one says so with a typed error."""

import cvxpy as cp
import numpy as np
import pytest
import torch

import convexrobust as cr
from convexrobust.problems.losses import LOSSES, get_loss, relu_envelope


def _prox_by_clarabel(objective, a: np.ndarray) -> np.ndarray:
    v = cp.Variable(a.shape[0])
    cp.Problem(cp.Minimize(objective(v) + 0.5 * cp.sum_squares(v - a))).solve(
        solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    return v.value


@pytest.mark.parametrize("step", [1e-3, 0.1, 1.0, 10.0])
@pytest.mark.parametrize("classes", [2, 3, 7])
def test_pairwise_hinge_prox_meets_its_optimality_condition(step, classes):
    # v = prox(a) ⇔ a − v ∈ step·∂h(v), ∂h(v) = {Σ_{c≠y} α_c (e_c − e_y)} with α_c ∈ [0, 1],
    # α_c = 1 where the hinge 1 − v_y + v_c is positive and 0 where it is negative
    gen = torch.Generator().manual_seed(classes)
    a = 2 * torch.randn(40, classes, generator=gen, dtype=torch.float64)
    a[0] = 0.0  # ties at the breakpoints
    a[1, 0], a[1, 1:] = 1.0, 0.0  # margins exactly at the kink
    labels = torch.randint(0, classes, (40,), generator=gen)
    labels[1] = 0
    v = get_loss("hinge").pairwise_prox(a, labels, step)
    tol = 1e-12 * max(1.0, step)
    for k in range(40):
        y = int(labels[k])
        others = [c for c in range(classes) if c != y]
        alpha = (a[k, others] - v[k, others]) / step
        hinge = 1 - v[k, y] + v[k, others]
        assert bool((alpha >= -1e-9).all() and (alpha <= 1 + 1e-9).all())
        assert bool((alpha[hinge > tol] >= 1 - 1e-9).all())
        assert bool((alpha[hinge < -tol] <= 1e-9).all())
        assert abs(float((a[k, y] - v[k, y]) / step + alpha.sum())) <= 1e-9


def test_pairwise_hinge_prox_matches_clarabel(rng):
    a = torch.as_tensor(2 * rng.standard_normal((5, 4)))
    labels = torch.as_tensor(rng.integers(0, 4, 5))
    v = get_loss("hinge").pairwise_prox(a, labels, 0.3)
    for k in range(5):
        y = int(labels[k])

        def hinge(u, y=y):
            return 0.3 * sum(cp.pos(1 - u[y] + u[c]) for c in range(4) if c != y)

        assert np.abs(v[k].numpy() - _prox_by_clarabel(hinge, a[k].numpy())).max() <= 1e-5


@pytest.mark.parametrize("name", ["hinge", "squared"])
def test_entrywise_prox_is_the_minimiser(name):
    loss = get_loss(name)
    a = torch.linspace(-3, 3, 13, dtype=torch.float64)
    t = torch.where(torch.arange(13) % 2 == 0, 1.0, -1.0).to(torch.float64)
    out = loss.prox(a, t, 0.7)
    for k in range(13):
        tk = float(t[k])

        def value(v, tk=tk):
            return 0.7 * (cp.pos(1 - tk * v[0]) if name == "hinge"
                          else 0.5 * cp.square(tk - v[0]))

        assert abs(float(out[k]) - _prox_by_clarabel(value, a[k:k + 1].numpy())[0]) <= 1e-5


def test_losses_without_a_prox_say_so():
    logistic = get_loss("logistic")
    assert not logistic.has_prox and not logistic.has_pairwise_prox
    with pytest.raises(cr.InvalidInputError, match="prox"):
        logistic.prox(torch.zeros(3), torch.ones(3), 1.0)
    with pytest.raises(cr.InvalidInputError, match="pairwise prox"):
        logistic.pairwise_prox(torch.zeros(3, 3), torch.zeros(3, dtype=torch.long), 1.0)
    with pytest.raises(cr.InvalidInputError, match="unknown loss"):
        get_loss("hinge2")


@pytest.mark.parametrize(("eps", "step_r", "step_b"), [(0.3, 0.5, 0.2), (1.0, 0.05, 2.0),
                                                         (0.0, 0.3, 0.3), (2.0, 1.0, 1.0)])
def test_robust_hinge_prox_matches_clarabel(rng, eps, step_r, step_b):
    # argmin (1 − t·v + ε‖c‖)_+ + (v − r)²/2step_r + ‖c − b‖²/2step_b, row by row
    n, d = 12, 3
    r = torch.as_tensor(1.5 * rng.standard_normal((n, 1)))
    b = torch.as_tensor(rng.standard_normal((n, d)))
    b[0] = 0.0  # a zero slope
    r[1] = 5.0  # far beyond the margin: the identity
    t = torch.as_tensor(np.where(rng.random((n, 1)) < 0.5, -1.0, 1.0))
    v, c = get_loss("hinge").robust_prox(r, b, t, eps, step_r, step_b)
    for k in range(n):
        vk, ck = cp.Variable(), cp.Variable(d)
        objective = (cp.pos(1 - float(t[k, 0]) * vk + eps * cp.norm(ck))
                     + cp.square(vk - float(r[k, 0])) / (2 * step_r)
                     + cp.sum_squares(ck - b[k].numpy()) / (2 * step_b))
        cp.Problem(cp.Minimize(objective)).solve(solver="CLARABEL", tol_gap_abs=1e-11,
                                                 tol_gap_rel=1e-11, tol_feas=1e-11)
        assert abs(float(v[k, 0]) - float(vk.value)) <= 1e-5
        assert np.abs(c[k].numpy() - ck.value).max() <= 1e-5


def test_robust_prox_is_the_hinge_s_only():
    for name in ("logistic", "squared"):
        loss = get_loss(name)
        assert not loss.has_robust_prox
        with pytest.raises(cr.InvalidInputError, match="robust prox"):
            loss.robust_prox(torch.zeros(3, 1), torch.zeros(3, 2), torch.ones(3, 1), 0.1,
                             1.0, 1.0)


@pytest.mark.parametrize(("eps", "step_r", "step_b"), [(0.3, 0.5, 0.2), (1.0, 0.05, 2.0),
                                                         (0.0, 0.3, 0.3)])
def test_robust_pairwise_prox_matches_clarabel(rng, eps, step_r, step_b):
    # argmin Σ_{c≠y} (1 − (v_y − v_c) + ε‖c_y − c_c‖)_+ + ‖v − r‖²/2step_r + ‖c − b‖²/2step_b
    n, C, d = 6, 4, 3
    r = torch.as_tensor(1.5 * rng.standard_normal((n, C)))
    b = torch.as_tensor(rng.standard_normal((C, n, d)))
    r[0, 0], r[0, 1:] = 5.0, 0.0  # every margin beyond the hinge
    labels = torch.as_tensor(rng.integers(0, C, n))
    labels[0] = 0
    loss = get_loss("hinge")
    v, c, (alpha, xi) = loss.robust_pairwise_prox(r, b, labels, eps, step_r, step_b)
    assert bool((alpha >= 0).all() and (alpha <= 1).all())
    assert bool((torch.linalg.vector_norm(xi, dim=-1).T <= eps * alpha + 1e-12).all())
    for k in range(n):
        y = int(labels[k])
        vk, ck = cp.Variable(C), cp.Variable((C, d))
        hinge = sum(cp.pos(1 - vk[y] + vk[j] + eps * cp.norm(ck[y] - ck[j]))
                    for j in range(C) if j != y)
        objective = (hinge + cp.sum_squares(vk - r[k].numpy()) / (2 * step_r)
                     + cp.sum_squares(ck - b[:, k].numpy()) / (2 * step_b))
        cp.Problem(cp.Minimize(objective)).solve(solver="CLARABEL", tol_gap_abs=1e-11,
                                                 tol_gap_rel=1e-11, tol_feas=1e-11)
        assert np.abs(v[k].numpy() - vk.value).max() <= 1e-5
        assert np.abs(c[:, k].numpy() - ck.value).max() <= 1e-5
    # warm-started from its own multipliers, it stays where it is
    again = loss.robust_pairwise_prox(r, b, labels, eps, step_r, step_b, duals=(alpha, xi),
                                      max_steps=3)
    assert torch.allclose(again[0], v, atol=1e-9) and torch.allclose(again[1], c, atol=1e-9)


@pytest.mark.parametrize("name", LOSSES)
def test_zero_from_is_where_value_and_slope_vanish(name):
    """``zero_from`` promises (0, 0) at and above it at every smoothing (solvers skip those
    samples), and a loss without one is nonzero somewhere above every margin."""
    loss = get_loss(name)
    m = torch.linspace(-3.0, 3.0, 601, dtype=torch.float64)
    for smoothing in (0.0, 1e-3, 0.1, 1.0):
        value, slope = loss.value_and_slope(m, smoothing)
        if loss.zero_from is None:
            assert bool((value[m >= 2.0] != 0).any() | (slope[m >= 2.0] != 0).any())
            continue
        above = m >= loss.zero_from
        assert bool((value[above] == 0).all()) and bool((slope[above] == 0).all())
        assert bool((value[m < loss.zero_from - smoothing - 1e-9] > 0).all())


@pytest.mark.parametrize("name", LOSSES)
def test_conjugate_is_the_fenchel_dual(name):
    """``conjugate`` (used by dual certificates) satisfies Fenchel–Young, ``φ(m) ≥ s·m − φ*(s)``
    for every margin and slope in [−1, 0], with equality at the slope of φ where φ is
    differentiable; a loss without one says so with a typed error."""
    loss = get_loss(name)
    if not loss.margin:
        assert not loss.has_conjugate
        with pytest.raises(cr.InvalidInputError, match="no conjugate"):
            loss.conjugate(torch.zeros(3, dtype=torch.float64))
        return
    assert loss.has_conjugate
    m = torch.linspace(-6.0, 6.0, 241, dtype=torch.float64)[:, None]
    s = torch.linspace(-1.0, 0.0, 101, dtype=torch.float64)[None, :]
    value = loss.value_and_slope(m)[0]
    assert bool((value + 1e-12 >= s * m - loss.conjugate(s)).all())
    # outside the domain the supremum is unbounded
    assert bool(torch.isinf(loss.conjugate(torch.tensor([-1.5, 0.5], dtype=torch.float64))).all())
    away = (m - 1.0).abs().squeeze(1) > 1e-6  # the hinge's kink
    value, slope = loss.value_and_slope(m[away, 0])
    torch.testing.assert_close(value, slope * m[away, 0] - loss.conjugate(slope), atol=1e-12,
                               rtol=0)


@pytest.mark.parametrize("smoothing", [1e-3, 0.1, 1.0])
def test_relu_envelope_around_a_dual_estimate(smoothing):
    """The envelope smoothed around prox-centres θ̄ (losses module doc): around 0 it is the plain
    envelope; for every centre it lies within μ/2 below (s)_+, its slope is the maximiser θ* in
    [0, 1] and matches a central difference, and it is exact where θ* = θ̄ (the fixed point of
    the method of multipliers)."""
    s = torch.linspace(-2.0, 2.0, 401, dtype=torch.float64)
    plain = relu_envelope(s, smoothing)
    around_zero = relu_envelope(s, smoothing, center=torch.zeros_like(s))
    torch.testing.assert_close(around_zero, plain)
    for centre in (0.0, 0.3, 1.0):
        center = torch.full_like(s, centre)
        value, theta = relu_envelope(s, smoothing, center=center)
        assert bool((value <= torch.relu(s) + 1e-15).all())
        assert bool((value >= torch.relu(s) - smoothing / 2 - 1e-15).all())
        assert bool(((theta >= 0) & (theta <= 1)).all())
        h = 1e-6 * smoothing
        numeric = (relu_envelope(s + h, smoothing, center=center)[0]
                   - relu_envelope(s - h, smoothing, center=center)[0]) / (2 * h)
        torch.testing.assert_close(numeric, theta, atol=1e-5, rtol=0)
        fixed = (theta - center).abs() <= 1e-12
        torch.testing.assert_close(value[fixed], torch.relu(s)[fixed], atol=1e-15, rtol=0)
    hinge = get_loss("hinge")
    m = 1 - s
    centre = torch.full_like(s, 0.3)
    _, slope = hinge.value_and_slope(m, smoothing, center=centre)
    torch.testing.assert_close(slope, -relu_envelope(s, smoothing, center=centre)[1])
    with pytest.raises(cr.InvalidInputError, match="center or shifted"):
        relu_envelope(s, smoothing, shifted=True, center=torch.zeros_like(s))
