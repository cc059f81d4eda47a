"""Training a :class:`~convexrobust.networks.PreActResNet18` classifier by cross-entropy, with
SGD or with sharpness-aware minimisation — the empirical route's backbones (Kuelbs, Lall &
Pilanci retrain the last two layers of a PreActResNet-18 and compare with SAM training).

SGD: Nesterov momentum, weight decay, linear warm-up then cosine decay
(:func:`~convexrobust.training_common.warmup_cosine`), random crops and flips.

SAM (Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for Efficiently
Improving Generalization", ICLR 2021): minimise ``max_{‖e‖₂ ≤ ρ} L(w + e)`` by its first-order
approximation. Each step takes the batch gradient ``g = ∇L(w)``, moves to
``w + e`` with ``e = ρ g/‖g‖₂`` (the norm over all parameters), takes the gradient there, and
hands it to the SGD step at ``w`` — two forward and backward passes per step. Batch-norm
running statistics are updated by the first pass only (the second runs with momentum 0).

Checkpoints and resuming as in :mod:`convexrobust.training_common`: a resumed run ends with the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from convexrobust._io import append_json_line
from convexrobust._validation import check_device
from convexrobust.errors import InvalidInputError
from convexrobust.networks.preact_resnet import PreActResNet18
from convexrobust.training_common import (
    class_count,
    epoch_batches,
    load_checkpoint,
    save_atomic,
    warmup_cosine,
)

__all__ = ["ClassifierConfig", "accuracy", "sam_step", "train_classifier"]


@dataclass
class ClassifierConfig:
    """Hyper-parameters of :func:`train_classifier`; ``sam_rho`` 0 is plain SGD."""

    data: str = "cifar10"
    width: int = 8
    head_hidden: int = 256
    epochs: int = 24
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    sam_rho: float = 0.0
    seed: int = 0

    def check(self) -> None:
        """:class:`InvalidInputError` naming the first field out of its range."""
        for name in ("width", "head_hidden", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, int) \
                or self.warmup_epochs < 0:
            raise InvalidInputError(
                f"warmup_epochs must be an integer >= 0, got {self.warmup_epochs!r}")
        for name, low, high in (("lr", 0.0, math.inf), ("momentum", 0.0, 1.0),
                                ("weight_decay", 0.0, math.inf), ("sam_rho", 0.0, math.inf)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value) and low <= value < high
            if not ok or (name == "lr" and value == 0):
                raise InvalidInputError(
                    f"{name} must be a finite number in {'(' if name == 'lr' else '['}{low:g}, "
                    f"{high:g}), got {value!r}")


@contextlib.contextmanager
def _frozen_batch_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Forward passes inside leave the batch-norm running statistics unchanged (momentum 0);
    they still normalise by the batch's statistics in training mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum


def sam_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             y: torch.Tensor, rho: float) -> torch.Tensor:
    """One optimiser step on the batch ``(x, y)`` by cross-entropy: the gradient at ``w`` when
    ``rho`` is 0 (SGD), else SAM's gradient at ``w + ρ g/‖g‖`` (module docstring). Returns the
    loss at ``w``."""
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if rho > 0:
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        with torch.no_grad():
            shifts = [p.grad * (rho / norm.clamp_min(1e-12)) for p in params]
            for p, e in zip(params, shifts, strict=True):
                p.add_(e)
        optimizer.zero_grad(set_to_none=True)
        with _frozen_batch_norm_statistics(model):
            F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p, e in zip(params, shifts, strict=True):
                p.sub_(e)
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
             batch_size: int = 512) -> float:
    """Clean accuracy of ``model`` (in eval mode) on ``(x, y)``."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size].to(device))
        correct += int((logits.argmax(1) == y[i:i + batch_size].to(device)).sum())
    return correct / max(len(x), 1)


def train_classifier(cfg: ClassifierConfig, x: torch.Tensor, y: torch.Tensor, out: Path, *,
                     resume: bool = False, progress: bool = True,
                     x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
                     device: torch.device | str | None = None,
                     num_classes: int | None = None) -> PreActResNet18:
    """Train a PreActResNet18 of ``cfg.width`` on ``(x, y)`` (float images in [0, 1], labels
    0..C−1) by SGD, or SAM when ``cfg.sam_rho > 0`` (module docstring), checkpointing to
    ``out/checkpoint.pt`` each epoch; writes ``out/model.pt`` (:meth:`PreActResNet18.load`) and
    ``out/log.jsonl`` (per epoch: loss, images per second, learning rate, and the accuracy on
    ``(x_val, y_val)`` when given). ``resume`` continues from the checkpoint to the same
    weights as an uninterrupted run. A failed run never overwrites a good file. The model has
    ``num_classes`` outputs (``max(y) + 1`` when None); bad options or labels raise
    :class:`InvalidInputError`."""
    cfg.check()
    if x.dim() != 4 or len(x) != len(y):
        raise InvalidInputError(
            f"expected images (n, C, H, W) and n labels, got {tuple(x.shape)} and {len(y)}")
    out = Path(out)
    torch.manual_seed(cfg.seed)
    classes = class_count(y, num_classes)
    device = check_device(device)
    model = PreActResNet18(num_classes=classes, in_channels=x.shape[1], width=cfg.width,
                           head_hidden=cfg.head_hidden).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total, cfg.warmup_epochs * steps_per_epoch))
    checkpoint = out / "checkpoint.pt"
    state = load_checkpoint(checkpoint, device, model=model, optimizer=optimizer,
                            scheduler=scheduler) if resume else None
    start_epoch = 0 if state is None else state["epoch"]
    bar = tqdm(range(start_epoch, cfg.epochs), desc="sam" if cfg.sam_rho > 0 else "sgd",
               disable=None if progress else True, initial=start_epoch, total=cfg.epochs)
    for epoch in bar:
        model.train()
        started, seen, total_loss = time.perf_counter(), 0, 0.0
        for xb, yb in epoch_batches(x, y, cfg.batch_size, cfg.seed, epoch, device):
            loss = sam_step(model, optimizer, xb, yb, cfg.sam_rho)
            scheduler.step()
            total_loss += float(loss) * len(yb)
            seen += len(yb)
        record = {"epoch": epoch + 1, "loss": total_loss / seen,
                  "images_per_second": seen / (time.perf_counter() - started),
                  "lr": scheduler.get_last_lr()[0]}
        if x_val is not None and y_val is not None:
            record["val_accuracy"] = accuracy(model, x_val, y_val)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                     "config": asdict(cfg)}, checkpoint)
        append_json_line(out / "log.jsonl", record)  # only epochs whose checkpoint exists
    model.save(out / "model.pt")
    return model
