"""Kept solves: a solve stopped by its time limit continues from its kept point to the same
optimum, a finished one is reused, checkpoints lose at most one segment of a killed run, and
what cannot be continued is solved again.

Time limits are simulated by a fake clock (each timed call runs a fixed number of iterations
and reports the time-limit status), so nothing here depends on the machine's speed."""

from __future__ import annotations

import pytest
import torch
from conftest import three_class_data, xor_data

import convexrobust as cr
import convexrobust.kept_solve as kept_solve
from convexrobust.errors import InvalidInputError, SolverFailedError
from convexrobust.kept_solve import solve_kept

torch.set_num_threads(1)

OPTIONS = {"tol": 1e-5, "accept_inaccurate": True}


def _polynomial() -> cr.ConvexPolynomial:
    X, y = xor_data(20, 2)
    return cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.2))


@pytest.fixture
def clock(monkeypatch):
    """A fake clock for :mod:`convexrobust.kept_solve`: a solve call with a ``time_limit`` runs
    ``clock.iterations`` iterations and, if they did not finish it, ends ``"time_limit"`` (an
    error unless the call accepts inaccurate points) after exactly its limit; a call without
    one runs to the end in one second. Every call's options are kept in ``clock.calls``;
    ``clock.kill_at`` (a call number) raises KeyboardInterrupt there, a run stopped mid-solve."""
    real = kept_solve.solve

    class Clock:
        iterations = 5
        kill_at: int | None = None
        now = 0.0
        calls: list[dict] = []

    def fake(program, solver, **options):
        Clock.calls.append({"solver": solver, **options})
        if len(Clock.calls) == Clock.kill_at:
            raise KeyboardInterrupt
        limit = options.pop("time_limit", None)
        backend = (options.get("backend_options") or {}).get(solver, {})
        accept = options.pop("accept_inaccurate", backend.get("accept_inaccurate", False))
        if limit is not None:
            options["max_iters"] = Clock.iterations
        solution = real(program, solver, accept_inaccurate=True, **options)
        Clock.now += 1.0 if limit is None else limit
        if limit is not None and solution.status == "max_iters":
            solution.status = "time_limit"
        if solution.status != "optimal" and not accept:
            raise SolverFailedError("stopped", status=solution.status, solver=solver)
        return solution

    monkeypatch.setattr(kept_solve, "solve", fake)
    monkeypatch.setattr(kept_solve, "perf_counter", lambda: Clock.now)
    Clock.calls = []
    return Clock


def _solve(program, path, **kwargs):
    options = {**OPTIONS, **kwargs.pop("options", {})}
    return solve_kept(lambda: program, "torch", options=options, backend_options={}, path=path,
                      **kwargs)


def test_a_solve_its_time_limit_stopped_continues_to_the_optimum(clock, tmp_path):
    program = _polynomial()
    reference = cr.solve(program, "clarabel")
    path = tmp_path / "kept.pt"
    first = _solve(program, path, resume=False, options={"time_limit": 10.0})
    assert first.record["status"] == "time_limit" and first.record["segments"] == 1
    assert not first.resumed and path.is_file()
    assert first.record["objective"] > reference.objective * (1 + 1e-3)  # not finished
    # the same (or a smaller) limit: the kept solve is reused, nothing runs
    clock.calls.clear()
    for limit in (10.0, 5.0):
        again = _solve(program, path, resume=True, options={"time_limit": limit})
        assert again.resumed and again.record == first.record and clock.calls == []
    # no limit: continued from the kept point, with the accelerated gradient's Huber width
    done = _solve(program, path, resume=True)
    (call,) = clock.calls
    assert call["method"] == "apg" and "warm_start" in call and "smoothing_start" in call
    assert "time_limit" not in call
    assert done.record["status"] == "optimal" and done.record["segments"] == 2
    assert done.record["solve_time"] >= first.record["solve_time"]
    assert abs(done.record["objective"] - reference.objective) <= 1e-3 * reference.objective
    assert done.record["violation"] <= 1e-8
    # now finished: reused whatever the limit
    clock.calls.clear()
    assert _solve(program, path, resume=True).resumed and clock.calls == []


def test_checkpoints_keep_every_segment_and_a_killed_run_loses_one(clock, tmp_path):
    program = _polynomial()
    path = tmp_path / "kept.pt"
    clock.kill_at = 3
    with pytest.raises(KeyboardInterrupt):
        _solve(program, path, resume=False, checkpoint_every=60.0)
    stored = torch.load(path, weights_only=True)
    assert stored["record"]["segments"] == 2 and stored["record"]["status"] == "time_limit"
    assert stored["state"]["method"] == "apg"
    second = clock.calls[1]
    assert second["time_limit"] == 60.0 and "warm_start" in second
    # resumed without checkpoints: the third segment runs to the end
    clock.kill_at, clock.calls[:] = None, []
    done = _solve(program, path, resume=True)
    assert len(clock.calls) == 1 and done.record["segments"] == 3
    assert done.record["status"] == "optimal"
    reference = cr.solve(program, "clarabel")
    assert abs(done.record["objective"] - reference.objective) <= 1e-3 * reference.objective


def test_segments_share_the_limit_and_only_the_last_uses_the_callers_acceptance(clock,
                                                                                 tmp_path):
    """Under a limit, each segment gets at most ``checkpoint_every`` of what is left; the earlier
    ones accept their stop, the last one runs with the caller's ``accept_inaccurate``."""
    program = _polynomial()
    path = tmp_path / "kept.pt"
    with pytest.raises(SolverFailedError, match="stopped"):
        _solve(program, path, resume=False, checkpoint_every=4.0,
               options={"time_limit": 10.0, "accept_inaccurate": False})
    assert [c["time_limit"] for c in clock.calls] == [4.0, 4.0, 2.0]
    assert [c["accept_inaccurate"] for c in clock.calls] == [True, True, False]
    kept = torch.load(path, weights_only=True)["record"]
    assert kept["segments"] == 2 and kept["solve_time"] == 8.0  # the failure is not kept
    clock.calls.clear()
    done = _solve(program, path, resume=True, checkpoint_every=4.0,
                  options={"time_limit": 10.0})
    assert [c["time_limit"] for c in clock.calls] == [2.0]
    assert done.record["segments"] == 3 and done.record["solve_time"] == 10.0
    assert done.record["status"] == "time_limit"


def test_a_segment_without_an_iteration_ends_the_segmenting(clock, tmp_path, monkeypatch):
    program = _polynomial()
    timed = clock.iterations

    def no_progress(program, solver, **options):
        solution = fake(program, solver, **options)
        if len(clock.calls) == 1:
            solution.iterations = 0  # the set-up outlasted the segment
        return solution

    fake = kept_solve.solve
    monkeypatch.setattr(kept_solve, "solve", no_progress)
    done = _solve(program, tmp_path / "kept.pt", resume=False, checkpoint_every=1.0)
    assert timed == 5 and len(clock.calls) == 2 and "time_limit" not in clock.calls[1]
    assert done.record["status"] == "optimal"


def test_a_program_without_a_warm_start_is_solved_again(clock, tmp_path):
    X, y = three_class_data(40, 3)
    program = cr.ConvexReLU(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.05), n_patterns=8)
    path = tmp_path / "kept.pt"
    first = _solve(program, path, resume=False, options={"time_limit": 10.0},
                   checkpoint_every=1.0)  # ReLU solves are not segmented
    assert first.record["status"] == "time_limit" and len(clock.calls) == 1
    assert clock.calls[0]["time_limit"] == 10.0
    assert torch.load(path, weights_only=True)["state"] is None
    clock.calls.clear()
    again = _solve(program, path, resume=True, options={"tol": 1e-3})
    (call,) = clock.calls
    assert "warm_start" not in call and again.record["segments"] == 1
    fresh = cr.solve(program, "torch", **{**OPTIONS, "tol": 1e-3})
    assert again.record["status"] == fresh.status != "time_limit"
    assert again.record["objective"] == fresh.objective


def test_checkpoint_every_is_validated(tmp_path):
    from convexrobust.kept_solve import check_checkpoint_every

    assert check_checkpoint_every(None, None) is None
    assert check_checkpoint_every(30, tmp_path) == 30.0
    with pytest.raises(InvalidInputError, match="cache"):
        check_checkpoint_every(30, None)
    for bad in (0, -1.0, float("nan"), "10", True):
        with pytest.raises(InvalidInputError, match="checkpoint_every"):
            check_checkpoint_every(bad, tmp_path)


class _Net(torch.nn.Module):
    """A small network whose last two layers (``fc1``, ``fc2``) are retrained."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Linear(2, 4)
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.tanh(self.body(x)))))


def test_the_pipeline_continues_its_stopped_candidates_and_refit(clock, tmp_path):
    """One candidate (so the refit's configuration cannot change between the runs) and its
    refit, both stopped by the time limit, are continued by a run with none."""
    X, y = xor_data(60, 2)
    data = (torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y))
    clock.iterations = 2

    def fit(**options):
        return cr.retrain_last_two_layers(
            _Net().eval(), data, head="polynomial", threat=cr.L2(0.05), feature_module="fc1",
            feature_radius=0.05, grid={"beta": (1e-2,), "radius_scale": (1.0,)},
            solver="torch", refit=True, cache=tmp_path, progress=False, **options)

    stopped = fit(solver_options={"time_limit": 30.0})
    records = [*stopped.info["candidates"], stopped.info["refitted"]]
    assert [r["status"] for r in records] == ["time_limit"] * 2
    assert len(clock.calls) == 2
    clock.calls.clear()
    done = fit(resume=True)
    records = [*done.info["candidates"], done.info["refitted"]]
    assert len(clock.calls) == 2 and all("warm_start" in c for c in clock.calls)
    assert all(r["segments"] == 2 and r["status"] != "time_limit" for r in records)
    assert not any(r.get("resumed") for r in records)
    clock.calls.clear()
    again = fit(resume=True)
    assert clock.calls == []
    assert all(r["resumed"] for r in [*again.info["candidates"], again.info["refitted"]])
    with torch.no_grad():
        assert torch.equal(again(data[0]), done(data[0]))
    with pytest.raises(InvalidInputError, match="cache"):
        cr.retrain_last_two_layers(_Net().eval(), data, head="polynomial", threat=cr.L2(0.05),
                                   feature_module="fc1", feature_radius=0.05,
                                   checkpoint_every=60, progress=False)
