"""The rankings of bench/bench_importance.py against direct computations."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
pytest.importorskip("sklearn")
import bench_importance as bi  # noqa: E402


@pytest.fixture(scope="module")
def fitted():
    from sklearn.preprocessing import StandardScaler

    from set_cy import SETClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 40))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    X = StandardScaler().fit_transform(X)
    clf = SETClassifier(hidden_layer_sizes=(16,), epsilon=4, epochs=15, n_estimators=2, random_state=0).fit(X, y)
    return clf, X, y


def test_pattern_rankings_equal_direct_least_squares(fitted):
    clf, X, y = fitted
    scores = bi.rankings(clf, X, y)
    s = bi.centred_log_proba(clf, X)
    np.testing.assert_allclose(s.sum(axis=1), 0, atol=1e-10)
    np.testing.assert_allclose(s.mean(axis=0), 0, atol=1e-10)
    Xc = X - X.mean(axis=0)
    np.testing.assert_allclose(scores["pattern"], np.abs(Xc.T @ s).sum(axis=1) / len(X))
    # R^2 of each gene regressed on the centred log-probabilities, by lstsq
    coef, *_ = np.linalg.lstsq(s, Xc, rcond=None)
    r2 = 1 - ((Xc - s @ coef) ** 2).sum(axis=0) / (Xc ** 2).sum(axis=0)
    np.testing.assert_allclose(scores["pattern_r2"], r2, rtol=1e-6, atol=1e-9)
    assert np.all((r2 >= -1e-9) & (r2 <= 1 + 1e-9))
    np.testing.assert_allclose(scores["feature_importances_"], clf.feature_importances_)
    # the genes that carry the label rank first by the univariate score and by the pattern
    assert set(np.argsort(-scores["f_classif"])[:3]) >= {0}
    assert 0 in np.argsort(-scores["pattern_r2"])[:5]


def test_embedded_accuracy_uses_only_the_given_genes(fitted):
    _, X, y = fitted
    good, bad = bi.embedded(X, y, X, y, [0, 1, 2]), bi.embedded(X, y, X, y, [30, 31, 32])
    assert good[0] > bad[0] and good[1] > bad[1]
