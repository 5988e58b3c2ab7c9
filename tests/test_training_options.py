"""Training options for few-sample, high-dimensional data: input pruning (feature selection inside
evolution), gradient clipping, class weights; and their estimator face (ensembles)."""
import copy
import os
from pathlib import Path

import numpy as np
import pytest

from set_cy import SparseMLP, SparseNetwork
from set_cy.patterns import draw_free_positions, draw_free_positions_in

DATA = Path(os.environ.get("SET_CY_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
if not DATA.is_absolute():
    DATA = (Path(__file__).resolve().parents[1] / DATA).resolve()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real datasets not found at {DATA} (set SET_CY_DATA)")


def _dense(indptr, indices, shape):
    M = np.zeros(shape, bool)
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    M[rows, indices] = True
    return M


@pytest.mark.parametrize("idx", [np.int32, np.int64])
def test_draw_free_positions_in_prefers_the_given_columns(idx):
    rng = np.random.default_rng(0)
    n_rows, n_cols = 30, 50
    indptr, indices = draw_free_positions(rng, n_rows, n_cols, 200, index_dtype=idx)
    cols = np.sort(rng.choice(n_cols, 10, replace=False)).astype(idx)
    taken = _dense(indptr, indices, (n_rows, n_cols))
    free_in = int((~taken[:, cols]).sum())
    # fewer than the free cells of cols: all new positions in cols, distinct, not taken
    new_p, new_i = draw_free_positions_in(rng, n_rows, n_cols, free_in - 5, indptr, indices, cols)
    assert new_i.dtype == idx and new_p[-1] == free_in - 5
    new = _dense(new_p, new_i, (n_rows, n_cols))
    assert new.sum() == free_in - 5 and not (new & taken).any() and np.isin(new_i, cols).all()
    for r in range(n_rows):  # canonical: sorted rows
        assert np.all(np.diff(new_i[new_p[r]:new_p[r + 1]]) > 0)
    # more than fit: cols filled completely, the rest elsewhere
    new_p, new_i = draw_free_positions_in(rng, n_rows, n_cols, free_in + 40, indptr, indices, cols)
    new = _dense(new_p, new_i, (n_rows, n_cols))
    assert new.sum() == free_in + 40 and not (new & taken).any()
    assert (new | taken)[:, cols].all() and (~np.isin(new_i, cols)).sum() == 40


def _network(d=40, seed=0):
    return SparseMLP([d, 30, 20, 3], epsilon=4, seed=seed, dropout=0.0, dtype="float64")


def test_prune_inputs_moves_connections_and_masks_the_inputs():
    m = _network()
    nnz = [layer.nnz for layer in m.layers]
    strength = m.input_strength()
    removed = m.prune_inputs(0.5, min_inputs=5)
    assert removed == 20 and m.active_inputs().size == 20
    kept = m.active_inputs()
    # the strongest half is kept
    assert set(kept) == set(np.argsort(-strength, kind="stable")[:20])
    assert [layer.nnz for layer in m.layers] == nnz  # the connection count is unchanged
    assert np.isin(m.layers[0].indices, kept).all()  # every first-layer connection on a kept input
    assert np.all(m.input_strength()[~m.input_mask_] == 0)
    # pruned inputs are not read: changing them does not change the outputs
    rng = np.random.default_rng(1)
    X = rng.standard_normal((7, 40))
    X2 = X.copy()
    X2[:, ~m.input_mask_] = 1e6
    np.testing.assert_array_equal(m.predict_proba(X), m.predict_proba(X2))
    # the floor holds
    assert m.prune_inputs(0.9, min_inputs=10) == 10 and m.active_inputs().size == 10
    assert m.prune_inputs(0.9, min_inputs=10) == 0
    # evolution regrows onto the kept inputs only (10 inputs x 30 neurons = 300 cells >= 280 connections)
    assert np.isin(m.layers[0].indices, m.active_inputs()).all()
    m.evolve(0.3)
    assert np.isin(m.layers[0].indices, m.active_inputs()).all()


def test_prune_inputs_keeps_the_count_when_the_kept_inputs_are_full():
    m = _network()
    nnz0 = m.layers[0].nnz  # 4 * (40 + 30) = 280 > 2 inputs x 30 neurons
    m.prune_inputs(0.99, min_inputs=2)
    assert m.layers[0].nnz == nnz0 and m.active_inputs().size == 2
    on_kept = np.isin(m.layers[0].indices, m.active_inputs())
    assert on_kept.sum() == 60  # the 60 cells of the kept inputs are all used, the rest parked
    m.evolve(0.3)
    assert m.layers[0].nnz == nnz0 and np.isin(m.layers[0].indices, m.active_inputs()).sum() == 60


def test_input_mask_survives_save_and_load(tmp_path):
    m = _network()
    m.prune_inputs(0.5, min_inputs=5)
    path = m.save(tmp_path / "m.npz")
    same = SparseMLP.load(path)
    np.testing.assert_array_equal(same.input_mask_, m.input_mask_)
    X = np.random.default_rng(2).standard_normal((5, 40))
    np.testing.assert_array_equal(same.predict_proba(X), m.predict_proba(X))


def test_fit_prunes_on_schedule_and_records_the_inputs():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 64))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    m = SparseMLP([64, 32, 2], epsilon=4, seed=0)
    hist = m.fit(X, y, epochs=9, batch_size=16, prune_inputs=0.5, prune_every=2, min_inputs=6, verbose=0)
    # pruned after epochs 2, 4, 6, 8 (not after the last, 9): 64 -> 32 -> 16 -> 8 -> 6
    assert hist["n_inputs"] == [64, 32, 32, 16, 16, 8, 8, 6, 6]
    # a later start: after epochs 5 and 7 only
    m = SparseMLP([64, 32, 2], epsilon=4, seed=0)
    hist = m.fit(X, y, epochs=9, batch_size=16, prune_inputs=0.5, prune_every=2, min_inputs=6, prune_start=5,
                 verbose=0)
    assert hist["n_inputs"] == [64, 64, 64, 64, 32, 32, 16, 16, 16]
    with pytest.raises(ValueError, match="backend='openmp'"):
        m.fit(X, y, epochs=1, backend="threads", n_jobs=2, verbose=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(prune_inputs=1.0), "prune_inputs"), (dict(prune_inputs=-0.1), "prune_inputs"),
    (dict(prune_every=0), "prune_every"), (dict(min_inputs=0), "min_inputs"), (dict(prune_start=0), "prune_start"),
    (dict(clip_norm=0.0), "clip_norm"),
    (dict(class_weight="auto"), "class_weight"), (dict(class_weight={5: 1.0}), "class_weight"),
    (dict(class_weight=[1.0, -1.0]), "class_weight"), (dict(new_weights="bad"), "new_weights"),
    (dict(clip_norm=1.0, backend="threads"), "openmp"), (dict(lr_schedule="step"), "lr_schedule")])
def test_fit_rejects_bad_options_before_training(kwargs, match):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, 8)), rng.integers(0, 2, 20)
    m = SparseMLP([8, 6, 2], epsilon=2, seed=0)
    before = m.layers[0].data.copy()
    with pytest.raises(ValueError, match=match):
        m.fit(X, y, epochs=1, verbose=0, **kwargs)
    np.testing.assert_array_equal(m.layers[0].data, before)  # nothing trained


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
@pytest.mark.parametrize("backend", ["openmp", "threads"])
def test_lr_schedule_sets_every_epochs_learning_rate(monkeypatch, schedule, backend):
    from set_cy.evolution import zeta_at

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 8)).astype(np.float32), rng.integers(0, 2, 64)
    m = SparseMLP([8, 6, 2], epsilon=2, seed=0)
    seen = []  # the learning rate of every step, in order, as the engines pass it on
    if backend == "openmp":
        step = m.train_batch
        monkeypatch.setattr(m, "train_batch", lambda *a, **kw: (seen.append(kw["learning_rate"]), step(*a, **kw))[1])
    else:
        import set_cy.parallel as par

        update = par._update_part
        def update_part(layers, grads, part, hp):  # called once per part (k, m) of the step: count part 0
            if part[0] == 0:
                seen.append(hp["learning_rate"])
            return update(layers, grads, part, hp)

        monkeypatch.setattr(par, "_update_part", update_part)
    m.fit(X, y, epochs=5, batch_size=32, learning_rate=0.1, lr_schedule=schedule, verbose=0, backend=backend,
          n_jobs=1 if backend == "openmp" else 2)
    per_epoch = [zeta_at(0.1, e, 5, schedule) for e in range(5)]
    assert seen == pytest.approx([lr for lr in per_epoch for _ in range(2)])  # two batches an epoch
    assert (seen[-1] < 0.02) == (schedule != "constant")
    assert m.history_[-1]["loss"] < m.history_[0]["loss"]


def test_estimator_lr_schedule_is_fits_and_not_partial_fits(monkeypatch):
    from set_cy import SETClassifier
    from set_cy.evolution import zeta_at

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 10)), rng.integers(0, 2, 64)
    kw = dict(hidden_layer_sizes=(12,), epsilon=3, epochs=4, n_estimators=2, random_state=0, batch_size=32)
    seen, step = [], SparseNetwork.train_batch
    monkeypatch.setattr(SparseNetwork, "train_batch",
                        lambda self, *a, **k: (seen.append(k["learning_rate"]), step(self, *a, **k))[1])
    SETClassifier(lr_schedule="cosine", learning_rate=0.02, **kw).fit(X, y)
    one_net = [zeta_at(0.02, e, 4, "cosine") for e in range(4) for _ in range(2)]
    assert seen == pytest.approx(one_net * 2)  # both networks, two batches an epoch
    with pytest.raises(ValueError, match="lr_schedule"):
        SETClassifier(lr_schedule="exp", **kw).fit(X, y)
    with pytest.raises(ValueError, match="partial_fit"):
        SETClassifier(lr_schedule="linear", **kw).partial_fit(X, y, classes=[0, 1])


def _one_step(**kw):
    m = SparseNetwork([10, 12, 3], epsilon=4, seed=3, dtype="float64", dropout=0.0)
    rng = np.random.default_rng(1)
    X, y = m._check_X(rng.standard_normal((8, 10))), rng.integers(0, 3, 8)
    m.train_batch(X, y, np.arange(8, dtype=np.int64), momentum=0.9, weight_decay=0.0, **kw)
    return m


def test_class_weight_scales_each_class_gradient():
    # from zero velocity one step moves the weights by -lr * g: doubling every weight equals doubling lr
    a = _one_step(learning_rate=0.2, class_weight=np.full(3, 2.0))
    b = _one_step(learning_rate=0.4)
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_allclose(la.data, lb.data, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(la.bias, lb.bias, rtol=1e-12, atol=1e-12)
    # weight zero for every class: nothing moves
    c = _one_step(learning_rate=0.4, class_weight=np.zeros(3))
    d = SparseNetwork([10, 12, 3], epsilon=4, seed=3, dtype="float64", dropout=0.0)
    for lc, ld in zip(c.layers, d.layers):
        np.testing.assert_array_equal(lc.data, ld.data)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_label_smoothing_fits_the_smoothed_targets(smoothing):
    # dense reference: from zero velocity one step moves the output bias by -lr * mean(p - q), q the smoothed
    # one-hot targets; the returned loss is the mean cross-entropy against q
    m = SparseNetwork([10, 12, 3], epsilon=4, seed=3, dtype="float64", dropout=0.0)
    rng = np.random.default_rng(1)
    X, y = m._check_X(rng.standard_normal((8, 10))), rng.integers(0, 3, 8)
    p = m.predict_proba(X)
    q = np.full((8, 3), smoothing / 3) + (1 - smoothing) * np.eye(3)[y]
    before = m.layers[-1].bias.copy()
    loss, _ = m.train_batch(X, y, np.arange(8, dtype=np.int64), learning_rate=0.5, momentum=0.9, weight_decay=0.0,
                            label_smoothing=smoothing)
    assert loss == pytest.approx(-np.mean(np.sum(q * np.log(p), axis=1)), rel=1e-12)
    np.testing.assert_allclose(m.layers[-1].bias - before, -0.5 * (p - q).mean(axis=0), rtol=1e-10, atol=1e-14)


def _record_train_batch(monkeypatch, option):
    """The value of ``option`` (0.0 when not passed) in every ``train_batch`` call from now on."""
    seen, step = [], SparseNetwork.train_batch
    monkeypatch.setattr(SparseNetwork, "train_batch",
                        lambda self, *a, **k: (seen.append(k.get(option, 0.0)), step(self, *a, **k))[1])
    return seen


def test_label_smoothing_through_fit_and_the_estimator(monkeypatch):
    from set_cy import SETClassifier, SETRegressor

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 10)), rng.integers(0, 3, 64)
    seen = _record_train_batch(monkeypatch, "label_smoothing")
    clf = SETClassifier(hidden_layer_sizes=(12,), epsilon=3, epochs=2, n_estimators=1, random_state=0,
                        label_smoothing=0.1).fit(X, y)
    clf.partial_fit(X, y)
    assert len(seen) == 3 * 4 and set(seen) == {0.1}  # 3 epochs of 4 batches (batch_size "auto": 16)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="label_smoothing"):
            SETClassifier(label_smoothing=bad).fit(X, y)
    assert "label_smoothing" not in SETRegressor().get_params()
    reg = SparseMLP([10, 6, 1], epsilon=2, seed=0, loss="squared_error")
    with pytest.raises(ValueError, match="label_smoothing needs loss='cross_entropy'"):
        reg.fit(X, rng.standard_normal(64), epochs=1, verbose=0, label_smoothing=0.1)
    with pytest.raises(ValueError, match="openmp"):
        SparseMLP([10, 6, 3], epsilon=2, seed=0).fit(X, y, epochs=1, verbose=0, label_smoothing=0.1,
                                                      backend="threads", n_jobs=2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_input_noise_trains_on_the_noisy_batch(dtype):
    # one step with input_noise equals one step without it on the batch plus the same draws of the network's
    # generator (taken before dropout's masks, which then match too); without the noise the step differs
    def net():
        return SparseNetwork([10, 12, 3], epsilon=4, seed=3, dtype=dtype, dropout=0.3, linear_path=True)

    a, b, c = net(), net(), net()
    rng = np.random.default_rng(1)
    X, y = a._check_X(rng.standard_normal((8, 10))), rng.integers(0, 3, 8)
    rows = np.array([5, 1, 6, 2], dtype=np.int64)
    r = copy.deepcopy(b.rng)
    noise = r.standard_normal((10, 4), dtype=a.dtype)
    noise *= a.dtype.type(0.5)
    b.rng = r
    Xn = b._check_X(X[rows] + noise.T)
    hp = dict(learning_rate=0.1, momentum=0.9, weight_decay=1e-3)
    a.train_batch(X, y, rows, input_noise=0.5, **hp)
    b.train_batch(Xn, y[rows], np.arange(4, dtype=np.int64), **hp)
    c.train_batch(X, y, rows, **hp)
    for la, lb, lc in zip(a.trained_layers, b.trained_layers, c.trained_layers):
        np.testing.assert_array_equal(la.data, lb.data)
        np.testing.assert_array_equal(la.bias, lb.bias)
    assert not np.array_equal(a.trained_layers[0].data, c.trained_layers[0].data)


def test_input_noise_leaves_pruned_inputs_at_zero(monkeypatch):
    m = SparseNetwork([20, 12, 3], epsilon=4, seed=0, dtype="float64", linear_path=True)
    rng = np.random.default_rng(2)
    X, y = m._check_X(rng.standard_normal((16, 20))), rng.integers(0, 3, 16)
    m.prune_inputs(0.5)
    off = np.flatnonzero(~m.input_mask_)
    seen, forward = [], SparseNetwork._forward
    monkeypatch.setattr(SparseNetwork, "_forward", lambda self, xb, training: (seen.append(xb.copy()),
                                                                               forward(self, xb, training))[1])
    rows = np.arange(16, dtype=np.int64)
    m.train_batch(X, y, rows, learning_rate=0.01, input_noise=1.0)
    assert off.size == 10 and np.all(seen[0][off] == 0)
    on = np.flatnonzero(m.input_mask_)
    assert np.all(seen[0][on] != X[:, on].T)  # the inputs in use moved


def test_input_noise_through_fit_and_the_estimators(monkeypatch):
    from set_cy import SETClassifier, SETRegressor

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 10)), rng.integers(0, 3, 64)
    seen = _record_train_batch(monkeypatch, "input_noise")
    kw = dict(hidden_layer_sizes=(12,), epsilon=3, epochs=2, n_estimators=1, random_state=0, input_noise=0.3)
    SETClassifier(**kw).fit(X, y).partial_fit(X, y)
    SETRegressor(**kw).fit(X, rng.standard_normal(64))
    assert len(seen) == 5 * 4 and set(seen) == {0.3}  # 5 epochs of 4 batches (batch_size "auto": 16)
    seen.clear()
    SETClassifier(**{**kw, "input_noise": 0.0}).fit(X, y)
    assert set(seen) == {0.0}  # the default passes nothing
    for est in (SETClassifier, SETRegressor):
        with pytest.raises(ValueError, match="input_noise"):
            est(input_noise=-0.1).fit(X, y)
    with pytest.raises(ValueError, match="openmp"):
        SparseMLP([10, 6, 3], epsilon=2, seed=0).fit(X, y, epochs=1, verbose=0, input_noise=0.1,
                                                      backend="threads", n_jobs=2)


def test_balanced_class_weight():
    m = SparseMLP([4, 5, 3], epsilon=2, seed=0)
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    np.testing.assert_allclose(m._class_weights("balanced", y), [12 / 18, 12 / 6, 12 / 12], rtol=1e-6)
    np.testing.assert_allclose(m._class_weights({1: 3.0}, y), [1, 3, 1])


def test_clip_norm_bounds_the_step():
    rng = np.random.default_rng(1)
    m = SparseNetwork([10, 12, 3], epsilon=4, seed=3, dtype="float64", dropout=0.0)
    X, y = m._check_X(rng.standard_normal((8, 10)) * 100), rng.integers(0, 3, 8)
    _, grads = m.compute_gradients(X, y)
    norm = np.sqrt(sum(np.dot(g, g) + np.dot(gb, gb) for g, gb in grads))
    assert norm > 1.0
    before = [(layer.data.copy(), layer.bias.copy()) for layer in m.layers]
    m.train_batch(X, y, np.arange(8, dtype=np.int64), learning_rate=1.0, momentum=0.0, weight_decay=0.0,
                  clip_norm=1.0)
    step = np.sqrt(sum(np.sum((layer.data - d) ** 2) + np.sum((layer.bias - b) ** 2)
                       for layer, (d, b) in zip(m.layers, before)))
    np.testing.assert_allclose(step, 1.0, rtol=1e-9)  # lr 1, no momentum: the step is the clipped gradient
    for layer, (g, gb), (d, b) in zip(m.layers, grads, before):  # in the gradient's direction
        np.testing.assert_allclose(layer.data, d - g / norm, rtol=1e-9, atol=1e-12)


@needs_data
@pytest.mark.parametrize("name", ["colon", "lung_small"])
def test_default_recipe_stays_finite_over_the_usual_learning_rates(name):
    """No non-finite loss for learning rates 0.001-0.05 with SETClassifier's defaults (2 data sets)."""
    pytest.importorskip("sklearn")
    from sklearn.preprocessing import StandardScaler

    from set_cy import SETClassifier
    from set_cy.datasets import load_dataset

    ds = load_dataset(name, data_dir=DATA, standardize=False)
    X = StandardScaler().fit_transform(ds.X_train)
    for lr in (0.001, 0.01, 0.05):
        clf = SETClassifier(hidden_layer_sizes=(200, 200), learning_rate=lr, epochs=60, random_state=0, n_jobs=1,
                            n_estimators=1).fit(X, ds.y_train)
        assert np.all(np.isfinite(clf.loss_curve_)), (name, lr)


def _blobs(n=150, d=30, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.standard_normal((n, d)) + 2.0 * np.eye(3, d)[y]
    return X, np.array(["a", "b", "c"])[y]


def test_estimator_ensemble_averages_its_networks():
    pytest.importorskip("sklearn")
    from set_cy import SETClassifier

    X, y = _blobs()
    clf = SETClassifier(hidden_layer_sizes=(16,), epsilon=3, epochs=5, random_state=0, n_jobs=1, n_estimators=3,
                        prune_inputs=0.0).fit(X, y)
    assert len(clf.networks_) == 3 and clf.network_ is clf.networks_[0]
    seeds = [net.seed for net in clf.networks_]
    assert len(set(seeds)) == 3 and seeds[0] == 0
    probas = [SETClassifier._mean_proba([net], X, clf.batch_size_) for net in clf.networks_]
    np.testing.assert_allclose(clf.predict_proba(X), np.mean(probas, axis=0), rtol=1e-6)
    np.testing.assert_allclose(clf.feature_importances_,
                               np.mean([net.input_strength(normalize=True) for net in clf.networks_], axis=0))
    assert len(clf.loss_curve_) == 5
    # one network: the seed is random_state itself, as before ensembles existed
    single = SETClassifier(hidden_layer_sizes=(16,), epsilon=3, epochs=5, random_state=0, n_jobs=1,
                           prune_inputs=0.0).fit(X, y)
    np.testing.assert_array_equal(single.network_.layers[0].indices, clf.networks_[0].layers[0].indices)


def test_estimator_class_weight_by_label_and_auto_batch():
    pytest.importorskip("sklearn")
    from set_cy import SETClassifier

    X, y = _blobs()
    clf = SETClassifier(hidden_layer_sizes=(16,), epsilon=3, epochs=3, random_state=0, n_jobs=1, zeta=0.0,
                        prune_inputs=0.0, weight_decay=0.0, class_weight={"a": 0.0, "b": 0.0, "c": 0.0}).fit(X, y)
    # every class weighs zero: no gradient, the network is still the one it was built as
    built = SparseMLP([30, 16, 3], epsilon=3, seed=0)
    for a, b in zip(clf.network_.layers, built.layers):
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.bias, b.bias)
    assert clf.batch_size_ == 16  # 150 // 64 = 2, clipped to 16
    with pytest.raises(ValueError, match="class_weight"):
        SETClassifier(class_weight={"zzz": 2.0}, epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="class_weight"):
        SETClassifier(class_weight="auto", epochs=1).fit(X, y)
    balanced = SETClassifier(hidden_layer_sizes=(16,), epsilon=3, epochs=40, random_state=0, n_jobs=1,
                             class_weight="balanced").fit(X[:100], y[:100])
    assert balanced.score(X[100:], y[100:]) > 0.6


def test_partial_fit_prunes_on_the_schedule_of_fit():
    pytest.importorskip("sklearn")
    from set_cy import SETClassifier

    X, y = _blobs(d=60)
    kw = dict(hidden_layer_sizes=(16,), epsilon=3, random_state=0, n_jobs=1, prune_inputs=0.5, prune_every=2,
              min_inputs=10)
    inc = SETClassifier(**kw)
    for i in range(7):
        inc.partial_fit(X, y, classes=["a", "b", "c"] if i == 0 else None)
    full = SETClassifier(epochs=7, **kw).fit(X, y)
    assert full.network_.active_inputs().size == 10  # 60 -> 30 -> 15 -> 10 after epochs 2, 4, 6
    np.testing.assert_array_equal(inc.network_.input_mask_, full.network_.input_mask_)
    assert inc.loss_curve_ == full.loss_curve_
    np.testing.assert_array_equal(inc.predict_proba(X), full.predict_proba(X))
    kw["prune_start"] = 5  # after epochs 5 and 7 only: 60 -> 30 by the end of 7 epochs
    inc = SETClassifier(**kw)
    for i in range(7):
        inc.partial_fit(X, y, classes=["a", "b", "c"] if i == 0 else None)
    full = SETClassifier(epochs=7, **kw).fit(X, y)
    assert full.network_.active_inputs().size == 30
    np.testing.assert_array_equal(inc.network_.input_mask_, full.network_.input_mask_)
    assert inc.loss_curve_ == full.loss_curve_
    np.testing.assert_array_equal(inc.predict_proba(X), full.predict_proba(X))


def test_early_stopping_restores_the_best_epoch():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((160, 30)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    Xv = rng.standard_normal((80, 30)).astype(np.float32)
    yv = (Xv[:, 0] + Xv[:, 1] > 0).astype(int)
    m = SparseMLP([30, 40, 2], epsilon=4, seed=0)
    hist = m.fit(X, y, epochs=60, batch_size=16, learning_rate=0.05, validation_data=(Xv, yv), early_stopping=True,
                 n_iter_no_change=3, verbose=0)
    val = [r["val_accuracy"] for r in hist]
    assert len(hist) < 60  # it stopped
    assert m.best_epoch_ == 1 + int(np.argmax(val))  # the first best (improvements must exceed tol)
    assert len(hist) - m.best_epoch_ == 3
    assert m.score(Xv, yv) == max(val)  # the best epoch's network is back, topology included
    # without validation_data: a stratified tenth of (X, y) is held out, the rest trains
    m2 = SparseMLP([30, 40, 2], epsilon=4, seed=0)
    hist2 = m2.fit(X, y, epochs=5, batch_size=16, early_stopping=True, verbose=0)
    assert "val_accuracy" in hist2[-1] and m2.best_epoch_ is not None
    with pytest.raises(ValueError, match="validation_fraction must be < 1"):
        m2.fit(X, y, epochs=2, early_stopping=True, validation_fraction=1.0, verbose=0)
    with pytest.raises(ValueError, match="n_iter_no_change must be a positive int"):
        m2.fit(X, y, epochs=2, early_stopping=True, n_iter_no_change=0, verbose=0)


def test_stratified_holdout_keeps_every_class():
    from set_cy.trainer import _stratified_holdout

    y = np.array([0] * 20 + [1] * 5 + [2] * 1 + [3] * 2)
    keep, held = _stratified_holdout(y, 0.1, np.random.default_rng(0))
    assert np.array_equal(np.sort(np.concatenate([keep, held])), np.arange(y.size))
    assert np.bincount(y[held], minlength=4).tolist() == [2, 1, 0, 1]
    assert set(y[keep]) == {0, 1, 2, 3}


def test_set_classifier_early_stopping():
    from set_cy import SETClassifier

    rng = np.random.default_rng(1)
    X = rng.standard_normal((120, 20))
    y = np.where(X[:, 0] > 0, "a", "b")
    clf = SETClassifier(hidden_layer_sizes=(32,), epsilon=4, epochs=80, early_stopping=True, n_iter_no_change=10,
                        n_estimators=2, random_state=0, n_jobs=1).fit(X, y)
    assert all(net.best_epoch_ is not None for net in clf.networks_)
    assert clf.n_iter_ < 80 and len(clf.loss_curve_) == max(net.epochs_trained_ for net in clf.networks_)
    assert clf.score(X, y) > 0.8
    with pytest.raises(ValueError, match="early_stopping must be a bool"):
        SETClassifier(early_stopping="yes").fit(X, y)


def test_early_stopping_after_a_callback_stop_and_bad_flags():
    from set_cy import Callback

    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 20)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)

    class StopAt(Callback):
        def on_epoch_end(self, model, epoch, logs):
            model.stop_training = epoch == 5

    m = SparseMLP([20, 30, 2], epsilon=4, seed=0)
    hist = m.fit(X, y, epochs=50, batch_size=16, early_stopping=True, callbacks=[StopAt()], verbose=0)
    assert len(hist) == 6 and m.best_epoch_ is not None and m.train_state_ is None
    val = [r["val_accuracy"] for r in hist]
    assert m.best_epoch_ == 1 + int(np.argmax(val))
    with pytest.raises(ValueError, match="early_stopping must be a bool"):
        m.fit(X, y, epochs=2, early_stopping="no", verbose=0)
