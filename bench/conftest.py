"""Shared fixtures of the pytest-benchmark micro-benchmarks.

The workloads themselves live in ``fastcnn.bench.workloads`` (the same
definitions ``fastcnn bench`` times); these fixtures build one engine's
callable at a given thread count.

Thread counts: ``FASTCNN_BENCH_THREADS="1,2,4"``; default 1 and the CPUs available.
"""
import os

import numpy as np
import pytest

from fastcnn.bench import workloads as W


def _cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def thread_counts():
    env = os.environ.get("FASTCNN_BENCH_THREADS", "").strip()
    if env:
        return [int(v) for v in env.split(",") if v.strip()]
    return sorted({1, _cpus()})


def cases(names):
    """(workload, engine) pairs for the workloads ``names``: the engines each defines."""
    out = []
    for name in names:
        for engine in W.get(name).engines:
            out.append(pytest.param(name, engine, id=f"{name}-{engine}"))
    return out


@pytest.fixture
def build():
    """build(workload, engine, threads) -> the timed callable, with every engine at ``threads``."""
    from threadpoolctl import threadpool_limits
    import fastcnn

    previous = fastcnn.get_num_threads()
    limits = []
    torch_prev = None

    def _build(name, engine, threads):
        nonlocal torch_prev
        fastcnn.set_num_threads(threads)
        limits.append(threadpool_limits(threads))
        if engine == "torch":
            torch = pytest.importorskip("torch")
            torch_prev = torch.get_num_threads()
            torch.set_num_threads(threads)
        w = W.get(name)
        try:
            fn = w.build(engine, w.data(np.random.default_rng(0)), {})
        except W.SkipWorkload as exc:
            pytest.skip(str(exc))
        fn()  # warm-up
        return fn

    yield _build
    fastcnn.set_num_threads(previous)
    for lim in limits:
        lim.restore_original_limits()
    if torch_prev is not None:
        import torch
        torch.set_num_threads(torch_prev)
