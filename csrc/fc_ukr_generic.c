/* Portable micro-kernels: C (MR x NR) = alpha * A_panel * B_panel + beta * C. */
#include "fc_gemm.h"

#define UKR_BODY(T, MR, NR)                                                   \
    T acc[MR][NR];                                                            \
    for (int i = 0; i < MR; i++)                                              \
        for (int j = 0; j < NR; j++) acc[i][j] = 0;                           \
    for (long p = 0; p < k; p++) {                                            \
        for (int i = 0; i < MR; i++) {                                        \
            T ai = a[p * MR + i];                                             \
            for (int j = 0; j < NR; j++) acc[i][j] += ai * b[p * NR + j];     \
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
    UKR_BODY(float, FC_GENERIC_MR_S, FC_GENERIC_NR_S)
}

void fc_ukr_generic_d(long k, const double *a, const double *b, double *c,
                      long rs_c, long cs_c, double alpha, double beta)
{
    UKR_BODY(double, FC_GENERIC_MR_D, FC_GENERIC_NR_D)
}
