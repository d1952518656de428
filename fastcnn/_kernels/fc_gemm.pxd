# Declarations of the C GEMM engine (csrc/fc_gemm.h).
cdef extern from "fc_gemm.h" nogil:
    enum:
        FC_ISA_AUTO
        FC_ISA_GENERIC
        FC_ISA_AVX2
        FC_ISA_AVX512
        FC_ACT_NONE
        FC_ACT_RELU
        FC_ACT_LEAKY
        FC_POOL_2X2
        FC_BIAS_NONE
        FC_BIAS_ROW
        FC_BIAS_COL
        FC_VIEW_DENSE
        FC_VIEW_PATCH
        FC_VIEW_PACKED
        FC_VIEW_SHIFT
        FC_VIEW_GATHER
        FC_VIEW_IMAGES

    ctypedef struct fc_conv_geom:
        int C, H, W, R, S, P, Q, sh, sw, ph, pw, dh, dw

    ctypedef struct fc_view:
        int kind
        int trans
        const void *p
        long rs, cs
        fc_conv_geom g
        const long *offs
        const long *doffs

    ctypedef struct fc_epilogue:
        int bias_mode
        const void *bias
        int act
        double slope
        int wrap
        int keep
        long bstride
        int trans

    void fc_init()
    int fc_isa_supported(int isa)
    int fc_set_isa(int isa)
    int fc_get_isa()
    const char *fc_isa_name(int isa)
    int fc_openmp_enabled()
    const char *fc_compiler()
    unsigned fc_fpmode_enter()
    void fc_fpmode_leave(unsigned saved)
    void fc_transpose_s(const float *src, long lds, float *dst, long ldd, int rows, int cols)
    void fc_transpose_d(const double *src, long lds, double *dst, long ldd, int rows, int cols)
    int fc_ukr_probe_s(long reps, int k, int nthreads)
    int fc_direct3_s(const float *x, const float *w, const float *bias, float *y, int N, int C, int K,
                     int H, int W, int ph, int pw, int act, double slope, int nthreads, unsigned char *code)
    int fc_direct3_available()
    int fc_direct3_wgrad_s(const float *x, const float *dy, float *dw, float *db, int N, int K, int H,
                           int W, int ph, int pw, int nthreads, float *ws)
    ctypedef struct fc_phases:
        int sh, sw, H, W, ph, pw
        void *nhwc
        int nhwc_ready
    size_t fc_wino_nhwc_size(int f, int N, int C, int P, int Q)
    size_t fc_wino_ws_s(int f, int N, int C, int K, int P, int Q, int nthreads, size_t *upack)
    size_t fc_wino_ws_d(int f, int N, int C, int K, int P, int Q, int nthreads, size_t *upack)
    int fc_wino_s(int f, const float *x, const float *w, const float *bias, float *y, int N, int C,
                  int H, int W, int K, int P, int Q, int ph, int pw, int act, double slope,
                  int nthreads, float *ws, float *upack, int upack_ready, const fc_phases *xin,
                  const fc_phases *yout, unsigned char *code)
    int fc_wino_d(int f, const double *x, const double *w, const double *bias, double *y, int N,
                  int C, int H, int W, int K, int P, int Q, int ph, int pw, int act, double slope,
                  int nthreads, double *ws, double *upack, int upack_ready, const fc_phases *xin,
                  const fc_phases *yout, unsigned char *code)
    size_t fc_wino_wgrad_ws_s(int f, int N, int C, int K, int P, int Q, int nthreads)
    size_t fc_wino_wgrad_ws_d(int f, int N, int C, int K, int P, int Q, int nthreads)
    int fc_wino_wgrad_s(int f, const float *x, const float *dy, float *dw, float *db, int N, int C, int H,
                        int W, int K, int P, int Q, int ph, int pw, int nthreads, float *ws, const fc_phases *xin,
                        const fc_phases *dyin)
    int fc_wino_wgrad_d(int f, const double *x, const double *dy, double *dw, double *db, int N, int C, int H,
                        int W, int K, int P, int Q, int ph, int pw, int nthreads, double *ws,
                        const fc_phases *xin, const fc_phases *dyin)
    void fc_nhwc_rows_s(const float *x, long r0, long r1, int C, int H, int W, int Cs, int Hp, int Wp,
                        int top, int left, float *out)
    void fc_nhwc_rows_d(const double *x, long r0, long r1, int C, int H, int W, int Cs, int Hp, int Wp,
                        int top, int left, double *out)
    void *fc_aligned_alloc(size_t nbytes)
    void fc_aligned_free(void *p)

    int fc_gemv_s(int n, int m, int k, const float *x, long ldx, const float *w, long ldw,
                  float *y, long ldy, const fc_epilogue *epi, int nthreads)
    int fc_gemv_d(int n, int m, int k, const double *x, long ldx, const double *w, long ldw,
                  double *y, long ldy, const fc_epilogue *epi, int nthreads)
    size_t fc_gemm_packed_a_size_s(int m, int k)
    size_t fc_gemm_packed_a_size_d(int m, int k)
    void fc_gemm_pack_a_s(int m, int k, const fc_view *A, float *dst)
    void fc_gemm_pack_a_d(int m, int k, const fc_view *A, double *dst)
    size_t fc_gemm_ws_s(int m, int n, int k, int nthreads)
    size_t fc_gemm_ws_d(int m, int n, int k, int nthreads)
    int fc_gemm_s(int m, int n, int k, float alpha, const fc_view *A, const fc_view *B,
                  float beta, float *C, long ldc, const fc_epilogue *epi, int nthreads, float *ws)
    int fc_gemm_d(int m, int n, int k, double alpha, const fc_view *A, const fc_view *B,
                  double beta, double *C, long ldc, const fc_epilogue *epi, int nthreads, double *ws)
