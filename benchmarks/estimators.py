"""The scikit-learn estimators on scikit-learn's toy datasets with their default options (and,
with ``--solvers``, with each named solver): fit time, the solver that fitted, its status and
gap, and the training score — what a user fitting iris, wine, breast cancer, digits or diabetes
gets.

    python benchmarks/estimators.py                          # every dataset, raw and standardised
    python benchmarks/estimators.py --datasets iris,wine --scalings standardised
    python benchmarks/estimators.py --solvers auto,torch,clarabel

Writes benchmarks/results/estimators.json after every fit (a partial run keeps its rows; rows
of earlier runs for cases this run does not measure are kept, so the file holds the latest
measurement of every case) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
from record import write_record
from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

import convexrobust as cr

RESULTS = Path(__file__).parent / "results"
CLASSIFIERS = {"relu": cr.ConvexReLUClassifier, "polynomial": cr.ConvexPolynomialClassifier}
REGRESSORS = {"relu": cr.ConvexReLURegressor, "polynomial": cr.ConvexPolynomialRegressor}
DATASETS = ("iris", "wine", "breast_cancer", "digits", "diabetes")


def load(name: str, standardise: bool):
    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    if standardise:
        X = StandardScaler().fit_transform(X)
        if name == "diabetes":
            y = (y - y.mean()) / y.std()
    return X, y


def fit_one(estimator, X, y) -> dict:
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            estimator.fit(X, y)
        except cr.ConvexRobustError as err:
            return {"error": f"{type(err).__name__}: {err}"[:300],
                    "fit_seconds": time.perf_counter() - start}
    solution = estimator.solution_
    return {"fit_seconds": time.perf_counter() - start, "solver_used": estimator.solver_,
            "method": solution.info.get("method"), "status": solution.status,
            "gap": solution.gap, "gap_kind": solution.gap_kind,
            "objective": solution.objective, "iterations": solution.iterations,
            "score": float(estimator.score(X, y)),
            "warnings": [str(w.message)[:200] for w in caught
                         if issubclass(w.category, ConvergenceWarning)]}


def _key(row: dict) -> tuple:
    return (row["dataset"], row["scaling"], row["estimator"], row["solver"])


def earlier_rows(path: str) -> list[dict]:
    """The rows of an earlier results file (none if it is absent or unreadable)."""
    try:
        return list(json.loads(Path(path).read_text())["results"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--scalings", default="raw,standardised")
    parser.add_argument("--families", default="relu,polynomial")
    parser.add_argument("--solvers", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "estimators.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    kept = earlier_rows(args.out)
    print(f"{'dataset':14s} {'scaling':13s} {'estimator':28s} {'solver':8s} {'used':8s} "
          f"{'status':12s} {'seconds':>8s} {'gap':>9s} {'score':>6s}")
    for name in args.datasets.split(","):
        table = REGRESSORS if name == "diabetes" else CLASSIFIERS
        for scaling in args.scalings.split(","):
            X, y = load(name, scaling == "standardised")
            for family in args.families.split(","):
                for solver in args.solvers.split(","):
                    estimator = table[family](solver=solver)
                    row = {"dataset": name, "scaling": scaling,
                           "estimator": type(estimator).__name__, "solver": solver,
                           "n": int(X.shape[0]), "d": int(X.shape[1]),
                           **fit_one(estimator, X, y)}
                    rows.append(row)
                    measured = {_key(r) for r in rows}
                    write_record(args.out, [r for r in kept if _key(r) not in measured] + rows,
                                 args.threads)
                    gap = row.get("gap")
                    print(f"{name:14s} {scaling:13s} {row['estimator']:28s} {solver:8s} "
                          f"{row.get('solver_used', '-'):8s} "
                          f"{row.get('status', row.get('error', ''))[:12]:12s} "
                          f"{row['fit_seconds']:8.1f} "
                          f"{'-' if gap is None else f'{gap:9.1e}':>9s} "
                          f"{row.get('score', float('nan')):6.3f}", flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
