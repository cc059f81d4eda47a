"""convexrobust: convex adversarial training of two-layer networks, with certificates.

Build a program once (:class:`ConvexReLU`, :class:`ConvexPolynomial`), solve it with any solver
(:func:`solve`), and get back a PyTorch network (:meth:`Solution.network`) and per-point
certified radii (:func:`certified_radius`).
"""

from convexrobust import losses
from convexrobust.attacks import pgd_attack
from convexrobust.certify import CertifiedRadii, certified_radius
from convexrobust.errors import (
    ConvexRobustError,
    DatasetNotFoundError,
    InvalidInputError,
    SolverFailedError,
    SolverUnavailableError,
)
from convexrobust.estimators import (
    ConvexPolynomialClassifier,
    ConvexPolynomialRegressor,
    ConvexReLUClassifier,
    ConvexReLURegressor,
)
from convexrobust.networks import LiResNet, PolynomialActivation, TwoLayerPolynomial, TwoLayerReLU
from convexrobust.problems import ConvexPolynomial, ConvexProgram, ConvexReLU
from convexrobust.solvers import Solution, available_solvers, register_solver, solve
from convexrobust.threat import L2, Linf, ThreatModel

__version__ = "0.1.0"

__all__ = [
    "L2",
    "CertifiedRadii",
    "ConvexPolynomial",
    "ConvexPolynomialClassifier",
    "ConvexPolynomialRegressor",
    "ConvexProgram",
    "ConvexReLU",
    "ConvexReLUClassifier",
    "ConvexReLURegressor",
    "ConvexRobustError",
    "DatasetNotFoundError",
    "InvalidInputError",
    "LiResNet",
    "Linf",
    "PolynomialActivation",
    "Solution",
    "SolverFailedError",
    "SolverUnavailableError",
    "ThreatModel",
    "TwoLayerPolynomial",
    "TwoLayerReLU",
    "available_solvers",
    "certified_radius",
    "losses",
    "pgd_attack",
    "register_solver",
    "solve",
]
