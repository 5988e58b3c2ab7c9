"""Sizing, below the layers: how many connections each layer gets, which index dtype holds them,
which backward product a layer runs and how much memory a network needs, without building it; and
:func:`check_fits`, the one pre-flight check of every constructor that allocates by a size it was
given (and of model files, by the sizes they declare).
"""
import numpy as np

from ._memory import format_bytes, system_memory

__all__ = ["ACTIVATION_DTYPES", "ALLOCATIONS", "allocate_connections", "check_activation_dtype", "check_fits",
           "check_storage", "estimate_memory", "index_dtype_for", "layer_bytes", "SCATTER_PARTS", "STORAGES",
           "uses_scatter"]

#: How the connections are shared among the layers (:func:`allocate_connections`).
ALLOCATIONS = ("er", "erk", "uniform")

#: How a layer keeps its connections. ``"full"``: value, velocity, index, and the transposed index with its
#: permutation (the backward product gathers); ``"compact"``: value, velocity and index only, the backward
#: product scatters: 8 bytes less per connection with int32 indices.
STORAGES = ("full", "compact")


def check_storage(storage):
    """``storage`` if it is one of :data:`STORAGES`, else ``ValueError``."""
    if not isinstance(storage, str) or storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    return storage

#: What the products gather rows from for the hidden layers (``activation_dtype=`` of the networks): None is
#: the network's own dtype; ``"bfloat16"`` keeps a bfloat16 copy of each hidden activation and delta.
ACTIVATION_DTYPES = (None, "bfloat16")


def check_activation_dtype(activation_dtype, dtype):
    """``activation_dtype`` normalised (the network's own dtype name gives None), else ``ValueError``."""
    if isinstance(activation_dtype, str) and activation_dtype == np.dtype(dtype).name:
        return None
    if activation_dtype is not None and (not isinstance(activation_dtype, str)
                                         or activation_dtype not in ACTIVATION_DTYPES):
        raise ValueError(f"activation_dtype must be None, 'bfloat16' or the network's dtype, got {activation_dtype!r}")
    if activation_dtype == "bfloat16" and np.dtype(dtype) != np.float32:
        raise ValueError(f"activation_dtype='bfloat16' needs dtype float32, not {np.dtype(dtype).name}")
    return activation_dtype


# Backward product for small batches: scattering the rows of W^T (values read in storage order) beats
# gathering values through the permutation once the values no longer fit in cache. Measured with
# 600k x 600k and 315k x 315k layers, eps = 20, 2 threads: B = 2 took 34 vs 93 ms and 15 vs 44 ms,
# B = 4 63 vs 109 ms and 31 vs 50 ms, B = 8 lost (190 vs 142 ms); on a 1000 x 1000 layer it always lost.
SCATTER_MAX_BATCH = 4
SCATTER_MIN_VALUE_BYTES = 8 << 20
#: Fixed number of partial sums of the scattering backward product, so that results do not depend on the
#: number of threads.
SCATTER_PARTS = 4  # 2 threads, 600k x 600k layer, batch 2: 19-20 ms with 2 or 4 parts, 25 with 8, 30 with 16


def uses_scatter(nnz, itemsize, batch):
    """Whether the backward product of a layer runs as a scatter (see :func:`_kernels.spmm_scatter`)."""
    return batch <= SCATTER_MAX_BATCH and nnz * itemsize >= SCATTER_MIN_VALUE_BYTES


def index_dtype_for(n_in, n_out, nnz):
    """int32 when every index and offset fits, else int64."""
    return np.int32 if max(n_in, n_out, nnz) < np.iinfo(np.int32).max else np.int64


def allocate_connections(layer_sizes, epsilon, allocation="er"):
    """Number of connections of each layer.

    ``"er"`` (Erdős–Rényi, the SET paper): ``min(epsilon * (n_in + n_out), n_in * n_out)`` per layer.
    ``"erk"`` and ``"uniform"`` (RigL's names) share the same total budget: ``"erk"`` gives each layer a
    density proportional to ``(n_in + n_out) / (n_in * n_out)`` and hands what capped (dense) layers
    cannot take to the others; ``"uniform"`` gives every layer the same density.
    """
    sizes = list(layer_sizes)
    cells = np.array([a * b for a, b in zip(sizes[:-1], sizes[1:])], dtype=np.float64)
    er = np.array([min(epsilon * (a + b), a * b) for a, b in zip(sizes[:-1], sizes[1:])], dtype=np.int64)
    if allocation == "er":
        return [int(x) for x in er]
    budget = float(er.sum())
    if allocation == "uniform":
        weight = np.ones_like(cells)
    elif allocation == "erk":
        weight = np.array([(a + b) / (a * b) for a, b in zip(sizes[:-1], sizes[1:])])
    else:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    dense = np.zeros(cells.size, bool)
    while True:
        free_budget = budget - cells[dense].sum()
        scale = free_budget / (weight[~dense] * cells[~dense]).sum()
        density = np.where(dense, 1.0, weight * scale)
        newly = (density > 1.0) & ~dense
        if not newly.any():
            break
        dense |= newly
    nnz = np.minimum(np.floor(density * cells + 0.5), cells).astype(np.int64)
    return [int(x) for x in nnz]


def layer_bytes(n_in, n_out, nnz, itemsize, storage="full"):
    """Bytes of one sparse layer, and of the transient arrays of its construction.

    Per connection: value, velocity, column index and, with ``storage="full"``, the transposed index
    and permutation; per neuron: the offsets (and transposed offsets), the bias and its velocity.
    Building it draws ``nnz`` positions: about ``4 * index + 1`` bytes per connection at once.

    Returns
    -------
    (int, int)
        ``(weights, build)`` in bytes.
    """
    n_in, n_out, nnz = int(n_in), int(n_out), int(nnz)
    idx = np.dtype(index_dtype_for(n_in, n_out, nnz)).itemsize
    full = check_storage(storage) == "full"
    offsets = (n_in + n_out + 2) if full else (n_out + 1)
    weights = nnz * (2 * itemsize + (3 if full else 1) * idx) + offsets * idx + 2 * n_out * itemsize
    return int(weights), int(nnz * (4 * idx + 1))


def check_fits(n_bytes, what):
    """Refuse (``ValueError``) a request of ``n_bytes`` that the machine's available memory cannot hold.

    Called before allocating by every constructor that allocates by a size it was given (layers,
    networks, operators) and by the model-file reader with the sizes a file declares, so that an
    impossible size ends in a message with both figures instead of a ``MemoryError`` or a machine out
    of memory. ``what`` names the request, e.g. ``"a 10 x 10000000000000 layer with 5 connections"``.
    """
    available = system_memory()["available"]
    if n_bytes > available:
        raise ValueError(f"{what} needs {format_bytes(n_bytes)} of memory, but only {format_bytes(available)} "
                         f"is available")


def estimate_memory(layer_sizes, epsilon, batch_size, *, dtype="float32", allocation="er", zeta=0.3,
                    storage="full", activation_dtype=None):
    """Bytes a network needs while training, without building it.

    Counts, per connection, the value, velocity, column index and, with ``storage="full"``, the
    transposed index and permutation; per neuron the biases and offsets; the feature-major
    activations, deltas and dropout bytes of one batch; and the transient arrays of the largest
    layer's construction or evolution step (the larger of the two); with ``activation_dtype="bfloat16"``
    the bfloat16 copies of the hidden activations and delta too. The batch buffers and the
    transient arrays never coexist (evolution releases the buffers first, construction comes before
    them), so the total counts the larger of the two. Data and the interpreter are not included.

    Parameters
    ----------
    layer_sizes : sequence of int
        Neurons per layer, input and output included.
    epsilon : float
        Sparsity of the Erdős–Rényi layers (:func:`allocate_connections`).
    batch_size : int
        Samples per mini-batch (the activations are counted for one batch).
    dtype : {"float32", "float64"}, default "float32"
    allocation : {"er", "erk", "uniform"}, default "er"
    zeta : float, default 0.3
        Fraction replaced by an evolution step (its transient arrays).
    storage : {"full", "compact"}, default "full"
    activation_dtype : {None, "bfloat16"}, default None

    Returns
    -------
    dict
        ``weights``, ``activations``, ``transient`` and ``total`` in bytes, and ``connections``.

    Examples
    --------
    >>> from set_cy.sizing import estimate_memory
    >>> est = estimate_memory([1000, 1000, 10], epsilon=20, batch_size=32)
    >>> est["connections"], est["weights"]
    (50000, 1020136)
    >>> estimate_memory([1000, 1000, 10], epsilon=20, batch_size=32, storage="compact")["weights"]
    612128
    """
    sizes = [int(s) for s in layer_sizes]
    val = np.dtype(dtype).itemsize
    full = check_storage(storage) == "full"
    nnz = allocate_connections(sizes, epsilon, allocation)
    weights = 0
    transient = 0
    for k, a, b in zip(nnz, sizes[:-1], sizes[1:]):
        idx = np.dtype(index_dtype_for(a, b, k)).itemsize
        layer, build = layer_bytes(a, b, k, val, storage)
        weights += layer
        # evolution: choosing the connections to remove (int64 positions of the non-negative and negative
        # weights, a copy of one sign's values and its argpartition: about 15 bytes per connection), then
        # the keep mask, a copy of the kept pattern and the drawn positions, then (full) the new transposed
        # index and permutation built while the old ones still exist; values and velocities are compacted
        # and merged in place
        evolve = max(15 * k, k * (1 + idx) + int(zeta * k) * (5 * idx + 1), 2 * idx * k if full else 0)
        transient = max(transient, build, evolve)
    B = int(batch_size)
    hidden = sizes[1:-1]
    widest = max(hidden + [sizes[0]])
    activations = B * val * (sizes[0] + sum(sizes[1:]) + 2 * widest) + B * (max(hidden) if hidden else 0)
    scatter = [a for k, a in zip(nnz[1:], sizes[1:-1]) if full and uses_scatter(k, val, B)]
    activations += SCATTER_PARTS * B * val * max(scatter, default=0)
    if check_activation_dtype(activation_dtype, dtype) == "bfloat16" and hidden:
        activations += 2 * B * (sum(hidden) + (max(hidden) if full else 0))
    total = weights + max(activations, transient)
    return {"weights": int(weights), "activations": int(activations), "transient": int(transient),
            "total": int(total), "connections": int(sum(nnz))}
