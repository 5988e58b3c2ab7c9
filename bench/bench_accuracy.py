"""Accuracy of SET-MLP against two-phase approaches (feature selection, then a classifier).

On the high-dimensional scikit-feature sets (ALLAML, GLIOMA, colon, leukemia, lymphoma, lung_small,
arcene) and Madelon, with repeated stratified k-fold cross-validation (one repetition per seed; the
seed shuffles the folds and seeds every model):

- ``set_mlp``: :class:`set_cy.SparseMLP` trained with SET; its learning rate (and any other grid
  entry) is chosen on inner stratified folds of the outer training part only, never on a test fold;
- ``static_sparse``: the same network and recipe with ``zeta=0`` (no evolution), an ablation;
- ``dense_mlp``: the same architecture fully connected (PyTorch when installed, else NumPy), same recipe;
- two-phase baselines (scikit-learn): the ``k`` best features by the ANOVA F statistic
  (``f_classif``, the ranking of ``SelectKBest(f_classif)``) or by mutual information
  (``mutual_info_classif``), then a linear SVM, kNN or a small MLP, for several ``k``;
- the side result: the input neurons of each fold's trained SET-MLP ranked by strength (sum of the
  ``|w|`` of their connections) or by degree, top ``k``, then the same classifiers (QuickSelection-style).

Features are z-scored with the statistics of each training part. Scores and rankings are computed
on the training part of the fold only. Accuracy is pooled over the folds of a repetition (correct
test predictions / samples); the table gives the mean and standard deviation over the seeds. For
the two-phase rows the table shows the best ``k`` in hindsight (chosen on the test folds, which
favours the baselines); every ``k`` is in the JSON.

Examples
--------
    SET_CY_DATA=../shared/data python bench/bench_accuracy.py --quick
    SET_CY_DATA=../shared/data python bench/bench_accuracy.py --datasets allaml,glioma,colon,leukemia
    python bench/bench_accuracy.py --table bench/results/accuracy_*.json
"""
import argparse
import itertools
import json
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import git_commit, load_average, machine_info  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATASETS = ("allaml", "glioma", "colon", "leukemia", "lymphoma", "lung_small", "arcene", "madelon")
SELECTORS = ("f_classif", "mutual_info")
SET_RANKINGS = ("set_strength", "set_degree")
CLASSIFIERS = ("svm", "knn", "mlp")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: colon and lung_small, 1 seed, 3 folds, 20 epochs, one grid point")
    p.add_argument("--datasets", default=None, help="comma list (default all: " + ",".join(DATASETS) + ")")
    p.add_argument("--seeds", type=int, default=None, help="repetitions of the CV, seeds 0..n-1 (default 2)")
    p.add_argument("--folds", type=int, default=None, help="outer stratified folds (default 5)")
    p.add_argument("--inner-folds", type=int, default=3, help="inner stratified folds for tuning SET-MLP")
    p.add_argument("--tune-every-seed", action="store_true",
                   help="tune on inner folds for every seed (default: on the outer folds of the first seed "
                        "only; the other seeds reuse the grid point chosen for the same fold index)")
    p.add_argument("--hidden", default="200,200", help="hidden layer sizes of the MLPs")
    p.add_argument("--dense-hidden", default=None,
                   help="hidden sizes of the dense ablation (default: --hidden, the same architecture)")
    p.add_argument("--epsilon", type=float, default=20)
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 100; 20 with --quick)")
    p.add_argument("--epochs-large", type=int, default=None,
                   help="epochs on sets with over 1000 samples (Madelon) (default 20)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (32 on sets with over 1000 samples)")
    p.add_argument("--grid", default=None,
                   help="SET-MLP grid for the inner folds, e.g. 'lr=0.01,0.05;epsilon=10,20' "
                        "(default 'lr=0.005,0.02'; 'lr=0.02' with --quick)")
    p.add_argument("--ks", default="10,50,200", help="numbers of selected features (capped at n_features)")
    p.add_argument("--methods", default="set_mlp,static_sparse,dense_mlp,two_phase,set_ranking",
                   help="comma list of set_mlp, static_sparse, dense_mlp, two_phase, set_ranking")
    p.add_argument("--threads", type=int, default=1,
                   help="set_cy threads (results do not depend on it; 1 is fastest for these tiny nets "
                        "on a shared machine)")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/accuracy[_quick].json)")
    p.add_argument("--table", nargs="+", default=None, help="print the tables of these JSON files, merged")
    a = p.parse_args(argv)
    if a.table:
        return a
    a.datasets = (a.datasets or ("colon,lung_small" if a.quick else ",".join(DATASETS))).split(",")
    bad = [d for d in a.datasets if d not in DATASETS]
    if bad:
        p.error(f"unknown data sets {bad}")
    a.seeds = a.seeds or (1 if a.quick else 2)
    a.folds = a.folds or (3 if a.quick else 5)
    a.epochs = a.epochs or (20 if a.quick else 100)
    a.epochs_large = a.epochs_large or (10 if a.quick else 20)
    a.grid = parse_grid(a.grid or ("lr=0.02" if a.quick else "lr=0.005,0.02"))
    a.hidden = [int(h) for h in a.hidden.split(",")]
    a.dense_hidden = [int(h) for h in a.dense_hidden.split(",")] if a.dense_hidden else a.hidden
    a.ks = [int(k) for k in a.ks.split(",")]
    a.methods = a.methods.split(",")
    a.out = a.out or os.path.join(HERE, "results", "accuracy_quick.json" if a.quick else "accuracy.json")
    return a


def parse_grid(text):
    """``'lr=0.01,0.05;epsilon=10,20'`` -> list of dicts (the product)."""
    keys, values = [], []
    for part in text.split(";"):
        k, v = part.split("=")
        keys.append(k.strip())
        values.append([float(x) for x in v.split(",")])
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


# ------------------------------------------------------------------------------------------------
# data and models
# ------------------------------------------------------------------------------------------------
def load_full(name):
    """All samples of a data set (the loader's split joined back), float32, unstandardized."""
    from set_cy.datasets import load_dataset

    ds = load_dataset(name, standardize=False)
    return np.concatenate([ds.X_train, ds.X_test]), np.concatenate([ds.y_train, ds.y_test])


def zscore(Xtr, Xte):
    """Standardize with the training part's mean and standard deviation (constant features: std 1)."""
    mu = Xtr.mean(axis=0, dtype=np.float64)
    sd = Xtr.std(axis=0, dtype=np.float64)
    sd[sd == 0] = 1.0
    f = lambda X: np.ascontiguousarray(((X - mu) / sd).astype(np.float32))  # noqa: E731
    return f(Xtr), f(Xte)


def recipe(args, n_train, config):
    """Training settings of the MLPs for a training part of ``n_train`` samples and a grid point."""
    large = n_train > 1000
    return dict(epochs=args.epochs_large if large else args.epochs,
                batch_size=32 if large else args.batch_size,
                lr=config.get("lr", 0.05), epsilon=config.get("epsilon", args.epsilon),
                dropout=config.get("dropout", 0.3), zeta=config.get("zeta", 0.3))


def fit_setcy(Xtr, ytr, n_classes, args, rc, seed, zeta):
    from set_cy import SparseMLP

    m = SparseMLP([Xtr.shape[1], *args.hidden, n_classes], epsilon=rc["epsilon"], dropout=rc["dropout"],
                  seed=seed, n_threads=args.threads)
    m.fit(Xtr, ytr, epochs=rc["epochs"], batch_size=rc["batch_size"], learning_rate=rc["lr"], momentum=0.9,
          weight_decay=2e-4, zeta=zeta, new_weights="zeros", verbose=0)
    return m


def fit_dense(Xtr, ytr, n_classes, args, rc, seed):
    """The dense ablation: PyTorch (faster BLAS) when installed, else the NumPy dense MLP."""
    from _baselines import DenseMLP, TorchMaskMLP

    sizes = [Xtr.shape[1], *args.dense_hidden, n_classes]
    try:
        import torch
    except ImportError:
        m = DenseMLP(sizes, dropout=rc["dropout"], seed=seed)
        for _ in range(rc["epochs"]):
            m.fit_epoch(Xtr, ytr, rc["batch_size"], rc["lr"], 0.9, 2e-4)
        return m, "numpy"
    m = TorchMaskMLP(sizes, dropout=rc["dropout"], seed=seed, n_threads=args.threads, lr=rc["lr"], momentum=0.9,
                     weight_decay=2e-4, dense=True)
    Xt, yt = torch.from_numpy(Xtr), torch.from_numpy(ytr.astype(np.int64))
    for _ in range(rc["epochs"]):
        m.fit_epoch(Xt, yt, rc["batch_size"])
    return m, "torch"


def classifiers(seed):
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import LinearSVC

    return {"svm": LinearSVC(C=1.0, max_iter=5000, random_state=seed),
            "knn": KNeighborsClassifier(n_neighbors=5),
            "mlp": MLPClassifier(hidden_layer_sizes=(100,), max_iter=300, random_state=seed)}


def two_phase(rankings, Xtr, ytr, Xte, yte, ks, seed, rec):
    """For every ranking, k and classifier: fit on the top-k training columns, count correct test guesses."""
    for sel, order in rankings.items():
        for k in ks:
            cols = np.sort(order[:k])
            A, B = Xtr[:, cols], Xte[:, cols]
            for cname, clf in classifiers(seed).items():
                if cname == "knn":
                    clf.set_params(n_neighbors=min(5, A.shape[0]))
                clf.fit(A, ytr)
                rec[f"{sel}/k={k}/{cname}"] = int(np.sum(clf.predict(B) == yte))


MLP_KINDS = ("set_mlp", "static_sparse", "dense_mlp")


def fit_mlp(kind, Xtr, ytr, n_classes, args, rc, seed):
    """Train one of the MLPs; returns ``(model, implementation)``."""
    if kind == "dense_mlp":
        return fit_dense(Xtr, ytr, n_classes, args, rc, seed)
    return fit_setcy(Xtr, ytr, n_classes, args, rc, seed, zeta=rc["zeta"] if kind == "set_mlp" else 0.0), "set_cy"


def inner_tune(kind, X, y, n_classes, args, seed):
    """Grid point with the best mean accuracy of ``kind`` on inner stratified folds of ``(X, y)``."""
    from sklearn.model_selection import StratifiedKFold

    if len(args.grid) == 1:
        return args.grid[0], [None]
    skf = StratifiedKFold(n_splits=args.inner_folds, shuffle=True, random_state=10_000 + seed)
    scores = []
    for config in args.grid:
        acc = []
        for j, (tr, va) in enumerate(skf.split(X, y)):
            Xa, Xb = zscore(X[tr], X[va])
            rc = recipe(args, tr.size, config)
            m, _ = fit_mlp(kind, Xa, y[tr], n_classes, args, rc, seed=7919 * seed + j)
            acc.append(float(np.mean(m.predict(Xb) == y[va])))
        scores.append(float(np.mean(acc)))
    return args.grid[int(np.argmax(scores))], scores


# ------------------------------------------------------------------------------------------------
# one data set
# ------------------------------------------------------------------------------------------------
def run_dataset(name, args, log):
    from sklearn.feature_selection import f_classif, mutual_info_classif
    from sklearn.model_selection import StratifiedKFold

    X, y = load_full(name)
    n_classes = int(y.max()) + 1
    ks = sorted({min(k, X.shape[1]) for k in args.ks})
    out = dict(dataset=name, n_samples=int(X.shape[0]), n_features=int(X.shape[1]), n_classes=n_classes,
               class_counts=np.bincount(y).tolist(), ks=ks, folds=args.folds, seeds=[], tuning=[])
    t_all = time.perf_counter()
    chosen = {}  # (kind, fold index) -> grid point (tuned on the first seed's folds unless --tune-every-seed)
    kinds = [k for k in MLP_KINDS if k in args.methods or (k == "set_mlp" and "set_ranking" in args.methods)]
    for seed in range(args.seeds):
        skf = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=seed)
        counts, n_test = {}, 0
        for f, (tr, te) in enumerate(skf.split(X, y)):
            t0 = time.perf_counter()
            Xtr, Xte = zscore(X[tr], X[te])
            ytr, yte = y[tr], y[te]
            rec, models, lrs, secs = {}, {}, {}, {}
            for kind in kinds:
                t1 = time.perf_counter()
                if seed == 0 or args.tune_every_seed:
                    config, scores = inner_tune(kind, X[tr], y[tr], n_classes, args, seed)
                    chosen[kind, f] = config
                    out["tuning"].append(dict(method=kind, seed=seed, fold=f, chosen=config, inner_scores=scores))
                config = chosen[kind, f]
                lrs[kind] = config.get("lr")
                m, impl = fit_mlp(kind, Xtr, ytr, n_classes, args, recipe(args, tr.size, config),
                                  seed=1000 * seed + f)
                models[kind] = m
                out[f"{kind}_impl"] = impl
                rec[kind] = int(np.sum(m.predict(Xte) == yte))
                secs[kind] = round(time.perf_counter() - t1, 1)
            model = models.get("set_mlp")
            t1 = time.perf_counter()
            rankings = {}
            if "two_phase" in args.methods:
                with np.errstate(divide="ignore", invalid="ignore"):
                    F = np.nan_to_num(f_classif(Xtr, ytr)[0], nan=0.0)
                rankings["f_classif"] = np.argsort(-F, kind="stable")
                mi = mutual_info_classif(Xtr, ytr, random_state=seed)
                rankings["mutual_info"] = np.argsort(-mi, kind="stable")
            if "set_ranking" in args.methods and model is not None:
                rankings["set_strength"] = np.argsort(-model.input_strength(), kind="stable")
                rankings["set_degree"] = np.argsort(-model.input_degree(), kind="stable")
            two_phase(rankings, Xtr, ytr, Xte, yte, ks, seed, rec)
            secs["two_phase"] = round(time.perf_counter() - t1, 1)
            for k, v in rec.items():
                counts[k] = counts.get(k, 0) + v
            n_test += te.size
            log(f"{name} seed {seed} fold {f}: lr {lrs} set_mlp "
                f"{rec.get('set_mlp', 0) / te.size:.3f} static {rec.get('static_sparse', 0) / te.size:.3f} "
                f"dense {rec.get('dense_mlp', 0) / te.size:.3f} ({time.perf_counter() - t0:.1f} s: {secs})")
        out["seeds"].append(dict(seed=seed, n_test=n_test, accuracy={k: v / n_test for k, v in counts.items()}))
    out["seconds"] = time.perf_counter() - t_all
    return out


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------
def summarize(ds):
    """method -> (mean, std over seeds)."""
    keys = ds["seeds"][0]["accuracy"].keys()
    return {k: (float(np.mean([s["accuracy"][k] for s in ds["seeds"]])),
                float(np.std([s["accuracy"][k] for s in ds["seeds"]]))) for k in keys}


def best_k(summary, sel, clf):
    """(k, mean, std) of the best k in hindsight for a selector and classifier."""
    cands = [(k, v) for k, v in summary.items() if k.startswith(sel + "/") and k.endswith("/" + clf)]
    if not cands:
        return None
    k, (m, s) = max(cands, key=lambda kv: kv[1][0])
    return int(k.split("/")[1][2:]), m, s


def cell(ms):
    return "-" if ms is None else f"{ms[0]:.3f} ± {ms[1]:.3f}"


def tables(results):
    """Markdown: the main comparison, then the feature-ranking side result, then the verdicts."""
    lines = []
    head = ["data set (n x d, classes)", "SET-MLP", "static sparse", "dense MLP"] + \
        [f"{s} + {c} (best k)" for s in SELECTORS for c in CLASSIFIERS] + ["SET-MLP vs best two-phase"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    verdicts = []
    for ds in results:
        sm = summarize(ds)
        row = [f"{ds['dataset']} ({ds['n_samples']} x {ds['n_features']}, {ds['n_classes']})",
               cell(sm.get("set_mlp")), cell(sm.get("static_sparse")), cell(sm.get("dense_mlp"))]
        best = None
        for s in SELECTORS:
            for c in CLASSIFIERS:
                b = best_k(sm, s, c)
                row.append("-" if b is None else f"{b[1]:.3f} ± {b[2]:.3f} (k={b[0]})")
                if b and (best is None or b[1] > best[1]):
                    best = (f"{s}+{c} k={b[0]}", b[1], b[2])
        if "set_mlp" in sm and best:
            d = sm["set_mlp"][0] - best[1]
            word = "win" if d > 0 else ("tie" if d == 0 else "loss")
            rows2 = [v[0] for k, v in sm.items() if k.split("/")[0] in SELECTORS]
            beaten = sum(sm["set_mlp"][0] > v for v in rows2)
            row.append(f"{word} ({d:+.3f} vs {best[0]}); beats {beaten} of {len(rows2)} two-phase rows")
            verdicts.append((ds["dataset"], word, d, best[0]))
        else:
            row.append("-")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    head = ["data set"] + [f"{r} + {c}" for r in SET_RANKINGS + SELECTORS for c in CLASSIFIERS]
    ks = sorted({k for ds in results for k in ds["ks"]})
    for k in ks:
        sub = ["| " + " | ".join([f"k = {k}: " + head[0]] + head[1:]) + " |", "|" + "---|" * len(head)]
        any_row = False
        for ds in results:
            if k not in ds["ks"]:
                continue
            sm = summarize(ds)
            vals = [sm.get(f"{r}/k={k}/{c}") for r in SET_RANKINGS + SELECTORS for c in CLASSIFIERS]
            if all(v is None for v in vals):
                continue
            any_row = True
            sub.append("| " + " | ".join([ds["dataset"]] + [cell(v) for v in vals]) + " |")
        if any_row:
            lines += sub + [""]
    return "\n".join(lines), verdicts


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        results, meta = [], []
        for path in args.table:
            with open(path, encoding="utf-8") as fh:
                d = json.load(fh)
            results += d["results"]
            meta.append(f"{os.path.basename(path)}: {d['command']} (commit {d['commit']}, "
                        f"load {d['loadavg_start']} -> {d['loadavg_end']}, {d['seconds']:.0f} s)")
        text, verdicts = tables(results)
        print("\n".join(meta) + "\n\n" + text)
        print_verdicts(verdicts)
        return 0
    warnings.filterwarnings("ignore", category=UserWarning)  # few-member classes in StratifiedKFold
    try:
        from sklearn.exceptions import ConvergenceWarning
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
    except ImportError:
        print("scikit-learn is needed (pip install -e .[bench])", file=sys.stderr)
        return 2
    info = machine_info()
    load_start = load_average()
    t0 = time.perf_counter()
    print(f"# {info['cpu']}, {info['cores']} cores; load {load_start}; commit {git_commit()}; "
          f"seeds {args.seeds}, folds {args.folds}, grid {args.grid}", flush=True)
    results = []
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for name in args.datasets:
        results.append(run_dataset(name, args, lambda s: print(s, flush=True)))
        # written after every data set, so that an interrupted run keeps the finished ones
        out = dict(command=" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]), commit=git_commit(),
                   machine=info, loadavg_start=load_start, loadavg_end=load_average(),
                   seconds=time.perf_counter() - t0, args=dict(vars(args)), results=results)
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)
    text, verdicts = tables(results)
    print("\n" + text)
    print_verdicts(verdicts)
    print(f"saved {args.out} ({out['seconds']:.0f} s; load at the end {out['loadavg_end']})")
    return 0


def print_verdicts(verdicts):
    for name, word, d, best in verdicts:
        print(f"{name}: SET-MLP {word} against the best two-phase row ({best}, best k in hindsight): {d:+.3f}")
    if verdicts:
        print(f"SET-MLP wins {sum(v[1] == 'win' for v in verdicts)}, ties {sum(v[1] == 'tie' for v in verdicts)}, "
              f"loses {sum(v[1] == 'loss' for v in verdicts)} of {len(verdicts)}")


if __name__ == "__main__":
    sys.exit(main())
