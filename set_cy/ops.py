"""Public, validating face of the compiled kernels.

These functions take batch-major dense arrays (``batch x features``, as users hold their data) and
scipy.sparse CSR weights ``W`` of shape ``(n_in, n_out)``, check everything, convert at this boundary
to the feature-major layout the kernels use, and call them. The result dtype follows the inputs
(float32 or float64; mixing them is an error). ``n_threads=None`` uses all cores (``OMP_NUM_THREADS``
is honoured); results do not depend on the number of threads.

The model does not go through this module in its hot loop: its layers keep feature-major buffers
and call the kernels directly.
"""
import numpy as np

from . import _kernels
from ._validation import check_csr, check_dense, check_scalar, resolve_n_threads
from .patterns import transpose_pattern

__all__ = ["sparse_matmul", "sparse_matmul_t", "sddmm", "momentum_update", "transpose_pattern"]


def _feature_major(A):
    """``A.T`` as a C-contiguous array (one copy)."""
    return np.ascontiguousarray(A.T)


def sparse_matmul(X, W, *, n_threads=None):
    """Dense times sparse: ``X @ W``.

    Parameters
    ----------
    X : ndarray of shape (batch, n_in), float32 or float64
    W : scipy.sparse CSR array or matrix of shape (n_in, n_out), same dtype as ``X``, canonical
    n_threads : int or None, default None
        OpenMP threads; None or -1 uses all cores, ``-k`` all but ``k - 1`` (joblib's meaning).

    Returns
    -------
    Y : ndarray of shape (batch, n_out), C-contiguous, dtype of ``X``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from set_cy import ops
    >>> W = sp.random_array((4, 3), density=0.5, format="csr", dtype=np.float32, rng=0)
    >>> X = np.ones((2, 4), dtype=np.float32)
    >>> np.allclose(ops.sparse_matmul(X, W), X @ W.toarray())
    True
    """
    X = check_dense(X, "X", 2)
    indptr, indices, data = check_csr(W, "W", dtype=X.dtype)
    n_threads = resolve_n_threads(n_threads)
    if X.shape[1] != W.shape[0]:
        raise ValueError(f"X has {X.shape[1]} columns but W has {W.shape[0]} rows (X @ W needs them equal)")
    t_indptr, t_indices, perm = transpose_pattern(indptr, indices, W.shape[1])
    out = np.empty((W.shape[1], X.shape[0]), dtype=X.dtype)
    _kernels.spmm(t_indptr, t_indices, data, perm, _feature_major(X), out, None, n_threads)
    return np.ascontiguousarray(out.T)


def sparse_matmul_t(D, W, *, n_threads=None):
    """Dense times transposed sparse: ``D @ W.T`` (the backward product of a layer ``X @ W``).

    Parameters
    ----------
    D : ndarray of shape (batch, n_out), float32 or float64
    W : scipy.sparse CSR array or matrix of shape (n_in, n_out), same dtype as ``D``, canonical
    n_threads : int or None, default None

    Returns
    -------
    ndarray of shape (batch, n_in), C-contiguous.
    """
    D = check_dense(D, "D", 2)
    indptr, indices, data = check_csr(W, "W", dtype=D.dtype)
    n_threads = resolve_n_threads(n_threads)
    if D.shape[1] != W.shape[1]:
        raise ValueError(f"D has {D.shape[1]} columns but W has {W.shape[1]} columns (D @ W.T needs them equal)")
    out = np.empty((W.shape[0], D.shape[0]), dtype=D.dtype)
    _kernels.spmm(indptr, indices, data, None, _feature_major(D), out, None, n_threads)
    return np.ascontiguousarray(out.T)


def sddmm(X, D, W, *, n_threads=None):
    """Sampled dense-dense product on the pattern of ``W``: the weight gradient of ``X @ W``.

    ``g[k] = sum_b X[b, i_k] * D[b, j_k]`` for the ``k``-th stored entry ``(i_k, j_k)`` of ``W`` in
    CSR order, i.e. ``(X.T @ D)`` evaluated only where ``W`` has a connection.

    Parameters
    ----------
    X : ndarray of shape (batch, n_in)
    D : ndarray of shape (batch, n_out), same dtype as ``X``
    W : scipy.sparse CSR array or matrix of shape (n_in, n_out), same dtype, canonical
    n_threads : int or None, default None

    Returns
    -------
    g : ndarray of shape (W.nnz,)
    """
    X = check_dense(X, "X", 2)
    D = check_dense(D, "D", 2, dtype=X.dtype)
    indptr, indices, _ = check_csr(W, "W", dtype=X.dtype)
    n_threads = resolve_n_threads(n_threads)
    if X.shape[0] != D.shape[0]:
        raise ValueError(f"X and D must have the same number of rows (batch), got {X.shape[0]} and {D.shape[0]}")
    if X.shape[1] != W.shape[0] or D.shape[1] != W.shape[1]:
        raise ValueError(f"shapes do not match: X {X.shape}, D {D.shape}, W {W.shape} "
                         f"(need X.shape[1] == W.shape[0] and D.shape[1] == W.shape[1])")
    out = np.empty(indices.shape[0], dtype=X.dtype)
    _kernels.sddmm(indptr, indices, _feature_major(X), _feature_major(D), out, n_threads)
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
