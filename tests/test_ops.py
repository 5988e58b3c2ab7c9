"""The public kernels (set_cy.ops) against dense NumPy references, and their argument checks."""
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import DTYPES, INDEX_DTYPES, THREADS, random_csr, tol
from hypothesis import given, settings
from hypothesis import strategies as st

import set_cy
from set_cy import _kernels, ops
from set_cy._validation import resolve_n_threads

# (n_in, n_out, batch, density, empty rows, empty cols)
SHAPES = [
    (1, 1, 1, 1.0, (), ()),
    (7, 5, 1, 0.5, (0,), (4,)),
    (30, 17, 3, 0.3, (2, 3), (0, 16)),
    (17, 30, 70, 0.2, (), (5,)),        # batch > one register block of float64
    (40, 25, 130, 0.1, (1,), ()),       # two full float32 blocks + tail
    (12, 9, 64, 0.0, (), ()),           # nnz = 0
    (64, 3, 5, 0.6, tuple(range(10)), ()),
]


def _case(shape, dtype, index_dtype, seed=0):
    n_in, n_out, batch, density, er, ec = shape
    W = random_csr(n_in, n_out, density, dtype, index_dtype, seed=seed, empty_rows=er, empty_cols=ec)
    rng = np.random.default_rng(seed + 1)
    X = rng.standard_normal((batch, n_in)).astype(dtype)
    D = rng.standard_normal((batch, n_out)).astype(dtype)
    return W, X, D


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
def test_products_and_sddmm_match_dense(shape, dtype, index_dtype):
    W, X, D = _case(shape, dtype, index_dtype)
    Wd = W.toarray()
    results = {}
    for nt in THREADS:
        Y = ops.sparse_matmul(X, W, n_threads=nt)
        dX = ops.sparse_matmul_t(D, W, n_threads=nt)
        g = ops.sddmm(X, D, W, n_threads=nt)
        assert Y.dtype == dX.dtype == g.dtype == dtype
        assert Y.flags.c_contiguous and dX.flags.c_contiguous
        np.testing.assert_allclose(Y, X @ Wd, **tol(dtype))
        np.testing.assert_allclose(dX, D @ Wd.T, **tol(dtype))
        coo = W.tocoo()
        np.testing.assert_allclose(g, (X.T @ D)[coo.row, coo.col], **tol(dtype))
        results[nt] = (Y, dX, g)
    # each thread owns whole rows: results are bit-identical whatever the thread count
    for nt in THREADS[1:]:
        for a, b in zip(results[THREADS[0]], results[nt]):
            np.testing.assert_array_equal(a, b)


def test_csr_matrix_and_int64_indptr_with_int32_indices():
    W = random_csr(20, 10, 0.3, np.float64, np.int32, seed=3)
    M = sp.csr_matrix(W)
    M.indptr = M.indptr.astype(np.int64)
    X = np.random.default_rng(0).standard_normal((4, 20))
    np.testing.assert_allclose(ops.sparse_matmul(X, M), X @ W.toarray(), **tol(np.float64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("n", [0, 1, 17, 100_003])
def test_momentum_update_formula(dtype, nesterov, n):
    rng = np.random.default_rng(n)
    w = rng.standard_normal(n).astype(dtype)
    v = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    lr, mu, wd = 0.05, 0.9, 2e-4
    v_ref = mu * v - lr * (g + wd * w)
    w_ref = w + (mu * v_ref - lr * (g + wd * w) if nesterov else v_ref)
    outs = []
    for nt in THREADS:
        w1, v1 = w.copy(), v.copy()
        assert ops.momentum_update(w1, v1, g, lr=lr, momentum=mu, weight_decay=wd, nesterov=nesterov,
                                   n_threads=nt) is None
        np.testing.assert_allclose(v1, v_ref, **tol(dtype))
        np.testing.assert_allclose(w1, w_ref, **tol(dtype))
        outs.append((w1, v1))
    for w1, v1 in outs[1:]:
        np.testing.assert_array_equal(w1, outs[0][0])
        np.testing.assert_array_equal(v1, outs[0][1])


@settings(max_examples=40, deadline=None)
@given(n_in=st.integers(1, 40), n_out=st.integers(1, 40), batch=st.integers(1, 140),
       density=st.floats(0.0, 1.0), seed=st.integers(0, 2**16), f64=st.booleans(), i64=st.booleans())
def test_property_against_dense(n_in, n_out, batch, density, seed, f64, i64):
    dtype = np.float64 if f64 else np.float32
    W = random_csr(n_in, n_out, density, dtype, np.int64 if i64 else np.int32, seed=seed)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, n_in)).astype(dtype)
    D = rng.standard_normal((batch, n_out)).astype(dtype)
    Wd = W.toarray()
    t = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else tol(dtype)
    np.testing.assert_allclose(ops.sparse_matmul(X, W, n_threads=2), X @ Wd, **t)
    np.testing.assert_allclose(ops.sparse_matmul_t(D, W, n_threads=2), D @ Wd.T, **t)
    coo = W.tocoo()
    np.testing.assert_allclose(ops.sddmm(X, D, W, n_threads=2), (X.T @ D)[coo.row, coo.col], **t)


def test_nan_input_does_not_crash():
    W = random_csr(5, 4, 0.5, np.float64, seed=1)
    X = np.full((2, 5), np.nan)
    Y = ops.sparse_matmul(X, W)
    assert Y.shape == (2, 4)


# ------------------------------------------------------------------------------------------------
# argument checks
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def good():
    W = random_csr(6, 4, 0.5, np.float32, seed=2)
    rng = np.random.default_rng(0)
    return W, rng.standard_normal((3, 6)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)


def test_errors_on_X(good):
    W, X, D = good
    with pytest.raises(TypeError, match="X must be a numpy.ndarray"):
        ops.sparse_matmul(X.tolist(), W)
    with pytest.raises(TypeError, match="X must be a dense numpy array"):
        ops.sparse_matmul(sp.csr_array(X), W)
    with pytest.raises(ValueError, match="X must be 2-D"):
        ops.sparse_matmul(X[0], W)
    with pytest.raises(TypeError, match="X must have dtype float32 or float64, got int64"):
        ops.sparse_matmul(X.astype(np.int64), W)
    with pytest.raises(TypeError, match="dtypes must not be mixed"):
        ops.sparse_matmul(X.astype(np.float64), W)
    with pytest.raises(ValueError, match="X has 5 columns but W has 6 rows"):
        ops.sparse_matmul(X[:, :5], W)


def test_errors_on_W(good):
    W, X, D = good
    with pytest.raises(TypeError, match="W must be a scipy.sparse CSR"):
        ops.sparse_matmul(X, W.toarray())
    with pytest.raises(TypeError, match="CSR format, got 'csc'"):
        ops.sparse_matmul(X, W.tocsc())
    with pytest.raises(TypeError, match="W must have dtype float32 or float64"):
        ops.sparse_matmul(X, W.astype(np.int32))
    unsorted = sp.csr_array((np.ones(2, np.float32), np.array([1, 0]), np.array([0, 2, 2, 2, 2, 2, 2])),
                            shape=(6, 4))
    with pytest.raises(ValueError, match="canonical"):
        ops.sparse_matmul(X, unsorted)
    dup = sp.csr_array((np.ones(2, np.float32), np.array([1, 1]), np.array([0, 2, 2, 2, 2, 2, 2])),
                       shape=(6, 4))
    with pytest.raises(ValueError, match="canonical"):
        ops.sparse_matmul(X, dup)
    bad = W.copy()
    bad.indices[0] = 99
    with pytest.raises(ValueError, match="column indices outside"):
        ops.sparse_matmul(X, bad)
    bad = W.copy()
    bad.indptr = bad.indptr[::-1].copy()
    with pytest.raises(ValueError, match="not a valid CSR structure"):
        ops.sparse_matmul_t(D, bad)
    bad = W.copy()
    bad.indices = bad.indices.astype(np.int16)
    with pytest.raises(TypeError, match="int32 or int64 indices"):
        ops.sddmm(X, D, bad)


def test_errors_on_shapes_and_threads(good):
    W, X, D = good
    with pytest.raises(ValueError, match="D has 3 columns but W has 4 columns"):
        ops.sparse_matmul_t(D[:, :3], W)
    with pytest.raises(ValueError, match="same number of rows"):
        ops.sddmm(X, D[:2], W)
    with pytest.raises(ValueError, match="shapes do not match"):
        ops.sddmm(X, D[:, :3], W)
    with pytest.raises(TypeError, match="D has dtype float64"):
        ops.sddmm(X, D.astype(np.float64), W)
    with pytest.raises(ValueError, match="n_threads must be >= 1"):
        ops.sparse_matmul(X, W, n_threads=0)
    # negative values mean what they mean in joblib: -1 all cores, -k all but k - 1, at least one
    assert resolve_n_threads(-1) == resolve_n_threads(None) == set_cy.max_threads()
    assert resolve_n_threads(-1000) == 1
    np.testing.assert_array_equal(ops.sparse_matmul(X, W, n_threads=-1), ops.sparse_matmul(X, W, n_threads=1))
    for bad in (1.5, True, "2"):
        with pytest.raises(TypeError, match="n_threads must be a positive int"):
            ops.sparse_matmul(X, W, n_threads=bad)


def test_errors_on_momentum_update():
    w, v, g = (np.zeros(5, np.float32) for _ in range(3))
    kw = dict(lr=0.1, momentum=0.9, weight_decay=0.0)
    with pytest.raises(ValueError, match="same length"):
        ops.momentum_update(w, v, g[:4], **kw)
    with pytest.raises(TypeError, match="velocity has dtype float64"):
        ops.momentum_update(w, v.astype(np.float64), g, **kw)
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.momentum_update(np.zeros(10, np.float32)[::2], v, g, **kw)
    ro = np.zeros(5, np.float32)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        ops.momentum_update(ro, v, g, **kw)
    with pytest.raises(ValueError, match="must not share memory"):
        ops.momentum_update(w, w, g, **kw)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        ops.momentum_update(w, v, g, lr=-1, momentum=0.9, weight_decay=0)
    with pytest.raises(ValueError, match="momentum must be <= 1"):
        ops.momentum_update(w, v, g, lr=0.1, momentum=1.5, weight_decay=0)
    with pytest.raises(ValueError, match="weight_decay must be finite"):
        ops.momentum_update(w, v, g, lr=0.1, momentum=0.5, weight_decay=np.nan)
    with pytest.raises(TypeError, match="lr must be a real number"):
        ops.momentum_update(w, v, g, lr="0.1", momentum=0.5, weight_decay=0)
    with pytest.raises(ValueError, match="weights must be 1-D"):
        ops.momentum_update(w.reshape(1, 5), v, g, **kw)


# --- prepared operators and layouts (issue 12) ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("nt", THREADS)
def test_sparse_operator_matches_dense_in_every_layout(dtype, index_dtype, nt):
    rng = np.random.default_rng(5)
    W = random_csr(40, 25, 0.15, dtype, index_dtype, seed=5)
    Wd = W.toarray()
    op = ops.SparseOperator(W, n_threads=nt)
    X = rng.standard_normal((9, 40)).astype(dtype)
    D = rng.standard_normal((9, 25)).astype(dtype)
    t = tol(dtype)
    for w in (W, op):
        for Xin, Din in ((X, D), (np.asfortranarray(X), np.asfortranarray(D))):
            Y = ops.sparse_matmul(Xin, w, n_threads=nt)
            np.testing.assert_allclose(Y, X @ Wd, **t)
            assert Y.flags.f_contiguous == Xin.flags.f_contiguous  # the layout of the input
            dX = ops.sparse_matmul_t(Din, w, n_threads=nt)
            np.testing.assert_allclose(dX, D @ Wd.T, **t)
            assert dX.flags.f_contiguous == Din.flags.f_contiguous
            for order in ("C", "F"):
                Y = ops.sparse_matmul(Xin, w, order=order, n_threads=nt)
                assert Y.flags[{"C": "C_CONTIGUOUS", "F": "F_CONTIGUOUS"}[order]]
                np.testing.assert_allclose(Y, X @ Wd, **t)
        for layout in ("C", "F"):
            out = np.full((9, 25), np.nan, dtype, order=layout)
            assert ops.sparse_matmul(X, w, out=out, n_threads=nt) is out
            np.testing.assert_allclose(out, X @ Wd, **t)
    # the gradient: W's CSR order for scipy, the operator's own order (aligned with op.values) for an operator
    rows, cols = np.repeat(np.arange(40), np.diff(W.indptr)), W.indices
    g = ops.sddmm(np.asfortranarray(X), D, W, n_threads=nt)
    np.testing.assert_allclose(g, (X.T @ D)[rows, cols], **t)
    go = np.empty(op.nnz, dtype)
    assert ops.sddmm(X, D, op, out=go, n_threads=nt) is go
    np.testing.assert_allclose(go[op.csr_order], g, **t)
    np.testing.assert_array_equal(op.to_scipy().toarray(), Wd)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_operator_backward_sees_every_change_of_the_values(dtype):
    """The transposed product reads a kept copy of the values: it must follow in-place writes and replacements."""
    rng = np.random.default_rng(1)
    W = random_csr(40, 25, 0.2, dtype, np.int32)
    op = ops.SparseOperator(W, n_threads=2)
    D = rng.standard_normal((6, 25)).astype(dtype)
    dense = lambda: op.to_scipy().toarray()  # noqa: E731
    t = tol(dtype)
    np.testing.assert_allclose(ops.sparse_matmul_t(D, op), D @ dense().T, **t)
    np.testing.assert_allclose(ops.sparse_matmul_t(D, op), D @ dense().T, **t)  # the kept copy
    op.values[3] = 7.5  # one value, in place
    np.testing.assert_allclose(ops.sparse_matmul_t(D, op), D @ dense().T, **t)
    ops.momentum_update(op.values, np.zeros_like(op.values), np.ones_like(op.values), lr=0.1, momentum=0.0,
                        weight_decay=0.0)
    np.testing.assert_allclose(ops.sparse_matmul_t(D, op), D @ dense().T, **t)
    op.values = rng.standard_normal(op.nnz).astype(dtype)  # a new array of the right shape
    np.testing.assert_allclose(ops.sparse_matmul_t(D, op), D @ dense().T, **t)
    v = op.values.copy()
    v[0] = -0.0 if v[0] == 0 else -v[0]  # a change of the sign bit alone
    op.values[0] = v[0]
    np.testing.assert_allclose(ops.sparse_matmul_t(D, op), D @ dense().T, **t)


def test_same_values_compares_bits():
    a = np.array([1.0, np.nan, -0.0, 2.0])
    assert _kernels.same_values(a, a.copy())
    b = a.copy()
    b[2] = 0.0
    assert not _kernels.same_values(a, b)
    assert not _kernels.same_values(a, a[:3].copy())
    assert _kernels.same_values(np.zeros(0, np.float32), np.zeros(0, np.float32))


def test_sparse_operator_pattern_is_frozen_and_values_are_live():
    rng = np.random.default_rng(0)
    W = random_csr(30, 20, 0.2, np.float64, np.int32)
    op = ops.SparseOperator(W)
    for a in op._pattern:
        with pytest.raises(ValueError, match="read-only"):
            a[0] = 10 ** 6
    W.indices[0] = 10 ** 6  # the caller's matrix may change: the operator holds its own copies
    X = rng.standard_normal((4, 30))
    Y = ops.sparse_matmul(X, op)
    op.values *= 2.0  # values are live and writable (momentum_update trains them in place)
    np.testing.assert_allclose(ops.sparse_matmul(X, op), 2 * Y)
    with pytest.raises(TypeError, match="W has dtype float64 but float32"):
        ops.sparse_matmul(X.astype(np.float32), op)
    with pytest.raises(ValueError, match="out must have shape"):
        ops.sparse_matmul(X, op, out=np.empty((4, 21)))
    with pytest.raises(ValueError, match="order must be"):
        ops.sparse_matmul(X, op, order="K")
    with pytest.raises(ValueError, match="column indices outside"):
        ops.SparseOperator(W)  # the corrupted scipy matrix is refused
    op.values = np.zeros(3)
    with pytest.raises(ValueError, match="replaced by an array of another shape"):
        ops.sparse_matmul(X, op)
