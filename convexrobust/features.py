"""Feature extraction: the input of a network's last two layers, as a plain (N, D) matrix.

:class:`FeatureExtractor` turns a trained network into ``x ↦ h(x)``, either through the
network's own ``features`` method (:class:`~convexrobust.networks.LiResNet`,
:class:`~convexrobust.networks.PreActResNet18`) or by capturing the input of a named
submodule with a forward pre-hook (the rest of the forward pass is skipped). A TorchScript
network runs compiled code that hooks cannot see: its feature map is its exported ``features``
method. :class:`IdentityFeatures` is the identity feature map (``h(x) = x``, exactly
1-Lipschitz) of a head trained directly on its inputs, such as a table's standardised columns.

:func:`extract_features` runs an extractor over a data set in eval mode and batches, with a
progress bar and an optional on-disk cache keyed by a fingerprint of the model and the data.

The certificate of a retrained head composes with the extractor's *guaranteed* ℓ2 Lipschitz
bound ``K_h`` (DESIGN.md, "The way data flows"); :meth:`FeatureExtractor.lipschitz_bound`
returns it where it is known and ``None`` elsewhere.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from convexrobust._io import write_atomic
from convexrobust._validation import check_device
from convexrobust.errors import InvalidInputError
from convexrobust.inputs import DataSource, apply_model, hash_tensor

__all__ = ["FeatureExtractor", "IdentityFeatures", "extract_features"]

logger = logging.getLogger(__name__)

_CACHE_FORMAT = 1


class _StopForward(Exception):
    """Raised by the capture hook once the wanted input is seen: the rest of the forward pass
    is skipped. Private: never escapes :meth:`FeatureExtractor.forward`."""


class IdentityFeatures(nn.Module):
    """The identity feature map ``h(x) = x`` (flattened to (N, D)): the extractor of a model
    whose head sees the inputs themselves. Its ℓ2 Lipschitz constant is exactly 1; it has no
    weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` flattened to (N, D)."""
        return x.flatten(1)


class FeatureExtractor(nn.Module):
    """``x ↦ h(x)``, flattened to shape (N, D).

    Parameters
    ----------
    model:
        A trained network. It becomes a submodule, so ``extractor.to(device)`` moves it.
    feature_module:
        ``None`` to use ``model.features(x)`` (the network must have a callable ``features``
        method), or the dotted name of a submodule as listed by ``model.named_modules()``
        (``"fc1"``, ``"head.0"``): the features are then the *input* of that submodule during
        ``model(x)``, captured by a forward pre-hook; the forward pass stops there. Not for
        TorchScript modules (hooks cannot see inside compiled code): export a ``features(x)``
        method with ``@torch.jit.export`` instead.

    Attributes
    ----------
    model, feature_module:
        As given.
    """

    def __init__(self, model: nn.Module, feature_module: str | None = None):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InvalidInputError(
                f"model must be a torch.nn.Module, got {type(model).__name__}")
        if feature_module is None:
            method = getattr(model, "features", None)
            # a submodule named `features` (as in VGG) is usually not the input of the last
            # two layers, so only a method counts
            if not callable(method) or isinstance(method, nn.Module):
                raise InvalidInputError(
                    f"{type(model).__name__} has no features(x) method: pass feature_module, "
                    f"the name of the layer whose input is the feature vector "
                    f"(e.g. {_suggest_layers(model)})")
        else:
            if not isinstance(feature_module, str):
                raise InvalidInputError(
                    f"feature_module must be a module name (str) or None, "
                    f"got {type(feature_module).__name__}")
            modules = {name: module for name, module in model.named_modules() if name}
            names = list(modules)
            if feature_module not in names:
                close = difflib.get_close_matches(feature_module, names, n=5, cutoff=0.3)
                shown = close or names[:8]
                raise InvalidInputError(
                    f"{type(model).__name__} has no submodule named {feature_module!r}; "
                    f"{'closest' if close else 'some'} valid names: "
                    f"{', '.join(repr(n) for n in shown)} "
                    f"(all {len(names)} are in model.named_modules())")
            if isinstance(model, torch.jit.ScriptModule) or isinstance(
                    modules[feature_module], torch.jit.ScriptModule):
                raise InvalidInputError(
                    f"{feature_module!r} is a layer of a TorchScript module, whose compiled "
                    "code forward hooks cannot see, so its input cannot be captured by name: "
                    "define features(x) (the input of the last two layers) on the model, mark "
                    "it @torch.jit.export, script it again and pass no feature_module; or load "
                    "the Python class (model_class, --model-class)")
        self.model = model
        self.feature_module = feature_module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.feature_module is None:
            return self.model.features(x).flatten(1)
        # looked up on each call (not stored) so the target is not registered twice
        target = self.model.get_submodule(self.feature_module)
        captured: list[Any] = []

        def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:
            captured.append(args[0] if args else next(iter(kwargs.values()), None))
            raise _StopForward

        handle = target.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            self.model(x)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise InvalidInputError(
                f"submodule {self.feature_module!r} was not called during the forward pass of "
                f"{type(self.model).__name__}: choose a layer that forward() uses")
        feats = captured[0]
        if not isinstance(feats, torch.Tensor):
            raise InvalidInputError(
                f"the input of {self.feature_module!r} is a {type(feats).__name__}, "
                f"not a tensor: choose another feature_module")
        return feats.flatten(1)

    def lipschitz_bound(self) -> float | None:
        """A *guaranteed* upper bound of the ℓ2 Lipschitz constant of ``x ↦ h(x)``, or
        ``None`` when none is known.

        Known for a :class:`~convexrobust.networks.LiResNet` with ``feature_module=None`` (or
        ``"neck_dense"``, whose input is the same ``features(x)``): the product of float64
        per-layer operator-norm bounds; and for :class:`IdentityFeatures`: exactly 1. ``None``
        means no certificate is possible for the composed model unless the user supplies a
        sound bound of their own.
        """
        from convexrobust.networks.liresnet import LiResNet

        if isinstance(self.model, IdentityFeatures):
            return 1.0
        if isinstance(self.model, LiResNet) and self.feature_module in (None, "neck_dense"):
            return float(self.model.lipschitz_bound("guaranteed", part="features"))
        return None

    def extra_repr(self) -> str:
        return f"feature_module={self.feature_module!r}"


def _suggest_layers(model: nn.Module) -> str:
    linear = [name for name, m in model.named_modules() if name and isinstance(m, nn.Linear)]
    names = linear[-2:] or [name for name, _ in model.named_modules() if name][-2:]
    return ", ".join(repr(n) for n in names) or "a submodule name"


# --------------------------------------------------------------------------------------------
# cache


def _model_fingerprint(digest: Any, extractor: nn.Module) -> None:
    model = getattr(extractor, "model", extractor)
    digest.update(f"model:{type(model).__qualname__}:".encode())
    digest.update(f"feature_module:{getattr(extractor, 'feature_module', None)!r}:".encode())
    for name, value in extractor.state_dict().items():
        digest.update(name.encode())
        hash_tensor(digest, value, sample_rows=None)


def _fingerprint(extractor: nn.Module, source: DataSource) -> str:
    digest = hashlib.sha256(f"convexrobust-features-v{_CACHE_FORMAT}:".encode())
    _model_fingerprint(digest, extractor)
    source.fingerprint(digest)
    return digest.hexdigest()


def _load_cache(path: Path, fingerprint: str
                ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    if not path.exists():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        stored_fingerprint = stored["fingerprint"]
        features, labels = stored["features"], stored["labels"]
    except Exception as exc:  # a corrupt or foreign file: recompute and overwrite
        logger.warning("feature cache %s is unreadable (%s); recomputing", path, exc)
        return None
    if stored_fingerprint != fingerprint:
        logger.info("feature cache %s is stale (model or data changed); recomputing", path)
        return None
    logger.info("feature cache hit: %s (%d × %d)", path, features.shape[0], features.shape[1])
    return features, labels


def _default_device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _default_dtype(module: nn.Module) -> torch.dtype:
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


# --------------------------------------------------------------------------------------------
# extraction


def extract_features(extractor: nn.Module, data: Any, *, batch_size: int = 256,
                     device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                     progress: bool = True, cache: str | os.PathLike | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features of every sample in ``data``: ``(Z, y)`` with ``Z`` a float32 CPU tensor (N, D)
    and ``y`` the labels (CPU, as given) or ``None`` when the data has none.

    Parameters
    ----------
    extractor:
        A :class:`FeatureExtractor` (or any module whose output is the features; flattened).
        It runs in eval mode under ``torch.no_grad``; the train/eval flag of every submodule
        is restored afterwards.
    data:
        A tensor or array ``X`` of shape (N, ...); a tuple ``(X, y)``; a map-style torch
        ``Dataset`` yielding ``(x, y)`` or ``x``; or a ``DataLoader`` (its own batching is
        used, ``batch_size`` is ignored) — any form :class:`~convexrobust.inputs.DataSource`
        takes.
    batch_size:
        Samples per forward pass for tensors and Datasets.
    device:
        Where the extractor runs; default: the device of its parameters. If the extractor
        lives elsewhere it is moved there for the call and moved back afterwards.
    dtype:
        Floating dtype the inputs are cast to; default: that of the extractor's parameters.
    progress:
        Show a tqdm bar (it stays quiet when stderr is not a terminal).
    cache:
        A file path. If it holds features whose fingerprint matches (the extractor's state
        dict and ``feature_module``, the data's shape and a cheap checksum of it), they are
        loaded and the extractor is not run; otherwise they are computed and written
        atomically, replacing a stale file.

    Raises
    ------
    InvalidInputError
        Empty data, NaN/inf in the inputs or the features, an unsupported data form or
        dtype, mismatched lengths of inputs and labels, inputs the extractor cannot take, or an
        unusable ``device``.
    """
    if not isinstance(extractor, nn.Module):
        raise InvalidInputError(
            f"extractor must be a torch.nn.Module (e.g. FeatureExtractor(model)), "
            f"got {type(extractor).__name__}")
    source = DataSource.of(data, batch_size=batch_size, min_ndim=2)
    if device is not None:
        device = check_device(device)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InvalidInputError(f"dtype must be a floating torch dtype, got {dtype!r}")

    fingerprint = None
    if cache is not None:
        cache = Path(cache)
        fingerprint = _fingerprint(extractor, source)
        hit = _load_cache(cache, fingerprint)
        if hit is not None:
            return hit

    features, labels = _compute(extractor, source, device=device, dtype=dtype,
                                progress=progress)

    if cache is not None:
        payload = {"format": _CACHE_FORMAT, "fingerprint": fingerprint, "features": features,
                   "labels": labels}
        write_atomic(cache, lambda tmp: torch.save(payload, tmp))
        logger.info("feature cache written: %s (%d × %d)", cache, *features.shape)
    return features, labels


def _compute(extractor: nn.Module, source: DataSource, *, device: str | torch.device | None,
             dtype: torch.dtype | None, progress: bool
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
    home = _default_device(extractor)
    device = home if device is None else torch.device(device)
    dtype = _default_dtype(extractor) if dtype is None else dtype
    moved = device != home
    modes = {module: module.training for module in extractor.modules()}
    feature_batches: list[torch.Tensor] = []
    label_batches: list[torch.Tensor] = []
    seen = 0
    try:
        if moved:
            logger.debug("moving the extractor from %s to %s for extraction", home, device)
            extractor.to(device)
        extractor.eval()
        bar = tqdm(total=source.size(), desc="features", unit="sample",
                   disable=None if progress else True)
        with bar, torch.no_grad():
            for x, y in source.batches(dtype=dtype, device=device):
                z = apply_model(extractor, x, "the extractor")
                if not isinstance(z, torch.Tensor):
                    raise InvalidInputError(
                        f"the extractor returned a {type(z).__name__}, not a tensor")
                z = z.reshape(z.shape[0], -1) if z.dim() != 2 else z
                if z.shape[0] != x.shape[0]:
                    raise InvalidInputError(
                        f"the extractor mapped {x.shape[0]} samples to {z.shape[0]} rows")
                if not torch.isfinite(z).all():
                    raise InvalidInputError(
                        f"features contain NaN or inf (in samples {seen}–{seen + len(x) - 1}): "
                        "the model diverges on these inputs; check its weights and the input "
                        "scaling")
                feature_batches.append(z.detach().to("cpu", torch.float32))
                if (y is None) != (not label_batches) and seen:
                    raise InvalidInputError("some batches have labels and others do not")
                if y is not None:
                    if y.shape[0] != x.shape[0]:
                        raise InvalidInputError(
                            f"a batch has {x.shape[0]} inputs but {y.shape[0]} labels")
                    label_batches.append(y.detach().to("cpu"))
                seen += x.shape[0]
                bar.update(x.shape[0])
    finally:
        if moved:
            extractor.to(home)
        for module, training in modes.items():
            module.train(training)
    if seen == 0:
        raise InvalidInputError("data is empty (0 samples)")
    features = torch.cat(feature_batches)
    labels = torch.cat(label_batches) if label_batches else None
    return features, labels
