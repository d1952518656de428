/* fastcnn GEMM engine: public interface.
 *
 * BLIS-style layering: fc_pack.c packs operands into MR/NR panels,
 * fc_ukr_<isa>.c hold the register-blocked micro-kernels, fc_gemm.c runs the
 * cache-blocking loops and the epilogue, fc_cpu.c picks the micro-kernel.
 */
#ifndef FC_GEMM_H
#define FC_GEMM_H

#include <stdint.h>
#include <stddef.h>

#ifndef FC_X86
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#define FC_X86 1
#else
#define FC_X86 0
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum { FC_ISA_AUTO = -1, FC_ISA_GENERIC = 0, FC_ISA_AVX2 = 1, FC_ISA_AVX512 = 2 };
enum { FC_ACT_NONE = 0, FC_ACT_RELU = 1, FC_ACT_LEAKY = 2 };
/* Or-ed into the activation of the Winograd and direct convolution kernels:
 * their output is the 2 x 2 / stride 2 max pooling (floor mode) of the
 * activated convolution, which is never stored. */
enum { FC_POOL_2X2 = 4 };
enum { FC_BIAS_NONE = 0, FC_BIAS_ROW = 1, FC_BIAS_COL = 2 };
/* Eight dot products of a (k elements) with the rows b[0..7] into out[0..7]
 * (small-batch Linear), for an instruction set's vector type VT of L lanes:
 * each load of a serves eight FMA chains, one a row; SUM8(s, out) then
 * reduces the eight accumulators in registers, in one fixed order whatever
 * the row, and the last k % L products are added in order. */
#define FC_DOT8(T, VT, L, LOAD, FMA, ZERO, SUM8)                                                \
    VT s[8];                                                                                   \
    const T *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3];                                    \
    const T *b4 = b[4], *b5 = b[5], *b6 = b[6], *b7 = b[7];                                    \
    for (int j = 0; j < 8; j++) s[j] = ZERO();                                                 \
    int i = 0;                                                                                 \
    for (; i + L <= k; i += L) {                                                               \
        const VT x = LOAD(a + i);                                                              \
        s[0] = FMA(x, LOAD(b0 + i), s[0]);                                                     \
        s[1] = FMA(x, LOAD(b1 + i), s[1]);                                                     \
        s[2] = FMA(x, LOAD(b2 + i), s[2]);                                                     \
        s[3] = FMA(x, LOAD(b3 + i), s[3]);                                                     \
        s[4] = FMA(x, LOAD(b4 + i), s[4]);                                                     \
        s[5] = FMA(x, LOAD(b5 + i), s[5]);                                                     \
        s[6] = FMA(x, LOAD(b6 + i), s[6]);                                                     \
        s[7] = FMA(x, LOAD(b7 + i), s[7]);                                                     \
    }                                                                                          \
    SUM8(s, out);                                                                              \
    for (; i < k; i++)                                                                         \
        for (int j = 0; j < 8; j++) out[j] += a[i] * b[j][i];

/* SUM8 of FC_DOT8 for eight 256-bit accumulators v[0..7] (AVX files): out[j]
 * = the sum of v[j]'s lanes, by pairwise horizontal adds, then one add of
 * the 128-bit halves. */
#define FC_SUM8_PS(v, out)                                                                     \
    do {                                                                                       \
        const __m256 q0_ = _mm256_hadd_ps(_mm256_hadd_ps((v)[0], (v)[1]), _mm256_hadd_ps((v)[2], (v)[3])); \
        const __m256 q1_ = _mm256_hadd_ps(_mm256_hadd_ps((v)[4], (v)[5]), _mm256_hadd_ps((v)[6], (v)[7])); \
        _mm256_storeu_ps((out), _mm256_add_ps(_mm256_permute2f128_ps(q0_, q1_, 0x20),           \
                                              _mm256_permute2f128_ps(q0_, q1_, 0x31)));         \
    } while (0)
#define FC_SUM8_PD(v, out)                                                                     \
    do {                                                                                       \
        for (int h_ = 0; h_ < 8; h_ += 4) {                                                    \
            const __m256d p0_ = _mm256_hadd_pd((v)[h_], (v)[h_ + 1]);                          \
            const __m256d p1_ = _mm256_hadd_pd((v)[h_ + 2], (v)[h_ + 3]);                      \
            _mm256_storeu_pd((out) + h_, _mm256_add_pd(_mm256_permute2f128_pd(p0_, p1_, 0x20), \
                                                       _mm256_permute2f128_pd(p0_, p1_, 0x31))); \
        }                                                                                      \
    } while (0)

/* Statement S (a micro-kernel's finishing of a tile, written with the
 * variables alpha, beta, bmode and act in scope) compiled once per common
 * epilogue (alpha 1, beta 0 or 1, every bias mode and activation), so that
 * none of its per-vector tests is left at run time, and once as it is. */
#define FC_SPEC_CASE(T, BE, BM, AC, ...)                                                       \
    case (BE) * 9 + (BM) * 3 + (AC): {                                                         \
        const T alpha = (T)1, beta = (T)(BE);                                                  \
        const int bmode = (BM), act = (AC);                                                    \
        (void)alpha; (void)beta; (void)bmode; (void)act;                                       \
        __VA_ARGS__                                                                            \
    } break;
#define FC_SPEC_ACTS(T, BE, BM, ...)                                                           \
    FC_SPEC_CASE(T, BE, BM, FC_ACT_NONE, __VA_ARGS__)                                          \
    FC_SPEC_CASE(T, BE, BM, FC_ACT_RELU, __VA_ARGS__)                                          \
    FC_SPEC_CASE(T, BE, BM, FC_ACT_LEAKY, __VA_ARGS__)
#define FC_SPEC_BIASES(T, BE, ...)                                                             \
    FC_SPEC_ACTS(T, BE, FC_BIAS_NONE, __VA_ARGS__)                                             \
    FC_SPEC_ACTS(T, BE, FC_BIAS_ROW, __VA_ARGS__)                                              \
    FC_SPEC_ACTS(T, BE, FC_BIAS_COL, __VA_ARGS__)
#define FC_SPECIALISE(T, ...)                                                                  \
    if (alpha == 1 && (beta == 0 || beta == 1)) {                                              \
        switch ((beta == 1) * 9 + bmode * 3 + act) {                                           \
            FC_SPEC_BIASES(T, 0, __VA_ARGS__)                                                  \
            FC_SPEC_BIASES(T, 1, __VA_ARGS__)                                                  \
        default: { __VA_ARGS__ } break;                                                        \
        }                                                                                      \
    } else {                                                                                   \
        __VA_ARGS__                                                                            \
    }

enum { FC_VIEW_DENSE = 0, FC_VIEW_PATCH = 1, FC_VIEW_PACKED = 2, FC_VIEW_SHIFT = 3, FC_VIEW_GATHER = 4,
       FC_VIEW_IMAGES = 5 };

/* Geometry of a 2-D convolution of one image group (C channels of H x W)
 * producing P x Q output pixels with an R x S kernel. */
typedef struct {
    int C, H, W, R, S, P, Q, sh, sw, ph, pw, dh, dw;
} fc_conv_geom;

/* A matrix operand as the packing routines see it.
 *  DENSE: element (i, j) is p[i * rs + j * cs].
 *  PATCH: the implicit im2col matrix of one image (pointer p to its C x H x W
 *         block): rows (c, r, s), columns (oh, ow); with trans = 1 the
 *         transpose (rows are pixels, columns are (c, r, s)). Out-of-image
 *         taps read as zero.
 *  PACKED: an operand already packed for this m (or n) and k: A by
 *          fc_gemm_pack_a_*(), B by fc_gemm_pack_b_*() (for a product whose
 *          rows select the instruction set's own kernels, not narrow ones).
 *  SHIFT:  a B operand whose row i is contiguous at p + offs[i] (a stride-1
 *          convolution over a zero-padded image: every row of the patch
 *          matrix is a shifted view of the image). Read in place, never
 *          packed; the memory must extend NR elements past the last column
 *          of every row.
 *  IMAGES: a batch of images as channels x (pixels of every image): element
 *          (i, j) at p[(j / rs) * cs + i * rs + j % rs] (rs pixels an image,
 *          cs the image stride); as B, with trans = 1: its transpose (the
 *          weight gradient's output gradient), packed with register
 *          transposes.
 *  GATHER: an A operand read in place, element (i, j) at p[offs[i] + doffs[j]]
 *          (the patch matrix of a zero-padded batch of images: one offset per
 *          output pixel and one per tap, or the transpose), or at p[offs[i] + j]
 *          where doffs is NULL. offs must have m rounded up to MR entries. */
typedef struct {
    int kind;
    int trans;
    const void *p;
    long rs, cs;
    fc_conv_geom g;
    const long *offs;
    const long *doffs;
} fc_view;

/* Where the product goes, and what is applied to it once finished: add bias
 * (per row or per column), then ReLU / LeakyReLU.
 *
 * C is row-major (element (i, j) at C[i * ldc + map(j)]) or, with trans = 1,
 * column-major (element (i, j) at C[j * ldc + map(i)]). The map is the
 * identity unless wrap > 0: then indices come in blocks of wrap, of which
 * only the first keep are stored, index x at (x / wrap) * bstride + x % wrap
 * (bstride 0 means keep). A stride-1 convolution computed over a padded image
 * width is written straight into its output this way (bstride = keep = Q), and
 * so is a product whose rows or columns run over the pixels of several images
 * (wrap = keep = pixels per image, bstride = the image stride of the output). */
typedef struct {
    int bias_mode;
    const void *bias;
    int act;
    double slope;
    int wrap, keep;
    long bstride;
    int trans;
} fc_epilogue;

/* Largest micro-tile width of any kernel (lanes of one tile row). */
#define FC_MAX_NR 64

/* How a micro-kernel finishes its tile: rows i < mr (row row0 + i of the
 * product), lanes j < nr (column lane0 + j).
 *  trans = 0: row i at c + i * ldc; its lanes come in nseg runs, lanes
 *             lo[s] <= j < hi[s] stored at c + i * ldc + col[s] + j; lanes
 *             outside every run are dropped.
 *  trans = 1: lane j at c + j * ldc; the rows come in runs, rows
 *             lo[s] <= i < hi[s] stored at c + j * ldc + col[s] + i.
 * Each stored value is alpha * acc + beta * C (C not read when beta is 0),
 * then, when e is not NULL, the bias and the activation of e (bias row
 * row0 + i, or bias column lane0 + j for trans = 1 and col[s] + j otherwise). */
typedef struct {
    int mr, nr, nseg, row0, trans;
    long lane0;
    double alpha, beta;
    const fc_epilogue *e;
    int lo[FC_MAX_NR], hi[FC_MAX_NR];
    long col[FC_MAX_NR];
} fc_tile;

/* Micro-kernels: acc (MR x NR) = A panel . B panel over depth k, finished
 * into C as t says (c: see fc_tile). A comes packed (row i of step p at
 * a[p * MR + i]) or gathered in place (at a[aoff[i] + doff[p]], or a[aoff[i] + p]
 * where doff is NULL); B packed (row p at b + p * NR) or in place (at
 * b + boff[p]). */
typedef void (*fc_ukr_s_t)(long k, const float *a, const float *b, float *c, long ldc,
                           const fc_tile *t);
typedef void (*fc_ukr_d_t)(long k, const double *a, const double *b, double *c, long ldc,
                           const fc_tile *t);
typedef void (*fc_ukri_s_t)(long k, const float *a, const float *b, const long *boff, float *c,
                            long ldc, const fc_tile *t);
typedef void (*fc_ukri_d_t)(long k, const double *a, const double *b, const long *boff, double *c,
                            long ldc, const fc_tile *t);
typedef void (*fc_ukrg_s_t)(long k, const float *a, const long *aoff, const long *doff,
                            const float *b, float *c, long ldc, const fc_tile *t);
typedef void (*fc_ukrg_d_t)(long k, const double *a, const long *aoff, const long *doff,
                            const double *b, double *c, long ldc, const fc_tile *t);

/* A strided convolution's image of C channels seen as its phases
 * (space-to-depth): pixel (i, j) of channel (a, b, c) ((a sw + b) C + c) is
 * the image's pixel (i sh + a - ph, j sw + b - pw) of channel c, zero outside
 * its H x W (ph, pw >= 0; sh = sw = 1: the image padded by ph, pw). nhwc:
 * NULL, or a 64-byte aligned buffer of fc_wino_nhwc_size elements for the
 * Winograd kernels' channels-last copy of the phases: written by the forward,
 * read by the weight gradient where nhwc_ready (a copy of the same image, made
 * with the same f, C, P and Q). The weight gradient's dyin: the output
 * gradient (H x W) as the forward of the input gradient (F(m x m, r x r),
 * padding ph, pw, stride 1) copied it, read where nhwc_ready. */
typedef struct {
    int sh, sw, H, W, ph, pw;
    void *nhwc;
    int nhwc_ready;
} fc_phases;

/* Prefetch the bytes [0, len) of count rows stride bytes apart (p a char
 * pointer), to read them. */
#define FC_PREFETCH_ROWS(p, stride, count, len)                                                 \
    do {                                                                                        \
        const char *pf_ = (p);                                                                  \
        const long st_ = (long)(stride), len_ = (long)(len);                                    \
        for (int c_ = 0; c_ < (count); c_++, pf_ += st_) {                                      \
            for (long b_ = 0; b_ < len_; b_ += 64) __builtin_prefetch(pf_ + b_);                \
            __builtin_prefetch(pf_ + len_ - 1);                                                 \
        }                                                                                       \
    } while (0)

/* The next task of a counter the threads of a region share: each takes
 * another task when done with one, so that a thread slowed by others on its
 * core holds up only the task it is in. */
static inline int fc_next_task(int *next)
{
    int t;
#ifdef _OPENMP
#pragma omp atomic capture
#endif
    t = (*next)++;
    return t;
}

/* Elements of the Winograd kernels' channels-last, zero-padded copy of the
 * input of F(m x m, r x r) (f = 10 m + r) with C channels and a P x Q output:
 * whole tiles of 16 channels, rounded up to 64 bytes of floats. */
static inline long fc_wino_nhwc_elems(int m, int r, int N, int C, int P, int Q)
{
    const long th = (P + m - 1) / m, tw = (Q + m - 1) / m, Cs = (C + 15) / 16 * 16;
    return ((long)N * (m * th + r - 1) * (m * tw + r - 1) * Cs + 15) & ~15L;
}
size_t fc_wino_nhwc_size(int f, int N, int C, int P, int Q);

/* One instruction set's micro-kernels and cache blocking: B packed (ukr),
 * B rows in place (ukri), A gathered in place (ukrg); depth, row and column
 * blocks (kc, mc, nc) per element type. Optionally narrow kernels for
 * products of at most four rows: tiles of 1, 2 or 4 rows (index 0, 1, 2) by
 * nrn lanes (nrn 0: none). */
typedef struct {
    int isa;
    const char *name;
    int mr_s, nr_s, mr_d, nr_d;
    int kc_s, mc_s, nc_s, kc_d, mc_d, nc_d;
    fc_ukr_s_t ukr_s;
    fc_ukr_d_t ukr_d;
    fc_ukri_s_t ukri_s;
    fc_ukri_d_t ukri_d;
    fc_ukrg_s_t ukrg_s;
    fc_ukrg_d_t ukrg_d;
    int nrn_s, nrn_d;
    fc_ukr_s_t ukrn_s[3];
    fc_ukri_s_t ukrin_s[3];
    fc_ukr_d_t ukrn_d[3];
    fc_ukri_d_t ukrin_d[3];
    int (*direct3_s)(const float *x, const float *w, const float *bias, float *y, int N, int C, int K,
                     int H, int W, int ph, int pw, int act, double slope, int nthreads, unsigned char *code);
    int (*direct3_wgrad_s)(const float *x, const float *dy, float *dw, float *db, int N, int K, int H,
                           int W, int ph, int pw, int nthreads, float *ws);
    void (*dot8_s)(const float *a, const float *const *b, int k, float *out);
    void (*dot8_d)(const double *a, const double *const *b, int k, double *out);
    void (*transpose_s)(const float *src, long lds, float *dst, long ldd, int rows, int cols);
    void (*transpose_d)(const double *src, long lds, double *dst, long ldd, int rows, int cols);
    /* Winograd F(4x4, 3x3) ([0]), F(4x4, 2x2) ([1]) and F(7x7, 2x2) ([2]) */
    size_t (*wino_ws_s[3])(int N, int C, int K, int P, int Q, int nthreads, size_t *upack);
    size_t (*wino_ws_d[3])(int N, int C, int K, int P, int Q, int nthreads, size_t *upack);
    int (*wino_s[3])(const float *x, const float *w, const float *bias, float *y, int N, int C, int H,
                     int W, int K, int P, int Q, int ph, int pw, int act, double slope, int nthreads,
                     float *ws, float *upack, int upack_ready, const fc_phases *xin,
                     const fc_phases *yout, unsigned char *code);
    int (*wino_d[3])(const double *x, const double *w, const double *bias, double *y, int N, int C,
                     int H, int W, int K, int P, int Q, int ph, int pw, int act, double slope,
                     int nthreads, double *ws, double *upack, int upack_ready, const fc_phases *xin,
                     const fc_phases *yout, unsigned char *code);
    size_t (*wino_wgrad_ws_s[3])(int N, int C, int K, int P, int Q, int nthreads);
    size_t (*wino_wgrad_ws_d[3])(int N, int C, int K, int P, int Q, int nthreads);
    int (*wino_wgrad_s[3])(const float *x, const float *dy, float *dw, float *db, int N, int C, int H, int W,
                           int K, int P, int Q, int ph, int pw, int nthreads, float *ws,
                           const fc_phases *xin, const fc_phases *dyin);
    int (*wino_wgrad_d[3])(const double *x, const double *dy, double *dw, double *db, int N, int C, int H,
                           int W, int K, int P, int Q, int ph, int pw, int nthreads, double *ws,
                           const fc_phases *xin, const fc_phases *dyin);
    /* whether ukrg, with A's depths consecutive (no doff), finishes a tile of at
     * most four rows from registers, making only those rows */
    int ukrg_rows4;
} fc_kernel_info;

/* fc_cpu.c: feature detection and dispatch */
void fc_init(void);
const fc_kernel_info *fc_kernel(void);
int fc_isa_supported(int isa);
int fc_set_isa(int isa);               /* 0 on success, -1 if the CPU cannot run it */
int fc_get_isa(void);
const char *fc_isa_name(int isa);
int fc_openmp_enabled(void);
const char *fc_compiler(void);
unsigned fc_fpmode_enter(void);        /* flush-to-zero / denormals-are-zero on */
void fc_fpmode_leave(unsigned saved);

/* dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols (in the best
 * instruction set this CPU runs). */
void fc_transpose_s(const float *src, long lds, float *dst, long ldd, int rows, int cols);
void fc_transpose_d(const double *src, long lds, double *dst, long ldd, int rows, int cols);

/* fc_gemm.c: each of nthreads threads runs the float32 micro-kernel reps times
 * on panels of depth k in its own cache (the machine's compute scaling). */
int fc_ukr_probe_s(long reps, int k, int nthreads);

/* Direct 3x3 stride-1 convolution with one output channel or one input
 * channel: y (N, K, P, Q) from x (N, C, H, W) and w (K, C, 3, 3), C == 1 or
 * K == 1, padding (ph, pw) on both sides, plus bias (NULL: none) and
 * activation; with C == 1, FC_POOL_2X2 in act gives y (N, K, P/2, Q/2), and
 * code (NULL: not wanted) the argmax of each window as its place in it (0
 * (0,0), 1 (0,1), 2 (1,0), 3 (1,1)), as the 2x2 max pooling with codes makes
 * it. Returns -1 where the instruction set in use has no such kernel (then
 * nothing is written), else 0. */
int fc_direct3_s(const float *x, const float *w, const float *bias, float *y, int N, int C, int K, int H,
                 int W, int ph, int pw, int act, double slope, int nthreads, unsigned char *code);
int fc_direct3_available(void);
/* Its weight gradient for one input channel: dw (K, 1, 3, 3) and db (K) (NULL:
 * not wanted) from x (N, 1, H, W) and dy (N, K, P, Q); ws: 160 N K floats,
 * 64-byte aligned. Returns -1 where there is no such kernel. */
int fc_direct3_wgrad_s(const float *x, const float *dy, float *dw, float *db, int N, int K, int H, int W,
                       int ph, int pw, int nthreads, float *ws);

/* Winograd F(mxm, rxr) convolution, stride 1, for f = 10 m + r = 43, 42 or
 * 72: y (N, K, P, Q) = x (N, C, H, W) correlated with w (K, C, r, r), zero
 * padding (ph, pw) before the image (negative: cropped; and as much after as
 * P, Q need), plus bias (NULL: none), then the activation (FC_POOL_2X2 for
 * m = 4 only); and its weight gradient dw (K, C, r, r)
 * from x and dy (N, K, P, Q), and with db (not NULL) the bias gradient db (K):
 * each image's sum over pixels, the images added in order. ws: the *_ws() elements, 64-byte aligned.
 * upack: NULL, or a 64-byte aligned buffer of the *upack elements that
 * fc_wino_ws reports, to keep the transformed weights between calls: filled
 * from w unless upack_ready (then w is not read). It is valid for one weight
 * array, its C, K and f, and the instruction set in use when it was filled.
 * xin: NULL, or x is the image (N, C / (sh sw), xin->H, xin->W) whose phases
 * are the H x W input (ph and pw are then 0). yout: NULL, or y is the
 * image (N, K / (sh sw), yout->H, yout->W) whose phases the P x Q output
 * fills, channel k its phase k % (sh sw) of the image's channel k / (sh sw)
 * (pixels no phase reaches are left as they are; no pooling). code: NULL, or
 * with FC_POOL_2X2, each window's argmax (N, K, P/2, Q/2) as the direct
 * kernel's code (see fc_direct3_s).
 * Return 0. */
size_t fc_wino_ws_s(int f, int N, int C, int K, int P, int Q, int nthreads, size_t *upack);
size_t fc_wino_ws_d(int f, int N, int C, int K, int P, int Q, int nthreads, size_t *upack);
int fc_wino_s(int f, const float *x, const float *w, const float *bias, float *y, int N, int C, int H,
              int W, int K, int P, int Q, int ph, int pw, int act, double slope, int nthreads, float *ws,
              float *upack, int upack_ready, const fc_phases *xin, const fc_phases *yout, unsigned char *code);
int fc_wino_d(int f, const double *x, const double *w, const double *bias, double *y, int N, int C,
              int H, int W, int K, int P, int Q, int ph, int pw, int act, double slope, int nthreads,
              double *ws, double *upack, int upack_ready, const fc_phases *xin, const fc_phases *yout,
              unsigned char *code);
size_t fc_wino_wgrad_ws_s(int f, int N, int C, int K, int P, int Q, int nthreads);
size_t fc_wino_wgrad_ws_d(int f, int N, int C, int K, int P, int Q, int nthreads);
int fc_wino_wgrad_s(int f, const float *x, const float *dy, float *dw, float *db, int N, int C, int H, int W,
                    int K, int P, int Q, int ph, int pw, int nthreads, float *ws, const fc_phases *xin,
                    const fc_phases *dyin);
int fc_wino_wgrad_d(int f, const double *x, const double *dy, double *dw, double *db, int N, int C, int H,
                    int W, int K, int P, int Q, int ph, int pw, int nthreads, double *ws, const fc_phases *xin,
                    const fc_phases *dyin);

/* fc_pack.c: rows r0 .. r1 (of all images' Hp rows) of a channels-last
 * zero-padded copy of x (N, C, H, W): out[n][h][w][c] (Hp x Wp pixels of Cs
 * >= C channels, those past C zero) = x[n][c][h - top][w - left], zero
 * elsewhere (a negative padding crops). */
void fc_nhwc_rows_s(const float *x, long r0, long r1, int C, int H, int W, int Cs, int Hp, int Wp,
                    int top, int left, float *out);
void fc_nhwc_rows_d(const double *x, long r0, long r1, int C, int H, int W, int Cs, int Hp, int Wp,
                    int top, int left, double *out);
/* The same copy of the phases of x (N, C, ps->H, ps->W): out[n][i][j][c']
 * (Hp x Wp pixels of Cs >= C sh sw channels) = pixel (i, j) of phase channel
 * c' for i < Hs, j < Ws, zero elsewhere. */
void fc_nhwc_phase_rows_s(const float *x, long r0, long r1, int C, const fc_phases *ps, int Hs, int Ws,
                          int Cs, int Hp, int Wp, float *out);
void fc_nhwc_phase_rows_d(const double *x, long r0, long r1, int C, const fc_phases *ps, int Hs, int Ws,
                          int Cs, int Hp, int Wp, double *out);

/* fc_pack.c: pack rows [i0, i0+ni) x cols [p0, p0+kc) of op into panels of
 * width w: dst[(panel * kc + p) * w + i], zero-padding the last panel.
 * "rows" here is the panel dimension: for A that is A's rows; for B pass
 * fc_view_t(B) so the panel dimension is B's columns. */
void fc_pack_s(const fc_view *v, int i0, int ni, int p0, int kc, int w, float *dst);
void fc_pack_d(const fc_view *v, int i0, int ni, int p0, int kc, int w, double *dst);
fc_view fc_view_t(const fc_view *v);   /* transposed view */

/* fc_gemm.c: C (m x n, row stride ldc) = alpha * A (m x k) * B (k x n) + beta * C,
 * then the epilogue. nthreads == 1 runs serially in the calling thread (safe
 * inside an outer parallel region). ws: workspace of fc_gemm_ws_*() elements
 * (64-byte aligned) or NULL to allocate one.
 * Results do not depend on nthreads. Returns 0, or -1 if memory ran out. */
size_t fc_gemm_ws_s(int m, int n, int k, int nthreads);
size_t fc_gemm_ws_d(int m, int n, int k, int nthreads);
int fc_gemm_s(int m, int n, int k, float alpha, const fc_view *A, const fc_view *B,
              float beta, float *C, long ldc, const fc_epilogue *epi, int nthreads, float *ws);
int fc_gemm_d(int m, int n, int k, double alpha, const fc_view *A, const fc_view *B,
              double beta, double *C, long ldc, const fc_epilogue *epi, int nthreads, double *ws);

/* C (m x n, row stride ldc) = A . B + beta C in the calling thread, without a
 * product's setup (for many small products): A gathered in place at
 * a[aoff[i] + p], B packed by fc_gemm_pack_b_*() in one depth block
 * (fc_gemm_kcb_*(k) >= k); aoff and C with rows up to m rounded up to a multiple
 * of fc_gemm_mr_*() (rows past m may be made and written); the caller's
 * floating-point mode (see fc_fpmode_enter). Results are those of fc_gemm_*()
 * for the same product. */
void fc_gemm_gathered_s(int m, int n, int k, float beta, const float *a, const long *aoff, const float *b,
                        float *C, long ldc);
void fc_gemm_gathered_d(int m, int n, int k, double beta, const double *a, const long *aoff, const double *b,
                        double *C, long ldc);

/* fc_gemv.c: y (n x m, row stride ldy) = x (n x k) . w^T, w m x k row-major,
 * then a per-column bias and the activation of epi; for small n. */
int fc_gemv_s(int n, int m, int k, const float *x, long ldx, const float *w, long ldw,
              float *y, long ldy, const fc_epilogue *epi, int nthreads);
int fc_gemv_d(int n, int m, int k, const double *x, long ldx, const double *w, long ldw,
              double *y, long ldy, const fc_epilogue *epi, int nthreads);

/* Pack all of B (k x n) once, for several products with the same B. */
size_t fc_gemm_packed_b_size_s(int n, int k);
size_t fc_gemm_packed_b_size_d(int n, int k);
void fc_gemm_pack_b_s(int n, int k, const fc_view *B, float *dst);
void fc_gemm_pack_b_d(int n, int k, const fc_view *B, double *dst);
/* Its layout: panels of fc_gemm_nr_*() columns, depth blocks of
 * fc_gemm_kcb_*(k) rows (block pc at dst + pc * n rounded up to panels, its
 * panel j at + j * nr * rows of the block). */
int fc_gemm_nr_s(void);
int fc_gemm_nr_d(void);
int fc_gemm_kcb_s(int k);                /* the depth block of a packing of depth k */
int fc_gemm_kcb_d(int k);
/* The rows of the micro-kernels' tiles where A is gathered (a product with A
 * gathered whose rows are a multiple of it finishes every tile from registers). */
int fc_gemm_mr_s(void);
int fc_gemm_mr_d(void);

/* Pack all of A (m x k) once, for several products with the same A. */
size_t fc_gemm_packed_a_size_s(int m, int k);
size_t fc_gemm_packed_a_size_d(int m, int k);
void fc_gemm_pack_a_s(int m, int k, const fc_view *A, float *dst);
void fc_gemm_pack_a_d(int m, int k, const fc_view *A, double *dst);

void *fc_aligned_alloc(size_t bytes);
void fc_aligned_free(void *p);

/* micro-kernels (one file each) */
#define FC_UKR_DECL(isa)                                                                        \
    void fc_ukr_##isa##_s(long k, const float *a, const float *b, float *c, long ldc,             \
                          const fc_tile *t);                                                    \
    void fc_ukr_##isa##_d(long k, const double *a, const double *b, double *c, long ldc,          \
                          const fc_tile *t);                                                    \
    void fc_ukri_##isa##_s(long k, const float *a, const float *b, const long *boff, float *c,    \
                           long ldc, const fc_tile *t);                                         \
    void fc_ukri_##isa##_d(long k, const double *a, const double *b, const long *boff, double *c, \
                           long ldc, const fc_tile *t);                                         \
    void fc_ukrg_##isa##_s(long k, const float *a, const long *aoff, const long *doff,            \
                           const float *b, float *c, long ldc, const fc_tile *t);               \
    void fc_ukrg_##isa##_d(long k, const double *a, const long *aoff, const long *doff,           \
                           const double *b, double *c, long ldc, const fc_tile *t);
FC_UKR_DECL(generic)
FC_UKR_DECL(avx2)
FC_UKR_DECL(avx512)

/* narrow AVX-512 kernels: 1, 2 or 4 rows by four vectors */
#define FC_UKRN_DECL(r)                                                                         \
    void fc_ukrn##r##_avx512_s(long k, const float *a, const float *b, float *c, long ldc,        \
                               const fc_tile *t);                                               \
    void fc_ukrn##r##_avx512_d(long k, const double *a, const double *b, double *c, long ldc,     \
                               const fc_tile *t);                                               \
    void fc_ukrin##r##_avx512_s(long k, const float *a, const float *b, const long *boff,       \
                                float *c, long ldc, const fc_tile *t);                          \
    void fc_ukrin##r##_avx512_d(long k, const double *a, const double *b, const long *boff,     \
                                double *c, long ldc, const fc_tile *t);
FC_UKRN_DECL(1)
FC_UKRN_DECL(2)
FC_UKRN_DECL(4)

/* fc_store_impl.h: finish a tile held in memory (row stride ldt) into C. */
void fc_tile_store_generic_s(float *c, long ldc, const float *acc, int ldt, const fc_tile *t);
void fc_tile_store_generic_d(double *c, long ldc, const double *acc, int ldt, const fc_tile *t);
void fc_tile_store_avx2_s(float *c, long ldc, const float *acc, int ldt, const fc_tile *t);
void fc_tile_store_avx2_d(double *c, long ldc, const double *acc, int ldt, const fc_tile *t);

#define FC_TRANSPOSE_DECL(isa)                                                                  \
    void fc_transpose_##isa##_s(const float *src, long lds, float *dst, long ldd, int rows, int cols); \
    void fc_transpose_##isa##_d(const double *src, long lds, double *dst, long ldd, int rows, int cols);
FC_TRANSPOSE_DECL(generic)
FC_TRANSPOSE_DECL(avx2)
FC_TRANSPOSE_DECL(avx512)
/* The body of a transpose (rows x cols at src, row stride lds, into dst, row
 * stride ldd) over B x B blocks, whole and edge blocks alike: BLOCK(s, lds, d,
 * ldd, nr, nc) transposes nr x nc elements (at most B x B). */
#define FC_TRANSPOSE_BLOCKS(B, BLOCK)                                                          \
    for (int i = 0; i < rows; i += B)                                                          \
        for (int j = 0; j < cols; j += B)                                                      \
            BLOCK(src + (long)i * lds + j, lds, dst + (long)j * ldd + i, ldd,                  \
                  rows - i < B ? rows - i : B, cols - j < B ? cols - j : B);

#define FC_WINO_DECL1(isa, T, t, r)                                                             \
    size_t fc_wino_ws##r##_##isa##_##t(int N, int C, int K, int P, int Q, int nthreads,         \
                                       size_t *upack);                                          \
    int fc_wino##r##_##isa##_##t(const T *x, const T *w, const T *bias, T *y, int N, int C, int H, \
                                 int W, int K, int P, int Q, int ph, int pw, int act, double slope, \
                                 int nthreads, T *ws, T *upack, int upack_ready,                \
                                 const fc_phases *xin, const fc_phases *yout, unsigned char *code); \
    size_t fc_wino_wgrad_ws##r##_##isa##_##t(int N, int C, int K, int P, int Q, int nthreads);   \
    int fc_wino_wgrad##r##_##isa##_##t(const T *x, const T *dy, T *dw, T *db, int N, int C, int H, int W, \
                                       int K, int P, int Q, int ph, int pw, int nthreads, T *ws,   \
                                       const fc_phases *xin, const fc_phases *dyin);
#define FC_WINO_DECL(isa)                                                                       \
    FC_WINO_DECL1(isa, float, s, 43) FC_WINO_DECL1(isa, float, s, 42)                           \
    FC_WINO_DECL1(isa, float, s, 72) FC_WINO_DECL1(isa, double, d, 43)                          \
    FC_WINO_DECL1(isa, double, d, 42) FC_WINO_DECL1(isa, double, d, 72)
FC_WINO_DECL(generic)
FC_WINO_DECL(avx2)
FC_WINO_DECL(avx512)

void fc_dot8_generic_s(const float *a, const float *const *b, int k, float *out);
void fc_dot8_generic_d(const double *a, const double *const *b, int k, double *out);
void fc_dot8_avx2_s(const float *a, const float *const *b, int k, float *out);
void fc_dot8_avx2_d(const double *a, const double *const *b, int k, double *out);
#define FC_DIRECT3_DECL(isa)                                                                   \
    int fc_direct3_##isa##_s(const float *x, const float *w, const float *bias, float *y, int N, int C, \
                             int K, int H, int W, int ph, int pw, int act, double slope, int nthreads, \
                             unsigned char *code);                                            \
    int fc_direct3_wgrad_##isa##_s(const float *x, const float *dy, float *dw, float *db, int N, int K, \
                                   int H, int W, int ph, int pw, int nthreads, float *ws);
FC_DIRECT3_DECL(avx2)
FC_DIRECT3_DECL(avx512)
void fc_dot8_avx512_s(const float *a, const float *const *b, int k, float *out);
void fc_dot8_avx512_d(const double *a, const double *const *b, int k, double *out);

#define FC_GENERIC_MR_S 4
#define FC_GENERIC_NR_S 8
#define FC_GENERIC_MR_D 4
#define FC_GENERIC_NR_D 4
#define FC_AVX2_MR_S 6
#define FC_AVX2_NR_S 16
#define FC_AVX2_MR_D 6
#define FC_AVX2_NR_D 8
#define FC_AVX512_MR_S 8
#define FC_AVX512_NR_S 32
#define FC_AVX512_MR_D 8
#define FC_AVX512_NR_D 16

#ifdef __cplusplus
}
#endif
#endif
