"""The ``convexrobust`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

import torch

from convexrobust._io import write_atomic
from convexrobust.errors import ConvexRobustError
from convexrobust.training import TrainConfig

TRAIN_DEFAULTS = asdict(TrainConfig())


def _threads(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("--threads must be >= 1")
    return n


def _write_json_atomic(path: Path, payload: object) -> None:
    """Write JSON atomically: never a half-written file."""

    def dump(tmp: Path) -> None:
        with open(tmp, "w") as fh:
            json.dump(payload, fh, indent=2)

    write_atomic(path, dump)


def _print_demo_table(records: list[dict], radii: tuple[float, ...]) -> None:
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
    from convexrobust.demo import DemoConfig, run_demo

    cfg = DemoConfig(components=args.components, eps=args.eps, solver=args.solver)
    print(f"convexrobust demo: breast cancer (80/20 split, standardised), "
          f"features = top {cfg.components or 30} principal components (K_h = 1), "
          f"robust heads trained at l2 eps = {cfg.eps:g}")
    records = run_demo(cfg, progress=not args.quiet)
    _print_demo_table(records, cfg.radii)
    print("clean: test accuracy; pgd@r: accuracy under a PGD-l2 attack of radius r on the whole "
          "model (50 steps, 3 restarts); cert@r: fraction certified at radius r "
          "(polynomial: exact l2 certificate; relu: sound lower bound)")
    if args.out:
        path = Path(args.out) / "results.json"
        _write_json_atomic(path, records)
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
    device = torch.device(args.device)
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

    path = Path(args.checkpoint)
    if not path.exists():
        print(f"convexrobust: error: no checkpoint at {path}", file=sys.stderr)
        return 2
    model = LiResNet.load(path)
    x, y = _image_data(args.data, args.data_path, "test")
    report = evaluate_gloro(model, x, y, args.eps, kind="guaranteed")
    print(f"clean accuracy: {report['clean_accuracy']:.4f}")
    for eps, vra in report["vra"].items():
        print(f"VRA@{eps}: {vra:.4f}")
    print(f"Lipschitz bound of the backbone: {report['lipschitz']['value']:.6g} "
          "(guaranteed: float64 per-layer operator norms — exact SVD for dense layers and "
          "patchify convolutions, per-frequency SVD of the circular embedding otherwise)")
    if args.json:
        _write_json_atomic(Path(args.json), report)
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convexrobust", description=__doc__)
    parser.add_argument("--threads", type=_threads, default=os.cpu_count() or 1,
                        help="torch threads (default: the cores available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="nominal vs robust convex heads on breast cancer")
    demo.add_argument("--out", help="folder for results.json")
    demo.add_argument("--components", type=int, default=10,
                      help="principal components fed to the heads (0: all 30 features)")
    demo.add_argument("--eps", type=float, default=0.5, help="l2 radius of robust training")
    demo.add_argument("--solver", default="auto", help="auto, clarabel, scs or mosek")
    demo.set_defaults(run=_demo)

    train = sub.add_parser("train-liresnet", help="train a LiResNet with EMMA")
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
    train.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                       help="torch device (default: cuda when available)")
    train.set_defaults(run=_train_liresnet)

    certify = sub.add_parser("certify", help="clean accuracy and VRA of a trained LiResNet")
    certify.add_argument("--checkpoint", required=True, help="DIR/model.pt")
    certify.add_argument("--data", choices=("digits", "cifar10"), default="digits")
    certify.add_argument("--data-path")
    certify.add_argument("--eps", type=_radii, default=(0.3,), help="radii, e.g. 0.3,0.5")
    certify.add_argument("--json", help="write the report as JSON here")
    certify.set_defaults(run=_certify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    try:
        return args.run(args)
    except ConvexRobustError as err:
        print(f"convexrobust: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
