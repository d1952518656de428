"""Build and run-time configuration: ISA path, OpenMP, threads, compiler."""
import os
import platform
import sys

import numpy as np

from . import _threads

__all__ = ["config", "show_config", "set_isa", "get_isa", "supported_isas"]

_GEMM_MODULES = ["_gemm", "_conv"]


def _gemm_modules():
    import importlib
    mods = []
    for name in _GEMM_MODULES:
        try:
            mods.append(importlib.import_module("fastcnn._kernels." + name))
        except ImportError:
            pass
    return mods


def _gemm():
    from ._kernels import _gemm
    return _gemm


def supported_isas():
    """Instruction-set paths this CPU can run, best first."""
    return list(_gemm().supported_isas())


def get_isa():
    """The micro-kernel instruction set in use."""
    return _gemm().get_isa()


def set_isa(name):
    """Force a micro-kernel path: 'avx512', 'avx2', 'generic' or 'auto'.

    A path this CPU cannot run is refused with ValueError.
    """
    if name not in ("avx512", "avx2", "generic", "auto"):
        raise ValueError(f"isa must be one of 'avx512', 'avx2', 'generic', 'auto', got {name!r}")
    if name != "auto" and name not in supported_isas():
        raise ValueError(f"isa {name!r} is not supported by this CPU (supported: {supported_isas()})")
    for m in _gemm_modules():
        m.set_isa(name)


def _apply_env_isa():
    name = os.environ.get("FASTCNN_ISA", "").strip().lower()
    if name:
        set_isa(name)


def config():
    """The build and run-time configuration as a dict."""
    from . import __version__
    return {
        "version": __version__,
        "isa": get_isa(),
        "supported_isas": supported_isas(),
        "openmp": bool(_gemm().openmp_enabled()),
        "num_threads": _threads.get_num_threads(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "compiler": _gemm().compiler(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }


def show_config(file=None):
    """Print the configuration (version, ISA path, OpenMP, threads, compiler)."""
    cfg = config()
    width = max(len(k) for k in cfg)
    lines = [f"{k:<{width}} : {v if not isinstance(v, list) else ', '.join(v)}" for k, v in cfg.items()]
    print("\n".join(lines), file=file or sys.stdout)
