"""Solves that outlive the run that started them: a program's solve kept on disk as soon as it
returns, reused when it finished, and continued from its last point when a time limit or a
stopped run cut it short.

A retraining run on all of CIFAR-10 solves programs that take longer than one sitting on two
CPU cores. :func:`solve_kept` solves a program by :func:`~convexrobust.solve` and writes the
result atomically to ``path``: the recovered head, its solve record (with the ``time_limit`` it
ran under) and, for a solve its time limit stopped, the state to continue from. With
``checkpoint_every`` it also keeps the state of a running solve every that many seconds — at the
first iteration boundary after, an outer iteration's end for the augmented Lagrangian (the
torch methods' ``checkpoint`` callback, :class:`~convexrobust.solvers.first_order.Checkpoints`:
the solve's iterations are unchanged) — under the status ``"checkpoint"``, its record saying how
far the solve has come (iterations, smoothing, the method's objective and stationarity or
certified gap); a run killed mid-solve loses what it did after its last checkpoint, time
included. A solve that fails after its method handed out a state (stopped by its time limit
without ``accept_inaccurate``) keeps that state as a checkpoint. Called again with
``resume=True`` it

- reuses a kept solve that ended for any reason but a time limit (solved to its tolerance, or
  stopped by something a rerun would repeat), and one a time limit stopped when the limit given
  now is not larger;
- continues a checkpoint, and a solve a smaller time limit stopped, from the state its
  method handed out (the torch methods that take a ``warm_start``: the polynomial programs'
  accelerated gradient and factored L-BFGS, the ReLU programs' augmented Lagrangian; each
  hands its state to the ``checkpoint`` callback when its budget stops it): the same method,
  with the options that state names (``warm_start`` and the method's own, such as the
  accelerated gradient's Huber width). The augmented Lagrangian's state is all of it, so from
  a checkpoint, or a stop at the end of an outer iteration, it goes on exactly as the
  uninterrupted solve would (a stop inside a subproblem re-enters that subproblem with its
  momentum reset); the polynomial methods restart their momentum and step sizes, take a
  different path and stop at their own tolerance. The program's optimum does not depend on
  it. The time already spent counts against the limit;
- solves again from the start a kept solve a smaller limit stopped that has no such state (a
  conic solver, an ADMM).

A kept solve that finished is never replaced by an unfinished one (a checkpoint, or a solve a
time limit stopped), so a shorter run without ``resume`` cannot overwrite a finished head.

The key under which a solve is kept is the caller's (:mod:`convexrobust.pipeline` hashes
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

import numpy as np
import torch
from torch import nn

from convexrobust._io import read_torch, write_atomic
from convexrobust._validation import check_positive
from convexrobust.errors import InvalidInputError, SolverFailedError
from convexrobust.networks.two_layer import head_from_dict, head_to_dict
from convexrobust.problems.base import ConvexProgram
from convexrobust.solvers import solve
from convexrobust.solvers.solution import Solution

__all__ = ["BUDGET_OPTIONS", "KeptSolve", "check_checkpoint_every", "solve_kept",
           "solve_record"]

log = logging.getLogger(__name__)

#: Solver options that bound a solve's effort without changing its program or its optimum:
#: they are left out of a kept solve's key, so a solve one time limit stopped is continued
#: under a larger one.
BUDGET_OPTIONS = frozenset({"time_limit"})

#: The statuses of a solve its time limit stopped (the torch methods', the conic solvers').
_STOPPED = frozenset({"time_limit", "user_limit"})
#: The status of a point kept while its solve was still running.
_CHECKPOINT = "checkpoint"
#: What a checkpoint's record says of the solve's progress (what its method hands out of it).
_PROGRESS = ("iterations", "smoothing", "objective", "stationarity", "certified_gap",
             "al_violation")


@dataclass
class KeptSolve:
    """A solve as :func:`solve_kept` returns it: the recovered head, its record (status,
    solver, cumulative ``solve_time``, objective, violation, ``duality_gap``, ``neurons``,
    ``time_limit``: the limit of its last run, ``segments``: the runs it took; for a continued
    solve ``continued_from``: the seconds its earlier runs took), ``resumed``: whether the
    head was loaded as kept rather than solved (wholly or partly) by this call, its ``values``
    and ``duals``."""

    net: nn.Module
    record: dict[str, object]
    resumed: bool
    #: The solve's values (the program's variables, float64 arrays); None for a head kept
    #: without them
    values: dict[str, np.ndarray] | None = None
    #: The hinge's dual estimates of a polynomial head's accelerated-gradient solve made by this
    #: call (``Solution.info["duals"]``), which a warm start on the same samples takes; None
    #: otherwise
    duals: np.ndarray | None = None


def solve_record(solution: Solution, seconds: float) -> dict[str, object]:
    """What is kept of a solve: its status, solver (and torch ``method``), seconds, objective
    and violation, and ``duality_gap``, the relative gap to the lower bound the torch methods
    certify (``Solution.info["duality_gap"]``: an upper bound on how far the head is from the
    program's optimum, so a solve stopped by a time limit still says how unfinished it is);
    None where the solver gives none (the conic solvers, which stop at their own tolerance)."""
    gap = solution.info.get("duality_gap")
    return {"status": solution.status, "solver": solution.solver,
            "method": solution.info.get("method"), "solve_time": seconds,
            "objective": solution.objective, "violation": solution.violation,
            "duality_gap": None if gap is None else float(gap)}


def check_checkpoint_every(value: object, cache: object) -> float | None:
    """``checkpoint_every`` checked: None, or seconds > 0 with a cache to keep the points in."""
    if value is None:
        return None
    seconds = check_positive(value, "checkpoint_every", allow_zero=False)
    if cache is None:
        raise InvalidInputError("checkpoint_every keeps a running solve's point in the cache "
                                "directory: pass cache=DIR")
    return seconds


def solve_kept(build: Callable[[], ConvexProgram], solver: str, *,
               options: Mapping[str, object],
               backend_options: Mapping[str, Mapping[str, object]], path: Path | None,
               resume: bool, checkpoint_every: float | None = None,
               start: Mapping[str, object] | None = None) -> KeptSolve:
    """Solve the program ``build()`` makes (built only when it is solved) with ``solver`` and
    ``options`` (its budget is ``options["time_limit"]``; ``backend_options`` as for
    :func:`~convexrobust.solve`), keeping it at ``path`` (None: nowhere) and, with ``resume``,
    reusing or continuing what is kept there (module docstring). ``start``: torch options
    for a solve that does not continue a kept one (a ``warm_start`` and the ``method`` that
    takes it; the record then says ``"warm_started": True``)."""
    limit = options.get("time_limit")
    kept = _load(path) if resume and path is not None else None
    spent, runs, state = 0.0, 0, None
    if kept is not None:
        net, record, state, values = kept
        if _finished(record, limit):
            return KeptSolve(net, record, resumed=True, values=values)
        if state is not None:
            spent, runs = float(record["solve_time"]), int(record.get("segments", 1))
    # a finished solve kept there (a run without resume) is never replaced by an unfinished one
    guard = kept is None and path is not None and _holds_finished(path)
    continued = {"continued_from": spent} if state is not None else {}
    t0 = perf_counter()
    program = build()
    run = {k: v for k, v in options.items() if k not in BUDGET_OPTIONS}
    if limit is not None:
        # a checkpoint kept past the limit still returns its point, after at most a second
        run["time_limit"] = max(limit - spent, 1.0) if state is not None else limit
    torch_options = dict(backend_options.get("torch", {}))
    if state is not None:
        solver = "torch"  # a state is kept only from a torch method
        torch_options.update(_arrays(state["options"]))
    elif start is not None:
        torch_options.update(start)
    latest: list[dict] = []  # the last state the method handed out

    def keep_state(point: dict[str, object]) -> None:
        """Keep ``point`` as a checkpoint of this run."""
        if path is not None and not guard:
            progress = {k: point[k] for k in _PROGRESS if k in point}
            _store(path, None, {"status": _CHECKPOINT, "solver": "torch",
                                "solve_time": spent + perf_counter() - t0,
                                "segments": runs + 1, "time_limit": limit, **progress,
                                **continued}, _tensors(point), None)

    def save(point: dict[str, object]) -> None:
        latest[:] = [point]
        if checkpoint_every is not None:
            keep_state(point)

    torch_options.update(checkpoint=save, checkpoint_every=checkpoint_every or math.inf)
    try:
        solution = solve(program, solver,
                         backend_options={**backend_options, "torch": torch_options}, **run)
    except SolverFailedError:
        if latest:  # e.g. stopped by its time limit without accept_inaccurate: continuable
            keep_state(latest[0])
        raise
    net = solution.network()
    warm = state is None and start is not None and solution.solver == "torch"
    record = {**solve_record(solution, spent + perf_counter() - t0), "neurons": net.n_neurons,
              "time_limit": limit, "segments": runs + 1, **continued,
              **({"warm_started": True} if warm else {})}
    stopped = solution.status in _STOPPED
    if path is not None and not (guard and stopped):
        _store(path, net, record,
               _tensors(latest[0]) if stopped and solution.solver == "torch" and latest
               else None, solution.values)
    return KeptSolve(net, record, resumed=False, values=solution.values,
                     duals=solution.info.get("duals"))


def _finished(record: Mapping[str, object], limit: float | None) -> bool:
    """Whether a kept solve is reused as it is under ``limit`` (module docstring)."""
    status = record["status"]
    if status == _CHECKPOINT:
        return False
    if status not in _STOPPED:
        return True
    before = record.get("time_limit", record["solve_time"])
    if before is None:  # stopped by something else than a time limit: a rerun repeats it
        return True
    return limit is not None and limit <= float(before)  # type: ignore[arg-type]


def _holds_finished(path: Path) -> bool:
    """Whether a finished solve is kept at ``path``."""
    if not path.is_file():
        return False
    status = read_torch(path, what="kept solve")["record"]["status"]  # type: ignore[index]
    return status != _CHECKPOINT and status not in _STOPPED


def _tensors(state: object) -> object:
    """A state with its arrays as tensors (what ``torch.load(weights_only=True)`` reads)."""
    if isinstance(state, Mapping):
        return {k: _tensors(v) for k, v in state.items()}
    return torch.as_tensor(state) if isinstance(state, np.ndarray) else state


def _arrays(state: object) -> object:
    """The inverse of :func:`_tensors`: a kept state's tensors as numpy arrays."""
    if isinstance(state, Mapping):
        return {k: _arrays(v) for k, v in state.items()}
    return state.numpy() if isinstance(state, torch.Tensor) else state


def _store(path: Path, net: nn.Module | None, record: dict[str, object],
           state: dict[str, object] | None, values: Mapping[str, np.ndarray] | None) -> None:
    """Keep a solve at ``path``, atomically."""
    payload = {"head": None if net is None else head_to_dict(net),  # type: ignore[arg-type]
               "record": record, "state": state,
               "values": None if values is None else _tensors(dict(values))}
    write_atomic(path, lambda tmp: torch.save(payload, tmp))


def _load(path: Path) -> tuple[nn.Module | None, dict[str, object], dict | None,
                              dict[str, np.ndarray] | None] | None:
    """The head (None for a checkpoint), record, continuation state and values kept at
    ``path``, or None when there is none."""
    if not path.is_file():
        return None
    stored = read_torch(path, what="kept solve")
    log.info("kept solve %s (%s)", path.name, stored["record"]["status"])  # type: ignore[index]
    head = stored["head"]  # type: ignore[index]
    values = stored.get("values")  # type: ignore[union-attr]
    return (None if head is None else head_from_dict(head), dict(stored["record"]),
            stored.get("state"),  # type: ignore[union-attr]
            None if values is None else _arrays(values))  # type: ignore[return-value]
