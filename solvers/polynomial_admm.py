r"""ADMM with a cached factorisation for the polynomial-activation SDPs: the nominal program (c)
with the hinge or squared loss, and the ℓ2-robust program (d) with the hinge loss by successive
linearisation of the worst case.

The program (MATH.md §3, :class:`~convexrobust.problems.polynomial.ConvexPolynomial` without a
threat), for every output ``c`` with lifted matrices ``Z_c, Z'_c`` of size ``D = d + 1``::

    minimise  (1/n) Σ_k Σ_c ℓ((Ã Z̃_c)_k, t_kc) + β Σ_c (z4_c + z4'_c)
    subject to Z_c, Z'_c ∈ K = {Z ⪰ 0 : tr(Z1) = z4},     Z̃_c = Z_c − Z'_c,

where ``Ã`` maps a symmetric ``Δ`` to the network outputs ``(Ã Δ)_k = ⟨A(x_k), Δ⟩ =
a x_kᵀΔ1x_k + b x_kᵀδ2 + c δ4``, ``A(x) = [[a xxᵀ, (b/2)x], [(b/2)xᵀ, c]]``, and ``ℓ`` the hinge
``(1 − t r)_+`` (any task: the multi-class program is one-vs-all) or the squared loss
``(t − r)²/2``. The logistic loss and the robust programs (d) stay on the accelerated projected
gradient solver (:mod:`convexrobust.solvers.polynomial_first_order`).

Splitting
---------
OSQP's form (Stellato et al., Math. Program. Comput. 2020) of ``min g(w)`` s.t. ``C x = w``,
the same design as :mod:`convexrobust.solvers.relu_admm` (Bai, Gautam & Sojoudi's ADMM for
the ReLU program, one factorisation for all iterations): ``x = (Z, Z')`` and

* ``s = x`` with ``g ∋ I_K(s) + β⟨E, s⟩`` (``E = e_D e_Dᵀ`` picks ``z4``); its prox is the exact
  projection :func:`~convexrobust.solvers.lifted_cone.project_lifted_cone` of
  ``v − (β/ρ_s)E``;
* ``r = Ã(Z − Z')`` with ``g ∋ (1/n) Σ_k ℓ(r_k, t_k)``; its prox is closed-form (hinge: on the
  margins ``m = t∘r``, ``m`` above 1, else ``min(m + τ, 1)``; squared:
  ``(t + nρ_r v)/(1 + nρ_r)``).

With over-relaxation ``α`` (:data:`ALPHA`) and unscaled duals ``y``, one iteration is::

    x⁺ = (ρ_s I + ρ_r 𝒜ᵀ𝒜)⁻¹ [ρ_s s − y_s + 𝒜ᵀ(ρ_r r − y_r)]
    ŝ = α x⁺ + (1 − α) s,   r̂ = α 𝒜x⁺ + (1 − α) r
    s⁺ = Π_K(ŝ + y_s/ρ_s − (β/ρ_s)E),   r⁺ = prox_{ℓ/(nρ_r)}(r̂ + y_r/ρ_r)
    y_s += ρ_s(ŝ − s⁺),   y_r += ρ_r(r̂ − r⁺)

The x-update
------------
``𝒜x = Ã(Z − Z')`` sees only the difference, so in the coordinates ``Σ = Z + Z'``,
``Δ = Z − Z'`` the system splits: ``Σ = (b_Z + b_Z')/ρ_s`` and
``(γ I + ÃᵀÃ) Δ = (b_Z − b_Z')/(2ρ_r)`` with ``γ = ρ_s/(2ρ_r)``. The matrix has the order of the
symmetric ``D × D`` matrices, ``m = D(D+1)/2``; it is inverted once, either directly (``ÃᵀÃ =
ΦᵀΦ`` with ``Φ`` the n × m matrix of the lifted samples in orthonormal ``svec`` coordinates) or,
when ``n < m``, by Woodbury through the n × n kernel ``K = ÃÃᵀ``,
``K_kl = a²(x_kᵀx_l)² + (b²/2) x_kᵀx_l + c²``: with ``u = (γI + K)⁻¹ Ã h``,
``Δ = (h − Ãᵀu)/γ`` and ``ÃΔ = u`` (no extra pass for ``r̂``).

Penalties are fixed: ``ρ_r`` = :data:`RHO_LOSS`/n and ``ρ_s`` = :data:`RHO_CONE` times the data
term's curvature (the mean non-zero eigenvalue of ``ÃᵀÃ/n``), so the matrix is factored once. The
constants (and ``α``) were chosen on planted binary and multi-class programs. OSQP's
residual-balancing rule ``ρ ← ρ √(prim/dual)`` — free here, on a common scale of ``ρ_s`` and
``ρ_r`` that leaves ``γ`` unchanged — took more iterations on the same programs, so it is not
used.

Certificate and stopping
------------------------
The Lagrange dual of the program is::

    maximise  −Σ_kc ℓ*_kc(λ_kc)   subject to  βE + Ãᵀλ_c ∈ K*,  βE − Ãᵀλ_c ∈ K*,

``K* = {M : M + μG ⪰ 0 for some μ}`` (``G = diag(I_d, −1)``; K has an interior point, so this is
exact), ``−ℓ*(λ) = −tλ`` on ``0 ≤ −tλ ≤ 1/n`` (hinge) and ``−tλ − nλ²/2`` (squared). The
multiplier ``y_r`` (box-clipped for the hinge) is the candidate ``λ``. The projection's own
multiplier certifies ``βE − y_s + ρ_sμG ⪰ 0`` at every iterate (``μ`` the projection's root), so
at ``M = βE ± Ãᵀλ + ρ_sμG`` only the dual residual ``y_s ± Ãᵀλ`` can leave the PSD cone;
with ``ℓ = λ_min(M)`` and the interior point ``βE + (β/2)G = (β/2)I``, concavity of
``λ_min`` makes ``βE ± θÃᵀλ`` dual feasible for every ``θ ≤ θ_c = (β/2)/(β/2 − ℓ)``
(1 when ``ℓ ≥ 0``; :func:`~convexrobust.solvers.lifted_cone.interior_scaling`). The best
such ``θ`` (one eigenvalue per matrix, a scalar maximisation per class) gives a lower bound
``D`` on the optimum, and the returned point ``s`` is exactly in K, so ``(F(s) − D)/|F(s)|``
bounds the relative distance to the optimum from above. The solve stops when that certified gap
is at most ``tol`` (checked every :data:`CHECK_EVERY` iterations), or — for β = 0, where the
bound degenerates — when OSQP's relative primal and dual residuals are below
``tol``·:data:`RESIDUAL_FACTOR`.

Robust programs (d): successive linearisation of the worst case
----------------------------------------------------------------
For the ℓ2 threat (and ℓ∞ by containment, ``r = ε√d``) with the hinge loss, the worst-case margin
``v_kc(Z̃) = min_{‖δ‖≤r} t_kc f_c(x_k + δ)`` is concave, and for ANY ``δ`` in the ball
``v_kc(Z̃) ≤ t_kc ⟨A(x_k + δ), Z̃_c⟩`` (with equality at the minimiser). So the nominal program on
the points ``x_k + δ_kc`` is a lower model of the robust one, exact (with the same gradient,
Danskin) at the point where the ``δ_kc`` are the worst cases. Each round: per output, this
model is solved by the ADMM above, warm-started, to a certified gap ``max(tol/4, gap/10)``; the
output then moves from its previous point towards the model's solution by the longest step in
1, 1/2, 1/4, … (at most :data:`LINE_SEARCH_STEPS` halvings) that does not raise its true robust
objective (the model's decrease makes the direction a descent direction where the worst case
is unique; without this step the iterates can cycle between two points); then the
exact worst cases of the new point are computed by the trust-region solver (MATH.md §4).
Certificate: the robust objective at ``s`` with the judge's sound worst-case bounds is an
upper bound; every round's summed ADMM dual bounds (one model per output, all solved) are
lower bounds of the optimum; the solve stops when the relative gap between the best of them is
at most ``tol``. At radii of the order of the data's norm the linear model is poor far from its
points and the steps shrink, so each round gains little — which is why "auto" does not choose
this method for robust programs. At radii beyond every sample's norm the zero network may be
certified optimal outright (:func:`~convexrobust.solvers.lifted_cone.zero_is_optimal`), and is
then returned without a round.

The returned point is ``s`` (projected once more in float64 on the CPU, as the accelerated
gradient solver does); ``Solution.gap`` is the certified relative gap, ``info["dual_bound"]`` the
lower bound itself.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from convexrobust._validation import check_device
from convexrobust.errors import InvalidInputError, SolverFailedError
from convexrobust.problems.losses import Loss, get_loss
from convexrobust.problems.polynomial import ConvexPolynomial
from convexrobust.solvers.first_order import (
    Budget,
    check_first_order_options,
    finish,
    with_common_options,
)
from convexrobust.solvers.lifted_cone import (
    interior_scaling,
    project_lifted_cone,
    repaired_values,
    zero_is_optimal,
)
from convexrobust.solvers.solution import Solution

__all__ = ["MAX_FACTOR_SIZE", "admm_system_size", "admm_unsupported", "solve_polynomial_admm"]

log = logging.getLogger(__name__)

#: Over-relaxation.
ALPHA = 1.8
#: ρ_s relative to the data term's curvature (the mean non-zero eigenvalue of ÃᵀÃ/n).
RHO_CONE = 0.01
#: ρ_r = RHO_LOSS / n.
RHO_LOSS = 0.1
#: Between checks the projection onto K accepts its scalar μ (warm-started at the previous one)
#: when the trace equality holds to this relative tolerance — often at the first ``eigh`` once
#: the iterates settle; at checks, and for the returned point, it runs to full accuracy.
PROJECTION_RTOL = 1e-9
#: The certified gap (and the residuals) are evaluated every this many iterations.
CHECK_EVERY = 10
#: A robust round halves its step at most this many times (then keeps the previous point).
LINE_SEARCH_STEPS = 6
#: ``tol`` is floored at this many machine epsilons of the working dtype.
TOL_FLOOR = 1e3
#: Without a usable dual bound (β = 0) the solve stops when both relative residuals are below
#: this times ``tol``.
RESIDUAL_FACTOR = 0.1
#: The largest matrix the solver factors: ``min(n, m)``, m = (d+1)(d+2)/2 (9000: 650 MB in
#: float64). Larger programs go to the accelerated projected gradient solver (the dispatcher in
#: :mod:`convexrobust.solvers`); up to this size the factorisation pays for itself against
#: accelerated gradient (benchmarks/targets.py measures the largest case).
MAX_FACTOR_SIZE = 9000
#: Elements of Φ formed at once (direct factorisation).
_CHUNK_ELEMENTS = 4_000_000


def admm_unsupported(program: object) -> str | None:
    """Why :func:`solve_polynomial_admm` cannot take ``program``, or None when it can."""
    if not isinstance(program, ConvexPolynomial):
        return f"the polynomial ADMM solver takes a ConvexPolynomial, got {type(program).__name__}"
    loss = get_loss(program.loss)
    if program.threat is None:
        if loss.name not in ("hinge", "squared"):
            return (f"the polynomial ADMM solver takes the hinge and squared losses, not "
                    f"{program.loss}")
        return None
    if loss.name != "hinge":
        return (f"the polynomial ADMM solver takes robust programs with the hinge loss only, "
                f"not {program.loss}")
    if program.uses_diagonal_lmi:
        return ("the polynomial ADMM solver computes ℓ∞ worst cases through the ℓ2 ball of "
                "radius ε√d (linf='containment'), not the diagonal S-procedure")
    return None


def admm_system_size(program: ConvexPolynomial) -> int:
    """Order of the matrix the ADMM factors: ``min(n, (d+1)(d+2)/2)``."""
    D = program.n_features + 1
    return min(program.n_samples, D * (D + 1) // 2)


class _Lift:
    """The linear map ``Ã`` (symmetric (C, D, D) → (n, C)), its adjoint, and the inverse of
    ``γI + ÃᵀÃ`` (module docstring)."""

    def __init__(self, X: Tensor, activation: object, dtype: torch.dtype, device: torch.device):
        self.a, self.b, self.c = (float(v) for v in (activation.a, activation.b, activation.c))
        self.X = torch.as_tensor(X, dtype=dtype, device=device)
        self.n, self.d = self.X.shape
        D = self.d + 1
        self.m = D * (D + 1) // 2
        self.mode = "kernel" if self.n < self.m else "direct"
        X64 = self.X.to(torch.float64)
        sq = X64.square().sum(dim=1)
        lift_norms = self.a ** 2 * sq ** 2 + 0.5 * self.b ** 2 * sq + self.c ** 2  # diag of K
        #: mean non-zero eigenvalue of ÃᵀÃ/n
        self.curvature = max(float(lift_norms.sum()) / (self.n * min(self.n, self.m)), 1e-300)
        if self.mode == "kernel":
            G = X64 @ X64.T
            self.gram = (self.a ** 2 * G.square() + 0.5 * self.b ** 2 * G + self.c ** 2)
        else:
            rows, cols = torch.triu_indices(D, D, device=device)
            self.rows, self.cols = rows, cols
            self.svec_weight = torch.where(rows == cols, 1.0, math.sqrt(2.0)).to(dtype)
            coeff = torch.full((D, D), self.a, dtype=torch.float64, device=device)
            coeff[:, -1] = coeff[-1, :] = 0.5 * self.b
            coeff[-1, -1] = self.c
            scale = coeff[rows, cols] * self.svec_weight.to(torch.float64)
            gram = torch.zeros((self.m, self.m), dtype=torch.float64, device=device)
            step = max(1, _CHUNK_ELEMENTS // self.m)
            for start in range(0, self.n, step):
                xb = torch.cat([X64[start:start + step],
                                torch.ones(len(X64[start:start + step]), 1, dtype=torch.float64,
                                           device=device)], dim=1)
                phi = xb[:, rows] * xb[:, cols] * scale
                gram += phi.T @ phi
            self.gram = gram

    def factor(self, gamma: float) -> None:
        """Invert ``γI + K`` (kernel) or ``γI + ΦᵀΦ`` (direct) in float64."""
        M = self.gram.clone()
        M.diagonal().add_(gamma)
        L, info = torch.linalg.cholesky_ex(M)
        if bool((info != 0).any()):
            raise SolverFailedError(
                "the ADMM system matrix is not numerically positive definite; rescale the data "
                "or use method='apg'", status="numerical_error", solver="torch")
        self.inverse = torch.cholesky_inverse(L).to(self.X.dtype)
        self.gamma = gamma

    def apply(self, Delta: Tensor) -> Tensor:
        """``Ã Δ`` per output: (n, C) from symmetric (C, D, D)."""
        d = self.d
        quad = (torch.matmul(self.X, Delta[:, :d, :d]) * self.X).sum(-1)  # (C, n)
        lin = Delta[:, :d, d] @ self.X.T  # (C, n)
        return (self.a * quad + self.b * lin + self.c * Delta[:, d, d, None]).T

    def adjoint(self, R: Tensor) -> Tensor:
        """``Ãᵀ r = Σ_k r_k A(x_k)`` per output: (C, D, D) from (n, C)."""
        d, C = self.d, R.shape[1]
        out = torch.empty((C, d + 1, d + 1), dtype=R.dtype, device=R.device)
        out[:, :d, :d] = self.a * torch.matmul(self.X.T * R.T[:, None, :], self.X)
        lin = 0.5 * self.b * (R.T @ self.X)
        out[:, :d, d] = lin
        out[:, d, :d] = lin
        out[:, d, d] = self.c * R.sum(0)
        return out

    def solve(self, H: Tensor, Q: Tensor) -> tuple[Tensor, Tensor]:
        """``Δ = (γI + ÃᵀÃ)⁻¹ (H + Ãᵀ Q)`` and ``ÃΔ``, for symmetric ``H`` (C, D, D) and
        ``Q`` (n, C)."""
        if self.mode == "kernel":
            # Woodbury: u = (γI + K)⁻¹ Ã(H + ÃᵀQ) = Q + (γI + K)⁻¹(ÃH − γQ) (one pass over the
            # n × n inverse), Δ = (H + ÃᵀQ − Ãᵀu)/γ
            u = Q + self.inverse @ (self.apply(H) - self.gamma * Q)
            return (H + self.adjoint(Q - u)) / self.gamma, u
        rhs = H + self.adjoint(Q)
        v = (rhs[:, self.rows, self.cols] * self.svec_weight) @ self.inverse
        Delta = torch.zeros_like(rhs)
        Delta[:, self.rows, self.cols] = v / self.svec_weight
        Delta = Delta + Delta.transpose(1, 2)
        Delta.diagonal(dim1=1, dim2=2).mul_(0.5)
        return Delta, self.apply(Delta)


def _data_term(loss: Loss, R: Tensor, T: Tensor) -> Tensor:
    """``(1/n) Σ_k ℓ(r_kc, t_kc)`` per output, (C,)."""
    n = R.shape[0]
    if loss.name == "hinge":
        return (1.0 - T * R).clamp_min(0.0).sum(0) / n
    if loss.name == "squared":
        return 0.5 * (T - R).square().sum(0) / n
    raise InvalidInputError(f"the polynomial ADMM solver does not take the {loss.name} loss")


def _dual_bound(loss: Loss, lift: _Lift, T: Tensor, Yr: Tensor, mu: Tensor, beta: float
                ) -> Tensor:
    """Per output, a lower bound on its share of the optimum from the multiplier ``Yr`` (n, C)
    and the certified shifts ``mu`` (2, C) of the K* constraints (module docstring). The dual
    needs the loss's conjugate: the hinge's and the squared loss's are written here."""
    if loss.name not in ("hinge", "squared"):
        raise InvalidInputError(f"the ADMM dual bound has no conjugate for the {loss.name} loss")
    n = lift.n
    hinge = loss.name == "hinge"
    if hinge:  # the conjugate's domain: 0 ≤ −tλ ≤ 1/n
        lam = -T * (-T * Yr).clamp(0.0, 1.0 / n)
    else:
        lam = Yr
    if beta <= 0:
        return torch.full((T.shape[1],), -math.inf, dtype=T.dtype, device=T.device)
    N = lift.adjoint(lam)  # (C, D, D)
    D = N.shape[-1]
    g = torch.ones(D, dtype=N.dtype, device=N.device)
    g[-1] = -1.0
    M = torch.stack([N, -N])  # (2, C, D, D)
    M.diagonal(dim1=-2, dim2=-1).add_(mu[..., None] * g)
    M[..., -1, -1] += beta
    low = torch.linalg.eigvalsh(M)[..., 0].min(dim=0).values  # (C,)
    theta_max = interior_scaling(low, beta)
    linear = -(T * lam).sum(0)  # −Σ tλ ≥ 0
    if hinge:
        return theta_max * linear
    quad = n * lam.square().sum(0)
    theta = torch.minimum(theta_max, linear.clamp_min(0) / quad.clamp_min(1e-300))
    return theta * linear - 0.5 * theta.square() * quad


def _residuals(lift: _Lift, X: Tensor, S: Tensor, AX: Tensor, R: Tensor, Ys: Tensor,
               Yr: Tensor) -> tuple[Tensor, Tensor]:
    """OSQP's relative primal and dual residuals per output, (C,) each: primal
    ``max(‖x − s‖∞ / max(‖x‖∞, ‖s‖∞), ‖𝒜x − r‖∞ / max(‖𝒜x‖∞, ‖r‖∞))``, dual
    ``‖y_s + 𝒜ᵀy_r‖∞ / max(‖y_s‖∞, ‖𝒜ᵀy_r‖∞)``."""
    def inf(x: Tensor, dims: tuple[int, ...]) -> Tensor:
        return x.abs().amax(dim=dims)

    tiny = 1e-300
    cone = inf(X - S, (0, 2, 3)) / torch.maximum(inf(X, (0, 2, 3)), inf(S, (0, 2, 3))).clamp_min(
        tiny)
    data = inf(AX - R, (0,)) / torch.maximum(inf(AX, (0,)), inf(R, (0,))).clamp_min(tiny)
    AtY = lift.adjoint(Yr)
    dual = torch.maximum(inf(Ys[0] + AtY, (1, 2)), inf(Ys[1] - AtY, (1, 2)))
    dual = dual / torch.maximum(inf(Ys, (0, 2, 3)), inf(AtY, (1, 2))).clamp_min(tiny)
    return torch.maximum(cone, data), dual


@dataclass
class _State:
    """The ADMM iterate for C outputs: ``S`` (2, C, D, D) in K, its multipliers ``Ys``, the
    loss block ``R`` (n, C) and ``Yr``, and the projection's μ (2C,). Kept between runs as a
    warm start."""

    S: Tensor
    Ys: Tensor
    R: Tensor
    Yr: Tensor
    mu: Tensor

    @classmethod
    def zeros(cls, n: int, C: int, D: int, dtype: torch.dtype, device: torch.device) -> _State:
        S = torch.zeros((2, C, D, D), dtype=dtype, device=device)
        R = torch.zeros((n, C), dtype=dtype, device=device)
        return cls(S, torch.zeros_like(S), R, torch.zeros_like(R),
                   torch.zeros(2 * C, dtype=dtype, device=device))


@dataclass
class _Run:
    """What one ADMM run reached: its status, the objective at ``s`` and the certified lower
    bound of its program, their relative gap, the residuals and the penalties."""

    status: str
    objective: float
    bound: float
    gap: float
    prim: float
    dual: float
    rho_s: float
    rho_r: float


def _admm(lift: _Lift, T: Tensor, loss: Loss, beta: float, state: _State, tol: float,
          budget: Budget) -> _Run:
    """The ADMM of the module docstring on the data of ``lift`` and targets ``T`` (n, C),
    from ``state`` (updated in place), until the certified gap is at most ``tol`` or the budget
    runs out."""
    n, C, D = lift.n, T.shape[1], lift.d + 1
    rho_s = RHO_CONE * lift.curvature
    rho_r = RHO_LOSS / n
    lift.factor(rho_s / (2 * rho_r))
    tol_eff = max(tol, TOL_FLOOR * torch.finfo(T.dtype).eps)
    S, Ys, R, Yr, mu = state.S, state.Ys, state.R, state.Yr, state.mu
    status, iterations = "optimal", 0
    gap = prim = dual = math.inf
    objective = bound = math.nan
    while True:
        # x-update in the (Σ, Δ) coordinates
        b = rho_s * S - Ys  # (2, C, D, D) without the 𝒜ᵀ terms
        Sigma = (b[0] + b[1]) / rho_s
        Delta, ADelta = lift.solve((b[0] - b[1]) / (2 * rho_r), R - Yr / rho_r)
        X = torch.stack([0.5 * (Sigma + Delta), 0.5 * (Sigma - Delta)])
        # relaxed copies, proxes, duals
        Sh = ALPHA * X + (1 - ALPHA) * S
        Rh = ALPHA * ADelta + (1 - ALPHA) * R
        V = Sh + Ys / rho_s
        V[..., -1, -1] -= beta / rho_s
        iterations += 1
        budget.tick()
        exhausted = budget.exhausted()
        check = iterations % CHECK_EVERY == 0 or exhausted is not None
        S_new, mu = project_lifted_cone(V.reshape(2 * C, D, D), mu,
                                        rtol=0.0 if check else PROJECTION_RTOL)
        S = S_new.reshape(2, C, D, D)
        Ys = Ys + rho_s * (Sh - S)
        R = loss.prox(Rh + Yr / rho_r, T, 1.0 / (n * rho_r))
        Yr = Yr + rho_r * (Rh - R)
        if not check:
            continue
        # the certified gap at s (exactly in K) and the residuals
        AS = lift.apply(S[0] - S[1])
        objective = float(_data_term(loss, AS, T).sum() + beta * (S[..., -1, -1]).sum())
        bound = float(_dual_bound(loss, lift, T, Yr, rho_s * mu.reshape(2, C), beta).sum())
        gap = max(objective - bound, 0.0) / max(abs(objective), 1e-300)
        prim_c, dual_c = _residuals(lift, X, S, ADelta, R, Ys, Yr)
        prim, dual = float(prim_c.max()), float(dual_c.max())
        budget.bar.set_postfix(objective=f"{objective:.6g}", gap=f"{gap:.1e}")
        log.debug("poly admm %d: objective %.8g gap %.2e prim %.2e dual %.2e", iterations,
                  objective, gap, prim, dual)
        if gap <= tol_eff or (beta <= 0 and max(prim, dual) <= RESIDUAL_FACTOR * tol_eff):
            break
        if exhausted is not None:
            status = exhausted
            break
    state.S, state.Ys, state.R, state.Yr, state.mu = S, Ys, R, Yr, mu
    return _Run(status, objective, bound, gap, prim, dual, rho_s, rho_r)



def _class_state(state: _State, c: int) -> _State:
    """Output ``c``'s slice of ``state`` (copies; :func:`_put_class_state` writes it back)."""
    C = state.S.shape[1]
    return _State(state.S[:, c:c + 1].clone(), state.Ys[:, c:c + 1].clone(),
                  state.R[:, c:c + 1].clone(), state.Yr[:, c:c + 1].clone(),
                  state.mu[[c, C + c]].clone())


def _put_class_state(state: _State, c: int, part: _State) -> None:
    C = state.S.shape[1]
    state.S[:, c:c + 1], state.Ys[:, c:c + 1] = part.S, part.Ys
    state.R[:, c:c + 1], state.Yr[:, c:c + 1] = part.R, part.Yr
    state.mu[[c, C + c]] = part.mu


def _class_objectives(program: ConvexPolynomial, S: Tensor, X: Tensor, T: Tensor
                      ) -> tuple[Tensor, Tensor]:
    """Per output, the robust objective at ``S`` with the judge's sound worst cases, (C,), and
    the worst-case points' offsets ``δ`` (C, n, d)."""
    Zt = S[0] - S[1]
    margins, deltas = program.worst_case_l2_points(0.5 * (Zt + Zt.transpose(1, 2)), T,
                                                   float(program.l2_radius), X)
    data = (1.0 - margins).clamp_min(0.0).sum(0) / program.n_samples
    return data + float(program.beta) * S[..., -1, -1].sum(0), deltas


def _successive_linearisation(program: ConvexPolynomial, T: Tensor, tol: float,
                              budget: Budget, dtype: torch.dtype, device: torch.device
                              ) -> tuple[str, Tensor, float, float, float, dict]:
    """The robust hinge program by successive linearisation of the worst case (module
    docstring): each round solves, per output, the nominal program on the current worst-case
    points ``x_k + δ_kc`` by ADMM (warm-started), moves each output towards that solution as far
    as its true robust objective keeps decreasing (halving the step), and recomputes the worst
    cases. Returns the status, ``S``, the certified gap, the best lower bound, the objective
    and ``info``."""
    n, C, D = program.n_samples, program.n_outputs, program.n_features + 1
    beta = float(program.beta)
    X = torch.as_tensor(program.X, dtype=dtype, device=device)
    state = _State.zeros(n, C, D, dtype, device)
    current, deltas = _class_objectives(program, state.S, X, T)
    best_bound, gap, status, rounds, halvings = -math.inf, math.inf, "optimal", 0, 0
    inner_tol = 0.1
    while True:
        rounds += 1
        previous = state.S.clone()
        bounds = []
        for c in range(C):
            part = _class_state(state, c)
            lift = _Lift(X + deltas[c], program.activation, dtype, device)
            run = _admm(lift, T[:, c:c + 1], get_loss("hinge"), beta, part, max(inner_tol, tol / 4),
                        budget)
            _put_class_state(state, c, part)
            bounds.append(run.bound)
            if run.status != "optimal":
                status = run.status
                break
        if status == "optimal":  # every output's model was solved: a valid lower bound
            best_bound = max(best_bound, sum(bounds))
        # per output, the longest step in 1, 1/2, 1/4, ... that lowers the true objective
        step = state.S - previous
        todo = torch.ones(C, dtype=torch.bool, device=device)
        for k in range(LINE_SEARCH_STEPS + 1):
            tau = 0.5 ** k if k < LINE_SEARCH_STEPS else 0.0
            trial = previous + tau * step
            values, trial_deltas = _class_objectives(program, trial, X, T)
            accept = todo & ((values <= current) | (tau == 0.0))
            state.S[:, accept] = trial[:, accept]
            current = torch.where(accept, values, current)
            deltas[accept] = trial_deltas[accept]
            halvings += int(accept.sum()) * k
            todo &= ~accept
            if not bool(todo.any()):
                break
        objective = float(current.sum())
        gap = max(objective - best_bound, 0.0) / max(abs(objective), 1e-300)
        log.debug("successive linearisation round %d: objective %.8g bound %.8g gap %.2e "
                  "(%d ADMM iterations)", rounds, objective, best_bound, gap, budget.iterations)
        if gap <= tol or status != "optimal":
            break
        inner_tol = min(inner_tol, 0.1 * gap)
    return status, state.S, gap, best_bound, objective, {
        "rounds": rounds, "step_halvings": halvings, "factorisation": lift.mode}


@with_common_options
def solve_polynomial_admm(program: ConvexPolynomial, *, device: torch.device | str | None = None,
                          dtype: torch.dtype = torch.float64, tol: float = 1e-4,
                          max_iters: int = 20_000, time_limit: float | None = None,
                          seed: int = 0, progress: bool = False,
                          accept_inaccurate: bool = False) -> Solution:
    """Solve a :class:`ConvexPolynomial` program by ADMM (module docstring): nominal with the
    hinge or the squared loss (binary, multi-class one-vs-all, or regression; one cached
    factorisation), or robust (ℓ2, or ℓ∞ with ``linf="containment"``) with the hinge loss
    (successive linearisation of the worst case, one factorisation per output and round).
    Other programs raise :class:`InvalidInputError` (use the accelerated projected gradient
    solver, ``method="apg"``).

    ``tol`` (default 1e-4) is a **certified relative duality gap**: the solve stops when
    ``(F(s) − D)/|F(s)|`` of the returned point ``s`` (``D`` a dual bound, module docstring) is
    at most ``tol``, an upper bound on its relative distance to the optimum (for β = 0, where the
    bound degenerates, OSQP's residuals stand in; module docstring). ``Solution.gap`` is that
    gap (``gap_kind = "certified_gap"``). The linear system is factored in float64 whatever
    ``dtype``. A robust program whose zero network is certified optimal
    (:func:`~convexrobust.solvers.lifted_cone.zero_is_optimal`) returns it at once.

    ``info`` holds ``duality_gap``, ``dual_bound``, ``factorisation`` and, for nominal programs,
    the final residuals and penalties; for robust ones the number of ``rounds``.
    """
    reason = admm_unsupported(program)
    if reason is not None:
        raise InvalidInputError(reason + "; use the accelerated projected gradient solver "
                                "(method='apg')")
    check_first_order_options(tol, max_iters, time_limit, seed, dtype)
    start = time.perf_counter()
    device = check_device(device)
    loss = get_loss(program.loss)

    budget = Budget(max_iters, time_limit, progress, desc="torch polynomial admm", start=start)
    T = torch.as_tensor(program.targets.values, dtype=dtype, device=device)
    T = T.reshape(program.n_samples, program.n_outputs)
    D = program.n_features + 1
    try:
        if program.threat is None:
            state = _State.zeros(program.n_samples, program.n_outputs, D, dtype, device)
            lift = _Lift(program.X, program.activation, dtype, device)
            run = _admm(lift, T, loss, float(program.beta), state, float(tol), budget)
            status, S, gap, bound, objective = (run.status, state.S, run.gap, run.bound,
                                                run.objective)
            info = {"factorisation": lift.mode, "primal_residual": run.prim,
                    "dual_residual": run.dual, "stationarity": run.dual, "rho": run.rho_s,
                    "rho_loss": run.rho_r}
        elif zero_is_optimal(program):
            # the zero network is certified optimal (lifted_cone.zero_is_optimal): its
            # objective is also a lower bound
            S = torch.zeros((2, program.n_outputs, D, D), dtype=dtype, device=device)
            zero = S[0].detach().to("cpu", torch.float64).numpy()
            objective = bound = program.objective({"Z": zero, "Zp": zero})
            status, gap, info = "optimal", 0.0, {"rounds": 0, "zero_certificate": True}
        else:
            status, S, gap, bound, objective, info = _successive_linearisation(
                program, T, float(tol), budget, dtype, device)
    finally:
        budget.close()
    iterations = budget.iterations
    tol_eff = max(float(tol), TOL_FLOOR * torch.finfo(dtype).eps)
    values, violation_before = repaired_values(program, S)
    wall = time.perf_counter() - start
    log.info("torch polynomial admm: %s after %d iterations (%.3gs), gap %.2e", status,
             iterations, wall, gap)
    return finish(
        program, values, status, accept_inaccurate=accept_inaccurate,
        failure=(f"torch (ADMM) stopped at {status} after {iterations} iterations with "
                 f"certified relative gap {gap:.2e} > tol {tol_eff:.1e}: raise max_iters / "
                 "time_limit, or loosen tol"),
        wall_time=wall, iterations=iterations, solver_objective=objective, gap=gap,
        gap_kind="certified_gap",
        info={"method": "admm", "device": str(device), "dtype": str(dtype).replace("torch.", ""),
              "duality_gap": gap, "dual_bound": bound, **info,
              "violation_before_repair": violation_before},
    )
