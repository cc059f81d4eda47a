"""Image data for the network route (LiResNet training, retraining the last two layers,
evaluation, certification): one split of :func:`convexrobust.data.load` as tensors, refused —
with the command that takes it named — when it is a table.

Images come as float32 (n, C, H, W) in [0, 1], of any channels and size; labels as int64 class
indices. A LiResNet takes square images (:func:`check_square`).
"""

from __future__ import annotations

import os

import torch

from convexrobust.data import load
from convexrobust.errors import InvalidInputError

__all__ = ["check_square", "load_image_split", "load_images"]


def load_images(source: str | os.PathLike, split: str, *, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one split (``"train"`` or ``"test"``) of the dataset named or
    stored at ``source`` (``seed`` draws the test part of a set that has none of its own, such
    as digits). A table raises :class:`InvalidInputError` naming ``convexrobust fit``."""
    x, y, _ = load_image_split(source, split, seed=seed)
    return x, y


def load_image_split(source: str | os.PathLike, split: str, *, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """:func:`load_images` with the dataset's class names (every class of both splits, so a
    class that has no image in this split still counts)."""
    data = load(source, split=split, seed=seed)
    if data.kind != "images":
        raise InvalidInputError(
            f"{source} is a table, not images: LiResNets and the network commands "
            "(train-liresnet, retrain, certify) take images; fit a convex robust classifier "
            f"on a table with `convexrobust fit --data {source}`, or run `convexrobust demo "
            f"--data {source}`")
    return torch.as_tensor(data.x), torch.as_tensor(data.y), data.classes


def check_square(x: torch.Tensor, source: str | os.PathLike) -> None:
    """:class:`InvalidInputError` unless ``x`` holds square (n, C, S, S) images, as a LiResNet
    (whose convolutions and Lipschitz bounds are built for one side ``S``) takes them."""
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise InvalidInputError(
            f"a LiResNet takes square images; {source} holds images of shape "
            f"{tuple(x.shape[1:])} (C, H, W): crop or pad them to a square first")
