"""bench/bench_rules.py: its rules are valid fit settings, and --table merges reports correctly."""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import bench_rules as br  # noqa: E402


def _report(path, dataset, rows, holdout=0):
    rows = [dict(rule=r, accuracy=a, mean=float(np.mean(a)), std=float(np.std(a))) for r, a in rows]
    with open(path, "w") as fh:
        json.dump({"accuracy": dict(dataset=dataset, epochs=100, seeds=2, holdout=holdout, rows=rows)}, fh)
    return str(path)


def test_merged_table_columns_differences_and_order(tmp_path):
    a = _report(tmp_path / "a.json", "mnist", [("gradient", [0.98, 0.99]), ("set", [0.97, 0.97])])
    b = _report(tmp_path / "b.json", "fashion-mnist", [("static", [0.88, 0.88])])
    c = _report(tmp_path / "c.json", "fashion-mnist", [("gradient", [0.9, 0.9])], holdout=10)
    lines = br.merged_table([a, b, c]).splitlines()
    assert lines[0] == ("| rule | mnist, 100 epochs, 2 seeds | fashion-mnist, 100 epochs, 2 seeds | "
                        "fashion-mnist (10 held out), 100 epochs, 2 seeds |")
    # rows in RULES' order; the difference to set only where set has the column
    assert [row.split(" | ")[0] for row in lines[2:]] == ["| static", "| set", "| gradient"]
    assert lines[2] == "| static | - | 0.8800 ± 0.0000 | - |"
    assert lines[4] == "| gradient | 0.9850 ± 0.0050 (+0.0150) | - | 0.9000 ± 0.0000 |"


def test_merged_table_refuses_a_rule_twice_in_a_column(tmp_path):
    a = _report(tmp_path / "a.json", "mnist", [("set", [0.97])])
    b = _report(tmp_path / "b.json", "mnist", [("set", [0.98])])
    with pytest.raises(ValueError, match="set in mnist"):
        br.merged_table([a, b])


def test_merged_table_refuses_a_report_without_accuracy(tmp_path):
    path = tmp_path / "cost.json"
    path.write_text(json.dumps({"cost": {"rows": []}}))
    with pytest.raises(ValueError, match="not an --accuracy report"):
        br.merged_table([str(path)])


@pytest.mark.parametrize("name", list(br.RULES))
def test_every_rule_trains(name):
    """Each rule's settings are accepted by SparseMLP.fit (a tiny network, three epochs), and a rule that
    prunes to a final fraction ends below its start."""
    from set_cy import SparseMLP

    epsilon, settings = br.rule_settings(name, epsilon=4)
    if "update_every" in settings:
        settings["update_every"] = 2
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 12)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    net = SparseMLP([12, 16, 16, 2], epsilon=epsilon, seed=0)
    start = sum(layer.nnz for layer in net.layers)
    net.fit(X, y, epochs=3, batch_size=16, verbose=0, **settings)
    end = sum(layer.nnz for layer in net.layers)
    assert np.isfinite(net.history_[-1]["loss"])
    if settings.get("final_fraction", 1.0) < 1.0:
        assert end < start
    else:
        assert end == start
