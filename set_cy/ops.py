"""Public, validating face of the compiled kernels.

These functions take dense arrays of shape ``(batch, features)`` and a sparse weight matrix ``W`` of
shape ``(n_in, n_out)``, check everything and call the kernels. ``W`` is either a scipy.sparse CSR
matrix (checked, and its transposed index built, on every call) or a :class:`SparseOperator`
(checked and indexed once, then reused: the fast way to call them repeatedly). The result dtype
follows the inputs (float32 or float64; mixing them is an error). ``n_threads=None`` uses all cores
(``OMP_NUM_THREADS`` is honoured); results do not depend on the number of threads.

Layouts
-------
The kernels work on *feature-major* buffers: one contiguous row of ``batch`` values per feature, i.e.
``A.T`` C-contiguous, which is a Fortran-ordered ``(batch, features)`` array (``np.asfortranarray(A)``
or the ``.T`` of a C-ordered ``(features, batch)`` array). Such inputs are used without a copy;
C-ordered ``(batch, features)`` inputs cost one transposing copy each. Results are returned in the
layout of the (first) input unless ``order`` says otherwise ("F": a view of the kernel's buffer, no
copy; "C": one copy), or written into ``out=`` (no copy when ``out`` is Fortran-ordered). The fastest
path is feature-major end to end: Fortran-ordered inputs and outputs, a :class:`SparseOperator`.

The model does not go through this module in its hot loop: its layers keep feature-major buffers
and call the kernels directly.
"""
import numpy as np
import scipy.sparse as sp

from . import _kernels, hugepages
from ._validation import check_csr, check_dense, check_scalar, resolve_n_threads
from .patterns import transpose_pattern
from .sizing import check_fits, layer_bytes

__all__ = ["SparseOperator", "sparse_matmul", "sparse_matmul_t", "sddmm", "momentum_update", "transpose_pattern"]

ORDERS = (None, "C", "F")


class SparseOperator:
    """A sparse ``W`` (``n_in x n_out``) checked and indexed once, for repeated :mod:`set_cy.ops` calls.

    The pattern is checked (:func:`set_cy._validation.check_csr`) and its transposed index built at
    construction; the pattern arrays are then copies marked read-only, so the pattern cannot change
    behind the operator's back (a new pattern needs a new operator). The values are the operator's
    own copy, stored like a layer's (the CSR of ``W^T``: by output neuron, then input neuron), so the
    forward product reads them in order; :attr:`values` is live and writable (train it with
    :func:`momentum_update`), :attr:`csr_order` maps it to ``W``'s CSR order and :meth:`to_scipy`
    gives ``W`` back. :func:`sddmm` returns gradients in the operator's order (aligned with
    :attr:`values`).

    :func:`sparse_matmul_t` reads a copy of the values in ``W``'s CSR order (the order of its product),
    made at its first call and kept with a snapshot of :attr:`values`. It is rebuilt whenever the
    values differ from that snapshot, which one sequential comparison per call finds, so any write to
    :attr:`values` is seen. Once made, the two copies take ``2 * nnz`` more values of memory. Without
    them the product would read each value through a permutation, one more random read per connection.
    On a 100k x 100k layer at batch 32 that made it 1.5x slower (``bench/bench_kernels.py --public-api``).

    Parameters
    ----------
    W : scipy.sparse CSR array or matrix of shape (n_in, n_out), float32 or float64, canonical
    n_threads : int or None, default None
        Default threads of the ops calls that get this operator (``n_threads=`` of a call wins).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from set_cy import ops
    >>> W = sp.random_array((50, 30), density=0.1, format="csr", dtype=np.float32, rng=0)
    >>> op = ops.SparseOperator(W)
    >>> X = np.asfortranarray(np.ones((8, 50), np.float32))      # feature-major: used without a copy
    >>> Y = ops.sparse_matmul(X, op)                               # Fortran-ordered, like X
    >>> np.allclose(Y, X @ W.toarray()), Y.flags.f_contiguous
    (True, True)
    """

    def __init__(self, W, *, n_threads=None):
        indptr, indices, data = check_csr(W, "W")
        self._shape = (int(W.shape[0]), int(W.shape[1]))
        # the two indices and the values, as large as a full layer's (offsets of both sides included)
        check_fits(layer_bytes(*self._shape, data.shape[0], data.dtype.itemsize)[0],
                   f"SparseOperator of a {self._shape[0]} x {self._shape[1]} matrix with {data.shape[0]} entries")
        self.n_threads = resolve_n_threads(n_threads)
        # storage: the CSR of W^T (rows = outputs); the transposed index of that is W's own CSR pattern
        s_indptr, s_indices, order = transpose_pattern(indptr, indices, self.shape[1])
        t_indptr, t_indices, perm = transpose_pattern(s_indptr, s_indices, self.shape[0])
        self.values = np.ascontiguousarray(data[order])
        self._pattern = (s_indptr, s_indices, t_indptr, t_indices, perm)
        for a in self._pattern:
            a.flags.writeable = False
        self._snapshot = self._values_t = None  # see _transposed_values

    def _transposed_values(self):
        """The values in ``W``'s CSR order, for the backward product (which then reads them in order).

        Kept between calls with a snapshot of :attr:`values` they were made from; rebuilt when the values
        differ from it (one sequential comparison per call: writes into :attr:`values` are always seen).
        """
        v = self.values
        if self._snapshot is None or not _kernels.same_values(v, self._snapshot):
            self._snapshot = v.copy()
            self._values_t = np.take(v, self._pattern[4])
        return self._values_t

    @property
    def shape(self):
        """``(n_in, n_out)``, fixed with the pattern."""
        return self._shape

    @property
    def dtype(self):
        return self.values.dtype

    @property
    def nnz(self):
        return int(self.values.shape[0])

    @property
    def csr_order(self):
        """Positions in :attr:`values` of ``W``'s entries in scipy's CSR order (a read-only view)."""
        return readonly_view(self._pattern[4])

    def to_scipy(self):
        """``W`` with the current values, as a ``scipy.sparse.csr_array`` (a copy)."""
        _, _, t_indptr, t_indices, perm = self._pattern
        return sp.csr_array((self.values[perm], t_indices.copy(), t_indptr.copy()), shape=self.shape)

    def __repr__(self):
        return f"SparseOperator({self.shape[0]} x {self.shape[1]}, nnz={self.nnz:,}, dtype={self.dtype})"


def readonly_view(a):
    """A view of ``a`` that cannot be written (nor made writable again when ``a`` itself is read-only)."""
    v = a.view()
    v.flags.writeable = False
    return v


def _operands(W, dtype):
    """``(n_in, n_out, forward, backward, sddmm, n_threads)`` of a scipy CSR or a SparseOperator.

    ``forward``/``backward``: ``(indptr, indices, values, perm)`` of the products ``W^T x`` and ``W d``;
    ``sddmm``: ``(indptr, indices, by_output)``, the pattern the gradient is computed over (rows are
    outputs when ``by_output``) and so the order of the gradient.
    """
    if isinstance(W, SparseOperator):
        if dtype is not None and W.dtype != dtype:
            raise TypeError(f"W has dtype {W.dtype} but {dtype} was expected (dtypes must not be mixed)")
        s_indptr, s_indices, t_indptr, t_indices, perm = W._pattern
        n_threads = resolve_n_threads(W.n_threads, "SparseOperator.n_threads")
        v = W.values
        if v.shape != (s_indices.shape[0],) or v.dtype != W.dtype or not v.flags.c_contiguous:
            raise ValueError("SparseOperator.values was replaced by an array of another shape or layout")
        return (W.shape[0], W.shape[1], (s_indptr, s_indices, v, None), (t_indptr, t_indices, v, perm),
                (s_indptr, s_indices, True), n_threads)
    indptr, indices, data = check_csr(W, "W", dtype=dtype)
    t_indptr, t_indices, perm = transpose_pattern(indptr, indices, W.shape[1])
    return (W.shape[0], W.shape[1], (t_indptr, t_indices, data, perm), (indptr, indices, data, None),
            (indptr, indices, False), None)


def _transpose(A, n_threads, out=None):
    """``A.T`` (A C-contiguous, 2-D) into a new or given C-contiguous array: the blocked, parallel
    :func:`set_cy._kernels.gather_transpose` (NumPy's strided copy is several times slower on wide arrays)."""
    if out is None:
        out = np.empty((A.shape[1], A.shape[0]), A.dtype)
    _kernels.gather_transpose(A, np.arange(A.shape[0], dtype=np.int64), out, n_threads)
    return out


def feature_major(A, name, n_features, dtype=None, n_threads=1):
    """``(A.T as a C-contiguous array, whether A was already feature-major)`` for ``A`` (batch, n_features).

    A Fortran-ordered ``A`` is used as it is (no copy); any other layout is copied once.
    """
    A = check_dense(A, name, 2, dtype=dtype)
    if A.shape[1] != n_features:
        raise ValueError(f"{name} must have shape (batch, {n_features}), got {A.shape}")
    if A.T.flags.c_contiguous:
        return A.T, True
    out = hugepages.empty((A.shape[1], A.shape[0]), A.dtype)  # the kernels gather its rows (set_cy.hugepages)
    if A.flags.c_contiguous:
        return _transpose(A, n_threads, out), False
    out[...] = A.T
    return out, False


def check_order(order):
    if order not in ORDERS:
        raise ValueError(f"order must be None, 'C' or 'F', got {order!r}")


def result_buffer(out, rows, batch, dtype, name="out", inputs=()):
    """The feature-major ``(rows, batch)`` buffer a kernel writes: ``out.T`` when ``out`` allows it.

    ``out`` must not overlap any of ``inputs`` (the kernels read them while writing it).
    """
    if out is None:
        return np.empty((rows, batch), dtype)
    out = check_dense(out, name, 2, dtype=dtype)
    if out.shape != (batch, rows):
        raise ValueError(f"{name} must have shape ({batch}, {rows}), got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    if any(np.may_share_memory(out, a) for a in inputs):
        raise ValueError(f"{name} must not share memory with the inputs")
    return out.T if out.T.flags.c_contiguous else np.empty((rows, batch), dtype)


def batch_major_result(buf, out, order, fortran_input, n_threads=1):
    """The ``(batch, rows)`` result of a feature-major kernel buffer ``buf`` (see :func:`result_buffer`).

    Into ``out`` when given (copied only when ``out`` is not Fortran-ordered); else ``buf.T`` (no copy)
    for ``order="F"``, or for ``order=None`` when the input was feature-major, and a C-ordered copy
    otherwise.
    """
    if out is not None:
        if not np.may_share_memory(out, buf):  # buf is out.T, or a separate buffer
            if out.flags.c_contiguous:
                _transpose(buf, n_threads, out)
            else:
                out[...] = buf.T
        return out
    if order == "F" or (order is None and fortran_input):
        return buf.T
    return _transpose(buf, n_threads)


def sparse_matmul(X, W, *, out=None, order=None, n_threads=None):
    """Dense times sparse: ``X @ W``.

    Parameters
    ----------
    X : ndarray of shape (batch, n_in), float32 or float64 (Fortran-ordered: no copy)
    W : SparseOperator, or scipy.sparse CSR array or matrix of shape (n_in, n_out), same dtype as ``X``,
        canonical
    out : ndarray of shape (batch, n_out), optional
        Written and returned (Fortran-ordered: no copy).
    order : {None, "C", "F"}, default None
        Layout of a new result; None: that of ``X`` (see the module docstring).
    n_threads : int or None, default None
        OpenMP threads; None or -1 uses all cores, ``-k`` all but ``k - 1`` (joblib's meaning); with a
        SparseOperator, None means its ``n_threads``.

    Returns
    -------
    Y : ndarray of shape (batch, n_out), dtype of ``X``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from set_cy import ops
    >>> W = sp.random_array((4, 3), density=0.5, format="csr", dtype=np.float32, rng=0)
    >>> X = np.ones((2, 4), dtype=np.float32)
    >>> np.allclose(ops.sparse_matmul(X, W), X @ W.toarray())
    True
    """
    return _product(X, "X", W, False, out, order, n_threads)


def sparse_matmul_t(D, W, *, out=None, order=None, n_threads=None):
    """Dense times transposed sparse: ``D @ W.T`` (the backward product of a layer ``X @ W``).

    Parameters
    ----------
    D : ndarray of shape (batch, n_out), float32 or float64 (Fortran-ordered: no copy)
    W : SparseOperator, or scipy.sparse CSR array or matrix of shape (n_in, n_out), same dtype as ``D``,
        canonical
    out, order, n_threads
        As in :func:`sparse_matmul`.

    Returns
    -------
    ndarray of shape (batch, n_in).
    """
    return _product(D, "D", W, True, out, order, n_threads)


def _product(A, name, W, transposed, out, order, n_threads):
    """``A @ W`` (``transposed=False``) or ``A @ W.T``, checked, through the feature-major kernel."""
    A = check_dense(A, name, 2)
    check_order(order)
    n_in, n_out, fwd, bwd, _, nt = _operands(W, A.dtype)
    n_threads = resolve_n_threads(n_threads) if n_threads is not None or nt is None else nt
    n_a, n_res, pattern = (n_out, n_in, bwd) if transposed else (n_in, n_out, fwd)
    if A.shape[1] != n_a:
        what = f"{n_out} columns (D @ W.T" if transposed else f"{n_in} rows (X @ W"
        raise ValueError(f"{name} has {A.shape[1]} columns but W has {what} needs them equal)")
    Af, fortran = feature_major(A, name, n_a, n_threads=n_threads)
    buf = result_buffer(out, n_res, A.shape[0], A.dtype, inputs=(Af, pattern[2]))
    if transposed and isinstance(W, SparseOperator):  # its values in this product's order: no permutation
        pattern = (pattern[0], pattern[1], W._transposed_values(), None)
    _kernels.spmm(*pattern, Af, buf, None, n_threads)
    return batch_major_result(buf, out, order, fortran, n_threads)


def sddmm(X, D, W, *, out=None, n_threads=None):
    """Sampled dense-dense product on the pattern of ``W``: the weight gradient of ``X @ W``.

    ``g[k] = sum_b X[b, i_k] * D[b, j_k]`` for the ``k``-th stored entry ``(i_k, j_k)`` of ``W``, i.e.
    ``(X.T @ D)`` evaluated only where ``W`` has a connection: in ``W``'s CSR order for a scipy
    matrix, in the operator's order (aligned with :attr:`SparseOperator.values`) for a SparseOperator.

    Parameters
    ----------
    X : ndarray of shape (batch, n_in) (Fortran-ordered: no copy)
    D : ndarray of shape (batch, n_out), same dtype as ``X`` (Fortran-ordered: no copy)
    W : SparseOperator, or scipy.sparse CSR array or matrix of shape (n_in, n_out), same dtype, canonical
    out : ndarray of shape (nnz,), C-contiguous, writeable, optional
    n_threads : int or None, default None

    Returns
    -------
    g : ndarray of shape (nnz,)
    """
    X = check_dense(X, "X", 2)
    D = check_dense(D, "D", 2, dtype=X.dtype)
    n_in, n_out, _, _, (indptr, indices, by_output), nt = _operands(W, X.dtype)
    n_threads = resolve_n_threads(n_threads) if n_threads is not None or nt is None else nt
    if X.shape[0] != D.shape[0]:
        raise ValueError(f"X and D must have the same number of rows (batch), got {X.shape[0]} and {D.shape[0]}")
    if X.shape[1] != n_in or D.shape[1] != n_out:
        raise ValueError(f"shapes do not match: X {X.shape}, D {D.shape}, W {(n_in, n_out)} "
                         f"(need X.shape[1] == W.shape[0] and D.shape[1] == W.shape[1])")
    Xf, _ = feature_major(X, "X", n_in, n_threads=n_threads)
    Df, _ = feature_major(D, "D", n_out, n_threads=n_threads)
    if out is None:
        out = np.empty(indices.shape[0], dtype=X.dtype)
    else:
        out = _check_inplace_vector(out, "out", dtype=X.dtype)
        if out.shape != (indices.shape[0],):
            raise ValueError(f"out must have shape ({indices.shape[0]},), got {out.shape}")
        if np.may_share_memory(out, Xf) or np.may_share_memory(out, Df):
            raise ValueError("out must not share memory with the inputs")
    if by_output:
        _kernels.sddmm(indptr, indices, Df, Xf, out, n_threads)
    else:
        _kernels.sddmm(indptr, indices, Xf, Df, out, n_threads)
    return out


def _check_inplace_vector(a, name, dtype=None):
    a = check_dense(a, name, 1, dtype=dtype)
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (it is updated in place)")
    if not a.flags.writeable:
        raise ValueError(f"{name} must be writeable (it is updated in place)")
    return a


def momentum_update(weights, velocity, grad, *, lr, momentum, weight_decay, nesterov=False, n_threads=None):
    """Sparse SGD step with momentum and weight decay, in place over the stored values.

    ``velocity = momentum * velocity - lr * (grad + weight_decay * weights)``, then
    ``weights += velocity``. With ``nesterov=True`` the step is
    ``weights += momentum * velocity - lr * (grad + weight_decay * weights)`` instead.

    Parameters
    ----------
    weights, velocity : ndarray of shape (nnz,), C-contiguous, writeable; updated in place
    grad : ndarray of shape (nnz,), same dtype
    lr : float, >= 0
    momentum : float, in [0, 1]
    weight_decay : float, >= 0
    nesterov : bool, default False
    n_threads : int or None, default None
    """
    weights = _check_inplace_vector(weights, "weights")
    velocity = _check_inplace_vector(velocity, "velocity", dtype=weights.dtype)
    grad = check_dense(grad, "grad", 1, dtype=weights.dtype)
    if not (weights.shape == velocity.shape == grad.shape):
        raise ValueError(f"weights, velocity and grad must have the same length, got "
                         f"{weights.shape[0]}, {velocity.shape[0]}, {grad.shape[0]}")
    if np.shares_memory(weights, velocity):
        raise ValueError("weights and velocity must not share memory")
    lr = check_scalar(lr, "lr", min_val=0.0)
    momentum = check_scalar(momentum, "momentum", min_val=0.0, max_val=1.0)
    weight_decay = check_scalar(weight_decay, "weight_decay", min_val=0.0)
    n_threads = resolve_n_threads(n_threads)
    _kernels.momentum_update(weights, velocity, np.ascontiguousarray(grad), lr, momentum, weight_decay,
                             bool(nesterov), n_threads)
