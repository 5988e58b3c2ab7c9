"""The rules of dynamic sparse training (set_cy.evolution): SET's defaults unchanged bit for bit, the
gradient at sampled positions against a dense NumPy reference, gradient growth, momentum pruning, custom
rules, and the rules reached from fit, the estimators, the layer API, the torch bridge and the CLI."""
import numpy as np
import pytest
from conftest import DTYPES, THREADS

from set_cy import SparseLinear, SparseMLP
from set_cy import evolution as ev
from set_cy.evolution import make_drop_rule, make_grow_rule, select_to_remove
from set_cy.layers import SparseLayer
from set_cy.patterns import draw_free_positions, draw_free_positions_in, drop_entries, row_ids


def _toy(n=160, d=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (np.argmax(X[:, :classes], axis=1)).astype(np.int64)
    return X, y


def _dense_gradients(m, X, y):
    """dL/dW of every trained layer (dense, (n_in, n_out)) of a ReLU network with softmax cross-entropy,
    mean over the batch, no dropout: the reference for SparseNetwork.gradient_at."""
    Ws = [W.toarray().astype(np.float64) for W in m.weights]
    bs = [b.astype(np.float64) for b in m.biases]
    X = X.astype(np.float64)
    acts, zs = [X], []
    for i, (W, b) in enumerate(zip(Ws, bs)):
        z = acts[-1] @ W + b
        zs.append(z)
        acts.append(np.maximum(z, 0) if i < len(Ws) - 1 else z)
    logits = acts[-1] + (X @ m.linear_weights.toarray() if m.linear_layer is not None else 0)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    delta = p
    delta[np.arange(len(y)), y] -= 1
    delta /= len(y)
    grads = [None] * len(Ws)
    linear = X.T @ delta if m.linear_layer is not None else None
    for i in range(len(Ws) - 1, -1, -1):
        grads[i] = acts[i].T @ delta
        if i:
            delta = (delta @ Ws[i].T) * (zs[i - 1] > 0)
    return grads + ([linear] if linear is not None else [])


# ----------------------------------------------------------------------------------------------------
# the defaults are SET, as before the rules existed
@pytest.mark.parametrize("with_inputs", [False, True])
@pytest.mark.parametrize("criterion", ["signed", "magnitude"])
def test_default_rules_are_set_bit_for_bit(criterion, with_inputs):
    """A layer's step with the default rules is SET's definition: the connections select_to_remove picks
    go, new ones are draw_free_positions(_in) of the kept pattern with the same generator, at zero."""
    rng = np.random.default_rng(3)
    layer = SparseLayer.random(30, 20, 150, rng, dtype=np.float32)
    layer.data[:] = rng.standard_normal(layer.nnz)
    layer.velocity[:] = rng.standard_normal(layer.nnz)
    inputs = np.arange(0, 30, 2) if with_inputs else None
    data, velocity = layer.data.copy(), layer.velocity.copy()
    indptr, indices = layer.indptr.copy(), layer.indices.copy()
    # the definition, spelt out with the pattern helpers
    ref_rng = np.random.default_rng(11)
    keep = np.ones(layer.nnz, bool)
    if inputs is None:
        keep[select_to_remove(data, 0.3, criterion)] = False
    else:
        on = np.flatnonzero(np.isin(indices, inputs))
        keep[on[select_to_remove(data[on], 0.3, criterion)]] = False
        parked = np.flatnonzero(~np.isin(indices, inputs))
        keep[ref_rng.choice(parked, parked.size, replace=False)] = False  # room for all of them
    k_indptr, k_indices = drop_entries(indptr, indices, keep.view(np.uint8), 1)
    k = int((~keep).sum())
    if inputs is None:
        b_indptr, b_indices = draw_free_positions(ref_rng, 20, 30, k, k_indptr, k_indices)
    else:
        b_indptr, b_indices = draw_free_positions_in(ref_rng, 20, 30, k, k_indptr, k_indices, inputs)
    expected = {(r, c): (v, u) for r, c, v, u in zip(row_ids(indptr)[keep], indices[keep], data[keep],
                                                      velocity[keep])}
    expected.update({(r, c): (0.0, 0.0) for r, c in zip(row_ids(b_indptr), b_indices)})

    assert layer.evolve(0.3, np.random.default_rng(11), criterion=criterion, new_weights="zeros",
                        inputs=inputs) == k
    got = {(r, c): (v, u) for r, c, v, u in zip(row_ids(layer.indptr), layer.indices, layer.data, layer.velocity)}
    assert got == expected
    # named rules and rule objects are the same thing
    twin = SparseLayer.random(30, 20, 150, np.random.default_rng(3), dtype=np.float32)
    twin.data[:], twin.velocity[:] = data, velocity
    twin.indptr[:], twin.indices[:] = indptr, indices
    twin._build_transpose()
    twin.evolve(0.3, np.random.default_rng(11), criterion=make_drop_rule(criterion), grow=ev.RandomGrowth(),
                new_weights="zeros", inputs=inputs)
    np.testing.assert_array_equal(twin.indices, layer.indices)
    np.testing.assert_array_equal(twin.data, layer.data)


def test_fit_with_the_default_rules_named_equals_the_default_fit():
    X, y = _toy()
    a = SparseMLP([12, 30, 30, 3], epsilon=4, seed=5)
    b = SparseMLP([12, 30, 30, 3], epsilon=4, seed=5)
    a.fit(X, y, epochs=4, batch_size=32, verbose=0)
    b.fit(X, y, epochs=4, batch_size=32, verbose=0, criterion="signed", grow="random", grow_candidates=3)
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(la.indices, lb.indices)
        np.testing.assert_array_equal(la.data, lb.data)


# ----------------------------------------------------------------------------------------------------
# the gradient at any positions
@pytest.mark.parametrize("n_threads", THREADS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("linear_path", [False, True])
def test_gradient_at_positions_equals_the_dense_gradient(dtype, n_threads, linear_path):
    X, y = _toy(n=50)
    m = SparseMLP([12, 25, 18, 3], epsilon=3, seed=1, dtype=dtype, n_threads=n_threads, linear_path=linear_path)
    m.fit(X, y, epochs=2, batch_size=16, verbose=0)  # trained: the linear path is no longer zero
    dense = _dense_gradients(m, X, y)
    rng = np.random.default_rng(0)
    positions = []
    for layer in m.trained_layers:  # every cell of small layers, stored or not, in a random order
        cells = rng.permutation(layer.n_in * layer.n_out)
        positions.append((cells // layer.n_out, cells % layer.n_out))
    got = m.gradient_at(X, y, positions)
    tol = dict(rtol=2e-4, atol=2e-6) if np.dtype(dtype) == np.float32 else dict(rtol=1e-10, atol=1e-13)
    for g, G, (r, c) in zip(got, dense, positions):
        assert g.dtype == np.dtype(dtype)
        np.testing.assert_allclose(g, G[r, c], **tol)
    # the check can fail: the gradient at other positions than those asked for does not pass it
    r, c = positions[0]
    wrong = m.gradient_at(X, y, [(r, (c + 1) % m.layers[0].n_out)] + [None] * (len(positions) - 1))[0]
    assert not np.allclose(wrong, dense[0][r, c], **tol)
    # samples: rows= takes a subset, the same as passing only those samples
    sub = m.gradient_at(X, y, positions, rows=np.arange(10))
    np.testing.assert_allclose(sub[1], _dense_gradients(m, X[:10], y[:10])[1][positions[1]], **tol)


def test_gradient_at_checks_its_arguments():
    X, y = _toy(n=20)
    m = SparseMLP([12, 10, 3], epsilon=2, seed=0)
    with pytest.raises(ValueError, match="positions must be a list of 2"):
        m.gradient_at(X, y, [None])
    with pytest.raises(ValueError, match="out of range"):
        m.gradient_at(X, y, [(np.array([12]), np.array([0])), None])
    with pytest.raises(ValueError, match="one length"):
        m.gradient_at(X, y, [(np.array([1, 2]), np.array([0])), None])
    with pytest.raises(ValueError, match="rows out of range"):
        m.gradient_at(X, y, [None, None], rows=[0, 20])


# ----------------------------------------------------------------------------------------------------
# gradient growth
def test_gradient_growth_keeps_the_largest_candidates():
    """Few free cells: the candidates are drawn without repeats among them, the top |gradient| grow."""
    rng = np.random.default_rng(0)
    G = rng.standard_normal((20, 30))  # a known "gradient" of W^T: rows outputs, columns inputs
    kept_indptr, kept_indices = draw_free_positions(rng, 20, 30, 100, index_dtype=np.int32)
    asked = []

    def score(indptr, indices):
        asked.append((indptr.copy(), indices.copy()))
        return G[row_ids(indptr), indices]

    # 500 free cells <= 4 x 3 x 50: 3 x 50 candidates drawn without repeats
    indptr, indices = ev.GradientGrowth(candidates=3).grow(rng, 20, 30, 50, kept_indptr, kept_indices, score=score)
    (c_indptr, c_indices), = asked
    assert c_indices.size == 150
    kept = set(zip(row_ids(kept_indptr), kept_indices))
    drawn = set(zip(row_ids(c_indptr), c_indices))
    assert len(drawn) == 150 and not drawn & kept
    chosen = set(zip(row_ids(indptr), indices))
    assert chosen == set(sorted(drawn, key=lambda p: -abs(G[p]))[:50])
    # more candidates than free cells: every free cell is a candidate, the top ones grow
    full = ev.GradientGrowth(candidates=1000).grow(rng, 20, 30, 50, kept_indptr, kept_indices, score=score)
    assert asked[-1][1].size == 600 - 100
    free_mag = np.sort(np.abs(G[row_ids(asked[-1][0]), asked[-1][1]]))[::-1]
    assert np.isclose(np.abs(G[row_ids(full[0]), full[1]]).min(), free_mag[49])
    with pytest.raises(ValueError, match="needs the gradient"):
        ev.GradientGrowth().grow(rng, 20, 30, 5, kept_indptr, kept_indices)


@pytest.mark.parametrize("with_inputs", [False, True])
def test_streamed_gradient_growth_is_the_top_of_every_candidate(monkeypatch, with_inputs):
    """Many free cells: candidates streamed in chunks (made small here), only those above the running
    threshold kept; what grows is the top of all the free candidates scored, in the preferred inputs."""
    monkeypatch.setattr(ev.GradientGrowth, "CHUNK", 64)
    rng = np.random.default_rng(1)
    n_rows, n_cols = 300, 400
    kept_indptr, kept_indices = draw_free_positions(rng, n_rows, n_cols, 2000, index_dtype=np.int32)
    inputs = np.arange(0, n_cols, 3) if with_inputs else None
    asked = []

    def g(rows, cols):
        return np.sin(rows * 12.9898 + cols * 78.233) * 43758.5453 % 1.0 - 0.5  # fixed, irregular

    def score(indptr, indices):
        asked.append((row_ids(indptr).copy(), indices.copy()))
        return g(asked[-1][0], indices)

    indptr, indices = ev.GradientGrowth(candidates=5).grow(rng, n_rows, n_cols, 100, kept_indptr, kept_indices,
                                                           inputs=inputs, score=score)
    assert sum(c.size for _, c in asked) == 500 and len(asked) == 8  # 5 x 100 in chunks of 64
    kept = set(zip(row_ids(kept_indptr), kept_indices))
    seen = {(r, c) for rows, cols in asked for r, c in zip(rows, cols)} - kept
    chosen = set(zip(row_ids(indptr), indices))
    assert len(chosen) == 100 and indices.size == 100 and not chosen & kept
    assert chosen == set(sorted(seen, key=lambda p: -abs(g(*p)))[:100])
    if with_inputs:
        assert np.all(np.isin(indices, inputs))
    for r in range(n_rows):  # canonical
        assert np.all(np.diff(indices[indptr[r]:indptr[r + 1]]) > 0)


@pytest.mark.parametrize("linear_path", [False, True])
def test_network_gradient_growth_grows_where_the_gradient_is_large(linear_path):
    X, y = _toy(n=120, classes=6)
    m = SparseMLP([12, 40, 40, 6], epsilon=2, seed=4, linear_path=linear_path)  # no layer is dense
    m.fit(X, y, epochs=3, batch_size=32, verbose=0)
    rows = np.arange(64)
    before = [(layer.indptr.copy(), layer.indices.copy()) for layer in m.trained_layers]
    nnz = [layer.nnz for layer in m.trained_layers]
    dense = _dense_gradients(m, X[rows], y[rows])
    replaced = m.evolve(0.3, grow="gradient", grow_candidates=20, batch=(X, y, rows))
    for layer, (indptr0, indices0), n0, G, k in zip(m.trained_layers, before, nnz, dense, replaced):
        assert layer.nnz == n0 and k > 0
        assert layer.to_scipy().has_canonical_format
        new = layer.velocity == 0
        assert np.count_nonzero(new) == k and np.all(layer.data[new] == 0)
        old = set(zip(row_ids(indptr0), indices0))
        grown = [(r, c) for r, c in zip(row_ids(layer.indptr)[new], layer.indices[new]) if (r, c) not in old]
        # 20 candidates per new connection on these small layers: nearly every free cell was a candidate,
        # so what grew is among the largest |gradient| of the cells that were free
        free = np.ones((layer.n_out, layer.n_in), bool)
        free[row_ids(indptr0), indices0] = False
        free_mag = np.sort(np.abs(G.T[free]))[::-1]
        grown_mag = np.abs(np.array([G[c, r] for r, c in grown]))
        assert np.median(grown_mag) >= free_mag[min(len(free_mag) - 1, 2 * len(grown))]
    with pytest.raises(ValueError, match="need.? the gradient"):
        m.evolve(0.3, grow="gradient")


def test_fit_with_gradient_growth_learns_and_resumes_exactly(tmp_path):
    from test_model import _StopAt

    X, y = _toy(n=200)
    kw = dict(epochs=5, batch_size=32, verbose=0, grow="gradient", grow_candidates=5, criterion="momentum")
    full = SparseMLP([12, 40, 40, 3], epsilon=4, seed=7)
    full.fit(X, y, **kw)
    assert full.score(X, y) > 0.45  # chance: about 0.33 (SET: 0.62-0.72 over 5 seeds here)
    part = SparseMLP([12, 40, 40, 3], epsilon=4, seed=7)
    part.fit(X, y, callbacks=[_StopAt(2, 3, tmp_path / "ckpt.npz")], **kw)
    resumed = SparseMLP.load(tmp_path / "ckpt.npz")
    resumed.fit(X, y, resume=True, **kw)
    assert resumed.history_["loss"] == full.history_["loss"]
    for a, b in zip(resumed.layers, full.layers):
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.data, b.data)


# ----------------------------------------------------------------------------------------------------
# when: every few steps
class _TopologyChanges(__import__("set_cy").Callback):
    """The global step numbers after which the first layer's pattern changed."""

    def __init__(self):
        self.changed, self.last, self.step = [], None, 0

    def on_train_begin(self, model, logs):
        self.last = model.layers[0].indices.copy()

    def on_batch_end(self, model, batch, logs):
        self.step += 1
        now = model.layers[0].indices
        if not np.array_equal(now, self.last):
            self.changed.append(self.step)
        self.last = now.copy()


@pytest.mark.parametrize("update_end,expected", [(1.0, [4, 8, 12]), (0.5, [4])])
def test_update_every_steps(update_end, expected):
    X, y = _toy(n=160)  # 5 batches of 32 per epoch, 3 epochs: 15 steps
    seen = _TopologyChanges()
    m = SparseMLP([12, 30, 30, 3], epsilon=4, seed=0)
    m.fit(X, y, epochs=3, batch_size=32, verbose=0, update_every=4, update_end=update_end, callbacks=[seen],
          zeta_schedule="cosine")
    assert seen.changed == expected  # and never after the last step, nor between the epochs
    assert m.history_[0]["evolution_time"] > 0 and 0 < m.history_[0]["zeta"] < 0.3
    with pytest.raises(ValueError, match="update_every"):
        m.fit(X, y, epochs=1, update_every=0, verbose=0)
    with pytest.raises(ValueError, match="update_end"):
        m.fit(X, y, epochs=1, update_every=2, update_end=0.0, verbose=0)


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_update_every_and_gradient_growth_with_the_data_parallel_backends(backend):
    X, y = _toy(n=160)
    seen = _TopologyChanges()
    m = SparseMLP([12, 30, 30, 3], epsilon=4, seed=0)
    nnz = [layer.nnz for layer in m.layers]
    m.fit(X, y, epochs=3, batch_size=32, verbose=0, update_every=4, grow="gradient", grow_candidates=3,
          n_jobs=2, backend=backend, callbacks=[seen])
    assert seen.changed == [4, 8, 12] and [layer.nnz for layer in m.layers] == nnz
    loss = m.history_["loss"]
    assert all(np.isfinite(loss)) and loss[-1] < loss[0]


def test_update_every_resumes_exactly_from_inside_an_epoch(tmp_path):
    from test_model import _StopAt

    X, y = _toy(n=200)
    kw = dict(epochs=4, batch_size=32, verbose=0, update_every=3, grow="gradient", grow_candidates=3)
    full = SparseMLP([12, 30, 30, 3], epsilon=4, seed=9)
    full.fit(X, y, **kw)
    part = SparseMLP([12, 30, 30, 3], epsilon=4, seed=9)
    part.fit(X, y, callbacks=[_StopAt(1, 4, tmp_path / "ckpt.npz")], **kw)
    resumed = SparseMLP.load(tmp_path / "ckpt.npz")
    resumed.fit(X, y, resume=True, **kw)
    assert resumed.history_["loss"] == full.history_["loss"]
    for a, b in zip(resumed.layers, full.layers):
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.data, b.data)


# ----------------------------------------------------------------------------------------------------
# drop rules and user rules
def test_momentum_drop_removes_the_smallest_velocities():
    rng = np.random.default_rng(1)
    layer = SparseLayer.random(25, 15, 100, rng, dtype=np.float64)
    layer.velocity[:] = rng.standard_normal(layer.nnz)
    layer.data[:] = 1.0  # magnitude says nothing here
    speeds = dict(zip(zip(row_ids(layer.indptr), layer.indices), np.abs(layer.velocity)))
    slowest = sorted(speeds.values())[:30]
    layer.evolve(0.3, rng, criterion="momentum", new_weights="zeros")
    survivors = set(zip(row_ids(layer.indptr)[layer.velocity != 0], layer.indices[layer.velocity != 0]))
    assert len(survivors) == 70
    assert min(speeds[p] for p in survivors) >= max(slowest)
    assert list(ev.MomentumMagnitude().select(np.ones(4), 0.5, velocity=np.array([3.0, -0.1, 2.0, 0.2]))) == [1, 3]


def test_gradient_drop_removes_the_smallest_gradients():
    rng = np.random.default_rng(2)
    layer = SparseLayer.random(25, 15, 100, rng, dtype=np.float64)
    layer.velocity[:] = 1.0
    G = rng.standard_normal((15, 25))  # the "gradient" of W^T at every cell

    def score(indptr, indices):
        return G[row_ids(indptr), indices]

    mags = {p: abs(G[p]) for p in zip(row_ids(layer.indptr), layer.indices)}
    smallest = sorted(mags.values())[:30]
    layer.evolve(0.3, rng, criterion="gradient", new_weights="zeros", score=score)
    survivors = set(zip(row_ids(layer.indptr)[layer.velocity != 0], layer.indices[layer.velocity != 0]))
    assert len(survivors) == 70 and min(mags[p] for p in survivors) >= max(smallest)
    with pytest.raises(ValueError, match="need.? the gradient"):
        layer.evolve(0.3, rng, criterion="gradient")
    # in a fit: drop and grow by the gradient, the network's pass gives both (no claim on accuracy: it
    # removes converged weights, whose gradient is small, however large they are)
    X, y = _toy(n=120)
    m = SparseMLP([12, 30, 30, 3], epsilon=4, seed=0)
    nnz = [layer.nnz for layer in m.layers]
    m.fit(X, y, epochs=4, batch_size=32, verbose=0, criterion="gradient", grow="gradient")
    assert [layer.nnz for layer in m.layers] == nnz and all(np.isfinite(m.history_["loss"]))
    assert all(layer.to_scipy().has_canonical_format for layer in m.layers)


def test_custom_rules_and_bad_names():
    class DropLargestRows(ev.DropRule):
        """Remove the connections with the largest indices first (any deterministic choice will do)."""

        def select(self, values, zeta, *, velocity):
            return np.arange(values.size - int(round(zeta * values.size)), values.size, dtype=np.int64)

    class GrowInFirstColumns(ev.GrowRule):
        def grow(self, rng, n_rows, n_cols, count, indptr, indices, *, inputs=None, score=None, n_threads=1):
            return draw_free_positions_in(rng, n_rows, n_cols, count, indptr, indices, np.arange(3),
                                          n_threads=n_threads)

    lin = SparseLinear(10, 6, nnz=20, seed=0)
    lin.layer.velocity[:] = 1  # marks the survivors: the new connections start at zero
    lin.evolve(0.25, criterion=DropLargestRows(), grow=GrowInFirstColumns(), new_weights="zeros")
    assert lin.nnz == 20 and np.all(lin.coords()[0][lin.velocity == 0] < 3)
    for bad in ("smallest", 3, None):
        with pytest.raises(ValueError, match="criterion must be one of"):
            make_drop_rule(bad)
        with pytest.raises(ValueError, match="grow must be one of"):
            make_grow_rule(bad)
    with pytest.raises(ValueError, match="grow_candidates"):
        make_grow_rule("gradient", 0)
    # what a user's grow rule returns is checked before a kernel sees it

    class TooFew(ev.GrowRule):
        def grow(self, rng, n_rows, n_cols, count, indptr, indices, *, inputs=None, score=None, n_threads=1):
            return draw_free_positions(rng, n_rows, n_cols, count - 1, indptr, indices)

    class OntoKept(ev.GrowRule):
        def grow(self, rng, n_rows, n_cols, count, indptr, indices, *, inputs=None, score=None, n_threads=1):
            keep = np.zeros(indices.size, np.uint8)
            keep[:count] = 1
            return drop_entries(indptr, indices, keep, 1)

    class OutOfRange(ev.GrowRule):
        def grow(self, rng, n_rows, n_cols, count, indptr, indices, *, inputs=None, score=None, n_threads=1):
            p, i = draw_free_positions(rng, n_rows, n_cols, count, indptr, indices)
            i[-1] = n_cols
            return p, i

    for rule, message in ((TooFew(), "returned 4 positions for 5"), (OntoKept(), "that are kept"),
                          (OutOfRange(), "positions of the grow rule")):
        before = lin.to_scipy()
        with pytest.raises(ValueError, match=message):
            lin.evolve(0.25, grow=rule)
        assert (lin.to_scipy() != before).nnz == 0  # the layer is as it was
    assert set(ev.CRITERIA) == {"signed", "magnitude", "momentum", "gradient"}
    assert set(ev.GROW_RULES) == {"random", "gradient"}
    X, y = _toy(n=40)
    with pytest.raises(ValueError, match="grow must be one of"):
        SparseMLP([12, 8, 3], seed=0).fit(X, y, epochs=2, grow="rigl", verbose=0)


# ----------------------------------------------------------------------------------------------------
# the layer API, the torch bridge, the estimators, the CLI
def test_layer_api_gradient_growth_uses_the_given_batch():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 40))
    dY = rng.standard_normal((16, 12))
    lin = SparseLinear(40, 12, nnz=60, seed=0, dtype="float64")
    lin.forward(X)
    before = set(zip(*lin.coords()))
    lin.evolve(0.5, grow="gradient", grow_candidates=100, dY=dY, new_weights="zeros")
    G = np.abs(X.T @ dY)
    grown = [(i, j) for i, j in zip(*lin.coords()) if (i, j) not in before]
    free = np.ones_like(G, bool)
    for i, j in before:
        free[i, j] = False
    assert np.median(G[tuple(np.array(grown).T)]) > np.median(G[free])
    with pytest.raises(ValueError, match="need.? the gradient"):
        lin.evolve(0.3, grow="gradient")


def test_torch_module_gradient_growth():
    torch = pytest.importorskip("torch")
    from set_cy.torch import SparseLinear as TorchSparseLinear

    torch.manual_seed(0)
    layer = TorchSparseLinear(40, 12, nnz=60, seed=0)
    X = torch.randn(16, 40)
    out = layer(X)
    out.retain_grad()
    (out ** 2).sum().backward()
    before = set(zip(*layer.coords()))
    assert layer.evolve(0.5, grow="gradient", grow_candidates=100, X=X, dY=out.grad, new_weights="zeros") == 30
    G = np.abs(X.numpy().T @ out.grad.numpy())
    grown = [(i, j) for i, j in zip(*layer.coords()) if (i, j) not in before]
    assert np.median(G[tuple(np.array(grown).T)]) > np.median(G)
    with pytest.raises(ValueError, match="need.? the gradient"):
        layer.evolve(0.3, grow="gradient")


def test_estimators_take_the_rules():
    pytest.importorskip("sklearn")
    from set_cy import SETClassifier

    X, y = _toy(n=120)
    clf = SETClassifier(hidden_layer_sizes=(24,), epochs=6, n_estimators=1, random_state=0, n_jobs=1,
                        grow="gradient", grow_candidates=4, criterion="momentum").fit(X, y)
    assert clf.score(X, y) > 0.7
    clf.partial_fit(X, y)  # evolves with the same rules between the calls
    with pytest.raises(ValueError, match="grow must be one of"):
        SETClassifier(grow="dense").fit(X, y)


def test_cli_rules_are_saved_and_resumed(tmp_path):
    from set_cy.train import main

    report = tmp_path / "r.json"
    argv = ["--layers", "30,40,40,3", "--dataset", "synthetic", "--samples", "90", "--features", "30", "--classes",
            "3", "--epochs", "3", "--grow", "gradient", "--grow-candidates", "4", "--criterion", "momentum",
            "--update-every", "2", "--update-end", "0.75", "--quiet", "--save", str(tmp_path / "c.npz"),
            "--report", str(report)]
    assert main(argv) == 0
    saved = SparseMLP.load(tmp_path / "c.npz").meta_["cli_args"]
    assert saved["grow"] == "gradient" and saved["grow_candidates"] == 4 and saved["criterion"] == "momentum"
    assert saved["update_every"] == 2 and saved["update_end"] == 0.75
    # --resume continues with the saved rules (here: two more epochs)
    assert main(["--resume", str(tmp_path / "c.npz"), "--epochs", "5", "--quiet"]) == 0
    assert SparseMLP.load(tmp_path / "c.npz").epochs_trained_ == 5
