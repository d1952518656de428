"""Thread-count control shared by every kernel.

Kernels never read this state themselves: ``functional`` reads it once per call
and passes ``n_threads`` down.

``set_num_threads(n)`` sets the count for the whole process. ``threads(n)``
overrides it for the calling Python thread only, for the duration of a
``with`` block, so workers of a thread pool can each run single-threaded
kernels (``with fastcnn.threads(1): ...``) without racing on the global
setting or on each other. See docs/threads.md.
"""
import contextlib
import numbers
import os
import threading

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
_local = threading.local()  # .override: the innermost threads(n) block of this Python thread
_open_blocks = 0            # threads(n) blocks open in any Python thread
_blocks_lock = threading.Lock()


def set_num_threads(n):
    """Set the number of OpenMP threads every fastcnn kernel uses (process-wide).

    Inside a ``threads(m)`` block of the calling thread, the block's count
    keeps applying to that thread until the block ends.
    """
    global _num_threads
    _num_threads = _check_count(n)


def get_num_threads():
    """The number of threads fastcnn kernels called from this Python thread use."""
    if not _open_blocks:
        return _num_threads
    override = getattr(_local, "override", None)
    return _num_threads if override is None else override


@contextlib.contextmanager
def threads(n):
    """Context manager: kernels called from this Python thread use ``n`` threads inside the block.

    The override is per Python thread (other threads keep their own count)
    and blocks nest; the previous count is restored on exit.
    """
    global _open_blocks
    n = _check_count(n)
    previous = getattr(_local, "override", None)
    _local.override = n
    with _blocks_lock:
        _open_blocks += 1
    try:
        yield n
    finally:
        _local.override = previous
        with _blocks_lock:
            _open_blocks -= 1
