# cython: language_level=3
"""Loss kernels: cross-entropy from logits, BCE with logits, MSE, L1.

Sums are deterministic for any thread count: cross-entropy keeps one loss
per row and adds them in row order; the element-wise losses add fixed-size
chunks (``CHUNK`` elements, chosen by the problem size only) in parallel and
merge the chunk sums in chunk order. Gradients are element-wise.
"""
cimport cython
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expf, log, log1p, fabs, INFINITY
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport malloc, free
from cython.parallel cimport threadid

cdef extern from *:
    """
    #include <math.h>
    #include <stdint.h>
    #include <string.h>
    /* out[i] = exp(x[i] - m) in float32 with plain arithmetic (Cephes-style
       range reduction and polynomial, ~1 ulp) so that the loop vectorises;
       built for AVX2 and for the baseline instruction set, picked at load time. */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define FC_LOSS_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define FC_LOSS_CLONES
    #endif
    static inline float fc_expf_poly(float x) {
        const float hi = 88.3762626647949f, lo = -87.3365478515625f;
        float xc = x > hi ? hi : x;
        xc = xc < lo ? lo : xc;
        float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
        float r = xc - n * 0.693359375f;
        r = r - n * -2.12194440e-4f;
        float p = 1.9875691500e-4f;
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        p = p * r * r + r + 1.0f;
        int32_t bits = ((int32_t)n + 127) << 23;
        float scale;
        memcpy(&scale, &bits, sizeof scale);
        float y = p * scale;
        y = x < lo ? 0.0f : y;
        y = x > hi ? INFINITY : y;
        return x != x ? x : y;
    }
    FC_LOSS_CLONES
    void fc_exp_shift_f32(const float *restrict x, float m, float *restrict out, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++)
            out[i] = fc_expf_poly(x[i] - m);
    }
    /* Rows r of x (R x C): e = exp(x - max_r) (shift 0 for a row of -inf only),
       rowmax[r] = max_r, rowsum[r] = sum of row r of e in double. One
       vectorised exponential pass over the whole block. */
    FC_LOSS_CLONES
    void fc_rows_exp_f32(const float *restrict x, Py_ssize_t R, Py_ssize_t C, float *restrict e,
                         float *restrict rowmax, double *restrict rowsum) {
        for (Py_ssize_t r = 0; r < R; r++) {
            /* maximum ignoring NaN (a NaN in the row makes its sum NaN anyway) */
            const float *xr = x + r * C;
            float m0 = -INFINITY, m1 = -INFINITY, m2 = -INFINITY, m3 = -INFINITY;
            Py_ssize_t c = 0;
            for (; c + 4 <= C; c += 4) {
                m0 = xr[c] > m0 ? xr[c] : m0;
                m1 = xr[c + 1] > m1 ? xr[c + 1] : m1;
                m2 = xr[c + 2] > m2 ? xr[c + 2] : m2;
                m3 = xr[c + 3] > m3 ? xr[c + 3] : m3;
            }
            for (; c < C; c++) m0 = xr[c] > m0 ? xr[c] : m0;
            m0 = m1 > m0 ? m1 : m0;
            m2 = m3 > m2 ? m3 : m2;
            float m = m2 > m0 ? m2 : m0;
            rowmax[r] = m;
            float sh = m == -INFINITY ? 0.0f : m;
            float *er = e + r * C;
            for (Py_ssize_t c = 0; c < C; c++) er[c] = xr[c] - sh;
        }
        for (Py_ssize_t i = 0; i < R * C; i++) e[i] = fc_expf_poly(e[i]);
        for (Py_ssize_t r = 0; r < R; r++) {
            const float *er = e + r * C;
            double s0 = 0, s1 = 0;
            Py_ssize_t c = 0;
            for (; c + 2 <= C; c += 2) { s0 += er[c]; s1 += er[c + 1]; }
            if (c < C) s0 += er[c];
            rowsum[r] = s0 + s1;
        }
    }
    """
    void fc_exp_shift_f32(const float* x, float m, float* out, Py_ssize_t n) noexcept nogil
    void fc_rows_exp_f32(const float* x, Py_ssize_t R, Py_ssize_t C, float* e,
                         float* rowmax, double* rowsum) noexcept nogil


ctypedef fused label_t:
    int32_t
    int64_t

cdef enum:
    CHUNK = 4096


cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


# ---------------------------------------------------------------------------
# cross-entropy (logits (N, C), integer labels (N,))
# ---------------------------------------------------------------------------

cdef inline double _row_lse(const floating* x, Py_ssize_t C) noexcept nogil:
    """log(sum(exp(x))) of one row, stable."""
    cdef Py_ssize_t c, k, j
    cdef floating m = -INFINITY
    cdef double s = 0
    cdef float buf[64]
    for c in range(C):
        if x[c] > m or x[c] != x[c]:
            m = x[c]
    if m == -INFINITY:
        return -INFINITY
    if floating is float:
        c = 0
        while c < C:
            k = C - c if C - c < 64 else 64
            fc_exp_shift_f32(x + c, m, buf, k)
            for j in range(k):
                s += buf[j]
            c += k
    else:
        for c in range(C):
            s += exp(x[c] - m)
    return m + log(s)


cdef inline double _row_loss(const floating* x, Py_ssize_t C, Py_ssize_t t,
                             const double* w, double W, double eps) noexcept nogil:
    """(1-eps) * w[t] * (lse - x[t]) + eps/C * sum_c w[c] (lse - x[c])."""
    cdef Py_ssize_t c
    cdef double lse = _row_lse(x, C), wt = 1.0, sx = 0, nll, smooth
    if w != NULL:
        wt = w[t]
    nll = wt * (lse - x[t])
    if eps == 0:
        return nll
    if w != NULL:
        for c in range(C):
            sx += w[c] * x[c]
    else:
        for c in range(C):
            sx += x[c]
    smooth = lse * W - sx
    return (1 - eps) * nll + eps / C * smooth


cdef inline void _row_grad(const floating* x, floating* gx, Py_ssize_t C, Py_ssize_t t,
                           const double* w, double W, double eps, double scale) noexcept nogil:
    """d row_loss / dx, times scale (one exponential per element)."""
    cdef Py_ssize_t c
    cdef floating m = -INFINITY
    cdef double wt = 1.0, a, b, s = 0
    if w != NULL:
        wt = w[t]
    for c in range(C):
        if x[c] > m or x[c] != x[c]:
            m = x[c]
    # e_c = exp(x_c - max) into gx; softmax p_c = e_c / sum(e)
    if floating is float:
        fc_exp_shift_f32(x, m, gx, C)
    else:
        for c in range(C):
            gx[c] = exp(x[c] - m)
    for c in range(C):
        s += gx[c]
    # grad_c = (1-eps) * w_t * (p_c - [c == t]) + eps/C * (W p_c - w_c)
    a = scale * ((1 - eps) * wt + eps / C * W) / s
    b = scale * eps / C
    if w != NULL:
        for c in range(C):
            gx[c] = <floating>(a * gx[c] - b * w[c])
    elif b != 0:
        for c in range(C):
            gx[c] = <floating>(a * gx[c] - b)
    else:
        for c in range(C):
            gx[c] = <floating>(a * gx[c])
    gx[t] = <floating>(gx[t] - scale * (1 - eps) * wt)


cdef enum:
    # rows per block of the float32 cross-entropy: about 64 KiB of logits
    CE_BLOCK_FLOATS = 16384


cdef inline Py_ssize_t _ce_block_rows(Py_ssize_t C) noexcept nogil:
    return CE_BLOCK_FLOATS // C if C < CE_BLOCK_FLOATS else 1


cdef inline double _loss_from_lse(const float* x, Py_ssize_t C, Py_ssize_t t, double lse,
                                  const double* w, double W, double eps) noexcept nogil:
    """Row loss given its log-sum-exp (same formula as ``_row_loss``)."""
    cdef Py_ssize_t c
    cdef double wt = 1.0, sx = 0, nll
    if w != NULL:
        wt = w[t]
    nll = wt * (lse - x[t])
    if eps == 0:
        return nll
    if w != NULL:
        for c in range(C):
            sx += w[c] * x[c]
    else:
        for c in range(C):
            sx += x[c]
    return (1 - eps) * nll + eps / C * (lse * W - sx)


cdef void _ce_forward_block_f32(const float* x, const label_t* t, Py_ssize_t r0, Py_ssize_t r1,
                                Py_ssize_t C, const double* w, double W, double eps,
                                float* e, float* rmax, double* rsum,
                                double* rows) noexcept nogil:
    """Row losses of rows [r0, r1) into rows[r0:r1]; e, rmax, rsum: scratch of the block."""
    cdef Py_ssize_t r, R = r1 - r0
    cdef double lse
    fc_rows_exp_f32(x + r0 * C, R, C, e, rmax, rsum)
    for r in range(R):
        lse = -INFINITY if rmax[r] == -INFINITY else rmax[r] + log(rsum[r])
        rows[r0 + r] = _loss_from_lse(x + (r0 + r) * C, C, t[r0 + r], lse, w, W, eps)


cdef void _ce_backward_block_f32(const float* x, const label_t* t, Py_ssize_t r0, Py_ssize_t r1,
                                 Py_ssize_t C, const double* w, double W, double eps, double scale,
                                 float* gx, float* rmax, double* rsum) noexcept nogil:
    """Gradient of rows [r0, r1) into gx (which first holds the exponentials)."""
    cdef Py_ssize_t r, c, R = r1 - r0, tr
    cdef double wt, a, b = scale * eps / C
    cdef float* g
    fc_rows_exp_f32(x + r0 * C, R, C, gx + r0 * C, rmax, rsum)
    for r in range(R):
        g = gx + (r0 + r) * C
        tr = t[r0 + r]
        wt = w[tr] if w != NULL else 1.0
        # grad_c = (1-eps) * w_t * (p_c - [c == t]) + eps/C * (W p_c - w_c),  p_c = e_c / sum(e)
        a = scale * ((1 - eps) * wt + eps / C * W) / rsum[r]
        if w != NULL:
            for c in range(C):
                g[c] = <float>(a * g[c] - b * w[c])
        elif b != 0:
            for c in range(C):
                g[c] = <float>(a * g[c] - b)
        else:
            for c in range(C):
                g[c] = <float>(a * g[c])
        g[tr] = <float>(g[tr] - scale * (1 - eps) * wt)


cdef inline Py_ssize_t _check_labels(const label_t[::1] t, Py_ssize_t C) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(t.shape[0]):
        if t[i] < 0 or t[i] >= C:
            return i
    return -1


def cross_entropy_forward(const floating[:, ::1] x, const label_t[::1] t, const double[::1] w,
                          bint has_weight, double eps, int n_threads):
    """Return (sum of row losses, sum of target weights, first bad label row or -1)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], i, bad, B, nblocks, k
    cdef double total = 0, denom = 0, W = C
    cdef const double* wp = &w[0] if has_weight else NULL
    cdef double* rows
    cdef float* e
    cdef float* scratch = NULL
    cdef Py_ssize_t nt, per, off
    with nogil:
        bad = _check_labels(t, C)
    if bad >= 0:
        return 0.0, 0.0, bad
    if has_weight:
        W = 0
        for i in range(C):
            W += w[i]
        for i in range(N):
            denom += w[t[i]]
    else:
        denom = N
    if N == 0:
        return 0.0, denom, -1
    rows = <double*>malloc(N * sizeof(double))
    if rows == NULL:
        raise MemoryError()
    B = _ce_block_rows(C)
    nblocks = (N + B - 1) // B
    nt = 1 if nblocks == 1 else n_threads
    # floats: exponentials, row maxima, then the row sums as doubles (8-byte aligned:
    # every offset and the per-thread size are even)
    off = (B * C + B + 1) // 2 * 2
    per = off + 2 * B
    if floating is float:
        scratch = <float*>malloc(nt * per * sizeof(float))
        if scratch == NULL:
            free(rows)
            raise MemoryError()
    with nogil:
        if floating is float:
            for k in prange(nblocks, schedule='static', num_threads=nt):
                e = scratch + threadid() * per
                _ce_forward_block_f32(&x[0, 0], &t[0], k * B, min(k * B + B, N), C, wp, W, eps,
                                      e, e + B * C, <double*>(e + off), rows)
        elif n_threads == 1:
            for i in range(N):
                rows[i] = _row_loss(&x[i, 0], C, t[i], wp, W, eps)
        else:
            for i in prange(N, schedule='static', num_threads=n_threads):
                rows[i] = _row_loss(&x[i, 0], C, t[i], wp, W, eps)
        for i in range(N):
            total += rows[i]
    free(rows)
    if floating is float:
        free(scratch)
    return total, denom, -1


def cross_entropy_backward(const floating[:, ::1] x, const label_t[::1] t, const double[::1] w,
                           bint has_weight, double eps, bint mean, double grad_output,
                           floating[:, ::1] gx, int n_threads):
    """Write d loss / d logits into gx; return the first bad label row or -1."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], i, bad, B, nblocks, k
    cdef double denom = 0, W = C, scale
    cdef float* e
    cdef float* scratch = NULL
    cdef Py_ssize_t nt, per, off
    cdef const double* wp = &w[0] if has_weight else NULL
    with nogil:
        bad = _check_labels(t, C)
    if bad >= 0:
        return bad
    if has_weight:
        W = 0
        for i in range(C):
            W += w[i]
        for i in range(N):
            denom += w[t[i]]
    else:
        denom = N
    scale = grad_output / denom if mean else grad_output
    if N == 0:
        return -1
    B = _ce_block_rows(C)
    nblocks = (N + B - 1) // B
    nt = 1 if nblocks == 1 else n_threads
    off = (B + 1) // 2 * 2  # floats: row maxima, then the row sums as (aligned) doubles
    per = off + 2 * B
    if floating is float:
        scratch = <float*>malloc(nt * per * sizeof(float))
        if scratch == NULL:
            raise MemoryError()
    with nogil:
        if floating is float:
            for k in prange(nblocks, schedule='static', num_threads=nt):
                e = scratch + threadid() * per
                _ce_backward_block_f32(&x[0, 0], &t[0], k * B, min(k * B + B, N), C, wp, W, eps,
                                       scale, &gx[0, 0], e, <double*>(e + off))
        elif n_threads == 1:
            for i in range(N):
                _row_grad(&x[i, 0], &gx[i, 0], C, t[i], wp, W, eps, scale)
        else:
            for i in prange(N, schedule='static', num_threads=n_threads):
                _row_grad(&x[i, 0], &gx[i, 0], C, t[i], wp, W, eps, scale)
    if floating is float:
        free(scratch)
    return -1


# ---------------------------------------------------------------------------
# element-wise losses: BCE with logits, MSE, L1
# ---------------------------------------------------------------------------

cdef enum:
    OP_BCE = 0
    OP_MSE = 1
    OP_L1 = 2


cdef inline double _bce(double x, double t) noexcept nogil:
    """max(x, 0) - x t + log(1 + exp(-|x|)): exact and finite for any finite x."""
    return (x if x > 0 else 0) - x * t + log1p(exp(-fabs(x)))


cdef double _chunk_sum(const floating* x, const floating* t, Py_ssize_t n, int op) noexcept nogil:
    cdef Py_ssize_t i
    cdef double s0 = 0, s1 = 0, d0, d1
    if op == OP_BCE:
        for i in range(n):
            s0 += _bce(x[i], t[i])
        return s0
    i = 0
    if op == OP_MSE:
        while i + 2 <= n:
            d0 = <double>x[i] - t[i]
            d1 = <double>x[i + 1] - t[i + 1]
            s0 += d0 * d0
            s1 += d1 * d1
            i += 2
        if i < n:
            d0 = <double>x[i] - t[i]
            s0 += d0 * d0
    else:
        while i + 2 <= n:
            s0 += fabs(<double>x[i] - t[i])
            s1 += fabs(<double>x[i + 1] - t[i + 1])
            i += 2
        if i < n:
            s0 += fabs(<double>x[i] - t[i])
    return s0 + s1


def elementwise_loss_sum(const floating[::1] x, const floating[::1] t, int op, int n_threads):
    """Sum over all elements of the loss ``op`` (0 BCE-with-logits, 1 MSE, 2 L1)."""
    cdef Py_ssize_t n = x.shape[0], nchunks = (n + CHUNK - 1) // CHUNK, k, lo, hi
    cdef double total = 0
    cdef double* part
    if n == 0:
        return 0.0
    if nchunks == 1:
        with nogil:
            total = _chunk_sum(&x[0], &t[0], n, op)
        return total
    part = <double*>malloc(nchunks * sizeof(double))
    if part == NULL:
        raise MemoryError()
    with nogil:
        for k in prange(nchunks, schedule='static', num_threads=n_threads):
            lo = k * CHUNK
            hi = lo + CHUNK
            if hi > n:
                hi = n
            part[k] = _chunk_sum(&x[lo], &t[lo], hi - lo, op)
        for k in range(nchunks):
            total += part[k]
    free(part)
    return total


def elementwise_loss_grad(const floating[::1] x, const floating[::1] t, floating[::1] gx,
                          int op, double scale, int n_threads):
    """gx = scale * d loss / d x element-wise."""
    cdef Py_ssize_t n = x.shape[0], i
    cdef floating s = <floating>scale, d, e, v
    if op == OP_BCE:
        for i in prange(n, schedule='static', nogil=True, num_threads=n_threads):
            v = x[i]
            if v >= 0:
                e = 1 / (1 + _exp(-v))
            else:
                e = _exp(v)
                e = e / (1 + e)
            gx[i] = (e - t[i]) * s
    elif op == OP_MSE:
        for i in prange(n, schedule='static', nogil=True, num_threads=n_threads):
            gx[i] = 2 * (x[i] - t[i]) * s
    else:
        for i in prange(n, schedule='static', nogil=True, num_threads=n_threads):
            d = x[i] - t[i]
            gx[i] = s if d > 0 else (-s if d < 0 else 0 * d)
