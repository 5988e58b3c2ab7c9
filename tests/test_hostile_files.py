"""Untrusted files and sizes (issue 25): a model file is read member by member with every declared size
checked before anything is decompressed, and every constructor that allocates by a size it was given
refuses an impossible one first, with both figures. Each test asserts the message, not only the type.

The zip archives of the hostile files are written by hand (``write_zip``, shared with the fuzzer) so
that the sizes the zip directory and the npy headers state can lie: a zip library would write the truth.
"""
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
from _fuzz_cases import npy_bytes, npy_header, write_zip

from set_cy import SparseLinear, SparseMLP, ops
from set_cy.layers import SparseLayer
from set_cy.sizing import check_fits

GiB = 1 << 30


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    """The members of a small saved model, by name."""
    path = tmp_path_factory.mktemp("ok") / "m.npz"
    SparseMLP([20, 16, 3], epsilon=4, seed=0, n_threads=1).save(path)
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _members(arrays, **changes):
    members = {k: npy_bytes(v) for k, v in arrays.items()}
    members.update(changes)
    return members


def _hostile_files(arrays, d):
    """name -> (path, the words the refusal must contain); each file is a few kB to a few MB."""
    bomb = npy_header((2 ** 32,), np.float32) + bytes(16 << 20)  # 16 MiB of zeros, deflated to 16 kB
    cfg = {**json.loads(str(arrays["config"])), "layer_sizes": [2 ** 20, 2 ** 20, 3]}
    huge = _members(arrays, config=npy_bytes(np.array(json.dumps(cfg))))
    for name, n, dtype in (("indptr", 2 ** 20 + 1, np.int64), ("indices", 2 ** 36, np.int64),
                           ("data", 2 ** 36, np.float32), ("velocity", 2 ** 36, np.float32),
                           ("bias", 2 ** 20, np.float32), ("bias_velocity", 2 ** 20, np.float32)):
        header = npy_header((n,), dtype)  # headers that fit the configuration, and nothing behind them
        huge[f"layer0_{name}"] = (header, len(header) + n * np.dtype(dtype).itemsize)
    small_decl = npy_header((16,), np.float32)  # declares 64 bytes, inflates to 1 MiB
    return {
        # the directory states 16 GiB + header, as the npy header does: the sizes agree, the layer refuses
        "bomb": (write_zip(d / "bomb.npz", _members(arrays, layer0_data=(bomb, len(bomb) - (16 << 20) + 4 * 2 ** 32))),
                 ["bomb.npz", "layer0_data", "4294967296"]),
        # the directory states the truth (16 MiB): the npy header's 16 GiB is more than the member holds
        "bomb_honest_zip": (write_zip(d / "bomb2.npz", _members(arrays, layer0_data=(bomb, len(bomb)))),
                            ["bomb2.npz", "layer0_data", "17179869184 bytes"]),
        # a configuration of 2**20 x 2**20 layers whose headers fit it: the declared total exceeds the memory
        "declared_total": (write_zip(d / "huge.npz", huge), ["huge.npz", "declares", "is available"]),
        # a member that inflates past the size its directory entry and its npy header state
        "inflates": (write_zip(d / "inflate.npz", _members(arrays, layer0_bias=(small_decl + bytes(1 << 20),
                                                                           len(small_decl) + 64))),
                     ["inflate.npz", "layer0_bias", "inflates past"]),
    }


def test_hand_written_archive_of_the_true_sizes_loads(arrays, tmp_path):
    path = write_zip(tmp_path / "same.npz", {k: (npy_bytes(v), len(npy_bytes(v))) if k.startswith("layer")
                                             else npy_bytes(v) for k, v in arrays.items()})
    m = SparseMLP.load(path)  # deflated and stored members, zip64 records: the reader follows the format
    assert m.layer_sizes == [20, 16, 3]
    np.testing.assert_array_equal(m.layers[0].data, arrays["layer0_data"])


@pytest.mark.parametrize("case", ["bomb", "bomb_honest_zip", "declared_total", "inflates"])
def test_hostile_file_is_refused_naming_file_and_member(arrays, tmp_path, case):
    path, words = _hostile_files(arrays, tmp_path)[case]
    assert path.stat().st_size < 20 << 20
    with pytest.raises(ValueError) as err:
        SparseMLP.load(path)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_hostile_files_never_allocate_beyond_the_declared_model(arrays, tmp_path):
    """Under an address-space limit of what the process holds + 1 GiB, every hostile file is refused
    with a ValueError (a MemoryError, or the kernel killing the child, fails the test)."""
    files = {name: str(p) for name, (p, _) in _hostile_files(arrays, tmp_path).items()}
    probe = textwrap.dedent("""
        import json, resource, sys
        from set_cy import SparseMLP
        vm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize")][0]
        resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))
        out = {}
        for name, path in json.loads(sys.argv[1]).items():
            try:
                SparseMLP.load(path, n_threads=1)
                out[name] = "loaded"
            except ValueError as exc:
                out[name] = "ValueError: " + str(exc)
            except MemoryError as exc:
                out[name] = "MemoryError: " + str(exc)
        try:
            bytearray(2 << 30)  # the limit is real: 2 GiB more fails
            out["limit"] = "not enforced"
        except MemoryError:
            out["limit"] = "enforced"
        print(json.dumps(out))
    """)
    res = subprocess.run([sys.executable, "-c", probe, json.dumps(files)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out.pop("limit") == "enforced"
    for name, result in out.items():
        assert result.startswith("ValueError: ") and os.path.basename(files[name]) in result, (name, result)


def test_special_file_is_refused_by_name(tmp_path):
    link = tmp_path / "model.npz"
    os.symlink("/dev/zero", link)
    with pytest.raises(ValueError, match=r"model\.npz is not a regular file \(a character device\)"):
        SparseMLP.load(link)
    with pytest.raises(ValueError, match="is not a regular file .a directory."):
        SparseMLP.load(tmp_path)
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="fifo.npz is not a regular file .a FIFO."):
        SparseMLP.load(fifo)  # refused without opening it (an open would block)


def test_pickled_member_is_refused_without_the_unsafe_hint(arrays, tmp_path):
    obj = io.BytesIO()
    np.lib.format.write_array(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    path = write_zip(tmp_path / "pickle.npz", _members(arrays, extra_foo=obj.getvalue()))
    with pytest.raises(ValueError) as err:
        SparseMLP.load(path)
    msg = str(err.value)
    assert "pickle.npz" in msg and "extra_foo" in msg and "Python objects" in msg and "allow_pickle" not in msg


@pytest.mark.parametrize("key, value, words", [
    ("layer0_indices", lambda a: a.astype(np.int8), ["layer0: indices has dtype int8"]),
    ("layer0_indptr", lambda a: np.array(a[-1]), ["member layer0_indptr must be 1-D, got shape ()"]),
    ("layer0_indptr", lambda a: a[:-1], ["member layer0_indptr has length 16, expected 17"]),
    ("layer0_data", lambda a: a[:-1], ["member layer0_data has length", "one per connection: layer0_indices"]),
    ("layer0_indptr", lambda a: np.r_[a[:-1], a[-1] + 1], ["layer0_indptr must start at 0 and end at the"]),
    ("layer1_bias", lambda a: a.astype(">f4"), None),  # big-endian values: converted, loads
    ("input_mask", lambda a: np.ones(19, bool), ["member input_mask has length 19, expected 20"]),
    ("config", lambda a: np.array("x" * (17 << 20)), ["member config declares", "bytes of text"]),
    ("format_version", lambda a: np.array([1]), ["member format_version must be 0-d"]),
])
def test_messages_name_the_real_cause(arrays, tmp_path, key, value, words):
    changed = dict(arrays)
    changed[key] = value(arrays[key]) if key in arrays else value(None)
    path = tmp_path / "m.npz"
    np.savez(path, **changed)
    if words is None:
        assert SparseMLP.load(path).layers[1].bias.dtype == np.float32
        return
    with pytest.raises(ValueError) as err:
        SparseMLP.load(path)
    assert "m.npz" in str(err.value)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_save_into_a_missing_directory_names_the_path(tmp_path):
    m = SparseMLP([6, 4, 2], epsilon=2, seed=0, n_threads=1)
    target = tmp_path / "no" / "such" / "m.npz"
    with pytest.raises(FileNotFoundError) as err:
        m.save(target)
    assert str(target) in str(err.value) and ".set_cy-" not in str(err.value) and err.value.filename == str(target)
    os.mkdir(tmp_path / "dir.npz")
    with pytest.raises(OSError) as err:  # the target is a directory: the rename fails
        m.save(tmp_path / "dir.npz")
    assert "dir.npz" in str(err.value) and ".set_cy-" not in str(err.value)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".set_cy-")]


def _both_figures(msg):
    return "needs" in msg and "TB" in msg and "is available" in msg


@pytest.mark.parametrize("build", [
    lambda: SparseLinear(10, 10 ** 13, nnz=5),
    lambda: SparseLinear(10 ** 13, 10, nnz=5),
    lambda: SparseMLP([10, 10 ** 12, 3], epsilon=1),
    lambda: SparseMLP([10 ** 7, 10 ** 6, 2], epsilon=10 ** 5),
    lambda: ops.SparseOperator(sp.csr_array((np.ones(1, np.float32), ([0], [0])), shape=(10, 10 ** 13))),
    lambda: SparseLinear.from_scipy(sp.csr_array((np.ones(1, np.float32), ([0], [0])), shape=(10, 10 ** 13))),
    lambda: SparseLayer(10 ** 13, 5, np.zeros(6, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)),
], ids=["SparseLinear wide", "SparseLinear tall", "SparseMLP wide", "SparseMLP dense", "SparseOperator",
        "SparseLinear.from_scipy", "SparseLayer from arrays"])
def test_impossible_sizes_are_refused_with_both_figures(build):
    with pytest.raises(ValueError) as err:
        build()
    assert _both_figures(str(err.value)), str(err.value)


def test_torch_module_and_estimator_refuse_impossible_sizes():
    torch_mod = pytest.importorskip("set_cy.torch")
    with pytest.raises(ValueError) as err:
        torch_mod.SparseLinear(10, 10 ** 13, nnz=5)
    assert _both_figures(str(err.value))
    from set_cy import SETClassifier
    X, y = np.ones((8, 5), np.float32), np.arange(8) % 2
    with pytest.raises(ValueError) as err:
        SETClassifier(hidden_layer_sizes=(10 ** 12,), epsilon=1, n_jobs=1).fit(X, y)
    assert _both_figures(str(err.value))


def test_check_fits_compares_with_the_available_memory(monkeypatch):
    import set_cy.sizing as sizing
    monkeypatch.setattr(sizing, "system_memory", lambda: {"total": 8 * GiB, "available": 2 * GiB})
    check_fits(2 * GiB, "two GiB")  # exactly what is available: accepted
    with pytest.raises(ValueError, match=r"^three GiB needs 3.22 GB of memory, but only 2.15 GB is available$"):
        check_fits(3 * GiB, "three GiB")
