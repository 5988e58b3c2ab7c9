"""Train/test splits for :mod:`set_cy.datasets`.

:func:`stratified_split` makes the seeded, stratified split used for every data set without an
official one (default :data:`DEFAULT_TEST_SIZE` = 1/3 held out). The private ``_finish_split``
and ``_finish_official`` turn raw ``(X, y)`` arrays into a :class:`~set_cy.datasets.Dataset`:
labels are encoded jointly, features converted to the requested dtype, and standardized with the
statistics of the training part only, either after splitting here or on an official split.
"""
from __future__ import annotations

import logging
import numbers
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .arrays import _as_2d, _standardize_inplace, _to_float
from .container import Dataset
from .labels import _encode_labels

__all__ = ["stratified_split", "DEFAULT_TEST_SIZE"]

logger = logging.getLogger("set_cy")


#: Fraction of the samples held out for testing when a data set has no official split
#: (the reference code trains on 2/3 of the samples).
DEFAULT_TEST_SIZE = 1.0 / 3.0


def _check_test_size(test_size: Any) -> float:
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise ValueError(f"test_size must be a float strictly between 0 and 1, got {test_size!r}")
    ts = float(test_size)
    if not (0.0 < ts < 1.0):  # also rejects nan
        raise ValueError(f"test_size must be a float strictly between 0 and 1, got {test_size!r}")
    return ts


def stratified_split(
    y: Sequence[Any], test_size: float = DEFAULT_TEST_SIZE, seed: Optional[int] = 0
) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train/test split of sample indices.

    Parameters
    ----------
    y : array_like
        Labels of the samples (any values that :func:`numpy.unique` can sort).
    test_size : float, default 1/3
        Fraction of the samples to put in the test part, strictly between 0 and 1.
    seed : int or None, default 0
        Seed of the random permutation; the same seed always gives the same split.

    Returns
    -------
    train_idx, test_idx : numpy.ndarray
        ``int64`` index arrays (each in random order) that together partition ``range(len(y))``.

    Notes
    -----
    Each class ``k`` with ``n_k`` samples gets ``test_size * n_k`` test samples, rounded with
    the largest-remainder method so that the total is ``round(test_size * n)``; the count is then
    clipped so that every class keeps at least one training sample and every class with at least
    two samples has at least one test sample (so the total may differ slightly from the target).
    """
    ts = _check_test_size(test_size)
    y = np.asarray(y).reshape(-1)
    n = y.shape[0]
    if n == 0:
        raise ValueError("cannot split an empty data set")
    _, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    ideal = counts * ts
    n_test = np.floor(ideal).astype(np.int64)
    remaining = int(round(ts * n)) - int(n_test.sum())
    if remaining > 0:
        order = np.argsort(-(ideal - n_test), kind="stable")
        n_test[order[:remaining]] += 1
    n_test = np.where(counts >= 2, np.clip(n_test, 1, counts - 1), 0)
    rng = np.random.default_rng(seed)
    by_class = np.argsort(inv, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(counts)))
    train_parts, test_parts = [], []
    for k in range(counts.shape[0]):
        members = rng.permutation(by_class[bounds[k] : bounds[k + 1]])
        test_parts.append(members[: n_test[k]])
        train_parts.append(members[n_test[k] :])
    train_idx = rng.permutation(np.concatenate(train_parts)).astype(np.int64)
    test_idx = rng.permutation(np.concatenate(test_parts)).astype(np.int64)
    return train_idx, test_idx


def _finish_split(
    X: np.ndarray,
    y: np.ndarray,
    *,
    name: str,
    source: Optional[str],
    dtype: np.dtype,
    test_size: Optional[float],
    seed: Optional[int],
    standardize: bool,
) -> Dataset:
    """Encode labels, split (stratified), convert and optionally standardize one (X, y) pair."""
    X = _as_2d(X, name)
    y = np.asarray(y).reshape(-1)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: X has {X.shape[0]} rows but there are {y.shape[0]} labels")
    (y_enc,), n_classes = _encode_labels(y)
    ts = DEFAULT_TEST_SIZE if test_size is None else test_size
    train_idx, test_idx = stratified_split(y_enc, ts, seed)
    X = _to_float(X, dtype, name)  # one C-contiguous float copy; the takes below copy the rows
    X_train, X_test = X[train_idx], X[test_idx]
    del X
    if standardize:
        _standardize_inplace(X_train, X_test)
    return Dataset(X_train, y_enc[train_idx], X_test, y_enc[test_idx], name, n_classes, source)


def _finish_official(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    name: str,
    source: Optional[str],
    dtype: np.dtype,
    standardize: bool,
    scale: Optional[float] = None,
) -> Dataset:
    """Encode labels jointly, convert, scale and optionally standardize an official split."""
    X_train = _as_2d(X_train, f"{name} (train)")
    X_test = _as_2d(X_test, f"{name} (test)")
    if X_train.shape[1] != X_test.shape[1]:
        raise ValueError(f"{name}: train has {X_train.shape[1]} features but test has {X_test.shape[1]}")
    for part, X, y in (("train", X_train, y_train), ("test", X_test, y_test)):
        if X.shape[0] != np.asarray(y).size:
            raise ValueError(f"{name} ({part}): X has {X.shape[0]} rows but there are {np.asarray(y).size} labels")
    (ytr, yte), n_classes = _encode_labels(y_train, y_test)
    missing = np.setdiff1d(np.unique(yte), np.unique(ytr))
    if missing.size:
        logger.warning("%s: classes %s occur in the test set only", name, missing.tolist())
    X_train = _to_float(X_train, dtype, name)
    X_test = _to_float(X_test, dtype, name)
    if scale is not None:
        X_train *= dtype.type(scale)
        X_test *= dtype.type(scale)
    if standardize:
        _standardize_inplace(X_train, X_test)
    return Dataset(X_train, ytr, X_test, yte, name, n_classes, source)
