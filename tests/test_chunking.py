"""Long rows walked chunk by chunk of their operand (``_kernels.set_chunking``) against dense references.

The default thresholds only chunk operands of megabytes; here chunking is forced on small layers, with
chunks of 1, 3 and 17 operand rows, so every path (a row's first chunk, chunks it has no entry in, the
last partial chunk) runs.
"""
import numpy as np
import pytest
from conftest import DTYPES, INDEX_DTYPES, THREADS, random_csr, tol

from set_cy import _kernels, ops
from set_cy.model import SparseNetwork


@pytest.fixture
def chunked(request):
    """Chunks of ``request.param`` operand rows for every loop (restored afterwards)."""
    saved = _kernels.get_chunking()
    yield lambda row_bytes: _kernels.set_chunking(request.param * row_bytes, 0, 0)
    _kernels.set_chunking(*saved)


def _setup(dtype, index_dtype, batch, seed=0):
    # a layer stored as the CSR of W^T: 6 output rows over 50 inputs, with empty rows and columns
    Wt = random_csr(6, 50, 0.5, dtype, index_dtype, seed=seed, empty_rows=(2,), empty_cols=(0, 17, 49))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((50, batch)).astype(dtype)
    A = rng.standard_normal((6, batch)).astype(dtype)
    A[4] = 0  # a row of zero gradient (the update's shortcut)
    return Wt, X, A, rng


@pytest.mark.parametrize("chunked", [1, 3, 17], indirect=True)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("batch", [1, 5, 33])
def test_chunked_kernels_match_dense(chunked, dtype, index_dtype, batch):
    Wt, X, A, rng = _setup(dtype, index_dtype, batch)
    chunked(batch * np.dtype(dtype).itemsize)
    assert _kernels.chunk_rows(6, Wt.nnz, 50, batch * np.dtype(dtype).itemsize) > 0
    dense = Wt.toarray()
    bias = rng.standard_normal(6).astype(dtype)
    coo = Wt.tocoo()
    g_ref = (A @ X.T)[coo.row, coo.col]
    v0 = rng.standard_normal(Wt.nnz).astype(dtype)
    kw = dict(lr=0.03, momentum=0.8, weight_decay=1e-3)
    w_ref, v_ref = Wt.data.copy(), v0.copy()
    ops.momentum_update(w_ref, v_ref, g_ref.astype(dtype), **kw)
    results = []
    for nt in THREADS + [7]:  # more threads than rows: one row each
        out = np.full((6, batch), np.nan, dtype)
        _kernels.spmm(Wt.indptr, Wt.indices, Wt.data, None, X, out, bias, nt)
        np.testing.assert_allclose(out, dense @ X + bias[:, None], **tol(dtype))
        g, s = np.full(Wt.nnz, np.nan, dtype), np.full(6, np.nan, dtype)
        _kernels.sddmm(Wt.indptr, Wt.indices, A, X, g, nt, s)
        np.testing.assert_allclose(g, g_ref, **tol(dtype))
        np.testing.assert_allclose(s, A.sum(axis=1), **tol(dtype))
        w, v = Wt.data.copy(), v0.copy()
        _kernels.sddmm_momentum_update(Wt.indptr, Wt.indices, A, X, w, v, kw["lr"], kw["momentum"],
                                       kw["weight_decay"], False, nt)
        np.testing.assert_allclose(v, v_ref, **tol(dtype))
        np.testing.assert_allclose(w, w_ref, **tol(dtype))
        dx = np.full((50, batch), np.nan, dtype)
        _kernels.spmm_scatter_owned(Wt.indptr, Wt.indices, Wt.data, A, dx, nt)
        np.testing.assert_allclose(dx, dense.T @ A, **tol(dtype))
        results.append((out, g, s, w, v, dx))
    for res in results[1:]:  # each row is computed the same way by whichever thread owns it
        for a, b in zip(res, results[0]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("chunked", [3], indirect=True)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
def test_chunked_sddmm_and_scatter_are_the_unchunked_results(chunked, index_dtype):
    """Chunks only split each row's connections into consecutive pieces: the SDDMM's dot products and each
    scattered row's order of additions are the same as without chunks (the forward's partial sums and the
    fused update's contractions may round differently)."""
    Wt, X, A, _ = _setup(np.float64, index_dtype, 9, seed=3)
    g0, dx0 = np.empty(Wt.nnz), np.empty((50, 9))
    _kernels.sddmm(Wt.indptr, Wt.indices, A, X, g0, 2)
    _kernels.spmm_scatter_owned(Wt.indptr, Wt.indices, Wt.data, A, dx0, 2)
    chunked(9 * 8)
    g1, dx1 = np.empty(Wt.nnz), np.empty((50, 9))
    _kernels.sddmm(Wt.indptr, Wt.indices, A, X, g1, 2)
    _kernels.spmm_scatter_owned(Wt.indptr, Wt.indices, Wt.data, A, dx1, 2)
    np.testing.assert_array_equal(g1, g0)
    np.testing.assert_array_equal(dx1, dx0)


@pytest.mark.parametrize("chunked", [1, 4], indirect=True)
@pytest.mark.parametrize("batch", [3, 40])
def test_chunked_products_through_a_permutation_and_on_bfloat16_rows(chunked, batch):
    Wt, X, A, rng = _setup(np.float32, np.int32, batch, seed=1)
    t_indptr, t_indices, perm = ops.transpose_pattern(Wt.indptr, Wt.indices, 50)
    # the transposed product reads the values through perm; its 50 rows (inputs) span the 6 outputs of A
    chunked(batch * 4)
    dx = np.empty((50, batch), np.float32)
    _kernels.spmm(t_indptr, t_indices, Wt.data, perm, A, dx, None, 2)
    np.testing.assert_allclose(dx, Wt.toarray().T @ A, **tol(np.float32))
    X16 = np.empty(X.shape, np.uint16)
    _kernels.to_bfloat16(X, X16, 1)
    Xr = (X16.astype(np.uint32) << 16).view(np.float32)  # the rounded values the kernels read
    chunked(batch * 2)  # the chunk is counted in the gathered rows' own bytes
    assert _kernels.chunk_rows(6, Wt.nnz, 50, batch * 2) > 0
    out = np.empty((6, batch), np.float32)
    _kernels.spmm(Wt.indptr, Wt.indices, Wt.data, None, X16, out, None, 2)
    np.testing.assert_allclose(out, Wt.toarray() @ Xr, **tol(np.float32))
    g = np.empty(Wt.nnz, np.float32)
    _kernels.sddmm(Wt.indptr, Wt.indices, A, X16, g, 3)
    coo = Wt.tocoo()
    np.testing.assert_allclose(g, (A @ Xr.T)[coo.row, coo.col], **tol(np.float32))


def test_chunking_decision_and_settings():
    saved = _kernels.get_chunking()
    assert saved == (1 << 20, 4 << 20, 64)
    # the 1 M-neuron network's output layer (315k inputs x 18 outputs, dense) at batch 32: chunks of 1 MiB
    assert _kernels.chunk_rows(18, 18 * 315_000, 315_000, 32 * 4) == (1 << 20) // 128
    # its hidden layers (40 connections per row over 315k inputs): a row has almost nothing in a chunk
    assert _kernels.chunk_rows(315_000, 12_600_000, 315_000, 128) == 0
    # nor long rows that are sparse: 1000 connections over 1 M inputs, 8 of them in a chunk of 8192
    assert _kernels.chunk_rows(100, 100_000, 1_000_000, 128) == 0
    # operands under 4 MiB stay in the L2 anyway
    assert _kernels.chunk_rows(10, 10_000, 1000, 128) == 0
    assert _kernels.chunk_rows(0, 0, 315_000, 128) == 0
    with pytest.raises(ValueError, match="chunk_bytes"):
        _kernels.set_chunking(0)
    with pytest.raises(ValueError, match="min_per_row"):
        _kernels.set_chunking(1 << 20, 0, -1)
    assert _kernels.get_chunking() == saved


@pytest.mark.parametrize("chunked", [2], indirect=True)
@pytest.mark.parametrize("storage", ["full", "compact"])
def test_network_trains_the_same_with_chunked_loops(chunked, storage):
    """A few training steps with every loop chunked equal those without, up to rounding."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 40)).astype(np.float32), rng.integers(0, 3, 64)

    def run():
        net = SparseNetwork([40, 30, 3], epsilon=4, seed=1, dropout=0.0, storage=storage)
        for start in range(0, 64, 16):
            net.train_batch(X, y, np.arange(start, start + 16, dtype=np.int64), learning_rate=0.05)
        return [layer.data.copy() for layer in net.layers]

    _kernels.set_chunking()  # the thresholds: nothing here is chunked
    ref = run()
    chunked(16 * 4)
    for a, b in zip(run(), ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
