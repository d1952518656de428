"""Randomised differential tests: the kernels against the naive NumPy reference.

Each op draws its cases from a seeded generator (shapes, strides, paddings,
dilations, groups, ceil_mode, dtypes, thread counts and memory layouts:
C-order, Fortran-order, non-contiguous slices, negative strides, permuted
strides, read-only arrays) and compares the forward result and every
gradient with ``tests/reference.py``. Inputs must come back unchanged, and a
tenth of the cases are re-run with another thread count and must agree bit
for bit.

Profiles:
  quick (default)               FASTCNN_FUZZ_CASES unset: a few hundred cases per op
  long                          FASTCNN_FUZZ_CASES=10000 python -m pytest tests/test_fuzz.py
  another stream of cases       FASTCNN_FUZZ_SEED=<int>

A failure prints the op, the case number and its parameters; re-run one case
with FASTCNN_FUZZ_ONLY=<case number>. The per-op case counts are printed at
the end of the run (and recorded as junit properties).
"""
import os

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F

import reference as ref

QUICK = {"conv2d": 250, "conv_transpose2d": 250, "max_pool2d": 300, "avg_pool2d": 300,
         "batch_norm": 400, "matmul": 400}
CASES = int(os.environ.get("FASTCNN_FUZZ_CASES", "0") or 0)
SEED = int(os.environ.get("FASTCNN_FUZZ_SEED", "20240") or 20240)
ONLY = os.environ.get("FASTCNN_FUZZ_ONLY")
MAX_REPORTED = 5

COUNTS = {}


def n_cases(op):
    return CASES if CASES > 0 else QUICK[op]


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    if not COUNTS:
        return
    line = "fuzz cases: " + ", ".join(f"{op} {c['cases']} ({c['mismatches']} mismatches)"
                                      for op, c in COUNTS.items())
    tr = request.config.pluginmanager.getplugin("terminalreporter")
    if tr is not None:
        tr.write_line("")
        tr.write_line(line)
    else:  # pragma: no cover
        print(line)


# ---------------------------------------------------------------------------
# layouts


LAYOUTS = ("c", "f", "slice", "neg", "perm", "readonly", "readonly_slice", "readonly_neg")


def layout(a, kind, rng):
    """An array equal to ``a`` with the memory layout ``kind``."""
    if kind == "c":
        return np.ascontiguousarray(a)
    if kind == "f":
        return np.asfortranarray(a)
    if kind in ("slice", "readonly_slice"):
        # every axis taken with a step of 1..3 from a larger buffer
        steps = tuple(int(rng.integers(1, 4)) for _ in range(a.ndim))
        big = np.full(tuple(max(1, s * d) for s, d in zip(a.shape, steps)), np.nan if a.dtype.kind == "f" else -7, dtype=a.dtype)
        v = big[tuple(slice(0, s * d, d) for s, d in zip(a.shape, steps))]
        v[...] = a
        if kind == "readonly_slice":
            v.flags.writeable = False
        return v
    if kind == "neg":
        axes = [i for i in range(a.ndim) if rng.random() < 0.7] or [0]
        flip = tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(a.ndim))
        return np.ascontiguousarray(a[flip])[flip]
    if kind == "perm":
        perm = rng.permutation(a.ndim)
        inv = np.argsort(perm)
        return np.ascontiguousarray(a.transpose(perm)).transpose(inv)
    if kind == "readonly":
        v = a.copy()
        v.flags.writeable = False
        return v
    if kind == "readonly_neg":
        v = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
        v.flags.writeable = False
        return v
    raise AssertionError(kind)


def any_layout(a, rng):
    return layout(a, LAYOUTS[int(rng.integers(len(LAYOUTS)))] if rng.random() < 0.6 else "c", rng)


def pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


TOL = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-9}


def close(actual, expected, dtype, what, scale=None):
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape} != {expected.shape}")
    if actual.dtype != np.dtype(dtype):
        raise AssertionError(f"{what}: dtype {actual.dtype} != {np.dtype(dtype)}")
    if expected.size == 0:
        return
    tol = TOL[np.dtype(dtype)]
    if scale is None:
        scale = max(1.0, float(np.abs(expected).max()))
    with np.errstate(invalid="ignore"):
        err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        bad = ~((err <= tol * scale + tol * np.abs(expected)) | (actual == expected))
    if bad.any():
        i = np.unravel_index(int(np.argmax(np.where(bad, err, -1))), err.shape)
        raise AssertionError(f"{what}: {int(bad.sum())} of {err.size} elements differ; worst at {i}: "
                             f"{actual[i]!r} vs {expected[i]!r} (tol {tol} x scale {scale:.3g})")


def unchanged(arrays):
    """Snapshot of the inputs; call the returned function to check nothing wrote into them."""
    snap = [(name, a, np.array(a, copy=True)) for name, a in arrays.items() if isinstance(a, np.ndarray)]

    def check():
        for name, a, b in snap:
            if not np.array_equal(a, b, equal_nan=True):
                raise AssertionError(f"input {name} was modified")
    return check


def run_cases(op, gen_and_check):
    n = n_cases(op)
    only = None if ONLY is None else int(ONLY)
    failures = []
    ran = 0
    for i in range(n):
        if only is not None and i != only:
            continue
        rng = np.random.default_rng([SEED, sum(map(ord, op)), i])
        params = {}
        try:
            gen_and_check(rng, params)
        except AssertionError as e:
            failures.append(f"{op} case {i} {params}: {e}")
        except Exception as e:  # an unexpected error is a mismatch too
            failures.append(f"{op} case {i} {params}: {type(e).__name__}: {e}")
        ran += 1
    COUNTS[op] = {"cases": ran, "mismatches": len(failures)}
    if failures:
        shown = "\n".join(failures[:MAX_REPORTED])
        more = f"\n... and {len(failures) - MAX_REPORTED} more" if len(failures) > MAX_REPORTED else ""
        pytest.fail(f"{len(failures)} of {ran} {op} cases disagree with the reference "
                    f"(FASTCNN_FUZZ_SEED={SEED}):\n{shown}{more}", pytrace=False)
    return ran


def threads_for_case(rng):
    return int(rng.integers(1, 4))


def rerun_bitwise(rng, fn, results, params):
    """A tenth of the cases: recompute with another thread count; results must be identical."""
    if rng.random() >= 0.1:
        return
    nt = params["threads"] % 3 + 1
    with fastcnn.threads(nt):
        again = fn()
    for a, b in zip(results, again):
        if a is None:
            continue
        if not np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True):
            raise AssertionError(f"results differ between {params['threads']} and {nt} threads")


def act_ref(y, activation, slope):
    if activation == "relu":
        return np.maximum(y, 0)
    if activation == "leaky_relu":
        return np.where(y < 0, y * slope, y)
    return y


# ---------------------------------------------------------------------------
# convolution


def _conv_case(rng, params):
    dtype = pick(rng, [np.float32, np.float64])
    groups = pick(rng, [1, 1, 1, 2, 3, 4])
    Cg, Kg = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    if rng.random() < 0.05:  # wider channels: several GEMM micro-tiles
        Cg, Kg = int(rng.integers(5, 20)), int(rng.integers(5, 40))
    N = 0 if rng.random() < 0.04 else int(rng.integers(1, 4))
    R, S = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    dilation = (int(rng.integers(1, 4)), int(rng.integers(1, 4))) if rng.random() < 0.4 else (1, 1)
    if rng.random() < 0.15 and stride == (1, 1):
        padding = "same"
        th, tw = dilation[0] * (R - 1), dilation[1] * (S - 1)
        pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    else:
        padding = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
        pads = padding
    pt, pb, pl, pr = ref._pads(pads)
    need_h = max(1, dilation[0] * (R - 1) + 1 - pt - pb)
    need_w = max(1, dilation[1] * (S - 1) + 1 - pl - pr)
    H = need_h + int(rng.integers(0, 9))
    W = need_w + int(rng.integers(0, 9))
    params.update(dtype=np.dtype(dtype).name, N=N, C=Cg * groups, H=H, W=W, K=Kg * groups, R=R, S=S,
                  stride=stride, padding=padding, dilation=dilation, groups=groups)
    return dtype, groups, N, Cg, Kg, R, S, H, W, stride, padding, pads, dilation


def check_conv2d(rng, params):
    dtype, groups, N, Cg, Kg, R, S, H, W, stride, padding, pads, dilation = _conv_case(rng, params)
    C, K = Cg * groups, Kg * groups
    x = rng.uniform(-1, 1, (N, C, H, W)).astype(dtype)
    w = rng.uniform(-1, 1, (K, Cg, R, S)).astype(dtype)
    b = rng.uniform(-1, 1, K).astype(dtype) if rng.random() < 0.5 else None
    activation = pick(rng, [None, None, "relu", "leaky_relu"])
    slope = float(rng.uniform(0, 0.5))
    unbatched = N == 1 and rng.random() < 0.2
    nt = threads_for_case(rng)
    params.update(bias=b is not None, activation=activation, unbatched=unbatched, threads=nt)
    y_ref = act_ref(ref.conv2d(x, w, b, stride, pads, dilation, groups).astype(np.float64), activation, slope)
    P, Q = y_ref.shape[2:]
    g = rng.uniform(-1, 1, (N, K, P, Q)).astype(dtype)
    gx_ref, gw_ref, gb_ref = ref.conv2d_backward(g, x, w, stride, pads, dilation, groups)
    xl = any_layout(x[0] if unbatched else x, rng)
    wl, gl = any_layout(w, rng), any_layout(g[0] if unbatched else g, rng)
    bl = None if b is None else any_layout(b, rng)
    need_gx = rng.random() < 0.85
    params.update(need_grad_input=need_gx)
    check = unchanged({"x": xl, "weight": wl, "bias": bl, "grad_out": gl})

    def run():
        y = F.conv2d(xl, wl, bl, stride, padding, dilation, groups, activation=activation,
                     negative_slope=slope)
        if padding == "same":  # the backward takes explicit padding (symmetric only)
            if pads[0] != pads[1] or pads[2] != pads[3]:
                return y, None, None, None
            pad = (pads[0], pads[2])
        else:
            pad = padding
        gx, gw, gb = F.conv2d_backward(gl, xl, wl, stride, pad, dilation, groups, need_grad_input=need_gx)
        return y, gx, gw, gb

    with fastcnn.threads(nt):
        y, gx, gw, gb = run()
    check()
    close(y, y_ref[0] if unbatched else y_ref, dtype, "forward")
    if gw is not None:
        if need_gx:
            close(gx, gx_ref[0] if unbatched else gx_ref, dtype, "grad_x")
        else:
            assert gx is None, "grad_x must be None when need_grad_input=False"
        close(gw, gw_ref, dtype, "grad_weight")
        close(gb, gb_ref, dtype, "grad_bias")
    rerun_bitwise(rng, run, (y, gx, gw, gb), params)


def check_conv_transpose2d(rng, params):
    dtype = pick(rng, [np.float32, np.float64])
    groups = pick(rng, [1, 1, 1, 2, 3])
    Cig, Cog = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    N = 0 if rng.random() < 0.04 else int(rng.integers(1, 4))
    R, S = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    dilation = (int(rng.integers(1, 4)), int(rng.integers(1, 4))) if rng.random() < 0.4 else (1, 1)
    padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    op = tuple(int(rng.integers(0, max(stride[i], dilation[i]))) if rng.random() < 0.4 else 0
               for i in range(2))
    sizes = []
    for i in range(2):
        k = (R, S)[i]
        # output (H-1)*s - 2p + d(k-1) + op + 1 >= 1
        h = 1
        while (h - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k - 1) + op[i] + 1 < 1:
            h += 1
        sizes.append(h + int(rng.integers(0, 6)))
    H, W = sizes
    C, Co = Cig * groups, Cog * groups
    params.update(dtype=np.dtype(dtype).name, N=N, C_in=C, H=H, W=W, C_out=Co, R=R, S=S, stride=stride,
                  padding=padding, output_padding=op, dilation=dilation, groups=groups)
    x = rng.uniform(-1, 1, (N, C, H, W)).astype(dtype)
    w = rng.uniform(-1, 1, (C, Cog, R, S)).astype(dtype)
    b = rng.uniform(-1, 1, Co).astype(dtype) if rng.random() < 0.5 else None
    nt = threads_for_case(rng)
    unbatched = N == 1 and rng.random() < 0.2
    params.update(bias=b is not None, threads=nt, unbatched=unbatched)
    y_ref = ref.conv_transpose2d(x, w, b, stride, padding, op, groups, dilation)
    g = rng.uniform(-1, 1, y_ref.shape).astype(dtype)
    gx_ref, gw_ref, gb_ref = ref.ref_conv_transpose2d_backward(g, x, w, stride, padding, dilation, groups)
    xl = any_layout(x[0] if unbatched else x, rng)
    wl, gl = any_layout(w, rng), any_layout(g[0] if unbatched else g, rng)
    bl = None if b is None else any_layout(b, rng)
    check = unchanged({"x": xl, "weight": wl, "bias": bl, "grad_out": gl})

    def run():
        y = F.conv_transpose2d(xl, wl, bl, stride, padding, op, groups, dilation)
        gx, gw, gb = F.conv_transpose2d_backward(gl, xl, wl, stride, padding, op, groups, dilation)
        return y, gx, gw, gb

    with fastcnn.threads(nt):
        y, gx, gw, gb = run()
    check()
    close(y, y_ref[0] if unbatched else y_ref, dtype, "forward")
    close(gx, gx_ref[0] if unbatched else gx_ref, dtype, "grad_x")
    close(gw, gw_ref, dtype, "grad_weight")
    close(gb, gb_ref, dtype, "grad_bias")
    rerun_bitwise(rng, run, (y, gx, gw, gb), params)


# ---------------------------------------------------------------------------
# pooling


def _pool_geometry(rng, dilated):
    k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    stride = None if rng.random() < 0.3 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    s = k if stride is None else stride
    p = (int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1)))
    d = (int(rng.integers(1, 4)), int(rng.integers(1, 4))) if dilated and rng.random() < 0.4 else (1, 1)
    ceil_mode = bool(rng.random() < 0.4)
    sizes = []
    for i in range(2):
        h = 1
        while ref._pool_out(h, k[i], s[i], p[i], d[i], ceil_mode) < 1:
            h += 1
        sizes.append(h + int(rng.integers(0, 8)))
    if rng.random() < 0.1:  # the 2x2 / stride 2 fast path
        k, stride, s, p, d = (2, 2), (2, 2), (2, 2), (0, 0), (1, 1)
        sizes = [int(rng.integers(2, 12)), int(rng.integers(2, 12))]
    return k, stride, s, p, d, ceil_mode, sizes


def check_max_pool2d(rng, params):
    dtype = pick(rng, [np.float32, np.float64])
    k, stride, s, p, d, ceil_mode, (H, W) = _pool_geometry(rng, True)
    N = 0 if rng.random() < 0.03 else int(rng.integers(1, 4))
    C = 0 if rng.random() < 0.03 else int(rng.integers(1, 4))
    three_d = rng.random() < 0.15
    nt = threads_for_case(rng)
    params.update(dtype=np.dtype(dtype).name, N=N, C=C, H=H, W=W, kernel_size=k, stride=stride, padding=p,
                  dilation=d, ceil_mode=ceil_mode, three_d=three_d, threads=nt)
    # distinct values: the argmax is unique, so indices compare exactly
    x = (rng.permutation(N * C * H * W).reshape(N, C, H, W) / max(1, N * C * H * W) - 0.5).astype(dtype)
    y_ref, idx_ref = ref.ref_max_pool2d(x, k, s, p, d, ceil_mode)
    # A window lying wholly in the padding (possible with dilation) gives -inf and, as in
    # PyTorch, the index of its first tap clipped into range, which may lie outside the
    # plane (the backward then ignores it) or inside it (the backward scatters there).
    inside = np.isfinite(y_ref)
    g = rng.uniform(-1, 1, y_ref.shape).astype(dtype)
    shape = x.shape
    if three_d:
        x, y_ref, idx_ref, g, inside = (a.reshape((-1,) + a.shape[2:]) for a in (x, y_ref, idx_ref, g, inside))
    xl, gl = any_layout(x, rng), any_layout(g, rng)
    check = unchanged({"x": xl, "grad_out": gl})

    def run():
        y, idx = F.max_pool2d(xl, k, stride, p, d, ceil_mode, return_indices=True)
        y2 = F.max_pool2d(xl, k, stride, p, d, ceil_mode)
        gx = F.max_pool2d_backward(gl, any_layout(idx, rng), x.shape)
        return y, idx, y2, gx

    with fastcnn.threads(nt):
        y, idx, y2, gx = run()
    check()
    close(y, y_ref, dtype, "forward")
    if not np.array_equal(y, y2):
        raise AssertionError("forward without indices differs from forward with indices")
    if idx.dtype != np.int64 or not np.array_equal(idx[inside], idx_ref[inside]):
        raise AssertionError(f"indices differ from the reference ({idx.dtype})")
    plane = x.shape[-2] * x.shape[-1]
    used = np.where(inside, idx_ref, idx).reshape(y_ref.shape if not three_d else (shape[:2] + y_ref.shape[1:]))
    valid = (used >= 0) & (used < plane)
    g4 = g.reshape(used.shape)
    gx_ref = ref.ref_max_pool2d_backward(np.where(valid, g4, 0).astype(dtype), np.where(valid, used, 0), shape)
    close(gx, gx_ref.reshape(gx.shape), dtype, "grad_x")
    rerun_bitwise(rng, run, (y, idx, y2, gx), params)


def check_avg_pool2d(rng, params):
    dtype = pick(rng, [np.float32, np.float64])
    k, stride, s, p, _, ceil_mode, (H, W) = _pool_geometry(rng, False)
    count_include_pad = bool(rng.random() < 0.5)
    N = 0 if rng.random() < 0.03 else int(rng.integers(1, 4))
    C = 0 if rng.random() < 0.03 else int(rng.integers(1, 4))
    three_d = rng.random() < 0.15
    nt = threads_for_case(rng)
    params.update(dtype=np.dtype(dtype).name, N=N, C=C, H=H, W=W, kernel_size=k, stride=stride, padding=p,
                  ceil_mode=ceil_mode, count_include_pad=count_include_pad, three_d=three_d, threads=nt)
    x = rng.uniform(-1, 1, (N, C, H, W)).astype(dtype)
    y_ref = ref.ref_avg_pool2d(x, k, s, p, ceil_mode, count_include_pad)
    g = rng.uniform(-1, 1, y_ref.shape).astype(dtype)
    gx_ref = ref.ref_avg_pool2d_backward(g, x.shape, k, s, p, ceil_mode, count_include_pad)
    if three_d:
        x, y_ref, g, gx_ref = (a.reshape((-1,) + a.shape[2:]) for a in (x, y_ref, g, gx_ref))
    xl, gl = any_layout(x, rng), any_layout(g, rng)
    check = unchanged({"x": xl, "grad_out": gl})

    def run():
        y = F.avg_pool2d(xl, k, stride, p, ceil_mode, count_include_pad)
        gx = F.avg_pool2d_backward(gl, x.shape, k, stride, p, ceil_mode, count_include_pad)
        return y, gx

    with fastcnn.threads(nt):
        y, gx = run()
    check()
    close(y, y_ref, dtype, "forward")
    close(gx, gx_ref, dtype, "grad_x")
    rerun_bitwise(rng, run, (y, gx), params)


# ---------------------------------------------------------------------------
# batch norm


def check_batch_norm(rng, params):
    dtype = pick(rng, [np.float32, np.float64])
    four_d = rng.random() < 0.6
    C = int(rng.integers(1, 6))
    if four_d:
        shape = (int(rng.integers(1, 4)), C, int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    else:
        shape = (int(rng.integers(1, 9)), C)
    training = bool(rng.random() < 0.6)
    M = int(np.prod(shape)) // C
    if training and M < 2:
        shape = (shape[0] + 1,) + shape[1:]
        M = int(np.prod(shape)) // C
    affine = bool(rng.random() < 0.6)
    tracked = (not training) or rng.random() < 0.7
    eps = float(pick(rng, [1e-5, 1e-3, 0.1]))
    momentum = float(rng.uniform(0, 1))
    nt = threads_for_case(rng)
    params.update(dtype=np.dtype(dtype).name, shape=shape, training=training, affine=affine,
                  running_stats=tracked, eps=eps, momentum=round(momentum, 4), threads=nt)
    offset = rng.uniform(-3, 3, (1, C) + (1,) * (len(shape) - 2))
    x = (rng.uniform(-1, 1, shape) * rng.uniform(0.1, 3) + offset).astype(dtype)
    w = rng.uniform(0.5, 2, C).astype(dtype) if affine else None
    b = rng.uniform(-1, 1, C).astype(dtype) if affine else None
    rm = rng.uniform(-1, 1, C).astype(dtype) if tracked else None
    rv = rng.uniform(0.2, 2, C).astype(dtype) if tracked else None
    g = rng.uniform(-1, 1, shape).astype(dtype)
    xl, gl = any_layout(x, rng), any_layout(g, rng)
    wl = None if w is None else any_layout(w, rng)
    bl = None if b is None else any_layout(b, rng)
    check = unchanged({"x": xl, "weight": wl, "bias": bl, "grad_out": gl})

    def run():
        rm_ = None if rm is None else rm.copy()
        rv_ = None if rv is None else rv.copy()
        y, mean, invstd = F.batch_norm(xl, rm_, rv_, wl, bl, training, momentum, eps)
        gx, gw, gb = F.batch_norm_backward(gl, xl, wl, mean, invstd, training)
        return y, mean, invstd, rm_, rv_, gx, gw, gb

    with fastcnn.threads(nt):
        y, mean, invstd, rm_new, rv_new, gx, gw, gb = run()
    check()
    if training:
        y_ref, mean_ref, var_ref = ref.ref_batch_norm_train(x, w, b, eps)
        invstd_ref = 1.0 / np.sqrt(var_ref + eps)
        close(mean, mean_ref.astype(dtype), dtype, "save_mean")
        close(invstd, invstd_ref.astype(dtype), dtype, "save_invstd")
        if tracked:
            close(rm_new, ((1 - momentum) * rm + momentum * mean_ref).astype(dtype), dtype, "running_mean")
            close(rv_new, ((1 - momentum) * rv + momentum * var_ref * M / (M - 1)).astype(dtype), dtype,
                  "running_var")
        gx_ref, gw_ref, gb_ref = ref.ref_batch_norm_backward(g, x, w, mean_ref, invstd_ref, True)
        # grad_x cancels three terms of size |g| * w * invstd: scale the tolerance with them
        gscale = max(1.0, float(np.abs(g).max() * (1 if w is None else np.abs(w).max()) * invstd_ref.max()) * 3)
    else:
        y_ref = ref.ref_batch_norm_eval(x, rm.astype(np.float64), rv.astype(np.float64), w, b, eps)
        invstd_ref = 1.0 / np.sqrt(rv.astype(np.float64) + eps)
        gx_ref, gw_ref, gb_ref = ref.ref_batch_norm_backward(g, x, w, rm.astype(np.float64), invstd_ref, False)
        gscale = None
    close(y, y_ref, dtype, "forward")
    close(gx, gx_ref, dtype, "grad_x", scale=gscale)
    if affine:
        close(gw, gw_ref.astype(dtype), dtype, "grad_weight", scale=max(1.0, float(np.abs(gw_ref).max()), M ** 0.5))
        close(gb, gb_ref.astype(dtype), dtype, "grad_bias", scale=max(1.0, float(np.abs(gb_ref).max()), M ** 0.5))
    elif gw is not None or gb is not None:
        raise AssertionError("grad_weight/grad_bias must be None without affine parameters")
    rerun_bitwise(rng, run, (y, mean, invstd, rm_new, rv_new, gx, gw, gb), params)


# ---------------------------------------------------------------------------
# matmul and linear


def _dim(rng):
    r = rng.random()
    if r < 0.04:
        return 0
    if r < 0.7:
        return int(rng.integers(1, 20))
    return int(rng.integers(20, 80))


def check_matmul(rng, params):
    dtype = pick(rng, [np.float32, np.float64])
    m, n, k = _dim(rng), _dim(rng), _dim(rng)
    if rng.random() < 0.05:
        k = int(rng.integers(250, 420))  # more than one KC block
    elif rng.random() < 0.01:
        n = int(rng.integers(3000, 3200))  # more than one NC block
        m, k = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    nt = threads_for_case(rng)
    params.update(dtype=np.dtype(dtype).name, m=m, n=n, k=k, threads=nt)
    a = rng.uniform(-1, 1, (m, k)).astype(dtype)
    b = rng.uniform(-1, 1, (k, n)).astype(dtype)
    g = rng.uniform(-1, 1, (m, n)).astype(dtype)
    bias = rng.uniform(-1, 1, n).astype(dtype)
    activation = pick(rng, [None, "relu", "leaky_relu"])
    slope = float(rng.uniform(0, 0.5))
    al, bl, gl = any_layout(a, rng), any_layout(b, rng), any_layout(g, rng)
    wl = any_layout(np.ascontiguousarray(b.T), rng)  # linear's weight (out, in)
    biasl = any_layout(bias, rng)
    params.update(activation=activation)
    check = unchanged({"a": al, "b": bl, "grad_out": gl, "weight": wl, "bias": biasl})

    def run():
        c = F.matmul(al, bl)
        ga = F.matmul(gl, bl.T)          # gradients of a @ b: transposed (strided) operands
        gb = F.matmul(al.T, gl)
        y = F.linear(al, wl, biasl, activation=activation, negative_slope=slope)
        lx, lw, lb = F.linear_backward(gl, al, wl)
        return c, ga, gb, y, lx, lw, lb

    with fastcnn.threads(nt):
        c, ga, gb, y, lx, lw, lb = run()
    check()
    a64, b64, g64 = a.astype(np.float64), b.astype(np.float64), g.astype(np.float64)
    scale = max(1.0, k ** 0.5)
    close(c, ref.matmul(a64, b64), dtype, "matmul", scale=scale)
    close(ga, ref.matmul(g64, b64.T), dtype, "grad_a", scale=max(1.0, n ** 0.5))
    close(gb, ref.matmul(a64.T, g64), dtype, "grad_b", scale=max(1.0, m ** 0.5))
    close(y, act_ref(ref.matmul(a64, b64) + bias, activation, slope), dtype, "linear", scale=scale)
    close(lx, ref.matmul(g64, b64.T), dtype, "linear grad_x", scale=max(1.0, n ** 0.5))
    close(lw, ref.matmul(g64.T, a64), dtype, "linear grad_weight", scale=max(1.0, m ** 0.5))
    close(lb, g64.sum(axis=0), dtype, "linear grad_bias", scale=max(1.0, m ** 0.5))
    rerun_bitwise(rng, run, (c, ga, gb, y, lx, lw, lb), params)


OPS = {
    "conv2d": check_conv2d,
    "conv_transpose2d": check_conv_transpose2d,
    "max_pool2d": check_max_pool2d,
    "avg_pool2d": check_avg_pool2d,
    "batch_norm": check_batch_norm,
    "matmul": check_matmul,
}


@pytest.mark.parametrize("op", list(OPS))
def test_fuzz_against_reference(op, record_property):
    ran = run_cases(op, OPS[op])
    record_property(f"fuzz_cases_{op}", ran)
    assert ran == (1 if ONLY is not None else n_cases(op))
