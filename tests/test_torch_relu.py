"""The first-order torch solver of the ReLU programs (solvers/relu_first_order.py) agrees with
Clarabel, returns exactly feasible points whose recovered network reproduces the convex model,
is deterministic, honours dtype/device, and reports budget exhaustion honestly."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from conftest import three_class_data, xor_data

import convexrobust as cr
from convexrobust.solvers.relu_first_order import solve_relu_torch

slow = pytest.mark.slow

#: Relative stationarity / violation tolerance used in the agreement tests.
TOL = 1e-4


def _relative_gap(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def _check_against_clarabel(program: cr.ConvexReLU, tol: float = TOL,
                            max_iters: int = 20_000) -> cr.Solution:
    reference = cr.solve(program, "clarabel")
    solution = cr.solve(program, "torch", tol=tol, max_iters=max_iters)
    assert solution.status == "optimal" and solution.solver == "torch"
    assert _relative_gap(solution.objective, reference.objective) <= 1e-3
    assert solution.violation <= 1e-6  # after repair
    assert solution.info["violation_before_repair"] >= 0
    net = solution.network()
    out = net(torch.as_tensor(program.X)).detach().numpy()
    assert np.abs(out - program.training_predictions(solution.values)).max() <= 1e-6
    return solution


# The fast suite covers every program structure (nominal/ℓ2, binary/multi-class, squared and
# logistic); the non-smooth hinge and ℓ∞/ℓ1 cases need ~10-17k iterations (~4-15 s each on one
# core) and run with -m slow.
BINARY = [
    ("squared", None),
    ("logistic", None),
    ("squared", cr.L2(0.1)),
    pytest.param("squared", cr.Linf(0.05), marks=slow),
    pytest.param("hinge", None, marks=slow),
    pytest.param("hinge", cr.L2(0.1), marks=slow),
    pytest.param("hinge", cr.Linf(0.05), marks=slow),
    pytest.param("logistic", cr.L2(0.1), marks=slow),
    pytest.param("logistic", cr.Linf(0.05), marks=slow),
]


@pytest.mark.parametrize(("loss", "threat"), BINARY)
def test_binary_matches_clarabel(loss, threat):
    X, y = xor_data(30, 3)
    _check_against_clarabel(cr.ConvexReLU(X, y, n_patterns=12, loss=loss, beta=1e-2,
                                          threat=threat))


@pytest.mark.parametrize(("loss", "threat"), [
    ("squared", None),
    pytest.param("logistic", None, marks=slow),
    pytest.param("hinge", None, marks=slow),
    pytest.param("squared", cr.L2(0.1), marks=slow),
    pytest.param("logistic", cr.L2(0.1), marks=slow),
    pytest.param("hinge", cr.L2(0.1), marks=slow),
])
def test_multiclass_matches_clarabel(loss, threat):
    X, y = three_class_data(24, 2)
    _check_against_clarabel(cr.ConvexReLU(X, y, n_patterns=8, loss=loss, beta=1e-2,
                                          threat=threat))


@slow
def test_regression_matches_clarabel():
    X, _ = xor_data(30, 2)
    y = X[:, 0] ** 2 - X[:, 1]
    program = cr.ConvexReLU(X, y, n_patterns=10, loss="squared", beta=1e-3, threat=cr.L2(0.05))
    assert program.targets.task == "regression"
    _check_against_clarabel(program, tol=1e-5, max_iters=60_000)  # ~51k iterations at 1e-5


@slow
def test_l1_threat_matches_clarabel():
    X, y = xor_data(30, 2)
    _check_against_clarabel(cr.ConvexReLU(X, y, n_patterns=10, loss="logistic", beta=1e-2,
                                          threat=cr.ThreatModel(1, 0.05)))


# ---------------------------------------------------------------- options and reporting
def _small() -> cr.ConvexReLU:
    X, y = xor_data(30, 3)
    return cr.ConvexReLU(X, y, n_patterns=12, loss="squared", beta=1e-2)


def test_deterministic():
    program = _small()
    a = solve_relu_torch(program, tol=1e-3, seed=3)
    b = solve_relu_torch(program, tol=1e-3, seed=3)
    assert a.iterations == b.iterations
    for key in ("V", "W"):
        assert np.array_equal(a.values[key], b.values[key])


def test_auto_dtype_is_float32_only_for_large_programs_at_loose_tol(monkeypatch):
    from convexrobust.solvers import first_order

    program = _small()
    assert solve_relu_torch(program, tol=1e-3).info["dtype"] == "float64"  # small
    monkeypatch.setattr(first_order, "FLOAT32_MIN_ELEMENTS", 0)
    assert solve_relu_torch(program, tol=1e-3).info["dtype"] == "float32"
    tight = solve_relu_torch(program, tol=1e-4, max_iters=3, accept_inaccurate=True)
    assert tight.info["dtype"] == "float64"  # below float32's floor


def test_float32_lands_close():
    # tol is a relative stationarity tolerance, not an objective gap: at tol=1e-2 float64 lands
    # 1.7% above Clarabel on this program exactly like float32 does, so ask for 1e-3
    program = _small()
    reference = cr.solve(program, "clarabel")
    solution = solve_relu_torch(program, dtype=torch.float32, tol=1e-3)
    assert solution.info["dtype"] == "float32"
    assert solution.values["V"].dtype == np.float64
    assert _relative_gap(solution.objective, reference.objective) <= 1e-2
    assert solution.violation <= 1e-6


def test_budget_exhaustion_raises_unless_accepted():
    program = _small()
    with pytest.raises(cr.SolverFailedError) as info:
        cr.solve(program, "torch", max_iters=3)
    assert info.value.status == "max_iters" and info.value.solver == "torch"
    solution = cr.solve(program, "torch", max_iters=3, accept_inaccurate=True)
    assert solution.status == "max_iters" and not solution.optimal
    assert solution.iterations == 3
    assert solution.violation <= 1e-6  # the repair runs on inaccurate points too


def test_time_limit():
    program = _small()
    with pytest.raises(cr.SolverFailedError) as info:
        cr.solve(program, "torch", tol=1e-12, time_limit=0.05)
    assert info.value.status == "time_limit"


def test_reports_what_was_done():
    solution = solve_relu_torch(_small(), tol=1e-3)
    info = solution.info
    for key in ("device", "dtype", "stationarity", "violation_before_repair",
                "outer_iterations"):
        assert key in info
    assert info["device"] == "cpu" and info["dtype"] == "float64"
    assert solution.gap == info["stationarity"] <= 1e-3
    assert solution.wall_time > 0 and solution.iterations >= 1


@pytest.mark.parametrize("options", [
    {"tol": 0}, {"tol": -1.0}, {"tol": float("nan")}, {"max_iters": 0}, {"max_iters": 2.5},
    {"time_limit": 0}, {"seed": "a"}, {"dtype": torch.int64},
])
def test_invalid_options(options):
    with pytest.raises(cr.InvalidInputError):
        solve_relu_torch(_small(), **options)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    program = _small()
    cpu = solve_relu_torch(program, tol=1e-4)
    gpu = solve_relu_torch(program, tol=1e-4, device="cuda")
    assert gpu.info["device"].startswith("cuda")
    assert _relative_gap(gpu.objective, cpu.objective) <= 1e-4
    assert gpu.violation <= 1e-6


# ---------------------------------------------------------------- mid-size
@slow
def test_mid_size_planted_network():
    r = np.random.default_rng(0)
    n, d, h = 1000, 20, 10
    X = r.standard_normal((n, d))
    U, a = r.standard_normal((d, h)), r.standard_normal(h)
    y = np.maximum(X @ U, 0) @ a / np.sqrt(h) + 0.1 * r.standard_normal(n)
    program = cr.ConvexReLU(X, y, n_patterns=50, loss="squared", beta=1e-3)
    start = time.perf_counter()
    reference = cr.solve(program, "clarabel")
    clarabel_time = time.perf_counter() - start
    # relative stationarity 1e-4 leaves the objective ~1e-3 above the optimum here; 3e-5 ~1e-4
    solution = cr.solve(program, "torch", tol=3e-5)
    assert solution.status == "optimal"
    assert _relative_gap(solution.objective, reference.objective) <= 1e-3
    assert solution.violation <= 1e-6
    print(f"clarabel {clarabel_time:.1f}s, torch {solution.wall_time:.1f}s")  # noqa: T201


def test_smoothing_is_tightened_until_its_error_is_within_tol():
    """10-class pairwise robust hinge on digits features at a large radius (the retraining
    heads' regime): the objective ends far below the zero network's, so the smoothing floor
    relative to the latter was 10× too coarse (status "smoothing_inexact", 0.8 % above
    Clarabel at tol 1e-3). The solver now measures the smoothing error and keeps shrinking μ."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X[:200] - X[:200].mean(axis=0)
    Z = X @ np.linalg.svd(X, full_matrices=False)[2][:8].T
    program = cr.ConvexReLU(Z / Z.std(), y[:200], n_patterns=20, loss="hinge", beta=1e-3,
                            threat=cr.L2(1.0))
    reference = cr.solve(program, "clarabel")
    tol = 1e-3
    solution = cr.solve(program, "torch", method="al", tol=tol)
    assert solution.status == "optimal"
    assert abs(solution.info["smoothing_error"]) <= 10 * tol * max(1.0, solution.objective)
    assert _relative_gap(solution.objective, reference.objective) <= 5e-3
    assert solution.violation <= 1e-6


@pytest.mark.parametrize("batch_size", [None, 16])
def test_a_solve_continued_from_a_checkpoint_ends_where_the_uninterrupted_one_does(batch_size):
    """The augmented Lagrangian's checkpoints hold its whole state (iterate, multipliers,
    penalty, smoothing, subproblem tolerance, step): continued from one taken mid-solve, the
    solve takes the very same steps and returns the same point; streaming keeps the per-chunk
    multipliers. A checkpoint changes nothing of the solve it is taken from."""
    X, y = xor_data(20, 2)
    program = cr.ConvexReLU(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.1), n_patterns=4)
    options = {"tol": 1e-3, "dtype": torch.float64, "batch_size": batch_size}
    plain = solve_relu_torch(program, **options)
    states = []
    watched = solve_relu_torch(program, checkpoint=states.append, checkpoint_every=1e-9,
                               **options)
    assert watched.iterations == plain.iterations
    assert all(np.array_equal(watched.values[k], plain.values[k]) for k in ("V", "W"))
    assert len(states) >= 2 and all(s["options"]["method"] == "al" for s in states)
    middle = states[len(states) // 2]
    continued = solve_relu_torch(program, warm_start=middle["options"]["warm_start"], **options)
    assert middle["iterations"] + continued.iterations == plain.iterations
    for key in ("V", "W"):
        np.testing.assert_array_equal(continued.values[key], plain.values[key])


def test_a_budget_stop_hands_out_the_state_its_solve_would_go_on_from():
    """Stopped by its budget where an outer iteration ends, the augmented Lagrangian hands out
    exactly the checkpoint of that outer iteration; stopped inside a subproblem, a state that
    re-enters it, from which the solve still reaches the optimum. A warm start is the
    caller's to keep: continuing twice from it gives the same point. Bad ones are refused."""
    X, y = xor_data(20, 2)
    program = cr.ConvexReLU(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.1), n_patterns=4)
    options = {"tol": 1e-3, "dtype": torch.float64}
    periodic = []
    plain = solve_relu_torch(program, checkpoint=periodic.append, checkpoint_every=1e-9,
                             **options)
    first = periodic[0]
    stopped = []
    solve_relu_torch(program, max_iters=first["iterations"], accept_inaccurate=True,
                     checkpoint=stopped.append, checkpoint_every=math.inf, **options)
    (final,) = stopped
    a, b = first["options"]["warm_start"], final["options"]["warm_start"]
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    continued = [solve_relu_torch(program, warm_start=b, **options) for _ in range(2)]
    for key in ("V", "W"):
        assert np.array_equal(continued[0].values[key], plain.values[key])
        assert np.array_equal(continued[1].values[key], plain.values[key])
    # cut inside the first subproblem: the state re-enters it (outer 0, λ = 0)
    cut = []
    solve_relu_torch(program, max_iters=first["iterations"] // 2, accept_inaccurate=True,
                     checkpoint=cut.append, checkpoint_every=math.inf, **options)
    warm = cut[0]["options"]["warm_start"]
    assert warm["outer"] == 0 and not warm["multipliers"].any()
    done = cr.solve(program, "torch", **options, **cut[0]["options"])
    reference = cr.solve(program, "clarabel")
    assert done.status == "optimal" and _relative_gap(done.objective, reference.objective) <= 1e-3
    for bad in ({**warm, "U": warm["U"][:, :2]}, {**warm, "rho": float("nan")},
                {**warm, "step": 0.0}, {**warm, "multipliers": -1.0 - warm["multipliers"]},
                {k: v for k, v in warm.items() if k != "mu"}, "state.pt"):
        with pytest.raises(cr.InvalidInputError, match="warm_start"):
            solve_relu_torch(program, warm_start=bad)
