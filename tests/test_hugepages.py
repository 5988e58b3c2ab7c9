"""set_cy.hugepages.empty: fresh, 2 MiB-aligned arrays for the operands the kernels gather from."""
import gc
import mmap
import sys

import numpy as np
import pytest

from set_cy import hugepages


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("shape", [5 << 20, (3000, 700), (2, 1500, 1000)])
def test_large_arrays_are_aligned_owned_and_independent(dtype, shape):
    a = hugepages.empty(shape, dtype)
    b = hugepages.empty(shape, dtype)
    want = (shape,) if np.ndim(shape) == 0 else shape
    assert a.shape == want and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    if hasattr(mmap, "MADV_HUGEPAGE"):
        assert a.ctypes.data % hugepages.HUGE_PAGE == 0 and b.ctypes.data % hugepages.HUGE_PAGE == 0
    assert not np.may_share_memory(a, b)
    a[...] = 1
    b[...] = 2
    view = a.reshape(-1)[-10:]
    del a
    gc.collect()
    np.testing.assert_array_equal(view, 1)  # the mapping lives as long as an array refers to it
    assert np.all(b == 2)


def test_small_arrays_are_plain_numpy():
    a = hugepages.empty((10, 3), np.float32)
    assert a.shape == (10, 3) and a.dtype == np.float32 and a.base is None
    assert hugepages.empty(0, np.float64).shape == (0,)
    with pytest.raises(ValueError, match="negative"):
        hugepages.empty((-1, 4), np.float32)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are a Linux feature")
def test_the_model_and_ops_buffers_come_from_it():
    """The buffers the kernels gather from: the model's batch buffers and ops' feature-major copies."""
    from set_cy import SparseNetwork, ops

    net = SparseNetwork([50, 40000, 10], epsilon=2, seed=0, dtype="float32")
    X = np.random.default_rng(0).standard_normal((40, 50)).astype(np.float32)
    net.train_batch(X, np.zeros(40, np.int64), np.arange(32), learning_rate=0.01)
    assert net._buffers["act"][0].ctypes.data % hugepages.HUGE_PAGE == 0   # 40000 x 32 float32 = 5 MB
    C = np.ones((32, 40000), np.float32)
    Xf, fortran = ops.feature_major(C, "X", 40000)
    assert not fortran and Xf.ctypes.data % hugepages.HUGE_PAGE == 0
    np.testing.assert_array_equal(Xf, C.T)
