"""Image folders: the ImageFolder layout (``train/<class>/<image>``, ``test/<class>/<image>``)
in a folder or a zip, decoded with Pillow to uint8 arrays and cached.

Every image must have one size. Grayscale images (modes 1, L, LA) give one channel; when the
colour is not fixed by the caller and any image of either split is in colour, the whole dataset
is RGB and grayscale images are repeated into three equal channels (lossless; alpha is dropped).
16-bit and float images are refused. Decoded arrays are cached as ``.npz``, keyed by the
source's path, size and modification time (for a folder: of every image in it) and written
atomically, so a cache is never half-written.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from convexrobust._io import write_atomic
from convexrobust.errors import DatasetNotFoundError, InvalidInputError

__all__ = ["SPLITS", "read_image_folder"]

logger = logging.getLogger(__name__)

#: The two splits, as folder names.
SPLITS = ("train", "test")
_GRAY_MODES = ("1", "L", "LA", "La")


def _image_tree(source: Path, archive: zipfile.ZipFile | None) -> dict[str, dict[str, list[str]]]:
    """``{split: {class: sorted image paths (folder) or member names (zip)}}`` of an ImageFolder
    layout. A class folder without images maps to []; hidden files, ``__MACOSX`` and files
    whose extension Pillow cannot open are skipped."""
    from PIL import Image

    Image.init()
    readable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    entries: list[tuple[Sequence[str], str]] = []  # ((split, class, file name or ""), member)
    if archive is None:
        for split in SPLITS:
            if (source / split).is_dir():
                for folder in (d for d in (source / split).iterdir() if d.is_dir()):
                    entries.append(((split, folder.name, ""), ""))
                    entries += [((split, folder.name, f.name), str(f)) for f in folder.iterdir()
                                if f.is_file()]
    else:
        for name in archive.namelist():
            parts = name.split("/")  # a folder's own entry ends in "/", so its file name is ""
            for depth in (0, 1):  # train/<class>/<file> at the root or inside one folder
                if len(parts) == depth + 3 and parts[depth] in SPLITS and "__MACOSX" not in parts:
                    entries.append((parts[depth:], name))
    tree: dict[str, dict[str, list[str]]] = {}
    for (split, cls, name), member in entries:
        if cls.startswith(".") or name.startswith("."):
            continue
        files = tree.setdefault(split, {}).setdefault(cls, [])
        if Path(name).suffix.lower() in readable:
            files.append(member)
    for classes in tree.values():
        for files in classes.values():
            files.sort()
    return tree


def _open_image(file: str | io.BytesIO, name: str, *, decode: bool
                ) -> tuple[bool, tuple[int, int], np.ndarray | None]:
    """(grayscale?, (width, height), uint8 pixels (H, W) or (H, W, 3) if ``decode``)."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            mode, size, pixels = image.mode, image.size, None
            if decode and not mode.startswith(("I", "F")):
                pixels = np.asarray(image.convert("L" if mode in _GRAY_MODES else "RGB"))
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise InvalidInputError(f"cannot read the image {name}: {err}") from None
    if mode.startswith(("I", "F")):
        raise InvalidInputError(f"{name} is a 16-bit or floating-point image (mode {mode}); "
                                "save the images as 8-bit grayscale or colour")
    return mode in _GRAY_MODES, size, pixels


def read_image_folder(source: Path, split: str, *, classes: Sequence[str] | None,
                      limit_per_class: int | None, colour: bool | None,
                      cache_dir: str | os.PathLike | None
                      ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """uint8 (n, C, H, W) images, int64 labels and class names of one split of an image folder
    or zip, from the cache in ``cache_dir`` (default ``~/.cache/convexrobust``) when it holds
    them. ``classes`` fixes the classes read (default: the sorted class folders of both
    splits); ``colour`` forces RGB (True) or decides as the module docstring says (None)."""
    settings = f"{split}|{classes}|{limit_per_class}|{colour}"
    if source.is_file():  # a zip: its size and mtime identify it; it is listed on a miss only
        stat = source.stat()

        def decode_zip() -> dict[str, np.ndarray]:
            if not zipfile.is_zipfile(source):
                raise InvalidInputError(f"{source} is neither a folder nor a zip of images")
            with zipfile.ZipFile(source) as archive:
                return _decode(source, archive, _image_tree(source, archive), split, classes,
                               limit_per_class, colour)

        stored = _cached(cache_dir, f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|"
                                    f"{settings}", decode_zip)
    else:  # a folder: its class folders and every image's size and mtime identify it
        tree = _image_tree(source, None)
        stamp = hashlib.sha256()
        for name, folders in sorted(tree.items()):
            for cls, files in sorted(folders.items()):
                stamp.update(f"{name}/{cls}\n".encode())
                for member in files:
                    stat = os.stat(member)
                    stamp.update(f"{member}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        stored = _cached(cache_dir, f"{source.resolve()}|{stamp.hexdigest()}|{settings}",
                         lambda: _decode(source, None, tree, split, classes, limit_per_class,
                                         colour))
    return stored["images"], stored["labels"], tuple(str(c) for c in stored["classes"])


def _decode(source: Path, archive: zipfile.ZipFile | None, tree: dict[str, dict[str, list[str]]],
            split: str, classes: Sequence[str] | None, limit_per_class: int | None,
            colour: bool | None) -> dict[str, np.ndarray]:
    """:func:`read_image_folder`'s arrays (``images``, ``labels``, ``classes``), decoded."""
    if not tree.get(split):
        raise DatasetNotFoundError(f"{source} holds no {split}/<class>/<image> files (the "
                                   "ImageFolder layout: train/<class>/*, test/<class>/*)")
    names = tuple(classes if classes is not None else sorted(set().union(*tree.values())))
    folders = tree[split]
    missing = [cls for cls in names if cls not in folders]
    if classes is not None and missing:
        raise DatasetNotFoundError(f"{source} has no {split}/ folder for the class(es) "
                                   f"{', '.join(missing)}; the dataset needs one per class")
    for cls in names:
        if folders.get(cls) == []:
            raise InvalidInputError(f"the class folder {split}/{cls} of {source} holds no "
                                    "images Pillow reads (.png, .jpg, …); add images or remove "
                                    "the folder")

    def read(member: str) -> str | io.BytesIO:
        return member if archive is None else io.BytesIO(archive.read(member))

    def where(member: str) -> str:
        return member if archive is None else f"{member} in {source}"

    first: dict[tuple[int, int], str] = {}  # the first image of each size

    def same_size(size: tuple[int, int], member: str) -> None:
        first.setdefault(size, member)
        if len(first) > 1:
            (a, name_a), (b, name_b) = list(first.items())[:2]
            raise InvalidInputError(f"the images of {source} differ in size: {where(name_a)} is "
                                    f"{a[0]}×{a[1]}, {where(name_b)} is {b[0]}×{b[1]}; resize "
                                    "them to one size first")

    members = [(label, m) for label, cls in enumerate(names)
               for m in folders.get(cls, [])[:limit_per_class]]
    if not members:
        raise DatasetNotFoundError(f"no {split} images selected from {source} (limit per class "
                                   f"{limit_per_class}); ask for at least one image per class")
    logger.info("decoding %d images of %s (%s split); they are cached", len(members), source,
                split)
    pixels = []
    for _, member in members:
        _, size, array = _open_image(read(member), where(member), decode=True)
        same_size(size, member)
        pixels.append(array)
    rgb = colour
    if rgb is None:  # colour if any image of either split is; the other split's headers tell
        rgb = any(p.ndim == 3 for p in pixels)
        other = tree.get(SPLITS[1 - SPLITS.index(split)], {})
        for cls in names:
            for member in other.get(cls, []):
                gray, size, _ = _open_image(read(member), where(member), decode=False)
                same_size(size, member)
                rgb = rgb or not gray
                if rgb:  # decided: one image per class still checks the size
                    break
    channels = [p[..., None] if p.ndim == 2 else p for p in pixels]
    if rgb:
        channels = [np.repeat(p, 3, axis=2) if p.shape[2] == 1 else p for p in channels]
    return {"images": np.ascontiguousarray(np.stack(channels).transpose(0, 3, 1, 2)),
            "labels": np.asarray([label for label, _ in members], dtype=np.int64),
            "classes": np.asarray(names, dtype=str)}


def _cached(cache_dir: str | os.PathLike | None, key: str,
            compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored under ``key`` in ``cache_dir``, or ``compute()``'s, then stored
    atomically (a cache that cannot be read is recomputed; one that cannot be written is
    skipped with a warning)."""
    folder = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "convexrobust"
    path = folder / f"images-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            logger.warning("the cache %s cannot be read (%s); decoding again", path, err)
    arrays = compute()

    def store(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, **arrays)

    try:
        write_atomic(path, store)
    except OSError as err:
        logger.warning("cannot write the cache %s (%s); the data is not cached", path, err)
    return arrays

