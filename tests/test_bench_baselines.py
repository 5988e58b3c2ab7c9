"""Correctness of the peer implementations in bench/_baselines.py (the SciPy SET-MLP, the dense NumPy
MLP and the PyTorch mask MLP) against set_cy on the same weights, and against finite differences."""
import os
import sys

import numpy as np
import pytest
import scipy.sparse as sp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from _baselines import DenseMLP, ScipySETMLP, TorchMaskMLP, _draw_free_keys, _signed_prune, er_connections  # noqa: E402

from set_cy import SparseMLP  # noqa: E402

SIZES = [23, 17, 13, 5]


def _setcy_model(dtype="float64", dropout=0.0, seed=3):
    return SparseMLP(SIZES, epsilon=3, dropout=dropout, dtype=dtype, seed=seed, n_threads=1)


def _data(n=11, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, SIZES[0])).astype(dtype)
    y = rng.integers(0, SIZES[-1], n)
    return X, y


def _setcy_grads_in_w_order(model, X, y):
    loss, grads = model.compute_gradients(X, y)
    return loss, [(g[layer.perm], gb) for (g, gb), layer in zip(grads, model.layers)]


def test_scipy_set_gradient_matches_setcy():
    model = _setcy_model()
    for layer in model.layers:  # nonzero biases, so that every path is exercised
        layer.bias[:] = np.random.default_rng(1).standard_normal(layer.n_out)
    X, y = _data()
    loss_ref, ref = _setcy_grads_in_w_order(model, X, y)
    base = ScipySETMLP(SIZES, dropout=0.0, dtype=np.float64, weights=model.weights, biases=model.biases)
    loss, grads = base.gradients(X, y)
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    for (g, gb), (g_ref, gb_ref) in zip(grads, ref):
        np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gb, gb_ref, rtol=1e-10, atol=1e-12)


def test_dense_gradient_matches_sparse_at_connections_and_is_zero_free_elsewhere():
    model = _setcy_model()
    X, y = _data()
    _, ref = _setcy_grads_in_w_order(model, X, y)
    dense = DenseMLP(SIZES, dropout=0.0, dtype=np.float64, weights=[w.toarray() for w in model.weights],
                     biases=model.biases)
    _, grads = dense.gradients(X, y)
    for (g, gb), (g_ref, gb_ref), W in zip(grads, ref, model.weights):
        C = sp.coo_array(W)
        np.testing.assert_allclose(g[C.row, C.col], sp.csr_array((g_ref, W.indices, W.indptr),
                                                                 shape=W.shape).tocoo().data, rtol=1e-10)
        np.testing.assert_allclose(gb, gb_ref, rtol=1e-10, atol=1e-12)


def test_dense_gradient_finite_differences():
    X, y = _data(n=7)
    y = y % 4
    net = DenseMLP([SIZES[0], 9, 4], dropout=0.0, dtype=np.float64, seed=2)
    net.b = [np.random.default_rng(5).standard_normal(b.size) * 0.1 for b in net.b]
    _, grads = net.gradients(X, y)
    rng = np.random.default_rng(0)
    for i, W in enumerate(net.W):
        for _ in range(6):
            r, c = rng.integers(W.shape[0]), rng.integers(W.shape[1])
            h = 1e-6
            W[r, c] += h
            lp, _ = net.gradients(X, y)
            W[r, c] -= 2 * h
            lm, _ = net.gradients(X, y)
            W[r, c] += h
            assert (lp - lm) / (2 * h) == pytest.approx(grads[i][0][r, c], rel=1e-5, abs=1e-8)


def test_scipy_set_and_dense_updates_match_setcy_training():
    model = _setcy_model()
    X, y = _data(n=20)
    W0, b0 = model.weights, model.biases
    base = ScipySETMLP(SIZES, dropout=0.0, dtype=np.float64, weights=W0, biases=b0)
    dense = DenseMLP(SIZES, dropout=0.0, dtype=np.float64, weights=[w.toarray() for w in W0], biases=b0)
    lr, mu, wd = 0.05, 0.9, 1e-3
    for s in range(3):
        rows = np.arange(s * 5, s * 5 + 8) % X.shape[0]
        model.train_batch(X, y, rows.astype(np.int64), learning_rate=lr, momentum=mu, weight_decay=wd)
        base.train_batch(X[rows], y[rows], lr, mu, wd)
        if s == 0:
            # one step from the same weights: the dense net moves every weight, the stored ones as set_cy
            dense.train_batch(X[rows], y[rows], lr, mu, wd)
            for Wr, D, br, bd in zip(model.weights, dense.W, model.biases, dense.b):
                C = sp.coo_array(Wr)
                np.testing.assert_allclose(D[C.row, C.col], C.data, rtol=1e-9, atol=1e-12)
                np.testing.assert_allclose(bd, br, rtol=1e-9, atol=1e-12)
    for Wr, W, br, b in zip(model.weights, base.W, model.biases, base.b):
        np.testing.assert_allclose(W.toarray(), Wr.toarray(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b, br, rtol=1e-9, atol=1e-12)


def test_torch_mask_gradient_matches_setcy_on_the_mask():
    pytest.importorskip("torch")
    model = _setcy_model(dtype="float32")
    X, y = _data(dtype=np.float32)
    loss_ref, ref = _setcy_grads_in_w_order(model, X, y)
    net = TorchMaskMLP(SIZES, dropout=0.0, weights=model.weights, biases=model.biases, n_threads=1)
    loss, grads = net.gradients(X, y)
    assert loss == pytest.approx(loss_ref, rel=1e-5)
    for (g, gb), (g_ref, gb_ref), W in zip(grads, ref, model.weights):
        C = sp.csr_array((g_ref, W.indices, W.indptr), shape=W.shape).tocoo()
        np.testing.assert_allclose(g[C.row, C.col], C.data, rtol=1e-4, atol=1e-6)
        off = np.ones(W.shape, bool)
        off[C.row, C.col] = False
        assert not np.any(g[off])  # the mask keeps the gradient at zero off the pattern
        np.testing.assert_allclose(gb, gb_ref, rtol=1e-4, atol=1e-6)


def test_evolution_keeps_counts_and_regrows_at_zero():
    base = ScipySETMLP([40, 30, 3], epsilon=4, seed=0, dtype=np.float64)
    n0 = [w.nnz for w in base.W]
    assert n0 == [er_connections(40, 30, 4), er_connections(30, 3, 4)]
    before = base.W[0].toarray()
    base.evolve(0.3)
    assert [w.nnz for w in base.W] == n0
    after = base.W[0].toarray()
    kept = (before != 0) & (after != 0)
    np.testing.assert_array_equal(after[kept], before[kept])
    removed = int(np.count_nonzero((before != 0) & (after == 0)))
    assert removed == n0[0] - int(np.count_nonzero(kept))
    # pruning removes the weights nearest zero on each side
    v = before[before != 0]
    keep = _signed_prune(v, 0.3)
    assert np.abs(v[~keep]).max() <= np.abs(v[keep]).max()


def test_draw_free_keys_avoids_taken():
    rng = np.random.default_rng(0)
    taken = np.sort(rng.choice(100, 60, replace=False)).astype(np.int64)
    new = _draw_free_keys(rng, 100, taken, 40)
    assert np.unique(new).size == 40
    assert not np.isin(new, taken).any()


def test_torch_mask_evolution_keeps_mask_size():
    pytest.importorskip("torch")
    net = TorchMaskMLP([40, 30, 3], epsilon=4, seed=0, n_threads=1)
    n0 = [int(m.sum()) for m in net.M]
    X = np.random.default_rng(0).standard_normal((16, 40)).astype(np.float32)
    import torch
    net.train_batch(torch.from_numpy(X), torch.zeros(16, dtype=torch.int64))
    net.evolve(0.3)
    assert [int(m.sum()) for m in net.M] == n0
    for W, M in zip(net.W, net.M):
        assert not torch.any(W.detach()[~M])
