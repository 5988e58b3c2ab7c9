"""python -m set_cy.train: end to end on small settings, errors, refusal, interrupt and resume."""
import json
import os
import signal
import subprocess
import sys

import pytest

from set_cy import train
from set_cy.model import SparseNetwork

SMALL = ["--dataset", "synthetic", "--samples", "300", "--features", "500", "--classes", "5", "--neurons", "20000",
         "--epochs", "2", "--quiet"]


def test_end_to_end_report(tmp_path):
    report = tmp_path / "r.json"
    assert train.main(SMALL + ["--report", str(report), "--save", str(tmp_path / "m.npz")]) == 0
    r = json.loads(report.read_text())
    assert r["status"] == "completed"
    assert r["architecture"]["neurons"] == 20000 and sum(r["architecture"]["layer_sizes"]) == 20000
    assert r["architecture"]["layer_sizes"][0] == 500 and r["architecture"]["layer_sizes"][-1] == 5
    assert sum(r["architecture"]["connections_per_layer"]) == r["architecture"]["connections"]
    assert len(r["epochs"]) == 2
    for e in r["epochs"]:
        assert e["train_time"] > 0 and e["peak_rss"] > 0 and 0 <= e["val_accuracy"] <= 1
    assert r["epochs"][0]["evolution_time"] > 0 and r["epochs"][1]["evolution_time"] == 0
    assert r["peak_rss"] >= max(e["peak_rss"] for e in r["epochs"])
    assert r["build_time"] >= 0 and r["hardware"]["cores"] >= 1 and r["versions"]["set_cy"]
    assert r["memory_estimate"]["total_with_data"] > 0 and r["memory"]["n_samples"] >= 2
    assert (tmp_path / "m.npz").exists()


def test_prints_summary(capsys):
    assert train.main(SMALL[:-1]) == 0  # without --quiet
    out = capsys.readouterr().out
    assert "20,000 neurons" in out and "epoch 2/2" in out and "peak RSS" in out


def test_hidden_sizes_sum_exactly():
    assert sum(train.hidden_layer_sizes(1_000_000, 54675, 18, 3)) + 54675 + 18 == 1_000_000
    assert train.hidden_layer_sizes(10, 3, 2, 2) == [3, 2]
    with pytest.raises(ValueError, match="too small"):
        train.hidden_layer_sizes(500, 500, 5, 3)


@pytest.mark.parametrize("argv,msg", [
    (["--neurons", "400"], "too small for this dataset"),
    (["--neurons", "abc"], "expected a positive integer"),
    (["--layers", "5"], "at least two positive sizes"),
    (["--layers", "500,10,5", "--neurons", "1000"], "either --neurons or --layers"),
    (["--layers", "400,10,5"], "must start with the dataset's 500 features"),
    (["--dropout", "1.5"], "--dropout must be in"),
    (["--activation", "gelu"], "invalid choice"),
    (["--samples", "0"], "expected a positive integer"),
    (["--backend", "mpi"], "invalid choice"),
    (["--local-steps", "3"], "apply to --backend dask only"),
    (["--n-jobs", "0"], "expected a positive integer"),
    (["--storage", "compact", "--backend", "threads"], "--storage compact needs --backend openmp"),
    (["--storage", "tiny"], "invalid choice"),
    (["--dtype", "float64", "--activation-dtype", "bfloat16"], "needs dtype float32"),
    (["--activation-dtype", "float16"], "invalid choice"),
])
def test_bad_arguments_are_argparse_errors(argv, msg, capsys):
    base = ["--dataset", "synthetic", "--samples", "300", "--features", "500", "--classes", "5", "--quiet"]
    with pytest.raises(SystemExit) as exc:
        train.main(base + argv)
    assert exc.value.code == 2
    assert msg in capsys.readouterr().err


def test_memory_refusal(tmp_path, capsys):
    report = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exc:
        train.main(SMALL + ["--max-memory", "5MB", "--report", str(report)])
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert "needs an estimated" in err and "5.00 MB" in err
    assert json.loads(report.read_text())["status"] == "refused"


def test_compact_storage_from_the_cli(tmp_path):
    reports = {}
    for storage in ("full", "compact"):
        report = tmp_path / f"{storage}.json"
        assert train.main(SMALL + ["--storage", storage, "--report", str(report),
                                   "--save", str(tmp_path / f"{storage}.npz")]) == 0
        reports[storage] = json.loads(report.read_text())
        assert reports[storage]["architecture"]["storage"] == storage
    full, compact = reports["full"], reports["compact"]
    # same network, same draws: the estimate differs by the transposed index (8 bytes per connection
    # with int32 indices, 4 per input neuron and layer, and 4 per layer)
    sizes = full["architecture"]["layer_sizes"]
    saved = 8 * full["architecture"]["connections"] + 4 * (sum(sizes[:-1]) + len(sizes) - 1)
    assert full["memory_estimate"]["weights"] - compact["memory_estimate"]["weights"] == saved
    assert SparseNetwork.load(tmp_path / "compact.npz").storage == "compact"
    assert [e["loss"] for e in compact["epochs"]] == pytest.approx([e["loss"] for e in full["epochs"]], rel=1e-3)


def test_bfloat16_activations_from_the_cli(tmp_path):
    """--activation-dtype bfloat16: named in the report, counted in the estimate, kept by the checkpoint, and
    usable by a data-parallel backend (whose replicas are built from the model's configuration)."""
    reports = {}
    for a in ("float32", "bfloat16"):
        report = tmp_path / f"{a}.json"
        assert train.main(SMALL + ["--activation-dtype", a, "--report", str(report),
                                   "--save", str(tmp_path / f"{a}.npz")]) == 0
        reports[a] = json.loads(report.read_text())
        assert reports[a]["architecture"]["activation_dtype"] == a
    sizes = reports["float32"]["architecture"]["layer_sizes"]
    batch = reports["float32"]["config"]["batch_size"]
    extra = 2 * batch * (sum(sizes[1:-1]) + max(sizes[1:-1]))  # the copies of the activations and of a delta
    assert reports["bfloat16"]["memory_estimate"]["activations"] - reports["float32"]["memory_estimate"][
        "activations"] == extra
    assert SparseNetwork.load(tmp_path / "bfloat16.npz").activation_dtype == "bfloat16"
    assert SparseNetwork.load(tmp_path / "float32.npz").activation_dtype is None
    losses = [[e["loss"] for e in reports[a]["epochs"]] for a in ("float32", "bfloat16")]
    assert losses[0] != losses[1] and losses[1] == pytest.approx(losses[0], rel=2e-2)
    report = tmp_path / "threads.json"
    assert train.main(SMALL + ["--activation-dtype", "bfloat16", "--backend", "threads", "--n-jobs", "2",
                               "--report", str(report)]) == 0
    assert json.loads(report.read_text())["status"] == "completed"


def test_missing_dataset_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SET_CY_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        train.main(["--dataset", "colon", "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "colon" in err and str(tmp_path) in err


def test_interrupt_saves_checkpoint_and_resume_matches(tmp_path, monkeypatch):
    argv = SMALL[:]
    argv[argv.index("--epochs") + 1] = "3"
    full = tmp_path / "full.json"
    assert train.main(argv + ["--report", str(full)]) == 0

    original = SparseNetwork.train_batch
    calls = {"n": 0}

    def interrupted(self, *a, **k):  # a real SIGINT arrives during the 4th batch (epoch 2)
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *a, **k)

    monkeypatch.setattr(SparseNetwork, "train_batch", interrupted)
    ckpt = tmp_path / "ckpt.npz"
    part = tmp_path / "part.json"
    assert train.main(argv + ["--save", str(ckpt), "--report", str(part)]) == 130
    assert json.loads(part.read_text())["status"] == "interrupted" and ckpt.exists()
    monkeypatch.setattr(SparseNetwork, "train_batch", original)
    resumed = tmp_path / "resumed.json"
    assert train.main(["--resume", str(ckpt), "--report", str(resumed), "--quiet"]) == 0
    a = json.loads(full.read_text())["epochs"]
    b = json.loads(resumed.read_text())["epochs"]
    assert [e["loss"] for e in a] == [e["loss"] for e in b]
    assert [e["val_accuracy"] for e in a] == [e["val_accuracy"] for e in b]


def test_resume_from_a_shell_extends_the_run(tmp_path):
    """``python -m set_cy.train --resume ck.npz --epochs N`` typed in a shell (no argv handed to main)."""
    ckpt = tmp_path / "ck.npz"
    assert train.main(SMALL + ["--save", str(ckpt)]) == 0  # 2 epochs
    report = tmp_path / "r.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(train.__file__))] + sys.path)}
    res = subprocess.run([sys.executable, "-m", "set_cy.train", "--resume", str(ckpt), "--epochs", "4", "--quiet",
                          "--report", str(report)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    epochs = json.loads(report.read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]  # the history of the run, extended by 2 epochs
    assert SparseNetwork.load(ckpt).epochs_trained_ == 4


def test_module_runs_as_script():
    res = subprocess.run([sys.executable, "-m", "set_cy.train", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--neurons" in res.stdout


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_parallel_backends_from_the_cli(backend, tmp_path):
    report = tmp_path / "r.json"
    assert train.main(SMALL + ["--backend", backend, "--n-jobs", "2", "--report", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["status"] == "completed" and r["config"]["backend"] == backend and len(r["epochs"]) == 2
    assert r["memory_estimate"]["parallel"] > 0


def test_failed_worker_saves_a_checkpoint(tmp_path, monkeypatch, capsys):
    import set_cy.parallel as parallel

    def broken(*args, **kwargs):
        raise RuntimeError("simulated worker failure")

    monkeypatch.setattr(parallel, "_shard_gradients", broken)
    ckpt = tmp_path / "c.npz"
    assert train.main(SMALL + ["--backend", "threads", "--n-jobs", "2", "--save", str(ckpt)]) == 1
    err = capsys.readouterr().err
    assert "simulated worker failure" in err and str(ckpt) in err
    assert SparseNetwork.load(ckpt).n_connections > 0
