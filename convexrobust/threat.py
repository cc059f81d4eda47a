"""Threat models: the perturbation sets shared by training, attacks and certificates.

``B_p(x, ε) = {x + δ : ‖δ‖_p ≤ ε}`` with ``p ∈ {1, 2, ∞}``. A perturbation bounded in ℓp is
met in the programs through the dual norm ``q`` (``1/p + 1/q = 1``) by Hölder's inequality:
``|δᵀv| ≤ ε ‖v‖_q`` (MATH.md §0, §2). For ℓ∞ the dual norm is ℓ1 — published code that uses ℓ∞
there is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from convexrobust._validation import check_positive
from convexrobust.errors import InvalidInputError

_NORM_ALIASES: dict[object, float] = {
    1: 1.0,
    "1": 1.0,
    "l1": 1.0,
    2: 2.0,
    "2": 2.0,
    "l2": 2.0,
    math.inf: math.inf,
    "inf": math.inf,
    "linf": math.inf,
}


def parse_norm(norm: object) -> float:
    """Return ``p`` as a float (1.0, 2.0 or inf) for the accepted spellings of a norm."""
    key = norm.lower() if isinstance(norm, str) else norm
    if isinstance(norm, (bool, np.bool_)):
        key = None  # True == 1 would otherwise read as the l1 norm
    try:
        return _NORM_ALIASES[key]  # type: ignore[index]
    except (KeyError, TypeError):
        raise InvalidInputError(
            f"unknown norm {norm!r}: use 2 (or 'l2'), 'inf' (or 'linf'), or 1"
        ) from None


def dual_exponent(p: float) -> float:
    """The dual exponent ``q`` with ``1/p + 1/q = 1``: ∞↔1, 2↔2."""
    if p == 1.0:
        return math.inf
    if p == math.inf:
        return 1.0
    return p / (p - 1.0)


@dataclass(frozen=True)
class ThreatModel:
    """A norm ball ``{δ : ‖δ‖_p ≤ eps}`` of allowed input perturbations.

    Build one with :func:`L2` or :func:`Linf`. ``eps = 0`` is allowed and means nominal
    (non-robust) training or evaluation.
    """

    norm: float
    eps: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", parse_norm(self.norm))
        object.__setattr__(self, "eps", check_positive(self.eps, "eps"))

    @property
    def dual(self) -> float:
        """The dual exponent ``q`` of the threat's norm."""
        return dual_exponent(self.norm)

    @property
    def name(self) -> str:
        """Short name, e.g. ``'L2(0.5)'``."""
        tag = {1.0: "L1", 2.0: "L2", math.inf: "Linf"}[self.norm]
        return f"{tag}({self.eps:g})"

    def __repr__(self) -> str:
        return self.name


def L2(eps: float) -> ThreatModel:  # noqa: N802 - named like the math
    """The ℓ2 ball of radius ``eps``."""
    return ThreatModel(2.0, eps)


def Linf(eps: float) -> ThreatModel:  # noqa: N802 - named like the math
    """The ℓ∞ ball of radius ``eps``."""
    return ThreatModel(math.inf, eps)
