"""The linear path of SparseNetwork (``linear_path=True``): sparse input-to-output connections beside the
hidden layers, against dense NumPy references, through evolution, input pruning, clipping and files."""
import numpy as np
import pytest
from test_model import _canonical, _fd_check

from set_cy import SparseMLP, SparseNetwork


def _net(seed=1, sizes=(6, 9, 7, 3), **kw):
    params = dict(epsilon=3, seed=seed, dtype="float64", dropout=0.0, linear_path=True)
    params.update(kw)
    m = SparseNetwork(list(sizes), **params)
    rng = np.random.default_rng(5)
    for layer in m.layers:  # away from the ReLU kink
        layer.bias[:] = rng.uniform(0.05, 0.2, layer.n_out)
    if m.linear_layer is not None:
        m.linear_layer.data[:] = rng.standard_normal(m.linear_layer.nnz)
    return m


def _dense_logits(m, X):
    """The dense ReLU network's linear outputs, plus ``X @ S`` (the linear path's dense weights) if it has one."""
    a = X
    for i, (W, b) in enumerate(zip(m.weights, m.biases)):
        z = a @ W.toarray() + b
        a = np.maximum(z, 0) if i < len(m.layers) - 1 else z
    return a + X @ m.linear_weights.toarray() if m.linear_layer is not None else a


def _dense_outputs(m, X):
    """Softmax of :func:`_dense_logits`."""
    z = _dense_logits(m, X)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_construction_counts_and_zero_start():
    m = SparseNetwork([50, 20, 4], epsilon=2, seed=0, linear_path=True)
    lin = m.linear_layer
    assert (lin.n_in, lin.n_out, lin.nnz) == (50, 4, 2 * (50 + 4)) and lin.storage == "compact"
    assert not lin.use_bias and np.all(lin.data == 0)
    assert m.n_connections == sum(layer.nnz for layer in m.layers) + lin.nnz
    assert m.n_parameters == m.n_connections + 20 + 4  # no bias on the linear path
    assert SparseNetwork([5, 8, 3], epsilon=20, seed=0, linear_path=True).linear_layer.nnz == 15  # capped: dense
    # off by default: the same random stream, the same network as before the option existed
    a, b = SparseNetwork([50, 20, 4], epsilon=2, seed=0), SparseNetwork([50, 20, 4], epsilon=2, seed=0,
                                                                        linear_path=False)
    assert a.linear_layer is None and a.trained_layers == a.layers
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(la.data, lb.data)
    with pytest.raises(ValueError, match="at least one hidden layer"):
        SparseNetwork([5, 3], linear_path=True)
    with pytest.raises(ValueError, match="linear_path must be a bool"):
        SparseNetwork([5, 4, 3], linear_path="yes")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_outputs_match_dense_reference(dtype):
    m = _net(dtype=dtype)
    X = np.random.default_rng(0).standard_normal((7, 6))
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(m.predict_proba(X), _dense_outputs(m, X.astype(dtype)), rtol=tol, atol=tol)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_gradients_match_finite_differences(loss):
    m = _net(loss=loss)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((5, 6)), rng.integers(0, 3, 5)
    _, grads = m.compute_gradients(X, y)
    assert len(grads) == len(m.layers) + 1 and np.all(grads[-1][1] == 0)
    assert _fd_check(m, X, y) < 1e-6


@pytest.mark.parametrize("clip_norm", [None, 1e-3])
def test_training_step_moves_the_linear_path_by_its_gradient(clip_norm):
    """One SGD step without momentum: the linear weights move by -lr * (clipped) gradient, bias stays zero."""
    m = _net()
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
    _, grads = m.compute_gradients(X, y)
    before = m.linear_layer.data.copy()
    scale = 1.0
    if clip_norm is not None:
        norm = np.sqrt(sum(float(g @ g) + float(gb @ gb) for g, gb in grads))
        scale = min(1.0, clip_norm / norm)
    m.train_batch(m._check_X(X), m._check_y(y, 8), np.arange(8, dtype=np.int64), learning_rate=0.1, momentum=0.0,
                  clip_norm=clip_norm)
    np.testing.assert_allclose(m.linear_layer.data, before - 0.1 * scale * grads[-1][0], rtol=1e-10, atol=1e-12)
    assert np.all(m.linear_layer.bias == 0)


def test_evolution_and_input_pruning_keep_the_invariants():
    m = SparseMLP([40, 30, 5], epsilon=3, seed=2, linear_path=True)
    lin = m.linear_layer
    nnz = lin.nnz
    rng = np.random.default_rng(0)
    lin.data[:] = rng.standard_normal(nnz).astype(lin.dtype)
    lin.velocity[:] = 1.0
    replaced = m.evolve(0.3)
    assert len(replaced) == len(m.layers) + 1 and replaced[-1] > 0
    assert lin.nnz == nnz and np.count_nonzero(lin.velocity == 0) == replaced[-1]
    _canonical(lin)
    strength = m.input_strength()
    first = np.bincount(m.layers[0].indices, np.abs(m.layers[0].data), 40)
    linear = np.bincount(lin.indices, np.abs(lin.data), 40)
    np.testing.assert_allclose(strength, linear)  # the linear path alone: the first layer is mostly its init
    assert not np.allclose(strength, first)
    saved = lin.data.copy()
    lin.data[:] = 0  # a linear path that learnt nothing yet: the first layer's sums alone
    np.testing.assert_allclose(m.input_strength(), first)
    lin.data[:] = saved
    m.prune_inputs(0.5, min_inputs=10)
    kept = m.active_inputs()
    assert kept.size == 20 and lin.nnz == nnz
    _canonical(lin)
    # 135 connections, 20 kept inputs x 5 outputs = 100 cells: every cell of the kept inputs is filled, 35 stay parked
    assert np.count_nonzero(np.isin(lin.indices, kept)) == 100
    m.evolve(0.3)
    assert lin.nnz == nnz


def test_fit_save_and_load_with_the_linear_path(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 12)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    m = SparseMLP([12, 16, 2], epsilon=3, seed=0, linear_path=True)
    m.fit(X, y, epochs=4, batch_size=16, verbose=0, clip_norm=1.0, prune_inputs=0.3, prune_every=2, min_inputs=4)
    assert np.any(m.linear_layer.data != 0)
    path = m.save(tmp_path / "m.npz")
    m2 = SparseMLP.load(path)
    np.testing.assert_array_equal(m2.predict_proba(X, batch_size=16), m.predict_proba(X, batch_size=16))
    np.testing.assert_array_equal(m2.linear_layer.velocity, m.linear_layer.velocity)
    assert m2.linear_path and m2.n_connections == m.n_connections
    # a file that claims a linear path but lacks its arrays is refused, naming them
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files if not k.startswith("extra_linear_")}
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="extra_linear_indptr"):
        SparseMLP.load(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="linear_path need backend='openmp'"):
        SparseMLP([12, 16, 2], seed=0, linear_path=True).fit(X, y, epochs=1, backend="threads", n_jobs=2)


def test_linear_path_learns_what_the_hidden_path_alone_learns_slowly():
    """A linearly separable problem on many noisy inputs: the linear path gets there in few epochs."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 100)).astype(np.float32)
    w = np.zeros(100)
    w[:10] = 1.0
    y = (X @ w > 0).astype(int)
    Xt = rng.standard_normal((400, 100)).astype(np.float32)
    yt = (Xt @ w > 0).astype(int)
    acc = {}
    for lp in (False, True):
        m = SparseMLP([100, 64, 2], epsilon=3, seed=0, linear_path=lp, dropout=0.0)
        m.fit(X, y, epochs=30, batch_size=16, verbose=0, clip_norm=1.0)
        acc[lp] = m.score(Xt, yt)
    assert acc[True] > 0.78 and acc[True] > acc[False] + 0.05, acc  # measured 0.82 and 0.73 (sklearn's LR 0.84)
