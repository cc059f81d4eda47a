"""Clean, attacked and certified accuracy of a classifier ``g∘h`` whose head ``g`` has a
certificate and whose feature map ``h`` has a guaranteed Lipschitz bound ``K_h``.

Composition (MATH.md §5): a head certified at feature radius ``R(h(x))`` certifies ``g∘h`` at
input radius ``R(h(x)) / K_h``. Attacks run through the whole model in input space.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from convexrobust.attacks import pgd_attack
from convexrobust.certify import certified_radius


def accuracy_report(model: nn.Module, head: nn.Module, features: nn.Module, X: np.ndarray,
                    y: np.ndarray, radii: tuple[float, ...], *, lipschitz: float,
                    norm: float | str = 2, steps: int = 50, restarts: int = 3,
                    seed: int = 0) -> list[dict[str, float]]:
    """One record per radius: ``{"radius", "clean", "pgd", "certified"}`` on ``(X, y)``.

    ``model`` is ``head ∘ features`` (what the attack sees), ``lipschitz`` a guaranteed bound
    of ``features`` from the input norm to ℓ2 (for the ReLU ℓ∞ head certificate the features'
    bound must be ℓ∞→ℓ∞). ``pgd`` is the accuracy under a PGD attack of radius r with
    restarts; ``certified`` the fraction with certified radius > r.
    """
    x = torch.as_tensor(X, dtype=torch.float64)
    labels = torch.as_tensor(y)
    with torch.no_grad():
        clean = float((_predict(model(x)) == labels).double().mean())
        z = features(x).numpy()
    radius = certified_radius(head, z, y, norm).radius / lipschitz
    records = []
    for r in radii:
        adv = pgd_attack(model, x, labels, norm=norm, eps=r, steps=steps, restarts=restarts,
                         seed=seed)
        with torch.no_grad():
            pred = _predict(model(adv))
        records.append({
            "radius": float(r),
            "clean": clean,
            "pgd": float((pred == labels).double().mean()),
            "certified": float(np.mean(radius > r)),
        })
    return records


def _predict(scores: torch.Tensor) -> torch.Tensor:
    return scores.argmax(1) if scores.shape[1] > 1 else (scores[:, 0] > 0).long()
