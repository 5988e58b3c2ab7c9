"""bfloat16 gathered rows (``activation_dtype="bfloat16"``): the kernels against dense NumPy references
on the rounded operands, and the network that uses them against exact float32 training."""
import numpy as np
import pytest
from conftest import INDEX_DTYPES, THREADS, random_csr, tol

from set_cy import SparseMLP, SparseNetwork, _kernels
from set_cy.sizing import check_activation_dtype, estimate_memory


def bf16_reference(x):
    """bfloat16 bits of float32 ``x`` by NumPy integer arithmetic: round to nearest even, NaN kept a NaN."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), rounded)


def widen(h):
    """float32 values of bfloat16 bits (exact)."""
    return (h.astype(np.uint32) << 16).view(np.float32)


def test_to_bfloat16_rounds_to_nearest_even():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 70)) * np.exp(rng.uniform(-60, 60, (300, 70)))).astype(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8,
                        np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1e-45], np.float32)
    x[0, :special.size] = special
    # ties: exactly half-way between two bfloat16 numbers, both parities of the kept last bit
    x[1, :4] = np.array([0x3F808000, 0x3F818000, 0xBF808000, 0x3F80C000], np.uint32).view(np.float32)
    for nt in THREADS:
        h = np.empty(x.shape, np.uint16)
        _kernels.to_bfloat16(x, h, nt)
        np.testing.assert_array_equal(h, bf16_reference(x))
    y = widen(h)
    assert np.isnan(y[0, 4]) and y[0, 2] == np.inf and y[0, 8] == np.inf  # float32's max rounds up to inf
    assert y[0, 5] == 1.0 and y[0, 6] == 1.0 and y[0, 7] == 1.0 + 2.0 ** -6  # ties to even
    assert list(y[1, :4]) == [1.0, 1.0 + 2.0 ** -6, -1.0, 1.0 + 2.0 ** -7]
    finite = np.isfinite(x) & np.isfinite(y) & (np.abs(x) > 1e-37)
    assert np.all(np.abs(y[finite] - x[finite]) <= 2.0 ** -8 * np.abs(x[finite]))  # half a unit of 8 bits


def _bf16(a):
    h = np.empty(a.shape, np.uint16)
    _kernels.to_bfloat16(np.ascontiguousarray(a, np.float32), h, 1)
    return h


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("batch", [1, 3, 8, 13, 16, 32, 33, 64, 100, 128, 130])
def test_products_over_bfloat16_rows_match_dense(index_dtype, batch):
    """Forward, permuted backward, SDDMM (with row sums) and the fused update, with the gathered operand
    in bfloat16: equal to float32 on the widened operand (the SDDMM and the fused update have compiled-in
    widths 16, 32, 64 and 128; other widths above 8 take the generic loops)."""
    Wt = random_csr(37, 45, 0.2, np.float32, index_dtype, seed=batch, empty_rows=(3,), empty_cols=(7,))
    rng = np.random.default_rng(batch)
    X = rng.standard_normal((45, batch)).astype(np.float32)
    A = rng.standard_normal((37, batch)).astype(np.float32)
    A[::4] = 0
    Xh, Ah = _bf16(X), _bf16(A)
    Xw, Aw = widen(Xh), widen(Ah)
    bias = rng.standard_normal(37).astype(np.float32)
    dense = Wt.toarray()
    coo = Wt.tocoo()
    t_indptr, t_indices, perm = (np.asarray(a) for a in _transpose(Wt))
    v0 = rng.standard_normal(Wt.nnz).astype(np.float32)
    kw = (0.05, 0.9, 1e-3, False)
    for nt in THREADS:
        out = np.empty((37, batch), np.float32)
        _kernels.spmm(Wt.indptr, Wt.indices, Wt.data, None, Xh, out, bias, nt)
        np.testing.assert_allclose(out, dense @ Xw + bias[:, None], **tol(np.float32))
        back = np.empty((45, batch), np.float32)
        _kernels.spmm(t_indptr, t_indices, Wt.data, perm, Ah, back, None, nt)
        np.testing.assert_allclose(back, dense.T @ Aw, **tol(np.float32))
        g, s = np.empty(Wt.nnz, np.float32), np.empty(37, np.float32)
        _kernels.sddmm(Wt.indptr, Wt.indices, A, Xh, g, nt, s)
        np.testing.assert_allclose(g, (A @ Xw.T)[coo.row, coo.col], **tol(np.float32))
        np.testing.assert_allclose(s, A.sum(axis=1), **tol(np.float32))
        # the fused update equals the unfused one on the same (bfloat16-read) gradient
        w, v = Wt.data.copy(), v0.copy()
        _kernels.sddmm_momentum_update(Wt.indptr, Wt.indices, A, Xh, w, v, *kw, nt)
        w_ref, v_ref = Wt.data.copy(), v0.copy()
        _kernels.momentum_update(w_ref, v_ref, g, *kw, 1)
        np.testing.assert_allclose(v, v_ref, **tol(np.float32))
        np.testing.assert_allclose(w, w_ref, **tol(np.float32))


def _transpose(Wt):
    from set_cy.patterns import transpose_pattern
    return transpose_pattern(Wt.indptr, Wt.indices, Wt.shape[1])


def test_gathered_operand_must_go_with_the_values():
    Wt = random_csr(5, 6, 0.5, np.float64, np.int32, seed=1)
    out = np.empty((5, 3))
    with pytest.raises(TypeError, match="bfloat16"):
        _kernels.spmm(Wt.indptr, Wt.indices, Wt.data, None, np.zeros((6, 3), np.uint16), out, None, 1)
    with pytest.raises(TypeError, match="values' dtype"):
        _kernels.spmm(Wt.indptr, Wt.indices, Wt.data, None, np.zeros((6, 3), np.float32), out, None, 1)
    with pytest.raises(TypeError, match="values' dtype"):
        _kernels.sddmm(Wt.indptr, Wt.indices, np.zeros((5, 3)), np.zeros((6, 3), np.uint16),
                       np.empty(Wt.nnz), 1)
    w = Wt.data.astype(np.float32)
    with pytest.raises(TypeError, match="values' dtype"):
        _kernels.sddmm_momentum_update(Wt.indptr, Wt.indices, np.zeros((5, 3), np.float32), np.zeros((6, 3)),
                                       w, np.zeros_like(w), 0.1, 0.9, 0.0, False, 1)


def test_activation_dtype_is_checked():
    assert check_activation_dtype(None, np.float32) is None
    assert check_activation_dtype("float32", np.float32) is None
    assert check_activation_dtype("bfloat16", "float32") == "bfloat16"
    with pytest.raises(ValueError, match="needs dtype float32"):
        SparseNetwork([10, 20, 3], dtype="float64", activation_dtype="bfloat16")
    for bad in ("float16", "float64", 16, np.float32):
        with pytest.raises(ValueError, match="activation_dtype"):
            SparseNetwork([10, 20, 3], activation_dtype=bad)


def _data(n=96, d=30, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = (rng.standard_normal((n, d)) + 1.5 * np.eye(k, d)[y]).astype(np.float32)
    return X, y


def _round(a):
    return widen(bf16_reference(a))


def _dense_gradients(net, X, y, rounded):
    """Loss and weight gradients of a ReLU network (no dropout) in dense float64 NumPy, with the hidden
    activations and (full storage) the hidden deltas rounded to bfloat16 where the products read them."""
    Ws = [layer.to_scipy().toarray().astype(np.float64) for layer in net.layers]
    bs = [layer.bias.astype(np.float64) for layer in net.layers]
    r = _round if rounded else (lambda a: a)
    acts, a = [X.T.astype(np.float64)], X.T.astype(np.float64)
    for i, (W, b) in enumerate(zip(Ws, bs)):
        z = W.T @ (a if i == 0 else r(a.astype(np.float32)).astype(np.float64)) + b[:, None]
        a = np.maximum(z, 0) if i < len(Ws) - 1 else z
        acts.append(a)
    p = np.exp(a - a.max(axis=0))
    p /= p.sum(axis=0)
    n = X.shape[0]
    loss = -np.mean(np.log(p[y, np.arange(n)]))
    delta = p.copy()
    delta[y, np.arange(n)] -= 1
    delta /= n
    grads = [None] * len(Ws)
    for i in range(len(Ws) - 1, -1, -1):
        x_in = acts[i] if i == 0 else r(acts[i].astype(np.float32)).astype(np.float64)
        grads[i] = delta @ x_in.T  # (n_out, n_in): W^T's layout
        if i > 0:
            gathered = delta if i == len(Ws) - 1 or net.storage == "compact" else \
                r(delta.astype(np.float32)).astype(np.float64)
            delta = (Ws[i] @ gathered) * (acts[i] > 0)
    return loss, grads


@pytest.mark.parametrize("storage", ["full", "compact"])
def test_bfloat16_network_gradients_match_a_rounded_dense_reference(storage):
    """The network rounds exactly what it should: its gradients equal a dense float64 computation that
    rounds the hidden activations (and, with the transposed index, the hidden deltas) to bfloat16; and
    they stay close to exact training's."""
    X, y = _data()
    net = SparseNetwork([30, 80, 60, 3], epsilon=5, seed=3, storage=storage, activation_dtype="bfloat16",
                        dropout=0.0)
    loss, grads = net.compute_gradients(X, y)
    ref_loss, ref = _dense_gradients(net, X, y, rounded=True)
    exact_loss, exact = _dense_gradients(net, X, y, rounded=False)
    assert abs(loss - ref_loss) <= 1e-5 * ref_loss
    for layer, (g, _), gr, ge in zip(net.layers, grads, ref, exact):
        rows = np.repeat(np.arange(layer.n_out), np.diff(layer.indptr))
        at = gr[rows, layer.indices]
        np.testing.assert_allclose(g, at, rtol=1e-3, atol=1e-4 * np.abs(at).max())
        # against exact training: ReLU units whose input crosses zero under the rounding flip, hence a
        # few per cent on this small batch
        assert np.linalg.norm(g - ge[rows, layer.indices]) <= 0.1 * np.linalg.norm(at)
    assert not np.allclose(exact_loss, loss, rtol=1e-7, atol=0)  # the rounding is in effect


def test_bfloat16_network_buffers_and_estimate_agree():
    sizes = [40, 300, 200, 5]
    for storage in ("full", "compact"):
        est = estimate_memory(sizes, 10, 16, storage=storage, activation_dtype="bfloat16")
        exact = estimate_memory(sizes, 10, 16, storage=storage)
        extra = 2 * 16 * (300 + 200 + (300 if storage == "full" else 0))
        assert est["activations"] - exact["activations"] == extra
        m = SparseNetwork(sizes, epsilon=10, seed=0, storage=storage, activation_dtype="bfloat16")
        m._ensure_buffers(16)
        bufs = m._buffers
        held = sum(a.nbytes for a in bufs["act16"]) + (0 if bufs["delta16"] is None else bufs["delta16"].nbytes)
        assert held == extra


def test_bfloat16_training_learns_and_survives_save_and_load(tmp_path):
    X, y = _data(n=240, seed=1)
    m = SparseMLP([30, 120, 120, 3], epsilon=8, seed=0, activation_dtype="bfloat16", n_threads=2)
    hist = m.fit(X, y, epochs=6, batch_size=16, learning_rate=0.05, verbose=0)
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    assert m.score(X, y) > 0.8  # chance: 1/3 (exact training: 0.91 with this seed)
    path = tmp_path / "m.npz"
    m.save(path)
    back = SparseMLP.load(path)
    assert back.activation_dtype == "bfloat16"
    np.testing.assert_array_equal(back.predict_proba(X), m.predict_proba(X))
