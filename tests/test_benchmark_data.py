"""The planted instances of ``benchmarks/solvers.py`` that the solver benchmarks and the scale
targets solve: ``balanced=True`` gives every class its share of the samples, and leaves the
default instances (and binary labels) as they were."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def planted():
    # loaded under its own name: the package has a ``solvers`` of its own
    spec = importlib.util.spec_from_file_location("benchmark_solvers", BENCHMARKS / "solvers.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCHMARKS))  # for its sibling ``record``
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module.planted


@pytest.mark.parametrize(("n", "d", "classes"), [(5000, 64, 10), (2000, 16, 7), (60, 10, 10)])
def test_balanced_labels_give_every_class_its_share(planted, n, d, classes):
    X, y = planted(n, d, classes, seed=0, balanced=True)
    counts = np.bincount(y, minlength=classes)
    assert X.shape == (n, d) and len(counts) == classes
    assert np.all(np.abs(counts - n / classes) <= max(0.05 * n / classes, 1))


def test_balancing_only_shifts_the_teachers_outputs(planted):
    """The same inputs; the labels that change are those the per-class shifts move, and the
    argmax labels stay the default (so the recorded instances are unchanged)."""
    X0, y0 = planted(3000, 20, 10, seed=1)
    X1, y1 = planted(3000, 20, 10, seed=1, balanced=True)
    np.testing.assert_array_equal(X0, X1)
    assert np.bincount(y0, minlength=10).max() > 2 * 300  # the argmax labels are unbalanced
    assert 0 < np.mean(y0 != y1) < 1


def test_binary_labels_ignore_balancing(planted):
    _, y0 = planted(400, 10, 2, seed=0)
    _, y1 = planted(400, 10, 2, seed=0, balanced=True)
    np.testing.assert_array_equal(y0, y1)
    assert np.bincount(y0).tolist() == [200, 200]
