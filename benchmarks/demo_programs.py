"""Solve every program family with every installed conic solver and compare them the same way.

The programs are the demo's (breast cancer, 80/20 split, standardised, top-k principal
components): nominal and robust ReLU (hinge, ℓ2 and ℓ∞) and polynomial (hinge, ℓ2 exact,
ℓ∞ diagonal S-procedure). Each solve is judged by the program itself: the recomputed
objective, its relative gap to the best objective any solver reached, the constraint violation
and the wall time (including cvxpy's compilation). Writes benchmarks/results/demo_programs.json.

    python benchmarks/demo_programs.py [--components 10] [--solvers clarabel,scs] [--out FILE]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from record import add_relative_gaps, write_record

import convexrobust as cr
from convexrobust.data import breast_cancer
from convexrobust.demo_tabular import principal_projection


def programs(z: np.ndarray, y: np.ndarray, eps2: float, epsinf: float, n_patterns: int):
    relu = {"n_patterns": n_patterns, "loss": "hinge", "beta": 1e-3}
    return {
        "relu": cr.ConvexReLU(z, y, **relu),
        f"relu-l2({eps2:g})": cr.ConvexReLU(z, y, threat=cr.L2(eps2), **relu),
        f"relu-linf({epsinf:g})": cr.ConvexReLU(z, y, threat=cr.Linf(epsinf), **relu),
        "polynomial": cr.ConvexPolynomial(z, y, beta=1e-3),
        f"polynomial-l2({eps2:g})": cr.ConvexPolynomial(z, y, beta=1e-3, threat=cr.L2(eps2)),
        f"polynomial-linf({epsinf:g})": cr.ConvexPolynomial(z, y, beta=1e-3,
                                                            threat=cr.Linf(epsinf)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--solvers", default=",".join(
        s for s in ("mosek", "clarabel", "scs") if s in cr.available_solvers()))
    parser.add_argument("--n-patterns", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out",
                        default=str(Path(__file__).parent / "results" / "demo_programs.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split = breast_cancer()
    features, _ = principal_projection(split, args.components)
    with torch.no_grad():
        z = features(torch.as_tensor(split.X_train)).numpy()
    rows = []
    for family, program in programs(z, split.y_train, 0.5, 0.1, args.n_patterns).items():
        results = []
        for solver in args.solvers.split(","):
            start = time.perf_counter()
            try:
                solution = cr.solve(program, solver)
            except cr.SolverFailedError as err:
                results.append({"family": family, "solver": solver, "status": err.status,
                                "wall_time": time.perf_counter() - start})
                continue
            results.append({"family": family, **solution.summary(),
                            "neurons": solution.network().n_neurons})
        add_relative_gaps(results)
        for r in results:
            r.update(n=program.n_samples, d=program.n_features, variables=program.n_variables())
            rows.append(r)
            print(f"{family:<24}{r['solver']:<10}{r['status']:<20}{r['wall_time']:>8.1f}s"
                  f"  objective {r.get('objective', float('nan')):.6g}"
                  f"  gap {r.get('relative_gap', float('nan')):.1e}"
                  f"  violation {r.get('violation', float('nan')):.1e}", flush=True)
    data = f"breast cancer train split, top {args.components} principal components"
    out = write_record(args.out, rows, args.threads, data=data)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
