"""Argument checks shared by the functional entry points.

Every conversion of user input into kernel arguments goes through here, so
messages are uniform: they name the argument and what was expected.
"""
import numbers

import numpy as np

from .._threads import get_num_threads

FLOAT_DTYPES = (np.float32, np.float64)


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
    grain = WORK_PER_THREAD if grain is None else grain
    return int(max(1, min(nt, work // max(1, grain))))


def as_float_array(x, name, ndim=None, dtype=None, contiguous=True):
    """Return ``x`` as a float32/float64 ndarray (C-contiguous unless told not to).

    Raises TypeError for non-float dtypes and ValueError for the wrong ndim.
    ``dtype``, when given, is the dtype ``x`` must already have.
    """
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
        x = np.ascontiguousarray(x)
    return x


def check_int(v, name, minimum=None):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {v!r}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def pair(v, name, minimum=None):
    """An int or a pair of ints -> a tuple of two ints (each >= minimum)."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        return tuple(check_int(e, name, minimum) for e in v)
    if isinstance(v, np.ndarray) and v.shape == (2,):
        return tuple(check_int(e, name, minimum) for e in v.tolist())
    v = check_int(v, name, minimum)
    return (v, v)


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


def check_size(shape, name):
    """Refuse outputs whose element count is absurd before allocating them."""
    n = 1
    for s in shape:
        n *= int(s)
    if n > MAX_ELEMENTS:
        raise ValueError(f"{name} would have shape {tuple(shape)} ({n} elements): too large")
    return shape
