"""The :class:`Dataset` container that every loader of :mod:`set_cy.datasets` returns.

A :class:`Dataset` is a frozen train/test split: two C-contiguous feature matrices of one floating
dtype, two ``int64`` label vectors in ``0 .. n_classes-1``, the data set's name, its number of
classes, where it came from and, for synthetic data, the indices of the informative features. It
validates and normalises its arrays on construction and depends only on NumPy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["Dataset"]


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A train/test split ready for training.

    Parameters
    ----------
    X_train, X_test : numpy.ndarray
        Feature matrices of shape ``(n_train, n_features)`` and ``(n_test, n_features)``;
        C-contiguous, of the same floating dtype.
    y_train, y_test : numpy.ndarray
        ``int64`` label vectors with values in ``0 .. n_classes-1``.
    name : str
        Name of the data set (the canonical name, or the file name for a path).
    n_classes : int
        Number of classes (labels of both parts together).
    source : str or None, optional
        Where the data came from (a file or folder), ``None`` for generated data.
    informative_features : numpy.ndarray or None, optional
        For synthetic data, the sorted indices of the informative features; ``None`` otherwise.

    Notes
    -----
    The container is frozen (its fields cannot be rebound) but the arrays themselves are
    ordinary writeable NumPy arrays. Arrays are validated and made C-contiguous on construction;
    labels of any integer dtype are converted to ``int64``.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str
    n_classes: int
    source: Optional[str] = None
    informative_features: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        X_train = np.ascontiguousarray(self.X_train)
        X_test = np.ascontiguousarray(self.X_test)
        for label, X in (("X_train", X_train), ("X_test", X_test)):
            if X.ndim != 2:
                raise ValueError(f"{label} must be 2-D, got shape {X.shape}")
            if X.dtype.kind != "f":
                raise TypeError(f"{label} must have a floating dtype, got {X.dtype}")
        if X_train.dtype != X_test.dtype:
            raise TypeError(f"X_train and X_test dtypes differ: {X_train.dtype} vs {X_test.dtype}")
        if X_train.shape[1] != X_test.shape[1]:
            raise ValueError(
                f"X_train and X_test have different numbers of features: {X_train.shape[1]} vs {X_test.shape[1]}"
            )
        n_classes = int(self.n_classes)
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {self.n_classes}")
        ys = []
        for label, y, X in (("y_train", self.y_train, X_train), ("y_test", self.y_test, X_test)):
            y = np.asarray(y)
            if y.ndim != 1 or y.shape[0] != X.shape[0]:
                raise ValueError(f"{label} must be 1-D with {X.shape[0]} entries, got shape {y.shape}")
            if y.size and y.dtype.kind not in "iu":
                raise TypeError(f"{label} must hold integers, got dtype {y.dtype}")
            y = np.ascontiguousarray(y, dtype=np.int64)
            if y.size and (y.min() < 0 or y.max() >= n_classes):
                raise ValueError(f"{label} values must lie in 0..{n_classes - 1}, got {y.min()}..{y.max()}")
            ys.append(y)
        object.__setattr__(self, "X_train", X_train)
        object.__setattr__(self, "X_test", X_test)
        object.__setattr__(self, "y_train", ys[0])
        object.__setattr__(self, "y_test", ys[1])
        object.__setattr__(self, "n_classes", n_classes)
        object.__setattr__(self, "name", str(self.name))

    @property
    def n_features(self) -> int:
        """Number of input features (columns of ``X_train``)."""
        return int(self.X_train.shape[1])

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return int(self.X_test.shape[0])

    @property
    def dtype(self) -> np.dtype:
        """Floating dtype of the feature matrices."""
        return self.X_train.dtype

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
            f"n_features={self.n_features}, n_classes={self.n_classes}, dtype={self.dtype})"
        )
