"""Dynamic sparse training rules side by side (issue 26): accuracy on Fashion-MNIST / MNIST, and the cost
of an evolution step on the 1 M-neuron network of the main job.

Accuracy (``--accuracy``): ``SparseMLP`` 784-1000-1000-1000-10 at epsilon 20, trained with the same recipe
for every rule, ``--epochs`` epochs, ``--seeds`` seeds, test accuracy mean and std per rule:

- ``static``: no evolution (zeta = 0), the static sparse network of the same density;
- ``set``: SET (signed magnitude drop, random growth), the default;
- ``gradient``: signed magnitude drop, gradient growth on ``10 x`` sampled candidates (RigL's criterion);
- ``momentum+gradient``: momentum-magnitude drop, gradient growth;
- ``gradient-drop+gradient``: drop by gradient magnitude at the connections, gradient growth;
- ``gradient+rigl-schedule``, ``set+rigl-schedule``: gradient or random growth on RigL's schedule, an
  update every 100 steps with zeta decayed by a cosine and none in the last quarter of training;
  ``gradient3+...``, ``gradient30+...``, ``gradient50+...``: 3, 30 or 50 candidates per grown connection;
- ``magnitude+gradient+rigl-schedule``: RigL's rule (magnitude drop, gradient growth, its schedule);
- ``granet``: GraNet-like: its gradual density change (built at epsilon 40 and pruned to epsilon 20's
  connections over the updates of RigL's schedule) and gradient growth, but SET's signed drop (GraNet drops
  by magnitude).

``--holdout N`` scores on ``N`` training images held out (a fixed draw) and trains on the rest, so that a
setting can be chosen without looking at the test set.

Cost (``--cost``): ``python -m set_cy.train --neurons 1000000 --epochs 2`` once per grow rule, each in its
own process; from each run's ``--report``: the evolution step's seconds, the epoch's seconds and the peak
RSS, and the ratios against SET's. Then one hidden layer of that network alone: SET's step, gradient
growth's choice of positions, and the floor of that choice, the SDDMM at all its candidates
(``--layer-only``: that part alone).

    python bench/bench_rules.py --accuracy --dataset fashion-mnist --epochs 100 --seeds 3 \
        --out bench/results/rules_fmnist.json
    python bench/bench_rules.py --cost --out bench/results/rules_cost.json
    python bench/bench_rules.py --table bench/results/rules_fashion-mnist.json bench/results/rules_mnist.json
"""
import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from _common import load_average, machine_info, save_report

# RigL's schedule: an update every 100 steps, zeta decayed by a cosine, none in the last quarter
RIGL_SCHEDULE = dict(update_every=100, zeta_schedule="cosine", update_end=0.75)
RULES = {
    "static": dict(zeta=0.0),
    "set": dict(),
    "gradient": dict(grow="gradient", grow_candidates=10),
    "momentum+gradient": dict(criterion="momentum", grow="gradient", grow_candidates=10),
    "gradient-drop+gradient": dict(criterion="gradient", grow="gradient", grow_candidates=10),
    "gradient+rigl-schedule": dict(grow="gradient", grow_candidates=10, **RIGL_SCHEDULE),
    "set+rigl-schedule": dict(RIGL_SCHEDULE),
    **{f"gradient{m}+rigl-schedule": dict(grow="gradient", grow_candidates=m, **RIGL_SCHEDULE) for m in (3, 30, 50)},
    "magnitude+gradient+rigl-schedule": dict(criterion="magnitude", grow="gradient", grow_candidates=10,
                                             **RIGL_SCHEDULE),
    # GraNet-like (SET's signed drop, not GraNet's magnitude): built at twice the connections (epsilon 40),
    # pruned to epsilon 20's along the cubic schedule;
    # the output layer (1000 x 10, all cells at either epsilon) is left out of evolution so it stays whole
    "granet": dict(epsilon=40, final_fraction=0.5, evolve_output=False, grow="gradient", grow_candidates=10,
                   **RIGL_SCHEDULE),
}


def rule_settings(name, epsilon=20):
    """``(epsilon, fit keywords)`` of rule ``name``: a rule may name the network's epsilon, the rest go to
    ``fit``."""
    settings = dict(RULES[name])
    return settings.pop("epsilon", epsilon), settings


def run_accuracy(dataset, epochs, seeds, rules, batch_size, lr, holdout=0):
    """Train every rule; ``holdout > 0``: on the training images less ``holdout`` of them (drawn with a fixed
    seed), scored on those, so that a setting can be chosen without the test set."""
    from set_cy import SparseMLP
    from set_cy.datasets import load_dataset

    data = load_dataset(dataset)
    if holdout:
        perm = np.random.default_rng(0).permutation(data.X_train.shape[0])
        val, fit = perm[:holdout], perm[holdout:]
        data = dataclasses.replace(data, X_test=data.X_train[val], y_test=data.y_train[val],
                             X_train=data.X_train[fit], y_train=data.y_train[fit])
    rows = []
    for name in rules:
        accs, evo, ep = [], [], []
        epsilon, settings = rule_settings(name)
        for seed in range(seeds):
            t0 = time.perf_counter()
            model = SparseMLP([data.n_features, 1000, 1000, 1000, data.n_classes], epsilon=epsilon, seed=seed)
            model.fit(data.X_train, data.y_train, epochs=epochs, batch_size=batch_size, learning_rate=lr, verbose=0,
                      validation_data=(data.X_test, data.y_test), **settings)
            accs.append(model.history_[-1]["val_accuracy"])
            evo.append(float(np.mean([h["evolution_time"] for h in model.history_[:-1]])) if epochs > 1 else 0.0)
            ep.append(float(np.mean([h["epoch_time"] for h in model.history_])))
            print(f"{dataset} {name} seed {seed}: {'held-out' if holdout else 'test'} accuracy {accs[-1]:.4f} "
                  f"({time.perf_counter() - t0:.0f} s, epoch {ep[-1]:.2f} s, evolution {evo[-1]:.3f} s)", flush=True)
        rows.append(dict(rule=name, settings=RULES[name], accuracy=accs, mean=float(np.mean(accs)),
                         std=float(np.std(accs)), evolution_seconds=float(np.mean(evo)),
                         epoch_seconds=float(np.mean(ep))))
    return rows


def accuracy_table(rows, dataset, epochs, seeds, holdout=0):
    scored = f"accuracy on {holdout} held-out training images" if holdout else "test accuracy"
    lines = [f"{dataset}, 784-1000-1000-1000-10, epsilon 20, {epochs} epochs, {seeds} seed(s):", "",
             f"| rule | {scored} (mean ± std) | epoch (s) | evolution step (s) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['rule']} | {r['mean']:.4f} ± {r['std']:.4f} | {r['epoch_seconds']:.2f} | "
                     f"{r['evolution_seconds']:.3f} |")
    by = {r["rule"]: r["mean"] for r in rows}
    if "set" in by:
        for name in by:
            if name != "set":
                lines.append(f"\n{name} - set: {by[name] - by['set']:+.4f}")
    return "\n".join(lines)


def run_cost(neurons, epochs, candidates):
    results = []
    with tempfile.TemporaryDirectory(prefix="set_cy_rules_") as tmp:
        for name, extra in (("set", []), ("gradient", ["--grow", "gradient", "--grow-candidates", str(candidates)])):
            report = os.path.join(tmp, f"{name}.json")
            cmd = [sys.executable, "-m", "set_cy.train", "--neurons", str(neurons), "--epochs", str(epochs), "--quiet",
                   "--report", report, "--save", os.path.join(tmp, f"{name}.npz"), *extra]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            with open(report) as fh:
                rep = json.load(fh)
            evo = [e["evolution_time"] for e in rep["epochs"][:-1]]
            results.append(dict(rule=name, command=" ".join(cmd[1:]), seconds=time.perf_counter() - t0,
                                evolution_seconds=evo, train_seconds=[e["train_time"] for e in rep["epochs"]],
                                epoch_seconds=[e["epoch_time"] for e in rep["epochs"]],
                                peak_rss=rep["peak_rss"], connections=rep["architecture"]["connections"]))
            print(f"{name}: evolution {evo} s, epochs {results[-1]['epoch_seconds']} s, peak RSS "
                  f"{rep['peak_rss'] / 2**30:.2f} GiB", flush=True)
    return results


def run_layer_floor(width, candidates, batch=32, zeta=0.3, seed=0):
    """One hidden layer of the main job's network (width x width, epsilon 20): SET's evolution step, gradient
    growth's choice of positions, and its floor, the SDDMM at ``candidates x grown`` random positions."""
    from set_cy.evolution import GradientGrowth, RandomGrowth
    from set_cy.layers import SparseLayer
    from set_cy.patterns import drop_entries, random_positions

    rng = np.random.default_rng(seed)
    layer = SparseLayer.random(width, width, 20 * 2 * width, rng, n_threads=os.cpu_count())
    X = rng.standard_normal((width, batch), dtype=np.float32)
    dY = rng.standard_normal((width, batch), dtype=np.float32)
    score = layer.scorer(dY, X)
    keep = layer.drop_mask(zeta, rng, "signed")
    k = layer.nnz - int(np.count_nonzero(keep))
    kept = drop_entries(layer.indptr, layer.indices, keep, layer.n_threads)
    out = {"width": width, "nnz": layer.nnz, "grown": k, "candidates": candidates, "batch": batch}
    t0 = time.perf_counter()
    layer.grow_checked(RandomGrowth(), rng, k, kept)
    out["random_growth_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    layer.grow_checked(GradientGrowth(candidates), rng, k, kept, score=score)
    out["gradient_growth_seconds"] = time.perf_counter() - t0
    positions = random_positions(rng, width, width, candidates * k, index_dtype=layer.indices.dtype)
    t0 = time.perf_counter()
    score(*positions)
    out["sddmm_at_candidates_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    layer.evolve(zeta, rng, new_weights="zeros")
    out["set_step_seconds"] = time.perf_counter() - t0
    print(f"one {width:,} x {width:,} layer ({layer.nnz:,} connections, {k:,} grown): SET's step "
          f"{out['set_step_seconds']:.2f} s (its random growth {out['random_growth_seconds']:.2f} s); gradient "
          f"growth's choice {out['gradient_growth_seconds']:.2f} s, of which the floor, the SDDMM at "
          f"{candidates * k:,} candidates over batch {batch}: {out['sddmm_at_candidates_seconds']:.2f} s", flush=True)
    return out


def cost_table(results):
    base = results[0]
    lines = ["| rule | evolution step (s) | first epoch incl. its step (s) | peak RSS (GiB) |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['rule']} | {np.mean(r['evolution_seconds']):.2f} | {r['epoch_seconds'][0]:.1f} | "
                     f"{r['peak_rss'] / 2**30:.2f} |")
    for r in results[1:]:
        step = np.mean(r["evolution_seconds"]) / np.mean(base["evolution_seconds"])
        lines.append(f"\n{r['rule']} / set: evolution step {step:.2f}x, "
                     f"epoch {r['epoch_seconds'][0] / base['epoch_seconds'][0]:.3f}x, peak RSS "
                     f"{r['peak_rss'] / base['peak_rss']:.3f}x")
    return "\n".join(lines)


def merged_table(paths):
    """One table of every rule in the ``--accuracy`` reports ``paths``: a row per rule (in :data:`RULES`'
    order), a column per data set (held-out scores apart), ``mean ± std`` of the seeds, and the difference
    to ``set``'s row where the same column has one. A rule and column found in two files is an error."""
    cells, columns = {}, []
    for path in paths:
        with open(path) as fh:
            acc = json.load(fh).get("accuracy")
        if acc is None:
            raise ValueError(f"{path} is not an --accuracy report (no 'accuracy' part); --table merges those only")
        column = f"{acc['dataset']} ({acc['holdout']} held out)" if acc.get("holdout") else acc["dataset"]
        column += f", {acc['epochs']} epochs, {acc['seeds']} seeds"
        if column not in columns:
            columns.append(column)
        for row in acc["rows"]:
            if (row["rule"], column) in cells:
                raise ValueError(f"{path}: {row['rule']} in {column} is in two of the files")
            cells[row["rule"], column] = row
    order = {name: i for i, name in enumerate(RULES)}
    rules = sorted({rule for rule, _ in cells}, key=lambda r: (order.get(r, len(order)), r))
    lines = ["| rule | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for rule in rules:
        out = []
        for column in columns:
            row = cells.get((rule, column))
            if row is None:
                out.append("-")
                continue
            text = f"{row['mean']:.4f} ± {row['std']:.4f}"
            base = cells.get(("set", column))
            if base is not None and rule != "set":
                text += f" ({row['mean'] - base['mean']:+.4f})"
            out.append(text)
        lines.append(f"| {rule} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--accuracy", action="store_true", help="train every rule and compare test accuracy")
    p.add_argument("--cost", action="store_true", help="time an evolution step of every grow rule at 1 M neurons")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rules", default=",".join(RULES), help=f"comma-separated, of {', '.join(RULES)}")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--holdout", type=int, default=0,
                   help="--accuracy: score on this many held-out training images (not the test set)")
    p.add_argument("--neurons", type=int, default=1_000_000)
    p.add_argument("--cost-epochs", type=int, default=2)
    p.add_argument("--candidates", type=int, default=10)
    p.add_argument("--layer-width", type=int, default=315_102, help="--cost: the hidden width of the one-layer timing")
    p.add_argument("--layer-only", action="store_true", help="--cost: only the one-layer timing")
    p.add_argument("--out", default=None, help="JSON report")
    p.add_argument("--table", nargs="+", default=None, metavar="JSON",
                   help="print one table of the --accuracy reports given (a column per data set, in brackets "
                        "the difference to set's row) and stop")
    args = p.parse_args(argv)
    if args.table:
        try:
            print(merged_table(args.table))
        except ValueError as exc:
            p.error(str(exc))
        return 0
    if not (args.accuracy or args.cost):
        p.error("give --accuracy, --cost, both, or --table")
    started, load0, machine = time.perf_counter(), load_average(), machine_info()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gb']} GB", flush=True)
    fields = {}
    if args.accuracy:
        rules = args.rules.split(",")
        unknown = sorted(set(rules) - set(RULES))
        if unknown:
            p.error(f"unknown rules {unknown}")
        rows = run_accuracy(args.dataset, args.epochs, args.seeds, rules, args.batch_size, args.lr, args.holdout)
        print(accuracy_table(rows, args.dataset, args.epochs, args.seeds, args.holdout))
        fields["accuracy"] = dict(dataset=args.dataset, epochs=args.epochs, seeds=args.seeds, holdout=args.holdout,
                                  rows=rows)
    if args.cost and args.layer_only:
        fields["layer"] = run_layer_floor(args.layer_width, args.candidates)
    elif args.cost:
        results = run_cost(args.neurons, args.cost_epochs, args.candidates)
        print(cost_table(results))
        fields["cost"] = results
        fields["layer"] = run_layer_floor(args.layer_width, args.candidates)
    if args.out:
        save_report(args.out, started, machine, load0, args=vars(args), **fields)
    return 0


if __name__ == "__main__":
    sys.exit(main())
