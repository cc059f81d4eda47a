"""The repair of the first-order ReLU solvers (``relu_first_order._repair``): every violated group
is made exactly feasible, the batched gate shift gives what the former group-by-group loop gave
(which zeroed every group it could not mend: ``rehome_groups=False``), large programs skip the
exact projections (their budget) and still come out feasible, and a group that leaves its
pattern is re-homed on the all-ones pattern when that changes the model less."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import three_class_data, xor_data

import convexrobust as cr
from convexrobust.solvers import relu_repair

#: The repair's threshold as ``relu_repair.repaired`` sets it (1e-9 × the largest row norm of X̃).
THRESHOLD_FACTOR = 1e-9


# ---------------------------------------------------------------- the former loop, for reference
def _reference_shift(program, z, i, gate, gate_slack):
    """The former ``_shift_along_gate``: the slack of all patterns, pattern i's read off."""
    one = torch.zeros((1, program.n_patterns, z.shape[-1]), dtype=z.dtype)
    one[0, i] = z
    violation = max(0.0, -float(program.cone_slack_torch(one)[0, i].min()))
    if violation == 0:
        return z
    if gate_slack <= 0:
        return None
    scale = float(torch.linalg.vector_norm(z)) * float(np.abs(program.Xb).max()) + 1e-300
    margin = 1e-13 * scale
    for _ in range(4):
        one[0, i] = z + ((violation + margin) / gate_slack) * gate
        if float(program.cone_slack_torch(one)[0, i].min()) >= 0:
            return one[0, i]
        margin *= 100
    return None


def _reference_repair(program, V, W, threshold, project=True):
    """The former ``_repair``, one violated group at a time."""
    gates = torch.as_tensor(np.asarray(program.patterns.gates, dtype=np.float64).T.copy())
    gates = gates / torch.linalg.vector_norm(gates, dim=-1, keepdim=True).clamp_min(1e-300)
    gate_slack = program.cone_slack_torch(gates.unsqueeze(0))[0].min(dim=-1).values
    E = 2 * program.patterns.masks - 1
    moved = zeroed = 0
    out = []
    for Z in (V, W):
        Zt = torch.as_tensor(Z.copy())
        worst = program.cone_slack_torch(Zt).min(dim=-1).values
        for c, i in zip(*np.nonzero((worst < 0).numpy()), strict=True):
            original = Zt[c, i].clone()
            limit = relu_repair.REPAIR_MAX_SHIFT * float(torch.linalg.vector_norm(original))
            candidates = [original]
            if project and -float(worst[c, i]) > threshold:
                A = E[:, i:i + 1] * program.Xb
                plain = relu_repair.project_polyhedral(A, original.numpy())
                candidates.append(torch.as_tensor(plain))
                if program.radius_and_dual_exponent()[0] > 0:
                    lifted = relu_repair.project_with_margin(program, A, original.numpy())
                    if lifted is not None:
                        candidates.append(torch.as_tensor(lifted))
            best, best_move = None, limit
            for z in candidates:
                z = _reference_shift(program, z, i, gates[i], float(gate_slack[i]))
                move = math.inf if z is None else float(torch.linalg.vector_norm(z - original))
                if move <= best_move:
                    best, best_move = z, move
            if best is not None:
                Zt[c, i] = best
                moved += 1
            else:
                Zt[c, i] = 0.0
                zeroed += 1
        out.append(Zt.numpy())
    return out[0], out[1], moved, zeroed


# ---------------------------------------------------------------- helpers
def _threshold(program: cr.ConvexReLU) -> float:
    return THRESHOLD_FACTOR * float(np.linalg.norm(program.Xb, axis=1).max())


def _perturbed(program: cr.ConvexReLU, seed: int = 0) -> dict[str, np.ndarray]:
    """A point with groups of every kind: feasible ones (multiples of their pattern's gate),
    ones pushed across their gate's tightest sample by ρ ∈ [1e-12, 1] of the gate's slack (from
    round-off, which only a shift repairs, to more than REPAIR_MAX_SHIFT, which a shift cannot
    repair), and random ones."""
    r = np.random.default_rng(seed)
    C, P, db = program.n_outputs, program.n_patterns, program.Xb.shape[1]
    gates = program.patterns.gates.T / np.linalg.norm(program.patterns.gates.T, axis=1,
                                                      keepdims=True)
    slack = program.cone_slack_torch(torch.as_tensor(gates)[None])[0].numpy()  # (P, n)
    tight = slack.argmin(axis=1)
    E = 2 * program.patterns.masks - 1
    values = {}
    for key in ("V", "W"):
        Z = np.empty((C, P, db))
        for c in range(C):
            for i in range(P):
                kind = r.choice(3, p=[0.2, 0.6, 0.2])
                a = r.uniform(0.5, 2.0)
                if kind == 0:
                    Z[c, i] = a * gates[i]
                elif kind == 1:
                    x = E[tight[i], i] * program.Xb[tight[i]]
                    rho = 10.0 ** r.uniform(-12, 0)
                    Z[c, i] = a * (gates[i] - (1 + rho) * slack[i, tight[i]] * x / (x @ x))
                else:
                    Z[c, i] = a * r.standard_normal(db) / np.sqrt(db)
        values[key] = Z
    return values


def _violated_groups(program: cr.ConvexReLU, values: dict[str, np.ndarray]) -> int:
    return sum(int((program.cone_slack_torch(torch.as_tensor(values[key])).min(-1).values < 0)
                   .sum()) for key in ("V", "W"))


def _assert_same(new, ref, atol: float = 1e-12) -> None:
    for a, b in zip(new[:2], ref[:2], strict=True):
        assert np.allclose(a, b, rtol=0, atol=atol * max(1.0, np.abs(b).max()))
    assert new[2:] == ref[2:]


SMALL = [
    pytest.param(lambda: cr.ConvexReLU(*xor_data(40, 3), n_patterns=12, loss="hinge",
                                       beta=1e-3), id="binary-nominal"),
    pytest.param(lambda: cr.ConvexReLU(*xor_data(40, 3), n_patterns=12, loss="hinge",
                                       beta=1e-3, threat=cr.L2(0.1)), id="binary-l2"),
    pytest.param(lambda: cr.ConvexReLU(*three_class_data(36, 2), n_patterns=8, loss="hinge",
                                       beta=1e-3, threat=cr.Linf(0.05)), id="3class-linf"),
]


# ---------------------------------------------------------------- small programs
@pytest.mark.parametrize("make", SMALL)
@pytest.mark.parametrize("project", [True, False], ids=["projections", "shift-only"])
def test_repair_matches_former_loop_and_is_feasible(make, project, monkeypatch):
    program = make()
    values = _perturbed(program)
    violated = _violated_groups(program, values)
    assert violated >= 10  # many groups to repair
    threshold = _threshold(program)
    if not project:
        monkeypatch.setattr(relu_repair, "REPAIR_PROJECTION_BUDGET", 0.0)
    stats: dict = {}
    new = relu_repair.repair(program, values["V"], values["W"], threshold, stats=stats,
                             rehome_groups=False)
    ref = _reference_repair(program, values["V"], values["W"], threshold, project=project)
    _assert_same(new, ref)
    assert stats["projections"] is project
    assert new[2] + new[3] == violated and new[2] > 0 and new[3] > 0
    assert program.violation({"V": new[0], "W": new[1]}) <= 1e-12
    if not project:
        assert stats["projected"] == 0


def test_repair_of_a_solver_point_matches_former_loop():
    """A near-optimal point (Clarabel's, feasible to its tolerance only) with noise on it."""
    X, y = xor_data(40, 3)
    program = cr.ConvexReLU(X, y, n_patterns=12, loss="hinge", beta=1e-3, threat=cr.L2(0.1))
    values = cr.solve(program, "clarabel").values
    r = np.random.default_rng(1)
    noisy = {key: values[key] + 1e-3 * r.standard_normal(values[key].shape)
             for key in ("V", "W")}
    assert _violated_groups(program, noisy) >= 10
    threshold = _threshold(program)
    stats: dict = {}
    new = relu_repair.repair(program, noisy["V"], noisy["W"], threshold, stats=stats,
                             rehome_groups=False)
    _assert_same(new, _reference_repair(program, noisy["V"], noisy["W"], threshold))
    assert stats["projections"] and stats["projected"] > 0
    assert program.violation({"V": new[0], "W": new[1]}) <= 1e-12


def test_single_group_shift_is_the_batched_one():
    X, y = xor_data(40, 3)
    program = cr.ConvexReLU(X, y, n_patterns=12, loss="hinge", beta=1e-3, threat=cr.L2(0.1))
    values = _perturbed(program, seed=2)
    gates, gate_slack = relu_repair.unit_gates(program)
    Z = torch.as_tensor(values["V"][0])
    for i in range(program.n_patterns):
        shifted, ok = relu_repair.shift_along_gates(program, Z[i:i + 1], torch.tensor([i]), gates,
                                                 gate_slack)
        one = shifted[0] if bool(ok[0]) else None
        ref = _reference_shift(program, Z[i], i, gates[i], float(gate_slack[i]))
        assert (one is None) == (ref is None)
        if one is not None:
            assert torch.allclose(one, ref, rtol=0, atol=1e-12 * float(ref.abs().max()))


def test_own_slack_is_the_program_slack_in_chunks(monkeypatch):
    program = SMALL[2].values[0]()
    Z = torch.as_tensor(_perturbed(program)["V"])
    expected = program.cone_slack_torch(Z).min(dim=-1).values.reshape(-1)
    patterns = torch.arange(program.n_patterns).repeat(program.n_outputs)
    monkeypatch.setattr(relu_repair, "REPAIR_CHUNK", 3 * program.n_samples)  # 3 groups a chunk
    got = relu_repair.own_slack_min(program, Z.reshape(-1, Z.shape[-1]), patterns)
    assert torch.allclose(got, expected, rtol=0, atol=1e-14)


# ---------------------------------------------------------------- large programs: budget
def test_large_program_skips_projections_and_is_feasible():
    r = np.random.default_rng(0)
    n, d = 20_000, 50
    X = r.standard_normal((n, d))
    y = (X[:, 0] + 0.3 * r.standard_normal(n) > 0).astype(int)
    program = cr.ConvexReLU(X, y, n_patterns=50, loss="hinge", beta=1e-3, threat=cr.L2(0.1))
    values = _perturbed(program, seed=3)
    violated = _violated_groups(program, values)
    assert violated >= 30
    stats: dict = {}
    threshold = _threshold(program)
    new = relu_repair.repair(program, values["V"], values["W"], threshold, stats=stats,
                             rehome_groups=False)
    V, W, moved, zeroed = new
    assert not stats["projections"] and stats["projected"] == 0
    assert stats["projection_cost"] > relu_repair.REPAIR_PROJECTION_BUDGET
    assert moved + zeroed == violated and moved > 0
    assert program.violation({"V": V, "W": W}) <= 1e-12
    # what the former loop gives with the gate shift alone (≈ 1 s: it evaluates all patterns)
    _assert_same(new, _reference_repair(program, values["V"], values["W"], threshold,
                                        project=False))
    # feasible groups are untouched, moved ones by at most REPAIR_MAX_SHIFT of their norm
    for key, Z in (("V", V), ("W", W)):
        before = values[key]
        feasible = (program.cone_slack_torch(torch.as_tensor(before)).min(-1).values >= 0).numpy()
        assert np.array_equal(Z[feasible], before[feasible])
        delta = np.linalg.norm(Z - before, axis=-1)
        kept = np.linalg.norm(Z, axis=-1) > 0
        assert np.all(delta[kept] <= relu_repair.REPAIR_MAX_SHIFT
                      * np.linalg.norm(before, axis=-1)[kept] * (1 + 1e-12))


# ---------------------------------------------------------------- re-homing on the all-ones pattern
def _outlier_program() -> cr.ConvexReLU:
    """A robust binary program whose data has a cluster and three far outliers, so the robust
    gates sit in the gap between them: near-linear patterns (inactive on the outliers only)."""
    r = np.random.default_rng(4)
    X = r.standard_normal((120, 2))
    X[:3, 0] += 12.0
    y = (X[:, 1] > 0).astype(int)
    return cr.ConvexReLU(X, y, n_patterns=20, loss="hinge", beta=1e-3, threat=cr.L2(0.3))


def _predictions(program: cr.ConvexReLU, V: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``Σ_i D_i X̃ (v_{i,c} − w_{i,c})``, (n, C)."""
    masks = program.patterns.masks
    return np.stack([(masks * (program.Xb @ (V[c] - W[c]).T)).sum(axis=1)
                     for c in range(V.shape[0])], axis=1)


def _near_linear_setup(program: cr.ConvexReLU) -> tuple[int, int, dict[str, np.ndarray]]:
    """The all-ones pattern, a near-linear pattern (inactive on the outliers only) and values
    with a feasible all-ones group of output 0."""
    masks = program.patterns.masks
    ones = int(np.flatnonzero(masks.all(axis=0))[0])
    near = [i for i in range(program.n_patterns) if 0 < (masks[:, i] == 0).sum() <= 3]
    assert near, "the robust gates should sit in the gap before the outliers"
    C, P, db = program.n_outputs, program.n_patterns, program.Xb.shape[1]
    values = {"V": np.zeros((C, P, db)), "W": np.zeros((C, P, db))}
    values["V"][0, ones] = [0.2, 0.1, 8.0]
    return ones, near[0], values


def _with_and_without_rehoming(program: cr.ConvexReLU, values: dict[str, np.ndarray]
                               ) -> tuple[tuple, dict, tuple]:
    """The repair of ``values`` (with its stats) and the former one, which drops every group it
    cannot mend."""
    threshold = _threshold(program)
    stats: dict = {}
    new = relu_repair.repair(program, values["V"], values["W"], threshold, stats=stats)
    old = relu_repair.repair(program, values["V"], values["W"], threshold, rehome_groups=False)
    return new, stats, old


def test_a_group_far_outside_a_near_linear_pattern_is_rehomed():
    program = _outlier_program()
    _, i, values = _near_linear_setup(program)
    # a linear function of x₂ on the near-linear pattern: it is negative on half the cluster,
    # so no gate shift within REPAIR_MAX_SHIFT mends it; x₂ is what separates the labels
    u = np.array([0.0, 1.0, 0.0])
    values["V"][0, i] = u
    assert program.violation(values) > 0.5
    (V, W, moved, zeroed), stats, (V0, W0, _, zeroed0) = _with_and_without_rehoming(program,
                                                                                    values)
    assert (moved, zeroed, stats["rehomed"]) == (0, 0, 1)
    assert program.violation({"V": V, "W": W}) <= 1e-12
    assert not V[0, i].any() and not W[0, i].any()
    # the output changed by x̃ᵀu exactly where the pattern was inactive (the outliers)
    before = _predictions(program, values["V"], values["W"])
    after = _predictions(program, V, W)
    inactive = program.patterns.masks[:, i] == 0
    expected = before[:, 0] + inactive * (program.Xb @ u)
    assert np.allclose(after[:, 0], expected, rtol=0, atol=1e-9)
    # the former repair drops it: the model loses x₂ on the whole cluster
    assert zeroed0 == 1
    assert program.objective({"V": V, "W": W}) < program.objective({"V": V0, "W": W0})


def test_rehoming_that_would_raise_the_objective_is_undone():
    """The same group with the sign that fits the labels worse: re-homed it would raise the
    objective above dropping it, so the repair drops it (the re-homing is undone)."""
    program = _outlier_program()
    _, i, values = _near_linear_setup(program)
    values["W"][0, i] = [0.0, 1.0, 0.0]
    (V, W, moved, zeroed), stats, (V0, W0, _, _) = _with_and_without_rehoming(program, values)
    # it would be re-homed by the change measure alone: the guard is what drops it
    drop, home = relu_repair._change_costs(program, torch.as_tensor(values["W"][0, i:i + 1]),
                                           torch.tensor([i]), relu_repair.slack_rows(program))
    assert float(home[0]) < float(drop[0])
    assert (moved, zeroed, stats["rehomed"]) == (0, 1, 0)
    assert np.array_equal(V, V0) and np.array_equal(W, W0)
    assert program.violation({"V": V, "W": W}) <= 1e-12


def test_an_all_ones_group_is_never_rehomed_onto_itself():
    """A far-violated group of the all-ones pattern is dropped: on its own pattern the gate
    shift that would re-home it is unbounded."""
    program = _outlier_program()
    ones, _, values = _near_linear_setup(program)
    values["V"][0, ones] = [3.0, 0.0, -40.0]  # negative on every point: far outside the cone
    stats: dict = {}
    V, W, moved, zeroed = relu_repair.repair(program, values["V"], values["W"],
                                             _threshold(program), stats=stats)
    assert (moved, zeroed, stats["rehomed"]) == (0, 1, 0)
    assert not V.any() and not W.any()


def test_rehoming_many_groups_of_a_multiclass_linf_program():
    """Several groups of every output re-homed onto their output's all-ones groups at once
    (ℓ∞ threat, three classes): exactly feasible, never worse than dropping them."""
    r = np.random.default_rng(5)
    X = r.standard_normal((150, 2))
    X[:3, 0] += 12.0
    y = np.digitize(X[:, 1], [-0.5, 0.5])
    program = cr.ConvexReLU(X, y, n_patterns=20, loss="hinge", beta=1e-3,
                            threat=cr.Linf(0.2))
    masks = program.patterns.masks
    near = [i for i in range(program.n_patterns) if 0 < (masks[:, i] == 0).sum() <= 3]
    assert len(near) >= 2
    C, P, db = program.n_outputs, program.n_patterns, program.Xb.shape[1]
    values = {"V": np.zeros((C, P, db)), "W": np.zeros((C, P, db))}
    # x₂ orders the classes: two groups raise class 2's score, one lowers class 0's
    values["V"][2, near[0]] = [0.0, 1.0, 0.0]
    values["V"][2, near[1]] = [0.0, 0.5, 0.0]
    values["W"][0, near[2]] = [0.0, 1.0, 0.0]
    assert program.violation(values) > 0.1
    (V, W, moved, zeroed), stats, (V0, W0, _, zeroed0) = _with_and_without_rehoming(program,
                                                                                    values)
    assert (moved, zeroed, stats["rehomed"], zeroed0) == (0, 0, 3, 3)
    assert program.violation({"V": V, "W": W}) <= 1e-12
    assert not any(V[:, i].any() or W[:, i].any() for i in near[:3])
    assert program.objective({"V": V, "W": W}) < program.objective({"V": V0, "W": W0})


def test_a_tail_group_is_dropped_not_rehomed():
    """A group of a pattern active on a few outliers only: dropping it changes the model there,
    re-homing it would change it everywhere else, so it is dropped."""
    program = _outlier_program()
    masks = program.patterns.masks
    tail = [i for i in range(program.n_patterns) if 0 < masks[:, i].sum() <= 3]
    assert tail
    i = tail[0]
    C, P, db = program.n_outputs, program.n_patterns, program.Xb.shape[1]
    values = {"V": np.zeros((C, P, db)), "W": np.zeros((C, P, db))}
    values["V"][0, i] = [0.0, 1.0, 0.0]
    stats: dict = {}
    V, W, moved, zeroed = relu_repair.repair(program, values["V"], values["W"],
                                             _threshold(program), stats=stats)
    assert (moved, zeroed, stats["rehomed"]) == (0, 1, 0)
    assert not V.any() and not W.any()
