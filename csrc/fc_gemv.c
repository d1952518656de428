/* Small-batch products y = x . W^T + bias (Linear with a batch of a few rows,
 * or, with the roles of x and W swapped and the bias by row, a Linear with a
 * few output features): every output is a dot product of two contiguous
 * rows, so nothing is packed.
 * Parallel over groups of eight output features, whose dot products share the
 * loads of x (one kernel per instruction set, beside the micro-kernels); each
 * sums in a fixed order, the same in every group, so results do not depend
 * on the number of threads. */
#include "fc_gemm.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#ifndef FC_OPENMP
#define FC_OPENMP 0
#endif

#define DOT_IMPL(T, SFX)                                                              \
int fc_gemv_##SFX(int n, int m, int k, const T *x, long ldx, const T *w, long ldw,    \
                  T *y, long ldy, const fc_epilogue *epi, int nthreads)               \
{                                                                                     \
    const T *bias = epi ? (const T *)epi->bias : NULL;                                \
    const int act = epi ? epi->act : FC_ACT_NONE;                                     \
    const T slope = epi ? (T)epi->slope : 0;                                          \
    const int col_bias = epi && epi->bias_mode == FC_BIAS_COL;                        \
    const int row_bias = epi && epi->bias_mode == FC_BIAS_ROW;                        \
    void (*dot8)(const T *, const T *const *, int, T *) = fc_kernel()->dot8_##SFX;    \
    const int ngroups = (m + 7) / 8;                                                  \
    if (nthreads < 1) nthreads = 1;                                                   \
    FC_PARALLEL_FOR                                                                   \
    for (int gi = 0; gi < ngroups; gi++) {                                            \
        const int o0 = 8 * gi, cnt = m - o0 < 8 ? m - o0 : 8;                         \
        const T *rows[8];                                                             \
        for (int j = 0; j < 8; j++) rows[j] = w + (long)(o0 + (j < cnt ? j : cnt - 1)) * ldw; \
        for (int r = 0; r < n; r++) {                                                 \
            T v[8];                                                                   \
            dot8(x + (long)r * ldx, rows, k, v);                                      \
            for (int j = 0; j < cnt; j++) {                                           \
                T u = v[j];                                                           \
                if (col_bias) u += bias[o0 + j];                                      \
                else if (row_bias) u += bias[r];                                      \
                if (act == FC_ACT_RELU) u = u < 0 ? (T)0 : u;                         \
                else if (act == FC_ACT_LEAKY) u = u < 0 ? u * slope : u;              \
                y[(long)r * ldy + o0 + j] = u;                                        \
            }                                                                         \
        }                                                                             \
    }                                                                                 \
    return 0;                                                                         \
}

#if FC_OPENMP
#define FC_PARALLEL_FOR _Pragma("omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)")
#else
#define FC_PARALLEL_FOR
#endif

DOT_IMPL(float, s)
DOT_IMPL(double, d)
