"""Losses and their gradients: cross-entropy from logits, BCE with logits, MSE, L1.

Each loss returns a Python float; each ``*_backward`` returns d loss / d input
(times ``grad_output``, 1 by default). ``reduction`` is ``'mean'`` or ``'sum'``.
"""
import numpy as np

from ._checks import as_float_array, check_float, n_threads

__all__ = [
    "cross_entropy", "cross_entropy_backward",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_backward",
    "mse_loss", "mse_loss_backward", "l1_loss", "l1_loss_backward",
]

_OP_BCE, _OP_MSE, _OP_L1 = 0, 1, 2
_SERIAL_BELOW = 1 << 15
_NDARRAY = np.ndarray
_EMPTY_WEIGHT = np.ones(1)

_k = None


def _kernels():
    global _k
    from .._kernels import _loss
    _k = _loss
    return _loss


def _reduction(reduction):
    if reduction == "mean":
        return True
    if reduction == "sum":
        return False
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


# ---------------------------------------------------------------------------
# cross-entropy
# ---------------------------------------------------------------------------

def _ce_args(logits, target, weight, label_smoothing):
    """Checked (x, t, w, has_weight, eps, threads); the common case costs a few attribute reads."""
    x = logits
    if (x.__class__ is not _NDARRAY or x.ndim != 2 or x.dtype.char not in "fd"
            or not x.flags.c_contiguous):
        x = as_float_array(logits, "logits", ndim=2)
    t = target
    if t.__class__ is not _NDARRAY or t.dtype.char not in "il" or t.ndim != 1 or not t.flags.c_contiguous:
        t = _check_target(target)
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"target must have shape ({x.shape[0]},) to match logits {x.shape}, got {t.shape}")
    if x.shape[1] == 0:
        raise ValueError(f"logits must have at least one class, got shape {x.shape}")
    if weight is None:
        w, has_w = _EMPTY_WEIGHT, False
    else:
        w = as_float_array(weight, "weight", ndim=1)
        if w.shape != (x.shape[1],):
            raise ValueError(f"weight must have shape ({x.shape[1]},) (one per class), got {w.shape}")
        w, has_w = np.ascontiguousarray(w, dtype=np.float64), True
    if label_smoothing != 0.0:
        label_smoothing = check_float(label_smoothing, "label_smoothing", 0.0, 1.0)
    nt = 1 if x.size < _SERIAL_BELOW else n_threads()
    return x, t, w, has_w, float(label_smoothing), nt


def _check_target(target):
    if not isinstance(target, np.ndarray):
        if isinstance(target, (list, tuple)):
            target = np.asarray(target)
        else:
            raise TypeError(f"target must be a numpy array of integer class labels, got {type(target).__name__}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class labels (int32 or int64), got dtype {target.dtype}")
    if target.ndim != 1:
        raise ValueError(f"target must be 1-D (one label per row of logits), got shape {target.shape}")
    if target.dtype.char not in "il":
        if target.dtype.kind == "u" and target.size and int(target.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"target labels must be class indices, got {int(target.max())}")
        target = target.astype(np.int64)
    return np.ascontiguousarray(target)


def _bad_label(t, row, C):
    return ValueError(f"target labels must be in [0, {C - 1}], got {int(t[row])} at position {row}")


def cross_entropy(logits, target, weight=None, reduction="mean", label_smoothing=0.0):
    """Cross-entropy of ``logits`` (N, C) against integer labels ``target`` (N,), PyTorch's formula:

    loss_i = (1 - ls) * w[t_i] * (lse_i - x_it) + ls / C * sum_c w[c] * (lse_i - x_ic);
    'mean' divides the sum by sum_i w[t_i] (N without weight).
    """
    mean = reduction == "mean" or _reduction(reduction)
    x, t, w, has_w, ls, nt = _ce_args(logits, target, weight, label_smoothing)
    total, denom, bad = (_k or _kernels()).cross_entropy_forward(x, t, w, has_w, ls, nt)
    if bad >= 0:
        raise _bad_label(t, bad, x.shape[1])
    if not mean:
        return total
    return total / denom if denom else float("nan")


def cross_entropy_backward(logits, target, weight=None, reduction="mean", label_smoothing=0.0,
                           grad_output=1.0):
    """d cross_entropy / d logits, times ``grad_output``."""
    mean = reduction == "mean" or _reduction(reduction)
    x, t, w, has_w, ls, nt = _ce_args(logits, target, weight, label_smoothing)
    gx = np.empty_like(x)
    bad = (_k or _kernels()).cross_entropy_backward(x, t, w, has_w, ls, mean, float(grad_output), gx, nt)
    if bad >= 0:
        raise _bad_label(t, bad, x.shape[1])
    return gx


# ---------------------------------------------------------------------------
# element-wise losses
# ---------------------------------------------------------------------------

def _pair(input, target):
    x = as_float_array(input, "input")
    t = target
    if not isinstance(t, np.ndarray):
        if isinstance(t, (list, tuple)) or np.isscalar(t):
            t = np.asarray(t)
        else:
            raise TypeError(f"target must be a numpy array, got {type(t).__name__}")
    if t.dtype.kind not in "fiub":
        raise TypeError(f"target must be numeric, got dtype {t.dtype}")
    if t.shape != x.shape:
        raise ValueError(f"target must have the shape of input {x.shape}, got {t.shape}")
    t = np.ascontiguousarray(t, dtype=x.dtype)
    return x, t, (1 if x.size < _SERIAL_BELOW else n_threads())


def _loss(input, target, reduction, op):
    mean = _reduction(reduction)
    x, t, nt = _pair(input, target)
    s = (_k or _kernels()).elementwise_loss_sum(x.reshape(-1), t.reshape(-1), op, nt)
    if mean and x.size == 0:
        return float("nan")  # the mean of no elements, as PyTorch
    return s / x.size if mean else s


def _loss_grad(input, target, reduction, op, grad_output):
    mean = _reduction(reduction)
    x, t, nt = _pair(input, target)
    gx = np.empty_like(x)
    scale = float(grad_output) / max(1, x.size) if mean else float(grad_output)
    (_k or _kernels()).elementwise_loss_grad(x.reshape(-1), t.reshape(-1), gx.reshape(-1), op, scale, nt)
    return gx


def binary_cross_entropy_with_logits(input, target, reduction="mean"):
    """Binary cross-entropy on logits: max(x, 0) - x t + log(1 + exp(-|x|)), finite for any x."""
    return _loss(input, target, reduction, _OP_BCE)


def binary_cross_entropy_with_logits_backward(input, target, reduction="mean", grad_output=1.0):
    """(sigmoid(x) - t), divided by the element count for 'mean', times ``grad_output``."""
    return _loss_grad(input, target, reduction, _OP_BCE, grad_output)


def mse_loss(input, target, reduction="mean"):
    """Mean (or sum) of (input - target)^2."""
    return _loss(input, target, reduction, _OP_MSE)


def mse_loss_backward(input, target, reduction="mean", grad_output=1.0):
    return _loss_grad(input, target, reduction, _OP_MSE, grad_output)


def l1_loss(input, target, reduction="mean"):
    """Mean (or sum) of |input - target|."""
    return _loss(input, target, reduction, _OP_L1)


def l1_loss_backward(input, target, reduction="mean", grad_output=1.0):
    """sign(input - target) (0 where equal), divided by the element count for 'mean'."""
    return _loss_grad(input, target, reduction, _OP_L1, grad_output)
