"""Tests for :mod:`convexrobust.certify`: per-point certified radii of two-layer heads.

What is checked, on heads trained by the convex programs and on random heads:

* soundness: PGD (multi-targeted, several restarts) inside ``0.999 · radius`` never changes a
  prediction, on ≥ 500 points per head and norm;
* tightness of the exact polynomial ℓ2 radius: the returned boundary point is at distance
  ``radius`` with a non-positive margin, and PGD at ``1.01 · radius`` flips almost every point;
* ReLU exactness: an ``"exact"`` radius is the affine distance computed independently here, and
  the point just beyond it along the dual-norm direction flips; a ``"lower_bound"`` never
  exceeds the distance of an adversarial example found by PGD;
* a brute-force polar-grid search of the ℓ2 distance to the decision boundary in d = 2;
* labels, misclassified points and input validation; regressions for fixed bugs.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

import convexrobust as cr
from convexrobust.attacks import margin, pgd_attack
from convexrobust.certify import certified_radius
from convexrobust.errors import InvalidInputError
from convexrobust.networks.two_layer import PolynomialActivation, TwoLayerPolynomial, TwoLayerReLU

torch.set_num_threads(1)

F64 = torch.float64
N_TEST = 600
Head = tuple[nn.Module, np.ndarray, np.ndarray]  # (network, test points, labels)


# ---------------------------------------------------------------------------------- data


def _data(n: int, d: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian points; binary: a curved boundary, 3 classes: a noisy argmax of 3 coords."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if n_classes == 2:
        return X, (X[:, 0] ** 2 + 0.5 * X[:, 1] - 1.0 > 0).astype(np.int64)
    return X, np.argmax(X[:, :n_classes] + 0.3 * rng.normal(size=(n, n_classes)), axis=1)


def _solve(program: cr.ConvexProgram) -> nn.Module:
    # tol 1e-7: at Clarabel's default 1e-8 the 3-class hinge SDP stops "almost solved". The
    # certificate is about the network returned, optimal or not.
    solution = cr.solve(program, "clarabel", tol=1e-7, accept_inaccurate=True)
    return solution.network().eval()


def _self_labels(net: nn.Module, X: np.ndarray, seed: int) -> np.ndarray:
    """The head's own predictions, 10 % of them replaced by random labels."""
    y = net.predict(torch.as_tensor(X, dtype=F64)).numpy()
    rng = np.random.default_rng(seed)
    flip = rng.random(y.shape[0]) < 0.1
    n_classes = max(net.n_outputs, 2)
    y[flip] = rng.integers(0, n_classes, size=int(flip.sum()))
    return y


def _random_relu(d: int, m: int, n_outputs: int, seed: int) -> TwoLayerReLU:
    rng = np.random.default_rng(seed)
    return TwoLayerReLU(rng.normal(size=(m, d)), rng.normal(size=m),
                        rng.normal(size=(m, n_outputs))).eval()


def _random_poly(d: int, m: int, n_outputs: int, seed: int) -> TwoLayerPolynomial:
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(m, d))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    return TwoLayerPolynomial(U, rng.normal(size=(m, n_outputs)),
                              PolynomialActivation.relu_fit(5.0)).eval()


@functools.cache
def _head(name: str) -> Head:
    """Heads by name: ``<family>-<classes>-<trained|random>[-2d]``."""
    if name == "poly-2-trained":
        X, y = _data(60, 4, 2, 1)
        net = _solve(cr.ConvexPolynomial(X, y, beta=1e-3))
        return (net, *_data(N_TEST, 4, 2, 2))
    if name == "poly-3-trained":
        X, y = _data(60, 4, 3, 1)
        net = _solve(cr.ConvexPolynomial(X, y, beta=1e-3))
        return (net, *_data(N_TEST, 4, 3, 2))
    if name == "relu-2-trained":
        X, y = _data(60, 4, 2, 1)
        net = _solve(cr.ConvexReLU(X, y, n_patterns=10, loss="hinge", beta=1e-2, seed=0))
        return (net, *_data(N_TEST, 4, 2, 2))
    if name == "relu-3-trained":  # adversarially trained: more points with stable patterns
        X, y = _data(60, 4, 3, 1)
        net = _solve(cr.ConvexReLU(X, y, n_patterns=10, loss="hinge", beta=1e-2, seed=0,
                                   threat=cr.L2(0.2)))
        return (net, *_data(N_TEST, 4, 3, 2))
    if name == "relu-2-random":
        net = _random_relu(5, 6, 1, 3)
    elif name == "relu-3-random":
        net = _random_relu(5, 8, 3, 4)
    elif name == "poly-3-random":
        net = _random_poly(5, 6, 3, 5)
    elif name == "poly-2-trained-2d":
        X, y = _data(60, 2, 2, 6)
        net = _solve(cr.ConvexPolynomial(X, y, beta=1e-3))
        return (net, *_data(40, 2, 2, 7))
    elif name == "relu-2-trained-2d":
        X, y = _data(60, 2, 2, 6)
        net = _solve(cr.ConvexReLU(X, y, n_patterns=8, loss="hinge", beta=1e-2, seed=0))
        return (net, *_data(120, 2, 2, 7))
    elif name == "poly-3-random-2d":
        net = _random_poly(2, 5, 3, 8)
    elif name == "relu-3-random-2d":
        net = _random_relu(2, 4, 3, 12)
    else:
        raise KeyError(name)
    n = 120 if name.endswith("-2d") else N_TEST
    X = np.random.default_rng(10).normal(size=(n, net.n_features))
    return net, X, _self_labels(net, X, 11)


@functools.cache
def _radii(name: str, norm: float | str) -> cr.CertifiedRadii:
    net, X, y = _head(name)
    return certified_radius(net, X, y, norm)


def _x(X: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(X, dtype=F64)


def _margins(net: nn.Module, X: np.ndarray | torch.Tensor, y: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        x = X if torch.is_tensor(X) else _x(X)
        return margin(net(x), torch.as_tensor(y)).numpy()


def _pnorm(v: np.ndarray, p: float) -> np.ndarray:
    return np.linalg.norm(v, ord=p, axis=1)


def _attack(net: nn.Module, X: np.ndarray, y: np.ndarray, norm: float | str,
            eps: np.ndarray) -> np.ndarray:
    x_adv = pgd_attack(net, _x(X), torch.as_tensor(y), norm=norm, eps=torch.as_tensor(eps),
                       steps=60, restarts=4, multi_targeted=True, seed=0)
    return x_adv.numpy()


# ---------------------------------------------------------------------------------- soundness

SOUNDNESS = [
    ("poly-2-trained", 2, "exact"),
    ("poly-2-trained", "inf", "l2_containment"),
    ("poly-3-trained", 2, "exact"),
    ("poly-3-trained", "inf", "l2_containment"),
    ("poly-3-random", 2, "exact"),
    ("poly-3-random", "inf", "l2_containment"),
    ("relu-2-trained", 2, None),
    ("relu-2-trained", "inf", None),
    ("relu-3-trained", 2, None),
    ("relu-3-trained", "inf", None),
    ("relu-2-random", 2, None),
    ("relu-2-random", "inf", None),
    ("relu-3-random", 2, None),
    ("relu-3-random", "inf", None),
]


@pytest.mark.parametrize("name,norm,method", SOUNDNESS)
def test_pgd_never_flips_inside_certified_radius(name: str, norm: float | str,
                                                  method: str | None) -> None:
    net, X, y = _head(name)
    res = _radii(name, norm)
    p = math.inf if norm == "inf" else 2.0
    assert res.norm == p and res.radius.shape == (X.shape[0],) and X.shape[0] >= 500
    correct = net.predict(_x(X)).numpy() == y
    assert np.all(res.radius[~correct] == 0) and np.all(res.method[~correct] == "misclassified")
    if method is not None:
        assert set(res.method[correct]) == {method}
    else:
        assert set(res.method[correct]) <= {"exact", "lower_bound"}
    sel = (res.radius > 0) & np.isfinite(res.radius)
    # not vacuous: most correctly classified points get a positive finite radius
    assert sel.sum() >= 0.9 * correct.sum() and sel.sum() >= 300
    Xs, ys, rs = X[sel], y[sel], res.radius[sel]
    x_adv = _attack(net, Xs, ys, norm, 0.999 * rs)
    assert np.all(_pnorm(x_adv - Xs, p) <= 0.999 * rs * (1 + 1e-12))
    flipped = net.predict(_x(x_adv)).numpy() != ys
    assert not flipped.any(), f"{flipped.sum()} certified points flipped by PGD"
    assert np.all(_margins(net, x_adv, ys) > 0)
    # The attack is not toothless: at 3x the radius it flips a good share of the points.
    x_far = _attack(net, Xs, ys, norm, 3.0 * rs)
    assert np.mean(net.predict(_x(x_far)).numpy() != ys) > 0.3


# ---------------------------------------------------------------------------------- tightness


@pytest.mark.parametrize("name", ["poly-2-trained", "poly-3-trained", "poly-3-random"])
def test_polynomial_l2_radius_is_tight(name: str) -> None:
    net, X, y = _head(name)
    res = _radii(name, 2)
    assert res.boundary is not None and res.boundary.shape == X.shape
    sel = (res.radius > 0) & np.isfinite(res.radius)
    Xs, ys, rs, bs = X[sel], y[sel], res.radius[sel], res.boundary[sel]
    assert np.all(np.isfinite(bs))
    dist = _pnorm(bs - Xs, 2.0)
    assert np.all(dist <= rs * (1 + 1e-6))
    assert np.all(dist >= rs * (1 - 1e-6))  # a closer flip would contradict soundness
    mb = _margins(net, bs, ys)
    scale = np.abs(_margins(net, Xs, ys))
    assert np.all(mb <= 1e-9 * np.maximum(scale, 1.0))
    assert np.all(mb < 0) and np.all(net.predict(_x(bs)).numpy() != ys)
    # PGD just beyond the radius finds a flip almost everywhere.
    x_adv = _attack(net, Xs, ys, 2, 1.01 * rs)
    assert np.mean(net.predict(_x(x_adv)).numpy() != ys) >= 0.9


def test_polynomial_linf_is_l2_containment() -> None:
    net, X, y = _head("poly-3-trained")
    r2, rinf = _radii("poly-3-trained", 2), _radii("poly-3-trained", "inf")
    np.testing.assert_allclose(rinf.radius, r2.radius / math.sqrt(X.shape[1]), rtol=1e-12)
    assert rinf.boundary is None


# ---------------------------------------------------------------------------------- ReLU


def _affine_data(net: TwoLayerReLU, X: np.ndarray, y: np.ndarray, q: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent affine analysis at each point with every neuron's pattern fixed:
    ``(distance, gradient of the closest pair margin, nearest neuron-hyperplane distance)``,
    all in the ℓp norm dual to ``q``."""
    U = net.weight.detach().numpy()
    b = net.bias.detach().numpy()
    A = net.output.detach().numpy()
    pre = X @ U.T + b
    active = (pre > 0).astype(float)
    scores = np.maximum(pre, 0) @ A
    n = X.shape[0]
    if A.shape[1] == 1:
        t = 2.0 * y - 1.0
        weights = [t[:, None] * A[:, 0][None, :]]
        margins = [t * scores[:, 0]]
    else:
        weights = [A.T[y] - A[:, c][None, :] for c in range(A.shape[1])]
        margins = [scores[np.arange(n), y] - scores[:, c] for c in range(A.shape[1])]
    dists, grads = [], []
    for c, (w, m) in enumerate(zip(weights, margins, strict=True)):
        g = (w * active) @ U
        gn = np.linalg.norm(g, ord=q, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            dc = np.where(gn > 0, m / gn, np.inf)
        if A.shape[1] > 1:
            dc = np.where(y == c, np.inf, dc)
        dists.append(dc)
        grads.append(g)
    dists_a = np.stack(dists, axis=1)
    best = np.argmin(dists_a, axis=1)
    grad = np.stack(grads, axis=1)[np.arange(n), best]
    unorm = np.linalg.norm(U, ord=q, axis=1)
    with np.errstate(divide="ignore"):
        neuron = np.min(np.where(unorm > 0, np.abs(pre) / unorm, np.inf), axis=1)
    return dists_a[np.arange(n), best], grad, neuron


def _steepest(grad: np.ndarray, p: float) -> np.ndarray:
    """Unit ℓp directions maximising ``gradᵀv`` (so ``gradᵀv = ‖grad‖_q``)."""
    if p == 2.0:
        return grad / np.linalg.norm(grad, axis=1, keepdims=True)
    if p == math.inf:
        return np.sign(grad)
    v = np.zeros_like(grad)
    k = np.argmax(np.abs(grad), axis=1)
    v[np.arange(grad.shape[0]), k] = np.sign(grad[np.arange(grad.shape[0]), k])
    return v


RELU_HEADS = ["relu-2-trained", "relu-3-trained", "relu-2-random", "relu-3-random"]
DUAL = {2: (2.0, 2.0), "inf": (math.inf, 1.0), 1: (1.0, math.inf)}


@pytest.mark.parametrize("norm", [2, "inf", 1])
def test_relu_exact_radius_is_the_affine_distance(norm: float | str) -> None:
    p, q = DUAL[norm]
    n_exact = 0
    for name in RELU_HEADS:
        net, X, y = _head(name)
        res = _radii(name, norm)
        correct = net.predict(_x(X)).numpy() == y
        aff, grad, neuron = _affine_data(net, X, y, q)
        exact = res.method == "exact"
        # "exact" exactly when the affine root lies inside every neuron's stability distance
        clear = correct & (aff < neuron * (1 - 1e-9))
        borderline = correct & (np.abs(aff - neuron) <= 1e-9 * neuron)
        assert np.all(exact[~borderline] == clear[~borderline]), name
        np.testing.assert_allclose(res.radius[exact], aff[exact], rtol=1e-9, atol=0)
        n_exact += int(exact.sum())
        # At distance r along the steepest direction the margin reaches 0; just beyond it flips.
        sel = exact & (res.radius * 1.0001 < neuron)
        if not sel.any():
            continue
        r, direction = res.radius[sel][:, None], _steepest(grad[sel], p)
        X0, ys = X[sel], y[sel]
        on = _margins(net, X0 - r * direction, ys)
        assert np.all(np.abs(on) <= 1e-8 * np.maximum(np.abs(_margins(net, X0, ys)), 1.0))
        beyond = X0 - 1.0001 * r * direction
        assert np.all(_margins(net, beyond, ys) < 0)
        assert np.all(net.predict(_x(beyond)).numpy() != ys)
        np.testing.assert_allclose(_pnorm(beyond - X0, p), 1.0001 * r[:, 0], rtol=1e-12)
    assert n_exact >= 100


@pytest.mark.parametrize("name", RELU_HEADS)
@pytest.mark.parametrize("norm", [2, "inf"])
def test_relu_radius_below_every_adversarial_example(name: str, norm: float | str) -> None:
    net, X, y = _head(name)
    res = _radii(name, norm)
    p = DUAL[norm][0]
    sel = (res.radius > 0) & np.isfinite(res.radius)
    assert (res.method[sel] == "lower_bound").sum() >= 100
    Xs, ys, rs = X[sel], y[sel], res.radius[sel]
    found = 0
    for factor in (1.5, 4.0):
        x_adv = _attack(net, Xs, ys, norm, factor * rs)
        flip = _margins(net, x_adv, ys) < 0
        found += int(flip.sum())
        assert np.all(_pnorm(x_adv - Xs, p)[flip] >= rs[flip] * (1 - 1e-9))
    assert found >= 50


# ---------------------------------------------------------------------------------- brute force


def _ray_distances(net: nn.Module, z: np.ndarray, label: int, thetas: np.ndarray,
                   r_max: float, n_radii: int) -> np.ndarray:
    """Per angle, the first radius in ``(0, r_max]`` where ``margin ≤ 0`` along the ray (grid
    search, then bisection to round-off); ``inf`` where the ray never flips."""
    dirs = np.stack([np.cos(thetas), np.sin(thetas)], axis=1)
    radii = np.linspace(0.0, r_max, n_radii + 1)[1:]
    pts = z[None, None, :] + radii[None, :, None] * dirs[:, None, :]
    labels = np.full(pts.shape[0] * pts.shape[1], label)
    flipped = (_margins(net, pts.reshape(-1, 2), labels) <= 0).reshape(len(thetas), n_radii)
    has = flipped.any(axis=1)
    first = np.argmax(flipped, axis=1)
    lo = np.where(first > 0, radii[np.maximum(first - 1, 0)], 0.0)
    hi = radii[first]
    lab = np.full(len(thetas), label)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        f = _margins(net, z[None, :] + mid[:, None] * dirs, lab) <= 0
        hi, lo = np.where(f, mid, hi), np.where(f, lo, mid)
    return np.where(has, hi, np.inf)


def _brute_l2_distance(net: nn.Module, z: np.ndarray, label: int, r_max: float) -> float:
    """ℓ2 distance from ``z`` to ``{margin ≤ 0}`` by a polar grid (360 angles × 400 radii),
    refined on 121 angles around each of the 4 best rays. Every value is the distance of a
    point with margin ≤ 0, so the result is never below the true distance."""
    thetas = np.linspace(0.0, 2 * np.pi, 360, endpoint=False)
    dist = _ray_distances(net, z, label, thetas, r_max, 400)
    best = float(dist.min())
    step = thetas[1] - thetas[0]
    for k in np.argsort(dist)[:4]:
        if not np.isfinite(dist[k]):
            break
        fine = thetas[k] + np.linspace(-step, step, 121)
        best = min(best, float(_ray_distances(net, z, label, fine, r_max, 400).min()))
    return best


@pytest.mark.parametrize("name", ["poly-2-trained-2d", "poly-3-random-2d",
                                  "relu-2-trained-2d", "relu-3-random-2d"])
def test_l2_radius_matches_polar_grid_search_in_2d(name: str) -> None:
    net, X, y = _head(name)
    res = _radii(name, 2)
    r_max = 3.0
    positive = res.radius > 0
    exact = np.flatnonzero(positive & (res.method == "exact") & (res.radius < 0.8 * r_max))
    loose = np.flatnonzero(positive & (res.method != "exact"))
    assert len(exact) >= (15 if name.startswith("poly") else 5)
    for k in exact[:25]:
        r = float(res.radius[k])
        brute = _brute_l2_distance(net, X[k], int(y[k]), r_max)
        # both are the distance to the boundary; brute >= true distance (grid points flip)
        assert abs(brute - r) <= 1e-3 * r, (k, r, brute)
        assert r <= brute * (1 + 1e-9), (k, r, brute)
    if name.startswith("poly"):
        assert len(loose) == 0
    for k in loose[:15]:  # ReLU lower bounds: never beyond the true distance
        r = float(res.radius[k])
        assert r <= _brute_l2_distance(net, X[k], int(y[k]), r_max) * (1 + 1e-9), (k, r)


# ---------------------------------------------------------------------------------- labels


@pytest.mark.parametrize("name", ["poly-2-trained", "relu-2-trained"])
def test_binary_heads_accept_pm1_labels(name: str) -> None:
    net, X, y = _head(name)
    for norm in (2, "inf"):
        ref = _radii(name, norm)
        pm = certified_radius(net, X, 2 * y - 1, norm)
        np.testing.assert_array_equal(pm.radius, ref.radius)
        np.testing.assert_array_equal(pm.method, ref.method)
        as_tensor = certified_radius(net, torch.as_tensor(X), torch.as_tensor(y), norm)
        np.testing.assert_array_equal(as_tensor.radius, ref.radius)


@pytest.mark.parametrize("name", ["poly-2-trained", "poly-3-trained", "relu-2-trained",
                                  "relu-3-trained"])
def test_misclassified_points_get_radius_zero(name: str) -> None:
    net, X, _ = _head(name)
    X = X[:100]
    pred = net.predict(_x(X)).numpy()
    wrong = (pred + 1) % max(net.n_outputs, 2)
    for norm in (2, "inf"):
        res = certified_radius(net, X, wrong, norm)
        assert np.all(res.radius == 0)
        assert np.all(res.method == "misclassified")
        assert res.certified_accuracy(0.0) == 0.0
        right = certified_radius(net, X, pred, norm)
        assert np.all(right.method != "misclassified") and np.all(right.radius > 0)
        eps = float(np.median(right.radius))
        assert right.certified_accuracy(eps) == pytest.approx(np.mean(right.radius > eps))


def test_float32_head_is_certified_in_float64() -> None:
    net, X, y = _head("relu-3-random")
    net32 = TwoLayerReLU(net.weight.detach(), net.bias.detach(), net.output.detach(),
                         dtype=torch.float32)
    ref64 = certified_radius(TwoLayerReLU(net32.weight.detach(), net32.bias.detach(),
                                          net32.output.detach()), X[:50], y[:50], 2)
    res32 = certified_radius(net32, X[:50], y[:50], 2)
    np.testing.assert_array_equal(res32.radius, ref64.radius)


# ---------------------------------------------------------------------------------- errors


def test_invalid_input_raises() -> None:
    relu, X, y = _head("relu-3-random")
    poly, Xp, yp = _head("poly-2-trained")
    X, y, Xp, yp = X[:5], y[:5], Xp[:5], yp[:5]
    bad = X.copy()
    bad[1, 2] = np.nan
    cases = [
        (relu, X[:, :3], y, 2),  # wrong feature count
        (relu, bad, y, 2),  # NaN in X
        (relu, X, np.array([0, 1, 3, 0, 1]), 2),  # label out of range
        (relu, X, np.array([0, 1, -1, 0, 1]), 2),  # negative label of a multi-class head
        (relu, X, np.array([0, 1, 0.5, 0, 1]), 2),  # fractional label
        (relu, X, y[:4], 2),  # wrong number of labels
        (relu, X, y, "l3"),  # unknown norm
        (relu, X, y, 3),  # unknown norm
        (poly, Xp, np.array([0, 1, 2, 0, 1]), 2),  # binary head: label 2
        (poly, Xp, yp, 1),  # polynomial heads: l2 / linf only
        (nn.Linear(4, 1).double(), Xp, yp, 2),  # not a two-layer head
    ]
    for net, Xc, yc, norm in cases:
        with pytest.raises(InvalidInputError):
            certified_radius(net, Xc, yc, norm)


# ---------------------------------------------------------------------------------- regressions


def test_constant_neuron_does_not_hide_a_flip() -> None:
    """A neuron with ``u_j = 0`` (distance inf) once dropped every neuron distance from the
    bisection bracket: radius inf for a point that flips at distance 15."""
    W = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    net = TwoLayerReLU(W, np.array([1.0, 10.0, 10.0]), np.array([[25.0], [-1.0], [-1.0]]))
    x = np.zeros((1, 2))
    assert _margins(net, np.array([[15.001, 0.0]]), np.array([1]))[0] < 0
    for norm in (2, "inf", 1):
        res = certified_radius(net, x, [1], norm)
        # the bound jumps below 0 when the two neurons turn unstable at distance 10:
        # a sound lower bound, and not the (15) distance to the boundary
        assert res.radius[0] == pytest.approx(10.0, rel=1e-12) and res.radius[0] <= 10.0
        assert res.method[0] == "lower_bound"


def test_constant_pair_margin_does_not_give_infinite_radius() -> None:
    """``f_0 − f_1`` constant (Lipschitz 0) once made the bracket ``1e-12`` wide and the radius
    inf, although ``f_2`` overtakes ``f_0`` at distance 0.5."""
    W = np.array([[0.0, 0.0], [1.0, 0.0]])
    net = TwoLayerReLU(W, np.array([1.0, 0.0]), np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    x = np.array([[0.5, 0.0]])
    res = certified_radius(net, x, [0], 2)
    assert res.radius[0] == pytest.approx(0.5, rel=1e-12) and res.radius[0] <= 0.5
    assert net.predict(torch.tensor([[1.001, 0.0]], dtype=F64)).item() == 2


def test_constant_head_is_certified_everywhere() -> None:
    net = TwoLayerReLU(np.zeros((2, 3)), np.array([1.0, 2.0]), np.array([[1.0], [0.5]]))
    res = certified_radius(net, np.random.default_rng(0).normal(size=(4, 3)), [1] * 4, "inf")
    assert np.all(np.isinf(res.radius))
    res0 = certified_radius(net, np.zeros((1, 3)), [0], 2)
    assert res0.radius[0] == 0 and res0.method[0] == "misclassified"


@pytest.mark.parametrize("outputs", [1, 3])
def test_a_head_without_neurons_certifies_nothing(outputs: int) -> None:
    """A ReLU program whose optimum is the zero network (a radius beyond the data) gives a head
    with no neurons: every margin is 0, so no point is certified — once an IndexError."""
    net = TwoLayerReLU(np.zeros((0, 3)), np.zeros(0), np.zeros((0, outputs)))
    x = np.random.default_rng(0).normal(size=(5, 3))
    res = certified_radius(net, x, [0, 1, 0, 1, 0] if outputs == 1 else [0, 1, 2, 1, 0], 2)
    assert np.all(res.radius == 0)
