"""Convex training of two-layer gated ReLU networks (Mishkin, Sahiner & Pilanci, ICML 2022,
arXiv 2202.01331).

A gated ReLU network keeps fixed gates ``g_i`` in the model: ``f(x)_c = Σ_i 1[x̃ᵀg_i ≥ 0]·x̃ᵀu_{i,c}``
with ``x̃ = [x, 1]`` (``bias=True``). On the training data the gates are the patterns
``D_i = diag(1[X̃ g_i ≥ 0])`` (:mod:`convexrobust.problems.patterns`; the all-ones gate keeps the
linear model in the family), and training is the group-lasso program::

    minimise   L( Σ_i D_i X̃ u_i , y ) + β Σ_i Σ_c ‖u_{i,c}‖₂          (no constraints)

— the convex ReLU program of MATH.md §1 without its cone constraints (``u_i = v_i − w_i``).
The constraints are what makes ``D_i X̃ u_i = (X̃ u_i)_+``; without them the model is not a
ReLU network but a different one, the gated network itself (MATH.md §1, last bullet): it is
what :meth:`ConvexGatedReLU.network` returns, and it has no certificate (there is no threat
model). Its optimum is at most the convex ReLU program's on the same patterns.

``L`` is the mean loss of the one loss table (:mod:`convexrobust.problems.losses`), exactly as
:class:`~convexrobust.problems.relu.ConvexReLU` applies it to its nominal predictions: the
squared loss ``(1/2n) Σ_{k,c} (t_kc − ŷ_kc)²`` (regression, binary ±1 targets, one-vs-all
multi-class), the binary margin losses ``(1/n) Σ_k φ(t_k ŷ_k)``, and for multi-class margin
losses the pairwise margins ``m_kc = ŷ_{k,y_k} − ŷ_kc``: ``(1/n) Σ_k Σ_{c≠y_k} (1 − m_kc)_+``
(hinge) or ``(1/n) Σ_k log Σ_c e^{−m_kc}`` (logistic: the cross-entropy).

Variables: per output ``c``, ``U{c}`` of shape (P, d̃) — row ``i`` is ``u_{i,c}``, d̃ = d + 1 with
the bias column last. The values dict holds ``U`` stacked as (C, P, d̃).
"""

from __future__ import annotations

from collections.abc import Mapping

import cvxpy as cp
import numpy as np
import torch

from convexrobust.errors import InvalidInputError
from convexrobust.networks.two_layer import TwoLayerGatedReLU
from convexrobust.problems.base import Values
from convexrobust.problems.losses import get_loss
from convexrobust.problems.pattern_program import PatternProgram
from convexrobust.problems.patterns import Patterns

__all__ = ["ConvexGatedReLU"]


class ConvexGatedReLU(PatternProgram):
    """The convex training program of a two-layer gated ReLU network (module docstring).

    Parameters
    ----------
    X, y:
        Training data (n, d) and labels (classification) or targets (regression).
    n_patterns:
        Number of gates to sample; duplicates and the zero pattern are dropped, the all-ones
        gate is added (:func:`~convexrobust.problems.patterns.sample_patterns`).
    loss:
        ``"squared"``, ``"hinge"`` or ``"logistic"`` (see :mod:`convexrobust.problems.losses`).
    beta:
        Group-lasso weight β ≥ 0 (the data term is a mean over samples).
    bias:
        Append a constant feature, so that gates are affine and every group has a bias.
    seed:
        Seed of the gate sampler.
    task:
        ``"auto"`` (classification unless the squared loss gets real-valued targets),
        ``"classification"`` or ``"regression"``.
    patterns:
        Use these patterns (and their gates) instead of sampling; computed on the matrix with
        the bias column.
    threat:
        Not taken: anything but None raises :class:`~convexrobust.InvalidInputError`. The gated
        model has no certificate; adversarial training is :class:`~convexrobust.ConvexReLU`'s.
    """

    family = "gated_relu"

    def __init__(self, X: object, y: object, *, n_patterns: int = 100, loss: str = "squared",
                 beta: float = 1e-3, bias: bool = True, seed: int = 0, task: str = "auto",
                 patterns: Patterns | None = None, threat: object = None):
        if threat is not None:
            raise InvalidInputError(
                "ConvexGatedReLU takes no threat: the gated ReLU network is not certified. Use "
                "cr.ConvexReLU(X, y, threat=...) for adversarial training with certificates")
        self._set_data(X, y, loss=loss, beta=beta, threat=None, task=task)
        self._set_patterns(bias, n_patterns, seed, patterns)

    # ------------------------------------------------------------------ sizes
    def n_variables(self) -> int:
        return self.n_outputs * self.n_patterns * self.Xb.shape[1]

    def n_constraint_nonzeros(self) -> int:
        """The predictions ``Σ_i D_i X̃ u_i`` (P·d̃ nonzeros per output and sample): the
        program has no constraints, but cvxpy's conic form carries them as rows."""
        return self.n_outputs * self.n_patterns * self.n_samples * self.Xb.shape[1]

    def describe(self) -> str:
        return (f"{type(self).__name__}(n={self.n_samples}, d={self.n_features}, "
                f"outputs={self.n_outputs}, task={self.targets.task}, loss={self.loss}, "
                f"beta={self.beta:g}, patterns={self.n_patterns})")

    # ------------------------------------------------------------------ torch rendering
    def predictions_torch(self, U: torch.Tensor) -> torch.Tensor:
        """``ŷ_c = Σ_i D_i X̃ u_{i,c}`` for ``U`` (C, P, d̃), shape (n, C), computed as
        ``((X̃ Uᵀ) ∘ D)`` summed over the patterns: O(n·P·d̃·C) work and an (n, C·P) temporary,
        never the n × P·d̃ matrix ``[D_1X̃ … D_PX̃]``."""
        data = self.tensors(U.dtype, U.device)
        C, P, db = U.shape
        H = (data["Xb"] @ U.reshape(C * P, db).T).reshape(-1, C, P)
        return (H * data["D"].unsqueeze(1)).sum(dim=-1)

    def predictions_adjoint_torch(self, Z: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`predictions_torch`: ``(D_iX̃)ᵀ z_c`` for every pattern ``i``
        and output ``c``, for ``Z`` (n, C); shape (C, P, d̃)."""
        data = self.tensors(Z.dtype, Z.device)
        n, C = Z.shape
        P = self.n_patterns
        weights = (Z.unsqueeze(-1) * data["D"].unsqueeze(1)).reshape(n, C * P)
        return (weights.T @ data["Xb"]).reshape(C, P, -1)

    def loss_torch(self, yhat: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
        """The mean loss ``L(ŷ, y)`` of predictions ``ŷ`` (n, C) (module docstring).
        ``smoothing = μ > 0`` replaces the hinge by its Moreau envelope shifted to be exact
        outside ``μ/2`` of the kink, an over-estimate by at most ``μ/8`` per term
        (:mod:`convexrobust.problems.losses`); the smooth losses ignore it."""
        data = self.tensors(yhat.dtype, yhat.device)
        loss = get_loss(self.loss)
        if self.loss == "squared":
            total = loss.torch(data["T"] - yhat).sum()
        elif self.pairwise_margins:
            rows = torch.arange(yhat.shape[0], device=yhat.device)
            margins = yhat[rows, data["labels"]].unsqueeze(1) - yhat
            total = loss.pairwise_torch(margins, data["others"], smoothing).sum()
        else:
            total = loss.torch(data["T"] * yhat, smoothing).sum()
        return total / self.n_samples

    def loss_and_slope(self, yhat: torch.Tensor, smoothing: float = 0.0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`loss_torch` (detached) and its gradient in ``ŷ`` (n, C)."""
        with torch.enable_grad():
            Y = yhat.detach().requires_grad_(True)
            value = self.loss_torch(Y, smoothing)
            (slope,) = torch.autograd.grad(value, Y)
        return value.detach(), slope

    def data_term_torch(self, U: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
        """The mean loss (the objective without the β-term) as a differentiable function of
        ``U`` (C, P, d̃); ``smoothing``: see :meth:`loss_torch` (0 is exact)."""
        return self.loss_torch(self.predictions_torch(U), smoothing)

    def objective_torch(self, U: torch.Tensor) -> torch.Tensor:
        """The objective as a differentiable function of ``U`` (C, P, d̃)."""
        return self.data_term_torch(U) + self.beta * torch.linalg.vector_norm(U, dim=-1).sum()

    # ------------------------------------------------------------------ the judge
    def _as_tensor(self, values: Values) -> torch.Tensor:
        shape = (self.n_outputs, self.n_patterns, self.Xb.shape[1])
        if not isinstance(values, Mapping) or "U" not in values:
            raise InvalidInputError("values must be a dict holding 'U' of shape (C, P, d̃)")
        U = torch.as_tensor(np.asarray(values["U"], dtype=np.float64))
        if U.shape != shape:
            raise InvalidInputError(f"U must have shape {shape}, got {tuple(U.shape)}")
        return U

    def objective(self, values: Values) -> float:
        return float(self.objective_torch(self._as_tensor(values)))

    def violation(self, values: Values) -> float:
        """0: the program has no constraints (the values' shape is still checked)."""
        self._as_tensor(values)
        return 0.0

    def training_predictions(self, values: Values) -> np.ndarray:
        return self.predictions_torch(self._as_tensor(values)).numpy()

    def robust_margins(self, values: Values) -> np.ndarray:
        """The margins on the training data (there is no threat): ``t·ŷ`` (binary) or
        ``min_{c≠y} ŷ_y − ŷ_c`` (multi-class)."""
        if not self.targets.is_classification:
            raise InvalidInputError("margins are defined for classification programs only")
        yhat = self.predictions_torch(self._as_tensor(values))
        data = self.tensors()
        if self.targets.task == "binary":
            return (data["T"] * yhat)[:, 0].numpy()
        rows = torch.arange(yhat.shape[0])
        margins = yhat[rows, data["labels"]].unsqueeze(1) - yhat
        return torch.where(data["others"] > 0, margins, torch.inf).min(dim=1).values.numpy()

    def network(self, values: Values, *, dtype: torch.dtype = torch.float64,
                device: torch.device | str | None = None,
                prune: float = 1e-8) -> TwoLayerGatedReLU:
        """The gated network ``f(x)_c = Σ_i 1[x̃ᵀg_i ≥ 0]·x̃ᵀu_{i,c}`` (not a ReLU network; no
        certificate). Groups whose largest contribution ``max_k |x̃_kᵀu|`` on the training data
        is at most ``prune`` are dropped (solver round-off; the outputs move by at most that
        much per group), and so are gates left without a group; otherwise the network's
        outputs on the training data are :meth:`training_predictions`."""
        U = self._as_tensor(values).numpy()
        contribution = np.abs(np.einsum("nd,cpd->cpn", self.Xb, U)).max(axis=-1)  # (C, P)
        U = np.where((contribution > prune)[..., None], U, 0.0)
        keep = (contribution > prune).any(axis=0)
        d = self.n_features
        gates = self.patterns.gates[:, keep]  # (d̃, m)
        kept = U[:, keep]  # (C, m, d̃)
        m = int(keep.sum())
        gate_bias = gates[d] if self.bias else np.zeros(m)
        bias = kept[:, :, d].T if self.bias else np.zeros((m, self.n_outputs))
        return TwoLayerGatedReLU(gates[:d].T, gate_bias, kept[:, :, :d].transpose(1, 2, 0),
                                 bias, dtype=dtype, device=device)

    # ------------------------------------------------------------------ cvxpy rendering
    def to_cvxpy(self) -> cp.Problem:
        """Variables ``U{c}`` of shape (P, d̃) per output ``c``; the objective is the sum form
        (:attr:`cvxpy_scale` times :meth:`objective`)."""
        n = self.n_samples
        P, db = self.n_patterns, self.Xb.shape[1]
        D = self.patterns.masks
        yhat, reg = [], 0
        for c in range(self.n_outputs):
            U = cp.Variable((P, db), name=f"U{c}")
            reg = reg + cp.sum(cp.norm(U, 2, axis=1))
            yhat.append(cp.sum(cp.multiply(D, self.Xb @ U.T), axis=1))
        return cp.Problem(cp.Minimize(self._loss_sum_cvxpy(yhat) + n * self.beta * reg))

    def _loss_sum_cvxpy(self, yhat: list[cp.Expression]) -> cp.Expression:
        """The summed loss of the per-output predictions ``yhat`` (module docstring)."""
        n = self.n_samples
        t = self.targets
        loss = get_loss(self.loss)
        if self.pairwise_margins:
            onehot = (t.values > 0).astype(float)
            f_true = sum(cp.multiply(onehot[:, c], f) for c, f in enumerate(yhat))
            margins = cp.hstack([cp.reshape(f_true - f, (n, 1), order="C") for f in yhat])
            return cp.sum(loss.pairwise_cvxpy(margins, self.tensors()["others"].numpy()))
        if self.loss == "squared":
            return sum(cp.sum(loss.cvxpy(t.values[:, c] - f)) for c, f in enumerate(yhat))
        return sum(cp.sum(loss.cvxpy(cp.multiply(t.values[:, c], f)))
                   for c, f in enumerate(yhat))

    def values_from_cvxpy(self, problem: cp.Problem) -> Values:
        named = {v.name(): v for v in problem.variables()}
        try:
            U = np.stack([named[f"U{c}"].value for c in range(self.n_outputs)])
        except (KeyError, ValueError, TypeError) as err:
            raise InvalidInputError(
                f"the cvxpy problem lacks solved variables U0.. of this program ({err})"
            ) from None
        return {"U": U}
