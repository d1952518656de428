"""Naive NumPy references for every kernel, written for clarity, not speed."""
import itertools

import numpy as np


# ---------------------------------------------------------------------------
# matmul and convolution


def matmul(a, b):
    """Plain triple loop over output rows, accumulated in float64."""
    return (a.astype(np.float64) @ b.astype(np.float64)).astype(a.dtype)


def _pads(padding):
    """(top, bottom, left, right) from a pair or a 4-tuple."""
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    return tuple(padding)


def conv2d(x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """Direct convolution: one strided slice of the padded input per kernel tap."""
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    Kg = K // groups
    (sh, sw), (dh, dw) = stride, dilation
    pt, pb, pl, pr = _pads(padding)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    P = (H + pt + pb - dh * (R - 1) - 1) // sh + 1
    Q = (W + pl + pr - dw * (S - 1) - 1) // sw + 1
    y = np.zeros((N, K, P, Q))
    for g in range(groups):
        for r in range(R):
            for s in range(S):
                patch = xp[:, g * Cg:(g + 1) * Cg,
                           r * dh: r * dh + sh * (P - 1) + 1: sh,
                           s * dw: s * dw + sw * (Q - 1) + 1: sw]
                y[:, g * Kg:(g + 1) * Kg] += np.einsum("nchw,kc->nkhw", patch, w[g * Kg:(g + 1) * Kg, :, r, s])
    if b is not None:
        y += b[None, :, None, None]
    return y.astype(x.dtype)


def conv2d_backward(dy, x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """Gradients of ``conv2d`` by the same tap-by-tap loop, run backwards."""
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    Kg = K // groups
    (sh, sw), (dh, dw) = stride, dilation
    pt, pb, pl, pr = _pads(padding)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    dxp = np.zeros_like(xp)
    dw_ = np.zeros(w.shape)
    dy = dy.astype(np.float64)
    P, Q = dy.shape[2:]
    for g in range(groups):
        dyg = dy[:, g * Kg:(g + 1) * Kg]
        for r in range(R):
            for s in range(S):
                hs = slice(r * dh, r * dh + sh * (P - 1) + 1, sh)
                ws = slice(s * dw, s * dw + sw * (Q - 1) + 1, sw)
                patch = xp[:, g * Cg:(g + 1) * Cg, hs, ws]
                dw_[g * Kg:(g + 1) * Kg, :, r, s] = np.einsum("nchw,nkhw->kc", patch, dyg)
                dxp[:, g * Cg:(g + 1) * Cg, hs, ws] += np.einsum("nkhw,kc->nchw", dyg, w[g * Kg:(g + 1) * Kg, :, r, s])
    dx = dxp[:, :, pt:pt + H, pl:pl + W]
    return dx.astype(x.dtype), dw_.astype(x.dtype), dy.sum(axis=(0, 2, 3)).astype(x.dtype)


def conv_transpose2d(x, w, b=None, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                     groups=1, dilation=(1, 1)):
    """Scatter definition: every input pixel adds its weighted kernel into the output."""
    N, Cin, H, W = x.shape
    _, Cog, R, S = w.shape
    Cig = Cin // groups
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    Ho = (H - 1) * sh - 2 * ph + dh * (R - 1) + output_padding[0] + 1
    Wo = (W - 1) * sw - 2 * pw + dw * (S - 1) + output_padding[1] + 1
    full = np.zeros((N, Cog * groups, Ho + 2 * ph + sh + dh * R, Wo + 2 * pw + sw + dw * S))
    x64 = x.astype(np.float64)
    for g in range(groups):
        for r in range(R):
            for s in range(S):
                contrib = np.einsum("nchw,co->nohw", x64[:, g * Cig:(g + 1) * Cig], w[g * Cig:(g + 1) * Cig, :, r, s])
                full[:, g * Cog:(g + 1) * Cog, r * dh: r * dh + sh * (H - 1) + 1: sh,
                     s * dw: s * dw + sw * (W - 1) + 1: sw] += contrib
    y = full[:, :, ph:ph + Ho, pw:pw + Wo]
    if b is not None:
        y = y + b[None, :, None, None]
    return y.astype(x.dtype)


# ===========================================================================
# Pooling, activations, batch norm, dropout, upsampling, losses
# ===========================================================================

def _pool_out(n, k, s, p, d, ceil_mode):
    num = n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def ref_max_pool2d(x, k, s, p, d=(1, 1), ceil_mode=False):
    """(N, C, H, W) -> (y, flat argmax indices); padding is -inf, first maximum wins."""
    N, C, H, W = x.shape
    OH = _pool_out(H, k[0], s[0], p[0], d[0], ceil_mode)
    OW = _pool_out(W, k[1], s[1], p[1], d[1], ceil_mode)
    y = np.full((N, C, OH, OW), -np.inf, dtype=x.dtype)
    idx = np.zeros((N, C, OH, OW), dtype=np.int64)
    for oh in range(OH):
        for ow in range(OW):
            best = None
            for a in range(k[0]):
                for b in range(k[1]):
                    ih = oh * s[0] - p[0] + a * d[0]
                    iw = ow * s[1] - p[1] + b * d[1]
                    if 0 <= ih < H and 0 <= iw < W:
                        v = x[:, :, ih, iw]
                        if best is None:
                            y[:, :, oh, ow] = v
                            idx[:, :, oh, ow] = ih * W + iw
                            best = True
                        else:
                            upd = v > y[:, :, oh, ow]
                            y[:, :, oh, ow] = np.where(upd, v, y[:, :, oh, ow])
                            idx[:, :, oh, ow] = np.where(upd, ih * W + iw, idx[:, :, oh, ow])
    return y, idx


def ref_max_pool2d_backward(g, idx, input_shape):
    gx = np.zeros(input_shape, dtype=g.dtype)
    N, C, H, W = input_shape
    flat = gx.reshape(N, C, H * W)
    for n in range(N):
        for c in range(C):
            np.add.at(flat[n, c], idx[n, c].reshape(-1), g[n, c].reshape(-1))
    return gx


def ref_avg_pool2d(x, k, s, p, ceil_mode=False, count_include_pad=True):
    N, C, H, W = x.shape
    OH = _pool_out(H, k[0], s[0], p[0], 1, ceil_mode)
    OW = _pool_out(W, k[1], s[1], p[1], 1, ceil_mode)
    y = np.zeros((N, C, OH, OW), dtype=np.float64)
    for oh in range(OH):
        for ow in range(OW):
            h0, w0 = oh * s[0] - p[0], ow * s[1] - p[1]
            h1, w1 = min(h0 + k[0], H + p[0]), min(w0 + k[1], W + p[1])
            pool = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, H), min(w1, W)
            if h0 >= h1 or w0 >= w1:
                continue
            div = pool if count_include_pad else (h1 - h0) * (w1 - w0)
            y[:, :, oh, ow] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3), dtype=np.float64) / div
    return y.astype(x.dtype)


def ref_adaptive_avg_pool2d(x, out):
    N, C, H, W = x.shape
    y = np.zeros((N, C) + tuple(out), dtype=np.float64)
    for oh in range(out[0]):
        h0, h1 = (oh * H) // out[0], -((-(oh + 1) * H) // out[0])
        for ow in range(out[1]):
            w0, w1 = (ow * W) // out[1], -((-(ow + 1) * W) // out[1])
            y[:, :, oh, ow] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3), dtype=np.float64)
    return y.astype(x.dtype)


def ref_upsample_nearest2d(x, s):
    return x.repeat(s[0], axis=-2).repeat(s[1], axis=-1)


def ref_nearest_source(i, n_in, n_out, scale, exact, double):
    """The input position that output position i reads (interpolate, nearest modes), one
    scalar at a time: s in the data's precision, the position rounded to float32, floored."""
    if double:
        s = 1.0 / scale if scale is not None else n_in / n_out
        pos = (i + 0.5) * s if exact else i * s
    else:
        s = np.float32(1.0 / scale) if scale is not None else np.float32(n_in) / np.float32(n_out)
        pos = (i + 0.5) * float(s) if exact else np.float32(i) * s
    return min(int(np.floor(np.float32(pos))), n_in - 1)


def ref_interpolate_nearest(x, out, scales, exact, shortcuts):
    """x (N, C, *spatial) resampled to ``out`` with loops; ``scales`` one per axis (None: size
    over output size); ``shortcuts``: an axis of the input's size or twice it reads i or i // 2."""
    spatial = x.shape[2:]
    double = x.dtype == np.float64

    def src(a, i):
        n, o = spatial[a], out[a]
        if shortcuts and o == n:
            return i
        if shortcuts and o == 2 * n:
            return i // 2
        return ref_nearest_source(i, n, o, scales[a], exact, double)

    y = np.empty(x.shape[:2] + tuple(out), dtype=x.dtype)
    lead = (slice(None), slice(None))
    for pos in np.ndindex(*out):
        y[lead + pos] = x[lead + tuple(src(a, i) for a, i in enumerate(pos))]
    return y


def ref_linear_source(i, n_in, n_out, scale, align_corners):
    """(i0, i1, w0, w1): the inputs output position i mixes (interpolate, linear modes), in float64."""
    if n_out == n_in:
        return i, i, 1.0, 0.0
    if align_corners:
        pos = (n_in - 1) / (n_out - 1) * i if n_out > 1 else 0.0
    else:
        r = 1.0 / scale if scale is not None else n_in / n_out
        pos = max(r * (i + 0.5) - 0.5, 0.0)
    i0 = min(int(np.floor(pos)), n_in - 1)
    w1 = min(max(pos - i0, 0.0), 1.0)
    return i0, i0 + (i0 < n_in - 1), 1.0 - w1, w1


def ref_interpolate_linear(x, out, scales, align_corners):
    """x (N, C, L) or (N, C, H, W) resampled linearly to ``out`` with loops, in float64."""
    spatial = x.shape[2:]
    axes = [[ref_linear_source(i, n, o, v, align_corners) for i in range(o)]
            for n, o, v in zip(spatial, out, scales)]
    x64 = x.astype(np.float64)
    y = np.zeros(x.shape[:2] + tuple(out))
    lead = (slice(None), slice(None))
    for pos in np.ndindex(*out):
        terms = [[(a[i][0], a[i][2]), (a[i][1], a[i][3])] for a, i in zip(axes, pos)]
        for combo in itertools.product(*terms):
            w = np.prod([c[1] for c in combo])
            y[lead + pos] += w * x64[lead + tuple(c[0] for c in combo)]
    return y.astype(x.dtype)


def ref_softmax(x, dim):
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def ref_log_softmax(x, dim):
    m = x.max(axis=dim, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=dim, keepdims=True))


def ref_batch_norm_train(x, weight, bias, eps):
    """Returns (y, batch mean, biased batch var) over every axis but 1."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xd = x.astype(np.float64)
    mean = xd.mean(axis=axes)
    var = xd.var(axis=axes)
    y = (xd - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if weight is not None:
        y = y * weight.reshape(shape) + bias.reshape(shape)
    return y.astype(x.dtype), mean, var


def ref_cross_entropy(x, t, weight=None, reduction="mean", label_smoothing=0.0):
    """PyTorch's formula: (1-ls) * nll + ls/C * smooth, both normalised by sum(w[t]) for 'mean'."""
    x = x.astype(np.float64)
    N, C = x.shape
    w = np.ones(C) if weight is None else weight.astype(np.float64)
    logp = ref_log_softmax(x, 1)
    nll = -w[t] * logp[np.arange(N), t]
    smooth = -(logp * w).sum(axis=1)
    if reduction == "mean":
        d = w[t].sum()
        return (1 - label_smoothing) * nll.sum() / d + label_smoothing / C * smooth.sum() / d
    return (1 - label_smoothing) * nll.sum() + label_smoothing / C * smooth.sum()


def ref_bce_with_logits(x, t, reduction="mean"):
    x = x.astype(np.float64)
    t = t.astype(np.float64)
    loss = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    return loss.mean() if reduction == "mean" else loss.sum()


# ===========================================================================
# Randomised differential tests: references for the remaining gradients
# ===========================================================================

def ref_conv_transpose2d_backward(g, x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """Transposed convolution is the adjoint of convolution: grad_x is the convolution
    of grad_out (cropped to x's size), grad_w the convolution's weight gradient with
    input and output gradient exchanged."""
    H, W = x.shape[2:]
    gx = conv2d(g, w, None, stride, padding, dilation, groups)[:, :, :H, :W]
    _, gw, _ = conv2d_backward(x, g, w, stride, padding, dilation, groups)
    return gx.astype(x.dtype), gw.astype(x.dtype), g.astype(np.float64).sum(axis=(0, 2, 3)).astype(x.dtype)


def ref_avg_pool2d_backward(g, input_shape, k, s, p, ceil_mode=False, count_include_pad=True):
    """Every output gradient spread evenly over its window (divisor as in the forward)."""
    N, C, H, W = input_shape
    OH, OW = g.shape[2:]
    gx = np.zeros(input_shape, dtype=np.float64)
    g64 = g.astype(np.float64)
    for oh in range(OH):
        for ow in range(OW):
            h0, w0 = oh * s[0] - p[0], ow * s[1] - p[1]
            h1, w1 = min(h0 + k[0], H + p[0]), min(w0 + k[1], W + p[1])
            pool = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, H), min(w1, W)
            if h0 >= h1 or w0 >= w1:
                continue
            div = pool if count_include_pad else (h1 - h0) * (w1 - w0)
            gx[:, :, h0:h1, w0:w1] += (g64[:, :, oh, ow] / div)[:, :, None, None]
    return gx.astype(g.dtype)


def ref_batch_norm_eval(x, running_mean, running_var, weight, bias, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x.astype(np.float64) - running_mean.reshape(shape)) / np.sqrt(running_var.reshape(shape) + eps)
    if weight is not None:
        y = y * weight.reshape(shape) + bias.reshape(shape)
    return y.astype(x.dtype)


def ref_batch_norm_backward(g, x, weight, mean, invstd, training=True):
    """(grad_x, grad_weight, grad_bias) with batch statistics (training) or constants."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    g64 = g.astype(np.float64)
    xhat = (x.astype(np.float64) - mean.reshape(shape)) * invstd.reshape(shape)
    w = np.ones(x.shape[1]) if weight is None else weight.astype(np.float64)
    gw = (g64 * xhat).sum(axis=axes)
    gb = g64.sum(axis=axes)
    M = x.size // x.shape[1] if x.shape[1] else 0
    if training:
        gx = (w * invstd).reshape(shape) / M * (M * g64 - gb.reshape(shape) - xhat * gw.reshape(shape))
    else:
        gx = g64 * (w * invstd).reshape(shape)
    return gx.astype(x.dtype), gw, gb
