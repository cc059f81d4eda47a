"""PyTorch networks that users deploy."""

from convexrobust.networks.liresnet import LiResNet
from convexrobust.networks.preact_resnet import PreActResNet18
from convexrobust.networks.two_layer import PolynomialActivation, TwoLayerPolynomial, TwoLayerReLU

__all__ = [
    "LiResNet",
    "PolynomialActivation",
    "PreActResNet18",
    "TwoLayerPolynomial",
    "TwoLayerReLU",
]
