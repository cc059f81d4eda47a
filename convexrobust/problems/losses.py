"""The one table of the programs' convex losses: every renderer (cvxpy, torch) and every solver
reads a loss from here, by name, through :func:`get_loss` (an unknown name raises).

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

Smoothing (first-order solvers). A loss with ``smooth = False`` (the hinge) has a kink; its
torch renderings take ``smoothing = μ ≥ 0`` and replace ``(s)_+`` by its Moreau envelope
``e_μ(s) = s²/2μ`` on ``[0, μ]``, ``s − μ/2`` above, 0 below (Nesterov, Math. Program. 2005):
convex, gradient ``1/μ``-Lipschitz, ``−μ/2 ≤ e_μ − (s)_+ ≤ 0``. Evaluated at ``s + μ/2``
(``shifted=True``) it is exact for ``|s| ≥ μ/2`` and ``0 ≤ e_μ(s + μ/2) − (s)_+ ≤ μ/8``, so
only samples at the kink carry a smoothing error (Beck & Teboulle, SIAM J. Optim. 2012, §4).
``μ = 0`` is the exact definition.

Smoothing around a dual estimate. ``(s)_+ = max_{θ∈[0,1]} θs``, and the envelope above is
``max_{θ∈[0,1]} θs − (μ/2)θ²``. With a prox-centre ``θ̄ ∈ [0, 1]`` per entry (``center``) it is
``e_{μ,θ̄}(s) = max_{θ∈[0,1]} θs − (μ/2)(θ − θ̄)²``, maximised at ``θ* = clamp(θ̄ + s/μ, 0, 1)``,
which is also its derivative: convex, ``1/μ``-smooth, ``(s)_+ − μ/2 ≤ e_{μ,θ̄}(s) ≤ (s)_+``, and
exact where ``θ* = θ̄``. A program smoothed this way and minimised, followed by ``θ̄ ← θ*``, is one
step of the proximal point method on the dual variables — the method of multipliers (Rockafellar,
Math. Oper. Res. 1976): the centres converge to the optimal duals, and the smoothed optimum to
the exact one, at a fixed ``μ`` (``solvers/polynomial_first_order.py`` uses it).

Proximal maps (ADMM). ``prox(r, t, step)`` is ``argmin_v step·ℓ(v, t) + ½(v − r)²`` entrywise,
with ``ℓ(v, t) = φ(t·v)`` (``t = ±1``) for margin losses and ``ψ(t − v)`` for the squared loss;
it is closed-form for the hinge and the squared loss and ``None`` for the logistic loss.
``pairwise_prox(r, labels, step)`` is the same map for the per-sample pairwise hinge
``h(r) = Σ_{c≠y} (1 − r_y + r_c)_+`` on the rows of ``r`` (n, C): for a fixed ``s = r_y``
every other coordinate is a one-dimensional prox, ``r_c = a_c − clamp(a_c + 1 − s, 0, step)``,
and ``s`` is the root of the increasing piecewise-linear
``φ'(s) = s − a_y − Σ_{c≠y} clamp(a_c + 1 − s, 0, step)`` in ``[a_y, a_y + (C − 1)·step]``,
found exactly between consecutive breakpoints ``a_c + 1 − step``, ``a_c + 1``.
``robust_prox(r, b, t, eps, step_r, step_b)`` is the joint prox of the robust binary hinge
``h(v, c) = (1 − t·v + ε‖c‖₂)_+`` (MATH.md §2 with an ℓ2 threat: ``v`` the prediction, ``c``
the slope), ``argmin_{v,c} h(v, c) + (v − r)²/2step_r + ‖c − b‖²/2step_b`` row by row:
``h = max_{α∈[0,1]} α(1 − t·v + ε‖c‖)``, so the minimiser is ``v = r + α·step_r·t``,
``c = b·(1 − α·ε·step_b/‖b‖)_+`` for the ``α ∈ [0, 1]`` at which
``g(α) = 1 − t·r − α·step_r + ε(‖b‖ − α·ε·step_b)_+`` — decreasing and piecewise linear with one
breakpoint — crosses zero (0 when ``g(0) ≤ 0``, 1 when ``g(1) ≥ 0``), solved exactly.
``robust_pairwise_prox(r, b, labels, eps, step_r, step_b)`` is the same map for the per-sample
robust pairwise hinge ``Σ_{c≠y} (1 − (v_y − v_c) + ε‖c_y − c_c‖₂)_+`` (MATH.md §2), which has
no closed form: writing each term as ``max α_c(1 − v_y + v_c) + ξ_cᵀ(c_y − c_c)`` over
``K = {0 ≤ α_c ≤ 1, ‖ξ_c‖ ≤ εα_c}``, the minimiser is ``v_y = r_y + step_r Σα``,
``v_c = r_c − step_r α_c``, ``c_y = b_y − step_b Σξ``, ``c_c = b_c + step_b ξ_c`` at the
maximiser of the dual ``Σ_c [α_c(1 − r_y + r_c) + ξ_cᵀ(b_y − b_c)] − (step_r/2)(‖Σα‖² + ‖α‖²)
− (step_b/2)(‖Σξ‖² + ‖ξ‖²)`` over ``K``, a strongly concave quadratic (condition number C once
``ξ`` is scaled by ``√(step_b/step_r)``) maximised by accelerated projected gradient with the
constant momentum of the strongly convex case, warm-started from given multipliers; the
projection onto ``K`` is onto the second-order cone, then onto the cap ``α = 1`` if beyond it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import torch
import torch.nn.functional as F

from convexrobust.errors import InvalidInputError

__all__ = ["LOSSES", "LOSS_TABLE", "MARGIN_LOSSES", "Loss", "get_loss", "relu_envelope"]


def relu_envelope(s: torch.Tensor, smoothing: float, shifted: bool = False,
                  center: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s)_+`` smoothed by its Moreau envelope of width ``μ = smoothing`` (module doc), and
    its derivative; ``shifted=True`` evaluates the envelope at ``s + μ/2`` (exact for
    ``|s| ≥ μ/2``); ``center`` (entries in [0, 1], broadcast against ``s``) smooths around that
    prox-centre of the dual variable instead (module doc; not with ``shifted``). ``μ = 0`` gives
    ``(s)_+`` and the indicator ``1[s > 0]``."""
    if not smoothing:
        return torch.relu(s), (s > 0).to(s.dtype)
    if center is not None:
        if shifted:
            raise InvalidInputError("relu_envelope takes a center or shifted=True, not both")
        theta = (s / smoothing + center).clamp_(0.0, 1.0)
        return theta * s - (0.5 * smoothing) * (theta - center).square(), theta
    half = smoothing / 2
    if shifted:  # exact above the band: s itself, not (s + μ/2) − μ/2 rounded
        inside = (s + half).clamp(min=0, max=smoothing)
        value = torch.where(s >= half, s, inside.square() / (2 * smoothing))
    else:
        inside = s.clamp(min=0, max=smoothing)
        value = torch.where(s >= smoothing, s - half, inside.square() / (2 * smoothing))
    return value, inside / smoothing


@dataclass(frozen=True)
class Loss:
    """One row of the table: a loss and every rendering of it.

    ``margin``: a function of margins (``φ``) rather than of absolute residuals (``ψ``).
    ``smooth``: differentiable everywhere (no smoothing needed by first-order solvers).
    ``zero_from``: the margin at and above which :meth:`value_and_slope` (unshifted, at every
    smoothing, around no dual estimate) is exactly ``(0, 0)`` — the hinge's 1 — or None when
    there is no such margin; a solver that can bound a margin from below skips the samples whose
    bound reaches it (around estimates ``θ̄`` the slope vanishes from ``zero_from + μθ̄`` on, where
    the value is ``−(μ/2)θ̄²``).
    """

    name: str
    margin: bool
    smooth: bool
    _cvxpy: Callable[[cp.Expression], cp.Expression]
    _value_and_slope: Callable[[torch.Tensor, float, bool, torch.Tensor | None],
                               tuple[torch.Tensor, torch.Tensor]]
    _prox: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None
    zero_from: float | None = None
    _conjugate: Callable[[torch.Tensor], torch.Tensor] | None = None

    def cvxpy(self, u: cp.Expression) -> cp.Expression:
        """``φ(m)`` (margin losses) or ``ψ(ρ)`` (squared) entrywise on a cvxpy expression."""
        return self._cvxpy(u)

    def torch(self, u: torch.Tensor, smoothing: float = 0.0, shifted: bool = True
              ) -> torch.Tensor:
        """The torch rendering of :meth:`cvxpy`; a non-smooth loss is smoothed by ``smoothing``
        (module doc; ``shifted`` by default: exact away from the kink)."""
        return self._value_and_slope(u, smoothing, shifted, None)[0]

    def value_and_slope(self, u: torch.Tensor, smoothing: float = 0.0, shifted: bool = False,
                        center: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`torch` and its derivative in ``u`` (``φ'`` or ``ψ'``), entrywise. ``center``:
        the prox-centres ``θ̄ ∈ [0, 1]`` of a non-smooth loss's smoothing (module doc, "Smoothing
        around a dual estimate"; the hinge's slope is then ``−θ*``); smooth losses ignore it."""
        return self._value_and_slope(u, smoothing, shifted, center)

    @property
    def has_conjugate(self) -> bool:
        """Whether :meth:`conjugate` is written for this loss."""
        return self._conjugate is not None

    def conjugate(self, s: torch.Tensor) -> torch.Tensor:
        """The convex conjugate ``φ*(s) = sup_m (s·m − φ(m))`` of a margin loss, entrywise: on
        its domain ``s ∈ [−1, 0]`` (where every slope of :meth:`value_and_slope` lies) the
        hinge's ``s`` and the logistic loss's ``(−s) log(−s) + (1 + s) log(1 + s)``, ``+inf``
        outside. Any ``s`` gives the Fenchel–Young bound ``φ(m) ≥ s·m − φ*(s)``, which dual
        certificates use. :class:`InvalidInputError` for a loss without one here (the squared
        loss)."""
        if self._conjugate is None:
            raise InvalidInputError(f"the {self.name} loss has no conjugate in the loss table")
        inside = (s >= -1.0) & (s <= 0.0)
        return torch.where(inside, self._conjugate(s.clamp(-1.0, 0.0)), math.inf)

    def pairwise_conjugate(self, s: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """The convex conjugate of the per-sample pairwise loss ``h`` of :meth:`pairwise_torch`,
        row by row, at slopes ``s`` (n, C) (``others[k, c] = 1[c ≠ y_k]``; the true class's
        margin is identically 0, so its entry of ``s`` is ignored). With ``p = −s`` off the true
        class: the hinge, a sum over the pairs, has ``h*(s) = Σ_{c≠y} φ*(s_c)``; the logistic
        loss ``h(m) = log(1 + Σ_{c≠y} e^{−m_c})`` has ``h*(s) = Σ_{c≠y} p_c log p_c +
        (1 − Σp) log(1 − Σp)`` on ``p ≥ 0, Σp ≤ 1``; ``+inf`` outside the domain. Any ``s``
        gives the Fenchel–Young bound ``h(m) ≥ Σ_{c≠y} s_c m_c − h*(s)``."""
        if not self.margin or self._conjugate is None:
            raise InvalidInputError(f"the {self.name} loss has no pairwise conjugate here")
        off = others > 0
        if self.name == "hinge":
            return torch.where(off, self.conjugate(s), 0.0).sum(dim=1)
        p = torch.where(off, -s, 0.0)
        total = p.sum(dim=1)
        inside = (p >= 0).all(dim=1) & (total <= 1.0)
        rest = (1.0 - total).clamp(min=0.0)
        value = torch.special.xlogy(p, p).sum(dim=1) + torch.special.xlogy(rest, rest)
        return torch.where(inside, value, math.inf)

    def pairwise_cvxpy(self, margins: cp.Expression, others: np.ndarray) -> cp.Expression:
        """Per-sample multi-class loss from the (n, C) pairwise margins (``others[k, c] =
        1[c ≠ y_k]``; the true-class column of ``margins`` must be 0)."""
        if not self.margin:
            raise InvalidInputError(f"the {self.name} loss has no pairwise multi-class form")
        if self.name == "hinge":
            return cp.sum(cp.multiply(others, self.cvxpy(margins)), axis=1)
        return cp.log_sum_exp(-margins, axis=1)

    def pairwise_torch(self, margins: torch.Tensor, others: torch.Tensor,
                       smoothing: float = 0.0) -> torch.Tensor:
        """The torch rendering of :meth:`pairwise_cvxpy`."""
        if not self.margin:
            raise InvalidInputError(f"the {self.name} loss has no pairwise multi-class form")
        if self.name == "hinge":
            return (others * self.torch(margins, smoothing)).sum(dim=1)
        return torch.logsumexp(-margins, dim=1)

    @property
    def has_prox(self) -> bool:
        return self._prox is not None

    def prox(self, r: torch.Tensor, t: torch.Tensor, step: float) -> torch.Tensor:
        """``argmin_v step·ℓ(v, t) + ½(v − r)²`` entrywise (module doc)."""
        if self._prox is None:
            raise InvalidInputError(f"the {self.name} loss has no closed-form prox; use a "
                                    "solver method that does not need one")
        return self._prox(r, t, step)

    @property
    def has_pairwise_prox(self) -> bool:
        return self.name == "hinge"

    def pairwise_prox(self, r: torch.Tensor, labels: torch.Tensor, step: float) -> torch.Tensor:
        """``argmin_v step·h(v) + ½‖v − r‖²`` row by row for the pairwise multi-class loss
        ``h`` of :meth:`pairwise_torch` (module doc); ``r`` (n, C), ``labels`` (n,) ints."""
        if not self.has_pairwise_prox:
            raise InvalidInputError(f"the {self.name} loss has no closed-form pairwise prox; "
                                    "use a solver method that does not need one")
        return _pairwise_hinge_prox(r, labels, step)

    @property
    def has_robust_prox(self) -> bool:
        return self.name == "hinge"

    def robust_prox(self, r: torch.Tensor, b: torch.Tensor, t: torch.Tensor, eps: float,
                    step_r: float, step_b: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The joint prox of the binary loss of the worst-case margin under an ℓ2 threat,
        ``h(v, c) = φ(t·v − ε‖c‖₂)``, at predictions ``r`` (n, 1), slopes ``b`` (n, d) and
        targets ``t = ±1`` (n, 1): ``argmin_{v,c} h(v, c) + (v − r)²/2step_r +
        ‖c − b‖²/2step_b`` row by row (module doc); returns ``(v, c)``."""
        if not self.has_robust_prox:
            raise InvalidInputError(f"the {self.name} loss has no closed-form robust prox; "
                                    "use a solver method that does not need one")
        return _robust_hinge_prox(r, b, t, eps, step_r, step_b)

    def robust_pairwise_prox(self, r: torch.Tensor, b: torch.Tensor, labels: torch.Tensor,
                             eps: float, step_r: float, step_b: float,
                             duals: tuple[torch.Tensor, torch.Tensor] | None = None,
                             tol: float = 1e-12, max_steps: int = 200
                             ) -> tuple[torch.Tensor, torch.Tensor,
                                        tuple[torch.Tensor, torch.Tensor]]:
        """The prox of the robust pairwise multi-class loss under an ℓ2 threat,
        ``Σ_{c≠y} φ(v_y − v_c − ε‖c_y − c_c‖₂)``, at predictions ``r`` (n, C) and slopes ``b``
        (C, n, d): ``argmin_{v,c} h(v, c) + ‖v − r‖²/2step_r + ‖c − b‖²/2step_b`` row by row,
        by its dual (module doc), from the multipliers ``duals = (α (n, C), ξ (C, n, d))`` of an
        earlier call when given, until no multiplier moves by more than ``tol`` in a step (checked
        every :data:`PAIR_PROX_CHECK_EVERY` steps) or after ``max_steps`` steps. Returns
        ``(v, c, (α, ξ))``: every ``α_{k,c}`` in ``[0, 1]`` with
        ``‖ξ_{c,k}‖ ≤ εα_{k,c}``, 0 in the true class."""
        if not self.has_robust_prox:
            raise InvalidInputError(f"the {self.name} loss has no robust pairwise prox; use a "
                                    "solver method that does not need one")
        return _robust_pairwise_hinge_prox(r, b, labels, eps, step_r, step_b, duals, tol,
                                           max_steps)


def _hinge_value_and_slope(m: torch.Tensor, smoothing: float, shifted: bool,
                           center: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    value, slope = relu_envelope(1 - m, smoothing, shifted, center)
    return value, -slope


def _logistic_value_and_slope(m: torch.Tensor, smoothing: float, shifted: bool,
                              center: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    return F.softplus(-m), -torch.sigmoid(-m)


def _logistic_conjugate(s: torch.Tensor) -> torch.Tensor:
    p = -s
    return torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)


def _squared_value_and_slope(r: torch.Tensor, smoothing: float, shifted: bool,
                             center: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    return 0.5 * r.square(), r


def _hinge_prox(r: torch.Tensor, t: torch.Tensor, step: float) -> torch.Tensor:
    m = t * r
    return t * torch.where(m >= 1, m, torch.clamp(m + step, max=1.0))


def _pairwise_hinge_prox(a: torch.Tensor, labels: torch.Tensor, step: float) -> torch.Tensor:
    """The exact prox of ``step·Σ_{c≠y} (1 − v_y + v_c)_+`` per row (module doc)."""
    n, C = a.shape
    rows = torch.arange(n, device=a.device)
    a_y = a[rows, labels].unsqueeze(1)  # (n, 1)
    other = torch.ones_like(a, dtype=torch.bool)
    other[rows, labels] = False

    def slope(s: torch.Tensor) -> torch.Tensor:  # φ'(s) for candidates s (n, K)
        pull = torch.clamp(a.unsqueeze(1) + 1 - s.unsqueeze(2), min=0, max=step)  # (n, K, C)
        return s - a_y - (pull * other.unsqueeze(1)).sum(dim=2)

    lo, hi = a_y, a_y + (C - 1) * step  # φ'(lo) ≤ 0 ≤ φ'(hi)
    points = torch.cat([lo, hi, (a + 1 - step).clamp(lo, hi), (a + 1).clamp(lo, hi)], dim=1)
    points = points.sort(dim=1).values  # every breakpoint inside [lo, hi], and both ends
    values = slope(points)
    # φ' is linear between consecutive points: the root lies after the last point with φ' ≤ 0
    j = ((values <= 0).sum(dim=1, keepdim=True) - 1).clamp(0, points.shape[1] - 2)
    p0, p1 = points.gather(1, j), points.gather(1, j + 1)
    v0, v1 = values.gather(1, j), values.gather(1, j + 1)
    rise = v1 - v0
    frac = torch.where(rise > 0, -v0 / torch.where(rise > 0, rise, 1), 0).clamp(0, 1)
    s = p0 + frac * (p1 - p0)
    out = a - torch.clamp(a + 1 - s, min=0, max=step)
    out[rows, labels] = s[:, 0]
    return out


def _robust_hinge_prox(r: torch.Tensor, b: torch.Tensor, t: torch.Tensor, eps: float,
                      step_r: float, step_b: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact prox of the robust binary hinge ``(1 − t·v + ε‖c‖₂)_+`` (module doc)."""
    nb = torch.linalg.vector_norm(b, dim=-1, keepdim=True)
    head = 1 - t * r
    shrink = eps * step_b
    first = (head + eps * nb) / (step_r + eps * shrink)  # the root while ‖c‖ > 0
    second = head / step_r  # the root once c = 0
    alpha = torch.where(first * shrink <= nb, first, second).clamp(0, 1)
    v = r + alpha * step_r * t
    c = b * torch.clamp(1 - alpha * shrink / nb.clamp_min(torch.finfo(b.dtype).tiny), min=0)
    return v, c


def _project_capped_cone(alpha: torch.Tensor, xi: torch.Tensor, eps: float,
                         mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The Euclidean projection of ``(α, ξ)`` (``α`` (...,), ``ξ`` (..., d)) onto
    ``{0 ≤ α ≤ 1, ‖ξ‖₂ ≤ εα}``: onto the second-order cone ``‖ξ‖ ≤ εα`` (identity inside, 0
    in its polar ``ε‖ξ‖ ≤ −α``, else the boundary point ``α' = (α + ε‖ξ‖)/(1 + ε²)``,
    ``ξ' = εα'ξ/‖ξ‖``), and where that lands beyond ``α = 1``, onto the cap ``{α = 1, ‖ξ‖ ≤ ε}``
    (the projection onto the intersection then lies on that face). ``mask`` (the shape of
    ``α``, 0 or 1), when given, multiplies the result (one pass over ``ξ`` either way)."""
    norm = torch.linalg.vector_norm(xi, dim=-1)
    tiny = torch.finfo(xi.dtype).tiny
    boundary = ((alpha + eps * norm) / (1 + eps * eps)).clamp(min=0)
    inside = norm <= eps * alpha
    a = torch.where(inside, alpha, boundary)
    radius = torch.where(inside, norm, eps * boundary)
    capped = a > 1
    a = torch.where(capped, torch.ones_like(a), a)
    radius = torch.where(capped, torch.clamp(norm, max=eps), radius)
    factor = radius / norm.clamp_min(tiny)
    if mask is not None:
        a, factor = a * mask, factor * mask
    return a, xi * factor.unsqueeze(-1)


#: The robust pairwise prox checks how far its multipliers moved every this many steps.
PAIR_PROX_CHECK_EVERY = 4


def _robust_pairwise_hinge_prox(r: torch.Tensor, b: torch.Tensor, labels: torch.Tensor,
                                eps: float, step_r: float, step_b: float,
                                duals: tuple[torch.Tensor, torch.Tensor] | None, tol: float,
                                max_steps: int
                                ) -> tuple[torch.Tensor, torch.Tensor,
                                           tuple[torch.Tensor, torch.Tensor]]:
    """The prox of the robust pairwise hinge by its dual (module doc)."""
    n, C = r.shape
    rows = torch.arange(n, device=r.device)
    other = torch.ones_like(r)
    other[rows, labels] = 0
    scale = math.sqrt(step_b / step_r)  # η = ξ·scale: both blocks curve like step_r
    eps_eta = eps * scale
    b_true = b[labels, rows]  # (n, d)
    lin_a = (1 - r[rows, labels].unsqueeze(1) + r) * other  # (n, C)
    lin_e = (b_true.unsqueeze(1) - b.transpose(0, 1)) * (other.unsqueeze(-1) / scale)  # (n,C,d)
    if duals is None:
        alpha, eta = torch.zeros_like(r), torch.zeros_like(lin_e)
    else:
        alpha, eta = duals[0], duals[1].transpose(0, 1) * scale
    lipschitz = step_r * C
    momentum = (math.sqrt(C) - 1) / (math.sqrt(C) + 1)
    # the step y + (lin − step_r(Σ_c y_c + y))/L written as lin/L + (1 − 1/C)·y − Σ_c y_c/C and
    # the momentum as one lerp, so that each pass over the (n, C, d) block does more work
    lin_a, lin_e = lin_a / lipschitz, lin_e / lipschitz
    keep, share = 1.0 - step_r / lipschitz, step_r / lipschitz
    y_a, y_e = alpha, eta
    for step in range(1, max_steps + 1):
        new_a, new_e = _project_capped_cone(
            torch.add(lin_a, y_a, alpha=keep).sub_(share * y_a.sum(dim=1, keepdim=True)),
            torch.add(lin_e, y_e, alpha=keep).sub_(share * y_e.sum(dim=1, keepdim=True)),
            eps_eta, other)
        # the movement is measured every PAIR_PROX_CHECK_EVERY steps (a few extra steps at most)
        done = step % PAIR_PROX_CHECK_EVERY == 0 and max(
            float((new_a - alpha).abs().max()), float((new_e - eta).abs().max())) <= tol
        y_a = torch.lerp(alpha, new_a, 1.0 + momentum)
        y_e = torch.lerp(eta, new_e, 1.0 + momentum)
        alpha, eta = new_a, new_e
        if done:
            break
    xi = eta / scale  # (n, C, d)
    v = r - step_r * alpha
    v[rows, labels] = r[rows, labels] + step_r * alpha.sum(dim=1)
    xi_c = xi.transpose(0, 1)  # (C, n, d)
    c = b + step_b * xi_c
    c[labels, rows] = b_true - step_b * xi.sum(dim=1)
    return v, c, (alpha, xi_c)


def _squared_prox(r: torch.Tensor, t: torch.Tensor, step: float) -> torch.Tensor:
    return (r + step * t) / (1.0 + step)


LOSS_TABLE: dict[str, Loss] = {
    "squared": Loss("squared", margin=False, smooth=True,
                    _cvxpy=lambda u: 0.5 * cp.square(u),
                    _value_and_slope=_squared_value_and_slope, _prox=_squared_prox),
    "hinge": Loss("hinge", margin=True, smooth=False, _cvxpy=lambda u: cp.pos(1 - u),
                  _value_and_slope=_hinge_value_and_slope, _prox=_hinge_prox, zero_from=1.0,
                  _conjugate=lambda s: s),
    "logistic": Loss("logistic", margin=True, smooth=True, _cvxpy=lambda u: cp.logistic(-u),
                     _value_and_slope=_logistic_value_and_slope, _conjugate=_logistic_conjugate),
}
LOSSES: tuple[str, ...] = tuple(LOSS_TABLE)
MARGIN_LOSSES: tuple[str, ...] = tuple(name for name, loss in LOSS_TABLE.items() if loss.margin)


def get_loss(name: object) -> Loss:
    """The table's row for ``name`` (case-insensitive); :class:`InvalidInputError` for anything
    else."""
    key = name.lower() if isinstance(name, str) else None
    if key not in LOSS_TABLE:
        raise InvalidInputError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSS_TABLE[key]
