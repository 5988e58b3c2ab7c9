"""Feature-matrix helpers shared by the loaders of :mod:`set_cy.datasets`.

Private helpers that check the requested floating dtype, turn whatever a file held (a dense or
``scipy.sparse`` matrix, a vector) into a numeric 2-D array, convert it to one C-contiguous float
copy while rejecting NaN and infinite values, and z-score a train/test pair in place with the
training statistics, block by block so that no full-size float64 temporary is made.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__: list = []  # private helpers only; the public names live in set_cy.datasets


# rows are processed in blocks of about this many elements (16 MiB of float64)
_CHUNK_ELEMS = 1 << 21


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt



def _as_2d(X: Any, what: str) -> np.ndarray:
    if hasattr(X, "toarray") and not isinstance(X, np.ndarray):  # scipy.sparse matrix
        X = X.toarray()
    X = np.asarray(X)
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    if X.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D feature matrix, got shape {X.shape}")
    if X.dtype.kind not in "fiub":
        raise ValueError(f"{what}: features must be numeric, got dtype {X.dtype}")
    return X


def _to_float(X: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=dtype)
    if X.size and not np.all(np.isfinite(X)):
        raise ValueError(f"{what}: features contain NaN or infinite values")
    return X


def _row_chunk(n_cols: int) -> int:
    return max(1, _CHUNK_ELEMS // max(1, n_cols))


def _standardize_inplace(X_train: np.ndarray, X_test: np.ndarray) -> None:
    """Z-score both matrices in place with the statistics of ``X_train``.

    Statistics are accumulated in float64 over blocks of rows (two passes, no full-size
    temporaries). Features that are constant in the training set are centred and divided by 1.
    """
    n, p = X_train.shape
    if n == 0:
        return
    step = _row_chunk(p)
    total = np.zeros(p, dtype=np.float64)
    lo = np.full(p, np.inf)
    hi = np.full(p, -np.inf)
    for a in range(0, n, step):
        blk = X_train[a : a + step]
        total += blk.sum(axis=0, dtype=np.float64)
        np.minimum(lo, blk.min(axis=0), out=lo)
        np.maximum(hi, blk.max(axis=0), out=hi)
    mean = total / n
    ssq = np.zeros(p, dtype=np.float64)
    for a in range(0, n, step):
        d = X_train[a : a + step].astype(np.float64)
        d -= mean
        ssq += np.einsum("ij,ij->j", d, d)
    std = np.sqrt(ssq / n)
    std[(hi == lo) | ~(std > 0)] = 1.0
    mean_c = mean.astype(X_train.dtype)
    inv_c = (1.0 / std).astype(X_train.dtype)
    for X in (X_train, X_test):
        for a in range(0, X.shape[0], step):
            blk = X[a : a + step]
            blk -= mean_c
            blk *= inv_c
