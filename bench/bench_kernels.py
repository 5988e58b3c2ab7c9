"""Benchmark of the set_cy sparse kernels against scipy.sparse, NumPy and (if installed) torch.sparse.

Measures, in one run, the kernels of a sparse layer ``Y = X @ W`` (``W`` of shape ``n_in x n_out``
with ``eps * (n_in + n_out)`` random connections) in the feature-major layout the layers use:
forward (SpMM with the CSR of ``W^T``), backward (SpMM with the CSR of ``W``, values read through the
transposition permutation), SDDMM (weight gradient), the fused SDDMM + momentum update and the
unfused momentum update. Prints a table, checks the issue's performance targets and saves JSON.

Examples
--------
    python bench/bench_kernels.py --quick
    python bench/bench_kernels.py --schedules --all-threads
    python bench/bench_kernels.py --public-api      # the importable face: ops, SparseLinear, set_cy.torch
"""
import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_info, stream_bandwidth, time_call  # noqa: E402

from set_cy import _kernels, hugepages, ops  # noqa: E402

# name -> (n_in, n_out, eps)
SHAPES = {"a": (1000, 1000, 20), "b": (54675, 27000, 10), "c": (100000, 100000, 10),
          "b_small": (5467, 2700, 10),
          # the output layers of the 1 M- and 10 M-neuron networks: 18 rows over every input (dense)
          "out": (315000, 18, 20), "out10": (3300000, 18, 20),
          # a hidden layer of the 10 M-neuron network (132 M connections; several GB with its operands)
          "h10": (3300000, 3300000, 20)}
LR, MU, WD = 1e-4, 0.9, 1e-4
GATHER_FULL_MAX = 1_000_000   # above this many connections the NumPy gather is timed on a subset
GATHER_SUBSET = 250_000
GATHER_CHUNK_BYTES = 1 << 25  # bound on each gathered temporary
SCHEDULES = [("static", 0), ("dynamic", 1), ("dynamic", 16), ("dynamic", 64), ("guided", 0)]
PRODUCT_KERNELS = ("forward", "backward", "sddmm")


def parse_args(argv=None):
    """Command-line options; see ``--help``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: shapes a,b_small (b scaled down 10x), short timings")
    p.add_argument("--shapes", default=None,
                   help=f"comma list out of {','.join(SHAPES)} (default a,b,c; a,b_small with --quick)")
    p.add_argument("--batches", default="32,128", help="comma list of batch sizes")
    p.add_argument("--dtypes", default="float32,float64", help="comma list of float32, float64")
    p.add_argument("--threads", default="1,2", help="comma list of thread counts")
    p.add_argument("--all-threads", action="store_true", help="every thread count 1..os.cpu_count()")
    p.add_argument("--schedules", action="store_true",
                   help="also compare OpenMP row schedules at max threads")
    p.add_argument("--target-s", type=float, default=None,
                   help="seconds of timed repeats per measurement (default 0.2; 0.03 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3,
                   help="--public-api: interleaved timing rounds of every path; each keeps its best median")
    p.add_argument("--public-api", action="store_true",
                   help="instead of the kernel table: the public API (ops with a scipy W and with a prepared "
                        "SparseOperator, SparseLinear, the torch module under autograd) next to the internal "
                        "kernels, scipy and torch.sparse; float32, shapes a and c unless --shapes")
    p.add_argument("--plain-arrays", action="store_true",
                   help="operands as NumPy makes them (rng.standard_normal(...).astype: memory reused from freed "
                        "arrays, often on 4 KiB pages) instead of set_cy.hugepages.empty, which the model uses")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "results", "kernels.json"))
    a = p.parse_args(argv)
    a.shapes = (a.shapes or ("a,b_small" if a.quick else "a,c" if a.public_api else "a,b,c")).split(",")
    unknown = [s for s in a.shapes if s not in SHAPES]
    if unknown:
        p.error(f"unknown shapes {unknown}; choose from {list(SHAPES)}")
    a.batches = [int(b) for b in a.batches.split(",")]
    a.dtypes = [np.dtype(d) for d in a.dtypes.split(",")]
    a.threads = (list(range(1, os.cpu_count() + 1)) if a.all_threads
                 else [int(t) for t in a.threads.split(",")])
    a.target_s = a.target_s if a.target_s is not None else (0.03 if a.quick else 0.2)
    a.min_repeats = 2 if a.quick else 3
    return a


def operand(rng, shape, dtype, args):
    """Standard normal values of ``shape``: on ``set_cy.hugepages.empty`` memory (like the model's buffers), or
    as NumPy makes them with ``--plain-arrays`` (reused memory, often on 4 KiB pages, where the gathers of
    the kernels miss the TLB). scipy and torch get the same arrays either way."""
    a = rng.standard_normal(shape).astype(dtype)
    if args.plain_arrays:
        return a
    out = hugepages.empty(a.shape, dtype)
    out[...] = a
    return out


def run_info(args):
    """The machine's description, and which memory the operands were put in (see :func:`operand`)."""
    return dict(machine_info(), operands="plain NumPy" if args.plain_arrays else "set_cy.hugepages.empty")


def random_pattern(n_in, n_out, nnz, rng):
    """Erdős–Rényi pattern of the layer: CSR of ``W^T`` (rows = outputs) and of ``W`` with ``perm``.

    Draws int64 flat keys, keeps distinct ones (drawing more if too few), then a random subset of
    exactly ``nnz`` of them (not the smallest, which would favour the first rows).
    """
    total = n_in * n_out
    nnz = min(nnz, total)  # eps * (n_in + n_out) caps at dense, as in the layers (an output layer's)
    keys = np.empty(0, dtype=np.int64) if 2 * nnz < total else rng.choice(total, nnz, replace=False)
    while keys.size < nnz:
        extra = int(1.1 * (nnz - keys.size)) + 16
        keys = np.unique(np.concatenate([keys, rng.integers(0, total, extra, dtype=np.int64)]))
    keys = np.sort(rng.choice(keys, nnz, replace=False))
    rows, cols = np.divmod(keys, n_in)  # flat key = output * n_in + input
    t_indptr = np.zeros(n_out + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n_out), out=t_indptr[1:])
    t_indices = cols.astype(np.int32)
    w_indptr, w_indices, perm = ops.transpose_pattern(t_indptr, t_indices, n_in)
    return {"n_in": n_in, "n_out": n_out, "nnz": nnz, "t_indptr": t_indptr, "t_indices": t_indices,
            "w_indptr": w_indptr, "w_indices": w_indices, "perm": perm,
            "out_of_k": rows.astype(np.int32)}


def setcy_funcs(pat, data, X, D, nt, gathered=None, kernels=_kernels):
    """Closures running each set_cy kernel as a layer does, with preallocated outputs. ``gathered``: the
    ``(X, D)`` whose rows the products gather instead (bfloat16 copies, as with
    ``activation_dtype="bfloat16"``); the scatter, which gathers no rows, is left out then. ``kernels``:
    the extension module to call (another build of it in ``compare_builds.py``)."""
    n_in, n_out = pat["n_in"], pat["n_out"]
    B = X.shape[1]
    Xg, Dg = gathered or (X, D)
    y = np.empty((n_out, B), dtype=data.dtype)
    dx = np.empty((n_in, B), dtype=data.dtype)
    dx_s = hugepages.empty((n_in, B), dtype=data.dtype)  # scattered into at random: huge pages, as the model's
    g = np.empty(pat["nnz"], dtype=data.dtype)
    w, v = data.copy(), np.zeros_like(data)
    ti, tj, wi, wj, perm = pat["t_indptr"], pat["t_indices"], pat["w_indptr"], pat["w_indices"], pat["perm"]
    K = kernels
    fns = {
        "forward": lambda: K.spmm(ti, tj, data, None, Xg, y, None, nt),
        "backward": lambda: K.spmm(wi, wj, data, perm, Dg, dx, None, nt),
        "bwd-scatter": lambda: K.spmm_scatter_owned(ti, tj, data, D, dx_s, nt),
        "sddmm": lambda: K.sddmm(ti, tj, D, Xg, g, nt),
        "sddmm+update": lambda: K.sddmm_momentum_update(ti, tj, D, Xg, w, v, LR, MU, WD, False, nt),
    }
    if gathered is not None:
        del fns["bwd-scatter"]
    return fns, (y, dx, g, dx_s)


def bf16_copy(a, args):
    """``a`` (float32) rounded to bfloat16, as its bits, in memory of the same kind as :func:`operand`'s."""
    out = np.empty(a.shape, np.uint16) if args.plain_arrays else hugepages.empty(a.shape, np.uint16)
    _kernels.to_bfloat16(a, out, 1)
    return out


def logical_bytes(kernel, pat, B, itemsize, row_itemsize=None):
    """Bytes a kernel moves if nothing is reused from a cache: per connection its index(es), value (and
    velocity) and the batch row it gathers or scatters; per row of the output (or of the rows read in
    order) that row and its offset. Caches make the real traffic smaller, so bytes / time can exceed
    the STREAM figure; far below it, the kernel is bound by latency or arithmetic, not bandwidth.
    ``row_itemsize``: bytes per element of the gathered rows (2 for bfloat16 copies; default ``itemsize``)."""
    nnz, n_in, n_out = pat["nnz"], pat["n_in"], pat["n_out"]
    idx = pat["t_indices"].itemsize
    row = B * (row_itemsize or itemsize)
    per_conn = {"forward": idx + itemsize + row,                  # index, value, gathered X row
                "backward": 2 * idx + itemsize + row,             # transposed index, permutation, value, dY row
                "bwd-scatter": idx + itemsize + 2 * row,          # index, value, out row read and written
                "sddmm": idx + itemsize + row,                    # index, gradient written, gathered X row
                "sddmm+update": idx + 4 * itemsize + row}[kernel]  # + value and velocity read and written
    rows = n_in if kernel == "backward" else n_out
    return nnz * per_conn + rows * (row + idx)


def gather_sddmm(Xs, Ds, rows, cols, feature_major):
    """NumPy gather SDDMM over connections ``(rows[k], cols[k])``, chunked to bound memory."""
    B = Xs.shape[1] if feature_major else Xs.shape[0]
    out = np.empty(rows.size, dtype=Xs.dtype)
    step = max(1024, GATHER_CHUNK_BYTES // (B * Xs.itemsize))
    for i in range(0, rows.size, step):
        r, c = rows[i:i + step], cols[i:i + step]
        if feature_major:
            np.einsum("kb,kb->k", Xs[r], Ds[c], out=out[i:i + step])
        else:
            np.einsum("bk,bk->k", Xs[:, r], Ds[:, c], out=out[i:i + step])
    return out


def peer_records(pat, data, X, D, rng, timer):
    """Time the single-threaded scipy.sparse and NumPy peers; also return their results for checks."""
    n_in, n_out, nnz = pat["n_in"], pat["n_out"], pat["nnz"]
    Wt = sp.csr_array((data, pat["t_indices"], pat["t_indptr"]), shape=(n_out, n_in))
    W = sp.csr_array((data[pat["perm"]], pat["w_indices"], pat["w_indptr"]), shape=(n_in, n_out))
    Xb, Db = np.ascontiguousarray(X.T), np.ascontiguousarray(D.T)
    sel = (np.sort(rng.choice(nnz, GATHER_SUBSET, replace=False)) if nnz > GATHER_FULL_MAX
           else np.arange(nnz))
    rows, cols = pat["t_indices"][sel], pat["out_of_k"][sel]
    scale = nnz / sel.size
    note = (f"timed on {sel.size} of {nnz} connections, scaled x{scale:.1f}" if sel.size < nnz else "")
    runs = [("forward", "scipy X@W", lambda: Xb @ W, 1.0, ""),
            ("forward", "scipy Wt@X_fm", lambda: Wt @ X, 1.0, ""),
            ("backward", "scipy D@W.T", lambda: Db @ W.T, 1.0, ""),
            ("backward", "scipy W@D_fm", lambda: W @ D, 1.0, ""),
            ("sddmm", "numpy gather bm", lambda: gather_sddmm(Xb, Db, rows, cols, False), scale, note),
            ("sddmm", "numpy gather fm", lambda: gather_sddmm(X, D, rows, cols, True), scale, note)]
    recs = []
    for kernel, impl, fn, s, nt in runs:
        t = timer(fn)
        t["median_s"] *= s
        t["min_s"] *= s
        recs.append(dict(kernel=kernel, impl=impl, threads=1, note=nt, **t))
    refs = {"forward": Wt @ X, "backward": W @ D, "sddmm": (sel, gather_sddmm(X, D, rows, cols, True))}
    return recs, refs


def torch_records(pat, data, X, D, threads, timer):
    """Time torch.sparse CSR @ dense and sampled_addmm at each thread count (empty without torch)."""
    try:
        import torch
    except ImportError:
        return None
    warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
    n_in, n_out = pat["n_in"], pat["n_out"]
    i64 = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731  torch's default index type
    Wt = torch.sparse_csr_tensor(i64(pat["t_indptr"]), i64(pat["t_indices"]), torch.from_numpy(data),
                                 size=(n_out, n_in))
    W = torch.sparse_csr_tensor(i64(pat["w_indptr"]), i64(pat["w_indices"]),
                                torch.from_numpy(data[pat["perm"]]), size=(n_in, n_out))
    Xt, Dt = torch.from_numpy(X), torch.from_numpy(D)
    runs = [("forward", lambda: torch.sparse.mm(Wt, Xt)), ("backward", lambda: torch.sparse.mm(W, Dt)),
            ("sddmm", lambda: torch.sparse.sampled_addmm(Wt, Dt, Xt.t(), beta=0.0, alpha=1.0))]
    old, recs = torch.get_num_threads(), []
    try:
        for nt in threads:
            torch.set_num_threads(nt)
            recs += [dict(kernel=k, impl="torch", threads=nt, note="", **timer(fn)) for k, fn in runs]
    finally:
        torch.set_num_threads(old)
    return recs


def rel_err(a, ref):
    """``max|a - ref| / max|ref|``."""
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-30))


def bench_config(pat, dtype, B, args, rng):
    """All measurements for one (shape, dtype, batch): set_cy, peers and torch; plus correctness checks."""
    data = operand(rng, pat["nnz"], dtype, args)
    X = operand(rng, (pat["n_in"], B), dtype, args)
    D = operand(rng, (pat["n_out"], B), dtype, args)
    timer = lambda fn: time_call(fn, args.target_s, args.min_repeats)  # noqa: E731
    recs = []
    for nt in args.threads:
        fns, outs = setcy_funcs(pat, data, X, D, nt)
        recs += [dict(kernel=k, impl="set_cy", threads=nt, note="", **timer(fn)) for k, fn in fns.items()]
    if _kernels.chunk_rows(pat["n_out"], pat["nnz"], pat["n_in"], B * np.dtype(dtype).itemsize):
        # long rows run chunked (see _kernels.set_chunking): the same kernels with chunking off, side by side
        saved = _kernels.get_chunking()
        for nt in args.threads:
            fns, _ = setcy_funcs(pat, data, X, D, nt)
            for k, fn in fns.items():
                _kernels.set_chunking(saved[0], 1 << 62, saved[2])
                try:
                    recs.append(dict(kernel=k, impl="unchunked", threads=nt, note="", **timer(fn)))
                finally:
                    _kernels.set_chunking(*saved)
    if np.dtype(dtype) == np.float32:  # the same kernels gathering bfloat16 rows (activation_dtype="bfloat16")
        halves = (bf16_copy(X, args), bf16_copy(D, args))
        for nt in args.threads:
            fns, _ = setcy_funcs(pat, data, X, D, nt, gathered=halves)
            recs += [dict(kernel=k, impl="bf16 rows", threads=nt, note="", **timer(fn)) for k, fn in fns.items()]
    peers, refs = peer_records(pat, data, X, D, rng, timer)
    fns, (y, dx, g, dx_s) = setcy_funcs(pat, data, X, D, max(args.threads))
    for f in fns.values():
        f()
    sel, g_ref = refs["sddmm"]
    checks = {"forward": rel_err(y, refs["forward"]), "backward": rel_err(dx, refs["backward"]),
              "bwd-scatter": rel_err(dx_s, refs["backward"]), "sddmm": rel_err(g[sel], g_ref)}
    w1, v1, w2, v2 = data.copy(), np.zeros_like(data), data.copy(), np.zeros_like(data)
    _kernels.sddmm_momentum_update(pat["t_indptr"], pat["t_indices"], D, X, w1, v1, LR, MU, WD, False, 1)
    _kernels.momentum_update(w2, v2, g, LR, MU, WD, False, 1)
    checks["sddmm+update"] = rel_err(w1, w2)
    torch_recs = torch_records(pat, data, X, D, args.threads, timer)
    recs += peers + (torch_recs or [])
    for r in recs:
        r["gflops"] = 2.0 * pat["nnz"] * B / r["median_s"] / 1e9
        if r["impl"] in ("set_cy", "bf16 rows"):
            rows = 2 if r["impl"] == "bf16 rows" else None
            r["logical_gbs"] = logical_bytes(r["kernel"], pat, B, np.dtype(dtype).itemsize, rows) / r["median_s"] / 1e9
    return recs, checks, torch_recs is not None


def bench_update(pat, dtype, args, rng):
    """The unfused momentum update (independent of the batch); rate in GB/s over w, v, g, w, v."""
    w, g = rng.standard_normal((2, pat["nnz"])).astype(dtype)
    v = np.zeros_like(w)
    recs = []
    for nt in args.threads:
        t = time_call(lambda nt=nt: _kernels.momentum_update(w, v, g, LR, MU, WD, False, nt),
                      args.target_s, args.min_repeats)
        recs.append(dict(kernel="update", impl="set_cy", threads=nt, batch=None, note="",
                         gbs=5 * w.nbytes / t["median_s"] / 1e9, **t))
    return recs


def find(recs, **kw):
    """Median time of the one record matching ``kw`` (impl may be a prefix), or None."""
    pre = kw.pop("impl")
    hits = [r["median_s"] for r in recs if r["impl"].startswith(pre) and all(r.get(k) == v for k, v in kw.items())]
    return min(hits) if hits else None


def add_speedups(recs):
    """Speed-up columns of the set_cy rows: vs best scipy / NumPy peer, torch, chunking off (where a shape runs
    chunked), 1 thread, unfused; of the ``bf16 rows`` ones: vs the same kernel gathering float32 rows, 1 thread."""
    for r in recs:
        if r["impl"] not in ("set_cy", "bf16 rows") or r["batch"] is None:
            continue
        key = dict(shape=r["shape"], dtype=r["dtype"], batch=r["batch"])
        t, sp_ = r["median_s"], {}
        if r["impl"] == "bf16 rows":  # against the same kernel gathering float32 rows
            sp_["f32-rows"] = find(recs, impl="set_cy", kernel=r["kernel"], threads=r["threads"], **key)
        elif r["kernel"] == "bwd-scatter":  # the compact storage's backward against the gathering one
            sp_["gather"] = find(recs, impl="set_cy", kernel="backward", threads=r["threads"], **key)
        elif r["kernel"] in PRODUCT_KERNELS:
            peers = ["scipy"] if r["kernel"] != "sddmm" else ["numpy gather bm", "numpy gather fm"]
            for peer in peers:
                sp_[peer.replace("numpy gather ", "np-")] = find(recs, impl=peer, kernel=r["kernel"], **key)
            sp_["torch"] = find(recs, impl="torch", kernel=r["kernel"], threads=r["threads"], **key)
        else:
            unf = [find(recs, impl="set_cy", kernel="sddmm", threads=r["threads"], **key),
                   find(recs, impl="set_cy", kernel="update", threads=r["threads"], shape=r["shape"],
                        dtype=r["dtype"], batch=None)]
            sp_["unfused"] = sum(unf) if None not in unf else None
        if r["impl"] == "set_cy":  # where the shape runs chunked: the same kernel with chunking off
            sp_["unchunked"] = find(recs, impl="unchunked", kernel=r["kernel"], threads=r["threads"], **key)
        if r["threads"] != 1:
            sp_["1thr"] = find(recs, impl=r["impl"], kernel=r["kernel"], threads=1, **key)
        r["speedup"] = {k: v / t for k, v in sp_.items() if v is not None}
        if r["speedup"].get("1thr", 1.0) < 0.9:
            r["note"] = "slower than 1 thread: a core was probably busy with another process"


def print_table(recs):
    """One line per measurement; speed-ups are (other time) / (set_cy time)."""
    print(f"\n{'shape':7} {'dtype':7} {'B':>4} {'kernel':12} {'impl':16} {'thr':>3} {'median ms':>10}"
          f" {'min ms':>9} {'rate':>11} {'logical':>10}  speed-up of set_cy")
    for r in recs:
        rate = f"{r['gbs']:7.2f} GB/s" if "gbs" in r else f"{r['gflops']:6.2f} GF/s"
        moved = f"{r['logical_gbs']:6.1f} GB/s" if "logical_gbs" in r else ""
        ups = "  ".join(f"x{v:.2f} {k}" for k, v in r.get("speedup", {}).items())
        print(f"{r['shape']:7} {r['dtype']:7} {r['batch'] or '-':>4} {r['kernel']:12} {r['impl']:16}"
              f" {r['threads']:>3} {r['median_s'] * 1e3:10.3f} {r['min_s'] * 1e3:9.3f} {rate:>11} {moved:>10}  {ups}"
              f"{'  [' + r['note'] + ']' if r['note'] else ''}")


def check_targets(recs, has_torch):
    """The issue's targets (float32, batch 128) as ``(description, ratio or None, goal)`` triples."""
    key = dict(dtype="float32", batch=128)
    out = []
    for shape, goal in (("a", 2.5), ("c", 3.0)):
        for k in ("forward", "backward"):
            a = find(recs, impl="scipy", kernel=k, shape=shape, **key)
            b = find(recs, impl="set_cy", kernel=k, threads=1, shape=shape, **key)
            out.append((f"{k} 1 thread >= {goal}x scipy on ({shape})", a / b if a and b else None, goal))
    shapes = sorted({r["shape"] for r in recs})
    for shape in shapes:
        for form, what in (("bm", "issue's batch-major einsum"), ("fm", "feature-major gather, stricter")):
            a = find(recs, impl=f"numpy gather {form}", kernel="sddmm", shape=shape, **key)
            b = find(recs, impl="set_cy", kernel="sddmm", threads=1, shape=shape, **key)
            out.append((f"SDDMM 1 thread >= 10x NumPy gather ({what}) on ({shape})",
                        a / b if a and b else None, 10.0))
    for shape in ("a", "b"):
        for k in PRODUCT_KERNELS:
            a = find(recs, impl="set_cy", kernel=k, threads=1, shape=shape, **key)
            b = find(recs, impl="set_cy", kernel=k, threads=2, shape=shape, **key)
            out.append((f"{k} 1->2 threads >= 1.7x on ({shape})", a / b if a and b else None, 1.7))
    if has_torch:
        threads = sorted({r["threads"] for r in recs if r["impl"] == "torch"})
        for shape in shapes:
            for k in PRODUCT_KERNELS:
                pairs = [(find(recs, impl="torch", kernel=k, threads=t, shape=shape, **key),
                          find(recs, impl="set_cy", kernel=k, threads=t, shape=shape, **key)) for t in threads]
                rs = [a / b for a, b in pairs if a and b]
                out.append((f"{k} >= torch ({shape}) at threads {threads}: "
                            + ", ".join(f"x{x:.2f}" for x in rs), min(rs) if rs else None, 1.0))
    return out


def bench_schedules(pats, args, rng):
    """Compare row schedules for forward/backward/SDDMM at os.cpu_count() threads; restores the old one."""
    nt, old, res = os.cpu_count(), _kernels.get_row_schedule(), []
    print(f"\nRow schedules at {nt} threads (median ms; previous schedule {old}):")
    try:
        for name, pat in pats.items():
            for dtype in args.dtypes:
                for B in args.batches:
                    data = operand(rng, pat["nnz"], dtype, args)
                    X = operand(rng, (pat["n_in"], B), dtype, args)
                    D = operand(rng, (pat["n_out"], B), dtype, args)
                    fns, _ = setcy_funcs(pat, data, X, D, nt)
                    for k in PRODUCT_KERNELS:
                        ts = {}
                        for kind, chunk in SCHEDULES:
                            _kernels.set_row_schedule(kind, chunk)
                            ts[f"{kind},{chunk}"] = time_call(fns[k], args.target_s, args.min_repeats)["median_s"]
                        best = min(ts, key=ts.get)
                        res.append(dict(shape=name, dtype=dtype.name, batch=B, kernel=k, best=best, times_s=ts))
                        print(f"  {name:7} {dtype.name:7} {B:4} {k:9} "
                              + "  ".join(f"{s}:{t * 1e3:.3f}" for s, t in ts.items()) + f"  -> {best}")
    finally:
        _kernels.set_row_schedule(*old)
    wins = {f"{k},{c}": sum(r["best"] == f"{k},{c}" for r in res) for k, c in SCHEDULES}
    geo = {s: float(np.exp(np.mean([np.log(r["times_s"][s] / r["times_s"]["static,0"]) for r in res])))
           for s in wins}
    print("  fastest count: " + ", ".join(f"{s}: {n}" for s, n in wins.items()))
    print("  geometric-mean time relative to static: " + ", ".join(f"{s}: {g:.3f}" for s, g in geo.items()))
    return res


def public_records(pat, B, args, rng):
    """Forward, backward and SDDMM through every public path, float32, with the same W and data.

    ``X``/``D`` are what a user holds: batch-major ``(B, features)`` arrays, C-ordered ("C") or
    Fortran-ordered ("F", i.e. feature-major: what the kernels read). Layer paths time forward +
    backward (input gradient, weight and bias gradients) together, as "layer".
    """
    from set_cy import SparseLinear

    dtype = np.dtype(np.float32)
    data = operand(rng, pat["nnz"], dtype, args)
    Xf = operand(rng, (pat["n_in"], B), dtype, args)   # feature-major buffers
    Df = operand(rng, (pat["n_out"], B), dtype, args)
    XC, DC = np.ascontiguousarray(Xf.T), np.ascontiguousarray(Df.T)   # batch-major, C-ordered
    XF, DF = Xf.T, Df.T                                                 # batch-major views, Fortran-ordered
    W = sp.csr_array((data[pat["perm"]], pat["w_indices"], pat["w_indptr"]), shape=(pat["n_in"], pat["n_out"]))
    timer = lambda fn: time_call(fn, args.target_s, args.min_repeats)  # noqa: E731
    recs, peer_best = [], {}
    for nt in args.threads:
        fns, _ = setcy_funcs(pat, data, Xf, Df, nt)
        op = ops.SparseOperator(W, n_threads=nt)
        yF, dxF = np.empty((B, pat["n_out"]), dtype, order="F"), np.empty((B, pat["n_in"]), dtype, order="F")
        g = np.empty(pat["nnz"], dtype)
        runs = {("kernel", k): fns[k] for k in PRODUCT_KERNELS}
        runs.update({
            ("ops scipy-W C", "forward"): lambda: ops.sparse_matmul(XC, W, n_threads=nt),
            ("ops scipy-W C", "backward"): lambda: ops.sparse_matmul_t(DC, W, n_threads=nt),
            ("ops scipy-W C", "sddmm"): lambda: ops.sddmm(XC, DC, W, n_threads=nt),
            ("ops prepared C", "forward"): lambda: ops.sparse_matmul(XC, op),
            ("ops prepared C", "backward"): lambda: ops.sparse_matmul_t(DC, op),
            ("ops prepared C", "sddmm"): lambda: ops.sddmm(XC, DC, op),
            ("ops prepared F", "forward"): lambda: ops.sparse_matmul(XF, op, out=yF),
            ("ops prepared F", "backward"): lambda: ops.sparse_matmul_t(DF, op, out=dxF),
            ("ops prepared F", "sddmm"): lambda: ops.sddmm(XF, DF, op, out=g),
        })
        lin = SparseLinear.from_scipy(W, n_threads=nt)
        runs[("SparseLinear C", "layer")] = lambda: (lin.forward(XC), lin.backward(DC))
        runs[("SparseLinear F", "layer")] = lambda: (lin.forward(XF, out=yF), lin.backward(DF, out=dxF))
        runs.update(_torch_layer_run(W, Xf, Df, nt))
        # interleaved rounds, the best median of each: every path sees the same moments of a shared host;
        # single-threaded scipy (its formulations as peer_records times them, plus, where the dense
        # n_in x n_out product fits in 64 MB, the weight gradient as a BLAS product sampled at the
        # connections) takes part in the rounds of the first thread count
        best = {}
        for _ in range(args.rounds):
            for key, fn in runs.items():
                t = timer(fn)
                if key not in best or t["median_s"] < best[key]["median_s"]:
                    best[key] = t
            if nt == args.threads[0]:
                for r in _scipy_round(pat, data, Xf, Df, XC, DC, rng, timer):
                    key = (r["impl"], r["kernel"])
                    if key not in peer_best or r["median_s"] < peer_best[key]["median_s"]:
                        peer_best[key] = r
        recs += [dict(kernel=k, impl=impl, threads=nt, **best[(impl, k)]) for impl, k in runs]
    peers = list(peer_best.values())
    for k in PRODUCT_KERNELS:
        best = min((r for r in peers if r["kernel"] == k), key=lambda r: r["median_s"])
        recs.append(dict(kernel=k, impl="scipy best", threads=1, **{f: best[f] for f in ("median_s", "min_s",
                                                                                          "repeats")}))
    recs.append(dict(kernel="layer", impl="scipy best", threads=1,
                     median_s=sum(r["median_s"] for r in recs if r["impl"] == "scipy best"),
                     min_s=sum(r["min_s"] for r in recs if r["impl"] == "scipy best"), repeats=None))
    torch_recs = torch_records(pat, data, Xf, Df, args.threads, timer) or []
    recs += [dict(r, impl="torch.sparse") for r in torch_recs]
    return recs, public_checks(pat, data, W, Xf, Df)


def _scipy_round(pat, data, Xf, Df, XC, DC, rng, timer):
    """One timing of every single-threaded scipy / NumPy formulation (records as peer_records gives them)."""
    peers, _ = peer_records(pat, data, Xf, Df, rng, timer)
    if pat["n_in"] * pat["n_out"] * Xf.itemsize <= 64 << 20:
        w_rows = np.repeat(np.arange(pat["n_in"]), np.diff(pat["w_indptr"]))
        w_cols = pat["w_indices"]
        with _blas_threads(1):
            t = timer(lambda: (XC.T @ DC)[w_rows, w_cols])
        peers.append(dict(kernel="sddmm", impl="numpy dense X.T@D sampled", threads=1, note="", **t))
    return peers


def public_checks(pat, data, W, Xf, Df):
    """Max relative error of every public path against the internal kernels (same W, X, D)."""
    from set_cy import SparseLinear

    fns, (y, dx, g, _) = setcy_funcs(pat, data, Xf, Df, 1)
    for k in PRODUCT_KERNELS:
        fns[k]()
    op = ops.SparseOperator(W, n_threads=1)
    checks = {"ops forward": rel_err(ops.sparse_matmul(Xf.T, op).T, y),
              "ops backward": rel_err(ops.sparse_matmul_t(Df.T, op).T, dx),
              "ops sddmm": rel_err(ops.sddmm(Xf.T, Df.T, op), g),
              "ops scipy-W forward": rel_err(ops.sparse_matmul(np.ascontiguousarray(Xf.T), W).T, y)}
    lin = SparseLinear.from_scipy(W, n_threads=1)
    checks["SparseLinear forward"] = rel_err(lin.forward(Xf.T).T, y)
    ldx, lg, _ = lin.backward(Df.T)
    checks["SparseLinear backward"] = rel_err(ldx.T, dx)
    checks["SparseLinear gradient"] = rel_err(lg, g)
    run = _torch_layer_run(W, Xf, Df, 1).get(("torch module", "layer"))
    if run is not None:
        import torch

        from set_cy.torch import SparseLinear as TorchSparseLinear

        m = TorchSparseLinear.from_scipy(W, n_threads=1)
        X = torch.from_numpy(Xf).t().requires_grad_()
        m(X).backward(torch.from_numpy(Df).t())
        checks["torch module input gradient"] = rel_err(X.grad.numpy().T, dx)
        checks["torch module values gradient"] = rel_err(m.values.grad.numpy(), g)
    return checks


def _blas_threads(n):
    """A context limiting BLAS threads to ``n`` (threadpoolctl, when installed), else a no-op."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(n)


def _torch_layer_run(W, Xf, Df, nt):
    """``{("torch module", "layer"): fn}``: set_cy.torch.SparseLinear forward + backward under autograd."""
    try:
        import torch

        from set_cy.torch import SparseLinear as TorchSparseLinear
    except ImportError:
        return {}
    m = TorchSparseLinear.from_scipy(W, n_threads=nt)
    X = torch.from_numpy(Xf).t().requires_grad_()   # (B, n_in) views of the feature-major buffers
    D = torch.from_numpy(Df).t()

    def run():
        m.zero_grad(set_to_none=True)
        X.grad = None
        m(X).backward(D)

    return {("torch module", "layer"): run}


def public_targets(recs):
    """Issue 12's targets (float32, 1 thread unless said) as ``(description, ratio or None, goal)``."""
    out = []
    shapes = sorted({r["shape"] for r in recs})
    batches = sorted({r["batch"] for r in recs})
    for shape in shapes:
        for B in batches:
            key = dict(shape=shape, batch=B, threads=1)
            for k in PRODUCT_KERNELS:
                kern = find(recs, impl="kernel", kernel=k, **key)
                prep = find(recs, impl="ops prepared F", kernel=k, **key)
                scipy = find(recs, impl="scipy best", kernel=k, **key)
                out.append((f"prepared ops {k} >= 0.8x the kernel ({shape}, B={B})",
                            kern / prep if kern and prep else None, 0.8))
                out.append((f"prepared ops {k} >= 2x scipy's best ({shape}, B={B})",
                            scipy / prep if scipy and prep else None, 2.0))
        key = dict(shape=shape, batch=128, threads=1)
        lin = find(recs, impl="SparseLinear F", kernel="layer", **key)
        lin_c = find(recs, impl="SparseLinear C", kernel="layer", **key)
        scipy = find(recs, impl="scipy best", kernel="layer", **key)
        torch_m = find(recs, impl="torch module", kernel="layer", **key)
        out.append((f"SparseLinear fwd+bwd (F inputs) >= 2x scipy ({shape}, B=128)",
                    scipy / lin if scipy and lin else None, 2.0))
        out.append((f"SparseLinear fwd+bwd (C inputs) >= 2x scipy ({shape}, B=128)",
                    scipy / lin_c if scipy and lin_c else None, 2.0))
        out.append((f"torch module fwd+bwd within 1.3x of SparseLinear's ({shape}, B=128; ratio = "
                    "SparseLinear / torch, goal >= 1/1.3)", lin / torch_m if lin and torch_m else None, 1 / 1.3))
    return out


def main_public(args):
    """``--public-api``: the public paths' table and targets; returns the JSON-able result."""
    t_start = time.perf_counter()
    info = run_info(args)
    print("Machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    rng = np.random.default_rng(args.seed)
    recs, checks = [], []
    for name in args.shapes:
        n_in, n_out, eps = SHAPES[name]
        pat = random_pattern(n_in, n_out, eps * (n_in + n_out), rng)
        print(f"shape ({name}): {n_in} x {n_out}, eps={eps}, nnz={pat['nnz']}", flush=True)
        for B in args.batches:
            rs, ch = public_records(pat, B, args, rng)
            recs += [dict(shape=name, batch=B, **r) for r in rs]
            checks.append(dict(shape=name, batch=B, max_rel_err=ch))
    print(f"\n{'shape':6} {'B':>4} {'kernel':9} {'impl':16} {'thr':>3} {'median ms':>10}  vs kernel  vs scipy")
    for r in recs:
        key = dict(shape=r["shape"], batch=r["batch"], kernel=r["kernel"])
        kern = find(recs, impl="kernel", threads=r["threads"], **key)
        scipy = find(recs, impl="scipy best", **key)
        vk = f"x{kern / r['median_s']:.2f}" if kern else ""
        vs = f"x{scipy / r['median_s']:.2f}" if scipy else ""
        print(f"{r['shape']:6} {r['batch']:>4} {r['kernel']:9} {r['impl']:16} {r['threads']:>3} "
              f"{r['median_s'] * 1e3:10.3f}  {vk:>9}  {vs:>7}")
    print("\n'vs kernel': kernel time / this time at the same threads (1.0 = as fast as the internal kernel); "
          "'vs scipy': single-threaded scipy's best formulation / this time ('layer': forward + input "
          "gradient + weight gradient; scipy's weight gradient is the NumPy gather). C / F: the layout of the "
          "batch-major inputs.")
    bad = [c for c in checks if max(c["max_rel_err"].values()) > 1e-4]
    print("correctness of every public path vs the internal kernels (float32, max rel. error <= 1e-4): "
          + ("OK" if not bad else f"MISMATCH {bad}"))
    targets = public_targets(recs)
    print("\nTargets (float32; ratios of median times, one run):")
    for desc, ratio, goal in targets:
        status = "not measured" if ratio is None else ("MET" if ratio >= goal else "NOT MET")
        print(f"  {desc:96} {'' if ratio is None else f'x{ratio:.2f}':>8}  {status}")
    elapsed = time.perf_counter() - t_start
    print(f"\ntotal {elapsed:.0f} s")
    result = {"args": {k: (v if k != "dtypes" else [d.name for d in v]) for k, v in vars(args).items()},
              "machine": info, "records": recs, "checks": checks, "elapsed_s": elapsed,
              "targets": [dict(target=d, ratio=r, goal=g, met=None if r is None else r >= g)
                          for d, r, g in targets]}
    out = args.out.replace(".json", "_public.json") if args.out.endswith(".json") else args.out
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    print(f"saved {out}")
    return result


def main(argv=None):
    """Run the benchmark; returns the JSON-able result."""
    args = parse_args(argv)
    if args.public_api:
        return main_public(args)
    t_start = time.perf_counter()
    info = run_info(args)
    if info["loadavg_1min"] is not None and info["loadavg_1min"] > 0.5:
        print(f"NOTE: 1-min load average {info['loadavg_1min']:.2f} > 0.5: the machine is shared or busy,"
              " timings are noisy.")
    print("Machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    bw = stream_bandwidth(1 << 23 if args.quick else 1 << 25, 3 if args.quick else 5)
    print(f"STREAM-like (NumPy, 1 thread, {bw['array_mib']:.0f} MiB arrays): copy {bw['copy_gbs']} GB/s,"
          f" triad {bw['triad_gbs']} GB/s")
    rng = np.random.default_rng(args.seed)
    pats, recs, checks, has_torch = {}, [], [], False
    for name in args.shapes:
        n_in, n_out, eps = SHAPES[name]
        pats[name] = pat = random_pattern(n_in, n_out, eps * (n_in + n_out), rng)
        print(f"shape ({name}): {n_in} x {n_out}, eps={eps}, nnz={pat['nnz']}", flush=True)
        for dtype in args.dtypes:
            for r in bench_update(pat, dtype, args, rng):
                recs.append(dict(shape=name, dtype=dtype.name, **r))
            for B in args.batches:
                rs, ch, has_torch = bench_config(pat, dtype, B, args, rng)
                recs += [dict(shape=name, dtype=dtype.name, batch=B, **r) for r in rs]
                checks.append(dict(shape=name, dtype=dtype.name, batch=B, max_rel_err=ch))
    add_speedups(recs)
    print_table(recs)
    print("\nSpeed-ups are peer time / set_cy time (medians); 'scipy' is the faster of its two formulations,"
          " np-bm / np-fm the NumPy gather SDDMM\nbatch-major (X[:, rows]) / feature-major (X_fm[rows])."
          " scipy.sparse and NumPy are single-threaded (timed once, compared with set_cy\nat every thread"
          " count); torch runs with torch.set_num_threads equal to set_cy's threads. 'update' is"
          " batch-independent\n(rate counts w, v, g read and w, v written; small shapes stay in cache)."
          " 'logical' is bytes / time with every gathered or\nscattered batch row counted as moved (see"
          f" logical_bytes), to read next to the STREAM figure above (triad {bw['triad_gbs']} GB/s, 1 thread)."
          " 'bwd-scatter' is the\nbackward product of storage='compact' (no transposed index), x gather ="
          " its speed over the gathering backward.")
    if not has_torch:
        print("torch peers: skipped: torch not installed")
    tol = {"float32": 1e-4, "float64": 1e-10}
    bad = [c for c in checks if max(c["max_rel_err"].values()) > tol[c["dtype"]]]
    print("correctness vs peers: " + ("OK" if not bad else f"MISMATCH {bad}"))
    targets = check_targets(recs, has_torch)
    print("\nTargets (float32, batch 128; ratios of median times):")
    for desc, ratio, goal in targets:
        status = "not measured" if ratio is None else ("MET" if ratio >= goal else "NOT MET")
        print(f"  {desc:80} {'' if ratio is None else f'x{ratio:.2f}':>8}  {status}")
    sched = bench_schedules(pats, args, rng) if args.schedules else None
    elapsed = time.perf_counter() - t_start
    info["loadavg_1min_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"\ntotal {elapsed:.0f} s; 1-min load average at the end {info['loadavg_1min_end']:.2f}"
          + (" (includes this run; above the core count: others ran, multi-thread timings may be inflated)"
             if (info["loadavg_1min_end"] or 0) > os.cpu_count() else " (includes this run)"))
    result = {"args": {k: (v if k != "dtypes" else [d.name for d in v]) for k, v in vars(args).items()},
              "machine": info, "stream": bw, "records": recs, "checks": checks,
              "targets": [dict(target=d, ratio=r, goal=g, met=None if r is None else r >= g)
                          for d, r, g in targets],
              "schedules": sched, "elapsed_s": elapsed}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    print(f"saved {args.out}")
    return result


if __name__ == "__main__":
    main()
