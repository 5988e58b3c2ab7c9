"""The ``synthetic`` data set of :mod:`set_cy.datasets`.

:func:`make_synthetic` generates, in memory and without any file, a microarray-shaped
classification data set (by default 2096 samples, 54675 features, 18 classes): standard normal
noise on every feature plus a class mean on a random subset of informative features, written one
block of rows at a time straight into a stratified train/test split. ``_SYNTHETIC_ALIASES`` lists
the keyword arguments (and their short aliases) that :func:`~set_cy.datasets.load_dataset` passes on.
"""
from __future__ import annotations

import logging
import numbers
import time
from typing import Any, Optional

import numpy as np

from .._validation import check_int
from .arrays import _check_dtype
from .container import Dataset
from .splits import DEFAULT_TEST_SIZE, _check_test_size, stratified_split

__all__ = ["make_synthetic"]

logger = logging.getLogger("set_cy")


_SYNTHETIC_ALIASES = {
    "n_samples": "n_samples",
    "samples": "n_samples",
    "n_features": "n_features",
    "features": "n_features",
    "n_classes": "n_classes",
    "classes": "n_classes",
    "n_informative": "n_informative",
    "informative": "n_informative",
    "class_sep": "class_sep",
}


def make_synthetic(
    n_samples: int = 2096,
    n_features: int = 54675,
    n_classes: int = 18,
    *,
    n_informative: Optional[int] = None,
    class_sep: Optional[float] = None,
    seed: Optional[int] = 0,
    dtype: Any = "float32",
    test_size: float = DEFAULT_TEST_SIZE,
) -> Dataset:
    """Generate a microarray-shaped classification data set in memory.

    The defaults mimic the shape of the large microarray benchmark used with truly sparse
    networks (2096 samples, 54675 features, 18 classes) without needing any file.

    Parameters
    ----------
    n_samples : int, default 2096
        Number of samples (at least ``2 * n_classes``, so every class is in both parts).
    n_features : int, default 54675
        Number of features.
    n_classes : int, default 18
        Number of classes (>= 2); class sizes differ by at most one.
    n_informative : int, optional
        Number of informative features, chosen at random among all features. Default
        ``max(10, n_features // 10)`` (10 %, like the many differentially expressed genes of a
        microarray), capped at ``n_features``.
    class_sep : float, optional
        Standard deviation of the class means on the informative features, in units of the
        (unit) noise standard deviation; larger is easier. Default 0.5: each informative feature
        is weak on its own, and two class means are on average ``0.5 * sqrt(2 * n_informative)``
        noise standard deviations apart (at least 2.2), so the classes are separable given many
        informative features, and the difficulty comes from the noise
        features (nearest-class-mean gets about 0.9 test accuracy at the default size).
    seed : int or None, default 0
        Seed; the same seed gives bit-identical arrays (for the same arguments).
    dtype : {"float32", "float64"}, default "float32"
        Dtype of the features; values are generated directly in this dtype, one block of rows at
        a time, so no float64 copy of the whole matrix is ever made.
    test_size : float, default 1/3
        Fraction of samples in the test part (stratified split, see :func:`stratified_split`).

    Returns
    -------
    Dataset
        Named ``"synthetic"``; ``informative_features`` holds the informative feature indices.
        Features are not standardized here (they are already about zero-mean, unit-variance
        noise); :func:`load_dataset` standardizes them with train statistics by default.

    Notes
    -----
    Every sample is ``x = z + m[y]`` where ``z`` is standard normal noise on all features and
    ``m[y]`` is the mean of class ``y``, nonzero only on the informative features, drawn once as
    ``N(0, class_sep**2)``. The samples are generated in a fixed order and each row is written
    straight to its train or test position, so the underlying data set does not depend on
    ``test_size`` (only the split does).
    """
    n_samples = check_int(n_samples, "n_samples", min_val=1)
    n_features = check_int(n_features, "n_features", min_val=1)
    n_classes = check_int(n_classes, "n_classes", min_val=2)
    if n_samples < 2 * n_classes:
        raise ValueError(f"n_samples must be at least 2 * n_classes = {2 * n_classes}, got {n_samples}")
    if n_informative is None:
        n_informative = min(n_features, max(10, n_features // 10))
    n_informative = check_int(n_informative, "n_informative", min_val=1, max_val=n_features)
    if class_sep is None:
        class_sep = 0.5
    if isinstance(class_sep, bool) or not isinstance(class_sep, numbers.Real) or not class_sep >= 0:
        raise ValueError(f"class_sep must be a non-negative number, got {class_sep!r}")
    dt = _check_dtype(dtype)
    ts = _check_test_size(test_size)

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    informative = np.sort(rng.choice(n_features, size=n_informative, replace=False)).astype(np.int64)
    means = (rng.standard_normal((n_classes, n_informative)) * float(class_sep)).astype(dt)
    y = rng.permutation(np.arange(n_samples, dtype=np.int64) % n_classes)
    train_idx, test_idx = stratified_split(y, ts, rng.integers(0, 2**63 - 1))
    # destination of every sample: (part, row)
    part = np.zeros(n_samples, dtype=np.int8)
    part[test_idx] = 1
    row = np.empty(n_samples, dtype=np.int64)
    row[train_idx] = np.arange(train_idx.shape[0])
    row[test_idx] = np.arange(test_idx.shape[0])

    X_train = np.empty((train_idx.shape[0], n_features), dtype=dt)
    X_test = np.empty((test_idx.shape[0], n_features), dtype=dt)
    step = max(1, min(n_samples, (1 << 22) // n_features))  # ~16 MiB float32 blocks
    buf = np.empty((step, n_features), dtype=dt)
    noise_rng = np.random.default_rng(rng.integers(0, 2**63 - 1))
    for a in range(0, n_samples, step):
        b = min(n_samples, a + step)
        blk = buf[: b - a]
        noise_rng.standard_normal(out=blk, dtype=dt)
        blk[:, informative] += means[y[a:b]]
        tr = part[a:b] == 0
        X_train[row[a:b][tr]] = blk[tr]
        X_test[row[a:b][~tr]] = blk[~tr]
    logger.debug(
        "make_synthetic: %d x %d x %d classes (%d informative) in %.2f s",
        n_samples, n_features, n_classes, n_informative, time.perf_counter() - t0,
    )
    return Dataset(
        X_train, y[train_idx], X_test, y[test_idx], "synthetic", n_classes,
        source=None, informative_features=informative,
    )
