"""Retraining the last two layers of a LiResNet with convex robust heads, against the LiResNet's
own GloRo certificate and a non-convex PGD-trained head of the same shape.

For every training radius ε and head family ("polynomial", "relu") the last two layers of one
LiResNet are replaced by a convex head trained at ε (`retrain_last_two_layers`, feature radius
``K_h·ε``, hyper-parameters chosen on a validation split of the training data), and once per ε
by the non-convex baseline (`pgd_trained_head`: a two-layer ReLU head as wide as the convex ReLU
head, PGD adversarial training at the same feature radius, same features and normalisation).
Every model — and the original LiResNet — is evaluated on the test set at every radius: clean
accuracy, accuracy under ℓ2 PGD and under the standard AutoAttack of Croce & Hein 2020
(``--attack``, default ``pgd,autoattack``) through the whole network, inputs clamped to [0, 1],
and certified accuracy (`convexrobust.evaluation.evaluate_on_subsets`); a certified point that
an attack breaks fails the run.

    python benchmarks/retrain.py --data digits                 # trains the LiResNet (~1 min)
    python benchmarks/retrain.py --data cifar10 --checkpoint out/cifar-l4w32/model.pt

CIFAR-10 on a CPU is bounded by ``--solve-time-limit`` (seconds per head solve; an unfinished
solve keeps its iterate and records its status: that costs optimality, never soundness, since the
certificate is computed on the returned head), ``--train-limit`` (images the heads are trained
on: the first ``N/10`` of every class, in archive order), ``--test-limit`` (test images for clean
and certified accuracy, the same way), ``--pgd-limit`` (the per-class subset of those attacked
by PGD, which costs ``steps × restarts`` forward-backward passes per point and radius) and
``--autoattack-limit`` (the per-class subset attacked by AutoAttack, far costlier per point:
digits and CIFAR-10 default to a subset; with equal limits PGD and AutoAttack attack the same
images); digits otherwise uses all of its data. Writes ``benchmarks/results/retrain-<data>.json``
(records, times, chosen hyper-parameters, config, machine) and ``retrain-<data>.png`` (one panel
per ε).

The convex heads' grid is ``--betas`` × ``--radius-scales`` (training radii as multiples of
``K_h·ε``), chosen on a validation split of the heads' training images; ``--refit`` then trains
the chosen candidate again on all of them (training and validation split), so the head sees
every training image.

``--heads`` picks the head families (default both); the PGD-trained baseline comes with
``relu``, whose width it takes. A run over one family can be followed by the other with the
same ``--cache``: the stages of the first are reused with ``--resume``.

Resuming: every finished stage (the LiResNet's evaluation, each head with its evaluation) is
kept in ``<cache>/stages/`` (its row as JSON, a head also as a ``RobustModel`` file), and every
solved grid candidate and refit in the pipeline's ``<cache>/features/candidates/``.
``--resume`` (same options) reuses them: finished stages are neither trained nor evaluated
again, and a head whose grid search was stopped solves only the candidates it had not finished
(a head kept with another ``--betas`` grid or ``--solve-time-limit`` is selected again, its
solved candidates reused and, under a larger limit, those the smaller one stopped continued
from where they stopped: :mod:`convexrobust.kept_solve`). ``--checkpoint-every`` keeps a
torch solve's state while it runs, so a run stopped mid-solve continues from its last
checkpoint. Without ``--resume`` a run starts afresh (its times are real). Progress bars (grid
search, attacks) go to stderr unless ``--quiet``.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import time
from pathlib import Path

import torch
from record import Stages, nonnegative_seconds, positive_numbers, resumed_seconds, write_record

import convexrobust as cr
from convexrobust.data import cifar10, digits
from convexrobust.demo import AUTOATTACK_LIMIT
from convexrobust.evaluation import AUTOATTACKS, evaluate_on_subsets, format_table
from convexrobust.networks.liresnet import LiResNet
from convexrobust.pipeline import pgd_trained_head, retrain_last_two_layers
from convexrobust.plots import plot_accuracy_vs_radius
from convexrobust.robust_model import RobustModel
from convexrobust.training import TrainConfig, train_liresnet
from convexrobust.training_common import as_tensors

RESULTS = Path(__file__).parent / "results"
RADII = {"digits": (0.1, 0.3, 0.5), "cifar10": (36 / 255, 72 / 255, 108 / 255)}
RADIUS_NAMES = {"digits": ("0.1", "0.3", "0.5"), "cifar10": ("36/255", "72/255", "108/255")}
HEADS = ("polynomial", "relu")
GRID = {"beta": (1e-3, 1e-2), "radius_scale": (1.0,), "n_patterns": (50,)}
#: (training images for the heads, test images, test images attacked by PGD, test images
#: attacked by AutoAttack); None = all
DEFAULT_LIMITS = {"digits": (None, None, None, AUTOATTACK_LIMIT),
                  "cifar10": (5000, 1000, 100, 100)}
#: seconds per head solve (torch solver ``time_limit``; the status is recorded); None = none
DEFAULT_SOLVE_LIMIT = {"digits": None, "cifar10": 60.0}


def first_per_class(x: torch.Tensor, y: torch.Tensor, limit: int | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit // C`` points of every class, in data order (all data when None)."""
    if limit is None or limit >= len(y):
        return x, y
    classes = torch.unique(y)
    per_class = limit // len(classes)
    idx = torch.cat([torch.nonzero(y == c).squeeze(1)[:per_class] for c in classes])
    idx = idx.sort().values
    return x[idx], y[idx]


def load_data(name: str, train_limit: int | None, test_limit: int | None
              ) -> tuple[torch.Tensor, ...]:
    if name == "digits":
        split = digits(seed=0)
        x, y = as_tensors(split.X_train, split.y_train)
        x_test, y_test = as_tensors(split.X_test, split.y_test)
    else:
        x, y = as_tensors(*cifar10(split="train"))
        x_test, y_test = as_tensors(*cifar10(split="test"))
    return (*first_per_class(x, y, train_limit), *first_per_class(x_test, y_test, test_limit))


def get_liresnet(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor
                 ) -> tuple[LiResNet, float, str]:
    """The LiResNet: loaded from ``--checkpoint``, or (digits) trained as in the demo."""
    start = time.perf_counter()
    if args.checkpoint:
        return LiResNet.load(args.checkpoint).eval(), 0.0, str(args.checkpoint)
    if args.data != "digits":
        raise SystemExit("cifar10 needs --checkpoint (a trained LiResNet model.pt)")
    out = Path(args.cache) / "liresnet"
    if args.resume and (out / "model.pt").exists():  # the stopped run's, which its stages used
        return LiResNet.load(out / "model.pt").eval(), 0.0, f"resumed: {out / 'model.pt'}"
    if (out / "model.pt").exists():  # a previous run's; train afresh so the time is real
        for f in out.iterdir():
            f.unlink()
    cfg = TrainConfig(data="digits", epochs=args.epochs, eps=0.3, neck_channels=4, seed=0)
    model = train_liresnet(cfg, x, y, out, progress=False).eval()
    return model, time.perf_counter() - start, f"trained: {cfg}"


def run_eval(model: torch.nn.Module, name: str, test: tuple, pgd_test: tuple | None,
             aa_test: tuple | None, radii: tuple, aa_radii: tuple, args: argparse.Namespace,
             extra: dict, stages: Stages) -> dict:
    """Clean and certified accuracy on all of ``test`` at ``radii``, the PGD attacks of
    ``args.attack`` on ``pgd_test`` at every radius and its AutoAttacks on ``aa_test`` at
    ``aa_radii`` (per-class subsets of ``test``; None: all of it), merged by
    :func:`~convexrobust.evaluation.evaluate_on_subsets` (``pgd`` counts a point only when it
    survives every attack run on its set; ``autoattack`` is the standard AutoAttack alone;
    each record says on how many images each number was measured)."""
    report = evaluate_on_subsets(model, test, radii, attacks=tuple(args.attack.split(",")),
                                 pgd_subset=pgd_test, autoattack_subset=aa_test,
                                 autoattack_radii=aa_radii, norm=2,
                                 pgd_steps=args.pgd_steps, pgd_restarts=args.pgd_restarts,
                                 seed=0, progress=not args.quiet, name=name)
    records = report.records
    counts = {key: rec[key] for rec in records
              for key in ("n_pgd", *(f"n_{a}" for a in AUTOATTACKS)) if key in rec}
    row = {"model": name, **extra, "n_test": report.n, **counts,
           "eval_seconds": report.seconds, "eval_total_seconds": report.total_seconds,
           "violations": report.violations, "records": records}

    def column(key: str) -> str:
        return ", ".join("-" if r.get(key) is None else f"{r[key]:.3f}" for r in records)

    attacked = "".join(f"  {key} [{column(key)}] (n={counts[f'n_{key}']})"
                       for key in ("pgd", *AUTOATTACKS) if f"n_{key}" in counts)
    print(f"  {name:<18} clean {records[0]['clean']:.3f}{attacked}  cert [{column('certified')}]"
          f"  eval {report.total_seconds:.1f}s  violations {report.violations}", flush=True)
    stages.finish(name, row)
    return row


def times_table(rows: list[dict]) -> str:
    """Training and evaluation seconds of every model, and the hyper-parameters it chose."""
    attacks = [a for a in AUTOATTACKS if any(a in r["eval_seconds"] for r in rows)]
    header = ("model", "train s", "eval s", "pgd s", *(f"{a} s" for a in attacks), "certify s",
              "chosen")
    lines = [header]
    for r in rows:
        chosen = ", ".join(f"{k}={v}" for k, v in (r.get("chosen") or {}).items()
                           if v is not None)
        lines.append((r["model"], f"{r['train_seconds']:.1f}", f"{r['eval_total_seconds']:.1f}",
                      f"{r['eval_seconds']['pgd']:.1f}",
                      *(f"{r['eval_seconds'].get(a, 0.0):.1f}" for a in attacks),
                      f"{r['eval_seconds']['certify']:.1f}", chosen))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    last = len(header) - 1
    out = ["  ".join(c.ljust(w) if i in (0, last) else c.rjust(w)
                     for i, (c, w) in enumerate(zip(line, widths, strict=True)))
           for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def plot(rows: list[dict], data: str, path: Path) -> None:
    """One panel per training radius ε (the LiResNet in each), side by side in one PNG."""
    n_test, n_pgd = rows[0]["n_test"], rows[0].get("n_pgd", rows[0]["n_test"])
    note = f" (n={n_test})" if n_pgd == n_test else f" (PGD n={n_pgd}, rest n={n_test})"
    from PIL import Image

    panels = []
    base = [rec for r in rows if r["eps"] is None for rec in r["records"]]
    for eps, label in zip(RADII[data], RADIUS_NAMES[data], strict=True):
        if not any(r["eps"] == eps for r in rows):
            continue
        recs = base + [rec for r in rows if r["eps"] == eps for rec in r["records"]]
        tmp = path.with_name(f".{path.stem}-{len(panels)}.png")
        plot_accuracy_vs_radius(recs, tmp, title=f"{data}: heads trained at eps={label}{note}",
                                xlabel="l2 radius")
        panels.append(Image.open(io.BytesIO(tmp.read_bytes())).convert("RGB"))
        tmp.unlink()
    width = sum(p.width for p in panels)
    canvas = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    left = 0
    for p in panels:
        canvas.paste(p, (left, 0))
        left += p.width
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("digits", "cifar10"), default="digits")
    parser.add_argument("--checkpoint", default=None, help="a LiResNet model.pt to load")
    parser.add_argument("--epochs", type=int, default=100, help="LiResNet epochs (digits)")
    parser.add_argument("--train-limit", type=int, default=-1,
                        help="training images for the heads (default: digits all, cifar 5000)")
    parser.add_argument("--test-limit", type=int, default=-1,
                        help="test images (default: digits all, cifar10 1000)")
    parser.add_argument("--pgd-limit", type=int, default=-1,
                        help="test images attacked by PGD, a per-class subset of the test "
                             "images (default: digits all, cifar10 100)")
    parser.add_argument("--autoattack-limit", type=int, default=-1,
                        help="test images attacked by AutoAttack, a per-class subset of the "
                             f"test images (default: digits {AUTOATTACK_LIMIT}, cifar10 100)")
    parser.add_argument("--solve-time-limit", type=float, default=-1,
                        help="seconds per head solve, 0 = none (default: digits none, "
                             "cifar10 60)")
    parser.add_argument("--checkpoint-every", type=nonnegative_seconds, default=0,
                        help="seconds: keep each running torch solve's state in --cache this "
                             "often, so a stopped run resumed with --resume continues from its "
                             "last checkpoint (default 0: only when each solve returns)")
    parser.add_argument("--components", type=int, default=16)
    parser.add_argument("--betas", default=",".join(f"{b:g}" for b in GRID["beta"]),
                        type=positive_numbers,
                        help="comma-separated β grid of the convex heads, chosen on validation "
                             f"(default {','.join(f'{b:g}' for b in GRID['beta'])}); a head "
                             "stage kept with another grid is trained again on --resume (its "
                             "solved candidates are reused)")
    parser.add_argument("--radius-scales", default=",".join(f"{s:g}" for s in
                                                         GRID["radius_scale"]),
                        type=positive_numbers,
                        help="comma-separated grid of training radii as multiples of K·ε, "
                             "chosen on validation with β (default "
                             f"{','.join(f'{s:g}' for s in GRID['radius_scale'])})")
    parser.add_argument("--refit", action="store_true",
                        help="retrain the chosen candidate on all the heads' training images "
                             "(training and validation split) before it is evaluated")
    parser.add_argument("--pgd-steps", type=int, default=50)
    parser.add_argument("--pgd-restarts", type=int, default=3)
    parser.add_argument("--pgd-head-epochs", type=int, default=30)
    parser.add_argument("--attack", default="pgd,autoattack",
                        help="attacks (evaluate's names; default pgd,autoattack): the PGD "
                             "attacks on the PGD subset, the AutoAttacks on the AutoAttack "
                             "subset; pgd counts a point only when it survives every attack "
                             "run on its set; autoattack needs pip install "
                             "'convexrobust[attack]'")
    parser.add_argument("--autoattack-radii", choices=("train", "all"), default="train",
                        help="the radii AutoAttack attacks at: each head's training radius "
                             "(the LiResNet: every training radius; default), or all")
    parser.add_argument("--eps", default=None,
                        help="comma-separated subset of the training radii (default: all)")
    parser.add_argument("--heads", default=",".join(HEADS),
                        help="comma-separated head families (default: polynomial,relu); the "
                             "PGD-trained baseline runs with relu, as wide as its head")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=None, help="feature cache folder (default /tmp)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--resume", action="store_true",
                        help="reuse the stages and solved candidates a stopped run with the same "
                             "options kept in --cache (module docstring)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    heads = tuple(h for h in HEADS if h in args.heads.split(","))
    grid = {**GRID, "beta": args.betas, "radius_scale": args.radius_scales}
    # a head stage is kept only with the same grid, refit and solve time limit (else trained
    # again: its finished candidates reused, those a smaller limit stopped continued)
    settings = {"grid": {k: list(v) for k, v in grid.items()}, "refit": args.refit,
                "solve_time_limit": None}
    unknown = set(args.heads.split(",")) - set(HEADS)
    if unknown or not heads:
        parser.error(f"--heads takes a comma-separated subset of {','.join(HEADS)}, "
                     f"got {args.heads!r}")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    limits = DEFAULT_LIMITS[args.data]
    train_limit = limits[0] if args.train_limit < 0 else (args.train_limit or None)
    test_limit = limits[1] if args.test_limit < 0 else (args.test_limit or None)
    pgd_limit = limits[2] if args.pgd_limit < 0 else (args.pgd_limit or None)
    aa_limit = limits[3] if args.autoattack_limit < 0 else (args.autoattack_limit or None)
    solve_limit = (DEFAULT_SOLVE_LIMIT[args.data] if args.solve_time_limit < 0
                   else (args.solve_time_limit or None))
    solver_options = None if solve_limit is None else {"time_limit": solve_limit}
    settings["solve_time_limit"] = solve_limit
    args.cache = args.cache or f"/tmp/convexrobust-retrain-{args.data}"
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    stages = Stages(Path(args.cache) / "stages", args.resume)
    radii = RADII[args.data]
    train_radii = radii if args.eps is None else tuple(
        radii[RADIUS_NAMES[args.data].index(e)] for e in args.eps.split(","))

    wall = time.perf_counter()
    x, y, x_test, y_test = load_data(args.data, train_limit, test_limit)
    test = (x_test, y_test)

    def attacked(limit: int | None) -> tuple | None:
        """The first limit//10 test images of every class; None for all of them."""
        if limit is None or limit >= len(y_test):
            return None
        return first_per_class(x_test, y_test, limit)

    pgd_test = attacked(pgd_limit)
    # one subset object for both when the limits agree: one evaluation attacks it with both
    aa_test = pgd_test if aa_limit == pgd_limit else attacked(aa_limit)

    def rule(limit: int | None) -> str:
        return "all" if limit is None else f"first {limit // 10} per class"

    def size(subset: tuple | None) -> int:
        return len(y_test) if subset is None else len(subset[1])

    autoattacks = [a for a in args.attack.split(",") if a in AUTOATTACKS]
    aa_note = (f"; {', '.join(autoattacks)} on {size(aa_test)} of them "
               f"({rule(None if aa_test is None else aa_limit)}) at "
               f"{'every radius' if args.autoattack_radii == 'all' else 'the training radius'}"
               if autoattacks else "")
    header = (f"{args.data}: {len(y)} training images for the heads ({rule(train_limit)}), "
              f"{len(y_test)} test images ({rule(test_limit)}); l2 PGD "
              f"{args.pgd_steps} steps x {args.pgd_restarts} restarts on "
              f"{size(pgd_test)} of them ({rule(None if pgd_test is None else pgd_limit)})"
              f"{aa_note}, {args.components} components, head solves "
              f"{'to their tolerance' if solve_limit is None else f'capped at {solve_limit:g}s'}"
              f"{', chosen head refit on all of them' if args.refit else ''}, "
              f"{args.threads} threads")
    print(header, flush=True)
    liresnet, liresnet_seconds, source = get_liresnet(args, x, y)
    print(f"LiResNet ({source}): {liresnet_seconds:.1f}s; K_backbone = "
          f"{liresnet.lipschitz_bound('guaranteed', 'backbone'):.4g}, K_features = "
          f"{liresnet.lipschitz_bound('guaranteed', 'features'):.4g}", flush=True)
    rows = [stages.finished("liresnet")]
    if rows[0] is None:
        rows[0] = run_eval(liresnet, "liresnet", test, pgd_test, aa_test, radii,
                           radii if args.autoattack_radii == "all" else train_radii, args,
                           {"family": "liresnet", "eps": None,
                            "train_seconds": liresnet_seconds, "chosen": None}, stages)
    cache = Path(args.cache) / "features"
    for eps, label in zip(radii, RADIUS_NAMES[args.data], strict=True):
        if eps not in train_radii:
            continue
        tag = label.split("/")[0] if args.data == "cifar10" else label
        for head in heads:
            row = stages.finished(f"{head}@{tag}", settings)
            if row is not None:
                rows.append(row)
                continue
            if head == "relu":  # the baseline is as wide as the convex ReLU head: made again
                stages.discard(f"pgd-head@{tag}")
            start = time.perf_counter()
            model = retrain_last_two_layers(liresnet, (x, y), head=head, threat=cr.L2(eps),
                                            components=args.components, grid=grid, cache=cache,
                                            solver_options=solver_options, refit=args.refit,
                                            checkpoint_every=args.checkpoint_every or None,
                                            progress=not args.quiet, resume=args.resume)
            # candidates a stopped run solved count with the time they took then
            seconds = time.perf_counter() - start + resumed_seconds(model.info)
            model.save(stages.path(f"{head}@{tag}", ".pt"))
            info = model.info
            refitted = info["refitted"]
            refit = (f", refit on {refitted['n_train']} images {refitted['solve_time']:.1f}s"
                     if refitted else "")
            print(f"{head}@{tag}: trained in {seconds:.1f}s (features "
                  f"{info['times']['features']:.1f}s{refit}), chose {info['chosen']}, "
                  f"feature radius {info['feature_radius']:.4g}, "
                  f"{model.head.n_neurons} neurons", flush=True)
            rows.append(run_eval(model, f"{head}@{tag}", test, pgd_test, aa_test, radii,
                                 radii if args.autoattack_radii == "all" else (eps,), args, {
                "family": head, "eps": eps, "train_seconds": seconds, "settings": settings,
                "chosen": info["chosen"], "neurons": int(model.head.n_neurons),
                "feature_radius": info["feature_radius"], "times": info["times"],
                "candidates": info["candidates"], "refitted": info["refitted"]}, stages))
        if "relu" not in heads:  # the baseline is as wide as the convex ReLU head
            continue
        row = stages.finished(f"pgd-head@{tag}")
        if row is not None:
            rows.append(row)
            continue
        convex_relu = RobustModel.load(stages.path(f"relu@{tag}", ".pt"))
        start = time.perf_counter()
        # as wide as the convex ReLU head; as wide as its patterns when its optimum is zero
        hidden = convex_relu.head.n_neurons or max(grid["n_patterns"])
        model = pgd_trained_head(convex_relu, (x, y), hidden=hidden,
                                 epochs=args.pgd_head_epochs, cache=cache,
                                 progress=not args.quiet)
        seconds = time.perf_counter() - start
        print(f"pgd-head@{tag}: trained in {seconds:.1f}s, chose {model.info['chosen']}",
              flush=True)
        rows.append(run_eval(model, f"pgd-head@{tag}", test, pgd_test, aa_test, radii,
                             radii if args.autoattack_radii == "all" else (eps,), args, {
            "family": "pgd-head", "eps": eps, "train_seconds": seconds,
            "chosen": model.info["chosen"], "neurons": int(model.head.n_neurons),
            "feature_radius": model.info["feature_radius"],
            "val_robust": model.info["val_robust"], "val_clean": model.info["val_clean"]},
            stages))

    wall = time.perf_counter() - wall
    records = [rec for r in rows for rec in r["records"]]
    print()
    print(header)
    print(format_table(records))
    print()
    print(times_table(rows))
    print(f"\ntotal wall time {wall:.1f}s")
    out = Path(args.out)
    config = {"data": args.data, "radii": list(radii), "radius_names": RADIUS_NAMES[args.data],
              "train_radii": list(train_radii), "heads": list(heads), "grid": grid,
              "components": args.components, "solve_time_limit": solve_limit,
              "refit": args.refit,
              "pgd_steps": args.pgd_steps,
              "pgd_restarts": args.pgd_restarts, "pgd_head_epochs": args.pgd_head_epochs,
              "attacks": args.attack,
              "liresnet": source, "n_train": len(y), "n_test": len(y_test),
              "train_limit": train_limit, "test_limit": test_limit, "pgd_limit": pgd_limit,
              "autoattack_limit": aa_limit, "autoattack_radii": args.autoattack_radii,
              "n_pgd": size(pgd_test),
              "n_autoattack": size(aa_test) if autoattacks else None,
              "limit_rule": "first limit//10 images of every class, in data order",
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "wall_seconds": wall, "resumed": args.resume}
    path = write_record(out / f"retrain-{args.data}.json", rows, args.threads, config=config,
                        header=header)
    plot(rows, args.data, out / f"retrain-{args.data}.png")
    print(f"wrote {path}")
    bad = {r["model"]: r["violations"] for r in rows if any(v for v in r["violations"])}
    assert not bad, f"certified points broken by an attack (unsound certificate): {bad}"


if __name__ == "__main__":
    main()
