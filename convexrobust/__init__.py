"""convexrobust: convex adversarial training of two-layer networks, with certificates.

Build a program once (:class:`ConvexReLU`, :class:`ConvexPolynomial`), solve it with any solver
(:func:`solve`), and get back a PyTorch network (:meth:`Solution.network`) and per-point
certified radii (:func:`certified_radius`).
"""

from convexrobust.errors import (
    ConvexRobustError,
    InvalidInputError,
    SolverFailedError,
    SolverUnavailableError,
)
from convexrobust.networks import PolynomialActivation, TwoLayerPolynomial, TwoLayerReLU
from convexrobust.problems import ConvexProgram, ConvexReLU
from convexrobust.solvers import Solution, available_solvers, register_solver, solve
from convexrobust.threat import L2, Linf, ThreatModel

__version__ = "0.1.0"

__all__ = [
    "L2",
    "ConvexProgram",
    "ConvexReLU",
    "ConvexRobustError",
    "InvalidInputError",
    "Linf",
    "PolynomialActivation",
    "Solution",
    "SolverFailedError",
    "SolverUnavailableError",
    "ThreatModel",
    "TwoLayerPolynomial",
    "TwoLayerReLU",
    "available_solvers",
    "register_solver",
    "solve",
]
