"""Hostile inputs: every public function and module fed what it must refuse.

Table-driven. Each case states what must happen:

  raises     a ValueError or TypeError (with a message), nothing else
  nan        NaN / inf inputs: the call returns and the result is documented
             (``NAN_RESULTS`` below: the non-finite values propagate, except
             where the function is bounded, e.g. tanh(inf) = 1)
  empty      zero-size batches or channels: an empty result of the right
             shape, or a ValueError when the op needs data (documented per op)

Huge sizes are built from zero-stride views (``np.broadcast_to``), so no
test allocates them; each must be refused with a ValueError *before* any
allocation (the sizes are chosen larger than any machine's memory, so an
attempted allocation shows up as a MemoryError and fails the case instead of
exhausting memory). Every case runs in-process; a Python exception of any
other type fails that case only. The summary line
``hostile inputs: N cases, ...`` is printed at the end of the run.
"""
import json
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import checkpoint, nn

f32, f64 = np.float32, np.float64
BAD_DTYPES = [np.int32, np.int64, np.bool_, object, np.complex64, np.complex128, np.float16]
COUNTS = {"cases": 0, "raised": 0, "documented": 0}
OBSERVED = {}


def A(*shape, dtype=f32, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(dtype)


def huge(shape, dtype=f32):
    """A read-only zero-stride view of any shape: costs no memory."""
    return np.broadcast_to(np.ones((), dtype=dtype), shape)


def labels(n, c, seed=0):
    return np.random.default_rng(seed).integers(0, c, n).astype(np.int64)


# ---------------------------------------------------------------------------
# the functional API: one entry per public function, called with its primary argument


def dt(x):
    d = getattr(x, "dtype", None)
    return d if d in (f32, f64) else f32


def dim(x, i, default):
    try:
        return int(x.shape[i])
    except (AttributeError, IndexError, TypeError):
        return default


def shp(x, default=(2, 3, 4)):
    return getattr(x, "shape", default)


def _bn(x):
    c = dim(x, 1, 3)
    return F.batch_norm(x, np.zeros(c), np.ones(c), training=True)


def _bn_backward(g):
    x = A(4, 3, 5, 5)
    y, m, s = F.batch_norm(x, None, None, training=True)
    return F.batch_norm_backward(g, x, None, m, s)


def _maxpool_backward(g):
    x = A(2, 3, 8, 8)
    _, idx = F.max_pool2d(x, 2, return_indices=True)
    gs = shp(g)
    if gs != idx.shape:
        idx = np.zeros(gs, dtype=np.int64)
    return F.max_pool2d_backward(g, idx, gs[:-2] + (dim(g, -2, 1) * 2, dim(g, -1, 1) * 2))


# name -> (call with the primary argument, a valid primary shape, the ndims it accepts or None for any)
FUNCTIONAL = {
    "conv2d": (lambda x: F.conv2d(x, A(4, 3, 3, 3, dtype=dt(x))),
               (2, 3, 8, 8), (3, 4)),
    "conv2d_backward": (lambda x: F.conv2d_backward(A(2, 4, 6, 6), x, A(4, 3, 3, 3)), (2, 3, 8, 8), (3, 4)),
    "conv2d_backward[grad_out]": (lambda g: F.conv2d_backward(g, A(2, 3, 8, 8), A(4, 3, 3, 3)),
                                  (2, 4, 6, 6), (3, 4)),
    "conv_transpose2d": (lambda x: F.conv_transpose2d(x, A(3, 2, 3, 3)), (2, 3, 5, 5), (3, 4)),
    "conv_transpose2d_backward": (lambda g: F.conv_transpose2d_backward(g, A(2, 3, 5, 5), A(3, 2, 3, 3)),
                                  (2, 2, 7, 7), (3, 4)),
    "max_pool2d": (lambda x: F.max_pool2d(x, 2, return_indices=True), (2, 3, 8, 8), (3, 4)),
    "max_pool2d_backward": (_maxpool_backward, (2, 3, 4, 4), (3, 4)),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2), (2, 3, 8, 8), (3, 4)),
    "avg_pool2d_backward": (lambda g: F.avg_pool2d_backward(g, shp(g)[:-2] + (8, 8), 2), (2, 3, 4, 4), (3, 4)),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, 2), (2, 3, 8, 8), (3, 4)),
    "adaptive_avg_pool2d_backward": (lambda g: F.adaptive_avg_pool2d_backward(g, shp(g)[:-2] + (8, 8)),
                                     (2, 3, 2, 2), (3, 4)),
    "upsample_nearest2d": (lambda x: F.upsample_nearest2d(x, 2), (2, 3, 4, 4), (3, 4)),
    "upsample_nearest2d_backward": (lambda g: F.upsample_nearest2d_backward(g, 2), (2, 3, 8, 8), (3, 4)),
    "interpolate": (lambda x: F.interpolate(x, scale_factor=1.5), (2, 3, 4, 4), (3, 4)),
    "interpolate_backward": (lambda g: F.interpolate_backward(g, shp(g)[:-2] + (4, 4), scale_factor=1.5),
                             (2, 3, 6, 6), (3, 4)),
    "relu": (lambda x: F.relu(x), (2, 3, 4), None),
    "relu_backward": (lambda g: F.relu_backward(g, np.abs(A(*shp(g))) + 1), (2, 3, 4), None),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), (2, 3, 4), None),
    "leaky_relu_backward": (lambda g: F.leaky_relu_backward(g, A(*shp(g)), 0.1), (2, 3, 4), None),
    "tanh": (lambda x: F.tanh(x), (2, 3, 4), None),
    "tanh_backward": (lambda g: F.tanh_backward(g, A(*shp(g)) * 0.5), (2, 3, 4), None),
    "sigmoid": (lambda x: F.sigmoid(x), (2, 3, 4), None),
    "sigmoid_backward": (lambda g: F.sigmoid_backward(g, np.abs(A(*shp(g))) * 0.5), (2, 3, 4), None),
    "softmax": (lambda x: F.softmax(x, dim=-1), (2, 5), None),
    "softmax_backward": (lambda g: F.softmax_backward(g, F.softmax(A(*shp(g)), -1), dim=-1), (2, 5), None),
    "log_softmax": (lambda x: F.log_softmax(x, dim=-1), (2, 5), None),
    "log_softmax_backward": (lambda g: F.log_softmax_backward(g, F.log_softmax(A(*shp(g)), -1), dim=-1),
                             (2, 5), None),
    "dropout": (lambda x: F.dropout(x, 0.0, training=True, rng=0), (2, 3, 4), None),
    "dropout_backward": (lambda g: F.dropout_backward(g, np.ones(shp(g), dtype=bool), 0.5), (2, 3, 4), None),
    "batch_norm": (_bn, (4, 3, 5, 5), (2, 4)),
    "batch_norm_backward": (_bn_backward, (4, 3, 5, 5), (2, 4)),
    "cross_entropy": (lambda x: F.cross_entropy(x, labels(dim(x, 0, 4), dim(x, 1, 1))), (4, 5), (2,)),
    "cross_entropy_backward": (lambda x: F.cross_entropy_backward(x, labels(dim(x, 0, 4), dim(x, 1, 1))),
                               (4, 5), (2,)),
    "binary_cross_entropy_with_logits": (lambda x: F.binary_cross_entropy_with_logits(x, np.ones(shp(x), f32)),
                                         (4, 5), None),
    "binary_cross_entropy_with_logits_backward": (
        lambda x: F.binary_cross_entropy_with_logits_backward(x, np.ones(shp(x), f32)), (4, 5), None),
    "mse_loss": (lambda x: F.mse_loss(x, np.zeros(shp(x), f32)), (4, 5), None),
    "mse_loss_backward": (lambda x: F.mse_loss_backward(x, np.zeros(shp(x), f32)), (4, 5), None),
    "l1_loss": (lambda x: F.l1_loss(x, np.zeros(shp(x), f32)), (4, 5), None),
    "l1_loss_backward": (lambda x: F.l1_loss_backward(x, np.zeros(shp(x), f32)), (4, 5), None),
    "matmul": (lambda a: F.matmul(a, A(dim(a, -1, 1), 3, dtype=dt(a))),
               (4, 5), (2,)),
    "linear": (lambda x: F.linear(x, A(3, dim(x, -1, 1))), (4, 5), (2,)),
    "linear_backward": (lambda x: F.linear_backward(A(dim(x, 0, 1), 3), x, A(3, dim(x, -1, 1))),
                        (4, 5), (2,)),
}

# what NaN / inf inputs give, per function (the documented result)
NAN_RESULTS = {
    "default": "NaN and inf propagate into the result (no error, no crash)",
    "tanh": "NaN propagates; tanh(+-inf) = +-1",
    "sigmoid": "NaN propagates; sigmoid(+inf) = 1, sigmoid(-inf) = 0",
    "softmax": "a row holding NaN or +inf gives NaN",
    "log_softmax": "a row holding NaN or +inf gives NaN",
    "max_pool2d": "NaN wins the window (as PyTorch); +inf is the maximum",
    "relu_backward": "the gradient passes through where the output is > 0 (NaN included)",
    "dropout": "kept elements keep their NaN/inf; dropped elements are exactly 0",
}


def _functional_cases():
    cases = []
    for name, (call, shape, ndims) in FUNCTIONAL.items():
        def c(x, call=call):
            return lambda: call(x)
        for dt in BAD_DTYPES:
            cases.append((f"F.{name}-dtype-{np.dtype(dt).name}", c(A(*shape).astype(dt)), "raises"))
        for bad in (None, "abc", {"a": 1}, object()):
            cases.append((f"F.{name}-not-an-array-{type(bad).__name__}", c(bad), "raises"))
        if ndims is not None:
            for nd in (0, 1, 5):
                if nd not in ndims:
                    cases.append((f"F.{name}-ndim-{nd}", c(A(*((2,) * nd)) if nd else np.float32(1.0)), "raises"))
        if len(shape) >= 2:
            z = list(shape)
            z[0] = 0
            cases.append((f"F.{name}-zero-batch", c(A(*z)), "empty"))
            z = list(shape)
            z[1] = 0
            cases.append((f"F.{name}-zero-channels", c(A(*z)), "empty"))
        for kind, value in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf)):
            x = A(*shape)
            x.reshape(-1)[::3] = value
            cases.append((f"F.{name}-{kind}", c(x), ("nan", name, kind)))
    return cases


def _argument_cases():
    """Geometry and argument checks: negative or zero kernels and strides, oversized padding, labels."""
    x, w = A(2, 3, 8, 8), A(4, 3, 3, 3)
    wt = A(3, 2, 3, 3)
    R = "raises"
    cases = [
        ("conv2d-stride-0", lambda: F.conv2d(x, w, stride=0), R),
        ("conv2d-stride-negative", lambda: F.conv2d(x, w, stride=-1), R),
        ("conv2d-stride-float", lambda: F.conv2d(x, w, stride=1.5), R),
        ("conv2d-stride-bool", lambda: F.conv2d(x, w, stride=True), R),
        ("conv2d-stride-triple", lambda: F.conv2d(x, w, stride=(1, 1, 1)), R),
        ("conv2d-stride-2**40", lambda: F.conv2d(x, w, stride=2 ** 40), R),
        ("conv2d-dilation-0", lambda: F.conv2d(x, w, dilation=0), R),
        ("conv2d-padding-negative", lambda: F.conv2d(x, w, padding=-1), R),
        ("conv2d-padding-word", lambda: F.conv2d(x, w, padding="full"), R),
        ("conv2d-padding-same-strided", lambda: F.conv2d(x, w, stride=2, padding="same"), R),
        ("conv2d-groups-0", lambda: F.conv2d(x, w, groups=0), R),
        ("conv2d-groups-not-dividing", lambda: F.conv2d(x, w, groups=2), R),
        ("conv2d-kernel-larger-than-input", lambda: F.conv2d(x, A(4, 3, 9, 9)), R),
        ("conv2d-kernel-zero-size", lambda: F.conv2d(x, A(4, 3, 0, 3)), R),
        ("conv2d-weight-channels", lambda: F.conv2d(x, A(4, 2, 3, 3)), R),
        ("conv2d-weight-3d", lambda: F.conv2d(x, A(4, 3, 3)), R),
        ("conv2d-weight-int", lambda: F.conv2d(x, np.ones((4, 3, 3, 3), np.int32)), R),
        ("conv2d-weight-dtype-mismatch", lambda: F.conv2d(x, w.astype(f64)), R),
        ("conv2d-bias-shape", lambda: F.conv2d(x, w, A(3)), R),
        ("conv2d-activation", lambda: F.conv2d(x, w, activation="gelu"), R),
        ("conv2d_backward-grad-shape", lambda: F.conv2d_backward(A(2, 4, 5, 5), x, w), R),
        ("conv_transpose2d-output-padding", lambda: F.conv_transpose2d(A(2, 3, 5, 5), wt, stride=2, output_padding=2), R),
        ("conv_transpose2d-padding-same", lambda: F.conv_transpose2d(A(2, 3, 5, 5), wt, padding="same"), R),
        ("conv_transpose2d-padding-too-large", lambda: F.conv_transpose2d(A(2, 3, 1, 1), wt, padding=5), R),
        ("conv_transpose2d-weight-channels", lambda: F.conv_transpose2d(A(2, 3, 5, 5), A(2, 2, 3, 3)), R),
        ("conv_transpose2d-stride-0", lambda: F.conv_transpose2d(A(2, 3, 5, 5), wt, stride=0), R),
        ("max_pool2d-kernel-0", lambda: F.max_pool2d(x, 0), R),
        ("max_pool2d-kernel-negative", lambda: F.max_pool2d(x, -2), R),
        ("max_pool2d-stride-0", lambda: F.max_pool2d(x, 2, stride=0), R),
        ("max_pool2d-padding-over-half", lambda: F.max_pool2d(x, 2, padding=2), R),
        ("max_pool2d-dilation-0", lambda: F.max_pool2d(x, 2, dilation=0), R),
        ("max_pool2d-kernel-larger-than-input", lambda: F.max_pool2d(x, 9), R),
        ("max_pool2d-ceil-mode-str", lambda: F.max_pool2d(x, 2, ceil_mode="yes"), R),
        ("max_pool2d-kernel-2**40", lambda: F.max_pool2d(x, 2 ** 40), R),
        ("max_pool2d_backward-float-indices", lambda: F.max_pool2d_backward(A(2, 3, 4, 4), A(2, 3, 4, 4), (2, 3, 8, 8)), R),
        ("max_pool2d_backward-indices-shape", lambda: F.max_pool2d_backward(A(2, 3, 4, 4), np.zeros((2, 3, 4), np.int64), (2, 3, 8, 8)), R),
        ("max_pool2d_backward-input-shape", lambda: F.max_pool2d_backward(A(2, 3, 4, 4), np.zeros((2, 3, 4, 4), np.int64), (2, 4, 8, 8)), R),
        ("max_pool2d_backward-input-shape-negative", lambda: F.max_pool2d_backward(A(2, 3, 4, 4), np.zeros((2, 3, 4, 4), np.int64), (2, 3, -8, 8)), R),
        ("max_pool2d_backward-input-shape-str", lambda: F.max_pool2d_backward(A(2, 3, 4, 4), np.zeros((2, 3, 4, 4), np.int64), "abc"), R),
        ("avg_pool2d-kernel-0", lambda: F.avg_pool2d(x, 0), R),
        ("avg_pool2d-stride-negative", lambda: F.avg_pool2d(x, 2, stride=-1), R),
        ("avg_pool2d-padding-over-half", lambda: F.avg_pool2d(x, 3, padding=2), R),
        ("avg_pool2d-count-include-pad-str", lambda: F.avg_pool2d(x, 2, count_include_pad="no"), R),
        ("avg_pool2d_backward-grad-size", lambda: F.avg_pool2d_backward(A(2, 3, 3, 3), (2, 3, 8, 8), 2), R),
        ("adaptive_avg_pool2d-output-0", lambda: F.adaptive_avg_pool2d(x, 0), R),
        ("adaptive_avg_pool2d-output-negative", lambda: F.adaptive_avg_pool2d(x, -1), R),
        ("upsample-scale-0", lambda: F.upsample_nearest2d(x, 0), R),
        ("upsample-scale-float", lambda: F.upsample_nearest2d(x, 1.5), R),
        ("upsample_backward-not-multiple", lambda: F.upsample_nearest2d_backward(A(2, 3, 7, 7), 2), R),
        ("relu-inplace-readonly", lambda: F.relu(huge((2, 3)), inplace=True), R),
        ("relu-inplace-int", lambda: F.relu(np.ones(3, np.int32), inplace=True), R),
        ("relu_backward-shape-mismatch", lambda: F.relu_backward(A(2, 3), A(3, 2)), R),
        ("leaky_relu-slope-str", lambda: F.leaky_relu(x, "0.1"), R),
        ("leaky_relu-slope-nan", lambda: F.leaky_relu(x, float("nan")), R),
        ("softmax-dim-out-of-range", lambda: F.softmax(A(2, 5), dim=2), R),
        ("softmax-dim-float", lambda: F.softmax(A(2, 5), dim=1.0), R),
        ("softmax-scalar", lambda: F.softmax(np.float32(1.0).reshape(()), dim=0), R),
        ("dropout-p-negative", lambda: F.dropout(x, -0.1), R),
        ("dropout-p-above-1", lambda: F.dropout(x, 1.5), R),
        ("dropout-p-nan", lambda: F.dropout(x, float("nan")), R),
        ("dropout-rng-str", lambda: F.dropout(x, 0.5, rng="seed"), R),
        ("dropout_backward-mask-shape", lambda: F.dropout_backward(x, np.ones((2, 3), bool), 0.5), R),
        ("dropout_backward-mask-float", lambda: F.dropout_backward(x, np.ones(shp(x), f32), 0.5), R),
        ("batch_norm-running-shape", lambda: F.batch_norm(x, np.zeros(4), np.ones(4), training=True), R),
        ("batch_norm-running-readonly", lambda: F.batch_norm(x, huge((3,), f64), huge((3,), f64), training=True), R),
        ("batch_norm-running-int", lambda: F.batch_norm(x, np.zeros(3, np.int64), np.ones(3, np.int64), training=True), R),
        ("batch_norm-only-one-running", lambda: F.batch_norm(x, np.zeros(3), None, training=True), R),
        ("batch_norm-eps-negative", lambda: F.batch_norm(x, np.zeros(3), np.ones(3), eps=-1.0), R),
        ("batch_norm-momentum-2", lambda: F.batch_norm(x, np.zeros(3), np.ones(3), momentum=2.0), R),
        ("batch_norm-weight-shape", lambda: F.batch_norm(x, np.zeros(3), np.ones(3), weight=np.ones(2)), R),
        ("batch_norm-one-value-per-channel", lambda: F.batch_norm(A(1, 3), None, None, training=True), R),
        ("batch_norm-eval-no-running", lambda: F.batch_norm(x, None, None, training=False), R),
        ("batch_norm_backward-grad-shape", lambda: F.batch_norm_backward(A(2, 3, 8, 7), x, None, np.zeros(3), np.ones(3)), R),
        ("cross_entropy-label-negative", lambda: F.cross_entropy(A(4, 5), np.array([0, 1, -1, 2])), R),
        ("cross_entropy-label-too-large", lambda: F.cross_entropy(A(4, 5), np.array([0, 1, 5, 2])), R),
        ("cross_entropy-label-huge", lambda: F.cross_entropy(A(4, 5), np.array([0, 1, 2 ** 62, 2])), R),
        ("cross_entropy_backward-label-too-large", lambda: F.cross_entropy_backward(A(4, 5), np.array([0, 1, 5, 2])), R),
        ("cross_entropy-label-uint64-huge", lambda: F.cross_entropy(A(4, 5), np.array([0, 1, 2 ** 63, 2], np.uint64)), R),
        ("cross_entropy-label-float", lambda: F.cross_entropy(A(4, 5), np.array([0.0, 1.0, 2.0, 3.0])), R),
        ("cross_entropy-label-bool", lambda: F.cross_entropy(A(4, 5), np.array([True, False, True, False])), R),
        ("cross_entropy-label-object", lambda: F.cross_entropy(A(4, 5), np.array([0, 1, 2, 3], object)), R),
        ("cross_entropy-label-2d", lambda: F.cross_entropy(A(4, 5), np.zeros((4, 1), np.int64)), R),
        ("cross_entropy-label-length", lambda: F.cross_entropy(A(4, 5), np.zeros(3, np.int64)), R),
        ("cross_entropy-weight-shape", lambda: F.cross_entropy(A(4, 5), labels(4, 5), weight=np.ones(4)), R),
        ("cross_entropy-smoothing-2", lambda: F.cross_entropy(A(4, 5), labels(4, 5), label_smoothing=2.0), R),
        ("cross_entropy-reduction", lambda: F.cross_entropy(A(4, 5), labels(4, 5), reduction="avg"), R),
        ("cross_entropy-zero-classes", lambda: F.cross_entropy(A(4, 0), np.zeros(4, np.int64)), R),
        ("bce-target-shape", lambda: F.binary_cross_entropy_with_logits(A(4, 5), np.ones((5, 4), f32)), R),
        ("bce-target-object", lambda: F.binary_cross_entropy_with_logits(A(2), np.array([1, 0], object)), R),
        ("mse-target-complex", lambda: F.mse_loss(A(2), np.ones(2, np.complex64)), R),
        ("l1-reduction", lambda: F.l1_loss(A(2), A(2), reduction="none!"), R),
        ("matmul-inner-mismatch", lambda: F.matmul(A(4, 5), A(4, 5)), R),
        ("matmul-dtype-mismatch", lambda: F.matmul(A(4, 5), A(5, 3, dtype=f64)), R),
        ("linear-weight-shape", lambda: F.linear(A(4, 5), A(3, 4)), R),
        ("linear-activation", lambda: F.linear(A(4, 5), A(3, 5), activation="swish"), R),
        ("linear_backward-grad-shape", lambda: F.linear_backward(A(4, 2), A(4, 5), A(3, 5)), R),
        ("threads-0", lambda: fastcnn.set_num_threads(0), R),
        ("threads-str", lambda: fastcnn.threads("2").__enter__(), R),
    ]
    return cases


def _huge_cases():
    """Sizes that overflow the kernels' C ints or any memory: refused before allocating."""
    R = "raises"
    return [
        ("huge-conv2d-per-image-input", lambda: F.conv2d(huge((1, 1, 50000, 50000)), A(1, 1, 1, 1)), R),
        ("huge-conv2d-padding-output", lambda: F.conv2d(A(1, 1, 4, 4), A(1, 1, 1, 1), padding=30000), R),
        ("huge-conv2d-channels-x-kernel", lambda: F.conv2d(huge((1, 300000, 100, 100)), huge((1, 300000, 100, 100))), R),
        ("huge-conv2d-batch-memory", lambda: F.conv2d(huge((10 ** 9, 1, 64, 64)), A(64, 1, 1, 1)), R),
        ("huge-conv2d_backward", lambda: F.conv2d_backward(huge((1, 1, 50000, 50000)), huge((1, 1, 50000, 50000)),
                                                           A(1, 1, 1, 1)), R),
        ("huge-conv_transpose2d-stride", lambda: F.conv_transpose2d(A(1, 1, 100, 100), A(1, 1, 1, 1), stride=10 ** 5), R),
        ("huge-conv_transpose2d-channels", lambda: F.conv_transpose2d(A(1, 1, 200, 200), huge((1, 10 ** 6, 3, 3))), R),
        ("huge-conv_transpose2d-batch", lambda: F.conv_transpose2d(huge((10 ** 8, 1, 64, 64)), A(1, 8, 3, 3), stride=2), R),
        ("huge-max_pool2d-input", lambda: F.max_pool2d(huge((1, 1, 10 ** 6, 10 ** 6)), 1), R),
        ("huge-avg_pool2d-input", lambda: F.avg_pool2d(huge((10 ** 6, 10 ** 6, 8, 8)), 1), R),
        ("huge-adaptive-output", lambda: F.adaptive_avg_pool2d(A(1, 1, 4, 4), 10 ** 9), R),
        ("huge-upsample-scale", lambda: F.upsample_nearest2d(A(1, 1, 4, 4), 10 ** 6), R),
        ("huge-upsample-batch", lambda: F.upsample_nearest2d(huge((10 ** 8, 64, 8, 8)), 2), R),
        ("huge-relu", lambda: F.relu(huge((10 ** 13,))), R),
        ("huge-softmax", lambda: F.softmax(huge((10 ** 7, 10 ** 6)), -1), R),
        ("huge-batch_norm", lambda: F.batch_norm(huge((10 ** 7, 10 ** 6)), None, None, training=True), R),
        ("huge-cross_entropy", lambda: F.cross_entropy(huge((10 ** 12, 2)), np.zeros(2, np.int64)), R),
        ("huge-mse", lambda: F.mse_loss(huge((10 ** 12,)), huge((10 ** 12,))), R),
        ("huge-matmul-output", lambda: F.matmul(huge((10 ** 6, 1)), huge((1, 10 ** 6))), R),
        ("huge-matmul-k-over-int", lambda: F.matmul(huge((1, 3 * 10 ** 9)), huge((3 * 10 ** 9, 1))), R),
        ("huge-linear", lambda: F.linear(huge((10 ** 10, 4)), A(3, 4)), R),
        ("huge-linear-features", lambda: F.linear(huge((1, 3 * 10 ** 9)), huge((1, 3 * 10 ** 9))), R),
        ("huge-Conv2d-module", lambda: nn.Conv2d(1, 1, 1)(huge((1, 1, 50000, 50000))), R),
        ("huge-Linear-module", lambda: nn.Linear(4, 3)(huge((10 ** 10, 4))), R),
    ]


# ---------------------------------------------------------------------------
# modules


def _module_cases():
    R = "raises"
    x4 = A(2, 3, 8, 8)
    cases = [
        ("Conv2d-in-channels-0", lambda: nn.Conv2d(0, 4, 3), R),
        ("Conv2d-out-channels-negative", lambda: nn.Conv2d(3, -4, 3), R),
        ("Conv2d-kernel-0", lambda: nn.Conv2d(3, 4, 0), R),
        ("Conv2d-stride-0", lambda: nn.Conv2d(3, 4, 3, stride=0), R),
        ("Conv2d-padding-negative", lambda: nn.Conv2d(3, 4, 3, padding=-1), R),
        ("Conv2d-groups-not-dividing", lambda: nn.Conv2d(3, 4, 3, groups=2), R),
        ("Conv2d-channels-str", lambda: nn.Conv2d("3", 4, 3), R),
        ("Conv2d-wrong-input-channels", lambda: nn.Conv2d(2, 4, 3)(x4), R),
        ("ConvTranspose2d-output-padding", lambda: nn.ConvTranspose2d(3, 4, 3, stride=1, output_padding=2), R),
        ("ConvTranspose2d-wrong-input", lambda: nn.ConvTranspose2d(4, 2, 3)(x4), R),
        ("Linear-features-negative", lambda: nn.Linear(-1, 3), R),
        ("Linear-wrong-input", lambda: nn.Linear(5, 3)(A(4, 4)), R),
        ("MaxPool2d-kernel-0", lambda: nn.MaxPool2d(0), R),
        ("MaxPool2d-padding-over-half", lambda: nn.MaxPool2d(2, padding=3)(x4), R),
        ("AvgPool2d-stride-negative", lambda: nn.AvgPool2d(2, stride=-1)(x4), R),
        ("AdaptiveAvgPool2d-0", lambda: nn.AdaptiveAvgPool2d(0)(x4), R),
        ("BatchNorm2d-features-0", lambda: nn.BatchNorm2d(0), R),
        ("BatchNorm2d-wrong-channels", lambda: nn.BatchNorm2d(4)(x4), R),
        ("BatchNorm1d-4d-input", lambda: nn.BatchNorm1d(3)(x4[:, :, :2, :2].reshape(2, 3, 2, 2)), R),
        ("BatchNorm2d-momentum-2", lambda: nn.BatchNorm2d(3, momentum=2.0), R),
        ("Dropout-p-2", lambda: nn.Dropout(2.0), R),
        ("Upsample-scale-0", lambda: nn.Upsample(scale_factor=0)(x4), R),
        ("Softmax-dim-5", lambda: nn.Softmax(dim=5)(A(2, 3)), R),
        ("Flatten-start-dim-5", lambda: nn.Flatten(5)(x4), R),
        ("Unflatten-bad-size", lambda: nn.Unflatten(1, (5, 5))(A(2, 24)), R),
        ("CrossEntropyLoss-label-out-of-range", lambda: nn.CrossEntropyLoss()(A(4, 5), np.array([0, 9, 1, 1])), R),
        ("CrossEntropyLoss-label-negative", lambda: nn.CrossEntropyLoss()(A(4, 5), np.array([0, -1, 1, 1])), R),
        ("CrossEntropyLoss-label-float", lambda: nn.CrossEntropyLoss()(A(4, 5), np.zeros(4, f32)), R),
        ("MSELoss-target-shape", lambda: nn.MSELoss()(A(4, 5), A(5, 4)), R),
        ("BCEWithLogitsLoss-target-object", lambda: nn.BCEWithLogitsLoss()(A(2), np.array([1, 0], object)), R),
        ("Sequential-not-module", lambda: nn.Sequential(nn.ReLU(), "relu"), R),
        ("load_state_dict-wrong-shape", lambda: nn.Linear(3, 2).load_state_dict({"weight": A(3, 3), "bias": A(2)}), R),
        ("load_state_dict-object-array", lambda: nn.Linear(3, 2).load_state_dict(
            {"weight": np.empty((2, 3), object), "bias": A(2)}), R),
        ("load_state_dict-missing-key", lambda: nn.Linear(3, 2).load_state_dict({"weight": A(2, 3)}), R),
        ("predict-wrong-shape", lambda: fastcnn.predict(nn.Sequential(nn.Conv2d(3, 4, 3)), A(2, 2, 8, 8)), R),
        ("predict-no-samples", lambda: fastcnn.predict(nn.Linear(5, 3), A(0, 5)), R),
        ("predict-batch-size-0", lambda: fastcnn.predict(nn.Linear(5, 3), A(4, 5), batch_size=0), R),
        ("fit-labels-out-of-range", lambda: fastcnn.fit(nn.Linear(5, 3), nn.CrossEntropyLoss(),
                                                        fastcnn.optim.SGD(nn.Linear(5, 3).parameters(), lr=0.1),
                                                        A(4, 5), np.array([0, 1, 7, 2]), progress=False), R),
    ]
    for layer_name, make, shape in [
        ("Conv2d", lambda: nn.Conv2d(3, 4, 3), (2, 3, 8, 8)),
        ("ConvTranspose2d", lambda: nn.ConvTranspose2d(3, 2, 3), (2, 3, 5, 5)),
        ("Linear", lambda: nn.Linear(5, 3), (4, 5)),
        ("MaxPool2d", lambda: nn.MaxPool2d(2), (2, 3, 8, 8)),
        ("AvgPool2d", lambda: nn.AvgPool2d(2), (2, 3, 8, 8)),
        ("BatchNorm2d", lambda: nn.BatchNorm2d(3), (2, 3, 8, 8)),
        ("BatchNorm1d", lambda: nn.BatchNorm1d(5), (4, 5)),
        ("ReLU", lambda: nn.ReLU(), (2, 3)),
        ("Tanh", lambda: nn.Tanh(), (2, 3)),
        ("Sigmoid", lambda: nn.Sigmoid(), (2, 3)),
        ("Softmax", lambda: nn.Softmax(dim=1), (2, 3)),
        # seeded: dropped elements are exactly 0 even where the input is NaN, so the
        # NaN case needs a mask that keeps some of them
        ("Dropout", lambda: nn.Dropout(0.5, generator=np.random.default_rng(0)), (2, 3)),
        ("Upsample", lambda: nn.Upsample(scale_factor=2), (2, 3, 4, 4)),
    ]:
        for dt in (np.int64, np.bool_, object, np.complex128):
            cases.append((f"{layer_name}-input-{np.dtype(dt).name}",
                          lambda make=make, shape=shape, dt=dt: make()(A(*shape).astype(dt)), R))
        cases.append((f"{layer_name}-input-list-of-str", lambda make=make: make()(["a", "b"]), R))
        cases.append((f"{layer_name}-input-None", lambda make=make: make()(None), R))
        x = A(*shape)
        x.reshape(-1)[::2] = np.nan
        cases.append((f"{layer_name}-nan", lambda make=make, x=x: make()(x), ("nan", layer_name, "nan")))
    return cases


# ---------------------------------------------------------------------------
# image editing


def _edit_cases():
    from fastcnn import edit
    G = nn.Sequential(nn.ConvTranspose2d(4, 1, 4), nn.Tanh())
    img = np.zeros((2, 1, 4, 4), f32)
    good = np.ones((4, 4), f32)
    R = "raises"

    def inpaint(images=img, mask=good, **kw):
        return lambda: edit.inpaint(G, images, mask, steps=1, **kw)
    return [
        ("inpaint-mask-wrong-shape", inpaint(mask=np.ones((5, 4))), R),
        ("inpaint-mask-1d", inpaint(mask=np.ones(16)), R),
        ("inpaint-mask-wrong-batch", inpaint(mask=np.ones((3, 1, 4, 4))), R),
        ("inpaint-mask-wrong-channels", inpaint(mask=np.ones((1, 3, 4, 4))), R),
        ("inpaint-mask-5d", inpaint(mask=np.ones((1, 1, 1, 4, 4))), R),
        ("inpaint-mask-values", inpaint(mask=np.full((4, 4), 0.5)), R),
        ("inpaint-mask-nan", inpaint(mask=np.full((4, 4), np.nan)), R),
        ("inpaint-mask-object", inpaint(mask=np.ones((4, 4), object)), R),
        ("inpaint-mask-complex", inpaint(mask=np.ones((4, 4), complex)), R),
        ("inpaint-mask-str", inpaint(mask="center"), R),
        ("inpaint-images-int", inpaint(images=np.zeros((2, 1, 4, 4), np.int64)), R),
        ("inpaint-images-2d", inpaint(images=np.zeros((4, 4), f32)), R),
        ("inpaint-images-wrong-size", inpaint(images=np.zeros((2, 1, 5, 5), f32), mask=np.ones((5, 5))), R),
        ("inpaint-steps-negative", lambda: edit.inpaint(G, img, good, steps=-1), R),
        ("inpaint-loss-name", lambda: edit.inpaint(G, img, good, steps=1, loss="l3"), R),
        ("center_mask-fraction-2", lambda: edit.center_mask(8, fraction=2.0), R),
        ("box_mask-outside", lambda: edit.box_mask(8, 6, 6, 5, 5), R),
        ("interpolate-mode", lambda: edit.interpolate(G, np.zeros(4), np.ones(4), mode="cubic"), R),
        ("interpolate-steps-1", lambda: edit.interpolate(G, np.zeros(4), np.ones(4), steps=1), R),
        ("interpolate-size-mismatch", lambda: edit.interpolate(G, np.zeros(4), np.ones(5)), R),
    ]


# ---------------------------------------------------------------------------
# checkpoint files


def _checkpoint_cases(tmp):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    good = os.path.join(tmp, "good.npz")
    opt = fastcnn.optim.Adam(model.parameters())
    checkpoint.save(model, good, opt, epoch=2, config={"w": 2})
    raw = open(good, "rb").read()
    R = "raises"
    cases = []

    def write(name, blob):
        p = os.path.join(tmp, name)
        with open(p, "wb") as f:
            f.write(blob)
        return p

    def load(p):
        return lambda: checkpoint.load(model, p)

    for frac in (0.0, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99):
        n = int(len(raw) * frac)
        cases.append((f"checkpoint-truncated-{frac}", load(write(f"trunc{frac}.npz", raw[:n])), R))
    cases.append(("checkpoint-truncated-1-byte-short", load(write("trunc-1.npz", raw[:-1])), R))
    rng = np.random.default_rng(5)
    for i, pos in enumerate(sorted(rng.choice(len(raw), 24, replace=False))):
        blob = bytearray(raw)
        blob[pos] ^= 0xFF
        # a flipped byte must give ValueError or, where the byte is not checked (zip padding,
        # file comment), a clean load; never a crash or another error
        cases.append((f"checkpoint-flipped-byte-{pos}", load(write(f"flip{i}.npz", bytes(blob))), "raises-or-loads"))
    cases.append(("checkpoint-garbage", load(write("garbage.npz", os.urandom(4096))), R))
    cases.append(("checkpoint-empty", load(write("empty.npz", b"")), R))
    cases.append(("checkpoint-directory", load(tmp), R))
    cases.append(("checkpoint-pickle-file", load(write("pickle.npz", pickle.dumps({"model": model.state_dict()}))), R))
    npy = os.path.join(tmp, "array.npz")
    with open(npy, "wb") as f:
        np.save(f, np.arange(3))
    cases.append(("checkpoint-plain-npy", load(npy), R))
    npy_obj = os.path.join(tmp, "objarray.npz")
    with open(npy_obj, "wb") as f:
        np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases.append(("checkpoint-pickled-npy", load(npy_obj), R))

    def zipped(name, entries):
        p = os.path.join(tmp, name)
        with zipfile.ZipFile(p, "w") as z:
            for k, (arr, allow) in entries.items():
                with z.open(k + ".npy", "w") as f:
                    np.lib.format.write_array(f, arr, allow_pickle=allow)
        return p

    header = json.loads(bytes(np.load(good)["__header__"]).decode())
    hdr = np.frombuffer(json.dumps(header).encode(), np.uint8)
    sd = {"model/" + k: (v, False) for k, v in model.state_dict().items()}
    obj = dict(sd)
    obj["model/0.weight"] = (np.array([object()] * 2, dtype=object), True)
    obj["__header__"] = (hdr, False)
    cases.append(("checkpoint-pickled-weight", load(zipped("objweight.npz", obj)), R))
    cases.append(("checkpoint-pickled-header", load(zipped("objheader.npz", dict(
        sd, __header__=(np.array([header], dtype=object), True)))), R))
    wrong = dict(sd, __header__=(hdr, False))
    wrong["model/0.weight"] = (np.zeros((3, 3), f32), False)
    cases.append(("checkpoint-wrong-shape", load(zipped("wrongshape.npz", wrong)), R))
    missing = {k: v for k, v in sd.items() if k != "model/3.bias"}
    missing["__header__"] = (hdr, False)
    cases.append(("checkpoint-missing-array", load(zipped("missing.npz", missing)), R))
    for name, h in [("list", [1, 2]), ("foreign", {"format": "x"}), ("newer", dict(header, format_version=99)),
                    ("version-str", dict(header, format_version="1")), ("keys-int", dict(header, model_keys=5)),
                    ("not-json", None)]:
        blob = b"{not json" if h is None else json.dumps(h).encode()
        cases.append((f"checkpoint-header-{name}", load(zipped(f"hdr-{name}.npz", dict(
            sd, __header__=(np.frombuffer(blob, np.uint8), False)))), R))
    cases.append(("checkpoint-header-not-utf8", load(zipped("hdr-bytes.npz", dict(
        sd, __header__=(np.frombuffer(b"\xff\xfe\x00", np.uint8), False)))), R))
    cases.append(("checkpoint-other-model", lambda: checkpoint.load(nn.Linear(3, 2), good), R))
    cases.append(("checkpoint-other-optimizer", lambda: checkpoint.load(
        model, good, fastcnn.optim.SGD(model.parameters(), lr=0.1)), R))
    cases.append(("checkpoint-read_header-truncated", lambda: checkpoint.read_header(
        write("trunc-h.npz", raw[: len(raw) // 3])), R))
    return cases


# ---------------------------------------------------------------------------
# the runner


def _nonfinite(out):
    if isinstance(out, (tuple, list)):
        return any(_nonfinite(o) for o in out if o is not None)
    a = np.asarray(out)
    return a.dtype.kind in "fc" and not np.all(np.isfinite(a))


def _is_empty_or_nan(out):
    if isinstance(out, (tuple, list)):
        return all(_is_empty_or_nan(o) for o in out if o is not None)
    a = np.asarray(out)
    return a.size == 0 or a.ndim == 0 or (a.dtype.kind == "f" and np.all(np.isfinite(a) | np.isnan(a)))


def run_case(name, fn, expect):
    COUNTS["cases"] += 1
    try:
        out = fn()
    except (ValueError, TypeError) as e:
        if expect == "raises" or expect == "empty" or expect == "raises-or-loads":
            assert str(e), f"{name}: {type(e).__name__} without a message"
            COUNTS["raised"] += 1
            OBSERVED[name] = f"{type(e).__name__}: {str(e)[:100]}"
            return
        raise AssertionError(f"{name}: expected a documented result, got {type(e).__name__}: {e}") from e
    except MemoryError as e:
        raise AssertionError(f"{name}: tried to allocate before refusing ({e})") from e
    if expect == "raises":
        raise AssertionError(f"{name}: returned {type(out).__name__} instead of raising ValueError/TypeError")
    COUNTS["documented"] += 1
    if expect == "raises-or-loads":
        OBSERVED[name] = "loaded (byte not covered by a check)"
        return
    if expect == "empty":
        assert _is_empty_or_nan(out), f"{name}: zero-size input gave a non-empty, non-NaN result"
        OBSERVED[name] = "empty result"
        return
    _, fname, kind = expect
    propagated = _nonfinite(out)
    OBSERVED[name] = "non-finite result" if propagated else "finite result"
    if kind == "nan":  # NaN always reaches the result
        assert propagated, f"{name}: NaN input gave an all-finite result (NaN was swallowed)"
    # +-inf: the mathematically defined value (recorded, e.g. tanh(inf) = 1, softmax(-inf) = 0)


CASES = _functional_cases() + _argument_cases() + _huge_cases() + _module_cases() + _edit_cases()


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    if COUNTS["cases"]:
        line = (f"hostile inputs: {COUNTS['cases']} cases, {COUNTS['raised']} raised ValueError/TypeError, "
                f"{COUNTS['documented']} documented results")
        tr = request.config.pluginmanager.getplugin("terminalreporter")
        if tr is not None:
            tr.write_line("")
            tr.write_line(line)
        else:  # pragma: no cover
            print(line, file=sys.stderr)
        out = os.environ.get("FASTCNN_HOSTILE_REPORT")
        if out:
            with open(out, "w") as f:
                json.dump({"counts": COUNTS, "observed": OBSERVED}, f, indent=1, sort_keys=True)


@pytest.fixture(autouse=True)
def _threads_kept():
    n = fastcnn.get_num_threads()
    yield
    fastcnn.set_num_threads(n)


@pytest.mark.parametrize("name,fn,expect", CASES, ids=[c[0] for c in CASES])
def test_hostile(name, fn, expect):
    run_case(name, fn, expect)


def test_hostile_checkpoints(tmp_path):
    failures = []
    cases = _checkpoint_cases(str(tmp_path))
    for name, fn, expect in cases:
        try:
            run_case(name, fn, expect)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n".join(failures)
    assert len(cases) > 40
