"""Conic backends through cvxpy: MOSEK (when licensed), Clarabel (interior point) and SCS
(operator splitting). The program renders itself (``program.to_cvxpy()``); this module only
chooses tolerances, runs the solver, and turns its status into a :class:`Solution` or a typed
error — never a silent non-optimal answer."""

from __future__ import annotations

import functools
import logging
import time
import warnings

import cvxpy as cp

from convexrobust.errors import InvalidInputError, SolverFailedError, SolverUnavailableError
from convexrobust.problems.base import ConvexProgram
from convexrobust.solvers.solution import Solution

log = logging.getLogger(__name__)

_CVXPY_NAMES = {"clarabel": cp.CLARABEL, "scs": cp.SCS, "mosek": cp.MOSEK}


@functools.cache
def check_mosek() -> None:
    """Raise :class:`SolverUnavailableError` unless MOSEK is installed and licensed."""
    try:
        import mosek
    except ImportError:
        raise SolverUnavailableError(
            "MOSEK is not installed: pip install 'convexrobust[mosek]' (and add a licence), "
            "or use solver='clarabel' / 'scs' / 'auto'"
        ) from None
    try:
        mosek.Env().checkoutlicense(mosek.feature.pts)
    except mosek.Error as err:
        raise SolverUnavailableError(
            "MOSEK is installed but no licence was found "
            f"({err}): put mosek.lic in ~/mosek/ or set MOSEKLM_LICENSE_FILE "
            "(free academic licences: mosek.com), or use solver='clarabel' / 'scs' / 'auto'"
        ) from None


def _check_installed(name: str) -> None:
    if _CVXPY_NAMES[name] not in cp.installed_solvers():
        raise SolverUnavailableError(
            f"{name} is not installed for cvxpy: pip install {name}"
        )


def _solver_options(name: str, tol: float | None, max_iters: int | None) -> dict[str, object]:
    if name == "clarabel":
        # 1e-6: at 1e-8 Clarabel stops "almost solved" (gap stalls near 2e-8) on half of small
        # lifted SDPs, and on about 1 in 16 at 1e-7; every test instance solves at 1e-6.
        tol = 1e-6 if tol is None else tol
        # The lifted SDPs put dense rows in the constraint matrix; Clarabel's default static
        # regularisation (1e-8) then fails on the first factorisation (seen on breast cancer).
        opts: dict[str, object] = {"tol_gap_abs": tol, "tol_gap_rel": tol, "tol_feas": tol,
                                   "static_regularization_constant": 1e-7}
        if max_iters is not None:
            opts["max_iter"] = max_iters
        return opts
    if name == "scs":
        tol = 1e-6 if tol is None else tol
        return {"eps_abs": tol, "eps_rel": tol, "max_iters": max_iters or 200_000}
    params: dict[str, object] = {}
    if tol is not None:
        params = {"MSK_DPAR_INTPNT_CO_TOL_REL_GAP": tol, "MSK_DPAR_INTPNT_CO_TOL_PFEAS": tol,
                  "MSK_DPAR_INTPNT_CO_TOL_DFEAS": tol}
    if max_iters is not None:
        params["MSK_IPAR_INTPNT_MAX_ITERATIONS"] = max_iters
    return {"mosek_params": params} if params else {}


def solve_conic(program: ConvexProgram, *, solver: str, tol: float | None = None,
                max_iters: int | None = None, verbose: bool = False,
                accept_inaccurate: bool = False, problem: cp.Problem | None = None,
                **solver_options: object) -> Solution:
    """Solve ``program`` (or the user's extended ``problem``) with a cvxpy conic solver."""
    start = time.perf_counter()
    if problem is None:
        problem = program.to_cvxpy()
    elif not isinstance(problem, cp.Problem):
        raise InvalidInputError("problem must be a cvxpy.Problem from program.to_cvxpy()")
    opts = _solver_options(solver, tol, max_iters) | solver_options
    log.info("solving %s with %s", program.describe(), solver)
    try:
        with warnings.catch_warnings():  # cvxpy warns on inaccurate results; we raise instead
            warnings.filterwarnings("ignore", message="Solution may be inaccurate")
            problem.solve(solver=_CVXPY_NAMES[solver], verbose=verbose, **opts)
    except cp.error.SolverError as err:
        raise SolverFailedError(
            f"{solver} failed on {program.describe()}: {err}. Try another solver, a looser tol, "
            "or rescale the data", status="solver_error", solver=solver,
        ) from None
    wall = time.perf_counter() - start
    status = problem.status
    if status in (cp.INFEASIBLE, cp.UNBOUNDED, cp.INFEASIBLE_INACCURATE, cp.UNBOUNDED_INACCURATE):
        raise SolverFailedError(f"{solver} reports the problem {status}", status=status,
                                solver=solver)
    returned_point = all(v.value is not None for v in problem.variables())
    acceptable = status == cp.OPTIMAL or (
        accept_inaccurate and status in (cp.OPTIMAL_INACCURATE, cp.USER_LIMIT) and returned_point)
    if not acceptable:
        raise SolverFailedError(
            f"{solver} stopped with status {status!r} (not optimal). Raise max_iters, loosen tol, "
            "try another solver, or pass accept_inaccurate=True to get the point anyway",
            status=status, solver=solver,
        )
    stats = problem.solver_stats
    info: dict[str, object] = {"solve_time": stats.solve_time,
                               "compile_time": problem.compilation_time}
    return Solution(
        program=program,
        values=program.values_from_cvxpy(problem),
        status="optimal" if status == cp.OPTIMAL else status,
        solver=solver,
        wall_time=wall,
        iterations=stats.num_iters,
        solver_objective=float(problem.value) / program.cvxpy_scale,
        info=info,
    )


def register() -> None:
    """Register the conic backends with :mod:`convexrobust.solvers`."""
    from convexrobust.solvers import register_solver

    for name in ("clarabel", "scs"):
        register_solver(name, functools.partial(solve_conic, solver=name),
                        functools.partial(_check_installed, name))
    register_solver("mosek", functools.partial(solve_conic, solver="mosek"), check_mosek)
