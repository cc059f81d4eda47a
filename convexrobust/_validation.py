"""Input validation shared by every entry point: one place that turns bad input into a typed,
actionable :class:`~convexrobust.errors.InvalidInputError`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from convexrobust.errors import InvalidInputError


def check_device(device: object, *, default: str | torch.device = "cpu") -> torch.device:
    """``device`` (a ``torch.device``, a name such as ``"cpu"``, ``"cuda:1"``, or None for
    ``default``) as a usable ``torch.device``: a name torch cannot parse, or a device this
    machine or this torch build does not have (e.g. ``"cuda"`` on a CPU-only build), raises
    :class:`InvalidInputError` naming the devices that are available."""
    if device is None:
        device = default
    if not isinstance(device, (str, torch.device)):
        raise InvalidInputError(f"device must be a name such as 'cpu' or 'cuda', or a "
                                f"torch.device, got {device!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise InvalidInputError(f"unknown device {device!r}: use 'cpu' or 'cuda' "
                                f"({str(err).splitlines()[0][:120]})") from None
    if dev.type == "meta":
        raise InvalidInputError("device 'meta' holds no data and cannot compute; pass "
                                "device='cpu' or a CUDA device")
    try:
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError, ValueError) as err:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        have = "cpu" + (f", cuda:0 … cuda:{gpus - 1}" if gpus else "")
        raise InvalidInputError(
            f"device {str(dev)!r} is not usable here ({str(err).splitlines()[0][:200]}); "
            f"available: {have}. "
            "Pass device='cpu' (or install a CUDA build of torch on a machine with a GPU)"
        ) from None
    return dev


def _to_numpy(value: object) -> object:
    """A torch tensor as a CPU numpy array (dtypes numpy lacks, e.g. bfloat16, go through
    float64); anything else unchanged."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.is_complex():
            return value.numpy()
        if not value.is_floating_point() or value.dtype in (torch.float32, torch.float64):
            return value.numpy()
        return value.to(torch.float64).numpy()
    return value


def as_array(value: object, name: str) -> np.ndarray:
    """``np.asarray(value)``, with the errors numpy raises on ragged or odd input typed."""
    try:
        return np.asarray(_to_numpy(value))
    except (TypeError, ValueError) as err:
        raise InvalidInputError(
            f"{name} must be array-like (a list, numpy array or tensor of equal-length rows): "
            f"{str(err).splitlines()[0][:200]}"
        ) from None


def check_features(X: object, *, name: str = "X", n_features: int | None = None,
                   max_abs: float | None = None) -> np.ndarray:
    """Return ``X`` as a finite float64 array of shape (n_samples, n_features), with entries of
    magnitude at most ``max_abs`` when given."""
    X = _to_numpy(X)
    if isinstance(X, np.ndarray) and X.dtype.kind == "c":
        raise InvalidInputError(f"{name} is complex; pass real-valued features")
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(
            f"{name} must be a numeric array: {str(err).splitlines()[0][:200]}"
        ) from None
    except OverflowError:
        raise InvalidInputError(f"{name} holds numbers too large for float64") from None
    if arr.ndim != 2:
        raise InvalidInputError(
            f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}; "
            "reshape a single sample with x.reshape(1, -1)"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidInputError(f"{name} is empty (shape {arr.shape}); pass at least one sample")
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise InvalidInputError(
            f"{name} contains {bad} NaN or infinite value(s); impute or drop them first"
        )
    if max_abs is not None and float(np.max(np.abs(arr))) > max_abs:
        raise InvalidInputError(
            f"{name} has entries as large as {float(np.max(np.abs(arr))):.3g} (at most "
            f"{max_abs:g} are taken: float64 cannot hold the powers the programs form); "
            "standardise the features first"
        )
    if n_features is not None and arr.shape[1] != n_features:
        raise InvalidInputError(
            f"{name} has {arr.shape[1]} features but the model was built for {n_features}"
        )
    if not arr.flags.writeable:  # a read-only input (e.g. a memmap): torch needs its own copy
        arr = arr.copy()
    return arr


def check_positive(value: object, name: str, *, allow_zero: bool = True) -> float:
    """Return ``value`` as a finite float that is > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise InvalidInputError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise InvalidInputError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidInputError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def check_int(value: object, name: str, *, minimum: int = 0,
              maximum: int | None = None) -> int:
    """Return ``value`` as an int in ``[minimum, maximum]``; integral floats (``3.0``) are
    accepted, booleans, fractions, NaN and non-numbers are not."""
    if isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        v = int(value)
    elif isinstance(value, (float, np.floating)) and np.isfinite(value) and value == int(value):
        v = int(value)
    else:
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    if v < minimum or (maximum is not None and v > maximum):
        upper = f" and <= {maximum:,}" if maximum is not None else ""
        raise InvalidInputError(f"{name} must be an integer >= {minimum}{upper}, got {value!r}")
    return v


def check_bool(value: object, name: str) -> bool:
    """Return ``value`` as a bool; only ``True``/``False`` (numpy's too) and the integers 0/1
    are accepted, so that ``bias="no"`` is not silently true."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(value)
    raise InvalidInputError(f"{name} must be True or False, got {value!r}")


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices`` (case-insensitive), else raise."""
    key = value.lower() if isinstance(value, str) else None
    if key not in choices:
        raise InvalidInputError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return key  # type: ignore[return-value]


@dataclass(frozen=True)
class Targets:
    """Encoded training targets.

    ``task`` is ``"binary"`` (one output, class ``classes[1]`` ⇔ score > 0), ``"multiclass"``
    (one output per class, prediction ``argmax``) or ``"regression"`` (one output per target
    column). ``labels`` are class indices in ``0..C−1`` (classification only); ``signs`` is the
    (n, outputs) matrix of ±1 one-vs-all targets (classification) and ``values`` the (n, outputs)
    real targets (regression; equal to ``signs`` for classification).
    """

    task: str
    classes: np.ndarray | None
    labels: np.ndarray | None
    values: np.ndarray

    @property
    def n_outputs(self) -> int:
        return self.values.shape[1]

    @property
    def is_classification(self) -> bool:
        return self.task != "regression"


def encode_targets(y: object, n_samples: int, *, task: str) -> Targets:
    """Validate ``y`` against ``n_samples`` and encode it for ``task``.

    ``task`` is ``"classification"`` or ``"regression"``. Classification accepts any label set
    with at least two classes; two classes give a single ±1 output.
    """
    arr = as_array(y, "y")
    if arr.ndim == 0:
        raise InvalidInputError(
            f"y must be a 1-D array of {n_samples} labels or targets, got {y!r:.80}"
        )
    if arr.dtype.kind == "c":
        raise InvalidInputError("y is complex; pass real-valued labels or targets")
    if arr.ndim == 2 and arr.shape[1] == 1 and task == "classification":
        arr = arr[:, 0]
    if arr.shape[0] != n_samples:
        raise InvalidInputError(
            f"y has {arr.shape[0]} entries but X has {n_samples} samples; they must match"
        )
    if task == "regression":
        try:
            vals = np.asarray(arr, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise InvalidInputError("regression targets y must be numeric") from None
        if vals.ndim == 1:
            vals = vals[:, None]
        if vals.ndim != 2:
            raise InvalidInputError(f"y must be 1-D or 2-D, got shape {arr.shape}")
        if not np.all(np.isfinite(vals)):
            raise InvalidInputError("y contains NaN or infinite values; drop those samples")
        if not vals.flags.writeable:  # a read-only input (e.g. a memmap): torch needs a copy
            vals = vals.copy()
        return Targets("regression", None, None, vals)
    if arr.ndim != 1:
        raise InvalidInputError(f"class labels y must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "O":
        arr = _object_labels(arr)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise InvalidInputError("y contains NaN or infinite labels; drop those samples")
    if arr.dtype.kind not in "biufUS":
        raise InvalidInputError(
            f"class labels y must be numbers or strings, got dtype {arr.dtype}"
        )
    classes, labels = np.unique(arr, return_inverse=True)
    if classes.size < 2:
        raise InvalidInputError(
            f"y has only one class ({classes[0]!r}); a classifier needs at least two classes"
        )
    if classes.size == 2:
        signs = (2.0 * labels - 1.0)[:, None]
        return Targets("binary", classes, labels, signs)
    signs = -np.ones((n_samples, classes.size))
    signs[np.arange(n_samples), labels] = 1.0
    return Targets("multiclass", classes, labels, signs)


def infer_task(y: object, loss: str) -> str:
    """``"classification"`` for hinge/logistic losses or label-like ``y``; else regression.

    The squared loss serves both: integer, boolean or string labels mean classification, real
    values mean regression. Pass ``task=`` explicitly to override.
    """
    if loss != "squared":
        return "classification"
    kind = as_array(y, "y").dtype.kind
    return "classification" if kind in "biuUSOb" else "regression"


def _object_labels(arr: np.ndarray) -> np.ndarray:
    """Object-dtype labels as a plain numpy array: all strings, or all real numbers (no None,
    no NaN); a mixture cannot be ordered into classes."""
    items = arr.tolist()
    if all(isinstance(v, str) for v in items):
        return arr.astype(str)
    if all(isinstance(v, (int, float, np.integer, np.floating))
           and not isinstance(v, (bool, np.bool_)) for v in items):
        return np.asarray(items)
    if all(isinstance(v, (bool, np.bool_)) for v in items):
        return np.asarray(items, dtype=bool)
    kinds = sorted({type(v).__name__ for v in items})
    raise InvalidInputError(
        f"class labels y mix types ({', '.join(kinds)}); use all strings or all numbers "
        "(and drop missing labels)"
    )
