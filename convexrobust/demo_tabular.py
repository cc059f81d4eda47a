"""``convexrobust demo --data breast-cancer`` (or any table): nominal and robust convex heads on
tabular data.

Four models on the standardised table (:mod:`convexrobust.tabular`): a polynomial and a ReLU
head, each trained nominally and against the threat ``cfg.norm``, ``cfg.eps``, on the identity
feature map followed by the projection on the top ``cfg.components`` principal directions
(``K_h = ‖V‖₂ = 1`` exactly). Every certificate of a head in feature space is a certificate of
the whole model in the standardised input space (MATH.md §5), and the attacks run on the whole
model in input space. The projection keeps the SDPs small enough for an interior-point solver in
seconds; ``components=0`` uses all 30 breast-cancer features (minutes).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from convexrobust.data import Split
from convexrobust.evaluation import default_autoattack_radii
from convexrobust.feature_map import principal_directions
from convexrobust.tabular import (
    TabularConfig,
    evaluate_table,
    fit_table,
    load_table,
    write_results,
)

#: The demo's settings: the defaults of :class:`~convexrobust.tabular.TabularConfig` on the
#: top 10 principal components.
DEMO_CONFIG = TabularConfig(components=10)


def principal_projection(split: Split, components: int) -> tuple[nn.Linear, float]:
    """``h(x) = V(x − c)`` on the top principal directions of ``split``'s training rows (all
    of them when ``components`` is 0), and its exact ℓ2 bound ``‖V‖₂``."""
    x = torch.as_tensor(split.X_train, dtype=torch.float64)
    center = x.mean(dim=0)
    V = principal_directions(x - center, components or None)
    layer = nn.Linear(V.shape[1], V.shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(V)
        layer.bias.copy_(-V @ center)
    layer.requires_grad_(False)
    return layer, float(np.linalg.norm(V.numpy(), 2))


def demo_configs(cfg: TabularConfig) -> dict[str, TabularConfig]:
    """The demo's four models by name: polynomial and ReLU heads, nominal and robust."""
    configs = [replace(cfg, head=head, eps=eps) for head in ("polynomial", "relu")
               for eps in (0.0, cfg.eps)]
    return {c.name: c for c in configs}


def run_tabular_demo(cfg: TabularConfig = DEMO_CONFIG, out: str | os.PathLike | None = None, *,
                     data: str | os.PathLike = "breast-cancer",
                     label_column: str | int | None = None, progress: bool = True,
                     device: torch.device | str | None = None) -> list[dict]:
    """Train the four models (:func:`demo_configs`) on the table ``data``
    (:func:`~convexrobust.tabular.load_table`, split and seeded by ``cfg.seed``) and evaluate
    them on its test split (on ``device``, default the CPU); returns one record per (model,
    radius) with ``model, radius, clean, pgd, certified`` (and the AutoAttacks of
    ``cfg.attacks``, at ``cfg.autoattack_radii``, by default the robust models' training
    radius ``cfg.eps``), the number of rows behind each, and the solve's ``solver, solve_time,
    neurons, objective, violation``. With ``out``, writes each model as ``out/<name>.pt``
    (:meth:`~convexrobust.RobustModel.save`), ``out/results.json`` and ``out/accuracy.png``."""
    table = load_table(data, label_column=label_column, seed=cfg.seed)
    if cfg.autoattack_radii is None:  # the robust models' training radius, for all four
        cfg = replace(cfg, autoattack_radii=default_autoattack_radii(cfg.eps, cfg.radii))
    records: list[dict] = []
    configs = demo_configs(cfg)
    # disable=None: tqdm stays quiet when stderr is not a terminal
    bar = tqdm(configs.items(), desc="demo", disable=None if progress else True, unit="model")
    for name, model_cfg in bar:
        bar.set_postfix_str(name)
        model = fit_table(table, model_cfg)
        records += evaluate_table(model, table, model_cfg, progress=False, device=device)
        if out is not None:
            model.save(Path(out) / f"{name}.pt")
    if out is not None:
        write_results(records, out, f"{table.source}: convex heads ({cfg.threat.name} "
                                    "training)")
    return records
