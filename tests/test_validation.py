"""Bad input is a typed error whose message says what to do."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import xor_data

import convexrobust as cr

X, Y = xor_data(20, 3)


@pytest.mark.parametrize("Program", [cr.ConvexReLU, cr.ConvexPolynomial])
@pytest.mark.parametrize(
    ("X_bad", "y_bad", "message"),
    [
        (np.where(np.eye(20, 3) > 0, np.nan, X), Y, "NaN"),
        (np.where(np.eye(20, 3) > 0, np.inf, X), Y, "infinite"),
        (X[:, 0], Y, "2-D"),
        (X, Y[:-1], "must match"),
        (X, np.zeros(20, dtype=int), "one class"),
        (X[:0], Y[:0], "empty"),
        (np.array([["a"] * 3] * 20), Y, "numeric"),
    ],
)
def test_bad_data(Program, X_bad, y_bad, message):
    with pytest.raises(cr.InvalidInputError, match=message):
        Program(X_bad, y_bad)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: cr.L2(-0.1), "eps must be finite and >= 0"),
        (lambda: cr.Linf(float("nan")), "eps must be finite"),
        (lambda: cr.ThreatModel("l3", 0.1), "unknown norm"),
        (lambda: cr.ConvexReLU(X, Y, loss="cross"), "unknown loss"),
        (lambda: cr.ConvexReLU(X, Y, beta=-1), "beta must be"),
        (lambda: cr.ConvexReLU(X, Y, n_patterns=0), "n_patterns"),
        (lambda: cr.ConvexReLU(X, Y, threat=0.5), "ThreatModel"),
        (lambda: cr.ConvexReLU(X, Y, task="ranking"), "unknown task"),
        (lambda: cr.ConvexReLU(X, X[:, 0], loss="hinge", task="regression"), "for classification"),
        (lambda: cr.ConvexPolynomial(X, Y, threat=cr.ThreatModel(1, 0.1)), "not L1"),
        (lambda: cr.ConvexPolynomial(X, Y, activation=(1.0, "b")), "activation"),
        (lambda: cr.ConvexPolynomial(X, Y, activation=(np.inf, 0, 0)), "finite"),
        (lambda: cr.ConvexPolynomial(X, Y, linf="box"), "linf relaxation"),
    ],
)
def test_bad_parameters(build, message):
    with pytest.raises(cr.InvalidInputError, match=message):
        build()


def test_bad_solver_requests():
    program = cr.ConvexReLU(X, Y, n_patterns=4)
    with pytest.raises(cr.InvalidInputError, match="unknown solver 'gurobi'"):
        cr.solve(program, "gurobi")
    with pytest.raises(cr.InvalidInputError,
                       match="takes a ConvexReLU, ConvexPolynomial or ConvexGatedReLU"):
        cr.solve("not a program", "scs")
    with pytest.raises(cr.InvalidInputError, match="cvxpy.Problem"):
        cr.solve(program, "scs", problem="not a problem")


def test_values_of_the_wrong_shape_are_rejected():
    program = cr.ConvexReLU(X, Y, n_patterns=4)
    with pytest.raises(cr.InvalidInputError, match="must have shape"):
        program.objective({"V": np.zeros((1, 2, 2)), "W": np.zeros((1, 2, 2))})
    poly = cr.ConvexPolynomial(X, Y)
    with pytest.raises(cr.InvalidInputError, match="must have shape"):
        poly.violation({"Z": np.zeros((1, 2, 2)), "Zp": np.zeros((1, 2, 2))}) + poly.objective(
            {"Z": np.zeros((1, 2, 2)), "Zp": np.zeros((1, 2, 2))})


def test_errors_are_also_standard_exceptions():
    """Callers catching ValueError / RuntimeError keep working."""
    assert issubclass(cr.InvalidInputError, ValueError)
    assert issubclass(cr.SolverFailedError, RuntimeError)
    assert issubclass(cr.SolverUnavailableError, RuntimeError)


def test_zero_radius_threat_means_nominal():
    assert not cr.ConvexReLU(X, Y, n_patterns=4, threat=cr.L2(0.0)).is_robust
    assert cr.ConvexReLU(X, Y, n_patterns=4, threat=cr.Linf(0.1)).threat.dual == 1.0
