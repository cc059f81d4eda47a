"""Clean, attacked and certified accuracy of a classifier.

:func:`evaluate` measures, at each radius ``r`` of a list, on a data set:

* **clean** accuracy: the prediction (``argmax`` of the scores, or ``score > 0`` for a single
  binary score) equals the label;
* **pgd** accuracy (empirical robustness, an *upper* bound on the true robust accuracy): the
  point is correct on the clean input *and* under every listed attack of radius ``r`` (PGD of
  :func:`convexrobust.attacks.pgd_attack` and, when asked for, AutoAttack of
  :func:`convexrobust.attacks.auto_attack`; ℓ2 or ℓ∞, through the whole model, inside the input
  box);
* **autoattack** accuracy, when ``"autoattack"`` is among the attacks: correct under the
  standard AutoAttack (Croce & Hein, ICML 2020) alone — the number the literature reports,
  beside PGD; ``pgd`` then also counts AutoAttack's breaks;
* **certified** accuracy (a *lower* bound): the point is correct and its certified radius
  ``R`` — returned by the model's ``certified_radius(x, y)`` — satisfies ``R > r``
  **strictly**. ``R`` is the distance up to which the prediction provably does not change
  (constant on the open ball of radius ``R``; :class:`~convexrobust.certify.CertifiedRadii`),
  so a point with ``R = r`` is not counted as certified at ``r``.

For a sound certificate ``certified ≤ pgd ≤ autoattack ≤ clean`` at every radius; a point
certified at ``r`` but broken by any attack (AutoAttack included) is counted in
:attr:`EvaluationReport.violations` (and logged as an error), which is always 0 for a sound
certificate.

:func:`evaluate_on_subsets` runs the costly attacks on subsets only (e.g. AutoAttack on a
stratified sample of the test set, :func:`convexrobust.data.stratified_subset`) and merges the
records, each saying on how many points each accuracy was measured.

Composition (MATH.md §5): a head certified at feature radius ``R(h(x))`` certifies ``g∘h`` at
input radius ``R(h(x)) / K_h``; a model exposing ``certified_radius`` is expected to return the
composed radius in input space. :func:`accuracy_report` is the older head-plus-features form.
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from convexrobust._io import write_json_atomic
from convexrobust._validation import check_device
from convexrobust.attacks import (
    auto_attack,
    autoattack_version,
    check_clamp_box,
    check_in_box,
    fgsm_attack,
    pgd_attack,
)
from convexrobust.certify import certified_radius
from convexrobust.errors import InvalidInputError
from convexrobust.inputs import DataSource, apply_model, class_indices
from convexrobust.threat import parse_norm

__all__ = ["AUTOATTACKS", "EvaluationReport", "accuracy_report", "certified_accuracy",
           "check_autoattack_settings", "default_autoattack_radii", "default_radii", "evaluate",
           "evaluate_on_subsets", "format_table"]

logger = logging.getLogger(__name__)

#: Attack names accepted by :func:`evaluate`: untargeted PGD on the margin loss;
#: multi-targeted PGD (one pass per wrong class; exact for linear models, C − 1 times slower);
#: FGSM (Goodfellow, Shlens & Szegedy, ICLR 2015: one step of length ε along the sign of the
#: margin loss's gradient for ℓ∞, along the normalised gradient for ℓ2, from the clean point;
#: the single-step attack Kuelbs et al. evaluate with — far weaker than PGD);
#: the standard AutoAttack (needs ``pip install 'convexrobust[attack]'``); and
#: ``autoattack_fast``, its first attack alone (APGD-CE), a cheap check for tests and CI whose
#: numbers are not AutoAttack's (they are recorded under their own key and must not be reported
#: as AutoAttack).
ATTACKS = ("pgd", "pgd_multitargeted", "fgsm", "autoattack", "autoattack_fast")

# The auto_attack version behind each AutoAttack name in ATTACKS.
_AUTOATTACK_VERSIONS = {"autoattack": "standard", "autoattack_fast": "fast"}

#: The AutoAttack names of :data:`ATTACKS` (each recorded under its own key); the others are
#: the PGD attacks.
AUTOATTACKS = tuple(_AUTOATTACK_VERSIONS)


@dataclass
class EvaluationReport:
    """What :func:`evaluate` measured.

    ``records``: one dict per radius (in the order given), ``{"model", "radius", "clean",
    "pgd", "certified"}``, plus ``"autoattack"`` / ``"autoattack_fast"`` (accuracy under that
    attack alone) when it ran; ``pgd`` (correct under every attack) is ``None`` when no attack
    ran, ``certified`` is ``None`` when ``certify=False`` or the model has no
    ``certified_radius`` (or has ``certifiable = False``). ``seconds``: wall time of the
    ``clean``, ``pgd`` (PGD attacks) and ``certify`` phases, and of each AutoAttack under its
    name (they add up to about ``total_seconds``, which also counts data loading).
    ``n``: number of points.
    ``violations``: per radius, points certified at that radius that an attack broke (``None``
    where not both were measured) — nonzero means an unsound certificate. ``radii``: the
    per-point certified radii (``None`` without certificates), ``correct``: the per-point clean
    correctness.
    """

    name: str
    n: int
    norm: float
    records: list[dict]
    seconds: dict[str, float]
    violations: list[int | None]
    total_seconds: float = 0.0
    config: dict = field(default_factory=dict)
    radii: np.ndarray | None = field(default=None, repr=False)
    correct: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """A JSON-ready dict (per-point arrays left out)."""
        return {"model": self.name, "n": self.n, "norm": _norm_name(self.norm),
                "records": [dict(r) for r in self.records], "seconds": dict(self.seconds),
                "total_seconds": self.total_seconds,
                "violations": list(self.violations), "config": dict(self.config)}

    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """The report as JSON text; also written atomically to ``path`` when given."""
        payload = self.to_dict()
        if path is not None:
            write_json_atomic(path, payload, indent=indent)
        return json.dumps(payload, indent=indent)

    def table(self) -> str:
        """A plain-text table of the records (see :func:`format_table`)."""
        return format_table(self.records)


def format_table(records: Iterable[dict]) -> str:
    """Plain-text table of records from one or several reports (``-`` marks ``None``); an
    AutoAttack column appears when a record has one.

    Records of :func:`evaluate_on_subsets` say on how many points each accuracy was measured
    (``n`` for clean and certified, ``n_<attack>`` for an attack column): a column whose
    records agree shows it in its header (``autoattack (n=60)``), otherwise each cell shows it
    (``0.8500 (n=60)``)."""
    records = list(records)
    columns = ("clean", "pgd",
               *(k for k in _AUTOATTACK_VERSIONS if any(k in rec for rec in records)),
               "certified")
    labels, in_cells = [], {}
    for c in columns:
        counts = {rec.get(_count_key(c)) for rec in records if rec.get(c) is not None}
        counts.discard(None)
        in_cells[c] = len(counts) > 1
        labels.append(f"{c} (n={counts.pop()})" if len(counts) == 1 else c)
    header = ("model", "radius", *labels)
    rows = [header]
    for rec in records:
        cells = []
        for c in columns:
            cell = "-" if rec.get(c) is None else f"{rec[c]:.4f}"
            if in_cells[c] and rec.get(c) is not None and rec.get(_count_key(c)) is not None:
                cell += f" (n={rec[_count_key(c)]})"
            cells.append(cell)
        rows.append((str(rec["model"]), f"{rec['radius']:g}", *cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _count_key(column: str) -> str:
    """The record key of the number of points a column was measured on."""
    return "n" if column in ("clean", "certified") else f"n_{column}"


def certified_accuracy(radii: object, correct: object, r: float) -> float:
    """Fraction of points that are correct and certified at radius ``r``: ``R > r`` strictly.

    ``radii``: per-point certified radii (tensor or array, 0 where not certified);
    ``correct``: per-point clean correctness (bool), same length.
    """
    R = _as_numpy(radii, np.float64).reshape(-1)
    ok = _as_numpy(correct, bool).reshape(-1)
    if R.shape != ok.shape:
        raise InvalidInputError(f"radii {R.shape} and correct {ok.shape} must have one entry "
                                "per point")
    if R.size == 0:
        raise InvalidInputError("no points to compute a certified accuracy on")
    if np.isnan(R).any() or (R < 0).any():
        raise InvalidInputError("certified radii must be >= 0 and not NaN")
    return float(np.mean(ok & (R > float(r))))


def default_radii(eps: float) -> tuple[float, ...]:
    """The radii a run trained at ``eps`` is evaluated at unless told otherwise:
    ``eps/2, eps, 2·eps``."""
    return tuple(sorted({eps / 2, eps, 2 * eps}))


def default_autoattack_radii(eps: float, radii: Sequence[float]) -> tuple[float, ...]:
    """The radii AutoAttack attacks at unless told otherwise: the training radius ``eps`` alone
    when it is among ``radii`` (each radius costs a whole AutoAttack run, whatever the number
    of points), else every radius of ``radii``."""
    return (eps,) if eps in radii else tuple(radii)


def evaluate(model: nn.Module, data: object, radii: float | Sequence[float], *,
             norm: float | str = 2, attacks: Sequence[str] = ("pgd",), certify: bool = True,
             pgd_steps: int = 50, pgd_restarts: int = 3, batch_size: int = 256,
             device: torch.device | str | None = None, progress: bool = True, seed: int = 0,
             clamp: tuple[float, float] | None = (0.0, 1.0),
             name: str = "model") -> EvaluationReport:
    """Clean, PGD and certified accuracy of ``model`` on ``data`` at each radius.

    Args:
        model: an ``nn.Module`` mapping ``(n, ...)`` inputs to ``(n, C)`` class scores (or
            ``(n,)`` / ``(n, 1)`` single scores of a binary classifier, class 1 iff > 0). If
            it has a method ``certified_radius(x, y)`` returning per-point radii in input
            space (a tensor, an array or a :class:`~convexrobust.certify.CertifiedRadii`; 0
            where not certified), it is called with ``norm=norm`` when its signature accepts
            ``norm`` (otherwise its radii are taken to be in ``norm``). It is put in eval mode
            for the evaluation (its mode is restored afterwards) and moved to ``device`` when
            that is given and differs.
        data: a tuple ``(X, y)`` of tensors or arrays, a ``DataLoader`` yielding ``(x, y)``
            batches, or a ``Dataset`` of ``(x, y)`` pairs (any labelled form
            :class:`~convexrobust.inputs.DataSource` takes). Inputs are cast to the model's
            dtype.
        radii: radius or radii ``r ≥ 0`` in the ``norm``; ``r = 0`` skips the attack
            (``pgd`` = clean accuracy there).
        norm: ``2`` or ``"inf"`` (``1`` only with ``attacks=()``: the attacks are ℓ2 / ℓ∞).
        attacks: names from :data:`ATTACKS`; a point counts robust (``pgd``) only if correct
            on the clean input and under every attack. ``()`` skips attacks (``pgd`` is
            ``None``). Radii are attacked in increasing order and a point broken at a smaller
            radius counts as broken at every larger one (the same perturbation is admissible).
            ``"autoattack"`` runs the standard AutoAttack
            (:func:`~convexrobust.attacks.auto_attack`: seed ``seed + k`` on batch ``k``, the
            ``clamp`` box mapped to its ``[0, 1]``, its log shown at DEBUG level only) on every
            clean-correct point, whatever PGD did, and reports its accuracy under its own key;
            ``pyautoattack``'s version goes in ``config``. Report AutoAttack numbers from
            ``"autoattack"``, never from ``"autoattack_fast"``.
        certify: compute certified accuracy when the model has ``certified_radius``; without
            one, or when the model says ``certifiable = False`` (a ``RobustModel`` without a
            guaranteed ``K_h``), ``certified`` is ``None`` in the records (not an error).
        pgd_steps, pgd_restarts: PGD steps per restart and restarts (restart 0 starts at the
            clean point, the others at uniform random points of the ball).
        batch_size: batch size for ``(X, y)`` and ``Dataset`` data (a ``DataLoader`` keeps its
            own).
        device: where batches (and the model) go; default: the model's device.
        progress: show a tqdm bar over batches (quiet anyway when not on a terminal).
        seed: attack seed (batch ``k`` uses ``seed + k``): the result is deterministic.
        clamp: ``(low, high)`` box of valid inputs (default the pixel range ``[0, 1]``) that
            attack iterates are clipped to; inputs outside it are an error. ``None`` for
            unbounded inputs such as features.
        name: model name put in the records.

    Raises:
        InvalidInputError: mismatched ``X``/``y`` lengths, data without labels, NaN/inf
            inputs, object or string data, labels that are not class indices, inputs the model
            cannot take, negative or non-finite radii, unknown attacks (or attacks in the ℓ1
            norm), bad counts, clamp boxes or devices, inputs outside ``clamp``, or radii from
            ``certified_radius`` that are NaN, negative or misshapen.
        SolverUnavailableError: an AutoAttack was asked for and ``pyautoattack`` is not
            installed (``pip install 'convexrobust[attack]'``).
    """
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    p = parse_norm(norm)
    radius_list = _check_radii(radii)
    attack_names = _check_attacks(attacks, p)
    pgd_names = [a for a in attack_names if a not in _AUTOATTACK_VERSIONS]
    aa_names = [a for a in attack_names if a in _AUTOATTACK_VERSIONS]
    aa_package = autoattack_version() if aa_names else None  # fails early when missing
    pgd_steps = _check_count(pgd_steps, "pgd_steps", 0)
    pgd_restarts = _check_count(pgd_restarts, "pgd_restarts", 1)
    seed = _check_count(seed, "seed", 0)
    if not isinstance(certify, (bool, np.bool_)) or not isinstance(progress, (bool, np.bool_)):
        raise InvalidInputError("certify and progress must be True or False")
    if not isinstance(name, str):
        raise InvalidInputError(f"name must be a string, got {name!r}")
    clamp = check_clamp_box(clamp)
    source = DataSource.of(data, batch_size=batch_size)
    dtype, model_device = _dtype_device(model)
    dev = check_device(device, default=model_device or "cpu")
    if model_device is not None and model_device != dev:
        model.to(dev)
    cert_fn = getattr(model, "certified_radius", None) if certify else None
    if not callable(cert_fn) or getattr(model, "certifiable", True) is False:
        cert_fn = None  # e.g. a RobustModel without a guaranteed K_h: attacks only
    cert_kwargs = {"norm": norm} if cert_fn is not None and _accepts_norm(cert_fn) else {}
    order = sorted(range(len(radius_list)), key=lambda i: radius_list[i])
    attacked = [i for i in order if radius_list[i] > 0] if attack_names else []

    seconds = dict.fromkeys(("clean", "pgd", "certify", *aa_names), 0.0)
    correct_parts: list[np.ndarray] = []
    robust_parts: list[np.ndarray] = []  # (batch, len(radii)): correct under every attack
    aa_parts: dict[str, list[np.ndarray]] = {a: [] for a in aa_names}  # under that one alone
    radius_parts: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        bar = tqdm(source.batches(dtype=dtype, device=dev), total=source.n_batches(),
                   desc=f"evaluate {name}", unit="batch", disable=None if progress else True)
        for k, (x, yb) in enumerate(bar):
            if yb is None:
                raise InvalidInputError("evaluate needs labels: pass (X, y) or a dataset "
                                        "yielding (x, y)")
            check_in_box(x, clamp)
            y = class_indices(yb, x.shape[0]).to(dev)
            t = time.perf_counter()
            with torch.no_grad():
                scores = apply_model(model, x)
            y = _check_labels(y, scores)
            correct = _predict(scores) == y
            seconds["clean"] += time.perf_counter() - t

            robust = correct[:, None].repeat(1, len(radius_list))
            survivors = {a: robust.clone() for a in aa_names}
            alive = correct.clone()  # not broken by PGD
            aa_alive = {a: correct.clone() for a in aa_names}
            for i in attacked:
                t = time.perf_counter()
                for a in pgd_names:
                    idx = alive.nonzero().squeeze(1)
                    if idx.numel() == 0:
                        break
                    if a == "fgsm":
                        adv = fgsm_attack(model, x[idx], y[idx], norm=p, eps=radius_list[i],
                                          clamp=clamp)
                    else:
                        adv = pgd_attack(model, x[idx], y[idx], norm=p, eps=radius_list[i],
                                         steps=pgd_steps, restarts=pgd_restarts, clamp=clamp,
                                         seed=seed + k,
                                         multi_targeted=a == "pgd_multitargeted")
                    with torch.no_grad():
                        alive[idx] = _predict(model(adv)) == y[idx]
                seconds["pgd"] += time.perf_counter() - t
                robust[:, i] = alive
                for a in aa_names:
                    t = time.perf_counter()
                    idx = aa_alive[a].nonzero().squeeze(1)
                    if idx.numel():
                        adv = auto_attack(model, x[idx], y[idx], norm=p, eps=radius_list[i],
                                          clamp=clamp, seed=seed + k,
                                          version=_AUTOATTACK_VERSIONS[a])
                        with torch.no_grad():
                            aa_alive[a][idx] = _predict(model(adv)) == y[idx]
                    seconds[a] += time.perf_counter() - t
                    survivors[a][:, i] = aa_alive[a]
                    robust[:, i] &= aa_alive[a]

            if cert_fn is not None:
                t = time.perf_counter()
                with torch.no_grad():
                    R = _radius_array(cert_fn(x, y, **cert_kwargs), x.shape[0])
                radius_parts.append(R)
                seconds["certify"] += time.perf_counter() - t
            correct_parts.append(correct.cpu().numpy())
            robust_parts.append(robust.cpu().numpy())
            for a in aa_names:
                aa_parts[a].append(survivors[a].cpu().numpy())
    finally:
        model.train(was_training)
    total_seconds = time.perf_counter() - start
    if not correct_parts:
        raise InvalidInputError("data holds no points to evaluate on")

    correct_all = np.concatenate(correct_parts)
    robust_all = np.concatenate(robust_parts)
    aa_all = {a: np.concatenate(parts) for a, parts in aa_parts.items()}
    R_all = np.concatenate(radius_parts) if cert_fn is not None else None
    n = correct_all.shape[0]
    clean = float(correct_all.mean())
    records, violations = [], []
    for i, r in enumerate(radius_list):
        ran = bool(attack_names) or r == 0
        pgd = float(robust_all[:, i].mean()) if ran else None
        cert = certified_accuracy(R_all, correct_all, r) if R_all is not None else None
        broken = None
        if ran and R_all is not None:
            broken = int(np.sum(correct_all & (R_all > r) & ~robust_all[:, i]))
            if broken:
                logger.error("%s: %d point(s) certified at radius %g were broken by an attack: "
                             "the certificate is unsound", name, broken, r)
        violations.append(broken)
        records.append({"model": name, "radius": r, "clean": clean, "pgd": pgd,
                        **{a: float(aa_all[a][:, i].mean()) for a in aa_names},
                        "certified": cert})
    if certify and cert_fn is None:
        logger.info("%s has no certified_radius method: certified accuracy not reported", name)
    config = {"attacks": list(attack_names), "pgd_steps": pgd_steps,
              "pgd_restarts": pgd_restarts, "clamp": list(clamp) if clamp else None,
              "seed": seed, "certified": R_all is not None}
    if aa_package is not None:
        config["pyautoattack"] = aa_package
    return EvaluationReport(name, n, p, records, seconds, violations, total_seconds, config,
                            R_all, correct_all)


def evaluate_on_subsets(model: nn.Module, data: object, radii: float | Sequence[float], *,
                        attacks: Sequence[str] = ("pgd",),
                        pgd_subset: tuple[torch.Tensor, torch.Tensor] | None = None,
                        autoattack_subset: tuple[torch.Tensor, torch.Tensor] | None = None,
                        autoattack_radii: float | Sequence[float] | None = None,
                        **options: object) -> EvaluationReport:
    """:func:`evaluate` with the costly attacks confined to subsets of the data: clean and
    certified accuracy on all of ``data``, the PGD attacks of ``attacks`` on ``pgd_subset``
    and its AutoAttacks (:data:`AUTOATTACKS`) on ``autoattack_subset`` — each an ``(X, y)``
    part of ``data`` (e.g. :func:`convexrobust.data.stratified_subset`), or ``None`` for all
    of ``data`` — at the radii ``autoattack_radii`` (some of ``radii``; None: all of them).
    One :func:`evaluate` runs per distinct set and radii (pass the same subset object twice to
    attack it with both families at once), with ``options`` (``norm``, ``pgd_steps``,
    ``seed``, ``name``, …) passed to each.

    Returns one report whose records are merged per radius: ``clean`` and ``certified`` (and
    the attacks run on all of ``data``) from the whole data, each attack's accuracy from the
    set it ran on (``None`` at a radius it did not run at); ``pgd`` counts the points correct
    under every attack run on the same set as the PGD attacks (under the AutoAttacks when there
    are no PGD attacks). Every record says on how many points each number was measured: ``n``
    (clean, certified) and ``n_pgd``, ``n_autoattack``, … per attack key that has a value;
    and, per subset, the clean and certified accuracy on that subset alone as
    ``clean_on_<family>_subset`` and ``certified_on_<family>_subset`` (family ``pgd``, or
    ``autoattack`` for a set attacked by AutoAttack alone), the baseline its attacked
    accuracy is bounded by. ``violations`` adds up each set's (a point broken on two sets
    counts twice: nonzero still means an unsound certificate), ``seconds`` and
    ``total_seconds`` the evaluations' times; ``radii`` and ``correct`` are the whole data's.

    Raises:
        InvalidInputError: anything :func:`evaluate` refuses, or ``autoattack_radii`` that are
            not among ``radii``.
        SolverUnavailableError: an AutoAttack was asked for and ``pyautoattack`` is missing.
    """
    radius_list = _check_radii(radii)
    check_autoattack_settings(None, attacks, autoattack_radii, radius_list)
    aa_radii = radius_list if autoattack_radii is None else _check_radii(autoattack_radii)
    names = (attacks,) if isinstance(attacks, str) else tuple(attacks)
    families = (("pgd", [a for a in names if a not in _AUTOATTACK_VERSIONS], pgd_subset,
                 radius_list),
                ("autoattack", [a for a in names if a in _AUTOATTACK_VERSIONS],
                 autoattack_subset, aa_radii))
    groups = [_SubsetRun(None, radius_list)]  # groups[0]: all of data, every radius
    for label, family, subset, family_radii in families:
        if not family:
            continue
        group = next((g for g in groups
                      if g.subset is subset and g.radii == family_radii), None)
        if group is None:
            group = _SubsetRun(subset, family_radii)
            groups.append(group)
        group.attacks += family
        group.labels.append(label)
    for g in groups:
        g.report = evaluate(model, data if g.subset is None else g.subset, g.radii,
                            attacks=tuple(g.attacks), **options)  # type: ignore[arg-type]
    full = groups[0].report
    # the run each attack key comes from; pgd from the PGD attacks' run when there are any
    source: dict[str, _SubsetRun] = {}
    for g in groups:
        for a in g.attacks:
            if a in _AUTOATTACK_VERSIONS:
                source[a] = g
        if g.attacks and ("pgd" in g.labels or "pgd" not in source):
            source["pgd"] = g
    records = []
    for rec in full.records:
        merged = {**rec, "n": full.n}
        for key, g in source.items():
            sub = g.record_at(rec["radius"])
            merged[key] = None if sub is None else sub[key]
            merged.pop(f"n_{key}", None)
            if merged[key] is not None:
                merged[f"n_{key}"] = g.report.n
        for g in groups[1:]:
            sub = g.record_at(rec["radius"])
            if sub is not None:
                merged[f"clean_on_{g.labels[0]}_subset"] = sub["clean"]
                merged[f"certified_on_{g.labels[0]}_subset"] = sub["certified"]
        records.append(merged)
    violations = []
    for r in radius_list:
        counts = [g.report.violations[g.radii.index(r)] for g in groups if r in g.radii]
        violations.append(None if all(c is None for c in counts)
                          else sum(c or 0 for c in counts))
    seconds: dict[str, float] = {}
    for g in groups:
        for key, value in g.report.seconds.items():
            seconds[key] = seconds.get(key, 0.0) + value
    config = {**full.config, "attacks": list(dict.fromkeys(names)),
              "subsets": {g.labels[0]: {"n": g.report.n, "attacks": list(g.attacks),
                                        "radii": list(g.radii)} for g in groups[1:]}}
    for g in groups:
        if "pyautoattack" in g.report.config:
            config["pyautoattack"] = g.report.config["pyautoattack"]
    return EvaluationReport(full.name, full.n, full.norm, records, seconds, violations,
                            sum(g.report.total_seconds for g in groups), config, full.radii,
                            full.correct)


@dataclass
class _SubsetRun:
    """One :func:`evaluate` of :func:`evaluate_on_subsets`: its data (None: all of it), radii,
    attacks, their families (``"pgd"``, ``"autoattack"``) and, once run, its report."""

    subset: tuple[torch.Tensor, torch.Tensor] | None
    radii: list[float]
    attacks: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    report: EvaluationReport | None = None

    def record_at(self, radius: float) -> dict | None:
        """This run's record at ``radius``; None where it did not run at that radius."""
        assert self.report is not None
        return next((r for r in self.report.records if r["radius"] == radius), None)


def check_autoattack_settings(limit: object, attacks: Sequence[str],
                              autoattack_radii: Sequence[float] | None = None,
                              radii: Sequence[float] = ()) -> None:
    """Check the AutoAttack settings of a run before any work: ``limit``, the number of test
    points the AutoAttacks among ``attacks`` are to attack, an integer ``>= 0`` or None (all
    of them) — 0 turns AutoAttack off, so it is an error when ``attacks`` names an AutoAttack —
    and ``autoattack_radii``, when given, among ``radii``. Raises :class:`InvalidInputError`
    naming the setting."""
    if limit is not None and (isinstance(limit, (bool, np.bool_))
                              or not isinstance(limit, (int, np.integer)) or limit < 0):
        raise InvalidInputError(f"autoattack_limit must be an integer >= 0 or None, got "
                                f"{limit!r}")
    named = [a for a in attacks if a in _AUTOATTACK_VERSIONS]
    if limit == 0 and named:
        raise InvalidInputError(f"autoattack_limit=0 turns AutoAttack off, but attacks names "
                                f"{', '.join(named)}: drop one of them")
    if autoattack_radii is not None:
        outside = [r for r in _check_radii(autoattack_radii) if r not in set(radii)]
        if outside:
            raise InvalidInputError(f"autoattack_radii {', '.join(f'{r:g}' for r in outside)} "
                                    f"are not among the test radii "
                                    f"{', '.join(f'{r:g}' for r in radii)}")


def _norm_name(p: float) -> str:
    return "inf" if math.isinf(p) else f"{p:g}"


def _check_radii(radii: object) -> list[float]:
    values = [radii] if np.ndim(radii) == 0 else list(np.asarray(radii).reshape(-1))
    if not values:
        raise InvalidInputError("radii is empty; pass at least one radius (e.g. 0)")
    out = []
    for r in values:
        try:
            v = float(r)
        except (TypeError, ValueError):
            raise InvalidInputError(f"radii must be numbers, got {r!r}") from None
        if not math.isfinite(v) or v < 0:
            raise InvalidInputError(f"radii must be finite and >= 0, got {r!r}")
        out.append(v)
    return out


def _check_attacks(attacks: object, p: float) -> tuple[str, ...]:
    names = (attacks,) if isinstance(attacks, str) else tuple(attacks)  # type: ignore[arg-type]
    for a in names:
        if a not in ATTACKS:
            raise InvalidInputError(f"unknown attack {a!r}; choose from {', '.join(ATTACKS)}")
    names = tuple(dict.fromkeys(names))  # each attack once
    if names and p not in (2.0, math.inf):
        raise InvalidInputError("the attacks (PGD, AutoAttack) are l2 and linf only; pass "
                                "attacks=() to evaluate certificates in the l1 norm")
    return names


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _dtype_device(model: nn.Module) -> tuple[torch.dtype | None, torch.device | None]:
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return None, None


def _accepts_norm(fn: object) -> bool:
    try:
        params = inspect.signature(fn).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return "norm" in params or any(q.kind is q.VAR_KEYWORD for q in params.values())


def _is_array(v: object) -> bool:
    return isinstance(v, torch.Tensor | np.ndarray)


def _check_labels(y: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    single = scores.ndim == 1 or (scores.ndim == 2 and scores.shape[1] == 1)
    n_classes = 2 if single else scores.shape[1]
    if single and y.numel() and bool(((y == -1) | (y == 1)).all()) and bool((y == -1).any()):
        y = (y > 0).long()  # ±1 labels of a binary classifier
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise InvalidInputError(f"labels must lie in 0..{n_classes - 1} for a model with "
                                f"{n_classes} classes")
    return y


def _predict(scores: torch.Tensor) -> torch.Tensor:
    if scores.ndim == 1 or scores.shape[1] == 1:
        return (scores.reshape(-1) > 0).long()
    return scores.argmax(1)


def _as_numpy(v: object, dtype: type | np.dtype) -> np.ndarray:
    if hasattr(v, "radius") and not _is_array(v):  # CertifiedRadii
        v = v.radius  # type: ignore[union-attr]
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=dtype)


def _radius_array(value: object, n: int) -> np.ndarray:
    R = _as_numpy(value, np.float64).reshape(-1)
    if R.shape != (n,):
        raise InvalidInputError(f"certified_radius returned shape {R.shape} for {n} points")
    if np.isnan(R).any() or (R < 0).any():
        raise InvalidInputError("certified_radius returned NaN or negative radii")
    return R


def accuracy_report(model: nn.Module, head: nn.Module, features: nn.Module, X: np.ndarray,
                    y: np.ndarray, radii: tuple[float, ...], *, lipschitz: float,
                    norm: float | str = 2, steps: int = 50, restarts: int = 3,
                    seed: int = 0) -> list[dict[str, float]]:
    """One record per radius: ``{"radius", "clean", "pgd", "certified"}`` on ``(X, y)``.

    ``model`` is ``head ∘ features`` (what the attack sees), ``lipschitz`` a guaranteed bound
    of ``features`` from the input norm to ℓ2 (for the ReLU ℓ∞ head certificate the features'
    bound must be ℓ∞→ℓ∞). ``pgd`` is the accuracy under a PGD attack of radius r with
    restarts; ``certified`` the fraction with certified radius > r.
    """
    x = torch.as_tensor(X, dtype=torch.float64)
    labels = torch.as_tensor(y)
    with torch.no_grad():
        clean = float((_predict(model(x)) == labels).double().mean())
        z = features(x).numpy()
    radius = certified_radius(head, z, y, norm).radius / lipschitz
    records = []
    for r in radii:
        adv = pgd_attack(model, x, labels, norm=norm, eps=r, steps=steps, restarts=restarts,
                         seed=seed)
        with torch.no_grad():
            pred = _predict(model(adv))
        records.append({
            "radius": float(r),
            "clean": clean,
            "pgd": float((pred == labels).double().mean()),
            "certified": float(np.mean(radius > r)),
        })
    return records
