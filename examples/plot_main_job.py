"""
The main job: loss, accuracy and memory over time
=================================================

``python -m set_cy.train`` trains a truly sparse MLP of a given number of neurons and, with
``--report``, writes what it measured: the loss and accuracies of every epoch and the resident memory
sampled by :class:`set_cy.monitor.MemoryMonitor` while it ran. This example runs the same command in
the process, on a network and data set small enough for the documentation build, and draws the report.

The main job itself is ``python -m set_cy.train --neurons 1000000``: set ``NEURONS = 1_000_000`` and
``SMALL = []`` below to draw its report (about 30 s per epoch on a 2-core laptop).
"""
import json
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np

from set_cy.train import main

NEURONS = 30_000
SMALL = ["--samples", "400", "--features", "2000", "--classes", "6"]  # the default data set is 2096 x 54675

tmp = tempfile.mkdtemp(prefix="set_cy_gallery_")
report_path = os.path.join(tmp, "run.json")
status = main(["--neurons", str(NEURONS), *SMALL, "--epochs", "6", "--seed", "0", "--quiet",
               "--report", report_path, "--save", os.path.join(tmp, "checkpoint.npz")])
assert status == 0, status
with open(report_path) as fh:
    report = json.load(fh)

arch = report["architecture"]
print(f"{arch['neurons']:,} neurons ({'-'.join(map(str, arch['layer_sizes']))}), "
      f"{arch['connections']:,} connections, peak RSS {report['peak_rss'] / 2**20:.0f} MiB")

# %%
# Loss and accuracy per epoch, and resident memory over the whole run
# -------------------------------------------------------------------
# The memory curve starts with the interpreter and the data, rises while the layers are built, and
# stays flat during training: evolution rewrites each layer in place, so the parameter count and the
# memory do not grow.
epochs = report["epochs"]
x = [e["epoch"] for e in epochs]
series = report["memory"]["series"]
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
axes[0].plot(x, [e["loss"] for e in epochs], marker="o")
axes[0].set(xlabel="epoch", ylabel="training loss", title="loss")
axes[1].plot(x, [e["train_accuracy"] for e in epochs], marker="o", label="train (with dropout)")
axes[1].plot(x, [e["val_accuracy"] for e in epochs], marker="s", label="test")
axes[1].set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
axes[1].legend()
axes[2].plot(series["time"], np.asarray(series["rss"]) / 2**20)
for mark in report["memory"]["marks"]:
    axes[2].axvline(mark["time"], color="0.8", lw=0.8)
axes[2].set(xlabel="seconds", ylabel="RSS (MiB)", title="resident memory (phases: grey lines)")
fig.tight_layout()
plt.show()
