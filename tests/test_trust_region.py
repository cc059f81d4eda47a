"""Tests for :mod:`convexrobust.trust_region` (exact batched TRS and boundary distance)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize as so
import torch

from convexrobust.trust_region import (
    BoundaryDistance,
    TRSResult,
    boundary_distance,
    solve_trs,
)

torch.set_num_threads(1)

F64 = torch.float64
KINDS = ("indefinite", "psd", "pd", "repeated", "negdef")


def _spectrum(kind: str, d: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "indefinite":
        lam = rng.normal(scale=2.0, size=d)
        lam[0] = -abs(lam[0]) - 0.1  # make sure it is indefinite for d >= 2
        if d >= 2:
            lam[-1] = abs(lam[-1]) + 0.1
    elif kind == "psd":
        lam = np.abs(rng.normal(size=d))
        lam[: max(1, d // 2)] = 0.0
    elif kind == "pd":
        lam = rng.uniform(0.2, 3.0, size=d)
    elif kind == "repeated":
        lam = rng.choice([-1.0, 0.5, 2.0], size=d)
        lam[0] = -1.0
        if d >= 2:
            lam[1] = -1.0
    elif kind == "negdef":
        lam = -rng.uniform(0.2, 3.0, size=d)
    else:  # pragma: no cover
        raise ValueError(kind)
    return lam


def _make_problem(kind: str, d: int, rng: np.random.Generator):
    """Random symmetric A with prescribed spectrum; returns (A, Q, lam, eigh(A))."""
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = _spectrum(kind, d, rng)
    a = q @ np.diag(lam) @ q.T
    a = 0.5 * (a + a.T)
    ev, vecs = torch.linalg.eigh(torch.tensor(a, dtype=F64))
    return a, q, lam, ev, vecs


def _q(a: np.ndarray, g: np.ndarray, h: np.ndarray, x: np.ndarray) -> np.ndarray:
    """q(x) = x^T A x + 2 g^T x + h, batched over rows."""
    return np.einsum("ni,ij,nj->n", x, a, x) + 2.0 * np.sum(g * x, axis=1) + h


def _check_result(res: TRSResult, a, g, h, r, rtol_feas: float = 1e-12) -> None:
    delta = res.delta.numpy()
    up, lo = res.value_upper.numpy(), res.value_lower.numpy()
    assert np.all(np.linalg.norm(delta, axis=1) <= r * (1 + rtol_feas) + 1e-300)
    np.testing.assert_allclose(up, _q(a, g, h, delta), rtol=1e-10, atol=1e-10)
    assert np.all(lo <= up + 1e-9)
    assert np.all(up - lo <= 1e-8 * (1 + np.abs(up)))
    assert np.all(np.isfinite(up)) and np.all(np.isfinite(lo))


def _brute_slsqp(a, g, h, r, rng, starts: int = 12) -> float:
    """Multi-start SLSQP on the ball (plus the analytic unconstrained point if inside)."""
    d = a.shape[0]
    fun = lambda x: float(x @ a @ x + 2 * g @ x + h)  # noqa: E731
    jac = lambda x: 2 * (a @ x) + 2 * g  # noqa: E731
    cons = {"type": "ineq", "fun": lambda x: r * r - x @ x, "jac": lambda x: -2 * x}
    best = fun(np.zeros(d))
    x0s = [np.zeros(d)]
    for _ in range(starts):
        v = rng.normal(size=d)
        x0s.append(v / np.linalg.norm(v) * r * rng.uniform(0.3, 1.0))
    for x0 in x0s:
        sol = so.minimize(
            fun,
            x0,
            jac=jac,
            constraints=[cons],
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 500},
        )
        x = sol.x
        nx = np.linalg.norm(x)
        if nx > r:
            x = x * r / nx
        best = min(best, fun(x))
    return best


def _grid_min_d2(a: np.ndarray, g: np.ndarray, h: float, r: float) -> float:
    """Brute-force TRS minimum for d = 2.

    Boundary circle with 20000 angles (best one refined by bounded 1-D minimisation) and a
    polar grid of the disk whose best point is polished by SLSQP.
    """
    theta = np.linspace(0.0, 2 * np.pi, 20000, endpoint=False)
    circ = r * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    qc = _q(a, np.broadcast_to(g, circ.shape), h, circ)
    k = int(np.argmin(qc))

    def f_ang(t: float) -> float:
        x = r * np.array([[np.cos(t), np.sin(t)]])
        return float(_q(a, g[None], h, x)[0])

    step = theta[1] - theta[0]
    ang = so.minimize_scalar(
        f_ang,
        bounds=(theta[k] - step, theta[k] + step),
        method="bounded",
        options={"xatol": 1e-12},
    )
    ref = min(qc.min(), ang.fun)
    rho = np.linspace(0.0, 1.0, 200)
    disk = (rho[:, None, None] * circ[None, ::50, :]).reshape(-1, 2)
    qd = _q(a, np.broadcast_to(g, disk.shape), h, disk)
    ref = min(ref, qd.min())
    sol = so.minimize(
        lambda x: float(x @ a @ x + 2 * g @ x + h),
        disk[int(np.argmin(qd))],
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda x: r**2 - x @ x}],
        options={"ftol": 1e-15},
    )
    if np.linalg.norm(sol.x) <= r * (1 + 1e-12):
        ref = min(ref, sol.fun)
    return ref


# ----------------------------------------------------------------------------------------
# solve_trs
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_trs_matches_grid_d2(kind: str) -> None:
    rng = np.random.default_rng(KINDS.index(kind))
    for _ in range(2):
        a, _, _, ev, vecs = _make_problem(kind, 2, rng)
        n = 6
        g = rng.normal(size=(n, 2)) * rng.choice([0.01, 1.0, 3.0], size=(n, 1))
        h = rng.normal(size=n)
        r = rng.uniform(0.1, 3.0, size=n)
        res = solve_trs(ev, vecs, torch.tensor(g), torch.tensor(h), torch.tensor(r))
        _check_result(res, a, g, h, r)
        for i in range(n):
            ref = _grid_min_d2(a, g[i], h[i], r[i])
            v = float(res.value_upper[i])
            assert v <= ref + 1e-9 * (1 + abs(ref))
            assert abs(v - ref) <= 1e-6 * (1 + abs(ref))


@pytest.mark.parametrize("d", [1, 3, 5])
def test_trs_matches_multistart(d: int) -> None:
    rng = np.random.default_rng(100 + d)
    for kind in KINDS:
        a, _, _, ev, vecs = _make_problem(kind, d, rng)
        n = 3
        g = rng.normal(size=(n, d)) * rng.choice([0.05, 1.0], size=(n, 1))
        h = rng.normal(size=n)
        r = rng.uniform(0.2, 2.5, size=n)
        res = solve_trs(ev, vecs, torch.tensor(g), torch.tensor(h), torch.tensor(r))
        _check_result(res, a, g, h, r)
        for i in range(n):
            ref = _brute_slsqp(a, g[i], h[i], r[i], rng)
            v = float(res.value_upper[i])
            assert v <= ref + 1e-9 * (1 + abs(ref)), (kind, i, v, ref)
            assert abs(v - ref) <= 1e-6 * (1 + abs(ref)), (kind, i, v, ref)


def _hard_instance(lam: np.ndarray, rng: np.random.Generator, n: int, scale: float):
    d = lam.size
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a = q @ np.diag(lam) @ q.T
    a = 0.5 * (a + a.T)
    bottom = np.isclose(lam, lam.min())
    coef = rng.normal(size=(n, d)) * scale
    coef[:, bottom] = 0.0
    g = coef @ q.T  # orthogonal to the bottom eigenspace
    ev, vecs = torch.linalg.eigh(torch.tensor(a, dtype=F64))
    return a, q, g, coef, ev, vecs


@pytest.mark.parametrize(
    "lam", [np.array([-1.5, 0.3, 2.0, 2.5]), np.array([-1.0, -1.0, 1.0, 2.0, 0.0])]
)
def test_trs_hard_case(lam: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    n = 8
    a, q, g, coef, ev, vecs = _hard_instance(lam, rng, n, scale=0.1)
    lam_min = lam.min()
    nb = ~np.isclose(lam, lam_min)
    dprime = coef[:, nb] / (lam[nb] - lam_min)
    r = np.linalg.norm(dprime, axis=1) * rng.uniform(1.2, 3.0, size=n)  # hard case: ||d'|| < r
    h = rng.normal(size=n)
    res = solve_trs(ev, vecs, torch.tensor(g), torch.tensor(h), torch.tensor(r))
    _check_result(res, a, g, h, r)
    exact = h - np.sum(coef[:, nb] ** 2 / (lam[nb] - lam_min), axis=1) + lam_min * r**2
    np.testing.assert_allclose(res.value_upper.numpy(), exact, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(res.multiplier.numpy(), -lam_min, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.linalg.norm(res.delta.numpy(), axis=1), r, rtol=1e-12)

    # Exact hard case: in the eigenbasis (Q = I) the bottom components of g are exactly 0,
    # so the secular equation has no root and the hard-case step is required.
    res = solve_trs(
        torch.tensor(lam),
        torch.eye(lam.size, dtype=F64),
        torch.tensor(coef),
        torch.tensor(h),
        torch.tensor(r),
    )
    _check_result(res, np.diag(lam), coef, h, r)
    np.testing.assert_allclose(res.value_upper.numpy(), exact, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.multiplier.numpy(), -lam_min, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(res.delta.numpy(), axis=1), r, rtol=1e-12)

    # Near-hard cases: a small component on the bottom eigenvector.
    for eps_b in (1e-3, 1e-7, 1e-11):
        g_near = g + eps_b * q[:, np.argmin(lam)][None, :]
        res = solve_trs(ev, vecs, torch.tensor(g_near), torch.tensor(h), torch.tensor(r))
        _check_result(res, a, g_near, h, r)
        for i in range(3):
            ref = _brute_slsqp(a, g_near[i], h[i], r[i], rng, starts=8)
            v = float(res.value_upper[i])
            assert v <= ref + 1e-9 * (1 + abs(ref))
            assert abs(v - ref) <= 1e-6 * (1 + abs(ref))
        # The minimum can only be at or below the hard-case value (more linear term to use).
        assert np.all(res.value_upper.numpy() <= exact + 1e-9)


def test_trs_degenerate_inputs() -> None:
    rng = np.random.default_rng(3)
    a, _, lam, ev, vecs = _make_problem("indefinite", 4, rng)
    n = 5
    g = rng.normal(size=(n, 4))
    h = rng.normal(size=n)
    # r = 0: the only feasible point is 0.
    res = solve_trs(ev, vecs, torch.tensor(g), torch.tensor(h), 0.0)
    assert torch.all(res.delta == 0)
    np.testing.assert_array_equal(res.value_upper.numpy(), h)
    np.testing.assert_array_equal(res.value_lower.numpy(), h)
    # g = 0, indefinite A: min is h + lam_min r^2 along the bottom eigenvector.
    r = rng.uniform(0.5, 2.0, size=n)
    res = solve_trs(ev, vecs, torch.zeros(n, 4, dtype=F64), torch.tensor(h), torch.tensor(r))
    _check_result(res, a, np.zeros((n, 4)), h, r)
    np.testing.assert_allclose(res.value_upper.numpy(), h + lam.min() * r**2, rtol=1e-12)
    # g = 0, A > 0: min is h at delta = 0.
    a2, _, _, ev2, vecs2 = _make_problem("pd", 4, rng)
    res = solve_trs(ev2, vecs2, torch.zeros(n, 4, dtype=F64), torch.tensor(h), torch.tensor(r))
    np.testing.assert_allclose(res.value_upper.numpy(), h, rtol=0, atol=1e-15)
    np.testing.assert_allclose(res.value_lower.numpy(), h, rtol=0, atol=1e-15)
    # Interior solution of a PD problem: -A^{-1} g with multiplier 0.
    g_small = 0.01 * g
    res = solve_trs(ev2, vecs2, torch.tensor(g_small), torch.tensor(h), 10.0)
    np.testing.assert_allclose(res.delta.numpy(), -np.linalg.solve(a2, g_small.T).T, atol=1e-12)
    assert torch.all(res.multiplier == 0)
    _check_result(res, a2, g_small, h, np.full(n, 10.0))
    # Mixed scalar/tensor radius with zeros in the batch, scalar h.
    r_mixed = torch.tensor([0.0, 1.0, 0.0, 2.0, 0.5], dtype=F64)
    res = solve_trs(ev, vecs, torch.tensor(g), 0.3, r_mixed)
    _check_result(res, a, g, np.full(n, 0.3), r_mixed.numpy())
    with pytest.raises(ValueError):
        solve_trs(ev, vecs, torch.tensor(g), torch.tensor(h), -1.0)


def test_trs_matches_slemma_sdp() -> None:
    cp = pytest.importorskip("cvxpy")
    rng = np.random.default_rng(11)
    instances = []
    for kind in ("indefinite", "pd", "repeated"):
        a, _, _, ev, vecs = _make_problem(kind, 3, rng)
        instances.append(
            (
                a,
                ev,
                vecs,
                rng.normal(size=(2, 3)),
                rng.normal(size=2),
                rng.uniform(0.3, 2.0, size=2),
            )
        )
    # one hard-case instance
    a, q, g, coef, ev, vecs = _hard_instance(np.array([-1.0, 0.5, 2.0]), rng, 2, scale=0.1)
    instances.append((a, ev, vecs, g, rng.normal(size=2), np.array([1.5, 2.0])))
    for a, ev, vecs, g, h, r in instances:
        res = solve_trs(ev, vecs, torch.tensor(g), torch.tensor(h), torch.tensor(r))
        d = a.shape[0]
        for i in range(g.shape[0]):
            t = cp.Variable()
            mu = cp.Variable(nonneg=True)
            x = cp.Variable((d + 1, d + 1), PSD=True)
            m = cp.bmat(
                [
                    [a + mu * np.eye(d), g[i][:, None]],
                    [g[i][None, :], cp.reshape(h[i] - t - mu * r[i] ** 2, (1, 1), order="C")],
                ]
            )
            prob = cp.Problem(cp.Maximize(t), [x == m])
            # 1e-7, not cvxpy's default 1e-8: at 1e-8 Clarabel ends right at the tolerance
            # (errors ~2e-8 here), so "optimal" vs "almost solved" is decided by rounding and
            # differs between CPUs; 1e-7 it reaches with room, and its ~2e-7 error is well
            # inside the 1e-6 compared below.
            prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-7, tol_gap_rel=1e-7, tol_feas=1e-7)
            assert prob.status == cp.OPTIMAL
            ref = float(t.value)
            assert abs(float(res.value_upper[i]) - ref) <= 1e-6 * (1 + abs(ref))
            assert abs(float(res.value_lower[i]) - ref) <= 1e-6 * (1 + abs(ref))


# ----------------------------------------------------------------------------------------
# boundary_distance
# ----------------------------------------------------------------------------------------


def _check_boundary(bd: BoundaryDistance, a, g, h, ev, vecs, tight: float = 1e-6) -> None:
    rad = bd.radius.numpy()
    delta = bd.delta.numpy()
    assert np.all(rad >= 0)
    fin = np.isfinite(rad) & (h > 0)
    # Soundness: the dual bound of the TRS at (slightly less than) the radius is positive.
    if fin.any():
        rs = torch.tensor(rad[fin] * (1 - 1e-9))
        res = solve_trs(ev, vecs, torch.tensor(g[fin]), torch.tensor(h[fin]), rs)
        assert torch.all(res.value_lower > 0)
        # Tightness: a point with q <= 0 at (almost) that radius.
        # (Evaluated in the original basis, so allow the rounding of x'Ax itself.)
        qd = _q(a, g[fin], h[fin], delta[fin])
        nx = np.linalg.norm(delta[fin], axis=1)
        rounding = (
            64
            * np.finfo(float).eps
            * (np.linalg.norm(a, 2) * nx**2 + np.linalg.norm(g[fin], axis=1) * nx)
        )
        assert np.all(qd <= 1e-12 * (1 + np.abs(h[fin])) + rounding)
        assert np.all(np.linalg.norm(delta[fin], axis=1) <= rad[fin] * (1 + tight) + 1e-300)
    inf = np.isinf(rad)
    assert np.all(np.isnan(delta[inf]))
    assert np.all(rad[h <= 0] == 0) and np.all(delta[h <= 0] == 0)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_boundary_distance_sound_and_tight(d: int) -> None:
    rng = np.random.default_rng(200 + d)
    for kind in KINDS:
        a, _, _, ev, vecs = _make_problem(kind, d, rng)
        n = 12
        g = rng.normal(size=(n, d)) * rng.choice([0.01, 0.3, 2.0], size=(n, 1))
        h = np.abs(rng.normal(size=n)) + 0.05
        h[0] = -0.5  # already violated
        h[1] = 0.0
        bd = boundary_distance(ev, vecs, torch.tensor(g), torch.tensor(h))
        _check_boundary(bd, a, g, h, ev, vecs)
        if kind in ("indefinite", "negdef", "repeated"):
            assert np.all(np.isfinite(bd.radius.numpy()))


def test_boundary_distance_matches_polar_search_d2() -> None:
    rng = np.random.default_rng(5)
    theta = np.linspace(0.0, 2 * np.pi, 200000, endpoint=False)
    u = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    for kind in KINDS:
        a, _, _, ev, vecs = _make_problem(kind, 2, rng)
        n = 5
        g = rng.normal(size=(n, 2))
        h = np.abs(rng.normal(size=n)) + 0.1
        bd = boundary_distance(ev, vecs, torch.tensor(g), torch.tensor(h))
        _check_boundary(bd, a, g, h, ev, vecs)
        # Brute force: along each direction u, the smallest rho > 0 with
        # rho^2 u'Au + 2 rho g'u + h <= 0 (a scalar quadratic), minimised over the angle.
        qa = np.einsum("ki,ij,kj->k", u, a, u)
        for i in range(n):
            qb = u @ g[i]
            disc = qb**2 - qa * h[i]
            with np.errstate(divide="ignore", invalid="ignore"):
                sq = np.sqrt(np.maximum(disc, 0.0))
                r1 = (-qb - sq) / qa
                r2 = (-qb + sq) / qa
                rl = h[i] / (-2 * qb)  # qa == 0 (linear)
            cands = np.where(
                np.abs(qa) > 1e-14,
                np.where(
                    disc >= 0,
                    np.fmin(np.where(r1 > 0, r1, np.inf), np.where(r2 > 0, r2, np.inf)),
                    np.inf,
                ),
                np.where(rl > 0, rl, np.inf),
            )
            ref = cands.min()
            rad = float(bd.radius[i])
            if np.isinf(ref):
                assert np.isinf(rad)
            else:
                assert abs(rad - ref) <= 1e-3 * ref
                assert rad <= ref * (1 + 1e-9)  # sound: never above the true distance


def test_boundary_distance_infinite_and_hard() -> None:
    rng = np.random.default_rng(9)
    # A > 0 with positive minimum h - g'A^{-1}g > 0: q > 0 everywhere -> inf.
    a, _, _, ev, vecs = _make_problem("pd", 4, rng)
    g = 0.1 * rng.normal(size=(4, 4))
    h = np.einsum("ni,ij,nj->n", g, np.linalg.inv(a), g) + np.array([0.1, 1.0, 1e-3, 5.0])
    bd = boundary_distance(ev, vecs, torch.tensor(g), torch.tensor(h))
    assert torch.all(torch.isinf(bd.radius)) and torch.all(torch.isnan(bd.delta))
    # Same A, minimum negative: finite radius.
    h2 = np.einsum("ni,ij,nj->n", g, np.linalg.inv(a), g) - 1e-3
    h2 = np.abs(h2) * (h2 > 0) + 1e-4 * (h2 <= 0)
    bd = boundary_distance(ev, vecs, torch.tensor(g), torch.tensor(h2))
    _check_boundary(bd, a, g, h2, ev, vecs)
    # Singular PSD, g in the range with positive minimum -> inf; g with a null-space
    # component -> finite (q unbounded below along the null direction).
    lam = np.array([0.0, 1.0, 2.0])
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    a = q @ np.diag(lam) @ q.T
    a = 0.5 * (a + a.T)
    ev, vecs = torch.linalg.eigh(torch.tensor(a))
    g = np.stack([q[:, 1] * 0.1, q[:, 1] * 0.1 + q[:, 0] * 0.5])
    h = np.array([1.0, 1.0])
    bd = boundary_distance(ev, vecs, torch.tensor(g), torch.tensor(h))
    assert np.isinf(float(bd.radius[0])) and np.isfinite(float(bd.radius[1]))
    _check_boundary(bd, a, g, h, ev, vecs)
    # Hard case: g orthogonal to the bottom eigenspace of an indefinite A. The exact
    # distance is sqrt((h - sum' g~^2 / (lam - lam_min)) / (-lam_min)) when that exceeds
    # ||(Lam - lam_min)^+ g~||.
    lam = np.array([-2.0, -2.0, 0.5, 1.0])
    a, q, g, coef, ev, vecs = _hard_instance(lam, rng, 6, scale=0.05)
    h = rng.uniform(0.5, 2.0, size=6)
    bd = boundary_distance(ev, vecs, torch.tensor(g), torch.tensor(h))
    _check_boundary(bd, a, g, h, ev, vecs)
    nb = lam > -2.0
    exact = np.sqrt((h - np.sum(coef[:, nb] ** 2 / (lam[nb] + 2.0), axis=1)) / 2.0)
    assert np.all(exact > np.linalg.norm(coef[:, nb] / (lam[nb] + 2.0), axis=1))
    np.testing.assert_allclose(bd.radius.numpy(), exact, rtol=1e-9)
    # Same problem in its eigenbasis: the bottom components of g are exactly zero.
    ev_i, vecs_i = torch.tensor(lam), torch.eye(4, dtype=F64)
    bd_i = boundary_distance(ev_i, vecs_i, torch.tensor(coef), torch.tensor(h))
    _check_boundary(bd_i, np.diag(lam), coef, h, ev_i, vecs_i)
    np.testing.assert_allclose(bd_i.radius.numpy(), exact, rtol=1e-9)
    # Near-hard: tiny bottom component keeps the radius continuous (and slightly smaller).
    g_near = g + 1e-9 * q[:, 0][None, :]
    bd_near = boundary_distance(ev, vecs, torch.tensor(g_near), torch.tensor(h))
    _check_boundary(bd_near, a, g_near, h, ev, vecs)
    np.testing.assert_allclose(bd_near.radius.numpy(), exact, rtol=1e-6)
    # g = 0 with indefinite A: sqrt(h / -lam_min).
    bd0 = boundary_distance(ev, vecs, torch.zeros(6, 4, dtype=F64), torch.tensor(h))
    np.testing.assert_allclose(bd0.radius.numpy(), np.sqrt(h / 2.0), rtol=1e-9)


# ----------------------------------------------------------------------------------------
# dtype and batch size
# ----------------------------------------------------------------------------------------


def test_float32_inputs() -> None:
    rng = np.random.default_rng(21)
    a, _, _, ev, vecs = _make_problem("indefinite", 5, rng)
    n = 40
    g = rng.normal(size=(n, 5))
    h = np.abs(rng.normal(size=n)) + 0.1
    r = rng.uniform(0.2, 2.0, size=n)
    f32 = torch.float32
    res32 = solve_trs(
        ev.to(f32),
        vecs.to(f32),
        torch.tensor(g, dtype=f32),
        torch.tensor(h, dtype=f32),
        torch.tensor(r, dtype=f32),
    )
    res64 = solve_trs(ev, vecs, torch.tensor(g), torch.tensor(h), torch.tensor(r))
    assert res32.delta.dtype == f32 and res32.value_lower.dtype == f32
    scale = 1 + res64.value_upper.abs()
    assert torch.all((res32.value_upper.double() - res64.value_upper).abs() <= 1e-4 * scale)
    assert torch.all(res32.value_lower <= res32.value_upper + 1e-4 * scale.float())
    assert torch.all(res32.delta.norm(dim=1) <= torch.tensor(r, dtype=f32) * (1 + 1e-5))
    bd32 = boundary_distance(
        ev.to(f32), vecs.to(f32), torch.tensor(g, dtype=f32), torch.tensor(h, dtype=f32)
    )
    bd64 = boundary_distance(ev, vecs, torch.tensor(g), torch.tensor(h))
    assert bd32.radius.dtype == f32
    torch.testing.assert_close(bd32.radius.double(), bd64.radius, rtol=1e-3, atol=1e-6)
    qd = _q(a, g, h, bd32.delta.double().numpy())
    assert np.all(qd <= 1e-4 * (1 + h))


def test_large_batch() -> None:
    rng = np.random.default_rng(31)
    d, n = 30, 1000
    a, _, _, ev, vecs = _make_problem("indefinite", d, rng)
    g = rng.normal(size=(n, d)) * rng.choice([1e-6, 0.1, 1.0, 10.0], size=(n, 1))
    h = rng.normal(size=n) * 5
    r = rng.uniform(0.0, 3.0, size=n)
    r[:10] = 0.0
    res = solve_trs(ev, vecs, torch.tensor(g), torch.tensor(h), torch.tensor(r))
    _check_result(res, a, g, h, r)
    # No random feasible point beats the minimiser.
    x = rng.normal(size=(n, d))
    x *= (r * rng.uniform(0, 1, size=n) ** (1 / d) / np.linalg.norm(x, axis=1))[:, None]
    assert np.all(_q(a, g, h, x) >= res.value_upper.numpy() - 1e-9)
    hp = np.abs(h) + 0.01
    bd = boundary_distance(ev, vecs, torch.tensor(g), torch.tensor(hp))
    _check_boundary(bd, a, g, hp, ev, vecs)
