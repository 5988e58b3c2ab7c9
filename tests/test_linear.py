"""set_cy.SparseLinear: the layer-level API against dense NumPy references."""
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import DTYPES, random_csr, tol

import set_cy
from set_cy.linear import SparseLinear


def _dense(lin):
    """Dense W (n_in x n_out) built from values and coords (not through to_scipy)."""
    rows, cols = lin.coords()
    W = np.zeros((lin.n_in, lin.n_out), lin.dtype)
    W[rows, cols] = lin.values
    return W


def _layer(dtype, n_in=40, n_out=30, nnz=200, seed=0, **kw):
    lin = SparseLinear(n_in, n_out, nnz=nnz, dtype=dtype, seed=seed, **kw)
    lin.bias[:] = np.random.default_rng(seed + 1).standard_normal(n_out)  # a bias that matters
    return lin


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_backward_match_dense(dtype):
    lin = _layer(dtype)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((7, lin.n_in)).astype(dtype)
    dY = rng.standard_normal((7, lin.n_out)).astype(dtype)
    W = _dense(lin)
    np.testing.assert_array_equal(W, lin.to_scipy().toarray())
    Y = lin.forward(X)
    assert Y.shape == (7, lin.n_out) and Y.dtype == dtype and Y.flags.c_contiguous
    np.testing.assert_allclose(Y, X @ W + lin.bias, **tol(dtype))
    dX, g, gb = lin.backward(dY)
    assert dX.shape == X.shape and g.shape == (lin.nnz,) and gb.shape == (lin.n_out,)
    assert dX.dtype == g.dtype == gb.dtype == dtype
    np.testing.assert_allclose(dX, dY @ W.T, **tol(dtype))
    rows, cols = lin.coords()
    np.testing.assert_allclose(g, (X.T @ dY)[rows, cols], **tol(dtype))
    np.testing.assert_allclose(gb, dY.sum(axis=0), **tol(dtype))
    # csr_order maps the storage order to scipy's CSR order of W
    W_csr = lin.to_scipy()
    np.testing.assert_array_equal(W_csr.data, lin.values[lin.csr_order])
    dense_grad = sp.csr_array(((X.T @ dY)[W_csr.nonzero()], W_csr.indices, W_csr.indptr), shape=W.shape)
    np.testing.assert_allclose(g[lin.csr_order], dense_grad.data, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_with_explicit_input_and_without_input_grad(dtype):
    lin = _layer(dtype)
    rng = np.random.default_rng(2)
    X1, X2 = (rng.standard_normal((5, lin.n_in)).astype(dtype) for _ in range(2))
    dY = rng.standard_normal((5, lin.n_out)).astype(dtype)
    lin.forward(X1)
    lin.forward(X2)  # the kept input is now X2
    _, g_kept, _ = lin.backward(dY)
    dX, g1, _ = lin.backward(dY, X=X1, input_grad=False)
    assert dX is None
    rows, cols = lin.coords()
    np.testing.assert_allclose(g1, (X1.T @ dY)[rows, cols], **tol(dtype))
    np.testing.assert_allclose(g_kept, (X2.T @ dY)[rows, cols], **tol(dtype))
    lin.forward(X1, keep_input=False)
    with pytest.raises(ValueError, match="forward"):
        lin.backward(dY)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nesterov", [False, True])
def test_step_is_momentum_sgd(dtype, nesterov):
    lin = _layer(dtype)
    rng = np.random.default_rng(3)
    w, b = lin.values.copy().astype(np.float64), lin.bias.copy().astype(np.float64)
    v, vb = np.zeros_like(w), np.zeros_like(b)
    lr, mu, wd = 0.05, 0.9, 1e-2
    for _ in range(3):
        g = rng.standard_normal(lin.nnz).astype(dtype)
        gb = rng.standard_normal(lin.n_out).astype(dtype)
        lin.step(g, gb, lr, momentum=mu, weight_decay=wd, nesterov=nesterov)
        step, step_b = lr * (g + wd * w), lr * gb
        v, vb = mu * v - step, mu * vb - step_b
        w = w + (mu * v - step if nesterov else v)
        b = b + (mu * vb - step_b if nesterov else vb)
    t = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lin.values, w, **t)
    np.testing.assert_allclose(lin.velocity, v, **t)
    np.testing.assert_allclose(lin.bias, b, **t)
    np.testing.assert_allclose(lin.bias_velocity, vb, **t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("criterion", ["signed", "magnitude"])
def test_evolve_keeps_nnz_and_survivors(dtype, criterion):
    lin = _layer(dtype, n_in=50, n_out=40, nnz=400)
    lin.step(np.random.default_rng(4).standard_normal(lin.nnz).astype(dtype), None, 0.1)  # velocity != 0
    X = np.random.default_rng(5).standard_normal((3, lin.n_in)).astype(dtype)
    lin.forward(X)
    before_val = dict(zip(zip(*lin.coords()), lin.values.tolist()))
    before_vel = dict(zip(zip(*lin.coords()), lin.velocity.tolist()))
    k = lin.evolve(0.25, criterion=criterion)
    assert k == pytest.approx(0.25 * 400, abs=2)
    assert lin.nnz == 400
    W = lin.to_scipy()
    assert W.has_canonical_format and W.nnz == 400
    coords = list(zip(*lin.coords()))
    assert len(set(coords)) == 400
    same = [c for c, val in zip(coords, lin.values.tolist()) if before_val.get(c) == val]
    assert len(same) >= 400 - k  # every survivor kept its value at its position
    new = np.array([c not in before_val for c in coords])
    assert new.sum() <= k and new.sum() >= k - 25  # a removed position may be drawn again
    vel = lin.velocity
    assert np.all(vel[new] == 0)
    kept_vel = [before_vel[c] for c, n in zip(coords, new) if not n]
    assert np.count_nonzero(np.isin(vel[~new], kept_vel)) >= 400 - k
    # the layer still computes with its new pattern, and the kept input is still usable
    np.testing.assert_allclose(lin.forward(X), X @ _dense(lin) + lin.bias, **tol(dtype))
    dY = np.ones((3, lin.n_out), dtype)
    rows, cols = lin.coords()
    np.testing.assert_allclose(lin.backward(dY)[1], (X.T @ dY)[rows, cols], **tol(dtype))
    assert lin.evolve(0.0) == 0


def test_evolve_new_weights_zeros_and_rng():
    a = _layer(np.float64, seed=7)
    b = _layer(np.float64, seed=7)
    ka = a.evolve(0.3, new_weights="zeros", rng=np.random.default_rng(9))
    kb = b.evolve(0.3, new_weights="zeros", rng=np.random.default_rng(9))
    assert ka == kb > 0
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)
    assert np.count_nonzero(a.values == 0) >= ka - 5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_scipy_round_trip(dtype, index_dtype):
    W = random_csr(25, 15, 0.2, dtype=dtype, index_dtype=index_dtype, seed=3, empty_rows=(2,), empty_cols=(4,))
    bias = np.arange(15.0)
    lin = SparseLinear.from_scipy(W, bias, seed=0, n_threads=2)
    assert (lin.n_in, lin.n_out, lin.nnz, lin.dtype) == (25, 15, W.nnz, np.dtype(dtype))
    assert lin.indices.dtype == index_dtype and lin.bias.dtype == dtype
    back = lin.to_scipy()
    assert back.shape == W.shape
    np.testing.assert_array_equal(back.toarray(), W.toarray())
    np.testing.assert_array_equal(lin.bias, bias.astype(dtype))
    X = np.random.default_rng(0).standard_normal((4, 25)).astype(dtype)
    np.testing.assert_allclose(lin.forward(X), X @ W.toarray() + bias, **tol(dtype))
    # the export is a copy
    back.data[:] = 0
    assert np.any(lin.values != 0)


def test_epsilon_sets_the_erdos_renyi_count_and_threads_do_not_change_results():
    assert SparseLinear(100, 50, epsilon=3, seed=0).nnz == 3 * 150
    assert SparseLinear(10, 5, seed=0).nnz == 50  # epsilon 20 capped at dense
    a = SparseLinear(300, 200, epsilon=5, seed=1, n_threads=1)
    b = SparseLinear(300, 200, epsilon=5, seed=1, n_threads=2)
    np.testing.assert_array_equal(a.values, b.values)
    X = np.random.default_rng(0).standard_normal((9, 300)).astype(np.float32)
    np.testing.assert_array_equal(a.forward(X), b.forward(X))
    dY = np.ones((9, 200), np.float32)
    for u, v in zip(a.backward(dY), b.backward(dY)):
        np.testing.assert_array_equal(u, v)


def test_training_with_the_layer_api_lowers_the_loss():
    """Two sparse layers and a hand-written loop fit a sparse teacher (regression)."""
    rng = np.random.default_rng(0)
    teacher = sp.random_array((60, 5), density=0.3, format="csr", dtype=np.float64, rng=1).toarray()
    X = rng.standard_normal((256, 60))
    T = X @ teacher
    l1 = SparseLinear(60, 80, epsilon=8, dtype="float64", seed=2)
    l2 = SparseLinear(80, 5, epsilon=8, dtype="float64", seed=3)
    losses = []
    for epoch in range(30):
        for s in range(0, 256, 32):
            xb, tb = X[s:s + 32], T[s:s + 32]
            h = l1.forward(xb)
            a = np.maximum(h, 0)
            err = l2.forward(a) - tb
            losses.append(0.5 * np.mean(np.sum(err ** 2, axis=1)))
            da, g2, gb2 = l2.backward(err / len(xb))
            _, g1, gb1 = l1.backward(da * (h > 0), input_grad=False)
            l2.step(g2, gb2, 0.01)
            l1.step(g1, gb1, 0.01)
        if epoch % 10 == 9:
            l1.evolve(0.1)
            l2.evolve(0.1)
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    assert last < 0.2 * first, (first, last)


def test_exported_by_the_package():
    assert set_cy.SparseLinear is SparseLinear and "SparseLinear" in set_cy.__all__


def test_validation_errors_name_the_argument():
    lin = SparseLinear(10, 6, nnz=20, seed=0)  # float32
    with pytest.raises(TypeError, match="X"):
        lin.forward(np.ones((2, 10)))  # float64
    with pytest.raises(ValueError, match=r"X must have shape \(batch, 10\)"):
        lin.forward(np.ones((2, 9), np.float32))
    with pytest.raises(ValueError, match="X must be 2-D"):
        lin.forward(np.ones(10, np.float32))
    with pytest.raises(TypeError, match="X"):
        lin.forward(sp.csr_array(np.ones((2, 10), np.float32)))
    lin.forward(np.ones((2, 10), np.float32))
    with pytest.raises(ValueError, match="dY"):
        lin.backward(np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match="batch"):
        lin.backward(np.ones((3, 6), np.float32))
    with pytest.raises(ValueError, match="grad_values"):
        lin.step(np.ones(19, np.float32), np.ones(6, np.float32), 0.1)
    with pytest.raises(ValueError, match="grad_bias"):
        lin.step(np.ones(20, np.float32), np.ones(5, np.float32), 0.1)
    with pytest.raises(TypeError, match="grad_values"):
        lin.step(np.ones(20), np.ones(6, np.float32), 0.1)
    with pytest.raises(ValueError, match="lr"):
        lin.step(np.ones(20, np.float32), None, -1.0)
    with pytest.raises(ValueError, match="momentum"):
        lin.step(np.ones(20, np.float32), None, 0.1, momentum=1.5)
    with pytest.raises(ValueError, match="share memory"):
        lin.step(lin.values, None, 0.1)
    with pytest.raises(ValueError, match="zeta"):
        lin.evolve(1.5)
    with pytest.raises(ValueError, match="criterion"):
        lin.evolve(0.1, criterion="random")
    with pytest.raises(ValueError, match="new_weights"):
        lin.evolve(0.1, new_weights="ones")
    with pytest.raises(ValueError, match="epsilon or nnz"):
        SparseLinear(10, 6, epsilon=2, nnz=5)
    with pytest.raises(ValueError, match="nnz"):
        SparseLinear(10, 6, nnz=61)
    with pytest.raises(ValueError, match="epsilon"):
        SparseLinear(10, 6, epsilon=0)
    with pytest.raises(TypeError, match="n_in"):
        SparseLinear(10.5, 6)
    with pytest.raises(TypeError, match="dtype"):
        SparseLinear(10, 6, dtype="int32")
    with pytest.raises(ValueError, match="init"):
        SparseLinear(10, 6, init="ones")
    with pytest.raises(ValueError, match="seed or rng"):
        SparseLinear(10, 6, seed=1, rng=np.random.default_rng(1))
    W = random_csr(5, 4, 0.5)
    with pytest.raises(ValueError, match="bias"):
        SparseLinear.from_scipy(W, np.ones(5))
    with pytest.raises(TypeError, match="W"):
        SparseLinear.from_scipy(W.toarray())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_feature_major_inputs_and_outputs_without_copies(dtype):
    lin = SparseLinear(40, 25, nnz=200, dtype=dtype, seed=0, n_threads=2)
    Wd = lin.to_scipy().toarray()
    rng = np.random.default_rng(0)
    X = np.asfortranarray(rng.standard_normal((6, 40)).astype(dtype))
    dY = np.asfortranarray(rng.standard_normal((6, 25)).astype(dtype))
    t = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    Y = lin.forward(X)
    assert Y.flags.f_contiguous and np.shares_memory(lin._X, X)  # kept by reference, not copied
    np.testing.assert_allclose(Y, X @ Wd + lin.bias, **t)
    out = np.empty((6, 40), dtype, order="F")
    dX, g, gb = lin.backward(dY, out=out)
    assert dX is out
    np.testing.assert_allclose(dX, dY @ Wd.T, **t)
    rows, cols = lin.coords()
    np.testing.assert_allclose(g, (X.T @ dY)[rows, cols], **t)
    np.testing.assert_allclose(gb, dY.sum(0), **t)
    assert lin.forward(np.ascontiguousarray(X)).flags.c_contiguous  # C in, C out (as before)
    assert lin.forward(X, order="C").flags.c_contiguous


def test_backward_refuses_an_out_that_is_its_own_input():
    lin = SparseLinear(12, 12, nnz=40, dtype=np.float64, seed=0)
    X = np.asfortranarray(np.random.default_rng(0).standard_normal((4, 12)))
    dY = np.asfortranarray(np.ones((4, 12)))
    lin.forward(X)  # kept by reference (Fortran-ordered)
    with pytest.raises(ValueError, match="must not share memory"):
        lin.backward(dY, out=X)
    with pytest.raises(ValueError, match="must not share memory"):
        lin.backward(dY, out=dY)
