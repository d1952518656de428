# Fixed-order reductions shared by the kernel modules.
from cython cimport floating


cdef inline double plane_sum(const floating *p, Py_ssize_t n) noexcept nogil:
    """Sum of n contiguous values, in a fixed order: float32 values in blocks of
    256 over sixteen float partial sums (a loop the compiler vectorises), each
    block's partials added in double; float64 values over eight double
    partial sums."""
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0
    cdef float s[16]
    cdef Py_ssize_t i = 0, j, b
    if floating is float:
        while i + 256 <= n:
            for j in range(16):
                s[j] = p[i + j]
            for b in range(i + 16, i + 256, 16):
                for j in range(16):
                    s[j] = s[j] + p[b + j]
            a0 += (s[0] + s[1]) + (s[2] + s[3])
            a1 += (s[4] + s[5]) + (s[6] + s[7])
            a2 += (s[8] + s[9]) + (s[10] + s[11])
            a3 += (s[12] + s[13]) + (s[14] + s[15])
            i += 256
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
