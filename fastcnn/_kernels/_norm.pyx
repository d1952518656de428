# cython: language_level=3
"""Batch normalisation kernels on an (N, C, L) view (L = H*W, or 1 for BatchNorm1d).

Parallel over channels: one thread computes a channel's statistics, in a
fixed order (eight double accumulators in fixed lanes over each contiguous
run of L values, runs added in n order), and then normalises that channel while its data is
still in cache. Results are bitwise identical for any thread count.
"""
cimport cython
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt


cdef extern from *:
    """
    /* Per-run reductions and element-wise passes of batch norm, in C so that
       the compiler vectorises them: eight double accumulators in fixed lanes
       (the same additions in the same order whatever the vector width, so
       every build and thread count gives the same bits), built for AVX2 and
       for the baseline instruction set and chosen at load time. */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define FC_NORM_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define FC_NORM_CLONES
    #endif
    #include <stdint.h>
    #if defined(__x86_64__) || defined(_M_X64)
    #include <emmintrin.h>
    #define FC_STREAM 1
    #else
    #define FC_STREAM 0
    #endif
    /* Element-wise passes. With ``stream`` the output goes straight to memory
       (non-temporal stores, no read-for-ownership): for outputs far larger
       than the caches, which would not be read back from cache anyway. */
    static inline void fc_bn_sfence(void) {
    #if FC_STREAM
        _mm_sfence();
    #endif
    }
    #define FC_STREAM_f32(dst, v) _mm_stream_ps((dst), (v))
    #define FC_STREAM_f64(dst, v) _mm_stream_pd((dst), (v))
    #define FC_DEFINE_BN_ELEMENTWISE(T, SFX, VT, W, LOADU, SET1, ADD, SUB, MUL)                \
    FC_NORM_CLONES void fc_bn_affine_##SFX(const T *restrict x, T *restrict y, Py_ssize_t n,   \
                                           T s, T t, int stream) {                             \
        Py_ssize_t i = 0;                                                                     \
        FC_IF_STREAM(                                                                         \
        if (stream) {                                                                         \
            for (; i < n && ((uintptr_t)(y + i) & 15); i++) y[i] = x[i] * s + t;              \
            VT vs = SET1(s), vt = SET1(t);                                                    \
            for (; i + W <= n; i += W) FC_STREAM_##SFX(y + i, ADD(MUL(LOADU(x + i), vs), vt)); \
        })                                                                                    \
        for (; i < n; i++) y[i] = x[i] * s + t;                                               \
    }                                                                                         \
    FC_NORM_CLONES void fc_bn_grad_##SFX(const T *restrict g, const T *restrict x,             \
                                         T *restrict gx, Py_ssize_t n, T a, T b, T m, T k,     \
                                         int stream) {                                         \
        Py_ssize_t i = 0;                                                                     \
        FC_IF_STREAM(                                                                         \
        if (stream) {                                                                         \
            for (; i < n && ((uintptr_t)(gx + i) & 15); i++)                                  \
                gx[i] = (g[i] - a - (x[i] - m) * b) * k;                                      \
            VT va = SET1(a), vb = SET1(b), vm = SET1(m), vk = SET1(k);                        \
            for (; i + W <= n; i += W)                                                        \
                FC_STREAM_##SFX(gx + i, MUL(SUB(SUB(LOADU(g + i), va),                         \
                                                MUL(SUB(LOADU(x + i), vm), vb)), vk));         \
        })                                                                                    \
        for (; i < n; i++) gx[i] = (g[i] - a - (x[i] - m) * b) * k;                           \
    }
    #if FC_STREAM
    #define FC_IF_STREAM(...) __VA_ARGS__
    FC_DEFINE_BN_ELEMENTWISE(float, f32, __m128, 4, _mm_loadu_ps, _mm_set1_ps, _mm_add_ps, _mm_sub_ps, _mm_mul_ps)
    FC_DEFINE_BN_ELEMENTWISE(double, f64, __m128d, 2, _mm_loadu_pd, _mm_set1_pd, _mm_add_pd, _mm_sub_pd, _mm_mul_pd)
    #else
    #define FC_IF_STREAM(...)
    FC_DEFINE_BN_ELEMENTWISE(float, f32, int, 4, x, x, x, x, x)
    FC_DEFINE_BN_ELEMENTWISE(double, f64, int, 2, x, x, x, x, x)
    #endif
    #include <string.h>
    /* Touch the first bytes of the next run of a channel (the runs are far
       apart in NCHW, and hardware prefetchers stop at page boundaries). */
    static inline void fc_bn_prefetch(const void *p, Py_ssize_t bytes) {
    #if defined(__GNUC__)
        const char *c = (const char *)p;
        if (bytes > 1024) bytes = 1024;
        for (Py_ssize_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i, 0, 3);
    #else
        (void)p; (void)bytes;
    #endif
    }
    #if defined(__GNUC__)
    /* Eight double lanes as two 4-wide vectors (one AVX register, or two SSE2
       registers in the baseline build). */
    typedef double fc_v4d __attribute__((vector_size(32)));
    typedef float fc_v4f __attribute__((vector_size(16)));
    #define FC_LOAD4_float(dst, p) do { fc_v4f t_; memcpy(&t_, (p), 16);                       \
                                         dst = __builtin_convertvector(t_, fc_v4d); } while (0)
    #define FC_LOAD4_double(dst, p) memcpy(&(dst), (p), 32)
    #define FC_VSUM(v0, v1) ((((v0)[0] + (v0)[1]) + ((v0)[2] + (v0)[3])) +                     \
                             (((v1)[0] + (v1)[1]) + ((v1)[2] + (v1)[3])))
    #define FC_DEFINE_BN(T, SFX)                                                               \
    FC_NORM_CLONES double fc_bn_sum_##SFX(const T *restrict a, Py_ssize_t n) {                \
        fc_v4d s0 = {0, 0, 0, 0}, s1 = {0, 0, 0, 0}, u, v;                                    \
        Py_ssize_t i = 0;                                                                     \
        for (; i + 8 <= n; i += 8) {                                                          \
            FC_LOAD4_##T(u, a + i); FC_LOAD4_##T(v, a + i + 4);                               \
            s0 += u; s1 += v;                                                                 \
        }                                                                                     \
        for (; i < n; i++) s0[0] += (double)a[i];                                             \
        return FC_VSUM(s0, s1);                                                               \
    }                                                                                         \
    FC_NORM_CLONES double fc_bn_sumsq_dev_##SFX(const T *restrict a, Py_ssize_t n, double m) { \
        fc_v4d s0 = {0, 0, 0, 0}, s1 = {0, 0, 0, 0}, u, v;                                    \
        Py_ssize_t i = 0;                                                                     \
        for (; i + 8 <= n; i += 8) {                                                          \
            FC_LOAD4_##T(u, a + i); FC_LOAD4_##T(v, a + i + 4);                               \
            u -= m; v -= m;                                                                   \
            s0 += u * u; s1 += v * v;                                                         \
        }                                                                                     \
        for (; i < n; i++) { double d = (double)a[i] - m; s0[0] += d * d; }                   \
        return FC_VSUM(s0, s1);                                                               \
    }                                                                                         \
    FC_NORM_CLONES void fc_bn_sum_g_gdev_##SFX(const T *restrict g, const T *restrict x,       \
                                               Py_ssize_t n, double m,                         \
                                               double *restrict sg, double *restrict sgd) {    \
        fc_v4d a0 = {0, 0, 0, 0}, a1 = {0, 0, 0, 0}, b0 = {0, 0, 0, 0}, b1 = {0, 0, 0, 0};    \
        fc_v4d g0, g1, x0, x1;                                                                \
        Py_ssize_t i = 0;                                                                     \
        for (; i + 8 <= n; i += 8) {                                                          \
            FC_LOAD4_##T(g0, g + i); FC_LOAD4_##T(g1, g + i + 4);                             \
            FC_LOAD4_##T(x0, x + i); FC_LOAD4_##T(x1, x + i + 4);                             \
            a0 += g0; a1 += g1;                                                               \
            b0 += g0 * (x0 - m); b1 += g1 * (x1 - m);                                         \
        }                                                                                     \
        for (; i < n; i++) {                                                                  \
            double gv = (double)g[i];                                                         \
            a0[0] += gv;                                                                      \
            b0[0] += gv * ((double)x[i] - m);                                                 \
        }                                                                                     \
        *sg += FC_VSUM(a0, a1);                                                               \
        *sgd += FC_VSUM(b0, b1);                                                              \
    }
    #else
    #define FC_DEFINE_BN(T, SFX)                                                               \
    double fc_bn_sum_##SFX(const T *a, Py_ssize_t n) {                                        \
        double s[8] = {0}; Py_ssize_t i = 0;                                                  \
        for (; i + 8 <= n; i += 8) for (int k = 0; k < 8; k++) s[k] += (double)a[i + k];      \
        for (; i < n; i++) s[0] += (double)a[i];                                              \
        return (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));           \
    }                                                                                         \
    double fc_bn_sumsq_dev_##SFX(const T *a, Py_ssize_t n, double m) {                        \
        double s[8] = {0}; Py_ssize_t i = 0;                                                  \
        for (; i + 8 <= n; i += 8) for (int k = 0; k < 8; k++) {                              \
            double d = (double)a[i + k] - m; s[k] += d * d; }                                 \
        for (; i < n; i++) { double d = (double)a[i] - m; s[0] += d * d; }                    \
        return (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));           \
    }                                                                                         \
    void fc_bn_sum_g_gdev_##SFX(const T *g, const T *x, Py_ssize_t n, double m,               \
                                double *sg, double *sgd) {                                    \
        double a[8] = {0}, b[8] = {0}; Py_ssize_t i = 0;                                      \
        for (; i + 8 <= n; i += 8) for (int k = 0; k < 8; k++) {                              \
            double gv = (double)g[i + k]; a[k] += gv; b[k] += gv * ((double)x[i + k] - m); }  \
        for (; i < n; i++) { double gv = (double)g[i]; a[0] += gv; b[0] += gv * ((double)x[i] - m); } \
        *sg += (((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])));           \
        *sgd += (((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7])));          \
    }
    #endif
    FC_DEFINE_BN(float, f32)
    FC_DEFINE_BN(double, f64)
    """
    void fc_bn_prefetch(const void* p, Py_ssize_t nbytes) noexcept nogil
    double fc_bn_sum_f32(const float* a, Py_ssize_t n) noexcept nogil
    double fc_bn_sum_f64(const double* a, Py_ssize_t n) noexcept nogil
    double fc_bn_sumsq_dev_f32(const float* a, Py_ssize_t n, double m) noexcept nogil
    double fc_bn_sumsq_dev_f64(const double* a, Py_ssize_t n, double m) noexcept nogil
    void fc_bn_sum_g_gdev_f32(const float* g, const float* x, Py_ssize_t n, double m,
                              double* sg, double* sgd) noexcept nogil
    void fc_bn_sum_g_gdev_f64(const double* g, const double* x, Py_ssize_t n, double m,
                              double* sg, double* sgd) noexcept nogil
    void fc_bn_sfence() noexcept nogil
    void fc_bn_affine_f32(const float* x, float* y, Py_ssize_t n, float s, float t,
                          int stream) noexcept nogil
    void fc_bn_affine_f64(const double* x, double* y, Py_ssize_t n, double s, double t,
                          int stream) noexcept nogil
    void fc_bn_grad_f32(const float* g, const float* x, float* gx, Py_ssize_t n,
                        float a, float b, float m, float k, int stream) noexcept nogil
    void fc_bn_grad_f64(const double* g, const double* x, double* gx, Py_ssize_t n,
                        double a, double b, double m, double k, int stream) noexcept nogil


cdef inline double _sum(const floating* a, Py_ssize_t n) noexcept nogil:
    """Sum of n contiguous values in double; fixed order."""
    if floating is float:
        return fc_bn_sum_f32(a, n)
    else:
        return fc_bn_sum_f64(a, n)


cdef inline double _sum_sq_dev(const floating* a, Py_ssize_t n, double m) noexcept nogil:
    """Sum of (a - m)^2 over n contiguous values in double; fixed order."""
    if floating is float:
        return fc_bn_sumsq_dev_f32(a, n, m)
    else:
        return fc_bn_sumsq_dev_f64(a, n, m)


cdef inline void _sum_g_gdev(const floating* g, const floating* x, Py_ssize_t n, double m,
                             double* sg, double* sgd) noexcept nogil:
    """sg += sum(g), sgd += sum(g * (x - m)) over n contiguous values; fixed order."""
    if floating is float:
        fc_bn_sum_g_gdev_f32(g, x, n, m, sg, sgd)
    else:
        fc_bn_sum_g_gdev_f64(g, x, n, m, sg, sgd)


cdef inline void _affine(const floating* x, floating* y, Py_ssize_t n,
                         floating a, floating b, bint stream) noexcept nogil:
    """y = x * a + b over n contiguous values."""
    if floating is float:
        fc_bn_affine_f32(x, y, n, a, b, stream)
    else:
        fc_bn_affine_f64(x, y, n, a, b, stream)


cdef void _train_channel(
        const floating[:, :, ::1] x,    # IN READ-ONLY (N, C, L)
        floating[:, :, ::1] y,          # OUT          (N, C, L)
        Py_ssize_t c, double w, double b, double eps,
        floating* mean_out, floating* invstd_out, double* var_out, bint stream) noexcept nogil:
    cdef Py_ssize_t N = x.shape[0], L = x.shape[2], n
    cdef double M = <double>N * L, s = 0, mean, var, invstd, scale
    for n in range(N):
        if n + 1 < N:
            fc_bn_prefetch(&x[n + 1, c, 0], L * sizeof(floating))
        s += _sum(&x[n, c, 0], L)
    mean = s / M
    s = 0
    for n in range(N):
        s += _sum_sq_dev(&x[n, c, 0], L, mean)
    var = s / M
    invstd = 1.0 / sqrt(var + eps)
    scale = w * invstd
    for n in range(N):
        _affine(&x[n, c, 0], &y[n, c, 0], L, <floating>scale, <floating>(b - mean * scale), stream)
    if stream:
        fc_bn_sfence()
    mean_out[c] = <floating>mean
    invstd_out[c] = <floating>invstd
    var_out[c] = var


def batch_norm_train_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                             const double[::1] weight, const double[::1] bias, double eps,
                             floating[::1] save_mean, floating[::1] save_invstd,
                             double[::1] var, bint stream, int n_threads):
    """Batch statistics per channel (biased var into ``var``), normalise, scale, shift.

    ``stream`` writes y with non-temporal stores (same values).
    """
    cdef Py_ssize_t C = x.shape[1], c
    if x.shape[0] == 0 or C == 0:
        return
    for c in prange(C, schedule='static', nogil=True, num_threads=n_threads):
        _train_channel(x, y, c, weight[c], bias[c], eps,
                       &save_mean[0], &save_invstd[0], &var[0], stream)


def channel_affine(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                   const double[::1] scale, const double[::1] shift, int n_threads):
    """y[n, c, :] = x[n, c, :] * scale[c] + shift[c] (evaluation mode)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], r, n, c
    if N == 0 or C == 0 or L == 0:
        return
    for r in prange(N * C, schedule='static', nogil=True, num_threads=n_threads):
        n = r // C
        c = r - n * C
        _affine(&x[n, c, 0], &y[n, c, 0], L, <floating>scale[c], <floating>shift[c], False)


cdef void _backward_channel(
        const floating[:, :, ::1] g,    # IN READ-ONLY (N, C, L)
        const floating[:, :, ::1] x,    # IN READ-ONLY (N, C, L)
        floating[:, :, ::1] gx,         # OUT          (N, C, L)
        Py_ssize_t c, double w, double mean, double invstd, bint training,
        double* gw_out, double* gb_out, bint stream) noexcept nogil:
    cdef Py_ssize_t N = x.shape[0], L = x.shape[2], n, i
    cdef double M = <double>N * L, sg = 0, sgd = 0
    cdef floating k, a, b, m
    for n in range(N):
        if n + 1 < N:
            fc_bn_prefetch(&g[n + 1, c, 0], L * sizeof(floating))
            fc_bn_prefetch(&x[n + 1, c, 0], L * sizeof(floating))
        _sum_g_gdev(&g[n, c, 0], &x[n, c, 0], L, mean, &sg, &sgd)
    gb_out[c] = sg
    gw_out[c] = sgd * invstd
    k = <floating>(w * invstd)
    if training:
        # gx = w*invstd * (g - mean(g) - xhat * mean(g*xhat)),  xhat = (x-mean)*invstd
        a = <floating>(sg / M)
        b = <floating>(sgd * invstd * invstd / M)
        m = <floating>mean
        # last runs first: they are the ones the reduction left in cache
        for n in range(N - 1, -1, -1):
            if floating is float:
                fc_bn_grad_f32(&g[n, c, 0], &x[n, c, 0], &gx[n, c, 0], L, a, b, m, k, stream)
            else:
                fc_bn_grad_f64(&g[n, c, 0], &x[n, c, 0], &gx[n, c, 0], L, a, b, m, k, stream)
    else:
        for n in range(N - 1, -1, -1):
            _affine(&g[n, c, 0], &gx[n, c, 0], L, k, 0, stream)
    if stream:
        fc_bn_sfence()


def batch_norm_backward(const floating[:, :, ::1] g, const floating[:, :, ::1] x,
                        floating[:, :, ::1] gx, const double[::1] weight,
                        const double[::1] mean, const double[::1] invstd, bint training,
                        double[::1] grad_weight, double[::1] grad_bias, bint stream,
                        int n_threads):
    """grad_x, and per channel grad_weight = sum(g * xhat), grad_bias = sum(g).

    ``stream`` writes grad_x with non-temporal stores (same values).
    """
    cdef Py_ssize_t C = x.shape[1], c
    if C == 0:
        return
    for c in prange(C, schedule='static', nogil=True, num_threads=n_threads):
        _backward_channel(g, x, gx, c, weight[c], mean[c], invstd[c], training,
                          &grad_weight[0], &grad_bias[0], stream)
