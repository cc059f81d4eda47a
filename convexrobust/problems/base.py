"""What every convex program offers, whatever solves it.

A program is data (features, encoded targets, loss, regulariser, threat) plus three renderings
of one piece of math: a ``cvxpy.Problem`` for conic solvers, a differentiable torch objective
for first-order solvers, and the judge — :meth:`ConvexProgram.objective` and
:meth:`ConvexProgram.violation` — that scores any candidate solution the same way, whichever
solver produced it. Candidate solutions are plain dicts of numpy arrays ("values").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import cvxpy as cp
import numpy as np
import torch
from torch import nn

from convexrobust._validation import (
    Targets,
    check_choice,
    check_features,
    check_positive,
    encode_targets,
    infer_task,
)
from convexrobust.errors import InvalidInputError
from convexrobust.problems.losses import get_loss
from convexrobust.threat import ThreatModel

Values = dict[str, np.ndarray]


#: Largest feature magnitude a program takes: the programs and their judges form up to fourth
#: powers of the features (lifted quadratics, squared worst-case terms), finite in float64 only
#: below ≈1e77; solvers stop being accurate long before.
MAX_FEATURE_MAGNITUDE = 1e75

#: A threat radius above this many times the data's scale (``1 + max_k ‖x_k‖_p``) is refused:
#: the ball then holds every training point many times over (robust training degenerates to a
#: constant model) and the programs' coefficients (ε, ε²) overflow or defeat every solver.
MAX_RADIUS_RATIO = 1e6


def check_threat(threat: object, X: np.ndarray | None = None) -> ThreatModel | None:
    """``None`` or a :class:`ThreatModel`; a zero radius means nominal training. With the
    features ``X``, a radius beyond :data:`MAX_RADIUS_RATIO` times their scale is refused."""
    if threat is None:
        return None
    if not isinstance(threat, ThreatModel):
        raise InvalidInputError(
            f"threat must be a ThreatModel such as cr.L2(0.5) or cr.Linf(0.1), got {threat!r}"
        )
    if X is not None and threat.eps > 0:
        scale = 1.0 + float(np.max(np.linalg.norm(X, ord=threat.norm, axis=1)))
        if not threat.eps <= MAX_RADIUS_RATIO * scale:
            raise InvalidInputError(
                f"threat radius {threat.eps:g} is more than {MAX_RADIUS_RATIO:g} times the "
                f"data's scale (1 + largest ‖x‖ = {scale:.3g}): every point is inside every "
                "other's ball. Standardise the features or pass a radius on their scale"
            )
    return threat if threat.eps > 0 else None


class ConvexProgram(ABC):
    """Base class of the solver-agnostic programs (MATH.md §1–4)."""

    family: ClassVar[str]
    X: np.ndarray
    targets: Targets
    loss: str
    beta: float
    threat: ThreatModel | None

    def _set_data(self, X: object, y: object, *, loss: str, beta: float, threat: object,
                  task: str) -> None:
        """Validate and store what every program has: features, loss, β, threat, targets."""
        self.X = check_features(X, max_abs=MAX_FEATURE_MAGNITUDE)
        self.loss = get_loss(loss).name
        self.beta = check_positive(beta, "beta")
        self.threat = check_threat(threat, self.X)
        task = check_choice(task, "task", ("auto", "classification", "regression"))
        if task == "auto":
            task = infer_task(y, self.loss)
        if task == "regression" and self.loss != "squared":
            raise InvalidInputError(
                f"the {self.loss} loss is for classification; use loss='squared' for regression"
            )
        self.targets = encode_targets(y, self.n_samples, task=task)

    @property
    def n_samples(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.targets.n_outputs

    @property
    def is_robust(self) -> bool:
        return self.threat is not None

    @property
    def cvxpy_scale(self) -> float:
        """The cvxpy objective is this factor (n) times :meth:`objective`: the sum form
        ``Σ_k ℓ_k + nβR`` has the same minimiser as the mean form and is far better scaled
        for interior-point solvers (Clarabel reports inaccurate results on the mean form)."""
        return float(self.n_samples)

    @abstractmethod
    def to_cvxpy(self) -> cp.Problem:
        """The program as a ``cvxpy.Problem`` with named variables (see the class docstring);
        its objective is :attr:`cvxpy_scale` times the program's objective."""

    @abstractmethod
    def values_from_cvxpy(self, problem: cp.Problem) -> Values:
        """Read a solved ``cvxpy.Problem`` (from :meth:`to_cvxpy`, possibly with constraints a
        user added) back into this program's values dict."""

    @abstractmethod
    def objective(self, values: Values) -> float:
        """The program's objective at ``values``, recomputed from the primal variables."""

    @abstractmethod
    def violation(self, values: Values) -> float:
        """The largest constraint violation of ``values`` (0 when feasible)."""

    @abstractmethod
    def network(self, values: Values, *, dtype: torch.dtype = torch.float64,
                device: torch.device | str | None = None) -> nn.Module:
        """The two-layer network recovered from ``values``."""

    @abstractmethod
    def training_predictions(self, values: Values) -> np.ndarray:
        """The convex model's outputs ŷ on the training data, shape (n, outputs)."""

    @abstractmethod
    def robust_margins(self, values: Values) -> np.ndarray:
        """The worst-case margins (classification) the program assigns to each training point,
        shape (n,): the minimum over the threat ball (and over competitors) of
        ``t·f`` (binary) or ``f_y − f_c`` (multi-class). For a nominal program, the margins."""

    @abstractmethod
    def n_variables(self) -> int:
        """Number of scalar unknowns; used to pick a solver."""

    def n_constraint_nonzeros(self) -> int:
        """An estimate of the nonzeros of the constraint matrix that :meth:`to_cvxpy` gives a
        conic solver (cvxpy's memory grows with it); used to refuse programs a conic solver
        cannot hold. 0 (unknown: never refused) unless a program says."""
        return 0

    def describe(self) -> str:
        threat = self.threat.name if self.threat else "nominal"
        return (f"{type(self).__name__}(n={self.n_samples}, d={self.n_features}, "
                f"outputs={self.n_outputs}, task={self.targets.task}, loss={self.loss}, "
                f"beta={self.beta:g}, threat={threat})")

    def __repr__(self) -> str:
        return self.describe()
