"""Per-point certified radii of two-layer heads (MATH.md §5).

* Polynomial head, ℓ2 — **exact**. For a pair ``(y, c)`` the margin ``(f_y − f_c)(z + δ)`` is a
  quadratic ``δᵀAδ + 2gᵀδ + h`` with ``A = a(Q_y − Q_c)``, ``g = A z + (b/2)(q_y − q_c)``,
  ``h = (f_y − f_c)(z)``; the distance from ``z`` to ``{margin ≤ 0}`` is found by the
  trust-region subproblem (S-lemma: exact), one eigendecomposition per class pair
  (Kuelbs, Lall & Pilanci, arXiv 2405.14033).
* Polynomial head, ℓ∞ — sound lower bound by containment ``B_∞(r/√d) ⊂ B_2(r)``.
* ReLU head, ℓp — on the ball of radius r every neuron with ``|u_jᵀz + b_j| > r‖u_j‖_q`` keeps
  its sign; an unstable one's output moves within ``[−relu(p_j), r‖u_j‖_q − relu(−p_j)]``
  (``p_j`` its pre-activation at z). So the margin is at least
  ``m(z) − r‖Σ_{stable, active} w_j u_j‖_q − Σ_{unstable} c_j(r)`` with
  ``c_j = w_j relu(p_j)`` if ``w_j > 0`` else ``|w_j| (r‖u_j‖_q − relu(−p_j))`` (``w_j`` the
  neuron's weight in ``f_y − f_c``). This bound is non-increasing in r — it may jump down
  where a neuron turns unstable (the triangle inequality at the switch gives only "after ≤
  before") — so bisection finds its root, the radius. When the
  root of the affine margin (all patterns kept) lies strictly inside every neuron's stability
  distance, the head is affine on the ball and the radius is **exact**; otherwise (including
  a root forced by a neuron turning unstable) it is a sound lower bound.

Everything runs in float64; a point is certified at radius r only if every margin is strictly
positive on the closed ball (ties are not certified). Misclassified points get radius 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from convexrobust._validation import as_array, check_device, check_features
from convexrobust.attacks import margin
from convexrobust.errors import InvalidInputError
from convexrobust.networks.two_layer import TwoLayerPolynomial, TwoLayerReLU
from convexrobust.threat import dual_exponent, parse_norm
from convexrobust.trust_region import boundary_distance

#: ``method`` labels of :class:`CertifiedRadii`.
EXACT, LOWER_BOUND, CONTAINMENT, MISCLASSIFIED = "exact", "lower_bound", "l2_containment", \
    "misclassified"


@dataclass(frozen=True)
class CertifiedRadii:
    """Per-point certified radii.

    ``radius[k]``: no perturbation with ``‖δ‖_p < radius[k]`` changes the prediction at
    ``x_k`` (0 for misclassified points; ``inf`` when no perturbation can). ``method[k]``: how
    it was obtained — ``"exact"`` (the true distance to the decision boundary),
    ``"lower_bound"`` or ``"l2_containment"`` (sound, possibly loose), ``"misclassified"``.
    ``boundary`` (exact polynomial ℓ2 only): for each point, a point at distance ≈ radius
    (at most ``4e-7`` relative beyond it) whose prediction differs (NaN where none exists).
    """

    radius: np.ndarray
    method: np.ndarray
    norm: float
    boundary: np.ndarray | None = None

    def certified_accuracy(self, eps: float) -> float:
        """Fraction of points certified at radius ``eps`` (``radius > eps``, strictly)."""
        return float(np.mean(self.radius > eps))


def _labels(y: object, n: int, n_outputs: int, device: torch.device) -> torch.Tensor:
    arr = as_array(y, "y")
    if arr.shape != (n,):
        raise InvalidInputError(f"y must have shape ({n},), got {arr.shape}")
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            arr = arr.astype(str)
    n_classes = max(n_outputs, 2)
    if arr.dtype.kind not in "biuf":
        raise InvalidInputError(
            f"y must hold class indices 0..{n_classes - 1} (binary: 0/1 or ±1), got dtype "
            f"{arr.dtype}; map labels to indices first (an estimator's certified_radius "
            "takes its own labels)"
        )
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise InvalidInputError("y contains NaN or infinite labels; drop those points")
    if n_outputs == 1 and np.all(np.isin(arr, (-1, 1))) and np.any(arr == -1):
        arr = (arr > 0).astype(np.int64)  # ±1 labels of a binary head
    if arr.dtype.kind == "f" and not np.all(np.mod(arr, 1) == 0):
        raise InvalidInputError("y must hold class indices 0..C-1 (binary: 0/1 or ±1)")
    if arr.min() < 0 or arr.max() >= n_classes:
        raise InvalidInputError(f"class indices must lie in 0..{n_classes - 1}")
    return torch.as_tensor(arr.astype(np.int64), device=device)


def _pair_weights(output: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Neuron weights ``w`` of each margin ``f_y − f_c`` (n, P, m) and a mask of real pairs.

    Binary heads (one output) have the single margin ``t·f`` with ``t = 2y − 1``."""
    if output.shape[1] == 1:
        t = (2.0 * labels - 1.0).to(output.dtype)
        return (t[:, None] * output[:, 0][None, :]).unsqueeze(1), torch.ones(
            labels.shape[0], 1, dtype=torch.bool, device=output.device)
    w = output.T[labels].unsqueeze(1) - output.T.unsqueeze(0)  # (n, C, m)
    real = torch.ones(w.shape[:2], dtype=torch.bool, device=output.device)
    real[torch.arange(labels.shape[0]), labels] = False
    return w, real


def _relu_radii(net: TwoLayerReLU, z: torch.Tensor, labels: torch.Tensor, p: float,
                iters: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    q = dual_exponent(p)
    U, b, out = net.weight, net.bias, net.output
    if U.shape[0] == 0:  # no neurons: every margin is 0, so no point is certified (exactly)
        return (torch.zeros(z.shape[0], dtype=z.dtype, device=z.device),
                torch.ones(z.shape[0], dtype=torch.bool, device=z.device))
    pre = z @ U.T + b  # (n, m)
    unorm = torch.linalg.vector_norm(U, ord=q, dim=1)  # (n,)
    dist = torch.where(unorm > 0, pre.abs() / unorm, torch.inf)  # neuron-hyperplane distances
    active = (pre > 0).to(z.dtype)
    w, real = _pair_weights(out, labels)  # (n, P, m)
    margin0 = torch.einsum("npm,nm->np", w, torch.relu(pre))
    margin0 = torch.where(real, margin0, torch.inf)

    gain, loss_inactive = torch.relu(pre), torch.relu(-pre)
    positive = (w > 0).to(z.dtype)

    def bound(r: torch.Tensor) -> torch.Tensor:  # r (n,) → lower bound of every margin (n, P)
        stable = (dist > r[:, None]).to(z.dtype)
        grad = torch.einsum("npm,nm,md->npd", w, stable * active, U)
        # an unstable neuron's output moves within [−relu(pre), r‖u‖_q − relu(−pre)]
        reach = r[:, None] * unorm - loss_inactive
        worst = positive * w * gain.unsqueeze(1) + (1 - positive) * w.abs() * reach.unsqueeze(1)
        loose = torch.einsum("npm,nm->np", worst, 1 - stable)
        return margin0 - r[:, None] * torch.linalg.vector_norm(grad, ord=q, dim=-1) - loose

    # Upper end of the bisection: beyond every (finite) neuron distance all non-constant
    # neurons are unstable and the bound is margin0 − r·Lipschitz, negative past
    # margin0/Lipschitz. Constant neurons (u_j = 0, distance inf) and constant pair margins
    # (Lipschitz 0) must be left out of the maximum, not let it fall back to 0: that made the
    # bracket tiny and reported radius inf for points that do flip.
    lipschitz = torch.einsum("npm,m->np", w.abs(), unorm)
    varying = real & (lipschitz > 0)
    worst_needed = torch.where(varying, margin0 / torch.where(varying, lipschitz, 1.0),
                               torch.zeros_like(margin0))
    finite_dist = torch.where(torch.isfinite(dist), dist, torch.zeros_like(dist))
    hi = torch.maximum(finite_dist.amax(dim=1), worst_needed.amax(dim=1)) * 2 + 1e-12
    lo = torch.zeros_like(hi)
    correct = margin0.amin(dim=1) > 0
    unbounded = correct & (bound(hi).amin(dim=1) > 0)  # never flips (e.g. a constant margin)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        ok = bound(mid).amin(dim=1) > 0
        lo = torch.where(ok, mid, lo)
        hi = torch.where(ok, hi, mid)
    radius = torch.where(correct, lo, torch.zeros_like(lo))
    radius = torch.where(unbounded, torch.inf, radius)
    # Exact iff the root of the affine margin (every neuron kept at its pattern at z) lies
    # strictly inside every neuron's stability distance. "radius < min distance" is not
    # enough: when the bound jumps below 0 as a neuron turns unstable, the bisection stops
    # just short of that neuron's distance, a lower bound that may be far from the boundary.
    slope0 = torch.linalg.vector_norm(torch.einsum("npm,nm,md->npd", w, active, U), ord=q,
                                      dim=-1)
    has_slope = real & (slope0 > 0)
    affine = torch.where(has_slope, margin0 / torch.where(has_slope, slope0, 1.0), torch.inf)
    exact = correct & ~unbounded & (affine.amin(dim=1) < dist.amin(dim=1))
    return radius, exact


def _polynomial_l2(net: TwoLayerPolynomial, z: torch.Tensor, labels: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    a, b, _ = (float(v) for v in net.coefficients)
    Q, qv, _ = net.quadratic_form()
    scores = net(z)
    n, d = z.shape
    radius = torch.full((n,), torch.inf, dtype=z.dtype, device=z.device)
    boundary = torch.full((n, d), torch.nan, dtype=z.dtype, device=z.device)
    if scores.shape[1] == 1:
        t = 2.0 * labels.to(z.dtype) - 1.0
        pairs = [(t > 0, Q[0], qv[0], scores[:, 0]), (t < 0, -Q[0], -qv[0], -scores[:, 0])]
    else:
        pairs = [(labels == y, Q[y] - Q[c], qv[y] - qv[c], scores[:, y] - scores[:, c])
                 for y in range(Q.shape[0]) for c in range(Q.shape[0]) if c != y]
    for rows, dQ, dq, pair_margin in pairs:
        if not bool(rows.any()):
            continue
        A = a * dQ
        evals, evecs = torch.linalg.eigh(A)
        zr = z[rows]
        g = zr @ A + 0.5 * b * dq
        h = pair_margin[rows]
        res = boundary_distance(evals, evecs, g, h)
        r = torch.where(h > 0, res.radius, torch.zeros_like(res.radius))
        closer = r < radius[rows]
        idx = torch.nonzero(rows).squeeze(1)
        radius[idx[closer]] = r[closer]
        boundary[idx[closer]] = zr[closer] + res.delta[closer]
    return radius, boundary


def _push_past(net: nn.Module, z: torch.Tensor, labels: torch.Tensor, boundary: torch.Tensor,
               todo: torch.Tensor) -> torch.Tensor:
    """Move each boundary point outward along ``δ`` by a relative ``1e-13 … 4e-7`` until its
    margin is clearly negative. The TRS point has margin 0 up to rounding, so as returned it is
    often still predicted as the label, and the sign of so small a margin even depends on how
    the scores are batched. At the closest point the margin decreases along ``δ``."""
    delta = boundary - z
    out = boundary.clone()
    for k in range(12):
        if not bool(todo.any()):
            break
        cand = boundary if k == 0 else z + delta * (1.0 + 1e-13 * 4.0 ** (k - 1))
        scores = net(cand)
        tol = 1e-13 * (1.0 + scores.abs().amax(dim=1))
        moved = todo & (margin(scores, labels) < -tol)
        out = torch.where(moved[:, None], cand, out)
        todo = todo & ~moved
    return out


def certified_radius(network: nn.Module, X: object, y: object, norm: float | str = 2, *,
                     device: torch.device | str | None = None) -> CertifiedRadii:
    """Certified radii of a :class:`TwoLayerPolynomial` or :class:`TwoLayerReLU` head at each
    point of ``X`` with labels ``y`` (class indices; binary heads also take ±1), in the ℓp norm
    ``norm`` (2 or ``"inf"``; ReLU heads also take 1). See the module docstring for the math."""
    p = parse_norm(norm)
    if not isinstance(network, TwoLayerPolynomial | TwoLayerReLU):
        raise InvalidInputError(
            "certified_radius takes a TwoLayerPolynomial or TwoLayerReLU head; for a whole "
            f"model use RobustModel.certified_radius (got {type(network).__name__})"
        )
    if isinstance(network, TwoLayerPolynomial) and p == 1.0:
        raise InvalidInputError("polynomial heads are certified in the l2 or linf norm")
    dev = check_device(device, default=network.weight.device)
    net = _float64_copy(network, dev)
    Xc = check_features(X, n_features=net.n_features)
    z = torch.as_tensor(Xc, dtype=torch.float64, device=dev)
    labels = _labels(y, z.shape[0], net.n_outputs, dev)
    with torch.no_grad():
        if not bool(torch.isfinite(net(z)).all()):
            raise InvalidInputError(
                "the head's scores at X are not finite in float64 (X too large for this head, "
                "or the head has NaN/inf weights); rescale X or check the network"
            )
        correct = net.predict(z) == labels
        boundary = None
        if isinstance(net, TwoLayerReLU):
            radius, exact = _relu_radii(net, z, labels, p)
            method = np.where(exact.cpu().numpy(), EXACT, LOWER_BOUND)
        else:
            radius, bpoints = _polynomial_l2(net, z, labels)
            if p == math.inf:
                radius = radius / math.sqrt(net.n_features)
                method = np.full(z.shape[0], CONTAINMENT)
            else:
                method = np.full(z.shape[0], EXACT)
                todo = correct & (radius > 0) & torch.isfinite(radius)
                boundary = _push_past(net, z, labels, bpoints, todo).cpu().numpy()
        radius = torch.where(correct, radius, torch.zeros_like(radius))
    method = np.where(correct.cpu().numpy(), method, MISCLASSIFIED)
    return CertifiedRadii(radius.cpu().numpy(), method.astype(object), p, boundary)


def _float64_copy(network: nn.Module, device: torch.device) -> nn.Module:
    """The same head in float64 on ``device`` (certificates are computed in float64)."""
    if isinstance(network, TwoLayerReLU):
        return TwoLayerReLU(network.weight.detach(), network.bias.detach(),
                            network.output.detach(), dtype=torch.float64, device=device)
    return TwoLayerPolynomial(network.weight.detach(), network.output.detach(),  # type: ignore
                              network.activation, dtype=torch.float64, device=device)
