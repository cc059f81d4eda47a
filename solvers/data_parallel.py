"""Sums over samples for the first-order solvers: chunk streaming and data-parallel sharding.

Every per-iteration quantity of the torch solvers that touches the data is a **sum over
samples** (the data term and its gradient, the cone-constraint penalty of the ReLU solver, the
outer-product gradient ``Σ_k w_k A(x_k + δ*_k)`` of the polynomial solver) or a **maximum over
samples** (constraint violations). This module evaluates them over pieces of the data and
combines the pieces exactly, so that neither the device nor one process needs all samples at
once. Two options of ``cr.solve(program, "torch", ...)`` control it:

``batch_size`` — mini-batch *streaming*, not stochastic optimisation
    ``None``: full batch; the rank's samples are moved to the device once and stay there.
    An integer ``b``: every evaluation streams over consecutive chunks of ``b`` samples,
    produced by a :class:`torch.utils.data.DataLoader` over a
    :class:`~torch.utils.data.TensorDataset` of the program's per-sample arrays (``shuffle`` off,
    zero-copy row slices of the host arrays), each chunk moved to the device only while it is
    processed, and the partial sums are accumulated. Every iteration therefore uses the *exact*
    full gradient: the iterates equal the full-batch ones up to floating-point summation order,
    the method keeps its convergence guarantees and stopping certificates (stationarity,
    violation) and the result is deterministic — unlike SGD, whose noisy steps would void them.
    Streaming bounds the device memory of one evaluation by the chunk (the large intermediates,
    e.g. the (C, 2P, n) slacks of the ReLU program, are per chunk); it does not reduce the
    arithmetic.
    ``"auto"`` (the default): full batch when its estimated working set fits in half of the
    device's free memory (always on the CPU), otherwise the largest chunk that does.

``distributed`` — data parallelism with :mod:`torch.distributed`
    ``False`` (default) or ``True`` (a process group must be initialised; every rank calls the
    solver with the same program, built from the full data, and the same options), or
    ``"auto"`` (``True`` exactly when a process group is initialised). Rank ``r`` of ``R`` takes
    the contiguous shard of samples ``[⌊rn/R⌋, ⌊(r+1)n/R⌋)`` (streamed in chunks when
    ``batch_size`` is set); every sum over samples is all-reduced (SUM) and every maximum over
    samples all-reduced (MAX), and means divide by the *global* n. All ranks then hold the same
    numbers and take the same decisions (step sizes, backtracking, restarts, stopping), exactly
    as replicas of ``DistributedDataParallel`` stay in step: this assumes the ranks run the same
    deterministic kernels (same library versions, same hardware kind). A wall-clock
    ``time_limit`` is agreed on by all ranks (any rank out of time stops all), and the final
    iterate is broadcast from rank 0 so that every rank returns identical values. A cheap
    fingerprint of the program (sizes and data sums) is compared across ranks first, and a
    mismatch raises :class:`~convexrobust.errors.InvalidInputError` on every rank instead of
    hanging. With the gloo backend the reductions go through the CPU; with NCCL through the
    solver's device (pass each rank its own ``device``).

What does not stream: the program object holds the full data on the host of every rank, and
the final judging (``program.objective`` / ``program.violation``, which every
:class:`~convexrobust.solvers.Solution` recomputes) and the ReLU repair run on the host in
float64 over the full program, identically on every rank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from convexrobust.errors import InvalidInputError

__all__ = ["Collective", "SampleStream", "check_batch_size", "fingerprint"]

#: ``batch_size="auto"`` keeps the full batch while its estimated working set is at most this
#: fraction of the device's free memory.
AUTO_MEMORY_FRACTION = 0.5


def check_batch_size(batch_size: object) -> int | str | None:
    """``None``, ``"auto"`` or an integer ≥ 1, else :class:`InvalidInputError`."""
    if batch_size is None or (isinstance(batch_size, str) and batch_size == "auto"):
        return batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise InvalidInputError(
            f"batch_size must be None (full batch), 'auto' or an integer >= 1, got {batch_size!r}")
    return int(batch_size)


def fingerprint(*arrays: np.ndarray) -> tuple[float, ...]:
    """Shapes, sums and position-weighted row sums of per-sample arrays: cheap numbers that
    ranks holding the same program agree on (see :meth:`Collective.check_same_program`)."""
    out: list[float] = []
    for array in arrays:
        a = np.asarray(array, dtype=np.float64)
        a = a.reshape(a.shape[0], -1)
        weights = np.arange(1, a.shape[0] + 1) / max(a.shape[0], 1)
        out += [*a.shape, float(a.sum()), float(weights @ a.sum(axis=1))]
    return tuple(out)


class Collective:
    """Reductions over the ranks of a :mod:`torch.distributed` group, no-ops in one process.

    ``Collective(distributed, device)`` with ``distributed`` ``True`` / ``False`` / ``"auto"``
    (module docstring). Reductions return new tensors (the inputs are left alone) with the
    inputs' dtypes and devices; they are carried out in float64 so that float32 iterates do not
    lose the partial sums' precision.
    """

    def __init__(self, distributed: object = False, device: torch.device | None = None):
        if not (isinstance(distributed, bool) or (isinstance(distributed, str)
                                                  and distributed == "auto")):
            raise InvalidInputError(
                f"distributed must be True, False or 'auto', got {distributed!r}")
        initialised = dist.is_available() and dist.is_initialized()
        if distributed is True and not initialised:
            raise InvalidInputError(
                "distributed=True needs an initialised process group: call "
                "torch.distributed.init_process_group(...) on every rank first (or launch with "
                "torchrun), or pass distributed=False")
        self.enabled = bool(initialised and distributed in (True, "auto"))
        self.rank = dist.get_rank() if self.enabled else 0
        self.world = dist.get_world_size() if self.enabled else 1
        device = torch.device("cpu") if device is None else torch.device(device)
        nccl = self.enabled and dist.get_backend() == "nccl"
        self.device = device if nccl else torch.device("cpu")

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """The contiguous rows of ``n`` samples this rank owns."""
        return slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)

    def _reduce(self, tensors: tuple[Tensor, ...], op: str) -> tuple[Tensor, ...]:
        if not self.enabled:
            return tensors
        flat = torch.cat([t.detach().reshape(-1).to(self.device, torch.float64)
                          for t in tensors])
        dist.all_reduce(flat, op=getattr(dist.ReduceOp, op))
        out, start = [], 0
        for t in tensors:
            out.append(flat[start:start + t.numel()].reshape(t.shape).to(t.device, t.dtype))
            start += t.numel()
        return tuple(out)

    def sum(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """Element-wise sums over the ranks, in one all-reduce."""
        return self._reduce(tensors, "SUM")

    def max(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """Element-wise maxima over the ranks, in one all-reduce."""
        return self._reduce(tensors, "MAX")

    def sum_floats(self, *values: float) -> tuple[float, ...]:
        if not self.enabled:
            return values
        (out,) = self.sum(torch.tensor(values, dtype=torch.float64))
        return tuple(float(v) for v in out)

    def max_floats(self, *values: float) -> tuple[float, ...]:
        if not self.enabled:
            return values
        (out,) = self.max(torch.tensor(values, dtype=torch.float64))
        return tuple(float(v) for v in out)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on some rank."""
        return bool(self.max_floats(float(flag))[0]) if self.enabled else bool(flag)

    def broadcast(self, tensor: Tensor) -> Tensor:
        """Rank 0's ``tensor`` on every rank (a copy; same dtype and device)."""
        if not self.enabled:
            return tensor
        buf = tensor.detach().to(self.device, copy=True).contiguous()
        dist.broadcast(buf, src=0)
        return buf.to(tensor.device, tensor.dtype)

    def check_same_program(self, *scalars: float, arrays: tuple[np.ndarray, ...] = ()) -> None:
        """Raise :class:`InvalidInputError` on every rank unless all ranks hold the same
        program, as far as a cheap fingerprint tells: the ``scalars`` (β, radius, …) and the
        sizes and sums of the per-sample ``arrays`` (:func:`fingerprint`)."""
        if not self.enabled:
            return
        values = torch.tensor([*scalars, *fingerprint(*arrays)], dtype=torch.float64)
        (extremes,) = self.max(torch.cat([values, -values]))  # max and −min in one call
        high, low = extremes[:values.numel()], -extremes[values.numel():]
        if not torch.equal(high, low):
            raise InvalidInputError(
                "distributed solve: the ranks hold different programs; build the same program "
                "from the full data on every rank (each rank solves its shard of it)")


class _ContiguousChunks:
    """Sampler of consecutive row slices ``[i·b, (i+1)·b)`` of ``n`` rows (no copy, no shuffle)."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size

    def __iter__(self) -> Iterator[slice]:
        for start in range(0, self.n, self.batch_size):
            yield slice(start, min(start + self.batch_size, self.n))

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)


def _as_is(batch: object) -> object:
    return batch


class SampleStream:
    """This rank's shard of a program's per-sample arrays, iterated in chunks on ``device``.

    Parameters
    ----------
    arrays:
        Per-sample arrays (rows = the n samples), e.g. features, pattern masks, targets,
        labels; they stay on the host (the shard is a zero-copy row slice).
    batch_size:
        ``None``, ``"auto"`` or an integer (module docstring).
    device, dtype:
        Floating arrays are delivered on ``device`` in ``dtype``, integer ones on ``device``.
    collective:
        Selects the shard (:meth:`Collective.shard`).
    prepare:
        Applied to every chunk once it is on the device (derived tensors); in full-batch mode
        once, and the result is kept.
    bytes_per_sample:
        Estimated device working set per sample of one evaluation, for ``"auto"``.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray | Tensor], *, batch_size: object,
                 device: torch.device, dtype: torch.dtype, collective: Collective,
                 prepare: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
                 bytes_per_sample: float = 0.0):
        self.keys = tuple(arrays)
        host = [torch.as_tensor(arrays[key]) for key in self.keys]
        self.n_global = int(host[0].shape[0])
        rows = collective.shard(self.n_global)
        host = [t[rows] for t in host]
        self.start = rows.start
        self.n_local = int(host[0].shape[0])
        self.device, self.dtype = device, dtype
        self._prepare = prepare or (lambda chunk: chunk)
        self.batch_size = self._resolve(check_batch_size(batch_size), bytes_per_sample)
        self._resident: dict[str, Tensor] | None = None
        if self.batch_size is None:
            self._resident = self._prepare(self._to_device(host))
            self.chunk_sizes = [self.n_local]
        else:
            sampler = _ContiguousChunks(self.n_local, self.batch_size)
            self.loader = DataLoader(TensorDataset(*host), sampler=sampler, batch_size=None,
                                     shuffle=False, collate_fn=_as_is)
            self.chunk_sizes = [s.stop - s.start for s in sampler]

    @property
    def streaming(self) -> bool:
        """Whether chunks are moved to the device per evaluation (``batch_size`` set)."""
        return self._resident is None

    @property
    def state_device(self) -> torch.device:
        """Where per-sample solver state belongs: the device in full-batch mode, else the host
        (it is moved to the device with its chunk)."""
        return torch.device("cpu") if self.streaming else self.device

    def _resolve(self, batch_size: int | str | None, bytes_per_sample: float) -> int | None:
        if batch_size != "auto":
            return batch_size  # type: ignore[return-value]
        if self.device.type != "cuda" or self.n_local == 0 or bytes_per_sample <= 0:
            return None
        free, _ = torch.cuda.mem_get_info(self.device)
        budget = AUTO_MEMORY_FRACTION * free
        if self.n_local * bytes_per_sample <= budget:
            return None
        return max(1, int(budget // bytes_per_sample))

    def _to_device(self, tensors: list[Tensor] | tuple[Tensor, ...]) -> dict[str, Tensor]:
        out = {}
        for key, t in zip(self.keys, tensors, strict=True):
            floating = t.is_floating_point() or t.dtype == torch.bool
            out[key] = t.to(self.device, self.dtype) if floating else t.to(self.device)
        return out

    def __len__(self) -> int:
        return len(self.chunk_sizes)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        if self._resident is not None:
            yield self._resident
            return
        for batch in self.loader:
            yield self._prepare(self._to_device(batch))
