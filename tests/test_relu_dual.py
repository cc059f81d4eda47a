"""The weak-duality bound of the convex ReLU programs (solvers/relu_dual.py): a lower bound on
the conic optimum from ANY point and multipliers (every loss with a conjugate, binary and
pairwise, every threat), the ℓp-ball residuals it uses, the pairwise conjugates, and the
augmented Lagrangian's certificate that rests on it."""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import pytest
import torch
from conftest import three_class_data, xor_data

import convexrobust as cr
from convexrobust.problems.losses import get_loss
from convexrobust.solvers import relu_dual
from convexrobust.solvers.relu_first_order import solve_relu_torch

THREATS = [None, cr.L2(0.15), cr.Linf(0.05), cr.ThreatModel(1, 0.2)]


def _program(loss: str, threat, three: bool) -> cr.ConvexReLU:
    X, y = three_class_data(24, 3) if three else xor_data(30, 3)
    return cr.ConvexReLU(X, y, n_patterns=6, loss=loss, beta=2e-2, threat=threat, seed=0)


def _bound(program: cr.ConvexReLU, U: torch.Tensor, lam: torch.Tensor, smoothing: float
           ) -> float:
    """The module's bound on the whole data as one chunk."""
    data = program.tensors(torch.float64)
    n = program.n_samples
    G, slopes = relu_dual.loss_minorant(program, U, smoothing, data)
    cone, total = relu_dual.cone_terms(program, lam, data)
    worst = float(relu_dual.residual_norms(program, G / n, cone, total).max())
    domain = relu_dual.domain_scale(program, slopes, data)
    return relu_dual.best_scaling(
        worst, program.beta, domain, n,
        lambda theta: relu_dual.conjugate_sum(program, slopes, data, theta))[1]


@pytest.mark.parametrize("threat", THREATS, ids=["nominal", "l2", "linf", "l1"])
@pytest.mark.parametrize(("loss", "three"), [("hinge", False), ("logistic", False),
                                             ("hinge", True), ("logistic", True)])
def test_any_point_and_multipliers_bound_the_optimum(loss, threat, three):
    program = _program(loss, threat, three)
    optimum = cr.solve(program, "clarabel").objective
    C, P, db = program.n_outputs, program.n_patterns, program.Xb.shape[1]
    gen = torch.Generator().manual_seed(1)
    bounds = []
    for scale in (0.0, 0.1, 1.0):
        U = scale * torch.randn((C, 2 * P, db), generator=gen, dtype=torch.float64)
        lam = torch.rand((C, 2 * P, program.n_samples), generator=gen, dtype=torch.float64)
        for smoothing in (0.0, 0.05):
            bounds.append(_bound(program, U, scale * lam / program.n_samples, smoothing))
    assert all(math.isfinite(b) for b in bounds)
    assert max(bounds) <= optimum + 1e-9
    assert max(bounds) > 0  # the zero point alone gives a positive bound


@pytest.mark.parametrize(("loss", "threat", "three"), [
    ("logistic", cr.L2(0.15), False),
    ("hinge", cr.L2(0.15), False),
    ("logistic", cr.Linf(0.05), False),
    # pairwise (the bound of any point is tested above for every case; ~5-7 s each here)
    pytest.param("logistic", cr.Linf(0.05), True, marks=pytest.mark.slow),
    pytest.param("hinge", cr.L2(0.15), True, marks=pytest.mark.slow),
])
def test_augmented_lagrangian_certifies_its_point(loss, threat, three):
    program = _program(loss, threat, three)
    optimum = cr.solve(program, "clarabel").objective
    solution = solve_relu_torch(program, tol=1e-3, accept_inaccurate=True)
    info = solution.info
    assert info["dual_bound"] <= optimum + 1e-9
    true_gap = (solution.objective - optimum) / solution.objective
    assert info["duality_gap"] >= true_gap - 1e-9
    assert info["duality_gap"] == pytest.approx(
        (solution.objective - info["dual_bound"]) / solution.objective)
    # near an optimum the multipliers and slopes are nearly dual optimal: a useful bound
    assert info["duality_gap"] <= 0.1
    assert solution.gap_kind == "relative_stationarity"


def test_streamed_certificate_equals_the_full_batch_one():
    """The bound's sums over chunks (a short last one) add up to the full-batch bound."""
    program = _program("logistic", cr.L2(0.15), False)
    # the same iterates up to summation order, so a short budgeted run suffices
    options = {"tol": 1e-3, "max_iters": 60, "accept_inaccurate": True}
    full = solve_relu_torch(program, batch_size=None, **options)
    chunked = solve_relu_torch(program, batch_size=12, **options)
    assert chunked.info["chunks"] == 3 and full.info["chunks"] == 1
    assert chunked.info["dual_bound"] == pytest.approx(full.info["dual_bound"], rel=1e-6)


def test_squared_loss_has_no_certificate():
    X, y = xor_data(20, 3)
    program = cr.ConvexReLU(X, y, n_patterns=6, loss="squared", beta=1e-2)
    assert not relu_dual.certifiable(program)
    assert "dual_bound" not in solve_relu_torch(program, tol=1e-3).info


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_ball_residual_is_the_distance_to_the_ball(p):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 4))
    radius = np.array([0.1, 0.5, 1.0, 3.0, 10.0])[:, None]
    got = relu_dual.ball_residual(torch.as_tensor(w), torch.as_tensor(radius), p).numpy()
    for row, r, res in zip(w, radius[:, 0], got, strict=True):
        x = cp.Variable(4)
        cp.Problem(cp.Minimize(cp.sum_squares(x - row)), [cp.norm(x, p) <= r]).solve("CLARABEL")
        np.testing.assert_allclose(res, row - x.value, atol=1e-6)


@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_pairwise_conjugate_satisfies_fenchel_young(loss):
    rng = np.random.default_rng(0)
    n, C = 50, 4
    labels = torch.as_tensor(rng.integers(0, C, n))
    others = torch.ones((n, C), dtype=torch.float64)
    others[torch.arange(n), labels] = 0
    margins = torch.as_tensor(rng.normal(scale=2.0, size=(n, C))) * others
    table = get_loss(loss)
    leaf = margins.clone().requires_grad_(True)
    values = table.pairwise_torch(leaf, others)
    (slopes,) = torch.autograd.grad(values.sum(), leaf)
    # equality at the gradient (a subgradient for the hinge), inequality at any point of the domain
    tight = (slopes * margins).sum(dim=1) - table.pairwise_conjugate(slopes, others)
    np.testing.assert_allclose(tight.numpy(), values.detach().numpy(), atol=1e-10)
    other = -torch.as_tensor(rng.dirichlet(np.ones(C + 1), size=n)[:, :C]) * others
    lower = (other * margins).sum(dim=1) - table.pairwise_conjugate(other, others)
    assert bool((lower <= values.detach() + 1e-12).all())
    assert bool(torch.isinf(table.pairwise_conjugate(-1.5 * others, others)).all())
