"""Batch normalisation (BatchNorm1d on (N, C), BatchNorm2d on (N, C, H, W)).

Training mode normalises with the batch statistics and, when running
statistics are given, updates them in place as PyTorch does
(``running = (1 - momentum) * running + momentum * batch``, the running
variance being the unbiased batch variance). Evaluation mode uses the running
statistics. ``weight``/``bias`` None means ``affine=False``; running stats
None means ``track_running_stats=False`` (batch statistics are then used in
evaluation too: pass ``training=True``). ``activation`` ('relu' or
'leaky_relu') is applied to the output in the same pass; its backward reads
the activated output.
"""
import numpy as np

from .._kernels import _norm

from ._checks import as_float_array, check_float, n_threads
from .linalg import _activation

__all__ = ["batch_norm", "batch_norm_backward"]


# Below this many elements a kernel runs on one thread.
_SERIAL_BELOW = 1 << 15


# Outputs at least this large are written with non-temporal stores: they are
# far bigger than a core's share of the caches, so keeping them there only
# costs a read of every destination line.
_STREAM_BYTES = 8 << 20


def _threads_for(x):
    return 1 if x.size < _SERIAL_BELOW else n_threads()


def _kernels():
    return _norm


def _view3(x):
    """(N, C) or (N, C, H, W) -> contiguous (N, C, L) view."""
    return x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3] if x.ndim == 4 else 1)


def _channel_vector(v, name, C, writeable=False):
    if writeable:
        if not isinstance(v, np.ndarray) or v.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must be a float32/float64 numpy array (updated in place), "
                            f"got {type(v).__name__ if not isinstance(v, np.ndarray) else v.dtype}")
        if v.shape != (C,):
            raise ValueError(f"{name} must have shape ({C},), got {v.shape}")
        if not v.flags.writeable:
            raise ValueError(f"{name} must be writeable (it is updated in place)")
        return v
    v = as_float_array(v, name, ndim=1)
    if v.shape != (C,):
        raise ValueError(f"{name} must have shape ({C},), got {v.shape}")
    return np.ascontiguousarray(v, dtype=np.float64)


def _check_x(x, name="x"):
    x = as_float_array(x, name, ndim=(2, 4))
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one channel, got shape {x.shape}")
    return x


def _act_slope(activation, negative_slope):
    act = _activation(activation)
    slope = check_float(negative_slope, "negative_slope") if act == 2 else 0.0
    if slope < 0:
        raise ValueError(f"negative_slope must be >= 0 for a fused activation, got {slope}")
    return act, slope


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, activation=None, negative_slope=0.01):
    """Return ``(y, save_mean, save_invstd)``; pass the last two to ``batch_norm_backward``.

    In training mode they are the batch mean and 1/sqrt(batch var + eps); in
    evaluation mode the running mean and 1/sqrt(running var + eps). ``activation``
    None, 'relu' or 'leaky_relu' (of ``negative_slope`` >= 0) is applied to y.
    """
    act, slope = _act_slope(activation, negative_slope)
    x = _check_x(x)
    N, C = x.shape[0], x.shape[1]
    eps = check_float(eps, "eps", 0.0)
    momentum = check_float(momentum, "momentum", 0.0, 1.0)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if running_mean is not None:
        running_mean = _channel_vector(running_mean, "running_mean", C, writeable=True)
        running_var = _channel_vector(running_var, "running_var", C, writeable=True)
    w = np.ones(C) if weight is None else _channel_vector(weight, "weight", C)
    b = np.zeros(C) if bias is None else _channel_vector(bias, "bias", C)
    x3 = _view3(x)
    M = x3.shape[0] * x3.shape[2]
    y = np.empty_like(x)
    if training:
        if M == 0:
            # an empty batch: an empty output, the running statistics as they are (as PyTorch)
            return y, np.zeros(C, dtype=x.dtype), np.ones(C, dtype=x.dtype)
        if M == 1:
            raise ValueError(f"batch_norm in training needs more than 1 value per channel, got x of shape {x.shape}")
        save_mean = np.empty(C, dtype=x.dtype)
        save_invstd = np.empty(C, dtype=x.dtype)
        var = np.empty(C)
        _kernels().batch_norm_train_forward(x3, _view3(y), w, b, eps, save_mean, save_invstd, var,
                                            x.nbytes >= _STREAM_BYTES, _threads_for(x), act, slope)
        if running_mean is not None:
            mean = save_mean.astype(np.float64) if x.dtype != np.float64 else save_mean
            running_mean[...] = momentum * mean + (1.0 - momentum) * running_mean
            running_var[...] = momentum * (var * (M / (M - 1.0))) + (1.0 - momentum) * running_var
        return y, save_mean, save_invstd
    if running_mean is None:
        raise ValueError("batch_norm in evaluation mode needs running_mean and running_var "
                         "(without running statistics, use training=True)")
    if N == 0:
        return y, running_mean.astype(x.dtype), (1.0 / np.sqrt(running_var + eps)).astype(x.dtype)
    rm = running_mean.astype(np.float64)
    invstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
    # y = (x - m) scale + (b - (running_mean - m) scale), m the running mean rounded to x's
    # type: no cancellation where x is near the mean
    m = rm.astype(x.dtype).astype(np.float64)
    scale = w * invstd
    _kernels().channel_affine(x3, _view3(y), m, scale, b - (rm - m) * scale, _threads_for(x), act, slope)
    return y, rm.astype(x.dtype), invstd.astype(x.dtype)


def batch_norm_backward(grad_out, x, weight, save_mean, save_invstd, training=True, output=None,
                        activation=None, negative_slope=0.01):
    """Return ``(grad_x, grad_weight, grad_bias)``; the last two are None when ``weight`` is None.

    ``training=True`` differentiates through the batch statistics; False
    treats ``save_mean``/``save_invstd`` as constants (evaluation mode). With an
    ``activation`` (as given to ``batch_norm``), ``grad_out`` is the gradient wrt
    the activated ``output`` that batch_norm returned.
    """
    act, slope = _act_slope(activation, negative_slope)
    x = _check_x(x)
    g = as_float_array(grad_out, "grad_out", dtype=x.dtype)
    if g.shape != x.shape:
        raise ValueError(f"grad_out must have the shape of x {x.shape}, got {g.shape}")
    y3 = None
    if act:
        if output is None:
            raise ValueError(f"batch_norm_backward with activation={activation!r} needs the output")
        y = as_float_array(output, "output", dtype=x.dtype)
        if y.shape != x.shape:
            raise ValueError(f"output must have the shape of x {x.shape}, got {y.shape}")
        y3 = _view3(np.ascontiguousarray(y))
    C = x.shape[1]
    w = np.ones(C) if weight is None else _channel_vector(weight, "weight", C)
    mean = _channel_vector(save_mean, "save_mean", C)
    invstd = _channel_vector(save_invstd, "save_invstd", C)
    gx = np.empty_like(x)
    gw = np.zeros(C)
    gb = np.zeros(C)
    if x.size:
        _kernels().batch_norm_backward(_view3(g), _view3(x), _view3(gx), w, mean, invstd,
                                       bool(training), gw, gb, x.nbytes >= _STREAM_BYTES,
                                       _threads_for(x), y3, act, slope)
    if weight is None:
        return gx, None, None
    return gx, gw.astype(x.dtype), gb.astype(x.dtype)
