/* AVX-512F micro-kernels: float 6 x 32, double 6 x 16 (12 accumulators each),
 * from a packed B panel or from B rows addressed through offsets.
 * Compiled with -mavx512f -mavx512dq -mfma; only called when the CPU has them. */
#include "fc_gemm.h"

#if FC_X86
#include <immintrin.h>

#define UKR512(T, VT, MR, NR, W, BROW, LOADB, BCAST, FMADD, STORE, ZERO, AEL, AADV) \
    enum { MR_ = MR };                                                           \
    VT acc[MR][2];                                                               \
    for (int i = 0; i < MR; i++) { acc[i][0] = ZERO(); acc[i][1] = ZERO(); }     \
    for (long p = 0; p < k; p++) {                                               \
        const T *bp = (BROW);                                                    \
        VT b0 = LOADB(bp), b1 = LOADB(bp + W);                                   \
        for (int i = 0; i < MR; i++) {                                           \
            VT ai = BCAST(AEL(i));                                               \
            acc[i][0] = FMADD(ai, b0, acc[i][0]);                                \
            acc[i][1] = FMADD(ai, b1, acc[i][1]);                                \
        }                                                                        \
        AADV;                                                                    \
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

#define PACKED_A(i) a[i]
#define ADV_PACKED a += MR_
#define INPLACE_A(i) a[aoff[i] + p]
#define ADV_NONE

void fc_ukr_avx512_s(long k, const float *a, const float *b, float *c,
                     long rs_c, long cs_c, float alpha, float beta)
{
    UKR512(float, __m512, FC_AVX512_MR_S, FC_AVX512_NR_S, 16, b + p * FC_AVX512_NR_S,
           _mm512_load_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_store_ps, _mm512_setzero_ps, PACKED_A, ADV_PACKED)
}

void fc_ukri_avx512_s(long k, const float *a, const float *b, const long *boff, float *c,
                      long rs_c, long cs_c, float alpha, float beta)
{
    UKR512(float, __m512, FC_AVX512_MR_S, FC_AVX512_NR_S, 16, b + boff[p],
           _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_store_ps, _mm512_setzero_ps, PACKED_A, ADV_PACKED)
}

void fc_ukr_avx512_d(long k, const double *a, const double *b, double *c,
                     long rs_c, long cs_c, double alpha, double beta)
{
    UKR512(double, __m512d, FC_AVX512_MR_D, FC_AVX512_NR_D, 8, b + p * FC_AVX512_NR_D,
           _mm512_load_pd, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_store_pd, _mm512_setzero_pd, PACKED_A, ADV_PACKED)
}

void fc_ukri_avx512_d(long k, const double *a, const double *b, const long *boff, double *c,
                      long rs_c, long cs_c, double alpha, double beta)
{
    UKR512(double, __m512d, FC_AVX512_MR_D, FC_AVX512_NR_D, 8, b + boff[p],
           _mm512_loadu_pd, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_store_pd, _mm512_setzero_pd, PACKED_A, ADV_PACKED)
}
void fc_ukra_avx512_s(long k, const float *a, const long *aoff, const float *b, float *c,
                      long rs_c, long cs_c, float alpha, float beta)
{
    UKR512(float, __m512, FC_AVX512_MR_S, FC_AVX512_NR_S, 16, b + p * FC_AVX512_NR_S,
           _mm512_load_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_store_ps, _mm512_setzero_ps,
           INPLACE_A, ADV_NONE)
}

void fc_ukra_avx512_d(long k, const double *a, const long *aoff, const double *b, double *c,
                      long rs_c, long cs_c, double alpha, double beta)
{
    UKR512(double, __m512d, FC_AVX512_MR_D, FC_AVX512_NR_D, 8, b + p * FC_AVX512_NR_D,
           _mm512_load_pd, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_store_pd, _mm512_setzero_pd,
           INPLACE_A, ADV_NONE)
}
float fc_dot_avx512_s(const float *a, const float *b, int k)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= k; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    float t[16] __attribute__((aligned(64)));
    _mm512_store_ps(t, _mm512_add_ps(s0, s1));
    float r = 0;
    for (int l = 0; l < 16; l++) r += t[l];
    for (; i < k; i++) r += a[i] * b[i];
    return r;
}

double fc_dot_avx512_d(const double *a, const double *b, int k)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        s0 = _mm512_fmadd_pd(_mm512_loadu_pd(a + i), _mm512_loadu_pd(b + i), s0);
        s1 = _mm512_fmadd_pd(_mm512_loadu_pd(a + i + 8), _mm512_loadu_pd(b + i + 8), s1);
    }
    double t[8] __attribute__((aligned(64)));
    _mm512_store_pd(t, _mm512_add_pd(s0, s1));
    double r = 0;
    for (int l = 0; l < 8; l++) r += t[l];
    for (; i < k; i++) r += a[i] * b[i];
    return r;
}
#define FN(name) fc_##name##_avx512_s
#define T float
#include "fc_store_impl.h"
#undef T
#undef FN
#define FN(name) fc_##name##_avx512_d
#define T double
#include "fc_store_impl.h"
#undef T
#undef FN
#endif
