"""scikit-learn face of set_cy: :class:`SETClassifier`, a truly sparse MLP trained with SET.

This module imports scikit-learn (an optional dependency: ``pip install set_cy[sklearn]``);
``import set_cy`` does not, and ``set_cy.SETClassifier`` loads this module on first use.
"""
import copy
import logging
import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _kernels
from .activations import ACTIVATIONS
from .trainer import SparseMLP
from ._validation import check_scalar

__all__ = ["SETClassifier"]

logger = logging.getLogger("set_cy")

# Rows densified at a time by predict_proba (a multiple of the inference batch is used): bounds the
# dense copy of scipy.sparse input.
_PREDICT_CHUNK_ROWS = 4096


def _real(value, name, **bounds):
    """check_scalar, with a wrong type reported as a ValueError too (all bad parameters raise ValueError)."""
    try:
        return check_scalar(value, name, **bounds)
    except TypeError as exc:
        raise ValueError(str(exc)) from exc


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class SETClassifier(ClassifierMixin, BaseEstimator):
    """Truly sparse multilayer perceptron classifier trained with Sparse Evolutionary Training.

    A scikit-learn estimator around :class:`set_cy.SparseMLP`: every layer is a sparse Erdős–Rényi
    graph from the start, trained with mini-batch SGD (momentum, L2 weight decay, dropout) and
    rewired after every epoch but the last (the fraction ``zeta`` of each layer's weakest
    connections is replaced by random new ones).

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
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
    batch_size : int, default 32
        Training mini-batch (the last, smaller batch of an epoch is kept); ``predict_proba`` runs in
        batches of this size too.
    learning_rate : float > 0, default 0.01
    momentum : float in [0, 1], default 0.9
    weight_decay : float >= 0, default 2e-4
        L2 penalty on the connections (not on the biases).
    epochs : int, default 50
        Epochs of :meth:`fit`.
    random_state : int, numpy.random.RandomState, numpy.random.Generator or None, default None
        Seed of the network (topology, initial values, dropout, shuffling, evolution). An int gives
        the same model on every fit, whatever ``n_jobs``; a RandomState or Generator is asked for
        one int seed per fit (so successive fits differ, reproducibly); None seeds from the OS.
    n_jobs : int or None, default None
        OpenMP threads of the kernels. None or -1: all cores; ``-k``: all cores but ``k - 1``
        (at least 1), as in joblib.
    verbose : int, default 0
        0: silent; 1: one line per epoch.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (sorted).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had string column names (a DataFrame).
    network_ : SparseMLP
        The trained network (outputs in the order of ``classes_``).
    loss_curve_ : list of float
        Mean training loss of every epoch run (by ``fit`` and later ``partial_fit`` calls), measured
        during the epoch, with dropout.
    n_iter_ : int
        Epochs trained.
    coefs_ : list of scipy.sparse.csr_array
        Weights of each layer, shape ``(n_in, n_out)`` (copies).
    intercepts_ : list of ndarray
        Biases of each layer (copies).
    feature_importances_ : ndarray of shape (n_features_in_,)
        Strength of each input neuron (sum of ``|w|`` over its connections in the first layer),
        normalised to sum to 1: the features SET kept strong connections to. Used by
        :class:`sklearn.feature_selection.SelectFromModel`.

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

    def __init__(self, hidden_layer_sizes=(100,), *, epsilon=20, zeta=0.3, activation="relu", dropout=0.3,
                 batch_size=32, learning_rate=0.01, momentum=0.9, weight_decay=2e-4, epochs=50,
                 random_state=None, n_jobs=None, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.epsilon = epsilon
        self.zeta = zeta
        self.activation = activation
        self.dropout = dropout
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

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
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1:
                raise ValueError(f"hidden_layer_sizes must hold positive ints, got {h!r}")
        return [int(s) for s in sizes]

    def _n_threads(self):
        n = self.n_jobs
        if n is None:
            return None
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n == 0:
            raise ValueError(f"n_jobs must be a non-zero int or None, got {n!r}")
        if n < 0:
            return max(1, int(_kernels.max_threads()) + 1 + int(n))
        return int(n)

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

    def _check_params(self):
        """Validate every parameter (sklearn convention: here, not in __init__); return the resolved ones."""
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        zeta = _real(self.zeta, "zeta", min_val=0.0, max_val=1.0)
        if zeta >= 1.0:
            raise ValueError(f"zeta must be < 1, got {zeta}")
        if isinstance(self.verbose, bool) or not isinstance(self.verbose, numbers.Integral) or self.verbose < 0:
            raise ValueError(f"verbose must be a non-negative int, got {self.verbose!r}")
        return dict(
            hidden=self._hidden_sizes(),
            epsilon=_real(self.epsilon, "epsilon", min_val=0.0, include_min=False),
            zeta=zeta,
            dropout=_real(self.dropout, "dropout", min_val=0.0, max_val=0.99),
            batch_size=_positive_int(self.batch_size, "batch_size"),
            learning_rate=_real(self.learning_rate, "learning_rate", min_val=0.0, include_min=False),
            momentum=_real(self.momentum, "momentum", min_val=0.0, max_val=1.0),
            weight_decay=_real(self.weight_decay, "weight_decay", min_val=0.0),
            epochs=_positive_int(self.epochs, "epochs"),
            n_threads=self._n_threads(),
            verbose=int(self.verbose),
        )

    # ------------------------------------------------------------------------------------------
    # data
    def _validate(self, X, y, reset):
        X, y = validate_data(self, X, y, reset=reset, accept_sparse="csr", dtype=np.float32, order="C")
        check_classification_targets(y)
        return X, y

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

    def _build(self, n_features, p):
        net = SparseMLP([n_features, *p["hidden"], self.classes_.size], epsilon=p["epsilon"],
                        activation=self.activation, dropout=p["dropout"], seed=self._seed(),
                        n_threads=p["n_threads"])
        logger.debug("SETClassifier: %r", net)
        return net

    def _train(self, net, X, y, p, epochs, initial_epoch):
        net.fit(X, y, epochs=epochs, initial_epoch=initial_epoch, batch_size=p["batch_size"],
                learning_rate=p["learning_rate"], momentum=p["momentum"], weight_decay=p["weight_decay"],
                zeta=p["zeta"], verbose=p["verbose"])

    # ------------------------------------------------------------------------------------------
    # training
    def fit(self, X, y):
        """Build a new sparse network and train it for ``epochs`` epochs.

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
        p = self._check_params()
        X, y = self._validate(X, y, reset=True)
        self.classes_ = self._check_classes(y, "y")
        y_enc = self._encode(y)
        net = self._build(X.shape[1], p)
        self._train(net, X, y_enc, p, epochs=p["epochs"], initial_epoch=0)
        self.network_ = net
        return self

    def partial_fit(self, X, y, classes=None):
        """Train one epoch on ``(X, y)``; evolve the topology first if the network was trained before.

        The first call (on an unfitted estimator) builds the network; ``classes`` must list every
        class then. Every later call (after ``fit`` or ``partial_fit``) first runs one SET step (the
        fraction ``zeta`` of each layer's weakest connections replaced by new random ones), then
        one epoch of SGD over ``(X, y)``, shuffled. So ``k`` calls on the same data give the network
        that ``fit`` with ``epochs=k`` gives, and the returned network has always just been trained.
        The architecture parameters (``hidden_layer_sizes``, ``epsilon``, ``activation``,
        ``dropout``, ``random_state``) take effect at the first call; the training parameters and
        ``n_jobs`` are read at every call.

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
        y_enc = self._encode(y)
        if first:
            net = self._build(X.shape[1], p)
        else:
            net = self.network_
            net.set_n_threads(p["n_threads"])
            if p["zeta"] > 0:
                net.evolve(p["zeta"])
        done = net.epochs_trained_
        self._train(net, X, y_enc, p, epochs=done + 1, initial_epoch=done)
        self.network_ = net
        return self

    # ------------------------------------------------------------------------------------------
    # inference
    def predict_proba(self, X):
        """Class probabilities (softmax outputs), shape ``(n_samples, n_classes)``, float64.

        Columns follow ``classes_``. Runs in batches of ``batch_size`` (the last one padded), so a
        sample's probabilities do not depend on the other samples of ``X``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, accept_sparse="csr", dtype=np.float32, order="C")
        net = self.network_
        B = _positive_int(self.batch_size, "batch_size")
        n = X.shape[0]
        chunk = max(B, _PREDICT_CHUNK_ROWS // B * B)
        proba = np.empty((n, self.classes_.size), np.float64)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            Xc = X[start:stop]
            Xc = Xc.toarray() if sp.issparse(Xc) else Xc
            pad = -(stop - start) % B
            if pad:
                Xc = np.concatenate([Xc, np.zeros((pad, Xc.shape[1]), Xc.dtype)])
            proba[start:stop] = net.predict_proba(Xc, batch_size=B)[:stop - start]
        proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def predict(self, X):
        """Predicted class labels (from ``classes_``), shape ``(n_samples,)``."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    # ------------------------------------------------------------------------------------------
    # fitted attributes read from the network
    @property
    def loss_curve_(self):
        check_is_fitted(self)
        return [float(v) for v in self.network_.history_["loss"]]

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
    def feature_importances_(self):
        check_is_fitted(self)
        return self.network_.input_strength(normalize=True)

    # ------------------------------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def __getstate__(self):
        # Pickle the network without its per-batch work buffers (they are reallocated on first use).
        state = dict(super().__getstate__())
        net = state.get("network_")
        if net is not None:
            net = copy.copy(net)
            net._buffers = None
            net._buffer_batch = 0
            state["network_"] = net
        return state
