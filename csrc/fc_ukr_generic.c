/* Portable micro-kernels: C (MR x NR) = alpha * A_panel * B + beta * C, with B
 * from a packed panel (row p at b + p * NR) or through row offsets (b + boff[p]). */
#include "fc_gemm.h"

#define UKR_BODY(T, MR, NR, BROW, AEL)                                        \
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
    for (int i = 0; i < MR; i++)                                              \
        for (int j = 0; j < NR; j++) {                                        \
            T *cij = c + i * rs_c + j * cs_c;                                 \
            T v = alpha == 1 ? acc[i][j] : alpha * acc[i][j];                 \
            if (beta == 0) *cij = v;                                          \
            else if (beta == 1) *cij += v;                                    \
            else *cij = beta * *cij + v;                                      \
        }

void fc_ukr_generic_s(long k, const float *a, const float *b, float *c,
                      long rs_c, long cs_c, float alpha, float beta)
{
    UKR_BODY(float, FC_GENERIC_MR_S, FC_GENERIC_NR_S, b + p * FC_GENERIC_NR_S, a[p * FC_GENERIC_MR_S + i])
}

void fc_ukri_generic_s(long k, const float *a, const float *b, const long *boff, float *c,
                       long rs_c, long cs_c, float alpha, float beta)
{
    UKR_BODY(float, FC_GENERIC_MR_S, FC_GENERIC_NR_S, b + boff[p], a[p * FC_GENERIC_MR_S + i])
}

void fc_ukr_generic_d(long k, const double *a, const double *b, double *c,
                      long rs_c, long cs_c, double alpha, double beta)
{
    UKR_BODY(double, FC_GENERIC_MR_D, FC_GENERIC_NR_D, b + p * FC_GENERIC_NR_D, a[p * FC_GENERIC_MR_D + i])
}

void fc_ukri_generic_d(long k, const double *a, const double *b, const long *boff, double *c,
                       long rs_c, long cs_c, double alpha, double beta)
{
    UKR_BODY(double, FC_GENERIC_MR_D, FC_GENERIC_NR_D, b + boff[p], a[p * FC_GENERIC_MR_D + i])
}

void fc_ukra_generic_s(long k, const float *a, const long *aoff, const float *b, float *c,
                       long rs_c, long cs_c, float alpha, float beta)
{
    UKR_BODY(float, FC_GENERIC_MR_S, FC_GENERIC_NR_S, b + p * FC_GENERIC_NR_S, a[aoff[i] + p])
}

void fc_ukra_generic_d(long k, const double *a, const long *aoff, const double *b, double *c,
                       long rs_c, long cs_c, double alpha, double beta)
{
    UKR_BODY(double, FC_GENERIC_MR_D, FC_GENERIC_NR_D, b + p * FC_GENERIC_NR_D, a[aoff[i] + p])
}

#define DOT_GENERIC(T)                                                        \
    T acc[8] = {0};                                                           \
    int i = 0;                                                                \
    for (; i + 8 <= k; i += 8)                                                \
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];            \
    T r = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])); \
    for (; i < k; i++) r += a[i] * b[i];                                      \
    return r;

float fc_dot_generic_s(const float *a, const float *b, int k) { DOT_GENERIC(float) }
double fc_dot_generic_d(const double *a, const double *b, int k) { DOT_GENERIC(double) }

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
