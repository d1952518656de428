"""Convolution and transposed convolution, forward and backward.

Semantics are PyTorch's (``torch.nn.functional.conv2d`` / ``conv_transpose2d``):
NCHW, weights ``(K, C/groups, R, S)`` and ``(C_in, C_out/groups, R, S)``.
Transposed convolution runs the convolution kernels with roles swapped: its
forward is convolution's backward-data, its backward-data is convolution's
forward and its weight gradient is convolution's weight gradient with input
and output gradient exchanged.
"""
import threading

import numpy as np

from .._kernels import _conv, _gemm
from .._kernels._pointwise import same_bytes
from .._threads import get_num_threads
from ._checks import (Memo, as_float_array, check_float, check_index_range, check_int, check_size, kernel_ready,
                      memo_key, n_threads, pair)
from .linalg import _activation, _linear_into

__all__ = ["conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward", "WeightCache",
           "InputCache",
           "conv2d_output_size", "conv_transpose2d_output_size"]


def _flops(out_size, weight):
    """Multiply-adds x 2 of a convolution with ``out_size`` outputs (for a transposed
    convolution: its input's size) and ``weight``."""
    return 2 * out_size * weight[0].size


# ---------------------------------------------------------------------------
# the three kernels, each choosing its formulation by shape
#
# 3x3 stride-1 convolutions run as Winograd F(4x4, 3x3) (forward and both
# gradients), and 4x4 stride-2 ones as F(4x4, 2x2) or F(7x7, 2x2) over the
# image phases, where channels and tiles suffice. Otherwise the weight
# gradient runs pixel-major, and so does the forward where the channel counts
# suit it: the kernels read the patches of any stride in place. Otherwise, and for the
# input gradient, strided convolutions whose kernel is a multiple of the
# stride are rewritten as stride-1 convolutions over the stride x stride
# phases of the image (space-to-depth): no FLOP is wasted and the stride-1
# kernels read patches in place. Stride-1 input gradients are a stride-1
# convolution with the flipped, transposed kernel.

def _phased(weight, stride, dilation, groups=1, direct=False):
    """Whether to run over image phases; ``direct``: a forward, which runs without
    them where it runs pixel-major, and with one input channel and at least 16
    outputs (its products then read the strided patches in place, storing whole
    rows, where the phases' products of a few taps would store each tile in runs
    of the phase image's width)."""
    K, Cg, R, S = weight.shape
    if direct and (_conv.pixel_major(Cg, K // groups, R, S) or (Cg == 1 and K // groups >= 16)):
        return False
    return (stride != (1, 1) and dilation == (1, 1)
            and R % stride[0] == 0 and S % stride[1] == 0)


def _phase_shape_of(weight, stride, flip_transpose=False):
    """The shape of _phase_weight(weight, stride, flip_transpose)."""
    K, Cg, R, S = weight.shape
    sh, sw = stride
    c = Cg * sh * sw
    return (c, K, R // sh, S // sw) if flip_transpose else (K, c, R // sh, S // sw)


def _phase_weight(weight, stride, flip_transpose=False, phase_major=False):
    """(K, Cg, R, S) -> (K, Cg*sh*sw, R/sh, S/sw): w'[k, c', i, j] = w[k, c, i*sh+a, j*sw+b]
    for the phase channel c' of (c, a, b) (of (a, b, c) if ``phase_major``, as the
    Winograd kernels read phases); ``flip_transpose``: (Cg*sh*sw, K, R/sh, S/sw), each
    kernel flipped (the input gradient's)."""
    out = np.empty(_phase_shape_of(weight, stride, flip_transpose), dtype=weight.dtype)
    return _conv.phase_weight(np.ascontiguousarray(weight), out, stride, flip_transpose, phase_major,
                              n_threads=n_threads(weight.size, 32768))


def _unphase_weight(wph, out, stride, phase_major=False):
    """The inverse of _phase_weight, written into ``out`` (K, Cg, R, S)."""
    return _conv.phase_weight(wph, out, stride, phase_major=phase_major, inverse=True,
                              n_threads=n_threads(out.size, 32768))


def _phase_shape(out_hw, weight, stride):
    R, S = weight.shape[2:]
    return out_hw[0] + R // stride[0] - 1, out_hw[1] + S // stride[1] - 1


def _phase_image(x, stride, pad, hs_ws, nt):
    """x (N, C, H, W) -> (N, C*sh*sw, Hs, Ws): the phases of x zero-padded by ``pad``."""
    out = np.empty((x.shape[0], x.shape[1] * stride[0] * stride[1]) + tuple(hs_ws), dtype=x.dtype)
    return _conv.to_phases(x, out, stride, pad, nt)


def _unphase_image(xph, out, stride, pad, nt):
    """Inverse of _phase_image: out (N, C, H, W) = the un-padded image of the phases."""
    return _conv.from_phases(xph, out, stride, pad, nt)


# Tiles from which Winograd pays off: with the weights transformed at every
# call; with them kept between calls by a layer (WeightCache); for a weight
# gradient or a strided convolution over its image phases.
_WINO_TILES, _WINO_TILES_KEPT, _WINO_TILES_OTHER = 32, 16, 64


def _winograd(n, weight, groups, stride, dilation, out_hw, min_tiles=_WINO_TILES):
    K, Cg, R, S = weight.shape
    return _conv.winograd(n, Cg, K // groups, R, S, stride, dilation, groups, out_hw[0], out_hw[1],
                          min_tiles)


_STAND_INS = {}


def _stand_in(shape, dtype):
    """What a kernel is passed in place of a kernel whose transform is kept: a read-only
    array of its shape (the kernel reads only the shape) with no memory of its own."""
    key = (shape, dtype)
    a = _STAND_INS.get(key)
    if a is None:
        a = np.lib.stride_tricks.as_strided(np.empty(1, dtype=dtype), shape, (0,) * len(shape),
                                            writeable=False)
        if len(_STAND_INS) < 256:
            _STAND_INS[key] = a
    return a


class WeightCache:
    """The Winograd-transformed weights of a convolution, kept by a layer between
    calls.

    They are reused while the layer passes the same weight array holding the
    same values (compared with a copy, so in-place edits are seen) and the
    instruction set has not changed. A buffer is published only once filled
    and never written again, so threads may share a cache.

    ``kept``: the weights stay the same over many calls (inference), so that
    Winograd repays its transform at fewer tiles. With ``kept=False`` the cache
    only saves the transform between calls whose weights have not changed in
    between (in training, a discriminator's passes over real and generated
    images), and holds at most 16 MiB: a larger transform is made every call.
    """
    __slots__ = ("_state", "kept")
    _TRANSIENT_BYTES = 16 << 20

    def __init__(self, kept=True):
        self._state = None   # (weight, key, copy of its values, packed, stand-in kernel)
        self.kept = bool(kept)

    def __reduce__(self):
        # a copy (copy.deepcopy, pickle) starts empty: a buffer belongs to one weight
        # array and to aligned memory that a copy of it would not keep
        return (WeightCache, (self.kept,))

    @staticmethod
    def _key(weight, m, shape, role):
        return (weight.shape, weight.dtype, _conv.isa_id(), m, shape, role)

    def _hit(self, weight, m, shape, role="weight"):
        """The state holding the transform of ``weight`` (see lookup), or None."""
        st = self._state
        if (st is not None and st[0] is weight and st[1] == self._key(weight, m, shape, role)
                and same_bytes(weight, st[2])):
            return st
        return None

    def lookup(self, weight, m=4, shape=None, role="weight"):
        """(packed, ready): the buffer for the transform F(m x m, r x r) of ``weight``,
        or of the kernel of ``shape`` (K, C, r, r) made from it as ``role`` names
        ("weight": the weight itself; "flip": flipped and transposed, the input
        gradient's; "phases", "phases_flip": over the phases of a stride), and
        whether it holds it; (None, False) where a cache that is not ``kept`` would
        exceed its size."""
        if type(weight) is not np.ndarray or weight.ndim != 4 or weight.dtype not in (np.float32, np.float64):
            raise TypeError("WeightCache.lookup: weight must be a 4-D float32 or float64 numpy array, "
                            f"got {type(weight).__name__}")
        shape = weight.shape if shape is None else tuple(shape)
        st = self._hit(weight, m, shape, role)
        if st is not None:
            return st[3], True
        K, C, r = shape[0], shape[1], shape[2]
        if not self.kept and _conv.winograd_packed_nbytes(r, C, K, weight.dtype, m) > self._TRANSIENT_BYTES:
            self._state = None
            return None, False
        return _conv.winograd_packed(r, C, K, weight.dtype, m), False

    def commit(self, weight, snapshot, packed, m=4, shape=None, role="weight"):
        """Publish ``packed``, filled from ``weight`` whose values were ``snapshot``."""
        shape = weight.shape if shape is None else tuple(shape)
        self._state = (weight, self._key(weight, m, shape, role), snapshot, packed, _stand_in(shape, weight.dtype))


class InputCache:
    """A convolution's input as its weight gradient reads it, made by the forward and
    kept for the backward of the same input (a layer in training).

    Where the forward and the weight gradient run as Winograd (a 3x3 convolution of
    stride 1, or over the image's phases: a 4x4 convolution of stride 2), the
    forward's channels-last copy of the (padded) image or of its phases is kept, and
    the weight gradient of the same input array reads it instead of making it again:
    the values x held at the forward. The buffer is kept between calls with inputs
    of one shape.
    """
    __slots__ = ("_state",)

    def __init__(self):
        self._state = None   # (x, key, buffer, filled)

    def __reduce__(self):
        # a copy (copy.deepcopy, pickle) starts empty: the copy belongs to one input array
        return (InputCache, ())

    def _buffer(self, x, key, n):
        """The buffer of n elements for the copy of x under ``key``, marked unfilled."""
        st = self._state
        buf = st[2] if st is not None and st[2].size == n and st[2].dtype == x.dtype else None
        if buf is None:
            buf = _conv.aligned_empty(n, x.dtype)
        self._state = (x, key, buf, False)
        return buf

    def _filled(self, x, key):
        st = self._state
        if st is not None and st[0] is x and st[1] == key:
            self._state = st[:3] + (True,)

    def _copy_of(self, x, key):
        """The kept copy of x under ``key``, or None."""
        st = self._state
        return st[2] if st is not None and st[3] and st[0] is x and st[1] == key else None


def _phase_copy_key(x, weight_shape, stride, pad, m):
    return (x.shape, x.dtype, weight_shape, stride, pad, m)


def _kept_winograd(x, weight, kernel, shape, bias, y, pad, act, slope, nt, cache, pooled_from=None,
                   x_phases=None, y_phases=None, x_nhwc=None, codes=None, m=None, role="weight"):
    """conv2d_winograd of x with the kernel ``kernel()`` of ``shape`` (``weight``, or the
    rearrangement of it that ``role`` names: see WeightCache.lookup), its transform
    kept in ``cache`` (or None) for ``weight``;
    conv2d_winograd's pooled_from, x_phases, y_phases, x_nhwc and codes as given; ``m``
    its tile (winograd_tile), where the caller has it."""
    if cache is None:
        return _conv.conv2d_winograd(x, kernel(), bias, y, pad, act, slope, nt, None, False, pooled_from,
                                     x_phases, y_phases, x_nhwc, codes)
    if m is None:
        P, Q = pooled_from if pooled_from is not None else y_phases[4:] if y_phases is not None else y.shape[2:]
        m = _conv.winograd_tile(shape[2], x.shape[0], P, Q, pooled_from is not None)
    st = cache._hit(weight, m, shape, role)
    if st is not None:
        return _conv.conv2d_winograd(x, st[4], bias, y, pad, act, slope, nt, st[3], True, pooled_from,
                                     x_phases, y_phases, x_nhwc, codes)
    packed, ready = cache.lookup(weight, m, shape, role)
    if packed is None or ready:
        return _conv.conv2d_winograd(x, kernel(), bias, y, pad, act, slope, nt, packed, ready, pooled_from,
                                     x_phases, y_phases, x_nhwc, codes)
    snapshot = weight.copy()
    _conv.conv2d_winograd(x, kernel(), bias, y, pad, act, slope, nt, packed, False, pooled_from, x_phases,
                          y_phases, x_nhwc, codes)
    cache.commit(weight, snapshot, packed, m, shape, role)
    return y


def _phase_winograd(n, weight, groups, stride, dilation, out_hw, data=False):
    """Whether a strided convolution runs as F(m x m, 2x2) over its image phases (a 4x4
    kernel of stride 2, say: 2x2 taps a phase); ``data``: its input gradient, whose
    stride-1 problem reads the K channels of the output gradient and writes the
    phases (``out_hw`` then the phase image's size)."""
    K, Cg, R, S = weight.shape
    if stride == (1, 1) or not _phased(weight, stride, dilation):
        return False
    sh, sw = stride
    c_in, c_out = (K, Cg * sh * sw) if data else (Cg * sh * sw, K // groups)
    return _conv.winograd(n, c_in, c_out, R // sh, S // sw, (1, 1), (1, 1), groups,
                          out_hw[0], out_hw[1], _WINO_TILES_OTHER)


def _whole(in_hw, weight, groups, pad, dilation):
    """Whether the kernel covers the (unpadded) input exactly: one output pixel, a
    matrix product over channels and taps (a DCGAN's last convolution, or its
    first transposed one)."""
    return (groups == 1 and pad == (0, 0) and dilation == (1, 1)
            and weight.shape[2] == in_hw[0] and weight.shape[3] == in_hw[1])


def _winograd_forward(x, weight, bias, y, pad, act, slope, nt, cache, pooled_from=None, m=None):
    """The Winograd forward, reading the transformed weights from ``cache`` (or None)
    and filling it; ``m`` its tile, where the caller has it."""
    return _kept_winograd(x, weight, lambda: weight, weight.shape, bias, y, pad, act, slope, nt, cache,
                          pooled_from=pooled_from, m=m)


def _forward(x, weight, bias, y, groups, stride, pad, dilation, act, slope, nt, cache=None, inputs=None):
    """y = conv(x, weight) + bias, activation (y preallocated: N, K, P, Q); ``inputs``: an
    InputCache (or None) that keeps the input's copy for the weight gradient."""
    if _whole(x.shape[2:], weight, groups, pad, dilation):
        N, K = y.shape[0], y.shape[1]
        _linear_into(x.reshape(N, weight[0].size), weight.reshape(K, -1), bias, y.reshape(N, K), act, slope, nt)
        return y
    if _winograd(x.shape[0], weight, groups, stride, dilation, y.shape[2:],
                 _WINO_TILES_KEPT if cache is not None and cache.kept else _WINO_TILES):
        if inputs is None or min(pad) < 0:
            return _winograd_forward(x, weight, bias, y, pad, act, slope, nt, cache)
        return _winograd_keeping(x, weight, lambda: weight, weight.shape, bias, y, (1, 1), pad, act, slope, nt,
                                 cache, inputs)
    K, Cg, R, S = weight.shape
    if (_conv.direct3(Cg, K, R, S, stride, dilation, groups, pad, x.dtype)
            or _conv.direct3(Cg, K, R, S, stride, dilation, groups, pad, x.dtype, one_input=True)):
        return _conv.conv3x3_direct(x, weight, bias, y, pad, act, slope, nt)
    if _phase_winograd(x.shape[0], weight, groups, stride, dilation, y.shape[2:]):
        return _winograd_keeping(x, weight, lambda: _phase_weight(weight, stride, phase_major=True),
                                 _phase_shape_of(weight, stride), bias, y, stride, pad, act, slope, nt, cache,
                                 inputs, role="phases")
    if _phased(weight, stride, dilation, groups, direct=True):
        xph = _phase_image(x, stride, pad, _phase_shape(y.shape[2:], weight, stride), nt)
        _conv.conv2d_forward(xph, _phase_weight(weight, stride), bias, y, groups, (1, 1), (0, 0),
                             (1, 1), act, slope, nt)
    else:
        _conv.conv2d_forward(x, weight, bias, y, groups, stride, pad, dilation, act, slope, nt)
    return y


def _winograd_keeping(x, weight, kernel, shape, bias, y, stride, pad, act, slope, nt, cache, inputs,
                      pooled_from=None, codes=None, role="weight"):
    """The Winograd forward of x over its phases of ``stride`` (1, 1: x itself), padded by
    ``pad``, with the kernel ``kernel()`` of ``shape`` (see _kept_winograd); its
    channels-last copy of the phases kept in ``inputs`` (an InputCache, or None);
    conv2d_winograd's pooled_from and codes as given."""
    nhwc = key = None
    P, Q = pooled_from if pooled_from is not None else y.shape[2:]
    if inputs is not None:
        c, r = shape[1], shape[2]
        m = _conv.winograd_tile(r, x.shape[0], P, Q)
        key = _phase_copy_key(x, weight.shape, stride, pad, m)
        nhwc = inputs._buffer(x, key, _conv.winograd_nhwc_size(r, x.shape[0], c, P, Q, m))
    _kept_winograd(x, weight, kernel, shape, bias, y, (0, 0), act, slope, nt, cache, pooled_from=pooled_from,
                   x_phases=stride + pad, x_nhwc=nhwc, codes=codes, role=role)
    if inputs is not None:
        inputs._filled(x, key)
    return y


class _GradCopy:
    """The channels-last copy of a 3x3 convolution's output gradient that the Winograd
    forward of its input gradient makes (padding ``pad``), for its Winograd weight
    gradient to read (see _conv.winograd_dy_shared): ``filled`` once made."""
    __slots__ = ("buf", "pad", "filled")
    _kept = threading.local()

    def __init__(self, n, dtype, pad):
        # one buffer a thread, kept between calls (a layer's backward repeats its shapes)
        dt = np.dtype(dtype)
        buf = getattr(_GradCopy._kept, "buf", None)
        if buf is None or buf.nbytes < n * dt.itemsize:
            buf = _conv.aligned_empty(max(n * dt.itemsize, 64), np.uint8)
            if buf.nbytes <= _conv.SCRATCH_KEEP:
                _GradCopy._kept.buf = buf
        self.buf = buf[:n * dt.itemsize].view(dt)
        self.pad = pad
        self.filled = False


def _grad_copy(grad_out, weight, x_shape, groups, stride, pad, dilation):
    """A _GradCopy where the input gradient and the weight gradient of a convolution both run
    as 3x3 Winograd and can share the output gradient's channels-last copy; else None."""
    K, Cg, R, S = weight.shape
    N, P, Q = grad_out.shape[0], grad_out.shape[2], grad_out.shape[3]
    if (R, S) != (3, 3) or not (0 <= pad[0] <= 2 and 0 <= pad[1] <= 2):
        return None
    fpad = (2 - pad[0], 2 - pad[1])
    if (not _winograd(N, weight.transpose(1, 0, 2, 3), groups, stride, dilation, x_shape[2:])
            or not _winograd(N, weight, groups, stride, dilation, (P, Q), _WINO_TILES_OTHER)
            or not _conv.winograd_dy_shared(R, N, P, Q, fpad[0], fpad[1])):
        return None
    m = _conv.winograd_tile(R, N, x_shape[2], x_shape[3])
    return _GradCopy(_conv.winograd_nhwc_size(R, N, K, x_shape[2], x_shape[3], m), grad_out.dtype, fpad)


def _backward_data(grad_out, weight, out, groups, stride, pad, dilation, nt, bias=None, cache=None,
                   grad_copy=None):
    """Gradient of a convolution wrt its input, written into ``out`` (N, C, H, W), plus
    ``bias`` (C,) per channel if given (a transposed convolution's forward); ``cache``:
    a WeightCache (or None) for the transformed weights of the Winograd paths;
    ``grad_copy``: a _GradCopy (or None) that the 3x3 Winograd fills."""
    K, Cg, R, S = weight.shape
    if _whole(out.shape[2:], weight, groups, pad, dilation):
        N = out.shape[0]
        _gemm.gemm(grad_out.reshape(N, K), weight.reshape(K, -1), out.reshape(N, out.shape[1] * R * S),
                   bias=None if bias is None else np.repeat(bias, R * S), bias_mode=2, n_threads=nt)
        return out
    if pad[0] <= 2 and pad[1] <= 2 and (R, S) == (3, 3):
        # a 3x3 stride-1 correlation of the output gradient with the flipped, transposed kernel
        fpad = (2 - pad[0], 2 - pad[1])
        wino = _winograd(grad_out.shape[0], weight.transpose(1, 0, 2, 3), groups, stride, dilation,
                         out.shape[2:])
        if wino:
            # with a grad_copy, grad_out is read as one padded phase whose copy goes to it
            shared = grad_copy is not None
            _kept_winograd(grad_out, weight, lambda: _flip_transpose(weight), (Cg, K, R, S), bias, out,
                           (0, 0) if shared else fpad, 0, 0.0, nt, cache,
                           x_phases=(1, 1) + fpad if shared else None, x_nhwc=grad_copy.buf if shared else None,
                           role="flip")
            if shared:
                grad_copy.filled = True
            return out
        if _conv.direct3(K, Cg, R, S, stride, dilation, groups, fpad, out.dtype):
            return _conv.conv3x3_direct(grad_out, _flip_transpose(weight), bias, out, fpad, 0, 0.0, nt)
    phased = _phased(weight, stride, dilation)
    if phased:
        hs_ws = _phase_shape(grad_out.shape[2:], weight, stride)
        sh, sw = stride
        if _phase_winograd(grad_out.shape[0], weight, groups, stride, dilation, hs_ws, data=True):
            # the phases of the gradient are a stride-1 correlation of the output
            # gradient with the flipped phase kernels, stored straight into ``out``;
            # pixels no phase reaches (past the last window) hold 0 (plus the bias)
            if out.shape[2] + pad[0] > sh * hs_ws[0] or out.shape[3] + pad[1] > sw * hs_ws[1]:
                out[...] = 0 if bias is None else bias.reshape(1, -1, 1, 1)
            return _kept_winograd(grad_out, weight, lambda: _phase_weight(weight, stride, True),
                                  _phase_shape_of(weight, stride, True),
                                  None if bias is None else np.repeat(bias, sh * sw), out,
                                  (R // sh - 1, S // sw - 1), 0, 0.0, nt, cache,
                                  y_phases=stride + pad + hs_ws, role="phases_flip")
    if _conv.pixel_major_data(grad_out, weight, out, groups, stride, pad, dilation):
        return _conv.conv2d_backward_data(grad_out, weight, out, groups, stride, pad, dilation, nt, bias)
    if phased:
        wph = _phase_weight(weight, stride)
        gph = np.empty((out.shape[0], wph.shape[1] * groups) + hs_ws, dtype=out.dtype)
        _backward_data(grad_out, wph, gph, groups, (1, 1), (0, 0), (1, 1), nt)
        _unphase_image(gph, out, stride, pad, nt)
        if bias is not None:
            _conv.add_channel_bias(out, bias, nt)
        return out
    top, left = dilation[0] * (R - 1) - pad[0], dilation[1] * (S - 1) - pad[1]
    if stride == (1, 1) and top >= 0 and left >= 0:
        Kg = K // groups
        flipped = np.ascontiguousarray(
            weight.reshape(groups, Kg, Cg, R, S)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
        ).reshape(groups * Cg, Kg, R, S)
        return _conv.conv2d_forward(grad_out, flipped, bias, out, groups, (1, 1), (top, left), dilation,
                                    0, 0.0, nt)
    return _conv.conv2d_backward_data(grad_out, weight, out, groups, stride, pad, dilation, nt, bias)


def _flip_transpose(weight):
    """(K, C, R, S) -> (C, K, R, S), each kernel flipped: the input gradient's."""
    return np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


def _backward_weight(x, grad_out, gw, groups, stride, pad, dilation, nt, gb=None, inputs=None, grad_copy=None):
    """Gradient of a convolution wrt its weight, written into ``gw`` (Winograd for 3x3 stride 1,
    the direct kernel for one input channel, else pixel-major, any stride). Where a kernel
    also sums the bias gradient into ``gb`` (if given), returns True. ``inputs``: an
    InputCache (or None) whose copy of x, if the forward of x kept one, is read;
    ``grad_copy``: a _GradCopy (or None) of grad_out, read by the Winograd if filled."""
    n = x.shape[0]
    K, Cg, R, S = gw.shape
    if n and _whole(x.shape[2:], gw, groups, pad, dilation):
        _gemm.gemm(grad_out.reshape(n, K), x.reshape(n, -1), gw.reshape(K, -1), True, False, n_threads=nt)
        return False
    if n and _conv.direct3(Cg, K, R, S, stride, dilation, groups, pad, gw.dtype, one_input=True):
        _conv.conv3x3_direct_backward_weight(x, grad_out, gw, gb, pad, nt)
        return gb is not None
    if n and _winograd(n, gw, groups, stride, dilation, grad_out.shape[2:], _WINO_TILES_OTHER):
        nhwc = None
        if inputs is not None and min(pad) >= 0:
            m = _conv.winograd_tile(R, n, grad_out.shape[2], grad_out.shape[3])
            nhwc = inputs._copy_of(x, _phase_copy_key(x, gw.shape, (1, 1), pad, m))
        dyc, dyp = (grad_copy.buf, grad_copy.pad) if grad_copy is not None and grad_copy.filled else (None, None)
        # with the forward's copy, x is read as one padded phase
        kept = nhwc is not None
        _conv.conv2d_winograd_backward_weight(x, grad_out, gw, (0, 0) if kept else pad, nt,
                                              (1, 1) + pad if kept else None, nhwc, gb, dyc, dyp)
        return gb is not None
    if n and _phase_winograd(n, gw, groups, stride, dilation, grad_out.shape[2:]):
        gph = np.empty(_phase_shape_of(gw, stride), dtype=gw.dtype)
        nhwc = None
        if inputs is not None:
            m = _conv.winograd_tile(gph.shape[2], n, grad_out.shape[2], grad_out.shape[3])
            nhwc = inputs._copy_of(x, _phase_copy_key(x, gw.shape, stride, pad, m))
        _conv.conv2d_winograd_backward_weight(x, grad_out, gph, (0, 0), nt, stride + pad, nhwc, gb)
        _unphase_weight(gph, gw, stride, phase_major=True)
        return gb is not None
    _conv.conv2d_backward_weight(x, grad_out, gw, groups, stride, pad, dilation, nt)
    return False


def _input(x, name):
    """4-D input, or 3-D (C, H, W) treated as a batch of one; returns (x, was_3d).

    ``x`` is not made contiguous here: the sizes are checked first, so that a
    huge strided view is refused before anything is copied.
    """
    x = as_float_array(x, name, ndim=(3, 4), contiguous=False)
    if x.ndim == 3:
        return x[None], True
    return x, False


def _padding(padding, weight_hw, dilation, stride):
    """Returns (left_h, left_w, total_h, total_w)."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions "
                                 f"(stride={stride})")
            th = dilation[0] * (weight_hw[0] - 1)
            tw = dilation[1] * (weight_hw[1] - 1)
            return th // 2, tw // 2, th, tw
        raise ValueError(f"padding must be an int, a pair of ints, 'same' or 'valid', got {padding!r}")
    ph, pw = pair(padding, "padding", minimum=0)
    return ph, pw, 2 * ph, 2 * pw


def conv2d_output_size(hw, kernel_size, stride, total_padding, dilation):
    return tuple((hw[i] + total_padding[i] - dilation[i] * (kernel_size[i] - 1) - 1) // stride[i] + 1
                 for i in range(2))


_ARGS_MEMO = Memo()


def _args_key(x, weight, bias, params):
    if not kernel_ready(x.dtype, weight, bias) or memo_key(params) is None:
        return None
    return (x.shape, x.dtype, weight.shape, None if bias is None else bias.shape) + params


def _conv_args(x, weight, bias, stride, padding, dilation, groups, what="conv2d"):
    key = _args_key(x, weight, bias, (stride, padding, dilation, groups, what))
    hit = None if key is None else _ARGS_MEMO.get(key)
    if hit is not None:
        return (weight, bias) + hit
    out = _check_conv_args(x, weight, bias, stride, padding, dilation, groups, what)
    if key is not None:
        _ARGS_MEMO.put(key, out[2:])
    return out


def _check_conv_args(x, weight, bias, stride, padding, dilation, groups, what):
    weight = as_float_array(weight, "weight", ndim=4, dtype=x.dtype, contiguous=False)
    groups = check_int(groups, "groups", minimum=1)
    stride = pair(stride, "stride", minimum=1)
    dilation = pair(dilation, "dilation", minimum=1)
    N, C, H, W = x.shape
    K, Cg, R, S = weight.shape
    if C % groups:
        raise ValueError(f"{what}: groups={groups} must divide the input channels ({C})")
    if K % groups:
        raise ValueError(f"{what}: groups={groups} must divide the output channels (weight.shape[0]={K})")
    if Cg != C // groups:
        raise ValueError(f"{what}: input has {C} channels, so weight must have shape "
                         f"({K}, {C // groups}, {R}, {S}) for groups={groups}; got {weight.shape}")
    if R < 1 or S < 1:
        raise ValueError(f"{what}: weight kernel size must be at least 1x1, got {weight.shape}")
    if K < 1:
        raise ValueError(f"{what}: weight must have at least one output channel (weight.shape[0] >= 1), "
                         f"got {weight.shape}")
    ph, pw, th, tw = _padding(padding, (R, S), dilation, stride)
    P, Q = conv2d_output_size((H, W), (R, S), stride, (th, tw), dilation)
    if P < 1 or Q < 1:
        raise ValueError(f"{what}: output size ({P}, {Q}) is less than 1: input {H}x{W} with "
                         f"padding ({th}, {tw}) is smaller than the dilated kernel "
                         f"{dilation[0] * (R - 1) + 1}x{dilation[1] * (S - 1) + 1}")
    if bias is not None:
        bias = as_float_array(bias, "bias", ndim=1, dtype=x.dtype)
        if bias.shape[0] != K:
            raise ValueError(f"{what}: bias must have shape ({K},), got {bias.shape}")
    check_index_range(what, {"C*H*W": C * H * W, "K*P*Q": K * P * Q, "(C/groups)*R*S": Cg * R * S,
                             "(C/groups)*R*S*P*Q": Cg * R * S * P * Q, "N*C": N * C, "N*K": N * K,
                             "weight size": K * Cg * R * S})
    check_size((N, K, P, Q), f"{what} output", x.itemsize)
    return np.ascontiguousarray(weight), bias, groups, stride, (ph, pw), dilation, (P, Q)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           activation=None, negative_slope=0.01, weight_cache=None, input_cache=None):
    """2-D convolution of ``x`` (N, C, H, W) with ``weight`` (K, C/groups, R, S).

    ``padding``: int, pair, 'same' or 'valid'. ``activation`` None, 'relu' or
    'leaky_relu' is applied in the GEMM epilogue together with the bias.
    ``weight_cache``: a :class:`WeightCache` kept across calls with the same
    weights, so that transformed weights are reused. ``input_cache``: an
    :class:`InputCache` in which the call keeps what the weight gradient of
    ``conv2d_backward`` with the same ``input_cache`` and x reads of x.
    """
    _check_cache(weight_cache)
    _check_input_cache(input_cache)
    x, unbatched = _input(x, "x")
    weight, bias, groups, stride, pad, dilation, (P, Q) = _conv_args(
        x, weight, bias, stride, padding, dilation, groups)
    x = np.ascontiguousarray(x)
    act = _activation(activation)
    y = np.empty((x.shape[0], weight.shape[0], P, Q), dtype=x.dtype)
    _forward(x, weight, bias, y, groups, stride, pad, dilation, act, check_float(negative_slope, "negative_slope"),
             n_threads(_flops(y.size, weight)), weight_cache, None if unbatched else input_cache)
    return y[0] if unbatched else y


def _check_input_cache(input_cache):
    if input_cache is not None and type(input_cache) is not InputCache:
        raise TypeError(f"input_cache must be an InputCache or None, got {type(input_cache).__name__}")


def _check_cache(weight_cache):
    if weight_cache is not None and type(weight_cache) is not WeightCache:
        raise TypeError(f"weight_cache must be a WeightCache or None, got {type(weight_cache).__name__}")


_POOL2_PLANS = Memo()


def _conv2d_max_pool2(x, weight, bias, stride, padding, dilation, groups, activation=None,
                      negative_slope=0.01, weight_cache=None):
    """``max_pool2d(conv2d(x, ...), 2)`` (arguments as conv2d's) computed by a kernel that
    pools the activated output as it stores it, which is never kept: a 3x3 stride-1
    convolution that runs as Winograd, or with one input channel. None where no kernel
    does, for an unbatched x, and for a weight or bias that conv2d would first convert."""
    call = _pooled_call(x, weight, bias, stride, padding, dilation, groups, activation, negative_slope,
                        weight_cache)
    return None if call is None else call(np.ascontiguousarray(x))


def _pool2_plan_for(x, weight, bias, stride, padding, dilation, groups, activation, weight_cache):
    """_pool2_plan for inputs like x, made once; None for one that is not a 4-D array, or
    arguments conv2d would convert."""
    if type(x) is not np.ndarray or x.ndim != 4:
        return None
    key = _args_key(x, weight, bias, (stride, padding, dilation, groups, activation, _cache_kind(weight_cache),
                                      get_num_threads(), _conv.isa_id(), "pool2"))
    if key is None:
        return None
    plan = _POOL2_PLANS.get(key)
    if plan is None:
        plan = _POOL2_PLANS.put(key, _pool2_plan(x, weight, bias, stride, padding, dilation, groups,
                                                 activation, weight_cache))
    return plan


def _pooled_call(x, weight, bias, stride, padding, dilation, groups, activation, negative_slope, weight_cache):
    """The work of _conv2d_max_pool2 for inputs like x (its shape and dtype, C-contiguous),
    checked and chosen once: a function of the input, or None where no kernel pools."""
    plan = _pool2_plan_for(x, weight, bias, stride, padding, dilation, groups, activation, weight_cache)
    if not plan:
        return None
    wino, out_shape, pad, act, nt, full = plan
    slope, dt = check_float(negative_slope, "negative_slope"), x.dtype
    if wino:
        m = _conv.winograd_tile(3, x.shape[0], full[0], full[1], True)
        return lambda x: _winograd_forward(x, weight, bias, np.empty(out_shape, dtype=dt), pad, act, slope, nt,
                                           weight_cache, full, m)
    return lambda x: _conv.conv3x3_direct(x, weight, bias, np.empty(out_shape, dtype=dt), pad, act, slope, nt,
                                          True)


def _cache_kind(weight_cache):
    """0 without a WeightCache, 1 with a transient one, 2 with a kept one (see _pool2_plan)."""
    return 0 if weight_cache is None else 1 + bool(weight_cache.kept)


def _conv2d_max_pool2_codes(x, weight, bias, stride, padding, dilation, groups, activation, negative_slope,
                            weight_cache, inputs):
    """The activated conv2d of x (C-contiguous, 4-D) 2x2 max pooled, each window's argmax kept
    as max_pool2d_2x2_codes keeps it, in one kernel where one pools: (y, codes, the
    convolution's output shape); else None. ``inputs``: the InputCache of the forward."""
    plan = _pool2_plan_for(x, weight, bias, stride, padding, dilation, groups, activation, weight_cache)
    if not plan or not x.flags.c_contiguous:
        return None
    wino, out_shape, pad, act, nt, full = plan
    slope, dt = check_float(negative_slope, "negative_slope"), x.dtype
    y = np.empty(out_shape, dtype=dt)
    codes = np.empty(out_shape, dtype=np.uint8)
    if wino:
        _winograd_keeping(x, weight, lambda: weight, weight.shape, bias, y, (1, 1), pad, act, slope, nt,
                          weight_cache, inputs if min(pad) >= 0 else None, pooled_from=full, codes=codes)
    else:
        _conv.conv3x3_direct(x, weight, bias, y, pad, act, slope, nt, True, codes)
    return y, codes, out_shape[:2] + full


def _conv_call(x, weight, bias, stride, padding, dilation, groups, activation, negative_slope, weight_cache):
    """conv2d's work for inputs like x (4-D: its shape and dtype, C-contiguous), checked
    and chosen once (a layer's repeated inference): a function of the input, or None
    for arguments that conv2d would first convert."""
    if (type(x) is not np.ndarray or x.ndim != 4
            or _args_key(x, weight, bias, (stride, padding, dilation, groups)) is None):
        return None
    weight, bias, groups, stride, pad, dilation, (P, Q) = _conv_args(
        x, weight, bias, stride, padding, dilation, groups)
    act, slope, dt = _activation(activation), check_float(negative_slope, "negative_slope"), x.dtype
    shape = (x.shape[0], weight.shape[0], P, Q)
    nt = n_threads(_flops(shape[0] * shape[1] * P * Q, weight))
    return lambda x: _forward(x, weight, bias, np.empty(shape, dtype=dt), groups, stride, pad, dilation, act,
                              slope, nt, weight_cache)


def _pool2_plan(x, weight, bias, stride, padding, dilation, groups, activation, weight_cache):
    """(winograd?, output shape, padding, activation code, threads, (P, Q)) for
    _conv2d_max_pool2, or False where no kernel pools."""
    weight, bias, groups, stride, pad, dilation, (P, Q) = _conv_args(
        x, weight, bias, stride, padding, dilation, groups)
    K, Cg, R, S = weight.shape
    if (R, S) != (3, 3) or stride != (1, 1) or dilation != (1, 1) or groups != 1 or P < 2 or Q < 2:
        return False
    N = x.shape[0]
    wino = _winograd(N, weight, groups, stride, dilation, (P, Q),
                     _WINO_TILES_KEPT if weight_cache is not None and weight_cache.kept else _WINO_TILES)
    if not wino and not _conv.direct3(Cg, K, R, S, stride, dilation, groups, pad, x.dtype, one_input=True):
        return False
    flops = _flops(N * K * P * Q, weight)
    # the direct kernel starts no packing: smaller problems repay a second thread
    nt = n_threads(flops) if wino else n_threads(flops, grain=200_000)
    return wino, (N, K, P // 2, Q // 2), pad, _activation(activation), nt, (P, Q)


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1,
                    need_grad_input=True, weight_cache=None, input_cache=None):
    """Gradients of ``conv2d``: (grad_x or None, grad_weight, grad_bias).

    ``weight_cache``: a :class:`WeightCache` for the transformed weights of the
    input gradient (not the forward's: they differ), reused while they stay the same.
    ``input_cache``: the :class:`InputCache` of the forward of this x; what it kept
    of x (the values x held then) is read instead of x where the same kernel runs.
    """
    _check_cache(weight_cache)
    _check_input_cache(input_cache)
    x, unbatched = _input(x, "x")
    weight, _, groups, stride, pad, dilation, (P, Q) = _conv_args(
        x, weight, None, stride, padding, dilation, groups, "conv2d_backward")
    grad_out = as_float_array(grad_out, "grad_out", ndim=(3, 4), dtype=x.dtype, contiguous=False)
    if unbatched and grad_out.ndim == 3:
        grad_out = grad_out[None]
    expected = (x.shape[0], weight.shape[0], P, Q)
    if grad_out.shape != expected:
        raise ValueError(f"conv2d_backward: grad_out must have shape {expected}, got {grad_out.shape}")
    x = np.ascontiguousarray(x)
    grad_out = np.ascontiguousarray(grad_out)
    nt = n_threads(_flops(grad_out.size, weight))
    gx = copy = None
    if need_grad_input:
        copy = _grad_copy(grad_out, weight, x.shape, groups, stride, pad, dilation)
        gx = _backward_data(grad_out, weight, np.empty_like(x), groups, stride, pad, dilation, nt,
                            cache=weight_cache, grad_copy=copy)
        if unbatched:
            gx = gx[0]
    gw = np.empty_like(weight)
    gb = np.empty(weight.shape[0], dtype=x.dtype)
    if not _backward_weight(x, grad_out, gw, groups, stride, pad, dilation, nt, gb,
                            None if unbatched else input_cache, copy):
        _conv.channel_sum(grad_out, gb, nt)
    return gx, gw, gb


def conv_transpose2d_output_size(hw, kernel_size, stride, padding, output_padding, dilation):
    return tuple((hw[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel_size[i] - 1)
                 + output_padding[i] + 1 for i in range(2))


def _convt_args(x, weight, bias, stride, padding, output_padding, groups, dilation,
                what="conv_transpose2d"):
    weight = as_float_array(weight, "weight", ndim=4, dtype=x.dtype, contiguous=False)
    groups = check_int(groups, "groups", minimum=1)
    stride = pair(stride, "stride", minimum=1)
    dilation = pair(dilation, "dilation", minimum=1)
    if isinstance(padding, str):
        raise ValueError(f"{what}: padding must be an int or a pair of ints, got {padding!r}")
    padding = pair(padding, "padding", minimum=0)
    output_padding = pair(output_padding, "output_padding", minimum=0)
    for i in range(2):
        if output_padding[i] >= stride[i] and output_padding[i] >= dilation[i]:
            raise ValueError(f"{what}: output_padding {output_padding} must be smaller than either "
                             f"stride {stride} or dilation {dilation}")
    N, Cin, H, W = x.shape
    if Cin < 1:
        raise ValueError(f"{what}: x must have at least one channel (N, C_in >= 1, H, W), got shape {x.shape}")
    if weight.shape[0] != Cin:
        raise ValueError(f"{what}: input has {Cin} channels, so weight must have shape "
                         f"({Cin}, C_out/groups, R, S); got {weight.shape}")
    if Cin % groups:
        raise ValueError(f"{what}: groups={groups} must divide the input channels ({Cin})")
    R, S = weight.shape[2:]
    if R < 1 or S < 1 or weight.shape[1] < 1:
        raise ValueError(f"{what}: weight must have non-empty output channels and kernel, got {weight.shape}")
    Cout = weight.shape[1] * groups
    Ho, Wo = conv_transpose2d_output_size((H, W), (R, S), stride, padding, output_padding, dilation)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{what}: output size ({Ho}, {Wo}) is less than 1 for input {H}x{W}, "
                         f"kernel {R}x{S}, stride {stride}, padding {padding}")
    if bias is not None:
        bias = as_float_array(bias, "bias", ndim=1, dtype=x.dtype)
        if bias.shape[0] != Cout:
            raise ValueError(f"{what}: bias must have shape ({Cout},), got {bias.shape}")
    # the kernels run the convolution whose input is this output and whose output is x
    Cog = weight.shape[1]
    check_index_range(what, {"C_in*H*W": Cin * H * W, "C_out*H_out*W_out": Cout * Ho * Wo,
                             "(C_out/groups)*R*S": Cog * R * S, "(C_out/groups)*R*S*H*W": Cog * R * S * H * W,
                             "N*C_in": N * Cin, "N*C_out": N * Cout, "weight size": Cin * Cog * R * S})
    check_size((N, Cout, Ho, Wo), f"{what} output", x.itemsize)
    return np.ascontiguousarray(weight), bias, groups, stride, padding, dilation, (N, Cout, Ho, Wo)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, weight_cache=None):
    """Transposed convolution of ``x`` (N, C_in, H, W) with ``weight`` (C_in, C_out/groups, R, S).

    ``weight_cache``: a :class:`WeightCache` for its transformed weights, reused while
    they stay the same.
    """
    _check_cache(weight_cache)
    x, unbatched = _input(x, "x")
    weight, bias, groups, stride, padding, dilation, out_shape = _convt_args(
        x, weight, bias, stride, padding, output_padding, groups, dilation)
    x = np.ascontiguousarray(x)
    nt = n_threads(_flops(x.size, weight))
    y = _backward_data(x, weight, np.empty(out_shape, dtype=x.dtype), groups, stride, padding, dilation, nt,
                       bias, weight_cache)
    return y[0] if unbatched else y


def conv_transpose2d_backward(grad_out, x, weight, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, need_grad_input=True, weight_cache=None):
    """Gradients of ``conv_transpose2d``: (grad_x or None, grad_weight, grad_bias).

    ``weight_cache``: a :class:`WeightCache` for the transformed weights of the input
    gradient (a convolution's forward), reused while they stay the same.
    """
    _check_cache(weight_cache)
    x, unbatched = _input(x, "x")
    weight, _, groups, stride, padding, dilation, out_shape = _convt_args(
        x, weight, None, stride, padding, output_padding, groups, dilation,
        "conv_transpose2d_backward")
    grad_out = as_float_array(grad_out, "grad_out", ndim=(3, 4), dtype=x.dtype, contiguous=False)
    if unbatched and grad_out.ndim == 3:
        grad_out = grad_out[None]
    if grad_out.shape != out_shape:
        raise ValueError(f"conv_transpose2d_backward: grad_out must have shape {out_shape}, "
                         f"got {grad_out.shape}")
    x = np.ascontiguousarray(x)
    grad_out = np.ascontiguousarray(grad_out)
    nt = n_threads(_flops(x.size, weight))
    gx = None
    # the input gradient (a convolution of grad_out) and the weight gradient (one with
    # grad_out as its input) share the channels-last copy of grad_out where both make one
    copy = InputCache()
    if need_grad_input:
        gx = np.empty_like(x)
        _forward(grad_out, weight, None, gx, groups, stride, padding, dilation, 0, 0.0, nt, weight_cache, copy)
        if unbatched:
            gx = gx[0]
    gw = np.empty_like(weight)
    _backward_weight(grad_out, x, gw, groups, stride, padding, dilation, nt, inputs=copy)
    gb = _conv.channel_sum(grad_out, np.empty(out_shape[1], dtype=x.dtype), nt)
    return gx, gw, gb
