"""Pieces of Sparse Evolutionary Training that do not depend on a layer's storage.

- :func:`select_to_remove`: which stored connections to prune (per sign, as the SET reference does,
  or by magnitude), by partial sorts: O(nnz).
- :func:`draw_free_positions`: distinct random positions that are not in a CSR pattern, drawn as flat
  keys and checked against the pattern by binary search in its rows (no ``n_rows x n_cols``
  temporary; O(k log k) for k new positions).
- :func:`zeta_at`: the pruning fraction of an epoch under a schedule.
"""
import math

import numpy as np

from . import _kernels

__all__ = ["CRITERIA", "SCHEDULES", "select_to_remove", "draw_free_positions", "zeta_at"]

CRITERIA = ("signed", "magnitude")
SCHEDULES = ("constant", "linear", "cosine")


def select_to_remove(values, zeta, criterion="signed"):
    """Indices (sorted) of the connections to remove.

    Parameters
    ----------
    values : ndarray of shape (nnz,)
        Connection weights.
    zeta : float in [0, 1]
        Fraction to remove.
    criterion : {"signed", "magnitude"}
        ``"signed"``: the fraction ``zeta`` of the non-negative weights closest to zero and the fraction
        ``zeta`` of the negative weights closest to zero (the SET reference's rule);
        ``"magnitude"``: the fraction ``zeta`` of all weights with the smallest ``|w|``.

    Returns
    -------
    ndarray of int64
    """
    n = values.shape[0]
    if criterion == "magnitude":
        k = int(round(zeta * n))
        if k == 0:
            return np.empty(0, np.int64)
        return np.sort(np.argpartition(np.abs(values), k - 1)[:k]).astype(np.int64)
    if criterion != "signed":
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    pos = np.flatnonzero(values >= 0)
    neg = np.flatnonzero(values < 0)
    parts = []
    k = int(round(zeta * pos.size))
    if k:
        parts.append(pos[np.argpartition(values[pos], k - 1)[:k]])
    k = int(round(zeta * neg.size))
    if k:
        parts.append(neg[np.argpartition(-values[neg], k - 1)[:k]])
    if not parts:
        return np.empty(0, np.int64)
    return np.sort(np.concatenate(parts)).astype(np.int64)


def _present_mask(indptr, indices, rows, cols, n_threads):
    out = np.empty(rows.shape[0], dtype=np.uint8)
    if rows.shape[0]:
        _kernels.csr_contains(indptr, indices, rows, cols, out, n_threads)
    return out.view(bool)


def draw_free_positions(rng, n_rows, n_cols, count, indptr=None, indices=None, n_threads=1):
    """Draw ``count`` distinct positions uniformly among those not stored in a CSR pattern.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_rows, n_cols : int
        Shape of the matrix.
    count : int
        Number of positions to draw.
    indptr, indices : ndarray or None
        The canonical CSR pattern to avoid (None: an empty matrix).
    n_threads : int

    Returns
    -------
    rows, cols : ndarray
        Sorted row-major (by ``row * n_cols + col``), in the dtype of ``indices`` (int64 without a
        pattern).
    """
    idx_dtype = np.int64 if indices is None else indices.dtype
    total = int(n_rows) * int(n_cols)
    present = 0 if indices is None else int(indices.shape[0])
    free = total - present
    if count > free:
        raise ValueError(f"cannot place {count} new connections: only {free} free positions")
    if count == 0:
        return np.empty(0, idx_dtype), np.empty(0, idx_dtype)
    if free <= 4 * count:
        # dense regime: enumerate the free cells (at most present + 4 * count of them) and pick
        taken = np.zeros(total, dtype=bool)
        if present:
            rows_p = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(indptr))
            taken[rows_p * n_cols + indices] = True
        free_keys = np.flatnonzero(~taken)
        keys = np.sort(free_keys[rng.choice(free_keys.size, count, replace=False)])
    else:
        # sparse regime: rejection sampling of flat keys, de-duplicated, checked against the pattern
        keys = np.empty(0, np.int64)
        while keys.size < count:
            need = count - keys.size
            cand = np.unique(rng.integers(0, total, size=need + need // 16 + 16, dtype=np.int64))
            if present:
                r = (cand // n_cols).astype(idx_dtype)
                c = (cand % n_cols).astype(idx_dtype)
                cand = cand[~_present_mask(indptr, indices, r, c, n_threads)]
            keys = np.union1d(keys, cand)
        if keys.size > count:
            # drop a uniformly random surplus: the rest is a uniform subset of the free cells
            keys = np.delete(keys, rng.choice(keys.size, keys.size - count, replace=False))
    return (keys // n_cols).astype(idx_dtype), (keys % n_cols).astype(idx_dtype)


def zeta_at(zeta, epoch, n_epochs, schedule="constant"):
    """Pruning fraction after epoch ``epoch`` (0-based) of ``n_epochs``.

    ``"constant"``: ``zeta``; ``"linear"``: ``zeta * (1 - epoch / n_epochs)``;
    ``"cosine"``: ``zeta * (1 + cos(pi * epoch / n_epochs)) / 2``.
    """
    if schedule == "constant":
        return float(zeta)
    frac = epoch / max(1, n_epochs)
    if schedule == "linear":
        return float(zeta * (1.0 - frac))
    if schedule == "cosine":
        return float(zeta * 0.5 * (1.0 + math.cos(math.pi * frac)))
    raise ValueError(f"zeta schedule must be one of {SCHEDULES}, got {schedule!r}")
