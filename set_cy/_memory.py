"""Byte counts: the machine's memory and their printing, shared by the sizing checks and the monitor.

Kept apart from :mod:`set_cy.monitor` so that the layers below (sizing, persistence) can refuse a
request larger than the memory without importing the monitor.
"""
import math
from typing import Dict, Union

import psutil

__all__ = ["format_bytes", "system_memory"]

_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def format_bytes(n: Union[int, float], precision: int = 2) -> str:
    """Format a byte count with a decimal (SI) unit.

    Parameters
    ----------
    n : int or float
        Number of bytes; may be negative (for differences of two byte counts).
    precision : int, default 2
        Number of decimals for every unit above bytes.

    Returns
    -------
    str
        For example ``"512 B"``, ``"1.50 MB"`` or ``"1.23 GB"``.

    Notes
    -----
    The units are decimal: 1 kB = 1000 B, 1 MB = 1000**2 B, 1 GB = 1000**3 B, and so on up to EB.
    They are not the binary units (KiB, MiB, GiB) that some tools print. A value is written with
    the largest unit that keeps its rounded magnitude below 1000, so ``999_999`` gives ``"1.00 MB"``
    rather than ``"1000.00 kB"``.

    Examples
    --------
    >>> format_bytes(0)
    '0 B'
    >>> format_bytes(1_234_567_890)
    '1.23 GB'
    >>> format_bytes(-1_500_000, precision=1)
    '-1.5 MB'
    """
    if isinstance(precision, bool) or not isinstance(precision, int) or precision < 0:
        raise ValueError(f"precision must be a non-negative integer, got {precision!r}")
    value = float(n)
    if not math.isfinite(value):
        raise ValueError(f"cannot format a non-finite byte count: {n!r}")
    sign = "-" if value < 0 else ""
    value = abs(value)
    if round(value) < 1000:
        return f"{sign}{value:.0f} B"
    for unit in _DECIMAL_UNITS[1:]:
        value /= 1000.0
        if round(value, precision) < 1000 or unit == _DECIMAL_UNITS[-1]:
            return f"{sign}{value:.{precision}f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def system_memory() -> Dict[str, int]:
    """Return the total and the currently available physical memory of the machine.

    Returns
    -------
    dict
        ``{"total": int, "available": int}`` in bytes. ``available`` is
        :func:`psutil.virtual_memory`'s estimate of the memory that can be given to processes
        without swapping.
    """
    vm = psutil.virtual_memory()
    return {"total": int(vm.total), "available": int(vm.available)}
