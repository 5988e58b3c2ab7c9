"""
set_cy against a dense PyTorch layer at growing sparsity
========================================================

A dense layer costs the same whatever its weights are; a truly sparse one costs in proportion to its
connections. This example times one training step (forward, backward, momentum update) of a
4096 x 4096 layer at batch 64: :class:`set_cy.SparseLinear` at densities from 0.1 % to 10 %, and a dense
``torch.nn.Linear`` with ``torch.optim.SGD`` (or, without PyTorch installed, the same products with
NumPy's dense matrix multiply), on the threads of the machine that builds the documentation.
The ratio printed at each density says how much the sparse layer's irregular memory reads cost
against the dense layer's regular ones on this machine.
``bench/bench_peers.py`` compares whole networks against torch and other libraries.
"""
import importlib.util
import time

import matplotlib.pyplot as plt
import numpy as np

from set_cy import SparseLinear

N_IN = N_OUT = 4096
BATCH = 64
rng = np.random.default_rng(0)
X = rng.standard_normal((BATCH, N_IN), dtype=np.float32)
dY = rng.standard_normal((BATCH, N_OUT), dtype=np.float32) / BATCH


def best_of(step, repeats=3):
    step()                                                    # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return min(times)


def sparse_step_seconds(density):
    layer = SparseLinear(N_IN, N_OUT, nnz=int(density * N_IN * N_OUT), seed=0)

    def step():
        layer.forward(X)
        _, g, gb = layer.backward(dY)
        layer.step(g, gb, lr=0.01, momentum=0.9)
    return best_of(step)


if importlib.util.find_spec("torch"):
    import torch

    dense_name = f"dense torch.nn.Linear (torch {torch.__version__}, {torch.get_num_threads()} threads)"
    lin = torch.nn.Linear(N_IN, N_OUT)
    opt = torch.optim.SGD(lin.parameters(), lr=0.01, momentum=0.9)
    Xt, dYt = torch.from_numpy(X), torch.from_numpy(dY)

    def dense_step():
        opt.zero_grad()
        lin(Xt).backward(dYt)
        opt.step()
else:  # the same three products with NumPy's BLAS
    dense_name = "dense NumPy (no PyTorch installed)"
    W = rng.standard_normal((N_IN, N_OUT), dtype=np.float32) * 0.01
    V = np.zeros_like(W)

    def dense_step():
        X @ W
        dY @ W.T
        V[:] = 0.9 * V + X.T @ dY
        W[:] -= 0.01 * V

dense = best_of(dense_step)
densities = [0.001, 0.003, 0.01, 0.03, 0.1]
sparse = [sparse_step_seconds(d) for d in densities]
print(f"{dense_name}: {dense * 1e3:.2f} ms per step")
for d, s in zip(densities, sparse):
    print(f"set_cy.SparseLinear at density {d:.1%} ({int(d * N_IN * N_OUT):,} connections): "
          f"{s * 1e3:.2f} ms per step, {dense / s:.1f}x the dense layer's speed")

# %%
# Time per training step against density
# ---------------------------------------
fig, ax = plt.subplots(figsize=(7, 4))
ax.loglog(densities, np.array(sparse) * 1e3, marker="o", label="set_cy.SparseLinear (truly sparse)")
ax.axhline(dense * 1e3, color="tab:red", ls="--", label=dense_name)
ax.set(xlabel="density (connections / (n_in x n_out))", ylabel="ms per step (forward, backward, update)",
       title=f"{N_IN} x {N_OUT} layer, batch {BATCH}")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
