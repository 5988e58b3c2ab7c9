"""The statistics and the score cache of bench/bench_accuracy.py, against direct computations."""
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
pytest.importorskip("sklearn")
import bench_accuracy as ba  # noqa: E402


def _record(diffs, n_test=10, n_train=40):
    return {"folds": [{"seed": i // 5, "fold": i % 5, "n_test": n_test, "n_train": n_train,
                       "accuracy": {"a": 0.5 + d, "b": 0.5}} for i, d in enumerate(diffs)]}


def test_corrected_resampled_ttest_by_hand():
    from scipy import stats

    d = np.array([0.1, 0.0, 0.2, 0.1, -0.1, 0.3, 0.1, 0.0, 0.2, 0.1])
    res = ba.corrected_ttest(_record(d), "a", "b")
    t = d.mean() / math.sqrt((1 / d.size + 10 / 40) * d.var(ddof=1))
    assert res["J"] == 10 and res["mean_diff"] == pytest.approx(d.mean())
    assert res["t"] == pytest.approx(t) and res["p"] == pytest.approx(2 * stats.t.sf(abs(t), 9))
    # the correction makes the test more cautious than the plain paired t-test
    assert res["p"] > stats.ttest_1samp(d, 0.0).pvalue
    assert ba.verdict(0.05, 0.01) == "win" and ba.verdict(-0.05, 0.01) == "loss"
    assert ba.verdict(0.05, 0.2) == "tie (+0.050)"


def test_pooled_accuracy_per_seed():
    rec = _record([0.1] * 5 + [0.3] * 5)
    np.testing.assert_allclose(ba.pooled_by_seed(rec, "a"), [0.6, 0.8])


def test_cached_scores_equal_the_direct_ones():
    from sklearn.feature_selection import f_classif, mutual_info_classif

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 12)), rng.integers(0, 2, 40)
    ba._SCORE_CACHE.clear()
    ba._CACHE_STATS.update(computed=0, reused=0)
    for _ in range(2):
        F, p = ba.CachedScore("f_classif")(X, y)
        np.testing.assert_array_equal(F, f_classif(X, y)[0])
        mi = ba.CachedScore("mutual_info")(X, y)
        np.testing.assert_array_equal(mi, mutual_info_classif(X, y, random_state=ba.MI_RANDOM_STATE))
    assert ba._CACHE_STATS == {"computed": 2, "reused": 2}
    mi[:] = -1  # a caller changing its copy does not change the cache
    assert np.all(ba.CachedScore("mutual_info")(X, y) >= 0)


def test_f_classif_of_many_constant_features_warns_nothing(recwarn):
    """Constant features score NaN without scikit-learn's warning, also when its message lists so many
    features that it spans several lines."""
    X = np.random.default_rng(0).standard_normal((20, 400))
    X[:, ::3] = 1.0
    F, _ = ba.CachedScore("f_classif")(X, np.arange(20) % 2)
    assert np.isnan(F[::3]).all() and np.isfinite(F[1::3]).all()
    assert not [w for w in recwarn if "constant" in str(w.message)]


QUICK = ["--quick", "--datasets", "colon", "--epochs", "3", "--no-lr-sweep"]


def _three_classes():
    from sklearn.datasets import make_classification

    # three classes: every comparator and ranking must take more than two
    X, y = make_classification(n_samples=60, n_features=30, n_informative=5, n_classes=3, random_state=0)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One --quick run of the whole protocol on a small three-class set (its JSON path), shared by the
    tests below: the run is the expensive part."""
    out = str(tmp_path_factory.mktemp("quick") / "a.json")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ba, "load_full", lambda name: _three_classes())
        assert ba.main(QUICK + ["--out", out]) == 0
    return out


def test_reuse_copies_the_two_phase_parts_and_recomputes_set_mlp(quick_run, tmp_path, monkeypatch):
    """A ``--reuse`` run gives the figures of a full run: copied two-phase and upper-bound parts,
    SET-MLP computed again (the same, since nothing of it changed); mismatched runs are refused."""
    import json

    monkeypatch.setattr(ba, "load_full", lambda name: _three_classes())
    second = str(tmp_path / "b.json")
    assert ba.main(QUICK + ["--out", second, "--reuse", quick_run]) == 0
    a, b = (json.load(open(p))["results"][0] for p in (quick_run, second))
    assert b["reused_folds"] == len(b["folds"]) == 3 and b["reused_from"][0]["folds"] == 3
    for fa, fb in zip(a["folds"], b["folds"]):
        assert fa["accuracy"] == fb["accuracy"] and fa["two_phase"] == fb["two_phase"]
        assert "two_phase" not in fb["seconds"] and fb["reused_seconds"]["two_phase"] == fa["seconds"]["two_phase"]
    assert "reused (3 folds' two-phase)" in ba.main_table([b])[2]
    with pytest.raises(ValueError, match="other folds"):
        ba.main(QUICK + ["--folds", "2", "--out", str(tmp_path / "c.json"), "--reuse", quick_run])


def test_compare_table_pairs_the_common_folds():
    before = [{"dataset": "x", "folds": [{"seed": s, "fold": f, "n_test": 10, "n_train": 40,
                                          "accuracy": {"set_mlp": 0.5}} for s in range(2) for f in range(2)]}]
    after = [{"dataset": "x", "folds": [{"seed": s, "fold": f, "n_test": 10, "n_train": 40,
                                         "accuracy": {"set_mlp": 0.6 + 0.1 * f}} for s in range(3) for f in range(2)]},
             {"dataset": "only_after", "folds": []}]
    lines = ba.compare_table(before, after)
    assert len(lines) == 4  # header, rule, x, mean (only_after has no pair)
    assert lines[2].startswith("| x | 4 | 0.500 | 0.650 |")
    assert lines[3] == "| mean of the 1 | | 0.500 | 0.650 | +0.150 |"


def test_stability_indices_by_hand():
    a, b, c = [0, 1, 2, 3], [0, 1, 2, 4], [5, 6, 7, 8]
    # Kuncheva: (r * d - k^2) / (k * (d - k)), d = 20 features, k = 4
    assert ba.kuncheva([a, b], 20) == pytest.approx((3 * 20 - 16) / (4 * 16))
    assert ba.kuncheva([a, a, a], 20) == pytest.approx(1.0)
    assert ba.kuncheva([a, b, c], 20) == pytest.approx(np.mean([(3 * 20 - 16) / 64, -16 / 64, -16 / 64]))
    assert ba.jaccard([a, b, c]) == pytest.approx(np.mean([3 / 5, 0.0, 0.0]))
    rng = np.random.default_rng(0)
    assert ba.top_features([0.1, np.nan, 3.0, 2.0, 3.0], 3, rng) == [2, 3, 4]  # NaN lowest


def test_top_features_breaks_ties_at_random_not_by_index():
    # 40 pruned inputs (score 0) and 10 that count: a top 20 takes 10 of the zeros; with ties by
    # index every fold would take inputs 0..9 and the stability index would count that as agreement
    scores = np.r_[np.zeros(40), np.arange(1.0, 11.0)]
    picks = [ba.top_features(scores, 20, np.random.default_rng(s)) for s in range(5)]
    for p in picks:
        assert set(range(40, 50)) <= set(p) and len(p) == 20
    assert len({tuple(p) for p in picks}) > 1
    assert ba.kuncheva(picks, 50) < 0.6  # ties by index would give 1.0


def test_quick_run_has_every_comparator_and_the_best_one_chosen_on_inner_folds(quick_run):
    import json

    ds = json.load(open(quick_run))["results"][0]
    assert ds["grid_sizes"]["logreg"] == ds["grid_sizes"]["linear_svm"] == 4
    for f in ds["folds"]:
        inner = {c: f[c]["inner_score"] for c in ba.COMPARATORS}
        best = f["best_comparator"]
        assert inner[best] == max(inner.values())
        assert f["accuracy"]["best_comparator"] == f["accuracy"][best]
        assert f["logreg"]["params"]["C"] in ba.SINGLE_PHASE_C
        assert all(len(f["top"][r]) == 30 for r in ba.RANKINGS)  # k = min(50, 30 features)
    assert set(ds["tests"]) == {f"set_mlp-{k}" for k in (*ba.COMPARATORS, "best_comparator", "static_sparse")}
    assert set(ds["stability"]) == set(ba.RANKINGS)
    text = ba.tables([ds])
    assert "L2 logistic regression" in text and "SET-MLP vs best comparator (inner folds)" in text
    assert "top-50 stability (Kuncheva): feature_importances_ >= f_classif on" in text


def test_parse_params_and_the_default_grid():
    assert ba.parse_params("linear_path=False;min_inputs=10;clip_norm=None;new_weights=init;lr=0.02") == {
        "linear_path": False, "min_inputs": 10, "clip_norm": None, "new_weights": "init", "lr": 0.02}
    assert ba.parse_value("True") is True and ba.parse_value("False") is False
    grid = ba.parse_grid(ba.DEFAULT_SET_GRID)
    assert ba.grid_size(grid) == 3 and not ba.unknown_set_params(ba.grid_names(grid))
    assert {"linear_path": [False], "prune_inputs": [0.3], "min_inputs": [10]} in grid


def test_data_files_are_accepted_beside_the_names(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 8)).astype(np.float32), np.repeat([0, 1, 2], 10)
    path = str(tmp_path / "mine.npz")
    np.savez(path, X=X, y=y)
    (tmp_path / "notes.json").write_text("{}")
    missing, wrong = str(tmp_path / "absent.npz"), str(tmp_path / "notes.json")
    assert ba.unknown_datasets(["colon", path, "madelon"]) == []
    assert ba.unknown_datasets(["colon", "colon2", missing, wrong]) == ["colon2", missing, wrong]
    # every sample comes back, once, with its own label
    Xf, yf = ba.load_full(path)
    assert Xf.shape == X.shape and np.bincount(yf).tolist() == [10, 10, 10]
    order, ref = np.lexsort(Xf.T[::-1]), np.lexsort(X.T[::-1])
    np.testing.assert_array_equal(Xf[order], X[ref])
    np.testing.assert_array_equal(yf[order], y[ref])
    assert ba.parse_args(["--datasets", f"colon,{path}"]).datasets == ["colon", path]
    # a CSV file: features, then the label in the last column (as the docs say)
    csv = str(tmp_path / "mine.csv")
    np.savetxt(csv, np.column_stack([X, y]), delimiter=",", fmt="%.6f")
    assert ba.unknown_datasets([csv]) == []
    Xc, yc = ba.load_full(csv)
    assert Xc.shape == X.shape and np.bincount(yc.astype(np.int64)).tolist() == [10, 10, 10]
    with pytest.raises(SystemExit):
        ba.parse_args(["--datasets", f"colon,{missing}"])
    err = capsys.readouterr().err
    assert missing in err and "paths to .mat, .npz or .csv files" in err
