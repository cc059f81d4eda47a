"""A first-order PyTorch solver for the convex gated ReLU program, CPU or GPU, that stops on a
certified duality gap.

The program (Mishkin, Sahiner & Pilanci, ICML 2022, arXiv 2202.01331;
:class:`~convexrobust.problems.gated_relu.ConvexGatedReLU`) over the groups ``u_{i,c}``, one per
gate ``i`` and output ``c`` (``U`` of shape (C, P, d̃)), is::

    minimise   F(U) = L(A U) + β Σ_{i,c} ‖u_{i,c}‖₂,        (A U)_c = Σ_i D_i X̃ u_{i,c}

with ``L`` the mean loss over the n samples (:meth:`ConvexGatedReLU.loss_torch`).

The gap it reports (MATH.md §8) is the Fenchel duality gap of "Dual and certificate" below:
the program has no cone constraints, so scaled loss slopes are dual feasible as they are and
§8's Burer–Monteiro bound is not needed.

Method
------
**FISTA** (Beck & Teboulle, SIAM J. Imaging Sci. 2009) with backtracking line search and
gradient-based adaptive restart (O'Donoghue & Candès, Found. Comput. Math. 2015) — the shared
iteration of :mod:`~convexrobust.solvers.first_order` — on ``U``, the method Mishkin et al. use
for this program. The prox of ``tβ Σ‖u‖₂`` is block soft-thresholding; the gradient of the data
term is ``Aᵀ ∇L(A U)``, with ``A`` and ``Aᵀ`` applied as :meth:`ConvexGatedReLU.predictions_torch`
and :meth:`ConvexGatedReLU.predictions_adjoint_torch`: ``O(n·P·d̃·C)`` work each, as a product
with the n × P·d̃ matrix ``[D_1X̃ … D_PX̃]`` would cost, which is therefore never formed. The
first step is ``1/(κ ℓ)``: ``κ`` the loss's curvature (1 for the squared loss, 1/4 logistic,
``1/μ`` for the smoothed hinge, times C − 1 for pairwise margins) and ``ℓ`` the largest
eigenvalue of ``AᵀA/n``, estimated by :data:`POWER_STEPS` power iterations; every iteration then
first tries a step :data:`STEP_GROWTH` times the last accepted one (the local curvature of the
logistic loss and of the smoothed hinge is far below their global bound).

The hinge (binary, and the pairwise multi-class hinge) is smoothed (Nesterov, Math. Program.
2005) by the envelope of the loss table (``smoothing = μ``; shifted to be exact outside ``μ/2`` of
the kink, an over-estimate ``F_μ ≥ F`` by at most ``μ/8`` per term), with a continuation on
``μ`` from :data:`MU_START`: the certified gap splits into the smoothed program's own gap and the
smoothing's share ``D_μ − D`` (below), which is linear in ``μ``. When that share exceeds its
allowance, :data:`SMOOTHING_SHARE` of the target ``tol·|F|``, and the smoothed program's gap has
fallen below it (more iterations at this ``μ`` could not bring the certificate to ``tol``), ``μ``
is reduced by the factor, between :data:`MU_DECAY` and 1/2, that brings the share to half its
allowance. The squared and logistic losses are smooth (``μ = 0`` throughout).

Dual and certificate
--------------------
Fenchel duality for ``min_U L(AU) + β Σ‖u_g‖`` (the conjugate of the group norm is the indicator
of the dual-norm ball) gives, with ``L*(Z) = (1/n) Σ_k ℓ_k*(n z_k)`` the conjugate of the mean
loss of the per-sample losses ``ℓ_k``::

    maximise   D(Z) = −L*(Z)    subject to   ‖(D_iX̃)ᵀ z_c‖₂ ≤ β    for every gate i, output c

    squared                 ℓ*(s) = s²/2 + s t                       (no domain restriction)
    logistic, binary        ℓ*(−a t) = a log a + (1 − a) log(1 − a),  a ∈ [0, 1]
    hinge, binary           ℓ*(−a t) = −a,                            a ∈ [0, 1]
    hinge, pairwise         ℓ*(s) = −Σ_{c≠y} a_c,   s_c = a_c ∈ [0, 1] (c ≠ y), s_y = −Σ a_c
    logistic, pairwise      ℓ*(p − e_y) = Σ_c p_c log p_c,            p in the simplex

(the hinge's as derived in :mod:`~convexrobust.solvers.relu_admm`; the pairwise logistic loss is
``logsumexp(ŷ) − ŷ_y``, whose conjugate is the negative entropy). At an iterate the gradient
``G = ∇L_μ(AU)`` lies in the domain (``a`` is the loss's slope, ``p`` the softmax) and is brought
into it exactly against round-off; the scaled point ``θG`` is dual feasible for every
``θ ∈ [0, θ_max]``, ``θ_max = β / max_{i} ‖(D_iX̃)ᵀ g_c‖₂`` (per output where the loss separates
over outputs, one θ for all with pairwise margins), within the domain for ``θ ≤ 1``. The solver
takes the best such θ where the dual is linear (hinge: also up to the box edge ``1/max a``) or
quadratic (squared) in θ, and ``θ = min(1, θ_max)`` for the logistic losses. Then
``F(U) − D(θG) ≥ F(U) − F*`` and the solve stops when the **certified relative gap**
``(F(U) − D(θG)) / max(|F(U)|, tiny)`` is at most ``tol``; at the optimum ``θ = 1`` and the gap
is 0. ``F`` is the exact objective (``μ = 0``) and both sides are evaluated in float64, whatever
the working dtype. With the smoothed hinge the same point bounds the smoothed program too:
``D_μ = D + (μ/2n) Σ (θa)(1 − θa)`` (the conjugate of the shifted envelope adds
``(μ/2)(a² − a)`` per term), and ``F − D ≤ (F_μ − D_μ) + (D_μ − D)``, the split the
continuation above reads.

With ``β = 0`` the dual feasible set is the null space of ``Aᵀ``, where a gradient does not lie
unless the iterate is optimal: there is no certificate, and the solver stops on the relative
stationarity ``max_g ‖∇_g F_μ‖ / max_g ‖∇_g F_μ(0)‖ ≤ tol`` instead, with ``μ`` (hinge) shrunk
after each stationary stage down to ``tol`` times the zero network's loss (``gap_kind =
"relative_stationarity"``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch

from convexrobust._validation import check_device
from convexrobust.errors import InvalidInputError
from convexrobust.problems.gated_relu import ConvexGatedReLU
from convexrobust.problems.losses import get_loss
from convexrobust.solvers.first_order import (
    Budget,
    Momentum,
    backtracking_step,
    check_first_order_options,
    finish,
    gradient_restart,
    group_soft_threshold,
    with_common_options,
)
from convexrobust.solvers.solution import Solution

__all__ = ["Certificate", "certificate", "solve_gated_relu_torch"]

log = logging.getLogger(__name__)

#: First smoothing parameter of the hinge (in margin units), and the continuation factor.
MU_START = 0.1
MU_DECAY = 0.2
#: The share of the target gap ``tol·|F|`` left to the hinge's smoothing (``D_μ − D``).
SMOOTHING_SHARE = 0.5
#: The smoothing never goes below this many machine epsilons of the working dtype.
MU_FLOOR_EPS = 100.0
#: Every iteration first tries a step this much longer than the last accepted one.
STEP_GROWTH = 1.1
#: Power iterations that estimate the largest eigenvalue of AᵀA for the first step.
POWER_STEPS = 10
#: Evaluate the certificate (one product with A and one with Aᵀ, in float64) every this many
#: iterations.
CHECK_EVERY = 10


@dataclass(frozen=True)
class Certificate:
    """The certificate at a point (module docstring, "Dual and certificate"): the exact
    objective ``primal`` and the dual value ``dual`` of the scaled gradient (a lower bound on
    the optimum), their smoothed counterparts ``smoothed_primal`` (``F_μ``) and
    ``smoothed_dual`` (``D_μ``; both equal the exact ones for smooth losses), and the
    gradient ``AᵀZ`` (C, P, d̃) of the data term ``L_μ`` at the point, ``Z`` its loss gradient
    brought into the conjugate's domain (for the stationarity of β = 0)."""

    primal: float
    dual: float
    smoothed_primal: float
    smoothed_dual: float
    gradient: torch.Tensor

    @property
    def gap(self) -> float:
        """The certified relative duality gap ``(F − D)/max(|F|, tiny)`` (≥ 0)."""
        return max(self.primal - self.dual, 0.0) / max(abs(self.primal), 1e-300)


def certificate(program: ConvexGatedReLU, U: torch.Tensor, smoothing: float = 0.0
                ) -> Certificate:
    """The :class:`Certificate` of ``U`` (C, P, d̃), evaluated in float64 on ``U``'s device,
    with the hinge smoothed by ``smoothing`` for the dual point (module docstring)."""
    U = U.detach().to(torch.float64)
    data = program.tensors(torch.float64, U.device)
    n, beta = program.n_samples, program.beta
    T = data["T"]
    yhat = program.predictions_torch(U)
    reg = beta * float(torch.linalg.vector_norm(U, dim=-1).sum())
    primal = float(program.loss_torch(yhat)) + reg
    smoothed, G = program.loss_and_slope(yhat, smoothing)
    hinge = program.loss == "hinge"
    rows = torch.arange(n, device=U.device)
    # the dual point Z in the conjugate's domain (a: the per-term slopes, p: the softmax)
    if program.loss == "squared":
        Z = G
    elif program.pairwise_margins:
        onehot = torch.zeros_like(G)
        onehot[rows, data["labels"]] = 1.0
        if hinge:
            a = (n * G).clamp(0, 1) * data["others"]
            Z = a / n
            Z[rows, data["labels"]] = -a.sum(dim=1) / n
        else:
            p = (n * G + onehot).clamp_min(0)
            p = p / p.sum(dim=1, keepdim=True)
            Z = (p - onehot) / n
    else:
        a = (-n * G * T).clamp(0, 1)
        Z = -a * T / n
    gradient = program.predictions_adjoint_torch(Z)
    worst = torch.linalg.vector_norm(gradient, dim=-1).amax(dim=1)
    cap = torch.where(worst > 0, beta / worst.clamp_min(1e-300), torch.full_like(worst, math.inf))
    if program.pairwise_margins:
        cap = cap.min()
    if program.loss == "squared":  # per output: θ·lin − θ²·quad/2, best θ in [0, cap]
        lin = -(Z * T).sum(dim=0)
        quad = n * Z.square().sum(dim=0)
        theta = torch.minimum((lin / quad.clamp_min(1e-300)).clamp_min(0), cap)
        theta = torch.where(quad > 0, theta, torch.zeros_like(theta))
        dual = float((theta * lin - 0.5 * theta.square() * quad).sum())
        return Certificate(primal, dual, float(smoothed) + reg, dual, gradient)
    if hinge:  # linear in θ: as far as the cap and the box allow
        top = float(a.max())
        theta = min(float(cap.min()), 1.0 / top) if top > 0 else 0.0
        scaled = theta * a
        dual = float(scaled.sum()) / n
        spread = float((scaled * (1 - scaled)).sum()) / n
        return Certificate(primal, dual, float(smoothed) + reg, dual + 0.5 * smoothing * spread,
                           gradient)
    theta = min(1.0, float(cap.min()))
    if program.pairwise_margins:
        q = theta * p + (1 - theta) * onehot
        dual = -float(torch.special.xlogy(q, q).sum()) / n
    else:  # the per-term slopes are −q
        q = theta * a
        dual = -float(get_loss("logistic").conjugate(-q).sum()) / n
    return Certificate(primal, dual, float(smoothed) + reg, dual, gradient)


def _curvature(program: ConvexGatedReLU, smoothing: float) -> float:
    """An upper bound of the second derivative of the per-sample loss in the predictions
    (module docstring, "Method")."""
    pairs = program.n_outputs - 1 if program.pairwise_margins else 1
    if program.loss == "squared":
        return 1.0
    if program.loss == "logistic":
        return 0.25 * pairs
    return pairs / smoothing


def _largest_eigenvalue(program: ConvexGatedReLU, dtype: torch.dtype,
                        device: torch.device) -> float:
    """An estimate of the largest eigenvalue of ``AᵀA`` on one output, by power iteration from
    the all-ones point (deterministic)."""
    v = torch.ones((1, program.n_patterns, program.Xb.shape[1]), dtype=dtype, device=device)
    value = 0.0
    for _ in range(POWER_STEPS):
        norm = float(torch.linalg.vector_norm(v))
        if not norm > 0:
            break
        v = v / norm
        w = program.predictions_adjoint_torch(program.predictions_torch(v))
        value = float((w * v).sum())
        v = w
    return value


def _next_smoothing(cert: Certificate, mu: float, tol: float) -> float:
    """The continuation on the hinge's smoothing (module docstring, "Method"): ``μ`` itself
    while the smoothing's share of the certified gap, ``D_μ − D``, is within its allowance
    (:data:`SMOOTHING_SHARE` of ``tol·|F|``), or while the smoothed program's own gap
    ``F_μ − D_μ`` is above that share; otherwise ``μ`` smaller by the factor, between
    :data:`MU_DECAY` and 1/2, that brings the share (linear in μ) to half its allowance."""
    share = cert.smoothed_dual - cert.dual
    allowed = SMOOTHING_SHARE * tol * abs(cert.primal)
    if share <= allowed or cert.smoothed_primal - cert.smoothed_dual > share:
        return mu
    return mu * max(MU_DECAY, 0.5 * allowed / share)


def _stationarity(cert: Certificate, scale: float) -> float:
    """The relative stationarity of the certificate's point for β = 0 (where it is the
    minimum-norm subgradient): its largest group gradient of ``F_μ`` over ``scale`` (the
    largest at zero)."""
    return float(torch.linalg.vector_norm(cert.gradient, dim=-1).max()) / scale


@with_common_options
def solve_gated_relu_torch(program: ConvexGatedReLU, *, device: torch.device | str | None = None,
                           dtype: torch.dtype = torch.float64, tol: float = 1e-3,
                           max_iters: int = 20_000, time_limit: float | None = None,
                           seed: int = 0, progress: bool = False,
                           accept_inaccurate: bool = False) -> Solution:
    """Solve a :class:`~convexrobust.ConvexGatedReLU` program by restarted FISTA (module
    docstring).

    ``tol`` (default 1e-3) is a **certified relative duality gap**: the solve stops when
    ``(F(U) − D)/|F(U)|`` is at most ``tol``, ``F(U)`` the exact objective of the returned point
    and ``D`` the dual value of its scaled loss gradient (module docstring), so the returned
    objective is within ``tol`` (relative) of the optimum. ``Solution.gap`` is that gap
    (``gap_kind = "certified_gap"``). With ``β = 0`` there is no certificate: ``tol`` is then a
    relative stationarity and so is ``Solution.gap`` (``gap_kind =
    "relative_stationarity"``).

    ``info`` holds ``device``, ``dtype``, ``duality_gap``, ``dual_bound`` (the lower bound
    ``D``), ``smoothing`` (the final μ; 0 for smooth losses), ``smoothing_stages`` and
    ``restarts``.
    """
    if not isinstance(program, ConvexGatedReLU):
        raise InvalidInputError(
            f"solve_gated_relu_torch takes a ConvexGatedReLU, got {type(program).__name__}")
    check_first_order_options(tol, max_iters, time_limit, seed, dtype)
    loss = get_loss(program.loss)
    start = time.perf_counter()
    device = check_device(device)
    torch.manual_seed(int(seed))

    beta = program.beta
    certified = beta > 0
    mu = 0.0 if loss.smooth else MU_START
    mu_floor = MU_FLOOR_EPS * float(torch.finfo(dtype).eps)
    U = torch.zeros((program.n_outputs, program.n_patterns, program.Xb.shape[1]), dtype=dtype,
                    device=device)
    zero = certificate(program, U, mu)
    grad_scale = max(float(torch.linalg.vector_norm(zero.gradient, dim=-1).max()), 1e-300)
    mu_min = max(tol * abs(zero.primal), mu_floor) if not loss.smooth else 0.0
    lipschitz = _largest_eigenvalue(program, dtype, device) / program.n_samples
    step = 1.0 / max(_curvature(program, mu or 1.0) * lipschitz, 1e-300)
    slack = max(1e-12, 10 * float(torch.finfo(dtype).eps))

    def value(V: torch.Tensor) -> float:
        return float(program.data_term_torch(V, mu))

    def prox(V: torch.Tensor, t: float) -> torch.Tensor:
        return group_soft_threshold(V, t * beta)

    budget = Budget(max_iters, time_limit, progress, desc="torch gated relu", start=start)
    momentum = Momentum()
    x = y = U
    cert, checked = zero, U
    measure = zero.gap if certified else 1.0
    stages = 0
    status = "optimal"
    try:
        while True:
            reason = budget.exhausted()
            if reason is not None:
                status = reason
                break
            fy, slope = program.loss_and_slope(program.predictions_torch(y), mu)
            fy = float(fy)
            if not math.isfinite(fy):
                status = "numerical_error"
                break
            gy = program.predictions_adjoint_torch(slope)
            step *= STEP_GROWTH
            x_new, _, step = backtracking_step(y, fy, gy, step, prox, value,
                                               slack * max(1.0, abs(fy)))
            budget.tick()
            if budget.iterations % CHECK_EVERY == 0 or torch.equal(x_new, y):
                cert, checked = certificate(program, x_new, mu), x_new
                if certified:
                    measure = cert.gap
                    done = measure <= tol
                    new_mu = max(_next_smoothing(cert, mu, tol), mu_floor) if mu else mu
                else:
                    measure = _stationarity(cert, grad_scale)
                    done = measure <= tol and mu <= mu_min
                    new_mu = max(mu * MU_DECAY, mu_min) if measure <= tol else mu
                budget.bar.set_postfix(gap=f"{measure:.1e}", mu=f"{mu:.1e}")
                if done:
                    x = x_new
                    break
                if new_mu < mu:
                    step *= new_mu / mu  # the smoothed loss's curvature grew by this factor
                    mu = new_mu
                    stages += 1
                    momentum.reset()
                    x = y = x_new
                    log.debug("iteration %d: smoothing -> %.2g (gap %.2e)", budget.iterations,
                              mu, measure)
                    continue
            y = momentum.extrapolate(x, x_new, gradient_restart(y, x_new, x))
            x = x_new
    finally:
        budget.close()

    if checked is not x:
        cert = certificate(program, x, mu)
        measure = cert.gap if certified else _stationarity(cert, grad_scale)
    wall = time.perf_counter() - start
    info: dict[str, object] = {
        "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "duality_gap": cert.gap if certified else None,
        "dual_bound": cert.dual if certified else None,
        "smoothing": mu, "smoothing_stages": stages, "restarts": momentum.restarts,
    }
    kind = "certified gap" if certified else "relative stationarity"
    return finish(
        program, {"U": x.detach().to("cpu", torch.float64).numpy()}, status,
        accept_inaccurate=accept_inaccurate,
        failure=(f"torch (FISTA) stopped with status {status!r} after {budget.iterations} "
                 f"iterations ({kind} {measure:.2e}, tol {tol:g}). Raise max_iters / "
                 "time_limit, or loosen tol"),
        wall_time=wall, iterations=budget.iterations, solver_objective=cert.primal,
        gap=measure, gap_kind="certified_gap" if certified else "relative_stationarity",
        info=info)
