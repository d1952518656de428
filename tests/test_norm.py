"""BatchNorm1d / BatchNorm2d: PyTorch parity (training and evaluation, affine or
not, running statistics), reference, finite differences, thread-count
invariance, argument checks."""
import numpy as np
import pytest

import fastcnn
from fastcnn import functional as F
from conftest import numeric_grad

import reference as ref

TOLS = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-5, atol=2e-5)}
SHAPES = [(8, 5), (1, 3, 1, 2), (4, 3, 5, 7), (2, 6, 1, 1), (3, 2, 9, 9)]


def _torch_bn(torch, x, g, weight, bias, rm, rv, training, momentum, eps):
    xt = torch.from_numpy(x).requires_grad_()
    wt = None if weight is None else torch.from_numpy(weight).requires_grad_()
    bt = None if bias is None else torch.from_numpy(bias).requires_grad_()
    rmt = None if rm is None else torch.from_numpy(rm.copy())
    rvt = None if rv is None else torch.from_numpy(rv.copy())
    yt = torch.nn.functional.batch_norm(xt, rmt, rvt, wt, bt, training, momentum, eps)
    yt.backward(torch.from_numpy(g))
    return (yt.detach().numpy(), xt.grad.numpy(), None if wt is None else wt.grad.numpy(),
            None if bt is None else bt.grad.numpy(), rmt, rvt)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s).replace(" ", "") for s in SHAPES])
def test_batch_norm_matches_torch(torch, rng, shape, training, affine, dtype):
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + 1.5).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal(C).astype(dtype) if affine else None
    bias = rng.standard_normal(C).astype(dtype) if affine else None
    rm = rng.standard_normal(C).astype(dtype)
    rv = rng.uniform(0.5, 2, C).astype(dtype)
    yt, gxt, gwt, gbt, rmt, rvt = _torch_bn(torch, x, g, weight, bias, rm, rv, training, 0.1, 1e-5)
    y, m, s = F.batch_norm(x, rm, rv, weight, bias, training=training, momentum=0.1, eps=1e-5)
    np.testing.assert_allclose(y, yt, **TOLS[dtype])
    np.testing.assert_allclose(rm, rmt.numpy(), **TOLS[dtype])
    np.testing.assert_allclose(rv, rvt.numpy(), **TOLS[dtype])
    gx, gw, gb = F.batch_norm_backward(g, x, weight, m, s, training=training)
    np.testing.assert_allclose(gx, gxt, **TOLS[dtype])
    if affine:
        np.testing.assert_allclose(gw, gwt, **TOLS[dtype])
        np.testing.assert_allclose(gb, gbt, **TOLS[dtype])
    else:
        assert gw is None and gb is None
    if training:
        yr, mean, var = ref.ref_batch_norm_train(x, weight, bias, 1e-5)
        np.testing.assert_allclose(y, yr, **TOLS[dtype])
        np.testing.assert_allclose(m, mean, **TOLS[dtype])
        np.testing.assert_allclose(s, 1 / np.sqrt(var + 1e-5), **TOLS[dtype])


def test_batch_norm_without_running_stats(torch, rng):
    x = rng.standard_normal((4, 3, 3, 3))
    g = rng.standard_normal(x.shape)
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    yt, gxt, gwt, gbt, _, _ = _torch_bn(torch, x, g, w, b, None, None, True, 0.1, 1e-3)
    y, m, s = F.batch_norm(x, None, None, w, b, training=True, eps=1e-3)
    gx, gw, gb = F.batch_norm_backward(g, x, w, m, s)
    for a, e in [(y, yt), (gx, gxt), (gw, gwt), (gb, gbt)]:
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 2, 3)])
def test_batch_norm_finite_differences(rng, shape, training):
    C = shape[1]
    x = rng.standard_normal(shape)
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    rm, rv = rng.standard_normal(C), rng.uniform(0.5, 2, C)
    g = rng.standard_normal(shape)

    def loss():
        return float((F.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training)[0] * g).sum())

    _, m, s = F.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training)
    gx, gw, gb = F.batch_norm_backward(g, x, w, m, s, training=training)
    np.testing.assert_allclose(gx, numeric_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, numeric_grad(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, numeric_grad(loss, b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(6, 7, 31, 29), (64, 12, 7, 7), (500, 30)])
def test_batch_norm_thread_count_invariance(rng, shape):
    """The same bits for 1, 2 and 3 threads, with long runs, short runs (many blocks
    of runs a task) and BatchNorm1d's runs of one value."""
    x = (rng.standard_normal(shape) * 3 + 2).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    C = shape[1]
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        with fastcnn.threads(n):
            rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
            y, m, s = F.batch_norm(x, rm, rv, w, b, training=True)
            ye, _, _ = F.batch_norm(x, rm, rv, w, b, training=False)
            outs.append([y, m, s, rm, rv, ye, *F.batch_norm_backward(g, x, w, m, s)])
    for other in outs[1:]:
        for a, c in zip(outs[0], other):
            assert a.tobytes() == c.tobytes()


@pytest.mark.parametrize("shape", [(64, 5, 7, 7), (3, 4, 40, 40), (256, 6)])
def test_batch_norm_statistics_far_from_zero(rng, shape):
    """Values with a mean far larger than their spread: the variance (a channel's runs'
    deviations from their own means, plus their means' from the channel's) matches
    float64 NumPy to float32 rounding."""
    x = (rng.standard_normal(shape) * 0.01 + 1000.0).astype(np.float32)
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=axes), x64.var(axis=axes)
    rm, rv = np.zeros(shape[1], np.float32), np.ones(shape[1], np.float32)
    y, m, s = F.batch_norm(x, rm, rv, None, None, training=True, momentum=1.0)
    np.testing.assert_allclose(m, mean, rtol=1e-7)
    np.testing.assert_allclose(1.0 / s.astype(np.float64) ** 2 - 1e-5, var, rtol=1e-4)
    n = x.size // shape[1]
    np.testing.assert_allclose(rv, var * n / (n - 1), rtol=1e-4)
    # y = x scale + shift (as PyTorch's CPU kernel): float32 rounding of x scale, about 1e5 here
    vec = (1, -1) + (1,) * (x.ndim - 2)
    yr = (x64 - mean.reshape(vec)) / np.sqrt(var + 1e-5).reshape(vec)
    np.testing.assert_allclose(y, yr, rtol=0, atol=2e-2)


def test_batch_norm_bad_arguments(rng):
    x = rng.standard_normal((4, 3, 2, 2))
    rm, rv = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match="x must be 2 or 4-D"):
        F.batch_norm(x[0], rm, rv)
    with pytest.raises(ValueError, match=r"running_mean must have shape \(3,\)"):
        F.batch_norm(x, np.zeros(4), rv, training=True)
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        F.batch_norm(x, rm, rv, np.ones(2), np.zeros(3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(x[:1, :, :1, :1], rm, rv, training=True)
    with pytest.raises(ValueError, match="running_mean and running_var"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match="running_mean and running_var"):
        F.batch_norm(x, rm, None, training=True)
    with pytest.raises(TypeError, match="running_mean"):
        F.batch_norm(x, [0.0, 0.0, 0.0], rv, training=True)
    with pytest.raises(ValueError, match="momentum"):
        F.batch_norm(x, rm, rv, training=True, momentum=2.0)
    with pytest.raises(ValueError, match="grad_out must have the shape of x"):
        F.batch_norm_backward(x[:2], x, None, rm, rv)
    with pytest.raises(TypeError, match="grad_out must have dtype float64"):
        F.batch_norm_backward(x.astype(np.float32), x, None, rm, rv)


def test_batch_norm_streaming_stores_give_the_same_bits(rng, monkeypatch):
    import fastcnn.functional.norm as norm_module
    outs = []
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((3, 4, 7, 5)).astype(dtype)
        g = rng.standard_normal(x.shape).astype(dtype)
        w, b = rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)
        for limit in (0, 1 << 62):  # every output streamed / none
            monkeypatch.setattr(norm_module, "_STREAM_BYTES", limit)
            y, m, s = F.batch_norm(x, None, None, w, b, training=True)
            outs.append([y, *F.batch_norm_backward(g, x, w, m, s),
                         *F.batch_norm_backward(g, x, w, m, s, training=False)])
    for a, c in zip(outs[0] + outs[2], outs[1] + outs[3]):
        assert a.tobytes() == c.tobytes()


ACTS = [("relu", 0.01), ("leaky_relu", 0.2), ("leaky_relu", 0.0)]


def _act(y, activation, slope):
    return F.relu(y) if activation == "relu" else F.leaky_relu(y, slope)


def _act_backward(g, y, activation, slope):
    return F.relu_backward(g, y) if activation == "relu" else F.leaky_relu_backward(g, y, slope)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("activation,slope", ACTS)
@pytest.mark.parametrize("shape", [(8, 5), (1, 3, 1, 2), (4, 3, 5, 7), (64, 20, 7, 7), (3, 2, 9, 9)])
def test_batch_norm_with_activation_equals_the_two_steps(rng, shape, activation, slope, training, dtype,
                                                         monkeypatch):
    """BatchNorm with a fused ReLU / LeakyReLU: bitwise the output of BatchNorm then the
    activation, and the gradients of both backwards in turn, with and without
    streaming stores; a NaN in x or in the gradient is kept as the two steps keep it."""
    import fastcnn.functional.norm as norm_module
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.3).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    if x.size > 40:
        x.flat[17] = np.nan
        g.flat[5] = np.nan
        # through ReLU: 0 where the output is not positive, not inf * 0 (in the first
        # run, whose channel's sums the NaN already holds)
        g.flat[1:x[0, 0].size:3] = np.inf
    w, b = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    rm, rv = rng.standard_normal(C), rng.uniform(0.5, 2, C)
    y0, m0, s0 = F.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training)
    ya = _act(y0, activation, slope)
    expected = F.batch_norm_backward(_act_backward(g, ya, activation, slope), x, w, m0, s0, training)
    for limit in (0, 1 << 62):   # every output streamed / none
        monkeypatch.setattr(norm_module, "_STREAM_BYTES", limit)
        rm1, rv1 = rm.copy(), rv.copy()
        y, m, s = F.batch_norm(x, rm1, rv1, w, b, training=training, activation=activation,
                               negative_slope=slope)
        assert y.tobytes() == ya.tobytes()
        got = F.batch_norm_backward(g, x, w, m, s, training, output=y, activation=activation,
                                    negative_slope=slope)
        for a, e in zip(got, expected):
            assert np.array_equal(a, e, equal_nan=True)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("activation,slope", [("relu", 0.01), ("leaky_relu", 0.3)])
def test_batch_norm_with_activation_matches_torch_and_finite_differences(torch, rng, activation, slope,
                                                                           training):
    shape, C = (6, 4, 5, 3), 4
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    rm, rv = rng.standard_normal(C), rng.uniform(0.5, 2, C)
    xt, wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
    yt = torch.nn.functional.batch_norm(xt, torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy()), wt, bt,
                                        training, 0.1, 1e-5)
    yt = torch.relu(yt) if activation == "relu" else torch.nn.functional.leaky_relu(yt, slope)
    yt.backward(torch.from_numpy(g))
    y, m, s = F.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training, activation=activation,
                           negative_slope=slope)
    got = F.batch_norm_backward(g, x, w, m, s, training, output=y, activation=activation, negative_slope=slope)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOLS[np.float64])
    for a, t in zip(got, (xt, wt, bt)):
        np.testing.assert_allclose(a, t.grad.numpy(), **TOLS[np.float64])

    def loss():
        return float((F.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training, activation=activation,
                                   negative_slope=slope)[0] * g).sum())

    for a, v in zip(got, (x, w, b)):
        np.testing.assert_allclose(a, numeric_grad(loss, v), rtol=1e-5, atol=1e-6)


def test_batch_norm_with_activation_bad_arguments(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    y, m, s = F.batch_norm(x, None, None, training=True, activation="relu")
    with pytest.raises(ValueError, match="activation must be"):
        F.batch_norm(x, None, None, training=True, activation="tanh")
    with pytest.raises(ValueError, match="negative_slope must be >= 0"):
        F.batch_norm(x, None, None, training=True, activation="leaky_relu", negative_slope=-0.1)
    with pytest.raises(ValueError, match="needs the output"):
        F.batch_norm_backward(x, x, None, m, s, activation="relu")
    with pytest.raises(ValueError, match="output must have the shape of x"):
        F.batch_norm_backward(x, x, None, m, s, output=y[:2], activation="relu")


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("mu", [1e3, 1e4, -3e4])
def test_float32_batch_norm_of_data_far_from_zero_keeps_its_precision(rng, training, mu):
    """Data with a mean far larger than its spread: the output, of order one, is within
    a few units of float32 rounding of the float64 result (the normalisation subtracts
    the mean before it scales, and the shift carries the mean's own rounding)."""
    x = (rng.standard_normal((16, 3, 8, 8)) + mu).astype(np.float32)
    w = np.array([1.5, -0.5, 2.0], np.float32)
    b = np.array([0.25, -1.0, 3.0], np.float32)
    rm = (np.full(3, mu) + np.array([0.01, -0.3, 0.7])).astype(np.float32)
    rv = np.array([1.0, 0.8, 1.2], np.float32)
    y = F.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training)[0]
    x64 = x.astype(np.float64)
    if training:
        mean, var = x64.mean(axis=(0, 2, 3)), x64.var(axis=(0, 2, 3))
    else:
        mean, var = rm.astype(np.float64), rv.astype(np.float64)
    expected = ((x64 - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * w[:, None, None]
                + b[:, None, None])
    assert np.abs(y - expected).max() < 4e-6
