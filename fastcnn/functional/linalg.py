"""Matrix products: matmul and Linear, on the GEMM engine."""
import numpy as np

from .._kernels import _gemm, _conv
from ._checks import Memo, as_float_array, check_float, check_index_range, check_size, kernel_ready, n_threads

__all__ = ["matmul", "linear", "linear_backward"]

_ACT = {None: 0, "relu": 1, "leaky_relu": 2}

# Batches up to this size run Linear as dot products over the weight rows:
# packing the weight for the GEMM would cost more than the product itself.
# So do layers with this many output features, with the roles swapped
# (y.T = weight @ x.T, dot products over the rows of x).
SMALL_BATCH = 4


def _activation(activation):
    try:
        return _ACT[activation]
    except (KeyError, TypeError):
        raise ValueError(f"activation must be None, 'relu' or 'leaky_relu', got {activation!r}") from None


def _strided_ok(a):
    return all(s % a.itemsize == 0 for s in a.strides)


def matmul(a, b):
    """``a @ b`` for 2-D float32/float64 arrays of one dtype (any strides)."""
    a = as_float_array(a, "a", ndim=2, contiguous=False)
    b = as_float_array(b, "b", ndim=2, dtype=a.dtype, contiguous=False)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: a has shape {a.shape} and b has shape {b.shape}; "
                         f"expected b with {a.shape[1]} rows")
    check_index_range("matmul", {"rows of a": a.shape[0], "columns of b": b.shape[1],
                                 "columns of a": a.shape[1]})
    check_size((a.shape[0], b.shape[1]), "matmul output", a.itemsize)
    if not _strided_ok(a):
        a = np.ascontiguousarray(a)
    if not _strided_ok(b):
        b = np.ascontiguousarray(b)
    c = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    return _gemm.gemm(a, b, c, n_threads=n_threads(2 * c.size * a.shape[1]))


_LINEAR_MEMO = Memo()


def linear(x, weight, bias=None, activation=None, negative_slope=0.01):
    """``x @ weight.T + bias`` (then ReLU/LeakyReLU if asked); x (N, in), weight (out, in)."""
    negative_slope = check_float(negative_slope, "negative_slope")
    if (type(x) is np.ndarray and type(weight) is np.ndarray and x.flags.c_contiguous
            and weight.flags.c_contiguous and (bias is None or (type(bias) is np.ndarray
                                                                 and bias.flags.c_contiguous))):
        # a call like an earlier one (same shapes and dtypes, every array contiguous) was checked
        key = (x.shape, x.dtype, weight.shape, weight.dtype,
               None if bias is None else (bias.shape, bias.dtype), activation)
        try:
            act = _LINEAR_MEMO.get(key)
        except TypeError:   # an unhashable activation
            act = None
        if act is not None:
            return _linear(x, weight, bias, act, negative_slope)
        y = _checked_linear(x, weight, bias, activation, negative_slope)
        if type(activation) is str or activation is None:
            _LINEAR_MEMO.put(key, _activation(activation))
        return y
    return _checked_linear(x, weight, bias, activation, negative_slope)


def _checked_linear(x, weight, bias, activation, negative_slope):
    x, weight, bias, act = _linear_args(x, weight, bias, activation)
    return _linear(x, weight, bias, act, negative_slope)


def _linear_args(x, weight, bias, activation):
    """linear's arguments checked: (x, weight, bias, activation code), arrays contiguous."""
    x = as_float_array(x, "x", ndim=2, contiguous=False)
    weight = as_float_array(weight, "weight", ndim=2, dtype=x.dtype, contiguous=False)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"linear: x has {x.shape[1]} features but weight has shape {weight.shape}; "
                         f"expected weight of shape (out_features, {x.shape[1]})")
    act = _activation(activation)
    if bias is not None:
        bias = as_float_array(bias, "bias", ndim=1, dtype=x.dtype)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    check_index_range("linear", {"N": x.shape[0], "in_features": x.shape[1], "out_features": weight.shape[0]})
    check_size((x.shape[0], weight.shape[0]), "linear output", x.itemsize)
    return np.ascontiguousarray(x), np.ascontiguousarray(weight), bias, act


def _linear_call(x, weight, bias, activation, negative_slope):
    """linear's work for inputs like x (its shape and dtype, C-contiguous), checked once (a
    layer's repeated inference): a function of the input, or None for arguments that
    linear would first convert."""
    if not kernel_ready(x.dtype, weight, bias):
        return None
    _, weight, bias, act = _linear_args(x, weight, bias, activation)
    shape, dt, slope = (x.shape[0], weight.shape[0]), x.dtype, check_float(negative_slope, "negative_slope")
    nt = n_threads(2 * shape[0] * shape[1] * x.shape[1], grain=200_000)
    if shape[0] <= SMALL_BATCH:
        return lambda x: _gemm.linear_rows(x, weight, bias, np.empty(shape, dtype=dt), act, slope, nt)
    return lambda x: _linear_into(x, weight, bias, np.empty(shape, dtype=dt), act, slope, nt)


def _linear(x, weight, bias, act, negative_slope):
    y = np.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)
    return _linear_into(x, weight, bias, y, act, negative_slope,
                        n_threads(2 * y.size * x.shape[1], grain=200_000))


def _linear_into(x, weight, bias, y, act, negative_slope, nt):
    """y (N, out) = x @ weight.T + bias, activation; all C-contiguous, checked."""
    if x.shape[0] <= SMALL_BATCH:
        return _gemm.linear_rows(x, weight, bias, y, act, float(negative_slope), nt)
    if weight.shape[0] <= SMALL_BATCH:
        yt = (y.reshape(1, y.shape[0]) if y.shape[1] == 1
              else np.empty((y.shape[1], y.shape[0]), dtype=x.dtype))
        _gemm.linear_rows(weight, x, bias, yt, act, float(negative_slope), nt, True)
        if y.shape[1] != 1:
            y[...] = yt.T
        return y
    return _gemm.gemm(x, weight, y, False, True, bias=bias, bias_mode=2, act=act,
                      slope=float(negative_slope), n_threads=nt)


def linear_backward(grad_out, x, weight, need_grad_input=True):
    """Gradients of ``linear``: (grad_x or None, grad_weight, grad_bias)."""
    x = as_float_array(x, "x", ndim=2, contiguous=False)
    weight = as_float_array(weight, "weight", ndim=2, dtype=x.dtype, contiguous=False)
    grad_out = as_float_array(grad_out, "grad_out", ndim=2, dtype=x.dtype, contiguous=False)
    if grad_out.shape != (x.shape[0], weight.shape[0]) or weight.shape[1] != x.shape[1]:
        raise ValueError(f"linear_backward: grad_out must have shape {(x.shape[0], weight.shape[0])} "
                         f"for x {x.shape} and weight {weight.shape}, got {grad_out.shape}")
    check_index_range("linear_backward", {"N": x.shape[0], "in_features": x.shape[1],
                                          "out_features": weight.shape[0], "N*out_features": grad_out.size})
    x, weight, grad_out = (np.ascontiguousarray(a) for a in (x, weight, grad_out))
    # (products this thin are bound by memory traffic, which a second core also shares out)
    nt = n_threads(2 * grad_out.size * x.shape[1], grain=200_000)
    gx = None
    if need_grad_input:
        gx = _gemm.gemm(grad_out, weight, np.empty_like(x), n_threads=nt)
    gw = _gemm.gemm(grad_out, x, np.empty_like(weight), True, False, n_threads=nt)
    gb = _conv.channel_sum(grad_out, np.empty(weight.shape[0], dtype=x.dtype), nt)
    return gx, gw, gb
