"""Property-based tests: every public entry point turns bad input into a typed error.

Random shapes, dtypes (float16/32/64, int, bool, object, complex, strings), NaN/inf, label sets
(one class, strings, negative integers, gaps, mixed types), radii (0, tiny, huge, NaN, < 0) and
options go into :class:`~convexrobust.ConvexReLU`, :class:`~convexrobust.ConvexPolynomial`,
:class:`~convexrobust.ConvexGatedReLU`,
:func:`~convexrobust.solve`, :func:`~convexrobust.certified_radius` and the scikit-learn
estimators. Every outcome must be a result (checked for the basic promises it makes) or a
:class:`~convexrobust.ConvexRobustError` subclass with a message — never another exception.

Real solves are tiny (n ≤ 12, d ≤ 3, few patterns, small iteration budgets), so the module runs
in well under a minute on one core. The examples are derandomised (the same on every machine);
set ``CONVEXROBUST_PROPERTY_EXAMPLES=500`` to explore fresh random inputs instead.
"""

from __future__ import annotations

import functools
import math
import os
import warnings

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convexrobust as cr
from convexrobust.errors import ConvexRobustError
from convexrobust.networks import PolynomialActivation, TwoLayerPolynomial, TwoLayerReLU

_EXPLORE = int(os.environ.get("CONVEXROBUST_PROPERTY_EXAMPLES", "0"))
fuzz = settings(
    max_examples=_EXPLORE or 25,
    deadline=None,
    derandomize=not _EXPLORE,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)

def outcome(call, *args, **kwargs):
    """``call(*args, **kwargs)``: its result, or the :class:`ConvexRobustError` it raised.
    Any other exception fails the test, naming its type and message."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call(*args, **kwargs)
    except ConvexRobustError as err:
        assert str(err).strip(), f"{type(err).__name__} without a message"
        return err
    except Exception as err:  # noqa: BLE001 - the property under test
        raise AssertionError(
            f"{getattr(call, '__qualname__', call)} raised {type(err).__name__} "
            f"(not a ConvexRobustError): {err}"
        ) from err


def failed(result: object) -> bool:
    return isinstance(result, ConvexRobustError)


# ---------------------------------------------------------------------- data strategies
def _real_matrix(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


@st.composite
def good_features(draw, *, n_max: int = 12, d_max: int = 3) -> np.ndarray:
    n = draw(st.integers(2, n_max))
    d = draw(st.integers(1, d_max))
    return _real_matrix(n, d, draw(st.integers(0, 2**16)))


_X_KINDS = ("float64", "float32", "float16", "int", "bool", "object", "list", "tensor32",
            "tensor_bf16", "tensor_int", "complex", "strings", "numeric_strings", "nan", "inf",
            "neg_inf", "huge", "tiny", "one_d", "three_d", "zero_d", "no_rows", "no_columns",
            "ragged", "none", "dict", "object_none")


@st.composite
def features(draw, *, n: int | None = None, d: int | None = None):
    """Feature matrices, good and bad, and the kind drawn."""
    n = draw(st.integers(1, 12)) if n is None else n
    d = draw(st.integers(1, 3)) if d is None else d
    X = _real_matrix(n, d, draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(_X_KINDS))
    k = draw(st.integers(0, n * d - 1))
    bad = X.copy().ravel()
    out: object
    if kind == "float64":
        out = X
    elif kind in ("float32", "float16"):
        out = X.astype(kind)
    elif kind == "int":
        out = np.round(3 * X).astype(np.int64)
    elif kind == "bool":
        out = X > 0
    elif kind == "object":
        out = X.astype(object)
    elif kind == "list":
        out = X.tolist()
    elif kind == "tensor32":
        out = torch.as_tensor(X, dtype=torch.float32)
    elif kind == "tensor_bf16":
        out = torch.as_tensor(X, dtype=torch.bfloat16)
    elif kind == "tensor_int":
        out = torch.as_tensor(np.round(X), dtype=torch.int64)
    elif kind == "complex":
        out = X + 1j
    elif kind == "strings":
        out = np.full((n, d), "a")
    elif kind == "numeric_strings":
        out = X.astype(str)
    elif kind in ("nan", "inf", "neg_inf"):
        bad[k] = {"nan": np.nan, "inf": np.inf, "neg_inf": -np.inf}[kind]
        out = bad.reshape(n, d)
    elif kind == "huge":
        out = X * 1e300
    elif kind == "tiny":
        out = X * 1e-300
    elif kind == "one_d":
        out = X.ravel()
    elif kind == "three_d":
        out = X[:, :, None]
    elif kind == "zero_d":
        out = np.float64(1.5)
    elif kind == "no_rows":
        out = X[:0]
    elif kind == "no_columns":
        out = X[:, :0]
    elif kind == "ragged":
        out = [list(row) for row in X]
        out[0] = out[0] + [1.0]
    elif kind == "none":
        out = None
    elif kind == "dict":
        out = {"x": 1}
    else:  # object_none
        obj = X.astype(object)
        obj[0, 0] = None
        out = obj
    return out, kind


_Y_KINDS = ("binary", "pm_one", "multiclass", "strings", "negative", "gaps", "bool", "floats",
            "one_class", "integral_floats", "nan", "inf", "mixed_object", "none_entries",
            "wrong_length", "column", "two_columns", "three_d", "scalar", "none", "tensor",
            "complex", "ragged", "bytes")


@st.composite
def labels(draw, n: int):
    """Labels or targets for ``n`` samples, good and bad, and the kind drawn."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(_Y_KINDS))
    base = np.arange(n) % 2
    rng.shuffle(base)
    three = np.arange(n) % 3
    out: object
    if kind == "binary":
        out = base
    elif kind == "pm_one":
        out = 2 * base - 1
    elif kind == "multiclass":
        out = three
    elif kind == "strings":
        out = np.array(["cat", "dog", "emu"])[three]
    elif kind == "negative":
        out = -3 - base
    elif kind == "gaps":
        out = np.array([0, 5, 9])[three]
    elif kind == "bool":
        out = base.astype(bool)
    elif kind == "floats":
        out = rng.standard_normal(n)
    elif kind == "one_class":
        out = np.full(n, draw(st.sampled_from([0, 7, -1])))
    elif kind == "integral_floats":
        out = base.astype(np.float64)
    elif kind in ("nan", "inf"):
        out = rng.standard_normal(n)
        out[draw(st.integers(0, n - 1))] = np.nan if kind == "nan" else np.inf
    elif kind == "mixed_object":
        out = np.array([1, "a"] * n, dtype=object)[:n]
    elif kind == "none_entries":
        out = np.array([1, None] * n, dtype=object)[:n]
    elif kind == "wrong_length":
        out = np.arange(n + draw(st.sampled_from([-1, 1, 5]))) % 2
    elif kind == "column":
        out = base[:, None]
    elif kind == "two_columns":
        out = rng.standard_normal((n, 2))
    elif kind == "three_d":
        out = base[:, None, None]
    elif kind == "scalar":
        out = 1
    elif kind == "none":
        out = None
    elif kind == "tensor":
        out = torch.as_tensor(base)
    elif kind == "complex":
        out = base + 1j
    elif kind == "ragged":
        out = [[0], [1, 2]] + [[0]] * max(n - 2, 0)
    else:  # bytes
        out = np.array([b"x", b"y"])[base]
    return out, kind


radii = st.one_of(
    st.sampled_from([0.0, 1e-300, 1e-8, 0.05, 0.3, 2.0, 1e300, math.nan, math.inf, -0.1,
                     -0.0]),
    st.floats(min_value=0.0, max_value=1.0),
)
junk = st.sampled_from(["junk", None, -1, 1.5, math.nan, True, [1], {"a": 1}, object(),
                        np.ones(2), 1j])


@st.composite
def threats(draw):
    """A ThreatModel (any norm, any radius — building it may fail), None, or junk."""
    choice = draw(st.sampled_from(["l2", "linf", "l1", "none", "junk", "string"]))
    if choice == "none":
        return None
    if choice == "junk":
        return draw(junk)
    if choice == "string":
        return "l2"
    eps = draw(radii)
    built = outcome({"l2": cr.L2, "linf": cr.Linf,
                     "l1": functools.partial(cr.ThreatModel, 1)}[choice], eps)
    if failed(built):
        assert isinstance(built, cr.InvalidInputError)
        assert not (math.isfinite(eps) and eps >= 0), f"{choice}({eps!r}) was refused"
        return None
    assert built.eps == eps and built.eps >= 0
    return built


def maybe(valid, bad=junk):
    """Mostly a valid option, sometimes junk."""
    return st.one_of(valid, valid, bad)


def relu_options(draw) -> dict:
    opts = {
        "loss": draw(maybe(st.sampled_from(["squared", "hinge", "logistic", "HINGE"]),
                           st.sampled_from(["cross", "", None, 3]))),
        "beta": draw(maybe(st.sampled_from([0.0, 1e-3, 0.5]),
                           st.sampled_from([-1.0, math.nan, math.inf, "a", None, True]))),
        "threat": draw(threats()),
        "n_patterns": draw(maybe(st.integers(1, 6),
                                 st.sampled_from([0, -2, 2.5, "4", None, True, math.nan,
                                                  math.inf, 10**12]))),
        "bias": draw(maybe(st.booleans(), st.sampled_from(["no", None, 2, np.ones(2)]))),
        "task": draw(maybe(st.sampled_from(["auto", "classification", "regression"]),
                           st.sampled_from(["ranking", None, 1]))),
        "seed": draw(maybe(st.integers(0, 100), st.sampled_from([-1, "a", 1.5, None]))),
    }
    return {k: v for k, v in opts.items() if draw(st.integers(0, 4)) > 0}


def polynomial_options(draw) -> dict:
    opts = {
        "loss": draw(maybe(st.sampled_from(["squared", "hinge", "logistic"]),
                           st.sampled_from(["cross", None]))),
        "beta": draw(maybe(st.sampled_from([0.0, 1e-3, 0.5]),
                           st.sampled_from([-1.0, math.nan, "a"]))),
        "threat": draw(threats()),
        "task": draw(maybe(st.sampled_from(["auto", "classification", "regression"]),
                           st.sampled_from(["ranking", None]))),
        "activation": draw(maybe(
            st.sampled_from([None, (0.1, 0.5, 0.4), PolynomialActivation(0.2, 0.5, 0.1),
                             np.array([0.1, 0.5, 0.4]), (0.0, 0.0, 0.0), (-0.1, 1.0, 0.0)]),
            st.sampled_from(["relu", (1.0, 2.0), (math.nan, 0, 0), (1.0, "b", 0.0), 3,
                             {"a": 1}, (1e308, 1e308, 1e308)]))),
        "linf": draw(maybe(st.sampled_from(["diagonal", "containment", "Diagonal"]),
                           st.sampled_from(["box", None, 0]))),
    }
    return {k: v for k, v in opts.items() if draw(st.integers(0, 4)) > 0}


def _check_program(program: cr.ConvexProgram) -> None:
    assert program.X.dtype == np.float64 and np.all(np.isfinite(program.X))
    assert program.X.ndim == 2 and min(program.X.shape) >= 1
    values = program.targets.values
    assert values.shape[0] == program.n_samples and np.all(np.isfinite(values))
    assert program.n_variables() > 0
    assert program.beta >= 0 and math.isfinite(program.beta)
    assert program.threat is None or program.threat.eps > 0
    if program.targets.is_classification:
        assert len(program.targets.classes) >= 2
    program.describe()


# ---------------------------------------------------------------------- programs
@fuzz
@given(st.data())
def test_programs_build_or_raise_typed_errors(data):
    family = data.draw(st.sampled_from([cr.ConvexReLU, cr.ConvexPolynomial,
                                        cr.ConvexGatedReLU]))
    X, _ = data.draw(features())
    n = X.shape[0] if isinstance(X, np.ndarray) and X.ndim >= 1 else 4
    y, _ = data.draw(labels(max(n, 1)))
    # the gated program takes the ReLU options; any threat but None is a typed error
    options = (polynomial_options if family is cr.ConvexPolynomial else relu_options)(data.draw)
    program = outcome(family, X, y, **options)
    if not failed(program):
        _check_program(program)


@fuzz
@given(X=good_features(), data=st.data())
def test_programs_on_good_features_and_any_labels(X, data):
    """Only the labels and the options vary: a valid label set must build."""
    y, kind = data.draw(labels(X.shape[0]))
    family = data.draw(st.sampled_from([cr.ConvexReLU, cr.ConvexPolynomial,
                                        cr.ConvexGatedReLU]))
    program = outcome(family, X, y)
    if kind in ("binary", "pm_one", "multiclass", "strings", "negative", "gaps", "bool",
                "integral_floats", "floats", "tensor", "column"):
        assert not failed(program), f"{kind} labels were refused: {program}"
    if not failed(program):
        _check_program(program)


# ---------------------------------------------------------------------- solve
@functools.cache
def _valid_program(family: str, n: int, d: int, seed: int, loss: str, eps: float,
                   norm: str, classes: int) -> cr.ConvexProgram:
    X = _real_matrix(n, d, seed)
    y = np.arange(n) % classes
    threat = {"2": cr.L2, "inf": cr.Linf}[norm](eps)
    if family == "relu":
        return cr.ConvexReLU(X, y, n_patterns=3, loss=loss, threat=threat, seed=seed)
    if family == "gated_relu":  # no threat: the radius is ignored
        return cr.ConvexGatedReLU(X, y, n_patterns=3, loss=loss, seed=seed)
    return cr.ConvexPolynomial(X, y, loss=loss, threat=threat)


@st.composite
def tiny_programs(draw) -> cr.ConvexProgram:
    family = draw(st.sampled_from(["relu", "polynomial", "gated_relu"]))
    eps = draw(st.sampled_from([0.0, 1e-300, 0.05, 0.5, 5.0]))
    # a robust SDP has one LMI per sample, side and class: cvxpy compiles 72 of them in ~2 s
    small = family == "polynomial" and eps > 0
    return _valid_program(
        family, draw(st.integers(3, 5) if small else st.integers(4, 12)), draw(st.integers(1, 3)),
        draw(st.integers(0, 3)), draw(st.sampled_from(["hinge", "squared", "logistic"])), eps,
        draw(st.sampled_from(["2", "inf"])), 2 if small else draw(st.sampled_from([2, 3])))


def _check_solution(solution: cr.Solution, program: cr.ConvexProgram, accept: bool) -> None:
    assert solution.program is program
    if not accept:
        assert solution.status == "optimal", f"non-optimal status {solution.status!r} returned"
    assert np.isfinite(solution.objective), solution
    assert solution.violation >= 0 and np.isfinite(solution.violation), solution
    net = outcome(solution.network)
    assert not failed(net), net


@fuzz
@given(program=tiny_programs(), data=st.data())
def test_solve_with_valid_options(program, data):
    """Any solver name (valid or not) with valid options: a Solution or a typed error."""
    solver = data.draw(st.sampled_from(["clarabel", "CLARABEL", "scs", "torch", "auto",
                                        "gurobi", "", None, 3, ["scs"]]))
    accept = data.draw(st.booleans())
    options: dict[str, object] = {"accept_inaccurate": accept}
    if solver in ("scs", "auto"):
        options["max_iters"] = data.draw(st.integers(1, 200))
    elif solver == "torch":
        options["max_iters"] = data.draw(st.integers(1, 30))
        options["dtype"] = data.draw(st.sampled_from([torch.float64, torch.float32]))
        options["device"] = data.draw(st.sampled_from([None, "cpu", torch.device("cpu")]))
        options["time_limit"] = data.draw(st.sampled_from([None, 30.0]))
    elif isinstance(solver, str) and solver.lower() == "clarabel":
        options["max_iters"] = data.draw(st.sampled_from([None, 1, 5, 100]))
    if isinstance(solver, str) and solver.lower() in ("clarabel", "scs", "auto"):
        options["tol"] = data.draw(st.sampled_from([1e-6, 1e-4]))
    solution = outcome(cr.solve, program, solver, **options)
    if failed(solution):
        assert isinstance(solution, (cr.InvalidInputError, cr.SolverFailedError,
                                     cr.SolverUnavailableError)), solution
        if solver in ("gurobi", "", None, 3, ["scs"]):
            assert isinstance(solution, cr.InvalidInputError)
        return
    _check_solution(solution, program, accept)


def test_solve_rejects_what_is_not_a_program():
    for thing in (None, "program", np.ones((3, 3)), cr.L2(0.1)):
        assert isinstance(outcome(cr.solve, thing), cr.InvalidInputError)


@fuzz
@given(program=tiny_programs(), data=st.data())
def test_solve_with_junk_options(program, data):
    solver = data.draw(st.sampled_from(["clarabel", "scs", "torch", "auto"]))
    key = data.draw(st.sampled_from(["tol", "max_iters", "time_limit", "device", "dtype",
                                     "accept_inaccurate", "seed", "method", "problem",
                                     "no_such_option"]))
    value = data.draw(st.sampled_from(["junk", -1, 0, 2.0, 1.5, math.nan, math.inf, None,
                                       True, [1], torch.int64, "cuda:7"]))
    options: dict[str, object] = {"max_iters": 30} if key != "max_iters" else {}
    if solver in ("torch", "auto") and key != "time_limit":
        options["time_limit"] = 2.0  # a junk max_iters may mean the default budget
    options[key] = value
    solution = outcome(cr.solve, program, solver, **options)
    if not failed(solution):
        _check_solution(solution, program, bool(options.get("accept_inaccurate")))


# ---------------------------------------------------------------------- certified_radius
@functools.cache
def _trained_head(family: str, classes: int) -> torch.nn.Module:
    X = _real_matrix(10, 2, classes)
    y = np.arange(10) % classes
    program = (cr.ConvexReLU(X, y, n_patterns=4, loss="hinge") if family == "relu"
               else cr.ConvexPolynomial(X, y, loss="hinge"))
    return cr.solve(program, "clarabel").network()


@st.composite
def heads(draw) -> torch.nn.Module:
    kind = draw(st.sampled_from(["trained", "random"]))
    family = draw(st.sampled_from(["relu", "polynomial"]))
    if kind == "trained":
        return _trained_head(family, draw(st.sampled_from([2, 3])))
    r = np.random.default_rng(draw(st.integers(0, 2**16)))
    m, d, c = draw(st.integers(1, 4)), 2, draw(st.sampled_from([1, 3]))
    scale = draw(st.sampled_from([1.0, 0.0, 1e200]))
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    if family == "relu":
        return TwoLayerReLU(scale * r.standard_normal((m, d)), r.standard_normal(m),
                            r.standard_normal((m, c)), dtype=dtype)
    U = r.standard_normal((m, d))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    return TwoLayerPolynomial(U, scale * r.standard_normal((m, c)),
                              PolynomialActivation.relu_fit(5.0), dtype=dtype)


norms = st.sampled_from([2, "l2", "L2", "inf", "linf", math.inf, 1, "l1", 2.0, np.float64(2),
                         "l3", 3, None, math.nan, True, [2], 0])


@fuzz
@given(net=heads(), data=st.data())
def test_certified_radius_returns_radii_or_raises_typed_errors(net, data):
    n = data.draw(st.integers(1, 12))
    X, _ = data.draw(features(n=n, d=data.draw(st.sampled_from([2, 2, 2, 1, 3]))))
    y, _ = data.draw(labels(n))
    norm = data.draw(norms)
    device = data.draw(st.sampled_from([None, None, "cpu", torch.device("cpu"), "junk", 3,
                                        "cuda:7", "meta:0"]))
    radii = outcome(cr.certified_radius, net, X, y, norm, device=device)
    if failed(radii):
        assert isinstance(radii, cr.InvalidInputError), radii
        return
    assert radii.radius.shape == (n,)
    assert not np.any(np.isnan(radii.radius)) and np.all(radii.radius >= 0)
    assert set(radii.method) <= {"exact", "lower_bound", "l2_containment", "misclassified"}
    assert np.all(radii.radius[radii.method == "misclassified"] == 0)


def test_certified_radius_rejects_what_is_not_a_head():
    X = np.zeros((2, 2))
    for thing in (None, "net", torch.nn.Linear(2, 1), np.ones(3)):
        assert isinstance(outcome(cr.certified_radius, thing, X, [0, 1]), cr.InvalidInputError)


# ---------------------------------------------------------------------- estimators
CLASSIFIERS = (cr.ConvexReLUClassifier, cr.ConvexPolynomialClassifier)
REGRESSORS = (cr.ConvexReLURegressor, cr.ConvexPolynomialRegressor)


def _estimator_params(draw, estimator: type, *, bad: bool) -> dict:
    pick = maybe if bad else (lambda valid, *_: valid)
    params: dict[str, object] = {
        "solver": draw(pick(st.just("clarabel"), st.sampled_from(["gurobi", None, 3]))),
        "eps": draw(pick(st.sampled_from([0.0, 0.05, 0.3]),
                         st.sampled_from([-0.1, math.nan, math.inf, "a", None, 1e300]))),
        "norm": draw(pick(st.sampled_from([2, "inf", "l2"]), st.sampled_from(["l3", None, 0]))),
        "beta": draw(pick(st.sampled_from([1e-3, 0.1]), st.sampled_from([-1.0, "a"]))),
        "solver_options": draw(pick(st.sampled_from([None, {"tol": 1e-6}]),
                                    st.sampled_from(["tol", [1], {"tol": "a"},
                                                     {"no_such_option": 1}]))),
    }
    if estimator in CLASSIFIERS:
        params["loss"] = draw(pick(st.sampled_from(["hinge", "logistic", "squared"]),
                                   st.sampled_from(["cross", None])))
    if "ReLU" in estimator.__name__:
        params["n_patterns"] = draw(pick(st.integers(1, 4), st.sampled_from([0, "a", 1.5])))
    return params


def _check_fitted(model, X: np.ndarray) -> None:
    pred = outcome(model.predict, X)
    assert not failed(pred), pred
    assert len(pred) == X.shape[0]
    if isinstance(model, CLASSIFIERS):
        assert set(np.unique(pred)) <= set(model.classes_)


@fuzz
@given(X=good_features(), data=st.data())
def test_estimators_fit_predict_and_certify_good_input(X, data):
    estimator = data.draw(st.sampled_from(CLASSIFIERS + REGRESSORS))
    params = _estimator_params(data.draw, estimator, bad=False)
    n = X.shape[0]
    if estimator in CLASSIFIERS:
        y = data.draw(st.sampled_from([np.arange(n) % 2, np.array(["a", "b"])[np.arange(n) % 2],
                                       np.array([-4, 0, 9])[np.arange(n) % 3]]))
    else:
        y = _real_matrix(n, 1, 5)[:, 0]
    model = estimator(**params)
    fitted = outcome(model.fit, X, y)
    if failed(fitted):  # a tiny robust program may still defeat the solver
        assert isinstance(fitted, cr.SolverFailedError), fitted
        return
    _check_fitted(model, X)
    if estimator in CLASSIFIERS:
        radii = outcome(model.certified_radius, X, y)
        assert not failed(radii), radii
        assert radii.radius.shape == (n,) and np.all(radii.radius >= 0)


@fuzz
@given(data=st.data())
def test_estimators_raise_typed_errors_on_bad_input(data):
    estimator = data.draw(st.sampled_from(CLASSIFIERS + REGRESSORS))
    params = _estimator_params(data.draw, estimator, bad=True)
    model = estimator(**params)
    X, _ = data.draw(features())
    n = X.shape[0] if isinstance(X, np.ndarray) and X.ndim >= 1 else 4
    y, _ = data.draw(labels(max(n, 1)))
    if data.draw(st.booleans()):  # an unfitted model
        outcome(model.predict, X)
    fitted = outcome(model.fit, X, y)
    if failed(fitted):
        return
    X2, _ = data.draw(features(d=model.n_features_in_ if data.draw(st.booleans()) else None))
    outcome(model.predict, X2)
    if isinstance(model, CLASSIFIERS):
        n2 = X2.shape[0] if isinstance(X2, np.ndarray) and X2.ndim >= 1 else 4
        y2, _ = data.draw(labels(max(n2, 1)))
        outcome(model.certified_radius, X2, y2, data.draw(st.one_of(st.none(), norms)))
