"""Retrain the last two layers of a pretrained network with a convex robust head.

Given a network, the *feature map* ``h`` is everything before its last two layers (for a
:class:`~convexrobust.LiResNet` its ``features``; for any ``nn.Module`` the input of a named
module, :class:`~convexrobust.features.FeatureExtractor`). The last two layers are replaced by a
two-layer head ``g`` trained by a convex robust program (MATH.md §1–4) on
``z = V(h(x) − c)/s``: a fixed centring ``c``, one scalar scale ``s`` (so the programs see
features of unit size) and optionally the projection ``V`` on the top ``components`` principal
directions of the training features (orthonormal rows — it keeps the SDP of a polynomial head
small and costs nothing in the bound;
:class:`~convexrobust.feature_map.FeatureNormalization`). The result is the
:class:`~convexrobust.robust_model.RobustModel` ``g(V(h(x) − c)/s)``.

Composition (MATH.md §5): with a guaranteed ``‖h(x) − h(x')‖₂ ≤ K_h ‖x − x'‖₂`` the
normalised feature map has ``K = K_h ‖V‖₂ / s`` (``‖V‖₂`` computed in float64, 1 up to
round-off). The head is trained at the ℓ2 feature radius ``r = K·ε`` (``r = K·√D·ε`` for an ℓ∞
input threat, since ``‖δ‖₂ ≤ √D ‖δ‖_∞`` for ``D`` input coordinates), and a head certified at
feature radius ``R(z)`` certifies the whole model at input radius ``R(z)/K`` (ℓ2) or
``R(z)/(K√D)`` (ℓ∞). Without a bound the feature radius is a parameter, the head is trained
against the threat's own norm in feature space, and the model is only evaluated empirically:
:attr:`RobustModel.certifiable` is False and :meth:`RobustModel.certified_radius` raises
:class:`CertificateUnavailableError`. In that empirical case an ℓ∞ threat trains a polynomial
head with the ``linf="containment"`` program option by default
(:data:`PROGRAM_DEFAULTS`): the ℓ∞ ball is contained in the ℓ2 ball of radius ``√k·r`` — the same
ℓ∞-via-ℓ2 route the certified case takes — a choice of program, independent of the solver.

Solving: each candidate program goes to :func:`~convexrobust.solve` with the given ``solver``
(``"auto"`` picks the backend by the program's size, small programs to a conic solver and
large ones to torch) and :data:`TORCH_OPTIONS` as torch's own options, applied only when the
torch backend runs. With ``warm_start`` (the default) a torch solve whose method takes a
starting point (:data:`_WARM_STARTS`: a polynomial head's) starts from the point of the
candidate solved before it — a neighbour on the grid, whose optimum is near — and its hinge's
dual estimates (the same samples), and the refit from the chosen candidate's point and estimates
(the validation samples get theirs from the solver, at that point); the optima do not depend on
it.

Head families: ``"polynomial"`` (programs c/d, exact ℓ2 certificates), ``"relu"`` (programs
a/b, sound certificates) and ``"gated_relu"`` (the gated ReLU program of Mishkin, Sahiner &
Pilanci, :class:`~convexrobust.ConvexGatedReLU`): a third family that is trained nominally (the
program has no threat) and never certified — its model is empirical whatever the feature map's
bound (:attr:`RobustModel.certifiable` is False; a bound still sets the feature radius ``K·ε``
at which its candidates are attacked on validation) and ``radius_scale`` does not apply.

Resuming: with a ``cache`` directory every candidate's solve, and the refit's (its head and
solve record, not failures), is written there atomically as soon as it returns
(:mod:`~convexrobust.kept_solve`), under a SHA-256 key of everything that defines it: the head
family, loss, seed, hyper-parameters, feature radius and norm, program options, solver and
solver options but the time limit, and the bytes of the normalised training features and
labels. ``resume=True`` loads a kept solve instead of solving it again (its record keeps the
solve time and says ``"resumed": True``) — unless its time limit stopped it and a larger one is
given now: then a torch solve whose method kept its state (the polynomial heads' first-order
methods, the ReLU heads' augmented Lagrangian) continues from it, with the time it already took
counted against the limit, and any other is solved again. Validation scores are
computed afresh. Anything that changes the program changes the key, so a stale file is never
used. ``checkpoint_every`` also keeps the point of a long solve while it runs.

Model selection: the hyper-parameters (``beta``, the radius scale, ``n_patterns`` for ReLU heads)
are chosen on a validation split — never on test data — by certified validation accuracy at ε
when the model is certifiable, else by the head's PGD accuracy at the feature radius, with the
one-standard-error rule (Breiman, Friedman, Olshen & Stone 1984; Hastie, Tibshirani & Friedman,
*The Elements of Statistical Learning* §7.10): the candidates whose robust accuracy is within
one standard error ``√(p(1−p)/n_val)`` of the best one's ``p`` are equally good, and of those
the one of highest clean validation accuracy is chosen (then the higher robust accuracy, then
the earlier candidate of the grid).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from convexrobust._validation import check_choice, check_device, check_positive
from convexrobust.attacks import margin, pgd_attack
from convexrobust.certify import certified_radius
from convexrobust.errors import InvalidInputError, SolverFailedError
from convexrobust.feature_map import FeatureNormalization
from convexrobust.features import FeatureExtractor, extract_features
from convexrobust.inputs import DataSource, class_indices
from convexrobust.kept_solve import BUDGET_OPTIONS, check_checkpoint_every, solve_kept
from convexrobust.problems import CERTIFIED_HEADS, HEAD_PROGRAMS
from convexrobust.problems.base import ConvexProgram
from convexrobust.problems.gated_relu import ConvexGatedReLU
from convexrobust.problems.polynomial import ConvexPolynomial
from convexrobust.problems.relu import ConvexReLU
from convexrobust.robust_model import RobustModel, input_radius_factor
from convexrobust.threat import ThreatModel

__all__ = ["DEFAULT_GRID", "PROGRAM_DEFAULTS", "TORCH_OPTIONS", "choose_candidate",
           "pgd_trained_head", "retrain_last_two_layers"]

log = logging.getLogger(__name__)

#: Hyper-parameter grid searched on the validation split (override with ``grid=``).
#: ``radius_scale`` multiplies the feature radius ``K·ε`` (certifiable models) or the given
#: ``feature_radius``; training at a larger radius can certify more points at ε.
DEFAULT_GRID: dict[str, tuple] = {
    "beta": (1e-3, 1e-2),
    "radius_scale": (1.0, 2.0),
    "n_patterns": (50,),
}

#: Program options the pipeline sets unless ``program_options`` say otherwise, per head, when
#: the head is trained against an ℓ∞ feature threat (the empirical case): a polynomial head uses
#: the ℓ2-containment relaxation of the ℓ∞ ball, as the certified case certifies ℓ∞ through ℓ2.
PROGRAM_DEFAULTS: dict[str, dict[str, object]] = {"polynomial": {"linf": "containment"}}

#: Options for the torch backend, applied only when it runs (explicit ``solver_options`` win):
#: a loose tolerance, and an inexact status is accepted and recorded per candidate — the
#: certificate is computed on the returned network, so an inexact solve costs optimality,
#: never soundness.
TORCH_OPTIONS: dict[str, object] = {"tol": 1e-3, "accept_inaccurate": True}

#: The torch methods that take the values of a solution of the same program shape as a
#: ``warm_start`` (the polynomial programs' first-order methods): with the pipeline's
#: ``warm_start`` a candidate after one of them starts from its point, and a refit from the
#: chosen candidate's.
_WARM_STARTS = frozenset({"apg", "factored"})

#: What the pipeline itself passes to each program class (not settable by program_options).
_PIPELINE_ARGUMENTS = frozenset({"self", "X", "y", "loss", "beta", "threat", "n_patterns",
                                 "seed"})


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
    warm_start: bool = True,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    cache: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: float | None = None,
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
        ``"polynomial"`` (program c/d, exact ℓ2 certificates), ``"relu"`` (program a/b) or
        ``"gated_relu"`` (nominal gated ReLU, never certified; module docstring).
    threat:
        The input-space threat, ``cr.L2(ε)`` or ``cr.Linf(ε)``.
    solver:
        ``"auto"`` (:func:`~convexrobust.solve`'s policy: a conic solver for small programs,
        torch for large ones), ``"torch"`` or a conic name.
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
        Candidate values for ``beta``, ``radius_scale`` (not for gated ReLU heads) and (ReLU,
        gated ReLU) ``n_patterns``; missing keys
        take :data:`DEFAULT_GRID`'s values.
    components:
        Project the normalised features on their top principal directions (of the training
        split) before the head; None keeps all of them. Polynomial heads solve one
        ``(k+1)×(k+1)`` SDP block per class and output, so ``k`` ≲ 32 keeps them fast.
    refit:
        Retrain the chosen configuration on training + validation data (in the normalisation
        fitted on the training split; a torch solve of a polynomial head starts from the
        chosen candidate's point and dual estimates); ``info["refitted"]`` records that solve
        (status, solver, seconds, objective, violation, ``duality_gap`` as for the candidates,
        ``n_train``), None without a refit.
    warm_start:
        Start each torch solve that can take a point from the candidate solved before it, and
        the refit from the chosen candidate (module docstring, "Solving"; ``info["candidates"]``
        says which were, ``"warm_started": True``); False: every solve starts from zero.
    cache:
        A directory where extracted features are cached (keyed by model and data), and where
        every solved candidate head is kept (``cache/candidates/``, keyed by its program's
        data and parameters and the solver and its options; module docstring, "Resuming").
    resume:
        Load the candidates (and the refit) a previous call kept in ``cache`` instead of
        solving them again, and continue those its time limit stopped when ``solver_options``
        give a larger one (needs ``cache``; module docstring, "Resuming"): a grid search that
        was stopped continues where it stopped.
    checkpoint_every:
        Seconds: keep the state of a running torch solve (of the methods that have one, above)
        in ``cache`` every this many seconds, at the first iteration boundary after
        (:mod:`~convexrobust.kept_solve`), so a run stopped mid-solve and resumed continues from
        its last checkpoint. The
        solve's iterations are the same with or without it. None (default): each solve is
        kept when it returns.
    solver_options:
        Passed to :func:`~convexrobust.solve`. Torch solves default to :data:`TORCH_OPTIONS`
        (``tol=1e-3``, ``accept_inaccurate=True``; the status, and the duality gap the torch
        methods certify, are recorded per candidate in ``info["candidates"]``): the
        certificate is computed on the returned network, so an inexact solve costs optimality,
        never soundness.
    program_options:
        Passed to :class:`~convexrobust.ConvexPolynomial` / :class:`~convexrobust.ConvexReLU`
        (e.g. ``linf``, ``activation``, ``task`` for polynomial heads; ``bias``, ``task`` for
        ReLU heads), over :data:`PROGRAM_DEFAULTS`.

    Raises
    ------
    InvalidInputError
        Any unusable argument or data: a model without features, data of another form,
        dtype or shape than the model takes, NaN/inf, labels that are not class indices
        ``0..C−1`` (strings, negatives, fractions), a single class, a bad threat, grid,
        bound, radius, fraction, option or device.
    SolverUnavailableError
        The named solver is not installed or licensed.
    SolverFailedError
        Every candidate of the grid failed to solve.
    """
    head = check_choice(head, "head", tuple(HEAD_PROGRAMS))
    if not isinstance(threat, ThreatModel):
        raise InvalidInputError(f"threat must be cr.L2(eps) or cr.Linf(eps), got {threat!r}")
    if threat.norm not in (2.0, math.inf):
        raise InvalidInputError("retrain_last_two_layers takes an L2 or Linf threat")
    grid = _check_grid(grid, head)
    program_options = _check_program_options(head, program_options)
    solver_options = _check_solver_options(solver, solver_options)
    _check_flags(refit=refit, warm_start=warm_start, progress=progress, resume=resume)
    checkpoint_every = check_checkpoint_every(checkpoint_every, cache)
    seed = _check_seed(seed)
    device = None if device is None else check_device(device)
    extractor = FeatureExtractor(model, feature_module)
    bound = _feature_bound(extractor, lipschitz, feature_radius)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    cache_dir = _cache_dir(cache)
    if resume and cache_dir is None:
        raise InvalidInputError("resume=True loads solved candidates from the cache directory: "
                                "pass cache=DIR (the one the stopped run used)")
    z_all, y_all, input_shape = _features(extractor, train_data, "train", batch_size, device,
                                          progress, cache_dir)
    z_tr, y_tr, z_val, y_val = _validation_split(extractor, z_all, y_all, validation, seed,
                                                 batch_size, device, progress, cache_dir)
    timings["features"] = time.perf_counter() - start
    normalization = FeatureNormalization.fit(z_tr, components)
    norm_tr, norm_val = normalization(z_tr), normalization(z_val)
    factor = None if bound is None else input_radius_factor(
        bound * normalization.lipschitz_factor, threat.norm, input_shape)
    certified = bound is not None and head in CERTIFIED_HEADS
    if factor is not None:
        base_radius = threat.eps * factor
        head_norm = 2.0
    else:
        base_radius = float(feature_radius) / normalization.scale  # type: ignore[arg-type]
        head_norm = threat.norm
    # TORCH_OPTIONS apply when the torch backend runs ("auto" on a large program, or named),
    # below whatever solver_options set explicitly
    backend_options = {"torch": {k: v for k, v in TORCH_OPTIONS.items()
                                 if k not in solver_options}}
    if not math.isfinite(base_radius * max(grid["radius_scale"])):
        raise InvalidInputError(
            f"the feature radius {base_radius:g} × radius_scale overflows; use a smaller eps "
            "or feature_radius")

    candidates: list[dict] = []
    # record, params, head, values, the hinge's dual estimates
    fitted: list[tuple[dict, dict, nn.Module, dict | None, np.ndarray | None]] = []
    # the last fitted candidate's point and method, when that method takes a warm start
    previous: dict[str, object] | None = None
    combos = list(itertools.product(*(grid[k] for k in grid)))
    bar = tqdm(combos, desc=f"{head} head", disable=None if progress else True, unit="fit")
    for values in bar:
        params = dict(zip(grid, values, strict=True))
        radius = base_radius * params["radius_scale"]
        bar.set_postfix(beta=params["beta"], radius=f"{radius:.3g}")
        record = {**params, "feature_radius": radius}
        stored = _kept_path(cache_dir, head, params, radius, head_norm, loss, seed,
                            program_options, solver, solver_options, backend_options, norm_tr,
                            y_tr)
        t0 = time.perf_counter()
        try:
            kept = solve_kept(
                functools.partial(_program, head, norm_tr, y_tr, params, radius, head_norm,
                                  loss, seed, program_options),
                solver, options=solver_options, backend_options=backend_options,
                path=stored, resume=resume, checkpoint_every=checkpoint_every, start=previous)
        except SolverFailedError as err:
            record.update(status=f"failed: {err.status}", solve_time=time.perf_counter() - t0)
            log.warning("candidate %s failed: %s", params, err)
            candidates.append(record)
            continue
        net = kept.net
        record.update(kept.record, **({"resumed": True} if kept.resumed else {}))
        if warm_start:
            previous = _start_from(kept.values, record, kept.duals) or previous
        record.update(_validation_scores(net, norm_val, y_val, threat,
                                         factor if certified else None, radius, head_norm,
                                         seed))
        candidates.append(record)
        fitted.append((record, params, net, kept.values, kept.duals))
    bar.close()
    if not fitted:
        raise SolverFailedError(
            "every candidate head failed to solve: " + "; ".join(
                f"{c['beta']}/{c['radius_scale']}: {c['status']}" for c in candidates),
            status="failed", solver=solver)
    chosen, params, net, values, duals = fitted[
        choose_candidate([f[0] for f in fitted], len(y_val))]
    timings["select"] = time.perf_counter() - start - timings["features"]
    refitted: dict[str, object] | None = None
    if refit and len(z_val):
        t0 = time.perf_counter()
        z_full = torch.cat([norm_tr, norm_val])
        y_full = torch.cat([y_tr, y_val])
        stored = _kept_path(cache_dir, head, params, chosen["feature_radius"], head_norm, loss,
                            seed, program_options, solver, solver_options, backend_options,
                            z_full, y_full)
        # the chosen candidate's point and dual estimates start a first-order refit: the same
        # program on the validation images too, whose optimum is near (their samples' estimates
        # are NaN: the solver makes them at the start point)
        if duals is not None:
            duals = np.vstack([duals, np.full((len(y_val), duals.shape[1]), np.nan)])
        start = _start_from(values, chosen, duals) if warm_start else None
        kept = solve_kept(
            functools.partial(_program, head, z_full, y_full, params,
                              chosen["feature_radius"], head_norm, loss, seed, program_options),
            solver, options=solver_options, backend_options=backend_options, path=stored,
            resume=resume, checkpoint_every=checkpoint_every, start=start)
        net = kept.net
        timings["refit"] = time.perf_counter() - t0
        refitted = {**kept.record, "n_train": int(len(y_full)),
                    **({"resumed": True} if kept.resumed else {})}
    info = {
        "head": head, "loss": loss, "threat": threat.name,
        "certified": certified, "feature_lipschitz": bound,
        "feature_scale": normalization.scale, "feature_dim": int(z_tr.shape[1]),
        "components": normalization.components,
        "feature_radius": chosen["feature_radius"], "chosen": params,
        "candidates": candidates, "n_train": int(len(y_tr)), "n_validation": int(len(y_val)),
        "refit": bool(refit), "refitted": refitted, "times": timings,
    }
    log.info("retrained %s head: chose %s (validation robust %.3f, clean %.3f)", head, params,
             chosen["val_robust"], chosen["val_clean"])
    return RobustModel(extractor, net, center=normalization.center,
                       scale=normalization.scale, projection=normalization.projection,
                       threat=threat, feature_lipschitz=bound if certified else None,
                       input_shape=input_shape, info=info).eval()


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
    if "feature_radius" not in like.info:
        raise InvalidInputError("like has no feature radius in its info: pass a model from "
                                "retrain_last_two_layers")
    if hidden is None and like.head.n_neurons == 0:
        raise InvalidInputError(
            "like's head has no neurons (its program's optimum is the zero network, e.g. at a "
            "radius beyond the data), so it gives the baseline no width: pass hidden=")
    _check_flags(progress=progress)
    seed = _check_seed(seed)
    device = None if device is None else check_device(device)
    start = time.perf_counter()
    cache_dir = _cache_dir(cache)
    z, y, _ = _features(like.extractor, train_data, "train", batch_size, device, progress,
                        cache_dir)
    z_tr, y_tr, z_val, y_val = _validation_split(like.extractor, z, y, validation, seed,
                                                 batch_size, device, progress, cache_dir)
    if z.shape[1] != like.center.shape[0]:
        raise InvalidInputError(f"the data's features have dimension {z.shape[1]}, but like "
                                f"was trained on {like.center.shape[0]}")
    normalise = like.normalization.cpu()
    radius = float(like.info["feature_radius"])
    norm = 2.0 if like.certifiable else like.threat.norm
    result = train_pgd_head(normalise(z_tr), y_tr, radius=radius, norm=norm,
                            hidden=like.head.n_neurons if hidden is None else hidden,
                            epochs=epochs,
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
    if head == "gated_relu":  # trained nominally: the feature radius is for validation only
        if grid is not None and "radius_scale" in grid:
            raise InvalidInputError("grid['radius_scale'] does not apply to gated_relu heads: "
                                    "they are trained without a threat")
        out["radius_scale"] = (1.0,)
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
              device: torch.device | None, progress: bool, cache_dir: Path | None
              ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Features (float64), class indices and the input sample shape of ``data``."""
    source = DataSource.of(data, batch_size=batch_size, min_ndim=2)
    cache = None if cache_dir is None else cache_dir / f"features-{tag}.pt"
    z, y = extract_features(extractor, source, batch_size=batch_size, device=device,
                            progress=progress, cache=cache)
    if y is None:
        raise InvalidInputError(f"the {tag} data must carry labels: pass (X, y)")
    y = class_indices(y, z.shape[0], what=f"{tag} labels")
    if int(y.min()) < 0:
        raise InvalidInputError(f"{tag} labels must be class indices 0..C-1, got "
                                f"{int(y.min())}; map them with np.unique(y, "
                                "return_inverse=True)")
    return z.double(), y, source.sample_shape()


def _kept_path(cache_dir: Path | None, *settings: object) -> Path | None:
    """Where a solve of these :func:`_candidate_key` settings is kept (None without a cache)."""
    if cache_dir is None:
        return None
    return cache_dir / "candidates" / (_candidate_key(*settings) + ".pt")  # type: ignore[arg-type]


def _candidate_key(head: str, params: Mapping[str, object], radius: float, norm: float,
                   loss: str, seed: int, program_options: Mapping[str, object], solver: str,
                   solver_options: Mapping[str, object],
                   backend_options: Mapping[str, Mapping[str, object]],
                   z: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 of everything that defines a candidate's solve but its budget (module docstring,
    "Resuming")."""
    digest = hashlib.sha256()
    effort = {k: v for k, v in solver_options.items() if k not in BUDGET_OPTIONS}
    settings = (head, sorted(params.items()), float(radius).hex(), float(norm), loss, seed,
                sorted(program_options.items()), solver, sorted(effort.items()),
                sorted((k, sorted(v.items())) for k, v in backend_options.items()))
    digest.update(repr(settings).encode())
    for t in (z, y):
        array = t.detach().cpu().contiguous().numpy()
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _cache_dir(cache: object) -> Path | None:
    if cache is None:
        return None
    if not isinstance(cache, (str, Path)) or isinstance(cache, bool):
        raise InvalidInputError(f"cache must be a directory path or None, got {cache!r}")
    path = Path(cache)
    if path.exists() and not path.is_dir():
        raise InvalidInputError(f"cache={str(path)!r} is a file; pass a directory")
    return path


def _start_from(values: dict | None, record: Mapping[str, object],
                duals: np.ndarray | None = None) -> dict[str, object] | None:
    """The torch options that start a solve from a solved candidate's ``values`` (its
    ``record`` names the method) and its hinge's dual estimates ``duals`` (one row per sample of
    the new program, NaN where it has none); None when its method takes no warm start."""
    if values is None or record.get("method") not in _WARM_STARTS:
        return None
    point = values if duals is None else {**values, "duals": duals}
    return {"warm_start": point, "method": record["method"]}


def _check_flags(**flags: object) -> None:
    for name, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise InvalidInputError(f"{name} must be True or False, got {value!r}")


def _check_seed(seed: object) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) \
            or seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_program_options(head: str, options: Mapping[str, object]) -> dict[str, object]:
    """``options`` checked against the program class's keyword arguments (those the pipeline
    does not set itself)."""
    allowed = set(inspect.signature(HEAD_PROGRAMS[head].__init__).parameters) - _PIPELINE_ARGUMENTS
    unknown = set(options) - allowed
    if unknown:
        raise InvalidInputError(
            f"unknown option(s) {sorted(unknown)} for a {head} head; program options are "
            f"{sorted(allowed)} (the pipeline sets {sorted(_PIPELINE_ARGUMENTS - {'self'})})")
    return dict(options)


def _check_solver_options(solver: object, options: Mapping[str, object] | None
                          ) -> dict[str, object]:
    if not isinstance(solver, str):
        raise InvalidInputError(f"solver must be a name such as 'auto', got {solver!r}")
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidInputError(f"solver_options must be a dict, got {type(options).__name__}")
    if "backend_options" in options:
        raise InvalidInputError("solver_options cannot set backend_options: the pipeline sets "
                                "torch's (TORCH_OPTIONS); pass torch options in solver_options")
    if {"checkpoint", "checkpoint_every"} & set(options):
        raise InvalidInputError("the pipeline keeps checkpoints itself: pass "
                                "checkpoint_every=SECONDS (with cache=DIR), not in "
                                "solver_options")
    return dict(options)


def choose_candidate(records: Sequence[Mapping[str, float]], n_validation: int) -> int:
    """The index of the candidate the one-standard-error rule picks (module docstring, "Model
    selection") from records with ``val_robust`` and ``val_clean`` in grid order, whose
    accuracies were measured on ``n_validation`` points."""
    if not records:
        raise InvalidInputError("no candidate to choose from")
    top = max(r["val_robust"] for r in records)
    standard_error = math.sqrt(top * (1.0 - top) / max(n_validation, 1))
    near = [i for i, r in enumerate(records) if r["val_robust"] >= top - standard_error]
    # max keeps the first of equal keys: the earlier candidate of the grid
    return max(near, key=lambda i: (records[i]["val_clean"], records[i]["val_robust"]))


def _validation_split(extractor: FeatureExtractor, z: torch.Tensor, y: torch.Tensor,
                      validation: float | object, seed: int, batch_size: int,
                      device: torch.device | str | None, progress: bool,
                      cache_dir: Path | None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if isinstance(validation, bool):
        raise InvalidInputError("validation must be a fraction in (0, 1) or (X_val, y_val)")
    if isinstance(validation, float | int):
        fraction = float(validation)
        if not 0 < fraction < 1:  # also NaN
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
    """The head program on normalised features: ``beta`` and (ReLU) ``n_patterns`` from the
    grid, the feature threat of ``radius`` in ``norm`` (None at radius 0: nominal training),
    :data:`PROGRAM_DEFAULTS` for an ℓ∞ feature threat, then ``options``."""
    threat = ThreatModel(norm, radius) if radius > 0 else None
    X, labels = z.numpy(), y.numpy()
    opts = dict(PROGRAM_DEFAULTS.get(head, {})) if threat is not None and norm == math.inf \
        else {}
    opts.update(options)
    if head == "polynomial":
        return ConvexPolynomial(X, labels, loss=loss, beta=params["beta"], threat=threat, **opts)
    if head == "gated_relu":
        return ConvexGatedReLU(X, labels, loss=loss, beta=params["beta"],
                               n_patterns=int(params["n_patterns"]), seed=seed, **opts)
    return ConvexReLU(X, labels, loss=loss, beta=params["beta"], threat=threat,
                      n_patterns=int(params["n_patterns"]), seed=seed, **opts)


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

