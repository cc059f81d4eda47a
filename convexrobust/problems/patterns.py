"""Activation (sign) patterns of a two-layer ReLU network on the training data.

Pilanci & Ergen (ICML 2020, arXiv 2002.10553): a ReLU neuron ``u`` acts on the data matrix as
``(X u)_+ = D X u`` with ``D = diag(1[X u ≥ 0])``. The convex program has one pair of weight
vectors per pattern ``D_i``; we sample ``D_i = diag(1[X g_i ≥ 0])`` with Gaussian gates
``g_i ~ N(0, I)``, drop duplicates and the all-zero pattern (MATH.md §1).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

from convexrobust._validation import check_int
from convexrobust.errors import warn

#: Most gates :func:`sample_patterns` draws: each program variable block is (patterns × features),
#: so beyond this the program is far too large for any solver here (and the gate matrix alone
#: may not fit in memory).
MAX_PATTERNS = 100_000

#: A robust pattern splits the data when at least this fraction of the samples (and at least
#: one) lies on each side of its gate; :func:`sample_patterns` warns when none does.
SPLIT_FRACTION = 0.01


@dataclass(frozen=True)
class Patterns:
    """Sampled patterns: ``masks[k, i] = 1[x_kᵀ g_i ≥ 0]`` and the gates ``g_i`` (columns)."""

    masks: np.ndarray  # (n, P) float64 of 0/1
    gates: np.ndarray  # (d, P)

    @property
    def count(self) -> int:
        return self.masks.shape[1]


def _unique_nonzero(masks: np.ndarray, gates: np.ndarray) -> Patterns:
    keep = masks.any(axis=0)
    masks, gates = masks[:, keep], gates[:, keep]
    _, first = np.unique(masks.T, axis=0, return_index=True)
    first = np.sort(first)  # keep the sampling order: deterministic and seed-stable
    return Patterns(masks[:, first].astype(np.float64), gates[:, first])


def _gap_gates(X: np.ndarray, count: int, rng: np.random.Generator, margin: float,
               dual: float) -> np.ndarray:
    """Affine gates ``[g; −t]`` whose hyperplane ``gᵀx = t`` passes through a gap of the data:
    every point is at ℓp distance ``|gᵀx − t| / ‖g‖_q > margin`` from it. Directions with no
    such gap are skipped. ``X``'s last column is the constant feature."""
    features = X[:, :-1]
    gates = []
    for _ in range(count):
        g = rng.standard_normal(features.shape[1])
        proj = np.sort(features @ g)
        width = 2.0 * margin * np.linalg.norm(g, ord=dual)
        gaps = np.flatnonzero(np.diff(proj) > width)
        if gaps.size:
            k = rng.choice(gaps)
            gates.append(np.append(g, -0.5 * (proj[k] + proj[k + 1])))
    return np.array(gates).T if gates else np.zeros((X.shape[1], 0))


def sample_patterns(X: np.ndarray, n_patterns: int, *, seed: int = 0, margin: float = 0.0,
                    dual: float = 2.0, bias_column: bool = True) -> Patterns:
    """Sample up to ``n_patterns`` distinct, non-zero patterns.

    ``X`` is the (n, d) matrix the network sees, with the constant column last when
    ``bias_column`` (then gates are affine hyperplanes of the features, and the all-ones
    pattern — the one that keeps the linear model inside the network family — is always
    included). Nominal programs (``margin = 0``) use Gaussian gates. Robust programs need
    patterns that no point can leave within the threat ball — a random hyperplane through the
    data forces ``v = 0`` under the robust cone constraints — so with ``margin = ε > 0`` each
    gate is a random direction placed in a gap of the data wider than ``2ε‖g‖_q``. In dense
    data such gaps exist only in the tails once ε nears the spacing of the points; then every
    pattern leaves a few samples on one side of its gate, the program is close to a linear
    model plus neurons for a few outliers, and a ``RuntimeWarning`` says so (no pattern splits
    off :data:`SPLIT_FRACTION` of the samples on both sides). Without ``bias_column`` the
    gates are Gaussian through the origin, and a warning says so when none of them clears every
    point by ``margin``.
    """
    n_patterns = check_int(n_patterns, "n_patterns", minimum=1, maximum=MAX_PATTERNS)
    rng = np.random.default_rng(check_int(seed, "seed"))
    if margin > 0 and bias_column:
        gates = _gap_gates(X, n_patterns, rng, margin, dual)
    else:
        gates = rng.standard_normal((X.shape[1], n_patterns))
    if bias_column:
        ones = np.zeros((X.shape[1], 1))
        ones[-1] = 1.0
        gates = np.hstack([ones, gates])
    patterns = _unique_nonzero(X @ gates >= 0, gates)
    if margin > 0 and bias_column:
        _warn_when_tails_only(patterns, n_patterns, margin)
    elif margin > 0:
        _warn_when_no_gate_clears(X, patterns, margin, dual)
    return patterns


def _warn_when_no_gate_clears(X: np.ndarray, patterns: Patterns, margin: float,
                              dual: float) -> None:
    """The warning of :func:`sample_patterns` for robust patterns without a bias column: its
    Gaussian gates pass through the origin, and when none of them clears every point by the
    radius (``|xᵀg| > margin·‖g‖_q``) no pattern has a strictly robust gate, so the repair of a
    first-order solution can keep no group of them."""
    gates = patterns.gates
    clearance = np.abs(X @ gates).min(axis=0) - margin * np.linalg.norm(gates, ord=dual, axis=0)
    if (clearance > 0).any():
        return
    warn(f"at radius {margin:g} none of the {gates.shape[1]} robust patterns' gates through the "
         "origin (no bias column) clears every point by the radius, so no pattern has a "
         "strictly robust gate. Use bias=True: gates are then placed in gaps of the data.",
         RuntimeWarning)


def _warn_when_tails_only(patterns: Patterns, drawn: int, margin: float) -> None:
    """The warning of :func:`sample_patterns` for robust patterns that split no part of the
    data off (module docstring)."""
    n = patterns.masks.shape[0]
    active = patterns.masks.sum(axis=0)
    side = np.minimum(active, n - active)
    if (side >= max(1.0, SPLIT_FRACTION * n)).any():
        return
    found = patterns.count - 1  # besides the all-ones pattern
    if found == 0:
        what = (f"none of the {drawn} random directions has a gap wider than 2·{margin:g} "
                "in the data: the robust program has the all-ones (linear) pattern only")
    else:
        what = (f"its {found} robust pattern(s) besides the all-ones one each leave at most "
                f"{int(side.max())} of the {n} samples on one side of their gate: the "
                "program is close to a linear model plus neurons for a few outliers")
    warn(f"at radius {margin:g} {what}. A smaller radius keeps patterns that split the data.",
         RuntimeWarning)


def arrangement_size(n: int, d: int) -> int:
    """Number of patterns of ``n`` central hyperplanes in general position in ``R^d``
    (Cover 1965): ``2 Σ_{k<d} C(n−1, k)``, the all-zero pattern included."""
    return 2 * sum(comb(n - 1, k) for k in range(d))


def enumerate_patterns(X: np.ndarray, *, seed: int = 0, max_gates: int = 2_000_000) -> Patterns:
    """All non-zero patterns of a small data set, found by dense random sampling.

    Sampling stops once the count reaches :func:`arrangement_size` (data in general position);
    otherwise after ``max_gates`` gates. Use only for tiny problems (tests, exactness checks).
    """
    n, d = X.shape
    target = arrangement_size(n, d) - 1  # the all-zero pattern is dropped
    rng = np.random.default_rng(seed)
    found: dict[bytes, np.ndarray] = {}
    drawn = 0
    while drawn < max_gates and len(found) < target:
        gates = rng.standard_normal((d, 20_000))
        drawn += gates.shape[1]
        masks = X @ gates >= 0
        for j in np.flatnonzero(masks.any(axis=0)):
            key = np.packbits(masks[:, j]).tobytes()
            if key not in found:
                found[key] = gates[:, j]
    gate_matrix = np.stack(list(found.values()), axis=1)
    return _unique_nonzero(X @ gate_matrix >= 0, gate_matrix)
