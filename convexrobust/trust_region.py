r"""Exact batched trust-region subproblems (TRS) with sound dual lower bounds: the ℓ2 worst
cases of the robust polynomial programs (MATH.md §4) and the flip distance of the polynomial
head's exact certificate (MATH.md §5).

For a symmetric matrix ``A = Q diag(lam) Q^T`` (eigendecomposition computed once by the
caller, e.g. with :func:`torch.linalg.eigh`) and per-sample data ``g`` (n, d), ``h`` (n,),
``r`` (n,) this module solves, for every sample,

.. math::

    \min_{\|\delta\|_2 \le r} \; q(\delta) = \delta^\top A \delta + 2 g^\top \delta + h .

Method (Moré & Sorensen 1983, "Computing a trust region step", SIAM J. Sci. Stat. Comput.):
in the eigenbasis ``gt = g Q`` the KKT conditions read ``(lam_i + mu) dt_i = -gt_i``,
``mu >= 0``, ``lam_min + mu >= 0``, ``mu (r - ||dt||) = 0``. Either the solution is interior
(``lam_min > 0`` and ``||Lam^{-1} gt|| <= r``, ``mu = 0``), or it lies on the sphere with
``dt(mu) = -gt / (lam + mu)`` where ``mu > max(0, -lam_min)`` solves the secular equation
``||dt(mu)|| = r``, or we are in the *hard case* (``gt`` vanishes on the bottom eigenspace and
``||(Lam - lam_min I)^+ gt|| <= r``), where ``mu = -lam_min`` and
``dt = -(Lam - lam_min I)^+ gt + tau e_min`` with ``tau`` chosen so that ``||dt|| = r``.

Lagrangian duality (the S-lemma; exact for the TRS, see also Kuelbs, Lall, Pilanci,
arXiv 2405.14033, who use it to certify robustness of two-layer networks) gives, for every
``mu >= 0`` with ``lam_min + mu > 0``,

.. math::

    D(\mu) = h - \sum_i \frac{\tilde g_i^2}{\lambda_i + \mu} - \mu r^2 \;\le\; \min q ,

a *sound* lower bound for any such ``mu`` (the bound is attained at the optimal multiplier).
:func:`solve_trs` returns both a feasible minimiser (upper bound) and ``max_mu D(mu)`` over a
few candidate multipliers (lower bound); they agree to roughly machine precision.

:func:`boundary_distance` computes, for ``h > 0``, the distance from ``0`` to the sublevel set
``{q <= 0}`` (exact by the S-lemma) with one bisection in ``mu``.

Numerics: the multiplier is parametrised as ``mu = mu_lo + t`` with ``mu_lo = max(0, -lam_min)``
and ``t >= 0``; denominators are formed as ``(lam_i + mu_lo) + t`` so that tiny shifts ``t``
(near-hard cases) keep full relative precision. All routines are pure PyTorch, batched over
samples, and work on any device / floating dtype (use float64 for certificates).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from convexrobust.errors import InvalidInputError

__all__ = ["TRSResult", "BoundaryDistance", "solve_trs", "boundary_distance"]


@dataclass(frozen=True)
class TRSResult:
    """Batched TRS solution.

    Attributes:
        delta: ``(n, d)`` feasible minimiser in the original basis, ``||delta|| <= r``.
        value_upper: ``(n,)`` ``q(delta)`` (evaluated in the eigenbasis), an upper bound of
            ``min_{||delta|| <= r} q``.
        value_lower: ``(n,)`` sound Lagrangian-dual lower bound ``D(mu) <= min q``.
        multiplier: ``(n,)`` Lagrange multiplier ``mu`` of the returned minimiser
            (``0`` for interior solutions, ``-lam_min`` in the hard case).
    """

    delta: Tensor
    value_upper: Tensor
    value_lower: Tensor
    multiplier: Tensor


@dataclass(frozen=True)
class BoundaryDistance:
    """Distance from ``delta = 0`` to the sublevel set ``{q <= 0}``.

    Attributes:
        radius: ``(n,)`` sound lower bound ``R`` of ``min{||delta|| : q(delta) <= 0}``, i.e.
            ``min_{||delta|| <= R} q(delta) > 0`` certified by the dual bound ``D(mu) > 0``;
            ``inf`` where ``q > 0`` on all of ``R^d``; ``0`` where ``h <= 0``.
        delta: ``(n, d)`` a point with ``q(delta) <= 0`` and ``||delta|| ~= radius`` (within
            ~1e-6 relative in float64); ``0`` where ``h <= 0``; NaN rows where radius is inf.
    """

    radius: Tensor
    delta: Tensor


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def _prepare(
    eigvals: Tensor, eigvecs: Tensor, g: Tensor, h: Tensor | float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validate shapes and bring everything to a common floating dtype / device."""
    g = torch.as_tensor(g)
    if g.ndim != 2:
        raise InvalidInputError(f"g must have shape (n, d), got {tuple(g.shape)}")
    eigvals = torch.as_tensor(eigvals, device=g.device)
    eigvecs = torch.as_tensor(eigvecs, device=g.device)
    if isinstance(h, Tensor):
        h = h.to(device=g.device)
    else:  # Python / NumPy scalars or arrays: no detour through the default dtype.
        h_dtype = g.dtype if g.is_floating_point() else None
        h = torch.as_tensor(h, dtype=h_dtype, device=g.device)
    dtype = torch.promote_types(torch.promote_types(eigvals.dtype, eigvecs.dtype), g.dtype)
    dtype = torch.promote_types(dtype, h.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    n, d = g.shape
    if eigvals.shape != (d,) or eigvecs.shape != (d, d):
        raise InvalidInputError(
            f"eigvals/eigvecs must have shapes ({d},) and ({d}, {d}), got "
            f"{tuple(eigvals.shape)} and {tuple(eigvecs.shape)}"
        )
    if h.ndim == 0:
        h = h.expand(n)
    if h.shape != (n,):
        raise InvalidInputError(f"h must have shape ({n},) or be a scalar, got {tuple(h.shape)}")
    return eigvals.to(dtype), eigvecs.to(dtype), g.to(dtype), h.to(dtype)


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with ``0`` where ``num == 0`` and ``inf * sign(num)`` where ``den <= 0``.

    Implements the limit convention ``0 / 0 = 0`` for components of ``g~`` that vanish on a
    (shifted) null eigenvector, and flags true poles as infinite.
    """
    pos = den > 0
    out = num / torch.where(pos, den, torch.ones_like(den))
    out = torch.where(pos, out, torch.sign(num) * torch.inf)
    return torch.where(num == 0, torch.zeros_like(out), out)


def _q_eig(lam: Tensor, gt: Tensor, h: Tensor, dt: Tensor) -> Tensor:
    """``q`` in the eigenbasis: ``sum_i lam_i dt_i^2 + 2 gt_i dt_i + h`` (last dim reduced)."""
    return ((lam * dt + 2.0 * gt) * dt).sum(-1) + h


def _shift(lam: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(lam_min, mu_lo, base)`` with ``mu_lo = max(0, -lam_min)``, ``base = lam + mu_lo``.

    ``base >= 0`` holds exactly in floating point (``lam_i - lam_min`` of floats with
    ``lam_i >= lam_min`` is non-negative).
    """
    lam_min = lam.min()
    mu_lo = (-lam_min).clamp(min=0.0)
    return lam_min, mu_lo, lam + mu_lo


def _bottom_direction(
    lam: Tensor, lam_min: Tensor, gt: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Data for the hard-case step ``dt = dt' + tau u``.

    Returns ``(bottom, dprime, u, gb_norm)``: ``bottom`` (d,) marks the numerically
    repeated bottom eigenvalues ``lam_i - lam_min <= 64 eps max|lam|``, ``dprime`` (n, d)
    is ``-(Lam - lam_min I)^+ gt`` restricted to the other components, ``u`` (n, d) is the
    unit vector on the bottom eigenspace pointing against ``gt`` (``e_argmin`` if ``gt``
    vanishes there), ``gb_norm`` (n,) is ``||gt_bottom||``.
    """
    eps = torch.finfo(lam.dtype).eps
    gap = lam - lam_min
    tol = 64.0 * eps * lam.abs().max().clamp(min=torch.finfo(lam.dtype).tiny)
    bottom = gap <= tol
    dprime = torch.where(bottom, torch.zeros_like(gt), -gt / torch.where(bottom, 1.0, gap))
    gb = torch.where(bottom, gt, torch.zeros_like(gt))
    gb_norm = torch.linalg.vector_norm(gb, dim=-1)
    e_min = torch.zeros_like(lam)
    e_min[torch.argmin(lam)] = 1.0
    u = torch.where(
        (gb_norm > 0)[:, None],
        -gb / torch.where(gb_norm > 0, gb_norm, 1.0)[:, None],
        e_min.expand_as(gt),
    )
    return bottom, dprime, u, gb_norm


def _dual_value(
    g2: Tensor, base: Tensor, mu_lo: Tensor, h: Tensor, r2: Tensor, t: Tensor
) -> Tensor:
    """``D(mu_lo + t) = h - sum g2 / (base + t) - (mu_lo + t) r^2``; ``-inf`` if invalid.

    Components with ``g2 == 0`` and ``base + t == 0`` contribute 0 (limit ``t -> 0+``, which
    is still a valid bound since ``D`` is continuous from the right); true poles give
    ``-inf``. NaN (e.g. from ``t = nan``) is mapped to ``-inf``.
    """
    s1 = _safe_ratio(g2, base + t[:, None]).sum(-1)
    val = h - s1 - (mu_lo + t) * r2
    return torch.where(torch.isnan(val) | (t < 0), torch.full_like(val, -torch.inf), val)


# ----------------------------------------------------------------------------------------
# trust-region subproblem
# ----------------------------------------------------------------------------------------


def solve_trs(
    eigvals: Tensor,
    eigvecs: Tensor,
    g: Tensor,
    h: Tensor | float,
    radius: Tensor | float,
    *,
    max_iter: int = 100,
) -> TRSResult:
    r"""Solve ``min_{||delta|| <= r} delta^T A delta + 2 g^T delta + h`` exactly, batched.

    Algorithm (Moré & Sorensen 1983): with ``gt = g Q`` and ``mu = mu_lo + t``,
    ``mu_lo = max(0, -lam_min)``, the boundary solution solves the secular equation
    ``phi(t) = ||gt / (lam + mu_lo + t)|| = r`` on ``t in (0, ||gt|| / r]`` (at the right end
    ``phi <= r`` because ``lam + mu_lo >= 0``). ``1 / phi`` is concave and increasing, so
    Newton steps on ``1/phi(t) - 1/r`` from either end of the bracket land left of the root;
    they are safeguarded by bisection and iterated to machine precision. The interior case
    (``t = 0``, ``lam_min > 0``) and the hard case (``dt = -(Lam - lam_min)^+ gt + tau u``,
    ``||dt|| = r``) are evaluated as explicit candidates and the candidate with the smallest
    objective is returned, which makes near-hard cases robust without thresholds on ``gt``.

    The lower bound is ``max D(mu)`` (Lagrangian dual, see module docstring; Kuelbs, Lall,
    Pilanci, arXiv 2405.14033) over the multipliers met by the solver, a slightly nudged
    ``mu_lo`` and the near-hard optimum ``mu_lo + ||gt_bottom|| / tau``; each of them is a
    valid multiplier (``mu >= 0``, ``lam_min + mu > 0``, or the right limit at ``mu_lo`` when
    ``gt`` vanishes exactly on the bottom eigenspace), so the bound is sound up to rounding.

    Args:
        eigvals: ``(d,)`` eigenvalues of ``A``.
        eigvecs: ``(d, d)`` orthonormal eigenvectors (columns) of ``A``.
        g: ``(n, d)`` linear terms.
        h: ``(n,)`` or scalar constant terms.
        radius: ``(n,)`` or scalar, finite and ``>= 0``.
        max_iter: iteration cap of the safeguarded Newton solver.

    Returns:
        :class:`TRSResult`. For ``r = 0``: ``delta = 0`` and both values equal ``h``.
    """
    lam, vecs, g, h = _prepare(eigvals, eigvecs, g, h)
    n, d = g.shape
    dtype, device = g.dtype, g.device
    r = torch.as_tensor(radius, dtype=dtype, device=device)
    if r.ndim == 0:
        r = r.expand(n)
    if r.shape != (n,):
        raise InvalidInputError(
            f"radius must have shape ({n},) or be a scalar, got {tuple(r.shape)}")
    if bool(((r < 0) | ~torch.isfinite(r)).any()):
        raise InvalidInputError("radius must be finite and non-negative")
    eps = torch.finfo(dtype).eps

    gt = g @ vecs
    g2 = gt * gt
    gabs = gt.abs()
    lam_min, mu_lo, base = _shift(lam)
    r_pos = r > 0
    rs = torch.where(r_pos, r, torch.ones_like(r))
    r2 = r * r
    zero = torch.zeros(n, dtype=dtype, device=device)

    def phi_slope(t: Tensor) -> tuple[Tensor, Tensor]:
        """``phi(t) = ||gt / den||`` and ``s(t) = sum gt^2 / den^3`` with ``den = base + t``."""
        den = base + t[:, None]
        w = _safe_ratio(gabs, den)
        phi = torch.linalg.vector_norm(w, dim=-1)
        s = (w * _safe_ratio(w, den)).sum(-1)
        return phi, s

    def newton(t: Tensor, phi: Tensor, s: Tensor) -> Tensor:
        # Newton on f(t) = 1/phi(t) - 1/r:  t + (phi / r - 1) phi^2 / s.
        return t + (phi / rs - 1.0) * phi * phi / s

    # ---- secular equation -------------------------------------------------------------
    phi0, s0 = phi_slope(zero)
    need = r_pos & (phi0 > r)
    gnorm = torch.linalg.vector_norm(gt, dim=-1)
    a = zero.clone()
    b = torch.where(need, gnorm / rs, zero)
    phi_a, s_a = phi0, s0
    phi_b, s_b = phi_slope(b)
    active = need.clone()
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        ca = newton(a, phi_a, s_a)
        cb = newton(b, phi_b, s_b)
        ok_a = torch.isfinite(ca) & (ca > a) & (ca < b)
        ok_b = torch.isfinite(cb) & (cb > a) & (cb < b)
        ca = torch.where(ok_a, ca, torch.full_like(ca, -torch.inf))
        cb = torch.where(ok_b, cb, torch.full_like(cb, -torch.inf))
        c = torch.where(ok_a | ok_b, torch.maximum(ca, cb), 0.5 * (a + b))
        phi_c, s_c = phi_slope(c)
        left = active & (phi_c > r)
        right = active & ~(phi_c > r)
        a = torch.where(left, c, a)
        phi_a = torch.where(left, phi_c, phi_a)
        s_a = torch.where(left, s_c, s_a)
        b = torch.where(right, c, b)
        phi_b = torch.where(right, phi_c, phi_b)
        s_b = torch.where(right, s_c, s_b)
        conv = ((phi_c - r).abs() <= 4.0 * eps * r) | (b - a <= 4.0 * eps * b)
        active = active & ~conv
    use_a = torch.isfinite(phi_a) & ((phi_a - r).abs() < (phi_b - r).abs())
    t_root = torch.where(use_a, a, b)

    # ---- primal candidate 1: interior / secular-equation solution ----------------------
    dt_root = -_safe_ratio(gt, base + t_root[:, None])
    nrm = torch.linalg.vector_norm(dt_root, dim=-1)
    scale = torch.where(nrm > r, r / torch.where(nrm > 0, nrm, 1.0), torch.ones_like(r))
    dt_root = dt_root * scale[:, None]
    q_root = _q_eig(lam, gt, h, dt_root)
    q_root = torch.where(torch.isfinite(q_root), q_root, torch.full_like(q_root, torch.inf))

    # ---- primal candidate 2: hard case ------------------------------------------------
    _, dprime, u, gb_norm = _bottom_direction(lam, lam_min, gt)
    nd = torch.linalg.vector_norm(dprime, dim=-1)
    shrink = torch.where(nd > r, r / torch.where(nd > 0, nd, 1.0), torch.ones_like(r))
    dprime = dprime * shrink[:, None]
    tau = (r2 - (nd * shrink) ** 2).clamp(min=0.0).sqrt()
    dt_hard = dprime + tau[:, None] * u
    q_hard = _q_eig(lam, gt, h, dt_hard)
    hard_ok = (lam_min <= 0) & torch.isfinite(q_hard)
    use_hard = hard_ok & (q_hard < q_root)

    dt = torch.where(use_hard[:, None], dt_hard, dt_root)
    value = torch.where(use_hard, q_hard, q_root)
    mu = torch.where(use_hard, mu_lo.expand(n), mu_lo + t_root)
    # r == 0: the only feasible point is 0.
    dt = torch.where(r_pos[:, None], dt, torch.zeros_like(dt))
    value = torch.where(r_pos, value, h)
    mu = torch.where(r_pos, mu, mu_lo.expand(n))

    # ---- sound dual lower bound -------------------------------------------------------
    scale_lam = lam.abs().max() + gnorm / rs
    nudge = 16.0 * eps * scale_lam.clamp(min=torch.finfo(dtype).tiny)
    t_hopt = torch.maximum(gb_norm / torch.where(tau > 0, tau, torch.nan), nudge)
    cands = [a, b, t_root, zero, nudge, 4.0 * nudge, t_hopt]
    lower = torch.stack([_dual_value(g2, base, mu_lo, h, r2, t) for t in cands]).amax(0)
    lower = torch.minimum(lower, value)
    lower = torch.where(r_pos, lower, h)

    delta = dt @ vecs.T
    return TRSResult(delta=delta, value_upper=value, value_lower=lower, multiplier=mu)


# ----------------------------------------------------------------------------------------
# distance to the sublevel set {q <= 0}
# ----------------------------------------------------------------------------------------


def boundary_distance(
    eigvals: Tensor,
    eigvecs: Tensor,
    g: Tensor,
    h: Tensor | float,
    *,
    max_iter: int = 400,
) -> BoundaryDistance:
    r"""Distance ``R* = min{||delta|| : q(delta) <= 0}`` from 0 to the sublevel set of ``q``.

    For ``mu = mu_lo + t``, ``t > 0``, the point ``dt(mu) = -gt / (lam + mu)`` is the global
    TRS minimiser at radius ``r(mu) = ||dt(mu)||`` (KKT with ``A + mu I > 0``), with value

    .. math::

        v(\mu) = q(\delta(\mu)) = h - \sum_i \tilde g_i^2 \frac{\lambda_i + 2\mu}
                 {(\lambda_i + \mu)^2} = N(\mu) - \mu\, r(\mu)^2,
        \qquad N(\mu) = h - \sum_i \frac{\tilde g_i^2}{\lambda_i + \mu},

    and ``dv/dmu = 2 mu sum gt^2 / (lam + mu)^3 >= 0`` while ``r(mu)`` decreases. One
    bisection on the sign of ``v`` (geometric steps while the bracket spans orders of
    magnitude) finds its root ``mu*``; ``R* = r(mu*)``. By duality (Moré & Sorensen 1983;
    Kuelbs, Lall, Pilanci, arXiv 2405.14033) every valid ``mu`` certifies
    ``D(mu; R) = N(mu) - mu R^2 > 0`` for ``R^2 < N(mu) / mu``, and ``N(mu) / mu`` is maximal
    exactly at the root of ``v`` (its derivative is ``-v(mu) / mu^2``), so the returned
    radius is ``sqrt((N(mu) - margin) / mu)`` maximised over the final bracket, where
    ``margin`` covers the rounding of ``N``; ``D > 0`` is re-checked before returning.

    Cases (``h > 0``): ``v(mu_lo+) <= 0`` -> root in ``(mu_lo, T]`` with
    ``T = mu_lo + 2 max(4 ||g||^2 / h, sqrt(2 mu_lo ||g||^2 / h))`` (there ``v > 0``);
    ``lam_min >= 0`` and ``v(0+) > 0`` (the minimum of ``q`` over ``R^d`` is positive) -> inf;
    ``lam_min < 0`` and ``v(mu_lo+) > 0`` (hard case) -> ``R*^2 = N(mu_lo) / mu_lo`` with
    the flip point ``-(Lam - lam_min)^+ gt + tau u`` on the bottom eigenspace. A ``lam_min``
    of (numerically) zero with ``gt`` on the null space is handled by the general branch
    (``v -> -inf`` as ``mu -> 0+``). Where ``h <= 0`` the radius is 0 and ``delta = 0``.

    Args:
        eigvals: ``(d,)`` eigenvalues of ``A``.
        eigvecs: ``(d, d)`` orthonormal eigenvectors (columns).
        g: ``(n, d)`` linear terms.
        h: ``(n,)`` or scalar constant terms.
        max_iter: bisection iteration cap.

    Returns:
        :class:`BoundaryDistance`.
    """
    lam, vecs, g, h = _prepare(eigvals, eigvecs, g, h)
    n, d = g.shape
    dtype, device = g.dtype, g.device
    eps = torch.finfo(dtype).eps
    gt = g @ vecs
    g2 = gt * gt
    lam_min, mu_lo, base = _shift(lam)
    zero = torch.zeros(n, dtype=dtype, device=device)

    def sums(t: Tensor) -> tuple[Tensor, Tensor]:
        """``S1 = sum gt^2/den``, ``S2 = sum gt^2/den^2`` with ``den = base + t``."""
        den = base + t[:, None]
        w = _safe_ratio(gt.abs(), den)
        return _safe_ratio(g2, den).sum(-1), (w * w).sum(-1)

    def v_of(t: Tensor) -> Tensor:
        s1, s2 = sums(t)
        mu = mu_lo + t
        v = h - s1 - torch.where(s2 == 0, torch.zeros_like(s2), mu * s2)
        return torch.where(torch.isnan(v), torch.full_like(v, -torch.inf), v)

    pos = h > 0
    v0 = v_of(zero)
    root = pos & (v0 <= 0)
    # v(mu_lo+) > 0: no root; q > 0 everywhere if lam_min >= 0, else the hard-case closed
    # form at t = 0 below (a candidate for every sample) gives the radius.
    infinite = pos & (v0 > 0) & (mu_lo <= 0)

    # ---- bisection on the sign of v(mu_lo + t) ----------------------------------------
    hs = torch.where(pos, h, torch.ones_like(h))
    gsq = g2.sum(-1)
    big = torch.finfo(dtype).max / 4
    # (sqrt(2 mu_lo / h) * ||g|| rather than sqrt(2 mu_lo ||g||^2 / h): no underflow.)
    t_hi = 2.0 * torch.maximum(4.0 * gsq / hs, (2.0 * mu_lo / hs).sqrt() * gsq.sqrt())
    t_hi = torch.nan_to_num(t_hi, nan=big, posinf=big).clamp(min=torch.finfo(dtype).tiny)
    a = zero.clone()
    b = torch.where(root, t_hi, zero)
    for _ in range(64):  # v(t_hi) > 0 holds in exact arithmetic; enforce it in floating point
        low = root & ~(v_of(b) > 0) & (b < big)
        if not bool(low.any()):
            break
        b = torch.where(low, 4.0 * b, b)
    active = root.clone()
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        geo = (a > 0) & (b > 4.0 * a)
        c = torch.where(geo, a.sqrt() * b.sqrt(), 0.5 * (a + b))
        vc = v_of(c)
        left = active & (vc <= 0)
        right = active & ~(vc <= 0)
        a = torch.where(left, c, a)
        b = torch.where(right, c, b)
        active = active & (b - a > 4.0 * eps * b)

    # ---- certified radius: sqrt((N(mu) - margin) / mu), maximised over candidates --------
    def radius_cert(t: Tensor) -> tuple[Tensor, Tensor]:
        s1, _ = sums(t)
        mu = mu_lo + t
        margin = 4.0 * (d + 2) * eps * (h.abs() + s1)
        num = (h - s1 - margin).clamp(min=0.0)
        rad = (num / torch.where(mu > 0, mu, torch.ones_like(mu))).sqrt()
        rad = torch.where((mu > 0) & torch.isfinite(rad), rad, torch.zeros_like(rad))
        return rad, t

    cand_t = [a, b, zero]
    cands = [radius_cert(t) for t in cand_t]
    rads = torch.stack([c[0] for c in cands])
    best = rads.argmax(0)
    radius = rads.gather(0, best[None]).squeeze(0)
    t_best = torch.stack([c[1] for c in cands]).gather(0, best[None]).squeeze(0)
    # Verify the dual certificate D(mu; R) > 0 and shrink where rounding says otherwise.
    for k in range(8):
        dual = _dual_value(g2, base, mu_lo, h, radius * radius, t_best)
        bad = (pos & ~infinite) & ~(dual > 0) & (radius > 0)
        if not bool(bad.any()):
            break
        radius = torch.where(bad, radius * (1.0 - 16.0 * eps * 4.0**k), radius)
    dual = _dual_value(g2, base, mu_lo, h, radius * radius, t_best)
    radius = torch.where((pos & ~infinite) & ~(dual > 0), torch.zeros_like(radius), radius)
    radius = torch.where(infinite, torch.full_like(radius, torch.inf), radius)
    radius = torch.where(pos, radius, torch.zeros_like(radius))

    # ---- flip point: smallest-norm candidate with q <= 0 ------------------------------
    kappas = [eps * 4.0**k for k in range(10)]
    pts = []
    # (i) secular points slightly left of the root (v decreases as t decreases).
    for kap in [0.0, *kappas]:
        t = a * (1.0 - kap)
        dt = -_safe_ratio(gt, base + t[:, None])
        pts.append(torch.where((a > 0)[:, None], dt, torch.full_like(dt, torch.nan)))
    # (ii) hard-case points dt' + tau u with q(dt' + tau u) = 0 solved for tau.
    bottom, dprime, u, gb_norm = _bottom_direction(lam, lam_min, gt)
    c0 = _q_eig(lam, gt, h, dprime)
    qa = ((lam * u) * u).sum(-1)  # = sum_B lam_i u_i^2 (~ lam_min < 0)
    qb = -2.0 * gb_norm  # = 2 sum_B gt_i u_i
    disc = (qb * qb - 4.0 * qa * c0).clamp(min=0.0).sqrt()
    tau = torch.where(c0 > 0, 2.0 * c0 / (-qb + disc), torch.zeros_like(c0))
    hard_valid = (lam_min < 0) & (qa < 0)
    for kap in [0.0, *kappas]:
        dt = dprime + (tau * (1.0 + kap))[:, None] * u
        pts.append(torch.where(hard_valid[:, None], dt, torch.full_like(dt, torch.nan)))
    pts_t = torch.stack(pts)  # (m, n, d)
    qs = _q_eig(lam, gt, h, pts_t)
    norms = torch.linalg.vector_norm(pts_t, dim=-1)
    finite = torch.isfinite(qs) & torch.isfinite(norms)
    good = finite & (qs <= 0)
    key = torch.where(good, norms, torch.full_like(norms, torch.inf))
    # Fallback (rounding only): smallest q among finite candidates.
    fallback = torch.where(finite, qs, torch.full_like(qs, torch.inf)).argmin(0)
    pick = torch.where(good.any(0), key.argmin(0), fallback)
    dt_flip = pts_t.gather(0, pick[None, :, None].expand(1, n, d)).squeeze(0)
    dt_flip = torch.where(infinite[:, None], torch.full_like(dt_flip, torch.nan), dt_flip)
    dt_flip = torch.where(pos[:, None], dt_flip, torch.zeros_like(dt_flip))
    delta = dt_flip @ vecs.T
    return BoundaryDistance(radius=radius, delta=delta)
