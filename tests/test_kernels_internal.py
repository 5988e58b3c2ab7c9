"""Private kernels used by the layers (fused update, SET pattern helpers) against NumPy references."""
import numpy as np
import pytest
from conftest import DTYPES, INDEX_DTYPES, THREADS, random_csr, tol

from set_cy import _kernels, ops


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("batch", [1, 5, 16, 32, 64, 70, 128, 130])  # 16, 32, 64, 128: compiled-in widths
def test_fused_sddmm_update_equals_unfused(dtype, index_dtype, nesterov, batch):
    # layer stored as CSR of W^T: rows = outputs, A = dY (n_out x batch), X = inputs (n_in x batch)
    Wt = random_csr(23, 31, 0.3, dtype, index_dtype, seed=batch, empty_rows=(4,))
    rng = np.random.default_rng(batch)
    A = rng.standard_normal((23, batch)).astype(dtype)
    A[::3] = 0  # rows of zero gradient take the kernel's shortcut
    X = rng.standard_normal((31, batch)).astype(dtype)
    v0 = rng.standard_normal(Wt.nnz).astype(dtype)
    kw = dict(lr=0.03, momentum=0.8, weight_decay=1e-3)
    g = np.empty(Wt.nnz, dtype)
    _kernels.sddmm(Wt.indptr, Wt.indices, A, X, g, 1)
    coo = Wt.tocoo()
    np.testing.assert_allclose(g, (A @ X.T)[coo.row, coo.col], **tol(dtype))
    w_ref, v_ref = Wt.data.copy(), v0.copy()
    ops.momentum_update(w_ref, v_ref, g, nesterov=nesterov, **kw)
    for nt in THREADS:
        w, v = Wt.data.copy(), v0.copy()
        _kernels.sddmm_momentum_update(Wt.indptr, Wt.indices, A, X, w, v, kw["lr"], kw["momentum"],
                                       kw["weight_decay"], nesterov, nt)
        np.testing.assert_allclose(v, v_ref, **tol(dtype))
        np.testing.assert_allclose(w, w_ref, **tol(dtype))


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
def test_transpose_pattern_and_permuted_product(index_dtype):
    W = random_csr(19, 27, 0.25, np.float64, index_dtype, seed=5, empty_rows=(0, 7), empty_cols=(26,))
    t_indptr, t_indices, perm = ops.transpose_pattern(W.indptr, W.indices, W.shape[1])
    ref = W.T.tocsr()
    ref.sort_indices()
    np.testing.assert_array_equal(t_indptr, ref.indptr)
    np.testing.assert_array_equal(t_indices, ref.indices)
    np.testing.assert_array_equal(W.data[perm], ref.data)
    assert t_indptr.dtype == t_indices.dtype == perm.dtype == index_dtype
    # the product with values read through the permutation equals the transposed product
    D = np.random.default_rng(0).standard_normal((W.shape[0], 9))
    out = np.empty((W.shape[1], 9))
    _kernels.spmm(t_indptr, t_indices, W.data, perm, D, out, None, 2)
    np.testing.assert_allclose(out, W.toarray().T @ D, **tol(np.float64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("batch", [0, 1, 7, 16, 32, 33, 64, 128, 130])
def test_sddmm_row_sums_in_the_same_pass(dtype, index_dtype, batch):
    """``out_rowsum`` gets the bias gradient ``A.sum(1)`` of every row (empty ones too), with or without ``out``."""
    Wt = random_csr(41, 29, 0.2, dtype, index_dtype, seed=batch, empty_rows=(0, 5, 40))
    rng = np.random.default_rng(batch)
    A = rng.standard_normal((41, batch)).astype(dtype)
    X = rng.standard_normal((29, batch)).astype(dtype)
    coo = Wt.tocoo()
    for nt in THREADS:
        g, s = np.full(Wt.nnz, np.nan, dtype), np.full(41, np.nan, dtype)
        _kernels.sddmm(Wt.indptr, Wt.indices, A, X, g, nt, s)
        np.testing.assert_allclose(g, (A @ X.T)[coo.row, coo.col], **tol(dtype))
        np.testing.assert_allclose(s, A.sum(axis=1), **tol(dtype))
        only = np.full(41, np.nan, dtype)
        _kernels.sddmm(Wt.indptr, Wt.indices, A, X, np.empty(0, dtype), nt, only)
        np.testing.assert_array_equal(only, s)


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
def test_pattern_outside_matches_numpy(index_dtype):
    """The per-call range check of the torch bridge: 0 for a valid pattern, the first bad array, -1 for lengths."""
    W = random_csr(300, 200, 0.05, np.float32, index_dtype, seed=3, empty_rows=(0, 299))
    arrays = [W.indptr, W.indices, *ops.transpose_pattern(W.indptr, W.indices, W.shape[1])]
    n_in, n_out = W.shape[1], W.shape[0]  # W here is the storage (rows = outputs), as in a layer
    assert _kernels.pattern_outside(*arrays, n_in, n_out) == 0
    nnz = W.nnz
    highs = (nnz, n_in - 1, nnz, n_out - 1, nnz - 1)
    rng = np.random.default_rng(0)
    for pos, hi in enumerate(highs):
        for bad in (-1, hi + 1, np.iinfo(index_dtype).max, np.iinfo(index_dtype).min):
            a = [x.copy() for x in arrays]
            a[pos][rng.integers(len(a[pos]))] = bad
            ref = next(k + 1 for k, (x, h) in enumerate(zip(a, highs)) if x.min() < 0 or x.max() > h)
            assert _kernels.pattern_outside(*a, n_in, n_out) == ref == pos + 1
            # a forward product reads indptr and indices alone: the others' ranges are not its business
            assert _kernels.pattern_outside(*a, n_in, n_out, False) == (ref if pos < 2 else 0)
        a = list(arrays)
        a[pos] = a[pos][:-1]
        assert _kernels.pattern_outside(*a, n_in, n_out) == -1
        assert _kernels.pattern_outside(*a, n_in, n_out, False) == -1  # lengths are checked either way
    empty = [np.zeros(n_out + 1, index_dtype), np.zeros(0, index_dtype), np.zeros(n_in + 1, index_dtype),
             np.zeros(0, index_dtype), np.zeros(0, index_dtype)]
    assert _kernels.pattern_outside(*empty, n_in, n_out) == 0
    with pytest.raises(ValueError):  # mixed index dtypes
        _kernels.pattern_outside(arrays[0], arrays[1].astype(np.int64 if index_dtype == np.int32 else np.int32),
                                 *arrays[2:], n_in, n_out)


@pytest.mark.parametrize("dtype", DTYPES)
def test_spmm_bias(dtype):
    W = random_csr(8, 6, 0.4, dtype, seed=1, empty_rows=(3,))
    X = np.random.default_rng(1).standard_normal((6, 4)).astype(dtype)
    b = np.arange(8, dtype=dtype)
    out = np.empty((8, 4), dtype)
    _kernels.spmm(W.indptr, W.indices, W.data, None, X, out, b, 2)
    np.testing.assert_allclose(out, W.toarray() @ X + b[:, None], **tol(dtype))


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("nt", THREADS)
def test_compact_contains_merge(index_dtype, nt):
    rng = np.random.default_rng(nt)
    W = random_csr(15, 40, 0.3, np.float32, index_dtype, seed=nt, empty_rows=(2,))
    vel = rng.standard_normal(W.nnz).astype(np.float32)
    keep = (rng.random(W.nnz) < 0.6).astype(np.uint8)
    keep[W.indptr[5]:W.indptr[6]] = 0  # a row that loses everything
    coo = W.tocoo()
    sel = keep.astype(bool)
    rows_kept = coo.row[sel]
    # the pattern alone, into new arrays
    p_indptr = np.empty_like(W.indptr)
    p_indices = np.empty(int(keep.sum()), index_dtype)
    _kernels.csr_pattern_compact(W.indptr, W.indices, keep, p_indptr, p_indices, nt)
    # pattern, values and velocities in place: the kept entries at the front
    k_indptr, k_indices, k_data, k_vel = W.indptr.copy(), W.indices.copy(), W.data.copy(), vel.copy()
    n = _kernels.csr_compact_inplace(k_indptr, k_indices, k_data, k_vel, keep)
    assert n == sel.sum()
    np.testing.assert_array_equal(np.diff(k_indptr), np.bincount(rows_kept, minlength=15))
    np.testing.assert_array_equal(k_indptr, p_indptr)
    np.testing.assert_array_equal(k_indices[:n], W.indices[sel])
    np.testing.assert_array_equal(p_indices, W.indices[sel])
    np.testing.assert_array_equal(k_data[:n], W.data[sel])
    np.testing.assert_array_equal(k_vel[:n], vel[sel])

    # membership of every cell of the matrix against the dense mask of the kept pattern
    kept_dense = np.zeros((15, 40), bool)
    kept_dense[rows_kept, W.indices[sel]] = True
    rr, cc = np.meshgrid(np.arange(15), np.arange(40), indexing="ij")
    out = np.empty(rr.size, np.uint8)
    _kernels.csr_contains(k_indptr, k_indices[:n], rr.ravel().astype(index_dtype), cc.ravel().astype(index_dtype),
                          out, nt)
    np.testing.assert_array_equal(out.astype(bool), kept_dense.ravel())

    # merge in place with a disjoint new pattern: union, sorted, new entries have zero velocity
    free_r, free_c = np.nonzero(~kept_dense)
    pick = np.sort(rng.choice(free_r.size, 25, replace=False))
    new_rows, new_cols = free_r[pick], free_c[pick]
    b_indptr = np.concatenate([[0], np.cumsum(np.bincount(new_rows, minlength=15))]).astype(index_dtype)
    b_data = rng.standard_normal(25).astype(np.float32)
    dense_w = np.zeros((15, 40), np.float32)
    dense_v = np.zeros((15, 40), np.float32)
    dense_w[rows_kept, k_indices[:n]] = k_data[:n]
    dense_v[rows_kept, k_indices[:n]] = k_vel[:n]
    dense_w[new_rows, new_cols] = b_data
    m = n + 25
    assert m <= W.nnz  # the arrays have room for the union
    o_indptr, o_indices, o_data, o_vel = k_indptr, k_indices[:m], k_data[:m], k_vel[:m]
    _kernels.csr_merge_inplace(o_indptr, o_indices, o_data, o_vel, b_indptr, new_cols.astype(index_dtype), b_data)
    assert o_indptr[-1] == m
    rows_out = np.repeat(np.arange(15), np.diff(o_indptr))
    mask = np.zeros((15, 40), bool)
    mask[rows_out, o_indices] = True
    np.testing.assert_array_equal(mask, kept_dense | np.isin(np.arange(600).reshape(15, 40),
                                                               new_rows * 40 + new_cols))
    np.testing.assert_array_equal(o_data, dense_w[rows_out, o_indices])
    np.testing.assert_array_equal(o_vel, dense_v[rows_out, o_indices])
    # the pattern-only merge gives the same union
    u_indptr = np.empty_like(p_indptr)
    u_indices = np.empty(m, index_dtype)
    _kernels.csr_pattern_merge(p_indptr, p_indices, b_indptr, new_cols.astype(index_dtype), u_indptr, u_indices, nt)
    np.testing.assert_array_equal(u_indptr, o_indptr)
    np.testing.assert_array_equal(u_indices, o_indices)
    for r in range(15):
        seg = o_indices[o_indptr[r]:o_indptr[r + 1]]
        assert np.all(np.diff(seg) > 0)


def test_build_info():
    import set_cy
    assert isinstance(set_cy.openmp_enabled(), bool)
    assert set_cy.max_threads() >= 1
    assert isinstance(set_cy.__version__, str) and set_cy.__version__[0].isdigit()


@pytest.mark.parametrize("kind,chunk", [("dynamic", 1), ("dynamic", 16), ("guided", 0), ("static", 4)])
def test_row_schedules_give_identical_results(kind, chunk):
    W = random_csr(300, 200, 0.05, np.float32, seed=9)
    X = np.random.default_rng(2).standard_normal((16, 300)).astype(np.float32)
    ref = ops.sparse_matmul(X, W, n_threads=2)
    before = _kernels.get_row_schedule()
    try:
        _kernels.set_row_schedule(kind, chunk)
        assert _kernels.get_row_schedule() == (kind, chunk)
        np.testing.assert_array_equal(ops.sparse_matmul(X, W, n_threads=2), ref)
    finally:
        _kernels.set_row_schedule(*before)


def test_row_schedule_errors():
    with pytest.raises(ValueError, match="kind must be one of"):
        _kernels.set_row_schedule("fastest")
    with pytest.raises(ValueError, match="chunk must be >= 0"):
        _kernels.set_row_schedule("dynamic", -1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_transpose(dtype):
    X = np.random.default_rng(0).standard_normal((50, 700)).astype(dtype)
    rows = np.random.default_rng(1).integers(0, 50, 37).astype(np.int64)
    for nt in THREADS:
        out = np.empty((700, 37), dtype)
        _kernels.gather_transpose(X, rows, out, nt)
        np.testing.assert_array_equal(out, X[rows].T)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_dropout_and_backward(dtype):
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((300, 130)).astype(dtype)
    rand = rng.integers(0, 256, Z.shape).astype(np.uint8)
    ref = np.maximum(Z, 0) * (rand >= 77) * dtype(256 / 179)
    D = rng.standard_normal(Z.shape).astype(dtype)
    for nt in THREADS:
        z = Z.copy()
        _kernels.relu_dropout(z, rand, 77, 256 / 179, nt)
        np.testing.assert_allclose(z, ref, **tol(dtype))
        z = Z.copy()
        _kernels.relu_dropout(z, None, 0, 1.0, nt)
        np.testing.assert_array_equal(z, np.maximum(Z, 0))
        d = D.copy()
        _kernels.relu_backward(d, ref, 2.0, nt)
        np.testing.assert_allclose(d, np.where(ref > 0, D * 2, 0), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_update_with_bias(dtype):
    Wt = random_csr(13, 17, 0.3, dtype, np.int32, seed=4)
    rng = np.random.default_rng(4)
    A = rng.standard_normal((13, 9)).astype(dtype)
    X = rng.standard_normal((17, 9)).astype(dtype)
    w, v = Wt.data.copy(), np.zeros(Wt.nnz, dtype)
    b, bv = rng.standard_normal(13).astype(dtype), rng.standard_normal(13).astype(dtype)
    b_ref, bv_ref = b.copy(), bv.copy()
    ops.momentum_update(b_ref, bv_ref, A.sum(axis=1), lr=0.1, momentum=0.5, weight_decay=0.0)
    _kernels.sddmm_momentum_update(Wt.indptr, Wt.indices, A, X, w, v, 0.1, 0.5, 0.01, False, 2, b, bv)
    np.testing.assert_allclose(b, b_ref, **tol(dtype))
    np.testing.assert_allclose(bv, bv_ref, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("batch", [1, 2, 3, 5, 8, 9, 33])
def test_spmm_scatter_equals_transposed_product(dtype, index_dtype, batch):
    Wt = random_csr(40, 70, 0.2, dtype, index_dtype, seed=batch, empty_rows=(3,), empty_cols=(5,))
    D = np.random.default_rng(batch).standard_normal((40, batch)).astype(dtype)
    D[::4] = 0  # rows that add nothing are skipped
    ref = Wt.toarray().T @ D
    outs = []
    for nt in THREADS:
        for parts in (1, 16):
            out = np.full((70, batch), np.nan, dtype)
            scratch = np.full((parts, 70 * batch + 3), np.nan, dtype)  # larger than needed, dirty
            _kernels.spmm_scatter(Wt.indptr, Wt.indices, Wt.data, D, out, scratch, nt)
            np.testing.assert_allclose(out, ref, **tol(dtype))
            if parts == 16:
                outs.append(out)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("batch", [1, 2, 3, 5, 8, 9, 33, 128])
def test_spmm_scatter_owned_equals_transposed_product(dtype, index_dtype, batch):
    Wt = random_csr(40, 70, 0.2, dtype, index_dtype, seed=batch, empty_rows=(3,), empty_cols=(5, 69))
    D = np.random.default_rng(batch).standard_normal((40, batch)).astype(dtype)
    D[::4] = 0  # rows that add nothing are skipped
    ref = Wt.toarray().T @ D
    outs = []
    for nt in THREADS + [7, 70, 200]:  # more threads than output rows: at most one row each
        out = np.full((70, batch), np.nan, dtype)  # dirty: every row is written, the empty ones with zeros
        _kernels.spmm_scatter_owned(Wt.indptr, Wt.indices, Wt.data, D, out, nt)
        np.testing.assert_allclose(out, ref, **tol(dtype))
        outs.append(out)
    for o in outs[1:]:  # each row is summed by one thread in storage order: no dependence on threads
        np.testing.assert_array_equal(o, outs[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_spmm_scatter_owned_degenerate(dtype):
    empty = random_csr(6, 9, 0.0, dtype, np.int32, seed=0)
    out = np.full((9, 4), np.nan, dtype)
    _kernels.spmm_scatter_owned(empty.indptr, empty.indices, empty.data, np.ones((6, 4), dtype), out, 2)
    np.testing.assert_array_equal(out, 0)
    W = random_csr(6, 9, 0.5, dtype, np.int32, seed=1)
    out = np.empty((9, 0), dtype)  # batch 0: nothing to write
    _kernels.spmm_scatter_owned(W.indptr, W.indices, W.data, np.ones((6, 0), dtype), out, 2)


def test_small_batch_paths_match_dense():
    # batch widths 1..8 have their own unrolled row kernels
    W = random_csr(50, 30, 0.3, np.float32, np.int32, seed=8)
    for batch in range(1, 10):
        rng = np.random.default_rng(batch)
        X = rng.standard_normal((batch, 50)).astype(np.float32)
        D = rng.standard_normal((batch, 30)).astype(np.float32)
        np.testing.assert_allclose(ops.sparse_matmul(X, W), X @ W.toarray(), **tol(np.float32))
        np.testing.assert_allclose(ops.sparse_matmul_t(D, W), D @ W.toarray().T, **tol(np.float32))
        coo = W.tocoo()
        np.testing.assert_allclose(ops.sddmm(X, D, W), (X.T @ D)[coo.row, coo.col], **tol(np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nt", THREADS)
@pytest.mark.parametrize("lo,hi", [(0, -1), (0, 70001), (12345, 70001), (70001, -1), (5, 5)])
def test_sum_partials_matches_numpy_in_row_order(dtype, nt, lo, hi):
    rng = np.random.default_rng(0)
    parts = rng.standard_normal((3, 100_003)).astype(dtype)
    out = np.full(parts.shape[1], 7, dtype)
    _kernels.sum_partials(parts, out, nt, lo, hi)
    stop = parts.shape[1] if hi < 0 else hi
    ref = (parts[0] + parts[1]) + parts[2]
    np.testing.assert_array_equal(out[lo:stop], ref[lo:stop])  # same order of additions: bitwise
    assert (out[:lo] == 7).all() and (out[stop:] == 7).all()
    _kernels.sum_partials(parts, parts[0], nt)  # in place, into the first slot
    np.testing.assert_array_equal(parts[0], ref)
