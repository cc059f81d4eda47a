"""Kept solves: a solve stopped by its time limit continues from its kept point to the same
optimum, a finished one is reused, checkpoints lose at most one segment of a killed run, and
what cannot be continued is solved again.

Time limits are simulated by a fake clock (each timed call runs a fixed number of iterations
and reports the time-limit status), so nothing here depends on the machine's speed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import xor_data

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
    ``clock.iterations`` iterations and, if they did not finish it, ends ``"time_limit"``
    (torch) or ``"user_limit"`` (a conic solver) — an error unless the call accepts inaccurate
    points — after exactly its limit; a call without one runs to the end in one second. Every
    call's options (with the torch backend's) are kept in ``clock.calls``; ``clock.kill_after``
    (a number of checkpoints) raises KeyboardInterrupt from the checkpoint callback once that
    many were handed out, a run stopped mid-solve."""
    real = kept_solve.solve

    class Clock:
        iterations = 5
        kill_after: int | None = None
        now = 0.0
        calls: list[dict] = []

    def fake(program, solver, **options):
        torch_options = dict((options.get("backend_options") or {}).get("torch", {}))
        Clock.calls.append({"solver": solver, **options, **torch_options})
        if Clock.kill_after is not None and "checkpoint" in torch_options:
            save, handed = torch_options["checkpoint"], []

            def killing(state):
                save(state)
                handed.append(state)
                if len(handed) == Clock.kill_after:
                    raise KeyboardInterrupt

            options["backend_options"] = {**options["backend_options"],
                                          "torch": {**torch_options, "checkpoint": killing}}
        limit = options.pop("time_limit", None)
        accept = options.pop("accept_inaccurate", torch_options.get("accept_inaccurate", False))
        if limit is not None:
            options["max_iters"] = Clock.iterations
        solution = real(program, solver, accept_inaccurate=True, **options)
        Clock.now += 1.0 if limit is None else limit
        if limit is not None and solution.status != "optimal":
            solution.status = "time_limit" if solution.solver == "torch" else "user_limit"
        if solution.status != "optimal" and not accept:
            raise SolverFailedError("stopped", status=solution.status, solver=solver)
        return solution

    monkeypatch.setattr(kept_solve, "solve", fake)
    monkeypatch.setattr(kept_solve, "perf_counter", lambda: Clock.now)
    Clock.calls = []
    return Clock


def _solve(program, path, solver="torch", **kwargs):
    options = {**OPTIONS, **kwargs.pop("options", {})}
    return solve_kept(lambda: program, solver, options=options, backend_options={}, path=path,
                      **kwargs)


def _kept(path):
    return torch.load(path, weights_only=True)


def test_a_solve_its_time_limit_stopped_continues_to_the_optimum(clock, tmp_path):
    program = _polynomial()
    reference = cr.solve(program, "clarabel")
    path = tmp_path / "kept.pt"
    first = _solve(program, path, resume=False, options={"time_limit": 10.0})
    assert first.record["status"] == "time_limit" and first.record["segments"] == 1
    assert first.record["time_limit"] == 10.0 and first.record["solve_time"] == 10.0
    assert not first.resumed and _kept(path)["state"]["options"]["method"] == "apg"
    assert first.record["objective"] > reference.objective * (1 + 1e-3)  # not finished
    # the same (or a smaller) limit: the kept solve is reused, nothing runs
    clock.calls.clear()
    for limit in (10.0, 5.0):
        again = _solve(program, path, resume=True, options={"time_limit": limit})
        assert again.resumed and again.record == first.record and clock.calls == []
    # a larger one: continued, from the kept point, for what is left of it
    more = _solve(program, path, resume=True, options={"time_limit": 15.0})
    (call,) = clock.calls
    assert call["time_limit"] == 5.0 and call["solver"] == "torch" and "warm_start" in call
    assert call["method"] == "apg" and "smoothing_start" in call
    assert more.record["segments"] == 2 and more.record["continued_from"] == 10.0
    assert more.record["solve_time"] == 15.0 and more.record["time_limit"] == 15.0
    # no limit: continued to the end
    clock.calls.clear()
    done = _solve(program, path, resume=True)
    (call,) = clock.calls
    assert "warm_start" in call and "time_limit" not in call
    assert done.record["status"] == "optimal" and done.record["segments"] == 3
    assert done.record["solve_time"] == 16.0
    assert abs(done.record["objective"] - reference.objective) <= 1e-3 * reference.objective
    assert done.record["violation"] <= 1e-8
    # now finished: reused whatever the limit
    clock.calls.clear()
    assert _solve(program, path, resume=True).resumed and clock.calls == []
    assert _solve(program, path, resume=True, options={"time_limit": 1.0}).resumed


def test_a_checkpointed_run_killed_mid_solve_continues_from_its_last_checkpoint(clock,
                                                                                tmp_path):
    program = _polynomial()
    path = tmp_path / "kept.pt"
    clock.kill_after = 3
    with pytest.raises(KeyboardInterrupt):
        _solve(program, path, resume=False, checkpoint_every=1e-9)  # one per iteration
    kept = _kept(path)
    assert kept["head"] is None and kept["record"]["status"] == "checkpoint"
    assert kept["record"]["iterations"] == 3 and kept["state"]["options"]["method"] == "apg"
    assert kept["record"]["objective"] > 0 and kept["record"]["stationarity"] > 0
    assert kept["record"]["segments"] == 1
    # resumed (no checkpoints now): one solve, from the third iteration's point
    clock.kill_after, clock.calls[:] = None, []
    done = _solve(program, path, resume=True)
    (call,) = clock.calls
    assert "warm_start" in call and call["checkpoint_every"] == math.inf
    assert done.record["segments"] == 2 and done.record["status"] == "optimal"
    reference = cr.solve(program, "clarabel")
    assert abs(done.record["objective"] - reference.objective) <= 1e-3 * reference.objective
    assert _kept(path)["record"]["status"] == "optimal"


def test_a_finished_kept_solve_is_never_replaced_by_an_unfinished_one(clock, tmp_path):
    program = _polynomial()
    path = tmp_path / "kept.pt"
    done = _solve(program, path, resume=False)
    assert done.record["status"] == "optimal"
    # a fresh run (no resume) with a limit that stops it, and one that checkpoints
    capped = _solve(program, path, resume=False, options={"time_limit": 1.0},
                    checkpoint_every=1e-9)
    assert capped.record["status"] == "time_limit"
    assert _kept(path)["record"] == done.record


def test_a_stopped_relu_solve_continues_and_a_conic_one_is_solved_again(clock, tmp_path):
    """The augmented Lagrangian (the binary program's default is its ADMM, which keeps no
    state) hands out its whole state when its time limit stops it, and continues from it; a
    conic solver keeps nothing to continue from: under a larger limit its kept solve is solved
    again from the start."""
    X, y = xor_data(20, 2)
    relu = cr.ConvexReLU(X, y, loss="hinge", beta=1e-2, threat=cr.L2(0.1), n_patterns=4)
    clock.iterations = 2
    for program, solver, method in ((relu, "torch", {"method": "al"}),
                                    (_polynomial(), "clarabel", {})):
        path = tmp_path / f"{solver}.pt"
        first = _solve(program, path, solver, resume=False,
                       options={"time_limit": 10.0, **method})
        assert first.record["status"] in ("time_limit", "user_limit")
        continuable = solver == "torch"
        assert (_kept(path)["state"] is not None) == continuable
        clock.calls.clear()
        again = _solve(program, path, solver, resume=True, options={"tol": 1e-3, **method})
        (call,) = clock.calls
        assert ("warm_start" in call) == continuable
        assert again.record["segments"] == (2 if continuable else 1)
        assert ("continued_from" in again.record) == continuable
        fresh = cr.solve(program, solver, **{**OPTIONS, "tol": 1e-3, **method})
        assert again.record["status"] == fresh.status == "optimal"
        if continuable:
            assert call["method"] == "al"
            assert abs(again.record["objective"] - fresh.objective) <= 2e-3 * fresh.objective
        else:
            assert again.record["objective"] == pytest.approx(fresh.objective, rel=1e-9)


def test_a_solve_that_fails_keeps_the_state_it_handed_out(clock, tmp_path):
    """Stopped by its time limit without accept_inaccurate, a solve raises, and the state its
    method handed out is kept as a checkpoint that a later run continues."""
    program = _polynomial()
    path = tmp_path / "kept.pt"
    with pytest.raises(SolverFailedError):
        _solve(program, path, resume=False,
               options={"time_limit": 10.0, "accept_inaccurate": False})
    kept = _kept(path)
    assert kept["record"]["status"] == "checkpoint" and kept["head"] is None
    assert kept["record"]["iterations"] == clock.iterations
    clock.calls.clear()
    done = _solve(program, path, resume=True)
    (call,) = clock.calls
    assert "warm_start" in call and done.record["status"] == "optimal"
    assert done.record["segments"] == 2


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


def test_first_order_solves_start_from_the_previous_candidate_and_the_chosen_one(clock,
                                                                                 tmp_path):
    """A polynomial head's candidate solved by the accelerated gradient warm-starts the next
    one at its point and dual estimates (the same samples), and the refit at the chosen
    candidate's point and estimates (same method; NaN for the added samples); a ReLU head's
    solves start afresh."""
    X, y = xor_data(60, 2)
    data = (torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y))
    for head, grid in (("polynomial", {"beta": (1e-3, 1e-2), "radius_scale": (1.0,)}),
                       ("relu", {"beta": (1e-2,), "radius_scale": (1.0,), "n_patterns": (4,)})):
        clock.calls.clear()
        model = cr.retrain_last_two_layers(
            _Net().eval(), data, head=head, threat=cr.L2(0.05), feature_module="fc1",
            feature_radius=0.05, grid=grid, solver="torch", refit=True, cache=tmp_path / head,
            progress=False, solver_options={"method": "apg" if head == "polynomial" else "al"})
        *solves, refit = clock.calls
        assert len(solves) == len(model.info["candidates"])
        assert "warm_start" not in solves[0]
        if head == "polynomial":
            assert set(solves[1]["warm_start"]) == {"Z", "Zp", "duals"}
            assert refit["method"] == "apg" and set(refit["warm_start"]) == {"Z", "Zp", "duals"}
            # the chosen candidate's estimates, then NaN (none yet) for the validation samples
            n_train, n_val = model.info["n_train"], model.info["n_validation"]
            refit_duals = refit["warm_start"]["duals"]
            assert refit_duals.shape == (n_train + n_val, 1)
            assert np.isfinite(refit_duals[:n_train]).all()
            assert np.isnan(refit_duals[n_train:]).all()
        else:
            assert not any("warm_start" in c for c in [*solves, refit])
        assert model.info["refitted"]["status"] == "optimal"
