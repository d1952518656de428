/* Finishing a tile held in memory (acc, row stride ldt) into C under the
 * runs, scaling and epilogue of t (see fc_tile in fc_gemm.h). Instantiated in
 * each micro-kernel file so that it is compiled for that file's instruction
 * set (T = element type, FN(name) = name with the ISA and type suffix); the
 * micro-kernels use it for partial tiles and column runs, and write whole
 * plain tiles from registers themselves.
 *
 * Every mode combination is its own loop over a run (the switches are outside
 * the loops), so the compiler vectorises each. */

static inline __attribute__((always_inline)) void
FN(store_run)(T *restrict dst, const T *restrict src, int n, T alpha, const int merge, T beta,
              const int bmode, T bs, const T *restrict bv, const int act, T slope)
{
    for (int j = 0; j < n; j++) {
        T v = src[j] * alpha;
        if (merge == 1) v = dst[j] + v;
        else if (merge == 2) v = beta * dst[j] + v;
        if (bmode == FC_BIAS_ROW) v += bs;
        else if (bmode == FC_BIAS_COL) v += bv[j];
        if (act == FC_ACT_RELU) v = v < 0 ? (T)0 : v;
        else if (act == FC_ACT_LEAKY) v = v < 0 ? v * slope : v;
        dst[j] = v;
    }
}

#define FC_RUN_ACT(M, B)                                                                       \
    switch (act) {                                                                             \
    case FC_ACT_RELU: FN(store_run)(dst, src, n, alpha, M, beta, B, bs, bv, FC_ACT_RELU, slope); break; \
    case FC_ACT_LEAKY: FN(store_run)(dst, src, n, alpha, M, beta, B, bs, bv, FC_ACT_LEAKY, slope); break; \
    default: FN(store_run)(dst, src, n, alpha, M, beta, B, bs, bv, FC_ACT_NONE, slope); break; \
    }
#define FC_RUN_BIAS(M)                                                                         \
    switch (bmode) {                                                                           \
    case FC_BIAS_ROW: FC_RUN_ACT(M, FC_BIAS_ROW) break;                                        \
    case FC_BIAS_COL: FC_RUN_ACT(M, FC_BIAS_COL) break;                                        \
    default: FC_RUN_ACT(M, FC_BIAS_NONE) break;                                                \
    }

/* A column-major tile (t->trans): each lane is a column of C, its rows in runs. */
static void FN(tile_store_trans)(T *c, long ldc, const T *acc, int ldt, const fc_tile *t)
{
    const fc_epilogue *e = t->e;
    const T *bias = e ? (const T *)e->bias : NULL;
    const int bmode = e && bias ? e->bias_mode : FC_BIAS_NONE;
    const int act = e ? e->act : FC_ACT_NONE;
    const T slope = e ? (T)e->slope : (T)0;
    const T alpha = (T)t->alpha, beta = (T)t->beta;
    for (int j = 0; j < t->nr; j++) {
        T *cj = c + (long)j * ldc;
        for (int s = 0; s < t->nseg; s++) {
            const int hi = t->hi[s] < t->mr ? t->hi[s] : t->mr;
            for (int i = t->lo[s]; i < hi; i++) {
                T *dst = cj + t->col[s] + i;
                T v = acc[(long)i * ldt + j] * alpha;
                if (beta == 1) v = *dst + v;
                else if (beta != 0) v = beta * *dst + v;
                if (bmode == FC_BIAS_ROW) v += bias[t->row0 + i];
                else if (bmode == FC_BIAS_COL) v += bias[t->lane0 + j];
                if (act == FC_ACT_RELU) v = v < 0 ? (T)0 : v;
                else if (act == FC_ACT_LEAKY) v = v < 0 ? v * slope : v;
                *dst = v;
            }
        }
    }
}

void FN(tile_store)(T *c, long ldc, const T *acc, int ldt, const fc_tile *t)
{
    if (t->trans) {
        FN(tile_store_trans)(c, ldc, acc, ldt, t);
        return;
    }
    const fc_epilogue *e = t->e;
    const T *bias = e ? (const T *)e->bias : NULL;
    const int bmode = e && bias ? e->bias_mode : FC_BIAS_NONE;
    const int act = e ? e->act : FC_ACT_NONE;
    const T slope = e ? (T)e->slope : (T)0;
    const T alpha = (T)t->alpha, beta = (T)t->beta;
    const int merge = beta == 0 ? 0 : beta == 1 ? 1 : 2;
    for (int i = 0; i < t->mr; i++) {
        T *row = c + (long)i * ldc;
        const T bs = bmode == FC_BIAS_ROW ? bias[t->row0 + i] : (T)0;
        for (int s = 0; s < t->nseg; s++) {
            const int lo = t->lo[s], hi = t->hi[s] < t->nr ? t->hi[s] : t->nr;
            if (lo >= hi) continue;
            T *dst = row + t->col[s] + lo;
            const T *src = acc + (long)i * ldt + lo;
            const T *bv = bmode == FC_BIAS_COL ? bias + t->col[s] + lo : NULL;
            const int n = hi - lo;
            switch (merge) {
            case 1: FC_RUN_BIAS(1) break;
            case 2: FC_RUN_BIAS(2) break;
            default: FC_RUN_BIAS(0) break;
            }
        }
    }
}

#undef FC_RUN_ACT
#undef FC_RUN_BIAS
