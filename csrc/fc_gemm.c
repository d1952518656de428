/* GEMM driver: cache blocking, threading and epilogue (float and double). */
#include <string.h>
#include "fc_gemm.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#ifndef FC_OPENMP
#define FC_OPENMP 0
#endif

#define KINFO(T, SFX)                                                                        \
    static inline int KMR_##SFX(const fc_kernel_info *k) { return k->mr_##SFX; }             \
    static inline int KNR_##SFX(const fc_kernel_info *k) { return k->nr_##SFX; }             \
    static inline int KKC_##SFX(const fc_kernel_info *k) { return k->kc_##SFX; }             \
    static inline int KMC_##SFX(const fc_kernel_info *k) { return k->mc_##SFX; }             \
    static inline int KNC_##SFX(const fc_kernel_info *k) { return k->nc_##SFX; }             \
    static inline fc_ukr_##SFX##_t KUKR_##SFX(const fc_kernel_info *k) { return k->ukr_##SFX; }    \
    static inline fc_ukri_##SFX##_t KUKRI_##SFX(const fc_kernel_info *k) { return k->ukri_##SFX; } \
    static inline fc_ukrg_##SFX##_t KUKRG_##SFX(const fc_kernel_info *k) { return k->ukrg_##SFX; } \
    static inline int KNRN_##SFX(const fc_kernel_info *k) { return k->nrn_##SFX; }           \
    static inline fc_ukr_##SFX##_t KUKRN_##SFX(const fc_kernel_info *k, int i) { return k->ukrn_##SFX[i]; } \
    static inline fc_ukri_##SFX##_t KUKRIN_##SFX(const fc_kernel_info *k, int i) { return k->ukrin_##SFX[i]; }
KINFO(float, s)
KINFO(double, d)

#define T float
#define FN(name) name##_s
#include "fc_gemm_impl.h"
#undef T
#undef FN

#define T double
#define FN(name) name##_d
#include "fc_gemm_impl.h"
#undef T
#undef FN

/* The machine's compute as threads see it: each of nthreads threads runs the
 * float32 micro-kernel reps times over panels of depth k that stay in its
 * first-level cache, touching no shared memory; the threads meet only at the
 * end. Timing it at 1 and n threads tells how much of n cores the machine
 * gives at that moment. 0, or -1 where a thread's panels could not be had. */
int fc_ukr_probe_s(long reps, int k, int nthreads)
{
    const fc_kernel_info *ki = fc_kernel();
    const int mr = ki->mr_s, nr = ki->nr_s;
    int rc = 0;
    if (nthreads < 1) nthreads = 1;
    if (k < 1) k = 1;
#if FC_OPENMP
#pragma omp parallel num_threads(nthreads) if (nthreads > 1) reduction(| : rc)
#endif
    {
        /* each panel 64-byte aligned, as packing leaves them */
        const size_t la = ((size_t)mr * k + 15) & ~(size_t)15, lb = ((size_t)nr * k + 15) & ~(size_t)15;
        float *a = (float *)fc_aligned_alloc((la + lb + (size_t)mr * nr) * sizeof(float));
        if (a == NULL) {
            rc = -1;
        } else {
            float *b = a + la, *c = b + lb;
            for (size_t i = 0; i < la + lb; i++) a[i] = (float)(i % 7) * (1.0f / 1024);
            fc_tile t;
            memset(&t, 0, sizeof(t));
            t.mr = mr;
            t.nr = nr;
            t.nseg = 1;
            t.hi[0] = nr;
            t.alpha = 1.0;
            for (long r = 0; r < reps; r++) ki->ukr_s(k, a, b, c, nr, &t);
            fc_aligned_free(a);
        }
    }
    return rc;
}
