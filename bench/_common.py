"""Small helpers shared by the benchmark scripts: machine description, memory bandwidth, timing."""
import math
import os
import platform
import time

import numpy as np

# Elements per block of the STREAM-like triad: the temporary stays in L2, so memory sees b, c and a once.
_TRIAD_BLOCK = 1 << 16


def cpu_model():
    """CPU model name from ``/proc/cpuinfo``, else from :mod:`platform`.

    Returns
    -------
    str
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info():
    """Describe the machine and the software versions that a benchmark result depends on.

    Returns
    -------
    dict
        CPU model, logical cores, RAM, load average, versions of Python, NumPy, SciPy, set_cy (and
        torch when importable), set_cy's OpenMP and ISA-dispatch flags, ``OMP_NUM_THREADS``.
    """
    import scipy
    import set_cy

    try:
        import psutil
        ram_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil is a dependency, but be tolerant
        ram_gb = None
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "set_cy": set_cy.__version__,
        "torch": torch_version,
        "openmp_enabled": set_cy.openmp_enabled(),
        "isa_dispatch_enabled": set_cy.isa_dispatch_enabled(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def stream_bandwidth(n_elems=1 << 25, repeats=5):
    """Single-threaded STREAM-like copy and triad bandwidth with NumPy (float64).

    The triad ``a = b + s*c`` runs block by block through a small temporary, so main memory sees each
    of the three arrays once per pass; copy is ``a[:] = b``. Bytes counted: 3 arrays for the triad,
    2 for copy (write-allocate traffic not counted, as in STREAM).

    Parameters
    ----------
    n_elems : int, default 2**25
        Length of each array (2**25 float64 = 256 MiB, far beyond any last-level cache).
    repeats : int, default 5
        Best of this many passes.

    Returns
    -------
    dict
        ``copy_gbs``, ``triad_gbs`` (GB/s = 1e9 bytes/s) and ``array_mib``.
    """
    a = np.zeros(n_elems)
    b = np.ones(n_elems)
    c = np.full(n_elems, 2.0)
    tmp = np.empty(_TRIAD_BLOCK)
    s = 3.0

    def triad():
        for i in range(0, n_elems, _TRIAD_BLOCK):
            j = min(i + _TRIAD_BLOCK, n_elems)
            t = tmp[: j - i]
            np.multiply(c[i:j], s, out=t)
            np.add(b[i:j], t, out=a[i:j])

    def copy():
        np.copyto(a, b)

    best = {}
    for name, fn, n_arrays in (("copy", copy, 2), ("triad", triad, 3)):
        fn()
        t = min(_timed(fn) for _ in range(repeats))
        best[f"{name}_gbs"] = round(n_arrays * a.nbytes / t / 1e9, 2)
    best["array_mib"] = a.nbytes / 2**20
    return best


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_call(fn, target_s=0.2, min_repeats=3, max_repeats=20000):
    """Time ``fn()``: two warm-up calls, then enough repeats to last about ``target_s`` seconds.

    Parameters
    ----------
    fn : callable
        Called with no arguments.
    target_s : float, default 0.2
        Aimed-at total duration of the timed repeats.
    min_repeats, max_repeats : int
        Bounds on the number of timed repeats.

    Returns
    -------
    dict
        ``median_s``, ``min_s`` and ``repeats``.
    """
    fn()
    est = _timed(fn)
    n = int(min(max_repeats, max(min_repeats, math.ceil(target_s / max(est, 1e-9)))))
    times = [_timed(fn) for _ in range(n)]
    return {"median_s": float(np.median(times)), "min_s": float(min(times)), "repeats": n}
