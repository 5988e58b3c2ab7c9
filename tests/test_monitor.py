"""Tests for :mod:`set_cy.monitor` (RAM monitoring of training runs)."""
import json
import logging
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from set_cy.monitor import MemoryMonitor, format_bytes, process_rss, system_memory

MB = 1_000_000

# Child process: touch ~100 MB (bytes multiplication writes every page), say so, then wait to be killed.
CHILD_CODE = (
    "import sys, time\n"
    "block = b'\\x01' * 100_000_000\n"
    "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
    "time.sleep(30)\n"
)


def _wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_phase_peak_sees_numpy_allocation():
    with MemoryMonitor(interval=0.02) as mon:
        mon.mark("before")
        with mon.phase("alloc"):
            arr = np.ones(200 * MB // 8)  # np.ones writes, so every page is resident
            assert mon.current_phase == "alloc"
        assert mon.current_phase == "before"
        del arr
        mon.mark("after")

    baseline = mon.baseline_rss
    peaks = mon.phase_peaks()
    assert list(peaks) == ["start", "before", "alloc", "after"]
    assert peaks["alloc"] - baseline >= 150 * MB
    assert mon.peak_rss >= peaks["alloc"]
    assert mon.peak_rss == max(peaks.values())

    s = mon.samples
    assert set(s) == {"time", "rss", "children_rss", "available", "phase"}
    assert len({arr_.shape for arr_ in s.values()}) == 1
    assert s["rss"].max() == mon.peak_rss
    assert s["available"].min() == mon.min_available
    assert np.all(np.diff(s["time"]) >= 0)
    # the sample of the peak is attributed to the allocating phase
    assert s["phase"][int(np.argmax(s["rss"]))] == "alloc"


def test_child_processes_are_counted():
    own_before = process_rss(include_children=False)
    with MemoryMonitor(interval=0.02) as mon:
        mon.mark("before child")
        mon.mark("spawning")  # ends "before child" before the child exists
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD_CODE],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout.readline().strip() == "ready"  # the child has touched its memory
            with_children = process_rss(include_children=True)
            without_children = process_rss(include_children=False)
            mon.mark("child alive")
            time.sleep(0.1)
        finally:
            child.kill()
            child.wait(timeout=10)
            child.stdout.close()

    assert with_children - without_children >= 80 * MB
    assert without_children - own_before < 80 * MB  # the child's memory is not the parent's

    peaks = mon.phase_peaks()
    assert peaks["child alive"] - peaks["before child"] >= 80 * MB
    s = mon.samples
    alive = s["phase"] == "child alive"
    # the opening sample of the phase and the thread's samples during the sleep see the child
    # (the stop sample, also in this phase, is taken after the child was killed)
    assert np.count_nonzero(s["children_rss"][alive] >= 80 * MB) >= 2
    assert np.all(s["children_rss"] <= s["rss"])


def test_children_can_be_excluded():
    with MemoryMonitor(interval=0.05, include_children=False) as mon:
        pass
    assert not np.any(mon.samples["children_rss"])


def test_instant_block_has_two_samples():
    with MemoryMonitor() as mon:
        pass
    assert mon.n_samples >= 2
    assert mon.peak_rss > 0
    assert 0 < mon.min_available <= system_memory()["total"]
    assert mon.baseline_rss > 0
    assert mon.error is None
    assert not mon.running


def test_background_thread_samples_and_can_be_read_while_running():
    with MemoryMonitor(interval=0.01) as mon:
        assert mon.running
        assert _wait_until(lambda: mon.n_samples >= 6)
        s = mon.samples  # reading while the thread appends
        assert s["time"].size >= 6
        assert mon.peak_rss >= s["rss"].max()
        assert mon.to_dict()["n_samples"] >= 6
    assert not mon.running
    t = mon.samples["time"]
    assert np.all(np.diff(t) >= 0)
    assert mon.elapsed == pytest.approx(t[-1])


def test_short_phases_have_data_and_order_is_kept():
    with MemoryMonitor(interval=10.0) as mon:  # no background sample: only the forced ones
        mon.mark("a")
        mon.mark("b")
        mon.mark("a")
        with mon.phase("c"):
            pass
    assert list(mon.phase_peaks()) == ["start", "a", "b", "c"]
    assert [label for _, label in mon.marks] == ["start", "a", "b", "a", "c", "a"]


def test_mark_before_start_names_the_first_phase():
    mon = MemoryMonitor(interval=1.0)
    mon.mark("build")
    with mon:
        pass
    assert list(mon.phase_peaks()) == ["build"]


def test_start_twice_raises_and_stop_is_idempotent():
    mon = MemoryMonitor(interval=0.05)
    mon.stop()  # not started: no-op
    mon.start()
    with pytest.raises(RuntimeError):
        mon.start()
    mon.stop()
    n = mon.n_samples
    mon.stop()
    assert mon.n_samples == n
    with pytest.raises(RuntimeError):
        mon.start()  # single use, also after stop


@pytest.mark.parametrize("interval", [0, -0.1, float("nan"), float("inf"), "fast"])
def test_invalid_interval_raises(interval):
    with pytest.raises(ValueError):
        MemoryMonitor(interval=interval)


def test_to_dict_is_json_serialisable_and_downsampling_keeps_peak():
    with MemoryMonitor(interval=0.001) as mon:
        mon.mark("warm up")
        assert _wait_until(lambda: mon.n_samples >= 60)
        with mon.phase("spike"):
            spike = np.ones(50 * MB // 8)
        del spike
        assert _wait_until(lambda: mon.n_samples >= 120)
    n = mon.n_samples

    full = json.loads(json.dumps(mon.to_dict(max_points=None)))
    assert full["n_samples"] == n
    assert len(full["series"]["time"]) == n
    assert not full["series_downsampled"]
    assert full["peak_rss"] == mon.peak_rss
    assert full["min_available"] == mon.min_available
    assert full["phase_peaks"] == mon.phase_peaks()
    assert full["interval"] == 0.001
    assert full["error"] is None

    small = json.loads(json.dumps(mon.to_dict(max_points=20)))
    series = small["series"]
    assert small["series_downsampled"]
    assert {len(v) for v in series.values()} == {20}
    assert max(series["rss"]) == mon.peak_rss  # the global peak sample survives
    assert series["time"][series["rss"].index(mon.peak_rss)] == pytest.approx(small["peak_time"])
    assert series["time"] == sorted(series["time"])
    assert small["n_samples"] == n

    assert "series" not in mon.to_dict(include_series=False)
    with pytest.raises(ValueError):
        mon.to_dict(max_points=0)


@pytest.mark.parametrize(
    "n, kwargs, expected",
    [
        (0, {}, "0 B"),
        (999, {}, "999 B"),
        (1000, {}, "1.00 kB"),
        (1_500_000, {}, "1.50 MB"),
        (999_999, {}, "1.00 MB"),
        (1_234_567_890, {}, "1.23 GB"),
        (2 * 10**12, {}, "2.00 TB"),
        (-1_500_000, {"precision": 1}, "-1.5 MB"),
        (np.int64(3_000_000_000), {}, "3.00 GB"),
        (1_234_567_890, {"precision": 0}, "1 GB"),
    ],
)
def test_format_bytes(n, kwargs, expected):
    assert format_bytes(n, **kwargs) == expected


def test_format_bytes_rejects_bad_input():
    with pytest.raises(ValueError):
        format_bytes(float("nan"))
    with pytest.raises(ValueError):
        format_bytes(10, precision=-1)


def test_system_memory_and_process_rss():
    mem = system_memory()
    assert set(mem) == {"total", "available"}
    assert 0 < mem["available"] <= mem["total"]
    rss = process_rss(include_children=False)
    assert 0 < rss < mem["total"]
    assert process_rss() >= rss


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is optional; MemoryMonitor.plot needs it")
    with MemoryMonitor(interval=0.01) as mon:
        mon.mark("build")
        time.sleep(0.03)
        with mon.phase("epoch 1"):
            time.sleep(0.03)
    out = mon.plot(tmp_path / "memory.png")
    assert out == str(tmp_path / "memory.png")
    with open(out, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_gives_install_advice(tmp_path, monkeypatch):
    with MemoryMonitor(interval=1.0) as mon:
        pass
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` fail
    with pytest.raises(ImportError, match="pip install matplotlib"):
        mon.plot(tmp_path / "memory.png")


def test_sampler_error_is_logged_and_stored(monkeypatch, caplog):
    real = psutil.virtual_memory
    calls = {"n": 0}

    def flaky_virtual_memory():
        calls["n"] += 1
        if calls["n"] > 3:  # the first few samples (start + a couple in the thread) work
            raise RuntimeError("simulated psutil failure")
        return real()

    with caplog.at_level(logging.ERROR, logger="set_cy"):
        mon = MemoryMonitor(interval=0.01)  # reads total memory before the patch
        monkeypatch.setattr(psutil, "virtual_memory", flaky_virtual_memory)
        with mon:
            assert _wait_until(lambda: mon.error is not None)
            assert _wait_until(lambda: not mon.running)
            mon.mark("after failure")  # must not raise either
        # stopping (which samples) did not raise in this thread

    assert isinstance(mon.error, RuntimeError)
    assert "simulated psutil failure" in str(mon.error)
    assert mon._thread is not None and not mon._thread.is_alive()
    assert mon.n_samples >= 1
    errors = [r for r in caplog.records if r.name == "set_cy" and r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert mon.to_dict()["error"] is not None


def test_children_vanishing_between_listing_and_reading_are_skipped(monkeypatch):
    class GoneChild:
        def memory_info(self):
            raise psutil.NoSuchProcess(pid=999_999)

    class DeniedChild:
        def memory_info(self):
            raise psutil.AccessDenied(pid=999_998)

    def vanishing_children(self, recursive=False):
        return [GoneChild(), DeniedChild()]

    monkeypatch.setattr(psutil.Process, "children", vanishing_children)
    assert abs(process_rss(include_children=True) - process_rss(include_children=False)) < 20 * MB
    with MemoryMonitor(interval=0.01) as mon:
        time.sleep(0.03)
    assert mon.error is None
    assert not np.any(mon.samples["children_rss"])
