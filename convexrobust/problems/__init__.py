"""Solver-agnostic convex programs (MATH.md §1–4)."""

from convexrobust.problems.base import ConvexProgram
from convexrobust.problems.gated_relu import ConvexGatedReLU
from convexrobust.problems.patterns import Patterns, enumerate_patterns, sample_patterns
from convexrobust.problems.polynomial import ConvexPolynomial
from convexrobust.problems.relu import ConvexReLU

__all__ = [
    "ConvexGatedReLU",
    "ConvexPolynomial",
    "ConvexProgram",
    "ConvexReLU",
    "Patterns",
    "enumerate_patterns",
    "sample_patterns",
]
