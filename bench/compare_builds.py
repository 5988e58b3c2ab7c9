"""Two builds of the kernels timed against each other, interleaved in one process.

This host's speed drifts by tens of percent within minutes, so two benchmark runs one after the other can
not tell a 10% change from the drift. This script loads the installed ``set_cy._kernels`` and another
build of the same extension (``--other``, e.g. built from an older commit) side by side, and times the
same calls on the same arrays in alternating rounds; each keeps its best round.

Another build, from a commit ``REV`` (Cython and ``setuptools>=77`` in the environment)::

    git worktree add /tmp/other REV && (cd /tmp/other && python setup.py build_ext --inplace)
    python bench/compare_builds.py --other /tmp/other/set_cy/_kernels*.so

The other build must take the same arguments for the kernels timed (``--gathered bfloat16`` needs both
builds to have ``to_bfloat16``).
"""
import argparse
import glob
import importlib.util
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_info  # noqa: E402
from bench_kernels import SHAPES, bf16_copy, operand, random_pattern, setcy_funcs  # noqa: E402

from set_cy import _kernels  # noqa: E402

KERNELS = ("forward", "backward", "sddmm", "sddmm+update")


def load_other(path):
    """The extension module at ``path`` (a glob is allowed), under a name of its own."""
    hits = sorted(glob.glob(path))
    if len(hits) != 1:
        raise SystemExit(f"--other: expected one file for {path!r}, found {hits}")
    spec = importlib.util.spec_from_file_location("set_cy_other._kernels", hits[0])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, hits[0]


def best_round(fn, repeats):
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--other", required=True, help="path (or glob) of the other build's _kernels extension")
    p.add_argument("--shapes", default="a,b,c", help="comma list out of " + ",".join(SHAPES))
    p.add_argument("--batches", default="32,128")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--gathered", choices=("float32", "bfloat16"), default="float32",
                   help="the rows the products gather: float32, or bfloat16 copies")
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds; each build keeps its best")
    p.add_argument("--repeats", type=int, default=3, help="calls per round")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.plain_arrays = False
    other, path = load_other(args.other)
    print("Machine: " + ", ".join(f"{k}={v}" for k, v in machine_info().items()))
    print(f"this build: {_kernels.__file__}\nother build: {path}\nfloat32 values, {args.gathered} gathered rows; "
          f"{args.rounds} alternating rounds of {args.repeats} calls, best round of each")
    print(f"\n{'shape':6} {'B':>4} {'thr':>3} {'kernel':13} {'other ms':>9} {'this ms':>9}  other / this")
    rng = np.random.default_rng(args.seed)
    rows = []
    for shape in args.shapes.split(","):
        n_in, n_out, eps = SHAPES[shape]
        pat = random_pattern(n_in, n_out, eps * (n_in + n_out), rng)
        data = operand(rng, pat["nnz"], np.float32, args)
        for B in (int(b) for b in args.batches.split(",")):
            X = operand(rng, (n_in, B), np.float32, args)
            D = operand(rng, (n_out, B), np.float32, args)
            halves = None if args.gathered == "float32" else (bf16_copy(X, args), bf16_copy(D, args))
            for nt in (int(t) for t in args.threads.split(",")):
                fns = {name: setcy_funcs(pat, data, X, D, nt, halves, K)[0] for name, K in (("this", _kernels),
                                                                                          ("other", other))}
                best = {(name, k): np.inf for name in fns for k in KERNELS}
                for _ in range(args.rounds):
                    for k in KERNELS:
                        for name in ("other", "this"):
                            best[(name, k)] = min(best[(name, k)], best_round(fns[name][k], args.repeats))
                for k in KERNELS:
                    o, t = best[("other", k)], best[("this", k)]
                    rows.append(dict(shape=shape, batch=B, threads=nt, kernel=k, other_s=o, this_s=t))
                    print(f"{shape:6} {B:>4} {nt:>3} {k:13} {o * 1e3:9.3f} {t * 1e3:9.3f}  x{o / t:.2f}")
    return rows


if __name__ == "__main__":
    main()
