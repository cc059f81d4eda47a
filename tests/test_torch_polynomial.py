"""The first-order torch solver of the polynomial programs (c), (d): exact projection onto the
lifted cone, exact batched trust-region worst cases, agreement with Clarabel on every supported
family, budgets, dtypes and devices, and an O(classes) eigendecomposition count per iteration."""

from __future__ import annotations

import math
import time

import cvxpy as cp
import numpy as np
import pytest
import torch
from conftest import three_class_data, xor_data

import convexrobust as cr
from convexrobust.solvers.lifted_cone import dual_bound, project_lifted_cone
from convexrobust.solvers.polynomial_first_order import solve_polynomial_torch
from convexrobust.solvers.polynomial_objective import batched_trs
from convexrobust.trust_region import solve_trs

FAST = {"tol": 1e-5}


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def _check_against_clarabel(program: cr.ConvexPolynomial, **options: object) -> cr.Solution:
    reference = cr.solve(program, "clarabel")
    # the accelerated projected gradient solver (nominal hinge / squared programs would go to
    # ADMM under method="auto": tests/test_polynomial_admm.py)
    solution = cr.solve(program, "torch", method="apg", **(FAST | options))
    assert solution.status == "optimal" and solution.solver == "torch"
    assert _rel(solution.objective, reference.objective) <= 1e-3
    # the first-order point is feasible, hence never better than the optimum (up to Clarabel's
    # own accuracy)
    assert solution.objective >= reference.objective - 1e-5
    assert solution.violation <= 1e-8
    assert solution.info["violation_before_repair"] <= 1e-8
    if program.loss == "squared" and not solution.info["zero_certificate"]:
        assert "dual_bound" not in solution.info  # no dual bound is written for it
    else:  # a lower bound on the optimum: never above Clarabel's objective (up to its accuracy)
        assert solution.info["dual_bound"] <= reference.objective + 1e-6
    net = solution.network()
    with torch.no_grad():
        out = net(torch.as_tensor(program.X)).numpy().reshape(program.n_samples, -1)
    np.testing.assert_allclose(out, program.training_predictions(solution.values), atol=1e-6)
    return solution


# ------------------------------------------------------------------ the projection
def _cvxpy_projection(Y: np.ndarray) -> tuple[np.ndarray, float]:
    D = Y.shape[0]
    Z = cp.Variable((D, D), PSD=True)
    problem = cp.Problem(cp.Minimize(cp.norm(Z - Y, "fro")),
                         [cp.trace(Z[:D - 1, :D - 1]) == Z[D - 1, D - 1]])
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return Z.value, float(problem.value)


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_projection_is_exact_nearest_point_and_idempotent(rng):
    Y = rng.standard_normal((6, 4, 4))
    Y = torch.as_tensor(Y + Y.transpose(0, 2, 1))
    Y[0] = torch.eye(4)  # already ⪰ 0 but tr(Z1) = 3 ≠ z4
    Y[1] = -torch.eye(4)  # projects to 0
    Z, _ = project_lifted_cone(Y)
    assert float(torch.linalg.eigvalsh(Z).min()) >= -1e-12
    trace_gap = torch.diagonal(Z[:, :3, :3], dim1=1, dim2=2).sum(1) - Z[:, 3, 3]
    assert float(trace_gap.abs().max()) <= 1e-10
    again, _ = project_lifted_cone(Z)
    assert float((again - Z).abs().max()) <= 1e-10
    assert float(torch.linalg.matrix_norm(Z[1])) <= 1e-12
    for k in range(Y.shape[0]):
        point, distance = _cvxpy_projection(Y[k].numpy())
        # the distances agree to 1e-9; the points to Clarabel's accuracy (strong convexity
        # makes a 1e-12 distance error a ~1e-6 point error, so compare at 1e-5)
        assert abs(float(torch.linalg.matrix_norm(Z[k] - Y[k])) - distance) <= 1e-9
        np.testing.assert_allclose(Z[k].numpy(), point, atol=1e-5)


# ------------------------------------------------------------------ the batched TRS
@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_projection_onto_a_congruent_cone(rng):
    """With ``G = SGSᵀ`` (the preconditioned coordinates) the projection is the nearest point of
    ``{W ⪰ 0, ⟨SGSᵀ, W⟩ = 0}``; with ``G = diag(I, −1)`` the general path is the default one."""
    import cvxpy as cp

    D = 4
    G = torch.diag(torch.tensor([1.0, 1.0, 1.0, -1.0], dtype=torch.float64))
    Y = torch.as_tensor(rng.standard_normal((5, D, D)))
    Y = Y + Y.transpose(-1, -2)
    default, mu = project_lifted_cone(Y)
    general, mu_general = project_lifted_cone(Y, G=G)
    torch.testing.assert_close(general, default, rtol=0, atol=1e-10)
    torch.testing.assert_close(mu_general, mu, rtol=0, atol=1e-10)
    S = torch.eye(D, dtype=torch.float64)
    S[:3, :3] = torch.as_tensor(rng.standard_normal((3, 3))) + 2 * torch.eye(3)
    G_w = S @ G @ S.T
    W, _ = project_lifted_cone(Y, G=G_w)
    assert float(torch.linalg.eigvalsh(W).min()) >= -1e-12
    assert float((W * G_w).sum((-2, -1)).abs().max()) <= 1e-10
    for k in range(Y.shape[0]):
        V = cp.Variable((D, D), PSD=True)
        problem = cp.Problem(cp.Minimize(cp.norm(V - Y[k].numpy(), "fro")),
                             [cp.trace(G_w.numpy() @ V) == 0])
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
        assert abs(float(torch.linalg.matrix_norm(W[k] - Y[k])) - problem.value) <= 1e-8


def test_lift_congruence_whitens_the_samples(rng):
    """``S₁MS₁ = mI`` for full-rank samples (M their second moment, plus r²I for a robust
    program; m its mean eigenvalue); directions without data are floored, not inverted."""
    from convexrobust.solvers.lifted_cone import lift_congruence

    X = rng.standard_normal((200, 5)) * np.array([10.0, 3.0, 1.0, 0.3, 0.1])
    X[:, 0] += 4.0  # not centred: the second moment, not the covariance
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    S = lift_congruence(cr.ConvexPolynomial(X, y, beta=1e-2)).numpy()
    M = X.T @ X / len(X)
    np.testing.assert_allclose(S[:5, :5] @ M @ S[:5, :5], np.trace(M) / 5 * np.eye(5),
                               atol=1e-9 * np.trace(M))
    assert S[5, 5] == 1.0 and not S[:5, 5].any() and not S[5, :5].any()
    # a robust program: its worst cases reach r in every direction, so M + r²I is whitened and
    # the thin directions are stretched less
    robust = lift_congruence(cr.ConvexPolynomial(X, y, beta=1e-2, threat=cr.L2(0.5))).numpy()
    M_r = M + 0.25 * np.eye(5)
    np.testing.assert_allclose(robust[:5, :5] @ M_r @ robust[:5, :5],
                               np.trace(M_r) / 5 * np.eye(5), atol=1e-9 * np.trace(M_r))
    assert np.linalg.norm(robust[:5, :5], 2) < np.linalg.norm(S[:5, :5], 2)
    X[:, 4] = 0.0  # a direction without data
    S = lift_congruence(cr.ConvexPolynomial(X, y, beta=1e-2)).numpy()
    assert np.isfinite(S).all() and np.abs(S).max() <= 1e3


@pytest.mark.parametrize("precondition", [True, False])
def test_preconditioning_keeps_the_optimum(precondition):
    """Anisotropic features (column scales 1 to 1/8): the whitened and the plain iterations reach
    Clarabel's optimum of the robust program."""
    X, y = xor_data(20, 3, seed=2)
    X = X * np.array([1.0, 0.4, 0.125])
    program = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.05))
    _check_against_clarabel(program, precondition=precondition)


def test_batched_trs_matches_reference_solver():
    gen = torch.Generator().manual_seed(0)
    for trial in range(60):
        d = 1 + trial % 4
        A = torch.randn(d, d, generator=gen, dtype=torch.float64)
        A = A + A.T if trial % 3 else -A @ A.T
        ev, V = torch.linalg.eigh(A)
        g = torch.randn(12, d, generator=gen, dtype=torch.float64)
        if trial % 2 == 0:
            g[:6] -= (g[:6] @ V[:, :1]) * V[:, 0]  # hard / near-hard cases
        h = torch.randn(12, generator=gen, dtype=torch.float64)
        ref = solve_trs(ev, V, g, h, 0.7)
        value, dt = batched_trs(ev.expand(12, d), g @ V, h, 0.7)
        np.testing.assert_allclose(value.numpy(), ref.value_upper.numpy(), rtol=1e-10,
                                   atol=1e-10)
        assert bool((dt.norm(dim=1) <= 0.7 * (1 + 1e-12)).all())
        # warm starts (the multiplier buffer) never change the answer: guesses far below,
        # far above, at and near the root, and none (NaN), give the same values
        mult = torch.full((12, 1), math.nan, dtype=torch.float64)
        cold, _ = batched_trs(ev.expand(12, d), g @ V, h, 0.7, multiplier=mult)
        root = mult.clone()
        for guess in (root, root * (1 + 1e-3), root * 1e3 + 5.0, torch.zeros_like(root),
                      torch.where(torch.arange(12)[:, None] % 2 == 0, math.nan, root + 1.0)):
            mult.copy_(guess)
            warm, _ = batched_trs(ev.expand(12, d), g @ V, h, 0.7, multiplier=mult)
            np.testing.assert_allclose(warm.numpy(), cold.numpy(), rtol=1e-10, atol=1e-10)
            assert bool(torch.isfinite(mult).all())


def _robust_data(program: cr.ConvexPolynomial, batch_size: int | None):
    from convexrobust.problems.losses import get_loss
    from convexrobust.solvers.data_parallel import Collective, SampleStream
    from convexrobust.solvers.polynomial_objective import ObjectiveData

    act, comm = program.activation, Collective(False, torch.device("cpu"))
    arrays = {"X": program.X, "T": program.targets.values}
    stream = SampleStream(arrays, batch_size=batch_size, device=torch.device("cpu"),
                          dtype=torch.float64, collective=comm, bytes_per_sample=8)
    return ObjectiveData(stream=stream, comm=comm, radius=float(program.l2_radius),
                 loss=get_loss(program.loss),
                 beta=float(program.beta), a=float(act.a), b=float(act.b), c=float(act.c))


@pytest.mark.parametrize("loss", ["hinge", "squared", "logistic"])
def test_robust_gradient_matches_finite_differences_and_chunking(loss):
    """The eigenbasis worst case (shared ``X V``, sums rotated back) gives the Danskin gradient
    of the smoothed robust objective, identically for every chunking (scratch buffers reused
    across chunks of different sizes and across evaluations)."""
    from convexrobust.solvers.polynomial_objective import objective

    X, y = three_class_data(23, 4)
    program = cr.ConvexPolynomial(X, y, loss=loss, beta=1e-2, threat=cr.L2(0.3))
    gen = torch.Generator().manual_seed(1)
    C, D = program.n_outputs, 5
    W = torch.randn(2, C, D, D, generator=gen, dtype=torch.float64)
    W = W + W.transpose(-1, -2)
    full, chunked = _robust_data(program, None), _robust_data(program, 7)
    val, grad, _ = objective(full, W, 0.05, True)
    for _ in range(2):
        val_c, grad_c, _ = objective(chunked, W, 0.05, True)
        torch.testing.assert_close(val_c, val, rtol=1e-12, atol=1e-12)  # per output
        torch.testing.assert_close(grad_c, grad, rtol=1e-11, atol=1e-12)
    E = torch.randn(2, C, D, D, generator=gen, dtype=torch.float64)
    E = E + E.transpose(-1, -2)
    step = 1e-6
    # the per-output values: output c's depends on (Z_c, Z'_c) alone, its gradient block
    fd = (objective(full, W + step * E, 0.05, False)[0]
          - objective(full, W - step * E, 0.05, False)[0]) / (2 * step)
    torch.testing.assert_close(fd, (grad * E).sum((0, 2, 3)), rtol=1e-6, atol=1e-6)


def test_screening_keeps_objective_and_gradient():
    """Screening (rows whose dual bound at the last multiplier certifies a zero hinge are not
    solved) changes neither the objective nor its gradient, at the point of the last evaluation
    and at nearby points, and does skip rows once the model separates the data."""
    import dataclasses

    from convexrobust.solvers.polynomial_objective import objective

    X, y = three_class_data(60, 4)
    program = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.1))
    solution = solve_polynomial_torch(program, tol=1e-3, accept_inaccurate=True)
    W = torch.stack([torch.as_tensor(solution.values["Z"]), torch.as_tensor(solution.values["Zp"])])
    plain = _robust_data(program, None)
    screened = dataclasses.replace(_robust_data(program, None), screen=1.0)
    gen = torch.Generator().manual_seed(2)
    for k in range(4):
        E = torch.randn(W.shape, generator=gen, dtype=torch.float64)
        point = W + (0.0 if k < 2 else 1e-3 * k) * (E + E.transpose(-1, -2))
        for mu in (0.1, 1e-3):
            val, grad, _ = objective(plain, point, mu, True)
            val_s, grad_s, _ = objective(screened, point, mu, True)
            torch.testing.assert_close(val_s, val, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(grad_s, grad, rtol=1e-10, atol=1e-12)
    assert screened.rows_solved < 0.8 * screened.rows_total  # rows were skipped
    assert plain.rows_solved == plain.rows_total


@pytest.mark.parametrize(("threat", "batch_size"), [(cr.L2(0.1), None), (cr.L2(0.1), 13),
                                                   (None, None)])
def test_working_set_keeps_objective_and_gradient_where_its_margins_hold(threat, batch_size):
    """The working set's objective and gradient are the full ones at the point it was built
    from and near it (the pairs left out have a margin above 1), for every chunking; its rows
    are fewer; far away, where left-out pairs cross the margin, the rebuild reports them."""
    from convexrobust.solvers.polynomial_objective import objective, restrict

    X, y = three_class_data(60, 4)
    program = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=threat)
    solution = solve_polynomial_torch(program, tol=1e-3, accept_inaccurate=True)
    W = torch.stack([torch.as_tensor(solution.values["Z"]), torch.as_tensor(solution.values["Zp"])])
    data = _robust_data(program, batch_size)
    if threat is not None:
        data.screen = 1.0  # screening inside the working set too
    data.set_duals(np.where(np.arange(60)[:, None] % 7 == 0, 0.5, 0.0) * np.ones((1, 3)))
    val, grad, _ = objective(data, W, 0.1, True, full=True)  # records the margins
    with pytest.raises(cr.InvalidInputError):  # nothing to build from without margins
        restrict(_robust_data(program, batch_size), 0.2, 1.0)
    fraction, missed = restrict(data, 0.2, 1.0)
    assert 0 < fraction < 0.8 and missed == 0
    assert data.working is not None
    gen = torch.Generator().manual_seed(3)
    for k in range(3):
        E = torch.randn(W.shape, generator=gen, dtype=torch.float64)
        point = W + 1e-4 * k * (E + E.transpose(-1, -2))
        full_val, full_grad, _ = objective(data, point, 0.1, True, full=True)
        val_w, grad_w, _ = objective(data, point, 0.1, True)
        torch.testing.assert_close(val_w, full_val, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad_w, full_grad, rtol=1e-10, atol=1e-12)
    # a value-only evaluation agrees too, and so does one of some outputs alone
    torch.testing.assert_close(objective(data, W, 0.1, False)[0], val, rtol=1e-12, atol=1e-12)
    some = torch.tensor([0, 2])
    for full in (False, True):
        torch.testing.assert_close(objective(data, W[:, some], 0.1, False, full=full,
                                             outputs=some)[0], val[some], rtol=1e-12, atol=1e-12)
    with pytest.raises(cr.InvalidInputError):  # values only
        objective(data, W[:, some], 0.1, True, outputs=some)
    # at the zero network every margin is 0: the pairs left out are all missed, and then kept
    objective(data, torch.zeros_like(W), 0.1, False, full=True)
    fraction, missed = restrict(data, 0.2, 1.0)
    assert missed > 0 and fraction == 1.0
    # a set holding more than max_fraction is not used
    assert restrict(data, 0.2, 0.5)[0] == 1.0 and data.working is None


@pytest.mark.parametrize("threat", [None, cr.L2(0.1)])
def test_working_set_solves_reach_clarabel(threat, monkeypatch):
    """With the working set on for a small program (it is for large ones), the accelerated
    gradient still reaches Clarabel's optimum, and used it."""
    from convexrobust.solvers import polynomial_objective

    monkeypatch.setattr(polynomial_objective, "SCREEN_MIN_ELEMENTS", 0)
    X, y = three_class_data(80, 3)
    program = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=threat)
    solution = _check_against_clarabel(program)
    assert solution.info["working_set"] < 1.0


# ------------------------------------------------------------------ agreement with Clarabel
BINARY = [
    (loss, threat, linf)
    for loss in ("hinge", "squared", "logistic")
    for threat, linf in ((None, "diagonal"), (cr.L2(0.2), "diagonal"),
                         (cr.Linf(0.1), "containment"))
]


@pytest.mark.parametrize(("loss", "threat", "linf"), BINARY)
def test_binary_matches_clarabel(loss, threat, linf):
    X, y = xor_data(20, 2)
    _check_against_clarabel(
        cr.ConvexPolynomial(X, y, loss=loss, beta=1e-2, threat=threat, linf=linf))


@pytest.mark.parametrize("threat", [None, cr.L2(0.1)])
def test_multiclass_matches_clarabel(threat):
    X, y = three_class_data(18, 2)
    _check_against_clarabel(cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=threat))


def test_three_features_logistic_l2_matches_clarabel():
    X, y = xor_data(20, 3, seed=1)
    _check_against_clarabel(cr.ConvexPolynomial(X, y, loss="logistic", beta=1e-2,
                                                 threat=cr.L2(0.2)))


@pytest.mark.slow  # ~10 s of accelerated gradient; the binary and multi-class robust cases
# above check the same solver against Clarabel by default
def test_regression_matches_clarabel():
    X, _ = xor_data(20, 2)
    y = X[:, 0] ** 2 - X[:, 1]
    program = cr.ConvexPolynomial(X, y, loss="squared", beta=1e-3, threat=cr.L2(0.1))
    assert program.targets.task == "regression"
    _check_against_clarabel(program)


# ------------------------------------------------------------------ options and budgets
def _small_program(loss: str = "logistic") -> cr.ConvexPolynomial:
    X, y = xor_data(20, 2)
    return cr.ConvexPolynomial(X, y, loss=loss, beta=1e-2, threat=cr.L2(0.2))


def test_deterministic():
    program = _small_program(loss="squared")
    first = solve_polynomial_torch(program, seed=3, **FAST)
    second = solve_polynomial_torch(program, seed=3, **FAST)
    assert first.iterations == second.iterations
    for key in ("Z", "Zp"):
        np.testing.assert_array_equal(first.values[key], second.values[key])


def test_float32_is_close():
    program = _small_program()
    ref = solve_polynomial_torch(program, **FAST)
    single = solve_polynomial_torch(program, dtype=torch.float32)
    assert single.info["dtype"] == "float32" and single.status == "optimal"
    assert _rel(single.objective, ref.objective) <= 1e-2
    assert single.violation <= 1e-8  # the values are repaired in float64


def test_auto_precision_chooses_float32_only_for_large_programs_at_loose_tol(monkeypatch):
    """dtype="auto": float64 below FLOAT32_MIN_ELEMENTS or below float32's tolerance floor;
    float32 (repaired and judged in float64) otherwise, close to the float64 optimum."""
    from convexrobust.solvers import first_order as module

    X, y = three_class_data(40, 3)
    program = cr.ConvexPolynomial(X, y, loss="logistic", beta=1e-2, threat=cr.L2(0.1))
    reference = solve_polynomial_torch(program, tol=1e-5, accept_inaccurate=True)
    assert reference.info["dtype"] == "float64"  # small
    monkeypatch.setattr(module, "FLOAT32_MIN_ELEMENTS", 0)
    tight = solve_polynomial_torch(program, tol=1e-5, accept_inaccurate=True, max_iters=5)
    assert tight.info["dtype"] == "float64"  # below float32's floor
    loose = solve_polynomial_torch(program, tol=1e-3, accept_inaccurate=True)
    assert loose.info["dtype"] == "float32"
    assert loose.violation <= 1e-8 and _rel(loose.objective, reference.objective) <= 1e-2
    with pytest.raises(cr.InvalidInputError, match="tol"):
        solve_polynomial_torch(program, tol=2.0)


def test_plateau_rule():
    from convexrobust.solvers.polynomial_first_order import PLATEAU_WINDOW, _plateau

    k = 2 * PLATEAU_WINDOW
    flat = [1.0] * k
    assert _plateau(flat, [1e-2] * k, 1e-3)
    assert not _plateau(flat[:-1], [1e-2] * (k - 1), 1e-3)  # too short to judge
    assert not _plateau(flat, list(np.geomspace(1e-2, 1e-3, k)), 1e-3)  # still converging
    improving = list(np.linspace(1.1, 1.0, k))
    assert not _plateau(improving, [1e-2] * k, 1e-3)  # still descending
    # the window trails: a long stage that descended early and crawls now has plateaued, one
    # that only now descends has not
    assert _plateau(improving + flat, [1e-2] * 2 * k, 1e-3)
    assert not _plateau(flat + improving, [1e-2] * 2 * k, 1e-3)


@pytest.mark.slow
def test_robust_plateau_stops_early_and_says_so(monkeypatch):
    """At a radius of the order of the data's norm the worst cases are not unique and the
    gradient mapping can stall above tol; each stuck smoothing stage then hands over to the
    next, and the solve ends within 0.5 % of the optimum, well inside its budget — "stalled"
    when the final stage stopped improving, "optimal" if it reached tol on this CPU (the
    rule itself: test_plateau_rule)."""
    from sklearn.datasets import load_digits

    from convexrobust.solvers import polynomial_first_order as fo

    monkeypatch.setattr(fo, "PLATEAU_WINDOW", 100)
    X, y = load_digits(return_X_y=True)
    keep = y < 3
    X, y = X[keep][:60], y[keep][:60]
    X = X - X.mean(axis=0)
    Z = X @ np.linalg.svd(X, full_matrices=False)[2][:6].T
    program = cr.ConvexPolynomial(Z / Z.std(), y, loss="hinge", beta=1e-3, threat=cr.L2(2.0))
    reference = cr.solve(program, "clarabel")
    solution = solve_polynomial_torch(program, tol=1e-3, max_iters=20_000,
                                      accept_inaccurate=True)
    assert solution.iterations < 20_000
    assert solution.status == "optimal" or (solution.status == "stalled"
                                            and solution.info["stationarity"] > 1e-3)
    assert _rel(solution.objective, reference.objective) <= 5e-3
    assert solution.violation <= 1e-8


def test_coarse_stages_end_when_their_objective_settles(monkeypatch):
    """With the stationarity exit of the coarse stages switched off and too few iterations for
    the plateau rule, only the settled-objective rule can hand a stage over: the solve still
    reaches the final smoothing, and Clarabel's optimum."""
    from convexrobust.solvers import polynomial_first_order as fo

    monkeypatch.setattr(fo, "STAGE_STATIONARITY", 0.0)
    X, y = xor_data(20, 2)
    program = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.2))
    reference = cr.solve(program, "clarabel")
    solution = solve_polynomial_torch(program, tol=1e-12, max_iters=2 * fo.PLATEAU_WINDOW - 1,
                                      accept_inaccurate=True, dtype=torch.float64)
    assert solution.info["smoothing"] == pytest.approx(fo.CENTRED_SMOOTHING_FLOOR)
    assert _rel(solution.objective, reference.objective) <= 1e-3


def test_relative_decrease():
    from convexrobust.solvers.first_order import relative_decrease

    assert relative_decrease([3.0, 2.0], 2) == math.inf  # not enough iterations yet
    assert relative_decrease([3.0, 2.5, 2.0], 2) == pytest.approx(0.5)  # over max(1, |F|) = 2
    assert relative_decrease([0.3, 0.2, 0.1], 1) == pytest.approx(0.1)  # over 1 below |F| = 1
    assert relative_decrease([1.0, 1.5], 1) < 0  # a rise
    assert relative_decrease([0.3, 0.2, 0.1], 1, floor=0.0) == pytest.approx(1.0)  # over |F|
    assert relative_decrease([0.1, 0.0], 1, floor=0.0) == math.inf  # down to F = 0


def test_stalled_raises_unless_accepted(monkeypatch):
    from convexrobust.solvers import polynomial_first_order as fo

    monkeypatch.setattr(fo, "_plateau", lambda values, stationarity, tol: len(values) >= 30)
    program = _small_program(loss="hinge")
    with pytest.raises(cr.SolverFailedError, match="stopped improving") as info:
        solve_polynomial_torch(program, tol=1e-12, smoothing_floor=1.0)
    assert info.value.status == "stalled"
    solution = solve_polynomial_torch(program, tol=1e-12, smoothing_floor=1.0,
                                      accept_inaccurate=True)
    # (a hinge program's plateau ends the solve once its dual step no longer improves the
    # exact objective: after the first plateau at the earliest)
    assert solution.status == "stalled" and solution.iterations >= 30


def test_budget_raises_unless_accepted():
    program = _small_program(loss="hinge")
    with pytest.raises(cr.SolverFailedError) as info:
        cr.solve(program, "torch", max_iters=3)
    assert info.value.status == "max_iters" and info.value.solver == "torch"
    solution = cr.solve(program, "torch", max_iters=3, accept_inaccurate=True)
    assert solution.status == "max_iters" and not solution.optimal
    assert solution.iterations == 3 and solution.violation <= 1e-9
    with pytest.raises(cr.SolverFailedError) as info:
        cr.solve(program, "torch", time_limit=1e-9)
    assert info.value.status == "time_limit"


def test_linf_diagonal_is_refused():
    X, y = xor_data(20, 2)
    program = cr.ConvexPolynomial(X, y, threat=cr.Linf(0.1), linf="diagonal")
    with pytest.raises(cr.InvalidInputError, match="containment"):
        cr.solve(program, "torch")


@pytest.mark.parametrize("options", [{"tol": 0}, {"tol": 2.0}, {"max_iters": 0},
                                     {"max_iters": 1.5}, {"time_limit": -1.0},
                                     {"dtype": torch.int64}, {"device": "nowhere"},
                                     {"precondition": "yes"}])
def test_bad_options_are_invalid_input(options):
    with pytest.raises(cr.InvalidInputError):
        cr.solve(_small_program(), "torch", **options)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    program = _small_program()
    cpu = solve_polynomial_torch(program, **FAST)
    gpu = solve_polynomial_torch(program, device="cuda", **FAST)
    assert gpu.info["device"].startswith("cuda")
    assert _rel(gpu.objective, cpu.objective) <= 1e-6


def test_eigendecompositions_per_iteration_do_not_grow_with_n(monkeypatch):
    """Robust ℓ2: each iteration decomposes O(classes) small matrices, never one per sample."""
    real_eigh = torch.linalg.eigh
    batches: list[int] = []

    def counting_eigh(A, *args, **kwargs):
        batches.append(int(np.prod(A.shape[:-2])) if A.ndim > 2 else 1)
        return real_eigh(A, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", counting_eigh)
    per_iteration = {}
    for n in (20, 200):
        X, y = three_class_data(n, 3)
        program = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.1))
        batches.clear()
        solution = solve_polynomial_torch(program, max_iters=30, accept_inaccurate=True)
        assert max(batches) <= 2 * program.n_outputs  # at most the 2C lifted matrices at once
        per_iteration[n] = sum(batches) / solution.iterations
    assert per_iteration[200] <= 40 * 3  # O(C): a few batched projections and one TRS eigh
    assert per_iteration[200] <= 2.0 * per_iteration[20]


# ------------------------------------------------------------------ mid-size
@pytest.mark.slow
def test_mid_size_matches_conic():
    r = np.random.default_rng(0)
    X = r.standard_normal((1000, 50)) / np.sqrt(50)
    y = np.sign(X[:, 0] * X[:, 1] + 0.1 * r.standard_normal(1000))
    program = cr.ConvexPolynomial(X, y, loss="squared", beta=1e-3)
    start = time.perf_counter()
    torch_solution = cr.solve(program, "torch")
    torch_time = time.perf_counter() - start
    conic = cr.solve(program, "scs", tol=1e-7)
    assert torch_solution.objective <= conic.objective * (1 + 1e-3)
    assert torch_solution.violation <= 1e-8
    assert torch_time < 120


# ------------------------------------------------------------------ warm starts
@pytest.mark.slow  # tests/test_polynomial_factored.py checks warm starts by default
def test_warm_starts_never_change_the_optimum():
    """A warm start (the solution itself, a float32 solve, a neighbouring β's solution with a
    coarser smoothing start) reaches Clarabel's optimum of the program being solved; from the
    program's own solution it takes a handful of iterations."""
    X, y = xor_data(20, 2)
    program = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.2))
    neighbour = cr.ConvexPolynomial(X, y, loss="hinge", beta=2e-2, threat=cr.L2(0.2))
    cold = _check_against_clarabel(program)
    again = _check_against_clarabel(program, warm_start=cold)
    assert again.iterations <= cold.iterations // 4
    single = cr.solve(program, "torch", method="apg", dtype=torch.float32, accept_inaccurate=True)
    _check_against_clarabel(program, warm_start=single.values)
    _check_against_clarabel(program, warm_start=cr.solve(neighbour, "torch", method="apg"),
                            smoothing_start=1e-2)


def test_warm_start_is_validated():
    X, y = xor_data(20, 2)
    program = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.2))
    other = cr.ConvexPolynomial(X[:, :1], y, loss="hinge", beta=1e-2)
    wrong_shape = cr.solve(other, "clarabel")
    nan = {key: np.full((1, 3, 3), np.nan) for key in ("Z", "Zp")}
    for bad in (wrong_shape, {"Z": np.zeros((1, 3, 3))}, "start", nan):
        with pytest.raises(cr.InvalidInputError, match="warm_start"):
            solve_polynomial_torch(program, warm_start=bad)
    for bad in (0.0, 2.0, 1e-4, True):
        with pytest.raises(cr.InvalidInputError, match="smoothing_start"):
            solve_polynomial_torch(program, smoothing_start=bad)


# ------------------------------------------------------------------ the dual certificate
def _in_cone(Y: torch.Tensor, C: int) -> dict[str, np.ndarray]:
    D = Y.shape[-1]
    Z = project_lifted_cone(Y + Y.transpose(-1, -2))[0].numpy().reshape(2, C, D, D)
    return {"Z": Z[0], "Zp": Z[1]}


DUAL_PROGRAMS = {
    "binary robust hinge": lambda: cr.ConvexPolynomial(*xor_data(20, 2), loss="hinge",
                                                        beta=1e-2, threat=cr.L2(0.2)),
    "3-class robust logistic": lambda: cr.ConvexPolynomial(
        *three_class_data(18, 2), loss="logistic", beta=1e-2, threat=cr.L2(0.1)),
    "binary nominal hinge, β = 0": lambda: cr.ConvexPolynomial(*xor_data(20, 2), loss="hinge",
                                                                beta=0.0),
}


@pytest.mark.parametrize("name", DUAL_PROGRAMS)
def test_dual_bound_never_exceeds_the_optimum(name, rng):
    """lifted_cone.dual_bound is a lower bound (weak duality through the linearised worst case)
    from any point — a solver's, points near it (where both repairs of an infeasible dual
    candidate act), far ones, and one outside K — at any slope smoothing and from any dual
    estimates; at the accelerated gradient solver's point (and its estimates) it certifies a
    small gap."""
    program = DUAL_PROGRAMS[name]()
    reference = cr.solve(program, "clarabel")
    optimum = reference.objective
    if program.beta > 0:
        solution = solve_polynomial_torch(program, **FAST)
        assert solution.info["dual_bound"] <= optimum + 1e-6
        # the slopes at the final smoothing are nearly dual optimal (measured: about 1e-4)
        assert solution.info["duality_gap"] <= 1e-2
    else:  # β = 0: the optimum need not be attained (separable data); Clarabel's point
        solution = reference
    C, D = program.n_outputs, program.n_features + 1
    Z = torch.as_tensor(np.stack([solution.values["Z"], solution.values["Zp"]]))
    scale = float(Z.abs().max())
    points = [solution.values]
    for size in (1e-4, 1e-2, 1.0, 10.0):
        noise = torch.as_tensor(rng.standard_normal((2, C, D, D))) * size * max(scale, 1.0)
        points.append(_in_cone((Z + noise).reshape(2 * C, D, D), C))
    outside = {"Z": solution.values["Z"] * 0.5, "Zp": solution.values["Zp"].copy()}
    outside["Z"][:, -1, -1] -= 1.0  # breaks z4 = tr(Z1): not in K
    points.append(outside)
    duals = rng.uniform(size=(program.n_samples, program.n_outputs))
    for values in points:
        for smoothing in (0.0, 1e-3, 0.1, 1.0):
            assert dual_bound(program, values, smoothing) <= optimum + 1e-6
        # any dual estimates in [0, 1] (the accelerated gradient's, for the hinge) too
        assert dual_bound(program, values, 0.0, duals=duals) <= optimum + 1e-6


@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_dual_bound_is_the_sum_of_its_outputs_bounds(loss, rng):
    """A multi-class program is C independent one-vs-all programs, and its dual bound is the
    sum of theirs: an output whose dual candidate leaves K* (its repair acts) loosens only its
    own part. Any point of K gives a valid bound, so a random one serves."""
    X, y = three_class_data(18, 2)
    program = cr.ConvexPolynomial(X, y, loss=loss, beta=1e-2, threat=cr.L2(0.1))
    C, D = program.n_outputs, program.n_features + 1
    values = _in_cone(torch.as_tensor(rng.standard_normal((2 * C, D, D))) * 0.3, C)
    parts = []
    for c in range(C):
        binary = cr.ConvexPolynomial(X, (y == c).astype(int), loss=loss, beta=1e-2,
                                     threat=cr.L2(0.1))
        part = {"Z": values["Z"][c:c + 1], "Zp": values["Zp"][c:c + 1]}
        assert binary.n_outputs == 1
        parts.append(dual_bound(binary, part, 1e-3))
    total = dual_bound(program, values, 1e-3)
    assert total == pytest.approx(sum(parts), rel=1e-9)
    assert total <= program.objective(values)


def test_dual_bound_is_none_where_none_is_written_and_validates_smoothing():
    X, y = xor_data(12, 2)
    zero = np.zeros((1, 3, 3))
    squared = cr.ConvexPolynomial(X, y, loss="squared", beta=1e-2, threat=cr.L2(0.1))
    assert dual_bound(squared, {"Z": zero, "Zp": zero}, 1e-3) is None
    diagonal = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=cr.Linf(0.1),
                                   linf="diagonal")
    values = {"Z": zero, "Zp": zero, "lam": np.zeros((len(diagonal.sides), 1, 12, 2))}
    assert dual_bound(diagonal, values, 1e-3) is None
    hinge = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.1))
    assert dual_bound(hinge, {"Z": zero, "Zp": zero}, 1e-3) <= hinge.objective(
        {"Z": zero, "Zp": zero})
    for bad in (-1e-3, math.nan, "0.1", True):
        with pytest.raises(cr.InvalidInputError, match="smoothing"):
            dual_bound(hinge, {"Z": zero, "Zp": zero}, bad)


# ------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("method", ["apg", "factored"])
def test_checkpoints_hand_out_points_without_changing_the_solve(method):
    """A checkpoint at every iteration leaves the iterations as they are; each checkpoint is a
    point a warm start takes; a method without checkpoints runs without them."""
    X, y = xor_data(20, 2)
    program = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.2))
    plain = cr.solve(program, "torch", method=method, tol=1e-4)
    states = []
    kept = cr.solve(program, "torch", method=method, tol=1e-4, checkpoint=states.append,
                    checkpoint_every=1e-9)
    assert kept.iterations == plain.iterations
    for key in ("Z", "Zp"):
        assert np.array_equal(kept.values[key], plain.values[key])
    assert len(states) >= 2 and {s["options"]["method"] for s in states} == {method}
    assert [s["iterations"] for s in states] == sorted({s["iterations"] for s in states})
    last = states[-1]
    assert last["options"]["warm_start"]["Z"].shape == (program.n_outputs, 3, 3)
    assert ("smoothing_start" in last["options"]) == (method == "apg")
    resumed = cr.solve(program, "torch", tol=1e-4, **last["options"])
    assert _rel(resumed.objective, plain.objective) <= 1e-3
    # a budget stop hands out its point
    stopped = []
    cr.solve(program, "torch", method=method, max_iters=3, accept_inaccurate=True,
             checkpoint=stopped.append, checkpoint_every=math.inf)
    assert len(stopped) == 1 and stopped[0]["iterations"] == 3
    with pytest.raises(cr.InvalidInputError, match="checkpoint"):
        cr.solve(program, "torch", method=method, checkpoint="file.pt")
    with pytest.raises(cr.InvalidInputError, match="checkpoint_every"):
        cr.solve(program, "torch", method=method, checkpoint=states.append,
                 checkpoint_every=0)


def test_dual_centres_make_a_coarse_smoothing_exact():
    """The hinge smoothed around its dual estimates (polynomial_first_order, "Dual centres"): at
    a final width of 0.1, where the plainly smoothed optimum is 5e-3 off (measured), the solve
    still reaches Clarabel's optimum, with its smoothing exact at the returned point."""
    program = cr.ConvexPolynomial(*xor_data(20, 2), loss="hinge", beta=1e-2, threat=cr.L2(0.2))
    solution = _check_against_clarabel(program, smoothing_floor=0.1)
    assert solution.info["dual_updates"] > 0
    assert 0.0 <= solution.info["smoothing_error"] <= FAST["tol"]
    # the squared loss has no dual estimates to move
    squared = cr.ConvexPolynomial(*xor_data(20, 2), loss="squared", beta=1e-2)
    plain = cr.solve(squared, "torch", method="apg", tol=1e-4)
    assert plain.info["dual_updates"] == 0 and plain.info["smoothing_error"] is None


def test_checkpoints_carry_the_dual_estimates():
    """A stopped hinge solve hands out its dual estimates with its point; continued from that
    state it reaches the optimum; dual estimates of the wrong shape or range are refused."""
    program = cr.ConvexPolynomial(*three_class_data(18, 2), loss="hinge", beta=1e-2,
                                  threat=cr.L2(0.1))
    reference = cr.solve(program, "clarabel")
    stopped = []
    cr.solve(program, "torch", method="apg", max_iters=150, accept_inaccurate=True,
             checkpoint=stopped.append, checkpoint_every=math.inf)
    duals = stopped[0]["options"]["warm_start"]["duals"]
    assert duals.shape == (program.n_samples, program.n_outputs)
    assert float(duals.min()) >= 0.0 and float(duals.max()) <= 1.0
    resumed = cr.solve(program, "torch", tol=1e-5, **stopped[0]["options"])
    assert resumed.status == "optimal"
    assert _rel(resumed.objective, reference.objective) <= 1e-3
    point = {key: stopped[0]["options"]["warm_start"][key] for key in ("Z", "Zp")}
    for bad in (duals[1:], duals + 2.0, duals - 2.0, np.full_like(duals, np.inf)):
        with pytest.raises(cr.InvalidInputError, match="duals"):
            cr.solve(program, "torch", method="apg", warm_start=point | {"duals": bad})


def test_a_solution_carries_its_dual_estimates_to_a_warm_start():
    """A solved hinge program's Solution holds its dual estimates; warm-started from it, the
    same program stays at its objective (the estimates come along, so the hinge is smoothed
    around the right duals at once); a solution of a program on other samples starts only the
    point."""
    X, y = three_class_data(18, 2)
    program = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.1))
    solved = cr.solve(program, "torch", method="apg", tol=1e-6)
    duals = solved.info["duals"]
    assert duals.shape == (program.n_samples, program.n_outputs)
    again = cr.solve(program, "torch", method="apg", tol=1e-6, warm_start=solved)
    assert again.status == "optimal"
    assert _rel(again.objective, solved.objective) <= 1e-6
    # (from the point alone it iterates about as long as the cold solve: measured 357 of 362
    # iterations, against 11 with the estimates)
    assert again.iterations <= solved.iterations // 4
    fewer = cr.ConvexPolynomial(X[:-6], y[:-6], loss="hinge", beta=1e-2, threat=cr.L2(0.1))
    other = cr.solve(fewer, "torch", method="apg", tol=1e-5, warm_start=solved)
    assert other.info["duals"].shape == (fewer.n_samples, fewer.n_outputs)


def test_a_refit_on_more_samples_keeps_the_known_estimates_and_reaches_the_optimum():
    """A warm start on more samples than its solution had (a refit on training + validation
    data): the solution's estimates for its samples, NaN for the added ones. The solve reaches
    Clarabel's optimum of the larger program and ends with an estimate for every sample."""
    X, y = three_class_data(18, 2)
    fewer = cr.ConvexPolynomial(X[:-9], y[:-9], loss="hinge", beta=1e-2, threat=cr.L2(0.1))
    program = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.1))
    solved = cr.solve(fewer, "torch", method="apg", tol=1e-6)
    added = np.full((9, program.n_outputs), np.nan)
    start = {**solved.values, "duals": np.vstack([solved.info["duals"], added])}
    refit = _check_against_clarabel(program, warm_start=start)
    duals = refit.info["duals"]
    assert duals.shape == (program.n_samples, program.n_outputs)
    assert np.isfinite(duals).all() and duals.min() >= 0.0 and duals.max() <= 1.0


def test_methods_without_checkpoints_run_without_them():
    """The checkpoint options never choose the method: a nominal hinge SDP still goes to ADMM,
    and so does a binary robust ReLU program, without handing out a state (the options are
    checked all the same)."""
    X, y = xor_data(20, 2)
    states = []
    nominal = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2)
    solution = cr.solve(nominal, "torch", checkpoint=states.append, checkpoint_every=1e-9)
    assert solution.info["method"] == "admm" and states == []
    relu = cr.ConvexReLU(X, y, loss="hinge", beta=1e-2, n_patterns=4, threat=cr.L2(0.1))
    solution = cr.solve(relu, "torch", checkpoint=states.append, checkpoint_every=1e-9)
    assert solution.info["method"] == "admm" and states == []
    # given to solve() they go to torch alone: a conic solver never sees them
    for solver in ("clarabel", "auto"):
        assert cr.solve(nominal, solver, checkpoint=states.append).solver == "clarabel"
    assert states == []
    with pytest.raises(cr.InvalidInputError, match="checkpoint"):
        cr.solve(nominal, "torch", checkpoint="file.pt")
