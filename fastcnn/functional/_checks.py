"""Argument checks shared by the functional entry points.

Every conversion of user input into kernel arguments goes through here, so
messages are uniform: they name the argument and what was expected.
"""
import numbers
import os

import numpy as np

from .._threads import get_num_threads

FLOAT_DTYPES = (np.float32, np.float64)
_FLOAT_DTYPE_SET = frozenset(np.dtype(t) for t in FLOAT_DTYPES)


# Work (flops or elements) below which one more thread does not pay off.
WORK_PER_THREAD = 2_000_000


def n_threads(work=None, grain=None):
    """Threads for a kernel call: the configured count, fewer for small problems.

    ``work`` is the call's cost (flops or elements); below ``grain`` units per
    thread, extra threads cost more in start-up and barriers than they save.
    Kernels give identical results for any thread count, so this only
    affects speed.
    """
    nt = get_num_threads()
    if work is None or nt == 1:
        return nt
    n = int(work // (WORK_PER_THREAD if grain is None else max(1, grain)))
    return nt if n >= nt else (n if n > 1 else 1)


def memo_key(params):
    """``params`` (a tuple) as part of a memo key if each is None, a str, an int or a
    tuple of ints, types that cannot confuse True with 1 or 1.0 with 1; else None."""
    for v in params:
        t = type(v)
        if not (v is None or t is int or t is str or (t is tuple and all(type(e) is int for e in v))):
            return None
    return params


def kernel_ready(dtype, *arrays):
    """Whether each of ``arrays`` (None passes) is a C-contiguous numpy array of
    ``dtype``: what a kernel reads as it is, so checks made once hold for it."""
    for a in arrays:
        if a is not None and (type(a) is not np.ndarray or a.dtype != dtype or not a.flags.c_contiguous):
            return False
    return True


class Memo(dict):
    """Checked results of recent calls, by argument shapes and exact parameter values:
    a repeated call (a layer's, every batch) skips checks that depend on nothing else."""

    def __init__(self, size=512):
        super().__init__()
        self.size = size

    def put(self, key, value):
        if len(self) >= self.size:
            self.clear()
        self[key] = value
        return value


def as_float_array(x, name, ndim=None, dtype=None, contiguous=True):
    """Return ``x`` as a float32/float64 ndarray (C-contiguous unless told not to).

    Raises TypeError for non-float dtypes and ValueError for the wrong ndim.
    ``dtype``, when given, is the dtype ``x`` must already have.
    """
    if (type(x) is np.ndarray and x.dtype in _FLOAT_DTYPE_SET and (dtype is None or x.dtype == dtype)
            and (ndim is None or (x.ndim == ndim if type(ndim) is int else x.ndim in ndim))
            and (not contiguous or x.flags.c_contiguous)):
        return x
    if not isinstance(x, np.ndarray):
        if isinstance(x, (list, tuple)) or np.isscalar(x):
            x = np.asarray(x)
            if x.dtype.kind in "iub":
                x = x.astype(np.float32 if dtype is None else dtype)
        else:
            raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name} (as the other inputs), got {x.dtype}")
    if ndim is not None:
        nd = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in nd:
            want = " or ".join(str(d) for d in nd)
            raise ValueError(f"{name} must be {want}-D, got shape {x.shape}")
    if contiguous and not x.flags.c_contiguous:
        check_bytes(x.size * x.itemsize, f"a contiguous copy of {name} (shape {x.shape})")
        x = np.ascontiguousarray(x)
    return x


def check_int(v, name, minimum=None):
    if type(v) is int:
        if minimum is not None and v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {v}")
        return v
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {v!r}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def pair(v, name, minimum=None):
    """An int or a pair of ints -> a tuple of two ints (each >= minimum and <= 2**31-1)."""
    if type(v) is int and (minimum is None or v >= minimum) and v <= INT_MAX:
        return (v, v)
    if (type(v) is tuple and len(v) == 2 and type(v[0]) is int and type(v[1]) is int
            and (minimum is None or (v[0] >= minimum and v[1] >= minimum))
            and v[0] <= INT_MAX and v[1] <= INT_MAX):
        return v
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        out = tuple(check_int(e, name, minimum) for e in v)
    elif isinstance(v, np.ndarray) and v.shape == (2,):
        out = tuple(check_int(e, name, minimum) for e in v.tolist())
    else:
        v = check_int(v, name, minimum)
        out = (v, v)
    for e in out:
        if e > INT_MAX:  # geometry reaches the kernels as C ints
            raise ValueError(f"{name} must be at most {INT_MAX}, got {e}")
    return out


def check_float(v, name, minimum=None, maximum=None):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {v!r}")
    v = float(v)
    if v != v:
        raise ValueError(f"{name} must not be NaN")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


MAX_ELEMENTS = 2 ** 40

# The compiled kernels index one image (or one GEMM operand) with C ints.
INT_MAX = 2 ** 31 - 1


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - platforms without sysconf
        return None


PHYSICAL_MEMORY = _physical_memory()


def check_bytes(nbytes, what):
    """Refuse an allocation larger than this machine's physical memory (before making it)."""
    if PHYSICAL_MEMORY is not None and nbytes > PHYSICAL_MEMORY:
        raise ValueError(f"{what} is too large: it would need {nbytes / 2 ** 30:.1f} GiB, more than this machine's "
                         f"{PHYSICAL_MEMORY / 2 ** 30:.1f} GiB of memory")


def check_size(shape, name, itemsize=4):
    """Refuse outputs whose element count is absurd, or that cannot fit in memory, before allocating them."""
    n = 1
    for s in shape:
        n *= int(s)
    if n > MAX_ELEMENTS:
        raise ValueError(f"{name} would have shape {tuple(shape)} ({n} elements): too large")
    nbytes = n * int(itemsize)
    if PHYSICAL_MEMORY is not None and nbytes > PHYSICAL_MEMORY:
        check_bytes(nbytes, f"{name} of shape {tuple(shape)}")
    return shape


def check_index_range(what, sizes):
    """Refuse sizes the kernels cannot index with a C int: each value must be at most 2**31-1.

    ``sizes`` maps a description (e.g. ``"C*H*W"``: channels x height x width
    of one image) to its value.
    """
    if max(sizes.values()) <= INT_MAX:
        return
    for label, value in sizes.items():
        if int(value) > INT_MAX:
            raise ValueError(f"{what}: {label} = {int(value)} is too large: the kernels handle sizes "
                             f"up to 2**31-1 = {INT_MAX} per image; split the input into smaller pieces")
