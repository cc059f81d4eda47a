"""The gated ReLU program (problems/gated_relu.py) and its torch solver
(solvers/gated_relu_first_order.py): the cvxpy and torch renderings are the same objective, the
solver's certified gap holds against Clarabel's optimum, the gated network reproduces the convex
model and saves and loads, and bad inputs raise the project's typed errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import three_class_data, xor_data

import convexrobust as cr
from convexrobust.networks.two_layer import head_from_dict, head_to_dict
from convexrobust.solvers import auto_order
from convexrobust.solvers.gated_relu_first_order import certificate, solve_gated_relu_torch

#: The certified relative gap asked of the torch solver in the agreement tests.
TOL = 1e-3


def _relative_gap(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def _program(loss: str, kind: str, *, n: int = 40, d: int = 3, beta: float = 3e-2,
             **options: object) -> cr.ConvexGatedReLU:
    """A small program: ``kind`` is "binary", "multiclass" (3 classes) or "regression" (two
    real targets)."""
    if kind == "multiclass":
        X, y = three_class_data(n, d)
    else:
        X, y = xor_data(n, d)
    if kind == "regression":
        y = np.stack([X[:, 0] ** 2 - X[:, 1], np.sin(2 * X[:, 2])], axis=1)
    return cr.ConvexGatedReLU(X, y, n_patterns=8, loss=loss, beta=beta, **options)


KINDS = [("squared", "binary"), ("squared", "regression"), ("squared", "multiclass"),
         ("logistic", "binary"), ("logistic", "multiclass"), ("hinge", "binary"),
         ("hinge", "multiclass")]


def _random_values(program: cr.ConvexGatedReLU, seed: int = 1) -> dict[str, np.ndarray]:
    shape = (program.n_outputs, program.n_patterns, program.Xb.shape[1])
    U = np.random.default_rng(seed).standard_normal(shape)
    U[:, ::3] = 0  # some groups at zero, where the group norm is not differentiable
    return {"U": U}


# ------------------------------------------------------------------ the two renderings
@pytest.mark.parametrize(("loss", "kind"), KINDS)
def test_cvxpy_and_torch_objectives_agree(loss, kind):
    program = _program(loss, kind)
    values = _random_values(program)
    problem = program.to_cvxpy()
    named = {v.name(): v for v in problem.variables()}
    assert set(named) == {f"U{c}" for c in range(program.n_outputs)}
    for c in range(program.n_outputs):
        named[f"U{c}"].value = values["U"][c]
    assert problem.constraints == []
    assert program.violation(values) == 0.0
    cvxpy_value = problem.objective.value / program.cvxpy_scale
    assert _relative_gap(cvxpy_value, program.objective(values)) <= 1e-12


def test_operator_and_adjoint():
    """``A U = Σ_i D_i X̃ u_i`` as written, ``⟨AU, Z⟩ = ⟨U, AᵀZ⟩``, and the solver's gradient
    ``Aᵀ ∇L(AU)`` equals autograd's gradient of the data term."""
    program = _program("logistic", "multiclass")
    U = torch.as_tensor(_random_values(program)["U"])
    D, Xb = torch.as_tensor(program.patterns.masks), torch.as_tensor(program.Xb)
    explicit = sum(D[:, [i]] * (Xb @ U[:, i].T) for i in range(program.n_patterns))
    assert torch.allclose(program.predictions_torch(U), explicit, atol=1e-12)
    Z = torch.randn(program.n_samples, program.n_outputs, dtype=torch.float64)
    lhs = (program.predictions_torch(U) * Z).sum()
    rhs = (U * program.predictions_adjoint_torch(Z)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12)
    Ug = U.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(program.data_term_torch(Ug), Ug)
    _, slope = program.loss_and_slope(program.predictions_torch(U))
    assert torch.allclose(program.predictions_adjoint_torch(slope), expected, atol=1e-14)


# ------------------------------------------------------------------ the solver
@pytest.mark.parametrize(("loss", "kind"), [
    ("squared", "binary"), ("squared", "regression"), ("logistic", "binary"),
    ("hinge", "binary"), ("hinge", "multiclass"),
])
def test_torch_matches_clarabel_with_a_certified_gap(loss, kind):
    program = _program(loss, kind)
    reference = cr.solve(program, "clarabel")
    solution = cr.solve(program, "torch", tol=TOL)
    assert solution.solver == "torch" and solution.gap_kind == "certified_gap"
    assert solution.info["method"] == "fista"
    bound = solution.info["dual_bound"]
    # a lower bound on the optimum (every point is feasible: Clarabel's is above the optimum) …
    assert bound <= reference.objective + 1e-12
    # … that the returned objective is within tol of
    assert solution.objective - bound <= TOL * solution.objective + 1e-12
    assert solution.gap == pytest.approx(solution.info["duality_gap"])
    assert _relative_gap(solution.objective, reference.objective) <= TOL


@pytest.mark.parametrize(("loss", "kind"), KINDS)
def test_certificate_is_a_lower_bound_and_tight_at_the_optimum(loss, kind):
    """The dual value of the scaled gradient is below the optimum at any point (each conjugate,
    with its domain, exactly); at Clarabel's optimum it is tight for the smooth losses."""
    program = _program(loss, kind)
    reference = cr.solve(program, "clarabel")
    optimum = torch.as_tensor(reference.values["U"])
    points = [optimum, optimum + 0.05 * torch.as_tensor(_random_values(program)["U"]),
              torch.zeros_like(optimum)]
    for U in points:
        for smoothing in ((0.0, 0.01) if loss == "hinge" else (0.0,)):
            cert = certificate(program, U, smoothing)
            assert cert.primal == pytest.approx(program.objective({"U": U.numpy()}), rel=1e-12)
            assert cert.dual <= reference.objective + 1e-12
            assert cert.smoothed_dual >= cert.dual
    if loss != "hinge":
        assert certificate(program, optimum).gap <= 1e-4


def test_zero_regulariser_stops_on_stationarity():
    """β = 0 has no certificate (module docstring): a relative stationarity instead, which on
    this well-posed least-squares program (80 samples, 36 unknowns) lands on the optimum."""
    program = _program("squared", "binary", beta=0.0, n=80)
    reference = cr.solve(program, "clarabel")
    solution = solve_gated_relu_torch(program, tol=1e-6)
    assert solution.gap_kind == "relative_stationarity" and solution.gap <= 1e-6
    assert solution.info["dual_bound"] is None
    assert _relative_gap(solution.objective, reference.objective) <= 1e-6


def test_deterministic_and_float32():
    program = _program("logistic", "binary")
    a = solve_gated_relu_torch(program, seed=3)
    b = solve_gated_relu_torch(program, seed=3)
    assert a.iterations == b.iterations and np.array_equal(a.values["U"], b.values["U"])
    single = solve_gated_relu_torch(program, dtype=torch.float32)
    assert single.info["dtype"] == "float32" and single.values["U"].dtype == np.float64
    # the certificate is evaluated in float64 whatever the working dtype
    assert single.objective - single.info["dual_bound"] <= TOL * single.objective + 1e-12


def test_budget_exhaustion_raises_unless_accepted():
    program = _program("squared", "binary")
    with pytest.raises(cr.SolverFailedError) as info:
        cr.solve(program, "torch", max_iters=3)
    assert info.value.status == "max_iters" and info.value.solver == "torch"
    solution = cr.solve(program, "torch", max_iters=3, accept_inaccurate=True)
    assert solution.status == "max_iters" and solution.iterations == 3


def test_auto_solves_and_reaches_torch_for_large_programs():
    program = _program("squared", "binary")
    solution = cr.solve(program, "auto")
    reference = cr.solve(program, "torch", tol=TOL)
    assert _relative_gap(solution.objective, reference.objective) <= TOL
    X, y = xor_data(2100, 2)
    large = cr.ConvexGatedReLU(X, y, n_patterns=4)
    assert auto_order(large) == ["torch"]  # past the conic solvers' sample limit


# ------------------------------------------------------------------ the network
@pytest.mark.parametrize(("loss", "kind"), [("hinge", "binary"), ("logistic", "multiclass"),
                                            ("squared", "regression")])
def test_network_reproduces_training_predictions(loss, kind):
    program = _program(loss, kind)
    solution = cr.solve(program, "clarabel")
    net = solution.network()
    assert isinstance(net, cr.TwoLayerGatedReLU)
    assert net.n_features == program.n_features and net.n_outputs == program.n_outputs
    out = net(torch.as_tensor(program.X)).detach().numpy()
    assert np.abs(out - program.training_predictions(solution.values)).max() <= 1e-6
    no_bias = cr.ConvexGatedReLU(program.X, program.targets.values if kind == "regression"
                                 else program.targets.labels, n_patterns=8, loss=loss,
                                 beta=program.beta, bias=False)
    values = _random_values(no_bias)
    out = no_bias.network(values)(torch.as_tensor(no_bias.X)).detach().numpy()
    assert np.allclose(out, no_bias.training_predictions(values), atol=1e-12)


def test_head_round_trip_and_no_certificate():
    program = _program("logistic", "multiclass")
    net = program.network(_random_values(program), dtype=torch.float32)
    buffer = io.BytesIO()
    torch.save(head_to_dict(net), buffer)
    buffer.seek(0)
    loaded = head_from_dict(torch.load(buffer, weights_only=True))
    assert isinstance(loaded, cr.TwoLayerGatedReLU) and loaded.weight.dtype == torch.float32
    x = torch.randn(16, program.n_features)
    assert torch.equal(loaded(x), net(x))
    with pytest.raises(cr.InvalidInputError):
        cr.certified_radius(net, program.X, program.targets.labels)


# ------------------------------------------------------------------ typed errors
def test_bad_inputs_raise_typed_errors():
    X, y = xor_data(20, 3)
    with pytest.raises(cr.InvalidInputError, match="threat"):
        cr.ConvexGatedReLU(X, y, threat=cr.L2(0.1))
    with pytest.raises(cr.InvalidInputError, match="loss"):
        cr.ConvexGatedReLU(X, y, loss="no-such-loss")
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(cr.InvalidInputError):
        cr.ConvexGatedReLU(bad, y)
    with pytest.raises(cr.InvalidInputError):
        cr.ConvexGatedReLU(X, y, loss="hinge", task="regression")
    with pytest.raises(cr.InvalidInputError):
        cr.ConvexGatedReLU(X, y, patterns=cr.problems.sample_patterns(X[:10], 4))
    program = cr.ConvexGatedReLU(X, y, n_patterns=4)
    with pytest.raises(cr.InvalidInputError):
        program.objective({"U": np.zeros((1, 1, 1))})


def test_bad_solver_options_raise_typed_errors():
    program = _program("squared", "binary")
    for options in ({"tol": 0}, {"max_iters": 0}, {"dtype": torch.int64},
                    {"device": "no-such-device"}):
        with pytest.raises(cr.InvalidInputError):
            solve_gated_relu_torch(program, **options)
    with pytest.raises(cr.InvalidInputError, match="method"):
        cr.solve(program, "torch", method="admm")
    with pytest.raises(cr.InvalidInputError, match="batch_size"):
        cr.solve(program, "torch", batch_size=10)
    program.loss = "no-such-loss"  # bypasses the constructor's check, as a subclass might
    with pytest.raises(cr.InvalidInputError, match="loss"):
        solve_gated_relu_torch(program)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_on_a_cpu_build_is_the_typed_device_error():
    program = _program("squared", "binary")
    with pytest.raises(cr.InvalidInputError, match="cuda"):
        solve_gated_relu_torch(program, device="cuda")
    with pytest.raises(cr.InvalidInputError, match="cuda"):
        cr.solve(program, "torch", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    program = _program("hinge", "binary")
    cpu = solve_gated_relu_torch(program)
    gpu = solve_gated_relu_torch(program, device="cuda")
    assert gpu.info["device"].startswith("cuda")
    assert gpu.objective - gpu.info["dual_bound"] <= TOL * gpu.objective + 1e-12
    assert _relative_gap(gpu.objective, cpu.objective) <= TOL
