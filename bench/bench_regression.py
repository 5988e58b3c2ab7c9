"""SETRegressor against ridge regression and MLPRegressor: one gene's expression from all the others.

Task: in a shared microarray set (default colon, 62 samples x 2000 genes), the target is the "hub"
gene, the one with the largest mean absolute correlation with the other genes (computed from X alone,
no labels, before any split); the inputs are the other genes. Every model is a scikit-learn
``Pipeline([StandardScaler, model])``, scored by R² on the test folds of ``KFold(--folds,
shuffle=True, random_state=seed)`` for seeds ``0 .. --seeds - 1``:

- ``set_regressor``: :class:`set_cy.SETRegressor` with its defaults (``n_jobs`` from ``--threads``,
  ``random_state`` from (seed, fold)); nothing tuned.
- ``ridge``: ``RidgeCV`` over alpha in 13 values from 0.1 to 1e5 (log-spaced), chosen by its efficient
  leave-one-out on the training part.
- ``mlp_regressor``: ``MLPRegressor`` with scikit-learn's defaults (``(100,)``, adam, 200
  iterations), ``random_state`` from (seed, fold).

The table gives mean R² ± the std over seeds of the per-seed means, the corrected resampled t-test of
SETRegressor against each (Nadeau & Bengio, as in ``bench_accuracy.py``) and the seconds per fit.

    python bench/bench_regression.py --dataset colon --seeds 2 --out bench/results/regression_colon.json
"""
import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_average, machine_info, save_report  # noqa: E402
from bench_accuracy import corrected_ttest, derived_seed, load_full  # noqa: E402

MODELS = ("set_regressor", "ridge", "mlp_regressor")


def hub_gene(X):
    """Index of the column with the largest mean absolute correlation with the other columns."""
    std = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
    C = np.abs(Z.T @ Z) / X.shape[0]
    np.fill_diagonal(C, 0.0)
    return int(np.argmax(C.mean(axis=1)))


def make_model(name, random_state, threads):
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from set_cy import SETRegressor

    model = {"set_regressor": lambda: SETRegressor(random_state=random_state, n_jobs=threads),
             "ridge": lambda: RidgeCV(alphas=np.logspace(-1, 5, 13)),
             "mlp_regressor": lambda: MLPRegressor(random_state=random_state)}[name]()
    return make_pipeline(StandardScaler(), model)


def run(args):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import KFold

    X, _ = load_full(args.dataset)
    X = X.astype(np.float64)
    target = hub_gene(X)
    y, X = X[:, target], np.delete(X, target, axis=1)
    folds = []
    for seed in range(args.seeds):
        for fold, (tr, te) in enumerate(KFold(args.folds, shuffle=True, random_state=seed).split(X)):
            rec = dict(seed=seed, fold=fold, n_train=int(tr.size), n_test=int(te.size), accuracy={}, seconds={})
            for name in MODELS:
                t = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    m = make_model(name, derived_seed(seed, fold, 0), args.threads).fit(X[tr], y[tr])
                rec["accuracy"][name] = float(m.score(X[te], y[te]))  # R² (the key corrected_ttest reads)
                rec["seconds"][name] = time.perf_counter() - t
            folds.append(rec)
            print(f" seed {seed} fold {fold}: " + ", ".join(f"{k} R2 {v:.3f}" for k, v in rec["accuracy"].items()),
                  flush=True)
    return dict(dataset=args.dataset, shape=list(X.shape), target=target, folds=folds)


def table(ds):
    lines = [f"{ds['dataset']}: gene {ds['target']} from the other {ds['shape'][1]} genes, {ds['shape'][0]} samples",
             "| model | R² (mean ± std over seeds) | SETRegressor vs it, corrected t-test | seconds per fit |",
             "|---|---|---|---|"]
    seeds = sorted({f["seed"] for f in ds["folds"]})
    for name in MODELS:
        per_seed = [np.mean([f["accuracy"][name] for f in ds["folds"] if f["seed"] == s]) for s in seeds]
        test = "" if name == "set_regressor" else corrected_ttest(ds, "set_regressor", name)
        verdict = "" if not test else f"{test['verdict']}, p = {test['p']:.3f}"
        secs = np.mean([f["seconds"][name] for f in ds["folds"]])
        lines.append(f"| {name} | {np.mean(per_seed):.3f} ± {np.std(per_seed):.3f} | {verdict} | {secs:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="colon", help="a shared microarray set (default colon)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="SETRegressor n_jobs (default 1)")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/regression_<dataset>.json)")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.folds < 2 or args.threads < 1:
        p.error("--seeds >= 1, --folds >= 2 and --threads >= 1 are needed")
    started, load0, machine = time.perf_counter(), load_average(), machine_info()
    print(f"# {machine['cpu']}, {machine['cores']} cores, {machine['ram_gb']} GB; load {load0}", flush=True)
    ds = run(args)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"regression_{args.dataset}.json")
    report = save_report(out, started, machine, load0, args=vars(args), result=ds)
    print(table(ds))
    print(f"# {report['seconds']:.0f} s, written to {out}")


if __name__ == "__main__":
    main()
