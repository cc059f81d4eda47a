"""HOW to solve: ``solve(program, solver="auto", **options) -> Solution``, the registry of
backends and the one ``"auto"`` policy.

A backend is registered under a name with :func:`register_solver`: a function
``run(program, **options) -> Solution``, an availability ``check()`` that raises
:class:`~convexrobust.errors.SolverUnavailableError` naming the fix, and, as cvxpy's solvers
say what they ``accept``, two questions ``"auto"`` asks it about a program — ``accepts(program,
options)``: can it solve this program at all (None, or the reason it cannot), and
``auto_limit(program)``: is the program within the size ``"auto"`` hands it (None, or the reason
it is too large). Modules: ``conic.py`` (cvxpy: MOSEK, Clarabel, SCS), ``torch_backend.py``
(``"torch"``: the first-order PyTorch methods, one file per algorithm and family —
``relu_admm.py``, ``relu_first_order.py``, ``polynomial_admm.py``,
``polynomial_first_order.py``, ``polynomial_factored.py``, ``gated_relu_first_order.py`` —
over their shared layer),
``data_parallel.py`` (sums over samples in chunks or over ``torch.distributed``).

``"auto"`` tries the backends of :data:`AUTO_PREFERENCE` in turn — MOSEK, Clarabel, SCS, torch —
skipping those that are unavailable, do not accept the program or are past their size limit,
and moves on to the next when one fails numerically (an inaccurate or stalled status; an
infeasible or unbounded verdict, which every solver would repeat, is raised at once). Every
attempt is recorded in ``solution.info["auto_failures"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from convexrobust.errors import InvalidInputError, SolverFailedError, SolverUnavailableError
from convexrobust.problems.base import ConvexProgram
from convexrobust.solvers.solution import Solution
from convexrobust.solvers.torch_backend import PASSIVE_OPTIONS

__all__ = ["AUTO_PREFERENCE", "Solution", "auto_order", "available_solvers", "register_solver",
           "solve", "unregister_solver"]

log = logging.getLogger(__name__)

#: Statuses every solver would repeat: raised at once, never a reason to try the next one.
DEFINITIVE_STATUSES = ("infeasible", "unbounded", "infeasible_inaccurate",
                       "unbounded_inaccurate")
#: The order in which "auto" tries the backends (each skipped when it is unavailable, does not
#: accept the program or is past its size limit).
AUTO_PREFERENCE = ("mosek", "clarabel", "scs", "torch")


@dataclass(frozen=True)
class Backend:
    """A registered solver (see the module docstring)."""

    name: str
    run: Callable[..., Solution]
    check: Callable[[], None]
    accepts: Callable[[ConvexProgram, dict[str, object]], str | None]
    auto_limit: Callable[[ConvexProgram], str | None]

    def available(self) -> bool:
        try:
            self.check()
        except SolverUnavailableError:
            return False
        return True


_REGISTRY: dict[str, Backend] = {}


def _anything(program: ConvexProgram, options: dict[str, object] | None = None) -> None:
    return None


def register_solver(name: str, run: Callable[..., Solution],
                    check: Callable[[], None] = lambda: None, *,
                    accepts: Callable[[ConvexProgram, dict[str, object]], str | None]
                    = _anything,
                    auto_limit: Callable[[ConvexProgram], str | None] = _anything) -> None:
    """Register a backend under ``name``: ``run(program, **options)``, ``check()`` (raises
    :class:`SolverUnavailableError` when it cannot run here), ``accepts(program, options)``
    and ``auto_limit(program)`` (None, or why it cannot take / "auto" should not give it the
    program). A backend registered by a user joins "auto" only when it is named in
    :data:`AUTO_PREFERENCE`; it is always reachable by name."""
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"a solver name must be a non-empty string, got {name!r}")
    if not callable(run):
        raise InvalidInputError(f"run must be callable, got {run!r}")
    _REGISTRY[name.lower()] = Backend(name.lower(), run, check, accepts, auto_limit)


def unregister_solver(name: str) -> None:
    """Remove a backend registered by :func:`register_solver` (a no-op for unknown names)."""
    _REGISTRY.pop(str(name).lower(), None)


def available_solvers() -> list[str]:
    """Names of the registered backends that can run on this machine."""
    return [name for name, backend in _REGISTRY.items() if backend.available()]


def auto_order(program: ConvexProgram, options: Mapping[str, object] | None = None
               ) -> list[str]:
    """The backends "auto" would try on ``program``, in order; each skipped one is logged with
    its reason at debug level."""
    options = dict(options or {})
    order = []
    for name in AUTO_PREFERENCE:
        backend = _REGISTRY.get(name)
        if backend is None or not backend.available():
            continue
        reason = backend.accepts(program, options) or backend.auto_limit(program)
        if reason is not None:
            log.debug("auto: skipping %s (%s)", name, reason)
            continue
        order.append(name)
    return order


def _check_program(program: object) -> ConvexProgram:
    if not isinstance(program, ConvexProgram):
        raise InvalidInputError(
            "solve() takes a ConvexReLU, ConvexPolynomial or ConvexGatedReLU program, got "
            f"{type(program).__name__}"
        )
    return program


def _backend(solver: object) -> Backend:
    if not isinstance(solver, str):
        raise InvalidInputError(f"solver must be a name such as 'auto' or 'clarabel', got "
                                f"{solver!r}")
    name = solver.lower()
    if name not in _REGISTRY:
        raise InvalidInputError(
            f"unknown solver {solver!r}; choose 'auto' or one of {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def _check_backend_options(backend_options: object) -> dict[str, dict[str, object]]:
    if backend_options is None:
        return {}
    if not isinstance(backend_options, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Mapping) for k, v in backend_options.items()):
        raise InvalidInputError("backend_options must map solver names to option dicts, e.g. "
                                "{'torch': {'tol': 1e-3}}")
    unknown = sorted(set(k.lower() for k in backend_options) - set(_REGISTRY))
    if unknown:
        raise InvalidInputError(f"backend_options names unknown solvers {unknown}; choose from "
                                f"{', '.join(sorted(_REGISTRY))}")
    return {k.lower(): dict(v) for k, v in backend_options.items()}


def solve(program: ConvexProgram, solver: str = "auto", *, fallback: bool = False,
          best_effort: bool = False,
          backend_options: Mapping[str, Mapping[str, object]] | None = None,
          **options: object) -> Solution:
    """Solve ``program`` with ``solver`` and return a :class:`Solution`.

    ``solver``: ``"auto"`` (module docstring), or a registered name: ``"clarabel"``, ``"scs"``,
    ``"mosek"`` (:mod:`~convexrobust.solvers.conic`) or ``"torch"``
    (:mod:`~convexrobust.solvers.torch_backend`).

    ``options`` go to every backend that runs; ``backend_options={"torch": {...}}`` adds options
    for one backend only (applied when that backend runs, e.g. a looser torch ``tol`` inside
    "auto"). The conic backends take ``tol`` (a relative accuracy), ``max_iters``, ``verbose``,
    ``accept_inaccurate`` (return a non-optimal status instead of raising
    :class:`~convexrobust.errors.SolverFailedError`) and ``problem`` (a ``cvxpy.Problem`` from
    ``program.to_cvxpy()`` to which the caller added constraints); ``"torch"`` takes
    ``method``, ``device``, ``dtype``, ``tol`` (its meaning per method is stated by each solver
    and recorded as ``solution.gap_kind``), ``max_iters``, ``time_limit``, ``seed``,
    ``progress``, ``accept_inaccurate`` and the method's own options; ``checkpoint`` and
    ``checkpoint_every`` (:data:`~convexrobust.solvers.torch_backend.PASSIVE_OPTIONS`) go to
    torch alone, whatever the solver.

    ``fallback=True`` with a named solver: when it fails numerically, go on along "auto"'s order
    (with each later backend's own ``backend_options`` only — ``options`` were meant for the
    named solver); the failures are recorded in ``solution.info["auto_failures"]``.

    ``best_effort=True``: the last solver of the chain ("auto"'s, or the fallback's) runs with
    ``accept_inaccurate=True``, so a chain whose every solver ends inaccurate returns the last
    one's point with its non-optimal ``status`` (judged as always) instead of raising — what
    scikit-learn's estimators do when they run out of iterations.
    """
    program = _check_program(program)
    per_backend = _check_backend_options(backend_options)
    # the torch methods' checkpoint options observe a torch solve: torch's alone
    passive = {k: options.pop(k) for k in PASSIVE_OPTIONS & set(options)}
    if passive:
        per_backend["torch"] = {**passive, **per_backend.get("torch", {})}
    for flag, value in (("fallback", fallback), ("best_effort", best_effort)):
        if not isinstance(value, bool):
            raise InvalidInputError(f"{flag} must be True or False, got {value!r}")
    if isinstance(solver, str) and solver.lower() == "auto":
        chain = [(name, {**options, **per_backend.get(name, {})})
                 for name in auto_order(program, options)]
        if not chain:
            raise SolverUnavailableError(
                f"no installed solver accepts {program.describe()}: install clarabel or scs "
                "(pip install clarabel scs)")
        return _solve_chain(program, chain, best_effort)
    backend = _backend(solver)
    backend.check()
    first = {**options, **per_backend.get(backend.name, {})}
    reason = backend.accepts(program, first)
    if reason is not None:
        raise InvalidInputError(f"{backend.name} cannot solve {program.describe()}: {reason}")
    rest = [(name, per_backend.get(name, {})) for name in auto_order(program)
            if name != backend.name] if fallback else []
    return _solve_chain(program, [(backend.name, first), *rest], best_effort)


def _solve_chain(program: ConvexProgram, chain: list[tuple[str, dict[str, object]]],
                 best_effort: bool) -> Solution:
    """Run the backends of ``chain`` in turn until one returns (see :func:`solve`)."""
    failures: list[str] = []
    if best_effort:
        chain = [*chain[:-1], (chain[-1][0], {**chain[-1][1], "accept_inaccurate": True})]
    for position, (name, opts) in enumerate(chain, start=1):
        try:
            solution = _REGISTRY[name].run(program, **opts)
        except SolverFailedError as err:
            if err.status in DEFINITIVE_STATUSES or len(chain) == 1:
                raise  # a lone solver's own error says more than "every solver failed"
            failures.append(f"{name}: {err.status}")
            if position < len(chain):
                log.warning("%s failed on %s (%s); trying the next solver", name,
                            program.describe(), err.status)
            continue
        solution.info["auto_failures"] = failures
        return solution
    raise SolverFailedError(
        f"every solver failed on {program.describe()}: " + "; ".join(failures)
        + ". Loosen tol, raise max_iters, or rescale the data", status="failed", solver="auto")


def _register_builtin() -> None:
    from convexrobust.solvers import conic, torch_backend

    conic.register(register_solver)
    register_solver("torch", torch_backend.solve_torch, accepts=torch_backend.accepts)


_register_builtin()
