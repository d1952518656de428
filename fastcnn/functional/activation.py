"""Activations, softmax / log-softmax and dropout: checks, allocation, kernel calls.

Element-wise ops accept arrays of any shape. Backward functions take the
forward *output* where that is all they need (ReLU, Tanh, Sigmoid, Softmax,
LogSoftmax), so a layer can drop its input after the forward pass.
"""
import numbers

import numpy as np

from .._kernels import _pointwise

from ._checks import as_float_array, check_float, check_int, n_threads

__all__ = [
    "relu", "relu_backward", "leaky_relu", "leaky_relu_backward",
    "tanh", "tanh_backward", "sigmoid", "sigmoid_backward",
    "softmax", "softmax_backward", "log_softmax", "log_softmax_backward",
    "dropout", "dropout_backward",
]

# Below this many elements an element-wise kernel runs on one thread: waking
# the others costs more than the work.
_SERIAL_BELOW = 1 << 15


def _kernels():
    return _pointwise


def _threads_for(n):
    return 1 if n < _SERIAL_BELOW else n_threads()


def _out_for(x, inplace, name="x"):
    """(source, destination, the array to write back into or None): in place, a
    non-contiguous x is worked on as a contiguous copy that is then written back."""
    if not isinstance(inplace, (bool, np.bool_)):
        raise TypeError(f"inplace must be a bool, got {inplace!r}")
    if inplace:
        if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64) or not x.flags.writeable:
            raise ValueError(f"inplace=True needs {name} to be a writeable float32/float64 numpy array")
        if not x.flags.c_contiguous:
            c = np.ascontiguousarray(x)
            return c, c, x
        return x, x, None
    x = as_float_array(x, name)
    return x, np.empty_like(x), None


def _written_back(y, back):
    if back is None:
        return y
    back[...] = y
    return back


def _pair_arrays(a, b, name_a, name_b):
    a = as_float_array(a, name_a)
    b = as_float_array(b, name_b, dtype=a.dtype)
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def _flat(a):
    return a.reshape(-1)


# ---------------------------------------------------------------------------
# element-wise activations
# ---------------------------------------------------------------------------

def relu(x, inplace=False):
    """max(x, 0) (NaN stays NaN). ``inplace`` overwrites and returns ``x``."""
    x, y, back = _out_for(x, inplace)
    _kernels().relu_forward(_flat(x), _flat(y), _threads_for(x.size))
    return _written_back(y, back)


def relu_backward(grad_out, y):
    """grad_out where the ReLU output ``y`` is > 0, else 0."""
    g, y = _pair_arrays(grad_out, y, "grad_out", "y")
    gx = np.empty_like(g)
    _kernels().relu_backward(_flat(g), _flat(y), _flat(gx), _threads_for(g.size))
    return gx


def leaky_relu(x, negative_slope=0.01, inplace=False):
    """x if x > 0 else negative_slope * x."""
    s = check_float(negative_slope, "negative_slope")
    x, y, back = _out_for(x, inplace)
    _kernels().leaky_relu_forward(_flat(x), _flat(y), s, _threads_for(x.size))
    return _written_back(y, back)


def leaky_relu_backward(grad_out, x, negative_slope=0.01):
    """grad_out if x > 0 else negative_slope * grad_out.

    ``x`` is the input; the output works as well when negative_slope > 0.
    """
    s = check_float(negative_slope, "negative_slope")
    g, x = _pair_arrays(grad_out, x, "grad_out", "x")
    gx = np.empty_like(g)
    _kernels().leaky_relu_backward(_flat(g), _flat(x), _flat(gx), s, _threads_for(g.size))
    return gx


def tanh(x):
    # numpy's tanh runs on SIMD vectors; a libm call per element is many times slower
    x = as_float_array(x, "x")
    return np.tanh(x, out=np.empty_like(x))


def tanh_backward(grad_out, y):
    """grad_out * (1 - y^2), ``y`` the Tanh output."""
    g, y = _pair_arrays(grad_out, y, "grad_out", "y")
    gx = np.empty_like(g)
    _kernels().tanh_backward(_flat(g), _flat(y), _flat(gx), _threads_for(g.size))
    return gx


def sigmoid(x):
    """1 / (1 + exp(-x)), evaluated without overflow for any x."""
    x = as_float_array(x, "x")
    y = np.empty_like(x)
    _kernels().sigmoid_forward(_flat(x), _flat(y), _threads_for(x.size))
    return y


def sigmoid_backward(grad_out, y):
    """grad_out * y * (1 - y), ``y`` the Sigmoid output."""
    g, y = _pair_arrays(grad_out, y, "grad_out", "y")
    gx = np.empty_like(g)
    _kernels().sigmoid_backward(_flat(g), _flat(y), _flat(gx), _threads_for(g.size))
    return gx


# ---------------------------------------------------------------------------
# softmax / log-softmax
# ---------------------------------------------------------------------------

def _axis_view(a, dim):
    """(outer, D, inner) view of contiguous ``a`` around axis ``dim``."""
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"dim must be an int, got {dim!r}")
    nd = a.ndim
    if nd == 0:
        raise ValueError("softmax needs an array with at least one dimension, got a scalar")
    if not -nd <= dim < nd:
        raise ValueError(f"dim must be in [{-nd}, {nd - 1}] for an array of shape {a.shape}, got {dim}")
    dim = int(dim) % nd
    outer = int(np.prod(a.shape[:dim], dtype=np.int64))
    inner = int(np.prod(a.shape[dim + 1:], dtype=np.int64))
    return a.reshape(outer, a.shape[dim], inner)


def _softmax(x, dim, take_log):
    x = as_float_array(x, "x")
    y = np.empty_like(x)
    _kernels().softmax_forward(_axis_view(x, dim), _axis_view(y, dim), take_log,
                               _threads_for(x.size))
    return y


def _softmax_backward(grad_out, y, dim, take_log):
    g, y = _pair_arrays(grad_out, y, "grad_out", "y")
    gx = np.empty_like(g)
    _kernels().softmax_backward(_axis_view(g, dim), _axis_view(y, dim), _axis_view(gx, dim),
                                take_log, _threads_for(g.size))
    return gx


def softmax(x, dim=-1):
    """exp(x - max) / sum(exp(x - max)) along ``dim``."""
    return _softmax(x, dim, False)


def softmax_backward(grad_out, y, dim=-1):
    """y * (grad_out - sum(grad_out * y)), ``y`` the softmax output."""
    return _softmax_backward(grad_out, y, dim, False)


def log_softmax(x, dim=-1):
    """x - max - log(sum(exp(x - max))) along ``dim``."""
    return _softmax(x, dim, True)


def log_softmax_backward(grad_out, y, dim=-1):
    """grad_out - exp(y) * sum(grad_out), ``y`` the log-softmax output."""
    return _softmax_backward(grad_out, y, dim, True)


# ---------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------

def dropout(x, p=0.5, training=True, rng=None):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p).

    Returns ``(y, mask)``: ``mask`` is a bool array (True = kept), None when not
    training or p == 0 (then ``y`` is ``x`` itself). ``rng`` is a
    ``numpy.random.Generator`` (or an int seed) for reproducible masks; None
    draws from fresh OS entropy.
    """
    p = check_float(p, "p", 0.0, 1.0)
    x = as_float_array(x, "x")
    if not training or p == 0.0:
        return x, None
    if rng is None:
        rng = np.random.default_rng()
    elif isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        rng = np.random.default_rng(check_int(rng, "rng", 0))
    elif not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")
    mask = rng.random(x.shape, dtype=np.float32 if x.dtype == np.float32 else np.float64) >= p
    y = np.empty_like(x)
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    _kernels().dropout_apply(_flat(x), _flat(mask).view(np.uint8), _flat(y), scale,
                             _threads_for(x.size))
    return y, mask


def dropout_backward(grad_out, mask, p):
    """grad_out * mask / (1 - p); ``mask`` None (eval mode or p == 0) passes grad_out through."""
    p = check_float(p, "p", 0.0, 1.0)
    g = as_float_array(grad_out, "grad_out")
    if mask is None:
        return g
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise TypeError(f"mask must be the bool array returned by dropout, got "
                        f"{type(mask).__name__ if not isinstance(mask, np.ndarray) else mask.dtype}")
    if mask.shape != g.shape:
        raise ValueError(f"mask must have the shape of grad_out {g.shape}, got {mask.shape}")
    mask = np.ascontiguousarray(mask)
    gx = np.empty_like(g)
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    _kernels().dropout_apply(_flat(g), _flat(mask).view(np.uint8), _flat(gx), scale,
                             _threads_for(g.size))
    return gx
