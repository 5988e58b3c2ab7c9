"""A truly sparse multilayer perceptron: sparse layers, activations, dropout, loss, evolution, I/O.

Everything in the hot loop runs on feature-major ``(units, batch)`` buffers that the network keeps
between batches (allocated once per batch size). The training loop (epochs, shuffling, schedules,
callbacks) lives in :mod:`set_cy.trainer`.
"""
import logging
import os

import numpy as np

from . import _kernels, hugepages
from ._validation import LAYER_ARRAYS, check_float_dtype, check_int, check_scalar, resolve_n_threads
from .activations import ACTIVATIONS, make_activation, softmax_inplace
from .evolution import check_evolution_args, make_drop_rule, make_grow_rule, needs_gradient
from .layers import INITS, SparseLayer
from .patterns import drop_entries, row_ids
from .persistence import read_network_file, write_network_file
from .sizing import (
    ALLOCATIONS,
    SCATTER_PARTS,
    allocate_connections,
    check_activation_dtype,
    check_fits,
    check_storage,
    layer_bytes,
    uses_scatter,
)

__all__ = ["SparseNetwork", "LOSSES", "LR_SCALINGS"]

logger = logging.getLogger("set_cy")

#: Losses of :class:`SparseNetwork`: softmax cross-entropy, mean squared error against one-hot labels,
#: half the squared error against real targets (regression).
LOSSES = ("cross_entropy", "mse", "squared_error")
#: Per-layer learning-rate scaling: none, or divided by each layer's mean fan-in (``"fan_in"``).
LR_SCALINGS = ("none", "fan_in")
# Inputs per neuron up to which "fan_in" lr scaling leaves a layer alone: a dense layer of about a thousand
# inputs is where plain SGD at lr ~0.01 is known to behave (the 784-1000-1000-1000-10 Fashion-MNIST MLP).
FAN_IN_REF = 1024.0


class SparseNetwork:
    """Truly sparse MLP: CSR weights only, from construction to the end of training.

    Parameters
    ----------
    layer_sizes : sequence of int
        Neurons per layer, input and output included, e.g. ``[784, 1000, 1000, 1000, 10]``.
    epsilon : float, default 20
        Sparsity level of the Erdős–Rényi topology: a layer gets ``epsilon * (n_in + n_out)``
        connections (at most ``n_in * n_out``).
    activation : {"relu", "leaky_relu", "all_relu", "sigmoid", "tanh"}, default "relu"
        Activation of the hidden layers.
    dropout : float in [0, 1), default 0.3
        Inverted-dropout rate on hidden layers during training (quantised to 1/256).
    init : {"he_uniform", "xavier", "normal"}, default "he_uniform"
        Distribution of initial (and regrown) weights; fans are those of the sparse layer.
    dtype : {"float32", "float64"}, default "float32"
    seed : int or None
        Seed of the network's random generator (topology, values, dropout, shuffling, evolution).
    n_threads : int or None
        OpenMP threads of the kernels; None or -1 uses all cores, ``-k`` all but ``k - 1`` (joblib's meaning).
    loss : {"cross_entropy", "mse", "squared_error"}, default "cross_entropy"
        Softmax + cross-entropy, or mean squared error on linear outputs against one-hot targets
        (both classify: ``y`` holds class labels), or ``"squared_error"``: regression, half the
        squared error of the linear outputs against real targets ``y`` of shape ``(n_samples,)``
        (one output) or ``(n_samples, n_outputs)``; :meth:`predict` gives the outputs and
        :meth:`score` the coefficient of determination R².
    allocation : {"er", "erk", "uniform"}, default "er"
        How connections are distributed over the layers (see :func:`allocate_connections`).
    activation_alpha : float or None
        Left slope of leaky_relu (default 0.01) or all_relu (default 0.6).
    lr_scaling : {"none", "fan_in"}, default "none"
        ``"fan_in"`` multiplies the learning rate of a layer by ``min(1, 1024 / fan_in)``
        (``fan_in``: mean inputs per neuron), so that layers with very many inputs per neuron (the
        dense output layer of a very wide network) take steps of bounded effect on their outputs.
    storage : {"full", "compact"}, default "full"
        How the layers keep their connections. ``"full"``: value, velocity, index, and a transposed
        index with its permutation for the backward product (20 bytes per connection with float32
        values and int32 indices). ``"compact"``: no transposed index (12 bytes per connection); the
        backward product scatters instead of gathering, which costs some speed (``bench/README.md``
        has the figures). Training computes the same thing either way (equal up to rounding); the
        data-parallel backends need ``"full"``.
    activation_dtype : {None, "bfloat16"}, default None
        Type of the copies of the hidden activations and of their gradients that the sparse products
        gather rows from. None: the network's dtype (exact training). ``"bfloat16"`` (float32 networks
        only): the products read each gathered row in half the bytes, rounded to bfloat16 (8
        significant bits), and still compute in float32; values, velocities, the input data, the
        outputs and the loss stay float32. The batch buffers take ``2 * batch`` more bytes per hidden
        neuron (:func:`set_cy.sizing.estimate_memory` counts them). ``bench/README.md`` has its speed
        and accuracy against exact training.
    linear_path : bool, default False
        Add a linear model beside the hidden layers ("wide and deep"): a sparse layer from the inputs
        straight to the outputs, whose products are added to the output layer's before the softmax
        (:attr:`linear_layer`; no bias of its own). It gets ``epsilon * (n_in + n_out)`` connections
        (at most all ``n_in * n_out``: dense for few classes), starts at zero, and is trained, rewired
        by :meth:`evolve` and pruned with the inputs like the other layers; input strength counts its
        connections too. So the network can represent a (sparse) logistic regression on its inputs.
        When it holds every input-output pair (``n_out`` up to about ``epsilon``), rewiring has no free
        cell to move to: an evolution step sets the dropped fraction of its weights to zero, and they
        train again from there.
        Needs at least one hidden layer and ``backend="openmp"``.
    """

    def __init__(self, layer_sizes, *, epsilon=20, activation="relu", dropout=0.3, init="he_uniform",
                 dtype="float32", seed=None, n_threads=None, loss="cross_entropy", allocation="er",
                 activation_alpha=None, lr_scaling="none", storage="full", activation_dtype=None, linear_path=False,
                 _layers=None, _linear=None):
        sizes = [int(s) for s in layer_sizes] if not isinstance(layer_sizes, (str, bytes)) else None
        if sizes is None or len(sizes) < 2 or any(s < 1 for s in sizes) or \
                any(not float(s).is_integer() for s in layer_sizes):
            raise ValueError(f"layer_sizes must be a sequence of >= 2 positive ints, got {layer_sizes!r}")
        self.layer_sizes = sizes
        self.epsilon = check_scalar(epsilon, "epsilon", min_val=0.0, include_min=False)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.dropout = check_scalar(dropout, "dropout", min_val=0.0, max_val=0.99)
        if init not in INITS[:3]:
            raise ValueError(f"init must be one of {INITS[:3]}, got {init!r}")
        self.init = init
        self.dtype = check_float_dtype(dtype)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss = loss
        if allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
        self.allocation = allocation
        self.activation_alpha = None if activation_alpha is None else check_scalar(
            activation_alpha, "activation_alpha", min_val=0.0, include_min=False)
        if lr_scaling not in LR_SCALINGS:
            raise ValueError(f"lr_scaling must be one of {LR_SCALINGS}, got {lr_scaling!r}")
        self.lr_scaling = lr_scaling
        self.storage = check_storage(storage)
        self.activation_dtype = check_activation_dtype(activation_dtype, self.dtype)
        if not isinstance(linear_path, (bool, np.bool_)):
            raise ValueError(f"linear_path must be a bool, got {linear_path!r}")
        if linear_path and len(sizes) < 3:
            raise ValueError("linear_path needs at least one hidden layer (without one the network is linear)")
        self.linear_path = bool(linear_path)
        self.n_threads = resolve_n_threads(n_threads)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._acts = [make_activation(activation, i, self.activation_alpha) for i in range(len(sizes) - 2)]
        self._buffers = None
        self._buffer_batch = 0
        self.epochs_trained_ = 0
        self.meta_ = {}  # JSON-serialisable user data saved with the model
        self.input_mask_ = None  # bool (n_features,) after prune_inputs: the inputs still in use
        self._inactive = None
        if _layers is not None:  # from_layers, which checked them
            bad = [i for i, layer in enumerate(_layers) if layer.storage != self.storage]
            if bad:
                raise ValueError(f"layers {bad} do not have storage={self.storage!r} (the network's storage)")
            self.layers = _layers
            for layer in self.layers:
                layer.n_threads = self.n_threads
        else:
            nnz = allocate_connections(sizes, self.epsilon, allocation)
            val = self.dtype.itemsize
            need = [layer_bytes(a, b, k, val, self.storage) for a, b, k in zip(sizes[:-1], sizes[1:], nnz)]
            if self.linear_path:
                k = allocate_connections([sizes[0], sizes[-1]], self.epsilon)[0]
                need.append(layer_bytes(sizes[0], sizes[-1], k, val, "compact"))
            check_fits(sum(w for w, _ in need) + max(b for _, b in need),
                       f"a network of layer sizes {sizes} with {sum(nnz)} connections")
            self.layers = [SparseLayer.random(a, b, k, self.rng, init=init, dtype=self.dtype,
                                              n_threads=self.n_threads, storage=self.storage)
                           for a, b, k in zip(sizes[:-1], sizes[1:], nnz)]
        # the linear path: its input gradient is never needed, so it keeps no transposed index ("compact")
        self.linear_layer = None
        if _linear is not None:  # from_layers, which checked it
            if not self.linear_path:
                raise ValueError("a linear layer was given but linear_path is False")
            self.linear_layer = _linear
            _linear.n_threads = self.n_threads
        elif self.linear_path:
            if _layers is not None:
                raise ValueError("linear_path=True over existing layers needs the linear layer (from_layers' linear=)")
            k = allocate_connections([sizes[0], sizes[-1]], self.epsilon)[0]
            self.linear_layer = SparseLayer.random(sizes[0], sizes[-1], k, self.rng, init="zeros", dtype=self.dtype,
                                                   n_threads=self.n_threads, storage="compact", use_bias=False)
        # "fan_in": one SGD step moves a neuron's input by about lr * fan_in * E[a^2] * delta, so a layer
        # whose neurons have more than FAN_IN_REF inputs learns proportionally slower (plain SGD lets
        # the dense 315k-input output layer of the 1M-neuron network blow up: loss 72 after an epoch).
        self._set_lr_scales()

    @property
    def trained_layers(self):
        """Every layer with trainable connections: :attr:`layers`, then the linear layer if there is one."""
        return self.layers + ([self.linear_layer] if self.linear_layer is not None else [])

    @classmethod
    def from_layers(cls, layers, *, n_threads=None, linear=None, **config):
        """The one way to make a network over existing layers (loading, the parallel engines' replicas).

        The layers are used as they are (no copies): their arrays were checked when each
        :class:`~set_cy.layers.SparseLayer` was built. Here the layers are checked against each other
        and against the configuration.

        Parameters
        ----------
        layers : sequence of SparseLayer
            Consecutive layers: each one's ``n_out`` is the next one's ``n_in``.
        n_threads : int or None
            Threads of the network and of every layer.
        linear : SparseLayer, optional
            The linear path (``linear_path=True``): ``n_in`` inputs to ``n_out`` outputs of the
            network, ``storage="compact"``, ``use_bias=False``.
        **config
            The other parameters of the constructor; ``layer_sizes`` may be given and must then match
            the layers.

        Returns
        -------
        SparseNetwork (or the subclass it is called on)
        """
        layers = list(layers)
        if not layers or not all(isinstance(layer, SparseLayer) for layer in layers):
            raise TypeError("layers must be a non-empty sequence of SparseLayer")
        sizes = [layers[0].n_in] + [layer.n_out for layer in layers]
        for i, (a, b) in enumerate(zip(layers[:-1], layers[1:])):
            if a.n_out != b.n_in:
                raise ValueError(f"layer {i} has {a.n_out} outputs but layer {i + 1} has {b.n_in} inputs")
        given = config.pop("layer_sizes", None)
        if given is not None and [int(s) for s in given] != sizes:
            raise ValueError(f"layer_sizes {list(given)} do not match the layers' sizes {sizes}")
        dtype = check_float_dtype(config.get("dtype", "float32"))
        bad = [i for i, layer in enumerate(layers) if layer.dtype != dtype]
        if bad:
            raise ValueError(f"layers {bad} are not {dtype} (the network's dtype)")
        if linear is not None:
            if not isinstance(linear, SparseLayer):
                raise TypeError("linear must be a SparseLayer")
            if (linear.n_in, linear.n_out) != (sizes[0], sizes[-1]):
                raise ValueError(f"the linear layer is {linear.n_in} -> {linear.n_out}, the network "
                                 f"{sizes[0]} -> {sizes[-1]}")
            if linear.dtype != dtype or linear.storage != "compact" or linear.use_bias:
                raise ValueError(f"the linear layer must be {dtype}, storage='compact', use_bias=False")
        return cls(sizes, n_threads=n_threads, _layers=layers, _linear=linear, **config)

    # ------------------------------------------------------------------------------------------
    # inspection
    @property
    def n_neurons(self):
        """Neurons counted as the paper does: input, hidden and output."""
        return int(sum(self.layer_sizes))

    @property
    def n_parameters(self):
        """Stored connections plus biases (the linear path has none)."""
        return int(sum(layer.nnz + layer.n_out * layer.use_bias for layer in self.trained_layers))

    @property
    def n_connections(self):
        """Stored connections of every layer, the linear path's included."""
        return int(sum(layer.nnz for layer in self.trained_layers))

    @property
    def densities(self):
        return [layer.density for layer in self.layers]

    @property
    def weights(self):
        """Weights as ``scipy.sparse.csr_array`` of shape ``(n_in, n_out)``, one per layer (copies)."""
        return [layer.to_scipy() for layer in self.layers]

    @property
    def biases(self):
        return [layer.bias.copy() for layer in self.layers]

    @property
    def linear_weights(self):
        """Weights of the linear path as a ``scipy.sparse.csr_array`` ``(n_in, n_out)`` (a copy), or None."""
        return None if self.linear_layer is None else self.linear_layer.to_scipy()

    @property
    def nbytes(self):
        return int(sum(layer.nbytes for layer in self.trained_layers))

    def input_strength(self, normalize=False):
        """Strength of each input neuron: the sum of ``|w|`` over its connections in the first layer.

        With a linear path, the sums over the linear path's connections instead (the first layer's
        while the linear path is still all zeros). The linear path starts at zero and only holds what
        was learnt; the first layer keeps most of its random initial values, so an input's sum there
        is mostly its degree and its draws. Measured on the six microarray sets (bench/README.md),
        the top-50 inputs by the first layer's sums agreed between resamples no more than chance
        (Kuncheva index -0.01 to 0.01), those by the linear path's sums more (0.31-0.59), and adding
        the two lowered the agreement on all six.

        After SET training, strong inputs are the features the network relies on (QuickSelection's
        feature ranking); ``np.argsort(-strength)[:k]`` selects ``k`` features. :meth:`prune_inputs`
        removes the weakest by this measure.

        Parameters
        ----------
        normalize : bool, default False
            Divide by the sum, so that the strengths add up to 1 (all zeros stay zeros).

        Returns
        -------
        ndarray of float64, shape (n_features,)
        """
        layer = self.layers[0]
        if self.linear_layer is not None and np.any(self.linear_layer.data):
            layer = self.linear_layer
        s = np.bincount(layer.indices, weights=np.abs(layer.data), minlength=layer.n_in).astype(np.float64)
        if self.input_mask_ is not None:
            s[~self.input_mask_] = 0.0  # pruned inputs: their connections see zeros
        if normalize:
            total = s.sum()
            if total > 0:
                s /= total
        return s

    def active_inputs(self):
        """Sorted indices of the inputs in use (all of them until :meth:`prune_inputs` removes some)."""
        if self.input_mask_ is None:
            return np.arange(self.layer_sizes[0], dtype=np.int64)
        return np.flatnonzero(self.input_mask_)

    def _set_input_mask(self, mask):
        """Use only the inputs where ``mask`` is True (None: all); the others are read as zeros."""
        if mask is None:
            self.input_mask_, self._inactive = None, None
            return
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (self.layer_sizes[0],):
            raise ValueError(f"input mask must be a bool array of shape ({self.layer_sizes[0]},), "
                             f"got {mask.dtype} {mask.shape}")
        if not mask.any():
            raise ValueError("input mask must keep at least one input")
        self.input_mask_ = mask.copy()
        self._inactive = np.flatnonzero(~mask)

    def prune_inputs(self, fraction, *, min_inputs=1, new_weights="zeros"):
        """Stop using the weakest inputs: feature selection inside the sparse network.

        The fraction ``fraction`` of the inputs still in use, those of lowest strength (sum of
        ``|w|`` over their first-layer or linear-path connections, :meth:`input_strength`), are
        switched off, but
        at least ``min_inputs`` stay. Their connections are moved at once to free positions of the
        remaining inputs (with ``new_weights`` values and zero momentum), so the number of
        connections does not change; only when the remaining inputs have no free position left do
        connections stay on switched-off inputs, which are read as zeros. Later evolution steps
        regrow the first layer onto the remaining inputs only. A switched-off input never comes back.

        Parameters
        ----------
        fraction : float in [0, 1)
        min_inputs : int >= 1
        new_weights : {"zeros", "init"}

        Returns
        -------
        int
            Inputs switched off by this call.
        """
        fraction = check_scalar(fraction, "fraction", min_val=0.0, max_val=1.0, include_max=False)
        min_inputs = check_int(min_inputs, "min_inputs", min_val=1)
        check_evolution_args(0.0, "signed", new_weights)
        active = self.active_inputs()
        n_keep = max(min(min_inputs, active.size), int(np.ceil(active.size * (1.0 - fraction))))
        if n_keep >= active.size:
            return 0
        strength = self.input_strength()[active]
        kept = np.sort(active[np.argsort(-strength, kind="stable")[:n_keep]])
        mask = np.zeros(self.layer_sizes[0], dtype=bool)
        mask[kept] = True
        self._set_input_mask(mask)
        for layer in (self.layers[0], self.linear_layer):
            if layer is not None:
                layer.evolve(0.0, self.rng, new_weights=new_weights, inputs=kept)
        return int(active.size - n_keep)

    def neuron_strength(self, layer):
        """Strength of each neuron of hidden layer ``layer`` (1 .. number of hidden layers): the sum of
        ``|w|`` over its incoming and outgoing connections (float64, one per neuron).

        A neuron whose connections all stay small passes little signal either way; :meth:`prune_neurons`
        removes the weakest by this measure (the importance of WASAP's importance pruning).
        """
        layer = check_int(layer, "layer", min_val=1, max_val=len(self.layer_sizes) - 2)
        below, above = self.layers[layer - 1], self.layers[layer]
        incoming = np.bincount(row_ids(below.indptr), weights=np.abs(below.data), minlength=below.n_out)
        outgoing = np.bincount(above.indices, weights=np.abs(above.data), minlength=above.n_in)
        return incoming + outgoing

    def prune_neurons(self, fraction, *, min_neurons=1, regrow=True, new_weights="zeros"):
        """Remove the weakest hidden neurons: the layers shrink (importance pruning, WASAP-SGD's).

        In every hidden layer the fraction ``fraction`` of its neurons of lowest strength
        (:meth:`neuron_strength`) is removed, but at least ``min_neurons`` stay: their rows in the
        layer below, their columns in the layer above, their biases and momentum go, and
        :attr:`layer_sizes` shrinks. With ``regrow`` the connections they carried are grown again at
        random free positions of the same two layers (``new_weights`` values, zero momentum), so every
        layer keeps its number of connections (as far as the smaller layer has room); without it the
        layers lose them. The batch buffers are released (rebuilt at the next batch, smaller).

        Parameters
        ----------
        fraction : float in [0, 1)
        min_neurons : int >= 1, default 1
        regrow : bool, default True
        new_weights : {"zeros", "init"}, default "zeros"

        Returns
        -------
        list of int
            Neurons removed per hidden layer.

        Examples
        --------
        >>> from set_cy import SparseMLP
        >>> net = SparseMLP([100, 50, 40, 10], epsilon=2, seed=0)
        >>> before = net.n_connections
        >>> net.prune_neurons(0.2), net.layer_sizes, net.n_connections == before
        ([10, 8], [100, 40, 32, 10], True)
        """
        fraction = check_scalar(fraction, "fraction", min_val=0.0, max_val=1.0, include_max=False)
        min_neurons = check_int(min_neurons, "min_neurons", min_val=1)
        if not isinstance(regrow, (bool, np.bool_)):
            raise ValueError(f"regrow must be a bool, got {regrow!r}")
        check_evolution_args(0.0, "signed", new_weights)
        removed = []
        inputs = None if self.input_mask_ is None else self.active_inputs()
        for h in range(1, len(self.layer_sizes) - 1):
            width = self.layer_sizes[h]
            n_keep = max(min(min_neurons, width), int(np.ceil(width * (1.0 - fraction))))
            if n_keep >= width:
                removed.append(0)
                continue
            self._release_buffers()
            kept = np.sort(np.argsort(-self.neuron_strength(h), kind="stable")[:n_keep])
            for i, select in ((h - 1, dict(outputs=kept)), (h, dict(inputs=kept))):
                old = self.layers[i]
                new = old.select_neurons(**select)
                if regrow:
                    new.add_connections(old.nnz - new.nnz, self.rng, new_weights=new_weights,
                                        inputs=inputs if i == 0 else None)
                self.layers[i] = new
                del old
            self.layer_sizes[h] = n_keep
            removed.append(width - n_keep)
        self._set_lr_scales()
        return removed

    def _set_lr_scales(self):
        """Each layer's learning-rate factor under ``lr_scaling`` (see the constructor), from its fan-in now."""
        for layer in self.layers:
            layer.lr_scale = min(1.0, FAN_IN_REF / layer.fan_in) if self.lr_scaling == "fan_in" else 1.0

    def input_degree(self):
        """Number of connections of each input neuron in the first layer (int64, shape (n_features,))."""
        layer = self.layers[0]
        return np.bincount(layer.indices, minlength=layer.n_in).astype(np.int64)

    def set_n_threads(self, n_threads):
        self.n_threads = resolve_n_threads(n_threads)
        for layer in self.trained_layers:
            layer.n_threads = self.n_threads

    def __repr__(self):
        arch = "-".join(str(s) for s in self.layer_sizes)
        return (f"{type(self).__name__}({arch}, {self.n_neurons:,} neurons, {self.n_connections:,} connections, "
                f"activation={self.activation!r}, dtype={self.dtype})")

    # ------------------------------------------------------------------------------------------
    # input checks
    def _check_X(self, X, name="X"):
        import scipy.sparse as sp

        if sp.issparse(X):
            X = X.toarray()
        X = np.asarray(X)
        if X.dtype.kind not in "fiub":
            raise TypeError(f"{name} must be numeric, got dtype {X.dtype}")
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D (samples x features), got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError(f"{name} is empty (0 samples)")
        if X.shape[1] != self.layer_sizes[0]:
            raise ValueError(f"{name} has {X.shape[1]} features but the network expects {self.layer_sizes[0]}")
        # float64 (or integer) input to a float32 model is converted here, once
        X = np.ascontiguousarray(X, dtype=self.dtype)
        if not np.isfinite(X).all():
            raise ValueError(f"{name} contains NaN or infinity")
        return X

    @property
    def is_regression(self):
        """True when the network is trained on real targets (``loss="squared_error"``)."""
        return self.loss == "squared_error"

    def _check_y(self, y, n, name="y"):
        if self.is_regression:
            return self._check_targets(y, n, name)
        y = np.asarray(y)
        n_classes = self.layer_sizes[-1]
        if y.ndim == 2:
            if y.shape[1] != n_classes:
                raise ValueError(f"one-hot {name} has {y.shape[1]} columns, expected {n_classes}")
            y = y.argmax(axis=1)
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(f"{name} must have shape ({n},) (labels) or ({n}, {n_classes}) (one-hot), "
                             f"got {np.shape(y)}")
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise ValueError(f"{name} must hold integer class labels")
        elif y.dtype.kind not in "iub":
            raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
        y = y.astype(np.int64)
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"labels in {name} must be in [0, {n_classes - 1}], got range "
                             f"[{y.min()}, {y.max()}]")
        return y

    def _check_targets(self, y, n, name="y"):
        """Real regression targets as a C-contiguous ``(n, n_outputs)`` array of the model's dtype."""
        n_out = self.layer_sizes[-1]
        y = np.asarray(y)
        if y.dtype.kind not in "iuf" and y.dtype != np.bool_:
            raise TypeError(f"{name} must hold real regression targets, got dtype {y.dtype}")
        if y.ndim == 1 and n_out == 1:
            y = y[:, None]
        if y.shape != (n, n_out):
            raise ValueError(f"{name} must have shape ({n}, {n_out})" + (f" or ({n},)" if n_out == 1 else "")
                             + f" (targets of the {n_out} outputs), got {np.shape(y)}")
        y = np.ascontiguousarray(y, dtype=self.dtype)
        if not np.isfinite(y).all():
            raise ValueError(f"{name} contains NaN or infinity (or values too large for {self.dtype})")
        return y

    # ------------------------------------------------------------------------------------------
    # buffers
    def _release_buffers(self):
        """Drop the batch buffers (rebuilt by :meth:`_ensure_buffers` when next needed)."""
        self._buffers = None
        self._buffer_batch = 0

    def _ensure_buffers(self, batch):
        if self._buffers is not None and batch <= self._buffer_batch:
            return
        sizes = self.layer_sizes
        widest = max(sizes[1:-1] + [sizes[0]]) if len(sizes) > 2 else sizes[0]
        scatter_rows = [layer.n_in for layer in self.layers[1:]
                        if layer.storage == "full" and uses_scatter(layer.nnz, self.dtype.itemsize, batch)]
        # the kernels gather rows of these at random: fresh memory on huge pages (see set_cy.hugepages)
        self._buffers = {
            "x": hugepages.empty(sizes[0] * batch, self.dtype),
            "act": [hugepages.empty(s * batch, self.dtype) for s in sizes[1:]],
            "delta": [hugepages.empty(widest * batch, self.dtype), hugepages.empty(widest * batch, self.dtype)],
            "scratch": (hugepages.empty((SCATTER_PARTS, max(scatter_rows) * batch), self.dtype)
                        if scatter_rows else None),
            # bfloat16 copies that the products gather from (activation_dtype="bfloat16"): one per hidden
            # layer's activations, one for the hidden delta that the next backward product reads
            "act16": [], "delta16": None,
            # the linear path's outputs, added to the output layer's
            "linear": hugepages.empty(sizes[-1] * batch, self.dtype) if self.linear_layer is not None else None,
        }
        if self.activation_dtype == "bfloat16" and len(sizes) > 2:
            self._buffers["act16"] = [hugepages.empty(s * batch, np.uint16) for s in sizes[1:-1]]
            if self.storage == "full":
                self._buffers["delta16"] = hugepages.empty(max(sizes[1:-1]) * batch, np.uint16)
        self._buffer_batch = batch

    @staticmethod
    def _view(flat, rows, batch):
        return flat[: rows * batch].reshape(rows, batch)

    def _load_batch(self, X, rows, noise=0.0):
        """Feature-major copy of the samples ``rows`` of the batch-major ``X`` into the input buffer,
        plus Gaussian noise of standard deviation ``noise`` when it is > 0 (drawn from :attr:`rng`);
        switched-off inputs read as zeros either way.

        The one place where samples reach a kernel: ``X`` must be what :meth:`_check_X` returns and
        ``rows`` int64 sample indices in range (checked here, O(batch); ``train_batch``,
        ``gradients_into`` and ``compute_gradients`` are public and take ``rows`` from callers).
        """
        if (not isinstance(X, np.ndarray) or X.ndim != 2 or X.dtype != self.dtype or not X.flags.c_contiguous
                or X.shape[1] != self.layer_sizes[0]):
            raise ValueError(f"X must be a C-contiguous {self.dtype} array of shape (n_samples, "
                             f"{self.layer_sizes[0]}) (as _check_X returns it)")
        if (not isinstance(rows, np.ndarray) or rows.dtype != np.int64 or rows.ndim != 1
                or (rows.size and (rows.min() < 0 or rows.max() >= X.shape[0]))):
            raise ValueError(f"rows must be a 1-D int64 array of sample indices in [0, {X.shape[0]})")
        B = rows.shape[0]
        self._ensure_buffers(B)
        xb = self._view(self._buffers["x"], self.layer_sizes[0], B)
        _kernels.gather_transpose(X, rows, xb, self.n_threads)
        if noise:
            draws = self.rng.standard_normal(xb.shape, dtype=xb.dtype)
            draws *= xb.dtype.type(noise)
            xb += draws
        if self._inactive is not None:
            xb[self._inactive] = 0
        return xb

    # ------------------------------------------------------------------------------------------
    # forward / backward on feature-major buffers
    def _forward(self, xb, training):
        """Forward pass; returns the output block (probabilities or linear outputs) and the dropout state."""
        B = xb.shape[1]
        a = xb
        states = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            z = self._view(self._buffers["act"][i], layer.n_out, B)
            layer.forward(self._gathered(i - 1, a), z)
            if i == last and self.linear_layer is not None:
                lin = self._view(self._buffers["linear"], layer.n_out, B)
                self.linear_layer.forward(xb, lin)
                z += lin
            if i < last:
                thresh = int(round(self.dropout * 256)) if training else 0
                rand = np.frombuffer(self.rng.bytes(z.size), np.uint8).reshape(z.shape) if thresh else None
                scale = 256.0 / (256 - thresh)
                if self.activation == "relu":
                    # fused: max(z, 0) and dropout in one pass; backward needs only the output
                    _kernels.relu_dropout(z, rand, thresh, scale, self.n_threads)
                    states.append((None, None, scale))
                    a = z
                    self._round_activations(i, z)
                    continue
                st = self._acts[i].forward(z)
                mask = None
                if rand is not None:
                    mask = rand >= thresh
                    z *= mask
                    z *= z.dtype.type(scale)
                states.append((st, mask, scale))
                self._round_activations(i, z)
            elif self.loss == "cross_entropy":
                softmax_inplace(z)
            a = z
        return a, states

    def _round_activations(self, i, z):
        """With ``activation_dtype="bfloat16"``: the bfloat16 copy of hidden layer ``i``'s output ``z``."""
        if self._buffers["act16"]:
            _kernels.to_bfloat16(z, self._gathered(i, z), self.n_threads)

    def _gathered(self, i, a):
        """What the products gather from for hidden layer ``i``'s output ``a``: ``a``, or its bfloat16 copy
        (``i = -1``: the input batch, never rounded)."""
        act16 = self._buffers["act16"]
        return self._view(act16[i], a.shape[0], a.shape[1]) if act16 and i >= 0 else a

    def _backward(self, xb, y, out, states, step=None, denom=None, weights=None, smoothing=0.0):
        """Backward pass from the output block ``out``; returns the loss and the number of correct guesses.

        ``step(layer_index, dY, X_in)`` consumes each layer's output gradient (already divided by
        ``denom``, the batch size by default: the mean over the batch) before the layer below is
        processed, after the layer's input gradient has been computed from the current weights;
        ``layer_index`` indexes :attr:`trained_layers` (the linear path, last, comes first). A
        data-parallel worker passes the size of the whole batch, so that the workers' gradients add
        up to the batch mean. The returned loss is the mean over ``out``'s columns either way.
        ``weights`` (one per sample, e.g. class weights) multiply each sample's loss and gradient.
        ``smoothing`` (cross-entropy only) is label smoothing: the target of a sample of class ``c`` is
        ``1 - smoothing + smoothing / k`` at ``c`` and ``smoothing / k`` at the other ``k - 1`` classes.
        """
        B = out.shape[1]
        cols = np.arange(B)
        correct = 0 if self.is_regression else int(np.count_nonzero(out.argmax(axis=0) == y))
        if self.is_regression:  # y: (B, n_outputs) targets
            out -= y.T
            per_sample = 0.5 * np.einsum("ij,ij->j", out, out, dtype=np.float64)
        elif self.loss == "cross_entropy" and smoothing:
            logp = np.log(np.maximum(out, np.finfo(out.dtype).tiny), dtype=np.float64)
            k = out.shape[0]
            per_sample = -(1.0 - smoothing) * logp[y, cols] - (smoothing / k) * logp.sum(axis=0)
            out -= out.dtype.type(smoothing / k)  # the gradient of the softmax cross-entropy: p - target
            out[y, cols] -= out.dtype.type(1.0 - smoothing)
        elif self.loss == "cross_entropy":
            p = out[y, cols]
            per_sample = -np.log(np.maximum(p, np.finfo(out.dtype).tiny))
            out[y, cols] -= 1
        else:
            out[y, cols] -= 1
            per_sample = 0.5 * np.einsum("ij,ij->j", out, out, dtype=np.float64)
        if weights is not None:
            per_sample = per_sample * weights
            out *= weights.astype(out.dtype, copy=False)[None, :]
        loss = float(np.mean(per_sample, dtype=np.float64))
        out *= out.dtype.type(1.0 / (B if denom is None else denom))  # the mean over the batch: the only division
        delta = out
        if self.linear_layer is not None:
            step(len(self.layers), delta, xb)
        delta_rows = None  # the bfloat16 copy of a hidden delta, when the products gather from one
        flip = 0
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            x_in = xb if i == 0 else self._view(self._buffers["act"][i - 1], layer.n_in, B)
            d_prev = None
            if i > 0:
                d_prev = self._view(self._buffers["delta"][flip], layer.n_in, B)
                flip ^= 1
                layer.backward_input(delta, d_prev, self._buffers["scratch"], delta_rows)
                st, mask, scale = states[i - 1]
                act = self._acts[i - 1]
                if self.activation == "relu":
                    _kernels.relu_backward(d_prev, x_in, scale, self.n_threads)
                else:
                    if mask is not None:
                        d_prev *= mask
                        d_prev *= d_prev.dtype.type(scale)
                    # the activation's output before dropout scaling (dropped units have zero gradient)
                    out_pre = x_in / x_in.dtype.type(scale) if (mask is not None and act.name in
                                                                 ("sigmoid", "tanh")) else x_in
                    act.backward(d_prev, out_pre, st)
                below = self.layers[i - 1]  # its backward product reads d_prev: gathered rows, or a scatter
                if (self._buffers["delta16"] is not None and i > 1
                        and below.gathers_backward(B, self._buffers["scratch"] is not None)):
                    delta_rows = self._view(self._buffers["delta16"], layer.n_in, B)
                    _kernels.to_bfloat16(d_prev, delta_rows, self.n_threads)
                else:
                    delta_rows = None
            step(i, delta, self._gathered(i - 1, x_in))
            delta = d_prev
        return loss, correct

    # ------------------------------------------------------------------------------------------
    # one batch
    def train_batch(self, X, y, rows, *, learning_rate, momentum=0.9, weight_decay=0.0, nesterov=False,
                    clip_norm=None, class_weight=None, label_smoothing=0.0, input_noise=0.0):
        """Forward, backward and sparse update on the samples ``rows`` of ``X`` (validated arrays).

        Without ``clip_norm`` each layer's gradient and momentum update are fused in one pass over its
        connections. With ``clip_norm`` the gradients of all layers are computed first (into buffers
        kept between batches), scaled so that their global L2 norm (weights and biases) is at most
        ``clip_norm``, then applied; a batch whose gradient is not finite is skipped.
        ``class_weight`` (float array, one weight per class) weights each sample's loss;
        ``label_smoothing`` smooths the cross-entropy's targets (see :meth:`_backward`);
        ``input_noise`` > 0 adds Gaussian noise of that standard deviation to every input of the batch
        (drawn from :attr:`rng` before dropout's masks; the switched-off inputs stay zero).

        Returns ``(loss, n_correct)`` of the batch, measured with dropout on (``n_correct`` is 0 for
        regression).
        """
        xb = self._load_batch(X, rows, input_noise)
        out, states = self._forward(xb, training=True)
        yb = y[rows]
        weights = None if class_weight is None else class_weight[yb]
        if clip_norm is None:
            def step(i, dY, x_in):
                self.trained_layers[i].fused_update(dY, x_in, learning_rate, momentum, weight_decay, nesterov)

            return self._backward(xb, yb, out, states, step, weights=weights, smoothing=label_smoothing)
        grads = self._buffers.get("grads")
        if grads is None:
            grads = self._buffers["grads"] = [(np.empty_like(layer.data), np.empty_like(layer.bias))
                                              for layer in self.trained_layers]

        def keep(i, dY, x_in):
            self.trained_layers[i].gradient(dY, x_in, *grads[i])

        loss, correct = self._backward(xb, yb, out, states, keep, weights=weights, smoothing=label_smoothing)
        sq = sum(float(np.einsum("i,i->", g, g, dtype=np.float64)) + float(np.einsum("i,i->", gb, gb, dtype=np.float64))
                 for g, gb in grads)
        norm = np.sqrt(sq)
        if not np.isfinite(norm):
            return loss, correct
        scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
        for layer, (g, gb) in zip(self.trained_layers, grads):
            if scale < 1.0:
                g *= g.dtype.type(scale)
                gb *= gb.dtype.type(scale)
            layer.apply_gradient(g, gb, learning_rate, momentum, weight_decay, nesterov)
        return loss, correct

    def compute_gradients(self, X, y, rows=None, *, training=False):
        """Loss and gradients (means over the batch) without updating anything.

        Parameters
        ----------
        X : ndarray (n_samples, n_features); y : labels
        rows : ndarray of int64, optional
            Samples to use (all by default).
        training : bool
            Apply dropout (consumes the generator) when True.

        Returns
        -------
        loss : float
        grads : list of (ndarray (nnz,), ndarray (n_out,))
            Gradient of the values, in each layer's storage order (CSR of W^T), and of the biases, per
            layer of :attr:`trained_layers` (the linear path last; its bias gradient is zero).
        """
        X = self._check_X(X)
        y = self._check_y(y, X.shape[0])
        rows = np.arange(X.shape[0], dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
        grads = [(np.empty_like(layer.data), np.empty_like(layer.bias)) for layer in self.trained_layers]
        loss, _ = self.gradients_into(X, y, rows, grads, training=training)
        return loss, grads

    def gradients_into(self, X, y, rows, out, *, denom=None, training=True):
        """Gradients of the samples ``rows`` of validated ``X``, ``y``, written into ``out`` (no update).

        Parameters
        ----------
        X, y : validated arrays (see :meth:`_check_X`, :meth:`_check_y`)
        rows : ndarray of int64
        out : list of (ndarray (nnz,), ndarray (n_out,))
            Per layer, where the gradient of the values (storage order) and of the biases go.
        denom : int, optional
            The gradient is the sum over ``rows`` divided by ``denom`` (default ``rows.size``: the mean).
            Data-parallel workers pass the size of the whole batch, so their gradients add up to its mean.
        training : bool
            Dropout on (it consumes the network's generator).

        Returns
        -------
        loss : float
            Mean loss over ``rows``.
        n_correct : int
        """
        xb = self._load_batch(X, rows)
        res, states = self._forward(xb, training=training)

        def step(i, dY, x_in):
            self.trained_layers[i].gradient(dY, x_in, *out[i])

        return self._backward(xb, y[rows], res, states, step, denom=denom)

    # ------------------------------------------------------------------------------------------
    # inference
    def _outputs(self, X, batch_size=None):
        X = self._check_X(X)
        n = X.shape[0]
        if batch_size is None:
            batch_size = self._buffer_batch or 128  # the training batch: its buffers exist already
        batch_size = max(1, min(int(batch_size), n))
        res = np.empty((n, self.layer_sizes[-1]), self.dtype)
        for start in range(0, n, batch_size):
            rows = np.arange(start, min(start + batch_size, n), dtype=np.int64)
            out, _ = self._forward(self._load_batch(X, rows), training=False)
            res[start:start + rows.size] = out.T
        return res

    def predict_proba(self, X, *, batch_size=None):
        """Class probabilities, shape ``(n_samples, n_classes)`` (softmax of the outputs for MSE)."""
        if self.is_regression:
            raise ValueError('predict_proba needs a classifier; this network regresses (loss="squared_error")')
        out = self._outputs(X, batch_size)
        if self.loss == "mse":
            out = softmax_inplace(np.ascontiguousarray(out.T)).T
        return out

    def predict(self, X, *, batch_size=None):
        """Predicted class indices, or for regression the outputs, shape ``(n_samples, n_outputs)``."""
        out = self._outputs(X, batch_size)
        return out if self.is_regression else out.argmax(axis=1)

    def score(self, X, y, *, batch_size=None):
        """Accuracy on ``(X, y)``; for regression the coefficient of determination R² (mean over the
        outputs, as scikit-learn's ``r2_score``; 1 for a constant output predicted exactly, else 0)."""
        X = self._check_X(X)
        y = self._check_y(y, X.shape[0])
        pred = self.predict(X, batch_size=batch_size)
        if not self.is_regression:
            return float(np.mean(pred == y))
        y = y.astype(np.float64)
        residual = ((y - pred) ** 2).sum(axis=0)
        total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
        r2 = np.where(total > 0, 1.0 - residual / np.where(total > 0, total, 1.0),
                      np.where(residual == 0, 1.0, 0.0))
        return float(np.mean(r2))

    # ------------------------------------------------------------------------------------------
    # evolution
    def evolve(self, zeta=0.3, *, criterion="signed", new_weights="zeros", evolve_output=True, grow="random",
               grow_candidates=10, batch=None, shrink=0.0):
        """One evolution step on every layer (the output layer optionally): SET's by default.

        Parameters
        ----------
        zeta : float in [0, 1)
            Fraction of each layer's connections to replace.
        criterion : str or drop rule, default "signed"
            What is removed: one of :data:`set_cy.evolution.CRITERIA` or a
            :class:`set_cy.evolution.DropRule`.
        new_weights : {"zeros", "init"}, default "zeros"
            Values of the grown connections: zero (they grow only if the gradient says so), or drawn
            from the init distribution (measured to make small-sample training diverge: the stability
            table of bench/README.md).
        evolve_output : bool
        grow : str or grow rule, default "random"
            Where new connections grow: one of :data:`set_cy.evolution.GROW_RULES` or a
            :class:`set_cy.evolution.GrowRule`. ``"gradient"``
            (:class:`set_cy.evolution.GradientGrowth`) grows, per layer, the largest ``|dL/dW|`` among
            ``grow_candidates`` times as many sampled free positions, the gradient taken over ``batch``.
        grow_candidates : int, default 10
            Candidates per new connection for ``grow="gradient"``.
        batch : tuple, optional
            ``(X, y)`` or ``(X, y, rows)``: the samples whose mean loss gives the gradient, for grow rules
            that need it (required then). The gradient is taken without dropout, with the weights before
            the step.
        shrink : float in [0, 1 - zeta), default 0
            Gradual density change: the fraction of each evolved layer's connections removed without
            regrowth (``round(shrink * nnz)`` of them, chosen by the drop rule with the others), so
            the layer ends the step with that many fewer. :meth:`fit`'s ``final_fraction`` schedules it.

        Returns
        -------
        list of int
            Connections removed per layer (then in the linear path, when the network has one; it
            evolves with the hidden layers, whatever ``evolve_output``); as many were regrown, less
            the shrink.

        Notes
        -----
        The batch buffers (activations and deltas, the largest arrays after the weights) are released
        first and rebuilt at the next batch, so that they and the transient arrays of evolution never
        exist at the same time (:func:`set_cy.sizing.estimate_memory` counts the larger of the two).
        A rule that needs the gradient chooses, during one backward pass over ``batch``, what each
        layer drops and where it grows; the layers are rewritten after the pass, once the batch
        buffers are released. What stays between the two is a mask over each layer's connections (a
        bit each) and the positions it grows.
        """
        zeta = check_evolution_args(zeta, criterion, new_weights, below_one=True)
        shrink = check_scalar(shrink, "shrink", min_val=0.0, max_val=1.0 - zeta, include_max=False)
        grower, dropper = make_grow_rule(grow, grow_candidates), make_drop_rule(criterion)
        n = len(self.layers) if evolve_output else len(self.layers) - 1
        inputs = None if self.input_mask_ is None else self.active_inputs()

        def cut(layer):  # connections removed without regrowth, leaving at least one
            return min(int(round(shrink * layer.nnz)), max(0, int(np.ceil((1.0 - zeta) * layer.nnz)) - 1))

        if not needs_gradient(grower, dropper):
            kw = dict(criterion=dropper, new_weights=new_weights, grow=grower)
            self._release_buffers()
            replaced = [layer.evolve(zeta, self.rng, inputs=inputs if i == 0 else None, shrink=cut(layer), **kw)
                        if i < n else 0 for i, layer in enumerate(self.layers)]
            if self.linear_layer is not None:
                replaced.append(self.linear_layer.evolve(zeta, self.rng, inputs=inputs, shrink=cut(self.linear_layer),
                                                         **kw))
            if shrink > 0:
                self._set_lr_scales()  # as a network loaded now would have them
            return replaced
        if batch is None:
            raise ValueError(f"criterion={criterion!r}, grow={grow!r} need the gradient: pass batch=(X, y) (the "
                             "samples whose loss it is)")
        X, y, rows = self._check_batch(batch)
        plans = [None] * len(self.trained_layers)

        def visit(i, dY, x_in):  # during the pass: what to drop, where to grow; no layer changes yet
            linear = i == len(self.layers)
            if linear or i < n:
                layer = self.trained_layers[i]
                ins = inputs if (i == 0 or linear) else None
                score = layer.scorer(dY, x_in)
                s = cut(layer)
                keep = layer.drop_mask(zeta, self.rng, dropper, inputs=ins, score=score, shrink=s)
                k = layer.nnz - int(np.count_nonzero(keep))
                if k:  # new positions among those not kept, as in SparseLayer.evolve
                    kept = drop_entries(layer.indptr, layer.indices, keep, self.n_threads)
                    grown = layer.grow_checked(grower, self.rng, k - s, kept, inputs=ins, score=score)
                    plans[i] = (np.packbits(keep), grown)  # kept until the rewrite: a bit per connection

        self._gradient_pass(X, y, rows, visit)  # releases the batch buffers: the rewrites never meet them
        replaced = [0] * len(self.trained_layers)
        for i, plan in enumerate(plans):
            if plan is not None:
                packed, (b_indptr, b_indices) = plan
                plans[i] = None
                keep = np.unpackbits(packed, count=self.trained_layers[i].nnz)
                del packed
                replaced[i] = self.trained_layers[i].rewire(keep, b_indptr, b_indices, self.rng,
                                                            new_weights=new_weights)
        if shrink > 0:
            self._set_lr_scales()
        return replaced

    def gradient_at(self, X, y, positions, *, rows=None):
        """Gradient of the mean loss at any positions of each layer's ``W``, stored or not.

        What a gradient-based grow rule needs, without a dense ``n_in x n_out`` gradient: one forward
        pass (no dropout) and one backward pass over the samples, and per layer one SDDMM at the given
        positions, ``O(positions x batch)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like
            Labels (or targets) as for :meth:`set_cy.SparseMLP.fit`.
        positions : list
            One entry per layer of :attr:`trained_layers` (the linear path last): None, or
            ``(rows_of_W, cols_of_W)``, two integer arrays of one length: positions ``W[i, j]``, i.e.
            input neuron ``i`` to output neuron ``j``, in range.
        rows : array-like of int, optional
            The samples to use (all by default).

        Returns
        -------
        list
            Per layer, None or an array of the layer's dtype: ``dL/dW[i, j]`` at each position, in the
            order given.

        Examples
        --------
        >>> import numpy as np
        >>> from set_cy import SparseMLP
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((64, 20)).astype(np.float32); y = (X[:, 0] > 0).astype(int)
        >>> net = SparseMLP([20, 30, 2], epsilon=3, seed=0)
        >>> g = net.gradient_at(X, y, [(np.array([0, 5]), np.array([1, 2])), None])
        >>> g[0].shape, g[1] is None
        ((2,), True)
        """
        X, y, sample_rows = self._check_batch((X, y) if rows is None else (X, y, rows))
        layers = self.trained_layers
        if not isinstance(positions, (list, tuple)) or len(positions) != len(layers):
            raise ValueError(f"positions must be a list of {len(layers)} entries (one per trained layer), got "
                             f"{positions!r:.80}")
        patterns = []
        for k, (pos, layer) in enumerate(zip(positions, layers)):
            if pos is None:
                patterns.append(None)
                continue
            r, c = (np.asarray(a) for a in pos)
            if r.ndim != 1 or r.shape != c.shape or not (np.issubdtype(r.dtype, np.integer)
                                                          and np.issubdtype(c.dtype, np.integer)):
                raise ValueError(f"positions[{k}]: two 1-D integer arrays of one length expected")
            if r.size and (r.min() < 0 or r.max() >= layer.n_in or c.min() < 0 or c.max() >= layer.n_out):
                raise ValueError(f"positions[{k}] out of range for a {layer.n_in} x {layer.n_out} layer")
            # the kernels walk a CSR of W^T: rows are output neurons; keep the order to restore it
            order = np.lexsort((r, c))
            counts = np.bincount(c, minlength=layer.n_out)
            indptr = np.zeros(layer.n_out + 1, layer.indices.dtype)
            np.cumsum(counts, out=indptr[1:])
            patterns.append((indptr, r[order].astype(layer.indices.dtype), order))
        out = [None] * len(layers)

        def visit(i, dY, x_in):
            if patterns[i] is not None:
                indptr, indices, order = patterns[i]
                g = np.empty(indices.shape[0], self.dtype)
                g[order] = self.trained_layers[i].scorer(dY, x_in)(indptr, indices)
                out[i] = g

        self._gradient_pass(X, y, sample_rows, visit)
        return out

    def _check_batch(self, batch):
        """Validated ``(X, y, rows)`` from ``(X, y)`` or ``(X, y, rows)``."""
        if not isinstance(batch, tuple) or len(batch) not in (2, 3):
            raise ValueError("batch must be (X, y) or (X, y, rows)")
        X = self._check_X(batch[0])
        y = self._check_y(batch[1], X.shape[0])
        if len(batch) == 2 or batch[2] is None:
            return X, y, np.arange(X.shape[0], dtype=np.int64)
        rows = np.asarray(batch[2])
        if rows.ndim != 1 or rows.size == 0 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError("rows must be a non-empty 1-D array of sample indices")
        if rows.min() < 0 or rows.max() >= X.shape[0]:
            raise ValueError(f"rows out of range for {X.shape[0]} samples")
        return X, y, rows.astype(np.int64)

    def _gradient_pass(self, X, y, rows, visit):
        """Forward (no dropout) and backward over the samples ``rows`` of validated ``X``, ``y``, calling
        ``visit(i, dY, x_in)`` per layer of :attr:`trained_layers` as :meth:`_backward` calls ``step``
        (the linear path first, then from the output layer down; ``visit`` may rewrite layer ``i``).

        Each hidden layer's activations are let go as soon as the pass is done with them (after the
        visit of the layer they feed), so the visits of the lower layers, where a grow rule's working
        arrays are largest, meet fewer batch buffers; the buffers are released at the end (rebuilt
        at the next batch)."""
        self._ensure_buffers(int(rows.size))
        xb = self._load_batch(X, rows)
        out, states = self._forward(xb, training=False)
        acts, act16 = self._buffers["act"], self._buffers["act16"]
        n_hidden = len(self.layers) - 1

        def visit_and_let_go(i, dY, x_in):
            visit(i, dY, x_in)
            if 0 < i <= n_hidden:  # act[i - 1] was layer i's input: nothing below reads it
                acts[i - 1] = None
                if act16:
                    act16[i - 1] = None

        try:
            self._backward(xb, y[rows], out, states, visit_and_let_go)
        finally:
            self._release_buffers()

    # ------------------------------------------------------------------------------------------
    # persistence
    def _config(self):
        return dict(layer_sizes=self.layer_sizes, epsilon=self.epsilon, activation=self.activation,
                    dropout=self.dropout, init=self.init, dtype=self.dtype.name, seed=self.seed,
                    loss=self.loss, allocation=self.allocation, activation_alpha=self.activation_alpha,
                    lr_scaling=self.lr_scaling, storage=self.storage, activation_dtype=self.activation_dtype,
                    linear_path=self.linear_path)

    def _extra_state(self):
        """JSON-serialisable state of subclasses (training progress); saved with the model."""
        return {"epochs_trained": self.epochs_trained_, "meta": self.meta_}

    def _set_extra_state(self, state):
        self.epochs_trained_ = int(state.get("epochs_trained", 0))
        self.meta_ = dict(state.get("meta", {}))

    def _extra_arrays(self):
        """Arrays saved beside the layers: the linear path's, as ``linear_<name>``."""
        if self.linear_layer is None:
            return {}
        return {f"linear_{name}": getattr(self.linear_layer, name) for name in LAYER_ARRAYS}

    def _set_extra_arrays(self, arrays):
        pass

    def save(self, path):
        """Write the network, its optimiser state and its random state to one ``.npz`` file, atomically.

        The file is written next to ``path`` under a temporary name and renamed over it, so an
        interrupted save never leaves a truncated file (see :mod:`set_cy.persistence`). It loads
        with ``allow_pickle=False``.
        """
        write_network_file(path, self._config(), self.rng.bit_generator.state, self._extra_state(),
                           [{name: getattr(layer, name) for name in LAYER_ARRAYS} for layer in self.layers],
                           self.input_mask_, self._extra_arrays())
        logger.info("saved %s (%d connections) to %s", type(self).__name__, self.n_connections, path)
        return os.fspath(path)

    @classmethod
    def load(cls, path, *, n_threads=None):
        """Load a network written by :meth:`save` (no pickle involved).

        Every array of the file is checked before a kernel can see it (the layers are built by
        :class:`set_cy.layers.SparseLayer`, the network by :meth:`from_layers`): a corrupt or foreign
        file raises ``ValueError`` naming what is wrong, it never reads or writes outside memory.
        """
        state = read_network_file(path)
        cfg = state["config"]
        try:
            nt = resolve_n_threads(n_threads)
            dtype = check_float_dtype(cfg.get("dtype"))
            layers = []
            for i, (a, b, arrays) in enumerate(zip(cfg["layer_sizes"][:-1], cfg["layer_sizes"][1:],
                                                   state["layers"])):
                if arrays["data"].dtype != dtype:
                    raise ValueError(f"layer{i}_data has dtype {arrays['data'].dtype}, expected {dtype}")
                layers.append(SparseLayer(a, b, **arrays, init=cfg.get("init"), n_threads=nt, name=f"layer{i}",
                                          storage=cfg.get("storage", "full")))
            linear = None
            if cfg.get("linear_path"):
                extra = state["extra_arrays"]
                missing = [f"extra_linear_{name}" for name in LAYER_ARRAYS if f"linear_{name}" not in extra]
                if missing:
                    raise ValueError(f"linear_path is set but the arrays {missing} are missing")
                sizes = cfg["layer_sizes"]
                arrays = {name: extra.pop(f"linear_{name}") for name in LAYER_ARRAYS}
                linear = SparseLayer(sizes[0], sizes[-1], **arrays, init="zeros", n_threads=nt, name="extra_linear",
                                     storage="compact", use_bias=False)
                if linear.data.dtype != dtype:
                    raise ValueError(f"extra_linear_data has dtype {linear.data.dtype}, expected {dtype}")
            model = cls.from_layers(layers, n_threads=nt, linear=linear, **cfg)
            if state["input_mask"] is not None:
                model._set_input_mask(state["input_mask"])
            model.rng.bit_generator.state = state["rng_state"]
            model._set_extra_state(state["extra_state"])
            model._set_extra_arrays(state["extra_arrays"])
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise ValueError(f"{path} is not a valid set_cy model file: {exc}") from exc
        return model
