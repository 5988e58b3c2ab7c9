"""
Epoch time against neurons and against cores
=============================================

The cost of a truly sparse network grows with its connections, and an Erdős–Rényi layer has
``epsilon * (n_in + n_out)`` of them: linear in the neurons, where a dense layer grows with their
square. This example times one training epoch of :class:`set_cy.SparseMLP` (three hidden layers, ε = 20,
batch 32) at growing width, then at a fixed width with 1, 2, ... OpenMP threads, up to the cores of the
machine that builds the documentation (``set_cy.max_threads()``). The numbers are this machine's;
``bench/bench_scaling.py`` is the full benchmark (its tables are in the benchmarks page).
"""
import time

import matplotlib.pyplot as plt
import numpy as np

import set_cy
from set_cy import SparseMLP
from set_cy.datasets import make_synthetic

data = make_synthetic(n_samples=192, n_features=1000, n_classes=4, seed=0)


def epoch_seconds(width, n_threads, repeats=2):
    """Best of ``repeats`` epochs (after one warm-up epoch) of a 1000-width-width-width-4 network."""
    model = SparseMLP([data.n_features, width, width, width, data.n_classes], epsilon=20, seed=0,
                      n_threads=n_threads)
    model.fit(data.X_train, data.y_train, epochs=1, batch_size=32, verbose=0)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.fit(data.X_train, data.y_train, epochs=1, batch_size=32, verbose=0)
        best = min(best, time.perf_counter() - t0)
    return model.n_neurons, model.n_connections, best


cores = set_cy.max_threads()
widths = [1_000, 4_000, 16_000]
by_size = [epoch_seconds(w, cores) for w in widths]
for neurons, connections, sec in by_size:
    print(f"{neurons:>7,} neurons, {connections:>9,} connections: {sec * 1e3:7.1f} ms per epoch ({cores} threads)")
threads = list(range(1, cores + 1))
by_threads = [epoch_seconds(widths[-1], t)[2] for t in threads]
for t, sec in zip(threads, by_threads):
    print(f"{t} thread(s): {sec * 1e3:.1f} ms per epoch, speed-up {by_threads[0] / sec:.2f}x")

# %%
# Time against size, and speed-up against threads
# ------------------------------------------------
# The dashed line on the left is proportional to the connections, through the largest network's
# time: a cost per connection that stays constant lies on it.
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4))
n = np.array([c for _, c, _ in by_size], float)
s = np.array([t for _, _, t in by_size])
ax0.loglog(n, s, marker="o", label="measured")
ax0.loglog(n, s[-1] * n / n[-1], ls="--", color="0.5", label="proportional to connections")
for (neurons, c, t) in by_size:
    ax0.annotate(f"{neurons:,} neurons", (c, t), textcoords="offset points", xytext=(5, -12), fontsize=8)
ax0.set(xlabel="connections", ylabel="seconds per epoch", title=f"epoch time ({cores} threads)")
ax0.legend()
ax1.plot(threads, [by_threads[0] / t for t in by_threads], marker="o", label="measured")
ax1.plot(threads, threads, ls="--", color="0.5", label="ideal")
ax1.set(xlabel="OpenMP threads", ylabel="speed-up over 1 thread", xticks=threads,
        title=f"{by_size[-1][0]:,} neurons")
ax1.legend()
fig.tight_layout()
plt.show()
