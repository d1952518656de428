"""Parameter initialisation, with PyTorch's formulas and names.

Every function fills its argument in place (an ndarray or a
:class:`fastcnn.nn.Parameter`) and returns it. Random draws come from
``generator`` when given, else from the global default generator seeded by
:func:`fastcnn.manual_seed`.
"""
import math
import numbers

import numpy as np

from ._random import resolve

__all__ = [
    "calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
    "dcgan_init",
]


def _array(tensor, name="tensor"):
    data = getattr(tensor, "data", tensor) if not isinstance(tensor, np.ndarray) else tensor
    if not isinstance(data, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or a Parameter, got {type(tensor).__name__}")
    if data.dtype.kind != "f":
        raise TypeError(f"{name} must have a floating dtype, got {data.dtype}")
    return data


def _real(v, name):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {v!r}")
    return float(v)


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity (PyTorch's table)."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
              "conv_transpose2d", "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else _real(param, "param")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(data):
    if data.ndim < 2:
        raise ValueError(f"fan in and fan out need an array with at least 2 dimensions, got shape {data.shape}")
    receptive = 1
    for s in data.shape[2:]:
        receptive *= s
    return data.shape[1] * receptive, data.shape[0] * receptive


def _fan(data, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(data)
    return fan_in if mode == "fan_in" else fan_out


def _fill_uniform(data, low, high, generator):
    gen = resolve(generator)
    data[...] = gen.uniform(low, high, size=data.shape)


def _fill_normal(data, mean, std, generator):
    gen = resolve(generator)
    data[...] = gen.normal(mean, std, size=data.shape)


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fill with draws from U(a, b)."""
    data = _array(tensor)
    a, b = _real(a, "a"), _real(b, "b")
    if a > b:
        raise ValueError(f"uniform_ needs a <= b, got a={a}, b={b}")
    _fill_uniform(data, a, b, generator)
    return tensor


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fill with draws from N(mean, std**2)."""
    data = _array(tensor)
    mean, std = _real(mean, "mean"), _real(std, "std")
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    _fill_normal(data, mean, std, generator)
    return tensor


def constant_(tensor, val):
    """Fill with ``val``."""
    _array(tensor)[...] = _real(val, "val")
    return tensor


def zeros_(tensor):
    """Fill with 0."""
    _array(tensor)[...] = 0
    return tensor


def ones_(tensor):
    """Fill with 1."""
    _array(tensor)[...] = 1
    return tensor


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot uniform: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    data = _array(tensor)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(data)
    std = _real(gain, "gain") * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    _fill_uniform(data, -bound, bound, generator)
    return tensor


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot normal: N(0, std**2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    data = _array(tensor)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(data)
    std = _real(gain, "gain") * math.sqrt(2.0 / float(fan_in + fan_out))
    _fill_normal(data, 0.0, std, generator)
    return tensor


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He uniform: U(-b, b) with b = gain * sqrt(3 / fan)."""
    data = _array(tensor)
    fan = _fan(data, mode)
    if fan == 0:
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    bound = math.sqrt(3.0) * std
    _fill_uniform(data, -bound, bound, generator)
    return tensor


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He normal: N(0, std**2) with std = gain / sqrt(fan)."""
    data = _array(tensor)
    fan = _fan(data, mode)
    if fan == 0:
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    _fill_normal(data, 0.0, std, generator)
    return tensor


def default_init_(weight, bias=None, generator=None):
    """PyTorch's default for convolutions and linear layers.

    Weight: kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in));
    bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). ``fan_in`` is taken from the
    weight's dimension 1 (for a transposed convolution this is
    ``out_channels / groups * kH * kW``, as in PyTorch).
    """
    kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    if bias is not None:
        fan_in, _ = _calculate_fan_in_and_fan_out(_array(weight))
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound, generator=generator)


def dcgan_init(module, std=0.02, generator=None):
    """DCGAN's initialisation (Radford et al.), applied to every sub-module.

    Convolution and transposed-convolution weights ~ N(0, std); BatchNorm
    weights ~ N(1, std) and biases = 0. Linear layers are left as they are,
    as in the reference implementation. Returns ``module``.
    """
    from .nn.layers import Conv2d, ConvTranspose2d, _BatchNorm

    gen = resolve(generator)
    for m in module.modules():
        if isinstance(m, (Conv2d, ConvTranspose2d)):
            normal_(m.weight, 0.0, std, generator=gen)
        elif isinstance(m, _BatchNorm) and m.affine:
            normal_(m.weight, 1.0, std, generator=gen)
            zeros_(m.bias)
    return module
