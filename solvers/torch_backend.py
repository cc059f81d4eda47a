"""The ``"torch"`` backend: which first-order PyTorch method solves a program.

Each family has an ADMM with a cached factorisation for the programs it can take (nominal
ones; for ReLU also the robust hinge, binary or pairwise, under an ℓ2 threat; ``method="admm"``:
``relu_admm.py``, ``polynomial_admm.py``) and a method for every program it
takes at all: ReLU programs ``"al"`` (``relu_first_order.py``: augmented Lagrangian + FISTA),
polynomial programs ``"apg"`` (``polynomial_first_order.py``: accelerated projected gradient
with exact projections and exact ℓ2 worst cases). The ℓ∞ diagonal S-procedure (MATH.md §4) is
the one program no torch method takes (:func:`accepts`).

``method="auto"`` takes ADMM when the program is one it handles (for polynomial programs:
nominal ones; robust hinge SDPs take ADMM only with ``method="admm"``, whose successive
linearisation spends its budget on many inner solves of multi-class heads at large radii; for
ReLU programs all but the robust pairwise hinge, which takes ADMM only with ``method="admm"``:
on retraining heads at large radii it needs thousands of iterations where the augmented
Lagrangian stops in hundreds, if less exactly), the
matrix it factors has order at most the module's ``MAX_FACTOR_SIZE`` (ReLU ``min(P·d̃, n)``,
robust ReLU ``P·d̃``, polynomial ``min(n, (d+1)(d+2)/2)``) and every option given is one ADMM
takes (an option only the other method takes selects it); otherwise ``"al"`` / ``"apg"``
(which whitens anisotropic samples itself: ``precondition``). ``"factored"``
(``polynomial_factored.py``: L-BFGS on the neuron factorisation) runs on request, or when an
option only it takes (``rank``) is given: on the measured programs, isotropic and anisotropic,
the accelerated gradient reached lower objectives in the same time (benchmarks/targets.py,
robust-sdp-10k). Its ``tol`` is a certified duality gap, not the accelerated gradient's
stationarity (each method's docstring says what its ``tol`` measures).

Options in :data:`PASSIVE_OPTIONS` (the checkpoint callback) go to the method that runs when
it takes them and are dropped otherwise; they never choose the method.

Gated ReLU programs have one method, ``"fista"`` (``gated_relu_first_order.py``: restarted
FISTA stopping on a certified duality gap), which ``"auto"`` names.
"""

from __future__ import annotations

import inspect
import math

import torch

from convexrobust.errors import InvalidInputError, SolverFailedError
from convexrobust.problems.base import ConvexProgram
from convexrobust.solvers.first_order import Checkpoints
from convexrobust.solvers.solution import Solution

__all__ = ["PASSIVE_OPTIONS", "accepts", "solve_torch"]

#: Options that observe a solve without steering it (``checkpoint``, ``checkpoint_every``: the
#: augmented Lagrangian, the accelerated gradient and the factored L-BFGS hand their state to a
#: callback, :class:`~convexrobust.solvers.first_order.Checkpoints`): they never select a
#: method, a method that does not take them runs without them (they are checked all the same),
#: and :func:`~convexrobust.solve` gives them to torch alone.
PASSIVE_OPTIONS = frozenset({"checkpoint", "checkpoint_every"})


def _option_names() -> set[str]:
    """Every option some torch method takes, and ``method``."""
    from convexrobust.solvers import (
        polynomial_admm,
        polynomial_factored,
        polynomial_first_order,
        relu_admm,
        relu_first_order,
    )

    names = {"method"}
    for fn in (relu_admm.solve_relu_admm, relu_first_order.solve_relu_torch,
               polynomial_admm.solve_polynomial_admm,
               polynomial_first_order.solve_polynomial_torch,
               polynomial_factored.solve_polynomial_factored):
        names |= set(inspect.signature(fn).parameters) - {"program"}
    return names


def _factored_only_options() -> set[str]:
    """The options of the polynomial programs' factored method that no other method takes."""
    from convexrobust.solvers import polynomial_admm, polynomial_factored, polynomial_first_order

    return (_option_names_of(polynomial_factored.solve_polynomial_factored)
            - _option_names_of(polynomial_first_order.solve_polynomial_torch)
            - _option_names_of(polynomial_admm.solve_polynomial_admm))


def _option_names_of(fn: object) -> set[str]:
    """The options a solver function takes."""
    return set(inspect.signature(fn).parameters) - {"program"}  # type: ignore[arg-type]


def _gated_option_names() -> set[str]:
    """The options the gated ReLU method takes, and ``method``."""
    from convexrobust.solvers import gated_relu_first_order

    fn = gated_relu_first_order.solve_gated_relu_torch
    return {"method"} | (set(inspect.signature(fn).parameters) - {"program"})


def accepts(program: ConvexProgram, options: dict[str, object]) -> str | None:
    """Why no torch method can solve ``program`` with ``options``, or None when one can."""
    if "problem" in options:
        return "a user-extended cvxpy problem (problem=...) needs a conic solver"
    gated = program.family == "gated_relu"
    unknown = sorted(set(options) - PASSIVE_OPTIONS
                     - (_gated_option_names() if gated else _option_names()))
    if unknown:
        what = "the gated ReLU method does not take" if gated else "no torch method takes"
        return f"{what} {', '.join(unknown)}"
    if program.family == "polynomial" and getattr(program, "uses_diagonal_lmi", False):
        return ("the ℓ∞ diagonal S-procedure has no torch method (use linf='containment' or a "
                "conic solver)")
    return None


def solve_torch(program: ConvexProgram, method: str = "auto", **options: object) -> Solution:
    """Solve ``program`` by the torch ``method`` (module docstring); ``solution.info["method"]``
    says which ran."""
    from convexrobust.solvers import (
        gated_relu_first_order,
        polynomial_admm,
        polynomial_factored,
        polynomial_first_order,
        relu_admm,
        relu_first_order,
    )

    if program.family == "gated_relu":
        Checkpoints(options.pop("checkpoint", None), options.pop("checkpoint_every", 600.0))
        if not isinstance(method, str) or method.lower() not in ("auto", "fista"):
            raise InvalidInputError(
                f"method for gated_relu programs must be 'auto' or 'fista', got {method!r}")
        solution = gated_relu_first_order.solve_gated_relu_torch(program, **options)
        solution.info.setdefault("method", "fista")
        return solution
    passive = {k: options.pop(k) for k in PASSIVE_OPTIONS & set(options)}
    Checkpoints(passive.get("checkpoint"), passive.get("checkpoint_every", 600.0))  # checked
    relu = program.family == "relu"
    other = "al" if relu else "apg"
    methods = ("auto", "admm", other) if relu else ("auto", "admm", other, "factored")
    if not isinstance(method, str) or method.lower() not in methods:
        raise InvalidInputError(
            f"method for {program.family} programs must be one of "
            f"{', '.join(repr(m) for m in methods)}, got {method!r}")
    method = method.lower()
    admm = relu_admm if relu else polynomial_admm
    admm_solve = relu_admm.solve_relu_admm if relu else polynomial_admm.solve_polynomial_admm
    admm_options = set(inspect.signature(admm_solve).parameters) - {"program"}
    if method == "auto":
        # robust programs: ADMM by default for the binary ReLU ones only (module docstring)
        default = program.threat is None or (relu and not program.pairwise_margins)
        fits = (admm.admm_unsupported(program) is None and set(options) <= admm_options
                and default)
        size = admm.admm_system_size(program) if fits else math.inf  # type: ignore[arg-type]
        method = "admm" if size <= admm.MAX_FACTOR_SIZE else other
        if not relu and set(options) & _factored_only_options():
            method = "factored"
    if method == "factored":
        run = polynomial_factored.solve_polynomial_factored
    elif method == "admm":
        unknown = sorted(set(options) - admm_options)
        if unknown:
            raise InvalidInputError(f"the ADMM solver does not take {', '.join(unknown)}; "
                                    f"use method={other!r} for those options")
        run = admm_solve
    elif relu:
        run = relu_first_order.solve_relu_torch
    else:
        run = polynomial_first_order.solve_polynomial_torch
    unknown = sorted(set(options) - _option_names_of(run))
    if unknown:
        raise InvalidInputError(f"method={method!r} for {program.family} programs does not take "
                                f"{', '.join(unknown)}")
    options.update({k: v for k, v in passive.items() if k in _option_names_of(run)})
    try:
        solution = run(program, **options)  # type: ignore[arg-type]
    except torch.linalg.LinAlgError as err:
        raise SolverFailedError(
            f"torch ({method}) hit a numerical failure on {program.describe()}: {err}. Try "
            "dtype=torch.float64, rescale the data, or use a conic solver",
            status="numerical_error", solver="torch") from None
    solution.info.setdefault("method", method)
    return solution
