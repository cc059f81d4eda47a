"""Datasets that ship with scikit-learn (no download), split and standardised the way the
experiments use them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split


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
