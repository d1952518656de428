"""Thread-count control shared by every kernel.

Kernels never read this state themselves: ``functional`` reads it once per call
and passes ``n_threads`` down.
"""
import contextlib
import numbers
import os

__all__ = ["set_num_threads", "get_num_threads", "threads", "default_num_threads"]


def _check_count(n, name="n"):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise ValueError(f"{name} must be a positive int, got {n!r}")
    if n < 1:
        raise ValueError(f"{name} must be a positive int, got {n}")
    return int(n)


def default_num_threads():
    """``OMP_NUM_THREADS`` when it is set to a positive int, else the CPUs this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env:
        try:
            n = int(env)
            if n >= 1:
                return n
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_num_threads = default_num_threads()


def set_num_threads(n):
    """Set the number of OpenMP threads every fastcnn kernel uses."""
    global _num_threads
    _num_threads = _check_count(n)


def get_num_threads():
    """The number of threads fastcnn kernels use."""
    return _num_threads


@contextlib.contextmanager
def threads(n):
    """Context manager: run the block with ``n`` threads, then restore the previous count."""
    n = _check_count(n)
    previous = get_num_threads()
    set_num_threads(n)
    try:
        yield n
    finally:
        set_num_threads(previous)
