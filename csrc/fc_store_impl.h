/* Finishing a tile of C, instantiated in each micro-kernel file so that it is
 * compiled for that file's instruction set (T = element type, FN(name) =
 * name with the ISA and type suffix).
 *
 * FN(store): C (mr x nr, row stride ldc) = tile + beta * C when tile is not
 * NULL (an edge tile the micro-kernel wrote to scratch), then the epilogue
 * when e is not NULL: the bias of row row0 + i (or of column col0 + j), then
 * ReLU / LeakyReLU. One pass per row: every mode combination is its own
 * vectorised loop, and each element is loaded and stored once (no partial
 * stores followed by wider loads). */

/* merge: 0 C as is, 1 tile, 2 C + tile, 3 beta C + tile */
static inline __attribute__((always_inline)) void
FN(store_row)(T *restrict ci, const T *restrict ti, int nr, const int merge, T beta,
              const int bmode, T bs, const T *restrict bv, const int act, T slope)
{
    for (int j = 0; j < nr; j++) {
        T v = merge == 0 ? ci[j] : merge == 1 ? ti[j] : merge == 2 ? ci[j] + ti[j]
            : beta * ci[j] + ti[j];
        if (bmode == FC_BIAS_ROW) v += bs;
        else if (bmode == FC_BIAS_COL) v += bv[j];
        if (act == FC_ACT_RELU) v = v < 0 ? (T)0 : v;
        else if (act == FC_ACT_LEAKY) v = v < 0 ? v * slope : v;
        ci[j] = v;
    }
}

#define FC_STORE_ACT(M, B)                                                                   \
    switch (act) {                                                                           \
    case FC_ACT_RELU: FN(store_row)(ci, ti, nr, M, beta, B, bs, bv, FC_ACT_RELU, slope); break; \
    case FC_ACT_LEAKY: FN(store_row)(ci, ti, nr, M, beta, B, bs, bv, FC_ACT_LEAKY, slope); break; \
    default: FN(store_row)(ci, ti, nr, M, beta, B, bs, bv, FC_ACT_NONE, slope); break;     \
    }
#define FC_STORE_BIAS(M)                                                                     \
    switch (bmode) {                                                                         \
    case FC_BIAS_ROW: FC_STORE_ACT(M, FC_BIAS_ROW) break;                                    \
    case FC_BIAS_COL: FC_STORE_ACT(M, FC_BIAS_COL) break;                                    \
    default: FC_STORE_ACT(M, FC_BIAS_NONE) break;                                            \
    }

void FN(store)(T *c, long ldc, const T *tile, int ldt, int mr, int nr, T beta,
               const fc_epilogue *e, int row0, int col0)
{
    const T *bias = e ? (const T *)e->bias : NULL;
    const int bmode = e ? e->bias_mode : FC_BIAS_NONE;
    const int act = e ? e->act : FC_ACT_NONE;
    const T slope = e ? (T)e->slope : (T)0;
    const int merge = tile == NULL ? 0 : beta == 0 ? 1 : beta == 1 ? 2 : 3;
    if (merge == 0 && bmode == FC_BIAS_NONE && act == FC_ACT_NONE) return;
    for (int i = 0; i < mr; i++) {
        T *ci = c + (long)i * ldc;
        const T *ti = tile ? tile + (long)i * ldt : NULL;
        const T bs = bmode == FC_BIAS_ROW ? bias[row0 + i] : (T)0;
        const T *bv = bmode == FC_BIAS_COL ? bias + col0 : NULL;
        switch (merge) {
        case 1: FC_STORE_BIAS(1) break;
        case 2: FC_STORE_BIAS(2) break;
        case 3: FC_STORE_BIAS(3) break;
        default: FC_STORE_BIAS(0) break;
        }
    }
}

#undef FC_STORE_ACT
#undef FC_STORE_BIAS
