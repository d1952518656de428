/* AVX2 + FMA micro-kernels: float 6 x 16, double 6 x 8 (12 accumulators each).
 * Compiled with -mavx2 -mfma; only called when the CPU has both.
 *
 * Each comes in two forms: B from a packed panel (row p at b + p * NR), and
 * B read in place through row offsets (row p at b + boff[p]), used for
 * stride-1 convolution where the rows of B are shifted views of one image. */
#include "fc_gemm.h"

#if FC_X86
#include <immintrin.h>

/* C (rows i, stride rs_c/cs_c) = alpha * t + beta * C, t an MR x NR tile */
#define MERGE_TILE(T, t, MR, NR)                                               \
    for (int i = 0; i < MR; i++)                                               \
        for (int j = 0; j < NR; j++) {                                         \
            T *cij = c + i * rs_c + j * cs_c;                                  \
            T v = alpha == 1 ? t[i * NR + j] : alpha * t[i * NR + j];          \
            if (beta == 0) *cij = v;                                           \
            else if (beta == 1) *cij += v;                                     \
            else *cij = beta * *cij + v;                                       \
        }

#define STORE_ROW_S(ptr, acc)                                                  \
    do {                                                                       \
        __m256 v_ = (acc);                                                     \
        if (alpha != 1) v_ = _mm256_mul_ps(v_, _mm256_set1_ps(alpha));         \
        if (beta == 0) _mm256_storeu_ps((ptr), v_);                            \
        else if (beta == 1) _mm256_storeu_ps((ptr), _mm256_add_ps(_mm256_loadu_ps(ptr), v_)); \
        else _mm256_storeu_ps((ptr), _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(ptr), v_)); \
    } while (0)

#define FMA_ROW_S(i, x0, x1)                                                   \
    ai = _mm256_broadcast_ss(AROW(i));                                         \
    x0 = _mm256_fmadd_ps(ai, b0, x0);                                          \
    x1 = _mm256_fmadd_ps(ai, b1, x1)

/* BROW: address of row p of B; LOADB: aligned or unaligned load */
#define UKR_AVX2_S(BROW, LOADB)                                                \
    enum { MR = FC_AVX2_MR_S, NR = FC_AVX2_NR_S };                             \
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();               \
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();               \
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();               \
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();               \
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();               \
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();               \
    if (cs_c == 1)                                                             \
        for (int i = 0; i < MR; i++) _mm_prefetch((const char *)(c + i * rs_c), _MM_HINT_T0); \
    _Pragma("GCC unroll 4")                                                    \
    for (long p = 0; p < k; p++) {                                             \
        const float *bp = (BROW);                                              \
        __m256 b0 = LOADB(bp), b1 = LOADB(bp + 8), ai;                         \
        FMA_ROW_S(0, c00, c01); FMA_ROW_S(1, c10, c11); FMA_ROW_S(2, c20, c21); \
        FMA_ROW_S(3, c30, c31); FMA_ROW_S(4, c40, c41); FMA_ROW_S(5, c50, c51); \
        AADV;                                                                  \
    }                                                                          \
    if (cs_c == 1) {                                                           \
        STORE_ROW_S(c + 0 * rs_c, c00); STORE_ROW_S(c + 0 * rs_c + 8, c01);    \
        STORE_ROW_S(c + 1 * rs_c, c10); STORE_ROW_S(c + 1 * rs_c + 8, c11);    \
        STORE_ROW_S(c + 2 * rs_c, c20); STORE_ROW_S(c + 2 * rs_c + 8, c21);    \
        STORE_ROW_S(c + 3 * rs_c, c30); STORE_ROW_S(c + 3 * rs_c + 8, c31);    \
        STORE_ROW_S(c + 4 * rs_c, c40); STORE_ROW_S(c + 4 * rs_c + 8, c41);    \
        STORE_ROW_S(c + 5 * rs_c, c50); STORE_ROW_S(c + 5 * rs_c + 8, c51);    \
    } else {                                                                   \
        float t[MR * NR] __attribute__((aligned(32)));                         \
        _mm256_store_ps(t + 0 * NR, c00); _mm256_store_ps(t + 0 * NR + 8, c01); \
        _mm256_store_ps(t + 1 * NR, c10); _mm256_store_ps(t + 1 * NR + 8, c11); \
        _mm256_store_ps(t + 2 * NR, c20); _mm256_store_ps(t + 2 * NR + 8, c21); \
        _mm256_store_ps(t + 3 * NR, c30); _mm256_store_ps(t + 3 * NR + 8, c31); \
        _mm256_store_ps(t + 4 * NR, c40); _mm256_store_ps(t + 4 * NR + 8, c41); \
        _mm256_store_ps(t + 5 * NR, c50); _mm256_store_ps(t + 5 * NR + 8, c51); \
        MERGE_TILE(float, t, MR, NR)                                           \
    }

/* A from a packed panel: row i of step p at a[p * MR + i] */
#define AROW(i) (a + (i))
#define AADV a += MR
void fc_ukr_avx2_s(long k, const float *a, const float *b, float *c,
                   long rs_c, long cs_c, float alpha, float beta)
{
    UKR_AVX2_S(b + p * NR, _mm256_load_ps)
}

void fc_ukri_avx2_s(long k, const float *a, const float *b, const long *boff, float *c,
                    long rs_c, long cs_c, float alpha, float beta)
{
    UKR_AVX2_S(b + boff[p], _mm256_loadu_ps)
}
#undef AROW
#undef AADV

/* A read in place: row i of step p at a[aoff[i] + p] */
#define AROW(i) (a + aoff[i] + p)
#define AADV
void fc_ukra_avx2_s(long k, const float *a, const long *aoff, const float *b, float *c,
                    long rs_c, long cs_c, float alpha, float beta)
{
    UKR_AVX2_S(b + p * NR, _mm256_load_ps)
}
#undef AROW
#undef AADV

#define FMA_ROW_D(i, x0, x1)                                                   \
    ai = _mm256_broadcast_sd(AROW(i));                                         \
    x0 = _mm256_fmadd_pd(ai, b0, x0);                                          \
    x1 = _mm256_fmadd_pd(ai, b1, x1)

#define UKR_AVX2_D(BROW, LOADB)                                                \
    enum { MR = FC_AVX2_MR_D, NR = FC_AVX2_NR_D };                             \
    __m256d c00 = _mm256_setzero_pd(), c01 = _mm256_setzero_pd();              \
    __m256d c10 = _mm256_setzero_pd(), c11 = _mm256_setzero_pd();              \
    __m256d c20 = _mm256_setzero_pd(), c21 = _mm256_setzero_pd();              \
    __m256d c30 = _mm256_setzero_pd(), c31 = _mm256_setzero_pd();              \
    __m256d c40 = _mm256_setzero_pd(), c41 = _mm256_setzero_pd();              \
    __m256d c50 = _mm256_setzero_pd(), c51 = _mm256_setzero_pd();              \
    _Pragma("GCC unroll 4")                                                    \
    for (long p = 0; p < k; p++) {                                             \
        const double *bp = (BROW);                                             \
        __m256d b0 = LOADB(bp), b1 = LOADB(bp + 4), ai;                        \
        FMA_ROW_D(0, c00, c01); FMA_ROW_D(1, c10, c11); FMA_ROW_D(2, c20, c21); \
        FMA_ROW_D(3, c30, c31); FMA_ROW_D(4, c40, c41); FMA_ROW_D(5, c50, c51); \
        AADV;                                                                  \
    }                                                                          \
    double t[MR * NR] __attribute__((aligned(32)));                            \
    _mm256_store_pd(t + 0 * NR, c00); _mm256_store_pd(t + 0 * NR + 4, c01);    \
    _mm256_store_pd(t + 1 * NR, c10); _mm256_store_pd(t + 1 * NR + 4, c11);    \
    _mm256_store_pd(t + 2 * NR, c20); _mm256_store_pd(t + 2 * NR + 4, c21);    \
    _mm256_store_pd(t + 3 * NR, c30); _mm256_store_pd(t + 3 * NR + 4, c31);    \
    _mm256_store_pd(t + 4 * NR, c40); _mm256_store_pd(t + 4 * NR + 4, c41);    \
    _mm256_store_pd(t + 5 * NR, c50); _mm256_store_pd(t + 5 * NR + 4, c51);    \
    MERGE_TILE(double, t, MR, NR)

#define AROW(i) (a + (i))
#define AADV a += MR
void fc_ukr_avx2_d(long k, const double *a, const double *b, double *c,
                   long rs_c, long cs_c, double alpha, double beta)
{
    UKR_AVX2_D(b + p * NR, _mm256_load_pd)
}

void fc_ukri_avx2_d(long k, const double *a, const double *b, const long *boff, double *c,
                    long rs_c, long cs_c, double alpha, double beta)
{
    UKR_AVX2_D(b + boff[p], _mm256_loadu_pd)
}
#undef AROW
#undef AADV

#define AROW(i) (a + aoff[i] + p)
#define AADV
void fc_ukra_avx2_d(long k, const double *a, const long *aoff, const double *b, double *c,
                    long rs_c, long cs_c, double alpha, double beta)
{
    UKR_AVX2_D(b + p * NR, _mm256_load_pd)
}
#undef AROW
#undef AADV
/* Dot products for small-batch Linear: four independent 8-lane (4-lane)
 * accumulators, reduced in a fixed order. */
float fc_dot_avx2_s(const float *a, const float *b, int k)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 32 <= k; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= k; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    float t[8] __attribute__((aligned(32)));
    _mm256_store_ps(t, s);
    float r = ((t[0] + t[4]) + (t[1] + t[5])) + ((t[2] + t[6]) + (t[3] + t[7]));
    for (; i < k; i++) r += a[i] * b[i];
    return r;
}

double fc_dot_avx2_d(const double *a, const double *b, int k)
{
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    __m256d s2 = _mm256_setzero_pd(), s3 = _mm256_setzero_pd();
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        s0 = _mm256_fmadd_pd(_mm256_loadu_pd(a + i), _mm256_loadu_pd(b + i), s0);
        s1 = _mm256_fmadd_pd(_mm256_loadu_pd(a + i + 4), _mm256_loadu_pd(b + i + 4), s1);
        s2 = _mm256_fmadd_pd(_mm256_loadu_pd(a + i + 8), _mm256_loadu_pd(b + i + 8), s2);
        s3 = _mm256_fmadd_pd(_mm256_loadu_pd(a + i + 12), _mm256_loadu_pd(b + i + 12), s3);
    }
    for (; i + 4 <= k; i += 4)
        s0 = _mm256_fmadd_pd(_mm256_loadu_pd(a + i), _mm256_loadu_pd(b + i), s0);
    __m256d s = _mm256_add_pd(_mm256_add_pd(s0, s1), _mm256_add_pd(s2, s3));
    double t[4] __attribute__((aligned(32)));
    _mm256_store_pd(t, s);
    double r = (t[0] + t[2]) + (t[1] + t[3]);
    for (; i < k; i++) r += a[i] * b[i];
    return r;
}
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
#endif
