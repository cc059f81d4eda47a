"""Training a LiResNet with EMMA (Hu et al., NeurIPS 2023; MATH.md §6–7).

One step: logits = model(x); K = the power-iteration surrogate of the backbone's Lipschitz
constant (differentiable, warm-started buffers); ε_t from the schedule; loss = EMMA(logits, y,
head rows, K, ε_t); gradient clipping; NAdam/AdamW with linear warm-up then cosine decay.

Reproducibility (:mod:`convexrobust.training_common`): checkpoints, written atomically after
each epoch, hold the model, optimiser, schedule and power-iteration buffers, and every epoch
draws its shuffling and augmentation from a generator seeded with ``(seed, epoch)`` — so
``resume`` continues to the same weights as an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from convexrobust._io import append_json_line
from convexrobust._validation import check_device
from convexrobust.errors import InvalidInputError
from convexrobust.lipschitz_margin import (
    emma_loss,
    epsilon_schedule,
    fixed_margin_loss,
    gloro_radius,
    gloro_trades_loss,
)
from convexrobust.networks.liresnet import LiResNet
from convexrobust.training_common import (
    all_reduce_mean,
    class_count,
    epoch_batches,
    load_checkpoint,
    save_atomic,
    warmup_cosine,
)

__all__ = ["TrainConfig", "build_model", "evaluate_gloro", "neck_stride", "train_liresnet"]

log = logging.getLogger(__name__)

LOSSES = {"emma": emma_loss, "fixed": fixed_margin_loss, "trades": gloro_trades_loss}


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_liresnet` (defaults: the digits setting)."""

    data: str = "digits"
    arch: str = "L4W32"
    epochs: int = 200
    eps: float = 0.3
    batch_size: int = 128
    lr: float = 5e-3
    weight_decay: float = 0.0
    optimizer: str = "nadam"
    warmup_epochs: int = 3
    grad_clip: float = 10.0
    loss: str = "emma"
    eps_high: float = 1.5
    power_steps: int = 1
    neck_dim: int = 64
    neck_channels: int | None = None
    seed: int = 0
    extra: dict = field(default_factory=dict)


def neck_stride(input_size: int) -> int:
    """The neck convolution's stride (and kernel) for square images of side ``input_size``: the
    largest divisor of the side that is at most 4 (at most 2 below 16 pixels), so that the
    patches tile the image; an odd prime side gets 1 (the neck then only mixes channels).
    Raises :class:`InvalidInputError` for a side below 1."""
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise InvalidInputError(f"the image side must be an integer >= 1, got {input_size!r}")
    return next(s for s in ((4, 3, 2, 1) if input_size >= 16 else (2, 1))
                if input_size % s == 0)


def build_model(cfg: TrainConfig, in_channels: int, input_size: int, classes: int) -> LiResNet:
    """The LiResNet ``cfg.arch`` for ``classes`` classes and square ``in_channels`` × side
    ``input_size`` images, its neck stride from :func:`neck_stride`."""
    stride = neck_stride(input_size)
    if stride != (4 if input_size >= 16 else 2):
        log.info("images of side %d: neck stride %d (the side is not a multiple of the usual "
                 "%d)", input_size, stride, 4 if input_size >= 16 else 2)
    return LiResNet.from_arch(cfg.arch, classes, in_channels=in_channels, input_size=input_size,
                              neck_stride=stride, neck_channels=cfg.neck_channels,
                              neck_dim=cfg.neck_dim)


@torch.no_grad()
def evaluate_gloro(model: LiResNet, x: torch.Tensor, y: torch.Tensor, radii: tuple[float, ...],
                   *, kind: str = "guaranteed", batch_size: int = 512) -> dict:
    """Clean accuracy and verified robust accuracy (VRA) at each radius, with the ``kind``
    Lipschitz bound of the backbone. ``"guaranteed"`` radii are certificates (MATH.md §5–6):
    :meth:`LiResNet.certified_radius`, on a float64 copy, so neither float32 round-off nor TF32
    convolutions on a GPU can count a point the exact logits do not certify. ``"estimate"``
    (the per-epoch validation report) uses the float32 logits of one forward pass."""
    model.eval()
    K = model.lipschitz_bound(kind, "backbone")
    W = model.head_weight()
    device = W.device
    correct, radius = [], []
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size].to(device))
        yb = y[i:i + batch_size].to(device)
        correct.append(logits.argmax(1) == yb)
        if kind != "guaranteed":
            radius.append(torch.where(logits.argmax(1) == yb, gloro_radius(logits, yb, W, K),
                                      torch.zeros(len(yb), dtype=logits.dtype, device=device)))
    ok = torch.cat(correct)
    r = (model.certified_radius(x, y, 2, batch_size=batch_size) if kind == "guaranteed"
         else torch.cat(radius))
    return {"clean_accuracy": float(ok.double().mean()),
            "vra": {f"{e:g}": float((r > e).double().mean()) for e in radii},
            "lipschitz": {"kind": kind, "value": K}}


def train_liresnet(cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, out: Path, *,
                   resume: bool = False, progress: bool = True,
                   x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
                   device: torch.device | str | None = None,
                   num_classes: int | None = None) -> LiResNet:
    """Train on ``(x, y)`` (float images in [0, 1], labels 0..C−1), checkpointing to
    ``out/checkpoint.pt`` each epoch; writes ``out/model.pt`` (loadable with
    :meth:`LiResNet.load`) and ``out/log.jsonl``. A failed run never overwrites a good file.
    The model has ``num_classes`` outputs — pass the dataset's class count, since a class may
    have no training image — and ``max(y) + 1`` when it is None; labels outside
    ``0..num_classes−1`` raise :class:`InvalidInputError`.

    Inside an initialised ``torch.distributed`` group (e.g. under ``torchrun``) every process
    holds the data, takes an equal share of each global batch of ``cfg.batch_size`` and
    all-reduces the gradients, so the run equals the single-process one; rank 0 writes."""
    if cfg.loss not in LOSSES:
        raise InvalidInputError(f"loss must be one of {', '.join(LOSSES)}, got {cfg.loss!r}")
    if cfg.optimizer not in ("nadam", "adamw"):
        raise InvalidInputError(f"optimizer must be 'nadam' or 'adamw', got {cfg.optimizer!r}")
    out = Path(out)
    torch.manual_seed(cfg.seed)
    classes = class_count(y, num_classes)
    device = check_device(device)
    model = build_model(cfg, x.shape[1], x.shape[-1], classes).to(device)
    opt_cls = torch.optim.NAdam if cfg.optimizer == "nadam" else torch.optim.AdamW
    optimizer = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total, cfg.warmup_epochs * steps_per_epoch))
    start_epoch = 0
    checkpoint = out / "checkpoint.pt"
    state = load_checkpoint(checkpoint, device, model=model, optimizer=optimizer,
                            scheduler=scheduler) if resume else None
    if state is not None:
        start_epoch = state["epoch"]
    loss_fn = LOSSES[cfg.loss]
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    bar = tqdm(range(start_epoch, cfg.epochs), desc="train",
               disable=None if progress and rank == 0 else True,
               initial=start_epoch, total=cfg.epochs)
    for epoch in bar:
        model.train()
        started, seen, total_loss = time.perf_counter(), 0, 0.0
        for b, (xb, yb) in enumerate(epoch_batches(x, y, cfg.batch_size, cfg.seed, epoch,
                                                   device)):
            n_global = len(yb)
            # data parallel: every rank augments the same global batch and keeps its share
            xb, yb = xb[rank::world], yb[rank::world]
            step = epoch * steps_per_epoch + b
            eps_t = epsilon_schedule(cfg.eps, step, total, high=cfg.eps_high)
            K = model.lipschitz_estimate("backbone", steps=cfg.power_steps)
            loss = loss_fn(model(xb), yb, model.head_weight(), K, eps_t)
            optimizer.zero_grad(set_to_none=True)
            # weight the local mean so the all-reduced gradient is the global batch's mean
            (loss * (len(yb) * world / n_global)).backward()
            if world > 1:
                all_reduce_mean(model)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(yb)
            seen += len(yb)
        record = {"epoch": epoch + 1, "loss": total_loss / seen,
                  "images_per_second": seen * world / (time.perf_counter() - started),
                  "lr": scheduler.get_last_lr()[0]}
        if rank != 0:
            continue
        if x_val is not None and y_val is not None:
            record.update(evaluate_gloro(model, x_val, y_val, (cfg.eps,), kind="estimate"))
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                     "config": asdict(cfg)}, checkpoint)
        append_json_line(out / "log.jsonl", record)  # only epochs whose checkpoint exists
    if rank == 0:
        model.save(out / "model.pt")
    if world > 1:
        dist.barrier()
    return model
