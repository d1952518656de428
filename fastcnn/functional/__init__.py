"""Stateless operations: validate arguments, allocate outputs, call a kernel.

This package is the only place that turns user input into kernel arguments.
"""
from .linalg import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .pool import *  # noqa: F401,F403
from .activation import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
