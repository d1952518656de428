/* Operand packing into micro-kernel panels (float and double). */
#include <string.h>
#include "fc_gemm.h"

fc_view fc_view_t(const fc_view *v)
{
    fc_view t = *v;
    if (v->kind == FC_VIEW_DENSE) {
        t.rs = v->cs;
        t.cs = v->rs;
    } else {
        t.trans = !v->trans;
    }
    return t;
}

/* Rows r0 .. r1 (of all images' Hp rows) of a channels-last zero-padded copy:
 * out[n][h][w][c] (Hp x Wp pixels of Cs channels, those past C zero) =
 * x[n][c][h - top][w - left], zero elsewhere (a negative padding crops); only
 * what the transposes do not write is zeroed. */
#define NHWC_ROWS(T, TRANSPOSE)                                                                 \
    const long row = (long)Wp * Cs;                                                           \
    const int d0 = left > 0 ? left : 0, s0 = left < 0 ? -left : 0;                            \
    const int wn = W - s0 < Wp - d0 ? W - s0 : Wp - d0;                                       \
    /* whole rows of the image are whole rows of the copy: consecutive rows of     \
     * an image are one transpose */                                               \
    const int whole = d0 == 0 && s0 == 0 && W == Wp && C == Cs;                                \
    for (long r = r0; r < r1; r++) {                                                          \
        const int n = (int)(r / Hp), h = (int)(r % Hp) - top;                                 \
        T *o = out + r * row;                                                                 \
        if (h < 0 || h >= H || wn <= 0) {                                                     \
            memset(o, 0, (size_t)row * sizeof(T));                                            \
            continue;                                                                         \
        }                                                                                     \
        if (whole) {                                                                          \
            long re = r1 < (long)n * Hp + top + H ? r1 : (long)n * Hp + top + H;              \
            TRANSPOSE(x + ((long)n * C * H + h) * W, (long)H * W, o, Cs, C, (int)(re - r) * W); \
            r = re - 1;                                                                       \
            continue;                                                                         \
        }                                                                                     \
        if (r + 1 < r1) { /* the input row of the next row of the copy */                     \
            const int n2 = (int)((r + 1) / Hp), h2 = (int)((r + 1) % Hp) - top;               \
            if (h2 >= 0 && h2 < H)                                                            \
                FC_PREFETCH_ROWS((const char *)(x + ((long)n2 * C * H + h2) * W + s0),        \
                                 (long)H * W * sizeof(T), C, (long)wn * sizeof(T));           \
        }                                                                                     \
        memset(o, 0, (size_t)d0 * Cs * sizeof(T));                                            \
        memset(o + (long)(d0 + wn) * Cs, 0, (size_t)(Wp - d0 - wn) * Cs * sizeof(T));         \
        if (C < Cs)                                                                           \
            for (int j = d0; j < d0 + wn; j++) memset(o + (long)j * Cs + C, 0, (size_t)(Cs - C) * sizeof(T)); \
        TRANSPOSE(x + ((long)n * C * H + h) * W + s0, (long)H * W, o + (long)d0 * Cs, Cs, C, wn); \
    }

void fc_nhwc_rows_s(const float *x, long r0, long r1, int C, int H, int W, int Cs, int Hp, int Wp,
                    int top, int left, float *out)
{
    NHWC_ROWS(float, fc_transpose_s)
}

void fc_nhwc_rows_d(const double *x, long r0, long r1, int C, int H, int W, int Cs, int Hp, int Wp,
                    int top, int left, double *out)
{
    NHWC_ROWS(double, fc_transpose_d)
}

/* Rows r0 .. r1 (of all images' Hp rows) of a channels-last copy of the
 * phases of x (see fc_phases): out[n][i][j][c'] for i < Hs, j < Ws, zero
 * elsewhere and for channels past C sh sw. Each input row a phase row reads
 * is transposed in blocks (pixels by channels) into a small buffer, from
 * which every pixel's channels are one copy into its phase's channels; only
 * what no copy writes is zeroed. */
#define NHWC_PHASE_ROWS(T, TRANSPOSE)                                                           \
    enum { TMP = 4096, WMAX = 64 };                                                             \
    T tmp[TMP] __attribute__((aligned(64)));                                                    \
    const int sh = ps->sh, sw = ps->sw, H = ps->H, W = ps->W;                                   \
    const long row = (long)Wp * Cs, Cp = (long)C * sh * sw;                                     \
    const int wn = Ws < Wp ? Ws : Wp;                                                           \
    for (long r = r0; r < r1; r++) {                                                          \
        const int n = (int)(r / Hp), i = (int)(r % Hp);                                         \
        T *o = out + r * row;                                                                 \
        if (i >= Hs) {                                                                        \
            memset(o, 0, (size_t)row * sizeof(T));                                            \
            continue;                                                                         \
        }                                                                                     \
        if (Cp < Cs)                                                                          \
            for (int j = 0; j < wn; j++) memset(o + j * Cs + Cp, 0, (size_t)(Cs - Cp) * sizeof(T)); \
        if (wn < Wp) memset(o + (long)wn * Cs, 0, (size_t)(Wp - wn) * Cs * sizeof(T));          \
        for (int a = 0; a < sh; a++) {                                                          \
            const int h = i * sh + a - ph_;                                                     \
            for (int j = 0; j < wn; j++)                                                        \
                for (int b = 0; b < sw; b++) {                                                  \
                    const int wc = j * sw + b - pw_;                                            \
                    if (h < 0 || h >= H || wc < 0 || wc >= W)                                   \
                        memset(o + (long)j * Cs + (long)(a * sw + b) * C, 0, (size_t)C * sizeof(T)); \
                }                                                                               \
            if (h < 0 || h >= H) continue;                                                      \
            if (h + sh < H)   /* the rows of the next phase row, a row ahead */                \
                FC_PREFETCH_ROWS((const char *)(x + ((long)n * C * H + h + sh) * W),            \
                                 (long)H * W * sizeof(T), C, (long)W * sizeof(T));              \
            for (int w0 = 0; w0 < W; w0 += WMAX) {                                              \
                const int nw = W - w0 < WMAX ? W - w0 : WMAX, cmax = TMP / nw;                  \
                for (int c0 = 0; c0 < C; c0 += cmax) {                                          \
                    const int cn = C - c0 < cmax ? C - c0 : cmax;                               \
                    TRANSPOSE(x + (((long)n * C + c0) * H + h) * W + w0, (long)H * W, tmp, cn, cn, nw); \
                    for (int u = 0; u < nw;) {                                                  \
                        const int wp = w0 + u + pw_, j = wp / sw, b = wp % sw;                  \
                        if (j >= wn) break;                                                     \
                        /* with all channels at once, the pixels of phases b .. sw - 1 of      \
                         * one output pixel are one run of the output, as of the buffer */     \
                        const int run = cn == C ? (sw - b < nw - u ? sw - b : nw - u) : 1;      \
                        memcpy(o + (long)j * Cs + (long)(a * sw + b) * C + c0, tmp + (long)u * cn, \
                               (size_t)run * cn * sizeof(T));                                   \
                        u += run;                                                               \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }

void fc_nhwc_phase_rows_s(const float *x, long r0, long r1, int C, const fc_phases *ps, int Hs, int Ws,
                          int Cs, int Hp, int Wp, float *out)
{
    const int ph_ = ps->ph, pw_ = ps->pw;
    NHWC_PHASE_ROWS(float, fc_transpose_s)
}

void fc_nhwc_phase_rows_d(const double *x, long r0, long r1, int C, const fc_phases *ps, int Hs, int Ws,
                          int Cs, int Hp, int Wp, double *out)
{
    const int ph_ = ps->ph, pw_ = ps->pw;
    NHWC_PHASE_ROWS(double, fc_transpose_d)
}

#define T float
#define FN(name) name##_s
#define FC_TRANSPOSE fc_transpose_s
#include "fc_pack_impl.h"
#undef T
#undef FN
#undef FC_TRANSPOSE

#define T double
#define FN(name) name##_d
#define FC_TRANSPOSE fc_transpose_d
#include "fc_pack_impl.h"
#undef T
#undef FN
#undef FC_TRANSPOSE
