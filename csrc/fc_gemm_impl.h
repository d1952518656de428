/* Cache-blocking GEMM driver, instantiated for float and double by fc_gemm.c
 * (T = element type, FN(name) = name with the type suffix). The block sizes
 * come with the micro-kernels of the instruction set in use.
 *
 * Loop order (BLIS): jc over NC columns -> pc over KC depth (B block packed by
 * all threads) -> tasks over (MC rows x a range of NR panels) -> jr -> ir ->
 * micro-kernel, which finishes its tile into C. Every element of C is owned by
 * one task and accumulates its KC blocks in order, so results do not depend
 * on the number of threads.
 */

/* Depth block: k split into equal blocks of at most KC (a short tail block
 * costs as much C traffic as a full one). */
static inline int FN(depth_block)(int k, int KC)
{
    int nb = (k + KC - 1) / KC;
    if (nb < 1) nb = 1;
    int kb = (k + nb - 1) / nb;
    return kb < 1 ? 1 : kb;
}

/* Row block: m split into a count of equal blocks (a multiple of 4 once
 * there are several, so that threads share them evenly) of at most MC rows,
 * rounded up to MR. */
static inline int FN(row_block)(int m, int MR, int MC)
{
    int nb = (m + MC - 1) / MC;
    if (nb >= 3) nb = (nb + 3) / 4 * 4;
    if (nb < 1) nb = 1;
    int mb = (m + nb - 1) / nb;
    return (mb + MR - 1) / MR * MR;
}

/* The micro-kernels of a product: the instruction set's own, or its narrow
 * ones for a row-major product of at most four rows with A packed. */
typedef struct {
    int MR, NR;
    void (*ukr)(long, const T *, const T *, T *, long, const fc_tile *);
    void (*ukri)(long, const T *, const T *, const long *, T *, long, const fc_tile *);
    void (*ukrg)(long, const T *, const long *, const long *, const T *, T *, long, const fc_tile *);
} FN(kset);

static FN(kset) FN(kernels_for)(const fc_kernel_info *ki, int m, int narrow_ok)
{
    FN(kset) s = {FN(KMR)(ki), FN(KNR)(ki), FN(KUKR)(ki), FN(KUKRI)(ki), FN(KUKRG)(ki)};
    if (narrow_ok && m <= 4 && FN(KNRN)(ki) > 0) {
        const int i = m <= 1 ? 0 : m == 2 ? 1 : 2;
        s.MR = 1 << i;
        s.NR = FN(KNRN)(ki);
        s.ukr = FN(KUKRN)(ki, i);
        s.ukri = FN(KUKRIN)(ki, i);
        s.ukrg = NULL;
    }
    return s;
}

static int FN(epilogue_active)(const fc_epilogue *e)
{
    return e != NULL && (e->bias_mode != FC_BIAS_NONE || e->act != FC_ACT_NONE);
}

/* The runs of the product indices x0 .. x0 + n - 1 (a tile's columns, or its
 * rows when C is column-major) under the map of e (none: one run, index
 * x0 + j at j + x0). */
static void FN(tile_runs)(fc_tile *t, long x0, int nr, const fc_epilogue *e)
{
    const long col0 = x0;
    if (e == NULL || e->wrap <= 0) {
        t->nseg = 1;
        t->lo[0] = 0;
        t->hi[0] = nr;
        t->col[0] = col0;
        return;
    }
    const long wrap = e->wrap, keep = e->keep, bstride = e->bstride > 0 ? e->bstride : keep;
    int n = 0, j = 0;
    while (j < nr) {
        const long col = col0 + j, b = col / wrap, q = col % wrap;
        if (q < keep) {
            const int len = (int)(keep - q < nr - j ? keep - q : nr - j);
            t->lo[n] = j;
            t->hi[n] = j + len;
            t->col[n] = b * bstride + q - j;
            n++;
            j += len;
        } else {
            j += (int)(wrap - q < nr - j ? wrap - q : nr - j);
        }
    }
    t->nseg = n;
}

/* Workspace layout: the shared B block, then per thread an A block; every
 * part starts on a 64-byte boundary. */
static void FN(ws_layout)(int m, int n, int k, const fc_kernel_info *ki,
                          long *b_elems, long *a_elems)
{
    /* room for every kernel set, whatever m selects (a workspace sized for m
     * serves any product of at most m rows) */
    const int MR = FN(KMR)(ki), NR = FN(KNR)(ki) > FN(KNRN)(ki) ? FN(KNR)(ki) : FN(KNRN)(ki);
    long kc = FN(depth_block)(k, FN(KKC)(ki));
    long nc = n < FN(KNC)(ki) ? n : FN(KNC)(ki);
    long mc = m < FN(KMC)(ki) ? m : FN(KMC)(ki);
    nc = (nc + NR - 1) / NR * NR;
    mc = (mc + MR - 1) / MR * MR;
    *b_elems = (kc * nc + 15) & ~15L;
    *a_elems = (mc * kc + 15) & ~15L;
}

size_t FN(fc_gemm_ws)(int m, int n, int k, int nthreads)
{
    long b_elems, a_elems;
    FN(ws_layout)(m, n, k, fc_kernel(), &b_elems, &a_elems);
    return (size_t)(b_elems + (long)(nthreads < 1 ? 1 : nthreads) * a_elems);
}

size_t FN(fc_gemm_packed_a_size)(int m, int k)
{
    const int MR = FN(kernels_for)(fc_kernel(), m, 1).MR;
    return (size_t)((long)(m + MR - 1) / MR * MR * (k < 1 ? 1 : k));
}

void FN(fc_gemm_pack_a)(int m, int k, const fc_view *A, T *dst)
{
    const fc_kernel_info *ki = fc_kernel();
    const int MR = FN(kernels_for)(ki, m, 1).MR;
    const int KCB = FN(depth_block)(k, FN(KKC)(ki));
    const long mpad = (long)(m + MR - 1) / MR * MR;
    for (int pc = 0; pc < k; pc += KCB) {
        const int kc = k - pc < KCB ? k - pc : KCB;
        FN(fc_pack)(A, 0, m, pc, kc, MR, dst + (long)pc * mpad);
    }
}

size_t FN(fc_gemm_packed_b_size)(int n, int k)
{
    const int NR = FN(KNR)(fc_kernel());
    return (size_t)((long)(n + NR - 1) / NR * NR * (k < 1 ? 1 : k));
}

void FN(fc_gemm_pack_b)(int n, int k, const fc_view *B, T *dst)
{
    const fc_kernel_info *ki = fc_kernel();
    const int NR = FN(KNR)(ki);
    const int KCB = FN(depth_block)(k, FN(KKC)(ki));
    const long npad = (long)(n + NR - 1) / NR * NR;
    const fc_view Bt = fc_view_t(B);
    for (int pc = 0; pc < k; pc += KCB) {
        const int kc = k - pc < KCB ? k - pc : KCB;
        FN(fc_pack)(&Bt, 0, n, pc, kc, NR, dst + (long)pc * npad);
    }
}

int FN(fc_gemm_nr)(void)
{
    return FN(KNR)(fc_kernel());
}

int FN(fc_gemm_mr)(void)
{
    return FN(KMR)(fc_kernel());
}

int FN(fc_gemm_kcb)(int k)
{
    return FN(depth_block)(k, FN(KKC)(fc_kernel()));
}

/* Everything one thread of a product needs. */
typedef struct {
    int m, n, k, MR, NR, NC, KCB, MCB, nkb, prepacked, b_packed, shifted, gathered, trans, has_epi;
    long mpad, npad, a_elems;
    T alpha, beta, *C, *bpack, *thread_ws;
    int *next;   /* with several threads: two task counters, one a block in turn */
    long ldc;
    const fc_view *A, *B;
    fc_view Bt;
    const fc_epilogue *epi;
    FN(kset) ks;
} FN(gemm_ctx);

/* [lo, hi) of 0 .. n for thread tid of nth, in order */
static inline void FN(split)(int n, int tid, int nth, int *lo, int *hi)
{
    *lo = (int)((long)n * tid / nth);
    *hi = (int)((long)n * (tid + 1) / nth);
}

/* Thread tid of nth: its share of each B block's packing (and of A's where
 * there are fewer row blocks than threads), then tasks (row blocks x ranges
 * of panels) until none is left; every C element is one task's. With nth > 1
 * it runs inside the product's own parallel region. */
static void FN(gemm_thread)(const FN(gemm_ctx) *g, int tid, int nth)
{
    const int m = g->m, n = g->n, k = g->k, MR = g->MR, NR = g->NR, NC = g->NC;
    const int KCB = g->KCB, MCB = g->MCB;
    const fc_view *A = g->A, *B = g->B;
    const fc_epilogue *epi = g->epi;
    T *C = g->C;
    const long ldc = g->ldc;
    T *apack = g->thread_ws + (long)tid * g->a_elems;
    fc_tile tile;
    tile.alpha = (double)g->alpha;
    tile.trans = g->trans;
    /* fewer row blocks than threads: the threads pack A's micro-panels together,
     * each block once, into their joint workspace (else every thread would pack
     * each block it makes tiles of); with several threads, tasks are taken from a
     * counter a block, except where each thread packs A's blocks of its own (it
     * then takes their tasks in its own share) */
    const int n_ic = (m + MCB - 1) / MCB;
    const int shared_a = nth > 1 && n_ic <= nth && !g->prepacked && !g->gathered;
    const int dynamic = nth > 1 && (shared_a || g->prepacked || g->gathered);
    int blk = 0;
    for (int jc = 0; jc < n; jc += NC) {
        const int nc = n - jc < NC ? n - jc : NC;
        const int npanels = (nc + NR - 1) / NR;
        for (int kb = 0; kb < g->nkb; kb++) {
            const int pc = kb * KCB;
            const int kc = k - pc < KCB ? k - pc : KCB;
            tile.beta = (double)(kb == 0 ? g->beta : (T)1);
            tile.e = kb == g->nkb - 1 && g->has_epi ? epi : NULL;
            int lo = 0, hi = 0;
            if (!g->shifted && !g->b_packed) {
                FN(split)(npanels, tid, nth, &lo, &hi);
                for (int jp = lo; jp < hi; jp++) {
                    int w = nc - jp * NR < NR ? nc - jp * NR : NR;
                    FN(fc_pack)(&g->Bt, jc + jp * NR, w, pc, kc, NR, g->bpack + (long)jp * kc * NR);
                }
            }
            if (shared_a) {
                const int per = (MCB + MR - 1) / MR;   /* micro-panels a row block */
                FN(split)(n_ic * per, tid, nth, &lo, &hi);
                for (int t = lo; t < hi; t++) {
                    const int r0 = (t / per) * MCB + (t % per) * MR;
                    if (r0 < m)
                        FN(fc_pack)(A, r0, m - r0 < MR ? m - r0 : MR, pc, kc, MR,
                                    g->thread_ws + (long)(t / per) * g->a_elems + (long)(t % per) * kc * MR);
                }
            }
#if FC_OPENMP
            if (nth > 1 && (shared_a || (!g->shifted && !g->b_packed))) {
#pragma omp barrier
            }
#endif
            int n_js = 1;
            while (n_ic * n_js < 4 * nth && n_js * 2 <= npanels) n_js *= 2;
            int packed_ic = -1;
            const int ntasks = n_ic * n_js;
            /* (thread 0 clears the next block's counter, unused since the last barrier) */
            int *next = g->next + (blk & 1);
            if (dynamic && tid == 0) g->next[(blk + 1) & 1] = 0;
            blk++;
            if (!dynamic) FN(split)(ntasks, tid, nth, &lo, &hi);
            for (int task = dynamic ? fc_next_task(next) : lo; task < (dynamic ? ntasks : hi);
                 task = dynamic ? fc_next_task(next) : task + 1) {
                const int ic = (task / n_js) * MCB;
                const int js = task % n_js;
                const int mc = m - ic < MCB ? m - ic : MCB;
                const T *ablk = NULL;
                if (g->prepacked) {
                    ablk = (const T *)A->p + (long)pc * g->mpad + (long)ic * kc;
                } else if (shared_a) {
                    ablk = g->thread_ws + (long)(ic / MCB) * g->a_elems;
                } else if (!g->gathered) {
                    if (ic != packed_ic) {
                        FN(fc_pack)(A, ic, mc, pc, kc, MR, apack);
                        packed_ic = ic;
                    }
                    ablk = apack;
                }
                const int jp0 = (int)((long)js * npanels / n_js);
                const int jp1 = (int)((long)(js + 1) * npanels / n_js);
                for (int jp = jp0; jp < jp1; jp++) {
                    const int j = jp * NR;
                    tile.nr = nc - j < NR ? nc - j : NR;
                    tile.lane0 = (long)jc + j;
                    if (!g->trans) FN(tile_runs)(&tile, (long)jc + j, tile.nr, epi);
                    const T *bp = g->shifted ? (const T *)B->p + jc + j
                                : g->b_packed ? (const T *)B->p + (long)pc * g->npad + (long)(jc + j) * kc
                                : g->bpack + (long)jp * kc * NR;
                    const long *boff = g->shifted ? B->offs + pc : NULL;
                    for (int ir = 0; ir < mc; ir += MR) {
                        tile.mr = mc - ir < MR ? mc - ir : MR;
                        tile.row0 = ic + ir;
                        /* row-major: C's row of the tile; column-major: its first column */
                        T *ct = g->trans ? C + ((long)jc + j) * ldc : C + (long)(ic + ir) * ldc;
                        if (g->trans) FN(tile_runs)(&tile, (long)ic + ir, tile.mr, epi);
                        if (g->gathered)
                            g->ks.ukrg(kc, (const T *)A->p + (A->doffs ? 0 : pc), A->offs + ic + ir,
                                       A->doffs ? A->doffs + pc : NULL, bp, ct, ldc,
                                       &tile);
                        else if (g->shifted)
                            g->ks.ukri(kc, ablk + (long)(ir / MR) * kc * MR, bp, boff, ct, ldc, &tile);
                        else
                            g->ks.ukr(kc, ablk + (long)(ir / MR) * kc * MR, bp, ct, ldc, &tile);
                    }
                }
            }
#if FC_OPENMP
            if (nth > 1) {
#pragma omp barrier
            }
#endif
        }
    }
}

/* C = alpha A . B + beta C by the micro-kernels of ks, tile by tile: A gathered
 * (a[aoff[i] + doff[p]], or a[aoff[i] + p] without doff), B packed in one depth
 * block, no epilogue. The last rows' tile is made whole, ks.MR rows (rows of
 * C and aoff past m included), unless rows4 and it has at most four. */
static void FN(gathered_tiles)(FN(kset) ks, int rows4, int m, int n, int k, T alpha, T beta, const T *a,
                               const long *aoff, const long *doff, const T *b, T *C, long ldc)
{
    fc_tile tile;
    tile.mr = ks.MR;
    tile.nseg = 1;
    tile.lo[0] = 0;
    tile.trans = 0;
    tile.alpha = (double)alpha;
    tile.beta = (double)beta;
    tile.e = NULL;
    for (int j = 0; j < n; j += ks.NR) {
        tile.nr = tile.hi[0] = n - j < ks.NR ? n - j : ks.NR;
        tile.lane0 = tile.col[0] = j;
        const T *bp = b + (long)j * k;
        for (int i = 0; i < m; i += ks.MR) {
            tile.row0 = i;
            tile.mr = rows4 && m - i <= 4 ? m - i : ks.MR;
            ks.ukrg(k, a, aoff + i, doff, bp, C + (long)i * ldc, ldc, &tile);
        }
    }
}

void FN(fc_gemm_gathered)(int m, int n, int k, T beta, const T *a, const long *aoff, const T *b, T *C, long ldc)
{
    if (m <= 0 || n <= 0) return;
    const fc_kernel_info *ki = fc_kernel();
    FN(gathered_tiles)(FN(kernels_for)(ki, m, 0), ki->ukrg_rows4, m, n, k, (T)1, beta, a, aoff, NULL, b, C, ldc);
}

int FN(fc_gemm)(int m, int n, int k, T alpha, const fc_view *A, const fc_view *B,
                T beta, T *C, long ldc, const fc_epilogue *epi, int nthreads, T *ws)
{
    if (m <= 0 || n <= 0) return 0;
    if (nthreads < 1) nthreads = 1;
    if (k < 0) k = 0;
    const fc_kernel_info *ki = fc_kernel();
    FN(gemm_ctx) g;
    g.m = m;
    g.n = n;
    g.k = k;
    g.prepacked = A->kind == FC_VIEW_PACKED;
    g.b_packed = B->kind == FC_VIEW_PACKED;
    g.shifted = B->kind == FC_VIEW_SHIFT;
    g.gathered = A->kind == FC_VIEW_GATHER;
    g.trans = epi != NULL && epi->trans;
    /* (a prepacked A is for a row-major product: packed for the kernels m selects) */
    g.ks = FN(kernels_for)(ki, m, !g.trans && !g.gathered && !g.b_packed);
    g.MR = g.ks.MR;
    g.NR = g.ks.NR;
    g.NC = FN(KNC)(ki);
    g.KCB = FN(depth_block)(k, FN(KKC)(ki));
    g.MCB = FN(row_block)(m, g.MR, FN(KMC)(ki));
    g.nkb = k > 0 ? (k + g.KCB - 1) / g.KCB : 1;   /* an empty product still stores beta C */
    g.mpad = (long)(m + g.MR - 1) / g.MR * g.MR;
    g.npad = (long)(n + g.NR - 1) / g.NR * g.NR;
    g.has_epi = FN(epilogue_active)(epi);
    g.alpha = alpha;
    g.beta = beta;
    g.C = C;
    g.ldc = ldc;
    g.A = A;
    g.B = B;
    g.epi = epi;

    /* one thread, A gathered, B packed in one depth block, whole rows of tiles and
     * no epilogue: the tiles straight to the micro-kernel */
    if (nthreads == 1 && g.gathered && g.b_packed && g.nkb == 1 && !g.has_epi && !g.trans && m % g.MR == 0) {
        unsigned fpmode = fc_fpmode_enter();
        FN(gathered_tiles)(g.ks, 0, m, n, k, alpha, beta, (const T *)A->p, A->offs, A->doffs, (const T *)B->p, C,
                           ldc);
        fc_fpmode_leave(fpmode);
        return 0;
    }

    T *own = NULL;
    if (ws == NULL) {
        own = (T *)fc_aligned_alloc(FN(fc_gemm_ws)(m, n, k, nthreads) * sizeof(T));
        if (own == NULL) return -1;
        ws = own;
    }
    long b_elems;
    FN(ws_layout)(m, n, k, ki, &b_elems, &g.a_elems);
    g.bpack = ws;
    g.thread_ws = ws + b_elems;
    /* a row-major B read once: in a product of one block of rows, and one block of
     * depth or one micro-panel of rows (a Linear's gradients: each panel of B, kc
     * rows of NR columns, then stays in L1 while every row of the product passes),
     * is read in place, its row offsets where the packed block would go: packing
     * would copy it for a single pass (whole panels only: the kernels read NR
     * columns) */
    fc_view Bin;
    if (B->kind == FC_VIEW_DENSE && B->cs == 1 && m <= g.MCB && (m <= g.MR || g.nkb == 1) && n % g.NR == 0
            && !g.trans && !g.gathered && !g.prepacked && g.ks.ukri != NULL && (long)k * (long)sizeof(long) <= b_elems * (long)sizeof(T)) {
        long *offs = (long *)ws;
        for (int p = 0; p < k; p++) offs[p] = (long)p * B->rs;
        memset(&Bin, 0, sizeof(Bin));
        Bin.kind = FC_VIEW_SHIFT;
        Bin.p = B->p;
        Bin.offs = offs;
        g.B = B = &Bin;
        g.shifted = 1;
    }
    g.Bt = fc_view_t(B);

    int next[2] = {0, 0};
    g.next = next;
    if (nthreads > 1) {
#if FC_OPENMP
#pragma omp parallel num_threads(nthreads)
        {
            unsigned fpmode = fc_fpmode_enter();
            FN(gemm_thread)(&g, omp_get_thread_num(), omp_get_num_threads());
            fc_fpmode_leave(fpmode);
        }
#else
        nthreads = 1;
#endif
    }
    if (nthreads == 1) {
        unsigned fpmode = fc_fpmode_enter();
        FN(gemm_thread)(&g, 0, 1);
        fc_fpmode_leave(fpmode);
    }
    if (own) fc_aligned_free(own);
    return 0;
}
