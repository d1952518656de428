"""Concurrency: fastcnn called from several Python threads at once.

* 8 threads calling ``fastcnn.predict`` / ``model(x)`` on one eval-mode model,
  and the functional kernels, get exactly the serial results;
* the kernels release the GIL: another Python thread keeps running while a
  long kernel computes;
* nested use inside a user's thread pool: a kernel called from a Python
  thread uses that thread's ``fastcnn.get_num_threads()`` OpenMP threads, so
  N workers use N x that many; ``with fastcnn.threads(1):`` in each worker
  (a per-thread setting) keeps the total at N. See docs/threads.md.
"""
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import nn

N_THREADS = 8


def _model():
    fastcnn.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.LeakyReLU(0.1), nn.Dropout(0.3),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10), nn.Softmax(dim=1))
    # non-trivial running statistics
    m.train()
    m(np.random.default_rng(1).standard_normal((16, 1, 16, 16)).astype(np.float32))
    m.eval()
    return m


def _run_parallel(fn, args):
    """fn(*a) for every a in args, from N_THREADS threads started together."""
    barrier = threading.Barrier(N_THREADS)
    results = [None] * len(args)
    errors = []

    def worker(k):
        barrier.wait()
        try:
            for i in range(k, len(args), N_THREADS):
                results[i] = fn(*args[i])
        except BaseException as e:  # reported below
            errors.append(e)
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(N_THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return results


def _same(a, b):
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return a is b
    return np.array_equal(np.asarray(a), np.asarray(b)) and np.asarray(a).dtype == np.asarray(b).dtype


@pytest.mark.parametrize("call", ["predict", "model(x)"])
def test_threads_predicting_on_one_model_match_serial(call):
    model = _model()
    rng = np.random.default_rng(2)
    inputs = [(rng.standard_normal((int(rng.integers(1, 40)), 1, 16, 16)).astype(np.float32),)
              for _ in range(4 * N_THREADS)]
    fn = (lambda x: fastcnn.predict(model, x, batch_size=16)) if call == "predict" else (lambda x: model(x))
    serial = [fn(*a) for a in inputs]
    for _ in range(2):
        parallel = _run_parallel(fn, inputs)
        for i, (s, p) in enumerate(zip(serial, parallel)):
            assert _same(s, p), f"input {i}: the threaded result differs from the serial one"
    assert not model.training


def _functional_calls(rng):
    f32 = np.float32
    x = rng.standard_normal((3, 6, 13, 11)).astype(f32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(f32)
    g = rng.standard_normal(F.conv2d(x, w, None, 2, 1, 1, 2).shape).astype(f32)
    wt = rng.standard_normal((6, 4, 3, 3)).astype(f32)
    a, b = rng.standard_normal((37, 53)).astype(f32), rng.standard_normal((53, 29)).astype(f32)
    rm, rv = np.zeros(6), np.ones(6)
    t = rng.integers(0, 29, 37)
    return [
        ("conv2d", lambda: F.conv2d(x, w, None, 2, 1, 1, 2, activation="relu")),
        ("conv2d_backward", lambda: F.conv2d_backward(g, x, w, 2, 1, 1, 2)),
        ("conv_transpose2d", lambda: F.conv_transpose2d(x, wt, None, 2, 1, 1, 2)),
        ("conv_transpose2d_backward", lambda: F.conv_transpose2d_backward(
            F.conv_transpose2d(x, wt, None, 2, 1, 1, 2), x, wt, 2, 1, 1, 2)),
        ("max_pool2d", lambda: F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)),
        ("avg_pool2d", lambda: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True)),
        ("batch_norm", lambda: F.batch_norm(x, rm, rv, training=False)),
        ("batch_norm_train", lambda: F.batch_norm(x, None, None, training=True)),
        ("matmul", lambda: F.matmul(a, b)),
        ("linear_backward", lambda: F.linear_backward(F.matmul(a, b), a, np.ascontiguousarray(b.T))),
        ("softmax", lambda: F.softmax(F.matmul(a, b), dim=1)),
        ("cross_entropy_backward", lambda: F.cross_entropy_backward(F.matmul(a, b), t)),
    ]


def test_threads_calling_functional_kernels_match_serial():
    calls = _functional_calls(np.random.default_rng(3))
    serial = {name: fn() for name, fn in calls}
    jobs = [(name, fn) for _ in range(4) for name, fn in calls]
    parallel = _run_parallel(lambda name, fn: (name, fn()), jobs)
    for name, out in parallel:
        assert _same(out, serial[name]), f"{name}: the threaded result differs from the serial one"


# ---------------------------------------------------------------------------
# the GIL is released while a kernel computes


def _long_call(kernel):
    """One kernel call lasting roughly 0.05-0.3 s on one core."""
    rng = np.random.default_rng(4)
    f32 = np.float32
    if kernel.startswith("conv"):
        x = rng.random((16, 32, 64, 64), dtype=f32)
        w = rng.random((64, 32, 3, 3), dtype=f32)
        if kernel == "conv2d":
            return lambda: F.conv2d(x, w, padding=1)
        y = F.conv2d(x, w, padding=1)
        if kernel == "conv2d_backward":
            return lambda: F.conv2d_backward(y, x, w, padding=1)
        return lambda: F.conv_transpose2d(y, w, padding=1)
    if kernel == "matmul":
        a = rng.random((800, 800), dtype=f32)
        return lambda: F.matmul(a, a)
    big = rng.random((16, 32, 128, 128), dtype=f32)
    if kernel == "max_pool2d":
        return lambda: F.max_pool2d(big, 3, 1, 1, return_indices=True)
    if kernel == "avg_pool2d":
        return lambda: F.avg_pool2d(big, 3, 1, 1)
    return lambda: F.batch_norm(big, None, None, training=True)


def _largest_gap_during(call):
    """Run ``call`` in this thread while another Python thread spins; return (duration, largest
    pause of the spinning thread while the call ran)."""
    stop = threading.Event()
    gaps = []  # (start, end) of the spinning thread's pauses longer than 2 ms
    started = threading.Event()

    def spin():
        last = time.perf_counter()
        started.set()
        while not stop.is_set():
            now = time.perf_counter()
            if now - last > 0.002:
                gaps.append((last, now))
            last = now
    t = threading.Thread(target=spin)
    t.start()
    started.wait()
    time.sleep(0.01)
    t0 = time.perf_counter()
    call()
    t1 = time.perf_counter()
    stop.set()
    t.join()
    inside = [min(e, t1) - max(s, t0) for s, e in gaps if e > t0 and s < t1]
    return t1 - t0, max(inside, default=0.0)


@pytest.mark.parametrize("kernel", ["conv2d", "conv2d_backward", "conv_transpose2d", "matmul",
                                    "max_pool2d", "avg_pool2d", "batch_norm"])
def test_kernels_release_the_gil(kernel):
    """While a kernel runs, another Python thread makes progress.

    A kernel that held the GIL would stall the spinning thread for the whole
    call; released, the spinning thread only pauses for the interpreter's
    switch interval or the scheduler. A loaded machine can pause it too, so
    the check is repeated and passes when any attempt shows no stall as long
    as half the call.
    """
    call = _long_call(kernel)
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    try:
        with fastcnn.threads(1):  # one core for the kernel, the other for the spinning thread
            call()  # warm up
            seen = []
            for _ in range(4):
                duration, gap = _largest_gap_during(call)
                seen.append((round(duration, 4), round(gap, 4)))
                # pauses under 2 ms are not recorded: the call must be clearly longer
                if duration > 0.006 and gap < duration / 2:
                    return
    finally:
        sys.setswitchinterval(old)
    pytest.fail(f"{kernel}: another Python thread stalled while the kernel ran "
                f"(duration, largest stall) per attempt: {seen}")


# ---------------------------------------------------------------------------
# nested use inside a user's thread pool


class _Spy:
    """Stands in for a kernel module and records the ``n_threads`` of every kernel call
    (the shape predicates that choose a formulation take no thread count)."""

    PREDICATES = ("pixel_major", "pixel_major_data", "winograd", "winograd_packed", "isa_id")
    # kernels whose thread count is not their last positional argument: its position
    N_THREADS_AT = {"conv2d_winograd": 7}

    def __init__(self, module, record):
        self._module, self._record = module, record

    def __getattr__(self, name):
        fn = getattr(self._module, name)
        if name in self.PREDICATES:
            return fn

        def wrapped(*args, **kwargs):
            at = self.N_THREADS_AT.get(name, len(args) - 1)
            self._record.append((threading.get_ident(), name, kwargs.get("n_threads", args[at])))
            return fn(*args, **kwargs)
        return wrapped


def _os_threads():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return None  # pragma: no cover


def test_kernels_in_a_thread_pool_use_each_threads_count(monkeypatch):
    """Every kernel call takes the calling thread's get_num_threads(); threads(k) is per thread."""
    from fastcnn.functional import conv as conv_module
    record = []
    monkeypatch.setattr(conv_module, "_conv", _Spy(conv_module._conv, record))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 16, 32, 32)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    fastcnn.set_num_threads(3)
    seen = {}

    def job(k):
        if k % 2:
            with fastcnn.threads(1):
                seen[threading.get_ident()] = fastcnn.get_num_threads()
                return F.conv2d(x, w, padding=1)
        seen[threading.get_ident()] = fastcnn.get_num_threads()
        return F.conv2d(x, w, padding=1)

    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(job, range(16)))
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])
    assert sorted(set(seen.values())) == [1, 3]
    # the kernel got the count of the thread that called it (3 unless inside threads(1))
    assert {n for _, _, n in record} <= {1, 3} and len(record) == 16
    assert sorted(n for _, _, n in record) == [1] * 8 + [3] * 8
    assert fastcnn.get_num_threads() == 3


def test_threads_context_is_per_thread_and_never_leaks():
    """Workers entering and leaving threads(k) at the same time leave the global count alone."""
    fastcnn.set_num_threads(2)
    barrier = threading.Barrier(N_THREADS)
    bad = []

    def worker(k):
        barrier.wait()
        for i in range(300):
            n = 1 + (k + i) % 4
            with fastcnn.threads(n):
                if fastcnn.get_num_threads() != n:
                    bad.append((k, i))
                with fastcnn.threads(5):
                    if fastcnn.get_num_threads() != 5:
                        bad.append((k, i, "nested"))
                if fastcnn.get_num_threads() != n:
                    bad.append((k, i, "restored"))
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(N_THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad
    assert fastcnn.get_num_threads() == 2


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
def test_threads_1_per_worker_adds_no_openmp_threads():
    """N workers inside ``fastcnn.threads(1)`` create no OpenMP threads: no oversubscription."""
    if not fastcnn.config()["openmp"]:
        pytest.skip("serial build")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 16, 32, 32)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    workers = 4
    ready = threading.Barrier(workers + 1)
    done = threading.Barrier(workers + 1)

    def job(_):
        with fastcnn.threads(1):
            for _ in range(3):
                F.conv2d(x, w, padding=1)
                F.max_pool2d(x, 2)
                F.matmul(x[0, 0], x[0, 1])
        ready.wait()
        done.wait()  # keep the worker (and any OpenMP pool it owns) alive while counting

    before = _os_threads()
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(job, k) for k in range(workers)]
        ready.wait()
        during = _os_threads()
        done.wait()
        for f in futures:
            f.result()
    assert during <= before + workers, (before, during)
