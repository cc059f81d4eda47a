"""The programs of MATH.md §1–4: solvers agree, recovered networks reproduce the convex model,
and robust margins are the true worst cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import three_class_data, xor_data

import convexrobust as cr
from convexrobust.attacks import margin, pgd_attack
from convexrobust.problems.patterns import arrangement_size, enumerate_patterns

RELU_CASES = [
    (loss, threat)
    for loss in ("squared", "hinge", "logistic")
    for threat in (None, cr.L2(0.1), cr.Linf(0.05))
]
POLY_CASES = [
    (loss, threat, linf)
    for loss in ("hinge", "squared", "logistic")
    for threat, linf in ((None, "diagonal"), (cr.L2(0.2), "diagonal"), (cr.Linf(0.1), "diagonal"),
                         (cr.Linf(0.1), "containment"))
]


def _relative_gap(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def _agree(program: cr.ConvexProgram) -> cr.Solution:
    """Solve with Clarabel and SCS; their recomputed objectives must agree to 1e-3."""
    clarabel = cr.solve(program, "clarabel")
    scs = cr.solve(program, "scs")
    assert clarabel.status == scs.status == "optimal"
    assert _relative_gap(clarabel.objective, scs.objective) <= 1e-3
    # Clarabel's tol 1e-6 bounds its residuals relative to the data's scale (not absolutely):
    # 1e-5 is what that accuracy guarantees here (observed: at most 1.7e-7)
    assert clarabel.violation <= 1e-5 and scs.violation <= 1e-4
    # the program's own objective is the one the solver optimised
    assert _relative_gap(clarabel.objective, clarabel.solver_objective) <= 1e-5
    return clarabel


@pytest.mark.parametrize(("loss", "threat"), RELU_CASES)
def test_relu_binary_solvers_agree(loss, threat):
    X, y = xor_data(30, 3)
    _agree(cr.ConvexReLU(X, y, n_patterns=12, loss=loss, beta=1e-2, threat=threat))


@pytest.mark.parametrize("loss", ["squared", "hinge", "logistic"])
@pytest.mark.parametrize("threat", [None, cr.L2(0.1)])
def test_relu_multiclass_solvers_agree(loss, threat):
    X, y = three_class_data(24, 2)
    _agree(cr.ConvexReLU(X, y, n_patterns=8, loss=loss, beta=1e-2, threat=threat))


def test_relu_regression_solvers_agree():
    X, _ = xor_data(30, 2)
    y = X[:, 0] ** 2 - X[:, 1]
    program = cr.ConvexReLU(X, y, n_patterns=10, loss="squared", beta=1e-3, threat=cr.L2(0.05))
    assert program.targets.task == "regression"
    _agree(program)


@pytest.mark.parametrize(("loss", "threat", "linf"), POLY_CASES)
def test_polynomial_binary_solvers_agree(loss, threat, linf):
    X, y = xor_data(20, 2)
    _agree(cr.ConvexPolynomial(X, y, loss=loss, beta=1e-2, threat=threat, linf=linf))


@pytest.mark.parametrize("threat", [None, pytest.param(cr.L2(0.1), marks=pytest.mark.slow)])
def test_polynomial_multiclass_solvers_agree(threat):
    X, y = three_class_data(18, 2)
    _agree(cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=threat))


def test_polynomial_regression_solvers_agree():
    X, _ = xor_data(20, 2)
    y = X[:, 0] * X[:, 1] + 0.5 * X[:, 0]
    _agree(cr.ConvexPolynomial(X, y, loss="squared", beta=1e-3, threat=cr.L2(0.1)))


def test_mosek_without_licence_is_a_clear_error():
    X, y = xor_data(20, 2)
    program = cr.ConvexReLU(X, y, n_patterns=5)
    try:
        cr.solvers.conic.check_mosek()
    except cr.SolverUnavailableError:
        with pytest.raises(cr.SolverUnavailableError, match="licen|not installed"):
            cr.solve(program, "mosek")
        assert "mosek" not in cr.available_solvers()
        return
    solution = cr.solve(program, "mosek")  # licensed here: it must agree with Clarabel
    assert _relative_gap(solution.objective, cr.solve(program, "clarabel").objective) <= 1e-4


def test_auto_picks_an_available_solver():
    X, y = xor_data(20, 2)
    solution = cr.solve(cr.ConvexReLU(X, y, n_patterns=5), "auto")
    assert solution.solver in cr.available_solvers()


# ---------------------------------------------------------------- exactness of recovery
def test_enumerated_relu_program_is_the_nonconvex_optimum():
    """With every pattern, the recovered network's non-convex objective equals the convex
    optimum, and no gradient-trained network of the same family does better."""
    r = np.random.default_rng(3)
    X = r.uniform(-1, 1, (8, 1))
    y = np.sin(3 * X[:, 0])
    beta = 1e-2
    Xb = np.hstack([X, np.ones((8, 1))])
    patterns = enumerate_patterns(Xb)
    assert patterns.count == arrangement_size(8, 2) - 1
    program = cr.ConvexReLU(X, y, loss="squared", beta=beta, patterns=patterns)
    solution = cr.solve(program, "clarabel")
    net = solution.network()
    Xt = torch.as_tensor(X)
    yt = torch.as_tensor(y)

    def nonconvex(net: cr.TwoLayerReLU) -> torch.Tensor:
        fit = 0.5 * (net(Xt)[:, 0] - yt).square().mean()
        weights = net.weight.square().sum() + net.bias.square().sum() + net.output.square().sum()
        return fit + 0.5 * beta * weights

    assert float(nonconvex(net).detach()) == pytest.approx(solution.objective, rel=1e-6)
    assert np.allclose(net(Xt).detach().numpy(), program.training_predictions(solution.values),
                       atol=1e-6)
    for seed in range(3):  # local search from random starts never beats the global optimum
        g = torch.Generator().manual_seed(seed)
        trial = cr.TwoLayerReLU(torch.randn(12, 1, generator=g), torch.randn(12, generator=g),
                                torch.randn(12, 1, generator=g) * 0.3)
        opt = torch.optim.Adam(trial.parameters(), lr=1e-2)
        for _ in range(1500):
            opt.zero_grad()
            loss = nonconvex(trial)
            loss.backward()
            opt.step()
        assert float(nonconvex(trial).detach()) >= solution.objective - 1e-6


@pytest.mark.parametrize("threat", [None, cr.L2(0.1), cr.Linf(0.05)])
def test_relu_network_reproduces_convex_predictions(threat):
    X, y = three_class_data(30, 3)
    program = cr.ConvexReLU(X, y, n_patterns=10, loss="hinge", beta=1e-2, threat=threat)
    solution = cr.solve(program, "clarabel")
    net = solution.network()
    assert net.n_neurons > 0
    out = net(torch.as_tensor(X)).detach().numpy()
    assert np.abs(out - program.training_predictions(solution.values)).max() <= 1e-6
    assert net.n_neurons <= 2 * program.n_patterns * program.n_outputs


@pytest.mark.parametrize("labels", ["binary", "multiclass"])
def test_polynomial_decomposition_reproduces_sdp_predictions(labels):
    X, y = xor_data(25, 3) if labels == "binary" else three_class_data(25, 3)
    program = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2)
    solution = cr.solve(program, "clarabel")
    net = solution.network()
    assert np.allclose(net.weight.norm(dim=1).detach().numpy(), 1.0)
    assert net.n_neurons <= 2 * program.n_outputs * (program.n_features + 1)
    X_new = np.random.default_rng(9).standard_normal((40, 3))
    sdp = program.predictions_torch(program._ztilde(solution.values), torch.as_tensor(X_new))
    assert np.abs(net(torch.as_tensor(X_new)).detach().numpy() - sdp.numpy()).max() <= 1e-6


def test_network_takes_dtype_and_device():
    X, y = xor_data(20, 2)
    solution = cr.solve(cr.ConvexPolynomial(X, y, beta=1e-2), "clarabel")
    net = solution.network(dtype=torch.float32, device="cpu")
    assert net.weight.dtype == torch.float32
    assert net(torch.as_tensor(X, dtype=torch.float32)).shape == (20, 1)


# ---------------------------------------------------------------- robust margins are exact
@pytest.mark.parametrize("norm", [2, "inf", 1])
@pytest.mark.parametrize("labels", ["binary", "multiclass"])
def test_relu_robust_margins_are_the_worst_case(norm, labels):
    """Cone constraints keep every pattern fixed on the training balls, so the network is
    affine there and the program's margin is exact: a strong attack reaches it, never below."""
    X, y = xor_data(24, 2) if labels == "binary" else three_class_data(24, 2)
    eps = 0.1
    threat = cr.ThreatModel(norm, eps)
    program = cr.ConvexReLU(X, y, n_patterns=10, loss="hinge", beta=1e-2, threat=threat)
    solution = cr.solve(program, "clarabel")
    reported = program.robust_margins(solution.values)
    net = solution.network()
    x = torch.as_tensor(X)
    target = torch.as_tensor(program.targets.labels)
    if norm == 1:  # ℓ1 ball: the worst case of an affine margin sits at a vertex ±eps·e_i
        corners = torch.cat([torch.eye(2), -torch.eye(2)]).double() * eps
        attacked = torch.stack([margin(net(x + c), target) for c in corners]).min(dim=0).values
    else:
        adv = pgd_attack(net, x, target, norm=norm, eps=eps, steps=200, restarts=3,
                         multi_targeted=labels == "multiclass")
        attacked = margin(net(adv), target)
    attacked = attacked.detach().numpy()
    assert np.all(attacked >= reported - 1e-6)  # the program's margin is a true lower bound
    assert np.allclose(attacked, reported, atol=1e-4)  # ... and it is attained


def _grid_min(fn, radius: float, norm: str, steps: int = 400) -> np.ndarray:
    """Brute-force min over a 2-D ball/box of fn(delta) (n,) evaluated on a dense grid."""
    if norm == "2":
        rr = np.sqrt(np.linspace(0, 1, steps // 4)) * radius
        th = np.linspace(0, 2 * math.pi, steps, endpoint=False)
        pts = np.stack(np.meshgrid(rr, th), -1).reshape(-1, 2)
        deltas = np.stack([pts[:, 0] * np.cos(pts[:, 1]), pts[:, 0] * np.sin(pts[:, 1])], 1)
    else:
        g = np.linspace(-radius, radius, steps // 2)
        deltas = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    return np.min([fn(d) for d in deltas], axis=0)


def test_polynomial_l2_lmi_matches_brute_force_and_sign_of_linear_term():
    """The solver's LMI slack w equals the brute-force worst case wherever the hinge is
    active. A '−(b/2)z̃2' in the LMI (seen in published code) gives w above the true minimum;
    this catches it."""
    X, y = xor_data(16, 2, seed=4)
    eps = 0.3
    program = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=cr.L2(eps))
    problem = program.to_cvxpy()
    solution = cr.solve(program, "clarabel", problem=problem)
    w = {v.name(): v for v in problem.variables()}["w0_0"].value
    net = solution.network()
    t = program.targets.values[:, 0]
    x = torch.as_tensor(X)

    def signed(delta: np.ndarray) -> np.ndarray:
        return t * net(x + torch.as_tensor(delta)).detach().numpy()[:, 0]

    brute = _grid_min(signed, eps, "2")
    trs = program.robust_margins(solution.values)[:, 0]
    assert np.all(trs <= brute + 1e-9)  # TRS is a sound minimum
    assert np.allclose(trs, brute, atol=2e-3)  # and tight (grid resolution)
    active = w < 1 - 1e-6
    assert active.sum() >= 3
    assert np.allclose(w[active], trs[active], atol=1e-5)
    # z̃2 matters in this instance: flipping its sign changes the worst case
    Zt = program._ztilde(solution.values).clone()
    Zt[:, :2, 2] *= -1
    Zt[:, 2, :2] *= -1
    flipped = program.worst_case_l2(Zt, torch.as_tensor(program.targets.values), eps)
    assert np.abs(flipped.numpy()[:, 0] - trs).max() > 1e-3


@pytest.mark.parametrize("linf", ["diagonal", "containment"])
def test_polynomial_linf_margins_are_sound(linf):
    X, y = xor_data(16, 2, seed=5)
    eps = 0.15
    program = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=cr.Linf(eps), linf=linf)
    solution = cr.solve(program, "clarabel")
    net = solution.network()
    t = program.targets.values[:, 0]
    x = torch.as_tensor(X)
    brute = _grid_min(lambda d: t * net(x + torch.as_tensor(d)).detach().numpy()[:, 0], eps,
                      "inf")
    reported = program.robust_margins(solution.values)[:, 0]
    assert np.all(reported <= brute + 1e-7)
    assert np.all(reported >= brute - 1.0)  # and not vacuous


def test_diagonal_sprocedure_is_tighter_than_containment():
    X, y = xor_data(16, 2, seed=5)
    objectives = {
        linf: cr.solve(cr.ConvexPolynomial(X, y, beta=1e-2, threat=cr.Linf(0.15), linf=linf),
                       "clarabel").objective
        for linf in ("diagonal", "containment")
    }
    # two solves at Clarabel's tol 1e-6 (objectives ≈ 0.7): each is within ~1e-6 of its optimum
    # (observed gap between the two: 0.012)
    assert objectives["diagonal"] <= objectives["containment"] + 1e-5


# ---------------------------------------------------------------- solving options and errors
def test_user_constraints_through_to_cvxpy():
    X, y = xor_data(20, 2)
    program = cr.ConvexPolynomial(X, y, beta=1e-3)
    problem = program.to_cvxpy()
    Z = {v.name(): v for v in problem.variables()}["Z0"]
    capped = type(problem)(problem.objective, problem.constraints + [Z[2, 2] <= 0.5])
    solution = cr.solve(program, "clarabel", problem=capped)
    assert solution.values["Z"][0, 2, 2] <= 0.5 + 1e-5
    assert solution.objective >= cr.solve(program, "clarabel").objective - 1e-5


def test_not_optimal_raises_unless_accepted():
    X, y = xor_data(20, 2)
    program = cr.ConvexPolynomial(X, y, threat=cr.L2(0.2))
    with pytest.raises(cr.SolverFailedError) as info:
        cr.solve(program, "clarabel", max_iters=2)
    assert info.value.status == "user_limit" and info.value.solver == "clarabel"
    solution = cr.solve(program, "clarabel", max_iters=2, accept_inaccurate=True)
    assert solution.status == "user_limit" and not solution.optimal


def test_solution_reports_what_was_done():
    X, y = xor_data(20, 2)
    solution = cr.solve(cr.ConvexReLU(X, y, n_patterns=6), "scs")
    record = solution.summary()
    assert record["solver"] == "scs" and record["status"] == "optimal"
    assert record["wall_time"] > 0 and record["iterations"] >= 1
    assert record["violation"] == solution.violation >= 0
