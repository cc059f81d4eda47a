"""A first-order PyTorch solver for the convex ReLU programs (a) and (b), CPU or GPU.

The program (MATH.md §1–2, :class:`~convexrobust.problems.relu.ConvexReLU`) over the groups
``u`` (every ``v_{i,c}`` and ``w_{i,c}``, stacked as ``U`` of shape (C, 2P, d̃)) is::

    minimise   F(U) = L(U) + β Σ_groups ‖u‖₂
    subject to g_i(u) = E_i X̃ u − ε‖u_{:d}‖_q ≥ 0      for every group (cone constraints)

``L`` is the (robust) mean loss, ``g`` is concave and positively homogeneous, so the feasible set
is a closed convex cone and the program is convex.

Algorithm
---------
**Augmented Lagrangian** (Hestenes–Powell–Rockafellar; see Bertsekas, *Constrained Optimization
and Lagrange Multiplier Methods*, 1982, and Nocedal & Wright §17.4) on the cone constraints::

    Φ_k(U) = L_μ(U) + (1/2ρ) Σ [ (λ − ρ g_μ(U))_+² − λ² ] + β Σ ‖u‖₂
    λ ← (λ − ρ g_μ(U_k))_+ ,     ρ ← 10ρ when ‖min(g, λ/ρ)‖ fails to fall by 4×

Every subproblem is solved, warm-started, by **FISTA** (Beck & Teboulle, SIAM J. Imaging Sci.
2009) with backtracking line search and gradient-based adaptive restart (O'Donoghue & Candès,
Found. Comput. Math. 2015); the prox of ``tβ Σ‖u‖₂`` is exact block soft-thresholding
``u ← u·(1 − tβ/‖u‖)_+``. This is the structure of Mishkin, Sahiner & Pilanci (ICML 2022,
arXiv 2202.01331) for the constrained convex ReLU program, written from scratch here.

Non-smooth pieces — the hinge, ``|t − ŷ|`` in robust regression and the dual norm ``‖·‖_q``
(``q = 1`` for ℓ∞ threats, ``q = ∞`` for ℓ1) — are replaced by smooth under-estimates with
parameter ``μ`` (Moreau envelopes / soft-max, Nesterov, Math. Program. 2005; see
:meth:`ConvexReLU.dual_norm_torch`), reduced by continuation ``μ ← μ/5`` at every outer step
down to ``μ_min`` (relative to the objective). Programs without such pieces use ``μ = 0``.

Stopping: at ``μ = μ_min`` when the relative stationarity (the minimum-norm subgradient of
``Φ_k``, which is the KKT dual residual ``∇L_μ − Σ λ⁺∇g_μ + β∂‖·‖``, divided by the largest group
gradient at ``U = 0``) and the relative AL violation ``‖min(g, λ/ρ)‖_∞`` are below ``tol``.
The objective actually returned is the TRUE one (``program.objective``); the smoothing error
``F − F_μ`` is measured and reported.

Repair: the returned point must satisfy the cone constraints exactly (the recovered network
reproduces the convex model only where they hold, MATH.md §1). ``g`` is concave and
positively homogeneous, hence superadditive: ``g(u + τe) ≥ g(u) + τ g(e)``. Every pattern's
gate ``e_i`` is strictly feasible (``g(e_i) > 0``; the patterns are built so), so a violated
group is moved to ``u + τ e_i`` with ``τ = −min g(u) / min g(e_i)``; if that moves it too far,
it is first projected exactly onto the polyhedral cone ``E_i X̃ u ≥ 0`` (a non-negative
least-squares problem; exact for nominal programs) and then shifted. A group that would still
move by more than :data:`REPAIR_MAX_SHIFT` of its norm is set to zero. ``info`` reports the
violation and the objective before the repair and how many groups were moved or zeroed.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from convexrobust.solvers.solution import Solution
from scipy.optimize import nnls
from tqdm.auto import tqdm

from convexrobust.errors import InvalidInputError, SolverFailedError
from convexrobust.problems.relu import ConvexReLU

__all__ = ["solve_relu_torch"]

log = logging.getLogger(__name__)

#: First smoothing parameter, and the continuation factor per outer iteration.
MU_START = 0.1
MU_DECAY = 0.2
#: First penalty ρ, per sample (the loss is a mean over the n samples).
RHO_START = 100.0
#: ρ grows by this factor when the AL violation does not fall by VIOLATION_DECAY.
RHO_GROWTH = 10.0
VIOLATION_DECAY = 0.25
#: Check stationarity (one extra gradient) every this many FISTA iterations.
CHECK_EVERY = 10
#: The repair moves a group by at most this fraction of its norm, else zeroes it.
REPAIR_MAX_SHIFT = 0.1


def _group_norms(U: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(U, dim=-1, keepdim=True)


def _group_soft_threshold(U: torch.Tensor, threshold: float) -> torch.Tensor:
    """prox of ``threshold·Σ‖u‖₂``: block soft-thresholding."""
    norms = _group_norms(U)
    return U * torch.clamp(1 - threshold / norms.clamp_min(1e-300), min=0)


def _min_norm_subgradient(U: torch.Tensor, grad: torch.Tensor, beta: float) -> torch.Tensor:
    """Per group, the norm of the minimum-norm element of ``grad + β∂‖u‖₂``."""
    norms = _group_norms(U)
    nonzero = norms > 0
    at_nonzero = torch.linalg.vector_norm(grad + beta * U / norms.clamp_min(1e-300), dim=-1)
    at_zero = torch.clamp(torch.linalg.vector_norm(grad, dim=-1) - beta, min=0)
    return torch.where(nonzero.squeeze(-1), at_nonzero, at_zero)


class _AugmentedLagrangian:
    """The smooth part of ``Φ_k``: ``L_μ(U) + (1/2ρ) Σ[(λ − ρ g_μ(U))_+² − λ²]``."""

    def __init__(self, program: ConvexReLU, n_patterns: int):
        self.program = program
        self.P = n_patterns
        self.mu = 0.0
        self.rho = 1.0
        self.lam: torch.Tensor | None = None  # (C, 2P, n) multipliers, ≥ 0

    def split(self, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return U[:, : self.P], U[:, self.P:]

    def slack(self, U: torch.Tensor, smoothing: float) -> torch.Tensor:
        V, W = self.split(U)
        return torch.cat([self.program.cone_slack_torch(V, smoothing),
                          self.program.cone_slack_torch(W, smoothing)], dim=1)

    def value(self, U: torch.Tensor) -> torch.Tensor:
        V, W = self.split(U)
        val = self.program.data_term_torch(V, W, self.mu)
        if self.lam is not None:
            shifted = torch.relu(self.lam - self.rho * self.slack(U, self.mu))
            val = val + (shifted.square().sum() - self.lam.square().sum()) / (2 * self.rho)
        return val

    def value_and_grad(self, U: torch.Tensor) -> tuple[float, torch.Tensor]:
        with torch.enable_grad():
            X = U.detach().requires_grad_(True)
            val = self.value(X)
            (grad,) = torch.autograd.grad(val, X)
        return float(val.detach()), grad

    def value_only(self, U: torch.Tensor) -> float:
        with torch.no_grad():
            return float(self.value(U))


class _Budget:
    """Shared iteration / time budget and the progress bar."""

    def __init__(self, max_iters: int, time_limit: float | None, progress: bool):
        self.max_iters = max_iters
        self.deadline = None if time_limit is None else time.perf_counter() + time_limit
        self.iterations = 0
        self.bar = tqdm(total=max_iters, disable=not progress, desc="torch relu", leave=False)

    def exhausted(self) -> str | None:
        if self.iterations >= self.max_iters:
            return "max_iters"
        if self.deadline is not None and time.perf_counter() > self.deadline:
            return "time_limit"
        return None

    def tick(self) -> None:
        self.iterations += 1
        self.bar.update(1)


def _fista(al: _AugmentedLagrangian, U: torch.Tensor, beta: float, step: float, tol_abs: float,
           budget: _Budget) -> tuple[torch.Tensor, float, float]:
    """Accelerated proximal gradient on ``Φ_k`` from ``U`` until the minimum-norm subgradient is
    at most ``tol_abs`` in every group (or the budget runs out). Returns ``U``, the last accepted
    step and the final stationarity (absolute, max over groups)."""
    x = U
    y = U
    theta = 1.0
    stationarity = math.inf
    since_check = 0
    while budget.exhausted() is None:
        fy, gy = al.value_and_grad(y)
        while True:  # backtracking: the quadratic upper model must hold at the new point
            x_new = _group_soft_threshold(y - step * gy, step * beta)
            d = x_new - y
            f_new = al.value_only(x_new)
            model = fy + float((gy * d).sum()) + float(d.square().sum()) / (2 * step)
            if f_new <= model + 1e-12 * max(1.0, abs(fy)) or step < 1e-20:
                break
            step *= 0.5
        budget.tick()
        since_check += 1
        if since_check >= CHECK_EVERY or not torch.any(d != 0):
            since_check = 0
            _, g_new = al.value_and_grad(x_new)
            stationarity = float(_min_norm_subgradient(x_new, g_new, beta).max())
            if stationarity <= tol_abs:
                return x_new, step, stationarity
        # gradient-based adaptive restart (O'Donoghue & Candès 2015)
        if float(((y - x_new) * (x_new - x)).sum()) > 0:
            theta = 1.0
            x, y = x_new, x_new
            step *= 1.2  # let the step grow again after a restart
            continue
        theta_next = (1 + math.sqrt(1 + 4 * theta * theta)) / 2
        y = x_new + ((theta - 1) / theta_next) * (x_new - x)
        x, theta = x_new, theta_next
    return x, step, stationarity


def _project_polyhedral(A: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``z`` onto the cone ``{u : A u ≥ 0}`` through its dual, a
    non-negative least-squares problem: ``u = z + Aᵀμ``, ``μ = argmin_{μ≥0} ‖Aᵀμ + z‖``
    (Lawson–Hanson active set, exact up to round-off)."""
    mu, _ = nnls(A.T, -z, maxiter=50 * A.shape[0])
    return z + A.T @ mu


def _shift_along_gate(program: ConvexReLU, z: torch.Tensor, i: int, gate: torch.Tensor,
                      gate_slack: float) -> torch.Tensor | None:
    """``z + τ·gate`` with the least τ that makes pattern ``i``'s cone constraints hold
    (superadditivity of the slack), or None when the gate is not strictly feasible."""
    P = program.n_patterns
    one = torch.zeros((1, P, z.shape[-1]), dtype=z.dtype)
    one[0, i] = z
    violation = max(0.0, -float(program.cone_slack_torch(one)[0, i].min()))
    if violation == 0:
        return z
    if gate_slack <= 0:
        return None
    one[0, i] = z + (violation / gate_slack * (1 + 1e-6) + 1e-300) * gate
    if float(program.cone_slack_torch(one)[0, i].min()) < 0:
        return None
    return one[0, i]


def _repair(program: ConvexReLU, V: np.ndarray, W: np.ndarray,
            threshold: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Make every group exactly feasible (module docstring): a violated group is first
    projected onto the polyhedral cone ``E_i X̃ u ≥ 0`` (the exact feasible set of a nominal
    program), then shifted along its strictly feasible gate to absorb what is left (round-off,
    or the ``ε‖u‖_q`` term of a robust program); a group that this would move by more than
    :data:`REPAIR_MAX_SHIFT` of its norm is set to zero. Returns V, W and the numbers of groups
    moved and zeroed."""
    gates = torch.as_tensor(np.asarray(program.patterns.gates, dtype=np.float64).T.copy())
    gates = gates / torch.linalg.vector_norm(gates, dim=-1, keepdim=True).clamp_min(1e-300)
    gate_slack = program.cone_slack_torch(gates.unsqueeze(0))[0].min(dim=-1).values  # (P,)
    E = 2 * program.patterns.masks - 1  # (n, P)
    moved = zeroed = 0
    out = []
    for Z in (V, W):
        Zt = torch.as_tensor(Z.copy())
        worst = program.cone_slack_torch(Zt).min(dim=-1).values  # (C, P)
        for c, i in zip(*np.nonzero((worst < 0).numpy()), strict=True):
            original = Zt[c, i].clone()
            limit = REPAIR_MAX_SHIFT * float(torch.linalg.vector_norm(original))
            candidates = [original]
            if -float(worst[c, i]) > threshold:  # also try the polyhedral projection first
                A = E[:, i:i + 1] * program.Xb
                candidates.append(torch.as_tensor(_project_polyhedral(A, original.numpy())))
            for z in candidates:
                z = _shift_along_gate(program, z, i, gates[i], float(gate_slack[i]))
                if z is not None and float(torch.linalg.vector_norm(z - original)) <= limit:
                    Zt[c, i] = z
                    moved += 1
                    break
            else:
                Zt[c, i] = 0.0
                zeroed += 1
        out.append(Zt.numpy())
    return out[0], out[1], moved, zeroed


def _check_options(tol: float, max_iters: int, time_limit: float | None, seed: int,
                   dtype: torch.dtype) -> None:
    if not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol <= 0:
        raise InvalidInputError(f"tol must be a finite number > 0, got {tol!r}")
    if isinstance(max_iters, bool) or not isinstance(max_iters, (int, np.integer)) \
            or max_iters < 1:
        raise InvalidInputError(f"max_iters must be an integer >= 1, got {max_iters!r}")
    if time_limit is not None and (not isinstance(time_limit, (int, float))
                                   or not time_limit > 0):
        raise InvalidInputError(f"time_limit must be None or a number > 0, got {time_limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidInputError(f"seed must be an integer, got {seed!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidInputError(f"dtype must be a torch floating dtype, got {dtype!r}")


def solve_relu_torch(program: ConvexReLU, *, device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float64, tol: float = 1e-6,
                     max_iters: int = 20_000, time_limit: float | None = None, seed: int = 0,
                     progress: bool = False, accept_inaccurate: bool = False) -> Solution:
    """Solve a :class:`ConvexReLU` program by augmented Lagrangian + FISTA (module docstring).

    Parameters
    ----------
    device, dtype:
        Where and in which precision to iterate (the returned values are float64 numpy).
    tol:
        Relative stationarity and constraint-violation tolerance; the final smoothing parameter
        is ``max(tol, 1e-7)`` times the objective's scale.
    max_iters, time_limit:
        Budget of FISTA iterations (all outer steps together) and seconds. When exhausted,
        :class:`SolverFailedError` with status ``"max_iters"`` / ``"time_limit"``, unless
        ``accept_inaccurate``, which returns the (repaired) point with that status.
    seed:
        Seeds torch's generator for the solve. The method starts at ``U = 0`` and has no random
        step, so the result is a deterministic function of the program and the options.
    progress:
        Show a tqdm bar with the objective and the violation.
    """
    if not isinstance(program, ConvexReLU):
        raise InvalidInputError(f"solve_relu_torch takes a ConvexReLU, got {type(program)}")
    _check_options(tol, max_iters, time_limit, seed, dtype)
    start = time.perf_counter()
    device = torch.device(device) if device is not None else torch.device("cpu")
    torch.manual_seed(int(seed))

    data = program.tensors(dtype, device)
    C, P, db = program.n_outputs, program.n_patterns, program.Xb.shape[1]
    n = program.n_samples
    beta = program.beta
    eps, _ = program._eps_q()
    smooth_needed = eps > 0 or program.loss == "hinge"
    tiny = float(torch.finfo(dtype).eps)

    al = _AugmentedLagrangian(program, P)
    al.mu = MU_START if smooth_needed else 0.0
    U = torch.zeros((C, 2 * P, db), dtype=dtype, device=device)
    _, g0 = al.value_and_grad(U)
    grad_scale = max(float(torch.linalg.vector_norm(g0, dim=-1).max()), beta, 1e-12)
    f0 = al.value_only(U)  # the loss of the zero network: the objective's scale
    mu_min = max(10 * tol, 10 * tiny) * max(abs(f0), 1e-3) if smooth_needed else 0.0
    data_scale = float(torch.linalg.vector_norm(data["Xb"], dim=-1).max())

    al.rho = RHO_START / n
    al.lam = torch.zeros((C, 2 * P, n), dtype=dtype, device=device)
    row_norm_sq = float(torch.linalg.matrix_norm(data["Xb"], ord=2)) ** 2
    step = 1.0 / max(row_norm_sq * (P / n + al.rho), 1e-12)
    inner_tol = max(1e-2, tol)
    budget = _Budget(int(max_iters), time_limit, progress)
    previous_violation = math.inf
    stationarity = violation = math.inf
    outer = 0
    status = "optimal"
    try:
        while True:
            outer += 1
            U, step, stat_abs = _fista(al, U, beta, step, inner_tol * grad_scale, budget)
            stationarity = stat_abs / grad_scale
            with torch.no_grad():
                g = al.slack(U, al.mu)
                scale = data_scale * max(float(_group_norms(U).max()), 1.0)
                violation = float(torch.minimum(g, al.lam / al.rho).abs().max()) / scale
                al.lam = torch.relu(al.lam - al.rho * g)
            objective_mu = al.value_only(U)  # noqa: F841 (kept for logging below)
            log.debug("outer %d: mu=%.2g rho=%.2g stationarity=%.2e violation=%.2e iters=%d",
                      outer, al.mu, al.rho, stationarity, violation, budget.iterations)
            budget.bar.set_postfix(viol=f"{violation:.1e}", stat=f"{stationarity:.1e}")
            converged = (al.mu <= mu_min and stationarity <= tol and violation <= tol)
            if converged:
                break
            reason = budget.exhausted()
            if reason is not None:
                status = reason
                break
            if violation > VIOLATION_DECAY * previous_violation:
                al.rho *= RHO_GROWTH
                step /= RHO_GROWTH  # the penalty's curvature grew by this factor
            previous_violation = violation
            if smooth_needed:
                al.mu = max(al.mu * MU_DECAY, mu_min)
            inner_tol = max(inner_tol * 0.2, tol)
    finally:
        budget.bar.close()

    Uc = U.detach().to("cpu", torch.float64)
    V, W = Uc[:, :P].numpy().copy(), Uc[:, P:].numpy().copy()
    before = {"V": V, "W": W}
    violation_before = program.violation(before)
    objective_before = program.objective(before)
    V, W, shifted, zeroed = _repair(program, V, W, threshold=1e-9 * data_scale)
    wall = time.perf_counter() - start
    objective_after = program.objective({"V": V, "W": W})
    if status == "optimal" and objective_after > objective_before + 10 * max(tol, 1e-9) * max(
            1.0, abs(objective_before)):
        # the point was not feasible enough: making it feasible cost more than the tolerance
        status = "repair_degraded"
    if status != "optimal" and not accept_inaccurate:
        raise SolverFailedError(
            f"torch stopped with status {status!r} after {budget.iterations} iterations "
            f"(stationarity {stationarity:.2e}, violation {violation:.2e}, tol {tol:g}). "
            "Raise max_iters / time_limit, tighten tol (repair_degraded: the constraints were not "
            "met closely enough), or pass accept_inaccurate=True",
            status=status, solver="torch")
    info: dict[str, object] = {
        "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "stationarity": stationarity, "al_violation": violation,
        "violation_before_repair": violation_before,
        "objective_before_repair": objective_before,
        "repaired_groups_moved": shifted, "repaired_groups_zeroed": zeroed,
        "outer_iterations": outer, "rho": al.rho, "smoothing": al.mu,
    }
    return Solution(program=program, values={"V": V, "W": W}, status=status, solver="torch",
                    wall_time=wall, iterations=budget.iterations,
                    solver_objective=objective_before, gap=stationarity, info=info)
