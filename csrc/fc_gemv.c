/* Small-batch products y = x . W^T + bias (Linear with a batch of a few rows):
 * every output is a dot product of two contiguous rows, so nothing is packed.
 * Parallel over output features; the dot products (one per instruction set,
 * beside the micro-kernels) sum in a fixed order, so results do not depend
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
    T (*dot)(const T *, const T *, int) = fc_kernel()->dot_##SFX;                     \
    if (nthreads < 1) nthreads = 1;                                                   \
    FC_PARALLEL_FOR                                                                   \
    for (int o = 0; o < m; o++) {                                                     \
        for (int r = 0; r < n; r++) {                                                 \
            T v = dot(x + (long)r * ldx, w + (long)o * ldw, k);                       \
            if (col_bias) v += bias[o];                                               \
            if (act == FC_ACT_RELU) v = v < 0 ? (T)0 : v;                             \
            else if (act == FC_ACT_LEAKY) v = v < 0 ? v * slope : v;                  \
            y[(long)r * ldy + o] = v;                                                 \
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
