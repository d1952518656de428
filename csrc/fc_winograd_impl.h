/* Winograd F(mxm, rxr) convolution (stride 1, dilation 1) for (m, r) =
 * (WM, WR) = (4, 3), (4, 2) or (7, 2), instantiated in each micro-kernel file
 * so that its transforms are compiled for that file's instruction set (T =
 * element type, FN(name) = name with the ISA and type suffix; GEMM and
 * friends the engine's entry points for T). Functions are named WN(name):
 * name43, name42 or name72.
 *
 * Every m x m block of outputs is A^T [(G g G^T) . (B^T d B)] A for its
 * WA x WA input tile d, WA = m + r - 1 (Lavin and Gray, 2016; interpolation
 * points 0, 1, -1, 2, -2 and infinity for F(4, 3); 0, 1, -1, 2 and infinity
 * for F(4, 2); 0, 1, -1, 2, -2, 1/2, -1/2 and infinity for F(7, 2)): WA^2
 * products per input and output channel instead of m^2 r^2. The products
 * are WA^2 GEMMs, one per point e of the WA x WA transform:
 * M_e (tiles x K) = V_e (tiles x C) . U_e^T (C x K), V_e read in place, U_e
 * packed once. A 4x4 convolution of stride 2 runs as an r = 2 transform of
 * its stride-1 equivalent over the image's phases (see fastcnn.functional).
 *
 * The input is first laid out channels-last (a zero-padded copy of each
 * image, rows of pixels of C channels rounded up to a multiple of 16) so
 * that the transforms run on vectors of 16 consecutive channels. Tiles come
 * in blocks of FC_WINO_TILES fixed by the problem size; a block is one task
 * (shared out guided: long runs of consecutive blocks first; a few blocks a
 * thread, as many for each, in fixed runs),
 * or, where that would load the threads unevenly, its tiles and its points
 * are shared among them. Each tile's and point's arithmetic is the same
 * either way, so results do not depend on the thread count. The transformed
 * weights can be kept by the caller between calls (upack).
 *
 * The weight gradient reads the transform backwards: with Z = A dy A^T for
 * the m x m block of the output gradient over each tile and V = B^T d B,
 * dW[k][c] = G^T [sum over tiles of Z_k . V_c] G: WA^2 GEMMs S_e (C x K) =
 * V_e^T (C x tiles) . Z_e (tiles x K), summed over a fixed number of chunks
 * of equal blocks of tiles in a fixed order, or, where there are too few
 * blocks for the threads, over the blocks in order, the points shared out
 * (a point a task). A few blocks whose transforms fit FC_WINO_HALVES_BYTES
 * together are made as two blocks of half the tiles instead: two products a
 * point and one partial sum, and on two threads each thread's tiles go end to
 * end through its own transforms and products.
 * F(7x7, 2x2) makes a row of points at a time instead (the rows shared out
 * where the points are): each S_e, made into the thread's buffer, is at once
 * transformed along the row and added into the row's r sums, so that only
 * WA r of the WA^2 products are stored (each row's sums over the blocks and
 * points in order, for any thread count). */

#ifndef FC_WINO_TILES
#define FC_WINO_TILES 64
#define FC_WINO_MIN_TILES 8                    /* the smallest block of shared-out tiles */
#define FC_WINO_KSPLIT_BYTES (256 << 10)       /* the most transformed input a thread makes alone */
#define FC_WINO_HALVES_MAX 8                   /* weight gradient: the fewest blocks kept as they are */
#define FC_WINO_HALVES_BYTES (8L << 20)        /* ... and the most transformed data made as two halves */
#define FC_WINO_STREAM_BYTES (2L << 20)        /* transformed weights stored past the caches above this */
#if defined(__AVX__)                           /* ... by the instruction set's streaming stores */
#define FC_WINO_CAN_STREAM 1
#else
#define FC_WINO_CAN_STREAM 0
#endif
#define FC_WINO_L 16                           /* channels a transform vector */
#define FC_WINO_AL(n) (((long)(n) + 15) & ~15L)
/* elements from one point's packed transformed weights to the next: 64
 * bytes past a multiple of 64, so that the stores of one kernel's points do
 * not all fall into one cache set */
#define FC_WINO_UPS(K, Cs) (FC_WINO_AL(GEMM_PACKED_B_SIZE(K, Cs)) + 16)
#endif

#if WR == 3
#define WA 6
#define WN(name) FN(name##43)
#elif WM == 4
#define WA 5
#define WN(name) FN(name##42)
#else
#define WA 8
#define WN(name) FN(name##72)
#endif
#define WP (WA * WA)                           /* points of the transform */

/* out[e] = sum_c BT[e][c] in[c] for e, c < WA (the input transform along one
 * axis), over FC_WINO_L lanes; in[c] at in + c * is, out[e] at out + e * os. */
static inline __attribute__((always_inline)) void
WN(wino_bt16)(const T *restrict in, long is, T *restrict out, long os)
{
    for (int l = 0; l < FC_WINO_L; l++) {
#if WA == 8
        const T d0 = in[l], d1 = in[is + l], d2 = in[2 * is + l], d3 = in[3 * is + l];
        const T d4 = in[4 * is + l], d5 = in[5 * is + l], d6 = in[6 * is + l], d7 = in[7 * is + l];
        const T a1 = d2 + d6 - (T)4.25 * d4, b1 = d1 + d5 - (T)4.25 * d3;
        const T a3 = (T)0.25 * d2 - (T)1.25 * d4 + d6, b3 = (T)0.5 * d1 - (T)2.5 * d3 + 2 * d5;
        const T a5 = 4 * d2 - 5 * d4 + d6, b5 = 2 * d1 - (T)2.5 * d3 + (T)0.5 * d5;
        out[l] = d0 - d6 + (T)5.25 * (d4 - d2);
        out[os + l] = a1 + b1;
        out[2 * os + l] = a1 - b1;
        out[3 * os + l] = a3 + b3;
        out[4 * os + l] = a3 - b3;
        out[5 * os + l] = a5 + b5;
        out[6 * os + l] = a5 - b5;
        out[7 * os + l] = d7 - d1 + (T)5.25 * (d3 - d5);
#elif WR == 3
        const T a = in[l], b = in[is + l], c = in[2 * is + l], d = in[3 * is + l];
        const T e = in[4 * is + l], f = in[5 * is + l];
        const T e4c = e - 4 * c, d4b = d - 4 * b, e_c = e - c, db2 = 2 * (d - b);
        out[l] = 4 * a - 5 * c + e;
        out[os + l] = e4c + d4b;
        out[2 * os + l] = e4c - d4b;
        out[3 * os + l] = e_c + db2;
        out[4 * os + l] = e_c - db2;
        out[5 * os + l] = 4 * b - 5 * d + f;
#else
        const T a = in[l], b = in[is + l], c = in[2 * is + l], d = in[3 * is + l];
        const T e = in[4 * is + l];
        out[l] = 2 * (a - c) - b + d;
        out[os + l] = d - 2 * b - c;
        out[2 * os + l] = 2 * b - 3 * c + d;
        out[3 * os + l] = d - b;
        out[4 * os + l] = 2 * (b - d) - c + e;
#endif
    }
}

/* out[a] = sum_e AT[a][e] in[e] for a < WM, e < WA (the output transform). */
static inline __attribute__((always_inline)) void
WN(wino_at16)(const T *restrict in, long is, T *restrict out, long os)
{
    for (int l = 0; l < FC_WINO_L; l++) {
#if WA == 8
        const T m1 = in[is + l], m2 = in[2 * is + l], m3 = in[3 * is + l], m4 = in[4 * is + l];
        const T m5 = in[5 * is + l], m6 = in[6 * is + l];
        const T p1 = m1 + m2, q1 = m1 - m2, p2 = m3 + m4, q2 = m3 - m4, p3 = m5 + m6, q3 = m5 - m6;
        out[l] = in[l] + p1 + p2 + p3;
        out[os + l] = q1 + 2 * q2 + (T)0.5 * q3;
        out[2 * os + l] = p1 + 4 * p2 + (T)0.25 * p3;
        out[3 * os + l] = q1 + 8 * q2 + (T)0.125 * q3;
        out[4 * os + l] = p1 + 16 * p2 + (T)0.0625 * p3;
        out[5 * os + l] = q1 + 32 * q2 + (T)0.03125 * q3;
        out[6 * os + l] = p1 + 64 * p2 + (T)0.015625 * p3 + in[7 * is + l];
#elif WR == 3
        const T m1 = in[is + l], m2 = in[2 * is + l], m3 = in[3 * is + l], m4 = in[4 * is + l];
        const T p12 = m1 + m2, q12 = m1 - m2;
        const T p34 = m3 + m4, q34 = m3 - m4;
        out[l] = in[l] + p12 + p34;
        out[os + l] = q12 + 2 * q34;
        out[2 * os + l] = p12 + 4 * p34;
        out[3 * os + l] = q12 + 8 * q34 + in[5 * is + l];
#else
        const T m1 = in[is + l], m2 = in[2 * is + l], m3 = in[3 * is + l], m4 = in[4 * is + l];
        const T p12 = m1 + m2, q12 = m1 - m2;
        out[l] = in[l] + p12 + m3;
        out[os + l] = q12 + 2 * m3;
        out[2 * os + l] = p12 + 4 * m3;
        out[3 * os + l] = q12 + 8 * m3 + m4;
#endif
    }
}

/* out[e] = sum_a A[e][a] in[a] for e < WA, a < WM (A = (A^T)^T: the weight
 * gradient's transform of an output-gradient block). */
static inline __attribute__((always_inline)) void
WN(wino_a16)(const T *restrict in, long is, T *restrict out, long os)
{
    for (int l = 0; l < FC_WINO_L; l++) {
#if WA == 8
        const T d0 = in[l], d1 = in[is + l], d2 = in[2 * is + l], d3 = in[3 * is + l];
        const T d4 = in[4 * is + l], d5 = in[5 * is + l], d6 = in[6 * is + l];
        const T e1 = d0 + d2 + d4 + d6, o1 = d1 + d3 + d5;
        const T e2 = d0 + 4 * d2 + 16 * d4 + 64 * d6, o2 = 2 * d1 + 8 * d3 + 32 * d5;
        const T e3 = d0 + (T)0.25 * d2 + (T)0.0625 * d4 + (T)0.015625 * d6;
        const T o3 = (T)0.5 * d1 + (T)0.125 * d3 + (T)0.03125 * d5;
        out[l] = d0;
        out[os + l] = e1 + o1;
        out[2 * os + l] = e1 - o1;
        out[3 * os + l] = e2 + o2;
        out[4 * os + l] = e2 - o2;
        out[5 * os + l] = e3 + o3;
        out[6 * os + l] = e3 - o3;
        out[7 * os + l] = d6;
#else
        const T d0 = in[l], d1 = in[is + l], d2 = in[2 * is + l], d3 = in[3 * is + l];
        const T p02 = d0 + d2, p13 = d1 + d3;
        out[l] = d0;
        out[os + l] = p02 + p13;
        out[2 * os + l] = p02 - p13;
#if WR == 3
        const T q02 = d0 + 4 * d2, q13 = 2 * d1 + 8 * d3;
        out[3 * os + l] = q02 + q13;
        out[4 * os + l] = q02 - q13;
        out[5 * os + l] = d3;
#else
        out[3 * os + l] = d0 + 2 * d1 + 4 * d2 + 8 * d3;
        out[4 * os + l] = d3;
#endif
#endif
    }
}

/* Along one axis of a kernel: out[e] = sum_k G[e][k] in[k] (e < WA, k < r),
 * over FC_WINO_L lanes (kernels). */
static inline __attribute__((always_inline)) void
WN(wino_g16)(const T *restrict in, long is, T *restrict out, long os)
{
    for (int l = 0; l < FC_WINO_L; l++) {
#if WA == 8
        const T a = in[l], b = in[is + l];
        const T a90 = a * (T)(1.0 / 90), b45 = b * (T)(1.0 / 45);
        const T a32 = a * (T)(32.0 / 45), b16 = b * (T)(16.0 / 45);
        out[l] = a;
        out[os + l] = (a + b) * (T)(-2.0 / 9);
        out[2 * os + l] = (b - a) * (T)(2.0 / 9);
        out[3 * os + l] = a90 + b45;
        out[4 * os + l] = a90 - b45;
        out[5 * os + l] = a32 + b16;
        out[6 * os + l] = a32 - b16;
        out[7 * os + l] = b;
#elif WR == 3
        const T a = in[l], b = in[is + l], d = in[2 * is + l];
        out[l] = a / 4;
        out[os + l] = -(a + b + d) / 6;
        out[2 * os + l] = -(a - b + d) / 6;
        out[3 * os + l] = a / 24 + b / 12 + d / 6;
        out[4 * os + l] = a / 24 - b / 12 + d / 6;
        out[5 * os + l] = d;
#else
        const T a = in[l], b = in[is + l];
        out[l] = a / 2;
        out[os + l] = -(a + b) / 2;
        out[2 * os + l] = (b - a) / 6;
        out[3 * os + l] = a / 6 + b / 3;
        out[4 * os + l] = b;
#endif
    }
}

/* Along one axis of a transformed kernel: out[k] = sum_e G[e][k] in[e], over
 * FC_WINO_L lanes. */
static inline __attribute__((always_inline)) void
WN(wino_gt16)(const T *restrict in, long is, T *restrict out, long os)
{
    for (int l = 0; l < FC_WINO_L; l++) {
#if WA == 8
        const T i0 = in[l], i1 = in[is + l], i2 = in[2 * is + l], i3 = in[3 * is + l];
        const T i4 = in[4 * is + l], i5 = in[5 * is + l], i6 = in[6 * is + l], i7 = in[7 * is + l];
        out[l] = i0 - (i1 + i2) * (T)(2.0 / 9) + (i3 + i4) * (T)(1.0 / 90) + (i5 + i6) * (T)(32.0 / 45);
        out[os + l] = (i2 - i1) * (T)(2.0 / 9) + (i3 - i4) * (T)(1.0 / 45) + (i5 - i6) * (T)(16.0 / 45) + i7;
#elif WR == 3
        const T a = in[l], b = in[is + l], d = in[2 * is + l], e3 = in[3 * is + l], e4 = in[4 * is + l];
        const T f = in[5 * is + l];
        out[l] = a / 4 - (b + d) / 6 + (e3 + e4) / 24;
        out[os + l] = (d - b) / 6 + (e3 - e4) / 12;
        out[2 * os + l] = -(b + d) / 6 + (e3 + e4) / 6 + f;
#else
        const T a = in[l], b = in[is + l], d = in[2 * is + l], e3 = in[3 * is + l], f = in[4 * is + l];
        out[l] = (a - b) / 2 + (e3 - d) / 6;
        out[os + l] = (d - b) / 6 + e3 / 3 - b / 3 + f;
#endif
    }
}

#if FC_WINO_CAN_STREAM
/* u[e][0 .. FC_WINO_L) into dst + e ustride (dst aligned to 64 bytes) for every
 * point e, by stores that bypass the caches: transformed weights much larger
 * than a core's cache go out in WP interleaved streams, which ordinary stores
 * first read back from memory. */
static inline void WN(wino_stream_points)(T *dst, long ustride, const T *u)
{
    for (int e = 0; e < WP; e++) {
        T *d = dst + e * ustride;
        const T *v = u + e * FC_WINO_L;
        if (sizeof(T) == 4)
            for (int l = 0; l < FC_WINO_L; l += 8)
                _mm256_stream_ps((float *)d + l, _mm256_load_ps((const float *)v + l));
        else
            for (int l = 0; l < FC_WINO_L; l += 4)
                _mm256_stream_pd((double *)d + l, _mm256_load_pd((const double *)v + l));
    }
}
#endif

/* U_e^T (Cs x K, zero rows for c >= C) for every point e, stored straight as
 * the GEMM packs B (panels of nr columns k, depth blocks of kcb rows c; see
 * fc_gemm_pack_b), points ustride apart: u[e][c][k] = (G g G^T)[e] with
 * g = w[k][c] (r x r), for the output channels k0 .. k1 (k0 a multiple of
 * FC_WINO_L and of nr), FC_WINO_L channels k at a time; the one that ends at
 * K also zeroes the last panel's columns past K. */
static void WN(wino_weights)(const T *w, int K, int C, int Cs, int k0, int k1, T *Up, long ustride, int nr,
                             int kcb, int stream)
{
    const long npad = (long)(K + nr - 1) / nr * nr;
    /* the kernels of FC_WINO_L output channels (lanes) for FC_WINO_L input
     * channels, read row by row and transposed: gb[c][j][l] = w[kb + l][c0 + c][j] */
    T gb[FC_WINO_L * WR * WR * FC_WINO_L] __attribute__((aligned(64)));
    T t[WA * WR * FC_WINO_L] __attribute__((aligned(64)));   /* G g: t[e][s] */
    T u[WP * FC_WINO_L] __attribute__((aligned(64)));        /* (G g) G^T */
    const int kz = k1 == K ? (int)npad : k1;                  /* columns to write */
    for (int kb = k0; kb < kz; kb += FC_WINO_L) {
        const int kn = k1 - kb < FC_WINO_L ? (k1 > kb ? k1 - kb : 0) : FC_WINO_L;
        const int ln = kz - kb < FC_WINO_L ? kz - kb : FC_WINO_L;  /* lanes stored (zeros past kn) */
        for (int c = 0; c < Cs; c++) {
            const int cb = c % FC_WINO_L;
            if (c < C && kn > 0) {
                if (cb == 0) {
                    const int cn = C - c < FC_WINO_L ? C - c : FC_WINO_L;
                    if (kn < FC_WINO_L) memset(gb, 0, sizeof(gb));
                    TRANSPOSE(w + ((long)kb * C + c) * WR * WR, (long)C * WR * WR, gb, FC_WINO_L, kn,
                              cn * WR * WR);
                }
                const T *g = gb + cb * WR * WR * FC_WINO_L;
                for (int s = 0; s < WR; s++)
                    WN(wino_g16)(g + s * FC_WINO_L, WR * FC_WINO_L, t + s * FC_WINO_L, WR * FC_WINO_L);
                for (int e = 0; e < WA; e++)
                    WN(wino_g16)(t + e * WR * FC_WINO_L, FC_WINO_L, u + e * WA * FC_WINO_L, FC_WINO_L);
            } else {
                memset(u, 0, sizeof(u));
            }
            /* row c of the depth block that holds it; lanes in runs of one panel */
            const int pc = c / kcb * kcb, kc = Cs - pc < kcb ? Cs - pc : kcb;
            for (int l0 = 0; l0 < ln;) {
                const int k = kb + l0, run = nr - k % nr < ln - l0 ? nr - k % nr : ln - l0;
                T *dst = Up + (long)pc * npad + (long)(k / nr) * kc * nr + (long)(c - pc) * nr + k % nr;
#if FC_WINO_CAN_STREAM
                if (stream && run == FC_WINO_L) {
                    WN(wino_stream_points)(dst, ustride, u);
                } else
#endif
                if (run == FC_WINO_L) {
                    for (int e = 0; e < WP; e++)
                        for (int l = 0; l < FC_WINO_L; l++) dst[e * ustride + l] = u[e * FC_WINO_L + l0 + l];
                } else {
                    for (int e = 0; e < WP; e++)
                        for (int l = 0; l < run; l++) dst[e * ustride + l] = u[e * FC_WINO_L + l0 + l];
                }
                l0 += run;
            }
        }
    }
#if FC_WINO_CAN_STREAM
    if (stream) _mm_sfence();
#else
    (void)stream;
#endif
}


/* V_e[t][c] of the tiles t0 .. t0 + nt of the image whose channels-last copy
 * is xi (tiles tw a row). */
static void WN(wino_in)(const T *xi, int Wp, int Cs, int tw, int t0, int nt, T *V, long vs)
{
    T d[WP * FC_WINO_L] __attribute__((aligned(64)));
    T r[WP * FC_WINO_L] __attribute__((aligned(64)));
    for (int t = 0; t < nt; t++) {
        const int I = (t0 + t) / tw, J = (t0 + t) % tw;
        for (int c0 = 0; c0 < Cs; c0 += FC_WINO_L) {
            const T *src = xi + ((long)(WM * I) * Wp + WM * J) * Cs + c0;
            /* B^T down the columns of the tile: r[e_row][j] */
            for (int j = 0; j < WA; j++)
                WN(wino_bt16)(src + (long)j * Cs, (long)Wp * Cs, r + j * FC_WINO_L, WA * FC_WINO_L);
            /* B^T along its rows: d[e_row][e_col] */
            for (int er = 0; er < WA; er++)
                WN(wino_bt16)(r + er * WA * FC_WINO_L, FC_WINO_L, d + er * WA * FC_WINO_L, FC_WINO_L);
            for (int e = 0; e < WP; e++) {
                T *dst = V + e * vs + (long)t * Cs + c0;
                for (int l = 0; l < FC_WINO_L; l++) dst[l] = d[e * FC_WINO_L + l];
            }
        }
    }
}

/* 2 x 2 windows of the activated 4 x 4 block o[b][a] of FC_WINO_L lanes: the
 * maximum of each, its four pixels taken row by row, a NaN kept as max
 * pooling keeps it, and the argmax's place in the window; stored for each
 * lane l into yk = y + l * plane and cy + l * plane (rows of q pixels): rows
 * x cols pooled pixels (as the direct kernel stores them with codes). */
#if WM == 4
static inline void WN(wino_pool)(const T *o, int kn, T *y, unsigned char *cy, long plane, int q, int rows,
                                 int cols)
{
    T pm[4 * FC_WINO_L] __attribute__((aligned(64)));
    unsigned char pc[4 * FC_WINO_L];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            const T *w0 = o + (8 * i + 2 * j) * FC_WINO_L, *w1 = w0 + 4 * FC_WINO_L;
            T *restrict m = pm + (2 * i + j) * FC_WINO_L;
            unsigned char *restrict k = pc + (2 * i + j) * FC_WINO_L;
            for (int l = 0; l < FC_WINO_L; l++) {
                const T in[4] = {w0[l], w0[FC_WINO_L + l], w1[l], w1[FC_WINO_L + l]};
                T v = in[0];
                int kk = 0;
                for (int p = 1; p < 4; p++) {
                    const int c = in[p] > v || in[p] != in[p];
                    v = c ? in[p] : v;
                    kk = c ? p : kk;
                }
                m[l] = v;
                k[l] = (unsigned char)kk;
            }
        }
    for (int l = 0; l < kn; l++)
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) {
                y[l * plane + (long)i * q + j] = pm[(2 * i + j) * FC_WINO_L + l];
                cy[l * plane + (long)i * q + j] = pc[(2 * i + j) * FC_WINO_L + l];
            }
}

/* As wino_pool without the codes, on the block o before its bias (bk, or
 * none) and activation, which are then applied to the maxima alone: where
 * both are non-decreasing (a leaky slope not negative) and keep a NaN, each
 * window's value is the maximum of its activated pixels. */
static inline void WN(wino_pool_act)(const T *o, int kn, const T *bk, int act, T slope, T *y, long plane, int q,
                                     int rows, int cols)
{
    T pm[4 * FC_WINO_L] __attribute__((aligned(64)));
    for (int w = 0; w < 4; w++) {
        const T *w0 = o + (8 * (w >> 1) + 2 * (w & 1)) * FC_WINO_L, *w1 = w0 + 4 * FC_WINO_L;
        T *restrict m = pm + w * FC_WINO_L;
        /* the pixels in turn, the larger one or a NaN replacing the maximum */
        for (int l = 0; l < FC_WINO_L; l++) {
            const T a = w0[l], b = w0[FC_WINO_L + l], c = w1[l], d = w1[FC_WINO_L + l];
            T v = b > a || b != b ? b : a;
            v = c > v || c != c ? c : v;
            v = d > v || d != d ? d : v;
            if (bk) v += bk[l];
            m[l] = act == FC_ACT_RELU ? (v > 0 || v != v ? v : (T)0)
                 : act == FC_ACT_LEAKY ? (v > 0 ? v : v * slope) : v;
        }
    }
    if (rows == 2 && cols == 2)
        for (int l = 0; l < kn; l++) {
            T *yl = y + l * plane;
            yl[0] = pm[l];
            yl[1] = pm[FC_WINO_L + l];
            yl[q] = pm[2 * FC_WINO_L + l];
            yl[q + 1] = pm[3 * FC_WINO_L + l];
        }
    else
        for (int l = 0; l < kn; l++)
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++) y[l * plane + (long)i * q + j] = pm[(2 * i + j) * FC_WINO_L + l];
}

#endif

/* Output tiles t0 .. t0 + nt of image y (K planes of P x Q) from M_e[t][k],
 * plus the bias and the activation; with FC_POOL_2X2 in act (m = 4 only), y
 * holds the 2 x 2 max pooling (floor mode) of that output instead: K planes
 * of P/2 x Q/2. Only the channels kb .. ke (multiples of FC_WINO_L, ke <= Ks). */
static void WN(wino_out)(const T *M, long ms, int Ks, int K, int kb, int ke, int tw, int t0, int nt, T *y,
                         unsigned char *cy, int P, int Q, const T *bias, int act, T slope, const fc_phases *yout)
{
    T s[WA * WM * FC_WINO_L] __attribute__((aligned(64)));
    T o[WM * WM * FC_WINO_L] __attribute__((aligned(64)));
    T ot[WM * WM * FC_WINO_L] __attribute__((aligned(64)));
    const long PQ = (long)P * Q;
#if WM == 4
    const int pool = act & FC_POOL_2X2, P2 = P / 2, Q2 = Q / 2;
#endif
    act &= ~FC_POOL_2X2;
    for (int t = 0; t < nt; t++) {
        const int I = (t0 + t) / tw, J = (t0 + t) % tw;
        const int rows = P - WM * I < WM ? P - WM * I : WM, cols = Q - WM * J < WM ? Q - WM * J : WM;
#if WM == 4
        /* pooled: the tile's rows and columns of windows that floor mode keeps (a tile
         * of none is skipped), from poff in each plane */
        const int pr = P2 - 2 * I < 2 ? P2 - 2 * I : 2, pc = Q2 - 2 * J < 2 ? Q2 - 2 * J : 2;
        const long poff = (long)(2 * I) * Q2 + 2 * J;
        if (pool && (pr <= 0 || pc <= 0)) continue;
#endif
        for (int k0 = kb; k0 < ke; k0 += FC_WINO_L) {
            const T *src = M + (long)t * Ks + k0;
            /* A^T along the rows: s[e_row][a] */
            for (int er = 0; er < WA; er++)
                WN(wino_at16)(src + (long)(WA * er) * ms, ms, s + er * WM * FC_WINO_L, FC_WINO_L);
            /* A^T down the columns: o[b][a] */
            for (int a = 0; a < WM; a++)
                WN(wino_at16)(s + a * FC_WINO_L, WM * FC_WINO_L, o + a * FC_WINO_L, WM * FC_WINO_L);
            T bk[FC_WINO_L];
            if (bias && K - k0 >= FC_WINO_L)
                for (int l = 0; l < FC_WINO_L; l++) bk[l] = bias[k0 + l];
            else
                for (int l = 0; l < FC_WINO_L; l++) bk[l] = bias && k0 + l < K ? bias[k0 + l] : (T)0;
            const int kn = K - k0 < FC_WINO_L ? K - k0 : FC_WINO_L;
#if WM == 4
            if (pool && !cy && (act != FC_ACT_LEAKY || slope >= 0)) {
                /* (inference) the maxima, then their bias and activation */
                WN(wino_pool_act)(o, kn, bk, act, slope, y + (long)k0 * P2 * Q2 + poff, (long)P2 * Q2, Q2, pr, pc);
                continue;
            }
#endif
            /* bias and activation on all m^2 pixels x 16 channels, then a transpose:
             * ot[l][pixel], each channel's m rows of m contiguous */
            if (act == FC_ACT_RELU) {
                for (int q = 0; q < WM * WM; q++)
                    for (int l = 0; l < FC_WINO_L; l++) {
                        const T v = o[q * FC_WINO_L + l] + bk[l];
                        o[q * FC_WINO_L + l] = v > 0 || v != v ? v : (T)0;   /* a NaN stays */
                    }
            } else if (act == FC_ACT_LEAKY) {
                for (int q = 0; q < WM * WM; q++)
                    for (int l = 0; l < FC_WINO_L; l++) {
                        const T v = o[q * FC_WINO_L + l] + bk[l];
                        o[q * FC_WINO_L + l] = v > 0 ? v : v * slope;
                    }
            } else {
                for (int q = 0; q < WM * WM; q++)
                    for (int l = 0; l < FC_WINO_L; l++) o[q * FC_WINO_L + l] += bk[l];
            }
#if WM == 4
            if (pool) {
                const long off = (long)k0 * P2 * Q2 + poff;
                if (cy)
                    WN(wino_pool)(o, kn, y + off, cy + off, (long)P2 * Q2, Q2, pr, pc);
                else   /* (o activated) */
                    WN(wino_pool_act)(o, kn, NULL, FC_ACT_NONE, slope, y + off, (long)P2 * Q2, Q2, pr, pc);
                continue;
            }
#endif
            if (yout) {
                /* channel k is phase (a, b) of the image's channel c = k / (sh sw):
                 * pixel (i, j) of the tile goes to (i sh + a - ph, j sw + b - pw) */
                const int sh = yout->sh, sw = yout->sw, S2 = sh * sw, YH = yout->H, YW = yout->W;
                if (sh == 2 && sw == 2 && kn == FC_WINO_L) {
                    /* four channels of four phases: a tile row and a phase row are
                     * 2 m consecutive pixels of the image row, the phases b = 0, 1
                     * of a pixel adjacent lanes */
                    const int w0 = 2 * (WM * J) - yout->pw;
                    const int lo = w0 < 0 ? -w0 : 0, hi = w0 + 2 * cols > YW ? YW - w0 : 2 * cols;
                    for (int cl = 0; cl < FC_WINO_L / 4; cl++) {
                        T *yc = y + (long)(k0 / 4 + cl) * YH * YW;
                        for (int rr = 0; rr < rows; rr++)
                            for (int a = 0; a < 2; a++) {
                                const int h = (WM * I + rr) * 2 + a - yout->ph;
                                if (h < 0 || h >= YH) continue;
                                const T *src = o + (long)rr * WM * FC_WINO_L + cl * 4 + a * 2;
                                T line[2 * WM];
                                for (int q = 0; q < WM; q++) {
                                    line[2 * q] = src[q * FC_WINO_L];
                                    line[2 * q + 1] = src[q * FC_WINO_L + 1];
                                }
                                T *yr = yc + (long)h * YW + w0;
                                for (int u = lo; u < hi; u++) yr[u] = line[u];
                            }
                    }
                    continue;
                }
                for (int l = 0; l < kn; l++) {
                    const int c = (k0 + l) / S2, ab = (k0 + l) % S2, a = ab / sw, b = ab % sw;
                    T *yc = y + (long)c * YH * YW;
                    for (int rr = 0; rr < rows; rr++) {
                        const int h = (WM * I + rr) * sh + a - yout->ph;
                        if (h < 0 || h >= YH) continue;
                        for (int q = 0; q < cols; q++) {
                            const int wc = (WM * J + q) * sw + b - yout->pw;
                            if (wc >= 0 && wc < YW) yc[(long)h * YW + wc] = o[(rr * WM + q) * FC_WINO_L + l];
                        }
                    }
                }
                continue;
            }
            TRANSPOSE(o, FC_WINO_L, ot, WM * WM, WM * WM, FC_WINO_L);
            for (int l = 0; l < kn; l++) {
                T *yk = y + (long)(k0 + l) * PQ + (long)(WM * I) * Q + WM * J;
                const T *ol = ot + l * WM * WM;
                if (cols == WM) {
                    for (int b = 0; b < rows; b++)
                        for (int a = 0; a < WM; a++) yk[(long)b * Q + a] = ol[WM * b + a];
                } else {
                    for (int b = 0; b < rows; b++)
                        for (int a = 0; a < cols; a++) yk[(long)b * Q + a] = ol[WM * b + a];
                }
            }
        }
    }
}

/* Geometry shared by the workspace size and the call. */
typedef struct {
    int th, tw, Cs, Ks, Hp, Wp, ntiles, nblocks;
    int mr, one_kb;   /* the GEMM's rows a tile; whether the weights' depth is one block of it */
    long img, upack, ws_layout, per, v_off, m_off, offs_off, gws_off, vs, ms;
} WN(wino_geom);

static WN(wino_geom) WN(wino_plan)(int N, int C, int K, int P, int Q)
{
    WN(wino_geom) g;
    g.th = (P + WM - 1) / WM;
    g.tw = (Q + WM - 1) / WM;
    g.Cs = (C + FC_WINO_L - 1) / FC_WINO_L * FC_WINO_L;
    g.Ks = (K + FC_WINO_L - 1) / FC_WINO_L * FC_WINO_L;
    g.Hp = WM * g.th + WA - WM;
    g.Wp = WM * g.tw + WA - WM;
    g.ntiles = N * g.th * g.tw;
    g.nblocks = (g.ntiles + FC_WINO_TILES - 1) / FC_WINO_TILES;
    g.mr = GEMM_MR();
    g.one_kb = GEMM_KCB(g.Cs) >= g.Cs;
    g.img = (long)g.Hp * g.Wp * g.Cs;
    g.upack = WP * FC_WINO_UPS(K, g.Cs);
    g.ws_layout = fc_wino_nhwc_elems(WM, WR, N, C, P, Q);   /* = FC_WINO_AL(N img) */
    /* per task: V, M (one block of tiles per point, 16 elements apart from a
     * multiple of 4 KiB so that the stores of a tile do not share cache
     * sets), row offsets, GEMM workspace */
    g.vs = FC_WINO_AL((long)FC_WINO_TILES * g.Cs) + 16;
    g.ms = FC_WINO_AL((long)(FC_WINO_TILES + 16) * g.Ks) + 16;   /* (rows past the tiles: see wino_point) */
    g.v_off = 0;
    g.m_off = FC_WINO_AL(WP * g.vs);
    g.offs_off = g.m_off + FC_WINO_AL(WP * g.ms);
    g.gws_off = g.offs_off + FC_WINO_AL((FC_WINO_TILES + 16) * (long)(sizeof(long) / sizeof(T) + 1));
    g.per = g.gws_off + FC_WINO_AL(GEMM_WS(FC_WINO_TILES + 16, K, g.Cs, 1));
    return g;
}

size_t WN(wino_ws)(int N, int C, int K, int P, int Q, int nthreads, size_t *upack)
{
    if (nthreads < 1) nthreads = 1;
    const WN(wino_geom) g = WN(wino_plan)(N, C, K, P, Q);
    if (upack) *upack = (size_t)g.upack;
    return (size_t)(g.upack + g.ws_layout + (long)nthreads * g.per);
}

/* Input tiles ta .. tb (of all images' tiles, t0 the first of the block whose
 * V they go to) transformed into V. */
static void WN(wino_in_range)(const T *xt, const WN(wino_geom) *g, int t0, int ta, int tb, T *V)
{
    const int tpi = g->th * g->tw;                  /* tiles an image */
    for (int t = ta; t < tb;) {
        const int n = t / tpi, ti = t % tpi;
        const int cnt = tpi - ti < tb - t ? tpi - ti : tb - t;
        WN(wino_in)(xt + (long)n * g->img, g->Wp, g->Cs, g->tw, ti, cnt, V + (long)(t - t0) * g->Cs, g->vs);
        t += cnt;
    }
}

/* Output tiles ta .. tb from the block's M (t0 its first tile), channels kb .. ke. */
static void WN(wino_out_range)(const T *M, const WN(wino_geom) *g, int K, int kb, int ke, int P, int Q, int t0,
                               int ta, int tb, T *y, unsigned char *cy, const T *bias, int act, T slope,
                               const fc_phases *yout)
{
    const int tpi = g->th * g->tw;
    for (int t = ta; t < tb;) {
        const int n = t / tpi, ti = t % tpi;
        const int cnt = tpi - ti < tb - t ? tpi - ti : tb - t;
        const long img = yout ? (long)K / (yout->sh * yout->sw) * yout->H * yout->W
                       : act & FC_POOL_2X2 ? (long)K * (P / 2) * (Q / 2) : (long)K * P * Q;
        WN(wino_out)(M + (long)(t - t0) * g->Ks, g->ms, g->Ks, K, kb, ke, g->tw, ti, cnt, y + (long)n * img,
                     cy ? cy + (long)n * img : NULL, P, Q, bias, act, slope, yout);
        t += cnt;
    }
}

/* M_e (nt x K) = V_e . U_e^T for the point e of a block of nt tiles; the columns
 * k0 .. k0 + K of it, k0 a multiple of the packed panels' width, where the
 * weights' depth is one block of the product. The product may run over nt
 * rounded up to the micro-kernel's rows, so that every tile is finished from
 * registers; the rows past nt read rows of V past the block's and are never
 * read back. */
static int WN(wino_point)(const T *V, const T *Upack, long ustride, const WN(wino_geom) *g, int k0, int K,
                          int nt, int e, const long *aoff, T *M, T *gws)
{
    if (g->one_kb) {   /* (the product's setup skipped: there are WP of them a block) */
        GEMM_GATHERED(nt, K, g->Cs, (T)0, V + (long)e * g->vs, aoff, Upack + e * ustride + (long)k0 * g->Cs,
                      M + (long)e * g->ms + k0, g->Ks);
        return 0;
    }
    const int m = (nt + g->mr - 1) / g->mr * g->mr;
    fc_view A, B;
    memset(&A, 0, sizeof(A));
    memset(&B, 0, sizeof(B));
    A.kind = FC_VIEW_GATHER;
    A.p = (T *)V + (long)e * g->vs;
    A.offs = aoff;
    A.doffs = NULL;   /* (depth c at V_e[t][c]) */
    B.kind = FC_VIEW_PACKED;
    B.p = (T *)Upack + e * ustride + (long)k0 * g->Cs;
    return GEMM(m, K, g->Cs, (T)1, &A, &B, (T)0, M + (long)e * g->ms + k0, g->Ks, NULL, 1, gws);
}

/* upack: NULL, or the caller's buffer of the transformed, packed weights
 * (*upack elements of wino_ws): filled here unless upack_ready, then read. */
int WN(wino)(const T *x, const T *w, const T *bias, T *y, int N, int C, int H, int W, int K,
             int P, int Q, int ph, int pw, int act, double slope, int nthreads, T *ws, T *upack,
             int upack_ready, const fc_phases *xin, const fc_phases *yout, unsigned char *code)
{
    if (nthreads < 1) nthreads = 1;
    const WN(wino_geom) g = WN(wino_plan)(N, C, K, P, Q);
    T *Upack = upack ? upack : ws;
    T *xt = xin && xin->nhwc ? (T *)xin->nhwc : ws + g.upack;
    T *task_ws = ws + g.upack + g.ws_layout;
    const long ustride = FC_WINO_UPS(K, g.Cs);
    const int transform = !(upack && upack_ready);
    const int stream = FC_WINO_CAN_STREAM && (long)g.upack * (long)sizeof(T) > FC_WINO_STREAM_BYTES && ((uintptr_t)Upack & 63) == 0;
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
        /* transformed weights, packed per point, each thread its own output
         * channels (whole panels of the product); channels-last copies of the input */
        if (transform) {
            const int nr = GEMM_NR(), al = nr > FC_WINO_L ? nr : FC_WINO_L;
            const int nal = (K + al - 1) / al;
            const int k0 = (int)((long)nal * tid / nth) * al, k1 = (int)((long)nal * (tid + 1) / nth) * al;
            const int kend = k1 < K ? k1 : K;
            if (k0 < kend)
                WN(wino_weights)(w, K, C, g.Cs, k0, kend, Upack, ustride, nr, GEMM_KCB(g.Cs), stream);
        }
        const long nrows = (long)N * g.Hp;
        if (xin && xin->sh * xin->sw > 1)   /* (no padding of the phases) */
            NHWC_PHASES(x, nrows * tid / nth, nrows * (tid + 1) / nth, C / (xin->sh * xin->sw), xin, H, W,
                        g.Cs, g.Hp, g.Wp, xt);
        else if (xin)   /* one phase: the image, padded */
            NHWC_ROWS(x, nrows * tid / nth, nrows * (tid + 1) / nth, C, xin->H, xin->W, g.Cs, g.Hp, g.Wp,
                      xin->ph, xin->pw, xt);
        else
            NHWC_ROWS(x, nrows * tid / nth, nrows * (tid + 1) / nth, C, H, W, g.Cs, g.Hp, g.Wp, ph, pw, xt);
        long *aoff = (long *)(task_ws + (long)tid * g.per + g.offs_off);
        T *gws = task_ws + (long)tid * g.per + g.gws_off;
        for (int i = 0; i < FC_WINO_TILES + 16; i++) aoff[i] = (long)(i < FC_WINO_TILES ? i : 0) * g.Cs;
#if FC_OPENMP
#pragma omp barrier
#endif
        /* a block of tiles a task while that shares the tiles out evenly (a thread's
         * share at most a tenth above the mean, or blocks of equal size, at least
         * FC_WINO_MIN_TILES, in a multiple of the thread count); else each block's
         * tiles and points. A tile's arithmetic does not depend on its block, nor
         * on the output channels a product makes. */
        const long share = (long)((g.nblocks + nth - 1) / nth) * FC_WINO_TILES;
        const int nbal = (g.nblocks + nth - 1) / nth * nth, bal = (g.ntiles + nbal - 1) / nbal;
        const int even = g.nblocks >= 8 * nth || 10 * share * nth <= 11L * g.ntiles;
        /* fewer than FC_WINO_MIN_TILES tiles a thread, in one block of small
         * transforms, and weights of one depth block: the threads transform a share of
         * the tiles each, then each makes the products and outputs of its own output
         * channels over all the tiles (no product then has a few rows). With more, a
         * thread takes its own tiles end to end, reading no tile another thread
         * transformed: on a mesh of cores that costs more than the rows it saves. */
        const int nr = GEMM_NR(), al = nr > FC_WINO_L ? nr : FC_WINO_L, kpanels = (K + al - 1) / al;
        const int by_channels = nth > 1 && g.ntiles < FC_WINO_MIN_TILES * nth && g.ntiles <= FC_WINO_TILES
                                && kpanels >= nth && g.one_kb
                                && (long)g.ntiles * g.Cs * WP * (long)sizeof(T) <= FC_WINO_KSPLIT_BYTES;
        if (by_channels) {
            const int kb = (int)((long)kpanels * tid / nth) * al, ke0 = (int)((long)kpanels * (tid + 1) / nth) * al;
            const int ke = ke0 < K ? ke0 : K;
            T *V = task_ws + g.v_off;
            T *M = task_ws + (long)tid * g.per + g.m_off;
            WN(wino_in_range)(xt, &g, 0, (int)((long)g.ntiles * tid / nth), (int)((long)g.ntiles * (tid + 1) / nth),
                              V);
#if FC_OPENMP
#pragma omp barrier
#endif
            for (int e = 0; e < WP; e++)
                rc |= WN(wino_point)(V, Upack, ustride, &g, kb, ke - kb, g.ntiles, e, aoff, M, gws);
            WN(wino_out_range)(M, &g, K, kb, ke0 < g.Ks ? ke0 : g.Ks, P, Q, 0, 0, g.ntiles, y, code, bias, act,
                               (T)slope, yout);
        } else if (even || bal >= FC_WINO_MIN_TILES) {
            const int bt = even ? FC_WINO_TILES : bal, nb = (g.ntiles + bt - 1) / bt;
            T *V = task_ws + (long)tid * g.per + g.v_off;
            T *M = task_ws + (long)tid * g.per + g.m_off;
#ifdef _OPENMP
            /* a few blocks each, as many for every thread: the same run of blocks for a
             * thread on every call (its copied rows, its outputs stay in its caches) */
            omp_set_schedule(nb % nth == 0 && nb <= 8 * nth ? omp_sched_static : omp_sched_guided, 0);
#endif
#if FC_OPENMP
#pragma omp for schedule(runtime)
#endif
            for (int bi = 0; bi < nb; bi++) {
                const int t0 = bi * bt;
                const int nt = g.ntiles - t0 < bt ? g.ntiles - t0 : bt;
                WN(wino_in_range)(xt, &g, t0, t0, t0 + nt, V);
                for (int e = 0; e < WP; e++)
                    rc |= WN(wino_point)(V, Upack, ustride, &g, 0, K, nt, e, aoff, M, gws);
                WN(wino_out_range)(M, &g, K, 0, g.Ks, P, Q, t0, t0, t0 + nt, y, code, bias, act, (T)slope, yout);
            }
        } else {
            /* each block's tiles, then its points, shared out */
            T *V = task_ws + g.v_off;
            T *M = task_ws + g.m_off;
            for (int bi = 0; bi < g.nblocks; bi++) {
                const int t0 = bi * FC_WINO_TILES;
                const int nt = g.ntiles - t0 < FC_WINO_TILES ? g.ntiles - t0 : FC_WINO_TILES;
                WN(wino_in_range)(xt, &g, t0, t0 + (int)((long)nt * tid / nth),
                                  t0 + (int)((long)nt * (tid + 1) / nth), V);
#if FC_OPENMP
#pragma omp barrier
#endif
                for (int e = tid; e < WP; e += nth)
                    rc |= WN(wino_point)(V, Upack, ustride, &g, 0, K, nt, e, aoff, M, gws);
#if FC_OPENMP
#pragma omp barrier
#endif
                WN(wino_out_range)(M, &g, K, 0, g.Ks, P, Q, t0, t0 + (int)((long)nt * tid / nth),
                                   t0 + (int)((long)nt * (tid + 1) / nth), y, code, bias, act, (T)slope, yout);
                if (bi + 1 < g.nblocks) {   /* (after the last block, the region's end waits) */
#if FC_OPENMP
#pragma omp barrier
#endif
                }
            }
        }
        fc_fpmode_leave(fpmode);
    }
    return rc;
}

/* --------------------------------------------------------------- weight gradient */

/* Z_e[t][k] for the tiles t0 .. t0 + nt of one image's channels-last output
 * gradient dyi (rows of Wq pixels of Ks channels). */
static void WN(wino_dy)(const T *dyi, int Wq, int Ks, int tw, int t0, int nt, T *Z, long zs)
{
    T r[WA * WM * FC_WINO_L] __attribute__((aligned(64)));
    T d[WP * FC_WINO_L] __attribute__((aligned(64)));
    for (int t = 0; t < nt; t++) {
        const int I = (t0 + t) / tw, J = (t0 + t) % tw;
        for (int k0 = 0; k0 < Ks; k0 += FC_WINO_L) {
            const T *src = dyi + ((long)(WM * I) * Wq + WM * J) * Ks + k0;
            /* A down the columns: r[e_row][j] */
            for (int j = 0; j < WM; j++)
                WN(wino_a16)(src + (long)j * Ks, (long)Wq * Ks, r + j * FC_WINO_L, WM * FC_WINO_L);
            /* A along the rows: d[e_row][e_col] */
            for (int er = 0; er < WA; er++)
                WN(wino_a16)(r + er * WM * FC_WINO_L, FC_WINO_L, d + er * WA * FC_WINO_L, FC_WINO_L);
            for (int e = 0; e < WP; e++) {
                T *dst = Z + e * zs + (long)t * Ks + k0;
                for (int l = 0; l < FC_WINO_L; l++) dst[l] = d[e * FC_WINO_L + l];
            }
        }
    }
}

/* dW[k][c] = G^T S[.][c][k] G (WA x WA -> r x r) for the output channels k0 .. k1,
 * FC_WINO_L channels k at a time, from S's points ps elements apart; the kernels
 * of FC_WINO_L channels c are gathered, then stored a row of dW at a time.
 * rows: S holds instead each row of points already transformed along the row,
 * H[e_row][s] = sum over e_col of G[e_col][s] S[e_row][e_col] (WA x r of them). */
static void WN(wino_wout)(const T *S, long ps, int C, int K, int k0, int k1, T *dw, int rows)
{
    enum { CB = FC_WINO_L, RR = WR * WR };
    T sv[WP * FC_WINO_L] __attribute__((aligned(64)));
    T h[WA * WR * FC_WINO_L] __attribute__((aligned(64)));   /* S G: h[e_row][s] */
    T g[RR * FC_WINO_L] __attribute__((aligned(64)));
    T ob[FC_WINO_L * CB * RR] __attribute__((aligned(64)));  /* ob[l][c][j] */
    for (int kb = k0; kb < k1; kb += FC_WINO_L) {
        const int kn = k1 - kb < FC_WINO_L ? k1 - kb : FC_WINO_L;
        if (kn < FC_WINO_L) {                                 /* lanes past K stay zero */
            memset(sv, 0, sizeof(sv));
            memset(h, 0, sizeof(h));
        }
        for (int cb = 0; cb < C; cb += CB) {
            const int cn = C - cb < CB ? C - cb : CB;
            for (int c = 0; c < cn; c++) {
                const int ne = rows ? WA * WR : WP;
                T *dst = rows ? h : sv;
                for (int e = 0; e < ne; e++) {
                    const T *src = S + (long)e * ps + (long)(cb + c) * K + kb;
                    __builtin_prefetch(src + 4L * K);
                    if (kn == FC_WINO_L)
                        for (int l = 0; l < FC_WINO_L; l++) dst[e * FC_WINO_L + l] = src[l];
                    else
                        for (int l = 0; l < kn; l++) dst[e * FC_WINO_L + l] = src[l];
                }
                if (!rows)
                    for (int er = 0; er < WA; er++)
                        WN(wino_gt16)(sv + WA * er * FC_WINO_L, FC_WINO_L, h + er * WR * FC_WINO_L, FC_WINO_L);
                for (int s = 0; s < WR; s++)
                    WN(wino_gt16)(h + s * FC_WINO_L, WR * FC_WINO_L, g + s * FC_WINO_L, WR * FC_WINO_L);
                for (int j = 0; j < RR; j++)
                    for (int l = 0; l < FC_WINO_L; l++) ob[(l * CB + c) * RR + j] = g[j * FC_WINO_L + l];
            }
            for (int l = 0; l < kn; l++)
                memcpy(dw + ((long)(kb + l) * C + cb) * RR, ob + l * CB * RR, (size_t)cn * RR * sizeof(T));
        }
    }
}

typedef struct {
    WN(wino_geom) f;                           /* the forward's geometry (input side) */
    int Hq, Wq, bt, nblocks, nchunks;         /* tiles a block (equal blocks), blocks, chunks */
    int bmax;                                  /* room for tiles a block: bt, at least FC_WINO_TILES */
    int drow;                                  /* pixels a row of dy's copy (dimg: an image) */
    int rows;                                  /* S made a row of points at a time (see wino_wgrad) */
    long dimg, dy_layout, partials, sums, per, z_off, gws_off, offs_off, st_off, vs, zs, ps;
} WN(wino_wgeom);

static WN(wino_wgeom) WN(wino_wplan)(int N, int C, int K, int P, int Q)
{
    WN(wino_wgeom) g;
    g.f = WN(wino_plan)(N, C, K, P, Q);
    g.Hq = WM * g.f.th;
    g.Wq = WM * g.f.tw;
    g.bt = (g.f.ntiles + g.f.nblocks - 1) / (g.f.nblocks > 0 ? g.f.nblocks : 1);
    /* a few blocks whose transforms fit FC_WINO_HALVES_BYTES together: two blocks
     * of half the tiles instead (one partial sum; two threads make one each end to
     * end, more share out each one's points) */
    if (g.f.nblocks > 2 && g.f.nblocks < FC_WINO_HALVES_MAX
            && (long)g.f.ntiles * WP * (g.f.Cs + g.f.Ks) * (long)sizeof(T) <= FC_WINO_HALVES_BYTES)
        g.bt = (g.f.ntiles + 1) / 2;
    if (g.bt < 1) g.bt = 1;
    g.bmax = g.bt > FC_WINO_TILES ? g.bt : FC_WINO_TILES;
    g.nblocks = (g.f.ntiles + g.bt - 1) / g.bt;
    g.nchunks = g.nblocks < 8 ? g.nblocks : 8;
    g.dimg = (long)g.Hq * g.Wq * g.f.Ks;
    g.drow = g.Wq;
    g.dy_layout = FC_WINO_AL((long)N * g.dimg);
    /* S's points 64 bytes past a multiple of 64 apart: the output transform
     * reads every point of one (c, k) at once */
    g.ps = FC_WINO_AL((long)C * K) + 16;
    g.partials = FC_WINO_AL((long)g.nchunks * WP * g.ps);
    g.sums = FC_WINO_AL((long)N * g.f.Ks);     /* each image's bias gradient */
    g.vs = FC_WINO_AL((long)g.bmax * g.f.Cs) + 16;
    g.zs = FC_WINO_AL((long)g.bmax * g.f.Ks) + 16;
    g.z_off = FC_WINO_AL(WP * g.vs);
    g.gws_off = g.z_off + FC_WINO_AL(WP * g.zs);
    g.offs_off = g.gws_off + FC_WINO_AL(GEMM_WS(C, K, g.bmax, 1));
    g.st_off = g.offs_off + FC_WINO_AL((g.f.Cs + 16 + g.bmax) * (long)(sizeof(long) / sizeof(T) + 1));
    g.rows = WA == 8;
    g.per = g.st_off + (g.rows ? FC_WINO_AL((long)C * K) : 0);
    return g;
}

/* V and Z of the tiles ta .. tb (of all images' tiles; t0 the block's first). */
static void WN(wino_wtiles)(const T *xt, const T *dyt, const WN(wino_wgeom) *g, int t0, int ta, int tb,
                            T *V, T *Z)
{
    const WN(wino_geom) *f = &g->f;
    const int tpi = f->th * f->tw;
    for (int t = ta; t < tb;) {
        const int n = t / tpi, ti = t % tpi;
        const int cnt = tpi - ti < tb - t ? tpi - ti : tb - t;
        WN(wino_in)(xt + (long)n * f->img, f->Wp, f->Cs, f->tw, ti, cnt, V + (long)(t - t0) * f->Cs, g->vs);
        WN(wino_dy)(dyt + (long)n * g->dimg, g->drow, f->Ks, f->tw, ti, cnt, Z + (long)(t - t0) * f->Ks,
                    g->zs);
        t += cnt;
    }
}

size_t WN(wino_wgrad_ws)(int N, int C, int K, int P, int Q, int nthreads)
{
    if (nthreads < 1) nthreads = 1;
    const WN(wino_wgeom) g = WN(wino_wplan)(N, C, K, P, Q);
    return (size_t)(g.f.ws_layout + g.dy_layout + g.partials + g.sums + (long)nthreads * g.per);
}

int WN(wino_wgrad)(const T *x, const T *dy, T *dw, T *db, int N, int C, int H, int W, int K, int P,
                   int Q, int ph, int pw, int nthreads, T *ws, const fc_phases *xin, const fc_phases *dyin)
{
    if (nthreads < 1) nthreads = 1;
    WN(wino_wgeom) g = WN(wino_wplan)(N, C, K, P, Q);
    const WN(wino_geom) *f = &g.f;
    T *xt = xin && xin->nhwc ? (T *)xin->nhwc : ws;
    const int copy_x = !(xin && xin->nhwc && xin->nhwc_ready);
    const int copy_dy = !(dyin && dyin->nhwc && dyin->nhwc_ready);
    T *dyt = ws + f->ws_layout;
    if (!copy_dy) {
        /* dy's padded copy made by the input gradient's Winograd (F(WM, WR), padding
         * ph, pw, an output of dyin->H + 2 ph - WR + 1 rows): read at (ph, pw) */
        const WN(wino_geom) d = WN(wino_plan)(N, K, C, dyin->H + 2 * dyin->ph - WR + 1,
                                              dyin->W + 2 * dyin->pw - WR + 1);
        dyt = (T *)dyin->nhwc + ((long)dyin->ph * d.Wp + dyin->pw) * f->Ks;
        g.dimg = d.img;
        g.drow = d.Wp;
    }
    T *part = ws + f->ws_layout + g.dy_layout;
    T *sums = part + g.partials;
    T *task_ws = sums + g.sums;
    int rc = 0, next_chunk = 0, next_pt[2] = {0, 0};
    /* gcol[s][e]: G[e][s] of the transform along a row of points (wino_gt16 of the
     * unit vectors), for the row-at-a-time sums */
    T gcol[WR][WA];
    if (g.rows)
        for (int e = 0; e < WA; e++) {
            T unit[WA * FC_WINO_L], out[WR * FC_WINO_L];
            for (int i = 0; i < WA * FC_WINO_L; i++) unit[i] = (T)(i / FC_WINO_L == e);
            WN(wino_gt16)(unit, FC_WINO_L, out, FC_WINO_L);
            for (int j = 0; j < WR; j++) gcol[j][e] = out[j * FC_WINO_L];
        }
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
        if (xin) {
            if (copy_x && xin->sh * xin->sw > 1)
                NHWC_PHASES(x, nx * tid / nth, nx * (tid + 1) / nth, C / (xin->sh * xin->sw), xin, H, W,
                            f->Cs, f->Hp, f->Wp, xt);
            else if (copy_x)
                NHWC_ROWS(x, nx * tid / nth, nx * (tid + 1) / nth, C, xin->H, xin->W, f->Cs, f->Hp, f->Wp,
                          xin->ph, xin->pw, xt);
        } else
            NHWC_ROWS(x, nx * tid / nth, nx * (tid + 1) / nth, C, H, W, f->Cs, f->Hp, f->Wp, ph, pw, xt);
        if (copy_dy)
            NHWC_ROWS(dy, nd * tid / nth, nd * (tid + 1) / nth, K, P, Q, f->Ks, g.Hq, g.Wq, 0, 0, dyt);
#if FC_OPENMP
#pragma omp barrier
#endif
        /* the bias gradient of each image, from its channels-last copy (pixels in order;
         * those past P x Q are zero); with fewer images than threads, each image's
         * channels in groups of FC_WINO_L shared out too */
        if (db) {
            const int ks = f->Ks, parts = N < nth ? ks / FC_WINO_L : 1, nk = ks / parts;
            const long units = (long)N * parts;
            for (long u = units * tid / nth; u < units * (tid + 1) / nth; u++) {
                const int n = (int)(u / parts), k0 = (int)(u % parts) * nk;
                T *restrict s = sums + (long)n * ks + k0;
                for (int k = 0; k < nk; k++) s[k] = 0;
                for (int i = 0; i < g.Hq; i++) {
                    const T *restrict d = dyt + (long)n * g.dimg + (long)i * g.drow * ks + k0;
                    for (int j = 0; j < g.Wq; j++, d += ks)
                        for (int k = 0; k < nk; k++) s[k] += d[k];
                }
            }
        }
        /* a chunk a task while there are as many as threads; else each block's
         * tiles, then its points, shared out (the same sums either way) */
        const int shared = g.nchunks < nth;
        T *V = task_ws + (shared ? 0 : (long)tid * g.per);
        T *Z = V + g.z_off;
        T *gws = task_ws + (long)tid * g.per + g.gws_off;
        /* V_e^T read in place: row c at V_e + c, step t at t Cs (rows past C read row 0) */
        long *coff = (long *)(task_ws + (long)tid * g.per + g.offs_off);
        long *toff = coff + f->Cs + 16;
        for (int c = 0; c < f->Cs + 16; c++) coff[c] = c < C ? c : 0;
        for (int t = 0; t < g.bmax; t++) toff[t] = (long)t * f->Cs;
        /* (not shared: each thread takes the next chunk when done with one) */
        for (int ch = shared ? 0 : fc_next_task(&next_chunk); ch < g.nchunks;
             ch = shared ? ch + 1 : fc_next_task(&next_chunk)) {
            const int b0 = (int)((long)ch * g.nblocks / g.nchunks);
            const int b1 = (int)((long)(ch + 1) * g.nblocks / g.nchunks);
            T *S = part + (long)ch * WP * g.ps;
            for (int bi = b0; bi < b1; bi++) {
                const int t0 = bi * g.bt;
                const int nt = f->ntiles - t0 < g.bt ? f->ntiles - t0 : g.bt;
                const int ta = shared ? t0 + (int)((long)nt * tid / nth) : t0;
                const int tb = shared ? t0 + (int)((long)nt * (tid + 1) / nth) : t0 + nt;
                WN(wino_wtiles)(xt, dyt, &g, t0, ta, tb, V, Z);
                if (shared) {
#if FC_OPENMP
#pragma omp barrier
#endif
                    /* (thread 0 clears the next block's counter, unused since the last barrier) */
                    if (tid == 0) next_pt[(bi + 1) & 1] = 0;
                }
                /* F(7x7, 2x2): a row of points at a time, each S_e transformed along the
                 * row and added into the row's H as it is made (see wino_wout); else S_e.
                 * Shared blocks: a point (a row of them) a task, taken as threads free up */
                int *pt = next_pt + (bi & 1);
                const int nu = !shared ? 1 : g.rows ? WA : WP;
                for (int u = shared ? fc_next_task(pt) : 0; u < nu; u = shared ? fc_next_task(pt) : u + 1)
                    for (int e = shared ? u * (g.rows ? WA : 1) : 0; e < (!shared ? WP : g.rows ? (u + 1) * WA : u + 1);
                         e++) {
                        const int er = e / WA;
                        fc_view A, B;
                        memset(&A, 0, sizeof(A));
                        memset(&B, 0, sizeof(B));
                        A.kind = FC_VIEW_GATHER;       /* V_e^T: (c, t) at V_e[t][c] */
                        A.p = V + (long)e * g.vs;
                        A.offs = coff;
                        A.doffs = toff;
                        B.kind = FC_VIEW_DENSE;        /* Z_e: (t, k) */
                        B.p = Z + (long)e * g.zs;
                        B.rs = f->Ks;
                        B.cs = 1;
                        if (!g.rows) {
                            rc |= GEMM(C, K, nt, (T)1, &A, &B, bi == b0 ? (T)0 : (T)1, S + e * g.ps, K, NULL, 1,
                                       gws);
                            continue;
                        }
                        T *restrict St = task_ws + (long)tid * g.per + g.st_off;
                        rc |= GEMM(C, K, nt, (T)1, &A, &B, (T)0, St, K, NULL, 1, gws);
                        const int ec = e - er * WA, first = bi == b0 && ec == 0;
                        const long CK = (long)C * K;
                        for (int j = 0; j < WR; j++) {
                            const T a = gcol[j][ec];
                            T *restrict H = S + (long)(er * WR + j) * g.ps;
                            if (first && a == 0)
                                for (long i = 0; i < CK; i++) H[i] = 0;
                            else if (first)
                                for (long i = 0; i < CK; i++) H[i] = a * St[i];
                            else if (a != 0)
                                for (long i = 0; i < CK; i++) H[i] += a * St[i];
                        }
                    }
                if (shared) {
#if FC_OPENMP
#pragma omp barrier
#endif
                }
            }
        }
        if (!shared) {
#if FC_OPENMP
#pragma omp barrier
#endif
        }
        /* chunks summed in order into the first, then the output transform */
        {
            const long CK = (long)C * K, lo = CK * tid / nth, hi = CK * (tid + 1) / nth;
            for (int ch = 1; ch < g.nchunks; ch++)
                for (int e = 0; e < (g.rows ? WA * WR : WP); e++) {
                    T *dst = part + e * g.ps;
                    const T *src = dst + (long)ch * WP * g.ps;
                    for (long i = lo; i < hi; i++) dst[i] += src[i];
                }
        }
#if FC_OPENMP
#pragma omp barrier
#endif
        WN(wino_wout)(part, g.ps, C, K, (int)((long)tid * K / nth), (int)((long)(tid + 1) * K / nth), dw,
                      g.rows);
        if (db)   /* the images' sums in order */
            for (int k = (int)((long)tid * K / nth); k < (int)((long)(tid + 1) * K / nth); k++) {
                T t = 0;
                for (int n = 0; n < N; n++) t += sums[(long)n * f->Ks + k];
                db[k] = t;
            }
        fc_fpmode_leave(fpmode);
    }
    return rc;
}

#undef WA
#undef WN
#undef WP
