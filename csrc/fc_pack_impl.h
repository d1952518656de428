/* Packing routines, instantiated for float and double by fc_pack.c
 * (T = element type, FN(name) = name with the type suffix). */

/* Dense operand: rows [i0, i0+ni) are the panel dimension, [p0, p0+kc) the depth. */
static void FN(pack_dense)(const fc_view *v, int i0, int ni, int p0, int kc, int w, T *dst)
{
    const T *src = (const T *)v->p;
    long rs = v->rs, cs = v->cs;
    for (int ip = 0; ip < ni; ip += w) {
        int wi = ni - ip < w ? ni - ip : w;
        T *d = dst + (long)(ip / w) * kc * w;
        const T *s0 = src + (long)(i0 + ip) * rs + (long)p0 * cs;
        if (rs == 1) {
            /* panel rows are contiguous in memory */
            for (int p = 0; p < kc; p++) {
                const T *s = s0 + (long)p * cs;
                int i = 0;
                for (; i < wi; i++) d[(long)p * w + i] = s[i];
                for (; i < w; i++) d[(long)p * w + i] = 0;
            }
        } else if (cs == 1) {
            /* depth contiguous: a transpose in register blocks */
            FC_TRANSPOSE(s0, rs, d, w, wi, kc);
            if (wi < w)
                for (int p = 0; p < kc; p++)
                    for (int i = wi; i < w; i++) d[(long)p * w + i] = 0;
        } else {
            for (int i = 0; i < wi; i++) {
                const T *s = s0 + (long)i * rs;
                for (int p = 0; p < kc; p++) d[(long)p * w + i] = s[(long)p * cs];
            }
            for (int i = wi; i < w; i++)
                for (int p = 0; p < kc; p++) d[(long)p * w + i] = 0;
        }
    }
}

/* Copy a run of n taps along one input row: dst[u] = row[w0 + u * sw] where
 * 0 <= w0 + u * sw < W, zero elsewhere. */
static inline void FN(copy_row_run)(const T *row, int W, int w0, int sw, int n, T *dst, long dstride)
{
    int u0 = 0, u1 = n;
    if (w0 < 0) u0 = (-w0 + sw - 1) / sw;
    if (u0 > n) u0 = n;
    /* last valid u: w0 + u * sw <= W - 1 */
    if (w0 + (long)(n - 1) * sw > W - 1) u1 = (W - 1 - w0) < 0 ? 0 : (W - 1 - w0) / sw + 1;
    if (u1 < u0) u1 = u0;
    int u = 0;
    for (; u < u0; u++) dst[u * dstride] = 0;
    const T *src = row + w0;
    if (sw == 1) {
        for (; u < u1; u++) dst[u * dstride] = src[u];
    } else {
        for (; u < u1; u++) dst[u * dstride] = src[(long)u * sw];
    }
    for (; u < n; u++) dst[u * dstride] = 0;
}

/* Patch operand with the panel dimension along pixels (oh, ow) and the depth
 * along taps (c, r, s): used for B of the forward convolution. Taps are
 * walked incrementally (no divisions), each one over all panels. */
static void FN(pack_patch_pix)(const fc_view *v, int i0, int ni, int p0, int kc, int w, T *dst)
{
    const fc_conv_geom *g = &v->g;
    const T *x = (const T *)v->p;
    const int RS = g->R * g->S;
    const int npanels = (ni + w - 1) / w;
    int c = p0 / RS, r = (p0 % RS) / g->S, s = p0 % g->S;
    for (int p = 0; p < kc; p++) {
        const T *xc = x + (long)c * g->H * g->W;
        const int hoff = r * g->dh - g->ph, woff = s * g->dw - g->pw;
        int oh = i0 / g->Q, ow = i0 % g->Q;
        for (int ip = 0; ip < npanels; ip++) {
            const int wi = ni - ip * w < w ? ni - ip * w : w;
            T *dp = dst + ((long)ip * kc + p) * w;
            int i = 0;
            while (i < wi) {
                /* a run of pixels along one output row */
                int run = g->Q - ow;
                if (run > wi - i) run = wi - i;
                const int h = oh * g->sh + hoff;
                if (h < 0 || h >= g->H) {
                    for (int u = 0; u < run; u++) dp[i + u] = 0;
                } else {
                    FN(copy_row_run)(xc + (long)h * g->W, g->W, ow * g->sw + woff, g->sw, run, dp + i, 1);
                }
                i += run;
                ow += run;
                if (ow == g->Q) { ow = 0; oh++; }
            }
            for (; i < w; i++) dp[i] = 0;
        }
        if (++s == g->S) {
            s = 0;
            if (++r == g->R) { r = 0; c++; }
        }
    }
}

/* Patch operand with the panel dimension along taps (c, r, s) and the depth
 * along pixels: used for B of the weight gradient (B = patches^T). */
static void FN(pack_patch_tap)(const fc_view *v, int i0, int ni, int p0, int kc, int w, T *dst)
{
    const fc_conv_geom *g = &v->g;
    const T *x = (const T *)v->p;
    const int RS = g->R * g->S;
    for (int ip = 0; ip < ni; ip += w) {
        int wi = ni - ip < w ? ni - ip : w;
        T *d = dst + (long)(ip / w) * kc * w;
        for (int i = 0; i < wi; i++) {
            int t = i0 + ip + i;
            int c = t / RS, rs = t % RS, r = rs / g->S, s = rs % g->S;
            const T *xc = x + (long)c * g->H * g->W;
            int hoff = r * g->dh - g->ph, woff = s * g->dw - g->pw;
            int oh = p0 / g->Q, ow = p0 % g->Q, p = 0;
            while (p < kc) {
                int run = g->Q - ow;
                if (run > kc - p) run = kc - p;
                int h = oh * g->sh + hoff;
                if (h < 0 || h >= g->H) {
                    for (int u = 0; u < run; u++) d[(long)(p + u) * w + i] = 0;
                } else {
                    FN(copy_row_run)(xc + (long)h * g->W, g->W, ow * g->sw + woff, g->sw, run,
                                     d + (long)p * w + i, w);
                }
                p += run;
                ow += run;
                if (ow == g->Q) { ow = 0; oh++; }
            }
        }
        for (int i = wi; i < w; i++)
            for (int p = 0; p < kc; p++) d[(long)p * w + i] = 0;
    }
}

/* Images operand, channels as the panel dimension, pixels as the depth: each
 * image's run of pixels is one transpose of (channels x pixels) into the
 * panel rows. */
static void FN(pack_images)(const fc_view *v, int i0, int ni, int p0, int kc, int w, T *dst)
{
    const T *src = (const T *)v->p;
    const long pix = v->rs, img = v->cs;
    for (int ip = 0; ip < ni; ip += w) {
        const int wi = ni - ip < w ? ni - ip : w;
        T *d = dst + (long)(ip / w) * kc * w;
        int p = 0;
        while (p < kc) {
            const long j = (long)p0 + p, n = j / pix, q = j % pix;
            const int run = (int)(pix - q < kc - p ? pix - q : kc - p);
            FC_TRANSPOSE(src + n * img + (long)(i0 + ip) * pix + q, pix, d + (long)p * w, w, wi, run);
            if (wi < w)
                for (int u = 0; u < run; u++)
                    for (int i = wi; i < w; i++) d[(long)(p + u) * w + i] = 0;
            p += run;
        }
    }
}

void FN(fc_pack)(const fc_view *v, int i0, int ni, int p0, int kc, int w, T *dst)
{
    if (v->kind == FC_VIEW_IMAGES)
        FN(pack_images)(v, i0, ni, p0, kc, w, dst);   /* B = the transpose: panels of channels */
    else if (v->kind == FC_VIEW_DENSE)
        FN(pack_dense)(v, i0, ni, p0, kc, w, dst);
    else if (v->trans)
        FN(pack_patch_pix)(v, i0, ni, p0, kc, w, dst);
    else
        FN(pack_patch_tap)(v, i0, ni, p0, kc, w, dst);
}
