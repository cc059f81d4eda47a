"""Convex training of two-layer ReLU networks, nominal (program a) and adversarial (program b).

Program (a), Pilanci & Ergen (ICML 2020, arXiv 2002.10553), over sign patterns ``D_i``
(:mod:`convexrobust.problems.patterns`), ``E_i = 2D_i − I``::

    minimise   ℓ( Σ_i D_i X (v_i − w_i), y ) + β Σ_i (‖v_i‖₂ + ‖w_i‖₂)
    subject to E_i X v_i ≥ 0,  E_i X w_i ≥ 0

Program (b), Bai, Gautam & Sojoudi (arXiv 2105.12237, 2201.01965), any ℓp threat of radius ε:
by Hölder the cone constraints become ``E_i X v_i ≥ ε ‖v_i‖_q`` (q the dual exponent, norms over
the non-constant coordinates), no pattern changes on any training ball, the model is affine
there with slope ``a_k = Σ_i d_ki (v_i − w_i)``, and the worst-case margin is exactly
``m_k = y_k x_kᵀa_k − ε ‖a_k‖_q`` (MATH.md §2). Multi-class margins are pairwise:
``m_kc = x_kᵀ(a_{k,y} − a_{k,c}) − ε ‖a_{k,y} − a_{k,c}‖_q``.

Variables: per output ``c``, ``V{c}`` and ``W{c}`` of shape (P, d̃) — row ``i`` is ``v_i``
(``w_i``), d̃ = d + 1 with the bias column last. The values dict holds ``V`` and ``W`` stacked as
(C, P, d̃).
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import torch

from convexrobust.errors import InvalidInputError
from convexrobust.networks.two_layer import TwoLayerReLU
from convexrobust.problems.base import Values
from convexrobust.problems.losses import get_loss
from convexrobust.problems.pattern_program import PatternProgram
from convexrobust.problems.patterns import Patterns
from convexrobust.threat import ThreatModel


class ConvexReLU(PatternProgram):
    """The convex (adversarial) training program of a two-layer ReLU network.

    Parameters
    ----------
    X, y:
        Training data (n, d) and labels (classification) or targets (regression).
    n_patterns:
        Number of gates to sample; duplicates and the zero pattern are dropped, the all-ones
        pattern is added (see :func:`~convexrobust.problems.patterns.sample_patterns`, which
        also explains how robust programs place their gates).
    loss:
        ``"squared"``, ``"hinge"`` or ``"logistic"`` (see :mod:`convexrobust.problems.losses`).
    beta:
        Group-lasso weight β ≥ 0 (the data term is a mean over samples).
    threat:
        ``None`` for program (a); a :class:`~convexrobust.ThreatModel` for program (b).
    bias:
        Append a constant feature (never perturbed) so neurons have biases.
    seed:
        Seed of the pattern sampler.
    task:
        ``"auto"`` (classification unless the squared loss gets real-valued targets),
        ``"classification"`` or ``"regression"``.
    patterns:
        Use these patterns instead of sampling (e.g. from
        :func:`~convexrobust.problems.patterns.enumerate_patterns`); computed on the matrix
        with the bias column.
    """

    family = "relu"

    def __init__(self, X: object, y: object, *, n_patterns: int = 100, loss: str = "squared",
                 beta: float = 1e-3, threat: ThreatModel | None = None, bias: bool = True,
                 seed: int = 0, task: str = "auto", patterns: Patterns | None = None):
        self._set_data(X, y, loss=loss, beta=beta, threat=threat, task=task)
        eps, q = self.radius_and_dual_exponent()
        self._set_patterns(bias, n_patterns, seed, patterns, margin=eps, dual=q)

    # ------------------------------------------------------------------ sizes and helpers
    def n_variables(self) -> int:
        return 2 * self.n_outputs * self.n_patterns * self.Xb.shape[1]

    def n_constraint_nonzeros(self) -> int:
        """Cone rows ``E_i X̃ u`` (2P per output and sample, d̃ nonzeros each) and the
        predictions ``Σ_i D_i X̃ (v_i − w_i)`` (P·d̃ per output and sample); the robust program
        doubles them (the per-sample slopes and the norms)."""
        base = 3 * self.n_outputs * self.n_patterns * self.n_samples * self.Xb.shape[1]
        return base * (2 if self.threat is not None else 1)

    def radius_and_dual_exponent(self) -> tuple[float, float]:
        """``(ε, q)``: the threat radius and the exponent of its dual norm (``(0, 2)`` for a
        nominal program), the two numbers the robust cone constraints and margins read."""
        return (self.threat.eps, self.threat.dual) if self.threat else (0.0, 2.0)

    def slopes_vanish(self) -> bool:
        """Whether the radius is at least every sample's norm, ``ε ≥ max_k ‖x_k‖_p`` (the
        non-constant coordinates, ``p`` the threat's norm); then the program's optimum is
        attained by a network of biases alone, and solvers may iterate on the bias coordinate
        only (without a bias column: the zero network).

        Zeroing the slopes ``u_{:d}`` of every group keeps it feasible and does not raise the
        objective. By Hölder ``|x_kᵀw| ≤ ‖x_k‖_p ‖w‖_q``, so (i) ``E_ik(x_kᵀw + b) ≥ ε‖w‖_q``
        implies ``E_ik b ≥ 0``, the constraint of ``(0, b)``; (ii) every worst-case margin
        ``y x̃ᵀa − ε‖a_{:d}‖_q`` (binary, and pairwise ``f_y − f_c`` alike) is at most its value
        with ``a_{:d} = 0``, every worst-case residual ``|t − x̃ᵀa| + ε‖a_{:d}‖_q`` at least its
        value there, and the losses are monotone in them; (iii) ``‖(0, b)‖₂ ≤ ‖(w, b)‖₂``."""
        eps, _ = self.radius_and_dual_exponent()
        if not eps:
            return False
        norms = np.linalg.norm(self.X, ord=self.threat.norm, axis=1)
        return eps >= float(norms.max(initial=0.0))

    # ------------------------------------------------------------------ torch rendering
    def slopes_torch(self, V: torch.Tensor, W: torch.Tensor,
                     data: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Per-sample slopes ``a_{k,c} = Σ_i d_ki (v_{i,c} − w_{i,c})``, shape (C, n, d̃).
        ``data``: the samples (:meth:`tensors_of`), all of them by default."""
        D = (self.tensors(V.dtype, V.device) if data is None else data)["D"]
        return torch.einsum("np,cpd->cnd", D, V - W)

    def _outputs(self, V: torch.Tensor, W: torch.Tensor,
                 data: dict[str, torch.Tensor] | None = None):
        data = self.tensors(V.dtype, V.device) if data is None else data
        S = self.slopes_torch(V, W, data)
        return data, S, torch.einsum("cnd,nd->nc", S, data["Xb"])

    def dual_norm_torch(self, Z: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
        """``‖z_{:d}‖_q`` over the last axis (the non-constant coordinates; q the threat's dual
        exponent). With ``smoothing = μ > 0``, a smooth convex under-estimate that is 0 at 0, for
        first-order solvers (Nesterov, Math. Program. 2005): the Moreau envelope (Huber form,
        error ≤ μ/2 per coordinate) for q = 2 and q = 1, and ``μ·logsumexp(±z/μ) − μ log 2d``
        (error ≤ μ log 2d) for q = ∞. ``μ = 0`` is the exact norm."""
        _, q = self.radius_and_dual_exponent()
        Z = Z[..., : self.n_features]
        if not smoothing:
            return torch.linalg.vector_norm(Z, ord=q, dim=-1)
        mu = smoothing
        if q == 2:
            r = torch.linalg.vector_norm(Z, dim=-1)
            return torch.where(r < mu, r.square() / (2 * mu), r - mu / 2)
        if q == 1:
            r = Z.abs()
            return torch.where(r < mu, r.square() / (2 * mu), r - mu / 2).sum(dim=-1)
        both = torch.cat([Z, -Z], dim=-1) / mu
        return mu * (torch.logsumexp(both, dim=-1) - float(np.log(both.shape[-1])))

    def worst_margins_torch(self, V: torch.Tensor, W: torch.Tensor, smoothing: float = 0.0,
                            data: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Exact worst-case margins over the threat ball: binary (n, 1) ``t·ŷ − ε‖a‖_q``;
        multi-class (n, C) pairwise ``f_y − f_c − ε‖a_y − a_c‖_q`` (0 in the true column).
        ``smoothing``: see :meth:`dual_norm_torch`."""
        data, S, yhat = self._outputs(V, W, data)
        eps, _ = self.radius_and_dual_exponent()
        if self.targets.task == "multiclass":
            idx = torch.arange(yhat.shape[0], device=V.device)
            margins = yhat[idx, data["labels"]].unsqueeze(1) - yhat
            if eps:
                diff = S[data["labels"], idx].unsqueeze(0) - S  # (C, n, d̃)
                margins = margins - eps * self.dual_norm_torch(diff, smoothing).T
            return margins
        spread = eps * self.dual_norm_torch(S, smoothing).T if eps else 0.0
        return data["T"] * yhat - spread

    def _worst_residuals(self, V: torch.Tensor, W: torch.Tensor, smoothing: float = 0.0,
                         data: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Exact worst-case absolute residuals ``|t − ŷ| + ε‖a‖_q`` per output, (n, C).
        With ``smoothing = μ > 0`` and ε > 0 the absolute value is smoothed too, on
        ``|t − ŷ| < μ/2`` only (``r²/μ + μ/4`` there; exact elsewhere)."""
        data, S, yhat = self._outputs(V, W, data)
        eps, _ = self.radius_and_dual_exponent()
        resid = data["T"] - yhat
        if eps and smoothing:
            # |r| smoothed on |r| < μ/2 only (exact elsewhere, over-estimate by ≤ μ/4):
            # the kink of (|r| + ε‖a‖_q)² at r = 0 is the only non-smooth point
            r = resid.abs()
            resid = torch.where(r < smoothing / 2, r.square() / smoothing + smoothing / 4, r)
        else:
            resid = resid.abs()
        if eps:
            resid = resid + eps * self.dual_norm_torch(S, smoothing).T
        return resid

    def data_term_torch(self, V: torch.Tensor, W: torch.Tensor,
                        smoothing: float = 0.0) -> torch.Tensor:
        """The mean loss (the objective without the β-term) as a differentiable function of
        ``V``, ``W`` (C, P, d̃). ``smoothing = μ > 0`` gives the smooth approximation used by
        first-order solvers: the dual norms by under-estimates (:meth:`dual_norm_torch`), the
        hinge and ``|·|`` by Moreau envelopes shifted to be exact outside ``μ/2`` of their kink
        (:mod:`~convexrobust.problems.losses`; neither a lower nor an upper bound overall, so a
        solver must measure ``F − F_μ``, not assume its sign); 0 is exact."""
        return self.loss_sum_torch(V, W, smoothing) / self.n_samples

    def loss_sum_torch(self, V: torch.Tensor, W: torch.Tensor, smoothing: float = 0.0,
                       data: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The loss summed over the samples of ``data`` (rows of :meth:`tensors_of`; all
        samples by default), so that sums over chunks or shards of the data add up to ``n``
        times :meth:`data_term_torch`. ``smoothing``: see :meth:`data_term_torch`."""
        if self.loss == "squared":
            resid = self._worst_residuals(V, W, smoothing, data)
            return get_loss("squared").torch(resid).sum(dim=1).sum()
        margins = self.worst_margins_torch(V, W, smoothing, data)
        return self.margin_loss_sum_torch(margins, smoothing, data)

    def margin_loss_sum_torch(self, margins: torch.Tensor, smoothing: float = 0.0,
                              data: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The margin loss summed over the samples, from the margins of
        :meth:`worst_margins_torch` (a classification program; ``data`` supplies the labels of
        pairwise margins, all samples by default). ``smoothing``: see :meth:`data_term_torch`."""
        if self.pairwise_margins:
            others = (self.tensors(margins.dtype, margins.device)
                      if data is None else data)["others"]
            return get_loss(self.loss).pairwise_torch(margins, others, smoothing).sum()
        return get_loss(self.loss).torch(margins, smoothing).sum()

    def objective_torch(self, V: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """The objective as a differentiable function of ``V``, ``W`` (C, P, d̃)."""
        reg = torch.linalg.vector_norm(V, dim=-1).sum() + torch.linalg.vector_norm(W, dim=-1).sum()
        return self.data_term_torch(V, W) + self.beta * reg

    def cone_slack_torch(self, Z: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
        """``E_i X z_i − ε‖z_i‖_q`` for every output, pattern and sample, shape (C, P, n);
        the cone constraints say it is ≥ 0. ``smoothing = μ > 0`` replaces the norm by its smooth
        under-estimate (:meth:`dual_norm_torch`): a concave over-estimate of the slack."""
        data = self.tensors(Z.dtype, Z.device)
        eps, _ = self.radius_and_dual_exponent()
        E = 2 * data["D"] - 1
        slack = torch.einsum("nd,cpd->cpn", data["Xb"], Z) * E.T.unsqueeze(0)
        if eps:
            slack = slack - eps * self.dual_norm_torch(Z, smoothing).unsqueeze(-1)
        return slack

    # ------------------------------------------------------------------ the judge
    def _as_tensors(self, values: Values) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.n_outputs, self.n_patterns, self.Xb.shape[1])
        V = torch.as_tensor(np.asarray(values["V"], dtype=np.float64))
        W = torch.as_tensor(np.asarray(values["W"], dtype=np.float64))
        if V.shape != shape or W.shape != shape:
            raise InvalidInputError(f"V and W must have shape {shape}, got {V.shape}, {W.shape}")
        return V, W

    def objective(self, values: Values) -> float:
        V, W = self._as_tensors(values)
        return float(self.objective_torch(V, W))

    def violation(self, values: Values) -> float:
        V, W = self._as_tensors(values)
        worst = min(float(self.cone_slack_torch(V).min()), float(self.cone_slack_torch(W).min()))
        return max(0.0, -worst)

    def training_predictions(self, values: Values) -> np.ndarray:
        return self._outputs(*self._as_tensors(values))[2].numpy()

    def robust_margins(self, values: Values) -> np.ndarray:
        if not self.targets.is_classification:
            raise InvalidInputError("margins are defined for classification programs only")
        margins = self.worst_margins_torch(*self._as_tensors(values))
        if self.targets.task == "binary":
            return margins[:, 0].numpy()
        others = self.tensors()["others"]
        return torch.where(others > 0, margins, torch.inf).min(dim=1).values.numpy()

    def network(self, values: Values, *, dtype: torch.dtype = torch.float64,
                device: torch.device | str | None = None, prune: float = 1e-8) -> TwoLayerReLU:
        """Recover the ReLU network (MATH.md §1): a nonzero ``v_{i,c}`` gives the neuron
        ``u = v/√‖v‖₂`` with output weight ``+√‖v‖₂`` on output c; ``w_{i,c}`` gives ``−√‖w‖₂``.
        Groups whose largest contribution ``max_k |x_kᵀv|`` on the training data is at most
        ``prune`` are dropped (solver round-off; the outputs move by at most that much per
        group). Otherwise the outputs equal the convex model's on the training data wherever
        the cone constraints hold."""
        V = np.asarray(values["V"], dtype=np.float64)
        W = np.asarray(values["W"], dtype=np.float64)
        groups = np.concatenate([V, W], axis=1)  # (C, 2P, d̃)
        sign = np.concatenate([np.ones(V.shape[1]), -np.ones(W.shape[1])])
        norms = np.linalg.norm(groups, axis=-1)
        contribution = np.abs(np.einsum("nd,cgd->cgn", self.Xb, groups)).max(axis=-1)
        keep = contribution > prune
        cls, idx = np.nonzero(keep)
        scale = np.sqrt(norms[cls, idx])
        neurons = groups[cls, idx] / scale[:, None]
        output = np.zeros((len(cls), self.n_outputs))
        output[np.arange(len(cls)), cls] = sign[idx] * scale
        d = self.n_features
        bias = neurons[:, d] if self.bias else np.zeros(len(cls))
        return TwoLayerReLU(neurons[:, :d], bias, output, dtype=dtype, device=device)

    # ------------------------------------------------------------------ cvxpy rendering
    def to_cvxpy(self) -> cp.Problem:
        """Variables ``V{c}``, ``W{c}`` of shape (P, d̃) per output ``c``."""
        n, d = self.X.shape
        P, db = self.n_patterns, self.Xb.shape[1]
        eps, q = self.radius_and_dual_exponent()
        D = self.patterns.masks
        E = 2 * D - 1
        ones = np.ones((n, 1))
        constraints: list[cp.Constraint] = []
        slopes, yhat = [], []
        reg = 0
        for c in range(self.n_outputs):
            V = cp.Variable((P, db), name=f"V{c}")
            W = cp.Variable((P, db), name=f"W{c}")
            for Z in (V, W):
                lhs = cp.multiply(E, self.Xb @ Z.T)
                if eps:
                    norms = cp.reshape(cp.norm(Z[:, :d], q, axis=1), (1, P), order="C")
                    constraints.append(lhs >= eps * (ones @ norms))
                else:
                    constraints.append(lhs >= 0)
            reg = reg + cp.sum(cp.norm(V, 2, axis=1)) + cp.sum(cp.norm(W, 2, axis=1))
            S = D @ (V - W)  # (n, d̃)
            slopes.append(S)
            yhat.append(cp.sum(cp.multiply(self.Xb, S), axis=1))
        data = self._data_term_cvxpy(slopes, yhat, eps, q)
        return cp.Problem(cp.Minimize(data + n * self.beta * reg), constraints)

    def _data_term_cvxpy(self, slopes: list, yhat: list, eps: float, q: float) -> cp.Expression:
        """The summed (not averaged) loss, see :attr:`cvxpy_scale`."""
        n, d = self.X.shape
        t = self.targets
        if self.pairwise_margins:
            onehot = (t.values > 0).astype(float)
            S_true = sum(cp.multiply(onehot[:, [c]], S) for c, S in enumerate(slopes))
            f_true = sum(cp.multiply(onehot[:, c], f) for c, f in enumerate(yhat))
            columns = []
            for S, f in zip(slopes, yhat, strict=True):
                m = f_true - f
                if eps:
                    m = m - eps * cp.norm((S_true - S)[:, :d], q, axis=1)
                columns.append(cp.reshape(m, (n, 1), order="C"))
            margins = cp.hstack(columns)
            others = self.tensors()["others"].numpy()
            return cp.sum(get_loss(self.loss).pairwise_cvxpy(margins, others))
        total = 0
        for c, (S, f) in enumerate(zip(slopes, yhat, strict=True)):
            spread = eps * cp.norm(S[:, :d], q, axis=1) if eps else 0
            if self.loss == "squared":
                resid = t.values[:, c] - f
                term = cp.abs(resid) + spread if eps else resid
            else:
                term = cp.multiply(t.values[:, c], f) - spread
            total = total + cp.sum(get_loss(self.loss).cvxpy(term))
        return total

    def values_from_cvxpy(self, problem: cp.Problem) -> Values:
        named = {v.name(): v for v in problem.variables()}
        try:
            V = np.stack([named[f"V{c}"].value for c in range(self.n_outputs)])
            W = np.stack([named[f"W{c}"].value for c in range(self.n_outputs)])
        except (KeyError, ValueError, TypeError) as err:
            raise InvalidInputError(
                f"the cvxpy problem lacks solved variables V0.., W0.. of this program ({err})"
            ) from None
        return {"V": V, "W": W}
