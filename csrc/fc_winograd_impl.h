/* Winograd F(4x4, 3x3) convolution (stride 1, dilation 1), instantiated in
 * each micro-kernel file so that its transforms are compiled for that file's
 * instruction set (T = element type, FN(name) = name with the ISA and type
 * suffix; GEMM the engine's entry point for T).
 *
 * Every 4 x 4 block of outputs is A^T [(G g G^T) . (B^T d B)] A for its 6 x 6
 * input tile d (Lavin and Gray, 2016; interpolation points 0, +-1, +-2 and
 * infinity): 36 products per input and output channel instead of 144. The
 * products are 36 GEMMs, one per point e of the 6 x 6 transform: M_e (tiles x
 * K) = V_e (tiles x C) . U_e^T (C x K), V_e read in place, U_e packed once.
 *
 * The input is first laid out channels-last (a zero-padded copy of each
 * image, rows of pixels of C channels rounded up to a multiple of 16) so
 * that both transforms run on vectors of 16 consecutive channels. Tiles come
 * in blocks of FC_WINO_TILES, one block per task, fixed by the problem size:
 * results do not depend on the thread count. */

#ifndef FC_WINO_TILES
#define FC_WINO_TILES 64
#endif
#define FC_WINO_L 16                           /* channels a transform vector */
#define FC_WINO_AL(n) (((long)(n) + 15) & ~15L)

/* out[e] = sum_c BT[e][c] in[c] for e, c < 6 (rows of the input transform),
 * over FC_WINO_L lanes; in[c] at in + c * is, out[e] at out + e * os. */
static inline __attribute__((always_inline)) void
FN(wino_bt16)(const T *restrict in, long is, T *restrict out, long os)
{
    for (int l = 0; l < FC_WINO_L; l++) {
        const T a = in[l], b = in[is + l], c = in[2 * is + l], d = in[3 * is + l];
        const T e = in[4 * is + l], f = in[5 * is + l];
        const T e4c = e - 4 * c, d4b = d - 4 * b, e_c = e - c, db2 = 2 * (d - b);
        out[l] = 4 * a - 5 * c + e;
        out[os + l] = e4c + d4b;
        out[2 * os + l] = e4c - d4b;
        out[3 * os + l] = e_c + db2;
        out[4 * os + l] = e_c - db2;
        out[5 * os + l] = 4 * b - 5 * d + f;
    }
}

/* out[a] = sum_e AT[a][e] in[e] for a < 4, e < 6 (the output transform). */
static inline __attribute__((always_inline)) void
FN(wino_at16)(const T *restrict in, long is, T *restrict out, long os)
{
    for (int l = 0; l < FC_WINO_L; l++) {
        const T m1 = in[is + l], m2 = in[2 * is + l], m3 = in[3 * is + l], m4 = in[4 * is + l];
        const T p12 = m1 + m2, q12 = m1 - m2, p34 = m3 + m4, q34 = m3 - m4;
        out[l] = in[l] + p12 + p34;
        out[os + l] = q12 + 2 * q34;
        out[2 * os + l] = p12 + 4 * p34;
        out[3 * os + l] = q12 + 8 * q34 + in[5 * is + l];
    }
}

/* U_e^T (Cs x K, zero rows for c >= C) for every point e: u[e][c][k] = (G g G^T)[e]
 * with g = w[k][c] (3 x 3), for the output channels k0 .. k1. */
static void FN(wino_weights)(const T *w, int K, int C, int Cs, int k0, int k1, T *U)
{
    const long CK = (long)Cs * K;
    for (int e = 0; e < 36; e++)
        for (int c = C; c < Cs; c++)
            for (int k = k0; k < k1; k++) U[e * CK + (long)c * K + k] = 0;
    for (int k = k0; k < k1; k++)
        for (int c = 0; c < C; c++) {
            const T *g = w + ((long)k * C + c) * 9;
            T t[6][3];   /* G g */
            for (int s = 0; s < 3; s++) {
                const T a = g[s], b = g[3 + s], d = g[6 + s];
                t[0][s] = a / 4;
                t[1][s] = -(a + b + d) / 6;
                t[2][s] = -(a - b + d) / 6;
                t[3][s] = a / 24 + b / 12 + d / 6;
                t[4][s] = a / 24 - b / 12 + d / 6;
                t[5][s] = d;
            }
            for (int r = 0; r < 6; r++) {   /* (G g) G^T */
                const T a = t[r][0], b = t[r][1], d = t[r][2];
                T *u = U + (long)(6 * r) * CK + (long)c * K + k;
                u[0] = a / 4;
                u[CK] = -(a + b + d) / 6;
                u[2 * CK] = -(a - b + d) / 6;
                u[3 * CK] = a / 24 + b / 12 + d / 6;
                u[4 * CK] = a / 24 - b / 12 + d / 6;
                u[5 * CK] = d;
            }
        }
}

/* Rows r0 .. r1 (of all images' Hp padded rows) of the channels-last
 * zero-padded copy: xt[n][h][w][c] (Hp x Wp pixels of Cs channels) =
 * x[n][c][h - ph][w - pw], zero elsewhere. */
static void FN(wino_layout)(const T *x, long r0, long r1, int C, int H, int W, int Cs, int Hp,
                            int Wp, int ph, int pw, T *xt)
{
    const long row = (long)Wp * Cs;
    const int wn = W < Wp - pw ? W : Wp - pw;
    for (long r = r0; r < r1; r++) {
        const int n = (int)(r / Hp), hp = (int)(r % Hp), h = hp - ph;
        T *xr = xt + r * row;
        for (long i = 0; i < row; i++) xr[i] = 0;
        if (h < 0 || h >= H || wn <= 0) continue;
        TRANSPOSE(x + ((long)n * C * H + h) * W, (long)H * W, xr + (long)pw * Cs, Cs, C, wn);
    }
}

/* V_e[t][c] of the tiles t0 .. t0 + nt of the image whose channels-last copy
 * is xi (tiles tw a row). */
static void FN(wino_in)(const T *xi, int Wp, int Cs, int tw, int t0, int nt, T *V, long vs)
{
    T d[36 * FC_WINO_L] __attribute__((aligned(64)));
    T r[36 * FC_WINO_L] __attribute__((aligned(64)));
    for (int t = 0; t < nt; t++) {
        const int I = (t0 + t) / tw, J = (t0 + t) % tw;
        for (int c0 = 0; c0 < Cs; c0 += FC_WINO_L) {
            const T *src = xi + ((long)(4 * I) * Wp + 4 * J) * Cs + c0;
            /* B^T down the columns of the tile: r[e_row][j] */
            for (int j = 0; j < 6; j++)
                FN(wino_bt16)(src + (long)j * Cs, (long)Wp * Cs, r + j * FC_WINO_L, 6 * FC_WINO_L);
            /* B^T along its rows: d[e_row][e_col] */
            for (int er = 0; er < 6; er++)
                FN(wino_bt16)(r + er * 6 * FC_WINO_L, FC_WINO_L, d + er * 6 * FC_WINO_L, FC_WINO_L);
            for (int e = 0; e < 36; e++) {
                T *dst = V + e * vs + (long)t * Cs + c0;
                for (int l = 0; l < FC_WINO_L; l++) dst[l] = d[e * FC_WINO_L + l];
            }
        }
    }
}

/* Output tiles t0 .. t0 + nt of image y (K planes of P x Q) from M_e[t][k],
 * plus the bias and the activation. */
static void FN(wino_out)(const T *M, long ms, int Ks, int K, int tw, int t0, int nt, T *y, int P,
                         int Q, const T *bias, int act, T slope)
{
    T s[24 * FC_WINO_L] __attribute__((aligned(64)));
    T o[16 * FC_WINO_L] __attribute__((aligned(64)));
    T ot[16 * FC_WINO_L] __attribute__((aligned(64)));
    const long PQ = (long)P * Q;
    for (int t = 0; t < nt; t++) {
        const int I = (t0 + t) / tw, J = (t0 + t) % tw;
        const int rows = P - 4 * I < 4 ? P - 4 * I : 4, cols = Q - 4 * J < 4 ? Q - 4 * J : 4;
        for (int k0 = 0; k0 < Ks; k0 += FC_WINO_L) {
            const T *src = M + (long)t * Ks + k0;
            /* A^T along the rows: s[e_row][a] */
            for (int er = 0; er < 6; er++)
                FN(wino_at16)(src + (long)(6 * er) * ms, ms, s + er * 4 * FC_WINO_L, FC_WINO_L);
            /* A^T down the columns: o[b][a] */
            for (int a = 0; a < 4; a++)
                FN(wino_at16)(s + a * FC_WINO_L, 4 * FC_WINO_L, o + a * FC_WINO_L, 4 * FC_WINO_L);
            /* bias and activation on all 16 pixels x 16 channels, then a transpose:
             * ot[l][pixel], each channel's four rows of four contiguous */
            T bk[FC_WINO_L];
            for (int l = 0; l < FC_WINO_L; l++) bk[l] = bias && k0 + l < K ? bias[k0 + l] : (T)0;
            if (act == FC_ACT_RELU) {
                for (int q = 0; q < 16; q++)
                    for (int l = 0; l < FC_WINO_L; l++) {
                        const T v = o[q * FC_WINO_L + l] + bk[l];
                        o[q * FC_WINO_L + l] = v > 0 ? v : (T)0;
                    }
            } else if (act == FC_ACT_LEAKY) {
                for (int q = 0; q < 16; q++)
                    for (int l = 0; l < FC_WINO_L; l++) {
                        const T v = o[q * FC_WINO_L + l] + bk[l];
                        o[q * FC_WINO_L + l] = v > 0 ? v : v * slope;
                    }
            } else {
                for (int q = 0; q < 16; q++)
                    for (int l = 0; l < FC_WINO_L; l++) o[q * FC_WINO_L + l] += bk[l];
            }
            TRANSPOSE(o, FC_WINO_L, ot, 16, 16, FC_WINO_L);
            const int kn = K - k0 < FC_WINO_L ? K - k0 : FC_WINO_L;
            for (int l = 0; l < kn; l++) {
                T *yk = y + (long)(k0 + l) * PQ + (long)(4 * I) * Q + 4 * J;
                const T *ol = ot + l * 16;
                if (cols == 4) {
                    for (int b = 0; b < rows; b++)
                        for (int a = 0; a < 4; a++) yk[(long)b * Q + a] = ol[4 * b + a];
                } else {
                    for (int b = 0; b < rows; b++)
                        for (int a = 0; a < cols; a++) yk[(long)b * Q + a] = ol[4 * b + a];
                }
            }
        }
    }
}

/* Geometry shared by the workspace size and the call. */
typedef struct {
    int th, tw, Cs, Ks, Hp, Wp, ntiles, nblocks;
    long img, upack, ws_layout, per, v_off, m_off, offs_off, gws_off, vs, ms;
} FN(wino_geom);

static FN(wino_geom) FN(wino_plan)(int N, int C, int K, int P, int Q, int nthreads)
{
    FN(wino_geom) g;
    g.th = (P + 3) / 4;
    g.tw = (Q + 3) / 4;
    g.Cs = (C + FC_WINO_L - 1) / FC_WINO_L * FC_WINO_L;
    g.Ks = (K + FC_WINO_L - 1) / FC_WINO_L * FC_WINO_L;
    g.Hp = 4 * g.th + 2;
    g.Wp = 4 * g.tw + 2;
    g.ntiles = N * g.th * g.tw;
    g.nblocks = (g.ntiles + FC_WINO_TILES - 1) / FC_WINO_TILES;
    g.img = (long)g.Hp * g.Wp * g.Cs;
    g.upack = 36 * FC_WINO_AL(GEMM_PACKED_B_SIZE(K, g.Cs));
    g.ws_layout = FC_WINO_AL((long)N * g.img);
    /* per task: V, M (one block of tiles per point, 16 elements apart from a
     * multiple of 4 KiB so that the 36 stores of a tile do not share cache
     * sets), row offsets, depth offsets, GEMM workspace */
    g.vs = FC_WINO_AL((long)FC_WINO_TILES * g.Cs) + 16;
    g.ms = FC_WINO_AL((long)FC_WINO_TILES * g.Ks) + 16;
    g.v_off = 0;
    g.m_off = FC_WINO_AL(36 * g.vs);
    g.offs_off = g.m_off + FC_WINO_AL(36 * g.ms);
    g.gws_off = g.offs_off + FC_WINO_AL((FC_WINO_TILES + 16 + g.Cs) * (long)(sizeof(long) / sizeof(T) + 1));
    g.per = g.gws_off + FC_WINO_AL(GEMM_WS(FC_WINO_TILES, K, g.Cs, 1));
    (void)nthreads;
    return g;
}

size_t FN(wino43_ws)(int N, int C, int K, int P, int Q, int nthreads)
{
    if (nthreads < 1) nthreads = 1;
    const FN(wino_geom) g = FN(wino_plan)(N, C, K, P, Q, nthreads);
    return (size_t)(FC_WINO_AL(36L * g.Cs * K) + g.upack + g.ws_layout + (long)nthreads * g.per);
}

int FN(wino43)(const T *x, const T *w, const T *bias, T *y, int N, int C, int H, int W, int K,
               int P, int Q, int ph, int pw, int act, double slope, int nthreads, T *ws)
{
    if (nthreads < 1) nthreads = 1;
    const FN(wino_geom) g = FN(wino_plan)(N, C, K, P, Q, nthreads);
    const long CK = (long)g.Cs * K;
    T *U = ws;                                          /* 36 x Cs x K */
    T *Upack = U + FC_WINO_AL(36 * CK);
    T *xt = Upack + g.upack;
    T *task_ws = xt + g.ws_layout;
    const long ustride = FC_WINO_AL(GEMM_PACKED_B_SIZE(K, g.Cs));
    int rc = 0;
#if FC_OPENMP
#pragma omp parallel num_threads(nthreads) if (nthreads > 1) reduction(| : rc)
#endif
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nth = omp_get_num_threads();
#endif
        unsigned fpmode = fc_fpmode_enter();
        /* transformed weights, packed per point; channels-last copies of the input */
        FN(wino_weights)(w, K, C, g.Cs, (int)((long)tid * K / nth), (int)((long)(tid + 1) * K / nth), U);
#if FC_OPENMP
#pragma omp barrier
#endif
        for (int e = tid; e < 36; e += nth) {
            fc_view B;
            memset(&B, 0, sizeof(B));
            B.kind = FC_VIEW_DENSE;
            B.p = U + e * CK;
            B.rs = K;
            B.cs = 1;
            GEMM_PACK_B(K, g.Cs, &B, Upack + e * ustride);
        }
        const long nrows = (long)N * g.Hp;
        FN(wino_layout)(x, nrows * tid / nth, nrows * (tid + 1) / nth, C, H, W, g.Cs, g.Hp, g.Wp, ph,
                        pw, xt);
#if FC_OPENMP
#pragma omp barrier
#endif
        T *V = task_ws + (long)tid * g.per + g.v_off;
        T *M = task_ws + (long)tid * g.per + g.m_off;
        long *aoff = (long *)(task_ws + (long)tid * g.per + g.offs_off);
        long *doff = aoff + FC_WINO_TILES + 16;
        T *gws = task_ws + (long)tid * g.per + g.gws_off;
        for (int i = 0; i < FC_WINO_TILES + 16; i++) aoff[i] = (long)(i < FC_WINO_TILES ? i : 0) * g.Cs;
        for (int c = 0; c < g.Cs; c++) doff[c] = c;
        const int tpi = g.th * g.tw;                   /* tiles an image */
#if FC_OPENMP
#pragma omp for schedule(static)
#endif
        for (int bi = 0; bi < g.nblocks; bi++) {
            const int t0 = bi * FC_WINO_TILES;
            const int nt = g.ntiles - t0 < FC_WINO_TILES ? g.ntiles - t0 : FC_WINO_TILES;
            /* transformed tiles, image by image */
            for (int t = t0; t < t0 + nt;) {
                const int n = t / tpi, ti = t % tpi;
                const int cnt = tpi - ti < t0 + nt - t ? tpi - ti : t0 + nt - t;
                FN(wino_in)(xt + (long)n * g.img, g.Wp, g.Cs, g.tw, ti, cnt, V + (long)(t - t0) * g.Cs,
                            g.vs);
                t += cnt;
            }
            for (int e = 0; e < 36; e++) {
                fc_view A, B;
                memset(&A, 0, sizeof(A));
                memset(&B, 0, sizeof(B));
                A.kind = FC_VIEW_GATHER;
                A.p = V + (long)e * g.vs;
                A.offs = aoff;
                A.doffs = doff;
                B.kind = FC_VIEW_PACKED;
                B.p = Upack + e * ustride;
                rc |= GEMM(nt, K, g.Cs, (T)1, &A, &B, (T)0, M + (long)e * g.ms, g.Ks, NULL, 1, gws);
            }
            for (int t = t0; t < t0 + nt;) {
                const int n = t / tpi, ti = t % tpi;
                const int cnt = tpi - ti < t0 + nt - t ? tpi - ti : t0 + nt - t;
                FN(wino_out)(M + (long)(t - t0) * g.Ks, g.ms, g.Ks, K, g.tw, ti, cnt,
                             y + (long)n * K * P * Q, P, Q, bias, act, (T)slope);
                t += cnt;
            }
        }
        fc_fpmode_leave(fpmode);
    }
    return rc;
}

/* ---------------------------------------------------------------------------
 * Weight gradient: the same transform read backwards. With Z = A dy A^T for
 * the 4 x 4 block of the output gradient over each tile and V = B^T d B as in
 * the forward, dW[k][c] = G^T [sum over tiles of Z_k . V_c] G: 36 GEMMs
 * S_e (C x K) = V_e^T (C x tiles) . Z_e (tiles x K), summed over chunks of
 * blocks of tiles (a fixed number, by problem size) in a fixed order. */

/* out[e] = sum_a A[e][a] in[a] for e < 6, a < 4 (A = (A^T)^T). */
static inline __attribute__((always_inline)) void
FN(wino_a16)(const T *restrict in, long is, T *restrict out, long os)
{
    for (int l = 0; l < FC_WINO_L; l++) {
        const T d0 = in[l], d1 = in[is + l], d2 = in[2 * is + l], d3 = in[3 * is + l];
        const T p02 = d0 + d2, p13 = d1 + d3, q02 = d0 + 4 * d2, q13 = 2 * d1 + 8 * d3;
        out[l] = d0;
        out[os + l] = p02 + p13;
        out[2 * os + l] = p02 - p13;
        out[3 * os + l] = q02 + q13;
        out[4 * os + l] = q02 - q13;
        out[5 * os + l] = d3;
    }
}

/* Z_e[t][k] for the tiles t0 .. t0 + nt of one image's channels-last output
 * gradient dyi (rows of Wq pixels of Ks channels). */
static void FN(wino_dy)(const T *dyi, int Wq, int Ks, int tw, int t0, int nt, T *Z, long zs)
{
    T r[24 * FC_WINO_L] __attribute__((aligned(64)));
    T d[36 * FC_WINO_L] __attribute__((aligned(64)));
    for (int t = 0; t < nt; t++) {
        const int I = (t0 + t) / tw, J = (t0 + t) % tw;
        for (int k0 = 0; k0 < Ks; k0 += FC_WINO_L) {
            const T *src = dyi + ((long)(4 * I) * Wq + 4 * J) * Ks + k0;
            /* A down the columns: r[e_row][j] */
            for (int j = 0; j < 4; j++)
                FN(wino_a16)(src + (long)j * Ks, (long)Wq * Ks, r + j * FC_WINO_L, 4 * FC_WINO_L);
            /* A along the rows: d[e_row][e_col] */
            for (int er = 0; er < 6; er++)
                FN(wino_a16)(r + er * 4 * FC_WINO_L, FC_WINO_L, d + er * 6 * FC_WINO_L, FC_WINO_L);
            for (int e = 0; e < 36; e++) {
                T *dst = Z + e * zs + (long)t * Ks + k0;
                for (int l = 0; l < FC_WINO_L; l++) dst[l] = d[e * FC_WINO_L + l];
            }
        }
    }
}

/* dW[k][c] = G^T S[.][c][k] G (6 x 6 -> 3 x 3) for the output channels k0 .. k1. */
static void FN(wino_wout)(const T *S, int C, int K, int k0, int k1, T *dw)
{
    const long CK = (long)C * K;
    for (int k = k0; k < k1; k++)
        for (int c = 0; c < C; c++) {
            T m[6][6], h[6][3];
            for (int e = 0; e < 36; e++) m[e / 6][e % 6] = S[e * CK + (long)c * K + k];
            for (int r = 0; r < 6; r++) {   /* m G */
                const T a = m[r][0], b = m[r][1], d = m[r][2], e3 = m[r][3], e4 = m[r][4], f = m[r][5];
                h[r][0] = a / 4 - (b + d) / 6 + (e3 + e4) / 24;
                h[r][1] = (d - b) / 6 + (e3 - e4) / 12;
                h[r][2] = -(b + d) / 6 + (e3 + e4) / 6 + f;
            }
            T *g = dw + ((long)k * C + c) * 9;
            for (int s = 0; s < 3; s++) {   /* G^T (m G) */
                const T a = h[0][s], b = h[1][s], d = h[2][s], e3 = h[3][s], e4 = h[4][s], f = h[5][s];
                g[s] = a / 4 - (b + d) / 6 + (e3 + e4) / 24;
                g[3 + s] = (d - b) / 6 + (e3 - e4) / 12;
                g[6 + s] = -(b + d) / 6 + (e3 + e4) / 6 + f;
            }
        }
}

typedef struct {
    FN(wino_geom) f;                           /* the forward's geometry (input side) */
    int Hq, Wq, nchunks;
    long dimg, dy_layout, partials, per, z_off, gws_off, zs;
} FN(wino_wgeom);

static FN(wino_wgeom) FN(wino_wplan)(int N, int C, int K, int P, int Q)
{
    FN(wino_wgeom) g;
    g.f = FN(wino_plan)(N, C, K, P, Q, 1);
    g.Hq = 4 * g.f.th;
    g.Wq = 4 * g.f.tw;
    g.nchunks = g.f.nblocks < 8 ? g.f.nblocks : 8;
    g.dimg = (long)g.Hq * g.Wq * g.f.Ks;
    g.dy_layout = FC_WINO_AL((long)N * g.dimg);
    g.partials = FC_WINO_AL((long)g.nchunks * 36 * C * K);
    g.zs = FC_WINO_AL((long)FC_WINO_TILES * g.f.Ks) + 16;
    g.z_off = FC_WINO_AL(36 * g.f.vs);
    g.gws_off = g.z_off + FC_WINO_AL(36 * g.zs);
    g.per = g.gws_off + FC_WINO_AL(GEMM_WS(C, K, FC_WINO_TILES, 1));
    return g;
}

size_t FN(wino43_wgrad_ws)(int N, int C, int K, int P, int Q, int nthreads)
{
    if (nthreads < 1) nthreads = 1;
    const FN(wino_wgeom) g = FN(wino_wplan)(N, C, K, P, Q);
    return (size_t)(g.f.ws_layout + g.dy_layout + g.partials + (long)nthreads * g.per);
}

int FN(wino43_wgrad)(const T *x, const T *dy, T *dw, int N, int C, int H, int W, int K, int P,
                     int Q, int ph, int pw, int nthreads, T *ws)
{
    if (nthreads < 1) nthreads = 1;
    const FN(wino_wgeom) g = FN(wino_wplan)(N, C, K, P, Q);
    const FN(wino_geom) *f = &g.f;
    const long CK = (long)C * K;
    T *xt = ws;
    T *dyt = xt + f->ws_layout;
    T *part = dyt + g.dy_layout;
    T *task_ws = part + g.partials;
    int rc = 0;
#if FC_OPENMP
#pragma omp parallel num_threads(nthreads) if (nthreads > 1) reduction(| : rc)
#endif
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nth = omp_get_num_threads();
#endif
        unsigned fpmode = fc_fpmode_enter();
        /* channels-last copies of the input (padded) and of the output gradient */
        const long nx = (long)N * f->Hp, nd = (long)N * g.Hq;
        FN(wino_layout)(x, nx * tid / nth, nx * (tid + 1) / nth, C, H, W, f->Cs, f->Hp, f->Wp, ph, pw, xt);
        FN(wino_layout)(dy, nd * tid / nth, nd * (tid + 1) / nth, K, P, Q, f->Ks, g.Hq, g.Wq, 0, 0, dyt);
#if FC_OPENMP
#pragma omp barrier
#endif
        T *V = task_ws + (long)tid * g.per;
        T *Z = V + g.z_off;
        T *gws = V + g.gws_off;
        const int tpi = f->th * f->tw;
#if FC_OPENMP
#pragma omp for schedule(static)
#endif
        for (int ch = 0; ch < g.nchunks; ch++) {
            const int b0 = (int)((long)ch * f->nblocks / g.nchunks);
            const int b1 = (int)((long)(ch + 1) * f->nblocks / g.nchunks);
            T *S = part + (long)ch * 36 * CK;
            for (int bi = b0; bi < b1; bi++) {
                const int t0 = bi * FC_WINO_TILES;
                const int nt = f->ntiles - t0 < FC_WINO_TILES ? f->ntiles - t0 : FC_WINO_TILES;
                for (int t = t0; t < t0 + nt;) {
                    const int n = t / tpi, ti = t % tpi;
                    const int cnt = tpi - ti < t0 + nt - t ? tpi - ti : t0 + nt - t;
                    FN(wino_in)(xt + (long)n * f->img, f->Wp, f->Cs, f->tw, ti, cnt,
                                V + (long)(t - t0) * f->Cs, f->vs);
                    FN(wino_dy)(dyt + (long)n * g.dimg, g.Wq, f->Ks, f->tw, ti, cnt,
                                Z + (long)(t - t0) * f->Ks, g.zs);
                    t += cnt;
                }
                for (int e = 0; e < 36; e++) {
                    fc_view A, B;
                    memset(&A, 0, sizeof(A));
                    memset(&B, 0, sizeof(B));
                    A.kind = FC_VIEW_DENSE;        /* V_e^T: (c, t) at V_e[t][c] */
                    A.p = V + (long)e * f->vs;
                    A.rs = 1;
                    A.cs = f->Cs;
                    B.kind = FC_VIEW_DENSE;        /* Z_e: (t, k) */
                    B.p = Z + (long)e * g.zs;
                    B.rs = f->Ks;
                    B.cs = 1;
                    rc |= GEMM(C, K, nt, (T)1, &A, &B, bi == b0 ? (T)0 : (T)1, S + e * CK, K, NULL, 1, gws);
                }
            }
        }
        /* chunks summed in order into the first, then the output transform */
        {
            const long total = 36 * CK;
            const long lo = total * tid / nth, hi = total * (tid + 1) / nth;
            for (int ch = 1; ch < g.nchunks; ch++) {
                const T *src = part + (long)ch * total;
                for (long i = lo; i < hi; i++) part[i] += src[i];
            }
        }
#if FC_OPENMP
#pragma omp barrier
#endif
        FN(wino_wout)(part, C, K, (int)((long)tid * K / nth), (int)((long)(tid + 1) * K / nth), dw);
        fc_fpmode_leave(fpmode);
    }
    return rc;
}
