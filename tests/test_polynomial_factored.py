"""The factored (Burer–Monteiro, L-BFGS) torch method of the polynomial programs: its neuron
map and decomposition, agreement with Clarabel with a certified gap, warm starts, chunking and
the options it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import three_class_data, xor_data

import convexrobust as cr
from convexrobust.solvers.lifted_cone import anisotropy
from convexrobust.solvers.polynomial_factored import lift, neurons, solve_polynomial_factored


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def _in_cone(Z: np.ndarray, atol: float = 1e-10) -> bool:
    d = Z.shape[-1] - 1
    return (np.linalg.eigvalsh(Z).min() >= -atol
            and abs(np.trace(Z[:d, :d]) - Z[d, d]) <= atol * max(1.0, abs(Z[d, d])))


def test_lift_stays_in_the_cone_for_any_parameters():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 5, generator=gen, dtype=torch.float64)
    W = lift(x).numpy()
    assert W.shape == (2, 3, 5, 5)
    assert all(_in_cone(Z) for Z in W.reshape(-1, 5, 5))


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_neurons_decompose_any_matrix_of_the_cone(rank):
    """Sturm–Zhang: a matrix of K of rank k is the lift of k neurons, recovered exactly."""
    rng = np.random.default_rng(rank)
    d = 3
    x = torch.as_tensor(rng.normal(size=(1, 1, rank, d + 1)))
    Z = lift(x)[0, 0].numpy()  # a matrix of K of rank ≤ `rank`, built from neurons
    # rotate its factors so that the eigenvectors are not neurons themselves
    params = neurons(Z, rank=d + 1)
    assert params.shape == (d + 1, d + 1)
    back = lift(torch.as_tensor(params)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(back, Z, atol=1e-10)
    # a generic matrix of K (full rank) too
    A = rng.normal(size=(d + 1, d + 1))
    S = np.ones(d + 1)
    S[:d] = np.sqrt((A[d] @ A[d]) / np.sum(A[:d] ** 2))  # a congruence onto tr(Y1) = y_dd
    Y = (S[:, None] * A) @ (S[:, None] * A).T
    assert _in_cone(Y)
    full = lift(torch.as_tensor(neurons(Y, rank=d + 1))[None, None])[0, 0].numpy()
    np.testing.assert_allclose(full, Y, atol=1e-9)
    with pytest.raises(cr.InvalidInputError, match="rank"):
        neurons(Y, rank=d)


def _check_against_clarabel(program: cr.ConvexPolynomial, certified: bool) -> cr.Solution:
    """Within 1e-3 of Clarabel's optimum, feasible, and its certificate a true lower bound;
    ``certified``: the certificate itself reaches tol (status "optimal"), else the solve may
    end "stalled" (the dual bound is tight only at the smoothed program's exact optimum)."""
    reference = cr.solve(program, "clarabel")
    solution = cr.solve(program, "torch", method="factored", tol=1e-3, accept_inaccurate=True)
    assert solution.info["method"] == "factored" and solution.gap_kind == "certified_gap"
    assert solution.status == "optimal" if certified else solution.status in ("optimal",
                                                                              "stalled")
    assert (solution.gap <= 1e-3) == (solution.status == "optimal")
    assert _rel(solution.objective, reference.objective) <= 1e-3
    # a lower bound on the optimum, and a feasible point: never past the optimum (up to
    # Clarabel's own accuracy)
    assert solution.info["dual_bound"] <= reference.objective + 1e-6
    assert solution.objective >= reference.objective - 1e-5
    assert solution.violation <= 1e-8
    return solution


@pytest.mark.parametrize(("loss", "threat", "linf"), [
    ("hinge", None, "diagonal"), ("hinge", cr.L2(0.2), "diagonal"),
    ("logistic", cr.L2(0.2), "diagonal"), ("logistic", cr.Linf(0.1), "containment")])
def test_binary_matches_clarabel_with_a_certified_gap(loss, threat, linf):
    X, y = xor_data(20, 2)
    _check_against_clarabel(
        cr.ConvexPolynomial(X, y, loss=loss, beta=1e-2, threat=threat, linf=linf),
        certified=True)


def test_multiclass_robust_matches_clarabel():
    X, y = three_class_data(18, 2)
    _check_against_clarabel(cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2,
                                                 threat=cr.L2(0.1)), certified=False)


def test_warm_start_never_changes_the_optimum_and_is_decomposed():
    X, y = three_class_data(18, 2)
    program = cr.ConvexPolynomial(X, y, loss="logistic", beta=1e-2, threat=cr.L2(0.1))
    cold = solve_polynomial_factored(program, tol=1e-3)
    apg = cr.solve(program, "torch", method="apg", tol=1e-5)
    for start in (cold, apg, {"Z": np.zeros_like(cold.values["Z"]),
                              "Zp": np.zeros_like(cold.values["Zp"])}):
        warm = solve_polynomial_factored(program, tol=1e-3, warm_start=start)
        assert warm.status == "optimal" and warm.gap <= 1e-3
        assert _rel(warm.objective, cold.objective) <= 2e-3
    # from its own optimum it is certified at once
    again = solve_polynomial_factored(program, tol=1e-3, warm_start=cold)
    assert again.iterations <= cold.iterations


def test_chunked_evaluation_gives_the_same_solve():
    X, y = xor_data(40, 3)
    program = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.1))
    full = solve_polynomial_factored(program, batch_size=None, accept_inaccurate=True)
    chunked = solve_polynomial_factored(program, batch_size=15, accept_inaccurate=True)
    assert chunked.info["chunks"] == 3
    # the same iterates up to the summation order's round-off, which the stopping rule may
    # meet an iteration earlier or later
    assert _rel(chunked.objective, full.objective) <= 1e-6


def test_deterministic_for_a_seed_and_a_budget_raises_unless_accepted():
    program = cr.ConvexPolynomial(*xor_data(20, 2), loss="hinge", beta=1e-2, threat=cr.L2(0.2))
    a = solve_polynomial_factored(program, seed=1, tol=1e-3)
    b = solve_polynomial_factored(program, seed=1, tol=1e-3)
    np.testing.assert_array_equal(a.values["Z"], b.values["Z"])
    with pytest.raises(cr.SolverFailedError) as err:
        solve_polynomial_factored(program, max_iters=2)
    assert err.value.status == "max_iters"
    short = solve_polynomial_factored(program, max_iters=2, accept_inaccurate=True)
    assert short.status == "max_iters" and short.violation <= 1e-8
    assert short.gap >= 0 and short.info["dual_bound"] <= short.objective


@pytest.mark.parametrize(("build", "options", "match"), [
    (lambda: cr.ConvexPolynomial(*xor_data(20, 2), loss="squared", beta=1e-2), {}, "apg"),
    (lambda: cr.ConvexPolynomial(*xor_data(20, 2), loss="hinge", beta=1e-2,
                                 threat=cr.Linf(0.1)), {}, "containment"),
    (lambda: cr.ConvexPolynomial(*xor_data(20, 2), loss="hinge", beta=1e-2), {"rank": 0},
     "rank"),
    (lambda: cr.ConvexPolynomial(*xor_data(20, 2), loss="hinge", beta=1e-2), {"tol": 0},
     "tol"),
])
def test_refused_programs_and_options_are_invalid_input(build, options, match):
    with pytest.raises(cr.InvalidInputError, match=match):
        solve_polynomial_factored(build(), **options)


def test_backend_routes_method_and_rank_and_refuses_foreign_options():
    program = cr.ConvexPolynomial(*xor_data(20, 2), loss="hinge", beta=1e-2, threat=cr.L2(0.2))
    by_rank = cr.solve(program, "torch", rank=3, tol=1e-3, accept_inaccurate=True)
    assert by_rank.info["method"] == "factored" and by_rank.info["rank"] == 3
    with pytest.raises(cr.InvalidInputError, match="smoothing_start"):
        cr.solve(program, "torch", method="factored", smoothing_start=0.1)
    with pytest.raises(cr.InvalidInputError, match="factored"):
        cr.solve(program, "torch", method="bm")
    relu = cr.ConvexReLU(*xor_data(20, 2), loss="hinge", beta=1e-2, n_patterns=4)
    with pytest.raises(cr.InvalidInputError, match="rank"):  # an option of another family
        cr.solve(relu, "torch", rank=3)


def test_auto_takes_the_factored_method_only_for_its_own_options():
    """"auto" keeps robust SDPs on the accelerated gradient (which whitens anisotropic samples,
    ``info["preconditioned"]``); ``rank``, an option only the factored method takes, selects
    it."""
    from convexrobust.solvers.polynomial_first_order import WHITEN_MIN_ANISOTROPY

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 20))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    skewed = X * np.array([1.0] + [0.05] * 19)  # one dominant direction: anisotropy ≈ 19 of 20
    assert anisotropy(X) < WHITEN_MIN_ANISOTROPY <= anisotropy(skewed)
    assert anisotropy(np.zeros((3, 4))) == 1.0
    options = {"tol": 1e-3, "accept_inaccurate": True, "max_iters": 5}
    for samples, whitened in ((skewed, True), (X, False)):
        robust = cr.ConvexPolynomial(samples, y, loss="hinge", beta=1e-2, threat=cr.L2(0.2))
        info = cr.solve(robust, "torch", **options).info
        assert info["method"] == "apg" and info["preconditioned"] is whitened
        assert cr.solve(robust, "torch", rank=3, **options).info["method"] == "factored"
    X, y = xor_data(20, 2)
    nominal = cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2)
    assert cr.solve(nominal, "torch", **options).info["method"] == "admm"
