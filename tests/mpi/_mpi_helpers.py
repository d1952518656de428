"""Helpers shared by the tests that run under ``mpirun -n 2 python -m pytest tests/mpi/mpi_*.py``.

Every rank runs every test; assertions go through :func:`agree` so that all
ranks pass or fail together (a rank failing alone would leave the others
waiting in the next collective call).
"""
import numpy as np

from fastcnn import nn
from fastcnn import distributed as dist
from fastcnn._random import manual_seed


def agree(ok, message="check failed on some rank"):
    """Assert ``ok`` on every rank, failing everywhere when it fails anywhere."""
    results = dist.allgather(bool(ok))
    bad = [r for r, v in enumerate(results) if not v]
    assert not bad, f"{message} (on ranks {bad})"


def same_on_all_ranks(arrays):
    """True when every rank holds bitwise the same arrays."""
    mine = np.concatenate([np.ravel(a).astype(np.float64) for a in arrays])
    root = dist.broadcast_object(mine)
    return all(dist.allgather(bool(np.array_equal(mine, root))))


def lenet(seed=0, bn=True, dtype=np.float64):
    """A small LeNet-style classifier (conv, BN, ReLU, pool, linear) for 1x8x8 inputs."""
    manual_seed(seed)
    # no conv bias before BatchNorm: its exact gradient is 0, and Adam would amplify rounding noise
    layers = [nn.Conv2d(1, 6, 3, padding=1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(6))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 10)]
    return nn.Sequential(*layers).to(dtype)


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, 8, 8))
    y = rng.integers(0, 10, size=n)
    return x, y


def state_diff(a, b):
    """Max abs difference over the arrays of two state dicts with the same keys."""
    return max(float(np.max(np.abs(np.asarray(a[k], dtype=np.float64) - np.asarray(b[k], dtype=np.float64))))
               for k in a)
