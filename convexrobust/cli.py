"""The convexrobust command: train a LiResNet, retrain the last two layers of a network
with a convex robust head, evaluate and certify models.

The global options (--threads, --device, --quiet, -v) go before or after the subcommand; given
in both places, the one after the subcommand wins. Exit status: 0 on success, 2 for a usage
error (bad options), 1 for an error convexrobust reports (one line on stderr; -v adds the
traceback)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

import torch

from convexrobust._io import write_json_atomic
from convexrobust._validation import check_device
from convexrobust.errors import ConvexRobustError
from convexrobust.networks.registry import load_network
from convexrobust.training import TrainConfig

TRAIN_DEFAULTS = asdict(TrainConfig())

#: An example command line of each subcommand, shown at the end of its --help.
EXAMPLES = {
    "demo": """\
  convexrobust demo                          # digits: a few minutes on 2 CPU cores
  convexrobust demo --data breast-cancer --out out/tabular
  convexrobust --threads 8 demo --data cifar10 --epochs 200 --out out/cifar""",
    "retrain": """\
  convexrobust retrain --checkpoint out/liresnet/model.pt --eps 0.3 --radii 0.1,0.3 \\
      --out out/retrain
  # a state_dict of your own class, features = the input of its layer `fc`:
  convexrobust retrain --checkpoint resnet.pt --model-class mypackage.nets:ResNet \\
      --model-kwargs '{"num_classes": 10}' --feature-module fc --lipschitz none \\
      --feature-radius 1 --data cifar10 --eps 36/255 --out out/resnet
  # a TorchScript archive whose features(x) is exported with @torch.jit.export:
  convexrobust retrain --checkpoint scripted.pt --lipschitz none --feature-radius 1 \\
      --eps 0.3 --out out/scripted""",
    "evaluate": """\
  convexrobust evaluate --model out/retrain/model.pt out/liresnet/model.pt --radii 0.1,0.3 \\
      --out out/eval
  convexrobust evaluate --model out/cifar/model.pt --data cifar10 --radii 36/255,72/255 \\
      --device cuda""",
    "train-liresnet": """\
  convexrobust train-liresnet --out out/liresnet        # digits, L4W32
  convexrobust --threads 2 train-liresnet --data cifar10 --arch L4W32 --epochs 7 \\
      --eps 36/255 --out out/cifar-l4w32
  torchrun --nproc-per-node 4 -m convexrobust.cli train-liresnet --data cifar10 --out out/c""",
    "certify": """\
  convexrobust certify --checkpoint out/liresnet/model.pt --eps 0.1,0.3,0.5
  convexrobust certify --checkpoint out/cifar-l4w32/model.pt --data cifar10 \\
      --eps 36/255,72/255 --json out/cifar-l4w32/vra.json""",
}


def _threads(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("--threads must be >= 1")
    return n


def _print_head_table(records: list[dict], radii: tuple[float, ...]) -> None:
    models = list(dict.fromkeys(r["model"] for r in records))
    head = f"{'model':<22}{'solver':<10}{'solve s':>8}{'neurons':>8}{'clean':>7}"
    head += "".join(f"{f'pgd@{r:g}':>10}" for r in radii)
    head += "".join(f"{f'cert@{r:g}':>10}" for r in radii)
    print(head)
    print("-" * len(head))
    for m in models:
        rows = {r["radius"]: r for r in records if r["model"] == m}
        first = rows[radii[0]]
        line = (f"{m:<22}{first['solver']:<10}{first['solve_time']:>8.1f}"
                f"{first['neurons']:>8d}{first['clean']:>7.3f}")
        line += "".join(f"{rows[r]['pgd']:>10.3f}" for r in radii)
        line += "".join(f"{rows[r]['certified']:>10.3f}" for r in radii)
        print(line)


def _demo(args: argparse.Namespace) -> int:
    if args.data == "breast-cancer":
        return _tabular_demo(args)
    from convexrobust.demo import DemoConfig, run_demo
    from convexrobust.evaluation import format_table

    defaults = DemoConfig()
    cfg = DemoConfig(data=args.data, epochs=args.epochs or defaults.epochs,
                     eps=args.eps if args.eps is not None else defaults.eps,
                     solver=args.solver, data_path=args.data_path, checkpoint=args.checkpoint,
                     head_train_limit=args.head_train_limit, test_limit=args.test_limit)
    out = Path(args.out or "out/demo")
    source = (f"LiResNet from {cfg.checkpoint}" if cfg.checkpoint else
              f"LiResNet {cfg.arch} trained with EMMA for {cfg.epochs} epochs")
    print(f"convexrobust demo: {cfg.data}; {source}, then its last two layers retrained by "
          f"convex polynomial and ReLU heads at l2 eps = {cfg.eps:g} (feature radius K_h*eps)")
    records = run_demo(cfg, out, progress=not args.quiet)
    print(format_table(records))
    print("clean: test accuracy; pgd: accuracy under PGD-l2 (50 steps, 3 restarts, inputs in "
          "[0, 1]) through the whole model; certified: fraction certified at the radius "
          "(liresnet: GloRo; polynomial: exact head certificate / K_h; relu: sound bound / K_h)")
    print(f"wrote {out / 'results.json'}, {out / 'accuracy.png'} and the models in {out}")
    return 0


def _tabular_demo(args: argparse.Namespace) -> int:
    from convexrobust.demo_tabular import TabularDemoConfig, run_tabular_demo

    eps = args.eps if args.eps is not None else TabularDemoConfig().eps
    cfg = TabularDemoConfig(components=args.components, eps=eps, solver=args.solver)
    print(f"convexrobust demo: breast cancer (80/20 split, standardised), "
          f"features = top {cfg.components or 30} principal components (K_h = 1), "
          f"robust heads trained at l2 eps = {cfg.eps:g}")
    records = run_tabular_demo(cfg, progress=not args.quiet)
    _print_head_table(records, cfg.radii)
    print("clean: test accuracy; pgd@r: accuracy under a PGD-l2 attack of radius r on the whole "
          "model (50 steps, 3 restarts); cert@r: fraction certified at radius r "
          "(polynomial: exact l2 certificate; relu: sound lower bound)")
    if args.out:
        path = Path(args.out) / "results.json"
        write_json_atomic(path, records)
        print(f"wrote {path}")
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


def _radii(text: str) -> tuple[float, ...]:
    return tuple(_radius(t) for t in text.split(","))


def _image_data(name: str, path: str | None, split: str):
    from convexrobust.data import cifar10, digits
    from convexrobust.training import as_tensors

    if name == "digits":
        d = digits()
        return as_tensors(*((d.X_train, d.y_train) if split == "train" else (d.X_test, d.y_test)))
    return as_tensors(*cifar10(path, split=split))


def _train_liresnet(args: argparse.Namespace) -> int:
    from convexrobust.training import TrainConfig, evaluate_gloro, train_liresnet

    defaults = TrainConfig()
    cfg = TrainConfig(data=args.data, arch=args.arch or defaults.arch,
                      epochs=args.epochs or defaults.epochs, eps=args.eps, lr=args.lr,
                      batch_size=args.batch_size, loss=args.loss, seed=args.seed,
                      neck_dim=args.neck_dim)
    x, y = _image_data(args.data, args.data_path, "train")
    x_test, y_test = _image_data(args.data, args.data_path, "test")
    device = args.device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: data parallel
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if dist.get_rank() > 0:
            train_liresnet(cfg, x, y, Path(args.out), resume=args.resume, progress=False,
                           device=device)
            return 0
    model = train_liresnet(cfg, x, y, Path(args.out), resume=args.resume,
                           progress=not args.quiet, device=device)
    report = evaluate_gloro(model, x_test, y_test, (cfg.eps,))
    print(f"wrote {Path(args.out) / 'model.pt'}: clean accuracy {report['clean_accuracy']:.4f}, "
          f"VRA@{cfg.eps:g} {report['vra'][f'{cfg.eps:g}']:.4f} "
          f"(guaranteed K = {report['lipschitz']['value']:.4g})")
    return 0


def _certify(args: argparse.Namespace) -> int:
    from convexrobust.networks.liresnet import LiResNet
    from convexrobust.training import evaluate_gloro

    model = LiResNet.load(args.checkpoint, map_location=args.device)
    x, y = _image_data(args.data, args.data_path, "test")
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


def _evaluate_models(models: dict[str, torch.nn.Module], args: argparse.Namespace,
                     out: Path | None) -> list[dict]:
    from convexrobust.data import subset
    from convexrobust.evaluation import evaluate, format_table
    from convexrobust.plots import plot_accuracy_vs_radius

    x, y = subset(*_image_data(args.data, args.data_path, "test"), args.limit)
    records: list[dict] = []
    for name, model in models.items():
        report = evaluate(model, (x, y), args.radii, norm=args.norm, name=name,
                          pgd_steps=args.pgd_steps, pgd_restarts=args.pgd_restarts,
                          progress=not args.quiet, device=args.device)
        records += [{**r, "seconds": report.seconds} for r in report.records]
    print(format_table(records))
    if out is not None:
        write_json_atomic(out / "results.json", records)
        plot_accuracy_vs_radius(records, out / "accuracy.png",
                                title=f"{args.data}, l{args.norm} threat")
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
    from convexrobust.pipeline import retrain_last_two_layers
    from convexrobust.threat import ThreatModel

    model = _load_model(args.checkpoint, args)

    x, y = subset(*_image_data(args.data, args.data_path, "train"), args.limit)
    out = Path(args.out)
    grid = {key: value for key, value in (("beta", args.beta),
                                          ("radius_scale", args.radius_scale),
                                          ("n_patterns", args.n_patterns)) if value}
    robust = retrain_last_two_layers(
        model, (x, y), head=args.head, threat=ThreatModel(args.norm, args.eps),
        solver=args.solver, lipschitz=args.lipschitz, feature_module=args.feature_module,
        feature_radius=args.feature_radius, components=args.components, grid=grid,
        device=args.device, progress=not args.quiet, cache=out / "cache" if args.cache else None)
    robust.save(out / "model.pt")
    kind = (f"certified (guaranteed K_h = {robust.feature_lipschitz:.4g})"
            if robust.certifiable else "empirical only (no guaranteed bound)")
    print(f"wrote {out / 'model.pt'}: {args.head} head, {robust.head.n_neurons} neurons, "
          f"chosen on validation: {robust.info['chosen']}; {kind}")
    models = {"original": model, f"convex-{args.head}": robust}
    if args.baseline:
        from convexrobust.pipeline import pgd_trained_head

        baseline = pgd_trained_head(robust, (x, y), device=args.device, progress=not args.quiet,
                                    cache=out / "cache" if args.cache else None)
        baseline.save(out / "pgd-head.pt")
        models["pgd-head"] = baseline
        print(f"wrote {out / 'pgd-head.pt'}: the same head width trained by PGD adversarial "
              f"training (lr {baseline.info['chosen']['lr']:g}, chosen on validation)")
    args.radii = tuple(sorted(set(args.radii or (args.eps,))))
    _evaluate_models(models, args, out)
    return 0


def _load_model(path: str, args: argparse.Namespace) -> torch.nn.Module:
    """The network at ``path``, read as the loading options say."""
    return load_network(path, trust_pickle=args.trust_pickle, model_class=args.model_class,
                        model_kwargs=args.model_kwargs)


def _evaluate(args: argparse.Namespace) -> int:
    models = {Path(p).stem if Path(p).stem != "model" else Path(p).parent.name:
              _load_model(p, args) for p in args.model}
    _evaluate_models(models, args, Path(args.out) if args.out else None)
    return 0


def _add_eval_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", choices=("digits", "cifar10"), default="digits")
    parser.add_argument("--data-path", help="CIFAR-10 zip or folder (default: ../shared/data)")
    parser.add_argument("--norm", choices=("2", "inf"), default="2")
    parser.add_argument("--pgd-steps", type=int, default=50)
    parser.add_argument("--pgd-restarts", type=int, default=3)
    parser.add_argument("--limit", type=int, help="use N samples (seeded) of each split")


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

    demo = add("demo", "train a LiResNet, retrain its last two layers with convex robust "
                       "heads, evaluate all three")
    demo.add_argument("--data", choices=("digits", "cifar10", "breast-cancer"),
                      default="digits", help="breast-cancer: the four convex heads on "
                      "tabular features (no LiResNet)")
    demo.add_argument("--data-path", help="CIFAR-10 zip or folder (default: ../shared/data)")
    demo.add_argument("--out", help="folder for results.json, the plot and the models "
                                    "(default out/demo)")
    demo.add_argument("--epochs", type=int, help="LiResNet epochs (default 100; CIFAR-10 on a "
                                                 "CPU takes about 2 min per epoch)")
    demo.add_argument("--checkpoint", help="use this trained LiResNet instead of training one")
    demo.add_argument("--head-train-limit", type=int,
                      help="train the heads on N training images (seeded sample)")
    demo.add_argument("--test-limit", type=int,
                      help="evaluate on N test images (seeded sample)")
    demo.add_argument("--components", type=int, default=10,
                      help="breast-cancer: principal components fed to the heads (0: all 30)")
    demo.add_argument("--eps", type=_radius, help="l2 radius of robust training "
                                                  "(digits 0.3, breast-cancer 0.5)")
    demo.add_argument("--solver", default="auto", help="auto, torch, clarabel, scs or mosek")
    demo.set_defaults(run=_demo)

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
    retrain.add_argument("--cache", action="store_true", help="cache features in OUT/cache")
    retrain.add_argument("--out", required=True, help="folder for model.pt, results, plot")
    _add_eval_options(retrain)
    _add_model_options(retrain)
    retrain.set_defaults(run=_retrain)

    evaluate = add("evaluate", "clean, PGD and certified accuracy of models")
    evaluate.add_argument("--model", nargs="+", required=True,
                          help="RobustModel, LiResNet, PreActResNet18 or TorchScript files, "
                               "or state_dicts of --model-class")
    evaluate.add_argument("--radii", type=_radii, required=True, help="e.g. 36/255,72/255")
    evaluate.add_argument("--out", help="folder for results.json and accuracy.png")
    _add_eval_options(evaluate)
    _add_model_options(evaluate)
    evaluate.set_defaults(run=_evaluate)

    train = add("train-liresnet", "train a LiResNet with EMMA")
    train.add_argument("--data", choices=("digits", "cifar10"), default="digits")
    train.add_argument("--data-path", help="CIFAR-10 zip or folder (default: ../shared/data)")
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

    certify = add("certify", "clean accuracy and VRA of a trained LiResNet")
    certify.add_argument("--checkpoint", required=True, help="DIR/model.pt")
    certify.add_argument("--data", choices=("digits", "cifar10"), default="digits")
    certify.add_argument("--data-path")
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
        return args.run(args)
    except ConvexRobustError as err:
        if args.verbose:
            traceback.print_exc()
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"convexrobust: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
