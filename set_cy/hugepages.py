"""Arrays on transparent huge pages: what the kernels' gathers read fastest.

The products and the SDDMM read one row of a dense operand per stored connection, at random. On 4 KiB
pages nearly every such read of a large operand also misses the TLB; on 2 MiB pages it does not. NumPy
asks Linux for huge pages on large allocations (``madvise``), but memory it reuses from earlier, freed
arrays keeps the small pages it was first touched with, so whether an array gets them depends on what
the process allocated before. :func:`empty` always asks for fresh, 2 MiB-aligned memory instead. On a
2-core Intel Xeon the forward product of a 100k x 100k layer (2 M connections, batch 32) ran about 1.5x
faster with its input on such memory, while scipy's product changed little (``bench/bench_kernels.py
--plain-arrays`` against the default).

set_cy allocates the buffers its kernels gather from (the model's activations and output gradients, the
feature-major copies made by :mod:`set_cy.ops`) with :func:`empty`. Callers holding large operands can
do the same. Where huge pages are unavailable (not Linux, ``transparent_hugepage`` set to ``never``) the
memory behaves as ordinary memory.
"""
import mmap

import numpy as np

__all__ = ["empty", "HUGE_PAGE", "MIN_BYTES"]

#: Bytes of a transparent huge page on x86-64 Linux (2 MiB), the alignment of :func:`empty`.
HUGE_PAGE = 2 << 20
#: Below this many bytes :func:`empty` returns a plain ``np.empty`` (NumPy's own threshold for huge pages).
MIN_BYTES = 4 << 20


def empty(shape, dtype=np.float64):
    """An uninitialised C-contiguous array on fresh memory aligned to 2 MiB, huge pages requested.

    Parameters
    ----------
    shape : int or tuple of int
    dtype : data-type, default float64

    Returns
    -------
    ndarray
        Writable, owning its memory through its base (a private anonymous mapping, released with the
        last array that refers to it). Arrays under ``MIN_BYTES`` come from ``np.empty``.
    """
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    if min(shape, default=1) < 0:
        raise ValueError(f"negative dimensions are not allowed, got {shape}")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < MIN_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty(shape, dtype)
    buf = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = np.frombuffer(buf, np.uint8)
    start = (-raw.ctypes.data) % HUGE_PAGE  # the mapping starts on a page: so does this
    length = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
    try:
        buf.madvise(mmap.MADV_HUGEPAGE, start, length)
    except OSError:  # kernel without transparent huge pages: ordinary memory
        pass
    return raw[start:start + nbytes].view(dtype).reshape(shape)
