"""Whole models: LeNet training step and inference, DCGAN-28 and DCGAN-64 iterations,
the same architecture in fastcnn and PyTorch."""
import pytest

from conftest import cases, thread_counts

NAMES = ["lenet-train", "lenet-infer-b1", "lenet-infer-b64", "dcgan28-iter", "dcgan64-iter"]


@pytest.mark.parametrize("threads", thread_counts())
@pytest.mark.parametrize("workload, engine", cases(NAMES))
def bench_model(benchmark, build, workload, engine, threads):
    benchmark.group = workload
    fn = build(workload, engine, threads)
    if workload == "dcgan64-iter":
        benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    else:
        benchmark(fn)
