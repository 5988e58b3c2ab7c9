"""The main job: ``python -m set_cy.train`` trains a truly sparse MLP of a given number of neurons.

Examples
--------
One million neurons on the embedded synthetic microarray-shaped data set (no files needed)::

    python -m set_cy.train --neurons 1000000

The reference's laptop record (1.8 M neurons, lung-shaped data)::

    python -m set_cy.train --dataset synthetic --samples 203 --features 3312 --classes 5 \\
        --layers 3312,600000,600000,600000,5 --epsilon 20 --batch-size 2

Ctrl-C saves an atomic checkpoint at a batch boundary; ``--resume PATH`` continues it exactly.
"""
import argparse
import json
import logging
import os
import platform
import sys
import time

import numpy as np

from . import __version__, openmp_enabled
from ._validation import resolve_n_threads
from .activations import ACTIVATIONS
from .evolution import CRITERIA, GROW_RULES, SCHEDULES
from .model import LR_SCALINGS
from .monitor import MemoryMonitor, format_bytes, system_memory
from .parallel import BACKENDS, ParallelFitError
from .sizing import STORAGES, check_activation_dtype, estimate_memory
from .trainer import Callback, SparseMLP

__all__ = ["main", "build_parser", "hidden_layer_sizes"]

logger = logging.getLogger("set_cy")

DEFAULT_CHECKPOINT = "set_cy_checkpoint.npz"
# options that define the run and are restored from a checkpoint by --resume
RUN_OPTIONS = ("neurons", "layers", "hidden_layers", "dataset", "data_dir", "samples", "features", "classes",
               "batch_size", "epsilon", "zeta", "zeta_schedule", "lr", "momentum", "weight_decay", "dropout",
               "activation", "init", "dtype", "seed", "epochs", "criterion", "new_weights", "lr_scaling", "grow",
               "grow_candidates", "update_every", "update_end", "final_fraction", "prune_neurons", "prune_every",
               "min_neurons")


def hidden_layer_sizes(n_neurons, n_in, n_out, n_hidden):
    """Hidden widths whose sum with ``n_in`` and ``n_out`` is exactly ``n_neurons``.

    The first ``remainder`` hidden layers get one neuron more than the others.
    """
    spare = n_neurons - n_in - n_out
    if n_hidden < 1:
        raise ValueError(f"--hidden-layers must be >= 1, got {n_hidden}")
    if spare < n_hidden:
        raise ValueError(f"--neurons {n_neurons:,} is too small for this dataset: input ({n_in:,}) + output "
                         f"({n_out:,}) + at least one neuron per hidden layer ({n_hidden}) = "
                         f"{n_in + n_out + n_hidden:,}")
    width, rem = divmod(spare, n_hidden)
    return [width + (1 if i < rem else 0) for i in range(n_hidden)]


def _positive_int(text):
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _layers(text):
    try:
        sizes = [int(s) for s in text.replace("_", "").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 3312,1000,5, got {text!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected at least two positive sizes, got {text!r}")
    return sizes


def _bytes(text):
    units = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
    t = text.strip().upper()
    num = t.rstrip("KMGTB")
    try:
        return int(float(num) * units[t[len(num):]])
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a size like 4GB or 512MB, got {text!r}") from None


def build_parser():
    """The ``argparse`` parser of ``python -m set_cy.train`` (``--help`` prints every option)."""
    p = argparse.ArgumentParser(
        prog="python -m set_cy.train",
        description="Train a truly sparse MLP with Sparse Evolutionary Training and report time and memory.")
    arch = p.add_argument_group("architecture")
    arch.add_argument("--neurons", type=_positive_int, default=None,
                      help="total neurons, input + hidden + output, as the SET paper counts them "
                           "(default 1,000,000 unless --layers is given)")
    arch.add_argument("--hidden-layers", type=_positive_int, default=3, help="hidden layers for --neurons (3)")
    arch.add_argument("--layers", type=_layers, default=None,
                      help="explicit sizes, input and output included, e.g. 3312,600000,600000,600000,5")
    arch.add_argument("--epsilon", type=float, default=20.0, help="ER sparsity: eps*(n_in+n_out) connections (20)")
    arch.add_argument("--activation", choices=ACTIVATIONS, default="relu")
    arch.add_argument("--init", choices=("he_uniform", "xavier", "normal"), default="he_uniform")
    arch.add_argument("--dropout", type=float, default=0.3)
    arch.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    arch.add_argument("--storage", choices=STORAGES, default="full",
                      help="full (default): 20 bytes per connection (float32), the fastest backward product; "
                           "compact: no transposed index, 12 bytes per connection, the backward product "
                           "scatters (slower); needs --backend openmp")
    arch.add_argument("--activation-dtype", choices=("float32", "bfloat16"), default=None,
                      help="what the sparse products gather the hidden activations and their gradients from: "
                           "the network's --dtype (default: exact), or bfloat16 copies (half the bytes per "
                           "gathered row, float32 arithmetic; --dtype float32 only)")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default="synthetic",
                      help="synthetic (default, embedded), a dataset name (see data/README.md) or a file path")
    data.add_argument("--data-dir", default=None, help="where datasets live (default: $SET_CY_DATA, ./data)")
    data.add_argument("--samples", type=_positive_int, default=None, help="synthetic: samples (2096)")
    data.add_argument("--features", type=_positive_int, default=None, help="synthetic: features (54675)")
    data.add_argument("--classes", type=_positive_int, default=None, help="synthetic: classes (18)")
    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=_positive_int, default=10)
    train.add_argument("--batch-size", type=_positive_int, default=32,
                       help="samples per step (32: the few-sample default data set gets 44 steps per epoch)")
    train.add_argument("--lr", type=float, default=0.01, help="learning rate (0.01)")
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--weight-decay", type=float, default=2e-4)
    train.add_argument("--zeta", type=float, default=0.3, help="fraction of connections replaced per epoch")
    train.add_argument("--zeta-schedule", choices=SCHEDULES, default="constant")
    train.add_argument("--criterion", "--drop", choices=CRITERIA, default="signed",
                       help="what evolution removes (the drop rule): signed magnitude (SET), magnitude, momentum "
                            "magnitude, or gradient magnitude over one batch")
    train.add_argument("--grow", choices=GROW_RULES, default="random",
                       help="where evolution grows: random (SET) or gradient (the largest |dL/dW| among "
                            "--grow-candidates x as many sampled free positions, over one batch)")
    train.add_argument("--grow-candidates", type=_positive_int, default=10,
                       help="sampled positions per new connection for --grow gradient (10)")
    train.add_argument("--update-every", type=_positive_int, default=None,
                       help="evolve every N mini-batches instead of after every epoch (RigL's delta T)")
    train.add_argument("--update-end", type=float, default=1.0,
                       help="with --update-every: no evolution after this fraction of the steps (1.0)")
    train.add_argument("--final-fraction", type=float, default=1.0,
                       help="gradual density change (GraNet): each layer ends the fit with this fraction of its "
                            "starting connections, removed on a cubic schedule by the evolution steps (1.0: none)")
    train.add_argument("--prune-neurons", type=float, default=0.0,
                       help="importance pruning: every --prune-every epochs remove this fraction of each hidden "
                            "layer's weakest neurons (their connections regrow elsewhere; 0: off)")
    train.add_argument("--prune-every", type=_positive_int, default=5, help="epochs between neuron pruning steps (5)")
    train.add_argument("--min-neurons", type=_positive_int, default=1,
                       help="the fewest neurons neuron pruning leaves in a hidden layer (1)")
    train.add_argument("--new-weights", choices=("init", "zeros"), default="zeros",
                       help="values of regrown connections: zero (default; regrowing at the init scale "
                            "inflated the loss of the very wide default networks) or the init distribution")
    train.add_argument("--lr-scaling", choices=LR_SCALINGS, default="fan_in",
                       help="per-layer learning rate: fan_in slows layers with very many inputs per neuron "
                            "(default; see SparseNetwork)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--n-threads", type=_positive_int, default=None, help="OpenMP threads (all cores)")
    par = p.add_argument_group("parallelism")
    par.add_argument("--backend", choices=BACKENDS, default="openmp",
                     help="openmp: kernels split over threads (default, fastest on one machine); threads / "
                          "processes: each mini-batch split over --n-jobs joblib workers, gradients merged; "
                          "dask: local SGD rounds on a dask.distributed cluster")
    par.add_argument("--n-jobs", type=_positive_int, default=None,
                     help="workers (threads for openmp); default: all cores, or the cluster's workers for dask")
    par.add_argument("--scheduler", default=None,
                     help="dask: scheduler address (default: a LocalCluster of --n-jobs processes on 127.0.0.1)")
    par.add_argument("--local-steps", type=_positive_int, default=None,
                     help="dask: mini-batches per worker between averagings (default: its whole shard, once per epoch)")
    out = p.add_argument_group("output")
    out.add_argument("--save", default=None, help="write the trained model (.npz) here; also the checkpoint "
                                                  f"path on Ctrl-C (default {DEFAULT_CHECKPOINT})")
    out.add_argument("--resume", default=None, help="continue the run saved in this checkpoint")
    out.add_argument("--report", default=None, help="write a JSON report here")
    out.add_argument("--plot-memory", default=None, help="write a PNG of memory over time (needs matplotlib)")
    out.add_argument("--max-memory", type=_bytes, default=None,
                     help="refuse runs whose estimate exceeds this (default: the available memory)")
    out.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    return p


class _Progress(Callback):
    """tqdm bar per epoch (only on a terminal), one summary line per epoch, memory phase marks."""

    def __init__(self, monitor, quiet, has_test):
        self.monitor, self.quiet, self.has_test = monitor, quiet, has_test
        self.bar = None
        self.use_bar = not quiet and sys.stderr.isatty()

    def on_epoch_begin(self, model, epoch, logs):
        self.monitor.mark(f"epoch {epoch + 1}")
        if self.use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=logs["n_batches"], desc=f"epoch {epoch + 1}/{logs['epochs']}", unit="batch",
                            leave=False, dynamic_ncols=True)

    def on_batch_end(self, model, batch, logs):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    def on_epoch_end(self, model, epoch, logs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        logs_peak = self.monitor.phase_peaks().get(f"epoch {epoch + 1}")
        if logs_peak is not None:
            model.history_[-1]["peak_rss"] = int(logs_peak)
        if self.quiet:
            return
        parts = [f"epoch {epoch + 1}/{logs['epochs']}", f"loss {logs['loss']:.4f}",
                 f"train acc {logs['train_accuracy']:.4f}"]
        if self.has_test:
            parts.append(f"test acc {logs['val_accuracy']:.4f}")
        parts.append(f"{logs['train_time']:.2f} s")
        if logs["evolution_time"]:
            parts.append(f"evolve {logs['evolution_time']:.2f} s")
        if logs_peak is not None:
            parts.append(f"peak RSS {format_bytes(logs_peak)}")
        print(" · ".join(parts), flush=True)

    def on_train_end(self, model, logs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_data(args):
    from .datasets import load_dataset

    synth = {k: getattr(args, k) for k in ("samples", "features", "classes") if getattr(args, k) is not None}
    if synth and args.dataset.lower() != "synthetic":
        raise SystemExit("error: --samples/--features/--classes only apply to --dataset synthetic")
    return load_dataset(args.dataset, dtype=args.dtype, seed=args.seed, data_dir=args.data_dir, **synth)


def _say(args, *msg):
    if not args.quiet:
        print(*msg, flush=True)


def main(argv=None):
    """Run the CLI; returns the process exit code (0 done, 130 interrupted with a checkpoint)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    checkpoint = None
    if args.resume:
        if not os.path.exists(args.resume):
            parser.error(f"--resume: no such file {args.resume!r}")
        checkpoint = SparseMLP.load(args.resume, n_threads=args.n_threads)
        saved = checkpoint.meta_.get("cli_args")
        if not saved:
            parser.error(f"--resume: {args.resume} was not written by python -m set_cy.train")
        typed = sys.argv[1:] if argv is None else argv  # what the user typed, from a shell or a caller
        given_epochs = args.epochs if any(a == "--epochs" or a.startswith("--epochs=") for a in typed) else None
        for k in RUN_OPTIONS:  # options newer than the checkpoint keep their defaults
            setattr(args, k, saved[k] if k in saved else parser.get_default(k))
        args.storage = checkpoint.storage  # the checkpoint's layers decide
        args.activation_dtype = checkpoint.activation_dtype
        if given_epochs is not None:
            args.epochs = given_epochs
        args.save = args.save or args.resume
    if args.neurons is not None and args.layers is not None:
        parser.error("give either --neurons or --layers, not both")
    if args.neurons is None and args.layers is None:
        args.neurons = 1_000_000
    for name, lo, hi in (("dropout", 0.0, 0.99), ("zeta", 0.0, 0.999), ("momentum", 0.0, 1.0)):
        if not lo <= getattr(args, name) <= hi:
            parser.error(f"--{name.replace('_', '-')} must be in [{lo}, {hi}]")
    if args.epsilon <= 0 or args.lr < 0 or args.weight_decay < 0:
        parser.error("--epsilon must be > 0, --lr and --weight-decay >= 0")
    if args.backend != "dask" and (args.scheduler or args.local_steps):
        parser.error("--scheduler and --local-steps apply to --backend dask only")
    if args.storage == "compact" and args.backend != "openmp":
        parser.error("--storage compact needs --backend openmp")
    try:
        args.activation_dtype = check_activation_dtype(args.activation_dtype, args.dtype)
    except ValueError as exc:
        parser.error(str(exc))
    n_threads = resolve_n_threads(args.n_threads)

    report = {"command": ["python", "-m", "set_cy.train"] + list(sys.argv[1:] if argv is None else argv),
              "config": {k: getattr(args, k) for k in sorted(vars(args))},
              "versions": {"set_cy": __version__, "numpy": np.__version__, "python": platform.python_version(),
                           "scipy": __import__("scipy").__version__},
              "hardware": {"cpu": _cpu_model(), "cores": os.cpu_count(), "threads_used": n_threads,
                           "openmp": openmp_enabled(), "ram_total": system_memory()["total"]},
              "status": "started"}
    monitor = MemoryMonitor(interval=0.1, initial_phase="data")
    monitor.start()
    try:
        return _run(args, parser, checkpoint, n_threads, report, monitor)
    finally:
        monitor.stop()
        report["memory"] = monitor.to_dict(max_points=1000)
        report["peak_rss"] = monitor.peak_rss
        if args.report:
            with open(args.report, "w") as fh:
                json.dump(report, fh, indent=1, default=_json_default)
            _say(args, f"report written to {args.report}")
        if args.plot_memory:
            monitor.plot(args.plot_memory, title="python -m set_cy.train: memory")
            _say(args, f"memory plot written to {args.plot_memory}")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _run(args, parser, checkpoint, n_threads, report, monitor):
    t0 = time.perf_counter()
    try:
        data = _load_data(args)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        parser.exit(2, f"error: {exc}\n")
    report["dataset"] = {"name": data.name, "n_train": data.n_train, "n_test": data.n_test,
                         "n_features": data.n_features, "n_classes": data.n_classes,
                         "load_time": time.perf_counter() - t0}
    if args.layers is not None:
        sizes = list(args.layers)
        if sizes[0] != data.n_features or sizes[-1] != data.n_classes:
            parser.error(f"--layers must start with the dataset's {data.n_features} features and end with its "
                         f"{data.n_classes} classes, got {sizes[0]} and {sizes[-1]}")
    else:
        try:
            hidden = hidden_layer_sizes(args.neurons, data.n_features, data.n_classes, args.hidden_layers)
        except ValueError as exc:
            parser.error(str(exc))
        sizes = [data.n_features] + hidden + [data.n_classes]

    est = estimate_memory(sizes, args.epsilon, args.batch_size, dtype=args.dtype, zeta=args.zeta,
                          storage=args.storage, activation_dtype=args.activation_dtype)
    data_bytes = data.X_train.nbytes + data.X_test.nbytes
    est_total = est["total"] + data_bytes
    if args.backend in ("threads", "processes"):
        # a gradient slot per worker; "processes" also copies weights and training data to shared memory
        n_jobs = args.n_jobs or n_threads
        est["parallel"] = n_jobs * est["connections"] * np.dtype(args.dtype).itemsize + (
            est["weights"] + data.X_train.nbytes if args.backend == "processes" else 0)
        est_total += est["parallel"]
    available = system_memory()["available"] + data_bytes  # the data is already loaded
    limit = args.max_memory if args.max_memory is not None else available
    report["architecture"] = {"layer_sizes": sizes, "neurons": int(sum(sizes)), "connections": est["connections"],
                              "storage": args.storage, "activation_dtype": args.activation_dtype or args.dtype}
    report["memory_estimate"] = {**est, "data": int(data_bytes), "total_with_data": int(est_total),
                                 "limit": int(limit)}
    _say(args, f"architecture {'-'.join(map(str, sizes))} · {sum(sizes):,} neurons · "
               f"{est['connections']:,} connections · {args.storage} storage"
               f"{' · bfloat16 gathered activations' if args.activation_dtype else ''} · estimated memory "
               f"{format_bytes(est_total)} "
               f"(weights {format_bytes(est['weights'])}, activations {format_bytes(est['activations'])}, "
               f"data {format_bytes(data_bytes)})")
    if est_total > limit:
        report["status"] = "refused"
        parser.exit(3, f"error: this run needs an estimated {format_bytes(est_total)} but only "
                       f"{format_bytes(limit)} is available; use a smaller --neurons, --epsilon or --batch-size\n")

    monitor.mark("build")
    t1 = time.perf_counter()
    if checkpoint is not None:
        model = checkpoint
        build_time = 0.0
    else:
        model = SparseMLP(sizes, epsilon=args.epsilon, activation=args.activation, dropout=args.dropout,
                          init=args.init, dtype=args.dtype, seed=args.seed, n_threads=n_threads,
                          lr_scaling=args.lr_scaling, storage=args.storage,
                          activation_dtype=args.activation_dtype)
        build_time = time.perf_counter() - t1
        model.meta_["cli_args"] = {k: getattr(args, k) for k in RUN_OPTIONS}
    report["build_time"] = build_time
    report["architecture"]["connections_per_layer"] = [layer.nnz for layer in model.layers]
    report["architecture"]["connections"] = model.n_connections
    _say(args, f"built in {build_time:.2f} s · {model.n_connections:,} connections · model "
               f"{format_bytes(model.nbytes)} · RSS {format_bytes(monitor.peak_rss or 0)} · "
               f"{n_threads} thread(s), OpenMP {'on' if openmp_enabled() else 'off'}")

    resume = checkpoint is not None and checkpoint.train_state_ is not None
    initial_epoch = 0 if resume or checkpoint is None else checkpoint.epochs_trained_
    if initial_epoch >= args.epochs:
        parser.error(f"the checkpoint has already trained {initial_epoch} epochs; pass --epochs > {initial_epoch}")
    progress = _Progress(monitor, args.quiet, data.n_test > 0)
    save_path = args.save or DEFAULT_CHECKPOINT
    try:
        model.fit(data.X_train, data.y_train, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                  momentum=args.momentum, weight_decay=args.weight_decay, zeta=args.zeta,
                  zeta_schedule=args.zeta_schedule, criterion=args.criterion, new_weights=args.new_weights,
                  grow=args.grow, grow_candidates=args.grow_candidates, update_every=args.update_every,
                  update_end=args.update_end, final_fraction=args.final_fraction, prune_neurons=args.prune_neurons,
                  prune_every=args.prune_every, min_neurons=args.min_neurons,
                  validation_data=(data.X_test, data.y_test) if data.n_test else None,
                  callbacks=[progress], verbose=0, initial_epoch=initial_epoch, resume=resume,
                  n_jobs=args.n_jobs, backend=args.backend, client=args.scheduler, local_steps=args.local_steps)
    except KeyboardInterrupt:
        monitor.mark("checkpoint")
        model.save(save_path)
        report["status"] = "interrupted"
        report["checkpoint"] = save_path
        report["epochs"] = list(model.history_)
        print(f"\ninterrupted: checkpoint saved to {save_path}; continue with "
              f"python -m set_cy.train --resume {save_path}", file=sys.stderr, flush=True)
        return 130
    except ParallelFitError as exc:  # the model is the one after the last completed step: keep it
        monitor.mark("checkpoint")
        model.save(save_path)
        report["status"] = "failed"
        report["error"] = str(exc)
        report["checkpoint"] = save_path
        report["epochs"] = list(model.history_)
        print(f"\nerror: {exc}\ncheckpoint saved to {save_path}; continue with "
              f"python -m set_cy.train --resume {save_path}", file=sys.stderr, flush=True)
        return 1
    report["epochs"] = list(model.history_)
    report["status"] = "completed"
    if data.n_test:
        report["test_accuracy"] = model.history_[-1]["val_accuracy"]
    if args.save:
        monitor.mark("save")
        model.save(args.save)
        _say(args, f"model saved to {args.save}")
    peak = monitor.peak_rss or 0
    times = [r["train_time"] for r in model.history_]
    _say(args, f"done · {model.n_neurons:,} neurons · {model.n_connections:,} connections · build {build_time:.2f} s"
               f" · mean epoch {np.mean(times):.2f} s · peak RSS {format_bytes(peak)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
