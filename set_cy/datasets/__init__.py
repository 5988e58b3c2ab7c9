"""Dataset loaders for the sparse-network trainer.

Everything goes through :func:`load_dataset`, which returns a :class:`Dataset` holding a
train/test split with float features and ``int64`` labels in ``0 .. n_classes-1``.

Supported sources
-----------------
* scikit-feature MATLAB files (``ALLAML``, ``GLIOMA``, ``colon``, ``leukemia``, ``lymphoma``,
  ``lung_small``, ``arcene``, ``madelon``): keys ``X`` and ``Y``; split here with a seeded,
  stratified split.
* NIPS-2003 Madelon text files (``madelon-nips``): the official train set is used for training
  and the official validation set (the test set has no public labels) for testing.
* MNIST and Fashion-MNIST in IDX format (gzip-compressed or raw), official 60000/10000 split.
* ``synthetic``: a microarray-shaped data set generated in memory (:func:`make_synthetic`).
* A path to a ``.mat``, ``.npz`` or ``.csv`` file, or to a folder holding the four IDX files.

Files are looked up, in this order, in the ``data_dir`` argument, in the folders of the
``SET_CY_DATA`` environment variable (several folders may be separated by ``os.pathsep``), in
``./data`` and, for Fashion-MNIST only, in ``/usr/share/datasets/fashion-mnist`` (Debian package
``dataset-fashion-mnist``). In each folder the conventional subfolder (``scikit-feature/``,
``nips2003/``, ``mnist/``, ``fashion-mnist/``) is tried first, then the folder itself. Nothing is
ever downloaded.

This package depends only on NumPy, SciPy (for ``.mat`` files) and the standard library, and
imports nothing else from ``set_cy``. Its modules: :mod:`~set_cy.datasets.container`
(:class:`Dataset`), :mod:`~set_cy.datasets.locate` (names and file search),
:mod:`~set_cy.datasets.formats` (file readers), :mod:`~set_cy.datasets.splits` (train/test
splits), :mod:`~set_cy.datasets.labels` (label encoding), :mod:`~set_cy.datasets.arrays`
(feature conversion and standardization) and :mod:`~set_cy.datasets.synthetic`; this file holds
:func:`load_dataset` and the loaders of named data sets and paths.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from .arrays import _check_dtype, _standardize_inplace
from .container import Dataset
from .formats import DATA_FILE_SUFFIXES, _load_csv, _load_mat, _load_npz, read_idx
from .locate import (
    _NAME_LOOKUP,
    _SCIKIT_FEATURE,
    DATASET_NAMES,
    PathLike,
    _find_file_ci,
    _idx_files,
    _locate,
    _norm_name,
    _not_found,
    available_datasets,
)
from .splits import DEFAULT_TEST_SIZE, _check_test_size, _finish_official, _finish_split, stratified_split
from .synthetic import _SYNTHETIC_ALIASES, make_synthetic

__all__ = [
    "Dataset",
    "load_dataset",
    "make_synthetic",
    "available_datasets",
    "stratified_split",
    "read_idx",
    "DATASET_NAMES",
    "DEFAULT_TEST_SIZE",
    "DATA_FILE_SUFFIXES",
]

logger = logging.getLogger("set_cy")


# --------------------------------------------------------------------------------------------
# Named loaders
# --------------------------------------------------------------------------------------------
def _load_madelon_nips(folder: Path, dtype: np.dtype, standardize: bool) -> Dataset:
    def read(fn: str, dt: Any) -> np.ndarray:
        p = _find_file_ci(folder, fn)
        assert p is not None
        try:
            return np.loadtxt(p, dtype=dt, ndmin=1)
        except ValueError as exc:
            raise ValueError(f"{p}: cannot parse ({exc})") from exc

    X_train = read("madelon_train.data", np.float64)
    y_train = read("madelon_train.labels", np.int64)
    X_test = read("madelon_valid.data", np.float64)
    y_test = read("madelon_valid.labels", np.int64)
    return _finish_official(
        X_train, y_train, X_test, y_test,
        name="madelon-nips", source=str(folder), dtype=dtype, standardize=standardize,
    )


def _load_idx_folder(folder: Path, name: str, dtype: np.dtype, standardize: bool) -> Dataset:
    files = _idx_files(folder)
    if files is None:
        raise FileNotFoundError(f"{folder}: the four IDX files (train/t10k images and labels) are not all there")
    arrays = {k: read_idx(p) for k, p in files.items()}
    X_train, X_test = arrays["train-images"], arrays["t10k-images"]
    y_train, y_test = arrays["train-labels"], arrays["t10k-labels"]
    for k in ("train", "t10k"):
        if arrays[f"{k}-images"].shape[0] != arrays[f"{k}-labels"].shape[0]:
            raise ValueError(
                f"{files[k + '-images']}: {arrays[k + '-images'].shape[0]} images but "
                f"{files[k + '-labels']} has {arrays[k + '-labels'].shape[0]} labels"
            )
    scale = 1.0 / 255.0 if X_train.dtype == np.uint8 else None
    return _finish_official(
        X_train.reshape(X_train.shape[0], -1), y_train,
        X_test.reshape(X_test.shape[0], -1), y_test,
        name=name, source=str(folder), dtype=dtype, standardize=standardize, scale=scale,
    )


def _load_path(
    path: Path, dtype: np.dtype, test_size: Optional[float], seed: Optional[int], standardize: bool
) -> Dataset:
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_dir():
        if _idx_files(path) is None:
            raise ValueError(
                f"{path}: a folder must hold the four IDX files train/t10k-images-idx3/labels-idx1-ubyte[.gz]"
            )
        _log_ignored_test_size(path.name, test_size)
        return _load_idx_folder(path, path.name, dtype, standardize)
    suffix = path.suffix.lower()
    common = dict(name=path.stem, source=str(path), dtype=dtype, test_size=test_size, seed=seed,
                  standardize=standardize)
    if suffix == ".mat":
        X, y = _load_mat(path)
        return _finish_split(X, y, **common)
    if suffix == ".npz":
        data = _load_npz(path)
        if "X_train" in data:
            _log_ignored_test_size(path.name, test_size)
            return _finish_official(
                data["X_train"], data["y_train"], data["X_test"], data["y_test"],
                name=path.stem, source=str(path), dtype=dtype, standardize=standardize,
            )
        return _finish_split(data["X"], data["y"], **common)
    if suffix in (".csv", ".tsv", ".txt"):
        X, y = _load_csv(path)
        return _finish_split(X, y, **common)
    raise ValueError(f"{path}: unsupported file type {suffix!r} (expected .mat, .npz or .csv)")


def _log_ignored_test_size(name: str, test_size: Optional[float]) -> None:
    if test_size is not None:
        logger.info("%s has an official train/test split; test_size=%r is ignored", name, test_size)


def _looks_like_path(s: str) -> bool:
    return (
        os.sep in s
        or (os.altsep is not None and os.altsep in s)
        or Path(s).suffix.lower() in DATA_FILE_SUFFIXES
        or s.startswith((".", "~"))
    )


def load_dataset(
    name_or_path: PathLike,
    *,
    dtype: Any = "float32",
    test_size: Optional[float] = None,
    seed: Optional[int] = 0,
    standardize: bool = True,
    data_dir: Optional[PathLike] = None,
    **synthetic_kwargs: Any,
) -> Dataset:
    """Load a data set by name or path as a train/test :class:`Dataset`.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        One of :data:`DATASET_NAMES` (case-insensitive; ``-`` and ``_`` are interchangeable):
        ``"allaml"``, ``"glioma"``, ``"colon"``, ``"leukemia"``, ``"lymphoma"``, ``"lung_small"``,
        ``"arcene"``, ``"madelon"`` (scikit-feature ``.mat`` files), ``"madelon-nips"`` (NIPS 2003
        text files; train = ``madelon_train``, test = ``madelon_valid``), ``"mnist"``,
        ``"fashion-mnist"`` (IDX files, official split) or ``"synthetic"``
        (:func:`make_synthetic`). Otherwise a path to a ``.mat`` file (variables ``X``, ``Y``), an
        ``.npz`` file (arrays ``X``, ``y``, or ``X_train``, ``y_train``, ``X_test``, ``y_test`` for
        a ready split), a ``.csv`` file (last column = label; a header line is detected and
        skipped; ``,``, ``;``, tab or whitespace separated), or a folder with the four IDX files.
    dtype : {"float32", "float64"} or numpy dtype, default "float32"
        Floating dtype of the feature matrices.
    test_size : float, optional
        Fraction of samples held out for testing, strictly between 0 and 1, for data sets without
        an official split (default :data:`DEFAULT_TEST_SIZE` = 1/3). Ignored (after validation)
        by ``madelon-nips``, ``mnist``, ``fashion-mnist`` and ``.npz`` files with a ready split.
    seed : int or None, default 0
        Seed of the stratified split (and of the generator for ``"synthetic"``).
    standardize : bool, default True
        Z-score every feature with the mean and standard deviation of the training part only;
        features constant in the training part are centred and divided by 1. IDX images are
        always scaled to [0, 1] first (so with ``standardize=False`` pixels are in [0, 1]).
    data_dir : str or os.PathLike, optional
        Folder searched first for named data sets (see Notes).
    **synthetic_kwargs
        Only for ``"synthetic"``: ``n_samples``, ``n_features``, ``n_classes``, ``n_informative``,
        ``class_sep`` (or the short aliases ``samples``, ``features``, ``classes``,
        ``informative``), passed on to :func:`make_synthetic`.

    Returns
    -------
    Dataset
        C-contiguous features of the chosen dtype and ``int64`` labels in ``0 .. n_classes-1``
        (raw labels, e.g. ``1..k`` or ``-1/+1``, are mapped in sorted order).

    Raises
    ------
    ValueError
        Unknown name (the message lists the known names), bad ``test_size`` or ``dtype``,
        unreadable or malformed file (e.g. an IDX file with a bad magic number; the message names
        the file).
    FileNotFoundError
        A named data set is not found; the message lists every place searched and how to get it.
    TypeError
        Extra keyword arguments given for a data set other than ``"synthetic"``, or unknown ones.

    Notes
    -----
    Named data sets are searched in: ``data_dir``; each folder of ``$SET_CY_DATA`` (separated by
    ``os.pathsep``); ``./data``; and for Fashion-MNIST ``/usr/share/datasets/fashion-mnist``
    (Debian package ``dataset-fashion-mnist``). In each folder the conventional subfolder
    (``scikit-feature/``, ``nips2003/``, ``mnist/`` or ``fashion-mnist/``) is tried before the
    folder itself. Nothing is downloaded.

    Data sets without an official split are split with :func:`stratified_split`: every class
    has at least one training sample, and every class with two or more samples has at least one
    test sample.

    Examples
    --------
    >>> from set_cy.datasets import load_dataset
    >>> ds = load_dataset("synthetic", n_samples=300, n_features=500, n_classes=5)
    >>> ds.X_train.shape, ds.n_classes
    ((200, 500), 5)
    """
    dt = _check_dtype(dtype)
    if test_size is not None:
        test_size = _check_test_size(test_size)
    if not isinstance(standardize, (bool, np.bool_)):
        raise TypeError(f"standardize must be a bool, got {standardize!r}")
    t0 = time.perf_counter()

    canonical: Optional[str] = None
    path: Optional[Path] = None
    if isinstance(name_or_path, os.PathLike):
        path = Path(name_or_path)
    elif isinstance(name_or_path, str):
        canonical = _NAME_LOOKUP.get(_norm_name(name_or_path))
        if canonical is None:
            if _looks_like_path(name_or_path) or Path(name_or_path).exists():
                path = Path(name_or_path).expanduser()
            else:
                raise ValueError(
                    f"unknown data set {name_or_path!r}; known names: {', '.join(DATASET_NAMES)} "
                    "(or give a path to a .mat, .npz or .csv file)"
                )
    else:
        raise TypeError(f"name_or_path must be a str or a path, got {type(name_or_path).__name__}")

    if synthetic_kwargs and canonical != "synthetic":
        raise TypeError(
            f"unexpected keyword argument(s) {sorted(synthetic_kwargs)} for {str(name_or_path)!r}: "
            "extra keyword arguments are only accepted for the 'synthetic' data set"
        )

    if canonical == "synthetic":
        kw: Dict[str, Any] = {}
        for k, v in synthetic_kwargs.items():
            target = _SYNTHETIC_ALIASES.get(k)
            if target is None:
                raise TypeError(
                    f"unexpected keyword argument {k!r} for 'synthetic'; accepted: {sorted(_SYNTHETIC_ALIASES)}"
                )
            if target in kw:
                raise TypeError(f"{target!r} given twice (as {k!r} and an alias)")
            kw[target] = v
        ds = make_synthetic(
            **kw, seed=seed, dtype=dt, test_size=DEFAULT_TEST_SIZE if test_size is None else test_size
        )
        if standardize:
            _standardize_inplace(ds.X_train, ds.X_test)
    elif path is not None:
        ds = _load_path(path, dt, test_size, seed, bool(standardize))
    else:
        assert canonical is not None
        found, looked = _locate(canonical, data_dir)
        if found is None:
            raise _not_found(canonical, looked)
        logger.debug("%s: reading %s", canonical, found)
        if canonical in _SCIKIT_FEATURE:
            X, y = _load_mat(found)
            ds = _finish_split(
                X, y, name=canonical, source=str(found), dtype=dt,
                test_size=test_size, seed=seed, standardize=bool(standardize),
            )
        elif canonical == "madelon-nips":
            _log_ignored_test_size(canonical, test_size)
            ds = _load_madelon_nips(found, dt, bool(standardize))
        else:
            _log_ignored_test_size(canonical, test_size)
            ds = _load_idx_folder(found, canonical, dt, bool(standardize))
    logger.info("loaded %r in %.2f s", ds, time.perf_counter() - t0)
    return ds
