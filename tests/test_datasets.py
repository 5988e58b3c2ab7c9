"""Tests of set_cy.datasets on the real data in the shared folder and on small generated files."""
import dataclasses
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from set_cy.datasets import (
    DATASET_NAMES,
    Dataset,
    available_datasets,
    load_dataset,
    make_synthetic,
    read_idx,
    stratified_split,
)

# name -> (n_samples, n_features, n_classes), measured by loading the shared files
MAT_SHAPES = {
    "allaml": (72, 7129, 2),
    "glioma": (50, 4434, 4),
    "colon": (62, 2000, 2),
    "leukemia": (72, 7070, 2),
    "lymphoma": (96, 4026, 9),
    "lung_small": (73, 325, 7),
    "arcene": (200, 10000, 2),
    "madelon": (2600, 500, 2),
}


@pytest.fixture(scope="module")
def data_dir():
    env = os.environ.get("SET_CY_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"real data folder {path} not found (set SET_CY_DATA to the folder holding scikit-feature/ etc.)")
    return path


def _check_common(ds, n_classes):
    for X in (ds.X_train, ds.X_test):
        assert X.dtype == np.float32 and X.flags.c_contiguous and np.all(np.isfinite(X))
    for y in (ds.y_train, ds.y_test):
        assert y.dtype == np.int64 and y.min() >= 0 and y.max() < n_classes
    assert ds.n_classes == n_classes
    assert set(np.unique(np.concatenate([ds.y_train, ds.y_test])).tolist()) == set(range(n_classes))


def _nearest_class_mean_accuracy(ds):
    centroids = np.stack([ds.X_train[ds.y_train == k].mean(axis=0) for k in range(ds.n_classes)]).astype(np.float64)
    d = (centroids**2).sum(axis=1)[None, :] - 2.0 * ds.X_test.astype(np.float64) @ centroids.T
    return float(np.mean(d.argmin(axis=1) == ds.y_test))


# ---------------------------------------------------------------------------------------------
# real data
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MAT_SHAPES))
def test_scikit_feature_mat(data_dir, name):
    n, p, k = MAT_SHAPES[name]
    ds = load_dataset(name.upper(), data_dir=data_dir)
    assert ds.name == name
    assert ds.n_features == p and ds.X_test.shape[1] == p
    assert ds.n_train + ds.n_test == n
    assert ds.n_test == pytest.approx(n / 3, abs=k)  # default test_size = 1/3
    _check_common(ds, k)
    # stratified: every class in train, and in test when it has at least two samples
    counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]), minlength=k)
    assert np.all(np.bincount(ds.y_train, minlength=k) >= 1)
    assert np.all(np.bincount(ds.y_test, minlength=k)[counts >= 2] >= 1)
    # standardized with train statistics
    mean = ds.X_train.mean(axis=0, dtype=np.float64)
    std = ds.X_train.std(axis=0, dtype=np.float64)
    assert np.abs(mean).max() < 1e-3
    assert np.all((np.abs(std - 1) < 1e-3) | (std < 1e-6))


def test_madelon_nips(data_dir, monkeypatch):
    monkeypatch.setenv("SET_CY_DATA", str(data_dir))
    ds = load_dataset("Madelon_NIPS", test_size=0.5)  # official split: test_size ignored
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_classes) == (2000, 600, 500, 2)
    _check_common(ds, 2)
    assert np.bincount(ds.y_train).tolist() == [1000, 1000]
    assert np.bincount(ds.y_test).tolist() == [300, 300]
    raw = load_dataset("madelon-nips", standardize=False, dtype="float64")
    assert raw.X_train.dtype == np.float64
    assert np.array_equal(raw.X_train[0, :3], [485, 477, 537])  # first line of madelon_train.data
    assert raw.y_train[0] == 0  # label -1 maps to 0


@pytest.mark.parametrize("name,standardize", [("mnist", True), ("fashion-mnist", False)])
def test_idx_datasets(data_dir, name, standardize):
    ds = load_dataset(name, data_dir=data_dir, standardize=standardize)
    assert ds.X_train.shape == (60000, 784) and ds.X_test.shape == (10000, 784)
    _check_common(ds, 10)
    if standardize:
        assert np.abs(ds.X_train[:, 300:310].mean(axis=0)).max() < 1e-3
    else:
        assert ds.X_train.min() == 0.0 and ds.X_train.max() == 1.0
    if name == "fashion-mnist":
        assert np.bincount(ds.y_train).tolist() == [6000] * 10


def test_available_datasets(data_dir):
    found = available_datasets(data_dir)
    assert set(found) == set(DATASET_NAMES) - {"synthetic"}
    assert all(path is not None and Path(path).exists() for path in found.values())


def test_split_determinism(data_dir):
    a = load_dataset("colon", data_dir=data_dir, seed=3)
    b = load_dataset("colon", data_dir=data_dir, seed=3)
    c = load_dataset("colon", data_dir=data_dir, seed=4)
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.X_train, c.X_train)
    half = load_dataset("colon", data_dir=data_dir, test_size=0.5, standardize=False, dtype=np.float64)
    assert (half.n_train, half.n_test) == (31, 31)
    assert half.X_train.dtype == np.float64


def test_integer_mat_and_labels_via_path(data_dir):
    # colon.mat stores X as int16 and Y as -1/+1
    ds = load_dataset(data_dir / "scikit-feature" / "colon.mat", standardize=False)
    assert ds.name == "colon" and ds.X_train.dtype == np.float32
    assert set(np.unique(ds.X_train).tolist()) <= {-2.0, -1.0, 0.0, 1.0, 2.0}
    assert np.bincount(np.concatenate([ds.y_train, ds.y_test])).tolist() == [40, 22]


# ---------------------------------------------------------------------------------------------
# search order and errors
# ---------------------------------------------------------------------------------------------
def _write_mat(path, n=12, p=3, offset=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    X = np.arange(n * p, dtype=np.float64).reshape(n, p) + offset
    Y = np.array([1, 2] * (n // 2), dtype=np.uint8).reshape(-1, 1)
    scipy.io.savemat(str(path), {"X": X, "Y": Y})


def test_missing_dataset_message(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("SET_CY_DATA", str(empty))
    monkeypatch.chdir(tmp_path)  # so ./data does not exist
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("lung_small")
    msg = str(info.value)
    assert str(empty / "scikit-feature" / "lung_small.mat") in msg
    assert str(empty / "lung_small.mat") in msg
    assert "data/scikit-feature/lung_small.mat" in msg
    assert "SET_CY_DATA" in msg and "scikit-feature" in msg
    assert available_datasets()["lung_small"] is None


def test_missing_fashion_mnist_mentions_debian_package(tmp_path, monkeypatch):
    if Path("/usr/share/datasets/fashion-mnist").exists():
        pytest.skip("Fashion-MNIST is installed system-wide here")
    monkeypatch.setenv("SET_CY_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_search_order(tmp_path, monkeypatch):
    arg_dir, env_dir, cwd = tmp_path / "arg", tmp_path / "env", tmp_path / "cwd"
    _write_mat(arg_dir / "scikit-feature" / "colon.mat", p=3)
    _write_mat(env_dir / "colon.mat", p=4)  # directly in the base folder
    _write_mat(cwd / "data" / "scikit-feature" / "colon.mat", p=5)
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("SET_CY_DATA", raising=False)
    assert load_dataset("colon").n_features == 5  # ./data
    monkeypatch.setenv("SET_CY_DATA", str(env_dir))
    assert load_dataset("colon").n_features == 4  # $SET_CY_DATA before ./data
    assert load_dataset("colon", data_dir=arg_dir).n_features == 3  # data_dir first
    assert available_datasets(arg_dir)["colon"] == arg_dir / "scikit-feature" / "colon.mat"


def test_bad_arguments():
    with pytest.raises(ValueError, match="known names.*allaml.*fashion-mnist"):
        load_dataset("no-such-set")
    for bad in (0, 1, 1.5, -0.1, float("nan"), True, "0.3"):
        with pytest.raises(ValueError, match="test_size"):
            load_dataset("colon", test_size=bad)
    with pytest.raises(ValueError, match="dtype"):
        load_dataset("colon", dtype="int32")
    with pytest.raises(TypeError, match="only accepted for the 'synthetic'"):
        load_dataset("colon", n_samples=10)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        load_dataset("synthetic", bogus=1)
    with pytest.raises(FileNotFoundError):
        load_dataset("does/not/exist.npz")


# ---------------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------------
def _idx_bytes(arr):
    arr = np.asarray(arr, dtype=np.uint8)
    return struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _write_idx_folder(folder, compress):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (8, 2, 3)),
        "train-labels-idx1-ubyte": np.arange(8) % 4,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 2, 3)),
        "t10k-labels-idx1-ubyte": np.arange(4),
    }
    for fn, arr in parts.items():
        data = _idx_bytes(arr)
        if compress:
            (folder / (fn + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / fn).write_bytes(data)
    return parts


@pytest.mark.parametrize("compress", [True, False])
def test_idx_folder_roundtrip(tmp_path, compress):
    parts = _write_idx_folder(tmp_path / "tiny", compress)
    suffix = ".gz" if compress else ""
    arr = read_idx(tmp_path / "tiny" / f"train-images-idx3-ubyte{suffix}")
    assert arr.shape == (8, 2, 3) and np.array_equal(arr, parts["train-images-idx3-ubyte"])
    ds = load_dataset(tmp_path / "tiny", standardize=False)
    assert ds.X_train.shape == (8, 6) and ds.X_test.shape == (4, 6) and ds.n_classes == 4
    assert np.allclose(ds.X_train, parts["train-images-idx3-ubyte"].reshape(8, 6) / 255.0)


def test_idx_bad_magic(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    _write_idx_folder(folder, compress=True)
    bad = folder / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x12\x34\x56\x78" + bytes(100)))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz.*magic"):
        read_idx(bad)
    monkeypatch.setenv("SET_CY_DATA", str(tmp_path))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist")


# ---------------------------------------------------------------------------------------------
# .npz and .csv by path
# ---------------------------------------------------------------------------------------------
def test_npz_xy_and_ready_split(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.integers(0, 10, (30, 4)).astype(np.int32)
    y = np.repeat([7, 3, 9], 10)
    np.savez(tmp_path / "xy.npz", X=X, y=y)
    ds = load_dataset(str(tmp_path / "xy.npz"), standardize=False, test_size=0.2)
    assert (ds.n_train, ds.n_test, ds.n_classes) == (24, 6, 3)
    assert np.bincount(ds.y_test).tolist() == [2, 2, 2]
    # labels 3, 7, 9 map to 0, 1, 2: rows of class 7 are the first ten of X
    rows_of_7 = {tuple(r) for r in X[:10].astype(np.float32)}
    assert all(tuple(r) in rows_of_7 for r in ds.X_train[ds.y_train == 1])

    np.savez(tmp_path / "split.npz", X_train=X[:20], y_train=y[:20], X_test=X[20:], y_test=y[20:])
    ds = load_dataset(tmp_path / "split.npz", test_size=0.5)
    assert (ds.n_train, ds.n_test, ds.n_classes) == (20, 10, 3)
    assert np.all(ds.y_test == 2)
    assert np.abs(ds.X_train.mean(axis=0)).max() < 1e-5


@pytest.mark.parametrize("header", [True, False])
def test_csv(tmp_path, header):
    rows = [f"{i},{i * 0.5},{-i},{'a' if i % 2 else 'b'}" for i in range(12)]
    text = ("f1,f2,f3,label\n" if header else "") + "\n".join(rows) + "\n"
    path = tmp_path / "table.csv"
    path.write_text(text)
    ds = load_dataset(path, standardize=False)
    assert ds.n_train + ds.n_test == 12 and ds.n_features == 3 and ds.n_classes == 2
    # label 'a' (odd rows) -> 0, 'b' (even rows) -> 1
    assert np.all(ds.X_train[:, 0][ds.y_train == 0] % 2 == 1)
    assert np.all(ds.X_train[:, 0][ds.y_train == 1] % 2 == 0)


# ---------------------------------------------------------------------------------------------
# stratified split
# ---------------------------------------------------------------------------------------------
def test_stratified_split_properties():
    y = np.array([5] * 20 + [1] * 7 + [2] * 2 + [9] * 1 + [3] * 3)
    for seed in range(5):
        tr, te = stratified_split(y, 1 / 3, seed)
        assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(y.size))
        for c in np.unique(y):
            assert np.sum(y[tr] == c) >= 1
            if np.sum(y == c) >= 2:
                assert np.sum(y[te] == c) >= 1
        assert np.sum(y[te] == 5) == 7  # 20 / 3 rounded
    a, b = stratified_split(y, 0.25, 11), stratified_split(y, 0.25, 11)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], stratified_split(y, 0.25, 12)[0])


def test_dataset_validation():
    X = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="y_train"):
        Dataset(X, np.array([0, 1, 2, 0]), X, np.array([0, 1, 0, 1]), "bad", 2)
    ds = Dataset(X, np.array([0, 1, 0, 1], dtype=np.int32), X, np.array([0, 1, 0, 1]), "ok", 2)
    assert ds.y_train.dtype == np.int64 and ds.n_features == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"  # frozen


# ---------------------------------------------------------------------------------------------
# synthetic data
# ---------------------------------------------------------------------------------------------
def test_synthetic_determinism():
    a = make_synthetic(120, 300, 4, seed=5)
    b = make_synthetic(120, 300, 4, seed=5)
    c = make_synthetic(120, 300, 4, seed=6)
    for field in ("X_train", "y_train", "X_test", "y_test", "informative_features"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.X_train, c.X_train)
    assert a.informative_features.shape == (30,)
    assert (a.n_train, a.n_test) == (80, 40)


def test_synthetic_learnable():
    ds = load_dataset("synthetic", samples=300, features=500, classes=5)
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_classes) == (200, 100, 500, 5)
    # nearest-class-mean: measured 0.58 to 0.84 over seeds 0..19 (chance is 0.2)
    assert _nearest_class_mean_accuracy(ds) > 0.45
    # without informative features the same classifier is near chance
    flat = load_dataset("synthetic", samples=300, features=500, classes=5, class_sep=0.0)
    assert _nearest_class_mean_accuracy(flat) < 0.4


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_synthetic_mid_size(dtype):
    ds = make_synthetic(n_samples=300, n_features=20000, n_classes=18, dtype=dtype, seed=1)
    assert ds.X_train.shape == (200, 20000) and ds.X_test.shape == (100, 20000)
    assert ds.X_train.dtype == np.dtype(dtype) and ds.X_train.flags.c_contiguous
    assert ds.n_classes == 18 and np.all(np.bincount(ds.y_test, minlength=18) >= 1)
    assert ds.informative_features.shape == (2000,)
    assert abs(float(ds.X_train[:, :100].std()) - 1.0) < 0.1
    with pytest.raises(ValueError, match="n_samples"):
        make_synthetic(n_samples=10, n_features=5, n_classes=6)
