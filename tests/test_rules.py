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
    from test_model import assert_resumes_exactly

    X, y = _toy(n=200)
    kw = dict(epochs=5, batch_size=32, verbose=0, grow="gradient", grow_candidates=5, criterion="momentum")
    full, _, _ = assert_resumes_exactly(tmp_path, X, y, [12, 40, 40, 3], kw, (2, 3), epsilon=4, seed=7)
    assert full.score(X, y) > 0.45  # chance: about 0.33 (SET: 0.62-0.72 over 5 seeds here)


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
    from test_model import assert_resumes_exactly

    X, y = _toy(n=200)
    kw = dict(epochs=4, batch_size=32, verbose=0, update_every=3, grow="gradient", grow_candidates=3)
    assert_resumes_exactly(tmp_path, X, y, [12, 30, 30, 3], kw, (1, 4), epsilon=4, seed=9)


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
            "3", "--epochs", "3", "--grow", "gradient", "--grow-candidates", "4", "--drop", "momentum",
            "--update-every", "2", "--update-end", "0.75", "--final-fraction", "0.6", "--quiet", "--save",
            str(tmp_path / "c.npz"),
            "--report", str(report)]
    assert main(argv) == 0
    saved = SparseMLP.load(tmp_path / "c.npz").meta_["cli_args"]
    assert saved["grow"] == "gradient" and saved["grow_candidates"] == 4 and saved["criterion"] == "momentum"
    assert saved["update_every"] == 2 and saved["update_end"] == 0.75 and saved["final_fraction"] == 0.6
    import json

    rep = json.loads(report.read_text())  # the schedule's end: 0.6 of the connections built
    assert abs(rep["epochs"][-1]["n_connections"] - 0.6 * rep["architecture"]["connections"]) <= 10
    # --resume continues with the saved rules (here: two more epochs)
    assert main(["--resume", str(tmp_path / "c.npz"), "--epochs", "5", "--quiet"]) == 0
    assert SparseMLP.load(tmp_path / "c.npz").epochs_trained_ == 5


# ----------------------------------------------------------------------------------------------------
# gradual density change (GraNet)
def test_density_schedule_is_cubic_and_its_cuts_compose_to_the_final_fraction():
    assert ev.density_at(0.3, 0, 10) == 1.0 and ev.density_at(0.3, 10, 10) == pytest.approx(0.3)
    assert ev.density_at(0.3, 5, 10) == pytest.approx(0.3 + 0.7 * 0.5 ** 3)
    left = np.prod([1 - ev.shrink_at(0.3, k, 10) for k in range(1, 11)])
    assert left == pytest.approx(0.3)
    cuts = [ev.shrink_at(0.3, k, 10) for k in range(1, 11)]
    assert all(a > b for a, b in zip(cuts, cuts[1:]))  # the largest cut first
    assert ev.shrink_at(1.0, 1, 10) == 0.0 and ev.shrink_at(0.3, 11, 10) == 0.0


@pytest.mark.parametrize("rule", [{}, {"grow": "gradient", "grow_candidates": 3}, {"zeta": 0.0},
                                  {"update_every": 4}, {"criterion": "momentum", "zeta_schedule": "cosine"}])
def test_fit_with_final_fraction_follows_the_density_schedule(rule):
    from set_cy._validation import check_pattern, check_transpose

    X, y = _toy(n=160)
    m = SparseMLP([12, 40, 40, 3], epsilon=6, seed=3, linear_path=True)
    start = [layer.nnz for layer in m.trained_layers]
    m.fit(X, y, epochs=5, batch_size=32, verbose=0, final_fraction=0.5, **rule)
    n_updates = 4 if "update_every" not in rule else (5 * 5 - 1) // 4
    for n0, layer in zip(start, m.trained_layers):
        assert abs(layer.nnz - 0.5 * n0) <= n_updates  # rounding: at most one connection per update step
        check_pattern(layer.indptr, layer.indices, layer.n_out, layer.n_in, "layer")
        for name in ("data", "velocity", "indices"):
            assert getattr(layer, name).shape == (layer.nnz,)
        if layer.t_indptr is not None:  # the linear path keeps none
            check_transpose(layer.indptr, layer.indices, layer.n_in, layer.t_indptr, layer.t_indices, layer.perm,
                            name="layer")
    if "update_every" not in rule:  # recorded after each epoch's step: the cubic schedule
        total = sum(start)
        for epoch, rec in enumerate(m.history_[:-1], start=1):
            assert abs(rec["n_connections"] - total * ev.density_at(0.5, epoch, 4)) <= 2 * len(start) * epoch
    assert np.isfinite(m.history_["loss"]).all() and m.score(X, y) > 0.4


def test_final_fraction_checks_and_resumes_exactly(tmp_path):
    from test_model import assert_resumes_exactly

    X, y = _toy(n=200)
    m = SparseMLP([12, 30, 30, 3], epsilon=4, seed=1)
    with pytest.raises(ValueError, match="final_fraction"):
        m.fit(X, y, epochs=3, final_fraction=0.0, verbose=0)
    with pytest.raises(ValueError, match="needs update steps"):
        m.fit(X, y, epochs=1, final_fraction=0.5, verbose=0)
    with pytest.raises(ValueError, match="use more update steps"):
        m.fit(X, y, epochs=2, final_fraction=0.05, verbose=0)
    with pytest.raises(ValueError, match="need backend='openmp'"):
        m.fit(X, y, epochs=3, final_fraction=0.5, verbose=0, backend="threads", n_jobs=2)
    kw = dict(epochs=5, batch_size=32, verbose=0, final_fraction=0.4, grow="gradient", grow_candidates=3)
    assert_resumes_exactly(tmp_path, X, y, [12, 30, 30, 3], kw, (2, 3), epsilon=4, seed=9)


def test_layer_evolve_with_shrink_removes_exactly_that_many():
    rng = np.random.default_rng(0)
    layer = SparseLayer.random(50, 40, 400, rng)
    w = layer.data.copy()
    removed = layer.evolve(0.2, rng, shrink=30)
    assert layer.nnz == 370 and removed >= 30 and layer.velocity.shape == (370,)
    assert layer.evolve(0.0, rng, shrink=70) == 70 and layer.nnz == 300  # zeta 0: pruning only
    # the weakest go: every weight left was at least as large as the 70th smallest removed one
    assert np.abs(layer.data[layer.data != 0]).min() >= np.sort(np.abs(w))[29]
    with pytest.raises(ValueError, match="shrink"):
        layer.evolve(0.5, rng, shrink=150)
    with pytest.raises(ValueError, match="shrink"):
        SparseMLP([12, 30, 3], epsilon=4, seed=0).evolve(0.5, shrink=0.5)


def test_estimator_final_fraction():
    pytest.importorskip("sklearn")
    from set_cy import SETClassifier

    X, y = _toy(n=120)
    clf = SETClassifier(hidden_layer_sizes=(24,), epochs=6, n_estimators=1, random_state=0, n_jobs=1,
                        final_fraction=0.5)
    start = SETClassifier(hidden_layer_sizes=(24,), epochs=1, n_estimators=1, random_state=0, n_jobs=1).fit(X, y)
    clf.fit(X, y)
    assert clf.network_.n_connections < 0.6 * start.network_.n_connections and clf.score(X, y) > 0.6
    with pytest.raises(ValueError, match="partial_fit"):
        SETClassifier(final_fraction=0.5).partial_fit(X, y, classes=[0, 1, 2])


# ----------------------------------------------------------------------------------------------------
# neuron importance pruning
def _check_layers(m):
    from set_cy._validation import check_pattern, check_transpose

    sizes = m.layer_sizes
    for i, layer in enumerate(m.layers):
        assert (layer.n_in, layer.n_out) == (sizes[i], sizes[i + 1])
        check_pattern(layer.indptr, layer.indices, layer.n_out, layer.n_in, "layer")
        assert layer.bias.shape == layer.bias_velocity.shape == (layer.n_out,)
        assert layer.data.shape == layer.velocity.shape == layer.indices.shape
        check_transpose(layer.indptr, layer.indices, layer.n_in, layer.t_indptr, layer.t_indices, layer.perm,
                        name="layer")


def test_prune_neurons_removes_the_weakest_and_keeps_what_they_did_not_carry():
    X, _ = _toy(n=50, d=30)
    m = SparseMLP([30, 60, 50, 4], epsilon=4, seed=2)
    dead = {1: np.array([3, 10, 11, 40]), 2: np.array([0, 7, 49])}  # neurons of no strength
    for h, neurons in dead.items():
        below, above = m.layers[h - 1], m.layers[h]
        below.data[np.isin(row_ids(below.indptr), neurons)] = 0
        above.data[np.isin(above.indices, neurons)] = 0
        np.testing.assert_array_equal(m.neuron_strength(h)[neurons], 0)
    m.layers[0].bias[dead[1]] = 0.5  # a bias does not reach the next layer through zero weights
    before = m.predict_proba(X)
    nnz = [layer.nnz for layer in m.layers]
    assert m.prune_neurons(0.07, regrow=False) == [4, 3]  # ceil(60 * 0.93) = 56, ceil(50 * 0.93) = 47
    assert m.layer_sizes == [30, 56, 47, 4]
    _check_layers(m)
    np.testing.assert_allclose(m.predict_proba(X), before, rtol=1e-5, atol=1e-6)  # exactly the dead ones went
    assert m.layers[0].nnz < nnz[0]
    # regrow: the counts come back, the network still works; min_neurons is a floor
    m2 = SparseMLP([30, 60, 50, 4], epsilon=4, seed=2)
    nnz = [layer.nnz for layer in m2.layers]
    assert m2.prune_neurons(0.5, min_neurons=40) == [20, 10]
    assert m2.layer_sizes == [30, 40, 40, 4]  # the dense output layer has room for 40 x 4 only
    assert [layer.nnz for layer in m2.layers] == [min(k, layer.n_in * layer.n_out) for k, layer in zip(nnz, m2.layers)]
    assert m2.layers[2].nnz == 160 and m2.layers[0].nnz == nnz[0]
    _check_layers(m2)
    assert np.isfinite(m2.predict_proba(X)).all()
    with pytest.raises(ValueError, match="fraction"):
        m2.prune_neurons(1.0)
    with pytest.raises(ValueError, match="regrow"):
        m2.prune_neurons(0.1, regrow="yes")


def test_fit_with_neuron_pruning_shrinks_saves_and_resumes_exactly(tmp_path):
    from test_model import assert_resumes_exactly

    X, y = _toy(n=200)
    kw = dict(epochs=6, batch_size=32, verbose=0, prune_neurons=0.25, prune_every=2, min_neurons=10,
              grow="gradient", grow_candidates=3)
    # stopped after the first pruning: the checkpoint holds the smaller layers
    full, _, loaded_sizes = assert_resumes_exactly(tmp_path, X, y, [12, 40, 30, 3], kw, (2, 3), epsilon=4, seed=4,
                                                   lr_scaling="fan_in")
    assert loaded_sizes == [12, 30, 23, 3]
    assert [rec["layer_sizes"][1:3] for rec in full.history_] == [[40, 30], [30, 23], [30, 23], [23, 18],
                                                                    [23, 18], [23, 18]]
    _check_layers(full)
    assert np.isfinite(full.history_["loss"]).all() and full.score(X, y) > 0.4
    # early stopping goes back to the best epoch's network, smaller or not
    es = SparseMLP([12, 40, 30, 3], epsilon=4, seed=4)
    es.fit(X, y, early_stopping=True, n_iter_no_change=2, **{**kw, "epochs": 12})
    assert es.layer_sizes == es.history_[es.best_epoch_ - 1]["layer_sizes"]
    _check_layers(es)
    with pytest.raises(ValueError, match="need backend='openmp'"):
        SparseMLP([12, 40, 3], seed=0).fit(X, y, epochs=2, prune_neurons=0.2, backend="threads", n_jobs=2,
                                           verbose=0)
    with pytest.raises(ValueError, match="keep_connections"):
        SparseMLP([12, 40, 3], seed=0).fit(X, y, epochs=2, prune_neurons=0.2, keep_connections=1, verbose=0)


def test_estimator_and_cli_neuron_pruning(tmp_path):
    pytest.importorskip("sklearn")
    from set_cy import SETClassifier
    from set_cy.train import main

    X, y = _toy(n=120)
    clf = SETClassifier(hidden_layer_sizes=(40,), epochs=6, n_estimators=1, random_state=0, n_jobs=1,
                        prune_neurons=0.3, prune_every=2, min_neurons=20).fit(X, y)
    assert clf.network_.layer_sizes[1] == 20 and clf.score(X, y) > 0.6
    clf.partial_fit(X, y)  # prunes on the same schedule between partial_fit calls
    argv = ["--layers", "30,40,40,3", "--dataset", "synthetic", "--samples", "90", "--features", "30", "--classes",
            "3", "--epochs", "3", "--prune-neurons", "0.5", "--prune-every", "1", "--min-neurons", "15", "--quiet",
            "--save", str(tmp_path / "c.npz")]
    assert main(argv) == 0
    m = SparseMLP.load(tmp_path / "c.npz")
    assert m.layer_sizes == [30, 15, 15, 3] and m.meta_["cli_args"]["prune_neurons"] == 0.5
    assert main(["--resume", str(tmp_path / "c.npz"), "--epochs", "4", "--quiet"]) == 0
    assert SparseMLP.load(tmp_path / "c.npz").epochs_trained_ == 4


# ----------------------------------------------------------------------------------------------------
# no dense array anywhere: the 1 M-neuron network with gradient growth
def test_gradient_growth_on_the_million_neuron_network_stays_within_10_percent_of_set_peak_rss(tmp_path):
    """The main job's network (1 M neurons, 38 M connections) for two epochs of 64 samples, with SET's rules
    and with gradient growth on 10 candidates per new connection (about 38 M candidates per hidden layer),
    each run in its own process, twice in turn; the peak RSS of a run is its ``ru_maxrss`` (the kernel's
    count, no sampling), and the larger of each rule's two is compared. A dense |dL/dW| of one hidden layer
    alone would be 315,102^2 x 4 bytes = 370 GiB."""
    import json
    import os
    import subprocess
    import sys

    # the run as a user starts it: without the allocator settings that libraries imported by the test session
    # put into os.environ (distributed sets MALLOC_TRIM_THRESHOLD_=65536 on import, under which glibc hands
    # freed memory back at once: SET's peak is then 1.00 GiB and gradient growth's 1.15 GiB, against 1.11 and
    # 1.17 GiB under glibc's defaults)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["OMP_NUM_THREADS"] = "2"
    peaks = {"set": [], "gradient": []}
    for name, extra in [("set", []), ("gradient", ["--grow", "gradient", "--grow-candidates", "10"])] * 2:
        report = tmp_path / f"{name}.json"
        proc = subprocess.Popen([sys.executable, "-m", "set_cy.train", "--neurons", "1000000", "--samples", "64",
                                 "--epochs", "2", "--quiet", "--report", str(report), *extra],
                                env=env, cwd=tmp_path)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0
        peaks[name].append(usage.ru_maxrss * 1024)
        r = json.loads(report.read_text())  # it evolved once and kept the number of connections
        assert r["epochs"][0]["evolution_time"] > 0
        assert r["epochs"][-1]["n_connections"] == r["architecture"]["connections"] > 38_000_000
    assert max(peaks["gradient"]) <= 1.10 * max(peaks["set"]), {k: [p / 2**30 for p in v] for k, v in peaks.items()}


@pytest.mark.parametrize("count", [500, 100_000])  # counted draws, and one binomial a row
def test_random_row_counts_and_bucket_rows(count):
    from set_cy.patterns import bucket_rows, random_row_counts, sort_rows

    rng = np.random.default_rng(0)
    counts = random_row_counts(rng, 50, count)
    assert counts.dtype == np.int64 and counts.sum() == count and counts.min() >= 0
    expected = count / 50  # uniform rows: a chi-square test at the 1e-4 level
    assert ((counts - expected) ** 2 / expected).sum() < 95
    rows = rng.integers(0, 7, 40)
    cols = rng.integers(0, 9, 40).astype(np.int32)
    indptr, indices = bucket_rows(7, rows, cols)
    np.testing.assert_array_equal(np.diff(indptr), np.bincount(rows, minlength=7))
    for r in range(7):
        np.testing.assert_array_equal(indices[indptr[r]:indptr[r + 1]], cols[rows == r])  # order kept
    repeats = sort_rows(indptr, indices, 1)
    assert repeats == 40 - len({(r, c) for r, c in zip(rows, cols)})
    assert all(np.all(np.diff(indices[indptr[r]:indptr[r + 1]]) >= 0) for r in range(7))
