# cython: language_level=3
"""Convolution kernels: implicit GEMM on the csrc engine.

conv2d_forward          y = W * x (+ bias, activation)      -- patches packed from NCHW
conv2d_backward_data    dx = col2im(W^T dy)                   -- per (image, channel block)
conv2d_backward_weight  dW = sum_n dy_n patches_n^T          -- per-chunk partials, fixed-order sum

Transposed convolution uses the same three with roles swapped (see
fastcnn.functional.conv). Work is split by problem size only, so results are
bitwise identical for any thread count.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memset, memcpy
cimport numpy as cnp
import numpy as np

from fastcnn._kernels.fc_gemm cimport *
from fastcnn._kernels._reduce cimport plane_sum

cnp.import_array()
fc_init()


def set_isa(str name):
    cdef dict table = {"generic": FC_ISA_GENERIC, "avx2": FC_ISA_AVX2, "avx512": FC_ISA_AVX512,
                       "auto": FC_ISA_AUTO}
    if fc_set_isa(table[name]) != 0:
        raise ValueError(f"isa {name!r} is not supported by this CPU")


ctypedef struct Geom:
    int N, G, Cg, H, W, Kg, R, S, P, Q, sh, sw, ph, pw, dh, dw


cdef Geom make_geom(cnp.ndarray x, cnp.ndarray w, int groups, int P, int Q,
                    tuple stride, tuple padding, tuple dilation):
    """x: the convolution's input (N, C, H, W); w: its weight (K, C/groups, R, S)."""
    cdef Geom g
    g.N = x.shape[0]
    g.G = groups
    g.Cg = x.shape[1] // groups
    g.H = x.shape[2]
    g.W = x.shape[3]
    g.Kg = w.shape[0] // groups
    g.R = w.shape[2]
    g.S = w.shape[3]
    g.P = P
    g.Q = Q
    g.sh, g.sw = stride
    g.ph, g.pw = padding
    g.dh, g.dw = dilation
    return g


cdef inline fc_conv_geom conv_geom(const Geom *g) noexcept nogil:
    cdef fc_conv_geom cg
    cg.C = g.Cg
    cg.H = g.H
    cg.W = g.W
    cg.R = g.R
    cg.S = g.S
    cg.P = g.P
    cg.Q = g.Q
    cg.sh = g.sh
    cg.sw = g.sw
    cg.ph = g.ph
    cg.pw = g.pw
    cg.dh = g.dh
    cg.dw = g.dw
    return cg


cdef inline fc_view dense(const void *p, long rs, long cs) noexcept nogil:
    cdef fc_view v
    memset(&v, 0, sizeof(v))
    v.kind = FC_VIEW_DENSE
    v.trans = 0
    v.p = p
    v.rs = rs
    v.cs = cs
    return v


cdef inline fc_view patches(const void *p, const Geom *g, int trans) noexcept nogil:
    """The implicit im2col matrix of one image group: (Cg*R*S) x (P*Q), or its transpose."""
    cdef fc_view v
    memset(&v, 0, sizeof(v))
    v.kind = FC_VIEW_PATCH
    v.trans = trans
    v.p = p
    v.rs = 0
    v.cs = 0
    v.g = conv_geom(g)
    return v


cdef inline fc_epilogue row_epilogue(const void *bias, int act, double slope) noexcept nogil:
    """Bias per output row (channel), then the activation."""
    cdef fc_epilogue e
    e.bias_mode = FC_BIAS_ROW if bias != NULL else FC_BIAS_NONE
    e.bias = bias
    e.act = act
    e.slope = slope
    e.wrap = 0
    e.keep = 0
    e.bstride = 0
    return e


cdef inline int gemm(floating *C, int m, int n, int k, const fc_view *A, const fc_view *B,
                     floating beta, long ldc, const fc_epilogue *epi, int nthreads,
                     floating *ws) noexcept nogil:
    if floating is float:
        return fc_gemm_s(m, n, k, 1.0, A, B, beta, C, ldc, epi, nthreads, ws)
    else:
        return fc_gemm_d(m, n, k, 1.0, A, B, beta, C, ldc, epi, nthreads, ws)


cdef size_t gemm_ws(int itemsize, int m, int n, int k, int nthreads):
    if itemsize == 4:
        return fc_gemm_ws_s(m, n, k, nthreads)
    return fc_gemm_ws_d(m, n, k, nthreads)


cdef class Workspace:
    """Per-thread scratch taken from one 64-byte-aligned block sized once per call."""
    cdef object buf
    cdef char *base
    cdef Py_ssize_t stride

    def __init__(self, int nthreads, Py_ssize_t nbytes):
        self.stride = (nbytes + 63) // 64 * 64
        self.buf = np.empty(self.stride * nthreads + 64, dtype=np.uint8)
        cdef char *p = <char *>cnp.PyArray_DATA(self.buf)
        self.base = p + ((64 - (<size_t>p) % 64) % 64)


cdef inline void *ws_for(Workspace ws, int tid) noexcept nogil:
    return ws.base + tid * ws.stride


# Tasks per thread below which one problem is split across threads instead.
DEF TASKS_PER_THREAD = 4


# ---------------------------------------------------------------------------
# forward

cdef inline void pack_a(floating *dst, int m, int k, const fc_view *A) noexcept nogil:
    if floating is float:
        fc_gemm_pack_a_s(m, k, A, dst)
    else:
        fc_gemm_pack_a_d(m, k, A, dst)


cdef inline fc_view shifted(const void *p, const long *offs) noexcept nogil:
    cdef fc_view v
    memset(&v, 0, sizeof(v))
    v.kind = FC_VIEW_SHIFT
    v.trans = 0
    v.p = p
    v.rs = 0
    v.cs = 0
    v.offs = offs
    return v


cdef inline fc_view packed(const void *p) noexcept nogil:
    cdef fc_view v
    memset(&v, 0, sizeof(v))
    v.kind = FC_VIEW_PACKED
    v.trans = 0
    v.p = p
    v.rs = 0
    v.cs = 0
    return v


cdef inline bint use_shift(const Geom *g) noexcept nogil:
    """Stride-1 convolutions read B in place from a zero-padded copy of the image,
    computing (Wp - Q) extra columns per output row; worth it unless those dominate."""
    return g.sh == 1 and g.sw == 1 and 4 * g.dw * (g.S - 1) <= g.Q + 8


cdef inline void pad_into(const floating *x, floating *xp, const Geom *g, int Hp, int Wp,
                          long cstride) noexcept nogil:
    """Place image x (Cg x H x W) at (ph, pw) of zeroed Hp x Wp planes, one every cstride elements."""
    cdef int c, h, hp
    cdef int wn = g.W if g.W < Wp - g.pw else Wp - g.pw
    if wn <= 0:
        return
    for c in range(g.Cg):
        for h in range(g.H):
            hp = h + g.ph
            if hp >= Hp:
                break
            memcpy(xp + c * cstride + <long>hp * Wp + g.pw, x + (<long>c * g.H + h) * g.W,
                   <size_t>wn * sizeof(floating))


cdef inline void pad_image(const floating *x, floating *xp, const Geom *g, int Hp, int Wp,
                           long total) noexcept nogil:
    """xp (Cg x Hp x Wp, then zeros up to total) = x placed at (ph, pw) with zero borders."""
    memset(xp, 0, <size_t>total * sizeof(floating))
    pad_into(x, xp, g, Hp, Wp, <long>Hp * Wp)


cdef cnp.ndarray shift_offsets(const Geom *g, int Hp, int Wp, long cstride=0):
    """Offset of every tap (c, r, s) in zero-padded Hp x Wp planes placed every
    cstride elements (default Hp * Wp), followed by 16 zeros (the rows a last
    partial micro-tile of A reads)."""
    cdef int crs = g.Cg * g.R * g.S, c, r, s, t = 0
    cdef cnp.ndarray offs = np.zeros(crs + 16, dtype=np.int64)
    cdef long *o = <long *>cnp.PyArray_DATA(offs)
    if cstride == 0:
        cstride = <long>Hp * Wp
    for c in range(g.Cg):
        for r in range(g.R):
            for s in range(g.S):
                o[t] = c * cstride + <long>r * g.dh * Wp + s * g.dw
                t += 1
    return offs


cdef inline long padded_image_elems(const Geom *g, int Hp, int Wp) noexcept nogil:
    """A padded image plus the slack that in-place reads run past its end."""
    return (<long>g.Cg * Hp * Wp + g.dw * (g.S - 1) + 64 + 15) // 16 * 16


cdef int _forward_task(int t, floating *x, floating *bias, floating *y, const Geom *g,
                       int act, double slope, floating *wpack, long wpack_elems,
                       const long *offs, long xp_elems, int inner, floating *wsp) noexcept nogil:
    """One (image, group) of the forward convolution."""
    cdef int crs = g.Cg * g.R * g.S, pq = g.P * g.Q
    cdef int n = t // g.G, gi = t % g.G
    cdef int Hp = g.P + g.dh * (g.R - 1), Wp = g.Q + g.dw * (g.S - 1)
    cdef fc_view A = packed(wpack + gi * wpack_elems), B
    cdef fc_epilogue epi = row_epilogue((bias + <long>gi * g.Kg) if bias != NULL else NULL, act, slope)
    cdef floating *xn = x + (<long>n * g.G * g.Cg + <long>gi * g.Cg) * g.H * g.W
    cdef floating *yt = y + (<long>n * g.G * g.Kg + <long>gi * g.Kg) * pq
    if offs == NULL:
        B = patches(xn, g, 0)
        return gemm(yt, g.Kg, pq, crs, &A, &B, <floating>0, pq, &epi, inner, wsp)
    # product columns run over the padded width; the epilogue keeps the first Q of each Wp
    pad_image(xn, wsp, g, Hp, Wp, xp_elems)
    B = shifted(wsp, offs)
    epi.wrap = Wp
    epi.keep = g.Q
    return gemm(yt, g.Kg, (g.P - 1) * Wp + g.Q, crs, &A, &B, <floating>0, pq, &epi, inner,
                wsp + xp_elems)


cdef int _forward(floating *x, floating *w, floating *bias, floating *y, Geom g,
                  int act, double slope, int n_threads, Workspace ws, floating *wpack,
                  long wpack_elems, const long *offs, long xp_elems) noexcept nogil:
    cdef int ntasks = g.N * g.G, crs = g.Cg * g.R * g.S
    cdef int t, gi, rc = 0
    cdef fc_view A
    # the weights are packed once per group and shared by every image
    for gi in range(g.G):
        A = dense(w + <long>gi * g.Kg * crs, crs, 1)
        pack_a(wpack + gi * wpack_elems, g.Kg, crs, &A)
    if ntasks >= TASKS_PER_THREAD * n_threads or n_threads == 1:
        # parallel over (image, group); serial products
        for t in prange(ntasks, schedule='static', num_threads=n_threads):
            rc |= _forward_task(t, x, bias, y, &g, act, slope, wpack, wpack_elems, offs, xp_elems,
                                1, <floating *>ws_for(ws, threadid()))
    else:
        # few problems: each product is parallel (no nested parallel regions)
        for t in range(ntasks):
            rc |= _forward_task(t, x, bias, y, &g, act, slope, wpack, wpack_elems, offs, xp_elems,
                                n_threads, <floating *>ws_for(ws, 0))
    return rc


def conv2d_forward(cnp.ndarray x, cnp.ndarray w, bias, cnp.ndarray y, int groups,
                   tuple stride, tuple padding, tuple dilation, int act=0, double slope=0.01,
                   int n_threads=1):
    """y (N, K, P, Q) = conv(x (N, C, H, W), w (K, C/groups, R, S)) + bias, then activation."""
    cdef Geom g = make_geom(x, w, groups, y.shape[2], y.shape[3],
                            stride, padding, dilation)
    cdef int crs = g.Cg * g.R * g.S, pq = g.P * g.Q
    cdef bint outer = g.N * g.G >= TASKS_PER_THREAD * n_threads or n_threads == 1
    cdef int wthreads = n_threads if outer else 1
    cdef int inner = 1 if outer else n_threads
    cdef long isz = x.itemsize
    cdef int Hp = g.P + g.dh * (g.R - 1), Wp = g.Q + g.dw * (g.S - 1)
    cdef long xp_elems = 0, per_thread
    cdef cnp.ndarray offs_arr = None
    cdef const long *offs = NULL
    if use_shift(&g):
        xp_elems = padded_image_elems(&g, Hp, Wp)
        per_thread = xp_elems + <long>gemm_ws(isz, g.Kg, g.P * Wp, crs, inner)
        offs_arr = shift_offsets(&g, Hp, Wp)
        offs = <const long *>cnp.PyArray_DATA(offs_arr)
    else:
        per_thread = gemm_ws(isz, g.Kg, pq, crs, inner)
    cdef Workspace ws = Workspace(wthreads, isz * per_thread)
    cdef void *bp = NULL if bias is None else cnp.PyArray_DATA(bias)
    cdef long pelems = (<long>(fc_gemm_packed_a_size_s(g.Kg, crs) if isz == 4
                               else fc_gemm_packed_a_size_d(g.Kg, crs)) + 15) // 16 * 16
    cdef Workspace wpack = Workspace(1, isz * pelems * g.G)
    cdef int rc
    if x.dtype == np.float32:
        with nogil:
            rc = _forward(<float *>cnp.PyArray_DATA(x), <float *>cnp.PyArray_DATA(w), <float *>bp,
                          <float *>cnp.PyArray_DATA(y), g, act, slope, n_threads, ws,
                          <float *>ws_for(wpack, 0), pelems, offs, xp_elems)
    else:
        with nogil:
            rc = _forward(<double *>cnp.PyArray_DATA(x), <double *>cnp.PyArray_DATA(w), <double *>bp,
                          <double *>cnp.PyArray_DATA(y), g, act, slope, n_threads, ws,
                          <double *>ws_for(wpack, 0), pelems, offs, xp_elems)
    if rc:
        raise MemoryError("fastcnn: out of memory in conv2d")
    return y


# ---------------------------------------------------------------------------
# backward data: dx = col2im(W^T dy)

cdef inline void col2im_channels(const floating *col, floating *dx, int nch, const Geom *g) noexcept nogil:
    """dx[c] = sum over taps of col[(c, r, s), (oh, ow)] for nch channels (dx zeroed first)."""
    cdef int c, r, s, oh, ow, h, wpos
    cdef long pq = <long>g.P * g.Q
    cdef const floating *cr
    cdef floating *xr
    memset(dx, 0, <size_t>nch * g.H * g.W * sizeof(floating))
    for c in range(nch):
        for r in range(g.R):
            for s in range(g.S):
                cr = col + ((<long>c * g.R + r) * g.S + s) * pq
                for oh in range(g.P):
                    h = oh * g.sh - g.ph + r * g.dh
                    if h < 0 or h >= g.H:
                        continue
                    xr = dx + (<long>c * g.H + h) * g.W
                    wpos = -g.pw + s * g.dw
                    if g.sw == 1 and wpos >= 0 and wpos + g.Q <= g.W:
                        for ow in range(g.Q):
                            xr[wpos + ow] += cr[oh * g.Q + ow]
                    else:
                        for ow in range(g.Q):
                            if wpos >= 0 and wpos < g.W:
                                xr[wpos] += cr[oh * g.Q + ow]
                            wpos = wpos + g.sw


cdef int _backward_data(floating *dy, floating *w, floating *dx, Geom g, int cb,
                        int n_threads, Workspace ws, long col_elems) noexcept nogil:
    cdef int ncb = (g.Cg + cb - 1) // cb
    cdef int ntasks = g.N * g.G * ncb
    cdef int crs = g.Cg * g.R * g.S, rs = g.R * g.S
    cdef int pq = g.P * g.Q
    cdef int t, n, gi, bi, c0, nch, rc = 0
    cdef fc_view A, B
    cdef floating *col
    for t in prange(ntasks, schedule='static', num_threads=n_threads):
        n = t // (g.G * ncb)
        gi = (t // ncb) % g.G
        bi = t % ncb
        c0 = bi * cb
        nch = g.Cg - c0 if g.Cg - c0 < cb else cb
        col = <floating *>ws_for(ws, threadid())
        # rows (c0 .. c0+nch) x (r, s) of W_g^T: element (tap, k) at w[k * crs + tap]
        A = dense(w + <long>gi * g.Kg * crs + <long>c0 * rs, 1, crs)
        B = dense(dy + (<long>n * g.G * g.Kg + <long>gi * g.Kg) * pq, pq, 1)
        rc |= gemm(col, nch * rs, pq, g.Kg, &A, &B, <floating>0, pq, NULL, 1, col + col_elems)
        col2im_channels(col, dx + ((<long>n * g.G + gi) * g.Cg + c0) * g.H * g.W, nch, &g)
    return rc


def conv2d_backward_data(cnp.ndarray dy, cnp.ndarray w, cnp.ndarray dx, int groups,
                         tuple stride, tuple padding, tuple dilation, int n_threads=1):
    """dx (N, C, H, W) = gradient of conv2d wrt its input, given dy (N, K, P, Q)."""
    cdef Geom g = make_geom(dx, w, groups, dy.shape[2], dy.shape[3],
                            stride, padding, dilation)
    cdef int rs = g.R * g.S, pq = g.P * g.Q
    cdef long isz = dy.itemsize
    # channel block: a col buffer of at most ~512 KiB, but enough tasks for the threads
    cdef int cb = max(1, min(g.Cg, <int>((512 * 1024) // (isz * rs * pq + 1))))
    while cb > 1 and g.N * g.G * ((g.Cg + cb - 1) // cb) < TASKS_PER_THREAD * n_threads:
        cb = (cb + 1) // 2
    cdef long col_elems = (<long>cb * rs * pq + 15) // 16 * 16
    cdef Workspace ws = Workspace(n_threads, isz * (col_elems + gemm_ws(isz, cb * rs, pq, g.Kg, 1)))
    cdef int rc
    if dy.dtype == np.float32:
        with nogil:
            rc = _backward_data(<float *>cnp.PyArray_DATA(dy), <float *>cnp.PyArray_DATA(w),
                                <float *>cnp.PyArray_DATA(dx), g, cb, n_threads, ws, col_elems)
    else:
        with nogil:
            rc = _backward_data(<double *>cnp.PyArray_DATA(dy), <double *>cnp.PyArray_DATA(w),
                                <double *>cnp.PyArray_DATA(dx), g, cb, n_threads, ws, col_elems)
    if rc:
        raise MemoryError("fastcnn: out of memory in conv2d backward")
    return dx


# ---------------------------------------------------------------------------
# backward weight: dW = sum over images of dy_n patches_n^T, in fixed-order chunks

cdef int _backward_weight_task(int t, floating *x, floating *dy, floating *part, const Geom *g,
                               int nchunks, bint trans, const long *offs, long xp_elems, int ipg,
                               int inner, floating *wsp) noexcept nogil:
    """One (chunk of images, group) of the weight gradient, into its partial sum."""
    cdef int crs = g.Cg * g.R * g.S, pq = g.P * g.Q
    cdef int ch = t // g.G, gi = t % g.G, n, rc = 0
    cdef int n0 = <int>((<long>ch * g.N) // nchunks), n1 = <int>((<long>(ch + 1) * g.N) // nchunks)
    cdef floating *cp = part + (<long>ch * g.G + gi) * g.Kg * crs
    cdef floating *xn
    cdef floating *dyn
    cdef fc_view A, B
    if offs != NULL:
        # stride 1: dW^T (crs x Kg) = shifted rows of ipg padded images stacked
        # per channel (read in place) . dy^T padded with zeros, ipg images a product
        n = n0
        while n < n1:
            rc |= _backward_weight_shift(x, dy, n, min(ipg, n1 - n), gi, cp, g, offs, xp_elems,
                                         <floating>(0 if n == n0 else 1), inner, wsp)
            n = n + ipg
        return rc
    for n in range(n0, n1):
        xn = x + (<long>n * g.G * g.Cg + <long>gi * g.Cg) * g.H * g.W
        dyn = dy + (<long>n * g.G * g.Kg + <long>gi * g.Kg) * pq
        if trans:
            # dW^T (crs x Kg) = patches (crs x pq) . dy^T (pq x Kg)
            A = patches(xn, g, 0)
            B = dense(dyn, 1, pq)
            rc |= gemm(cp, crs, g.Kg, pq, &A, &B, <floating>(0 if n == n0 else 1), g.Kg,
                       NULL, inner, wsp)
        else:
            # dW (Kg x crs) = dy (Kg x pq) . patches^T (pq x crs)
            A = dense(dyn, pq, 1)
            B = patches(xn, g, 1)
            rc |= gemm(cp, g.Kg, crs, pq, &A, &B, <floating>(0 if n == n0 else 1), crs,
                       NULL, inner, wsp)
    return rc


cdef int _backward_weight(floating *x, floating *dy, floating *part, Geom g, int nchunks,
                          bint trans, int n_threads, Workspace ws, const long *offs,
                          long xp_elems, int ipg) noexcept nogil:
    cdef int ntasks = nchunks * g.G, t, rc = 0
    if ntasks >= n_threads or n_threads == 1:
        for t in prange(ntasks, schedule='static', num_threads=n_threads):
            rc |= _backward_weight_task(t, x, dy, part, &g, nchunks, trans, offs, xp_elems, ipg, 1,
                                        <floating *>ws_for(ws, threadid()))
    else:
        for t in range(ntasks):
            rc |= _backward_weight_task(t, x, dy, part, &g, nchunks, trans, offs, xp_elems, ipg,
                                        n_threads, <floating *>ws_for(ws, 0))
    return rc


cdef int _backward_weight_shift(const floating *x, const floating *dy, int n0, int cnt, int gi,
                                floating *cp, const Geom *g, const long *offs, long xp_elems,
                                floating beta, int nthreads, floating *wsp) noexcept nogil:
    """Weight gradient of images n0 .. n0+cnt (group gi) accumulated into cp (crs x Kg)."""
    cdef int Hp = g.P + g.dh * (g.R - 1), Wp = g.Q + g.dw * (g.S - 1)
    cdef int crs = g.Cg * g.R * g.S, k, oh, i
    cdef long plane = <long>Hp * Wp, depth = plane * cnt
    cdef floating *xp = wsp
    cdef floating *dyp = wsp + xp_elems
    cdef fc_view A, B
    memset(xp, 0, <size_t>xp_elems * sizeof(floating))
    memset(dyp, 0, <size_t>g.Kg * depth * sizeof(floating))
    for i in range(cnt):
        # channel c of image i at xp + (c * cnt + i) * plane; tap offsets use the
        # channel stride cnt * plane (see conv2d_backward_weight)
        pad_into(x + ((<long>(n0 + i) * g.G + gi) * g.Cg) * g.H * g.W, xp + i * plane, g, Hp, Wp,
                 depth)
        for k in range(g.Kg):
            for oh in range(g.P):
                memcpy(dyp + k * depth + i * plane + <long>oh * Wp,
                       dy + (((<long>(n0 + i) * g.G + gi) * g.Kg + k) * g.P + oh) * g.Q,
                       <size_t>g.Q * sizeof(floating))
    A = shifted(xp, offs + (cnt - 1) * (crs + 16))
    B = dense(dyp, 1, depth)
    return gemm(cp, crs, g.Kg, <int>depth, &A, &B, beta, g.Kg, NULL, nthreads,
                dyp + (<long>g.Kg * depth + 15) // 16 * 16)


cdef inline void _sum_block(const floating *part, floating *acc, long stride, int nchunks,
                            long n) noexcept nogil:
    """acc[i] = part[i] + part[stride + i] + ... (nchunks terms, in order)."""
    cdef long i
    cdef int ch
    for i in range(n):
        acc[i] = part[i]
    for ch in range(1, nchunks):
        for i in range(n):
            acc[i] = acc[i] + part[ch * stride + i]


cdef void _reduce_chunks(floating *part, floating *dw, int nchunks, int G, int Kg, int crs,
                         bint trans, int n_threads) noexcept nogil:
    """dw[g, k, t] = sum over chunks, in chunk order, of part[chunk, g, (k, t) or (t, k)].

    Blocks of one row of the partial layout (contiguous, vectorised), written
    transposed when the partials are (t, k)."""
    cdef long wsz = <long>Kg * crs, stride = wsz * G
    cdef int rows = crs if trans else Kg, cols = Kg if trans else crs
    cdef long b, j
    cdef int gi, row
    cdef floating *acc
    cdef floating *dst
    if not trans:
        for b in prange(<long>G * rows, schedule='static', num_threads=n_threads):
            _sum_block(part + b * cols, dw + b * cols, stride, nchunks, cols)
        return
    # trans: accumulate one partial row (Kg values) in the first chunk's slot, then scatter
    for b in prange(<long>G * rows, schedule='static', num_threads=n_threads):
        gi = <int>(b // rows)
        row = <int>(b % rows)
        acc = part + b * cols
        _sum_block(acc, acc, stride, nchunks, cols)
        dst = dw + <long>gi * wsz + row
        for j in range(cols):
            dst[j * crs] = acc[j]


def conv2d_backward_weight(cnp.ndarray x, cnp.ndarray dy, cnp.ndarray dw, int groups,
                           tuple stride, tuple padding, tuple dilation, int n_threads=1):
    """dw (K, C/groups, R, S) = gradient of conv2d wrt its weight."""
    cdef Geom g = make_geom(x, dw, groups, dy.shape[2], dy.shape[3],
                            stride, padding, dilation)
    cdef int crs = g.Cg * g.R * g.S, pq = g.P * g.Q
    cdef long isz = x.itemsize
    cdef long wsz = <long>g.Kg * crs
    # chunks of images, by problem size only: at most 16, and partials of at most
    # ~2 MiB (or 4 chunks) so that large weights are not summed from many copies
    cdef long cap = max(4, (2 * 1024 * 1024) // (isz * wsz * g.G))
    cdef int nchunks = <int>min(g.N, 16, cap)
    if nchunks == 0:
        dw[...] = 0
        return dw
    # orientation with the least micro-tile padding
    cdef bint trans = (((g.Kg + 15) // 16) * 16 * crs) > (((crs + 15) // 16) * 16 * g.Kg)
    cdef bint outer = nchunks * g.G >= n_threads or n_threads == 1
    cdef int inner = 1 if outer else n_threads
    cdef int Hp = g.P + g.dh * (g.R - 1), Wp = g.Q + g.dw * (g.S - 1)
    cdef long xp_elems = 0, per_thread, plane = <long>Hp * Wp
    cdef cnp.ndarray offs_arr = None
    cdef const long *offs = NULL
    # images per product: enough depth (>= 512) to amortise the output tile traffic
    cdef int ipg = <int>max(1, min((g.N + nchunks - 1) // nchunks, (512 + plane - 1) // plane))
    if use_shift(&g):
        trans = True
        xp_elems = (g.Cg * ipg * plane + <long>g.dh * (g.R - 1) * Wp + g.dw * (g.S - 1) + 64 + 15) // 16 * 16
        per_thread = xp_elems + (<long>g.Kg * ipg * plane + 15) // 16 * 16 + \
            <long>gemm_ws(isz, crs, g.Kg, <int>(ipg * plane), inner)
        # one row of tap offsets per group size 1 .. ipg (channel stride = size x plane)
        offs_arr = np.concatenate([shift_offsets(&g, Hp, Wp, c * plane) for c in range(1, ipg + 1)])
        offs = <const long *>cnp.PyArray_DATA(offs_arr)
    else:
        per_thread = gemm_ws(isz, crs if trans else g.Kg, g.Kg if trans else crs, pq, inner)
    cdef Workspace ws = Workspace(n_threads if outer else 1, isz * per_thread)
    cdef cnp.ndarray part = np.empty(nchunks * g.G * wsz, dtype=x.dtype)
    cdef int rc
    if x.dtype == np.float32:
        with nogil:
            rc = _backward_weight(<float *>cnp.PyArray_DATA(x), <float *>cnp.PyArray_DATA(dy),
                                  <float *>cnp.PyArray_DATA(part), g, nchunks, trans, n_threads, ws,
                                  offs, xp_elems, ipg)
            if rc == 0:
                _reduce_chunks(<float *>cnp.PyArray_DATA(part), <float *>cnp.PyArray_DATA(dw),
                               nchunks, g.G, g.Kg, crs, trans, n_threads)
    else:
        with nogil:
            rc = _backward_weight(<double *>cnp.PyArray_DATA(x), <double *>cnp.PyArray_DATA(dy),
                                  <double *>cnp.PyArray_DATA(part), g, nchunks, trans, n_threads, ws,
                                  offs, xp_elems, ipg)
            if rc == 0:
                _reduce_chunks(<double *>cnp.PyArray_DATA(part), <double *>cnp.PyArray_DATA(dw),
                               nchunks, g.G, g.Kg, crs, trans, n_threads)
    if rc:
        raise MemoryError("fastcnn: out of memory in conv2d backward")
    return dw


# ---------------------------------------------------------------------------
# per-channel helpers: bias gradient and bias addition (NCHW or NC)

cdef void _channel_sum(const floating *dy, floating *out, int N, int C, long HW,
                       int n_threads) noexcept nogil:
    cdef int c, n
    cdef double acc
    for c in prange(C, schedule='static', num_threads=n_threads):
        acc = 0
        for n in range(N):
            acc = acc + plane_sum(dy + (<long>n * C + c) * HW, HW)
        out[c] = <floating>acc


def channel_sum(cnp.ndarray dy, cnp.ndarray out, int n_threads=1):
    """out[c] = sum of dy[:, c, ...] (fixed order, double accumulation)."""
    cdef int N = dy.shape[0], C = dy.shape[1]
    cdef long HW = dy.size // max(1, N * C)
    if dy.dtype == np.float32:
        with nogil:
            _channel_sum(<float *>cnp.PyArray_DATA(dy), <float *>cnp.PyArray_DATA(out), N, C, HW, n_threads)
    else:
        with nogil:
            _channel_sum(<double *>cnp.PyArray_DATA(dy), <double *>cnp.PyArray_DATA(out), N, C, HW, n_threads)
    return out


cdef void _add_channel_bias(floating *y, const floating *b, int N, int C, long HW,
                            int n_threads) noexcept nogil:
    cdef long t, i
    cdef floating bv
    cdef floating *p
    for t in prange(<long>N * C, schedule='static', num_threads=n_threads):
        bv = b[t % C]
        p = y + t * HW
        for i in range(HW):
            p[i] = p[i] + bv


def add_channel_bias(cnp.ndarray y, cnp.ndarray b, int n_threads=1):
    """y[:, c, ...] += b[c] in place."""
    cdef int N = y.shape[0], C = y.shape[1]
    cdef long HW = y.size // max(1, N * C)
    if y.dtype == np.float32:
        with nogil:
            _add_channel_bias(<float *>cnp.PyArray_DATA(y), <float *>cnp.PyArray_DATA(b), N, C, HW, n_threads)
    else:
        with nogil:
            _add_channel_bias(<double *>cnp.PyArray_DATA(y), <double *>cnp.PyArray_DATA(b), N, C, HW, n_threads)
    return y


# ---------------------------------------------------------------------------
# image phases (space-to-depth) for strided convolutions

cdef void _to_phases(const floating *x, floating *out, int NC, int H, int W, int sh, int sw,
                     int ph, int pw, int Hs, int Ws, int n_threads) noexcept nogil:
    cdef long t
    cdef int a, b, i, j, h, w
    cdef const floating *xc
    cdef floating *o
    for t in prange(<long>NC, schedule='static', num_threads=n_threads):
        xc = x + t * H * W
        for a in range(sh):
            for b in range(sw):
                o = out + ((t * sh + a) * sw + b) * Hs * Ws
                for i in range(Hs):
                    h = i * sh + a - ph
                    if h < 0 or h >= H:
                        memset(o + i * Ws, 0, Ws * sizeof(floating))
                        continue
                    for j in range(Ws):
                        w = j * sw + b - pw
                        o[i * Ws + j] = xc[h * W + w] if 0 <= w < W else 0


cdef void _from_phases(const floating *xph, floating *out, int NC, int H, int W, int sh, int sw,
                       int ph, int pw, int Hs, int Ws, int n_threads) noexcept nogil:
    cdef long t
    cdef int h, w, hh, ww
    cdef const floating *src
    cdef floating *o
    for t in prange(<long>NC, schedule='static', num_threads=n_threads):
        src = xph + t * sh * sw * Hs * Ws
        o = out + t * H * W
        for h in range(H):
            hh = h + ph
            for w in range(W):
                ww = w + pw
                if hh // sh < Hs and ww // sw < Ws:
                    o[h * W + w] = src[(((hh % sh) * sw + ww % sw) * Hs + hh // sh) * Ws + ww // sw]
                else:
                    o[h * W + w] = 0


def to_phases(cnp.ndarray x, cnp.ndarray out, tuple stride, tuple pad, int n_threads=1):
    """out (N, C*sh*sw, Hs, Ws)[n, (c, a, b), i, j] = x[n, c, i*sh + a - ph, j*sw + b - pw] (0 outside)."""
    cdef int NC = x.shape[0] * x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int sh = stride[0], sw = stride[1], ph = pad[0], pw = pad[1]
    cdef int Hs = out.shape[2], Ws = out.shape[3]
    if x.dtype == np.float32:
        with nogil:
            _to_phases(<float *>cnp.PyArray_DATA(x), <float *>cnp.PyArray_DATA(out), NC, H, W,
                       sh, sw, ph, pw, Hs, Ws, n_threads)
    else:
        with nogil:
            _to_phases(<double *>cnp.PyArray_DATA(x), <double *>cnp.PyArray_DATA(out), NC, H, W,
                       sh, sw, ph, pw, Hs, Ws, n_threads)
    return out


def from_phases(cnp.ndarray xph, cnp.ndarray out, tuple stride, tuple pad, int n_threads=1):
    """The inverse of to_phases: out (N, C, H, W) from its phases (0 where no phase covers it)."""
    cdef int NC = out.shape[0] * out.shape[1], H = out.shape[2], W = out.shape[3]
    cdef int sh = stride[0], sw = stride[1], ph = pad[0], pw = pad[1]
    cdef int Hs = xph.shape[2], Ws = xph.shape[3]
    if out.dtype == np.float32:
        with nogil:
            _from_phases(<float *>cnp.PyArray_DATA(xph), <float *>cnp.PyArray_DATA(out), NC, H, W,
                         sh, sw, ph, pw, Hs, Ws, n_threads)
    else:
        with nogil:
            _from_phases(<double *>cnp.PyArray_DATA(xph), <double *>cnp.PyArray_DATA(out), NC, H, W,
                         sh, sw, ph, pw, Hs, Ws, n_threads)
    return out
