r"""The lifted cone of the polynomial programs, ``K = {Z ⪰ 0 : ⟨G, Z⟩ = tr(Z1) − z4 = 0}``
with ``G = diag(I_d, −1)`` (MATH.md §3): the exact Euclidean projection onto it, the final
float64 repair every torch solver of these programs applies to its point, a dual lower bound
on the optimum from any point, and a certificate that the zero network is optimal.

Projection. ``Π_K(Y) = Π_PSD(Y − μG)`` where the scalar ``μ`` solves
``φ(μ) = ⟨G, Π_PSD(Y − μG)⟩ = 0`` (the KKT conditions of ``min ‖Z − Y‖²`` s.t. ``Z ⪰ 0,
⟨G, Z⟩ = 0``). ``φ`` is non-increasing; it is solved by safeguarded Newton steps (the derivative
of the PSD projection in the eigenbasis: ``φ'(μ) = −Σ_ij Γ_ij (QᵀGQ)_ij²``, ``Γ_ij`` the divided
differences of ``max(λ, 0)``) inside a bisection bracket, warm-started at a previous ``μ``; one
batched ``eigh`` per Newton step.

Dual cone. ``K* = {M : M − μG ⪰ 0 for some μ}`` (K has an interior point), used by
:func:`dual_bound` and :func:`zero_is_optimal`.

Dual bound of a point (:func:`dual_bound`; margin losses). For any ``δ_kc`` in the threat ball
the worst-case margin satisfies ``v_kc(Z̃) ≤ t_kc⟨A(x_k + δ_kc), Z̃_c⟩`` (the nominal program on
the points ``x_k + δ_kc`` is a lower model, exact where the ``δ`` are the worst cases; nominal
programs take ``δ = 0``), and for any slope ``s ∈ [−1, 0]`` Fenchel–Young gives
``φ(v) ≥ s·v − φ*(s)``. With ``N_c = (1/n) Σ_k s_kc t_kc A(x_k + δ_kc)`` this yields, for every
``(Z, Z') ∈ K^{2C}``::

    F(Z, Z') ≥ (1/n) Σ_kc −φ*(s_kc) + Σ_c ⟨βE + N_c, Z_c⟩ + ⟨βE − N_c, Z'_c⟩,

whose minimum over K is the first sum when every ``βE ± N_c`` is in ``K*`` (a dual feasible
point: weak duality). Otherwise two repairs keep a valid bound, and the better one is taken:

* scaling (:func:`interior_scaling`, which the ADMM's certificate uses too): with
  ``ℓ_c = min_± max_μ λ_min(βE ± N_c + μG)`` and the interior point ``βE + (β/2)G = (β/2)I``
  of ``K*``, concavity of ``λ_min`` puts ``βE ± θN_c`` in ``K*`` for
  ``θ_c = (β/2)/(β/2 − ℓ_c)`` (1 when ``ℓ_c ≥ 0``), and the slopes ``θ_c s`` stay in
  ``[−1, 0]``: the bound is ``(1/n) Σ_kc −φ*(θ_c s_kc)``;
* a trace bound: the program is the sum of C independent programs, one per output, and an
  optimum of output c has ``β (z4_c + z4'_c) ≤ F*_c ≤ U_c`` (the losses are ≥ 0) with
  ``tr Z = 2 z4`` on K, so over that part of K its inner products are at least
  ``min(0, ℓ_c) · 2U_c/β``; ``U_c`` is output c's objective at the point when the point is
  in K (to :data:`BOUND_FEASIBILITY`) and the zero network's, ``φ(0)``, in any case.

Both repairs bound each output's part of the dual function, so the bound is the sum over the
outputs of the better of the two.

With β = 0 the only interior point is gone: a class whose ``±N_c`` is not certified in ``K*``
gets slopes 0 (``N = 0`` is in ``K*`` and ``φ*(0) = 0``). Each ``ℓ_c`` is lowered by a
round-off allowance of ``D·eps·‖M‖_F`` times :data:`BOUND_ROUNDOFF` before it is used.

The slopes are the loss's at the worst-case margins of the point, smoothed by the width
``smoothing`` the point was solved with, or ``−duals`` when the solver smoothed the hinge around
dual estimates and hands them over (they are then its gradient's loss weights at the point): at an
optimum of the width-μ smoothed program they are its exact dual solution, so where the worst cases
are unique the bound is tight up to the smoothing's own error (the exact subgradient, or another
width, gives a poor bound where many margins sit at the kink).
``max_μ λ_min(M + μG)`` is concave in ``μ`` with supergradient ``vᵀGv`` (``v`` the bottom
eigenvector): bisection on its sign over ``|μ| ≤ 2‖M‖_F + 1``, where every maximiser lies
(``λ_min(M + μG)`` is at most ``M_DD − μ`` and ``M_11 + μ``, and at least ``−‖M‖`` at
``μ = 0``); any ``μ`` gives a valid ``ℓ``, and ``ℓ`` is 1-Lipschitz in ``μ``, so
:data:`BOUND_BISECTIONS` halvings lose at most ``(4‖M‖_F + 2)·2^(−32)`` of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from convexrobust._validation import check_positive
from convexrobust.problems.losses import get_loss
from convexrobust.problems.polynomial import ConvexPolynomial

__all__ = ["anisotropy", "dual_bound", "interior_scaling", "lift_congruence", "project_lifted_cone",
           "repaired_values", "zero_is_optimal"]

#: Bisection steps of :func:`dual_bound`'s maximisation over the K* shift μ (module docstring).
BOUND_BISECTIONS = 32
#: :func:`dual_bound` uses the point's objective in its trace bound only when the point's
#: violation of K is at most this.
BOUND_FEASIBILITY = 1e-9
#: :func:`dual_bound` lowers each smallest eigenvalue by this many ``D·eps·‖M‖_F``.
BOUND_ROUNDOFF = 8.0


#: :func:`lift_congruence` floors the eigenvalues of the samples' second moment at this fraction
#: of the largest before inverting them (directions without data are not stretched further).
CONGRUENCE_FLOOR = 1e-4


def anisotropy(X: np.ndarray) -> float:
    """``d·λ_max(S)/tr(S)`` of the samples' second moment ``S = XᵀX/n`` (uncentred, as the
    lifted samples are): 1 for isotropic samples, ``d`` for samples on a line (real features'
    principal components: about 20)."""
    X = np.asarray(X, dtype=np.float64)
    S = X.T @ X / max(len(X), 1)
    trace = float(np.trace(S))
    return 1.0 if trace <= 0 else float(np.linalg.eigvalsh(S)[-1]) * X.shape[1] / trace


def lift_congruence(program: ConvexPolynomial) -> Tensor:
    r"""The whitening congruence ``S = diag(S₁, 1)`` (float64, (D, D)) of ``program``'s samples
    and their worst cases: in the coordinates ``W = S⁻¹ Z S⁻¹`` the data term is as well
    conditioned as on isotropic samples.

    ``Z ↦ SZS`` maps the PSD cone onto itself, K onto ``{W ⪰ 0 : ⟨SGS, W⟩ = 0}`` and the network
    output to ``f(x) = ⟨S A(x) S, W⟩``, where ``S A(x) S`` is the lifted sample of the whitened
    point ``x̃ = S₁x``. The curvature of the data term along a coordinate ``(i, j)`` of the
    quadratic block is ``a² E[x̃ᵢ²x̃ⱼ²]``, which for features with second-moment eigenvalues
    ``σᵢ²`` spreads over ``(σ_max/σ_min)⁴`` (the anisotropy of real features is in the tens, so
    the spread in the hundreds of thousands). A robust program's loss is evaluated at the worst
    cases ``x + δ*``, ``‖δ*‖₂ = r`` wherever the constraint is active, in a direction the
    adversary picks from the network: no direction is thinner than ``r²`` for them. So
    ``S₁ = (M_r/m)^{-1/2}`` with ``M_r = XᵀX/n + r²I`` (``r`` the program's ℓ2 radius, 0 for a
    nominal program; the eigenvalues of ``XᵀX/n`` floored at :data:`CONGRUENCE_FLOOR` of the
    largest, ``m = tr(M_r)/d``) gives every ``x̃ᵢ`` the same second moment ``m`` and keeps the
    scale of isotropic samples. Whitening by the samples alone stretched the thin directions of
    Kuelbs et al.'s breast-cancer features (standardised, strongly correlated) up to 27×, where
    the ball of radius 0.5 then reached far, and the coarsest smoothing stage took 205 iterations to
    leave the zero network instead of 15 (benchmarks/targets.py, robust-sdp-breast-cancer). The
    last coordinate is left alone: ``w4`` is tied to ``tr(W₁)`` by the cone, and scaling it
    changes the weight of that trace (the network's scale, the direction the regulariser and
    every sample's constant term move) in the Euclidean metric of the iterates — on planted
    programs every factor tried (0.4 to 4) slowed accelerated gradient down.
    """
    X = np.asarray(program.X, dtype=np.float64)
    n, d = X.shape
    evals, evecs = np.linalg.eigh(X.T @ X / n)
    evals = np.maximum(evals, CONGRUENCE_FLOOR * max(evals.max(), np.finfo(float).tiny))
    evals = evals + float(program.l2_radius) ** 2
    m = float(evals.mean())
    S = np.eye(d + 1)
    S[:d, :d] = (evecs * np.sqrt(m / evals)) @ evecs.T
    return torch.from_numpy(S)


def _psd_part(lam: Tensor, Q: Tensor) -> Tensor:
    return (Q * lam.clamp_min(0.0).unsqueeze(-2)) @ Q.transpose(-1, -2)


def project_lifted_cone(Y: Tensor, mu0: Tensor | None = None, *, max_iter: int = 100,
                        rtol: float = 0.0, G: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Euclidean projection of symmetric ``Y`` (B, D, D) onto ``{Z ⪰ 0, ⟨G, Z⟩ = 0}``, by
    default ``G = diag(I, −1)`` (the lifted cone K: ``tr(Z1) = z4``).

    Returns ``(Z, μ)`` with ``Z = Π_PSD(Y − μG)`` and ``μ`` (B,) the root of the
    non-increasing ``φ(μ) = ⟨G, Π_PSD(Y − μG)⟩`` found by Newton steps safeguarded by a
    bisection bracket (warm start ``mu0``). One batched ``eigh`` per step, of the matrices
    whose root is not yet accepted. The root is accepted
    when ``|φ| ≤ max(8·eps·D, rtol)·‖Y‖_F`` (``rtol > 0``: an inexact projection, still exactly
    PSD, whose trace equality holds to that tolerance).

    ``G``: any symmetric (D, D) matrix with a positive and a negative eigenvalue, e.g. ``SGSᵀ``
    for the image ``{W : SWSᵀ ∈ K}`` of K under a congruence (the preconditioned coordinates of
    :mod:`~convexrobust.solvers.polynomial_first_order`); ``φ'`` then takes ``QᵀGQ`` in full
    (one more batched product per step).
    """
    Y = 0.5 * (Y + Y.transpose(-1, -2))
    B, D, _ = Y.shape
    dtype, device = Y.dtype, Y.device
    g = torch.ones(D, dtype=dtype, device=device)
    g[-1] = -1.0
    eps = torch.finfo(dtype).eps
    scale = torch.linalg.matrix_norm(Y).clamp_min(torch.finfo(dtype).tiny)
    ftol = max(8.0 * eps * D, rtol) * scale
    tiny = torch.finfo(dtype).tiny

    def phi_at(mu: Tensor, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``φ(μ)`` and the eigendecomposition of ``Y − μG`` for the matrices ``rows``."""
        M = Y[rows]
        M.diagonal(dim1=-2, dim2=-1).sub_(mu[:, None] * g)
        lam, Q = torch.linalg.eigh(M)
        # with q the last row of Q, QᵀGQ = I − 2qqᵀ (G = I − 2e_De_Dᵀ): φ = Σ λᵢ⁺(1 − 2qᵢ²)
        pos = lam.clamp_min(0.0)
        return pos.sum(-1) - 2.0 * torch.linalg.vecdot(pos, Q[:, -1, :].square()), lam, Q

    def slope_at(lam: Tensor, Q: Tensor) -> Tensor:
        """``φ'(μ) = −Σᵢ Γᵢᵢ(1 − 4sᵢ) − 4 sᵀΓs`` with ``s = q²``, where Γ (the divided
        differences of max(λ, 0)) is 1 on pairs of positive eigenvalues, 0 on pairs of
        non-positive ones and λᵢ/(λᵢ − λⱼ) for λᵢ > 0 ≥ λⱼ: O(D²), no matrix product."""
        s = Q[:, -1, :].square()
        ind = (lam > 0).to(dtype)
        s_pos = s * ind
        pos, neg = lam.clamp_min(0.0), (-lam).clamp_min(0.0)
        mixed = pos[:, :, None] / (pos[:, :, None] + neg[:, None, :]).clamp_min(tiny)
        cross = torch.linalg.vecdot(torch.bmm(s_pos[:, None, :], mixed).squeeze(1), s - s_pos)
        return -((ind - 4.0 * s_pos).sum(-1) + 4.0 * (s_pos.sum(-1).square() + 2.0 * cross))

    if G is not None:
        phi_at, slope_at = _general_phi(Y, G.to(dtype=dtype, device=device))

    mu = torch.zeros(B, dtype=dtype, device=device) if mu0 is None else mu0.clone()
    phi, lam, Q = phi_at(mu, torch.arange(B, device=device))
    lo = torch.full_like(mu, -math.inf)  # φ(lo) > 0
    hi = torch.full_like(mu, math.inf)  # φ(hi) < 0
    for step_number in range(max_iter):
        done = phi.abs() <= ftol
        if bool(done.all()):
            break
        lo = torch.where(phi > 0, torch.maximum(lo, mu), lo)
        hi = torch.where(phi < 0, torch.minimum(hi, mu), hi)
        # Newton (φ' ≤ 0; a zero slope gives ±inf or NaN, outside the bracket)
        new = mu - phi / slope_at(lam, Q)
        ok = (new > lo) & (new < hi)
        # (Newton from a warm start takes two or three steps; beyond four, check for a bracket
        # at round-off width too)
        if step_number >= 4 or not bool(ok.all()):
            # no Newton step inside the bracket: bisect a finite bracket, else expand outwards;
            # a bracket at round-off width stays where it is
            finite = torch.isfinite(lo) & torch.isfinite(hi)
            step = torch.maximum(2.0 * (mu.abs() + scale), torch.ones_like(mu))
            fallback = torch.where(finite, 0.5 * (lo + hi),
                                   torch.where(phi > 0, mu + step, mu - step))
            stalled = finite & (hi - lo <= 4.0 * eps * (mu.abs() + scale))
            new = torch.where(ok, new, torch.where(stalled, mu, fallback))
            done = done | stalled
            if bool(done.all()):
                break
        mu = torch.where(done, mu, new)
        rows = (~done).nonzero().squeeze(-1)
        phi_r, lam_r, Q_r = phi_at(mu[rows], rows)
        phi, lam, Q = phi.index_copy(0, rows, phi_r), lam.index_copy(0, rows, lam_r), \
            Q.index_copy(0, rows, Q_r)
    return _psd_part(lam, Q), mu


def _general_phi(Y: Tensor, G: Tensor) -> tuple[
        Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]],
        Callable[[Tensor, Tensor], Tensor]]:
    """``φ`` and ``φ'`` of :func:`project_lifted_cone` for a general symmetric ``G``:
    ``φ(μ) = Σᵢ λᵢ⁺ Hᵢᵢ`` and ``φ'(μ) = −Σ_ij Γ_ij H_ij²`` with ``H = QᵀGQ`` in the eigenbasis
    of ``Y − μG``."""
    tiny = torch.finfo(Y.dtype).tiny

    def phi_at(mu: Tensor, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lam, Q = torch.linalg.eigh(Y[rows] - mu[:, None, None] * G)
        H_diag = ((G @ Q) * Q).sum(-2)  # qᵢᵀGqᵢ
        return (lam.clamp_min(0.0) * H_diag).sum(-1), lam, Q

    def slope_at(lam: Tensor, Q: Tensor) -> Tensor:
        H = Q.transpose(-1, -2) @ G @ Q
        pos, neg = lam.clamp_min(0.0), (-lam).clamp_min(0.0)
        both = (lam[:, :, None] > 0) & (lam[:, None, :] > 0)
        mixed = pos[:, :, None] / (pos[:, :, None] + neg[:, None, :]).clamp_min(tiny) \
            + pos[:, None, :] / (pos[:, None, :] + neg[:, :, None]).clamp_min(tiny)
        gamma = torch.where(both, torch.ones_like(mixed), mixed)
        return -(gamma * H.square()).sum((-2, -1))

    return phi_at, slope_at


def repaired_values(program: ConvexPolynomial, Z: Tensor) -> tuple[dict[str, np.ndarray], float]:
    """The returned values of a solver's point ``Z`` (2, C, D, D): projected once more onto K in
    float64 on the CPU (exactly PSD, trace equality to round-off), and the violation before."""
    Z = Z.detach().to("cpu", torch.float64)
    violation_before = program.violation({"Z": Z[0].numpy(), "Zp": Z[1].numpy()})
    two, C, D, _ = Z.shape
    repaired = project_lifted_cone(Z.reshape(two * C, D, D))[0].reshape(two, C, D, D).numpy()
    return ({"Z": np.ascontiguousarray(repaired[0]), "Zp": np.ascontiguousarray(repaired[1])},
            violation_before)


def interior_scaling(margin: Tensor, beta: float) -> Tensor:
    """The largest ``θ ≤ 1`` that puts both ``βE ± θN`` in ``K*``, given ``margin`` ``ℓ`` with
    ``βE ± N + μ±G ⪰ ℓI`` for some shifts ``μ±`` (module docstring, "scaling"): 1 when
    ``ℓ ≥ 0``, else ``(β/2)/(β/2 − ℓ)``; ``β > 0``."""
    return torch.where(margin >= 0, 1.0, (beta / 2) / (beta / 2 - margin))


def _dual_cone_margin(M: Tensor) -> Tensor:
    """``max_μ λ_min(M + μG)`` per symmetric ``M`` (B, D, D), approximately from below (module
    docstring): ``≥ 0`` certifies ``M ∈ K*``."""
    D = M.shape[-1]
    g = torch.ones(D, dtype=M.dtype, device=M.device)
    g[-1] = -1.0
    high = 2.0 * torch.linalg.matrix_norm(M) + 1.0
    low = -high
    for _ in range(BOUND_BISECTIONS):
        mid = 0.5 * (low + high)
        V = torch.linalg.eigh(M + torch.diag_embed(mid[:, None] * g))[1][..., :, 0]
        rising = (V.square() * g).sum(-1) > 0
        low, high = torch.where(rising, mid, low), torch.where(rising, high, mid)
    bottom = torch.linalg.eigvalsh(M + torch.diag_embed(0.5 * (low + high)[:, None] * g))[:, 0]
    return bottom - BOUND_ROUNDOFF * D * torch.finfo(M.dtype).eps * torch.linalg.matrix_norm(M)


def dual_bound(program: ConvexPolynomial, values: dict[str, np.ndarray], smoothing: float, *,
               objective: float | None = None, duals: np.ndarray | None = None
               ) -> float | None:
    """A lower bound on the optimum of ``program`` built from the point ``values`` and the loss
    slopes at the smoothing it was solved with (module docstring; the accelerated gradient
    solver's final ``info["smoothing"]``, 0 for a smooth loss), or from the dual estimates
    ``duals`` (n, C), slopes ``−duals``, when the solver has them (it smoothed the hinge around
    them: losses module doc), in float64 on the CPU; None where none
    is written (the squared loss, the ℓ∞ diagonal S-procedure). ``objective``: the program's
    objective at ``values`` when the caller has it (computed otherwise). Any point gives a valid
    bound; where the worst cases are unique it is tight at an optimum, so
    ``(objective − bound)/|objective|`` certifies how far the point can be from optimal.
    :class:`InvalidInputError` for a negative or non-finite ``smoothing`` or malformed values."""
    smoothing = check_positive(smoothing, "smoothing")
    loss = get_loss(program.loss)
    if not loss.has_conjugate or program.uses_diagonal_lmi:
        return None
    if objective is None:
        objective = program.objective(values)  # (validates the values)
    Zt = torch.as_tensor(np.asarray(values["Z"], dtype=np.float64)
                         - np.asarray(values["Zp"], dtype=np.float64))
    Zt = 0.5 * (Zt + Zt.transpose(1, 2))
    X = torch.as_tensor(program.X, dtype=torch.float64)
    n, d = X.shape
    T = torch.as_tensor(program.targets.values, dtype=torch.float64).reshape(n, -1)
    C = T.shape[1]
    radius = float(program.l2_radius)
    if radius > 0:
        margins, deltas = program.worst_case_l2_points(Zt, T, radius, X)
    else:
        margins, deltas = T * program.predictions_torch(Zt, X), None
    beta = float(program.beta)
    act = program.activation
    if duals is None:
        slopes = loss.value_and_slope(margins, smoothing)[1].clamp(-1.0, 0.0)  # (n, C)
    else:
        slopes = -torch.as_tensor(np.asarray(duals, dtype=np.float64)).reshape(
            margins.shape).clamp(0.0, 1.0)
    w = slopes * T / n
    N = torch.empty((C, d + 1, d + 1), dtype=torch.float64)
    for c in range(C):
        P = X if deltas is None else X + deltas[c]
        N[c, :d, :d] = act.a * (P.T * w[:, c]) @ P
        N[c, :d, d] = N[c, d, :d] = 0.5 * act.b * (w[:, c] @ P)
        N[c, d, d] = act.c * w[:, c].sum()
    M = torch.cat([N, -N])
    M[:, d, d] += beta
    ell = _dual_cone_margin(M).reshape(2, C).min(0).values  # (C,)
    if not bool(torch.isfinite(ell).all()):
        return -math.inf
    if beta <= 0:
        return float(-loss.conjugate(torch.where(ell >= 0, slopes, 0.0)).sum()) / n
    # per output (the program is a sum of C independent ones): the better of the two repairs
    scaled = -loss.conjugate(interior_scaling(ell, beta) * slopes).sum(0) / n  # (C,)
    zero_network = float(loss.value_and_slope(torch.zeros(1, dtype=torch.float64))[0][0])
    upper = torch.full((C,), zero_network, dtype=torch.float64)
    if math.isfinite(objective) and program.violation(values) <= BOUND_FEASIBILITY:
        z4 = torch.as_tensor(np.asarray(values["Z"], dtype=np.float64)[:, d, d]
                             + np.asarray(values["Zp"], dtype=np.float64)[:, d, d])
        per_output = loss.value_and_slope(margins, 0.0)[0].sum(0) / n + beta * z4
        # the outputs' objectives, raised by any shortfall of their sum to the program's
        excess = max(0.0, objective - float(per_output.sum()))
        upper = torch.minimum(upper, (per_output + excess).clamp_min(0.0))
    trace = -loss.conjugate(slopes).sum(0) / n + ell.clamp_max(0.0) * 2.0 * upper / beta
    return float(torch.maximum(scaled, trace).sum())


def zero_is_optimal(program: ConvexPolynomial) -> bool:
    """Whether a certificate proves the zero network (``Z = Z' = 0``) optimal for a robust
    polynomial program; False when none is found (which proves nothing).

    At ``Z̃ = 0`` every worst-case margin ``v_kc = min_{‖δ‖≤r} s_kc f_c(x_k + δ)`` is 0 and, being
    concave and positively homogeneous, is bounded above by ``s_kc ⟨E_π[A(x_k + δ)], Z̃_c⟩`` for
    any distribution π on the ball. Each loss is differentiable there: ``F`` has the directional
    derivative ``−(1/n) Σ_kc w_kc v_kc(D̃) + β Σ_c (z4_c + z4'_c)`` along ``D = (Z, Z') ∈ K²``,
    with ``w = −φ'(0)`` and ``s = t`` for the margin losses, ``w = |t|`` and ``s = sign t`` for
    the squared loss (its worst residual is ``|t| − v`` near 0). So 0 is optimal (``F`` is
    convex) when, per output, ``S = (1/n) Σ_k w_k s_k E_π[A(x_k + δ)]`` has ``βE − S`` and
    ``βE + S`` in ``K*``. The distributions used: ``x_k + δ = 0`` (needs ``‖x_k‖ ≤ r``), or
    uniform on ``{±ρ_k e_j}`` with ``ρ_k ≤ r − ‖x_k‖``. Then ``S = diag(σ I, S_dd)`` with
    ``S_dd = (c/n) Σ w_k s_k`` and ``σ = (a/nd) Σ_k w_k s_k ρ_k²`` free in an interval that
    contains 0, and both memberships hold iff ``|σ + S_dd| ≤ β`` for some attainable σ."""
    r = float(program.l2_radius)
    if r <= 0 or program.uses_diagonal_lmi:
        return False
    X = np.asarray(program.X, dtype=np.float64)
    n, d = X.shape
    norms = np.linalg.norm(X, axis=1)
    if norms.max(initial=0.0) > r:
        return False
    room = (r - norms) ** 2 / (n * d)  # the largest ρ_k² / (nd)
    T = np.asarray(program.targets.values, dtype=np.float64).reshape(n, -1)
    loss = get_loss(program.loss)
    if loss.margin:
        slope0 = float(loss.value_and_slope(torch.zeros(1, dtype=torch.float64))[1][0])
        w, s = np.full_like(T, -slope0), T
    else:
        w, s = np.abs(T), np.sign(T)
    a, c, beta = float(program.activation.a), float(program.activation.c), float(program.beta)
    for k in range(T.shape[1]):
        s_dd = c * float(w[:, k] @ s[:, k]) / n
        up = float(w[s[:, k] > 0, k] @ room[s[:, k] > 0])  # Σ over s > 0 of w ρ²/(nd)
        down = float(w[s[:, k] < 0, k] @ room[s[:, k] < 0])
        low, high = sorted((a * up, -a * down))
        sigma = min(max(-s_dd, low), high)
        if not abs(sigma + s_dd) <= beta:
            return False
    return True
