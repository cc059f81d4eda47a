"""Datasets load from local copies only, with clear errors when absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convexrobust.data import CIFAR10_CLASSES, breast_cancer, cifar10, digits
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


@pytest.mark.skipif(not SHARED_ZIP.exists(), reason=f"CIFAR-10 zip not at {SHARED_ZIP}")
def test_cifar_zip_and_folder_agree(tmp_path):
    images, labels = cifar10(SHARED_ZIP, split="test", limit_per_class=3, cache_dir=tmp_path)
    assert images.shape == (30, 3, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(np.bincount(labels), np.full(10, 3))
    cached, _ = cifar10(SHARED_ZIP, split="test", limit_per_class=3, cache_dir=tmp_path)
    assert np.array_equal(cached, images)
    # an extracted folder of the same layout gives the same arrays
    import zipfile

    with zipfile.ZipFile(SHARED_ZIP) as archive:
        for cls in CIFAR10_CLASSES:
            names = sorted(n for n in archive.namelist()
                           if n.startswith(f"test/{cls}/") and n.endswith(".jpg"))[:3]
            for name in names:
                archive.extract(name, tmp_path / "folder")
    folder, folder_labels = cifar10(tmp_path / "folder", split="test", cache_dir=tmp_path / "c")
    assert np.array_equal(folder, images) and np.array_equal(folder_labels, labels)
