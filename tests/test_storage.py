"""storage="compact": layers without the transposed index train as the full ones do, in less memory."""
import numpy as np
import pytest

from set_cy import SparseMLP
from set_cy.layers import SparseLayer
from set_cy.model import SparseNetwork
from set_cy.sizing import estimate_memory


def _data(n=96, d=30, k=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (X[:, :k] @ rng.standard_normal(k) > 0).astype(np.int64) + 2 * (X[:, k] > 0)
    return X, y


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_compact_trains_as_full(dtype, n_threads):
    X, y = _data()
    kw = dict(epsilon=5, seed=3, dtype=dtype, n_threads=n_threads, dropout=0.2)
    full = SparseMLP([30, 50, 40, 4], **kw)
    compact = SparseMLP([30, 50, 40, 4], storage="compact", **kw)
    for a, b in zip(full.layers, compact.layers):  # same draw: same topology and values
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.data, b.data)
        assert b.t_indptr is None and b.t_indices is None and b.perm is None and b.storage == "compact"
    fit = dict(epochs=4, batch_size=16, learning_rate=0.05, verbose=0)  # 3 evolution steps in between
    h_full = full.fit(X, y, **fit)
    h_compact = compact.fit(X, y, **fit)
    rtol = 2e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(h_compact["loss"], h_full["loss"], rtol=rtol)
    for a, b in zip(full.layers, compact.layers):
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_allclose(b.data, a.data, rtol=rtol, atol=1e-6 if dtype == "float32" else 1e-12)
        np.testing.assert_allclose(b.to_scipy().toarray(), a.to_scipy().toarray(), rtol=rtol,
                                   atol=1e-6 if dtype == "float32" else 1e-12)
    np.testing.assert_array_equal(full.predict(X), compact.predict(X))


def test_compact_backward_input_equals_full():
    rng = np.random.default_rng(1)
    for n_in, n_out, nnz in ((300, 200, 2000), (50, 700, 3000)):
        full = SparseLayer.random(n_in, n_out, nnz, np.random.default_rng(2), n_threads=2)
        compact = SparseLayer(n_in, n_out, full.indptr, full.indices, full.data, storage="compact", n_threads=2)
        for batch in (1, 4, 32, 128):
            dY = rng.standard_normal((n_out, batch)).astype(np.float32)
            ref = full.to_scipy().toarray() @ dY
            outs = []
            for layer in (full, compact):
                out = np.full((n_in, batch), np.nan, np.float32)
                layer.backward_input(dY, out)
                outs.append(out)
            np.testing.assert_allclose(outs[1], ref, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("storage", ["full", "compact"])
def test_estimate_counts_the_model_exactly(dtype, storage):
    sizes = [300, 2000, 1500, 7]
    est = estimate_memory(sizes, 10, 32, dtype=dtype, storage=storage)
    m = SparseNetwork(sizes, epsilon=10, dtype=dtype, seed=0, storage=storage)
    assert est["weights"] == m.nbytes
    assert est["connections"] == m.n_connections


def test_compact_saves_eight_bytes_per_connection_with_int32():
    sizes = [300, 2000, 1500, 7]
    full = estimate_memory(sizes, 10, 32, storage="full")
    compact = estimate_memory(sizes, 10, 32, storage="compact")
    n_in = sum(sizes[:-1])  # the transposed offsets: one per input neuron and layer, plus one per layer
    assert full["weights"] - compact["weights"] == 8 * full["connections"] + 4 * (n_in + len(sizes) - 1)
    m = SparseNetwork(sizes, epsilon=10, seed=0, storage="compact")
    per_neuron = sum(a.indptr.nbytes + a.bias.nbytes + a.bias_velocity.nbytes for a in m.layers)
    assert m.nbytes - per_neuron == 12 * m.n_connections  # value, velocity and index: 4 bytes each


def test_compact_evolution_invariants():
    m = SparseMLP([40, 60, 60, 5], epsilon=6, seed=2, storage="compact")
    ref = SparseMLP([40, 60, 60, 5], epsilon=6, seed=2)
    rng = np.random.default_rng(0)
    nnz0 = [layer.nnz for layer in m.layers]
    for _ in range(10):
        for a, b in zip(m.layers, ref.layers):
            noise = rng.standard_normal(a.nnz).astype(a.dtype) * 0.05
            a.data += noise
            b.data += noise
        assert m.evolve(0.3) == ref.evolve(0.3)
        for layer, other, n0 in zip(m.layers, ref.layers, nnz0):
            assert layer.nnz == n0 and layer.perm is None
            W = layer.to_scipy()
            assert W.has_canonical_format and W.nnz == n0
            np.testing.assert_array_equal(layer.indptr, other.indptr)  # same rule, same draws
            np.testing.assert_array_equal(layer.indices, other.indices)
            np.testing.assert_array_equal(layer.data, other.data)
            np.testing.assert_array_equal(W.toarray(), other.to_scipy().toarray())


def test_compact_save_load_and_errors(tmp_path):
    X, y = _data()
    m = SparseMLP([30, 40, 4], epsilon=5, seed=1, storage="compact")
    m.fit(X, y, epochs=2, batch_size=16, verbose=0)
    path = m.save(tmp_path / "m.npz")
    back = SparseMLP.load(path)
    assert back.storage == "compact" and all(layer.storage == "compact" and layer.perm is None
                                             for layer in back.layers)
    np.testing.assert_array_equal(back.predict_proba(X), m.predict_proba(X))
    with pytest.raises(ValueError, match="backend='openmp'"):
        m.fit(X, y, epochs=1, backend="threads", n_jobs=2, verbose=0)
    with pytest.raises(ValueError, match="storage must be one of"):
        SparseNetwork([5, 3], storage="small")
    layer = m.layers[0]
    with pytest.raises(ValueError, match="no transposed index"):
        full = SparseLayer.random(30, 40, 100, np.random.default_rng(0))
        SparseLayer(30, 40, full.indptr, full.indices, full.data, t_indptr=full.t_indptr,
                    t_indices=full.t_indices, perm=full.perm, storage="compact")
    with pytest.raises(ValueError, match="storage"):
        SparseNetwork.from_layers([SparseLayer.random(30, 40, 100, np.random.default_rng(0)),
                                   SparseLayer(40, 4, m.layers[1].indptr, m.layers[1].indices, m.layers[1].data,
                                               storage="compact")], storage="compact")
    assert "compact" in repr(layer)


def test_evolution_releases_the_batch_buffers():
    X, y = _data()
    m = SparseMLP([30, 40, 4], epsilon=5, seed=1)
    m.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert m._buffers is not None
    m.evolve(0.3)
    assert m._buffers is None  # rebuilt at the next batch
    m.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert m._buffers is not None


@pytest.mark.parametrize("storage,activation_dtype", [("full", None), ("compact", None), ("full", "bfloat16"),
                                                      ("compact", "bfloat16")])
def test_estimate_bounds_the_traced_peak_of_a_fit(storage, activation_dtype):
    import tracemalloc

    sizes, eps, batch = [200, 6000, 6000, 10], 20, 32
    X, y = _data(n=64, d=200, k=4)
    est = estimate_memory(sizes, eps, batch, storage=storage, activation_dtype=activation_dtype)
    assert est["total"] == est["weights"] + max(est["activations"], est["transient"])
    tracemalloc.start()
    try:
        m = SparseMLP(sizes, epsilon=eps, seed=0, storage=storage, n_threads=2, activation_dtype=activation_dtype)
        m.fit(X, y, epochs=2, batch_size=batch, verbose=0)  # build, an epoch, evolution, an epoch
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert m.nbytes == est["weights"]
    # what the estimate leaves out: the inputs' float32 copy, a shuffled order, small Python objects
    assert peak <= est["total"] + 3 * X.nbytes + (1 << 20), (peak, est)
    assert peak >= est["weights"] + 0.5 * max(est["activations"], est["transient"]), (peak, est)


def test_compact_with_input_pruning_and_clipping_matches_full():
    X, y = _data(n=80, d=40)
    fit = dict(epochs=6, batch_size=16, learning_rate=0.05, verbose=0, prune_inputs=0.3, prune_every=2,
               min_inputs=10, clip_norm=1.0)
    models = [SparseMLP([40, 30, 4], epsilon=4, seed=5, storage=s) for s in ("full", "compact")]
    hists = [m.fit(X, y, **fit) for m in models]
    np.testing.assert_allclose(hists[1]["loss"], hists[0]["loss"], rtol=2e-4)
    np.testing.assert_array_equal(models[1].input_mask_, models[0].input_mask_)
    assert models[1].input_mask_.sum() < 40
    for a, b in zip(models[0].layers, models[1].layers):
        np.testing.assert_array_equal(a.indices, b.indices)
