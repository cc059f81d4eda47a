"""What the image trainers share (:mod:`convexrobust.training` for LiResNet + EMMA,
:mod:`convexrobust.classifier_training` for PreActResNet18 by SGD or SAM): tensor conversion,
augmentation, the warm-up + cosine learning-rate factor, label checks, gradient all-reduce, and
atomic, resumable checkpoints.

Reproducibility: every epoch draws its shuffling and augmentation from a generator seeded with
``(seed, epoch)`` (:func:`epoch_batches`), and a checkpoint holds the model, optimiser and
schedule (plus whatever the trainer adds), so resuming continues to the same weights as an
uninterrupted run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from convexrobust._io import write_atomic
from convexrobust.errors import InvalidInputError

__all__ = ["all_reduce_mean", "as_tensors", "augment", "class_count", "epoch_batches",
           "load_checkpoint", "save_atomic", "warmup_cosine"]

log = logging.getLogger(__name__)


def save_atomic(obj: object, path: Path) -> None:
    """``torch.save`` atomically (temporary file, then rename)."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: Path, device: torch.device, **parts: object) -> dict | None:
    """The checkpoint at ``path`` loaded into ``parts`` (name → an object with
    ``load_state_dict``, e.g. ``model=…, optimizer=…, scheduler=…``), or None when there is none.
    Returns the whole checkpoint (its ``epoch`` and any other entries)."""
    if not path.exists():
        return None
    state = torch.load(path, weights_only=False, map_location=device)
    for name, part in parts.items():
        part.load_state_dict(state[name])  # type: ignore[attr-defined]
    log.info("resumed from %s at epoch %d", path, state["epoch"])
    return state


def epoch_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, epoch: int,
                  device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of one epoch on ``device``: a permutation of the samples, then each batch
    augmented (:func:`augment`; crops of 1 pixel and no flips for images of side ≤ 8, where a
    flip can change the class, else 4 pixels and flips), all drawn from one generator seeded
    with ``(seed, epoch)``."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(x), generator=generator)
    pad, flip = (1, False) if x.shape[-1] <= 8 else (4, True)
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        yield augment(x[idx].to(device), generator, pad=pad, flip=flip), y[idx].to(device)


def augment(x: torch.Tensor, generator: torch.Generator, *, pad: int, flip: bool
            ) -> torch.Tensor:
    """Random crop (zero padding ``pad``, shift ±pad) and optional horizontal flip, with tensor
    ops only (no torchvision)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, x.shape[1], h,
                                                                              w + 2 * pad)
    out = padded.gather(2, rows.to(x.device))
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, x.shape[1], h, w)
    out = out.gather(3, cols.to(x.device))
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        out[mask.to(x.device)] = out[mask.to(x.device)].flip(-1)
    return out


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """The learning-rate factor at ``step`` of ``total``: linear warm-up over ``warmup`` steps,
    then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def class_count(y: torch.Tensor, num_classes: int | None) -> int:
    """``num_classes`` checked against the labels ``y`` (``max(y) + 1`` when it is None)."""
    if y.numel() == 0:
        raise InvalidInputError("no training images: y is empty")
    low, high = int(y.min()), int(y.max())
    if num_classes is None:
        num_classes = high + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InvalidInputError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if low < 0 or high >= num_classes:
        raise InvalidInputError(f"labels must lie in 0..{num_classes - 1}, got {low}..{high}")
    return num_classes


def all_reduce_mean(model: torch.nn.Module) -> None:
    """Average the gradients over the processes of the default group."""
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def as_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 or [0, 1] float images → float32 tensors in [0, 1]; labels → int64."""
    x = torch.as_tensor(images)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return x, torch.as_tensor(labels, dtype=torch.int64)
