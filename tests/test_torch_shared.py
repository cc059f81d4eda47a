"""What the four torch solvers share (solvers/first_order.py): typed errors for unusable devices
and unknown losses, ``Solution.gap_kind`` saying what ``gap`` and ``tol`` mean, and degenerate but
valid programs — radii so large that the optimum has no slopes — solved as optimal."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import three_class_data, xor_data

import convexrobust as cr
from convexrobust.solvers.first_order import (
    Momentum,
    backtracking_step,
    blockwise_backtracking_step,
    group_soft_threshold,
)
from convexrobust.solvers.lifted_cone import zero_is_optimal
from convexrobust.solvers.polynomial_admm import solve_polynomial_admm
from convexrobust.solvers.polynomial_first_order import solve_polynomial_torch
from convexrobust.solvers.relu_admm import solve_relu_admm
from convexrobust.solvers.relu_first_order import solve_relu_torch

HUGE = cr.L2(1e6)


def _relu(loss="squared", threat=None, three=False):
    X, y = three_class_data(24, 3) if three else xor_data(20, 3)
    return cr.ConvexReLU(X, y, n_patterns=8, loss=loss, beta=1e-2, threat=threat)


def _poly(loss="hinge", threat=None, three=False):
    X, y = three_class_data(24, 3) if three else xor_data(20, 3)
    return cr.ConvexPolynomial(X, y, loss=loss, beta=1e-2, threat=threat)


SOLVERS = [(solve_relu_torch, _relu, "squared"), (solve_relu_admm, _relu, "squared"),
           (solve_polynomial_torch, _poly, "hinge"), (solve_polynomial_admm, _poly, "hinge")]


# ------------------------------------------------------------------ typed errors
@pytest.mark.parametrize(("solve", "build", "loss"), SOLVERS)
def test_unusable_device_is_a_typed_error(solve, build, loss):
    program = build(loss)
    with pytest.raises(cr.InvalidInputError, match="device"):
        solve(program, device="no-such-device")
    if not torch.cuda.is_available():  # a CPU build asked for CUDA
        with pytest.raises(cr.InvalidInputError, match="cuda"):
            solve(program, device="cuda")


def test_dispatcher_passes_the_typed_device_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    for program in (_relu(), _poly()):
        with pytest.raises(cr.InvalidInputError):
            cr.solve(program, solver="torch", device="cuda")


@pytest.mark.parametrize(("solve", "build", "loss"), SOLVERS)
def test_unknown_loss_is_rejected_by_every_solver(solve, build, loss):
    program = build(loss)
    program.loss = "no-such-loss"  # bypasses the constructor's check, as a subclass might
    with pytest.raises(cr.InvalidInputError, match="loss"):
        solve(program)


# ------------------------------------------------------------------ gap_kind
@pytest.mark.parametrize(("solve", "build", "loss", "kind"), [
    (solve_relu_torch, _relu, "squared", "relative_stationarity"),
    (solve_relu_admm, _relu, "squared", "certified_gap"),
    (solve_polynomial_torch, _poly, "hinge", "relative_stationarity"),
    (solve_polynomial_admm, _poly, "hinge", "certified_gap"),
])
def test_gap_kind_names_the_accuracy_measure(solve, build, loss, kind):
    solution = solve(build(loss), tol=1e-3)
    assert solution.gap_kind == kind
    assert solution.summary()["gap_kind"] == kind
    assert cr.solve(build(loss), "clarabel").gap_kind is None


# ------------------------------------------------------------------ degenerate programs
def _constant_hinge_optimum(y: np.ndarray, beta: float) -> float:
    """Binary hinge with a constant prediction b: min_b mean(1 − t b)_+ + β|b|, by brute force
    (the objective is piecewise linear with kinks at b = ±1 and 0)."""
    t = np.where(y > 0, 1.0, -1.0)
    grid = np.concatenate([np.linspace(-2, 2, 40001), [-1.0, 0.0, 1.0]])
    values = np.maximum(1 - t[:, None] * grid[None], 0).mean(axis=0) + beta * np.abs(grid)
    return float(values.min())


@pytest.mark.parametrize(("loss", "three"), [("hinge", False), ("logistic", False),
                                             ("squared", False), ("hinge", True)])
def test_relu_radius_beyond_the_data_solves_with_biases_alone(loss, three):
    """ε ≥ max‖x_k‖: the optimum has no slopes (ConvexReLU.slopes_vanish).
    The solver used to run out of its 20,000 iterations here."""
    program = _relu(loss, HUGE, three)
    solution = cr.solve(program, "torch")
    assert solution.status == "optimal" and solution.info["slope_free"]
    d = program.n_features
    for key in ("V", "W"):
        assert np.all(solution.values[key][..., :d] == 0)
    assert solution.violation <= 1e-12
    zero = {k: np.zeros_like(v) for k, v in solution.values.items()}
    assert solution.objective <= program.objective(zero) + 1e-9
    if loss == "hinge" and not three:
        X, y = xor_data(20, 3)
        expected = _constant_hinge_optimum(y, program.beta)
        assert abs(solution.objective - expected) <= 1e-4 * expected
    else:
        reference = cr.solve(program, "clarabel", accept_inaccurate=True)
        assert solution.objective <= reference.objective + 1e-4 * abs(reference.objective)
        assert abs(solution.objective - reference.objective) <= 1e-3 * abs(reference.objective)


@pytest.mark.parametrize(("loss", "three", "method"), [
    ("hinge", False, "apg"), ("logistic", False, "apg"), ("squared", False, "apg"),
    ("hinge", True, "apg"), ("hinge", False, "admm"), ("hinge", True, "admm")])
def test_poly_huge_radius_returns_the_zero_network_as_optimal(loss, three, method):
    """At a radius far beyond the data every nonzero network has a worse worst case; the zero
    network is certified optimal (lifted_cone.zero_is_optimal) instead of ending "stalled"."""
    program = _poly(loss, HUGE, three)
    solution = cr.solve(program, "torch", method=method)
    assert solution.status == "optimal" and solution.gap == 0.0
    assert solution.info["zero_certificate"]
    for key in ("Z", "Zp"):
        assert np.all(solution.values[key] == 0)
    zero = {k: np.zeros_like(v) for k, v in solution.values.items()}
    assert solution.objective == program.objective(zero)


def test_zero_certificate_is_sound_and_only_claims_what_holds():
    """Where it certifies, Clarabel finds nothing better than the zero network; at radii of the
    data's scale it certifies nothing."""
    for three in (False, True):
        program = _poly("hinge", cr.L2(100.0), three)
        assert zero_is_optimal(program)
        zero = {"Z": np.zeros((program.n_outputs, 4, 4)), "Zp": np.zeros((program.n_outputs, 4, 4))}
        reference = cr.solve(program, "clarabel")
        assert reference.objective >= program.objective(zero) - 1e-5
        assert not zero_is_optimal(_poly("hinge", cr.L2(0.2), three))
    assert not zero_is_optimal(_poly("hinge"))  # nominal


def test_relu_linf_radius_beyond_the_data_matches_clarabel():
    program = _relu("squared", cr.Linf(1e3))
    solution = cr.solve(program, "torch")
    assert solution.status == "optimal" and solution.info["slope_free"]
    reference = cr.solve(program, "clarabel", accept_inaccurate=True)
    assert abs(solution.objective - reference.objective) <= 1e-3 * abs(reference.objective)


def test_relu_radius_below_the_data_keeps_the_slopes():
    program = _relu("squared", cr.L2(0.1))
    assert not solve_relu_torch(program, tol=1e-3).info["slope_free"]


def test_backtracking_step_halves_until_the_quadratic_model_holds():
    # f(x) = ½ xᵀ diag(1, 100) x (curvature 100) + the group lasso: a step of 1 overshoots
    curv = torch.tensor([1.0, 100.0], dtype=torch.float64)

    def value(x: torch.Tensor) -> float:
        return float(0.5 * (curv * x.square()).sum())

    y = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    grad = curv * y
    x_new, f_new, step = backtracking_step(
        y, value(y), grad, 1.0, lambda v, s: group_soft_threshold(v, s * 0.1), value, 0.0)
    assert step == 2.0 ** -7  # the first halving below 1/100
    d = x_new - y
    assert f_new == value(x_new)
    assert f_new <= value(y) + float((grad * d).sum()) + float(d.square().sum()) / (2 * step)
    assert torch.allclose(x_new, group_soft_threshold(y - step * grad, step * 0.1))


def test_momentum_extrapolates_and_restarts():
    x, x_new = torch.zeros(3), torch.ones(3)
    momentum = Momentum()
    assert torch.equal(momentum.extrapolate(x, x_new, restart=False), x_new)  # t = 1: none yet
    t = momentum.t
    y = momentum.extrapolate(x, x_new, restart=False)
    assert momentum.t > t and torch.allclose(y, x_new * (1 + (t - 1) / momentum.t))
    assert torch.equal(momentum.extrapolate(x, x_new, restart=True), x_new)
    assert momentum.restarts == 1


def test_blockwise_backtracking_halves_each_block_on_its_own_model():
    # two blocks (rows) f_b(x_b) = ½ c_b ‖x_b‖² with curvatures 1 and 100: from a step of 1
    # the soft block keeps it, the stiff one halves to the first step below 1/100
    curv = torch.tensor([[1.0], [100.0]], dtype=torch.float64)
    calls = []

    def value(x: torch.Tensor, blocks: torch.Tensor | None) -> torch.Tensor:
        calls.append(2 if blocks is None else len(blocks))
        c = curv if blocks is None else curv[blocks]
        return 0.5 * (c * x.square()).sum(1)

    y = torch.ones(2, 3, dtype=torch.float64)
    grad = curv * y
    fy = value(y, None)
    x_new, f_new, step = blockwise_backtracking_step(
        y, fy, grad, torch.ones(2, dtype=torch.float64), lambda v, _: v, value,
        torch.zeros(2, dtype=torch.float64), block_dim=0)
    assert step.tolist() == [1.0, 2.0 ** -7]
    torch.testing.assert_close(x_new, y - step[:, None] * grad)
    torch.testing.assert_close(f_new, value(x_new, None))
    d = x_new - y
    model = fy + (grad * d).sum(1) + d.square().sum(1) / (2 * step)
    assert bool((f_new <= model).all())
    # fy, the first trial of both blocks, then one evaluation of the stiff block alone per
    # halving (and the check above)
    assert calls == [2, 2] + [1] * 7 + [2]
    # the scalar search on the summed objective must fit the stiffest block: both get 2^-7
    _, _, joint = backtracking_step(y, float(fy.sum()), grad, 1.0, lambda v, _: v,
                                    lambda x: float(value(x, None).sum()), 0.0)
    assert joint == 2.0 ** -7


def test_blockwise_momentum_restarts_only_its_block():
    x, x_new = torch.zeros(2, 3), torch.ones(2, 3)
    momentum = Momentum(block_dim=0)
    no = torch.tensor([False, False])
    momentum.extrapolate(x, x_new, no)
    momentum.extrapolate(x, x_new, no)
    t = momentum.t.clone()
    y = momentum.extrapolate(x, x_new, torch.tensor([True, False]))
    assert torch.equal(y[0], x_new[0])  # restarted: no momentum
    assert float(y[1, 0]) > 1.0 and float(momentum.t[1]) > float(t[1])
    assert momentum.restarts == 1


def test_small_cpu_solves_run_single_threaded_and_restore_the_thread_count():
    from convexrobust.solvers.first_order import SMALL_WORK_ELEMENTS, single_threaded_if_small

    before = torch.get_num_threads()
    cpu = torch.device("cpu")
    try:
        torch.set_num_threads(2)
        with single_threaded_if_small(SMALL_WORK_ELEMENTS - 1, cpu):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with single_threaded_if_small(SMALL_WORK_ELEMENTS, cpu):
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), single_threaded_if_small(10, cpu):
            raise RuntimeError("a failed solve")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
