"""Training loop: epochs, mini-batches, shuffling, the evolution schedule, callbacks and history.

:class:`SparseMLP` is the network of :mod:`set_cy.model` with ``fit``. A fit can be interrupted
(Ctrl-C, a callback) only between batches: a SIGINT that arrives during a batch is held until the
batch is done, so the model is always consistent, and :attr:`SparseMLP.train_state_` records where
the fit stopped (epoch, batch, the epoch's sample order), which ``fit(..., resume=True)`` continues
exactly.
"""
import contextlib
import logging
import signal
import threading
import time
import warnings

import numpy as np

from ._validation import check_int, check_scalar
from .evolution import (
    SCHEDULES,
    check_evolution_args,
    make_drop_rule,
    make_grow_rule,
    needs_gradient,
    shrink_at,
    zeta_at,
)
from .layers import SparseLayer
from .model import SparseNetwork
from .parallel import make_engine

__all__ = ["SparseMLP", "Callback", "History"]

logger = logging.getLogger("set_cy")


class Callback:
    """Hooks called by :meth:`SparseMLP.fit`; override what you need. ``model.stop_training = True``
    in a hook ends the fit after the current batch."""

    def on_train_begin(self, model, logs):
        pass

    def on_epoch_begin(self, model, epoch, logs):
        pass

    def on_batch_end(self, model, batch, logs):
        pass

    def on_epoch_end(self, model, epoch, logs):
        pass

    def on_train_end(self, model, logs):
        pass


class _FunctionCallback(Callback):
    def __init__(self, fn):
        self.fn = fn

    def on_epoch_end(self, model, epoch, logs):
        self.fn(model, epoch, logs)


class History(list):
    """Per-epoch records (dicts): epoch, loss, train_accuracy (both measured during the epoch, with
    dropout), val_accuracy, train_time, evolution_time, epoch_time, zeta; a regression network
    (``loss="squared_error"``) records no train_accuracy, and val_r2 instead of val_accuracy.
    ``history["loss"]`` gives one column."""

    def __getitem__(self, key):
        if isinstance(key, str):
            return [rec.get(key) for rec in self]
        return super().__getitem__(key)


class _ProgressLine(Callback):
    """One summary line per epoch on the "set_cy" logger or stdout (verbose >= 1)."""

    def on_epoch_end(self, model, epoch, logs):
        parts = [f"epoch {epoch + 1}/{logs['epochs']}", f"loss {logs['loss']:.4f}"]
        if logs.get("train_accuracy") is not None:
            parts.append(f"train acc {logs['train_accuracy']:.4f}")
        if logs.get("val_accuracy") is not None:
            parts.append(f"val acc {logs['val_accuracy']:.4f}")
        if logs.get("val_r2") is not None:
            parts.append(f"val R2 {logs['val_r2']:.4f}")
        parts.append(f"{logs['epoch_time']:.2f} s")
        if logs.get("evolution_time"):
            parts.append(f"evolve {logs['evolution_time']:.2f} s")
        print(" · ".join(parts), flush=True)


@contextlib.contextmanager
def _sigint_deferred():
    """Hold SIGINT while the block runs (main thread only); yields a flag list that records it."""
    caught = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        caught.append(signum)

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not allowed here: run without deferral
        yield caught
        return
    try:
        yield caught
    finally:
        signal.signal(signal.SIGINT, previous)


def _raise_interrupt(model, callbacks, logs):
    """End an interrupted fit at a consistent point: tell the callbacks, then raise KeyboardInterrupt."""
    for cb in callbacks:
        cb.on_train_end(model, {"interrupted": True, **logs})
    raise KeyboardInterrupt


def _stratified_holdout(y, fraction, rng):
    """Sorted ``(keep, held)`` sample indices: ``round(fraction * count)`` of each class held out, at least
    one of each class with two or more samples, at least one sample kept per class."""
    held = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = min(max(int(round(fraction * idx.size)), 1 if idx.size >= 2 else 0), idx.size - 1)
        if k > 0:
            held.append(rng.choice(idx, k, replace=False))
    held = np.sort(np.concatenate(held)) if held else np.empty(0, np.int64)
    if held.size == 0:
        raise ValueError("early_stopping needs a validation set: no class has two samples to hold one out")
    keep = np.setdiff1d(np.arange(y.size), held)
    return keep, held


def _random_holdout(n, fraction, rng):
    """Sorted ``(keep, held)`` sample indices: ``round(fraction * n)`` held out (at least one, one kept)."""
    if n < 2:
        raise ValueError("early_stopping needs a validation set: 2 or more samples to hold one out")
    held = np.sort(rng.choice(n, min(max(int(round(fraction * n)), 1), n - 1), replace=False))
    return np.setdiff1d(np.arange(n), held), held


class SparseMLP(SparseNetwork):
    """Truly sparse MLP trained with Sparse Evolutionary Training (SET).

    See :class:`set_cy.model.SparseNetwork` for the constructor's parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from set_cy import SparseMLP
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 30)).astype(np.float32); y = (X[:, 0] > 0).astype(int)
    >>> m = SparseMLP([30, 64, 2], epsilon=5, seed=0)
    >>> hist = m.fit(X, y, epochs=10, batch_size=16, verbose=0)
    >>> len(hist), m.score(X, y) > 0.8
    (10, True)
    """

    def __init__(self, layer_sizes, **kwargs):
        super().__init__(layer_sizes, **kwargs)
        self.stop_training = False
        self.history_ = History()
        self.train_state_ = None
        self.best_epoch_ = None  # the epoch whose weights early stopping restored

    # persistence of the training progress -------------------------------------------------------
    def _extra_state(self):
        state = super()._extra_state()
        state["history"] = list(self.history_)
        ts = self.train_state_
        if ts is not None:
            state["train_state"] = {k: v for k, v in ts.items() if k != "order"}
        return state

    def _set_extra_state(self, state):
        super()._set_extra_state(state)
        history = state.get("history", [])
        if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            raise ValueError("history must be a list of records (dicts)")
        ts = state.get("train_state")
        if ts is not None:
            if not isinstance(ts, dict):
                raise ValueError(f"train_state must be a dict or null, got {type(ts).__name__}")
            for key, low in (("epoch", 0), ("batch", 0), ("n_samples", 1), ("batch_size", 1)):
                check_int(ts.get(key), f"train_state.{key}", min_val=low)
            sums = ts.get("sums")
            if sums is not None and (not isinstance(sums, list) or len(sums) != 3
                                     or not all(isinstance(s, (int, float)) for s in sums)):
                raise ValueError(f"train_state.sums must be null or 3 numbers, got {sums!r}")
            if not isinstance(ts.get("backend", "openmp"), str):
                raise ValueError("train_state.backend must be a string")
            ts = {**ts, "order": None}  # the sample order comes only from the checked extra_order array
        self.history_ = History(history)
        self.train_state_ = ts

    def _extra_arrays(self):
        arrays = super()._extra_arrays()
        if self.train_state_ is not None and self.train_state_.get("order") is not None:
            arrays["order"] = self.train_state_["order"]
        return arrays

    def _set_extra_arrays(self, arrays):
        if self.train_state_ is not None and "order" in arrays:
            # the sample order of an interrupted epoch indexes the data unchecked on resume: a permutation
            order = np.asarray(arrays["order"])
            n = self.train_state_.get("n_samples")
            if (order.ndim != 1 or order.dtype.kind not in "iu" or not isinstance(n, int) or order.shape[0] != n
                    or not np.array_equal(np.sort(order), np.arange(n))):
                raise ValueError(f"extra_order must be a permutation of the {n} samples of the interrupted fit")
            self.train_state_["order"] = order.astype(np.int64)

    # ------------------------------------------------------------------------------------------
    def fit(self, X, y, *, epochs, batch_size=128, learning_rate=0.01, momentum=0.9, weight_decay=2e-4,
            nesterov=False, lr_schedule="constant", zeta=0.3, zeta_schedule="constant", criterion="signed",
            new_weights="zeros", evolve_output=True, validation_data=None, shuffle=True, callbacks=None, verbose=1,
            initial_epoch=0, resume=False, n_jobs=None, backend="openmp", client=None, local_steps=None,
            clip_norm=None, class_weight=None, label_smoothing=0.0, input_noise=0.0, prune_inputs=0.0, prune_every=5,
            min_inputs=200, prune_start=None, early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
            tol=1e-4, grow="random", grow_candidates=10, update_every=None, update_end=1.0, final_fraction=1.0,
            prune_neurons=0.0, min_neurons=1, keep_connections=True):
        """Train with mini-batch SGD and evolve the topology after every epoch but the last.

        Parameters
        ----------
        X : array-like (n_samples, n_features)
            float64 (or integer) input to a float32 network is converted once, here.
        y : array-like
            Integer labels in ``[0, n_classes)`` or one-hot rows; for a regression network
            (``loss="squared_error"``) real targets, ``(n_samples,)`` or ``(n_samples, n_outputs)``.
        epochs : int
            Index of the last epoch: the fit runs epochs ``initial_epoch .. epochs - 1``.
        batch_size : int, default 128
            The last, smaller batch of an epoch is kept.
        learning_rate, momentum, weight_decay : float
            SGD with heavy-ball momentum (``nesterov=True`` for Nesterov) and L2 weight decay on the
            connections (not on biases).
        lr_schedule : {"constant", "linear", "cosine"}, default "constant"
            Learning rate of each epoch: ``learning_rate`` throughout, or decayed towards zero over the
            epochs of the fit by the schedules of ζ (:func:`set_cy.evolution.zeta_at`: epoch ``e`` of
            ``epochs`` trains at ``learning_rate * (1 + cos(pi * e / epochs)) / 2`` for ``"cosine"``).
            The schedule runs over ``epochs``, so a fit resumed or started at ``initial_epoch`` goes on
            from where it stands.
        zeta : float, default 0.3
            Fraction of connections replaced after each epoch; ``zeta_schedule`` ("constant",
            "linear", "cosine") decays it over the epochs. ``zeta=0`` trains a static sparse network.
        criterion, new_weights, evolve_output
            See :meth:`evolve`.
        grow : str or grow rule, default "random"
            Where evolution grows connections (:meth:`evolve`): SET's uniform random positions, or
            ``"gradient"``: per layer the largest ``|dL/dW|`` among ``grow_candidates`` times as many
            sampled free positions, the gradient taken over ``batch_size`` training samples drawn at
            random after the epoch.
        grow_candidates : int, default 10
        update_every : int, optional
            Evolve every ``update_every`` mini-batches (counted from the first epoch, across epochs)
            instead of after every epoch, as RigL does (its ΔT). ``zeta_schedule`` then decays ζ over
            the steps, and no step happens after the fraction ``update_end`` of the training steps
            (RigL's T_end, 0.75 in its paper) nor after the last batch. Input pruning stays per epoch.
            Not with ``backend="dask"`` (its steps are rounds).
        update_end : float in (0, 1], default 1.0
        final_fraction : float in (0, 1], default 1.0
            Gradual density change (GraNet's prune-and-regrow): below 1, every evolution step of this
            fit also removes connections without regrowing them, so that each evolved layer ends the
            fit with ``final_fraction`` of the connections it started with (to within one per step),
            along the cubic schedule :func:`set_cy.evolution.density_at` over the fit's update steps
            (those after epochs ``1 .. epochs - 1``, or those of ``update_every``). Build the network
            denser than the target (e.g. ``epsilon=40`` and ``final_fraction=0.5`` end at the
            connections of ``epsilon=20``). Works with ``zeta=0`` too (gradual magnitude pruning).
            Needs ``backend="openmp"``; a resumed fit continues the schedule.
        validation_data : tuple (X_val, y_val), optional
            Accuracy on it after every epoch (``val_accuracy``; regression: R², ``val_r2``).
        shuffle : bool, default True
        callbacks : list of Callback or callables ``f(model, epoch, logs)`` (called at epoch end)
        verbose : int, default 1
            0: silent; 1: one line per epoch.
        initial_epoch : int, default 0
        resume : bool, default False
            Continue an interrupted fit from :attr:`train_state_` (epoch, batch and sample order),
            e.g. after :meth:`load` of a checkpoint written on interruption.
        n_jobs : int or None, default None
            Cores (or workers) for this fit, with joblib's meaning (as everywhere in set_cy): a positive
            int; -1 all cores, ``-k`` all but ``k - 1`` (at least one). None: the network's
            ``n_threads`` for ``"openmp"``, all cores for ``"threads"``/``"processes"``, every worker
            of the cluster for ``"dask"``.
        backend : {"openmp", "threads", "processes", "dask"}, default "openmp"
            How the cores share a step (see :mod:`set_cy.parallel`): ``"openmp"`` splits every kernel
            over threads (fastest on one machine, docs/guide/parallel.md); ``"threads"`` and ``"processes"`` split
            each mini-batch into ``n_jobs`` shards whose gradients are merged before one update;
            ``"dask"`` trains local copies on data shards and averages them (local SGD).
        client : distributed.Client or str, optional
            ``backend="dask"``: the cluster (a client or a scheduler address); by default a
            ``LocalCluster`` of ``n_jobs`` single-threaded worker processes on 127.0.0.1, closed at the end.
        local_steps : int, optional
            ``backend="dask"``: mini-batches each worker trains between two averagings (default: its
            whole shard of the epoch, one round per epoch).
        clip_norm : float > 0, optional
            Scale each batch's gradient (all layers, weights and biases) down to this global L2 norm
            when it is larger; a batch whose gradient is not finite is skipped. Keeps training finite
            at large learning rates; costs a gradient buffer per layer and an unfused update.
        class_weight : None, "balanced", dict or array-like, optional
            Weight of each class in the loss (scikit-learn's meaning): ``"balanced"`` gives class
            ``c`` the weight ``n_samples / (n_classes * count_c)``; a dict maps class indices to
            weights (missing ones: 1).
        label_smoothing : float in [0, 1), default 0
            Cross-entropy against smoothed targets (as torch's ``CrossEntropyLoss``): a sample of class
            ``c`` aims at ``1 - label_smoothing + label_smoothing / k`` for ``c`` and
            ``label_smoothing / k`` for each other of the ``k`` classes, so the outputs stop short of
            certainty on the training data. Classification networks (``loss="cross_entropy"``) only.
        input_noise : float >= 0, default 0
            Standard deviation of Gaussian noise added to every input of every training batch (fresh
            draws each batch, from the network's generator; inputs switched off by input pruning stay
            zero), a regulariser for few samples; in the units of ``X``, so meant for standardised
            features. Prediction and the validation data see the inputs as they are.
        prune_inputs : float in [0, 1), default 0
            Feature selection inside the network: every ``prune_every`` epochs (before that epoch's
            evolution step, never after the last epoch) the fraction ``prune_inputs`` of the inputs
            still in use, the weakest by strength, are switched off and their first-layer
            connections moved to the others (:meth:`prune_inputs`), down to ``min_inputs`` inputs.
        prune_every : int, default 5
        min_inputs : int, default 200
        prune_neurons : float in [0, 1), default 0
            Importance pruning of hidden neurons (WASAP-SGD's): at the epochs of input pruning
            (``prune_start``, then every ``prune_every`` epochs) the fraction ``prune_neurons`` of each
            hidden layer's neurons, the weakest by :meth:`neuron_strength`, are removed and the layers
            shrink (:meth:`prune_neurons`), down to ``min_neurons`` per layer. With
            ``keep_connections`` their connections regrow at random elsewhere in the same layers
            (zero weights), so the connection count is kept; without, the network loses them. The
            history records ``layer_sizes`` after every epoch; checkpoints hold the shrunk layers.
        min_neurons : int, default 1
        keep_connections : bool, default True
        prune_start : int >= 1 or None, default None
            Epochs trained before the first pruning step; then one every ``prune_every`` epochs
            (pruning happens after epochs ``prune_start``, ``prune_start + prune_every``, ...).
            None: ``prune_every``. A later start lets the network learn which inputs matter before
            the strength ranking removes any.
        early_stopping : bool, default False
            Stop when the validation accuracy has not improved by more than ``tol`` for
            ``n_iter_no_change`` epochs, and end with the weights, topology and input mask of the best
            epoch (as they were before that epoch's evolution step); :attr:`best_epoch_` says which.
            The validation set is ``validation_data`` when given, else a stratified fraction
            ``validation_fraction`` of ``(X, y)`` held out from training (at least one sample per
            class that has two or more; for regression a random fraction), drawn with the network's
            generator. Regression watches R² instead of accuracy.
        validation_fraction : float in (0, 1), default 0.1
        n_iter_no_change : int, default 10
        tol : float, default 1e-4

        The options ``clip_norm``, ``class_weight``, ``label_smoothing``, ``input_noise`` and input pruning
        (and a network whose inputs were pruned, one with ``storage="compact"`` or with a linear path) need
        ``backend="openmp"``.

        Returns
        -------
        History
            The records of the epochs run by this call (all records are in ``history_``).
        """
        X = self._check_X(X)
        y = self._check_y(y, X.shape[0])
        n = X.shape[0]
        epochs = check_int(epochs, "epochs", min_val=1)
        batch_size = check_int(batch_size, "batch_size", min_val=1)
        lr = check_scalar(learning_rate, "learning_rate", min_val=0.0)
        momentum = check_scalar(momentum, "momentum", min_val=0.0, max_val=1.0)
        weight_decay = check_scalar(weight_decay, "weight_decay", min_val=0.0)
        if zeta_schedule not in SCHEDULES:
            raise ValueError(f"zeta_schedule must be one of {SCHEDULES}, got {zeta_schedule!r}")
        if lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {lr_schedule!r}")
        zeta = check_evolution_args(zeta, criterion, new_weights, below_one=True)
        grow = make_grow_rule(grow, grow_candidates)
        if update_every is not None:
            update_every = check_int(update_every, "update_every", min_val=1)
            if backend == "dask":
                raise ValueError("update_every needs a backend whose steps are mini-batches, not backend='dask'")
        update_end = check_scalar(update_end, "update_end", min_val=0.0, max_val=1.0, include_min=False)
        final_fraction = check_scalar(final_fraction, "final_fraction", min_val=0.0, max_val=1.0, include_min=False)
        prune_neurons = check_scalar(prune_neurons, "prune_neurons", min_val=0.0, max_val=1.0, include_max=False)
        min_neurons = check_int(min_neurons, "min_neurons", min_val=1)
        if not isinstance(keep_connections, (bool, np.bool_)):
            raise ValueError(f"keep_connections must be a bool, got {keep_connections!r}")
        if clip_norm is not None:
            clip_norm = check_scalar(clip_norm, "clip_norm", min_val=0.0, include_min=False)
        cw = self._class_weights(class_weight, y)
        smoothing = check_scalar(label_smoothing, "label_smoothing", min_val=0.0, max_val=1.0, include_max=False)
        if smoothing > 0 and self.loss != "cross_entropy":
            raise ValueError(f"label_smoothing needs loss='cross_entropy', this network has loss={self.loss!r}")
        input_noise = check_scalar(input_noise, "input_noise", min_val=0.0)
        prune_inputs = check_scalar(prune_inputs, "prune_inputs", min_val=0.0, max_val=1.0, include_max=False)
        prune_every = check_int(prune_every, "prune_every", min_val=1)
        min_inputs = check_int(min_inputs, "min_inputs", min_val=1)
        if prune_start is not None:
            prune_start = check_int(prune_start, "prune_start", min_val=1)
        if backend != "openmp":
            used = [name for name, on in (("clip_norm", clip_norm is not None), ("class_weight", cw is not None),
                                          ("label_smoothing", smoothing > 0),
                                          ("input_noise", input_noise > 0),
                                          ("prune_inputs", prune_inputs > 0),
                                          ("final_fraction < 1", final_fraction < 1),
                                          ("prune_neurons", prune_neurons > 0),
                                          ("storage='compact'", self.storage == "compact"),
                                          ("linear_path", self.linear_layer is not None),
                                          ("a network with pruned inputs", self.input_mask_ is not None)) if on]
            if used:
                raise ValueError(f"{', '.join(used)} need backend='openmp', got backend={backend!r}")
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("validation_data must be a tuple (X_val, y_val)")
            X_val = self._check_X(validation_data[0], "X_val")
            y_val = self._check_y(validation_data[1], X_val.shape[0], "y_val")
        stopping = None
        if not isinstance(early_stopping, (bool, np.bool_)):
            raise ValueError(f"early_stopping must be a bool, got {early_stopping!r}")
        if early_stopping:
            validation_fraction = check_scalar(validation_fraction, "validation_fraction", min_val=0.0,
                                               max_val=1.0, include_min=False, include_max=False)
            stopping = (check_int(n_iter_no_change, "n_iter_no_change", min_val=1),
                        check_scalar(tol, "tol", min_val=0.0))
            if resume:
                raise ValueError("early_stopping cannot resume an interrupted fit (its best epoch is not saved)")
            if validation_data is None:
                keep, held = (_random_holdout(n, validation_fraction, self.rng) if self.is_regression
                              else _stratified_holdout(y, validation_fraction, self.rng))
                X_val, y_val, X, y = X[held], y[held], X[keep], y[keep]
                validation_data, n = (X_val, y_val), keep.size
        batch_size = int(min(batch_size, n))
        cbs = [c if isinstance(c, Callback) else _FunctionCallback(c) for c in (callbacks or [])]
        if verbose:
            cbs.append(_ProgressLine())

        start_epoch, start_batch, order = int(initial_epoch), 0, None
        if resume:
            ts = self.train_state_
            if not ts:
                raise ValueError("resume=True but the model holds no interrupted fit (train_state_ is None)")
            if ts.get("n_samples") != n:
                raise ValueError(f"resume=True: the interrupted fit had {ts.get('n_samples')} samples, got {n}")
            start_epoch, start_batch, order = int(ts["epoch"]), int(ts["batch"]), ts.get("order")
            batch_size = int(ts["batch_size"])
            if start_epoch >= epochs:
                raise ValueError(f"resume=True: the interrupted fit is at epoch {start_epoch}, epochs={epochs}")
        if resume and (ts.get("backend", "openmp") == "dask") != (backend == "dask"):
            raise ValueError(f"resume=True: the interrupted fit used backend={ts.get('backend', 'openmp')!r}; "
                             "steps of backend='dask' are rounds, not batches: resume with the same kind")
        engine = make_engine(self, X, y, batch_size, backend=backend, n_jobs=n_jobs, client=client,
                             local_steps=local_steps)
        try:
            return self._fit_loop(engine, X, y, n, epochs, batch_size, start_epoch, start_batch, order, resume,
                                  cbs, shuffle, None if validation_data is None else (X_val, y_val),
                                  self._hyper(lr, momentum, weight_decay, nesterov, clip_norm, cw, smoothing,
                                              input_noise),
                                  zeta, zeta_schedule, criterion, new_weights, evolve_output,
                                  (prune_inputs, prune_every, min_inputs, prune_start), stopping, grow=grow,
                                  steps=None if update_every is None else (update_every, update_end),
                                  final_fraction=final_fraction, neurons=(prune_neurons, min_neurons,
                                                                          bool(keep_connections)),
                                  lr_schedule=lr_schedule)
        finally:
            engine.close()

    @staticmethod
    def _hyper(lr, momentum, weight_decay, nesterov, clip_norm, class_weight, label_smoothing=0.0, input_noise=0.0):
        """The step's hyper-parameters, as the engines pass them to the model (the new options only when set)."""
        hp = {"learning_rate": lr, "momentum": momentum, "weight_decay": weight_decay, "nesterov": bool(nesterov)}
        if clip_norm is not None:
            hp["clip_norm"] = clip_norm
        if class_weight is not None:
            hp["class_weight"] = class_weight
        if label_smoothing > 0:
            hp["label_smoothing"] = label_smoothing
        if input_noise > 0:
            hp["input_noise"] = input_noise
        return hp

    def _class_weights(self, class_weight, y):
        """Per-class loss weights (array of the model's dtype) or None, from ``class_weight``."""
        k = self.layer_sizes[-1]
        if class_weight is None:
            return None
        if self.is_regression:
            raise ValueError('class_weight needs a classifier; this network regresses (loss="squared_error")')
        if isinstance(class_weight, str):
            if class_weight != "balanced":
                raise ValueError(f"class_weight must be None, 'balanced', a dict or an array, got {class_weight!r}")
            counts = np.bincount(y, minlength=k).astype(np.float64)
            w = np.where(counts > 0, y.shape[0] / (k * np.maximum(counts, 1)), 1.0)
        elif isinstance(class_weight, dict):
            w = np.ones(k)
            for c, v in class_weight.items():
                c = check_int(c, "a class_weight key", min_val=0, max_val=k - 1)
                w[c] = check_scalar(v, f"class_weight[{c}]", min_val=0.0)
        else:
            w = np.asarray(class_weight, dtype=np.float64)
            if w.shape != (k,) or not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError(f"class_weight must hold {k} finite non-negative weights, got {class_weight!r}")
        return w.astype(self.dtype)

    def _snapshot(self):
        """Copies of every layer's arrays, of the layer sizes and of the input mask (for early stopping)."""
        mask = None if self.input_mask_ is None else self.input_mask_.copy()
        return ([{k: v.copy() for k, v in layer.arrays().items()} for layer in self.trained_layers], mask,
                list(self.layer_sizes))

    def _restore(self, snapshot):
        """Put back a :meth:`_snapshot`: in place (the arrays keep their identity: engines may share them),
        or, when the layers changed size since (neuron pruning, a density schedule), as the layers it holds."""
        layers, mask, sizes = snapshot
        if sizes == self.layer_sizes and all(getattr(layer, k).shape == v.shape for layer, arrays in
                                             zip(self.trained_layers, layers) for k, v in arrays.items()):
            for layer, arrays in zip(self.trained_layers, layers):
                for k, v in arrays.items():
                    getattr(layer, k)[...] = v
        else:  # only with backend="openmp", whose layers no engine shares
            self._release_buffers()
            for i, (layer, arrays) in enumerate(zip(self.trained_layers, layers)):
                new = SparseLayer(layer.n_in if i == len(self.layers) else sizes[i],
                                  layer.n_out if i == len(self.layers) else sizes[i + 1], **arrays, init=layer.init,
                                  n_threads=layer.n_threads, trusted=True, storage=layer.storage,
                                  use_bias=layer.use_bias)
                if i == len(self.layers):
                    self.linear_layer = new
                else:
                    self.layers[i] = new
            self.layer_sizes = list(sizes)
            self._set_lr_scales()
        self._set_input_mask(mask)

    def _rewire(self, epochs_done, zeta, pruning, *, criterion="signed", new_weights="zeros", evolve_output=True,
                grow="random", data=None, shrink=0.0, neurons=(0.0, 1, True)):
        """What happens between two epochs: input and neuron pruning on their schedule, then one evolution step.

        ``pruning = (fraction, every, min_inputs, start)`` prunes inputs when ``epochs_done`` is ``start``,
        ``start + every``, ... (``start`` None: ``every``), ``neurons = (fraction, min_neurons,
        keep_connections)`` hidden neurons at the same epochs; ``zeta > 0`` evolves. Used by :meth:`fit` and by
        ``SETClassifier.partial_fit``, so that ``k`` one-epoch calls train the network of one
        ``k``-epoch fit. A grow rule that needs the gradient takes it over ``batch_size`` samples of
        ``data = (X, y, batch_size)`` drawn at random; ``shrink``: see :meth:`evolve`. Returns whether the
        topology changed.
        """
        fraction, every, min_inputs, start = pruning
        start = every if start is None else start
        changed = False
        if epochs_done >= start and (epochs_done - start) % every == 0:
            if fraction > 0:
                changed = self.prune_inputs(fraction, min_inputs=min_inputs, new_weights=new_weights) > 0
            if neurons[0] > 0:
                changed |= sum(self.prune_neurons(neurons[0], min_neurons=neurons[1], regrow=neurons[2],
                                                  new_weights=new_weights)) > 0
        if zeta > 0 or shrink > 0:
            self._evolve_step(zeta, criterion=criterion, new_weights=new_weights, evolve_output=evolve_output,
                              grow=grow, data=data, shrink=shrink)
            changed = True
        return changed

    def _evolve_step(self, zeta, *, criterion, new_weights, evolve_output, grow, data, shrink=0.0):
        """One :meth:`evolve` with the fit's rules; a grow rule that needs the gradient takes it over
        ``batch_size`` samples of ``data = (X, y, batch_size)`` drawn at random."""
        batch = None
        if needs_gradient(grow, make_drop_rule(criterion)):
            X, y, batch_size = data
            n = X.shape[0]
            batch = (X, y, np.sort(self.rng.choice(n, min(batch_size, n), replace=False)))
        self.evolve(zeta, criterion=criterion, new_weights=new_weights, evolve_output=evolve_output, grow=grow,
                    batch=batch, shrink=shrink)

    def _fit_loop(self, engine, X, y, n, epochs, batch_size, start_epoch, start_batch, order, resume, cbs,
                  shuffle, validation_data, hp, zeta, zeta_schedule, criterion, new_weights, evolve_output,
                  pruning, stopping=None, grow="random", steps=None, final_fraction=1.0, neurons=(0.0, 1, True),
                  lr_schedule="constant"):
        self._ensure_buffers(batch_size)
        self.stop_training = False
        self.best_epoch_ = None
        best, stale = None, 0  # early stopping: (val_accuracy, epoch, snapshot), epochs without improvement
        records = History()
        n_batches = engine.n_steps()
        logs = {"epochs": epochs, "n_batches": n_batches, "batch_size": batch_size, "n_samples": n,
                "backend": engine.backend}
        for cb in cbs:
            cb.on_train_begin(self, logs)
        sums = (0.0, 0, 0)
        diverged = False
        if resume and self.train_state_.get("sums"):
            sums = tuple(self.train_state_["sums"])
        total_steps = epochs * n_batches
        # the update steps of the fit, counted for the density schedule (final_fraction)
        n_updates = (epochs - 1 if steps is None
                     else int(min(total_steps - 1, steps[1] * total_steps) // steps[0]))
        if final_fraction < 1:
            if n_updates == 0:
                raise ValueError(f"final_fraction={final_fraction:g} needs update steps: this fit has none "
                                 "(train more than one epoch, or lower update_every)")
            first = shrink_at(final_fraction, 1, n_updates)  # the schedule's largest cut
            if zeta + first >= 1:
                raise ValueError(f"final_fraction={final_fraction:g} over {n_updates} update step(s) removes "
                                 f"{first:.3f} of the connections at the first, which with zeta={zeta:g} is all "
                                 "of them: use more update steps, a larger final_fraction or a smaller zeta")
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            step_evo, z_step = 0.0, 0.0  # evolution within the epoch (update_every)
            # the epoch's learning rate: the schedules of zeta ("constant" gives it back), applied to it
            hp_epoch = {**hp, "learning_rate": zeta_at(hp["learning_rate"], epoch, epochs, lr_schedule)}
            if order is None:
                order = self.rng.permutation(n).astype(np.int64) if shuffle else np.arange(n, dtype=np.int64)
            for cb in cbs:
                cb.on_epoch_begin(self, epoch, logs)
            loss_sum, correct, seen = sums
            for b in range(start_batch, n_batches):
                with _sigint_deferred() as caught:
                    b_loss, ok, b_seen = engine.step(order, b, hp_epoch)
                    loss_sum += b_loss
                    correct += ok
                    seen += b_seen
                    done = epoch * n_batches + b + 1
                    if (steps is not None and (zeta > 0 or final_fraction < 1) and done % steps[0] == 0
                            and done < total_steps and done <= steps[1] * total_steps):
                        t1 = time.perf_counter()
                        z_step = zeta_at(zeta, done, total_steps, zeta_schedule)
                        self._evolve_step(z_step, criterion=criterion, new_weights=new_weights,
                                          evolve_output=evolve_output, grow=grow, data=(X, y, batch_size),
                                          shrink=shrink_at(final_fraction, done // steps[0], n_updates))
                        engine.topology_changed()
                        self._ensure_buffers(batch_size)
                        step_evo += time.perf_counter() - t1
                    self.train_state_ = {"epoch": epoch, "batch": b + 1, "order": order, "n_samples": n,
                                         "batch_size": batch_size, "sums": [loss_sum, correct, seen],
                                         "backend": engine.backend}
                if caught:
                    _raise_interrupt(self, cbs, logs)
                blogs = {"batch_loss": b_loss / max(b_seen, 1), "loss": loss_sum / max(seen, 1), **logs}
                for cb in cbs:
                    cb.on_batch_end(self, b, blogs)
                if self.stop_training:
                    break
            if self.stop_training and seen < n:
                break  # interrupted inside the epoch: train_state_ says where
            train_time = time.perf_counter() - t0 - step_evo
            rec = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_time": train_time}
            if not self.is_regression:
                rec["train_accuracy"] = correct / seen
            if not np.isfinite(rec["loss"]) and not diverged:
                diverged = True
                msg = (f"training diverged: the mean loss of epoch {epoch + 1} is {rec['loss']} (weights or "
                       f"activations overflowed); lower learning_rate (now {hp['learning_rate']:g})")
                logger.warning(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
            val_key = "val_r2" if self.is_regression else "val_accuracy"
            if validation_data is not None:
                rec[val_key] = self.score(*validation_data, batch_size=batch_size)
            stop_early = False
            if stopping is not None:  # scikit-learn's rule: patience against best + tol, any gain is kept
                score = rec[val_key]
                stale = stale + 1 if best is not None and score < best[0] + stopping[1] else 0
                if best is None or score > best[0]:
                    best = (score, epoch + 1, self._snapshot())
                stop_early = stale >= stopping[0]
            evo_time, z = step_evo, z_step
            with _sigint_deferred() as caught:
                if epoch < epochs - 1 and not stop_early:
                    if steps is None:
                        z = zeta_at(zeta, epoch, epochs, zeta_schedule) if zeta > 0 else 0.0
                    t1 = time.perf_counter()
                    per_epoch = 0.0 if steps is not None else z  # update_every: evolution happened in the epoch
                    shrink = shrink_at(final_fraction, epoch + 1, n_updates) if steps is None else 0.0
                    if self._rewire(epoch + 1, per_epoch, pruning, criterion=criterion, new_weights=new_weights,
                                    evolve_output=evolve_output, grow=grow, data=(X, y, batch_size), shrink=shrink,
                                    neurons=neurons):
                        engine.topology_changed()
                    evo_time += time.perf_counter() - t1
                rec.update(zeta=z, evolution_time=evo_time, epoch_time=time.perf_counter() - t0,
                           n_inputs=int(self.active_inputs().size), n_connections=self.n_connections,
                           layer_sizes=list(self.layer_sizes))
                self.epochs_trained_ = epoch + 1
                self.train_state_ = {"epoch": epoch + 1, "batch": 0, "order": None, "n_samples": n,
                                     "batch_size": batch_size, "sums": None}
            records.append(rec)
            self.history_.append(rec)
            order, start_batch, sums = None, 0, (0.0, 0, 0)
            for cb in cbs:
                cb.on_epoch_end(self, epoch, {**logs, **rec})
            if caught:
                _raise_interrupt(self, cbs, logs)
            if self.stop_training or stop_early:
                break
        if best is not None:  # also after a callback's stop: an early-stopping fit cannot be resumed anyway
            self._restore(best[2])
            self.best_epoch_ = best[1]
            self.train_state_ = None
            logger.info("early stopping: the weights of epoch %d (validation score %.4f) restored", best[1],
                        best[0])
        if not self.stop_training:
            self.train_state_ = None
        for cb in cbs:
            cb.on_train_end(self, logs)
        return records
