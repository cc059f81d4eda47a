"""The result every solver returns, judged by the program rather than by the solver."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from convexrobust.problems.base import ConvexProgram


@dataclass
class Solution:
    """A solved program.

    ``objective`` and ``violation`` are recomputed by the program from the primal values
    (:meth:`ConvexProgram.objective`, :meth:`ConvexProgram.violation`), so solutions from
    different solvers compare on equal terms; ``solver_objective`` is the solver's own report.
    ``status`` is ``"optimal"`` or, only when the caller asked to accept it, the solver's
    non-optimal status (e.g. ``"optimal_inaccurate"``).

    ``gap`` is the solver's own accuracy measure and ``gap_kind`` says what it is:
    ``"certified_gap"`` (an upper bound on the relative distance of the objective to the
    optimum, from a dual feasible point), ``"relative_stationarity"`` (a first-order optimality
    residual relative to the gradient's scale; nothing certified), or None (the conic solvers,
    whose own accuracy report is their status). What ``tol`` measured is the method's own
    (:mod:`convexrobust.solvers.first_order`): the ReLU ADMM stops on OSQP's residuals
    (``info["primal_residual"]``, ``info["dual_residual"]``) and still reports a certified gap.
    """

    program: ConvexProgram
    values: dict[str, np.ndarray]
    status: str
    solver: str
    wall_time: float
    iterations: int | None
    solver_objective: float | None = None
    gap: float | None = None
    gap_kind: str | None = None
    info: dict[str, object] = field(default_factory=dict)
    objective: float = field(init=False)
    violation: float = field(init=False)

    def __post_init__(self) -> None:
        self.objective = self.program.objective(self.values)
        self.violation = self.program.violation(self.values)

    @property
    def optimal(self) -> bool:
        return self.status == "optimal"

    def network(self, *, dtype: torch.dtype = torch.float64,
                device: torch.device | str | None = None) -> nn.Module:
        """The recovered two-layer network (``TwoLayerReLU`` or ``TwoLayerPolynomial``)."""
        return self.program.network(self.values, dtype=dtype, device=device)

    def summary(self) -> dict[str, object]:
        """A JSON-ready record of the solve."""
        return {
            "solver": self.solver,
            "status": self.status,
            "objective": self.objective,
            "solver_objective": self.solver_objective,
            "violation": self.violation,
            "gap": self.gap,
            "gap_kind": self.gap_kind,
            "wall_time": self.wall_time,
            "iterations": self.iterations,
        }

    def __repr__(self) -> str:
        return (f"Solution(solver={self.solver!r}, status={self.status!r}, "
                f"objective={self.objective:.6g}, violation={self.violation:.2g}, "
                f"wall_time={self.wall_time:.3g}s)")
