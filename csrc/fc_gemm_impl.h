/* Cache-blocking GEMM driver, instantiated for float and double by fc_gemm.c
 * (T = element type, FN(name) = name with the type suffix, KC/MC/NC blocks).
 *
 * Loop order (BLIS): jc over NC columns -> pc over KC depth (B block packed by
 * all threads) -> tasks over (MC rows x a range of NR panels) -> jr -> ir ->
 * micro-kernel. Every element of C is owned by one task and accumulates its
 * KC blocks in order, so results do not depend on the number of threads.
 */

/* Depth block: k split into equal blocks of at most KC (a short tail block
 * costs as much C traffic as a full one). */
static inline int FN(depth_block)(int k)
{
    int nb = (k + KC - 1) / KC;
    if (nb < 1) nb = 1;
    return (k + nb - 1) / nb;
}

/* Row block: m split into a count of equal blocks (a multiple of 4 once
 * there are several, so that threads share them evenly) of at most MC rows,
 * rounded up to MR. */
static inline int FN(row_block)(int m, int MR)
{
    int nb = (m + MC - 1) / MC;
    if (nb >= 3) nb = (nb + 3) / 4 * 4;
    if (nb < 1) nb = 1;
    int mb = (m + nb - 1) / nb;
    return (mb + MR - 1) / MR * MR;
}

static int FN(epilogue_active)(const fc_epilogue *e)
{
    return e != NULL && (e->bias_mode != FC_BIAS_NONE || e->act != FC_ACT_NONE);
}

/* Store an mr x nr tile (row stride NR) of product columns col0 .. col0 + nr
 * into rows of C (crow: C's row of the tile's first row) under the wrap/keep
 * column map of the epilogue: one store per run of kept columns. */
static void FN(store_wrapped)(void (*store)(T *, long, const T *, int, int, int, T,
                                            const fc_epilogue *, int, int),
                              T *crow, long ldc, const T *tile, int NR, int mr, int nr,
                              int col0, int wrap, int keep, T beta, const fc_epilogue *e, int row0)
{
    int j = 0;
    while (j < nr) {
        const int col = col0 + j, r = col / wrap, q = col % wrap;
        const int seg = wrap - q < nr - j ? wrap - q : nr - j;
        if (q < keep) {
            const int len = keep - q < seg ? keep - q : seg;
            const long cc = (long)r * keep + q;
            store(crow + cc, ldc, tile + j, NR, mr, len, beta, e, row0, (int)cc);
        }
        j += seg;
    }
}

/* Workspace layout: the shared B block, then per thread an A block and an
 * edge tile; every part starts on a 64-byte boundary. */
static void FN(ws_layout)(int m, int n, int k, const fc_kernel_info *ki,
                          long *b_elems, long *a_elems, long *thread_elems)
{
    const int MR = FN(KMR)(ki), NR = FN(KNR)(ki);
    long kc = FN(depth_block)(k);
    long nc = n < NC ? n : NC;
    long mc = m < MC ? m : MC;
    if (kc < 1) kc = 1;
    nc = (nc + NR - 1) / NR * NR;
    mc = (mc + MR - 1) / MR * MR;
    *b_elems = (kc * nc + 15) & ~15L;
    *a_elems = (mc * kc + 15) & ~15L;
    *thread_elems = *a_elems + (((long)MR * NR + 15) & ~15L);
}

size_t FN(fc_gemm_ws)(int m, int n, int k, int nthreads)
{
    long b_elems, a_elems, thread_elems;
    FN(ws_layout)(m, n, k, fc_kernel(), &b_elems, &a_elems, &thread_elems);
    return (size_t)(b_elems + (long)(nthreads < 1 ? 1 : nthreads) * thread_elems);
}

size_t FN(fc_gemm_packed_a_size)(int m, int k)
{
    const int MR = FN(KMR)(fc_kernel());
    return (size_t)((long)(m + MR - 1) / MR * MR * (k < 1 ? 1 : k));
}

void FN(fc_gemm_pack_a)(int m, int k, const fc_view *A, T *dst)
{
    const int MR = FN(KMR)(fc_kernel());
    const int KCB = FN(depth_block)(k);
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
    const int has_epi = FN(epilogue_active)(epi);
    const int wrap = epi != NULL && epi->wrap > 0 ? epi->wrap : 0;
    const int keep = wrap ? epi->keep : 0;
    if (k <= 0) {
        const int ncols = wrap ? (n / wrap) * keep + (n % wrap < keep ? n % wrap : keep) : n;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < ncols; j++) {
                T *c = C + (long)i * ldc + j;
                *c = beta == 0 ? (T)0 : beta * *c;
            }
        if (has_epi) FN(KSTORE)(fc_kernel())(C, ldc, NULL, 0, m, ncols, (T)0, epi, 0, 0);
        return 0;
    }
    const fc_kernel_info *ki = fc_kernel();
    const int MR = FN(KMR)(ki), NR = FN(KNR)(ki);
    const int KCB = FN(depth_block)(k);
    const int MCB = FN(row_block)(m, MR);
    const long mpad = (long)(m + MR - 1) / MR * MR;
    const int prepacked = A->kind == FC_VIEW_PACKED;
    void (*ukr)(long, const T *, const T *, T *, long, long, T, T) = FN(KUKR)(ki);
    void (*ukri)(long, const T *, const T *, const long *, T *, long, long, T, T) = FN(KUKRI)(ki);
    void (*ukra)(long, const T *, const long *, const T *, T *, long, long, T, T) = FN(KUKRA)(ki);
    void (*store)(T *, long, const T *, int, int, int, T, const fc_epilogue *, int, int) = FN(KSTORE)(ki);
    const int shifted = B->kind == FC_VIEW_SHIFT;
    const int a_inplace = A->kind == FC_VIEW_SHIFT;

    T *own = NULL;
    if (ws == NULL) {
        own = (T *)fc_aligned_alloc(FN(fc_gemm_ws)(m, n, k, nthreads) * sizeof(T));
        if (own == NULL) return -1;
        ws = own;
    }
    long b_elems, a_elems, thread_elems;
    FN(ws_layout)(m, n, k, ki, &b_elems, &a_elems, &thread_elems);
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
        T *apack = thread_ws + (long)tid * thread_elems;
        T *tile = apack + a_elems;
        for (int jc = 0; jc < n; jc += NC) {
            const int nc = n - jc < NC ? n - jc : NC;
            const int npanels = (nc + NR - 1) / NR;
            for (int pc = 0; pc < k; pc += KCB) {
                const int kc = k - pc < KCB ? k - pc : KCB;
                const T beta_eff = pc == 0 ? beta : (T)1;
                const int last = pc + kc == k;
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
                    const T *ablk;
                    if (a_inplace) {
                        ablk = NULL;
                    } else if (prepacked) {
                        ablk = (const T *)A->p + (long)pc * mpad + (long)ic * kc;
                    } else {
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
                        const int nr = nc - j < NR ? nc - j : NR;
                        const T *bp = shifted ? (const T *)B->p + jc + j : bpack + (long)jp * kc * NR;
                        const long *boff = shifted ? B->offs + pc : NULL;
                        for (int ir = 0; ir < mc; ir += MR) {
                            const int mr = mc - ir < MR ? mc - ir : MR;
                            const T *ap = a_inplace ? NULL : ablk + (long)(ir / MR) * kc * MR;
                            /* column of C of the tile's first column (under the wrap map) */
                            long ccol = jc + j;
                            int direct = mr == MR && nr == NR;
                            if (wrap) {
                                const int q = (jc + j) % wrap;
                                ccol = (long)((jc + j) / wrap) * keep + q;
                                direct = direct && q + NR <= keep;   /* all its columns kept, in one row */
                            }
                            T *cij = C + (long)(ic + ir) * ldc + ccol;
                            const T *abase = a_inplace ? (const T *)A->p + pc : NULL;
                            const long *aoff = a_inplace ? A->offs + ic + ir : NULL;
                            const fc_epilogue *e = last && has_epi ? epi : NULL;
                            if (direct) {
                                if (a_inplace) ukra(kc, abase, aoff, bp, cij, ldc, 1, alpha, beta_eff);
                                else if (shifted) ukri(kc, ap, bp, boff, cij, ldc, 1, alpha, beta_eff);
                                else ukr(kc, ap, bp, cij, ldc, 1, alpha, beta_eff);
                                if (e) store(cij, ldc, NULL, NR, mr, nr, beta_eff, e, ic + ir, (int)ccol);
                            } else {
                                if (a_inplace) ukra(kc, abase, aoff, bp, tile, NR, 1, alpha, (T)0);
                                else if (shifted) ukri(kc, ap, bp, boff, tile, NR, 1, alpha, (T)0);
                                else ukr(kc, ap, bp, tile, NR, 1, alpha, (T)0);
                                if (wrap)
                                    FN(store_wrapped)(store, C + (long)(ic + ir) * ldc, ldc, tile, NR, mr, nr,
                                                      jc + j, wrap, keep, beta_eff, e, ic + ir);
                                else
                                    store(cij, ldc, tile, NR, mr, nr, beta_eff, e, ic + ir, jc + j);
                            }
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
