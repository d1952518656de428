/* Portable micro-kernels: acc (MR x NR) = A panel . B panel, finished by the
 * tile store; A packed or in place, B packed or through row offsets. */
#include <string.h>
#include "fc_gemm.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#ifndef FC_OPENMP
#define FC_OPENMP 0
#endif

#define FN(name) fc_##name##_generic_s
#define T float
#include "fc_store_impl.h"
#undef T
#undef FN
#define FN(name) fc_##name##_generic_d
#define T double
#include "fc_store_impl.h"
#undef T
#undef FN

#define UKR_BODY(T, MR, NR, BROW, AEL, STORE)                                     \
    T acc[MR][NR];                                                            \
    for (int i = 0; i < MR; i++)                                              \
        for (int j = 0; j < NR; j++) acc[i][j] = 0;                           \
    for (long p = 0; p < k; p++) {                                            \
        const T *bp = (BROW);                                                 \
        for (int i = 0; i < MR; i++) {                                        \
            T ai = AEL;                                                       \
            for (int j = 0; j < NR; j++) acc[i][j] += ai * bp[j];             \
        }                                                                     \
    }                                                                         \
    STORE(c, ldc, &acc[0][0], NR, t);

void fc_ukr_generic_s(long k, const float *a, const float *b, float *c, long ldc, const fc_tile *t)
{
    UKR_BODY(float, FC_GENERIC_MR_S, FC_GENERIC_NR_S, b + p * FC_GENERIC_NR_S, a[p * FC_GENERIC_MR_S + i], fc_tile_store_generic_s)
}

void fc_ukri_generic_s(long k, const float *a, const float *b, const long *boff, float *c, long ldc,
                       const fc_tile *t)
{
    UKR_BODY(float, FC_GENERIC_MR_S, FC_GENERIC_NR_S, b + boff[p], a[p * FC_GENERIC_MR_S + i], fc_tile_store_generic_s)
}

void fc_ukrg_generic_s(long k, const float *a, const long *aoff, const long *doff, const float *b,
                       float *c, long ldc, const fc_tile *t)
{
    UKR_BODY(float, FC_GENERIC_MR_S, FC_GENERIC_NR_S, b + p * FC_GENERIC_NR_S, a[aoff[i] + (doff ? doff[p] : p)], fc_tile_store_generic_s)
}

void fc_ukr_generic_d(long k, const double *a, const double *b, double *c, long ldc, const fc_tile *t)
{
    UKR_BODY(double, FC_GENERIC_MR_D, FC_GENERIC_NR_D, b + p * FC_GENERIC_NR_D, a[p * FC_GENERIC_MR_D + i], fc_tile_store_generic_d)
}

void fc_ukri_generic_d(long k, const double *a, const double *b, const long *boff, double *c,
                       long ldc, const fc_tile *t)
{
    UKR_BODY(double, FC_GENERIC_MR_D, FC_GENERIC_NR_D, b + boff[p], a[p * FC_GENERIC_MR_D + i], fc_tile_store_generic_d)
}

void fc_ukrg_generic_d(long k, const double *a, const long *aoff, const long *doff, const double *b,
                       double *c, long ldc, const fc_tile *t)
{
    UKR_BODY(double, FC_GENERIC_MR_D, FC_GENERIC_NR_D, b + p * FC_GENERIC_NR_D, a[aoff[i] + (doff ? doff[p] : p)], fc_tile_store_generic_d)
}

/* Eight dot products of a with the rows b[0..7], each over eight accumulators
 * reduced in a fixed order. */
#define DOT8_GENERIC(T)                                                       \
    for (int j = 0; j < 8; j++) {                                             \
        const T *bj = b[j];                                                   \
        T acc[8] = {0};                                                       \
        int i = 0;                                                            \
        for (; i + 8 <= k; i += 8)                                            \
            for (int l = 0; l < 8; l++) acc[l] += a[i + l] * bj[i + l];       \
        T r = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])); \
        for (; i < k; i++) r += a[i] * bj[i];                                 \
        out[j] = r;                                                           \
    }

void fc_dot8_generic_s(const float *a, const float *const *b, int k, float *out) { DOT8_GENERIC(float) }
void fc_dot8_generic_d(const double *a, const double *const *b, int k, double *out) { DOT8_GENERIC(double) }


/* Transposes in blocks of 8 x 8, so that both sides stay in cache. */
#define TRANSPOSE_GENERIC(T)                                                  \
    for (int i0 = 0; i0 < rows; i0 += 8)                                      \
        for (int j0 = 0; j0 < cols; j0 += 8) {                                \
            const int i1 = i0 + 8 < rows ? i0 + 8 : rows;                     \
            const int j1 = j0 + 8 < cols ? j0 + 8 : cols;                     \
            for (int j = j0; j < j1; j++)                                     \
                for (int i = i0; i < i1; i++)                                 \
                    dst[(long)j * ldd + i] = src[(long)i * lds + j];          \
        }

void fc_transpose_generic_s(const float *src, long lds, float *dst, long ldd, int rows, int cols)
{
    TRANSPOSE_GENERIC(float)
}

void fc_transpose_generic_d(const double *src, long lds, double *dst, long ldd, int rows, int cols)
{
    TRANSPOSE_GENERIC(double)
}

/* ------------------------------------------------ Winograd F(4x4, 3x3) and F(4x4, 2x2) */
#define FC_ISA generic
#include "fc_winograd_inst.h"
#undef FC_ISA
