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


def git_commit():
    """Commit of the working tree (``git rev-parse --short HEAD``), with ``+dirty`` when tracked files differ.

    Returns
    -------
    str or None
        ``None`` outside a git checkout.
    """
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + "+dirty" if dirty else head) or None


def load_average():
    """``os.getloadavg()`` as a list of three floats (1, 5, 15 minutes), or ``None`` where unsupported."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def peak_rss_bytes():
    """Peak resident set size of this process so far (``getrusage``; Linux reports KiB)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def start_rss_watchdog(limit_bytes, interval=0.05):
    """Kill this process (exit code 3, message on stderr) as soon as its RSS exceeds ``limit_bytes``.

    A daemon thread polls :mod:`psutil`; for benchmark children that must never take the machine down.
    The returned dict's ``"peak"`` is the largest RSS sampled since the start or since the caller last
    set it to 0 (e.g. after loading data, to get the peak of training alone).
    """
    import sys
    import threading

    import psutil

    proc = psutil.Process()
    state = {"peak": 0}

    def watch():
        while True:
            rss = proc.memory_info().rss
            state["peak"] = max(state["peak"], rss)
            if rss > limit_bytes:
                sys.stderr.write(f"RSS {rss / 2**30:.2f} GiB exceeded the limit of "
                                 f"{limit_bytes / 2**30:.2f} GiB: stopped\n")
                sys.stderr.flush()
                os._exit(3)
            time.sleep(interval)

    threading.Thread(target=watch, daemon=True).start()
    return state


def save_report(path, started, machine, loadavg_start, **fields):
    """Write a benchmark's JSON report (command, commit, machine, load, seconds, then ``fields``).

    Parameters
    ----------
    path : str
        Output file; its folder is created.
    started : float
        ``time.perf_counter()`` at the start of the run.
    machine : dict
        :func:`machine_info` of the run.
    loadavg_start : list
        :func:`load_average` at the start.
    **fields
        The benchmark's own entries (arguments, results).

    Returns
    -------
    dict
        The report as written.
    """
    import json
    import sys

    out = dict(command=" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]), commit=git_commit(),
               machine=machine, loadavg_start=loadavg_start, loadavg_end=load_average(),
               seconds=time.perf_counter() - started, **fields)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=1)
    return out
