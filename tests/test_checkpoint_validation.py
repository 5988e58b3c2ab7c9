"""SparseMLP.load of corrupt or foreign files: a ValueError naming the problem, never a crash.

Each corrupted file is loaded and used (predict) in a subprocess, so that an out-of-bounds access in
a kernel shows up as a signal instead of killing the test run.
"""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from set_cy import Callback, SparseMLP

PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    from set_cy import SparseMLP
    try:
        m = SparseMLP.load(sys.argv[1])
    except ValueError as exc:
        print("ValueError:", exc)
        sys.exit(3)
    m.predict(np.ones((4, m.layer_sizes[0]), np.float32))
    print("loaded")
""")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    m = SparseMLP([30, 20, 10, 3], epsilon=3, seed=0)
    X = np.random.default_rng(0).standard_normal((40, 30)).astype(np.float32)
    m.fit(X, np.arange(40) % 3, epochs=2, batch_size=8, verbose=0)
    path = tmp_path_factory.mktemp("ck") / "m.npz"
    m.save(path)
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _corrupt(arrays, key, fn):
    out = dict(arrays)
    out[key] = fn(out[key].copy())
    return out


def _set(a, i, v):
    a[i] = v
    return a


def _with_sizes(config, sizes):
    return np.array(json.dumps({**json.loads(str(config)), "layer_sizes": sizes}))


CASES = {
    "index out of range": ("layer0_indices", lambda a: _set(a, 3, 10 ** 6)),
    "negative index": ("layer1_indices", lambda a: _set(a, 0, -5)),
    "indptr not monotone": ("layer0_indptr", lambda a: _set(a, 5, a[-1] + 7)),
    "indptr end beyond indices": ("layer2_indptr", lambda a: _set(a, -1, a[-1] + 1)),
    "unsorted row": ("layer0_indices", lambda a: _set(a, slice(0, 2), a[[1, 0]])),
    "short values": ("layer1_data", lambda a: a[:-1]),
    "short bias": ("layer0_bias", lambda a: a[:-2]),
    "NaN value": ("layer0_data", lambda a: _set(a, 0, np.nan)),
    "float64 values in a float32 model": ("layer1_velocity", lambda a: a.astype(np.float64)),
    "index dtype mismatch": ("layer0_indices", lambda a: a.astype(np.int64)),
    "2-D array": ("layer0_bias", lambda a: a.reshape(1, -1)),
    "wrong layer sizes": ("config", lambda a: _with_sizes(a, [30, 21, 10, 3])),
    "bad mask": ("input_mask", lambda a: a[:-1]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_corrupt_checkpoint_raises_value_error(case, saved, tmp_path):
    key, fn = CASES[case]
    arrays = dict(saved)
    if key == "input_mask":
        arrays[key] = np.ones(30, bool)
    path = tmp_path / "bad.npz"
    np.savez(path, **_corrupt(arrays, key, fn))
    res = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, (case, res.returncode, res.stdout, res.stderr[-2000:])
    assert "ValueError" in res.stdout


@pytest.mark.parametrize("what", ["missing key", "truncated file", "not a zip", "foreign npz"])
def test_foreign_or_damaged_files_raise_value_error(what, saved, tmp_path):
    path = tmp_path / "bad.npz"
    if what == "missing key":
        np.savez(path, **{k: v for k, v in saved.items() if k != "layer1_velocity"})
    elif what == "truncated file":
        good = tmp_path / "good.npz"
        np.savez(good, **saved)
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif what == "not a zip":
        path.write_bytes(b"this is not a checkpoint")
    else:
        np.savez(path, X=np.zeros(3))
    with pytest.raises(ValueError):
        SparseMLP.load(path)


def test_corrupt_sample_order_of_an_interrupted_fit(tmp_path):
    m = SparseMLP([30, 20, 3], epsilon=3, seed=0)
    X = np.random.default_rng(0).standard_normal((40, 30)).astype(np.float32)
    y = np.arange(40) % 3

    class Stop(Callback):  # stops the fit after the second batch of the first epoch
        def on_batch_end(self, model, batch, logs):
            model.stop_training = batch == 1

    m.fit(X, y, epochs=2, batch_size=8, verbose=0, callbacks=[Stop()])
    assert m.train_state_ is not None and m.train_state_["order"] is not None
    path = m.save(tmp_path / "interrupted.npz")
    assert SparseMLP.load(path).fit(X, y, epochs=2, verbose=0, resume=True)  # the good file resumes
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["extra_order"] = arrays["extra_order"].copy()
    arrays["extra_order"][0] = 10 ** 7
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="permutation"):
        SparseMLP.load(tmp_path / "bad.npz")


def test_valid_checkpoint_still_loads(saved, tmp_path):
    path = tmp_path / "ok.npz"
    np.savez(path, **saved)
    res = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "loaded" in res.stdout, res.stderr
