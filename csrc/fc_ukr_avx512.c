/* AVX-512F micro-kernels: float 6 x 32, double 6 x 16 (12 accumulators each).
 * Compiled with -mavx512f -mavx512dq -mfma; only called when the CPU has them. */
#include "fc_gemm.h"

#if FC_X86
#include <immintrin.h>

#define UKR512(T, VT, MR, NR, W, LOAD, BCAST, FMADD, STORE, ZERO)                 \
    VT acc[MR][2];                                                               \
    for (int i = 0; i < MR; i++) { acc[i][0] = ZERO(); acc[i][1] = ZERO(); }     \
    for (long p = 0; p < k; p++) {                                               \
        VT b0 = LOAD(b), b1 = LOAD(b + W);                                       \
        for (int i = 0; i < MR; i++) {                                           \
            VT ai = BCAST(a[i]);                                                 \
            acc[i][0] = FMADD(ai, b0, acc[i][0]);                                \
            acc[i][1] = FMADD(ai, b1, acc[i][1]);                                \
        }                                                                        \
        a += MR;                                                                 \
        b += NR;                                                                 \
    }                                                                            \
    T t[MR * NR] __attribute__((aligned(64)));                                   \
    for (int i = 0; i < MR; i++) {                                               \
        STORE(t + i * NR, acc[i][0]);                                            \
        STORE(t + i * NR + W, acc[i][1]);                                        \
    }                                                                            \
    for (int i = 0; i < MR; i++)                                                 \
        for (int j = 0; j < NR; j++) {                                           \
            T *cij = c + i * rs_c + j * cs_c;                                    \
            T v = alpha == 1 ? t[i * NR + j] : alpha * t[i * NR + j];            \
            if (beta == 0) *cij = v;                                             \
            else if (beta == 1) *cij += v;                                       \
            else *cij = beta * *cij + v;                                         \
        }

void fc_ukr_avx512_s(long k, const float *a, const float *b, float *c,
                     long rs_c, long cs_c, float alpha, float beta)
{
    UKR512(float, __m512, FC_AVX512_MR_S, FC_AVX512_NR_S, 16, _mm512_load_ps,
           _mm512_set1_ps, _mm512_fmadd_ps, _mm512_store_ps, _mm512_setzero_ps)
}

void fc_ukr_avx512_d(long k, const double *a, const double *b, double *c,
                     long rs_c, long cs_c, double alpha, double beta)
{
    UKR512(double, __m512d, FC_AVX512_MR_D, FC_AVX512_NR_D, 8, _mm512_load_pd,
           _mm512_set1_pd, _mm512_fmadd_pd, _mm512_store_pd, _mm512_setzero_pd)
}
#endif
