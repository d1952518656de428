/* AVX-512 micro-kernels: float 8 x 32, double 8 x 16 (16 accumulators of
 * two vectors per row), A packed or gathered in place, B packed or read in
 * place. Tiles are finished from registers (scaling, bias, activation): one
 * store per vector for a whole row-major tile, masked stores for partial
 * tiles and for the runs of a column map; a column-major tile is transposed
 * in registers and stored a column (8 rows) at a time.
 * Compiled with -mavx512f -mavx512dq -mavx512vl -mfma; only called when the
 * CPU has them. */
#include <string.h>
#include "fc_gemm.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#ifndef FC_OPENMP
#define FC_OPENMP 0
#endif

#if FC_X86
#include <immintrin.h>

#define V(op) _mm512_##op##_ps
#define VD(op) _mm512_##op##_pd
#define V8(op) _mm256_##op##_ps

/* ---------------------------------------------------------------- finishing */

/* alpha * acc + beta * C, bias, activation for one vector of lanes m (masked
 * lanes of C and of the bias are neither read nor written). */
#define LOADM(P, m, p) (m == (__typeof__(m))~0u ? P(loadu)(p) : P(maskz_loadu)(m, p))
#define FINISH_BODY(CMP, P, MT)                                                                \
    if (alpha != 1) v = P(mul)(v, P(set1)(alpha));                                             \
    if (beta == 1) v = P(add)(LOADM(P, m, dst), v);                                            \
    else if (beta != 0) v = P(fmadd)(P(set1)(beta), LOADM(P, m, dst), v);                      \
    if (bmode == FC_BIAS_ROW) v = P(add)(v, P(set1)(bs));                                      \
    else if (bmode == FC_BIAS_COL) v = P(add)(v, LOADM(P, m, bv));                             \
    if (act == FC_ACT_RELU) v = P(max)(P(setzero)(), v);                                       \
    else if (act == FC_ACT_LEAKY) {                                                            \
        MT neg = CMP(v, P(setzero)(), _CMP_LT_OQ);                                            \
        v = P(mask_mul)(v, neg, v, P(set1)(slope));                                            \
    }                                                                                          \
    if (m == (MT)~0u) P(storeu)(dst, v);                                                       \
    else P(mask_storeu)(dst, m, v);

static inline __attribute__((always_inline)) void
finish_s(float *dst, __mmask16 m, __m512 v, float alpha, float beta, int bmode, float bs,
         const float *bv, int act, float slope)
{
    FINISH_BODY(_mm512_cmp_ps_mask, V, __mmask16)
}

static inline __attribute__((always_inline)) void
finish_d(double *dst, __mmask8 m, __m512d v, double alpha, double beta, int bmode, double bs,
         const double *bv, int act, double slope)
{
    FINISH_BODY(_mm512_cmp_pd_mask, VD, __mmask8)
}

/* eight floats (one column of a column-major tile) */
static inline __attribute__((always_inline)) void
finish_s8(float *dst, __mmask8 m, __m256 v, float alpha, float beta, int bmode, float bs,
          const float *bv, int act, float slope)
{
    FINISH_BODY(_mm256_cmp_ps_mask, V8, __mmask8)
}

/* The tile's epilogue parameters, unpacked once per tile. */
#define TILE_PARAMS(T)                                                                         \
    const fc_epilogue *e = t->e;                                                               \
    const T *bias = e ? (const T *)e->bias : NULL;                                             \
    const int bmode = e && bias ? e->bias_mode : FC_BIAS_NONE;                                 \
    const int act = e ? e->act : FC_ACT_NONE;                                                  \
    const T slope = e ? (T)e->slope : (T)0;                                                    \
    const T alpha = (T)t->alpha, beta = (T)t->beta;

/* ------------------------------------------------------- column-major tiles */

/* rows r0..r7 of 16 floats -> out[j] = column j (8 floats), j < 16 */
static inline __attribute__((always_inline)) void
transpose_8x16_s(__m512 r0, __m512 r1, __m512 r2, __m512 r3, __m512 r4, __m512 r5, __m512 r6,
                 __m512 r7, __m256 *out)
{
    const __m512 t0 = _mm512_unpacklo_ps(r0, r1), t1 = _mm512_unpackhi_ps(r0, r1);
    const __m512 t2 = _mm512_unpacklo_ps(r2, r3), t3 = _mm512_unpackhi_ps(r2, r3);
    const __m512 t4 = _mm512_unpacklo_ps(r4, r5), t5 = _mm512_unpackhi_ps(r4, r5);
    const __m512 t6 = _mm512_unpacklo_ps(r6, r7), t7 = _mm512_unpackhi_ps(r6, r7);
    /* u[q] (q < 4): rows 0-3 of column 4L + q in 128-bit lane L; u[q + 4]: rows 4-7 */
    const __m512 u[8] = {
        _mm512_shuffle_ps(t0, t2, 0x44), _mm512_shuffle_ps(t0, t2, 0xEE),
        _mm512_shuffle_ps(t1, t3, 0x44), _mm512_shuffle_ps(t1, t3, 0xEE),
        _mm512_shuffle_ps(t4, t6, 0x44), _mm512_shuffle_ps(t4, t6, 0xEE),
        _mm512_shuffle_ps(t5, t7, 0x44), _mm512_shuffle_ps(t5, t7, 0xEE)};
    for (int q = 0; q < 4; q++) {
        const __m512 lo = _mm512_shuffle_f32x4(u[q], u[q + 4], 0x44);
        const __m512 hi = _mm512_shuffle_f32x4(u[q], u[q + 4], 0xEE);
        out[q] = _mm512_castps512_ps256(_mm512_shuffle_f32x4(lo, lo, 0x88));
        out[4 + q] = _mm512_castps512_ps256(_mm512_shuffle_f32x4(lo, lo, 0xDD));
        out[8 + q] = _mm512_castps512_ps256(_mm512_shuffle_f32x4(hi, hi, 0x88));
        out[12 + q] = _mm512_castps512_ps256(_mm512_shuffle_f32x4(hi, hi, 0xDD));
    }
}

/* rows r0..r7 of 8 doubles -> out[j] = column j (8 doubles) */
static inline __attribute__((always_inline)) void
transpose_8x8_d(__m512d r0, __m512d r1, __m512d r2, __m512d r3, __m512d r4, __m512d r5,
                __m512d r6, __m512d r7, __m512d *out)
{
    const __m512d t[8] = {
        _mm512_unpacklo_pd(r0, r1), _mm512_unpackhi_pd(r0, r1),
        _mm512_unpacklo_pd(r2, r3), _mm512_unpackhi_pd(r2, r3),
        _mm512_unpacklo_pd(r4, r5), _mm512_unpackhi_pd(r4, r5),
        _mm512_unpacklo_pd(r6, r7), _mm512_unpackhi_pd(r6, r7)};
    for (int o = 0; o < 2; o++) {   /* even (o = 0) and odd columns */
        const __m512d x0 = _mm512_shuffle_f64x2(t[o], t[2 + o], 0x44);
        const __m512d x1 = _mm512_shuffle_f64x2(t[4 + o], t[6 + o], 0x44);
        const __m512d x2 = _mm512_shuffle_f64x2(t[o], t[2 + o], 0xEE);
        const __m512d x3 = _mm512_shuffle_f64x2(t[4 + o], t[6 + o], 0xEE);
        out[o] = _mm512_shuffle_f64x2(x0, x1, 0x88);
        out[2 + o] = _mm512_shuffle_f64x2(x0, x1, 0xDD);
        out[4 + o] = _mm512_shuffle_f64x2(x2, x3, 0x88);
        out[6 + o] = _mm512_shuffle_f64x2(x2, x3, 0xDD);
    }
}

/* Row masks (8 rows) of the runs of a column-major tile. */
static inline int trans_masks(const fc_tile *t, __mmask8 *m)
{
    for (int s = 0; s < t->nseg; s++) {
        const int lo = t->lo[s], hi = t->hi[s] < t->mr ? t->hi[s] : t->mr;
        m[s] = hi <= lo ? 0 : (__mmask8)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
    }
    return t->nseg;
}

/* In a column-major tile a row bias is a vector (one value per row) and a
 * column bias one value per stored vector. */
#define TRANS_STORE(T, FIN, cols)                                                              \
    TILE_PARAMS(T)                                                                             \
    __mmask8 m[FC_MAX_NR];                                                                     \
    const int nseg = trans_masks(t, m);                                                        \
    FC_SPECIALISE(T, TRANS_STORE_BODY(T, FIN, cols))
#define TRANS_STORE_BODY(T, FIN, cols)                                                         \
    const int vmode = bmode == FC_BIAS_ROW ? FC_BIAS_COL                                       \
                    : bmode == FC_BIAS_COL ? FC_BIAS_ROW : FC_BIAS_NONE;                       \
    const T *bv = bmode == FC_BIAS_ROW ? bias + t->row0 : NULL;                                \
    for (int j = 0; j < t->nr; j++) {                                                          \
        T *cj = c + (long)j * ldc;                                                             \
        const T bs = bmode == FC_BIAS_COL ? bias[t->lane0 + j] : (T)0;                         \
        for (int s = 0; s < nseg; s++)                                                         \
            if (m[s])                                                                          \
                FIN(cj + t->col[s], m[s], cols[j], alpha, beta, vmode, bs, bv, act, slope);    \
    }

static void trans_store_s(float *c, long ldc, const __m256 *cols, const fc_tile *t)
{
    TRANS_STORE(float, finish_s8, cols)
}

static void trans_store_d(double *c, long ldc, const __m512d *cols, const fc_tile *t)
{
    TRANS_STORE(double, finish_d, cols)
}

/* ------------------------------------------------------------------ kernels */

#define ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

/* The body of every kernel. BROW: B row p; LOADB: aligned (packed) or
 * unaligned (in place) load; AMODE: PACKED (row i of step p at a[i], then a
 * advances by MR), GATHER (at a<i>[doff[p]], row pointers set up by A_ROWS) or
 * GATHERU (at a<i>[p]: consecutive depths, no doff). */
#define KERNEL(T, VT, P, W, MR, NR, MT, BROW, LOADB, AMODE)                                 \
    VT c00 = P(setzero)(), c01 = P(setzero)(), c10 = P(setzero)(), c11 = P(setzero)();         \
    VT c20 = P(setzero)(), c21 = P(setzero)(), c30 = P(setzero)(), c31 = P(setzero)();         \
    VT c40 = P(setzero)(), c41 = P(setzero)(), c50 = P(setzero)(), c51 = P(setzero)();         \
    VT c60 = P(setzero)(), c61 = P(setzero)(), c70 = P(setzero)(), c71 = P(setzero)();         \
    _Pragma("GCC unroll 2")                                                                    \
    for (long p = 0; p < k; p++) {                                                             \
        PRE_##AMODE                                                                            \
        const T *bp = (BROW);                                                                  \
        PF_##AMODE(bp, NR)                                                                     \
        const VT b0 = LOADB(bp), b1 = LOADB(bp + W);                                           \
        VT ai;                                                                                 \
        ROWS8(FMA_ROW_##AMODE)                                                                 \
        ADV_##AMODE;                                                                           \
    }                                                                                          \
    if (t->trans) {                                                                            \
        TRANS_##T                                                                              \
    } else if (t->mr == MR && t->nr == NR && t->nseg == 1 && t->lo[0] == 0 && t->hi[0] >= NR) { \
        TILE_PARAMS(T)                                                                         \
        T *c0 = c + t->col[0];                                                                 \
        const T *bv = bmode == FC_BIAS_COL ? bias + t->col[0] : NULL;                          \
        const MT m = (MT)~0u;                                                                  \
        FC_SPECIALISE(T, ROWS8(FIN_ROW))                                                       \
    } else {                                                                                   \
        TILE_PARAMS(T)                                                                         \
        const int nseg = t->nseg;                                                              \
        MT m0[FC_MAX_NR], m1[FC_MAX_NR];                                                       \
        for (int s = 0; s < nseg; s++) {                                                       \
            const int lo = t->lo[s], hi = t->hi[s] < t->nr ? t->hi[s] : t->nr;                \
            const unsigned bits = hi <= lo ? 0u                                                \
                : ((hi >= 32 ? ~0u : (1u << hi) - 1u) & ~((1u << lo) - 1u));                   \
            m0[s] = (MT)(bits & ((1u << W) - 1u));                                             \
            m1[s] = (MT)(bits >> W);                                                           \
        }                                                                                      \
        FC_SPECIALISE(T, ROWS8(RUN_ROW))                                                       \
    }

#define FMA_ROW(i, ael)                                                                        \
    ai = PB(set1)(ael);                                                                        \
    c##i##0 = PB(fmadd)(ai, b0, c##i##0);                                                      \
    c##i##1 = PB(fmadd)(ai, b1, c##i##1);
#define FMA_ROW_PACKED(i) FMA_ROW(i, a[i])
#define FMA_ROW_GATHER(i) FMA_ROW(i, a##i[d])
#define FMA_ROW_GATHERU FMA_ROW_GATHER
#define FIN_ROW(i)                                                                             \
    {                                                                                          \
        const TB bs = bmode == FC_BIAS_ROW ? bias[t->row0 + i] : (TB)0;                        \
        FINB(c0 + (long)i * ldc, m, c##i##0, alpha, beta, bmode, bs, bv, act, slope);          \
        FINB(c0 + (long)i * ldc + WB, m, c##i##1, alpha, beta, bmode, bs,                      \
             bv ? bv + WB : NULL, act, slope);                                                 \
    }
/* a partial tile or several runs: masked stores, run by run */
#define RUN_ROW(i)                                                                             \
    if (i < t->mr) {                                                                           \
        TB *ri = c + (long)i * ldc;                                                            \
        const TB bs = bmode == FC_BIAS_ROW ? bias[t->row0 + i] : (TB)0;                        \
        for (int s = 0; s < nseg; s++) {                                                       \
            TB *d = ri + t->col[s];                                                            \
            const TB *bvs = bmode == FC_BIAS_COL ? bias + t->col[s] : NULL;                    \
            if (m0[s]) FINB(d, m0[s], c##i##0, alpha, beta, bmode, bs, bvs, act, slope);        \
            if (m1[s]) FINB(d + WB, m1[s], c##i##1, alpha, beta, bmode, bs,                    \
                            bvs ? bvs + WB : NULL, act, slope);                                \
        }                                                                                      \
    }

#define PRE_PACKED
/* B packed for a gathered A (Winograd products) comes from the shared cache once
 * a call: its rows PF_AHEAD steps ahead are fetched while these are multiplied */
#define PF_AHEAD 32
#define PF_PACKED(bp, NR)
#define PF_GATHER(bp, NR) _mm_prefetch((const char *)((bp) + PF_AHEAD * (NR)), _MM_HINT_T0); \
    _mm_prefetch((const char *)((bp) + PF_AHEAD * (NR)) + 64, _MM_HINT_T0);
#define PF_GATHERU PF_GATHER
#define PRE_GATHER const long d = doff[p];
#define PRE_GATHERU const long d = p;
#define ADV_PACKED a += 8
#define ADV_GATHER
#define ADV_GATHERU

/* column-major finishing: transpose, then store a column at a time */
#define TRANS_float                                                                            \
    {                                                                                          \
        __m256 cols[32];                                                                       \
        transpose_8x16_s(c00, c10, c20, c30, c40, c50, c60, c70, cols);                        \
        transpose_8x16_s(c01, c11, c21, c31, c41, c51, c61, c71, cols + 16);                   \
        if (TRANS_WHOLE(8, 32)) {                                                              \
            TRANS_WHOLE_STORE(float, finish_s8, 32)                                            \
        } else {                                                                               \
            trans_store_s(c, ldc, cols, t);                                                    \
        }                                                                                      \
    }
#define TRANS_double                                                                           \
    {                                                                                          \
        __m512d cols[16];                                                                      \
        transpose_8x8_d(c00, c10, c20, c30, c40, c50, c60, c70, cols);                         \
        transpose_8x8_d(c01, c11, c21, c31, c41, c51, c61, c71, cols + 8);                     \
        if (TRANS_WHOLE(8, 16)) {                                                              \
            TRANS_WHOLE_STORE(double, finish_d, 16)                                            \
        } else {                                                                               \
            trans_store_d(c, ldc, cols, t);                                                    \
        }                                                                                      \
    }
/* a whole column-major tile: every column stored unmasked from registers */
#define TRANS_WHOLE(MR, NR)                                                                    \
    (t->mr == MR && t->nr == NR && t->nseg == 1 && t->lo[0] == 0 && t->hi[0] >= MR)
#define TRANS_WHOLE_STORE(T, FIN, NR)                                                          \
    TILE_PARAMS(T)                                                                             \
    T *c0 = c + t->col[0];                                                                     \
    FC_SPECIALISE(T, TRANS_WHOLE_BODY(T, FIN, NR))
#define TRANS_WHOLE_BODY(T, FIN, NR)                                                           \
    const int vmode = bmode == FC_BIAS_ROW ? FC_BIAS_COL                                       \
                    : bmode == FC_BIAS_COL ? FC_BIAS_ROW : FC_BIAS_NONE;                       \
    const T *bv = bmode == FC_BIAS_ROW ? bias + t->row0 : NULL;                                \
    _Pragma("GCC unroll 32")                                                                   \
    for (int j = 0; j < NR; j++)                                                               \
        FIN(c0 + (long)j * ldc, 0xFF, cols[j], alpha, beta, vmode,                             \
            bmode == FC_BIAS_COL ? bias[t->lane0 + j] : (T)0, bv, act, slope);
#define A_ROWS(T) const T *a0 = a + aoff[0], *a1 = a + aoff[1], *a2 = a + aoff[2], \
    *a3 = a + aoff[3], *a4 = a + aoff[4], *a5 = a + aoff[5], *a6 = a + aoff[6], *a7 = a + aoff[7]; \
    __asm__("" : "+r"(a0), "+r"(a1), "+r"(a2), "+r"(a3), "+r"(a4), "+r"(a5), "+r"(a6), "+r"(a7));

/* float: 8 x 32 */
#define PB V
#define TB float
#define WB 16
#define FINB finish_s

void fc_ukr_avx512_s(long k, const float *a, const float *b, float *c, long ldc, const fc_tile *t)
{
    KERNEL(float, __m512, V, 16, 8, 32, __mmask16, b + p * 32, V(load), PACKED)
}

void fc_ukri_avx512_s(long k, const float *a, const float *b, const long *boff, float *c, long ldc,
                      const fc_tile *t)
{
    KERNEL(float, __m512, V, 16, 8, 32, __mmask16, b + boff[p], V(loadu), PACKED)
}

void fc_ukrg_avx512_s(long k, const float *a, const long *aoff, const long *doff, const float *b,
                      float *c, long ldc, const fc_tile *t)
{
    A_ROWS(float)
    if (doff) {
        KERNEL(float, __m512, V, 16, 8, 32, __mmask16, b + p * 32, V(load), GATHER)
    } else {
        KERNEL(float, __m512, V, 16, 8, 32, __mmask16, b + p * 32, V(load), GATHERU)
    }
}

#undef PB
#undef TB
#undef WB
#undef FINB

/* double: 8 x 16 */
#define PB VD
#define TB double
#define WB 8
#define FINB finish_d

void fc_ukr_avx512_d(long k, const double *a, const double *b, double *c, long ldc, const fc_tile *t)
{
    KERNEL(double, __m512d, VD, 8, 8, 16, __mmask8, b + p * 16, VD(load), PACKED)
}

void fc_ukri_avx512_d(long k, const double *a, const double *b, const long *boff, double *c,
                      long ldc, const fc_tile *t)
{
    KERNEL(double, __m512d, VD, 8, 8, 16, __mmask8, b + boff[p], VD(loadu), PACKED)
}

void fc_ukrg_avx512_d(long k, const double *a, const long *aoff, const long *doff, const double *b,
                      double *c, long ldc, const fc_tile *t)
{
    A_ROWS(double)
    if (doff) {
        KERNEL(double, __m512d, VD, 8, 8, 16, __mmask8, b + p * 16, VD(load), GATHER)
    } else {
        KERNEL(double, __m512d, VD, 8, 8, 16, __mmask8, b + p * 16, VD(load), GATHERU)
    }
}

#undef PB
#undef TB
#undef WB
#undef FINB

/* ----------------------------------------------------------- narrow kernels */

/* Tiles of 1, 2 or 4 rows by four vectors, for products of at most four rows
 * (an output gradient folded into a single input channel, say), where the
 * eight-row kernels would waste most of their work. Finished through masked
 * stores of each run from the spilled tile. */
#define NARROW_STORE(T, W, MT, FIN)                                                            \
    TILE_PARAMS(T)                                                                             \
    FC_SPECIALISE(T, NARROW_STORE_BODY(T, W, MT, FIN))
#define NARROW_STORE_BODY(T, W, MT, FIN)                                                       \
    for (int i = 0; i < t->mr; i++) {                                                          \
        T *row = c + (long)i * ldc;                                                            \
        const T bs = bmode == FC_BIAS_ROW ? bias[t->row0 + i] : (T)0;                          \
        for (int s = 0; s < t->nseg; s++) {                                                    \
            const int lo = t->lo[s], hi = t->hi[s] < t->nr ? t->hi[s] : t->nr;                 \
            for (int v0 = lo / W * W; v0 < hi; v0 += W) {                                      \
                const int a = lo > v0 ? lo - v0 : 0, b = hi - v0 < W ? hi - v0 : W;            \
                const MT m = (MT)((((unsigned)1 << b) - 1u) & ~(((unsigned)1 << a) - 1u));    \
                const long col = t->col[s] + v0;                                               \
                FIN(row + col, m, tile[i * 4 + v0 / W], alpha, beta, bmode, bs,                \
                    bmode == FC_BIAS_COL ? bias + col : NULL, act, slope);                     \
            }                                                                                  \
        }                                                                                      \
    }

static void narrow_store_s(float *c, long ldc, const __m512 *tile, const fc_tile *t)
{
    NARROW_STORE(float, 16, __mmask16, finish_s)
}

static void narrow_store_d(double *c, long ldc, const __m512d *tile, const fc_tile *t)
{
    NARROW_STORE(double, 8, __mmask8, finish_d)
}

#define NROW(i)                                                                                \
    ai = PB(set1)(a[i]);                                                                       \
    d##i##0 = PB(fmadd)(ai, b0, d##i##0);                                                      \
    d##i##1 = PB(fmadd)(ai, b1, d##i##1);                                                      \
    d##i##2 = PB(fmadd)(ai, b2, d##i##2);                                                      \
    d##i##3 = PB(fmadd)(ai, b3, d##i##3);
#define NSPILL(i) tile[4 * i] = d##i##0; tile[4 * i + 1] = d##i##1;                          \
    tile[4 * i + 2] = d##i##2; tile[4 * i + 3] = d##i##3;
#define NZERO(i) VT d##i##0 = PB(setzero)(), d##i##1 = d##i##0, d##i##2 = d##i##0,             \
    d##i##3 = d##i##0;
#define NROWS1(X) X(0)
#define NROWS2(X) X(0) X(1)
#define NROWS4(X) X(0) X(1) X(2) X(3)

#define NKERNEL(T, VT, W, MR, BROW, LOADB, STORE)                                              \
    NROWS##MR(NZERO)                                                                           \
    _Pragma("GCC unroll 2")                                                                    \
    for (long p = 0; p < k; p++) {                                                             \
        const T *bp = (BROW);                                                                  \
        const VT b0 = LOADB(bp), b1 = LOADB(bp + W), b2 = LOADB(bp + 2 * W),                   \
                 b3 = LOADB(bp + 3 * W);                                                       \
        VT ai;                                                                                 \
        NROWS##MR(NROW)                                                                        \
        a += MR;                                                                               \
    }                                                                                          \
    VT tile[MR * 4] __attribute__((aligned(64)));                                              \
    NROWS##MR(NSPILL)                                                                          \
    STORE(c, ldc, tile, t);

#define NARROW(R)                                                                              \
    void fc_ukrn##R##_avx512_s(long k, const float *a, const float *b, float *c, long ldc,     \
                               const fc_tile *t)                                               \
    {                                                                                          \
        NKERNEL(float, __m512, 16, R, b + p * 64, V(load), narrow_store_s)                     \
    }                                                                                          \
    void fc_ukrin##R##_avx512_s(long k, const float *a, const float *b, const long *boff,    \
                                float *c, long ldc, const fc_tile *t)                          \
    {                                                                                          \
        NKERNEL(float, __m512, 16, R, b + boff[p], V(loadu), narrow_store_s)                   \
    }
#define NARROW_D(R)                                                                            \
    void fc_ukrn##R##_avx512_d(long k, const double *a, const double *b, double *c, long ldc,  \
                               const fc_tile *t)                                               \
    {                                                                                          \
        NKERNEL(double, __m512d, 8, R, b + p * 32, VD(load), narrow_store_d)                   \
    }                                                                                          \
    void fc_ukrin##R##_avx512_d(long k, const double *a, const double *b, const long *boff,  \
                                double *c, long ldc, const fc_tile *t)                         \
    {                                                                                          \
        NKERNEL(double, __m512d, 8, R, b + boff[p], VD(loadu), narrow_store_d)                 \
    }

#define PB V
#define VT __m512
NARROW(1)
NARROW(2)
NARROW(4)
#undef PB
#undef VT
#define PB VD
#define VT __m512d
NARROW_D(1)
NARROW_D(2)
NARROW_D(4)
#undef PB
#undef VT

/* ------------------------------------------------- direct 3x3 convolution */

/* The vector operations of fc_direct3_impl.h: 16 lanes, masks as __mmask16. */
typedef __m512 d3v;
typedef __mmask16 d3m;
#define D3W 16
#define D3_FN(name) fc_##name##_avx512_s

static inline __mmask16 d3_lanes(int c, int W)
{
    /* lanes j with 0 <= c + j < W */
    const int lo = c < 0 ? -c : 0;
    const int hi = W - c > 16 ? 16 : W - c;
    if (hi <= lo) return 0;
    return (__mmask16)((((unsigned)1 << hi) - 1) & ~(((unsigned)1 << lo) - 1));
}

static inline __m512 d3_loadm(__mmask16 m, const float *p) { return _mm512_maskz_loadu_ps(m, p); }
static inline void d3_storem(float *p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
static inline void d3_store(float *p, __m512 v) { _mm512_store_ps(p, v); }
static inline __m512 d3_loadu(const float *p) { return _mm512_loadu_ps(p); }
static inline void d3_storeu(float *p, __m512 v) { _mm512_storeu_ps(p, v); }
static inline __m512 d3_zero(void) { return _mm512_setzero_ps(); }
static inline __m512 d3_set1(float f) { return _mm512_set1_ps(f); }
static inline __m512 d3_add(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
static inline __m512 d3_fmadd(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }

static inline __m512 d3_act(__m512 acc, __m512 bv, int act, __m512 sv)
{
    const __m512 zero = _mm512_setzero_ps();
    __m512 o = _mm512_add_ps(acc, bv);
    if (act == FC_ACT_RELU)
        o = _mm512_max_ps(zero, o);   /* (a NaN stays: the second operand is kept) */
    else if (act == FC_ACT_LEAKY)
        o = _mm512_mask_mul_ps(o, _mm512_cmp_ps_mask(o, zero, _CMP_LT_OQ), o, sv);
    return o;
}

static inline __m512 d3_max(__m512 a, __m512 b)
{
    return _mm512_mask_mov_ps(_mm512_max_ps(b, a), _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q), b);
}

static inline __m512 d3_pairs_max(__m512 a, __m512 b)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return d3_max(_mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b));
}

/* the window maximum m and its code k after the window's next pixel v (of code kv) */
#define D3_POOL_STEP(v, kv)                                                                    \
    do {                                                                                       \
        const __mmask16 c_ = _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q); \
        m = _mm512_mask_mov_ps(m, c_, v);                                                      \
        k = _mm512_mask_mov_epi32(k, c_, _mm512_set1_epi32(kv));                               \
    } while (0)

static inline void d3_pool_codes(__m512 a0, __m512 a1, __m512 b0, __m512 b1, float *out, unsigned char *code)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512 ao = _mm512_permutex2var_ps(a0, odd, a1);
    const __m512 be = _mm512_permutex2var_ps(b0, even, b1), bo = _mm512_permutex2var_ps(b0, odd, b1);
    __m512 m = _mm512_permutex2var_ps(a0, even, a1);
    __m512i k = _mm512_setzero_si512();
    D3_POOL_STEP(ao, 1);
    D3_POOL_STEP(be, 2);
    D3_POOL_STEP(bo, 3);
    _mm512_store_ps(out, m);
    _mm_store_si128((__m128i *)code, _mm512_cvtepi32_epi8(k));
}
#undef D3_POOL_STEP

#include "fc_direct3_impl.h"
#undef D3_FN
#undef D3W

/* ------------------------------------------------------------ dot products */

/* Small-batch Linear: eight dot products at a time (FC_DOT8), each row's
 * accumulator halved to 256 bits and the halves reduced as in the AVX2 file. */
static inline void sum8_avx512_s(const __m512 *s, float *out)
{
    __m256 v[8];
    for (int j = 0; j < 8; j++)
        v[j] = _mm256_add_ps(_mm512_castps512_ps256(s[j]),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s[j]), 1)));
    FC_SUM8_PS(v, out);
}

static inline void sum8_avx512_d(const __m512d *s, double *out)
{
    __m256d v[8];
    for (int j = 0; j < 8; j++)
        v[j] = _mm256_add_pd(_mm512_castpd512_pd256(s[j]), _mm512_extractf64x4_pd(s[j], 1));
    FC_SUM8_PD(v, out);
}

void fc_dot8_avx512_s(const float *a, const float *const *b, int k, float *out)
{
    FC_DOT8(float, __m512, 16, _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_setzero_ps, sum8_avx512_s)
}

void fc_dot8_avx512_d(const double *a, const double *const *b, int k, double *out)
{
    FC_DOT8(double, __m512d, 8, _mm512_loadu_pd, _mm512_fmadd_pd, _mm512_setzero_pd, sum8_avx512_d)
}
/* ---------------------------------------------------------------- transposes */

/* nr x nc floats (at most 16 x 16): rows in, columns out; missing rows read as
 * zero and missing lanes are neither read nor written (masked). */
static inline void tr16x16_s(const float *s, long lds, float *d, long ldd, int nr, int nc)
{
    const __mmask16 mc = (__mmask16)((1u << nc) - 1u), mr = (__mmask16)((1u << nr) - 1u);
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++)
        r[i] = i < nr ? _mm512_maskz_loadu_ps(mc, s + i * lds) : _mm512_setzero_ps();
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    /* r[4g + q]: rows 4g..4g+3 of column 4L + q in 128-bit lane L */
    __m512 c[16];
    for (int q = 0; q < 4; q++) {
        const __m512 a = _mm512_shuffle_f32x4(r[q], r[4 + q], 0x88);       /* lanes 0, 2 */
        const __m512 b = _mm512_shuffle_f32x4(r[q], r[4 + q], 0xDD);       /* lanes 1, 3 */
        const __m512 e = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0x88);
        const __m512 f = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0xDD);
        c[q] = _mm512_shuffle_f32x4(a, e, 0x88);
        c[4 + q] = _mm512_shuffle_f32x4(b, f, 0x88);
        c[8 + q] = _mm512_shuffle_f32x4(a, e, 0xDD);
        c[12 + q] = _mm512_shuffle_f32x4(b, f, 0xDD);
    }
    if (nr == 16)
        for (int j = 0; j < nc; j++) _mm512_storeu_ps(d + (long)j * ldd, c[j]);
    else
        for (int j = 0; j < nc; j++) _mm512_mask_storeu_ps(d + (long)j * ldd, mr, c[j]);
}

/* nr x nc doubles (at most 8 x 8), as above */
static inline void tr8x8_d(const double *s, long lds, double *d, long ldd, int nr, int nc)
{
    const __mmask8 mc = (__mmask8)((1u << nc) - 1u), mr = (__mmask8)((1u << nr) - 1u);
    __m512d r[8], cols[8];
    for (int i = 0; i < 8; i++)
        r[i] = i < nr ? _mm512_maskz_loadu_pd(mc, s + i * lds) : _mm512_setzero_pd();
    transpose_8x8_d(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], cols);
    if (nr == 8)
        for (int j = 0; j < nc; j++) _mm512_storeu_pd(d + (long)j * ldd, cols[j]);
    else
        for (int j = 0; j < nc; j++) _mm512_mask_storeu_pd(d + (long)j * ldd, mr, cols[j]);
}

void fc_transpose_avx512_s(const float *src, long lds, float *dst, long ldd, int rows, int cols)
{
    FC_TRANSPOSE_BLOCKS(16, tr16x16_s)
}

void fc_transpose_avx512_d(const double *src, long lds, double *dst, long ldd, int rows, int cols)
{
    FC_TRANSPOSE_BLOCKS(8, tr8x8_d)
}

/* ------------------------------------------------ Winograd F(4x4, 3x3) and F(4x4, 2x2) */
#define FC_ISA avx512
#include "fc_winograd_inst.h"
#undef FC_ISA
#endif
