"""A truly sparse layer: one connection pattern and everything aligned to it.

The weights ``W`` (``n_in x n_out``) are stored as the CSR of ``W^T`` (row = output neuron), so the
forward product over feature-major activations is one contiguous AXPY per connection and each output
row has one owner thread. With ``storage="full"`` (the default) the backward product ``dY @ W^T`` walks
the transposed index (the CSR pattern of ``W``) and reads the values through a permutation, so values,
velocity and gradient exist once, in one order. With ``storage="compact"`` there is no transposed
index: the backward product scatters the rows of ``W^T`` (8 bytes less per connection with int32
indices; see :data:`set_cy.sizing.STORAGES`). Evolution rewrites pattern, values, velocity and the
transposed index together.
"""
import numpy as np
import scipy.sparse as sp

from . import _kernels
from ._validation import (
    LAYER_ARRAYS,
    check_csr,
    check_float_dtype,
    check_int,
    check_layer_arrays,
    check_transpose,
    resolve_n_threads,
)
from .evolution import select_to_remove
from .patterns import draw_free_positions, draw_free_positions_in, drop_entries, transpose_pattern
from .sizing import check_fits, check_storage, index_dtype_for, layer_bytes, uses_scatter

__all__ = ["SparseLayer", "INITS"]

#: Weight initialisations of a new layer (``init=``).
INITS = ("he_uniform", "xavier", "normal", "zeros")


def init_values(rng, init, size, n_in, n_out, nnz, dtype):
    """Initial values of ``size`` connections of a layer with ``nnz`` connections.

    The fan-in and fan-out are those of the sparse layer (``nnz / n_out`` inputs per output neuron,
    ``nnz / n_in`` outputs per input neuron on average), so that the signal keeps its scale however
    sparse the layer is. ``"normal"`` is the SET reference's N(0, 0.1^2) regardless of fan-in.
    """
    fan_in = max(nnz / max(n_out, 1), 1.0)
    fan_out = max(nnz / max(n_in, 1), 1.0)
    if init == "he_uniform":
        limit = np.sqrt(6.0 / fan_in)
        return rng.uniform(-limit, limit, size).astype(dtype)
    if init == "xavier":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size).astype(dtype)
    if init == "normal":
        return (0.1 * rng.standard_normal(size)).astype(dtype)
    if init == "zeros":
        return np.zeros(size, dtype)
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


class SparseLayer:
    """Sparse connections from ``n_in`` to ``n_out`` neurons, with bias and momentum buffers.

    The constructor is the one way to make a layer from arrays (a file, a state dict, shared memory):
    it checks them all (:func:`set_cy._validation.check_layer_arrays`) before a kernel can see them
    and raises ``ValueError`` naming the array and what is wrong. The arrays are used as given (C-
    contiguous ones are not copied). Code that built the arrays itself (a random layer, a replica over
    a checked layer's arrays) skips the checks with ``trusted=True``, and only that way.

    Parameters
    ----------
    n_in, n_out : int
    indptr, indices : ndarray
        Canonical CSR pattern of ``W^T`` (``n_out`` rows, ``n_in`` columns), same integer dtype.
    data : ndarray of float32 or float64
        Values in that order.
    bias, velocity, bias_velocity : ndarray, optional
        Zero when omitted.
    t_indptr, t_indices, perm : ndarray, optional
        The transposed index of this pattern (see :func:`set_cy.patterns.transpose_pattern`), when the
        caller already has it (e.g. in shared memory); built from the pattern when omitted. Checked
        against the pattern unless ``trusted``. Not with ``storage="compact"``.
    storage : {"full", "compact"}, default "full"
        ``"compact"`` keeps no transposed index (the three arrays above are None) and computes the
        backward product by a scatter (:func:`set_cy._kernels.spmm_scatter_owned`); same results up
        to rounding.
    init : str
        Distribution of the values of connections grown by :meth:`evolve`.
    n_threads : int or None
    trusted : bool, default False
        The arrays were built or checked by set_cy itself: skip the checks.
    name : str, default "layer"
        Prefix of the arrays' names in error messages (``"layer0"`` names ``layer0_indices``).
    use_bias : bool, default True
        False: the layer adds no bias (its ``bias`` stays zero and is never updated), as the linear
        path of a network, whose outputs share the output layer's bias.
    """

    TRANSPOSE = ("t_indptr", "t_indices", "perm")

    def __init__(self, n_in, n_out, indptr, indices, data, *, bias=None, velocity=None, bias_velocity=None,
                 t_indptr=None, t_indices=None, perm=None, init="he_uniform", n_threads=1, trusted=False,
                 name="layer", storage="full", use_bias=True):
        transpose = (t_indptr, t_indices, perm)
        given = [a is not None for a in transpose]
        if any(given) and not all(given):
            raise ValueError("t_indptr, t_indices and perm go together: give all three or none")
        if check_storage(storage) == "compact" and any(given):
            raise ValueError('storage="compact" keeps no transposed index: do not pass t_indptr, t_indices, perm')
        if not trusted:
            n_in = check_int(n_in, "n_in", min_val=1)
            n_out = check_int(n_out, "n_out", min_val=1)
            if init not in INITS:
                raise ValueError(f"init must be one of {INITS}, got {init!r}")
            n_threads = resolve_n_threads(n_threads)
            data = np.asarray(data)
            dtype = check_float_dtype(data.dtype, f"{name}_data")
            if data.ndim == 1:  # what is allocated from the sizes (not the arrays given) must fit
                nnz = data.shape[0]
                idx = np.dtype(index_dtype_for(n_in, n_out, nnz)).itemsize
                new = (n_in + 1 + 2 * nnz) * idx if storage == "full" and not any(given) else 0
                new += dtype.itemsize * ((nnz if velocity is None else 0) + (n_out if bias is None else 0)
                                         + (n_out if bias_velocity is None else 0))
                check_fits(new, f"{name}: the transposed index and zero arrays of a {n_in} x {n_out} layer "
                                f"with {nnz} connections")
            arrays = {"indptr": indptr, "indices": indices, "data": data,
                      "velocity": np.zeros_like(data) if velocity is None else velocity,
                      "bias": np.zeros(n_out, dtype) if bias is None else bias,
                      "bias_velocity": np.zeros(n_out, dtype) if bias_velocity is None else bias_velocity}
            arrays = check_layer_arrays(n_in, n_out, arrays, dtype, name)
            indptr, indices, data = arrays["indptr"], arrays["indices"], arrays["data"]
            velocity, bias, bias_velocity = arrays["velocity"], arrays["bias"], arrays["bias_velocity"]
            if all(given):
                transpose = tuple(np.ascontiguousarray(a) for a in transpose)
                check_transpose(indptr, indices, n_in, *transpose, name=name)
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.indptr, self.indices, self.data = indptr, indices, data
        dtype = data.dtype
        self.velocity = np.zeros_like(data) if velocity is None else velocity
        self.bias = np.zeros(self.n_out, dtype) if bias is None else bias
        self.bias_velocity = np.zeros(self.n_out, dtype) if bias_velocity is None else bias_velocity
        self.init = init
        self.n_threads = n_threads
        self.lr_scale = 1.0  # multiplies the learning rate of this layer (see SparseNetwork's lr_scaling)
        self.storage = storage
        self.use_bias = bool(use_bias)
        if all(given):
            self.t_indptr, self.t_indices, self.perm = transpose
        else:
            self._build_transpose()

    # ------------------------------------------------------------------------------------------
    @classmethod
    def random(cls, n_in, n_out, nnz, rng, *, init="he_uniform", dtype=np.float32, n_threads=1, storage="full",
               use_bias=True):
        """Erdős–Rényi layer: exactly ``nnz`` distinct connections at uniformly random positions.

        Refuses (``ValueError``, :func:`~set_cy.sizing.check_fits`) a layer that the available memory
        cannot hold, before allocating.
        """
        check_fits(sum(layer_bytes(n_in, n_out, nnz, np.dtype(dtype).itemsize, storage)),
                   f"a {n_in} x {n_out} layer with {nnz} connections")
        idx = index_dtype_for(n_in, n_out, nnz)
        indptr, indices = draw_free_positions(rng, n_out, n_in, nnz, index_dtype=idx, n_threads=n_threads)
        data = init_values(rng, init, nnz, n_in, n_out, nnz, dtype)
        return cls(n_in, n_out, indptr, indices, data, init=init, n_threads=n_threads, trusted=True,
                   storage=storage, use_bias=use_bias)

    @classmethod
    def from_scipy(cls, W, *, bias=None, init="he_uniform", n_threads=1):
        """Layer with the connections of a canonical CSR ``W`` (``n_in x n_out``), checked."""
        indptr, indices, data = check_csr(W, "W")
        check_fits(layer_bytes(W.shape[0], W.shape[1], data.shape[0], data.dtype.itemsize)[0],
                   f"W: a {W.shape[0]} x {W.shape[1]} layer with {data.shape[0]} connections")
        t_indptr, t_indices, perm = transpose_pattern(indptr, indices, W.shape[1])
        return cls(W.shape[0], W.shape[1], t_indptr, t_indices, np.ascontiguousarray(data[perm]),
                   bias=None if bias is None else np.asarray(bias, data.dtype).copy(), init=init,
                   n_threads=n_threads)

    def arrays(self):
        """The layer's arrays by name (:data:`~set_cy._validation.LAYER_ARRAYS`, and :attr:`TRANSPOSE`
        with ``storage="full"``), not copied: ``SparseLayer(n_in, n_out, **layer.arrays(),
        storage=layer.storage)`` is a layer over the same memory."""
        names = LAYER_ARRAYS + (self.TRANSPOSE if self.storage == "full" else ())
        return {name: getattr(self, name) for name in names}

    def _build_transpose(self):
        if self.storage == "compact":
            self.t_indptr = self.t_indices = self.perm = None
            return
        self.t_indptr, self.t_indices, self.perm = transpose_pattern(self.indptr, self.indices, self.n_in)

    # ------------------------------------------------------------------------------------------
    @property
    def fan_in(self):
        """Mean number of connections into an output neuron."""
        return self.nnz / self.n_out

    @property
    def nnz(self):
        return int(self.indices.shape[0])

    @property
    def density(self):
        return self.nnz / (self.n_in * self.n_out)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def nbytes(self):
        """Bytes held by the layer's arrays (pattern, transposed index if any, values, velocity, bias)."""
        return sum(a.nbytes for a in (self.indptr, self.indices, self.data, self.velocity, self.bias,
                                      self.bias_velocity, self.t_indptr, self.t_indices, self.perm)
                   if a is not None)

    def to_scipy(self):
        """The weights as a ``scipy.sparse.csr_array`` of shape ``(n_in, n_out)`` (a copy)."""
        if self.storage == "compact":
            t_indptr, t_indices, perm = transpose_pattern(self.indptr, self.indices, self.n_in)
        else:
            t_indptr, t_indices, perm = self.t_indptr.copy(), self.t_indices.copy(), self.perm
        return sp.csr_array((self.data[perm], t_indices, t_indptr), shape=(self.n_in, self.n_out))

    # ------------------------------------------------------------------------------------------
    # feature-major compute; buffers are C-contiguous (features, batch) and owned by the caller
    def forward(self, X, out):
        """``out = W^T X + bias`` for inputs ``X`` (n_in, B) into ``out`` (n_out, B)."""
        _kernels.spmm(self.indptr, self.indices, self.data, None, X, out, self.bias if self.use_bias else None,
                      self.n_threads)

    def gathers_backward(self, batch, scratch=True):
        """Whether :meth:`backward_input` gathers rows of ``dY`` (walks the transposed index) at this batch."""
        return self.storage == "full" and not (scratch and uses_scatter(self.nnz, self.data.itemsize, batch))

    def backward_input(self, dY, out, scratch=None, dY_rows=None):
        """``out = W dY``: gradient with respect to the inputs, ``dY`` (n_out, B) -> ``out`` (n_in, B).

        With ``storage="compact"`` the rows of ``W^T`` are scattered, each thread owning a range of
        ``out``'s rows (no scratch). With a ``scratch`` array of shape ``(SCATTER_PARTS, >= n_in * B)``
        and a batch for which :func:`uses_scatter` holds, they are scattered into partial sums instead
        of walking the transposed index. Otherwise the product gathers rows of ``dY_rows`` when given
        (a bfloat16 copy of ``dY``, see :func:`set_cy._kernels.to_bfloat16`), else of ``dY``.
        """
        if not self.gathers_backward(dY.shape[1], scratch is not None):
            if self.storage == "compact":
                _kernels.spmm_scatter_owned(self.indptr, self.indices, self.data, dY, out, self.n_threads)
            else:
                _kernels.spmm_scatter(self.indptr, self.indices, self.data, dY, out, scratch, self.n_threads)
        else:
            _kernels.spmm(self.t_indptr, self.t_indices, self.data, self.perm, dY if dY_rows is None else dY_rows,
                          out, None, self.n_threads)

    def gradient(self, dY, X, out=None, out_bias=None):
        """Weight gradient at the stored connections (``sum_b dY[j, b] X[i, b]``) and bias gradient.

        Written into ``out`` (nnz,) and ``out_bias`` (n_out,) when given; returns both. ``X`` (gathered)
        may be a bfloat16 copy of the inputs under float32 values, here and in :meth:`fused_update`.
        """
        if out is None:
            out = np.empty_like(self.data)
        if out_bias is None:
            out_bias = np.empty(self.n_out, dtype=self.dtype)
        _kernels.sddmm(self.indptr, self.indices, dY, X, out, self.n_threads, out_bias if self.use_bias else None)
        if not self.use_bias:
            out_bias[:] = 0
        return out, out_bias

    def apply_gradient(self, grad, grad_bias, lr, momentum, weight_decay, nesterov=False, part=None):
        """Momentum SGD step from given gradients (weight decay on weights only, not on biases).

        ``part=(k, n_parts)`` updates only the k-th of ``n_parts`` equal ranges of the connections, on
        the calling thread, and not the biases (``grad_bias`` is ignored): data-parallel workers
        update disjoint ranges side by side.
        """
        scaled = lr * self.lr_scale
        if part is not None:
            lo, hi = self.part_range(part)
            _kernels.momentum_update(self.data[lo:hi], self.velocity[lo:hi], grad[lo:hi], scaled, momentum,
                                     weight_decay, nesterov, 1)
            return
        _kernels.momentum_update(self.data, self.velocity, grad, scaled, momentum, weight_decay, nesterov,
                                 self.n_threads)
        if self.use_bias:
            self.apply_bias_gradient(grad_bias, lr, momentum, nesterov)

    def part_range(self, part):
        """Connections ``lo:hi`` of part ``k`` of ``n_parts`` equal ranges, ``part = (k, n_parts)``."""
        k, n_parts = part
        return self.nnz * k // n_parts, self.nnz * (k + 1) // n_parts

    def apply_bias_gradient(self, grad_bias, lr, momentum, nesterov=False):
        """Momentum SGD step of the biases alone (no weight decay), on the calling thread."""
        _kernels.momentum_update(self.bias, self.bias_velocity, np.ascontiguousarray(grad_bias, self.dtype),
                                 lr * self.lr_scale, momentum, 0.0, nesterov, 1)

    def fused_update(self, dY, X, lr, momentum, weight_decay, nesterov=False):
        """Gradient and momentum step in one pass over the connections (no gradient buffer)."""
        _kernels.sddmm_momentum_update(self.indptr, self.indices, dY, X, self.data, self.velocity, lr * self.lr_scale,
                                       momentum,
                                       weight_decay, nesterov, self.n_threads, *((self.bias, self.bias_velocity)
                                                                                 if self.use_bias else ()))

    # ------------------------------------------------------------------------------------------
    def evolve(self, zeta, rng, *, criterion="signed", new_weights="init", inputs=None):
        """One SET step: remove the fraction ``zeta`` of connections, grow as many at free positions.

        Removed connections are chosen by :func:`set_cy.evolution.select_to_remove`. New connections
        are drawn uniformly among the positions not kept (a removed position may be drawn again), get
        values from the layer's init distribution (``new_weights="init"``) or zero (``"zeros"``), and
        zero velocity. The number of connections does not change.

        Parameters
        ----------
        inputs : ndarray of int, optional
            Sorted input neurons the layer should connect to (the active inputs of a network whose
            inputs were pruned). Only their connections take part in the SET step; connections of
            other inputs ("parked") are moved onto free positions of these inputs as long as there
            are any (chosen at random), and otherwise stay where they are, so that the number of
            connections never changes.

        Returns
        -------
        int
            Number of connections replaced.
        """
        keep = np.ones(self.nnz, dtype=np.uint8)
        if inputs is None:
            keep[select_to_remove(self.data, zeta, criterion)] = 0
        else:
            outside = np.ones(self.n_in, dtype=bool)
            outside[inputs] = False
            parked = outside[self.indices]
            on = np.flatnonzero(~parked)
            keep[on[select_to_remove(self.data[on], zeta, criterion)]] = 0
            parked = np.flatnonzero(parked)
            room = self.n_out * int(np.asarray(inputs).shape[0]) - on.shape[0]  # never-used cells of the inputs
            if parked.shape[0] and room > 0:
                keep[rng.choice(parked, min(room, parked.shape[0]), replace=False)] = 0
        k = self.nnz - int(np.count_nonzero(keep))
        if k == 0:
            return 0
        nt = self.n_threads
        # the new positions are drawn among those not kept before the layer changes (a failure leaves it
        # as it was); only the kept pattern is copied for that, not their values and velocities
        k_indptr, k_indices = drop_entries(self.indptr, self.indices, keep, nt)
        if inputs is None:
            b_indptr, b_indices = draw_free_positions(rng, self.n_out, self.n_in, k, k_indptr, k_indices,
                                                      n_threads=nt)
        else:
            b_indptr, b_indices = draw_free_positions_in(rng, self.n_out, self.n_in, k, k_indptr, k_indices, inputs,
                                                         n_threads=nt)
        del k_indptr, k_indices
        b_data = init_values(rng, "zeros" if new_weights == "zeros" else self.init, k, self.n_in, self.n_out,
                             self.nnz, self.dtype)
        # in the layer's own arrays: the kept connections move to the front, then the new ones are merged in
        # from the back (no copy of the values and velocities)
        _kernels.csr_compact_inplace(self.indptr, self.indices, self.data, self.velocity, keep)
        del keep
        _kernels.csr_merge_inplace(self.indptr, self.indices, self.data, self.velocity, b_indptr, b_indices, b_data)
        del b_indptr, b_indices, b_data
        self._build_transpose()
        return k

    def __repr__(self):
        return (f"SparseLayer({self.n_in} -> {self.n_out}, nnz={self.nnz:,}, density={self.density:.3g}, "
                f"dtype={self.dtype}" + (", storage='compact')" if self.storage == "compact" else ")"))
