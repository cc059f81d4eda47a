"""The ADMM torch solver of the nominal ReLU program (solvers/relu_admm.py) agrees with Clarabel,
returns exactly feasible points whose recovered network reproduces the convex model, certifies
its gap with a valid dual bound, is deterministic, honours dtype/device, reports budget
exhaustion honestly, and is what ``cr.solve(program, "torch")`` runs where it applies."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch
from conftest import three_class_data, xor_data

import convexrobust as cr
from convexrobust.solvers import relu_admm
from convexrobust.solvers.relu_admm import solve_relu_admm

#: Residual tolerance of the agreement tests.
TOL = 1e-4


def _relative_gap(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def _binary_squared() -> cr.ConvexReLU:
    X, y = xor_data(120, 4)
    return cr.ConvexReLU(X, y, n_patterns=15, loss="squared", beta=1e-2)


def _binary_hinge() -> cr.ConvexReLU:
    X, y = xor_data(120, 4)
    return cr.ConvexReLU(X, y, n_patterns=15, loss="hinge", beta=1e-2)


def _regression() -> cr.ConvexReLU:
    X, _ = xor_data(100, 3, seed=1)
    y = X[:, 0] ** 2 - X[:, 1] + 0.1 * np.sin(3 * X[:, 2])
    return cr.ConvexReLU(X, y, n_patterns=15, loss="squared", beta=1e-3)


def _two_output_regression() -> cr.ConvexReLU:
    X, _ = xor_data(80, 3, seed=2)
    Y = np.stack([X[:, 0] ** 2 - X[:, 1], np.abs(X[:, 2])], axis=1)
    return cr.ConvexReLU(X, Y, n_patterns=10, loss="squared", beta=1e-3)


def _three_class() -> cr.ConvexReLU:
    X, y = three_class_data(90, 3)
    return cr.ConvexReLU(X, y, n_patterns=12, loss="squared", beta=1e-2)


def _three_class_hinge() -> cr.ConvexReLU:
    X, y = three_class_data(90, 3)
    return cr.ConvexReLU(X, y, n_patterns=12, loss="hinge", beta=1e-2)


def _robust_hinge(eps: float = 0.2, bias: bool = True) -> cr.ConvexReLU:
    X, y = xor_data(100, 4, seed=3)
    return cr.ConvexReLU(X, y, n_patterns=12, loss="hinge", beta=1e-2, threat=cr.L2(eps),
                         bias=bias)


def _robust_three_class(eps: float = 0.2) -> cr.ConvexReLU:
    X, y = three_class_data(90, 3)
    return cr.ConvexReLU(X, y, n_patterns=12, loss="hinge", beta=1e-2, threat=cr.L2(eps))


@pytest.mark.parametrize("make", [_binary_squared, _regression, _two_output_regression,
                                  _three_class, _binary_hinge, _three_class_hinge],
                         ids=["binary-squared", "regression", "two-output-regression",
                              "three-class", "binary-hinge", "three-class-hinge"])
def test_matches_clarabel(make):
    program = make()
    reference = cr.solve(program, "clarabel")
    solution = cr.solve(program, "torch", method="admm", tol=TOL)
    assert solution.status == "optimal" and solution.solver == "torch"
    assert solution.info["method"] == "admm"
    assert _relative_gap(solution.objective, reference.objective) <= 1e-3
    assert solution.violation <= 1e-6  # after repair
    assert solution.info["violation_before_repair"] >= 0
    # the dual bound is a valid lower bound, so the certified gap covers the true one
    bound = solution.info["dual_bound"]
    assert bound <= reference.objective + 1e-6 * abs(reference.objective)
    assert solution.gap >= (solution.objective - reference.objective) / solution.objective - 1e-9
    assert solution.gap <= 1e-2
    # the repaired point is exactly representable: the network reproduces the convex model
    out = solution.network()(torch.as_tensor(program.X)).detach().numpy()
    assert np.abs(out - program.training_predictions(solution.values)).max() <= 1e-6


def test_auto_runs_admm_where_it_applies():
    assert cr.solve(_binary_squared(), "torch").info["method"] == "admm"
    assert cr.solve(_binary_hinge(), "torch", tol=1e-3).info["method"] == "admm"
    assert cr.solve(_three_class_hinge(), "torch", tol=1e-3).info["method"] == "admm"
    assert cr.solve(_robust_hinge(), "torch", tol=1e-3).info["method"] == "admm"
    X, y = xor_data(30, 3)
    # other robust programs (the robust pairwise hinge too: ADMM on request only) and the
    # logistic loss stay on the augmented Lagrangian
    for program in (_robust_three_class(),
                    cr.ConvexReLU(X, y, n_patterns=8, loss="squared", threat=cr.L2(0.1)),
                    cr.ConvexReLU(X, y, n_patterns=8, loss="hinge", threat=cr.Linf(0.1)),
                    cr.ConvexReLU(X, y, n_patterns=8, loss="logistic")):
        solution = cr.solve(program, "torch", max_iters=5, accept_inaccurate=True)
        assert solution.info["method"] == "al"


def test_auto_respects_the_size_rule(monkeypatch):
    program = _binary_squared()
    assert relu_admm.admm_system_size(program) == min(program.n_samples,
                                                      program.n_patterns * 5)
    robust = _robust_hinge()  # no n × n form: always P·d̃
    assert relu_admm.admm_system_size(robust) == robust.n_patterns * 5
    monkeypatch.setattr(relu_admm, "MAX_FACTOR_SIZE", relu_admm.admm_system_size(program) - 1)
    solution = cr.solve(program, "torch", max_iters=5, accept_inaccurate=True)
    assert solution.info["method"] == "al"


def test_default_reaches_the_target_accuracy():
    # the default tol (1e-3) lands well within 1e-3 of the optimum
    program = _regression()
    reference = cr.solve(program, "clarabel")
    solution = cr.solve(program, "torch")
    assert solution.info["method"] == "admm"
    assert _relative_gap(solution.objective, reference.objective) <= 1e-3


@pytest.mark.parametrize("make", [_binary_squared, _three_class, _binary_hinge,
                                  _three_class_hinge],
                         ids=["binary-squared", "three-class", "binary-hinge",
                              "three-class-hinge"])
def test_direct_and_woodbury_agree(make, monkeypatch):
    """The Pd̃ × Pd̃ system and its n × n Woodbury form are the same linear map."""
    program = make()
    results = {}
    for mode in ("direct", "woodbury"):
        monkeypatch.setattr(relu_admm, "_choose_factorisation", lambda *_, m=mode: m)
        results[mode] = solve_relu_admm(program, tol=1e-3, max_iters=60,
                                        accept_inaccurate=True)
        assert results[mode].info["factorisation"] == mode
    a, b = results["direct"], results["woodbury"]
    assert a.iterations == b.iterations
    for key in ("V", "W"):
        assert np.abs(a.values[key] - b.values[key]).max() <= 1e-8


# ---------------------------------------------------------------- robust programs
@pytest.mark.parametrize(("eps", "bias", "classes"), [
    (0.05, True, 2), (0.5, True, 2), (0.2, False, 2),
    pytest.param(0.1, True, 3, marks=pytest.mark.slow),  # three classes: 11 s
    pytest.param(0.2, True, 2, marks=pytest.mark.slow),
    pytest.param(0.4, True, 3, marks=pytest.mark.slow)])
def test_robust_matches_clarabel(eps, bias, classes):
    program = _robust_hinge(eps, bias) if classes == 2 else _robust_three_class(eps)
    reference = cr.solve(program, "clarabel")
    solution = cr.solve(program, "torch", method="admm", tol=TOL)
    assert solution.status == "optimal" and solution.info["method"] == "admm"
    assert _relative_gap(solution.objective, reference.objective) <= 1e-3
    assert solution.violation <= 1e-6  # the robust cones hold exactly after the repair
    # a valid lower bound: the certified gap covers the true one
    assert solution.info["dual_bound"] <= reference.objective * (1 + 1e-6)
    assert solution.gap >= (solution.objective - reference.objective) / solution.objective - 1e-9
    assert solution.gap <= 2e-2
    out = solution.network()(torch.as_tensor(program.X)).detach().numpy()
    assert np.abs(out - program.training_predictions(solution.values)).max() <= 1e-6


def test_robust_at_a_radius_beyond_the_data_is_the_bias_only_optimum():
    X, y = xor_data(40, 3)
    program = cr.ConvexReLU(X, y, n_patterns=8, loss="hinge", beta=1e-2,
                            threat=cr.L2(10 * float(np.linalg.norm(X, axis=1).max())))
    reference = cr.solve(program, "clarabel")
    solution = solve_relu_admm(program, tol=1e-5)
    assert solution.status == "optimal"
    assert _relative_gap(solution.objective, reference.objective) <= 1e-3
    assert np.abs(np.concatenate([solution.values["V"], solution.values["W"]])[..., :3]
                  ).max() <= 1e-8  # no slope survives: the ball covers every sample


def test_robust_cone_projection_is_the_weighted_projection(rng):
    # argmin Σ_k w_k (s_k − a_k)² + ρ_c‖c − b‖²  s.t.  s_k ≥ r_k‖c‖, against Clarabel
    n, d, groups = 9, 3, 5
    Vs = torch.as_tensor(rng.standard_normal((1, groups, n)))
    Vc = torch.as_tensor(2 * rng.standard_normal((1, groups, d)))
    Vc[0, 0] = 0.0  # a zero copy
    Vs[0, 1] = torch.abs(Vs[0, 1]) + 10.0  # inside the cone already
    radii = torch.as_tensor(rng.uniform(0.05, 0.6, n))
    weights = torch.as_tensor(rng.uniform(0.1, 3.0, (1, groups, n)))
    rho_c = torch.full((1, 1, 1), 0.7, dtype=torch.float64)
    S, Cc, nu = relu_admm.project_robust_cone(Vs, Vc, radii, weights, rho_c)
    assert bool((S >= radii * torch.linalg.vector_norm(Cc, dim=-1, keepdim=True)
                 - 1e-12).all())
    # from any warm start, left or right of the root, the same projection
    for start in (torch.zeros_like(nu), 0.5 * nu, nu + 1.0):
        again = relu_admm.project_robust_cone(Vs, Vc, radii, weights, rho_c, start=start)
        assert torch.allclose(again[0], S, atol=1e-12) and torch.allclose(again[1], Cc,
                                                                           atol=1e-12)
    for g in range(groups):
        s, c = cp.Variable(n), cp.Variable(d)
        objective = (cp.sum(cp.multiply(weights[0, g].numpy(), cp.square(s - Vs[0, g].numpy())))
                     + 0.7 * cp.sum_squares(c - Vc[0, g].numpy()))
        cp.Problem(cp.Minimize(objective), [s >= radii.numpy() * cp.norm(c)]).solve(
            solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
        assert np.abs(S[0, g].numpy() - s.value).max() <= 1e-5
        assert np.abs(Cc[0, g].numpy() - c.value).max() <= 1e-5


@pytest.mark.parametrize("threat", [None, cr.L2(1e3)])
def test_never_optimal_with_a_large_certified_gap(threat):
    # features ×1e4 beside the constant 1: the relative residuals reach tol far from the
    # optimum (the certified gap was 1.0 with status "optimal"); the solver goes on instead
    X, y = xor_data(40, 3)
    program = cr.ConvexReLU(1e4 * X, y, n_patterns=8, loss="hinge", beta=1e-2, threat=threat)
    solution = solve_relu_admm(program, max_iters=2000, accept_inaccurate=True)
    assert solution.status != "optimal" or solution.gap <= relu_admm.GAP_CONTINUE


def test_zero_solution():
    # β above the largest group gradient at zero: the optimum is the zero network
    X, y = xor_data(60, 3)
    for loss in ("squared", "hinge"):
        program = cr.ConvexReLU(X, y, n_patterns=8, loss=loss, beta=10.0)
        solution = solve_relu_admm(program)
        assert solution.status == "optimal"
        assert np.abs(solution.values["V"]).max() == 0 and np.abs(solution.values["W"]).max() == 0
        assert solution.objective == pytest.approx(0.5 if loss == "squared" else 1.0)
        assert solution.gap <= 1e-6


# ---------------------------------------------------------------- options and reporting
def test_deterministic():
    program = _three_class()
    a = solve_relu_admm(program, tol=1e-3, seed=3)
    b = solve_relu_admm(program, tol=1e-3, seed=3)
    assert a.iterations == b.iterations
    for key in ("V", "W"):
        assert np.array_equal(a.values[key], b.values[key])


def test_float32_lands_close():
    program = _binary_squared()
    reference = cr.solve(program, "clarabel")
    solution = solve_relu_admm(program, dtype=torch.float32, tol=1e-4)
    assert solution.status == "optimal"
    assert solution.info["dtype"] == "float32"
    assert solution.values["V"].dtype == np.float64
    assert _relative_gap(solution.objective, reference.objective) <= 1e-3
    assert solution.violation <= 1e-6


def test_explicit_cpu_device():
    solution = solve_relu_admm(_regression(), device="cpu", tol=1e-3)
    assert solution.info["device"] == "cpu" and solution.status == "optimal"


def test_budget_exhaustion_raises_unless_accepted():
    program = _binary_squared()
    with pytest.raises(cr.SolverFailedError) as info:
        cr.solve(program, "torch", method="admm", max_iters=7)
    assert info.value.status == "max_iters" and info.value.solver == "torch"
    solution = cr.solve(program, "torch", method="admm", max_iters=7, accept_inaccurate=True)
    assert solution.status == "max_iters" and not solution.optimal
    assert solution.iterations == 7
    assert solution.violation <= 1e-6  # the repair runs on inaccurate points too
    # several outputs share the budget: the ones it does not reach stay at zero
    solution = cr.solve(_three_class(), "torch", method="admm", max_iters=7,
                        accept_inaccurate=True)
    assert solution.status == "max_iters" and solution.iterations == 7
    assert np.abs(solution.values["V"][1:]).max() == 0 and solution.violation <= 1e-6


def test_time_limit():
    with pytest.raises(cr.SolverFailedError) as info:
        solve_relu_admm(_binary_squared(), tol=1e-12, time_limit=0.02)
    assert info.value.status == "time_limit"


def test_reports_what_was_done():
    solution = solve_relu_admm(_binary_squared(), tol=1e-3)
    info = solution.info
    for key in ("primal_residual", "dual_residual", "rho", "rho_cone", "refactorisations",
                "reweights", "violation_before_repair", "objective_before_repair",
                "duality_gap", "dual_bound", "stationarity", "factorisation"):
        assert key in info
    assert info["device"] == "cpu" and info["dtype"] == "float64" and info["method"] == "admm"
    assert info["primal_residual"] <= 1e-3 and info["dual_residual"] <= 1e-3
    assert info["refactorisations"] >= info["reweights"] >= 1
    assert solution.gap == info["duality_gap"] >= 0
    assert info["dual_bound"] <= solution.objective
    assert solution.wall_time > 0 and solution.iterations >= 1


# ---------------------------------------------------------------- typed errors
@pytest.mark.parametrize(("loss", "threat", "labels"), [
    ("squared", cr.L2(0.1), "binary"),
    ("hinge", cr.Linf(0.05), "binary"),
    ("logistic", cr.L2(0.05), "three"),
    ("logistic", None, "binary"),
    ("logistic", None, "three"),
])
def test_unsupported_programs_raise(loss, threat, labels):
    X, y = xor_data(30, 3) if labels == "binary" else three_class_data(30, 2)
    program = cr.ConvexReLU(X, y, n_patterns=6, loss=loss, threat=threat)
    with pytest.raises(cr.InvalidInputError):
        cr.solve(program, "torch", method="admm")
    with pytest.raises(cr.InvalidInputError):
        solve_relu_admm(program)


def test_method_option_is_checked():
    program = _binary_squared()
    for method in ("newton", 3, "apg"):
        with pytest.raises(cr.InvalidInputError):
            cr.solve(program, "torch", method=method)
    with pytest.raises(cr.InvalidInputError):  # an AL-only option with method="admm"
        cr.solve(program, "torch", method="admm", distributed=True)
    X, y = xor_data(20, 2)
    polynomial = cr.ConvexPolynomial(X, y, loss="squared", beta=1e-2)
    for method in ("al", "newton"):
        with pytest.raises(cr.InvalidInputError):
            cr.solve(polynomial, "torch", method=method)


@pytest.mark.parametrize("options", [
    {"tol": 0}, {"tol": -1.0}, {"tol": float("nan")}, {"max_iters": 0}, {"max_iters": 2.5},
    {"time_limit": 0}, {"seed": "a"}, {"dtype": torch.int64},
])
def test_invalid_options(options):
    with pytest.raises(cr.InvalidInputError):
        solve_relu_admm(_binary_squared(), **options)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    program = _binary_squared()
    cpu = solve_relu_admm(program, tol=1e-4)
    gpu = solve_relu_admm(program, tol=1e-4, device="cuda")
    assert gpu.info["device"].startswith("cuda")
    assert _relative_gap(gpu.objective, cpu.objective) <= 1e-4
    assert gpu.violation <= 1e-6
