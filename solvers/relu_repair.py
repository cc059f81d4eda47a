"""The repair of the ReLU programs' cone constraints: from a point that satisfies them up to a
small violation (a first-order solver's iterate) to one that satisfies them exactly.

The recovered network reproduces the convex model only where the cone constraints hold
(MATH.md §1), so every torch solver of the ReLU programs returns a repaired point. The slack
``g(u) = E_i X̃ u − ε‖u_{:d}‖_q`` of a group ``u`` with pattern ``i`` is concave and positively
homogeneous, hence superadditive: ``g(u + τe) ≥ g(u) + τ g(e)``. Every pattern's gate ``e_i``
is strictly feasible (``g(e_i) > 0``; the patterns are built so), so a violated group is moved to
``u + τ e_i`` with ``τ = −min g(u) / min g(e_i)`` (all violated groups at once, in a few batched
passes over the data that read only pattern ``i``'s rows of each). A group violated by more than
round-off is also projected exactly onto the polyhedral cone ``E_i X̃ u ≥ 0`` (a non-negative
least-squares problem, the dual of the projection; exact for nominal programs; for robust ones
followed by a lifted projection that freezes the margin, :func:`project_with_margin`) and then
shifted, and the candidate that moves it least is kept — but only while these projections are
affordable (:data:`REPAIR_PROJECTION_BUDGET`, in units of ``n·d̃²`` per solve); beyond that
(large data, many violated groups) the gate shift alone is used. A group that would still move
by more than :data:`REPAIR_MAX_SHIFT` of its norm leaves its pattern: it is set to zero, or
re-homed on the all-ones pattern when that changes the model less and lowers the objective
(:func:`rehome`).

:func:`repaired` wraps :func:`repair` with the judge's objective and violation before and after
(:class:`Repaired`), which the solvers turn into their ``info`` and the ``"repair_degraded"``
status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import nnls

from convexrobust.problems.relu import ConvexReLU

__all__ = ["REPAIR_CHUNK", "REPAIR_MAX_SHIFT", "REPAIR_PROJECTION_BUDGET", "Repaired",
           "all_ones_pattern", "own_slack_min", "project_polyhedral", "project_with_margin",
           "rehome", "repair", "repaired", "shift_along_gates", "slack_rows", "unit_gates"]

log = logging.getLogger(__name__)

#: The repair moves a group by at most this fraction of its norm, else zeroes it.
REPAIR_MAX_SHIFT = 0.1
#: The repair tries its exact projections (non-negative least squares over all n samples, one
#: per group violated by more than its threshold, four for a robust program) only when
#: ``n·d̃² × (number of solves)`` is at most this; otherwise it shifts along the gates alone.
#: (Chosen so that the projections take seconds, not minutes, on one core.)
REPAIR_PROJECTION_BUDGET = 2e9
#: The repair's batched slack evaluations hold at most this many (group, sample) entries at a
#: time (128 MiB in float64).
REPAIR_CHUNK = 2**24


def project_polyhedral(A: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``z`` onto the cone ``{u : A u ≥ 0}`` through its dual, a
    non-negative least-squares problem: ``u = z + Aᵀμ``, ``μ = argmin_{μ≥0} ‖Aᵀμ + z‖``
    (Lawson–Hanson active set, exact up to round-off)."""
    mu, _ = nnls(A.T, -z, maxiter=50 * A.shape[0])
    return z + A.T @ mu


def project_with_margin(program: ConvexReLU, A: np.ndarray, z: np.ndarray,
                         rounds: int = 3) -> np.ndarray | None:
    """An approximate projection of ``z`` onto the robust cone ``{u : A u ≥ ε‖u_{:d}‖_q}``.

    With the margin ``b = ε‖u_{:d}‖_q`` frozen at the current point, ``{A u ≥ b}`` is a
    polyhedron; lifting it to the cone ``{(u, t) : A u − b t ≥ 0}`` and projecting ``(z, 1)``
    there by :func:`project_polyhedral` gives ``(u, t)``, and ``u/t`` satisfies it. A few rounds
    update ``b``; the caller's gate shift absorbs what is left. This moves a group that violates
    the robust constraints by the smoothing error of the norm (``≈ εμ/2`` on every sample) by
    about that much, where the gate shift alone moves it by that over the gate's slack."""
    eps, q = program.radius_and_dual_exponent()
    d = program.n_features
    u = z
    for _ in range(rounds):
        b = eps * float(np.linalg.norm(u[:d], ord=q)) * (1 + 1e-9)
        lifted = np.hstack([A, -b * np.ones((A.shape[0], 1))])
        p = project_polyhedral(lifted, np.append(z, 1.0))
        if not p[-1] > 0:
            return None
        u = p[:-1] / p[-1]
    return u


def slack_rows(program: ConvexReLU) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`own_slack_min` reads: ``X̃ᵀ`` (d̃, n) and the signs ``E`` one pattern a row
    (P, n), float64 on the CPU (the repair's working precision)."""
    data = program.tensors(torch.float64, torch.device("cpu"))
    return data["Xb"].T, (2 * data["D"] - 1).T.contiguous()


def own_slack_min(program: ConvexReLU, Z: torch.Tensor, patterns: torch.Tensor,
                   rows: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``min_k g_{i,k}(z)``: the least slack of each group ``z = Z[j]`` (G, d̃) under its own
    pattern ``i = patterns[j]`` only — ``E_i X̃ z − ε‖z_{:d}‖_q`` over the n samples, the row
    ``[c, i]`` of :meth:`ConvexReLU.cone_slack_torch` — as (G,). Evaluated in chunks of at most
    :data:`REPAIR_CHUNK` (group, sample) entries; ``rows``: :func:`slack_rows`, if at hand."""
    Xt, Et = slack_rows(program) if rows is None else rows
    n = Xt.shape[1]
    eps, _ = program.radius_and_dual_exponent()
    out = torch.empty(Z.shape[0], dtype=Z.dtype)
    step = max(1, REPAIR_CHUNK // max(n, 1))
    for s in range(0, Z.shape[0], step):
        z = Z[s:s + step]
        slack = z @ Xt
        slack.mul_(Et[patterns[s:s + step]])
        if eps:
            slack.sub_(eps * program.dual_norm_torch(z).unsqueeze(-1))
        out[s:s + step] = slack.min(dim=-1).values
    return out


def shift_along_gates(program: ConvexReLU, Z: torch.Tensor, patterns: torch.Tensor,
                       gates: torch.Tensor, gate_slack: torch.Tensor,
                       violation: torch.Tensor | None = None,
                       rows: tuple[torch.Tensor, torch.Tensor] | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``z + τ·gate`` with the least τ that makes pattern ``i``'s cone constraints hold
    (superadditivity of the slack), for a batch of groups ``Z`` (G, d̃) with patterns
    ``patterns`` (G,), in a few batched tensor operations: returns the shifted groups and a
    (G,) mask of those that succeeded (the others are returned unchanged and must be
    discarded; a group fails when its gate is not strictly feasible or the shift misses).
    ``gates`` (P, d̃) and ``gate_slack`` (P,) are every pattern's unit gate and its least slack;
    ``violation`` (G,), ``max(0, −min g(z))``, is computed when not given; ``rows``: see
    :func:`own_slack_min`."""
    rows = slack_rows(program) if rows is None else rows
    if violation is None:
        violation = (-own_slack_min(program, Z, patterns, rows)).clamp_min(0)
    out = Z.clone()
    ok = violation == 0
    slack = gate_slack[patterns]
    todo = torch.nonzero(~ok & (slack > 0)).squeeze(1)
    if todo.numel() == 0:
        return out, ok
    # aim a little past zero: the slack is evaluated in floating point, and round-off of order
    # u·‖z‖·‖x̃‖ would otherwise leave it at −1e-15 (and the group would be zeroed)
    x_max = float(np.abs(program.Xb).max())
    margin = 1e-13 * (torch.linalg.vector_norm(Z[todo], dim=-1) * x_max + 1e-300)
    for _ in range(4):
        tau = (violation[todo] + margin) / slack[todo]
        trial = Z[todo] + tau.unsqueeze(-1) * gates[patterns[todo]]
        good = own_slack_min(program, trial, patterns[todo], rows) >= 0
        out[todo[good]] = trial[good]
        ok[todo[good]] = True
        todo, margin = todo[~good], margin[~good] * 100
        if todo.numel() == 0:
            break
    return out, ok


def unit_gates(program: ConvexReLU, rows: tuple[torch.Tensor, torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pattern's gate scaled to unit norm (P, d̃) and its least slack (P,)."""
    gates = torch.as_tensor(np.asarray(program.patterns.gates, dtype=np.float64).T.copy())
    gates = gates / torch.linalg.vector_norm(gates, dim=-1, keepdim=True).clamp_min(1e-300)
    return gates, own_slack_min(program, gates, torch.arange(gates.shape[0]), rows)


def all_ones_pattern(program: ConvexReLU, gate_slack: torch.Tensor) -> int | None:
    """The index of a pattern active on every sample whose gate is strictly feasible — the one
    :func:`~convexrobust.problems.patterns.sample_patterns` always adds with a bias column —
    or None when the program has none."""
    full = np.flatnonzero(np.asarray(program.patterns.masks).all(axis=0))
    return next((int(i) for i in full if float(gate_slack[i]) > 0), None)


def _change_costs(program: ConvexReLU, Z: torch.Tensor, patterns: torch.Tensor,
                  rows: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """How much dropping a group ``z`` of pattern ``i`` changes the model, and how much
    re-homing it on the all-ones pattern does: ``Σ_k (|x̃_kᵀz| + ε‖z_{:d}‖_q)`` over the samples
    where ``i`` is active (dropping removes ``z`` there) and over those where it is inactive
    (re-homing adds it there) — the change of every affected prediction and worst-case slope
    term. Returns the two (G,) sums, evaluated in chunks as :func:`own_slack_min`."""
    Xt, Et = rows
    n = Xt.shape[1]
    eps, _ = program.radius_and_dual_exponent()
    drop = torch.empty(Z.shape[0], dtype=Z.dtype)
    home = torch.empty_like(drop)
    step = max(1, REPAIR_CHUNK // max(n, 1))
    for s in range(0, Z.shape[0], step):
        z = Z[s:s + step]
        change = (z @ Xt).abs_()
        if eps:
            change.add_(eps * program.dual_norm_torch(z).unsqueeze(-1))
        active = Et[patterns[s:s + step]] > 0
        drop[s:s + step] = torch.where(active, change, 0.0).sum(dim=-1)
        home[s:s + step] = torch.where(active, 0.0, change).sum(dim=-1)
    return drop, home


def rehome(program: ConvexReLU, flats: list[torch.Tensor],
           dropped: list[tuple[torch.Tensor, torch.Tensor]], ones: int, gates: torch.Tensor,
           gate_slack: torch.Tensor, rows: tuple[torch.Tensor, torch.Tensor]) -> int:
    """Move groups the repair could not keep on their own pattern to the all-ones pattern
    ``ones``, where that changes the model less than dropping them (:func:`_change_costs`).

    ``flats`` are V's and W's groups as rows ``c·P + i`` (modified in place); ``dropped[f]``
    holds, for ``flats[f]``, the row indices of the groups that were set to zero and their
    values before. A group ``u`` of output ``c`` becomes ``u' = u + τg`` on the all-ones pattern
    (``g`` its unit gate, τ the least shift that makes ``u'`` feasible there, as in
    :func:`shift_along_gates`), and the opposite sign's all-ones group of output ``c`` receives
    ``τg`` too, so the output changes by ``x̃ᵀu`` exactly on the samples where ``u``'s pattern
    was inactive (the regulariser pays ``2τ‖g‖β`` at most). Every all-ones group stays feasible:
    the cone is convex and ``u'`` and ``τg`` lie in it (a last gate shift absorbs round-off).
    Groups of the all-ones pattern itself are not re-homed (on their own pattern the shift
    would be unbounded). The re-homing is undone — every group in ``dropped`` stays zero — when
    a last gate shift fails or the program's objective is not lower than with the groups
    dropped: it never makes the repair worse. Returns how many groups were re-homed."""
    P, C = program.n_patterns, program.n_outputs
    before = [F.clone() for F in flats]
    moved = 0
    for f, (groups, originals) in enumerate(dropped):
        elsewhere = groups % P != ones
        groups, originals = groups[elsewhere], originals[elsewhere]
        if groups.numel() == 0:
            continue
        drop, home = _change_costs(program, originals, groups % P, rows)
        take = home < drop
        target = torch.full((int(take.sum()),), ones)
        shifted, ok = shift_along_gates(program, originals[take], target, gates, gate_slack,
                                        rows=rows)
        homes = (groups[take][ok] // P) * P + ones
        flats[f].index_add_(0, homes, shifted[ok])
        flats[1 - f].index_add_(0, homes, shifted[ok] - originals[take][ok])
        moved += int(ok.sum())
    if not moved:
        return 0
    homes = torch.arange(C) * P + ones
    target = torch.full((len(homes),), ones)
    failed = False
    for F in flats:
        F[homes], ok = shift_along_gates(program, F[homes], target, gates, gate_slack,
                                         rows=rows)
        failed |= not bool(ok.all())
    shape = (C, P, flats[0].shape[1])

    def objective(Fs: list[torch.Tensor]) -> float:
        return program.objective({"V": Fs[0].reshape(shape).numpy(),
                                  "W": Fs[1].reshape(shape).numpy()})

    if failed or objective(flats) >= objective(before):
        for F, F0 in zip(flats, before, strict=True):
            F.copy_(F0)
        return 0
    return moved


def repair(program: ConvexReLU, V: np.ndarray, W: np.ndarray, threshold: float,
           stats: dict | None = None, rehome_groups: bool = True
           ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Make every group exactly feasible (module docstring). Every violated group is shifted
    along its strictly feasible gate (:func:`shift_along_gates`, all groups at once); a group
    violated by more than ``threshold`` is also projected onto the polyhedral cone
    ``E_i X̃ u ≥ 0`` (the exact feasible set of a nominal program; for a robust one also by
    :func:`project_with_margin`) and then shifted to absorb what is left (round-off, or the
    ``ε‖u‖_q`` term). Of these candidates the one that moves the group least is kept; a group
    that every candidate would move by more than :data:`REPAIR_MAX_SHIFT` of its norm is set
    to zero — or, with ``rehome_groups`` and an all-ones pattern in the program, re-homed on
    it when that changes the model less and the objective ends lower than with the group
    dropped (:func:`rehome`; at large radii the robust patterns
    are thin cones in the tails of the data, and near-linear groups that miss theirs by more
    than a shift can mend carry the linear part of the model).

    Budget: the projections are non-negative least-squares problems over all n samples
    (``≈ n·d̃²`` work each). They are tried only when
    ``n·d̃² × (number of solves)`` — one solve per group violated by more than ``threshold``,
    four for a robust program — is at most :data:`REPAIR_PROJECTION_BUDGET`; otherwise the
    repair uses the gate shift alone, for every group, in a few batched passes over the data.

    Returns V, W and the numbers of groups moved and zeroed (re-homed ones are neither).
    ``stats``, when given, receives ``projection_cost`` (the ``n·d̃²`` units above),
    ``projections`` (whether they were tried), ``projected`` (how many groups kept a projected
    candidate) and ``rehomed``."""
    P, db, n = program.n_patterns, program.Xb.shape[1], program.n_samples
    eps = program.radius_and_dual_exponent()[0]
    rows = slack_rows(program)
    gates, gate_slack = unit_gates(program, rows)
    E = 2 * program.patterns.masks - 1  # (n, P)
    Zs = [torch.as_tensor(np.ascontiguousarray(Z, dtype=np.float64)).clone() for Z in (V, W)]
    flat = [Z.view(-1, db) for Z in Zs]  # groups (c, i) as rows c·P + i
    pattern_of = torch.arange(P).repeat(Zs[0].shape[0])
    worst = []
    for F in flat:  # a zero group (most, after the group lasso) is feasible: slack 0
        w = torch.zeros(F.shape[0], dtype=F.dtype)
        live = torch.nonzero(F.ne(0).any(dim=-1)).squeeze(1)
        w[live] = own_slack_min(program, F[live], pattern_of[live], rows)
        worst.append(w)
    violated = [torch.nonzero(w < 0).squeeze(1) for w in worst]
    solves = sum(int((-w[g] > threshold).sum()) for w, g in zip(worst, violated, strict=True))
    cost = float(n) * db * db * solves * (4 if eps > 0 else 1)
    project = cost <= REPAIR_PROJECTION_BUDGET
    if not project:
        log.debug("repair: %d violated groups; projections skipped (cost %.2g > %.2g)",
                  sum(len(g) for g in violated), cost, REPAIR_PROJECTION_BUDGET)
    moved = zeroed = projected = 0
    dropped = []
    for F, w, groups in zip(flat, worst, violated, strict=True):
        dropped.append((groups[:0], F[:0]))
        if groups.numel() == 0:
            continue
        originals = F[groups].clone()  # (G, d̃)
        patterns = pattern_of[groups]
        # candidate layers in the order they are tried: the group itself, its projection, its
        # lifted projection; each row names its group (a position in ``groups``)
        own = torch.arange(len(groups))
        layers = [(own, *shift_along_gates(program, originals, patterns, gates, gate_slack,
                                            (-w[groups]).clamp_min(0), rows))]
        if project:
            plain, plain_of, lifted, lifted_of = [], [], [], []
            for j in torch.nonzero(-w[groups] > threshold).squeeze(1).tolist():
                i = int(patterns[j])
                A = E[:, i:i + 1] * program.Xb
                z = originals[j].numpy()
                plain.append(torch.as_tensor(project_polyhedral(A, z)))
                plain_of.append(j)
                if eps > 0:
                    u = project_with_margin(program, A, z)
                    if u is not None:
                        lifted.append(torch.as_tensor(u))
                        lifted_of.append(j)
            for found, of in ((plain, plain_of), (lifted, lifted_of)):
                if found:
                    of = torch.tensor(of)
                    layers.append((of, *shift_along_gates(
                        program, torch.stack(found), patterns[of], gates, gate_slack,
                        rows=rows)))
        # keep the feasible candidate that moves the group least (a later one on ties)
        best_move = REPAIR_MAX_SHIFT * torch.linalg.vector_norm(originals, dim=-1)
        best = torch.full((len(groups),), -1)
        best_z = torch.zeros_like(originals)
        for layer, (of, z, ok) in enumerate(layers):
            move = torch.linalg.vector_norm(z - originals[of], dim=-1)
            take = ok & (move <= best_move[of])
            best_move[of[take]] = move[take]
            best[of[take]] = layer
            best_z[of[take]] = z[take]
        keep = best >= 0
        F[groups] = torch.where(keep.unsqueeze(-1), best_z, torch.zeros_like(best_z))
        moved += int(keep.sum())
        zeroed += int((~keep).sum())
        projected += int((best > 0).sum())
        dropped[-1] = (groups[~keep], originals[~keep])
    ones = all_ones_pattern(program, gate_slack) if rehome_groups else None
    rehomed = 0 if ones is None else rehome(program, flat, dropped, ones, gates, gate_slack,
                                            rows)
    if stats is not None:
        stats.update(projection_cost=cost, projections=project, projected=projected,
                     rehomed=rehomed)
    return Zs[0].numpy(), Zs[1].numpy(), moved, zeroed - rehomed


@dataclass
class Repaired:
    """A repaired iterate (:func:`repair`) with the true objective and violation around it."""

    U: torch.Tensor
    V: np.ndarray
    W: np.ndarray
    violation_before: float
    objective_before: float
    objective_after: float
    moved: int
    zeroed: int
    #: groups that kept a projected candidate, and whether projections were within budget
    projected: int = 0
    projections: bool = True
    #: groups moved to the all-ones pattern (:func:`rehome`)
    rehomed: int = 0

    @property
    def cost(self) -> float:
        """How much the repair raised the true objective."""
        return self.objective_after - self.objective_before

    def degraded(self, tol: float) -> bool:
        """The point was not feasible enough: making it feasible cost more than ``10·tol``
        (relative) of the objective."""
        return self.cost > 10 * max(tol, 1e-9) * max(1.0, abs(self.objective_before))


def repaired(program: ConvexReLU, U: torch.Tensor, data_scale: float) -> Repaired:
    """Cast ``U`` to float64 on the CPU, measure it, repair it and measure again."""
    P = program.n_patterns
    Uc = U.detach().to("cpu", torch.float64)
    V, W = Uc[:, :P].numpy().copy(), Uc[:, P:].numpy().copy()
    before = {"V": V, "W": W}
    violation_before = program.violation(before)
    objective_before = program.objective(before)
    stats: dict[str, object] = {}
    V, W, moved, zeroed = repair(program, V, W, threshold=1e-9 * data_scale, stats=stats)
    return Repaired(U, V, W, violation_before, objective_before,
                     program.objective({"V": V, "W": W}), moved, zeroed,
                     int(stats.get("projected", 0)), bool(stats.get("projections", True)),
                     int(stats.get("rehomed", 0)))

