"""The convex losses of the programs, rendered for cvxpy and for torch from one definition.

Every loss is a convex, non-increasing function of a worst-case margin ``m`` (classification)
or a convex, non-decreasing function of a worst-case absolute residual ``ρ`` (squared loss):

=========  ===========================  =========================================================
name       per output ``φ``              pairwise multi-class (margins ``m_c = f_y − f_c − …``)
=========  ===========================  =========================================================
hinge      ``φ(m) = (1 − m)_+``          ``Σ_{c≠y} (1 − m_c)_+``            (Bai et al. 2022)
logistic   ``φ(m) = log(1 + e^{−m})``    ``log(1 + Σ_{c≠y} e^{−m_c})`` = ``logsumexp_c(−m_c)``
squared    ``ψ(ρ) = ρ² / 2``             (multi-class squared loss is one-vs-all)
=========  ===========================  =========================================================

For a nominal program ``m = t·ŷ`` and ``ρ = |t − ŷ|``; for a robust one they are the exact
worst cases over the threat ball (MATH.md §2). With ``m_y = 0`` the pairwise logistic loss is
the cross-entropy, and its robust form an upper bound of the worst-case cross-entropy (each
competitor's worst case is taken separately). The data term is the **mean** over samples.

The torch renderings take ``smoothing=μ ≥ 0`` for first-order solvers: with ``μ > 0`` the hinge
is replaced by its Moreau envelope shifted to be exact away from the kink (Huber form,
``0 ≤ φ_μ − φ ≤ μ/8``, zero for ``|1 − m| ≥ μ/2``, gradient ``1/μ``-Lipschitz; Nesterov,
Math. Program. 2005); ``μ = 0`` is the exact definition.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import torch
import torch.nn.functional as F

LOSSES: tuple[str, ...] = ("squared", "hinge", "logistic")
MARGIN_LOSSES: tuple[str, ...] = ("hinge", "logistic")


def elementwise_cvxpy(loss: str, u: cp.Expression) -> cp.Expression:
    """``φ(m)`` (margin losses) or ``ψ(ρ)`` (squared) applied entrywise to a cvxpy expression."""
    if loss == "hinge":
        return cp.pos(1 - u)
    if loss == "logistic":
        return cp.logistic(-u)
    return 0.5 * cp.square(u)


def huber_relu(s: torch.Tensor, smoothing: float) -> torch.Tensor:
    """``(s)_+`` smoothed on ``|s| < μ/2`` only: ``(s + μ/2)²/2μ`` there, ``(s)_+`` exactly
    elsewhere (``(s)_+`` itself when ``μ = 0``).

    This is the Moreau envelope ``s²/2μ`` on ``[0, μ]``, ``s − μ/2`` above, shifted by ``μ/2``
    so that it is exact away from the kink: convex, gradient ``1/μ``-Lipschitz,
    ``0 ≤ φ_μ − (s)_+ ≤ μ/8`` and equal to ``(s)_+`` for ``|s| ≥ μ/2`` (Beck & Teboulle,
    SIAM J. Optim. 2012, §4: any smoothing within a bounded band works for continuation).
    Samples away from the margin therefore carry no smoothing error at all."""
    if not smoothing:
        return torch.relu(s)
    half = smoothing / 2
    inside = (s + half).clamp(min=0, max=smoothing)
    return torch.where(s >= half, s, inside.square() / (2 * smoothing))


def elementwise_torch(loss: str, u: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """The torch rendering of :func:`elementwise_cvxpy` (``smoothing``: see the module doc)."""
    if loss == "hinge":
        return huber_relu(1 - u, smoothing)
    if loss == "logistic":
        return F.softplus(-u)
    return 0.5 * u.square()


def pairwise_cvxpy(loss: str, margins: cp.Expression, others: np.ndarray) -> cp.Expression:
    """Per-sample multi-class loss from the (n, C) pairwise margins; ``others[k, c] = 1[c ≠ y_k]``
    and the true-class column of ``margins`` must be 0."""
    if loss == "hinge":
        return cp.sum(cp.multiply(others, cp.pos(1 - margins)), axis=1)
    return cp.log_sum_exp(-margins, axis=1)


def pairwise_torch(loss: str, margins: torch.Tensor, others: torch.Tensor,
                   smoothing: float = 0.0) -> torch.Tensor:
    """The torch rendering of :func:`pairwise_cvxpy` (``smoothing``: see the module doc)."""
    if loss == "hinge":
        return (others * huber_relu(1 - margins, smoothing)).sum(dim=1)
    return torch.logsumexp(-margins, dim=1)
