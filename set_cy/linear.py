"""A layer-level API for frameworks that bring their own training loop: :class:`SparseLinear`.

:class:`SparseLinear` wraps one :class:`set_cy.layers.SparseLayer` (the storage and kernels the
model uses) behind batch-major, validating methods: ``forward``, ``backward`` (input gradient and
the gradient on the stored connections), ``step`` (momentum SGD), ``evolve`` (one SET step) and
export to / import from ``scipy.sparse``. It holds no logic of its own beyond the checks and the
conversion between the batch-major arrays users hold and the feature-major buffers of the kernels.

Order of the stored connections
-------------------------------
The layer computes ``Y = X @ W + bias`` with ``W`` of shape ``(n_in, n_out)``. Its connections are
stored as the CSR of ``W^T``: grouped by output neuron ``j`` and, inside a group, sorted by input
neuron ``i`` (the column-major order of ``W``). :attr:`SparseLinear.values`, the ``grad_values``
returned by :meth:`SparseLinear.backward` and the velocity all follow that order;
:meth:`SparseLinear.coords` gives ``(i, j)`` of every entry, and :attr:`SparseLinear.csr_order`
maps it to scipy's CSR order of ``W`` (``to_scipy().data == values[csr_order]``).
"""
import logging

import numpy as np

from ._validation import check_csr, check_dense, check_float_dtype, check_int, check_scalar, resolve_n_threads
from .evolution import check_evolution_args, make_drop_rule, make_grow_rule, needs_gradient
from .layers import INITS, SparseLayer
from .ops import batch_major_result, check_order, feature_major, readonly_view, result_buffer
from .sizing import allocate_connections

__all__ = ["SparseLinear"]

logger = logging.getLogger("set_cy")


def _make_rng(seed, rng):
    if rng is not None:
        if seed is not None:
            raise ValueError("give seed or rng, not both")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        return rng
    return np.random.default_rng(seed)


class SparseLinear:
    """Truly sparse linear layer ``Y = X @ W + bias`` with batch-major inputs and outputs.

    Parameters
    ----------
    n_in, n_out : int
        Input and output features.
    epsilon : float, optional
        Erdős–Rényi sparsity level: ``min(epsilon * (n_in + n_out), n_in * n_out)`` connections (the
        rule of :class:`set_cy.SparseNetwork`). Default 20 when ``nnz`` is not given either.
    nnz : int, optional
        Exact number of connections, in ``[0, n_in * n_out]``; excludes ``epsilon``.
    init : {"he_uniform", "xavier", "normal", "zeros"}, default "he_uniform"
        Distribution of the initial values and of the values of connections grown by :meth:`evolve`
        (fans are those of the sparse layer). The bias starts at zero.
    dtype : {"float32", "float64"}, default "float32"
    seed : int, optional
        Seed of the layer's generator (topology, values, evolution).
    rng : numpy.random.Generator, optional
        Generator to use instead of ``seed`` (kept and used by :meth:`evolve`).
    n_threads : int or None, default None
        OpenMP threads of the kernels; None or -1 uses all cores, ``-k`` all but ``k - 1`` (joblib's
        meaning). Results do not depend on it.

    Attributes
    ----------
    layer : set_cy.layers.SparseLayer
        The wrapped layer (feature-major storage; the arrays below are views of its arrays).
    rng : numpy.random.Generator

    Notes
    -----
    :meth:`forward` keeps a feature-major copy of its input for the next :meth:`backward`; pass
    ``X=`` to :meth:`backward` to give the input explicitly instead (e.g. when several forwards
    run before their backwards). Gradients are aligned with the current pattern: after
    :meth:`evolve`, gradients computed before it must not be passed to :meth:`step`.

    Examples
    --------
    >>> import numpy as np
    >>> from set_cy import SparseLinear
    >>> lin = SparseLinear(20, 10, nnz=50, dtype="float64", seed=0)
    >>> X = np.ones((4, 20))
    >>> Y = lin.forward(X)
    >>> dX, g, gb = lin.backward(np.ones_like(Y))
    >>> np.allclose(Y, X @ lin.to_scipy().toarray() + lin.bias), g.shape
    (True, (50,))
    """

    def __init__(self, n_in, n_out, *, epsilon=None, nnz=None, init="he_uniform", dtype="float32", seed=None,
                 rng=None, n_threads=None):
        n_in = check_int(n_in, "n_in", min_val=1)
        n_out = check_int(n_out, "n_out", min_val=1)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        dtype = check_float_dtype(dtype)
        n_threads = resolve_n_threads(n_threads)
        if nnz is not None and epsilon is not None:
            raise ValueError("give epsilon or nnz, not both")
        if nnz is None:
            epsilon = check_scalar(20.0 if epsilon is None else epsilon, "epsilon", min_val=0.0, include_min=False)
            nnz = allocate_connections([n_in, n_out], epsilon)[0]
        nnz = check_int(nnz, "nnz", min_val=0)
        if nnz > n_in * n_out:
            raise ValueError(f"nnz must be <= n_in * n_out = {n_in * n_out}, got {nnz}")
        rng = _make_rng(seed, rng)
        self._wrap(SparseLayer.random(n_in, n_out, nnz, rng, init=init, dtype=dtype, n_threads=n_threads), rng)

    def _wrap(self, layer, rng):
        self.layer = layer
        self.rng = rng
        self._X = None  # feature-major input of the last forward

    @classmethod
    def from_scipy(cls, W, bias=None, *, init="he_uniform", seed=None, rng=None, n_threads=None):
        """Layer with the connections and values of ``W`` (stored entries, explicit zeros included).

        Parameters
        ----------
        W : scipy.sparse CSR array or matrix of shape (n_in, n_out), float32 or float64, canonical
            (sorted indices, no duplicates; call ``W.sum_duplicates()`` otherwise).
        bias : array-like of shape (n_out,), optional
            Copied and converted to the dtype of ``W``; zero when omitted.
        init : str, default "he_uniform"
            Distribution of the values of connections grown by :meth:`evolve`.
        seed, rng, n_threads
            As in the constructor.

        Returns
        -------
        SparseLinear
        """
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        n_threads = resolve_n_threads(n_threads)
        check_csr(W, "W")
        if bias is not None:
            bias = np.asarray(bias)
            if bias.shape != (W.shape[1],):
                raise ValueError(f"bias must have shape ({W.shape[1]},) (n_out), got {bias.shape}")
            if not np.issubdtype(bias.dtype, np.number) or np.iscomplexobj(bias):
                raise TypeError(f"bias must be real numbers, got dtype {bias.dtype}")
        self = cls.__new__(cls)
        self._wrap(SparseLayer.from_scipy(W, bias=bias, init=init, n_threads=n_threads), _make_rng(seed, rng))
        return self

    def to_scipy(self):
        """The weights as a ``scipy.sparse.csr_array`` of shape ``(n_in, n_out)`` (a copy)."""
        return self.layer.to_scipy()

    # ------------------------------------------------------------------------------------------
    @property
    def n_in(self):
        return self.layer.n_in

    @property
    def n_out(self):
        return self.layer.n_out

    @property
    def nnz(self):
        """Number of stored connections (constant under :meth:`evolve`)."""
        return self.layer.nnz

    @property
    def density(self):
        return self.layer.density

    @property
    def dtype(self):
        return self.layer.dtype

    @property
    def n_threads(self):
        return self.layer.n_threads

    @property
    def values(self):
        """Stored values, shape ``(nnz,)``, in storage order (see the module docstring). A live view."""
        return self.layer.data

    @property
    def velocity(self):
        """Momentum buffer of the values used by :meth:`step`, same order. A live view."""
        return self.layer.velocity

    @property
    def bias(self):
        """Bias, shape ``(n_out,)``. A live view."""
        return self.layer.bias

    @property
    def bias_velocity(self):
        return self.layer.bias_velocity

    @property
    def indptr(self):
        """CSR offsets of ``W^T`` (``n_out + 1``): the entries of output ``j`` are ``indptr[j]:indptr[j+1]``.

        A read-only view (the pattern changes only through :meth:`evolve`)."""
        return readonly_view(self.layer.indptr)

    @property
    def indices(self):
        """Input neuron ``i`` of every stored entry, in storage order (a read-only view)."""
        return readonly_view(self.layer.indices)

    @property
    def csr_order(self):
        """Positions in storage order of the entries of ``W`` in scipy's CSR order.

        ``to_scipy().data == values[csr_order]``, and ``grad_values[csr_order]`` is a gradient aligned
        with ``to_scipy()``. A read-only view.
        """
        return readonly_view(self.layer.perm)

    def coords(self):
        """Row and column in ``W`` of every stored entry: ``W[rows[k], cols[k]] == values[k]``.

        Returns
        -------
        rows, cols : ndarray
            Input neuron ``i`` and output neuron ``j`` of each entry, in storage order (new arrays).
        """
        cols = np.repeat(np.arange(self.n_out, dtype=self.indices.dtype), np.diff(self.indptr))
        return self.indices.copy(), cols

    # ------------------------------------------------------------------------------------------
    def forward(self, X, *, keep_input=True, out=None, order=None):
        """``Y = X @ W + bias``.

        The layouts are those of :mod:`set_cy.ops`: a Fortran-ordered ``X`` (feature-major) is used
        without a copy, and the result has the layout of ``X`` unless ``order`` or ``out`` says otherwise.

        Parameters
        ----------
        X : ndarray of shape (batch, n_in), dtype of the layer
        keep_input : bool, default True
            Keep ``X`` (feature-major: a reference when ``X`` was Fortran-ordered, else the copy) for
            the next :meth:`backward`, which may then omit ``X``.
        out : ndarray of shape (batch, n_out), optional
            Written and returned (Fortran-ordered: no copy).
        order : {None, "C", "F"}, default None

        Returns
        -------
        Y : ndarray of shape (batch, n_out)
        """
        check_order(order)
        Xf, fortran = feature_major(X, "X", self.n_in, self.dtype, self.n_threads)
        buf = result_buffer(out, self.n_out, Xf.shape[1], self.dtype, inputs=(Xf, self.layer.data))
        self.layer.forward(Xf, buf)
        self._X = Xf if keep_input else None
        return batch_major_result(buf, out, order, fortran, self.n_threads)

    __call__ = forward

    def backward(self, dY, X=None, *, input_grad=True, out=None, order=None):
        """Gradients of a loss given its gradient ``dY`` with respect to the outputs.

        Parameters
        ----------
        dY : ndarray of shape (batch, n_out), dtype of the layer (Fortran-ordered: no copy)
        X : ndarray of shape (batch, n_in), optional
            The input of the forward pass; default: the one kept by the last :meth:`forward`.
        input_grad : bool, default True
            Compute ``dX`` (False for a first layer: ``dX`` is then None).
        out : ndarray of shape (batch, n_in), optional
            Where ``dX`` is written (Fortran-ordered: no copy).
        order : {None, "C", "F"}, default None
            Layout of a new ``dX``; None: that of ``dY``.

        Returns
        -------
        dX : ndarray of shape (batch, n_in) or None
            ``dY @ W.T``.
        grad_values : ndarray of shape (nnz,)
            ``(X.T @ dY)`` at the stored connections, in storage order (aligned with :attr:`values`;
            :meth:`coords` gives the ``(i, j)`` of each entry).
        grad_bias : ndarray of shape (n_out,)
            ``dY.sum(axis=0)``.
        """
        check_order(order)
        dYf, fortran = feature_major(dY, "dY", self.n_out, self.dtype, self.n_threads)
        Xf = self._input_for(X, dYf, "backward")
        dX = None
        if input_grad:
            buf = result_buffer(out, self.n_in, dYf.shape[1], self.dtype, inputs=(dYf, Xf, self.layer.data))
            self.layer.backward_input(dYf, buf)
            dX = batch_major_result(buf, out, order, fortran, self.n_threads)
        grad_values, grad_bias = self.layer.gradient(dYf, Xf)
        return dX, grad_values, np.ascontiguousarray(grad_bias)

    def step(self, grad_values, grad_bias, lr, *, momentum=0.9, weight_decay=0.0, nesterov=False):
        """One momentum SGD step on the values and the bias, in place (the model's optimiser).

        ``velocity = momentum * velocity - lr * (grad + weight_decay * values)``, then
        ``values += velocity`` (Nesterov: ``values += momentum * velocity - lr * (grad + ...)``); the
        bias gets the same step without weight decay.

        Parameters
        ----------
        grad_values : ndarray of shape (nnz,), dtype of the layer, in storage order
        grad_bias : ndarray of shape (n_out,), dtype of the layer, or None (no bias gradient)
        lr : float, >= 0
        momentum : float in [0, 1], default 0.9
        weight_decay : float, >= 0, default 0
        nesterov : bool, default False
        """
        grad_values = check_dense(grad_values, "grad_values", 1, dtype=self.dtype)
        if grad_values.shape != (self.nnz,):
            raise ValueError(f"grad_values must have shape ({self.nnz},) (nnz), got {grad_values.shape}")
        if grad_bias is None:
            grad_bias = np.zeros(self.n_out, self.dtype)
        grad_bias = check_dense(grad_bias, "grad_bias", 1, dtype=self.dtype)
        if grad_bias.shape != (self.n_out,):
            raise ValueError(f"grad_bias must have shape ({self.n_out},) (n_out), got {grad_bias.shape}")
        lr = check_scalar(lr, "lr", min_val=0.0)
        momentum = check_scalar(momentum, "momentum", min_val=0.0, max_val=1.0)
        weight_decay = check_scalar(weight_decay, "weight_decay", min_val=0.0)
        if np.shares_memory(grad_values, self.values) or np.shares_memory(grad_values, self.velocity):
            raise ValueError("grad_values must not share memory with the layer's values or velocity")
        self.layer.apply_gradient(np.ascontiguousarray(grad_values), grad_bias, lr, momentum, weight_decay,
                                  bool(nesterov))

    def _input_for(self, X, dYf, what):
        """The feature-major input of a product with ``dYf``: ``X`` if given, else the one forward kept."""
        if X is None:
            if self._X is None:
                raise ValueError(f"{what} needs the input of the forward pass: call forward(X) first "
                                 "(with keep_input=True) or pass X=")
            Xf = self._X
        else:
            Xf, _ = feature_major(X, "X", self.n_in, self.dtype, self.n_threads)
        if Xf.shape[1] != dYf.shape[1]:
            raise ValueError(f"X and dY must have the same batch size, got {Xf.shape[1]} and {dYf.shape[1]}")
        return Xf

    def evolve(self, zeta, *, criterion="signed", new_weights="init", rng=None, grow="random", grow_candidates=10,
               dY=None, X=None):
        """One evolution step: replace the fraction ``zeta`` of the connections by as many new ones.

        See :meth:`set_cy.layers.SparseLayer.evolve`. Surviving connections keep their value and
        velocity (and stay in storage order); new ones get values from the layer's ``init``
        distribution (``new_weights="init"``) or zero, and zero velocity. ``nnz`` does not change.
        The kept forward input stays valid; earlier gradients do not.

        Parameters
        ----------
        zeta : float in [0, 1]
        criterion : str or drop rule, default "signed"
            What is removed (:data:`set_cy.evolution.CRITERIA` or a :class:`set_cy.evolution.DropRule`).
        new_weights : {"init", "zeros"}, default "init"
        rng : numpy.random.Generator, optional
            Default: the layer's generator.
        grow : str or grow rule, default "random"
            Where new connections grow (:data:`set_cy.evolution.GROW_RULES` or a
            :class:`set_cy.evolution.GrowRule`). ``"gradient"`` needs the gradient of the loss at
            sampled free positions: give ``dY``, the gradient of the loss with respect to this layer's
            output for a batch, and ``X`` (that batch's input; default: the input kept by :meth:`forward`).
        grow_candidates : int, default 10
            Sampled free positions per new connection for ``grow="gradient"``.
        dY, X : array-like of shape (batch, n_out) and (batch, n_in), optional

        Returns
        -------
        int
            Number of connections replaced.
        """
        zeta = check_evolution_args(zeta, criterion, new_weights)
        grower = make_grow_rule(grow, grow_candidates)
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        score = None
        if needs_gradient(grower, make_drop_rule(criterion)):
            if dY is None:
                raise ValueError(f"criterion={criterion!r}, grow={grow!r} need the gradient: pass dY= (and X=, or "
                                 "keep the forward input)")
            dYf, _ = feature_major(dY, "dY", self.n_out, self.dtype, self.n_threads)
            score = self.layer.scorer(dYf, self._input_for(X, dYf, "gradient growth"))
        k = self.layer.evolve(zeta, self.rng if rng is None else rng, criterion=criterion, new_weights=new_weights,
                              grow=grower, score=score)
        logger.debug("SparseLinear.evolve: replaced %d of %d connections", k, self.nnz)
        return k

    def __repr__(self):
        return (f"SparseLinear({self.n_in} -> {self.n_out}, nnz={self.nnz:,}, density={self.density:.3g}, "
                f"dtype={self.dtype})")
