"""Runner of the fuzz cases of ``tests/test_fuzz.py``: one process runs a batch of cases.

Usage::

    python tests/_fuzz_cases.py CASES.json [WORKDIR]      # or "-" (or nothing): the JSON on stdin

``CASES.json`` holds one case (a JSON object) or a list of them. Each case names an entry point that
takes arrays or files from outside (``"kind"``), the valid input it starts from and the corruptions to
apply to it; the runner builds the corrupted input, calls the entry point, uses what it returned, and
checks that the outcome is one of the two acceptable ones: a Python exception (any ``Exception``), or
a result consistent with the input (shapes, and values against a NumPy reference computed from the
arrays the library accepted). A crash of the process (segfault, abort) is the third, unacceptable
outcome: the caller sees a negative exit status, and the case printed last is the one that crashed.

Kinds
-----
``"model"``
    ``SparseMLP.load`` / ``SparseNetwork.load`` of a corrupted ``.npz`` written by ``SparseMLP.save``,
    then ``predict`` and one epoch of ``fit`` (``train_batch`` for a ``SparseNetwork``).
``"ops"``
    ``set_cy.ops`` functions on a scipy CSR matrix whose arrays were corrupted after construction (in
    place or replaced), or on a ``SparseOperator`` made from it (whose attributes may be changed
    afterwards), with dense operands and ``out=`` arrays of wrong shapes, dtypes or layouts.
``"linear"``
    ``set_cy.SparseLinear.from_scipy`` of such a matrix, then forward, backward, step and evolve.
``"torch_state"``
    ``set_cy.torch.SparseLinear.load_state_dict`` of a state dict with corrupted buffers, then forward
    and backward (also after a failed load, when ``after_error`` is set).
``"torch_fn"``
    ``set_cy.torch.sparse_linear`` (or ``SparseLinearFunction.apply``) with a corrupted
    ``SparsePattern``, then backward.

Output, one line each, flushed before the next step::

    CASE <i> <case as JSON>
    RESULT <i> ok
    RESULT <i> raised <stage> <ExceptionType>: <message>
    RESULT <i> inconsistent <stage>: <what>
    RESULT <i> harness-error <ExceptionType>: <message>
    RESULT <i> n/a: <the feature this set_cy lacks>
    DONE

Exit status: 0 when every case raised or ran through consistently, 2 when some case was inconsistent
(or the runner itself failed on a case), negative when a signal killed the process.
"""
import faulthandler
import gc
import io
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np

LAYER_ARRAYS = ("indptr", "indices", "data", "velocity", "bias", "bias_velocity")
TORCH_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "float16", "float32", "float64", "bool")


class Raised(Exception):
    """The library raised ``exc`` at ``stage``: an acceptable outcome."""

    def __init__(self, stage, exc):
        super().__init__(stage)
        self.stage, self.exc = stage, exc


class Inconsistent(Exception):
    """The library returned, but its result does not match the input: a failure."""

    def __init__(self, stage, what):
        super().__init__(f"{stage}: {what}")
        self.stage, self.what = stage, what


class NotApplicable(Exception):
    """The case needs a feature this version of set_cy does not have."""


def _call(stage, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, with any ``Exception`` it raises wrapped in :class:`Raised`."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        raise Raised(stage, exc) from exc


def _expect(cond, stage, what):
    if not cond:
        raise Inconsistent(stage, what)


# --------------------------------------------------------------------------------------------------
# corruption of one array
# --------------------------------------------------------------------------------------------------
def _value(spec, bound):
    """A number from a case: numbers as they are, names relative to ``bound`` (the array's valid range)."""
    if not isinstance(spec, str):
        return spec
    table = {"n": bound, "n+1": bound + 1, "n-1": bound - 1, "2n": 2 * bound, "-1": -1, "-n": -bound,
             "max32": 2 ** 31 - 1, "max32+1": 2 ** 31, "min32": -2 ** 31, "max64": 2 ** 63 - 1,
             "min64": -2 ** 63, "2**40": 2 ** 40, "nan": math.nan, "inf": math.inf, "-inf": -math.inf}
    return table[spec]


def _cast(v, dtype):
    """``v`` as a 0-d array of ``dtype``, wrapping around like a C cast (never raising)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            if dtype.kind in "iub" and isinstance(v, int):
                return np.array(v % 2 ** 64, dtype=np.uint64).astype(dtype)
            return np.array(v).astype(dtype)
        except (TypeError, ValueError, OverflowError):
            return np.zeros((), dtype)


def _pos(spec, n):
    if spec == "first":
        return 0
    if spec == "last":
        return n - 1
    return int(spec) % n


def mutate(a, op, bound):
    """A corrupted copy of the array ``a`` (never modifies ``a``).

    Parameters
    ----------
    a : ndarray
    op : dict
        ``{"op": name, ...}``: ``set`` (``pos``, ``value``), ``swap`` (``i``, ``j``), ``reverse``,
        ``shuffle`` (``seed``), ``add`` (``value``), ``truncate`` (``k``), ``extend`` (``k``, ``value``),
        ``astype`` (``dtype``), ``reshape2d``, ``empty``, ``scalar``, ``fill`` (``value``), ``noncontig``
        (same values, every other element of a buffer twice as long).
    bound : int
        The exclusive upper bound of the array's valid values (number of columns for indices, number
        of connections for offsets); values named ``"n"``, ``"n+1"``, ... are relative to it.

    Returns
    -------
    ndarray
    """
    a = np.array(a, copy=True)
    name = op["op"]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        flat = a.reshape(-1)
        if name == "set" and flat.size:
            flat[_pos(op["pos"], flat.size)] = _cast(_value(op["value"], bound), a.dtype)
        elif name == "swap" and flat.size:
            i, j = _pos(op["i"], flat.size), _pos(op["j"], flat.size)
            flat[i], flat[j] = flat[j].copy(), flat[i].copy()
        elif name == "reverse":
            a = flat[::-1].copy()
        elif name == "shuffle":
            a = np.random.default_rng(op["seed"]).permutation(flat)
        elif name == "add" and a.dtype.kind in "iuf":
            v = _value(op["value"], bound)
            if a.dtype.kind == "f":
                a = (a + v).astype(a.dtype)
            else:
                a = (flat.astype(np.int64) + (int(v) if math.isfinite(v) else 0)).astype(a.dtype).reshape(a.shape)
        elif name == "truncate":
            a = flat[:max(0, flat.size - op["k"])].copy()
        elif name == "extend":
            a = np.concatenate([flat, np.full(op["k"], _cast(_value(op["value"], bound), a.dtype), a.dtype)])
        elif name == "astype":
            a = a.astype(op["dtype"])
        elif name == "reshape2d":
            a = flat.reshape(1, -1).copy()
        elif name == "empty":
            a = flat[:0].copy()
        elif name == "scalar":
            a = np.array(flat[0] if flat.size else np.zeros((), a.dtype))
        elif name == "fill":
            a = np.full_like(a, _cast(_value(op["value"], bound), a.dtype))
        elif name == "noncontig":
            a = np.repeat(flat, 2)[::2]
    return a


# --------------------------------------------------------------------------------------------------
# references, computed from arrays the library accepted
# --------------------------------------------------------------------------------------------------
def csr_ok(indptr, indices, n_rows, n_cols, *, exact_end=False, data=None):
    """Whether a CSR structure can be read safely (offsets monotone within the arrays, indices in range)."""
    indptr, indices = np.asarray(indptr), np.asarray(indices)
    if indptr.ndim != 1 or indices.ndim != 1 or indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        return False
    if indptr.shape[0] != n_rows + 1 or indptr.shape[0] == 0:
        return False
    p = indptr.astype(np.int64)
    if p[0] != 0 or np.any(np.diff(p) < 0):
        return False
    nnz = int(p[-1])
    if nnz > indices.shape[0] or (exact_end and nnz != indices.shape[0]):
        return False
    if data is not None and (np.asarray(data).ndim != 1 or nnz > np.asarray(data).shape[0]):
        return False
    idx = indices[:nnz].astype(np.int64)
    return not (nnz and (idx.min() < 0 or idx.max() >= n_cols))


def csr_rows(indptr):
    """Row of every entry ``k < indptr[-1]``."""
    p = np.asarray(indptr).astype(np.int64)
    return np.repeat(np.arange(p.shape[0] - 1), np.diff(p))


def csr_dense(indptr, indices, data, n_rows, n_cols):
    """The dense float64 matrix of a CSR structure that :func:`csr_ok` accepted (repeats are summed)."""
    nnz = int(np.asarray(indptr)[-1])
    M = np.zeros((n_rows, n_cols))
    np.add.at(M, (csr_rows(indptr), np.asarray(indices)[:nnz].astype(np.int64)),
              np.asarray(data)[:nnz].astype(np.float64))
    return M


def _finite(*arrays):
    return all(np.all(np.isfinite(np.asarray(a, dtype=np.float64))) for a in arrays)


def check_close(out, ref, dtype, stage, what, scale=1.0):
    """``out`` has ``ref``'s shape and, when everything is finite, its values (tolerance by dtype)."""
    out = np.asarray(out)
    _expect(out.shape == ref.shape, stage, f"{what}: shape {out.shape}, expected {ref.shape}")
    if not _finite(ref) or not _finite(out):
        return
    rtol = 1e-4 if np.dtype(dtype) == np.float32 else 1e-9
    err = float(np.max(np.abs(out - ref), initial=0.0))
    _expect(err <= rtol * (1.0 + scale), stage, f"{what}: max error {err:.3g} against the reference")


def _dense_operand(shape, dtype, seed, ops):
    """A random dense array of ``shape`` and ``dtype``, then the corruptions ``ops`` (dicts with ``"op"``)."""
    A = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    for op in ops or ():
        name = op["op"]
        if not isinstance(A, np.ndarray):
            continue
        if name in ("rows", "cols") and A.ndim:
            shape = list(A.shape)
            axis = 0 if name == "rows" else A.ndim - 1
            shape[axis] = max(0, shape[axis] + op["delta"])
            A = np.random.default_rng(seed + 1).standard_normal(shape).astype(A.dtype)
        elif name == "dtype":
            A = A.astype(op["dtype"])
        elif name == "ndim1":
            A = A.reshape(-1)
        elif name == "ndim3":
            A = A[None]
        elif name == "fortran":
            A = np.asfortranarray(A)
        elif name == "strided":
            A = np.repeat(A, 2, axis=-1)[..., ::2]
        elif name == "list":
            A = A.tolist()
        elif name in ("nan", "inf"):
            if A.size and A.dtype.kind == "f":
                A = np.array(A)
                A.reshape(-1)[op.get("pos", 0) % A.size] = np.nan if name == "nan" else np.inf
        elif name == "readonly":
            A = np.array(A)
            A.flags.writeable = False
    return A


# --------------------------------------------------------------------------------------------------
# entry point 1: model files
# --------------------------------------------------------------------------------------------------
_BASES = {}


def _model_base(base, workdir):
    """Arrays of the file ``SparseMLP([20, 16, 3], epsilon=3, seed=0).save`` writes after a short fit.

    ``base``: ``"complete"`` (one epoch), ``"interrupted"`` (stopped after two batches: the file has a
    sample order and a train state) or ``"pruned"`` (a quarter of the inputs switched off: an input mask).
    """
    if base not in _BASES:
        from set_cy import Callback, SparseMLP

        rng = np.random.default_rng(0)
        X = rng.standard_normal((40, 20)).astype(np.float32)
        y = np.arange(40) % 3
        m = SparseMLP([20, 16, 3], epsilon=3, seed=0)
        if base == "interrupted":
            class Stop(Callback):
                def on_batch_end(self, model, batch, logs):
                    model.stop_training = batch == 1

            m.fit(X, y, epochs=2, batch_size=8, verbose=0, callbacks=[Stop()])
        else:
            m.fit(X, y, epochs=1, batch_size=8, verbose=0)
            if base == "pruned":
                m.prune_inputs(0.25)
        path = workdir / f"base_{base}.npz"
        m.save(path)
        with np.load(path) as f:
            _BASES[base] = {k: f[k] for k in f.files}
    return dict(_BASES[base])


def _model_bound(key, arrays):
    sizes = [20, 16, 3]
    for i in range(2):
        if key == f"layer{i}_indices":
            return sizes[i]
        if key == f"layer{i}_indptr":
            return int(np.asarray(arrays.get(f"layer{i}_indices", np.zeros(0))).size)
    return int(np.asarray(arrays.get(key, np.zeros(0))).size)


def _json_field(arrays, key):
    try:
        out = json.loads(str(arrays[key]))
    except (KeyError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def _corrupt_model_arrays(arrays, mutations):
    for mut in mutations:
        m = mut["m"]
        if m == "array":
            key = mut["key"]
            a = arrays.get(key, np.arange(8, dtype=np.int32))
            arrays[key] = mutate(a, mut["op"], _model_bound(key, arrays))
        elif m == "delete":
            arrays.pop(mut["key"], None)
        elif m == "extra":
            arrays[mut["key"]] = mutate(np.arange(mut.get("size", 4)), {"op": "astype", "dtype": mut["dtype"]}, 1)
        elif m == "config":
            cfg = _json_field(arrays, "config")
            if mut.get("delete"):
                cfg.pop(mut["field"], None)
            else:
                cfg[mut["field"]] = mut["value"]
            arrays["config"] = np.array(json.dumps(cfg))
        elif m == "extra_state":
            st = _json_field(arrays, "extra_state")
            ts = st.get("train_state") if isinstance(st.get("train_state"), dict) else None
            target = ts if (mut.get("train_state") and ts is not None) else st
            target[mut["field"]] = mut["value"]
            arrays["extra_state"] = np.array(json.dumps(st))
        elif m == "text":
            arrays[mut["key"]] = np.array(mut["text"])
        elif m == "foreign":
            rng = np.random.default_rng(mut["seed"])
            names = list(arrays) + ["X", "y", "weights", "arr_0"]
            arrays = {}
            for _ in range(mut.get("n", 5)):
                name = names[rng.integers(len(names))]
                dtype = ["int32", "int64", "float32", "float64", "uint8", "bool"][rng.integers(6)]
                arrays[name] = (rng.standard_normal(rng.integers(0, 30)) * 30).astype(dtype)
    return arrays


def npy_bytes(a):
    """The ``.npy`` bytes of ``a``."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


def npy_header(shape, dtype):
    """An npy 1.0 header declaring ``shape`` and ``dtype``, whatever follows it."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def write_zip(path, members):
    """Write a zip64 archive; ``members`` maps a name to ``bytes`` (stored as they are) or to
    ``(payload, stated_size)``: ``payload`` deflated, the directory stating ``stated_size`` bytes."""
    out, central = io.BytesIO(), []
    for name, spec in members.items():
        payload, stated = (spec, None) if isinstance(spec, bytes) else spec
        method = 0 if stated is None else 8
        raw = payload if method == 0 else zlib.compress(payload, 9)[2:-4]  # a raw deflate stream
        usize = len(payload) if stated is None else stated
        crc = zlib.crc32(payload)
        nb, off = (name + ".npy").encode(), out.tell()
        extra = struct.pack("<HHQQ", 1, 16, usize, len(raw))
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 45, 0, method, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                              len(nb), len(extra)) + nb + extra + raw)
        central.append((nb, method, crc, usize, len(raw), off))
    start = out.tell()
    for nb, method, crc, usize, csize, off in central:
        extra = struct.pack("<HHQQQ", 1, 24, usize, csize, off)
        out.write(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45, 45, 0, method, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                              len(nb), len(extra), 0, 0, 0, 0, 0xFFFFFFFF) + nb + extra)
    end, n = out.tell(), len(central)
    out.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, end - start, start))
    out.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1))
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
    path.write_bytes(out.getvalue())
    return path


def _damage_zip(path, arrays, how):
    """Rewrite the archive with one member lying about its size (``how["how"]``): ``"inflate"`` (its
    stream inflates ``extra`` bytes past what its directory entry and npy header state) or ``"declare"``
    (its npy header and directory entry declare ``factor`` times its length, the stream holds the
    original array)."""
    key = how["key"] if how["key"] in arrays else sorted(arrays)[0]
    members = {k: npy_bytes(v) for k, v in arrays.items()}
    body = members[key]
    if how["how"] == "inflate":
        members[key] = (body + bytes(how["extra"]), len(body))
    else:
        a = np.asarray(arrays[key])
        header = npy_header((max(a.size, 1) * how["factor"],), a.dtype)
        members[key] = (header + a.tobytes(), len(header) + max(a.size, 1) * how["factor"] * a.dtype.itemsize)
    write_zip(path, members)


def _special_path(path, how):
    """The path to load instead of the file: a link to /dev/zero, a directory, one in a missing directory."""
    if how["how"] == "dev_zero":
        path.unlink()
        os.symlink("/dev/zero", path)
        return path
    if how["how"] == "directory":
        path.unlink()
        path.mkdir()
        return path
    return path.parent / "missing-directory" / path.name


def _damage_file(path, how):
    data = path.read_bytes()
    if how["how"] == "truncate":
        path.write_bytes(data[: int(len(data) * how["frac"])])
    elif how["how"] == "flip":
        rng = np.random.default_rng(how["seed"])
        buf = bytearray(data)
        for _ in range(how["n"]):
            buf[rng.integers(len(buf))] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(buf))
    elif how["how"] == "garbage":
        path.write_bytes(np.random.default_rng(how["seed"]).bytes(how["n"]))
    elif how["how"] == "empty":
        path.write_bytes(b"")


def run_model(case, workdir):
    """Save a corrupted model file, load it, predict, fit one epoch; check shapes of what comes back."""
    import set_cy

    arrays = _corrupt_model_arrays(_model_base(case.get("base", "complete"), workdir), case.get("mutations", []))
    path = workdir / "case.npz"
    if path.is_dir():  # the directory a "directory" case left
        shutil.rmtree(path)
    elif path.is_symlink():
        path.unlink()
    (np.savez_compressed if case.get("compressed") else np.savez)(path, **arrays)
    damage = case.get("file") or {}
    if damage.get("how") in ("inflate", "declare"):
        _damage_zip(path, arrays, damage)
    elif damage.get("how") in ("dev_zero", "directory", "missing_dir"):
        path = _special_path(path, damage)
    elif damage:
        _damage_file(path, damage)
    cls = set_cy.SparseNetwork if case.get("loader") == "SparseNetwork" else set_cy.SparseMLP
    model = _call("load", cls.load, path)
    sizes = list(model.layer_sizes)
    _expect(len(sizes) >= 2 and len(model.layers) == len(sizes) - 1, "load", f"layer_sizes {sizes}")
    n_in, n_out = sizes[0], sizes[-1]
    if n_in * 40 > 10 ** 7:  # the file passed with an enormous input layer: nothing more to try cheaply
        return
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, n_in)).astype(np.float32)
    y = np.arange(40) % n_out
    p = _call("predict", model.predict, X[:5])
    p = np.asarray(p)
    _expect(p.shape == (5,) and np.all((p >= 0) & (p < n_out)), "predict", f"labels {p!r} for {n_out} classes")
    if isinstance(model, set_cy.SparseMLP):
        resume = bool(case.get("resume")) and getattr(model, "train_state_", None) is not None
        _call("fit", model.fit, X, y, epochs=2 if resume else 1, batch_size=8, verbose=0, resume=resume)
    else:
        _call("fit", model.train_batch, X, y, np.arange(8), learning_rate=0.01)
    p = np.asarray(_call("predict after fit", model.predict, X[:5]))
    _expect(p.shape == (5,) and np.all((p >= 0) & (p < n_out)), "predict after fit", f"labels {p!r}")


# --------------------------------------------------------------------------------------------------
# entry points 2 and 3: scipy CSR matrices
# --------------------------------------------------------------------------------------------------
def make_csr(case):
    """A canonical random CSR matrix (``shape``, ``density``, ``dtype``, ``index_dtype``, ``seed``, ``format``).

    Built from its three arrays, so that scipy has not yet cached whether it is canonical; with
    ``cache_canonical`` the flag is computed (and cached) before the corruptions, as any earlier use
    of the matrix would.
    """
    import scipy.sparse as sp

    r, c = case["shape"]
    rng = np.random.default_rng(case["seed"])
    rows, cols = np.nonzero(rng.random((r, c)) < case["density"])
    idx = np.dtype(case["index_dtype"])
    indptr = np.zeros(r + 1, idx)
    np.cumsum(np.bincount(rows, minlength=r), out=indptr[1:])
    data = rng.standard_normal(rows.size).astype(case["dtype"])
    cls = sp.csr_matrix if case.get("format") == "matrix" else sp.csr_array
    W = cls((data, cols.astype(idx), indptr), shape=(r, c))
    W.indices, W.indptr = W.indices.astype(idx), W.indptr.astype(idx)
    if case.get("cache_canonical"):
        assert W.has_canonical_format
    return W


_INPLACE = ("set", "swap", "add", "fill", "reverse", "shuffle")


def corrupt_csr(W, mutations):
    """Apply ``{"arr": "indptr"|"indices"|"data", "op": {...}, "inplace": bool}`` corruptions to ``W``."""
    for mut in mutations:
        arr = mut["arr"]
        a = getattr(W, arr)
        bound = W.shape[1] if arr == "indices" else (np.size(W.indices) if arr == "indptr" else 1)
        new = mutate(a, mut["op"], bound)
        if mut.get("inplace") and mut["op"]["op"] in _INPLACE and new.shape == a.shape and new.dtype == a.dtype:
            a[...] = new  # the matrix keeps its array object (and scipy its cached flags)
        else:
            setattr(W, arr, new)


def _accepted_csr(W, stage):
    """The structure of a matrix the library accepted, checked here (Inconsistent if it is not valid)."""
    r, c = W.shape
    ok = csr_ok(W.indptr, W.indices, r, c, data=W.data)
    _expect(ok and np.asarray(W.data).dtype.kind == "f", stage, "accepted a CSR matrix whose structure is invalid")
    return csr_dense(W.indptr, W.indices, W.data, r, c)


def _threads(spec):
    return None if spec == "none" else spec


def run_ops(case):
    """Call one ``set_cy.ops`` function on a corrupted matrix and dense operands; compare with NumPy."""
    from set_cy import ops

    fn = case["fn"]
    dtype = np.dtype(case["dtype"])
    nt = _threads(case.get("n_threads", "none"))
    dense = case.get("dense", {})
    B = case.get("batch", 3)
    if fn == "momentum_update":
        n = case["n"]
        w = _dense_operand((n,), dtype, 1, dense.get("weights"))
        v = _dense_operand((n,), dtype, 2, dense.get("velocity"))
        g = _dense_operand((n,), dtype, 3, dense.get("grad"))
        if case.get("alias") == "velocity":
            v = w
        elif case.get("alias") == "grad":
            g = w
        hp = case["hp"]
        w0, v0, g0 = (np.array(a, dtype=np.float64, copy=True) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
                      else None for a in (w, v, g))
        _call("momentum_update", ops.momentum_update, w, v, g, lr=hp["lr"], momentum=hp["momentum"],
              weight_decay=hp["weight_decay"], nesterov=hp.get("nesterov", False), n_threads=nt)
        _expect(w0 is not None and v0 is not None and g0 is not None, "momentum_update", "accepted a non-float array")
        lr, mu, wd = float(hp["lr"]), float(hp["momentum"]), float(hp["weight_decay"])
        step = lr * (g0 + wd * w0)
        v_ref = mu * v0 - step
        w_ref = w0 + (mu * v_ref - step if hp.get("nesterov") else v_ref)
        scale = float(np.max(np.abs(w0), initial=0) + np.max(np.abs(v0), initial=0) + np.max(np.abs(step), initial=0))
        check_close(v, v_ref, w.dtype, "momentum_update", "velocity", scale)
        check_close(w, w_ref, w.dtype, "momentum_update", "weights", scale)
        return
    W = make_csr(case)
    r, c = W.shape
    corrupt_csr(W, case.get("mutations", []))
    X = _dense_operand((B, r), dtype, 11, dense.get("X"))
    D = _dense_operand((B, c), dtype, 12, dense.get("D"))
    arg = W
    if case.get("operator"):
        if not hasattr(ops, "SparseOperator"):
            raise NotApplicable("this set_cy has no ops.SparseOperator")
        arg = _call("SparseOperator", ops.SparseOperator, W)
        _attack_operator(arg, case.get("op_attack", []))
    kwargs = {"n_threads": nt}
    if "order" in case:
        kwargs["order"] = case["order"]
    inputs = {"sparse_matmul": (X,), "sparse_matmul_t": (D,), "sddmm": (X, D)}[fn]
    if "out" in case:
        kwargs["out"] = _out_array(case["out"], fn, B, r, c, dtype, inputs, arg)
    Xd, Dd = _snapshot(X), _snapshot(D)  # before the call: out= may be one of them
    res = _call(fn, getattr(ops, fn), *inputs, arg, **kwargs)
    _expect(Xd is not None and Dd is not None, fn, "accepted a dense operand that is not a real array")
    ok_x = Xd.ndim == 2 and Xd.shape[1] == r
    ok_d = Dd.ndim == 2 and Dd.shape[1] == c
    _expect({"sparse_matmul": ok_x, "sparse_matmul_t": ok_d, "sddmm": ok_x and ok_d and Xd.shape[0] == Dd.shape[0]}[fn],
            fn, f"accepted operands of shapes {Xd.shape}, {Dd.shape} for a {r} x {c} matrix")
    # what the library accepted: the matrix's pattern, and the values it used (the operator's, maybe replaced)
    _expect(csr_ok(W.indptr, W.indices, r, c), fn, "accepted a CSR matrix whose structure is invalid")
    nnz = int(W.indptr[-1])
    rows, cols = csr_rows(W.indptr), np.asarray(W.indices)[:nnz].astype(np.int64)
    if case.get("operator"):
        values = np.asarray(arg.values)
        _expect(values.shape == (nnz,), fn, f"used an operator whose values have shape {values.shape}, nnz {nnz}")
        values = values[np.asarray(arg.csr_order)]  # CSR order of W
    else:
        values = np.asarray(W.data)[:nnz]
        _expect(fn == "sddmm" or (np.asarray(W.data).ndim == 1 and values.dtype.kind == "f"), fn,
                "accepted a CSR matrix whose values are not a 1-D float array")
    if "out" in case and kwargs["out"] is not None:
        _expect(res is kwargs["out"], fn, "did not return the out= array")
    if fn == "sddmm":
        ref = np.einsum("bk,bk->k", Xd[:, rows], Dd[:, cols])
        if case.get("operator"):
            op_order = np.empty_like(ref)
            op_order[np.asarray(arg.csr_order)] = ref
            ref = op_order
        scale = float(np.max(np.abs(Xd[:, rows]) * np.abs(Dd[:, cols]), initial=0) * max(Xd.shape[0], 1))
        check_close(res, ref, dtype, fn, "sddmm", scale)
        return
    M = np.zeros((r, c))
    np.add.at(M, (rows, cols), values.astype(np.float64))
    if fn == "sparse_matmul":
        check_close(res, Xd @ M, dtype, fn, "X @ W", float(np.max(np.abs(Xd) @ np.abs(M), initial=0)))
    else:
        check_close(res, Dd @ M.T, dtype, fn, "D @ W.T", float(np.max(np.abs(Dd) @ np.abs(M.T), initial=0)))
    _expect(np.asarray(res).dtype == dtype, fn, f"result dtype {np.asarray(res).dtype}, expected {dtype}")


def _snapshot(a):
    """A float64 copy of a dense operand, or None when it is not an array of real numbers."""
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
        return None
    return np.array(a, dtype=np.float64, copy=True)


def _attack_operator(op, attacks):
    """Change a ``SparseOperator``'s attributes after construction: ``shape``, ``values``, ``n_threads``."""
    for att in attacks:
        if att["attr"] == "shape":  # a read-only property now: the attack itself is refused (Raised)
            _call("set shape", setattr, op, "shape", (op.shape[0] + att["delta"][0], op.shape[1] + att["delta"][1]))
        elif att["attr"] == "values":
            op.values = mutate(op.values, att["op"], op.values.shape[0])
        elif att["attr"] == "values_inplace":
            new = mutate(op.values, att["op"], op.values.shape[0])
            if new.shape == op.values.shape:
                op.values[...] = new.astype(op.values.dtype)
        elif att["attr"] == "n_threads":
            op.n_threads = att["value"]


def _out_array(spec, fn, B, r, c, dtype, inputs, arg):
    """The ``out=`` argument a case asks for: right or wrong shape, dtype, layout, or an input itself."""
    kind = spec["kind"]
    if kind == "none":
        return None
    if fn == "sddmm":
        n = int(np.size(getattr(arg, "values", getattr(arg, "indices", np.zeros(0)))))
        shape, fortran_ok = (n,), False
    else:
        shape, fortran_ok = (B, c if fn == "sparse_matmul" else r), True
    if kind == "alias":  # the input itself (the first operand), or the operator's values for sddmm
        return arg.values if fn == "sddmm" and hasattr(arg, "values") else inputs[0]
    out = np.zeros(shape, dtype)
    if kind == "fortran" and fortran_ok:
        out = np.asfortranarray(out)
    elif kind == "shape":
        out = np.zeros(tuple(max(0, d + spec.get("delta", 1)) for d in shape), dtype)
    elif kind == "dtype":
        out = out.astype(spec.get("dtype", "float16"))
    elif kind == "readonly":
        out.flags.writeable = False
    elif kind == "noncontig":
        out = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)[..., ::2]
    elif kind == "ndim":
        out = out.reshape(-1) if out.ndim == 2 else out[None]
    elif kind == "list":
        out = out.tolist()
    return out


def _bias_of(spec, n_out, dtype):
    kind = spec.get("kind", "none")
    if kind == "none":
        return None
    if kind == "false":
        return False
    b = np.random.default_rng(5).standard_normal(n_out)
    if kind == "short":
        b = b[:-1]
    elif kind == "long":
        b = np.concatenate([b, [1.0]])
    elif kind == "int":
        b = (b * 10).astype(np.int64)
    elif kind == "complex":
        b = b + 1j
    elif kind == "str":
        b = b.astype(str)
    elif kind == "nan":
        b = b.copy()
        if b.size:
            b[0] = np.nan
    elif kind == "2d":
        b = b[None]
    elif kind == "list":
        b = b.tolist()
    return b


def run_linear(case):
    """``SparseLinear.from_scipy`` of a corrupted matrix, then forward, backward, step and evolve."""
    from set_cy import SparseLinear

    dtype = np.dtype(case["dtype"])
    W = make_csr(case)
    r, c = W.shape
    corrupt_csr(W, case.get("mutations", []))
    bias = _bias_of(case.get("bias", {}), c, dtype)
    B = case.get("batch", 3)
    lin = _call("from_scipy", SparseLinear.from_scipy, W, bias)
    M = _accepted_csr(W, "from_scipy")
    if bias is None or bias is False:
        b = np.zeros(c)
    else:
        b = np.asarray(bias).astype(np.float64)
        _expect(b.shape == (c,), "from_scipy", f"accepted a bias of shape {b.shape}")
    _expect(lin.n_in == r and lin.n_out == c and lin.nnz == int(W.indptr[-1]), "from_scipy",
            f"layer {lin.n_in} x {lin.n_out} with {lin.nnz} connections from a {r} x {c} matrix with "
            f"{int(W.indptr[-1])} entries")
    X = _dense_operand((B, r), dtype, 21, case.get("dense", {}).get("X"))
    dY = _dense_operand((B, c), dtype, 22, case.get("dense", {}).get("dY"))
    Y = _call("forward", lin.forward, X)
    Xd = np.asarray(X, dtype=np.float64)
    check_close(Y, Xd @ M + b, dtype, "forward", "X @ W + b", float(np.max(np.abs(Xd) @ np.abs(M), initial=0)))
    dX, g, gb = _call("backward", lin.backward, dY)
    dYd = np.asarray(dY, dtype=np.float64)
    check_close(dX, dYd @ M.T, dtype, "backward", "dY @ W.T", float(np.max(np.abs(dYd) @ np.abs(M.T), initial=0)))
    rows, cols = lin.coords()
    check_close(g, (Xd.T @ dYd)[rows, cols], dtype, "backward", "weight gradient",
                float(np.max(np.abs(Xd.T) @ np.abs(dYd), initial=0)))
    check_close(gb, dYd.sum(axis=0), dtype, "backward", "bias gradient", float(np.abs(dYd).sum()))
    _call("step", lin.step, g, gb, 0.01)
    nnz = lin.nnz
    _call("evolve", lin.evolve, case.get("zeta", 0.3))
    _expect(lin.nnz == nnz, "evolve", f"nnz {nnz} -> {lin.nnz}")
    M2 = lin.to_scipy().toarray().astype(np.float64)
    Y2 = _call("forward after evolve", lin.forward, X)
    check_close(Y2, Xd @ M2 + np.asarray(lin.bias, np.float64), dtype, "forward after evolve", "X @ W + b",
                float(np.max(np.abs(Xd) @ np.abs(M2), initial=0)))


# --------------------------------------------------------------------------------------------------
# entry point 4: the torch bridge
# --------------------------------------------------------------------------------------------------
_TORCH_BOUNDS = {"indices": "n_in", "t_indices": "n_out", "perm": "nnz", "indptr": "nnz", "t_indptr": "nnz"}


def _to_tensor(a, op):
    import torch

    if op.get("op") == "noncontig":
        return torch.from_numpy(np.repeat(np.ascontiguousarray(a), 2))[::2]
    return torch.from_numpy(np.ascontiguousarray(a))


def _corrupt_tensor(t, op, sizes):
    bound = sizes.get(_TORCH_BOUNDS.get(op.get("_field"), ""), 1)
    a = t.detach().cpu().numpy()
    return _to_tensor(mutate(a, op, bound), op)


def _torch_module(case, seed):
    import torch

    from set_cy.torch import SparseLinear

    dtype = torch.float64 if case["dtype"] == "float64" else torch.float32
    n_in, n_out = case["shape"]
    nnz = min(case["nnz"], n_in * n_out)
    return SparseLinear(n_in, n_out, nnz=nnz, seed=seed, bias=case.get("has_bias", True), dtype=dtype)


def _check_torch_result(stage, n_in, n_out, arrays, X, Y, dY, dX, gv, gb, dtype):
    """``Y``, ``dX`` and the gradients against NumPy, from the pattern arrays that were used."""
    indptr, indices, t_indptr, t_indices, perm, values, bias = arrays
    nnz = np.asarray(indices).shape[0]
    ok = (csr_ok(indptr, indices, n_out, n_in, exact_end=True, data=values)
          and csr_ok(t_indptr, t_indices, n_in, n_out, exact_end=True)
          and np.asarray(perm).ndim == 1 and np.asarray(perm).shape[0] == np.asarray(t_indices).shape[0]
          and np.asarray(perm).dtype.kind in "iu"
          and (np.asarray(perm).size == 0 or (np.asarray(perm).min() >= 0 and np.asarray(perm).max() < nnz)))
    _expect(ok, stage, "ran on a pattern whose structure is invalid (out-of-range or non-monotone arrays)")
    Mt = csr_dense(indptr, indices, values, n_out, n_in)  # W^T
    Xd, dYd = X.astype(np.float64), dY.astype(np.float64)
    b = np.zeros(n_out) if bias is None else bias.astype(np.float64)
    check_close(Y, Xd @ Mt.T + b, dtype, stage, "X @ W + b", float(np.max(np.abs(Xd) @ np.abs(Mt.T), initial=0)))
    if dX is not None:
        check_close(dX, dYd @ Mt, dtype, stage, "input gradient dY @ W.T (transposed index and perm)",
                    float(np.max(np.abs(dYd) @ np.abs(Mt), initial=0)))
    if gv is not None:
        rows, cols = csr_rows(indptr), np.asarray(indices).astype(np.int64)
        check_close(gv, np.einsum("bk,bk->k", dYd[:, rows], Xd[:, cols]), dtype, stage, "value gradient",
                    float(np.max(np.abs(Xd.T) @ np.abs(dYd), initial=0)))
    if gb is not None:
        check_close(gb, dYd.sum(axis=0), dtype, stage, "bias gradient", float(np.abs(dYd).sum()))


def _forward_backward(stage, fn, n_in, batch, dtype):
    """``Y = fn(X)`` for a random ``X`` (batch, n_in) that requires grad, then ``Y.backward(dY)``; returns X, Y, dY."""
    import torch

    g = torch.Generator().manual_seed(7)
    X = torch.randn(batch, n_in, generator=g, dtype=dtype, requires_grad=True)
    Y = _call(stage, fn, X)
    dY = torch.randn(tuple(Y.shape), generator=g, dtype=Y.dtype)
    _call(stage + " backward", Y.backward, dY)
    return X, Y, dY


def run_torch_state(case):
    """``load_state_dict`` of a corrupted state dict into ``set_cy.torch.SparseLinear``; forward, backward."""
    import torch

    src = _torch_module(case, case["seed"])
    n_in, n_out = case["shape"]
    sizes = {"n_in": n_in, "n_out": n_out, "nnz": src.nnz}
    sd = {k: v.detach().clone() for k, v in src.state_dict().items()}
    for mut in case.get("mutations", []):
        key = mut["key"]
        if mut.get("delete"):
            sd.pop(key, None)
        elif key in sd and "op" in mut:
            sd[key] = _corrupt_tensor(sd[key], dict(mut["op"], _field=key), sizes)
        else:
            sd[key] = torch.arange(4)
    dst = _torch_module(case, case["seed"] + 1)
    try:
        _call("load_state_dict", dst.load_state_dict, sd, strict=case.get("strict", True))
    except Raised:
        if not case.get("after_error"):
            raise
    dtype = dst.values.dtype
    X, Y, dY = _forward_backward("forward", dst, n_in, case.get("batch", 3), dtype)

    def arrays():
        return [t.detach().numpy() if t is not None else None
                for t in (dst.indptr, dst.indices, dst.t_indptr, dst.t_indices, dst.perm, dst.values, dst.bias)]

    _check_torch_result("forward", n_in, n_out, arrays(), X.detach().numpy(), Y.detach().numpy(), dY.numpy(),
                        None if X.grad is None else X.grad.numpy(),
                        None if dst.values.grad is None else dst.values.grad.numpy(),
                        None if dst.bias is None or dst.bias.grad is None else dst.bias.grad.numpy(),
                        np.float64 if dtype == torch.float64 else np.float32)
    if case.get("evolve"):
        _call("evolve", dst.evolve, 0.3)
        X, Y, dY = _forward_backward("forward after evolve", dst, n_in, case.get("batch", 3), dtype)


def run_torch_fn(case):
    """``sparse_linear`` (or ``SparseLinearFunction.apply``) with a corrupted ``SparsePattern``; backward."""
    import torch

    from set_cy.torch import SparseLinearFunction, SparsePattern, sparse_linear

    mod = _torch_module(case, case["seed"])
    n_in, n_out = case["shape"]
    sizes = {"n_in": n_in, "n_out": n_out, "nnz": mod.nnz}
    fields = {k: getattr(mod, k).detach().clone() for k in ("indptr", "indices", "t_indptr", "t_indices", "perm")}
    values = mod.values.detach().clone()
    bias = None if mod.bias is None else mod.bias.detach().clone()
    dims = {"n_in": n_in, "n_out": n_out}
    for mut in case.get("mutations", []):
        key = mut["key"]
        if key in fields:
            fields[key] = _corrupt_tensor(fields[key], dict(mut["op"], _field=key), sizes)
        elif key in dims:
            dims[key] = _value(mut["value"], dims[key])
        elif key == "values":
            values = _corrupt_tensor(values, mut["op"], sizes)
        elif key == "bias" and bias is not None:
            bias = _corrupt_tensor(bias, mut["op"], sizes)
    values.requires_grad_(values.is_floating_point())
    if bias is not None:
        bias.requires_grad_(bias.is_floating_point())
    pattern = SparsePattern(dims["n_in"], dims["n_out"], fields["indptr"], fields["indices"], fields["t_indptr"],
                            fields["t_indices"], fields["perm"])
    dtype = values.dtype if values.is_floating_point() else torch.float32
    if case.get("via") == "function":
        def fn(X):
            return SparseLinearFunction.apply(X, values, bias, pattern, 2)
    else:
        def fn(X):
            return sparse_linear(X, values, bias, pattern)
    batch = case.get("batch", 3)
    x_cols = dims["n_in"] if isinstance(dims["n_in"], int) and 0 <= dims["n_in"] <= 10 ** 6 else n_in
    X, Y, dY = _forward_backward("sparse_linear", fn, x_cols, batch, dtype)
    arrays = [fields[k].numpy() for k in ("indptr", "indices", "t_indptr", "t_indices", "perm")]
    arrays += [values.detach().numpy(), None if bias is None else bias.detach().numpy()]
    _expect(dims["n_in"] == n_in and dims["n_out"] == n_out, "sparse_linear",
            f"ran with n_in, n_out = {dims['n_in']!r}, {dims['n_out']!r} for a pattern of a {n_in} x {n_out} layer")
    _check_torch_result("sparse_linear", n_in, n_out, arrays, X.detach().numpy(), Y.detach().numpy(), dY.numpy(),
                        None if X.grad is None else X.grad.numpy(),
                        None if values.grad is None else values.grad.numpy(),
                        None if bias is None or bias.grad is None else bias.grad.numpy(),
                        np.float64 if dtype == torch.float64 else np.float32)


# --------------------------------------------------------------------------------------------------
RUNNERS = {"model": run_model, "ops": lambda case, workdir: run_ops(case),
           "linear": lambda case, workdir: run_linear(case), "torch_state": lambda case, workdir: run_torch_state(case),
           "torch_fn": lambda case, workdir: run_torch_fn(case)}


def run_case(case, workdir):
    """Run one case; return its ``RESULT`` line (without the prefix and index)."""
    try:
        RUNNERS[case["kind"]](case, workdir)
    except Raised as r:
        msg = " ".join(str(r.exc).split())[:300]
        return f"raised {r.stage} {type(r.exc).__name__}: {msg}"
    except Inconsistent as e:
        return f"inconsistent {e.stage}: {e.what}"
    except NotApplicable as e:
        return f"n/a: {e}"
    except Exception as exc:  # a bug of this runner, reported as such
        msg = " ".join(str(exc).split())[:300]
        return f"harness-error {type(exc).__name__}: {msg}"
    return "ok"


def main(argv=None):
    """Run the cases of ``argv[0]`` (a JSON file, or ``-`` for stdin) and print one result line per case.

    Parameters
    ----------
    argv : list of str, optional
        ``[CASES.json, WORKDIR]``; default ``sys.argv[1:]``. ``WORKDIR`` (default: a new temporary
        folder, removed at the end) receives the model files.

    Returns
    -------
    int
        0 when every case raised or was consistent, 2 otherwise.
    """
    argv = sys.argv[1:] if argv is None else argv
    src = argv[0] if argv else "-"
    cases = json.loads(sys.stdin.read() if src == "-" else Path(src).read_text())
    if isinstance(cases, dict):
        cases = [cases]
    faulthandler.enable()
    warnings.simplefilter("ignore")
    own = len(argv) < 2
    workdir = Path(tempfile.mkdtemp(prefix="set_cy_fuzz_") if own else argv[1])
    workdir.mkdir(parents=True, exist_ok=True)
    # Load what the cases need, then freeze the heap the garbage collector knows: the full collection
    # after every case then only walks the case's own objects (about a microsecond instead of ~80 ms
    # with torch loaded), and a heap the case corrupted tends to crash inside that case.
    import set_cy  # noqa: F401

    if any(str(c.get("kind", "")).startswith("torch") for c in cases):
        import set_cy.torch  # noqa: F401
    gc.collect()
    gc.freeze()
    bad = 0
    try:
        for i, case in enumerate(cases):
            print(f"CASE {i} {json.dumps(case)}", flush=True)
            result = run_case(case, workdir)
            gc.collect()
            bad += result.startswith(("inconsistent", "harness-error"))
            print(f"RESULT {i} {result}", flush=True)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    print("DONE", flush=True)
    return 2 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
