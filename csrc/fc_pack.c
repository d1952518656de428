/* Operand packing into micro-kernel panels (float and double). */
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
 * x[n][c][h - top][w - left], zero elsewhere (a negative padding crops). */
#define NHWC_ROWS(T, TRANSPOSE)                                                                 \
    const long row = (long)Wp * Cs;                                                           \
    const int d0 = left > 0 ? left : 0, s0 = left < 0 ? -left : 0;                            \
    const int wn = W - s0 < Wp - d0 ? W - s0 : Wp - d0;                                       \
    for (long r = r0; r < r1; r++) {                                                          \
        const int n = (int)(r / Hp), h = (int)(r % Hp) - top;                                 \
        T *o = out + r * row;                                                                 \
        for (long i = 0; i < row; i++) o[i] = 0;                                              \
        if (h < 0 || h >= H || wn <= 0) continue;                                             \
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
