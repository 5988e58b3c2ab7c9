"""Screening of SETClassifier's recipe: each lever switched on or off against the defaults.

Plain (not nested) stratified 5-fold cross-validation with split seeds ``100 .. 100 + --seeds - 1``
(the nested comparison of ``bench_accuracy.py`` uses seeds 0-4): the pipeline of
``bench_accuracy.py`` (StandardScaler, then SETClassifier with hidden layers ``--hidden``) in
several variants, each the defaults with a few parameters changed. Nothing is tuned: every figure
is the accuracy of one fixed setting on the test folds, so the best row of a data set is an upper
bound of what choosing among these variants would give. It tells which levers carry the recipe and
which do not, not how the recipe compares with other methods (that is ``bench_accuracy.py``).

Examples
--------
    SET_CY_DATA=../shared/data python bench/bench_recipe.py --seeds 1
    SET_CY_DATA=../shared/data python bench/bench_recipe.py --datasets colon --variants recipe,no_pruning
    SET_CY_DATA=../shared/data python bench/bench_recipe.py --datasets madelon --seeds 2 \
        --base 'prune_inputs=0.3;min_inputs=10' \
        --variants n_estimators=1,n_estimators=1+prune_start=25,recipe

A variant is a name of ``VARIANTS`` or SETClassifier parameters written ``name=value+name=value``;
``--base`` adds parameters to every variant (``recipe`` then means the defaults with ``--base``).
"""
import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import git_commit, load_average, machine_info, save_report  # noqa: E402
from bench_accuracy import (  # noqa: E402
    DATASETS,
    DATASETS_HELP,
    check_datasets,
    load_full,
    parse_params,
    set_pipeline,
    unknown_set_params,
)

HERE = os.path.dirname(os.path.abspath(__file__))
# each variant: the SETClassifier parameters that differ from its defaults
VARIANTS = {
    "recipe": {},
    "no_linear_path": {"linear_path": False},
    "pruning": {"prune_inputs": 0.3},
    "min_inputs=10": {"prune_inputs": 0.3, "min_inputs": 10},
    "no_pruning": {"prune_inputs": 0.0},
    "prune_inputs=0.5": {"prune_inputs": 0.5},
    "static": {"zeta": 0.0, "prune_inputs": 0.0},
    "n_estimators=1": {"n_estimators": 1},
    "class_weight=balanced": {"class_weight": "balanced"},
    "early_stopping": {"early_stopping": True},
    "all_relu": {"activation": "all_relu"},
    "epsilon=10": {"epsilon": 10},
    "epsilon=50": {"epsilon": 50},
    "dropout=0.1": {"dropout": 0.1},
    "dropout=0.5": {"dropout": 0.5},
    "zeta=0.1": {"zeta": 0.1},
    "zeta=0.5": {"zeta": 0.5},
    "learning_rate=0.02": {"learning_rate": 0.02},
    "learning_rate=0.005": {"learning_rate": 0.005},
    "epochs=200": {"epochs": 200},
    "weight_decay=1e-3": {"weight_decay": 1e-3},
    "hidden=500x500": {"hidden_layer_sizes": (500, 500)},
    "hidden=1000": {"hidden_layer_sizes": (1000,)},
    "before": {"clip_norm": None, "new_weights": "init", "prune_inputs": 0.0, "n_estimators": 1, "linear_path": False},
}
# the screening table of bench/README.md; the others are run by name (--variants)
DEFAULT_VARIANTS = ("recipe", "no_linear_path", "pruning", "min_inputs=10", "static", "n_estimators=1",
                    "class_weight=balanced", "before")
SPLIT_SEED0 = 100


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--datasets", default=",".join(DATASETS),
                   help=DATASETS_HELP)
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help="comma list of " + ", ".join(VARIANTS) + ", or SETClassifier parameters 'name=v+name=v'")
    p.add_argument("--base", default="", help="SETClassifier parameters of every variant, 'name=v;name=v'")
    p.add_argument("--seeds", type=int, default=1, help="repetitions of the 5-fold CV (split seeds 100, 101, ...)")
    p.add_argument("--hidden", default="200,200", help="hidden_layer_sizes of SETClassifier (its default)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "recipe.json"))
    a = p.parse_args(argv)
    a.datasets, a.variants = a.datasets.split(","), a.variants.split(",")
    check_datasets(p, a.datasets)
    try:
        a.base = parse_params(a.base)
        a.params = {v: {**a.base, **variant_params(v)} for v in a.variants}
    except ValueError as exc:
        p.error(str(exc))
    unknown = unknown_set_params(k for params in a.params.values() for k in params)
    if unknown:
        p.error(f"not SETClassifier parameters: {unknown}")
    a.hidden = tuple(int(h) for h in a.hidden.split(","))
    return a


def variant_params(name):
    """The parameters of a variant: its ``VARIANTS`` entry, or ``'name=v+name=v'`` parsed."""
    if name in VARIANTS:
        return dict(VARIANTS[name])
    if "=" not in name:
        raise ValueError(f"unknown variant {name!r}: not in VARIANTS and not 'name=value+...'")
    return parse_params(name.replace("+", ";"))


def madelon_relevant(X):
    """Madelon's 20 relevant features (5 informative, 15 linear combinations of them, as the NIPS 2003
    challenge built it), found in the data: the features whose largest ``|correlation|`` with another
    feature exceeds 0.5 (the other 480 are independent noise, below 0.1)."""
    C = np.abs(np.corrcoef(X, rowvar=False))
    np.fill_diagonal(C, 0.0)
    return np.flatnonzero(C.max(axis=0) > 0.5)


def cv_accuracy(X, y, params, seeds, relevant=None):
    """Pooled test accuracy of every 5-fold repetition (one per split seed), the fits' finiteness and,
    with ``relevant`` (feature indices), how many of them each fitted network still uses (mean over
    the folds and the networks of an ensemble)."""
    from sklearn.model_selection import StratifiedKFold

    accs, nonfinite, kept = [], 0, []
    for seed in seeds:
        correct = 0
        for fold, (tr, te) in enumerate(StratifiedKFold(n_splits=5, shuffle=True, random_state=seed).split(X, y)):
            model = set_pipeline(params, 1000 * seed + fold).fit(X[tr], y[tr])
            clf = model.named_steps["set"]
            nonfinite += int(not np.all(np.isfinite(clf.loss_curve_)))
            correct += int(np.sum(model.predict(X[te]) == y[te]))
            if relevant is not None:
                kept += [np.intersect1d(net.active_inputs(), relevant).size for net in clf.networks_]
        accs.append(correct / y.size)
    return accs, nonfinite, (float(np.mean(kept)) if kept else None)


def table(results, variants):
    head = ["data set"] + variants
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in results:
        lines.append("| " + " | ".join([rec["dataset"]] + [f"{np.mean(rec['variants'][v]['accuracy']):.3f}"
                                                          for v in variants]) + " |")
    means = [np.mean([np.mean(rec["variants"][v]["accuracy"]) for rec in results]) for v in variants]
    lines.append("| mean | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    for rec in results:
        if "relevant" in rec:
            lines.append(f"| {rec['dataset']}: relevant features still used (of {len(rec['relevant'])}) | "
                         + " | ".join(f"{rec['variants'][v]['relevant_kept']:.1f}" for v in variants) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    from threadpoolctl import threadpool_limits

    info, load_start, t0 = machine_info(), load_average(), time.perf_counter()
    seeds = list(range(SPLIT_SEED0, SPLIT_SEED0 + args.seeds))
    print(f"# {info['cpu']}, {info['cores']} cores; load {load_start}; commit {git_commit()}; split seeds {seeds}",
          flush=True)
    results = []
    with threadpool_limits(1):
        for name in args.datasets:
            X, y = load_full(name)
            relevant = madelon_relevant(X) if name == "madelon" else None
            rec = {"dataset": name, "variants": {}}
            if relevant is not None:
                rec["relevant"] = relevant.tolist()
            for v in args.variants:
                t1 = time.perf_counter()
                accs, bad, kept = cv_accuracy(X, y, {"hidden_layer_sizes": args.hidden, "n_jobs": 1,
                                                     **args.params[v]}, seeds, relevant)
                rec["variants"][v] = dict(accuracy=accs, nonfinite=bad, relevant_kept=kept,
                                          seconds=time.perf_counter() - t1)
                extra = "" if kept is None else f", relevant features still used {kept:.1f} of {relevant.size}"
                print(f"{name} {v}: {np.mean(accs):.3f} (non-finite fits {bad}{extra}, "
                      f"{time.perf_counter() - t1:.0f} s)", flush=True)
            results.append(rec)
    out = save_report(args.out, t0, info, load_start, variants=args.params, base=args.base,
                      split_seeds=seeds, results=results)
    print("\n" + table(results, args.variants))
    print(f"saved {args.out} ({out['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
