"""HOW to solve: ``solve(program, solver="auto", **options) -> Solution`` and the registry.

A backend is a function ``(program, **options) -> Solution`` registered under a name with
:func:`register_solver`, together with an availability check that raises
:class:`~convexrobust.errors.SolverUnavailableError` naming the fix. ``"auto"`` picks MOSEK when
it is installed and licensed, else Clarabel for small problems and SCS for larger ones, and
falls back to the next of these when one fails numerically. ``"torch"`` runs the first-order
PyTorch solvers on any device: ``relu_admm.py`` (nominal ReLU programs, ADMM with a cached
factorisation), ``relu_first_order.py`` (every ReLU program, augmented Lagrangian + FISTA),
``polynomial_admm.py`` (nominal SDPs, ADMM with a cached factorisation and a certified duality
gap) and ``polynomial_first_order.py`` (the SDPs, FISTA with an exact projection and exact TRS
worst cases); ``data_parallel.py`` streams their sums over samples in chunks or shards them over
``torch.distributed``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass

from convexrobust.errors import InvalidInputError, SolverFailedError, SolverUnavailableError
from convexrobust.problems.base import ConvexProgram
from convexrobust.solvers.solution import Solution

__all__ = ["Solution", "available_solvers", "register_solver", "solve"]

log = logging.getLogger(__name__)
_DEFINITIVE = ("infeasible", "unbounded", "infeasible_inaccurate", "unbounded_inaccurate")

#: Above this many scalar unknowns "auto" prefers SCS (first-order) to Clarabel (interior point).
AUTO_CLARABEL_MAX_VARIABLES = 20_000


@dataclass(frozen=True)
class _Backend:
    run: Callable[..., Solution]
    check: Callable[[], None]


_REGISTRY: dict[str, _Backend] = {}


def register_solver(name: str, run: Callable[..., Solution],
                    check: Callable[[], None] = lambda: None) -> None:
    """Register a backend: ``run(program, **options)`` and ``check()`` (raises
    :class:`SolverUnavailableError` when the backend cannot run here)."""
    _REGISTRY[name.lower()] = _Backend(run, check)


def available_solvers() -> list[str]:
    """Names of the registered backends that can run on this machine."""
    names = []
    for name, backend in _REGISTRY.items():
        try:
            backend.check()
        except SolverUnavailableError:
            continue
        names.append(name)
    return names


def _auto_order(program: ConvexProgram) -> list[str]:
    """MOSEK when licensed, then Clarabel (small problems), then SCS."""
    order = []
    try:
        _REGISTRY["mosek"].check()
        order.append("mosek")
    except SolverUnavailableError:
        pass
    if program.n_variables() <= AUTO_CLARABEL_MAX_VARIABLES:
        order.append("clarabel")
    return order + ["scs"]


def _solve_auto(program: ConvexProgram, options: dict[str, object]) -> Solution:
    """Try the solvers of :func:`_auto_order` in turn; a numerical failure (not an infeasible
    or unbounded verdict, which every solver would repeat) moves on to the next one."""
    failures: list[str] = []
    for name in _auto_order(program):
        try:
            solution = _REGISTRY[name].run(program, **options)
        except SolverFailedError as err:
            if err.status in _DEFINITIVE:
                raise
            log.warning("auto: %s failed (%s); trying the next solver", name, err.status)
            failures.append(f"{name}: {err.status}")
            continue
        solution.info["auto_failures"] = failures
        return solution
    raise SolverFailedError("every solver failed: " + "; ".join(failures), status="failed",
                            solver="auto")


def solve(program: ConvexProgram, solver: str = "auto", **options: object) -> Solution:
    """Solve ``program`` with ``solver`` and return a :class:`Solution`.

    Options are passed to the backend; the conic backends take ``tol`` (a relative accuracy),
    ``max_iters``, ``verbose``, ``accept_inaccurate`` (return a non-optimal status instead of
    raising :class:`~convexrobust.errors.SolverFailedError`) and ``problem`` (a
    ``cvxpy.Problem`` from ``program.to_cvxpy()`` to which the caller added constraints);
    ``"torch"`` takes ``device``, ``dtype``, ``tol``, ``max_iters``, ``time_limit``, ``seed``,
    ``progress``, ``accept_inaccurate`` and ``method``: ``"admm"`` (ADMM with a cached
    factorisation, nominal programs with the squared or the hinge loss — ReLU: binary hinge;
    ``tol`` is a relative residual (ReLU, default 1e-3) or a certified relative duality gap
    (polynomial, default 1e-4)), ``"al"`` (ReLU: augmented Lagrangian + FISTA, every ReLU
    program) or ``"apg"`` (polynomial: accelerated projected gradient, every polynomial program
    but ℓ∞-diagonal; both with ``tol`` a relative stationarity, default 1e-6), or ``"auto"``
    (the default: ADMM where it applies and its linear system is small enough; see
    ``_solve_torch``). ``solution.info["method"]`` says which ran.
    """
    if not isinstance(program, ConvexProgram):
        raise InvalidInputError(
            f"solve() takes a ConvexReLU or ConvexPolynomial program, got {type(program).__name__}"
        )
    if not isinstance(solver, str):
        raise InvalidInputError(f"solver must be a name, got {solver!r}")
    name = solver.lower()
    if name == "auto":
        return _solve_auto(program, options)
    if name not in _REGISTRY:
        raise InvalidInputError(
            f"unknown solver {solver!r}; choose 'auto' or one of {', '.join(sorted(_REGISTRY))}"
        )
    backend = _REGISTRY[name]
    backend.check()
    return backend.run(program, **options)


def _solve_torch(program: ConvexProgram, method: str = "auto", **options: object) -> Solution:
    """First-order PyTorch solvers (CPU or GPU): one module per algorithm and program family.

    Each family has ADMM with a cached factorisation for the nominal programs it can take
    (``method="admm"``) and a method for every program: ReLU programs ``"al"``
    (``relu_first_order.py``: augmented Lagrangian + FISTA), polynomial programs ``"apg"``
    (``polynomial_first_order.py``: accelerated projected gradient with exact projections and
    exact ℓ2 worst cases). ADMM takes nominal programs with the squared loss or the hinge loss
    (ReLU: binary hinge only; ``relu_admm.py``, ``polynomial_admm.py``).

    ``"auto"`` takes ADMM when the program is one it handles (for polynomial programs: nominal
    ones; robust hinge SDPs take ADMM only with ``method="admm"``), the matrix it factors has
    order at most the module's ``MAX_FACTOR_SIZE`` (ReLU ``min(P·d̃, n)`` ≤ 4000, polynomial
    ``min(n, (d+1)(d+2)/2)`` ≤ 9000; the reasons are measured there) and every option given is
    one ADMM takes (an option only the other method takes selects it); otherwise ``"al"`` /
    ``"apg"``.
    """
    from convexrobust.solvers import polynomial_admm, relu_admm

    relu = program.family == "relu"
    other = "al" if relu else "apg"
    if not isinstance(method, str) or method.lower() not in ("auto", "admm", other):
        raise InvalidInputError(
            f"method for {program.family} programs must be 'auto', 'admm' or {other!r}, "
            f"got {method!r}")
    method = method.lower()
    admm = relu_admm if relu else polynomial_admm
    admm_solve = relu_admm.solve_relu_admm if relu else polynomial_admm.solve_polynomial_admm
    admm_options = set(inspect.signature(admm_solve).parameters) - {"program"}
    if method == "auto":
        # robust SDPs go to ADMM only when asked: its successive linearisation ran out of a
        # 20,000-iteration budget on 10-class retraining heads at large radii (digits, ε = 0.5)
        # where accelerated gradient returned better heads
        fits = (admm.admm_unsupported(program) is None and set(options) <= admm_options
                and (relu or program.threat is None))
        size = admm.admm_system_size(program) if fits else 0  # type: ignore[arg-type]
        method = "admm" if fits and size <= admm.MAX_FACTOR_SIZE else other
    if method == "admm":
        unknown = sorted(set(options) - admm_options)
        if unknown:
            raise InvalidInputError(f"the ADMM solver does not take {', '.join(unknown)}; "
                                    f"use method={other!r} for those options")
        return admm_solve(program, **options)  # type: ignore[arg-type]
    if relu:
        from convexrobust.solvers.relu_first_order import solve_relu_torch as solve_other
    else:
        from convexrobust.solvers.polynomial_first_order import (
            solve_polynomial_torch as solve_other,
        )
    solution = solve_other(program, **options)  # type: ignore[arg-type]
    solution.info.setdefault("method", other)
    return solution


from convexrobust.solvers import conic as _conic  # noqa: E402  (registers the backends)

_conic.register()
register_solver("torch", _solve_torch)
