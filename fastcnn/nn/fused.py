"""Fused layers: Conv2d/Linear [+ BatchNorm in eval mode] [+ ReLU/LeakyReLU] as one kernel call,
and BatchNorm + ReLU/LeakyReLU as one pass (NormActBlock).

BatchNorm with running statistics is folded into the preceding layer:

    s  = gamma / sqrt(running_var + eps)
    w' = w * s                       (per output channel)
    b' = (b - running_mean) * s + beta

and the activation goes into the kernel's epilogue (``activation=``). A fused
block also has a backward, so gradients can flow through a model in eval mode
(e.g. to optimise its input): with gw', gb' the gradients of the folded
weight and bias,

    dL/dw = gw' * s,  dL/db = gb' * s,
    dL/dgamma = (sum(gw' * w) + (b - running_mean) * gb') / sqrt(running_var + eps),
    dL/dbeta = gb'.
"""
import numpy as np

from .. import functional as F
from .._kernels._pointwise import same_bytes
from .layers import (BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Identity, LeakyReLU, Linear, MaxPool2d,
                     ReLU, _grad_as, _no_forward)
from ..functional._checks import pair
from .._kernels._conv import isa_id
from .._threads import get_num_threads
from ..functional.conv import _conv2d_max_pool2_codes, _conv_call, _pooled_call
from ..functional.pool import _max_pool2d_2x2_backward
from ..functional.linalg import _linear_call
from .module import SETTINGS, accumulate, backward_without_input_grad

__all__ = ["build_plan", "FusedBlock", "NormActBlock"]


def _unchanged(a, snap):
    """Whether array ``a`` still holds the values of its copy ``snap`` (bytes compared,
    so NaNs compare equal)."""
    if a is None:
        return True
    if a.shape != snap.shape or a.dtype != snap.dtype:
        return False
    return same_bytes(np.ascontiguousarray(a), snap)


def _foldable_bn(bn, layer):
    return (not bn.training and bn.running_mean is not None
            and bn.num_features == (layer.out_channels if type(layer) is Conv2d else layer.out_features))


def _poolable(pool, act):
    """Whether the activation's gradient can be taken after ``pool``'s: always for ReLU
    (a 0/1 mask); for LeakyReLU only with windows that do not overlap, where no
    input sums the gradients of several windows."""
    if pool.return_indices:
        return False
    if type(act) is ReLU:
        return True
    k = pair(pool.kernel_size, "kernel_size")
    s = pair(pool.stride, "stride")
    return s[0] >= k[0] and s[1] >= k[1]


def _activation_of(act):
    """(activation, negative_slope) of a fused ReLU / LeakyReLU module (or None)."""
    if act is None:
        return None, 0.01
    if type(act) is ReLU:
        return "relu", 0.01
    return "leaky_relu", act.negative_slope


def build_plan(mods, training=False):
    """The steps of a Sequential: fused blocks where possible, modules elsewhere.

    In eval mode a BatchNorm with running statistics is folded in; in training
    mode only the activation is fused (BatchNorm then needs its batch
    statistics, so a layer followed by one stays on its own). A BatchNorm not
    folded into a layer takes the ReLU or LeakyReLU after it into its own pass.
    """
    mods = [m for m in mods if type(m) is not Identity and not (type(m) is Dropout and not m.training)]
    plan = []
    i, n = 0, len(mods)
    while i < n:
        m = mods[i]
        flatten = None
        if (type(m) is Flatten and m.start_dim == 1 and m.end_dim == -1 and i + 1 < n
                and type(mods[i + 1]) is Linear):
            # a Linear block takes its input through the Flatten
            flatten, m = m, mods[i + 1]
            i += 1
        if (type(m) is Conv2d and m.padding_mode == "zeros") or type(m) is Linear:
            j = i + 1
            bn = None
            bn_type = BatchNorm2d if type(m) is Conv2d else BatchNorm1d
            if not training and j < n and type(mods[j]) is bn_type and _foldable_bn(mods[j], m):
                bn = mods[j]
                j += 1
            act = None
            if j < n and type(mods[j]) is ReLU:
                act = mods[j]
                j += 1
            elif j < n and type(mods[j]) is LeakyReLU and mods[j].negative_slope >= 0:
                act = mods[j]
                j += 1
            # in eval mode a layer on its own is a block too, for its kept kernel call
            if bn is not None or act is not None or not training:
                pool = None
                if act is not None and j < n and type(mods[j]) is MaxPool2d and _poolable(mods[j], act):
                    pool = mods[j]
                    j += 1
                plan.append(FusedBlock(m, bn, act, pool, flatten))
                i = j
                continue
        if flatten is not None:
            plan.append(flatten)
        # (a subclass, such as a synchronised BatchNorm, keeps its own forward and backward)
        if ((type(m) is BatchNorm2d or type(m) is BatchNorm1d) and i + 1 < n
                and (type(mods[i + 1]) is ReLU or type(mods[i + 1]) is LeakyReLU)):
            plan.append(NormActBlock(m, mods[i + 1]))
            i += 2
            continue
        plan.append(m)
        i += 1
    return plan


class NormActBlock:
    """One step of a plan: a BatchNorm and the ReLU or LeakyReLU after it in one pass
    over the data; the backward takes the activation's gradient from the output
    inside the BatchNorm's. A negative LeakyReLU slope runs the two one by one."""

    def __init__(self, bn, act):
        self.bn = bn
        self.act = act
        self.modules = [bn, act]
        self._ctx = None   # (output, activation, slope) of a fused call

    def __call__(self, x):
        activation, slope = _activation_of(self.act)
        if slope < 0:
            self._ctx = None
            return self.act(self.bn(x))
        y = self.bn._forward(x, activation, slope)
        self._ctx = (y, activation, slope)
        return y

    def backward(self, grad_out, need_input_grad=True):
        ctx = self._ctx
        if ctx is None:
            if self.bn._ctx is None:
                raise _no_forward(self.bn)
            g = self.act.backward(grad_out)
            return self.bn.backward(g, need_input_grad)
        return self.bn._backward(grad_out, need_input_grad, *ctx)

    def __repr__(self):
        return "NormActBlock(" + ", ".join(repr(m) for m in self.modules) + ")"


class FusedBlock:
    """One step of a plan: ``layer`` [+ ``bn``] [+ ``act``] in one kernel call, then
    an optional max pooling ``pool``; a Linear ``layer`` may take its input through
    a ``flatten`` (a Flatten of all but the first dimension) first.

    With a pool after the activation, the activation's gradient is taken on the
    pooled gradient: the pool passes each window's gradient to its argmax,
    whose activated value is the pooled output, so masking the (smaller)
    pooled gradient by the pooled output's sign gives the same result as
    masking the full-size one. A 2x2 pool runs inside the convolution's kernel
    where one pools as it stores (Winograd, or one input channel): in eval
    mode, and in training keeping each window's argmax for the backward.
    """

    def __init__(self, layer, bn=None, act=None, pool=None, flatten=None):
        self.layer = layer
        self.bn = bn
        self.act = act
        self.pool = pool
        self.flatten = flatten
        self._in_shape = None   # the input's shape before the flatten
        self.modules = [m for m in (layer, bn, act, pool) if m is not None]
        self.activation, self.slope = _activation_of(act)
        self._is_conv = type(layer) is Conv2d
        self._key = None
        self._snap = None
        self._folded = None
        self._ctx = None
        # (input shape, dtype, folded, environment, call, pooled, flattened shape) of eval-mode calls
        self._fast = None

    def _sources(self):
        layer, bn = self.layer, self.bn
        b = layer.bias
        src = [layer.weight.data, None if b is None else b.data]
        if bn is not None:
            src += [bn.running_mean, bn.running_var]
            if bn.weight is not None:
                src.append(bn.weight.data)
            if bn.bias is not None:
                src.append(bn.bias.data)
        return src

    def folded(self):
        """(w', b', s, inv_std): the folded weight and bias, recomputed when a source
        array is replaced or its values change (in-place updates included)."""
        f = self._folded
        if f is not None and self.bn is None:
            # without BatchNorm the folded arrays are the parameters themselves
            layer = self.layer
            b = layer.bias
            if f[0] is layer.weight.data and f[1] is (None if b is None else b.data):
                return f
        src = self._sources()
        key = self._key
        if (key is not None and len(key) == len(src) and all(a is b for a, b in zip(key, src))
                and (self._snap is None or all(_unchanged(a, s) for a, s in zip(src, self._snap)))):
            return self._folded
        layer, bn = self.layer, self.bn
        w = layer.weight.data
        b = None if layer.bias is None else layer.bias.data
        if bn is None:
            folded = (w, b, None, None)
        else:
            dt = w.dtype
            inv_std = 1.0 / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
            s = inv_std if bn.weight is None else bn.weight.data * inv_std
            shift = -bn.running_mean.astype(np.float64)
            if b is not None:
                shift = shift + b
            bias = shift * s
            if bn.bias is not None:
                bias = bias + bn.bias.data
            scale = s.reshape((-1,) + (1,) * (w.ndim - 1))
            w2 = np.ascontiguousarray((w * scale).astype(dt))
            folded = (w2, bias.astype(dt), s.astype(dt), inv_std.astype(dt))
        self._folded = folded
        self._key = src
        # without BatchNorm the folded arrays are the parameters themselves
        self._snap = None if bn is None else [None if a is None else a.copy() for a in src]
        return folded

    def _unfused(self, x):
        for m in self.modules:
            x = m(x)
        self._ctx = None
        return x

    def __call__(self, x):
        fast = self._fast
        if (fast is not None and type(x) is np.ndarray and x.shape == fast[0] and x.dtype is fast[1]
                and not self.layer.training and x.flags.c_contiguous):
            folded = self.folded()
            if folded is fast[2] and fast[3] == self._environment():
                if self.flatten is not None:
                    self._in_shape = x.shape
                    x = x.reshape(fast[6])
                return self._finish(x, fast[4](x), folded[0], fast[5])
        self._fast = None
        return self._call(x)

    def _call(self, x):
        """The checked call; in eval mode it also keeps, for inputs like x, the kernel call
        with its arguments checked and chosen (self._fast)."""
        layer = self.layer
        x_in = x
        if self.flatten is not None:
            x = self.flatten(x)
            self._in_shape = x_in.shape
        if self.activation == "leaky_relu":
            # the slope as set now (a change also drops a kept call); a negative one is not fused:
            # the backward reads the pre-activation's signs from the output
            self.slope = self.act.negative_slope
            if self.slope < 0:
                return self._unfused(x)
        x = layer._prep(x)
        folded = self.folded()
        w, b = folded[0], folded[1]
        pool = self.pool
        call, pooled = None, False
        eval_mode = not layer.training
        if self._is_conv:
            cache = layer._weight_cache()
            args = (layer.stride, layer._pad, layer.dilation, layer.groups, self.activation, self.slope, cache)
            if pool is not None and eval_mode and not pool.training and pool._is_2x2():
                # in eval mode, a kernel that pools as it stores where there is one
                call = _pooled_call(x, w, b, *args)
                pooled = call is not None
            elif pool is not None and not eval_mode and pool.training and pool._is_2x2():
                # in training, such a kernel also keeps each window's argmax for the backward
                x = np.ascontiguousarray(x)
                out = _conv2d_max_pool2_codes(x, w, b, *args, layer._input_cache())
                if out is not None:
                    y, codes, shape = out
                    self._ctx = (x, y, w, False, (codes, shape))
                    return y
            if call is None and eval_mode:
                call = _conv_call(x, w, b, *args)
            if call is None:
                y = F.conv2d(x, w, b, layer.stride, layer._pad, layer.dilation, layer.groups,
                             activation=self.activation, negative_slope=self.slope, weight_cache=cache,
                             input_cache=layer._input_cache())
        elif x.ndim == 2:
            if eval_mode:
                call = _linear_call(x, w, b, self.activation, self.slope)
            if call is None:
                y = F.linear(x, w, b, activation=self.activation, negative_slope=self.slope)
        else:
            return self._unfused(x)
        if call is not None:
            x = np.ascontiguousarray(x)
            y = call(x)
            if self.flatten is None:
                self._fast = (x.shape, x.dtype, folded, self._environment(), call, pooled, None)
            elif type(x_in) is np.ndarray and x_in.dtype is x.dtype and x_in.flags.c_contiguous:
                self._fast = (x_in.shape, x.dtype, folded, self._environment(), call, pooled, x.shape)
        return self._finish(x, y, w, pooled)

    def __getstate__(self):
        # a kept kernel call is bound to this block's arrays: a copy makes its own
        state = self.__dict__.copy()
        state["_fast"] = None
        return state

    def _environment(self):
        """What a kept kernel call depends on besides the input and the folded weights: the
        thread count, the instruction set, and the layer's and the pool's settings (which
        have not changed while SETTINGS holds)."""
        return get_num_threads(), isa_id(), SETTINGS[0]

    def _finish(self, x, y, w, pooled):
        if self.pool is not None and not pooled:
            y = self.pool(y)
        self._ctx = (x, y, w, pooled, None)   # the activation's gradient is taken from the pooled output
        return y

    def backward(self, grad_out, need_input_grad=True):
        g = self._backward(grad_out, need_input_grad)
        if self.flatten is not None and g is not None:
            g = g.reshape(self._in_shape)
        return g

    def _backward(self, grad_out, need_input_grad):
        ctx = self._ctx
        if ctx is None:
            # the last call ran the modules one by one
            if self.modules[0]._x is None:
                raise _no_forward(self.layer)
            g = grad_out
            for m in self.modules[:0:-1]:
                g = m.backward(g)
            if need_input_grad:
                return self.modules[0].backward(g)
            return backward_without_input_grad(self.modules[0], g)
        x, y, w2, pooled_in_kernel, codes = ctx
        layer, bn = self.layer, self.bn
        g = _grad_as(grad_out, w2.dtype)
        if self.activation == "relu":
            g = F.relu_backward(g, y)
        elif self.activation == "leaky_relu":
            g = F.leaky_relu_backward(g, y, self.slope)  # y has the signs of the pre-activation
        if codes is not None:
            # pooled in training by the kernel, which kept each window's argmax
            g = _max_pool2d_2x2_backward(g, codes[0], codes[1])
        elif pooled_in_kernel:
            # the pooling's input was never stored: computed again to find each window's argmax
            yc = F.conv2d(x, w2, self.folded()[1], layer.stride, layer._pad, layer.dilation, layer.groups,
                          activation=self.activation, negative_slope=self.slope)
            g = F.max_pool2d_backward(g, F.max_pool2d(yc, 2, 2, return_indices=True)[1], yc.shape)
        elif self.pool is not None:
            g = self.pool.backward(g)
        if self._is_conv:
            gx, gw, gb = F.conv2d_backward(g, x, w2, layer.stride, layer._pad, layer.dilation, layer.groups,
                                           need_grad_input=need_input_grad,
                                           weight_cache=layer._weight_cache(data=True),
                                           input_cache=None if pooled_in_kernel else layer.__dict__.get("_icache"))
            if gb is None:
                gb = g.sum(axis=(0, 2, 3))
        else:
            gx, gw, gb = F.linear_backward(g, x, w2, need_grad_input=need_input_grad)
            if gb is None:
                gb = g.sum(axis=0)
        if bn is None:
            accumulate(layer.weight, gw, owned=True)
            if layer.bias is not None:
                accumulate(layer.bias, gb, owned=True)
            return gx
        _, _, s, inv_std = self.folded()
        w = layer.weight.data
        accumulate(layer.weight, gw * s.reshape((-1,) + (1,) * (w.ndim - 1)), owned=True)
        if layer.bias is not None:
            accumulate(layer.bias, gb * s, owned=True)
        if bn.weight is not None:
            axes = tuple(range(1, w.ndim))
            shift = -bn.running_mean
            if layer.bias is not None:
                shift = shift + layer.bias.data
            accumulate(bn.weight, ((gw * w).sum(axis=axes) + shift * gb) * inv_std, owned=True)
        if bn.bias is not None:
            accumulate(bn.bias, gb, owned=True)
        return gx

    def __repr__(self):
        mods = ([self.flatten] if self.flatten is not None else []) + self.modules
        return "FusedBlock(" + ", ".join(repr(m) for m in mods) + ")"
