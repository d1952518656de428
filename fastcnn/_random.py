"""The global default random generator.

Every random draw the library makes without an explicit ``generator`` argument
(parameter initialisation in layer constructors, dropout masks) comes from one
:class:`numpy.random.Generator`. ``manual_seed(s)`` replaces it with a freshly
seeded one, so ``manual_seed(0); model = ...`` builds the same model bit for
bit every time.
"""
import numbers

import numpy as np

__all__ = ["manual_seed", "default_generator", "get_rng_state", "set_rng_state"]

_state = {"generator": np.random.default_rng()}


def manual_seed(seed):
    """Seed the global default generator and return it."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    gen = np.random.default_rng(int(seed))
    _state["generator"] = gen
    return gen


def default_generator():
    """The global default :class:`numpy.random.Generator`."""
    return _state["generator"]


def resolve(generator):
    """``generator`` when given (checked), else the global default generator."""
    if generator is None:
        return _state["generator"]
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"generator must be a numpy.random.Generator or None, got {type(generator).__name__}")
    return generator


def get_rng_state():
    """The state of the global default generator: a JSON-serialisable dict."""
    return _state["generator"].bit_generator.state


def set_rng_state(state):
    """Restore a state returned by :func:`get_rng_state`."""
    if not isinstance(state, dict) or "bit_generator" not in state:
        raise ValueError("state must be a dict returned by get_rng_state()")
    gen = _state["generator"]
    if gen.bit_generator.state["bit_generator"] != state["bit_generator"]:
        bitgen = getattr(np.random, state["bit_generator"], None)
        if bitgen is None:
            raise ValueError(f"unknown bit generator {state['bit_generator']!r}")
        gen = np.random.Generator(bitgen())
    gen.bit_generator.state = state
    _state["generator"] = gen
