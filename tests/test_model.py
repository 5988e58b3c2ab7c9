"""SparseMLP: gradients, evolution invariants, training on real data, persistence and resume."""
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from set_cy import Callback, SparseMLP, SparseNetwork
from set_cy.activations import ACTIVATIONS
from set_cy.evolution import select_to_remove, zeta_at
from set_cy.patterns import draw_free_positions
from set_cy.sizing import allocate_connections

DATA = Path(os.environ.get("SET_CY_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
if not DATA.is_absolute():
    DATA = (Path(__file__).resolve().parents[1] / DATA).resolve()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real datasets not found at {DATA} (set SET_CY_DATA)")


def _fd_check(model, X, y, h=1e-6):
    _, grads = model.compute_gradients(X, y)
    worst = 0.0
    for li, layer in enumerate(model.trained_layers):
        for arr, gi in ((layer.data, 0), (layer.bias, 1)):
            for k in range(arr.size):
                old = arr[k]
                arr[k] = old + h
                lp, _ = model.compute_gradients(X, y)
                arr[k] = old - h
                lm, _ = model.compute_gradients(X, y)
                arr[k] = old
                num = (lp - lm) / (2 * h)
                worst = max(worst, abs(num - grads[li][gi][k]) / max(1.0, abs(num)))
    return worst


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_gradients_match_finite_differences(activation, loss):
    m = SparseNetwork([6, 9, 7, 3], epsilon=3, seed=1, dtype="float64", dropout=0.0, activation=activation,
                      loss=loss)
    for layer in m.layers:  # keep pre-activations away from the ReLU kink at exactly 0
        layer.bias[:] = np.random.default_rng(5).uniform(0.05, 0.2, layer.n_out)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((5, 6)), rng.integers(0, 3, 5)
    assert _fd_check(m, X, y) < 1e-6


def test_fused_training_step_equals_gradient_then_update():
    kw = dict(epsilon=4, seed=3, dtype="float64", dropout=0.0)
    a, b = SparseNetwork([10, 12, 4], **kw), SparseNetwork([10, 12, 4], **kw)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((8, 10)), rng.integers(0, 4, 8)
    rows = np.arange(8, dtype=np.int64)
    _, grads = b.compute_gradients(X, y)
    for layer, (g, gb) in zip(b.layers, grads):
        layer.apply_gradient(g, gb, 0.1, 0.9, 1e-3)
    a.train_batch(a._check_X(X), y, rows, learning_rate=0.1, momentum=0.9, weight_decay=1e-3)
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_allclose(la.data, lb.data, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(la.bias, lb.bias, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(la.velocity, lb.velocity, rtol=1e-12, atol=1e-12)


def test_er_init_counts_and_shape():
    m = SparseMLP([784, 1000, 1000, 10], epsilon=20, seed=0)
    assert [layer.nnz for layer in m.layers] == [20 * 1784, 20 * 2000, 10 * 1000]  # last one is dense
    assert m.n_neurons == 2794
    assert m.n_parameters == m.n_connections + 2010
    for layer, W in zip(m.layers, m.weights):
        assert isinstance(W, sp.csr_array) and W.shape == (layer.n_in, layer.n_out)
        assert W.has_canonical_format and W.nnz == layer.nnz


def test_allocations_share_the_budget():
    sizes = [100, 50, 50, 3]
    er = allocate_connections(sizes, 10, "er")
    for alloc in ("erk", "uniform"):
        nnz = allocate_connections(sizes, 10, alloc)
        assert abs(sum(nnz) - sum(er)) <= len(sizes)
        assert all(0 < k <= a * b for k, a, b in zip(nnz, sizes[:-1], sizes[1:]))
    uni = allocate_connections(sizes, 10, "uniform")
    dens = [k / (a * b) for k, a, b in zip(uni, sizes[:-1], sizes[1:])]
    assert max(dens) - min(dens) < 0.01


def _canonical(layer):
    for r in range(layer.n_out):
        seg = layer.indices[layer.indptr[r]:layer.indptr[r + 1]]
        assert np.all(np.diff(seg) > 0)
    assert layer.indptr[0] == 0 and layer.indptr[-1] == layer.nnz
    assert layer.indices.min() >= 0 and layer.indices.max() < layer.n_in


@pytest.mark.parametrize("storage", ["full", "compact"])
@pytest.mark.parametrize("criterion", ["signed", "magnitude"])
def test_evolution_invariants(criterion, storage):
    m = SparseMLP([40, 60, 60, 5], epsilon=6, seed=2, storage=storage)
    nnz0 = [layer.nnz for layer in m.layers]
    rng = np.random.default_rng(0)
    for _ in range(25):
        for layer in m.layers:  # pretend training moved the weights and the velocities
            layer.data += rng.standard_normal(layer.nnz).astype(layer.dtype) * 0.05
            layer.velocity[:] = 1.0
        before = [(layer.indptr.copy(), layer.indices.copy(), layer.data.copy()) for layer in m.layers]
        replaced = m.evolve(0.3, criterion=criterion)
        for layer, n0, (indptr0, indices0, vals0), k in zip(m.layers, nnz0, before, replaced):
            assert layer.nnz == n0
            _canonical(layer)
            assert layer.to_scipy().has_canonical_format
            # the survivors (velocity kept) are exactly the connections the criterion did not select,
            # with their values; the new ones have zero velocity
            removed = select_to_remove(vals0, 0.3, criterion)
            assert k == removed.size
            keep = np.ones(n0, bool)
            keep[removed] = False
            rows0 = np.repeat(np.arange(layer.n_out), np.diff(indptr0))
            rows1 = np.repeat(np.arange(layer.n_out), np.diff(layer.indptr))
            old_kept = {(r, c): v for r, c, v in zip(rows0[keep], indices0[keep], vals0[keep])}
            survived = layer.velocity == 1
            now_kept = {(r, c): v for r, c, v in zip(rows1[survived], layer.indices[survived], layer.data[survived])}
            assert now_kept == old_kept
            assert np.count_nonzero(layer.velocity == 0) == k
            # the transposed index (storage="full") is rebuilt with the pattern
            assert (layer.perm is None) == (storage == "compact")
            W = layer.to_scipy().toarray()
            np.testing.assert_array_equal(W[layer.indices, rows1], layer.data)


def test_removed_are_smallest_per_sign():
    vals = np.random.default_rng(0).standard_normal(1000)
    rem = select_to_remove(vals, 0.3, "signed")
    keep = np.setdiff1d(np.arange(1000), rem)
    pos_r, pos_k = vals[rem][vals[rem] >= 0], vals[keep][vals[keep] >= 0]
    neg_r, neg_k = vals[rem][vals[rem] < 0], vals[keep][vals[keep] < 0]
    assert pos_r.max() <= pos_k.min() and neg_r.min() >= neg_k.max()
    assert pos_r.size == round(0.3 * (vals >= 0).sum()) and neg_r.size == round(0.3 * (vals < 0).sum())
    rem = select_to_remove(vals, 0.2, "magnitude")
    keep = np.setdiff1d(np.arange(1000), rem)
    assert rem.size == 200 and np.abs(vals[rem]).max() <= np.abs(vals[keep]).min()


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("density", [0.5, 0.05])
def test_draw_free_positions_uniform_and_disjoint(index_dtype, density):
    rng = np.random.default_rng(0)
    W = sp.random_array((30, 40), density=density, format="csr", rng=1)
    W.indices = W.indices.astype(index_dtype)
    W.indptr = W.indptr.astype(index_dtype)
    dense = W.toarray() != 0
    counts = np.zeros((30, 40))
    for _ in range(300):
        indptr, indices = draw_free_positions(rng, 30, 40, 20, W.indptr, W.indices)
        assert indptr.dtype == indices.dtype == index_dtype and indptr[-1] == 20
        new = sp.csr_array((np.ones(20), indices, indptr), shape=(30, 40))
        assert new.has_canonical_format
        r, c = new.nonzero()
        assert not dense[r, c].any()
        counts[r, c] += 1
    assert counts[dense].sum() == 0
    # every free cell is drawn with probability 20 / n_free per round
    expected = 300 * 20 / (~dense).sum()
    assert abs(counts[~dense].mean() - expected) < 1e-9
    assert counts[~dense].std() < 3 * np.sqrt(expected)
    indptr, _ = draw_free_positions(rng, 30, 40, 1200 - W.nnz, W.indptr, W.indices)  # all that is left
    assert indptr[-1] == 1200 - W.nnz
    with pytest.raises(ValueError, match="only"):
        draw_free_positions(rng, 30, 40, 1201 - W.nnz, W.indptr, W.indices)


def test_zeta_schedules():
    assert zeta_at(0.3, 5, 10, "constant") == 0.3
    assert zeta_at(0.3, 5, 10, "linear") == pytest.approx(0.15)
    assert zeta_at(0.3, 0, 10, "cosine") == pytest.approx(0.3)
    assert zeta_at(0.3, 5, 10, "cosine") == pytest.approx(0.15)
    with pytest.raises(ValueError):
        zeta_at(0.3, 1, 2, "step")


def _toy(n=300, d=20, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 2
    y = rng.integers(0, k, n)
    return (centers[y] + rng.standard_normal((n, d))).astype(np.float32), y


def test_same_seed_same_trajectory_and_thread_independent():
    X, y = _toy()
    runs = []
    for nt in (1, 2, 1):
        m = SparseMLP([20, 50, 50, 3], epsilon=5, seed=7, n_threads=nt)
        h = m.fit(X, y, epochs=3, batch_size=32, verbose=0)
        runs.append((h["loss"], m.layers[0].data.copy(), m.predict_proba(X)))
    for other in runs[1:]:
        assert other[0] == runs[0][0]
        np.testing.assert_array_equal(other[1], runs[0][1])
        np.testing.assert_array_equal(other[2], runs[0][2])


def test_fit_history_partial_batch_and_outputs():
    X, y = _toy(n=250)
    m = SparseMLP([20, 40, 3], epsilon=5, seed=0)
    h = m.fit(X, y, epochs=4, batch_size=64, validation_data=(X, y), verbose=0, zeta_schedule="cosine")
    assert len(h) == 4 and set(h[0]) >= {"loss", "train_accuracy", "val_accuracy", "epoch_time", "evolution_time"}
    assert h[-1]["evolution_time"] == 0.0 and h[0]["evolution_time"] > 0
    assert h["loss"][-1] < h["loss"][0]
    P = m.predict_proba(X)
    assert P.shape == (250, 3) and np.allclose(P.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(m.predict(X), P.argmax(axis=1))
    assert m.score(X, y) > 0.9
    # one-hot targets give the same result as labels
    a = SparseMLP([20, 40, 3], epsilon=5, seed=1)
    b = SparseMLP([20, 40, 3], epsilon=5, seed=1)
    a.fit(X, y, epochs=2, verbose=0)
    b.fit(X, np.eye(3)[y], epochs=2, verbose=0)
    np.testing.assert_array_equal(a.layers[0].data, b.layers[0].data)


def test_float64_input_to_float32_model_and_sparse_input():
    X, y = _toy(n=60)
    m = SparseMLP([20, 30, 3], epsilon=5, seed=0)
    p32 = m.predict_proba(X)
    assert p32.dtype == np.float32
    np.testing.assert_array_equal(m.predict_proba(X.astype(np.float64)), p32)
    np.testing.assert_array_equal(m.predict_proba(sp.csr_array(X)), p32)


@pytest.mark.parametrize("bad,exc,msg", [
    (lambda X, y: (X[:, :5], y), ValueError, "has 5 features but the network expects 20"),
    (lambda X, y: (np.where(X > 2, np.nan, X), y), ValueError, "NaN or infinity"),
    (lambda X, y: (X[:0], y[:0]), ValueError, "empty"),
    (lambda X, y: (X, y + 5), ValueError, r"labels in y must be in \[0, 2\]"),
    (lambda X, y: (X, y[:10]), ValueError, "y must have shape"),
    (lambda X, y: (X.astype(str), y), TypeError, "must be numeric"),
    (lambda X, y: (X, y + 0.5), ValueError, "integer class labels"),
    (lambda X, y: (X[0], y), ValueError, "must be 2-D"),
])
def test_input_validation(bad, exc, msg):
    X, y = _toy(n=40)
    m = SparseMLP([20, 10, 3], epsilon=3, seed=0)
    Xb, yb = bad(X, y)
    with pytest.raises(exc, match=msg):
        m.fit(Xb, yb, epochs=1, verbose=0)


def test_constructor_and_fit_argument_errors():
    with pytest.raises(ValueError, match="layer_sizes"):
        SparseMLP([10])
    with pytest.raises(ValueError, match="activation must be one of"):
        SparseMLP([4, 3], activation="gelu")
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        SparseMLP([4, 3], dtype="int8")
    with pytest.raises(ValueError, match="dropout must be <= 0.99"):
        SparseMLP([4, 3], dropout=1.0)
    m = SparseMLP([4, 3], epsilon=1, seed=0)
    X, y = np.zeros((5, 4), np.float32), np.zeros(5, int)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        m.fit(X, y, epochs=0)
    with pytest.raises(ValueError, match="zeta must be < 1"):
        m.fit(X, y, epochs=2, zeta=1.0)
    with pytest.raises(ValueError, match="resume=True but"):
        m.fit(X, y, epochs=2, resume=True)


def test_save_load_identical_predictions(tmp_path):
    X, y = _toy()
    m = SparseMLP([20, 40, 40, 3], epsilon=5, seed=0, activation="all_relu", dtype="float64")
    m.fit(X, y, epochs=2, verbose=0)
    path = m.save(tmp_path / "m.npz")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    with np.load(path, allow_pickle=False) as f:  # no pickled objects inside
        assert "config" in f.files
    m2 = SparseMLP.load(path)
    np.testing.assert_array_equal(m2.predict_proba(X), m.predict_proba(X))
    assert m2.history_["loss"] == m.history_["loss"] and m2.activation == "all_relu"
    with pytest.raises(ValueError, match="not a set_cy model"):
        np.savez(tmp_path / "other.npz", a=np.zeros(2))
        SparseMLP.load(tmp_path / "other.npz")


class _StopAt(Callback):
    def __init__(self, epoch, batch, path):
        self.epoch, self.batch, self.path = epoch, batch, path
        self.current = None

    def on_epoch_begin(self, model, epoch, logs):
        self.current = epoch

    def on_batch_end(self, model, batch, logs):
        if self.current == self.epoch and batch == self.batch:
            model.stop_training = True
            model.save(self.path)


def assert_resumes_exactly(tmp_path, X, y, sizes, fit, stop, **network):
    """Fit ``SparseMLP(sizes, **network)`` with ``fit`` once uninterrupted and once stopped at ``stop``
    (epoch, batch), saved, loaded and resumed; assert the two end bit for bit equal. Returns both
    (uninterrupted, resumed) and the network loaded from the checkpoint."""
    full = SparseMLP(sizes, **network)
    full.fit(X, y, **fit)
    part = SparseMLP(sizes, **network)
    part.fit(X, y, callbacks=[_StopAt(*stop, tmp_path / "ckpt.npz")], **fit)
    resumed = SparseMLP.load(tmp_path / "ckpt.npz")
    loaded_sizes = list(resumed.layer_sizes)
    resumed.fit(X, y, resume=True, **fit)
    assert resumed.history_["loss"] == full.history_["loss"] and resumed.layer_sizes == full.layer_sizes
    for a, b in zip(resumed.trained_layers, full.trained_layers):
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.velocity, b.velocity)
    return full, resumed, loaded_sizes


@pytest.mark.parametrize("stop_batch", [2, 7])  # mid-epoch, and at the end of the epoch (8 batches)
def test_resume_from_checkpoint_reproduces_uninterrupted_run(tmp_path, stop_batch):
    X, y = _toy(n=250)
    kw = dict(epochs=4, batch_size=32, verbose=0, zeta=0.3, zeta_schedule="linear")
    assert_resumes_exactly(tmp_path, X, y, [20, 30, 30, 3], kw, (1, stop_batch), epsilon=5, seed=11)


@needs_data
@pytest.mark.parametrize("name,sizes,epochs,threshold", [
    ("lung_small", [325, 400, 400, 7], 40, 0.70),   # 7 classes: chance ~0.14-0.3
    ("ALLAML", [7129, 400, 400, 2], 20, 0.80),
    ("madelon-nips", [500, 1000, 1000, 2], 40, 0.57),  # hard for MLPs (20 informative of 500): ~0.60 measured
])
def test_learns_real_data(name, sizes, epochs, threshold):
    from set_cy.datasets import load_dataset

    d = load_dataset(name, data_dir=DATA)
    act = "all_relu" if name.startswith("madelon") else "relu"
    m = SparseMLP(sizes, epsilon=10, seed=0, activation=act)
    m.fit(d.X_train, d.y_train, epochs=epochs, batch_size=16 if d.n_train < 500 else 32, learning_rate=0.01,
          verbose=0)
    acc = m.score(d.X_test, d.y_test)
    majority = np.bincount(d.y_test).max() / d.y_test.size
    assert acc >= threshold and acc > majority + 0.05, (acc, majority)


def test_small_batch_scatter_backward_gives_the_same_gradients(monkeypatch):
    import set_cy.sizing as sizing

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((3, 30)), rng.integers(0, 4, 3)
    ref = SparseNetwork([30, 50, 40, 4], epsilon=5, seed=4, dtype="float64", dropout=0.0)
    _, g_ref = ref.compute_gradients(X, y)
    monkeypatch.setattr(sizing, "SCATTER_MIN_VALUE_BYTES", 0)
    m = SparseNetwork([30, 50, 40, 4], epsilon=5, seed=4, dtype="float64", dropout=0.0)
    _, g = m.compute_gradients(X, y)
    assert m._buffers["scratch"] is not None
    for (a, ab), (b, bb) in zip(g, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ab, bb, rtol=1e-12, atol=1e-12)


def test_layer_round_trips_through_scipy_and_threads_can_change():
    from set_cy.layers import SparseLayer

    W = sp.random_array((30, 20), density=0.2, format="csr", dtype=np.float64, rng=3)
    layer = SparseLayer.from_scipy(W, bias=np.arange(20.0))
    back = layer.to_scipy()
    np.testing.assert_array_equal(back.toarray(), W.toarray())
    assert back.has_canonical_format and layer.nnz == W.nnz
    X = np.random.default_rng(0).standard_normal((30, 4))
    out = np.empty((20, 4))
    layer.forward(np.ascontiguousarray(X), out)
    np.testing.assert_allclose(out, W.toarray().T @ X + np.arange(20.0)[:, None], rtol=1e-12, atol=1e-12)

    m = SparseMLP([10, 8, 3], epsilon=2, seed=0, n_threads=1)
    m.set_n_threads(2)
    assert m.n_threads == 2 and all(layer.n_threads == 2 for layer in m.layers)
    with pytest.raises(ValueError, match="n_threads must be >= 1"):
        m.set_n_threads(0)


def test_input_strength_and_degree_match_dense_weights():
    m = SparseMLP([40, 30, 3], epsilon=3, seed=4)
    W = m.weights[0].toarray()
    np.testing.assert_allclose(m.input_strength(), np.abs(W).sum(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(m.input_degree(), (W != 0).sum(axis=1))
    s = m.input_strength(normalize=True)
    assert s.dtype == np.float64 and s.shape == (40,)
    assert abs(s.sum() - 1.0) < 1e-12


def test_divergence_is_reported_once_per_fit():
    rng = np.random.default_rng(0)
    X = (100 * rng.standard_normal((64, 20))).astype(np.float32)
    y = rng.integers(0, 3, 64)
    m = SparseMLP([20, 30, 3], epsilon=5, seed=0)
    with pytest.warns(RuntimeWarning, match="training diverged") as rec, np.errstate(all="ignore"):
        h = m.fit(X, y, epochs=3, batch_size=8, learning_rate=50.0, verbose=0)
    assert not np.isfinite(h["loss"][-1])
    assert sum("training diverged" in str(w.message) for w in rec) == 1
