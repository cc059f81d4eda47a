"""The loss table (convexrobust/problems/losses.py): every proximal map is the minimiser it
claims to be (its exact optimality condition, and Clarabel on the prox problem itself), and a
loss without one says so with a typed error."""

import cvxpy as cp
import numpy as np
import pytest
import torch

import convexrobust as cr
from convexrobust.problems.losses import get_loss


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
