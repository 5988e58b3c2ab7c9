"""Scaling of a training epoch with the number of cores, for each way of using them.

Modes (``SparseMLP.fit(backend=...)``):

- ``openmp``: one process, every kernel split over ``c`` OpenMP threads (fused gradient + update);
- ``threads``: each mini-batch split into ``c`` shards over joblib threads, gradients merged;
- ``processes``: the same over ``c`` loky processes sharing the model and data in shared memory.

For every workload, mode and core count ``c = 1 .. os.cpu_count()`` (or ``--cores``) a fresh network
with the same seed trains ``--epochs`` epochs with evolution between them; the time of an epoch is
the median of the epochs after the first (the first includes starting worker processes and
allocating buffers), and the fastest of ``--repeats`` interleaved runs counts. Speed-up = epoch
time at 1 core / epoch time at ``c`` cores, within a mode; the table also gives each mode's time
relative to ``openmp`` at the same core count.

Usage::

    python bench/bench_scaling.py                  # both workloads, all core counts, JSON + PNG
    python bench/bench_scaling.py --quick          # small workloads, a minute
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_info  # noqa: E402

from set_cy import SparseMLP  # noqa: E402
from set_cy.datasets import load_dataset  # noqa: E402

MODES = ("openmp", "threads", "processes")
WORKLOADS = {
    # name: (layer sizes or None = from data, dataset, dataset options, epsilon, batch size, lr)
    "fmnist": ([784, 1000, 1000, 1000, 10], "fashion-mnist", {}, 20, 128, 0.05),
    "fmnist-b512": ([784, 1000, 1000, 1000, 10], "fashion-mnist", {}, 20, 512, 0.05),
    "wide": ([54675, 27000, 27000, 18], "synthetic", {"n_samples": 2096, "n_features": 54675, "n_classes": 18},
             20, 32, 0.01),
}
QUICK = {
    "fmnist": ([784, 300, 300, 10], "fashion-mnist", {}, 20, 128, 0.05),
    "fmnist-b512": ([784, 300, 300, 10], "fashion-mnist", {}, 20, 512, 0.05),
    "wide": ([5000, 3000, 3000, 18], "synthetic", {"n_samples": 600, "n_features": 5000, "n_classes": 18},
             20, 32, 0.01),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=sorted(WORKLOADS))
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--cores", nargs="+", type=int, default=None, help="core counts (default 1 .. cpu_count)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is not timed (3)")
    p.add_argument("--max-samples", type=int, default=None, help="use at most this many training samples")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs of every (mode, cores), interleaved; the fastest counts (2). The lent vCPUs of a "
                        "shared host are sometimes slowed for seconds: the minimum is what the code can do")
    p.add_argument("--quick", action="store_true", help="small workloads (about a minute)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "scaling.json"))
    p.add_argument("--plot", default=None, help="PNG path (default: --out with .png)")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (the first epoch is not timed)")
    args.cores = args.cores or list(range(1, (os.cpu_count() or 1) + 1))
    if min(args.cores) < 1:
        p.error("--cores must be positive")
    if 1 not in args.cores:
        args.cores = [1] + args.cores  # speed-ups are relative to 1 core
    args.cores = sorted(set(args.cores))
    args.plot = args.plot or os.path.splitext(args.out)[0] + ".png"
    return args


def run_one(data, sizes, eps, batch, lr, mode, cores, epochs):
    # lr scaling as in the CLI: the 27000 -> 18 output layer has ~30k inputs per neuron (plain SGD: loss 63)
    m = SparseMLP(sizes, epsilon=eps, seed=0, n_threads=cores, lr_scaling="fan_in")
    h = m.fit(data.X_train, data.y_train, epochs=epochs, batch_size=batch, learning_rate=lr, backend=mode,
              n_jobs=cores, verbose=0)
    times = h["train_time"][1:]
    return {"epoch_s": float(np.median(times)), "epoch_times": h["train_time"],
            "evolution_s": [e for e in h["evolution_time"]], "loss": h["loss"],
            "test_accuracy": float(m.score(data.X_test, data.y_test)), "connections": m.n_connections}


def add_speedups(recs):
    """Set each record's ``speedup``: epoch time at 1 core of the same workload and mode / its epoch time."""
    for r in recs:
        one = next(q for q in recs if q["workload"] == r["workload"] and q["mode"] == r["mode"] and q["cores"] == 1)
        r["speedup"] = one["epoch_s"] / r["epoch_s"]


def save(args, info, recs, targets, elapsed, partial):
    """Write the JSON report (after every workload with ``partial=True``, so a killed run keeps its results)."""
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    result = {"args": vars(args), "machine": info, "records": recs, "elapsed_s": elapsed, "partial": partial,
              "targets": [dict(target=d, ratio=r, goal=g, met=r >= g) for d, r, g in targets]}
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    os.replace(tmp, args.out)
    return result


def print_table(recs, cores):
    head = f"{'workload':8} {'mode':10}" + "".join(f" {f'{c} core' + ('s' if c > 1 else ''):>17}" for c in cores)
    print("\nepoch time (s) and speed-up over 1 core of the same mode; [x] = time of openmp / time of the mode")
    print(head)
    by = {(r["workload"], r["mode"], r["cores"]): r for r in recs}
    for w in sorted({r["workload"] for r in recs}):
        for mode in MODES:
            if (w, mode, 1) not in by:
                continue
            cells = []
            for c in cores:
                r = by.get((w, mode, c))
                if r is None:
                    cells.append(f"{'-':>17}")
                    continue
                ref = by.get((w, "openmp", c))
                rel = f" [{ref['epoch_s'] / r['epoch_s']:.2f}]" if ref else ""
                cells.append(f"{r['epoch_s']:7.3f} x{r['speedup']:.2f}{rel:>7}")
            print(f"{w:8} {mode:10}" + " ".join(cells))


def plot(recs, cores, path, info):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot: skipped: matplotlib not installed (pip install 'set_cy[bench]')")
        return None
    workloads = sorted({r["workload"] for r in recs})
    fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 4), squeeze=False)
    for ax, w in zip(axes[0], workloads):
        ax.plot(cores, cores, "k--", label="ideal")
        for mode in MODES:
            pts = sorted((r["cores"], r["speedup"]) for r in recs if r["workload"] == w and r["mode"] == mode)
            if pts:
                ax.plot(*zip(*pts), "o-", label=mode)
        sizes = recs[0]["sizes"] if len(workloads) == 1 else next(r["sizes"] for r in recs if r["workload"] == w)
        ax.set_title(f"{w}: {sizes}", fontsize=8)
        ax.set_xlabel("cores")
        ax.set_ylabel("speed-up of an epoch over 1 core")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"set_cy scaling on {info['cpu']} ({info['cores']} cores)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None):
    args = parse_args(argv)
    info = machine_info()
    print("Machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    if (info["loadavg_1min"] or 0) > 0.5:
        print(f"NOTE: 1-min load average {info['loadavg_1min']:.2f} > 0.5: the machine is busy, timings are noisy.")
    table = QUICK if args.quick else WORKLOADS
    recs = []
    t_start = time.perf_counter()
    for w in args.workloads:
        sizes, name, opts, eps, batch, lr = table[w]
        data = load_dataset(name, seed=0, **opts)
        if args.max_samples and data.X_train.shape[0] > args.max_samples:
            data.X_train, data.y_train = data.X_train[:args.max_samples], data.y_train[:args.max_samples]
        print(f"\n{w}: {'-'.join(map(str, sizes))} eps={eps} batch={batch}, {data.name} "
              f"{data.X_train.shape[0]} training samples", flush=True)
        runs = {}
        for rep in range(args.repeats):
            for mode in args.modes:
                for c in args.cores:
                    r = run_one(data, sizes, eps, batch, lr, mode, c, args.epochs)
                    runs.setdefault((mode, c), []).append(r)
                    print(f"  run {rep + 1}: {mode:9} {c:2} core(s): epoch {r['epoch_s']:.3f} s (epochs "
                          f"{np.round(r['epoch_times'], 3)}), loss {r['loss'][-1]:.3f}, test acc "
                          f"{r['test_accuracy']:.3f}", flush=True)
        for (mode, c), rs in runs.items():
            best = min(rs, key=lambda q: q["epoch_s"])
            rec = dict(best, workload=w, mode=mode, cores=c, sizes=sizes, epsilon=eps, batch=batch,
                       n_train=int(data.X_train.shape[0]), epoch_s_runs=[q["epoch_s"] for q in rs])
            recs.append(rec)
        add_speedups(recs)
        save(args, info, recs, [], time.perf_counter() - t_start, partial=True)  # a later crash loses nothing
    print_table(recs, args.cores)
    targets = []
    if 2 in args.cores:
        for w in args.workloads:
            s = {r["mode"]: r["speedup"] for r in recs if r["workload"] == w and r["cores"] == 2}
            if "openmp" in s:
                targets.append((f"{w}: openmp 1 -> 2 cores >= 1.7x", s["openmp"], 1.7))
            joblib_modes = {k: v for k, v in s.items() if k != "openmp"}
            if joblib_modes:
                best = max(joblib_modes, key=joblib_modes.get)
                targets.append((f"{w}: best joblib mode ({best}) 1 -> 2 cores >= 1.5x", joblib_modes[best], 1.5))
        print("\nTargets:")
        for desc, ratio, goal in targets:
            print(f"  {desc:60} x{ratio:.2f}  {'MET' if ratio >= goal else 'NOT MET'}")
    info["loadavg_1min_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    elapsed = time.perf_counter() - t_start
    print(f"\ntotal {elapsed:.0f} s; 1-min load average at the end {info['loadavg_1min_end']:.2f} (includes this run)")
    result = save(args, info, recs, targets, elapsed, partial=False)
    print(f"saved {args.out}")
    png = plot(recs, args.cores, args.plot, info)
    if png:
        print(f"saved {png}")
    return result


if __name__ == "__main__":
    main()
