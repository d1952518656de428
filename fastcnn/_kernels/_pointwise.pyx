# cython: language_level=3
"""Element-wise activations, softmax / log-softmax, dropout.

Element-wise kernels take flat C-contiguous arrays and are parallel over the
elements (``prange``, static schedule); each output element depends on one
input element only, so results never depend on the thread count. Softmax
works on a (outer, D, inner) view and reduces each of the outer*inner rows
in one thread, in a fixed order. Output arrays may alias input arrays
(in-place use).
"""
cimport cython
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expf, log, logf, sqrt, sqrtf, INFINITY
from libc.string cimport memcmp

cnp.import_array()


cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


cdef inline floating _log(floating v) noexcept nogil:
    if floating is float:
        return logf(v)
    else:
        return log(v)


cdef inline floating _sigmoid(floating v) noexcept nogil:
    cdef floating e
    if v >= 0:
        return 1 / (1 + _exp(-v))
    e = _exp(v)
    return e / (1 + e)


def same_bytes(cnp.ndarray a, cnp.ndarray b):
    """Whether two C-contiguous arrays hold the same bytes (sizes included)."""
    cdef Py_ssize_t n = cnp.PyArray_NBYTES(a)
    cdef int r
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_IS_C_CONTIGUOUS(b)):
        raise ValueError("same_bytes: arrays must be C-contiguous")
    if cnp.PyArray_NBYTES(b) != n:
        return False
    if n == 0:
        return True
    with nogil:
        r = memcmp(cnp.PyArray_DATA(a), cnp.PyArray_DATA(b), n)
    return r == 0


# ---------------------------------------------------------------------------
# element-wise activations
# ---------------------------------------------------------------------------

# Element-wise loops run in chunks: a plain C loop over raw pointers per chunk,
# which the compiler turns into branch-free vector code.
DEF CHUNK = 4096


cdef inline void _relu_run(const floating *x, floating *y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        # NaN stays NaN, as in PyTorch
        y[i] = 0 if x[i] <= 0 else x[i]


cdef inline void _relu_bwd_run(const floating *g, const floating *y, floating *gx,
                               Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = g[i]    # loaded unconditionally, so the select needs no branch
        gx[i] = v if y[i] > 0 else 0


cdef inline void _leaky_run(const floating *x, floating *y, floating s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = x[i] if x[i] > 0 else x[i] * s


cdef inline void _leaky_bwd_run(const floating *g, const floating *x, floating *gx, floating s,
                                Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        gx[i] = g[i] if x[i] > 0 else g[i] * s


def relu_forward(const floating[::1] x, floating[::1] y, int n_threads):
    cdef Py_ssize_t c, n = x.shape[0], nc = (n + CHUNK - 1) // CHUNK
    if n == 0:
        return
    for c in prange(nc, schedule='static', nogil=True, num_threads=n_threads):
        _relu_run(&x[c * CHUNK], &y[c * CHUNK], min(CHUNK, n - c * CHUNK))


def relu_backward(const floating[::1] g, const floating[::1] y, floating[::1] gx, int n_threads):
    cdef Py_ssize_t c, n = g.shape[0], nc = (n + CHUNK - 1) // CHUNK
    if n == 0:
        return
    for c in prange(nc, schedule='static', nogil=True, num_threads=n_threads):
        _relu_bwd_run(&g[c * CHUNK], &y[c * CHUNK], &gx[c * CHUNK], min(CHUNK, n - c * CHUNK))


def leaky_relu_forward(const floating[::1] x, floating[::1] y, double slope, int n_threads):
    cdef Py_ssize_t c, n = x.shape[0], nc = (n + CHUNK - 1) // CHUNK
    cdef floating s = <floating>slope
    if n == 0:
        return
    for c in prange(nc, schedule='static', nogil=True, num_threads=n_threads):
        _leaky_run(&x[c * CHUNK], &y[c * CHUNK], s, min(CHUNK, n - c * CHUNK))


def leaky_relu_backward(const floating[::1] g, const floating[::1] x, floating[::1] gx,
                        double slope, int n_threads):
    """``x`` may be the input or the output when ``slope`` >= 0 (same sign)."""
    cdef Py_ssize_t c, n = g.shape[0], nc = (n + CHUNK - 1) // CHUNK
    cdef floating s = <floating>slope
    if n == 0:
        return
    for c in prange(nc, schedule='static', nogil=True, num_threads=n_threads):
        _leaky_bwd_run(&g[c * CHUNK], &x[c * CHUNK], &gx[c * CHUNK], s, min(CHUNK, n - c * CHUNK))


def tanh_backward(const floating[::1] g, const floating[::1] y, floating[::1] gx, int n_threads):
    cdef Py_ssize_t i, n = g.shape[0]
    for i in prange(n, schedule='static', nogil=True, num_threads=n_threads):
        gx[i] = g[i] * (1 - y[i] * y[i])


def sigmoid_forward(const floating[::1] x, floating[::1] y, int n_threads):
    cdef Py_ssize_t i, n = x.shape[0]
    for i in prange(n, schedule='static', nogil=True, num_threads=n_threads):
        y[i] = _sigmoid(x[i])


def sigmoid_backward(const floating[::1] g, const floating[::1] y, floating[::1] gx, int n_threads):
    cdef Py_ssize_t i, n = g.shape[0]
    for i in prange(n, schedule='static', nogil=True, num_threads=n_threads):
        gx[i] = g[i] * y[i] * (1 - y[i])


# ---------------------------------------------------------------------------
# softmax / log-softmax over axis 1 of an (outer, D, inner) view
# ---------------------------------------------------------------------------

cdef inline void _softmax_row(
        const floating* x,      # IN READ-ONLY  D values, stride st
        floating* y,            # OUT           D values, stride st
        Py_ssize_t D, Py_ssize_t st, bint take_log) noexcept nogil:
    cdef Py_ssize_t d
    cdef floating m = -INFINITY, v
    cdef double s = 0, lse
    for d in range(D):
        v = x[d * st]
        if v > m or v != v:
            m = v
    if m == -INFINITY:
        m = 0  # every entry -inf: exp(-inf - 0) = 0, result as PyTorch (nan / -inf)
    if take_log:
        for d in range(D):
            s = s + _exp(x[d * st] - m)
        lse = log(s)
        for d in range(D):
            y[d * st] = <floating>((x[d * st] - m) - lse)
    else:
        for d in range(D):
            v = _exp(x[d * st] - m)
            y[d * st] = v
            s = s + v
        s = 1.0 / s
        for d in range(D):
            y[d * st] = <floating>(y[d * st] * s)


cdef inline void _softmax_backward_row(
        const floating* g,      # IN READ-ONLY
        const floating* y,      # IN READ-ONLY  the forward output
        floating* gx,           # OUT
        Py_ssize_t D, Py_ssize_t st, bint take_log) noexcept nogil:
    cdef Py_ssize_t d
    cdef double s = 0
    if take_log:
        # y = log_softmax(x): gx = g - softmax * sum(g)
        for d in range(D):
            s = s + g[d * st]
        for d in range(D):
            gx[d * st] = <floating>(g[d * st] - _exp(y[d * st]) * s)
    else:
        # y = softmax(x): gx = y * (g - sum(g * y))
        for d in range(D):
            s = s + g[d * st] * y[d * st]
        for d in range(D):
            gx[d * st] = <floating>(y[d * st] * (g[d * st] - s))


def softmax_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y, bint take_log,
                    int n_threads):
    cdef Py_ssize_t outer = x.shape[0], D = x.shape[1], inner = x.shape[2], r, o, i
    if outer == 0 or D == 0 or inner == 0:
        return
    for r in prange(outer * inner, schedule='static', nogil=True, num_threads=n_threads):
        o = r // inner
        i = r - o * inner
        _softmax_row(&x[o, 0, i], &y[o, 0, i], D, inner, take_log)


def softmax_backward(const floating[:, :, ::1] g, const floating[:, :, ::1] y,
                     floating[:, :, ::1] gx, bint take_log, int n_threads):
    cdef Py_ssize_t outer = g.shape[0], D = g.shape[1], inner = g.shape[2], r, o, i
    if outer == 0 or D == 0 or inner == 0:
        return
    for r in prange(outer * inner, schedule='static', nogil=True, num_threads=n_threads):
        o = r // inner
        i = r - o * inner
        _softmax_backward_row(&g[o, 0, i], &y[o, 0, i], &gx[o, 0, i], D, inner, take_log)


# ---------------------------------------------------------------------------
# dropout: y = x * mask * scale, mask given as bytes (0 or 1)
# ---------------------------------------------------------------------------

def dropout_apply(const floating[::1] x, const unsigned char[::1] mask, floating[::1] y,
                  double scale, int n_threads):
    """Forward and backward alike: y = x * scale where mask, else 0."""
    cdef Py_ssize_t i, n = x.shape[0]
    cdef floating s = <floating>scale
    for i in prange(n, schedule='static', nogil=True, num_threads=n_threads):
        y[i] = x[i] * s if mask[i] else 0


# optimiser updates
# ---------------------------------------------------------------------------

cdef extern from *:
    """
    #include <math.h>
    /* One Adam step over n elements. The flags are literal constants at every
       call (FC_ADAM_CASES), so each combination becomes its own branch-free,
       vectorised loop; the operations and their order are those of the array
       formulation (each product and sum rounded to the parameters' precision). */
    #define FC_ADAM_BODY(T, SQRT)                                                           \
    {                                                                                       \
        const T wdf = (T)s->wd, wf = (T)s->weight, b2 = (T)s->beta2, omb2 = (T)s->one_minus_beta2; \
        const T bc2 = (T)s->bc2_sqrt, epsf = (T)s->eps, nss = (T)s->neg_step, omw = (T)1 - wf; \
        for (Py_ssize_t i = 0; i < n; i++) {                                                \
            T gi = maximize ? -g[i] : g[i], b, t, vv, d;                                    \
            if (wd_mode == 1) { t = w[i] * wdf; gi = gi + t; }                              \
            else if (wd_mode == 2) w[i] = w[i] * wdf;                                       \
            b = gi - m[i];                                                                  \
            if (lerp_lo) { t = b * wf; m[i] = m[i] + t; }                                   \
            else { t = b * omw; m[i] = gi - t; }                                            \
            t = gi * omb2; t = t * gi;                                                      \
            vv = v[i] * b2; vv = vv + t; v[i] = vv;                                         \
            if (ams) { T mx = vmax[i]; mx = (mx >= vv || mx != mx) ? mx : vv; vmax[i] = mx; vv = mx; } \
            d = SQRT(vv); d = d / bc2; d = d + epsf;                                        \
            t = m[i] * nss; t = t / d;                                                      \
            w[i] = w[i] + t;                                                                \
        }                                                                                   \
    }
    typedef struct { double wd, weight, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step; } fc_adam_scalars;
    static inline __attribute__((always_inline)) void fc_adam_f(
        float *restrict w, const float *restrict g, float *restrict m, float *restrict v, float *restrict vmax,
        Py_ssize_t n, const fc_adam_scalars *s, const int wd_mode, const int maximize, const int lerp_lo,
        const int ams) FC_ADAM_BODY(float, sqrtf)
    static inline __attribute__((always_inline)) void fc_adam_d(
        double *restrict w, const double *restrict g, double *restrict m, double *restrict v, double *restrict vmax,
        Py_ssize_t n, const fc_adam_scalars *s, const int wd_mode, const int maximize, const int lerp_lo,
        const int ams) FC_ADAM_BODY(double, sqrt)
    #define FC_ADAM_CASES(FN)                                                               \
        switch ((wd_mode << 3) | (maximize << 2) | (lerp_lo << 1) | ams) {                  \
        case 0: FN(w, g, m, v, vmax, n, s, 0, 0, 0, 0); break;                              \
        case 2: FN(w, g, m, v, vmax, n, s, 0, 0, 1, 0); break;                              \
        case 8: FN(w, g, m, v, vmax, n, s, 1, 0, 0, 0); break;                              \
        case 10: FN(w, g, m, v, vmax, n, s, 1, 0, 1, 0); break;                             \
        case 16: FN(w, g, m, v, vmax, n, s, 2, 0, 0, 0); break;                             \
        case 18: FN(w, g, m, v, vmax, n, s, 2, 0, 1, 0); break;                             \
        default: FN(w, g, m, v, vmax, n, s, wd_mode, maximize, lerp_lo, ams); break;        \
        }
    static void fc_adam_run_f(float *w, const float *g, float *m, float *v, float *vmax, Py_ssize_t n,
                              const fc_adam_scalars *s, int wd_mode, int maximize, int lerp_lo, int ams)
    { FC_ADAM_CASES(fc_adam_f) }
    static void fc_adam_run_d(double *w, const double *g, double *m, double *v, double *vmax, Py_ssize_t n,
                              const fc_adam_scalars *s, int wd_mode, int maximize, int lerp_lo, int ams)
    { FC_ADAM_CASES(fc_adam_d) }
    """
    ctypedef struct fc_adam_scalars:
        double wd, weight, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step
    void fc_adam_run_f(float *w, const float *g, float *m, float *v, float *vmax, Py_ssize_t n,
                       const fc_adam_scalars *s, int wd_mode, int maximize, int lerp_lo, int ams) noexcept nogil
    void fc_adam_run_d(double *w, const double *g, double *m, double *v, double *vmax, Py_ssize_t n,
                       const fc_adam_scalars *s, int wd_mode, int maximize, int lerp_lo, int ams) noexcept nogil


def adam_update(floating[::1] w, const floating[::1] g, floating[::1] m, floating[::1] v, vmax,
                double wd, int wd_mode, double weight, double beta2, double one_minus_beta2,
                double bc2_sqrt, double eps, double neg_step, bint maximize, int n_threads):
    """One Adam / AdamW step of a flat parameter ``w`` in place (``m``, ``v``, and ``vmax``
    for AMSGrad or None, updated in place), one pass over the elements.

    ``wd_mode``: 0 no weight decay, 1 added to the gradient (``wd`` = weight_decay),
    2 decoupled (``wd`` = 1 - lr * weight_decay multiplies ``w`` first).
    """
    cdef floating[::1] vm
    cdef floating *vmp = NULL
    cdef fc_adam_scalars s
    cdef Py_ssize_t c, n = w.shape[0], nc = (n + CHUNK - 1) // CHUNK
    cdef int lerp_lo = abs(<floating>weight) < <floating>0.5
    cdef int ams = vmax is not None
    s.wd = wd
    s.weight = weight
    s.beta2 = beta2
    s.one_minus_beta2 = one_minus_beta2
    s.bc2_sqrt = bc2_sqrt
    s.eps = eps
    s.neg_step = neg_step
    if ams:
        vm = vmax
        vmp = &vm[0]
    if n == 0:
        return
    for c in prange(nc, schedule='static', nogil=True, num_threads=n_threads):
        if floating is float:
            fc_adam_run_f(&w[c * CHUNK], &g[c * CHUNK], &m[c * CHUNK], &v[c * CHUNK],
                          (vmp + c * CHUNK) if ams else NULL, min(CHUNK, n - c * CHUNK),
                          &s, wd_mode, maximize, lerp_lo, ams)
        else:
            fc_adam_run_d(&w[c * CHUNK], &g[c * CHUNK], &m[c * CHUNK], &v[c * CHUNK],
                          (vmp + c * CHUNK) if ams else NULL, min(CHUNK, n - c * CHUNK),
                          &s, wd_mode, maximize, lerp_lo, ams)
