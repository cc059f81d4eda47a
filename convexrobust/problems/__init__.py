"""Solver-agnostic convex programs (MATH.md §1–4)."""

from convexrobust.problems.base import ConvexProgram
from convexrobust.problems.gated_relu import ConvexGatedReLU
from convexrobust.problems.patterns import Patterns, enumerate_patterns, sample_patterns
from convexrobust.problems.polynomial import ConvexPolynomial
from convexrobust.problems.relu import ConvexReLU

#: The two-layer head families (a name for the pipeline, ``fit`` and the command line) and the
#: program that trains each.
HEAD_PROGRAMS: dict[str, type[ConvexProgram]] = {
    "polynomial": ConvexPolynomial, "relu": ConvexReLU, "gated_relu": ConvexGatedReLU}
#: The families whose heads carry certificates (the gated ReLU model has none).
CERTIFIED_HEADS = ("polynomial", "relu")

__all__ = [
    "CERTIFIED_HEADS",
    "HEAD_PROGRAMS",
    "ConvexGatedReLU",
    "ConvexPolynomial",
    "ConvexProgram",
    "ConvexReLU",
    "Patterns",
    "enumerate_patterns",
    "sample_patterns",
]
