"""GEMM engine: matmul and linear against numpy, every ISA path, thread invariance, bad input."""
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn._kernels import _gemm

import reference as ref

SHAPES = [(1, 1, 1), (1, 7, 1), (7, 1, 5), (5, 3, 1), (6, 16, 8), (7, 17, 9), (13, 33, 65),
          (37, 5, 300), (100, 37, 257), (3, 700, 2), (200, 3, 70), (145, 130, 260), (64, 3136, 9),
          # products of 1 to 4 rows (the narrow kernels): whole and partial panels, several depth blocks
          (1, 200, 37), (2, 129, 600), (3, 64, 5), (4, 300, 1100), (4, 7, 3)]
ISAS = fastcnn.supported_isas()


@pytest.fixture(params=ISAS)
def isa(request):
    fastcnn.set_isa(request.param)
    yield request.param
    fastcnn.set_isa("auto")


def _tol(dtype, k):
    return dict(rtol=1e-12 * max(1, k), atol=1e-12 * max(1, k)) if dtype == np.float64 else \
        dict(rtol=2e-5 * max(1, np.sqrt(k)), atol=2e-5 * max(1, np.sqrt(k)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("m,n,k", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_matmul_matches_numpy(isa, dtype, m, n, k, rng):
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    np.testing.assert_allclose(F.matmul(a, b), ref.matmul(a, b), **_tol(dtype, k))
    assert F.matmul(a, b).dtype == dtype


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (2.5, 0.0), (1.0, 1.0), (-0.5, 0.75)])
@pytest.mark.parametrize("m", [23, 3])
def test_gemm_transposes_alpha_beta(isa, dtype, ta, tb, alpha, beta, m, rng):
    n, k = 97, 29
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    c = c0.copy()
    _gemm.gemm(a, b, c, ta, tb, alpha, beta, n_threads=2)
    expected = alpha * ((a.T if ta else a).astype(np.float64) @ (b.T if tb else b)) + beta * c0
    np.testing.assert_allclose(c, expected, **_tol(dtype, k))


@pytest.mark.parametrize("layout", ["transposed", "strided", "negative", "fortran", "readonly"])
def test_matmul_any_strides(layout, rng):
    base_a = rng.standard_normal((40, 60))
    base_b = rng.standard_normal((60, 50))
    if layout == "transposed":
        a, b = base_a.T.copy().T, base_b.T.copy().T
    elif layout == "strided":
        a, b = base_a[::2, ::3], base_b[::3, ::2]
    elif layout == "negative":
        a, b = base_a[::-1, ::-2], base_b[::-2, ::-1]
    elif layout == "fortran":
        a, b = np.asfortranarray(base_a), np.asfortranarray(base_b)
    else:
        a, b = base_a.copy(), base_b.copy()
        a.flags.writeable = False
        b.flags.writeable = False
    np.testing.assert_allclose(F.matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)


def _for_thread_counts(monkeypatch, fn):
    """fn() with 1, 2 and 3 threads (each splitting even the smallest work)."""
    monkeypatch.setattr("fastcnn.functional._checks.WORK_PER_THREAD", 1)
    results = []
    for t in (1, 2, 3):
        with fastcnn.threads(t):
            results.append(fn())
    return results


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matmul_bitwise_identical_for_any_thread_count(monkeypatch, dtype, rng):
    a = rng.standard_normal((300, 520)).astype(dtype)
    b = rng.standard_normal((520, 333)).astype(dtype)
    results = _for_thread_counts(monkeypatch, lambda: F.matmul(a, b))
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], results[2])


@pytest.mark.parametrize("batch,features", [(19, 33), (1, 33), (3, 70), (4, 5), (1, 1)])
@pytest.mark.parametrize("activation", [None, "relu", "leaky_relu"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_epilogue(isa, activation, dtype, batch, features, rng):
    x = rng.standard_normal((batch, features)).astype(dtype)
    w = rng.standard_normal((21, features)).astype(dtype)
    b = rng.standard_normal(21).astype(dtype)
    y = F.linear(x, w, b, activation=activation, negative_slope=0.2)
    expected = x.astype(np.float64) @ w.T + b
    assert y.shape == (batch, 21)
    if activation == "relu":
        expected = np.maximum(expected, 0)
    elif activation == "leaky_relu":
        expected = np.where(expected < 0, 0.2 * expected, expected)
    np.testing.assert_allclose(y, expected, **_tol(dtype, features))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_small_batch_linear_same_for_any_thread_count(isa, monkeypatch, dtype, rng):
    """Rows of a few-row Linear run four output features at a time; a feature's sum
    is the same whichever group and thread it falls in."""
    x = rng.standard_normal((3, 517)).astype(dtype)
    w = rng.standard_normal((23, 517)).astype(dtype)
    outs = _for_thread_counts(monkeypatch, lambda: (F.linear(x, w, None, activation="relu"),
                                                    F.linear(x, w[1:], None, activation="relu")))
    for full, shifted in outs:
        assert np.array_equal(full, outs[0][0]) and np.array_equal(shifted, outs[0][1])
    np.testing.assert_array_equal(outs[0][0][:, 1:], outs[0][1])   # feature 1 leads its group of four
    np.testing.assert_allclose(outs[0][0], np.maximum(x.astype(np.float64) @ w.T, 0), **_tol(dtype, 517))


@pytest.mark.parametrize("out_features", [1, 2, 4, 5])
@pytest.mark.parametrize("activation", [None, "relu", "leaky_relu"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_few_output_features_linear(isa, monkeypatch, activation, dtype, out_features, rng):
    """A Linear with a few outputs (a discriminator's last layer) over many rows: the
    bias is per output feature, the result row-major and the same for any thread count."""
    x = rng.standard_normal((37, 611)).astype(dtype)
    w = rng.standard_normal((out_features, 611)).astype(dtype)
    b = rng.standard_normal(out_features).astype(dtype)
    outs = _for_thread_counts(monkeypatch, lambda: F.linear(x, w, b, activation=activation, negative_slope=0.2))
    expected = x.astype(np.float64) @ w.T + b
    if activation == "relu":
        expected = np.maximum(expected, 0)
    elif activation == "leaky_relu":
        expected = np.where(expected < 0, 0.2 * expected, expected)
    for y in outs:
        assert y.shape == (37, out_features) and y.flags.c_contiguous
        assert np.array_equal(y, outs[0])
    np.testing.assert_allclose(outs[0], expected, **_tol(dtype, 611))


# Every epilogue the micro-kernels finish a tile with (compiled once per
# alpha 1 / beta 0 or 1, bias mode and activation, and once in general), on
# whole and partial tiles, eight-row and narrow kernels, one and two depth blocks.
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (1.0, 1.0), (2.0, 0.0), (1.0, 0.5)])
@pytest.mark.parametrize("bias_mode", [0, 1, 2])
@pytest.mark.parametrize("act", [0, 1, 2])
@pytest.mark.parametrize("m,n,k", [(16, 64, 7), (11, 45, 600), (3, 70, 5)])
def test_gemm_epilogue_every_mode(isa, dtype, alpha, beta, bias_mode, act, m, n, k, rng):
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    bias = rng.standard_normal(m if bias_mode == 1 else n).astype(dtype) if bias_mode else None
    c = c0.copy()
    _gemm.gemm(a, b, c, alpha=alpha, beta=beta, bias=bias, bias_mode=bias_mode, act=act,
               slope=0.25, n_threads=2)
    expected = alpha * (a.astype(np.float64) @ b) + beta * c0
    if bias_mode == 1:
        expected += bias[:, None]
    elif bias_mode == 2:
        expected += bias[None, :]
    if act == 1:
        expected = np.maximum(expected, 0)
    elif act == 2:
        expected = np.where(expected < 0, 0.25 * expected, expected)
    np.testing.assert_allclose(c, expected, **_tol(dtype, k))


def test_linear_backward_matches_torch(torch, rng):
    x = rng.standard_normal((17, 30))
    w = rng.standard_normal((11, 30))
    b = rng.standard_normal(11)
    dy = rng.standard_normal((17, 11))
    xt, wt, bt = (torch.tensor(v, requires_grad=True) for v in (x, w, b))
    torch.nn.functional.linear(xt, wt, bt).backward(torch.tensor(dy))
    gx, gw, gb = F.linear_backward(dy, x, w)
    np.testing.assert_allclose(F.linear(x, w, b), torch.nn.functional.linear(xt, wt, bt).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert F.linear_backward(dy, x, w, need_grad_input=False)[0] is None


def test_matmul_empty_and_k0():
    assert F.matmul(np.zeros((0, 3)), np.zeros((3, 4))).shape == (0, 4)
    np.testing.assert_array_equal(F.matmul(np.ones((2, 0)), np.ones((0, 3))), np.zeros((2, 3)))


def test_denormals_flushed_do_not_change_normal_results(rng):
    a = rng.standard_normal((8, 8)).astype(np.float32)
    b = np.full((8, 8), 1e-41, dtype=np.float32)   # denormal inputs are treated as zero
    assert np.all(F.matmul(a, b) == 0)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: F.matmul(np.ones((2, 3)), np.ones((4, 2))), ValueError, "rows"),
    (lambda: F.matmul(np.ones(3), np.ones((3, 2))), ValueError, "a must be 2-D"),
    (lambda: F.matmul(np.ones((2, 3)), np.ones((3, 2, 1))), ValueError, "b must be 2-D"),
    (lambda: F.matmul(np.ones((2, 3), np.float32), np.ones((3, 2))), TypeError, "b must have dtype float32"),
    (lambda: F.matmul(np.ones((2, 3), int), np.ones((3, 2), int)), TypeError, "a must have dtype"),
    (lambda: F.matmul(np.ones((2, 3), complex), np.ones((3, 2))), TypeError, "a must have dtype"),
    (lambda: F.matmul(np.ones((2, 3), bool), np.ones((3, 2))), TypeError, "a must have dtype"),
    (lambda: F.matmul(np.ones((2, 3), object), np.ones((3, 2))), TypeError, "a must have dtype"),
    (lambda: F.matmul("abc", np.ones((3, 2))), TypeError, "a must have dtype"),
    (lambda: F.linear(np.ones((2, 3)), np.ones((4, 5))), ValueError, "weight"),
    (lambda: F.linear(np.ones((2, 3)), np.ones((4, 3)), np.ones(5)), ValueError, "bias"),
    (lambda: F.linear(np.ones((2, 3)), np.ones((4, 3)), activation="gelu"), ValueError, "activation"),
    (lambda: F.linear(np.ones((2, 3)), np.ones((4, 3)), negative_slope=None), TypeError, "negative_slope"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("n", [0, -1, 1.5, "2", None, True])
def test_invalid_thread_counts(n):
    with pytest.raises(ValueError):
        fastcnn.set_num_threads(n)
    with pytest.raises(ValueError):
        with fastcnn.threads(n):
            pass


def test_threads_context_restores():
    fastcnn.set_num_threads(2)
    with fastcnn.threads(1):
        assert fastcnn.get_num_threads() == 1
    assert fastcnn.get_num_threads() == 2


def test_forcing_an_unsupported_isa_is_refused():
    unsupported = [i for i in ("avx512", "avx2", "generic") if i not in ISAS]
    for name in unsupported:
        with pytest.raises(ValueError, match="not supported"):
            fastcnn.set_isa(name)
    with pytest.raises(ValueError):
        fastcnn.set_isa("sse9")
    assert fastcnn.get_isa() == ISAS[0]


def test_linear_checks_are_remembered_by_shapes_and_types(rng):
    """A repeated Linear call skips its checks; one that differs in a shape, a dtype, the
    bias or the activation is checked again."""
    x = rng.standard_normal((3, 5))
    w = rng.standard_normal((4, 5))
    b = rng.standard_normal(4)
    for _ in range(2):
        np.testing.assert_allclose(F.linear(x, w, b, "relu"), np.maximum(x @ w.T + b, 0), rtol=1e-12)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        F.linear(x, w, np.ones(3), "relu")
    with pytest.raises(TypeError, match="bias must have dtype float64"):
        F.linear(x, w, b.astype(np.float32), "relu")
    with pytest.raises(ValueError, match="activation"):
        F.linear(x, w, b, "tanh")
    with pytest.raises(ValueError, match="activation"):
        F.linear(x, w, b, 1)
    with pytest.raises(TypeError, match="weight must have dtype float64"):
        F.linear(x, w.astype(np.float32), b, "relu")
    with pytest.raises(ValueError, match="features"):
        F.linear(x, w[:, :4].copy(), b, "relu")
    # a strided bias is made contiguous
    b2 = np.repeat(b, 2)[::2]
    np.testing.assert_allclose(F.linear(x, w, b2, "relu"), np.maximum(x @ w.T + b, 0), rtol=1e-12)
    np.testing.assert_allclose(F.linear(x, w, b2, "relu"), np.maximum(x @ w.T + b, 0), rtol=1e-12)


# Thin products (rows no more than one kernel tile) read a row-major B in place where its
# columns fill whole panels (8 to 64 lanes, by instruction set): every epilogue, depths of
# one and of several blocks, B at the very end of its memory.
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("n,k", [(64, 1), (128, 7), (192, 600), (256, 1100), (96, 33)])
def test_thin_products_read_b_in_place(isa, dtype, m, n, k, rng):
    a = rng.standard_normal((m, k)).astype(dtype)
    store = rng.standard_normal(k * n + 5).astype(dtype)
    b = store[5:].reshape(k, n)                # ends where its allocation ends
    c0 = rng.standard_normal((m, n)).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype)
    outs = []
    for nt in (1, 2, 3):
        c = c0.copy()
        _gemm.gemm(a, b, c, alpha=1.5, beta=0.5, bias=bias, bias_mode=2, act=2, slope=0.25, n_threads=nt)
        outs.append(c)
    expected = 1.5 * (a.astype(np.float64) @ b) + 0.5 * c0 + bias[None, :]
    expected = np.where(expected < 0, 0.25 * expected, expected)
    np.testing.assert_allclose(outs[0], expected, **_tol(dtype, k))
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])
    # the transposed operand of a Linear's weight gradient with one output feature
    g = rng.standard_normal((k, 1)).astype(dtype)
    gw = _gemm.gemm(g, b, np.empty((1, n), dtype), True, False, n_threads=2)
    np.testing.assert_allclose(gw, g.T.astype(np.float64) @ b, **_tol(dtype, k))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 5), (8, 8), (4, 4), (9, 14), (32, 14), (17, 33), (16, 16),
                                       (64, 7), (5, 70), (31, 1), (1, 40)])
def test_transpose_in_blocks_and_edges(isa, dtype, rows, cols, rng):
    """The channels-last transposes: whole blocks and every kind of edge, between strided
    rows, writing nothing outside the result."""
    big = rng.standard_normal((rows + 3, cols + 5)).astype(dtype)
    src = big[1:rows + 1, 2:cols + 2]
    out = np.full((cols + 2, rows + 7), np.nan, dtype=dtype)
    dst = out[1:cols + 1, 3:rows + 3]
    _gemm.transpose_into(src, dst)
    np.testing.assert_array_equal(dst, src.T)
    mask = np.ones(out.shape, bool)
    mask[1:cols + 1, 3:rows + 3] = False
    assert np.isnan(out[mask]).all()


# Products of fewer row blocks than threads pack A together (each block once,
# the micro-panels shared out) and take their tasks from a shared counter:
# one to several row blocks, several depth blocks, partial micro-panels, A
# transposed or not, for 1 to 4 threads.
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("m", [5, 64, 150, 301])
@pytest.mark.parametrize("ta", [0, 1])
def test_few_row_blocks_same_for_any_thread_count(isa, dtype, m, ta, rng):
    n, k = 211, 1000
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype)
    outs = []
    for nt in (1, 2, 3, 4):
        c = c0.copy()
        _gemm.gemm(a, b, c, ta, 0, alpha=0.5, beta=1.0, bias=bias, bias_mode=2, act=1, n_threads=nt)
        outs.append(c)
    expected = 0.5 * ((a.T if ta else a).astype(np.float64) @ b) + c0 + bias[None, :]
    np.testing.assert_allclose(outs[0], np.maximum(expected, 0), **_tol(dtype, k))
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])


# A row-major B read once is read in place: products of one block of rows and
# one block of depth (a Linear's input and weight gradients), B at the very end
# of its memory, for 1 to 3 threads; and products of several row blocks, which
# pack it.
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("m,n,k", [(64, 512, 128), (37, 96, 300), (9, 160, 64), (128, 64, 17), (300, 256, 100)])
def test_one_block_products_read_b_in_place(isa, dtype, m, n, k, rng):
    a = rng.standard_normal((m, k)).astype(dtype)
    store = rng.standard_normal(k * n + 3).astype(dtype)
    b = store[3:].reshape(k, n)                # ends where its allocation ends
    bias = rng.standard_normal(n).astype(dtype)
    outs = []
    for nt in (1, 2, 3):
        c = np.empty((m, n), dtype)
        _gemm.gemm(a, b, c, bias=bias, bias_mode=2, act=1, n_threads=nt)
        outs.append(c)
    expected = np.maximum(a.astype(np.float64) @ b + bias[None, :], 0)
    np.testing.assert_allclose(outs[0], expected, **_tol(dtype, k))
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])
