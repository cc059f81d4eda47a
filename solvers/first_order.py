"""What every torch solver of :mod:`convexrobust.solvers` shares (the analogue of torch.optim's
``optimizer.py``): option validation, the iteration / time budget with its progress bar, the
group-lasso proximal pieces, the accelerated proximal gradient iteration (its backtracking step,
momentum and restart rules), and the ending that turns a status into a
:class:`~convexrobust.solvers.solution.Solution` or a
:class:`~convexrobust.errors.SolverFailedError`.

The meaning of ``tol`` differs by method, and each solver's docstring states it:

* ADMM, polynomial programs (``polynomial_admm``), and L-BFGS on their neuron factorisation
  (``polynomial_factored``): a **certified relative duality gap** — an upper bound on the
  relative distance of the returned objective to the optimum, from a dual feasible point;
* ADMM, ReLU programs (``relu_admm``): a **relative residual** — OSQP's scaled primal and dual
  residuals of the splitting; its ``Solution.gap`` is nevertheless a certified duality gap of
  the repaired point;
* augmented Lagrangian (``relu_first_order``) and accelerated projected gradient
  (``polynomial_first_order``): a **relative stationarity** — the norm of a first-order
  optimality residual (the minimum-norm subgradient, the gradient mapping) relative to the
  gradient's scale. It certifies nothing about the objective: with a small β, a point can be
  stationary to ``tol`` and still be well above the optimum.

:attr:`Solution.gap_kind` names what ``Solution.gap`` is: ``"certified_gap"``
or ``"relative_stationarity"`` (:data:`GAP_KINDS`); a method that stops on residuals reports
its certified gap and the residuals in ``info``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from convexrobust.errors import InvalidInputError, SolverFailedError
from convexrobust.solvers.data_parallel import Collective
from convexrobust.solvers.solution import Solution

if TYPE_CHECKING:
    from convexrobust.problems.base import ConvexProgram

__all__ = [
    "COMMON_OPTIONS_DOC",
    "GAP_KINDS",
    "Budget",
    "Checkpoints",
    "Momentum",
    "auto_dtype",
    "block_sums",
    "blockwise_backtracking_step",
    "per_block",
    "backtracking_step",
    "check_first_order_options",
    "finish",
    "fista_momentum",
    "gradient_restart",
    "group_norms",
    "group_soft_threshold",
    "min_norm_subgradient",
    "single_threaded_if_small",
    "with_common_options",
]

#: A CPU solve whose per-sample work tensors hold fewer numbers than this (samples × outputs ×
#: features) runs on one intra-op thread (:func:`single_threaded_if_small`): torch's grain size,
#: below which it runs an elementwise operation on one thread anyway.
SMALL_WORK_ELEMENTS = 1 << 15

#: ``dtype="auto"`` iterates in float32 from this many numbers in a solver's per-sample work
#: tensors on (:func:`auto_dtype`).
FLOAT32_MIN_ELEMENTS = 1 << 20

#: The values of :attr:`Solution.gap_kind` (module docstring).
GAP_KINDS = ("certified_gap", "relative_stationarity")

#: The options every torch solver takes, documented once; each solver's docstring ends with it.
COMMON_OPTIONS_DOC = """
    Common options (every torch solver)
    -----------------------------------
    device, dtype:
        Where and in which precision to iterate: any torch device this build has (a name or a
        ``torch.device``; an unusable one raises :class:`InvalidInputError`) and a floating
        dtype. The returned values are float64 numpy, judged by the program on the host.
    tol:
        The method's stopping tolerance in ``(0, 1)``; what it measures is stated above
        (and ``Solution.gap_kind`` names what ``Solution.gap`` is).
    max_iters, time_limit:
        Budget of iterations (an integer ≥ 1, all stages together) and wall-clock seconds
        (None: no limit), checked between iterations; the final float64 repair and any
        certificate of the returned point come after it (``Solution.wall_time`` counts them).
        When exhausted the solve raises :class:`SolverFailedError` with status
        ``"max_iters"`` / ``"time_limit"``.
    seed:
        An integer; seeds torch's generator for the solve. Every method but ``"factored"``
        starts at zero and takes no random step; ``"factored"`` starts at a point drawn from
        this seed. Either way the result is a deterministic function of the program and
        options.
    progress:
        Show a tqdm bar (on rank 0 only when distributed).
    accept_inaccurate:
        Return the point with its non-optimal status instead of raising
        :class:`SolverFailedError` (the returned values are repaired and judged as always).
"""


def with_common_options(solver: Callable[..., Solution]) -> Callable[..., Solution]:
    """Decorator: append :data:`COMMON_OPTIONS_DOC` to a solver's docstring."""
    if solver.__doc__:
        solver.__doc__ += COMMON_OPTIONS_DOC
    return solver


@contextmanager
def single_threaded_if_small(elements: int, device: torch.device) -> Iterator[None]:
    """Run the enclosed CPU solve on one intra-op thread when its per-sample work tensors hold
    fewer than :data:`SMALL_WORK_ELEMENTS` numbers, and restore the thread count afterwards (as
    scikit-learn limits its thread pools for small data). Such a solve is a long sequence of
    small operations, and its elementwise ones run on one thread anyway: splitting the others
    (the small eigendecompositions and batched products) between threads costs more in
    synchronisation than it saves."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or elements >= SMALL_WORK_ELEMENTS or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def auto_dtype(elements: int, tol: float) -> torch.dtype:
    """The precision of ``dtype="auto"``: float32 for a large program (per-sample work tensors
    of at least :data:`FLOAT32_MIN_ELEMENTS` numbers, whose elementwise passes dominate an
    iteration and move half the memory in float32) when ``tol`` is at or above float32's floor
    ``√eps₃₂ ≈ 3.5e-4``; float64 otherwise (a small program's iterations cost their dispatches,
    and a tighter ``tol`` needs float64's round-off). The returned point is repaired and judged
    in float64 either way."""
    floor = math.sqrt(torch.finfo(torch.float32).eps)
    return torch.float32 if elements >= FLOAT32_MIN_ELEMENTS and tol >= floor else torch.float64


def check_first_order_options(tol: object, max_iters: object, time_limit: object, seed: object,
                              dtype: object) -> None:
    """Raise :class:`InvalidInputError` unless ``0 < tol < 1``, ``max_iters`` is an integer
    ≥ 1, ``time_limit`` is None or > 0, ``seed`` is an integer and ``dtype`` a floating dtype."""
    if (isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol)
            or not 0 < tol < 1):
        raise InvalidInputError(f"tol must be a number in (0, 1), got {tol!r}")
    if isinstance(max_iters, bool) or not isinstance(max_iters, (int, np.integer)) \
            or max_iters < 1:
        raise InvalidInputError(f"max_iters must be an integer >= 1, got {max_iters!r}")
    if time_limit is not None and (isinstance(time_limit, bool)
                                   or not isinstance(time_limit, (int, float))
                                   or not time_limit > 0):
        raise InvalidInputError(f"time_limit must be None or a number > 0, got {time_limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidInputError(f"seed must be an integer, got {seed!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidInputError(f"dtype must be a torch floating dtype, got {dtype!r}")


class Budget:
    """The iteration and wall-clock budget of one solve, and its progress bar.

    ``exhausted()`` is the budget's status (``"max_iters"``, ``"time_limit"``) or None;
    ``tick()`` counts one iteration. With a :class:`Collective` over several ranks the time
    limit is agreed on (any rank out of time stops all of them), so every rank takes the same
    decision; the bar shows on rank 0 only. ``start`` (a ``time.perf_counter()`` value, default
    now) is when the time limit began to run.
    """

    def __init__(self, max_iters: int, time_limit: float | None, progress: bool, *,
                 desc: str, comm: Collective | None = None, start: float | None = None):
        self.max_iters = int(max_iters)
        start = time.perf_counter() if start is None else start
        self.deadline = None if time_limit is None else start + time_limit
        self.iterations = 0
        self.comm = comm
        root = comm is None or comm.is_root
        self.bar = tqdm(total=self.max_iters, disable=not (progress and root), desc=desc,
                        leave=False)

    def out_of_time(self) -> bool:
        if self.deadline is None:
            return False
        late = time.perf_counter() > self.deadline
        return self.comm.any(late) if self.comm is not None else late

    def exhausted(self) -> str | None:
        if self.iterations >= self.max_iters:
            return "max_iters"
        if self.out_of_time():
            return "time_limit"
        return None

    def tick(self) -> None:
        self.iterations += 1
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class Checkpoints:
    """Hands a solve's state to ``save`` at most every ``every`` seconds (``math.inf``: never
    on a clock) and once more when its budget stops it (:meth:`final`), so that a caller can
    keep it and continue the solve from there (a method's ``checkpoint`` and
    ``checkpoint_every`` options; :mod:`convexrobust.kept_solve`). A state is a dict whose
    ``"options"`` are the torch options that continue the solve from it (``method``,
    ``warm_start`` and the method's own), with ``"iterations"``, ``"smoothing"`` and the
    method's measures of progress (its smoothed ``"objective"``, its ``"stationarity"``, its
    ``"certified_gap"`` or ``"al_violation"``, where it has them). The solve
    itself is not changed: ``save`` only reads the state the method builds when one is due.
    ``save=None`` does nothing, and so does a data-parallel solve (``comm`` over several ranks,
    each of which holds a shard of the per-sample state)."""

    def __init__(self, save: object, every: object, comm: Collective | None = None):
        if save is not None and not callable(save):
            raise InvalidInputError(f"checkpoint must be a function of the state or None, got "
                                    f"{save!r}")
        if isinstance(every, bool) or not isinstance(every, (int, float)) or not every > 0:
            raise InvalidInputError(f"checkpoint_every must be seconds > 0, got {every!r}")
        # data-parallel ranks each hold a shard of the per-sample state: no checkpoints there
        self.save = save if comm is None or comm.world == 1 else None
        self.every = float(every)
        self.last = time.perf_counter()

    def offer(self, state: Callable[[], dict[str, object]]) -> None:
        """Call ``save(state())`` if ``every`` seconds have passed since the last one."""
        if self.save is not None and time.perf_counter() - self.last >= self.every:
            self.final(state)

    def final(self, state: Callable[[], dict[str, object]]) -> None:
        """Call ``save(state())`` now."""
        if self.save is not None:
            self.save(state())
            self.last = time.perf_counter()


def finish(program: ConvexProgram, values: dict[str, np.ndarray], status: str, *,
           accept_inaccurate: bool, failure: str, wall_time: float, iterations: int,
           solver_objective: float | None, gap: float | None, gap_kind: str,
           info: dict[str, object]) -> Solution:
    """The common ending of every torch solver: a non-optimal ``status`` raises
    :class:`SolverFailedError` (solver ``"torch"``) whose message is ``failure`` followed by the
    advice to pass ``accept_inaccurate=True``, unless the caller accepted it; otherwise the
    :class:`Solution` of ``values`` (which the program judges) — and a point the program judges
    non-finite raises ``"numerical_error"`` whatever the caller accepted."""
    if gap_kind not in GAP_KINDS:
        raise ValueError(f"unknown gap kind {gap_kind!r}")
    if status != "optimal" and not accept_inaccurate:
        raise SolverFailedError(
            f"{failure}; or pass accept_inaccurate=True to get the point anyway",
            status=status, solver="torch")
    solution = Solution(program=program, values=values, status=status, solver="torch",
                        wall_time=wall_time, iterations=iterations,
                        solver_objective=solver_objective, gap=gap, gap_kind=gap_kind, info=info)
    if not (math.isfinite(solution.objective) and math.isfinite(solution.violation)):
        # never a point that cannot be judged, not even with accept_inaccurate
        raise SolverFailedError(
            f"torch returned a non-finite point on {program.describe()} (status {status!r}). "
            "Try dtype=torch.float64 or rescale the data", status="numerical_error",
            solver="torch")
    return solution


# ----------------------------------------------------------------------------------------
# group lasso: prox and stationarity
# ----------------------------------------------------------------------------------------
def group_norms(U: torch.Tensor) -> torch.Tensor:
    """Euclidean norms of the groups (the last axis), keeping that axis."""
    return torch.linalg.vector_norm(U, dim=-1, keepdim=True)


def group_soft_threshold(U: torch.Tensor, threshold: float | torch.Tensor,
                         floor: float = 1e-300) -> torch.Tensor:
    """The prox of ``threshold·Σ_g ‖u_g‖₂`` (groups along the last axis): block
    soft-thresholding ``u ← u·(1 − threshold/‖u‖)_+``; ``threshold`` is a number or a tensor
    that broadcasts against the group norms (``U``'s shape with a last axis of 1); ``floor``
    bounds the norm away from 0 in the division (a zero group stays zero)."""
    return U * torch.clamp(1 - threshold / group_norms(U).clamp_min(floor), min=0)


def min_norm_subgradient(U: torch.Tensor, grad: torch.Tensor, beta: float) -> torch.Tensor:
    """Per group, the norm of the minimum-norm element of ``grad + β∂‖u‖₂``:
    ``‖grad + βu/‖u‖‖`` where ``u ≠ 0`` and ``(‖grad‖ − β)_+`` where ``u = 0``."""
    norms = group_norms(U)
    nonzero = norms > 0
    at_nonzero = torch.linalg.vector_norm(grad + beta * U / norms.clamp_min(1e-300), dim=-1)
    at_zero = torch.clamp(torch.linalg.vector_norm(grad, dim=-1) - beta, min=0)
    return torch.where(nonzero.squeeze(-1), at_nonzero, at_zero)


# ----------------------------------------------------------------------------------------
# progress of a smoothing stage
# ----------------------------------------------------------------------------------------
def relative_decrease(history: list[float], window: int, floor: float = 1.0) -> float:
    """The decrease of the objective over the last ``window`` iterations of ``history``,
    relative to ``max(floor, |F|)``: inf before there are that many; with ``floor = 0``
    relative to ``|F|``, and at ``F = 0`` inf for a positive decrease, else the decrease.
    Smoothing methods end a stage of width ``μ`` once it falls to a small multiple of ``μ``:
    the next stage moves the objective by up to ``μ/2`` per loss term, so solving a stage
    further gains nothing."""
    if len(history) <= window:
        return math.inf
    decrease = history[-window - 1] - history[-1]
    scale = max(floor, abs(history[-1]))
    if scale > 0:
        return decrease / scale
    return math.inf if decrease > 0 else decrease


# ----------------------------------------------------------------------------------------
# accelerated gradient: momentum and restart
# ----------------------------------------------------------------------------------------
def fista_momentum(t: float | torch.Tensor, ratio: float | torch.Tensor = 1.0
                   ) -> float | torch.Tensor:
    """The next FISTA momentum parameter ``(1 + √(1 + 4·ratio·t²))/2`` (Beck & Teboulle 2009;
    ``ratio = L/L_prev`` when the Lipschitz estimate varies, Scheinberg, Goldfarb & Bai,
    Found. Comput. Math. 2014)."""
    return 0.5 * (1.0 + (1.0 + 4.0 * ratio * t * t) ** 0.5)


def gradient_restart(y: torch.Tensor, x_new: torch.Tensor, x: torch.Tensor,
                     block_dim: int | None = None) -> bool | torch.Tensor:
    """Gradient-based adaptive restart (O'Donoghue & Candès, Found. Comput. Math. 2015): the
    momentum points uphill when ``⟨y − x⁺, x⁺ − x⟩ > 0`` (per block (B,) with ``block_dim``)."""
    product = (y - x_new) * (x_new - x)
    if block_dim is None:
        return float(product.sum()) > 0
    return block_sums(product, block_dim).cpu() > 0


# ----------------------------------------------------------------------------------------
# the accelerated proximal gradient iteration (FISTA), shared by the AL and the APG solvers
# ----------------------------------------------------------------------------------------
def backtracking_step(y: torch.Tensor, fy: float, gy: torch.Tensor, step: float,
                      prox: Callable[[torch.Tensor, float], torch.Tensor],
                      value: Callable[[torch.Tensor], float], slack: float
                      ) -> tuple[torch.Tensor, float, float]:
    """One proximal-gradient step from ``y`` with backtracking (Beck & Teboulle, SIAM J.
    Imaging Sci. 2009): ``x⁺ = prox(y − step·∇f(y), step)``, halving ``step`` until the
    quadratic model holds, ``f(x⁺) ≤ f(y) + ⟨∇f(y), x⁺ − y⟩ + ‖x⁺ − y‖²/(2·step) + slack``
    (``slack`` absorbs the round-off of the values; a non-finite value or a step below 1e-20
    also stops the search). Returns ``(x⁺, f(x⁺), step)``."""
    while True:
        x_new = prox(y - step * gy, step)
        d = x_new - y
        f_new = value(x_new)
        model = fy + float((gy * d).sum()) + float(d.square().sum()) / (2 * step)
        if f_new <= model + slack or not math.isfinite(f_new) or step < 1e-20:
            return x_new, f_new, step
        step *= 0.5


def block_sums(t: torch.Tensor, block_dim: int) -> torch.Tensor:
    """``Σ`` of ``t`` over every dimension but ``block_dim``: one number per block (B,)."""
    return t.transpose(0, block_dim).reshape(t.shape[block_dim], -1).sum(1)


def per_block(v: torch.Tensor, like: torch.Tensor, block_dim: int) -> torch.Tensor:
    """The per-block numbers ``v`` (B,) shaped to broadcast against ``like`` along
    ``block_dim`` (in ``like``'s dtype and device)."""
    shape = [1] * like.dim()
    shape[block_dim] = -1
    return v.to(dtype=like.dtype, device=like.device).view(shape)


def blockwise_backtracking_step(y: torch.Tensor, fy: torch.Tensor, gy: torch.Tensor,
                                step: torch.Tensor,
                                prox: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
                                value: Callable[[torch.Tensor, torch.Tensor | None],
                                                torch.Tensor],
                                slack: torch.Tensor, block_dim: int
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`backtracking_step` for a separable objective ``f = Σ_b f_b(x_b)`` whose blocks
    ``x_b`` are the slices of ``y`` along ``block_dim`` and whose constraint set is a product
    over the blocks (e.g. the C one-vs-all programs of a polynomial head): every block has its
    own step ``step_b`` (B,), halved until its own quadratic model holds,
    ``f_b(x⁺_b) ≤ f_b(y_b) + ⟨∇f_b, x⁺_b − y_b⟩ + ‖x⁺_b − y_b‖²/(2·step_b) + slack_b``.
    ``prox(v, blocks)`` and ``value(x, blocks)`` take the slices ``blocks`` (indices along
    ``block_dim``, or None: all) of a point and return their projection and their block
    values; a backtrack projects and evaluates only the blocks whose model failed (one
    evaluation however many it halves, of those blocks alone), and a block whose model holds
    keeps its point. Returns ``(x⁺, f(x⁺) (B,), step (B,))``. A step that does not fit one
    block no longer shrinks the others' (a single step must fit the stiffest block)."""
    step = step.clone()
    x_new = prox(y - per_block(step, y, block_dim) * gy, None)
    f_new = value(x_new, None)
    while True:
        d = x_new - y
        model = fy + block_sums(gy * d, block_dim) + block_sums(d.square(), block_dim) / (
            2 * step)
        ok = (f_new <= model + slack) | ~torch.isfinite(f_new) | (step < 1e-20)
        if bool(ok.all()):
            return x_new, f_new, step
        step = torch.where(ok, step, 0.5 * step)
        failed = (~ok).nonzero().squeeze(-1)
        y_b = y.index_select(block_dim, failed)
        x_b = prox(y_b - per_block(step[failed], y_b, block_dim)
                   * gy.index_select(block_dim, failed), failed)
        x_new = x_new.index_copy(block_dim, failed, x_b)
        f_new = f_new.index_copy(0, failed, value(x_b, failed))


class Momentum:
    """FISTA's extrapolation with adaptive restart: after the step from ``y`` to ``x⁺``, the
    next point is ``x⁺ + ((t − 1)/t⁺)(x⁺ − x)`` with ``t⁺`` from :func:`fista_momentum`
    (``ratio = step_prev/step`` when the step varies); on a restart ``t`` is first reset to 1,
    so that point is ``x⁺`` itself.

    With ``block_dim``, every block (slice of the iterate along that dimension, as in
    :func:`blockwise_backtracking_step`) has its own ``t``: ``restart`` and ``ratio`` are then
    per block (B,) and only the blocks that restart lose their momentum."""

    def __init__(self, block_dim: int | None = None) -> None:
        self.block_dim = block_dim
        self.t: float | torch.Tensor = 1.0
        self.restarts = 0

    def extrapolate(self, x: torch.Tensor, x_new: torch.Tensor, restart: bool | torch.Tensor,
                    ratio: float | torch.Tensor = 1.0) -> torch.Tensor:
        if self.block_dim is None:
            if restart:
                self.t = 1.0
                self.restarts += 1
            t_next = fista_momentum(self.t, ratio)
            y = x_new + ((self.t - 1.0) / t_next) * (x_new - x)
            self.t = t_next
            return y
        restart = torch.as_tensor(restart, dtype=torch.bool)
        t = torch.where(restart, 1.0, torch.as_tensor(self.t, dtype=torch.float64))
        self.restarts += int(restart.sum())
        t_next = fista_momentum(t, torch.as_tensor(ratio))
        y = x_new + per_block((t - 1.0) / t_next, x_new, self.block_dim) * (x_new - x)
        self.t = t_next
        return y

    def reset(self) -> None:
        """Start again without momentum (e.g. when the objective changes)."""
        self.t = 1.0
