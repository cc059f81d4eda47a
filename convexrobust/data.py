"""Datasets, never downloaded: scikit-learn's bundled sets (breast cancer, digits) and CIFAR-10
from a local copy (the JPEG zip in ``../shared/data`` or a folder of the same layout)."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

from convexrobust._io import write_atomic
from convexrobust.errors import DatasetNotFoundError, InvalidInputError

#: CIFAR-10 class names; their order is the label order.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


@dataclass(frozen=True)
class Split:
    """A train/test split with standardisation statistics from the training part only."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    name: str


def breast_cancer(*, test_size: float = 0.2, seed: int = 0) -> Split:
    """Wisconsin breast cancer (569 × 30, binary; the data of Kuelbs et al.'s polynomial
    experiment): stratified 80/20 split, features standardised with training statistics."""
    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=seed,
                                              stratify=y)
    mean, scale = X_tr.mean(axis=0), X_tr.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return Split((X_tr - mean) / scale, y_tr, (X_te - mean) / scale, y_te, mean, scale,
                 "breast-cancer")


def digits(*, test_size: float = 0.2, seed: int = 0) -> Split:
    """scikit-learn's 8×8 digits (1797 images, 10 classes) as (n, 1, 8, 8) arrays scaled to
    [0, 1] (pixel values / 16), stratified split; ``mean``/``scale`` are 0/1 (no
    standardisation, so ℓ2 radii are in pixel space)."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 1, 8, 8)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=seed,
                                              stratify=y)
    return Split(X_tr, y_tr, X_te, y_te, np.zeros(1), np.ones(1), "digits")


def cifar10_candidates() -> list[Path]:
    """Where :func:`cifar10` looks when no path is given, in order: ``$CONVEXROBUST_CIFAR10``,
    then ``../shared/data/cifar10-jpeg.zip`` next to the repository and the working folder."""
    found = []
    if os.environ.get("CONVEXROBUST_CIFAR10"):
        found.append(Path(os.environ["CONVEXROBUST_CIFAR10"]))
    repo = Path(__file__).resolve().parent.parent
    for base in (repo, Path.cwd()):
        found.append(base.parent / "shared" / "data" / "cifar10-jpeg.zip")
    return found


def _read_cifar10(source: Path, split: str, limit_per_class: int | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    images, labels = [], []
    if source.is_dir():
        names = {c: sorted((source / split / c).glob("*.jpg")) for c in CIFAR10_CLASSES}
        for label, cls in enumerate(CIFAR10_CLASSES):
            for path in names[cls][:limit_per_class]:
                images.append(np.asarray(Image.open(path).convert("RGB")))
                labels.append(label)
    else:
        with zipfile.ZipFile(source) as archive:
            entries = sorted(n for n in archive.namelist() if n.endswith(".jpg"))
            for label, cls in enumerate(CIFAR10_CLASSES):
                members = [n for n in entries if n.startswith(f"{split}/{cls}/")]
                for name in members[:limit_per_class]:
                    data = io.BytesIO(archive.read(name))
                    images.append(np.asarray(Image.open(data).convert("RGB")))
                    labels.append(label)
    if not images:
        raise DatasetNotFoundError(f"{source} holds no {split}/<class>/*.jpg images")
    return np.stack(images).transpose(0, 3, 1, 2), np.asarray(labels, dtype=np.int64)


def cifar10(path: str | os.PathLike | None = None, *, split: str = "train",
            limit_per_class: int | None = None, cache_dir: str | os.PathLike | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 (JPEG) images as uint8 (n, 3, 32, 32) and labels 0–9 (order of
    :data:`CIFAR10_CLASSES`), from the zip of ``../shared/data`` or a folder laid out as
    ``train/<class>/*.jpg``, ``test/<class>/*.jpg`` (a torchvision ImageFolder export).

    Decoding takes ~10 s for all 60,000 images; the arrays are cached as ``.npz`` in
    ``cache_dir`` (default ``~/.cache/convexrobust``) keyed by the source's size and mtime.
    """
    if split not in ("train", "test"):
        raise InvalidInputError(f"split must be 'train' or 'test', got {split!r}")
    candidates = [Path(path)] if path is not None else cifar10_candidates()
    source = next((p for p in candidates if p.exists()), None)
    if source is None:
        tried = ", ".join(str(p) for p in candidates)
        raise DatasetNotFoundError(
            f"CIFAR-10 not found (tried {tried}); pass path= to the zip or an extracted folder "
            "of the same layout, or set CONVEXROBUST_CIFAR10"
        )
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime}|{split}|"
                         f"{limit_per_class}".encode()).hexdigest()[:16]
    cache = Path(cache_dir or Path.home() / ".cache" / "convexrobust") / f"cifar10-{key}.npz"
    if cache.exists():
        with np.load(cache) as stored:
            return stored["images"], stored["labels"]
    images, labels = _read_cifar10(source, split, limit_per_class)

    def store(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, images=images, labels=labels)

    write_atomic(cache, store)
    return images, labels


def subset(x: torch.Tensor, y: torch.Tensor, limit: int | None, seed: int = 0
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of ``limit`` samples (data files may be ordered by class, so the
    first ``limit`` would not do); all of them when ``limit`` is None or not smaller."""
    if limit is None or limit >= len(y):
        return x, y
    if limit < 1:
        raise InvalidInputError(f"limit must be >= 1, got {limit}")
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:limit]
    return x[keep], y[keep]
