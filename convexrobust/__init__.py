"""convexrobust: convex adversarial training of two-layer networks, with certificates.

Build a program once (:class:`ConvexReLU`, :class:`ConvexPolynomial`, or the uncertified
:class:`ConvexGatedReLU`), solve it with any solver
(:func:`solve`), and get back a PyTorch network (:meth:`Solution.network`) and per-point
certified radii (:func:`certified_radius`). Replace the last two layers of a pretrained network
by such a head with :func:`retrain_last_two_layers` and measure it with :func:`evaluate`.
"""

from convexrobust import data, lipschitz_margin
from convexrobust.attacks import pgd_attack
from convexrobust.baselines import PGDHeadResult, train_pgd_head
from convexrobust.certify import CertifiedRadii, certified_radius
from convexrobust.errors import (
    CertificateUnavailableError,
    ConvexRobustError,
    DatasetNotFoundError,
    InvalidInputError,
    InvalidInputTypeError,
    SolverFailedError,
    SolverUnavailableError,
)
from convexrobust.estimators import (
    ConvexPolynomialClassifier,
    ConvexPolynomialRegressor,
    ConvexReLUClassifier,
    ConvexReLURegressor,
)
from convexrobust.evaluation import EvaluationReport, evaluate
from convexrobust.feature_map import FeatureNormalization
from convexrobust.features import FeatureExtractor, extract_features
from convexrobust.inputs import DataSource
from convexrobust.networks import (
    LiResNet,
    PolynomialActivation,
    PreActResNet18,
    TwoLayerGatedReLU,
    TwoLayerPolynomial,
    TwoLayerReLU,
)
from convexrobust.pipeline import retrain_last_two_layers
from convexrobust.problems import ConvexGatedReLU, ConvexPolynomial, ConvexProgram, ConvexReLU
from convexrobust.robust_model import RobustModel
from convexrobust.solvers import Solution, available_solvers, register_solver, solve
from convexrobust.threat import L2, Linf, ThreatModel

__version__ = "0.1.0"

__all__ = [
    "L2",
    "CertificateUnavailableError",
    "DataSource",
    "EvaluationReport",
    "FeatureExtractor",
    "FeatureNormalization",
    "PGDHeadResult",
    "PreActResNet18",
    "RobustModel",
    "evaluate",
    "extract_features",
    "retrain_last_two_layers",
    "train_pgd_head",
    "CertifiedRadii",
    "ConvexGatedReLU",
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
    "InvalidInputTypeError",
    "LiResNet",
    "Linf",
    "PolynomialActivation",
    "Solution",
    "SolverFailedError",
    "SolverUnavailableError",
    "ThreatModel",
    "TwoLayerGatedReLU",
    "TwoLayerPolynomial",
    "TwoLayerReLU",
    "available_solvers",
    "certified_radius",
    "data",
    "lipschitz_margin",
    "pgd_attack",
    "register_solver",
    "solve",
]
