"""A certified lower bound on the optimum of the convex ReLU programs (a) and (b) with a margin
loss (hinge or logistic; binary or pairwise multi-class; nominal or robust under any ℓp threat),
from any point ``U`` and any cone multipliers ``λ ≥ 0`` — the augmented Lagrangian's certificate
(:mod:`~convexrobust.solvers.relu_first_order`).

The bound (MATH.md §1–2; the weak-duality argument of Fenchel–Young, term by term). Write the
program over the groups ``u_g`` (every ``v_{i,c}`` and ``w_{i,c}``) as ``F(U) = (1/n) Σ_k ℓ(m_k(U))
+ β Σ_g ‖u_g‖₂`` subject to ``E_i X̃ u_g − ε‖Π u_g‖_q ≥ 0`` (``Π`` keeps the non-constant
coordinates, ``q`` the threat's dual exponent, ``p`` the threat's own).

1. **The loss.** For slopes ``s_k`` in the domain of the loss's conjugate, ``ℓ(m) ≥ s_kᵀm −
   ℓ*(s_k)`` (:meth:`Loss.conjugate`, :meth:`Loss.pairwise_conjugate`), and ``s_k ≤ 0``. Every
   worst-case margin is ``m(U) = (linear in U) − ε‖Π a(U)‖_q`` with a slope ``a`` linear in
   ``U``, and ``‖Πa‖_q ≥ ζᵀΠa`` for any ``‖ζ‖_p ≤ 1``; so ``s_kᵀm_k(U') ≥ ⟨J_kᵀs_k, U'⟩`` for
   every ``U'``, where ``J_k`` is the Jacobian of the margins at ``U`` with the norm replaced by
   the smoothed norm of :meth:`ConvexReLU.dual_norm_torch` (whose gradient ``ζ`` has
   ``‖ζ‖_p ≤ 1``). Hence ``(1/n)Σℓ(m_k(U')) ≥ ⟨G, U'⟩ − κ`` with ``G = (1/n) Σ_k J_kᵀs_k`` and
   ``κ = (1/n) Σ_k ℓ*(s_k)``. The slopes taken are those of the smoothed loss at ``U``
   (``s_k = ∂ℓ_μ/∂m``), so ``G`` is the gradient of the smoothed data term there.
2. **The cones.** For a feasible ``u_g`` and ``λ_g ≥ 0``, ``Σ_k λ_{g,k}(e_{g,k} x̃_kᵀu_g −
   ε‖Πu_g‖_q) ≥ 0``, and ``ε Λ_g ‖Πu_g‖_q ≥ μ_gᵀΠu_g`` whenever ``‖μ_g‖_p ≤ εΛ_g``
   (``Λ_g = Σ_k λ_{g,k}``); so ``c_gᵀu_g ≥ 0`` with ``c_g = Σ_k λ_{g,k} e_{g,k} x̃_k − Πᵀμ_g``.
3. **Weak duality.** ``F(U') ≥ Σ_g [(G_g − c_g)ᵀu'_g + β‖u'_g‖] − κ ≥ −κ`` for every feasible
   ``U'`` once every residual ``R_g = ‖G_g − c_g‖₂ ≤ β``. ``μ_g`` is chosen to minimise ``R_g``:
   on the non-constant coordinates the residual is ``w − proj_{εΛ_g B_p}(w)``,
   ``w = Π(G_g − Σ_k λ_{g,k} e_{g,k} x̃_k)`` (:func:`ball_residual`: shrinkage for ``p = 2``, soft
   thresholding for ``p = ∞``, the ℓ1-ball projection of Duchi et al., ICML 2008, for ``p = 1``).
4. **Scaling.** Multiplying ``(s, λ, μ)`` by ``θ ≥ 0`` (``ζ`` kept) scales every ``R_g`` by
   ``θ``; every ``θ ≤ β / max_g R_g`` with ``θ s`` in the conjugate's domain gives the bound
   ``−(1/n) Σ_k ℓ*(θ s_k)``, concave in ``θ`` (linear for the hinge), maximised over that
   interval by :func:`best_scaling`.

At an optimum with its exact multipliers and slopes the bound equals the optimum (strong
duality); from an approximate point it is a valid bound whose distance to the objective
certifies how far that point can be from optimal (up to the rounding of its float64
evaluation). The functions below work on one chunk of
samples at a time (rows of :meth:`ConvexReLU.tensors_of`), so a caller that streams its samples,
or shards them over processes, adds the chunks' terms up before :func:`residual_norms` and
:func:`best_scaling`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from convexrobust.errors import InvalidInputError
from convexrobust.problems.losses import get_loss
from convexrobust.problems.relu import ConvexReLU

__all__ = ["ball_residual", "best_scaling", "certifiable", "cone_terms", "conjugate_sum",
           "domain_scale", "loss_minorant", "residual_norms"]

#: Golden-section steps of :func:`best_scaling` (the interval shrinks by 0.618 per step).
SCALING_STEPS = 80


def certifiable(program: ConvexReLU) -> bool:
    """Whether this module bounds ``program``: a margin loss whose conjugate is written
    (:attr:`Loss.has_conjugate`, the hinge and the logistic loss)."""
    loss = get_loss(program.loss)
    return loss.margin and loss.has_conjugate and program.targets.is_classification


def loss_minorant(program: ConvexReLU, U: torch.Tensor, smoothing: float,
                  data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1 of the module docstring on one chunk ``data``: the sum over its samples of
    ``J_kᵀ s_k`` (shape of ``U``, (C, 2P, d̃): V's groups, then W's; not divided by n) and the
    slopes ``s`` (m, C') of the smoothed loss at the margins of ``U``."""
    P = program.n_patterns
    with torch.enable_grad():
        Z = U.detach().clone().requires_grad_(True)
        margins = program.worst_margins_torch(Z[:, :P], Z[:, P:], smoothing, data)
        leaf = margins.detach().requires_grad_(True)
        loss = program.margin_loss_sum_torch(leaf, smoothing, data)
        (slopes,) = torch.autograd.grad(loss, leaf)
        (G,) = torch.autograd.grad(margins, Z, grad_outputs=slopes)
    return G, slopes


def conjugate_sum(program: ConvexReLU, slopes: torch.Tensor, data: dict[str, torch.Tensor],
                  theta: float) -> float:
    """``Σ_k ℓ*(θ s_k)`` over the chunk's samples (``+inf`` outside the conjugate's domain);
    of ``data`` only ``others`` is read (pairwise margins)."""
    loss = get_loss(program.loss)
    scaled = theta * slopes
    if program.pairwise_margins:
        return float(loss.pairwise_conjugate(scaled, data["others"]).sum())
    return float(loss.conjugate(scaled).sum())


def domain_scale(program: ConvexReLU, slopes: torch.Tensor, data: dict[str, torch.Tensor]
                 ) -> float:
    """The size of the chunk's slopes in the conjugate's domain: ``θ s`` stays in it for
    ``θ ≤ 1 / size`` (per entry for the hinge and the binary logistic loss, the row sum off the
    true class for the pairwise logistic loss)."""
    size = slopes.abs()
    if program.pairwise_margins:
        size = size * data["others"]
        if program.loss == "logistic":
            size = size.sum(dim=1)
    return float(size.max()) if size.numel() else 0.0


def cone_terms(program: ConvexReLU, lam: torch.Tensor, data: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2 on one chunk: ``Σ_k λ_{g,k} e_{g,k} x̃_k`` (C, 2P, d̃) and ``Σ_k λ_{g,k}`` (C, 2P)
    for the chunk's multipliers ``lam`` (C, 2P, m) (V's patterns, then W's)."""
    E = (2 * data["D"] - 1).T
    E = torch.cat([E, E], dim=0)  # (2P, m)
    return torch.einsum("cpn,nd->cpd", lam * E, data["Xb"]), lam.sum(dim=-1)


def ball_residual(w: torch.Tensor, radius: torch.Tensor, p: float) -> torch.Tensor:
    """``w − proj(w)``, the Euclidean projection onto the ℓp ball of ``radius`` (per row of the
    last axis; ``radius`` broadcasts against ``w[..., :1]``), for ``p ∈ {1, 2, ∞}``."""
    if p == 2:
        norm = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
        return w * (1 - radius / norm.clamp_min(torch.finfo(w.dtype).tiny)).clamp(min=0.0)
    if p == math.inf:
        return torch.sign(w) * (w.abs() - radius).clamp(min=0.0)
    if p == 1:
        a = w.abs()
        inside = a.sum(dim=-1, keepdim=True) <= radius
        # the threshold τ with Σ (|w| − τ)_+ = radius (Duchi et al. 2008, by sorting)
        top = torch.sort(a, dim=-1, descending=True).values
        cums = top.cumsum(dim=-1) - radius
        ranks = torch.arange(1, a.shape[-1] + 1, dtype=a.dtype, device=a.device)
        count = ((top - cums / ranks) > 0).sum(dim=-1, keepdim=True).clamp(min=1)
        tau = (cums.gather(-1, count - 1) / count).clamp(min=0.0)
        return torch.where(inside, torch.zeros_like(w), torch.sign(w) * torch.minimum(a, tau))
    raise InvalidInputError(f"ball_residual takes p in {{1, 2, inf}}, got {p}")


def residual_norms(program: ConvexReLU, G: torch.Tensor, cone: torch.Tensor,
                   total: torch.Tensor) -> torch.Tensor:
    """Step 3: every group's ``R_g`` (C, 2P) for the summed terms ``G`` (the data term's
    minorant, divided by n), ``cone`` and ``total`` (:func:`cone_terms` summed), with the best
    ``μ_g``."""
    eps, _ = program.radius_and_dual_exponent()
    d = program.n_features
    diff = G - cone
    if not eps:
        return torch.linalg.vector_norm(diff, dim=-1)
    slope = ball_residual(diff[..., :d], (eps * total).unsqueeze(-1), program.threat.norm)
    rest = diff[..., d:]
    return torch.sqrt(slope.square().sum(dim=-1) + rest.square().sum(dim=-1))


def best_scaling(worst_residual: float, beta: float, domain: float, n: int,
                 conjugates: Callable[[float], float]) -> tuple[float, float]:
    """Step 4: the best ``θ`` in ``[0, min(β / worst_residual, 1 / domain)]`` and its bound
    ``−conjugates(θ)/n`` (``conjugates(θ) = Σ_k ℓ*(θ s_k)`` over all samples; concave bound,
    golden-section search, the right end also tried). Returns ``(θ, bound)``."""
    if not (math.isfinite(worst_residual) and math.isfinite(domain)):
        return 0.0, 0.0  # a non-finite point or multipliers: the zero dual point's bound
    top = min(beta / worst_residual if worst_residual > 0 else math.inf,
              1.0 / domain if domain > 0 else math.inf)
    if not math.isfinite(top):  # nothing limits θ: the slopes vanish (zero loss slopes)
        top = 1.0

    def value(theta: float) -> float:
        v = -conjugates(theta) / n
        return v if math.isfinite(v) else -math.inf

    ratio = (math.sqrt(5) - 1) / 2
    lo, hi = 0.0, top
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = value(a), value(b)
    for _ in range(SCALING_STEPS):
        if fa < fb:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = value(b)
        else:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = value(a)
    best = max(((a, fa), (b, fb), (top, value(top)), (0.0, 0.0)), key=lambda t: t[1])
    return best
