""":class:`RobustModel`: a feature extractor, a feature normalisation and a convex-trained
two-layer head, ``x ↦ g(V(h(x) − c)/s)``; its certificates in input space; save and load.

Composition (MATH.md §5): with a guaranteed ``‖h(x) − h(x')‖₂ ≤ K_h ‖x − x'‖₂`` the normalised
feature map has ``K = K_h ‖V‖₂ / s`` (:class:`~convexrobust.feature_map.FeatureNormalization`),
and a head certified at feature radius ``R(z)`` (ℓ2) certifies the whole model at input radius
``R(z)/c`` with ``c = K`` for ℓ2 and ℓ1 (``‖δ‖₂ ≤ ‖δ‖₁``) and ``c = K√D`` for ℓ∞
(``‖δ‖₂ ≤ √D‖δ‖_∞``, ``D`` input coordinates) — :func:`input_radius_factor`. Without a bound the
model is empirical only: :attr:`RobustModel.certifiable` is False and
:meth:`RobustModel.certified_radius` raises
:class:`~convexrobust.errors.CertificateUnavailableError`.

File format ``convexrobust.RobustModel/1`` (one ``torch.save`` of a dict, written atomically):
``format``, ``extractor`` (:func:`extractor_to_dict`), ``head``, ``center``, ``projection``,
``scale``, ``threat``, ``feature_lipschitz``, ``input_shape``, ``info``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convexrobust._io import read_torch, write_atomic
from convexrobust._validation import check_device
from convexrobust.certify import certified_radius
from convexrobust.errors import CertificateUnavailableError, InvalidInputError
from convexrobust.feature_map import FeatureNormalization
from convexrobust.features import FeatureExtractor, IdentityFeatures
from convexrobust.inputs import as_tensor, class_indices
from convexrobust.networks.registry import (
    TorchScriptNetwork,
    architecture_name,
    build_network,
    load_torchscript,
    network_to_dict,
    torchscript_bytes,
)
from convexrobust.networks.two_layer import (
    TwoLayerGatedReLU,
    TwoLayerPolynomial,
    TwoLayerReLU,
    head_from_dict,
    head_to_dict,
)
from convexrobust.threat import ThreatModel

__all__ = ["FORMAT", "RobustModel", "extractor_from_dict", "extractor_to_dict",
           "input_radius_factor", "is_robust_model_file"]

#: The ``format`` tag of a saved RobustModel.
FORMAT = "convexrobust.RobustModel/1"


def input_radius_factor(lipschitz: float | None, norm: float | str,
                        input_shape: tuple[int, ...]) -> float:
    """MATH.md §5: with a guaranteed ℓ2 bound ``K`` of the (normalised) feature map, a
    feature-space ℓ2 certificate ``R`` certifies input radius ``R/c`` with ``c = K`` for ℓ2 and
    ℓ1 (``‖δ‖₂ ≤ ‖δ‖₁``) and ``c = K·√D`` for ℓ∞ (``‖δ‖₂ ≤ √D‖δ‖_∞``, ``D`` input
    coordinates)."""
    if lipschitz is None:
        raise CertificateUnavailableError(
            "this model has no guaranteed Lipschitz bound for its feature map, so it cannot be "
            "certified; retrain with lipschitz=K (a guaranteed l2 bound of the features) or "
            "evaluate it empirically (attacks only)")
    p = ThreatModel(norm, 0.0).norm
    dims = int(np.prod(input_shape))
    return lipschitz * (math.sqrt(dims) if p == math.inf else 1.0)


def extractor_to_dict(extractor: FeatureExtractor) -> dict:
    """A serialisable description of ``extractor``, by kind (each with ``"feature_module"``):

    * a registered architecture (:data:`~convexrobust.networks.registry.ARCHITECTURES`):
      ``{"kind": <its name>, "config", "state_dict"}``;
    * ``"identity"`` (:class:`~convexrobust.features.IdentityFeatures`): nothing more;
    * ``"torchscript"`` (a :class:`~convexrobust.networks.registry.TorchScriptNetwork` or a bare
      ``torch.jit.ScriptModule``): ``"archive"``, the bytes ``torch.jit.save`` writes;
    * ``"module"``, anything else: the pickled ``"module"`` (loading it needs
      ``trust_pickle``)."""
    model = extractor.model
    kind = architecture_name(model)
    spec: dict = {"feature_module": extractor.feature_module}
    if kind is not None:
        stored = network_to_dict(model)
        return {"kind": kind, "config": stored["config"], "state_dict": stored["state_dict"],
                **spec}
    if type(model) is IdentityFeatures:
        return {"kind": "identity", **spec}
    script = model.script if isinstance(model, TorchScriptNetwork) else model
    if isinstance(script, torch.jit.ScriptModule):
        return {"kind": "torchscript", "archive": torchscript_bytes(script), **spec}
    return {"kind": "module", "module": model, **spec}


def extractor_from_dict(spec: Mapping) -> FeatureExtractor:
    """Inverse of :func:`extractor_to_dict` (in eval mode, on the CPU); a TorchScript extractor
    comes back as a :class:`~convexrobust.networks.registry.TorchScriptNetwork`."""
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise InvalidInputError("the file's extractor entry is not an extractor description")
    if spec["kind"] == "module":
        model = spec.get("module")
        if not isinstance(model, nn.Module):
            raise InvalidInputError("the file's pickled extractor is not an nn.Module")
    elif spec["kind"] == "identity":
        model = IdentityFeatures()
    elif spec["kind"] == "torchscript":
        model = TorchScriptNetwork(_load_script(spec.get("archive")))
    else:
        model = build_network(spec["kind"], spec.get("config", {}), spec.get("state_dict"))
    return FeatureExtractor(model.eval(), spec.get("feature_module"))


def _load_script(archive: object) -> torch.jit.ScriptModule:
    """The ScriptModule of ``torch.jit.save`` bytes, on the CPU."""
    if not isinstance(archive, bytes):
        raise InvalidInputError("the file's TorchScript extractor holds no archive bytes: the "
                                "file is damaged; save the model again")
    try:
        return load_torchscript(archive)
    except RuntimeError as err:
        raise InvalidInputError(f"the file's TorchScript extractor does not load "
                                f"({str(err).splitlines()[0][:200]}): the file is damaged; "
                                "save the model again") from None


class RobustModel(nn.Module):
    """A feature extractor followed by a convex-trained two-layer head: ``g(V(h(x) − c)/s)``.

    Attributes
    ----------
    extractor:
        The :class:`~convexrobust.features.FeatureExtractor` ``h`` (its weights are frozen).
    normalization:
        The :class:`~convexrobust.feature_map.FeatureNormalization` ``z ↦ V(z − c)/s``
        (``center``, ``scale``, ``projection`` and ``projection_norm`` are its attributes).
    head:
        :class:`~convexrobust.TwoLayerPolynomial` or :class:`~convexrobust.TwoLayerReLU`.
    threat:
        The input-space threat the head was trained for.
    feature_lipschitz:
        The guaranteed ℓ2 bound ``K_h`` of ``h``, or None when the model is empirical only.
    input_shape:
        The shape of one input sample (``D = prod(input_shape)`` in the ℓ∞ conversion).
    info:
        What the retraining did: the chosen hyper-parameters, every validation candidate,
        the feature radius, timings.
    """

    def __init__(self, extractor: FeatureExtractor, head: TwoLayerPolynomial | TwoLayerReLU, *,
                 center: torch.Tensor, scale: float, threat: ThreatModel,
                 feature_lipschitz: float | None, input_shape: tuple[int, ...],
                 projection: torch.Tensor | None = None, info: dict | None = None):
        super().__init__()
        if not isinstance(extractor, FeatureExtractor):
            raise InvalidInputError("extractor must be a FeatureExtractor")
        if not isinstance(threat, ThreatModel):
            raise InvalidInputError(f"threat must be a ThreatModel, got {threat!r}")
        self.extractor = extractor
        self.head = head
        self.normalization = FeatureNormalization(center, scale, projection)
        self.threat = threat
        self.feature_lipschitz = None if feature_lipschitz is None else float(feature_lipschitz)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.info = dict(info or {})
        self.extractor.requires_grad_(False)

    # ------------------------------------------------------------------ normalisation
    @property
    def center(self) -> torch.Tensor:
        """``c``, the feature centre (float64)."""
        return self.normalization.center

    @property
    def projection(self) -> torch.Tensor:
        """``V``, the projection (k, D) with orthonormal rows (float64)."""
        return self.normalization.projection

    @property
    def scale(self) -> float:
        """``s``, the feature scale."""
        return self.normalization.scale

    @property
    def projection_norm(self) -> float:
        """``‖V‖₂`` in float64."""
        return self.normalization.projection_norm

    # ------------------------------------------------------------------ model
    @property
    def certifiable(self) -> bool:
        """Whether :meth:`certified_radius` can give certificates: a guaranteed ``K_h`` and a
        head that has them (a gated ReLU head never does)."""
        return self.feature_lipschitz is not None and not isinstance(self.head,
                                                                     TwoLayerGatedReLU)

    @property
    def lipschitz(self) -> float | None:
        """Guaranteed ℓ2 bound of ``x ↦ V(h(x) − c)/s``: ``K_h ‖V‖₂ / s``."""
        if self.feature_lipschitz is None:
            return None
        return self.feature_lipschitz * self.normalization.lipschitz_factor

    def normalized_features(self, x: torch.Tensor) -> torch.Tensor:
        """``V(h(x) − c)/s`` in the head's dtype: the head's input."""
        return self.normalization(self.extractor(x)).to(self.head.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.normalized_features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices (``1[f > 0]`` for a single output, else ``argmax``)."""
        return self.head.predict(self.normalized_features(x))

    # ------------------------------------------------------------------ certificates
    def input_radius_factor(self, norm: float | str) -> float:
        """``c`` such that a feature-space ℓ2 certificate ``R`` certifies input radius ``R/c``
        in ``norm`` (:func:`input_radius_factor`)."""
        return input_radius_factor(self.lipschitz, norm, self.input_shape)

    @torch.no_grad()
    def certified_radius(self, x: torch.Tensor, y: object, norm: float | str | None = None,
                         *, batch_size: int = 512) -> torch.Tensor:
        """Per-point certified radius in INPUT space in ``norm`` (default: the threat's), 0 where
        the prediction is wrong or nothing is certified: no perturbation with ``‖δ‖ < radius``
        changes the prediction. ``x`` is cast to the extractor's dtype. float64, on the
        CPU."""
        factor = self.input_radius_factor(self.threat.norm if norm is None else norm)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        x = as_tensor(x, "x")
        if x.dim() == 0:
            raise InvalidInputError("x must have shape (N, ...) with N samples")
        labels = class_indices(y, x.shape[0])
        x = x.to(self._input_dtype())
        if not bool(torch.isfinite(x).all()):
            raise InvalidInputError("x contains NaN or inf: clean or impute the data first")
        device = self.center.device
        radii = []
        for start in range(0, x.shape[0], batch_size):
            z = self.normalized_features(x[start:start + batch_size].to(device))
            part = certified_radius(self.head, z, labels[start:start + batch_size], 2)
            radii.append(torch.as_tensor(part.radius))
        return torch.cat(radii) / factor if radii else torch.zeros(0, dtype=torch.float64)

    def _input_dtype(self) -> torch.dtype:
        """The floating dtype of the extractor's weights (inputs are cast to it); float64, the
        normalisation's, for an extractor without weights (such as the identity)."""
        for t in (*self.extractor.parameters(), *self.extractor.buffers()):
            if t.is_floating_point():
                return t.dtype
        return self.center.dtype

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Extractor, head, normalisation and metadata in one file (format :data:`FORMAT`),
        written atomically."""
        payload = {
            "format": FORMAT,
            "extractor": extractor_to_dict(self.extractor),
            "head": head_to_dict(self.head),
            "center": self.center.cpu(),
            "projection": self.projection.cpu(),
            "scale": self.scale,
            "threat": {"norm": self.threat.norm, "eps": self.threat.eps},
            "feature_lipschitz": self.feature_lipschitz,
            "input_shape": list(self.input_shape),
            "info": json.loads(json.dumps(self.info, default=str)),
        }
        write_atomic(path, lambda tmp: torch.save(payload, tmp))

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device | None = "cpu",
             *, trust_pickle: bool = False) -> RobustModel:
        """A model written by :meth:`save`. Extractors of registered architectures
        (:data:`~convexrobust.networks.registry.ARCHITECTURES`), the identity and TorchScript
        networks load without unpickling anything; an arbitrary ``nn.Module`` was pickled and
        needs ``trust_pickle=True`` (unpickling runs code: only load files you trust)."""
        target = None
        if isinstance(map_location, (str, torch.device)):
            map_location = target = check_device(map_location)
        path = Path(path)
        stored = read_torch(path, what="RobustModel", map_location=map_location,
                            weights_only=not trust_pickle)
        if not is_robust_model_file(stored):
            raise InvalidInputError(f"{path} is not a RobustModel file (format {FORMAT})")
        try:
            threat = ThreatModel(stored["threat"]["norm"], stored["threat"]["eps"])
            model = cls(extractor_from_dict(stored["extractor"]),
                        head_from_dict(stored["head"]), center=stored["center"],
                        projection=stored["projection"], scale=stored["scale"], threat=threat,
                        feature_lipschitz=stored["feature_lipschitz"],
                        input_shape=tuple(stored["input_shape"]), info=stored["info"])
        except (KeyError, TypeError) as err:
            raise InvalidInputError(f"{path} is a damaged RobustModel file "
                                    f"({type(err).__name__}: {err})") from None
        return model.to(target).eval() if target is not None else model.eval()


def is_robust_model_file(stored: object) -> bool:
    """Whether a loaded file's content is a RobustModel (format :data:`FORMAT`)."""
    return isinstance(stored, Mapping) and stored.get("format") == FORMAT
