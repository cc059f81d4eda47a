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
down to ``μ_min`` (:data:`MU_MIN_FACTOR`·tol times the zero network's loss); once stationary
there, the smoothing error ``|L(U) − L_μ(U)|`` at the iterate is measured and, while it exceeds
``tol·max(1, |F_μ|)`` (many samples at a kink, or an objective far below the zero network's),
``μ_min`` keeps shrinking by the same factor. Programs without such pieces use ``μ = 0``.

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
group is moved to ``u + τ e_i`` with ``τ = −min g(u) / min g(e_i)`` (all violated groups at
once, in a few batched passes over the data that read only pattern ``i``'s rows of each). A
group violated by more than round-off is also projected exactly onto the polyhedral cone
``E_i X̃ u ≥ 0`` (a non-negative least-squares problem; exact for nominal programs) and then
shifted, and the candidate that moves it least is kept — but only while these projections are
affordable: ``n·d̃²`` times the number of solves at most :data:`REPAIR_PROJECTION_BUDGET`
(a few seconds); beyond that (large data, many violated groups) the gate shift alone is used.
A group that would still move by more than :data:`REPAIR_MAX_SHIFT` of its norm is set to
zero. ``info`` reports the violation and the objective before the repair, how many groups were
moved, zeroed or kept a projection (``repaired_groups_projected``), and whether the
projections were within budget (``repair_projections``).

Large data and several processes (:mod:`convexrobust.solvers.data_parallel`): the data term,
its gradient, the penalty and its gradient, and the violation are sums (a maximum) over
samples. ``batch_size=b`` evaluates them over chunks of ``b`` samples streamed through a
``torch.utils.data.DataLoader``, each moved to ``device`` while it is processed, and adds the
chunks up exactly — the full gradient by streaming, not SGD, so the iterates, guarantees and
certificates are the full-batch ones up to summation order. The per-sample multipliers λ
(C, 2P, n) are kept per chunk: on the device in full-batch mode, on the host when streaming
(moved to the device with their chunk). ``distributed=True`` gives each ``torch.distributed``
rank a contiguous shard of the samples and all-reduces every sum (values, gradients, Σλ²) and
maximum (violation), so the ranks take identical steps and stopping decisions; the repair and
the judging run on the full program on every rank (host, float64), on rank 0's final iterate.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import nnls
from tqdm.auto import tqdm

from convexrobust.errors import InvalidInputError, SolverFailedError
from convexrobust.problems.relu import ConvexReLU
from convexrobust.solvers.data_parallel import (
    Collective,
    SampleStream,
    check_batch_size,
)
from convexrobust.solvers.options import check_first_order_options
from convexrobust.solvers.solution import Solution

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
#: The repair tries its exact projections (non-negative least squares over all n samples, one
#: per group violated by more than its threshold, four for a robust program) only when
#: ``n·d̃² × (number of solves)`` is at most this; otherwise it shifts along the gates alone.
#: Calibrated on one core: an nnls solve took 1–8 ns per unit of ``n·d̃²`` (1.8 ms at
#: n = 2 000, d̃ = 21; 0.24–0.39 s at n = 20 000, d̃ = 101; 15.7 s at n = 50 000, d̃ = 513), so
#: the projections stay within about 2–16 s.
REPAIR_PROJECTION_BUDGET = 2e9
#: The repair's batched slack evaluations hold at most this many (group, sample) entries at a
#: time (128 MiB in float64).
REPAIR_CHUNK = 2**24


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

    Every sum over samples runs over the chunks of ``stream`` (this rank's shard) and is
    all-reduced by ``comm`` (:mod:`~convexrobust.solvers.data_parallel`); the multipliers ``λ``
    are kept per chunk, where the stream keeps per-sample state (the device in full-batch mode,
    the host when streaming).
    """

    def __init__(self, program: ConvexReLU, stream: SampleStream, comm: Collective):
        self.program = program
        self.stream = stream
        self.comm = comm
        self.P = program.n_patterns
        self.n = stream.n_global
        self.mu = 0.0
        self.rho = 1.0
        self.eps = program._eps_q()[0]
        self.lam: list[torch.Tensor] | None = None  # per chunk (C, 2P, m) multipliers, ≥ 0
        self.lam_sq = 0.0  # Σλ² over all samples (all ranks)

    def reset_multipliers(self, U: torch.Tensor) -> None:
        """``λ = 0`` for every sample."""
        C, P2 = U.shape[:2]
        self.lam = [torch.zeros((C, P2, m), dtype=U.dtype, device=self.stream.state_device)
                    for m in self.stream.chunk_sizes]
        self.lam_sq = 0.0

    def _chunks(self):
        """The chunks on the device, each with its multipliers (or None)."""
        device = self.stream.device
        for i, chunk in enumerate(self.stream):
            yield i, chunk, None if self.lam is None else self.lam[i].to(device)

    def split(self, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return U[:, : self.P], U[:, self.P:]

    def _slack(self, U: torch.Tensor, chunk: dict[str, torch.Tensor],
               norms: torch.Tensor | None) -> torch.Tensor:
        """The chunk's slacks ``g_μ(U)``, (C, 2P, m); ``norms`` = ε-free ``N_μ(U)`` (C, 2P)."""
        g = torch.einsum("nd,cpd->cpn", chunk["Xb"], U) * chunk["E"]
        if norms is not None:
            g = g - self.eps * norms.unsqueeze(-1)
        return g

    def _norms(self, U: torch.Tensor, smoothing: float) -> torch.Tensor | None:
        return self.program.dual_norm_torch(U, smoothing) if self.eps else None

    def value_only(self, U: torch.Tensor) -> float:
        """``Φ_k``'s smooth part at ``U`` (no gradient)."""
        with torch.no_grad():
            V, W = self.split(U)
            norms = self._norms(U, self.mu)
            total = 0.0
            for _, chunk, lam in self._chunks():
                total += float(self.program.loss_sum_torch(V, W, self.mu, chunk) / self.n)
                if lam is not None:
                    s = torch.relu(lam - self.rho * self._slack(U, chunk, norms))
                    total += float(s.square().sum()) / (2 * self.rho)
            (total,) = self.comm.sum_floats(total)
        return total - (self.lam_sq / (2 * self.rho) if self.lam is not None else 0.0)

    def data_value(self, U: torch.Tensor, smoothing: float | None = None) -> float:
        """``L_μ(U)``, the smoothed mean loss alone (``smoothing`` instead of the current μ
        when given; 0 gives the true loss)."""
        mu = self.mu if smoothing is None else smoothing
        with torch.no_grad():
            V, W = self.split(U)
            total = sum(float(self.program.loss_sum_torch(V, W, mu, chunk) / self.n)
                        for chunk in self.stream)
        return self.comm.sum_floats(total)[0]

    def value_and_grad(self, U: torch.Tensor) -> tuple[float, torch.Tensor]:
        U = U.detach()
        grad = torch.zeros_like(U)
        total = torch.zeros((), dtype=torch.float64)
        norm_weights = torch.zeros(U.shape[:2], dtype=U.dtype, device=U.device) \
            if self.eps and self.lam is not None else None
        norms = self._norms(U, self.mu)
        for _, chunk, lam in self._chunks():
            with torch.enable_grad():
                Z = U.clone().requires_grad_(True)
                V, W = self.split(Z)
                data = self.program.loss_sum_torch(V, W, self.mu, chunk) / self.n
                (g,) = torch.autograd.grad(data, Z)
            grad += g
            total += float(data.detach())
            if lam is None:
                continue
            with torch.no_grad():
                s = torch.relu(lam - self.rho * self._slack(U, chunk, norms))
                total += float(s.square().sum()) / (2 * self.rho)
                grad -= torch.einsum("cpn,nd->cpd", s * chunk["E"], chunk["Xb"])
                if norm_weights is not None:
                    norm_weights += self.eps * s.sum(dim=-1)
        if norm_weights is not None:  # ε (Σ_k s_jk) ∇N_μ(u_j), linear in the weights
            with torch.enable_grad():
                Z = U.clone().requires_grad_(True)
                term = (norm_weights * self.program.dual_norm_torch(Z, self.mu)).sum()
                (g,) = torch.autograd.grad(term, Z)
            grad += g
        total, grad = self.comm.sum(total, grad)
        val = float(total) - (self.lam_sq / (2 * self.rho) if self.lam is not None else 0.0)
        return val, grad

    def update_multipliers(self, U: torch.Tensor) -> float:
        """``λ ← (λ − ρ g_μ(U))_+``; returns the AL violation ``‖min(g, λ/ρ)‖_∞`` measured
        with the multipliers before the update (all samples, all ranks)."""
        assert self.lam is not None
        violation = lam_sq = 0.0
        with torch.no_grad():
            norms = self._norms(U, self.mu)
            for i, chunk, lam in self._chunks():
                g = self._slack(U, chunk, norms)
                if g.numel():
                    violation = max(violation,
                                    float(torch.minimum(g, lam / self.rho).abs().max()))
                new = torch.relu(lam - self.rho * g)
                lam_sq += float(new.square().sum())
                self.lam[i] = new.to(self.stream.state_device)
        (violation,) = self.comm.max_floats(violation)
        (self.lam_sq,) = self.comm.sum_floats(lam_sq)
        return violation


class _Budget:
    """Shared iteration / time budget and the progress bar (on rank 0 only). With several
    ranks the time limit is agreed on: any rank out of time stops all of them."""

    def __init__(self, max_iters: int, time_limit: float | None, progress: bool,
                 comm: Collective):
        self.max_iters = max_iters
        self.deadline = None if time_limit is None else time.perf_counter() + time_limit
        self.iterations = 0
        self.comm = comm
        self.bar = tqdm(total=max_iters, disable=not (progress and comm.is_root),
                        desc="torch relu", leave=False)

    def exhausted(self) -> str | None:
        if self.iterations >= self.max_iters:
            return "max_iters"
        if self.deadline is not None and self.comm.any(time.perf_counter() > self.deadline):
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


def _slack_rows(program: ConvexReLU) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`_own_slack_min` reads: ``X̃ᵀ`` (d̃, n) and the signs ``E`` one pattern a row
    (P, n), float64 on the CPU (the repair's working precision)."""
    data = program.tensors(torch.float64, torch.device("cpu"))
    return data["Xb"].T, (2 * data["D"] - 1).T.contiguous()


def _own_slack_min(program: ConvexReLU, Z: torch.Tensor, patterns: torch.Tensor,
                   rows: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``min_k g_{i,k}(z)``: the least slack of each group ``z = Z[j]`` (G, d̃) under its own
    pattern ``i = patterns[j]`` only — ``E_i X̃ z − ε‖z_{:d}‖_q`` over the n samples, the row
    ``[c, i]`` of :meth:`ConvexReLU.cone_slack_torch` — as (G,). Evaluated in chunks of at most
    :data:`REPAIR_CHUNK` (group, sample) entries; ``rows``: :func:`_slack_rows`, if at hand."""
    Xt, Et = _slack_rows(program) if rows is None else rows
    n = Xt.shape[1]
    eps, _ = program._eps_q()
    out = torch.empty(Z.shape[0], dtype=Z.dtype)
    step = max(1, REPAIR_CHUNK // max(n, 1))
    for s in range(0, Z.shape[0], step):
        z = Z[s:s + step]
        slack = z @ Xt
        slack.mul_(Et[patterns[s:s + step]])
        if eps:
            slack.sub_(eps * program.dual_norm_torch(z).unsqueeze(-1))
        out[s:s + step] = slack.min(dim=-1).values
    return out


def _shift_along_gates(program: ConvexReLU, Z: torch.Tensor, patterns: torch.Tensor,
                       gates: torch.Tensor, gate_slack: torch.Tensor,
                       violation: torch.Tensor | None = None,
                       rows: tuple[torch.Tensor, torch.Tensor] | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``z + τ·gate`` with the least τ that makes pattern ``i``'s cone constraints hold
    (superadditivity of the slack), for a batch of groups ``Z`` (G, d̃) with patterns
    ``patterns`` (G,), in a few batched tensor operations: returns the shifted groups and a
    (G,) mask of those that succeeded (the others are returned unchanged and must be
    discarded; a group fails when its gate is not strictly feasible or the shift misses).
    ``gates`` (P, d̃) and ``gate_slack`` (P,) are every pattern's unit gate and its least slack;
    ``violation`` (G,), ``max(0, −min g(z))``, is computed when not given; ``rows``: see
    :func:`_own_slack_min`."""
    rows = _slack_rows(program) if rows is None else rows
    if violation is None:
        violation = (-_own_slack_min(program, Z, patterns, rows)).clamp_min(0)
    out = Z.clone()
    ok = violation == 0
    slack = gate_slack[patterns]
    todo = torch.nonzero(~ok & (slack > 0)).squeeze(1)
    if todo.numel() == 0:
        return out, ok
    # aim a little past zero: the slack is evaluated in floating point, and round-off of order
    # u·‖z‖·‖x̃‖ would otherwise leave it at −1e-15 (and the group would be zeroed)
    x_max = float(np.abs(program.Xb).max())
    margin = 1e-13 * (torch.linalg.vector_norm(Z[todo], dim=-1) * x_max + 1e-300)
    for _ in range(4):
        tau = (violation[todo] + margin) / slack[todo]
        trial = Z[todo] + tau.unsqueeze(-1) * gates[patterns[todo]]
        good = _own_slack_min(program, trial, patterns[todo], rows) >= 0
        out[todo[good]] = trial[good]
        ok[todo[good]] = True
        todo, margin = todo[~good], margin[~good] * 100
        if todo.numel() == 0:
            break
    return out, ok


def _unit_gates(program: ConvexReLU, rows: tuple[torch.Tensor, torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pattern's gate scaled to unit norm (P, d̃) and its least slack (P,)."""
    gates = torch.as_tensor(np.asarray(program.patterns.gates, dtype=np.float64).T.copy())
    gates = gates / torch.linalg.vector_norm(gates, dim=-1, keepdim=True).clamp_min(1e-300)
    return gates, _own_slack_min(program, gates, torch.arange(gates.shape[0]), rows)


def _repair(program: ConvexReLU, V: np.ndarray, W: np.ndarray, threshold: float,
            stats: dict | None = None) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Make every group exactly feasible (module docstring). Every violated group is shifted
    along its strictly feasible gate (:func:`_shift_along_gates`, all groups at once); a group
    violated by more than ``threshold`` is also projected onto the polyhedral cone
    ``E_i X̃ u ≥ 0`` (the exact feasible set of a nominal program; for a robust one also by
    :func:`_project_with_margin`) and then shifted to absorb what is left (round-off, or the
    ``ε‖u‖_q`` term). Of these candidates the one that moves the group least is kept; a group
    that every candidate would move by more than :data:`REPAIR_MAX_SHIFT` of its norm is set
    to zero.

    Budget: the projections are non-negative least-squares problems over all n samples
    (``≈ n·d̃²`` work each, 15.7 s at n = 50 000, d̃ = 513). They are tried only when
    ``n·d̃² × (number of solves)`` — one solve per group violated by more than ``threshold``,
    four for a robust program — is at most :data:`REPAIR_PROJECTION_BUDGET`; otherwise the
    repair uses the gate shift alone, for every group. Small programs are thus repaired as
    before, large ones in a few batched passes over the data.

    Returns V, W and the numbers of groups moved and zeroed. ``stats``, when given, receives
    ``projection_cost`` (the ``n·d̃²`` units above), ``projections`` (whether they were tried)
    and ``projected`` (how many groups kept a projected candidate)."""
    P, db, n = program.n_patterns, program.Xb.shape[1], program.n_samples
    eps = program._eps_q()[0]
    rows = _slack_rows(program)
    gates, gate_slack = _unit_gates(program, rows)
    E = 2 * program.patterns.masks - 1  # (n, P)
    Zs = [torch.as_tensor(np.ascontiguousarray(Z, dtype=np.float64)).clone() for Z in (V, W)]
    flat = [Z.view(-1, db) for Z in Zs]  # groups (c, i) as rows c·P + i
    pattern_of = torch.arange(P).repeat(Zs[0].shape[0])
    worst = []
    for F in flat:  # a zero group (most, after the group lasso) is feasible: slack 0
        w = torch.zeros(F.shape[0], dtype=F.dtype)
        live = torch.nonzero(F.ne(0).any(dim=-1)).squeeze(1)
        w[live] = _own_slack_min(program, F[live], pattern_of[live], rows)
        worst.append(w)
    violated = [torch.nonzero(w < 0).squeeze(1) for w in worst]
    solves = sum(int((-w[g] > threshold).sum()) for w, g in zip(worst, violated, strict=True))
    cost = float(n) * db * db * solves * (4 if eps > 0 else 1)
    project = cost <= REPAIR_PROJECTION_BUDGET
    if not project:
        log.debug("repair: %d violated groups; projections skipped (cost %.2g > %.2g)",
                  sum(len(g) for g in violated), cost, REPAIR_PROJECTION_BUDGET)
    moved = zeroed = projected = 0
    for F, w, groups in zip(flat, worst, violated, strict=True):
        if groups.numel() == 0:
            continue
        originals = F[groups].clone()  # (G, d̃)
        patterns = pattern_of[groups]
        # candidate layers in the order they are tried: the group itself, its projection, its
        # lifted projection; each row names its group (a position in ``groups``)
        own = torch.arange(len(groups))
        layers = [(own, *_shift_along_gates(program, originals, patterns, gates, gate_slack,
                                            (-w[groups]).clamp_min(0), rows))]
        if project:
            plain, plain_of, lifted, lifted_of = [], [], [], []
            for j in torch.nonzero(-w[groups] > threshold).squeeze(1).tolist():
                i = int(patterns[j])
                A = E[:, i:i + 1] * program.Xb
                z = originals[j].numpy()
                plain.append(torch.as_tensor(_project_polyhedral(A, z)))
                plain_of.append(j)
                if eps > 0:
                    u = _project_with_margin(program, A, z)
                    if u is not None:
                        lifted.append(torch.as_tensor(u))
                        lifted_of.append(j)
            for found, of in ((plain, plain_of), (lifted, lifted_of)):
                if found:
                    of = torch.tensor(of)
                    layers.append((of, *_shift_along_gates(
                        program, torch.stack(found), patterns[of], gates, gate_slack,
                        rows=rows)))
        # keep the feasible candidate that moves the group least (a later one on ties)
        best_move = REPAIR_MAX_SHIFT * torch.linalg.vector_norm(originals, dim=-1)
        best = torch.full((len(groups),), -1)
        best_z = torch.zeros_like(originals)
        for layer, (of, z, ok) in enumerate(layers):
            move = torch.linalg.vector_norm(z - originals[of], dim=-1)
            take = ok & (move <= best_move[of])
            best_move[of[take]] = move[take]
            best[of[take]] = layer
            best_z[of[take]] = z[take]
        keep = best >= 0
        F[groups] = torch.where(keep.unsqueeze(-1), best_z, torch.zeros_like(best_z))
        moved += int(keep.sum())
        zeroed += int((~keep).sum())
        projected += int((best > 0).sum())
    if stats is not None:
        stats.update(projection_cost=cost, projections=project, projected=projected)
    return Zs[0].numpy(), Zs[1].numpy(), moved, zeroed


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
    #: groups that kept a projected candidate, and whether projections were within budget
    projected: int = 0
    projections: bool = True

    @property
    def cost(self) -> float:
        """How much the repair raised the true objective."""
        return self.objective_after - self.objective_before

    def degraded(self, tol: float) -> bool:
        """The point was not feasible enough: making it feasible cost more than ``10·tol``
        (relative) of the objective."""
        return self.cost > 10 * max(tol, 1e-9) * max(1.0, abs(self.objective_before))


def _repaired(program: ConvexReLU, U: torch.Tensor, data_scale: float) -> _Repaired:
    """Cast ``U`` to float64 on the CPU, measure it, repair it and measure again."""
    P = program.n_patterns
    Uc = U.detach().to("cpu", torch.float64)
    V, W = Uc[:, :P].numpy().copy(), Uc[:, P:].numpy().copy()
    before = {"V": V, "W": W}
    violation_before = program.violation(before)
    objective_before = program.objective(before)
    stats: dict[str, object] = {}
    V, W, moved, zeroed = _repair(program, V, W, threshold=1e-9 * data_scale, stats=stats)
    return _Repaired(U, V, W, violation_before, objective_before,
                     program.objective({"V": V, "W": W}), moved, zeroed,
                     int(stats.get("projected", 0)), bool(stats.get("projections", True)))


def _prepare_chunk(program: ConvexReLU, raw: dict[str, torch.Tensor], dtype: torch.dtype,
                   device: torch.device) -> dict[str, torch.Tensor]:
    """A chunk of :meth:`ConvexReLU.sample_arrays` as the renderings' tensors plus ``E``, the
    signs ``2D − 1`` of V's patterns then W's, (2P, m)."""
    data = program.tensors_of(raw, dtype, device)
    E = (2 * data["D"] - 1).T
    data["E"] = torch.cat([E, E], dim=0).contiguous()
    return data


def solve_relu_torch(program: ConvexReLU, *, device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float64, tol: float = 1e-6,
                     max_iters: int = 20_000, time_limit: float | None = None, seed: int = 0,
                     progress: bool = False, accept_inaccurate: bool = False,
                     batch_size: int | str | None = "auto",
                     distributed: bool | str = False) -> Solution:
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
        Show a tqdm bar with the objective and the violation (rank 0 only).
    batch_size:
        ``None``: full batch (the samples live on ``device``). An integer: every evaluation
        streams over chunks of that many samples through a ``torch.utils.data.DataLoader``,
        each moved to ``device`` while it is processed, and sums them exactly — the full
        gradient, not SGD, so the iterates are the full-batch ones up to summation order and
        the guarantees and certificates are kept; the multipliers λ then live on the host, a
        chunk at a time on the device. ``"auto"`` (default): full batch when it fits in half of
        the free device memory (always on the CPU), else the largest chunk that does. See
        :mod:`convexrobust.solvers.data_parallel`.
    distributed:
        ``True``: data-parallel over the initialised ``torch.distributed`` process group; every
        rank passes the same program (built from the full data) and options, solves its
        contiguous shard of the samples; sums and maxima over samples are all-reduced, so all
        ranks take the same steps and decisions and return the same values (rank 0's).
        ``"auto"``: ``True`` when a process group is initialised. ``False`` (default): one
        process.
    """
    if not isinstance(program, ConvexReLU):
        raise InvalidInputError(f"solve_relu_torch takes a ConvexReLU, got {type(program)}")
    check_first_order_options(tol, max_iters, time_limit, seed, dtype)
    check_batch_size(batch_size)
    start = time.perf_counter()
    device = torch.device(device) if device is not None else torch.device("cpu")
    torch.manual_seed(int(seed))
    comm = Collective(distributed, device)

    C, P, db = program.n_outputs, program.n_patterns, program.Xb.shape[1]
    n = program.n_samples
    beta = program.beta
    eps, _ = program._eps_q()
    comm.check_same_program(beta, eps, C, arrays=tuple(program.sample_arrays().values()))
    item = torch.finfo(dtype).bits // 8
    stream = SampleStream(
        program.sample_arrays(), batch_size=batch_size, device=device, dtype=dtype,
        collective=comm, prepare=lambda raw: _prepare_chunk(program, raw, dtype, device),
        bytes_per_sample=item * (db + 3 * P + 2 * C + 10 * C * 2 * P + 4 * C * db))
    smooth_needed = eps > 0 or program.loss == "hinge"
    tiny = float(torch.finfo(dtype).eps)

    al = _AugmentedLagrangian(program, stream, comm)
    al.mu = MU_START if smooth_needed else 0.0
    U = torch.zeros((C, 2 * P, db), dtype=dtype, device=device)
    _, g0 = al.value_and_grad(U)
    grad_scale = max(float(torch.linalg.vector_norm(g0, dim=-1).max()), beta, 1e-12)
    f0 = al.value_only(U)  # the loss of the zero network: the objective's scale
    mu_min = max(MU_MIN_FACTOR * tol, 10 * tiny) * max(abs(f0), 1e-3) if smooth_needed else 0.0
    mu_floor = 10 * tiny * max(abs(f0), 1e-3)
    # data scales from the full data on the host (identical on every rank, any chunking)
    data_scale = float(np.linalg.norm(program.Xb, axis=1).max())
    row_norm_sq = float(np.linalg.eigvalsh(program.Xb.T @ program.Xb)[-1])

    al.rho = RHO_START / n
    al.reset_multipliers(U)
    step = 1.0 / max(row_norm_sq * (P / n + al.rho), 1e-12)
    inner_tol = max(1e-2, tol)
    viol_tol = max(min(tol, VIOLATION_TARGET), 100 * tiny)
    budget = _Budget(int(max_iters), time_limit, progress, comm)
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
            # absolute AL violation in the units of u (slack / data scale); NOT divided by the
            # largest group norm, which hid violations the repair then paid for
            violation = al.update_multipliers(U) / data_scale
            log.debug("outer %d: step=%.2g mu=%.2g rho=%.2g stationarity=%.2e violation=%.2e "
                      "iters=%d", outer, step, al.mu, al.rho, stationarity, violation,
                      budget.iterations)
            budget.bar.set_postfix(viol=f"{violation:.1e}", stat=f"{stationarity:.1e}")
            if smooth_needed and al.mu <= mu_min and stationarity <= tol \
                    and mu_min > mu_floor:
                # the final μ is relative to the zero network's loss; where the objective ends
                # far below it (or many samples sit at a kink) the smoothing error at the
                # iterate can still exceed the tolerance: measure it, and keep shrinking μ
                smoothed = al.data_value(U)
                error = abs(al.data_value(U, 0.0) - smoothed)
                if error > tol * max(1.0, abs(smoothed + beta * float(_group_norms(U).sum()))):
                    mu_min = max(mu_min * MU_DECAY, mu_floor)
                    log.debug("outer %d: smoothing error %.2e above tol; mu_min -> %.2g",
                              outer, error, mu_min)
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

    U = comm.broadcast(U)  # every rank returns rank 0's point (they agree; this makes it exact)
    if trial is None or not torch.equal(trial.U, U):
        trial = _repaired(program, U, data_scale)
    V, W = trial.V, trial.W
    violation_before, objective_before = trial.violation_before, trial.objective_before
    shifted, zeroed = trial.moved, trial.zeroed
    # what the solver optimised (smoothed data term + β-term) against the true objective at the
    # returned point before repair: the smoothing error F − F_μ, measured rather than bounded
    believed = al.data_value(U) + beta * float(_group_norms(U).sum())
    smoothing_error = trial.objective_before - believed
    wall = time.perf_counter() - start
    if status == "optimal" and trial.degraded(tol):
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
        "repaired_groups_projected": trial.projected, "repair_projections": trial.projections,
        "outer_iterations": outer, "rho": al.rho, "smoothing": al.mu,
        "smoothing_error": smoothing_error,
        "batch_size": stream.batch_size, "chunks": len(stream), "world_size": comm.world,
    }
    return Solution(program=program, values={"V": V, "W": W}, status=status, solver="torch",
                    wall_time=wall, iterations=budget.iterations,
                    solver_objective=objective_before, gap=stationarity, info=info)
