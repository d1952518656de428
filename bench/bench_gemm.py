"""Square float32 GEMM: fastcnn.functional.matmul vs torch.matmul vs numpy.matmul."""
import pytest

from conftest import cases, thread_counts


@pytest.mark.parametrize("threads", thread_counts())
@pytest.mark.parametrize("workload, engine", cases(["gemm-256", "gemm-1024", "gemm-2048"]))
def bench_gemm(benchmark, build, workload, engine, threads):
    benchmark.group = workload
    fn = build(workload, engine, threads)
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1) if workload == "gemm-2048" \
        else benchmark(fn)
