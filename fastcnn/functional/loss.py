"""Losses and their gradients: cross-entropy from logits, BCE with logits, MSE, L1.

Each loss returns a Python float, or with ``reduction='none'`` the unreduced
losses (an array of the input's shape; a row's loss for cross-entropy); each
``*_backward`` returns d loss / d input times ``grad_output`` (1 by default; for
'none', an array of the loss's shape, or a number).
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
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _none_scale(grad_output, shape, dtype):
    """grad_output of an unreduced loss of ``shape``: an array of that shape, or a number."""
    go = np.asarray(grad_output, dtype=dtype)
    if go.ndim and go.shape != shape:
        raise ValueError(f"grad_output must have the loss's shape {shape}, got {go.shape}")
    return go


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


def _check_target(target, shape=None):
    """target as contiguous int32/int64 labels: 1-D, or of ``shape`` where given."""
    if not isinstance(target, np.ndarray):
        if isinstance(target, (list, tuple)):
            target = np.asarray(target)
        else:
            raise TypeError(f"target must be a numpy array of integer class labels, got {type(target).__name__}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class labels (int32 or int64), got dtype {target.dtype}")
    if shape is not None and target.shape != shape:
        raise ValueError(f"target must have shape {shape} (a label per position of the logits but the "
                         f"class dimension), got {target.shape}")
    if shape is None and target.ndim != 1:
        raise ValueError(f"target must be 1-D (one label per row of logits), got shape {target.shape}")
    if target.dtype.char not in "il":
        if target.dtype.kind == "u" and target.size and int(target.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"target labels must be class indices, got {int(target.max())}")
        target = target.astype(np.int64)
    return np.ascontiguousarray(target)


def _bad_label(t, row, C):
    return ValueError(f"target labels must be in [0, {C - 1}], got {int(t[row])} at position {row}")


def _kept_rows(t, ignore_index, C, bad):
    """The rows whose label is not ignore_index, where some are (else None): looked for
    where the kernel found a label out of range, or where ignore_index is a class."""
    if ignore_index is None or not (bad >= 0 or 0 <= ignore_index < C):
        return None
    keep = t != ignore_index
    return None if keep.all() else keep


def _check_ignore_index(ignore_index):
    if ignore_index is None:
        return None
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    return int(ignore_index)


def _check_soft_ignore_index(ignore_index):
    """Class-probability targets have no labels to ignore: as in PyTorch, an
    ``ignore_index`` that names a class (>= 0) is refused with them."""
    ignore_index = _check_ignore_index(ignore_index)
    if ignore_index is not None and ignore_index >= 0:
        raise ValueError("ignore_index is not supported with a float target of class probabilities; "
                         f"got ignore_index={ignore_index} (leave it at -100, or pass integer labels)")


def _ce_rows(logits, target):
    """(N, C, d1, ...) logits and (N, d1, ...) labels as rows (N d1 ..., C) and their labels."""
    x = as_float_array(logits, "logits", contiguous=False)
    t = _check_target(target, x.shape[:1] + x.shape[2:])
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]), t.reshape(-1)


def _ce_unrows(g, shape):
    """The gradient of _ce_rows' rows as the logits' (N, C, d1, ...) shape."""
    return np.ascontiguousarray(np.moveaxis(g.reshape(shape[:1] + shape[2:] + shape[1:2]), -1, 1))


def _ce_per_row(logits, target, weight, label_smoothing, ignore_index):
    """The loss of each row (zero where ignored)."""
    x, t, w, has_w, ls, _ = _ce_args(logits, target, weight, label_smoothing)
    n, c = x.shape
    ignored = t == _check_ignore_index(ignore_index)
    bad = np.flatnonzero(~ignored & ((t < 0) | (t >= c)))
    if bad.size:
        raise _bad_label(t, bad[0], c)
    from .activation import log_softmax
    nll = -log_softmax(x, 1)
    wt = w.astype(x.dtype) if has_w else np.ones(c, dtype=x.dtype)
    t = np.where(ignored, 0, t)
    loss = (1 - ls) * wt[t] * nll[np.arange(n), t]
    if ls:
        loss = loss + ls / c * (nll * wt).sum(axis=1)
    loss[ignored] = 0
    return loss.astype(x.dtype, copy=False)


def _is_soft(target):
    return isinstance(target, np.ndarray) and target.dtype.kind == "f"


def _ce_soft(logits, target, weight, reduction, label_smoothing, grad_output=None):
    """Cross-entropy against class probabilities ``target`` (the logits' shape), PyTorch's:
    loss_i = -sum_c w[c] q_ic log softmax(x_i)_c with q = (1 - ls) p + ls / C; 'mean'
    divides by the number of rows. With ``grad_output`` given: the gradient instead,
    softmax(x_i) sum_c w[c] q_ic - w q_i, times grad_output (per row for 'none')."""
    from .activation import log_softmax
    x = as_float_array(logits, "logits", contiguous=False)
    if x.ndim < 1:
        raise ValueError(f"logits must be (C,), (N, C) or (N, C, d1, ...), got shape {x.shape}")
    p = as_float_array(target, "target", contiguous=False)
    if p.shape != x.shape:
        raise ValueError(f"target of class probabilities (a float array) must have the logits' shape {x.shape}, "
                         f"got {p.shape}; class labels are integers")
    ls = check_float(label_smoothing, "label_smoothing", 0.0, 1.0)
    ax = 0 if x.ndim == 1 else 1
    C = x.shape[ax]
    along = (C,) + (1,) * (x.ndim - ax - 1)       # a vector along the class axis
    w = 1
    if weight is not None:
        w = as_float_array(weight, "weight", ndim=1)
        if w.shape != (C,):
            raise ValueError(f"weight must have shape ({C},) (one per class), got {w.shape}")
        w = w.astype(x.dtype).reshape(along)
    q = p.astype(x.dtype, copy=False)
    if ls:
        q = q * (1 - ls) + ls / C
    logp = log_softmax(np.ascontiguousarray(x), ax)
    rows = x.size // C
    if grad_output is None:
        loss = -(w * q * logp).sum(axis=ax)
        if reduction == "none":
            return loss.astype(x.dtype, copy=False)
        s = float(loss.sum(dtype=np.float64))
        return s / rows if _reduction(reduction) else s
    wq = w * q
    g = np.exp(logp) * wq.sum(axis=ax, keepdims=True) - wq
    if reduction == "none":
        scale = np.expand_dims(_none_scale(grad_output, x.shape[:ax] + x.shape[ax + 1:], x.dtype), ax)
    else:
        scale = float(grad_output) / max(1, rows) if _reduction(reduction) else float(grad_output)
    return np.ascontiguousarray(g * scale, dtype=x.dtype)


def cross_entropy(logits, target, weight=None, reduction="mean", label_smoothing=0.0, ignore_index=-100):
    """Cross-entropy of ``logits`` (N, C) against integer labels ``target`` (N,), PyTorch's formula:

    loss_i = (1 - ls) * w[t_i] * (lse_i - x_it) + ls / C * sum_c w[c] * (lse_i - x_ic);
    'mean' divides the sum by sum_i w[t_i] (N without weight). Rows labelled
    ``ignore_index`` count for nothing, in the sum and in the divisor. Logits
    (N, C, d1, ...) with labels (N, d1, ...) count every position as a row; logits
    (C,) with a 0-d label are one row. A float ``target`` of the logits' shape holds
    class probabilities instead (see _ce_soft).
    """
    if _is_soft(target):
        _check_soft_ignore_index(ignore_index)
        return _ce_soft(logits, target, weight, reduction, label_smoothing)
    if getattr(logits, "ndim", 2) == 1:
        loss = cross_entropy(logits[None], _check_target(target, ()).reshape(1), weight, reduction,
                             label_smoothing, ignore_index)
        return loss.reshape(()) if reduction == "none" else loss
    if getattr(logits, "ndim", 2) > 2:
        x, t = _ce_rows(logits, target)
        loss = cross_entropy(x, t, weight, reduction, label_smoothing, ignore_index)
        return loss.reshape(logits.shape[:1] + logits.shape[2:]) if reduction == "none" else loss
    if reduction == "none":
        return _ce_per_row(logits, target, weight, label_smoothing, ignore_index)
    mean = reduction == "mean" or _reduction(reduction)
    x, t, w, has_w, ls, nt = _ce_args(logits, target, weight, label_smoothing)
    C = x.shape[1]
    ignore_index = _check_ignore_index(ignore_index)
    keep = _kept_rows(t, ignore_index, C, -1)
    if keep is None:
        total, denom, bad = (_k or _kernels()).cross_entropy_forward(x, t, w, has_w, ls, nt)
        keep = _kept_rows(t, ignore_index, C, bad)
        if keep is None and bad >= 0:
            raise _bad_label(t, bad, C)
    if keep is not None:
        rows = np.flatnonzero(keep)
        total, denom, bad = (_k or _kernels()).cross_entropy_forward(x[rows], t[rows], w, has_w, ls, nt)
        if bad >= 0:
            raise _bad_label(t, rows[bad], C)
    if not mean:
        return total
    return total / denom if denom else float("nan")


def cross_entropy_backward(logits, target, weight=None, reduction="mean", label_smoothing=0.0,
                           grad_output=1.0, ignore_index=-100):
    """d cross_entropy / d logits, times ``grad_output`` (zero on rows labelled ``ignore_index``)."""
    if _is_soft(target):
        _check_soft_ignore_index(ignore_index)
        return _ce_soft(logits, target, weight, reduction, label_smoothing, grad_output)
    if getattr(logits, "ndim", 2) == 1:
        if reduction == "none":
            grad_output = _none_scale(grad_output, (), logits.dtype).reshape(1)
        return cross_entropy_backward(logits[None], _check_target(target, ()).reshape(1), weight, reduction,
                                      label_smoothing, grad_output, ignore_index)[0]
    if getattr(logits, "ndim", 2) > 2:
        x, t = _ce_rows(logits, target)
        if reduction == "none":
            grad_output = _none_scale(grad_output, logits.shape[:1] + logits.shape[2:], x.dtype).reshape(-1)
        return _ce_unrows(cross_entropy_backward(x, t, weight, reduction, label_smoothing, grad_output,
                                                 ignore_index), logits.shape)
    if reduction == "none":
        g = cross_entropy_backward(logits, target, weight, "sum", label_smoothing, 1.0, ignore_index)
        g *= _none_scale(grad_output, g.shape[:1], g.dtype)[..., None]
        return g
    mean = reduction == "mean" or _reduction(reduction)
    x, t, w, has_w, ls, nt = _ce_args(logits, target, weight, label_smoothing)
    C = x.shape[1]
    ignore_index = _check_ignore_index(ignore_index)
    keep = _kept_rows(t, ignore_index, C, -1)
    if keep is None:
        gx = np.empty_like(x)
        bad = (_k or _kernels()).cross_entropy_backward(x, t, w, has_w, ls, mean, float(grad_output), gx, nt)
        keep = _kept_rows(t, ignore_index, C, bad)
        if keep is None:
            if bad >= 0:
                raise _bad_label(t, bad, C)
            return gx
    rows = np.flatnonzero(keep)
    g = np.empty((rows.size, C), dtype=x.dtype)
    bad = (_k or _kernels()).cross_entropy_backward(x[rows], t[rows], w, has_w, ls, mean, float(grad_output),
                                                    g, nt)
    if bad >= 0:
        raise _bad_label(t, rows[bad], C)
    gx = np.zeros_like(x)
    gx[rows] = g
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
    t = np.asarray(t, dtype=x.dtype, order="C")   # (a 0-d target stays 0-d)
    return x, t, (1 if x.size < _SERIAL_BELOW else n_threads())


_ELEMENTWISE = {
    _OP_BCE: lambda x, t: np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x))),
    _OP_MSE: lambda x, t: (x - t) ** 2,
    _OP_L1: lambda x, t: np.abs(x - t),
}


def _loss(input, target, reduction, op):
    if reduction == "none":
        x, t, _ = _pair(input, target)
        return _ELEMENTWISE[op](x, t).astype(x.dtype, copy=False)
    mean = _reduction(reduction)
    x, t, nt = _pair(input, target)
    s = (_k or _kernels()).elementwise_loss_sum(x.reshape(-1), t.reshape(-1), op, nt)
    if mean and x.size == 0:
        return float("nan")  # the mean of no elements, as PyTorch
    return s / x.size if mean else s


def _loss_grad(input, target, reduction, op, grad_output):
    if reduction == "none":
        gx = _loss_grad(input, target, "sum", op, 1.0)
        gx *= _none_scale(grad_output, gx.shape, gx.dtype)
        return gx
    mean = _reduction(reduction)
    x, t, nt = _pair(input, target)
    gx = np.empty_like(x)
    scale = float(grad_output) / max(1, x.size) if mean else float(grad_output)
    (_k or _kernels()).elementwise_loss_grad(x.reshape(-1), t.reshape(-1), gx.reshape(-1), op, scale, nt)
    return gx


def _bce_weights(x, weight, pos_weight):
    """weight and pos_weight as arrays of x's dtype that broadcast to x's shape (or None)."""
    out = []
    for v, name in ((weight, "weight"), (pos_weight, "pos_weight")):
        if v is not None:
            v = as_float_array(v, name, contiguous=False)
            try:
                shape = np.broadcast_shapes(v.shape, x.shape)
            except ValueError:
                shape = None
            if shape != x.shape:
                raise ValueError(f"{name} of shape {v.shape} must broadcast to the input's shape {x.shape}")
            v = v.astype(x.dtype, copy=False)
        out.append(v)
    return out


def _bce_terms(x, t, weight, pos_weight):
    """softplus(-x) and softplus(x), the coefficient of the first (t, or pos_weight t), weight."""
    w, pw = _bce_weights(x, weight, pos_weight)
    # -log sigmoid(x) and -log(1 - sigmoid(x))
    return np.logaddexp(0, -x), np.logaddexp(0, x), (t if pw is None else pw * t), w


def _bce_elementwise(input, target, weight=None, pos_weight=None):
    """The unreduced loss: weight [pos_weight t softplus(-x) + (1 - t) softplus(x)]."""
    x, t, _ = _pair(input, target)
    sp_neg, sp_pos, a, w = _bce_terms(x, t, weight, pos_weight)
    loss = a * sp_neg + (1 - t) * sp_pos
    return loss if w is None else loss * w


def binary_cross_entropy_with_logits(input, target, reduction="mean", weight=None, pos_weight=None):
    """Binary cross-entropy on logits: max(x, 0) - x t + log(1 + exp(-|x|)), finite for any x.

    ``weight`` scales each element's loss and ``pos_weight`` the positive term
    (PyTorch's), each broadcast to the input's shape."""
    if weight is None and pos_weight is None:
        return _loss(input, target, reduction, _OP_BCE)
    loss = _bce_elementwise(input, target, weight, pos_weight)
    if reduction == "none":
        return loss
    mean = _reduction(reduction)
    if mean and loss.size == 0:
        return float("nan")
    s = float(loss.sum(dtype=np.float64))
    return s / loss.size if mean else s


def binary_cross_entropy_with_logits_backward(input, target, reduction="mean", grad_output=1.0, weight=None,
                                              pos_weight=None):
    """(sigmoid(x) - t), divided by the element count for 'mean', times ``grad_output``; with
    weights, weight [(1 - t + pos_weight t) sigmoid(x) - pos_weight t]."""
    if weight is None and pos_weight is None:
        return _loss_grad(input, target, reduction, _OP_BCE, grad_output)
    x, t, _ = _pair(input, target)
    _, _, a, w = _bce_terms(x, t, weight, pos_weight)
    # (1 - t + a) sigmoid(x) - a as (1 - t) sigmoid(x) - a sigmoid(-x), each sigmoid
    # from exp(-|x|) (no cancellation: both keep their relative precision)
    e = np.exp(-np.abs(x))
    pos = x >= 0
    s = np.where(pos, 1, e) / (1 + e)       # sigmoid(x)
    sc = np.where(pos, e, 1) / (1 + e)      # sigmoid(-x)
    g = (1 - t) * s - a * sc
    if w is not None:
        g = g * w
    if reduction == "none":
        return (g * _none_scale(grad_output, x.shape, x.dtype)).astype(x.dtype, copy=False)
    scale = float(grad_output) / max(1, x.size) if _reduction(reduction) else float(grad_output)
    return (g * scale).astype(x.dtype, copy=False)


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
