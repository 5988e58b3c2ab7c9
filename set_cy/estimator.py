"""scikit-learn face of set_cy: :class:`SETClassifier` and :class:`SETRegressor`, truly sparse MLPs
trained with SET.

This module imports scikit-learn (an optional dependency: ``pip install set_cy[sklearn]``);
``import set_cy`` does not, and ``set_cy.SETClassifier`` (or ``SETRegressor``) loads this module on
first use.
"""
import copy
import logging
import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ._validation import check_int, check_scalar, resolve_n_threads
from .activations import ACTIVATIONS
from .evolution import NEW_WEIGHTS, SCHEDULES, make_drop_rule, make_grow_rule
from .model import LR_SCALINGS
from .sizing import check_activation_dtype, check_storage
from .trainer import SparseMLP

__all__ = ["SETClassifier", "SETRegressor"]

logger = logging.getLogger("set_cy")

# Rows densified at a time by predict_proba and SETRegressor.predict (a multiple of the inference
# batch is used): bounds the dense copy of scipy.sparse input.
_PREDICT_CHUNK_ROWS = 4096


class _SETBase(BaseEstimator):
    """What :class:`SETClassifier` and :class:`SETRegressor` share: the recipe's parameters and their
    checks, building and training the networks, batched inference, the fitted attributes.

    A subclass sets ``_loss`` (the ``loss`` of :class:`set_cy.SparseMLP`) and provides ``_validate``,
    ``_n_outputs`` and ``_targets`` (the ``y`` its networks train on).
    """

    _loss = None

    def _set_params_from_init(self, args):
        """Both estimators' ``__init__``: every constructor argument stored unchanged, under its own name
        (scikit-learn's rule; the checks happen at fit)."""
        for name, value in args.items():
            if name != "self":
                setattr(self, name, value)

    # ------------------------------------------------------------------------------------------
    # parameters
    def _hidden_sizes(self):
        h = self.hidden_layer_sizes
        sizes = [h] if isinstance(h, numbers.Integral) and not isinstance(h, bool) else h
        try:
            if isinstance(sizes, (str, bytes)):
                raise TypeError
            sizes = list(sizes)
        except TypeError:
            raise ValueError(f"hidden_layer_sizes must be an int or a sequence of positive ints, got {h!r}") \
                from None
        return [check_int(s, "hidden_layer_sizes entries", min_val=1) for s in sizes]

    def _n_threads(self):
        return None if self.n_jobs is None else resolve_n_threads(self.n_jobs, "n_jobs")

    def _seeds(self, n):
        """Seeds of ``n`` networks: the first is :meth:`_seed`, the others derived from it (None stays None)."""
        first = self._seed()
        if first is None:
            return [None] * n
        return [first] + [int(np.random.SeedSequence([first, i]).generate_state(1, np.uint64)[0] >> 1)
                          for i in range(1, n)]

    def _seed(self):
        """An int seed (or None) for the network, drawn from ``random_state``."""
        rs = self.random_state
        if rs is None:
            return None
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            if rs < 0:
                raise ValueError(f"random_state must be a non-negative int, got {rs}")
            return int(rs)
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(np.iinfo(np.int32).max))
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(np.iinfo(np.int64).max))
        raise ValueError(f"random_state must be None, a non-negative int, a numpy RandomState or Generator, "
                         f"got {rs!r}")

    def _check_batch_size(self):
        if isinstance(self.batch_size, str) and self.batch_size == "auto":
            return "auto"
        return check_int(self.batch_size, "batch_size", min_val=1)

    @staticmethod
    def _auto_batch(batch_size, n_samples):
        """The training batch for ``n_samples`` samples: ``batch_size``, or the "auto" rule."""
        if batch_size == "auto":
            return int(min(128, max(16, n_samples // 64)))
        return batch_size

    def _check_params(self):
        """Validate every parameter (sklearn convention: here, not in __init__); return the resolved ones."""
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        zeta = check_scalar(self.zeta, "zeta", min_val=0.0, max_val=1.0, include_max=False)
        check_int(self.verbose, "verbose", min_val=0)
        if self.new_weights not in NEW_WEIGHTS:
            raise ValueError(f"new_weights must be one of {NEW_WEIGHTS}, got {self.new_weights!r}")
        make_drop_rule(self.criterion)
        grow = make_grow_rule(self.grow, self.grow_candidates)
        if self.lr_scaling not in LR_SCALINGS:
            raise ValueError(f"lr_scaling must be one of {LR_SCALINGS}, got {self.lr_scaling!r}")
        prune = check_scalar(self.prune_inputs, "prune_inputs", min_val=0.0, max_val=1.0, include_max=False)
        for name in ("early_stopping", "linear_path"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        fraction = check_scalar(self.validation_fraction, "validation_fraction", min_val=0.0, max_val=1.0,
                                include_min=False, include_max=False)
        return dict(
            hidden=self._hidden_sizes(),
            epsilon=check_scalar(self.epsilon, "epsilon", min_val=0.0, include_min=False),
            zeta=zeta,
            dropout=check_scalar(self.dropout, "dropout", min_val=0.0, max_val=0.99),
            batch_size=self._check_batch_size(),
            learning_rate=check_scalar(self.learning_rate, "learning_rate", min_val=0.0, include_min=False),
            momentum=check_scalar(self.momentum, "momentum", min_val=0.0, max_val=1.0),
            weight_decay=check_scalar(self.weight_decay, "weight_decay", min_val=0.0),
            epochs=check_int(self.epochs, "epochs", min_val=1) if self.max_iter is None
            else check_int(self.max_iter, "max_iter", min_val=1),
            n_threads=self._n_threads(),
            verbose=int(self.verbose),
            n_estimators=check_int(self.n_estimators, "n_estimators", min_val=1),
            clip_norm=None if self.clip_norm is None else check_scalar(self.clip_norm, "clip_norm", min_val=0.0,
                                                                include_min=False),
            prune_inputs=prune,
            prune_every=check_int(self.prune_every, "prune_every", min_val=1),
            min_inputs=check_int(self.min_inputs, "min_inputs", min_val=1),
            prune_start=None if self.prune_start is None else check_int(self.prune_start, "prune_start", min_val=1),
            storage=check_storage(self.storage),
            activation_dtype=check_activation_dtype(self.activation_dtype, np.float32),
            evolution=dict(criterion=self.criterion, grow=grow),
            schedule=dict(final_fraction=check_scalar(self.final_fraction, "final_fraction", min_val=0.0, max_val=1.0,
                                                      include_min=False),
                          lr_schedule=self._check_lr_schedule()),
            input_noise=check_scalar(self.input_noise, "input_noise", min_val=0.0),
            neurons=(check_scalar(self.prune_neurons, "prune_neurons", min_val=0.0, max_val=1.0, include_max=False),
                     check_int(self.min_neurons, "min_neurons", min_val=1), True),
            stopping=dict(early_stopping=bool(self.early_stopping), validation_fraction=fraction,
                          n_iter_no_change=check_int(self.n_iter_no_change, "n_iter_no_change", min_val=1),
                          tol=check_scalar(self.tol, "tol", min_val=0.0)),
        )

    def _check_lr_schedule(self):
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        return self.lr_schedule

    # ------------------------------------------------------------------------------------------
    # networks
    def _build(self, n_features, p):
        nets = [SparseMLP([n_features, *p["hidden"], self._n_outputs()], epsilon=p["epsilon"],
                          activation=self.activation, dropout=p["dropout"], seed=seed, n_threads=p["n_threads"],
                          lr_scaling=self.lr_scaling, storage=p["storage"], activation_dtype=p["activation_dtype"],
                          linear_path=bool(self.linear_path) and bool(p["hidden"]), loss=self._loss)
                for seed in self._seeds(p["n_estimators"])]
        logger.debug("%s: %d x %r", type(self).__name__, len(nets), nets[0])
        return nets

    def _class_weight_indices(self):
        """The ``class_weight`` argument of :meth:`SparseMLP.fit` (None: no classes here)."""
        return None

    def _train(self, nets, X, y, p, epochs, initial_epoch, stopping=None, schedule=None):
        """Fit every network; ``stopping``, ``schedule``: the early-stopping and density-schedule arguments
        of :meth:`SparseMLP.fit` (fit only)."""
        cw = self._class_weight_indices()
        for net in nets:
            net.fit(X, y, epochs=epochs, initial_epoch=initial_epoch, batch_size=p["batch_size"],
                    learning_rate=p["learning_rate"], momentum=p["momentum"], weight_decay=p["weight_decay"],
                    zeta=p["zeta"], verbose=p["verbose"], new_weights=self.new_weights, clip_norm=p["clip_norm"],
                    class_weight=cw, prune_inputs=p["prune_inputs"], prune_every=p["prune_every"],
                    min_inputs=p["min_inputs"], prune_start=p["prune_start"], prune_neurons=p["neurons"][0],
                    min_neurons=p["neurons"][1], label_smoothing=p.get("label_smoothing", 0.0),  # classifiers'
                    input_noise=p["input_noise"], **p["evolution"], **(stopping or {}), **(schedule or {}))

    def _fit(self, X, y):
        """Both estimators' :meth:`fit`."""
        p = self._check_params()
        X, y = self._validate(X, y, reset=True)
        y_net = self._targets(y, first=True)
        nets = self._build(X.shape[1], p)
        self.batch_size_ = p["batch_size"] = self._auto_batch(p["batch_size"], X.shape[0])
        self._train(nets, X, y_net, p, epochs=p["epochs"], initial_epoch=0, stopping=p["stopping"],
                    schedule=p["schedule"])
        self.networks_ = nets
        return self

    def _partial_fit(self, p, X, y_net, first):
        """One epoch of :meth:`partial_fit` on validated ``X`` and the networks' targets ``y_net``."""
        if p["schedule"]["final_fraction"] < 1:
            raise ValueError("final_fraction < 1 schedules the density over a fit's epochs: partial_fit has no "
                             "end to schedule towards; use fit")
        if p["schedule"]["lr_schedule"] != "constant":
            raise ValueError(f"lr_schedule={p['schedule']['lr_schedule']!r} decays the learning rate over a fit's "
                             "epochs: partial_fit has no end to schedule towards; use fit or 'constant'")
        if first:
            nets = self._build(X.shape[1], p)
            self.batch_size_ = self._auto_batch(p["batch_size"], X.shape[0])
        else:
            nets = self.networks_
            for net in nets:  # what fit does between two epochs: prune (on its schedule), then evolve
                net.set_n_threads(p["n_threads"])
                net._rewire(net.epochs_trained_, p["zeta"],
                            (p["prune_inputs"], p["prune_every"], p["min_inputs"], p["prune_start"]),
                            new_weights=self.new_weights, **p["evolution"], neurons=p["neurons"],
                            data=(X, y_net, self._auto_batch(p["batch_size"], X.shape[0])))
        done = nets[0].epochs_trained_
        p["batch_size"] = self._auto_batch(p["batch_size"], X.shape[0])
        self._train(nets, X, y_net, p, epochs=done + 1, initial_epoch=done)
        self.networks_ = nets
        return self

    # ------------------------------------------------------------------------------------------
    # inference
    def _batched(self, X, fn):
        """``fn(rows, batch)`` over ``X`` (validated, dense or CSR) in chunks of a multiple of
        ``batch_size_`` dense rows, the last batch zero-padded, so that a sample's result never
        depends on the other samples passed with it; float64, one row per sample."""
        B = self.batch_size_
        n = X.shape[0]
        chunk = max(B, _PREDICT_CHUNK_ROWS // B * B)
        res = np.empty((n, self._n_outputs()), np.float64)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            Xc = X[start:stop]
            Xc = Xc.toarray() if sp.issparse(Xc) else Xc
            pad = -(stop - start) % B
            if pad:
                Xc = np.concatenate([Xc, np.zeros((pad, Xc.shape[1]), Xc.dtype)])
            res[start:stop] = fn(Xc, B)[:stop - start]
        return res

    def _check_X(self, X):
        check_is_fitted(self)
        return validate_data(self, X, reset=False, accept_sparse="csr", dtype=np.float32, order="C")

    # ------------------------------------------------------------------------------------------
    # fitted attributes read from the network
    @property
    def network_(self):
        check_is_fitted(self)
        return self.networks_[0]

    @property
    def loss_curve_(self):
        check_is_fitted(self)
        curves = [net.history_["loss"] for net in self.networks_]  # lengths differ after early stopping
        return [float(np.mean([c[i] for c in curves if i < len(c)])) for i in range(max(map(len, curves)))]

    @property
    def n_iter_(self):
        check_is_fitted(self)
        return int(self.network_.epochs_trained_)

    @property
    def coefs_(self):
        check_is_fitted(self)
        return self.network_.weights

    @property
    def intercepts_(self):
        check_is_fitted(self)
        return self.network_.biases

    @property
    def linear_coef_(self):
        check_is_fitted(self)
        return self.network_.linear_weights

    @property
    def feature_importances_(self):
        check_is_fitted(self)
        return np.mean([net.input_strength(normalize=True) for net in self.networks_], axis=0)

    # ------------------------------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def __getstate__(self):
        # Pickle the network without its per-batch work buffers (they are reallocated on first use).
        state = dict(super().__getstate__())
        nets = state.get("networks_")
        if nets is not None:
            state["networks_"] = [copy.copy(net) for net in nets]
            for net in state["networks_"]:
                net._buffers = None
                net._buffer_batch = 0
        return state


class SETClassifier(ClassifierMixin, _SETBase):
    """Truly sparse multilayer perceptron classifier trained with Sparse Evolutionary Training.

    A scikit-learn estimator around :class:`set_cy.SparseMLP`: every layer is a sparse Erdős–Rényi
    graph from the start, trained with mini-batch SGD (momentum, L2 weight decay, dropout) and
    rewired after every epoch but the last (the fraction ``zeta`` of each layer's weakest
    connections is replaced by random new ones).

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (200, 200)
        Neurons of each hidden layer; ``()`` gives a single sparse layer from inputs to classes.
    epsilon : float, default 20
        Sparsity level: a layer gets ``epsilon * (n_in + n_out)`` connections (at most all
        ``n_in * n_out``).
    zeta : float in [0, 1), default 0.3
        Fraction of each layer's connections replaced after every epoch (0: static sparse network).
    activation : {"relu", "leaky_relu", "all_relu", "sigmoid", "tanh"}, default "relu"
        Activation of the hidden layers.
    dropout : float in [0, 0.99], default 0.3
        Dropout rate of the hidden layers during training.
    batch_size : int or "auto", default "auto"
        Training mini-batch (the last, smaller batch of an epoch is kept); ``predict_proba`` runs in
        batches of this size too. ``"auto"``: ``n_samples // 64`` clipped to [16, 128], so that an
        epoch has about 64 steps on small data (16 for microarrays, 32 for Madelon's 2,080 samples).
    learning_rate : float > 0, default 0.01
    momentum : float in [0, 1], default 0.9
    weight_decay : float >= 0, default 2e-4
        L2 penalty on the connections (not on the biases).
    epochs : int, default 100
        Epochs of :meth:`fit`.
    max_iter : int or None, default None
        scikit-learn's name for ``epochs`` (the estimator checks and other tools that lengthen
        training set it): when given, it is the number of epochs of :meth:`fit` and ``epochs`` is
        ignored. None: ``epochs``.
    random_state : int, numpy.random.RandomState, numpy.random.Generator or None, default None
        Seed of the network (topology, initial values, dropout, shuffling, evolution). An int gives
        the same model on every fit, whatever ``n_jobs``; a RandomState or Generator is asked for
        one int seed per fit (so successive fits differ, reproducibly); None seeds from the OS.
    n_jobs : int or None, default None
        OpenMP threads of the kernels. None or -1: all cores; ``-k``: all cores but ``k - 1``
        (at least 1), as in joblib.
    verbose : int, default 0
        0: silent; 1: one line per epoch.
    n_estimators : int, default 3
        Independently seeded sparse networks trained on the same data; :meth:`predict_proba`
        averages their probabilities and ``feature_importances_`` their input strengths. Each
        network prunes its inputs on its own, so the ensemble also averages over the features
        kept. 3 is the recipe (bench/README.md): it costs three fits.
    class_weight : None, "balanced" or dict, default None
        Weights of the classes in the loss, as in scikit-learn: ``"balanced"`` weighs class ``c``
        by ``n_samples / (n_classes * count_c)`` (the counts of the ``y`` of each ``fit`` or
        ``partial_fit`` call); a dict maps class labels to weights (missing ones: 1).
    clip_norm : float > 0 or None, default 1.0
        Global L2 norm to which each batch's gradient is scaled down when larger (None: no
        clipping). Keeps training finite over the usual learning rates.
    new_weights : {"zeros", "init"}, default "zeros"
        Values of the connections grown by evolution: zero, or drawn like the initial ones.
    lr_scaling : {"none", "fan_in"}, default "none"
        Per-layer learning-rate scaling (see :class:`set_cy.SparseMLP`).
    prune_inputs : float in [0, 1), default 0
        Feature selection inside the network: every ``prune_every`` epochs the fraction
        ``prune_inputs`` of the inputs still in use, the weakest by strength, are switched off and
        their first-layer (and linear-path) connections moved to the others, down to ``min_inputs``
        inputs (see :meth:`set_cy.SparseMLP.prune_inputs`). The number of connections does not
        change. 0 (the default) turns it off: with the linear path, keeping every gene was better on
        the microarray sets (bench/README.md); data whose signal lives in a few features want it
        (Madelon: ``prune_inputs=0.3, min_inputs=10`` with ``linear_path=False``: with the linear
        path the network fits the linear part first and the pruning loses most of Madelon's relevant
        features). Tune it with ``min_inputs`` and ``linear_path`` as ``bench/bench_accuracy.py``
        does.
    prune_every : int, default 5
    prune_start : int >= 1 or None, default None
        Epochs trained before the first pruning step (None: ``prune_every``); then one every
        ``prune_every`` epochs.
    min_inputs : int, default 200
        The fewest inputs pruning keeps (all of them when there are fewer). Tune it like ``k`` of
        ``SelectKBest``: data whose signal lives in a handful of features want a low floor (Madelon, 20
        relevant features of 500: 10).
    prune_neurons : float in [0, 1), default 0
        Importance pruning of hidden neurons, on the schedule of input pruning (``prune_start``,
        ``prune_every``): the fraction ``prune_neurons`` of each hidden layer's weakest neurons are
        removed and the layers shrink, their connections regrown elsewhere (see
        :meth:`set_cy.SparseMLP.prune_neurons`), down to ``min_neurons`` per layer.
    min_neurons : int, default 1
    early_stopping : bool, default False
        :meth:`fit` holds out a stratified ``validation_fraction`` of the training data, stops when
        its accuracy has not improved by more than ``tol`` for ``n_iter_no_change`` epochs and keeps
        the best epoch's network (see :meth:`set_cy.SparseMLP.fit`); ``partial_fit`` ignores it.
        Off by default: with tens of samples a tenth is a handful, and it lost on all eight shared
        sets in the screening of bench/README.md (mean accuracy 0.688 against 0.832).
    validation_fraction : float in (0, 1), default 0.1
    n_iter_no_change : int, default 10
    tol : float >= 0, default 1e-4
    storage : {"full", "compact"}, default "full"
        How the layers keep their connections (see :class:`set_cy.SparseMLP`): ``"compact"`` keeps no
        transposed index, 8 bytes less per connection, for networks that would not fit otherwise.
    activation_dtype : {None, "bfloat16"}, default None
        Type of the copies of the hidden activations (and gradients) that the sparse products gather
        from (see :class:`set_cy.SparseMLP`): None trains exactly in float32; ``"bfloat16"`` reads
        half the bytes per gathered row, for very wide layers.
    linear_path : bool, default True
        Add a linear model beside the hidden layers: sparse connections from the inputs straight to
        the outputs, starting at zero, trained, rewired and pruned with the rest (see
        :class:`set_cy.SparseMLP`), so the network contains a (sparse) logistic regression on the genes
        it keeps. With up to about ``epsilon`` classes it holds every gene-class pair, so rewiring it
        only resets its weakest weights to zero (``bench/README.md`` measures what each path adds).
        ``feature_importances_`` counts their weights too. Ignored with ``hidden_layer_sizes=()``
        (that network is linear already).
    criterion : str or drop rule, default "signed"
        What evolution removes (:data:`set_cy.evolution.CRITERIA`: SET's signed magnitude,
        magnitude, momentum magnitude; or a :class:`set_cy.evolution.DropRule`).
    grow : str or grow rule, default "random"
        Where evolution grows (:data:`set_cy.evolution.GROW_RULES`): SET's uniform random positions, or
        ``"gradient"``, the largest ``|dL/dW|`` among ``grow_candidates`` times as many sampled free
        positions over one training batch (:class:`set_cy.evolution.GradientGrowth`).
    grow_candidates : int, default 10
        Sampled positions per new connection for ``grow="gradient"``.
    final_fraction : float in (0, 1], default 1.0
        Gradual density change (GraNet): below 1, each network ends :meth:`fit` with this fraction of
        the connections it started with (``epsilon`` sets the start), removed along a cubic schedule
        by the evolution steps (see :meth:`set_cy.SparseMLP.fit`). Not with :meth:`partial_fit`.
    lr_schedule : {"constant", "linear", "cosine"}, default "constant"
        Learning rate of each epoch of :meth:`fit`: ``learning_rate`` throughout, or decayed towards
        zero over the epochs (``"cosine"``: ``learning_rate * (1 + cos(pi * epoch / epochs)) / 2``; see
        :meth:`set_cy.SparseMLP.fit`). Not with :meth:`partial_fit`, which has no last epoch to decay to.
    label_smoothing : float in [0, 1), default 0
        Label smoothing of the cross-entropy (torch's name): each training sample aims at
        ``1 - label_smoothing + label_smoothing / n_classes`` for its class and
        ``label_smoothing / n_classes`` for each other one (see :meth:`set_cy.SparseMLP.fit`).
    input_noise : float >= 0, default 0
        Standard deviation of Gaussian noise added to the inputs of every training batch (fresh draws
        each batch; prediction sees the inputs as they are), in the units of ``X``: meant for
        standardised features, e.g. after a ``StandardScaler``. A regulariser for few samples; on the
        microarray sets of ``bench/README.md`` it made no measurable difference.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (sorted).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had string column names (a DataFrame).
    network_ : SparseMLP
        The (first) trained network (outputs in the order of ``classes_``).
    networks_ : list of SparseMLP
        All ``n_estimators`` trained networks.
    loss_curve_ : list of float
        Mean training loss of every epoch run (by ``fit`` and later ``partial_fit`` calls), measured
        during the epoch, with dropout (averaged over the networks).
    n_iter_ : int
        Epochs trained.
    batch_size_ : int
        The inference batch (the training batch of the first fit; ``"auto"`` resolved).
    coefs_ : list of scipy.sparse.csr_array
        Weights of each layer of ``network_``, shape ``(n_in, n_out)`` (copies).
    intercepts_ : list of ndarray
        Biases of each layer of ``network_`` (copies).
    linear_coef_ : scipy.sparse.csr_array of shape (n_features, n_outputs) or None
        Weights of the linear path of ``network_`` (a copy); None without one.
    feature_importances_ : ndarray of shape (n_features,)
        Strength of each input neuron, normalised to sum to 1 and averaged over the networks: the
        sum of ``|w|`` over its linear-path connections (without a linear path, its first-layer
        connections); zero for pruned inputs (:meth:`SparseNetwork.input_strength`, which says why
        the first layer does not count beside a linear path). The features SET kept strong
        connections to. Used by :class:`sklearn.feature_selection.SelectFromModel`.

    Notes
    -----
    ``X`` may be dense or scipy.sparse; it is converted to float32 and, for training, to one dense
    C-contiguous array (the network's input layer is sparse, its input batches are dense).
    ``predict_proba`` densifies at most a few thousand rows at a time, and pads the last batch, so
    that the probabilities of a sample never depend on which other samples are predicted with it.

    Examples
    --------
    >>> import numpy as np
    >>> from set_cy import SETClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 10)); y = np.where(X[:, 0] > 0, "yes", "no")
    >>> clf = SETClassifier(hidden_layer_sizes=(64,), epsilon=5, epochs=10, random_state=0).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
    """

    def __init__(self, hidden_layer_sizes=(200, 200), *, epsilon=20, zeta=0.3, activation="relu", dropout=0.3,
                 batch_size="auto", learning_rate=0.01, momentum=0.9, weight_decay=2e-4, epochs=100,
                 max_iter=None, random_state=None, n_jobs=None, verbose=0, n_estimators=3, class_weight=None,
                 clip_norm=1.0, new_weights="zeros", lr_scaling="none", prune_inputs=0.0, prune_every=5, min_inputs=200,
                 prune_start=None, early_stopping=False, validation_fraction=0.1, n_iter_no_change=10, tol=1e-4,
                 storage="full", activation_dtype=None, linear_path=True, criterion="signed", grow="random",
                 grow_candidates=10, final_fraction=1.0, prune_neurons=0.0, min_neurons=1, lr_schedule="constant",
                 label_smoothing=0.0, input_noise=0.0):
        self._set_params_from_init(locals())

    _loss = "cross_entropy"

    def _check_params(self):
        cw = self.class_weight
        if not (cw is None or (isinstance(cw, str) and cw == "balanced") or isinstance(cw, dict)):
            raise ValueError(f"class_weight must be None, 'balanced' or a dict, got {cw!r}")
        p = super()._check_params()
        p["label_smoothing"] = check_scalar(self.label_smoothing, "label_smoothing", min_val=0.0, max_val=1.0,
                                            include_max=False)
        return p

    # ------------------------------------------------------------------------------------------
    # data
    def _validate(self, X, y, reset):
        X, y = validate_data(self, X, y, reset=reset, accept_sparse="csr", dtype=np.float32, order="C")
        check_classification_targets(y)
        return X, y

    def _n_outputs(self):
        return self.classes_.size

    def _targets(self, y, first):
        """Class indices of the labels ``y`` (``first``: ``classes_`` taken from them)."""
        if first:
            self.classes_ = self._check_classes(y, "y")
        return self._encode(y)

    def _encode(self, y):
        """Indices of the labels ``y`` in ``classes_``; ValueError for labels not in ``classes_``."""
        idx = np.searchsorted(self.classes_, y)
        idx = np.minimum(idx, self.classes_.size - 1)
        unknown = self.classes_[idx] != y
        if np.any(unknown):
            raise ValueError(f"y holds labels not in classes_ {self.classes_.tolist()}: "
                             f"{np.unique(np.asarray(y)[unknown]).tolist()}")
        return idx.astype(np.int64)

    @staticmethod
    def _check_classes(classes, what):
        classes = np.unique(np.asarray(classes))
        if classes.size < 2:
            raise ValueError(f"SETClassifier needs at least 2 classes, got {classes.size} class in {what}")
        return classes

    def _class_weight_indices(self):
        """``class_weight`` with its dict keyed by class index (as :meth:`SparseMLP.fit` takes it)."""
        cw = self.class_weight
        if not isinstance(cw, dict):
            return cw
        unknown = [c for c in cw if c not in set(self.classes_.tolist())]
        if unknown:
            raise ValueError(f"class_weight names classes not in classes_ {self.classes_.tolist()}: {unknown}")
        return {int(np.searchsorted(self.classes_, c)): w for c, w in cw.items()}

    # ------------------------------------------------------------------------------------------
    # training
    def fit(self, X, y):
        """Build a new sparse network and train it for ``epochs`` (or ``max_iter``) epochs.

        The topology evolves after every epoch but the last, so the returned network has just been
        trained, not freshly rewired.

        Parameters
        ----------
        X : {array-like, scipy.sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels of any type (ints, strings, ...), at least two distinct ones.

        Returns
        -------
        self
        """
        return self._fit(X, y)

    def partial_fit(self, X, y, classes=None):
        """Train one epoch on ``(X, y)``; evolve the topology first if the network was trained before.

        The first call (on an unfitted estimator) builds the network; ``classes`` must list every
        class then. Every later call (after ``fit`` or ``partial_fit``) first does what ``fit`` does
        between two epochs: an input-pruning step when the epochs trained so far are ``prune_start``,
        ``prune_start + prune_every``, ..., and one SET step (the fraction ``zeta`` of each layer's
        weakest connections replaced by new random ones); then one epoch of SGD over ``(X, y)``,
        shuffled. So ``k`` calls on the same data give the network that ``fit`` with ``epochs=k``
        gives, and the returned network has always just been trained. The architecture parameters
        (``hidden_layer_sizes``, ``epsilon``, ``activation``, ``dropout``, ``random_state``,
        ``n_estimators``, ``lr_scaling``, ``linear_path``) take effect at the first call; the training
        parameters and ``n_jobs`` are read at every call.

        Parameters
        ----------
        X : {array-like, scipy.sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like, optional
            All class labels; required on the first call, and if given later it must equal
            ``classes_``.

        Returns
        -------
        self
        """
        p = self._check_params()
        first = not hasattr(self, "network_")
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            classes = self._check_classes(classes, "classes")
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes {np.unique(np.asarray(classes)).tolist()} differ from classes_ "
                             f"{self.classes_.tolist()} of the earlier fit")
        X, y = self._validate(X, y, reset=first)
        if first:
            self.classes_ = classes
        return self._partial_fit(p, X, self._encode(y), first)

    # ------------------------------------------------------------------------------------------
    # inference
    def predict_proba(self, X):
        """Class probabilities (softmax outputs), shape ``(n_samples, n_classes)``, float64.

        Columns follow ``classes_``. Runs in batches of ``batch_size`` (the last one padded), so a
        sample's probabilities do not depend on the other samples of ``X``.
        """
        proba = self._batched(self._check_X(X), lambda Xc, B: self._mean_proba(self.networks_, Xc, B))
        proba /= proba.sum(axis=1, keepdims=True)
        return proba

    @staticmethod
    def _mean_proba(nets, X, batch_size):
        """Mean of the networks' probabilities for dense float32 ``X`` (rows a multiple of ``batch_size``)."""
        proba = nets[0].predict_proba(X, batch_size=batch_size).astype(np.float64)
        for net in nets[1:]:
            proba += net.predict_proba(X, batch_size=batch_size)
        return proba / len(nets)

    def predict(self, X):
        """Predicted class labels (from ``classes_``), shape ``(n_samples,)``."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class SETRegressor(RegressorMixin, _SETBase):
    """Truly sparse multilayer perceptron regressor trained with Sparse Evolutionary Training.

    The regression counterpart of :class:`SETClassifier` (as scikit-learn's ``MLPRegressor`` is of
    ``MLPClassifier``): the same sparse networks, recipe and evolution, with one linear output per
    target, trained on half the squared error (:class:`set_cy.SparseMLP` with
    ``loss="squared_error"``). :meth:`fit` standardises the targets (each output by its mean and
    standard deviation over the training ``y``: ``y_mean_``, ``y_scale_``) and :meth:`predict` maps
    the outputs back, so the recipe's learning rate and gradient clipping hold whatever the units
    of ``y``.

    Parameters
    ----------
    hidden_layer_sizes, epsilon, zeta, activation, dropout, batch_size, learning_rate, momentum, \
weight_decay, epochs, max_iter, random_state, n_jobs, verbose, n_estimators, clip_norm, new_weights, \
lr_scaling, prune_inputs, prune_every, prune_start, min_inputs, early_stopping, validation_fraction, \
n_iter_no_change, tol, storage, activation_dtype, linear_path, criterion, grow, grow_candidates, \
final_fraction, prune_neurons, min_neurons, lr_schedule, input_noise
        As in :class:`SETClassifier`, with the same defaults; there is no ``class_weight`` nor
        ``label_smoothing``. With ``early_stopping``, the held-out fraction is drawn at random and its
        R² is watched instead of the accuracy. :meth:`predict` averages the ``n_estimators`` networks'
        outputs; the linear path makes each network contain a sparse linear regression.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had string column names (a DataFrame).
    n_outputs_ : int
        Targets per sample (1 for a one-dimensional ``y``).
    y_mean_, y_scale_ : ndarray of shape (n_outputs,)
        The standardisation of the targets (taken from the ``y`` of :meth:`fit`, or of the first
        :meth:`partial_fit` call); a constant target gets scale 1.
    network_, networks_, loss_curve_, n_iter_, batch_size_, coefs_, intercepts_, linear_coef_, \
feature_importances_
        As in :class:`SETClassifier` (``loss_curve_`` in standardised units).

    Examples
    --------
    >>> import numpy as np
    >>> from set_cy import SETRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((300, 10)); y = 3 * X[:, 0] - X[:, 1] + 100
    >>> reg = SETRegressor(hidden_layer_sizes=(64,), epsilon=5, epochs=30, random_state=0).fit(X, y)
    >>> reg.score(X, y) > 0.9
    True
    """

    def __init__(self, hidden_layer_sizes=(200, 200), *, epsilon=20, zeta=0.3, activation="relu", dropout=0.3,
                 batch_size="auto", learning_rate=0.01, momentum=0.9, weight_decay=2e-4, epochs=100,
                 max_iter=None, random_state=None, n_jobs=None, verbose=0, n_estimators=3,
                 clip_norm=1.0, new_weights="zeros", lr_scaling="none", prune_inputs=0.0, prune_every=5, min_inputs=200,
                 prune_start=None, early_stopping=False, validation_fraction=0.1, n_iter_no_change=10, tol=1e-4,
                 storage="full", activation_dtype=None, linear_path=True, criterion="signed", grow="random",
                 grow_candidates=10, final_fraction=1.0, prune_neurons=0.0, min_neurons=1, lr_schedule="constant",
                 input_noise=0.0):
        self._set_params_from_init(locals())

    _loss = "squared_error"

    # ------------------------------------------------------------------------------------------
    # data
    def _validate(self, X, y, reset):
        return validate_data(self, X, y, reset=reset, accept_sparse="csr", dtype=np.float32, order="C",
                             y_numeric=True, multi_output=True)

    def _n_outputs(self):
        return self.n_outputs_

    def _targets(self, y, first):
        """The standardised targets, ``(n_samples, n_outputs_)`` (``first``: the scaling taken from ``y``)."""
        y = np.asarray(y, dtype=np.float64)
        Y = y.reshape(y.shape[0], -1)
        if first:
            self._y_ndim = y.ndim
            self.n_outputs_ = Y.shape[1]
            self.y_mean_ = Y.mean(axis=0)
            scale = Y.std(axis=0)
            self.y_scale_ = np.where(scale > 0, scale, 1.0)
        elif Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} outputs; the estimator was fitted with {self.n_outputs_}")
        return (Y - self.y_mean_) / self.y_scale_

    # ------------------------------------------------------------------------------------------
    # training
    def fit(self, X, y):
        """Build new sparse networks and train them for ``epochs`` (or ``max_iter``) epochs.

        The topology evolves after every epoch but the last, so the returned networks have just been
        trained, not freshly rewired.

        Parameters
        ----------
        X : {array-like, scipy.sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Real targets.

        Returns
        -------
        self
        """
        return self._fit(X, y)

    def partial_fit(self, X, y):
        """Train one epoch on ``(X, y)``; evolve the topology first if the networks were trained before.

        As :meth:`SETClassifier.partial_fit` (``k`` calls on the same data give the model of
        :meth:`fit` with ``epochs=k``); the first call builds the networks and takes the targets'
        standardisation from its ``y``.

        Parameters
        ----------
        X : {array-like, scipy.sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)

        Returns
        -------
        self
        """
        p = self._check_params()
        first = not hasattr(self, "network_")
        X, y = self._validate(X, y, reset=first)
        return self._partial_fit(p, X, self._targets(y, first), first)

    # ------------------------------------------------------------------------------------------
    # inference
    def predict(self, X):
        """Predicted targets, float64: shape ``(n_samples,)`` after a fit on one-dimensional ``y``,
        else ``(n_samples, n_outputs_)``.

        The mean of the networks' outputs, mapped back to the units of ``y``. Runs in batches of
        ``batch_size`` (the last one padded), so a sample's prediction does not depend on the other
        samples of ``X``.
        """
        out = self._batched(self._check_X(X), lambda Xc, B: self._mean_outputs(self.networks_, Xc, B))
        pred = out * self.y_scale_ + self.y_mean_
        return pred.ravel() if self._y_ndim == 1 else pred

    @staticmethod
    def _mean_outputs(nets, X, batch_size):
        """Mean of the networks' (standardised) outputs for dense float32 ``X``."""
        out = nets[0].predict(X, batch_size=batch_size).astype(np.float64)
        for net in nets[1:]:
            out += net.predict(X, batch_size=batch_size)
        return out / len(nets)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
