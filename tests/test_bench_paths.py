"""bench/bench_paths.py: the settings and pairs it compares, one path switched off, a whole run and its table."""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
pytest.importorskip("sklearn")
import bench_paths as bp  # noqa: E402


def _three_classes():
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=60, n_features=30, n_informative=5, n_classes=3, random_state=0)
    return X.astype(np.float32), y


def test_settings_and_the_pairs_that_differ_in_one_parameter():
    combos = bp.settings({"zeta": [0.3, 0.0], "linear_path": [True, False]})
    assert [bp.label(c) for c in combos] == ["zeta=0.3, linear_path=True", "zeta=0.3, linear_path=False",
                                             "zeta=0.0, linear_path=True", "zeta=0.0, linear_path=False"]
    # four pairs, not the two diagonals; the earlier-listed value first
    assert bp.pairs(combos) == [("zeta=0.3, linear_path=True", "zeta=0.3, linear_path=False"),
                                ("zeta=0.3, linear_path=True", "zeta=0.0, linear_path=True"),
                                ("zeta=0.3, linear_path=False", "zeta=0.0, linear_path=False"),
                                ("zeta=0.0, linear_path=True", "zeta=0.0, linear_path=False")]


def test_one_path_predicts_with_that_path_alone():
    from set_cy import SETClassifier

    X, y = _three_classes()
    clf = SETClassifier(hidden_layer_sizes=(16,), epsilon=4, epochs=5, n_estimators=2, random_state=0).fit(X, y)
    before = clf.predict_proba(X)
    linear, hidden = bp.one_path(clf, "linear only"), bp.one_path(clf, "hidden only")
    np.testing.assert_array_equal(clf.predict_proba(X), before)  # the fitted model is untouched
    assert all(not np.any(net.layers[-1].data) and np.any(net.linear_layer.data) for net in linear.networks_)
    assert all(not np.any(net.linear_layer.data) and np.any(net.layers[-1].data) for net in hidden.networks_)
    # "linear only": softmax(X @ W_linear + output bias), whatever the hidden layers hold
    for net in linear.networks_:
        net.layers[0].data[:] = 7.0
    logits = [X @ net.linear_weights.toarray() + net.layers[-1].bias for net in linear.networks_]
    proba = np.mean([np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)
                     for z in logits], axis=0)
    np.testing.assert_allclose(linear.predict_proba(X), proba, rtol=1e-4, atol=1e-6)


def test_run_and_table(tmp_path, monkeypatch):
    monkeypatch.setattr(bp, "load_full", lambda name: _three_classes())
    out = str(tmp_path / "p.json")
    bp.main(["--datasets", "colon", "--seeds", "2", "--folds", "2", "--fixed", "epochs=2;epsilon=4",
             "--out", out])
    with open(out) as fh:
        ds = json.load(fh)["results"][0]
    assert len(ds["folds"]) == 4 and ds["settings"][0] == "zeta=0.3, linear_path=True"
    keys = set(ds["folds"][0]["accuracy"])
    assert {"zeta=0.3, linear_path=True: hidden only", "zeta=0, linear_path=False"} <= keys
    assert "zeta=0.3, linear_path=False: hidden only" not in keys  # no linear path, nothing to switch off
    assert all(0 <= a <= 1 for f in ds["folds"] for a in f["accuracy"].values())
    # the top genes of every setting (and of f_classif) on every fold: EMBEDDED_K of them, or all but one
    assert set(ds["folds"][0]["top"]) == {"f_classif", *ds["settings"]}
    assert all(len(t) == 29 and len(set(t)) == 29 for f in ds["folds"] for t in f["top"].values())
    lines = bp.table([ds]).splitlines()
    assert lines[0] == "| setting | colon (60 x 30, 3) | mean of the 1 |"
    assert sum(line.endswith("|") and " minus " in line for line in lines) == 4
    stab = lines[lines.index("| top-gene stability (Kuncheva) | colon | mean of the 1 |") + 2:]
    assert [line.split(" | ")[0] for line in stab] == ["| f_classif", *(f"| {k}" for k in ds["settings"])]
    assert stab[0].split(" | ")[1] == f"{bp.top_stability(ds, 'f_classif'):.3f}"


def test_run_on_a_data_file(tmp_path):
    X, y = _three_classes()
    path = str(tmp_path / "mine.npz")
    np.savez(path, X=X, y=y)
    out = str(tmp_path / "p.json")
    assert bp.parse_args(["--datasets", path]).names == [path]
    bp.main(["--datasets", path, "--seeds", "1", "--folds", "2", "--fixed", "epochs=2;epsilon=4",
             "--vary", "zeta=0.3,0", "--out", out])
    with open(out) as fh:
        ds = json.load(fh)["results"][0]
    assert ds["dataset"] == path and len(ds["folds"]) == 2
    assert bp.table([ds]).splitlines()[0] == f"| setting | {path} (60 x 30, 3) | mean of the 1 |"


def test_top_stability_is_the_kuncheva_index_over_all_folds():
    ds = {"shape": [10, 6], "folds": [{"top": {"a": [0, 1]}}, {"top": {"a": [0, 1]}}, {"top": {"a": [0, 2]}}]}
    # pairs: identical (k n - k^2) / (k (n - k)) = 1; one shared of 2 of 6: (6 - 4) / 8 = 0.25 (twice)
    assert bp.top_stability(ds, "a") == pytest.approx((1 + 0.25 + 0.25) / 3)
    assert np.isnan(bp.top_stability({"shape": [10, 6], "folds": [{"accuracy": {}}]}, "a"))  # an older report


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        bp.parse_args(["--datasets", "nope"])
    with pytest.raises(SystemExit):
        bp.parse_args(["--vary", "zeta=0.3,0|zeta=0.1"])
    with pytest.raises(SystemExit):
        bp.parse_args(["--vary", "zetta=0.3,0"])
    with pytest.raises(SystemExit):
        bp.parse_args(["--fixed", "zeta=0", "--vary", "zeta=0.3,0"])
