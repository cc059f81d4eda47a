"""``benchmarks/record.py``'s helpers for resumable benchmark runs: the solve time a resumed
head counts from its stopped runs, and the argparse types of durations and grids."""

import argparse
import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def record():
    spec = importlib.util.spec_from_file_location("benchmark_record", BENCHMARKS / "record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resumed_seconds_counts_what_earlier_runs_spent(record):
    """A reused solve counts all of its time, a continued one its earlier runs' share (the rest
    is this run's wall time), a fresh one nothing; the refit counts like a candidate."""
    info = {"candidates": [{"solve_time": 100.0, "resumed": True},
                           {"solve_time": 70.0, "continued_from": 50.0},
                           {"solve_time": 30.0}],
            "refitted": {"solve_time": 400.0, "continued_from": 300.0}}
    assert record.resumed_seconds(info) == 450.0
    assert record.resumed_seconds({**info, "refitted": None}) == 150.0
    assert record.resumed_seconds({"candidates": []}) == 0.0


def test_argument_types(record):
    assert record.nonnegative_seconds("0") == 0.0
    assert record.nonnegative_seconds("90.5") == 90.5
    for bad in ("-1", "nan", "inf", "ten"):
        with pytest.raises(argparse.ArgumentTypeError, match="seconds"):
            record.nonnegative_seconds(bad)
    assert record.positive_numbers("1e-3,0.5") == (1e-3, 0.5)
    for bad in ("", "0", "1,-2", "a"):
        with pytest.raises(argparse.ArgumentTypeError):
            record.positive_numbers(bad)
