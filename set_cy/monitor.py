"""Resident-memory monitoring for training runs.

This module records how much RAM a training run really uses, so that the command line interface can
show that networks with millions of neurons fit on commodity hardware. :class:`MemoryMonitor` samples,
on a background daemon thread, the resident set size (RSS) of the current process plus all of its
child processes (for example joblib workers) together with the memory the operating system still has
available. Phases such as ``"build"`` or ``"epoch 3"`` can be marked to get a peak per phase.

Examples
--------
>>> import numpy as np
>>> from set_cy import SparseMLP
>>> from set_cy.monitor import MemoryMonitor, format_bytes
>>> X = np.random.default_rng(0).standard_normal((256, 500), dtype=np.float32); y = (X[:, 0] > 0).astype(int)
>>> with MemoryMonitor(interval=0.05) as mon:
...     mon.mark("build")
...     model = SparseMLP([500, 2000, 2000, 2], epsilon=20, seed=0)
...     for epoch in range(3):
...         with mon.phase(f"epoch {epoch + 1}"):
...             _ = model.fit(X, y, epochs=1, verbose=0)
>>> list(mon.phase_peaks())
['start', 'build', 'epoch 1', 'epoch 2', 'epoch 3']
>>> format_bytes(mon.peak_rss)                          # doctest: +ELLIPSIS
'...B'
>>> mon.plot("memory.png")                              # needs matplotlib
'memory.png'

Notes
-----
RSS of child processes is summed with the RSS of the parent. Pages shared between processes (for
example copy-on-write pages of forked workers or a shared library) are therefore counted once per
process, so the reported total is an upper bound of the physical memory really in use.

Byte counts are plain integers. :func:`format_bytes` prints them with *decimal* SI prefixes
(1 kB = 1000 B, 1 MB = 10**6 B, 1 GB = 10**9 B), as disk and RAM vendors do, not binary ones (KiB).
"""
from __future__ import annotations

import array
import contextlib
import logging
import math
import os
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import psutil

from ._memory import format_bytes, system_memory

__all__ = [
    "MemoryMonitor",
    "format_bytes",
    "process_rss",
    "system_memory",
]

logger = logging.getLogger("set_cy")


PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _rss_of(proc: psutil.Process, include_children: bool) -> Tuple[int, int]:
    """Return ``(total_rss, children_rss)`` of ``proc`` in bytes.

    Child processes may exit between being listed and being read, or may not be readable; those are
    skipped. Errors about ``proc`` itself propagate.
    """
    own = int(proc.memory_info().rss)
    children = 0
    if include_children:
        for child in proc.children(recursive=True):
            try:
                children += int(child.memory_info().rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
                continue
    return own + children, children


def process_rss(include_children: bool = True, pid: Optional[int] = None) -> int:
    """Return the resident set size of a process, optionally with all of its descendants.

    Parameters
    ----------
    include_children : bool, default True
        Add the RSS of every child process, recursively. Children that exit while being read, or
        that may not be read, are skipped.
    pid : int, optional
        Process to measure; the current process by default.

    Returns
    -------
    int
        RSS in bytes.

    Raises
    ------
    psutil.NoSuchProcess
        If the process ``pid`` does not exist.
    """
    return _rss_of(psutil.Process(pid), include_children)[0]


# --------------------------------------------------------------------------------------------------
# monitor
# --------------------------------------------------------------------------------------------------
class MemoryMonitor:
    """Sample process memory on a background thread while a block of code runs.

    Each sample records the time since :meth:`start`, the RSS of the process *including* its child
    processes, the part of it that belongs to the children and the system's available memory
    (:func:`psutil.virtual_memory`). One sample is taken immediately by :meth:`start`, one by
    :meth:`stop` and two by every :meth:`mark`, so even a block that finishes at once has at least two
    samples and even a very short phase has data.

    Parameters
    ----------
    interval : float, default 0.1
        Seconds between two samples of the background thread; must be finite and > 0. Sampling runs
        at a fixed rate; ticks missed because the machine was busy are skipped, not made up.
    include_children : bool, default True
        Add the RSS of child processes (recursively) to the process's own RSS.
    pid : int, optional
        Process to watch; the current process by default.
    initial_phase : str, default "start"
        Phase label of the samples taken before the first :meth:`mark`.

    Attributes
    ----------
    interval : float
        The sampling interval in seconds.
    include_children : bool
        Whether child processes are counted.
    error : BaseException or None
        The exception that stopped sampling, or ``None``. A failing sample never propagates: it is
        logged on the ``"set_cy"`` logger, stored here and sampling stops, while the program goes on.

    Raises
    ------
    ValueError
        If ``interval`` is not a finite number > 0.

    See Also
    --------
    process_rss, system_memory, format_bytes

    Notes
    -----
    A monitor is used once: :meth:`start` raises :class:`RuntimeError` the second time, even after
    :meth:`stop`. :meth:`stop` may be called any number of times.

    Samples are stored compactly (about 36 bytes each, about 1.3 MB per hour at the default
    interval). All properties may be read from any thread while the monitor runs; each returns a
    consistent snapshot.

    Examples
    --------
    >>> import numpy as np
    >>> with MemoryMonitor(interval=0.05) as mon:
    ...     mon.mark("allocate")
    ...     big = np.ones(50_000_000, dtype=np.uint8)       # 50 MB, touched
    ...     mon.mark("free")
    ...     del big
    >>> peaks = mon.phase_peaks()                           # bytes per phase, in the order entered
    >>> list(peaks), peaks["allocate"] - peaks["start"] > 40_000_000
    (['start', 'allocate', 'free'], True)
    """

    def __init__(
        self,
        interval: float = 0.1,
        include_children: bool = True,
        pid: Optional[int] = None,
        initial_phase: str = "start",
    ) -> None:
        try:
            interval_f = float(interval)
        except (TypeError, ValueError):
            raise ValueError(f"interval must be a number of seconds > 0, got {interval!r}") from None
        if not (math.isfinite(interval_f) and interval_f > 0.0):
            raise ValueError(f"interval must be a finite number of seconds > 0, got {interval!r}")
        self.interval: float = interval_f
        self.include_children: bool = bool(include_children)
        self.error: Optional[BaseException] = None

        self._proc = psutil.Process(pid)
        self._total_memory = int(psutil.virtual_memory().total)
        self._lock = threading.Lock()  # guards the recorded data
        self._sample_lock = threading.Lock()  # serialises measurements so samples stay in time order
        self._stop_event = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._started = False
        self._stopped = False
        self._t0 = 0.0

        # time series, stored compactly
        self._time = array.array("d")
        self._rss = array.array("q")
        self._children = array.array("q")
        self._available = array.array("q")
        self._phase = array.array("i")
        # phases
        self._phase_names: List[str] = []
        self._phase_ids: Dict[str, int] = {}
        self._phase_peak: Dict[str, int] = {}
        self._current_phase = self._phase_id(str(initial_phase))
        self._marks: List[Tuple[float, str]] = []
        # running aggregates
        self._peak_rss: Optional[int] = None
        self._peak_index = -1
        self._min_available: Optional[int] = None

    # ------------------------------------------------------------------ context manager / lifetime
    def __enter__(self) -> "MemoryMonitor":
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop()

    def start(self) -> "MemoryMonitor":
        """Take a first sample and start the sampling thread.

        Returns
        -------
        MemoryMonitor
            ``self``, so that ``mon = MemoryMonitor().start()`` works.

        Raises
        ------
        RuntimeError
            If the monitor was started before (monitors are single-use).
        """
        with self._lock:
            if self._started:
                raise RuntimeError("MemoryMonitor.start() called twice; a monitor can only be started once")
            self._started = True
            self._t0 = time.perf_counter()
            self._marks.append((0.0, self._phase_names[self._current_phase]))
        self._sample_safely()
        if self.error is None:
            self._thread = threading.Thread(target=self._run, name="set_cy-memory-monitor", daemon=True)
            self._thread.start()
        logger.debug("memory monitor started (interval %.3g s)", self.interval)
        return self

    def stop(self) -> None:
        """Stop the sampling thread, wait for it and take a last sample.

        Does nothing if the monitor was never started or is already stopped.
        """
        with self._lock:
            if not self._started or self._stopped:
                return
            self._stopped = True
        self._stop_event.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._sample_safely()
        logger.debug(
            "memory monitor stopped: %d samples, peak RSS %s",
            self.n_samples,
            format_bytes(self._peak_rss) if self._peak_rss is not None else "n/a",
        )

    @property
    def running(self) -> bool:
        """bool : Whether the sampling thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stop_event.is_set()

    # ------------------------------------------------------------------ phases
    def mark(self, label: str) -> None:
        """Start a new phase called ``label``.

        A sample is taken just before the switch (it belongs to the phase that ends) and one just
        after (it belongs to the new phase), so that every phase has data however short it is.
        Marking a label that was used before adds to that phase: its peak is taken over all of its
        periods. Before :meth:`start` this only sets the label of the first phase; after
        :meth:`stop` it has no effect on the data.

        Parameters
        ----------
        label : str
            Name of the phase, for example ``"build"`` or ``"epoch 3"``.
        """
        label = str(label)
        with self._lock:
            if not self._started:
                self._current_phase = self._phase_id(label)
                return
            if self._stopped:
                return
        with self._sample_lock:
            self._sample_safely(locked=True)
            with self._lock:
                self._current_phase = self._phase_id(label)
                self._marks.append((time.perf_counter() - self._t0, label))
            self._sample_safely(locked=True)

    @contextlib.contextmanager
    def phase(self, label: str) -> Iterator["MemoryMonitor"]:
        """Context manager that marks ``label`` and returns to the enclosing phase on exit.

        Parameters
        ----------
        label : str
            Name of the phase.

        Yields
        ------
        MemoryMonitor
            ``self``.

        Notes
        -----
        The sample taken on exit still belongs to ``label``; whatever is alive at the end of the
        block is therefore part of the phase's peak. Samples after the block belong to the
        enclosing phase again.
        """
        previous = self.current_phase
        self.mark(label)
        try:
            yield self
        finally:
            self.mark(previous)

    @property
    def current_phase(self) -> str:
        """str : Label of the phase new samples are attributed to."""
        with self._lock:
            return self._phase_names[self._current_phase]

    def phase_peaks(self) -> Dict[str, int]:
        """Return the peak RSS of every phase.

        Returns
        -------
        dict
            Phase label -> peak RSS in bytes (children included when counted), in the order the
            phases were first entered. Phases without samples are left out.
        """
        with self._lock:
            return {name: self._phase_peak[name] for name in self._phase_names if name in self._phase_peak}

    @property
    def marks(self) -> List[Tuple[float, str]]:
        """list of (float, str) : Time since start (s) and label of every phase change."""
        with self._lock:
            return list(self._marks)

    # ------------------------------------------------------------------ results
    @property
    def n_samples(self) -> int:
        """int : Number of samples taken so far."""
        with self._lock:
            return len(self._time)

    @property
    def peak_rss(self) -> Optional[int]:
        """int or None : Largest RSS over all samples in bytes, children included; ``None`` before
        the first sample."""
        with self._lock:
            return self._peak_rss

    @property
    def baseline_rss(self) -> Optional[int]:
        """int or None : RSS of the first sample (taken by :meth:`start`) in bytes."""
        with self._lock:
            return int(self._rss[0]) if len(self._rss) else None

    @property
    def min_available(self) -> Optional[int]:
        """int or None : Smallest available system memory over all samples in bytes."""
        with self._lock:
            return self._min_available

    @property
    def elapsed(self) -> float:
        """float : Time of the latest sample, in seconds since :meth:`start`."""
        with self._lock:
            return float(self._time[-1]) if len(self._time) else 0.0

    @property
    def samples(self) -> Dict[str, np.ndarray]:
        """dict of numpy.ndarray : Copy of the time series, one entry per sample.

        Keys
            ``"time"`` (float64, seconds since start), ``"rss"`` (int64, bytes, children
            included), ``"children_rss"`` (int64, bytes, the children's part of ``"rss"``; zero when
            children are not counted), ``"available"`` (int64, bytes of available system memory) and
            ``"phase"`` (str, label of the phase the sample belongs to).
        """
        with self._lock:
            return self._series_locked()

    def _series_locked(self) -> Dict[str, np.ndarray]:
        names = np.asarray(self._phase_names + [""], dtype=str)  # "" keeps the dtype valid if empty
        return {
            "time": np.array(self._time, dtype=np.float64),
            "rss": np.array(self._rss, dtype=np.int64),
            "children_rss": np.array(self._children, dtype=np.int64),
            "available": np.array(self._available, dtype=np.int64),
            "phase": names[np.array(self._phase, dtype=np.intp)],
        }

    def summary(self) -> str:
        """Return a one-line, human-readable summary such as ``"peak RSS 1.23 GB ..."``.

        Returns
        -------
        str
        """
        peak, base, avail = self.peak_rss, self.baseline_rss, self.min_available
        if peak is None or base is None:
            return "no memory samples"
        who = "process + children" if self.include_children else "process"
        text = f"peak RSS {format_bytes(peak)} ({who}; {format_bytes(peak - base)} above start)"
        if avail is not None:
            text += f", min available {format_bytes(avail)} of {format_bytes(self._total_memory)}"
        return text

    def to_dict(self, max_points: Optional[int] = 2000, include_series: bool = True) -> Dict[str, Any]:
        """Return a JSON-serialisable summary of the recording.

        Parameters
        ----------
        max_points : int or None, default 2000
            Largest number of samples in the returned time series. Longer series are cut into
            ``max_points`` consecutive buckets of (nearly) equal size and from each bucket the sample
            with the largest RSS is kept, so the global peak sample is always kept. ``None`` keeps
            every sample.
        include_series : bool, default True
            Include the time series under ``"series"``.

        Returns
        -------
        dict
            Keys ``interval``, ``include_children``, ``n_samples``, ``duration`` (s),
            ``baseline_rss``, ``peak_rss``, ``peak_time`` (s), ``min_available``, ``total_memory``
            (bytes, all ints or ``None``), ``phase_peaks`` (label -> bytes), ``marks`` (list of
            ``{"time", "label"}``), ``error`` (``repr`` of :attr:`error` or ``None``), and with
            ``include_series`` also ``series`` (dict of lists with the keys of :attr:`samples`)
            and ``series_downsampled`` (bool).

        Raises
        ------
        ValueError
            If ``max_points`` is not ``None`` and smaller than 1.
        """
        if max_points is not None:
            if isinstance(max_points, bool) or int(max_points) != max_points or max_points < 1:
                raise ValueError(f"max_points must be a positive integer or None, got {max_points!r}")
            max_points = int(max_points)
        with self._lock:
            series = self._series_locked()
            peaks = {
                name: int(self._phase_peak[name]) for name in self._phase_names if name in self._phase_peak
            }
            marks = [{"time": float(t), "label": label} for t, label in self._marks]
            peak_rss = self._peak_rss
            peak_index = self._peak_index
            min_available = self._min_available
        n = int(series["time"].size)
        result: Dict[str, Any] = {
            "interval": self.interval,
            "include_children": self.include_children,
            "n_samples": n,
            "duration": float(series["time"][-1]) if n else 0.0,
            "baseline_rss": int(series["rss"][0]) if n else None,
            "peak_rss": None if peak_rss is None else int(peak_rss),
            "peak_time": float(series["time"][peak_index]) if n and peak_index >= 0 else None,
            "min_available": None if min_available is None else int(min_available),
            "total_memory": self._total_memory,
            "phase_peaks": peaks,
            "marks": marks,
            "error": None if self.error is None else repr(self.error),
        }
        if include_series:
            keep = _bucket_max_indices(series["rss"], max_points)
            result["series"] = {key: values[keep].tolist() for key, values in series.items()}
            result["series_downsampled"] = bool(keep.size < n)
        return result

    def plot(self, path: PathLike, title: Optional[str] = None, dpi: int = 100) -> str:
        """Write a PNG of RSS and available memory against time, with the phase marks.

        The figure is drawn with matplotlib's Agg canvas directly, so the global matplotlib backend
        is left untouched and no display is needed.

        Parameters
        ----------
        path : str or os.PathLike
            Output file.
        title : str, optional
            Figure title; a summary with the peak RSS by default.
        dpi : int, default 100
            Resolution of the image.

        Returns
        -------
        str
            ``path`` as a string.

        Raises
        ------
        ImportError
            If matplotlib is not installed (``pip install matplotlib``).
        RuntimeError
            If there are no samples to plot.
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError(
                "MemoryMonitor.plot() needs matplotlib, which is not installed; "
                "install it with `pip install matplotlib`"
            ) from exc

        with self._lock:
            series = self._series_locked()
            marks = list(self._marks)
            peak_rss = self._peak_rss
        if series["time"].size == 0:
            raise RuntimeError("MemoryMonitor.plot(): no samples recorded (was the monitor started?)")

        peak = max(int(series["rss"].max()), 1)
        scale, unit = (1e9, "GB") if peak >= 1e9 else (1e6, "MB")
        t = series["time"]

        fig = Figure(figsize=(9.0, 5.5), dpi=dpi)
        FigureCanvasAgg(fig)
        ax_rss, ax_avail = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})

        ax_rss.plot(t, series["rss"] / scale, color="C0", lw=1.5,
                    label="RSS (process + children)" if self.include_children else "RSS")
        if self.include_children and np.any(series["children_rss"]):
            own = (series["rss"] - series["children_rss"]) / scale
            ax_rss.plot(t, own, color="C1", lw=1.0, ls="--", label="RSS (process only)")
            ax_rss.plot(t, series["children_rss"] / scale, color="C2", lw=1.0, ls=":", label="RSS (children)")
        ax_rss.set_ylabel(f"RSS [{unit}]")
        ax_rss.set_ylim(bottom=0)
        ax_rss.grid(True, alpha=0.3)
        ax_rss.legend(loc="best", fontsize="small", framealpha=0.8)

        ax_avail.plot(t, series["available"] / 1e9, color="C3", lw=1.2, label="available system memory")
        ax_avail.set_ylabel("available [GB]")
        ax_avail.set_xlabel("time since start [s]")
        ax_avail.grid(True, alpha=0.3)
        ax_avail.legend(loc="best", fontsize="small", framealpha=0.8)

        for t_mark, label in marks:
            for ax in (ax_rss, ax_avail):
                ax.axvline(t_mark, color="0.5", lw=0.8, ls="--")
            ax_rss.annotate(label, xy=(t_mark, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(2, -2), textcoords="offset points", rotation=90,
                            va="top", ha="left", fontsize="x-small", color="0.3")

        if title is None:
            title = f"memory use: peak RSS {format_bytes(peak_rss if peak_rss is not None else peak)}"
        fig.suptitle(title)
        fig.tight_layout()
        out = os.fspath(path)
        fig.savefig(out, format="png")
        return out

    def __repr__(self) -> str:
        state = "running" if self.running else ("stopped" if self._stopped else "not started")
        peak = self.peak_rss
        peak_s = format_bytes(peak) if peak is not None else "n/a"
        return (
            f"MemoryMonitor(interval={self.interval!r}, {state}, "
            f"n_samples={self.n_samples}, peak_rss={peak_s})"
        )

    # ------------------------------------------------------------------ internals
    def _phase_id(self, label: str) -> int:
        """Index of ``label`` in the phase table, adding it if new.

        The caller holds ``_lock`` (or is ``__init__``).
        """
        idx = self._phase_ids.get(label)
        if idx is None:
            idx = len(self._phase_names)
            self._phase_names.append(label)
            self._phase_ids[label] = idx
        return idx

    def _run(self) -> None:
        """Body of the sampling thread: sample at a fixed rate until stopped or failed."""
        interval = self.interval
        deadline = time.perf_counter() + interval
        while not self._stop_event.wait(max(deadline - time.perf_counter(), 0.0)):
            if not self._sample_safely():
                return
            deadline += interval
            now = time.perf_counter()
            if deadline < now:  # fell behind (busy machine): skip the missed ticks
                deadline = now + interval

    def _sample_safely(self, locked: bool = False) -> bool:
        """Take one sample; on failure log it, store it in :attr:`error` and stop sampling.

        Returns ``False`` if sampling has failed (now or before).
        """
        if self.error is not None:
            return False
        try:
            if locked:
                self._take_sample()
            else:
                with self._sample_lock:
                    self._take_sample()
        except Exception as exc:  # noqa: BLE001 - a monitor must never take the program down
            with self._lock:
                first = self.error is None
                if first:
                    self.error = exc
            self._stop_event.set()
            if first:
                logger.error(
                    "memory monitor: sampling failed, no further samples are taken: %s: %s",
                    type(exc).__name__, exc, exc_info=exc,
                )
            return False
        return True

    def _take_sample(self) -> None:
        """Measure and record one sample. Caller holds ``_sample_lock``."""
        if self.error is not None:
            return
        t = time.perf_counter() - self._t0
        rss, children = _rss_of(self._proc, self.include_children)
        available = int(psutil.virtual_memory().available)
        with self._lock:
            phase = self._current_phase
            self._time.append(t)
            self._rss.append(rss)
            self._children.append(children)
            self._available.append(available)
            self._phase.append(phase)
            name = self._phase_names[phase]
            if rss > self._phase_peak.get(name, -1):
                self._phase_peak[name] = rss
            if self._peak_rss is None or rss > self._peak_rss:
                self._peak_rss = rss
                self._peak_index = len(self._rss) - 1
            if self._min_available is None or available < self._min_available:
                self._min_available = available


def _bucket_max_indices(values: np.ndarray, max_points: Optional[int]) -> np.ndarray:
    """Indices that keep at most ``max_points`` samples: the arg-max of each of ``max_points`` buckets.

    The global maximum is always kept (it is the maximum of its bucket). Indices are increasing.
    """
    n = int(values.size)
    if max_points is None or n <= max_points:
        return np.arange(n)
    edges = np.linspace(0, n, max_points + 1).astype(np.intp)
    keep = np.empty(max_points, dtype=np.intp)
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):  # buckets are non-empty since n > max_points
        keep[i] = lo + int(np.argmax(values[lo:hi]))
    return keep
