"""Convex training of two-layer polynomial-activation networks: the SDP (program c) and its
adversarial version (program d).

Program (c), Bartan & Pilanci (arXiv 2101.02429). For ``f(x) = Σ_j α_j σ(u_jᵀx)`` with
``σ(t) = a t² + b t + c`` and ``‖u_j‖₂ = 1``, lift ``Z = Σ_{α_j>0} α_j [u_j;1][u_j;1]ᵀ`` and
``Z'`` likewise for ``α_j < 0``; with ``Z̃ = Z − Z'`` in blocks ``[[Z̃1, z̃2],[z̃2ᵀ, z̃4]]``::

    ŷ_k = a x_kᵀ Z̃1 x_k + b x_kᵀ z̃2 + c z̃4
    minimise   ℓ(ŷ, y) + β (z4 + z4')
    subject to Z ⪰ 0, Z' ⪰ 0, tr(Z1) = z4, tr(Z1') = z4'

(the linear coefficient is ``b``, not ``2b``; MATH.md §3). Multi-class: one ``(Z_c, Z'_c)`` per
class, one-vs-all targets, prediction ``argmax_c ŷ_c``.

Program (d), Kuelbs, Lall & Pilanci (arXiv 2405.14033). With
``g = s(a Z̃1 x + (b/2) z̃2)`` (the sign of ``(b/2) z̃2`` is **+**), ``s f(x+δ) ≥ w`` for all
``‖δ‖₂ ≤ r`` holds iff (S-lemma, lossless) some ``λ ≥ 0`` makes::

    [[ s a Z̃1 + λ I ,  g                  ],
     [ gᵀ           ,  s f(x) − w − λ r²  ]]  ⪰ 0

Margin losses (hinge, logistic) use ``s = t_kc`` and the loss ``φ(w)``; the squared loss bounds
``|f − t| ≤ ρ`` by two such constraints (``s = ±1``). For ℓ∞ threats the default is the
diagonal S-procedure ``[[s a Z̃1 + diag(λ), g],[gᵀ, s f(x) − w − ε² Σλ_i]] ⪰ 0, λ ≥ 0``
(sound, tighter than containment); ``linf="containment"`` uses ``B_∞(ε) ⊂ B_2(ε√d)`` instead.

The judge does not trust the solver's slacks: for ℓ2 (and containment) the worst case is
recomputed exactly by the trust-region subproblem (MATH.md §4); for the diagonal S-procedure the
best ``w`` is recomputed from the returned ``λ`` (a Schur complement), shifting ``λ`` where
needed so that it stays a valid certificate.

Variables: ``Z{c}``, ``Zp{c}`` (d+1)×(d+1) PSD per class; robust programs add ``w{side}_{c}``
(margin losses) or ``rho{c}`` (squared), ``lam{side}_{c}`` (n,) for ℓ2 or (n, d) for ℓ∞
diagonal. The values dict holds ``Z``, ``Zp`` stacked (C, d+1, d+1) and, for ℓ∞ diagonal,
``lam`` (sides, C, n, d).
"""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import torch

from convexrobust._validation import (
    check_choice,
)
from convexrobust.errors import InvalidInputError
from convexrobust.networks.decomposition import neural_decomposition
from convexrobust.networks.two_layer import PolynomialActivation, TwoLayerPolynomial
from convexrobust.problems.base import ConvexProgram, Values
from convexrobust.problems.losses import get_loss
from convexrobust.threat import ThreatModel
from convexrobust.trust_region import solve_trs


class ConvexPolynomial(ConvexProgram):
    """The SDP (adversarial) training program of a two-layer polynomial-activation network.

    Parameters
    ----------
    X, y:
        Training data (n, d) and labels (classification) or targets (regression).
    loss:
        ``"hinge"`` (default), ``"logistic"`` or ``"squared"``.
    beta:
        Weight β ≥ 0 of ``Σ|α_j| = z4 + z4'`` (the data term is a mean over samples).
    threat:
        ``None`` for program (c); ``cr.L2(ε)`` (exact) or ``cr.Linf(ε)`` (sound) for (d).
    activation:
        :class:`~convexrobust.PolynomialActivation` or ``(a, b, c)``; default: the
        least-squares ReLU fit on [−5, 5].
    task:
        ``"auto"``, ``"classification"`` or ``"regression"`` (squared loss only).
    linf:
        ``"diagonal"`` (diagonal S-procedure) or ``"containment"`` (ℓ2 ball of radius ε√d).
    """

    family = "polynomial"

    def __init__(self, X: object, y: object, *, loss: str = "hinge", beta: float = 1e-3,
                 threat: ThreatModel | None = None,
                 activation: PolynomialActivation | tuple[float, float, float] | None = None,
                 task: str = "auto", linf: str = "diagonal"):
        self._set_data(X, y, loss=loss, beta=beta, threat=threat, task=task)
        self.linf = check_choice(linf, "linf relaxation", ("diagonal", "containment"))
        if self.threat is not None and self.threat.norm == 1.0:
            raise InvalidInputError("polynomial programs take cr.L2 or cr.Linf threats, not L1")
        if activation is None:
            activation = PolynomialActivation.relu_fit(5.0)
        elif not isinstance(activation, PolynomialActivation):
            try:
                activation = PolynomialActivation(*(float(v) for v in activation))  # type: ignore
            except (TypeError, ValueError):
                raise InvalidInputError(
                    f"activation must be PolynomialActivation or (a, b, c), got {activation!r}"
                ) from None
        if not all(math.isfinite(v) for v in (activation.a, activation.b, activation.c)):
            raise InvalidInputError(f"activation coefficients must be finite, got {activation}")
        self.activation = activation

    # ------------------------------------------------------------------ structure
    @property
    def uses_diagonal_lmi(self) -> bool:
        """ℓ∞ threat through the diagonal S-procedure (needs the λ variables to be judged)."""
        return (self.threat is not None and self.threat.norm == math.inf
                and self.linf == "diagonal")

    @property
    def l2_radius(self) -> float:
        """Radius of the ℓ2 ball used by the exact (S-lemma / TRS) machinery."""
        if self.threat is None:
            return 0.0
        if self.threat.norm == math.inf:
            return self.threat.eps * math.sqrt(self.n_features)
        return self.threat.eps

    @property
    def sides(self) -> tuple[int, ...]:
        """Robust constraints per (sample, output): margin losses bound ``t·f`` from below
        (one side, marked 0); the squared loss bounds ``f`` (+1) and ``−f`` (−1)."""
        return (1, -1) if self.loss == "squared" else (0,)

    def n_constraint_nonzeros(self) -> int:
        """The predictions ``⟨A(x_k), Z_c − Z'_c⟩`` (2·D² per output and sample, D = d + 1) and,
        when robust, one LMI of order D + 1 per sample, output and side (about 4·D² each)."""
        D2 = (self.n_features + 1) ** 2
        per_sample = 2 * D2 + (4 * len(self.sides) * D2 if self.threat is not None else 0)
        return self.n_outputs * self.n_samples * per_sample

    def n_variables(self) -> int:
        m = (self.n_features + 1) * (self.n_features + 2) // 2
        count = 2 * self.n_outputs * m
        if self.threat is not None:
            lam = self.n_features if self.uses_diagonal_lmi else 1
            count += len(self.sides) * self.n_outputs * self.n_samples * (lam + 1)
        return count

    def _side_signs(self, side: int, T: torch.Tensor) -> torch.Tensor:
        return T if side == 0 else torch.full_like(T, float(side))

    # ------------------------------------------------------------------ torch rendering
    def _blocks(self, Zt: torch.Tensor):
        d = self.n_features
        return Zt[:, :d, :d], Zt[:, :d, d], Zt[:, d, d]

    def predictions_torch(self, Zt: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """``ŷ_kc = a x_kᵀ Z̃1_c x_k + b x_kᵀ z̃2_c + c z̃4_c``, shape (n, C)."""
        act = self.activation
        Z1, z2, z4 = self._blocks(Zt)
        quad = torch.einsum("nd,cde,ne->nc", X, Z1, X)
        return act.a * quad + act.b * X @ z2.T + act.c * z4

    def worst_case_l2(self, Zt: torch.Tensor, signs: torch.Tensor, radius: float,
                      X: torch.Tensor | None = None) -> torch.Tensor:
        """Sound lower bounds (tight to solver precision) of ``min_{‖δ‖₂≤r} s_kc f_c(x_k+δ)``,
        shape (n, C), by the trust-region subproblem: one eigendecomposition of ``a Z̃1_c``
        per class, then a secular equation per sample (MATH.md §4)."""
        return self.worst_case_l2_points(Zt, signs, radius, X)[0]

    def worst_case_l2_points(self, Zt: torch.Tensor, signs: torch.Tensor, radius: float,
                             X: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`worst_case_l2` and the minimisers ``δ_kc`` (C, n, d), ``‖δ_kc‖ ≤ r``."""
        X = torch.as_tensor(self.X, dtype=Zt.dtype) if X is None else X
        act = self.activation
        Z1, z2, _ = self._blocks(Zt)
        yhat = self.predictions_torch(Zt, X)
        out = torch.empty_like(yhat)
        deltas = torch.zeros((Zt.shape[0], *X.shape), dtype=X.dtype, device=X.device)
        for c in range(Zt.shape[0]):
            evals, evecs = torch.linalg.eigh(act.a * Z1[c])
            lin = act.a * X @ Z1[c] + 0.5 * act.b * z2[c]  # g for s = +1 (the + sign, MATH §4)
            for s in (1.0, -1.0):
                rows = signs[:, c] == s
                if not bool(rows.any()):
                    continue
                ev, V = (evals, evecs) if s > 0 else (-evals.flip(0), evecs.flip(1))
                res = solve_trs(ev, V, s * lin[rows], s * yhat[rows, c], radius)
                out[rows, c] = res.value_lower
                deltas[c, rows] = res.delta
        return out, deltas

    def worst_case_diagonal(self, Zt: torch.Tensor, signs: torch.Tensor,
                            lam: torch.Tensor) -> torch.Tensor:
        """Best ``w`` certified by the diagonal S-procedure with multipliers ``lam`` (n, C, d):
        ``w = s f(x) − ε² Σλ − gᵀ(s a Z̃1 + diag λ)⁻¹ g`` (Schur complement), after shifting λ
        by the smallest constant that makes the block positive definite (still a valid λ)."""
        X = torch.as_tensor(self.X, dtype=Zt.dtype)
        act = self.activation
        eps2 = self.threat.eps ** 2  # type: ignore[union-attr]
        Z1, z2, _ = self._blocks(Zt)
        yhat = self.predictions_torch(Zt, X)
        out = torch.empty_like(yhat)
        eye = torch.eye(self.n_features, dtype=Zt.dtype)
        for c in range(Zt.shape[0]):
            s = signs[:, c]
            B = s[:, None, None] * (act.a * Z1[c]) + torch.diag_embed(lam[:, c])
            g = s[:, None] * (act.a * X @ Z1[c] + 0.5 * act.b * z2[c])
            ev = torch.linalg.eigvalsh(B)
            floor = 1e-10 * ev.abs().amax(dim=1).clamp_min(1.0)
            shift = (floor - ev[:, 0]).clamp_min(0.0)
            B = B + shift[:, None, None] * eye
            lam_sum = lam[:, c].sum(dim=1) + self.n_features * shift
            quad = (g * torch.linalg.solve(B, g.unsqueeze(-1)).squeeze(-1)).sum(dim=1)
            out[:, c] = s * yhat[:, c] - eps2 * lam_sum - quad
        return out

    def _worst_lower_bounds(self, values: Values) -> list[torch.Tensor]:
        """For each side, (n, C) lower bounds of ``min_δ s f_c(x_k + δ)``."""
        Zt = self._ztilde(values)
        T = torch.as_tensor(self.targets.values)
        bounds = []
        for i, side in enumerate(self.sides):
            signs = self._side_signs(side, T)
            if self.uses_diagonal_lmi:
                lam = torch.as_tensor(np.asarray(values["lam"], dtype=np.float64))[i]
                bounds.append(self.worst_case_diagonal(Zt, signs, lam.permute(1, 0, 2)))
            elif self.threat is not None:
                bounds.append(self.worst_case_l2(Zt, signs, self.l2_radius))
            else:
                X = torch.as_tensor(self.X)
                bounds.append(signs * self.predictions_torch(Zt, X))
        return bounds

    def _ztilde(self, values: Values) -> torch.Tensor:
        shape = (self.n_outputs, self.n_features + 1, self.n_features + 1)
        Z = np.asarray(values["Z"], dtype=np.float64)
        Zp = np.asarray(values["Zp"], dtype=np.float64)
        if Z.shape != shape or Zp.shape != shape:
            raise InvalidInputError(f"Z and Zp must have shape {shape}, got {Z.shape}, {Zp.shape}")
        if self.uses_diagonal_lmi:
            lam_shape = (len(self.sides), self.n_outputs, self.n_samples, self.n_features)
            if np.shape(values.get("lam")) != lam_shape:
                raise InvalidInputError(f"an ℓ∞-diagonal solution needs lam of shape {lam_shape}")
        Zt = torch.as_tensor(Z - Zp)
        return 0.5 * (Zt + Zt.transpose(1, 2))

    # ------------------------------------------------------------------ the judge
    def objective(self, values: Values) -> float:
        bounds = self._worst_lower_bounds(values)
        if self.loss == "squared":
            T = torch.as_tensor(self.targets.values)
            if self.threat is None:
                rho = (T - self.predictions_torch(self._ztilde(values), torch.as_tensor(self.X)))
            else:
                rho = torch.maximum(T - bounds[0], -bounds[1] - T)
            data = get_loss("squared").torch(rho)
        else:
            data = get_loss(self.loss).torch(bounds[0])
        Z = np.asarray(values["Z"], dtype=np.float64)
        Zp = np.asarray(values["Zp"], dtype=np.float64)
        d = self.n_features
        reg = float(Z[:, d, d].sum() + Zp[:, d, d].sum())
        return float(data.sum(dim=1).mean()) + self.beta * reg

    def violation(self, values: Values) -> float:
        self._ztilde(values)  # validates the shapes
        d = self.n_features
        worst = 0.0
        for key in ("Z", "Zp"):
            M = np.asarray(values[key], dtype=np.float64)
            M = 0.5 * (M + M.transpose(0, 2, 1))
            worst = max(worst, float(-np.linalg.eigvalsh(M)[:, 0].min()))
            trace_gap = np.trace(M[:, :d, :d], axis1=1, axis2=2) - M[:, d, d]
            worst = max(worst, float(np.abs(trace_gap).max()))
        if self.uses_diagonal_lmi:
            worst = max(worst, float(-np.min(values["lam"], initial=0.0)))
        return max(0.0, worst)

    def training_predictions(self, values: Values) -> np.ndarray:
        return self.predictions_torch(self._ztilde(values), torch.as_tensor(self.X)).numpy()

    def robust_margins(self, values: Values) -> np.ndarray:
        """One-vs-all worst-case margins ``min_δ t_kc f_c(x_k + δ)``, shape (n, C): exact for ℓ2
        threats, sound lower bounds for ℓ∞."""
        if not self.targets.is_classification:
            raise InvalidInputError("margins are defined for classification programs only")
        bounds = self._worst_lower_bounds(values)
        if self.loss != "squared":
            return bounds[0].numpy()
        T = torch.as_tensor(self.targets.values)
        return torch.where(T > 0, bounds[0], bounds[1]).numpy()

    def network(self, values: Values, *, dtype: torch.dtype = torch.float64,
                device: torch.device | str | None = None, tol: float = 1e-9
                ) -> TwoLayerPolynomial:
        """Recover the network by the neural decomposition of each ``Z_c`` (α > 0) and
        ``Z'_c`` (α < 0): width ≤ Σ_c rank Z_c + rank Z'_c (MATH.md §3)."""
        weights, outputs = [], []
        for key, sign in (("Z", 1.0), ("Zp", -1.0)):
            for c, Zc in enumerate(np.asarray(values[key], dtype=np.float64)):
                dec = neural_decomposition(Zc, tol=tol)
                out = np.zeros((dec.weights.shape[0], self.n_outputs))
                out[:, c] = sign * dec.scales
                weights.append(dec.weights)
                outputs.append(out)
        return TwoLayerPolynomial(np.concatenate(weights), np.concatenate(outputs),
                                  self.activation, dtype=dtype, device=device)

    # ------------------------------------------------------------------ cvxpy rendering
    def to_cvxpy(self) -> cp.Problem:
        n, d = self.X.shape
        act = self.activation
        X = self.X
        T = self.targets.values
        constraints: list[cp.Constraint] = []
        data = 0
        reg = 0
        for c in range(self.n_outputs):
            Z = cp.Variable((d + 1, d + 1), PSD=True, name=f"Z{c}")
            Zp = cp.Variable((d + 1, d + 1), PSD=True, name=f"Zp{c}")
            constraints += [cp.trace(Z[:d, :d]) == Z[d, d], cp.trace(Zp[:d, :d]) == Zp[d, d]]
            reg = reg + Z[d, d] + Zp[d, d]
            Zt = Z - Zp
            Z1, z2, z4 = Zt[:d, :d], Zt[:d, d], Zt[d, d]
            yhat = act.a * cp.sum(cp.multiply(X @ Z1, X), axis=1) + act.b * (X @ z2) + act.c * z4
            if self.threat is None:
                arg = T[:, c] - yhat if self.loss == "squared" else cp.multiply(T[:, c], yhat)
                data = data + cp.sum(get_loss(self.loss).cvxpy(arg))
                continue
            if self.loss == "squared":
                rho = cp.Variable(n, name=f"rho{c}")
                lower = {1: T[:, c] - rho, -1: -T[:, c] - rho}
                data = data + cp.sum(get_loss("squared").cvxpy(rho))
            else:
                w = cp.Variable(n, name=f"w0_{c}")
                lower = {0: w}
                data = data + cp.sum(get_loss(self.loss).cvxpy(w))
            for side, bound in lower.items():
                signs = T[:, c] if side == 0 else np.full(n, float(side))
                constraints += self._robust_lmis(c, side, signs, Z1, z2, z4, bound)
        return cp.Problem(cp.Minimize(data + n * self.beta * reg), constraints)

    def _robust_lmis(self, c: int, side: int, signs: np.ndarray, Z1: cp.Expression,
                     z2: cp.Expression, z4: cp.Expression, bound: cp.Expression
                     ) -> list[cp.Constraint]:
        """One S-lemma LMI per sample: ``s f(x_k + δ) ≥ bound_k`` on the threat ball. Each is
        built from the small blocks (never by indexing an n-long expression, which makes
        cvxpy's compile time quadratic in n)."""
        n, d = self.X.shape
        act = self.activation
        if self.uses_diagonal_lmi:
            lam = cp.Variable((n, d), nonneg=True, name=f"lam{side}_{c}")
            radius2 = self.threat.eps ** 2  # type: ignore[union-attr]
        else:
            lam = cp.Variable(n, nonneg=True, name=f"lam{side}_{c}")
            radius2 = self.l2_radius ** 2
        out = []
        for k, x in enumerate(self.X):
            s = float(signs[k])
            f = act.a * cp.sum(cp.multiply(np.outer(x, x), Z1)) + act.b * (x @ z2) + act.c * z4
            if self.uses_diagonal_lmi:
                top = s * act.a * Z1 + cp.diag(lam[k])
                corner = s * f - bound[k] - radius2 * cp.sum(lam[k])
            else:
                top = s * act.a * Z1 + lam[k] * np.eye(d)
                corner = s * f - bound[k] - radius2 * lam[k]
            g = cp.reshape(s * (act.a * (Z1 @ x) + 0.5 * act.b * z2), (d, 1), order="C")
            M = cp.bmat([[top, g], [g.T, cp.reshape(corner, (1, 1), order="C")]])
            out.append(0.5 * (M + M.T) >> 0)
        return out

    def values_from_cvxpy(self, problem: cp.Problem) -> Values:
        named = {v.name(): v for v in problem.variables()}
        try:
            values = {
                "Z": np.stack([named[f"Z{c}"].value for c in range(self.n_outputs)]),
                "Zp": np.stack([named[f"Zp{c}"].value for c in range(self.n_outputs)]),
            }
            if self.uses_diagonal_lmi:
                values["lam"] = np.stack([
                    np.stack([named[f"lam{side}_{c}"].value for c in range(self.n_outputs)])
                    for side in self.sides
                ])
        except (KeyError, ValueError, TypeError) as err:
            raise InvalidInputError(
                f"the cvxpy problem lacks solved variables Z0.., Zp0.. of this program ({err})"
            ) from None
        return values
