"""Compiled kernels of set_cy: OpenMP loops over CSR rows, no validation (see ``set_cy.ops``).

Every dense operand is *feature-major*: a C-contiguous ``(n_features, batch)`` array. A CSR matrix is
given by ``indptr``, ``indices`` (same integer type, int32 or int64) and ``data``. The loops over rows
run under ``prange``; each thread owns whole output rows, so results do not depend on the number of
threads and no atomics are needed. The innermost loops live in ``_rowkernels.h``, compiled for several
instruction sets and chosen at run time. The operand whose rows a product gathers may also be bfloat16
(its bits, uint16) under float32 values: read as float32, half the bytes per row (``to_bfloat16``).
Rows long enough to span a large operand (an output layer's) are walked one chunk of that operand at a
time (``set_chunking``); each row is still computed the same way whichever thread runs it.

The callers (``set_cy.ops`` and the layers) guarantee shapes, dtypes, contiguity and canonical CSR
(sorted, unique column indices per row); nothing here checks them.
"""
cimport cython
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t
from libc.string cimport memcmp, memset

import numpy as np

ctypedef fused index_t:
    int32_t
    int64_t

# The element type of an operand whose rows the products gather: the values' own type, or bfloat16
# (its bits, uint16) under float32 values (see to_bfloat16). Other pairs raise TypeError.
ctypedef fused gathered_t:
    float
    double
    uint16_t

cdef extern from "_rowkernels.h" nogil:
    int SET_CY_OPENMP
    int SETCY_ISA_DISPATCH
    int setcy_max_threads()
    int setcy_sched_kind
    int setcy_sched_chunk
    void setcy_apply_schedule()
    void setcy_spmm_row_f32_i32(const float*, const int32_t*, const int32_t*, Py_ssize_t, Py_ssize_t,
                                const float*, Py_ssize_t, float, float*)
    void setcy_spmm_row_f32_i64(const float*, const int64_t*, const int64_t*, Py_ssize_t, Py_ssize_t,
                                const float*, Py_ssize_t, float, float*)
    void setcy_spmm_row_f64_i32(const double*, const int32_t*, const int32_t*, Py_ssize_t, Py_ssize_t,
                                const double*, Py_ssize_t, double, double*)
    void setcy_spmm_row_f64_i64(const double*, const int64_t*, const int64_t*, Py_ssize_t, Py_ssize_t,
                                const double*, Py_ssize_t, double, double*)
    void setcy_sddmm_row_f32_i32(const float*, const int32_t*, Py_ssize_t, Py_ssize_t,
                                 const float*, Py_ssize_t, float*)
    void setcy_sddmm_row_f32_i64(const float*, const int64_t*, Py_ssize_t, Py_ssize_t,
                                 const float*, Py_ssize_t, float*)
    void setcy_sddmm_row_f64_i32(const double*, const int32_t*, Py_ssize_t, Py_ssize_t,
                                 const double*, Py_ssize_t, double*)
    void setcy_sddmm_row_f64_i64(const double*, const int64_t*, Py_ssize_t, Py_ssize_t,
                                 const double*, Py_ssize_t, double*)
    void setcy_sddmm_update_row_f32_i32(const float*, const int32_t*, Py_ssize_t, Py_ssize_t, const float*,
                                        Py_ssize_t, float*, float*, float, float, float, int)
    void setcy_sddmm_update_row_f32_i64(const float*, const int64_t*, Py_ssize_t, Py_ssize_t, const float*,
                                        Py_ssize_t, float*, float*, float, float, float, int)
    void setcy_sddmm_update_row_f64_i32(const double*, const int32_t*, Py_ssize_t, Py_ssize_t, const double*,
                                        Py_ssize_t, double*, double*, double, double, double, int)
    void setcy_sddmm_update_row_f64_i64(const double*, const int64_t*, Py_ssize_t, Py_ssize_t, const double*,
                                        Py_ssize_t, double*, double*, double, double, double, int)
    void setcy_spmm_row_bf_i32(const float*, const int32_t*, const int32_t*, Py_ssize_t, Py_ssize_t,
                               const uint16_t*, Py_ssize_t, float, float*)
    void setcy_spmm_row_bf_i64(const float*, const int64_t*, const int64_t*, Py_ssize_t, Py_ssize_t,
                               const uint16_t*, Py_ssize_t, float, float*)
    void setcy_sddmm_row_bf_i32(const float*, const int32_t*, Py_ssize_t, Py_ssize_t,
                                const uint16_t*, Py_ssize_t, float*)
    void setcy_sddmm_row_bf_i64(const float*, const int64_t*, Py_ssize_t, Py_ssize_t,
                                const uint16_t*, Py_ssize_t, float*)
    void setcy_sddmm_update_row_bf_i32(const float*, const int32_t*, Py_ssize_t, Py_ssize_t, const uint16_t*,
                                       Py_ssize_t, float*, float*, float, float, float, int)
    void setcy_sddmm_update_row_bf_i64(const float*, const int64_t*, Py_ssize_t, Py_ssize_t, const uint16_t*,
                                       Py_ssize_t, float*, float*, float, float, float, int)
    void setcy_to_bf16(const float*, uint16_t*, Py_ssize_t, Py_ssize_t)
    void setcy_relu_dropout_f32(float*, const uint8_t*, Py_ssize_t, Py_ssize_t, uint8_t, float)
    void setcy_relu_dropout_f64(double*, const uint8_t*, Py_ssize_t, Py_ssize_t, uint8_t, double)
    void setcy_relu_backward_f32(float*, const float*, Py_ssize_t, Py_ssize_t, float)
    void setcy_relu_backward_f64(double*, const double*, Py_ssize_t, Py_ssize_t, double)
    void setcy_scatter_row_f32_i32(const float*, const int32_t*, Py_ssize_t, Py_ssize_t, const float*,
                                   Py_ssize_t, float*)
    void setcy_scatter_row_f32_i64(const float*, const int64_t*, Py_ssize_t, Py_ssize_t, const float*,
                                   Py_ssize_t, float*)
    void setcy_scatter_row_f64_i32(const double*, const int32_t*, Py_ssize_t, Py_ssize_t, const double*,
                                   Py_ssize_t, double*)
    void setcy_scatter_row_f64_i64(const double*, const int64_t*, Py_ssize_t, Py_ssize_t, const double*,
                                   Py_ssize_t, double*)
    float setcy_rowsum_f32(const float*, Py_ssize_t)
    double setcy_rowsum_f64(const double*, Py_ssize_t)
    void setcy_sort_i32(int32_t*, Py_ssize_t)
    int setcy_outside_i32(const int32_t*, Py_ssize_t, int32_t)
    int setcy_outside_i64(const int64_t*, Py_ssize_t, int64_t)
    void setcy_sort_i64(int64_t*, Py_ssize_t)
    void setcy_momentum_range_f32(float*, float*, const float*, Py_ssize_t, Py_ssize_t,
                                  float, float, float, int)
    void setcy_momentum_range_f64(double*, double*, const double*, Py_ssize_t, Py_ssize_t,
                                  double, double, double, int)

# Elements per block of the element-wise update.
cdef Py_ssize_t ELEM_BLOCK = 1 << 15
_SCHEDULES = {"static": 1, "dynamic": 2, "guided": 3}


def openmp_enabled():
    """Whether the extension was compiled with OpenMP."""
    return bool(SET_CY_OPENMP)


def isa_dispatch_enabled():
    """Whether the row kernels were compiled for several instruction sets (chosen at run time)."""
    return bool(SETCY_ISA_DISPATCH)


def max_threads():
    """``omp_get_max_threads()`` (honours ``OMP_NUM_THREADS``), or 1 without OpenMP."""
    return setcy_max_threads()


def set_row_schedule(str kind, int chunk=0):
    """Choose the OpenMP schedule of the loops over rows: "static", "dynamic" or "guided".

    ``chunk`` is the number of rows handed out at a time (0: the OpenMP default). The default,
    guided, was the fastest in 21 of 36 cases of ``bench/bench_kernels.py --schedules`` on the 2-core
    machine (geometric mean 3% under static; dynamic with chunk 1 was 38% over static).
    """
    global setcy_sched_kind, setcy_sched_chunk
    if kind not in _SCHEDULES:
        raise ValueError(f"kind must be one of {sorted(_SCHEDULES)}, got {kind!r}")
    if chunk < 0:
        raise ValueError(f"chunk must be >= 0, got {chunk}")
    setcy_sched_kind = _SCHEDULES[kind]
    setcy_sched_chunk = chunk


def get_row_schedule():
    """The schedule of the loops over rows as ``(kind, chunk)``."""
    names = {v: k for k, v in _SCHEDULES.items()}
    return names[setcy_sched_kind], setcy_sched_chunk


# Input chunking of long rows (locality). A CSR row with many connections spread over a large operand (the
# output layer: a handful of rows, each over every input neuron) reads that whole operand once per row. When
# the rows are long enough, the loops walk the operand one chunk of its rows at a time instead, every row's
# connections into the chunk before the next chunk, so that a chunk is read from memory once and then from the
# L2: the forward product with each thread owning a range of output rows, the SDDMM and the scatter with each
# thread owning a range of whole chunks. Measured on the 2-core machine, 2 threads, batch 32 (bench/README.md,
# "Long rows"): on a dense 3.3 M x 18 layer the forward product 3.4x faster, the SDDMM (alone or with the
# update) and the scatter 2.5x-2.6x; on 315k x 18 (its 40 MB operand in the L3) the forward 1.4x, the scatter
# 1.2x, the SDDMM 0.8x.
cdef Py_ssize_t CHUNK_BYTES = 1 << 20       # operand rows per chunk: about this many bytes (a share of the L2)
cdef Py_ssize_t CHUNK_MIN_BYTES = 4 << 20   # operands smaller than this stay in the L2 anyway: no chunks
cdef Py_ssize_t CHUNK_MIN_PER_ROW = 64      # the mean connections of a row in one chunk, at least


def set_chunking(Py_ssize_t chunk_bytes=1 << 20, Py_ssize_t min_bytes=4 << 20, Py_ssize_t min_per_row=64):
    """Set when and how the products and the SDDMM walk long rows chunk by chunk of their operand.

    A loop over CSR rows runs chunked when the operand it gathers from (or scatters into) holds at least
    ``min_bytes`` and a row has on average at least ``min_per_row`` connections in each chunk of about
    ``chunk_bytes`` of that operand's rows. The defaults are the measured ones; tests force chunking with
    ``set_chunking(1, 0, 0)`` (chunks of one row). Results do not depend on the number of threads either
    way; the chunked forward product adds each chunk's partial sum to the row in order (other rounding).
    """
    global CHUNK_BYTES, CHUNK_MIN_BYTES, CHUNK_MIN_PER_ROW
    if chunk_bytes < 1 or min_bytes < 0 or min_per_row < 0:
        raise ValueError(f"need chunk_bytes >= 1, min_bytes >= 0 and min_per_row >= 0, got {chunk_bytes}, "
                         f"{min_bytes}, {min_per_row}")
    CHUNK_BYTES, CHUNK_MIN_BYTES, CHUNK_MIN_PER_ROW = chunk_bytes, min_bytes, min_per_row


def get_chunking():
    """``(chunk_bytes, min_bytes, min_per_row)`` (see :func:`set_chunking`)."""
    return CHUNK_BYTES, CHUNK_MIN_BYTES, CHUNK_MIN_PER_ROW


def chunk_rows(Py_ssize_t n_rows, Py_ssize_t nnz, Py_ssize_t n_cols, Py_ssize_t row_bytes):
    """Operand rows per chunk that a loop over ``n_rows`` CSR rows with ``nnz`` connections into an operand of
    ``n_cols`` rows of ``row_bytes`` bytes each would use under the current :func:`set_chunking`; 0 when it
    runs unchunked. (For tests and benchmarks: the kernels decide this themselves.)"""
    return _chunk_rows(n_rows, nnz, n_cols, row_bytes)


cdef Py_ssize_t _chunk_rows(Py_ssize_t n_rows, Py_ssize_t nnz, Py_ssize_t n_cols, Py_ssize_t row_bytes) noexcept nogil:
    """Operand rows per chunk for a loop over ``n_rows`` CSR rows with ``nnz`` connections into an operand of
    ``n_cols`` rows of ``row_bytes`` each; 0: run unchunked."""
    cdef Py_ssize_t c
    if n_rows <= 0 or row_bytes <= 0 or n_cols * row_bytes < CHUNK_MIN_BYTES:
        return 0
    c = CHUNK_BYTES // row_bytes
    if c < 1:
        c = 1
    if c >= n_cols or <double>nnz * c < <double>CHUNK_MIN_PER_ROW * n_rows * n_cols:
        return 0
    return c


# --------------------------------------------------------------------------------------------------
# row helpers: one dispatch per (value, index) type pair, resolved at compile time
# --------------------------------------------------------------------------------------------------
cdef inline void _spmm_row(const floating* data, const index_t* perm, const index_t* idx,
                           Py_ssize_t start, Py_ssize_t end, const gathered_t* X, Py_ssize_t B,
                           floating bias, floating* out) noexcept nogil:
    if gathered_t is uint16_t:
        if floating is float:
            if index_t is int32_t:
                setcy_spmm_row_bf_i32(data, perm, idx, start, end, X, B, bias, out)
            else:
                setcy_spmm_row_bf_i64(data, perm, idx, start, end, X, B, bias, out)
    elif gathered_t is float:
        if floating is float:
            if index_t is int32_t:
                setcy_spmm_row_f32_i32(data, perm, idx, start, end, X, B, bias, out)
            else:
                setcy_spmm_row_f32_i64(data, perm, idx, start, end, X, B, bias, out)
    else:
        if floating is double:
            if index_t is int32_t:
                setcy_spmm_row_f64_i32(data, perm, idx, start, end, X, B, bias, out)
            else:
                setcy_spmm_row_f64_i64(data, perm, idx, start, end, X, B, bias, out)


cdef inline void _scatter_row(const floating* data, const index_t* idx, Py_ssize_t start, Py_ssize_t end,
                              const floating* d, Py_ssize_t B, floating* out) noexcept nogil:
    if floating is float:
        if index_t is int32_t:
            setcy_scatter_row_f32_i32(data, idx, start, end, d, B, out)
        else:
            setcy_scatter_row_f32_i64(data, idx, start, end, d, B, out)
    else:
        if index_t is int32_t:
            setcy_scatter_row_f64_i32(data, idx, start, end, d, B, out)
        else:
            setcy_scatter_row_f64_i64(data, idx, start, end, d, B, out)


cdef inline void _sddmm_row(const floating* a, const index_t* idx, Py_ssize_t start, Py_ssize_t end,
                            const gathered_t* X, Py_ssize_t B, floating* g) noexcept nogil:
    if gathered_t is uint16_t:
        if floating is float:
            if index_t is int32_t:
                setcy_sddmm_row_bf_i32(a, idx, start, end, X, B, g)
            else:
                setcy_sddmm_row_bf_i64(a, idx, start, end, X, B, g)
    elif gathered_t is float:
        if floating is float:
            if index_t is int32_t:
                setcy_sddmm_row_f32_i32(a, idx, start, end, X, B, g)
            else:
                setcy_sddmm_row_f32_i64(a, idx, start, end, X, B, g)
    else:
        if floating is double:
            if index_t is int32_t:
                setcy_sddmm_row_f64_i32(a, idx, start, end, X, B, g)
            else:
                setcy_sddmm_row_f64_i64(a, idx, start, end, X, B, g)


cdef inline void _sddmm_update_row(const floating* a, const index_t* idx, Py_ssize_t start,
                                   Py_ssize_t end, const gathered_t* X, Py_ssize_t B, floating* w,
                                   floating* v, floating lr, floating mu, floating wd,
                                   int nesterov) noexcept nogil:
    if gathered_t is uint16_t:
        if floating is float:
            if index_t is int32_t:
                setcy_sddmm_update_row_bf_i32(a, idx, start, end, X, B, w, v, lr, mu, wd, nesterov)
            else:
                setcy_sddmm_update_row_bf_i64(a, idx, start, end, X, B, w, v, lr, mu, wd, nesterov)
    elif gathered_t is float:
        if floating is float:
            if index_t is int32_t:
                setcy_sddmm_update_row_f32_i32(a, idx, start, end, X, B, w, v, lr, mu, wd, nesterov)
            else:
                setcy_sddmm_update_row_f32_i64(a, idx, start, end, X, B, w, v, lr, mu, wd, nesterov)
    else:
        if floating is double:
            if index_t is int32_t:
                setcy_sddmm_update_row_f64_i32(a, idx, start, end, X, B, w, v, lr, mu, wd, nesterov)
            else:
                setcy_sddmm_update_row_f64_i64(a, idx, start, end, X, B, w, v, lr, mu, wd, nesterov)


cdef inline int _check_gathered(const floating* values, const gathered_t* rows) except -1:
    """TypeError unless the gathered rows' type goes with the values' (the same, or bfloat16 under float32)."""
    cdef bint ok = False
    if gathered_t is double:
        if floating is double:
            ok = True
    else:
        if floating is float:
            ok = True
    if not ok:
        raise TypeError("the gathered operand must have the values' dtype (or be bfloat16 bits, uint16, "
                        "under float32 values)")
    return 0


cdef inline floating _rowsum(const floating* a, Py_ssize_t B) noexcept nogil:
    if floating is float:
        return setcy_rowsum_f32(a, B)
    else:
        return setcy_rowsum_f64(a, B)


cdef inline void _momentum_range(floating* w, floating* v, const floating* g, Py_ssize_t start,
                                 Py_ssize_t end, floating lr, floating mu, floating wd,
                                 int nesterov) noexcept nogil:
    if floating is float:
        setcy_momentum_range_f32(w, v, g, start, end, lr, mu, wd, nesterov)
    else:
        setcy_momentum_range_f64(w, v, g, start, end, lr, mu, wd, nesterov)


cdef inline Py_ssize_t _lower_bound(const index_t* idx, Py_ssize_t lo, Py_ssize_t hi,
                                    Py_ssize_t value) noexcept nogil:
    """First position in the sorted ``idx[lo:hi]`` whose value is ``>= value`` (``hi`` when none is)."""
    cdef Py_ssize_t mid
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if idx[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


# Chunked loops (see set_chunking): chunk by chunk of c operand rows, every row's connections into the chunk;
# cur[j] is where row j's connections into the current chunk start. The forward product splits the rows among
# the threads (each owns its output rows); the SDDMM and the scatter split the operand's rows.
cdef void _spmm_rows_chunked(const floating* data, const index_t* perm, const index_t* idx, const index_t* indptr,
                             Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t n_cols, Py_ssize_t c, const gathered_t* X,
                             Py_ssize_t B, const floating* bias, floating* out, floating* tmp,
                             Py_ssize_t* cur) noexcept nogil:
    """Rows ``j0:j1`` of :func:`spmm`: ``out[j] = bias[j] + s_0 + s_1 + ...``, ``s_q`` the sum over chunk ``q``."""
    cdef Py_ssize_t j, i0, k0, k1, t
    for j in range(j0, j1):
        cur[j] = indptr[j]
    i0 = 0
    while i0 < n_cols:
        for j in range(j0, j1):
            k0 = cur[j]
            k1 = _lower_bound(idx, k0, indptr[j + 1], i0 + c)
            if i0 == 0:
                _spmm_row(data, perm, idx, k0, k1, X, B, bias[j] if bias != NULL else 0, out + j * B)
            elif k1 > k0:
                _spmm_row(data, perm, idx, k0, k1, X, B, 0, tmp)
                for t in range(B):
                    out[j * B + t] += tmp[t]
            cur[j] = k1
        i0 += c


cdef void _sddmm_cols_chunked(const floating* A, const index_t* idx, const index_t* indptr, Py_ssize_t n_rows,
                              Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t c, const gathered_t* X, Py_ssize_t B,
                              floating* g, floating* w, floating* v, floating lr, floating mu, floating wd,
                              bint nesterov, Py_ssize_t* cur) noexcept nogil:
    """One thread's share of a chunked :func:`sddmm` (into ``g``), or with ``g`` NULL of
    :func:`sddmm_momentum_update` (``w``, ``v``): the connections of every row into the operand rows
    ``lo:hi``, chunk by chunk; each connection's dot product is computed as without chunks."""
    cdef Py_ssize_t j, c0, c1, k0, k1
    for j in range(n_rows):
        cur[j] = _lower_bound(idx, indptr[j], indptr[j + 1], lo)
    c0 = lo
    while c0 < hi:
        c1 = min(c0 + c, hi)
        for j in range(n_rows):
            k0 = cur[j]
            k1 = _lower_bound(idx, k0, indptr[j + 1], c1)
            if k1 > k0:
                if g != NULL:
                    _sddmm_row(A + j * B, idx, k0, k1, X, B, g)
                else:
                    _sddmm_update_row(A + j * B, idx, k0, k1, X, B, w, v, lr, mu, wd, nesterov)
            cur[j] = k1
        c0 = c1


# --------------------------------------------------------------------------------------------------
# products and gradients
# --------------------------------------------------------------------------------------------------
def spmm(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data,
         const index_t[::1] perm, const gathered_t[:, ::1] X, floating[:, ::1] out,
         const floating[::1] bias, int n_threads):
    """``out[r, :] = bias[r] + sum_k data[p(k)] * X[indices[k], :]`` over the CSR rows ``r``.

    ``p(k) = perm[k]`` when ``perm`` is given (values stored in another order, e.g. the transposed
    index of a layer), else ``k``. ``bias`` may be None. ``out`` has ``len(indptr) - 1`` rows. ``X``
    has the values' dtype, or holds bfloat16 bits (uint16) under float32 values: read as float32.
    """
    _check_gathered(<const floating*>NULL, <const gathered_t*>NULL)
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t B = X.shape[1]
    cdef Py_ssize_t r
    cdef const index_t* p_perm = NULL
    cdef const floating* p_bias = NULL
    cdef floating zero = 0
    if perm is not None:
        p_perm = &perm[0] if perm.shape[0] > 0 else NULL
    if bias is not None and bias.shape[0] > 0:
        p_bias = &bias[0]
    if n_rows == 0 or B == 0:
        return
    cdef const index_t* p_idx = &indices[0] if indices.shape[0] > 0 else NULL
    cdef const floating* p_data = &data[0] if data.shape[0] > 0 else NULL
    cdef const gathered_t* p_X = &X[0, 0] if X.shape[0] > 0 else NULL
    cdef Py_ssize_t c = _chunk_rows(n_rows, indices.shape[0], X.shape[0], B * sizeof(gathered_t))
    cdef Py_ssize_t p, nt = max(1, min(n_threads, n_rows))
    cdef Py_ssize_t[::1] cur
    cdef floating[:, ::1] tmp
    if c > 0:
        cur = np.empty(n_rows, np.intp)
        tmp = np.empty((nt, B), np.float32 if floating is float else np.float64)
        with nogil:
            for p in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                _spmm_rows_chunked(p_data, p_perm, p_idx, &indptr[0], n_rows * p // nt, n_rows * (p + 1) // nt,
                                   X.shape[0], c, p_X, B, p_bias, &out[0, 0], &tmp[p, 0], &cur[0])
        return
    setcy_apply_schedule()
    with nogil:
        for r in prange(n_rows, schedule="runtime", num_threads=n_threads):
            _spmm_row(p_data, p_perm, p_idx, indptr[r], indptr[r + 1], p_X, B,
                      p_bias[r] if p_bias != NULL else zero, &out[r, 0])


cdef inline void _sum_parts_range(const floating* parts, Py_ssize_t n_parts, Py_ssize_t stride,
                                  floating* out, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    """``out[i] = parts[0, i] + parts[1, i] + ...`` for ``start <= i < stop``, always in that order."""
    cdef Py_ssize_t i, p
    cdef floating s
    for i in range(start, stop):
        s = parts[i]
        for p in range(1, n_parts):
            s = s + parts[p * stride + i]
        out[i] = s


def sum_partials(const floating[:, ::1] parts, floating[::1] out, int n_threads, Py_ssize_t lo=0,
                 Py_ssize_t hi=-1):
    """``out[lo:hi] = parts[:, lo:hi].sum(axis=0)``, added in row order (independent of ``n_threads``).

    Merges the gradients that data-parallel workers computed on the same connection pattern
    (``hi=-1``: to the end). ``out`` may be ``parts[0]``.
    """
    cdef Py_ssize_t n = out.shape[0] if hi < 0 else hi
    cdef Py_ssize_t n_blocks = (n - lo + ELEM_BLOCK - 1) // ELEM_BLOCK
    cdef Py_ssize_t blk, start, stop
    if n <= lo:
        return
    with nogil:
        for blk in prange(n_blocks, schedule="static", num_threads=n_threads):
            start = lo + blk * ELEM_BLOCK
            stop = start + ELEM_BLOCK
            if stop > n:
                stop = n
            _sum_parts_range(&parts[0, 0], parts.shape[0], parts.shape[1], &out[0], start, stop)


def spmm_scatter(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data,
                 const floating[:, ::1] D, floating[:, ::1] out, floating[:, ::1] scratch, int n_threads):
    """``out = M^T D`` for a CSR matrix ``M``: row ``r`` scatters ``data[k] * D[r, :]`` into ``out[indices[k], :]``.

    The transposed product without a transposed index: the rows of ``M`` are cut into
    ``scratch.shape[0]`` parts of about equal nnz; part ``p`` accumulates into ``scratch[p]`` (viewed as
    ``out``'s shape), and ``out`` is the sum of the parts in order, so the result does not depend on
    the number of threads. Meant for small batches, where reading the values through a permutation
    (:func:`spmm` with ``perm``) costs a random memory access per connection.
    """
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t B = D.shape[1]
    cdef Py_ssize_t n_parts = scratch.shape[0]
    cdef Py_ssize_t size = out.shape[0] * out.shape[1]
    cdef Py_ssize_t p, r, blk, start, stop
    cdef Py_ssize_t n_blocks = (size + ELEM_BLOCK - 1) // ELEM_BLOCK
    if size == 0:
        return
    if n_rows == 0 or B == 0 or indices.shape[0] == 0:
        out[:, :] = 0
        return
    cdef Py_ssize_t[::1] bounds = np.searchsorted(
        np.asarray(indptr), np.linspace(0, indices.shape[0], n_parts + 1)).astype(np.intp)
    bounds[0] = 0
    bounds[n_parts] = n_rows
    cdef const index_t* p_idx = &indices[0]
    cdef const floating* p_data = &data[0]
    with nogil:
        for p in prange(n_parts, schedule="dynamic", chunksize=1, num_threads=n_threads):
            memset(&scratch[p, 0], 0, size * sizeof(floating))
            for r in range(bounds[p], bounds[p + 1]):
                if indptr[r + 1] > indptr[r]:
                    _scatter_row(p_data, p_idx, indptr[r], indptr[r + 1], &D[r, 0], B, &scratch[p, 0])
        for blk in prange(n_blocks, schedule="static", num_threads=n_threads):
            start = blk * ELEM_BLOCK
            stop = start + ELEM_BLOCK
            if stop > size:
                stop = size
            _sum_parts_range(&scratch[0, 0], n_parts, scratch.shape[1], &out[0, 0], start, stop)


def spmm_scatter_owned(const index_t[::1] indptr, const index_t[::1] indices, const floating[::1] data,
                       const floating[:, ::1] D, floating[:, ::1] out, int n_threads):
    """``out = M^T D`` for a CSR matrix ``M`` with sorted rows, with no transposed index and no scratch.

    The rows of ``out`` (the columns of ``M``) are cut into ``n_threads`` equal ranges, one per thread.
    Each thread walks every row ``r`` of ``M``, finds by binary search the entries of the row whose
    column falls in its range, and scatters them: ``out[indices[k], :] += data[k] * D[r, :]``. Values
    and indices are read in storage order and each row of ``out`` is summed by one thread in the order
    of ``r``, so the result does not depend on the number of threads. Every thread reads the row
    offsets and a few indices of every row (binary search), which is small next to the scattered rows
    as long as there are few threads per row of ``M``. The backward product of a layer kept without its
    transposed index (``storage="compact"``).
    """
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t n_cols = out.shape[0]
    cdef Py_ssize_t B = D.shape[1]
    cdef Py_ssize_t nt = max(1, min(n_threads, n_cols))
    cdef Py_ssize_t p, r, lo, hi, k0, k1
    if n_cols == 0 or B == 0:
        return
    if n_rows == 0 or indices.shape[0] == 0:
        out[:, :] = 0
        return
    cdef const index_t* p_idx = &indices[0]
    cdef const floating* p_data = &data[0]
    cdef floating* p_out = &out[0, 0]
    # long rows (see set_chunking): each thread's range of out in chunks, every row's entries into the chunk
    cdef Py_ssize_t c = _chunk_rows(n_rows, indices.shape[0], n_cols, B * sizeof(floating))
    cdef Py_ssize_t c0, c1
    cdef Py_ssize_t[:, ::1] cur
    if c > 0:
        cur = np.empty((nt, n_rows), np.intp)
    with nogil:
        for p in prange(nt, schedule="static", chunksize=1, num_threads=nt):
            lo = n_cols * p // nt
            hi = n_cols * (p + 1) // nt
            memset(p_out + lo * B, 0, (hi - lo) * B * sizeof(floating))
            if c == 0:
                for r in range(n_rows):
                    k0 = _lower_bound(p_idx, indptr[r], indptr[r + 1], lo)
                    k1 = _lower_bound(p_idx, k0, indptr[r + 1], hi)
                    if k1 > k0:
                        _scatter_row(p_data, p_idx, k0, k1, &D[r, 0], B, p_out)
                continue
            for r in range(n_rows):
                cur[p, r] = _lower_bound(p_idx, indptr[r], indptr[r + 1], lo)
            c0 = lo
            while c0 < hi:
                c1 = min(c0 + c, hi)
                for r in range(n_rows):
                    k0 = cur[p, r]
                    k1 = _lower_bound(p_idx, k0, indptr[r + 1], c1)
                    if k1 > k0:
                        _scatter_row(p_data, p_idx, k0, k1, &D[r, 0], B, p_out)
                    cur[p, r] = k1
                c0 = c1


def sddmm(const index_t[::1] indptr, const index_t[::1] indices, const floating[:, ::1] A,
          const gathered_t[:, ::1] X, floating[::1] out, int n_threads, floating[::1] out_rowsum=None):
    """``out[k] = <A[r, :], X[indices[k], :]>`` for every stored entry ``k`` of CSR row ``r``.

    ``X`` has ``A``'s dtype, or holds bfloat16 bits (uint16) under float32 ``A`` (see :func:`spmm`).

    With ``out_rowsum`` (one per row), also ``out_rowsum[r] = sum(A[r, :])`` in the same pass: the bias
    gradient of a layer, while its output gradient's row is in cache. An empty ``out`` computes only the
    row sums.
    """
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t B = A.shape[1]
    cdef Py_ssize_t r
    cdef floating* p_s = NULL
    cdef floating* p_out = &out[0] if out.shape[0] > 0 else NULL
    cdef const index_t* p_idx = &indices[0] if indices.shape[0] > 0 else NULL
    if out_rowsum is not None and out_rowsum.shape[0] > 0:
        p_s = &out_rowsum[0]
    _check_gathered(<const floating*>NULL, <const gathered_t*>NULL)
    if B == 0:
        out[:] = 0
        if p_s != NULL:
            out_rowsum[:] = 0
        return
    if n_rows == 0 or (p_out == NULL and p_s == NULL):
        return
    cdef Py_ssize_t n_cols = X.shape[0]
    cdef Py_ssize_t c = _chunk_rows(n_rows, indices.shape[0], n_cols, B * sizeof(gathered_t))
    cdef Py_ssize_t n_chunks = (n_cols + c - 1) // c if c > 0 else 0
    cdef Py_ssize_t p, nt = max(1, min(n_threads, n_chunks))
    cdef Py_ssize_t[:, ::1] cur
    # each thread a range of whole chunks of X's rows (X is read once in all; the chunks do not depend on the
    # number of threads, nor then the results), every row's entries into it
    if c > 0 and p_out != NULL:
        cur = np.empty((nt, n_rows), np.intp)
        with nogil:
            for p in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                _sddmm_cols_chunked(&A[0, 0], p_idx, &indptr[0], n_rows, min(n_cols, n_chunks * p // nt * c),
                                    min(n_cols, n_chunks * (p + 1) // nt * c), c, &X[0, 0], B, p_out, NULL, NULL,
                                    0, 0, 0, False, &cur[p, 0])
            if p_s != NULL:
                for r in prange(n_rows, schedule="static", num_threads=n_threads):
                    p_s[r] = _rowsum(&A[r, 0], B)
        return
    setcy_apply_schedule()
    with nogil:
        for r in prange(n_rows, schedule="runtime", num_threads=n_threads):
            if p_out != NULL and indptr[r + 1] > indptr[r]:
                _sddmm_row(&A[r, 0], p_idx, indptr[r], indptr[r + 1], &X[0, 0], B, p_out)
            if p_s != NULL:
                p_s[r] = _rowsum(&A[r, 0], B)


def sddmm_momentum_update(const index_t[::1] indptr, const index_t[::1] indices,
                          const floating[:, ::1] A, const gathered_t[:, ::1] X, floating[::1] weights,
                          floating[::1] velocity, double lr, double momentum, double weight_decay,
                          bint nesterov, int n_threads, floating[::1] bias=None,
                          floating[::1] bias_velocity=None):
    """Fused SDDMM + momentum update: the gradient of entry ``k`` is consumed as soon as it exists.

    ``g = <A[r, :], X[indices[k], :]>``, then ``v = momentum*v - lr*(g + weight_decay*w)`` and
    ``w += v`` (or ``w += momentum*v - lr*(g + weight_decay*w)`` with ``nesterov``). When ``bias``
    and ``bias_velocity`` are given, row ``r``'s bias gets the same step with gradient
    ``sum(A[r, :])`` and no weight decay. ``X`` as in :func:`sddmm`.
    """
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t B = A.shape[1]
    cdef Py_ssize_t r
    cdef floating f_lr = <floating>lr, f_mu = <floating>momentum, f_wd = <floating>weight_decay
    cdef floating step, vb
    cdef floating* p_b = NULL
    cdef floating* p_bv = NULL
    cdef floating* p_w = &weights[0] if weights.shape[0] > 0 else NULL
    cdef floating* p_v = &velocity[0] if velocity.shape[0] > 0 else NULL
    cdef const index_t* p_idx = &indices[0] if indices.shape[0] > 0 else NULL
    if bias is not None and bias_velocity is not None and bias.shape[0] > 0:
        p_b = &bias[0]
        p_bv = &bias_velocity[0]
    _check_gathered(<const floating*>NULL, <const gathered_t*>NULL)
    if n_rows == 0:
        return
    if B == 0:
        # no samples: the gradient is zero, the update still applies decay and momentum
        with nogil:
            _momentum_zero_grad(weights, velocity, f_lr, f_mu, f_wd, nesterov, n_threads)
            if p_b != NULL:
                _momentum_zero_grad(bias, bias_velocity, f_lr, f_mu, 0, nesterov, n_threads)
        return
    cdef Py_ssize_t n_cols = X.shape[0]
    cdef Py_ssize_t c = _chunk_rows(n_rows, indices.shape[0], n_cols, B * sizeof(gathered_t))
    cdef Py_ssize_t n_chunks = (n_cols + c - 1) // c if c > 0 else 0
    cdef Py_ssize_t p, nt = max(1, min(n_threads, n_chunks))
    cdef Py_ssize_t[:, ::1] cur
    if c > 0:  # as in sddmm: each thread a range of whole chunks of X's rows
        cur = np.empty((nt, n_rows), np.intp)
        with nogil:
            for p in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                _sddmm_cols_chunked(&A[0, 0], p_idx, &indptr[0], n_rows, min(n_cols, n_chunks * p // nt * c),
                                    min(n_cols, n_chunks * (p + 1) // nt * c), c, &X[0, 0], B, NULL, p_w, p_v,
                                    f_lr, f_mu, f_wd, nesterov, &cur[p, 0])
    setcy_apply_schedule()
    with nogil:
        for r in prange(n_rows, schedule="runtime", num_threads=n_threads):
            if c == 0:
                _sddmm_update_row(&A[r, 0], p_idx, indptr[r], indptr[r + 1], &X[0, 0], B,
                                  p_w, p_v, f_lr, f_mu, f_wd, nesterov)
            if p_b != NULL:
                step = f_lr * _rowsum(&A[r, 0], B)
                vb = f_mu * p_bv[r] - step
                p_bv[r] = vb
                if nesterov:
                    p_b[r] += f_mu * vb - step
                else:
                    p_b[r] += vb


cdef void _momentum_zero_grad(floating[::1] w, floating[::1] v, floating lr, floating mu, floating wd,
                              bint nesterov, int n_threads) noexcept nogil:
    cdef Py_ssize_t k
    cdef floating step, vk
    for k in prange(w.shape[0], schedule="static", num_threads=n_threads):
        step = lr * wd * w[k]
        vk = mu * v[k] - step
        v[k] = vk
        if nesterov:
            w[k] += mu * vk - step
        else:
            w[k] += vk


def momentum_update(floating[::1] weights, floating[::1] velocity, const floating[::1] grad,
                    double lr, double momentum, double weight_decay, bint nesterov, int n_threads):
    """In place: ``v = momentum*v - lr*(grad + weight_decay*w); w += v`` (or the Nesterov step)."""
    cdef Py_ssize_t n = weights.shape[0]
    cdef Py_ssize_t n_blocks = (n + ELEM_BLOCK - 1) // ELEM_BLOCK
    cdef Py_ssize_t blk, start, end
    cdef floating f_lr = <floating>lr, f_mu = <floating>momentum, f_wd = <floating>weight_decay
    if n == 0:
        return
    with nogil:
        for blk in prange(n_blocks, schedule="static", num_threads=n_threads):
            start = blk * ELEM_BLOCK
            end = start + ELEM_BLOCK
            if end > n:
                end = n
            _momentum_range(&weights[0], &velocity[0], &grad[0], start, end, f_lr, f_mu, f_wd,
                            nesterov)


# --------------------------------------------------------------------------------------------------
# pattern helpers for Sparse Evolutionary Training
# --------------------------------------------------------------------------------------------------
def csr_transpose_index(const index_t[::1] indptr, const index_t[::1] indices, Py_ssize_t n_cols,
                        index_t[::1] out_indptr, index_t[::1] out_indices, index_t[::1] out_perm):
    """Transposed pattern of a CSR matrix by one counting pass, O(nnz + n_rows + n_cols).

    Fills the CSR pattern of the transpose (``out_indptr`` of length ``n_cols + 1``, ``out_indices``)
    and ``out_perm`` such that entry ``q`` of the transpose is entry ``out_perm[q]`` of the input.
    Rows of the transpose come out sorted because the input rows are visited in order.
    """
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t r, c, q
    cdef index_t k
    with nogil:
        for c in range(n_cols + 1):
            out_indptr[c] = 0
        for k in range(indptr[n_rows]):
            out_indptr[indices[k] + 1] += 1
        for c in range(n_cols):
            out_indptr[c + 1] += out_indptr[c]
        # out_indptr[c] is used as a write cursor, then shifted back
        for r in range(n_rows):
            for k in range(indptr[r], indptr[r + 1]):
                c = indices[k]
                q = out_indptr[c]
                out_indices[q] = <index_t>r
                out_perm[q] = k
                out_indptr[c] = <index_t>(q + 1)
        for c in range(n_cols, 0, -1):
            out_indptr[c] = out_indptr[c - 1]
        out_indptr[0] = 0


cdef void _compact(Py_ssize_t n_rows, const index_t* indptr, const index_t* indices, const uint8_t* keep,
                   index_t* out_indptr, index_t* out_indices, int n_threads) noexcept nogil:
    cdef Py_ssize_t r, k, q
    cdef index_t cnt
    out_indptr[0] = 0
    for r in prange(n_rows, schedule="static", num_threads=n_threads):
        cnt = 0
        for k in range(indptr[r], indptr[r + 1]):
            cnt = cnt + (keep[k] != 0)
        out_indptr[r + 1] = cnt
    for r in range(n_rows):
        out_indptr[r + 1] += out_indptr[r]
    for r in prange(n_rows, schedule="static", num_threads=n_threads):
        q = out_indptr[r]
        for k in range(indptr[r], indptr[r + 1]):
            if keep[k]:
                out_indices[q] = indices[k]
                q = q + 1


def csr_compact_inplace(index_t[::1] indptr, index_t[::1] indices, floating[::1] data, floating[::1] velocity,
                        const uint8_t[::1] keep):
    """Keep the entries with ``keep[k] != 0``, in place; returns how many were kept.

    The kept entries move, in order, to the front of ``indices``, ``data`` and ``velocity``, and
    ``indptr`` becomes their row offsets. One sequential pass, O(nnz) and no extra memory: an entry
    only moves towards the front, to a position already read.
    """
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t r, k, start, end
    cdef Py_ssize_t q = 0
    if n_rows < 0:
        return 0
    with nogil:
        start = indptr[0]
        for r in range(n_rows):
            end = indptr[r + 1]
            indptr[r] = q
            for k in range(start, end):
                if keep[k]:
                    indices[q] = indices[k]
                    data[q] = data[k]
                    velocity[q] = velocity[k]
                    q = q + 1
            start = end
        indptr[n_rows] = q
    return q


def csr_merge_inplace(index_t[::1] indptr, index_t[::1] indices, floating[::1] data, floating[::1] velocity,
                      const index_t[::1] b_indptr, const index_t[::1] b_indices, const floating[::1] b_data):
    """Merge the sorted entries of ``b`` (disjoint from ``a``, velocity zero) into ``a``, in place.

    ``a`` is the CSR matrix with offsets ``indptr`` whose entries are at the front of ``indices``,
    ``data`` and ``velocity``; those arrays must have room for the entries of both. Rows are merged
    from the last to the first, each from its end, so every entry is written at or after the position
    it is read from: nothing is overwritten before it is read, and no extra memory is needed. O(nnz),
    sequential. Afterwards ``indptr`` holds the offsets of the union.
    """
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t r, i, j, q, a_start, b_start, out_start
    if n_rows < 1:
        return
    with nogil:
        for r in range(n_rows - 1, -1, -1):
            a_start = indptr[r]
            i = indptr[r + 1] - 1
            b_start = b_indptr[r]
            j = b_indptr[r + 1] - 1
            q = indptr[r + 1] + b_indptr[r + 1] - 1
            out_start = a_start + b_start
            while q >= out_start:
                if j < b_start and q == i:  # the rest of a's row is already where it belongs
                    break
                if j < b_start or (i >= a_start and indices[i] > b_indices[j]):
                    indices[q] = indices[i]
                    data[q] = data[i]
                    velocity[q] = velocity[i]
                    i = i - 1
                else:
                    indices[q] = b_indices[j]
                    data[q] = b_data[j]
                    velocity[q] = 0
                    j = j - 1
                q = q - 1
            indptr[r + 1] = indptr[r + 1] + b_indptr[r + 1]


def csr_pattern_compact(const index_t[::1] indptr, const index_t[::1] indices, const uint8_t[::1] keep,
                        index_t[::1] out_indptr, index_t[::1] out_indices, int n_threads):
    """The entries of a CSR pattern with ``keep[k] != 0``, rows in parallel, O(nnz)."""
    if out_indices.shape[0] == 0:
        out_indptr[:] = 0
        return
    with nogil:
        _compact(indptr.shape[0] - 1, &indptr[0], &indices[0], &keep[0], &out_indptr[0], &out_indices[0],
                 n_threads)


def coo_to_csr(const index_t[::1] rows, const index_t[::1] cols, index_t[::1] out_indptr,
               index_t[::1] out_indices):
    """Bucket ``(rows[m], cols[m])`` by row (counting sort, O(m)); rows come out unsorted inside."""
    cdef Py_ssize_t n_rows = out_indptr.shape[0] - 1
    cdef Py_ssize_t m, r, q
    with nogil:
        for r in range(n_rows + 1):
            out_indptr[r] = 0
        for m in range(rows.shape[0]):
            out_indptr[rows[m] + 1] += 1
        for r in range(n_rows):
            out_indptr[r + 1] += out_indptr[r]
        for m in range(rows.shape[0]):
            r = rows[m]
            q = out_indptr[r]
            out_indices[q] = cols[m]
            out_indptr[r] = <index_t>(q + 1)
        for r in range(n_rows, 0, -1):
            out_indptr[r] = out_indptr[r - 1]
        out_indptr[0] = 0


def csr_sort_rows(const index_t[::1] indptr, index_t[::1] indices, uint8_t[::1] keep, int n_threads):
    """Sort the column indices of every row in place; ``keep[k] = 0`` marks repeats. Returns the repeats."""
    cdef Py_ssize_t n_rows = indptr.shape[0] - 1
    cdef Py_ssize_t r, k, n_rep = 0
    with nogil:
        for r in prange(n_rows, schedule="static", num_threads=n_threads):
            if indptr[r + 1] > indptr[r]:
                if index_t is int32_t:
                    setcy_sort_i32(&indices[indptr[r]], indptr[r + 1] - indptr[r])
                else:
                    setcy_sort_i64(&indices[indptr[r]], indptr[r + 1] - indptr[r])
                keep[indptr[r]] = 1
                for k in range(indptr[r] + 1, indptr[r + 1]):
                    keep[k] = indices[k] != indices[k - 1]
                    n_rep += 1 - keep[k]
    return n_rep


def csr_contains(const index_t[::1] indptr, const index_t[::1] indices, const index_t[::1] rows,
                 const index_t[::1] cols, uint8_t[::1] out, int n_threads):
    """``out[m] = 1`` where ``(rows[m], cols[m])`` is stored in the CSR pattern (binary search per row)."""
    cdef Py_ssize_t m, lo, hi
    cdef const index_t* p_idx = &indices[0] if indices.shape[0] > 0 else NULL
    with nogil:
        for m in prange(rows.shape[0], schedule="static", num_threads=n_threads):
            hi = indptr[rows[m] + 1]
            lo = _lower_bound(p_idx, indptr[rows[m]], hi, cols[m])
            out[m] = 1 if (lo < hi and p_idx[lo] == cols[m]) else 0


cdef void _merge(Py_ssize_t n_rows, const index_t* a_indptr, const index_t* a_indices, const index_t* b_indptr,
                 const index_t* b_indices, index_t* out_indptr, index_t* out_indices, int n_threads) noexcept nogil:
    cdef Py_ssize_t r, i, j, q, i_end, j_end
    for r in range(n_rows + 1):
        out_indptr[r] = a_indptr[r] + b_indptr[r]
    for r in prange(n_rows, schedule="static", num_threads=n_threads):
        i = a_indptr[r]
        i_end = a_indptr[r + 1]
        j = b_indptr[r]
        j_end = b_indptr[r + 1]
        q = out_indptr[r]
        while i < i_end or j < j_end:
            if j >= j_end or (i < i_end and a_indices[i] < b_indices[j]):
                out_indices[q] = a_indices[i]
                i = i + 1
            else:
                out_indices[q] = b_indices[j]
                j = j + 1
            q = q + 1


cdef inline const index_t* _ptr(const index_t[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


def csr_pattern_merge(const index_t[::1] a_indptr, const index_t[::1] a_indices, const index_t[::1] b_indptr,
                      const index_t[::1] b_indices, index_t[::1] out_indptr, index_t[::1] out_indices,
                      int n_threads):
    """Union of two CSR patterns with disjoint, sorted rows, row by row in parallel, O(nnz)."""
    if out_indices.shape[0] == 0:
        out_indptr[:] = 0
        return
    with nogil:
        _merge(a_indptr.shape[0] - 1, &a_indptr[0], _ptr(a_indices), &b_indptr[0], _ptr(b_indices),
               &out_indptr[0], &out_indices[0], n_threads)


cdef inline bint _outside(const index_t[::1] a, Py_ssize_t hi) noexcept nogil:
    """Whether some value of ``a`` lies outside ``[0, hi]``."""
    if index_t is int32_t:
        return setcy_outside_i32(_ptr(a), a.shape[0], <int32_t>hi)
    else:
        return setcy_outside_i64(_ptr(a), a.shape[0], <int64_t>hi)


def same_values(const floating[::1] a, const floating[::1] b):
    """Whether ``a`` and ``b`` hold the same bits (a sequential ``memcmp``; NaNs compare by their bits)."""
    if a.shape[0] != b.shape[0]:
        return False
    if a.shape[0] == 0:
        return True
    cdef int diff
    with nogil:
        diff = memcmp(&a[0], &b[0], a.shape[0] * sizeof(floating))
    return diff == 0


def pattern_outside(const index_t[::1] indptr, const index_t[::1] indices, const index_t[::1] t_indptr,
                    const index_t[::1] t_indices, const index_t[::1] perm, Py_ssize_t n_in, Py_ssize_t n_out,
                    bint transposed=True):
    """The memory-safety part of a layer pattern's check, in one call (for callers that re-check often).

    Returns -1 when the lengths do not fit ``n_in x n_out`` (``indptr``: ``n_out + 1``, ``t_indptr``:
    ``n_in + 1``, the other three: ``len(indices)``), else the position (1-5, in argument order) of
    the first array holding a value outside its range (offsets in ``[0, nnz]``, ``indices`` in
    ``[0, n_in)``, ``t_indices`` in ``[0, n_out)``, ``perm`` in ``[0, nnz)``), else 0. Sortedness and
    the transposed index matching are not looked at. The typed arguments refuse arrays of another
    dtype, dimension or layout (ValueError / TypeError). ``transposed=False`` leaves out the ranges of the
    last three (what a forward product, which reads only ``indptr`` and ``indices``, needs).
    """
    cdef Py_ssize_t nnz = indices.shape[0]
    if (indptr.shape[0] != n_out + 1 or t_indptr.shape[0] != n_in + 1 or t_indices.shape[0] != nnz
            or perm.shape[0] != nnz):
        return -1
    cdef int code = 0
    with nogil:
        if _outside(indptr, nnz):
            code = 1
        elif _outside(indices, n_in - 1):
            code = 2
        elif transposed and _outside(t_indptr, nnz):
            code = 3
        elif transposed and _outside(t_indices, n_out - 1):
            code = 4
        elif transposed and _outside(perm, nnz - 1):
            code = 5
    return code


# --------------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------------
def gather_transpose(const floating[:, ::1] X, const int64_t[::1] rows, floating[:, ::1] out, int n_threads):
    """``out[f, b] = X[rows[b], f]``: pick samples of a batch-major array into a feature-major block.

    Tiles of 16 samples x 256 features run in parallel: reads stay in L1, each write fills a line.
    """
    cdef Py_ssize_t n_feat = X.shape[1], B = rows.shape[0]
    cdef Py_ssize_t blk, f, f0, f1, b, b0, b1, tb
    cdef Py_ssize_t FB = 256, BB = 16
    cdef Py_ssize_t n_fblocks = (n_feat + FB - 1) // FB
    cdef Py_ssize_t n_bblocks = (B + BB - 1) // BB
    if B == 0 or n_feat == 0:
        return
    with nogil:
        for blk in prange(n_fblocks * n_bblocks, schedule="static", num_threads=n_threads):
            f0 = (blk // n_bblocks) * FB
            f1 = f0 + FB
            if f1 > n_feat:
                f1 = n_feat
            b0 = (blk % n_bblocks) * BB
            b1 = b0 + BB
            if b1 > B:
                b1 = B
            for f in range(f0, f1):
                for b in range(b0, b1):
                    out[f, b] = X[rows[b], f]


# --------------------------------------------------------------------------------------------------
# element-wise steps of a ReLU layer, fused with inverted dropout
# --------------------------------------------------------------------------------------------------
def to_bfloat16(const float[:, ::1] src, uint16_t[:, ::1] dst, int n_threads):
    """``dst = src`` rounded to bfloat16 (nearest even; NaN stays NaN), as its bits; same shapes."""
    cdef Py_ssize_t n = src.shape[0] * src.shape[1]
    cdef Py_ssize_t n_blocks = (n + ELEM_BLOCK - 1) // ELEM_BLOCK
    cdef Py_ssize_t blk, start, end
    if n == 0:
        return
    cdef const float* p_src = &src[0, 0]
    cdef uint16_t* p_dst = &dst[0, 0]
    with nogil:
        for blk in prange(n_blocks, schedule="static", num_threads=n_threads):
            start = blk * ELEM_BLOCK
            end = start + ELEM_BLOCK
            if end > n:
                end = n
            setcy_to_bf16(p_src, p_dst, start, end)


def relu_dropout(floating[:, ::1] Z, const uint8_t[:, ::1] rand, int threshold, double scale, int n_threads):
    """In place: ``Z = max(Z, 0)``, then, when ``rand`` is given, ``Z *= (rand >= threshold) * scale``."""
    cdef Py_ssize_t n = Z.shape[0] * Z.shape[1]
    cdef Py_ssize_t n_blocks = (n + ELEM_BLOCK - 1) // ELEM_BLOCK
    cdef Py_ssize_t blk, start, end
    cdef floating s = <floating>scale
    cdef uint8_t t = <uint8_t>threshold
    cdef const uint8_t* p_rand = NULL
    if n == 0:
        return
    if rand is not None:
        p_rand = &rand[0, 0]
    cdef floating* p_z = &Z[0, 0]
    with nogil:
        for blk in prange(n_blocks, schedule="static", num_threads=n_threads):
            start = blk * ELEM_BLOCK
            end = start + ELEM_BLOCK
            if end > n:
                end = n
            if floating is float:
                setcy_relu_dropout_f32(p_z, p_rand, start, end, t, s)
            else:
                setcy_relu_dropout_f64(p_z, p_rand, start, end, t, s)


def relu_backward(floating[:, ::1] D, const floating[:, ::1] A, double scale, int n_threads):
    """In place: ``D = (A > 0) ? D * scale : 0`` (``A`` the layer's output after dropout; dropped units are 0)."""
    cdef Py_ssize_t n = D.shape[0] * D.shape[1]
    cdef Py_ssize_t n_blocks = (n + ELEM_BLOCK - 1) // ELEM_BLOCK
    cdef Py_ssize_t blk, start, end
    cdef floating s = <floating>scale
    if n == 0:
        return
    cdef floating* p_d = &D[0, 0]
    cdef const floating* p_a = &A[0, 0]
    with nogil:
        for blk in prange(n_blocks, schedule="static", num_threads=n_threads):
            start = blk * ELEM_BLOCK
            end = start + ELEM_BLOCK
            if end > n:
                end = n
            if floating is float:
                setcy_relu_backward_f32(p_d, p_a, start, end, s)
            else:
                setcy_relu_backward_f64(p_d, p_a, start, end, s)
