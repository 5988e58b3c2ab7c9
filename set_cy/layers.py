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
    check_pattern,
    check_transpose,
    resolve_n_threads,
)
from .evolution import make_drop_rule, make_grow_rule, needs_gradient
from .patterns import (
    contains,
    draw_free_positions,
    drop_entries,
    empty_pattern,
    row_ids,
    transpose_pattern,
)
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

    def scorer(self, dY, X):
        """``score(indptr, indices)``: the gradient ``sum_b dY[j, b] X[i, b]`` at the positions of any CSR
        pattern of ``W^T`` (rows ``j``: output neurons, columns ``i``: input neurons), stored or not.

        ``dY`` (n_out, batch) and ``X`` (n_in, batch) are feature-major, as for :meth:`gradient`; one
        SDDMM per call. What gradient-based grow rules of :mod:`set_cy.evolution` are given.
        """
        def score(indptr, indices):
            out = np.empty(indices.shape[0], dtype=self.dtype)
            if indices.shape[0]:
                _kernels.sddmm(indptr, indices, dY, X, out, self.n_threads)
            return out
        return score

    # ------------------------------------------------------------------------------------------
    def evolve(self, zeta, rng, *, criterion="signed", new_weights="init", inputs=None, grow="random", score=None,
               shrink=0):
        """One evolution step: remove the fraction ``zeta`` of connections, grow as many at free positions.

        The drop rule ``criterion`` chooses the connections removed, the grow rule ``grow`` the new
        positions among those not kept (a removed position may be chosen again); both are names or
        objects of :mod:`set_cy.evolution` (the defaults are SET's: signed magnitude, uniform
        random). New connections get values from the layer's init distribution (``new_weights="init"``)
        or zero (``"zeros"``), and zero velocity. The number of connections does not change.

        Parameters
        ----------
        criterion : str or drop rule, default "signed"
        grow : str or grow rule, default "random"
        score : callable, optional
            For rules that need the gradient (drop or grow): ``score(indptr, indices)``, the gradient of the loss at
            the positions of a CSR pattern of ``W^T`` (:meth:`scorer` makes one from a batch).
        inputs : ndarray of int, optional
            Sorted input neurons the layer should connect to (the active inputs of a network whose
            inputs were pruned). Only their connections take part in the SET step; connections of
            other inputs ("parked") are moved onto free positions of these inputs as long as there
            are any (chosen at random), and otherwise stay where they are, so that the number of
            connections never changes.
        shrink : int, default 0
            Connections removed without regrowth (gradual density change): the drop rule removes
            ``shrink`` more than ``zeta`` asks for, and ``shrink`` fewer grow, so the layer ends with
            exactly ``nnz - shrink`` connections (``shrink < (1 - zeta) * nnz``).

        Returns
        -------
        int
            Number of connections removed (regrown: that minus ``shrink``).
        """
        drop, grower = make_drop_rule(criterion), make_grow_rule(grow)
        shrink = self._check_shrink(zeta, shrink)
        keep = self.drop_mask(zeta, rng, drop, inputs=inputs, score=score, shrink=shrink)
        k = self.nnz - int(np.count_nonzero(keep))
        if k == 0:
            return 0
        # the new positions are chosen among those not kept before the layer changes (a failure leaves it
        # as it was); only the kept pattern is copied for that, not their values and velocities
        k_indptr, k_indices = drop_entries(self.indptr, self.indices, keep, self.n_threads)
        b_indptr, b_indices = self.grow_checked(grower, rng, k - shrink, (k_indptr, k_indices), inputs=inputs,
                                                score=score)
        del k_indptr, k_indices
        return self.rewire(keep, b_indptr, b_indices, rng, new_weights=new_weights)

    def _check_shrink(self, zeta, shrink):
        """Validated ``shrink`` of :meth:`evolve` (an int below ``(1 - zeta) * nnz``)."""
        shrink = check_int(shrink, "shrink", min_val=0)
        if shrink and shrink >= (1.0 - zeta) * self.nnz:
            raise ValueError(f"shrink={shrink} must be below (1 - zeta) * nnz = {(1.0 - zeta) * self.nnz:g}: a layer "
                             "keeps at least one connection")
        return shrink

    def grow_checked(self, grow, rng, count, kept, *, inputs=None, score=None):
        """The positions the grow rule ``grow`` chooses for ``count`` new connections beside the ``kept``
        pattern, checked before they reach a kernel: a canonical pattern of this layer's shape with
        ``count`` entries, none of them kept (rules may be user code). ``count=0`` asks no rule."""
        if count == 0:
            return empty_pattern(self.n_out, self.indices.dtype)
        indptr, indices = grow.grow(rng, self.n_out, self.n_in, count, *kept, inputs=inputs, score=score,
                                    n_threads=self.n_threads)
        indptr = np.asarray(indptr, dtype=self.indices.dtype)
        indices = np.asarray(indices, dtype=self.indices.dtype)
        if indices.shape[0] != count:
            raise ValueError(f"the grow rule {grow!r} returned {indices.shape[0]} positions for {count} new "
                             "connections")
        check_pattern(indptr, indices, self.n_out, self.n_in, f"the positions of the grow rule {grow!r}")
        if np.any(contains(kept, row_ids(indptr), indices, self.n_threads)):
            raise ValueError(f"the grow rule {grow!r} returned positions of connections that are kept")
        return indptr, indices

    def drop_mask(self, zeta, rng, criterion, *, inputs=None, score=None, shrink=0):
        """The first half of :meth:`evolve`: a uint8 mask over the connections, 0 for those to remove.

        ``criterion`` chooses among the connections of ``inputs`` (all when None) the fraction ``zeta``
        of them and ``shrink`` more (those removed without regrowth); at least ``shrink`` are removed
        (the weakest by ``|w|`` among those kept make up a rule's rounding). Connections of other
        inputs are removed as long as the inputs have free cells to take them (chosen with ``rng``).
        """
        drop = make_drop_rule(criterion)
        zeta = zeta + shrink / max(self.nnz, 1)
        gradient = None
        if needs_gradient(drop):
            if score is None:
                raise ValueError(f"criterion={criterion!r} needs the gradient: evolve with a mini-batch")
            gradient = score(self.indptr, self.indices)
        keep = np.ones(self.nnz, dtype=np.uint8)
        if inputs is None:
            keep[drop.select(self.data, zeta, velocity=self.velocity,
                             **({} if gradient is None else {"gradient": gradient}))] = 0
            return _at_least(keep, self.data, shrink)
        outside = np.ones(self.n_in, dtype=bool)
        outside[inputs] = False
        parked = outside[self.indices]
        on = np.flatnonzero(~parked)
        keep[on[drop.select(self.data[on], zeta, velocity=self.velocity[on],
                            **({} if gradient is None else {"gradient": gradient[on]}))]] = 0
        del gradient
        parked = np.flatnonzero(parked)
        room = self.n_out * int(np.asarray(inputs).shape[0]) - on.shape[0]  # never-used cells of the inputs
        if parked.shape[0] and room > 0:
            keep[rng.choice(parked, min(room, parked.shape[0]), replace=False)] = 0
        return _at_least(keep, self.data, shrink)

    def rewire(self, keep, b_indptr, b_indices, rng, *, new_weights="init"):
        """The second half of :meth:`evolve`: remove the connections where ``keep`` is 0 and add those of the
        canonical pattern ``(b_indptr, b_indices)`` (as many or fewer, none of them kept), with
        ``new_weights`` values and zero velocity. Returns the number removed."""
        nnz = self.nnz
        k = nnz - int(np.count_nonzero(keep))
        if k == 0:
            return 0
        n_new = int(b_indices.shape[0])
        b_data = self._new_values(rng, n_new, new_weights)
        # in the layer's own arrays: the kept connections move to the front, then the new ones are merged in
        # from the back (no copy of the values and velocities)
        _kernels.csr_compact_inplace(self.indptr, self.indices, self.data, self.velocity, keep)
        del keep
        _kernels.csr_merge_inplace(self.indptr, self.indices, self.data, self.velocity, b_indptr, b_indices, b_data)
        del b_indptr, b_indices, b_data
        if n_new < k:  # fewer grown than removed: the arrays end at the new count
            total = nnz - k + n_new
            self.indices, self.data, self.velocity = (a[:total].copy() for a in (self.indices, self.data,
                                                                                 self.velocity))
        self._build_transpose()
        return k

    def _new_values(self, rng, count, new_weights):
        """Values of ``count`` new connections: zero, or drawn from the layer's init distribution."""
        return init_values(rng, "zeros" if new_weights == "zeros" else self.init, count, self.n_in, self.n_out,
                           self.nnz, self.dtype)

    def select_neurons(self, outputs=None, inputs=None):
        """A new layer over the given output neurons (rows of ``W^T``) and input neurons (its columns),
        renumbered in their order; the connections, biases and momentum of the others are dropped.

        ``outputs``, ``inputs``: sorted unique int arrays in range, or None (all). What neuron pruning
        does to the two layers beside a hidden layer (:meth:`set_cy.SparseNetwork.prune_neurons`).
        """
        n_out = self.n_out if outputs is None else int(outputs.shape[0])
        n_in = self.n_in if inputs is None else int(inputs.shape[0])
        rows = row_ids(self.indptr)
        keep = np.ones(self.nnz, dtype=bool)
        new_rows, new_cols = rows, self.indices
        if outputs is not None:
            out_map = np.full(self.n_out, -1, np.int64)
            out_map[outputs] = np.arange(n_out)
            new_rows = out_map[rows]
            keep &= new_rows >= 0
        if inputs is not None:
            in_map = np.full(self.n_in, -1, np.int64)
            in_map[inputs] = np.arange(n_in)
            new_cols = in_map[self.indices]
            keep &= new_cols >= 0
        sel = np.flatnonzero(keep)
        dtype = self.indices.dtype
        indptr = np.zeros(n_out + 1, dtype)  # the maps keep the order: the pattern stays canonical
        np.cumsum(np.bincount(new_rows[sel], minlength=n_out), out=indptr[1:])
        bias = self.bias if outputs is None else self.bias[outputs]
        bias_velocity = self.bias_velocity if outputs is None else self.bias_velocity[outputs]
        layer = SparseLayer(n_in, n_out, indptr, np.ascontiguousarray(new_cols[sel], dtype=dtype),
                            np.ascontiguousarray(self.data[sel]), bias=np.ascontiguousarray(bias),
                            velocity=np.ascontiguousarray(self.velocity[sel]),
                            bias_velocity=np.ascontiguousarray(bias_velocity), init=self.init,
                            n_threads=self.n_threads, trusted=True, storage=self.storage, use_bias=self.use_bias)
        layer.lr_scale = self.lr_scale
        return layer

    def add_connections(self, count, rng, *, new_weights="zeros", inputs=None):
        """Grow ``count`` connections at uniform random free positions (fewer when the layer has fewer free
        cells; of the input neurons ``inputs`` first, when given), with ``new_weights`` values and zero
        velocity. Returns the number added."""
        count = int(min(int(count), self.n_in * self.n_out - self.nnz))
        if count <= 0:
            return 0
        b_indptr, b_indices = make_grow_rule("random").grow(rng, self.n_out, self.n_in, count, self.indptr,
                                                            self.indices, inputs=inputs, n_threads=self.n_threads)
        b_data = self._new_values(rng, count, new_weights)
        nnz = self.nnz
        grown = []
        for a in (self.indices, self.data, self.velocity):
            out = np.empty(nnz + count, a.dtype)
            out[:nnz] = a
            grown.append(out)
        self.indices, self.data, self.velocity = grown
        _kernels.csr_merge_inplace(self.indptr, self.indices, self.data, self.velocity, b_indptr,
                                   b_indices.astype(self.indices.dtype, copy=False), b_data)
        self._build_transpose()
        return count

    def __repr__(self):
        return (f"SparseLayer({self.n_in} -> {self.n_out}, nnz={self.nnz:,}, density={self.density:.3g}, "
                f"dtype={self.dtype}" + (", storage='compact')" if self.storage == "compact" else ")"))


def _at_least(keep, values, count):
    """``keep`` with at least ``count`` zeros: the smallest ``|values|`` among the kept make up the rest."""
    short = count - (keep.shape[0] - int(np.count_nonzero(keep)))
    if short > 0:
        kept = np.flatnonzero(keep)
        keep[kept[np.argpartition(np.abs(values[kept]), short - 1)[:short]]] = 0
    return keep
