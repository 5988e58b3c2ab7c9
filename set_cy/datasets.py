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

This module depends only on NumPy, SciPy (for ``.mat`` files) and the standard library, and
imports nothing else from ``set_cy``.
"""
from __future__ import annotations

import gzip
import logging
import numbers
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "Dataset",
    "load_dataset",
    "make_synthetic",
    "available_datasets",
    "stratified_split",
    "read_idx",
    "DATASET_NAMES",
    "DEFAULT_TEST_SIZE",
]

logger = logging.getLogger("set_cy")

PathLike = Union[str, "os.PathLike[str]"]

#: Fraction of the samples held out for testing when a data set has no official split
#: (the reference code trains on 2/3 of the samples).
DEFAULT_TEST_SIZE = 1.0 / 3.0

_ENV_VAR = "SET_CY_DATA"
_DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# canonical name -> file name in the scikit-feature collection
_SCIKIT_FEATURE = {
    "allaml": "ALLAML.mat",
    "glioma": "GLIOMA.mat",
    "colon": "colon.mat",
    "leukemia": "leukemia.mat",
    "lymphoma": "lymphoma.mat",
    "lung_small": "lung_small.mat",
    "arcene": "arcene.mat",
    "madelon": "madelon.mat",
}
_IDX_SETS = {"mnist": "mnist", "fashion-mnist": "fashion-mnist"}  # name -> subfolder
_MADELON_NIPS_FILES = (
    "madelon_train.data",
    "madelon_train.labels",
    "madelon_valid.data",
    "madelon_valid.labels",
)
_IDX_PARTS = (
    ("train", "images", 3),
    ("train", "labels", 1),
    ("t10k", "images", 3),
    ("t10k", "labels", 1),
)

#: Every name accepted by :func:`load_dataset` (case-insensitive, ``-`` and ``_`` interchangeable).
DATASET_NAMES: Tuple[str, ...] = tuple(_SCIKIT_FEATURE) + ("madelon-nips", "mnist", "fashion-mnist", "synthetic")

_SOURCES = {
    "scikit-feature": (
        "the scikit-feature repository's data sets (https://jundongl.github.io/scikit-feature/datasets.html), "
        "GPL-2.0; put the .mat files in <data>/scikit-feature/"
    ),
    "nips2003": (
        "the NIPS 2003 feature selection challenge, UCI 'Madelon' "
        "(https://archive.ics.uci.edu/dataset/171/madelon); put madelon_{train,valid}.{data,labels} "
        "in <data>/nips2003/"
    ),
    "mnist": (
        "MNIST (http://yann.lecun.com/exdb/mnist/); put the four *-ubyte(.gz) IDX files in <data>/mnist/"
    ),
    "fashion-mnist": (
        "Fashion-MNIST (https://github.com/zalandoresearch/fashion-mnist, MIT); on Debian/Ubuntu "
        "`apt-get install dataset-fashion-mnist` installs it in /usr/share/datasets/fashion-mnist, "
        "or put the four *-ubyte(.gz) IDX files in <data>/fashion-mnist/"
    ),
}

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

# rows are processed in blocks of about this many elements (16 MiB of float64)
_CHUNK_ELEMS = 1 << 21


# --------------------------------------------------------------------------------------------
# Dataset container
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def _norm_name(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "")


_NAME_LOOKUP = {_norm_name(n): n for n in DATASET_NAMES}
_NAME_LOOKUP.update({"madelonnips2003": "madelon-nips", "nipsmadelon": "madelon-nips", "fmnist": "fashion-mnist"})


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _check_test_size(test_size: Any) -> float:
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise ValueError(f"test_size must be a float strictly between 0 and 1, got {test_size!r}")
    ts = float(test_size)
    if not (0.0 < ts < 1.0):  # also rejects nan
        raise ValueError(f"test_size must be a float strictly between 0 and 1, got {test_size!r}")
    return ts


def _encode_labels(*parts: np.ndarray) -> Tuple[List[np.ndarray], int]:
    """Map the labels of all parts together onto ``0 .. k-1`` (sorted order of the raw labels)."""
    flat = [np.asarray(p).reshape(-1) for p in parts]
    sizes = [f.shape[0] for f in flat]
    allv = np.concatenate(flat) if flat else np.empty(0)
    if allv.dtype.kind == "f":
        if not np.all(np.isfinite(allv)):
            raise ValueError("labels contain NaN or infinite values")
        if np.all(allv == np.round(allv)):
            allv = allv.astype(np.int64)
    elif allv.dtype.kind in "iub":
        allv = allv.astype(np.int64)
    classes, inverse = np.unique(allv, return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.int64)
    out = []
    start = 0
    for s in sizes:
        out.append(inverse[start : start + s])
        start += s
    return out, int(classes.shape[0])


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


# --------------------------------------------------------------------------------------------
# File readers
# --------------------------------------------------------------------------------------------
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError) as exc:  # truncated / corrupt gzip stream
        raise ValueError(f"{path}: cannot read file ({exc})") from exc


def read_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzip-compressed or raw.

    Parameters
    ----------
    path : str or os.PathLike
        The file; compression is detected from its content, not its name.

    Returns
    -------
    numpy.ndarray
        The array with the shape stored in the header, in native byte order.

    Raises
    ------
    ValueError
        If the magic number or the size of the data does not match the IDX format; the message
        names the file.
    """
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] not in _IDX_TYPES or buf[3] == 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {buf[:4].hex() or '<empty>'})")
    dt = _IDX_TYPES[buf[2]]
    ndim = buf[3]
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(buf) - header != count * dt.itemsize:
        raise ValueError(
            f"{path}: IDX size mismatch: header says {shape} of {dt} ({count * dt.itemsize} bytes) "
            f"but the file holds {len(buf) - header} data bytes"
        )
    arr = np.frombuffer(buf, dtype=dt, count=count, offset=header).reshape(shape)
    return arr.astype(dt.newbyteorder("="), copy=True)


def _load_mat(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5)
        raise ValueError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save with -v7") from exc
    except (ValueError, TypeError, OSError) as exc:
        raise ValueError(f"{path}: cannot read MATLAB file ({exc})") from exc
    keys = {k: k for k in mat if not k.startswith("__")}
    xk = next((k for k in ("X", "x") if k in keys), None)
    yk = next((k for k in ("Y", "y") if k in keys), None)
    if xk is None or yk is None:
        raise ValueError(f"{path}: expected variables 'X' and 'Y', found {sorted(keys)}")
    y = mat[yk]
    if hasattr(y, "toarray") and not isinstance(y, np.ndarray):
        y = y.toarray()
    return _as_2d(mat[xk], str(path)), np.asarray(y).reshape(-1)


def _load_npz(path: Path) -> Dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: cannot read .npz file ({exc})") from exc
    if all(k in data for k in ("X_train", "y_train", "X_test", "y_test")):
        return data
    xk = next((k for k in ("X", "x") if k in data), None)
    yk = next((k for k in ("y", "Y") if k in data), None)
    if xk is None or yk is None:
        raise ValueError(
            f"{path}: expected arrays 'X' and 'y' or 'X_train', 'y_train', 'X_test', 'y_test'; found {sorted(data)}"
        )
    return {"X": data[xk], "y": data[yk]}


def _load_csv(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    with open(path, "r", encoding="utf-8-sig") as fh:
        first = ""
        for line in fh:
            if line.strip() and not line.lstrip().startswith("#"):
                first = line
                break
    if not first:
        raise ValueError(f"{path}: empty CSV file")
    delim: Optional[str] = None
    for d in (",", ";", "\t"):
        if d in first:
            delim = d
            break
    fields = [f.strip().strip('"').strip("'") for f in (first.split(delim) if delim else first.split())]
    if len(fields) < 2:
        raise ValueError(f"{path}: need at least one feature column and a label column")
    try:
        [float(f) for f in fields[:-1]]
        skip = 0
    except ValueError:
        skip = 1  # a header line
    ncol = len(fields)
    kw = dict(delimiter=delim, skiprows=skip, comments="#", encoding="utf-8-sig", ndmin=2)
    try:
        X = np.loadtxt(path, dtype=np.float64, usecols=range(ncol - 1), **kw)
        labels = np.loadtxt(path, dtype=str, usecols=[ncol - 1], **kw).reshape(-1)
    except ValueError as exc:
        raise ValueError(f"{path}: cannot parse CSV ({exc})") from exc
    labels = np.char.strip(np.char.strip(labels), "\"'")
    try:
        num = labels.astype(np.float64)
    except ValueError:
        return X, labels  # non-numeric labels: sorted as strings
    return X, num


# --------------------------------------------------------------------------------------------
# Locating files
# --------------------------------------------------------------------------------------------
def _base_dirs(data_dir: Optional[PathLike], name: Optional[str] = None) -> List[Tuple[Path, str]]:
    """The folders searched, in order, each with a short note of where it came from."""
    bases: List[Tuple[Path, str]] = []
    if data_dir is not None:
        bases.append((Path(data_dir).expanduser(), "data_dir argument"))
    env = os.environ.get(_ENV_VAR, "")
    for part in env.split(os.pathsep):
        if part.strip():
            bases.append((Path(part.strip()).expanduser(), f"${_ENV_VAR}"))
    bases.append((Path.cwd() / "data", "./data"))
    if name == "fashion-mnist":
        bases.append((_DEBIAN_FASHION_DIR, "Debian package dataset-fashion-mnist"))
    seen = set()
    unique = []
    for b, why in bases:
        key = os.path.abspath(b)
        if key not in seen:
            seen.add(key)
            unique.append((b, why))
    return unique


def _subfolder(name: str) -> str:
    if name in _SCIKIT_FEATURE:
        return "scikit-feature"
    if name == "madelon-nips":
        return "nips2003"
    return _IDX_SETS[name]


def _candidate_dirs(name: str, data_dir: Optional[PathLike]) -> List[Tuple[Path, str]]:
    sub = _subfolder(name)
    out = []
    for base, why in _base_dirs(data_dir, name):
        out.append((base / sub, why))
        out.append((base, why))
    return out


def _find_file_ci(folder: Path, filename: str) -> Optional[Path]:
    """``folder/filename``, matching the file name case-insensitively if needed."""
    p = folder / filename
    if p.is_file():
        return p
    try:
        entries = list(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return None
    low = filename.lower()
    for e in sorted(entries):
        if e.name.lower() == low and e.is_file():
            return e
    return None


def _idx_files(folder: Path) -> Optional[Dict[str, Path]]:
    """The four IDX files in ``folder`` (``.gz`` or raw, ``-`` or ``.`` before ``idxN``), or None."""
    found: Dict[str, Path] = {}
    for split, kind, nd in _IDX_PARTS:
        hit = None
        for sep in ("-", "."):
            for ext in (".gz", ""):
                hit = _find_file_ci(folder, f"{split}-{kind}{sep}idx{nd}-ubyte{ext}")
                if hit is not None:
                    break
            if hit is not None:
                break
        if hit is None:
            return None
        found[f"{split}-{kind}"] = hit
    return found


def _locate(name: str, data_dir: Optional[PathLike]) -> Tuple[Optional[Path], List[str]]:
    """Return (path, places looked). ``path`` is a .mat file or a folder of the data set's files."""
    looked: List[str] = []
    for folder, why in _candidate_dirs(name, data_dir):
        if name in _SCIKIT_FEATURE:
            fn = _SCIKIT_FEATURE[name]
            hit = _find_file_ci(folder, fn)
            looked.append(f"{folder / fn}  ({why})")
            if hit is not None:
                return hit, looked
        elif name == "madelon-nips":
            looked.append(f"{folder}/madelon_{{train,valid}}.{{data,labels}}  ({why})")
            if all(_find_file_ci(folder, f) is not None for f in _MADELON_NIPS_FILES):
                return folder, looked
        else:
            looked.append(f"{folder}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz]  ({why})")
            if _idx_files(folder) is not None:
                return folder, looked
    return None, looked


def _not_found(name: str, looked: List[str]) -> FileNotFoundError:
    key = "scikit-feature" if name in _SCIKIT_FEATURE else ("nips2003" if name == "madelon-nips" else name)
    env = os.environ.get(_ENV_VAR)
    env_note = f"${_ENV_VAR} is {env!r}" if env else f"${_ENV_VAR} is not set"
    lines = [f"data set {name!r} not found ({env_note}; current directory {os.getcwd()}). Looked in:"]
    lines += [f"  - {p}" for p in looked]
    lines.append(
        f"To fix: pass data_dir=..., or set {_ENV_VAR}=/path/to/data (a folder with scikit-feature/, "
        "nips2003/, mnist/, fashion-mnist/ subfolders), or put the files under ./data/."
    )
    lines.append(f"The files come from {_SOURCES[key]}. set_cy never downloads data.")
    return FileNotFoundError("\n".join(lines))


def available_datasets(data_dir: Optional[PathLike] = None) -> Dict[str, Optional[Path]]:
    """Report where each file-based named data set is found.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Extra folder searched first, as in :func:`load_dataset`.

    Returns
    -------
    dict
        Maps every file-based name of :data:`DATASET_NAMES` to the ``.mat`` file or the folder
        that :func:`load_dataset` would read, or to ``None`` when it is not found.
        ``"synthetic"`` needs no files and is not listed.
    """
    return {n: _locate(n, data_dir)[0] for n in DATASET_NAMES if n != "synthetic"}


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
        or Path(s).suffix.lower() in (".mat", ".npz", ".csv", ".tsv", ".txt")
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


# --------------------------------------------------------------------------------------------
# Synthetic microarray-shaped data
# --------------------------------------------------------------------------------------------
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
    for label, v, lo in (("n_samples", n_samples, 1), ("n_features", n_features, 1), ("n_classes", n_classes, 2)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
            raise ValueError(f"{label} must be an integer >= {lo}, got {v!r}")
    n_samples, n_features, n_classes = int(n_samples), int(n_features), int(n_classes)
    if n_samples < 2 * n_classes:
        raise ValueError(f"n_samples must be at least 2 * n_classes = {2 * n_classes}, got {n_samples}")
    if n_informative is None:
        n_informative = min(n_features, max(10, n_features // 10))
    if isinstance(n_informative, bool) or not isinstance(n_informative, numbers.Integral) or not (
        1 <= n_informative <= n_features
    ):
        raise ValueError(f"n_informative must be an integer in 1..n_features={n_features}, got {n_informative!r}")
    n_informative = int(n_informative)
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
