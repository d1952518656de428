"""Max / average / adaptive pooling and nearest upsampling: PyTorch parity, NumPy
reference, finite differences, thread-count invariance, argument checks."""
import numpy as np
import pytest

import fastcnn
from fastcnn import functional as F
from conftest import numeric_grad

import reference as ref

TOLS = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-5, atol=1e-5)}

# (shape, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    ((2, 3, 8, 8), 2, None, 0, 1, False),
    ((2, 3, 9, 7), 2, None, 0, 1, False),       # odd planes, floor
    ((2, 3, 9, 7), 2, None, 0, 1, True),        # ceil_mode partial windows
    ((1, 2, 7, 9), 3, 2, 1, 1, False),          # padding = kernel // 2
    ((1, 2, 7, 9), 3, 2, 1, 1, True),
    ((2, 2, 10, 11), 3, 1, 1, 2, False),        # dilation
    ((1, 3, 11, 10), (3, 2), (2, 1), (1, 1), (1, 2), True),
    ((3, 2, 1, 1), 1, 1, 0, 1, False),          # 1x1 planes
    ((1, 1, 5, 5), 5, 1, 2, 1, False),
    ((1, 4, 6, 6), 4, 3, 2, 1, True),
    ((2, 3, 20, 34), 2, None, 0, 1, False),     # vector path, last group overlapping
    ((1, 2, 33, 17), 2, 2, 0, 1, False),        # vector path, odd H and W
    ((1, 2, 16, 16), 2, 2, 0, 1, True),
]


def _ids(cases):
    return ["x{}-k{}-s{}-p{}-d{}-{}".format(c[0], c[1], c[2], c[3], c[4], "ceil" if c[5] else "floor")
            .replace(" ", "") for c in cases]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", MAX_CASES, ids=_ids(MAX_CASES))
def test_max_pool2d_matches_torch_and_reference(torch, rng, case, dtype):
    shape, k, s, p, d, ceil = case
    x = rng.standard_normal(shape).astype(dtype)
    y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    xt = torch.from_numpy(x).requires_grad_()
    yt, it = torch.nn.functional.max_pool2d(xt, k, s if s is not None else k, p, d, ceil_mode=ceil,
                                            return_indices=True)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    assert idx.dtype == np.int64
    yr, ir = ref.ref_max_pool2d(x, _pair(k), _pair(s if s is not None else k), _pair(p), _pair(d), ceil)
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_array_equal(idx, ir)
    np.testing.assert_array_equal(F.max_pool2d(x, k, s, p, d, ceil), y)

    g = rng.standard_normal(y.shape).astype(dtype)
    gx = F.max_pool2d_backward(g, idx, x.shape)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(gx, xt.grad.numpy(), **TOLS[dtype])
    np.testing.assert_allclose(gx, ref.ref_max_pool2d_backward(g, idx, x.shape), **TOLS[dtype])


def test_max_pool2d_finite_differences(rng):
    x = rng.standard_normal((2, 2, 7, 6))
    g = rng.standard_normal(F.max_pool2d(x, 3, 2, 1, ceil_mode=True).shape)
    y, idx = F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
    gx = F.max_pool2d_backward(g, idx, x.shape)
    num = numeric_grad(lambda: float((F.max_pool2d(x, 3, 2, 1, ceil_mode=True) * g).sum()), x)
    np.testing.assert_allclose(gx, num, rtol=1e-6, atol=1e-6)


def test_max_pool2d_3d_input_noncontiguous_and_nan(rng):
    x = rng.standard_normal((3, 8, 10)).transpose(0, 2, 1)  # (3, 10, 8), not contiguous
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    yr, ir = ref.ref_max_pool2d(np.ascontiguousarray(x)[None], (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(y, yr[0])
    np.testing.assert_array_equal(idx, ir[0])
    x = np.ascontiguousarray(x)
    x[0, 1, 1] = np.nan
    y = F.max_pool2d(x[None], 2)
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 0, 1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("hw", [8, 32])
def test_max_pool2d_backward_with_foreign_indices(rng, hw, dtype):
    # indices of a 3x3/stride-2 pooling have the output shape of a 2x2/stride-2 one
    x = rng.standard_normal((2, 3, hw, hw)).astype(dtype)
    y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert y.shape[-2:] == (hw // 2, hw // 2)
    g = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_allclose(F.max_pool2d_backward(g, idx, x.shape),
                               ref.ref_max_pool2d_backward(g, idx, x.shape), **TOLS[dtype])
    # out-of-plane indices are ignored, not written
    bad = idx.copy()
    bad[0, 0, 0, 0] = hw * hw + 5
    gx = F.max_pool2d_backward(g, bad, x.shape)
    assert np.all(np.isfinite(gx))


AVG_CASES = [
    ((2, 3, 8, 8), 2, None, 0, False, True),
    ((2, 3, 9, 7), 3, 2, 1, False, True),
    ((2, 3, 9, 7), 3, 2, 1, False, False),
    ((1, 2, 7, 9), 3, 2, 1, True, True),
    ((1, 2, 7, 9), 3, 2, 1, True, False),
    ((1, 2, 6, 5), (2, 3), (2, 1), (1, 1), True, False),
    ((3, 1, 1, 1), 1, 1, 0, False, True),
    ((1, 2, 5, 5), 4, 3, 2, True, True),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", AVG_CASES,
                         ids=["x{}-k{}-s{}-p{}-{}-{}".format(c[0], c[1], c[2], c[3], "ceil" if c[4] else "floor",
                                                              "incl" if c[5] else "excl").replace(" ", "")
                              for c in AVG_CASES])
def test_avg_pool2d_matches_torch_and_reference(torch, rng, case, dtype):
    shape, k, s, p, ceil, cip = case
    x = rng.standard_normal(shape).astype(dtype)
    y = F.avg_pool2d(x, k, s, p, ceil, cip)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.nn.functional.avg_pool2d(xt, k, s if s is not None else k, p, ceil, cip)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOLS[dtype])
    np.testing.assert_allclose(y, ref.ref_avg_pool2d(x, _pair(k), _pair(s if s is not None else k), _pair(p),
                                                     ceil, cip), **TOLS[dtype])
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = F.avg_pool2d_backward(g, x.shape, k, s, p, ceil, cip)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(gx, xt.grad.numpy(), **TOLS[dtype])


@pytest.mark.parametrize("case", [(3, 2, 1, True, False), (2, 1, 1, False, True)])
def test_avg_pool2d_finite_differences(rng, case):
    k, s, p, ceil, cip = case
    x = rng.standard_normal((1, 2, 5, 6))
    g = rng.standard_normal(F.avg_pool2d(x, k, s, p, ceil, cip).shape)
    gx = F.avg_pool2d_backward(g, x.shape, k, s, p, ceil, cip)
    num = numeric_grad(lambda: float((F.avg_pool2d(x, k, s, p, ceil, cip) * g).sum()), x)
    np.testing.assert_allclose(gx, num, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,out", [((2, 3, 7, 5), 1), ((1, 2, 1, 1), 1), ((2, 2, 9, 7), (3, 2)),
                                       ((1, 2, 5, 8), (4, 3))])
def test_adaptive_avg_pool2d(torch, rng, shape, out, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    y = F.adaptive_avg_pool2d(x, out)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.nn.functional.adaptive_avg_pool2d(xt, out)
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOLS[dtype])
    np.testing.assert_allclose(y, ref.ref_adaptive_avg_pool2d(x, _pair(out)), **TOLS[dtype])
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = F.adaptive_avg_pool2d_backward(g, x.shape)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(gx, xt.grad.numpy(), **TOLS[dtype])
    if dtype == np.float64:
        num = numeric_grad(lambda: float((F.adaptive_avg_pool2d(x, out) * g).sum()), x)
        np.testing.assert_allclose(gx, num, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("scale", [1, 2, 3, (2, 3)])
def test_upsample_nearest2d(torch, rng, scale, dtype):
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    y = F.upsample_nearest2d(x, scale)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.nn.functional.interpolate(xt, scale_factor=_pair(scale), mode="nearest")
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(y, ref.ref_upsample_nearest2d(x, _pair(scale)))
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = F.upsample_nearest2d_backward(g, scale)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(gx, xt.grad.numpy(), **TOLS[dtype])


def test_upsample_finite_differences(rng):
    x = rng.standard_normal((1, 2, 3, 2))
    g = rng.standard_normal((1, 2, 6, 6))
    gx = F.upsample_nearest2d_backward(g, (2, 3))
    num = numeric_grad(lambda: float((F.upsample_nearest2d(x, (2, 3)) * g).sum()), x)
    np.testing.assert_allclose(gx, num, rtol=1e-7, atol=1e-8)


# (input shape, interpolate arguments): fractions, factors below one, sizes, both modes,
# recompute_scale_factor, (N, C, L) input, and factors whose positions fall on whole
# numbers in exact arithmetic (81 / 2.7, 39 / 1.3), where the rounding decides
INTERPOLATE_CASES = [
    ((2, 3, 5, 7), dict(scale_factor=1.5)),
    ((2, 3, 5, 7), dict(scale_factor=(0.5, 2.5))),
    ((1, 2, 9, 4), dict(size=(4, 11))),
    ((1, 2, 9, 4), dict(size=7, mode="nearest-exact")),
    ((2, 1, 6, 6), dict(scale_factor=(1.3, 0.7), mode="nearest-exact")),
    ((2, 1, 6, 6), dict(scale_factor=1.7, recompute_scale_factor=True)),
    ((1, 1, 30, 60), dict(scale_factor=(1.3, 2.7))),
    ((1, 1, 30, 60), dict(scale_factor=(1.3, 2.7), mode="nearest-exact")),
    ((2, 3, 4, 5), dict(scale_factor=(1.1, 2.2))),          # (sizes of the input and of twice it)
    ((1, 2, 3, 3), dict(scale_factor=0.4)),                 # one position an axis
    ((2, 3, 5, 7), dict(scale_factor=3)),                   # whole factors
    ((2, 3, 5, 7), dict(scale_factor=2, mode="nearest-exact")),
    ((2, 3, 11), dict(scale_factor=1.5)),
    ((2, 3, 11), dict(size=4, mode="nearest-exact")),
    ((1, 2, 60), dict(scale_factor=2.7)),
    ((1, 2, 8), dict(scale_factor=1.1)),                    # (N, C, L): no shortcut at the input's size
    ((0, 3, 5, 7), dict(scale_factor=1.5)),
]


def _interpolate_ref(x, kw):
    dims = x.ndim - 2
    spatial = x.shape[2:]
    size, sf = kw.get("size"), kw.get("scale_factor")
    if size is not None:
        out = tuple(size) if isinstance(size, tuple) else (size,) * dims
        scales = (None,) * dims
    else:
        sf = tuple(sf) if isinstance(sf, tuple) else (sf,) * dims
        out = tuple(int(np.floor(n * float(v))) for n, v in zip(spatial, sf))
        scales = (None,) * dims if kw.get("recompute_scale_factor") else sf
    exact = kw.get("mode", "nearest") == "nearest-exact"
    return ref.ref_interpolate_nearest(x, out, scales, exact, shortcuts=dims == 2 and not exact)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,kw", INTERPOLATE_CASES, ids=[f"{s}-{k}" for s, k in INTERPOLATE_CASES])
def test_interpolate_nearest_matches_torch_and_reference(torch, rng, shape, kw, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    y = F.interpolate(x, **kw)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.nn.functional.interpolate(xt, **kw)
    assert y.dtype == dtype and y.shape == tuple(yt.shape)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(y, _interpolate_ref(x, kw))
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = F.interpolate_backward(g, x.shape, **kw)
    assert gx.dtype == dtype and gx.shape == x.shape
    # the gradient is the adjoint of the forward: <interpolate(x), g> = <x, gx>
    y64, g64 = y.astype(np.float64), g.astype(np.float64)
    assert np.isclose((y64 * g64).sum(), (x.astype(np.float64) * gx).sum(), rtol=1e-5, atol=1e-5)
    yt.backward(torch.from_numpy(g))
    tg = xt.grad.numpy()
    # PyTorch's backward reads positions in float32 arithmetic even for float64 data, and in
    # (N, C, L) input takes the shortcut its forward does not take: where that makes its
    # gradient differ from the adjoint of its forward, fastcnn keeps the adjoint
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    if np.isclose((y64 * g64).sum(), (x.astype(np.float64) * tg).sum(), **tol):
        np.testing.assert_allclose(gx, tg, **TOLS[dtype])
    else:
        assert dtype == np.float64 or x.ndim == 3 and y.shape[-1] in (x.shape[-1], 2 * x.shape[-1])


def test_interpolate_float64_positions_and_pytorch_gradient(torch):
    """Float64 data reads positions computed in float64 (then rounded to float32), as
    PyTorch's forward: 81 / 2.7 reads position 30 there, 29 in float32 arithmetic."""
    x = np.arange(60.0).reshape(1, 1, 60)
    y = F.interpolate(x, scale_factor=2.7)
    assert y[0, 0, 81] == 30.0 and F.interpolate(x.astype(np.float32), scale_factor=2.7)[0, 0, 81] == 29.0
    t = torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=2.7)
    np.testing.assert_array_equal(y, t.numpy())
    g = np.zeros_like(y)
    g[0, 0, 81] = 1.0
    gx = F.interpolate_backward(g, x.shape, scale_factor=2.7)
    assert gx[0, 0, 30] == 1.0 and gx.sum() == 1.0


@pytest.mark.parametrize("shape,kw", [((1, 2, 4, 5), dict(scale_factor=(1.5, 0.6))),
                                      ((1, 2, 7), dict(size=10, mode="nearest-exact")),
                                      ((1, 2, 4, 5), dict(scale_factor=(1.5, 0.6), mode="bilinear")),
                                      ((1, 2, 4, 5), dict(size=(7, 3), mode="bilinear", align_corners=True)),
                                      ((1, 2, 7), dict(size=10, mode="linear"))])
def test_interpolate_finite_differences(rng, shape, kw):
    x = rng.standard_normal(shape)
    y = F.interpolate(x, **kw)
    g = rng.standard_normal(y.shape)
    gx = F.interpolate_backward(g, x.shape, **kw)
    num = numeric_grad(lambda: float((F.interpolate(x, **kw) * g).sum()), x)
    np.testing.assert_allclose(gx, num, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_interpolate_thread_count_invariance(rng, mode):
    x = rng.standard_normal((4, 16, 37, 35)).astype(np.float32)
    g = rng.standard_normal((4, 16, 55, 24)).astype(np.float32)
    kw = dict(size=(55, 24), mode=mode)
    outs = []
    for n in (1, 2, 3):
        with fastcnn.threads(n):
            outs.append((F.interpolate(x, **kw), F.interpolate_backward(g, x.shape, **kw)))
    for y, gx in outs[1:]:
        assert y.tobytes() == outs[0][0].tobytes() and gx.tobytes() == outs[0][1].tobytes()


LINEAR_CASES = [
    ((2, 3, 5, 7), dict(scale_factor=2)),
    ((2, 3, 5, 7), dict(scale_factor=2, align_corners=True)),
    ((2, 3, 5, 7), dict(scale_factor=(1.5, 0.6), align_corners=False)),
    ((1, 2, 9, 4), dict(size=(4, 11), align_corners=True)),
    ((1, 2, 9, 4), dict(size=(9, 1), align_corners=True)),           # an axis copied; one position
    ((1, 2, 9, 4), dict(size=(1, 13))),
    ((2, 1, 6, 6), dict(scale_factor=1.7, recompute_scale_factor=True)),
    ((1, 1, 40, 90), dict(scale_factor=(1.3, 3.383783909386838))),   # (single rounding of the positions)
    ((1, 1, 1, 1), dict(scale_factor=3)),
    ((0, 3, 5, 7), dict(scale_factor=1.5)),
    ((2, 3, 11), dict(scale_factor=1.5)),
    ((2, 3, 11), dict(size=4, align_corners=True)),
    ((1, 2, 60), dict(scale_factor=2.7)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,kw", LINEAR_CASES, ids=[f"{s}-{k}" for s, k in LINEAR_CASES])
def test_interpolate_linear_matches_torch_and_reference(torch, rng, shape, kw, dtype):
    mode = "linear" if len(shape) == 3 else "bilinear"
    x = rng.standard_normal(shape).astype(dtype)
    y = F.interpolate(x, mode=mode, **kw)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.nn.functional.interpolate(xt, mode=mode, **kw)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-6, atol=1e-6)
    assert y.dtype == dtype and y.shape == tuple(yt.shape)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    dims = len(shape) - 2
    sf = kw.get("scale_factor")
    if "size" in kw:
        out = kw["size"] if isinstance(kw["size"], tuple) else (kw["size"],) * dims
        scales = (None,) * dims
    else:
        sf = sf if isinstance(sf, tuple) else (sf,) * dims
        out = tuple(int(np.floor(n * v)) for n, v in zip(shape[2:], sf))
        scales = (None,) * dims if kw.get("recompute_scale_factor") else sf
    expected = ref.ref_interpolate_linear(x, out, scales, bool(kw.get("align_corners")))
    # (the reference's positions are exact; float32 data has them in float32, as PyTorch)
    np.testing.assert_allclose(y, expected, **(tol if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)))
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = F.interpolate_backward(g, x.shape, mode=mode, **kw)
    yt.backward(torch.from_numpy(g))
    assert gx.dtype == dtype and gx.shape == x.shape
    np.testing.assert_allclose(gx, xt.grad.numpy(), **(tol if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)))


def test_interpolate_bad_arguments():
    x = np.zeros((1, 1, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="exactly one of size and scale_factor"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="exactly one of size and scale_factor"):
        F.interpolate(x, size=3, scale_factor=2)
    with pytest.raises(ValueError, match="mode must be one of"):
        F.interpolate(x, scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match=r"mode 'linear' resamples \(N, C, L\) input, got 4-D input"):
        F.interpolate(x, scale_factor=2, mode="linear")
    with pytest.raises(ValueError, match=r"mode 'bilinear' resamples \(N, C, H, W\) input, got 3-D input"):
        F.interpolate(x[0], scale_factor=2, mode="bilinear")
    with pytest.raises(TypeError, match="align_corners must be a bool"):
        F.interpolate(x, scale_factor=2, mode="bilinear", align_corners="yes")
    with pytest.raises(ValueError, match="align_corners"):
        F.interpolate(x, scale_factor=2, align_corners=False)
    with pytest.raises(ValueError, match="antialias=True is not supported"):
        F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True)
    with pytest.raises(TypeError, match="antialias must be a bool"):
        F.interpolate(x, scale_factor=0.5, antialias=None)
    assert F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=False).shape == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="scale_factor must be positive"):
        F.interpolate(x, scale_factor=-2)
    with pytest.raises(ValueError, match="scale_factor must be positive"):
        F.interpolate(x, scale_factor=float("inf"))
    with pytest.raises(ValueError, match="scale_factor must not be NaN"):
        F.interpolate(x, scale_factor=float("nan"))
    with pytest.raises(ValueError, match=r"makes an empty output \(0, 0\)"):
        F.interpolate(x, scale_factor=0.2)
    with pytest.raises(ValueError, match="size must be >= 1"):
        F.interpolate(x, size=(3, 0))
    with pytest.raises(TypeError, match="size"):
        F.interpolate(x, size=2.5)
    with pytest.raises(ValueError, match="size must be an int or 2 of them"):
        F.interpolate(x, size=(3, 3, 3))
    with pytest.raises(ValueError, match="scale_factor must be a number or 1 of them"):
        F.interpolate(x[0], scale_factor=(2, 2))
    with pytest.raises(ValueError, match="non-empty spatial"):
        F.interpolate(np.zeros((1, 1, 0, 4)), scale_factor=2)
    with pytest.raises(ValueError, match=r"x must be 3 or 4-D, got shape \(1, 1, 2, 2, 2\)"):
        F.interpolate(np.zeros((1, 1, 2, 2, 2)), scale_factor=2)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(1, 1, 6, 6\)"):
        F.interpolate_backward(np.zeros((1, 1, 6, 5)), (1, 1, 4, 4), scale_factor=1.5)
    with pytest.raises(ValueError, match="input_shape"):
        F.interpolate_backward(np.zeros((1, 1, 6, 6)), (1, 2, 4, 4), scale_factor=1.5)


def test_pooling_thread_count_invariance(rng):
    x = rng.standard_normal((2, 16, 37, 35)).astype(np.float32)  # big enough to run threaded
    outs = []
    for n in (1, 2, 3):
        with fastcnn.threads(n):
            y, idx = F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
            y2, idx2 = F.max_pool2d(x, 2, return_indices=True)
            a = F.avg_pool2d(x, 3, 2, 1, True, False)
            ga = F.avg_pool2d_backward(a, x.shape, 3, 2, 1, True, False)
            gm = F.max_pool2d_backward(y, idx, x.shape)
            ad = F.adaptive_avg_pool2d(x, 1)
            gad = F.adaptive_avg_pool2d_backward(ad, x.shape)
            up = F.upsample_nearest2d(x, 2)
            gup = F.upsample_nearest2d_backward(up, 2)
            outs.append([y, idx, y2, idx2, a, ga, gm, ad, gad, up, gup])
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert a.tobytes() == b.tobytes()


def test_pool_bad_arguments(rng):
    x = rng.standard_normal((1, 1, 4, 4))
    with pytest.raises(ValueError, match="kernel_size"):
        F.max_pool2d(x, 6)
    with pytest.raises(ValueError, match="kernel_size"):
        F.max_pool2d(x, 0)
    with pytest.raises(ValueError, match="padding"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="stride"):
        F.avg_pool2d(x, 2, stride=0)
    with pytest.raises(ValueError, match="dilation"):
        F.max_pool2d(x, 2, dilation=0)
    with pytest.raises(ValueError, match="x must be 3 or 4-D"):
        F.max_pool2d(x[0, 0], 2)
    with pytest.raises(TypeError, match="x must have dtype"):
        F.avg_pool2d(x.astype(np.int32), 2)
    with pytest.raises(TypeError, match="kernel_size"):
        F.max_pool2d(x, 2.5)
    with pytest.raises(TypeError, match="ceil_mode"):
        F.max_pool2d(x, 2, ceil_mode="yes")
    with pytest.raises(ValueError, match="kernel_size"):
        F.avg_pool2d(x, 5)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    with pytest.raises(ValueError, match="indices"):
        F.max_pool2d_backward(y, idx[..., :1], x.shape)
    with pytest.raises(TypeError, match="indices"):
        F.max_pool2d_backward(y, idx.astype(np.float64), x.shape)
    with pytest.raises(ValueError, match="input_shape"):
        F.max_pool2d_backward(y, idx, (2, 1, 4, 4))
    with pytest.raises(ValueError, match="grad_out"):
        F.avg_pool2d_backward(y, (1, 1, 8, 8), 2)
    with pytest.raises(ValueError, match="output_size"):
        F.adaptive_avg_pool2d(x, 0)
    with pytest.raises(ValueError, match="scale_factor"):
        F.upsample_nearest2d(x, 0)
    with pytest.raises(TypeError, match="scale_factor"):
        F.upsample_nearest2d(x, 1.5)
    assert F.upsample_nearest2d(x, 2.0).shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="scale_factor"):
        F.upsample_nearest2d_backward(rng.standard_normal((1, 1, 5, 4)), 2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("width", [6, 40])
def test_max_pool2d_nan_inf_ties_match_torch(torch, rng, width, dtype):
    x = rng.integers(-2, 3, (2, 3, 10, width)).astype(dtype)  # many ties
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 25, replace=False)] = np.nan
    flat[rng.choice(flat.size, 25, replace=False)] = -np.inf
    x[0, 0, :2, :2] = -np.inf  # a window of -inf only
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    yt, it = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    np.testing.assert_array_equal(F.max_pool2d(x, 2), y)  # the path without indices
    g = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_array_equal(F.max_pool2d_backward(g, idx, x.shape),
                                  ref.ref_max_pool2d_backward(g, idx, x.shape))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,kw", [
    ((2, 3, 1, 4), dict(kernel_size=(2, 1), stride=1, padding=(1, 0), dilation=(2, 2), ceil_mode=True)),
    ((1, 2, 5, 1), dict(kernel_size=(1, 2), stride=(2, 1), padding=(0, 1), dilation=(1, 2))),
], ids=["rows", "columns"])
def test_max_pool2d_windows_of_padding_only(torch, rng, shape, kw, dtype):
    """A dilated window can hold padding only: -inf and PyTorch's index for it (past the
    plane, or another window's input), and, from the layer, no gradient to any input.
    (PyTorch 2.13's backward writes to those indices, past the plane too, so it is not
    run here.)"""
    from fastcnn import nn
    x = rng.standard_normal(shape).astype(dtype)
    y, idx = F.max_pool2d(x, return_indices=True, **kw)
    yt, it = torch.nn.functional.max_pool2d(torch.from_numpy(x), return_indices=True, **kw)
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    assert np.all(y == -np.inf)
    g = rng.standard_normal(y.shape).astype(dtype)
    for train in (True, False):
        layer = nn.MaxPool2d(**kw).train(train)
        np.testing.assert_array_equal(layer(x), y)
        np.testing.assert_array_equal(layer.backward(g), np.zeros(shape, dtype))
    layer = nn.MaxPool2d(return_indices=True, **kw)
    y2, idx2 = layer(x)
    np.testing.assert_array_equal(idx2, idx)
    np.testing.assert_array_equal(layer.backward(g), np.zeros(shape, dtype))
    with pytest.raises(ValueError, match="grad_out"):
        layer.backward(g[:, :1])


# The MaxPool2d layer in training mode keeps each 2x2 window's argmax as a
# one-byte code (float32 through the vector kernels, rows of < 8 outputs via a
# padded copy; float64 scalar).
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(2, 3, 10, 40), (2, 3, 10, 6), (1, 2, 33, 17), (3, 1, 2, 2),
                                   (1, 1, 5, 3), (2, 2, 16, 18), (2, 3, 7, 15), (1, 1, 3, 2),
                                   (2, 1, 2, 5), (5, 3, 14, 14)])
def test_max_pool_layer_window_codes_match_torch(torch, rng, shape, dtype):
    from fastcnn import nn
    x = rng.integers(-2, 3, shape).astype(dtype)  # many ties
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, max(1, flat.size // 20), replace=False)] = np.nan
    flat[rng.choice(flat.size, max(1, flat.size // 20), replace=False)] = -np.inf
    pool = nn.MaxPool2d(2)
    y = pool(x)
    assert pool._ctx[0].dtype == np.uint8
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = pool.backward(g)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.nn.functional.max_pool2d(xt, 2)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(gx, xt.grad.numpy())
    assert gx.dtype == dtype and gx.shape == x.shape
    # the same gradient as from int64 indices
    _, idx = F.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(gx, F.max_pool2d_backward(g, idx, x.shape))
    # thread-count invariance
    for n in (1, 3):
        with fastcnn.threads(n):
            p2 = nn.MaxPool2d(2)
            np.testing.assert_array_equal(p2(x), y)
            np.testing.assert_array_equal(p2.backward(g), gx)


def test_max_pool_layer_window_codes_bad_grad(rng):
    from fastcnn import nn
    pool = nn.MaxPool2d(2)
    pool(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    with pytest.raises(ValueError, match="grad_out"):
        pool.backward(np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(TypeError, match="grad_out"):
        pool.backward([[1.0]])
    # float64 gradient for a float32 layer is cast, as everywhere in the layer API
    assert pool.backward(np.ones((2, 3, 4, 4))).dtype == np.float32


def test_checked_geometry_is_remembered_by_exact_value():
    """Repeated calls skip the geometry checks; equal values of another type (True for 1,
    2.0 for 2, 1 for True) are still refused, and other input sizes still checked."""
    x = np.arange(2 * 3 * 8 * 8, dtype=np.float64).reshape(2, 3, 8, 8)
    for _ in range(2):
        assert F.max_pool2d(x, 2).shape == (2, 3, 4, 4)
        assert F.avg_pool2d(x, (2, 2), 2, 0, False).shape == (2, 3, 4, 4)
    for bad in (True, (2, 2.0), 2.0):
        with pytest.raises(TypeError, match="kernel_size"):
            F.max_pool2d(x, bad)
    with pytest.raises(TypeError, match="ceil_mode"):
        F.max_pool2d(x, 2, 2, 0, 1, 1)
    with pytest.raises(TypeError, match="ceil_mode"):
        F.avg_pool2d(x, 2, 2, 0, 0)
    with pytest.raises(ValueError, match="bigger than the padded input"):
        F.max_pool2d(x[..., :1, :1], 2)
    np.testing.assert_array_equal(F.max_pool2d(x, 2, ceil_mode=True), F.max_pool2d(x, 2))
    assert F.max_pool2d(x[..., :7, :7], 2, ceil_mode=True).shape == (2, 3, 4, 4)
