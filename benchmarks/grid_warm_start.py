"""Grid warm starts in the retraining pipeline: the same validation grid of polynomial heads on
CIFAR-10 LiResNet features solved with every candidate starting from zero, then with each
starting from the candidate solved before it (``retrain_last_two_layers(..., warm_start=)``).

    python benchmarks/grid_warm_start.py --train-limit 3000 --components 16

Heads on the first ``--train-limit`` training images (evenly over the classes; a stratified
fifth held out for validation), the committed LiResNet
(``benchmarks/models/liresnet-cifar10-l4w32.pt``), ℓ2 ε = 36/255, β ∈ {1e-4, 1e-3} × radius
scale ∈ {0.75, 1}, torch at the pipeline's tolerance (1e-3). Prints and writes (``--out``,
JSON) every candidate's status, solve time, objective, certified gap and validation scores for
both runs. Exits with a message when CIFAR-10 is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import convexrobust as cr
from convexrobust.data import cifar10, cifar10_candidates
from convexrobust.networks import LiResNet

sys.path.insert(0, str(Path(__file__).parent))
from retrain import as_tensors, first_per_class  # noqa: E402

MODEL = Path(__file__).parent / "models" / "liresnet-cifar10-l4w32.pt"
KEYS = ("beta", "radius_scale", "status", "solve_time", "objective", "duality_gap",
        "warm_started", "val_clean", "val_robust")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-limit", type=int, default=3000)
    parser.add_argument("--components", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/grid-warm-start.json")
    args = parser.parse_args()
    if not any(p.exists() for p in cifar10_candidates()):
        raise SystemExit("CIFAR-10 not found (see convexrobust.data.cifar10): nothing to measure")
    torch.set_num_threads(args.threads)
    x, y = first_per_class(*as_tensors(*cifar10(split="train")), args.train_limit)
    model = LiResNet.load(MODEL).eval()
    runs = {}
    with tempfile.TemporaryDirectory() as cache:  # features extracted once, for both runs
        for warm in (False, True):
            start = time.perf_counter()
            robust = cr.retrain_last_two_layers(
                model, (x, y), head="polynomial", threat=cr.L2(36 / 255),
                grid={"beta": (1e-4, 1e-3), "radius_scale": (0.75, 1.0)},
                components=args.components, solver="torch", warm_start=warm, cache=cache,
                progress=False)
            rows = [{k: c.get(k) for k in KEYS} for c in robust.info["candidates"]]
            name = "warm" if warm else "cold"
            runs[name] = {"candidates": rows, "wall_time": time.perf_counter() - start,
                          "solve_time": sum(r["solve_time"] for r in rows)}
            for r in rows:
                print(name, r, flush=True)
            print(f"{name}: candidates solved in {runs[name]['solve_time']:.1f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
