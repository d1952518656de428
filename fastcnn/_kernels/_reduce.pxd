# Fixed-order reductions shared by the kernel modules.
from cython cimport floating


cdef inline double plane_sum(const floating *p, Py_ssize_t n) noexcept nogil:
    """Sum of n contiguous values in double: eight interleaved partial sums, fixed order."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        a0 += p[i]
        a1 += p[i + 1]
        a2 += p[i + 2]
        a3 += p[i + 3]
        a4 += p[i + 4]
        a5 += p[i + 5]
        a6 += p[i + 6]
        a7 += p[i + 7]
        i += 8
    while i < n:
        a0 += p[i]
        i += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
