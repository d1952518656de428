"""Conv2d and ConvTranspose2d: forward and all gradients against the naive reference
and PyTorch, finite differences, thread invariance, bad input."""
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from conftest import numeric_grad

import reference as ref

# (N, C, H, W, K, R, S, stride, padding, dilation, groups)
CASES = {
    "basic3x3": (2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1),
    "1x1image": (2, 3, 1, 1, 5, 1, 1, 1, 0, 1, 1),
    "1x1image_pad_k3": (1, 2, 1, 1, 3, 3, 3, 1, 1, 1, 1),
    "kernel_gt_input_pad": (2, 2, 3, 3, 3, 5, 5, 1, 2, 1, 1),
    "stride2": (2, 4, 9, 8, 6, 3, 3, 2, 1, 1, 1),
    "stride3": (1, 3, 11, 10, 5, 3, 3, 3, 0, 1, 1),
    "stride_gt_kernel": (2, 3, 8, 8, 5, 2, 2, 3, 0, 1, 1),
    "nonsquare": (2, 5, 9, 12, 7, 3, 2, (2, 1), (0, 3), 1, 1),
    "pad3": (1, 2, 5, 5, 3, 3, 3, 1, 3, 1, 1),
    "dilation2": (2, 3, 10, 9, 4, 3, 3, 1, 2, 2, 1),
    "dilation3_stride2": (1, 2, 13, 13, 3, 3, 3, 2, 1, 3, 1),
    "nonsquare_dilation": (2, 8, 10, 12, 8, 3, 3, (2, 1), (0, 3), (1, 2), 2),
    "groups2": (2, 4, 6, 6, 6, 3, 3, 1, 1, 1, 2),
    "depthwise": (1, 6, 9, 8, 6, 3, 3, 1, 2, 2, 6),
    "depthwise_mult2": (2, 4, 7, 7, 8, 3, 3, 2, 1, 1, 4),
    "pointwise1x1": (3, 7, 5, 5, 9, 1, 1, 1, 0, 1, 1),
    "batch1_c1": (1, 1, 12, 12, 5, 3, 3, 1, 1, 1, 1),
    "c3_k4_s2": (2, 3, 16, 16, 8, 4, 4, 2, 1, 1, 1),
    "channels_not_mult8": (2, 13, 9, 9, 19, 3, 3, 1, 1, 1, 1),
    "wide_channels": (2, 33, 8, 8, 70, 3, 3, 1, 1, 1, 1),
    "large_kernel_5x5": (2, 3, 8, 8, 4, 5, 5, 1, 2, 1, 1),
    "big_image": (1, 2, 40, 37, 3, 3, 3, 1, 1, 1, 1),
    "dcgan_4x4_s2": (3, 16, 8, 8, 8, 4, 4, 2, 1, 1, 1),
    "dcgan_4x4_s2_c32": (2, 32, 8, 8, 64, 4, 4, 2, 1, 1, 1),
    "k2_s2_groups": (2, 6, 9, 7, 4, 2, 2, 2, 0, 1, 2),
    # one input channel, 16+ outputs, kernel a multiple of the stride: the forward reads
    # the strided patches in place (no phases); odd sizes, a 2x2 and a 6x6 stride-3 kernel
    "c1_k4_s2_outputs20": (3, 1, 13, 12, 20, 4, 4, 2, 1, 1, 1),
    "c1_k2_s2_outputs33": (2, 1, 9, 11, 33, 2, 2, 2, 0, 1, 1),
    "c1_k6_s3_outputs16": (2, 1, 14, 13, 16, 6, 6, 3, 1, 1, 1),
    "c1_k3_s3_1x1image": (1, 1, 1, 1, 16, 3, 3, 3, 1, 1, 1),
    # shapes of the pixel-major kernels (16+ channels a group): tiles of pixels that
    # straddle images, channel counts off every tile width, all strides and dilations
    "pm_3x3_odd": (2, 17, 7, 6, 20, 3, 3, 1, 1, 1, 1),
    "pm_k4_s2_odd": (3, 16, 9, 11, 33, 4, 4, 2, 1, 1, 1),
    "pm_stride_gt_kernel": (2, 20, 10, 10, 40, 2, 2, 3, 0, 1, 1),
    "pm_k3_s2": (2, 16, 8, 8, 16, 3, 3, 2, 1, 1, 1),
    "pm_dilation2": (2, 16, 11, 9, 24, 3, 3, 1, 2, 2, 1),
    "pm_dilation2_stride2": (2, 16, 13, 12, 16, 3, 3, 2, 2, 2, 1),
    "pm_groups2": (2, 32, 6, 7, 40, 3, 3, 1, 1, 1, 2),
    "pm_nonsquare": (2, 16, 9, 14, 24, 3, 5, (2, 1), (1, 2), 1, 1),
    "pm_pointwise": (3, 40, 5, 5, 36, 1, 1, 1, 0, 1, 1),
    "pm_pad_gt_half_kernel": (1, 16, 5, 5, 16, 3, 3, 1, 3, 1, 1),
    "pm_1x1image": (1, 24, 1, 1, 24, 3, 3, 1, 1, 1, 1),
    "pm_wide": (2, 48, 6, 6, 96, 3, 3, 1, 1, 1, 1),
    # input gradients over the phases of the image: a single column phase, and
    # phases with unequal numbers of taps, rows and columns
    "pm_s2_one_column": (2, 16, 5, 1, 32, 3, 3, 2, 1, 1, 1),
    "pm_k4_s3_uneven": (2, 16, 10, 11, 32, 4, 4, 3, 1, 1, 1),
    # Winograd F(4x4, 3x3) (64 tiles or more): outputs not a multiple of the tile,
    # padding 0-2, several blocks, channel counts off the vector width
    "wino_pad0": (8, 16, 14, 13, 16, 3, 3, 1, 0, 1, 1),
    "wino_pad2": (4, 20, 13, 14, 17, 3, 3, 1, 2, 1, 1),
    "wino_blocks": (8, 16, 18, 18, 24, 3, 3, 1, 1, 1, 1),
    # fewer tiles than a block (32): each block's points shared among the threads
    "wino_few_tiles": (2, 16, 14, 13, 20, 3, 3, 1, 1, 1, 1),
    # F(4x4, 2x2): a 2x2 kernel, and a 4x4 stride-2 one over image phases (four tiles
    # an input channel or more)
    "wino_2x2": (16, 16, 17, 17, 20, 2, 2, 1, 0, 1, 1),
    "wino_phases_4x4_s2": (16, 16, 32, 32, 16, 4, 4, 2, 1, 1, 1),
    # over image phases, read and written in place: 7x7 outputs (a DCGAN discriminator's
    # second layer), phase channels and outputs off the vector width, rows and columns
    # no phase reaches (zero input gradient), padding 0 and 2, nine phases, non-square
    "wino_phases_7x7": (32, 5, 14, 14, 17, 4, 4, 2, 1, 1, 1),
    "wino_phases_unreached": (32, 4, 17, 17, 16, 4, 4, 2, 0, 1, 1),
    "wino_phases_pad2": (32, 4, 12, 12, 16, 4, 4, 2, 2, 1, 1),
    "wino_phases_6x6_s3": (32, 2, 24, 24, 16, 6, 6, 3, 0, 1, 1),
    "wino_phases_nonsquare": (32, 4, 14, 16, 20, 4, 4, 2, 1, 1, 1),
    # F(7x7, 2x2) where its 8x8 tiles need fewer products than 4x4 ones (and there
    # are as many as 128 4x4 tiles' worth): a 2x2 kernel with 13x13 outputs, 7x7 and
    # 7x10 outputs over image phases (the input gradient, over 8x8 phases, stays
    # F(4x4, 2x2))
    "wino_f72_2x2": (13, 17, 14, 14, 19, 2, 2, 1, 0, 1, 1),
    "wino_f72_phases_7x7": (50, 5, 14, 14, 17, 4, 4, 2, 1, 1, 1),
    "wino_f72_phases_nonsquare": (25, 4, 14, 20, 20, 4, 4, 2, 1, 1, 1),
    # 600 7x7 tiles: the weight gradient sums chunks of two blocks and of one
    "wino_f72_phases_blocks": (150, 6, 28, 28, 21, 4, 4, 2, 1, 1, 1),
    # one-channel input gradients of 3x3 stride-1 layers (the direct kernel): padding
    # 0-2, rows past one block of columns, heights off the block of rows
    "c1_direct_wide": (2, 1, 9, 45, 7, 3, 3, 1, 0, 1, 1),
    "c1_direct_pad2": (3, 1, 6, 5, 3, 3, 3, 1, 2, 1, 1),
    "c1_direct_k40": (1, 1, 17, 33, 40, 3, 3, 1, 1, 1, 1),
    # kernels that cover the whole input (one output pixel: a matrix product, as in a
    # DCGAN's last convolution and first transposed one): one to four outputs, one
    # image, non-square, strided
    "whole_input_k1": (3, 20, 4, 4, 1, 4, 4, 1, 0, 1, 1),
    "whole_input_k3": (9, 8, 2, 2, 3, 2, 2, 1, 0, 1, 1),
    "whole_input_batch1": (1, 16, 4, 4, 40, 4, 4, 1, 0, 1, 1),
    "whole_input_s2": (5, 7, 3, 5, 6, 3, 5, 2, 0, 1, 1),
    # input gradients of one to four rows a product (the narrow kernels)
    "c1_k4_s2": (2, 1, 12, 12, 16, 4, 4, 2, 1, 1, 1),
    "c2_3x3": (2, 2, 9, 9, 24, 3, 3, 1, 1, 1, 1),
}
DTYPES = {"f64": (np.float64, 1e-9), "f32": (np.float32, 1e-4)}


def _args(case):
    N, C, H, W, K, R, S, st, pd, dl, g = case
    as2 = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    return (N, C, H, W, K, R, S), as2(st), as2(pd), as2(dl), g


def _close(actual, expected, tol, what):
    scale = max(1.0, float(np.abs(expected).max()) if expected.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


@pytest.mark.parametrize("dt", DTYPES, ids=list(DTYPES))
@pytest.mark.parametrize("name", CASES, ids=list(CASES))
def test_conv2d_vs_reference_and_torch(name, dt, rng, torch):
    dtype, tol = DTYPES[dt]
    (N, C, H, W, K, R, S), st, pd, dl, g = _args(CASES[name])
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // g, R, S)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    y = F.conv2d(x, w, b, st, pd, dl, g)
    _close(y, ref.conv2d(x, w, b, st, pd, dl, g), tol, "forward vs reference")
    xt, wt, bt = (torch.tensor(v, requires_grad=True) for v in (x, w, b))
    yt = torch.nn.functional.conv2d(xt, wt, bt, st, pd, dl, g)
    _close(y, yt.detach().numpy(), tol, "forward vs torch")
    dy = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(dy))
    gx, gw, gb = F.conv2d_backward(dy, x, w, st, pd, dl, g)
    rgx, rgw, rgb = ref.conv2d_backward(dy, x, w, st, pd, dl, g)
    _close(gx, rgx, tol, "grad_x vs reference")
    _close(gw, rgw, tol, "grad_w vs reference")
    _close(gb, rgb, tol, "grad_b vs reference")
    _close(gx, xt.grad.numpy(), tol, "grad_x vs torch")
    _close(gw, wt.grad.numpy(), tol, "grad_w vs torch")
    _close(gb, bt.grad.numpy(), tol, "grad_b vs torch")


@pytest.mark.parametrize("dt", DTYPES, ids=list(DTYPES))
@pytest.mark.parametrize("name", CASES, ids=list(CASES))
def test_conv_transpose2d_vs_reference_and_torch(name, dt, rng, torch):
    dtype, tol = DTYPES[dt]
    (N, C, H, W, K, R, S), st, pd, dl, g = _args(CASES[name])
    # ConvTranspose2d(K -> C): the adjoint of the convolution above
    Hin, Win = (H + 2 * pd[0] - dl[0] * (R - 1) - 1) // st[0] + 1, (W + 2 * pd[1] - dl[1] * (S - 1) - 1) // st[1] + 1
    for op in {(0, 0), (min(st[0], dl[0]) and max(st[0], dl[0]) - 1, 0)}:
        x = rng.standard_normal((N, K, Hin, Win)).astype(dtype)
        w = rng.standard_normal((K, C // g, R, S)).astype(dtype)
        b = rng.standard_normal(C).astype(dtype)
        try:
            expected = torch.nn.functional.conv_transpose2d(
                torch.tensor(x), torch.tensor(w), torch.tensor(b), st, pd, op, g, dl).numpy()
        except RuntimeError:
            with pytest.raises(ValueError):
                F.conv_transpose2d(x, w, b, st, pd, op, g, dl)
            continue
        y = F.conv_transpose2d(x, w, b, st, pd, op, g, dl)
        _close(y, expected, tol, f"forward vs torch (output_padding={op})")
        _close(y, ref.conv_transpose2d(x, w, b, st, pd, op, g, dl), tol, "forward vs reference")
        xt, wt, bt = (torch.tensor(v, requires_grad=True) for v in (x, w, b))
        yt = torch.nn.functional.conv_transpose2d(xt, wt, bt, st, pd, op, g, dl)
        dy = rng.standard_normal(y.shape).astype(dtype)
        yt.backward(torch.tensor(dy))
        gx, gw, gb = F.conv_transpose2d_backward(dy, x, w, st, pd, op, g, dl)
        _close(gx, xt.grad.numpy(), tol, "grad_x vs torch")
        _close(gw, wt.grad.numpy(), tol, "grad_w vs torch")
        _close(gb, bt.grad.numpy(), tol, "grad_b vs torch")


@pytest.mark.parametrize("padding,dilation,kernel", [("same", 1, 3), ("same", 2, 3), ("same", 1, 4),
                                                      ("same", (2, 1), (3, 2)), ("valid", 1, 3)])
def test_string_padding_matches_torch(padding, dilation, kernel, rng, torch):
    R, S = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((4, 3, R, S))
    y = F.conv2d(x, w, None, 1, padding, dilation)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, None, 1, padding, dilation)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    dy = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(dy))
    gx, gw, _ = F.conv2d_backward(dy, x, w, 1, padding, dilation)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("activation,slope", [("relu", 0.0), ("leaky_relu", 0.2)])
def test_fused_bias_activation(activation, slope, rng):
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((5, 3, 3, 3))
    b = rng.standard_normal(5)
    y = F.conv2d(x, w, b, 1, 1, activation=activation, negative_slope=slope)
    plain = ref.conv2d(x, w, b, (1, 1), (1, 1))
    expected = np.maximum(plain, 0) if activation == "relu" else np.where(plain < 0, slope * plain, plain)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


def test_noncontiguous_inputs(rng, torch):
    xb = rng.standard_normal((2, 6, 10, 10))
    x = xb[:, ::2, ::-1, 1:]
    w = np.asfortranarray(rng.standard_normal((4, 3, 3, 3)))
    y = F.conv2d(x, w, None, 1, 1)
    np.testing.assert_allclose(y, ref.conv2d(np.ascontiguousarray(x), np.ascontiguousarray(w), None, (1, 1), (1, 1)),
                               rtol=1e-10, atol=1e-10)


def test_unbatched_input(rng):
    x = rng.standard_normal((3, 6, 6))
    w = rng.standard_normal((2, 3, 3, 3))
    np.testing.assert_allclose(F.conv2d(x, w, padding=1), F.conv2d(x[None], w, padding=1)[0])


def test_need_grad_input_false_skips_it(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((2, 3, 3, 3))
    gx, gw, gb = F.conv2d_backward(np.ones((2, 2, 4, 4)), x, w, need_grad_input=False)
    assert gx is None and gw.shape == w.shape and gb.shape == (2,)


@pytest.mark.parametrize("kind", ["conv", "convT"])
def test_finite_differences_float64(kind, rng):
    x = rng.standard_normal((2, 4, 5, 6))
    if kind == "conv":
        w = rng.standard_normal((6, 2, 3, 2))
        b = rng.standard_normal(6)
        kw = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
        fwd = lambda: F.conv2d(x, w, b, **kw)  # noqa: E731
        bwd = lambda dy: F.conv2d_backward(dy, x, w, **kw)  # noqa: E731
    else:
        w = rng.standard_normal((4, 3, 3, 3))
        b = rng.standard_normal(6)
        kw = dict(stride=2, padding=1, output_padding=1, groups=2)
        fwd = lambda: F.conv_transpose2d(x, w, b, **kw)  # noqa: E731
        bwd = lambda dy: F.conv_transpose2d_backward(dy, x, w, **kw)  # noqa: E731
    dy = rng.standard_normal(fwd().shape)
    loss = lambda: float(np.sum(fwd() * dy))  # noqa: E731
    gx, gw, gb = bwd(dy)
    np.testing.assert_allclose(gx, numeric_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, numeric_grad(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, numeric_grad(loss, b), rtol=1e-6, atol=1e-7)


SHAPES_FOR_THREADS = {
    "many_images": ((16, 8, 12, 12), (16, 8, 3, 3), 1, 1),
    "batch1": ((1, 16, 20, 20), (24, 16, 3, 3), 1, 1),
    "strided": ((5, 6, 15, 15), (12, 6, 4, 4), 2, 1),
    "tiny_c1": ((9, 1, 28, 28), (8, 1, 3, 3), 1, 1),
    "pixel_major": ((6, 16, 9, 9), (32, 16, 4, 4), 2, 1),
    "pixel_major_wide": ((4, 32, 8, 8), (40, 32, 3, 3), 1, 1),
    "winograd": ((8, 16, 16, 16), (32, 16, 3, 3), 1, 1),
    # one block of tiles, and two: blocks or points shared out, by thread count
    "winograd_one_block": ((2, 16, 14, 14), (32, 16, 3, 3), 1, 1),
    "winograd_two_blocks": ((5, 16, 14, 14), (20, 16, 3, 3), 1, 1),
    # 49 tiles: one block, two of 25, or the tiles and points of one block shared out
    "winograd_batch1": ((1, 16, 28, 28), (24, 16, 3, 3), 1, 1),
    # a 4x4 stride-2 layer over its image phases (forward, both gradients, transposed)
    "winograd_phases": ((32, 5, 14, 14), (17, 5, 4, 4), 2, 1),
    # F(7x7, 2x2): one block of tiles (its points shared out), over phases and not
    "winograd_f72_phases": ((50, 5, 14, 14), (17, 5, 4, 4), 2, 1),
    "winograd_f72": ((13, 17, 14, 14), (19, 17, 2, 2), 1, 0),
    # F(7x7, 2x2) over several blocks of tiles (chunks summed in order)
    "winograd_f72_blocks": ((150, 6, 28, 28), (21, 6, 4, 4), 2, 1),
    # kernels covering the whole input: a matrix product, or dot products for one output
    "whole_input": ((6, 24, 4, 4), (40, 24, 4, 4), 1, 0),
    "whole_input_one_output": ((37, 24, 4, 4), (1, 24, 4, 4), 1, 0),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", SHAPES_FOR_THREADS)
def test_bitwise_identical_for_any_thread_count(monkeypatch, name, dtype, rng):
    xs, ws, st, pd = SHAPES_FOR_THREADS[name]
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    monkeypatch.setattr("fastcnn.functional._checks.WORK_PER_THREAD", 1)
    outs = []
    for t in (1, 2, 3):
        with fastcnn.threads(t):
            y = F.conv2d(x, w, b, st, pd, activation="relu")
            dy = np.cos(np.arange(y.size, dtype=dtype)).reshape(y.shape)
            grads = F.conv2d_backward(dy, x, w, st, pd)
            yt = F.conv_transpose2d(y, w, None, st, pd)
            gt = F.conv_transpose2d_backward(yt, y, w, st, pd)
            outs.append((y, yt) + grads + gt)
    for other in outs[1:]:
        for a, b_ in zip(outs[0], other):
            assert np.array_equal(a, b_)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(37, 70, 7, 7), (17, 5, 15, 17), (33, 3, 16, 16), (2, 4, 1, 1), (5, 2, 3, 1),
                                   (37, 130)])
def test_bias_gradient_sums_for_any_thread_count(monkeypatch, shape, dtype, rng):
    """The bias gradient (per-channel sums: planes shorter or longer than a block,
    several blocks of images, a Linear's rows) in a fixed order for any thread count."""
    from fastcnn._kernels import _conv
    dy = rng.standard_normal(shape).astype(dtype)
    monkeypatch.setattr("fastcnn.functional._checks.WORK_PER_THREAD", 1)
    outs = [_conv.channel_sum(dy, np.empty(shape[1], dtype), t) for t in (1, 2, 3)]
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])
    axes = (0,) + tuple(range(2, len(shape)))
    np.testing.assert_allclose(outs[0], dy.astype(np.float64).sum(axis=axes),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5 if dtype == np.float32 else 1e-12)


# stride-1 shapes that store tiles through the column wrap in every way: rows narrower
# than a tile (every tile spans rows), rows wide enough for whole tiles inside them,
# and depths of several blocks (tiles merged into the output block after block)
ISA_CASES = [((3, 5, 9, 9), (7, 5, 3, 3), None), ((2, 3, 20, 37), (4, 3, 3, 3), "relu"),
             ((2, 70, 6, 40), (5, 70, 3, 3), "leaky_relu"), ((1, 2, 3, 50), (13, 2, 1, 5), None),
             # pixel-major: whole and partial tiles, column-major stores with bias and activation
             ((3, 16, 6, 5), (33, 16, 3, 3), "leaky_relu"), ((2, 20, 9, 7), (24, 20, 3, 3), "relu"),
             ((2, 40, 8, 8), (64, 40, 3, 3), None),
             # Winograd F(4x4, 3x3): transforms and products compiled per instruction set
             ((4, 16, 16, 15), (24, 16, 3, 3), "relu"),
             # one input channel: its gradient is a product of a single row
             ((3, 1, 30, 20), (24, 1, 3, 3), "relu")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ISA_CASES, ids=[str(c[0]) for c in ISA_CASES])
@pytest.mark.parametrize("isa", fastcnn.supported_isas())
def test_every_isa_path(isa, case, dtype, rng):
    xs, ws, act = case
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    pad = (ws[2] // 2, ws[3] // 2)
    y_ref = ref.conv2d(x, w, b, (1, 1), pad)
    if act == "relu":
        y_ref = np.maximum(y_ref, 0)
    elif act == "leaky_relu":
        y_ref = np.where(y_ref > 0, y_ref, 0.01 * y_ref)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    try:
        fastcnn.set_isa(isa)
        y = F.conv2d(x, w, b, 1, pad, activation=act)
        gx, gw, _ = F.conv2d_backward(dy, x, w, 1, pad)
    finally:
        fastcnn.set_isa("auto")
    rgx, rgw, _ = ref.conv2d_backward(dy, x, w, (1, 1), pad)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    _close(y, y_ref, tol, "forward")
    _close(gx, rgx, tol, "grad_x")
    _close(gw, rgw, tol, "grad_w")


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("wino_phases_") and n != "wino_phases_4x4_s2"])
def test_phase_cases_run_winograd(name):
    """The phase cases above do reach the F(4x4, 2x2) kernels: forward and weight
    gradient over the input's phases, input gradient into the phases of its result."""
    from fastcnn._kernels import _conv
    (N, C, H, W, K, R, S), st, pd, dl, g = _args(CASES[name])
    P, Q = (H + 2 * pd[0] - R) // st[0] + 1, (W + 2 * pd[1] - S) // st[1] + 1
    ph = st[0] * st[1]
    assert _conv.winograd(N, C * ph, K, R // st[0], S // st[1], (1, 1), (1, 1), 1, P, Q, 64)
    assert _conv.winograd(N, K, C * ph, R // st[0], S // st[1], (1, 1), (1, 1), 1, P + R // st[0] - 1,
                          Q + S // st[1] - 1, 64)
    assert _conv.winograd_tile(2, N, P, Q) == 4


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("wino_f72_")])
def test_f72_cases_run_7x7_tiles(name):
    """The F(7x7, 2x2) cases reach it: forward and weight gradient with 7x7 tiles, the
    phased input gradient (8x8 phases) with 4x4 ones."""
    from fastcnn._kernels import _conv
    (N, C, H, W, K, R, S), st, pd, dl, g = _args(CASES[name])
    P, Q = (H + 2 * pd[0] - R) // st[0] + 1, (W + 2 * pd[1] - S) // st[1] + 1
    ph = st[0] * st[1]
    assert _conv.winograd(N, C * ph, K, R // st[0], S // st[1], (1, 1), (1, 1), 1, P, Q, 64)
    assert _conv.winograd_tile(2, N, P, Q) == 7
    assert _conv.winograd_tile(2, N, P, Q, pooled=True) == 4
    if st != (1, 1):
        assert _conv.winograd_tile(2, N, P + 1, Q + 1) == 4
    # too few images for 128 4x4 tiles' worth of 8x8 ones: 4x4 tiles
    assert _conv.winograd_tile(2, 3200 // (64 * ((P + 6) // 7) * ((Q + 6) // 7)) - 1, P, Q) == 4


def test_f72_transform_matches_direct_in_float64(rng):
    """F(7x7, 2x2) against the direct products in float64, to rounding: one image of
    one 8x8 tile each, many images, non-square outputs past a tile's edge."""
    from fastcnn._kernels import _conv
    for N, C, H, W, K in [(50, 16, 8, 8, 16), (13, 33, 15, 22, 20)]:
        x = rng.standard_normal((N, C, H, W))
        w = rng.standard_normal((K, C, 2, 2))
        b = rng.standard_normal(K)
        P, Q = H - 1, W - 1
        assert _conv.winograd_tile(2, N, P, Q) == 7
        y = _conv.conv2d_winograd(x, w, b, np.empty((N, K, P, Q)), (0, 0), 0, 0.0, 2)
        np.testing.assert_allclose(y, ref.conv2d(x, w, b, (1, 1), (0, 0)), rtol=1e-11, atol=1e-11)
        dy = rng.standard_normal((N, K, P, Q))
        dw = _conv.conv2d_winograd_backward_weight(x, dy, np.empty_like(w), (0, 0), 2)
        np.testing.assert_allclose(dw, ref.conv2d_backward(dy, x, w, (1, 1), (0, 0))[1], rtol=1e-11,
                                   atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("isa", fastcnn.supported_isas())
def test_large_winograd_weights_match_split_layer(isa, dtype, rng):
    """Transformed weights of several MiB (stored past the caches) hold the same
    values as those of smaller layers: the 136 output channels computed at once
    equal, bit for bit, the first 64 and the last 72 computed apart, whether the
    transformed weights go to scratch or to a kept buffer, for 1 and 2 threads."""
    from fastcnn._kernels import _conv
    N, C, H, W, K = 2, 136, 9, 9, 136
    assert _conv.winograd_packed_nbytes(3, C, K, dtype) > 2 << 20
    assert _conv.winograd_packed_nbytes(3, C, 72, dtype) < 2 << 20 or dtype == np.float64
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    y_ref = ref.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), (1, 1), (1, 1))
    try:
        fastcnn.set_isa(isa)
        for t in (1, 2):
            parts = [_conv.conv2d_winograd(x, w[k0:k1], b[k0:k1], np.empty((N, k1 - k0, H, W), dtype), (1, 1),
                                           0, 0.0, t) for k0, k1 in ((0, 64), (64, K))]
            for upack in (None, _conv.winograd_packed(3, C, K, dtype)):
                y = _conv.conv2d_winograd(x, w, b, np.empty((N, K, H, W), dtype), (1, 1), 0, 0.0, t, upack)
                assert np.array_equal(y, np.concatenate(parts, axis=1))
                _close(y, y_ref, 1e-4 if dtype == np.float32 else 1e-10, "forward")
    finally:
        fastcnn.set_isa("auto")


@pytest.mark.parametrize("n", [32, 50], ids=["f42", "f72"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("isa", fastcnn.supported_isas())
def test_phase_winograd_every_isa(isa, dtype, n, rng):
    """F(4x4, 2x2) and F(7x7, 2x2) over image phases, compiled per instruction set (its
    panel widths differ): forward with bias and activation, both gradients, transposed
    forward."""
    x = rng.standard_normal((n, 5, 14, 14)).astype(dtype)
    w = rng.standard_normal((20, 5, 4, 4)).astype(dtype)
    b = rng.standard_normal(20).astype(dtype)
    y_ref = np.maximum(ref.conv2d(x, w, b, (2, 2), (1, 1)), 0)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    try:
        fastcnn.set_isa(isa)
        y = F.conv2d(x, w, b, 2, 1, activation="relu")
        gx, gw, _ = F.conv2d_backward(dy, x, w, 2, 1)
        yt = F.conv_transpose2d(dy, w, b[:5], 2, 1)
    finally:
        fastcnn.set_isa("auto")
    rgx, rgw, _ = ref.conv2d_backward(dy, x, w, (2, 2), (1, 1))
    tol = 1e-4 if dtype == np.float32 else 1e-10
    _close(y, y_ref, tol, "forward")
    _close(gx, rgx, tol, "grad_x")
    _close(gw, rgw, tol, "grad_w")
    _close(yt, rgx + b[:5].reshape(1, 5, 1, 1), tol, "transposed forward")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("isa", fastcnn.supported_isas())
def test_winograd_products_deeper_than_a_depth_block(isa, dtype, rng):
    """Input channels past the GEMM's depth block (256 to 384 for every instruction set):
    each point's product sums its depth blocks in turn, reading the transformed tiles in
    place. Against the reference, and the same bits for 1 to 3 threads; tiles of one
    block, of several, and a last block of a few tiles."""
    from fastcnn._kernels import _conv
    tol = 1e-3 if dtype == np.float32 else 1e-9
    try:
        fastcnn.set_isa(isa)
        for n, c, h, k in ((1, 400, 6, 20), (3, 391, 12, 17), (2, 520, 17, 8)):
            x = rng.standard_normal((n, c, h, h)).astype(dtype)
            w = rng.standard_normal((k, c, 3, 3)).astype(dtype)
            b = rng.standard_normal(k).astype(dtype)
            expect = ref.conv2d(x, w, b, (1, 1), (1, 1))
            outs = [_conv.conv2d_winograd(x, w, b, np.empty(expect.shape, dtype), (1, 1), 0, 0.0, t)
                    for t in (1, 2, 3)]
            for y in outs[1:]:
                assert np.array_equal(y, outs[0]), (n, c, h, k)
            _close(outs[0], expect, tol, f"{(n, c, h, k)}")
    finally:
        fastcnn.set_isa("auto")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("isa", fastcnn.supported_isas())
def test_winograd_of_few_tiles_shares_out_output_channels(isa, dtype, rng):
    """Under 8 tiles a thread (one image, say): the threads transform a share of the
    tiles each, then each makes the products and outputs of its own output channels
    over all the tiles; from 8 to 15 each thread takes its own tiles end to end (16
    tiles on 2 threads). The same bits for 1 to 4 threads, plain, pooled and written
    into image phases (a transposed convolution's forward), and against the reference."""
    from fastcnn._kernels import _conv
    tol = 1e-4 if dtype == np.float32 else 1e-10
    cases = ((1, 20, 14, 13, 50, 1, False), (1, 32, 14, 14, 64, 1, True), (2, 16, 9, 10, 33, 1, False),
             (1, 17, 6, 6, 100, 0, False), (1, 16, 8, 8, 16, 1, True))
    try:
        fastcnn.set_isa(isa)
        for n, c, h, w_, k, pad, pooled in cases:
            x = rng.standard_normal((n, c, h, w_)).astype(dtype)
            w = rng.standard_normal((k, c, 3, 3)).astype(dtype)
            b = rng.standard_normal(k).astype(dtype)
            P, Q = h + 2 * pad - 2, w_ + 2 * pad - 2
            expect = np.maximum(ref.conv2d(x, w, b, (1, 1), (pad, pad)), 0)
            if pooled:
                expect = expect[:, :, :P // 2 * 2, :Q // 2 * 2].reshape(n, k, P // 2, 2, Q // 2, 2).max(axis=(3, 5))
            outs = []
            for t in (1, 2, 3, 4):
                y = np.empty(expect.shape, dtype)
                outs.append(_conv.conv2d_winograd(x, w, b, y, (pad, pad), 1, 0.0, t, None, False,
                                                  (P, Q) if pooled else None))
            for y in outs[1:]:
                assert np.array_equal(y, outs[0]), (n, c, h, w_, k, pad, pooled)
            _close(outs[0], expect, tol, f"{(n, c, h, w_, k, pad, pooled)}")
        # a transposed convolution's forward of one image (4x4, stride 2), written into
        # the phases of its output as the input gradient's Winograd does
        x = rng.standard_normal((1, 40, 7, 7)).astype(dtype)
        w = rng.standard_normal((40, 24, 4, 4)).astype(dtype)
        b = rng.standard_normal(24).astype(dtype)
        hs_ws = F.conv._phase_shape((7, 7), w, (2, 2))
        outs = []
        for t in (1, 2, 3, 4):
            out = np.empty((1, 24, 14, 14), dtype)
            outs.append(F.conv._kept_winograd(x, w, lambda: F.conv._phase_weight(w, (2, 2), True),
                                              F.conv._phase_shape_of(w, (2, 2), True), np.repeat(b, 4), out,
                                              (1, 1), 0, 0.0, t, None, y_phases=(2, 2, 1, 1) + hs_ws))
        for y in outs[1:]:
            assert np.array_equal(y, outs[0])
        _close(outs[0], ref.conv2d_backward(x, np.zeros((1, 24, 14, 14), dtype), w, (2, 2), (1, 1))[0]
               + b.reshape(1, -1, 1, 1), tol, "transposed forward")
    finally:
        fastcnn.set_isa("auto")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_cache_reuses_transformed_weights_while_values_stay(dtype, rng, torch):
    x = rng.standard_normal((1, 16, 14, 14)).astype(dtype)   # 16 tiles: Winograd only with the cache
    w = rng.standard_normal((24, 16, 3, 3)).astype(dtype)
    b = rng.standard_normal(24).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    cache = F.WeightCache()
    assert cache.lookup(w)[1] is False
    y1 = F.conv2d(x, w, b, 1, 1, weight_cache=cache)
    assert cache.lookup(w)[1] is True
    y2 = F.conv2d(x, w, b, 1, 1, weight_cache=cache)
    assert np.array_equal(y1, y2)
    _close(y1, ref.conv2d(x, w, b, (1, 1), (1, 1)), tol, "kept weights vs reference")
    for t in (1, 2, 3):   # the same result for any thread count
        with fastcnn.threads(t):
            assert np.array_equal(F.conv2d(x, w, b, 1, 1, weight_cache=cache), y1)
    # an in-place edit is seen; so is another array with the same values
    w[3, 2, 1, 1] += 1.0
    assert cache.lookup(w)[1] is False
    y3 = F.conv2d(x, w, b, 1, 1, weight_cache=cache)
    _close(y3, ref.conv2d(x, w, b, (1, 1), (1, 1)), tol, "after an in-place edit")
    assert not np.allclose(y3, y1)
    w2 = w.copy()
    assert cache.lookup(w2)[1] is False
    _close(F.conv2d(x, w2, b, 1, 1, weight_cache=cache), y3, tol, "another array")
    # the packed layout belongs to the instruction set it was made for
    try:
        for isa in fastcnn.supported_isas():
            fastcnn.set_isa(isa)
            _close(F.conv2d(x, w2, b, 1, 1, weight_cache=cache), y3, tol, f"isa {isa}")
    finally:
        fastcnn.set_isa("auto")
    with pytest.raises(TypeError, match="weight_cache"):
        F.conv2d(x, w, b, 1, 1, weight_cache={})
    for bad in ([[1.0]], w[0], w.astype(np.int32)):
        with pytest.raises(TypeError, match="weight must be a 4-D float32 or float64"):
            cache.lookup(bad)
    # a Conv2d in eval mode keeps its transformed weights and follows in-place updates
    m = fastcnn.nn.Conv2d(16, 24, 3, padding=1).to(dtype).eval()
    tm = torch.nn.Conv2d(16, 24, 3, padding=1).to(torch.float32 if dtype == np.float32 else torch.float64)
    for step in range(3):
        with torch.no_grad():
            tm.weight.copy_(torch.tensor(m.weight.data))
            tm.bias.copy_(torch.tensor(m.bias.data))
            expected = tm(torch.tensor(x)).numpy()
        _close(m(x), expected, tol, f"Conv2d eval, step {step}")
        m.weight.data *= -0.5
        m.weight.data[0] += 0.25


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_cache_keeps_the_tile_size(dtype, rng):
    """A kept 2x2 transform follows the tile size the outputs ask: F(7x7, 2x2) for 7x7
    outputs of 50 images, F(4x4, 2x2) for 32; a buffer of the wrong size is refused,
    not overrun."""
    from fastcnn._kernels import _conv
    w = rng.standard_normal((24, 16, 2, 2)).astype(dtype)
    b = rng.standard_normal(24).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    cache = F.WeightCache()
    for n, m in [(50, 7), (50, 7), (32, 4), (50, 7)]:
        x = rng.standard_normal((n, 16, 8, 8)).astype(dtype)
        assert _conv.winograd_tile(2, n, 7, 7) == m
        y = F.conv2d(x, w, b, 1, 0, weight_cache=cache)
        _close(y, ref.conv2d(x, w, b, (1, 1), (0, 0)), tol, f"batch {n}")
        assert cache.lookup(w, m)[1] is True
        assert cache.lookup(w, 11 - m)[1] is False
    small = _conv.winograd_packed(2, 16, 24, dtype, 4)
    with pytest.raises(ValueError, match="upack holds"):
        _conv.conv2d_winograd(x, w, b, np.empty((50, 24, 7, 7), dtype), (0, 0), 0, 0.0, 1, small)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_caches_of_phase_winograd_and_input_gradients(dtype, rng):
    """Caches of the strided Winograd forward (over image phases), of the input gradient
    and of a transposed convolution: reused while the weights stay, followed through
    in-place edits, the same results as without a cache."""
    from fastcnn.functional import conv as conv_mod
    x = rng.standard_normal((50, 16, 14, 14)).astype(dtype)
    w = rng.standard_normal((20, 16, 4, 4)).astype(dtype)
    b = rng.standard_normal(20).astype(dtype)
    dy = rng.standard_normal((50, 20, 7, 7)).astype(dtype)
    d2 = rng.standard_normal((50, 16, 14, 14)).astype(dtype)
    w3 = rng.standard_normal((24, 16, 3, 3)).astype(dtype)
    x3 = rng.standard_normal((2, 16, 20, 20)).astype(dtype)
    dy3 = rng.standard_normal((2, 24, 18, 18)).astype(dtype)
    assert conv_mod._phase_winograd(50, w, 1, (2, 2), (1, 1), (7, 7))
    assert conv_mod._phase_winograd(50, w, 1, (2, 2), (1, 1), (8, 8), data=True)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for kept in (True, False):
        fwd, data, data3 = F.WeightCache(kept), F.WeightCache(kept), F.WeightCache(kept)
        for step in range(3):
            for again in range(2):
                y = F.conv2d(x, w, b, 2, 1, weight_cache=fwd)
                assert np.array_equal(y, F.conv2d(x, w, b, 2, 1))
                _close(y, ref.conv2d(x, w, b, (2, 2), (1, 1)), tol, f"forward, step {step}")
                gx, gw, gb = F.conv2d_backward(dy, x, w, 2, 1, weight_cache=data)
                assert np.array_equal(gx, F.conv2d_backward(dy, x, w, 2, 1)[0])
                _close(gx, ref.conv2d_backward(dy, x, w, (2, 2), (1, 1))[0], tol, f"grad_x, step {step}")
                yt = F.conv_transpose2d(dy, w, b[:16], 2, 1, weight_cache=data)
                assert np.array_equal(yt, F.conv_transpose2d(dy, w, b[:16], 2, 1))
                tx = F.conv_transpose2d_backward(d2, dy, w, 2, 1, weight_cache=fwd)[0]
                assert np.array_equal(tx, F.conv_transpose2d_backward(d2, dy, w, 2, 1)[0])
                # a 3x3 stride-1 input gradient (Winograd over the flipped kernels)
                g3 = F.conv2d_backward(dy3, x3, w3, 1, 0, weight_cache=data3)[0]
                assert np.array_equal(g3, F.conv2d_backward(dy3, x3, w3, 1, 0)[0])
                _close(g3, ref.conv2d_backward(dy3, x3, w3, (1, 1), (0, 0))[0], tol, f"3x3 grad_x, step {step}")
                assert data3.lookup(w3, 4, (16, 24, 3, 3), "flip")[1] is True
                assert fwd.lookup(w, 7, conv_mod._phase_shape_of(w, (2, 2)), "phases")[1] is True
                assert data.lookup(w, 4, conv_mod._phase_shape_of(w, (2, 2), True), "phases_flip")[1] is True
            w[step, 1, 2, 3] += 0.5   # an optimiser's in-place update
            w3[0, step, 1, 1] -= 0.5
            assert fwd.lookup(w, 7, conv_mod._phase_shape_of(w, (2, 2)), "phases")[1] is False


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_weight_cache_shared_by_forward_and_gradients(rng, dtype):
    """One WeightCache passed to the forward, the input gradient and the transposed
    convolutions of the same weight, with as many input as output channels (so that
    the weight and its flipped, transposed kernel have one shape): each call uses the
    transform of its own kernel, and gives what it gives without a cache."""
    x = rng.standard_normal((2, 32, 16, 16)).astype(dtype)
    g = rng.standard_normal((2, 32, 16, 16)).astype(dtype)
    w = rng.standard_normal((32, 32, 3, 3)).astype(dtype)
    x2 = rng.standard_normal((50, 16, 14, 14)).astype(dtype)
    g2 = rng.standard_normal((50, 16, 7, 7)).astype(dtype)
    w2 = rng.standard_normal((16, 16, 4, 4)).astype(dtype)
    for kept in (True, False):
        cache, cache2 = F.WeightCache(kept), F.WeightCache(kept)
        for _ in range(2):
            calls = [
                (lambda c: F.conv2d(x, w, None, 1, 1, weight_cache=c)),
                (lambda c: F.conv2d_backward(g, x, w, 1, 1, weight_cache=c)[0]),
                (lambda c: F.conv_transpose2d(g, w, None, 1, 1, weight_cache=c)),
                (lambda c: F.conv_transpose2d_backward(g, x, w, 1, 1, weight_cache=c)[0]),
            ]
            calls2 = [
                (lambda c: F.conv2d(x2, w2, None, 2, 1, weight_cache=c)),
                (lambda c: F.conv2d_backward(g2, x2, w2, 2, 1, weight_cache=c)[0]),
                (lambda c: F.conv_transpose2d(g2, w2, None, 2, 1, weight_cache=c)),
            ]
            for c, fns in ((cache, calls), (cache2, calls2)):
                for fn in fns:
                    assert np.array_equal(fn(c), fn(None))
    _close(F.conv2d_backward(g, x, w, 1, 1, weight_cache=cache)[0],
           ref.conv2d_backward(g, x, w, (1, 1), (1, 1))[0], 1e-4 if dtype == np.float32 else 1e-10, "grad_x")


def test_transient_weight_cache_has_a_size_limit(rng):
    """A cache for training (kept=False) holds at most 16 MiB: larger transforms are made
    every call; a kept one holds any size."""
    w = rng.standard_normal((256, 256, 3, 3)).astype(np.float32)   # 36 points x 256 x 256: 9.4 MB
    assert F.WeightCache(False).lookup(w)[0] is not None
    big = rng.standard_normal((512, 512, 3, 3)).astype(np.float32)   # 37.7 MB
    assert F.WeightCache(False).lookup(big) == (None, False)
    assert F.WeightCache(True).lookup(big)[0].nbytes > 16 << 20
    x = rng.standard_normal((1, 512, 16, 16)).astype(np.float32)
    cache = F.WeightCache(False)
    _close(F.conv2d(x, big, None, 1, 1, weight_cache=cache), ref.conv2d(x, big, None, (1, 1), (1, 1)), 1e-3,
           "past the limit")
    assert cache.lookup(big) == (None, False)


def test_conv_layers_share_transforms_between_training_passes(rng):
    """In training a layer reuses its transformed weights for a second pass with the
    same weights (a GAN discriminator on real, then generated images) and makes them
    again after the optimiser's step: every pass matches a fresh layer's."""
    import fastcnn.nn as nn
    conv = nn.Conv2d(16, 20, 4, 2, 1)
    convt = nn.ConvTranspose2d(20, 16, 4, 2, 1)
    opt = fastcnn.optim.SGD(list(conv.parameters()) + list(convt.parameters()), lr=0.1)
    for step in range(2):
        for _ in range(2):
            x = rng.standard_normal((50, 16, 14, 14)).astype(np.float32)
            y = conv(x)
            gx = conv.backward(np.ones_like(y))
            z = convt(y)
            gz = convt.backward(np.ones_like(z))
            w, b = conv.weight.data, conv.bias.data
            assert np.array_equal(y, F.conv2d(x, w, b, 2, 1))
            assert np.array_equal(gx, F.conv2d_backward(np.ones_like(y), x, w, 2, 1)[0])
            wt, bt = convt.weight.data, convt.bias.data
            assert np.array_equal(z, F.conv_transpose2d(y, wt, bt, 2, 1))
            assert np.array_equal(gz, F.conv_transpose2d_backward(np.ones_like(z), y, wt, 2, 1)[0])
        assert conv._weight_cache().lookup(w, 7, (20, 64, 2, 2), "phases")[1] is True
        assert not conv._weight_cache().kept and conv.eval()._weight_cache().kept
        conv.train()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_weight_gradient_with_whole_rows_copied_at_once(dtype, rng):
    """An output gradient whose rows fill the channels-last copy's rows (channels a
    multiple of 16, width a multiple of the tile) is transposed several rows at a
    time; thread counts that split an image's rows between threads give the same."""
    from fastcnn.functional import conv as conv_mod
    x = rng.standard_normal((4, 20, 18, 18)).astype(dtype)
    w = rng.standard_normal((32, 20, 3, 3)).astype(dtype)
    dy = rng.standard_normal((4, 32, 16, 16)).astype(dtype)
    assert conv_mod._winograd(4, w, 1, (1, 1), (1, 1), (16, 16), conv_mod._WINO_TILES_OTHER)
    expected = ref.conv2d_backward(dy, x, w, (1, 1), (0, 0))[1]
    tol = 1e-4 if dtype == np.float32 else 1e-10
    outs = []
    for t in (1, 2, 3):
        with fastcnn.threads(t):
            outs.append(F.conv2d_backward(dy, x, w, 1, 0)[1])
        _close(outs[-1], expected, tol, f"{t} threads")
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, k, r, pad", [
    ((3, 16, 28, 28), 24, 3, 1),     # 147 tiles: 3 blocks made as two halves
    ((9, 5, 28, 28), 7, 3, 1),       # 441 tiles: 7 blocks made as two halves
    ((10, 5, 28, 28), 7, 3, 1),      # 490 tiles: 8 blocks, kept (chunks summed in order)
    ((4, 128, 24, 24), 128, 3, 1),   # 144 tiles: as two halves in float32; in float64 past the bytes for that
    ((13, 33, 15, 22), 20, 2, 0),    # F(7x7, 2x2), 78 tiles: 2 blocks, a row of points a task on 3 or 4 threads
], ids=["f43_3", "f43_7", "f43_8", "f43_wide", "f72_2"])
def test_winograd_weight_gradient_of_a_few_blocks_for_any_thread_count(xs, k, r, pad, dtype, rng):
    """A weight gradient of a few blocks of tiles whose transforms fit together makes them
    as two halves (on more than two threads, each half's points taken one by one by the
    threads): against the reference, and bitwise the same for 1 to 4 threads."""
    from fastcnn._kernels import _conv
    N, C, H, W = xs
    x = rng.standard_normal(xs).astype(dtype)
    w = np.zeros((k, C, r, r), dtype)
    P, Q = H + 2 * pad - r + 1, W + 2 * pad - r + 1
    assert _conv.winograd_tile(r, N, P, Q) == (4 if r == 3 else 7)
    dy = rng.standard_normal((N, k, P, Q)).astype(dtype)
    expected = ref.conv2d_backward(dy, x, w, (1, 1), (pad, pad))[1]
    tol = 1e-4 if dtype == np.float32 else 1e-10
    outs = [_conv.conv2d_winograd_backward_weight(x, dy, np.empty_like(w), (pad, pad), t) for t in (1, 2, 3, 4)]
    _close(outs[0], expected, tol, "1 thread")
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_copies_of_layers_start_with_empty_weight_caches(training, rng):
    """copy.deepcopy and pickle of layers whose caches hold transformed weights: the copy
    computes the same (its caches start empty: a buffer belongs to one weight array and
    to aligned memory), and a pickle does not carry the buffers."""
    import copy
    import pickle
    import fastcnn.nn as nn
    x = rng.standard_normal((50, 16, 14, 14)).astype(np.float32)
    layers = [nn.Conv2d(16, 24, 3, padding=1), nn.Conv2d(16, 20, 4, 2, 1), nn.ConvTranspose2d(16, 20, 4, 2, 1)]
    for layer in layers:
        layer.train(training)
        y = layer(x)
        if training:
            gx = layer.backward(np.ones_like(y))
        for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
            for _ in range(2):
                assert np.array_equal(clone(x), y)
                if training:
                    assert np.array_equal(clone.backward(np.ones_like(y)), gx)
        # the weights and the input kept for the backward, not the transformed weights
        assert len(pickle.dumps(layer)) < 2 * layer.weight.data.nbytes + x.nbytes + 65536


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_cache_keeps_the_forwards_copy_for_the_weight_gradient(dtype, rng, monkeypatch):
    """conv2d keeps its channels-last copy of the phases of x in an InputCache, and
    conv2d_backward of the same x reads it: the same gradients as without (bitwise), and
    against the reference; for another array, or with a cache that saw no forward, x is
    read."""
    from fastcnn._kernels import _conv
    tol = 1e-4 if dtype == np.float32 else 1e-10
    read = []
    real = _conv.conv2d_winograd_backward_weight
    monkeypatch.setattr(F.conv._conv, "conv2d_winograd_backward_weight", _Recorder(real, read), raising=False)
    for shape, k, pad in (((50, 16, 14, 14), 20, 1), ((32, 16, 17, 13), 16, (1, 1)), ((8, 32, 30, 30), 32, 1)):
        x = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal((k, shape[1], 4, 4)).astype(dtype)
        b = rng.standard_normal(k).astype(dtype)
        cache = F.InputCache()
        y = F.conv2d(x, w, b, 2, pad, input_cache=cache)
        assert np.array_equal(y, F.conv2d(x, w, b, 2, pad))
        g = rng.standard_normal(y.shape).astype(dtype)
        plain = F.conv2d_backward(g, x, w, 2, pad)
        del read[:]
        kept = F.conv2d_backward(g, x, w, 2, pad, input_cache=cache)
        assert read and read[-1] is not None, f"{shape}: the kept copy was not read"
        for a, e in zip(kept, plain):
            assert np.array_equal(a, e)
        _close(kept[1], ref.conv2d_backward(g, x, w, (2, 2), _pair(pad))[1], tol, f"{shape} weight gradient")
        # a copy of x (another array), or a cache without a forward: x is read
        del read[:]
        assert np.array_equal(F.conv2d_backward(g, x.copy(), w, 2, pad, input_cache=cache)[1], plain[1])
        assert read == [None]
        del read[:]
        F.conv2d_backward(g, x, w, 2, pad, input_cache=F.InputCache())
        assert read == [None]
    # the copy holds the values x had at the forward
    x = rng.standard_normal((50, 16, 14, 14)).astype(dtype)
    w = rng.standard_normal((20, 16, 4, 4)).astype(dtype)
    cache = F.InputCache()
    y = F.conv2d(x, w, None, 2, 1, input_cache=cache)
    g = rng.standard_normal(y.shape).astype(dtype)
    expected = F.conv2d_backward(g, x, w, 2, 1)[1]
    x2 = x.copy()
    x *= 3
    assert np.array_equal(F.conv2d_backward(g, x, w, 2, 1, input_cache=cache)[1], expected)
    assert np.array_equal(F.conv2d_backward(g, x2, w, 2, 1)[1], expected)
    with pytest.raises(TypeError, match="input_cache must be an InputCache"):
        F.conv2d(x, w, None, 2, 1, input_cache={})
    with pytest.raises(TypeError, match="input_cache must be an InputCache"):
        F.conv2d_backward(g, x, w, 2, 1, input_cache=F.WeightCache())


def test_transposed_backward_shares_the_copy_of_its_output_gradient(rng, monkeypatch, torch):
    """conv_transpose2d_backward's input gradient (a convolution of grad_out) leaves its
    copy of grad_out's phases to the weight gradient: the same gradients, bitwise, as
    without sharing (the weight gradient alone), and against PyTorch's."""
    from fastcnn._kernels import _conv
    read = []
    monkeypatch.setattr(F.conv._conv, "conv2d_winograd_backward_weight",
                        _Recorder(_conv.conv2d_winograd_backward_weight, read), raising=False)
    x = rng.standard_normal((64, 40, 7, 7)).astype(np.float32)
    w = (rng.standard_normal((40, 24, 4, 4)) * 0.1).astype(np.float32)
    g = rng.standard_normal((64, 24, 14, 14)).astype(np.float32)
    gx, gw, gb = F.conv_transpose2d_backward(g, x, w, 2, 1)
    assert read and read[-1] is not None
    del read[:]
    alone = F.conv_transpose2d_backward(g, x, w, 2, 1, need_grad_input=False)
    assert read == [None] and alone[0] is None
    assert np.array_equal(gw, alone[1]) and np.array_equal(gb, alone[2])
    _close(gx, F.conv2d(g, w, None, 2, 1), 1e-5, "input gradient")
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    torch.nn.functional.conv_transpose2d(tx, tw, None, 2, 1).backward(torch.tensor(g))
    _close(gx, tx.grad.numpy(), 1e-4, "input gradient vs torch")
    _close(gw, tw.grad.numpy(), 1e-4, "weight gradient vs torch")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["3x3", "3x3-batch1", "4x4-stride2"])
def test_winograd_weight_gradient_sums_the_bias_gradient(dtype, case, rng, monkeypatch):
    """The Winograd weight gradients sum the bias gradient from their copy of the output
    gradient: equal to the sum, the same bits for any thread count (one image: its
    channels shared out among the threads), and with a NaN."""
    if case == "3x3":
        x = rng.standard_normal((37, 16, 14, 13)).astype(dtype)
        w = rng.standard_normal((24, 16, 3, 3)).astype(dtype)
        stride, pad = 1, 1
    elif case == "3x3-batch1":
        x = rng.standard_normal((1, 16, 56, 55)).astype(dtype)
        w = rng.standard_normal((40, 16, 3, 3)).astype(dtype)
        stride, pad = 1, 1
    else:
        x = rng.standard_normal((50, 16, 14, 14)).astype(dtype)
        w = rng.standard_normal((20, 16, 4, 4)).astype(dtype)
        stride, pad = 2, 1
    y = F.conv2d(x, w, None, stride, pad)
    g = rng.standard_normal(y.shape).astype(dtype)
    gw = np.empty_like(w)
    gb = np.full(w.shape[0], np.nan, dtype)
    monkeypatch.setattr("fastcnn.functional._checks.WORK_PER_THREAD", 1)
    assert F.conv._backward_weight(x, g, gw, 1, (stride, stride), (pad, pad), (1, 1), 2, gb)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    _close(gb, g.astype(np.float64).sum(axis=(0, 2, 3)), tol, "bias gradient")
    outs = []
    for t in (1, 2, 3):
        with fastcnn.threads(t):
            outs.append(F.conv2d_backward(g, x, w, stride, pad)[2])
    assert all(np.array_equal(o, gb) for o in outs)
    g[-1, 5, 2, 2] = np.nan
    gb2 = F.conv2d_backward(g, x, w, stride, pad)[2]
    assert np.isnan(gb2[5]) and np.isfinite(np.delete(gb2, 5)).all()


class _Recorder:
    """Calls ``fn``, recording the argument ``name`` (at ``position``, or by keyword) of each
    call: by default the kept copy x_nhwc of conv2d_winograd_backward_weight."""

    def __init__(self, fn, record, name="x_nhwc", position=6):
        self.fn, self.record, self.name, self.position = fn, record, name, position

    def __call__(self, *args, **kwargs):
        self.record.append(kwargs.get(self.name, args[self.position] if len(args) > self.position else None))
        return self.fn(*args, **kwargs)


def _pair(p):
    return (p, p) if isinstance(p, int) else p


def test_input_cache_of_layers_in_training(rng):
    """A Conv2d in training keeps its input's copy for its weight gradient; its gradients
    equal the functional ones, in eval mode it keeps none, and copies start empty."""
    import copy
    import pickle
    import fastcnn.nn as nn
    conv = nn.Conv2d(16, 20, 4, 2, 1)
    x = rng.standard_normal((50, 16, 14, 14)).astype(np.float32)
    y = conv(x)
    assert conv._icache._copy_of(x, conv._icache._state[1]) is not None
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = conv.backward(g)
    egx, egw, egb = F.conv2d_backward(g, x, conv.weight.data, 2, 1)
    assert np.array_equal(gx, egx) and np.array_equal(conv.weight.grad, egw)
    assert np.array_equal(conv.bias.grad, egb)
    for clone in (copy.deepcopy(conv), pickle.loads(pickle.dumps(conv))):
        assert clone._icache._state is None
        clone.zero_grad()
        clone(x)
        clone.backward(g)
        assert np.array_equal(clone.weight.grad, egw)
    conv.eval()
    conv._icache._state = None
    conv(x)
    assert conv._icache._state is None


def test_one_input_channel_forward_runs_without_phases():
    """A 4x4 stride-2 forward with one input channel runs over the image's phases only
    with fewer than 16 outputs; with more, and pixel-major shapes, it reads the image."""
    w = np.zeros((16, 1, 4, 4), np.float32)
    assert not F.conv._phased(w, (2, 2), (1, 1), 1, direct=True)
    assert F.conv._phased(w[:8], (2, 2), (1, 1), 1, direct=True)
    assert F.conv._phased(w, (2, 2), (1, 1), 1)              # (not a forward)
    assert F.conv._phased(np.zeros((16, 2, 4, 4)), (2, 2), (1, 1), 2, direct=True)   # 8 outputs a group


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_cache_keeps_the_stride1_winograd_copy(dtype, rng, monkeypatch):
    """A 3x3 stride-1 Winograd conv2d keeps its channels-last copy of the padded x in an
    InputCache, read by conv2d_backward of the same x: the same gradients, bitwise, as
    without, and against the reference; x's values at the forward."""
    from fastcnn._kernels import _conv
    read = []
    monkeypatch.setattr(F.conv._conv, "conv2d_winograd_backward_weight",
                        _Recorder(_conv.conv2d_winograd_backward_weight, read), raising=False)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for shape, k, pad in (((64, 32, 14, 14), 64, 1), ((20, 16, 13, 9), 24, 0), ((9, 17, 11, 12), 16, 2)):
        x = rng.standard_normal(shape).astype(dtype)
        w = rng.standard_normal((k, shape[1], 3, 3)).astype(dtype)
        b = rng.standard_normal(k).astype(dtype)
        cache = F.InputCache()
        y = F.conv2d(x, w, b, 1, pad, activation="relu", input_cache=cache)
        assert np.array_equal(y, F.conv2d(x, w, b, 1, pad, activation="relu"))
        g = rng.standard_normal(y.shape).astype(dtype)
        plain = F.conv2d_backward(g, x, w, 1, pad, need_grad_input=False)
        del read[:]
        kept = F.conv2d_backward(g, x, w, 1, pad, need_grad_input=False, input_cache=cache)
        assert read and read[-1] is not None, f"{shape}: the kept copy was not read"
        assert np.array_equal(kept[1], plain[1]) and np.array_equal(kept[2], plain[2])
        _close(kept[1], ref.conv2d_backward(g, x, w, (1, 1), (pad, pad))[1], tol, f"{shape} weight gradient")
        x2 = x.copy()
        x *= 3
        assert np.array_equal(F.conv2d_backward(g, x, w, 1, pad, input_cache=cache)[1], plain[1])
        del read[:]
        assert np.array_equal(F.conv2d_backward(g, x2, w, 1, pad, input_cache=cache)[1], plain[1])
        assert read == [None]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_shares_the_copy_of_the_output_gradient(dtype, rng, monkeypatch, torch):
    """conv2d_backward of a 3x3 stride-1 convolution whose input gradient and weight gradient
    both run as Winograd: the weight gradient reads the input gradient's channels-last copy
    of grad_out, where it covers the weight gradient's tiles; the same gradients, bitwise,
    as the weight gradient alone (which copies grad_out itself), any thread count, and
    against PyTorch's."""
    from fastcnn._kernels import _conv
    read = []
    monkeypatch.setattr(F.conv._conv, "conv2d_winograd_backward_weight",
                        _Recorder(_conv.conv2d_winograd_backward_weight, read, "dy_nhwc", 8), raising=False)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    shared = 0
    for n, c, k, h, w_, pad in ((64, 32, 64, 14, 14, 1), (64, 16, 24, 13, 9, 1), (40, 16, 17, 10, 11, 0),
                                (64, 20, 16, 7, 6, 2), (64, 20, 16, 8, 9, 2), (1, 64, 64, 56, 56, 1),
                                (3, 16, 16, 30, 21, 1)):
        x = rng.standard_normal((n, c, h, w_)).astype(dtype)
        w = (rng.standard_normal((k, c, 3, 3)) * 0.2).astype(dtype)
        g = rng.standard_normal((n, k, h + 2 * pad - 2, w_ + 2 * pad - 2)).astype(dtype)
        expect = _conv.winograd_dy_shared(3, n, g.shape[2], g.shape[3], 2 - pad, 2 - pad)
        outs = []
        for t in (1, 2):
            del read[:]
            with fastcnn.threads(t):
                outs.append(F.conv2d_backward(g, x, w, 1, pad))
            assert read, "no Winograd weight gradient"
            assert (read[-1] is not None) == expect, (n, c, k, h, w_, pad)
        shared += expect
        del read[:]
        alone = F.conv2d_backward(g, x, w, 1, pad, need_grad_input=False)
        assert read == [None]
        for gx, gw, gb in outs:
            assert np.array_equal(gw, alone[1]) and np.array_equal(gb, alone[2])
            assert np.array_equal(gx, outs[0][0])
        tx = torch.tensor(x, requires_grad=True)
        tw = torch.tensor(w, requires_grad=True)
        tb = torch.zeros(k, dtype=tx.dtype, requires_grad=True)
        torch.nn.functional.conv2d(tx, tw, tb, 1, pad).backward(torch.tensor(g))
        _close(outs[0][0], tx.grad.numpy(), tol, "input gradient vs torch")
        _close(outs[0][1], tw.grad.numpy(), tol, "weight gradient vs torch")
        _close(outs[0][2], tb.grad.numpy(), tol, "bias gradient vs torch")
    assert shared >= 4
    # the kernel checks the copy it is given
    x = rng.standard_normal((64, 16, 14, 14)).astype(dtype)
    w = rng.standard_normal((24, 16, 3, 3)).astype(dtype)
    dy = rng.standard_normal((64, 24, 14, 14)).astype(dtype)
    n = _conv.winograd_nhwc_size(3, 64, 24, 14, 14)
    good = _conv.aligned_empty(n, dtype)
    good[...] = 0
    dw = np.empty_like(w)
    for bad in (good[:n - 16], good.astype(np.float32 if dtype == np.float64 else np.float64)):
        with pytest.raises(ValueError, match="dy_nhwc"):
            _conv.conv2d_winograd_backward_weight(x, dy, dw, (1, 1), 1, None, None, None, bad, (1, 1))
    assert not _conv.winograd_dy_shared(3, 64, 5, 5, 0, 0)
    with pytest.raises(ValueError, match="dy_pad"):
        _conv.conv2d_winograd_backward_weight(x[:, :, :7, :7].copy(), dy[:, :, :5, :5].copy(), dw, (0, 0), 1,
                                              None, None, None, good, (0, 0))
    with pytest.raises(ValueError, match="dy_pad"):
        _conv.conv2d_winograd_backward_weight(x, dy, dw, (1, 1), 1, None, None, None, good, None)


def test_winograd_refuses_a_misaligned_or_mistyped_kept_buffer(rng):
    from fastcnn._kernels import _conv
    x = rng.standard_normal((50, 16, 8, 8)).astype(np.float32)
    w = rng.standard_normal((24, 16, 2, 2)).astype(np.float32)
    y = np.empty((50, 24, 7, 7), np.float32)
    good = _conv.winograd_packed(2, 16, 24, np.float32, 7)
    good[...] = 0
    raw = np.empty(good.size + 16, np.float32)
    off = (64 - raw.ctypes.data % 64) // 4 % 16
    misaligned = raw[off + 1:off + 1 + good.size]
    for bad in (misaligned, good.astype(np.float64), good.reshape(-1, 2)[:, 0]):
        with pytest.raises(ValueError, match="64-byte aligned"):
            _conv.conv2d_winograd(x, w, None, y, (0, 0), 0, 0.0, 1, bad)
    _conv.conv2d_winograd(x, w, None, y, (0, 0), 0, 0.0, 1, good)
    _close(y, ref.conv2d(x, w, None, (1, 1), (0, 0)), 1e-4, "kept buffer")
    # the kept copy of an input's phases: aligned, of x's dtype, large enough
    xi = rng.standard_normal((50, 4, 14, 14)).astype(np.float32)
    n = _conv.winograd_nhwc_size(2, 50, 16, 7, 7, 7)
    copy_ok = _conv.aligned_empty(n, np.float32)
    copy_ok[...] = 0
    for bad in (copy_ok[:n - 16], copy_ok.astype(np.float64), _conv.aligned_empty(n + 1, np.float32)[1:]):
        with pytest.raises(ValueError, match="x_nhwc"):
            _conv.conv2d_winograd(xi, w, None, y, (0, 0), 0, 0.0, 1, None, False, None, (2, 2, 1, 1), None, bad)
        with pytest.raises(ValueError, match="x_nhwc"):
            _conv.conv2d_winograd_backward_weight(xi, y, np.empty_like(w), (0, 0), 1, (2, 2, 1, 1), bad)
    _conv.conv2d_winograd(xi, w, None, y, (0, 0), 0, 0.0, 1, None, False, None, (2, 2, 1, 1), None, copy_ok)
    # the bias gradient's array: (K,), C-contiguous, of x's dtype
    dy = np.zeros((50, 24, 7, 7), np.float32)
    for bad in (np.zeros(23, np.float32), np.zeros(24), [0.0] * 24, np.zeros(48, np.float32)[::2]):
        with pytest.raises(ValueError, match="db must be a C-contiguous"):
            _conv.conv2d_winograd_backward_weight(xi, dy, np.empty_like(w), (0, 0), 1, (2, 2, 1, 1), None, bad)


def test_zero_size_batch():
    y = F.conv2d(np.zeros((0, 3, 5, 5)), np.ones((2, 3, 3, 3)))
    assert y.shape == (0, 2, 3, 3)
    gx, gw, gb = F.conv2d_backward(np.zeros((0, 2, 3, 3)), np.zeros((0, 3, 5, 5)), np.ones((2, 3, 3, 3)))
    assert gx.shape == (0, 3, 5, 5) and np.all(gw == 0) and np.all(gb == 0)
    # a kernel that covers the whole input (a matrix product), directly and as a phase of a
    # strided input gradient; the transposed convolution of one pixel
    for dtype in (np.float32, np.float64):
        w = np.ones((2, 4, 3, 3), dtype)
        x = np.zeros((0, 4, 3, 3), dtype)
        assert F.conv2d(x, w, np.ones(2, dtype), activation="relu").shape == (0, 2, 1, 1)
        gx, gw, gb = F.conv2d_backward(np.zeros((0, 2, 1, 1), dtype), x, w)
        assert gx.shape == x.shape and np.all(gw == 0) and np.all(gb == 0)
        gx, gw, gb = F.conv2d_backward(np.zeros((0, 2, 1, 1), dtype), np.zeros((0, 4, 5, 4), dtype), w, 3)
        assert gx.shape == (0, 4, 5, 4) and np.all(gw == 0) and np.all(gb == 0)
        assert F.conv_transpose2d(np.zeros((0, 2, 1, 1), dtype), w, np.ones(4, dtype)).shape == (0, 4, 3, 3)
        gx, gw, gb = F.conv_transpose2d_backward(np.zeros((0, 4, 3, 3), dtype), np.zeros((0, 2, 1, 1), dtype), w)
        assert gx.shape == (0, 2, 1, 1) and np.all(gw == 0) and np.all(gb == 0)


def test_nan_propagates(rng):
    x = rng.standard_normal((1, 2, 5, 5))
    x[0, 0, 2, 2] = np.nan
    y = F.conv2d(x, np.ones((1, 2, 3, 3)), padding=1, activation="relu")
    assert np.isnan(y[0, 0, 1:4, 1:4]).all() and not np.isnan(y[0, 0, 0, 0])


X = np.ones((2, 4, 8, 8))
W = np.ones((6, 4, 3, 3))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: F.conv2d(X, np.ones((6, 3, 3, 3))), ValueError, r"weight must have shape \(6, 4, 3, 3\)"),
    (lambda: F.conv2d(X, np.ones((6, 2, 3, 3)), groups=3), ValueError, "groups=3 must divide the input channels"),
    (lambda: F.conv2d(X, np.ones((5, 2, 3, 3)), groups=2), ValueError, "must divide the output channels"),
    (lambda: F.conv2d(X, np.ones((6, 4, 9, 9))), ValueError, "output size"),
    (lambda: F.conv2d(X, W, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: F.conv2d(X, W, padding="full"), ValueError, "padding must be"),
    (lambda: F.conv2d(X, W, padding="same", stride=2), ValueError, "same"),
    (lambda: F.conv2d(X, W, stride=0), ValueError, "stride must be >= 1"),
    (lambda: F.conv2d(X, W, dilation=0), ValueError, "dilation must be >= 1"),
    (lambda: F.conv2d(X, W, groups=0), ValueError, "groups must be >= 1"),
    (lambda: F.conv2d(X, W, stride=1.5), TypeError, "stride must be an int"),
    (lambda: F.conv2d(X, W, stride=(1, 2, 3)), ValueError, "stride must be an int or a pair"),
    (lambda: F.conv2d(X, W, np.ones(5)), ValueError, r"bias must have shape \(6,\)"),
    (lambda: F.conv2d(X[0, 0], W), ValueError, "x must be 3 or 4-D"),
    (lambda: F.conv2d(X[None], W), ValueError, "x must be 3 or 4-D"),
    (lambda: F.conv2d(X, W[0]), ValueError, "weight must be 4-D"),
    (lambda: F.conv2d(X.astype(np.float32), W), TypeError, "weight must have dtype float32"),
    (lambda: F.conv2d(X.astype(int), W), TypeError, "x must have dtype"),
    (lambda: F.conv2d(X.astype(complex), W), TypeError, "x must have dtype"),
    (lambda: F.conv2d(X, W, activation="tanh"), ValueError, "activation"),
    (lambda: F.conv2d(X, W, activation="leaky_relu", negative_slope="0.1"), TypeError, "negative_slope"),
    (lambda: F.conv2d(X, W, negative_slope=None), TypeError, "negative_slope"),
    (lambda: F.conv2d(X, np.ones((0, 4, 3, 3))), ValueError, "at least one output channel"),
    (lambda: F.conv2d_backward(np.ones((2, 0, 6, 6)), X, np.ones((0, 4, 3, 3))), ValueError,
     "at least one output channel"),
    (lambda: F.conv_transpose2d(np.ones((2, 0, 5, 5)), np.ones((0, 3, 3, 3))), ValueError,
     "x must have at least one channel"),
    (lambda: F.conv_transpose2d_backward(np.ones((2, 3, 7, 7)), np.ones((2, 0, 5, 5)), np.ones((0, 3, 3, 3))),
     ValueError, "x must have at least one channel"),
    (lambda: F.conv2d_backward(np.ones((2, 6, 5, 5)), X, W), ValueError, r"grad_out must have shape \(2, 6, 6, 6\)"),
    (lambda: F.conv_transpose2d(X, np.ones((3, 2, 3, 3))), ValueError, "input has 4 channels"),
    (lambda: F.conv_transpose2d(X, np.ones((4, 2, 3, 3)), stride=2, output_padding=2), ValueError, "output_padding"),
    (lambda: F.conv_transpose2d(X, np.ones((4, 2, 3, 3)), groups=3), ValueError, "groups=3"),
    (lambda: F.conv_transpose2d(X, np.ones((4, 2, 3, 3)), padding=5), ValueError, "output size"),
    (lambda: F.conv_transpose2d(X, np.ones((4, 2, 3, 3)), padding=-1), ValueError, "padding must be >= 0"),
    (lambda: F.conv_transpose2d(X, np.ones((4, 2, 3, 3)), np.ones(3)), ValueError, r"bias must have shape \(2,\)"),
    (lambda: F.conv_transpose2d_backward(np.ones((2, 2, 5, 5)), X, np.ones((4, 2, 3, 3))), ValueError, "grad_out"),
    (lambda: F.conv_transpose2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 1, 1)), stride=2 ** 30), ValueError, "too large"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_checked_arguments_are_remembered_by_exact_value():
    """A repeated call skips the checks; arguments equal to a remembered call's but of
    another type (True for 1, 1.0 for 1) or of another shape are still checked."""
    x = np.ones((2, 4, 8, 8))
    for _ in range(2):
        assert F.conv2d(x, W, None, 1, 1).shape == (2, 6, 8, 8)
        assert F.conv2d(x, W, None, (1, 1), (1, 1)).shape == (2, 6, 8, 8)
    for bad in (True, (True, 1), 1.0, (1, 1.0)):
        with pytest.raises(TypeError, match="stride must be an int"):
            F.conv2d(x, W, None, bad, 1)
        with pytest.raises(TypeError, match="padding must be an int"):
            F.conv2d(x, W, None, 1, bad)
    with pytest.raises(TypeError, match="groups must be an int"):
        F.conv2d(x, W, None, 1, 1, 1, True)
    with pytest.raises(ValueError, match="input has 3 channels"):
        F.conv2d(np.ones((2, 3, 8, 8)), W, None, 1, 1)
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        F.conv2d(x, W, np.ones(5), 1, 1)
    with pytest.raises(TypeError, match="bias must have dtype float64"):
        F.conv2d(x, W, np.ones(6, np.float32), 1, 1)
    with pytest.raises(ValueError, match="output size"):
        F.conv2d(np.ones((2, 4, 1, 1)), W, None, 1, 0)
    # non-contiguous weights and biases are taken as well
    wt = np.asfortranarray(W)
    np.testing.assert_array_equal(F.conv2d(x, wt, np.ones(12)[::2], 1, 1), F.conv2d(x, W, np.ones(6), 1, 1))


def test_scratch_reuse_across_geometries(rng):
    """Padded copies share a per-thread scratch buffer and keep its zero borders only for
    the same geometry: alternating geometries of one padded size must stay exact."""
    w = rng.standard_normal((20, 16, 3, 3))
    cases = [((2, 16, 8, 8), 1), ((2, 16, 6, 6), 2), ((2, 16, 8, 8), 1), ((2, 16, 10, 10), 0),
             ((2, 16, 8, 8), 1)]
    for shape, pad in cases:
        x = rng.standard_normal(shape) + 5.0   # nonzero everywhere: a stale value in a border shows
        y = F.conv2d(x, w, None, 1, pad)
        np.testing.assert_allclose(y, ref.conv2d(x, w, None, (1, 1), (pad, pad)), rtol=1e-10, atol=1e-9)
        dy = rng.standard_normal(y.shape)
        gx, gw, _ = F.conv2d_backward(dy, x, w, 1, pad)
        rgx, rgw, _ = ref.conv2d_backward(dy, x, w, (1, 1), (pad, pad))
        np.testing.assert_allclose(gx, rgx, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(gw, rgw, rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("flip_transpose", [False, True])
@pytest.mark.parametrize("phase_major", [False, True])
def test_phase_weight_against_numpy_for_any_thread_count(flip_transpose, phase_major, rng):
    """The phase kernels of a 4x4 stride-2 weight large enough to be split across
    threads, against their definition in NumPy, and back."""
    from fastcnn._kernels import _conv
    K, C = 72, 40
    w = rng.standard_normal((K, C, 4, 4)).astype(np.float32)
    # e[k, a, b, c, i, j] = w[k, c, 2 i + a, 2 j + b]
    e = w.reshape(K, C, 2, 2, 2, 2).transpose(0, 3, 5, 1, 2, 4)
    e = e.reshape(K, 4 * C, 2, 2) if phase_major else e.transpose(0, 3, 1, 2, 4, 5).reshape(K, 4 * C, 2, 2)
    if flip_transpose:
        e = e.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
    for t in (1, 2, 3):
        out = np.empty(e.shape, np.float32)
        _conv.phase_weight(w, out, (2, 2), flip_transpose, phase_major, n_threads=t)
        assert np.array_equal(out, e), t
        if not flip_transpose:
            back = np.empty_like(w)
            _conv.phase_weight(out, back, (2, 2), phase_major=phase_major, inverse=True, n_threads=t)
            assert np.array_equal(back, w), t
