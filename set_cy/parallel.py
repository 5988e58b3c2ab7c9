"""Data-parallel training engines: how one step of :meth:`set_cy.SparseMLP.fit` uses the cores.

A fit runs its steps through one engine, chosen by ``backend``:

``"openmp"`` (default)
    One process; every kernel splits its rows over ``n_jobs`` OpenMP threads, and the gradient and the
    momentum update are fused in one pass over the connections.
``"threads"``
    A pool of threads. Each mini-batch is cut into ``n_jobs`` shards; each worker runs forward and
    backward on its shard with its own activation buffers and writes the gradient of every layer into
    its own slot, an array aligned with the layer's connections. All workers read the same weights
    (zero copies), so merging is an element-wise sum of aligned arrays (:func:`_kernels.sum_partials`,
    in parallel), followed by one momentum update.
``"processes"``
    The same with joblib's loky worker processes. Weights, velocities, transposed indices, the data and
    the gradient slots live in one shared-memory file (``/dev/shm`` on Linux) that each worker maps
    once per fit; the parent applies the merged update and the evolution step in place there, so the
    new topology reaches the workers without re-sending anything.
``"dask"``
    Local SGD over a ``dask.distributed`` cluster through joblib's Dask backend: the data is
    scattered once to every worker; each round, every worker trains a copy of the network on its
    shard of the epoch for ``local_steps`` mini-batches (all of its shard by default), and the driver
    averages values, biases and velocities on the shared pattern (the model averaging of WASAP-SGD).
    Evolution happens on the driver, between epochs; the next round sends the new topology.

Shard 0 of a batch always runs in the calling thread. The thread and process pools are driven
through their executors, not ``joblib.Parallel``: its result loop sleeps 10 ms while waiting, which
is longer than a whole batch of the 784-1000-1000-1000-10 network takes (10.3 ms per call measured
here, against 0.04 ms for a thread pool and 0.4 ms for loky's executor). Rounds of the ``"dask"``
backend last seconds, so they do go through ``joblib.Parallel`` with joblib's Dask backend.

Whatever the backend, a step either completes on every worker and is applied once, or fails and
leaves the model as it was after the previous step; shared memory is freed when the fit ends, however
it ends.
"""
import logging
import os
import tempfile

import numpy as np

from . import _kernels
from ._validation import LAYER_ARRAYS, check_int, resolve_n_threads
from .layers import SparseLayer
from .model import SparseNetwork

__all__ = ["BACKENDS", "make_engine", "ParallelFitError", "SHM_PREFIX"]

logger = logging.getLogger("set_cy")

#: How a fit uses the cores (``backend=`` of :meth:`set_cy.SparseMLP.fit`, ``--backend``).
BACKENDS = ("openmp", "threads", "processes", "dask")
#: Name prefix of the shared-memory files (``/dev/shm/set_cy-*``) of the ``"processes"`` backend.
SHM_PREFIX = "set_cy-"
# Per layer: the arrays a worker of the "processes" backend maps (pattern, values, optimiser state).
_LAYER_ARRAYS = LAYER_ARRAYS + SparseLayer.TRANSPOSE
_ALIGN = 64


class ParallelFitError(RuntimeError):
    """A worker of a data-parallel fit failed; the model is the one after the last completed step."""


def _fail(backend, exc):
    """The error a fit raises when a worker fails: names the backend and the cause."""
    name = type(exc).__name__
    if name in ("TerminatedWorkerError", "BrokenProcessPool", "KilledWorker"):
        cause = f"a worker process died ({name}: {exc})"
    else:
        cause = f"a worker raised {name}: {exc}"
    return ParallelFitError(f"data-parallel fit (backend={backend!r}) stopped: {cause}. The model holds the "
                            "weights of the last completed step.")


def _replica(config, layers, n_threads):
    """A network with ``config`` (a model's ``_config()``) over the given layers (no copies of their arrays)."""
    return SparseNetwork.from_layers(layers, n_threads=n_threads, **config)


def _layer_over(n_in, n_out, init, arrays, n_threads):
    """A :class:`SparseLayer` over ``arrays`` (name -> ndarray, all of ``_LAYER_ARRAYS``), nothing copied.

    The arrays are a checked layer's own (or views of them in shared memory), hence ``trusted``.
    """
    return SparseLayer(n_in, n_out, **{name: arrays[name] for name in _LAYER_ARRAYS}, init=init,
                       n_threads=n_threads, trusted=True)


# ----------------------------------------------------------------------------------------------
# engines
class _Engine:
    """One fit's way of running steps. ``step`` returns ``(loss_sum, n_correct, n_seen)``."""

    backend = None

    def __init__(self, model, X, y, batch_size):
        self.model, self.X, self.y, self.batch_size = model, X, y, int(batch_size)

    def n_steps(self):
        return -(-self.X.shape[0] // self.batch_size)

    def rows(self, order, b):
        return order[b * self.batch_size:(b + 1) * self.batch_size]

    def step(self, order, b, hp):
        raise NotImplementedError

    def topology_changed(self):
        """Called after every evolution step of the model."""

    def close(self):
        """Release workers and shared memory; the model owns private arrays again."""


class _OpenMPEngine(_Engine):
    backend = "openmp"

    def __init__(self, model, X, y, batch_size, n_jobs):
        super().__init__(model, X, y, batch_size)
        self._saved_threads = model.n_threads
        if n_jobs is not None:
            model.set_n_threads(n_jobs)

    def step(self, order, b, hp):
        rows = self.rows(order, b)
        loss, ok = self.model.train_batch(self.X, self.y, rows, **hp)
        return loss * rows.size, ok, rows.size

    def close(self):
        self.model.set_n_threads(self._saved_threads)


class _ShardedEngine(_Engine):
    """Batch split across ``n_jobs`` workers, gradients merged into slot 0, one update.

    Shard 0 runs in the calling thread, on a replica of the network over the model's own arrays;
    shards 1.. go to the pool (``_submit``).
    """

    def __init__(self, model, X, y, batch_size, n_jobs):
        super().__init__(model, X, y, batch_size)
        self.n_jobs = n_jobs
        self.worker_threads = max(1, model.n_threads // n_jobs)
        self.grads = None
        self.replicas = None

    def _make_replicas(self, n):
        # own buffers and generator over the model's arrays (shared, zero copies)
        self.replicas = [_replica(self.model._config(),
                                  [_layer_over(layer.n_in, layer.n_out, layer.init, layer.arrays(), self.worker_threads)
                                   for layer in self.model.layers], self.worker_threads)
                         for _ in range(n)]

    def _local(self, s, rows, seed, denom):
        return _shard_gradients(self.replicas[s], self.X, self.y, rows, seed, denom,
                                [(g[s], gb[s]) for g, gb in self.grads])

    def _submit(self, s, rows, seed, denom):
        raise NotImplementedError

    @staticmethod
    def _run_parts(local, submit, m):
        """Part 0 by ``local()``, parts 1..m-1 by ``submit(k)`` futures; every part ends before this returns.

        Returns the results in part order and the first exception raised (or None).
        """
        futures, results, error = [], [], None
        try:
            futures = [submit(k) for k in range(1, m)]
            results.append(local())
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            error = exc
        for f in futures:
            try:
                results.append(f.result())
            except Exception as exc:
                error = error or exc
        return results, error

    def step(self, order, b, hp):
        rows = self.rows(order, b)
        shards = [s for s in np.array_split(rows, self.n_jobs) if s.size]
        m = len(shards)
        seeds = [int(x) for x in self.model.rng.integers(0, 2 ** 63 - 1, size=m)]
        results, error = self._run_parts(lambda: self._local(0, shards[0], seeds[0], rows.size),
                                         lambda k: self._submit(k, shards[k], seeds[k], rows.size), m)
        if error is not None:
            raise _fail(self.backend, error) from error
        # merge and update: worker k sums and applies the k-th range of every layer's connections, on
        # one thread each (an OpenMP team started here would keep spinning on a core after its region
        # and slow the next step's shards: measured 1.0x instead of 1.9x from 1 to 2 threads, batch 512)
        _, error = self._run_parts(lambda: _update_part(self.model.layers, self.grads, (0, m), hp),
                                   lambda k: self._submit_update(k, m, hp), m)
        if error is not None:  # a part of the update is missing: the model is not consistent any more
            raise ParallelFitError(f"data-parallel fit (backend={self.backend!r}): the update failed "
                                   f"({type(error).__name__}: {error}); the model's weights are partly "
                                   "updated") from error
        for layer, (_, gb) in zip(self.model.layers, self.grads):
            layer.apply_bias_gradient(gb[0] if m == 1 else gb[:m].sum(axis=0), hp["learning_rate"], hp["momentum"],
                                      hp["nesterov"])
        return sum(r[0] for r in results), sum(r[1] for r in results), rows.size

    def _submit_update(self, k, m, hp):
        raise NotImplementedError


def _update_part(layers, grads, part, hp):
    """Sum the ``m`` gradient slots and apply them, on range ``part = (k, m)`` of every layer."""
    m = part[1]
    for layer, (g, _) in zip(layers, grads):
        _kernels.sum_partials(g[:m], g[0], 1, *layer.part_range(part))
        layer.apply_gradient(g[0], None, hp["learning_rate"], hp["momentum"], hp["weight_decay"], hp["nesterov"],
                             part=part)


def _shard_gradients(net, X, y, rows, seed, denom, out):
    net.rng = np.random.default_rng(seed)
    loss, correct = net.gradients_into(X, y, rows, out, denom=denom, training=True)
    return loss * rows.size, correct


class _ThreadEngine(_ShardedEngine):
    """Threads of a ``concurrent.futures`` pool, each with a replica over the model's arrays.

    Not ``joblib.Parallel(backend="threading")``: its result loop polls every 10 ms, longer than a
    whole 784-1000-1000-1000-10 batch of 128 takes (measured: 10.3 ms per call vs 0.04 ms here).
    """

    backend = "threads"

    def __init__(self, model, X, y, batch_size, n_jobs):
        from concurrent.futures import ThreadPoolExecutor

        super().__init__(model, X, y, batch_size, n_jobs)
        self.grads = [(np.zeros((n_jobs, layer.nnz), layer.dtype), np.zeros((n_jobs, layer.n_out), layer.dtype))
                      for layer in model.layers]
        self._make_replicas(n_jobs)
        self._pool = ThreadPoolExecutor(max_workers=max(1, n_jobs - 1), thread_name_prefix="set_cy")

    def _submit(self, s, rows, seed, denom):
        return self._pool.submit(self._local, s, rows, seed, denom)

    def _submit_update(self, k, m, hp):
        return self._pool.submit(_update_part, self.model.layers, self.grads, (k, m), hp)

    def topology_changed(self):
        # evolution rebuilt the transposed index as new arrays: point the replicas at them
        self._make_replicas(self.n_jobs)

    def close(self):
        self._pool.shutdown(wait=True)
        self.replicas = self.grads = None


# "processes": what a worker process has mapped, by shared-memory path (one fit at a time)
_ATTACHED = {}


def _attach(spec):
    path = spec["path"]
    hit = _ATTACHED.get(path)
    if hit is None:
        _ATTACHED.clear()  # a previous fit's mapping: its file is gone, drop the pages
        mm = np.memmap(path, dtype=np.uint8, mode="r+")
        views = {name: np.ndarray(shape, np.dtype(dt), buffer=mm, offset=off)
                 for name, (off, shape, dt) in spec["arrays"].items()}
        layers = [_layer_over(n_in, n_out, init, {n: views[f"{i}.{n}"] for n in _LAYER_ARRAYS}, spec["threads"])
                  for i, (n_in, n_out, init) in enumerate(spec["layers"])]
        net = _replica(spec["config"], layers, spec["threads"])
        hit = _ATTACHED[path] = (mm, net, views)
    return hit


def _process_shard(spec, s, rows, seed, denom):
    _, net, v = _attach(spec)
    out = [(v[f"{i}.grad"][s], v[f"{i}.grad_bias"][s]) for i in range(len(net.layers))]
    return _shard_gradients(net, v["X"], v["y"], rows, seed, denom, out)


def _process_update(spec, part, hp):
    _, net, v = _attach(spec)
    _update_part(net.layers, [(v[f"{i}.grad"], None) for i in range(len(net.layers))], part, hp)


def _shm_dir():
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


class _ProcessEngine(_ShardedEngine):
    """joblib's loky worker processes; shard 0 runs in the parent, over the same shared file.

    Tasks go to loky's reusable executor directly rather than through ``joblib.Parallel``, whose
    result loop polls every 10 ms (measured: 10.2 ms per call vs 0.4 ms with the executor).
    """

    backend = "processes"

    def __init__(self, model, X, y, batch_size, n_jobs):
        super().__init__(model, X, y, batch_size, n_jobs)
        self.path = None
        self._executor = None
        self._mm = None
        try:
            self._share(X, y)
            self.X, self.y = self.views["X"], self.views["y"]
            self.grads = [(self.views[f"{i}.grad"], self.views[f"{i}.grad_bias"]) for i in range(len(model.layers))]
            self._make_replicas(1)
            if n_jobs > 1:
                from joblib.externals.loky import get_reusable_executor

                self._executor = get_reusable_executor(max_workers=n_jobs - 1)
        except BaseException:
            self.close()
            raise

    def _share(self, X, y):
        model = self.model
        plan = {"X": (X.shape, X.dtype), "y": (y.shape, y.dtype)}
        for i, layer in enumerate(model.layers):
            for name in _LAYER_ARRAYS:
                a = getattr(layer, name)
                plan[f"{i}.{name}"] = (a.shape, a.dtype)
            plan[f"{i}.grad"] = ((self.n_jobs, layer.nnz), layer.dtype)
            plan[f"{i}.grad_bias"] = ((self.n_jobs, layer.n_out), layer.dtype)
        arrays, off = {}, 0
        for name, (shape, dt) in plan.items():
            arrays[name] = (off, tuple(int(d) for d in shape), np.dtype(dt).str)
            off += -(-int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize // _ALIGN) * _ALIGN
        fd, self.path = tempfile.mkstemp(prefix=SHM_PREFIX + f"{os.getpid()}-", dir=_shm_dir())
        try:
            os.ftruncate(fd, max(off, 1))
        finally:
            os.close(fd)
        self._mm = np.memmap(self.path, dtype=np.uint8, mode="r+")
        self.views = {name: np.ndarray(shape, np.dtype(dt), buffer=self._mm, offset=o)
                      for name, (o, shape, dt) in arrays.items()}
        self.views["X"][...] = X
        self.views["y"][...] = y
        self._bind()  # the model's arrays move into the shared file
        self.spec = {"path": self.path, "arrays": arrays, "threads": self.worker_threads,
                     "config": model._config(),
                     "layers": [(layer.n_in, layer.n_out, layer.init) for layer in model.layers]}
        logger.info("processes backend: %d workers share %.1f MB in %s", self.n_jobs, off / 1e6, self.path)

    def _bind(self):
        """Copy every layer array that is not its shared view into it, and use the view."""
        for i, layer in enumerate(self.model.layers):
            for name in _LAYER_ARRAYS:
                a, v = getattr(layer, name), self.views[f"{i}.{name}"]
                if a is not v:
                    if a.shape != v.shape:
                        raise RuntimeError(f"layer {i} {name}: shape changed from {v.shape} to {a.shape}")
                    v[...] = a
                    setattr(layer, name, v)

    def _submit(self, s, rows, seed, denom):
        return self._executor.submit(_process_shard, self.spec, s, rows, seed, denom)

    def _submit_update(self, k, m, hp):
        return self._executor.submit(_process_update, self.spec, (k, m), hp)

    def topology_changed(self):
        self._bind()
        self._make_replicas(1)

    def close(self):
        if self._executor is not None:
            self._executor = None
            _shutdown_loky()
        if self._mm is not None:
            for i, layer in enumerate(self.model.layers):  # private copies again
                for name in _LAYER_ARRAYS:
                    a = getattr(layer, name)
                    if a is self.views.get(f"{i}.{name}"):
                        setattr(layer, name, np.array(a))
            self.views = self.X = self.y = self.grads = self.replicas = None
            self._mm._mmap.close()
            self._mm = None
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.path = None


def _shutdown_loky():
    """Stop joblib's reusable loky workers, which would otherwise keep the fit's mapping for minutes."""
    try:
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    except Exception as exc:  # pragma: no cover - nothing to free
        logger.debug("could not shut down loky workers: %s", exc)


# ----------------------------------------------------------------------------------------------
# dask: local SGD rounds
def _state_of(model):
    """A snapshot (fresh copies) of everything a remote worker needs to train the model."""
    return {"config": model._config(),
            "layers": [{"shape": (layer.n_in, layer.n_out), "init": layer.init, "lr_scale": layer.lr_scale,
                        **{n: getattr(layer, n).copy() for n in LAYER_ARRAYS}}
                       for layer in model.layers]}


def _local_round(X, y, state, batches, seed, hp, n_threads):
    """Train a copy of the network on ``batches`` (row arrays) of ``X``; return its values and stats."""
    # the parent's checked arrays (from _state_of); what training writes is copied, as the state may be shared
    writable = ("data", "velocity", "bias", "bias_velocity")
    layers = [SparseLayer(*d["shape"], **{n: d[n].copy() if n in writable else d[n] for n in LAYER_ARRAYS},
                          init=d["init"], n_threads=n_threads, trusted=True)
              for d in state["layers"]]
    net = _replica(state["config"], layers, n_threads)
    for layer, d in zip(net.layers, state["layers"]):
        layer.lr_scale = d["lr_scale"]
    net.rng = np.random.default_rng(seed)
    loss_sum, correct, seen = 0.0, 0, 0
    for rows in batches:
        loss, ok = net.train_batch(X, y, rows, **hp)
        loss_sum += loss * rows.size
        correct += ok
        seen += rows.size
    return {"arrays": [(lay.data, lay.velocity, lay.bias, lay.bias_velocity) for lay in net.layers],
            "loss_sum": loss_sum, "correct": correct, "seen": seen}


class _DaskEngine(_Engine):
    """Local SGD: a step is a round; every worker trains ``local_steps`` batches of its shard."""

    backend = "dask"

    def __init__(self, model, X, y, batch_size, n_jobs, client=None, local_steps=None, worker_threads=1):
        super().__init__(model, X, y, batch_size)
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ImportError("backend='dask' needs dask.distributed: pip install 'set_cy[dask]'") from exc
        from joblib import Parallel, parallel_config

        self._own = []
        try:
            if client is None:
                n_workers = n_jobs or resolve_n_threads(None)
                cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, host="127.0.0.1",
                                       dashboard_address=None, processes=True)
                self._own.append(cluster)
                client = Client(cluster, set_as_default=False)
                self._own.append(client)
            elif isinstance(client, str):
                client = Client(client, set_as_default=False)
                self._own.append(client)
            self.client = client
            if n_jobs is None:
                n_jobs = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
            self.n_jobs = int(n_jobs)
            self.worker_threads = int(worker_threads)
            n = X.shape[0]
            shard = -(-n // self.n_jobs)
            self.steps_per_shard = -(-shard // self.batch_size)
            self.local_steps = self.steps_per_shard if local_steps is None else int(local_steps)
            # immutable data, scattered once to every worker (joblib replaces X, y by their futures)
            self._config = parallel_config(backend="dask", client=client, scatter=[X, y])
            self._config.__enter__()
            self._parallel = Parallel(n_jobs=self.n_jobs)
        except BaseException:
            self.close()
            raise

    def n_steps(self):
        return -(-self.steps_per_shard // self.local_steps)

    def step(self, order, r, hp):
        from joblib import delayed

        shards = np.array_split(order, self.n_jobs)
        jobs = []
        lo, hi = r * self.local_steps, min((r + 1) * self.local_steps, self.steps_per_shard)
        for shard in shards:
            batches = [shard[k * self.batch_size:(k + 1) * self.batch_size] for k in range(lo, hi)]
            batches = [rows for rows in batches if rows.size]
            if batches:
                jobs.append(batches)
        if not jobs:
            return 0.0, 0, 0
        seeds = self.model.rng.integers(0, 2 ** 63 - 1, size=len(jobs))
        state = _state_of(self.model)  # fresh copies each round: nothing remote sees a later change
        try:
            results = self._parallel(delayed(_local_round)(self.X, self.y, state, batches, int(seed), hp,
                                                           self.worker_threads)
                                     for batches, seed in zip(jobs, seeds))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            raise _fail(self.backend, exc) from exc
        # average on the shared pattern (every result has the driver's pattern)
        for i, layer in enumerate(self.model.layers):
            for j, name in enumerate(("data", "velocity", "bias", "bias_velocity")):
                acc = np.zeros(getattr(layer, name).shape, np.float64)
                for res in results:
                    acc += res["arrays"][i][j]
                getattr(layer, name)[...] = acc / len(results)
        return (sum(r["loss_sum"] for r in results), sum(r["correct"] for r in results),
                sum(r["seen"] for r in results))

    def close(self):
        cfg = getattr(self, "_config", None)
        if cfg is not None:
            cfg.__exit__(None, None, None)
            self._config = None
        for obj in reversed(self._own):
            try:
                obj.close()
            except Exception as exc:  # pragma: no cover
                logger.debug("closing %r: %s", obj, exc)
        self._own = []


def make_engine(model, X, y, batch_size, *, backend="openmp", n_jobs=None, client=None, local_steps=None):
    """The engine that runs the steps of one fit (validated arguments in, see :meth:`SparseMLP.fit`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "dask" and n_jobs == -1 and not isinstance(n_jobs, bool):
        n_jobs = None  # joblib's dask backend: -1 is every worker of the cluster
    if n_jobs is not None:
        n_jobs = resolve_n_threads(n_jobs, "n_jobs")
    if backend != "dask" and (client is not None or local_steps is not None):
        raise ValueError("client and local_steps apply to backend='dask' only")
    if local_steps is not None:
        local_steps = check_int(local_steps, "local_steps", min_val=1)
    if backend == "openmp":
        return _OpenMPEngine(model, X, y, batch_size, n_jobs)
    if backend == "dask":
        return _DaskEngine(model, X, y, batch_size, n_jobs, client=client, local_steps=local_steps)
    n_jobs = n_jobs or resolve_n_threads(None)
    cls = _ThreadEngine if backend == "threads" else _ProcessEngine
    return cls(model, X, y, batch_size, n_jobs)
