/* AVX2 + FMA micro-kernels: float 6 x 16, double 6 x 8 (12 accumulators),
 * A packed or read in place, B packed or read in place. A whole tile is
 * finished from registers (scaling, bias, activation); partial tiles and
 * column runs are spilled and finished by the tile store of this file. Also
 * this instruction set's dot products, transposes, direct 3x3 kernels and
 * Winograd transforms. Compiled with -mavx2 -mfma; only called when the CPU
 * has both. */
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

#define FN(name) fc_##name##_avx2_s
#define T float
#include "fc_store_impl.h"
#undef T
#undef FN
#define FN(name) fc_##name##_avx2_d
#define T double
#include "fc_store_impl.h"
#undef T
#undef FN

#define V(op) _mm256_##op##_ps
#define VD(op) _mm256_##op##_pd

/* alpha * acc + beta * C, bias, activation, for one whole vector. */
#define FINISH_BODY(P)                                                                         \
    if (alpha != 1) v = P(mul)(v, P(set1)(alpha));                                             \
    if (beta == 1) v = P(add)(P(loadu)(dst), v);                                               \
    else if (beta != 0) v = P(fmadd)(P(set1)(beta), P(loadu)(dst), v);                         \
    if (bmode == FC_BIAS_ROW) v = P(add)(v, P(set1)(bs));                                      \
    else if (bmode == FC_BIAS_COL) v = P(add)(v, P(loadu)(bv));                                \
    if (act == FC_ACT_RELU) v = P(max)(P(setzero)(), v);                                       \
    else if (act == FC_ACT_LEAKY)                                                              \
        v = P(blendv)(v, P(mul)(v, P(set1)(slope)), P(cmp)(v, P(setzero)(), _CMP_LT_OQ));      \
    P(storeu)(dst, v);

static inline __attribute__((always_inline)) void
finish_s(float *dst, __m256 v, float alpha, float beta, int bmode, float bs, const float *bv,
         int act, float slope)
{
    FINISH_BODY(V)
}

static inline __attribute__((always_inline)) void
finish_d(double *dst, __m256d v, double alpha, double beta, int bmode, double bs, const double *bv,
         int act, double slope)
{
    FINISH_BODY(VD)
}

#define ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define ROWS4(X) X(0) X(1) X(2) X(3)

/* BROW: B row p; LOADB: aligned (packed) or unaligned (in place) load;
 * AMODE: PACKED (row i of step p at a + i, then a advances by MR), GATHER
 * (at a<i> + doff[p], row pointers set up by A_ROWS, kept whole in registers so
 * that each broadcast is one load from a row pointer and the depth offset) or
 * GATHERU (at a<i> + p: consecutive depths, no doff). ROWS: the rows made, MR
 * of them (ROWS6, or ROWS4 for a gathered tile of at most four rows). */
#define KERNEL(T, VT, P, W, MR, NR, STORE_SLOW, BROW, LOADB, AMODE, ROWS)                  \
    ROWS(ZERO_ROW)                                                                             \
    _Pragma("GCC unroll 4")                                                                    \
    for (long p = 0; p < k; p++) {                                                             \
        PRE_##AMODE                                                                            \
        const T *bp = (BROW);                                                                  \
        const VT b0 = LOADB(bp), b1 = LOADB(bp + W);                                           \
        VT ai;                                                                                 \
        ROWS(FMA_ROW_##AMODE)                                                                  \
        ADV_##AMODE;                                                                           \
    }                                                                                          \
    if (!t->trans && t->mr == MR && t->nr == NR && t->nseg == 1 && t->lo[0] == 0                \
        && t->hi[0] >= NR) {                                                                   \
        const fc_epilogue *e = t->e;                                                           \
        const T *bias = e ? (const T *)e->bias : NULL;                                         \
        const int bmode = e && bias ? e->bias_mode : FC_BIAS_NONE;                             \
        const int act = e ? e->act : FC_ACT_NONE;                                              \
        const T slope = e ? (T)e->slope : (T)0;                                                \
        const T alpha = (T)t->alpha, beta = (T)t->beta;                                        \
        T *c0 = c + t->col[0];                                                                 \
        const T *bv = bmode == FC_BIAS_COL ? bias + t->col[0] : NULL;                          \
        FC_SPECIALISE(T, ROWS(FIN_ROW))                                                        \
    } else {                                                                                   \
        VT tile[MR * 2] __attribute__((aligned(32)));                                          \
        ROWS(SPILL_ROW)                                                                        \
        STORE_SLOW(c, ldc, (const T *)tile, NR, t);                                            \
    }

#define ZERO_ROW(i) VB c##i##0 = PB(setzero)(), c##i##1 = PB(setzero)();
#define FMA_ROW(i, aptr)                                                                       \
    ai = PB(broadcast)(aptr);                                                                  \
    c##i##0 = PB(fmadd)(ai, b0, c##i##0);                                                      \
    c##i##1 = PB(fmadd)(ai, b1, c##i##1);
#define FMA_ROW_PACKED(i) FMA_ROW(i, a + (i))
#define FMA_ROW_GATHER(i) FMA_ROW(i, a##i + d)
#define FMA_ROW_GATHERU FMA_ROW_GATHER
#define FIN_ROW(i)                                                                             \
    {                                                                                          \
        const TB bs = bmode == FC_BIAS_ROW ? bias[t->row0 + i] : (TB)0;                        \
        FINB(c0 + (long)i * ldc, c##i##0, alpha, beta, bmode, bs, bv, act, slope);             \
        FINB(c0 + (long)i * ldc + WB, c##i##1, alpha, beta, bmode, bs, bv ? bv + WB : NULL,    \
             act, slope);                                                                      \
    }
#define SPILL_ROW(i) tile[2 * i] = c##i##0; tile[2 * i + 1] = c##i##1;

#define PRE_PACKED
#define PRE_GATHER const long d = doff[p];
#define PRE_GATHERU const long d = p;
#define ADV_PACKED a += 6
#define ADV_GATHER
#define ADV_GATHERU
#define A_ROWS(T) const T *a0 = a + aoff[0], *a1 = a + aoff[1], *a2 = a + aoff[2], \
    *a3 = a + aoff[3], *a4 = a + aoff[4], *a5 = a + aoff[5]; \
    __asm__("" : "+r"(a0), "+r"(a1), "+r"(a2), "+r"(a3), "+r"(a4), "+r"(a5));

/* float: 6 x 16 */
#define PB(op) PB_##op##_s
#define PB_broadcast_s _mm256_broadcast_ss
#define PB_fmadd_s _mm256_fmadd_ps
#define PB_setzero_s _mm256_setzero_ps
#define VB __m256
#define TB float
#define WB 8
#define FINB finish_s

void fc_ukr_avx2_s(long k, const float *a, const float *b, float *c, long ldc, const fc_tile *t)
{
    KERNEL(float, __m256, V, 8, 6, 16, fc_tile_store_avx2_s, b + p * 16, V(load), PACKED, ROWS6)
}

void fc_ukri_avx2_s(long k, const float *a, const float *b, const long *boff, float *c, long ldc,
                    const fc_tile *t)
{
    KERNEL(float, __m256, V, 8, 6, 16, fc_tile_store_avx2_s, b + boff[p], V(loadu), PACKED, ROWS6)
}

void fc_ukrg_avx2_s(long k, const float *a, const long *aoff, const long *doff, const float *b,
                    float *c, long ldc, const fc_tile *t)
{
    A_ROWS(float)
    if (doff) {
        KERNEL(float, __m256, V, 8, 6, 16, fc_tile_store_avx2_s, b + p * 16, V(load), GATHER, ROWS6)
    } else if (t->mr <= 4) {
        KERNEL(float, __m256, V, 8, 4, 16, fc_tile_store_avx2_s, b + p * 16, V(load), GATHERU, ROWS4)
    } else {
        KERNEL(float, __m256, V, 8, 6, 16, fc_tile_store_avx2_s, b + p * 16, V(load), GATHERU, ROWS6)
    }
}

#undef PB
#undef VB
#undef TB
#undef WB
#undef FINB

/* double: 6 x 8 */
#define PB(op) PB_##op##_d
#define PB_broadcast_d _mm256_broadcast_sd
#define PB_fmadd_d _mm256_fmadd_pd
#define PB_setzero_d _mm256_setzero_pd
#define VB __m256d
#define TB double
#define WB 4
#define FINB finish_d

void fc_ukr_avx2_d(long k, const double *a, const double *b, double *c, long ldc, const fc_tile *t)
{
    KERNEL(double, __m256d, VD, 4, 6, 8, fc_tile_store_avx2_d, b + p * 8, VD(load), PACKED, ROWS6)
}

void fc_ukri_avx2_d(long k, const double *a, const double *b, const long *boff, double *c,
                    long ldc, const fc_tile *t)
{
    KERNEL(double, __m256d, VD, 4, 6, 8, fc_tile_store_avx2_d, b + boff[p], VD(loadu), PACKED, ROWS6)
}

void fc_ukrg_avx2_d(long k, const double *a, const long *aoff, const long *doff, const double *b,
                    double *c, long ldc, const fc_tile *t)
{
    A_ROWS(double)
    if (doff) {
        KERNEL(double, __m256d, VD, 4, 6, 8, fc_tile_store_avx2_d, b + p * 8, VD(load), GATHER, ROWS6)
    } else if (t->mr <= 4) {
        KERNEL(double, __m256d, VD, 4, 4, 8, fc_tile_store_avx2_d, b + p * 8, VD(load), GATHERU, ROWS4)
    } else {
        KERNEL(double, __m256d, VD, 4, 6, 8, fc_tile_store_avx2_d, b + p * 8, VD(load), GATHERU, ROWS6)
    }
}

#undef PB
#undef VB
#undef TB
#undef WB
#undef FINB

/* Small-batch Linear: eight dot products at a time (FC_DOT8). */
static inline void sum8_avx2_s(const __m256 *s, float *out) { FC_SUM8_PS(s, out); }
static inline void sum8_avx2_d(const __m256d *s, double *out) { FC_SUM8_PD(s, out); }

void fc_dot8_avx2_s(const float *a, const float *const *b, int k, float *out)
{
    FC_DOT8(float, __m256, 8, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_setzero_ps, sum8_avx2_s)
}

void fc_dot8_avx2_d(const double *a, const double *const *b, int k, double *out)
{
    FC_DOT8(double, __m256d, 4, _mm256_loadu_pd, _mm256_fmadd_pd, _mm256_setzero_pd, sum8_avx2_d)
}

/* Transposes: blocks of 8 x 8 (float) or 4 x 4 (double) in registers, whole
 * and edge blocks alike. At an edge, missing rows read as zero and missing
 * columns are left out of the loads (maskload); rows of the result shorter
 * than a vector are copied lane by lane (a masked store is slow on some CPUs). */
static inline __m256i lanes_below(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* The nr rows of an edge block into r[0 .. B) (P: the element type's
 * operations, MASK: the lanes below nc), and the nc columns c[j] of the
 * transposed block out to d. */
#define TR_LOAD(B, P, MASK)                                                                    \
    if (nc == B) {                                                                             \
        for (int i = 0; i < B; i++) r[i] = i < nr ? P(loadu)(s + i * lds) : P(setzero)();      \
    } else {                                                                                   \
        const __m256i m = (MASK);                                                              \
        for (int i = 0; i < B; i++) r[i] = i < nr ? P(maskload)(s + i * lds, m) : P(setzero)(); \
    }
#define TR_STORE(T, B, P)                                                                      \
    if (nr == B) {                                                                             \
        for (int j = 0; j < nc; j++) P(storeu)(d + (long)j * ldd, c[j]);                       \
    } else {                                                                                   \
        T lanes[B] __attribute__((aligned(32)));                                               \
        for (int j = 0; j < nc; j++) {                                                         \
            P(store)(lanes, c[j]);                                                             \
            for (int i = 0; i < nr; i++) d[(long)j * ldd + i] = lanes[i];                      \
        }                                                                                      \
    }

/* nr x nc floats (at most 8 x 8): rows in, columns out */
static inline void tr8x8_s(const float *s, long lds, float *d, long ldd, int nr, int nc)
{
    __m256 r[8];
    TR_LOAD(8, V, lanes_below(nc))
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    __m256 c[8] = {_mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
                   _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
                   _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
                   _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
    TR_STORE(float, 8, V)
}

/* nr x nc doubles (at most 4 x 4), as above */
static inline void tr4x4_d(const double *s, long lds, double *d, long ldd, int nr, int nc)
{
    __m256d r[4];
    TR_LOAD(4, VD, _mm256_cmpgt_epi64(_mm256_set1_epi64x(nc), _mm256_setr_epi64x(0, 1, 2, 3)))
    __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    __m256d c[4] = {_mm256_permute2f128_pd(t0, t2, 0x20), _mm256_permute2f128_pd(t1, t3, 0x20),
                    _mm256_permute2f128_pd(t0, t2, 0x31), _mm256_permute2f128_pd(t1, t3, 0x31)};
    TR_STORE(double, 4, VD)
}
#undef TR_LOAD
#undef TR_STORE

void fc_transpose_avx2_s(const float *src, long lds, float *dst, long ldd, int rows, int cols)
{
    FC_TRANSPOSE_BLOCKS(8, tr8x8_s)
}

void fc_transpose_avx2_d(const double *src, long lds, double *dst, long ldd, int rows, int cols)
{
    FC_TRANSPOSE_BLOCKS(4, tr4x4_d)
}

/* ------------------------------------------------- direct 3x3 convolution */

/* The vector operations of fc_direct3_impl.h: 8 lanes, masks as vectors of
 * all-ones or zero lanes. Partial loads go through maskload (which does not
 * touch the lanes it leaves out); partial stores as stores of 4, 2 and 1
 * lanes (a masked store is slow on some CPUs). */
typedef __m256 d3v;
typedef __m256i d3m;
#define D3W 8
#define D3_FN(name) fc_##name##_avx2_s

static inline __m256i d3_lanes(int c, int W)
{
    /* lanes j with 0 <= c + j < W */
    const int lo = c < 0 ? -c : 0;
    const int hi = W - c > 8 ? 8 : W - c;
    const __m256i j = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_and_si256(_mm256_cmpgt_epi32(j, _mm256_set1_epi32(lo - 1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), j));
}

static inline __m256 d3_loadm(__m256i m, const float *p) { return _mm256_maskload_ps(p, m); }

static inline void d3_storem(float *p, __m256i m, __m256 v)
{
    const unsigned bits = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(m));
    if (bits == 0xFF) {
        _mm256_storeu_ps(p, v);
        return;
    }
    if (bits == 0) return;
    /* the mask's lanes are contiguous: lanes lo .. lo + n moved down to 0, then
     * stored 4, 2 and 1 at a time */
    const int lo = __builtin_ctz(bits), n = __builtin_popcount(bits);
    if (lo)
        v = _mm256_permutevar8x32_ps(v, _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                         _mm256_set1_epi32(lo)));
    p += lo;
    __m128 h = _mm256_castps256_ps128(v);
    if (n & 4) {
        _mm_storeu_ps(p, h);
        h = _mm256_extractf128_ps(v, 1);
        p += 4;
    }
    if (n & 2) {
        _mm_storel_pi((__m64 *)p, h);
        h = _mm_movehl_ps(h, h);
        p += 2;
    }
    if (n & 1) _mm_store_ss(p, h);
}

static inline void d3_store(float *p, __m256 v) { _mm256_store_ps(p, v); }
static inline __m256 d3_loadu(const float *p) { return _mm256_loadu_ps(p); }
static inline void d3_storeu(float *p, __m256 v) { _mm256_storeu_ps(p, v); }
static inline __m256 d3_zero(void) { return _mm256_setzero_ps(); }
static inline __m256 d3_set1(float f) { return _mm256_set1_ps(f); }
static inline __m256 d3_add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
static inline __m256 d3_fmadd(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }

static inline __m256 d3_act(__m256 acc, __m256 bv, int act, __m256 sv)
{
    const __m256 zero = _mm256_setzero_ps();
    __m256 o = _mm256_add_ps(acc, bv);
    if (act == FC_ACT_RELU)
        o = _mm256_max_ps(zero, o);   /* (a NaN stays: the second operand is kept) */
    else if (act == FC_ACT_LEAKY)
        o = _mm256_blendv_ps(o, _mm256_mul_ps(o, sv), _mm256_cmp_ps(o, zero, _CMP_LT_OQ));
    return o;
}

static inline __m256 d3_max(__m256 a, __m256 b)
{
    return _mm256_blendv_ps(_mm256_max_ps(b, a), b, _mm256_cmp_ps(b, b, _CMP_UNORD_Q));
}

static inline __m256 d3_pairs_max(__m256 a, __m256 b)
{
    /* in each 128-bit half: a's even (odd) lanes, then b's; then the halves' pairs in order */
    const __m256 e = _mm256_shuffle_ps(a, b, 0x88), o = _mm256_shuffle_ps(a, b, 0xDD);
    return d3_max(_mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)),
                  _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8)));
}

/* the window maximum m and its code k after the window's next pixel v (of code kv) */
#define D3_POOL_STEP(v, kv)                                                                    \
    do {                                                                                       \
        const __m256 c_ = _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)); \
        m = _mm256_blendv_ps(m, v, c_);                                                        \
        k = _mm256_blendv_ps(k, _mm256_set1_ps(kv), c_);                                       \
    } while (0)

static inline void d3_pool_codes(__m256 a0, __m256 a1, __m256 b0, __m256 b1, float *out, unsigned char *code)
{
    /* even and odd columns of each row, in window order */
    const __m256 ae = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a0, a1, 0x88)), 0xD8));
    const __m256 ao = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a0, a1, 0xDD)), 0xD8));
    const __m256 be = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(b0, b1, 0x88)), 0xD8));
    const __m256 bo = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(b0, b1, 0xDD)), 0xD8));
    __m256 m = ae, k = _mm256_setzero_ps();
    D3_POOL_STEP(ao, 1.0f);
    D3_POOL_STEP(be, 2.0f);
    D3_POOL_STEP(bo, 3.0f);
    _mm256_store_ps(out, m);
    const __m256i ki = _mm256_cvtps_epi32(k);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(ki), _mm256_extracti128_si256(ki, 1));
    _mm_storel_epi64((__m128i *)code, _mm_packus_epi16(w, w));
}
#undef D3_POOL_STEP

#include "fc_direct3_impl.h"
#undef D3_FN
#undef D3W

/* ------------------------------------------------ Winograd F(4x4, 3x3) and F(4x4, 2x2) */
#define FC_ISA avx2
#include "fc_winograd_inst.h"
#undef FC_ISA
#endif
