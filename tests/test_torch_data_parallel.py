"""Large data and data parallelism of the torch solvers (solvers/data_parallel.py): streaming
the samples in chunks through torch.utils.data gives the full-batch solution, a 2-process gloo
solve (each process a shard of the samples, sums all-reduced) gives the single-process one,
and bad options are typed errors."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import xor_data
from torch.utils.data import DataLoader

import convexrobust as cr
from convexrobust.solvers.data_parallel import Collective, SampleStream
from convexrobust.solvers.polynomial_first_order import solve_polynomial_torch
from convexrobust.solvers.relu_first_order import solve_relu_torch

#: name -> (program builder, solver options); small enough for one core. Streaming and sharding
#: change only the order of floating-point sums; the comparisons below hold to 1e-6 because these
#: trajectories do not amplify that round-off. Some do: the ReLU hinge-ℓ2 solve on
#: xor_data(60, 3) with β = 0.01 drifts apart (iterates 1e-15 → 1e-11 within 25 iterations) and
#: two runs then agree only to the solver's accuracy (objectives ~8e-6 apart at tol = 1e-3).
CASES = {
    "relu-squared": (lambda: cr.ConvexReLU(*xor_data(40, 3), n_patterns=8, loss="squared",
                                           beta=0.1), {"tol": 1e-3}),
    "relu-hinge-l2": (lambda: cr.ConvexReLU(*xor_data(50, 3), n_patterns=8, loss="hinge",
                                            beta=0.03, threat=cr.L2(0.1)), {"tol": 1e-3}),
    "poly-hinge": (lambda: cr.ConvexPolynomial(*xor_data(40, 3), loss="hinge", beta=1e-2),
                   {"tol": 1e-3}),
    "poly-hinge-l2": (lambda: cr.ConvexPolynomial(*xor_data(40, 3), loss="hinge", beta=1e-2,
                                                  threat=cr.L2(0.1)), {"tol": 1e-3}),
    "poly-hinge-l2-factored": (lambda: cr.ConvexPolynomial(*xor_data(40, 3), loss="hinge",
                                                           beta=1e-2, threat=cr.L2(0.1)),
                               {"tol": 1e-3, "method": "factored"}),
}
#: Cases whose trajectories amplify round-off, so that streamed, sharded and full-batch runs
#: agree only to the solver's accuracy: the factored method (L-BFGS on a non-convex
#: factorisation, whose stage ends and line searches branch on objective values) lands on
#: points ~1e-4 apart in Z. Each run is certified instead: both optimal, certified gaps ≤ tol,
#: objectives within tol of each other.
TO_TOLERANCE = {"poly-hinge-l2-factored"}
#: a chunk size that leaves a short last chunk (40 samples → 15 + 15 + 10, 50 → 15·3 + 5)
BATCH = 15


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def _assert_same_solution(a: cr.Solution, b: cr.Solution, name: str = "") -> None:
    assert a.status == b.status == "optimal"
    if name in TO_TOLERANCE:
        tol = CASES[name][1]["tol"]
        assert a.gap <= tol and b.gap <= tol and a.gap_kind == "certified_gap"
        assert _rel(a.objective, b.objective) <= tol
        return
    assert _rel(a.objective, b.objective) <= 1e-6
    for key in a.values:
        np.testing.assert_allclose(a.values[key], b.values[key], rtol=0, atol=1e-5)
    if "dual_bound" in a.info:  # the certificate's sums over chunks add up too
        assert _rel(a.info["dual_bound"], b.info["dual_bound"]) <= 1e-6


@pytest.fixture(scope="module")
def full_batch() -> dict[str, cr.Solution]:
    """The single-process full-batch solutions every other mode is compared with."""
    out = {}
    for name, (build, options) in CASES.items():
        out[name] = cr.solve(build(), "torch", batch_size=None, **options)
        assert out[name].info["batch_size"] is None and out[name].info["chunks"] == 1
    return out


# ------------------------------------------------------------------ streaming
@pytest.mark.parametrize("name", list(CASES))
def test_chunked_solve_equals_full_batch(name, full_batch):
    build, options = CASES[name]
    program = build()
    chunked = cr.solve(program, "torch", batch_size=BATCH, **options)
    assert chunked.info["batch_size"] == BATCH
    assert chunked.info["chunks"] == -(-program.n_samples // BATCH)
    _assert_same_solution(chunked, full_batch[name], name)


def test_chunked_solve_is_deterministic():
    build, options = CASES["relu-squared"]
    program = build()
    a = cr.solve(program, "torch", batch_size=BATCH, **options)
    b = cr.solve(program, "torch", batch_size=BATCH, **options)
    assert a.iterations == b.iterations
    for key in a.values:
        assert np.array_equal(a.values[key], b.values[key])


def test_auto_batch_is_full_batch_on_cpu():
    build, options = CASES["relu-squared"]
    # batch_size="auto" by default (method="al": nominal squared programs go to ADMM otherwise)
    solution = cr.solve(build(), "torch", method="al", **options)
    assert solution.info["batch_size"] is None and solution.info["world_size"] == 1


def test_auto_batch_streams_only_what_does_not_fit(monkeypatch):
    stream = SampleStream({"X": np.zeros((1000, 2))}, batch_size=None,
                          device=torch.device("cpu"), dtype=torch.float64,
                          collective=Collective(False))
    assert stream._resolve("auto", bytes_per_sample=1e9) is None  # the CPU: full batch
    stream.device = torch.device("cuda")  # the rule on a GPU with 1 MB free (no GPU needed)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1_000_000, 2_000_000))
    assert stream._resolve("auto", bytes_per_sample=500) is None  # 0.5 MB fits in half
    assert stream._resolve("auto", bytes_per_sample=2000) == 250  # 2 MB does not: 0.5 MB chunks
    assert stream._resolve(64, bytes_per_sample=2000) == 64  # an explicit size is kept


def test_stream_shards_and_chunks_through_a_dataloader():
    X = np.arange(20.0).reshape(10, 2)
    labels = np.arange(10)
    comm = Collective(False)
    comm.rank, comm.world = 1, 3  # pretend: rank 1 of 3 owns rows 3, 4, 5
    stream = SampleStream({"X": X, "labels": labels}, batch_size=2, device=torch.device("cpu"),
                          dtype=torch.float32, collective=comm)
    assert isinstance(stream.loader, DataLoader) and stream.streaming
    assert (stream.start, stream.n_local, stream.n_global) == (3, 3, 10)
    assert stream.chunk_sizes == [2, 1] and len(stream) == 2
    chunks = list(stream)
    assert chunks[0]["X"].dtype == torch.float32 and chunks[0]["labels"].dtype == torch.int64
    np.testing.assert_array_equal(torch.cat([c["X"] for c in chunks]).numpy(), X[3:6])
    np.testing.assert_array_equal(torch.cat([c["labels"] for c in chunks]).numpy(), [3, 4, 5])
    resident = SampleStream({"X": X}, batch_size=None, device=torch.device("cpu"),
                            dtype=torch.float64, collective=Collective(False))
    assert not resident.streaming and resident.chunk_sizes == [10]
    assert next(iter(resident))["X"] is next(iter(resident))["X"]  # moved once, kept


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("solver", [solve_relu_torch, solve_polynomial_torch])
@pytest.mark.parametrize("options", [
    {"batch_size": 0}, {"batch_size": -5}, {"batch_size": 2.5}, {"batch_size": True},
    {"batch_size": "big"}, {"distributed": "yes"}, {"distributed": 1},
    {"distributed": True},  # no process group is initialised in this process
])
def test_invalid_options(solver, options):
    program = (CASES["relu-squared"] if solver is solve_relu_torch else CASES["poly-hinge"])[0]()
    with pytest.raises(cr.InvalidInputError):
        solver(program, **options)


# ------------------------------------------------------------------ two processes
def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        results: dict[str, object] = {}
        for name, (build, options) in CASES.items():
            solution = cr.solve(build(), "torch", distributed=True, batch_size=None, **options)
            results[name] = {"values": solution.values, "objective": solution.objective,
                             "iterations": solution.iterations, "info": solution.info}
        # shards streamed in chunks too
        build, options = CASES["relu-squared"]
        solution = cr.solve(build(), "torch", distributed=True, batch_size=12, **options)
        results["relu-squared-chunked"] = {"values": solution.values,
                                           "objective": solution.objective,
                                           "iterations": solution.iterations,
                                           "info": solution.info}
        # ranks that hold different programs are told so (on every rank, no hang)
        try:
            cr.solve(cr.ConvexReLU(*xor_data(20, 2, seed=rank), n_patterns=4), "torch",
                     distributed=True)
            results["mismatch"] = "solved"
        except cr.InvalidInputError as err:
            results["mismatch"] = str(err)
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes solving six programs (~27 s); the chunked
# streaming path, which shares the reductions, is tested by default above
def test_two_process_solve_matches_single_process(tmp_path, full_batch):
    import torch.multiprocessing as mp

    with socket.socket() as sock:  # a free loopback port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for name in [*CASES, "relu-squared-chunked"]:
        single = full_batch[name.removesuffix("-chunked")]
        first, second = ranks[0][name], ranks[1][name]
        assert first["info"]["world_size"] == second["info"]["world_size"] == 2
        assert first["iterations"] == second["iterations"], name  # the ranks decide together
        for key in single.values:  # every rank returns rank 0's point
            assert np.array_equal(first["values"][key], second["values"][key])
        if name in TO_TOLERANCE:
            tol = CASES[name][1]["tol"]
            assert first["info"]["duality_gap"] <= tol, name
            assert _rel(first["objective"], single.objective) <= tol, name
            continue
        assert first["iterations"] == single.iterations, name
        assert _rel(first["objective"], single.objective) <= 1e-6, name
        if "dual_bound" in single.info:  # the certificate's reductions over the ranks
            assert _rel(first["info"]["dual_bound"], single.info["dual_bound"]) <= 1e-6, name
        for key in single.values:
            np.testing.assert_allclose(first["values"][key], single.values[key], rtol=0,
                                       atol=1e-5, err_msg=name)
    assert ranks[1]["relu-squared-chunked"]["info"]["chunks"] == 2  # 20 samples: 12 + 8
    for rank in ranks:
        assert "different programs" in rank["mismatch"]
