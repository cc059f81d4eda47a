"""PyTorch networks that users deploy, and the registry of architectures loading uses
(:mod:`convexrobust.networks.registry`)."""

from convexrobust.networks.liresnet import LiResNet
from convexrobust.networks.preact_resnet import PreActResNet18
from convexrobust.networks.registry import ARCHITECTURES, load_network_file
from convexrobust.networks.two_layer import (
    PolynomialActivation,
    TwoLayerGatedReLU,
    TwoLayerPolynomial,
    TwoLayerReLU,
)

__all__ = [
    "ARCHITECTURES",
    "LiResNet",
    "PolynomialActivation",
    "PreActResNet18",
    "TwoLayerGatedReLU",
    "TwoLayerPolynomial",
    "TwoLayerReLU",
    "load_network_file",
]
