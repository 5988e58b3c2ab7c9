"""Training speed and peak memory of set_cy against its peers, same workload, same run.

Methods (each one runs in its own subprocess, so that peak RSS is per method and an out-of-memory
cannot take the bench down):

- ``set_cy``: :class:`set_cy.SparseMLP` ``fit`` in its default mode (OpenMP kernels, all cores);
- ``set_cy_1t``: the same with ``n_threads=1``;
- ``scipy_set``: a truly sparse SET-MLP in plain SciPy/NumPy (``bench/_baselines.py``: CSR products
  through ``scipy.sparse``, per-connection gradient by NumPy gathers, momentum step with SciPy sparse
  arithmetic), the approach of the SET reference implementation;
- ``torch_mask`` (and ``torch_mask_1t``): dense weights times a binary mask in PyTorch CPU, as
  mask-based sparse training libraries do (skipped when torch is not installed);
- ``dense_numpy``: the dense MLP of the same architecture in NumPy.

All train with the same recipe: ReLU, dropout 0.3, softmax cross-entropy, SGD lr 0.05, momentum 0.9,
weight decay 2e-4, evolution after every epoch but the last (zeta 0.3, regrown weights at zero).

Workloads: ``fmnist`` (784-1000-1000-1000-10, eps 20, batch 128, Fashion-MNIST), ``leukemia``
(54675-27000-27000-18, eps 20, batch 128, synthetic Leukemia-shaped data: 2096 samples, 18 classes)
and ``sweep`` (1000-N-N-N-10 at eps 20 for N from 1k to 100k, synthetic data, time per batch and peak
RSS; dense and mask methods predicted to exceed the memory limit are skipped, not run).

Examples
--------
    SET_CY_DATA=../shared/data python bench/bench_peers.py --quick
    SET_CY_DATA=../shared/data python bench/bench_peers.py --workloads fmnist,leukemia
    python bench/bench_peers.py --workloads sweep
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import git_commit, load_average, machine_info, peak_rss_bytes, start_rss_watchdog  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("set_cy", "set_cy_1t", "scipy_set", "torch_mask", "torch_mask_1t", "dense_numpy")
RECIPE = dict(lr=0.05, momentum=0.9, weight_decay=2e-4, zeta=0.3, dropout=0.3)
INTERPRETER_BYTES = 250 << 20  # Python + NumPy/SciPy + set_cy, added to predictions
TORCH_BYTES = 400 << 20        # what importing torch adds
SWEEP_INPUT = 1000
SWEEP_CLASSES = 10


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: Fashion-MNIST on 6000 images, the Leukemia shape scaled down 10x, "
                        "widths 1k and 3k, 1 epoch")
    p.add_argument("--workloads", default="fmnist,leukemia,sweep", help="comma list of fmnist, leukemia, sweep")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list out of " + ",".join(METHODS))
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per method on fmnist and leukemia (default 2; 1 with --quick); "
                        "the per-epoch time is the median")
    p.add_argument("--setcy-epochs", type=int, default=None,
                   help="epochs of the set_cy methods, which are cheap (default 5; 1 with --quick)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epsilon", type=float, default=20)
    p.add_argument("--widths", default=None,
                   help="comma list of hidden widths N of the sweep (default 1000,3000,10000,20000,30000,100000; "
                        "1000,3000 with --quick)")
    p.add_argument("--sweep-batches", type=int, default=None,
                   help="batches per epoch in the sweep; 2 epochs run and the second is timed (default 3; 2 "
                        "with --quick)")
    p.add_argument("--mem-limit-gb", type=float, default=10.0,
                   help="skip a method predicted to need more than this (or 80%% of the available memory)")
    p.add_argument("--hard-limit-gb", type=float, default=12.0,
                   help="a child whose RSS goes above this is stopped")
    p.add_argument("--timeout", type=float, default=900, help="seconds per child process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1,
                   help="runs of every method, interleaved; the fastest counts (the lent vCPUs are sometimes "
                        "slowed for seconds by the host, see bench/README.md)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "peers.json"))
    p.add_argument("--plot", default=os.path.join(HERE, "results", "peers_sweep.png"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.workloads = a.workloads.split(",")
    a.methods = a.methods.split(",")
    bad = [m for m in a.methods if m not in METHODS] + [w for w in a.workloads
                                                        if w not in ("fmnist", "leukemia", "sweep")]
    if bad:
        p.error(f"unknown methods or workloads: {bad}")
    a.epochs = a.epochs or (1 if a.quick else 2)
    a.setcy_epochs = a.setcy_epochs or (1 if a.quick else 5)
    a.widths = [int(w) for w in (a.widths or ("1000,3000" if a.quick else
                                               "1000,3000,10000,20000,30000,100000")).split(",")]
    a.sweep_batches = a.sweep_batches or (2 if a.quick else 3)
    return a


# ------------------------------------------------------------------------------------------------
# workloads
# ------------------------------------------------------------------------------------------------
def workload_specs(args):
    """One dict per (workload, size): layers, batch, epochs and how the child gets its data."""
    specs = []
    eps, B, E = args.epsilon, args.batch_size, args.epochs
    if "fmnist" in args.workloads:
        specs.append(dict(workload="fmnist", layers=[784, 1000, 1000, 1000, 10], epsilon=eps, batch=B, epochs=E,
                          setcy_epochs=args.setcy_epochs,
                          data=dict(kind="fashion-mnist", n_train=6000 if args.quick else None)))
    if "leukemia" in args.workloads:
        scale = 10 if args.quick else 1
        nf, nh = 54675 // scale, 27000 // scale
        specs.append(dict(workload="leukemia", layers=[nf, nh, nh, 18], epsilon=eps, batch=B, epochs=E,
                          setcy_epochs=args.setcy_epochs,
                          data=dict(kind="synthetic", n_samples=2096 // (3 if args.quick else 1), n_features=nf,
                                    n_classes=18)))
    if "sweep" in args.workloads:
        for n in args.widths:
            specs.append(dict(workload="sweep", width=n, layers=[SWEEP_INPUT, n, n, n, SWEEP_CLASSES],
                              epsilon=eps, batch=B, epochs=2, timed="last",
                              data=dict(kind="random", n_samples=B * args.sweep_batches,
                                        n_features=SWEEP_INPUT, n_classes=SWEEP_CLASSES)))
    return specs


def data_bytes(data):
    """Bytes of the float32 data a child holds (train and test parts)."""
    if data["kind"] == "fashion-mnist":
        return 70000 * 784 * 4
    return data["n_samples"] * data["n_features"] * 4


def predict_bytes(method, spec):
    """Predicted peak RSS of a child: model and training state + data + interpreter (+ torch)."""
    from _baselines import dense_bytes, scipy_set_bytes, torch_mask_bytes

    from set_cy.sizing import estimate_memory

    layers, eps, B = spec["layers"], spec["epsilon"], spec["batch"]
    if method.startswith("set_cy"):
        model = estimate_memory(layers, eps, B)["total"]
    elif method == "scipy_set":
        model = scipy_set_bytes(layers, eps, B)
    elif method.startswith("torch_mask"):
        model = torch_mask_bytes(layers, B) + TORCH_BYTES
    else:
        model = dense_bytes(layers, B)
    extra = data_bytes(spec["data"])
    if spec["data"]["kind"] != "random":
        extra *= 2  # loading and standardizing make a temporary copy
    return int(model + extra + INTERPRETER_BYTES)


# ------------------------------------------------------------------------------------------------
# child: one method on one workload
# ------------------------------------------------------------------------------------------------
def load_data(data, seed):
    """``X_train, y_train, X_test, y_test`` (float32, int64) for a child."""
    if data["kind"] == "random":
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((data["n_samples"], data["n_features"]), dtype=np.float32)
        y = rng.integers(0, data["n_classes"], data["n_samples"])
        return X, y, None, None
    from set_cy.datasets import load_dataset

    if data["kind"] == "fashion-mnist":
        ds = load_dataset("fashion-mnist")
    else:
        ds = load_dataset("synthetic", n_samples=data["n_samples"], n_features=data["n_features"],
                          n_classes=data["n_classes"], seed=seed)
    X, y = ds.X_train, ds.y_train
    if data.get("n_train"):
        X, y = X[:data["n_train"]].copy(), y[:data["n_train"]].copy()
    return X, y, ds.X_test, ds.y_test


def blas_threads():
    """Threads of NumPy's BLAS (threadpoolctl), or None."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    n = [p.get("num_threads") for p in threadpool_info() if p.get("user_api") == "blas"]
    return n[0] if n else None


def run_child(method, spec, seed, hard_limit):
    """Train ``method`` on ``spec``; returns the record (times, RSS, accuracies)."""
    watch = start_rss_watchdog(hard_limit)
    import psutil

    proc = psutil.Process()
    t0 = time.perf_counter()
    X, y, Xt, yt = load_data(spec["data"], seed)
    rec = dict(load_s=time.perf_counter() - t0, rss_after_data=proc.memory_info().rss)
    watch["peak"] = 0  # from here on: the peak of building and training (data still held)
    layers, eps, B, E = spec["layers"], spec["epsilon"], spec["batch"], spec["epochs"]
    if method.startswith("set_cy") and spec.get("setcy_epochs"):
        E = spec["setcy_epochs"]
    lr, mu, wd, zeta, drop = (RECIPE[k] for k in ("lr", "momentum", "weight_decay", "zeta", "dropout"))
    epoch_s, evo_s, train_acc = [], [], []
    t0 = time.perf_counter()
    if method.startswith("set_cy"):
        from set_cy import SparseMLP

        model = SparseMLP(layers, epsilon=eps, dropout=drop, seed=seed, n_threads=1 if method == "set_cy_1t" else None)
        rec["build_s"] = time.perf_counter() - t0
        hist = model.fit(X, y, epochs=E, batch_size=B, learning_rate=lr, momentum=mu, weight_decay=wd,
                         zeta=zeta, new_weights="zeros", verbose=0)
        epoch_s = [h["train_time"] for h in hist]
        evo_s = [h["evolution_time"] for h in hist[:-1]]
        train_acc = [h["train_accuracy"] for h in hist]
        rec["threads"] = model.n_threads
        rec["connections"] = model.n_connections
        predict = model.predict
    else:
        from _baselines import DenseMLP, ScipySETMLP, TorchMaskMLP

        if method == "scipy_set":
            model = ScipySETMLP(layers, epsilon=eps, dropout=drop, seed=seed)
            Xf, yf, predict = X, y, model.predict
            rec["threads"] = 1  # scipy.sparse products and einsum run on one thread
        elif method == "dense_numpy":
            model = DenseMLP(layers, dropout=drop, seed=seed)
            Xf, yf, predict = X, y, model.predict
            rec["threads"] = blas_threads()
        else:
            import torch

            nt = 1 if method == "torch_mask_1t" else None
            model = TorchMaskMLP(layers, epsilon=eps, dropout=drop, seed=seed, n_threads=nt, lr=lr,
                                 momentum=mu, weight_decay=wd)
            Xf, yf = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
            rec["threads"] = torch.get_num_threads()

            def predict(A):
                return model.predict(torch.from_numpy(A))
        rec["build_s"] = time.perf_counter() - t0
        rec["connections"] = model.n_connections
        for e in range(E):
            t1 = time.perf_counter()
            _, acc = model.fit_epoch(Xf, yf, B, lr, mu, wd)
            epoch_s.append(time.perf_counter() - t1)
            train_acc.append(acc)
            if e < E - 1 and method != "dense_numpy":
                t1 = time.perf_counter()
                model.evolve(zeta)
                evo_s.append(time.perf_counter() - t1)
        rec["connections_end"] = model.n_connections
    n_batches = -(-X.shape[0] // B)
    t_epoch = epoch_s[-1] if spec.get("timed") == "last" else float(np.median(epoch_s))
    rec.update(epoch_s=epoch_s, epoch_median_s=t_epoch, batch_s=t_epoch / n_batches, epochs=E, n_batches=n_batches,
               n_train=int(X.shape[0]),
               evolution_s=float(np.mean(evo_s)) if evo_s else None, train_accuracy=train_acc)
    if Xt is not None:
        rec["test_accuracy"] = float(np.mean(predict(Xt) == yt))
    rec["train_peak_rss"] = max(watch["peak"], proc.memory_info().rss)
    rec["peak_rss"] = peak_rss_bytes()
    return rec


# ------------------------------------------------------------------------------------------------
# parent
# ------------------------------------------------------------------------------------------------
def torch_available():
    try:
        import importlib.util
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def available_bytes():
    import psutil
    return int(psutil.virtual_memory().available)


def launch(method, spec, args):
    """Run one child; returns its record, or a record saying why it did not run or did not finish."""
    base = dict(method=method, workload=spec["workload"], width=spec.get("width"), layers=spec["layers"],
                neurons=int(sum(spec["layers"])), predicted_bytes=predict_bytes(method, spec))
    if method.startswith("torch_mask") and not torch_available():
        return dict(base, status="skipped: torch not installed")
    limit = min(args.mem_limit_gb * 2**30, 0.8 * available_bytes())
    if base["predicted_bytes"] > limit:
        return dict(base, status=f"skipped: needs {base['predicted_bytes'] / 1e9:.1f} GB "
                                 f"(limit {limit / 1e9:.1f} GB)")
    hard = int(min(args.hard_limit_gb * 2**30, max(limit, 1.0 * available_bytes())))
    payload = json.dumps(dict(method=method, spec=spec, seed=args.seed, hard_limit=hard))
    t0 = time.perf_counter()
    try:
        res = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", payload],
                             capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return dict(base, status=f"timeout after {args.timeout:.0f} s")
    wall = time.perf_counter() - t0
    for line in res.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return dict(base, status="ok", wall_s=wall, **json.loads(line[7:]))
    tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
    return dict(base, status=f"failed (exit {res.returncode}): {' | '.join(tail)}", wall_s=wall)


def fmt_s(x):
    return "-" if x is None else (f"{x:.3g} s" if x >= 0.1 else f"{x * 1e3:.3g} ms")


def fmt_gb(x):
    return "-" if x is None else f"{x / 1e9:.2f} GB"


def print_table(recs, workload):
    rows = [r for r in recs if r["workload"] == workload]
    if not rows:
        return
    print(f"\n## {workload}: {rows[0]['layers']}")
    if workload == "sweep":
        print("| N | neurons | method | s per batch (2nd epoch) | peak RSS in training | predicted | status |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['width']} | {r['neurons']:,} | {r['method']} | {fmt_s(r.get('batch_s'))} | "
                  f"{fmt_gb(r.get('train_peak_rss'))} | {fmt_gb(r['predicted_bytes'])} | {r['status']} |")
        return
    ref = {r["method"]: r for r in rows if r["status"] == "ok"}
    base = ref.get("set_cy", {}).get("epoch_median_s")
    print("| method | threads | connections | epochs | s per epoch (median) | vs set_cy | evolution | "
          "peak RSS in training | RSS after data | peak RSS (with loading) | test acc | status |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r.get("epoch_median_s")
        ratio = f"{t / base:.1f}x" if (t and base) else "-"
        acc = r.get("test_accuracy")
        print(f"| {r['method']} | {r.get('threads', '-')} | {r.get('connections', '-'):,} | {r.get('epochs')} | "
              f"{fmt_s(t)} | {ratio} | {fmt_s(r.get('evolution_s'))} | {fmt_gb(r.get('train_peak_rss'))} | "
              f"{fmt_gb(r.get('rss_after_data'))} | "
              f"{fmt_gb(r.get('peak_rss'))} | "
              f"{'-' if acc is None else f'{acc:.3f}'} | {r['status']} |"
              if isinstance(r.get("connections"), int) else
              f"| {r['method']} | - | - | - | - | - | - | - | - | - | - | {r['status']} |")


def check_targets(recs):
    """The issue's targets, each with the measured figure and met / not met."""
    out = []
    for wl in ("fmnist", "leukemia"):
        ok = {r["method"]: r for r in recs if r["workload"] == wl and r["status"] == "ok"}
        if "set_cy" in ok and "scipy_set" in ok:
            s = ok["scipy_set"]["epoch_median_s"] / ok["set_cy"]["epoch_median_s"]
            out.append(dict(target=f"{wl}: set_cy >= 25x the SciPy SET baseline per epoch",
                            measured=f"{s:.1f}x", met=bool(s >= 25)))
    ok = {r["method"]: r for r in recs if r["workload"] == "fmnist" and r["status"] == "ok"}
    if "set_cy" in ok and "torch_mask" in ok:
        s = ok["torch_mask"]["epoch_median_s"] / ok["set_cy"]["epoch_median_s"]
        out.append(dict(target="fmnist: set_cy faster than the PyTorch mask MLP (eps=20)",
                        measured=f"{s:.1f}x", met=bool(s > 1)))
    return out


def plot_sweep(recs, path):
    rows = [r for r in recs if r["workload"] == "sweep"]
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, m in enumerate(sorted({r["method"] for r in rows}, key=METHODS.index)):
        mr = [r for r in rows if r["method"] == m]
        ok = [r for r in mr if r["status"] == "ok"]
        sk = [r for r in mr if r["status"].startswith("skipped: needs")]
        c = f"C{i}"
        if ok:
            ax1.plot([r["neurons"] for r in ok], [r["batch_s"] for r in ok], "o-", color=c, label=m)
            ax2.plot([r["neurons"] for r in ok], [r["train_peak_rss"] / 1e9 for r in ok], "o-", color=c, label=m)
        if sk:
            ax2.plot([r["neurons"] for r in sk], [r["predicted_bytes"] / 1e9 for r in sk], "x", color=c,
                     markersize=9, label=f"{m}: skipped (predicted)")
    ax1.set(xscale="log", yscale="log", xlabel="neurons (1000-N-N-N-10)", ylabel="s per batch of 128",
            title="training time")
    ax2.set(xscale="log", yscale="log", xlabel="neurons (1000-N-N-N-10)", ylabel="peak RSS (GB)",
            title="peak RSS (x: predicted need, not run)")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=7)
    ax1.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        c = json.loads(args.child)
        rec = run_child(c["method"], c["spec"], c["seed"], c["hard_limit"])
        print("RESULT " + json.dumps(rec), flush=True)
        return 0
    info = machine_info()
    load_start = load_average()
    print(f"# {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB; load {load_start}; "
          f"commit {git_commit()}")
    recs = []
    for spec in workload_specs(args):
        key = "batch_s" if spec["workload"] == "sweep" else "epoch_median_s"
        runs = {}
        for rep in range(max(1, args.repeats)):
            for m in args.methods:
                if spec["workload"] == "sweep" and m in ("set_cy_1t", "torch_mask_1t"):
                    continue
                if rep and runs[m][0]["status"] != "ok":
                    continue  # skipped or failed: not worth repeating
                r = launch(m, spec, args)
                runs.setdefault(m, []).append(r)
                print(f"{spec['workload']:8s} {spec.get('width') or ''!s:>6s} {m:14s} {fmt_s(r.get(key)):>10s} "
                      f"{fmt_gb(r.get('train_peak_rss')):>9s}  {r['status']}"
                      + (f"  (run {rep + 1})" if args.repeats > 1 else ""), flush=True)
        for m, rs in runs.items():
            ok = [q for q in rs if q["status"] == "ok" and q.get(key) is not None]
            best = dict(min(ok, key=lambda q: q[key]) if ok else rs[0])
            best["runs_" + key] = [q.get(key) for q in rs]
            recs.append(best)
    for wl in ("fmnist", "leukemia", "sweep"):
        print_table(recs, wl)
    targets = check_targets(recs)
    print()
    for t in targets:
        print(f"target: {t['target']}: {t['measured']} -> {'met' if t['met'] else 'NOT met'}")
    plot = plot_sweep(recs, args.plot)
    if plot:
        print(f"plot: {plot}")
    out = dict(command=" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]), commit=git_commit(),
               machine=info, loadavg_start=load_start, loadavg_end=load_average(), args=vars(args),
               recipe=RECIPE, records=recs, targets=targets)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=1)
    print(f"saved {args.out}; load average at the end {out['loadavg_end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
