"""set_cy.torch: the autograd Function and nn.Module over the kernels (skipped without torch)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="set_cy.torch is optional: install torch (the 'test' extra pins "
                                            "the CPU wheel) to run these tests")

from conftest import random_csr, tol  # noqa: E402

from set_cy.torch import SparseLinear, sparse_linear  # noqa: E402

DATA = Path(os.environ.get("SET_CY_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
if not DATA.is_absolute():
    DATA = (Path(__file__).resolve().parents[1] / DATA).resolve()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real datasets not found at {DATA} (set SET_CY_DATA)")

TORCH_DTYPES = [torch.float32, torch.float64]


def _dense(m):
    rows, cols = m.coords()
    W = torch.zeros(m.n_in, m.n_out, dtype=m.values.dtype)
    W[rows, cols] = m.values.detach()
    return W


def _module(dtype, n_in=30, n_out=20, nnz=120, seed=0, bias=True):
    m = SparseLinear(n_in, n_out, nnz=nnz, dtype=dtype, seed=seed, bias=bias)
    if bias:
        with torch.no_grad():
            m.bias.copy_(torch.randn(n_out, generator=torch.Generator().manual_seed(seed), dtype=dtype))
    return m


def test_import_set_cy_does_not_import_torch_and_bridge_uses_the_real_torch():
    import set_cy.torch as bridge

    assert bridge.torch is torch and bridge.nn is torch.nn
    code = "import sys, set_cy; assert 'torch' not in sys.modules, 'set_cy imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_float64(index_dtype, bias):
    W = random_csr(7, 5, 0.4, dtype=np.float64, index_dtype=index_dtype, seed=1, empty_rows=(3,), empty_cols=(2,))
    m = SparseLinear.from_scipy(W, np.linspace(-1, 1, 5) if bias else False)
    assert m.indices.dtype == (torch.int32 if index_dtype == np.int32 else torch.int64)
    X = torch.randn(4, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    pattern = m.pattern
    if bias:
        inputs = (X, m.values, m.bias)
        def fn(X, v, b):
            return sparse_linear(X, v, b, pattern)
    else:
        inputs = (X, m.values)

        def fn(X, v):
            return sparse_linear(X, v, None, pattern)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradcheck_catches_a_wrong_gradient():
    """The check above can fail: a values gradient in the wrong order does not pass it."""
    m = _module(torch.float64, n_in=6, n_out=5, nnz=12)
    X = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    p = m.pattern

    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, X, v):
            ctx.save_for_backward(X, v)
            return sparse_linear(X.detach(), v.detach(), None, p)

        @staticmethod
        def backward(ctx, dY):
            X, v = ctx.saved_tensors
            with torch.enable_grad():
                Xr, vr = X.detach().requires_grad_(), v.detach().requires_grad_()
                gX, gv = torch.autograd.grad(sparse_linear(Xr, vr, None, p), (Xr, vr), dY)
            return gX, gv.flip(0)  # the values' gradient in the wrong order (a shuffled pattern is refused)

    assert not torch.autograd.gradcheck(Wrong.apply, (X, m.values), raise_exception=False)


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_forward_backward_match_dense_torch(dtype):
    m = _module(dtype)
    W = _dense(m)
    np.testing.assert_array_equal(W.numpy(), m.to_scipy().toarray())
    g = torch.Generator().manual_seed(1)
    X = torch.randn(6, m.n_in, dtype=dtype, generator=g, requires_grad=True)
    dY = torch.randn(6, m.n_out, dtype=dtype, generator=g)
    Y = m(X)
    assert Y.shape == (6, m.n_out) and Y.dtype == dtype
    t = tol(np.float32 if dtype == torch.float32 else np.float64)
    np.testing.assert_allclose(Y.detach().numpy(), (X.detach() @ W + m.bias.detach()).numpy(), **t)
    Y.backward(dY)
    rows, cols = m.coords()
    np.testing.assert_allclose(X.grad.numpy(), (dY @ W.T).numpy(), **t)
    np.testing.assert_allclose(m.values.grad.numpy(), (X.detach().T @ dY)[rows, cols].numpy(), **t)
    np.testing.assert_allclose(m.bias.grad.numpy(), dY.sum(0).numpy(), **t)


def test_frozen_values_still_give_the_input_and_bias_gradients():
    m = _module(torch.float64)
    m.values.requires_grad_(False)
    W = _dense(m)
    X = torch.randn(5, m.n_in, dtype=torch.float64, requires_grad=True)
    dY = torch.randn(5, m.n_out, dtype=torch.float64)
    m(X).backward(dY)
    assert m.values.grad is None
    torch.testing.assert_close(X.grad, dY @ W.T)
    torch.testing.assert_close(m.bias.grad, dY.sum(0))


def test_two_layer_chain_matches_dense_and_passes_feature_major_views():
    a = _module(torch.float64, n_in=12, n_out=9, nnz=40, seed=1)
    b = _module(torch.float64, n_in=9, n_out=4, nnz=20, seed=2)
    X = torch.randn(5, 12, dtype=torch.float64)
    h = torch.relu(a(X))
    assert h.t().is_contiguous()  # the next layer reads it without a copy
    out = b(h)
    loss = (out ** 2).sum()
    loss.backward()
    Wa = _dense(a).requires_grad_()
    Wb = _dense(b).requires_grad_()
    ref = ((torch.relu(X @ Wa + a.bias.detach()) @ Wb + b.bias.detach()) ** 2).sum()
    ref.backward()
    assert torch.allclose(loss, ref)
    for m, W in ((a, Wa), (b, Wb)):
        rows, cols = m.coords()
        assert torch.allclose(m.values.grad, W.grad[rows, cols])


def test_dtype_conversion_and_state_dict_round_trip():
    m = _module(torch.float32)
    m.double()
    assert m.values.dtype == torch.float64 and m.indices.dtype == torch.int32
    X = torch.randn(3, m.n_in, dtype=torch.float64)
    other = SparseLinear(m.n_in, m.n_out, nnz=m.nnz, dtype=torch.float64, seed=99)
    assert not torch.equal(other.indices, m.indices)
    other.load_state_dict(m.state_dict())
    assert torch.equal(other(X), m(X))
    assert set(m.state_dict()) == {"values", "bias", "indptr", "indices", "t_indptr", "t_indices", "perm"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scipy_round_trip(dtype):
    W = random_csr(15, 8, 0.3, dtype=dtype, seed=4)
    m = SparseLinear.from_scipy(W, torch.arange(8.0))
    assert m.values.dtype == (torch.float32 if dtype == np.float32 else torch.float64)
    np.testing.assert_array_equal(m.to_scipy().toarray(), W.toarray())
    np.testing.assert_array_equal(m.bias.detach().numpy(), np.arange(8.0, dtype=dtype))
    assert SparseLinear.from_scipy(W, bias=False).bias is None
    assert torch.count_nonzero(SparseLinear.from_scipy(W).bias) == 0


def test_evolve_carries_optimizer_state_and_invalidates_stale_graphs():
    m = _module(torch.float64, n_in=40, n_out=30, nnz=300, seed=3)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    X = torch.randn(8, 40, dtype=torch.float64)
    for _ in range(2):
        opt.zero_grad()
        (m(X) ** 2).mean().backward()
        opt.step()
    param = m.values
    buf = opt.state[m.values]["momentum_buffer"]
    assert torch.count_nonzero(buf) > 250
    old_val = dict(zip(zip(*[c.tolist() for c in m.coords()]), m.values.tolist()))
    old_buf = dict(zip(zip(*[c.tolist() for c in m.coords()]), buf.tolist()))
    pending = m(X).sum()  # a graph built before evolution
    k = m.evolve(0.2, optimizer=opt)
    assert k == pytest.approx(60, abs=2)
    assert m.values is param and opt.state[m.values]["momentum_buffer"] is buf and m.nnz == 300
    assert m.values.grad is None
    coords = list(zip(*[c.tolist() for c in m.coords()]))
    assert len(set(coords)) == 300
    survivors = np.array([c in old_val and old_val[c] == v for c, v in zip(coords, m.values.tolist())])
    assert survivors.sum() >= 300 - k
    new_buf = buf.numpy()
    np.testing.assert_array_equal(new_buf[survivors], [old_buf[c] for c, s in zip(coords, survivors) if s])
    assert np.count_nonzero(new_buf[~survivors]) == 0  # new connections start without momentum
    # the transposed index follows the new pattern: forward and backward agree with the dense layer
    W = _dense(m)
    Xg = X.clone().requires_grad_()
    m(Xg).sum().backward()
    assert torch.allclose(Xg.grad, torch.ones(8, 30, dtype=torch.float64) @ W.T)
    np.testing.assert_array_equal(m.to_scipy().toarray(), W.numpy())
    with pytest.raises(RuntimeError, match="inplace|in-place"):
        pending.backward()


def test_evolve_without_optimizer_and_adam_state():
    m = _module(torch.float32, seed=5)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    (m(torch.randn(4, m.n_in)) ** 2).sum().backward()
    opt.step()
    before = {k: v.clone() for k, v in opt.state[m.values].items()}
    m.evolve(0.3, optimizer=opt, rng=np.random.default_rng(0))
    after = opt.state[m.values]
    assert torch.equal(after["step"], before["step"])  # scalar state is left alone
    for key in ("exp_avg", "exp_avg_sq"):
        assert (after[key] == 0).sum() > (before[key] == 0).sum()
    assert m.evolve(0.0) == 0


@needs_data
def test_tiny_mlp_trained_with_sgd_learns_allaml():
    from set_cy.datasets import load_dataset

    d = load_dataset("ALLAML", data_dir=DATA)
    X, y = torch.from_numpy(d.X_train), torch.from_numpy(d.y_train)
    Xt, yt = torch.from_numpy(d.X_test), torch.from_numpy(d.y_test)
    torch.manual_seed(0)
    model = torch.nn.Sequential(SparseLinear(X.shape[1], 64, epsilon=10, seed=0), torch.nn.ReLU(),
                                SparseLinear(64, 2, epsilon=10, seed=1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    with torch.no_grad():
        initial = loss_fn(model(X), y).item()
    for epoch in range(20):
        perm = torch.randperm(X.shape[0])
        for s in range(0, X.shape[0], 16):
            idx = perm[s:s + 16]
            opt.zero_grad()
            loss_fn(model(X[idx]), y[idx]).backward()
            opt.step()
        if epoch in (5, 10):
            model[0].evolve(0.1, optimizer=opt)
    with torch.no_grad():
        final = loss_fn(model(X), y).item()
        acc = (model(Xt).argmax(1) == yt).double().mean().item()
    majority = np.bincount(d.y_test).max() / d.y_test.size
    assert final < 0.1 * initial, (initial, final)
    assert acc > majority + 0.05, (acc, majority)


def test_errors_are_clear():
    m = _module(torch.float32)
    with pytest.raises(TypeError, match="X has dtype torch.float64"):
        m(torch.randn(2, m.n_in, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"X must have shape \(batch, 30\)"):
        m(torch.randn(2, m.n_in + 1))
    with pytest.raises(ValueError, match="X must be 2-D"):
        m(torch.randn(m.n_in))
    with pytest.raises(ValueError, match="meta.*CPU"):
        m(torch.empty(2, m.n_in, device="meta"))
    with pytest.raises(TypeError, match="X must be a torch.Tensor"):
        m(np.ones((2, m.n_in), np.float32))
    with pytest.raises(TypeError, match="values must be float32 or float64"):
        sparse_linear(torch.ones(2, 30), m.values.detach().long(), None, m.pattern)
    with pytest.raises(ValueError, match="values has"):
        sparse_linear(torch.ones(2, 30), m.values.detach()[:-1], None, m.pattern)
    with pytest.raises(TypeError, match="pattern"):
        sparse_linear(torch.ones(2, 30), m.values, None, (m.indptr, m.indices))
    with pytest.raises(TypeError, match="dtype"):
        SparseLinear(5, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match="zeta"):
        m.evolve(2.0)
    with pytest.raises(TypeError, match="optimizer"):
        m.evolve(0.1, optimizer="sgd")


# --- untrusted patterns: an exception, never a crash (issue 13) -----------------------------------------------
_STATE_DICT_PROBE = """
import sys
import torch
from set_cy.torch import SparseLinear
m = SparseLinear(30, 20, nnz=100, seed=0)
good = {k: v.clone() for k, v in m.state_dict().items()}
bad = {k: v.clone() for k, v in good.items()}
name, pos, value = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
bad[name][pos] = value
try:
    m.load_state_dict(bad)
except RuntimeError as exc:
    assert "invalid pattern" in str(exc), exc
    assert all(torch.equal(m.state_dict()[k], good[k]) for k in good), "a refused state dict changed the module"
    print("refused")
X = torch.randn(4, 30, requires_grad=True)
m(X).sum().backward()
print("ran")
"""


@pytest.mark.parametrize("name,pos,value", [("indptr", 5, 10 ** 6), ("indptr", 5, -3), ("indices", 3, 10 ** 6),
                                            ("indices", 0, -1), ("t_indptr", 2, 10 ** 6), ("t_indices", 1, 10 ** 6),
                                            ("perm", 0, 10 ** 6), ("perm", 1, 0)])
def test_load_state_dict_refuses_a_corrupt_pattern(name, pos, value):
    """The issue's crash: a corrupted buffer in a state dict segfaulted the next forward pass."""
    res = subprocess.run([sys.executable, "-c", _STATE_DICT_PROBE, name, str(pos), str(value)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr[-2000:])
    assert res.stdout.split() == ["refused", "ran"]


def test_patterns_changed_in_place_are_checked_again():
    m = _module(torch.float32, n_in=30, n_out=20, nnz=100)
    X = torch.randn(4, 30)
    Y = m(X)
    saved = m.indices.clone()
    with torch.no_grad():
        m.indices[3] = 10 ** 6  # after a first, checked forward
    with pytest.raises(ValueError, match="column indices outside"):
        m(X)
    with torch.no_grad():
        m.indices.copy_(saved)
    torch.testing.assert_close(m(X), Y)
    p = m.pattern
    for field, bad in (("perm", torch.zeros_like(p.perm)), ("t_indices", p.t_indices.flip(0).contiguous()),
                       ("indices", p.indices.flip(0).contiguous())):
        with pytest.raises(ValueError, match="pattern"):
            sparse_linear(X, m.values, m.bias, p._replace(**{field: bad}))
    with pytest.raises(ValueError, match="pattern.n_in must be a positive int"):
        sparse_linear(X, m.values, m.bias, p._replace(n_in=0))


_DATA_WRITE_PROBE = """
import torch
from set_cy.torch import SparseLinear
m = SparseLinear(6, 4, nnz=8, seed=0, n_threads=1)
m(torch.ones(2, 6))
m.indices.data[0] = 10 ** 6  # torch's version counter does not see writes through .data
try:
    m(torch.ones(2, 6))
except ValueError as exc:
    print("refused:", exc)
m.indices.data[0] = 0
X = torch.ones(2, 6, requires_grad=True)
Y = m(X)  # checked forward; then a write torch does not count, before the backward reads the saved pattern
m.perm.numpy()[1] = 10 ** 6
try:
    Y.sum().backward()
except ValueError as exc:
    print("refused:", exc)
m.perm.numpy()[1] = 0
good = m.indices.clone()
m.indices.data = torch.full_like(good, 10 ** 6)  # the same length at another address, through .data
try:
    m(X)
except ValueError as exc:
    print("refused:", exc)
m.indices.data = good
Y = m(X)
m.perm.data = torch.full_like(m.perm, 10 ** 6)  # between the forward and the backward
try:
    Y.sum().backward()
except ValueError as exc:
    print("refused:", exc)
m.t_indptr.data = torch.zeros(3, dtype=m.t_indptr.dtype)  # another length, through .data
try:
    m(X)
except ValueError as exc:
    print("refused:", exc)
"""


def test_writes_torch_does_not_count_are_caught_before_the_kernels():
    res = subprocess.run([sys.executable, "-c", _DATA_WRITE_PROBE], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr[-2000:])
    lines = res.stdout.splitlines()
    assert len(lines) == 5, res.stdout
    assert lines[0].startswith("refused: pattern.indices has values outside")
    assert lines[1].startswith("refused: pattern.perm has values outside")
    assert lines[2].startswith("refused: pattern.indices has values outside")
    assert lines[3].startswith("refused: pattern.perm has values outside")
    assert lines[4].startswith("refused: inconsistent pattern: ")


def test_a_state_dict_of_another_size_loads_nothing():
    m = _module(torch.float32, n_in=6, n_out=4, nnz=8)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    other = SparseLinear(6, 4, nnz=10, seed=1).state_dict()
    with pytest.raises(RuntimeError, match="shapes differ"):
        m.load_state_dict(other)
    assert all(torch.equal(m.state_dict()[k], v) for k, v in before.items())
    m(torch.ones(2, 6))  # still usable
