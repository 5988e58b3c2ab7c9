"""Does training stay finite? SETClassifier's recipe against the settings it replaced, over learning rates.

On the first outer training part (stratified 5-fold, seed 0) of each data set, the pipeline of
``bench_accuracy.py`` (StandardScaler, then SETClassifier with hidden layers ``--hidden``) is fitted
at every learning rate of ``bench_accuracy.LR_SWEEP`` (0.001 to 0.05) in four variants:

- ``recipe``: SETClassifier's defaults (gradient clipping to norm 1, connections regrown at zero);
- ``no clipping``: the same with ``clip_norm=None``;
- ``regrow at init``: the same with ``new_weights="init"``;
- ``before``: ``clip_norm=None, new_weights="init"``, the defaults before the recipe.

A fit counts as non-finite when its ``loss_curve_`` holds a NaN or infinity; the table gives, per
data set and variant, the non-finite fits out of five and the test accuracy of the outer fold,
averaged over the learning rates (a diverged fit predicts one class).

Examples
--------
    SET_CY_DATA=../shared/data python bench/bench_stability.py
    SET_CY_DATA=../shared/data python bench/bench_stability.py --datasets colon,glioma --epochs 30
"""
import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import git_commit, load_average, machine_info, save_report  # noqa: E402
from bench_accuracy import DATASETS, DATASETS_HELP, LR_SWEEP, check_datasets, load_full, lr_sweep  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = {"recipe": {}, "no clipping": {"clip_norm": None}, "regrow at init": {"new_weights": "init"},
            "before": {"clip_norm": None, "new_weights": "init"}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--datasets", default=",".join(DATASETS),
                   help=DATASETS_HELP)
    p.add_argument("--hidden", default="200,200", help="hidden_layer_sizes of SETClassifier")
    p.add_argument("--epochs", type=int, default=None, help="SETClassifier epochs (default: its default)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "stability.json"))
    a = p.parse_args(argv)
    a.datasets = a.datasets.split(",")
    check_datasets(p, a.datasets)
    a.hidden = tuple(int(h) for h in a.hidden.split(","))
    return a


def run_dataset(name, args):
    """Every variant at every learning rate on the first outer split of ``name``; returns its record."""
    from sklearn.model_selection import StratifiedKFold

    X, y = load_full(name)
    tr, te = next(StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(X, y))
    fixed = {"hidden_layer_sizes": args.hidden, "n_jobs": 1}
    if args.epochs is not None:
        fixed["epochs"] = args.epochs
    rec = {"dataset": name, "variants": {}}
    for variant, params in VARIANTS.items():
        rows = lr_sweep(X[tr], y[tr], {**fixed, **params}, 0, X[te], y[te])
        rec["variants"][variant] = rows
        print(f"{name} {variant}: {sum(r['nonfinite'] for r in rows)} of {len(rows)} non-finite, "
              f"accuracy {np.mean([r['accuracy'] for r in rows]):.3f}", flush=True)
    return rec


def table(results):
    head = ["data set"] + [f"{v}: non-finite / accuracy" for v in VARIANTS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    totals = {v: 0 for v in VARIANTS}
    for rec in results:
        row = [rec["dataset"]]
        for v in VARIANTS:
            rows = rec["variants"][v]
            bad = sum(r["nonfinite"] for r in rows)
            totals[v] += bad
            row.append(f"{bad} of {len(rows)} / {np.mean([r['accuracy'] for r in rows]):.3f}")
        lines.append("| " + " | ".join(row) + " |")
    n = sum(len(rec["variants"]["recipe"]) for rec in results)
    lines.append("| all | " + " | ".join(f"{totals[v]} of {n}" for v in VARIANTS) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=RuntimeWarning)  # the divergence warnings are what we count
    from threadpoolctl import threadpool_limits

    info, load_start, t0 = machine_info(), load_average(), time.perf_counter()
    print(f"# {info['cpu']}, {info['cores']} cores; load {load_start}; commit {git_commit()}; "
          f"learning rates {LR_SWEEP}", flush=True)
    results = []
    with threadpool_limits(1):
        for name in args.datasets:
            results.append(run_dataset(name, args))
    out = save_report(args.out, t0, info, load_start, variants=VARIANTS, results=results)
    print("\n" + table(results))
    print(f"saved {args.out} ({out['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
