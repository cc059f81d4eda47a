"""Datasets from local files only — nothing is ever downloaded.

:func:`load` reads one split of a dataset as arrays (a :class:`DataSplit`). Its ``source`` is
a name — ``"digits"``, ``"cifar10"``, ``"breast-cancer"`` — or a path, recognised by content:

* **Image folder** (torchvision's ImageFolder layout): a folder, or a zip of one (at the zip's
  root or inside one top folder), holding ``train/<class>/<image>`` and ``test/<class>/<image>``
  in any format Pillow reads. Labels follow the sorted class-folder names of both splits. Every
  image must have one size. Grayscale images (modes 1, L, LA) give one channel; if any image of
  either split is in colour, the whole dataset is RGB and grayscale images are repeated into
  three equal channels (lossless; alpha is dropped). 16-bit and float images are refused.
  Decoded pixels are cached (below). The CIFAR-10 JPEG zip of ``../shared/data`` is one.
* **npz** (``np.savez``): ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally
  ``classes`` (a string array of class names). A 2-D ``x`` is a table of features; otherwise
  ``x`` holds images, (n, H, W) grayscale or (n, C, H, W), or (n, H, W, C) — taken to be NHWC
  when its last axis is 1 or 3 and its second is not — as uint8 or as floats in [0, 1].
* **IDX** (MNIST's format, as MNIST, Fashion-MNIST and KMNIST ship it): a folder with
  ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
  ``t10k-labels-idx1-ubyte``, each raw or gzip-compressed (``.gz``); a path to one of them
  means its folder. Class names are ``"0"``, ``"1"``, …
* **Table** (CSV or TSV; the delimiter — tab, comma or semicolon — is read off the first
  line): one row per sample, numeric feature columns and one label column (``label_column=``,
  a header name or an index; the last column by default). A header row is recognised when a
  column's first cell is text and its second a number. Labels may be any text; class order is
  numeric when every label is a number, else alphabetical. A folder with ``train.csv`` and
  ``test.csv`` (or ``.tsv``) gives both splits; a single table is split into a stratified
  held-out test part (``test_size``, ``seed``).

npz and IDX labels must already be class indices 0..C−1 over both splits (an error says how
to map them otherwise). Images come back as float32 (n, C, H, W) in [0, 1], tables as float64
(n, d), unstandardised, with the training split's mean and scale. Decoded images are cached as
``.npz`` in ``cache_dir`` (default ``~/.cache/convexrobust``), keyed by the source's path, size
and modification time (for a folder: of every image in it), written atomically.

The named sets also have helpers of their own: :func:`breast_cancer` and :func:`digits`
(a :class:`Split`), :func:`cifar10` (uint8 arrays); :func:`subset` draws a seeded subset and
:func:`stratified_subset` one with the classes in proportion.
"""

from __future__ import annotations

import gzip
import math
import os
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

from convexrobust._image_folder import SPLITS, read_image_folder
from convexrobust._tables import class_order, read_table
from convexrobust.errors import DatasetNotFoundError, InvalidInputError, InvalidInputTypeError

#: CIFAR-10 class names; their order is the label order.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")

#: The names :func:`load` knows; anything else is a path.
NAMES = ("breast-cancer", "cifar10", "digits")

_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_LABEL_FIX = ("map them to 0..C-1 first, e.g. classes, y = np.unique(y, return_inverse=True) "
              "over the labels of both splits together")


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


@dataclass(frozen=True)
class DataSplit:
    """One split of a dataset, as :func:`load` returns it.

    Attributes
    ----------
    x:
        Images as float32 (n, C, H, W) in [0, 1], or a table's features as float64 (n, d).
    y:
        int64 class indices, 0..len(classes)-1.
    classes:
        Class names: sample ``i`` is of class ``classes[y[i]]``.
    kind:
        ``"images"`` or ``"tabular"``.
    source:
        The name or path that was loaded.
    split:
        ``"train"`` or ``"test"``.
    mean, scale:
        Tables only (None for images): the *training* split's per-feature mean and standard
        deviation (1 where it is 0); standardise both splits with ``(x - mean) / scale``.
    """

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    kind: Literal["images", "tabular"]
    source: str
    split: Literal["train", "test"]
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None


def load(source: str | os.PathLike, *, split: str = "train", label_column: str | int | None = None,
         test_size: float = 0.2, seed: int = 0, cache_dir: str | os.PathLike | None = None
         ) -> DataSplit:
    """One split (``"train"`` or ``"test"``) of the dataset named or stored at ``source`` (the
    formats are in the module docstring). ``label_column`` picks a table's label column;
    ``test_size`` and ``seed`` draw the stratified test part of a source that has no test
    split of its own (a single table, digits, breast-cancer); ``cache_dir`` holds decoded
    images. A name wins over a folder of that name (pass ``"./digits"`` for the folder).
    Raises :class:`DatasetNotFoundError` for a missing path and
    :class:`InvalidInputError` for an unknown name or a bad file, naming the file and the fix."""
    if split not in SPLITS:
        raise InvalidInputError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidInputTypeError(f"source must be a dataset name ({', '.join(NAMES)}) or a "
                                    f"path, got {type(source).__name__}")
    if isinstance(source, str) and source in NAMES:
        fmt = "name"
    else:
        path = _existing(source)
        if path.is_file() and _idx_name(path.name):
            path = path.parent
        fmt = _detect(path)
    if label_column is not None and fmt != "table":
        raise InvalidInputError(f"label_column applies to CSV/TSV tables; {source} is not one")
    if fmt == "name":
        data = _load_named(source, split, test_size, seed, cache_dir)
    elif fmt == "images":
        images, y, classes = read_image_folder(path, split, classes=None,
                                               limit_per_class=None, colour=None,
                                               cache_dir=cache_dir)
        data = DataSplit(_unit_images(images, str(path)), y, classes, "images", str(path), split)
    elif fmt == "idx":
        data = _load_idx(path, split)
    elif fmt == "npz":
        data = _load_npz(path, split)
    else:
        data = _load_table(path, split, label_column, test_size, seed)
    if len(data.y) == 0:
        raise InvalidInputError(f"{data.source} holds no {split} samples")
    return data


def source_kind(source: str | os.PathLike) -> Literal["images", "tabular"]:
    """Whether the dataset named or stored at ``source`` holds images or a table, found without
    parsing a table (whose label column may not be known yet); a ``.npz`` is read. Raises as
    :func:`load` does for a missing or unrecognised source."""
    if isinstance(source, str) and source in NAMES:
        return "tabular" if source == "breast-cancer" else "images"
    path = _existing(source)
    if path.is_file() and _idx_name(path.name):
        return "images"
    fmt = _detect(path)
    if fmt == "npz":
        return load(path, split="test").kind
    return "tabular" if fmt == "table" else "images"


def breast_cancer(*, test_size: float = 0.2, seed: int = 0) -> Split:
    """Wisconsin breast cancer (569 × 30, binary; the data of Kuelbs et al.'s polynomial
    experiment): stratified 80/20 split, features standardised with training statistics."""
    X, y = load_breast_cancer(return_X_y=True)
    train, test = _held_out(y, test_size, seed, "breast-cancer")
    mean, scale = _stats(X[train])
    return Split((X[train] - mean) / scale, y[train], (X[test] - mean) / scale, y[test], mean,
                 scale, "breast-cancer")


def digits(*, test_size: float = 0.2, seed: int = 0) -> Split:
    """scikit-learn's 8×8 digits (1797 images, 10 classes) as (n, 1, 8, 8) arrays scaled to
    [0, 1] (pixel values / 16), stratified split; ``mean``/``scale`` are 0/1 (no
    standardisation, so ℓ2 radii are in pixel space)."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 1, 8, 8)
    train, test = _held_out(y, test_size, seed, "digits")
    return Split(X[train], y[train], X[test], y[test], np.zeros(1), np.ones(1), "digits")


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


def cifar10(path: str | os.PathLike | None = None, *, split: str = "train",
            limit_per_class: int | None = None, cache_dir: str | os.PathLike | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 (JPEG) images as uint8 (n, 3, 32, 32) and labels 0–9 (order of
    :data:`CIFAR10_CLASSES`), from the zip of ``../shared/data`` or a folder laid out as
    ``train/<class>/*.jpg``, ``test/<class>/*.jpg`` (a torchvision ImageFolder export).

    Decoding takes ~10 s for all 60,000 images; the arrays are cached as ``.npz`` in
    ``cache_dir`` (default ``~/.cache/convexrobust``) keyed by the source's size and mtime.
    """
    if split not in SPLITS:
        raise InvalidInputError(f"split must be 'train' or 'test', got {split!r}")
    candidates = [Path(path)] if path is not None else cifar10_candidates()
    source = next((p for p in candidates if p.exists()), None)
    if source is None:
        tried = ", ".join(str(p) for p in candidates)
        raise DatasetNotFoundError(
            f"CIFAR-10 not found (tried {tried}); pass path= to the zip or an extracted folder "
            "of the same layout, or set CONVEXROBUST_CIFAR10"
        )
    images, labels, _ = read_image_folder(source, split, classes=CIFAR10_CLASSES,
                                     limit_per_class=limit_per_class, colour=True,
                                     cache_dir=cache_dir)
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


def stratified_subset(x: torch.Tensor, y: torch.Tensor, limit: int | None, seed: int = 0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded subset of ``limit`` samples with every class in proportion to its share of
    ``y`` (the quotas ``limit·n_c/n`` rounded down, the remaining samples given to the classes
    with the largest remainders, ties to the lower class), drawn at random within each class
    and returned in data order; all samples when ``limit`` is None or not smaller than
    ``len(y)``. Raises :class:`InvalidInputError` for a ``limit`` below 1."""
    if limit is None or limit >= len(y):
        return x, y
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise InvalidInputError(f"limit must be an integer >= 1, got {limit!r}")
    labels = torch.as_tensor(y).reshape(-1)
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * limit / len(labels)
    quota = exact.floor().long()
    remainder = exact - quota
    # stable sort: equal remainders keep class order, so ties go to the lower class
    order = torch.sort(-remainder, stable=True).indices
    quota[order[:limit - int(quota.sum())]] += 1
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for c, k in zip(classes, quota, strict=True):
        members = torch.nonzero(labels == c).squeeze(1)
        picked.append(members[torch.randperm(len(members), generator=generator)[:int(k)]])
    keep = torch.cat(picked).sort().values
    return x[keep], y[keep]


# --- finding and recognising a source -----------------------------------------------------

def _existing(source: str | os.PathLike) -> Path:
    path = Path(source)
    if path.exists():
        return path
    if isinstance(source, str) and path.name == source and not path.suffix:
        raise InvalidInputError(
            f"unknown dataset {source!r}: the names are {', '.join(NAMES)} (nothing is "
            "downloaded); for your own data pass a path to an image folder, a .npz, a folder "
            f"of IDX files or a CSV/TSV table — no file or folder {source!r} exists here")
    raise DatasetNotFoundError(f"no file or folder at {path}")


def _detect(path: Path) -> str:
    """The format of an existing path: "images", "idx", "npz" or "table" (module docstring)."""
    if path.is_dir():
        if any(_idx_file(path, split, kind) for split in SPLITS for kind in ("images", "labels")):
            return "idx"
        if _table_files(path):
            return "table"
        if any((path / split).is_dir() for split in SPLITS):
            return "images"
        raise DatasetNotFoundError(
            f"{path} holds no dataset: expected train/<class>/<image> and test/<class>/<image> "
            "folders, MNIST's IDX files (train-images-idx3-ubyte[.gz], …), or train.csv and "
            "test.csv")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        return "npz" if names and all(n.endswith(".npy") for n in names) else "images"
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if head and b"\0" not in head:
        return "table"
    raise InvalidInputError(
        f"{path} is not a dataset file convexrobust reads: expected a .npz, a zip of "
        "train/<class>/ and test/<class>/ images, a CSV/TSV table, or a folder of images or IDX "
        "files")


# --- arrays: npz and IDX --------------------------------------------------------------------

def _unit_images(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 or [0, 1]-float images as contiguous float32 in [0, 1]."""
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255)
    if x.dtype.kind != "f":
        raise InvalidInputError(f"images in {where} have dtype {x.dtype}; store them as uint8 "
                                "(0..255) or as floats in [0, 1]")
    if not np.isfinite(x).all():
        raise InvalidInputError(f"images in {where} hold NaN or infinite values")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise InvalidInputError(f"float images in {where} range over [{x.min():g}, {x.max():g}]"
                                "; they must lie in [0, 1] (divide 0..255 values by 255)")
    return np.ascontiguousarray(x, dtype=np.float32)


def _class_count(labels: Mapping[str, np.ndarray], where: str, fix: str) -> int:
    """C, checking that the labels (named for messages) are class indices 0..C-1 together."""
    for name, y in labels.items():
        if y.ndim != 1:
            raise InvalidInputError(f"{name} in {where} has shape {y.shape}; labels must be 1-D,"
                                    " one per sample")
        if y.dtype.kind not in "biuf" or (y.dtype.kind == "f" and not
                                          (np.isfinite(y).all() and (y == np.round(y)).all())):
            raise InvalidInputError(f"{name} in {where} holds {y.dtype} values that are not "
                                    f"whole numbers; labels must be class indices: {fix}")
    values = np.unique(np.concatenate(list(labels.values()))).astype(np.int64)
    if not np.array_equal(values, np.arange(len(values))):
        shown = (", ".join(str(v) for v in values) if len(values) <= 12 else
                 f"{len(values)} values from {values[0]} to {values[-1]}")
        raise InvalidInputError(f"the labels in {where} are {shown}, not class indices "
                                f"0..C-1: {fix}")
    return len(values)


def _idx_name(name: str) -> bool:
    return any(name in (f"{p}-{k}-idx{d}-ubyte", f"{p}-{k}-idx{d}-ubyte.gz")
               for p in _IDX_PREFIX.values() for k, d in (("images", 3), ("labels", 1)))


def _idx_file(folder: Path, split: str, kind: str) -> Path | None:
    stem = f"{_IDX_PREFIX[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    return next((folder / n for n in (stem, stem + ".gz") if (folder / n).is_file()), None)


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file, gzip-compressed or raw: two zero bytes, a type byte (0x08 uint8, 0x09 int8,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, each
    dimension as a big-endian uint32, then the data, big-endian, in row-major order."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise InvalidInputError(f"{path} is a damaged gzip file ({err}); replace it with an "
                                    "intact copy") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise InvalidInputError(f"{path} is not an IDX file: it starts {raw[:4].hex()}, not "
                                "0000 <type 08-0e> <number of dimensions>")
    start = 4 + 4 * raw[3]
    if len(raw) < start:
        raise InvalidInputError(f"{path} is truncated: its header needs {start} bytes, the "
                                f"file holds {len(raw)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", raw[3], 4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    size = math.prod(shape) * dtype.itemsize
    if len(raw) - start != size:
        state = "truncated" if len(raw) - start < size else "longer than its header says"
        raise InvalidInputError(f"{path} is {state}: the header gives {dtype.name} data of "
                                f"shape {shape} ({size} bytes), the file holds "
                                f"{len(raw) - start}; replace it with an intact copy")
    return np.frombuffer(raw, dtype, offset=start).reshape(shape).astype(dtype.newbyteorder("="))


def _load_idx(folder: Path, split: str) -> DataSplit:
    found = {s: (_idx_file(folder, s, "images"), _idx_file(folder, s, "labels")) for s in SPLITS}
    images_path, labels_path = found[split]
    if images_path is None or labels_path is None:
        p = _IDX_PREFIX[split]
        raise DatasetNotFoundError(f"{folder} lacks the {split} IDX files {p}-images-idx3-ubyte"
                                   f"[.gz] and {p}-labels-idx1-ubyte[.gz]")
    x, y = _read_idx(images_path), _read_idx(labels_path)
    if x.ndim != 3:
        raise InvalidInputError(f"{images_path} holds an array of shape {x.shape}; IDX images "
                                "are (n, rows, columns)")
    if len(x) != len(y):
        raise InvalidInputError(f"{images_path.name} holds {len(x)} images but "
                                f"{labels_path.name} holds {len(y)} labels (in {folder}); "
                                "both files must come from the same split")
    labels = {labels_path.name: y}
    other = found[SPLITS[1 - SPLITS.index(split)]][1]
    if other is not None:
        labels[other.name] = _read_idx(other)
    fix = ("rewrite the label files with 0-based class indices (subtract 1 from 1-based labels,"
           " or map them with np.unique(y, return_inverse=True) over both splits)")
    n_classes = _class_count(labels, str(folder), fix)
    return DataSplit(_unit_images(x[:, None], str(images_path)), y.astype(np.int64),
                     tuple(str(c) for c in range(n_classes)), "images", str(folder), split)


def _load_npz(path: Path, split: str) -> DataSplit:
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files if k in (*keys, "classes")}
            stored = archive.files
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise InvalidInputError(f"cannot read {path} as a .npz ({err})") from None
    except ValueError as err:  # an object array, refused without pickle
        raise InvalidInputError(f"{path} holds an array that needs pickle ({err}); store "
                                "numbers, and class names as a string array") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise InvalidInputError(
            f"{path} lacks {', '.join(missing)} (it holds {', '.join(stored)}); save a dataset "
            "with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
    for s in SPLITS:
        x, y = arrays[f"x_{s}"], arrays[f"y_{s}"]
        if y.ndim == 2 and y.shape[1] == 1:
            arrays[f"y_{s}"] = y = y[:, 0]
        if x.ndim == 0 or y.ndim != 1 or len(x) != len(y):
            raise InvalidInputError(f"x_{s} in {path} has shape {x.shape} but y_{s} has shape "
                                    f"{y.shape}; give one label per sample")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise InvalidInputError(f"samples of x_train are {arrays['x_train'].shape[1:]} but of "
                                f"x_test {arrays['x_test'].shape[1:]} in {path}")
    n_classes = _class_count({"y_train": arrays["y_train"], "y_test": arrays["y_test"]},
                             str(path), _LABEL_FIX + ", and save the indices")
    classes = tuple(str(c) for c in np.ravel(arrays.get("classes", np.arange(n_classes))))
    if len(classes) != n_classes:
        raise InvalidInputError(f"classes in {path} names {len(classes)} classes but the labels "
                                f"have {n_classes}")
    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"].astype(np.int64)
    if x.ndim == 2:
        features = {s: _features(arrays[f"x_{s}"], f"x_{s} in {path}") for s in SPLITS}
        return DataSplit(features[split], y, classes, "tabular", str(path), split,
                         *_stats(features["train"]))
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim == 3:
        x = x[:, None]
    elif x.ndim != 4:
        raise InvalidInputError(f"x_{split} in {path} has shape {x.shape}; expected (n, d) "
                                "features or (n, H, W), (n, C, H, W), (n, H, W, C) images")
    return DataSplit(_unit_images(x, f"x_{split} in {path}"), y, classes, "images", str(path),
                     split)


def _features(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise InvalidInputError(f"{where} has dtype {x.dtype}; features must be numbers")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise InvalidInputError(f"{where} holds NaN or infinite values; fill or drop them")
    return x


def _stats(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (1 where it is 0) of training features."""
    scale = x_train.std(axis=0)
    return x_train.mean(axis=0), np.where(scale > 0, scale, 1.0)


def _held_out(y: np.ndarray, test_size: float, seed: int, where: str
              ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified, seeded train/test split of samples labelled ``y``."""
    try:
        train, test = train_test_split(np.arange(len(y)), test_size=test_size,
                                       random_state=seed, stratify=y)
    except ValueError as err:
        raise InvalidInputError(f"cannot hold out a stratified test split of {where} "
                                f"(test_size={test_size}): {err}") from None
    return train, test


# --- tables: CSV and TSV --------------------------------------------------------------------

def _table_files(folder: Path) -> dict[str, Path]:
    """``train.csv``/``test.csv`` (or ``.tsv``) of a folder, by split."""
    return {s: folder / f"{s}{ext}" for s in SPLITS for ext in (".csv", ".tsv")
            if (folder / f"{s}{ext}").is_file()}


def _load_table(path: Path, split: str, label_column: str | int | None, test_size: float,
                seed: int) -> DataSplit:
    files = _table_files(path) if path.is_dir() else {"train": path}
    if "train" not in files:
        raise DatasetNotFoundError(f"{path} has test.csv but no train.csv (or .tsv)")
    tables = {s: read_table(p, label_column) for s, p in files.items()}
    if "test" in tables and tables["test"][2] != tables["train"][2]:
        raise InvalidInputError(f"{files['train']} has {tables['train'][2]} columns but "
                                f"{files['test']} {tables['test'][2]}")
    classes = class_order(c for _, labels, _ in tables.values() for c in labels)
    index = {c: i for i, c in enumerate(classes)}
    codes = {s: np.array([index[c] for c in labels], dtype=np.int64)
             for s, (_, labels, _) in tables.items()}
    if "test" in tables:
        x_train, x, y = tables["train"][0], tables[split][0], codes[split]
    else:
        x_all, y_all = tables["train"][0], codes["train"]
        train, test = _held_out(y_all, test_size, seed, str(path))
        rows = {"train": train, "test": test}
        x_train, x, y = x_all[rows["train"]], x_all[rows[split]], y_all[rows[split]]
    return DataSplit(x, y, tuple(classes), "tabular", str(path), split, *_stats(x_train))


# --- named datasets -------------------------------------------------------------------------

def _load_named(name: str, split: str, test_size: float, seed: int,
                cache_dir: str | os.PathLike | None) -> DataSplit:
    if name == "cifar10":
        x, y = cifar10(split=split, cache_dir=cache_dir)
        return DataSplit(_unit_images(x, name), y, CIFAR10_CLASSES, "images", name, split)
    if name == "digits":
        d = digits(test_size=test_size, seed=seed)
        x, y = (d.X_train, d.y_train) if split == "train" else (d.X_test, d.y_test)
        return DataSplit(x.astype(np.float32), y.astype(np.int64),
                         tuple(str(c) for c in range(10)), "images", name, split)
    bunch = load_breast_cancer()
    train, test = _held_out(bunch.target, test_size, seed, name)
    rows = {"train": train, "test": test}
    return DataSplit(bunch.data[rows[split]], bunch.target[rows[split]].astype(np.int64),
                     tuple(str(c) for c in bunch.target_names), "tabular", name, split,
                     *_stats(bunch.data[rows["train"]]))
