/*
 * Row kernels of set_cy: the innermost loops, written once in C so that they can be compiled for several
 * instruction sets (GCC function multi-versioning: AVX-512, AVX2+FMA, baseline) and chosen at run time,
 * without `-march=native`. The Cython module `_kernels.pyx` owns the parallel loops (OpenMP prange over
 * rows) and calls these for one row at a time; nothing here allocates, validates or touches Python.
 *
 * Layout: dense operands are feature-major, C-contiguous (n_features x batch), so that every stored
 * connection (row r, column c, value w) of a CSR matrix turns into a contiguous length-`batch` AXPY
 * out[r, :] += w * X[c, :]  (products) or a length-`batch` dot product <A[r, :], X[c, :]> (SDDMM).
 * The output row of a product is kept in registers in blocks of SETCY_CH_* columns of the batch.
 */
#ifndef SET_CY_ROWKERNELS_H
#define SET_CY_ROWKERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef SET_CY_OPENMP
#define SET_CY_OPENMP 0
#endif
/* Schedule of the loops over rows (OpenMP "runtime" schedule, set before each parallel loop by the
 * calling thread): kind 1 = static, 2 = dynamic, 3 = guided; chunk 0 = the OpenMP default. */
static int setcy_sched_kind = 3;  /* guided: fastest in 21 of 36 cases of bench_kernels.py --schedules, 3% over static */
static int setcy_sched_chunk = 0;

#if SET_CY_OPENMP
#include <omp.h>
static int setcy_max_threads(void) { return omp_get_max_threads(); }
static void setcy_apply_schedule(void) { omp_set_schedule((omp_sched_t)setcy_sched_kind, setcy_sched_chunk); }
#else
static int setcy_max_threads(void) { return 1; }
static void setcy_apply_schedule(void) { }
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 12 && !defined(SET_CY_NO_CLONES)
#define SETCY_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define SETCY_ISA_DISPATCH 1
#else
#define SETCY_CLONES
#define SETCY_ISA_DISPATCH 0
#endif

/* Helpers called from the multi-versioned kernels must be inlined into each clone, or they are
 * compiled once for the baseline instruction set (the SDDMM's dot products ran as scalar code). */
#if defined(__GNUC__) || defined(__clang__)
#define SETCY_INLINE static inline __attribute__((always_inline))
#else
#define SETCY_INLINE static inline
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SETCY_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
#define SETCY_RESTRICT __restrict__
#else
#define SETCY_PREFETCH(p) ((void)0)
#define SETCY_RESTRICT
#endif

/* Block of batch columns kept in registers (64 B cache lines: 4 lines per block in float32 and float64). */
#define SETCY_CH_f32 64
#define SETCY_CH_f64 32
/* How many connections ahead to prefetch the gathered row. */
#define SETCY_PF 8

/* Small batches (B <= 8): the batch width is a compile-time constant, so the inner loops unroll into
 * registers; two accumulator sets alternate to halve the FMA dependency chain of a row. */
#define SETCY_DEFINE_SMALL_B(V, I, SUF, NB)                                                                \
SETCY_INLINE void setcy_spmm_row_##SUF##_b##NB(const V *SETCY_RESTRICT data, const I *SETCY_RESTRICT perm,\
    const I *SETCY_RESTRICT idx, ptrdiff_t start, ptrdiff_t end, const V *SETCY_RESTRICT X, V bias,      \
    V *SETCY_RESTRICT out)                                                                                \
{                                                                                                          \
    V a0[NB], a1[NB];                                                                                      \
    ptrdiff_t k = start;                                                                                   \
    int t;                                                                                                 \
    for (t = 0; t < NB; t++) { a0[t] = bias; a1[t] = 0; }                                                  \
    for (; k + 1 < end; k += 2) {                                                                          \
        if (k + 16 < end) { SETCY_PREFETCH(X + (ptrdiff_t)idx[k + 16] * NB);                               \
                            SETCY_PREFETCH(X + (ptrdiff_t)idx[k + 17] * NB); }                             \
        __builtin_prefetch(idx + k + 256, 0, 0); __builtin_prefetch(data + k + 256, 0, 0);                  \
        const V w0 = perm ? data[perm[k]] : data[k], w1 = perm ? data[perm[k + 1]] : data[k + 1];          \
        const V *x0 = X + (ptrdiff_t)idx[k] * NB, *x1 = X + (ptrdiff_t)idx[k + 1] * NB;                    \
        for (t = 0; t < NB; t++) { a0[t] += w0 * x0[t]; a1[t] += w1 * x1[t]; }                             \
    }                                                                                                      \
    if (k < end) {                                                                                         \
        const V w0 = perm ? data[perm[k]] : data[k];                                                       \
        const V *x0 = X + (ptrdiff_t)idx[k] * NB;                                                          \
        for (t = 0; t < NB; t++) a0[t] += w0 * x0[t];                                                      \
    }                                                                                                      \
    for (t = 0; t < NB; t++) out[t] = a0[t] + a1[t];                                                       \
}                                                                                                          \
SETCY_INLINE V setcy_dot_##SUF##_b##NB(const V *SETCY_RESTRICT a, const V *SETCY_RESTRICT x)            \
{                                                                                                          \
    V s = 0;                                                                                               \
    int t;                                                                                                 \
    for (t = 0; t < NB; t++) s += a[t] * x[t];                                                             \
    return s;                                                                                              \
}                                                                                                          \
SETCY_INLINE void setcy_sddmm_loop_##SUF##_b##NB(const V *SETCY_RESTRICT a, const I *SETCY_RESTRICT idx,  \
    ptrdiff_t start, ptrdiff_t end, const V *SETCY_RESTRICT X, V *SETCY_RESTRICT g)                       \
{                                                                                                          \
    ptrdiff_t k;                                                                                           \
    for (k = start; k < end; k++) {                                                                        \
        if (k + 16 < end) SETCY_PREFETCH(X + (ptrdiff_t)idx[k + 16] * NB);                                 \
        g[k] = setcy_dot_##SUF##_b##NB(a, X + (ptrdiff_t)idx[k] * NB);                                     \
    }                                                                                                      \
}                                                                                                          \
SETCY_INLINE void setcy_update_loop_##SUF##_b##NB(const V *SETCY_RESTRICT a, const I *SETCY_RESTRICT idx, \
    ptrdiff_t start, ptrdiff_t end, const V *SETCY_RESTRICT X, V *SETCY_RESTRICT w, V *SETCY_RESTRICT v, \
    V lr, V mu, V wd, int nesterov)                                                                        \
{                                                                                                          \
    ptrdiff_t k;                                                                                           \
    for (k = start; k < end; k++) {                                                                        \
        if (k + 16 < end) SETCY_PREFETCH(X + (ptrdiff_t)idx[k + 16] * NB);                                 \
        __builtin_prefetch(idx + k + 256, 0, 0); __builtin_prefetch(w + k + 256, 1, 0);                    \
        __builtin_prefetch(v + k + 256, 1, 0);                                                             \
        const V step = lr * (setcy_dot_##SUF##_b##NB(a, X + (ptrdiff_t)idx[k] * NB) + wd * w[k]);          \
        const V vk = mu * v[k] - step;                                                                     \
        v[k] = vk;                                                                                         \
        w[k] += nesterov ? (mu * vk - step) : vk;                                                          \
    }                                                                                                      \
}                                                                                                          \
SETCY_INLINE void setcy_scatter_row_##SUF##_b##NB(const V *SETCY_RESTRICT data,                           \
    const I *SETCY_RESTRICT idx, ptrdiff_t start, ptrdiff_t end, const V *SETCY_RESTRICT d,              \
    V *SETCY_RESTRICT out)                                                                                \
{                                                                                                          \
    V dv[NB];                                                                                              \
    ptrdiff_t k;                                                                                           \
    int t;                                                                                                 \
    for (t = 0; t < NB; t++) dv[t] = d[t];                                                                 \
    for (k = start; k < end; k++) {                                                                        \
        if (k + 16 < end) __builtin_prefetch(out + (ptrdiff_t)idx[k + 16] * NB, 1, 3);                     \
        __builtin_prefetch(idx + k + 256, 0, 0); __builtin_prefetch(data + k + 256, 0, 0);                  \
        V *o = out + (ptrdiff_t)idx[k] * NB;                                                               \
        const V w = data[k];                                                                               \
        for (t = 0; t < NB; t++) o[t] += w * dv[t];                                                        \
    }                                                                                                      \
}

#define SETCY_DEFINE_SMALL_BS(V, I, SUF)                                                                   \
/* Whether a[0:B] is all zero: a ReLU unit inactive (or dropped) for every sample of the batch. */       \
SETCY_INLINE int setcy_zero_row_##SUF(const V *SETCY_RESTRICT a, ptrdiff_t B)                              \
{                                                                                                          \
    ptrdiff_t t;                                                                                           \
    for (t = 0; t < B; t++)                                                                                \
        if (a[t] != 0) return 0;                                                                           \
    return 1;                                                                                              \
}                                                                                                          \
SETCY_DEFINE_SMALL_B(V, I, SUF, 1) SETCY_DEFINE_SMALL_B(V, I, SUF, 2) SETCY_DEFINE_SMALL_B(V, I, SUF, 3)    \
SETCY_DEFINE_SMALL_B(V, I, SUF, 4) SETCY_DEFINE_SMALL_B(V, I, SUF, 5) SETCY_DEFINE_SMALL_B(V, I, SUF, 6)    \
SETCY_DEFINE_SMALL_B(V, I, SUF, 7) SETCY_DEFINE_SMALL_B(V, I, SUF, 8)

/* bfloat16 as its bits (the upper half of a float32) in a uint16_t: widening is exact; narrowing rounds to
 * nearest even and keeps NaN a NaN (a quiet one). */
SETCY_INLINE float setcy_bf16_load(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
SETCY_INLINE uint16_t setcy_bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
#define SETCY_LD_SAME(x) (x)

/* switch over the compiled small batch widths: FN<B> ARGS for B in 1..8, else falls through */
#define SETCY_SMALL_B_SWITCH(B, FN, ARGS)                                                                  \
    switch (B) {                                                                                           \
    case 1: FN##1 ARGS; return; case 2: FN##2 ARGS; return; case 3: FN##3 ARGS; return;                    \
    case 4: FN##4 ARGS; return; case 5: FN##5 ARGS; return; case 6: FN##6 ARGS; return;                    \
    case 7: FN##7 ARGS; return; case 8: FN##8 ARGS; return;                                                \
    default: break;                                                                                        \
    }

/* switch over the common wider batches: FN(PRE..., B, POST...) with B = 16, 32, 64 or 128 as a compile-time
 * constant (FN always inlined), else falls through. The SDDMM's dot products unroll and address the gathered
 * rows with a constant stride only then (the products unroll through their blocks of SETCY_CH_* columns). */
#define SETCY_EXPAND(...) __VA_ARGS__
#define SETCY_WIDE_B_SWITCH(B, FN, PRE, POST)                                                              \
    switch (B) {                                                                                           \
    case 16: FN(SETCY_EXPAND PRE, 16, SETCY_EXPAND POST); return;                                          \
    case 32: FN(SETCY_EXPAND PRE, 32, SETCY_EXPAND POST); return;                                          \
    case 64: FN(SETCY_EXPAND PRE, 64, SETCY_EXPAND POST); return;                                          \
    case 128: FN(SETCY_EXPAND PRE, 128, SETCY_EXPAND POST); return;                                        \
    default: break;                                                                                        \
    }

#define SETCY_SMALL_SWITCH_1(B, FN, ARGS) SETCY_SMALL_B_SWITCH(B, FN, ARGS)
#define SETCY_SMALL_SWITCH_0(B, FN, ARGS)

/* One block of W (a compile-time constant) batch columns of an output row, kept in registers. */
#define SETCY_SPMM_FIXED(V, XV, LD, W)                                                                     \
    {                                                                                                      \
        V acc[W];                                                                                          \
        for (t = 0; t < (W); t++) acc[t] = bias;                                                           \
        for (k = start; k < end; k++) {                                                                    \
            const XV *SETCY_RESTRICT x = X + (ptrdiff_t)idx[k] * B + b0;                                   \
            const V w = perm ? data[perm[k]] : data[k];                                                    \
            if (k + SETCY_PF < end) {                                                                      \
                const char *p = (const char *)(X + (ptrdiff_t)idx[k + SETCY_PF] * B + b0);                 \
                int l;                                                                                     \
                for (l = 0; l < (W) * (int)sizeof(XV); l += 64) SETCY_PREFETCH(p + l);                    \
            }                                                                                              \
            for (t = 0; t < (W); t++) acc[t] += w * LD(x[t]);                                              \
        }                                                                                                  \
        for (t = 0; t < (W); t++) out[b0 + t] = acc[t];                                                    \
        b0 += (W);                                                                                         \
    }

/* The row kernels for values V, indices I, gathered rows of XV read through LD (V or bfloat16 bits);
 * SMALL = 1 adds the unrolled small-batch variants (B <= 8), ZSUF names the zero-row test of V. */
#define SETCY_DEFINE_ROW_KERNELS(V, I, SUF, CH, XV, LD, ZSUF, SMALL)                                        \
/* out[0:B] = bias + sum_{k in [start, end)} w_k * X[idx[k], 0:B], w_k = data[perm[k]] or data[k]. */      \
SETCY_CLONES static void setcy_spmm_row_##SUF(                                                             \
    const V *SETCY_RESTRICT data, const I *SETCY_RESTRICT perm, const I *SETCY_RESTRICT idx,             \
    ptrdiff_t start, ptrdiff_t end, const XV *SETCY_RESTRICT X, ptrdiff_t B, V bias,                     \
    V *SETCY_RESTRICT out)                                                                                \
{                                                                                                          \
    ptrdiff_t b0 = 0, k;                                                                                   \
    int t;                                                                                                 \
    SETCY_SMALL_SWITCH_##SMALL(B, setcy_spmm_row_##SUF##_b, (data, perm, idx, start, end, X, bias, out))  \
    while (b0 < B) {                                                                                       \
        const ptrdiff_t rem = B - b0;                                                                      \
        if (rem >= CH) SETCY_SPMM_FIXED(V, XV, LD, CH)                                                     \
        else if (rem >= CH / 2) SETCY_SPMM_FIXED(V, XV, LD, CH / 2)                                        \
        else if (rem >= CH / 4) SETCY_SPMM_FIXED(V, XV, LD, CH / 4)                                        \
        else {  /* fewer than CH / 4 columns left */                                                       \
            V acc[CH / 4];                                                                                 \
            for (t = 0; t < rem; t++) acc[t] = bias;                                                       \
            for (k = start; k < end; k++) {                                                                \
                const XV *SETCY_RESTRICT x = X + (ptrdiff_t)idx[k] * B + b0;                               \
                const V w = perm ? data[perm[k]] : data[k];                                                \
                for (t = 0; t < rem; t++) acc[t] += w * LD(x[t]);                                          \
            }                                                                                              \
            for (t = 0; t < rem; t++) out[b0 + t] = acc[t];                                                \
            b0 = B;                                                                                        \
        }                                                                                                  \
    }                                                                                                      \
}                                                                                                          \
                                                                                                           \
/* Four dot products <a, x_j>, j < 4, sharing the row a; SETCY_LANES independent lanes per product   \
 * and a pairwise reduction, so that it vectorises without -ffast-math. */                                \
SETCY_INLINE void setcy_dot4_##SUF(const V *SETCY_RESTRICT a, const XV *SETCY_RESTRICT x0,              \
    const XV *SETCY_RESTRICT x1, const XV *SETCY_RESTRICT x2, const XV *SETCY_RESTRICT x3, ptrdiff_t B,   \
    V *SETCY_RESTRICT s)                                                                                  \
{                                                                                                          \
    enum { L = 64 / sizeof(V) };                                                                           \
    V c0[L], c1[L], c2[L], c3[L];                                                                          \
    ptrdiff_t b = 0;                                                                                       \
    int t, h;                                                                                              \
    for (t = 0; t < L; t++) { c0[t] = 0; c1[t] = 0; c2[t] = 0; c3[t] = 0; }                                \
    for (; b + L <= B; b += L) {                                                                           \
        for (t = 0; t < L; t++) {                                                                          \
            const V av = a[b + t];                                                                         \
            c0[t] += av * LD(x0[b + t]); c1[t] += av * LD(x1[b + t]);                                      \
            c2[t] += av * LD(x2[b + t]); c3[t] += av * LD(x3[b + t]);                                      \
        }                                                                                                  \
    }                                                                                                      \
    {   /* horizontal sums by halving in vector registers: 64 -> 32 -> 16 bytes, then the lanes */        \
        typedef V vh __attribute__((vector_size(32)));                                                     \
        typedef V vq __attribute__((vector_size(16)));                                                     \
        V *cs[4] = {c0, c1, c2, c3};                                                                       \
        int j;                                                                                             \
        for (j = 0; j < 4; j++) {                                                                          \
            vh lo, hi;                                                                                     \
            vq ql, qh;                                                                                     \
            memcpy(&lo, cs[j], 32); memcpy(&hi, cs[j] + L / 2, 32); lo += hi;                              \
            memcpy(&ql, &lo, 16); memcpy(&qh, (const char *)&lo + 16, 16); ql += qh;                       \
            cs[j][0] = ql[0];                                                                              \
            for (h = 1; h < (int)(16 / sizeof(V)); h++) cs[j][0] += ql[h];                                 \
        }                                                                                                  \
        (void)t;                                                                                           \
    }                                                                                                      \
    for (; b < B; b++) {                                                                                   \
        c0[0] += a[b] * LD(x0[b]); c1[0] += a[b] * LD(x1[b]);                                              \
        c2[0] += a[b] * LD(x2[b]); c3[0] += a[b] * LD(x3[b]);                                              \
    }                                                                                                      \
    s[0] = c0[0]; s[1] = c1[0]; s[2] = c2[0]; s[3] = c3[0];                                                \
}                                                                                                          \
                                                                                                           \
/* Dot products of the row a with the gathered rows X[idx[k], :] for k in [start, end), four at a time;  \
 * the tail repeats the last row (its extra results are discarded). */                                    \
SETCY_INLINE void setcy_dots_##SUF(const V *SETCY_RESTRICT a, const I *SETCY_RESTRICT idx,              \
    ptrdiff_t k, ptrdiff_t end, const XV *SETCY_RESTRICT X, ptrdiff_t B, V *SETCY_RESTRICT s)            \
{                                                                                                          \
    const XV *x[4];                                                                                        \
    int j;                                                                                                 \
    for (j = 0; j < 4; j++) x[j] = X + (ptrdiff_t)idx[(k + j < end) ? k + j : end - 1] * B;               \
    for (j = 0; j < 4; j++)                                                                                \
        if (k + j + 2 * 4 < end) {  /* the whole row, not just its first line */                           \
            const char *p = (const char *)(X + (ptrdiff_t)idx[k + j + 2 * 4] * B);                         \
            ptrdiff_t o;                                                                                   \
            for (o = 0; o < B * (ptrdiff_t)sizeof(XV); o += 64) SETCY_PREFETCH(p + o);                     \
        }                                                                                                  \
    setcy_dot4_##SUF(a, x[0], x[1], x[2], x[3], B, s);                                                    \
}                                                                                                          \
                                                                                                           \
/* g[k] = <A_row[0:B], X[idx[k], 0:B]> for k in [start, end), four at a time. */                             \
SETCY_INLINE void setcy_sddmm_dots_##SUF(const V *SETCY_RESTRICT a, const I *SETCY_RESTRICT idx,         \
    ptrdiff_t start, ptrdiff_t end, const XV *SETCY_RESTRICT X, ptrdiff_t B, V *SETCY_RESTRICT g)        \
{                                                                                                          \
    ptrdiff_t k;                                                                                           \
    int j;                                                                                                 \
    V s[4];                                                                                                \
    for (k = start; k < end; k += 4) {                                                                     \
        setcy_dots_##SUF(a, idx, k, end, X, B, s);                                                         \
        for (j = 0; j < 4 && k + j < end; j++) g[k + j] = s[j];                                            \
    }                                                                                                      \
}                                                                                                          \
SETCY_CLONES static void setcy_sddmm_row_##SUF(                                                            \
    const V *SETCY_RESTRICT a, const I *SETCY_RESTRICT idx, ptrdiff_t start, ptrdiff_t end,              \
    const XV *SETCY_RESTRICT X, ptrdiff_t B, V *SETCY_RESTRICT g)                                         \
{                                                                                                          \
    SETCY_SMALL_SWITCH_##SMALL(B, setcy_sddmm_loop_##SUF##_b, (a, idx, start, end, X, g))                  \
    SETCY_WIDE_B_SWITCH(B, setcy_sddmm_dots_##SUF, (a, idx, start, end, X), (g))                            \
    setcy_sddmm_dots_##SUF(a, idx, start, end, X, B, g);                                                   \
}                                                                                                          \
                                                                                                           \
/* The same gradient, consumed at once by the momentum update (no gradient buffer):                      \
 * v = mu*v - lr*(g + wd*w);  w += v            (heavy ball)                                             \
 * v = mu*v - lr*(g + wd*w);  w += mu*v - lr*(g + wd*w)   (Nesterov)                                       */\
SETCY_INLINE void setcy_update_dots_##SUF(const V *SETCY_RESTRICT a, const I *SETCY_RESTRICT idx,        \
    ptrdiff_t start, ptrdiff_t end, const XV *SETCY_RESTRICT X, ptrdiff_t B, V *SETCY_RESTRICT w,        \
    V *SETCY_RESTRICT v, V lr, V mu, V wd, int nesterov)                                                   \
{                                                                                                          \
    ptrdiff_t k;                                                                                           \
    int j;                                                                                                 \
    V s[4];                                                                                                \
    for (k = start; k < end; k += 4) {                                                                     \
        setcy_dots_##SUF(a, idx, k, end, X, B, s);                                                         \
        for (j = 0; j < 4 && k + j < end; j++) {                                                           \
            const V step = lr * (s[j] + wd * w[k + j]);                                                    \
            const V vk = mu * v[k + j] - step;                                                             \
            v[k + j] = vk;                                                                                 \
            w[k + j] += nesterov ? (mu * vk - step) : vk;                                                  \
        }                                                                                                  \
    }                                                                                                      \
}                                                                                                          \
SETCY_CLONES static void setcy_sddmm_update_row_##SUF(                                                     \
    const V *SETCY_RESTRICT a, const I *SETCY_RESTRICT idx, ptrdiff_t start, ptrdiff_t end,              \
    const XV *SETCY_RESTRICT X, ptrdiff_t B, V *SETCY_RESTRICT w, V *SETCY_RESTRICT v,                   \
    V lr, V mu, V wd, int nesterov)                                                                        \
{                                                                                                          \
    ptrdiff_t k;                                                                                           \
    if (setcy_zero_row_##ZSUF(a, B)) {  /* zero gradient: no gathers, the same arithmetic as with g = 0 */   \
        for (k = start; k < end; k++) {                                                                    \
            const V step = lr * (wd * w[k]);                                                               \
            const V vk = mu * v[k] - step;                                                                 \
            v[k] = vk;                                                                                     \
            w[k] += nesterov ? (mu * vk - step) : vk;                                                      \
        }                                                                                                  \
        return;                                                                                            \
    }                                                                                                      \
    SETCY_SMALL_SWITCH_##SMALL(B, setcy_update_loop_##SUF##_b, (a, idx, start, end, X, w, v, lr, mu, wd, nesterov))\
    SETCY_WIDE_B_SWITCH(B, setcy_update_dots_##SUF, (a, idx, start, end, X), (w, v, lr, mu, wd, nesterov))  \
    setcy_update_dots_##SUF(a, idx, start, end, X, B, w, v, lr, mu, wd, nesterov);                        \
}

#define SETCY_DEFINE_SCATTER(V, I, SUF)                                                                    \
/* out[idx[k], 0:B] += data[k] * d[0:B] for k in [start, end): one row of W^T scattered into W d. */       \
SETCY_CLONES static void setcy_scatter_row_##SUF(const V *SETCY_RESTRICT data, const I *SETCY_RESTRICT idx,\
    ptrdiff_t start, ptrdiff_t end, const V *SETCY_RESTRICT d, ptrdiff_t B, V *SETCY_RESTRICT out)        \
{                                                                                                          \
    ptrdiff_t k, t;                                                                                        \
    if (setcy_zero_row_##SUF(d, B)) return;  /* adds nothing */                                            \
    SETCY_SMALL_B_SWITCH(B, setcy_scatter_row_##SUF##_b, (data, idx, start, end, d, out))                  \
    for (k = start; k < end; k++) {                                                                        \
        V *SETCY_RESTRICT o = out + (ptrdiff_t)idx[k] * B;                                                 \
        const V w = data[k];                                                                               \
        for (t = 0; t < B; t++) o[t] += w * d[t];                                                          \
    }                                                                                                      \
}

SETCY_DEFINE_SMALL_BS(float, int32_t, f32_i32)
SETCY_DEFINE_SMALL_BS(float, int64_t, f32_i64)
SETCY_DEFINE_SMALL_BS(double, int32_t, f64_i32)
SETCY_DEFINE_SMALL_BS(double, int64_t, f64_i64)
SETCY_DEFINE_SCATTER(float, int32_t, f32_i32)
SETCY_DEFINE_SCATTER(float, int64_t, f32_i64)
SETCY_DEFINE_SCATTER(double, int32_t, f64_i32)
SETCY_DEFINE_SCATTER(double, int64_t, f64_i64)

SETCY_DEFINE_ROW_KERNELS(float, int32_t, f32_i32, SETCY_CH_f32, float, SETCY_LD_SAME, f32_i32, 1)
SETCY_DEFINE_ROW_KERNELS(float, int64_t, f32_i64, SETCY_CH_f32, float, SETCY_LD_SAME, f32_i64, 1)
SETCY_DEFINE_ROW_KERNELS(double, int32_t, f64_i32, SETCY_CH_f64, double, SETCY_LD_SAME, f64_i32, 1)
SETCY_DEFINE_ROW_KERNELS(double, int64_t, f64_i64, SETCY_CH_f64, double, SETCY_LD_SAME, f64_i64, 1)
/* float32 values and arithmetic over gathered rows stored as bfloat16 (half the bytes per gathered row) */
SETCY_DEFINE_ROW_KERNELS(float, int32_t, bf_i32, SETCY_CH_f32, uint16_t, setcy_bf16_load, f32_i32, 0)
SETCY_DEFINE_ROW_KERNELS(float, int64_t, bf_i64, SETCY_CH_f32, uint16_t, setcy_bf16_load, f32_i64, 0)

#define SETCY_DEFINE_ROWSUM(V, SUF)                                                                        \
/* sum of a[0:B] (lanes + pairwise reduction, as in the row kernels); one per value type. */               \
SETCY_CLONES static V setcy_rowsum_##SUF(const V *SETCY_RESTRICT a, ptrdiff_t B)                           \
{                                                                                                          \
    enum { L = 64 / sizeof(V) };                                                                           \
    V c[L];                                                                                                \
    ptrdiff_t b = 0;                                                                                       \
    int t, h;                                                                                              \
    for (t = 0; t < L; t++) c[t] = 0;                                                                      \
    for (; b + L <= B; b += L)                                                                             \
        for (t = 0; t < L; t++) c[t] += a[b + t];                                                          \
    for (h = L / 2; h > 0; h /= 2)                                                                         \
        for (t = 0; t < h; t++) c[t] += c[t + h];                                                          \
    for (; b < B; b++) c[0] += a[b];                                                                       \
    return c[0];                                                                                           \
}

SETCY_DEFINE_ROWSUM(float, f32)
SETCY_DEFINE_ROWSUM(double, f64)

#define SETCY_DEFINE_UPDATE(V, SUF)                                                                        \
/* Unfused update over [start, end): v = mu*v - lr*(g + wd*w); w += v (or the Nesterov step). */            \
SETCY_CLONES static void setcy_momentum_range_##SUF(                                                       \
    V *SETCY_RESTRICT w, V *SETCY_RESTRICT v, const V *SETCY_RESTRICT g, ptrdiff_t start,                \
    ptrdiff_t end, V lr, V mu, V wd, int nesterov)                                                         \
{                                                                                                          \
    ptrdiff_t k;                                                                                           \
    if (nesterov) {                                                                                        \
        for (k = start; k < end; k++) {                                                                    \
            const V step = lr * (g[k] + wd * w[k]);                                                        \
            const V vk = mu * v[k] - step;                                                                 \
            v[k] = vk;                                                                                     \
            w[k] += mu * vk - step;                                                                        \
        }                                                                                                  \
    } else {                                                                                               \
        for (k = start; k < end; k++) {                                                                    \
            const V vk = mu * v[k] - lr * (g[k] + wd * w[k]);                                              \
            v[k] = vk;                                                                                     \
            w[k] += vk;                                                                                    \
        }                                                                                                  \
    }                                                                                                      \
}

SETCY_DEFINE_UPDATE(float, f32)
SETCY_DEFINE_UPDATE(double, f64)

#define SETCY_DEFINE_RELU(V, SUF)                                                                          \
/* z = max(z, 0), then with rand: z = rand >= t ? z * s : 0 (inverted dropout); branch-free. */             \
SETCY_CLONES static void setcy_relu_dropout_##SUF(V *SETCY_RESTRICT z, const uint8_t *SETCY_RESTRICT rand, \
    ptrdiff_t start, ptrdiff_t end, uint8_t t, V s)                                                        \
{                                                                                                          \
    ptrdiff_t i;                                                                                           \
    if (rand) {                                                                                            \
        for (i = start; i < end; i++) {                                                                    \
            const V v = z[i] > 0 ? z[i] * s : 0;                                                           \
            z[i] = rand[i] >= t ? v : 0;                                                                   \
        }                                                                                                  \
    } else {                                                                                               \
        for (i = start; i < end; i++) z[i] = z[i] > 0 ? z[i] : 0;                                          \
    }                                                                                                      \
}                                                                                                          \
/* d = a > 0 ? d * s : 0 (the output a is zero where the unit was dropped or inactive). */                 \
SETCY_CLONES static void setcy_relu_backward_##SUF(V *SETCY_RESTRICT d, const V *SETCY_RESTRICT a,         \
    ptrdiff_t start, ptrdiff_t end, V s)                                                                   \
{                                                                                                          \
    ptrdiff_t i;                                                                                           \
    for (i = start; i < end; i++) d[i] = a[i] > 0 ? d[i] * s : 0;                                          \
}

SETCY_DEFINE_RELU(float, f32)
SETCY_DEFINE_RELU(double, f64)

/* dst[i] = bfloat16(src[i]) for i in [start, end) (see setcy_bf16_round). */
SETCY_CLONES static void setcy_to_bf16(const float *SETCY_RESTRICT src, uint16_t *SETCY_RESTRICT dst,
                                       ptrdiff_t start, ptrdiff_t end)
{
    ptrdiff_t i;
    for (i = start; i < end; i++) dst[i] = setcy_bf16_round(src[i]);
}

/* In-place ascending sort of a short integer segment: insertion sort up to 32 elements, else qsort. */
#include <stdlib.h>
#define SETCY_DEFINE_SORT(I, SUF)                                                                          \
static int setcy_cmp_##SUF(const void *a, const void *b)                                                   \
{                                                                                                          \
    const I x = *(const I *)a, y = *(const I *)b;                                                          \
    return (x > y) - (x < y);                                                                              \
}                                                                                                          \
static void setcy_sort_##SUF(I *a, ptrdiff_t n)                                                            \
{                                                                                                          \
    ptrdiff_t i, j;                                                                                        \
    if (n > 32) { qsort(a, (size_t)n, sizeof(I), setcy_cmp_##SUF); return; }                               \
    for (i = 1; i < n; i++) {                                                                              \
        const I v = a[i];                                                                                  \
        for (j = i; j > 0 && a[j - 1] > v; j--) a[j] = a[j - 1];                                           \
        a[j] = v;                                                                                          \
    }                                                                                                      \
}

SETCY_DEFINE_SORT(int32_t, i32)
SETCY_DEFINE_SORT(int64_t, i64)

/* Whether some a[0:n] lies outside [0, hi]: one pass taking the largest value read as unsigned, where
 * a negative value is larger than any value in range (vectorised in each clone; fewer operations than min/max). */
#define SETCY_DEFINE_OUTSIDE(I, U, SUF)                                                                    \
SETCY_CLONES static int setcy_outside_##SUF(const I *SETCY_RESTRICT a, ptrdiff_t n, I hi)                 \
{                                                                                                          \
    U m = 0;                                                                                               \
    ptrdiff_t i;                                                                                           \
    if (hi < 0) return n > 0;  /* an empty range: every value lies outside it */                            \
    for (i = 0; i < n; i++) {                                                                              \
        const U v = (U)a[i];                                                                               \
        m = v > m ? v : m;                                                                                 \
    }                                                                                                      \
    return m > (U)hi;                                                                                      \
}

SETCY_DEFINE_OUTSIDE(int32_t, uint32_t, i32)
SETCY_DEFINE_OUTSIDE(int64_t, uint64_t, i64)

#endif /* SET_CY_ROWKERNELS_H */
