"""fastcnn: a fast CPU engine for convolutional networks and GANs."""
__version__ = "0.1.0"

from ._threads import get_num_threads, set_num_threads, threads  # noqa: E402
from ._config import config, show_config, get_isa, set_isa, supported_isas  # noqa: E402
from ._random import manual_seed  # noqa: E402
from . import functional  # noqa: E402
from . import nn, init, optim, data, metrics, train, checkpoint  # noqa: E402
from .checkpoint import save, load  # noqa: E402
from .train import fit, evaluate, predict  # noqa: E402

_config._apply_env_isa()

_LAZY = ("gan", "edit", "utils", "distributed", "bench", "cli")


def __getattr__(name):
    """Import the heavier submodules on first use (``fastcnn.gan``, ``fastcnn.edit``, ...)."""
    if name in _LAZY:
        import importlib
        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module 'fastcnn' has no attribute {name!r}")


__all__ = [
    "__version__", "get_num_threads", "set_num_threads", "threads",
    "config", "show_config", "get_isa", "set_isa", "supported_isas", "manual_seed",
    "functional", "nn", "init", "optim", "data", "metrics", "train", "checkpoint",
    "save", "load", "fit", "evaluate", "predict",
    "gan", "edit", "utils", "distributed", "bench",
]
