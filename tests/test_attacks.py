"""Tests for the PGD attack, the AutoAttack adapter and the margin helper."""

from __future__ import annotations

import importlib.util
import logging
import math
import sys

import pytest
import torch
from torch import nn

from convexrobust.attacks import auto_attack, margin, pgd_attack
from convexrobust.errors import InvalidInputError, InvalidInputTypeError, SolverUnavailableError

torch.set_num_threads(1)
needs_autoattack = pytest.mark.skipif(
    importlib.util.find_spec("pyautoattack") is None,
    reason="pyautoattack is not installed: pip install 'convexrobust[attack]'")

NORMS = [(2, 2.0), ("l2", 2.0), ("linf", 1.0), (float("inf"), 1.0)]  # (norm, dual exponent q)


def _linear(d: int, c: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(d, c).double()
    return lin.eval()


def _mlp(d: int, c: int, seed: int, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, c)).to(dtype)


def _pnorm(v: torch.Tensor, norm: float | str) -> torch.Tensor:
    flat = v.reshape(v.shape[0], -1)
    if str(norm) in ("2", "l2", "2.0"):
        return flat.norm(dim=1)
    return flat.abs().amax(dim=1)


class _Squeeze(nn.Module):
    """Binary model returning (n,) scores."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).squeeze(1)


def test_margin_values() -> None:
    scores = torch.tensor([[1.0, 3.0, 2.0], [5.0, -1.0, 0.0]])
    y = torch.tensor([1, 2])
    torch.testing.assert_close(margin(scores, y), torch.tensor([1.0, -5.0]))
    s = torch.tensor([0.5, -2.0, 1.5])
    yb = torch.tensor([1, 1, 0])
    torch.testing.assert_close(margin(s, yb), torch.tensor([0.5, -2.0, -1.5]))
    torch.testing.assert_close(margin(s[:, None], yb), torch.tensor([0.5, -2.0, -1.5]))


@pytest.mark.parametrize("norm,q", NORMS)
@pytest.mark.parametrize("squeeze", [False, True])
def test_binary_linear_reaches_analytic_worst_case(
    norm: float | str, q: float, squeeze: bool
) -> None:
    d, n = 6, 16
    lin = _linear(d, 1, seed=0)
    model = _Squeeze(lin) if squeeze else lin
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = (torch.rand(n, generator=gen) > 0.5).long()
    eps = torch.linspace(0.0, 0.8, n, dtype=torch.float64)
    with torch.no_grad():
        clean = margin(model(x), y)
        w = lin.weight[0]
        expected = clean - eps * torch.linalg.vector_norm(w, ord=q)
    x_adv = pgd_attack(model, x, y, norm=norm, eps=eps, steps=50)
    with torch.no_grad():
        got = margin(model(x_adv), y)
    assert torch.all((got - expected).abs() <= 1e-3)
    assert torch.all(_pnorm(x_adv - x, norm) <= eps * (1 + 1e-9) + 1e-12)


def _multiclass_worst_case(
    model: nn.Linear, x: torch.Tensor, y: torch.Tensor, eps: float, q: float
) -> torch.Tensor:
    """min_{k != y} (s_y - s_k) - eps * ||w_y - w_k||_q, the exact worst-case margin."""
    n, c = x.shape[0], model.out_features
    with torch.no_grad():
        s = model(x)
        W = model.weight
        expected = torch.full((n,), math.inf, dtype=torch.float64)
        for j in range(c):
            mj = (
                s[torch.arange(n), y]
                - s[:, j]
                - eps * torch.linalg.vector_norm(W[y] - W[j], ord=q, dim=1)
            )
            expected = torch.where(y == j, expected, torch.minimum(expected, mj))
    return expected


@pytest.mark.parametrize("norm,q", NORMS)
@pytest.mark.parametrize("c", [3, 5])
def test_multiclass_linear_reaches_analytic_worst_case(norm: float | str, q: float, c: int) -> None:
    d, n, eps = 5, 64, 0.3
    model = _linear(d, c, seed=2)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=gen)
    expected = _multiclass_worst_case(model, x, y, eps, q)
    x_adv = pgd_attack(model, x, y, norm=norm, eps=eps, steps=50, multi_targeted=True)
    with torch.no_grad():
        got = margin(model(x_adv), y)
    assert torch.all(got >= expected - 1e-9)  # the analytic value is the true minimum
    assert torch.all(got - expected <= 1e-3)
    assert torch.all(_pnorm(x_adv - x, norm) <= eps * (1 + 1e-12))


@pytest.mark.parametrize("norm,q", NORMS)
def test_multiclass_untargeted_is_sound_but_may_stall(norm: float | str, q: float) -> None:
    """The plain margin loss gives an upper bound of the worst case; it can stop at a local optimum.

    For a linear 3-class model the untargeted loss max_k (s_k - s_y) only sees the current
    runner-up class (on this instance some samples end > 0.05 above the optimum, even with
    restarts); this is why ``multi_targeted`` exists.
    """
    d, c, n, eps = 5, 3, 200, 0.3
    model = _linear(d, c, seed=0)
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=gen)
    expected = _multiclass_worst_case(model, x, y, eps, q)
    x_adv = pgd_attack(model, x, y, norm=norm, eps=eps, steps=50, restarts=2)
    with torch.no_grad():
        got = margin(model(x_adv), y)
        clean = margin(model(x), y)
    assert torch.all(got >= expected - 1e-9)
    assert torch.all(got <= clean)
    assert (got - expected).abs().le(1e-6).float().mean() > 0.5  # most samples are exact


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_norm_bound_clamp_and_zero_eps(norm: str) -> None:
    n = 12
    model = _mlp(16, 4, seed=4)
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(n, 1, 4, 4, generator=gen, dtype=torch.float64)
    x[0] = 0.0  # on the box boundary
    y = torch.randint(0, 4, (n,), generator=gen)
    eps = torch.rand(n, generator=gen, dtype=torch.float64) * (2.0 if norm == "l2" else 0.5)
    eps[::3] = 0.0
    x_adv = pgd_attack(
        model, x, y, norm=norm, eps=eps, steps=20, restarts=3, clamp=(0.0, 1.0), seed=1
    )
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert torch.all(_pnorm(x_adv - x, norm) <= eps * (1 + 1e-9) + 1e-12)
    assert torch.all((x_adv >= 0.0) & (x_adv <= 1.0))
    assert torch.equal(x_adv[::3], x[::3])
    with torch.no_grad():
        assert torch.all(margin(model(x_adv), y) <= margin(model(x), y))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_random_starts_lie_in_ball(norm: str) -> None:
    """With steps=0 only start points are evaluated; all must be feasible."""
    model = _mlp(8, 3, seed=6)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(30, 8, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=gen)
    x_adv = pgd_attack(model, x, y, norm=norm, eps=0.4, steps=0, restarts=20)
    assert torch.all(_pnorm(x_adv - x, norm) <= 0.4 * (1 + 1e-9))
    assert not torch.equal(x_adv, x)  # some random start beat the clean point


def test_scalar_zero_eps_returns_x() -> None:
    model = _mlp(8, 3, seed=8)
    x = torch.randn(5, 8, dtype=torch.float64)
    y = torch.zeros(5, dtype=torch.long)
    for norm in ("l2", "linf"):
        assert torch.equal(pgd_attack(model, x, y, norm=norm, eps=0.0, restarts=3), x)


def test_determinism_and_restarts_never_worse() -> None:
    model = _mlp(10, 3, seed=9)
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(40, 10, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=gen)
    for norm in ("l2", "linf"):
        eps = 1.0 if norm == "l2" else 0.3
        kwargs = {"norm": norm, "eps": eps, "steps": 15}
        a = pgd_attack(model, x, y, restarts=4, seed=123, **kwargs)
        b = pgd_attack(model, x, y, restarts=4, seed=123, **kwargs)
        assert torch.equal(a, b)
        single = pgd_attack(model, x, y, restarts=1, **kwargs)
        for seed in (0, 1):
            multi = pgd_attack(model, x, y, restarts=4, seed=seed, **kwargs)
            with torch.no_grad():
                assert torch.all(margin(model(multi), y) <= margin(model(single), y))


def test_no_grad_leak_and_no_grad_context() -> None:
    model = _mlp(6, 2, seed=11, dtype=torch.float32)
    x = torch.randn(8, 6)
    y = torch.randint(0, 2, (8,))
    with torch.no_grad():
        x_adv = pgd_attack(model, x, y, norm="linf", eps=0.1, steps=5, restarts=2)
    assert all(p.grad is None for p in model.parameters())
    assert x_adv.dtype == torch.float32 and not x_adv.requires_grad
    assert torch.all(_pnorm(x_adv - x, "linf") <= 0.1 * (1 + 1e-6))


def test_float32_matches_float64_on_linear() -> None:
    lin = _linear(4, 1, seed=12)
    x = torch.randn(10, 4, dtype=torch.float64)
    y = torch.ones(10, dtype=torch.long)
    x64 = pgd_attack(lin, x, y, norm="l2", eps=0.5)
    x32 = pgd_attack(lin.float(), x.float(), y, norm="l2", eps=0.5)
    assert x32.dtype == torch.float32
    torch.testing.assert_close(x32.double(), x64, atol=1e-5, rtol=0)


def test_beats_grid_search_on_2d_mlp() -> None:
    """On a 2-d input, PGD with restarts finds (nearly) the grid-search minimum in the box."""
    model = _mlp(2, 2, seed=13)
    x = torch.tensor([[0.2, -0.1], [-0.5, 0.4], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 1, 1])
    eps = 0.5
    grid = torch.linspace(-eps, eps, 201, dtype=torch.float64)
    dd = torch.cartesian_prod(grid, grid)
    x_adv = pgd_attack(model, x, y, norm="linf", eps=eps, steps=50, restarts=8)
    with torch.no_grad():
        got = margin(model(x_adv), y)
        for i in range(x.shape[0]):
            grid_min = margin(model(x[i] + dd), y[i].expand(dd.shape[0])).min()
            assert got[i] <= grid_min + 1e-3


@pytest.mark.parametrize("bad", [1, 1.5, "l1", "fro", True])
def test_invalid_norm(bad: object) -> None:
    model = _mlp(3, 2, seed=0)
    with pytest.raises(ValueError):
        pgd_attack(model, torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2), norm=bad, eps=0.1)


@pytest.mark.parametrize("eps", [-0.1, math.inf, math.nan])
def test_invalid_eps(eps: float) -> None:
    model = _mlp(3, 2, seed=0)
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError):
        pgd_attack(model, x, torch.zeros(2, dtype=torch.long), norm="l2", eps=eps)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device() -> None:
    model = _mlp(6, 3, seed=14, dtype=torch.float32).cuda()
    x = torch.randn(8, 6, device="cuda")
    y = torch.randint(0, 3, (8,), device="cuda")
    x_adv = pgd_attack(model, x, y, norm="l2", eps=0.5, steps=10, restarts=3)
    assert x_adv.device == x.device
    assert torch.all(_pnorm(x_adv - x, "l2") <= 0.5 * (1 + 1e-5))


@needs_autoattack
def test_auto_attack_standard_is_admissible_and_leaves_no_trace() -> None:
    """Standard AutoAttack on a 5-class image model (APGD-CE, APGD-T, FAB-T and Square all
    run): every result lies in the ball and the box, unbroken points come back unchanged, and
    torch's generator, the tracer, the parameters' gradients and the logs are left alone."""
    model = _mlp(64, 5, seed=15, dtype=torch.float32)
    x = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(16))
    with torch.no_grad():
        y = model(x).argmax(1)
    eps, rng, tracer = 0.02, torch.get_rng_state(), sys.gettrace()
    x_adv = auto_attack(model, x, y, norm="linf", eps=eps, seed=3)
    assert torch.equal(torch.get_rng_state(), rng) and sys.gettrace() is tracer
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert not logging.getLogger("auto-attack").disabled
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert torch.all(_pnorm(x_adv - x, "linf") <= eps * (1 + 1e-6))
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        broken = model(x_adv).argmax(1) != y
    assert 0 < int(broken.sum()) < len(y)
    assert torch.equal(x_adv[~broken], x[~broken])


@needs_autoattack
@pytest.mark.parametrize("norm,q", [("l2", 2.0), ("linf", 1.0)])
def test_auto_attack_fast_is_exact_on_a_binary_linear_score(norm: str, q: float) -> None:
    """A single score f becomes the logits (−f, f); on unbounded inputs (``clamp=None``)
    APGD-CE breaks exactly the points whose margin is below eps‖w‖_q, deterministically."""
    lin = _linear(3, 1, seed=17)
    model = _Squeeze(lin)
    gen = torch.Generator().manual_seed(18)
    x = torch.randn(60, 3, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = (model(x) > 0).long()
        slack = margin(model(x), y) - 0.5 * torch.linalg.vector_norm(lin.weight[0], ord=q)
    kw = {"norm": norm, "eps": 0.5, "clamp": None, "version": "fast", "seed": 1}
    x_adv = auto_attack(model, x, y, **kw)
    assert torch.equal(x_adv, auto_attack(model, x, y, **kw))
    with torch.no_grad():
        broken = margin(model(x_adv), y) < 0
    clear = slack.abs() > 1e-4
    assert torch.equal(broken[clear], (slack < 0)[clear]) and broken.any() and not broken.all()
    assert torch.all(_pnorm(x_adv - x, norm) <= 0.5 * (1 + 1e-12))


@needs_autoattack
def test_auto_attack_logs_only_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    model = _mlp(4, 3, seed=19, dtype=torch.float32)
    x = torch.rand(6, 4)
    y = torch.zeros(6, dtype=torch.long)
    kw = {"norm": "l2", "eps": 0.1, "version": "fast"}
    with caplog.at_level(logging.INFO):
        auto_attack(model, x, y, **kw)
    assert not [r for r in caplog.records if r.name == "auto-attack"]
    with caplog.at_level(logging.DEBUG, logger="convexrobust.attacks"):
        auto_attack(model, x, y, **kw)
    assert [r for r in caplog.records if r.name == "auto-attack"]


@pytest.mark.parametrize("norm, version", [(1, "standard"), ("l2", "plus")])
def test_auto_attack_rejects_l1_and_unknown_versions(norm: object, version: str) -> None:
    model = _mlp(3, 2, seed=0)
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(InvalidInputError):
        auto_attack(model, x, torch.zeros(2), norm=norm, eps=0.1, version=version)


def test_auto_attack_without_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(SolverUnavailableError, match=r"convexrobust\[attack\]"):
        auto_attack(_mlp(3, 2, seed=0), x, torch.zeros(2), norm="l2", eps=0.1)


@needs_autoattack
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_attack_cuda_device() -> None:
    model = _mlp(64, 3, seed=20, dtype=torch.float32).cuda()
    x = torch.rand(8, 1, 8, 8, device="cuda")
    with torch.no_grad():
        y = model(x).argmax(1)
    x_adv = auto_attack(model, x, y, norm="l2", eps=0.5, version="fast")
    assert x_adv.device == x.device
    assert torch.all(_pnorm(x_adv - x, "l2") <= 0.5 * (1 + 1e-5))


class _Broken(nn.Module):
    """Returns scores of a shape no classifier has."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 2, 2)


@pytest.mark.parametrize("call, error, match", [
    (lambda m, x, y: auto_attack(lambda v: v, x, y, norm="l2", eps=0.1), InvalidInputTypeError,
     "torch.nn.Module"),
    (lambda m, x, y: auto_attack(m, x.numpy(), y, norm="l2", eps=0.1), InvalidInputTypeError,
     "torch.Tensor"),
    (lambda m, x, y: auto_attack(m, x[0], y[:1], norm="l2", eps=0.1), InvalidInputError,
     "sample axis"),
    (lambda m, x, y: auto_attack(m, x, y[:3], norm="l2", eps=0.1), InvalidInputError,
     "4 samples but 3"),
    (lambda m, x, y: auto_attack(m, x, y + 0.5, norm="l2", eps=0.1), InvalidInputError,
     "fractions"),
    (lambda m, x, y: auto_attack(m, x, y + 3, norm="l2", eps=0.1), InvalidInputError,
     r"0\.\.2 for a model with 3 classes"),
    (lambda m, x, y: auto_attack(m, x[:, :5], y, norm="l2", eps=0.1),
     InvalidInputError, "failed on inputs of shape"),
    (lambda m, x, y: auto_attack(_Broken(), x, y, norm="l2", eps=0.1), InvalidInputError,
     r"returned \(1, 2, 2\)"),
    (lambda m, x, y: auto_attack(m, x * float("nan"), y, norm="l2", eps=0.1),
     InvalidInputError, "NaN"),
    (lambda m, x, y: auto_attack(m, x, y, norm="l2", eps=0.1, clamp=(0.0,)), InvalidInputError,
     r"\(low, high\)"),
    (lambda m, x, y: auto_attack(m, x, y, norm="l2", eps=0.1, clamp=(1.0, 0.0)),
     InvalidInputError, "empty clamp box"),
    (lambda m, x, y: auto_attack(m, x, y, norm="l2", eps=0.1, clamp=(0.0, math.inf)),
     InvalidInputError, "finite clamp box"),
    (lambda m, x, y: auto_attack(m, x + 2, y, norm="l2", eps=0.1), InvalidInputError,
     "outside the clamp box"),
    (lambda m, x, y: auto_attack(m, x, y, norm="l2", eps="big"), InvalidInputError,
     "eps must be a number"),
])
def test_auto_attack_refuses_bad_inputs_before_any_work(monkeypatch: pytest.MonkeyPatch, call,
                                                        error, match) -> None:
    """Typed errors for the model, the inputs, the labels and the box — checked before the
    package is even needed, so they hold without it."""
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    model = _mlp(6, 3, seed=0, dtype=torch.float32)
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 1])
    with pytest.raises(error, match=match):
        call(model, x, y)
