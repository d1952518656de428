/* GEMM driver: cache blocking, threading and epilogue (float and double). */
#include "fc_gemm.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#ifndef FC_OPENMP
#define FC_OPENMP 0
#endif

static inline int KMR_s(const fc_kernel_info *k) { return k->mr_s; }
static inline int KNR_s(const fc_kernel_info *k) { return k->nr_s; }
static inline fc_ukr_s_t KUKR_s(const fc_kernel_info *k) { return k->ukr_s; }
static inline fc_ukri_s_t KUKRI_s(const fc_kernel_info *k) { return k->ukri_s; }
static inline fc_ukra_s_t KUKRA_s(const fc_kernel_info *k) { return k->ukra_s; }
static inline fc_store_s_t KSTORE_s(const fc_kernel_info *k) { return k->store_s; }
static inline int KMR_d(const fc_kernel_info *k) { return k->mr_d; }
static inline int KNR_d(const fc_kernel_info *k) { return k->nr_d; }
static inline fc_ukr_d_t KUKR_d(const fc_kernel_info *k) { return k->ukr_d; }
static inline fc_ukri_d_t KUKRI_d(const fc_kernel_info *k) { return k->ukri_d; }
static inline fc_ukra_d_t KUKRA_d(const fc_kernel_info *k) { return k->ukra_d; }
static inline fc_store_d_t KSTORE_d(const fc_kernel_info *k) { return k->store_d; }

#define T float
#define FN(name) name##_s
#define KC 384
#define MC 144
#define NC 3072
#include "fc_gemm_impl.h"
#undef T
#undef FN
#undef KC
#undef MC
#undef NC

#define T double
#define FN(name) name##_d
#define KC 192
#define MC 96
#define NC 2048
#include "fc_gemm_impl.h"
#undef T
#undef FN
#undef KC
#undef MC
#undef NC
