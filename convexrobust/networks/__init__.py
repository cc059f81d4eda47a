"""PyTorch networks that users deploy."""

from convexrobust.networks.two_layer import PolynomialActivation, TwoLayerPolynomial, TwoLayerReLU

__all__ = ["PolynomialActivation", "TwoLayerPolynomial", "TwoLayerReLU"]
