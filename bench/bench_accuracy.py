"""Accuracy of SET-MLP against the baselines users run: single-phase models on all features and a tuned
two-phase pipeline (feature selection, then a classifier).

Data: the scikit-feature sets ALLAML, GLIOMA, colon, leukemia, lymphoma, lung_small, Arcene and
Madelon, all samples (the loader's train/test split joined back), unstandardized.

Protocol (nested cross-validation; nothing is ever chosen on an outer test fold unless the row
says "upper bound"):

- Outer loop: stratified K-fold (``--folds``, default 5), repeated once per seed
  (``--seeds``, default 5); seed ``s`` shuffles the folds (``random_state=s``). Every model of an
  outer fold gets a ``random_state`` derived from (seed, fold); the inner folds are
  ``StratifiedKFold(--inner-folds, shuffle=True)`` with another seed derived from (seed, fold),
  the same inner splits for every tuned method.
- ``two_phase``, the comparator tuned as a user would: one scikit-learn
  ``Pipeline([StandardScaler, SelectKBest, classifier])`` and ``GridSearchCV`` on the inner folds
  of the outer training part over score function {f_classif, mutual_info_classif} x k {10, 50,
  200} (capped at the number of features) x classifier {LinearSVC(C=1, max_iter=5000),
  KNeighborsClassifier(5), MLPClassifier((100,), max_iter=300)}: 18 grid points. The refitted best
  pipeline is scored on the outer test fold. The score functions are cached in-process by a hash
  of (X, y), mutual information with a fixed ``random_state``, so that each (data, score function)
  is computed once per training split, not once per grid point; the cache does not change any
  result (the searches run in this process, ``n_jobs=None``).
- Single-phase comparators on all features, each tuned with ``GridSearchCV`` on the same inner
  folds (:func:`single_phase_searches`): ``logreg``, ``Pipeline([StandardScaler,
  LogisticRegression(max_iter=2000)])`` (L2) over C in {0.001, 0.01, 0.1, 1}; ``linear_svm``, the
  same with ``LinearSVC(max_iter=5000)``; ``random_forest``, 500 trees, ``max_features`` in
  {"sqrt", 0.1}.
- ``best_comparator``: on each outer fold, the comparator (two-phase or single-phase) with the
  best inner-fold score, the one a careful user would deploy; its outer test accuracy.
- ``set_mlp``: :class:`set_cy.SETClassifier` in ``Pipeline([StandardScaler, SETClassifier])``,
  tuned with ``GridSearchCV`` on the same inner folds over ``--set-grid`` (default: no input
  pruning, or pruning down to ``min_inputs`` 10 or 200, 3 points, as ``k`` is tuned for the
  two-phase pipeline; never more grid points than the two-phase grid). Every other parameter is
  SETClassifier's own default, the library's recommended recipe, except ``random_state`` and
  ``n_jobs`` (``--threads``), and, only when given, ``hidden_layer_sizes`` (``--hidden``),
  ``epochs`` and ``batch_size`` (``--set-params`` adds fixed parameters, for experiments only).
- ``static_sparse``, an ablation: the SET-MLP pipeline with the grid point chosen for SET-MLP on
  that fold, but ``zeta=0`` and ``prune_inputs=0`` (the topology never changes), fitted on the
  outer training part.
- Upper bound (best-in-hindsight): for every score function x k x classifier, the classifier fitted
  on the outer training part's top-k features (same scaling and score functions) and scored on the
  test fold; the table shows the combination with the best mean, chosen on the test folds. No
  method can be selected like this: it bounds what the two-phase family reaches.
- Embedded ranking (side result): the top-50 features (capped) of the fitted SET-MLP by
  ``feature_importances_`` (input strength), then each classifier fitted on them; beside it
  f_classif's top-50 with the same classifiers (these are the upper-bound fits at k = 50).
- Ranking stability: the top-50 features of each outer fold by ``feature_importances_``, by
  f_classif and by L1 logistic regression (liblinear, C = 1, the sum of ``|coef|`` over the
  classes) are stored (``top``); the table gives the mean Kuncheva index (and mean Jaccard index)
  over every pair of outer folds (all seeds): 1 means the same genes on every resample.
- ``--reuse``: the two-phase search, the upper-bound fits and f_classif's embedded row do not
  depend on SETClassifier, and the outer and inner splits only on (seed, fold, ``--folds``,
  ``--inner-folds``): a run that changes only SET-MLP can copy them, per (seed, fold), from
  earlier result files (checked: same data shape, folds, inner folds, ``ks`` and split sizes) and
  compute only SET-MLP, static sparse and SET's embedded row. The record names its sources
  (``reused_from``) and keeps the seconds the copied parts took (``reused_seconds``).
- Stability (``--lr-sweep``): on the first outer training part of seed 0, SETClassifier with its
  defaults (and the fixed settings above) for learning rates 0.001 to 0.05; a fit counts as
  non-finite when ``loss_curve_`` holds a NaN or infinity.

Every BLAS and OpenMP thread pool of the process is limited to ``--threads`` (default 1), which
changes no result. Seconds per data set are recorded and printed (target: at most 10 minutes per
small set on 2 cores with the default settings); mutual information on the sets with thousands of
features takes most of them (``--mi-jobs`` runs it in several processes, same result).

Statistics: the accuracy of every method on every (seed, fold) is stored. The table gives the
accuracy pooled over the folds of each seed (correct test predictions / samples), mean ± std over
the seeds. SET-MLP is compared with every comparator, ``best_comparator`` and ``static_sparse`` by the corrected
resampled t-test of Nadeau & Bengio (2003) on the J = seeds x folds paired differences of fold
accuracy: t = mean / sqrt((1/J + n_test/n_train) * var), var with ddof 1, Student t with J - 1
degrees of freedom, two-sided p. Verdict: "win" (mean difference > 0, p < 0.05), "loss" (< 0,
p < 0.05), else "tie" with the signed mean difference.

Output: one JSON file, rewritten after every data set: ``command``, ``commit``, ``machine``,
``loadavg_start``/``loadavg_end``, ``seconds``, ``args``, ``grid_sizes``, ``set_fixed_params`` and
``results``, one record per data set with its shape, ``ks``, ``grid_sizes``, ``seconds``,
``lr_sweep`` (learning_rate, nonfinite, final_loss), ``score_cache`` (score functions computed and
reused), ``tests`` (``set_mlp-<comparator>``, ``set_mlp-best_comparator``, ``set_mlp-static_sparse``:
mean_diff, t, p, J, verdict), ``stability`` and ``folds``: per (seed, fold) ``n_train``, ``n_test``,
the chosen ``params`` and ``inner_score`` of ``two_phase``, each single-phase comparator and
``set_mlp``, ``best_comparator`` (its name), ``top`` (the top-50 of each ranking), ``seconds`` per
method and ``accuracy`` of ``set_mlp``, every comparator, ``best_comparator``, ``static_sparse``,
``upper/<score function>/k=<k>/<classifier>`` and ``embedded/<set|f_classif>/<classifier>``.

Examples
--------
    SET_CY_DATA=../shared/data python bench/bench_accuracy.py --quick
    SET_CY_DATA=../shared/data python bench/bench_accuracy.py --datasets allaml,colon --out bench/results/acc_a.json
    python bench/bench_accuracy.py --datasets my_genes.npz --seeds 2 --out bench/results/acc_mine.json
    python bench/bench_accuracy.py --table bench/results/acc_*.json

``--datasets`` takes the names above or paths to a user's own data files (``.mat`` with scikit-feature's
``X`` and ``Y``, ``.npz`` with ``X`` and ``y``, ``.csv`` with the label last), read by
``set_cy.datasets.load_dataset``; so do the other benches built on this one (``bench_paths.py``,
``bench_importance.py``, ``bench_recipe.py``, ``bench_stability.py``).
"""
import argparse
import hashlib
import json
import math
import os
import re
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import git_commit, load_average, machine_info, save_report  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATASETS = ("allaml", "glioma", "colon", "leukemia", "lymphoma", "lung_small", "arcene", "madelon")
SELECTORS = ("f_classif", "mutual_info")
CLASSIFIERS = ("svm", "knn", "mlp")
KS = (10, 50, 200)
EMBEDDED_K = 50
LR_SWEEP = (0.001, 0.005, 0.01, 0.02, 0.05)
MI_RANDOM_STATE = 0
ALPHA = 0.05
TARGET_SECONDS = 600  # per small data set, 2 cores, default settings
# the defaults (a linear path, every input kept); the linear path with input pruning down to 200 inputs; no
# linear path, pruning down to 10 inputs (with a linear path, the network learns the linear signal first and
# the pruning keeps 3-4 of Madelon's 20 relevant features instead of 8-10: bench/README.md): 3 points
# (logistic regression's C: 4)
DEFAULT_SET_GRID = "prune_inputs=0|prune_inputs=0.3;min_inputs=200|linear_path=False;prune_inputs=0.3;min_inputs=10"
SINGLE_PHASE_C = (0.001, 0.01, 0.1, 1.0)
# every comparator of SET-MLP; the "best comparator" of an outer fold is the one of best inner score
COMPARATORS = ("two_phase", "logreg", "linear_svm", "random_forest")
COMPARATOR_LABELS = {"two_phase": "tuned two-phase", "logreg": "L2 logistic regression",
                     "linear_svm": "linear SVM", "random_forest": "random forest",
                     "best_comparator": "best comparator (inner folds)", "static_sparse": "static sparse"}
RANKINGS = ("set", "f_classif", "l1_logreg")  # top-EMBEDDED_K feature sets whose stability is measured


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: colon and lung_small, 1 seed, 3 folds, 2 inner folds, 20 epochs, "
                        "a one-point SET grid (the library defaults)")
    p.add_argument("--datasets", default=None, help=DATASETS_HELP + " (default all: " + ",".join(DATASETS) + ")")
    p.add_argument("--seeds", type=int, default=None, help="repetitions of the outer CV, seeds 0..n-1 (default 5)")
    p.add_argument("--folds", type=int, default=None, help="outer stratified folds (default 5)")
    p.add_argument("--inner-folds", type=int, default=None, help="inner stratified folds for tuning (default 3)")
    p.add_argument("--set-grid", default=None,
                   help="SET-MLP grid, SETClassifier parameters: 'name=v1,v2;name=v1,...' (ints where they "
                        f"look like ints, else floats; None and words as given) "
                        f"(default '{DEFAULT_SET_GRID}'; '' with --quick: "
                        "one point, the library defaults)")
    p.add_argument("--hidden", default=None,
                   help="hidden_layer_sizes of SETClassifier, e.g. '200,200' (default: SETClassifier's default)")
    p.add_argument("--epochs", type=int, default=None,
                   help="SETClassifier epochs (default: SETClassifier's default; 20 with --quick)")
    p.add_argument("--batch-size", type=int, default=None, help="SETClassifier batch_size (default: its default)")
    p.add_argument("--set-params", default="",
                   help="extra fixed SETClassifier parameters, 'name=value;...', for experiments only: the "
                        "benchmark's point is that the library defaults are the recipe")
    p.add_argument("--threads", type=int, default=1,
                   help="SETClassifier n_jobs and the size of every BLAS/OpenMP thread pool of the process "
                        "(1 is fastest for these tiny problems: scikit-learn's OpenMP neighbour searches, used "
                        "by mutual_info_classif, slow down many times on a loaded machine)")
    p.add_argument("--jobs", type=int, default=1,
                   help="outer folds run in this many worker processes at once (results do not depend on it; "
                        "2 uses both cores of the 2-core machine)")
    p.add_argument("--mi-jobs", type=int, default=1,
                   help="n_jobs of mutual_info_classif (results do not depend on it)")
    p.add_argument("--lr-sweep", action=argparse.BooleanOptionalAction, default=True,
                   help="stability line: SETClassifier defaults at learning rates " +
                        ", ".join(map(str, LR_SWEEP)) + " on the first training part of seed 0")
    p.add_argument("--reuse", nargs="+", default=None, metavar="JSON",
                   help="earlier result files: the two-phase search, the upper-bound fits and f_classif's embedded "
                        "row of every (data set, seed, fold) they hold are taken from them instead of computed "
                        "again (the splits and these methods do not depend on SETClassifier); the rest is computed")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/accuracy[_quick].json)")
    p.add_argument("--table", nargs="+", default=None, help="print the tables of these JSON files, merged")
    p.add_argument("--compare", nargs="+", default=None, metavar="JSON",
                   help="with --table: SET-MLP of these result files (the 'before') against that of the --table "
                        "files, on the (seed, fold) pairs both hold, per data set")
    a = p.parse_args(argv)
    if a.compare and not a.table:
        p.error("--compare needs --table (the 'after' files)")
    if a.table:
        return a
    a.datasets = (a.datasets or ("colon,lung_small" if a.quick else ",".join(DATASETS))).split(",")
    check_datasets(p, a.datasets)
    a.seeds = a.seeds or (1 if a.quick else 5)
    a.folds = a.folds or (3 if a.quick else 5)
    a.inner_folds = a.inner_folds or (2 if a.quick else 3)
    if a.epochs is None and a.quick:
        a.epochs = 20
    if a.set_grid is None:
        a.set_grid = "" if a.quick else DEFAULT_SET_GRID
    a.set_grid = parse_grid(a.set_grid)
    a.set_params = parse_params(a.set_params)
    if a.hidden is not None:
        a.hidden = [int(h) for h in a.hidden.split(",") if h.strip()]
    a.out = a.out or os.path.join(HERE, "results", "accuracy_quick.json" if a.quick else "accuracy.json")
    return a


def parse_value(text):
    """``'20'`` -> 20, ``'0.02'`` -> 0.02, ``'None'``/``'True'``/``'False'`` -> None/True/False, anything
    else (``'init'``) as given."""
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return {"None": None, "True": True, "False": False}.get(text, text)


def parse_grid(text):
    """A grid as ``GridSearchCV`` takes it: a list of ``{name: [values]}``, one per ``|``-separated part.

    ``'learning_rate=0.005,0.02;min_inputs=20,200'`` -> ``[{learning_rate: [...], min_inputs: [...]}]`` (4
    points); ``'prune_inputs=0|min_inputs=10,200'`` -> two sub-grids (3 points); ``''`` -> ``[{}]`` (one
    point: the defaults).
    """
    grids = []
    for alternative in text.split("|"):
        grid = {}
        for part in filter(str.strip, alternative.split(";")):
            name, values = part.split("=", 1)
            grid[name.strip()] = [parse_value(v) for v in values.split(",")]
        grids.append(grid)
    return grids


def parse_params(text):
    """``'clip_norm=None;n_estimators=3'`` -> ``{name: value}``."""
    params = {}
    for part in filter(str.strip, text.split(";")):
        name, value = part.split("=", 1)
        params[name.strip()] = parse_value(value)
    return params


def grid_size(grid):
    """Points of a grid: a dict of value lists, or a list of them (GridSearchCV's forms)."""
    grids = grid if isinstance(grid, list) else [grid]
    return sum(math.prod(len(v) for v in g.values()) for g in grids)


def grid_names(grid):
    """Every parameter name of a list of sub-grids."""
    return {name for g in grid for name in g}


def two_phase_grid_size(ks):
    return len(SELECTORS) * len(ks) * len(CLASSIFIERS)


def unknown_set_params(names):
    """The sorted ``names`` that are not SETClassifier parameters."""
    from set_cy import SETClassifier

    return sorted(set(names) - set(SETClassifier().get_params()))


def check_set_args(args):
    """Names of --set-grid and --set-params must be SETClassifier parameters; the SET grid must not
    be larger than the two-phase grid. Returns an error message or None."""
    unknown = unknown_set_params(grid_names(args.set_grid) | set(args.set_params))
    if unknown:
        return f"not SETClassifier parameters: {unknown}"
    if grid_size(args.set_grid) > two_phase_grid_size(KS):
        return (f"the SET grid has {grid_size(args.set_grid)} points, more than the two-phase grid "
                f"({two_phase_grid_size(KS)})")
    return None


# ------------------------------------------------------------------------------------------------
# cached score functions
# ------------------------------------------------------------------------------------------------
_SCORE_CACHE = {}
_CACHE_STATS = {"computed": 0, "reused": 0}


class CachedScore:
    """Univariate score function for ``SelectKBest``, cached in this process by a hash of (X, y).

    A grid search calls the score function once per grid point on the same training split; the
    cache computes each (data, score function) once. Mutual information uses a fixed
    ``random_state``, so a cached result is exactly what a new call would return.

    Parameters
    ----------
    name : {"f_classif", "mutual_info"}
    n_jobs : int, default 1
        ``n_jobs`` of ``mutual_info_classif`` (not part of the cache key: it does not change the result).
    """

    def __init__(self, name, n_jobs=1):
        self.name = name
        self.n_jobs = n_jobs

    def __repr__(self):
        return self.name

    def __call__(self, X, y):
        X, y = np.ascontiguousarray(X), np.ascontiguousarray(y)
        h = hashlib.blake2b(X.tobytes(), digest_size=16)
        h.update(y.tobytes())
        key = (self.name, X.shape, X.dtype.str, y.shape, y.dtype.str, h.hexdigest())
        if key in _SCORE_CACHE:
            _CACHE_STATS["reused"] += 1
        else:
            _CACHE_STATS["computed"] += 1
            _SCORE_CACHE[key] = self._compute(X, y)
        value = _SCORE_CACHE[key]
        return tuple(v.copy() for v in value) if isinstance(value, tuple) else value.copy()

    def _compute(self, X, y):
        from sklearn.feature_selection import f_classif, mutual_info_classif

        if self.name == "f_classif":
            # constant features: NaN (ranked last, as SelectKBest expects), without scikit-learn's warning
            with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
                # (?s): the message lists the features over several lines when there are many
                warnings.filterwarnings("ignore", message="(?s)Features .* are constant", category=UserWarning)
                return f_classif(X, y)
        return mutual_info_classif(X, y, random_state=MI_RANDOM_STATE, n_jobs=self.n_jobs)

    @staticmethod
    def scores(value):
        """The scores of a score function's return value (f_classif returns ``(F, p)``)."""
        return value[0] if isinstance(value, tuple) else value


# ------------------------------------------------------------------------------------------------
# data and models
# ------------------------------------------------------------------------------------------------
DATASETS_HELP = "comma list of names or paths to .mat/.npz/.csv files"


def unknown_datasets(names):
    """The entries of ``names`` that are neither one of :data:`DATASETS` nor an existing data file.

    A data file is a path to a ``.mat`` (scikit-feature's ``X``, ``Y``), ``.npz`` (``X``, ``y``) or
    ``.csv`` file (label in the last column), read by :func:`set_cy.datasets.load_dataset`: the benches run on a
    user's own data as they do on the shared sets.
    """
    from set_cy.datasets import DATA_FILE_SUFFIXES

    return [n for n in names if n not in DATASETS
            and not (os.path.isfile(n) and os.path.splitext(n)[1].lower() in DATA_FILE_SUFFIXES)]


def check_datasets(parser, names):
    """``parser.error`` naming the entries of ``names`` that :func:`unknown_datasets` finds, if any."""
    bad = unknown_datasets(names)
    if bad:
        parser.error(f"unknown data sets {bad} (known: {', '.join(DATASETS)}; or paths to .mat, .npz or .csv files)")


def load_full(name):
    """All samples of a data set or data file (the loader's split joined back), float32, unstandardized."""
    from set_cy.datasets import load_dataset

    ds = load_dataset(name, standardize=False)
    return np.concatenate([ds.X_train, ds.X_test]), np.concatenate([ds.y_train, ds.y_test])


def derived_seed(seed, fold, stream):
    """A 31-bit seed for (repetition, outer fold, stream); stream 0: models, 1: inner folds, 2: ties of
    the top-k rankings."""
    return int(np.random.SeedSequence([seed, fold, stream]).generate_state(1)[0] >> 1)


def classifiers(random_state):
    """The two-phase classifiers, by short name."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import LinearSVC

    return {"svm": LinearSVC(C=1.0, max_iter=5000, random_state=random_state),
            "knn": KNeighborsClassifier(n_neighbors=5),
            "mlp": MLPClassifier(hidden_layer_sizes=(100,), max_iter=300, random_state=random_state)}


def classifier_name(clf):
    return {"LinearSVC": "svm", "KNeighborsClassifier": "knn", "MLPClassifier": "mlp"}[type(clf).__name__]


def set_fixed_params(args):
    """SETClassifier parameters fixed by the command line (everything else: its defaults)."""
    params = dict(n_jobs=args.threads)
    if args.hidden is not None:
        params["hidden_layer_sizes"] = tuple(args.hidden)
    if args.epochs is not None:
        params["epochs"] = args.epochs
    if args.batch_size is not None:
        params["batch_size"] = args.batch_size
    params.update(args.set_params)
    return params


def single_phase_searches(random_state, inner_cv):
    """The single-phase comparators on all features, each a ``GridSearchCV`` on the inner folds.

    ``logreg``: ``Pipeline(StandardScaler, LogisticRegression(max_iter=2000))`` (L2) over ``C``;
    ``linear_svm``: ``Pipeline(StandardScaler, LinearSVC(max_iter=5000))`` over ``C``; both with
    ``C`` in ``SINGLE_PHASE_C`` (4 points). ``random_forest``: ``RandomForestClassifier(500 trees)``
    with ``max_features`` in {"sqrt", 0.1} (2 points; no scaling, trees do not need it).
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    def search(model, grid):
        return GridSearchCV(model, grid, scoring="accuracy", cv=inner_cv, error_score="raise")

    return {
        "logreg": search(Pipeline([("scale", StandardScaler()),
                                   ("clf", LogisticRegression(max_iter=2000))]), {"clf__C": list(SINGLE_PHASE_C)}),
        "linear_svm": search(Pipeline([("scale", StandardScaler()),
                                       ("clf", LinearSVC(max_iter=5000, random_state=random_state))]),
                             {"clf__C": list(SINGLE_PHASE_C)}),
        "random_forest": search(RandomForestClassifier(n_estimators=500, random_state=random_state, n_jobs=1),
                                {"max_features": ["sqrt", 0.1]}),
    }


def single_phase_grid_sizes():
    return {name: grid_size(s.param_grid) for name, s in single_phase_searches(0, 2).items()}


def top_features(scores, k, rng):
    """Indices of the ``k`` largest ``scores`` (NaN lowest), sorted.

    Ties are broken in the order of a random permutation drawn from ``rng``, not by index: a ranking
    with many equal scores (the inputs that input pruning removed, the zero coefficients of L1
    logistic regression) would otherwise fill its top ``k`` with the same low indices in every fold,
    an agreement that measures nothing.
    """
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    perm = rng.permutation(scores.size)
    return np.sort(perm[np.argsort(-scores[perm], kind="stable")][:k]).tolist()


def l1_ranking(Xs_tr, ytr, random_state):
    """Feature scores of L1 logistic regression (liblinear, C=1, one against the rest for more than two
    classes) on the scaled training part: the sum of ``|coef|`` over the classes."""
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    # scikit-learn 1.8 names the L1 penalty l1_ratio=1 ("penalty" is deprecated there); older ones need penalty="l1"
    new = tuple(int(v) for v in sklearn.__version__.split(".")[:2]) >= (1, 8)
    l1 = dict(l1_ratio=1.0) if new else dict(penalty="l1")
    clf = OneVsRestClassifier(LogisticRegression(**l1, solver="liblinear", C=1.0, random_state=random_state))
    clf.fit(Xs_tr, ytr)
    return sum(np.abs(est.coef_).sum(axis=0) for est in clf.estimators_)


def kuncheva(sets, n_features):
    """Mean Kuncheva consistency index of every pair of equal-size feature sets (1: identical, ~0: chance)."""
    k = len(sets[0])
    if not 0 < k < n_features or len(sets) < 2:
        return math.nan
    vals = [(len(set(a) & set(b)) * n_features - k * k) / (k * (n_features - k))
            for i, a in enumerate(sets) for b in sets[i + 1:]]
    return float(np.mean(vals))


def jaccard(sets):
    """Mean Jaccard index of every pair of feature sets."""
    vals = [len(set(a) & set(b)) / len(set(a) | set(b)) for i, a in enumerate(sets) for b in sets[i + 1:]]
    return float(np.mean(vals)) if vals else math.nan


def stability(ds):
    """``{ranking: {"kuncheva": ..., "jaccard": ...}}`` of the top-``EMBEDDED_K`` sets over all outer folds."""
    out = {}
    for name in RANKINGS:
        sets = [f["top"][name] for f in ds["folds"] if "top" in f]
        if sets:
            out[name] = dict(kuncheva=kuncheva(sets, ds["n_features"]), jaccard=jaccard(sets))
    return out


def two_phase_search(ks, random_state, inner_cv, mi_jobs):
    """GridSearchCV of scaler -> SelectKBest -> classifier (2 score functions x ks x 3 classifiers)."""
    from sklearn.feature_selection import SelectKBest
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    clfs = list(classifiers(random_state).values())
    pipe = Pipeline([("scale", StandardScaler()), ("select", SelectKBest()), ("clf", clfs[0])])
    grid = {"select__score_func": [CachedScore(s, mi_jobs) for s in SELECTORS], "select__k": list(ks), "clf": clfs}
    return GridSearchCV(pipe, grid, scoring="accuracy", cv=inner_cv, error_score="raise")


def set_pipeline(fixed, random_state):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from set_cy import SETClassifier

    return Pipeline([("scale", StandardScaler()), ("set", SETClassifier(**fixed, random_state=random_state))])


def set_search(fixed, set_grid, random_state, inner_cv):
    """GridSearchCV of scaler -> SETClassifier over ``set_grid`` (a list of sub-grids; ``[{}]``: one point,
    the defaults)."""
    from sklearn.model_selection import GridSearchCV

    grid = [{f"set__{name}": values for name, values in g.items()} for g in set_grid]
    return GridSearchCV(set_pipeline(fixed, random_state), grid, scoring="accuracy", cv=inner_cv, error_score="raise")


def chosen(search):
    """The best grid point of a fitted GridSearchCV, JSON-ready, and its mean inner accuracy."""
    params = {}
    for key, value in search.best_params_.items():
        name = key.split("__")[-1]
        if isinstance(value, CachedScore):
            value = value.name
        elif hasattr(value, "fit"):
            value = classifier_name(value)
        elif isinstance(value, np.generic):
            value = value.item()
        params[name] = value
    return dict(params=params, inner_score=float(search.best_score_))


def test_accuracy(clf, Xtr, ytr, Xte, yte):
    return float(clf.fit(Xtr, ytr).score(Xte, yte))


def upper_bound(Xs_tr, ytr, Xs_te, yte, ks, random_state, mi_jobs):
    """Test accuracy of every score function x k x classifier on the scaled outer split.

    The top-k columns are chosen as ``SelectKBest`` chooses them, on the training part's (cached) scores.
    """
    from sklearn.feature_selection import SelectKBest

    acc = {}
    for sel in SELECTORS:
        for k in ks:
            cols = SelectKBest(CachedScore(sel, mi_jobs), k=k).fit(Xs_tr, ytr).get_support(indices=True)
            for cname, clf in classifiers(random_state).items():
                acc[f"upper/{sel}/k={k}/{cname}"] = test_accuracy(clf, Xs_tr[:, cols], ytr, Xs_te[:, cols], yte)
    return acc


def embedded_ranking(set_model, Xs_tr, ytr, Xs_te, yte, k, random_state, upper):
    """Classifiers on the top-k inputs of the fitted SET-MLP, beside f_classif's top-k (from ``upper``)."""
    from sklearn.feature_selection import SelectFromModel

    cols = SelectFromModel(set_model, threshold=-np.inf, max_features=k, prefit=True).get_support(indices=True)
    acc = {}
    for cname, clf in classifiers(random_state).items():
        acc[f"embedded/set/{cname}"] = test_accuracy(clf, Xs_tr[:, cols], ytr, Xs_te[:, cols], yte)
        acc[f"embedded/f_classif/{cname}"] = upper[f"upper/f_classif/k={k}/{cname}"]
    return acc


def lr_sweep(Xtr, ytr, fixed, random_state, Xte=None, yte=None):
    """Fit SETClassifier (scaled inputs) at every learning rate of LR_SWEEP; flag non-finite loss curves.

    With ``Xte, yte`` each record also holds the test ``accuracy``.
    """
    out = []
    for lr in LR_SWEEP:
        model = set_pipeline({**fixed, "learning_rate": lr}, random_state).fit(Xtr, ytr)
        curve = np.asarray(model.named_steps["set"].loss_curve_, dtype=float)
        rec = dict(learning_rate=lr, nonfinite=not bool(np.all(np.isfinite(curve))),
                   final_loss=float(curve[-1]) if np.isfinite(curve[-1]) else None)
        if Xte is not None:
            rec["accuracy"] = float(model.score(Xte, yte))
        out.append(rec)
    return out


# ------------------------------------------------------------------------------------------------
# one outer fold, one data set
# ------------------------------------------------------------------------------------------------
def run_fold(Xtr, ytr, Xte, yte, ks, args, seed, fold, reused=None):
    """Every method on one outer split; returns the fold's JSON record.

    ``reused``: the record of the same (data set, seed, fold) from an earlier run (``--reuse``): its
    two-phase search, upper-bound fits and f_classif embedded row are copied instead of computed.
    """
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    rs = derived_seed(seed, fold, 0)
    inner_cv = StratifiedKFold(n_splits=args.inner_folds, shuffle=True, random_state=derived_seed(seed, fold, 1))
    acc, secs = {}, {}
    t = time.perf_counter()

    def lap(name):
        nonlocal t
        secs[name] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()

    if reused is None:
        tp = two_phase_search(ks, rs, inner_cv, args.mi_jobs).fit(Xtr, ytr)
        acc["two_phase"] = float(tp.score(Xte, yte))
        two_phase = chosen(tp)
        lap("two_phase")
    else:
        acc["two_phase"] = reused["accuracy"]["two_phase"]
        two_phase = reused["two_phase"]
    single = {}
    for name, search in single_phase_searches(rs, inner_cv).items():
        search.fit(Xtr, ytr)
        acc[name] = float(search.score(Xte, yte))
        single[name] = chosen(search)
        lap(name)
    inner = {"two_phase": two_phase, **single}
    best = max(COMPARATORS, key=lambda c: inner[c]["inner_score"])  # ties: the earlier in COMPARATORS
    acc["best_comparator"] = acc[best]
    sm = set_search(set_fixed_params(args), args.set_grid, rs, inner_cv).fit(Xtr, ytr)
    acc["set_mlp"] = float(sm.score(Xte, yte))
    lap("set_mlp")
    static = clone(sm.best_estimator_).set_params(set__zeta=0.0, set__prune_inputs=0.0)
    acc["static_sparse"] = test_accuracy(static, Xtr, ytr, Xte, yte)
    lap("static_sparse")
    scaler = StandardScaler().fit(Xtr)  # the pipelines' scaling, so the cached scores are reused
    Xs_tr, Xs_te = scaler.transform(Xtr), scaler.transform(Xte)
    if reused is None:
        upper = upper_bound(Xs_tr, ytr, Xs_te, yte, ks, rs, args.mi_jobs)
        lap("upper_bound")
    else:
        upper = {k: v for k, v in reused["accuracy"].items() if k.startswith("upper/")}
    k = min(EMBEDDED_K, Xtr.shape[1])
    set_model = sm.best_estimator_.named_steps["set"]
    acc.update(embedded_ranking(set_model, Xs_tr, ytr, Xs_te, yte, k, rs, upper))
    acc.update(upper)
    ties = np.random.default_rng(derived_seed(seed, fold, 2))
    top = dict(set=top_features(set_model.feature_importances_, k, ties),
               f_classif=top_features(CachedScore.scores(CachedScore("f_classif")(Xs_tr, ytr)), k, ties),
               l1_logreg=top_features(l1_ranking(Xs_tr, ytr, rs), k, ties))
    lap("embedded")
    rec = dict(seed=seed, fold=fold, n_train=int(ytr.size), n_test=int(yte.size), accuracy=acc,
               two_phase=two_phase, set_mlp=chosen(sm), best_comparator=best, top=top, seconds=secs, **single)
    if reused is not None:
        rec["reused_seconds"] = reused.get("reused_seconds") or {k: reused["seconds"][k]
                                                                 for k in ("two_phase", "upper_bound")}
    return rec


def load_reused(paths, name, args, ks, n_samples, n_features):
    """``{(seed, fold): record}`` of data set ``name`` from the ``--reuse`` files, and their provenance.

    A file's records are used only when it ran the same outer and inner folds on data of the same
    shape with the same ``ks``; later files win over earlier ones for the same (seed, fold).
    """
    folds, sources = {}, []
    for path, d in read_reports(paths or ()):
        for ds in d["results"]:
            if ds["dataset"] != name:
                continue
            same = ((ds["n_samples"], ds["n_features"], ds["n_folds"], ds["inner_folds"], ds["ks"])
                    == (n_samples, n_features, args.folds, args.inner_folds, ks))
            if not same:
                raise ValueError(f"{path}: {name} was run with other folds, inner folds, ks or data; cannot reuse")
            recs = [f for f in ds["folds"] if f["seed"] < args.seeds]
            folds.update({(f["seed"], f["fold"]): f for f in recs})
            sources.append(dict(path=os.path.basename(path), command=d["command"], commit=d["commit"],
                                folds=len(recs)))
    return folds, sources


def run_dataset(name, args, log):
    """Outer CV of one data set; returns its JSON record."""
    from sklearn.model_selection import StratifiedKFold

    X, y = load_full(name)
    _SCORE_CACHE.clear()
    _CACHE_STATS.update(computed=0, reused=0)
    ks = sorted({min(k, X.shape[1]) for k in KS})
    out = dict(dataset=name, n_samples=int(X.shape[0]), n_features=int(X.shape[1]), n_classes=int(y.max()) + 1,
               class_counts=np.bincount(y).tolist(), ks=ks, n_folds=args.folds, inner_folds=args.inner_folds,
               seeds=list(range(args.seeds)),
               grid_sizes=dict(two_phase=two_phase_grid_size(ks), **single_phase_grid_sizes(),
                               set_mlp=grid_size(args.set_grid)),
               lr_sweep=None, folds=[])
    reused, out["reused_from"] = load_reused(args.reuse, name, args, ks, X.shape[0], X.shape[1])
    t0 = time.perf_counter()
    splits = [(seed, fold, tr, te) for seed in range(args.seeds)
              for fold, (tr, te) in enumerate(StratifiedKFold(n_splits=args.folds, shuffle=True,
                                                              random_state=seed).split(X, y))]
    for seed, fold, tr, te in splits:
        old = reused.get((seed, fold))
        if old is not None and (old["n_train"], old["n_test"]) != (tr.size, te.size):
            raise ValueError(f"{name} seed {seed} fold {fold}: the reused split has other sizes")
    if args.lr_sweep:
        tr = splits[0][2]
        t1 = time.perf_counter()
        out["lr_sweep"] = lr_sweep(X[tr], y[tr], set_fixed_params(args), derived_seed(0, 0, 0))
        out["lr_sweep_seconds"] = round(time.perf_counter() - t1, 2)
        log(f"{name} lr sweep: {sum(r['nonfinite'] for r in out['lr_sweep'])} of {len(LR_SWEEP)} "
            f"non-finite ({out['lr_sweep_seconds']:.1f} s)")
    if args.jobs == 1:
        recs = (_fold_task(X[tr], y[tr], X[te], y[te], ks, args, seed, fold, reused.get((seed, fold)))
                for seed, fold, tr, te in splits)
    else:  # outer folds are independent: worker processes, results in order (each its own score cache)
        from joblib import Parallel, delayed

        recs = Parallel(n_jobs=args.jobs, return_as="generator")(
            delayed(_fold_task)(X[tr], y[tr], X[te], y[te], ks, args, seed, fold, reused.get((seed, fold)))
            for seed, fold, tr, te in splits)
    cache = dict(computed=0, reused=0)
    for rec, stats in recs:
        out["folds"].append(rec)
        for k in cache:
            cache[k] += stats[k]
        a = rec["accuracy"]
        log(f"{name} seed {rec['seed']} fold {rec['fold']}: SET-MLP {a['set_mlp']:.3f} {rec['set_mlp']['params']}, "
            f"two-phase {a['two_phase']:.3f} {rec['two_phase']['params']}, static {a['static_sparse']:.3f} "
            f"({sum(rec['seconds'].values()):.1f} s: {rec['seconds']})")
    out["seconds"] = time.perf_counter() - t0
    out["reused_folds"] = sum("reused_seconds" in f for f in out["folds"])
    out["score_cache"] = cache
    _CACHE_STATS.update(cache)
    out["tests"] = {f"set_mlp-{other}": corrected_ttest(out, "set_mlp", other)
                    for other in (*COMPARATORS, "best_comparator", "static_sparse")}
    out["stability"] = stability(out)
    log(f"{name}: {out['seconds']:.0f} s (target <= {TARGET_SECONDS} s per small set on 2 cores with the "
        f"default settings); score functions computed {_CACHE_STATS['computed']}, reused {_CACHE_STATS['reused']}")
    return out


def _fold_task(Xtr, ytr, Xte, yte, ks, args, seed, fold, reused=None):
    """:func:`run_fold` with this process's thread pools limited to ``args.threads`` and a fresh score cache
    (the folds share no data); returns the record and the cache's counts."""
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    _SCORE_CACHE.clear()
    _CACHE_STATS.update(computed=0, reused=0)
    with threadpool_limits(limits=args.threads):
        rec = run_fold(Xtr, ytr, Xte, yte, ks, args, seed, fold, reused)
    return rec, dict(_CACHE_STATS)


# ------------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------------
def pooled_by_seed(ds, key):
    """Accuracy of ``key`` pooled over the folds of each seed (correct test predictions / samples)."""
    correct, tested = {}, {}
    for f in ds["folds"]:
        correct[f["seed"]] = correct.get(f["seed"], 0.0) + f["accuracy"][key] * f["n_test"]
        tested[f["seed"]] = tested.get(f["seed"], 0) + f["n_test"]
    return np.array([correct[s] / tested[s] for s in sorted(correct)])


def mean_std(ds, key):
    v = pooled_by_seed(ds, key)
    return float(v.mean()), float(v.std())


def corrected_ttest(ds, a, b):
    """Nadeau & Bengio's corrected resampled t-test of fold accuracy, ``a`` minus ``b``.

    Parameters
    ----------
    ds : dict
        A data set record (its ``folds``: one entry per (seed, fold)).
    a, b : str
        Keys of ``accuracy``.

    Returns
    -------
    dict
        ``mean_diff`` (mean over the J pairs), ``t``, ``p`` (two-sided, Student t with J - 1
        degrees of freedom; the variance is multiplied by 1/J + n_test/n_train), ``J`` and ``verdict``.
    """
    from scipy import stats

    d = np.array([f["accuracy"][a] - f["accuracy"][b] for f in ds["folds"]])
    J = d.size
    mean = float(d.mean())
    ratio = np.mean([f["n_test"] for f in ds["folds"]]) / np.mean([f["n_train"] for f in ds["folds"]])
    var = float(d.var(ddof=1)) if J > 1 else math.nan
    if J < 2:
        t, p = math.nan, math.nan
    elif var == 0:
        t, p = (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    else:
        t = mean / math.sqrt((1.0 / J + ratio) * var)
        p = float(2 * stats.t.sf(abs(t), J - 1))
    return dict(mean_diff=mean, t=float(t), p=p, J=J, verdict=verdict(mean, p))


def verdict(mean_diff, p):
    """"win", "loss" (p < ALPHA) or "tie (+0.012)"."""
    if p < ALPHA and mean_diff > 0:
        return "win"
    if p < ALPHA and mean_diff < 0:
        return "loss"
    return f"tie ({mean_diff:+.3f})"


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------
def cell(ms):
    return f"{ms[0]:.3f} ± {ms[1]:.3f}"


def test_cell(test):
    v = test["verdict"]
    head = v if v.startswith("tie") else f"{v} ({test['mean_diff']:+.3f})"
    return f"{head}, p = {test['p']:.3f}"


def best_upper(ds):
    """(name, mean, std) of the upper-bound combination with the best mean (chosen on the test folds)."""
    keys = [k for k in ds["folds"][0]["accuracy"] if k.startswith("upper/")]
    stats_ = {k: mean_std(ds, k) for k in keys}
    key = max(keys, key=lambda k: stats_[k][0])
    _, sel, k, clf = key.split("/")
    return f"{sel}+{clf} {k}", *stats_[key]


def has(ds, key):
    """Whether every fold of a data set record holds an accuracy for ``key`` (older files lack some)."""
    return all(key in f["accuracy"] for f in ds["folds"])


def main_table(results):
    """Accuracy of SET-MLP, its static ablation and every comparator (mean ± std over the seeds)."""
    keys = ["set_mlp", "static_sparse", *COMPARATORS, "best_comparator"]
    head = ["data set (n x d, classes)", "SET-MLP"] + [COMPARATOR_LABELS[k] for k in keys[1:]] + [
        "best-in-hindsight, upper bound", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ds in results:
        name, m, s = best_upper(ds)
        row = [f"{ds['dataset']} ({ds['n_samples']} x {ds['n_features']}, {ds['n_classes']})"]
        row += [cell(mean_std(ds, k)) if has(ds, k) else "-" for k in keys]
        row += [f"{m:.3f} ± {s:.3f} ({name})", seconds_cell(ds)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def tests_table(results):
    """SET-MLP against each comparator and the static network: corrected resampled t-tests."""
    others = [*COMPARATORS, "best_comparator", "static_sparse"]
    head = ["data set"] + [f"SET-MLP vs {COMPARATOR_LABELS[k]}" for k in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ds in results:
        row = [ds["dataset"]] + [test_cell(ds["tests"][f"set_mlp-{k}"]) if f"set_mlp-{k}" in ds["tests"] else "-"
                                 for k in others]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def seconds_cell(ds):
    """Wall seconds of the run; with reused folds, also the seconds the reused parts took when computed."""
    n = ds.get("reused_folds", 0)
    if not n:
        return f"{ds['seconds']:.0f}"
    then = sum(sum(f["reused_seconds"].values()) for f in ds["folds"] if "reused_seconds" in f)
    return f"{ds['seconds']:.0f} + {then:.0f} reused ({n} folds' two-phase)"


def embedded_table(results):
    head = ["data set"]
    for r in ("SET", "f_classif"):
        head += [f"{r} top-{EMBEDDED_K} + {c}" for c in CLASSIFIERS] + [f"{r} top-{EMBEDDED_K}, mean of the 3"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ds in results:
        row = [ds["dataset"]]
        for r in ("set", "f_classif"):
            means = [mean_std(ds, f"embedded/{r}/{c}")[0] for c in CLASSIFIERS]
            row += [cell(mean_std(ds, f"embedded/{r}/{c}")) for c in CLASSIFIERS] + [f"{np.mean(means):.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def ranking_stability_table(results):
    """Kuncheva index (and mean Jaccard) of each ranking's top-``EMBEDDED_K`` over the outer folds."""
    labels = {"set": "feature_importances_", "f_classif": "f_classif", "l1_logreg": "L1 logistic regression"}
    head = ["data set"] + [f"{labels[r]}: Kuncheva (Jaccard)" for r in RANKINGS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ds in results:
        st = ds.get("stability") or stability(ds)
        lines.append("| " + " | ".join([ds["dataset"]] + [
            f"{st[r]['kuncheva']:.3f} ({st[r]['jaccard']:.3f})" if r in st else "-" for r in RANKINGS]) + " |")
    return lines


def stability_table(results):
    lines = ["| data set | lr sweep: non-finite fits | non-finite at learning rates |", "|---|---|---|"]
    for ds in results:
        sweep = ds.get("lr_sweep")
        if not sweep:
            lines.append(f"| {ds['dataset']} | not run | - |")
            continue
        bad = [r["learning_rate"] for r in sweep if r["nonfinite"]]
        lines.append(f"| {ds['dataset']} | {len(bad)} of {len(sweep)} | {', '.join(map(str, bad)) or '-'} |")
    return lines


def summary(results):
    n = len(results)
    lines = []
    for other in (*COMPARATORS, "best_comparator", "static_sparse"):
        sets = [ds for ds in results if f"set_mlp-{other}" in ds["tests"]]
        if not sets:
            continue
        verdicts = [ds["tests"][f"set_mlp-{other}"]["verdict"] for ds in sets]
        ge = sum(mean_std(ds, "set_mlp")[0] >= mean_std(ds, other)[0] for ds in sets)
        lines.append(f"SET-MLP vs {COMPARATOR_LABELS[other]}: {verdicts.count('win')} wins, "
                     f"{sum(v.startswith('tie') for v in verdicts)} ties, {verdicts.count('loss')} losses of "
                     f"{len(sets)} (corrected resampled t-test, p < {ALPHA}); mean >= on {ge} of {len(sets)}")
    keys = [k for k in ("set_mlp", *COMPARATORS, "best_comparator", "static_sparse")
            if all(has(ds, k) for ds in results)]
    means = {k: np.mean([mean_std(ds, k)[0] for ds in results]) for k in keys}
    lines.append(f"mean accuracy over the {n} sets: " + ", ".join(
        f"{COMPARATOR_LABELS.get(k, 'SET-MLP')} {v:.3f}" for k, v in means.items()))
    stab = [st for st in (ds.get("stability") or stability(ds) for ds in results) if st.keys() >= {"set", "f_classif"}]
    if stab:
        ge = sum(st["set"]["kuncheva"] >= st["f_classif"]["kuncheva"] for st in stab)
        both = stab
        lines.append(f"top-{EMBEDDED_K} stability (Kuncheva): feature_importances_ >= f_classif on {ge} of {len(both)}")
    return lines


def tables(results):
    """Markdown: accuracy, tests, embedded ranking, ranking stability, lr sweep; then the summary lines."""
    return "\n".join(main_table(results) + [""] + tests_table(results) + [""] + embedded_table(results) + [""]
                     + ranking_stability_table(results) + [""] + stability_table(results) + [""] + summary(results))


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------
def read_reports(paths):
    """``(path, report)`` of every result file, in order."""
    reports = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            reports.append((path, json.load(fh)))
    return reports


def load_results(paths):
    """The data-set records of every result file, merged."""
    return [ds for _, d in read_reports(paths) for ds in d["results"]]


def print_tables(paths):
    results, meta = [], []
    for path, d in read_reports(paths):
        results += d["results"]
        meta.append(f"{os.path.basename(path)}: {d['command']} (commit {d['commit']}, grid sizes {d['grid_sizes']}, "
                    f"load {d['loadavg_start']} -> {d['loadavg_end']}, {d['seconds']:.0f} s)")
    print("\n".join(meta) + "\n\n" + tables(results))


def compare_table(before, after, key="set_mlp"):
    """Markdown: ``key`` of two sets of data-set records on the (seed, fold) pairs both hold."""
    lines = ["| data set | (seed, fold) pairs | before | after | after - before, corrected t-test |",
             "|---|---|---|---|---|"]
    old = {ds["dataset"]: ds for ds in before}
    means = []
    for ds in after:
        if ds["dataset"] not in old:
            continue
        a = {(f["seed"], f["fold"]): f for f in old[ds["dataset"]]["folds"]}
        pairs = [(a[(f["seed"], f["fold"])], f) for f in ds["folds"] if (f["seed"], f["fold"]) in a]
        joined = {"folds": [dict(f, accuracy={"before": fa["accuracy"][key], "after": f["accuracy"][key]})
                            for fa, f in pairs]}
        test = corrected_ttest(joined, "after", "before")
        b, a = mean_std(joined, "before")[0], mean_std(joined, "after")[0]
        means.append((b, a))
        lines.append(f"| {ds['dataset']} | {len(pairs)} | {b:.3f} | {a:.3f} | {test_cell(test)} |")
    if means:
        b, a = np.mean(means, axis=0)
        lines.append(f"| mean of the {len(means)} | | {b:.3f} | {a:.3f} | {a - b:+.3f} |")
    return lines


def main(argv=None):
    args = parse_args(argv)
    if args.table and args.compare:
        print("\n".join(compare_table(load_results(args.compare), load_results(args.table))))
        return 0
    if args.table:
        print_tables(args.table)
        return 0
    try:
        from sklearn.exceptions import ConvergenceWarning
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("scikit-learn is needed (pip install -e .[bench])", file=sys.stderr)
        return 2
    error = check_set_args(args)
    if error:
        print(error, file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", category=UserWarning)  # few-member classes in StratifiedKFold, constant features
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    sizes = dict(two_phase=two_phase_grid_size(KS), **single_phase_grid_sizes(), set_mlp=grid_size(args.set_grid))
    info = machine_info()
    load_start = load_average()
    t0 = time.perf_counter()
    print(f"# {info['cpu']}, {info['cores']} cores; load {load_start}; commit {git_commit()}; seeds {args.seeds}, "
          f"folds {args.folds}, inner folds {args.inner_folds}, threads {args.threads} (SETClassifier and every "
          f"BLAS/OpenMP pool)\n# grid sizes: two-phase {sizes['two_phase']}, "
          f"SET-MLP {sizes['set_mlp']} ({args.set_grid if grid_names(args.set_grid) else 'library defaults'}); "
          f"SETClassifier fixed "
          f"{set_fixed_params(args)}, everything else its defaults", flush=True)
    results = []
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for name in args.datasets:
        with threadpool_limits(limits=args.threads):
            results.append(run_dataset(name, args, lambda s: print(s, flush=True)))
        # written after every data set, so that an interrupted run keeps the finished ones
        out = save_report(args.out, t0, info, load_start, args=dict(vars(args)), grid_sizes=sizes,
                          set_fixed_params=set_fixed_params(args), results=results)
    print("\n" + tables(results))
    print(f"saved {args.out} ({out['seconds']:.0f} s; load at the end {out['loadavg_end']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
