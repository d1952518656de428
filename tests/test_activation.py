"""Activations, softmax / log-softmax, dropout: PyTorch parity, reference,
finite differences, thread-count invariance, argument checks."""
import numpy as np
import pytest

import fastcnn
from fastcnn import functional as F
from conftest import numeric_grad

import reference as ref

TOLS = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-5, atol=1e-6)}
DTYPES = [np.float64, np.float32]

# name -> (forward, backward taking (g, x, y), torch function)
ELEMENTWISE = {
    "relu": (F.relu, lambda g, x, y: F.relu_backward(g, y), "relu"),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda g, x, y: F.leaky_relu_backward(g, x, 0.2),
                   "leaky_relu"),
    "tanh": (F.tanh, lambda g, x, y: F.tanh_backward(g, y), "tanh"),
    "sigmoid": (F.sigmoid, lambda g, x, y: F.sigmoid_backward(g, y), "sigmoid"),
}


def _torch_fn(torch, name):
    return {"relu": torch.relu, "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.2),
            "tanh": torch.tanh, "sigmoid": torch.sigmoid}[name]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ELEMENTWISE))
@pytest.mark.parametrize("shape", [(7,), (2, 3, 5, 4), (1, 1)])
def test_elementwise_matches_torch(torch, rng, name, shape, dtype):
    fwd, bwd, _ = ELEMENTWISE[name]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    y = fwd(x)
    xt = torch.from_numpy(x).requires_grad_()
    yt = _torch_fn(torch, name)(xt)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOLS[dtype])
    g = rng.standard_normal(shape).astype(dtype)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(bwd(g, x, y), xt.grad.numpy(), **TOLS[dtype])
    assert y.dtype == dtype


def test_elementwise_reference_values():
    x = np.array([-80.0, -2.0, -0.0, 0.0, 0.5, 3.0, 80.0])
    np.testing.assert_array_equal(F.relu(x), np.maximum(x, 0))
    np.testing.assert_allclose(F.leaky_relu(x, 0.1), np.where(x > 0, x, 0.1 * x), rtol=1e-15)
    np.testing.assert_allclose(F.tanh(x), np.tanh(x), rtol=1e-15)
    np.testing.assert_allclose(F.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-15)
    assert np.all(np.isfinite(F.sigmoid(np.array([-1000.0, 1000.0], dtype=np.float32))))
    assert np.isnan(F.relu(np.array([np.nan]))[0])


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_finite_differences(rng, name):
    fwd, bwd, _ = ELEMENTWISE[name]
    x = rng.standard_normal((3, 4)) + 0.05  # keep clear of the kink at 0
    g = rng.standard_normal(x.shape)
    num = numeric_grad(lambda: float((fwd(x) * g).sum()), x)
    np.testing.assert_allclose(bwd(g, x, fwd(x)), num, rtol=1e-6, atol=1e-8)


def test_inplace(rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    expected = np.maximum(x, 0)
    y = F.relu(x, inplace=True)
    assert y is x
    np.testing.assert_array_equal(x, expected)
    x = rng.standard_normal((4, 5))
    expected = np.where(x > 0, x, 0.3 * x)
    assert F.leaky_relu(x, 0.3, inplace=True) is x
    np.testing.assert_array_equal(x, expected)
    # a non-contiguous array: worked on as a copy, written back
    base = -np.ones((4, 5))
    view = base[:, ::2]
    assert F.relu(view, inplace=True) is view
    np.testing.assert_array_equal(base, [[0, -1, 0, -1, 0]] * 4)
    with pytest.raises(ValueError, match="inplace"):
        F.relu(np.ones((4, 5)).astype(np.int32), inplace=True)
    ro = np.ones((4, 5))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="inplace"):
        F.relu(ro, inplace=True)
    with pytest.raises(TypeError, match="inplace"):
        F.relu(x, inplace="yes")


SOFTMAX_CASES = [((4, 7), -1), ((4, 7), 0), ((2, 3, 5, 4), 1), ((2, 3, 5, 4), 2), ((1, 1), -1), ((6,), 0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("take_log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,dim", SOFTMAX_CASES)
def test_softmax_matches_torch(torch, rng, shape, dim, take_log, dtype):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    fwd, bwd = (F.log_softmax, F.log_softmax_backward) if take_log else (F.softmax, F.softmax_backward)
    y = fwd(x, dim)
    xt = torch.from_numpy(x).requires_grad_()
    yt = (torch.log_softmax if take_log else torch.softmax)(xt, dim)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOLS[dtype])
    refy = (ref.ref_log_softmax if take_log else ref.ref_softmax)(x.astype(np.float64), dim)
    np.testing.assert_allclose(y, refy, **TOLS[dtype])
    g = rng.standard_normal(shape).astype(dtype)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(bwd(g, y, dim), xt.grad.numpy(), **TOLS[dtype])


@pytest.mark.parametrize("take_log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_finite_differences_and_stability(rng, take_log):
    fwd, bwd = (F.log_softmax, F.log_softmax_backward) if take_log else (F.softmax, F.softmax_backward)
    x = rng.standard_normal((3, 4, 2))
    g = rng.standard_normal(x.shape)
    num = numeric_grad(lambda: float((fwd(x, 1) * g).sum()), x)
    np.testing.assert_allclose(bwd(g, fwd(x, 1), 1), num, rtol=1e-6, atol=1e-8)
    big = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]], dtype=np.float32)
    y = fwd(big, -1)
    assert np.all(np.isfinite(y))
    if not take_log:
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)


def test_dropout(torch, rng):
    x = rng.standard_normal((50, 40)).astype(np.float32)
    y, mask = F.dropout(x, 0.3, training=True, rng=np.random.default_rng(7))
    y2, mask2 = F.dropout(x, 0.3, training=True, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(y, y2)  # reproducible with the same seed
    assert mask.dtype == np.bool_ and 0.6 < mask.mean() < 0.8
    np.testing.assert_allclose(y, np.where(mask, x / 0.7, 0), rtol=1e-6)
    g = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(F.dropout_backward(g, mask, 0.3), np.where(mask, g / 0.7, 0), rtol=1e-6)
    # evaluation: identity, no mask
    ye, me = F.dropout(x, 0.3, training=False)
    assert me is None and np.array_equal(ye, x)
    assert np.array_equal(F.dropout_backward(g, None, 0.3), g)
    # p = 1 drops everything; p = 0 keeps everything
    y1, m1 = F.dropout(x, 1.0, rng=1)
    assert not y1.any() and not m1.any()
    y0, _ = F.dropout(x, 0.0, rng=1)
    np.testing.assert_array_equal(y0, x)
    # same scaling rule as torch: kept values are x / (1 - p)
    yt = torch.nn.functional.dropout(torch.from_numpy(x), 0.3, training=True).numpy()
    kept = yt != 0
    np.testing.assert_allclose(yt[kept], x[kept] / 0.7, rtol=1e-6)
    with pytest.raises(ValueError, match="p must be <= 1"):
        F.dropout(x, 1.5)
    with pytest.raises(TypeError, match="rng"):
        F.dropout(x, 0.5, rng="seed")
    with pytest.raises(ValueError, match="mask"):
        F.dropout_backward(g, mask[:10], 0.3)


def test_activation_thread_count_invariance(rng):
    x = rng.standard_normal((3, 8, 40, 40)).astype(np.float32)  # threaded size
    g = rng.standard_normal(x.shape).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        with fastcnn.threads(n):
            r = []
            for fwd, bwd, _ in ELEMENTWISE.values():
                y = fwd(x)
                r += [y, bwd(g, x, y)]
            for dim in (1, -1):
                s = F.softmax(x, dim)
                ls = F.log_softmax(x, dim)
                r += [s, F.softmax_backward(g, s, dim), ls, F.log_softmax_backward(g, ls, dim)]
            y, m = F.dropout(x, 0.4, rng=np.random.default_rng(3))
            r += [y, F.dropout_backward(g, m, 0.4)]
            outs.append(r)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert a.tobytes() == b.tobytes()


def test_activation_bad_arguments(rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(TypeError, match="x must have dtype"):
        F.relu(np.arange(6).reshape(2, 3).astype(np.int64))
    with pytest.raises(TypeError, match="x must"):
        F.tanh("abc")
    with pytest.raises(TypeError, match="x must be a numpy array"):
        F.tanh({1: 2})
    with pytest.raises(ValueError, match="grad_out and y must have the same shape"):
        F.relu_backward(x, x[:1])
    with pytest.raises(TypeError, match="y must have dtype float64"):
        F.sigmoid_backward(x, x.astype(np.float32))
    with pytest.raises(ValueError, match="dim"):
        F.softmax(x, 2)
    with pytest.raises(TypeError, match="dim"):
        F.softmax(x, 1.0)
    with pytest.raises(TypeError, match="negative_slope"):
        F.leaky_relu(x, "0.1")
