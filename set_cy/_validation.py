"""Argument checks shared by the public layers (``ops``, layers, model, persistence). Kernels validate nothing.

The structure of a CSR pattern is checked in one place, :func:`check_pattern` (and its transpose in
:func:`check_transpose`); :func:`check_csr` (scipy matrices handed to :mod:`set_cy.ops`) and
:func:`check_layer_arrays` (the arrays a :class:`set_cy.layers.SparseLayer` is built from) use it.
"""
import numbers
import operator

import numpy as np
import scipy.sparse as sp

from . import _kernels
from .patterns import transpose_pattern

__all__ = [
    "FLOAT_DTYPES",
    "INDEX_DTYPES",
    "InvalidParameterError",
    "resolve_n_threads",
    "check_float_dtype",
    "check_dense",
    "check_pattern",
    "check_transpose",
    "check_csr",
    "check_scalar",
    "check_int",
    "check_layer_arrays",
    "LAYER_ARRAYS",
]

#: The value dtypes the kernels are compiled for.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# More threads than this is a mistake, and tens of thousands of OpenMP threads crash the process.
MAX_THREADS = 4096
#: The index dtypes the kernels are compiled for.
INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


class InvalidParameterError(ValueError, TypeError):
    """A parameter of the wrong type or out of range.

    Both a ``ValueError`` and a ``TypeError`` (as scikit-learn's error of the same name), so callers
    may catch either: a scikit-learn estimator reports every bad parameter as a ``ValueError``.
    """


def resolve_n_threads(n_threads, name="n_threads"):
    """Number of OpenMP threads (or workers) to use, with joblib's meaning of ``n_jobs``.

    ``None`` or ``-1``: all cores (``omp_get_max_threads()``, which honours ``OMP_NUM_THREADS``);
    a positive int: that many; ``-k``: all cores but ``k - 1``, at least one; 0 is an error.
    """
    if n_threads is None:
        return max(1, int(_kernels.max_threads()))
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
        raise InvalidParameterError(f"{name} must be a positive int, a negative int (joblib's meaning) or None, "
                                    f"got {n_threads!r}")
    if n_threads == 0:
        raise InvalidParameterError(f"{name} must be >= 1, or negative as in joblib (-1: all cores, -2: all but "
                                    f"one), or None (all cores); got 0")
    if n_threads < 0:
        return max(1, int(_kernels.max_threads()) + 1 + int(n_threads))
    if n_threads > MAX_THREADS:
        raise InvalidParameterError(f"{name} must be <= {MAX_THREADS}, got {n_threads} (OpenMP cannot start that "
                                    f"many threads; this machine has {_kernels.max_threads()})")
    return int(n_threads)


def check_float_dtype(dtype, name="dtype"):
    """Return ``np.dtype(dtype)`` if it is float32 or float64, else raise TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from exc
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def check_dense(a, name, ndim, dtype=None):
    """Check that ``a`` is a dense float32/float64 ndarray of ``ndim`` dimensions (no sparse input).

    Returns the array (not copied). ``dtype`` (optional) is the dtype it must have.
    """
    if not isinstance(a, np.ndarray):
        if sp.issparse(a):
            raise TypeError(f"{name} must be a dense numpy array, got a scipy.sparse {a.format} matrix")
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but {dtype} was expected (dtypes must not be mixed)")
    return a


def check_pattern(indptr, indices, n_rows, n_cols, name="pattern", *, hint=""):
    """Check a canonical CSR pattern of ``n_rows x n_cols``; raise ValueError naming what is wrong.

    ``indptr`` (``n_rows + 1`` offsets) starts at 0, never decreases and ends at ``len(indices)``;
    ``indices`` lie in ``[0, n_cols)`` and increase strictly within each row (sorted, no duplicates);
    both are 1-D, of one int32/int64 dtype wide enough for every index and offset. The kernels read
    patterns unchecked, so every pattern from outside passes here. O(nnz), one temporary of
    ``nnz`` indices.
    """
    indptr, indices = np.asarray(indptr), np.asarray(indices)
    if indptr.ndim != 1 or indices.ndim != 1:
        raise ValueError(f"{name}: indptr and indices must be 1-D, got shapes {indptr.shape} and {indices.shape}")
    for label, a in (("indptr", indptr), ("indices", indices)):
        if a.dtype not in INDEX_DTYPES:
            raise ValueError(f"{name}: {label} has dtype {a.dtype}; indptr and indices must share dtype int32 or "
                             f"int64")
    if indices.dtype != indptr.dtype:
        raise ValueError(f"{name}: indptr and indices must share dtype int32 or int64, got indptr {indptr.dtype} "
                         f"and indices {indices.dtype}")
    nnz = indices.shape[0]
    if max(n_rows, n_cols, nnz) >= np.iinfo(indices.dtype).max:
        raise ValueError(f"{name}: {indices.dtype} cannot index a {n_rows} x {n_cols} pattern with {nnz} entries")
    if indptr.shape[0] != n_rows + 1:
        raise ValueError(f"{name}: indptr has length {indptr.shape[0]}, expected {n_rows + 1}")
    if indptr[0] != 0 or indptr[-1] != nnz or np.any(indptr[1:] < indptr[:-1]):
        raise ValueError(f"{name} is not a valid CSR structure: indptr must start at 0, never decrease and "
                         f"end at len(indices) = {nnz}")
    if nnz and (indices.min() < 0 or indices.max() >= n_cols):
        raise ValueError(f"{name} has column indices outside [0, {n_cols})")
    if nnz > 1:
        steps = np.diff(indices)  # in (-n_cols, n_cols): no overflow
        starts = indptr[1:-1]
        steps[starts[(starts > 0) & (starts < nnz)] - 1] = 1  # a new row may start anywhere
        if np.any(steps <= 0):
            raise ValueError(f"{name} is not in canonical CSR form: indices must increase strictly within each "
                             f"row (sorted, no duplicates)" + (f"; {hint}" if hint else ""))


def check_transpose(indptr, indices, n_cols, t_indptr, t_indices, perm, name="pattern"):
    """Check that ``(t_indptr, t_indices, perm)`` is the transposed index of a (checked) canonical pattern.

    The transpose of a canonical pattern is unique, so it is rebuilt and compared: O(nnz).
    """
    want = transpose_pattern(np.asarray(indptr), np.asarray(indices), n_cols)
    for label, got, ref in zip(("t_indptr", "t_indices", "perm"), (t_indptr, t_indices, perm), want):
        got = np.asarray(got)
        if got.dtype != ref.dtype or got.shape != ref.shape or not np.array_equal(got, ref):
            raise ValueError(f"{name}: {label} is not the transposed index of the pattern")


def check_csr(W, name="W", dtype=None):
    """Validate a scipy.sparse CSR array/matrix for the kernels; return (indptr, indices, data).

    Checks the format (CSR), the value dtype (float32/float64, equal to ``dtype`` when given), the
    index dtype (int32/int64; indptr is cast to the index dtype when they differ), the structure
    (monotone indptr, indices in range) and canonical form (sorted, no duplicates), because the
    kernels read indices unchecked.
    """
    if not sp.issparse(W):
        raise TypeError(f"{name} must be a scipy.sparse CSR array or matrix, got {type(W).__name__}")
    if W.format != "csr":
        raise TypeError(f"{name} must be in CSR format, got {W.format!r} (convert with {name}.tocsr())")
    if W.data.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {W.data.dtype}")
    if dtype is not None and W.data.dtype != dtype:
        raise TypeError(f"{name} has dtype {W.data.dtype} but {dtype} was expected (dtypes must not be mixed)")
    n_rows, n_cols = W.shape
    indptr, indices, data = W.indptr, W.indices, W.data
    if indices.dtype not in INDEX_DTYPES or indptr.dtype not in INDEX_DTYPES:
        raise TypeError(f"{name} must have int32 or int64 indices, got {indices.dtype}/{indptr.dtype}")
    if indptr.ndim != 1 or indices.ndim != 1 or data.ndim != 1:
        raise ValueError(f"{name} is not a valid CSR structure: indptr, indices and data must be 1-D")
    idx_dtype = np.promote_types(indices.dtype, indptr.dtype)
    if indptr.shape[0] != n_rows + 1:
        raise ValueError(f"{name}.indptr has length {indptr.shape[0]}, expected {n_rows + 1}")
    nnz = int(indptr[-1])
    if nnz < 0 or nnz > indices.shape[0] or nnz > data.shape[0]:
        raise ValueError(f"{name} is not a valid CSR structure (indptr must end at nnz <= len(indices), "
                         f"len(data))")
    indptr = np.ascontiguousarray(indptr, dtype=idx_dtype)
    indices = np.ascontiguousarray(indices[:nnz], dtype=idx_dtype)
    check_pattern(indptr, indices, n_rows, n_cols, name,
                  hint=f"call {name}.sum_duplicates() first for a canonical form")
    return indptr, indices, np.ascontiguousarray(data[:nnz])


def check_scalar(x, name, *, min_val=None, max_val=None, include_min=True, include_max=True):
    """Validate a finite real scalar (bool rejected) within optional bounds; return it as float.

    ``include_min``/``include_max`` False make the bound strict (``> min_val``, ``< max_val``).
    """
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise InvalidParameterError(f"{name} must be a real number, got {x!r}")
    x = float(x)
    if not np.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if min_val is not None:
        cmp = operator.lt if include_min else operator.le
        if cmp(x, min_val):
            raise ValueError(f"{name} must be {'>=' if include_min else '>'} {min_val}, got {x}")
    if max_val is not None:
        cmp = operator.gt if include_max else operator.ge
        if cmp(x, max_val):
            raise ValueError(f"{name} must be {'<=' if include_max else '<'} {max_val}, got {x}")
    return x


def check_int(x, name, *, min_val=None, max_val=None):
    """Validate an integer (bool rejected; numpy integers accepted) within optional bounds; return it as int.

    Raises :class:`InvalidParameterError` (a ValueError and a TypeError) naming ``name``.
    """
    what = {0: "a non-negative int", 1: "a positive int"}.get(min_val, "an int")
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise InvalidParameterError(f"{name} must be {what}, got {x!r}")
    x = int(x)
    if min_val is not None and x < min_val:
        raise InvalidParameterError(f"{name} must be {what if min_val in (0, 1) else f'>= {min_val}'}, got {x}")
    if max_val is not None and x > max_val:
        raise InvalidParameterError(f"{name} must be <= {max_val}, got {x}")
    return x


#: The arrays of one layer, in the order :func:`check_layer_arrays` checks and returns them.
LAYER_ARRAYS = ("indptr", "indices", "data", "velocity", "bias", "bias_velocity")


def check_layer_arrays(n_in, n_out, arrays, dtype, name="layer"):
    """Validate the arrays a sparse layer is built from (see :class:`set_cy.layers.SparseLayer`).

    The pattern is the canonical CSR of ``W^T`` (``n_out`` rows, ``n_in`` columns, see
    :func:`check_pattern`); ``data`` and ``velocity`` hold one finite value of ``dtype`` per
    connection, ``bias`` and ``bias_velocity`` one per output neuron. The kernels read all of them
    unchecked, so nothing may reach them without passing here.

    Parameters
    ----------
    n_in, n_out : int
    arrays : mapping of str to array-like
        The six arrays of :data:`LAYER_ARRAYS`.
    dtype : numpy dtype
        The network's value dtype.
    name : str
        Prefix of the arrays' names in error messages (e.g. ``"layer0"``).

    Returns
    -------
    dict
        The six arrays, C-contiguous.

    Raises
    ------
    ValueError
        Naming the array and what is wrong with it.
    """
    missing = [k for k in LAYER_ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"{name}: missing arrays {missing}")
    out = {k: np.ascontiguousarray(arrays[k]) for k in LAYER_ARRAYS}
    for k, a in out.items():
        if a.ndim != 1:
            raise ValueError(f"{name}_{k} must be 1-D, got shape {a.shape}")
    check_pattern(out["indptr"], out["indices"], n_out, n_in, name)
    written = ("data", "velocity", "bias", "bias_velocity")  # training writes these in place
    for i, k in enumerate(written):
        for other in written[i + 1:] + ("indptr", "indices"):
            if np.may_share_memory(out[k], out[other]):
                raise ValueError(f"{name}_{k} and {name}_{other} must not share memory")
    nnz = out["indices"].shape[0]
    for k, size in (("data", nnz), ("velocity", nnz), ("bias", n_out), ("bias_velocity", n_out)):
        a = out[k]
        if a.dtype != dtype:
            raise ValueError(f"{name}_{k} has dtype {a.dtype}, expected {np.dtype(dtype)}")
        if a.shape[0] != size:
            raise ValueError(f"{name}_{k} has length {a.shape[0]}, expected {size}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}_{k} holds NaN or infinity")
    return out
