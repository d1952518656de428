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
