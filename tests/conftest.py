import os
import sys

import numpy as np
import pytest
import scipy.sparse as sp

# The test command gives SET_CY_DATA relative to the repository root; tests that chdir keep finding it.
if os.environ.get("SET_CY_DATA"):
    os.environ["SET_CY_DATA"] = os.path.abspath(os.environ["SET_CY_DATA"])



def pytest_collection_finish(session):
    """Start the wheel build of tests/test_packaging.py in the background when that test was collected
    (its compile then runs beside the other tests instead of after them)."""
    if session.config.option.collectonly:
        return
    if any(item.nodeid.split("::")[0].endswith("test_packaging.py") for item in session.items):
        import test_packaging

        test_packaging.start_build()


def pytest_sessionfinish(session, exitstatus):
    module = sys.modules.get("test_packaging")
    if module is not None:
        module.stop_build()


DTYPES = [np.float32, np.float64]
INDEX_DTYPES = [np.int32, np.int64]
THREADS = [1, 2, 3]


def tol(dtype):
    """Tolerances for comparing a kernel with a dense NumPy reference (sums of tens of products)."""
    return dict(rtol=2e-5, atol=2e-5) if np.dtype(dtype) == np.float32 else dict(rtol=1e-12, atol=1e-12)


def random_csr(n_rows, n_cols, density, dtype=np.float64, index_dtype=np.int32, seed=0, empty_rows=(),
               empty_cols=()):
    """A canonical random CSR array with some rows/columns forced empty."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_rows, n_cols)) < density
    mask[list(empty_rows), :] = False
    mask[:, list(empty_cols)] = False
    rows, cols = np.nonzero(mask)
    vals = rng.standard_normal(rows.size).astype(dtype)
    W = sp.csr_array((vals, (rows, cols)), shape=(n_rows, n_cols))
    W.indices = W.indices.astype(index_dtype)
    W.indptr = W.indptr.astype(index_dtype)
    assert W.has_canonical_format
    return W


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
