/* CPU feature detection, micro-kernel dispatch and floating-point mode. */
#include <stdlib.h>
#include <string.h>
#include "fc_gemm.h"

#if FC_X86
#include <immintrin.h>
#endif

/* Cache blocks (kc, mc, nc) per element type: the B micro-panel (kc x NR)
 * stays in L1 while the A block (mc x kc) stays in L2. */
static const fc_kernel_info KERNELS[] = {
    {FC_ISA_GENERIC, "generic", FC_GENERIC_MR_S, FC_GENERIC_NR_S, FC_GENERIC_MR_D, FC_GENERIC_NR_D,
     256, 64, 1024, 128, 64, 1024,
     fc_ukr_generic_s, fc_ukr_generic_d, fc_ukri_generic_s, fc_ukri_generic_d,
     fc_ukrg_generic_s, fc_ukrg_generic_d, 0, 0, {0}, {0}, {0}, {0},
     NULL, NULL, fc_dot8_generic_s, fc_dot8_generic_d,
     fc_transpose_generic_s, fc_transpose_generic_d,
     {fc_wino_ws43_generic_s, fc_wino_ws42_generic_s, fc_wino_ws72_generic_s},
     {fc_wino_ws43_generic_d, fc_wino_ws42_generic_d, fc_wino_ws72_generic_d},
     {fc_wino43_generic_s, fc_wino42_generic_s, fc_wino72_generic_s},
     {fc_wino43_generic_d, fc_wino42_generic_d, fc_wino72_generic_d},
     {fc_wino_wgrad_ws43_generic_s, fc_wino_wgrad_ws42_generic_s, fc_wino_wgrad_ws72_generic_s},
     {fc_wino_wgrad_ws43_generic_d, fc_wino_wgrad_ws42_generic_d, fc_wino_wgrad_ws72_generic_d},
     {fc_wino_wgrad43_generic_s, fc_wino_wgrad42_generic_s, fc_wino_wgrad72_generic_s},
     {fc_wino_wgrad43_generic_d, fc_wino_wgrad42_generic_d, fc_wino_wgrad72_generic_d}},
#if FC_X86
    {FC_ISA_AVX2, "avx2", FC_AVX2_MR_S, FC_AVX2_NR_S, FC_AVX2_MR_D, FC_AVX2_NR_D,
     384, 144, 3072, 192, 96, 2048,
     fc_ukr_avx2_s, fc_ukr_avx2_d, fc_ukri_avx2_s, fc_ukri_avx2_d,
     fc_ukrg_avx2_s, fc_ukrg_avx2_d, 0, 0, {0}, {0}, {0}, {0},
     fc_direct3_avx2_s, fc_direct3_wgrad_avx2_s, fc_dot8_avx2_s, fc_dot8_avx2_d,
     fc_transpose_avx2_s, fc_transpose_avx2_d,
     {fc_wino_ws43_avx2_s, fc_wino_ws42_avx2_s, fc_wino_ws72_avx2_s},
     {fc_wino_ws43_avx2_d, fc_wino_ws42_avx2_d, fc_wino_ws72_avx2_d},
     {fc_wino43_avx2_s, fc_wino42_avx2_s, fc_wino72_avx2_s},
     {fc_wino43_avx2_d, fc_wino42_avx2_d, fc_wino72_avx2_d},
     {fc_wino_wgrad_ws43_avx2_s, fc_wino_wgrad_ws42_avx2_s, fc_wino_wgrad_ws72_avx2_s},
     {fc_wino_wgrad_ws43_avx2_d, fc_wino_wgrad_ws42_avx2_d, fc_wino_wgrad_ws72_avx2_d},
     {fc_wino_wgrad43_avx2_s, fc_wino_wgrad42_avx2_s, fc_wino_wgrad72_avx2_s},
     {fc_wino_wgrad43_avx2_d, fc_wino_wgrad42_avx2_d, fc_wino_wgrad72_avx2_d},
     1},
    {FC_ISA_AVX512, "avx512", FC_AVX512_MR_S, FC_AVX512_NR_S, FC_AVX512_MR_D, FC_AVX512_NR_D,
     512, 128, 3072, 256, 96, 2048,
     fc_ukr_avx512_s, fc_ukr_avx512_d, fc_ukri_avx512_s, fc_ukri_avx512_d,
     fc_ukrg_avx512_s, fc_ukrg_avx512_d, 64, 32,
     {fc_ukrn1_avx512_s, fc_ukrn2_avx512_s, fc_ukrn4_avx512_s},
     {fc_ukrin1_avx512_s, fc_ukrin2_avx512_s, fc_ukrin4_avx512_s},
     {fc_ukrn1_avx512_d, fc_ukrn2_avx512_d, fc_ukrn4_avx512_d},
     {fc_ukrin1_avx512_d, fc_ukrin2_avx512_d, fc_ukrin4_avx512_d},
     fc_direct3_avx512_s, fc_direct3_wgrad_avx512_s, fc_dot8_avx512_s, fc_dot8_avx512_d,
     fc_transpose_avx512_s, fc_transpose_avx512_d,
     {fc_wino_ws43_avx512_s, fc_wino_ws42_avx512_s, fc_wino_ws72_avx512_s},
     {fc_wino_ws43_avx512_d, fc_wino_ws42_avx512_d, fc_wino_ws72_avx512_d},
     {fc_wino43_avx512_s, fc_wino42_avx512_s, fc_wino72_avx512_s},
     {fc_wino43_avx512_d, fc_wino42_avx512_d, fc_wino72_avx512_d},
     {fc_wino_wgrad_ws43_avx512_s, fc_wino_wgrad_ws42_avx512_s, fc_wino_wgrad_ws72_avx512_s},
     {fc_wino_wgrad_ws43_avx512_d, fc_wino_wgrad_ws42_avx512_d, fc_wino_wgrad_ws72_avx512_d},
     {fc_wino_wgrad43_avx512_s, fc_wino_wgrad42_avx512_s, fc_wino_wgrad72_avx512_s},
     {fc_wino_wgrad43_avx512_d, fc_wino_wgrad42_avx512_d, fc_wino_wgrad72_avx512_d}},
#endif
};
#define N_KERNELS ((int)(sizeof(KERNELS) / sizeof(KERNELS[0])))

static const fc_kernel_info *current = NULL;

int fc_isa_supported(int isa)
{
    if (isa == FC_ISA_GENERIC) return 1;
#if FC_X86 && defined(__GNUC__)
    __builtin_cpu_init();
    if (isa == FC_ISA_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == FC_ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
#endif
    return 0;
}

static int best_isa(void)
{
    int best = FC_ISA_GENERIC;
    for (int i = 0; i < N_KERNELS; i++)
        if (fc_isa_supported(KERNELS[i].isa) && KERNELS[i].isa > best) best = KERNELS[i].isa;
    return best;
}

int fc_set_isa(int isa)
{
    if (isa == FC_ISA_AUTO) isa = best_isa();
    if (!fc_isa_supported(isa)) return -1;
    for (int i = 0; i < N_KERNELS; i++)
        if (KERNELS[i].isa == isa) { current = &KERNELS[i]; return 0; }
    return -1;
}

void fc_init(void)
{
    if (current == NULL) fc_set_isa(FC_ISA_AUTO);
}

const fc_kernel_info *fc_kernel(void)
{
    if (current == NULL) fc_init();
    return current;
}

int fc_get_isa(void) { return fc_kernel()->isa; }

const char *fc_isa_name(int isa)
{
    switch (isa) {
    case FC_ISA_AVX512: return "avx512";
    case FC_ISA_AVX2: return "avx2";
    default: return "generic";
    }
}

int fc_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

const char *fc_compiler(void)
{
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#else
    return "unknown";
#endif
}

unsigned fc_fpmode_enter(void)
{
#if FC_X86
    unsigned saved = _mm_getcsr();
    if ((saved & 0x8040u) != 0x8040u) _mm_setcsr(saved | 0x8040u);   /* FTZ | DAZ (a write costs) */
    return saved;
#else
    return 0;
#endif
}

void fc_fpmode_leave(unsigned saved)
{
#if FC_X86
    if ((saved & 0x8040u) != 0x8040u) _mm_setcsr(saved);
#else
    (void)saved;
#endif
}

void *fc_aligned_alloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    return p;
}

void fc_aligned_free(void *p) { free(p); }

void fc_transpose_s(const float *src, long lds, float *dst, long ldd, int rows, int cols)
{
    fc_kernel()->transpose_s(src, lds, dst, ldd, rows, cols);
}

void fc_transpose_d(const double *src, long lds, double *dst, long ldd, int rows, int cols)
{
    fc_kernel()->transpose_d(src, lds, dst, ldd, rows, cols);
}

int fc_direct3_available(void)
{
    return fc_kernel()->direct3_s != NULL;
}

int fc_direct3_s(const float *x, const float *w, const float *bias, float *y, int N, int C, int K, int H,
                 int W, int ph, int pw, int act, double slope, int nthreads, unsigned char *code)
{
    const fc_kernel_info *k = fc_kernel();
    if (!k->direct3_s) return -1;
    return k->direct3_s(x, w, bias, y, N, C, K, H, W, ph, pw, act, slope, nthreads, code);
}

int fc_direct3_wgrad_s(const float *x, const float *dy, float *dw, float *db, int N, int K, int H, int W,
                       int ph, int pw, int nthreads, float *ws)
{
    const fc_kernel_info *k = fc_kernel();
    if (!k->direct3_wgrad_s) return -1;
    return k->direct3_wgrad_s(x, dy, dw, db, N, K, H, W, ph, pw, nthreads, ws);
}

/* the table index of the transform F(m x m, r x r) named 10 m + r */
#define FC_WI(f) ((f) == 43 ? 0 : (f) == 42 ? 1 : 2)

size_t fc_wino_ws_s(int f, int N, int C, int K, int P, int Q, int nthreads, size_t *upack)
{
    return fc_kernel()->wino_ws_s[FC_WI(f)](N, C, K, P, Q, nthreads, upack);
}

size_t fc_wino_ws_d(int f, int N, int C, int K, int P, int Q, int nthreads, size_t *upack)
{
    return fc_kernel()->wino_ws_d[FC_WI(f)](N, C, K, P, Q, nthreads, upack);
}

int fc_wino_s(int f, const float *x, const float *w, const float *bias, float *y, int N, int C, int H,
              int W, int K, int P, int Q, int ph, int pw, int act, double slope, int nthreads, float *ws,
              float *upack, int upack_ready, const fc_phases *xin, const fc_phases *yout, unsigned char *code)
{
    return fc_kernel()->wino_s[FC_WI(f)](x, w, bias, y, N, C, H, W, K, P, Q, ph, pw, act, slope,
                                          nthreads, ws, upack, upack_ready, xin, yout, code);
}

int fc_wino_d(int f, const double *x, const double *w, const double *bias, double *y, int N, int C,
              int H, int W, int K, int P, int Q, int ph, int pw, int act, double slope, int nthreads,
              double *ws, double *upack, int upack_ready, const fc_phases *xin, const fc_phases *yout,
              unsigned char *code)
{
    return fc_kernel()->wino_d[FC_WI(f)](x, w, bias, y, N, C, H, W, K, P, Q, ph, pw, act, slope,
                                          nthreads, ws, upack, upack_ready, xin, yout, code);
}

size_t fc_wino_nhwc_size(int f, int N, int C, int P, int Q)
{
    return (size_t)fc_wino_nhwc_elems(f / 10, f % 10, N, C, P, Q);
}

size_t fc_wino_wgrad_ws_s(int f, int N, int C, int K, int P, int Q, int nthreads)
{
    return fc_kernel()->wino_wgrad_ws_s[FC_WI(f)](N, C, K, P, Q, nthreads);
}

size_t fc_wino_wgrad_ws_d(int f, int N, int C, int K, int P, int Q, int nthreads)
{
    return fc_kernel()->wino_wgrad_ws_d[FC_WI(f)](N, C, K, P, Q, nthreads);
}

int fc_wino_wgrad_s(int f, const float *x, const float *dy, float *dw, float *db, int N, int C, int H, int W,
                    int K, int P, int Q, int ph, int pw, int nthreads, float *ws, const fc_phases *xin,
                    const fc_phases *dyin)
{
    return fc_kernel()->wino_wgrad_s[FC_WI(f)](x, dy, dw, db, N, C, H, W, K, P, Q, ph, pw, nthreads, ws, xin,
                                               dyin);
}

int fc_wino_wgrad_d(int f, const double *x, const double *dy, double *dw, double *db, int N, int C, int H,
                    int W, int K, int P, int Q, int ph, int pw, int nthreads, double *ws, const fc_phases *xin,
                    const fc_phases *dyin)
{
    return fc_kernel()->wino_wgrad_d[FC_WI(f)](x, dy, dw, db, N, C, H, W, K, P, Q, ph, pw, nthreads, ws, xin,
                                               dyin);
}
