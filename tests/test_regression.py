"""Regression: SparseMLP with loss="squared_error" against dense NumPy references, and set_cy.SETRegressor
(scikit-learn's checks, target scaling, partial_fit, real data)."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from test_linear_path import _dense_logits
from test_linear_path import _net as _lp_net
from test_model import _fd_check

from set_cy import SparseMLP, SparseNetwork

DATA = Path(os.environ.get("SET_CY_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real datasets not found at {DATA} (set SET_CY_DATA)")


def _net(n_out=2, linear_path=True, dtype="float64"):
    return _lp_net(sizes=(6, 9, 7, n_out), loss="squared_error", linear_path=linear_path, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("linear_path", [False, True])
def test_outputs_loss_and_r2_match_dense_reference(dtype, linear_path):
    m = _net(linear_path=linear_path, dtype=dtype)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((7, 6)), rng.standard_normal((7, 2))
    tol = 1e-5 if dtype == "float32" else 1e-12
    ref = _dense_logits(m, X.astype(dtype))
    np.testing.assert_allclose(m.predict(X), ref, rtol=tol, atol=tol)
    loss, _ = m.compute_gradients(X, Y)
    assert loss == pytest.approx(0.5 * np.mean(((ref - Y) ** 2).sum(axis=1)), rel=10 * tol)
    r2 = np.mean(1 - ((Y - ref) ** 2).sum(axis=0) / ((Y - Y.mean(axis=0)) ** 2).sum(axis=0))
    assert m.score(X, Y) == pytest.approx(r2, rel=10 * tol, abs=10 * tol)
    with pytest.raises(ValueError, match="predict_proba needs a classifier"):
        m.predict_proba(X)


@pytest.mark.parametrize("linear_path", [False, True])
def test_gradients_match_finite_differences(linear_path):
    m = _net(linear_path=linear_path)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((5, 6)), rng.standard_normal((5, 2))
    assert _fd_check(m, X, Y) < 1e-6
    # the check can fail: the gradients of other targets are not these
    _, grads = m.compute_gradients(X, Y)
    _, other = m.compute_gradients(X, Y + 1.0)
    assert not np.allclose(grads[-1][0], other[-1][0])


def test_targets_are_checked():
    m = SparseMLP([6, 9, 2], epsilon=3, seed=1, loss="squared_error")
    X = np.zeros((4, 6))
    with pytest.raises(ValueError, match=r"y must have shape \(4, 2\)"):
        m.fit(X, np.zeros(4), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="NaN or infinity"):
        m.fit(X, np.full((4, 2), np.nan), epochs=1, verbose=0)
    with pytest.raises(TypeError, match="real regression targets"):
        m.fit(X, np.array([["a", "b"]] * 4), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="class_weight needs a classifier"):
        m.fit(X, np.zeros((4, 2)), epochs=1, verbose=0, class_weight="balanced")
    one = SparseMLP([6, 9, 1], epsilon=3, seed=1, loss="squared_error")
    one.fit(X, np.arange(4.0), epochs=1, verbose=0)  # one output: (n,) targets are accepted


@pytest.mark.parametrize("backend", ["openmp", "threads"])
def test_fit_learns_and_records_r2(backend):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 12)).astype(np.float32)
    Y = np.c_[2 * X[:, 0] - X[:, 1], np.sin(2 * X[:, 2]) + X[:, 3]]
    m = SparseMLP([12, 64, 2], epsilon=6, seed=0, loss="squared_error", n_threads=1)
    hist = m.fit(X[:300], Y[:300], epochs=25, batch_size=16, validation_data=(X[300:], Y[300:]), verbose=0,
                 backend=backend, n_jobs=1 if backend == "openmp" else 2)
    assert hist["loss"][-1] < 0.3 * hist["loss"][0]
    assert "train_accuracy" not in hist[-1] and hist[-1]["val_r2"] == pytest.approx(m.score(X[300:], Y[300:]))
    assert m.score(X[300:], Y[300:]) > 0.8
    # early stopping holds out a random fraction and keeps the best epoch by R²
    es = SparseMLP([12, 64, 2], epsilon=6, seed=0, loss="squared_error", n_threads=1)
    es.fit(X, Y, epochs=40, batch_size=16, verbose=0, early_stopping=True, n_iter_no_change=3)
    assert 1 <= es.best_epoch_ <= es.epochs_trained_ and es.history_[es.best_epoch_ - 1]["val_r2"] == max(
        es.history_["val_r2"])


def test_save_and_load_keep_the_loss(tmp_path):
    m = _net()
    X = np.random.default_rng(0).standard_normal((5, 6))
    m.save(tmp_path / "reg.npz")
    back = SparseNetwork.load(tmp_path / "reg.npz")
    assert back.is_regression
    np.testing.assert_array_equal(back.predict(X), m.predict(X))


# ---------------------------------------------------------------------------------------------
# SETRegressor
sklearn = pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from set_cy import SETRegressor  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import bench_regression as br  # noqa: E402


def _small(**kw):
    params = dict(hidden_layer_sizes=(32,), epsilon=5, epochs=20, random_state=0, n_jobs=1, n_estimators=1)
    params.update(kw)
    return SETRegressor(**params)


# scikit-learn's checks at a short setting; SETClassifier's checks run the shared code (_SETBase) at the
# defaults, and the defaults of SETRegressor fit on real data below (the full checks at the defaults took
# about 2 minutes more)
@parametrize_with_checks([
    SETRegressor(hidden_layer_sizes=(16,), epsilon=4, n_estimators=2, epochs=10, n_jobs=1),
])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("param,value", [("epochs", 0), ("max_iter", -1), ("zeta", 1.0), ("linear_path", "no"),
                                         ("hidden_layer_sizes", (0,)), ("learning_rate", 0.0)])
def test_bad_parameters_raise_value_error_naming_them(param, value):
    X, y = np.zeros((20, 3)), np.arange(20.0)
    with pytest.raises(ValueError, match=param):
        _small(**{param: value}).fit(X, y)
    assert "class_weight" not in SETRegressor().get_params()


def test_targets_are_standardised_inside_and_predictions_in_their_units():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 10))
    y = 1e4 * (3 * X[:, 0] - X[:, 1]) + 5e5  # units in which SGD at lr 0.01 on raw targets would diverge
    reg = _small(epochs=30).fit(X, y)
    assert reg.y_mean_ == pytest.approx([y.mean()]) and reg.y_scale_ == pytest.approx([y.std()])
    pred = reg.predict(X)
    assert pred.shape == (300,) and reg.score(X, y) > 0.95
    assert all(np.isfinite(reg.loss_curve_)) and reg.loss_curve_[-1] < 0.2  # standardised units
    Y = np.c_[y, np.ones(300)]  # a constant output: scale 1, predicted as that constant
    reg2 = _small(epochs=30).fit(X, Y)
    assert reg2.n_outputs_ == 2 and reg2.predict(X).shape == (300, 2) and reg2.y_scale_[1] == 1.0
    np.testing.assert_allclose(reg2.predict(X)[:, 1], 1.0, atol=0.05)
    # the first inputs carry the signal: they get the largest importances
    assert set(np.argsort(-reg.feature_importances_)[:2]) == {0, 1}


def test_partial_fit_equals_fit_and_checks_outputs():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((120, 8))
    y = X[:, 0] - 2 * X[:, 3]
    a = _small(epochs=4).fit(X, y)
    b = _small()
    for _ in range(4):
        b.partial_fit(X, y)
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-6)
    with pytest.raises(ValueError, match="2 outputs"):
        b.partial_fit(X, np.c_[y, y])


def test_prediction_does_not_depend_on_the_other_samples():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((70, 6))
    reg = _small(batch_size=16).fit(X, X[:, 0])
    full = reg.predict(X)
    np.testing.assert_array_equal(np.concatenate([reg.predict(X[:5]), reg.predict(X[5:])]), full)


def test_bench_hub_gene_is_the_most_correlated_column():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6))
    X[:, 4] = X[:, [0, 1, 2, 3, 5]].sum(axis=1)  # correlated with every other column
    assert br.hub_gene(X) == 4
    X[:, 4] = rng.standard_normal(200)
    assert br.hub_gene(X) != 4


@needs_data
def test_real_microarray_one_gene_from_the_others():
    """colon: the bench's task (the hub gene from the other 1999 genes), 3 folds: SETRegressor with its
    defaults, as the bench runs it, explains a clear part of the held-out variance."""
    from sklearn.model_selection import KFold

    X, _ = br.load_full("colon")
    X = X.astype(np.float64)
    target = br.hub_gene(X)
    y, X = X[:, target], np.delete(X, target, axis=1)
    r2 = [br.make_model("set_regressor", 0, 1).fit(X[tr], y[tr]).score(X[te], y[te])
          for tr, te in KFold(3, shuffle=True, random_state=0).split(X)]
    assert np.mean(r2) > 0.4, r2


def test_predict_averages_the_networks():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((64, 6))
    y = X[:, 0] + X[:, 1] ** 2
    reg = _small(n_estimators=3, batch_size=16).fit(X, y)
    assert len(reg.networks_) == 3 and len({net.seed for net in reg.networks_}) == 3
    each = [SETRegressor._mean_outputs([net], X.astype(np.float32), 16) for net in reg.networks_]
    np.testing.assert_allclose(reg.predict(X), np.mean(each, axis=0).ravel() * reg.y_scale_[0] + reg.y_mean_[0],
                               rtol=1e-6)
    assert not np.allclose(each[0], each[1])
