# cython: language_level=3
"""GEMM entry point and engine configuration (ISA dispatch, OpenMP)."""
from libc.string cimport memset
cimport numpy as cnp
import numpy as np

from fastcnn._kernels.fc_gemm cimport *

cnp.import_array()
fc_init()

_ISA_BY_NAME = {"generic": FC_ISA_GENERIC, "avx2": FC_ISA_AVX2, "avx512": FC_ISA_AVX512, "auto": FC_ISA_AUTO}


def supported_isas():
    """ISA paths this CPU can run, best first."""
    return [name for name in ("avx512", "avx2", "generic") if fc_isa_supported(_ISA_BY_NAME[name])]


def set_isa(str name):
    if fc_set_isa(_ISA_BY_NAME[name]) != 0:
        raise ValueError(f"isa {name!r} is not supported by this CPU")


def get_isa():
    return fc_isa_name(fc_get_isa()).decode()


def openmp_enabled():
    return bool(fc_openmp_enabled())


def compiler():
    return fc_compiler().decode()


def ukr_probe(long reps, int k=256, int n_threads=1):
    """Run the float32 micro-kernel ``reps`` times on each of ``n_threads``
    threads, on panels of depth ``k`` that stay in each core's cache."""
    cdef int rc
    with nogil:
        rc = fc_ukr_probe_s(reps, k, n_threads)
    if rc != 0:
        raise MemoryError("fastcnn: could not allocate the probe's panels")


cdef inline fc_view dense_view(cnp.ndarray a, bint trans):
    """A dense view of a 2-D array (any strides), transposed when asked."""
    cdef fc_view v
    cdef Py_ssize_t isz = a.itemsize
    memset(&v, 0, sizeof(v))
    v.kind = FC_VIEW_DENSE
    v.trans = 0
    v.p = cnp.PyArray_DATA(a)
    if trans:
        v.rs = a.strides[1] // isz
        v.cs = a.strides[0] // isz
    else:
        v.rs = a.strides[0] // isz
        v.cs = a.strides[1] // isz
    return v


cdef fc_epilogue epilogue(object bias, int bias_mode, int act, double slope):
    """The epilogue for an optional bias array (kept alive by the caller)."""
    cdef fc_epilogue epi
    cdef cnp.ndarray bias_arr
    epi.bias_mode = FC_BIAS_NONE
    epi.bias = NULL
    epi.act = act
    epi.slope = slope
    epi.wrap = 0
    epi.keep = 0
    epi.bstride = 0
    epi.trans = 0
    if bias is not None:
        bias_arr = bias
        epi.bias_mode = bias_mode
        epi.bias = cnp.PyArray_DATA(bias_arr)
    return epi


def gemm(cnp.ndarray a, cnp.ndarray b, cnp.ndarray c, bint trans_a=False, bint trans_b=False,
         double alpha=1.0, double beta=0.0, bias=None, int bias_mode=0, int act=0,
         double slope=0.01, int n_threads=1):
    """c = alpha * op(a) @ op(b) + beta * c, then bias and activation.

    a, b: 2-D arrays of c's dtype with element-aligned strides (any sign);
    c: C-contiguous rows (row stride >= n, unit column stride). Arguments are
    trusted: fastcnn.functional checks them.
    """
    cdef int m = c.shape[0], n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    cdef fc_view A = dense_view(a, trans_a)
    cdef fc_view B = dense_view(b, trans_b)
    cdef fc_epilogue epi = epilogue(bias, bias_mode, act, slope)
    cdef long ldc = c.strides[0] // c.itemsize
    cdef int rc
    if c.dtype == np.float32:
        with nogil:
            rc = fc_gemm_s(m, n, k, <float>alpha, &A, &B, <float>beta, <float *>cnp.PyArray_DATA(c),
                           ldc, &epi, n_threads, NULL)
    else:
        with nogil:
            rc = fc_gemm_d(m, n, k, alpha, &A, &B, beta, <double *>cnp.PyArray_DATA(c),
                           ldc, &epi, n_threads, NULL)
    if rc != 0:
        raise MemoryError("fastcnn: could not allocate the GEMM workspace")
    return c


def linear_rows(cnp.ndarray x, cnp.ndarray w, bias, cnp.ndarray y, int act=0, double slope=0.01,
                int n_threads=1, bint bias_by_row=False):
    """y = x @ w.T (+ bias, activation) for a few rows of x, without packing.

    x (n, k) and w (m, k) with unit column stride, y (n, m) C-contiguous; the
    bias has one value per column of y, or per row with ``bias_by_row``.
    """
    cdef fc_epilogue epi = epilogue(bias, FC_BIAS_ROW if bias_by_row else FC_BIAS_COL, act, slope)
    cdef int n = x.shape[0], k = x.shape[1], m = w.shape[0]
    cdef long ldx = x.strides[0] // x.itemsize, ldw = w.strides[0] // w.itemsize
    cdef long ldy = y.strides[0] // y.itemsize
    if x.dtype == np.float32:
        with nogil:
            fc_gemv_s(n, m, k, <float *>cnp.PyArray_DATA(x), ldx, <float *>cnp.PyArray_DATA(w), ldw,
                      <float *>cnp.PyArray_DATA(y), ldy, &epi, n_threads)
    else:
        with nogil:
            fc_gemv_d(n, m, k, <double *>cnp.PyArray_DATA(x), ldx, <double *>cnp.PyArray_DATA(w), ldw,
                      <double *>cnp.PyArray_DATA(y), ldy, &epi, n_threads)
    return y


def transpose_into(cnp.ndarray src, cnp.ndarray dst):
    """dst (cols, rows) = src (rows, cols).T through the transpose of the instruction set
    in use; both 2-D, unit column stride, any row stride, the same float dtype."""
    cdef int rows = src.shape[0], cols = src.shape[1]
    cdef long lds = src.strides[0] // src.itemsize, ldd = dst.strides[0] // dst.itemsize
    if src.dtype == np.float32:
        with nogil:
            fc_transpose_s(<float *>cnp.PyArray_DATA(src), lds, <float *>cnp.PyArray_DATA(dst), ldd, rows, cols)
    else:
        with nogil:
            fc_transpose_d(<double *>cnp.PyArray_DATA(src), lds, <double *>cnp.PyArray_DATA(dst), ldd, rows, cols)
    return dst
