"""Conic backends through cvxpy: MOSEK (when licensed), Clarabel (interior point) and SCS
(operator splitting). The program renders itself (``program.to_cvxpy()``); this module only
chooses tolerances, runs the solver, and turns its status into a :class:`Solution` or a typed
error — never a silent non-optimal answer."""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable

import cvxpy as cp

from convexrobust._validation import check_bool, check_int, check_positive
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


def _solver_options(name: str, tol: float | None, max_iters: int | None,
                    time_limit: float | None) -> dict[str, object]:
    """The cvxpy keyword arguments of ``name`` for the common options."""
    opts = _accuracy_options(name, tol, max_iters)
    if time_limit is not None:
        if name == "clarabel":
            opts["time_limit"] = time_limit
        elif name == "scs":
            opts["time_limit_secs"] = time_limit
        else:
            opts.setdefault("mosek_params", {})["MSK_DPAR_OPTIMIZER_MAX_TIME"] = time_limit
    return opts


def _accuracy_options(name: str, tol: float | None, max_iters: int | None
                      ) -> dict[str, object]:
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
        return {"eps_abs": tol, "eps_rel": tol,
                "max_iters": 200_000 if max_iters is None else max_iters}
    params: dict[str, object] = {}
    if tol is not None:
        params = {"MSK_DPAR_INTPNT_CO_TOL_REL_GAP": tol, "MSK_DPAR_INTPNT_CO_TOL_PFEAS": tol,
                  "MSK_DPAR_INTPNT_CO_TOL_DFEAS": tol}
    if max_iters is not None:
        params["MSK_IPAR_INTPNT_MAX_ITERATIONS"] = max_iters
    return {"mosek_params": params} if params else {}


def solve_conic(program: ConvexProgram, *, solver: str, tol: float | None = None,
                max_iters: int | None = None, time_limit: float | None = None,
                verbose: bool = False, accept_inaccurate: bool = False,
                problem: cp.Problem | None = None, **solver_options: object) -> Solution:
    """Solve ``program`` (or the user's extended ``problem``) with a cvxpy conic solver.

    ``tol``: the solver's relative accuracy (gap and feasibility; default 1e-6);
    ``max_iters``, ``time_limit`` (seconds): its budget — a solve stopped by either ends with
    status ``"user_limit"`` (a :class:`SolverFailedError` unless ``accept_inaccurate``);
    ``solver_options``: the solver's own settings, passed through. A program with more than
    :data:`MAX_CONSTRAINT_NONZEROS` constraint nonzeros raises :class:`SolverFailedError` with
    status ``"too_large"`` before cvxpy compiles it (a ``problem`` the caller built is solved as
    given)."""
    start = time.perf_counter()
    if tol is not None:
        tol = check_positive(tol, "tol", allow_zero=False)
        if tol >= 1:
            raise InvalidInputError(f"tol must be a relative accuracy in (0, 1), got {tol!r}")
    if max_iters is not None:
        max_iters = check_int(max_iters, "max_iters", minimum=1)
    if time_limit is not None:
        time_limit = check_positive(time_limit, "time_limit", allow_zero=False)
    verbose = check_bool(verbose, "verbose")
    accept_inaccurate = check_bool(accept_inaccurate, "accept_inaccurate")
    nonzeros = program.n_constraint_nonzeros()
    if problem is None and nonzeros > MAX_CONSTRAINT_NONZEROS:
        # cvxpy would spend minutes and tens of GB compiling it (or run out of memory)
        raise SolverFailedError(
            f"{program.describe()} has about {nonzeros / 1e6:.1f}M constraint nonzeros, more "
            f"than a conic solver takes here ({MAX_CONSTRAINT_NONZEROS / 1e6:.1f}M, "
            "convexrobust.solvers.conic.MAX_CONSTRAINT_NONZEROS); use solver='torch' or "
            "'auto', or raise that limit on a machine with the memory", status="too_large",
            solver=solver)
    if problem is None:
        problem = program.to_cvxpy()
    elif not isinstance(problem, cp.Problem):
        raise InvalidInputError("problem must be a cvxpy.Problem from program.to_cvxpy()")
    opts = _solver_options(solver, tol, max_iters, time_limit) | solver_options
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
    except (TypeError, ValueError, OverflowError) as err:
        if not solver_options:
            raise
        # the solver's own settings are passed through unchecked: name them in the error
        raise InvalidInputError(
            f"{solver} rejected the options {sorted(solver_options)}: {err}. See the "
            f"{solver} documentation for its settings") from None
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


#: The most constraint-matrix nonzeros (:meth:`ConvexProgram.n_constraint_nonzeros`) a conic
#: backend takes: beyond it cvxpy's compilation alone needs tens of GB. A larger program is
#: refused with status "too_large" (a fallback chain goes on to the next solver).
MAX_CONSTRAINT_NONZEROS = 30_000_000
#: "auto" gives Clarabel (interior point: a dense factorisation per iteration) at most this many
#: scalar unknowns; larger programs go to SCS or torch.
AUTO_CLARABEL_MAX_VARIABLES = 20_000
#: "auto" gives a conic solver at most this many samples × outputs: each is a constraint block
#: (an LMI of order d + 1 for robust SDPs, cone rows for ReLU programs), and the conic solvers'
#: cost grows with them as much as with the unknowns; larger programs go to torch.
AUTO_CONIC_MAX_CONSTRAINT_BLOCKS = 2_000
#: "auto" gives a conic solver a robust polynomial program (one LMI of order d + 2 per sample,
#: output and side) of at most this many constraint nonzeros; larger ones go to torch (the
#: measured crossover: benchmarks/targets.py, target "robust-sdp-breast-cancer", and the README).
AUTO_CONIC_MAX_ROBUST_SDP_NONZEROS = 1_000_000
#: Options only the torch backend takes: a conic backend given one rejects the call.
_TORCH_ONLY = ("method", "device", "dtype", "seed", "progress", "batch_size", "distributed")


def accepts(program: ConvexProgram, options: dict[str, object]) -> str | None:
    """Why a conic backend cannot take ``options`` (None when it can: every program renders to
    cvxpy)."""
    torch_only = sorted(set(options) & set(_TORCH_ONLY))
    if torch_only:
        return f"{', '.join(torch_only)}: only solver='torch' takes these options"
    return None


def auto_limit(program: ConvexProgram, *, max_variables: int | None = None) -> str | None:
    """Why "auto" should not give ``program`` to a conic backend (None when it may)."""
    blocks = program.n_samples * program.n_outputs
    if program.n_constraint_nonzeros() > MAX_CONSTRAINT_NONZEROS:
        return f"about {program.n_constraint_nonzeros():,} constraint nonzeros"
    if blocks > AUTO_CONIC_MAX_CONSTRAINT_BLOCKS:
        return f"{blocks} samples × outputs > {AUTO_CONIC_MAX_CONSTRAINT_BLOCKS}"
    if max_variables is not None and program.n_variables() > max_variables:
        return f"{program.n_variables()} unknowns > {max_variables}"
    if program.family == "polynomial" and program.threat is not None \
            and program.n_constraint_nonzeros() > AUTO_CONIC_MAX_ROBUST_SDP_NONZEROS:
        return (f"a robust SDP of about {program.n_constraint_nonzeros():,} constraint "
                f"nonzeros > {AUTO_CONIC_MAX_ROBUST_SDP_NONZEROS:,}")
    return None


def register(register_solver: Callable[..., None]) -> None:
    """Register the conic backends with :func:`convexrobust.solvers.register_solver`."""
    for name in ("clarabel", "scs", "mosek"):
        check = check_mosek if name == "mosek" else functools.partial(_check_installed, name)
        limit = functools.partial(
            auto_limit, max_variables=AUTO_CLARABEL_MAX_VARIABLES if name == "clarabel" else None)
        register_solver(name, functools.partial(solve_conic, solver=name), check,
                        accepts=accepts, auto_limit=limit)
