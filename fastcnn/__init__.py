"""fastcnn: a fast CPU engine for convolutional networks and GANs."""
__version__ = "0.1.0"

from ._threads import get_num_threads, set_num_threads, threads  # noqa: E402
from ._config import config, show_config, get_isa, set_isa, supported_isas  # noqa: E402
from . import functional  # noqa: E402

_config._apply_env_isa()

__all__ = [
    "__version__", "get_num_threads", "set_num_threads", "threads",
    "config", "show_config", "get_isa", "set_isa", "supported_isas", "functional",
]
