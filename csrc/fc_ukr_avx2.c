/* AVX2 + FMA micro-kernels: float 6 x 16, double 6 x 8 (12 accumulators each).
 * Compiled with -mavx2 -mfma; only called when the CPU has both. */
#include "fc_gemm.h"

#if FC_X86
#include <immintrin.h>

/* c = alpha * acc + beta * c for one row of vectors */
#define STORE_ROW(VT, LD, ST, ADD, MUL, FMA, SET1, ptr, acc)                  \
    do {                                                                       \
        VT v_ = (acc);                                                         \
        if (alpha != 1) v_ = MUL(v_, SET1(alpha));                             \
        if (beta == 0) ST((ptr), v_);                                          \
        else if (beta == 1) ST((ptr), ADD(LD(ptr), v_));                       \
        else ST((ptr), FMA(SET1(beta), LD(ptr), v_));                          \
    } while (0)

void fc_ukr_avx2_s(long k, const float *a, const float *b, float *c,
                   long rs_c, long cs_c, float alpha, float beta)
{
    enum { MR = FC_AVX2_MR_S, NR = FC_AVX2_NR_S };
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    if (cs_c == 1) {
        for (int i = 0; i < MR; i++) _mm_prefetch((const char *)(c + i * rs_c), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (long p = 0; p < k; p++) {
        __m256 b0 = _mm256_load_ps(b);
        __m256 b1 = _mm256_load_ps(b + 8);
        __m256 ai;
        _mm_prefetch((const char *)(b + 8 * NR), _MM_HINT_T0);
        ai = _mm256_broadcast_ss(a + 0);
        c00 = _mm256_fmadd_ps(ai, b0, c00); c01 = _mm256_fmadd_ps(ai, b1, c01);
        ai = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(ai, b0, c10); c11 = _mm256_fmadd_ps(ai, b1, c11);
        ai = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(ai, b0, c20); c21 = _mm256_fmadd_ps(ai, b1, c21);
        ai = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(ai, b0, c30); c31 = _mm256_fmadd_ps(ai, b1, c31);
        ai = _mm256_broadcast_ss(a + 4);
        c40 = _mm256_fmadd_ps(ai, b0, c40); c41 = _mm256_fmadd_ps(ai, b1, c41);
        ai = _mm256_broadcast_ss(a + 5);
        c50 = _mm256_fmadd_ps(ai, b0, c50); c51 = _mm256_fmadd_ps(ai, b1, c51);
        a += MR;
        b += NR;
    }
    if (cs_c == 1) {
#define ROW_S(i, x0, x1)                                                                     \
        STORE_ROW(__m256, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_add_ps, _mm256_mul_ps,   \
                  _mm256_fmadd_ps, _mm256_set1_ps, c + (i) * rs_c, x0);                      \
        STORE_ROW(__m256, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_add_ps, _mm256_mul_ps,   \
                  _mm256_fmadd_ps, _mm256_set1_ps, c + (i) * rs_c + 8, x1)
        ROW_S(0, c00, c01); ROW_S(1, c10, c11); ROW_S(2, c20, c21);
        ROW_S(3, c30, c31); ROW_S(4, c40, c41); ROW_S(5, c50, c51);
#undef ROW_S
    } else {
        float t[MR * NR] __attribute__((aligned(32)));
        _mm256_store_ps(t + 0 * NR, c00); _mm256_store_ps(t + 0 * NR + 8, c01);
        _mm256_store_ps(t + 1 * NR, c10); _mm256_store_ps(t + 1 * NR + 8, c11);
        _mm256_store_ps(t + 2 * NR, c20); _mm256_store_ps(t + 2 * NR + 8, c21);
        _mm256_store_ps(t + 3 * NR, c30); _mm256_store_ps(t + 3 * NR + 8, c31);
        _mm256_store_ps(t + 4 * NR, c40); _mm256_store_ps(t + 4 * NR + 8, c41);
        _mm256_store_ps(t + 5 * NR, c50); _mm256_store_ps(t + 5 * NR + 8, c51);
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) {
                float *cij = c + i * rs_c + j * cs_c;
                float v = alpha == 1 ? t[i * NR + j] : alpha * t[i * NR + j];
                if (beta == 0) *cij = v;
                else if (beta == 1) *cij += v;
                else *cij = beta * *cij + v;
            }
    }
}

void fc_ukr_avx2_d(long k, const double *a, const double *b, double *c,
                   long rs_c, long cs_c, double alpha, double beta)
{
    enum { MR = FC_AVX2_MR_D, NR = FC_AVX2_NR_D };
    __m256d c00 = _mm256_setzero_pd(), c01 = _mm256_setzero_pd();
    __m256d c10 = _mm256_setzero_pd(), c11 = _mm256_setzero_pd();
    __m256d c20 = _mm256_setzero_pd(), c21 = _mm256_setzero_pd();
    __m256d c30 = _mm256_setzero_pd(), c31 = _mm256_setzero_pd();
    __m256d c40 = _mm256_setzero_pd(), c41 = _mm256_setzero_pd();
    __m256d c50 = _mm256_setzero_pd(), c51 = _mm256_setzero_pd();
#pragma GCC unroll 4
    for (long p = 0; p < k; p++) {
        __m256d b0 = _mm256_load_pd(b);
        __m256d b1 = _mm256_load_pd(b + 4);
        __m256d ai;
        ai = _mm256_broadcast_sd(a + 0);
        c00 = _mm256_fmadd_pd(ai, b0, c00); c01 = _mm256_fmadd_pd(ai, b1, c01);
        ai = _mm256_broadcast_sd(a + 1);
        c10 = _mm256_fmadd_pd(ai, b0, c10); c11 = _mm256_fmadd_pd(ai, b1, c11);
        ai = _mm256_broadcast_sd(a + 2);
        c20 = _mm256_fmadd_pd(ai, b0, c20); c21 = _mm256_fmadd_pd(ai, b1, c21);
        ai = _mm256_broadcast_sd(a + 3);
        c30 = _mm256_fmadd_pd(ai, b0, c30); c31 = _mm256_fmadd_pd(ai, b1, c31);
        ai = _mm256_broadcast_sd(a + 4);
        c40 = _mm256_fmadd_pd(ai, b0, c40); c41 = _mm256_fmadd_pd(ai, b1, c41);
        ai = _mm256_broadcast_sd(a + 5);
        c50 = _mm256_fmadd_pd(ai, b0, c50); c51 = _mm256_fmadd_pd(ai, b1, c51);
        a += MR;
        b += NR;
    }
    double t[MR * NR] __attribute__((aligned(32)));
    _mm256_store_pd(t + 0 * NR, c00); _mm256_store_pd(t + 0 * NR + 4, c01);
    _mm256_store_pd(t + 1 * NR, c10); _mm256_store_pd(t + 1 * NR + 4, c11);
    _mm256_store_pd(t + 2 * NR, c20); _mm256_store_pd(t + 2 * NR + 4, c21);
    _mm256_store_pd(t + 3 * NR, c30); _mm256_store_pd(t + 3 * NR + 4, c31);
    _mm256_store_pd(t + 4 * NR, c40); _mm256_store_pd(t + 4 * NR + 4, c41);
    _mm256_store_pd(t + 5 * NR, c50); _mm256_store_pd(t + 5 * NR + 4, c51);
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) {
            double *cij = c + i * rs_c + j * cs_c;
            double v = alpha == 1 ? t[i * NR + j] : alpha * t[i * NR + j];
            if (beta == 0) *cij = v;
            else if (beta == 1) *cij += v;
            else *cij = beta * *cij + v;
        }
}
#endif
