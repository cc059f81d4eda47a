"""The two-layer networks that the convex programs return, as ordinary ``torch.nn.Module``s.

``TwoLayerReLU``:        ``f(x) = Σ_j α_j (u_jᵀx + b_j)_+``          (Pilanci & Ergen, ICML 2020)
``TwoLayerPolynomial``:  ``f(x) = Σ_j α_j σ(u_jᵀx)``, ``σ(t) = a t² + b t + c``, ``‖u_j‖₂ = 1``
                         (Bartan & Pilanci, arXiv 2101.02429)
``TwoLayerGatedReLU``:   ``f(x) = Σ_j 1[g_jᵀx + h_j ≥ 0] (W_jᵀx + b_j)`` with fixed gates
                         (Mishkin, Sahiner & Pilanci, ICML 2022, arXiv 2202.01331); not a
                         ReLU network, and not certified

``α_j`` is a row of the (m, C) output matrix: one column per output. A single output is a
binary classifier (class 1 ⇔ f > 0) or a regressor; C ≥ 2 outputs classify by ``argmax``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from convexrobust._validation import check_device
from convexrobust.errors import InvalidInputError


@dataclass(frozen=True)
class PolynomialActivation:
    """``σ(t) = a t² + b t + c``."""

    a: float
    b: float
    c: float

    @classmethod
    def relu_fit(cls, L: float = 5.0) -> PolynomialActivation:  # noqa: N803 - the paper's L
        """Least-squares fit of ReLU on ``[−L, L]``: ``a = 15/(32L)``, ``b = 1/2``, ``c = 3L/32``
        (MATH.md §3; L = 5 gives (0.09375, 0.5, 0.46875))."""
        return cls(15.0 / (32.0 * L), 0.5, 3.0 * L / 32.0)

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return self.a * t.square() + self.b * t + self.c


def _as_tensor(x: object, dtype: torch.dtype, device: torch.device | str | None,
               name: str = "weights") -> torch.Tensor:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidInputError(
            f"dtype must be a torch floating dtype such as torch.float64, got {dtype!r}")
    if device is not None:
        device = check_device(device)
    try:
        return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=dtype,
                               device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InvalidInputError(f"{name} must be a numeric array: "
                                f"{str(err).splitlines()[0][:200]}") from None


def _check_matrix(t: torch.Tensor, name: str) -> None:
    if t.ndim != 2:
        raise InvalidInputError(f"{name} must be 2-D, got shape {tuple(t.shape)}")


class _TwoLayer(nn.Module):
    """Shared bookkeeping: sizes and class prediction."""

    weight: nn.Parameter
    output: nn.Parameter

    @property
    def n_neurons(self) -> int:
        """Width ``m`` of the hidden layer."""
        return self.weight.shape[0]

    @property
    def n_features(self) -> int:
        return self.weight.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.output.shape[1]

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices: ``1[f > 0]`` for one output, ``argmax_c f_c`` otherwise."""
        scores = self(x)
        if scores.shape[1] == 1:
            return (scores[:, 0] > 0).long()
        return scores.argmax(dim=1)


class TwoLayerReLU(_TwoLayer):
    """``f(x) = relu(x Uᵀ + b) α`` with ``U`` (m, d), ``b`` (m,), ``α`` (m, C)."""

    def __init__(self, weight: object, bias: object, output: object, *,
                 dtype: torch.dtype = torch.float64, device: torch.device | str | None = None):
        super().__init__()
        self.weight = nn.Parameter(_as_tensor(weight, dtype, device, "weight"))
        self.bias = nn.Parameter(_as_tensor(bias, dtype, device, "bias"))
        self.output = nn.Parameter(_as_tensor(output, dtype, device, "output"))
        _check_matrix(self.weight, "weight")
        _check_matrix(self.output, "output")
        if self.bias.shape != (self.n_neurons,) or self.output.shape[0] != self.n_neurons:
            raise InvalidInputError("weight (m, d), bias (m,) and output (m, C) must agree on m")

    def preactivations(self, x: torch.Tensor) -> torch.Tensor:
        """``u_jᵀx + b_j`` for every sample and neuron, shape (n, m)."""
        return x @ self.weight.T + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.preactivations(x)) @ self.output

    def extra_repr(self) -> str:
        return f"features={self.n_features}, neurons={self.n_neurons}, outputs={self.n_outputs}"


class TwoLayerPolynomial(_TwoLayer):
    """``f(x) = σ(x Uᵀ) α`` with unit-norm rows ``u_j`` of ``U`` (m, d) and ``α`` (m, C)."""

    def __init__(self, weight: object, output: object, activation: PolynomialActivation, *,
                 dtype: torch.dtype = torch.float64, device: torch.device | str | None = None):
        super().__init__()
        self.weight = nn.Parameter(_as_tensor(weight, dtype, device, "weight"))
        self.output = nn.Parameter(_as_tensor(output, dtype, device, "output"))
        _check_matrix(self.weight, "weight")
        _check_matrix(self.output, "output")
        if self.output.shape[0] != self.n_neurons:
            raise InvalidInputError("weight (m, d) and output (m, C) must agree on m")
        if not isinstance(activation, PolynomialActivation):
            raise InvalidInputError(
                f"activation must be a PolynomialActivation, got {type(activation).__name__}")
        self.register_buffer(
            "coefficients",
            torch.tensor([activation.a, activation.b, activation.c], dtype=dtype, device=device),
        )

    @property
    def activation(self) -> PolynomialActivation:
        a, b, c = (float(v) for v in self.coefficients)
        return PolynomialActivation(a, b, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.coefficients
        t = x @ self.weight.T
        return (a * t.square() + b * t + c) @ self.output

    def quadratic_form(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Q, q, s)`` with ``f_c(x) = a xᵀQ_c x + b q_cᵀx + c s_c``:
        ``Q_c = Σ_j α_jc u_j u_jᵀ`` (C, d, d), ``q_c = Σ_j α_jc u_j`` (C, d), ``s_c = Σ_j α_jc``."""
        U, A = self.weight, self.output
        Q = torch.einsum("mc,md,me->cde", A, U, U)
        return Q, A.T @ U, A.sum(dim=0)

    def extra_repr(self) -> str:
        act = self.activation
        return (f"features={self.n_features}, neurons={self.n_neurons}, outputs={self.n_outputs}, "
                f"sigma(t)={act.a:g}t^2+{act.b:g}t+{act.c:g}")


class TwoLayerGatedReLU(_TwoLayer):
    """A two-layer gated ReLU network, ``f(x) = Σ_j 1[g_jᵀx + h_j ≥ 0] (xᵀW_j + b_j)``, with
    fixed gates ``g_j`` (rows of ``gate_weight`` (m, d), buffers), gate offsets ``h_j``
    (``gate_bias`` (m,)), and weights ``W_j`` (``weight`` (m, d, C)) and ``b_j`` (``bias``
    (m, C)) per gate and output (Mishkin, Sahiner & Pilanci, ICML 2022, arXiv 2202.01331;
    :class:`~convexrobust.ConvexGatedReLU` trains it).

    It is **not** a ReLU network: a unit's on/off decision is its gate's, not the sign of its
    own pre-activation ``xᵀW_j + b_j``, so the output jumps where an input crosses a gate's
    hyperplane. It has no Lipschitz bound and no certificate
    (:func:`~convexrobust.certified_radius` refuses it); it is a model to be evaluated
    empirically.
    """

    def __init__(self, gate_weight: object, gate_bias: object, weight: object, bias: object, *,
                 dtype: torch.dtype = torch.float64, device: torch.device | str | None = None):
        super().__init__()
        self.register_buffer("gate_weight", _as_tensor(gate_weight, dtype, device,
                                                       "gate_weight"))
        self.register_buffer("gate_bias", _as_tensor(gate_bias, dtype, device, "gate_bias"))
        self.weight = nn.Parameter(_as_tensor(weight, dtype, device, "weight"))
        self.bias = nn.Parameter(_as_tensor(bias, dtype, device, "bias"))
        _check_matrix(self.gate_weight, "gate_weight")
        m, d = self.gate_weight.shape
        if self.weight.ndim != 3 or self.weight.shape[:2] != (m, d):
            raise InvalidInputError(f"weight must have shape (m, d, C) = ({m}, {d}, C) to match "
                                    f"gate_weight (m, d), got {tuple(self.weight.shape)}")
        if self.gate_bias.shape != (m,) or self.bias.shape != (m, self.n_outputs):
            raise InvalidInputError("gate_bias (m,) and bias (m, C) must agree with weight "
                                    "(m, d, C)")

    @property
    def n_outputs(self) -> int:
        return self.weight.shape[2]

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """``1[g_jᵀx + h_j ≥ 0]`` for every sample and gate, shape (n, m), in x's dtype."""
        return (x @ self.gate_weight.T + self.gate_bias >= 0).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        units = torch.einsum("nd,mdc->nmc", x, self.weight) + self.bias  # (n, m, C)
        return torch.einsum("nm,nmc->nc", self.gates(x), units)

    def extra_repr(self) -> str:
        return f"features={self.n_features}, gates={self.n_neurons}, outputs={self.n_outputs}"


def head_to_dict(head: TwoLayerReLU | TwoLayerPolynomial | TwoLayerGatedReLU) -> dict:
    """The tensors and activation of a head, for ``torch.save`` (weights only)."""
    if isinstance(head, TwoLayerReLU):
        return {"kind": "relu", "weight": head.weight.detach().cpu(),
                "bias": head.bias.detach().cpu(), "output": head.output.detach().cpu()}
    if isinstance(head, TwoLayerGatedReLU):
        return {"kind": "gated_relu", "gate_weight": head.gate_weight.detach().cpu(),
                "gate_bias": head.gate_bias.detach().cpu(), "weight": head.weight.detach().cpu(),
                "bias": head.bias.detach().cpu()}
    act = head.activation
    return {"kind": "polynomial", "weight": head.weight.detach().cpu(),
            "output": head.output.detach().cpu(), "activation": [act.a, act.b, act.c]}


def head_from_dict(spec: dict) -> TwoLayerReLU | TwoLayerPolynomial | TwoLayerGatedReLU:
    """Inverse of :func:`head_to_dict` (same dtype as stored)."""
    dtype = spec["weight"].dtype
    if spec["kind"] == "relu":
        return TwoLayerReLU(spec["weight"], spec["bias"], spec["output"], dtype=dtype)
    if spec["kind"] == "gated_relu":
        return TwoLayerGatedReLU(spec["gate_weight"], spec["gate_bias"], spec["weight"],
                                 spec["bias"], dtype=dtype)
    return TwoLayerPolynomial(spec["weight"], spec["output"],
                              PolynomialActivation(*spec["activation"]), dtype=dtype)
