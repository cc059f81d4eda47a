r"""The lifted cone of the polynomial programs, ``K = {Z ⪰ 0 : ⟨G, Z⟩ = tr(Z1) − z4 = 0}``
with ``G = diag(I_d, −1)`` (MATH.md §3): the exact Euclidean projection onto it, the final
float64 repair every torch solver of these programs applies to its point, and a certificate
that the zero network is optimal.

Projection. ``Π_K(Y) = Π_PSD(Y − μG)`` where the scalar ``μ`` solves
``φ(μ) = ⟨G, Π_PSD(Y − μG)⟩ = 0`` (the KKT conditions of ``min ‖Z − Y‖²`` s.t. ``Z ⪰ 0,
⟨G, Z⟩ = 0``). ``φ`` is non-increasing; it is solved by safeguarded Newton steps (the derivative
of the PSD projection in the eigenbasis: ``φ'(μ) = −Σ_ij Γ_ij (QᵀGQ)_ij²``, ``Γ_ij`` the divided
differences of ``max(λ, 0)``) inside a bisection bracket, warm-started at a previous ``μ``; one
batched ``eigh`` per Newton step.

Dual cone. ``K* = {M : M − μG ⪰ 0 for some μ}`` (K has an interior point), used by
:func:`zero_is_optimal`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from convexrobust.problems.losses import get_loss
from convexrobust.problems.polynomial import ConvexPolynomial

__all__ = ["project_lifted_cone", "repaired_values", "zero_is_optimal"]


def _psd_part(lam: Tensor, Q: Tensor) -> Tensor:
    return (Q * lam.clamp_min(0.0).unsqueeze(-2)) @ Q.transpose(-1, -2)


def project_lifted_cone(Y: Tensor, mu0: Tensor | None = None, *, max_iter: int = 100,
                        rtol: float = 0.0) -> tuple[Tensor, Tensor]:
    """Euclidean projection of symmetric ``Y`` (B, D, D) onto ``{Z ⪰ 0, tr(Z1) = z4}``.

    Returns ``(Z, μ)`` with ``Z = Π_PSD(Y − μG)``, ``G = diag(I, −1)``, and ``μ`` (B,) the root
    of the non-increasing ``φ(μ) = ⟨G, Π_PSD(Y − μG)⟩`` found by Newton steps safeguarded by a
    bisection bracket (warm start ``mu0``). One batched ``eigh`` per step. The root is accepted
    when ``|φ| ≤ max(8·eps·D, rtol)·‖Y‖_F`` (``rtol > 0``: an inexact projection, still exactly
    PSD, whose trace equality holds to that tolerance).
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

    def phi_at(mu: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``φ(μ)`` and the eigendecomposition of ``Y − μG``."""
        M = Y.clone()
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

    mu = torch.zeros(B, dtype=dtype, device=device) if mu0 is None else mu0.clone()
    phi, lam, Q = phi_at(mu)
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
        phi, lam, Q = phi_at(mu)
    return _psd_part(lam, Q), mu


def repaired_values(program: ConvexPolynomial, Z: Tensor) -> tuple[dict[str, np.ndarray], float]:
    """The returned values of a solver's point ``Z`` (2, C, D, D): projected once more onto K in
    float64 on the CPU (exactly PSD, trace equality to round-off), and the violation before."""
    Z = Z.detach().to("cpu", torch.float64)
    violation_before = program.violation({"Z": Z[0].numpy(), "Zp": Z[1].numpy()})
    two, C, D, _ = Z.shape
    repaired = project_lifted_cone(Z.reshape(two * C, D, D))[0].reshape(two, C, D, D).numpy()
    return ({"Z": np.ascontiguousarray(repaired[0]), "Zp": np.ascontiguousarray(repaired[1])},
            violation_before)


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
