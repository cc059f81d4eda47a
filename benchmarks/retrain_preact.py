"""The empirical route, Kuelbs, Lall & Pilanci's setting at CPU scale: the last two layers
(``fc1 → ReLU → fc2``) of a PreActResNet18 trained on CIFAR-10 replaced by convex robust heads
against an ℓ∞ threat, beside the same network trained with SAM, both backbones' own heads and
the PGD-trained two-layer baseline.

Backbones: the committed ``benchmarks/models/preact-cifar10-w8-{sgd,sam}.pt`` (their README
gives the commands; ``--backbones`` takes other files as ``name=path``). No Lipschitz bound is
known for them, so every number here is empirical (an attack's), none certified.

For every backbone and input radius ε of ``--eps`` (default 1, 2, 4, 8 /255):

1. The feature radius the heads train at is anchored where the threat moves the features: r₀ is
   the median over the selection images of ``‖h(x + δ) − h(x)‖∞`` for δ the backbone's own
   FGSM perturbation at ε; the candidates are ``s·r₀`` for ``s`` in ``--radius-scales``.
2. For each family (``--heads``, default the convex ReLU and polynomial programs) and each scale,
   ``retrain_last_two_layers`` trains on the training images less a stratified, seeded
   validation split (``--validation`` images), choosing β on that split; the scale is then
   chosen by accuracy under input-space ℓ∞ PGD (``--select-steps`` steps, one restart) at ε
   through the whole network on ``--select-limit`` of the validation images, ties to clean
   accuracy — never on test data.
3. The PGD-trained baseline: a two-layer ReLU head as wide as the chosen convex ReLU head,
   trained by PGD in feature space at the same feature radius (``pgd_trained_head``).
4. Evaluation on ``--test-limit`` test images (stratified, seeded; default 1,000) at ε: clean,
   ℓ∞ PGD (``--pgd-steps`` 50, ``--pgd-restarts`` 2, margin loss, inputs clamped to [0, 1]) and
   FGSM (one step of length ε), each model at the radius its head was trained for; the
   backbones at every radius.

Writes ``benchmarks/results/retrain-preact.json`` (rows with chosen parameters, feature radii,
candidates, wall times per stage) and prints the table the README carries. Stages (each head,
each evaluation) are kept in ``--cache``; ``--resume`` continues a stopped run without redoing
finished stages or solved candidates. A stage is kept only when it was made from the same
backbone file (its SHA-256) with the same settings: a backbone's evaluation with the same
radii, test images and attack; a head with the same ``--betas``, ``--radius-scales``,
``--solve-time-limit``, ``--components``, ``--patterns``, data and selection limits and attack
(else it is trained again, and the PGD-trained baseline with its ReLU head).
``--solve-time-limit`` caps each solver's run on a head candidate: a torch solve (what "auto"
takes for heads on many images) returns its point at the cap, and the candidate keeps its
``time_limit`` status in the record; a conic solve that hits it passes the program on to the
next solver of the "auto" chain, as any failed conic solve does. Resumed under a larger limit
(or none), a capped torch solve continues from where it stopped
(:mod:`convexrobust.kept_solve`); ``--checkpoint-every`` keeps it while it runs.

    python benchmarks/retrain_preact.py                       # both backbones, ε = 1,2,4,8/255
    python benchmarks/retrain_preact.py --eps 8 --heads relu --train-limit 5000   # a quick look
    python benchmarks/retrain_preact.py --heads none          # the backbones' own heads only
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from fractions import Fraction
from pathlib import Path

import torch
from record import Stages, nonnegative_seconds, positive_numbers, resumed_seconds, write_record

import convexrobust as cr
from convexrobust.attacks import fgsm_attack
from convexrobust.data import cifar10, stratified_subset
from convexrobust.evaluation import evaluate
from convexrobust.networks import PreActResNet18
from convexrobust.pipeline import pgd_trained_head, retrain_last_two_layers
from convexrobust.robust_model import RobustModel
from convexrobust.training_common import as_tensors

RESULTS = Path(__file__).parent / "results"
MODELS = Path(__file__).parent / "models"
BACKBONES = {"sgd": MODELS / "preact-cifar10-w8-sgd.pt", "sam": MODELS / "preact-cifar10-w8-sam.pt"}
HEADS = ("relu", "polynomial")
BETAS = (1e-3, 1e-2)


def split(x: torch.Tensor, y: torch.Tensor, n_val: int, seed: int = 0
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A stratified, seeded validation split of ``n_val`` images and the rest, in data order."""
    val_idx, _ = stratified_subset(torch.arange(len(y)), y, n_val, seed)
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[val_idx] = False
    return x[keep], y[keep], x[val_idx], y[val_idx]


@torch.no_grad()
def feature_displacement(backbone: PreActResNet18, x: torch.Tensor, y: torch.Tensor,
                         eps: float) -> float:
    """r₀: the median ``‖h(x + δ) − h(x)‖∞`` for δ the backbone's own FGSM perturbation at ε
    (module docstring, step 1)."""
    with torch.enable_grad():
        adv = fgsm_attack(backbone, x, y, norm="inf", eps=eps, clamp=(0.0, 1.0))
    moved = (backbone.features(adv) - backbone.features(x)).abs().amax(dim=1)
    return float(moved.median())


def robust_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                    steps: int) -> tuple[float, float]:
    """(accuracy under one-restart ℓ∞ PGD of ``steps`` steps at ``eps``, clean accuracy)."""
    report = evaluate(model, (x, y), (eps,), norm="inf", attacks=("pgd",), certify=False,
                      pgd_steps=steps, pgd_restarts=1, progress=False)
    record = report.records[0]
    return record["pgd"], record["clean"]


def evaluate_row(model: torch.nn.Module, name: str, test: tuple, radii: tuple[float, ...],
                 args: argparse.Namespace) -> dict:
    """Clean, PGD and FGSM accuracy of ``model`` on ``test`` at ``radii`` (module docstring,
    step 4), with the seconds each attack took."""
    records, seconds = [], {}
    for attack in ("pgd", "fgsm"):
        report = evaluate(model, test, radii, norm="inf", attacks=(attack,), certify=False,
                          pgd_steps=args.pgd_steps, pgd_restarts=args.pgd_restarts,
                          progress=not args.quiet, name=name)
        seconds[attack] = report.seconds["pgd"]
        for i, record in enumerate(report.records):
            if attack == "pgd":
                records.append({**record, "fgsm": None})
            else:
                records[i]["fgsm"] = record["pgd"]
    seconds["clean"] = report.seconds["clean"]
    cells = "  ".join(f"ε={r['radius'] * 255:g}/255 clean {r['clean']:.3f} pgd {r['pgd']:.3f} "
                      f"fgsm {r['fgsm']:.3f}" for r in records)
    print(f"  {name:<22} {cells}", flush=True)
    return {"model": name, "records": records, "eval_seconds": seconds}


def fit_head(backbone: PreActResNet18, head: str, eps: float, r0: float, train: tuple,
             val: tuple, select: tuple, args: argparse.Namespace, cache: Path
             ) -> tuple[RobustModel, dict]:
    """The head of ``head`` family at ε: one ``retrain_last_two_layers`` per radius scale, the
    scale chosen by input-space PGD on the selection images (module docstring, step 2)."""
    best, tried = None, []
    for scale in args.radius_scales:
        start = time.perf_counter()
        model = retrain_last_two_layers(
            backbone, train, head=head, threat=cr.Linf(eps), lipschitz=None,
            feature_radius=scale * r0, validation=val, components=args.components or None,
            grid={"beta": args.betas, "radius_scale": (1.0,), "n_patterns": (args.patterns,)},
            solver_options=({"time_limit": args.solve_time_limit} if args.solve_time_limit
                            else None),
            checkpoint_every=args.checkpoint_every or None, cache=cache, resume=args.resume,
            progress=not args.quiet)
        seconds = time.perf_counter() - start + resumed_seconds(model.info)
        robust, clean = robust_accuracy(model, *select, eps, args.select_steps)
        tried.append({"radius_scale": scale, "feature_radius": scale * r0, "train_seconds":
                      seconds, "select_pgd": robust, "select_clean": clean,
                      "chosen": model.info["chosen"], "candidates": model.info["candidates"],
                      "neurons": int(model.head.n_neurons)})
        if best is None or (robust, clean) > best[0]:
            best = ((robust, clean), model, tried[-1])
    assert best is not None
    _, model, chosen = best
    return model, {"chosen_scale": chosen["radius_scale"], "feature_radius":
                   chosen["feature_radius"], "neurons": chosen["neurons"],
                   "train_seconds": sum(t["train_seconds"] for t in tried), "scales": tried}


def table(rows: list[dict]) -> str:
    """Model, ε (/255), clean, PGD and FGSM accuracy, and train seconds, one line per record."""
    lines = [("model", "eps", "clean", "pgd", "fgsm", "train s")]
    for r in rows:
        for rec in r["records"]:
            lines.append((r["model"], f"{rec['radius'] * 255:g}/255", f"{rec['clean']:.4f}",
                          f"{rec['pgd']:.4f}", f"{rec['fgsm']:.4f}",
                          f"{r['train_seconds']:.0f}" if "train_seconds" in r else "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(line, widths, strict=True)))
           for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _radius(text: str) -> float:
    """An ε in units of 1/255 ("8") or as a fraction ("8/255")."""
    value = Fraction(text)
    return float(value if "/" in text else value / 255)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="sgd,sam",
                        help="comma-separated committed names (sgd, sam) or name=path.pt")
    parser.add_argument("--eps", default="1,2,4,8", help="ℓ∞ radii in 1/255 (default 1,2,4,8)")
    parser.add_argument("--heads", default=",".join(HEADS),
                        help="comma-separated head families (relu, polynomial), or none: the "
                             "backbones only")
    parser.add_argument("--radius-scales", default="0.25,0.5,1", type=positive_numbers,
                        help="feature radii tried, as multiples of the anchor r0 (default "
                             "0.25,0.5,1: selection took 0.25 at 1 and 2/255, README)")
    parser.add_argument("--components", type=int, default=16,
                        help="principal components fed to the heads (0: all features)")
    parser.add_argument("--patterns", type=int, default=50, help="ReLU head patterns P")
    parser.add_argument("--betas", default=",".join(f"{b:g}" for b in BETAS),
                        type=positive_numbers,
                        help="the β grid chosen from on validation (default 1e-3,1e-2)")
    parser.add_argument("--solve-time-limit", type=nonnegative_seconds, default=0,
                        help="seconds per head solve (0: none); a capped solve's status "
                             "(time_limit) is recorded with its candidate")
    parser.add_argument("--checkpoint-every", type=nonnegative_seconds, default=0,
                        help="seconds: keep each running torch solve's state in --cache this "
                             "often (0: only when it returns)")
    parser.add_argument("--train-limit", type=int, default=0,
                        help="training images (stratified, seeded; 0: all 50,000)")
    parser.add_argument("--validation", type=int, default=5000,
                        help="training images held out to choose β and the radius")
    parser.add_argument("--select-limit", type=int, default=500)
    parser.add_argument("--select-steps", type=int, default=10)
    parser.add_argument("--test-limit", type=int, default=1000)
    parser.add_argument("--pgd-steps", type=int, default=50)
    parser.add_argument("--pgd-restarts", type=int, default=2)
    parser.add_argument("--pgd-head-epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default="/tmp/convexrobust-retrain-preact")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--resume", action="store_true",
                        help="reuse the stages and solved candidates a stopped run kept in "
                             "--cache")
    parser.add_argument("--kept-only", action="store_true",
                        help="make no stage: print and write the record of the stages --cache "
                             "keeps for these settings (implies --resume)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    radii = tuple(_radius(t) for t in args.eps.split(","))
    heads = () if args.heads == "none" else tuple(args.heads.split(","))
    unknown = sorted(set(heads) - set(HEADS))
    if unknown:
        parser.error(f"--heads: unknown {', '.join(unknown)}; choose from "
                     f"{', '.join(HEADS)} or none")
    backbones = {}
    for item in args.backbones.split(","):
        name, _, path = item.partition("=")
        backbones[name] = Path(path) if path else BACKBONES[name]
    cache = Path(args.cache)
    stages = Stages(cache / "stages", args.resume, read_only=args.kept_only)

    # what defines a head stage beyond its backbone and ε: a kept stage with other settings is
    # trained again on --resume (its solved candidates are reused where their programs match)
    settings = {"betas": list(args.betas), "radius_scales": list(args.radius_scales),
                "solve_time_limit": args.solve_time_limit or None,
                "components": args.components, "patterns": args.patterns,
                "train_limit": args.train_limit, "validation": args.validation,
                "select_limit": args.select_limit, "select_steps": args.select_steps,
                # what defines an evaluation (a backbone's also by its radii, below)
                "attacks": {"test_limit": args.test_limit, "pgd_steps": args.pgd_steps,
                            "pgd_restarts": args.pgd_restarts}}
    attack_settings = {**settings["attacks"], "radii": list(radii)}

    wall = time.perf_counter()
    x, y = as_tensors(*cifar10(split="train"))
    if args.train_limit:
        x, y = stratified_subset(x, y, args.train_limit, seed=0)
    x_test, y_test = stratified_subset(*as_tensors(*cifar10(split="test")), args.test_limit,
                                       seed=0)
    x_tr, y_tr, x_val, y_val = split(x, y, args.validation)
    select = stratified_subset(x_val, y_val, args.select_limit, seed=1)
    header = (f"cifar10, l-inf: heads on {len(y_tr)} training images ({len(y_val)} held out "
              f"for β and the radius; the radius by {args.select_steps}-step PGD on "
              f"{len(select[1])} of them), {args.components or 'all'} components, "
              f"{len(y_test)} test images: PGD {args.pgd_steps} steps x {args.pgd_restarts} "
              f"restarts and FGSM, inputs in [0, 1]; {args.threads} threads")
    print(header, flush=True)
    rows = []
    for name, path in backbones.items():
        backbone = PreActResNet18.load(path).eval()
        # a stage is kept only for the same backbone file (its bytes) and settings
        source = {"backbone_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        backbone_settings = {**attack_settings, **source}
        head_settings = {**settings, **source}
        pgd_settings = {**head_settings, "pgd_head_epochs": args.pgd_head_epochs}
        row = stages.finished(name, backbone_settings)
        if row is None and not args.kept_only:
            row = {**evaluate_row(backbone, name, (x_test, y_test), radii, args),
                   "family": "backbone", "backbone": name, "eps": None, "source": str(path),
                   "settings": backbone_settings}
            stages.finish(name, row)
        if row is not None:
            rows.append(row)
        for eps in radii:
            tag = f"{eps * 255:g}"
            r0 = None
            relu, relu_trained = None, False
            for head in heads:
                label = f"{head}-{name}@{tag}"
                row = stages.finished(label, head_settings)
                if row is None and args.kept_only:
                    continue
                if row is None:
                    relu_trained |= head == "relu"
                    if r0 is None:
                        r0 = feature_displacement(backbone, *select, eps)
                    model, info = fit_head(backbone, head, eps, r0, (x_tr, y_tr),
                                           (x_val, y_val), select, args, cache / "features")
                    row = {**evaluate_row(model, label, (x_test, y_test), (eps,), args),
                           "family": head, "backbone": name, "eps": eps, "r0": r0,
                           "settings": head_settings, **info}
                    model.save(stages.path(label, ".pt"))
                    stages.finish(label, row)
                rows.append(row)
                if head == "relu":
                    relu = RobustModel.load(stages.path(label, ".pt"))
            label = f"pgd-head-{name}@{tag}"
            # the baseline copies the ReLU head's width: made again with it
            if relu_trained and stages.discard(label):
                print(f"  {label:<18} its ReLU head was trained again: made again", flush=True)
            row = stages.finished(label, pgd_settings)
            if row is None and relu is not None and not args.kept_only:
                start = time.perf_counter()
                hidden = relu.head.n_neurons or args.patterns
                model = pgd_trained_head(relu, (x_tr, y_tr), hidden=hidden,
                                         validation=(x_val, y_val), epochs=args.pgd_head_epochs,
                                         cache=cache / "features", progress=not args.quiet)
                seconds = time.perf_counter() - start
                row = {**evaluate_row(model, label, (x_test, y_test), (eps,), args),
                       "family": "pgd-head", "backbone": name, "eps": eps,
                       "feature_radius": model.info["feature_radius"], "neurons": hidden,
                       "train_seconds": seconds, "chosen": model.info["chosen"],
                       "settings": pgd_settings}
                stages.finish(label, row)
            if row is not None:
                rows.append(row)

    wall = time.perf_counter() - wall
    print()
    print(header)
    print(table(rows))
    print(f"\ntotal wall time {wall:.1f}s")
    config = {"backbones": {k: str(v) for k, v in backbones.items()}, "radii": list(radii),
              "heads": list(heads), "radius_scales": list(args.radius_scales),
              "betas": list(args.betas), "solve_time_limit": args.solve_time_limit or None,
              "components": args.components, "patterns": args.patterns,
              "n_train": len(y_tr), "n_validation": len(y_val), "n_select": len(select[1]),
              "select_steps": args.select_steps, "n_test": len(y_test),
              "pgd_steps": args.pgd_steps, "pgd_restarts": args.pgd_restarts,
              "pgd_head_epochs": args.pgd_head_epochs, "wall_seconds": wall,
              "resumed": args.resume, "kept_only": args.kept_only}
    path = write_record(Path(args.out) / "retrain-preact.json", rows, args.threads,
                        config=config, header=header)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
