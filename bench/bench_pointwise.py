"""Micro-benchmarks of pooling, batch norm, activations, losses and resampling.

As pytest-benchmark (groups per op, parametrised by thread count), from the
repository root:

    python -m pytest bench/bench_pointwise.py

As a script, a table fastcnn vs PyTorch on the three reference problems and
two resamplings (same thread count for both, repetitions alternating between
the engines, medians reported):

    python bench/bench_pointwise.py [--threads 2] [--repeats 9]
"""
import argparse
import time

import numpy as np
import pytest

import fastcnn
from fastcnn import functional as F

THREADS = [1, 2]


# ---------------------------------------------------------------------------
# the three reference problems, each as fastcnn and PyTorch closures
# ---------------------------------------------------------------------------

def maxpool_case(rng):
    x = rng.standard_normal((64, 32, 28, 28), dtype=np.float32)

    def fc():
        y, idx = F.max_pool2d(x, 2, return_indices=True)
        return F.max_pool2d_backward(y, idx, x.shape)

    def torch_fn(torch):
        xt = torch.from_numpy(x).requires_grad_()

        def run():
            y = torch.nn.functional.max_pool2d(xt, 2)
            y.backward(y.detach())
            xt.grad = None
        return run
    return fc, torch_fn


def batchnorm_case(rng):
    x = rng.standard_normal((64, 64, 32, 32), dtype=np.float32)
    w = np.ones(64, np.float32)
    b = np.zeros(64, np.float32)
    rm = np.zeros(64, np.float32)
    rv = np.ones(64, np.float32)

    def fc():
        y, m, s = F.batch_norm(x, rm, rv, w, b, training=True)
        return F.batch_norm_backward(y, x, w, m, s)

    def torch_fn(torch):
        bn = torch.nn.BatchNorm2d(64)
        xt = torch.from_numpy(x).requires_grad_()

        def run():
            y = bn(xt)
            y.backward(y.detach())
            xt.grad = None
        return run
    return fc, torch_fn


def crossentropy_case(rng):
    x = rng.standard_normal((256, 10), dtype=np.float32)
    t = rng.integers(0, 10, 256)

    def fc():
        F.cross_entropy(x, t)
        return F.cross_entropy_backward(x, t)

    def torch_fn(torch):
        xt = torch.from_numpy(x).requires_grad_()
        tt = torch.from_numpy(t)

        def run():
            loss = torch.nn.functional.cross_entropy(xt, tt)
            loss.backward()
            xt.grad = None
        return run
    return fc, torch_fn


def interpolate_case(**kw):
    def make(rng):
        x = rng.standard_normal((64, 32, 28, 28), dtype=np.float32)

        def fc():
            y = F.interpolate(x, **kw)
            return F.interpolate_backward(y, x.shape, **kw)

        def torch_fn(torch):
            xt = torch.from_numpy(x).requires_grad_()

            def run():
                y = torch.nn.functional.interpolate(xt, **kw)
                y.backward(y.detach())
                xt.grad = None
            return run
        return fc, torch_fn
    return make


# name -> (case, the speed-up over PyTorch its issue asks for, or None)
CASES = {
    "max_pool2d 2x2 64x32x28x28 fwd+bwd": (maxpool_case, 10.0),
    "batch_norm2d 64x64x32x32 fwd+bwd": (batchnorm_case, 2.0),
    "cross_entropy 256x10 fwd+bwd": (crossentropy_case, 3.0),
    "interpolate nearest x1.5 64x32x28x28 fwd+bwd": (interpolate_case(scale_factor=1.5), None),
    "interpolate bilinear x2 64x32x28x28 fwd+bwd": (interpolate_case(scale_factor=2, mode="bilinear"), None),
}


# ---------------------------------------------------------------------------
# pytest-benchmark
# ---------------------------------------------------------------------------

@pytest.fixture
def at_threads(threads):
    with fastcnn.threads(threads):
        yield threads


per_threads = pytest.mark.parametrize("threads", THREADS)


@pytest.mark.benchmark(group="max_pool2d")
@per_threads
def bench_max_pool2d_fwd_bwd(benchmark, at_threads):
    fc, _ = maxpool_case(np.random.default_rng(0))
    benchmark(fc)


@pytest.mark.benchmark(group="avg_pool2d")
@per_threads
def bench_avg_pool2d_fwd_bwd(benchmark, at_threads):
    x = np.random.default_rng(0).standard_normal((64, 32, 28, 28), dtype=np.float32)
    benchmark(lambda: F.avg_pool2d_backward(F.avg_pool2d(x, 2), x.shape, 2))


@pytest.mark.benchmark(group="interpolate")
@pytest.mark.parametrize("mode,scale", [("nearest", 1.5), ("bilinear", 2)])
@per_threads
def bench_interpolate_fwd_bwd(benchmark, at_threads, mode, scale):
    fc, _ = interpolate_case(scale_factor=scale, mode=mode)(np.random.default_rng(0))
    benchmark(fc)


@pytest.mark.benchmark(group="batch_norm2d")
@per_threads
def bench_batch_norm_fwd_bwd(benchmark, at_threads):
    fc, _ = batchnorm_case(np.random.default_rng(0))
    benchmark(fc)


@pytest.mark.benchmark(group="batch_norm2d")
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@per_threads
def bench_batch_norm_activation_fwd_bwd(benchmark, at_threads, activation):
    # a DCGAN-28 discriminator's BatchNorm2d(128) with its activation, one pass each way
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 128, 7, 7), dtype=np.float32)
    g = rng.standard_normal(x.shape, dtype=np.float32)
    w, b = np.ones(128, np.float32), np.zeros(128, np.float32)

    def run():
        y, m, s = F.batch_norm(x, None, None, w, b, training=True, activation=activation, negative_slope=0.2)
        return F.batch_norm_backward(g, x, w, m, s, output=y, activation=activation, negative_slope=0.2)
    benchmark(run)


@pytest.mark.benchmark(group="relu")
@per_threads
def bench_relu_fwd_bwd(benchmark, at_threads):
    x = np.random.default_rng(0).standard_normal((64, 32, 28, 28), dtype=np.float32)
    benchmark(lambda: F.relu_backward(x, F.relu(x)))


@pytest.mark.benchmark(group="softmax")
@per_threads
def bench_softmax_fwd_bwd(benchmark, at_threads):
    x = np.random.default_rng(0).standard_normal((256, 1000), dtype=np.float32)
    benchmark(lambda: F.softmax_backward(x, F.softmax(x, -1), -1))


@pytest.mark.benchmark(group="cross_entropy")
@per_threads
def bench_cross_entropy_fwd_bwd(benchmark, at_threads):
    fc, _ = crossentropy_case(np.random.default_rng(0))
    benchmark(fc)


# ---------------------------------------------------------------------------
# fastcnn vs PyTorch table
# ---------------------------------------------------------------------------

def _time_once(fn, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def compare(threads=2, repeats=9):
    import torch
    torch.set_num_threads(threads)
    rows = []
    with fastcnn.threads(threads):
        for name, (make, target) in CASES.items():
            fc, torch_fn = make(np.random.default_rng(0))
            th = torch_fn(torch)
            for _ in range(3):  # warm up both
                fc()
                th()
            # enough calls per repetition to last ~20 ms
            inner = max(1, int(0.02 / max(_time_once(fc, 1), 1e-7)))
            a, b = [], []
            for _ in range(repeats):  # alternate so both see the same machine state
                a.append(_time_once(fc, inner))
                b.append(_time_once(th, inner))
            ta, tb = float(np.median(a)), float(np.median(b))
            rows.append((name, ta, tb, tb / ta, target, float(np.min(b)) / float(np.min(a))))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9, help="repetitions per engine (>= 7 recommended)")
    args = ap.parse_args(argv)
    rows = compare(args.threads, args.repeats)
    print(f"threads={args.threads}, medians of {args.repeats} alternating repetitions")
    print(f"{'problem':44s} {'fastcnn':>11s} {'PyTorch':>11s} {'speed-up':>9s} {'target':>7s} "
          f"{'best/best':>9s}")
    for name, ta, tb, ratio, target, best in rows:
        def fmt(t):
            return f"{t * 1e3:8.3f} ms" if t >= 1e-3 else f"{t * 1e6:8.1f} us"
        goal = "-" if target is None else f"{target:.0f}x"
        print(f"{name:44s} {fmt(ta):>11s} {fmt(tb):>11s} {ratio:8.2f}x {goal:>7s} {best:8.2f}x")
    print("times and speed-up: medians; best/best: ratio of the fastest repetitions "
          "(less sensitive to other processes on a shared machine)")


if __name__ == "__main__":
    main()
