"""The demo behind ``convexrobust demo``: the main job, end to end, on embedded data.

1. Train a small LiResNet with EMMA (MATH.md §6–7) on scikit-learn's digits, on CIFAR-10 when
   ``data="cifar10"`` and the JPEG archive is present, or on any image dataset
   :func:`convexrobust.data.load` reads (an image folder or zip, an npz, IDX files), of any
   channels and square size, built from its shape and class count.
2. Retrain its last two layers with a convex polynomial head and a convex ReLU head at the ℓ2
   radius ``eps`` (:func:`~convexrobust.pipeline.retrain_last_two_layers`; the feature radius is
   ``K_h·ε`` with the guaranteed bound ``K_h`` of the LiResNet's feature map, hyper-parameters
   chosen on a validation split of the training data).
3. Evaluate the original LiResNet (its own GloRo certificate) and both robust models on the test
   set: clean and certified accuracy at each radius, and the accuracy under the attacks asked
   for (ℓ2, inputs clamped to [0, 1]; by default PGD and the standard AutoAttack): PGD attacks
   every test image at every radius; AutoAttack, far costlier, a seeded subset of
   ``autoattack_limit`` test images with the classes in proportion at ``autoattack_radii`` (by
   default the training radius ``eps``)
   (:func:`~convexrobust.data.stratified_subset`,
   :func:`~convexrobust.evaluation.evaluate_on_subsets`).

Writes ``results.json`` (records ``{"model", "radius", "clean", "pgd", "autoattack",
"certified"}`` with the number of images behind each: ``n``, ``n_pgd``, ``n_autoattack``), a PNG
plot and every robust model as ``<model>.pt`` in the output folder.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from convexrobust._io import write_json_atomic
from convexrobust.attacks import autoattack_version
from convexrobust.data import stratified_subset, subset
from convexrobust.errors import SolverUnavailableError
from convexrobust.evaluation import (
    AUTOATTACKS,
    check_autoattack_settings,
    default_autoattack_radii,
    default_radii,
    evaluate_on_subsets,
)
from convexrobust.images import check_square, load_image_split
from convexrobust.networks.liresnet import LiResNet
from convexrobust.pipeline import retrain_last_two_layers
from convexrobust.plots import plot_accuracy_vs_radius
from convexrobust.threat import L2
from convexrobust.training import TrainConfig, train_liresnet

log = logging.getLogger(__name__)

#: Test radii per named dataset (CIFAR-10: the standard 36/255, 72/255, 108/255); other data
#: are tested at eps/2, eps and 2·eps.
RADII = {"digits": (0.1, 0.3, 0.5), "cifar10": (36 / 255, 72 / 255, 108 / 255)}

#: The trained backbones committed beside the code (``benchmarks/models/``, each with the command
#: that made it): the demo of a named dataset starts from its backbone instead of training one,
#: when the file is there (a source checkout) and no epochs are asked for.
COMMITTED_BACKBONES = {
    "cifar10": Path(__file__).resolve().parents[1] / "benchmarks" / "models"
    / "liresnet-cifar10-l4w32.pt"}

#: What the demo of a named dataset uses unless told otherwise (CIFAR-10: the standard training
#: radius 36/255, the committed backbone's, heads on a seeded sample of 5,000 training images,
#: each head candidate's solve capped at 90 s — the 10-class robust ReLU program does not reach
#: its tolerance in minutes on 2 cores, and the certificate is computed on the returned head, so
#: the cap costs optimality, never soundness — and evaluation on 200 test images, so that the run
#: from the committed backbone stays within half an hour on 2 CPU cores; README: its measured
#: time).
DATASET_DEFAULTS: dict[str, dict[str, float | int]] = {
    "cifar10": {"eps": 36 / 255, "head_train_limit": 5000, "test_limit": 200,
                "solve_time_limit": 90}}


def committed_backbone(data: str) -> Path | None:
    """The committed backbone of the named dataset ``data`` (:data:`COMMITTED_BACKBONES`), or
    None when there is none or its file is absent (an installed package has no benchmarks)."""
    path = COMMITTED_BACKBONES.get(data)
    return path if path is not None and path.is_file() else None


#: Test images AutoAttack attacks by default (a stratified subset of the test set), chosen so
#: that AutoAttack adds minutes, not hours, to a demo on a CPU (README: its share).
AUTOATTACK_LIMIT = 40

#: The image demo's AutoAttack subset and PGD restarts (:class:`DemoConfig`), smaller than the
#: tabular demo's to shorten ``make demo`` (three models); on the digits LiResNet PGD costs some
#: 15 s per restart and model, AutoAttack about a minute per model and radius, almost all of it
#: fixed (README: the demo's stage times).
IMAGE_AUTOATTACK_LIMIT = 20
IMAGE_PGD_RESTARTS = 1


def default_attacks(autoattack_limit: int | None = AUTOATTACK_LIMIT) -> tuple[str, ...]:
    """The demo's attacks when none are named: PGD and the standard AutoAttack; PGD alone when
    ``autoattack_limit`` is 0, or — with a warning that names the install — when
    ``pyautoattack`` is missing."""
    if autoattack_limit == 0:
        return ("pgd",)
    try:
        autoattack_version()
    except SolverUnavailableError as err:
        log.warning("%s; the demo reports PGD only", err)
        return ("pgd",)
    return ("pgd", "autoattack")


@dataclass(frozen=True)
class DemoConfig:
    """What the demo trains. The defaults finish in a few minutes on 2 CPU cores (digits)."""

    #: a dataset name (digits, cifar10) or the path of image data (:func:`convexrobust.data.load`)
    data: str = "digits"
    arch: str = "L4W32"
    epochs: int = 100
    #: neck channels: the feature dimension is neck_channels·(input/neck stride)² (64 for
    #: digits), small enough for the polynomial SDP head.
    neck_channels: int = 4
    #: principal components of the features fed to the heads (keeps the SDP small; 0: all)
    components: int = 16
    eps: float = 0.3
    heads: tuple[str, ...] = ("polynomial", "relu")
    grid: dict = field(default_factory=lambda: {"beta": (1e-3, 1e-2), "radius_scale": (1.0,),
                                                "n_patterns": (50,)})
    solver: str = "auto"
    #: passed to the head solves (e.g. ``{"max_iters": 200}`` for a quick run)
    solver_options: dict = field(default_factory=dict)
    #: attacks of :data:`convexrobust.evaluation.ATTACKS` (None: :func:`default_attacks`);
    #: ``pgd`` counts a point robust only when it survives every PGD attack
    attacks: tuple[str, ...] | None = None
    #: AutoAttack attacks a seeded stratified subset of this many test images (None: all of
    #: them; 0: no AutoAttack); the PGD attacks attack every test image
    autoattack_limit: int | None = IMAGE_AUTOATTACK_LIMIT
    #: the radii AutoAttack attacks at (None:
    #: :func:`~convexrobust.evaluation.default_autoattack_radii`, the training radius ``eps``
    #: when it is a test radius)
    autoattack_radii: tuple[float, ...] | None = None
    pgd_steps: int = 50
    pgd_restarts: int = IMAGE_PGD_RESTARTS
    seed: int = 0
    #: where the named dataset is stored (the CIFAR-10 zip or folder); data is read from here
    #: when given (the older spelling of ``data=PATH``, which keeps the name's test radii)
    data_path: str | None = None
    #: a trained LiResNet (``LiResNet.save`` / ``train-liresnet``) to use instead of training one
    checkpoint: str | None = None
    #: train the heads on N training images drawn at random (seeded; None: all)
    head_train_limit: int | None = None
    #: evaluate on N test images drawn at random (seeded; None: all)
    test_limit: int | None = None
    #: test radii (default: :data:`RADII` of a named dataset, else eps/2, eps, 2·eps)
    radii: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.radii is None:
            object.__setattr__(self, "radii", RADII.get(self.data, default_radii(self.eps)))
        if self.attacks is None:
            check_autoattack_settings(self.autoattack_limit, ())
            object.__setattr__(self, "attacks", default_attacks(self.autoattack_limit))
        check_autoattack_settings(self.autoattack_limit, self.attacks, self.autoattack_radii,
                                  self.radii)
        if self.autoattack_radii is None:
            object.__setattr__(self, "autoattack_radii",
                               default_autoattack_radii(self.eps, self.radii))


def _load(cfg: DemoConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                     int]:
    """Train and test images and labels of ``cfg.data`` (read from ``cfg.data_path`` when
    given) and the dataset's number of classes; the training images are checked to be
    square."""
    source = cfg.data if cfg.data_path is None else cfg.data_path
    x, y, classes = load_image_split(source, "train", seed=cfg.seed)
    check_square(x, source)
    x_test, y_test, _ = load_image_split(source, "test", seed=cfg.seed)
    return x, y, x_test, y_test, len(classes)


def run_demo(cfg: DemoConfig, out: str | Path, *, progress: bool = True,
             device: torch.device | str | None = None) -> list[dict]:
    """Run the main job (module docstring) on ``device`` (default the CPU) and write its
    artifacts to ``out``; returns the records (with ``train_time`` / ``eval_time`` seconds per
    model, and ``eval_seconds``: the evaluation's seconds per phase and attack)."""
    out = Path(out)
    x, y, x_test, y_test, n_classes = _load(cfg)
    x_test, y_test = subset(x_test, y_test, cfg.test_limit, cfg.seed)
    # AutoAttack's images: None when it attacks them all (or does not run)
    attacked = None
    if any(a in AUTOATTACKS for a in cfg.attacks) and cfg.autoattack_limit is not None \
            and cfg.autoattack_limit < len(y_test):
        attacked = stratified_subset(x_test, y_test, cfg.autoattack_limit, cfg.seed)
    start = time.perf_counter()
    if cfg.checkpoint is not None:
        liresnet = LiResNet.load(cfg.checkpoint, map_location=device or "cpu").eval()
    else:
        train_cfg = TrainConfig(data=cfg.data, arch=cfg.arch, epochs=cfg.epochs, eps=cfg.eps,
                                neck_channels=cfg.neck_channels, seed=cfg.seed)
        liresnet = train_liresnet(train_cfg, x, y, out / "liresnet", progress=progress,
                                  device=device, num_classes=n_classes).eval()
    models = {"liresnet": (liresnet, time.perf_counter() - start)}
    x_head, y_head = subset(x, y, cfg.head_train_limit, cfg.seed)
    for head in cfg.heads:
        start = time.perf_counter()
        robust = retrain_last_two_layers(liresnet, (x_head, y_head), head=head,
                                         threat=L2(cfg.eps),
                                         solver=cfg.solver, grid=cfg.grid, seed=cfg.seed,
                                         components=cfg.components or None,
                                         solver_options=cfg.solver_options, device=device,
                                         progress=progress)
        name = f"liresnet+{head}"
        robust.save(out / f"{name}.pt")
        models[name] = (robust, time.perf_counter() - start)
    records: list[dict] = []
    for name, (model, train_time) in models.items():
        report = evaluate_on_subsets(model, (x_test, y_test), cfg.radii, norm=2, name=name,
                                     attacks=cfg.attacks, autoattack_subset=attacked,
                                     autoattack_radii=cfg.autoattack_radii,
                                     pgd_steps=cfg.pgd_steps, pgd_restarts=cfg.pgd_restarts,
                                     seed=cfg.seed, progress=progress, device=device)
        eval_time = sum(report.seconds.values())
        records += [{**r, "train_time": train_time, "eval_time": eval_time,
                     "eval_seconds": dict(report.seconds)} for r in report.records]
    plot_accuracy_vs_radius(records, out / "accuracy.png",
                            title=f"{cfg.data}: LiResNet vs convex robust heads (l2)")
    write_json_atomic(out / "results.json", records)
    write_json_atomic(out / "config.json", asdict(cfg))
    return records
