"""What every benchmark writes beside its numbers: the machine, the versions, and the JSON
file itself (atomically: a temporary file, then a rename)."""

from __future__ import annotations

import json
import platform
import shutil
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


def resumed_seconds(candidates: list[dict]) -> float:
    """The solve seconds a stopped run spent on the grid candidates a resumed one reloaded
    (``retrain_last_two_layers(..., resume=True)`` marks them ``"resumed"``), so that a head's
    train time counts them."""
    return sum(c["solve_time"] for c in candidates if c.get("resumed"))


class Stages:
    """The finished stages of a resumable benchmark run, kept in ``folder``: each stage's row
    as JSON (``finish``) and whatever else it saves under :meth:`path` (a model). A run that
    does not ``resume`` starts afresh (the folder is emptied, so its times are real); one that
    does gets the rows of the stages a stopped run finished (``finished``)."""

    def __init__(self, folder: Path, resume: bool):
        self.folder, self.resume = Path(folder), resume
        if not resume and self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str, suffix: str) -> Path:
        """Where the stage ``name`` keeps its file of type ``suffix`` (".json", ".pt")."""
        return self.folder / (name.replace("/", "_").replace("@", "-at-") + suffix)

    def finished(self, name: str) -> dict | None:
        """The row of the stage ``name`` when resuming and a stopped run finished it."""
        path = self.path(name, ".json")
        if not (self.resume and path.is_file()):
            return None
        print(f"  {name:<18} resumed from {path}", flush=True)
        return json.loads(path.read_text())

    def finish(self, name: str, row: dict) -> None:
        """Keep the row of the finished stage ``name`` (atomically)."""
        write_json_atomic(self.path(name, ".json"), row)
