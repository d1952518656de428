"""Convolution and transposed convolution, forward and forward+backward:
fastcnn vs PyTorch (and the NumPy im2col+matmul baseline for forward)."""
import pytest

from conftest import cases, thread_counts
from fastcnn.bench.workloads import WORKLOADS

NAMES = [n for n in WORKLOADS if n.startswith(("conv-", "convT-"))]


@pytest.mark.parametrize("threads", thread_counts())
@pytest.mark.parametrize("workload, engine", cases(NAMES))
def bench_conv(benchmark, build, workload, engine, threads):
    benchmark.group = workload
    fn = build(workload, engine, threads)
    benchmark(fn)
