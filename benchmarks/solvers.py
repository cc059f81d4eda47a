"""Every installed solver on a seeded grid of problem sizes, for the four program families
(convex ReLU, robust ReLU, polynomial SDP, robust polynomial SDP), binary and 10-class.

Data: a planted two-layer ReLU teacher on Gaussian inputs (labels = sign or argmax of its
outputs). Each solve is judged by the program (recomputed objective, violation) and compared
with the best objective any solver reached on the same instance. Conic solvers get a time limit
(`--time-limit`); a solve that hits it is recorded with its status, not dropped.

    python benchmarks/solvers.py --quick       # < 5 minutes (smaller sizes, 10 s per solve)
    python benchmarks/solvers.py               # the full grid (make bench)
    python benchmarks/solvers.py --device cuda # the torch solves on a GPU

The torch rows use ``method="auto"`` except for the robust programs, which run the ADMM
(``method="admm"``: "auto" takes it for the binary robust ReLU programs only); each row records
the method.

Writes benchmarks/results/solvers.json, solvers_time.png and solvers_gap.png, and prints a table.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from record import add_relative_gaps, torch_device, write_record

import convexrobust as cr

RESULTS = Path(__file__).parent / "results"


def planted(n: int, d: int, classes: int, seed: int,
            balanced: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian inputs labelled by a random two-layer ReLU teacher with 10 hidden units.

    Multi-class labels are the argmax of the teacher's outputs, which leaves some classes empty
    and one holding most samples. ``balanced=True`` shifts each output by a constant, found by
    iterating ``b_c += step·(share_c − 1/C)`` with a decreasing step, until every class holds
    about ``n/C`` samples: a C-class problem in earnest, still labelled by a ReLU network (a
    bias per output)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    U = rng.standard_normal((d, 10)) / np.sqrt(d)
    A = rng.standard_normal((10, max(classes, 1)))
    scores = np.maximum(X @ U + 0.1, 0) @ A
    if classes <= 2:
        return X, (scores[:, 0] > np.median(scores[:, 0])).astype(int)
    if balanced:
        shift, scale = np.zeros(classes), scores.std()
        for it in range(500):
            share = np.bincount((scores - shift).argmax(1), minlength=classes) / n
            shift += scale * 0.5 / (1 + it / 20) * (share - 1 / classes)
        scores = scores - shift
    return X, scores.argmax(1)


def build(family: str, X: np.ndarray, y: np.ndarray, patterns: int) -> cr.ConvexProgram:
    eps = 0.1
    if family == "relu":
        return cr.ConvexReLU(X, y, n_patterns=patterns, loss="squared", beta=1e-3)
    if family == "relu-l2":
        return cr.ConvexReLU(X, y, n_patterns=patterns, loss="hinge", beta=1e-3,
                             threat=cr.L2(eps))
    if family == "polynomial":
        return cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-3)
    return cr.ConvexPolynomial(X, y, loss="hinge", beta=1e-3, threat=cr.L2(eps))


def grid(quick: bool) -> list[dict]:
    if quick:
        sizes = [(200, 10, 20), (400, 10, 20)]
        multiclass = [(60, 10, 10)]
    else:
        sizes = [(500, 20, 50), (1000, 20, 50), (2000, 20, 100), (1000, 50, 50)]
        multiclass = [(500, 20, 20), (1000, 20, 20)]
    cases = []
    for family in ("relu", "relu-l2", "polynomial", "polynomial-l2"):
        for n, d, p in sizes:
            cases.append({"family": family, "n": n, "d": d, "patterns": p, "classes": 2})
        for n, d, p in multiclass:
            cases.append({"family": family, "n": n, "d": d, "patterns": p, "classes": 10})
    return cases


def limit_options(solver: str, seconds: float) -> dict:
    return {"clarabel": {"time_limit": seconds}, "scs": {"time_limit_secs": seconds},
            "mosek": {}, "torch": {"time_limit": seconds}}[solver]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--solvers", default=",".join(cr.available_solvers()))
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds per solve (default 60; 10 with --quick)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="torch device of the torch solves")
    parser.add_argument("--out", default=str(RESULTS / "solvers.json"))
    args = parser.parse_args()
    device = torch_device(args.device)
    if args.time_limit is None:
        args.time_limit = 10.0 if args.quick else 60.0
    torch.set_num_threads(args.threads)
    rows = []
    for case in grid(args.quick):
        X, y = planted(case["n"], case["d"], case["classes"], seed=0)
        program = build(case["family"], X, y, case["patterns"])
        results = []
        for solver in args.solvers.split(","):
            start = time.perf_counter()
            try:
                options = limit_options(solver, args.time_limit)
                if solver == "torch":
                    options["device"] = device
                if solver == "torch" and case["family"] in ("polynomial-l2", "relu-l2"):
                    # "auto" takes it for robust binary ReLU programs only (torch_backend.py)
                    options["method"] = "admm"
                solution = cr.solve(program, solver, accept_inaccurate=True, **options)
                results.append({**case, **solution.summary(),
                                "method": solution.info.get("method")})
            except (cr.SolverFailedError, cr.InvalidInputError) as err:
                results.append({**case, "solver": solver, "status": getattr(err, "status", None)
                                or "unsupported", "wall_time": time.perf_counter() - start})
        add_relative_gaps(results)
        for r in results:
            rows.append(r)
            print(f"{r['family']:<14}{r['classes']:>3} n={r['n']:<6}d={r['d']:<4}"
                  f"{r['solver']:<10}{str(r['status']):<20}{r['wall_time']:>8.1f}s  "
                  f"gap {r.get('relative_gap', float('nan')):.1e}  "
                  f"violation {r.get('violation', float('nan')):.1e}", flush=True)
    out = write_record(args.out, rows, args.threads, time_limit=args.time_limit,
                       device=args.device)
    plot(rows, out.parent)
    print(f"wrote {out}")


def plot(rows: list[dict], folder: Path) -> None:
    """Per program family (one panel each): wall time vs size and relative gap vs wall time,
    one colour per solver, hollow markers for the 10-class instances."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    families = list(dict.fromkeys(r["family"] for r in rows))
    solvers = sorted({r["solver"] for r in rows})
    colours = {s: f"C{i}" for i, s in enumerate(solvers)}
    panels = {
        "time": ("n·d", "wall time (s)", lambda r: (r["n"] * r["d"], r["wall_time"])),
        "gap": ("wall time (s)", "relative gap to best",
                lambda r: (r["wall_time"], max(r.get("relative_gap", math.nan), 1e-10))),
    }
    for name, (xlabel, ylabel, point) in panels.items():
        fig = Figure(figsize=(3.2 * len(families), 3.2))
        axes = fig.subplots(1, len(families), squeeze=False)[0]
        for ax, family in zip(axes, families, strict=True):
            for s in solvers:
                for classes, fill in ((2, colours[s]), (10, "none")):
                    pts = [point(r) for r in rows if r["family"] == family and r["solver"] == s
                           and r["classes"] == classes and math.isfinite(point(r)[1])]
                    if pts:
                        ax.scatter(*zip(*pts, strict=True), edgecolors=colours[s],
                                   facecolors=fill, label=s if classes == 2 else None)
            ax.set(xscale="log", yscale="log", xlabel=xlabel, title=family)
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short spans
        axes[0].set_ylabel(ylabel)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / f"solvers_{name}.png", dpi=110)


if __name__ == "__main__":
    main()
