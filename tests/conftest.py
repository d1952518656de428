"""Shared test fixtures: PyTorch availability, thread-count helpers, gradient checks."""
import os

import numpy as np
import pytest

import fastcnn

REQUIRE_TORCH = os.environ.get("FASTCNN_REQUIRE_TORCH", "") not in ("", "0")


def _import_torch():
    try:
        import torch
    except ImportError:
        if REQUIRE_TORCH:
            pytest.fail("PyTorch is required for the parity tests (FASTCNN_REQUIRE_TORCH=1) but is not installed")
        pytest.skip("PyTorch not installed")
    torch.set_num_threads(1)
    return torch


@pytest.fixture(scope="session")
def torch():
    """The torch module; skips when absent, fails when FASTCNN_REQUIRE_TORCH=1."""
    return _import_torch()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _restore_threads():
    n = fastcnn.get_num_threads()
    yield
    fastcnn.set_num_threads(n)


def numeric_grad(f, x, eps=1e-6):
    """Central finite differences of the scalar function ``f`` at float64 ``x`` (modified in place, restored)."""
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    gf = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gf[i] = (fp - fm) / (2 * eps)
    return g


def assert_close(actual, expected, rtol, atol, what=""):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


TOL = {np.float64: dict(rtol=1e-9, atol=1e-9), np.float32: dict(rtol=1e-4, atol=1e-4)}
