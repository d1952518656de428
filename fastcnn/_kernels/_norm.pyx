# cython: language_level=3
"""Batch normalisation kernels on an (N, C, L) view (L = H*W, or 1 for BatchNorm1d).

Every pass runs over the N*C runs of L contiguous values (run r = n C + c is
channel c of image n) in memory order, shared among the threads in equal
blocks of runs. A run's sums are taken in a fixed order (eight double
accumulators in fixed lanes) and kept; a channel's statistics then add its
runs' sums in n order. Results are bitwise identical for any thread count.
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
    /* An activation after the affine map (act 1: ReLU, 2: LeakyReLU of slope;
       NaN kept, as PyTorch keeps it); the gradient through it (fc_bn_dact) is
       read from the activated output y (slope >= 0: y has the pre-activation's
       sign). */
    #define FC_BN_ACT(v, act, slope) ((act) == 1 ? ((v) <= 0 ? 0 : (v))                       \
                                      : (act) == 2 ? ((v) > 0 ? (v) : (v) * (slope)) : (v))
    /* g[i] taken through the activation whose output is y (y NULL: g[i] as it is) */
    #define FC_BN_DACT(T, g, y, i, act, slope) ((y) == NULL || (y)[i] > 0 ? (g)[i]             \
                                                : (act) == 1 ? (T)0 : (g)[i] * (slope))
    /* t[0 .. 8] = g[0 .. 8] taken through the activation (y not NULL), without
       branches: the signs of y are as likely one way as the other */
    #include <string.h>
    #if defined(__GNUC__)
    #define FC_DEFINE_BN_DACT8(T, SFX, IT)                                                     \
    typedef T fc_v_##SFX __attribute__((vector_size(32)));                                     \
    typedef IT fc_m_##SFX __attribute__((vector_size(32)));                                    \
    static inline __attribute__((always_inline))                                               \
    void fc_bn_dact8_##SFX(const T *g, const T *y, int act, T slope, T *t) {                   \
        for (int h = 0; h < (int)(8 * sizeof(T) / 32); h++) {                                  \
            fc_v_##SFX gv, yv;                                                                \
            memcpy(&gv, g + h * (32 / sizeof(T)), 32);                                        \
            memcpy(&yv, y + h * (32 / sizeof(T)), 32);                                        \
            const fc_m_##SFX m = yv > (T)0, kept = m & (fc_m_##SFX)gv;                        \
            const fc_m_##SFX r = act == 1 ? kept : kept | (~m & (fc_m_##SFX)(gv * slope));    \
            memcpy(t + h * (32 / sizeof(T)), &r, 32);                                         \
        }                                                                                     \
    }
    #else
    #define FC_DEFINE_BN_DACT8(T, SFX, IT)                                                     \
    static inline void fc_bn_dact8_##SFX(const T *g, const T *y, int act, T slope, T *t) {     \
        for (int k = 0; k < 8; k++) t[k] = FC_BN_DACT(T, g, y, k, act, slope);                \
    }
    #endif
    FC_DEFINE_BN_DACT8(float, f32, int32_t)
    FC_DEFINE_BN_DACT8(double, f64, int64_t)
    #define FC_DEFINE_BN_ELEMENTWISE(T, SFX, VT, W, LOADU, SET1, ADD, SUB, MUL, CMPGT, CMPLE,   \
                                     AND, ANDNOT, OR, ZERO)                                    \
    FC_IF_STREAM(                                                                             \
    static inline __attribute__((always_inline))                                               \
    VT fc_bn_vact_##SFX(VT v, int act, VT vslope) {                                            \
        if (act == 1) return ANDNOT(CMPLE(v, ZERO()), v);                                     \
        if (act == 2) { VT m = CMPGT(v, ZERO()); return OR(AND(m, v), ANDNOT(m, MUL(v, vslope))); } \
        return v;                                                                             \
    }                                                                                         \
    static inline __attribute__((always_inline))                                               \
    VT fc_bn_vdact_##SFX(VT g, VT y, int act, VT vslope) {                                     \
        const VT m = CMPGT(y, ZERO());                                                        \
        return act == 1 ? AND(m, g) : OR(AND(m, g), ANDNOT(m, MUL(g, vslope)));               \
    })                                                                                        \
    static inline __attribute__((always_inline))                                               \
    void fc_bn_affine_##SFX(const T *restrict x, T *restrict y, Py_ssize_t n,                  \
                            T m, T s, T t, int act, T slope, int stream) {                     \
        Py_ssize_t i = 0;                                                                     \
        FC_IF_STREAM(                                                                         \
        if (stream) {                                                                         \
            for (; i < n && ((uintptr_t)(y + i) & 15); i++) {                                 \
                const T v = (x[i] - m) * s + t;                                               \
                y[i] = FC_BN_ACT(v, act, slope);                                              \
            }                                                                                 \
            VT vm = SET1(m), vs = SET1(s), vt = SET1(t), vsl = SET1(slope);                   \
            for (; i + W <= n; i += W)                                                        \
                FC_STREAM_##SFX(y + i, fc_bn_vact_##SFX(ADD(MUL(SUB(LOADU(x + i), vm), vs), vt), act, vsl)); \
        })                                                                                    \
        /* (the activation chosen outside each loop, so that each vectorises) */              \
        if (act == 1)                                                                         \
            for (; i < n; i++) { const T v = (x[i] - m) * s + t; y[i] = FC_BN_ACT(v, 1, slope); } \
        else if (act == 2)                                                                    \
            for (; i < n; i++) { const T v = (x[i] - m) * s + t; y[i] = FC_BN_ACT(v, 2, slope); } \
        else                                                                                  \
            for (; i < n; i++) y[i] = (x[i] - m) * s + t;                                     \
    }                                                                                         \
    static inline __attribute__((always_inline))                                               \
    void fc_bn_grad_##SFX(const T *restrict g, const T *restrict y, int act, T slope,          \
                          const T *restrict x, T *restrict gx, Py_ssize_t n, T a, T b, T m,    \
                          T k, int stream) {                                                   \
        Py_ssize_t i = 0;                                                                     \
        FC_IF_STREAM(                                                                         \
        if (stream) {                                                                         \
            for (; i < n && ((uintptr_t)(gx + i) & 15); i++)                                  \
                gx[i] = (FC_BN_DACT(T, g, y, i, act, slope) - a - (x[i] - m) * b) * k;        \
            VT va = SET1(a), vb = SET1(b), vm = SET1(m), vk = SET1(k), vsl = SET1(slope);     \
            for (; i + W <= n; i += W) {                                                      \
                VT vg = LOADU(g + i);                                                         \
                if (y) vg = fc_bn_vdact_##SFX(vg, LOADU(y + i), act, vsl);                    \
                FC_STREAM_##SFX(gx + i, MUL(SUB(SUB(vg, va), MUL(SUB(LOADU(x + i), vm), vb)), vk)); \
            }                                                                                 \
        })                                                                                    \
        if (y)                                                                                \
            for (; i + 8 <= n; i += 8) {                                                      \
                T t[8];                                                                       \
                fc_bn_dact8_##SFX(g + i, y + i, act, slope, t);                               \
                for (int e = 0; e < 8; e++) gx[i + e] = (t[e] - a - (x[i + e] - m) * b) * k;  \
            }                                                                                 \
        for (; i < n; i++) gx[i] = (FC_BN_DACT(T, g, y, i, act, slope) - a - (x[i] - m) * b) * k; \
    }                                                                                         \
    static inline __attribute__((always_inline))                                               \
    void fc_bn_dact_##SFX(const T *restrict g, const T *restrict y, T *restrict out,           \
                          Py_ssize_t n, int act, T slope) {                                    \
        Py_ssize_t i = 0;                                                                     \
        for (; i + 8 <= n; i += 8) fc_bn_dact8_##SFX(g + i, y + i, act, slope, out + i);      \
        for (; i < n; i++) out[i] = FC_BN_DACT(T, g, y, i, act, slope);                       \
    }
    #if FC_STREAM
    #define FC_IF_STREAM(...) __VA_ARGS__
    FC_DEFINE_BN_ELEMENTWISE(float, f32, __m128, 4, _mm_loadu_ps, _mm_set1_ps, _mm_add_ps, _mm_sub_ps, _mm_mul_ps,
                             _mm_cmpgt_ps, _mm_cmple_ps, _mm_and_ps, _mm_andnot_ps, _mm_or_ps, _mm_setzero_ps)
    FC_DEFINE_BN_ELEMENTWISE(double, f64, __m128d, 2, _mm_loadu_pd, _mm_set1_pd, _mm_add_pd, _mm_sub_pd, _mm_mul_pd,
                             _mm_cmpgt_pd, _mm_cmple_pd, _mm_and_pd, _mm_andnot_pd, _mm_or_pd, _mm_setzero_pd)
    #else
    #define FC_IF_STREAM(...)
    FC_DEFINE_BN_ELEMENTWISE(float, f32, int, 4, x, x, x, x, x, x, x, x, x, x, x)
    FC_DEFINE_BN_ELEMENTWISE(double, f64, int, 2, x, x, x, x, x, x, x, x, x, x, x)
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
    static inline __attribute__((always_inline))                                               \
    double fc_bn_sum_##SFX(const T *restrict a, Py_ssize_t n) {                               \
        fc_v4d s0 = {0, 0, 0, 0}, s1 = {0, 0, 0, 0}, u, v;                                    \
        Py_ssize_t i = 0;                                                                     \
        for (; i + 8 <= n; i += 8) {                                                          \
            FC_LOAD4_##T(u, a + i); FC_LOAD4_##T(v, a + i + 4);                               \
            s0 += u; s1 += v;                                                                 \
        }                                                                                     \
        for (; i < n; i++) s0[0] += (double)a[i];                                             \
        return FC_VSUM(s0, s1);                                                               \
    }                                                                                         \
    static inline __attribute__((always_inline))                                               \
    double fc_bn_sumsq_dev_##SFX(const T *restrict a, Py_ssize_t n, double m) {               \
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
    static inline __attribute__((always_inline))                                               \
    void fc_bn_sum_g_gdev_##SFX(const T *restrict g, const T *restrict y, int act, T slope,    \
                                const T *restrict x, Py_ssize_t n, double m,                   \
                                double *restrict sg, double *restrict sgd) {                   \
        fc_v4d a0 = {0, 0, 0, 0}, a1 = {0, 0, 0, 0}, b0 = {0, 0, 0, 0}, b1 = {0, 0, 0, 0};    \
        fc_v4d g0, g1, x0, x1;                                                                \
        Py_ssize_t i = 0;                                                                     \
        for (; i + 8 <= n; i += 8) {                                                          \
            if (y) {                                                                          \
                T t[8];                                                                       \
                fc_bn_dact8_##SFX(g + i, y + i, act, slope, t);                               \
                FC_LOAD4_##T(g0, t); FC_LOAD4_##T(g1, t + 4);                                 \
            } else {                                                                          \
                FC_LOAD4_##T(g0, g + i); FC_LOAD4_##T(g1, g + i + 4);                         \
            }                                                                                 \
            FC_LOAD4_##T(x0, x + i); FC_LOAD4_##T(x1, x + i + 4);                             \
            a0 += g0; a1 += g1;                                                               \
            b0 += g0 * (x0 - m); b1 += g1 * (x1 - m);                                         \
        }                                                                                     \
        for (; i < n; i++) {                                                                  \
            double gv = (double)FC_BN_DACT(T, g, y, i, act, slope);                           \
            a0[0] += gv;                                                                      \
            b0[0] += gv * ((double)x[i] - m);                                                 \
        }                                                                                     \
        *sg += FC_VSUM(a0, a1);                                                               \
        *sgd += FC_VSUM(b0, b1);                                                              \
    }
    #else
    #define FC_DEFINE_BN(T, SFX)                                                               \
    static inline double fc_bn_sum_##SFX(const T *a, Py_ssize_t n) {                          \
        double s[8] = {0}; Py_ssize_t i = 0;                                                  \
        for (; i + 8 <= n; i += 8) for (int k = 0; k < 8; k++) s[k] += (double)a[i + k];      \
        for (; i < n; i++) s[0] += (double)a[i];                                              \
        return (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));           \
    }                                                                                         \
    static inline double fc_bn_sumsq_dev_##SFX(const T *a, Py_ssize_t n, double m) {          \
        double s[8] = {0}; Py_ssize_t i = 0;                                                  \
        for (; i + 8 <= n; i += 8) for (int k = 0; k < 8; k++) {                              \
            double d = (double)a[i + k] - m; s[k] += d * d; }                                 \
        for (; i < n; i++) { double d = (double)a[i] - m; s[0] += d * d; }                    \
        return (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));           \
    }                                                                                         \
    static inline void fc_bn_sum_g_gdev_##SFX(const T *g, const T *y, int act, T slope, const T *x, \
                                              Py_ssize_t n, double m, double *sg, double *sgd) { \
        double a[8] = {0}, b[8] = {0}; Py_ssize_t i = 0;                                      \
        for (; i + 8 <= n; i += 8) {                                                          \
            T t[8];                                                                           \
            if (y) fc_bn_dact8_##SFX(g + i, y + i, act, slope, t); else memcpy(t, g + i, sizeof(t)); \
            for (int k = 0; k < 8; k++) {                                                     \
                double gv = (double)t[k]; a[k] += gv; b[k] += gv * ((double)x[i + k] - m); }  \
        }                                                                                     \
        for (; i < n; i++) {                                                                  \
            double gv = (double)FC_BN_DACT(T, g, y, i, act, slope);                           \
            a[0] += gv; b[0] += gv * ((double)x[i] - m); }                                    \
        *sg += (((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])));           \
        *sgd += (((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7])));          \
    }
    #endif
    FC_DEFINE_BN(float, f32)
    FC_DEFINE_BN(double, f64)
    /* The passes over runs r0 .. r1 (run r: the L values at x + r L, of channel
       r % C): a run's sum s[r] and its sum of squared deviations q[r] from its
       own mean; y = act((x - center[c]) scale[c] + shift[c]) (center NULL: 0); the gradient's sums sg[r] = sum(g),
       sgd[r] = sum(g (x - mean[c])); gx = (g - a[c] - (x - m[c]) b[c]) k[c]; with y
       given, g is first taken through the activation act that made y (and, for the
       sums, stored into gy where given: the gradient a later pass then reads). */
    #define FC_DEFINE_BN_RUNS(T, SFX)                                                          \
    FC_NORM_CLONES void fc_bn_run_stats_##SFX(const T *restrict x, Py_ssize_t r0, Py_ssize_t r1, \
                                              Py_ssize_t L, double *restrict s,                \
                                              double *restrict q) {                            \
        for (Py_ssize_t r = r0; r < r1; r++) {                                                \
            const double t = fc_bn_sum_##SFX(x + r * L, L);                                   \
            s[r] = t;                                                                         \
            q[r] = fc_bn_sumsq_dev_##SFX(x + r * L, L, t / (double)L);                        \
        }                                                                                     \
    }                                                                                         \
    FC_NORM_CLONES void fc_bn_affine_runs_##SFX(const T *restrict x, T *restrict y,            \
                                                Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t C,    \
                                                Py_ssize_t L, const T *center, const T *scale, \
                                                const T *shift, int act, T slope, int stream) { \
        for (Py_ssize_t r = r0; r < r1; r++)                                                  \
            fc_bn_affine_##SFX(x + r * L, y + r * L, L, center ? center[r % C] : (T)0, scale[r % C], \
                               shift[r % C], act, slope, stream);                             \
        if (stream) fc_bn_sfence();                                                           \
    }                                                                                         \
    FC_NORM_CLONES void fc_bn_run_gsums_##SFX(const T *restrict g, const T *restrict x,        \
                                              const T *restrict y, int act, T slope,           \
                                              T *restrict gy, Py_ssize_t r0, Py_ssize_t r1,    \
                                              Py_ssize_t C, Py_ssize_t L, const double *mean,  \
                                              double *restrict sg, double *restrict sgd) {     \
        for (Py_ssize_t r = r0; r < r1; r++) {                                                \
            const T *gr = g + r * L, *yr = y ? y + r * L : NULL;                              \
            if (yr && gy) { fc_bn_dact_##SFX(gr, yr, gy + r * L, L, act, slope); gr = gy + r * L; yr = NULL; } \
            sg[r] = 0;                                                                        \
            sgd[r] = 0;                                                                       \
            fc_bn_sum_g_gdev_##SFX(gr, yr, act, slope, x + r * L, L, mean[r % C], sg + r, sgd + r); \
        }                                                                                     \
    }                                                                                         \
    FC_NORM_CLONES void fc_bn_grad_runs_##SFX(const T *restrict g, const T *restrict y, int act, \
                                              T slope, const T *restrict x,                    \
                                              T *restrict gx, Py_ssize_t r0, Py_ssize_t r1,    \
                                              Py_ssize_t C, Py_ssize_t L, const T *a,          \
                                              const T *b, const T *m, const T *k, int stream) { \
        for (Py_ssize_t r = r0; r < r1; r++) {                                                \
            const Py_ssize_t c = r % C;                                                       \
            fc_bn_grad_##SFX(g + r * L, y ? y + r * L : NULL, act, slope, x + r * L, gx + r * L, L, \
                             a[c], b[c], m[c], k[c], stream);                                 \
        }                                                                                     \
        if (stream) fc_bn_sfence();                                                           \
    }
    FC_DEFINE_BN_RUNS(float, f32)
    FC_DEFINE_BN_RUNS(double, f64)
    """
    void fc_bn_run_stats_f32(const float* x, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t L,
                             double* s, double* q) noexcept nogil
    void fc_bn_run_stats_f64(const double* x, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t L,
                             double* s, double* q) noexcept nogil
    void fc_bn_affine_runs_f32(const float* x, float* y, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t C,
                               Py_ssize_t L, const float* center, const float* scale, const float* shift,
                               int act, float slope, int stream) noexcept nogil
    void fc_bn_affine_runs_f64(const double* x, double* y, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t C,
                               Py_ssize_t L, const double* center, const double* scale, const double* shift,
                               int act, double slope, int stream) noexcept nogil
    void fc_bn_run_gsums_f32(const float* g, const float* x, const float* y, int act, float slope, float* gy,
                             Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t C, Py_ssize_t L, const double* mean,
                             double* sg, double* sgd) noexcept nogil
    void fc_bn_run_gsums_f64(const double* g, const double* x, const double* y, int act, double slope,
                             double* gy, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t C, Py_ssize_t L,
                             const double* mean, double* sg, double* sgd) noexcept nogil
    void fc_bn_grad_runs_f32(const float* g, const float* y, int act, float slope, const float* x,
                             float* gx, Py_ssize_t r0, Py_ssize_t r1,
                             Py_ssize_t C, Py_ssize_t L, const float* a, const float* b, const float* m,
                             const float* k, int stream) noexcept nogil
    void fc_bn_grad_runs_f64(const double* g, const double* y, int act, double slope, const double* x,
                             double* gx, Py_ssize_t r0, Py_ssize_t r1,
                             Py_ssize_t C, Py_ssize_t L, const double* a, const double* b, const double* m,
                             const double* k, int stream) noexcept nogil


import numpy as np

# Runs a task: blocks of about RUN_ELEMS values, so that a task's reads stream.
cdef enum:
    RUN_ELEMS = 4096


cdef inline Py_ssize_t _runs_per_task(Py_ssize_t L) noexcept nogil:
    return max(1, RUN_ELEMS // max(L, 1))


cdef void _stats(const floating* x, Py_ssize_t R, Py_ssize_t L, double* s, double* q,
                 int n_threads) noexcept nogil:
    """s[r], q[r] of every run, in blocks of runs shared among the threads."""
    cdef Py_ssize_t B = _runs_per_task(L), nb = (R + B - 1) // B, t
    for t in prange(nb, schedule='static', num_threads=n_threads):
        if floating is float:
            fc_bn_run_stats_f32(x, t * B, min(R, (t + 1) * B), L, s, q)
        else:
            fc_bn_run_stats_f64(x, t * B, min(R, (t + 1) * B), L, s, q)


cdef void _affine_runs(const floating* x, floating* y, Py_ssize_t R, Py_ssize_t C, Py_ssize_t L,
                       const floating* center, const floating* scale, const floating* shift, bint stream,
                       int n_threads, int act=0, floating slope=0) noexcept nogil:
    """y = act((x - center[c]) scale[c] + shift[c]) over every run (center NULL: 0; act 0:
    none, 1: ReLU, 2: LeakyReLU)."""
    cdef Py_ssize_t B = _runs_per_task(L), nb = (R + B - 1) // B, t
    for t in prange(nb, schedule='static', num_threads=n_threads):
        if floating is float:
            fc_bn_affine_runs_f32(x, y, t * B, min(R, (t + 1) * B), C, L, center, scale, shift, act, slope,
                                  stream)
        else:
            fc_bn_affine_runs_f64(x, y, t * B, min(R, (t + 1) * B), C, L, center, scale, shift, act, slope,
                                  stream)


def batch_norm_train_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                             const double[::1] weight, const double[::1] bias, double eps,
                             floating[::1] save_mean, floating[::1] save_invstd,
                             double[::1] var, bint stream, int n_threads, int act=0, double slope=0.0):
    """Batch statistics per channel (biased var into ``var``), normalise, scale, shift,
    then the activation ``act`` (0: none, 1: ReLU, 2: LeakyReLU of ``slope``).

    A channel's variance adds its runs' squared deviations from their own means
    and their means' squared deviations from the channel's (exact, and every term
    non-negative). ``stream`` writes y with non-temporal stores (same values).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], R = N * C, c, n
    if N == 0 or C == 0:
        return
    cdef double[:, ::1] part = np.empty((2, R))
    cdef double[:, ::1] acc = np.zeros((2, C))
    dt = np.float32 if floating is float else np.float64
    cdef floating[::1] scale = np.empty(C, dtype=dt), shift = np.empty(C, dtype=dt)
    cdef floating[::1] center = np.empty(C, dtype=dt)
    cdef double M = <double>N * L, d, mean, v, invstd, sc
    with nogil:
        _stats(&x[0, 0, 0], R, L, &part[0, 0], &part[1, 0], n_threads)
        # a channel's runs added in image order (the images outermost: the partials in memory order)
        for n in range(N):
            for c in range(C):
                acc[0, c] = acc[0, c] + part[0, n * C + c]
        for c in range(C):
            acc[0, c] = acc[0, c] / M   # the mean
        for n in range(N):
            for c in range(C):
                d = part[0, n * C + c] / L - acc[0, c]
                acc[1, c] = acc[1, c] + (part[1, n * C + c] + L * d * d)
        for c in range(C):
            mean = acc[0, c]
            v = acc[1, c] / M
            invstd = 1.0 / sqrt(v + eps)
            sc = weight[c] * invstd
            # y = (x - m) sc + (bias - (mean - m) sc), m the mean rounded to x's type: x
            # near the mean loses nothing to the subtraction (where x sc + (bias - mean sc)
            # would cancel), and the shift takes in the mean's rounding
            center[c] = <floating>mean
            scale[c] = <floating>sc
            shift[c] = <floating>(bias[c] - (mean - <double>center[c]) * sc)
            save_mean[c] = <floating>mean
            save_invstd[c] = <floating>invstd
            var[c] = v
        _affine_runs(&x[0, 0, 0], &y[0, 0, 0], R, C, L, &center[0], &scale[0], &shift[0], stream, n_threads,
                     act, <floating>slope)


def channel_affine(const floating[:, :, ::1] x, floating[:, :, ::1] y, const double[::1] center,
                   const double[::1] scale, const double[::1] shift, int n_threads, int act=0,
                   double slope=0.0):
    """y[n, c, :] = act((x[n, c, :] - center[c]) * scale[c] + shift[c]) (evaluation mode;
    act as for batch_norm_train_forward)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    if N == 0 or C == 0 or L == 0:
        return
    dt = np.float32 if floating is float else np.float64
    cdef floating[::1] m = np.asarray(center).astype(dt)
    cdef floating[::1] sc = np.asarray(scale).astype(dt), sh = np.asarray(shift).astype(dt)
    with nogil:
        _affine_runs(&x[0, 0, 0], &y[0, 0, 0], N * C, C, L, &m[0], &sc[0], &sh[0], False, n_threads, act,
                     <floating>slope)


def batch_norm_backward(const floating[:, :, ::1] g, const floating[:, :, ::1] x,
                        floating[:, :, ::1] gx, const double[::1] weight,
                        const double[::1] mean, const double[::1] invstd, bint training,
                        double[::1] grad_weight, double[::1] grad_bias, bint stream,
                        int n_threads, const floating[:, :, ::1] y=None, int act=0, double slope=0.0):
    """grad_x, and per channel grad_weight = sum(g * xhat), grad_bias = sum(g).

    In training gx = w invstd (g - mean(g) - xhat mean(g xhat)), xhat = (x - mean)
    invstd; else gx = w invstd g. ``stream`` writes grad_x with non-temporal stores
    (same values). ``y``: the output of an activation ``act`` (1: ReLU, 2: LeakyReLU of
    ``slope`` >= 0) applied after the normalisation; g is then the gradient wrt y.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], R = N * C, c, n, t
    if N == 0 or C == 0:
        return
    cdef const floating *yp = NULL
    cdef floating sl = <floating>slope
    cdef floating[:, :, ::1] gm
    cdef const floating *gp = &g[0, 0, 0]
    cdef floating *gyp = NULL
    dt = np.float32 if floating is float else np.float64
    if y is not None:
        # the gradient through the activation: in training, taken again by each pass;
        # in evaluation mode, made by the first pass and read by the other
        yp = &y[0, 0, 0]
        if not training:
            gm = np.empty((N, C, L), dtype=dt)
            gyp = &gm[0, 0, 0]
    cdef double[:, ::1] part = np.empty((2, R))
    cdef double[:, ::1] acc = np.zeros((2, C))
    cdef floating[:, ::1] coef = np.empty((4, C), dtype=dt)
    cdef double M = <double>N * L, sg, sgd
    cdef Py_ssize_t B = _runs_per_task(L), nb = (R + B - 1) // B
    with nogil:
        for t in prange(nb, schedule='static', num_threads=n_threads):
            if floating is float:
                fc_bn_run_gsums_f32(gp, &x[0, 0, 0], yp, act, sl, gyp, t * B, min(R, (t + 1) * B), C, L,
                                    &mean[0], &part[0, 0], &part[1, 0])
            else:
                fc_bn_run_gsums_f64(gp, &x[0, 0, 0], yp, act, sl, gyp, t * B, min(R, (t + 1) * B), C, L,
                                    &mean[0], &part[0, 0], &part[1, 0])
        if gyp != NULL:
            gp = gyp
            yp = NULL
        for n in range(N):
            for c in range(C):
                acc[0, c] = acc[0, c] + part[0, n * C + c]
                acc[1, c] = acc[1, c] + part[1, n * C + c]
        for c in range(C):
            sg = acc[0, c]
            sgd = acc[1, c]
            grad_bias[c] = sg
            grad_weight[c] = sgd * invstd[c]
            coef[0, c] = <floating>(sg / M)
            coef[1, c] = <floating>(sgd * invstd[c] * invstd[c] / M)
            coef[2, c] = <floating>mean[c]
            coef[3, c] = <floating>(weight[c] * invstd[c])
        if not training:
            for c in range(C):
                coef[0, c] = 0
            _affine_runs(gp, &gx[0, 0, 0], R, C, L, NULL, &coef[3, 0], &coef[0, 0], stream, n_threads)
        else:
            for t in prange(nb, schedule='static', num_threads=n_threads):
                if floating is float:
                    fc_bn_grad_runs_f32(gp, yp, act, sl, &x[0, 0, 0], &gx[0, 0, 0], t * B, min(R, (t + 1) * B),
                                        C, L, &coef[0, 0], &coef[1, 0], &coef[2, 0], &coef[3, 0], stream)
                else:
                    fc_bn_grad_runs_f64(gp, yp, act, sl, &x[0, 0, 0], &gx[0, 0, 0], t * B, min(R, (t + 1) * B),
                                        C, L, &coef[0, 0], &coef[1, 0], &coef[2, 0], &coef[3, 0], stream)
