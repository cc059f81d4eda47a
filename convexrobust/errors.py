"""Typed errors. Each message says what went wrong and what to do about it.

* :class:`InvalidInputError` — the caller passed data or a parameter the program cannot take
  (wrong shape, NaN/inf, a single class, ε < 0, an unknown loss or solver name).
  :class:`InvalidInputTypeError` is the same for an input of the wrong type (also a
  ``TypeError``).
* :class:`DatasetNotFoundError` — a dataset is not on disk (nothing is ever downloaded).
* :class:`SolverUnavailableError` — the requested solver is not installed or not licensed.
* :class:`CertificateUnavailableError` — a certificate was asked of a model that has no
  guaranteed Lipschitz bound (it can only be evaluated empirically).
* :class:`SolverFailedError` — the solver ran but did not return an optimal solution
  (infeasible, unbounded, inaccurate, diverged); carries the solver's status.

Warnings (:func:`warn`) point at the user's line that led to them, not at library internals.
"""

from __future__ import annotations

import sys
import warnings


class ConvexRobustError(Exception):
    """Base class of every error raised by convexrobust."""


class InvalidInputError(ConvexRobustError, ValueError):
    """Input data or a parameter is not acceptable; the message names the fix."""


class InvalidInputTypeError(InvalidInputError, TypeError):
    """An input has the wrong type (e.g. a sparse or object array where numbers are needed): an
    :class:`InvalidInputError` that is also a ``TypeError``, as Python's own would be."""


class DatasetNotFoundError(ConvexRobustError, FileNotFoundError):
    """A dataset is not where it was looked for; the message lists the paths tried."""


class SolverUnavailableError(ConvexRobustError, RuntimeError):
    """The requested solver cannot be used here (not installed, or no licence)."""


class CertificateUnavailableError(ConvexRobustError, RuntimeError):
    """The model cannot be certified (no guaranteed Lipschitz bound of its feature map)."""


class SolverFailedError(ConvexRobustError, RuntimeError):
    """A solver finished without an optimal solution.

    Attributes
    ----------
    status:
        The solver's own status string (e.g. ``"infeasible"``, ``"optimal_inaccurate"``).
    solver:
        The name of the solver that failed.
    """

    def __init__(self, message: str, *, status: str | None = None, solver: str | None = None):
        super().__init__(message)
        self.status = status
        self.solver = solver


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Issue ``message`` as a warning attributed to the first caller outside convexrobust
    (however deep in the library it arises, and whichever public function led to it)."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("convexrobust"):
        level += 1
        frame = frame.f_back
    warnings.warn(message, category, stacklevel=level + 1)
