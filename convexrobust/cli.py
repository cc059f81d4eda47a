"""The convexrobust command: train a LiResNet, retrain the last two layers of a network
with a convex robust head, fit a convex robust classifier on a table, evaluate and certify
models.

--data takes a dataset name (digits, cifar10, breast-cancer) or a path: an image folder or zip
(train/<class>/<image>, test/<class>/<image>), an .npz, a folder of MNIST-style IDX files, or a
CSV/TSV table (see convexrobust.data.load). Images go to the network commands, tables to fit;
demo and evaluate take either.

The global options (--threads, --device, --quiet, -v) go before or after the subcommand; given
in both places, the one after the subcommand wins. Exit status: 0 on success, 2 for a usage
error (bad options), 1 for an error convexrobust reports (one line on stderr; -v adds the
traceback)."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import traceback
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

import torch

from convexrobust._io import write_json_atomic
from convexrobust._validation import check_device
from convexrobust.classifier_training import ClassifierConfig
from convexrobust.data import load
from convexrobust.demo import AUTOATTACK_LIMIT, IMAGE_AUTOATTACK_LIMIT, IMAGE_PGD_RESTARTS
from convexrobust.errors import ConvexRobustError, InvalidInputError
from convexrobust.evaluation import ATTACKS, AUTOATTACKS
from convexrobust.networks.registry import load_network
from convexrobust.tabular import TabularConfig
from convexrobust.training import TrainConfig

TRAIN_DEFAULTS = asdict(TrainConfig())
CLASSIFIER_DEFAULTS = asdict(ClassifierConfig())

#: An example command line of each subcommand, shown at the end of its --help.
EXAMPLES = {
    "demo": """\
  convexrobust demo                          # digits: a few minutes on 2 CPU cores
  convexrobust demo --autoattack-limit 100 --autoattack-radii 0.1,0.3,0.5 --out out/demo-aa
  convexrobust demo --data breast-cancer --out out/tabular
  convexrobust demo --data table.csv --label-column diagnosis --out out/table
  convexrobust demo --data my-images.zip --epochs 50 --radii 0.1,0.3 --out out/mine
  convexrobust demo --data cifar10 --out out/cifar   # the committed backbone, < 30 min
  convexrobust --threads 8 demo --data cifar10 --epochs 200 --test-limit 0 \\
      --attack pgd,autoattack --out out/cifar-trained""",
    "fit": """\
  convexrobust fit --data table.csv --head polynomial --norm 2 --eps 0.5 --out out/fit
  convexrobust fit --data survey.tsv --label-column outcome --head relu --components 8 \\
      --radii 0.25,0.5,1 --attack pgd,autoattack --out out/survey
  convexrobust fit --data breast-cancer --head gated_relu --norm inf --eps 0.1 --out out/gated""",
    "retrain": """\
  convexrobust retrain --checkpoint out/liresnet/model.pt --eps 0.3 --radii 0.1,0.3 \\
      --out out/retrain
  # a state_dict of your own class, features = the input of its layer `fc`:
  convexrobust retrain --checkpoint resnet.pt --model-class mypackage.nets:ResNet \\
      --model-kwargs '{"num_classes": 10}' --feature-module fc --lipschitz none \\
      --feature-radius 1 --data cifar10 --eps 36/255 --out out/resnet
  # a TorchScript archive whose features(x) is exported with @torch.jit.export, on images of
  # your own (an ImageFolder zip), attacked by PGD and AutoAttack:
  convexrobust retrain --checkpoint scripted.pt --lipschitz none --feature-radius 1 \\
      --data my-images.zip --eps 0.3 --attack pgd,autoattack --out out/scripted""",
    "evaluate": """\
  convexrobust evaluate --model out/retrain/model.pt out/liresnet/model.pt --radii 0.1,0.3 \\
      --out out/eval
  convexrobust evaluate --model out/cifar/model.pt --data cifar10 --radii 36/255,72/255 \\
      --attack pgd,autoattack --device cuda
  convexrobust evaluate --model out/fit/model.pt --data table.csv --radii 0.25,0.5""",
    "train-liresnet": """\
  convexrobust train-liresnet --out out/liresnet        # digits, L4W32
  convexrobust train-liresnet --data data/fashion-mnist --eps 0.3 --out out/fmnist  # IDX files
  convexrobust --threads 2 train-liresnet --data cifar10 --arch L4W32 --epochs 22 \\
      --eps 36/255 --batch-size 256 --lr 2e-3 --neck-dim 256 --out out/cifar-l4w32
  torchrun --nproc-per-node 4 -m convexrobust.cli train-liresnet --data cifar10 --out out/c""",
    "train-preact": """\
  convexrobust train-preact --data cifar10 --out out/preact-sgd          # width 8, 24 epochs
  convexrobust train-preact --data cifar10 --sam-rho 0.05 --epochs 12 --out out/preact-sam
  convexrobust train-preact --data cifar10 --width 64 --epochs 200 --device cuda --out out/p""",
    "certify": """\
  convexrobust certify --checkpoint out/liresnet/model.pt --eps 0.1,0.3,0.5
  convexrobust certify --checkpoint benchmarks/models/liresnet-cifar10-l4w32.pt \\
      --data cifar10 --eps 36/255,72/255 --json out/vra.json  # the committed model""",
}


def _pgd_legend(attacks: tuple[str, ...], steps: int, restarts: int) -> str:
    """What the pgd column means: correct under every attack asked for."""
    return (f"correct under every attack of {', '.join(attacks)} at the radius (PGD: {steps} "
            f"steps, {restarts} restarts), through the whole model")


def _threads(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("--threads must be >= 1")
    return n


def _attacks(text: str) -> tuple[str, ...]:
    """Comma-separated attack names of :data:`convexrobust.evaluation.ATTACKS`, each once."""
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",")))
    for name in names:
        if name not in ATTACKS:
            raise argparse.ArgumentTypeError(f"unknown attack {name!r}: choose from "
                                             f"{', '.join(ATTACKS)} (comma-separated)")
    return names


def _check_attack_packages(attacks: tuple[str, ...]) -> None:
    """Fail now, before any training, when an AutoAttack is asked for and ``pyautoattack`` is
    missing (:class:`~convexrobust.errors.SolverUnavailableError` names the install)."""
    if any(name in AUTOATTACKS for name in attacks):
        from convexrobust.attacks import autoattack_version

        autoattack_version()


def _source(args: argparse.Namespace) -> str:
    """The dataset to read: ``--data`` (default digits), or ``--data-path``, the older
    spelling of ``--data PATH`` (with ``--data cifar10``: where CIFAR-10 is)."""
    if args.data_path is None:
        return args.data or "digits"
    if args.data not in (None, "cifar10"):
        raise InvalidInputError(
            f"--data {args.data} and --data-path {args.data_path} name two datasets: "
            "--data-path is the older spelling of --data PATH; give one of them")
    return args.data_path


def _print_head_table(records: list[dict], radii: tuple[float, ...]) -> None:
    """The tabular table: one line per model, a column per attack or certificate and radius
    (an attack only at the radii it ran at, e.g. AutoAttack at the training radius)."""
    models = list(dict.fromkeys(r["model"] for r in records))
    labels = {"certified": "cert"}
    columns = [(c, r) for c in ("pgd", *(a for a in ATTACKS if a != "pgd"), "certified")
               for r in radii
               if c in ("pgd", "certified") or any(rec.get(c) is not None
                                                   for rec in records if rec["radius"] == r)]
    titles = [f"{labels.get(c, c)}@{r:g}" for c, r in columns]
    widths = [max(10, len(title) + 2) for title in titles]
    head = f"{'model':<22}{'solver':<10}{'solve s':>8}{'neurons':>8}{'clean':>7}"
    head += "".join(f"{title:>{w}}" for title, w in zip(titles, widths, strict=True))
    print(head)
    print("-" * len(head))
    for m in models:
        rows = {r["radius"]: r for r in records if r["model"] == m}
        first = rows[radii[0]]
        line = (f"{m:<22}{first['solver']:<10}{first['solve_time']:>8.1f}"
                f"{first['neurons']:>8d}{first['clean']:>7.3f}")
        line += "".join(f"{_cell(rows[r].get(c)):>{w}}"
                        for (c, r), w in zip(columns, widths, strict=True))
        print(line)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


#: Demo options that apply to images only, by their attribute name, with their flag.
_IMAGE_ONLY = {"epochs": "--epochs", "checkpoint": "--checkpoint",
               "solve_time_limit": "--solve-time-limit",
               "head_train_limit": "--head-train-limit", "test_limit": "--test-limit"}


def _demo(args: argparse.Namespace) -> int:
    source = _source(args)
    tabular = load(source, split="test", label_column=args.label_column).kind == "tabular"
    if tabular:
        given = [flag for key, flag in _IMAGE_ONLY.items() if getattr(args, key) is not None]
        if given:
            raise InvalidInputError(
                f"{' and '.join(given)} {'applies' if len(given) == 1 else 'apply'} to image "
                f"data (the LiResNet demo); {source} is a table, whose demo trains four convex "
                "heads directly: drop the option, or use `convexrobust fit` for one head")
    attacks = _demo_attacks(args)
    if tabular:
        return _tabular_demo(args, source, attacks)
    from convexrobust.demo import DATASET_DEFAULTS, DemoConfig, committed_backbone, run_demo
    from convexrobust.evaluation import format_table

    defaults = DemoConfig(attacks=("pgd",))
    name = args.data or source  # a name keeps its test radii when --data-path says where it is
    limit = defaults.autoattack_limit if args.autoattack_limit is None else args.autoattack_limit
    named = DATASET_DEFAULTS.get(name, {})
    checkpoint = args.checkpoint
    if checkpoint is None and args.epochs is None and committed_backbone(name) is not None:
        checkpoint = str(committed_backbone(name))
    eps = args.eps if args.eps is not None else named.get("eps", defaults.eps)
    cfg = DemoConfig(data=name, epochs=args.epochs or defaults.epochs, eps=eps,
                     components=defaults.components if args.components is None
                     else args.components,
                     solver=args.solver, data_path=args.data_path if args.data else None,
                     checkpoint=checkpoint,
                     head_train_limit=int(named["head_train_limit"]) if args.head_train_limit
                     is None and "head_train_limit" in named else args.head_train_limit or None,
                     test_limit=int(named["test_limit"]) if args.test_limit is None
                     and "test_limit" in named else args.test_limit or None,
                     radii=args.radii, attacks=attacks, autoattack_limit=limit,
                     autoattack_radii=args.autoattack_radii,
                     pgd_restarts=args.pgd_restarts or defaults.pgd_restarts,
                     solver_options=_solve_time_limit(args.solve_time_limit,
                                                      named.get("solve_time_limit")))
    out = Path(args.out or "out/demo")
    trained = (f"LiResNet from {cfg.checkpoint}" if cfg.checkpoint else
               f"LiResNet {cfg.arch} trained with EMMA for {cfg.epochs} epochs")
    print(f"convexrobust demo: {source}; {trained}, then its last two layers retrained by "
          f"convex polynomial and ReLU heads at l2 eps = {cfg.eps:g} (feature radius K_h*eps)")
    records = run_demo(cfg, out, progress=not args.quiet, device=args.device)
    print(format_table(records))
    print(f"clean: test accuracy; pgd: "
          f"{_pgd_legend(_pgd_family(cfg.attacks), cfg.pgd_steps, cfg.pgd_restarts)} (l2, "
          f"inputs in [0, 1])"
          f"{_autoattack_legend(records)}; certified: fraction certified at the radius "
          "(liresnet: GloRo; polynomial: exact head certificate / K_h; relu: sound bound / K_h)")
    print(f"wrote {out / 'results.json'}, {out / 'accuracy.png'} and the models in {out}")
    return 0


def _solve_time_limit(given: float | None, default: float | None) -> dict[str, float]:
    """The solver options for ``--solve-time-limit`` (0: none; not given: ``default``, for the
    demo the named dataset's, :data:`convexrobust.demo.DATASET_DEFAULTS`)."""
    seconds = default if given is None else given
    return {"time_limit": float(seconds)} if seconds else {}


def _demo_attacks(args: argparse.Namespace) -> tuple[str, ...]:
    """The demo's attacks: ``--attack``, else PGD and AutoAttack (PGD alone with
    ``--autoattack-limit 0``, or — with a warning — when ``pyautoattack`` is missing).
    ``--autoattack-limit`` or ``--autoattack-radii`` without an AutoAttack to apply to, or a
    limit of 0 with one named, is an :class:`InvalidInputError`."""
    from convexrobust.demo import default_attacks

    limit = args.autoattack_limit
    if args.attack is None:
        if limit or args.autoattack_radii:  # they ask for AutoAttack: its package must be there
            _check_attack_packages(("autoattack",))
        attacks = default_attacks(limit) if limit is not None else default_attacks()
    else:
        attacks = args.attack
    named = [a for a in attacks if a in AUTOATTACKS]
    if limit == 0 and named:
        raise InvalidInputError(f"--autoattack-limit 0 turns AutoAttack off, but --attack names "
                                f"{', '.join(named)}: drop one of them")
    given = [flag for flag, value in (("--autoattack-limit", limit),
                                      ("--autoattack-radii", args.autoattack_radii)) if value]
    if given and not named:
        raise InvalidInputError(f"{' and '.join(given)} apply to AutoAttack, but --attack "
                                f"{','.join(attacks)} names none: add autoattack to --attack or "
                                f"drop {' and '.join(given)}")
    return attacks


def _pgd_family(attacks: tuple[str, ...]) -> tuple[str, ...]:
    """The attacks behind a demo's pgd column: its PGD attacks (they run on every test point,
    AutoAttack on a subset), or the AutoAttacks when it names no PGD attack."""
    return tuple(a for a in attacks if a not in AUTOATTACKS) or attacks


def _autoattack_legend(records: list[dict]) -> str:
    """What the AutoAttack columns mean and on how many points they were measured."""
    parts = []
    for name in AUTOATTACKS:
        counts = sorted({r[f"n_{name}"] for r in records if f"n_{name}" in r})
        if counts:
            totals = sorted({r["n"] for r in records if "n" in r})
            what = ("the standard AutoAttack" if name == "autoattack"
                    else "APGD-CE alone (a smoke test, not AutoAttack)")
            where = ("every test point" if counts == totals else
                     f"{'/'.join(map(str, counts))} of the {'/'.join(map(str, totals))} test "
                     "points (seeded, classes in proportion)")
            parts.append(f"; {name}: correct under {what}, on {where}")
    return "".join(parts)


def _tabular_demo(args: argparse.Namespace, source: str, attacks: tuple[str, ...]) -> int:
    from convexrobust.demo_tabular import DEMO_CONFIG, run_tabular_demo

    cfg = TabularConfig(components=DEMO_CONFIG.components if args.components is None
                        else args.components, solver=args.solver, radii=args.radii,
                        eps=DEMO_CONFIG.eps if args.eps is None else args.eps, attacks=attacks,
                        autoattack_limit=AUTOATTACK_LIMIT if args.autoattack_limit is None
                        else args.autoattack_limit, autoattack_radii=args.autoattack_radii,
                        pgd_restarts=args.pgd_restarts or TabularConfig.pgd_restarts)
    out = Path(args.out or "out/demo")
    print(f"convexrobust demo: {source} (standardised with its training split), features = "
          f"{f'top {cfg.components} principal components' if cfg.components else 'all columns'}"
          f" (K_h = 1), polynomial and ReLU heads trained nominally and at l2 eps = "
          f"{cfg.eps:g}")
    records = run_tabular_demo(cfg, out, data=source, label_column=args.label_column,
                               progress=not args.quiet, device=args.device)
    _print_head_table(records, cfg.radii)
    print(f"clean: test accuracy; pgd@r: "
          f"{_pgd_legend(_pgd_family(cfg.attacks), cfg.pgd_steps, cfg.pgd_restarts)}"
          f"{_autoattack_legend(records)}; cert@r: fraction certified at radius r (polynomial: "
          "exact l2 certificate; relu: sound lower bound)")
    print(f"wrote {out / 'results.json'}, {out / 'accuracy.png'} and the models in {out}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from convexrobust.tabular import (
        TabularConfig,
        evaluate_table,
        fit_table,
        load_table,
        write_results,
    )

    cfg = TabularConfig(head=args.head, norm=args.norm, eps=args.eps, radii=args.radii,
                        beta=args.beta, components=args.components, n_patterns=args.n_patterns,
                        solver=args.solver, attacks=args.attack, seed=args.seed,
                        pgd_steps=args.pgd_steps, pgd_restarts=args.pgd_restarts)
    table = load_table(args.data, label_column=args.label_column, test_size=args.test_size,
                       seed=args.seed)
    features = (f"top {cfg.components} principal components" if cfg.components
                else "all columns")
    print(f"convexrobust fit: {table.source}: {len(table.y_train)} training and "
          f"{len(table.y_test)} test rows, {table.n_features} columns (standardised), "
          f"{len(table.classes)} classes; a {cfg.head} head on {features} (K_h = 1), "
          f"trained {'at ' + cfg.threat.name if cfg.name != cfg.head else 'nominally'}")
    model = fit_table(table, cfg)
    out = Path(args.out)
    model.save(out / "model.pt")
    records = evaluate_table(model, table, cfg, progress=not args.quiet, device=args.device)
    write_results(records, out, f"{table.source}: {cfg.name}")
    _print_head_table(records, cfg.radii)
    certificate = {"polynomial": "exact" if cfg.threat.norm == 2 else "sound (via l2)",
                   "relu": "sound lower bound", "gated_relu": "none: never certified"}
    print(f"clean: test accuracy; pgd@r: "
          f"{_pgd_legend(cfg.attacks, cfg.pgd_steps, cfg.pgd_restarts)}; cert@r: fraction "
          f"certified at radius r in l{args.norm} ({certificate[cfg.head]}); radii in "
          "standardised units")
    print(f"wrote {out / 'model.pt'}, {out / 'results.json'} and {out / 'accuracy.png'}")
    return 0


def _radius(text: str) -> float:
    """A radius such as ``0.3`` or ``36/255``."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a radius: {text!r} (use 0.3 or 36/255)") from None
    if value < 0:
        raise argparse.ArgumentTypeError("radii must be >= 0")
    return value


def _count(text: str) -> int:
    """An integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_count(text: str) -> int:
    """An integer >= 1."""
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    """A finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _radii(text: str) -> tuple[float, ...]:
    return tuple(_radius(t) for t in text.split(","))


def _train_liresnet(args: argparse.Namespace) -> int:
    from convexrobust.images import check_square, load_image_split, load_images
    from convexrobust.training import TrainConfig, evaluate_gloro, train_liresnet

    defaults = TrainConfig()
    source = _source(args)
    cfg = TrainConfig(data=args.data or source, arch=args.arch or defaults.arch,
                      epochs=args.epochs or defaults.epochs, eps=args.eps, lr=args.lr,
                      batch_size=args.batch_size, loss=args.loss, seed=args.seed,
                      neck_dim=args.neck_dim)
    # the split every command uses (seed 0); --seed seeds the training only
    x, y, classes = load_image_split(source, "train")
    check_square(x, source)
    x_test, y_test = load_images(source, "test")
    device = args.device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: data parallel
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if dist.get_rank() > 0:
            train_liresnet(cfg, x, y, Path(args.out), resume=args.resume, progress=False,
                           device=device, num_classes=len(classes))
            return 0
    model = train_liresnet(cfg, x, y, Path(args.out), resume=args.resume,
                           progress=not args.quiet, device=device, num_classes=len(classes))
    report = evaluate_gloro(model, x_test, y_test, (cfg.eps,))
    print(f"wrote {Path(args.out) / 'model.pt'}: clean accuracy {report['clean_accuracy']:.4f}, "
          f"VRA@{cfg.eps:g} {report['vra'][f'{cfg.eps:g}']:.4f} "
          f"(guaranteed K = {report['lipschitz']['value']:.4g})")
    return 0


def _train_preact(args: argparse.Namespace) -> int:
    from convexrobust.classifier_training import accuracy, train_classifier
    from convexrobust.images import load_image_split, load_images

    source = _source(args)
    cfg = ClassifierConfig(data=args.data or source, width=args.width,
                           head_hidden=args.head_hidden, epochs=args.epochs, lr=args.lr,
                           batch_size=args.batch_size, momentum=args.momentum,
                           weight_decay=args.weight_decay, sam_rho=args.sam_rho, seed=args.seed)
    cfg.check()
    # the split every command uses (seed 0); --seed seeds the training only
    x, y, classes = load_image_split(source, "train")
    x_test, y_test = load_images(source, "test")
    model = train_classifier(cfg, x, y, Path(args.out), resume=args.resume,
                             progress=not args.quiet, device=args.device,
                             num_classes=len(classes))
    print(f"wrote {Path(args.out) / 'model.pt'}: clean test accuracy "
          f"{accuracy(model, x_test, y_test):.4f} ({'SAM' if cfg.sam_rho > 0 else 'SGD'}, "
          f"width {cfg.width}, features {model.feature_dim})")
    return 0


def _certify(args: argparse.Namespace) -> int:
    from convexrobust.images import load_images
    from convexrobust.networks.liresnet import LiResNet
    from convexrobust.training import evaluate_gloro

    model = LiResNet.load(args.checkpoint, map_location=args.device)
    source = _source(args)
    x, y = load_images(source, "test")
    size = model.config["input_size"]
    takes = (model.config["in_channels"], size, size)
    if tuple(x.shape[1:]) != takes:
        raise InvalidInputError(
            f"{args.checkpoint} takes images of shape {takes} (C, H, W) but {source} holds "
            f"{tuple(x.shape[1:])}: certify it on data like the data it was trained on")
    report = evaluate_gloro(model, x, y, args.eps, kind="guaranteed")
    print(f"clean accuracy: {report['clean_accuracy']:.4f}")
    for eps, vra in report["vra"].items():
        print(f"VRA@{eps}: {vra:.4f}")
    print(f"Lipschitz bound of the backbone: {report['lipschitz']['value']:.6g} "
          "(guaranteed: float64 per-layer operator norms — exact SVD for dense layers and "
          "patchify convolutions, per-frequency SVD of the circular embedding otherwise)")
    if args.json:
        write_json_atomic(Path(args.json), report)
        print(f"wrote {args.json}")
    return 0


def _evaluate_models(models: dict[str, torch.nn.Module], data: dict[str, tuple],
                     args: argparse.Namespace, out: Path | None, *,
                     clamp: tuple[float, float] | None = (0.0, 1.0)) -> list[dict]:
    """Evaluate each of ``models`` on its test data (``data[name]``: ``(x, y)``) at
    ``args.radii`` under ``args.attack``; print the table and, with ``out``, write results.json
    and accuracy.png there. ``clamp``: the box of valid inputs (None for a table's standardised
    columns)."""
    from convexrobust.data import subset
    from convexrobust.evaluation import evaluate, format_table
    from convexrobust.plots import plot_accuracy_vs_radius

    records: list[dict] = []
    for name, model in models.items():
        x, y = subset(*(torch.as_tensor(a) for a in data[name]), args.limit)
        report = evaluate(model, (x, y), args.radii, norm=args.norm, name=name,
                          attacks=args.attack, pgd_steps=args.pgd_steps,
                          pgd_restarts=args.pgd_restarts, clamp=clamp,
                          progress=not args.quiet, device=args.device)
        records += [{**r, "seconds": report.seconds} for r in report.records]
    print(format_table(records))
    print(f"pgd: {_pgd_legend(args.attack, args.pgd_steps, args.pgd_restarts)}; certified: "
          "fraction certified at the radius")
    if out is not None:
        write_json_atomic(out / "results.json", records)
        plot_accuracy_vs_radius(records, out / "accuracy.png",
                                title=f"{_source(args)}, l{args.norm} threat")
        print(f"wrote {out / 'results.json'} and {out / 'accuracy.png'}")
    return records


def _numbers(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None


def _integers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None


def _lipschitz_arg(text: str) -> str | float | None:
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    return _radius(text)


def _retrain(args: argparse.Namespace) -> int:
    from convexrobust.data import subset
    from convexrobust.images import load_images
    from convexrobust.pipeline import retrain_last_two_layers
    from convexrobust.threat import ThreatModel

    model = _load_model(args.checkpoint, args)
    source = _source(args)
    x, y = subset(*load_images(source, "train"), args.limit)
    test = load_images(source, "test")
    out = Path(args.out)
    keep = args.cache or args.resume or bool(args.checkpoint_every)
    cache = out / "cache" if keep else None
    grid = {key: value for key, value in (("beta", args.beta),
                                          ("radius_scale", args.radius_scale),
                                          ("n_patterns", args.n_patterns)) if value}
    robust = retrain_last_two_layers(
        model, (x, y), head=args.head, threat=ThreatModel(args.norm, args.eps),
        solver=args.solver, lipschitz=args.lipschitz, feature_module=args.feature_module,
        feature_radius=args.feature_radius, components=args.components, grid=grid,
        device=args.device, progress=not args.quiet, cache=cache, resume=args.resume,
        checkpoint_every=args.checkpoint_every or None,
        solver_options=_solve_time_limit(args.solve_time_limit, None))
    robust.save(out / "model.pt")
    kind = (f"certified (guaranteed K_h = {robust.feature_lipschitz:.4g})"
            if robust.certifiable else "empirical only (no guaranteed bound)")
    print(f"wrote {out / 'model.pt'}: {args.head} head, {robust.head.n_neurons} neurons, "
          f"chosen on validation: {robust.info['chosen']}; {kind}")
    models = {"original": model, f"convex-{args.head}": robust}
    if args.baseline:
        from convexrobust.pipeline import pgd_trained_head

        baseline = pgd_trained_head(robust, (x, y), device=args.device, progress=not args.quiet,
                                    cache=cache)
        baseline.save(out / "pgd-head.pt")
        models["pgd-head"] = baseline
        print(f"wrote {out / 'pgd-head.pt'}: the same head width trained by PGD adversarial "
              f"training (lr {baseline.info['chosen']['lr']:g}, chosen on validation)")
    args.radii = tuple(sorted(set(args.radii or (args.eps,))))
    _evaluate_models(models, dict.fromkeys(models, test), args, out)
    return 0


def _load_model(path: str, args: argparse.Namespace) -> torch.nn.Module:
    """The network at ``path``, read as the loading options say."""
    return load_network(path, trust_pickle=args.trust_pickle, model_class=args.model_class,
                        model_kwargs=args.model_kwargs)


def _evaluate(args: argparse.Namespace) -> int:
    from convexrobust.data import source_kind
    from convexrobust.tabular import model_test_rows

    models = {Path(p).stem if Path(p).stem != "model" else Path(p).parent.name:
              _load_model(p, args) for p in args.model}
    source = _source(args)
    out = Path(args.out) if args.out else None
    if source_kind(source) == "tabular":
        # each model sees the test rows of its own fit: its split, mean and scale; unbounded
        data = {name: model_test_rows(model, source, label_column=args.label_column)
                for name, model in models.items()}
        _evaluate_models(models, data, args, out, clamp=None)
    else:
        split = load(source, split="test", label_column=args.label_column)
        _evaluate_models(models, dict.fromkeys(models, (split.x, split.y)), args, out)
    return 0


def _add_data_options(parser: argparse.ArgumentParser, *, tables: bool) -> None:
    """--data and --data-path (and, where a table can come in, --label-column)."""
    kinds = ("a name (digits, cifar10, breast-cancer) or a path: an image folder or zip, .npz, "
             "IDX folder or CSV/TSV table" if tables else
             "a name (digits, cifar10) or a path: an image folder or zip "
             "(train/<class>/<image>, test/<class>/<image>), .npz or IDX folder")
    parser.add_argument("--data", metavar="NAME|PATH", help=f"{kinds} (default digits)")
    parser.add_argument("--data-path", metavar="PATH",
                        help="the older spelling of --data PATH, kept: with --data cifar10 it "
                             "says where the CIFAR-10 zip or folder is (default "
                             "../shared/data/cifar10-jpeg.zip)")
    if tables:
        parser.add_argument("--label-column", type=_column,
                            help="a table's label column: header name or 0-based index "
                                 "(default: the last column)")


def _column(text: str) -> str | int:
    """A label column: an index when the text is an integer, else a header name."""
    try:
        return int(text)
    except ValueError:
        return text


def _add_eval_options(parser: argparse.ArgumentParser, *, tables: bool = False) -> None:
    _add_data_options(parser, tables=tables)
    parser.add_argument("--norm", choices=("2", "inf"), default="2")
    _add_attack_options(parser)
    parser.add_argument("--limit", type=int, help="use N samples (seeded) of each split")


def _add_attack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attack", type=_attacks, default=("pgd",),
                        help=f"attacks, comma-separated, from {', '.join(ATTACKS)} (default "
                             "pgd; autoattack needs pip install 'convexrobust[attack]'); the "
                             "pgd column counts a point robust when it is correct under every "
                             "one")
    parser.add_argument("--pgd-steps", type=int, default=50)
    parser.add_argument("--pgd-restarts", type=int, default=3)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """How network files are read (:func:`convexrobust.networks.registry.load_network`: a
    TorchScript archive, then a torch.save file)."""
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow checkpoints that pickle a whole nn.Module (runs code)")
    parser.add_argument("--model-class", metavar="PACKAGE.MODULE:CLASS",
                        help="the nn.Module class of a checkpoint that is a state_dict")
    parser.add_argument("--model-kwargs", metavar="JSON",
                        help='its constructor arguments, e.g. \'{"num_classes": 10}\'')


def _global_options(*, defaults: bool) -> argparse.ArgumentParser:
    """The options every subcommand reads, as a parent parser: with their defaults for the
    main parser, without (``SUPPRESS``) for the subcommands', so a value given before the
    subcommand is kept unless given again after it."""
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parent = argparse.ArgumentParser(add_help=False)
    options = parent.add_argument_group("global options (before or after the subcommand)")
    options.add_argument("--threads", type=_threads, default=default(os.cpu_count() or 1),
                         help="torch threads (default: the cores available)")
    options.add_argument("--device", default=default("cuda" if torch.cuda.is_available()
                                                     else "cpu"),
                         help="torch device (default: cuda when available, else cpu)")
    options.add_argument("--quiet", action="store_true", default=default(False),
                         help="no progress bars")
    options.add_argument("-v", "--verbose", action="store_true", default=default(False),
                         help="log progress details; tracebacks of errors")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``convexrobust`` command and its subcommands."""
    parser = argparse.ArgumentParser(prog="convexrobust", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[_global_options(defaults=True)])
    sub = parser.add_subparsers(dest="command", required=True)
    subcommand_parents = [_global_options(defaults=False)]

    def add(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=summary, parents=subcommand_parents,
                              epilog=f"examples:\n{EXAMPLES[name]}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    demo = add("demo", "images: train a LiResNet, retrain its last two layers with convex "
                       "robust heads, evaluate all three; a table: polynomial and ReLU convex "
                       "heads, nominal and robust")
    _add_data_options(demo, tables=True)
    demo.add_argument("--out", help="folder for results.json, the plot and the models "
                                    "(default out/demo)")
    demo.add_argument("--epochs", type=int, help="train a LiResNet for this many epochs (default "
                                                 "100; CIFAR-10 on 2 CPU cores takes about 3 min "
                                                 "per epoch); without it CIFAR-10 starts from "
                                                 "the committed benchmarks/models backbone")
    demo.add_argument("--checkpoint", help="use this trained LiResNet instead of training one")
    demo.add_argument("--head-train-limit", type=int,
                      help="train the heads on N training images (seeded sample; default: "
                           "all, CIFAR-10 5000; 0: all)")
    demo.add_argument("--solve-time-limit", type=_seconds, metavar="SECONDS",
                      help="cap each head candidate's solve (the certificate is computed on "
                           "the returned head, so a cap costs optimality, never soundness; "
                           "default: none, CIFAR-10 90; 0: none)")
    demo.add_argument("--test-limit", type=int,
                      help="evaluate on N test images (seeded sample; default: all, CIFAR-10 "
                           "200; 0: all)")
    demo.add_argument("--components", type=_count,
                      help="principal components fed to the heads (default: images 16, "
                           "tables 10; 0: all features)")
    demo.add_argument("--eps", type=_radius, help="l2 radius of robust training "
                                                  "(images 0.3, tables 0.5)")
    demo.add_argument("--radii", type=_radii,
                      help="test radii (default: digits 0.1,0.3,0.5; cifar10 "
                           "36/255,72/255,108/255; other data eps/2,eps,2*eps)")
    demo.add_argument("--solver", default="auto", help="auto, torch, clarabel, scs or mosek")
    demo.add_argument("--attack", type=_attacks,
                      help=f"attacks, comma-separated, from {', '.join(ATTACKS)} (default "
                           "pgd,autoattack; pgd alone, with a warning, when pyautoattack is "
                           "not installed)")
    demo.add_argument("--autoattack-limit", type=_count, metavar="N",
                      help=f"AutoAttack attacks N test points (seeded, classes in proportion; "
                           f"PGD attacks them all); 0: no AutoAttack (default "
                           f"{IMAGE_AUTOATTACK_LIMIT} for image data, {AUTOATTACK_LIMIT} for "
                           "tables)")
    demo.add_argument("--pgd-restarts", type=_positive_count, metavar="N",
                      help=f"PGD restarts (default {IMAGE_PGD_RESTARTS} for image data, "
                           f"{TabularConfig.pgd_restarts} for tables)")
    demo.add_argument("--autoattack-radii", type=_radii,
                      help="the test radii AutoAttack attacks at (default: --eps when it is a "
                           "test radius, else every test radius)")
    demo.set_defaults(run=_demo)

    fit = add("fit", "a table: a convex robust classifier on its standardised columns (the "
                     "identity feature map, K_h = 1), saved, evaluated and plotted")
    fit.add_argument("--data", required=True, metavar="NAME|PATH",
                     help="a CSV/TSV table (a single file is split into train and test), a "
                          "folder with train.csv and test.csv, an .npz of 2-D x_train/x_test, "
                          "or breast-cancer")
    fit.add_argument("--label-column", type=_column,
                     help="the label column: header name or 0-based index (default: the last)")
    fit.add_argument("--head", choices=("polynomial", "relu", "gated_relu"),
                     default="polynomial", help="polynomial: exact l2 certificates; relu: "
                     "sound certificates; gated_relu: trained nominally, no certificate")
    fit.add_argument("--norm", choices=("2", "inf"), default="2",
                     help="threat norm (inf: trained and certified through l2, sqrt(d)*eps)")
    fit.add_argument("--eps", type=_radius, default=0.5,
                     help="training radius in standardised units (0: nominal; default 0.5)")
    fit.add_argument("--radii", type=_radii, help="test radii (default eps/2,eps,2*eps)")
    fit.add_argument("--beta", type=float, default=1e-3, help="regularisation (default 1e-3)")
    fit.add_argument("--components", type=int, default=0,
                     help="project on the top K principal directions first (0: all columns; "
                          "keeps polynomial SDPs small on wide tables)")
    fit.add_argument("--n-patterns", type=int, default=50,
                     help="relu, gated_relu: activation patterns (default 50)")
    fit.add_argument("--solver", default="auto", help="auto, torch, clarabel, scs or mosek")
    fit.add_argument("--test-size", type=float, default=0.2,
                     help="held-out test fraction of a single table (stratified)")
    fit.add_argument("--seed", type=int, default=0, help="test split, patterns and attacks")
    fit.add_argument("--out", required=True, help="folder for model.pt, results.json and "
                                                  "accuracy.png")
    _add_attack_options(fit)
    fit.set_defaults(run=_fit)

    retrain = add("retrain", "retrain the last two layers of a network with a convex robust "
                             "head")
    retrain.add_argument("--checkpoint", required=True,
                         help="a LiResNet / PreActResNet18 model.pt, a TorchScript archive, "
                              "a state_dict (with --model-class) or a pickled module")
    retrain.add_argument("--head", choices=("polynomial", "relu", "gated_relu"),
                         default="polynomial")
    retrain.add_argument("--eps", type=_radius, required=True, help="input radius, e.g. 36/255")
    retrain.add_argument("--feature-module", help="name of the module whose input is the "
                                                  "feature (default: the model's features())")
    retrain.add_argument("--lipschitz", type=_lipschitz_arg, default="auto",
                         help="auto, none, or a guaranteed l2 bound of the feature map")
    retrain.add_argument("--feature-radius", type=_radius,
                         help="head radius in feature space when there is no bound")
    retrain.add_argument("--components", type=int,
                         help="project the features on their top K principal directions")
    retrain.add_argument("--beta", type=_numbers, help="candidate betas, e.g. 1e-3,1e-2")
    retrain.add_argument("--radius-scale", type=_numbers,
                         help="candidate multiples of the feature radius, e.g. 1,2")
    retrain.add_argument("--n-patterns", type=_integers, help="relu: candidate pattern counts")
    retrain.add_argument("--solver", default="auto")
    retrain.add_argument("--radii", type=_radii, help="evaluation radii (default: eps)")
    retrain.add_argument("--baseline", action="store_true",
                         help="also train the non-convex baseline: the same head by PGD "
                              "adversarial training in feature space")
    retrain.add_argument("--cache", action="store_true",
                         help="keep the features and every solved head candidate in OUT/cache")
    retrain.add_argument("--solve-time-limit", type=_seconds, metavar="SECONDS", default=0,
                         help="seconds per head solve (0: none, the default); a capped torch "
                              "solve returns its point and records its status")
    retrain.add_argument("--checkpoint-every", type=_seconds, metavar="SECONDS", default=0,
                         help="keep a running torch solve's state in OUT/cache every SECONDS "
                              "(implies --cache; 0: only when it returns)")
    retrain.add_argument("--resume", action="store_true",
                         help="reuse the candidates kept in OUT/cache, and continue those a "
                              "smaller --solve-time-limit stopped (implies --cache)")
    retrain.add_argument("--out", required=True, help="folder for model.pt, results, plot")
    _add_eval_options(retrain)
    _add_model_options(retrain)
    retrain.set_defaults(run=_retrain)

    evaluate = add("evaluate", "clean, attacked and certified accuracy of models")
    evaluate.add_argument("--model", nargs="+", required=True,
                          help="RobustModel, LiResNet, PreActResNet18 or TorchScript files, "
                               "or state_dicts of --model-class")
    evaluate.add_argument("--radii", type=_radii, required=True, help="e.g. 36/255,72/255")
    evaluate.add_argument("--out", help="folder for results.json and accuracy.png")
    _add_eval_options(evaluate, tables=True)
    _add_model_options(evaluate)
    evaluate.set_defaults(run=_evaluate)

    train = add("train-liresnet", "train a LiResNet with EMMA (its shape and classes from the "
                                  "data: square images of any size and channels)")
    _add_data_options(train, tables=False)
    train.add_argument("--arch", help="e.g. L4W32 (default), L6W64, L12W512")
    train.add_argument("--epochs", type=int)
    train.add_argument("--eps", type=_radius, default=0.3, help="l2 radius, e.g. 36/255")
    train.add_argument("--lr", type=float, default=TRAIN_DEFAULTS["lr"])
    train.add_argument("--batch-size", type=int, default=TRAIN_DEFAULTS["batch_size"])
    train.add_argument("--neck-dim", type=int, default=TRAIN_DEFAULTS["neck_dim"])
    train.add_argument("--loss", choices=("emma", "fixed", "trades"), default="emma")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, help="folder for checkpoint.pt, model.pt, log")
    train.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    train.set_defaults(run=_train_liresnet)

    preact = add("train-preact", "train a PreActResNet18 by cross-entropy with SGD or SAM (the "
                                 "empirical route's backbone; no certificate)")
    _add_data_options(preact, tables=False)
    preact.add_argument("--width", type=int, default=CLASSIFIER_DEFAULTS["width"],
                        help="channels of the first stage; features have 8·width dimensions "
                             "(default %(default)s; the standard network has 64)")
    preact.add_argument("--head-hidden", type=int, default=CLASSIFIER_DEFAULTS["head_hidden"])
    preact.add_argument("--epochs", type=int, default=CLASSIFIER_DEFAULTS["epochs"])
    preact.add_argument("--lr", type=float, default=CLASSIFIER_DEFAULTS["lr"])
    preact.add_argument("--batch-size", type=int, default=CLASSIFIER_DEFAULTS["batch_size"])
    preact.add_argument("--momentum", type=float, default=CLASSIFIER_DEFAULTS["momentum"])
    preact.add_argument("--weight-decay", type=float,
                        default=CLASSIFIER_DEFAULTS["weight_decay"])
    preact.add_argument("--sam-rho", type=float, default=CLASSIFIER_DEFAULTS["sam_rho"],
                        help="SAM's neighbourhood radius (0: plain SGD, the default; Foret et "
                             "al. use 0.05)")
    preact.add_argument("--seed", type=int, default=0)
    preact.add_argument("--out", required=True, help="folder for checkpoint.pt, model.pt, log")
    preact.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    preact.set_defaults(run=_train_preact)

    certify = add("certify", "clean accuracy and VRA of a trained LiResNet")
    certify.add_argument("--checkpoint", required=True, help="DIR/model.pt")
    _add_data_options(certify, tables=False)
    certify.add_argument("--eps", type=_radii, default=(0.3,), help="radii, e.g. 0.3,0.5")
    certify.add_argument("--json", help="write the report as JSON here")
    certify.set_defaults(run=_certify)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status: 0
    on success, 1 when convexrobust raises a :class:`~convexrobust.errors.ConvexRobustError`
    (printed as one line, with its traceback under -v). A usage error exits with status 2
    (argparse's ``SystemExit``); any other exception propagates, traceback and all."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    try:
        args.device = check_device(args.device)
        _check_attack_packages(getattr(args, "attack", None) or ())
        return args.run(args)
    except ConvexRobustError as err:
        if args.verbose:
            traceback.print_exc()
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"convexrobust: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
