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


def check_features(X: object, *, name: str = "X", n_features: int | None = None) -> np.ndarray:
    """Return ``X`` as a finite float64 array of shape (n_samples, n_features)."""
    if hasattr(X, "detach"):  # a torch tensor
        X = X.detach().cpu().numpy()  # type: ignore[union-attr]
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"{name} must be a numeric array: {err}") from None
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
    if n_features is not None and arr.shape[1] != n_features:
        raise InvalidInputError(
            f"{name} has {arr.shape[1]} features but the model was built for {n_features}"
        )
    return arr


def check_positive(value: object, name: str, *, allow_zero: bool = True) -> float:
    """Return ``value`` as a finite float that is > 0 (or >= 0 with ``allow_zero``)."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidInputError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices`` (case-insensitive), else raise."""
    key = value.lower() if isinstance(value, str) else value
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
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()  # type: ignore[union-attr]
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1 and task == "classification":
        arr = arr[:, 0]
    if arr.shape[0] != n_samples:
        raise InvalidInputError(
            f"y has {arr.shape[0]} entries but X has {n_samples} samples; they must match"
        )
    if task == "regression":
        try:
            vals = np.asarray(arr, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError("regression targets y must be numeric") from None
        if vals.ndim == 1:
            vals = vals[:, None]
        if vals.ndim != 2:
            raise InvalidInputError(f"y must be 1-D or 2-D, got shape {arr.shape}")
        if not np.all(np.isfinite(vals)):
            raise InvalidInputError("y contains NaN or infinite values; drop those samples")
        return Targets("regression", None, None, vals)
    if arr.ndim != 1:
        raise InvalidInputError(f"class labels y must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise InvalidInputError("y contains NaN or infinite labels; drop those samples")
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
    kind = np.asarray(y).dtype.kind
    return "classification" if kind in "biuUSOb" else "regression"
