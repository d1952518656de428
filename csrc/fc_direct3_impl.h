/* Direct 3x3 stride-1 convolution (float), where a GEMM would have a single
 * row or a depth of nine: y (N, K, P, Q) = x (N, C, H, W) * w (K, C, 3, 3)
 * with one output channel (a one-channel layer's input gradient) or one input
 * channel (a first layer's forward, optionally 2 x 2 max pooled), padding
 * (ph, pw) on both sides (P = H + 2 ph - 2, Q = W + 2 pw - 2), plus bias and
 * activation; and the weight gradient of a one-input-channel layer. Included
 * by a micro-kernel file, after it defines its vector type and operations on
 * it:
 *
 *   D3_FN(name)        the exported name with the ISA suffix
 *   d3v, D3W           the vector type and its lanes (floats)
 *   d3m                the type of a lane mask
 *   d3_lanes(c, W)     the mask of lanes j with 0 <= c + j < W
 *   d3_any(m)          whether the mask has any lane
 *   d3_loadm(m, p)     p[j] on the lanes of m, 0 elsewhere (no read outside m)
 *   d3_storem(p, m, v) v[j] into p[j] on the lanes of m only
 *   d3_zero(), d3_set1(f), d3_add(a, b), d3_fmadd(a, b, c)
 *   d3_act(v, bias, act, slope)  (v + bias) activated (bias, slope: vectors)
 *   d3_max(a, b)       the larger, NaN if either is
 *   d3_pairs_max(a, b) lane j: the larger of lanes 2j and 2j + 1 of a then b
 *                      concatenated (NaN if either is)
 *   d3_pool_codes(a0, a1, b0, b1, out, code)  the 2 D3W columns of rows a
 *                      (a0 then a1) and b: window j's maximum (out[j]) and its
 *                      place in the window (code[j]), as the max pooling that
 *                      keeps codes makes them
 *   d3_store(p, v)     v into p, aligned to the vector
 *
 * Blocks of DR output rows by two vectors of columns are held in 2 DR
 * registers (the one-input-channel forward: D1R rows of D1K output channels);
 * each input row is loaded once a block and input channel (at three column
 * shifts, masked at the edges) and multiplied by broadcast taps. Every
 * output sums its taps in one fixed order (input channel, tap row, tap
 * column) whatever the task, so results do not depend on the thread count. */

#define DR 4
#define D3C (2 * D3W) /* columns of a block */

/* The lanes of the input loads of the block of columns from c0: (v, b) for the
 * D3W columns from c0 + D3W v + b - pw. */
static inline void d3_masks(int c0, int pw, int W, d3m mx[2][3])
{
    for (int v = 0; v < 2; v++)
        for (int b = 0; b < 3; b++) mx[v][b] = d3_lanes(c0 + D3W * v + b - pw, W);
}

/* For each input row t of the NR + 2 that a block of NR output rows from h0
 * reads, vector v in [v0, v1) and column shift b: in = the D3W inputs at row
 * h0 - ph + t, columns c0 + D3W v + b - pw on (mx: d3_masks of c0); then STMT
 * for each tap row a whose output row r = t - a is in the block. */
#define D3_TAPS(NR, xp, H, W, h0, c0, ph, pw, mx, v0, v1, STMT)                                 \
    _Pragma("GCC unroll 6")                                                                     \
    for (int t = 0; t < (NR) + 2; t++) {                                                        \
        const int hi = (h0) - (ph) + t;                                                         \
        if (hi < 0 || hi >= (H)) continue;                                                      \
        const float *row = (xp) + (long)hi * (W);                                               \
        _Pragma("GCC unroll 2")                                                                 \
        for (int v = (v0); v < (v1); v++) {                                                     \
            _Pragma("GCC unroll 3")                                                             \
            for (int b = 0; b < 3; b++) {                                                       \
                const d3v in = d3_loadm((mx)[v][b], row + (c0) + D3W * v + b - (pw));           \
                _Pragma("GCC unroll 3")                                                         \
                for (int a = 0; a < 3; a++) {                                                   \
                    const int r = t - a;                                                        \
                    if (r >= 0 && r < (NR)) { STMT; }                                           \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }

/* acc[r][v] += sum over taps (a, b) of wk[3a + b] x[h0 - ph + r + a][c0 + D3W v + b - pw] */
static inline __attribute__((always_inline)) void
d3_block(const float *xp, int H, int W, int h0, int c0, int ph, int pw, const d3m mx[2][3],
         const float *wk, d3v acc[DR][2])
{
    d3v wt[9];
    for (int t = 0; t < 9; t++) wt[t] = d3_set1(wk[t]);
    D3_TAPS(DR, xp, H, W, h0, c0, ph, pw, mx, 0, 2, acc[r][v] = d3_fmadd(in, wt[3 * a + b], acc[r][v]))
}

static inline void
d3_store_rows(d3v acc[][2], int nr, float *yp, int P, int Q, int h0, int c0, float bias, int act,
              float slope)
{
    const d3v bv = d3_set1(bias), sv = d3_set1(slope);
    for (int r = 0; r < nr && h0 + r < P; r++)
        for (int v = 0; v < 2; v++) {
            const d3m m = d3_lanes(c0 + D3W * v, Q);
            if (!d3_any(m)) continue;
            d3_storem(yp + (long)(h0 + r) * Q + c0 + D3W * v, m, d3_act(acc[r][v], bv, act, sv));
        }
}

/* The 2 x 2 max pooling of the activated block (rows h0 .. h0 + nr, columns c0
 * .. c0 + D3C, h0, nr and c0 even) into the pooled plane yp of P2 x Q2. */
static inline void
d3_store_pool(d3v acc[][2], int nr, float *yp, int P2, int Q2, int h0, int c0, float bias, int act, float slope)
{
    const d3v bv = d3_set1(bias), sv = d3_set1(slope);
    const d3m m = d3_lanes(c0 / 2, Q2);
    for (int i = 0; i < nr / 2 && h0 / 2 + i < P2; i++) {
        d3v rm[2];
        for (int v = 0; v < 2; v++)
            rm[v] = d3_max(d3_act(acc[2 * i][v], bv, act, sv), d3_act(acc[2 * i + 1][v], bv, act, sv));
        d3_storem(yp + (long)(h0 / 2 + i) * Q2 + c0 / 2, m, d3_pairs_max(rm[0], rm[1]));
    }
}

/* As d3_store_pool, and the argmax of each window as its place in the window
 * (0 (0,0), 1 (0,1), 2 (1,0), 3 (1,1)) into cp (P2 x Q2 codes): the window's
 * pixels taken row by row, each larger one or NaN replacing the maximum, as the
 * max pooling that keeps codes takes them (so a NaN's code is the last NaN's). */
static inline void
d3_store_pool_codes(d3v acc[][2], int nr, float *yp, unsigned char *cp, int P2, int Q2, int h0, int c0,
                    float bias, int act, float slope)
{
    const d3v bv = d3_set1(bias), sv = d3_set1(slope);
    const int j0 = c0 / 2, nj = Q2 - j0 < D3W ? Q2 - j0 : D3W;
    for (int i = 0; i < nr / 2 && h0 / 2 + i < P2; i++) {
        float out[D3W] __attribute__((aligned(64)));
        unsigned char code[D3W] __attribute__((aligned(64)));
        d3_pool_codes(d3_act(acc[2 * i][0], bv, act, sv), d3_act(acc[2 * i][1], bv, act, sv),
                      d3_act(acc[2 * i + 1][0], bv, act, sv), d3_act(acc[2 * i + 1][1], bv, act, sv), out, code);
        const long o = (long)(h0 / 2 + i) * Q2 + j0;
        for (int j = 0; j < nj; j++) {
            yp[o + j] = out[j];
            cp[o + j] = code[j];
        }
    }
}

/* One output channel (C input channels, K = 1): blocks of rows and columns of
 * every image. */
static void d3_one_output(const float *x, const float *w, const float *bias, float *y, int N, int C, int H,
                          int W, int ph, int pw, int act, float slope, int nthreads)
{
    const int P = H + 2 * ph - 2, Q = W + 2 * pw - 2;
    const int nrb = (P + DR - 1) / DR, ncb = (Q + D3C - 1) / D3C;
    const long ntasks = (long)N * nrb * ncb;
    const long HW = (long)H * W, PQ = (long)P * Q;
#if FC_OPENMP
#pragma omp parallel for schedule(dynamic) num_threads(nthreads) if (nthreads > 1)
#endif
    for (long task = 0; task < ntasks; task++) {
        const int n = (int)(task / ((long)nrb * ncb));
        const int rb = (int)(task / ncb % nrb), cb = (int)(task % ncb);
        const int h0 = rb * DR, c0 = cb * D3C;
        unsigned fpmode = fc_fpmode_enter();
        d3v acc[DR][2];
        d3m mx[2][3];
        d3_masks(c0, pw, W, mx);
        for (int r = 0; r < DR; r++) acc[r][0] = acc[r][1] = d3_zero();
        for (int i = 0; i < C; i++)
            d3_block(x + ((long)n * C + i) * HW, H, W, h0, c0, ph, pw, mx, w + 9L * i, acc);
        d3_store_rows(acc, DR, y + (long)n * PQ, P, Q, h0, c0, bias ? bias[0] : 0.0f, act, slope);
        fc_fpmode_leave(fpmode);
    }
}

/* The one-input-channel kernel's blocks: D1K output channels by D1R output
 * rows by two vectors of columns (2 x 2 x 2 registers), each input vector
 * loaded once a block for every channel and tap row that uses it. */
#define D1K 2
#define D1R 2

/* acc[j][r][v] += sum over taps (a, b) of wv[9 j + 3 a + b] x[h0 - ph + r +
 * a][c0 + D3W v + b - pw] (wv: the taps of D1K channels, broadcast; each
 * output's taps in d3_block's order) */
static inline __attribute__((always_inline)) void
d1_block(const float *xp, int H, int W, int h0, int c0, int ph, int pw, const d3m mx[2][3], const d3v *wv,
         d3v acc[D1K][D1R][2])
{
    D3_TAPS(D1R, xp, H, W, h0, c0, ph, pw, mx, 0, 2,
            for (int j = 0; j < D1K; j++) acc[j][r][v] = d3_fmadd(in, wv[9 * j + 3 * a + b], acc[j][r][v]))
}

/* One input channel (C = 1, K output channels), optionally pooled (with the
 * windows' codes, if code): tasks (image, D1K output channels), each over the
 * image's blocks of rows and columns (the image stays in L1 for its channels). */
static void d3_one_input(const float *x, const float *w, const float *bias, float *y, int N, int K, int H,
                         int W, int ph, int pw, int act, float slope, int nthreads, unsigned char *code)
{
    const int pool = act & FC_POOL_2X2;
    act &= ~FC_POOL_2X2;
    const int P = H + 2 * ph - 2, Q = W + 2 * pw - 2;
    const int pe = pool ? P / 2 * 2 : P, qe = pool ? Q / 2 * 2 : Q;
    const int nkb = (K + D1K - 1) / D1K;
    const long ntasks = (long)N * nkb;
    const long HW = (long)H * W, PQ = pool ? (long)(P / 2) * (Q / 2) : (long)P * Q;
#if FC_OPENMP
#pragma omp parallel for schedule(dynamic) num_threads(nthreads) if (nthreads > 1)
#endif
    for (long task = 0; task < ntasks; task++) {
        const int n = (int)(task / nkb), k0 = (int)(task % nkb) * D1K;
        const int nk = K - k0 < D1K ? K - k0 : D1K;
        unsigned fpmode = fc_fpmode_enter();
        d3v wv[9 * D1K];
        for (int j = 0; j < D1K; j++)
            for (int t = 0; t < 9; t++) wv[9 * j + t] = d3_set1(j < nk ? w[9L * (k0 + j) + t] : 0.0f);
        const float *xp = x + (long)n * HW;
        for (int c0 = 0; c0 < qe; c0 += D3C) {
            d3m mx[2][3];
            d3_masks(c0, pw, W, mx);
            for (int h0 = 0; h0 < pe; h0 += D1R) {
                d3v acc[D1K][D1R][2];
                for (int j = 0; j < D1K; j++)
                    for (int r = 0; r < D1R; r++) acc[j][r][0] = acc[j][r][1] = d3_zero();
                d1_block(xp, H, W, h0, c0, ph, pw, mx, wv, acc);
                for (int j = 0; j < nk; j++) {
                    const int k = k0 + j;
                    const float b = bias ? bias[k] : 0.0f;
                    float *yp = y + ((long)n * K + k) * PQ;
                    if (pool && code)
                        d3_store_pool_codes(acc[j], D1R, yp, code + ((long)n * K + k) * PQ, P / 2, Q / 2, h0, c0,
                                            b, act, slope);
                    else if (pool)
                        d3_store_pool(acc[j], D1R, yp, P / 2, Q / 2, h0, c0, b, act, slope);
                    else
                        d3_store_rows(acc[j], D1R, yp, P, Q, h0, c0, b, act, slope);
                }
            }
        }
        fc_fpmode_leave(fpmode);
    }
}

int D3_FN(direct3)(const float *x, const float *w, const float *bias, float *y, int N, int C, int K,
                   int H, int W, int ph, int pw, int act, double slope, int nthreads, unsigned char *code)
{
    if (nthreads < 1) nthreads = 1;
    if (K == 1 && !(act & FC_POOL_2X2))
        d3_one_output(x, w, bias, y, N, C, H, W, ph, pw, act, (float)slope, nthreads);
    else
        d3_one_input(x, w, bias, y, N, K, H, W, ph, pw, act, (float)slope, nthreads, code);
    return 0;
}

/* Weight and bias gradients of a one-input-channel 3x3 stride-1 layer:
 * dw[k][a][b] = sum over n, h, w of dy[n][k][h][w] x[n][0][h + a - ph][w + b - pw]
 * and db[k] = the sum of dy[n][k] (db may be NULL), P = H + 2 ph - 2, Q =
 * W + 2 pw - 2. One task per (image, output channel) sums its plane, block of
 * rows by block of columns, into ten vectors (nine taps and the bias) kept in
 * ws (N K 160 floats), and prefetches the next plane meanwhile; the tasks'
 * vectors are then added image after image and their lanes in order, so
 * results do not depend on the thread count. */
int D3_FN(direct3_wgrad)(const float *x, const float *dy, float *dw, float *db, int N, int K, int H,
                         int W, int ph, int pw, int nthreads, float *ws)
{
    const int P = H + 2 * ph - 2, Q = W + 2 * pw - 2;
    const long ntasks = (long)N * K;
    const long HW = (long)H * W, PQ = (long)P * Q;
    if (nthreads < 1) nthreads = 1;
#if FC_OPENMP
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
#endif
    {
        unsigned fpmode = fc_fpmode_enter();
#if FC_OPENMP
#pragma omp for schedule(dynamic, 8)
#endif
        for (long task = 0; task < ntasks; task++) {
            const int n = (int)(task / K);
            const float *xp = x + (long)n * HW, *gp = dy + task * PQ;
            if (task + 1 < ntasks)   /* the next plane, while this one is summed */
                FC_PREFETCH_ROWS((const char *)(gp + PQ), 0, 1, PQ * (long)sizeof(float));
            d3v acc[10];
            for (int t = 0; t < 10; t++) acc[t] = d3_zero();
            for (int c0 = 0; c0 < Q; c0 += D3C) {
                d3m mx[2][3];
                d3_masks(c0, pw, W, mx);
                const d3m mg[2] = {d3_lanes(c0, Q), d3_lanes(c0 + D3W, Q)};
                const d3m none = d3_lanes(0, 0);
                /* one vector of columns at a time: its DR rows of dy and the ten
                 * sums stay in registers */
                for (int h0 = 0; h0 < P; h0 += DR)
                    for (int vg = 0; vg < 2; vg++) {
                        d3v g[DR];
                        for (int r = 0; r < DR; r++) {
                            g[r] = d3_loadm(h0 + r < P ? mg[vg] : none, gp + (long)(h0 + r) * Q + c0 + D3W * vg);
                            acc[9] = d3_add(acc[9], g[r]);
                        }
                        D3_TAPS(DR, xp, H, W, h0, c0, ph, pw, mx, vg, vg + 1,
                                acc[3 * a + b] = d3_fmadd(in, g[r], acc[3 * a + b]))
                    }
            }
            for (int t = 0; t < 10; t++) d3_store(ws + task * 160 + D3W * t, acc[t]);
        }
#if FC_OPENMP
#pragma omp for schedule(static)
#endif
        for (int k = 0; k < K; k++) {
            d3v s[10];
            for (int t = 0; t < 10; t++) s[t] = d3_zero();
            for (int n = 0; n < N; n++)
                for (int t = 0; t < 10; t++)
                    s[t] = d3_add(s[t], *(const d3v *)(ws + ((long)n * K + k) * 160 + D3W * t));
            float lanes[D3W] __attribute__((aligned(64)));
            for (int t = 0; t < 10; t++) {
                if (t == 9 && !db) break;
                d3_store(lanes, s[t]);
                float r = 0;
                for (int l = 0; l < D3W; l++) r += lanes[l];
                if (t < 9) dw[9L * k + t] = r;
                else db[k] = r;
            }
        }
        fc_fpmode_leave(fpmode);
    }
    return 0;
}
#undef D3_TAPS
#undef D1K
#undef D1R
#undef D3C
#undef DR
