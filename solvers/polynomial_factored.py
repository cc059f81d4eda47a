r"""L-BFGS on the low-rank factorisation of the polynomial-activation SDPs (programs c and d),
stopped by a certified duality gap. The program over ``K^{2C}``,
``K = {Z ⪰ 0 : ⟨G, Z⟩ = tr(Z1) − z4 = 0}``, and its smoothed objective ``F_μ`` with exact ℓ2
worst cases are those of :mod:`~convexrobust.solvers.polynomial_objective` (Bartan & Pilanci,
arXiv 2101.02429; Kuelbs, Lall & Pilanci, arXiv 2405.14033).

Factorisation (Burer & Monteiro, Math. Program. 2003). A matrix of K of rank k is a sum of k
rank-one matrices of K: ``Z = Σ_j z_j z_jᵀ`` with every ``z_jᵀ G z_j = 0`` (the rank-one
decomposition of Sturm & Zhang, Math. Oper. Res. 2003, :func:`neurons`), and a nonzero
``zzᵀ`` with ``zᵀGz = 0`` is ``q² ũũᵀ`` with ``ũ = [u; 1]``, ``‖u‖ = 1`` — a neuron ``u`` of
output weight ``q²`` (``−q²`` in ``Z'``: Bartan & Pilanci's neural decomposition). So

    Z_c(q, w) = Σ_{j<r} q_cj² ũ_cj ũ_cjᵀ,    ũ_cj = [w_cj / ‖w_cj‖; 1]        (and Z'_c alike)

is in K for every ``(q, w)`` with ``w_cj ≠ 0``, and reaches every matrix of K of rank at most
``r`` (``r = d + 1``, the default, reaches all of K). ``φ(q, w) = F_μ(Z(q, w), Z'(q', w'))``
is smooth but not convex; its gradient is the Danskin gradient of ``F_μ`` pulled back through
the map (O(C r d²) on top of an evaluation). The iterates never leave K, so there is no
projection, and the returned point is exactly feasible up to round-off.

Algorithm: L-BFGS (Liu & Nocedal, Math. Program. 1989; two-loop recursion with the initial
scaling ``sᵀy/yᵀy``, curvature pairs with ``sᵀy ≤ 0`` skipped) with Armijo backtracking,
one objective evaluation (value and gradient) per accepted trial, over smoothing stages:
``μ`` shrinks by 10× from 1 to ``smoothing_floor`` (Nesterov, Math. Program. 2005), and a
stage ends when its objective decreased by at most ``STAGE_FACTOR·μ`` (relative) over the last
:data:`WINDOW` iterations; the curvature pairs are dropped between stages. The parameters are
float64; the objective is evaluated in ``dtype`` (float32 for large programs by default). The
start is seeded (small ``q``, Gaussian ``w``: ``(q, w) = 0`` is a stationary point of ``φ``)
or a ``warm_start`` decomposed into neurons.

Why: the iteration count of projected gradient methods on this cone grows with the
conditioning of the lifted samples, which is poor for real features (principal components of
decaying variance); quasi-Newton steps on the factors adapt to it (benchmarks/targets.py
compares the two).

Stopping and certificate. A stationary point of ``φ`` certifies nothing by itself, so the stop
is the certificate of :func:`~convexrobust.solvers.lifted_cone.dual_bound` at the point and its
final smoothing: ``Solution.gap`` is the certified relative gap ``(F − bound)/F``
(``gap_kind = "certified_gap"``, an upper bound on the point's relative distance to the
optimum), checked every :data:`CERTIFY_EVERY` iterations of the final stage and when it
stalls; the solve ends ``"optimal"`` once it is at most ``tol``. When the final stage's
objective decreased by at most ``STALL_FACTOR·tol`` (relative) over :data:`WINDOW` iterations
without that certificate, it ends ``"stalled"`` (a failure unless ``accept_inaccurate``). With
a small β the certificate asks for a nearly exact dual point (its trace bound scales as 1/β),
so large programs usually end stalled or at their budget with the point far better than its
certificate. The losses are those with a dual bound (hinge, logistic); the squared loss takes
``method="apg"``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from convexrobust._validation import check_device
from convexrobust.errors import InvalidInputError
from convexrobust.problems.losses import get_loss
from convexrobust.problems.polynomial import ConvexPolynomial
from convexrobust.solvers.data_parallel import Collective, check_batch_size
from convexrobust.solvers.first_order import (
    Budget,
    auto_dtype,
    check_first_order_options,
    finish,
    with_common_options,
)
from convexrobust.solvers.lifted_cone import dual_bound, repaired_values, zero_is_optimal
from convexrobust.solvers.polynomial_objective import (
    lipschitz_estimate,
    objective,
    objective_data,
    warm_start_point,
)
from convexrobust.solvers.solution import Solution
from convexrobust.trust_region import solve_trs

__all__ = ["lift", "neurons", "solve_polynomial_factored"]

log = logging.getLogger(__name__)

#: Curvature pairs kept by L-BFGS.
MEMORY = 20
#: A stage's progress is its objective's relative decrease over the last WINDOW iterations
#: (STALL_WINDOW in the final stage).
WINDOW = 10
STALL_WINDOW = 50
#: A stage before the final one ends when it progressed by at most STAGE_FACTOR·μ.
STAGE_FACTOR = 1e-2
#: The final stage stalls when it progressed by at most STALL_FACTOR·tol.
STALL_FACTOR = 0.01
#: The certificate is computed every CERTIFY_EVERY iterations of the final stage.
CERTIFY_EVERY = 50
#: Armijo's sufficient-decrease constant and the most halvings of one line search.
ARMIJO = 1e-4
MAX_HALVINGS = 40
#: The scale of the seeded start's ``q`` (``w`` is standard Gaussian).
START_SCALE = 1e-3
#: A neuron whose weight ``q²`` is at most DEAD_WEIGHT times its matrix's largest is a free
#: slot for :func:`_insert_neurons`.
DEAD_WEIGHT = 1e-6


def lift(x: Tensor) -> Tensor:
    """``Z(q, w)`` (module docstring) for parameters ``x`` (2, C, r, 1 + d): ``q = x[..., 0]``,
    ``w = x[..., 1:]``; returns (2, C, d+1, d+1), differentiable."""
    q, w = x[..., 0], x[..., 1:]
    u = w / torch.linalg.vector_norm(w, dim=-1, keepdim=True).clamp_min(1e-300)
    u = torch.cat([u, torch.ones_like(u[..., :1])], dim=-1)
    return torch.einsum("scj,scjd,scje->scde", q * q, u, u)


def neurons(Z: np.ndarray, rank: int, tol: float = 1e-12) -> np.ndarray:
    """Parameters ``(q, w)`` (rank, 1 + d) with ``lift`` equal to ``Z`` ∈ K ((d+1)×(d+1)), from
    its eigendecomposition and the rank-one decomposition of Sturm & Zhang (Math. Oper. Res.
    2003, Prop. 3): while two factors ``p_i, p_j`` have ``g = pᵀGp`` of opposite signs, the
    rotation ``(p_i + αp_j, p_j − αp_i)/√(1 + α²)`` with ``g(p_i + αp_j) = 0`` keeps ``Σ ppᵀ`` and
    zeroes one of them; the last one has ``g = ⟨G, Z⟩ = 0`` too. A factor ``p = [v; s]`` with
    ``‖v‖ = |s|`` is the neuron ``q = |s|``, ``w = v/s``. Eigenvalues below ``tol`` times the
    largest are dropped; factors beyond ``rank`` raise :class:`InvalidInputError`, and zero
    slots get ``q = 0`` with a unit ``w``."""
    D = Z.shape[0]
    lam, V = np.linalg.eigh(0.5 * (Z + Z.T))
    keep = lam > tol * max(float(lam.max()), 0.0)
    P = [V[:, i] * math.sqrt(lam[i]) for i in np.flatnonzero(keep)]
    if len(P) > rank:
        raise InvalidInputError(f"the warm start has rank {len(P)} > rank={rank}")
    g_diag = np.ones(D)
    g_diag[-1] = -1.0

    def g(p: np.ndarray) -> float:
        return float(p @ (g_diag * p))

    done: list[np.ndarray] = []
    while P:
        gs = [g(p) for p in P]
        scale = max(float(p @ p) for p in P)
        pos = [i for i, v in enumerate(gs) if v > tol * scale]
        neg = [i for i, v in enumerate(gs) if v < -tol * scale]
        if not pos or not neg:
            done.extend(P)
            break
        i, j = pos[0], neg[0]
        a, b, c = g(P[j]), 2 * float(P[i] @ (g_diag * P[j])), gs[i]  # g(p_i + αp_j) = aα² + bα + c
        alpha = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)  # a < 0 < c: a real root
        s = math.sqrt(1 + alpha * alpha)
        pi, pj = (P[i] + alpha * P[j]) / s, (P[j] - alpha * P[i]) / s
        done.append(pi)
        P = [p for k, p in enumerate(P) if k not in (i, j)] + [pj]
    out = np.zeros((rank, D))
    out[:, 1] = 1.0
    for k, p in enumerate(done):
        if abs(p[-1]) > 0:
            out[k, 0] = abs(p[-1])
            out[k, 1:] = p[:-1] / p[-1]
    return out


class _Memory:
    """L-BFGS's last :data:`MEMORY` curvature pairs and the two-loop recursion (Nocedal, Math.
    Comp. 1980)."""

    def __init__(self) -> None:
        self.pairs: deque[tuple[Tensor, Tensor, float]] = deque(maxlen=MEMORY)

    def update(self, s: Tensor, y: Tensor) -> None:
        sy = float((s * y).sum())
        if sy > 1e-12 * float(torch.linalg.vector_norm(s) * torch.linalg.vector_norm(y)):
            self.pairs.append((s, y, 1.0 / sy))

    def direction(self, g: Tensor) -> Tensor:
        """``−H g``; the steepest descent direction scaled to unit ℓ1 step at most when there
        are no pairs (the first step of a stage)."""
        if not self.pairs:
            return -g * min(1.0, 1.0 / max(float(g.abs().sum()), 1e-300))
        q = g.clone()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            a = rho * float((s * q).sum())
            alphas.append(a)
            q.sub_(y, alpha=a)
        s, y, rho = self.pairs[-1]
        q.mul_(1.0 / (rho * float((y * y).sum())))  # the scaling sᵀy / yᵀy
        for (s, y, rho), a in zip(self.pairs, reversed(alphas), strict=True):
            b = rho * float((y * q).sum())
            q.add_(s, alpha=a - b)
        return q.neg_()

    def clear(self) -> None:
        self.pairs.clear()


def _best_neurons(M: Tensor) -> tuple[Tensor, Tensor]:
    """For every matrix ``M`` (B, D, D): ``min_{‖u‖=1} ũᵀMũ`` over neurons ``ũ = [u; 1]`` and
    its minimiser ``u`` (B, d). A quadratic on the unit sphere: with ``σ`` above the largest
    eigenvalue of ``M11`` the shifted ``M11 − σI`` is negative definite, so its minimum over the
    unit ball (:func:`~convexrobust.trust_region.solve_trs`, exact) lies on the sphere, where it
    differs from ours by ``σ``. ``M`` is in the dual cone ``K*`` exactly when every value is
    ``≥ 0`` (K is generated by the neurons ``ũũᵀ``)."""
    d = M.shape[-1] - 1
    values, points = [], []
    for m in M:
        lam, vecs = torch.linalg.eigh(m[:d, :d])
        sigma = float(lam.max()) + 1.0
        res = solve_trs(lam - sigma, vecs, m[:d, d][None], m[d, d], 1.0)
        values.append(res.value_upper[0] + sigma)
        points.append(res.delta[0])
    return torch.stack(values), torch.stack(points)


def _insert_neurons(x: Tensor, grad: Tensor, curvature: float
                    ) -> tuple[tuple[Tensor, ...], Tensor, Tensor, float] | None:
    """The escape from a stationary point of ``φ`` that is not optimal (Journée, Bach, Absil &
    Sepulchre, SIAM J. Optim. 2010: rank-deficient factorisations, grown along the dual
    infeasibility): for every matrix whose gradient ``∇_Z F`` has a neuron ``ũ`` with
    ``v = ũᵀ∇Fũ < 0`` (module docstring: the gradient is not in ``K*``) and a free slot (a neuron
    of weight at most :data:`DEAD_WEIGHT` times the largest weight of all matrices), the index
    of that slot, the new ``u``, the weight ``q² = −v / (curvature·‖ũũᵀ‖²)`` (the minimiser of
    the quadratic model with ``curvature`` a bound on ``F``'s, ``‖ũũᵀ‖_F² = 4``) and the
    first-order decrease at those weights ``Σ q² v``; None when no matrix has one."""
    two, C, r, _ = x.shape
    M = grad.reshape(two * C, *grad.shape[2:])
    values, u = _best_neurons(M)
    weights = x[..., 0].square().reshape(two * C, r)
    slot = weights.argmin(dim=1)
    free = weights.gather(1, slot[:, None]).squeeze(1) <= DEAD_WEIGHT * weights.max()
    scale = torch.linalg.matrix_norm(M).clamp_min(1e-300)
    chosen = free & (values < -1e-12 * scale)
    if not bool(chosen.any()):
        return None
    index = chosen.nonzero().squeeze(1)
    weight = -values[index] / (4.0 * curvature)
    slots = (index // C, index % C, slot[index])
    decrease = float((weight * values[index]).sum())
    return slots, u[index], weight, decrease


def _progress(history: list[float], window: int) -> float:
    """The relative decrease of the objective over the last ``window`` iterations (inf before
    there are that many)."""
    if len(history) <= window:
        return math.inf
    return (history[-window - 1] - history[-1]) / max(1.0, abs(history[-1]))


@with_common_options
def solve_polynomial_factored(program: ConvexPolynomial, *,
                              device: torch.device | str | None = None,
                              dtype: torch.dtype | str = "auto", tol: float = 1e-3,
                              max_iters: int = 20_000, time_limit: float | None = None,
                              seed: int = 0, progress: bool = False,
                              accept_inaccurate: bool = False, smoothing_floor: float = 1e-3,
                              batch_size: int | str | None = "auto",
                              distributed: bool | str = False,
                              warm_start: Solution | Mapping[str, object] | None = None,
                              rank: int | None = None) -> Solution:
    """Solve a :class:`~convexrobust.ConvexPolynomial` program (c) or (d) with the hinge or
    logistic loss by L-BFGS on its neuron factorisation, stopping on a certified duality gap
    (module docstring).

    Programs: nominal, ℓ2, or ℓ∞ with ``linf="containment"``.

    ``tol`` (default 1e-3) is the **certified relative duality gap** to reach:
    ``Solution.gap`` is ``(F − bound)/F`` at the returned point (``gap_kind =
    "certified_gap"``). A solve whose objective stops decreasing before that ends ``"stalled"``
    (an error unless ``accept_inaccurate``). ``dtype="auto"`` (default) evaluates the
    objective in float32 on large programs
    (:func:`~convexrobust.solvers.first_order.auto_dtype`), float64 otherwise; the parameters
    and the L-BFGS memory are float64. When
    :func:`~convexrobust.solvers.lifted_cone.zero_is_optimal` proves the zero network optimal
    the solve returns it at once (``info["zero_certificate"]``, ``gap = 0``).

    ``info`` holds ``device``, ``dtype``, ``rank``, ``smoothing``, ``evaluations``,
    ``dual_bound``, ``duality_gap``, ``certificates`` (how many were computed),
    ``violation_before_repair``, ``batch_size``, ``chunks``, ``world_size``, ``screened`` and
    ``zero_certificate``.

    Parameters
    ----------
    smoothing_floor:
        Final Huber width of the hinge (objective error at most half of it).
    batch_size, distributed:
        As for :func:`~convexrobust.solvers.polynomial_first_order.solve_polynomial_torch`:
        chunked sums over the samples (the exact objective and gradient, so the iterates do not
        depend on the chunking beyond round-off), data-parallel ranks in lockstep.
    warm_start:
        A :class:`~convexrobust.solvers.solution.Solution` (or its values ``{"Z", "Zp"}``) of a
        program with the same outputs and features; it is decomposed into neurons
        (:func:`neurons`) and the solve starts at the final smoothing. The optimum does not
        depend on it.
    rank:
        Neurons per matrix, ``r`` (default ``d + 1``, which loses nothing; a smaller ``r``
        restricts the program to rank ``r`` and the certificate says what that costs).
    """
    start = time.perf_counter()
    if not isinstance(program, ConvexPolynomial):
        raise InvalidInputError(
            f"solve_polynomial_factored takes a ConvexPolynomial, got {type(program).__name__}")
    if program.uses_diagonal_lmi:
        raise InvalidInputError(
            "the factored solver computes ℓ∞ worst cases through the ℓ2 ball of radius ε√d: "
            "build the program with linf='containment', or use a conic solver")
    loss = get_loss(program.loss)
    if not loss.has_conjugate:
        raise InvalidInputError(
            f"method='factored' stops on a certified gap, which the {program.loss} loss does "
            "not have here: use method='apg'")
    d, C = program.n_features, program.n_outputs
    if dtype == "auto":
        check_first_order_options(tol, max_iters, time_limit, seed, torch.float64)
        dtype = auto_dtype(program.X.shape[0] * C * d, tol)
    check_first_order_options(tol, max_iters, time_limit, seed, dtype)
    check_batch_size(batch_size)
    if not (isinstance(smoothing_floor, (int, float)) and 0 < smoothing_floor <= 1):
        raise InvalidInputError(f"smoothing_floor must be in (0, 1], got {smoothing_floor!r}")
    D = d + 1
    if rank is None:
        rank = D
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank:
        raise InvalidInputError(f"rank must be an integer >= 1, got {rank!r}")
    rank = int(rank)
    device = check_device(device)
    start_point = warm_start_point(warm_start, C, d)
    comm = Collective(distributed, device)
    data = objective_data(program, dtype=dtype, device=device, batch_size=batch_size, comm=comm)
    f64 = torch.float64

    if start_point is None:
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        x = torch.randn(2, C, rank, D, generator=gen, dtype=f64)
        x[..., 0] = START_SCALE * torch.randn(2, C, rank, generator=gen, dtype=f64).abs()
        mu = 1.0
    else:
        x = torch.as_tensor(np.stack([np.stack([neurons(Zc, rank) for Zc in M])
                                      for M in start_point]), dtype=f64)
        mu = float(smoothing_floor)
    x = x.to(device)
    mu_final = float(smoothing_floor)
    evaluations = 0
    curvature = lipschitz_estimate(program)  # of the data term, times 1/μ

    def evaluate(point: Tensor) -> tuple[float, Tensor, Tensor]:
        """φ at ``point``, its gradient, and the gradient of F_μ in ``(Z, Z')``."""
        nonlocal evaluations
        evaluations += 1
        p = point.detach().requires_grad_(True)
        W = lift(p)
        val, grad, _ = objective(data, W.detach().to(dtype), mu, True)
        assert grad is not None
        grad = grad.to(f64)
        (W * grad).sum().backward()
        assert p.grad is not None
        return float(val.to(f64).sum()), p.grad, grad

    def insert(point: Tensor, fx: float, grad: Tensor) -> tuple[Tensor, float, Tensor, Tensor]:
        """:func:`_insert_neurons` with an Armijo backtracking on the new neurons' weight;
        the point unchanged when no neuron lowers the objective."""
        found = _insert_neurons(point, grad, curvature / mu)
        if found is None:
            return point, fx, *evaluate(point)[1:]
        slots, u, weight, decrease = found
        t = 1.0
        for _ in range(MAX_HALVINGS):
            trial = point.clone()
            trial[slots + (slice(1, None),)] = u
            trial[slots + (0,)] = (t * weight).sqrt()
            f_trial, g_trial, grad_trial = evaluate(trial)
            if f_trial <= fx + ARMIJO * t * decrease:
                return trial, f_trial, g_trial, grad_trial
            t *= 0.5
        return point, fx, *evaluate(point)[1:]

    def certificate(point: Tensor) -> tuple[float, float]:
        """The program's objective at the (repaired) point and its dual bound."""
        values, _ = repaired_values(program, lift(point).detach())
        objective_value = program.objective(values)
        bound = dual_bound(program, values, mu, objective=objective_value)
        assert bound is not None
        return objective_value, bound

    budget = Budget(max_iters, time_limit, progress, desc="torch polynomial (factored)",
                    comm=comm, start=start)
    zero_certificate = data.radius > 0 and zero_is_optimal(program)
    status = "optimal"
    gap = math.inf
    bound = -math.inf
    certificates = 0
    insertions = 0
    memory = _Memory()
    history: list[float] = []
    try:
        fx, gx, grad_z = evaluate(x)
        while not zero_certificate:
            reason = budget.exhausted()
            if reason is not None:
                status = reason
                break
            direction = memory.direction(gx)
            slope = float((gx * direction).sum())
            if slope >= 0:  # not a descent direction (round-off in the memory): restart it
                memory.clear()
                direction = memory.direction(gx)
                slope = float((gx * direction).sum())
            t = 1.0
            for _ in range(MAX_HALVINGS):
                trial = x + t * direction
                f_trial, g_trial, grad_trial = evaluate(trial)
                if f_trial <= fx + ARMIJO * t * slope + 16 * torch.finfo(dtype).eps * abs(fx):
                    break
                t *= 0.5
            else:
                f_trial = math.inf
            budget.tick()
            final_stage = mu <= mu_final * (1 + 1e-9)
            if not math.isfinite(f_trial) or f_trial > fx:  # no decrease found
                if memory.pairs:  # the quasi-Newton model failed: a gradient step next
                    memory.clear()
                    continue
                moved = False  # not even along the gradient: the stage is done
            else:
                memory.update(trial - x, g_trial - gx)
                x, fx, gx, grad_z = trial, f_trial, g_trial, grad_trial
                history.append(fx)
                moved = True
            if progress and budget.iterations % 10 == 0:
                budget.bar.set_postfix(objective=f"{fx:.6g}", smoothing=f"{mu:.0e}",
                                       certified=f"{gap:.2e}")
            step_progress = _progress(history, STALL_WINDOW if final_stage else WINDOW) \
                if moved else 0.0
            if not final_stage:
                if step_progress <= STAGE_FACTOR * mu:
                    log.debug("stage smoothing=%.1e done at iteration %d, objective %.8g", mu,
                              budget.iterations, fx)
                    before = fx
                    x, fx, gx, grad_z = insert(x, fx, grad_z)  # the next stage starts with
                    insertions += fx < before                   # the neurons it lacks
                    mu = max(mu * 0.1, mu_final)
                    memory.clear()
                    history.clear()
                    fx, gx, grad_z = evaluate(x)
                continue
            stalled = step_progress <= STALL_FACTOR * tol
            if stalled or len(history) % CERTIFY_EVERY == 0:
                objective_value, bound = certificate(x)
                certificates += 1
                gap = max(objective_value - bound, 0.0) / max(abs(objective_value), 1e-300)
                if gap <= tol:
                    break
                if stalled:  # a stationary point that is not optimal: new neurons, or stop
                    before = fx
                    x, fx, gx, grad_z = insert(x, fx, grad_z)
                    if not fx < before:
                        status = "stalled"
                        break
                    insertions += 1
                    memory.clear()
                    history.clear()
    finally:
        budget.close()
    x = comm.broadcast(x)
    W = lift(x).detach()
    values, violation_before = repaired_values(program, W)
    if zero_certificate:
        values = {key: np.zeros_like(v) for key, v in values.items()}
    wall = time.perf_counter() - start
    iterations = budget.iterations
    solution = finish(
        program, values, status, accept_inaccurate=accept_inaccurate,
        failure=(f"torch (factored) stopped at {status} after {iterations} iterations with a "
                 f"certified gap of {gap:.2e} > tol {tol:.1e}: raise max_iters / time_limit, "
                 "loosen tol, or use a conic solver"),
        wall_time=wall, iterations=iterations, solver_objective=fx, gap=None,
        gap_kind="certified_gap",
        info={"device": str(device), "dtype": str(dtype).replace("torch.", ""), "rank": rank,
              "smoothing": mu, "evaluations": evaluations, "certificates": certificates,
              "insertions": insertions,
              "violation_before_repair": violation_before,
              "batch_size": data.stream.batch_size, "chunks": len(data.stream),
              "world_size": comm.world,
              "screened": 1.0 - data.rows_solved / max(data.rows_total, 1),
              "zero_certificate": zero_certificate})
    # the certificate of the returned point (its time counts as the solve's)
    bound = solution.objective if zero_certificate else dual_bound(
        program, values, mu, objective=solution.objective)
    assert bound is not None
    solution.gap = max(solution.objective - bound, 0.0) / max(abs(solution.objective), 1e-300)
    solution.info["dual_bound"] = bound
    solution.info["duality_gap"] = solution.gap
    solution.wall_time = time.perf_counter() - start
    log.info("torch polynomial (factored): %s after %d iterations (%.3gs), certified gap %.2e",
             status, iterations, solution.wall_time, solution.gap)
    return solution
