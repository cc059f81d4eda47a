"""Convex robust classifiers on tables: what ``convexrobust fit`` runs, and ``convexrobust demo``
on a table (breast cancer by default).

A table's columns are standardised with the training split's mean and standard deviation
(:class:`~convexrobust.data.DataSplit` ``mean``, ``scale``); the model's inputs — and the radii
of its threat, its attacks and its certificates — live in that standardised space. The feature
map is the identity (:class:`~convexrobust.features.IdentityFeatures`, ``K_h = 1``) followed by
the centring ``z − c`` and, with ``components``, the projection ``V`` on the top principal
directions of the training rows (orthonormal rows, ``‖V‖₂ = 1``: moving along a discarded
direction changes nothing). One convex program (MATH.md §1–4) trains a two-layer head on
``V(x − c)``, and the result is a :class:`~convexrobust.RobustModel` whose certificates are the
head's (MATH.md §5): exact for a polynomial head under ℓ2, a sound lower bound for a ReLU head.
Under ℓ∞ the head is trained and certified at the ℓ2 radius ``√D·ε`` (``‖δ‖₂ ≤ √D‖δ‖_∞`` for
``D`` columns): sound, not exact. A gated ReLU head is trained nominally and never certified.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convexrobust._io import write_json_atomic
from convexrobust.data import DataSplit, load, stratified_subset
from convexrobust.errors import InvalidInputError
from convexrobust.evaluation import (
    AUTOATTACKS,
    check_autoattack_settings,
    default_radii,
    evaluate_on_subsets,
)
from convexrobust.feature_map import FeatureNormalization, principal_directions
from convexrobust.features import FeatureExtractor, IdentityFeatures
from convexrobust.plots import plot_accuracy_vs_radius
from convexrobust.problems import CERTIFIED_HEADS
from convexrobust.problems import HEAD_PROGRAMS as HEADS
from convexrobust.robust_model import RobustModel, input_radius_factor
from convexrobust.solvers import solve
from convexrobust.threat import L2, ThreatModel

__all__ = ["CERTIFIED_HEADS", "HEADS", "Table", "TabularConfig", "evaluate_table", "fit_table",
           "load_table", "model_test_rows", "standardized", "write_results"]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class TabularConfig:
    """What :func:`fit_table` trains and :func:`evaluate_table` measures; the defaults are the
    breast-cancer demo's.

    ``head``: a name of :data:`HEADS`; ``norm`` (2 or ``"inf"``) and ``eps``: the threat the head
    is trained against (``eps = 0``: nominal training) and evaluated in; ``radii``: evaluation
    radii (default ``eps/2, eps, 2·eps``); ``beta``: the program's regularisation;
    ``components``: principal components fed to the head (0: every column); ``n_patterns``: ReLU
    and gated ReLU activation patterns; ``attacks``: names of
    :data:`convexrobust.evaluation.ATTACKS`; ``autoattack_limit``: the AutoAttacks attack a
    seeded stratified subset of this many test rows (None: all of them; 0: AutoAttack off, an
    error when ``attacks`` names one), the PGD attacks every row; ``autoattack_radii``: the
    radii the AutoAttacks attack at (None: every radius)."""

    head: str = "polynomial"
    norm: float | str = 2
    eps: float = 0.5
    radii: tuple[float, ...] | None = None
    beta: float = 1e-3
    components: int = 0
    n_patterns: int = 50
    solver: str = "auto"
    attacks: tuple[str, ...] = ("pgd",)
    seed: int = 0
    pgd_steps: int = 50
    pgd_restarts: int = 3
    autoattack_limit: int | None = None
    autoattack_radii: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise InvalidInputError(f"unknown head {self.head!r}; choose from "
                                    f"{', '.join(HEADS)}")
        threat = ThreatModel(self.norm, self.eps)  # checked now, not at the first solve
        object.__setattr__(self, "norm", threat.norm)
        if self.radii is None:
            object.__setattr__(self, "radii", default_radii(self.eps))
        check_autoattack_settings(self.autoattack_limit, self.attacks, self.autoattack_radii,
                                  self.radii)

    @property
    def threat(self) -> ThreatModel:
        """The threat in the standardised input space."""
        return ThreatModel(self.norm, self.eps)

    @property
    def name(self) -> str:
        """The model's name in records: the head, with its training threat when it has one
        (``"polynomial-l2(0.5)"``)."""
        if self.eps == 0 or self.head not in CERTIFIED_HEADS:
            return self.head
        return f"{self.head}-{self.threat.name.lower()}"


@dataclass(frozen=True)
class Table:
    """Both splits of a table, standardised with the training split's statistics
    (``x = (raw − mean) / scale``), labels as class indices into ``classes``; ``label_column``,
    ``test_size`` and ``seed`` are how it was read and split (:func:`load_table`)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    source: str
    label_column: str | int | None = None
    test_size: float = 0.2
    seed: int = 0

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def load_table(source: str | os.PathLike, *, label_column: str | int | None = None,
               test_size: float = 0.2, seed: int = 0) -> Table:
    """Both splits of the table named or stored at ``source`` (:func:`convexrobust.data.load`:
    ``"breast-cancer"``, a CSV/TSV, a folder with train.csv and test.csv, or a 2-D npz),
    standardised. Images are an :class:`InvalidInputError` that names what takes them."""
    splits = {}
    for split in ("train", "test"):
        data = load(source, split=split, label_column=label_column, test_size=test_size,
                    seed=seed)
        if data.kind != "tabular":
            raise InvalidInputError(
                f"{source} holds images, not a table: `convexrobust fit` and the tabular demo "
                f"take tables; for images run `convexrobust demo --data {source}` (a LiResNet "
                "and convex heads), or `convexrobust train-liresnet` then `convexrobust "
                "retrain`")
        splits[split] = data
    train, test = splits["train"], splits["test"]
    return Table(standardized(train), train.y, standardized(test), test.y, train.classes,
                 train.mean, train.scale, train.source, label_column, test_size, seed)


def model_test_rows(model: RobustModel, source: str | os.PathLike, *,
                    label_column: str | int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The test rows of the table at ``source`` as ``model`` (from :func:`fit_table`) takes
    them: the table read with the model's label column (``label_column`` overrides it) and
    split with its ``test_size`` and ``seed``, standardised with the mean and scale of the
    model's own training rows, and labelled by the model's class list. A model without that
    record (not from :func:`fit_table`) gets the table's own split and statistics.

    Raises:
        InvalidInputError: ``source`` holds images, its columns are not the model's, or it
            holds a class the model does not know.
    """
    info = getattr(model, "info", None) or {}
    split = info.get("split", {})
    column = split.get("label_column") if label_column is None else label_column
    data = load(source, split="test", label_column=column,
                test_size=split.get("test_size", 0.2), seed=split.get("seed", 0))
    if data.kind != "tabular":
        raise InvalidInputError(f"{source} holds images, not a table")
    if "mean" not in info or "scale" not in info:
        return standardized(data), data.y
    mean, scale = np.asarray(info["mean"]), np.asarray(info["scale"])
    if mean.shape != (data.x.shape[1],):
        raise InvalidInputError(f"the model was fitted on {mean.shape[0]} columns but "
                                f"{data.source} has {data.x.shape[1]} (label column "
                                f"{column!r}); evaluate it on a table like its training table")
    known = {c: i for i, c in enumerate(info.get("classes", data.classes))}
    unknown = sorted(set(data.classes[i] for i in np.unique(data.y)) - set(known))
    if unknown:
        raise InvalidInputError(f"{data.source} holds classes {', '.join(unknown)} that the "
                                f"model does not know (it knows {', '.join(known)})")
    y = np.array([known[data.classes[i]] for i in data.y], dtype=np.int64)
    return (data.x - mean) / scale, y


def standardized(split: DataSplit) -> np.ndarray:
    """A table split's features standardised with its training split's statistics:
    ``(x − mean) / scale``."""
    if split.kind != "tabular":
        raise InvalidInputError(f"{split.source} holds images: only a table's columns are "
                                "standardised")
    return (split.x - split.mean) / split.scale


def fit_table(table: Table, cfg: TabularConfig) -> RobustModel:
    """The head ``cfg`` describes, trained by one convex program on the table's training rows
    (module docstring), as a :class:`~convexrobust.RobustModel` on standardised inputs. Its
    ``info`` holds the solve (``solver``, ``status``, ``solve_time``, ``objective``,
    ``violation``, ``neurons``), the training settings, the table's ``classes``, ``mean`` and
    ``scale`` (to standardise new rows) and its ``split`` (``label_column``, ``test_size``,
    ``seed``: to find its test rows again, :func:`model_test_rows`)."""
    x = torch.as_tensor(table.x_train, dtype=torch.float64)
    center = x.mean(dim=0)
    projection = principal_directions(x - center, cfg.components or None)
    normalization = FeatureNormalization(center, 1.0, projection)
    z = normalization(x).numpy()
    threat = cfg.threat
    certified = cfg.head in CERTIFIED_HEADS
    radius = threat.eps * input_radius_factor(normalization.lipschitz_factor, threat.norm,
                                              (table.n_features,))
    options: dict[str, object] = {"beta": cfg.beta, "loss": "hinge"}
    if cfg.head != "polynomial":
        options.update(n_patterns=cfg.n_patterns, seed=cfg.seed)
    if certified and radius > 0:
        options["threat"] = L2(radius)
    program = HEADS[cfg.head](z, table.y_train, **options)
    start = time.perf_counter()
    solution = solve(program, cfg.solver)
    solve_time = time.perf_counter() - start
    head = solution.network()
    log.info("%s: %s", cfg.name, solution)
    info = {"head": cfg.head, "threat": threat.name, "certified": certified,
            "feature_radius": radius if certified else None, "beta": cfg.beta,
            "components": normalization.components, "n_train": int(len(table.y_train)),
            "solver": solution.solver, "status": solution.status, "solve_time": solve_time,
            "objective": solution.objective, "violation": solution.violation,
            "neurons": head.n_neurons, "data": table.source, "classes": list(table.classes),
            "mean": table.mean.tolist(), "scale": table.scale.tolist(),
            "split": {"label_column": table.label_column, "test_size": table.test_size,
                      "seed": table.seed}}
    return RobustModel(FeatureExtractor(IdentityFeatures()), head, center=center, scale=1.0,
                       projection=projection, threat=threat,
                       feature_lipschitz=1.0 if certified else None,
                       input_shape=(table.n_features,), info=info).eval()


def evaluate_table(model: RobustModel, table: Table, cfg: TabularConfig, *,
                   progress: bool = True, device: torch.device | str | None = None
                   ) -> list[dict]:
    """Clean, attacked (``cfg.attacks``; the AutoAttacks on ``cfg.autoattack_limit`` rows) and
    certified accuracy of ``model`` on the table's test rows at ``cfg.radii``
    (:func:`convexrobust.evaluation.evaluate_on_subsets` on ``device``, unbounded inputs), one
    record per radius named ``cfg.name`` with the number of rows behind each number, and the
    solve's ``solver``, ``solve_time``, ``neurons``, ``objective`` and ``violation`` from the
    model's info."""
    test = (torch.as_tensor(table.x_test), torch.as_tensor(table.y_test))
    attacked = None
    if any(a in AUTOATTACKS for a in cfg.attacks) and cfg.autoattack_limit is not None \
            and cfg.autoattack_limit < len(table.y_test):
        attacked = stratified_subset(*test, cfg.autoattack_limit, cfg.seed)
    report = evaluate_on_subsets(model, test, cfg.radii, norm=cfg.norm, attacks=cfg.attacks,
                                 autoattack_subset=attacked,
                                 autoattack_radii=cfg.autoattack_radii, pgd_steps=cfg.pgd_steps,
                                 pgd_restarts=cfg.pgd_restarts, seed=cfg.seed, clamp=None,
                                 progress=progress, device=device, name=cfg.name)
    solve_info = {key: model.info[key] for key in ("solver", "solve_time", "neurons",
                                                   "objective", "violation")}
    return [{**record, **solve_info} for record in report.records]


def write_results(records: Iterable[dict], out: str | os.PathLike, title: str) -> None:
    """``out/results.json`` (the records) and ``out/accuracy.png`` (accuracy against radius),
    both written atomically."""
    records = list(records)
    write_json_atomic(Path(out) / "results.json", records)
    plot_accuracy_vs_radius(records, Path(out) / "accuracy.png", title=title)
