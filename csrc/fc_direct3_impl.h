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
 *   d3_loadu(p), d3_storeu(p, v)  a whole vector from and into p, unaligned
 *
 * Each kernel keeps a block of outputs' sums in registers and loads each input
 * vector once for all the taps that use it: the one-output-channel kernel D0R
 * rows by one vector of columns, the one-input-channel forward two rows by two
 * vectors of D1K output channels, the weight gradient its nine taps' sums over
 * DR rows at a time. Every output sums its taps in one fixed order (input
 * channel, tap row, tap column) whatever the task, so results do not depend on
 * the thread count. Tasks are shared out guided: a thread first takes a long run
 * of consecutive tasks, whose outputs lie together in memory, then shorter runs
 * while the others finish (one task at a time from a shared counter moves the
 * lines of the output between the cores' caches on every call). */

#define DR 4
#define D3C (2 * D3W) /* columns of a block */

/* The 2 x 2 max pooling of the activated block (rows h0 .. h0 + nr, columns c0
 * .. c0 + D3C, h0, nr and c0 even) into the pooled plane yp of P2 x Q2. */
static inline __attribute__((always_inline)) void
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
static inline __attribute__((always_inline)) void
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
        if (nj == D3W) {
            memcpy(yp + o, out, sizeof out);
            memcpy(cp + o, code, sizeof code);
        } else
            for (int j = 0; j < nj; j++) {
                yp[o + j] = out[j];
                cp[o + j] = code[j];
            }
    }
}

/* Zero-bordered copies of one-channel images (H x W, ph rows and pw columns of
 * padding), one plane a thread, for kernels whose blocks read rows x cols of
 * the padded image (rounded to whole vectors): the borders stay zero, as the
 * copies write the planes' insides only. */
typedef struct {
    float *bufs;
    int wp;
    long plane;
} d3_pads;

/* 0, or 2 where the planes' memory cannot be had */
static int d3_pads_alloc(d3_pads *pd, int nthreads, int rows, int cols, int H, int W, int ph, int pw)
{
    const int hp = rows > H + 2 * ph ? rows : H + 2 * ph;
    pd->wp = ((cols > W + 2 * pw ? cols : W + 2 * pw) + D3W - 1) / D3W * D3W;
    pd->plane = (long)hp * pd->wp;
    pd->bufs = (float *)fc_aligned_alloc((size_t)nthreads * pd->plane * sizeof(float));
    if (!pd->bufs) return 2;
    memset(pd->bufs, 0, (size_t)nthreads * pd->plane * sizeof(float));
    return 0;
}

/* the calling thread's plane */
static inline float *d3_pad_buf(const d3_pads *pd)
{
#if FC_OPENMP
    return pd->bufs + (long)omp_get_thread_num() * pd->plane;
#else
    return pd->bufs;
#endif
}

/* image n of x into buf, unless it is there already (*in_buf) */
static inline void d3_pad_image(const d3_pads *pd, float *buf, const float *x, int n, int H, int W, int ph,
                                int pw, int *in_buf)
{
    if (n == *in_buf) return;
    for (int i = 0; i < H; i++)
        memcpy(buf + (long)(i + ph) * pd->wp + pw, x + ((long)n * H + i) * W, (size_t)W * sizeof(float));
    *in_buf = n;
}

/* One output channel (C input channels, K = 1): tasks of D0R output rows by
 * one vector of columns of an image, its D0R sums in registers. Each input
 * vector (row t, column shift b) is loaded once a channel and multiplied by
 * the broadcast taps (a, b) of the output rows t - a; the rows are read
 * through row pointers (a zero row where the input row is padding), masked
 * where the columns reach the padding (edge). */
#define D0R 8

/* keeps a loaded vector in a register (it is an operand of several products) */
#define D3_IN_REG(v) __asm__ volatile("" : "+v"(v))

static inline __attribute__((always_inline)) void
d0_block(const int edge, const float *x, const float *w, const float *zrow, int C, int H, int W, long HW,
         int h0, int col, const d3m m[3], d3v acc[D0R])
{
    d3v s[D0R];
    _Pragma("GCC unroll 8")
    for (int r = 0; r < D0R; r++) s[r] = d3_zero();
    /* the rows of channel 0, and what takes them to the next channel's (the zero row stays) */
    const float *rows[D0R + 2];
    long step[D0R + 2];
    for (int t = 0; t < D0R + 2; t++) {
        const int hi = h0 + t, in = hi >= 0 && hi < H;
        rows[t] = (in ? x + (long)hi * W : zrow) + col;
        step[t] = in ? HW : 0;
    }
    for (int i = 0; i < C; i++) {
        const float *wk = w + 9L * i;
        d3v wt[9];
        for (int t = 0; t < 9; t++) wt[t] = d3_set1(wk[t]);
        /* input row t at shift b: its products with taps (a, b) into output rows t - a */
        _Pragma("GCC unroll 10")
        for (int t = 0; t < D0R + 2; t++) {
            _Pragma("GCC unroll 3")
            for (int b = 0; b < 3; b++) {
                d3v in = edge ? d3_loadm(m[b], rows[t] + b) : d3_loadu(rows[t] + b);
                D3_IN_REG(in);
                if (t < D0R) s[t] = d3_fmadd(in, wt[b], s[t]);
                if (t >= 1 && t - 1 < D0R) s[t - 1] = d3_fmadd(in, wt[3 + b], s[t - 1]);
                if (t >= 2) s[t - 2] = d3_fmadd(in, wt[6 + b], s[t - 2]);
            }
        }
        _Pragma("GCC unroll 10")
        for (int t = 0; t < D0R + 2; t++) rows[t] += step[t];
    }
    _Pragma("GCC unroll 8")
    for (int r = 0; r < D0R; r++) acc[r] = s[r];
}

static int d3_one_output(const float *x, const float *w, const float *bias, float *y, int N, int C, int H,
                         int W, int ph, int pw, int act, float slope, int nthreads)
{
    const int P = H + 2 * ph - 2, Q = W + 2 * pw - 2;
    const int nrb = (P + D0R - 1) / D0R, ncv = (Q + D3W - 1) / D3W;
    const long ntasks = (long)N * nrb * ncv;
    const long HW = (long)H * W, PQ = (long)P * Q;
    /* the zero row read for padding rows, as wide as any row's loads */
    float *zrow = (float *)fc_aligned_alloc((size_t)(W + 2 * D3W + 4) * sizeof(float));
    if (!zrow) return 2;
    memset(zrow, 0, (size_t)(W + 2 * D3W + 4) * sizeof(float));
    zrow += D3W;
#if FC_OPENMP
#pragma omp parallel for schedule(guided) num_threads(nthreads) if (nthreads > 1)
#endif
    for (long task = 0; task < ntasks; task++) {
        const int n = (int)(task / ((long)nrb * ncv));
        const int rb = (int)(task / ncv % nrb), cv = (int)(task % ncv);
        const int h0 = rb * D0R, c0 = cv * D3W, col = c0 - pw;
        unsigned fpmode = fc_fpmode_enter();
        d3v acc[D0R];
        d3m m[3];
        for (int b = 0; b < 3; b++) m[b] = d3_lanes(col + b, W);
        if (col >= 0 && col + D3W + 2 <= W)
            d0_block(0, x + (long)n * C * HW, w, zrow, C, H, W, HW, h0 - ph, col, m, acc);
        else
            d0_block(1, x + (long)n * C * HW, w, zrow, C, H, W, HW, h0 - ph, col, m, acc);
        const d3v bv = d3_set1(bias ? bias[0] : 0.0f), sv = d3_set1(slope);
        const d3m mo = d3_lanes(c0, Q);
        float *yp = y + (long)n * PQ + c0;
        for (int r = 0; r < D0R && h0 + r < P; r++)
            d3_storem(yp + (long)(h0 + r) * Q, mo, d3_act(acc[r], bv, act, sv));
        fc_fpmode_leave(fpmode);
    }
    fc_aligned_free(zrow - D3W);
    return 0;
}

/* The one-input-channel forward: each thread keeps a zero-bordered copy of an
 * image (so that its loads need no masks). A task makes D1G groups of D1K
 * output channels from it (one group where the tasks would be too few to
 * share), in blocks of D1K channels by two output rows by two vectors of
 * columns (4 D1K sums in registers): each tap loads its four input vectors
 * once and broadcasts its D1K weights. */
#define D1K 2
#define D1G 3

/* keeps loaded vectors in registers (each is an operand of several products) */
#define D3_IN_REGS(a, b, c, d) __asm__("" : "+v"(a), "+v"(b), "+v"(c), "+v"(d))

/* acc[j][r][v] = sum over taps (a, b) of wk[9 j + 3 a + b] bp[(r + a) wp + D3W v + b] */
static inline __attribute__((always_inline)) void
d1_block(const float *bp, long wp, const float *wk, d3v acc[D1K][2][2])
{
    const float *rows[4] = {bp, bp + wp, bp + 2 * wp, bp + 3 * wp};
    d3v s00 = d3_zero(), s01 = d3_zero(), s02 = d3_zero(), s03 = d3_zero();
    d3v s10 = d3_zero(), s11 = d3_zero(), s12 = d3_zero(), s13 = d3_zero();
    _Pragma("GCC unroll 9")
    for (int t = 0; t < 9; t++) {
        const float *p = rows[t / 3] + t % 3, *q = rows[t / 3 + 1] + t % 3;
        d3v x0 = d3_loadu(p), x1 = d3_loadu(p + D3W);
        d3v x2 = d3_loadu(q), x3 = d3_loadu(q + D3W);
        D3_IN_REGS(x0, x1, x2, x3);
        const d3v w0 = d3_set1(wk[t]), w1 = d3_set1(wk[9 + t]);
        s00 = d3_fmadd(x0, w0, s00); s01 = d3_fmadd(x1, w0, s01);
        s02 = d3_fmadd(x2, w0, s02); s03 = d3_fmadd(x3, w0, s03);
        s10 = d3_fmadd(x0, w1, s10); s11 = d3_fmadd(x1, w1, s11);
        s12 = d3_fmadd(x2, w1, s12); s13 = d3_fmadd(x3, w1, s13);
    }
    acc[0][0][0] = s00; acc[0][0][1] = s01; acc[0][1][0] = s02; acc[0][1][1] = s03;
    acc[1][0][0] = s10; acc[1][0][1] = s11; acc[1][1][0] = s12; acc[1][1][1] = s13;
}

/* Output channels k0 .. k0 + nk (nk <= D1K, taps wk) of image n from its
 * padded plane buf: each block's sums activated and stored (mode 0), or 2 x 2
 * max pooled (mode 1; with the windows' codes, mode 2). mode and act are
 * constants where it is inlined. */
static inline __attribute__((always_inline)) void
d1_group(const int mode, const float *buf, int wp, const float *wk, int k0, int nk, const float *bias,
         float *y, unsigned char *code, long n, int K, int P, int Q, int pe, int qe, long PQ, const int act,
         float slope)
{
    const d3v sv = d3_set1(slope);
    float b[D1K];
    d3v bv[D1K];
    long off[D1K];   /* channel k0 + j's plane in y and code */
    for (int j = 0; j < D1K; j++) {
        b[j] = bias && j < nk ? bias[k0 + j] : 0.0f;
        bv[j] = d3_set1(b[j]);
        off[j] = (n * K + k0 + (j < nk ? j : 0)) * PQ;
    }
    for (int cb = 0; cb < qe; cb += D3C) {
        /* a last block past the outputs' end moved back to end there: the columns
         * it shares with the block before are made again, to the same values */
        const int c0 = cb + D3C > qe && qe >= D3C ? qe - D3C : cb;
        const d3m m0 = d3_lanes(c0, Q), m1 = d3_lanes(c0 + D3W, Q);
        const int full = c0 + D3C <= Q;
        for (int h0 = 0; h0 < pe; h0 += 2) {
            d3v acc[D1K][2][2];
            d1_block(buf + (long)h0 * wp + c0, wp, wk, acc);
            const int two = h0 + 1 < P;
            _Pragma("GCC unroll 2")
            for (int j = 0; j < D1K; j++) {
                if (j >= nk) break;
                float *yp = y + off[j];
                if (mode == 2)
                    d3_store_pool_codes(acc[j], 2, yp, code + off[j], P / 2, Q / 2, h0, c0, b[j], act, slope);
                else if (mode == 1)
                    d3_store_pool(acc[j], 2, yp, P / 2, Q / 2, h0, c0, b[j], act, slope);
                else {
                    float *p = yp + (long)h0 * Q + c0;
                    const d3v o00 = d3_act(acc[j][0][0], bv[j], act, sv), o01 = d3_act(acc[j][0][1], bv[j], act, sv);
                    const d3v o10 = d3_act(acc[j][1][0], bv[j], act, sv), o11 = d3_act(acc[j][1][1], bv[j], act, sv);
                    if (full) {
                        d3_storeu(p, o00);
                        d3_storeu(p + D3W, o01);
                        if (two) {
                            d3_storeu(p + Q, o10);
                            d3_storeu(p + Q + D3W, o11);
                        }
                    } else {
                        d3_storem(p, m0, o00);
                        d3_storem(p + D3W, m1, o01);
                        if (two) {
                            d3_storem(p + Q, m0, o10);
                            d3_storem(p + Q + D3W, m1, o11);
                        }
                    }
                }
            }
        }
    }
}

/* d1_group of the mode MODE, for the activation act as a constant */
#define D1_GROUP(MODE)                                                                               \
    do {                                                                                             \
        if (act == FC_ACT_RELU)                                                                      \
            d1_group(MODE, buf, wp, wk, k0, nk, bias, y, code, n, K, P, Q, pe, qe, PQ, FC_ACT_RELU, slope); \
        else if (act == FC_ACT_LEAKY)                                                                \
            d1_group(MODE, buf, wp, wk, k0, nk, bias, y, code, n, K, P, Q, pe, qe, PQ, FC_ACT_LEAKY, slope); \
        else                                                                                         \
            d1_group(MODE, buf, wp, wk, k0, nk, bias, y, code, n, K, P, Q, pe, qe, PQ, FC_ACT_NONE, slope); \
    } while (0)

/* One input channel (C = 1, K output channels), optionally pooled (with the
 * windows' codes, if code): tasks (image, D1G groups of D1K output channels).
 * Returns nonzero where the planes' memory cannot be had. */
static int d3_one_input(const float *x, const float *w, const float *bias, float *y, int N, int K, int H,
                        int W, int ph, int pw, int act, float slope, int nthreads, unsigned char *code)
{
    const int pool = act & FC_POOL_2X2;
    act &= ~FC_POOL_2X2;
    const int P = H + 2 * ph - 2, Q = W + 2 * pw - 2;
    const int pe = pool ? P / 2 * 2 : P, qe = pool ? Q / 2 * 2 : Q;
    /* D1G groups a task where that leaves the threads enough tasks to share, else one */
    const int gk = (long)N * ((K + D1G * D1K - 1) / (D1G * D1K)) >= 8L * nthreads ? D1G * D1K : D1K;
    const int ngb = (K + gk - 1) / gk;
    const long ntasks = (long)N * ngb;
    const long PQ = pool ? (long)(P / 2) * (Q / 2) : (long)P * Q;
    if (nthreads > ntasks) nthreads = ntasks > 0 ? (int)ntasks : 1;
    /* each block reads its two rows and two vectors of columns, and two more of each */
    d3_pads pd;
    if (d3_pads_alloc(&pd, nthreads, (pe + 1) / 2 * 2 + 2, (qe + D3C - 1) / D3C * D3C + 2, H, W, ph, pw))
        return 2;
    const int wp = pd.wp;
#if FC_OPENMP
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
#endif
    {
        unsigned fpmode = fc_fpmode_enter();
        int in_buf = -1;   /* the image in buf */
        float *buf = d3_pad_buf(&pd);
#if FC_OPENMP
#pragma omp for schedule(guided)
#endif
        for (long task = 0; task < ntasks; task++) {
            const int n = (int)(task / ngb), g0 = (int)(task % ngb) * gk;
            const int g1 = K - g0 < gk ? K : g0 + gk;
            d3_pad_image(&pd, buf, x, n, H, W, ph, pw, &in_buf);
            for (int k0 = g0; k0 < g1; k0 += D1K) {
                const int nk = g1 - k0 < D1K ? g1 - k0 : D1K;
                float wk[9 * D1K];
                for (int t = 0; t < 9 * D1K; t++) wk[t] = t < 9 * nk ? w[9L * k0 + t] : 0.0f;
                if (pool && code)
                    D1_GROUP(2);
                else if (pool)
                    D1_GROUP(1);
                else
                    D1_GROUP(0);
            }
        }
        fc_fpmode_leave(fpmode);
    }
    fc_aligned_free(pd.bufs);
    return 0;
}

int D3_FN(direct3)(const float *x, const float *w, const float *bias, float *y, int N, int C, int K,
                   int H, int W, int ph, int pw, int act, double slope, int nthreads, unsigned char *code)
{
    if (nthreads < 1) nthreads = 1;
    if (K == 1 && !(act & FC_POOL_2X2))
        return d3_one_output(x, w, bias, y, N, C, H, W, ph, pw, act, (float)slope, nthreads);
    return d3_one_input(x, w, bias, y, N, K, H, W, ph, pw, act, (float)slope, nthreads, code);
}

/* Weight and bias gradients of a one-input-channel 3x3 stride-1 layer:
 * dw[k][a][b] = sum over n, h, w of dy[n][k][h][w] x[n][0][h + a - ph][w + b - pw]
 * and db[k] = the sum of dy[n][k] (db may be NULL), P = H + 2 ph - 2, Q =
 * W + 2 pw - 2. One task per (image, output channel) sums its plane, block of
 * rows by block of columns, into ten vectors (nine taps and the bias) kept in
 * ws (N K 160 floats), and prefetches the next plane meanwhile; each thread
 * reads its image from a zero-bordered copy (as the one-input-channel forward).
 * The tasks' vectors are then added image after image and their lanes in
 * order, so results do not depend on the thread count. Returns nonzero where
 * the copies' memory cannot be had. */
int D3_FN(direct3_wgrad)(const float *x, const float *dy, float *dw, float *db, int N, int K, int H,
                         int W, int ph, int pw, int nthreads, float *ws)
{
    const int P = H + 2 * ph - 2, Q = W + 2 * pw - 2;
    const long ntasks = (long)N * K;
    const long PQ = (long)P * Q;
    if (nthreads < 1) nthreads = 1;
    if (nthreads > ntasks) nthreads = ntasks > 0 ? (int)ntasks : 1;
    /* each block reads DR rows and two vectors of columns, and two more of each */
    d3_pads pd;
    if (d3_pads_alloc(&pd, nthreads, (P + DR - 1) / DR * DR + 2, (Q + D3C - 1) / D3C * D3C + 2, H, W, ph, pw))
        return 2;
    const int wp = pd.wp;
#if FC_OPENMP
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
#endif
    {
        unsigned fpmode = fc_fpmode_enter();
        int in_buf = -1;   /* the image in buf */
        float *buf = d3_pad_buf(&pd);
#if FC_OPENMP
#pragma omp for schedule(guided)
#endif
        for (long task = 0; task < ntasks; task++) {
            const int n = (int)(task / K);
            const float *gp = dy + task * PQ;
            if (task + 1 < ntasks)   /* the next plane, while this one is summed */
                FC_PREFETCH_ROWS((const char *)(gp + PQ), 0, 1, PQ * (long)sizeof(float));
            d3_pad_image(&pd, buf, x, n, H, W, ph, pw, &in_buf);
            d3v acc[10];
            for (int t = 0; t < 10; t++) acc[t] = d3_zero();
            for (int c0 = 0; c0 < Q; c0 += D3C) {
                const d3m mg[2] = {d3_lanes(c0, Q), d3_lanes(c0 + D3W, Q)};
                const d3m none = d3_lanes(0, 0);
                /* one vector of columns at a time: its DR rows of dy and the ten
                 * sums stay in registers; input row t at shift b adds its products
                 * with the rows t - a of dy to tap (a, b) */
                for (int h0 = 0; h0 < P; h0 += DR)
                    for (int vg = 0; vg < 2; vg++) {
                        d3v g[DR];
                        const float *gr = gp + (long)h0 * Q + c0 + D3W * vg;
                        if (h0 + DR <= P && c0 + D3W * (vg + 1) <= Q) {   /* DR whole rows of a whole vector */
                            _Pragma("GCC unroll 4")
                            for (int r = 0; r < DR; r++) g[r] = d3_loadu(gr + (long)r * Q);
                        } else {
                            _Pragma("GCC unroll 4")
                            for (int r = 0; r < DR; r++) g[r] = d3_loadm(h0 + r < P ? mg[vg] : none, gr + (long)r * Q);
                        }
                        _Pragma("GCC unroll 4")
                        for (int r = 0; r < DR; r++) acc[9] = d3_add(acc[9], g[r]);
                        const float *bp = buf + (long)h0 * wp + c0 + D3W * vg;
                        _Pragma("GCC unroll 6")
                        for (int t = 0; t < DR + 2; t++) {
                            _Pragma("GCC unroll 3")
                            for (int b = 0; b < 3; b++) {
                                d3v in = d3_loadu(bp + (long)t * wp + b);
                                D3_IN_REG(in);
                                _Pragma("GCC unroll 3")
                                for (int a = 0; a < 3; a++) {
                                    const int r = t - a;
                                    if (r >= 0 && r < DR) acc[3 * a + b] = d3_fmadd(in, g[r], acc[3 * a + b]);
                                }
                            }
                        }
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
    fc_aligned_free(pd.bufs);
    return 0;
}
#undef D1K
#undef D0R
#undef D3_IN_REG
#undef D1G
#undef D3_IN_REGS
#undef D3C
#undef DR
