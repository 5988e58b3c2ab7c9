"""Peer implementations that the benchmarks run next to set_cy, on the same workload.

- :class:`ScipySETMLP`: a truly sparse SET-MLP in plain SciPy/NumPy, the approach of the SET reference
  implementation: weights are ``scipy.sparse`` CSR matrices (``n_in x n_out``), products go through
  ``scipy.sparse``, the gradient at the stored connections is computed by NumPy gathers, and the
  momentum update is SciPy sparse arithmetic (a new CSR matrix every step).
- :class:`DenseMLP`: the same architecture with dense NumPy weights (BLAS products, all connections).
- :class:`TorchMaskMLP`: dense weights times a binary mask in PyTorch (CPU), what mask-based sparse
  training libraries do; evolution rewrites the mask. Needs torch (an optional extra).

All three train like :class:`set_cy.SparseMLP`: ReLU hidden layers, inverted dropout on hidden
layers, softmax + cross-entropy, gradients averaged over the batch, heavy-ball momentum with L2
weight decay on the weights (not the biases): ``v = mu*v - lr*(g + wd*w); w += v``. The sparse
ones evolve after every epoch but the last: the fraction ``zeta`` of the positive weights closest
to zero and of the negative weights closest to zero are removed and as many connections are grown
at random free positions, with zero weight and zero velocity (``new_weights="zeros"``).

The layout is batch-major ``(batch, features)``, as in the reference implementation.
"""
import numpy as np
import scipy.sparse as sp

__all__ = [
    "DenseMLP",
    "ScipySETMLP",
    "TorchMaskMLP",
    "dense_bytes",
    "er_connections",
    "iterate_minibatches",
    "scipy_set_bytes",
    "torch_mask_bytes",
]

GATHER_CHUNK_BYTES = 1 << 24  # bound on each gathered temporary of the NumPy SDDMM


def er_connections(n_in, n_out, epsilon):
    """Connections of an Erdős–Rényi layer, as set_cy counts them: ``min(eps*(n_in+n_out), n_in*n_out)``."""
    return int(min(epsilon * (n_in + n_out), n_in * n_out))


def dense_bytes(layer_sizes, batch_size, itemsize=4):
    """Predicted peak bytes of :class:`DenseMLP` training (data not included).

    Weights, velocity and the gradient of every layer (3 copies of all parameters), one temporary of
    the largest layer in the update, and the activations, dropout masks and deltas of one batch.
    """
    sizes = list(layer_sizes)
    cells = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    acts = batch_size * sum(sizes) * 4
    return int(itemsize * (3 * sum(cells) + max(cells)) + itemsize * acts)


def torch_mask_bytes(layer_sizes, batch_size, itemsize=4):
    """Predicted peak bytes of :class:`TorchMaskMLP` training (data and the torch library not included).

    Per parameter: the dense weight, its gradient, the momentum buffer, the masked weight ``W * M``
    kept for the backward pass and its gradient (5 float copies) plus the mask (1 byte); activations.
    """
    sizes = list(layer_sizes)
    cells = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    acts = batch_size * sum(sizes) * 4
    return int((5 * itemsize + 1) * cells + itemsize * acts)


def scipy_set_bytes(layer_sizes, epsilon, batch_size, itemsize=4):
    """Rough predicted peak bytes of :class:`ScipySETMLP` (data not included).

    Per connection: values, velocity, gradient and the new matrices of the sparse arithmetic (about
    6 values and 6 int32/int64 indices), plus the gather temporaries and activations.
    """
    sizes = list(layer_sizes)
    nnz = sum(er_connections(a, b, epsilon) for a, b in zip(sizes[:-1], sizes[1:]))
    acts = batch_size * sum(sizes) * 6
    return int(nnz * (6 * itemsize + 6 * 8) + 2 * GATHER_CHUNK_BYTES + itemsize * acts)


def iterate_minibatches(n, batch_size, rng):
    """Index arrays of a shuffled epoch; the last, smaller batch is kept (as set_cy does)."""
    order = rng.permutation(n)
    for s in range(0, n, batch_size):
        yield order[s:s + batch_size]


def _softmax_ce(z, y):
    """In place softmax of the rows of ``z``; returns the mean cross-entropy and the number correct."""
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    rows = np.arange(z.shape[0])
    p = z[rows, y]
    loss = float(-np.log(np.maximum(p, np.finfo(z.dtype).tiny)).mean())
    correct = int(np.count_nonzero(z.argmax(axis=1) == y))
    return loss, correct


def _dropout_mask(rng, shape, rate, dtype):
    """Inverted-dropout multiplier: 0 with probability ``rate``, else ``1/(1-rate)``."""
    keep = rng.random(shape, dtype=np.float32) >= rate
    return keep.astype(dtype) * dtype.type(1.0 / (1.0 - rate))


def _he_uniform(rng, size, fan_in, dtype):
    limit = np.sqrt(6.0 / max(fan_in, 1.0))
    return rng.uniform(-limit, limit, size).astype(dtype)


def _signed_prune(values, zeta):
    """Boolean mask of the connections kept by SET's rule (per sign, the fraction ``zeta`` closest to 0 goes)."""
    keep = np.ones(values.size, bool)
    pos = np.flatnonzero(values >= 0)
    neg = np.flatnonzero(values < 0)
    k = int(round(zeta * pos.size))
    if k:
        keep[pos[np.argpartition(values[pos], k - 1)[:k]]] = False
    k = int(round(zeta * neg.size))
    if k:
        keep[neg[np.argpartition(-values[neg], k - 1)[:k]]] = False
    return keep


def _draw_free_keys(rng, total, taken_sorted, n):
    """``n`` distinct flat positions in ``[0, total)`` not in the sorted array ``taken_sorted``."""
    out = np.empty(0, np.int64)
    while out.size < n:
        cand = np.unique(rng.integers(0, total, int(1.2 * (n - out.size)) + 16, dtype=np.int64))
        pos = np.searchsorted(taken_sorted, cand)
        pos = np.minimum(pos, max(taken_sorted.size - 1, 0))
        free = cand[taken_sorted[pos] != cand] if taken_sorted.size else cand
        free = free[~np.isin(free, out)]
        out = np.concatenate([out, free])
    return rng.permutation(out)[:n]


class _NumpyMLP:
    """What the SciPy-sparse and the dense NumPy MLP share: the forward pass (ReLU, inverted dropout,
    linear outputs), gradients without an update, and an epoch of shuffled mini-batches. Subclasses
    hold ``W``, ``b``, ``dropout``, ``dtype``, ``rng`` and define ``_backward`` and ``train_batch``."""

    def _forward(self, X, training):
        acts, masks = [X], []
        a = X
        last = len(self.W) - 1
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            z = np.asarray(a @ W, dtype=self.dtype)
            z += b
            if i < last:
                np.maximum(z, 0, out=z)
                if training and self.dropout > 0:
                    m = _dropout_mask(self.rng, z.shape, self.dropout, self.dtype)
                    z *= m
                    masks.append(m)
                else:
                    masks.append(None)
            a = z
            acts.append(a)
        return acts, masks

    def gradients(self, X, y, training=False):
        """Mean loss and gradients on ``(X, y)`` without an update (for tests)."""
        acts, masks = self._forward(np.asarray(X, self.dtype), training)
        loss, _, grads = self._backward(acts, masks, np.asarray(y))
        return loss, grads

    def fit_epoch(self, X, y, batch_size, lr, momentum=0.9, weight_decay=2e-4):
        loss_sum, correct = 0.0, 0
        for rows in iterate_minibatches(X.shape[0], batch_size, self.rng):
            loss, ok = self.train_batch(X[rows], y[rows], lr, momentum, weight_decay)
            loss_sum += loss * rows.size
            correct += ok
        return loss_sum / X.shape[0], correct / X.shape[0]


# ------------------------------------------------------------------------------------------------
# SciPy SET
# ------------------------------------------------------------------------------------------------
class ScipySETMLP(_NumpyMLP):
    """Truly sparse SET-MLP with ``scipy.sparse`` CSR weights, NumPy gathers and SciPy arithmetic.

    Parameters
    ----------
    layer_sizes : sequence of int
    epsilon : float
        Erdős–Rényi sparsity: ``epsilon * (n_in + n_out)`` connections per layer.
    dropout : float
    seed : int
    dtype : numpy dtype, default float32
    weights, biases : lists, optional
        Start from these (``csr`` ``n_in x n_out`` and 1-D arrays) instead of a random topology.
    """

    def __init__(self, layer_sizes, epsilon=20, dropout=0.3, seed=0, dtype=np.float32, weights=None,
                 biases=None):
        self.layer_sizes = [int(s) for s in layer_sizes]
        self.dropout = float(dropout)
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        pairs = list(zip(self.layer_sizes[:-1], self.layer_sizes[1:]))
        if weights is None:
            weights = []
            for n_in, n_out in pairs:
                nnz = er_connections(n_in, n_out, epsilon)
                keys = np.sort(_draw_free_keys(self.rng, n_in * n_out, np.empty(0, np.int64), nnz))
                r, c = np.divmod(keys, n_out)
                vals = _he_uniform(self.rng, nnz, nnz / n_out, self.dtype)
                weights.append(sp.csr_array((vals, (r, c)), shape=(n_in, n_out)))
        self.W = [sp.csr_array(w, dtype=self.dtype) for w in weights]
        for w in self.W:
            w.sum_duplicates()
        self.b = ([np.zeros(n_out, self.dtype) for _, n_out in pairs] if biases is None
                  else [np.asarray(b, self.dtype).copy() for b in biases])
        self.vW = [sp.csr_array(w.shape, dtype=self.dtype) for w in self.W]
        self.vb = [np.zeros_like(b) for b in self.b]

    @property
    def n_connections(self):
        return int(sum(w.nnz for w in self.W))

    # backward ---------------------------------------------------------------------------------
    def _gather_grad(self, W, aT, dT):
        """Gradient at the stored connections of ``W``: ``g[k] = sum_b a[b, row_k] * delta[b, col_k]``.

        ``aT`` and ``dT`` are the feature-major (transposed, contiguous) activations and deltas; rows of
        them are gathered per connection in chunks and multiplied-summed with ``einsum``.
        """
        rows = np.repeat(np.arange(W.shape[0], dtype=W.indices.dtype), np.diff(W.indptr))
        cols = W.indices
        g = np.empty(W.nnz, self.dtype)
        step = max(1024, GATHER_CHUNK_BYTES // max(aT.shape[1] * aT.itemsize, 1))
        for s in range(0, W.nnz, step):
            e = min(W.nnz, s + step)
            np.einsum("kb,kb->k", aT[rows[s:e]], dT[cols[s:e]], out=g[s:e])
        return g

    def _backward(self, acts, masks, y):
        """Loss, number correct and the gradients ``[(g aligned with W.data, g_bias)]``."""
        out = acts[-1]
        B = out.shape[0]
        loss, correct = _softmax_ce(out, y)
        delta = out
        delta[np.arange(B), y] -= 1
        delta *= self.dtype.type(1.0 / B)
        grads = [None] * len(self.W)
        for i in range(len(self.W) - 1, -1, -1):
            W = self.W[i]
            a_in = acts[i]
            aT = np.ascontiguousarray(a_in.T)
            dT = np.ascontiguousarray(delta.T)
            grads[i] = (self._gather_grad(W, aT, dT), delta.sum(axis=0))
            if i > 0:
                d = np.asarray(delta @ W.T, dtype=self.dtype)
                d *= (a_in > 0)
                if masks[i - 1] is not None:
                    # a_in already carries the dropout multiplier; the derivative of the dropped-out
                    # ReLU output is the multiplier where the unit is on
                    d *= masks[i - 1]
                delta = d
        return loss, correct, grads

    def train_batch(self, X, y, lr, momentum, weight_decay):
        acts, masks = self._forward(X, True)
        loss, correct, grads = self._backward(acts, masks, y)
        for i, (g, gb) in enumerate(grads):
            W = self.W[i]
            G = sp.csr_array((g, W.indices, W.indptr), shape=W.shape)
            # sparse momentum step with SciPy arithmetic: v = mu*v - lr*(g + wd*w); w = w + v
            self.vW[i] = momentum * self.vW[i] - lr * (G + weight_decay * W)
            self.W[i] = W + self.vW[i]
            self.vb[i] *= momentum
            self.vb[i] -= lr * gb
            self.b[i] += self.vb[i]
        return loss, correct

    def evolve(self, zeta):
        """SET step on every layer: prune by the signed rule, regrow at random free positions at zero."""
        for i, W in enumerate(self.W):
            n_in, n_out = W.shape
            C = W.tocoo()
            keys = C.row.astype(np.int64) * n_out + C.col
            keep = _signed_prune(C.data, zeta)
            kept = np.sort(keys[keep])
            new = _draw_free_keys(self.rng, n_in * n_out, kept, int(W.nnz - kept.size))
            all_keys = np.concatenate([keys[keep], new])
            vals = np.concatenate([C.data[keep], np.zeros(new.size, self.dtype)])
            r, c = np.divmod(all_keys, n_out)
            self.W[i] = sp.csr_array((vals, (r, c)), shape=W.shape)
            pattern = sp.csr_array((np.ones(kept.size, self.dtype), np.divmod(kept, n_out)), shape=W.shape)
            self.vW[i] = self.vW[i].multiply(pattern).tocsr()

    def predict(self, X, batch_size=1024):
        out = []
        for s in range(0, X.shape[0], batch_size):
            acts, _ = self._forward(np.asarray(X[s:s + batch_size], self.dtype), False)
            out.append(acts[-1].argmax(axis=1))
        return np.concatenate(out)


# ------------------------------------------------------------------------------------------------
# dense NumPy MLP
# ------------------------------------------------------------------------------------------------
class DenseMLP(_NumpyMLP):
    """Fully connected MLP with NumPy (BLAS) products, trained as the sparse ones are.

    Parameters
    ----------
    layer_sizes : sequence of int
    dropout : float
    seed : int
    dtype : numpy dtype, default float32
    weights, biases : lists of arrays, optional
        Initial dense weights ``(n_in, n_out)`` and biases; He-uniform with the dense fan-in otherwise.
    """

    def __init__(self, layer_sizes, dropout=0.3, seed=0, dtype=np.float32, weights=None, biases=None):
        self.layer_sizes = [int(s) for s in layer_sizes]
        self.dropout = float(dropout)
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        pairs = list(zip(self.layer_sizes[:-1], self.layer_sizes[1:]))
        if weights is None:
            weights = [_he_uniform(self.rng, (a, b), a, self.dtype) for a, b in pairs]
        self.W = [np.array(w, self.dtype) for w in weights]
        self.b = ([np.zeros(b, self.dtype) for _, b in pairs] if biases is None
                  else [np.asarray(x, self.dtype).copy() for x in biases])
        self.vW = [np.zeros_like(w) for w in self.W]
        self.vb = [np.zeros_like(b) for b in self.b]

    @property
    def n_connections(self):
        return int(sum(w.size for w in self.W))

    def _backward(self, acts, masks, y, step=None):
        out = acts[-1]
        B = out.shape[0]
        loss, correct = _softmax_ce(out, y)
        delta = out
        delta[np.arange(B), y] -= 1
        delta *= self.dtype.type(1.0 / B)
        grads = [None] * len(self.W)
        for i in range(len(self.W) - 1, -1, -1):
            a_in = acts[i]
            d = None
            if i > 0:
                d = delta @ self.W[i].T
                d *= (a_in > 0)
                if masks[i - 1] is not None:
                    d *= masks[i - 1]
            g = a_in.T @ delta
            gb = delta.sum(axis=0)
            if step is None:
                grads[i] = (g, gb)
            else:
                step(i, g, gb)
            delta = d
        return loss, correct, grads

    def train_batch(self, X, y, lr, momentum, weight_decay):
        acts, masks = self._forward(X, True)

        def step(i, g, gb):
            # v = mu*v - lr*(g + wd*w); w += v, in place on g (the only temporary)
            g += self.dtype.type(weight_decay) * self.W[i]
            v = self.vW[i]
            v *= momentum
            g *= self.dtype.type(lr)
            v -= g
            self.W[i] += v
            self.vb[i] *= momentum
            self.vb[i] -= lr * gb
            self.b[i] += self.vb[i]

        loss, correct, _ = self._backward(acts, masks, y, step)
        return loss, correct

    def evolve(self, zeta):
        """A dense network has nothing to evolve."""

    def predict_proba(self, X, batch_size=1024):
        out = []
        for s in range(0, X.shape[0], batch_size):
            acts, _ = self._forward(np.asarray(X[s:s + batch_size], self.dtype), False)
            z = acts[-1]
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
            out.append(z)
        return np.concatenate(out)

    def predict(self, X, batch_size=1024):
        return self.predict_proba(X, batch_size).argmax(axis=1)


# ------------------------------------------------------------------------------------------------
# PyTorch dense weights x binary mask
# ------------------------------------------------------------------------------------------------
class TorchMaskMLP:
    """Dense weights times a binary mask in PyTorch (CPU), trained with ``torch.optim.SGD``.

    The forward pass uses ``W * M``, so the gradient is zero off the mask and the momentum buffer and
    weight decay leave masked-off weights at zero. Evolution prunes and regrows in the mask (new
    weights zero, their momentum zero).

    Parameters
    ----------
    layer_sizes : sequence of int
    epsilon : float
    dropout : float
    seed : int
    n_threads : int or None
        ``torch.set_num_threads`` (None: torch's default, all cores).
    weights, biases : optional
        Initial sparse weights (``scipy.sparse`` ``n_in x n_out``; the mask is their pattern) and biases.
    dense : bool, default False
        No mask at all: a plain dense MLP (He-uniform with the dense fan-in), for ablations.
    """

    def __init__(self, layer_sizes, epsilon=20, dropout=0.3, seed=0, n_threads=None, weights=None,
                 biases=None, lr=0.05, momentum=0.9, weight_decay=2e-4, dense=False):
        import torch

        self.torch = torch
        if n_threads:
            torch.set_num_threads(int(n_threads))
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.layer_sizes = [int(s) for s in layer_sizes]
        self.dropout = float(dropout)
        pairs = list(zip(self.layer_sizes[:-1], self.layer_sizes[1:]))
        self.W, self.M, self.b = [], [], []
        for i, (n_in, n_out) in enumerate(pairs):
            W = torch.zeros(n_in, n_out, dtype=torch.float32)
            M = torch.zeros(n_in, n_out, dtype=torch.bool)
            if dense:
                W = torch.from_numpy(_he_uniform(self.rng, (n_in, n_out), n_in, np.dtype(np.float32)))
                M = None
            elif weights is not None:
                C = sp.coo_array(weights[i])
                r, c, v = C.row, C.col, C.data.astype(np.float32)
            else:
                nnz = er_connections(n_in, n_out, epsilon)
                keys = _draw_free_keys(self.rng, n_in * n_out, np.empty(0, np.int64), nnz)
                r, c = np.divmod(keys, n_out)
                v = _he_uniform(self.rng, nnz, nnz / n_out, np.dtype(np.float32))
            if not dense:
                ri, ci = torch.from_numpy(np.asarray(r, np.int64)), torch.from_numpy(np.asarray(c, np.int64))
                W[ri, ci] = torch.from_numpy(np.ascontiguousarray(v, np.float32))
                M[ri, ci] = True
            W.requires_grad_(True)
            b = torch.zeros(n_out, dtype=torch.float32)
            if biases is not None:
                b.copy_(torch.from_numpy(np.asarray(biases[i], np.float32)))
            b.requires_grad_(True)
            self.W.append(W)
            self.M.append(M)
            self.b.append(b)
        self.opt = torch.optim.SGD([{"params": self.W, "weight_decay": weight_decay},
                                    {"params": self.b, "weight_decay": 0.0}], lr=lr, momentum=momentum)

    @property
    def n_connections(self):
        return int(sum(W.numel() if M is None else int(M.sum()) for W, M in zip(self.W, self.M)))

    def _logits(self, X, training):
        torch = self.torch
        a = X
        last = len(self.W) - 1
        for i, (W, M, b) in enumerate(zip(self.W, self.M, self.b)):
            a = a @ (W if M is None else W * M) + b
            if i < last:
                a = torch.relu(a)
                if training and self.dropout > 0:
                    a = torch.nn.functional.dropout(a, self.dropout, training=True)
        return a

    def gradients(self, X, y, training=False):
        """Mean loss and dense gradients (numpy) on ``(X, y)``, without an update (for tests)."""
        torch = self.torch
        for p in self.W + self.b:
            p.grad = None
        loss = torch.nn.functional.cross_entropy(self._logits(torch.from_numpy(np.asarray(X, np.float32)),
                                                              training), torch.from_numpy(np.asarray(y)))
        loss.backward()
        return float(loss.detach()), [(W.grad.numpy().copy(), b.grad.numpy().copy()) for W, b in zip(self.W, self.b)]

    def train_batch(self, X, y):
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        logits = self._logits(X, True)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        self.opt.step()
        return float(loss.detach()), int((logits.argmax(dim=1) == y).sum())

    def fit_epoch(self, X, y, batch_size, lr=None, momentum=None, weight_decay=None):
        """One epoch over torch tensors ``X`` (float32) and ``y`` (int64); optimizer settings fixed at init."""
        torch = self.torch
        loss_sum, correct = 0.0, 0
        for rows in iterate_minibatches(X.shape[0], batch_size, self.rng):
            idx = torch.from_numpy(rows)
            loss, ok = self.train_batch(X[idx], y[idx])
            loss_sum += loss * rows.size
            correct += ok
        return loss_sum / X.shape[0], correct / X.shape[0]

    def evolve(self, zeta):
        torch = self.torch
        with torch.no_grad():
            for W, M in zip(self.W, self.M):
                if M is None:
                    continue
                n_in, n_out = W.shape
                flat = M.view(-1)
                keys = torch.nonzero(flat).squeeze(1).numpy().astype(np.int64)
                vals = W.view(-1)[torch.from_numpy(keys)].numpy()
                keep = _signed_prune(vals, zeta)
                gone = torch.from_numpy(keys[~keep])
                kept = np.sort(keys[keep])
                new = torch.from_numpy(_draw_free_keys(self.rng, n_in * n_out, kept, int((~keep).sum())))
                flat[gone] = False
                W.view(-1)[gone] = 0.0
                flat[new] = True
                W.view(-1)[new] = 0.0
                buf = self.opt.state.get(W, {}).get("momentum_buffer")
                if buf is not None:
                    buf.view(-1)[gone] = 0.0
                    buf.view(-1)[new] = 0.0

    def predict_proba(self, X, batch_size=1024):
        """Class probabilities (numpy) of a torch tensor or numpy array ``X``."""
        torch = self.torch
        if isinstance(X, np.ndarray):
            X = torch.from_numpy(np.ascontiguousarray(X, np.float32))
        out = []
        with torch.no_grad():
            for s in range(0, X.shape[0], batch_size):
                out.append(torch.softmax(self._logits(X[s:s + batch_size], False), dim=1).numpy())
        return np.concatenate(out)

    def predict(self, X, batch_size=1024):
        return self.predict_proba(X, batch_size).argmax(axis=1)
