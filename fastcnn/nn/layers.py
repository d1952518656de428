"""Layers with PyTorch's names, constructor arguments and defaults.

Each layer is a one-line call into :mod:`fastcnn.functional` in ``forward``
(keeping what ``backward`` needs) and a backward that mirrors it. Argument
checks of the inputs live in ``functional``; the layers check only what
``functional`` cannot know (the channel count the layer was built for).
"""
import math

import numpy as np

from .. import functional as F
from .. import init
from .._random import default_generator, resolve
from ..functional._checks import as_float_array, check_float, check_int, pair
from ..functional.pool import (_interpolate, _interpolate_backward, _max_pool2d_2x2, _max_pool2d_2x2_backward,
                               _padding_only_windows, check_interpolate_options, check_scale)
from ..functional.conv import InputCache, WeightCache
from .module import Module, Parameter, _check_dtype, accumulate

__all__ = [
    "Conv2d", "ConvTranspose2d", "Linear", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
    "BatchNorm1d", "BatchNorm2d", "Dropout", "Flatten", "Unflatten", "Upsample",
    "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "Identity",
]


# -- helpers --------------------------------------------------------------------
def _check_bool(v, name):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {v!r}")
    return bool(v)


def _param_dtype(dtype, device):
    if device not in (None, "cpu"):
        raise ValueError(f"device must be None or 'cpu', got {device!r}")
    return np.dtype(np.float32) if dtype is None else _check_dtype(dtype)


def _cast_input(who, x, dtype):
    """``x`` as an ndarray of ``dtype``; TypeError for non-arrays and non-float dtypes."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{who}: input must be a numpy array, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{who}: input must have a floating dtype, got {x.dtype}")
    return x.astype(dtype)


def _grad_as(g, dtype, shape=None):
    """grad_out as an array of ``dtype``; checked against ``shape``, the layer's output's,
    where given."""
    if shape is not None:
        _grad_shape(g, shape)
    elif not isinstance(g, np.ndarray):
        raise TypeError(f"grad_out must be a numpy array, got {type(g).__name__}")
    return g if g.dtype == dtype else g.astype(dtype)


def _grad_shape(g, shape):
    """grad_out, which must be an array of ``shape``, the shape of the layer's output."""
    if not isinstance(g, np.ndarray):
        raise TypeError(f"grad_out must be a numpy array, got {type(g).__name__}")
    if g.shape != tuple(shape):
        raise ValueError(f"grad_out must have the shape of the layer's output {tuple(shape)}, got {g.shape}")
    return g


def _no_forward(module):
    return RuntimeError(f"{type(module).__name__}.backward() called before forward()")


# Conv2d's padding modes other than 'zeros', as numpy.pad names them
_NP_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _explicit_pads(pad, kernel_size, dilation):
    """(top, bottom, left, right) of a convolution's padding (a pair, or 'same': one more
    after than before where the total is odd)."""
    if isinstance(pad, str):
        totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        return (totals[0] // 2, totals[0] - totals[0] // 2, totals[1] // 2, totals[1] - totals[1] // 2)
    return (pad[0], pad[0], pad[1], pad[1])


def _mode_pad(x, pads, mode, who):
    """x padded on its last two axes by pads (top, bottom, left, right) in a padding mode."""
    t, b, l, r = pads
    for n, lo, hi, axis in ((x.shape[-2], t, b, "height"), (x.shape[-1], l, r, "width")):
        if mode == "reflect" and max(lo, hi) >= n:
            raise ValueError(f"{who}: padding_mode='reflect' needs the padding ({lo}, {hi}) to be less than "
                             f"the input's {axis} {n}")
        if mode == "circular" and max(lo, hi) > n:
            raise ValueError(f"{who}: padding_mode='circular' needs the padding ({lo}, {hi}) to be at most "
                             f"the input's {axis} {n}")
    width = [(0, 0)] * (x.ndim - 2) + [(t, b), (l, r)]
    return np.pad(x, width, mode=_NP_PAD_MODES[mode])


def _mode_pad_backward(gp, pads, mode, hw):
    """The gradient of _mode_pad: each padded row and column's gradient added to the one it
    copies."""
    t, b, l, r = pads
    g = gp
    for axis, lo, hi, n in ((-1, l, r, hw[1]), (-2, t, b, hw[0])):
        src = np.pad(np.arange(n), (lo, hi), mode=_NP_PAD_MODES[mode])
        g = np.moveaxis(g, axis, 0)
        out = g[lo:lo + n].copy()
        for p in list(range(lo)) + list(range(lo + n, lo + n + hi)):
            out[src[p]] += g[p]
        g = np.moveaxis(out, 0, axis)
    return np.ascontiguousarray(g)


def _padding_arg(padding, kernel_size, dilation, stride, who):
    """(value kept for printing, (ph, pw) for the kernels); supports 'valid' and 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return padding, (0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{who}: padding='same' is not supported for strided convolutions")
            totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
            if any(t % 2 for t in totals):
                # an odd total: one more row or column after than before, as PyTorch (the kernels
                # take the split from functional's 'same')
                return padding, padding
            return padding, tuple(t // 2 for t in totals)
        raise ValueError(f"{who}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    p = pair(padding, "padding", 0)
    return p, p


# -- convolutions and linear ----------------------------------------------------
class _ConvNd(Module):
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 groups, bias, padding_mode, output_padding=0, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        self.in_channels = check_int(in_channels, "in_channels", 1)
        self.out_channels = check_int(out_channels, "out_channels", 1)
        self.groups = check_int(groups, "groups", 1)
        if self.in_channels % self.groups:
            raise ValueError(f"{name}: in_channels ({self.in_channels}) must be divisible by groups ({self.groups})")
        if self.out_channels % self.groups:
            raise ValueError(f"{name}: out_channels ({self.out_channels}) must be divisible by groups ({self.groups})")
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        if self._transposed and isinstance(padding, str):
            raise ValueError(f"{name}: padding must be an int or a pair, got {padding!r}")
        self.padding, self._pad = _padding_arg(padding, self.kernel_size, self.dilation, self.stride, name)
        self.output_padding = pair(output_padding, "output_padding", 0)
        if self._transposed:
            for op, s, d in zip(self.output_padding, self.stride, self.dilation):
                if op >= s and op >= d:
                    raise ValueError(f"{name}: output_padding must be smaller than either stride or dilation, "
                                     f"got output_padding={self.output_padding}, stride={self.stride}, "
                                     f"dilation={self.dilation}")
        modes = ("zeros",) if self._transposed else ("zeros",) + tuple(_NP_PAD_MODES)
        if padding_mode not in modes:
            raise ValueError(f"{name}: padding_mode must be one of {modes}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        # the padding of the other modes, (top, bottom, left, right), made before a convolution
        # without padding
        self._mode_pads = None if padding_mode == "zeros" else _explicit_pads(self._pad, self.kernel_size,
                                                                              self.dilation)
        _check_bool(bias, "bias")
        dt = _param_dtype(dtype, device)
        if self._transposed:
            shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        else:
            shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = Parameter(np.empty(shape, dtype=dt))
        if bias:
            self.bias = Parameter(np.empty(self.out_channels, dtype=dt))
        else:
            self.register_parameter("bias", None)
        self._x = None
        self.reset_parameters()

    def reset_parameters(self, generator=None):
        """PyTorch's default: kaiming_uniform_(a=sqrt(5)) weights, U(+-1/sqrt(fan_in)) bias."""
        init.default_init_(self.weight, self.bias, generator=generator)

    def _weight_cache(self, data=False):
        """The transformed weights of the convolution's forward (of the transposed
        convolution's backward), or with ``data`` of its input gradient, kept between
        calls: for as long as the weights stay the same in eval mode, and between
        passes with unchanged weights in training (see WeightCache's ``kept``)."""
        caches = self.__dict__.get("_wcaches")
        if caches is None:
            caches = self.__dict__["_wcaches"] = {}
        key = (bool(data), not self.training)
        c = caches.get(key)
        if c is None:
            c = caches[key] = WeightCache(kept=key[1])
        return c

    def _input_cache(self):
        """In training, what the forward keeps of its input for the weight gradient of the
        backward (see InputCache); None in eval mode."""
        if not self.training:
            return None
        c = self.__dict__.get("_icache")
        if c is None:
            c = self.__dict__["_icache"] = InputCache()
        return c

    def _who(self):
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, ...)"

    def _prep(self, x):
        dt = self.weight.data.dtype
        if type(x) is not np.ndarray or x.dtype != dt:
            x = _cast_input(self._who(), x, dt)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            if x.ndim == 3 and x.shape[0] == self.in_channels:
                return x  # unbatched (C, H, W), as PyTorch accepts
            c = self.in_channels
            raise ValueError(f"{self._who()}: expected input with {c} channels (N, {c}, H, W), "
                             f"got shape {x.shape}")
        return x

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if isinstance(self.padding, str) or self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Conv2d(_ConvNd):
    """2-D convolution over (N, C, H, W) input; weight (out_channels, in_channels/groups, kH, kW)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, 0, device, dtype)

    def forward(self, x):
        x = self._prep(x)
        pad = self._pad
        if self._mode_pads is not None:
            # reflect, replicate or circular: the padded input, convolved without padding
            self._in_hw = x.shape[-2:]
            x = _mode_pad(x, self._mode_pads, self.padding_mode, self._who())
            pad = (0, 0)
        self._x = x
        b = self.bias
        return F.conv2d(x, self.weight.data, None if b is None else b.data,
                        self.stride, pad, self.dilation, self.groups,
                        weight_cache=self._weight_cache(), input_cache=self._input_cache())

    def backward(self, grad_out, need_input_grad=True):
        x = self._x
        if x is None:
            raise _no_forward(self)
        w = self.weight.data
        g = _grad_as(grad_out, w.dtype)
        pad = self._pad if self._mode_pads is None else (0, 0)
        gx, gw, gb = F.conv2d_backward(g, x, w, self.stride, pad, self.dilation, self.groups,
                                       need_grad_input=need_input_grad,
                                       weight_cache=self._weight_cache(data=True),
                                       input_cache=self.__dict__.get("_icache"))
        accumulate(self.weight, gw, owned=True)
        if self.bias is not None:
            accumulate(self.bias, gb if gb is not None else g.sum(axis=(0, 2, 3)), owned=True)
        if gx is not None and self._mode_pads is not None:
            gx = _mode_pad_backward(gx, self._mode_pads, self.padding_mode, self._in_hw)
        return gx


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution; weight (in_channels, out_channels/groups, kH, kW)."""

    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 groups=1, bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, output_padding, device, dtype)
        self._op = self.output_padding   # the output padding of the last forward

    def _output_padding(self, x, output_size):
        """The layer's output_padding, or, with ``output_size`` (the output's spatial size, or
        its whole shape), the one that gives that size: PyTorch's rule, sizes from
        (H - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1 to stride - 1 more."""
        if output_size is None:
            return self.output_padding
        lead = x.ndim - 2
        if isinstance(output_size, np.ndarray):
            output_size = output_size.tolist()
        if not isinstance(output_size, (tuple, list)):
            raise TypeError(f"{self!r}: output_size must be a tuple or list of ints, got {output_size!r}")
        size = tuple(check_int(v, "output_size", 0) for v in output_size)
        if len(size) == lead + 2:
            size = size[lead:]
        if len(size) != 2:
            raise ValueError(f"{self!r}: for {x.ndim}-D input, output_size must have 2 or {lead + 2} elements, "
                             f"got {output_size!r}")
        lo = tuple((n - 1) * s - 2 * p + d * (k - 1) + 1 for n, s, p, d, k in
                   zip(x.shape[-2:], self.stride, self._pad, self.dilation, self.kernel_size))
        hi = tuple(m + s - 1 for m, s in zip(lo, self.stride))
        if not all(a <= v <= b for v, a, b in zip(size, lo, hi)):
            raise ValueError(f"{self!r}: requested an output size of {size}, but valid sizes range from {lo} to "
                             f"{hi} (for an input of {x.shape[-2:]})")
        return tuple(v - a for v, a in zip(size, lo))

    def forward(self, x, output_size=None):
        x = self._prep(x)
        op = self._output_padding(x, output_size)
        self._x = x
        self._op = op
        b = self.bias
        return F.conv_transpose2d(x, self.weight.data, None if b is None else b.data, self.stride,
                                  self._pad, op, self.groups, self.dilation,
                                  weight_cache=self._weight_cache(data=True))

    def backward(self, grad_out, need_input_grad=True):
        x = self._x
        if x is None:
            raise _no_forward(self)
        w = self.weight.data
        g = _grad_as(grad_out, w.dtype)
        gx, gw, gb = F.conv_transpose2d_backward(g, x, w, self.stride, self._pad, self._op,
                                                 self.groups, self.dilation, need_grad_input=need_input_grad,
                                                 weight_cache=self._weight_cache())
        accumulate(self.weight, gw, owned=True)
        if self.bias is not None:
            accumulate(self.bias, gb if gb is not None else g.sum(axis=(0, 2, 3)), owned=True)
        return gx


class Linear(Module):
    """y = x @ weight.T + bias over (*, in_features) input; weight (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        # (zero features, as in PyTorch: no input features give the bias, no output features
        # an empty output)
        self.in_features = check_int(in_features, "in_features", 0)
        self.out_features = check_int(out_features, "out_features", 0)
        _check_bool(bias, "bias")
        dt = _param_dtype(dtype, device)
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=dt))
        if bias:
            self.bias = Parameter(np.empty(self.out_features, dtype=dt))
        else:
            self.register_parameter("bias", None)
        self._x = None
        self._lead = None
        self.reset_parameters()

    def reset_parameters(self, generator=None):
        init.default_init_(self.weight, self.bias, generator=generator)

    def _prep(self, x):
        dt = self.weight.data.dtype
        if type(x) is not np.ndarray or x.dtype != dt:
            x = _cast_input(repr(self), x, dt)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            n = self.in_features
            raise ValueError(f"{self!r}: expected input with {n} features (N, {n}), got shape {x.shape}")
        return x

    def forward(self, x):
        x = self._prep(x)
        b = self.bias
        b = None if b is None else b.data
        if x.ndim == 2:
            self._x = x
            self._lead = None
            return F.linear(x, self.weight.data, b)
        lead = x.shape[:-1]
        x2 = x.reshape(math.prod(lead), self.in_features)
        self._x = x2
        self._lead = lead
        return F.linear(x2, self.weight.data, b).reshape(lead + (self.out_features,))

    def backward(self, grad_out, need_input_grad=True):
        x = self._x
        if x is None:
            raise _no_forward(self)
        w = self.weight.data
        lead = self._lead
        g = _grad_as(grad_out, w.dtype, (x.shape[:1] if lead is None else lead) + (self.out_features,))
        if lead is not None:
            g = g.reshape(math.prod(lead), self.out_features)
        gx, gw, gb = F.linear_backward(g, x, w, need_grad_input=need_input_grad)
        accumulate(self.weight, gw, owned=True)
        if self.bias is not None:
            accumulate(self.bias, gb if gb is not None else g.sum(axis=0), owned=True)
        if lead is not None and gx is not None:
            gx = gx.reshape(lead + (self.in_features,))
        return gx

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# -- pooling --------------------------------------------------------------------
class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        k = pair(kernel_size, "kernel_size", 1)
        pair(stride, "stride", 1) if stride is not None else None
        p = pair(padding, "padding", 0)
        pair(dilation, "dilation", 1)
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise ValueError(f"MaxPool2d: padding must be at most half of kernel_size, got padding={padding}, "
                             f"kernel_size={kernel_size}")
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = _check_bool(return_indices, "return_indices")
        self.ceil_mode = _check_bool(ceil_mode, "ceil_mode")
        self._ctx = None

    def _pool(self, x, indices):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode, return_indices=indices)

    def _is_2x2(self):
        """2x2 windows, stride 2, no padding or dilation, floor mode."""
        k, s, p, d = self.kernel_size, self.stride, self.padding, self.dilation
        if type(k) is int and type(s) is int and type(p) is int and type(d) is int:
            return not self.ceil_mode and k == 2 and s == 2 and p == 0 and d == 1
        return (not self.ceil_mode and pair(k, "kernel_size") == (2, 2) and pair(s, "stride") == (2, 2)
                and pair(p, "padding") == (0, 0) and pair(d, "dilation") == (1, 1))

    def forward(self, x):
        if self.training and not self.return_indices and self._is_2x2():
            x = as_float_array(x, "x", ndim=(3, 4))
            if x.shape[-1] >= 2 and x.shape[-2] >= 2:
                # the backward needs only each window's argmax: one byte per output
                y, code = _max_pool2d_2x2(x)
                self._ctx = (code, x)
                return y
        if self.training or self.return_indices:
            y, idx = self._pool(x, True)
            self._ctx = (idx, x)
            return (y, idx) if self.return_indices else y
        # eval mode: argmax indices are found again by backward, if it is ever called
        self._ctx = (None, x)
        return self._pool(x, False)

    def backward(self, grad_out, need_input_grad=True):
        if self._ctx is None:
            raise _no_forward(self)
        if not need_input_grad:
            return None
        idx, x = self._ctx
        if idx is None:
            idx = self._pool(x, True)[1]
        elif idx.dtype == np.uint8:
            return _max_pool2d_2x2_backward(_grad_as(grad_out, x.dtype), idx, x.shape)
        empty = _padding_only_windows(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                      self.ceil_mode)
        if empty is not None:
            # such a window's output depends on no input (its index, as PyTorch's, points elsewhere)
            grad_out = _grad_as(grad_out, x.dtype, idx.shape).copy()
            grad_out[..., empty[0], :] = 0
            grad_out[..., :, empty[1]] = 0
        return F.max_pool2d_backward(grad_out, idx, x.shape)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        k = pair(kernel_size, "kernel_size", 1)
        if stride is not None:
            pair(stride, "stride", 1)
        p = pair(padding, "padding", 0)
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise ValueError(f"AvgPool2d: padding must be at most half of kernel_size, got padding={padding}, "
                             f"kernel_size={kernel_size}")
        F.pool._divisor(divisor_override)
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = _check_bool(ceil_mode, "ceil_mode")
        self.count_include_pad = _check_bool(count_include_pad, "count_include_pad")
        self.divisor_override = divisor_override
        self._shape = None

    def forward(self, x):
        y = F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                         self.divisor_override)
        self._shape = x.shape
        return y

    def backward(self, grad_out, need_input_grad=True):
        if self._shape is None:
            raise _no_forward(self)
        if not need_input_grad:
            return None
        return F.avg_pool2d_backward(grad_out, self._shape, self.kernel_size, self.stride, self.padding,
                                     self.ceil_mode, self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Adaptive average pooling to ``output_size`` (int or pair, None in a pair keeping the
    input's size there); 1 is global average pooling."""

    def __init__(self, output_size):
        super().__init__()
        F.pool._adaptive_size(output_size, (1, 1))
        self.output_size = output_size
        self._shape = self._out = None

    def forward(self, x):
        y = F.adaptive_avg_pool2d(x, self.output_size)
        self._shape, self._out = x.shape, y.shape
        return y

    def backward(self, grad_out, need_input_grad=True):
        if self._shape is None:
            raise _no_forward(self)
        if not need_input_grad:
            return None
        return F.adaptive_avg_pool2d_backward(_grad_shape(grad_out, self._out), self._shape)

    def extra_repr(self):
        return f"output_size={self.output_size}"


# -- normalisation ----------------------------------------------------------------
class _BatchNorm(Module):
    _layout = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        super().__init__()
        self.num_features = check_int(num_features, "num_features", 1)
        self.eps = check_float(eps, "eps", minimum=0.0)
        if momentum is not None:
            momentum = check_float(momentum, "momentum", minimum=0.0, maximum=1.0)
        self.momentum = momentum
        self.affine = _check_bool(affine, "affine")
        self.track_running_stats = _check_bool(track_running_stats, "track_running_stats")
        dt = _param_dtype(dtype, device)
        c = self.num_features
        _check_bool(bias, "bias")
        if self.affine:
            self.weight = Parameter(np.ones(c, dtype=dt))
            if bias:
                self.bias = Parameter(np.zeros(c, dtype=dt))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, dtype=dt))
            self.register_buffer("running_var", np.ones(c, dtype=dt))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self._ctx = None

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.fill(0)
            self.running_var.fill(1)
            self.num_batches_tracked.fill(0)

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def _dtype(self, x):
        if self.weight is not None:
            return self.weight.data.dtype
        if self.running_mean is not None:
            return self.running_mean.dtype
        return x.dtype if isinstance(x, np.ndarray) and x.dtype.kind == "f" else np.dtype(np.float32)

    def _prep(self, x):
        dt = self._dtype(x)
        if type(x) is not np.ndarray or x.dtype != dt:
            x = _cast_input(f"{type(self).__name__}({self.num_features})", x, dt)
        if x.ndim not in self._ndims or x.shape[1] != self.num_features:
            c = self.num_features
            raise ValueError(f"{type(self).__name__}({c}): expected input with {c} channels "
                             f"{self._layout.format(c=c)}, got shape {x.shape}")
        return x

    def forward(self, x):
        return self._forward(x)

    def _forward(self, x, activation=None, negative_slope=0.01):
        """The forward, then ``activation`` (None, 'relu' or 'leaky_relu' of
        ``negative_slope`` >= 0) in the same pass."""
        x = self._prep(x)
        shape = x.shape
        if x.ndim == 3:
            x = x.reshape(shape + (1,))
        training = self.training
        use_batch = training or self.running_mean is None
        if use_batch and x.size == x.shape[1]:
            raise ValueError(f"{type(self).__name__}({self.num_features}): expected more than 1 value per "
                             f"channel when using batch statistics, got input of shape {shape}")
        factor = 0.0
        if training and self.track_running_stats:
            nbt = self.num_batches_tracked
            nbt += 1
            factor = 1.0 / float(nbt) if self.momentum is None else self.momentum
        w = self.weight
        b = self.bias
        y, mean, invstd = F.batch_norm(x, self.running_mean, self.running_var,
                                       None if w is None else w.data, None if b is None else b.data,
                                       training=use_batch, momentum=factor, eps=self.eps,
                                       activation=activation, negative_slope=negative_slope)
        self._ctx = (x, mean, invstd, use_batch, shape)
        return y.reshape(shape) if len(shape) == 3 else y

    def backward(self, grad_out, need_input_grad=True):
        return self._backward(grad_out, need_input_grad)

    def _backward(self, grad_out, need_input_grad=True, output=None, activation=None, negative_slope=0.01):
        """The backward; with the ``activation`` that _forward applied, ``grad_out`` is the
        gradient wrt its ``output``."""
        if self._ctx is None:
            raise _no_forward(self)
        x, mean, invstd, use_batch, shape = self._ctx
        g = _grad_as(grad_out, x.dtype, shape)
        if g.shape != x.shape:
            g = g.reshape(x.shape)
        if output is not None and output.shape != x.shape:
            output = output.reshape(x.shape)
        w = self.weight
        gx, gw, gb = F.batch_norm_backward(g, x, None if w is None else w.data, mean, invstd,
                                           training=use_batch, output=output, activation=activation,
                                           negative_slope=negative_slope)
        if w is not None:
            accumulate(w, gw, owned=True)
            if self.bias is not None:
                accumulate(self.bias, gb, owned=True)
        if not need_input_grad:
            return None
        return gx.reshape(shape) if len(shape) == 3 else gx

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over (N, C) or (N, C, L) input."""
    _ndims = (2, 3)
    _layout = "(N, {c}) or (N, {c}, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over (N, C, H, W) input."""
    _ndims = (4,)
    _layout = "(N, {c}, H, W)"


# -- regularisation and reshaping ----------------------------------------------------
class Dropout(Module):
    """Zero each element with probability ``p`` in training mode and scale the rest by 1/(1-p).

    Masks are drawn from ``self.generator`` when it is set (a
    numpy.random.Generator), else from the global default generator that
    :func:`fastcnn.manual_seed` seeds.
    """

    def __init__(self, p=0.5, inplace=False, generator=None):
        super().__init__()
        self.p = check_float(p, "p", minimum=0.0, maximum=1.0)
        self.inplace = _check_bool(inplace, "inplace")
        self.generator = None if generator is None else resolve(generator)
        self._mask = None

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        gen = self.generator if self.generator is not None else default_generator()
        y, mask = F.dropout(x, self.p, True, rng=gen)
        self._mask = mask
        return y

    def backward(self, grad_out, need_input_grad=True):
        if not need_input_grad:
            return None
        if self._mask is None:
            return grad_out
        return F.dropout_backward(grad_out, self._mask, self.p)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


def _check_array(who, x):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{who}: input must be a numpy array, got {type(x).__name__}")


class Flatten(Module):
    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = check_int(start_dim, "start_dim")
        self.end_dim = check_int(end_dim, "end_dim")
        self._shape = self._out = None

    def forward(self, x):
        _check_array("Flatten", x)
        shape = x.shape
        nd = max(len(shape), 1)
        s = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        e = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not 0 <= s <= e < nd:
            raise ValueError(f"{self!r}: dimensions out of range for input of shape {shape}")
        self._shape = shape
        y = x.reshape(1) if len(shape) == 0 else x.reshape(shape[:s] + (math.prod(shape[s:e + 1]),) + shape[e + 1:])
        self._out = y.shape
        return y

    def backward(self, grad_out, need_input_grad=True):
        if self._shape is None:
            raise _no_forward(self)
        return _grad_shape(grad_out, self._out).reshape(self._shape) if need_input_grad else None

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim = check_int(dim, "dim")
        if not isinstance(unflattened_size, (tuple, list)) or not unflattened_size:
            raise TypeError(f"unflattened_size must be a non-empty tuple of ints, got {unflattened_size!r}")
        sizes = tuple(check_int(s, "unflattened_size") for s in unflattened_size)
        if sum(s == -1 for s in sizes) > 1 or any(s < -1 for s in sizes):
            raise ValueError(f"unflattened_size must hold sizes >= 0 and at most one -1, got {sizes}")
        self.unflattened_size = sizes
        self._shape = self._out = None

    def forward(self, x):
        _check_array("Unflatten", x)
        shape = x.shape
        nd = len(shape)
        d = self.dim + nd if self.dim < 0 else self.dim
        if not 0 <= d < nd:
            raise ValueError(f"{self!r}: dim out of range for input of shape {shape}")
        sizes = self.unflattened_size
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if known == 0 or shape[d] % known:
                raise ValueError(f"{self!r}: cannot unflatten dimension {d} of size {shape[d]} into {sizes}")
            sizes = tuple(shape[d] // known if s == -1 else s for s in sizes)
        elif known != shape[d]:
            raise ValueError(f"{self!r}: expected size {known} (= prod{sizes}) in dimension {d}, "
                             f"got shape {shape}")
        self._shape = shape
        y = x.reshape(shape[:d] + sizes + shape[d + 1:])
        self._out = y.shape
        return y

    def backward(self, grad_out, need_input_grad=True):
        if self._shape is None:
            raise _no_forward(self)
        return _grad_shape(grad_out, self._out).reshape(self._shape) if need_input_grad else None

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Upsample(Module):
    """Resampling as ``torch.nn.Upsample`` (see ``F.interpolate``): modes 'nearest' and
    'nearest-exact', 'linear' of (N, C, L) input and 'bilinear' of (N, C, H, W) input (with
    ``align_corners``); of the last dimension of (N, C, L) input, of the last two of
    (N, C, H, W) input, to ``size`` or by ``scale_factor`` (a number, or one per spatial
    dimension; fractions and factors below one too)."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        check_interpolate_options(mode, align_corners, size, scale_factor, "Upsample")
        self.mode = mode
        self.align_corners = None if align_corners is None else bool(align_corners)
        self.recompute_scale_factor = recompute_scale_factor
        self.size = None
        self.scale_factor = None
        if size is not None:
            sizes = tuple(check_int(v, "size", 1) for v in _one_or_two(size, "size"))
            self.size = sizes if isinstance(size, (tuple, list)) else sizes[0]
        else:
            scales = [check_scale(v, scale_factor, "Upsample") for v in _one_or_two(scale_factor, "scale_factor")]
            self.scale_factor = tuple(scales) if isinstance(scale_factor, (tuple, list)) else scales[0]
        self._used = None    # (input shape, output shape) of the last forward

    def forward(self, x):
        _check_array("Upsample", x)
        if x.ndim not in (3, 4):
            raise ValueError(f"{self!r}: expected 3-D (N, C, L) or 4-D (N, C, H, W) input, got shape {x.shape}")
        x = as_float_array(x, "x", ndim=(3, 4))
        y = _interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners, self.recompute_scale_factor,
                         repr(self))
        self._used = (x.shape, y.shape)
        return y

    def backward(self, grad_out, need_input_grad=True):
        if self._used is None:
            raise _no_forward(self)
        if not need_input_grad:
            return None
        shape, out = self._used
        _grad_shape(grad_out, out)
        g = as_float_array(grad_out, "grad_out", ndim=(3, 4))
        return _interpolate_backward(g, shape, self.size, self.scale_factor, self.mode, self.align_corners,
                                     self.recompute_scale_factor, repr(self))

    def extra_repr(self):
        if self.scale_factor is not None:
            info = "scale_factor=" + repr(self.scale_factor)
        else:
            info = "size=" + repr(self.size)
        return info + ", mode=" + repr(self.mode)


def _one_or_two(v, name):
    """v as a tuple: a number, or a tuple or list of one or two."""
    if isinstance(v, (tuple, list)):
        if len(v) not in (1, 2):
            raise ValueError(f"Upsample: {name} must be a number or one per spatial dimension (1 or 2), got {v!r}")
        return tuple(v)
    return (v,)


class Identity(Module):
    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x

    def backward(self, grad_out, need_input_grad=True):
        return grad_out if need_input_grad else None


# -- activations ----------------------------------------------------------------
class ReLU(Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = _check_bool(inplace, "inplace")
        self._y = None

    def forward(self, x):
        y = F.relu(x, inplace=self.inplace)
        self._y = y
        return y

    def backward(self, grad_out, need_input_grad=True):
        if self._y is None:
            raise _no_forward(self)
        return F.relu_backward(grad_out, self._y) if need_input_grad else None

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = check_float(negative_slope, "negative_slope")
        self.inplace = _check_bool(inplace, "inplace")
        if self.inplace and self.negative_slope < 0:
            raise ValueError(f"LeakyReLU: inplace=True needs negative_slope >= 0, got {self.negative_slope}")
        self._x = None

    def forward(self, x):
        y = F.leaky_relu(x, self.negative_slope, inplace=self.inplace)
        self._x = x  # in place, x now holds y: same signs, as negative_slope >= 0 then
        return y

    def backward(self, grad_out, need_input_grad=True):
        if self._x is None:
            raise _no_forward(self)
        return F.leaky_relu_backward(grad_out, self._x, self.negative_slope) if need_input_grad else None

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class _ActivationOfOutput(Module):
    """An element-wise activation whose gradient needs only its output."""

    _forward_fn = _backward_fn = None

    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x):
        y = type(self)._forward_fn(x)
        self._y = y
        return y

    def backward(self, grad_out, need_input_grad=True):
        if self._y is None:
            raise _no_forward(self)
        return type(self)._backward_fn(grad_out, self._y) if need_input_grad else None


class Tanh(_ActivationOfOutput):
    _forward_fn = staticmethod(F.tanh)
    _backward_fn = staticmethod(F.tanh_backward)


class Sigmoid(_ActivationOfOutput):
    _forward_fn = staticmethod(F.sigmoid)
    _backward_fn = staticmethod(F.sigmoid_backward)


def _softmax_dim(dim, x):
    if dim is not None:
        return dim
    _check_array("Softmax", x)
    return 0 if x.ndim in (0, 1, 3) else 1


class Softmax(Module):
    _forward_fn = staticmethod(F.softmax)
    _backward_fn = staticmethod(F.softmax_backward)

    def __init__(self, dim=None):
        super().__init__()
        self.dim = None if dim is None else check_int(dim, "dim")
        self._ctx = None

    def forward(self, x):
        dim = _softmax_dim(self.dim, x)
        y = type(self)._forward_fn(x, dim)
        self._ctx = (y, dim)
        return y

    def backward(self, grad_out, need_input_grad=True):
        if self._ctx is None:
            raise _no_forward(self)
        y, dim = self._ctx
        return type(self)._backward_fn(grad_out, y, dim) if need_input_grad else None

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    _forward_fn = staticmethod(F.log_softmax)
    _backward_fn = staticmethod(F.log_softmax_backward)

