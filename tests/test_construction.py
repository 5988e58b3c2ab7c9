"""One way to make a layer from arrays and a network from layers, both checked; atomic model files."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from set_cy import SparseMLP, SparseNetwork
from set_cy.layers import SparseLayer
from set_cy.persistence import read_network_file
from set_cy.sizing import allocate_connections


def _arrays(seed=0, n_in=12, n_out=7, nnz=30, dtype=np.float64, idx=np.int32):
    layer = SparseLayer.random(n_in, n_out, nnz, np.random.default_rng(seed), dtype=dtype)
    out = {k: v.copy() for k, v in layer.arrays().items()}
    out["indptr"], out["indices"] = out["indptr"].astype(idx), out["indices"].astype(idx)
    for k in SparseLayer.TRANSPOSE:
        out[k] = out[k].astype(idx)
    out["bias"] = np.random.default_rng(seed).standard_normal(n_out).astype(dtype)
    return out


def _set(a, i, v):
    a = a.copy()
    a[i] = v
    return a


BAD_LAYERS = {
    "index out of range": ("indices", lambda a: _set(a, 3, 12), "column indices outside"),
    "negative index": ("indices", lambda a: _set(a, 0, -1), "column indices outside"),
    "indptr decreasing": ("indptr", lambda a: _set(a, 2, a[3] + 1), "not a valid CSR structure"),
    "indptr end short": ("indptr", lambda a: _set(a, -1, a[-1] - 1), "not a valid CSR structure"),
    "unsorted row": ("indices", lambda a: _set(a, slice(a.size - 2, a.size), a[-2:][::-1]), "canonical"),
    "short values": ("data", lambda a: a[:-1], "layer_data has length"),
    "NaN velocity": ("velocity", lambda a: _set(a, 0, np.nan), "layer_velocity holds NaN"),
    "float32 bias": ("bias", lambda a: a.astype(np.float32), "layer_bias has dtype float32"),
    "index dtypes differ": ("indices", lambda a: a.astype(np.int64), "share dtype"),
    "2-D bias": ("bias", lambda a: a.reshape(1, -1), "must be 1-D"),
    "wrong perm": ("perm", lambda a: a[::-1].copy(), "perm is not the transposed index"),
    "wrong t_indptr": ("t_indptr", lambda a: _set(a, 1, a[1] + 1), "t_indptr is not the transposed index"),
}


@pytest.mark.parametrize("case", list(BAD_LAYERS))
def test_layer_from_bad_arrays_raises_naming_the_array(case):
    key, fn, message = BAD_LAYERS[case]
    arrays = _arrays()
    arrays[key] = fn(arrays[key])
    with pytest.raises(ValueError, match=message):
        SparseLayer(12, 7, **arrays)


def test_layer_arguments_and_the_trusted_path():
    arrays = _arrays()
    layer = SparseLayer(12, 7, **arrays)
    for k, v in arrays.items():
        assert np.array_equal(getattr(layer, k), v)
    with pytest.raises(ValueError, match="go together"):
        SparseLayer(12, 7, arrays["indptr"], arrays["indices"], arrays["data"], perm=arrays["perm"])
    with pytest.raises(ValueError, match="n_in must be a positive int"):
        SparseLayer(0, 7, arrays["indptr"], arrays["indices"], arrays["data"])
    with pytest.raises(ValueError, match="init must be one of"):
        SparseLayer(12, 7, arrays["indptr"], arrays["indices"], arrays["data"], init="ones")
    with pytest.raises(TypeError, match="float32 or float64"):
        SparseLayer(12, 7, arrays["indptr"], arrays["indices"], arrays["data"].astype(np.int64))
    # a layer over another's arrays (what the parallel engines do): the same memory, no copies
    over = SparseLayer(12, 7, **layer.arrays(), trusted=True)
    assert all(np.shares_memory(getattr(over, k), v) for k, v in layer.arrays().items())
    # omitted buffers start at zero; the transposed index is built
    bare = SparseLayer(12, 7, arrays["indptr"], arrays["indices"], arrays["data"], name="layer3")
    assert not bare.bias.any() and not bare.velocity.any() and np.array_equal(bare.perm, arrays["perm"])
    with pytest.raises(ValueError, match="layer3_data has length"):
        SparseLayer(12, 7, arrays["indptr"], arrays["indices"], arrays["data"][:-1], name="layer3")


def test_network_from_layers_checks_the_chain_and_gives_the_same_model():
    net = SparseNetwork([12, 9, 4], epsilon=2, seed=1, dtype="float64", dropout=0.0)
    X = np.random.default_rng(0).standard_normal((5, 12))
    layers = [SparseLayer(layer.n_in, layer.n_out, **{k: v.copy() for k, v in layer.arrays().items()})
              for layer in net.layers]
    same = SparseNetwork.from_layers(layers, n_threads=1, **net._config())
    np.testing.assert_array_equal(same.predict_proba(X), net.predict_proba(X))
    assert same.layer_sizes == [12, 9, 4] and all(layer.n_threads == 1 for layer in same.layers)
    with pytest.raises(ValueError, match="layer 0 has 9 outputs but layer 1 has 12 inputs"):
        SparseNetwork.from_layers([layers[0], layers[0]])
    with pytest.raises(ValueError, match="do not match the layers"):
        SparseNetwork.from_layers(layers, layer_sizes=[12, 8, 4], dtype="float64")
    with pytest.raises(ValueError, match="not float32"):
        SparseNetwork.from_layers(layers)  # dtype defaults to float32
    with pytest.raises(TypeError, match="SparseLayer"):
        SparseNetwork.from_layers([])
    assert type(SparseMLP.from_layers(layers, dtype="float64")) is SparseMLP


def test_model_file_with_unknown_arrays_is_refused(tmp_path):
    m = SparseMLP([10, 6, 3], epsilon=2, seed=0)
    m.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    assert read_network_file(tmp_path / "m.npz")["config"]["layer_sizes"] == [10, 6, 3]
    np.savez(tmp_path / "extra.npz", **arrays, layer2_indptr=np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="unknown arrays"):
        SparseMLP.load(tmp_path / "extra.npz")
    np.savez(tmp_path / "version.npz", **{**arrays, "format_version": np.array(2)})
    with pytest.raises(ValueError, match="format version"):
        SparseMLP.load(tmp_path / "version.npz")


SAVER = textwrap.dedent("""
    import sys
    from set_cy import SparseMLP
    m = SparseMLP([3000, 3000, 3000, 10], epsilon=150, seed=0)
    m.save(sys.argv[1])
    print("first", flush=True)
    while True:
        m.meta_["n"] = m.meta_.get("n", 0) + 1
        m.save(sys.argv[1])
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_save_killed_part_way_leaves_the_previous_file_intact(tmp_path):
    """Kill a process that does nothing but save, at several moments: the file always loads."""
    path = tmp_path / "model.npz"
    killed_mid_save = 0
    for delay in (0.05, 0.13, 0.21, 0.34, 0.55):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "first"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".set_cy-")]
        killed_mid_save += bool(leftovers)
        for p in leftovers:
            os.unlink(tmp_path / p)
        m = SparseMLP.load(path)
        sizes = [3000, 3000, 3000, 10]
        assert m.layer_sizes == sizes and m.n_connections == sum(allocate_connections(sizes, 150))
    assert killed_mid_save >= 1, "no kill landed inside a save: the test did not test anything"


def test_layer_arrays_that_overlap_are_refused():
    arrays = _arrays()
    with pytest.raises(ValueError, match="layer_data and layer_velocity must not share memory"):
        SparseLayer(12, 7, **{**arrays, "velocity": arrays["data"]})
    idx = arrays["indices"]
    with pytest.raises(ValueError, match="must not share memory"):
        SparseLayer(12, 7, arrays["indptr"], idx, idx.view(np.float32))


def test_public_pattern_views_are_read_only():
    from set_cy import SparseLinear, ops

    lin = SparseLinear(10, 5, nnz=20, seed=0)
    for a in (lin.indptr, lin.indices, lin.csr_order):
        with pytest.raises(ValueError, match="read-only"):
            a[0] = 10 ** 6
    op = ops.SparseOperator(lin.to_scipy())
    with pytest.raises(ValueError):
        op.csr_order.flags.writeable = True  # a view of a frozen array stays frozen


def test_rows_handed_to_the_network_are_checked():
    net = SparseNetwork([8, 6, 3], epsilon=2, seed=0, dtype="float64")
    X, y = np.random.default_rng(0).standard_normal((5, 8)), np.arange(5) % 3
    for rows in ([5], [-1], [10 ** 12], [[0, 1]]):
        with pytest.raises(ValueError, match="rows must be a 1-D int64 array"):
            net.compute_gradients(X, y, rows=rows)
    with pytest.raises(ValueError, match="rows must be a 1-D int64 array"):
        net.train_batch(X, y, np.array([0, 7]), learning_rate=0.1)
    loss, _ = net.compute_gradients(X, y, rows=[0, 4])
    assert np.isfinite(loss)
