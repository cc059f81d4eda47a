"""What every benchmark writes beside its numbers: the machine, the versions, and the JSON
file itself (atomically: a temporary file, then a rename)."""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
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


def nonnegative_seconds(text: str) -> float:
    """A duration in seconds, finite and ≥ 0 (an argparse ``type``: a time limit, a checkpoint
    interval; 0 means none)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"takes seconds >= 0, got {text!r}")
    return value


def positive_numbers(text: str) -> tuple[float, ...]:
    """A comma-separated list of positive finite numbers (an argparse ``type``: a β grid, radius
    scales)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 < v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(
            f"takes comma-separated positive numbers, got {text!r}")
    return values


def torch_device(name: str) -> torch.device:
    """``name`` (a ``--device`` argument) as a torch device, or ``SystemExit`` saying why it is
    not usable on this machine."""
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, TypeError, AssertionError) as err:  # CPU builds assert on "cuda"
        raise SystemExit(f"--device {name!r} is not usable here: {err}") from None
    return device


def source_commit() -> str | None:
    """The git commit the benchmark code runs from, ``"+changes"`` appended when tracked files
    differ from it; None outside a git checkout."""
    here = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+changes" if dirty.strip() else "")


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


def resumed_seconds(info: dict) -> float:
    """The solve seconds stopped runs spent on what a resumed one reused or continued (a
    :class:`~convexrobust.RobustModel`'s ``info``: its candidates and refit, marked
    ``"resumed"`` when reloaded and ``"continued_from"`` when continued,
    :mod:`convexrobust.kept_solve`), so that a head's train time counts them."""
    records = [*info["candidates"], *([info["refitted"]] if info.get("refitted") else [])]
    return sum(r["solve_time"] if r.get("resumed") else r.get("continued_from", 0.0)
               for r in records)


class Stages:
    """The finished stages of a resumable benchmark run, kept in ``folder``: each stage's row
    as JSON (``finish``) and whatever else it saves under :meth:`path` (a model). A run that
    does not ``resume`` starts afresh (the folder is emptied, so its times are real); one that
    does gets the rows of the stages a stopped run finished (``finished``); a ``read_only`` one
    only reports them."""

    def __init__(self, folder: Path, resume: bool, *, read_only: bool = False):
        # read_only: a report of what is kept; nothing is made, so nothing is discarded
        self.folder, self.resume, self.read_only = Path(folder), resume or read_only, read_only
        if not self.resume and self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, name: str, suffix: str) -> Path:
        """Where the stage ``name`` keeps its file of type ``suffix`` (".json", ".pt")."""
        return self.folder / (name.replace("/", "_").replace("@", "-at-") + suffix)

    def finished(self, name: str, settings: dict | None = None) -> dict | None:
        """The row of the stage ``name`` when resuming and a stopped run finished it. With
        ``settings``, only a row kept with the same ``"settings"``: another one is discarded
        (its JSON removed, so that nothing can pair it with the files the stage makes again)
        and the stage is to be made again."""
        path = self.path(name, ".json")
        if not (self.resume and path.is_file()):
            return None
        row = json.loads(path.read_text())
        if settings is not None and row.get("settings") != settings:
            if self.read_only:
                print(f"  {name:<18} kept with other settings: left out", flush=True)
                return None
            print(f"  {name:<18} kept with other settings: made again", flush=True)
            self.discard(name)
            return None
        print(f"  {name:<18} resumed from {path}", flush=True)
        return row

    def discard(self, name: str) -> bool:
        """Forget the finished stage ``name`` (its row), e.g. when what it depends on is made
        again; whether there was one."""
        path = self.path(name, ".json")
        kept = path.is_file()
        path.unlink(missing_ok=True)
        return kept

    def finish(self, name: str, row: dict) -> None:
        """Keep the row of the finished stage ``name`` (atomically)."""
        write_json_atomic(self.path(name, ".json"), row)
