"""Loss modules: ``loss = crit(pred, target)`` is a Python float, ``crit.backward()`` is dL/dpred."""
import numpy as np

from .. import functional as F
from ..functional._checks import check_float
from .module import Module

__all__ = ["CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss", "L1Loss"]

_REDUCTIONS = ("none", "mean", "sum")


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self._ctx = None

    def _prep(self, pred, target):
        if not isinstance(pred, np.ndarray):
            raise TypeError(f"{type(self).__name__}: input must be a numpy array, got {type(pred).__name__}")
        if not isinstance(target, np.ndarray):
            target = np.asarray(target)
        return pred, target

    def backward(self, grad_output=None):
        """dL/dpred of the last call.

        ``grad_output`` scales it: a number for 'mean' and 'sum'; for 'none'
        an array of the loss's shape (default: ones, the gradient of the sum).
        """
        if self._ctx is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before the loss was computed")
        if self.reduction == "none" and grad_output is not None:
            shape = self._loss_shape(self._ctx)
            if np.shape(grad_output) != shape:
                raise ValueError(f"grad_output must have the loss's shape {shape}, got {np.shape(grad_output)}")
        return self._grad(self._ctx, self.reduction, 1.0 if grad_output is None else grad_output)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy of logits (N, C) against integer class labels (N,), of
    (N, C, d1, ...) against (N, d1, ...), or of (C,) against one label; or against class
    probabilities, a float target of the logits' shape.

    ``weight``: per-class weights (C,); ``label_smoothing`` in [0, 1]; rows labelled
    ``ignore_index`` count for nothing (in the loss, its divisor and the gradient).
    """

    def __init__(self, weight=None, *, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.ignore_index = F.loss._check_ignore_index(ignore_index)
        if weight is not None:
            if not isinstance(weight, np.ndarray):
                weight = np.asarray(weight, dtype=np.float32)
            if weight.ndim != 1 or weight.dtype.kind not in "fiu":
                raise ValueError(f"CrossEntropyLoss: weight must be a 1-D float array (C,), got shape "
                                 f"{weight.shape} and dtype {weight.dtype}")
            weight = weight.astype(weight.dtype if weight.dtype.kind == "f" else np.float32)
        self.register_buffer("weight", weight)
        self.label_smoothing = check_float(label_smoothing, "label_smoothing", minimum=0.0, maximum=1.0)

    def _weight_for(self, logits):
        w = self.weight
        if w is not None and w.dtype != logits.dtype:
            w = w.astype(logits.dtype)
        return w

    def forward(self, input, target):
        input, target = self._prep(input, target)
        w = self._weight_for(input)
        self._ctx = (input, target, w)
        loss = F.cross_entropy(input, target, w, self.reduction, self.label_smoothing, self.ignore_index)
        return loss if self.reduction == "none" else float(loss)

    @staticmethod
    def _loss_shape(ctx):
        input = ctx[0]
        return () if input.ndim == 1 else input.shape[:1] + input.shape[2:]

    def _grad(self, ctx, reduction, grad_output):
        input, target, w = ctx
        return F.cross_entropy_backward(input, target, w, reduction, self.label_smoothing,
                                        grad_output=grad_output, ignore_index=self.ignore_index)


class _ElementwiseLoss(_Loss):
    def _prep(self, pred, target):
        pred, target = super()._prep(pred, target)
        if target.dtype.kind not in "fiub":
            raise TypeError(f"{type(self).__name__}: target must be numeric, got dtype {target.dtype}")
        if target.dtype != pred.dtype and pred.dtype.kind == "f":
            target = target.astype(pred.dtype)
        if target.shape != pred.shape:
            raise ValueError(f"{type(self).__name__}: target shape {target.shape} must equal input shape {pred.shape}")
        return pred, target

    def forward(self, input, target):
        input, target = self._prep(input, target)
        self._ctx = (input, target)
        loss = self._fn(input, target, reduction=self.reduction)
        return loss if self.reduction == "none" else float(loss)

    @staticmethod
    def _loss_shape(ctx):
        return ctx[0].shape

    def _grad(self, ctx, reduction, grad_output):
        input, target = ctx
        return self._fn_backward(input, target, reduction=reduction, grad_output=grad_output)


class BCEWithLogitsLoss(_ElementwiseLoss):
    """Sigmoid + binary cross-entropy, computed stably from logits.

    ``weight`` scales each element's loss and ``pos_weight`` the loss of the positive
    targets (for example one per class, (C,), of (N, C) input); each broadcasts to the
    input's shape."""

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        self.register_buffer("weight", _float_buffer(weight, "weight"))
        self.register_buffer("pos_weight", _float_buffer(pos_weight, "pos_weight"))

    def _weights(self, x):
        return tuple(None if v is None else v.astype(x.dtype, copy=False) for v in (self.weight, self.pos_weight))

    def _fn(self, input, target, reduction):
        return F.binary_cross_entropy_with_logits(input, target, reduction, *self._weights(input))

    def _fn_backward(self, input, target, reduction, grad_output):
        return F.binary_cross_entropy_with_logits_backward(input, target, reduction, grad_output,
                                                           *self._weights(input))


def _float_buffer(v, name):
    """A weight given to a loss as a float array (or None)."""
    if v is None:
        return None
    if not isinstance(v, np.ndarray):
        v = np.asarray(v, dtype=np.float32)
    if v.dtype.kind not in "fiu":
        raise TypeError(f"BCEWithLogitsLoss: {name} must be a float array, got dtype {v.dtype}")
    return v.astype(v.dtype if v.dtype.kind == "f" else np.float32)


class MSELoss(_ElementwiseLoss):
    def __init__(self, reduction="mean"):
        super().__init__(reduction)

    @staticmethod
    def _fn(input, target, reduction):
        return F.mse_loss(input, target, reduction=reduction)

    @staticmethod
    def _fn_backward(input, target, reduction, grad_output):
        return F.mse_loss_backward(input, target, reduction, grad_output)


class L1Loss(_ElementwiseLoss):
    def __init__(self, reduction="mean"):
        super().__init__(reduction)

    @staticmethod
    def _fn(input, target, reduction):
        return F.l1_loss(input, target, reduction=reduction)

    @staticmethod
    def _fn_backward(input, target, reduction, grad_output):
        return F.l1_loss_backward(input, target, reduction, grad_output)
