"""Retrain the last two layers of a pretrained network with a convex robust head.

Given a network, the *feature map* ``h`` is everything before its last two layers (for a
:class:`~convexrobust.LiResNet` its ``features``; for any ``nn.Module`` the input of a named
module, :class:`~convexrobust.features.FeatureExtractor`). The last two layers are replaced by a
two-layer head ``g`` trained by a convex robust program (MATH.md §1–4) on
``z = V(h(x) − c)/s``: a fixed centring ``c``, one scalar scale ``s`` (so the programs see
features of unit size) and optionally the projection ``V`` on the top ``components`` principal
directions of the training features (orthonormal rows — it keeps the SDP of a polynomial head
small and costs nothing in the bound). The result is ``g(V(h(x) − c)/s)``.

Composition (MATH.md §5): with a guaranteed ``‖h(x) − h(x')‖₂ ≤ K_h ‖x − x'‖₂`` the
normalised feature map has ``K = K_h ‖V‖₂ / s`` (``‖V‖₂`` computed in float64, 1 up to
round-off). The head is trained at the ℓ2 feature radius ``r = K·ε`` (``r = K·√D·ε`` for an ℓ∞
input threat, since ``‖δ‖₂ ≤ √D ‖δ‖_∞`` for ``D`` input coordinates), and a head certified at
feature radius ``R(z)`` certifies the whole model at input radius ``R(z)/K`` (ℓ2) or
``R(z)/(K√D)`` (ℓ∞). Without a bound the feature radius is a parameter, the head is trained
against the threat's own norm in feature space, and the model is only evaluated empirically:
:attr:`RobustModel.certifiable` is False and :meth:`RobustModel.certified_radius` raises
:class:`CertificateUnavailableError`.

Model selection: the hyper-parameters (``beta``, the radius scale, ``n_patterns`` for ReLU heads)
are chosen on a validation split — never on test data — by certified validation accuracy at ε
when the model is certifiable, else by the head's PGD accuracy at the feature radius; ties go to
the clean validation accuracy, then to the earlier candidate of the grid.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from convexrobust._io import write_atomic
from convexrobust._validation import check_choice, check_positive
from convexrobust.attacks import margin, pgd_attack
from convexrobust.certify import certified_radius
from convexrobust.errors import (
    CertificateUnavailableError,
    InvalidInputError,
    SolverFailedError,
)
from convexrobust.features import FeatureExtractor, extract_features
from convexrobust.networks.liresnet import LiResNet
from convexrobust.networks.preact_resnet import PreActResNet18
from convexrobust.networks.two_layer import (
    TwoLayerPolynomial,
    TwoLayerReLU,
    head_from_dict,
    head_to_dict,
)
from convexrobust.problems.base import ConvexProgram
from convexrobust.problems.polynomial import ConvexPolynomial
from convexrobust.problems.relu import ConvexReLU
from convexrobust.solvers import AUTO_CLARABEL_MAX_VARIABLES, solve
from convexrobust.threat import ThreatModel

__all__ = ["DEFAULT_GRID", "RobustModel", "pgd_trained_head", "retrain_last_two_layers"]

log = logging.getLogger(__name__)

#: Hyper-parameter grid searched on the validation split (override with ``grid=``).
#: ``radius_scale`` multiplies the feature radius ``K·ε`` (certifiable models) or the given
#: ``feature_radius``; training at a larger radius can certify more points at ε.
DEFAULT_GRID: dict[str, tuple] = {
    "beta": (1e-3, 1e-2),
    "radius_scale": (1.0, 2.0),
    "n_patterns": (50,),
}
_FORMAT = "convexrobust.RobustModel/1"


class RobustModel(nn.Module):
    """A feature extractor followed by a convex-trained two-layer head: ``g((h(x) − c)/s)``.

    Attributes
    ----------
    extractor:
        The :class:`~convexrobust.features.FeatureExtractor` ``h`` (its weights are frozen).
    head:
        :class:`~convexrobust.TwoLayerPolynomial` or :class:`~convexrobust.TwoLayerReLU`.
    threat:
        The input-space threat the head was trained for.
    feature_lipschitz:
        The guaranteed ℓ2 bound ``K_h`` of ``h``, or None when the model is empirical only.
    info:
        What the retraining did: the chosen hyper-parameters, every validation candidate,
        the feature radius, timings.
    """

    def __init__(self, extractor: FeatureExtractor, head: TwoLayerPolynomial | TwoLayerReLU, *,
                 center: torch.Tensor, scale: float, threat: ThreatModel,
                 feature_lipschitz: float | None, input_shape: tuple[int, ...],
                 projection: torch.Tensor | None = None, info: dict | None = None):
        super().__init__()
        self.extractor = extractor
        self.head = head
        center = torch.as_tensor(center, dtype=torch.float64)
        self.register_buffer("center", center.clone())
        if projection is None:
            projection = torch.eye(center.shape[0], dtype=torch.float64)
        self.register_buffer("projection", torch.as_tensor(projection, dtype=torch.float64))
        self.projection_norm = float(torch.linalg.matrix_norm(self.projection.cpu(), 2))
        self.scale = float(scale)
        self.threat = threat
        self.feature_lipschitz = None if feature_lipschitz is None else float(feature_lipschitz)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.info = dict(info or {})
        self.extractor.requires_grad_(False)

    # ------------------------------------------------------------------ model
    @property
    def certifiable(self) -> bool:
        """Whether :meth:`certified_radius` can give certificates (a guaranteed ``K_h``)."""
        return self.feature_lipschitz is not None

    @property
    def lipschitz(self) -> float | None:
        """Guaranteed ℓ2 bound of ``x ↦ V(h(x) − c)/s``: ``K_h ‖V‖₂ / s``."""
        if self.feature_lipschitz is None:
            return None
        return self.feature_lipschitz * self.projection_norm / self.scale

    def normalized_features(self, x: torch.Tensor) -> torch.Tensor:
        """``V(h(x) − c)/s`` in the head's dtype: the head's input."""
        z = self.extractor(x).to(self.center.dtype)
        return ((z - self.center) / self.scale @ self.projection.T).to(self.head.weight.dtype)

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
        changes the prediction. float64, on the CPU."""
        factor = self.input_radius_factor(self.threat.norm if norm is None else norm)
        x = torch.as_tensor(x)
        labels = torch.as_tensor(np.asarray(y)).reshape(-1)
        if labels.shape[0] != x.shape[0]:
            raise InvalidInputError(
                f"x has {x.shape[0]} samples but y has {labels.shape[0]} labels")
        device = self.center.device
        radii = []
        for start in range(0, x.shape[0], batch_size):
            z = self.normalized_features(x[start:start + batch_size].to(device))
            part = certified_radius(self.head, z, labels[start:start + batch_size], 2)
            radii.append(torch.as_tensor(part.radius))
        return torch.cat(radii) / factor if radii else torch.zeros(0, dtype=torch.float64)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Extractor, head, scaling and metadata in one file, written atomically."""
        payload = {
            "format": _FORMAT,
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
        """A model written by :meth:`save`. Extractors of known architectures (LiResNet,
        PreActResNet18) load from weights only; an arbitrary ``nn.Module`` was pickled and needs
        ``trust_pickle=True`` (unpickling runs code: only load files you trust)."""
        path = Path(path)
        if not path.is_file():
            raise InvalidInputError(f"no model file at {path}")
        try:
            stored = torch.load(path, map_location=map_location, weights_only=not trust_pickle)
        except Exception as err:  # noqa: BLE001 - torch raises several types here
            raise InvalidInputError(
                f"cannot read {path} as a RobustModel ({type(err).__name__}: {err}); if it "
                "holds a custom extractor module, pass trust_pickle=True") from None
        if not isinstance(stored, dict) or stored.get("format") != _FORMAT:
            raise InvalidInputError(f"{path} is not a RobustModel file (format {_FORMAT})")
        threat = ThreatModel(stored["threat"]["norm"], stored["threat"]["eps"])
        model = cls(extractor_from_dict(stored["extractor"]),
                    head_from_dict(stored["head"]), center=stored["center"],
                    projection=stored["projection"], scale=stored["scale"], threat=threat,
                    feature_lipschitz=stored["feature_lipschitz"],
                    input_shape=tuple(stored["input_shape"]), info=stored["info"])
        return model.to(map_location).eval() if map_location is not None else model.eval()


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


_KNOWN_ARCHITECTURES = {"LiResNet": LiResNet, "PreActResNet18": PreActResNet18}


def extractor_to_dict(extractor: FeatureExtractor) -> dict:
    """A serialisable description of ``extractor``: config and weights for the architectures
    convexrobust defines, the pickled module for anything else."""
    model = extractor.model
    kind = type(model).__name__
    if _KNOWN_ARCHITECTURES.get(kind) is type(model):
        return {"kind": kind, "config": dict(model.config), "feature_module":
                extractor.feature_module, "state_dict": model.state_dict()}
    return {"kind": "module", "module": model, "feature_module": extractor.feature_module}


def extractor_from_dict(spec: dict) -> FeatureExtractor:
    """Inverse of :func:`extractor_to_dict`."""
    if spec["kind"] == "module":
        model = spec["module"]
    else:
        config = dict(spec["config"])
        cls = _KNOWN_ARCHITECTURES[spec["kind"]]
        model = cls(**config)
        model.load_state_dict(spec["state_dict"])
    return FeatureExtractor(model.eval(), spec["feature_module"])


# ---------------------------------------------------------------------- retraining
def retrain_last_two_layers(
    model: nn.Module,
    train_data: object,
    *,
    head: str = "polynomial",
    threat: ThreatModel,
    solver: str = "auto",
    lipschitz: str | float | None = "auto",
    feature_module: str | None = None,
    feature_radius: float | None = None,
    validation: float | object = 0.2,
    grid: Mapping[str, tuple] | None = None,
    components: int | None = None,
    loss: str = "hinge",
    refit: bool = False,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    cache: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    solver_options: Mapping[str, object] | None = None,
    **program_options: object,
) -> RobustModel:
    """Replace the last two layers of ``model`` by a convex robust two-layer head.

    Parameters
    ----------
    model:
        A :class:`~convexrobust.LiResNet` (its ``features`` and guaranteed bound are used), a
        model with a ``features`` method, or any ``nn.Module`` with ``feature_module`` naming
        the module whose input is the feature (e.g. ``"fc1"``).
    train_data:
        ``(X, y)`` tensors/arrays, a ``Dataset`` or a ``DataLoader`` of ``(x, y)``; labels are
        class indices ``0..C−1``.
    head:
        ``"polynomial"`` (program c/d, exact ℓ2 certificates) or ``"relu"`` (program a/b).
    threat:
        The input-space threat, ``cr.L2(ε)`` or ``cr.Linf(ε)``.
    solver:
        ``"auto"`` (the conic ``auto`` for small programs — at most
        ``AUTO_CLARABEL_MAX_VARIABLES`` unknowns and ``AUTO_CONIC_MAX_CONSTRAINT_BLOCKS``
        samples × outputs — else ``"torch"``), ``"torch"`` or a conic name.
    lipschitz:
        ``"auto"`` (the extractor's guaranteed bound if it has one, else empirical only), a
        guaranteed ℓ2 bound ``K_h`` you vouch for, or None (empirical only).
    feature_radius:
        The head's training radius in raw feature space when there is no bound (required then;
        an error when a bound is used, since the radius follows from ``K·ε``).
    validation:
        A fraction of ``train_data`` held out (stratified, seeded) or separate ``(X, y)`` data
        for model selection.
    grid:
        Candidate values for ``beta``, ``radius_scale`` and (ReLU) ``n_patterns``; missing keys
        take :data:`DEFAULT_GRID`'s values.
    components:
        Project the normalised features on their top principal directions (of the training
        split) before the head; None keeps all of them. Polynomial heads solve one
        ``(k+1)×(k+1)`` SDP block per class and output, so ``k`` ≲ 32 keeps them fast.
    refit:
        Retrain the chosen configuration on training + validation data.
    cache:
        A directory where extracted features are cached (keyed by model and data).
    solver_options:
        Passed to :func:`~convexrobust.solve`. Torch solves default to ``tol=1e-3`` and
        ``accept_inaccurate=True`` (the status is recorded per candidate): the certificate is
        computed on the returned network, so an inexact solve costs optimality, never
        soundness.
    program_options:
        Passed to :class:`~convexrobust.ConvexPolynomial` / :class:`~convexrobust.ConvexReLU`.
    """
    head = check_choice(head, "head", ("polynomial", "relu"))
    if not isinstance(threat, ThreatModel):
        raise InvalidInputError(f"threat must be cr.L2(eps) or cr.Linf(eps), got {threat!r}")
    if threat.norm not in (2.0, math.inf):
        raise InvalidInputError("retrain_last_two_layers takes an L2 or Linf threat")
    grid = _check_grid(grid, head)
    extractor = FeatureExtractor(model, feature_module)
    bound = _feature_bound(extractor, lipschitz, feature_radius)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    cache_dir = None if cache is None else Path(cache)
    z_all, y_all, input_shape = _features(extractor, train_data, "train", batch_size, device,
                                          progress, cache_dir)
    z_tr, y_tr, z_val, y_val = _validation_split(extractor, z_all, y_all, validation, seed,
                                                 batch_size, device, progress, cache_dir)
    timings["features"] = time.perf_counter() - start
    center = z_tr.mean(dim=0)
    scale = float(torch.sqrt((z_tr - center).square().sum(dim=1).mean() / z_tr.shape[1]))
    if not scale > 0:
        raise InvalidInputError("the training features are constant; nothing to learn from")
    projection = _principal_directions((z_tr - center) / scale, components)
    norm_tr = (z_tr - center) / scale @ projection.T
    norm_val = (z_val - center) / scale @ projection.T
    projection_norm = float(torch.linalg.matrix_norm(projection, 2))
    factor = None if bound is None else input_radius_factor(
        bound * projection_norm / scale, threat.norm, input_shape)
    if factor is not None:
        base_radius = threat.eps * factor
        head_norm = 2.0
    else:
        base_radius = float(feature_radius) / scale  # type: ignore[arg-type]
        head_norm = threat.norm
    solver_options = dict(solver_options or {})

    candidates: list[dict] = []
    best: tuple | None = None
    combos = list(itertools.product(*(grid[k] for k in grid)))
    bar = tqdm(combos, desc=f"{head} head", disable=None if progress else True, unit="fit")
    for values in bar:
        params = dict(zip(grid, values, strict=True))
        radius = base_radius * params["radius_scale"]
        bar.set_postfix(beta=params["beta"], radius=f"{radius:.3g}")
        record = {**params, "feature_radius": radius}
        t0 = time.perf_counter()
        try:
            program = _program(head, norm_tr, y_tr, params, radius, head_norm, loss, seed,
                               program_options)
            solution = _solve(program, solver, solver_options)
        except SolverFailedError as err:
            record.update(status=f"failed: {err.status}", solve_time=time.perf_counter() - t0)
            log.warning("candidate %s failed: %s", params, err)
            candidates.append(record)
            continue
        net = solution.network()
        record.update(status=solution.status, solver=solution.solver,
                      solve_time=time.perf_counter() - t0, objective=solution.objective,
                      violation=solution.violation, neurons=net.n_neurons)
        record.update(_validation_scores(net, norm_val, y_val, threat, factor, radius,
                                         head_norm, seed))
        candidates.append(record)
        key = (record["val_robust"], record["val_clean"])
        if best is None or key > best[0]:
            best = (key, params, net, program, record)
    bar.close()
    if best is None:
        raise SolverFailedError(
            "every candidate head failed to solve: " + "; ".join(
                f"{c['beta']}/{c['radius_scale']}: {c['status']}" for c in candidates),
            status="failed", solver=solver)
    _, params, net, program, chosen = best
    timings["select"] = time.perf_counter() - start - timings["features"]
    if refit and len(z_val):
        t0 = time.perf_counter()
        z_full = torch.cat([norm_tr, norm_val])
        y_full = torch.cat([y_tr, y_val])
        program = _program(head, z_full, y_full, params, chosen["feature_radius"], head_norm,
                           loss, seed, program_options)
        net = _solve(program, solver, solver_options).network()
        timings["refit"] = time.perf_counter() - t0
    info = {
        "head": head, "loss": loss, "threat": threat.name,
        "certified": bound is not None, "feature_lipschitz": bound,
        "feature_scale": scale, "feature_dim": int(z_tr.shape[1]),
        "components": int(projection.shape[0]),
        "feature_radius": chosen["feature_radius"], "chosen": params,
        "candidates": candidates, "n_train": int(len(y_tr)), "n_validation": int(len(y_val)),
        "refit": bool(refit), "times": timings,
    }
    log.info("retrained %s head: chose %s (validation robust %.3f, clean %.3f)", head, params,
             chosen["val_robust"], chosen["val_clean"])
    return RobustModel(extractor, net, center=center, scale=scale, projection=projection,
                       threat=threat, feature_lipschitz=bound, input_shape=input_shape,
                       info=info).eval()


def pgd_trained_head(like: RobustModel, train_data: object, *, hidden: int | None = None,
                     validation: float | object = 0.2, epochs: int = 30,
                     batch_size: int = 256, device: torch.device | str | None = None,
                     cache: str | Path | None = None, seed: int = 0, progress: bool = True
                     ) -> RobustModel:
    """The non-convex baseline of a convex head: the same extractor, normalisation and feature
    radius as ``like`` (a model from :func:`retrain_last_two_layers`, same ``validation`` and
    ``seed`` so the splits agree), and a two-layer ReLU head of ``hidden`` neurons (default:
    as many as ``like``'s head) trained by PGD adversarial training in feature space with the
    learning rate tuned on the validation split
    (:func:`~convexrobust.baselines.train_pgd_head`). Its certificates, where ``like`` has
    them, are the sound ReLU-head bounds of :func:`~convexrobust.certified_radius`."""
    from convexrobust.baselines import train_pgd_head

    if not isinstance(like, RobustModel):
        raise InvalidInputError("like must be a RobustModel from retrain_last_two_layers")
    start = time.perf_counter()
    cache_dir = None if cache is None else Path(cache)
    z, y, _ = _features(like.extractor, train_data, "train", batch_size, device, progress,
                        cache_dir)
    z_tr, y_tr, z_val, y_val = _validation_split(like.extractor, z, y, validation, seed,
                                                 batch_size, device, progress, cache_dir)

    def normalise(feats: torch.Tensor) -> torch.Tensor:
        center, projection = like.center.cpu(), like.projection.cpu()
        return (feats - center) / like.scale @ projection.T

    radius = float(like.info["feature_radius"])
    norm = 2.0 if like.certifiable else like.threat.norm
    result = train_pgd_head(normalise(z_tr), y_tr, radius=radius, norm=norm,
                            hidden=hidden or like.head.n_neurons, epochs=epochs,
                            validation=(normalise(z_val), y_val), seed=seed, device=device,
                            progress=progress)
    info = {"head": "pgd-relu", "threat": like.threat.name, "certified": like.certifiable,
            "feature_radius": radius, "chosen": {"lr": result.lr},
            "val_robust": result.validation_robust_accuracy,
            "val_clean": result.validation_clean_accuracy, "components": like.info.get(
                "components"), "times": {"total": time.perf_counter() - start}}
    return RobustModel(like.extractor, result.network.cpu(), center=like.center.cpu(),
                       scale=like.scale, projection=like.projection.cpu(), threat=like.threat,
                       feature_lipschitz=like.feature_lipschitz, input_shape=like.input_shape,
                       info=info).eval()


def _check_grid(grid: Mapping[str, tuple] | None, head: str) -> dict[str, tuple]:
    out = dict(DEFAULT_GRID)
    if grid is not None:
        unknown = set(grid) - set(DEFAULT_GRID)
        if unknown:
            raise InvalidInputError(
                f"unknown grid key(s) {sorted(unknown)}; use {sorted(DEFAULT_GRID)}")
        out.update({k: tuple(v) if np.iterable(v) else (v,) for k, v in grid.items()})
    for key, values in out.items():
        if not values:
            raise InvalidInputError(f"grid[{key!r}] is empty")
        for v in values:
            check_positive(v, f"grid[{key!r}] value", allow_zero=key == "beta")
    if head == "polynomial":
        out["n_patterns"] = (None,)
    return out


def _feature_bound(extractor: FeatureExtractor, lipschitz: str | float | None,
                   feature_radius: float | None) -> float | None:
    if isinstance(lipschitz, str):
        if lipschitz != "auto":
            raise InvalidInputError(f"lipschitz must be 'auto', a number or None, got "
                                    f"{lipschitz!r}")
        bound = extractor.lipschitz_bound()
    elif lipschitz is None:
        bound = None
    else:
        bound = check_positive(lipschitz, "lipschitz", allow_zero=False)
    if bound is None and feature_radius is None:
        raise InvalidInputError(
            "no guaranteed Lipschitz bound for this feature map: pass lipschitz=K (a guaranteed "
            "l2 bound you vouch for) to get certificates, or feature_radius=r to train the head "
            "at radius r in feature space (then the model is evaluated empirically only)")
    if bound is not None and feature_radius is not None:
        raise InvalidInputError(
            "feature_radius is derived from the Lipschitz bound (r = K·eps); pass "
            "lipschitz=None to set it yourself (empirical only)")
    if feature_radius is not None:
        check_positive(feature_radius, "feature_radius")
    return bound


def _features(extractor: FeatureExtractor, data: object, tag: str, batch_size: int,
              device: torch.device | str | None, progress: bool, cache_dir: Path | None
              ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    cache = None if cache_dir is None else cache_dir / f"features-{tag}.pt"
    z, y = extract_features(extractor, data, batch_size=batch_size, device=device,
                            progress=progress, cache=cache)
    if y is None:
        raise InvalidInputError(f"the {tag} data must carry labels: pass (X, y)")
    y = y.reshape(-1).long()
    if y.min() < 0:
        raise InvalidInputError("labels must be class indices 0..C-1")
    return z.double(), y, _input_shape(data)


def _input_shape(data: object) -> tuple[int, ...]:
    """The shape of one input sample (for the ℓ∞ → ℓ2 conversion)."""
    if isinstance(data, tuple | list):
        first = data[0]
        return tuple(np.shape(first)[1:])
    if isinstance(data, torch.utils.data.DataLoader):
        data = data.dataset
    sample = data[0]  # type: ignore[index]
    x = sample[0] if isinstance(sample, tuple | list) else sample
    return tuple(np.shape(x))


def _validation_split(extractor: FeatureExtractor, z: torch.Tensor, y: torch.Tensor,
                      validation: float | object, seed: int, batch_size: int,
                      device: torch.device | str | None, progress: bool,
                      cache_dir: Path | None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if isinstance(validation, float | int) and not isinstance(validation, bool):
        fraction = float(validation)
        if not 0 < fraction < 1:
            raise InvalidInputError(f"validation must be a fraction in (0, 1) or data, got "
                                    f"{validation!r}")
        gen = np.random.default_rng(seed)
        labels = y.numpy()
        val_idx = []
        for c in np.unique(labels):  # stratified: the same fraction of every class
            members = np.flatnonzero(labels == c)
            take = int(round(fraction * len(members)))
            val_idx.extend(gen.permutation(members)[:take].tolist())
        mask = np.zeros(len(labels), dtype=bool)
        mask[val_idx] = True
        if mask.all() or not mask.any():
            raise InvalidInputError("the validation split left no training or no validation "
                                    "data; use more data or another fraction")
        m = torch.as_tensor(mask)
        return z[~m], y[~m], z[m], y[m]
    if validation is None:
        raise InvalidInputError("validation=None: pass a fraction or (X_val, y_val) — the "
                                "hyper-parameters are chosen on validation data, never on test")
    z_val, y_val, _ = _features(extractor, validation, "validation", batch_size, device,
                                progress, cache_dir)
    if z_val.shape[1] != z.shape[1]:
        raise InvalidInputError("validation features do not match the training features")
    return z, y, z_val, y_val


def _program(head: str, z: torch.Tensor, y: torch.Tensor, params: dict, radius: float,
             norm: float, loss: str, seed: int, options: Mapping[str, object]) -> ConvexProgram:
    threat = ThreatModel(norm, radius) if radius > 0 else None
    X, labels = z.numpy(), y.numpy()
    if head == "polynomial":
        opts = dict(options)
        if threat is not None and norm == math.inf:
            opts.setdefault("linf", "containment")
        return ConvexPolynomial(X, labels, loss=loss, beta=params["beta"], threat=threat, **opts)
    return ConvexReLU(X, labels, loss=loss, beta=params["beta"], threat=threat,
                      n_patterns=int(params["n_patterns"]), seed=seed, **options)


def _principal_directions(z: torch.Tensor, components: int | None) -> torch.Tensor:
    """The top ``components`` right singular vectors of the centred ``z`` as rows (k, D), or
    the identity when ``components`` is None or not smaller than D."""
    dim = z.shape[1]
    if components is None:
        return torch.eye(dim, dtype=torch.float64)
    k = int(check_positive(components, "components", allow_zero=False))
    if k != components:
        raise InvalidInputError(f"components must be a positive integer, got {components!r}")
    if k >= dim:
        return torch.eye(dim, dtype=torch.float64)
    return torch.linalg.svd(z, full_matrices=False)[2][:k].contiguous()


#: "auto" hands a head program to a conic solver only below both sizes (interior-point cost
#: grows with the n·C robust constraint blocks as much as with the unknowns), else to torch.
AUTO_CONIC_MAX_CONSTRAINT_BLOCKS = 2_000


def _solve(program: ConvexProgram, solver: str, options: Mapping[str, object]):
    """``solve`` with the pipeline's choice for ``"auto"`` (conic for small programs, see
    :data:`AUTO_CONIC_MAX_CONSTRAINT_BLOCKS`, else torch) and its torch defaults."""
    if solver == "auto":
        small = (program.n_variables() <= AUTO_CLARABEL_MAX_VARIABLES
                 and program.n_samples * program.n_outputs <= AUTO_CONIC_MAX_CONSTRAINT_BLOCKS)
        solver = "auto" if small else "torch"
    if solver == "torch":
        options = {"tol": 1e-3, "accept_inaccurate": True, **options}
    return solve(program, solver, **options)


def _validation_scores(net: nn.Module, z: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
                       factor: float | None, radius: float, head_norm: float, seed: int
                       ) -> dict[str, float]:
    """Clean accuracy and the selection score on the (normalised) validation features: the
    certified accuracy at ε when ``factor`` (the input radius factor) is known, else the head's
    PGD accuracy at the feature radius."""
    zz = z.to(net.weight.dtype)
    with torch.no_grad():
        clean = float((net.predict(zz) == y).double().mean())
    if factor is not None:
        radii = certified_radius(net, zz, y, 2).radius / factor
        robust = float(np.mean(radii > threat.eps))
    else:
        adv = pgd_attack(net, zz, y, norm=head_norm, eps=radius, steps=50, restarts=1,
                         seed=seed)
        with torch.no_grad():
            robust = float((margin(net(adv), y) > 0).double().mean())
    return {"val_clean": clean, "val_robust": robust}

