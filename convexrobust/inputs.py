"""One adapter for every form of data the entry points take: :class:`DataSource`.

Accepted forms, everywhere (:func:`~convexrobust.extract_features`,
:func:`~convexrobust.evaluate`, :func:`~convexrobust.retrain_last_two_layers`):

* a tensor or array ``X`` of shape ``(N, ...)`` (no labels);
* a tuple or list ``(X,)`` or ``(X, y)``: tensors, arrays, or anything ``np.asarray`` turns into
  a numeric array (nested lists); ``y`` holds one label per sample, shape ``(N,)`` or ``(N, 1)``;
* a map-style torch ``Dataset`` (or any object with ``__getitem__`` and ``__len__`` that is not a
  list or tuple) whose items are ``x`` or ``(x, y)``, batched in order;
* a ``DataLoader`` yielding ``x`` or ``(x, y)`` batches (its own batching is kept).

Inputs must be numeric — bool, integer or floating; an ``object``, string or complex array is an
:class:`~convexrobust.errors.InvalidInputError` naming the fix. Batches are cast to the dtype and
device the caller's model runs in, and a batch with NaN or ±inf after the cast (including a
float64 value that overflows float32) is an error that names the samples.

:func:`class_indices` turns labels into a long tensor of class indices and rejects what is not
one (strings, fractions, NaN).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from convexrobust.errors import ConvexRobustError, InvalidInputError

__all__ = ["DataSource", "apply_model", "as_tensor", "class_indices", "hash_item", "hash_tensor"]

logger = logging.getLogger(__name__)

_LABEL_HINT = ("labels must be class indices 0..C-1 (integers); map other labels with "
               "np.unique(y, return_inverse=True)")


def as_tensor(value: Any, what: str) -> torch.Tensor:
    """``value`` (a tensor, an array, or anything :func:`numpy.asarray` makes a numeric array
    of) as a tensor, sharing memory where it can. Object, string, bytes and complex data, and
    ragged nested lists, raise :class:`InvalidInputError` saying what ``what`` must be."""
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        if isinstance(value, (str, bytes)) or value is None:
            raise InvalidInputError(f"{what} must be a tensor or a numeric array, "
                                    f"got {type(value).__name__}")
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as err:
            raise InvalidInputError(f"{what} is not a rectangular numeric array ({err}); pass "
                                    "a tensor or an ndarray of shape (N, ...)") from None
        if arr.dtype.kind not in "biuf":
            hint = _LABEL_HINT if "label" in what or what == "y" else (
                "convert it to a numeric array first, e.g. np.asarray(X, dtype=np.float32)")
            raise InvalidInputError(f"{what} has dtype {arr.dtype} ({type(value).__name__}); "
                                    f"{hint}")
        try:
            tensor = torch.from_numpy(np.ascontiguousarray(arr))
        except TypeError as err:  # e.g. an unsigned dtype this torch build lacks
            raise InvalidInputError(f"{what} has dtype {arr.dtype}, which torch cannot hold "
                                    f"({err}); cast it to float32 or int64") from None
    if tensor.is_complex():
        raise InvalidInputError(f"{what} is complex; pass real-valued data")
    return tensor


def class_indices(y: Any, n: int | None = None, *, what: str = "labels") -> torch.Tensor:
    """``y`` as a 1-D long tensor of integer labels (``n`` of them when given): floating labels
    must be finite whole numbers, bool labels read as 0/1. Strings, fractions, NaN and a wrong
    count raise :class:`InvalidInputError`. The range (``0..C−1``, or ±1) is the caller's to
    check."""
    labels = as_tensor(y, what)
    if labels.dim() > 1 and labels.numel() == labels.shape[0]:
        labels = labels.reshape(-1)
    if labels.dim() != 1:
        raise InvalidInputError(f"{what} must have one entry per sample, shape (N,), got "
                                f"{tuple(labels.shape)}")
    if n is not None and labels.shape[0] != n:
        raise InvalidInputError(f"there are {n} samples but {labels.shape[0]} {what}")
    if labels.is_floating_point():
        if not bool(torch.isfinite(labels).all()) or not bool((labels == labels.round()).all()):
            raise InvalidInputError(f"{what} hold NaN, inf or fractions; {_LABEL_HINT}")
    return labels.long()


def apply_model(model: Any, x: torch.Tensor, what: str = "the model") -> Any:
    """``model(x)``; a model that cannot take inputs of this shape or dtype (torch raises a
    ``RuntimeError``, ``ValueError``, ``TypeError`` or ``IndexError`` from inside its layers)
    raises :class:`InvalidInputError` saying so — errors of convexrobust's own pass through."""
    try:
        return model(x)
    except ConvexRobustError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise InvalidInputError(
            f"{what} failed on inputs of shape {tuple(x.shape)} and dtype {x.dtype} "
            f"({type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}); "
            "pass inputs of the shape and kind the model was built for") from None


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A collated batch: a tensor ``x``, or a pair ``(x, y)``."""
    if isinstance(batch, (torch.Tensor, np.ndarray)):
        return as_tensor(batch, "a batch"), None
    if isinstance(batch, (tuple, list)) and len(batch) in (1, 2):
        x = as_tensor(batch[0], "a batch's inputs")
        y = None if len(batch) == 1 else as_tensor(batch[1], "a batch's labels")
        return x, y
    raise InvalidInputError(
        f"a dataset must yield x or (x, y); a batch came as {type(batch).__name__}"
        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        + ": wrap it in a Dataset whose __getitem__ returns (x, y)")


def _is_dataset(data: Any) -> bool:
    return isinstance(data, Dataset) or (
        not isinstance(data, (tuple, list, str, bytes, dict))
        and hasattr(data, "__getitem__") and hasattr(data, "__len__"))


class DataSource:
    """A uniform view of the accepted data forms (module docstring): batches, the number of
    samples when known, the shape of one sample, and a fingerprint for caches.

    Parameters
    ----------
    data:
        One of the accepted forms, or a :class:`DataSource` (see :meth:`of`).
    batch_size:
        Samples per batch for tensors and Datasets (a DataLoader keeps its own).
    min_ndim:
        The least number of dimensions of ``X`` (``2`` for ``(N, D)`` or more).
    """

    def __init__(self, data: Any, *, batch_size: int = 256, min_ndim: int = 1):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.X: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.loader: Any = None
        self.dataset: Any = None
        self.batch_size = batch_size
        if isinstance(data, (torch.Tensor, np.ndarray)):
            self.X = as_tensor(data, "X")
        elif isinstance(data, (tuple, list)):
            if len(data) not in (1, 2):
                raise InvalidInputError(
                    f"data as a tuple must be (X,) or (X, y), got {len(data)} elements; for a "
                    "list of samples use a Dataset")
            self.X = as_tensor(data[0], "X")
            if len(data) == 2 and data[1] is not None:
                self.y = as_tensor(data[1], "y")
        elif isinstance(data, DataLoader):
            self.loader = data
            self.dataset = data.dataset
        elif _is_dataset(data):
            self.dataset = data
            self.loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        else:
            raise InvalidInputError(
                "data must be a tensor X, a tuple (X, y), a torch Dataset or a DataLoader, "
                f"got {type(data).__name__}")
        if self.X is not None:
            if self.X.dim() < max(min_ndim, 1):
                raise InvalidInputError(
                    f"X must have shape (N, ...) with N samples"
                    f"{' and at least one feature' if min_ndim > 1 else ''}, got "
                    f"{tuple(self.X.shape)}")
            if self.X.shape[0] == 0:
                raise InvalidInputError("data is empty (0 samples)")
            if self.y is not None:
                n = self.X.shape[0]
                if self.y.dim() == 0 or self.y.shape[0] != n or self.y.numel() != n:
                    raise InvalidInputError(
                        f"X has {n} samples but y has shape {tuple(self.y.shape)}; need one "
                        "label per sample")

    @classmethod
    def of(cls, data: Any, *, batch_size: int = 256, min_ndim: int = 1) -> DataSource:
        """``data`` itself when it is a DataSource, else ``DataSource(data, ...)``."""
        if isinstance(data, DataSource):
            return data
        return cls(data, batch_size=batch_size, min_ndim=min_ndim)

    def size(self) -> int | None:
        """Number of samples, or None for data of unknown length."""
        if self.X is not None:
            return int(self.X.shape[0])
        try:
            return len(self.dataset)
        except TypeError:
            return None

    def n_batches(self) -> int | None:
        """Number of batches :meth:`batches` yields, when known."""
        if self.X is not None:
            return -(-int(self.X.shape[0]) // self.batch_size)
        try:
            return len(self.loader)
        except TypeError:
            return None

    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one input sample, ``x.shape`` of one item (for the ℓ∞ → ℓ2 conversion
        ``‖δ‖₂ ≤ √D‖δ‖_∞`` with ``D = prod(sample_shape)``)."""
        if self.X is not None:
            return tuple(self.X.shape[1:])
        for x, _ in self.raw_batches():  # a Dataset or DataLoader: its first batch
            return tuple(x.shape[1:])
        raise InvalidInputError("data is empty (0 samples)")

    def raw_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """``(x, y)`` batches as stored (``y`` None without labels), not cast or checked."""
        if self.X is not None:
            for start in range(0, self.X.shape[0], self.batch_size):
                stop = start + self.batch_size
                yield self.X[start:stop], None if self.y is None else self.y[start:stop]
        else:
            for batch in self.loader:
                yield _split_batch(batch)

    def batches(self, *, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """``(x, y)`` batches with ``x`` cast to ``dtype`` (default: its own floating dtype, or
        the default dtype for bool and integer inputs) on ``device``; empty batches are
        skipped. NaN or ±inf in ``x`` after the cast raise :class:`InvalidInputError` naming
        the samples; labels are returned as stored (see :func:`class_indices`)."""
        seen = 0
        for x, y in self.raw_batches():
            if x.dim() == 0:
                raise InvalidInputError("a batch is a scalar; items must be samples x")
            if x.shape[0] == 0:
                continue
            target = dtype or (x.dtype if x.is_floating_point() else torch.get_default_dtype())
            cast = x.dtype != target
            x = x.to(device=device, dtype=target)
            if not bool(torch.isfinite(x).all()):
                raise InvalidInputError(
                    f"inputs contain NaN or inf (in samples {seen}–{seen + len(x) - 1}"
                    f"{', after the cast to ' + str(target) if cast else ''}): "
                    "clean or impute the data first")
            if y is not None and (y.dim() == 0 or y.shape[0] != x.shape[0]):
                raise InvalidInputError(
                    f"a batch has {x.shape[0]} inputs but labels of shape {tuple(y.shape)}; "
                    "need one label per input")
            seen += x.shape[0]
            yield x, y

    def fingerprint(self, digest: Any) -> None:
        """Feed the data's shape and a cheap checksum into ``digest``.

        Tensors: shape, dtype, the exact bytes of up to 256 evenly spaced samples, and float64
        moments of everything (sum, sum of squares, index-weighted sum); labels are hashed in
        full. Datasets: type, length, and the exact bytes of up to 16 evenly spaced items.
        The checksum is a heuristic: an edit that keeps all of these unchanged (a dataset
        changed only in unsampled items) reuses a stale cache; delete the file then.
        """
        if self.X is not None:
            hash_tensor(digest, self.X, sample_rows=256)
            digest.update(b"labels:")
            if self.y is not None:
                hash_tensor(digest, self.y, sample_rows=None)
            return
        n = self.size()
        if n is None or not hasattr(self.dataset, "__getitem__"):
            raise InvalidInputError("cache= needs data of known length (a map-style Dataset)")
        digest.update(f"dataset:{type(self.dataset).__qualname__}:{n}".encode())
        if isinstance(self.loader, DataLoader) and isinstance(self.loader.sampler,
                                                             RandomSampler):
            logger.warning("the DataLoader shuffles; a cached result keeps the order of the "
                           "run that wrote it")
        for i in sorted({int(i) for i in np.linspace(0, n - 1, num=min(n, 16))}):
            hash_item(digest, self.dataset[i])


def _hash_bytes(digest: Any, t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    digest.update(t.view(torch.uint8).numpy().tobytes())


def hash_tensor(digest: Any, t: torch.Tensor, *, sample_rows: int | None) -> None:
    """Shape, dtype and bytes of ``t`` into ``digest``: all bytes when ``sample_rows`` is None
    or ``t`` has at most that many rows, else the bytes of ``sample_rows`` evenly spaced rows
    and float64 moments of everything (sum, sum of squares, index-weighted row sums)."""
    digest.update(f"{tuple(t.shape)}:{t.dtype}:".encode())
    if t.dim() == 0 or sample_rows is None or t.shape[0] <= sample_rows:
        _hash_bytes(digest, t)
        return
    rows = torch.linspace(0, t.shape[0] - 1, sample_rows).round().long().to(t.device)
    _hash_bytes(digest, t.index_select(0, rows))
    # moments of everything; the index-weighted one also catches reordered samples
    per_row = t.detach().to(torch.float64).reshape(t.shape[0], -1)
    index = torch.arange(1, t.shape[0] + 1, dtype=torch.float64, device=t.device)
    moments = (per_row.sum(), per_row.square().sum(), (index * per_row.sum(1)).sum())
    digest.update(":".join(f"{m.item():.17g}" for m in moments).encode())


def hash_item(digest: Any, item: Any) -> None:
    """One dataset item into ``digest``: tensors, arrays, numbers and (nested) tuples."""
    if isinstance(item, torch.Tensor):
        hash_tensor(digest, item, sample_rows=None)
    elif isinstance(item, np.ndarray) and item.dtype.kind in "biuf":
        hash_tensor(digest, torch.from_numpy(np.ascontiguousarray(item)), sample_rows=None)
    elif isinstance(item, (tuple, list)):
        digest.update(f"seq{len(item)}:".encode())
        for part in item:
            hash_item(digest, part)
    else:
        digest.update(f"{type(item).__qualname__}:{item!r}:".encode())
