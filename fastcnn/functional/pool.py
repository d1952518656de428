"""Pooling and resampling (nearest, linear): checks, allocation, kernel calls.

Inputs are (N, C, H, W) or (C, H, W) arrays, float32 or float64; outputs
have the same number of dimensions. Semantics are PyTorch's (output sizes,
ceil_mode, padding rules, argmax indices as flat positions within each
H x W plane, ``count_include_pad``). ``interpolate`` takes (N, C, L) or
(N, C, H, W) input, as PyTorch's.
"""
import functools
import math

import numpy as np

from .._kernels import _pool
from ._checks import Memo, as_float_array, check_float, check_int, check_size, memo_key, n_threads, pair

__all__ = [
    "max_pool2d", "max_pool2d_backward",
    "avg_pool2d", "avg_pool2d_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
    "upsample_nearest2d", "upsample_nearest2d_backward",
    "interpolate", "interpolate_backward",
    "pool_output_size",
]


# Below this many elements (input plus output) a kernel runs on one thread:
# waking the others costs more than the work.
_SERIAL_BELOW = 1 << 15


# stands in for the indices when they are not wanted (never written)
_NO_INDICES = np.empty((1, 1, 1), dtype=np.int64)


def _threads_for(a, b):
    return 1 if a.size + b.size < _SERIAL_BELOW else n_threads()


def _kernels():
    return _pool


def pool_output_size(size, kernel, stride, padding, dilation=1, ceil_mode=False):
    """PyTorch's pooling output length along one axis."""
    num = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = num // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _planes(x):
    """(N, C, H, W) or (C, H, W) -> a (P, H, W) view."""
    return x.reshape(-1, x.shape[-2], x.shape[-1])


_GEOMETRY_MEMO = Memo()


def _pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, what):
    """((kh, kw, sh, sw, ph, pw, dh, dw), (oh, ow)) of a pooling of x, checked."""
    key = memo_key((kernel_size, stride, padding, dilation))
    if key is not None and type(ceil_mode) is bool:
        key = (x.shape[-2], x.shape[-1], ceil_mode) + key
        hit = _GEOMETRY_MEMO.get(key)
        if hit is None:
            hit = _GEOMETRY_MEMO.put(key, _check_pool_geometry(x, kernel_size, stride, padding, dilation,
                                                               ceil_mode, what))
        return hit
    return _check_pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, what)


def _check_pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, what):
    kh, kw = pair(kernel_size, "kernel_size", 1)
    sh, sw = (kh, kw) if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) \
        else pair(stride, "stride", 1)
    ph, pw = pair(padding, "padding", 0)
    dh, dw = pair(dilation, "dilation", 1)
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise TypeError(f"ceil_mode must be a bool, got {ceil_mode!r}")
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"padding must be at most half of kernel_size, got padding=({ph}, {pw}) "
                         f"for kernel_size=({kh}, {kw})")
    H, W = x.shape[-2], x.shape[-1]
    oh = pool_output_size(H, kh, sh, ph, dh, ceil_mode)
    ow = pool_output_size(W, kw, sw, pw, dw, ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"{what}: kernel_size=({kh}, {kw}) with dilation=({dh}, {dw}) is bigger than the "
                         f"padded input {H + 2 * ph}x{W + 2 * pw} (input shape {x.shape}); "
                         f"output would be {oh}x{ow}")
    return (kh, kw, sh, sw, ph, pw, dh, dw), (oh, ow)


def _check_input(x, name="x"):
    x = as_float_array(x, name, ndim=(3, 4))
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{name} must have non-empty spatial dimensions, got shape {x.shape}")
    return x


def _check_input_shape(input_shape, grad_out, name="input_shape"):
    try:
        shape = tuple(check_int(s, name, 0) for s in input_shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of ints, got {input_shape!r}") from None
    if len(shape) != grad_out.ndim or shape[:-2] != grad_out.shape[:-2]:
        raise ValueError(f"{name} {shape} does not match grad_out of shape {grad_out.shape} "
                         f"(same number of dimensions and leading sizes expected)")
    if shape[-1] == 0 or shape[-2] == 0:
        raise ValueError(f"{name} must have non-empty spatial dimensions, got {shape}")
    return shape


# ---------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------

def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling; padding counts as -inf.

    Returns ``y``, or ``(y, indices)`` with int64 argmax indices (flat positions
    within each input H x W plane, as PyTorch) when ``return_indices``.
    """
    x = _check_input(x)
    geo, (oh, ow) = _pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    out_shape = check_size(x.shape[:-2] + (oh, ow), "max_pool2d output")
    y = np.empty(out_shape, dtype=x.dtype)
    if return_indices:
        idx = np.empty(out_shape, dtype=np.int64)
        idx3 = _planes(idx)
    else:
        idx = None
        idx3 = _NO_INDICES
    _kernels().max_pool2d_forward(_planes(x), _planes(y), idx3, bool(return_indices),
                                  *geo, _threads_for(x, y))
    return (y, idx) if return_indices else y


def max_pool2d_backward(grad_out, indices, input_shape):
    """Gradient of max pooling with respect to its input, from the argmax ``indices``."""
    g = as_float_array(grad_out, "grad_out", ndim=(3, 4))
    if not isinstance(indices, np.ndarray):
        raise TypeError(f"indices must be a numpy array of int64, got {type(indices).__name__}")
    if indices.shape != g.shape:
        raise ValueError(f"indices must have the shape of grad_out {g.shape}, got {indices.shape}")
    if indices.dtype != np.int64:
        if indices.dtype.kind not in "iu":
            raise TypeError(f"indices must have an integer dtype (int64), got {indices.dtype}")
        indices = indices.astype(np.int64)
    indices = np.ascontiguousarray(indices)
    shape = _check_input_shape(input_shape, g)
    gx = np.empty(shape, dtype=g.dtype)
    _kernels().max_pool2d_backward(_planes(g), _planes(indices),
                                   _planes(gx), True, _threads_for(g, gx))
    return gx


def _padding_only_windows(x, kernel_size, stride, padding, dilation, ceil_mode):
    """(rows, columns) of the outputs of max_pool2d(x, ...) whose window holds padding
    only (-inf, and an index that is not one of its inputs: the pooling's gradient
    reaches no input from them), or None where there are none. Only a dilated,
    padded window can skip every input."""
    (kh, kw, sh, sw, ph, pw, dh, dw), (oh, ow) = _pool_geometry(x, kernel_size, stride, padding, dilation,
                                                                  ceil_mode, "max_pool2d")
    if (ph == 0 or dh == 1) and (pw == 0 or dw == 1):
        return None
    rows = _outside_windows(x.shape[-2], kh, sh, ph, dh, oh)
    cols = _outside_windows(x.shape[-1], kw, sw, pw, dw, ow)
    return (list(rows), list(cols)) if rows or cols else None


@functools.lru_cache(maxsize=256)
def _outside_windows(n, k, s, p, d, o):
    """The outputs 0 .. o-1 along one axis of n inputs whose window (k taps, stride s,
    padding p, dilation d) reaches none of them."""
    if p == 0 or d == 1:
        return ()
    return tuple(q for q in range(o) if all(not 0 <= q * s - p + i * d < n for i in range(k)))


def _max_pool2d_2x2(x, n_threads=None):
    """2x2 / stride 2 max pooling (floor mode) of a checked x, with the argmax of
    each window kept as a uint8 code (its place in the window) for
    :func:`_max_pool2d_2x2_backward`: an eighth of the memory traffic of int64
    indices."""
    out_shape = x.shape[:-2] + (x.shape[-2] // 2, x.shape[-1] // 2)
    y = np.empty(out_shape, dtype=x.dtype)
    code = np.empty(out_shape, dtype=np.uint8)
    _kernels().max_pool2d_2x2_codes(_planes(x), _planes(y), _planes(code),
                                    _threads_for(x, y) if n_threads is None else n_threads)
    return y, code


def _max_pool2d_2x2_backward(grad_out, code, input_shape, n_threads=None):
    """Gradient of :func:`_max_pool2d_2x2` wrt its input (grad_out checked against the codes)."""
    g = as_float_array(grad_out, "grad_out", ndim=(3, 4))
    if g.shape != code.shape:
        raise ValueError(f"grad_out must have the shape of the pooling output {code.shape}, got {g.shape}")
    gx = np.empty(input_shape, dtype=g.dtype)
    _kernels().max_pool2d_2x2_code_backward(_planes(g), _planes(code), _planes(gx),
                                            _threads_for(g, gx) if n_threads is None else n_threads)
    return gx


# ---------------------------------------------------------------------------
# average pooling
# ---------------------------------------------------------------------------

def _avg_geometry(x_shape_like, kernel_size, stride, padding, ceil_mode, count_include_pad, what):
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(f"count_include_pad must be a bool, got {count_include_pad!r}")
    geo, out = _pool_geometry(x_shape_like, kernel_size, stride, padding, 1, ceil_mode, what)
    return geo[:6], out


def _divisor(divisor_override):
    """divisor_override as the kernels take it: 0 for none."""
    if divisor_override is None:
        return 0
    d = check_int(divisor_override, "divisor_override")
    if d == 0:
        raise ValueError("divisor_override must not be 0")
    return d


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """2-D average pooling (PyTorch's divisor rules for padding and ceil_mode; every window's
    sum divided by ``divisor_override`` instead where it is given)."""
    div = _divisor(divisor_override)
    x = _check_input(x)
    geo, (oh, ow) = _avg_geometry(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                  "avg_pool2d")
    y = np.empty(check_size(x.shape[:-2] + (oh, ow), "avg_pool2d output"), dtype=x.dtype)
    _kernels().avg_pool2d_forward(_planes(x), _planes(y), *geo, bool(count_include_pad), div,
                                  _threads_for(x, y))
    return y


class _Shape:
    """Stands in for an array when only the shape matters to the geometry checks."""

    def __init__(self, shape):
        self.shape = tuple(shape)


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Gradient of ``avg_pool2d`` with respect to its input."""
    div = _divisor(divisor_override)
    g = as_float_array(grad_out, "grad_out", ndim=(3, 4))
    shape = _check_input_shape(input_shape, g)
    geo, out = _avg_geometry(_Shape(shape), kernel_size, stride, padding, ceil_mode,
                             count_include_pad, "avg_pool2d_backward")
    if tuple(g.shape[-2:]) != out:
        raise ValueError(f"grad_out must have spatial size {out} for input_shape {shape}, "
                         f"got shape {g.shape}")
    gx = np.empty(shape, dtype=g.dtype)
    _kernels().avg_pool2d_backward(_planes(g), _planes(gx), *geo,
                                   bool(count_include_pad), div, _threads_for(g, gx))
    return gx


# ---------------------------------------------------------------------------
# adaptive average pooling
# ---------------------------------------------------------------------------

def _adaptive_size(output_size, hw):
    """output_size as a pair, None in a pair standing for the input's size there."""
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2 and None in output_size:
        output_size = tuple(n if v is None else v for v, n in zip(output_size, hw))
    return pair(output_size, "output_size", 1)


def adaptive_avg_pool2d(x, output_size=1):
    """Adaptive average pooling to ``output_size`` (int or pair, None in a pair keeping the
    input's size there); 1 is global average pooling.

    Window of output o along an axis of length n: [floor(o n / out), ceil((o+1) n / out)).
    """
    x = _check_input(x)
    oh, ow = _adaptive_size(output_size, x.shape[-2:])
    y = np.empty(check_size(x.shape[:-2] + (oh, ow), "adaptive_avg_pool2d output"), dtype=x.dtype)
    _kernels().adaptive_avg_pool2d_forward(_planes(x), _planes(y), _threads_for(x, y))
    return y


def adaptive_avg_pool2d_backward(grad_out, input_shape):
    """Gradient of ``adaptive_avg_pool2d``; the output size is grad_out's spatial size."""
    g = as_float_array(grad_out, "grad_out", ndim=(3, 4))
    shape = _check_input_shape(input_shape, g)
    if g.shape[-1] == 0 or g.shape[-2] == 0:
        raise ValueError(f"grad_out must have non-empty spatial dimensions, got shape {g.shape}")
    gx = np.empty(shape, dtype=g.dtype)
    _kernels().adaptive_avg_pool2d_backward(_planes(g), _planes(gx), _threads_for(g, gx))
    return gx


# ---------------------------------------------------------------------------
# nearest upsampling
# ---------------------------------------------------------------------------

def _scale_pair(scale_factor):
    """Integer scale factors; floats with integral values (2.0) are accepted as well."""
    def integral(v):
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return int(v)
        return v
    if isinstance(scale_factor, (tuple, list)):
        scale_factor = tuple(integral(v) for v in scale_factor)
    else:
        scale_factor = integral(scale_factor)
    return pair(scale_factor, "scale_factor", 1)


def upsample_nearest2d(x, scale_factor):
    """Nearest-neighbour upsampling by integer factors (int or (sh, sw))."""
    x = _check_input(x)
    sh, sw = _scale_pair(scale_factor)
    y = np.empty(check_size(x.shape[:-2] + (x.shape[-2] * sh, x.shape[-1] * sw),
                            "upsample_nearest2d output"), dtype=x.dtype)
    _kernels().upsample_nearest2d_forward(_planes(x), _planes(y), sh, sw, _threads_for(x, y))
    return y


def upsample_nearest2d_backward(grad_out, scale_factor):
    """Gradient of ``upsample_nearest2d``: sums each sh x sw block of grad_out."""
    g = as_float_array(grad_out, "grad_out", ndim=(3, 4))
    sh, sw = _scale_pair(scale_factor)
    if g.shape[-2] % sh or g.shape[-1] % sw or g.shape[-1] == 0 or g.shape[-2] == 0:
        raise ValueError(f"grad_out spatial size {g.shape[-2:]} must be a non-zero multiple of "
                         f"scale_factor ({sh}, {sw})")
    gx = np.empty(g.shape[:-2] + (g.shape[-2] // sh, g.shape[-1] // sw), dtype=g.dtype)
    _kernels().upsample_nearest2d_backward(_planes(g), _planes(gx), sh, sw,
                                           _threads_for(g, gx))
    return gx


# ---------------------------------------------------------------------------
# resampling to any size (torch.nn.functional.interpolate): nearest and linear modes
# ---------------------------------------------------------------------------

INTERPOLATE_MODES = ("nearest", "nearest-exact", "linear", "bilinear")
_LINEAR_DIMS = {"linear": 1, "bilinear": 2}


def _nearest_index(n_in, n_out, scale, exact, two_d, double):
    """The input position that each of n_out output positions reads along one axis, as
    PyTorch computes it: s = 1 / scale (a scale_factor used as given), else n_in / n_out,
    in the input's precision (float64 where ``double``, else float32); the position i * s
    ('nearest') or (i + 0.5) * s ('nearest-exact') rounded to float32, then floored. In
    'nearest' mode over two spatial dimensions, an axis of the input's size or of twice
    it reads position i or i // 2 whatever the factor."""
    if two_d and not exact and n_out == n_in:
        return np.arange(n_out, dtype=np.intp)
    if two_d and not exact and n_out == 2 * n_in:
        return np.arange(n_out, dtype=np.intp) >> 1
    d = np.arange(n_out)
    if double:
        s = 1.0 / scale if scale is not None else n_in / n_out
    else:
        s = np.float32(1.0 / scale) if scale is not None else np.float32(n_in) / np.float32(n_out)
    if exact:
        pos = (d + 0.5) * float(s)
    else:
        pos = d * s if double else d.astype(np.float32) * s
    src = np.floor(pos.astype(np.float32))
    return np.minimum(src.astype(np.intp), n_in - 1)


def _per_axis(v, dims, name, kind, what):
    """v, a number or a tuple or list of ``dims`` of them, as a tuple of ``dims``."""
    if isinstance(v, (tuple, list)):
        if len(v) != dims:
            raise ValueError(f"{what}: {name} must be {kind} or {dims} of them (one per spatial dimension) "
                             f"for input of {dims} spatial dimension{'s' if dims > 1 else ''}, got {v!r}")
        return tuple(v)
    return (v,) * dims


@functools.lru_cache(maxsize=256)
def _interpolate_plan(spatial, out, scales, mode, double):
    """(the rows' and the columns' index (read-only arrays; (N, C, L) input has one row),
    whole factors or None) of the nearest interpolation of ``spatial`` to ``out`` with
    ``scales`` (None, or one per axis, None where the factor is not used as given), of
    float64 data where ``double``."""
    exact = mode == "nearest-exact"
    scales = scales or (None,) * len(spatial)
    index = tuple(_nearest_index(n, o, v, exact, len(spatial) == 2, double)
                  for n, o, v in zip(spatial, out, scales))
    for a in index:
        _read_only(a)
    # whole factors where every axis reads as upsample_nearest2d does (its kernel copies rows)
    whole = tuple(o // n for n, o in zip(spatial, out))
    if any(f < 1 or o != n * f or not np.array_equal(a, np.arange(o) // f)
           for n, o, f, a in zip(spatial, out, whole, index)):
        whole = None
    if len(spatial) == 1:   # (N, C, L) input: planes of one row
        index = (_read_only(np.zeros(1, np.intp)),) + index
    return index, whole


def _linear_weights(n_in, n_out, scale, align_corners, dtype):
    """(i0, i1, w0, w1) of linear resampling along one axis, as PyTorch computes them in
    the data's precision: output position i reads inputs i0[i], i1[i] with weights w0[i],
    w1[i]; the source position is r * i (align_corners) or max(r * (i + 0.5) - 0.5, 0), r
    = (n_in - 1) / (n_out - 1) or 1 / scale or n_in / n_out; i0 = its floor (after
    rounding to float32), i1 = i0 + 1 but for the last input, w1 = position - i0 clipped
    to [0, 1], w0 = 1 - w1. An axis of the input's size is copied."""
    if n_out == n_in:
        i = np.arange(n_out, dtype=np.intp)
        return i, i.copy(), np.ones(n_out, dtype), np.zeros(n_out, dtype)
    f = np.dtype(dtype).type
    d = np.arange(n_out)
    if align_corners:
        r = f(n_in - 1) / f(n_out - 1) if n_out > 1 else f(0)
        pos = r * d.astype(dtype)
    else:
        r = f(1.0 / scale) if scale is not None else f(n_in) / f(n_out)
        # r * (i + 0.5) - 0.5 as one fused multiply-add (one rounding), as PyTorch's kernel
        # computes it: exact in float64 for float32 operands, then rounded once
        pos = (float(r) * (d + 0.5) - 0.5).astype(dtype)
        pos = np.maximum(pos, f(0))
    i0 = np.minimum(np.floor(pos.astype(np.float32)).astype(np.intp), n_in - 1)
    w1 = np.clip(pos - i0.astype(dtype), f(0), f(1)).astype(dtype)
    i1 = i0 + (i0 < n_in - 1)
    return i0, i1, (f(1) - w1).astype(dtype), w1


@functools.lru_cache(maxsize=256)
def _linear_plan(spatial, out, scales, align_corners, double):
    """(i0, i1, w0, w1) of the rows, then of the columns (read-only arrays, see
    _linear_weights); (N, C, L) input has one row, read with weight 1."""
    dtype = np.float64 if double else np.float32
    scales = scales or (None,) * len(spatial)
    plan = tuple(_linear_weights(n, o, v, align_corners, dtype) for n, o, v in zip(spatial, out, scales))
    if len(spatial) == 1:
        plan = (_linear_weights(1, 1, None, False, dtype),) + plan
    return tuple(_read_only(a) for axis in plan for a in axis)


def _read_only(a):
    a.setflags(write=False)
    return a


def check_interpolate_options(mode, align_corners, size, scale_factor, what="interpolate"):
    """The mode, align_corners (linear modes: a bool or None; else None) and that exactly
    one of size and scale_factor is given, checked."""
    if not isinstance(mode, str) or mode not in INTERPOLATE_MODES:
        raise ValueError(f"{what}: mode must be one of {INTERPOLATE_MODES}, got {mode!r}")
    if mode in _LINEAR_DIMS:
        if align_corners is not None and not isinstance(align_corners, (bool, np.bool_)):
            raise TypeError(f"{what}: align_corners must be a bool or None, got {align_corners!r}")
    elif align_corners is not None:
        raise ValueError(f"{what}: align_corners is only valid for linear modes (must be None)")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{what}: give exactly one of size and scale_factor")


def check_scale(v, scale_factor, what="interpolate"):
    """One factor ``v`` of ``scale_factor``, a positive finite number, as a float."""
    v = check_float(v, "scale_factor")
    if not 0 < v < math.inf:
        raise ValueError(f"{what}: scale_factor must be positive and finite, got {scale_factor!r}")
    return v


def _interpolate_args(x_ndim, spatial, dtype, size, scale_factor, mode, align_corners, recompute_scale_factor,
                      what="interpolate"):
    """(output spatial size, the kernel's maps (rows then columns: see _interpolate_plan and
    _linear_plan), whole factors or None) of an interpolation, its arguments checked
    (``what`` names the caller in messages)."""
    check_interpolate_options(mode, align_corners, size, scale_factor, what)
    linear = mode in _LINEAR_DIMS
    if linear and _LINEAR_DIMS[mode] != x_ndim - 2:
        raise ValueError(f"{what}: mode {mode!r} resamples {'(N, C, L)' if mode == 'linear' else '(N, C, H, W)'}"
                         f" input, got {x_ndim}-D input")
    if 0 in spatial:
        raise ValueError(f"{what}: input must have non-empty spatial dimensions, got {spatial}")
    dims = len(spatial)
    scales = None
    if size is not None:
        out = tuple(check_int(v, "size", 1) for v in _per_axis(size, dims, "size", "an int", what))
    else:
        scales = tuple(check_scale(v, scale_factor, what)
                       for v in _per_axis(scale_factor, dims, "scale_factor", "a number", what))
        out = tuple(int(math.floor(float(n) * v)) for n, v in zip(spatial, scales))
        if min(out) < 1:
            raise ValueError(f"{what}: scale_factor {scale_factor!r} makes an empty output {out} of input "
                             f"spatial size {spatial}")
        if recompute_scale_factor:
            scales = None
    check_size(out, f"{what} output")
    if linear:
        return out, _linear_plan(tuple(spatial), out, scales, bool(align_corners), dtype == np.float64), None
    return (out,) + _interpolate_plan(tuple(spatial), out, scales, mode, dtype == np.float64)


def _as_2d(a, dims):
    """(P, H, W) planes of a: (N, C, L) counts as (N*C, 1, L)."""
    return a.reshape(-1, 1, a.shape[-1]) if dims == 1 else _planes(a)


def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None,
                antialias=False):
    """Resampling as ``torch.nn.functional.interpolate``: of the last dimension of (N, C, L)
    input, of the last two of (N, C, H, W) input, to ``size`` or by ``scale_factor`` (a
    number, or one per spatial dimension; any positive size or factor, fractions and
    factors below one too). Along an axis of n inputs the output has ``size`` positions,
    or floor(n * scale_factor).

    Modes 'nearest' and 'nearest-exact': output position i reads input
    min(floor(i * s), n - 1) ('nearest') or min(floor((i + 0.5) * s), n - 1)
    ('nearest-exact'), with s = 1 / scale_factor, or n / output size where ``size`` is
    given or ``recompute_scale_factor`` is true (rounded as PyTorch rounds it).

    Modes 'linear' ((N, C, L) input) and 'bilinear' ((N, C, H, W) input): each output
    position mixes its two nearest inputs along each axis, at the source position s * i
    where ``align_corners`` (s = (n - 1) / (output size - 1)), else
    max(s * (i + 0.5) - 0.5, 0) with s as above. ``antialias``: False only (PyTorch's
    antialiased downsampling is not provided).
    """
    _check_antialias(antialias)
    x = as_float_array(x, "x", ndim=(3, 4))
    return _interpolate(x, size, scale_factor, mode, align_corners, recompute_scale_factor, "interpolate")


def _check_antialias(antialias):
    if not isinstance(antialias, (bool, np.bool_)):
        raise TypeError(f"interpolate: antialias must be a bool, got {antialias!r}")
    if antialias:
        raise ValueError("interpolate: antialias=True is not supported (antialias must be False)")


def _interpolate(x, size, scale_factor, mode, align_corners, recompute_scale_factor, what):
    out, maps, whole = _interpolate_args(x.ndim, x.shape[2:], x.dtype, size, scale_factor, mode, align_corners,
                                         recompute_scale_factor, what)
    return _resample(x, check_size(x.shape[:2] + out, f"{what} output"), mode, maps, whole, backward=False)


def interpolate_backward(grad_out, input_shape, size=None, scale_factor=None, mode="nearest", align_corners=None,
                         recompute_scale_factor=None, antialias=False):
    """Gradient of ``interpolate`` of an input of ``input_shape``: each input position sums
    the gradients of the output positions that read it, with their weights (in row-major
    order)."""
    _check_antialias(antialias)
    g = as_float_array(grad_out, "grad_out", ndim=(3, 4))
    try:
        shape = tuple(check_int(v, "input_shape", 0) for v in input_shape)
    except TypeError:
        raise TypeError(f"input_shape must be a tuple of ints, got {input_shape!r}") from None
    if len(shape) != g.ndim or shape[:2] != g.shape[:2]:
        raise ValueError(f"input_shape {shape} does not match grad_out of shape {g.shape} "
                         f"(same number of dimensions and leading sizes expected)")
    return _interpolate_backward(g, shape, size, scale_factor, mode, align_corners, recompute_scale_factor,
                                 "interpolate_backward")


def _interpolate_backward(g, shape, size, scale_factor, mode, align_corners, recompute_scale_factor, what):
    out, maps, whole = _interpolate_args(g.ndim, shape[2:], g.dtype, size, scale_factor, mode, align_corners,
                                         recompute_scale_factor, what)
    if g.shape[2:] != out:
        raise ValueError(f"{what}: grad_out must have shape {shape[:2] + out} (the output for input {shape}), "
                         f"got {g.shape}")
    return _resample(g, shape, mode, maps, whole, backward=True)


def _resample(src, dst_shape, mode, maps, whole, backward):
    """A new array of ``dst_shape``: ``src`` resampled with the maps of _interpolate_args,
    or (``backward``) the gradient src of such a resampling taken back to its input."""
    dims = src.ndim - 2
    if whole is not None:
        up = upsample_nearest2d_backward if backward else upsample_nearest2d
        return up(src[:, :, None, :], (1, whole[0]))[:, :, 0, :] if dims == 1 else up(src, whole)
    k = _kernels()
    if mode in _LINEAR_DIMS:
        kernel, args = (k.linear_backward if backward else k.linear_forward), maps + (dims == 1,)
    else:
        kernel, args = (k.nearest_backward if backward else k.nearest_forward), maps
    dst = np.empty(dst_shape, dtype=src.dtype)
    kernel(_as_2d(src, dims), _as_2d(dst, dims), *args, _threads_for(src, dst))
    return dst
