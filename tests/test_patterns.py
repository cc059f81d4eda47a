"""The pattern sampler: nominal gates, robust gates placed in gaps of the data (each pattern's
cone then holds its gate strictly), the all-ones pattern, and the warning when the robust
gates find gaps in the tails of the data only."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import convexrobust as cr
from convexrobust.problems.patterns import SPLIT_FRACTION, sample_patterns


def _with_bias(X: np.ndarray) -> np.ndarray:
    return np.hstack([X, np.ones((len(X), 1))])


def _clusters(seed: int = 0) -> np.ndarray:
    """Four well-separated clusters in the plane: wide gaps between them."""
    r = np.random.default_rng(seed)
    centres = np.array([[-4.0, -4.0], [-4.0, 4.0], [4.0, -4.0], [4.0, 4.0]])
    return np.repeat(centres, 50, axis=0) + 0.3 * r.standard_normal((200, 2))


def test_robust_gates_clear_every_point_by_the_radius():
    X = _with_bias(_clusters())
    eps = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # these clusters split: no warning
        patterns = sample_patterns(X, 30, margin=eps)
    assert patterns.masks[:, 0].all()  # the all-ones pattern comes first
    gates = patterns.gates[:, 1:]
    distance = np.abs(X @ gates) / np.linalg.norm(gates[:-1], axis=0)
    assert distance.min() > eps
    split = np.minimum(patterns.masks.sum(0), len(X) - patterns.masks.sum(0))
    assert (split >= 50).sum() >= 2


def test_a_radius_beyond_the_spacing_of_dense_data_warns_that_the_head_is_near_linear():
    r = np.random.default_rng(1)
    X = r.standard_normal((2000, 8))
    with pytest.warns(RuntimeWarning, match="close to a linear model|all-ones") as record:
        program = cr.ConvexReLU(X, (X[:, 0] > 0).astype(int), n_patterns=40, loss="hinge",
                                threat=cr.L2(0.5))
    # attributed to the line that built the program, not to the library's internals
    assert {w.filename for w in record} == {__file__}
    masks = program.patterns.masks
    side = np.minimum(masks.sum(0), len(X) - masks.sum(0))
    assert (side < SPLIT_FRACTION * len(X)).all()
    # the same data at a small radius splits, and the nominal sampler never warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cr.ConvexReLU(X[:200], (X[:200, 0] > 0).astype(int), n_patterns=40, loss="hinge",
                      threat=cr.L2(0.01))
        sample_patterns(_with_bias(X), 40)


def test_robust_gates_through_the_origin_warn_when_none_clears_the_data():
    r = np.random.default_rng(2)
    X = r.standard_normal((300, 4))
    y = (X[:, 0] > 0).astype(int)
    with pytest.warns(RuntimeWarning, match="bias=True") as record:
        cr.ConvexReLU(X, y, n_patterns=10, loss="hinge", bias=False, threat=cr.L2(0.3))
    assert {w.filename for w in record} == {__file__}
    # data with a wide margin around a hyperplane through the origin: the gates clear it, and
    # no warning comes
    X[:, 0] += np.sign(X[:, 0]) * 50.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        program = cr.ConvexReLU(X, y, n_patterns=10, loss="hinge", bias=False,
                                threat=cr.L2(0.3))
    gates = program.patterns.gates
    assert (np.abs(X @ gates).min(0) > 0.3 * np.linalg.norm(gates, axis=0)).any()
    assert not any("bias=True" in str(w.message) for w in caught)
