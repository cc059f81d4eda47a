"""scikit-learn estimators over the convex programs.

``fit`` builds the program (:class:`~convexrobust.ConvexReLU` or
:class:`~convexrobust.ConvexPolynomial`) with the threat ``(norm, eps)`` — ``eps = 0`` trains
nominally — solves it with ``solver`` and keeps the recovered network in ``network_`` and the
:class:`~convexrobust.Solution` in ``solution_``, and the name of the solver that produced it in
``solver_``. With ``solver="auto"`` the solver is chosen by :func:`convexrobust.solve`'s one
"auto" policy; with a named solver, ``solver_options`` go to that solver, and when it ends
inaccurate the fit goes on along "auto"'s order (each later solver with its defaults), warns
with a ``ConvergenceWarning`` and records the solver used in ``solver_``. The last solver of
that chain runs best-effort: when every route ended inaccurate, the fit keeps the last one's
(feasible, judged) point, as scikit-learn's iterative estimators do, with a
``ConvergenceWarning`` and the status in ``solution_.status``; it raises only for errors no
solver can get past (bad input, an infeasible program, no solver installed). Inputs are
validated the scikit-learn way; bad parameters (an unknown norm even when ``eps = 0``,
``eps < 0``, an unknown loss) raise :class:`~convexrobust.InvalidInputError` at ``fit``. The
regressors take 1-D or 2-D targets (one output per column); predictions have the shape of the
targets seen at ``fit``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import sklearn.exceptions
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import Tags
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from convexrobust.certify import CertifiedRadii, certified_radius
from convexrobust.errors import InvalidInputError, InvalidInputTypeError
from convexrobust.problems.base import ConvexProgram
from convexrobust.problems.polynomial import ConvexPolynomial
from convexrobust.problems.relu import ConvexReLU
from convexrobust.solvers import solve
from convexrobust.threat import ThreatModel


class NotFittedError(InvalidInputError, sklearn.exceptions.NotFittedError):
    """An estimator was used before ``fit``: scikit-learn's ``NotFittedError`` and a
    :class:`~convexrobust.errors.ConvexRobustError` at once."""


@contextlib.contextmanager
def _typed_errors() -> Iterator[None]:
    """scikit-learn's validation raises plain ``ValueError`` / ``TypeError`` /
    ``NotFittedError``; re-raise them as :class:`InvalidInputError` (a ``ValueError`` too),
    :class:`InvalidInputTypeError` (a ``TypeError`` too) or :class:`NotFittedError` (both),
    with the same message."""
    try:
        yield
    except InvalidInputError:
        raise
    except sklearn.exceptions.NotFittedError as err:
        raise NotFittedError(str(err)) from err
    except TypeError as err:
        raise InvalidInputTypeError(str(err)) from err
    except ValueError as err:
        raise InvalidInputError(str(err)) from err


def _hashable(label: object) -> object:
    """``label`` as a key of the ``classes_`` lookup (numpy scalars as Python scalars; an
    unhashable label as a key that matches nothing)."""
    if isinstance(label, np.generic):
        return label.item()
    try:
        hash(label)
    except TypeError:
        return object()
    return label


class _ConvexEstimator(BaseEstimator):
    """Shared fit / decision logic; subclasses say which program to build."""

    _task: str  # "classification" or "regression", set by the mixins below
    _program: Callable[[np.ndarray, np.ndarray], ConvexProgram]  # set by the parameter bases

    def _threat(self) -> ThreatModel:
        """The threat ``(norm, eps)``, validated even when ``eps = 0`` (the programs treat a
        zero radius as nominal training), so a misspelt norm fails at ``fit``, not later in
        :meth:`certified_radius`."""
        return ThreatModel(self.norm, self.eps)

    def _fit(self, X: object, y: object) -> np.ndarray:
        """Validate, build and solve the program; return the validated targets."""
        regression = self._task == "regression"
        with _typed_errors():
            X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=regression,
                                 multi_output=regression)
            if not regression:
                check_classification_targets(y)
        options = {} if self.solver_options is None else self.solver_options
        if not isinstance(options, dict):
            raise InvalidInputError(
                f"solver_options must be a dict such as {{'tol': 1e-7}}, got {options!r}"
            )
        if not isinstance(self.solver, str):
            raise InvalidInputError(f"solver must be a name such as 'auto', got {self.solver!r}")
        program = self._program(X, y)
        if self.solver.lower() == "auto":
            solution = solve(program, "auto", best_effort=True, **options)
        else:  # the options are for the named solver; a fallback runs with its defaults
            solution = solve(program, self.solver, fallback=True, best_effort=True,
                             backend_options={self.solver: options})
        failures = solution.info.get("auto_failures") or []
        if failures and self.solver.lower() != "auto":
            warnings.warn(
                f"solver={self.solver!r} did not solve the program ({'; '.join(failures)}); "
                f"fitted with {solution.solver!r} instead (see solver_)", ConvergenceWarning,
                stacklevel=3)
        if not solution.optimal:
            warnings.warn(
                f"{solution.solver} stopped before optimality (status {solution.status!r}); "
                "the fitted network is its last (feasible) point. Raise max_iters or "
                "time_limit in solver_options, or rescale the data", ConvergenceWarning,
                stacklevel=3)
        self.solution_ = solution
        self.solver_ = solution.solver
        self.network_ = solution.network()
        return y

    def _scores(self, X: object) -> np.ndarray:
        with _typed_errors():
            check_is_fitted(self, "network_")
            X = validate_data(self, X, dtype=np.float64, reset=False)
        if not X.flags.writeable:  # a read-only input (e.g. a memmap): torch needs a copy
            X = X.copy()
        with torch.no_grad():
            return self.network_(torch.as_tensor(X)).numpy()


class _ClassifierMixin(ClassifierMixin):
    _task = "classification"

    def fit(self, X: object, y: object):
        """Solve the training program on ``(X, y)``."""
        self._fit(X, y)
        self.classes_ = self.solution_.program.targets.classes
        return self

    def decision_function(self, X: object) -> np.ndarray:
        """Scores: (n,) for two classes (positive ⇔ ``classes_[1]``), else (n, C)."""
        scores = self._scores(X)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X: object) -> np.ndarray:
        """Class labels from ``classes_``: ``classes_[score > 0]`` for two classes, else the
        ``argmax`` of the scores."""
        scores = self.decision_function(X)
        idx = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[idx]

    def certified_radius(self, X: object, y: object, norm: float | str | None = None
                         ) -> CertifiedRadii:
        """Per-point certified radii (see :func:`convexrobust.certified_radius`) in the
        training norm unless ``norm`` is given; ``y`` holds labels from ``classes_``."""
        with _typed_errors():
            check_is_fitted(self, "network_")
            X = validate_data(self, X, dtype=np.float64, reset=False)
        y = np.asarray(y, dtype=object) if y is not None else None
        if y is None or y.ndim != 1 or len(y) != X.shape[0]:
            raise InvalidInputError(
                f"y must hold one label per row of X ({X.shape[0]}), got {y!r:.80}")
        index = {label: i for i, label in enumerate(self.classes_.tolist())}
        labels = np.array([index.get(_hashable(label), -1) for label in y], dtype=np.int64)
        known = labels >= 0
        radii = certified_radius(self.network_, X, np.where(known, labels, 0),
                                 self.norm if norm is None else norm)
        radii.radius[~known] = 0.0  # a label the estimator never saw is not certified
        return radii


class _RegressorMixin(RegressorMixin):
    _task = "regression"

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: object, y: object):
        """Solve the training program on ``(X, y)``; ``y`` is (n,) or (n, outputs)."""
        self._targets_1d = self._fit(X, y).ndim == 1
        return self

    def predict(self, X: object) -> np.ndarray:
        """Predictions, (n,) when ``fit`` saw 1-D targets, else (n, outputs)."""
        scores = self._scores(X)
        return scores[:, 0] if self._targets_1d else scores


class _ReLUParams(_ConvexEstimator):
    def __init__(self, *, n_patterns: int = 50, loss: str = "hinge", beta: float = 1e-3,
                 eps: float = 0.0, norm: float | str = 2, bias: bool = True,
                 solver: str = "auto", solver_options: dict | None = None,
                 random_state: int = 0):
        self.n_patterns = n_patterns
        self.loss = loss
        self.beta = beta
        self.eps = eps
        self.norm = norm
        self.bias = bias
        self.solver = solver
        self.solver_options = solver_options
        self.random_state = random_state

    def _program(self, X: np.ndarray, y: np.ndarray) -> ConvexProgram:
        return ConvexReLU(X, y, n_patterns=self.n_patterns, loss=self.loss, beta=self.beta,
                          threat=self._threat(), bias=self.bias, seed=self.random_state,
                          task=self._task)


class _PolynomialParams(_ConvexEstimator):
    def __init__(self, *, loss: str = "hinge", beta: float = 1e-3, eps: float = 0.0,
                 norm: float | str = 2, activation: tuple[float, float, float] | None = None,
                 linf: str = "diagonal", solver: str = "auto",
                 solver_options: dict | None = None):
        self.loss = loss
        self.beta = beta
        self.eps = eps
        self.norm = norm
        self.activation = activation
        self.linf = linf
        self.solver = solver
        self.solver_options = solver_options

    def _program(self, X: np.ndarray, y: np.ndarray) -> ConvexProgram:
        return ConvexPolynomial(X, y, loss=self.loss, beta=self.beta, threat=self._threat(),
                                activation=self.activation, task=self._task, linf=self.linf)


class ConvexReLUClassifier(_ClassifierMixin, _ReLUParams):
    """Two-layer ReLU classifier trained by the convex program (a), or (b) when ``eps > 0``
    (Pilanci & Ergen 2020; Bai et al. 2022). Losses: hinge (default), logistic, squared."""


class ConvexReLURegressor(_RegressorMixin, _ReLUParams):
    """Two-layer ReLU regressor (squared loss) trained by program (a), or (b) when ``eps > 0``."""

    def __init__(self, *, n_patterns: int = 50, loss: str = "squared", beta: float = 1e-3,
                 eps: float = 0.0, norm: float | str = 2, bias: bool = True,
                 solver: str = "auto", solver_options: dict | None = None,
                 random_state: int = 0):
        super().__init__(n_patterns=n_patterns, loss=loss, beta=beta, eps=eps, norm=norm,
                         bias=bias, solver=solver, solver_options=solver_options,
                         random_state=random_state)


class ConvexPolynomialClassifier(_ClassifierMixin, _PolynomialParams):
    """Two-layer polynomial-activation classifier trained by the SDP (c), or (d) when
    ``eps > 0`` (Bartan & Pilanci; Kuelbs, Lall & Pilanci). Losses: hinge (default), logistic,
    squared; ℓ2 robustness is exact, ℓ∞ sound."""


class ConvexPolynomialRegressor(_RegressorMixin, _PolynomialParams):
    """Two-layer polynomial-activation regressor (squared loss) trained by the SDP (c) / (d)."""

    def __init__(self, *, loss: str = "squared", beta: float = 1e-3, eps: float = 0.0,
                 norm: float | str = 2, activation: tuple[float, float, float] | None = None,
                 linf: str = "diagonal", solver: str = "auto",
                 solver_options: dict | None = None):
        super().__init__(loss=loss, beta=beta, eps=eps, norm=norm, activation=activation,
                         linf=linf, solver=solver, solver_options=solver_options)
