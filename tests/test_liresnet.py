"""LiResNet: sound Lipschitz bounds and GloRo certificates; EMMA's defining properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from convexrobust.attacks import pgd_attack
from convexrobust.errors import InvalidInputError
from convexrobust.lipschitz_margin import (
    emma_loss,
    epsilon_schedule,
    fixed_margin_loss,
    gloro_certified,
    gloro_radius,
    gloro_trades_loss,
)
from convexrobust.networks.liresnet import LiResNet, minmax, parse_arch
from convexrobust.training import evaluate_gloro


def _tiny(seed: int = 0) -> LiResNet:
    torch.manual_seed(seed)
    return LiResNet(2, 8, 10, in_channels=1, input_size=8, neck_stride=4, neck_channels=8,
                    neck_dim=16).double()


def test_minmax_is_norm_preserving():
    x = torch.randn(5, 6, 3, 3, dtype=torch.float64)
    assert torch.allclose(minmax(x).norm(dim=1), x.norm(dim=1))


def test_architecture_names_and_feature_dimension():
    assert parse_arch("L6W64") == (6, 64)
    net = LiResNet.from_arch("L2W16", 10, in_channels=3, input_size=32)
    assert net.features(torch.zeros(2, 3, 32, 32)).shape == (2, net.feature_dim)
    assert net.feature_dim <= 512
    with pytest.raises(InvalidInputError):
        parse_arch("resnet18")


def test_guaranteed_bound_dominates_estimate_and_empirical_ratios():
    net = _tiny()
    for part in ("features", "backbone"):
        guaranteed = net.lipschitz_bound("guaranteed", part)
        estimate = net.lipschitz_bound("estimate", part)
        assert estimate <= guaranteed * (1 + 1e-9)
    fn = {"features": net.features, "backbone": net.penultimate}
    # an optimiser searching for the largest ‖f(x) − f(x')‖ / ‖x − x'‖ never exceeds the bound
    for part, f in fn.items():
        bound = net.lipschitz_bound("guaranteed", part)
        x = torch.rand(16, 1, 8, 8, dtype=torch.float64, requires_grad=True)
        d = (1e-2 * torch.randn(16, 1, 8, 8, dtype=torch.float64)).requires_grad_(True)
        opt = torch.optim.Adam([x, d], lr=1e-2)
        for _ in range(150):
            ratio = (f(x + d) - f(x)).flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1)
            opt.zero_grad()
            (-ratio.sum()).backward()
            opt.step()
        found = float(ratio.detach().max())
        assert found <= bound
        # the search is not vacuous (a product of per-layer norms is loose at random init)
        assert found >= 0.05 * bound


def test_grouped_block_power_iteration_equals_per_block():
    net = _tiny(2)
    grouped = net.block_norm_estimates(steps=30)
    torch.manual_seed(0)
    fresh = _tiny(2)  # same weights and start vectors, iterated block by block
    single = torch.stack([block.norm_estimate(30) for block in fresh.blocks])
    assert torch.allclose(grouped, single, rtol=1e-10)
    exact = torch.tensor([block.norm_bound() for block in net.blocks], dtype=grouped.dtype)
    assert torch.all(grouped <= exact)


@pytest.mark.parametrize("points", [200, pytest.param(500, marks=pytest.mark.slow)])
def test_gloro_certificates_survive_pgd(points):
    net = _tiny(1).eval()
    K = net.lipschitz_bound("guaranteed", "backbone")
    x = torch.rand(points, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        logits = net(x)
    y = logits.argmax(1)  # certify the model's own predictions
    radius = gloro_radius(logits, y, net.head_weight().detach(), K)
    assert (radius > 0).float().mean() > 0.9
    adv = pgd_attack(net, x, y, norm=2, eps=0.999 * radius, steps=20, restarts=1,
                     multi_targeted=True)
    with torch.no_grad():
        assert torch.equal(net(adv).argmax(1), y)
    # the attack has teeth: far enough out it flips points (at random init the layer-wise
    # product bound is 10-30x loose, so "far" is 30 radii)
    far = pgd_attack(net, x, y, norm=2, eps=30 * radius, steps=20)
    with torch.no_grad():
        assert (net(far).argmax(1) != y).float().mean() > 0.3
    eps = float(radius.median())
    certified = gloro_certified(logits, y, net.head_weight().detach(), K, eps)
    assert torch.equal(certified, radius > eps)


def test_ties_are_not_certified():
    logits = torch.tensor([[1.0, 1.0]])
    W = torch.eye(2)
    assert not gloro_certified(logits, torch.tensor([0]), W, 1.0, 0.0)
    assert float(gloro_radius(logits, torch.tensor([0]), W, 1.0)) == 0.0


def test_identical_head_rows_certify_only_a_strict_lead():
    """``‖w_y − w_i‖ = 0``: the margin against ``i`` never moves, so it allows every radius when
    ``f_y > f_i`` and none when the two are tied (the radius agrees with ``gloro_certified``)."""
    W = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    logits = torch.tensor([[2.0, 2.0, 0.0],    # tied with class 1, whose row is the same
                           [2.0, 1.0, 0.0]])   # ahead of it: only class 2 limits the radius
    radius = gloro_radius(logits, y, W, 1.0)
    assert float(radius[0]) == 0.0
    assert float(radius[1]) == pytest.approx(2.0 / math.sqrt(2.0))
    for eps in (0.0, 1.0, 1.5):
        assert torch.equal(gloro_certified(logits, y, W, 1.0, eps), radius > eps)


def test_guaranteed_evaluation_counts_the_float64_certificates():
    """``evaluate_gloro(kind="guaranteed")`` of a float32 network reports the certificates of
    ``LiResNet.certified_radius`` (its float64 copy), not those of its float32 logits."""
    torch.manual_seed(1)
    net = _tiny().float().eval()
    x, y = torch.rand(40, 1, 8, 8), torch.randint(0, 10, (40,))
    radius = net.certified_radius(x, y)
    radii = tuple(float(r) for r in radius[radius > 0][:2]) + (0.0,)
    report = evaluate_gloro(net, x, y, radii, batch_size=16)
    for r in radii:
        assert report["vra"][f"{r:g}"] == float((radius > r).double().mean())


def test_emma_properties():
    torch.manual_seed(0)
    logits = torch.randn(64, 10, requires_grad=True)
    y = torch.randint(0, 10, (64,))
    W = F.normalize(torch.randn(10, 16), dim=1)
    assert torch.allclose(emma_loss(logits, y, W, 2.0, 0.0), F.cross_entropy(logits, y))
    # when every competitor is at least eps·M_i behind, all ratios clip to 1: EMMA = fixed margin
    big = logits.detach().clone()
    big[torch.arange(64), y] += 100.0
    assert torch.allclose(emma_loss(big, y, W, 2.0, 0.1), fixed_margin_loss(big, y, W, 2.0, 0.1))
    # gradients do not flow through the ratios: EMMA's gradient equals that of the same
    # expression with the ratios frozen as constants
    K = torch.tensor(2.0, requires_grad=True)
    loss = emma_loss(logits, y, W, K, 0.5)
    g_logits, g_K = torch.autograd.grad(loss, [logits, K])
    z = (logits - logits.gather(1, y[:, None])).detach()
    M = 2.0 * (W[y].unsqueeze(1) - W.unsqueeze(0)).norm(dim=-1)
    rho = (-z / (0.5 * M).clamp_min(1e-8)).clamp(0.01, 1.0)
    K2 = torch.tensor(2.0, requires_grad=True)
    logits2 = logits.detach().clone().requires_grad_(True)
    Mk = K2 * (W[y].unsqueeze(1) - W.unsqueeze(0)).norm(dim=-1)
    shifted = (logits2 - logits2.gather(1, y[:, None]) + rho * 0.5 * Mk).scatter(1, y[:, None], 0)
    g2_logits, g2_K = torch.autograd.grad(F.cross_entropy(shifted, y), [logits2, K2])
    assert torch.allclose(g_logits, g2_logits) and torch.allclose(g_K, g2_K)


def test_gloro_trades_is_cross_entropy_plus_a_nonnegative_penalty():
    torch.manual_seed(1)
    logits = torch.randn(32, 10)
    y = torch.randint(0, 10, (32,))
    W = F.normalize(torch.randn(10, 8), dim=1)
    ce = F.cross_entropy(logits, y)
    assert gloro_trades_loss(logits, y, W, 2.0, 0.3) >= ce
    assert gloro_trades_loss(logits, y, W, 2.0, 0.3, trades=0.0) == ce
    confident = logits.clone()
    confident[torch.arange(32), confident.argmax(1)] += 1e3  # certified by a huge margin
    gap = gloro_trades_loss(confident, y, W, 2.0, 0.3) - F.cross_entropy(confident, y)
    assert 0 <= float(gap) < 1e-6


def test_epsilon_schedule():
    assert epsilon_schedule(1.0, 0, 100) == pytest.approx(0.1)
    assert epsilon_schedule(1.0, 50, 100) == pytest.approx(1.5)
    assert epsilon_schedule(1.0, 90, 100, high=3.0) == pytest.approx(3.0)
