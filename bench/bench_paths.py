"""Where SET-MLP's accuracy comes from: evolution against the static network, the linear path against the
hidden layers (issue 24).

A screen, not the nested protocol of ``bench_accuracy.py``: stratified 5-fold CV for each of ``--seeds``
seeds, features z-scored on the training part, ``SETClassifier`` at its defaults plus ``--fixed``, once
for every combination of the ``--vary`` values (default: ``zeta`` 0.3 or 0, ``linear_path`` True or
False: SET and the static sparse network, with and without the linear path). Every fitted network that
has a linear path is also scored with one of its two paths switched off at prediction: "hidden only"
(the linear path's weights set to zero) and "linear only" (the last hidden layer's weights set to zero,
its bias kept), which shows which path the predictions come from.

Accuracies are pooled over the folds of each seed (mean ± std over the seeds); every pair of settings
that differ in one varied parameter is compared with the corrected resampled t-test of
``bench_accuracy.py`` over the seed x fold pairs (the first listed value minus the other).
The last table is the stability of each setting's gene ranking: the Kuncheva index of the top-50 genes
by ``feature_importances_`` over every pair of folds of all seeds (f_classif's on the same folds beside
it), with ``bench_accuracy.py``'s random tie breaking.

Examples
--------
    SET_CY_DATA=../shared/data python bench/bench_paths.py --datasets colon,lung_small --out bench/results/paths.json
    SET_CY_DATA=../shared/data python bench/bench_paths.py --datasets madelon --seeds 1 --jobs 2 \\
        --fixed "linear_path=False;min_inputs=10" --vary "zeta=0.3,0;prune_inputs=0.3,0"
    python bench/bench_paths.py --table bench/results/paths.json
"""
import argparse
import copy
import itertools
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
    cell,
    check_datasets,
    corrected_ttest,
    derived_seed,
    kuncheva,
    load_full,
    load_results,
    mean_std,
    parse_grid,
    parse_params,
    test_cell,
    top_features,
    unknown_set_params,
)

DEFAULT_VARY = "zeta=0.3,0;linear_path=True,False"
PATHS = ("hidden only", "linear only")


def settings(vary):
    """Every combination of the ``vary`` grid (one ``{name: [values]}``), in the order listed."""
    names = list(vary)
    return [dict(zip(names, values)) for values in itertools.product(*(vary[n] for n in names))]


def label(params):
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def one_path(clf, path):
    """A copy of a fitted ``SETClassifier`` whose networks predict with one path only (see the module)."""
    clf = copy.deepcopy(clf)
    for net in clf.networks_:
        layer = net.linear_layer if path == "hidden only" else net.layers[-1]
        layer.data[:] = 0
    return clf


def run_fold(X, y, train, test, seed, fold, fixed, combos):
    """Every setting on one split: ``{key: accuracy}`` (with the one-path scores of the networks with a linear
    path) and ``{setting: top genes}``, the ``EMBEDDED_K`` largest ``feature_importances_`` (and f_classif's),
    ties broken at random as in ``bench_accuracy.py``."""
    from sklearn.preprocessing import StandardScaler

    from set_cy import SETClassifier

    scale = StandardScaler().fit(X[train])
    Xtr, Xte, ytr, yte = scale.transform(X[train]), scale.transform(X[test]), y[train], y[test]
    acc, top = {}, {}
    k = min(EMBEDDED_K, X.shape[1] - 1)
    ties = np.random.default_rng(derived_seed(seed, fold, 2))
    top["f_classif"] = top_features(CachedScore.scores(CachedScore("f_classif")(Xtr, ytr)), k, ties)
    for params in combos:
        clf = SETClassifier(n_jobs=1, random_state=derived_seed(seed, fold, 0), **{**fixed, **params}).fit(Xtr, ytr)
        key = label(params)
        acc[key] = float(clf.score(Xte, yte))
        top[key] = top_features(clf.feature_importances_, k, ties)
        if clf.networks_[0].linear_layer is not None:
            for path in PATHS:
                acc[f"{key}: {path}"] = float(one_path(clf, path).score(Xte, yte))
    return dict(seed=seed, fold=fold, n_train=int(train.size), n_test=int(test.size), accuracy=acc, top=top)


def run(name, args, fixed, combos):
    from joblib import Parallel, delayed
    from sklearn.model_selection import StratifiedKFold

    X, y = load_full(name)
    t0 = time.perf_counter()
    splits = [(seed, fold, tr, te) for seed in range(args.seeds)
              for fold, (tr, te) in enumerate(StratifiedKFold(args.folds, shuffle=True, random_state=seed).split(X, y))]
    folds = Parallel(n_jobs=args.jobs)(delayed(run_fold)(X, y, tr, te, seed, fold, fixed, combos)
                                       for seed, fold, tr, te in splits)
    return dict(dataset=name, shape=list(X.shape), n_classes=int(np.unique(y).size),
                settings=[label(c) for c in combos], pairs=pairs(combos), folds=folds,
                seconds=time.perf_counter() - t0)


def pairs(combos):
    """``[(a, b)]``: the settings that differ in exactly one parameter, ``a`` holding its earlier-listed value."""
    out = []
    for i, a in enumerate(combos):
        for b in combos[i + 1:]:
            if sum(a[k] != b[k] for k in a) == 1:
                out.append((label(a), label(b)))
    return out


def top_stability(ds, key):
    """Kuncheva index of the top genes of ranking ``key`` over every pair of the data set's folds (all seeds),
    as ``bench_accuracy.py``'s stability; NaN for a report without them."""
    sets = [f["top"][key] for f in ds["folds"] if key in f.get("top", {})]
    return kuncheva(sets, ds["shape"][1]) if len(sets) == len(ds["folds"]) else float("nan")


def table(results):
    """Markdown: accuracy (a row per setting, a column per data set, the mean over them), then the tests, then
    the top-gene stability of each setting's ``feature_importances_`` beside f_classif's."""
    keys = list(dict.fromkeys(k for ds in results for k in ds["folds"][0]["accuracy"]))
    head = [f"{ds['dataset']} ({ds['shape'][0]} x {ds['shape'][1]}, {ds['n_classes']})" for ds in results]
    lines = ["| setting | " + " | ".join(head) + f" | mean of the {len(results)} |", "|" + "---|" * (len(head) + 2)]
    for k in keys:
        has = [ds for ds in results if k in ds["folds"][0]["accuracy"]]
        cells = [cell(mean_std(ds, k)) if ds in has else "-" for ds in results]
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {np.mean([mean_std(ds, k)[0] for ds in has]):.3f} |")
    lines.append("| seconds | " + " | ".join(f"{ds['seconds']:.0f}" for ds in results) + " | |")
    all_pairs = list(dict.fromkeys(tuple(p) for ds in results for p in ds["pairs"]))
    lines += ["", "| difference | " + " | ".join(ds["dataset"] for ds in results) + f" | mean of the {len(results)} |",
              "|" + "---|" * (len(results) + 2)]
    for a, b in all_pairs:
        tests = [corrected_ttest(ds, a, b) for ds in results]
        lines.append(f"| {a} minus {b} | " + " | ".join(test_cell(t) for t in tests)
                     + f" | {np.mean([t['mean_diff'] for t in tests]):+.3f} |")
    tops = list(dict.fromkeys(k for ds in results for k in ds["folds"][0].get("top", {})))
    if tops:
        lines += ["", "| top-gene stability (Kuncheva) | " + " | ".join(ds["dataset"] for ds in results)
                  + f" | mean of the {len(results)} |", "|" + "---|" * (len(results) + 2)]
        for k in tops:
            vals = [top_stability(ds, k) for ds in results]
            lines.append(f"| {k} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {np.nanmean(vals):.3f} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="allaml,glioma,colon,leukemia,lymphoma,lung_small,arcene",
                   help=DATASETS_HELP)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=1, help="(seed, fold) splits run at a time (joblib processes)")
    p.add_argument("--fixed", default="", help="SETClassifier parameters for every setting, 'name=value;...'")
    p.add_argument("--vary", default=DEFAULT_VARY,
                   help=f"the settings' grid, 'name=v1,v2;...' (default {DEFAULT_VARY!r})")
    p.add_argument("--out", default=None, help="JSON report")
    p.add_argument("--table", nargs="+", metavar="JSON", help="print the tables of earlier reports and exit")
    args = p.parse_args(argv)
    if args.table:
        return args
    args.names = args.datasets.split(",")
    check_datasets(p, args.names)
    vary = parse_grid(args.vary)
    if len(vary) != 1 or not vary[0]:
        p.error("--vary takes one grid, 'name=v1,v2;...' (no '|')")
    args.vary_grid, args.fixed_params = vary[0], parse_params(args.fixed)
    unknown = unknown_set_params(set(args.vary_grid) | set(args.fixed_params))
    if unknown:
        p.error(f"not SETClassifier parameters: {sorted(unknown)}")
    both = set(args.vary_grid) & set(args.fixed_params)
    if both:
        p.error(f"parameters both fixed and varied: {sorted(both)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        print(table(load_results(args.table)))
        return
    combos = settings(args.vary_grid)
    started, machine, load0 = time.perf_counter(), machine_info(), load_average()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gb']} GB; commit {git_commit()}; "
          f"fixed {args.fixed_params or 'none'}; {len(combos)} settings", flush=True)
    results = []
    for name in args.names:
        results.append(run(name, args, args.fixed_params, combos))
        print(f"{name}: {results[-1]['seconds']:.0f} s", flush=True)
        if args.out:
            save_report(args.out, started, machine, load0, args={k: v for k, v in vars(args).items()
                                                                 if k not in ("vary_grid", "fixed_params")},
                        results=results)
    print(table(results))


if __name__ == "__main__":
    main()
