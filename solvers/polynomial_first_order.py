r"""First-order PyTorch solver for the polynomial-activation SDPs (programs c and d): the
program over ``K^{2C}``, ``K = {Z ⪰ 0 : tr(Z1) − z4 = 0}``, and its smoothed objective with
exact ℓ2 worst cases are those of :mod:`~convexrobust.solvers.polynomial_objective` (Bartan &
Pilanci, arXiv 2101.02429; Kuelbs, Lall & Pilanci, arXiv 2405.14033).

Algorithm: accelerated projected gradient (FISTA, Beck & Teboulle, SIAM J. Imaging Sci. 2009)
with backtracking that may also decrease the step's Lipschitz estimate (Scheinberg, Goldfarb &
Bai, Found. Comput. Math. 2014) and gradient-based adaptive restart (O'Donoghue & Candès,
Found. Comput. Math. 2015), restarting also when the objective rises; the iteration is the
shared one of :mod:`~convexrobust.solvers.first_order` (``blockwise_backtracking_step``,
``Momentum``), per output (below).

* **Outputs.** The program is a sum of C independent programs, one per output (its
  ``(Z_c, Z'_c)``, its loss column, its share of the penalty; the one-vs-all hinge separates
  this way), and the iteration runs them as one batched tensor program in which every output
  keeps its own step (backtracking halves, projects again and evaluates again only the outputs
  whose own quadratic model fails,
  :func:`~convexrobust.solvers.first_order.blockwise_backtracking_step`), its own momentum and
  its own restarts. One step for all would have to fit the stiffest output (the outputs'
  Lipschitz estimates differ by 20× on CIFAR-10 features), and one output's restart would
  reset every other's momentum. The smoothing stages and the stopping rule stay joint (on the
  summed objective and the full gradient mapping).
* **Exact projection onto K.** ``Π_K(Y) = Π_PSD(Y − μG)`` where the scalar ``μ`` solves
  ``φ(μ) = ⟨G, Π_PSD(Y − μG)⟩ = 0`` (KKT of ``min ‖Z − Y‖²`` s.t. ``Z ⪰ 0, ⟨G, Z⟩ = 0``).
  ``φ`` is non-increasing; it is solved by safeguarded Newton steps (the derivative of the PSD
  projection in the eigenbasis: ``φ'(μ) = −Σ_ij Γ_ij (QᵀGQ)_ij²``, ``Γ_ij`` the divided
  differences of ``max(λ, 0)``) inside a bisection bracket, warm-started at the previous ``μ``;
  one batched ``eigh`` of the 2C matrices per Newton step, typically 2–4 steps.
* **The objective** (:func:`~convexrobust.solvers.polynomial_objective.objective`): the
  smoothed loss of the exact worst cases by batched trust-region subproblems in the
  eigenbasis of ``a Z̃1_c``, with screening of the rows whose hinge is certified zero, and its
  Danskin gradient ``Σ_k w_k A(x_k + δ*_k)``.
* **Smoothing with continuation.** The objective's smoothing width ``μ_s`` (of the hinge,
  and of the max in the robust squared loss) shrinks by 10× per stage down to
  ``smoothing_floor`` (Nesterov, Math. Program. 2005); every stage is a smooth convex problem
  where FISTA converges at rate O(1/k²). The logistic loss and the nominal squared loss are
  smooth and run one stage. A stage before the final one ends at relative stationarity
  ``max(tol, STAGE_STATIONARITY·μ_s)``, or as soon as its objective decreased by at most
  ``STAGE_PROGRESS·μ_s·|F|`` over its last :data:`STAGE_WINDOW` iterations
  (:func:`~convexrobust.solvers.first_order.relative_decrease`, the factored method's rule,
  which measures relative to ``max(1, |F|)``; relative to ``|F|`` here, because a small
  objective such as a well-separated binary program's moves little per iteration long before
  its stage is solved): the next stage moves every loss term by up to ``μ_s/2``, so a stage
  solved beyond that resolution is time lost. Robust programs need the second rule: their
  stationarity often stays far above ``STAGE_STATIONARITY·μ_s`` while the objective has
  settled (the worst-case margins are nearly non-differentiable, "Plateaus" below), and a
  coarse stage that waited for it took the whole budget (benchmarks/targets.py, cifar-scale).
  The first stage is not settled before its objective has fallen by that much in all: a start
  at a kink (``Z = 0`` at a radius of the order of the data's norm, "Plateaus") does not move
  for dozens of iterations, and leaves only in the coarsest stage, whose steps grow until one
  gets out.
* **Dual centres (the method of multipliers).** Plain continuation leaves every sample at the
  hinge's kink an error of up to ``μ_s/2``, and a fine final stage is slow (its gradient is
  ``1/μ_s``-Lipschitz): on target 2's instance of ``benchmarks/targets.py`` (robust-sdp-10k) its
  480-s run stood 3 % above this method's. So the hinge is smoothed around a per-sample estimate
  ``θ̄`` of its dual variable (losses module doc, "Smoothing around a dual estimate"), and whenever
  a stage ends the estimates move to the smoothed hinge's maximisers at the current point, ``θ̄ ←
  clamp(θ̄ + (1 − v)/μ_s, 0, 1)`` (:func:`~convexrobust.solvers.polynomial_objective.update_duals`):
  a step of the proximal point method on the duals, the method of multipliers (Rockafellar, Math.
  Oper. Res. 1976), whose smoothed optimum converges to the exact one at a fixed width. In the final
  stage a subproblem ends by the stage rules above while the smoothing is inexact at its point (the
  exact objective exceeds the smoothed one by more than ``PLATEAU_FACTOR·tol``, relative), then only
  once it is solved or on the plateau rule below (moving estimates keep a subproblem from reaching a
  tight ``tol``). The solve ends when a solved subproblem's smoothing is exact to ``tol`` at its
  point — solved at the extrapolated point the iterations measure or, when the smoothing is exact
  there, at the point itself (one more gradient; on a CIFAR-10 head, 40,000 samples, the
  extrapolated point's stationarity stayed between 1e-2 and 2e-2 through 45 minutes of a flat
  objective, and the solve continued from its checkpoint, without momentum, ended optimal at its
  first dual step 28 s later); for robust programs also when a subproblem's plateau is followed by a
  dual step that improves the exact objective by at most ``PLATEAU_FACTOR·tol`` (relative), or when
  over the final stage's last :data:`PLATEAU_WINDOW` iterations the dual steps improved the best
  exact objective by at most that (:func:`_outer_plateau`). The estimates are the certificate's dual
  variables (below), and ``info`` reports ``dual_updates`` and ``smoothing_error`` (that relative
  excess at the last update). A warm start keeps the estimates it carries and gives every other
  sample one such step from 0 at the start point. The robust squared loss's max keeps plain
  continuation.

Working set. Once the hinge's pairs (sample, output) with a margin below ``1 + WORKING_SLACK`` or a
positive dual estimate are at most :data:`WORKING_MAX_FRACTION` of all, the iterations evaluate
the objective over them only (:func:`~convexrobust.solvers.polynomial_objective.restrict`; the
shrinking of SVM solvers), and an evaluation over all samples at ``x`` rebuilds that set at every
dual step and every :data:`WORKING_REFRESH` iterations. The pairs left out have estimate 0 and a
margin of at least ``1 + WORKING_SLACK`` when the set is built, so its objective is the full one
until one of them crosses the margin; a dual step's rebuild reports those that did, and the solve
stops only at a dual step that found none (there the two objectives and gradients agree at
``x``; the stationarity the rules below read is the set's at the extrapolated point, as the
iterations measure it). Not while the samples are streamed in chunks (``batch_size``). Near
the optimum of a one-vs-all program about a third of the pairs stay in it
(benchmarks/targets.py, robust-sdp-10k, measures what it buys). On from
:data:`~convexrobust.solvers.polynomial_objective.SCREEN_MIN_ELEMENTS` samples × outputs ×
features (below, an evaluation costs its dispatches).

Preconditioning (``precondition``). The iterates are ``W = S⁻¹ZS⁻¹`` for the whitening congruence
``S = diag(S₁, 1)`` of the samples and their worst cases, whose second moment is the samples' plus
``r²I`` (:func:`~convexrobust.solvers.lifted_cone.lift_congruence`): the
cone becomes ``{W ⪰ 0 : ⟨SGS, W⟩ = 0}`` (projected onto exactly, with that ``G``), the gradient ``S
∇_Z F S``, and the objective is evaluated at ``Z = SWS``. On anisotropic features the quadratic
block's curvatures spread over the fourth power of the features' anisotropy, and one step per
output must fit the stiffest; whitening removes that spread (on isotropic samples ``S ≈ I``). The
stationarity is measured in ``W``. By default it is on for anisotropic samples only
(:data:`WHITEN_MIN_ANISOTROPY`): on a mildly anisotropic program at a radius of the order of the
data's norm (tests/test_torch_polynomial.py, the robust plateau case) the whitened iteration took
1.7× the plain one's iterations, and whitened by the samples alone it stayed at the zero network's
kink.

Per iteration: an evaluation of the objective and its gradient at the extrapolated point, one
of the objective at the new point, and for the outputs whose step failed one more each; a few
batched ``eigh`` of the 2C lifted ``(d+1)×(d+1)`` matrices for the projection (after the first,
only of the matrices whose trace multiplier is not yet found).

Stopping: the relative gradient-mapping norm ``‖L(y − Π_K(y − ∇F(y)/L))‖ / max(1, ‖∇F(y)‖)``
of the final smoothing stage below ``tol`` with the objective no longer moving (relative change
over 10 iterations below ``10·tol``), and for the hinge its smoothing exact to ``tol`` there
("Dual centres"). Iterates are in K up to round-off (exact projection);
the result is judged by the program's own ``objective`` / ``violation`` (MATH.md §8).

Plateaus. The Huber smoothing makes the hinge smooth, but the worst-case margin itself is not
differentiable where its minimiser is not unique (the trust-region "hard case", common when the
radius is of the order of the data's norm; ``Z = 0`` is such a point for every sample): there
the gradient mapping can stay far above ``tol`` while the objective no longer moves, and a
stage that waits for it never ends. So for robust programs (nominal ones are smooth once the
hinge is) a stage of at least 2·:data:`PLATEAU_WINDOW` iterations also ends when, over its
last :data:`PLATEAU_WINDOW` iterations, the objective improved on the best of the
:data:`PLATEAU_WINDOW` before by at most :data:`PLATEAU_FACTOR`·tol (relative) and the
smallest gradient mapping did not even halve (on a smooth problem the bound on accelerated
gradient's smallest gradient mapping falls like k^(-3/2), Nesterov, Optima 88, 2012; the window
trails: a stage that crawls is judged by its recent progress, not by how far it came since it
began, and a solve continued from a checkpoint, whose stage history starts afresh, stops at the
same rate of progress as the uninterrupted one): the next smoothing stage begins, and in the
final stage the solve stops — with status ``"stalled"`` (an error unless
``accept_inaccurate``) when the gradient mapping is still above ``tol``, since nothing then
certifies the point. Without the rule a stage stuck at such a point spends the whole budget;
with it the later stages, whose smoothing is finer, still improve the objective
(tests/test_torch_polynomial.py checks a 3-class program against Clarabel).

Radii beyond the data: when :func:`~convexrobust.solvers.lifted_cone.zero_is_optimal` proves
the zero network optimal (every nonzero network has a worse worst case), the solve returns it
at once as optimal — it is exactly such a hard-case point, where the plateau rule alone would
end ``"stalled"``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from convexrobust._validation import check_device
from convexrobust.errors import InvalidInputError
from convexrobust.problems.losses import get_loss
from convexrobust.problems.polynomial import ConvexPolynomial
from convexrobust.solvers.data_parallel import Collective
from convexrobust.solvers.first_order import (
    Budget,
    Checkpoints,
    Momentum,
    blockwise_backtracking_step,
    finish,
    gradient_restart,
    per_block,
    relative_decrease,
    single_threaded_if_small,
    with_common_options,
)
from convexrobust.solvers.lifted_cone import (
    anisotropy,
    dual_bound,
    lift_congruence,
    project_lifted_cone,
    repaired_values,
    zero_is_optimal,
)
from convexrobust.solvers.polynomial_objective import (
    check_solve_options,
    lipschitz_estimate,
    objective,
    objective_data,
    restrict,
    skips_rows,
    update_duals,
    warm_start_duals,
    warm_start_point,
)
from convexrobust.solvers.solution import Solution

__all__ = ["solve_polynomial_torch"]

log = logging.getLogger(__name__)

#: A smoothing stage of at least 2·PLATEAU_WINDOW iterations ends (the final one: the solve
#: stops) when its second half improved the objective by at most PLATEAU_FACTOR·tol (relative)
#: and did not halve the gradient mapping (:func:`_plateau`, checked every PLATEAU_CHECK
#: iterations).
PLATEAU_WINDOW = 500
PLATEAU_FACTOR = 0.01
PLATEAU_CHECK = 50

#: A smoothing stage before the final one ends at relative stationarity
#: max(tol, STAGE_STATIONARITY·μ_s), or when its objective F decreased by at most
#: ``STAGE_PROGRESS·μ_s·|F|`` over its last STAGE_WINDOW iterations (module docstring).
STAGE_STATIONARITY = 1e-2
STAGE_PROGRESS = 1e-2
STAGE_WINDOW = 20

#: The default final smoothing width of the hinge, smoothed around its dual estimates (module
#: docstring, "Dual centres"): the estimates, not the width, make it exact at the optimum, and a
#: finer width only makes the final stage's subproblems stiffer and more numerous. On Kuelbs et
#: al.'s breast-cancer program (benchmarks/targets.py robust-sdp-breast-cancer) this width reached
#: tol 1e-4 in 300 iterations (gap 1.7e-4) and 1e-6 in 700 (2.1e-6), 1e-2 took 778 and stalled at
#: 2e-6 after 3,575, and 1e-3 did not reach 1e-6 in 20,000; on target 2's 10k program both reached
#: the same objective in 120 s.
CENTRED_SMOOTHING_FLOOR = 0.1
#: The default final Huber width of the robust squared loss's max (objective error ≤ half of it).
HUBER_SMOOTHING_FLOOR = 1e-3

#: ``precondition="auto"`` whitens the samples (module docstring, "Preconditioning") from this
#: :func:`~convexrobust.solvers.lifted_cone.anisotropy` on: at 23.6 (planted samples scaled like
#: the principal components of CIFAR-10 features, 22) whitening lowered the objective reached in
#: 120 s by a third (benchmarks/targets.py, robust-sdp-10k), while at 2.7 (the digits program of
#: the robust plateau test) it took 1.7× the iterations (module docstring).
WHITEN_MIN_ANISOTROPY = 12.0

#: The working set (:mod:`~convexrobust.solvers.polynomial_objective`, "Working set"; module
#: docstring, "Working set"): the pairs with a margin below ``1 + WORKING_SLACK`` or a positive
#: dual estimate at the last evaluation over all samples, which is repeated every
#: WORKING_REFRESH iterations and at every dual step; used once it holds at most
#: WORKING_MAX_FRACTION of the pairs.
WORKING_SLACK = 0.25
WORKING_REFRESH = 20
WORKING_MAX_FRACTION = 0.6

#: Every output's step is tried STEP_GROWTH times larger every STEP_GROWTH_EVERY iterations
#: (:func:`_step_growth`).
STEP_GROWTH = 2.0
STEP_GROWTH_EVERY = 8


def _step_growth(iteration: int) -> float:
    """The factor every output's step is tried larger by before iteration ``iteration``'s
    backtracking: STEP_GROWTH every STEP_GROWTH_EVERY iterations, else 1. All outputs grow at
    once, so the ones the larger step does not fit are halved by the same extra evaluations
    (one step growing every iteration, as for a single program, would make some output fail
    at almost every iteration, each failure costing an evaluation of all of them)."""
    return STEP_GROWTH if iteration % STEP_GROWTH_EVERY == 0 else 1.0


def _plateau(values: list[float], stationarity: list[float], tol: float) -> bool:
    """A smoothing stage has stopped making progress (module docstring, "Plateaus"): over its
    last :data:`PLATEAU_WINDOW` iterations the best objective improved on the best of the
    window before by at most ``PLATEAU_FACTOR·tol`` (relative) and the best gradient mapping
    did not halve (on a smooth problem its bound falls 2.8× whenever the iterations double).
    Checked every :data:`PLATEAU_CHECK` iterations once the stage has 2·PLATEAU_WINDOW."""
    k = len(values)
    if k < 2 * PLATEAU_WINDOW or k % PLATEAU_CHECK:
        return False
    recent = slice(k - PLATEAU_WINDOW, k)
    before = slice(k - 2 * PLATEAU_WINDOW, k - PLATEAU_WINDOW)
    flat = _little_gain(min(values[before]), min(values[recent]), tol)
    return flat and min(stationarity[recent]) > 0.5 * min(stationarity[before])


def _little_gain(before: float, after: float, tol: float) -> bool:
    """Whether an objective went from ``before`` to ``after`` improving by at most
    ``PLATEAU_FACTOR·tol`` relative to ``max(1, |after|)`` (the plateau rules' test)."""
    return before - after <= PLATEAU_FACTOR * tol * max(1.0, abs(after))


def _outer_plateau(steps: list[tuple[int, float]], k: int, tol: float) -> bool:
    """The dual steps of a final stage ``k`` iterations long (``steps``: the stage's iteration
    count and the exact objective at each) have stopped improving it (module docstring, "Dual
    centres"): over its last :data:`PLATEAU_WINDOW` iterations the best exact objective improved
    on the best of the window before by at most ``PLATEAU_FACTOR·tol`` (relative), both windows
    holding a step (a long subproblem is judged by :func:`_plateau` on its own objective)."""
    if k < 2 * PLATEAU_WINDOW:
        return False
    recent = [value for at, value in steps if at >= k - PLATEAU_WINDOW]
    before = [value for at, value in steps if k - 2 * PLATEAU_WINDOW <= at < k - PLATEAU_WINDOW]
    return bool(recent) and bool(before) and _little_gain(min(before), min(recent), tol)


# ----------------------------------------------------------------------------------------
# the solver
# ----------------------------------------------------------------------------------------
@with_common_options
def solve_polynomial_torch(program: ConvexPolynomial, *, device: torch.device | str | None = None,
                           dtype: torch.dtype | str = "auto", tol: float = 1e-6,
                           max_iters: int = 20_000, time_limit: float | None = None,
                           seed: int = 0, progress: bool = False,
                           accept_inaccurate: bool = False,
                           smoothing_floor: float | None = None,
                           batch_size: int | str | None = "auto",
                           distributed: bool | str = False,
                           warm_start: Solution | Mapping[str, object] | None = None,
                           smoothing_start: float | None = None,
                           precondition: bool | str = "auto",
                           checkpoint: Callable[[dict[str, object]], None] | None = None,
                           checkpoint_every: float = 600.0) -> Solution:
    """Solve a :class:`~convexrobust.ConvexPolynomial` program (c) or (d) by accelerated
    projected gradient with exact projections and exact ℓ2 worst cases (module docstring).

    Programs: nominal, ℓ2, or ℓ∞ with ``linf="containment"`` (ℓ∞ ``"diagonal"`` needs
    per-sample multipliers: use ``linf="containment"`` or a conic solver).

    ``tol`` (default 1e-6) is a **relative stationarity**: the norm of the gradient mapping
    ``L(y − Π_K(y − ∇F(y)/L))`` over ``max(1, ‖∇F(y)‖)`` in the final smoothing stage (module
    docstring, "Stopping"); float32 runs are floored at ``sqrt(eps)``. ``dtype="auto"``
    (default) iterates in float32 on large programs when ``tol`` is at least float32's floor,
    else in float64 (:func:`~convexrobust.solvers.first_order.auto_dtype`; ``info["dtype"]``
    says which). ``Solution.gap`` is
    that stationarity (``gap_kind = "relative_stationarity"``). A robust program whose
    objective stops improving above it ends ``"stalled"`` (module docstring, "Plateaus"), a
    failure unless ``accept_inaccurate``. When
    :func:`~convexrobust.solvers.lifted_cone.zero_is_optimal` proves the zero network optimal
    the solve returns it at once (``info["zero_certificate"]``, ``gap = 0``).

    Certificate: for the hinge and logistic losses ``info["dual_bound"]`` is a lower bound on
    the optimum built from the returned point and its loss slopes at the final smoothing (the
    hinge's: its dual estimates, module docstring, "Dual centres")
    (:func:`~convexrobust.solvers.lifted_cone.dual_bound`; with a zero certificate, for any
    loss, the zero network's objective), and ``info["duality_gap"]`` the relative gap of the
    objective to it — an upper bound on the point's relative distance to
    the optimum. It is tight only near an optimum of the final smoothing stage, so a loosely
    stopped solve is usually much closer to the optimum than it certifies
    (``benchmarks/targets.py`` records both); the stopping rule stays the stationarity.

    On the CPU a small program (fewer than
    :data:`~convexrobust.solvers.first_order.SMALL_WORK_ELEMENTS` samples × outputs × features)
    is solved on one intra-op thread, restored afterwards
    (:func:`~convexrobust.solvers.first_order.single_threaded_if_small`).

    ``info`` holds ``device``, ``dtype``, ``stationarity``, ``violation_before_repair``,
    ``smoothing``, ``eigh_calls``, ``restarts``, ``batch_size`` (None: full batch), ``chunks``
    (per rank), ``world_size``, ``screened`` (the fraction of worst-case subproblems skipped by
    screening or left out of the working set, module docstring), ``working_set`` (the fraction
    of the pairs in the last working set on this rank, 1.0 without one), ``zero_certificate``,
    ``dual_updates`` and
    ``smoothing_error`` (module docstring, "Dual centres"; 0 and None without them), for the
    hinge ``duals`` (its final dual estimates, (n, C) float64: ``warm_start=solution``
    continues from them) and, where written, ``dual_bound`` and ``duality_gap`` (above).

    Parameters
    ----------
    smoothing_floor:
        Final smoothing width: of the hinge, around its dual estimates, which make it exact at
        the optimum (module docstring, "Dual centres"; :data:`CENTRED_SMOOTHING_FLOOR` by
        default), or of the robust squared loss's max (Huber, objective error at most half of
        it; :data:`HUBER_SMOOTHING_FLOOR` by default).
    batch_size:
        ``None``: full batch (the samples live on ``device``). An integer: every evaluation
        streams over chunks of that many samples through a ``torch.utils.data.DataLoader``,
        each moved to ``device`` while it is processed, and sums the losses and outer-product
        gradients exactly — the full gradient, not SGD, so the iterates are the full-batch ones
        up to summation order and the stationarity certificate is kept. ``"auto"`` (default):
        full batch when it fits in half of the free device memory (always on the CPU), else the
        largest chunk that does. See :mod:`convexrobust.solvers.data_parallel`.
    distributed:
        ``True``: data-parallel over the initialised ``torch.distributed`` process group; every
        rank passes the same program (built from the full data) and options, evaluates its
        contiguous shard of the samples, and the sums are all-reduced, so all ranks iterate in
        lockstep and return the same values (rank 0's). ``"auto"``: ``True`` when a process
        group is initialised. ``False`` (default): one process.
    warm_start:
        A point to start from: a :class:`~convexrobust.solvers.solution.Solution` (or its
        ``values``, ``{"Z", "Zp"}``) of a program with the same outputs and features, e.g. this
        program solved in float32 or by an earlier, shorter run. It is projected onto the cone.
        A mapping may also hold ``"duals"`` (n, C) in [0, 1], the hinge's dual estimates of a
        solve of this program (a checkpoint's state has them; module docstring, "Dual
        centres"), and a Solution of a program on the same samples carries its own
        (``info["duals"]``); NaN entries mark samples without an estimate (a refit's added
        samples). A sample without one gets one step of the method of multipliers from 0 at the
        start point, the smoothed hinge's maximiser there (smoothed around 0, a start near the
        optimum would first move away from it while the estimates are rebuilt). The optimum
        does not depend on them; only the iterations taken do.
    smoothing_start:
        The Huber width of the first smoothing stage (module docstring): 1 by default, and
        ``smoothing_floor`` with a ``warm_start`` (taken to be near this program's optimum, which
        the coarse stages would only pull it away from). A start far from the optimum (a
        neighbour on a grid of β or radii) converges more reliably from a coarser width, e.g.
        ``10·smoothing_floor``.
    precondition:
        ``True``: iterate in the whitened coordinates ``W = S⁻¹ZS⁻¹`` (module docstring,
        "Preconditioning"); ``"auto"`` (default): when the samples'
        :func:`~convexrobust.solvers.lifted_cone.anisotropy` is at least
        :data:`WHITEN_MIN_ANISOTROPY` (``info["preconditioned"]`` says whether it did).
        The optimum does not depend on it.
    checkpoint, checkpoint_every:
        ``checkpoint(state)`` is called at most every ``checkpoint_every`` seconds (600 by
        default; ``math.inf``: never on a clock) and when the budget stops the solve, with the
        current iterate: ``state["options"]`` (``method="apg"``, ``warm_start`` at the iterate,
        ``smoothing_start`` at its Huber width) continue the solve from there
        (:class:`~convexrobust.solvers.first_order.Checkpoints`; not with ``distributed``;
        ``warm_start`` also holds the hinge's dual estimates).
        The iterations are the same with or without it.
    """
    start = time.perf_counter()
    dtype = check_solve_options(
        program, "solve_polynomial_torch", tol=tol, max_iters=max_iters, time_limit=time_limit,
        seed=seed, dtype=dtype, batch_size=batch_size, smoothing_floor=smoothing_floor)
    loss = get_loss(program.loss)
    # the hinge is smoothed around dual estimates that the method of multipliers moves (module
    # docstring, "Dual centres"); the robust squared loss's max keeps plain continuation
    centred = loss.margin and not loss.smooth
    if smoothing_floor is None:
        smoothing_floor = CENTRED_SMOOTHING_FLOOR if centred else HUBER_SMOOTHING_FLOOR
    if smoothing_start is not None and not (
            isinstance(smoothing_start, (int, float)) and not isinstance(smoothing_start, bool)
            and smoothing_floor <= smoothing_start <= 1):
        raise InvalidInputError(
            f"smoothing_start must be in [smoothing_floor, 1] = [{smoothing_floor}, 1], got "
            f"{smoothing_start!r}")
    if not (isinstance(precondition, bool) or precondition == "auto"):
        raise InvalidInputError(
            f"precondition must be True, False or 'auto', got {precondition!r}")
    if precondition == "auto":
        precondition = anisotropy(program.X) >= WHITEN_MIN_ANISOTROPY
    device = check_device(device)
    d = program.n_features
    C = program.n_outputs
    start_point = warm_start_point(warm_start, C, d)
    start_duals = warm_start_duals(warm_start, program.X.shape[0], C)
    comm = Collective(distributed, device)
    data = objective_data(program, dtype=dtype, device=device, batch_size=batch_size, comm=comm)
    D = d + 1
    eps = torch.finfo(dtype).eps
    tol_eff = max(float(tol), math.sqrt(eps) if dtype != torch.float64 else 0.0, 10 * eps)
    # the hinge, and the max in the robust squared loss's worst residual, are smoothed
    smoothed = not loss.smooth or (not loss.margin and data.radius > 0)
    mu_s = 1.0 if smoothed else 0.0
    mu_final = float(smoothing_floor) if smoothed else 0.0
    dual_updates = 0
    smoothing_error: float | None = None  # exact − smoothed objective at the last update
    last_dual_step = -1  # the iteration count at the last dual step

    counter = {"eigh": 0}
    g_lift = torch.ones(D, dtype=dtype, device=device)
    g_lift[-1] = -1.0
    # the iterates are W = S⁻¹ZS⁻¹ (module docstring, "Preconditioning"), or Z without it
    S64 = lift_congruence(program) if precondition else None
    S = None if S64 is None else S64.to(dtype=dtype, device=device)
    G_w = None if S is None else (S * g_lift) @ S  # K for W: {W ⪰ 0, ⟨SGS, W⟩ = 0}

    def to_z(W: Tensor) -> Tensor:
        return S @ W @ S if precondition else W

    def F(W: Tensor, need_grad: bool, full: bool = False, outputs: Tensor | None = None
          ) -> tuple[Tensor, Tensor | None]:
        val, grad, k = objective(data, to_z(W), mu_s, need_grad, full=full, outputs=outputs)
        counter["eigh"] += k
        return val, None if grad is None else to_z(grad)  # ∇_W F = S ∇_Z F S

    proj_mu = torch.zeros(2, C, dtype=dtype, device=device)  # per matrix, the last projection's

    def project(Y: Tensor, outputs: Tensor | None = None) -> Tensor:
        """Y (2, C', D, D) onto K, for all outputs or (``outputs``) those it holds; the
        multipliers of the last projection of each output warm-start its next."""
        k = Y.shape[1]
        mu0 = proj_mu if outputs is None else proj_mu[:, outputs]
        Zp, mu = project_lifted_cone(Y.reshape(2 * k, D, D), mu0.reshape(-1), G=G_w)
        if outputs is None:
            proj_mu.copy_(mu.reshape(2, C))
        else:
            proj_mu[:, outputs] = mu.reshape(2, k)
        return Zp.reshape(2, k, D, D)

    x = torch.zeros(2, C, D, D, dtype=dtype, device=device)
    if start_point is not None:
        Z0 = torch.as_tensor(start_point, dtype=torch.float64)
        if S64 is not None:
            S_inv = torch.linalg.inv(S64)
            Z0 = S_inv @ Z0 @ S_inv
        x = project(Z0.to(dtype=dtype, device=device))
    if smoothed and (smoothing_start is not None or start_point is not None):
        mu_s = float(smoothing_start) if smoothing_start is not None else mu_final
    y = x.clone()
    momentum = Momentum(block_dim=1)
    # Lipschitz estimate of the data term: mean ‖A(x_k)‖² (times 1/μ for the Huber stage)
    lift_norm2 = lipschitz_estimate(program, S64)
    # one step (1/L) per output: the outputs' programs are independent, and a step must only
    # fit its own output (module docstring, "Outputs")
    step = torch.full((C,), 1.0 / (max(lift_norm2 / max(mu_s, 1.0), 1e-8) * 0.1),
                      dtype=torch.float64, device=device)
    history: list[float] = []
    stationarities: list[float] = []
    # the final stage's dual steps: (its iteration count, the exact objective there)
    exact_steps: list[tuple[int, float]] = []
    final_iterations = 0
    # a smoothing stage or a final-stage subproblem has ended, or the solve began at a given
    # point rather than at zero (the "settled" rule's guard below)
    left_start = start_point is not None
    status = "optimal"
    stationarity = math.inf
    show = progress and comm.is_root
    budget = Budget(max_iters, time_limit, progress, desc="torch polynomial", comm=comm,
                    start=start)
    zero_certificate = data.radius > 0 and zero_is_optimal(program)
    checkpoints = Checkpoints(checkpoint, checkpoint_every, comm)

    def state() -> dict[str, object]:
        Z = to_z(x).to(torch.float64).cpu().numpy()
        options: dict[str, object] = {"method": "apg", "warm_start": {"Z": Z[0], "Zp": Z[1]}}
        if centred and data.centers is not None:
            options["warm_start"]["duals"] = data.duals()  # type: ignore[index]
        if smoothed:
            options["smoothing_start"] = mu_s
        return {"options": options, "iterations": budget.iterations, "smoothing": mu_s,
                "objective": float(fx.sum()), "stationarity": stationarity}

    def value(W: Tensor, outputs: Tensor | None = None) -> Tensor:
        """The objective per output at ``W``, of all outputs or of those ``W`` holds."""
        return F(W, False, outputs=outputs)[0].to(torch.float64)

    def relative_stationarity(W: Tensor, stepped: Tensor, g: Tensor) -> float:
        """The gradient mapping ``(W − stepped)/step`` of the projected step ``stepped`` from
        ``W`` along the gradient ``g``, in norm over ``max(1, ‖g‖)`` (module docstring,
        "Stopping")."""
        gmap = float(torch.linalg.vector_norm((stepped - W) / per_block(step, W, 1)))
        return gmap / max(1.0, float(torch.linalg.vector_norm(g)))

    def stationarity_at(W: Tensor) -> float:
        """The relative stationarity at ``W`` itself (the iterations measure it at the
        extrapolated point, where momentum can keep it high at an optimum)."""
        g = F(W, True)[1]
        assert g is not None
        return relative_stationarity(W, project(W - per_block(step, W, 1) * g), g)

    def at_floor() -> bool:
        """Whether the smoothing has reached its final width (the final stage)."""
        return mu_s <= mu_final * (1 + 1e-9)

    # the working set (module docstring): the iteration of the last evaluation over all samples,
    # and the pairs it found that the working set before it had left out below the margin
    # (not while streaming: the gathered blocks would hold C copies of the kept rows on the device)
    working = centred and skips_rows(program) and not data.stream.streaming
    last_full, missed = 0, 0
    working_fraction = 1.0

    def rebuild() -> None:
        """The working set of the margins just evaluated over all samples at ``x``."""
        nonlocal last_full, missed, working_fraction
        if working:
            working_fraction, missed = restrict(data, WORKING_SLACK, WORKING_MAX_FRACTION)
            last_full = budget.iterations
            log.debug("working set at iteration %d: %.1f%% of the pairs, %d missed", last_full,
                      100 * working_fraction, missed)

    def dual_step() -> None:
        """The method of multipliers' step at ``x`` (module docstring, "Dual centres"),
        recording the exact objective there and how far the smoothing is from it; the working
        set is rebuilt there."""
        nonlocal dual_updates, smoothing_error, last_dual_step
        smoothed_t, exact_t = update_duals(data, to_z(x), mu_s)
        rebuild()
        counter["eigh"] += int(data.radius > 0)
        dual_updates += 1
        last_dual_step = budget.iterations
        exact = float(exact_t.sum())
        smoothing_error = (exact - float(smoothed_t.sum())) / max(1.0, abs(exact))
        if at_floor():
            exact_steps.append((final_iterations, exact))

    with single_threaded_if_small(program.X.shape[0] * C * d, device):
        if centred and start_point is not None:  # (a warm start's duals come with its point)
            given = start_duals if start_duals is not None else np.full(
                (program.X.shape[0], C), np.nan)
            data.set_duals(np.nan_to_num(given, nan=0.0))
            if np.isnan(given).any():
                # samples without an estimate get the smoothed hinge's maximiser at the start
                # point, one step of the method of multipliers from 0 (module docstring, "Dual
                # centres"); the others keep theirs
                update_duals(data, to_z(x), mu_s)
                counter["eigh"] += int(data.radius > 0)
                stepped = data.duals()
                assert stepped is not None
                data.set_duals(np.where(np.isnan(given), stepped, given))
        fx = value(x)
        try:
            while not zero_certificate:
                reason = budget.exhausted()
                if reason is not None:
                    status = reason
                    break
                fy_t, gy = F(y, True)
                assert gy is not None
                fy = fy_t.to(torch.float64)
                step_prev = step
                x_new, f_new, step = blockwise_backtracking_step(
                    y, fy, gy, step * _step_growth(budget.iterations), project, value,
                    16 * eps * (fy.abs() + 1.0),
                    block_dim=1)
                budget.tick()
                iterations = budget.iterations
                stationarity = relative_stationarity(y, x_new, gy)
                # momentum (Scheinberg–Goldfarb–Bai update with varying L) and adaptive
                # restart, per output
                restart = gradient_restart(y, x_new, x, block_dim=1) | (f_new > fx).cpu()
                y = momentum.extrapolate(x, x_new, restart, (step_prev / step).cpu())
                x, fx = x_new, f_new
                history.append(float(fx.sum()))
                stationarities.append(stationarity)
                checkpoints.offer(state)
                if show and iterations % 50 == 0:
                    flat = to_z(x).reshape(2 * C, D, D)
                    viol = max(float(-torch.linalg.eigvalsh(flat)[:, 0].min()), float(
                        (torch.diagonal(flat, dim1=1, dim2=2) * g_lift).sum(1).abs().max()))
                    budget.bar.set_postfix(objective=f"{float(fx.sum()):.6g}",
                                           violation=f"{max(viol, 0):.1e}",
                                           stationarity=f"{stationarity:.2e}",
                                           smoothing=f"{mu_s:.0e}")
                final_stage = at_floor()
                stalled = len(history) > 10 and abs(history[-1] - history[-11]) <= \
                    10 * tol_eff * max(1.0, abs(history[-1]))
                # (a first stage whose objective has not yet fallen by that much in all is stuck
                # at its start, a kink such as Z = 0 in the hard case, not settled: the plateau
                # rule judges it, and its growing steps get it out; module docstring)
                settled = (relative_decrease(history, STAGE_WINDOW, floor=0.0)
                           <= STAGE_PROGRESS * mu_s) and (
                    left_start or relative_decrease(history, len(history) - 1, floor=0.0)
                    > STAGE_PROGRESS * mu_s)
                solved = stationarity <= tol_eff and stalled
                plateau = data.radius > 0 and _plateau(history, stationarities, tol_eff)
                if final_stage and centred:
                    # a subproblem of the method of multipliers ends like a stage while the
                    # smoothing is inexact at its point, then once it is solved or on a plateau;
                    # the solve ends when a solved one's smoothing is exact, or when the exact
                    # objective stops improving across the steps (module docstring)
                    inexact = smoothing_error is None or smoothing_error > PLATEAU_FACTOR * tol_eff
                    if solved or plateau or (settled and inexact):
                        dual_step()
                        assert smoothing_error is not None
                        if smoothing_error <= tol_eff and not solved:
                            # solved at x itself, where the dual step was taken?
                            at_x = stationarity_at(x)
                            if at_x <= tol_eff:
                                stationarity, solved = at_x, True
                        # (the working set's objective is the full one at x when the dual step's
                        # evaluation over all samples found no pair left out below the margin)
                        if solved and smoothing_error <= tol_eff and missed == 0:
                            break
                        # a subproblem's plateau ends the solve when its dual step no longer
                        # improves the exact objective
                        flat = plateau and len(exact_steps) >= 2 and _little_gain(
                            exact_steps[-2][1], exact_steps[-1][1], tol_eff)
                        if missed == 0 and (flat or (data.radius > 0 and _outer_plateau(
                                exact_steps, final_iterations, tol_eff))):
                            status = "optimal" if stationarity <= tol_eff else "stalled"
                            log.debug("final stage: exact objective plateau at iteration %d "
                                      "(stationarity %.2e)", iterations, stationarity)
                            break
                        # (a solve may begin in this stage: once a subproblem has ended, the
                        # iterate has left its start, and a flat objective settles the next one)
                        left_start = True
                        fx = value(x)
                        history.clear()
                        stationarities.clear()
                    final_iterations += 1
                elif final_stage and (solved or plateau):
                    if not solved:
                        status = "optimal" if stationarity <= tol_eff else "stalled"
                        log.debug("final stage: objective plateau at iteration %d "
                                  "(stationarity %.2e)", iterations, stationarity)
                    break
                if not final_stage and (stationarity <= max(tol_eff, STAGE_STATIONARITY * mu_s)
                                        or settled or plateau):
                    log.debug("stage smoothing=%.1e done at iteration %d, objective %.8g",
                              mu_s, iterations, float(fx.sum()))
                    if centred:
                        dual_step()
                    mu_s = max(mu_s * 0.1, mu_final)
                    left_start = True
                    step = step / 10.0
                    momentum.reset()
                    y = x.clone()
                    fx = value(x)
                    history.clear()
                    stationarities.clear()
                if working and iterations - last_full >= WORKING_REFRESH:
                    # over all samples at x, unless a dual step just did (its rebuild compared
                    # with the set the iterations used): its value is the rebuilt set's there
                    fx = F(x, False, full=True)[0].to(torch.float64)
                    rebuild()
        finally:
            budget.close()
    if zero_certificate:
        stationarity = 0.0
        log.debug("the zero network is certified optimal")
    if status in ("max_iters", "time_limit"):
        checkpoints.final(state)
    if centred and not zero_certificate and last_dual_step != budget.iterations:
        dual_step()  # the duals become the gradient's loss weights at the returned point

    x = comm.broadcast(x)  # every rank returns rank 0's point (they agree; this makes it exact)
    values, violation_before = repaired_values(program, to_z(x))
    wall = time.perf_counter() - start
    iterations = budget.iterations
    if status == "stalled":
        failure = (f"torch stopped after {iterations} iterations: the objective stopped "
                   f"improving with relative stationarity {stationarity:.2e} > tol "
                   f"{tol_eff:.1e} (the worst-case margins are not differentiable where their "
                   "minimisers are not unique); use a conic solver for a certified optimum")
    else:
        failure = (f"torch stopped at {status} after {iterations} iterations with relative "
                   f"stationarity {stationarity:.2e} > tol {tol_eff:.1e}: raise max_iters / "
                   "time_limit, or loosen tol")
    log.info("torch polynomial: %s after %d iterations (%.3gs), stationarity %.2e",
             status, iterations, wall, stationarity)
    solution = finish(
        program, values, status, accept_inaccurate=accept_inaccurate, failure=failure,
        wall_time=wall, iterations=iterations, solver_objective=float(fx.sum()), gap=stationarity,
        gap_kind="relative_stationarity",
        info={"device": str(device), "dtype": str(dtype).replace("torch.", ""),
              "stationarity": stationarity, "violation_before_repair": violation_before,
              "smoothing": mu_s, "eigh_calls": counter["eigh"], "restarts": momentum.restarts,
              "lipschitz": float((1.0 / step).max()), "batch_size": data.stream.batch_size,
              "chunks": len(data.stream), "world_size": comm.world,
              "screened": 1.0 - data.rows_solved / max(data.rows_total, 1),
              "zero_certificate": zero_certificate, "preconditioned": precondition,
              "dual_updates": dual_updates, "smoothing_error": smoothing_error,
              "working_set": working_fraction if data.working is not None else 1.0},
    )
    # the certificate of the returned point (its time counts as the solve's)
    duals = data.duals()
    if centred and duals is not None:
        # the estimates that continue this solve (warm_start=solution keeps them)
        solution.info["duals"] = duals
    bound = solution.objective if zero_certificate else dual_bound(
        program, values, mu_s, objective=solution.objective, duals=duals)
    if bound is not None:
        solution.info["dual_bound"] = bound
        solution.info["duality_gap"] = (max(solution.objective - bound, 0.0)
                                        / max(abs(solution.objective), 1e-300))
    solution.wall_time = time.perf_counter() - start
    return solution
