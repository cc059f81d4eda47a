"""The estimators on scikit-learn's toy datasets, raw and standardised, with every installed
solver — never an exception for ordinary data — and the fallback when a named solver ends
inaccurate. The full grid (every dataset × scaling × estimator × solver) is marked slow."""

import warnings

import numpy as np
import pytest
from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

import convexrobust as cr
from convexrobust.solvers import register_solver, unregister_solver

CLASSIFICATION = ("iris", "wine", "breast_cancer", "digits")
SOLVERS = ("auto", "clarabel", "scs", "torch")


def _data(name: str, standardise: bool) -> tuple[np.ndarray, np.ndarray]:
    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    if standardise:
        X = StandardScaler().fit_transform(X)
        if name == "diabetes":
            y = (y - y.mean()) / y.std()
    return X, y


def _fit_and_check(estimator, X: np.ndarray, y: np.ndarray, solver: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fallback is allowed to warn
        estimator.fit(X, y)
    assert estimator.solver_ in cr.available_solvers()
    if solver != "auto" and estimator.solver_ != solver:
        assert estimator.solution_.info["auto_failures"][0].startswith(f"{solver}:")
    score = estimator.score(X, y)
    # training accuracy / R² of a fitted two-layer network: far above chance on these sets
    assert score > (0.8 if estimator._task == "classification" else 0.3)


def _cases(names: tuple[str, ...], solvers: tuple[str, ...]):
    for name in names:
        for standardise in (False, True):
            for solver in solvers:
                yield name, standardise, solver


@pytest.mark.parametrize("estimator", [cr.ConvexReLUClassifier, cr.ConvexPolynomialClassifier])
@pytest.mark.parametrize("standardise", [False, True])
def test_iris_with_defaults(estimator, standardise):
    _fit_and_check(estimator(), *_data("iris", standardise), "auto")


@pytest.mark.parametrize("solver", ["clarabel", "scs"])
def test_polynomial_classifier_on_wine_with_each_conic_solver(solver):
    _fit_and_check(cr.ConvexPolynomialClassifier(solver=solver), *_data("wine", True), solver)


@pytest.mark.parametrize("estimator", [cr.ConvexReLURegressor(n_patterns=10),
                                       cr.ConvexPolynomialRegressor()])
def test_diabetes_regressors(estimator):
    _fit_and_check(estimator, *_data("diabetes", True), "auto")


def test_inaccurate_named_solver_falls_back_warns_and_records(rng):
    calls = []

    def flaky(program, **options):
        calls.append(options)
        raise cr.SolverFailedError("flaky stopped early", status="optimal_inaccurate",
                                   solver="flaky")

    register_solver("flaky", flaky)
    try:
        X, y = _data("iris", True)
        est = cr.ConvexPolynomialClassifier(solver="flaky", solver_options={"tol": 1e-9})
        with pytest.warns(ConvergenceWarning, match="flaky"):
            est.fit(X, y)
    finally:
        unregister_solver("flaky")
    assert calls == [{"tol": 1e-9}]  # the options went to the named solver only
    assert est.solver_ == est.solution_.solver != "flaky"
    assert est.solution_.info["auto_failures"] == ["flaky: optimal_inaccurate"]
    assert est.score(X, y) > 0.9


def test_a_broken_named_solver_still_fits_through_auto(rng):
    def broken(program, **options):
        raise cr.SolverFailedError("nope", status="numerical_error", solver="broken")

    register_solver("broken", broken, accepts=lambda p, o: None)
    X, y = rng.standard_normal((20, 2)), np.arange(20) % 2
    try:
        est = cr.ConvexReLUClassifier(solver="broken", n_patterns=4)
        with pytest.warns(ConvergenceWarning):
            est.fit(X, y)
        assert est.solver_ != "broken"
    finally:
        unregister_solver("broken")


def test_raises_only_when_every_route_failed(rng):
    X, y = rng.standard_normal((20, 2)), np.arange(20) % 2
    program = cr.ConvexReLU(X, y, n_patterns=4, loss="hinge")
    with pytest.raises(cr.SolverFailedError, match="every solver failed") as info:
        cr.solve(program, "auto", max_iters=1)
    assert info.value.status == "failed"


def test_infeasible_is_raised_not_fallen_back():
    def infeasible(program, **options):
        raise cr.SolverFailedError("infeasible", status="infeasible", solver="x")

    register_solver("infeasible-solver", infeasible)
    try:
        X, y = _data("iris", True)
        with pytest.raises(cr.SolverFailedError, match="infeasible"):
            cr.ConvexPolynomialClassifier(solver="infeasible-solver").fit(X, y)
    finally:
        unregister_solver("infeasible-solver")


@pytest.mark.slow
@pytest.mark.parametrize("name,standardise,solver", list(_cases(CLASSIFICATION, SOLVERS)))
@pytest.mark.parametrize("estimator", [cr.ConvexReLUClassifier, cr.ConvexPolynomialClassifier])
def test_every_toy_classification_dataset(estimator, name, standardise, solver):
    _fit_and_check(estimator(solver=solver), *_data(name, standardise), solver)


@pytest.mark.slow
@pytest.mark.parametrize("name,standardise,solver", list(_cases(("diabetes",), SOLVERS)))
@pytest.mark.parametrize("estimator", [cr.ConvexReLURegressor, cr.ConvexPolynomialRegressor])
def test_diabetes_every_solver(estimator, name, standardise, solver):
    _fit_and_check(estimator(solver=solver), *_data(name, standardise), solver)


def test_best_effort_returns_the_last_routes_point(rng):
    X, y = rng.standard_normal((20, 2)), np.arange(20) % 2
    program = cr.ConvexReLU(X, y, n_patterns=4, loss="hinge")
    solution = cr.solve(program, "auto", best_effort=True, max_iters=1)
    assert solution.solver == "torch" and solution.status == "max_iters"
    assert len(solution.info["auto_failures"]) == len(cr.solvers.auto_order(program)) - 1
    assert np.isfinite(solution.objective) and solution.violation <= 1e-9  # repaired, judged


def test_a_program_too_large_for_cvxpy_is_refused_and_the_estimator_goes_on(monkeypatch):
    from convexrobust.solvers import conic

    X, y = _data("iris", True)
    program = cr.ConvexReLU(X, y, n_patterns=10, loss="hinge")
    monkeypatch.setattr(conic, "MAX_CONSTRAINT_NONZEROS", program.n_constraint_nonzeros() - 1)
    with pytest.raises(cr.SolverFailedError, match="constraint nonzeros") as info:
        cr.solve(program, "clarabel")
    assert info.value.status == "too_large"
    assert cr.solvers.auto_order(program) == ["torch"]
    est = cr.ConvexReLUClassifier(n_patterns=10, solver="clarabel")
    with pytest.warns(ConvergenceWarning, match="clarabel"):
        est.fit(X, y)
    assert est.solver_ == "torch"
    assert est.solution_.info["auto_failures"][0] == "clarabel: too_large"


@pytest.mark.parametrize("threat", [None, pytest.param(cr.L2(0.1), marks=pytest.mark.slow)])
def test_the_size_estimate_is_close_to_cvxpys(threat):
    import cvxpy as cp

    X, y = _data("wine", True)
    X, y = X[::3, :5], y[::3]
    for program in (cr.ConvexReLU(X, y, n_patterns=8, loss="hinge", threat=threat),
                    cr.ConvexPolynomial(X, y, threat=threat)):
        data, _, _ = program.to_cvxpy().get_problem_data(cp.CLARABEL)
        assert 0.5 <= program.n_constraint_nonzeros() / data["A"].nnz <= 2.0


def test_auto_sends_large_robust_sdps_to_torch(rng):
    from convexrobust.solvers import conic

    X, y = rng.standard_normal((455, 30)), np.arange(455) % 2  # Kuelbs et al.'s breast cancer size
    robust = cr.ConvexPolynomial(X, y, loss="hinge", beta=0.01, threat=cr.L2(0.5))
    assert robust.n_constraint_nonzeros() > conic.AUTO_CONIC_MAX_ROBUST_SDP_NONZEROS
    assert cr.solvers.auto_order(robust) == ["torch"]
    # the nominal program of the same size, and a smaller robust one, still go to a conic solver
    assert cr.solvers.auto_order(cr.ConvexPolynomial(X, y, loss="hinge"))[0] == "clarabel"
    small = cr.ConvexPolynomial(X[:, :10], y, loss="hinge", threat=cr.L2(0.5))
    assert cr.solvers.auto_order(small)[0] == "clarabel"
