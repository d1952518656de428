"""Convolutions whose kernel max-pools the activated output as it stores it (eval-mode
Conv2d + activation + MaxPool2d(2)): equal to the three steps one after the other, in
fastcnn and in PyTorch, for Winograd layers and for one input channel."""
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import nn
from fastcnn._kernels import _conv
from fastcnn.functional.conv import WeightCache, _conv2d_max_pool2


def _steps(x, w, b, padding, activation, slope):
    y = F.conv2d(x, w, b, 1, padding, activation=activation, negative_slope=slope)
    return F.max_pool2d(y, 2)


def _torch_steps(torch, x, w, b, padding, activation, slope):
    t = torch.nn.functional
    y = t.conv2d(torch.from_numpy(x), torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                 padding=padding)
    if activation == "relu":
        y = t.relu(y)
    elif activation == "leaky_relu":
        y = t.leaky_relu(y, slope)
    return t.max_pool2d(y, 2).numpy()


# (N, C, K, H, W, padding): one input channel (direct kernel) and Winograd layers;
# odd outputs (the last row or column dropped), 2x2 outputs, widths past 32 columns
CASES = [(1, 1, 32, 28, 28, 1), (3, 1, 5, 9, 13, 1), (2, 1, 17, 2, 2, 1), (1, 1, 3, 5, 70, 0),
         (2, 1, 8, 7, 35, 2), (2, 1, 7, 6, 11, 0), (1, 1, 1, 3, 3, 2), (1, 32, 64, 14, 14, 1), (2, 16, 20, 11, 9, 1), (2, 17, 33, 10, 23, 0),
         (3, 24, 16, 13, 13, 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("activation,slope", [(None, 0.01), ("relu", 0.01), ("leaky_relu", 0.2)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_pooled_kernel_equals_conv_then_pool(case, activation, slope, dtype):
    N, C, K, H, W, pad = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = (rng.standard_normal((K, C, 3, 3)) / np.sqrt(9 * C)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    runs = []
    for nt in (1, 2, 3):
        fastcnn.set_num_threads(nt)
        for cache in (None, WeightCache()):
            y = _conv2d_max_pool2(x, w, b, 1, pad, 1, 1, activation, slope, cache)
            if y is not None and cache is not None:
                y = _conv2d_max_pool2(x, w, b, 1, pad, 1, 1, activation, slope, cache)  # kept weights
            runs.append(y)
    fastcnn.set_num_threads(1)
    pooled_kernel = C == 1 and dtype == np.float32 and _conv.direct3(1, K, 3, 3, (1, 1), (1, 1), 1, (pad, pad),
                                                                     dtype, one_input=True)
    if C == 1 and not pooled_kernel:
        assert all(r is None for r in runs)
        return
    if C > 1 and runs[0] is None:
        # too few tiles for Winograd without kept weights: only the cached call pools
        runs = [r for r in runs if r is not None]
    assert runs
    expected = _steps(x, w, b, pad, activation, slope)
    tol = dict(rtol=1e-4, atol=5e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for y in runs:
        assert y.shape == expected.shape and y.dtype == dtype
        np.testing.assert_allclose(y, expected, **tol)
        np.testing.assert_array_equal(y, runs[0])   # the same for any thread count


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("activation,slope", [("relu", 0.01), ("leaky_relu", 0.2)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_pooled_kernel_matches_pytorch(torch, case, activation, slope, dtype):
    N, C, K, H, W, pad = case
    rng = np.random.default_rng(sum(case) + 1)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = (rng.standard_normal((K, C, 3, 3)) / np.sqrt(9 * C)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    y = _conv2d_max_pool2(x, w, b, 1, pad, 1, 1, activation, slope, WeightCache())
    if y is None:
        y = _steps(x, w, b, pad, activation, slope)   # no pooling kernel: the steps themselves
    tol = dict(rtol=1e-4, atol=5e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y, _torch_steps(torch, x, w, b, pad, activation, slope), **tol)


def test_pooled_kernel_declines_what_it_cannot_pool():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    assert _conv2d_max_pool2(x, w, None, 2, 1, 1, 1) is None                 # strided
    assert _conv2d_max_pool2(x, w[:, :, :2, :2], None, 1, 1, 1, 1) is None    # 2x2 kernel
    assert _conv2d_max_pool2(x[:, :, :3, :3], w, None, 1, 0, 1, 1) is None    # a 1x1 output
    assert _conv2d_max_pool2(x[0], w, None, 1, 1, 1, 1) is None               # unbatched
    assert _conv2d_max_pool2(x, w.astype(np.float64), None, 1, 1, 1, 1) is None   # conv2d would convert
    y = _conv2d_max_pool2(x, w, None, 1, 1, 1, 1)
    if y is not None:
        np.testing.assert_allclose(y, _steps(x, w, None, 1, None, 0.01), rtol=1e-5, atol=1e-6)


def test_pooled_kernel_keeps_nan():
    x = np.ones((1, 1, 6, 6), dtype=np.float32)
    x[0, 0, 2, 3] = np.nan
    w = np.ones((2, 1, 3, 3), dtype=np.float32)
    y = _conv2d_max_pool2(x, w, None, 1, 1, 1, 1)
    if y is None:
        pytest.skip("no direct kernel on this instruction set")
    expected = _steps(x, w, None, 1, None, 0.01)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    assert np.isnan(y).any()
    np.testing.assert_allclose(y[~np.isnan(y)], expected[~np.isnan(expected)])


@pytest.mark.parametrize("isa", fastcnn.supported_isas())
def test_pooled_winograd_keeps_nan_as_pooling_its_output_does(isa):
    """The Winograd kernel that pools as it stores, with a NaN input (which spreads over
    the tiles that read it): NaN where the same kernel's unpooled output then the
    pooling give NaN, every other value the same bits, for 1 and 2 threads."""
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((64, 32, 3, 3)) / 17).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    try:
        fastcnn.set_isa(isa)
        for n, (i, j) in enumerate(((4, 6), (4, 7), (5, 6), (5, 7), (13, 2))):
            x = rng.standard_normal((1, 32, 14, 14)).astype(np.float32)
            x[0, n, i, j] = np.nan
            for t in (1, 2):
                full = _conv.conv2d_winograd(x, w, b, np.empty((1, 64, 14, 14), np.float32), (1, 1), 1, 0.0, t)
                y = _conv.conv2d_winograd(x, w, b, np.empty((1, 64, 7, 7), np.float32), (1, 1), 1, 0.0, t,
                                          None, False, (14, 14))
                expected = F.max_pool2d(full, 2)
                assert np.isnan(y).any() and not np.isnan(y).all()
                np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
                np.testing.assert_array_equal(y[~np.isnan(y)], expected[~np.isnan(expected)])
    finally:
        fastcnn.set_isa("auto")


@pytest.mark.parametrize("isa", fastcnn.supported_isas())
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_pooled_winograd_is_the_pooling_of_its_output_bit_for_bit(isa, dtype):
    """Without codes (inference) the pooled Winograd kernel takes each window's maximum
    before the bias and the activation: the same bits as the same kernel's activated
    output then max pooling, for every fused activation (a negative leaky slope too),
    with and without bias, over zeros of both signs, NaNs, odd outputs and channel
    counts that are not multiples of 16, for 1 and 2 threads."""
    rng = np.random.default_rng(11)
    K, C = 20, 5
    w = (rng.standard_normal((K, C, 3, 3)) / 7).astype(dtype)
    w[3] = 0.0   # an output channel of exact zeros before its bias
    w[4] = -0.0
    bias = rng.standard_normal(K).astype(dtype)
    bias[3], bias[4] = -0.0, 0.0
    x = rng.standard_normal((2, C, 13, 15)).astype(dtype)
    x[0, 2, 5, 7] = np.nan
    x[1, :, :4, :4] = 0.0   # windows of equal values
    pad, (P, Q) = (1, 1), (13, 15)
    try:
        fastcnn.set_isa(isa)
        for act, slope in ((0, 0.0), (1, 0.0), (2, 0.2), (2, 0.0), (2, -0.3)):
            for b in (bias, None):
                for t in (1, 2):
                    full = _conv.conv2d_winograd(x, w, b, np.empty((2, K, P, Q), dtype), pad, act, slope, t)
                    y = _conv.conv2d_winograd(x, w, b, np.empty((2, K, P // 2, Q // 2), dtype), pad, act,
                                              slope, t, None, False, (P, Q))
                    expected = F.max_pool2d(full, 2)
                    assert np.isnan(y).any()
                    # NaNs in the same places, every other value the same bits
                    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
                    assert (y.view(f"u{y.itemsize}")[~np.isnan(y)]
                            == expected.view(f"u{y.itemsize}")[~np.isnan(expected)]).all(), (act, slope, t)
    finally:
        fastcnn.set_isa("auto")


def _pooled_model(dtype):
    fastcnn.manual_seed(3)
    m = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(16 * 4 * 5, 3))
    bn = m[4]
    rng = np.random.default_rng(4)
    bn.running_mean[...] = rng.uniform(-0.5, 0.5, 16)
    bn.running_var[...] = rng.uniform(0.5, 2.0, 16)
    return m.to(dtype).eval()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_model_with_pooled_blocks_equals_unfused(dtype):
    """Forward and backward (input and every parameter) of an eval-mode model whose
    conv + activation + pool blocks run pooled, against the unfused modules."""
    m = _pooled_model(dtype)
    x = np.random.default_rng(5).standard_normal((20, 1, 17, 21)).astype(dtype)
    r = np.random.default_rng(6).standard_normal((20, 3)).astype(dtype)
    out = []
    for fuse in (True, False):
        m.fused_inference = fuse
        m.zero_grad()
        y = m(x)
        dx = m.backward(r)
        out.append((y, dx, {k: p.grad.copy() for k, p in m.named_parameters()}))
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11)
    (y1, dx1, g1), (y2, dx2, g2) = out
    np.testing.assert_allclose(y1, y2, **tol)
    np.testing.assert_allclose(dx1, dx2, **tol)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], err_msg=k, **tol)


def _check_direct_kernel(x, w, b, pad, atol):
    """conv3x3_direct of x with w, b and each activation equals the float64 conv2d, and is
    the same for 1, 2 and 3 threads."""
    N, K = x.shape[0], w.shape[0]
    P, Q = x.shape[2] + 2 * pad - 2, x.shape[3] + 2 * pad - 2
    expected = F.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), 1, pad)
    for act, slope in ((0, 0.0), (1, 0.0), (2, 0.3)):
        ref = expected if act == 0 else (np.maximum(expected, 0) if act == 1
                                         else np.where(expected < 0, slope * expected, expected))
        ys = []
        for nt in (1, 2, 3):
            y = np.full((N, K, P, Q), np.nan, dtype=np.float32)
            _conv.conv3x3_direct(x, w, b, y, (pad, pad), act, slope, nt)
            ys.append(y)
        np.testing.assert_allclose(ys[0], ref, rtol=1e-5, atol=atol)
        for y in ys[1:]:
            np.testing.assert_array_equal(y, ys[0])


@pytest.mark.parametrize("shape", [(1, 32, 28, 28, 1), (2, 5, 7, 35, 2), (3, 17, 3, 1, 1), (1, 1, 9, 40, 0),
                                   (2, 7, 5, 19, 0), (1, 13, 2, 2, 2), (2, 6, 31, 40, 1), (7, 2, 4, 3, 1)])
def test_one_input_channel_direct_kernel_unpooled(shape):
    """The direct kernel's one-input-channel forward without pooling equals conv2d."""
    N, K, H, W, pad = shape
    if not _conv.direct3(1, K, 3, 3, (1, 1), (1, 1), 1, (pad, pad), np.float32, one_input=True):
        pytest.skip("no direct kernel on this instruction set")
    rng = np.random.default_rng(K)
    x = rng.standard_normal((N, 1, H, W)).astype(np.float32)
    w = rng.standard_normal((K, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    _check_direct_kernel(x, w, b, pad, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 32, 28, 28, 1), (2, 3, 5, 40, 0), (3, 7, 1, 1, 1), (1, 5, 2, 9, 2),
                                   (2, 16, 17, 26, 2), (1, 1, 30, 8, 1), (2, 4, 9, 17, 0)])
def test_one_output_channel_direct_kernel(shape):
    """The direct kernel's one-output-channel forward (a one-channel layer's input gradient)
    equals conv2d: rows past the padding, columns at both edges and inside, any thread count."""
    N, C, H, W, pad = shape
    if not _conv.direct3(C, 1, 3, 3, (1, 1), (1, 1), 1, (pad, pad), np.float32):
        pytest.skip("no direct kernel on this instruction set")
    rng = np.random.default_rng(C + H)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((1, C, 3, 3)).astype(np.float32)
    b = rng.standard_normal(1).astype(np.float32)
    _check_direct_kernel(x, w, b, pad, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 32, 28, 28, 1), (3, 5, 7, 35, 2), (1, 3, 1, 1, 1), (2, 1, 9, 40, 0),
                                   (5, 7, 2, 3, 2), (1, 4, 30, 17, 1)])
def test_one_input_channel_direct_weight_gradient(shape):
    """The direct kernel's weight and bias gradients of a one-input-channel layer equal the
    float64 reference, the same for any thread count."""
    N, K, H, W, pad = shape
    if not _conv.direct3(1, K, 3, 3, (1, 1), (1, 1), 1, (pad, pad), np.float32, one_input=True):
        pytest.skip("no direct kernel on this instruction set")
    rng = np.random.default_rng(K + W)
    x = rng.standard_normal((N, 1, H, W)).astype(np.float32)
    w = rng.standard_normal((K, 1, 3, 3)).astype(np.float32)
    P, Q = H + 2 * pad - 2, W + 2 * pad - 2
    dy = rng.standard_normal((N, K, P, Q)).astype(np.float32)
    _, dw_ref, db_ref = F.conv2d_backward(dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64),
                                          1, pad)
    got = []
    for nt in (1, 2, 3):
        dw, db = np.full_like(w, np.nan), np.full(K, np.nan, np.float32)
        _conv.conv3x3_direct_backward_weight(x, dy, dw, db, (pad, pad), nt)
        got.append((dw, db))
    scale = np.sqrt(N * P * Q)
    np.testing.assert_allclose(got[0][0], dw_ref, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(got[0][1], db_ref, rtol=1e-5, atol=1e-5 * scale)
    for dw, db in got[1:]:
        np.testing.assert_array_equal(dw, got[0][0])
        np.testing.assert_array_equal(db, got[0][1])


def _pool_codes_input(case, dtype, seed):
    """Inputs with ties (output channels of zero weights: every window equal) and a NaN."""
    N, C, K, H, W, pad = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = (rng.standard_normal((K, C, 3, 3)) / np.sqrt(9 * C)).astype(dtype)
    w[::3] = 0
    b = rng.standard_normal(K).astype(dtype)
    x[-1, -1, H // 2, W // 2] = np.nan
    return x, w, b, pad


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("activation,slope", [(None, 0.01), ("relu", 0.01), ("leaky_relu", 0.2)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_pooled_kernel_keeps_the_codes_of_max_pooling(case, activation, slope, dtype):
    """In training a pooled kernel also keeps each window's argmax: the same values and codes,
    bit for bit, as the convolution (same weights cache) then the pooling that keeps codes,
    with ties and a NaN, for any thread count and instruction set."""
    from fastcnn.functional.conv import _conv2d_max_pool2_codes
    from fastcnn.functional.pool import _max_pool2d_2x2
    x, w, b, pad = _pool_codes_input(case, dtype, sum(case) + 7)
    try:
        for isa in fastcnn.supported_isas():
            fastcnn.set_isa(isa)
            outs = []
            for nt in (1, 2, 3):
                fastcnn.set_num_threads(nt)
                out = _conv2d_max_pool2_codes(x, w, b, 1, pad, 1, 1, activation, slope, WeightCache(kept=False),
                                              None)
                if out is None:
                    break
                y, codes, shape = out
                full = F.conv2d(x, w, b, 1, pad, activation=activation, negative_slope=slope,
                                weight_cache=WeightCache(kept=False))
                assert shape == full.shape
                ey, ecodes = _max_pool2d_2x2(full)
                np.testing.assert_array_equal(y, ey)
                np.testing.assert_array_equal(codes, ecodes)
                outs.append((y, codes))
            N, C, K, H, W, _ = case
            if C == 1:
                expect = dtype == np.float32 and _conv.direct3(1, K, 3, 3, (1, 1), (1, 1), 1, (pad, pad), dtype,
                                                               one_input=True)
            else:
                expect = F.conv._winograd(N, w, 1, (1, 1), (1, 1), (H + 2 * pad - 2, W + 2 * pad - 2))
            assert bool(outs) == bool(expect), (isa, case)
            for y, codes in outs[1:]:
                np.testing.assert_array_equal(y, outs[0][0])
                np.testing.assert_array_equal(codes, outs[0][1])
    finally:
        fastcnn.set_num_threads(1)
        fastcnn.set_isa("auto")


@pytest.mark.parametrize("case", [(2, 1, 16, 9, 10, 1), (4, 16, 20, 12, 11, 1)], ids=["direct", "winograd"])
def test_fused_relu_keeps_nan(torch, case):
    """A NaN input gives NaN outputs through the kernels' fused ReLU, as ReLU keeps NaN: where
    the convolution then ReLU (PyTorch's, or for Winograd, whose tiles spread a NaN, fastcnn's
    unfused steps) has them, pooled or not."""
    from fastcnn.functional.conv import _conv2d_max_pool2_codes
    x, w, b, pad = _pool_codes_input(case, np.float32, 3)
    t = torch.nn.functional
    if case[1] == 1:
        ref = t.relu(t.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), padding=pad)).numpy()
    else:
        ref = F.relu(F.conv2d(x, w, b, 1, pad, weight_cache=WeightCache(kept=False)))
    y = F.conv2d(x, w, b, 1, pad, activation="relu", weight_cache=WeightCache(kept=False))
    assert np.isnan(y).any()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    pooled = _conv2d_max_pool2_codes(x, w, b, 1, pad, 1, 1, "relu", 0.01, WeightCache(kept=False), None)
    expect = case[1] > 1 or _conv.direct3(1, 16, 3, 3, (1, 1), (1, 1), 1, (pad, pad), np.float32, one_input=True)
    assert (pooled is not None) == expect
    if pooled is not None:
        np.testing.assert_array_equal(np.isnan(pooled[0]), np.isnan(F.max_pool2d(ref, 2)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_training_blocks_pooled_with_codes_equal_unfused(dtype):
    """A LeNet-like model in training, its conv + activation + pool blocks each one kernel
    that keeps the windows' codes: outputs, input gradients and every parameter's gradient
    equal to the unfused modules', bit for bit, over two steps (gradients accumulating),
    with a NaN in the input."""
    def make():
        fastcnn.manual_seed(5)
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(32 * 7 * 7, 10)).to(dtype)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((64, 1, 28, 29)).astype(dtype)
    x[3, 0, 5, 7] = np.nan
    g = rng.standard_normal((64, 10)).astype(dtype)
    fused, plain = make(), make()
    plain.fused_training = False
    for _ in range(2):
        np.testing.assert_array_equal(fused(x), plain(x))
        np.testing.assert_array_equal(fused.backward(g), plain.backward(g))
    blocks = [s for s in fused._last_plan if getattr(s, "pool", None) is not None]
    assert len(blocks) == 2
    kept = [b._ctx[4] is not None for b in blocks]
    # the second block runs Winograd (both dtypes); the first the direct kernel (float32, where there is one)
    assert kept[1] and kept[0] == (dtype == np.float32 and _conv.direct3(1, 16, 3, 3, (1, 1), (1, 1), 1, (1, 1),
                                                                          np.float32, one_input=True))
    for (k, a), (_, p) in zip(fused.named_parameters(), plain.named_parameters()):
        np.testing.assert_array_equal(a.grad, p.grad, err_msg=k)
