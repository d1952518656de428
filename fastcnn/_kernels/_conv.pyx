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
from libc.stdlib cimport malloc, free
cimport numpy as cnp
import threading

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
    e.trans = 0
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


cdef inline void pad_plane(const floating *x, floating *xp, int H, int W, int Hp, int Wp,
                           int top, int left, bint borders) noexcept nogil:
    """xp (Hp x Wp) = x (H x W) placed at (top, left) (negative or past the end:
    cropped), zero elsewhere; with borders false only the image is copied (the
    zeros around it are already there)."""
    cdef int lead = 0 if left < 0 else (left if left < Wp else Wp)
    cdef int x0 = lead - left
    cdef int n = W - x0 if W - x0 < Wp - lead else Wp - lead
    cdef int hp, h, j
    cdef floating *row
    cdef const floating *src
    for hp in range(Hp):
        row = xp + <long>hp * Wp
        h = hp - top
        if h < 0 or h >= H or n <= 0:
            if borders:
                for j in range(Wp):
                    row[j] = 0
            continue
        src = x + <long>h * W + x0
        if borders:
            for j in range(lead):
                row[j] = 0
            for j in range(lead + n, Wp):
                row[j] = 0
        memcpy(row + lead, src, <size_t>n * sizeof(floating))


cdef inline void pad_image(const floating *x, floating *xp, const Geom *g, int Hp, int Wp,
                           long total) noexcept nogil:
    """xp (Cg x Hp x Wp, then zeros up to total) = x placed at (ph, pw) with zero
    borders; every element written once."""
    cdef long plane = <long>Hp * Wp
    cdef int c
    for c in range(g.Cg):
        pad_plane(x + <long>c * g.H * g.W, xp + c * plane, g.H, g.W, Hp, Wp, g.ph, g.pw, True)
    memset(xp + g.Cg * plane, 0, <size_t>(total - g.Cg * plane) * sizeof(floating))


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
        for t in prange(ntasks, schedule='dynamic', num_threads=n_threads):
            rc |= _forward_task(t, x, bias, y, &g, act, slope, wpack, wpack_elems, offs, xp_elems,
                                1, <floating *>ws_for(ws, threadid()))
    else:
        # few problems: each product is parallel (no nested parallel regions)
        for t in range(ntasks):
            rc |= _forward_task(t, x, bias, y, &g, act, slope, wpack, wpack_elems, offs, xp_elems,
                                n_threads, <floating *>ws_for(ws, 0))
    return rc


# ---------------------------------------------------------------------------
# Winograd F(4x4, 3x3), F(4x4, 2x2) and F(7x7, 2x2): 3x3 and 2x2 stride-1
# convolutions, the latter also for 4x4 stride-2 convolutions over image
# phases (csrc/fc_winograd_impl.h)

def winograd_tile(int r, int N, int P, int Q, bint pooled=False):
    """m of the transform F(m x m, r x r) that a Winograd convolution of N images of
    P x Q outputs runs: 7 for r = 2 where its 8 x 8 points a tile make fewer products
    than the 5 x 5 of m = 4 (7 x 7 outputs, say), and as many as 128 tiles of m = 4
    would (not with ``pooled``); else 4."""
    cdef long t7 = <long>((P + 6) // 7) * ((Q + 6) // 7) * 64
    if r == 2 and not pooled and t7 < <long>((P + 3) // 4) * ((Q + 3) // 4) * 25 and N * t7 >= 128 * 25:
        return 7
    return 4


def winograd(int N, int Cg, int Kg, int R, int S, tuple stride, tuple dilation, int groups, int P, int Q,
             long min_tiles=64):
    """Whether a convolution runs as Winograd F(4x4, 3x3) or F(m x m, 2x2): a 3x3 or
    2x2 kernel, stride 1, no dilation or groups, enough channels for its
    products, outputs for its tiles, and at least ``min_tiles`` 4x4 tiles to repay
    the transforms (of the weights too, unless they are kept between calls).
    The 2x2 transforms save less (25 products for 64, or 64 for 196, not 36 for
    144): they also need the products of 128 4x4 tiles or more, and outputs that
    fill their tiles well enough to do at most 1/1.9 of the direct products (4 an
    output)."""
    cdef int m = winograd_tile(R, N, P, Q) if R == S else 4
    cdef long tpi = <long>((P + m - 1) // m) * ((Q + m - 1) // m)
    cdef long tiles = <long>N * tpi, pts = <long>(m + R - 1) * (m + R - 1), pts4 = <long>(R + 3) * (R + 3)
    return (R == S and (R == 3 or R == 2) and stride == (1, 1) and dilation == (1, 1)
            and groups == 1 and Cg >= 16 and Kg >= 16 and P >= 4 and Q >= 4
            and tiles * pts >= min_tiles * pts4
            and (R == 3 or (tiles * pts >= 128 * pts4 and 40 * <long>P * Q >= 19 * pts * tpi)))


def isa_id():
    """The instruction set this module's kernels run (changes with set_isa)."""
    return fc_get_isa()


def direct3(int Cg, int K, int R, int S, tuple stride, tuple dilation, int groups, tuple padding, dtype,
            bint one_input=False):
    """Whether a float32 3x3 stride-1 convolution runs as the direct kernels (where the
    instruction set in use has them): its forward with one output channel, or
    (``one_input``) with one input channel, its weight gradient or its pooled forward."""
    return (R == 3 and S == 3 and stride == (1, 1) and dilation == (1, 1) and groups == 1
            and (Cg == 1 if one_input else K == 1) and dtype == np.float32
            and 0 <= padding[0] <= 2 and 0 <= padding[1] <= 2 and fc_direct3_available() != 0)


def conv3x3_direct(cnp.ndarray x, cnp.ndarray w, bias, cnp.ndarray y, tuple padding, int act=0,
                   double slope=0.01, int n_threads=1, bint pool=False, codes=None):
    """y (N, K, P, Q) = x (N, C, H, W) correlated with w (K, C, 3, 3), C or K one, stride 1,
    ``padding`` on both sides, + bias, activation; with ``pool`` (C one), y (N, K, P/2, Q/2)
    holds the result's 2x2 max pooling, and ``codes`` (None, or a uint8 array of y's
    shape) each window's argmax as max_pool2d_2x2_codes gives it."""
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], K = w.shape[0]
    cdef int ph = padding[0], pw = padding[1], rc
    cdef float *bp = NULL if bias is None else <float *>cnp.PyArray_DATA(bias)
    cdef unsigned char *cp = NULL
    if pool:
        act |= FC_POOL_2X2
    if codes is not None:
        cp = _codes_of("conv3x3_direct", codes, y, pool)
    if N == 0:
        return y
    with nogil:
        rc = fc_direct3_s(<float *>cnp.PyArray_DATA(x), <float *>cnp.PyArray_DATA(w), bp,
                          <float *>cnp.PyArray_DATA(y), N, C, K, H, W, ph, pw, act, slope, n_threads, cp)
    if rc == 2:
        raise MemoryError("conv3x3_direct: no memory for the padded input planes")
    if rc:
        raise RuntimeError("fastcnn: no direct 3x3 kernel for this instruction set")
    return y


cdef unsigned char *_codes_of(str who, object codes, cnp.ndarray y, bint pooled) except? NULL:
    """The data of a pooled kernel's window codes: a C-contiguous uint8 array of y's shape."""
    shape = (<object>y).shape
    if (not pooled or type(codes) is not np.ndarray or (<cnp.ndarray>codes).dtype != np.uint8
            or not (<cnp.ndarray>codes).flags.c_contiguous or (<object>codes).shape != shape):
        raise ValueError(f"{who}: codes must be a C-contiguous uint8 array of the pooled output's shape "
                         f"{shape} (and pooling asked for)")
    return <unsigned char *>cnp.PyArray_DATA(<cnp.ndarray>codes)


def conv3x3_direct_backward_weight(cnp.ndarray x, cnp.ndarray dy, cnp.ndarray dw, db, tuple padding,
                                   int n_threads=1):
    """dw (K, 1, 3, 3) and, unless None, db (K) of a one-input-channel 3x3 stride-1
    convolution of x (N, 1, H, W) with output gradient dy (N, K, P, Q)."""
    cdef int N = x.shape[0], H = x.shape[2], W = x.shape[3], K = dy.shape[1]
    cdef int ph = padding[0], pw = padding[1], rc
    cdef float *dbp = NULL if db is None else <float *>cnp.PyArray_DATA(db)
    cdef cnp.ndarray ws = scratch("direct3", (<Py_ssize_t>N * K * 160,), np.float32)
    with nogil:
        rc = fc_direct3_wgrad_s(<float *>cnp.PyArray_DATA(x), <float *>cnp.PyArray_DATA(dy),
                                <float *>cnp.PyArray_DATA(dw), dbp, N, K, H, W, ph, pw, n_threads,
                                <float *>cnp.PyArray_DATA(ws))
    if rc == 2:
        raise MemoryError("conv3x3_direct_backward_weight: no memory for the padded input planes")
    if rc:
        raise RuntimeError("fastcnn: no direct 3x3 kernel for this instruction set")
    return dw


def winograd_packed_nbytes(int r, int C, int K, dtype, int m=4):
    """The bytes of winograd_packed(r, C, K, dtype, m)."""
    cdef size_t u = 0
    dt = np.dtype(dtype)
    if dt == np.float32:
        fc_wino_ws_s(10 * m + r, 1, C, K, 4, 4, 1, &u)
    else:
        fc_wino_ws_d(10 * m + r, 1, C, K, 4, 4, 1, &u)
    return <Py_ssize_t>u * dt.itemsize


def winograd_packed(int r, int C, int K, dtype, int m=4):
    """A 64-byte aligned buffer for the transformed weights of an r x r layer of K x C
    channels under F(m x m, r x r) (see conv2d_winograd's ``upack``)."""
    dt = np.dtype(dtype)
    return aligned_empty(winograd_packed_nbytes(r, C, K, dt, m) // dt.itemsize, dt)


def aligned_empty(Py_ssize_t n, dtype):
    """An uninitialised 1-D array of n elements whose data is 64-byte aligned."""
    dt = np.dtype(dtype)
    cdef Py_ssize_t nbytes = n * dt.itemsize
    cdef cnp.ndarray buf = np.empty(nbytes + 64, dtype=np.uint8)
    cdef Py_ssize_t off = (64 - <Py_ssize_t>(<size_t>cnp.PyArray_DATA(buf) % 64)) % 64
    return buf[off:off + nbytes].view(dt)


cdef inline fc_phases *_phases(tuple spec, int H, int W, fc_phases *ps):
    """ps from (sh, sw, ph, pw) for an image of H x W (None: NULL)."""
    if spec is None:
        return NULL
    ps.sh, ps.sw, ps.ph, ps.pw = spec[0], spec[1], spec[2], spec[3]
    ps.H, ps.W = H, W
    ps.nhwc, ps.nhwc_ready = NULL, 0
    return ps


def winograd_nhwc_size(int r, int N, int C, int P, int Q, int m=4):
    """Elements of the channels-last copy of the phases that conv2d_winograd and
    conv2d_winograd_backward_weight share through ``x_nhwc`` (C: phase channels, P x Q
    the output; F(m x m, r x r))."""
    return <Py_ssize_t>fc_wino_nhwc_size(10 * m + r, N, C, P, Q)


cdef void _check_kept(str who, str name, object buf, object dtype, size_t need, str source, int m) except *:
    """A kept buffer of a kernel: C-contiguous, 64-byte aligned, of dtype, >= need elements
    (made by ``source`` with F(m x m, r x r))."""
    if (type(buf) is not np.ndarray or (<cnp.ndarray>buf).dtype != dtype or not (<cnp.ndarray>buf).flags.c_contiguous
            or <size_t>cnp.PyArray_DATA(<cnp.ndarray>buf) % 64):
        raise ValueError(f"{who}: {name} must be a C-contiguous, 64-byte aligned array of "
                         f"x's dtype {dtype} (from {source} with m={m})")
    if <size_t>(<cnp.ndarray>buf).size < need:
        raise ValueError(f"{who}: {name} holds {(<cnp.ndarray>buf).size} elements, {need} needed "
                         f"(from {source} with m={m})")


def conv2d_winograd(cnp.ndarray x, cnp.ndarray w, bias, cnp.ndarray y, tuple padding, int act=0,
                    double slope=0.01, int n_threads=1, upack=None, bint upack_ready=False,
                    tuple pooled_from=None, tuple x_phases=None, tuple y_phases=None, x_nhwc=None,
                    codes=None):
    """y (N, K, P, Q) = x (N, C, H, W) correlated with w (K, C, r, r) (r = 3 or 2), padding
    (top, left; negative crops). ``upack``: None, or a winograd_packed buffer for w that
    keeps its transformed weights: filled from w here unless ``upack_ready``.
    ``pooled_from``: (P, Q) of the convolution, whose 2x2 max pooling y (N, K, P/2, Q/2)
    then holds. ``x_phases`` (sh, sw, ph, pw): x is an image whose phases (padded by
    ph, pw; C sh sw channels of P + r - 1 x Q + r - 1 pixels, no further padding) the
    convolution reads. ``y_phases`` (sh, sw, ph, pw, P, Q): y is an image (N, K / (sh sw),
    H, W) whose phases the P x Q output fills, channel k the phase k % (sh sw) of the
    image's channel k / (sh sw) (pixels no phase reaches left alone). ``x_nhwc``: with
    ``x_phases``, a buffer of winograd_nhwc_size elements (64-byte aligned) that receives
    the channels-last copy of x's phases, for conv2d_winograd_backward_weight (x_phases
    (1, 1, ph, pw) with padding (0, 0): x itself, padded by ph, pw). ``codes``: with
    ``pooled_from``, None or a uint8 array of y's shape that receives each window's argmax
    as max_pool2d_2x2_codes gives it."""
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int K = w.shape[0], P = y.shape[2], Q = y.shape[3], r = w.shape[2]
    cdef int ph = padding[0], pw = padding[1], rc
    cdef fc_phases xs, ys
    cdef fc_phases *xp = _phases(x_phases, H, W, &xs)
    cdef fc_phases *yp = _phases(y_phases, y.shape[2], y.shape[3], &ys)
    if yp != NULL:
        P, Q = y_phases[4], y_phases[5]
    if xp != NULL:
        C, H, W = C * xs.sh * xs.sw, P + r - 1, Q + r - 1
    if pooled_from is not None:
        P, Q = pooled_from
        act |= FC_POOL_2X2
    if N == 0:
        return y
    cdef int f = 10 * winograd_tile(r, N, P, Q, pooled_from is not None) + r
    cdef size_t u = 0
    cdef size_t n = fc_wino_ws_s(f, N, C, K, P, Q, n_threads, &u) if x.dtype == np.float32 else \
        fc_wino_ws_d(f, N, C, K, P, Q, n_threads, &u)
    if upack is not None:
        _check_kept("conv2d_winograd", "upack", upack, x.dtype, u, "winograd_packed", f // 10)
    if x_nhwc is not None and xp != NULL:
        _check_kept("conv2d_winograd", "x_nhwc", x_nhwc, x.dtype, fc_wino_nhwc_size(f, N, C, P, Q),
                    "winograd_nhwc_size", f // 10)
        xs.nhwc = cnp.PyArray_DATA(x_nhwc)
    cdef cnp.ndarray ws = scratch_bytes("winograd", <Py_ssize_t>n * x.itemsize)
    cdef void *bp = NULL if bias is None else cnp.PyArray_DATA(bias)
    cdef void *up = NULL if upack is None else cnp.PyArray_DATA(upack)
    cdef unsigned char *cp = NULL
    if codes is not None:
        cp = _codes_of("conv2d_winograd", codes, y, pooled_from is not None)
    if x.dtype == np.float32:
        with nogil:
            rc = fc_wino_s(f, <float *>cnp.PyArray_DATA(x), <float *>cnp.PyArray_DATA(w), <float *>bp,
                             <float *>cnp.PyArray_DATA(y), N, C, H, W, K, P, Q, ph, pw, act, slope,
                             n_threads, <float *>scratch_at(ws), <float *>up, upack_ready, xp, yp, cp)
    else:
        with nogil:
            rc = fc_wino_d(f, <double *>cnp.PyArray_DATA(x), <double *>cnp.PyArray_DATA(w), <double *>bp,
                             <double *>cnp.PyArray_DATA(y), N, C, H, W, K, P, Q, ph, pw, act, slope,
                             n_threads, <double *>scratch_at(ws), <double *>up, upack_ready, xp, yp, cp)
    if rc:
        raise MemoryError("fastcnn: out of memory in conv2d")
    return y


def winograd_dy_shared(int r, int N, int P, int Q, int ph, int pw):
    """Whether conv2d_winograd_backward_weight can read, as ``dy_nhwc``, the channels-last
    copy of its output gradient dy (N, K, P, Q) that the forward of the input gradient
    (a conv2d_winograd of dy, padding ph, pw, given x_phases (1, 1, ph, pw) and x_nhwc)
    makes: the same tiles, and the weight gradient's tiles of dy inside the copy."""
    cdef int m = winograd_tile(r, N, P, Q), Ho = P + 2 * ph - r + 1, Wo = Q + 2 * pw - r + 1
    if ph < 0 or pw < 0 or Ho < 1 or Wo < 1 or winograd_tile(r, N, Ho, Wo) != m:
        return False
    return (ph + m * ((P + m - 1) // m) <= m * ((Ho + m - 1) // m) + r - 1
            and pw + m * ((Q + m - 1) // m) <= m * ((Wo + m - 1) // m) + r - 1)


def conv2d_winograd_backward_weight(cnp.ndarray x, cnp.ndarray dy, cnp.ndarray dw, tuple padding,
                                    int n_threads=1, tuple x_phases=None, x_nhwc=None, db=None,
                                    dy_nhwc=None, tuple dy_pad=None):
    """dw (K, C, r, r) = gradient of the rxr stride-1 convolution (r = 3 or 2) of x (N, C, H, W),
    padding (top, left), with output gradient dy (N, K, P, Q). ``x_phases``: as for
    conv2d_winograd (dw then has C sh sw phase channels; (1, 1, ph, pw): x itself, padded).
    ``x_nhwc``: with ``x_phases``, the channels-last copy of x's phases that a
    conv2d_winograd of this x wrote (read in place of x). ``db``: None, or a C-contiguous
    (K,) array of x's dtype that receives the bias gradient (dy summed over images and
    pixels). ``dy_nhwc``: the channels-last copy of dy that a conv2d_winograd of dy with
    padding ``dy_pad`` (x_phases (1, 1) + dy_pad) wrote to its x_nhwc, read in place of dy
    (see winograd_dy_shared)."""
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int K = dy.shape[1], P = dy.shape[2], Q = dy.shape[3], r = dw.shape[2]
    cdef int ph = padding[0], pw = padding[1], rc
    cdef fc_phases xs, ds
    cdef fc_phases *xp = _phases(x_phases, H, W, &xs)
    cdef fc_phases *dp = NULL
    if xp != NULL:
        C, H, W = C * xs.sh * xs.sw, P + r - 1, Q + r - 1
    cdef int f = 10 * winograd_tile(r, N, P, Q) + r
    cdef size_t n = fc_wino_wgrad_ws_s(f, N, C, K, P, Q, n_threads) if x.dtype == np.float32 else \
        fc_wino_wgrad_ws_d(f, N, C, K, P, Q, n_threads)
    if x_nhwc is not None and xp != NULL:
        _check_kept("conv2d_winograd_backward_weight", "x_nhwc", x_nhwc, x.dtype,
                    fc_wino_nhwc_size(f, N, C, P, Q), "winograd_nhwc_size", f // 10)
        xs.nhwc, xs.nhwc_ready = cnp.PyArray_DATA(x_nhwc), 1
    if dy_nhwc is not None:
        if dy_pad is None or not winograd_dy_shared(r, N, P, Q, dy_pad[0], dy_pad[1]):
            raise ValueError(f"conv2d_winograd_backward_weight: no shared copy of dy with dy_pad={dy_pad}")
        dp = _phases((1, 1) + dy_pad, P, Q, &ds)
        _check_kept("conv2d_winograd_backward_weight", "dy_nhwc", dy_nhwc, x.dtype,
                    fc_wino_nhwc_size(f, N, K, P + 2 * ds.ph - r + 1, Q + 2 * ds.pw - r + 1),
                    "winograd_nhwc_size of the input gradient's output", f // 10)
        ds.nhwc, ds.nhwc_ready = cnp.PyArray_DATA(dy_nhwc), 1
    cdef void *dbp = NULL
    if db is not None:
        if (type(db) is not np.ndarray or (<cnp.ndarray>db).dtype != x.dtype
                or not (<cnp.ndarray>db).flags.c_contiguous or (<cnp.ndarray>db).size != K):
            raise ValueError(f"conv2d_winograd_backward_weight: db must be a C-contiguous ({K},) array "
                             f"of x's dtype {x.dtype}")
        dbp = cnp.PyArray_DATA(<cnp.ndarray>db)
    cdef cnp.ndarray ws = scratch("winograd", (<Py_ssize_t>n,), x.dtype)
    if x.dtype == np.float32:
        with nogil:
            rc = fc_wino_wgrad_s(f, <float *>cnp.PyArray_DATA(x), <float *>cnp.PyArray_DATA(dy),
                                   <float *>cnp.PyArray_DATA(dw), <float *>dbp, N, C, H, W, K, P, Q, ph, pw,
                                   n_threads, <float *>cnp.PyArray_DATA(ws), xp, dp)
    else:
        with nogil:
            rc = fc_wino_wgrad_d(f, <double *>cnp.PyArray_DATA(x), <double *>cnp.PyArray_DATA(dy),
                                   <double *>cnp.PyArray_DATA(dw), <double *>dbp, N, C, H, W, K, P, Q, ph, pw,
                                   n_threads, <double *>cnp.PyArray_DATA(ws), xp, dp)
    if rc:
        raise MemoryError("fastcnn: out of memory in conv2d backward")
    return dw


# ---------------------------------------------------------------------------
# pixel-major implicit GEMM: forward and weight gradient
#
# The rows of the forward product are output pixels (of all images), its
# columns output channels and its depth the taps (c, r, s): A is the patch
# matrix gathered in place from the input (zero-padded once per call), one
# offset per pixel plus one per tap; B is the weight; tiles are stored
# column-major, eight pixels of one channel at a time, straight into NCHW.
# Any stride and dilation, no packed patches and no wasted products. The
# weight gradient is the same gather with the roles of pixels and taps
# exchanged: dW^T (taps x channels) = patches^T . dy^T.

cdef inline bint pm_geom(int Cg, int Kg, int R, int S) noexcept nogil:
    """Shapes the pixel-major formulation suits: enough channels for the tile
    width and enough taps to amortise the transposed stores."""
    return Kg >= 16 and Cg * R * S >= 32


def pixel_major(int Cg, int Kg, int R, int S):
    """Whether a convolution with these per-group shapes runs pixel-major."""
    return pm_geom(Cg, Kg, R, S)


ctypedef struct Padded:
    int Hp, Wp            # extent of each padded plane
    long plane, row       # elements per plane and per row
    long img              # elements per image (all channels)
    bint copy             # a zero-padded copy was made


cdef Padded padded_geom(const Geom *g, bint force):
    """The padded planes a convolution reads: just the extent its taps reach."""
    cdef Padded pd
    pd.Hp = (g.P - 1) * g.sh + (g.R - 1) * g.dh + 1
    pd.Wp = (g.Q - 1) * g.sw + (g.S - 1) * g.dw + 1
    pd.copy = force or g.ph != 0 or g.pw != 0 or pd.Hp > g.H or pd.Wp > g.W
    if pd.copy:
        pd.row = pd.Wp
        pd.plane = <long>pd.Hp * pd.Wp
    else:
        pd.row = g.W
        pd.plane = <long>g.H * g.W
    pd.img = pd.plane * g.G * g.Cg
    return pd


cdef void _pad_planes(const floating *x, floating *xp, long nplanes, int H, int W, int Hp, int Wp,
                      int top, int left, bint borders, int n_threads) noexcept nogil:
    """pad_plane over nplanes planes, in parallel."""
    cdef long t
    for t in prange(nplanes, schedule='static', num_threads=n_threads):
        pad_plane(x + t * H * W, xp + t * Hp * Wp, H, W, Hp, Wp, top, left, borders)


# ---------------------------------------------------------------------------
# scratch memory
#
# The temporaries of a kernel call (padded copies, transposed gradients, phase
# buffers, partial sums) come from buffers that each Python thread keeps, one
# per use, grown as needed: repeated calls reuse memory that is mapped and
# warm instead of faulting in fresh pages, and a padded copy of the same
# geometry as the last one keeps its zero borders. Buffers above SCRATCH_KEEP
# bytes are not kept.

SCRATCH_KEEP = 256 * 1024 * 1024
_scratch = threading.local()


cdef cnp.ndarray scratch_bytes(str use, Py_ssize_t nbytes):
    """The scratch buffer of ``use`` (uint8) for nbytes from a 64-byte boundary (see
    scratch_at): kept for the next call of the thread unless it is very large."""
    cdef dict bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    entry = bufs.get(use)
    cdef cnp.ndarray buf
    if entry is None or (<cnp.ndarray>entry[0]).shape[0] < nbytes + 64:
        buf = np.empty(nbytes + nbytes // 4 + 64, dtype=np.uint8)
        if buf.shape[0] <= SCRATCH_KEEP:
            bufs[use] = [buf, None]
        elif use in bufs:
            del bufs[use]
    else:
        buf = entry[0]
    return buf


cdef inline void *scratch_at(cnp.ndarray buf) noexcept nogil:
    """The first 64-byte boundary in a scratch_bytes buffer (which the caller holds)."""
    cdef size_t p = <size_t>cnp.PyArray_DATA(buf)
    return <void *>(p + (64 - p % 64) % 64)


cdef cnp.ndarray scratch(str use, tuple shape, dtype):
    """An uninitialised array for the duration of one kernel call."""
    dt = np.dtype(dtype)
    cdef Py_ssize_t nbytes = dt.itemsize
    for d in shape:
        nbytes *= d
    cdef cnp.ndarray buf = scratch_bytes(use, nbytes)
    cdef Py_ssize_t off = <char *>scratch_at(buf) - <char *>cnp.PyArray_DATA(buf)
    return buf[off:off + nbytes].view(dt).reshape(shape)


cdef object scratch_tag(str use, object tag):
    """Swaps the tag of a scratch buffer (what it holds) for tag; returns the old one."""
    cdef dict bufs = getattr(_scratch, "bufs", None)
    entry = None if bufs is None else bufs.get(use)
    if entry is None:
        return None
    old = entry[1]
    entry[1] = tag
    return old


cdef cnp.ndarray pad_copy(cnp.ndarray x, int Hp, int Wp, int top, int left, int n_threads,
                          str use="pad"):
    """A zero-padded copy of x (N, C, H, W) in scratch memory: planes of Hp x Wp
    with x at (top, left)."""
    cdef long nplanes = x.shape[0] * x.shape[1]
    cdef int H = x.shape[2], W = x.shape[3]
    cdef cnp.ndarray xp = scratch(use, (x.shape[0], x.shape[1], Hp, Wp), x.dtype)
    # the borders are zero already if this buffer last held a copy of this geometry
    geom = (<Py_ssize_t>cnp.PyArray_DATA(xp), x.dtype.num, nplanes, H, W, Hp, Wp, top, left)
    cdef bint borders = scratch_tag(use, geom) != geom
    if x.dtype == np.float32:
        with nogil:
            _pad_planes(<float *>cnp.PyArray_DATA(x), <float *>cnp.PyArray_DATA(xp), nplanes, H, W,
                        Hp, Wp, top, left, borders, n_threads)
    else:
        with nogil:
            _pad_planes(<double *>cnp.PyArray_DATA(x), <double *>cnp.PyArray_DATA(xp), nplanes, H, W,
                        Hp, Wp, top, left, borders, n_threads)
    return xp


cdef void _nhwc_rows(const floating *x, floating *out, long nrows, int C, int H, int W, int Hp,
                     int Wp, int top, int left, int n_threads) noexcept nogil:
    cdef long t, nb = (nrows + 7) // 8
    for t in prange(nb, schedule='static', num_threads=n_threads):
        if floating is float:
            fc_nhwc_rows_s(x, t * 8, min(nrows, t * 8 + 8), C, H, W, C, Hp, Wp, top, left, out)
        else:
            fc_nhwc_rows_d(x, t * 8, min(nrows, t * 8 + 8), C, H, W, C, Hp, Wp, top, left, out)


cdef cnp.ndarray nhwc_copy(cnp.ndarray x, int Hp, int Wp, int top, int left, int n_threads, str use):
    """A channels-last zero-padded copy of x (N, C, H, W) in scratch memory: (N, Hp, Wp, C)
    with x at (top, left)."""
    cdef int N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef cnp.ndarray out = scratch(use, (N, Hp, Wp, C), x.dtype)
    if x.dtype == np.float32:
        with nogil:
            _nhwc_rows(<float *>cnp.PyArray_DATA(x), <float *>cnp.PyArray_DATA(out), <long>N * Hp, C, H,
                       W, Hp, Wp, top, left, n_threads)
    else:
        with nogil:
            _nhwc_rows(<double *>cnp.PyArray_DATA(x), <double *>cnp.PyArray_DATA(out), <long>N * Hp, C, H,
                       W, Hp, Wp, top, left, n_threads)
    return out


cdef cnp.ndarray pixel_offsets(const Geom *g, const Padded *pd):
    """Offset of the first tap of every output pixel (n, oh, ow), then 16 zeros."""
    cdef long npix = <long>g.N * g.P * g.Q, i = 0
    cdef cnp.ndarray offs = np.zeros(npix + 16, dtype=np.int64)
    cdef long *o = <long *>cnp.PyArray_DATA(offs)
    cdef int n, oh, ow
    for n in range(g.N):
        for oh in range(g.P):
            for ow in range(g.Q):
                o[i] = n * pd.img + <long>oh * g.sh * pd.row + <long>ow * g.sw
                i += 1
    return offs


cdef inline fc_view gather(const void *p, const long *offs, const long *doffs) noexcept nogil:
    cdef fc_view v
    memset(&v, 0, sizeof(v))
    v.kind = FC_VIEW_GATHER
    v.p = p
    v.offs = offs
    v.doffs = doffs
    return v


cdef int _forward_pm(const floating *xp, const floating *w, const floating *bias, floating *y,
                     const Geom *g, const Padded *pd, int act, double slope, const long *poffs,
                     const long *toffs, int n_threads) noexcept nogil:
    cdef int crs = g.Cg * g.R * g.S, pq = g.P * g.Q, gi, rc = 0
    cdef fc_view A, B
    cdef fc_epilogue epi
    for gi in range(g.G):
        A = gather(xp + <long>gi * g.Cg * pd.plane, poffs, toffs)
        # B (taps x channels): element (t, k) at w[k * crs + t]
        B = dense(w + <long>gi * g.Kg * crs, 1, crs)
        epi = row_epilogue((bias + <long>gi * g.Kg) if bias != NULL else NULL, act, slope)
        if bias != NULL:
            epi.bias_mode = FC_BIAS_COL
        epi.trans = 1
        epi.wrap = pq
        epi.keep = pq
        epi.bstride = <long>g.G * g.Kg * pq
        rc |= gemm(y + <long>gi * g.Kg * pq, g.N * pq, g.Kg, crs, &A, &B, <floating>0, pq, &epi,
                   n_threads, NULL)
    return rc


cdef object pm_prepare(cnp.ndarray x, const Geom *g, Padded *pd, int n_threads):
    """(input planes the gathers read, pixel offsets, tap offsets) for a pixel-major call."""
    pd[0] = padded_geom(g, False)
    cdef cnp.ndarray xp = pad_copy(x, pd.Hp, pd.Wp, g.ph, g.pw, n_threads, "x") if pd.copy else x
    return xp, pixel_offsets(g, pd), shift_offsets(g, pd.Hp, <int>pd.row, pd.plane)


cdef object conv2d_forward_pm(cnp.ndarray x, cnp.ndarray w, bias, cnp.ndarray y, Geom g, int act,
                              double slope, int n_threads):
    cdef Padded pd
    xp, poffs_arr, toffs_arr = pm_prepare(x, &g, &pd, n_threads)
    cdef const long *poffs = <const long *>cnp.PyArray_DATA(poffs_arr)
    cdef const long *toffs = <const long *>cnp.PyArray_DATA(toffs_arr)
    cdef void *bp = NULL if bias is None else cnp.PyArray_DATA(bias)
    cdef void *xpp = cnp.PyArray_DATA(xp)
    cdef int rc
    if x.dtype == np.float32:
        with nogil:
            rc = _forward_pm(<float *>xpp, <float *>cnp.PyArray_DATA(w), <float *>bp,
                             <float *>cnp.PyArray_DATA(y), &g, &pd, act, slope, poffs, toffs,
                             n_threads)
    else:
        with nogil:
            rc = _forward_pm(<double *>xpp, <double *>cnp.PyArray_DATA(w), <double *>bp,
                             <double *>cnp.PyArray_DATA(y), &g, &pd, act, slope, poffs, toffs,
                             n_threads)
    if rc:
        raise MemoryError("fastcnn: out of memory in conv2d")
    return y


cdef inline fc_view dy_t(const void *p, long pq, long img) noexcept nogil:
    """The output gradient as pixels (of every image) x channels."""
    cdef fc_view v = dense(p, pq, img)
    v.kind = FC_VIEW_IMAGES
    v.trans = 1
    return v


cdef int _backward_weight_pm(const floating *xp, const floating *dy, floating *part,
                             const Geom *g, const Padded *pd, const long *poffs,
                             const long *toffs, int nchunks, int n_threads) noexcept nogil:
    """dW (or per-chunk partials of it) as dW^T = patches^T . dy^T, stored column-major."""
    cdef int crs = g.Cg * g.R * g.S, pq = g.P * g.Q, K = g.G * g.Kg
    cdef int t, ch, gi, n0, n1, rc = 0
    cdef long img = <long>K * pq
    cdef fc_view A, B
    cdef fc_epilogue epi = row_epilogue(NULL, 0, 0.0)
    epi.trans = 1
    if nchunks == 1:
        for gi in range(g.G):
            A = gather(xp + <long>gi * g.Cg * pd.plane, toffs, poffs)
            B = dy_t(dy + <long>gi * g.Kg * pq, pq, img)
            rc |= gemm(part + <long>gi * g.Kg * crs, crs, g.Kg, g.N * pq, &A, &B, <floating>0, crs,
                       &epi, n_threads, NULL)
        return rc
    for t in prange(nchunks * g.G, schedule='dynamic', num_threads=n_threads):
        ch = t // g.G
        gi = t % g.G
        n0 = <int>((<long>ch * g.N) // nchunks)
        n1 = <int>((<long>(ch + 1) * g.N) // nchunks)
        A = gather(xp + <long>gi * g.Cg * pd.plane, toffs, poffs + <long>n0 * pq)
        B = dy_t(dy + <long>n0 * img + <long>gi * g.Kg * pq, pq, img)
        rc |= gemm(part + (<long>ch * g.G + gi) * g.Kg * crs, crs, g.Kg, (n1 - n0) * pq, &A, &B,
                   <floating>0, crs, &epi, 1, NULL)
    return rc


cdef object conv2d_backward_weight_pm(cnp.ndarray x, cnp.ndarray dy, cnp.ndarray dw, Geom g,
                                      int n_threads):
    cdef Padded pd
    xp, poffs_arr, toffs_arr = pm_prepare(x, &g, &pd, n_threads)
    cdef const long *poffs = <const long *>cnp.PyArray_DATA(poffs_arr)
    cdef const long *toffs = <const long *>cnp.PyArray_DATA(toffs_arr)
    cdef int crs = g.Cg * g.R * g.S, K = g.G * g.Kg
    cdef long pq = <long>g.P * g.Q
    # enough output tiles to share among threads, or chunks of images with
    # partial sums added in a fixed order (by problem size only)
    cdef int nchunks = 1 if (crs // 8) * ((g.Kg + 31) // 32) >= 16 else <int>min(g.N, 16)
    cdef cnp.ndarray part = dw if nchunks == 1 else scratch("partial", (nchunks * <long>K * crs,), x.dtype)
    cdef void *xpp = cnp.PyArray_DATA(xp)
    cdef int rc
    if x.dtype == np.float32:
        with nogil:
            rc = _backward_weight_pm(<float *>xpp, <float *>cnp.PyArray_DATA(dy),
                                     <float *>cnp.PyArray_DATA(part), &g, &pd, poffs, toffs,
                                     nchunks, n_threads)
            if rc == 0 and nchunks > 1:
                _reduce_chunks(<float *>cnp.PyArray_DATA(part), <float *>cnp.PyArray_DATA(dw),
                               nchunks, g.G, g.Kg, crs, False, n_threads)
    else:
        with nogil:
            rc = _backward_weight_pm(<double *>xpp, <double *>cnp.PyArray_DATA(dy),
                                     <double *>cnp.PyArray_DATA(part), &g, &pd, poffs, toffs,
                                     nchunks, n_threads)
            if rc == 0 and nchunks > 1:
                _reduce_chunks(<double *>cnp.PyArray_DATA(part), <double *>cnp.PyArray_DATA(dw),
                               nchunks, g.G, g.Kg, crs, False, n_threads)
    if rc:
        raise MemoryError("fastcnn: out of memory in conv2d backward")
    return dw


def conv2d_forward(cnp.ndarray x, cnp.ndarray w, bias, cnp.ndarray y, int groups,
                   tuple stride, tuple padding, tuple dilation, int act=0, double slope=0.01,
                   int n_threads=1):
    """y (N, K, P, Q) = conv(x (N, C, H, W), w (K, C/groups, R, S)) + bias, then activation."""
    cdef Geom g = make_geom(x, w, groups, y.shape[2], y.shape[3],
                            stride, padding, dilation)
    if g.N == 0:
        return y
    if pm_geom(g.Cg, g.Kg, g.R, g.S):
        return conv2d_forward_pm(x, w, bias, y, g, act, slope, n_threads)
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
# pixel-major input gradient
#
# dx splits into the stride x stride phases of its pixels, (h, w) = (sh i + a,
# sw j + b); each phase is a stride-1 product over the output gradient with
# the taps r = a + ph (mod sh) of the kernel: rows are the phase's pixels, A
# gathers dy (zero-padded once) at one offset per pixel plus one per (k, r, s),
# B is the phase's slice of the weight. A stride-1 gradient is a single phase
# written straight into dx; otherwise each phase goes to a buffer that is then
# interleaved into dx.

cdef inline bint pm_data_geom(const Geom *g) noexcept nogil:
    """Input gradients suited to the pixel-major formulation (the input channels are its tile width)."""
    return g.Cg >= 16 and g.Kg * ((g.R + g.sh - 1) // g.sh) * ((g.S + g.sw - 1) // g.sw) >= 32


def pixel_major_data(cnp.ndarray dy, cnp.ndarray w, cnp.ndarray dx, int groups, tuple stride,
                     tuple padding, tuple dilation):
    """Whether conv2d_backward_data runs pixel-major for these arrays."""
    cdef Geom g = make_geom(dx, w, groups, dy.shape[2], dy.shape[3], stride, padding, dilation)
    return pm_data_geom(&g)


cdef int _backward_data_pm(const floating *dyp, const floating *wph, floating *out, const Geom *g,
                           long pix, const long *poffs, const long *toffs, int depth,
                           int n_threads) noexcept nogil:
    """One phase: out (N, G*Cg, pixels) = gathered dy (channels-last) . phase weight
    (G x depth x Cg)."""
    cdef int gi, rc = 0
    cdef fc_view A, B
    cdef fc_epilogue epi = row_epilogue(NULL, 0, 0.0)
    epi.trans = 1
    epi.wrap = <int>pix
    epi.keep = <int>pix
    epi.bstride = <long>g.G * g.Cg * pix
    for gi in range(g.G):
        A = gather(dyp + <long>gi * g.Kg, poffs, toffs)
        B = dense(wph + <long>gi * depth * g.Cg, g.Cg, 1)
        rc |= gemm(out + <long>gi * g.Cg * pix, <int>(g.N * pix), g.Cg, depth, &A, &B, <floating>0,
                   pix, &epi, n_threads, NULL)
    return rc


cdef void _interleave(const floating *buf, floating *dx, long nplanes, int H, int W, int sh, int sw,
                      int nb, const long *poff, const int *His, const int *Wjs, const floating *bias,
                      int C, int n_threads) noexcept nogil:
    """dx[t, sh i + a, sw j + b] = phase (a, b)[t, i, j] (+ bias[t % C] if given) for
    every phase in one pass over dx, a row at a time; phase (a, b) at buf + poff[a nb + b]
    (poff < 0: zero), nb = min(sw, W) column phases."""
    cdef long t, o0
    cdef int h, a, b, i, j, Wj, Hi = His[0]
    cdef floating *row
    cdef const floating *s0
    cdef const floating *s1
    cdef floating bv
    cdef bint pairs = nb == 2 and sw == 2 and Wjs[0] == Wjs[1]
    for t in prange(nplanes, schedule='static', num_threads=n_threads):
        bv = bias[t % C] if bias != NULL else 0
        for i in range(Hi):
            for a in range(sh):
                h = sh * i + a
                if h >= H:
                    break
                row = dx + (t * H + h) * W
                if pairs and poff[2 * a] >= 0 and poff[2 * a + 1] >= 0:
                    Wj = Wjs[0]
                    s0 = buf + poff[2 * a] + (t * His[a] + i) * Wj
                    s1 = buf + poff[2 * a + 1] + (t * His[a] + i) * Wj
                    for j in range(Wj):
                        row[2 * j] = s0[j] + bv
                        row[2 * j + 1] = s1[j] + bv
                    continue
                for b in range(nb):
                    Wj = Wjs[b]
                    o0 = poff[a * nb + b]
                    if o0 < 0:
                        for j in range(Wj):
                            row[sw * j + b] = bv
                    else:
                        s0 = buf + o0 + (t * His[a] + i) * Wj
                        for j in range(Wj):
                            row[sw * j + b] = s0[j] + bv


cdef void _taps_major(const floating *w, floating *wt, int G, int Kg, int Cg, int RS) noexcept nogil:
    """wt (G, RS, Kg, Cg) = w (G, Kg, Cg, RS) with the taps outermost."""
    cdef int gi, k
    for gi in range(G):
        for k in range(Kg):
            if floating is float:
                fc_transpose_s(w + (<long>gi * Kg + k) * Cg * RS, RS,
                               wt + <long>gi * RS * Kg * Cg + <long>k * Cg, <long>Kg * Cg, Cg, RS)
            else:
                fc_transpose_d(w + (<long>gi * Kg + k) * Cg * RS, RS,
                               wt + <long>gi * RS * Kg * Cg + <long>k * Cg, <long>Kg * Cg, Cg, RS)


def _taps_index(taps):
    """Index of the kernel taps [(r, shift)]: a slice (no copy) when they are evenly spaced."""
    rs = [r for r, _ in taps]
    n = len(rs)
    if n == 1:
        return slice(rs[0], rs[0] + 1)
    step = rs[1] - rs[0]
    if all(rs[i + 1] - rs[i] == step for i in range(n - 1)):
        stop = rs[n - 1] + step   # (no negative indexing: the module is compiled without wraparound)
        return slice(rs[0], stop if stop >= 0 else None, step)
    return rs


cdef list phase_taps(int a, int ph, int d, int s, int R):
    """[(r, shift)] of the taps reaching output phase a: (a + ph - r d) = shift * s."""
    return [(r, (a + ph - r * d) // s) for r in range(R) if (a + ph - r * d) % s == 0]


# plans of input gradients by geometry: the padding of dy and, per phase, its
# pixels' and taps' offsets (a few recent geometries)
_DATA_PLANS = {}


cdef object data_plan(const Geom *g):
    key = (g.N, g.G, g.Cg, g.H, g.W, g.Kg, g.R, g.S, g.P, g.Q, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw)
    plan = _DATA_PLANS.get(key)
    if plan is not None:
        return plan
    cdef int sh = g.sh, sw = g.sw, top = 0, left = 0, bottom = 0, right = 0
    cdef int K = g.G * g.Kg, C = g.G * g.Cg
    rows = [(a, (g.H - a + sh - 1) // sh, phase_taps(a, g.ph, g.dh, sh, g.R)) for a in range(min(sh, g.H))]
    cols = [(b, (g.W - b + sw - 1) // sw, phase_taps(b, g.pw, g.dw, sw, g.S)) for b in range(min(sw, g.W))]
    # dy padded so that every (pixel, tap) reads inside it
    for _, n, taps in rows:
        for _, d in taps:
            top = max(top, -d)
            bottom = max(bottom, n - 1 + d - (g.P - 1))
    for _, n, taps in cols:
        for _, d in taps:
            left = max(left, -d)
            right = max(right, n - 1 + d - (g.Q - 1))
    cdef int Hq = top + g.P + bottom, Wq = left + g.Q + right
    cdef long dimg = <long>Hq * Wq * K, pix, off = 0
    phases = []
    for a, Hi, rtaps in rows:
        for b, Wj, staps in cols:
            pix = <long>Hi * Wj
            if not rtaps or not staps:
                phases.append((a, b, Hi, Wj, -1, None))
                continue
            ii, jj = np.meshgrid(np.arange(Hi) + top, np.arange(Wj) + left, indexing="ij")
            # rows past the last pixel (a partial tile's) read at the first pixel: tap
            # offsets may be negative here
            poffs_arr = np.full(g.N * pix + 16, (top * Wq + left) * K, dtype=np.int64)
            poffs_arr[:g.N * pix] = (np.arange(g.N)[:, None] * dimg
                                     + (ii * Wq + jj).ravel()[None, :] * K).ravel()
            dr = np.array([d for _, d in rtaps], dtype=np.int64)
            ds = np.array([d for _, d in staps], dtype=np.int64)
            # depth (tap row, tap column, channel)
            toffs_arr = ((dr[:, None, None] * Wq + ds[None, :, None]) * K
                         + np.arange(g.Kg)[None, None, :]).ravel()
            wino = (g.G == 1 and g.dh == 1 and g.dw == 1 and len(rtaps) == len(staps)
                    and winograd(g.N, K, C, len(rtaps), len(staps), (1, 1), (1, 1), 1, Hi, Wj))
            phases.append((a, b, Hi, Wj, off, (poffs_arr, toffs_arr, _taps_index(rtaps), _taps_index(staps),
                                              wino, sorted(rtaps, key=lambda t: t[1]),
                                              sorted(staps, key=lambda t: t[1]))))
            off += g.N * C * pix
    His = np.array([Hi for _, Hi, _ in rows], dtype=np.intc)
    Wjs = np.array([Wj for _, Wj, _ in cols], dtype=np.intc)
    poff = np.array([ph[4] for ph in phases], dtype=np.int64)
    plan = (Hq, Wq, top, left, phases, off, His, Wjs, poff)
    if len(_DATA_PLANS) >= 32:
        _DATA_PLANS.clear()
    _DATA_PLANS[key] = plan
    return plan


cdef object conv2d_backward_data_pm(cnp.ndarray dy, cnp.ndarray w, cnp.ndarray dx, Geom g,
                                    int n_threads, bias):
    cdef int sh = g.sh, sw = g.sw
    cdef int K = g.G * g.Kg, C = g.G * g.Cg
    Hq, Wq, top, left, phases, total, His_arr, Wjs_arr, poff_arr = data_plan(&g)
    # dy channels-last (zero-padded): a product's depth runs over the channels
    # of one tap at a time, contiguous in memory
    cdef cnp.ndarray dyp = nhwc_copy(dy, Hq, Wq, top, left, n_threads, "dy")
    cdef bint direct = sh == 1 and sw == 1
    cdef cnp.ndarray buf, phbuf, poffs_arr, toffs_arr, wph
    cdef const long *poffs
    cdef const long *toffs
    cdef int rc = 0, depth
    cdef long pix
    # the weight with its taps outermost (each phase's taps are whole Kg x Cg blocks),
    # for the phases that do not run Winograd
    cdef cnp.ndarray wt = None
    if any(ph[5] is not None and not ph[5][4] for ph in phases):
        wt = scratch("taps", (g.G, g.R, g.S, g.Kg, g.Cg), w.dtype)
        if w.dtype == np.float32:
            with nogil:
                _taps_major(<float *>cnp.PyArray_DATA(w), <float *>cnp.PyArray_DATA(wt), g.G, g.Kg, g.Cg,
                            g.R * g.S)
        else:
            with nogil:
                _taps_major(<double *>cnp.PyArray_DATA(w), <double *>cnp.PyArray_DATA(wt), g.G, g.Kg, g.Cg,
                            g.R * g.S)
    phbuf = dx if direct else scratch("phase", (max(<long>total, 1),), dx.dtype)
    for a, b, Hi, Wj, off, ph in phases:
        if ph is None:
            continue
        poffs_arr, toffs_arr, ri, si, wino, rs_, ss_ = ph
        pix = <long>Hi * Wj
        buf = dx if direct else phbuf[off:off + g.N * C * pix].reshape(g.N, C, Hi, Wj)
        if wino:
            # a stride-1 correlation of dy with the phase's taps in the order of their shifts
            gsub = np.ascontiguousarray(
                w[:, :, _taps_index(rs_)][:, :, :, _taps_index(ss_)].transpose(1, 0, 2, 3))
            conv2d_winograd(dy, gsub, None, buf, (-rs_[0][1], -ss_[0][1]), 0, 0.0, n_threads)
            continue
        depth = toffs_arr.shape[0]
        # (G, |rtaps|, |staps|, Kg, Cg) -> (G, depth, Cg)
        wph = np.ascontiguousarray(wt[:, ri][:, :, si]).reshape(g.G, depth, g.Cg)
        poffs = <const long *>cnp.PyArray_DATA(poffs_arr)
        toffs = <const long *>cnp.PyArray_DATA(toffs_arr)
        if dy.dtype == np.float32:
            with nogil:
                rc |= _backward_data_pm(<float *>cnp.PyArray_DATA(dyp), <float *>cnp.PyArray_DATA(wph),
                                        <float *>cnp.PyArray_DATA(buf), &g, pix, poffs, toffs, depth,
                                        n_threads)
        else:
            with nogil:
                rc |= _backward_data_pm(<double *>cnp.PyArray_DATA(dyp), <double *>cnp.PyArray_DATA(wph),
                                        <double *>cnp.PyArray_DATA(buf), &g, pix, poffs, toffs, depth,
                                        n_threads)
    if rc:
        raise MemoryError("fastcnn: out of memory in conv2d backward")
    if direct:
        if phases[0][5] is None:
            dx[...] = 0
        if bias is not None:
            add_channel_bias(dx, bias, n_threads)
        return dx
    cdef const long *poff = <const long *>cnp.PyArray_DATA(poff_arr)
    cdef const int *His = <const int *>cnp.PyArray_DATA(His_arr)
    cdef const int *Wjs = <const int *>cnp.PyArray_DATA(Wjs_arr)
    cdef int nb = Wjs_arr.shape[0]
    cdef void *bp = NULL if bias is None else cnp.PyArray_DATA(bias)
    if dy.dtype == np.float32:
        with nogil:
            _interleave(<float *>cnp.PyArray_DATA(phbuf), <float *>cnp.PyArray_DATA(dx), <long>g.N * C,
                        g.H, g.W, sh, sw, nb, poff, His, Wjs, <float *>bp, C, n_threads)
    else:
        with nogil:
            _interleave(<double *>cnp.PyArray_DATA(phbuf), <double *>cnp.PyArray_DATA(dx), <long>g.N * C,
                        g.H, g.W, sh, sw, nb, poff, His, Wjs, <double *>bp, C, n_threads)
    return dx


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
    for t in prange(ntasks, schedule='dynamic', num_threads=n_threads):
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
                         tuple stride, tuple padding, tuple dilation, int n_threads=1, bias=None):
    """dx (N, C, H, W) = gradient of conv2d wrt its input, given dy (N, K, P, Q),
    plus ``bias`` (C,) per channel if given (a transposed convolution's)."""
    cdef Geom g = make_geom(dx, w, groups, dy.shape[2], dy.shape[3],
                            stride, padding, dilation)
    if g.N > 0 and pm_data_geom(&g):
        return conv2d_backward_data_pm(dy, w, dx, g, n_threads, bias)
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
    if bias is not None:
        add_channel_bias(dx, bias, n_threads)
    return dx


# ---------------------------------------------------------------------------
# backward weight: pixel-major (above), partial sums of chunks of images
# added in a fixed order

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
    if g.N == 0:
        dw[...] = 0
        return dw
    return conv2d_backward_weight_pm(x, dy, dw, g, n_threads)


# ---------------------------------------------------------------------------
# per-channel helpers: bias gradient and bias addition (NCHW or NC)

# Sums of many short planes or columns (HW < 256, or a Linear's (N, C)) first add
# blocks of SUM_ROWS planes element by element, then the block sums in double:
# the order is fixed by the shape, and each partial sums as few values as
# plane_sum's.
DEF SUM_ROWS = 16
DEF SUM_COLS = 64


cdef inline void _row_block_sum(const floating *p, long stride, int nrows, long n,
                                floating *s) noexcept nogil:
    """s[i] = sum of row r's value i, rows r < nrows (nrows >= 1) at p + r * stride, in order."""
    cdef int r
    cdef long i
    cdef const floating *q
    for i in range(n):
        s[i] = p[i]
    for r in range(1, nrows):
        q = p + <long>r * stride
        for i in range(n):
            s[i] = s[i] + q[i]


cdef double _short_planes_sum(const floating *p, long stride, int N, long HW) noexcept nogil:
    """Sum of N planes of HW (< 256) values, plane n at p + n * stride."""
    cdef floating s[256]
    cdef double acc = 0
    cdef int n0
    for n0 in range(0, N, SUM_ROWS):
        _row_block_sum(p + <long>n0 * stride, stride, min(N - n0, SUM_ROWS), HW, s)
        acc += plane_sum(s, HW)
    return acc


cdef void _column_sums(const floating *dy, floating *out, int N, int C, int c0, int nc) noexcept nogil:
    """out[c] = sum over the N rows of column c of dy (N, C), for c0 <= c < c0 + nc (nc <= SUM_COLS)."""
    cdef floating s[SUM_COLS]
    cdef double acc[SUM_COLS]
    cdef int n0, j
    for j in range(nc):
        acc[j] = 0
    for n0 in range(0, N, SUM_ROWS):
        _row_block_sum(dy + <long>n0 * C + c0, C, min(N - n0, SUM_ROWS), nc, s)
        for j in range(nc):
            acc[j] += s[j]
    for j in range(nc):
        out[c0 + j] = <floating>acc[j]


cdef void _channel_sum(const floating *dy, floating *out, int N, int C, long HW,
                       int n_threads) noexcept nogil:
    cdef int c, n, cb, nblocks = (C + SUM_COLS - 1) // SUM_COLS
    cdef double acc
    if HW == 1:
        for cb in prange(nblocks, schedule='static', num_threads=n_threads):
            _column_sums(dy, out, N, C, cb * SUM_COLS, C - cb * SUM_COLS if C - cb * SUM_COLS < SUM_COLS
                         else SUM_COLS)
        return
    for c in prange(C, schedule='static', num_threads=n_threads):
        if HW < 256:
            out[c] = <floating>_short_planes_sum(dy + <long>c * HW, <long>C * HW, N, HW)
        else:
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
    cdef int a, b, i, j, j0, j1, h
    cdef const floating *src
    cdef floating *o
    for t in prange(<long>NC, schedule='static', num_threads=n_threads):
        for a in range(sh):
            for b in range(sw):
                # columns j with 0 <= j sw + b - pw < W
                j0 = (pw - b + sw - 1) // sw if pw > b else 0
                j1 = (W - 1 + pw - b) // sw + 1 if W - 1 + pw - b >= 0 else 0
                if j1 > Ws:
                    j1 = Ws
                if j0 > j1:
                    j0 = j1
                o = out + ((t * sh + a) * sw + b) * Hs * Ws
                for i in range(Hs):
                    h = i * sh + a - ph
                    if h < 0 or h >= H:
                        memset(o + i * Ws, 0, Ws * sizeof(floating))
                        continue
                    src = x + (t * H + h) * W + b - pw
                    for j in range(j0):
                        o[i * Ws + j] = 0
                    for j in range(j0, j1):
                        o[i * Ws + j] = src[j * sw]
                    for j in range(j1, Ws):
                        o[i * Ws + j] = 0


cdef void _from_phases(const floating *xph, floating *out, int NC, int H, int W, int sh, int sw,
                       int ph, int pw, int Hs, int Ws, int n_threads) noexcept nogil:
    cdef long t
    cdef int h, a, b, i, j, j1, w0, w
    cdef const floating *src
    cdef floating *o
    for t in prange(<long>NC, schedule='static', num_threads=n_threads):
        for h in range(H):
            a = (h + ph) % sh
            i = (h + ph) // sh
            o = out + (t * H + h) * W
            if i >= Hs:
                memset(o, 0, W * sizeof(floating))
                continue
            for b in range(sw):
                # columns w = j sw + b - pw, 0 <= w < W, of the phase (a, b)'s row i
                w0 = b - pw
                j = (-w0 + sw - 1) // sw if w0 < 0 else 0
                j1 = (W - 1 - w0) // sw + 1 if W - 1 - w0 >= 0 else 0
                src = xph + (((t * sh + a) * sw + b) * Hs + i) * Ws
                if j1 > Ws:
                    # columns past the phases' reach are zero
                    for w in range(Ws * sw + w0, W):
                        if (w - w0) % sw == 0:
                            o[w] = 0
                    j1 = Ws
                while j < j1:
                    o[j * sw + w0] = src[j]
                    j = j + 1


cdef void _phase_weight(const floating *w, floating *out, int K, int C, int R, int S, int sh, int sw,
                        bint flip_transpose, bint phase_major, bint inverse, long *tab,
                        int n_threads) noexcept nogil:
    """out[k, c', i, j] = w[k, c, i sh + a, j sw + b] for the phase channel c' of (c, a, b):
    c' = (c sh + a) sw + b, or (a sw + b) C + c if ``phase_major``; flip_transpose:
    out[c', k, Rs - 1 - i, Ss - 1 - j] (Rs = R / sh, Ss = S / sw) instead; inverse: w from
    out. Every element is w's tap t of kernel (k, c) and out's k Ak + c Ac + tab[t]."""
    cdef int k, c, a, b, i, j, t, RS = R * S, ss = sh * sw
    cdef long tap = <long>(R // sh) * (S // sw), Ak, Ac, cph, d
    Ak = tap if flip_transpose else <long>C * ss * tap
    if flip_transpose:
        Ac = <long>K * tap * (1 if phase_major else ss)
    else:
        Ac = tap * (1 if phase_major else ss)
    for a in range(sh):
        for b in range(sw):
            for i in range(R // sh):
                for j in range(S // sw):
                    t = (i * sh + a) * S + j * sw + b
                    cph = <long>(a * sw + b) * (C if phase_major else 1)
                    if flip_transpose:
                        tab[t] = (cph * K * tap + (R // sh - 1 - i) * (S // sw) + S // sw - 1 - j)
                    else:
                        tab[t] = cph * tap + i * (S // sw) + j
    for k in prange(K, schedule='static', num_threads=n_threads):
        for c in range(C):
            d = k * Ak + c * Ac
            if inverse:
                for t in range(RS):
                    out[(<long>k * C + c) * RS + t] = w[d + tab[t]]
            else:
                for t in range(RS):
                    out[d + tab[t]] = w[(<long>k * C + c) * RS + t]


def phase_weight(cnp.ndarray w, cnp.ndarray out, tuple stride, bint flip_transpose=False,
                 bint phase_major=False, bint inverse=False, int n_threads=1):
    """The weight (K, C, R, S) of a strided convolution over its image phases: out (K, C sh sw,
    R / sh, S / sw), or with ``flip_transpose`` (C sh sw, K, R / sh, S / sw) flipped (the
    input gradient's); phase channels (c, a, b), or (a, b, c) if ``phase_major``;
    ``inverse``: w from out; on ``n_threads`` threads."""
    cdef cnp.ndarray full = out if inverse else w
    cdef int K = full.shape[0], C = full.shape[1], R = full.shape[2], S = full.shape[3]
    cdef int sh = stride[0], sw = stride[1]
    cdef long *tab = <long *>malloc(<size_t>(R * S) * sizeof(long))
    if tab == NULL:
        raise MemoryError("fastcnn: out of memory")
    if w.dtype == np.float32:
        with nogil:
            _phase_weight(<float *>cnp.PyArray_DATA(w), <float *>cnp.PyArray_DATA(out), K, C, R, S, sh, sw,
                          flip_transpose, phase_major, inverse, tab, n_threads)
    else:
        with nogil:
            _phase_weight(<double *>cnp.PyArray_DATA(w), <double *>cnp.PyArray_DATA(out), K, C, R, S, sh, sw,
                          flip_transpose, phase_major, inverse, tab, n_threads)
    free(tab)
    return out


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
