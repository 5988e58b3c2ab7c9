"""File-format readers for :mod:`set_cy.datasets`.

:func:`read_idx` reads one IDX file (MNIST, Fashion-MNIST), gzip-compressed or raw, detected from
the content. The private readers return raw ``(X, y)`` arrays: ``_load_mat`` for MATLAB files such
as the scikit-feature collection (variables ``X``/``Y``; v7.3 HDF5 files are refused),
``_load_npz`` for ``.npz`` files (``X``/``y`` or a ready ``X_train``/``y_train``/``X_test``/``y_test``
split) and ``_load_csv`` for delimited text (last column = label, header line detected). Every
error names the file.
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from .arrays import _as_2d
from .locate import PathLike

__all__ = ["read_idx", "DATA_FILE_SUFFIXES"]

#: The file types :func:`set_cy.datasets.load_dataset` reads from a path: scikit-feature ``.mat``
#: (``X``, ``Y``), ``.npz`` (``X``, ``y``, or an official split) and text tables (label in the last column).
DATA_FILE_SUFFIXES = (".mat", ".npz", ".csv", ".tsv", ".txt")


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
