"""Cross-entropy, BCE with logits, MSE, L1: PyTorch parity (value and gradient),
reference, finite differences, stability, thread-count invariance, checks."""
import numpy as np
import pytest

import fastcnn
from fastcnn import functional as F
from conftest import numeric_grad

import reference as ref

TOLS = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shape,label_dtype", [((7, 5), np.int64), ((1, 3), np.int32), ((33, 10), np.int32),
                                               ((4, 1), np.int64)])
def test_cross_entropy_matches_torch(torch, rng, shape, label_dtype, weighted, smoothing, reduction, dtype):
    N, C = shape
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    t = rng.integers(0, C, N).astype(label_dtype)
    w = rng.uniform(0.2, 2.0, C).astype(dtype) if weighted else None
    loss = F.cross_entropy(x, t, w, reduction, smoothing)
    gx = F.cross_entropy_backward(x, t, w, reduction, smoothing)
    xt = torch.from_numpy(x).requires_grad_()
    lt = torch.nn.functional.cross_entropy(xt, torch.from_numpy(t.astype(np.int64)),
                                           None if w is None else torch.from_numpy(w),
                                           reduction=reduction, label_smoothing=smoothing)
    lt.backward()
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, lt.item(), **TOLS[dtype])
    np.testing.assert_allclose(gx, xt.grad.numpy(), **TOLS[dtype])
    assert gx.dtype == dtype
    np.testing.assert_allclose(loss, ref.ref_cross_entropy(x, t, w, reduction, smoothing), **TOLS[dtype])


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_finite_differences(rng, smoothing):
    x = rng.standard_normal((4, 5))
    t = np.array([0, 4, 2, 2])
    w = rng.uniform(0.5, 2, 5)
    num = numeric_grad(lambda: F.cross_entropy(x, t, w, "mean", smoothing), x)
    np.testing.assert_allclose(F.cross_entropy_backward(x, t, w, "mean", smoothing), num, rtol=1e-6, atol=1e-9)
    g = F.cross_entropy_backward(x, t, reduction="sum", grad_output=2.5)
    np.testing.assert_allclose(g, 2.5 * F.cross_entropy_backward(x, t, reduction="sum"), rtol=1e-14)


def test_cross_entropy_stable_for_large_logits():
    x = np.array([[1000.0, -1000.0, 0.0], [-1e4, 1e4, 0.0]], dtype=np.float32)
    t = np.array([0, 0])
    loss = F.cross_entropy(x, t)
    np.testing.assert_allclose(loss, (0.0 + 2e4) / 2, rtol=1e-6)
    assert np.all(np.isfinite(F.cross_entropy_backward(x, t)))


LOSSES = {
    "bce": (F.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits_backward,
            "binary_cross_entropy_with_logits"),
    "mse": (F.mse_loss, F.mse_loss_backward, "mse_loss"),
    "l1": (F.l1_loss, F.l1_loss_backward, "l1_loss"),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("shape", [(5,), (3, 4, 5), (2, 3, 70, 30)])
def test_elementwise_losses_match_torch(torch, rng, shape, name, reduction, dtype):
    fwd, bwd, tname = LOSSES[name]
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    t = (rng.uniform(0, 1, shape) if name == "bce" else rng.standard_normal(shape)).astype(dtype)
    xt = torch.from_numpy(x).requires_grad_()
    lt = getattr(torch.nn.functional, tname)(xt, torch.from_numpy(t), reduction=reduction)
    lt.backward()
    tol = TOLS[dtype] if dtype == np.float64 else dict(rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(fwd(x, t, reduction), lt.item(), **tol)
    np.testing.assert_allclose(bwd(x, t, reduction), xt.grad.numpy(), **tol)
    if name == "bce":
        np.testing.assert_allclose(fwd(x, t, reduction), ref.ref_bce_with_logits(x, t, reduction), **tol)


@pytest.mark.parametrize("name", list(LOSSES))
def test_elementwise_losses_finite_differences(rng, name):
    fwd, bwd, _ = LOSSES[name]
    x = rng.standard_normal((3, 5))
    t = rng.uniform(0, 1, (3, 5)) if name == "bce" else x + rng.choice([-1, 1], x.shape) * rng.uniform(0.1, 1, x.shape)
    num = numeric_grad(lambda: fwd(x, t, "mean"), x)
    np.testing.assert_allclose(bwd(x, t, "mean"), num, rtol=1e-6, atol=1e-9)


def test_bce_with_logits_extreme_logits(torch):
    x = np.array([80.0, -80.0, 80.0, -80.0, 0.0])
    t = np.array([0.0, 1.0, 1.0, 0.0, 0.5])
    expected = [80.0, 80.0, np.log1p(np.exp(-80.0)), np.log1p(np.exp(-80.0)), np.log(2.0)]
    assert F.binary_cross_entropy_with_logits(x, t, "sum") == pytest.approx(sum(expected), rel=1e-15)
    for dtype in (np.float32, np.float64):
        v = F.binary_cross_entropy_with_logits(x[:1].astype(dtype), t[:1].astype(dtype), "sum")
        assert v == 80.0
        g = F.binary_cross_entropy_with_logits_backward(x.astype(dtype), t.astype(dtype), "sum")
        assert np.all(np.isfinite(g))
    lt = torch.nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(x), torch.from_numpy(t),
                                                              reduction="sum")
    assert F.binary_cross_entropy_with_logits(x, t, "sum") == pytest.approx(lt.item(), rel=1e-14)


def test_loss_thread_count_invariance(rng):
    x = rng.standard_normal((64, 1000)).astype(np.float32)
    t = rng.integers(0, 1000, 64)
    y = rng.standard_normal(x.shape).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        with fastcnn.threads(n):
            r = [F.cross_entropy(x, t, label_smoothing=0.1), F.cross_entropy_backward(x, t, label_smoothing=0.1)]
            for fwd, bwd, _ in LOSSES.values():
                r += [fwd(x, y), bwd(x, y)]
            outs.append(r)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_loss_bad_arguments(rng):
    x = rng.standard_normal((4, 3))
    t = np.array([0, 1, 2, 1])
    with pytest.raises(ValueError, match=r"target labels must be in \[0, 2\], got 3 at position 1"):
        F.cross_entropy(x, np.array([0, 3, 1, 1]))
    with pytest.raises(ValueError, match="target labels"):
        F.cross_entropy_backward(x, np.array([0, -1, 1, 1], dtype=np.int32))
    with pytest.raises(TypeError, match="target must hold integer class labels"):
        F.cross_entropy(x, t.astype(np.complex64))
    with pytest.raises(ValueError, match="class labels are integers"):   # float: probabilities
        F.cross_entropy(x, t.astype(np.float32))
    with pytest.raises(ValueError, match=r"target must have shape \(4,\)"):
        F.cross_entropy(x, t[:3])
    with pytest.raises(ValueError, match=r"target must have shape \(\)"):
        F.cross_entropy(x[0], t)       # one row (C,) takes one label
    with pytest.raises(ValueError, match="logits must be 2-D"):
        F.cross_entropy(x[0, 0], t[0])
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        F.cross_entropy(x, t, weight=np.ones(4))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, t, reduction="max")
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="target must have the shape of input"):
        F.mse_loss(x, x[:2])
    with pytest.raises(ValueError, match="reduction"):
        F.l1_loss(x, x, "none!")
    with pytest.raises(TypeError, match="input must have dtype"):
        F.binary_cross_entropy_with_logits(t, t)
    # small integer dtypes are accepted as labels
    assert F.cross_entropy(x, t.astype(np.uint8)) == F.cross_entropy(x, t)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_nan_and_inf_rows_match_torch(torch, dtype):
    x = np.array([[1.0, np.nan, 0.0], [-np.inf, -np.inf, -np.inf], [-np.inf, 2.0, 1.0], [0.5, 1.0, 3.0]],
                 dtype=dtype)
    t = np.array([0, 1, 1, 2])
    g = F.cross_entropy_backward(x, t, reduction="sum")
    xt = torch.from_numpy(x).requires_grad_()
    lt = torch.nn.functional.cross_entropy(xt, torch.from_numpy(t), reduction="none")
    lt.sum().backward()
    # row by row: NaN where PyTorch gives NaN, the same values elsewhere
    for i in range(4):
        li = F.cross_entropy(x[i:i + 1], t[i:i + 1], reduction="sum")
        np.testing.assert_allclose(li, lt[i].item(), rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-6, atol=1e-7, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_elementwise_losses_of_0d_inputs_keep_their_shape(torch, dtype):
    """reduction='none' on 0-d input and target gives 0-d losses and gradients, as PyTorch."""
    x, t = np.array(0.75, dtype), np.array(0.25, dtype)
    for name in ("mse_loss", "l1_loss", "binary_cross_entropy_with_logits"):
        v = getattr(F, name)(x, t, "none")
        g = getattr(F, name + "_backward")(x, t, "none")
        assert v.shape == () and g.shape == () and v.dtype == dtype and g.dtype == dtype
        xt = torch.tensor(x, requires_grad=True)
        lt = getattr(torch.nn.functional, name)(xt, torch.tensor(t), reduction="none")
        lt.backward()
        assert lt.shape == () and float(v) == pytest.approx(lt.item(), rel=1e-6)
        assert float(g) == pytest.approx(xt.grad.item(), rel=1e-6)
    g = F.binary_cross_entropy_with_logits_backward(x, t, "none", weight=np.array(2.0, dtype))
    assert g.shape == ()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_weighted_bce_gradient_keeps_its_relative_precision(torch, dtype):
    """With weight and pos_weight, the gradient of large negative logits (sigmoid(x),
    far below one ulp of 1) and large positive ones with target 1 (pos_weight times
    sigmoid(x) - 1) keeps its relative precision, as without weights and in PyTorch."""
    x = np.array([-19.387262, -30.0, -40.0, -80.0, 3.0, 25.0, 40.0, 0.0], dtype)
    t = np.array([0, 0, 0, 0, 0.3, 1, 1, 1], dtype)
    w = np.linspace(0.5, 2.0, x.size).astype(dtype)
    pw = np.linspace(1.0, 3.0, x.size).astype(dtype)
    xs = np.array([-19.387262, -30.0, -40.0, -80.0], dtype)
    z = np.zeros(4, dtype)
    assert np.allclose(F.binary_cross_entropy_with_logits_backward(xs, z, "sum", weight=np.ones(4, dtype)),
                       F.binary_cross_entropy_with_logits_backward(xs, z, "sum"), rtol=1e-5, atol=0)
    g = F.binary_cross_entropy_with_logits_backward(x, t, "sum", weight=w, pos_weight=pw)
    # w [(1 - t) sigmoid(x) - pw t sigmoid(-x)], each sigmoid as 1 / (1 + exp(-+x)) in float64
    x64, t64, w64, pw64 = (v.astype(np.float64) for v in (x, t, w, pw))
    with np.errstate(over="ignore"):
        expected = w64 * ((1 - t64) / (1 + np.exp(-x64)) - pw64 * t64 / (1 + np.exp(x64)))
    np.testing.assert_allclose(g, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=0)
    # PyTorch's gradient where it keeps its precision (not at x >> 0 with target 1)
    xt = torch.tensor(x64, requires_grad=True)
    torch.nn.functional.binary_cross_entropy_with_logits(
        xt, torch.tensor(t64), torch.tensor(w64), reduction="sum", pos_weight=torch.tensor(pw64)).backward()
    np.testing.assert_allclose(g[:5], xt.grad.numpy()[:5], rtol=1e-5 if dtype == np.float32 else 1e-12, atol=0)


@pytest.mark.parametrize("ignore_index", [0, 2, -100, -1])
def test_cross_entropy_class_probabilities_with_ignore_index_as_torch(torch, rng, ignore_index):
    """With a float target of class probabilities, an ignore_index naming a class (>= 0)
    is refused, as PyTorch refuses it; a negative one is without effect there too."""
    x = rng.standard_normal((4, 3))
    p = rng.random((4, 3))
    p /= p.sum(1, keepdims=True)
    xt = torch.tensor(x, requires_grad=True)
    crit = fastcnn.nn.CrossEntropyLoss(ignore_index=ignore_index)
    if ignore_index >= 0:
        with pytest.raises(RuntimeError, match="ignore_index is not supported"):
            torch.nn.functional.cross_entropy(xt, torch.tensor(p), ignore_index=ignore_index)
        with pytest.raises(ValueError, match=f"ignore_index is not supported.*got ignore_index={ignore_index}"):
            crit(x, p)
        with pytest.raises(ValueError, match="ignore_index is not supported"):
            F.cross_entropy_backward(x, p, ignore_index=ignore_index)
        return
    lt = torch.nn.functional.cross_entropy(xt, torch.tensor(p), ignore_index=ignore_index)
    lt.backward()
    np.testing.assert_allclose(crit(x, p), lt.item(), rtol=1e-12)
    np.testing.assert_allclose(crit.backward(), xt.grad.numpy(), rtol=1e-12, atol=1e-15)
