"""Plots of evaluation records (matplotlib, the ``bench`` extra; no display needed).

The figures are drawn on a bare ``matplotlib.figure.Figure`` with the Agg renderer, so
importing this module never touches pyplot's global backend.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

from convexrobust._io import write_atomic
from convexrobust.errors import InvalidInputError

__all__ = ["plot_accuracy_vs_radius"]


def plot_accuracy_vs_radius(records: Iterable[dict], path: str | Path, title: str | None = None,
                            *, xlabel: str = "radius", dpi: int = 150) -> Path:
    """Accuracy against radius, one colour per model, written atomically as a PNG to ``path``.

    ``records`` are dicts ``{"model", "radius", "clean", "pgd", "certified"}`` (e.g.
    :attr:`convexrobust.evaluation.EvaluationReport.records`, from one or several reports).
    Solid line: PGD accuracy, starting from the clean accuracy at radius 0 (marked with a
    dot); dashed line: certified accuracy. ``None`` values are left out. Returns the path.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'convexrobust[bench]'") from err
    by_model: dict[str, list[dict]] = {}
    for rec in records:
        try:
            by_model.setdefault(str(rec["model"]), []).append(rec)
        except (KeyError, TypeError):
            raise InvalidInputError(f"each record needs a 'model' key, got {rec!r}") from None
    if not by_model:
        raise InvalidInputError("no records to plot")

    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = [f"C{i % 10}" for i in range(len(by_model))]
    for colour, (model, recs) in zip(colours, by_model.items(), strict=True):
        recs = sorted(recs, key=lambda r: float(r["radius"]))
        clean = recs[0].get("clean")
        attacked = [(float(r["radius"]), r["pgd"]) for r in recs if r.get("pgd") is not None]
        if clean is not None and not any(r == 0 for r, _ in attacked):
            attacked.insert(0, (0.0, clean))
        certified = [(float(r["radius"]), r["certified"]) for r in recs
                     if r.get("certified") is not None]
        if attacked:
            ax.plot(*zip(*attacked, strict=True), "-", color=colour, label=f"{model}")
        if certified:
            ax.plot(*zip(*certified, strict=True), "--", color=colour,
                    label=None if attacked else f"{model}")
        if clean is not None:
            ax.plot([0.0], [clean], "o", color=colour, clip_on=False, zorder=3)
    # style legend entries (black): what solid and dashed mean
    ax.plot([], [], "-", color="k", label="PGD")
    ax.plot([], [], "--", color="k", label="certified")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0.0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    data = buf.getvalue()
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))
