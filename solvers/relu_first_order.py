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
    λ ← (λ − ρ g_μ(U_k))_+ ,     ρ ← 10ρ when ‖min(g, λ/ρ)‖ fails to fall by 2×

Every subproblem is solved, warm-started, by **FISTA** (Beck & Teboulle, SIAM J. Imaging Sci.
2009) with backtracking line search and gradient-based adaptive restart (O'Donoghue & Candès,
Found. Comput. Math. 2015); the prox of ``tβ Σ‖u‖₂`` is exact block soft-thresholding
``u ← u·(1 − tβ/‖u‖)_+``. This is the structure of Mishkin, Sahiner & Pilanci (ICML 2022,
arXiv 2202.01331) for the constrained convex ReLU program, written from scratch here.

Non-smooth pieces — the hinge, ``|t − ŷ|`` in robust regression and the dual norm ``‖·‖_q``
(``q = 1`` for ℓ∞ threats, ``q = ∞`` for ℓ1) — are replaced by smooth approximations with
parameter ``μ`` (Moreau envelopes / soft-max, Nesterov, Math. Program. 2005). The dual norms use
under-estimates that vanish at 0 (:meth:`ConvexReLU.dual_norm_torch`; the zero group stays
feasible); the hinge and ``|t − ŷ|`` use the envelope shifted to be exact outside ``μ/2`` of the
kink (:func:`~convexrobust.problems.losses.huber_relu`), so only samples at the kink carry a
smoothing error. ``μ`` is reduced by continuation ``μ ← μ/5`` at every outer step
down to ``μ_min`` (relative to the objective). Programs without such pieces use ``μ = 0``.

Stopping: at ``μ = μ_min`` when the relative stationarity (the minimum-norm subgradient of
``Φ_k``, which is the KKT dual residual ``∇L_μ − Σ λ⁺∇g_μ + β∂‖·‖``, divided by the largest group
gradient at ``U = 0``) is below ``tol`` and the AL violation ``‖min(g, λ/ρ)‖_∞`` — absolute, in
the units of ``u`` (divided by the largest row norm of ``X̃`` only, never by the size of ``u``) —
is below :data:`VIOLATION_TARGET` (``1e-7``, or ``tol`` if tighter; 100 ulps in float32). While
it is not, ρ keeps growing and the subproblem tolerance keeps shrinking. A cheaper certificate
ends the solve earlier: once the violation is below ``tol``, a trial repair (below) is run and
accepted when it raises the true objective by at most ``tol`` relative — the returned point is
then exactly feasible and within ``tol`` of the AL point it came from.

The objective actually returned is the TRUE one (``program.objective``). Two guards keep the
status honest: ``"repair_degraded"`` when the repair raised the objective by more than
``10·tol`` relative, and ``"smoothing_inexact"`` when the true objective and the smoothed one
the solver minimised (``info["smoothing_error"]``) differ by more than ``10·tol`` relative.

FISTA details: every iteration first tries a step :data:`STEP_GROWTH` times the last accepted
one, so the step follows the local curvature back up after a backtrack (the penalty's curvature
depends on which constraints are active; the global bound ``ρ‖X̃‖²`` is far too pessimistic);
the sufficient-decrease test allows a few ulps of the working dtype (float32 iterates otherwise
fail it spuriously and the step collapses).

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
from dataclasses import dataclass

import numpy as np
import torch
from convexrobust.solvers.options import check_first_order_options
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
#: Final smoothing parameter, relative to tol and the objective's scale. The hinge and the
#: residual's ``|·|`` are smoothed only within μ/2 of their kink (exact elsewhere), so μ can
#: stay well above the target accuracy.
MU_MIN_FACTOR = 10.0
#: First penalty ρ, per sample (the loss is a mean over the n samples).
RHO_START = 100.0
#: ρ grows by this factor when the AL violation does not fall by VIOLATION_DECAY.
RHO_GROWTH = 10.0
VIOLATION_DECAY = 0.5
#: Absolute cone violation (slack / largest row norm of X̃, i.e. in the units of u) the AL must
#: reach before the repair, unless ``tol`` is tighter; never below 100 machine epsilons.
VIOLATION_TARGET = 1e-7
#: While the violation is above its target the subproblem tolerance may go down to this × tol.
INNER_TOL_FLOOR = 1.0
#: Every FISTA iteration first tries a step this much longer than the last accepted one.
STEP_GROWTH = 1.1
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
    """The smooth part of ``Φ_k``: ``L_μ(U) + (1/2ρ) Σ[(λ − ρ g_μ(U))_+² − λ²]``.

    The penalty lives on the large (C, 2P, n) slack tensor, so its gradient is written out
    rather than taped (autograd's bookkeeping dominated the iteration): with
    ``s = (λ − ρ g_μ(U))_+`` and ``g_μ(u_j) = E_j X̃ u_j − ε N_μ(u_j)`` (``N_μ`` the smoothed
    dual norm, :meth:`ConvexReLU.dual_norm_torch`)::

        ∇_{u_j} (1/2ρ) Σ_k s_jk² = −Σ_k s_jk E_jk x̃_k + ε (Σ_k s_jk) ∇N_μ(u_j)

    Only the small data term and ``N_μ`` (both cheap) go through autograd. The slack is the
    same expression as :meth:`ConvexReLU.cone_slack_torch`.
    """

    def __init__(self, program: ConvexReLU, n_patterns: int):
        self.program = program
        self.P = n_patterns
        self.mu = 0.0
        self.rho = 1.0
        self.eps = program._eps_q()[0]
        self._lam: torch.Tensor | None = None  # (C, 2P, n) multipliers, ≥ 0
        self._lam_sq = 0.0
        self._signs: dict[tuple, torch.Tensor] = {}

    @property
    def lam(self) -> torch.Tensor | None:
        return self._lam

    @lam.setter
    def lam(self, value: torch.Tensor | None) -> None:
        self._lam = value
        self._lam_sq = 0.0 if value is None else float(value.square().sum())

    def split(self, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return U[:, : self.P], U[:, self.P:]

    def _sign(self, U: torch.Tensor) -> torch.Tensor:
        """``E`` for the stacked groups (V's patterns then W's), shape (2P, n)."""
        key = (U.dtype, str(U.device))
        if key not in self._signs:
            E = (2 * self.program.tensors(U.dtype, U.device)["D"] - 1).T
            self._signs[key] = torch.cat([E, E], dim=0).contiguous()
        return self._signs[key]

    def slack(self, U: torch.Tensor, smoothing: float) -> torch.Tensor:
        Xb = self.program.tensors(U.dtype, U.device)["Xb"]
        g = torch.einsum("nd,cpd->cpn", Xb, U) * self._sign(U)
        if self.eps:
            g = g - self.eps * self.program.dual_norm_torch(U, smoothing).unsqueeze(-1)
        return g

    def _penalty_weights(self, U: torch.Tensor) -> torch.Tensor:
        return torch.relu(self._lam - self.rho * self.slack(U, self.mu))

    def value(self, U: torch.Tensor) -> torch.Tensor:
        V, W = self.split(U)
        val = self.program.data_term_torch(V, W, self.mu)
        if self._lam is not None:
            shifted = self._penalty_weights(U)
            val = val + (shifted.square().sum() - self._lam_sq) / (2 * self.rho)
        return val

    def value_and_grad(self, U: torch.Tensor) -> tuple[float, torch.Tensor]:
        U = U.detach()
        with torch.enable_grad():
            Z = U.clone().requires_grad_(True)
            V, W = self.split(Z)
            data = self.program.data_term_torch(V, W, self.mu)
            if self._lam is None:
                (grad,) = torch.autograd.grad(data, Z)
                return float(data.detach()), grad
            norm_weights = None
            with torch.no_grad():
                s = self._penalty_weights(U)
                val = float(data.detach()) + (float(s.square().sum()) - self._lam_sq) / (
                    2 * self.rho)
                Xb = self.program.tensors(U.dtype, U.device)["Xb"]
                pen_grad = -torch.einsum("cpn,nd->cpd", s * self._sign(U), Xb)
                if self.eps:
                    norm_weights = self.eps * s.sum(dim=-1)
            if norm_weights is not None:
                data = data + (norm_weights * self.program.dual_norm_torch(Z, self.mu)).sum()
            (grad,) = torch.autograd.grad(data, Z)
        return val, grad + pen_grad

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
        step *= STEP_GROWTH  # let the step follow the local curvature back up (see docstring)
        while True:  # backtracking: the quadratic upper model must hold at the new point
            x_new = _group_soft_threshold(y - step * gy, step * beta)
            d = x_new - y
            f_new = al.value_only(x_new)
            model = fy + float((gy * d).sum()) + float(d.square().sum()) / (2 * step)
            # the values carry round-off of a few ulps of the working dtype: a 1e-12 slack
            # made every float32 step fail the test and collapse to ~0
            slack = max(1e-12, 10 * float(torch.finfo(y.dtype).eps)) * max(1.0, abs(fy))
            if f_new <= model + slack or step < 1e-20:
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


def _project_with_margin(program: ConvexReLU, A: np.ndarray, z: np.ndarray,
                         rounds: int = 3) -> np.ndarray | None:
    """An approximate projection of ``z`` onto the robust cone ``{u : A u ≥ ε‖u_{:d}‖_q}``.

    With the margin ``b = ε‖u_{:d}‖_q`` frozen at the current point, ``{A u ≥ b}`` is a
    polyhedron; lifting it to the cone ``{(u, t) : A u − b t ≥ 0}`` and projecting ``(z, 1)``
    there by :func:`_project_polyhedral` gives ``(u, t)``, and ``u/t`` satisfies it. A few rounds
    update ``b``; the caller's gate shift absorbs what is left. This moves a group that violates
    the robust constraints by the smoothing error of the norm (``≈ εμ/2`` on every sample) by
    about that much, where the gate shift alone moves it by that over the gate's slack."""
    eps, q = program._eps_q()
    d = program.n_features
    u = z
    for _ in range(rounds):
        b = eps * float(np.linalg.norm(u[:d], ord=q)) * (1 + 1e-9)
        lifted = np.hstack([A, -b * np.ones((A.shape[0], 1))])
        p = _project_polyhedral(lifted, np.append(z, 1.0))
        if not p[-1] > 0:
            return None
        u = p[:-1] / p[-1]
    return u


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
    # aim a little past zero: the slack is evaluated in floating point, and round-off of order
    # u·‖z‖·‖x̃‖ would otherwise leave it at −1e-15 (and the group would be zeroed)
    scale = float(torch.linalg.vector_norm(z)) * float(np.abs(program.Xb).max()) + 1e-300
    margin = 1e-13 * scale
    for _ in range(4):
        one[0, i] = z + ((violation + margin) / gate_slack) * gate
        if float(program.cone_slack_torch(one)[0, i].min()) >= 0:
            return one[0, i]
        margin *= 100
    return None


def _repair(program: ConvexReLU, V: np.ndarray, W: np.ndarray,
            threshold: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Make every group exactly feasible (module docstring): a violated group is first
    projected onto the polyhedral cone ``E_i X̃ u ≥ 0`` (the exact feasible set of a nominal
    program), then shifted along its strictly feasible gate to absorb what is left (round-off,
    or the ``ε‖u‖_q`` term of a robust program); of this and the plain gate shift, the one that
    moves the group least is kept; a group that this would move by more than
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
                if program._eps_q()[0] > 0:
                    lifted = _project_with_margin(program, A, original.numpy())
                    if lifted is not None:
                        candidates.append(torch.as_tensor(lifted))
            best, best_move = None, limit
            for z in candidates:  # keep the feasible candidate that moves the group least
                z = _shift_along_gate(program, z, i, gates[i], float(gate_slack[i]))
                move = math.inf if z is None else float(torch.linalg.vector_norm(z - original))
                if move <= best_move:
                    best, best_move = z, move
            if best is not None:
                Zt[c, i] = best
                moved += 1
            else:
                Zt[c, i] = 0.0
                zeroed += 1
        out.append(Zt.numpy())
    return out[0], out[1], moved, zeroed


@dataclass
class _Repaired:
    """A repaired iterate (:func:`_repair`) with the true objective and violation around it."""

    U: torch.Tensor
    V: np.ndarray
    W: np.ndarray
    violation_before: float
    objective_before: float
    objective_after: float
    moved: int
    zeroed: int

    @property
    def cost(self) -> float:
        """How much the repair raised the true objective."""
        return self.objective_after - self.objective_before


def _repaired(program: ConvexReLU, U: torch.Tensor, data_scale: float) -> _Repaired:
    """Cast ``U`` to float64 on the CPU, measure it, repair it and measure again."""
    P = program.n_patterns
    Uc = U.detach().to("cpu", torch.float64)
    V, W = Uc[:, :P].numpy().copy(), Uc[:, P:].numpy().copy()
    before = {"V": V, "W": W}
    violation_before = program.violation(before)
    objective_before = program.objective(before)
    V, W, moved, zeroed = _repair(program, V, W, threshold=1e-9 * data_scale)
    return _Repaired(U, V, W, violation_before, objective_before,
                     program.objective({"V": V, "W": W}), moved, zeroed)


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
    check_first_order_options(tol, max_iters, time_limit, seed, dtype)
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
    mu_min = max(MU_MIN_FACTOR * tol, 10 * tiny) * max(abs(f0), 1e-3) if smooth_needed else 0.0
    data_scale = float(torch.linalg.vector_norm(data["Xb"], dim=-1).max())

    al.rho = RHO_START / n
    al.lam = torch.zeros((C, 2 * P, n), dtype=dtype, device=device)
    row_norm_sq = float(torch.linalg.matrix_norm(data["Xb"], ord=2)) ** 2
    step = 1.0 / max(row_norm_sq * (P / n + al.rho), 1e-12)
    inner_tol = max(1e-2, tol)
    viol_tol = max(min(tol, VIOLATION_TARGET), 100 * tiny)
    budget = _Budget(int(max_iters), time_limit, progress)
    previous_violation = math.inf
    trial: _Repaired | None = None
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
                # absolute AL violation in the units of u (slack / data scale); NOT divided by
                # the largest group norm, which hid violations the repair then paid for
                violation = float(torch.minimum(g, al.lam / al.rho).abs().max()) / data_scale
                al.lam = torch.relu(al.lam - al.rho * g)
            log.debug("outer %d: step=%.2g mu=%.2g rho=%.2g stationarity=%.2e violation=%.2e "
                      "iters=%d", outer, step, al.mu, al.rho, stationarity, violation,
                      budget.iterations)
            budget.bar.set_postfix(viol=f"{violation:.1e}", stat=f"{stationarity:.1e}")
            converged = (al.mu <= mu_min and stationarity <= tol and violation <= viol_tol)
            if not converged and al.mu <= mu_min and stationarity <= tol and violation <= tol:
                # the cheap certificate: already feasible enough if the exact repair (≈0.1 s)
                # costs at most tol of the objective
                trial = _repaired(program, U, data_scale)
                converged = trial.cost <= tol * max(abs(trial.objective_before), f0 * 1e-3)
                log.debug("outer %d: trial repair cost %.2e", outer, trial.cost)
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
            # once stationary to tol, keep tightening the subproblems (down to tol/100) while
            # the violation is still above its target: inexact subproblems stall the multipliers
            floor = tol if violation <= viol_tol else INNER_TOL_FLOOR * tol
            inner_tol = max(inner_tol * 0.2, floor)
    finally:
        budget.bar.close()

    if trial is None or trial.U is not U:
        trial = _repaired(program, U, data_scale)
    V, W = trial.V, trial.W
    violation_before, objective_before = trial.violation_before, trial.objective_before
    objective_after, shifted, zeroed = trial.objective_after, trial.moved, trial.zeroed
    # what the solver optimised (smoothed data term + β-term) against the true objective at the
    # returned point before repair: the smoothing error F − F_μ, measured rather than bounded
    with torch.no_grad():
        Vt, Wt = U[:, :P], U[:, P:]
        believed = float(program.data_term_torch(Vt, Wt, al.mu)) + beta * float(
            _group_norms(U).sum())
    smoothing_error = trial.objective_before - believed
    wall = time.perf_counter() - start
    if status == "optimal" and objective_after > objective_before + 10 * max(tol, 1e-9) * max(
            1.0, abs(objective_before)):
        # the point was not feasible enough: making it feasible cost more than the tolerance
        status = "repair_degraded"
    if status == "optimal" and abs(smoothing_error) > 10 * max(tol, 1e-9) * max(
            1.0, abs(trial.objective_before)):
        # what the solver minimised is not the objective to within the tolerance
        status = "smoothing_inexact"
    if status != "optimal" and not accept_inaccurate:
        raise SolverFailedError(
            f"torch stopped with status {status!r} after {budget.iterations} iterations "
            f"(stationarity {stationarity:.2e}, violation {violation:.2e}, tol {tol:g}). "
            "Raise max_iters / time_limit, tighten tol (repair_degraded: the constraints were not "
            "met closely enough; smoothing_inexact: the smoothed objective differs from the true "
            "one by more than the tolerance), or pass accept_inaccurate=True",
            status=status, solver="torch")
    info: dict[str, object] = {
        "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "stationarity": stationarity, "al_violation": violation,
        "violation_before_repair": violation_before,
        "objective_before_repair": objective_before,
        "repaired_groups_moved": shifted, "repaired_groups_zeroed": zeroed,
        "outer_iterations": outer, "rho": al.rho, "smoothing": al.mu,
        "smoothing_error": smoothing_error,
    }
    return Solution(program=program, values={"V": V, "W": W}, status=status, solver="torch",
                    wall_time=wall, iterations=budget.iterations,
                    solver_objective=objective_before, gap=stationarity, info=info)
