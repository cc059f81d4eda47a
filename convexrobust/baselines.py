"""Baselines the convex heads are compared with.

* :func:`train_pgd_head` — the same two-layer ReLU head ``f(z) = relu(z Uᵀ + b) α``
  (:class:`~convexrobust.networks.two_layer.TwoLayerReLU`) trained **non-convexly** by PGD
  adversarial training in feature space (Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards
  Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018): every minibatch is
  replaced by its PGD adversarial examples at the training radius before the gradient step.
  The attack is :func:`~convexrobust.attacks.pgd_attack` (margin loss, start at the clean
  point); the training loss is the logistic loss (one output, binary) or the cross-entropy.
  The learning rate is tuned on a validation split — never the test set — by robust
  validation accuracy under a stronger PGD at the same radius. Because the result is a
  ``TwoLayerReLU``, :func:`~convexrobust.certify.certified_radius` certifies it exactly like a
  convex head.

The GloRo certificate of a LiResNet's own head is
:meth:`~convexrobust.networks.liresnet.LiResNet.certified_radius`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from convexrobust._validation import (
    check_choice,
    check_device,
    check_features,
    check_int,
    check_positive,
    encode_targets,
)
from convexrobust.attacks import pgd_attack
from convexrobust.errors import InvalidInputError
from convexrobust.networks.two_layer import TwoLayerReLU
from convexrobust.threat import parse_norm

__all__ = ["PGDHeadResult", "train_pgd_head"]

logger = logging.getLogger(__name__)

#: Default learning-rate grid of :func:`train_pgd_head` (Adam).
DEFAULT_LRS = (1e-3, 3e-3, 1e-2)


@dataclass(frozen=True)
class PGDHeadResult:
    """A PGD-trained head and how it was chosen.

    ``network``: the head (float64, class ``k`` means ``classes[k]``); ``lr``: the chosen
    learning rate; ``lr_scores``: robust validation accuracy of every learning rate tried;
    ``validation_robust_accuracy`` / ``validation_clean_accuracy`` of the chosen one (``None``
    without validation data); ``train_seconds``: wall time of all training runs.
    """

    network: TwoLayerReLU
    lr: float
    validation_robust_accuracy: float | None
    validation_clean_accuracy: float | None
    train_seconds: float
    radius: float
    norm: float
    classes: np.ndarray
    lr_scores: dict[float, float] = field(default_factory=dict)


def train_pgd_head(features: object, labels: object, *, radius: float, hidden: int = 256,
                   norm: float | str = 2, epochs: int = 20, lr: str | float = "auto",
                   lrs: Sequence[float] = DEFAULT_LRS, optimizer: str = "adam",
                   validation: float | tuple[object, object] | None = 0.2,
                   batch_size: int = 128, pgd_steps: int = 10, eval_pgd_steps: int = 50,
                   seed: int = 0, device: torch.device | str | None = None,
                   progress: bool = True) -> PGDHeadResult:
    """Train a two-layer ReLU head by PGD adversarial training at ``radius`` (see the module
    docstring) and return it with its tuning record.

    Args:
        features, labels: training features ``(n, d)`` and class labels (any label set with
            at least two classes; two classes give one output).
        radius: training (and validation attack) radius in feature space, ``>= 0`` (0 is
            nominal training).
        hidden: number of hidden ReLU neurons.
        norm: ``2`` or ``"inf"``.
        epochs: passes over the training split per learning rate.
        lr: ``"auto"`` tunes over ``lrs``; a number trains with that rate only.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        validation: fraction of ``(features, labels)`` held out at random (seeded), or an
            explicit ``(Z_val, y_val)``; ``None`` trains on everything (only with a fixed
            ``lr``). The returned head is the one trained on the training split.
        batch_size, pgd_steps: minibatch size and PGD steps of the training attack.
        eval_pgd_steps: PGD steps of the validation attack.
        seed: seeds the initialisation, the split and the minibatch order: the same seed
            gives the same weights (on the CPU; GPU kernels may not be bitwise deterministic).
        device: where to train (default CPU); training runs in float32.
        progress: tqdm bar over epochs (quiet anyway when not on a terminal).
    """
    p = parse_norm(norm)
    if p not in (2.0, math.inf):
        raise InvalidInputError(f"PGD training supports the l2 and linf norms, got {norm!r}")
    radius = check_positive(radius, "radius")
    optimizer = check_choice(optimizer, "optimizer", ("adam", "sgd"))
    hidden, epochs, batch_size = (check_int(v, name, minimum=1) for v, name in (
        (hidden, "hidden"), (epochs, "epochs"), (batch_size, "batch_size")))
    pgd_steps = check_int(pgd_steps, "pgd_steps")
    eval_pgd_steps = check_int(eval_pgd_steps, "eval_pgd_steps")
    dev = check_device(device)
    X = check_features(features, name="features")
    targets = encode_targets(labels, X.shape[0], task="classification")
    classes, y = targets.classes, targets.labels
    if isinstance(lr, str):
        if lr != "auto":
            raise InvalidInputError(f"lr must be 'auto' or a number, got {lr!r}")
        grid = [check_positive(v, "lrs", allow_zero=False) for v in lrs]
        if not grid:
            raise InvalidInputError("lrs is empty; give at least one learning rate")
        if validation is None:
            raise InvalidInputError("lr='auto' needs validation data to tune on")
    else:
        grid = [check_positive(lr, "lr", allow_zero=False)]

    X_tr, y_tr, val = _split(X, y, classes, validation, seed)
    dt = torch.float32
    Z = torch.as_tensor(X_tr, dtype=dt, device=dev)
    Y = torch.as_tensor(y_tr, device=dev)
    if val is not None:
        Zv = torch.as_tensor(val[0], dtype=dt, device=dev)
        Yv = torch.as_tensor(val[1], device=dev)
    n_out = 1 if classes.size == 2 else classes.size

    start = time.perf_counter()
    bar = tqdm(total=len(grid) * epochs, desc="pgd head", unit="epoch",
               disable=None if progress else True)
    best: tuple[float, float, float, TwoLayerReLU] | None = None  # robust, clean, lr, net
    scores: dict[float, float] = {}
    for rate in grid:
        net = _init_head(X.shape[1], hidden, n_out, seed, dt, dev)
        _train(net, Z, Y, rate, optimizer, epochs, batch_size, radius, p, pgd_steps, seed, bar)
        if val is None:
            best = (math.nan, math.nan, rate, net)
            break
        robust, clean = _robust_accuracy(net, Zv, Yv, radius, p, eval_pgd_steps, seed)
        scores[rate] = robust
        logger.info("pgd head lr=%g: validation robust %.4f, clean %.4f", rate, robust, clean)
        if best is None or robust > best[0]:  # ties keep the earlier rate of the grid
            best = (robust, clean, rate, net)
    bar.close()
    assert best is not None
    robust, clean, rate, net = best
    head = TwoLayerReLU(net.weight.detach(), net.bias.detach(), net.output.detach(),
                        dtype=torch.float64, device=dev)
    return PGDHeadResult(head, rate, None if val is None else robust,
                         None if val is None else clean, time.perf_counter() - start, radius, p,
                         classes, scores)


def _split(X: np.ndarray, y: np.ndarray, classes: np.ndarray, validation: object, seed: int
           ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    if validation is None:
        return X, y, None
    if isinstance(validation, tuple | list):
        if len(validation) != 2:
            raise InvalidInputError("validation must be a fraction or a (Z_val, y_val) pair")
        Zv = check_features(validation[0], name="validation features", n_features=X.shape[1])
        yv_raw = np.asarray(validation[1].detach().cpu() if hasattr(validation[1], "detach")
                            else validation[1]).reshape(-1)
        if yv_raw.shape[0] != Zv.shape[0]:
            raise InvalidInputError("validation features and labels differ in length")
        yv = np.searchsorted(classes, yv_raw)
        if np.any(yv >= classes.size) or np.any(classes[np.minimum(yv, classes.size - 1)]
                                                != yv_raw):
            raise InvalidInputError("validation labels contain classes absent from training")
        return X, y, (Zv, yv)
    frac = check_positive(validation, "validation", allow_zero=False)
    n_val = int(round(frac * X.shape[0]))
    if frac >= 1 or n_val < 1 or n_val >= X.shape[0]:
        raise InvalidInputError(f"validation fraction {validation!r} leaves no training or no "
                                f"validation points out of {X.shape[0]}")
    perm = np.random.default_rng(seed).permutation(X.shape[0])
    tr, va = perm[n_val:], perm[:n_val]
    return X[tr], y[tr], (X[va], y[va])


def _init_head(d: int, m: int, c: int, seed: int, dtype: torch.dtype, device: torch.device
               ) -> TwoLayerReLU:
    """PyTorch's ``nn.Linear`` initialisation, ``U(−1/√fan_in, 1/√fan_in)``, from a seeded
    generator."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(*shape: int, fan_in: int) -> torch.Tensor:
        return (2 * torch.rand(*shape, generator=gen, dtype=torch.float64) - 1) / fan_in ** 0.5

    return TwoLayerReLU(uniform(m, d, fan_in=d), uniform(m, fan_in=d), uniform(m, c, fan_in=m),
                        dtype=dtype, device=device)


def _loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if scores.shape[1] == 1:
        t = 2.0 * y.to(scores.dtype) - 1.0
        return F.softplus(-t * scores[:, 0]).mean()
    return F.cross_entropy(scores, y)


def _train(net: TwoLayerReLU, Z: torch.Tensor, Y: torch.Tensor, lr: float, optimizer: str,
           epochs: int, batch_size: int, radius: float, p: float, pgd_steps: int, seed: int,
           bar: tqdm) -> None:
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed + 1)
    n = Z.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(Z.device)
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            zb, yb = Z[idx], Y[idx]
            if radius > 0 and pgd_steps > 0:
                zb = pgd_attack(net, zb, yb, norm=p, eps=radius, steps=pgd_steps)
            loss = _loss(net(zb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        bar.update(1)


def _robust_accuracy(net: TwoLayerReLU, Z: torch.Tensor, Y: torch.Tensor, radius: float,
                     p: float, steps: int, seed: int) -> tuple[float, float]:
    """(robust, clean) accuracy; robust = correct on the clean point and under PGD."""
    correct = net.predict(Z) == Y
    robust = correct
    if radius > 0:
        adv = pgd_attack(net, Z, Y, norm=p, eps=radius, steps=steps, restarts=1, seed=seed)
        robust = correct & (net.predict(adv) == Y)
    return float(robust.double().mean()), float(correct.double().mean())
