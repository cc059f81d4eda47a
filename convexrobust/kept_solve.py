"""Solves that outlive the run that started them: a program's solve kept on disk as soon as it
returns, reused when it finished, and continued from its last point when a budget stopped it.

A retraining run on all of CIFAR-10 solves programs that take longer than one sitting on two
CPU cores. :func:`solve_kept` solves a program by :func:`~convexrobust.solve` and writes the
result atomically to ``path`` (the recovered head, its solve record and, for a solve a budget
stopped, the point to continue from). Called again with ``resume=True`` it

- reuses a kept solve that ended for any reason but a time limit (solved to its tolerance, or
  stopped by something a rerun would repeat), and one whose time limit was at least the one
  given now;
- continues a kept solve that its time limit stopped, when the limit given now is larger (or
  None), from the kept point: the torch methods of the polynomial programs take a
  ``warm_start`` (:data:`WARM_STARTED_FAMILIES`), and the accelerated gradient restarts at the
  Huber width it had reached (``smoothing_start``); the time already spent counts against the
  limit. A kept solve without such a point (a ReLU program's augmented Lagrangian has no
  warm start, a conic solver stops at its own tolerance) is solved again from the start.

``checkpoint_every`` (seconds) splits a warm-startable torch solve into segments of at most
that long, each kept before the next continues from it, so a run killed mid-solve loses at most
one segment. Each segment restarts the method's momentum and step-size estimate, so a segmented
solve takes a different path than an uninterrupted one and stops at a different point within
the same tolerance; the program's optimum does not depend on it. A segment that makes no
iteration (the method's set-up alone outlasts the segment) ends the segmenting: the rest is
solved in one piece. Only the last segment runs with the caller's ``accept_inaccurate``: the
earlier ones are stops the caller asked for.

The key under which a solve is kept is the caller's (:func:`~convexrobust.pipeline` hashes
everything that defines the program and the solver's options except :data:`BUDGET_OPTIONS`), so
a kept solve is never used for another program.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import torch
from torch import nn

from convexrobust._io import read_torch, write_atomic
from convexrobust._validation import check_positive
from convexrobust.errors import InvalidInputError, SolverFailedError
from convexrobust.networks.two_layer import head_from_dict, head_to_dict
from convexrobust.problems.base import ConvexProgram
from convexrobust.solvers import auto_order, solve
from convexrobust.solvers.solution import Solution

__all__ = ["BUDGET_OPTIONS", "WARM_STARTED_FAMILIES", "KeptSolve", "check_checkpoint_every",
           "solve_kept", "solve_record"]

log = logging.getLogger(__name__)

#: Solver options that bound a solve's effort without changing its program or its optimum:
#: they are left out of a kept solve's key, so a solve one budget stopped is continued under a
#: larger one.
BUDGET_OPTIONS = frozenset({"time_limit"})

#: Program families whose torch methods take a ``warm_start`` (the polynomial programs'
#: accelerated gradient and factored L-BFGS): their solves can be continued and checkpointed.
WARM_STARTED_FAMILIES = frozenset({"polynomial"})

#: The statuses of a solve its time limit stopped (the torch methods', the conic solvers').
_TIME_STATUSES = frozenset({"time_limit"})


@dataclass
class KeptSolve:
    """A solve as :func:`solve_kept` returns it: the recovered head, its record (status,
    solver, cumulative ``solve_time``, objective, violation, ``duality_gap``, ``neurons``,
    ``segments``: the solver calls it took, over every run; for a continued solve
    ``continued_from``: the seconds its earlier runs took), and ``resumed``: whether the head
    was loaded as kept rather than solved (wholly or partly) by this call."""

    net: nn.Module
    record: dict[str, object]
    resumed: bool


def solve_record(solution: Solution, seconds: float) -> dict[str, object]:
    """What is kept of a solve: its status, solver, seconds, objective and violation, and
    ``duality_gap``, the relative gap to the lower bound the torch methods certify
    (``Solution.info["duality_gap"]``: an upper bound on how far the head is from the
    program's optimum, so a solve stopped by a time limit still says how unfinished it is);
    None where the solver gives none (the conic solvers, which stop at their own tolerance)."""
    gap = solution.info.get("duality_gap")
    return {"status": solution.status, "solver": solution.solver, "solve_time": seconds,
            "objective": solution.objective, "violation": solution.violation,
            "duality_gap": None if gap is None else float(gap)}


def check_checkpoint_every(value: object, cache: object) -> float | None:
    """``checkpoint_every`` checked: None, or seconds > 0 with a cache to keep segments in."""
    if value is None:
        return None
    seconds = check_positive(value, "checkpoint_every", allow_zero=False)
    if cache is None:
        raise InvalidInputError("checkpoint_every keeps each segment of a solve in the cache "
                                "directory: pass cache=DIR")
    return seconds


def solve_kept(build: Callable[[], ConvexProgram], solver: str, *,
               options: Mapping[str, object],
               backend_options: Mapping[str, Mapping[str, object]], path: Path | None,
               resume: bool, checkpoint_every: float | None = None) -> KeptSolve:
    """Solve the program ``build()`` makes (built only when it is solved) with ``solver`` and
    ``options`` (``backend_options`` as for :func:`~convexrobust.solve`), keeping it at ``path``
    (None: nowhere) and, with ``resume``, reusing or continuing what is kept there (module
    docstring)."""
    limit = options.get("time_limit")
    kept = _load(path) if resume and path is not None else None
    if kept is not None:
        net, record, state = kept
        stopped = record["status"] in _TIME_STATUSES
        if not stopped or (limit is not None and float(record["solve_time"]) >= limit):
            return KeptSolve(net, record, resumed=True)
        if state is None:
            kept = None  # nothing to continue from: solved again from the start
    program = build()
    base = {k: v for k, v in options.items() if k not in BUDGET_OPTIONS}
    spent = 0.0 if kept is None else float(kept[1]["solve_time"])
    segments = 0 if kept is None else int(kept[1].get("segments", 1))
    state = None if kept is None else kept[2]
    # the solve time of the earlier runs this one continues
    continued = {} if kept is None else {"continued_from": spent}
    if checkpoint_every is not None and not _segmentable(program, solver, base):
        checkpoint_every = None
    while True:
        remaining = None if limit is None else limit - spent
        segment = remaining if checkpoint_every is None else (
            checkpoint_every if remaining is None else min(remaining, checkpoint_every))
        last = segment == remaining
        run_solver, run = solver, dict(base)
        if state is not None:
            run_solver = "torch"
            run.update(_continuation(state))
        if segment is not None:
            run["time_limit"] = segment
        if not last:
            run["accept_inaccurate"] = True
        t0 = perf_counter()
        solution = solve(program, run_solver, backend_options=backend_options, **run)
        spent += perf_counter() - t0
        segments += 1
        net = solution.network()
        record = {**solve_record(solution, spent), "neurons": net.n_neurons,
                  "segments": segments, **continued}
        stopped = solution.status in _TIME_STATUSES
        state = _state(solution) if stopped and program.family in WARM_STARTED_FAMILIES \
            and solution.solver == "torch" else None
        if not last and not stopped and solution.status != "optimal" \
                and not _accepts_inaccurate(solution.solver, options, backend_options):
            raise SolverFailedError(
                f"{solution.solver} ended {solution.status!r} on {program.describe()}; pass "
                "accept_inaccurate=True to keep such a point", status=solution.status,
                solver=solution.solver)
        if path is not None:
            _store(path, net, record, state)
        if last or not stopped or state is None:
            return KeptSolve(net, record, resumed=False)
        if not solution.iterations:
            log.warning("a %.3g-s segment made no iteration: solving the rest in one piece",
                        segment)
            checkpoint_every = None
        if remaining is not None and spent >= limit:  # type: ignore[operator]
            return KeptSolve(net, record, resumed=False)


def _segmentable(program: ConvexProgram, solver: str, options: Mapping[str, object]) -> bool:
    """Whether the solve will run a torch method that takes a warm start."""
    if program.family not in WARM_STARTED_FAMILIES:
        return False
    if solver.lower() == "torch":
        return True
    return solver.lower() == "auto" and auto_order(program, options)[:1] == ["torch"]


def _accepts_inaccurate(solver: str, options: Mapping[str, object],
                        backend_options: Mapping[str, Mapping[str, object]]) -> bool:
    """The caller's ``accept_inaccurate`` for the backend that ran."""
    return bool({**options, **backend_options.get(solver, {})}.get("accept_inaccurate", False))


def _state(solution: Solution) -> dict[str, object]:
    """What a continuation starts from: the point, the method, and the Huber width reached."""
    smoothing = solution.info.get("smoothing")
    return {"values": {k: torch.as_tensor(v) for k, v in solution.values.items()},
            "method": solution.info.get("method"),
            "smoothing": None if smoothing is None else float(smoothing)}


def _continuation(state: Mapping[str, object]) -> dict[str, object]:
    """The torch options that continue a kept solve: its method, warm-started at its point
    (and, for the accelerated gradient, at the Huber width it had reached)."""
    values = {k: v.numpy() for k, v in state["values"].items()}  # type: ignore[union-attr]
    options: dict[str, object] = {"warm_start": values}
    if state.get("method") is not None:
        options["method"] = state["method"]
    smoothing = state.get("smoothing")
    if state.get("method") == "apg" and smoothing is not None and math.isfinite(smoothing) \
            and 0 < smoothing <= 1:  # type: ignore[operator]
        options["smoothing_start"] = smoothing
    return options


def _store(path: Path, net: nn.Module, record: dict[str, object],
           state: dict[str, object] | None) -> None:
    """Keep a solve at ``path``, atomically."""
    payload = {"head": head_to_dict(net), "record": record,  # type: ignore[arg-type]
               "state": state}
    write_atomic(path, lambda tmp: torch.save(payload, tmp))


def _load(path: Path) -> tuple[nn.Module, dict[str, object], dict | None] | None:
    """The head, record and continuation state kept at ``path``, or None when there is none."""
    if not path.is_file():
        return None
    stored = read_torch(path, what="kept solve")
    log.info("kept solve %s", path.name)
    return (head_from_dict(stored["head"]), dict(stored["record"]),  # type: ignore[index]
            stored.get("state"))  # type: ignore[union-attr]
