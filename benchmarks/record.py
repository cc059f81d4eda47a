"""What every benchmark writes beside its numbers: the machine, the versions, and the JSON
file itself (atomically: a temporary file, then a rename)."""

from __future__ import annotations

import platform
from pathlib import Path

import cvxpy
import numpy as np
import torch

import convexrobust as cr
from convexrobust._io import write_json_atomic


def add_relative_gaps(results: list[dict]) -> None:
    """``relative_gap`` of each solved result to the best optimal objective among them."""
    good = [r["objective"] for r in results if r.get("status") == "optimal"]
    best = min(good) if good else np.nan
    for r in results:
        if "objective" in r:
            r["relative_gap"] = (r["objective"] - best) / max(abs(best), 1e-12)


def torch_device(name: str) -> torch.device:
    """``name`` (a ``--device`` argument) as a torch device, or ``SystemExit`` saying why it is
    not usable on this machine."""
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, TypeError, AssertionError) as err:  # CPU builds assert on "cuda"
        raise SystemExit(f"--device {name!r} is not usable here: {err}") from None
    return device


def write_record(path: str | Path, rows: list[dict], threads: int, **extra: object) -> Path:
    record = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "threads": threads},
        "versions": {"convexrobust": cr.__version__, "cvxpy": cvxpy.__version__,
                     "torch": torch.__version__, "numpy": np.__version__},
        **extra,
        "results": rows,
    }
    return write_json_atomic(path, record)
