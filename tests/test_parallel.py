"""Data-parallel fit: merged gradients, backends agreeing, faults, shared memory, Ctrl-C, dask."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest

import set_cy.parallel as parallel
from set_cy import Callback, SparseMLP
from set_cy.parallel import SHM_PREFIX, ParallelFitError, make_engine

SHARDED = ("threads", "processes")


def shm_files():
    d = parallel._shm_dir()
    return sorted(f for f in os.listdir(d) if f.startswith(SHM_PREFIX))


def data(n=96, f=40, k=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, f)).astype(dtype)
    y = X[:, :k].argmax(axis=1).astype(np.int64)
    return X, y


def snapshot(model):
    return [(layer.data.copy(), layer.velocity.copy(), layer.bias.copy(), layer.indices.copy())
            for layer in model.layers]


def assert_same(model, snap):
    for layer, (d, v, b, idx) in zip(model.layers, snap):
        np.testing.assert_array_equal(layer.data, d)
        np.testing.assert_array_equal(layer.velocity, v)
        np.testing.assert_array_equal(layer.bias, b)
        np.testing.assert_array_equal(layer.indices, idx)


def one_step(model, X, y, rows, **engine_kw):
    """Values after one plain SGD step (lr 1, no momentum, no decay) through an engine."""
    engine = make_engine(model, X, y, rows.size, **engine_kw)
    try:
        engine.step(rows, 0, {"learning_rate": 1.0, "momentum": 0.0, "weight_decay": 0.0, "nesterov": False})
    finally:
        engine.close()
    return [(layer.data.copy(), layer.bias.copy()) for layer in model.layers]


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("backend,n_jobs", [("openmp", 2), ("threads", 2), ("threads", 3), ("processes", 2),
                                            ("processes", 3)])
def test_merged_gradient_equals_single_worker_gradient(backend, n_jobs, dtype, tol):
    X, y = data(dtype=dtype)
    kw = dict(epsilon=4, dropout=0.0, seed=3, dtype=dtype)
    ref = SparseMLP([40, 30, 20, 3], **kw)
    before = snapshot(ref)
    rows = np.arange(5, 5 + 37, dtype=np.int64)  # 37 rows: shards of unequal size
    loss, grads = ref.compute_gradients(X, y, rows)
    m = SparseMLP([40, 30, 20, 3], **kw)
    after = one_step(m, X, y, rows, backend=backend, n_jobs=n_jobs)
    for (d0, _, b0, _), (g, gb), (d1, b1) in zip(before, grads, after):
        np.testing.assert_allclose(d0 - d1, g, rtol=tol, atol=tol)
        np.testing.assert_allclose(b0 - b1, gb, rtol=tol, atol=tol)
    assert np.abs(grads[0][0]).max() > 0


def test_dask_local_round_of_one_step_equals_the_union_batch_step():
    pytest.importorskip("distributed", reason="backend='dask' needs distributed (the dask extra)")
    from distributed import Client, LocalCluster

    X, y = data(n=64, dtype=np.float64)
    kw = dict(epsilon=4, dropout=0.0, seed=3, dtype=np.float64)
    ref = SparseMLP([40, 30, 3], **kw)
    before = snapshot(ref)
    order = np.random.default_rng(1).permutation(64).astype(np.int64)
    rows = np.concatenate([order[:8], order[32:40]])  # round 0 of 2 shards of 32, batch 8
    _, grads = ref.compute_gradients(X, y, rows)
    m = SparseMLP([40, 30, 3], **kw)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        engine = make_engine(m, X, y, 8, backend="dask", n_jobs=2, client=client, local_steps=1)
        try:
            assert engine.n_steps() == 4
            engine.step(order, 0, {"learning_rate": 1.0, "momentum": 0.0, "weight_decay": 0.0,
                                   "nesterov": False})
        finally:
            engine.close()
    for (d0, _, b0, _), (g, gb), layer in zip(before, grads, m.layers):
        np.testing.assert_allclose(d0 - layer.data, g, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b0 - layer.bias, gb, rtol=1e-10, atol=1e-12)


def test_threads_and_processes_train_the_same_model():
    X, y = data(n=120)
    models = {}
    for backend in SHARDED:
        m = SparseMLP([40, 32, 3], epsilon=4, seed=5, dropout=0.2)
        h = m.fit(X, y, epochs=3, batch_size=16, backend=backend, n_jobs=2, learning_rate=0.05, verbose=0)
        models[backend] = (m, h)
    (a, ha), (b, hb) = models["threads"], models["processes"]
    assert ha["loss"] == hb["loss"]
    assert_same(b, snapshot(a))
    assert ha["loss"][-1] < ha["loss"][0]
    assert not [f for f in shm_files() if f.startswith(f"{SHM_PREFIX}{os.getpid()}-")]
    for layer in b.layers:  # private arrays again after the fit
        assert not isinstance(layer.data.base, np.memmap) and layer.data.flags.owndata


def test_processes_backend_learns_and_frees_shared_memory():
    X, y = data(n=200, seed=2)
    before = shm_files()
    m = SparseMLP([40, 64, 3], epsilon=6, seed=0)
    h = m.fit(X, y, epochs=8, batch_size=20, backend="processes", n_jobs=2, learning_rate=0.05, verbose=0)
    assert h["loss"][-1] < h["loss"][0]
    assert m.score(X, y) > 0.8
    assert shm_files() == before


def test_worker_that_raises_stops_the_fit_with_the_cause(monkeypatch):
    X, y = data()
    m = SparseMLP([40, 30, 3], epsilon=4, seed=1)
    calls = []
    real = parallel._shard_gradients

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # the first shard of the third batch
            raise MemoryError("simulated: no memory for the activations")
        return real(*args, **kwargs)

    monkeypatch.setattr(parallel, "_shard_gradients", flaky)
    snaps = []

    class Keep(Callback):
        def on_batch_end(self, model, batch, logs):
            snaps.append(snapshot(model))

    with pytest.raises(ParallelFitError, match="raised MemoryError: simulated"):
        m.fit(X, y, epochs=2, batch_size=16, backend="threads", n_jobs=2, verbose=0, callbacks=[Keep()])
    assert len(snaps) == 2
    assert_same(m, snaps[-1])  # the model after the last completed step
    assert m.train_state_["batch"] == 2


def loky_workers():
    me = psutil.Process()
    out = []
    for p in me.children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "resource_tracker" not in cmd and "semaphore_tracker" not in cmd:
            out.append(p)
    return out


def test_worker_process_that_dies_stops_the_fit_frees_shared_memory():
    X, y = data()
    before = shm_files()
    m = SparseMLP([40, 30, 3], epsilon=4, seed=1)
    snaps = []

    class Killer(Callback):
        def on_batch_end(self, model, batch, logs):
            snaps.append(snapshot(model))
            if batch == 1:
                workers = loky_workers()
                assert workers, "no worker process to kill"
                for p in workers:
                    p.send_signal(signal.SIGKILL)
                psutil.wait_procs(workers, timeout=10)

    with pytest.raises(ParallelFitError, match="worker process died"):
        m.fit(X, y, epochs=2, batch_size=16, backend="processes", n_jobs=2, verbose=0, callbacks=[Killer()])
    assert len(snaps) == 2
    assert_same(m, snaps[-1])
    assert shm_files() == before
    # the model still works and can train again
    m.fit(X, y, epochs=1, batch_size=16, backend="processes", n_jobs=2, verbose=0)
    assert shm_files() == before


SIGINT_SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from set_cy import Callback, SparseMLP
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4000, 200)).astype(np.float32); y = (X[:, 0] > 0).astype(int)
    class Ready(Callback):
        said = False
        def on_batch_end(self, model, batch, logs):
            if not self.said:
                self.said = True
                print("TRAINING", flush=True)
    m = SparseMLP([200, 400, 2], epsilon=10, seed=0)
    try:
        m.fit(X, y, epochs=1000, batch_size=8, backend="processes", n_jobs=2, verbose=0, callbacks=[Ready()])
    except KeyboardInterrupt:
        ts = m.train_state_
        print("INTERRUPTED", ts["epoch"], ts["batch"], type(m.layers[0].data.base).__name__, flush=True)
        sys.exit(130)
""")


def test_ctrl_c_during_a_process_fit_stops_workers_and_frees_segments(tmp_path):
    before = shm_files()
    script = tmp_path / "fit.py"
    script.write_text(SIGINT_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "TRAINING"
        ps = psutil.Process(proc.pid)
        time.sleep(0.5)
        children = ps.children(recursive=True)
        assert children, "the fit runs no worker processes"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert out.startswith("INTERRUPTED"), (out, err)
    assert out.split()[3] != "memmap"  # the model owns private arrays again
    gone, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, f"worker processes left running: {alive}"
    assert shm_files() == before


def test_dask_local_cluster_fit_learns():
    pytest.importorskip("distributed", reason="backend='dask' needs distributed (the dask extra)")
    X, y = data(n=240, seed=4)
    m = SparseMLP([40, 64, 3], epsilon=6, seed=0)
    h = m.fit(X, y, epochs=6, batch_size=16, backend="dask", n_jobs=2, local_steps=3, learning_rate=0.05,
              verbose=0)
    assert len(h) == 6 and h["loss"][-1] < h["loss"][0]
    assert m.score(X, y) > 0.8
    assert m.n_connections == SparseMLP([40, 64, 3], epsilon=6, seed=0).n_connections


def test_dask_worker_killed_mid_round_retries_or_fails_cleanly():
    pytest.importorskip("distributed", reason="backend='dask' needs distributed (the dask extra)")
    import threading

    from distributed import Client, LocalCluster

    X, y = data(n=2000, f=200, seed=4)
    m = SparseMLP([200, 2000, 3], epsilon=20, seed=0)
    report = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)

        def kill_when_busy():
            deadline = time.time() + 60
            while time.time() < deadline:
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    time.sleep(0.2)  # well inside the round
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    report["killed"] = busy[0]
                    return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        snap = snapshot(m)
        try:
            h = m.fit(X, y, epochs=2, batch_size=8, backend="dask", n_jobs=2, client=client, verbose=0)
            report["result"] = "retried"
        except ParallelFitError as exc:
            report["result"] = str(exc)
        killer.join()
    assert "killed" in report, "the round ended before a worker could be killed"
    if report["result"] == "retried":
        assert len(h) == 2 and all(np.isfinite(h["loss"]))
        assert m.n_connections == sum(s[0].size for s in snap)
    else:
        assert "dask" in report["result"]
        assert_same(m, snap)


def test_bad_parallel_arguments():
    X, y = data()
    m = SparseMLP([40, 30, 3], epsilon=4, seed=1)
    with pytest.raises(ValueError, match="backend must be one of"):
        m.fit(X, y, epochs=1, backend="mpi", verbose=0)
    with pytest.raises(ValueError, match="n_jobs must be >= 1"):
        m.fit(X, y, epochs=1, backend="threads", n_jobs=0, verbose=0)
    with pytest.raises(TypeError, match="n_jobs must be a positive int"):
        m.fit(X, y, epochs=1, backend="threads", n_jobs=1.5, verbose=0)
    with pytest.raises(ValueError, match="backend='dask' only"):
        m.fit(X, y, epochs=1, backend="threads", local_steps=2, verbose=0)
    with pytest.raises(ValueError, match="local_steps must be a positive int"):
        m.fit(X, y, epochs=1, backend="dask", local_steps=0, verbose=0)


def test_openmp_backend_n_jobs_sets_threads_for_the_fit_only():
    X, y = data()
    m = SparseMLP([40, 30, 3], epsilon=4, seed=1, n_threads=1)
    seen = []

    class Probe(Callback):
        def on_batch_end(self, model, batch, logs):
            seen.append(model.layers[0].n_threads)

    m.fit(X, y, epochs=1, batch_size=32, n_jobs=2, verbose=0, callbacks=[Probe()])
    assert set(seen) == {2} and m.n_threads == 1 and m.layers[0].n_threads == 1


def test_a_worker_maps_the_shared_file_once_per_fit():
    X, y = data()
    before = shm_files()
    m = SparseMLP([40, 30, 3], epsilon=4, seed=1, dropout=0.0)
    engine = make_engine(m, X, y, 16, backend="processes", n_jobs=2)
    try:
        spec = engine.spec
        parallel._ATTACHED.clear()
        rows = np.arange(8, dtype=np.int64)
        parallel._process_shard(spec, 1, rows, 0, 16)  # as a worker would, here in-process
        first = parallel._ATTACHED[spec["path"]]
        parallel._process_shard(spec, 1, rows + 8, 1, 16)
        assert len(parallel._ATTACHED) == 1 and parallel._ATTACHED[spec["path"]] is first
        # the mapping sees the parent's arrays: a change of the model's values shows without re-sending
        m.layers[0].data[:] += 1
        np.testing.assert_array_equal(first[1].layers[0].data, m.layers[0].data)
    finally:
        engine.close()
        parallel._ATTACHED.clear()
    assert shm_files() == before
