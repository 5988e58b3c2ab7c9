"""Which gene ranking of a fitted SET-MLP is stable, and do its top genes still classify? (issue 24)

A screen, not the nested protocol of ``bench_accuracy.py``: one seed, stratified 5-fold CV, features
z-scored on the training part, ``SETClassifier`` with every parameter at its default (``n_jobs`` from
``--threads``). On each fold, the top-50 genes by each ranking below are stored; the stability of a
ranking is the mean Kuncheva index of its top-50 over every pair of folds (1: the same genes on every
resample, ~0: chance), as in ``bench_accuracy.py`` (same tie breaking). Beside it, the test accuracy of
``LinearSVC`` and 5-NN fitted on the training part's top-50 genes ("embedded" accuracy: do the genes
carry the signal?).

Rankings:

- ``feature_importances_``: the library's, the normalized sum of ``|w|`` over each input's connections
  of the linear path, averaged over the ensemble's networks.
- ``pattern``: the activation pattern of the fitted ensemble (Haufe et al., NeuroImage 2014): the
  covariance over the training samples of each gene with each class's centred log-probability, summed
  in absolute value over the classes.
- ``pattern_r2``: the share of each gene's variance explained by the network's centred log-probabilities
  (a least-squares fit of the gene on them), which weighs every class direction equally.
- ``f_classif``: the ANOVA F statistic of each gene (univariate).
- ``l2_logreg``: ``sum |coef|`` over the classes of ``LogisticRegression(C=0.01)`` (L2).

Example
-------
    SET_CY_DATA=../shared/data python bench/bench_importance.py --datasets colon,lung_small
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import git_commit, load_average, machine_info, save_report  # noqa: E402
from bench_accuracy import (  # noqa: E402
    DATASETS_HELP,
    EMBEDDED_K,
    CachedScore,
    check_datasets,
    classifiers,
    derived_seed,
    kuncheva,
    load_full,
    test_accuracy,
    top_features,
)

RANKINGS = ("feature_importances_", "pattern", "pattern_r2", "f_classif", "l2_logreg")


def centred_log_proba(clf, X):
    """The ensemble's log-probabilities on ``X``, centred over the classes and over the samples."""
    logp = np.log(np.clip(clf.predict_proba(X), 1e-12, None))
    logp -= logp.mean(axis=1, keepdims=True)
    return logp - logp.mean(axis=0)


def rankings(clf, X, y):
    """``{name: scores}`` of every ranking for a classifier fitted on the (z-scored) training part ``X, y``."""
    from sklearn.linear_model import LogisticRegression

    s = centred_log_proba(clf, X)
    Xc = X - X.mean(axis=0)
    cov = Xc.T @ s / X.shape[0]                                   # n_features x n_classes
    inv = np.linalg.pinv(s.T @ s / X.shape[0], rcond=1e-8)        # the log-probabilities sum to 0: singular
    r2 = np.einsum("jc,cd,jd->j", cov, inv, cov) / np.maximum(Xc.var(axis=0), 1e-12)
    f = CachedScore.scores(CachedScore("f_classif")(X, y))
    lr = LogisticRegression(C=0.01, max_iter=2000).fit(X, y)
    return {"feature_importances_": clf.feature_importances_, "pattern": np.abs(cov).sum(axis=1),
            "pattern_r2": r2, "f_classif": f, "l2_logreg": np.abs(lr.coef_).sum(axis=0)}


def embedded(Xtr, ytr, Xte, yte, top):
    """Test accuracy of the two-phase pipeline's LinearSVC and 5-NN on the genes ``top``."""
    clfs = classifiers(None)
    return [test_accuracy(clfs[name], Xtr[:, top], ytr, Xte[:, top], yte) for name in ("svm", "knn")]


def run(name, folds, threads, seed=0):
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    from set_cy import SETClassifier

    X, y = load_full(name)
    k = min(EMBEDDED_K, X.shape[1] - 1)
    tops = {r: [] for r in RANKINGS}
    emb = {r: [] for r in RANKINGS}
    acc = []
    t0 = time.perf_counter()
    for fold, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y)):
        scale = StandardScaler().fit(X[tr])
        Xtr, Xte = scale.transform(X[tr]), scale.transform(X[te])
        clf = SETClassifier(n_jobs=threads, random_state=derived_seed(seed, fold, 0)).fit(Xtr, y[tr])
        acc.append(float(clf.score(Xte, y[te])))
        for r, scores in rankings(clf, Xtr, y[tr]).items():
            top = top_features(scores, k, np.random.default_rng(derived_seed(seed, fold, 2)))
            tops[r].append(top)
            emb[r].append(embedded(Xtr, y[tr], Xte, y[te], top))
    return dict(dataset=name, shape=list(X.shape), n_classes=int(np.unique(y).size), set_mlp_accuracy=acc,
                seconds=time.perf_counter() - t0,
                stability={r: kuncheva(tops[r], X.shape[1]) for r in RANKINGS},
                embedded={r: np.mean(emb[r], axis=0).tolist() for r in RANKINGS}, top=tops)


def table(results):
    head = ["data set", "SET-MLP accuracy"] + [f"{r}: Kuncheva / svm / knn" for r in RANKINGS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        cells = [f"{res['stability'][r]:.3f} / {res['embedded'][r][0]:.3f} / {res['embedded'][r][1]:.3f}"
                 for r in RANKINGS]
        lines.append(f"| {res['dataset']} | {np.mean(res['set_mlp_accuracy']):.3f} | " + " | ".join(cells) + " |")
    for r in RANKINGS[:-2]:
        ge = sum(res["stability"][r] >= res["stability"]["f_classif"] for res in results)
        lines.append(f"\n{r}: stability >= f_classif on {ge} of {len(results)}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="allaml,glioma,colon,leukemia,lymphoma,lung_small",
                   help=DATASETS_HELP)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON report")
    args = p.parse_args(argv)
    names = args.datasets.split(",")
    check_datasets(p, names)
    started, machine, load0 = time.time(), machine_info(), load_average()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gb']} GB; commit {git_commit()}",
          flush=True)
    results = []
    for name in names:
        results.append(run(name, args.folds, args.threads))
        print(f"{name}: {results[-1]['seconds']:.0f} s", flush=True)
        if args.out:
            save_report(args.out, started, machine, load0, args=vars(args), results=results)
    print(table(results))


if __name__ == "__main__":
    main()
