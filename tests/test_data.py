"""Datasets load from local copies only, with clear errors when absent or bad: the named sets,
and cr.data.load over tiny image folders, zips, npz, IDX and CSV/TSV files built here."""

from __future__ import annotations

import gzip
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from convexrobust.data import (
    CIFAR10_CLASSES,
    breast_cancer,
    cifar10,
    digits,
    load,
    source_kind,
    stratified_subset,
)
from convexrobust.errors import DatasetNotFoundError, InvalidInputError

SHARED_ZIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.zip"


def test_breast_cancer_is_standardised_on_training_data():
    split = breast_cancer()
    assert split.X_train.shape == (455, 30) and split.X_test.shape == (114, 30)
    assert np.allclose(split.X_train.mean(axis=0), 0, atol=1e-12)
    assert np.allclose(split.X_train.std(axis=0), 1)
    assert not np.allclose(split.X_test.mean(axis=0), 0, atol=1e-3)  # test stats not used


def test_digits_in_unit_range():
    split = digits()
    assert split.X_train.shape[1:] == (1, 8, 8)
    assert split.X_train.min() >= 0 and split.X_train.max() <= 1
    assert set(np.unique(split.y_test)) == set(range(10))


def test_missing_cifar_names_the_paths(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="CIFAR-10 not found.*nope"):
        cifar10(tmp_path / "nope.zip")
    with pytest.raises(InvalidInputError, match="split"):
        cifar10(tmp_path, split="val")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(InvalidInputError, match="junk.zip is neither a folder nor a zip"):
        cifar10(tmp_path / "junk.zip", cache_dir=tmp_path)


def test_cifar_folder_missing_a_class_or_selecting_nothing_is_not_found(tmp_path):
    from PIL import Image

    for cls in CIFAR10_CLASSES[:2]:  # two of the ten class folders
        (tmp_path / "c" / "test" / cls).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "c" / "test" / cls / "0.png")
    with pytest.raises(DatasetNotFoundError, match="bird, cat, deer"):
        cifar10(tmp_path / "c", split="test", cache_dir=tmp_path / "cache")
    for cls in CIFAR10_CLASSES[2:]:
        (tmp_path / "c" / "test" / cls).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "c" / "test" / cls / "0.png")
    images, labels = cifar10(tmp_path / "c", split="test", cache_dir=tmp_path / "cache")
    assert images.shape == (10, 3, 32, 32) and np.array_equal(labels, np.arange(10))
    with pytest.raises(DatasetNotFoundError, match="no test images selected"):
        cifar10(tmp_path / "c", split="test", limit_per_class=0, cache_dir=tmp_path / "cache")


@pytest.mark.skipif(not SHARED_ZIP.exists(), reason=f"CIFAR-10 zip not at {SHARED_ZIP}")
def test_cifar_zip_and_folder_agree(tmp_path):
    images, labels = cifar10(SHARED_ZIP, split="test", limit_per_class=3, cache_dir=tmp_path)
    assert images.shape == (30, 3, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(np.bincount(labels), np.full(10, 3))
    cached, _ = cifar10(SHARED_ZIP, split="test", limit_per_class=3, cache_dir=tmp_path)
    assert np.array_equal(cached, images)
    # an extracted folder of the same layout gives the same arrays
    with zipfile.ZipFile(SHARED_ZIP) as archive:
        for cls in CIFAR10_CLASSES:
            names = sorted(n for n in archive.namelist()
                           if n.startswith(f"test/{cls}/") and n.endswith(".jpg"))[:3]
            for name in names:
                archive.extract(name, tmp_path / "folder")
    folder, folder_labels = cifar10(tmp_path / "folder", split="test", cache_dir=tmp_path / "c")
    assert np.array_equal(folder, images) and np.array_equal(folder_labels, labels)


# --- cr.data.load: every format, built tiny in tmp_path --------------------------------------

def _write_idx(path: Path, array: np.ndarray, *, gz: bool) -> None:
    """An IDX file written by hand: 0, 0, type code, ndim, big-endian dims, big-endian data."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    raw = (bytes([0, 0, code[array.dtype], array.ndim])
           + np.asarray(array.shape, dtype=">u4").tobytes()
           + array.astype(array.dtype.newbyteorder(">")).tobytes())
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def _mnist_like(folder: Path, *, n_train: int = 12, n_test: int = 6, gz_train: bool = False,
                gz_test: bool = True, labels: tuple[np.ndarray, np.ndarray] | None = None
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    made = {}
    for split, prefix, n, gz in (("train", "train", n_train, gz_train),
                                 ("test", "t10k", n_test, gz_test)):
        x = rng.integers(0, 256, size=(n, 5, 4), dtype=np.uint8)
        y = (np.arange(n) % 3).astype(np.uint8) if labels is None else labels[split == "test"]
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", x, gz=gz)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", y, gz=gz)
        made[split] = (x, y)
    return made


def test_load_idx_raw_and_gz(tmp_path):
    made = _mnist_like(tmp_path / "mnist")
    for split in ("train", "test"):
        data = load(tmp_path / "mnist", split=split)
        x, y = made[split]
        assert data.kind == "images" and data.split == split and data.mean is None
        assert data.x.dtype == np.float32 and data.x.shape == (len(y), 1, 5, 4)
        assert data.y.dtype == np.int64 and np.array_equal(data.y, y)
        assert np.allclose(data.x[:, 0] * 255, x) and data.x.min() >= 0 and data.x.max() <= 1
        assert data.classes == ("0", "1", "2")
    # a path to one of the files means its folder
    one = load(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", split="test")
    assert np.array_equal(one.x, load(tmp_path / "mnist", split="test").x)


def test_load_idx_bad_files(tmp_path):
    _mnist_like(tmp_path / "a", gz_train=False)
    raw = tmp_path / "a" / "train-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:-7])
    with pytest.raises(InvalidInputError,
                       match=r"train-images-idx3-ubyte is truncated.*\(12, 5, 4\)"):
        load(tmp_path / "a")
    _mnist_like(tmp_path / "b", gz_test=True)
    gz_file = tmp_path / "b" / "t10k-images-idx3-ubyte.gz"
    gz_file.write_bytes(gz_file.read_bytes()[:-10])
    with pytest.raises(InvalidInputError, match="t10k-images-idx3-ubyte.gz is a damaged gzip"):
        load(tmp_path / "b", split="test")
    gz_file.write_bytes(gzip.compress(b"\0\0\x08\x03" + np.array([6, 5, 4], ">u4").tobytes()
                                      + bytes(10)))
    with pytest.raises(InvalidInputError, match="gz is truncated"):
        load(tmp_path / "b", split="test")
    (tmp_path / "b" / "train-labels-idx1-ubyte").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(InvalidInputError, match="train-labels-idx1-ubyte is not an IDX file"):
        load(tmp_path / "b")
    _mnist_like(tmp_path / "c", n_train=12)
    _write_idx(tmp_path / "c" / "train-labels-idx1-ubyte", np.zeros(11, np.uint8), gz=False)
    with pytest.raises(InvalidInputError, match="holds 12 images but .* holds 11 labels"):
        load(tmp_path / "c")
    one_based = (np.arange(1, 13) % 3 + 1).astype(np.uint8), np.full(6, 2, np.uint8)
    _mnist_like(tmp_path / "d", labels=one_based)
    with pytest.raises(InvalidInputError, match=r"are 1, 2, 3, not class indices 0\.\.C-1.*"
                                                r"subtract 1"):
        load(tmp_path / "d")
    (tmp_path / "e").mkdir()
    _write_idx(tmp_path / "e" / "train-images-idx3-ubyte", np.zeros((2, 3, 3), np.uint8),
               gz=False)
    with pytest.raises(DatasetNotFoundError, match="lacks the train IDX files"):
        load(tmp_path / "e")


def _save_npz(path: Path, x_train, y_train, x_test, y_test, **extra) -> Path:
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, **extra)
    return path


def test_load_npz_layouts_and_dtypes(tmp_path):
    rng = np.random.default_rng(1)
    nchw = rng.integers(0, 256, size=(6, 3, 4, 5), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    for name, x, expect in (
            ("nchw_uint8", nchw, nchw / 255.0),
            ("nhwc_float", nchw.transpose(0, 2, 3, 1) / 255.0, nchw / 255.0),
            ("nhwc_gray", nchw[:, :1].transpose(0, 2, 3, 1), nchw[:, :1] / 255.0),
            ("hw_gray", nchw[:, 0].astype(np.float32) / 255, nchw[:, :1] / 255.0)):
        path = _save_npz(tmp_path / f"{name}.npz", x, y, x[:3], y[:3])
        train, test = load(path), load(path, split="test")
        assert train.x.dtype == np.float32 and train.x.flags.c_contiguous, name
        assert np.allclose(train.x, expect, atol=1e-6) and np.allclose(test.x, expect[:3])
        assert train.kind == "images" and train.classes == ("0", "1", "2")
        assert np.array_equal(test.y, y[:3]) and test.y.dtype == np.int64
    named = _save_npz(tmp_path / "named.npz", nchw, y, nchw, y,
                      classes=np.array(["cat", "dog", "emu"]))
    assert load(named).classes == ("cat", "dog", "emu")
    table = _save_npz(tmp_path / "table.npz", rng.normal(size=(6, 4)), y, rng.normal(size=(3, 4)),
                      y[:3])
    train, test = load(table), load(table, split="test")
    assert train.kind == test.kind == "tabular" and test.x.dtype == np.float64
    assert np.allclose(test.mean, train.x.mean(axis=0)) and np.allclose(test.scale,
                                                                        train.x.std(axis=0))


def test_load_npz_bad_files(tmp_path):
    x, y = np.zeros((4, 1, 2, 2), np.uint8), np.array([0, 1, 0, 1])
    np.savez(tmp_path / "keys.npz", X=x, y=y)
    with pytest.raises(InvalidInputError, match=r"keys.npz lacks x_train, y_train, x_test, "
                                                r"y_test \(it holds X, y\)"):
        load(tmp_path / "keys.npz")
    with pytest.raises(InvalidInputError, match=r"x_train .* has shape \(4, 1, 2, 2\) but "
                                                r"y_train has shape \(3,\)"):
        load(_save_npz(tmp_path / "count.npz", x, y[:3], x, y))
    with pytest.raises(InvalidInputError, match=r"y_train has shape \(\)"):  # not a vector
        load(_save_npz(tmp_path / "scalar.npz", x, np.int64(1), x, y))
    with pytest.raises(InvalidInputError, match=r"are 1, 2, not class indices 0\.\.C-1.*"
                                                r"np\.unique\(y, return_inverse=True\)"):
        load(_save_npz(tmp_path / "labels.npz", x, y + 1, x, y + 1))
    with pytest.raises(InvalidInputError, match=r"range over \[0, 255\].*divide"):
        wide = np.arange(16.0).reshape(4, 1, 2, 2) * 17
        load(_save_npz(tmp_path / "range.npz", wide, y, x, y))
    with pytest.raises(InvalidInputError, match="not whole numbers"):
        load(_save_npz(tmp_path / "frac.npz", x, y + 0.5, x, y))
    with pytest.raises(InvalidInputError, match="label_column applies to CSV/TSV"):
        load(_save_npz(tmp_path / "ok.npz", x, y, x, y), label_column=0)


def _image(path: Path, mode: str, value: int, size: tuple[int, int] = (6, 4)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, colour).save(path)


def test_load_image_folder_modes_class_order_and_zip(tmp_path):
    root = tmp_path / "gray"
    for split, count in (("train", 3), ("test", 1)):
        for cls, value in (("zebra", 200), ("ant", 10), ("moth", 90)):
            for i in range(count):
                _image(root / split / cls / f"{i}.png", "L", value)
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    data = load(root, cache_dir=tmp_path / "cache")
    assert data.classes == ("ant", "moth", "zebra") and data.kind == "images"
    assert data.x.shape == (9, 1, 4, 6) and data.x.dtype == np.float32
    assert np.array_equal(data.y, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert np.allclose(data.x[data.y == 2], 200 / 255) and data.x.max() <= 1
    # one colour JPEG in the test split makes the whole dataset RGB (gray repeated)
    _image(root / "test" / "moth" / "c.jpg", "RGB", 128)
    colour = load(root, cache_dir=tmp_path / "cache")
    assert colour.x.shape == (9, 3, 4, 6)
    assert np.array_equal(colour.x[:, 0], colour.x[:, 1]) and np.allclose(colour.x, data.x[:, [0]])
    test = load(root, split="test", cache_dir=tmp_path / "cache")
    assert test.x.shape == (4, 3, 4, 6) and np.array_equal(test.y, [0, 1, 1, 2])
    jpeg = test.x[2]  # the colour JPEG: lossy, so close to (128, 127, 7)
    assert np.allclose(jpeg.mean(axis=(1, 2)) * 255, (128, 127, 7), atol=4)
    # a zip of the folder, at its root or inside one top folder, gives the same arrays
    for prefix in ("", "gray/"):
        archive = tmp_path / f"images{len(prefix)}.zip"
        with zipfile.ZipFile(archive, "w") as z:
            for file in sorted(root.rglob("*")):
                z.write(file, prefix + file.relative_to(root).as_posix())
        zipped = load(archive, split="test", cache_dir=tmp_path / "cache")
        assert np.array_equal(zipped.x, test.x) and zipped.classes == test.classes


def test_image_cache_is_keyed_by_content(tmp_path):
    root, cache = tmp_path / "imgs", tmp_path / "cache"
    for cls in ("a", "b"):
        _image(root / "train" / cls / "0.png", "L", 50)
    first = load(root, cache_dir=cache)
    files = sorted(cache.glob("*.npz"))
    assert len(files) == 1 and not list(cache.glob(".*.tmp"))  # written atomically
    assert np.array_equal(load(root, cache_dir=cache).x, first.x)  # a hit: no new file
    assert sorted(cache.glob("*.npz")) == files
    _image(root / "train" / "b" / "0.png", "L", 250)  # rewritten: a new key, fresh pixels
    os.utime(root / "train" / "b" / "0.png", ns=(1, 1))
    again = load(root, cache_dir=cache)
    assert np.allclose(again.x[1], 250 / 255) and len(list(cache.glob("*.npz"))) == 2
    files[0].write_bytes(b"garbage")  # an unreadable cache is decoded again
    assert np.array_equal(load(root, cache_dir=cache).x, again.x)


def test_load_image_folder_bad_files(tmp_path):
    root = tmp_path / "imgs"
    _image(root / "train" / "a" / "0.png", "L", 1)
    (root / "train" / "b").mkdir()
    with pytest.raises(InvalidInputError, match="class folder train/b .* holds no images"):
        load(root, cache_dir=tmp_path)
    _image(root / "train" / "b" / "0.png", "L", 1, size=(5, 5))
    with pytest.raises(InvalidInputError, match="differ in size: .*6×4.*5×5"):
        load(root, cache_dir=tmp_path)
    (root / "train" / "b" / "0.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(InvalidInputError, match=r"cannot read the image .*b/0\.png"):
        load(root, cache_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="holds no test/<class>/<image>"):
        load(root, split="test", cache_dir=tmp_path)


def _csv(path: Path, rows: list[list[object]], delimiter: str = ",") -> Path:
    path.write_text("\n".join(delimiter.join(str(c) for c in row) for row in rows) + "\n")
    return path


def test_load_table_header_label_column_and_stratified_split(tmp_path):
    rng = np.random.default_rng(2)
    features = rng.normal(size=(40, 3)).round(6)
    labels = ["setosa"] * 30 + ["virginica"] * 10
    body = [[*f, lab] for f, lab in zip(features, labels, strict=True)]
    with_header = _csv(tmp_path / "iris.csv", [["a", "b", "c", "species"], *body])
    train, test = load(with_header), load(with_header, split="test")
    assert train.kind == "tabular" and train.classes == ("setosa", "virginica")
    assert train.x.shape == (32, 3) and test.x.shape == (8, 3) and train.x.dtype == np.float64
    assert np.bincount(test.y).tolist() == [6, 2]  # stratified: 30/10 → 6/2 held out
    rows = {tuple(r) for r in np.concatenate([train.x, test.x])}
    assert rows == {tuple(r) for r in features}  # disjoint and complete
    assert np.allclose(test.mean, train.x.mean(axis=0)) and np.allclose(test.scale,
                                                                        train.x.std(axis=0))
    assert np.array_equal(load(with_header, split="test").x, test.x)  # seeded
    assert not np.array_equal(load(with_header, split="test", seed=1).x, test.x)
    # no header, label first (by index), tab-separated; numeric labels in numeric order
    numeric = [[10 if lab == "setosa" else 9, *f] for f, lab in zip(features, labels,
                                                                   strict=True)]
    tsv = _csv(tmp_path / "iris.tsv", numeric, delimiter="\t")
    data = load(tsv, label_column=0, split="test")
    assert data.classes == ("9", "10") and np.bincount(data.y).tolist() == [2, 6]
    assert {tuple(r) for r in data.x} <= {tuple(r) for r in features}
    by_name = load(with_header, label_column="species", split="test")
    assert np.array_equal(by_name.x, test.x) and np.array_equal(by_name.y, test.y)
    assert load(with_header, label_column=-1, test_size=0.5).x.shape == (20, 3)


def test_load_table_folder_with_both_splits(tmp_path):
    _csv(tmp_path / "train.csv", [["x1", "x2", "y"], [1, 2, "b"], [3, 4, "a"], [5, 6, "a"]])
    _csv(tmp_path / "test.csv", [["x1", "x2", "y"], [7, 8, "c"]])
    train, test = load(tmp_path), load(tmp_path, split="test")
    assert train.classes == test.classes == ("a", "b", "c")
    assert np.array_equal(train.y, [1, 0, 0]) and np.array_equal(test.y, [2])
    assert np.array_equal(test.x, [[7.0, 8.0]]) and np.allclose(test.mean, [3.0, 4.0])


def test_load_table_bad_files(tmp_path):
    bad = _csv(tmp_path / "bad.csv", [["height", "colour", "y"], [1.5, "red", 0], [2, "blue", 1]])
    with pytest.raises(InvalidInputError, match=r"column 'colour' of .*bad\.csv is not numeric "
                                                r"\(line 2: 'red'\)"):
        load(bad)
    with pytest.raises(InvalidInputError, match=r"no column 'label' .*height, colour, y"):
        load(bad, label_column="label")
    plain = _csv(tmp_path / "plain.csv", [[1, 2, 0], [3, 4, 1]])
    with pytest.raises(InvalidInputError, match="no column 'y' .*no header row"):
        load(plain, label_column="y")
    with pytest.raises(InvalidInputError, match="label_column=5 is out of range"):
        load(plain, label_column=5)
    ragged = _csv(tmp_path / "ragged.csv", [[1, 2, 0], [3, 1], [4, 5, 1]])
    with pytest.raises(InvalidInputError, match="line 2 of .* has 2 fields"):
        load(ragged)
    nan = _csv(tmp_path / "nan.csv", [["a", "y"], [1, 0], ["nan", 1]])
    with pytest.raises(InvalidInputError, match=r"column 'a' .* non-finite value \(line 3"):
        load(nan)
    single = _csv(tmp_path / "single.csv", [[1, 0], [2, 0], [3, 0], [4, 1]])
    with pytest.raises(InvalidInputError, match="cannot hold out a stratified test split"):
        load(single)
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    with pytest.raises(InvalidInputError, match="blob.bin is not a dataset file"):
        load(tmp_path / "blob.bin")


def test_source_kind_without_reading_a_table(tmp_path):
    """A table's kind is known before its label column is: a text first column is no error."""
    (tmp_path / "t.csv").write_text("kind,a\nyes,1\nno,2\n")
    assert source_kind(tmp_path / "t.csv") == "tabular"
    assert source_kind("breast-cancer") == "tabular" and source_kind("digits") == "images"
    np.savez(tmp_path / "f.npz", x_train=np.zeros((4, 3)), y_train=np.array([0, 1, 0, 1]),
             x_test=np.zeros((2, 3)), y_test=np.array([0, 1]))
    np.savez(tmp_path / "i.npz", x_train=np.zeros((4, 5, 5), np.uint8),
             y_train=np.array([0, 1, 0, 1]), x_test=np.zeros((2, 5, 5), np.uint8),
             y_test=np.array([0, 1]))
    assert source_kind(tmp_path / "f.npz") == "tabular"
    assert source_kind(tmp_path / "i.npz") == "images"
    with pytest.raises(DatasetNotFoundError):
        source_kind(tmp_path / "missing.csv")


def test_load_names_and_missing_sources(tmp_path):
    digits_test = load("digits", split="test")
    assert digits_test.x.dtype == np.float32 and digits_test.x.shape[1:] == (1, 8, 8)
    assert np.allclose(digits_test.x, digits().X_test) and digits_test.classes[-1] == "9"
    bc, standardised = load("breast-cancer"), breast_cancer()
    assert bc.kind == "tabular" and bc.classes == ("malignant", "benign")
    assert np.allclose((bc.x - bc.mean) / bc.scale, standardised.X_train)
    with pytest.raises(InvalidInputError, match="unknown dataset 'mnist': the names are"):
        load("mnist")
    with pytest.raises(DatasetNotFoundError, match="no file or folder at .*nope.csv"):
        load(tmp_path / "nope.csv")
    with pytest.raises(DatasetNotFoundError, match="holds no dataset"):
        load(tmp_path)
    with pytest.raises(InvalidInputError, match="split must be 'train' or 'test'"):
        load("digits", split="val")


@pytest.mark.skipif(not SHARED_ZIP.exists(), reason=f"CIFAR-10 zip not at {SHARED_ZIP}")
def test_load_cifar10_by_name_and_by_path(tmp_path, monkeypatch):
    small = tmp_path / "cifar-small.zip"
    with zipfile.ZipFile(SHARED_ZIP) as source, zipfile.ZipFile(small, "w") as target:
        members = sorted(n for n in source.namelist() if n.startswith("test/")
                         and n.endswith(".jpg"))
        for cls in CIFAR10_CLASSES:
            for name in [n for n in members if n.startswith(f"test/{cls}/")][:2]:
                target.writestr(name, source.read(name))
    images, labels = cifar10(SHARED_ZIP, split="test", limit_per_class=2, cache_dir=tmp_path)
    by_path = load(small, split="test", cache_dir=tmp_path)
    assert by_path.x.shape == (20, 3, 32, 32) and by_path.x.dtype == np.float32
    assert np.array_equal(by_path.x, images / np.float32(255)) and np.array_equal(by_path.y,
                                                                                 labels)
    assert by_path.classes == CIFAR10_CLASSES
    monkeypatch.setenv("CONVEXROBUST_CIFAR10", str(small))
    by_name = load("cifar10", split="test", cache_dir=tmp_path)
    assert np.array_equal(by_name.x, by_path.x) and by_name.classes == CIFAR10_CLASSES


def test_stratified_subset_keeps_the_class_shares_and_the_seed():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    x = torch.arange(100.0)[:, None]
    xs, ys = stratified_subset(x, y, 10, seed=3)
    assert torch.bincount(ys).tolist() == [5, 3, 2]  # 10 · (0.5, 0.3, 0.2)
    assert torch.equal(xs[:, 0].long(), xs[:, 0].long().sort().values)  # data order
    assert torch.equal(y[xs[:, 0].long()], ys)  # rows stay paired
    again = stratified_subset(x, y, 10, seed=3)
    assert torch.equal(again[0], xs) and not torch.equal(stratified_subset(x, y, 10, 4)[0], xs)
    # remainders: 7 · (0.5, 0.3, 0.2) = 3.5, 2.1, 1.4 → 3, 2, 1 and one more to class 0
    assert torch.bincount(stratified_subset(x, y, 7)[1]).tolist() == [4, 2, 1]
    assert stratified_subset(x, y, None)[0] is x and stratified_subset(x, y, 100)[0] is x
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InvalidInputError, match="limit"):
            stratified_subset(x, y, bad)
