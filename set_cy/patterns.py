"""Helpers on CSR patterns (``indptr``, ``indices``), apart from the SET rules of :mod:`set_cy.evolution`.

- :func:`transpose_pattern`: the pattern of the transpose and the map between the two orders;
- :func:`row_ids`, :func:`drop_entries`, :func:`merge_patterns`, :func:`contains`: per-entry rows,
  compaction, union of disjoint patterns and membership tests, over the compiled kernels;
- :func:`draw_free_positions` (and :func:`draw_free_positions_in`): distinct random positions that are
  not in a pattern, bucketed by row and checked against the pattern by binary search in its rows (no
  ``n_rows x n_cols`` temporary). Used to build Erdős–Rényi layers and to regrow connections.
- :func:`random_positions`, :func:`random_row_counts`, :func:`bucket_rows`, :func:`sort_rows`:
  uniform cells with repeats (as one CSR pattern, or as the number in each row), entries bucketed by
  row, rows sorted in place: the candidates of gradient growth.

Arguments are not validated here: callers hand in canonical patterns they built or checked.
"""
import numpy as np

from . import _kernels

__all__ = ["transpose_pattern", "empty_pattern", "row_ids", "drop_entries", "merge_patterns", "contains",
           "random_positions", "random_row_counts", "bucket_rows", "sort_rows", "draw_free_positions",
           "draw_free_positions_in"]


def transpose_pattern(indptr, indices, n_cols):
    """Pattern of the transpose of a canonical CSR pattern, and the map between the two orders.

    Parameters
    ----------
    indptr, indices : ndarray of int32 or int64 (same dtype)
        A canonical CSR pattern with ``len(indptr) - 1`` rows and ``n_cols`` columns.
    n_cols : int
        Number of columns.

    Returns
    -------
    t_indptr, t_indices, perm : ndarray
        CSR pattern of the transpose (sorted) and ``perm`` with entry ``q`` of the transpose being
        entry ``perm[q]`` of the input.
    """
    idx_dtype = indices.dtype
    t_indptr = np.empty(n_cols + 1, dtype=idx_dtype)
    t_indices = np.empty(indices.shape[0], dtype=idx_dtype)
    perm = np.empty(indices.shape[0], dtype=idx_dtype)
    _kernels.csr_transpose_index(indptr, indices, n_cols, t_indptr, t_indices, perm)
    return t_indptr, t_indices, perm


def row_ids(indptr):
    """Row of every stored entry of a CSR pattern (dtype of ``indptr``)."""
    return np.repeat(np.arange(indptr.shape[0] - 1, dtype=indptr.dtype), np.diff(indptr))


def drop_entries(indptr, indices, keep, n_threads):
    """The entries of a CSR pattern with ``keep`` set."""
    n = int(np.count_nonzero(keep))
    out_indptr = np.empty_like(indptr)
    out_indices = np.empty(n, indices.dtype)
    _kernels.csr_pattern_compact(indptr, indices, keep.view(np.uint8), out_indptr, out_indices, n_threads)
    return out_indptr, out_indices


def merge_patterns(a, b, n_threads):
    """Union of two disjoint sorted CSR patterns ``a`` and ``b`` (tuples ``(indptr, indices)``)."""
    out_indptr = np.empty_like(a[0])
    out_indices = np.empty(a[1].shape[0] + b[1].shape[0], a[1].dtype)
    _kernels.csr_pattern_merge(a[0], a[1], b[0], b[1], out_indptr, out_indices, n_threads)
    return out_indptr, out_indices


def sort_rows(indptr, indices, n_threads):
    """Sort the indices of every row of a CSR pattern in place (``indptr`` and ``indices`` of one integer
    dtype, any values); returns how many are repeats of the one before them in their row."""
    if not indices.shape[0]:
        return 0
    return int(_kernels.csr_sort_rows(indptr, indices, np.empty(indices.shape[0], np.uint8), n_threads))


def contains(pattern, rows, cols, n_threads):
    """Which of the positions ``(rows[k], cols[k])`` the CSR ``pattern`` (``indptr``, ``indices``) stores.

    ``rows`` and ``cols`` are index arrays of one length, in range (unchecked); returns a bool array of
    that length. Each row's indices must be sorted (a canonical pattern): one binary search per position.
    """
    out = np.empty(rows.shape[0], dtype=np.uint8)
    if rows.shape[0] and pattern[1].shape[0]:
        _kernels.csr_contains(pattern[0], pattern[1], rows, cols, out, n_threads)
    else:
        out[:] = 0
    return out.view(bool)


def random_positions(rng, n_rows, n_cols, count, *, cols=None, index_dtype=np.int64):
    """``count`` uniform random cells as a CSR pattern bucketed by row, in O(count).

    Unlike :func:`draw_free_positions` nothing is rejected: cells may repeat or be stored already,
    and a row's columns are not sorted (fine for the SDDMM kernel, not a canonical pattern). ``cols``:
    draw the columns uniformly from these instead of ``[0, n_cols)``.
    """
    idx = np.dtype(index_dtype)
    rows = rng.integers(0, n_rows, size=count, dtype=idx)
    if cols is None:
        picked = rng.integers(0, n_cols, size=count, dtype=idx)
    else:
        picked = np.asarray(cols, dtype=idx)[rng.integers(0, len(cols), size=count)]
    indptr = np.empty(n_rows + 1, idx)
    indices = np.empty(count, idx)
    _kernels.coo_to_csr(rows, picked, indptr, indices)
    return indptr, indices


def random_row_counts(rng, n_rows, count):
    """How many of ``count`` uniform random cells fall in each row (int64, ``n_rows`` of them).

    The counts of the rows of ``count`` independent uniform draws (multinomial), without the draws
    themselves: with as many uniform columns drawn for each row, ``count`` uniform random cells in any
    order of the rows (gradient growth streams its candidates so, by chunks of rows). O(n_rows) memory
    and O(n_rows + count) time.
    """
    n_rows, count = int(n_rows), int(count)
    counts = np.zeros(n_rows, np.int64)
    if n_rows == 0 or count == 0:
        return counts
    if count >= 32 * n_rows:  # one binomial a row
        counts[:] = rng.multinomial(count, np.full(n_rows, 1.0 / n_rows))
    else:  # fewer draws than that: count them
        piece = max(1 << 20, n_rows)
        for lo in range(0, count, piece):
            counts += np.bincount(rng.integers(0, n_rows, size=min(piece, count - lo)), minlength=n_rows)
    return counts


def bucket_rows(n_rows, rows, cols):
    """The CSR pattern ``(indptr, indices)`` of the entries ``(rows[k], cols[k])`` (in range, unchecked),
    bucketed by row with a counting sort in O(n_rows + len(rows)); a row's columns keep their order.
    Both have the dtype of ``cols``."""
    indptr = np.empty(int(n_rows) + 1, cols.dtype)
    indices = np.empty(cols.shape[0], cols.dtype)
    _kernels.coo_to_csr(np.asarray(rows, dtype=cols.dtype), cols, indptr, indices)
    return indptr, indices


def draw_free_positions(rng, n_rows, n_cols, count, indptr=None, indices=None, *, index_dtype=None,
                        n_threads=1):
    """Draw ``count`` distinct positions uniformly among those not stored in a CSR pattern.

    Rows and columns are drawn independently and uniformly (a uniform cell), bucketed by row with a
    counting sort, sorted inside each row in parallel, and the repeats and positions already stored or
    already drawn are rejected; the missing ones are drawn again. That is sampling without
    replacement, so the result is a uniform subset of the free cells. O(count) work per round plus
    short sorts, and no ``n_rows x n_cols`` temporary. When few cells are free (at most
    ``4 * count``) they are enumerated instead.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_rows, n_cols : int
        Shape of the matrix.
    count : int
        Number of positions to draw.
    indptr, indices : ndarray or None
        The canonical CSR pattern to avoid (None: an empty matrix).
    index_dtype : dtype, optional
        Index dtype of the result (default: that of ``indices``, else int64).
    n_threads : int

    Returns
    -------
    new_indptr, new_indices : ndarray
        Canonical CSR pattern (``n_rows + 1`` offsets) of the drawn positions.
    """
    idx_dtype = np.dtype(index_dtype or (np.int64 if indices is None else indices.dtype))
    if indptr is None:
        indptr = np.zeros(n_rows + 1, idx_dtype)
        indices = np.empty(0, idx_dtype)
    total = int(n_rows) * int(n_cols)
    present = int(indices.shape[0])
    free = total - present
    if count > free:
        raise ValueError(f"cannot place {count} new connections: only {free} free positions")
    if count and free <= 4 * count:
        # dense regime: enumerate the free cells (at most present + 4 * count of them) and pick
        taken = np.zeros(total, dtype=bool)
        taken[row_ids(indptr).astype(np.int64) * n_cols + indices] = True
        free_keys = np.flatnonzero(~taken)
        keys = np.sort(free_keys[rng.choice(free_keys.size, count, replace=False)])
        new_indptr = np.zeros(n_rows + 1, idx_dtype)
        np.cumsum(np.bincount(keys // n_cols, minlength=n_rows), out=new_indptr[1:])
        return new_indptr, (keys % n_cols).astype(idx_dtype)
    existing = (indptr, indices)
    drawn = (np.zeros(n_rows + 1, idx_dtype), np.empty(0, idx_dtype))
    while drawn[1].shape[0] < count:
        need = count - drawn[1].shape[0]
        rows = rng.integers(0, n_rows, size=need, dtype=idx_dtype)
        cols = rng.integers(0, n_cols, size=need, dtype=idx_dtype)
        c_indptr = np.empty(n_rows + 1, idx_dtype)
        c_indices = np.empty(need, idx_dtype)
        _kernels.coo_to_csr(rows, cols, c_indptr, c_indices)
        del rows, cols
        keep = np.empty(need, np.uint8)
        _kernels.csr_sort_rows(c_indptr, c_indices, keep, n_threads)
        keep = keep.view(bool)
        c_rows = row_ids(c_indptr)
        keep &= ~contains(existing, c_rows, c_indices, n_threads)
        keep &= ~contains(drawn, c_rows, c_indices, n_threads)
        del c_rows
        drawn = merge_patterns(drawn, drop_entries(c_indptr, c_indices, keep, n_threads), n_threads)
    return drawn


def draw_free_positions_in(rng, n_rows, n_cols, count, indptr, indices, cols, *, n_threads=1):
    """Like :func:`draw_free_positions`, with the columns of the new positions taken from ``cols`` first.

    As many of the ``count`` positions as there are free cells in the columns ``cols`` are drawn
    uniformly among those cells; the rest (only when those columns are full) uniformly among the
    other free cells. Used to regrow a first layer's connections onto the inputs that are still
    active (see :meth:`set_cy.model.SparseNetwork.prune_inputs`).

    Parameters
    ----------
    rng, n_rows, n_cols, count, indptr, indices, n_threads
        As for :func:`draw_free_positions` (``indptr``, ``indices``: the canonical pattern to avoid).
    cols : ndarray of int, sorted, distinct, in ``[0, n_cols)``
        The preferred columns.

    Returns
    -------
    new_indptr, new_indices : ndarray
        Canonical CSR pattern of the drawn positions.
    """
    cols = np.asarray(cols, dtype=indices.dtype)
    m = int(cols.shape[0])
    # the pattern restricted to ``cols``, with columns renumbered 0..m-1 (the order is kept: cols is sorted)
    lookup = np.full(n_cols, -1, dtype=np.int64)
    lookup[cols] = np.arange(m)
    sub = lookup[indices]
    keep = sub >= 0
    c_indptr, _ = drop_entries(indptr, indices, keep, n_threads)
    c_indices = sub[keep].astype(indices.dtype)
    free_in = n_rows * m - int(c_indices.shape[0])
    first = min(int(count), free_in)
    a_indptr, a_indices = draw_free_positions(rng, n_rows, m, first, c_indptr, c_indices, n_threads=n_threads)
    drawn = (a_indptr, cols[a_indices])
    rest = int(count) - first
    if rest:
        union = merge_patterns((indptr, indices), drawn, n_threads)
        more = draw_free_positions(rng, n_rows, n_cols, rest, *union, n_threads=n_threads)
        drawn = merge_patterns(drawn, more, n_threads)
    return drawn


def empty_pattern(n_rows, dtype):
    """The CSR pattern ``(indptr, indices)`` of ``n_rows`` empty rows, of integer ``dtype``."""
    return np.zeros(int(n_rows) + 1, dtype), np.empty(0, dtype)
