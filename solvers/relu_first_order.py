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
kink (``shifted=True`` in :mod:`~convexrobust.problems.losses`), so only samples at the kink carry a
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

Certificate: for the margin losses with a conjugate (hinge, logistic) the weak-duality bound of
:mod:`~convexrobust.solvers.relu_dual` is evaluated once at the end, in float64, from the last
iterate, its smoothed loss slopes and the multipliers ``λ``: ``info["dual_bound"]`` and
``info["duality_gap"]`` (relative to the returned, repaired objective). The bound needs every
group's dual residual within β, so it is only as tight as the stationarity is small against β.

FISTA details (the shared iteration of :mod:`~convexrobust.solvers.first_order`:
``backtracking_step`` and ``Momentum`` with gradient restarts): every iteration first tries a
step :data:`STEP_GROWTH` times the last accepted one, so the step follows the local curvature
back up after a backtrack (the penalty's curvature depends on which constraints are active; the
global bound ``ρ‖X̃‖²`` is far too pessimistic); the sufficient-decrease test allows a few ulps
of the working dtype (float32 iterates otherwise fail it spuriously and the step collapses).

Repair: the returned point must satisfy the cone constraints exactly (the recovered network
reproduces the convex model only where they hold, MATH.md §1): it is repaired by
:func:`convexrobust.solvers.relu_repair.repaired` (gate shifts and exact projections), and
``info`` reports the violation and the objective before the repair, how many groups were moved,
zeroed, re-homed on the all-ones pattern (``repaired_groups_rehomed``) or kept a projection
(``repaired_groups_projected``), and whether the projections were within budget
(``repair_projections``).

Radii at least every sample's norm: the optimum is then a network of biases alone (proof in
:func:`_slope_free_coordinates`), and the solver iterates on the bias coordinates only
(``info["slope_free"]``).

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
from collections.abc import Callable, Mapping

import numpy as np
import torch

from convexrobust._validation import check_device
from convexrobust.errors import InvalidInputError
from convexrobust.problems.losses import get_loss
from convexrobust.problems.relu import ConvexReLU
from convexrobust.solvers import relu_dual
from convexrobust.solvers.data_parallel import (
    Collective,
    SampleStream,
    check_batch_size,
)
from convexrobust.solvers.first_order import (
    Budget,
    Checkpoints,
    Momentum,
    auto_dtype,
    backtracking_step,
    check_first_order_options,
    finish,
    gradient_restart,
    group_norms,
    group_soft_threshold,
    min_norm_subgradient,
    with_common_options,
)
from convexrobust.solvers.relu_repair import Repaired, repaired
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
        self.eps = program.radius_and_dual_exponent()[0]
        self.lam: list[torch.Tensor] | None = None  # per chunk (C, 2P, m) multipliers, ≥ 0
        self.lam_sq = 0.0  # Σλ² over all samples (all ranks)

    def reset_multipliers(self, U: torch.Tensor) -> None:
        """``λ = 0`` for every sample."""
        C, P2 = U.shape[:2]
        self.lam = [torch.zeros((C, P2, m), dtype=U.dtype, device=self.stream.state_device)
                    for m in self.stream.chunk_sizes]
        self.lam_sq = 0.0

    def multipliers(self) -> torch.Tensor:
        """A copy of all of this rank's multipliers, (C, 2P, n) on the host."""
        assert self.lam is not None
        return torch.cat([lam.cpu() for lam in self.lam], dim=-1)

    def set_multipliers(self, lam: torch.Tensor, lam_sq: float) -> None:
        """Take (a copy of) ``lam`` (C, 2P, n) as the multipliers, split into the stream's
        chunks, and ``lam_sq`` as their Σλ² (kept as computed, not summed again)."""
        parts = torch.split(lam, list(self.stream.chunk_sizes), dim=-1)
        self.lam = [p.to(self.stream.state_device).clone(memory_format=torch.contiguous_format)
                    for p in parts]
        self.lam_sq = float(lam_sq)

    def _chunks(self):
        """The chunks on the device, each with its multipliers (or None)."""
        device = self.stream.device
        for i, chunk in enumerate(self.stream):
            yield i, chunk, None if self.lam is None else self.lam[i].to(device)

    def split(self, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return U[:, : self.P], U[:, self.P:]

    def _shifted(self, U: torch.Tensor, chunk: dict[str, torch.Tensor], lam: torch.Tensor,
                 norms: torch.Tensor | None) -> torch.Tensor:
        """The chunk's ``s = (λ − ρ g_μ(U))_+``, (C, 2P, m), with the slack
        ``g_μ(U) = E ⊙ X̃U − ε N_μ(U)`` (``norms`` = the ε-free ``N_μ(U)``, (C, 2P)).

        One matrix product into a fresh buffer, then in-place passes over it: on CPUs the
        (C, 2P, n) tensor's memory traffic, not the product, sets the pace, and every temporary
        of that size costs a fresh allocation and a pass."""
        C, P2, db = U.shape
        s = torch.matmul(U.reshape(C * P2, db), chunk["Xb"].T).view(C, P2, -1)
        torch.addcmul(lam, s, chunk["E"], value=-self.rho, out=s)
        if norms is not None:
            s.add_((self.rho * self.eps) * norms.unsqueeze(-1))
        return s.clamp_(min=0)

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
                    total += _square_sum(self._shifted(U, chunk, lam, norms)) / (2 * self.rho)
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
                s = self._shifted(U, chunk, lam, norms)
                total += _square_sum(s) / (2 * self.rho)
                if norm_weights is not None:
                    norm_weights += self.eps * s.sum(dim=-1)
                s.mul_(chunk["E"])
                grad -= torch.matmul(s.view(-1, s.shape[-1]), chunk["Xb"]).view_as(grad)
        if norm_weights is not None:  # ε (Σ_k s_jk) ∇N_μ(u_j), linear in the weights
            with torch.enable_grad():
                Z = U.clone().requires_grad_(True)
                term = (norm_weights * self.program.dual_norm_torch(Z, self.mu)).sum()
                (g,) = torch.autograd.grad(term, Z)
            grad += g
        total, grad = self.comm.sum(total, grad)
        val = float(total) - (self.lam_sq / (2 * self.rho) if self.lam is not None else 0.0)
        return val, grad

    def dual_bound(self, U: torch.Tensor) -> float:
        """A certified lower bound on the program's optimum from ``U`` (at the current
        smoothing) and the current multipliers (:mod:`~convexrobust.solvers.relu_dual`),
        evaluated in float64 whatever the working dtype, chunk by chunk, summed over the
        ranks."""
        f64 = torch.float64
        U = U.detach().to(f64)
        G, cone = torch.zeros_like(U), torch.zeros_like(U)
        total = torch.zeros(U.shape[:2], dtype=f64, device=U.device)
        kept, domain = [], 0.0
        for _, chunk, lam in self._chunks():
            data = {k: v.to(f64) if v.is_floating_point() else v for k, v in chunk.items()}
            g, slopes = relu_dual.loss_minorant(self.program, U, self.mu, data)
            G += g
            if lam is not None:
                c, t = relu_dual.cone_terms(self.program, lam.to(f64), data)
                cone += c
                total += t
            domain = max(domain, relu_dual.domain_scale(self.program, slopes, data))
            # the conjugates need the slopes and, for pairwise margins, the labels' masks only
            kept.append((slopes, {key: data[key] for key in ("others",) if key in data}))
        G, cone, total = self.comm.sum(G, cone, total)
        (domain,) = self.comm.max_floats(domain)
        worst = float(relu_dual.residual_norms(self.program, G / self.n, cone, total).max())

        def conjugates(theta: float) -> float:
            mine = sum(relu_dual.conjugate_sum(self.program, slopes, data, theta)
                       for slopes, data in kept)
            return self.comm.sum_floats(mine)[0]

        return relu_dual.best_scaling(worst, self.program.beta, domain, self.n, conjugates)[1]

    def update_multipliers(self, U: torch.Tensor) -> float:
        """``λ ← (λ − ρ g_μ(U))_+``; returns the AL violation ``‖min(g, λ/ρ)‖_∞`` measured
        with the multipliers before the update (all samples, all ranks). With ``s`` the new
        multipliers, ``min(g, λ/ρ) = (λ − s)/ρ`` exactly (``s = λ − ρg`` where ``g ≤ λ/ρ``,
        else 0), so the violation needs no slack tensor of its own."""
        assert self.lam is not None
        violation = lam_sq = 0.0
        with torch.no_grad():
            norms = self._norms(U, self.mu)
            for i, chunk, lam in self._chunks():
                new = self._shifted(U, chunk, lam, norms)
                if new.numel():  # λ is replaced below, so λ − s may overwrite it
                    violation = max(violation,
                                    float(torch.linalg.vector_norm(lam.sub_(new), ord=math.inf))
                                    / self.rho)
                lam_sq += _square_sum(new)
                self.lam[i] = new.to(self.stream.state_device)
        (violation,) = self.comm.max_floats(violation)
        (self.lam_sq,) = self.comm.sum_floats(lam_sq)
        return violation


def _square_sum(t: torch.Tensor) -> float:
    """``Σ t²`` accurately in any dtype: row norms in the working dtype, their squares summed in
    float64 (a float32 reduction over 10⁸ entries in one go is off by up to 1 %)."""
    if not t.numel():
        return 0.0
    return float(torch.linalg.vector_norm(t.reshape(-1, t.shape[-1]), dim=-1)
                 .to(torch.float64).square().sum())


def _fista(al: _AugmentedLagrangian, U: torch.Tensor, beta: float, step: float, tol_abs: float,
           budget: Budget, free: torch.Tensor | None = None) -> tuple[torch.Tensor, float, float]:
    """Accelerated proximal gradient on ``Φ_k`` from ``U`` until the minimum-norm subgradient is
    at most ``tol_abs`` in every group (or the budget runs out). Returns ``U``, the last accepted
    step and the final stationarity (absolute, max over groups).

    ``free`` (d̃,) bool, when given, restricts the iterates to the coordinates it marks (the
    others stay 0): the gradient is projected onto that subspace, and so are the prox steps
    (the prox of the group norm plus the subspace's indicator is the soft-threshold of the
    projection)."""
    x = U
    y = U
    momentum = Momentum()
    stationarity = math.inf
    since_check = 0
    # the values carry round-off of a few ulps of the working dtype (float32 steps would
    # otherwise fail the backtracking test spuriously and collapse)
    slack = max(1e-12, 10 * float(torch.finfo(U.dtype).eps))

    def prox(v: torch.Tensor, step: float) -> torch.Tensor:
        return group_soft_threshold(v, step * beta)

    while budget.exhausted() is None:
        fy, gy = al.value_and_grad(y)
        if free is not None:
            gy = torch.where(free, gy, torch.zeros_like(gy))
        step *= STEP_GROWTH  # let the step follow the local curvature back up (see docstring)
        x_new, _, step = backtracking_step(y, fy, gy, step, prox, al.value_only,
                                           slack * max(1.0, abs(fy)))
        budget.tick()
        since_check += 1
        if since_check >= CHECK_EVERY or torch.equal(x_new, y):
            since_check = 0
            _, g_new = al.value_and_grad(x_new)
            if free is not None:
                g_new = torch.where(free, g_new, torch.zeros_like(g_new))
            stationarity = float(min_norm_subgradient(x_new, g_new, beta).max())
            if stationarity <= tol_abs:
                return x_new, step, stationarity
        y = momentum.extrapolate(x, x_new, gradient_restart(y, x_new, x))
        x = x_new
    return x, step, stationarity


#: The scalars of the augmented-Lagrangian state a ``warm_start`` carries.
_STATE_SCALARS = ("rho", "mu", "mu_min", "inner_tol", "step", "previous_violation", "outer",
                  "lam_sq")


def _check_warm_start(warm_start: object, U: torch.Tensor, n: int) -> dict[str, object]:
    """A ``warm_start`` (module docstring of :func:`solve_relu_torch`) as tensors and floats,
    or :class:`InvalidInputError` naming what does not fit this program."""
    if not isinstance(warm_start, Mapping) or not {"U", "multipliers",
                                                   *_STATE_SCALARS} <= set(warm_start):
        raise InvalidInputError(
            "warm_start for method='al' is the state a checkpoint handed out "
            "(state['options']['warm_start']: U, multipliers and "
            f"{', '.join(_STATE_SCALARS)}), got {type(warm_start).__name__}")
    kept: dict[str, object] = {}
    for key, shape in (("U", tuple(U.shape)), ("multipliers", (*U.shape[:2], n))):
        value = torch.tensor(np.array(warm_start[key], copy=True))  # the caller's stays as is
        if tuple(value.shape) != shape or not bool(torch.isfinite(value).all()):
            raise InvalidInputError(f"warm_start[{key!r}] must be finite of shape {shape} for "
                                    f"this program, got shape {tuple(value.shape)}")
        kept[key] = value
    if bool((kept["multipliers"] < 0).any()):  # type: ignore[operator]
        raise InvalidInputError("warm_start['multipliers'] must be >= 0")
    for key in _STATE_SCALARS:
        value = warm_start[key]
        positive = key in ("rho", "step", "inner_tol")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or (
                key != "previous_violation" and not math.isfinite(value)) or (
                positive and not value > 0) or value < 0:
            raise InvalidInputError(f"warm_start[{key!r}] must be a number"
                                    f"{' > 0' if positive else ' >= 0'}, got {value!r}")
        kept[key] = float(value)
    return kept


def _prepare_chunk(program: ConvexReLU, raw: dict[str, torch.Tensor], dtype: torch.dtype,
                   device: torch.device) -> dict[str, torch.Tensor]:
    """A chunk of :meth:`ConvexReLU.sample_arrays` as the renderings' tensors plus ``E``, the
    signs ``2D − 1`` of V's patterns then W's, (2P, m)."""
    data = program.tensors_of(raw, dtype, device)
    E = (2 * data["D"] - 1).T
    data["E"] = torch.cat([E, E], dim=0).contiguous()
    return data


@with_common_options
def solve_relu_torch(program: ConvexReLU, *, device: torch.device | str | None = None,
                     dtype: torch.dtype | str = "auto", tol: float = 1e-6,
                     max_iters: int = 20_000, time_limit: float | None = None, seed: int = 0,
                     progress: bool = False, accept_inaccurate: bool = False,
                     batch_size: int | str | None = "auto",
                     distributed: bool | str = False,
                     warm_start: Mapping[str, object] | None = None,
                     checkpoint: Callable[[dict[str, object]], None] | None = None,
                     checkpoint_every: float = 600.0) -> Solution:
    """Solve a :class:`ConvexReLU` program by augmented Lagrangian + FISTA (module docstring).

    ``tol`` (default 1e-6) is a **relative stationarity**: the solve stops when the minimum-norm
    subgradient of the augmented Lagrangian (the KKT dual residual), divided by the largest
    group gradient at ``U = 0``, is at most ``tol`` at the final smoothing and the AL violation
    is below its target (module docstring, "Stopping"). ``Solution.gap`` is that stationarity
    (``gap_kind = "relative_stationarity"``). Certificate: for the hinge and logistic losses
    ``info["dual_bound"]`` is a lower bound on the optimum built from the last iterate, its
    loss slopes at the final smoothing and the multipliers (:mod:`~convexrobust.solvers.relu_dual`),
    and ``info["duality_gap"]`` the relative gap of the returned objective to it — an upper
    bound on the returned point's relative distance to the optimum; the stopping rule stays the
    stationarity. ``dtype="auto"`` (default) iterates in float32 on
    large programs when ``tol`` is at least float32's floor, else in float64
    (:func:`~convexrobust.solvers.first_order.auto_dtype`; ``info["dtype"]`` says which). The
    final smoothing parameter is
    :data:`MU_MIN_FACTOR`·``tol`` times the zero network's loss. Besides the budget statuses,
    ``"repair_degraded"`` and ``"smoothing_inexact"`` (module docstring) are failures unless
    ``accept_inaccurate``.

    Parameters
    ----------
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
    checkpoint, checkpoint_every:
        ``checkpoint(state)`` is called at the end of an outer iteration at most every
        ``checkpoint_every`` seconds (600 by default; ``math.inf``: never on a clock) and when
        the budget stops the solve: ``state["options"]`` (``method="al"`` and a ``warm_start``
        holding the whole augmented-Lagrangian state: ``U``, the multipliers, ρ, μ, the
        subproblem tolerance and step) continue the solve from there
        (:class:`~convexrobust.solvers.first_order.Checkpoints`; not with ``distributed``).
        The iterations are the same with or without it.
    warm_start:
        A ``state["options"]["warm_start"]`` handed to ``checkpoint`` by a solve of this
        program with the same options: the solve continues from that state — from a
        checkpoint, exactly as the uninterrupted solve would have gone on (up to the
        iteration budget, which starts afresh). Only with one process.
    """
    if not isinstance(program, ConvexReLU):
        raise InvalidInputError(f"solve_relu_torch takes a ConvexReLU, got {type(program)}")
    if dtype == "auto":
        check_first_order_options(tol, max_iters, time_limit, seed, torch.float64)
        # the (C, 2P, n) slacks and multipliers
        dtype = auto_dtype(program.n_samples * program.n_outputs * program.n_patterns, tol)
    check_first_order_options(tol, max_iters, time_limit, seed, dtype)
    check_batch_size(batch_size)
    loss = get_loss(program.loss)
    start = time.perf_counter()
    device = check_device(device)
    torch.manual_seed(int(seed))
    comm = Collective(distributed, device)

    C, P, db = program.n_outputs, program.n_patterns, program.Xb.shape[1]
    n = program.n_samples
    beta = program.beta
    eps, _ = program.radius_and_dual_exponent()
    comm.check_same_program(beta, eps, C, arrays=tuple(program.sample_arrays().values()))
    item = torch.finfo(dtype).bits // 8
    stream = SampleStream(
        program.sample_arrays(), batch_size=batch_size, device=device, dtype=dtype,
        collective=comm, prepare=lambda raw: _prepare_chunk(program, raw, dtype, device),
        bytes_per_sample=item * (db + 3 * P + 2 * C + 10 * C * 2 * P + 4 * C * db))
    free = _slope_free_coordinates(program, device)
    smooth_needed = (eps > 0 and free is None) or not loss.smooth
    tiny = float(torch.finfo(dtype).eps)

    al = _AugmentedLagrangian(program, stream, comm)
    al.mu = MU_START if smooth_needed else 0.0
    U = torch.zeros((C, 2 * P, db), dtype=dtype, device=device)
    _, g0 = al.value_and_grad(U)
    if free is not None:
        g0 = torch.where(free, g0, torch.zeros_like(g0))
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
    budget = Budget(max_iters, time_limit, progress, desc="torch relu", comm=comm)
    previous_violation = math.inf
    trial: Repaired | None = None
    stationarity = violation = math.inf
    outer = 0
    status = "optimal"
    checkpoints = Checkpoints(checkpoint, checkpoint_every, comm)
    if warm_start is not None:
        if comm.world > 1:
            raise InvalidInputError("warm_start holds one process's state: not with "
                                    "distributed=True")
        kept = _check_warm_start(warm_start, U, n)
        U = kept["U"].to(dtype=dtype, device=device)
        al.set_multipliers(kept["multipliers"].to(dtype), kept["lam_sq"])
        al.rho, al.mu = kept["rho"], kept["mu"]
        mu_min, inner_tol, step = kept["mu_min"], kept["inner_tol"], kept["step"]
        previous_violation, outer = kept["previous_violation"], int(kept["outer"])

    def next_parameters(violation: float) -> tuple[float, float, float, float]:
        """ρ, the step, μ and the subproblem tolerance of the next outer iteration."""
        rho, next_step, mu = al.rho, step, al.mu
        if violation > VIOLATION_DECAY * previous_violation:
            rho *= RHO_GROWTH
            next_step /= RHO_GROWTH  # the penalty's curvature grew by this factor
        if smooth_needed:
            mu = max(mu * MU_DECAY, mu_min)
        # once stationary to tol, keep tightening the subproblems while the violation is
        # still above its target: inexact subproblems stall the multipliers
        floor = tol if violation <= viol_tol else INNER_TOL_FLOOR * tol
        return rho, next_step, mu, max(inner_tol * 0.2, floor)

    def snapshot(lam: torch.Tensor, lam_sq: float, rho: float, mu: float, tol_inner: float,
                 at_step: float, violation: float, done: int) -> dict[str, object]:
        """The state in which the next outer iteration (``done + 1``) starts."""
        scalars = {"rho": rho, "mu": mu, "mu_min": mu_min, "inner_tol": tol_inner,
                   "step": at_step, "previous_violation": violation, "outer": done,
                   "lam_sq": lam_sq}
        return {"options": {"method": "al", "warm_start": {
                    "U": U.cpu().numpy(), "multipliers": lam.numpy(),
                    **{k: float(v) for k, v in scalars.items()}}},
                "iterations": budget.iterations, "smoothing": mu,
                "stationarity": stationarity, "al_violation": violation}

    def state() -> dict[str, object]:
        return snapshot(al.multipliers(), al.lam_sq, al.rho, al.mu, inner_tol, step,
                        previous_violation, outer)

    unfinished: tuple[torch.Tensor, float] | None = None  # λ, Σλ² before a cut subproblem
    try:
        while True:
            outer += 1
            U, step, stat_abs = _fista(al, U, beta, step, inner_tol * grad_scale, budget, free)
            stationarity = stat_abs / grad_scale
            if stat_abs > inner_tol * grad_scale and checkpoints.save is not None:
                # the budget cut this subproblem short: a continuation re-enters it with
                # the multipliers it started from
                unfinished = (al.multipliers(), al.lam_sq)
            # absolute AL violation in the units of u (slack / data scale); not divided by the
            # largest group norm, which would hide violations that the repair then pays for
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
                if error > tol * max(1.0, abs(smoothed + beta * float(group_norms(U).sum()))):
                    mu_min = max(mu_min * MU_DECAY, mu_floor)
                    log.debug("outer %d: smoothing error %.2e above tol; mu_min -> %.2g",
                              outer, error, mu_min)
            converged = (al.mu <= mu_min and stationarity <= tol and violation <= viol_tol)
            if not converged and al.mu <= mu_min and stationarity <= tol and violation <= tol:
                # the cheap certificate: already feasible enough if the exact repair costs at
                # most tol of the objective
                trial = repaired(program, U, data_scale)
                converged = trial.cost <= tol * max(abs(trial.objective_before), f0 * 1e-3)
                log.debug("outer %d: trial repair cost %.2e", outer, trial.cost)
            if converged:
                break
            reason = budget.exhausted()
            if reason is not None:
                status = reason
                break
            al.rho, step, al.mu, inner_tol = next_parameters(violation)
            previous_violation = violation
            checkpoints.offer(state)
    finally:
        budget.close()
    if status in ("max_iters", "time_limit"):
        # the state the next outer iteration would have started from, or, when the budget
        # cut the last subproblem short, the state that subproblem started from (its iterate)
        if unfinished is not None:
            checkpoints.final(lambda: snapshot(*unfinished, al.rho, al.mu, inner_tol, step,
                                               previous_violation, outer - 1))
        else:
            rho, next_step, mu, next_tol = next_parameters(violation)
            checkpoints.final(lambda: snapshot(al.multipliers(), al.lam_sq, rho, mu, next_tol,
                                               next_step, violation, outer))

    U = comm.broadcast(U)  # every rank returns rank 0's point (they agree; this makes it exact)
    if trial is None or not torch.equal(trial.U, U):
        trial = repaired(program, U, data_scale)
    # what the solver optimised (smoothed data term + β-term) against the true objective at the
    # returned point before repair: the smoothing error F − F_μ, measured rather than bounded
    believed = al.data_value(U) + beta * float(group_norms(U).sum())
    bound = al.dual_bound(U) if relu_dual.certifiable(program) else None
    smoothing_error = trial.objective_before - believed
    wall = time.perf_counter() - start
    if status == "optimal" and trial.degraded(tol):
        status = "repair_degraded"
    if status == "optimal" and abs(smoothing_error) > 10 * max(tol, 1e-9) * max(
            1.0, abs(trial.objective_before)):
        # what the solver minimised is not the objective to within the tolerance
        status = "smoothing_inexact"
    info: dict[str, object] = {
        "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "stationarity": stationarity, "al_violation": violation,
        "violation_before_repair": trial.violation_before,
        "objective_before_repair": trial.objective_before,
        "repaired_groups_moved": trial.moved, "repaired_groups_zeroed": trial.zeroed,
        "repaired_groups_rehomed": trial.rehomed,
        "repaired_groups_projected": trial.projected, "repair_projections": trial.projections,
        "outer_iterations": outer, "rho": al.rho, "smoothing": al.mu,
        "smoothing_error": smoothing_error, "slope_free": free is not None,
        "batch_size": stream.batch_size, "chunks": len(stream), "world_size": comm.world,
    }
    if bound is not None:
        info["dual_bound"] = bound
        info["duality_gap"] = (max(trial.objective_after - bound, 0.0)
                               / max(abs(trial.objective_after), 1e-300))
    return finish(
        program, {"V": trial.V, "W": trial.W}, status, accept_inaccurate=accept_inaccurate,
        failure=(f"torch stopped with status {status!r} after {budget.iterations} iterations "
                 f"(stationarity {stationarity:.2e}, violation {violation:.2e}, tol {tol:g}). "
                 "Raise max_iters / time_limit, tighten tol (repair_degraded: the constraints "
                 "were not met closely enough; smoothing_inexact: the smoothed objective differs "
                 "from the true one by more than the tolerance)"),
        wall_time=wall, iterations=budget.iterations, solver_objective=trial.objective_before,
        gap=stationarity, gap_kind="relative_stationarity", info=info)


def _slope_free_coordinates(program: ConvexReLU, device: torch.device) -> torch.Tensor | None:
    """The coordinates a solution needs when the slopes vanish at the optimum
    (:meth:`ConvexReLU.slopes_vanish`: the radius is at least every sample's norm), else None.
    The solver then iterates on the bias coordinate only (the returned mask, (d̃,) bool), where
    the slacks and the losses are those of the program exactly and the ε-terms vanish;
    otherwise the slacks ``E X̃u − ε‖u‖_q`` at such radii are too badly scaled for the penalty
    to converge. Without a bias column the mask is all False: the zero network is optimal."""
    if not program.slopes_vanish():
        return None
    free = torch.zeros(program.Xb.shape[1], dtype=torch.bool, device=device)
    if program.bias:
        free[-1] = True
    return free
