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

int FN(fc_gemm)(int m, int n, int k, T alpha, const fc_view *A, const fc_view *B,
                T beta, T *C, long ldc, const fc_epilogue *epi, int nthreads, T *ws)
{
    if (m <= 0 || n <= 0) return 0;
    if (nthreads < 1) nthreads = 1;
    if (k < 0) k = 0;
    const fc_kernel_info *ki = fc_kernel();
    const int prepacked = A->kind == FC_VIEW_PACKED;
    const int shifted = B->kind == FC_VIEW_SHIFT;
    const int gathered = A->kind == FC_VIEW_GATHER;
    const int trans = epi != NULL && epi->trans;
    /* (a prepacked A is for a row-major product: packed for the kernels m selects) */
    const FN(kset) ks = FN(kernels_for)(ki, m, !trans && !gathered);
    const int MR = ks.MR, NR = ks.NR, NC = FN(KNC)(ki);
    const int KCB = FN(depth_block)(k, FN(KKC)(ki));
    const int MCB = FN(row_block)(m, MR, FN(KMC)(ki));
    const int nkb = k > 0 ? (k + KCB - 1) / KCB : 1;   /* an empty product still stores beta C */
    const long mpad = (long)(m + MR - 1) / MR * MR;
    const int has_epi = FN(epilogue_active)(epi);
    void (*ukr)(long, const T *, const T *, T *, long, const fc_tile *) = ks.ukr;
    void (*ukri)(long, const T *, const T *, const long *, T *, long, const fc_tile *) = ks.ukri;
    void (*ukrg)(long, const T *, const long *, const long *, const T *, T *, long,
                 const fc_tile *) = ks.ukrg;

    T *own = NULL;
    if (ws == NULL) {
        own = (T *)fc_aligned_alloc(FN(fc_gemm_ws)(m, n, k, nthreads) * sizeof(T));
        if (own == NULL) return -1;
        ws = own;
    }
    long b_elems, a_elems;
    FN(ws_layout)(m, n, k, ki, &b_elems, &a_elems);
    T *bpack = ws;
    T *thread_ws = ws + b_elems;
    const fc_view Bt = fc_view_t(B);

#if FC_OPENMP
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
#endif
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        unsigned fpmode = fc_fpmode_enter();
        T *apack = thread_ws + (long)tid * a_elems;
        fc_tile tile;
        tile.alpha = (double)alpha;
        tile.trans = trans;
        for (int jc = 0; jc < n; jc += NC) {
            const int nc = n - jc < NC ? n - jc : NC;
            const int npanels = (nc + NR - 1) / NR;
            for (int kb = 0; kb < nkb; kb++) {
                const int pc = kb * KCB;
                const int kc = k - pc < KCB ? k - pc : KCB;
                tile.beta = (double)(kb == 0 ? beta : (T)1);
                tile.e = kb == nkb - 1 && has_epi ? epi : NULL;
#if FC_OPENMP
#pragma omp for schedule(static)
#endif
                for (int jp = 0; jp < (shifted ? 0 : npanels); jp++) {
                    int w = nc - jp * NR < NR ? nc - jp * NR : NR;
                    FN(fc_pack)(&Bt, jc + jp * NR, w, pc, kc, NR, bpack + (long)jp * kc * NR);
                }
                const int n_ic = (m + MCB - 1) / MCB;
                int n_js = 1;
                while (n_ic * n_js < 4 * nthreads && n_js * 2 <= npanels) n_js *= 2;
                const int ntasks = n_ic * n_js;
                int packed_ic = -1;
#if FC_OPENMP
#pragma omp for schedule(static)
#endif
                for (int task = 0; task < ntasks; task++) {
                    const int ic = (task / n_js) * MCB;
                    const int js = task % n_js;
                    const int mc = m - ic < MCB ? m - ic : MCB;
                    const T *ablk = NULL;
                    if (prepacked) {
                        ablk = (const T *)A->p + (long)pc * mpad + (long)ic * kc;
                    } else if (!gathered) {
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
                        if (!trans) FN(tile_runs)(&tile, (long)jc + j, tile.nr, epi);
                        const T *bp = shifted ? (const T *)B->p + jc + j : bpack + (long)jp * kc * NR;
                        const long *boff = shifted ? B->offs + pc : NULL;
                        for (int ir = 0; ir < mc; ir += MR) {
                            tile.mr = mc - ir < MR ? mc - ir : MR;
                            tile.row0 = ic + ir;
                            /* row-major: C's row of the tile; column-major: its first column */
                            T *ct = trans ? C + ((long)jc + j) * ldc : C + (long)(ic + ir) * ldc;
                            if (trans) FN(tile_runs)(&tile, (long)ic + ir, tile.mr, epi);
                            if (gathered)
                                ukrg(kc, (const T *)A->p, A->offs + ic + ir, A->doffs + pc, bp, ct, ldc,
                                     &tile);
                            else if (shifted)
                                ukri(kc, ablk + (long)(ir / MR) * kc * MR, bp, boff, ct, ldc, &tile);
                            else
                                ukr(kc, ablk + (long)(ir / MR) * kc * MR, bp, ct, ldc, &tile);
                        }
                    }
                }
            }
        }
        fc_fpmode_leave(fpmode);
    }
    if (own) fc_aligned_free(own);
    return 0;
}
