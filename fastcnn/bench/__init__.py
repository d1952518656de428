"""Benchmarks: fastcnn against PyTorch and NumPy on the reference workloads.

``fastcnn bench`` and ``python -m fastcnn.bench`` run every workload (single
convolution, pooling, BatchNorm, loss and GEMM ops forward and forward+backward,
the LeNet training step and inference, DCGAN-28 and DCGAN-64 training
iterations) in its own process and print a Markdown table; ``--scaling``
measures fastcnn's speed-up with the thread count. See ``--help``.
"""

__all__ = ["main"]


def main(argv=None, prog="fastcnn bench"):
    """Run the benchmark CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    from .runner import main as _main
    return _main(argv, prog=prog)
