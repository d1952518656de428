# cython: language_level=3
"""Pooling and nearest upsampling kernels.

Every kernel works on a batch of independent H x W planes (N*C of them),
C-contiguous, and is parallel over planes: one thread owns a plane of the
output (or of grad_input) from start to end, so there are no races and the
result does not depend on the thread count. One pass over the data, no
temporary copies.

Layers:
  1. per-plane functions ``_*_plane`` (``noexcept nogil``),
  2. ``prange`` loops over planes with ``n_threads`` passed by the caller,
  3. thin ``def`` entry points taking already checked arrays.
"""
cimport cython
from fastcnn._kernels._reduce cimport plane_sum
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.math cimport INFINITY
from libc.stdlib cimport malloc, free
from libc.stdint cimport int64_t, uint64_t, uint8_t
from libc.string cimport memset, memcpy

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* Max pooling 2x2 / stride 2 of float32 / float64 planes with int64 argmax indices.
       Branch-free selects that the compiler vectorises; built twice (AVX2 and
       the baseline instruction set) and chosen when the module loads, so the
       module still runs on any x86-64. Requires H*W < 2^31. */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define FC_POOL_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define FC_POOL_CLONES
    #endif
    #define FC_DEFINE_MAX_POOL_2X2(NAME, T)                                                  \
    FC_POOL_CLONES                                                                          \
    void NAME(const T *restrict x, T *restrict y, int64_t *restrict idx,                    \
              Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW)                                   \
    {                                                                                       \
        for (Py_ssize_t oh = 0; oh < OH; oh++) {                                            \
            const T *restrict r0 = x + 2 * oh * W;                                          \
            const T *restrict r1 = r0 + W;                                                  \
            T *restrict yr = y + oh * OW;                                                   \
            int64_t *restrict ir = idx + oh * OW;                                           \
            const int32_t base = (int32_t)(2 * oh * W), w = (int32_t)W;                     \
            for (int32_t ow = 0; ow < (int32_t)OW; ow++) {                                  \
                T v0 = r0[2 * ow], v1 = r0[2 * ow + 1], v2 = r1[2 * ow], v3 = r1[2 * ow + 1]; \
                int c = (v1 > v0) | (v1 != v1);                                             \
                T m = c ? v1 : v0;                                                          \
                int32_t j = c ? 1 : 0;                                                      \
                c = (v2 > m) | (v2 != v2);                                                  \
                m = c ? v2 : m;                                                             \
                j = c ? w : j;                                                              \
                c = (v3 > m) | (v3 != v3);                                                  \
                m = c ? v3 : m;                                                             \
                j = c ? w + 1 : j;                                                          \
                yr[ow] = m;                                                                 \
                ir[ow] = (int64_t)(base + 2 * ow + j);                                      \
            }                                                                               \
        }                                                                                   \
    }
    FC_DEFINE_MAX_POOL_2X2(fc_max_pool_2x2_f32, float)
    FC_DEFINE_MAX_POOL_2X2(fc_max_pool_2x2_f64, double)

    #if defined(__GNUC__) && !defined(__clang__)
    #define FC_POOL_VECTOR 1
    /* float32, 2x2 / stride 2, eight outputs at a time with explicit vectors
       (one AVX register, or two SSE2 registers in the baseline build). The last
       eight outputs of a row overlap the previous group when OW % 8 != 0:
       writing the same values twice is harmless. Needs OW >= 8. */
    typedef float fc_v8f __attribute__((vector_size(32)));
    typedef int32_t fc_v8i __attribute__((vector_size(32)));
    typedef int32_t fc_v4i __attribute__((vector_size(16)));
    typedef int64_t fc_v4l __attribute__((vector_size(32)));
    #define FC_SEL(c, a, b) ((fc_v8f)(((fc_v8i)(a) & (c)) | ((fc_v8i)(b) & ~(c))))
    typedef int8_t fc_v8c __attribute__((vector_size(8)));
    typedef int8_t fc_v32c __attribute__((vector_size(32)));
    typedef uint32_t fc_v8u __attribute__((vector_size(32)));
    FC_POOL_CLONES
    void fc_max_pool_2x2_f32v(const float *restrict x, float *restrict y, int64_t *restrict idx,
                              uint8_t *restrict code, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW)
    {
        /* idx: int64 flat argmax (or NULL); code: the argmax's place in its
           window, 0 (0,0), 1 (0,1), 2 (1,0), 3 (1,1) (or NULL) */
        /* even / odd columns within each 128-bit lane (one shufps each): the
           eight windows come out in the order 0 1 4 5 2 3 6 7, put back by
           one 64-bit permute of the maxima and by the byte gather of the codes */
        const fc_v8i ev = {0, 2, 8, 10, 4, 6, 12, 14}, od = {1, 3, 9, 11, 5, 7, 13, 15};
        const fc_v8i order = {0, 1, 4, 5, 2, 3, 6, 7};
        const fc_v32c bytes = {0, 4, 16, 20, 8, 12, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0,
                               0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        const fc_v8i lane = {0, 2, 4, 6, 8, 10, 12, 14};
        const int32_t w = (int32_t)W;
        for (Py_ssize_t oh = 0; oh < OH; oh++) {
            const float *r0 = x + 2 * oh * W, *r1 = r0 + W;
            float *yr = y + oh * OW;
            const int32_t base = (int32_t)(2 * oh * W);
            for (Py_ssize_t ow = 0; ow < OW; ow += 8) {
                if (ow + 8 > OW) ow = OW - 8;
                fc_v8f a0, a1, b0, b1;
                memcpy(&a0, r0 + 2 * ow, 32); memcpy(&a1, r0 + 2 * ow + 8, 32);
                memcpy(&b0, r1 + 2 * ow, 32); memcpy(&b1, r1 + 2 * ow + 8, 32);
                fc_v8f v0 = __builtin_shuffle(a0, a1, ev), v1 = __builtin_shuffle(a0, a1, od);
                fc_v8f v2 = __builtin_shuffle(b0, b1, ev), v3 = __builtin_shuffle(b0, b1, od);
                fc_v8i c = (v1 > v0) | (v1 != v1);
                fc_v8f m = FC_SEL(c, v1, v0);
                fc_v8i k = c & 1;
                c = (v2 > m) | (v2 != v2);
                m = FC_SEL(c, v2, m);
                k = (c & 2) | (k & ~c);
                c = (v3 > m) | (v3 != v3);
                m = FC_SEL(c, v3, m);
                k = (c & 3) | (k & ~c);
                m = __builtin_shuffle(m, order);
                memcpy(yr + ow, &m, 32);
                if (idx != NULL) {
                    k = __builtin_shuffle(k, order);
                    fc_v8i j = (k & 1) + (k >> 1) * w + lane + (base + 2 * (int32_t)ow);
                    int32_t jt[8];
                    memcpy(jt, &j, 32);
                    for (int l = 0; l < 8; l++) idx[oh * OW + ow + l] = jt[l];
                }
                if (code != NULL) {
                    fc_v32c kb = __builtin_shuffle((fc_v32c)k, bytes);
                    memcpy(code + oh * OW + ow, &kb, 8);
                }
            }
        }
    }

    /* Writes the gradients gv of eight 2x2 windows into their blocks at rows r0 and
       r1 (16 columns each): window l's gradient goes to the element its key k[l]
       names (k00 = 0 top left, k01 top right, k10 bottom left, k11 bottom right),
       zeros to the other three. */
    static inline void fc_pool_scatter8(float *r0, float *r1, fc_v8f gv, fc_v8i k,
                                        int32_t k01, int32_t k10, int32_t k11)
    {
        const fc_v8i lo = {0, 8, 1, 9, 2, 10, 3, 11}, hi = {4, 12, 5, 13, 6, 14, 7, 15};
        const fc_v8f z = {0, 0, 0, 0, 0, 0, 0, 0};
        fc_v8f e0 = FC_SEL(k == 0, gv, z), o0 = FC_SEL(k == k01, gv, z);
        fc_v8f e1 = FC_SEL(k == k10, gv, z), o1 = FC_SEL(k == k11, gv, z), t;
        t = __builtin_shuffle(e0, o0, lo); memcpy(r0, &t, 32);
        t = __builtin_shuffle(e0, o0, hi); memcpy(r0 + 8, &t, 32);
        t = __builtin_shuffle(e1, o1, lo); memcpy(r1, &t, 32);
        t = __builtin_shuffle(e1, o1, hi); memcpy(r1 + 8, &t, 32);
    }

    /* Gradient of 2x2 / stride 2 max pooling from window codes (as written by
       fc_max_pool_2x2_f32v), writing every element of the grad_x plane once. */
    FC_POOL_CLONES
    void fc_max_pool_2x2_code_backward_f32v(const float *restrict g, const uint8_t *restrict code,
                                            float *restrict gx, Py_ssize_t H, Py_ssize_t W,
                                            Py_ssize_t OH, Py_ssize_t OW)
    {
        for (Py_ssize_t oh = 0; oh < OH; oh++) {
            float *r0 = gx + 2 * oh * W, *r1 = r0 + W;
            for (Py_ssize_t ow = 0; ow < OW; ow += 8) {
                if (ow + 8 > OW) ow = OW - 8;
                uint32_t lo4, hi4;
                fc_v8f gv;
                memcpy(&lo4, code + oh * OW + ow, 4);
                memcpy(&hi4, code + oh * OW + ow + 4, 4);
                memcpy(&gv, g + oh * OW + ow, 32);
                const fc_v8u sh = {0, 8, 16, 24, 0, 8, 16, 24};
                const fc_v8u low = {~0u, ~0u, ~0u, ~0u, 0, 0, 0, 0};
                fc_v8u kw = (((fc_v8u){} + lo4) & low) | (((fc_v8u){} + hi4) & ~low);
                fc_pool_scatter8(r0 + 2 * ow, r1 + 2 * ow, gv, (fc_v8i)((kw >> sh) & 0xff), 1, 2, 3);
            }
            if (W > 2 * OW) { r0[W - 1] = 0; r1[W - 1] = 0; }
        }
        if (H > 2 * OH) memset(gx + (H - 1) * W, 0, W * sizeof(float));
    }

    /* Gradient of the same pooling from its indices, writing every element of
       the grad_x plane exactly once (no separate zeroing pass). Returns 0, with
       the plane partly written, when an index is not inside its own 2x2 block
       (indices from another pooling): the caller then redoes the plane. */
    FC_POOL_CLONES
    int fc_max_pool_2x2_backward_f32v(const float *restrict g, const int64_t *restrict idx,
                                      float *restrict gx, Py_ssize_t H, Py_ssize_t W,
                                      Py_ssize_t OH, Py_ssize_t OW)
    {
        const fc_v4l off0 = {0, 2, 4, 6}, off1 = {8, 10, 12, 14};
        const int32_t w = (int32_t)W;
        for (Py_ssize_t oh = 0; oh < OH; oh++) {
            float *r0 = gx + 2 * oh * W, *r1 = r0 + W;
            const float *gr = g + oh * OW;
            const int64_t *ir = idx + oh * OW;
            const int64_t base = 2 * oh * W;
            for (Py_ssize_t ow = 0; ow < OW; ow += 8) {
                if (ow + 8 > OW) ow = OW - 8;
                fc_v4l i0, i1;
                memcpy(&i0, ir + ow, 32);
                memcpy(&i1, ir + ow + 4, 32);
                const int64_t b0 = base + 2 * ow;
                fc_v4l d0 = i0 - b0 - off0, d1 = i1 - b0 - off1;
                fc_v4l bad = ((d0 != 0) & (d0 != 1) & (d0 != W) & (d0 != W + 1))
                           | ((d1 != 0) & (d1 != 1) & (d1 != W) & (d1 != W + 1));
                if (bad[0] | bad[1] | bad[2] | bad[3]) return 0;
                fc_v4i j0 = __builtin_convertvector(d0, fc_v4i), j1 = __builtin_convertvector(d1, fc_v4i);
                fc_v8i j;
                fc_v8f gv;
                memcpy(&j, &j0, 16);
                memcpy((char *)&j + 16, &j1, 16);
                memcpy(&gv, gr + ow, 32);
                fc_pool_scatter8(r0 + 2 * ow, r1 + 2 * ow, gv, j, 1, w, w + 1);
            }
            if (W > 2 * OW) { r0[W - 1] = 0; r1[W - 1] = 0; }
        }
        if (H > 2 * OH) memset(gx + (H - 1) * W, 0, W * sizeof(float));
        return 1;
    }
    #else
    #define FC_POOL_VECTOR 0
    static void fc_max_pool_2x2_f32v(const float *x, float *y, int64_t *idx, uint8_t *code,
                                     Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW)
    { }
    static void fc_max_pool_2x2_code_backward_f32v(const float *g, const uint8_t *code, float *gx,
                                                   Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW)
    { }
    static int fc_max_pool_2x2_backward_f32v(const float *g, const int64_t *idx, float *gx,
                                             Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW)
    { return 0; }
    #endif
    """
    void fc_max_pool_2x2_f32(const float* x, float* y, int64_t* idx,
                             Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil
    void fc_max_pool_2x2_f64(const double* x, double* y, int64_t* idx,
                             Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil
    int FC_POOL_VECTOR
    void fc_max_pool_2x2_f32v(const float* x, float* y, int64_t* idx, uint8_t* code,
                              Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil
    void fc_max_pool_2x2_code_backward_f32v(const float* g, const uint8_t* code, float* gx,
                                            Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH,
                                            Py_ssize_t OW) noexcept nogil
    int fc_max_pool_2x2_backward_f32v(const float* g, const int64_t* idx, float* gx,
                                      Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH,
                                      Py_ssize_t OW) noexcept nogil


# ---------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------

cdef inline void _max_pool_plane(
        const floating* x,      # IN READ-ONLY  (H, W)
        floating* y,            # OUT           (OH, OW)
        int64_t* idx,           # OUT           (OH, OW) or NULL
        Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
        Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    """General max pooling of one plane; padding acts as -inf.

    Same visiting order and tie/NaN rule as PyTorch: the first maximum in
    row-major window order wins, a NaN always replaces the running maximum.
    """
    cdef Py_ssize_t oh, ow, ih, iw, ih0, ih1, iw0, iw1, best
    cdef floating m, v
    cdef int c
    for oh in range(OH):
        ih0 = oh * sh - ph
        ih1 = ih0 + (kh - 1) * dh + 1
        if ih1 > H:
            ih1 = H
        while ih0 < 0:
            ih0 = ih0 + dh
        for ow in range(OW):
            iw0 = ow * sw - pw
            iw1 = iw0 + (kw - 1) * dw + 1
            if iw1 > W:
                iw1 = W
            while iw0 < 0:
                iw0 = iw0 + dw
            best = ih0 * W + iw0
            m = -INFINITY
            ih = ih0
            while ih < ih1:
                iw = iw0
                while iw < iw1:
                    v = x[ih * W + iw]
                    c = (v > m) | (v != v)
                    m = v if c else m
                    best = ih * W + iw if c else best
                    iw = iw + dw
                ih = ih + dh
            y[oh * OW + ow] = m
            if idx != NULL:
                idx[oh * OW + ow] = best


cdef inline void _max_pool_2x2_plane(
        const floating* x,      # IN READ-ONLY  (H, W)
        floating* y,            # OUT           (OH, OW)
        int64_t* idx,           # OUT           (OH, OW) or NULL
        Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    """Kernel 2, stride 2, no padding, no dilation, floor mode (OH = H//2, OW = W//2).

    Branch-free selects (the data decides nothing but the values chosen), in
    the general kernel's order: (0,0), (0,1), (1,0), (1,1); a later element
    wins when strictly greater or NaN.
    """
    cdef Py_ssize_t oh, ow, b
    cdef const floating* r0
    cdef const floating* r1
    cdef floating* yr
    cdef int64_t* ir
    cdef floating m, v0, v1, v2, v3
    cdef int c, j
    for oh in range(OH):
        r0 = x + 2 * oh * W
        r1 = r0 + W
        yr = y + oh * OW
        if idx != NULL:
            ir = idx + oh * OW
            for ow in range(OW):
                b = 2 * ow
                v0 = r0[b]
                v1 = r0[b + 1]
                v2 = r1[b]
                v3 = r1[b + 1]
                c = (v1 > v0) | (v1 != v1)
                m = v1 if c else v0
                j = 1 if c else 0
                c = (v2 > m) | (v2 != v2)
                m = v2 if c else m
                j = <int>W if c else j
                c = (v3 > m) | (v3 != v3)
                m = v3 if c else m
                j = <int>W + 1 if c else j
                yr[ow] = m
                ir[ow] = 2 * oh * W + b + j
        else:
            for ow in range(OW):
                b = 2 * ow
                v0 = r0[b]
                v1 = r0[b + 1]
                v2 = r1[b]
                v3 = r1[b + 1]
                m = v1 if (v1 > v0) | (v1 != v1) else v0
                m = v2 if (v2 > m) | (v2 != v2) else m
                m = v3 if (v3 > m) | (v3 != v3) else m
                yr[ow] = m


cdef inline void _max_pool_backward_plane(
        const floating* g,      # IN READ-ONLY  (OH, OW)
        const int64_t* idx,     # IN READ-ONLY  (OH, OW)
        floating* gx,           # OUT           (H, W)
        Py_ssize_t HW, Py_ssize_t OHW) noexcept nogil:
    """Zero the plane, then scatter-add each output gradient to its argmax."""
    cdef Py_ssize_t o
    cdef int64_t j
    memset(gx, 0, HW * sizeof(floating))
    for o in range(OHW):
        j = idx[o]
        if <uint64_t>j < <uint64_t>HW:
            gx[j] += g[o]


def max_pool2d_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                       int64_t[:, :, ::1] idx, bint with_idx,
                       Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                       int n_threads):
    """x (P, H, W) -> y (P, OH, OW) and, when ``with_idx``, idx (P, OH, OW)."""
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t OH = y.shape[1], OW = y.shape[2], p
    cdef bint fast = (kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
                      and dh == 1 and dw == 1 and OH == H // 2 and OW == W // 2)
    if P == 0 or OH == 0 or OW == 0:
        return
    with nogil:
        for p in prange(P, schedule='static', num_threads=n_threads):
            if fast and with_idx and H * W < 2147483647:
                if floating is float:
                    if OW >= 8 and FC_POOL_VECTOR:
                        fc_max_pool_2x2_f32v(&x[p, 0, 0], &y[p, 0, 0], &idx[p, 0, 0], NULL, W, OH, OW)
                    else:
                        fc_max_pool_2x2_f32(&x[p, 0, 0], &y[p, 0, 0], &idx[p, 0, 0], W, OH, OW)
                else:
                    fc_max_pool_2x2_f64(&x[p, 0, 0], &y[p, 0, 0], &idx[p, 0, 0], W, OH, OW)
            elif fast:
                if floating is float:
                    if not with_idx and OW >= 8 and FC_POOL_VECTOR:
                        fc_max_pool_2x2_f32v(&x[p, 0, 0], &y[p, 0, 0], NULL, NULL, W, OH, OW)
                    else:
                        _max_pool_2x2_plane(&x[p, 0, 0], &y[p, 0, 0],
                                            &idx[p, 0, 0] if with_idx else NULL, H, W, OH, OW)
                else:
                    _max_pool_2x2_plane(&x[p, 0, 0], &y[p, 0, 0],
                                        &idx[p, 0, 0] if with_idx else NULL, H, W, OH, OW)
            else:
                _max_pool_plane(&x[p, 0, 0], &y[p, 0, 0],
                                &idx[p, 0, 0] if with_idx else NULL,
                                H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw)


cdef inline void _max_pool_2x2_code_plane(const floating* x, floating* y, uint8_t* code,
                                          Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    """2x2 / stride 2 max pooling of one plane, the argmax kept as its place in the
    window (0 (0,0), 1 (0,1), 2 (1,0), 3 (1,1)); same order and NaN rule as above."""
    cdef Py_ssize_t oh, ow, b
    cdef const floating* r0
    cdef const floating* r1
    cdef floating m, v
    cdef uint8_t k
    cdef int c
    for oh in range(OH):
        r0 = x + 2 * oh * W
        r1 = r0 + W
        for ow in range(OW):
            b = 2 * ow
            m = r0[b]
            k = 0
            v = r0[b + 1]
            c = (v > m) | (v != v)
            m = v if c else m
            k = 1 if c else k
            v = r1[b]
            c = (v > m) | (v != v)
            m = v if c else m
            k = 2 if c else k
            v = r1[b + 1]
            c = (v > m) | (v != v)
            m = v if c else m
            k = 3 if c else k
            y[oh * OW + ow] = m
            code[oh * OW + ow] = k


cdef inline void _max_pool_2x2_code_backward_plane(const floating* g, const uint8_t* code, floating* gx,
                                                   Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH,
                                                   Py_ssize_t OW) noexcept nogil:
    cdef Py_ssize_t oh, ow, b
    cdef floating* r0
    cdef floating* r1
    cdef floating v
    cdef uint8_t k
    memset(gx, 0, H * W * sizeof(floating))
    for oh in range(OH):
        r0 = gx + 2 * oh * W
        r1 = r0 + W
        for ow in range(OW):
            b = 2 * ow
            k = code[oh * OW + ow]
            v = g[oh * OW + ow]
            if k == 0:
                r0[b] = v
            elif k == 1:
                r0[b + 1] = v
            elif k == 2:
                r1[b] = v
            else:
                r1[b + 1] = v


def max_pool2d_2x2_codes(const floating[:, :, ::1] x, floating[:, :, ::1] y, uint8_t[:, :, ::1] code,
                         int n_threads):
    """2x2 / stride 2 max pooling (floor mode) of x (P, H, W) into y (P, H/2, W/2), the
    argmax of each window as its place in the window (uint8 code, for the backward)."""
    cdef Py_ssize_t P = x.shape[0], W = x.shape[2], OH = y.shape[1], OW = y.shape[2], p
    if P == 0 or OH == 0 or OW == 0:
        return
    if floating is float:
        if OW < 8 and FC_POOL_VECTOR:
            _max_pool_2x2_codes_narrow(&x[0, 0, 0], &y[0, 0, 0], &code[0, 0, 0], P, x.shape[1], W, OH,
                                       OW, n_threads)
            return
    with nogil:
        for p in prange(P, schedule='static', num_threads=n_threads):
            if floating is float:
                if OW >= 8 and FC_POOL_VECTOR:
                    fc_max_pool_2x2_f32v(&x[p, 0, 0], &y[p, 0, 0], NULL, &code[p, 0, 0], W, OH, OW)
                else:
                    _max_pool_2x2_code_plane(&x[p, 0, 0], &y[p, 0, 0], &code[p, 0, 0], W, OH, OW)
            else:
                _max_pool_2x2_code_plane(&x[p, 0, 0], &y[p, 0, 0], &code[p, 0, 0], W, OH, OW)


# Planes of fewer than eight windows a row (the vector kernels take eight at a
# time) go through a per-thread copy whose rows are 16 wide, padded with -inf
# (never a maximum; the windows it adds are dropped), and back.
DEF NARROW_W = 16

cdef inline size_t _narrow_scratch_bytes(Py_ssize_t OH) noexcept nogil:
    """One thread's copy: 2 OH input rows of NARROW_W, then OH x 8 outputs and OH x 8 codes."""
    return 2 * OH * NARROW_W * sizeof(float) + OH * 8 * sizeof(float) + OH * 8 + 64


cdef void _max_pool_2x2_codes_narrow(const float *x, float *y, uint8_t *code, Py_ssize_t P,
                                     Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                                     int n_threads) noexcept nogil:
    cdef Py_ssize_t p, r, j, oh, i
    cdef float *tx
    cdef float *ty
    cdef uint8_t *tc
    with nogil, parallel(num_threads=n_threads):
        tx = <float *>malloc(_narrow_scratch_bytes(OH))
        if tx != NULL:
            ty = tx + 2 * OH * NARROW_W
            tc = <uint8_t *>(ty + OH * 8)
            for i in range(2 * OH):
                for j in range(W, NARROW_W):
                    tx[i * NARROW_W + j] = -INFINITY
            for p in prange(P, schedule='static'):
                for r in range(2 * OH):
                    memcpy(tx + r * NARROW_W, x + (p * H + r) * W, W * sizeof(float))
                fc_max_pool_2x2_f32v(tx, ty, NULL, tc, NARROW_W, OH, 8)
                for oh in range(OH):
                    memcpy(y + (p * OH + oh) * OW, ty + oh * 8, OW * sizeof(float))
                    memcpy(code + (p * OH + oh) * OW, tc + oh * 8, OW)
            free(tx)


cdef void _max_pool_2x2_code_backward_narrow(const float *g, const uint8_t *code, float *gx,
                                             Py_ssize_t P, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH,
                                             Py_ssize_t OW, int n_threads) noexcept nogil:
    cdef Py_ssize_t p, r, oh
    cdef float *tg
    cdef float *tx
    cdef uint8_t *tc
    with nogil, parallel(num_threads=n_threads):
        tx = <float *>malloc(_narrow_scratch_bytes(OH))
        if tx != NULL:
            tg = tx + 2 * OH * NARROW_W
            tc = <uint8_t *>(tg + OH * 8)
            memset(tg, 0, OH * 8 * sizeof(float))
            memset(tc, 0, OH * 8)
            for p in prange(P, schedule='static'):
                for oh in range(OH):
                    memcpy(tg + oh * 8, g + (p * OH + oh) * OW, OW * sizeof(float))
                    memcpy(tc + oh * 8, code + (p * OH + oh) * OW, OW)
                fc_max_pool_2x2_code_backward_f32v(tg, tc, tx, 2 * OH, NARROW_W, OH, 8)
                for r in range(2 * OH):
                    memcpy(gx + (p * H + r) * W, tx + r * NARROW_W, W * sizeof(float))
                if W > 2 * OW:
                    for r in range(2 * OH):
                        gx[(p * H + r) * W + W - 1] = 0
                if H > 2 * OH:
                    memset(gx + (p * H + H - 1) * W, 0, W * sizeof(float))
            free(tx)


def max_pool2d_2x2_code_backward(const floating[:, :, ::1] g, const uint8_t[:, :, ::1] code,
                                 floating[:, :, ::1] gx, int n_threads):
    """grad_x (P, H, W), fully overwritten, from grad_out and the window codes."""
    cdef Py_ssize_t P = gx.shape[0], H = gx.shape[1], W = gx.shape[2]
    cdef Py_ssize_t OH = g.shape[1], OW = g.shape[2], p
    if P == 0 or H == 0 or W == 0:
        return
    if floating is float:
        if OW < 8 and FC_POOL_VECTOR:
            _max_pool_2x2_code_backward_narrow(&g[0, 0, 0], &code[0, 0, 0], &gx[0, 0, 0], P, H, W, OH,
                                               OW, n_threads)
            return
    with nogil:
        for p in prange(P, schedule='static', num_threads=n_threads):
            if floating is float:
                if OW >= 8 and FC_POOL_VECTOR:
                    fc_max_pool_2x2_code_backward_f32v(&g[p, 0, 0], &code[p, 0, 0], &gx[p, 0, 0],
                                                       H, W, OH, OW)
                else:
                    _max_pool_2x2_code_backward_plane(&g[p, 0, 0], &code[p, 0, 0], &gx[p, 0, 0],
                                                      H, W, OH, OW)
            else:
                _max_pool_2x2_code_backward_plane(&g[p, 0, 0], &code[p, 0, 0], &gx[p, 0, 0],
                                                  H, W, OH, OW)


def max_pool2d_backward(const floating[:, :, ::1] g, const int64_t[:, :, ::1] idx,
                        floating[:, :, ::1] gx, bint try_2x2, int n_threads):
    """grad_out (P, OH, OW) and argmax idx -> grad_x (P, H, W), fully overwritten.

    Each plane is written by one thread while it is in cache: zeroed, then
    scattered into (indices outside the plane are ignored). ``try_2x2``
    (OH = H // 2, OW = W // 2) first tries the one-pass writer of 2x2 / stride 2
    pooling, which falls back to the general path for a plane whose indices
    are not all in their own 2x2 block.
    """
    cdef Py_ssize_t P = gx.shape[0], H = gx.shape[1], W = gx.shape[2]
    cdef Py_ssize_t OH = g.shape[1], OW = g.shape[2], p
    cdef bint fast = try_2x2 and floating is float and OW >= 8 and OH == H // 2 and OW == W // 2
    if P == 0 or H == 0 or W == 0:
        return
    with nogil:
        for p in prange(P, schedule='static', num_threads=n_threads):
            if OH * OW == 0:
                memset(&gx[p, 0, 0], 0, H * W * sizeof(floating))
            elif not (fast and floating is float and fc_max_pool_2x2_backward_f32v(
                    <const float*>&g[p, 0, 0], &idx[p, 0, 0], <float*>&gx[p, 0, 0], H, W, OH, OW)):
                _max_pool_backward_plane(&g[p, 0, 0], &idx[p, 0, 0], &gx[p, 0, 0], H * W, OH * OW)


# ---------------------------------------------------------------------------
# average pooling
# ---------------------------------------------------------------------------

cdef inline void _avg_window(Py_ssize_t o, Py_ssize_t s, Py_ssize_t k, Py_ssize_t pad,
                             Py_ssize_t n, Py_ssize_t* lo, Py_ssize_t* hi,
                             Py_ssize_t* padded) noexcept nogil:
    """Window of output ``o`` along one axis: [lo, hi) clipped to the input,
    ``padded`` its length counting padding (PyTorch's pool_size factor)."""
    cdef Py_ssize_t a = o * s - pad
    cdef Py_ssize_t b = a + k
    if b > n + pad:
        b = n + pad
    padded[0] = b - a
    if a < 0:
        a = 0
    if b > n:
        b = n
    lo[0] = a
    hi[0] = b


cdef inline void _avg_pool_plane(
        const floating* x,      # IN READ-ONLY  (H, W)
        floating* y,            # OUT           (OH, OW)
        Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
        Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad, Py_ssize_t divisor) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw, h0, h1, w0, w1, hp, wp, div
    cdef double s
    for oh in range(OH):
        _avg_window(oh, sh, kh, ph, H, &h0, &h1, &hp)
        for ow in range(OW):
            _avg_window(ow, sw, kw, pw, W, &w0, &w1, &wp)
            if h0 >= h1 or w0 >= w1:
                y[oh * OW + ow] = 0
                continue
            div = divisor if divisor != 0 else hp * wp if count_include_pad else (h1 - h0) * (w1 - w0)
            s = 0
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    s = s + x[ih * W + iw]
            y[oh * OW + ow] = <floating>(s / div)


cdef inline void _avg_pool_backward_plane(
        const floating* g,      # IN READ-ONLY  (OH, OW)
        floating* gx,           # OUT           (H, W)
        Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
        Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad, Py_ssize_t divisor) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw, h0, h1, w0, w1, hp, wp, div
    cdef floating v
    memset(gx, 0, H * W * sizeof(floating))
    for oh in range(OH):
        _avg_window(oh, sh, kh, ph, H, &h0, &h1, &hp)
        for ow in range(OW):
            _avg_window(ow, sw, kw, pw, W, &w0, &w1, &wp)
            if h0 >= h1 or w0 >= w1:
                continue
            div = divisor if divisor != 0 else hp * wp if count_include_pad else (h1 - h0) * (w1 - w0)
            v = g[oh * OW + ow] / <floating>div
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    gx[ih * W + iw] += v


def avg_pool2d_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                       Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad, Py_ssize_t divisor,
                       int n_threads):
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t OH = y.shape[1], OW = y.shape[2], p
    if P == 0 or OH == 0 or OW == 0:
        return
    with nogil:
        for p in prange(P, schedule='static', num_threads=n_threads):
            _avg_pool_plane(&x[p, 0, 0], &y[p, 0, 0], H, W, OH, OW,
                            kh, kw, sh, sw, ph, pw, count_include_pad, divisor)


def avg_pool2d_backward(const floating[:, :, ::1] g, floating[:, :, ::1] gx,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw, bint count_include_pad, Py_ssize_t divisor,
                        int n_threads):
    cdef Py_ssize_t P = gx.shape[0], H = gx.shape[1], W = gx.shape[2]
    cdef Py_ssize_t OH = g.shape[1], OW = g.shape[2], p
    if P == 0 or H == 0 or W == 0:
        return
    with nogil:
        for p in prange(P, schedule='static', num_threads=n_threads):
            _avg_pool_backward_plane(&g[p, 0, 0], &gx[p, 0, 0], H, W, OH, OW,
                                     kh, kw, sh, sw, ph, pw, count_include_pad, divisor)


# ---------------------------------------------------------------------------
# adaptive average pooling
# ---------------------------------------------------------------------------

cdef inline void _adaptive_avg_plane(
        const floating* x,      # IN READ-ONLY  (H, W)
        floating* y,            # OUT           (OH, OW)
        Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, h0, h1, w0, w1
    cdef double s
    if OH == 1 and OW == 1:
        y[0] = <floating>(plane_sum(x, H * W) / (H * W))
        return
    for oh in range(OH):
        h0 = (oh * H) // OH
        h1 = ((oh + 1) * H + OH - 1) // OH
        for ow in range(OW):
            w0 = (ow * W) // OW
            w1 = ((ow + 1) * W + OW - 1) // OW
            s = 0
            for ih in range(h0, h1):
                s = s + plane_sum(x + ih * W + w0, w1 - w0)
            y[oh * OW + ow] = <floating>(s / ((h1 - h0) * (w1 - w0)))


cdef inline void _adaptive_avg_backward_plane(
        const floating* g,      # IN READ-ONLY  (OH, OW)
        floating* gx,           # OUT           (H, W)
        Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw, h0, h1, w0, w1, i
    cdef floating v
    if OH == 1 and OW == 1:
        v = g[0] / <floating>(H * W)
        for i in range(H * W):
            gx[i] = v
        return
    memset(gx, 0, H * W * sizeof(floating))
    for oh in range(OH):
        h0 = (oh * H) // OH
        h1 = ((oh + 1) * H + OH - 1) // OH
        for ow in range(OW):
            w0 = (ow * W) // OW
            w1 = ((ow + 1) * W + OW - 1) // OW
            v = g[oh * OW + ow] / <floating>((h1 - h0) * (w1 - w0))
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    gx[ih * W + iw] += v


def adaptive_avg_pool2d_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y, int n_threads):
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t OH = y.shape[1], OW = y.shape[2], p
    if P == 0:
        return
    with nogil:
        for p in prange(P, schedule='static', num_threads=n_threads):
            _adaptive_avg_plane(&x[p, 0, 0], &y[p, 0, 0], H, W, OH, OW)


def adaptive_avg_pool2d_backward(const floating[:, :, ::1] g, floating[:, :, ::1] gx, int n_threads):
    cdef Py_ssize_t P = gx.shape[0], H = gx.shape[1], W = gx.shape[2]
    cdef Py_ssize_t OH = g.shape[1], OW = g.shape[2], p
    if P == 0:
        return
    with nogil:
        for p in prange(P, schedule='static', num_threads=n_threads):
            _adaptive_avg_backward_plane(&g[p, 0, 0], &gx[p, 0, 0], H, W, OH, OW)


# ---------------------------------------------------------------------------
# nearest upsampling by integer factors
# ---------------------------------------------------------------------------

cdef inline void _upsample_plane(
        const floating* x,      # IN READ-ONLY  (H, W)
        floating* y,            # OUT           (H*sh, W*sw)
        Py_ssize_t H, Py_ssize_t W, Py_ssize_t sh, Py_ssize_t sw) noexcept nogil:
    cdef Py_ssize_t ih, iw, k, OW = W * sw
    cdef floating* row
    cdef floating v
    for ih in range(H):
        row = y + ih * sh * OW
        if sw == 2:
            for iw in range(W):
                v = x[ih * W + iw]
                row[2 * iw] = v
                row[2 * iw + 1] = v
        else:
            for iw in range(W):
                v = x[ih * W + iw]
                for k in range(sw):
                    row[iw * sw + k] = v
        for k in range(1, sh):
            memcpy(row + k * OW, row, OW * sizeof(floating))


cdef inline void _upsample_backward_plane(
        const floating* g,      # IN READ-ONLY  (H*sh, W*sw)
        floating* gx,           # OUT           (H, W)
        Py_ssize_t H, Py_ssize_t W, Py_ssize_t sh, Py_ssize_t sw) noexcept nogil:
    cdef Py_ssize_t ih, iw, a, b, OW = W * sw
    cdef const floating* row
    cdef floating s
    for ih in range(H):
        for iw in range(W):
            s = 0
            for a in range(sh):
                row = g + (ih * sh + a) * OW + iw * sw
                for b in range(sw):
                    s = s + row[b]
            gx[ih * W + iw] = s


def upsample_nearest2d_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                               Py_ssize_t sh, Py_ssize_t sw, int n_threads):
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2], p
    if P == 0 or H == 0 or W == 0:
        return
    with nogil:
        for p in prange(P, schedule='static', num_threads=n_threads):
            _upsample_plane(&x[p, 0, 0], &y[p, 0, 0], H, W, sh, sw)


def upsample_nearest2d_backward(const floating[:, :, ::1] g, floating[:, :, ::1] gx,
                                Py_ssize_t sh, Py_ssize_t sw, int n_threads):
    cdef Py_ssize_t P = gx.shape[0], H = gx.shape[1], W = gx.shape[2], p
    if P == 0 or H == 0 or W == 0:
        return
    with nogil:
        for p in prange(P, schedule='static', num_threads=n_threads):
            _upsample_backward_plane(&g[p, 0, 0], &gx[p, 0, 0], H, W, sh, sw)


# ---------------------------------------------------------------------------
# nearest resampling to any size: output pixel (i, j) reads input (rows[i], cols[j])
# ---------------------------------------------------------------------------

cdef inline void _nearest_plane(
        const floating* x,      # IN READ-ONLY  (H, W)
        floating* y,            # OUT           (OH, OW)
        Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
        const Py_ssize_t* rows, const Py_ssize_t* cols) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef const floating* src
    cdef floating* out
    for i in range(OH):
        out = y + i * OW
        if i > 0 and rows[i] == rows[i - 1]:
            memcpy(out, out - OW, OW * sizeof(floating))
            continue
        src = x + rows[i] * W
        for j in range(OW):
            out[j] = src[cols[j]]


cdef inline void _nearest_backward_plane(
        const floating* g,      # IN READ-ONLY  (OH, OW)
        floating* gx,           # OUT           (H, W)
        Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
        const Py_ssize_t* rows, const Py_ssize_t* cols) noexcept nogil:
    # each input pixel sums the gradients of its output pixels in row-major order
    cdef Py_ssize_t i, j
    cdef const floating* src
    cdef floating* acc
    memset(gx, 0, H * W * sizeof(floating))
    for i in range(OH):
        src = g + i * OW
        acc = gx + rows[i] * W
        for j in range(OW):
            acc[cols[j]] += src[j]


def nearest_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y, const Py_ssize_t[::1] rows,
                    const Py_ssize_t[::1] cols, int n_threads):
    """y[p, i, j] = x[p, rows[i], cols[j]]; rows and cols index x's rows and columns."""
    cdef Py_ssize_t P = y.shape[0], OH = y.shape[1], OW = y.shape[2], W = x.shape[2], p
    if P == 0:   # (the sizes are >= 1)
        return
    with nogil:
        for p in prange(P, schedule='static', num_threads=n_threads):
            _nearest_plane(&x[p, 0, 0], &y[p, 0, 0], W, OH, OW, &rows[0], &cols[0])


def nearest_backward(const floating[:, :, ::1] g, floating[:, :, ::1] gx, const Py_ssize_t[::1] rows,
                     const Py_ssize_t[::1] cols, int n_threads):
    """gx[p, rows[i], cols[j]] += g[p, i, j] over the output pixels (gx overwritten)."""
    cdef Py_ssize_t P = gx.shape[0], H = gx.shape[1], W = gx.shape[2], OH = g.shape[1], OW = g.shape[2], p
    if P == 0:   # (the sizes are >= 1)
        return
    with nogil:
        for p in prange(P, schedule='static', num_threads=n_threads):
            _nearest_backward_plane(&g[p, 0, 0], &gx[p, 0, 0], H, W, OH, OW, &rows[0], &cols[0])


# ---------------------------------------------------------------------------
# linear resampling: output pixel (i, j) mixes the input rows r0[i], r1[i] with weights
# a0[i], a1[i] and the columns c0[j], c1[j] with weights b0[j], b1[j]
# ---------------------------------------------------------------------------

cdef inline void _linear_plane(
        const floating* x,      # IN READ-ONLY  (H, W)
        floating* y,            # OUT           (OH, OW)
        Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
        const Py_ssize_t* r0, const Py_ssize_t* r1, const floating* a0, const floating* a1,
        const Py_ssize_t* c0, const Py_ssize_t* c1, const floating* b0, const floating* b1,
        bint one_row) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef const floating* x0
    cdef const floating* x1
    cdef floating* out
    for i in range(OH):
        x0 = x + r0[i] * W
        x1 = x + r1[i] * W
        out = y + i * OW
        if one_row:
            for j in range(OW):
                out[j] = b0[j] * x0[c0[j]] + b1[j] * x0[c1[j]]
        else:
            for j in range(OW):
                out[j] = (a0[i] * (b0[j] * x0[c0[j]] + b1[j] * x0[c1[j]])
                          + a1[i] * (b0[j] * x1[c0[j]] + b1[j] * x1[c1[j]]))


cdef inline void _linear_backward_plane(
        const floating* g,      # IN READ-ONLY  (OH, OW)
        floating* gx,           # OUT           (H, W)
        Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
        const Py_ssize_t* r0, const Py_ssize_t* r1, const floating* a0, const floating* a1,
        const Py_ssize_t* c0, const Py_ssize_t* c1, const floating* b0, const floating* b1,
        bint one_row) noexcept nogil:
    # the output pixels in row-major order, each adding into its two (one row) or four inputs
    cdef Py_ssize_t i, j
    cdef const floating* src
    cdef floating* acc0
    cdef floating* acc1
    cdef floating v
    memset(gx, 0, H * W * sizeof(floating))
    for i in range(OH):
        src = g + i * OW
        acc0 = gx + r0[i] * W
        acc1 = gx + r1[i] * W
        if one_row:
            for j in range(OW):
                acc0[c0[j]] += b0[j] * src[j]
                acc0[c1[j]] += b1[j] * src[j]
        else:
            for j in range(OW):
                v = src[j]
                acc0[c0[j]] += a0[i] * b0[j] * v
                acc0[c1[j]] += a0[i] * b1[j] * v
                acc1[c0[j]] += a1[i] * b0[j] * v
                acc1[c1[j]] += a1[i] * b1[j] * v


def linear_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                   const Py_ssize_t[::1] r0, const Py_ssize_t[::1] r1, const floating[::1] a0, const floating[::1] a1,
                   const Py_ssize_t[::1] c0, const Py_ssize_t[::1] c1, const floating[::1] b0, const floating[::1] b1,
                   bint one_row, int n_threads):
    """y[p, i, j] = a0[i] (b0[j] x[p, r0[i], c0[j]] + b1[j] x[p, r0[i], c1[j]]) + a1[i] (the same of
    row r1[i]); with ``one_row``, b0[j] x[p, r0[i], c0[j]] + b1[j] x[p, r0[i], c1[j]]."""
    cdef Py_ssize_t P = y.shape[0], OH = y.shape[1], OW = y.shape[2], W = x.shape[2], p
    if P == 0:   # (the sizes are >= 1)
        return
    with nogil:
        for p in prange(P, schedule='static', num_threads=n_threads):
            _linear_plane(&x[p, 0, 0], &y[p, 0, 0], W, OH, OW, &r0[0], &r1[0], &a0[0], &a1[0],
                          &c0[0], &c1[0], &b0[0], &b1[0], one_row)


def linear_backward(const floating[:, :, ::1] g, floating[:, :, ::1] gx,
                    const Py_ssize_t[::1] r0, const Py_ssize_t[::1] r1, const floating[::1] a0,
                    const floating[::1] a1, const Py_ssize_t[::1] c0, const Py_ssize_t[::1] c1,
                    const floating[::1] b0, const floating[::1] b1, bint one_row, int n_threads):
    """The adjoint of linear_forward: gx overwritten with the weighted sums of g."""
    cdef Py_ssize_t P = gx.shape[0], H = gx.shape[1], W = gx.shape[2], OH = g.shape[1], OW = g.shape[2], p
    if P == 0:   # (the sizes are >= 1)
        return
    with nogil:
        for p in prange(P, schedule='static', num_threads=n_threads):
            _linear_backward_plane(&g[p, 0, 0], &gx[p, 0, 0], H, W, OH, OW, &r0[0], &r1[0], &a0[0], &a1[0],
                                   &c0[0], &c1[0], &b0[0], &b1[0], one_row)
