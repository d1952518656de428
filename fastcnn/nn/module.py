"""``Parameter``, ``Module`` and ``Sequential``: PyTorch's containers, numpy inside.

A module's ``forward`` (called as ``m(x)``) returns a numpy array and keeps what
``backward`` needs; ``backward(grad_out)`` returns the gradient with respect
to the input and accumulates (``+=``) into each parameter's ``.grad``.
"""
import inspect
from collections import namedtuple

import numpy as np

__all__ = ["Parameter", "Module", "Sequential"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Bumped by every change a cached derived value may depend on: train()/eval(),
# load_state_dict(), dtype changes, registering parameters, modules or buffers.
_VERSION = [0]


# bumped by every assignment to a module attribute outside what forward keeps for
# backward (_CACHE_NAMES), and with _VERSION: a layer's settings (stride, padding,
# training, ...) have not changed while it holds
SETTINGS = [0]


def _bump():
    _VERSION[0] += 1
    SETTINGS[0] += 1


def _check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


class Parameter:
    """A trainable array: ``.data`` (the values) and ``.grad`` (same shape, starts at zero)."""

    __slots__ = ("data", "grad", "requires_grad", "__weakref__")

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Parameter):
            data = data.data
        if not isinstance(data, np.ndarray):
            data = np.asarray(data)
            if data.dtype.kind in "iub":
                data = data.astype(np.float32)
        if data.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"Parameter data must have dtype float32 or float64, got {data.dtype}")
        # (np.ascontiguousarray would turn a 0-d array into shape (1,))
        self.data = data if data.flags.c_contiguous else data.copy(order="C")
        self.grad = np.zeros_like(self.data)
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    def numel(self):
        return self.data.size

    def numpy(self):
        return self.data

    def __array__(self, dtype=None, copy=None):
        if dtype is not None and np.dtype(dtype) != self.data.dtype:
            return self.data.astype(dtype)
        return self.data.copy() if copy else self.data

    def zero_grad(self):
        if self.grad is None:
            self.grad = np.zeros_like(self.data)
        else:
            self.grad.fill(0)

    def __repr__(self):
        return "Parameter containing:\n" + repr(self.data)


def accumulate(param, grad, owned=False):
    """``param.grad += grad`` (or set it when it is None); skipped for frozen parameters.
    ``owned``: grad is a new array that nothing else holds, which becomes ``param.grad``
    where it can (one of the parameter's shape and dtype) instead of being copied."""
    if param.requires_grad:
        if param.grad is None:
            data = param.data
            if (owned and type(grad) is np.ndarray and grad.base is None and grad.dtype == data.dtype
                    and grad.shape == data.shape and grad.flags.c_contiguous and grad.flags.writeable):
                param.grad = grad
            else:
                param.grad = np.array(grad, dtype=data.dtype, copy=True)
        else:
            param.grad += grad


def _addindent(s, n):
    lines = s.split("\n")
    if len(lines) == 1:
        return s
    first = lines.pop(0)
    return first + "\n" + "\n".join(" " * n + line for line in lines)


_IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

_BACKWARD_KW = {}


def _members(step):
    """The objects a plan step keeps call state in: itself, its modules and theirs, and the
    steps of the plans of those that are Sequentials."""
    out, seen, todo = [], set(), [step]
    while todo:
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        out.append(o)
        if isinstance(o, Module):
            todo.extend(m for m in o._modules.values() if m is not None)
            todo.extend(o.__dict__.get("_plan") or ())
        else:
            todo.extend(getattr(o, "modules", ()))
    return out


def _shared_steps(plan):
    """The positions of a plan whose modules another position runs as well (a module used
    twice), or None."""
    mods = [[o for o in _members(step) if isinstance(o, Module)] for step in plan]
    count = {}
    for ms in mods:
        for o in ms:
            count[id(o)] = count.get(id(o), 0) + 1
    shared = frozenset(i for i, ms in enumerate(mods) if any(count[id(o)] > 1 for o in ms))
    return shared or None


def _restore(state):
    for o, d in state:
        o.__dict__.update(d)


def backward_without_input_grad(module, grad):
    """``module.backward(grad, need_input_grad=False)`` when the module accepts the keyword."""
    cls = type(module)
    ok = _BACKWARD_KW.get(cls)
    if ok is None:
        try:
            params = inspect.signature(cls.backward).parameters
            ok = "need_input_grad" in params or any(
                p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        except (TypeError, ValueError):
            ok = False
        _BACKWARD_KW[cls] = ok
    if ok:
        module.backward(grad, need_input_grad=False)
    else:
        module.backward(grad)
    return None


# Attributes that forward() writes on every call; never parameters, buffers or modules.
_CACHE_NAMES = frozenset({"_x", "_y", "_ctx", "_mask", "_shape", "_out", "_lead", "_used"})


class Module:
    """Base class of every layer and container.

    Assigning a :class:`Parameter` or a :class:`Module` to an attribute
    registers it, as in PyTorch; :meth:`register_buffer` registers a
    non-trainable array that belongs in :meth:`state_dict`.
    """

    def __init__(self):
        d = self.__dict__
        d["training"] = True
        d["_parameters"] = {}
        d["_buffers"] = {}
        d["_non_persistent"] = set()
        d["_modules"] = {}

    # -- registration ------------------------------------------------------
    def __setattr__(self, name, value):
        if name in _CACHE_NAMES:  # what forward keeps for backward: the hot path
            self.__dict__[name] = value
            return
        SETTINGS[0] += 1
        d = self.__dict__
        if isinstance(value, Parameter):
            params = d.get("_parameters")
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            d["_modules"].pop(name, None)
            d["_buffers"].pop(name, None)
            params[name] = value
            _bump()
        elif isinstance(value, Module):
            mods = d.get("_modules")
            if mods is None:
                raise AttributeError("cannot assign a module before Module.__init__() call")
            d["_parameters"].pop(name, None)
            d["_buffers"].pop(name, None)
            mods[name] = value
            _bump()
        else:
            params = d.get("_parameters")
            if params is not None:
                if name in params:
                    if value is not None:
                        raise TypeError(f"cannot assign {type(value).__name__} as parameter '{name}' "
                                        "(a Parameter or None expected; to change values, write to .data)")
                    params[name] = None
                    _bump()
                elif name in d["_modules"]:
                    if value is not None:
                        raise TypeError(f"cannot assign {type(value).__name__} as child module '{name}' "
                                        "(a Module or None expected)")
                    d["_modules"][name] = None
                    _bump()
                elif name in d["_buffers"]:
                    if value is not None and not isinstance(value, np.ndarray):
                        raise TypeError(f"cannot assign {type(value).__name__} as buffer '{name}' "
                                        "(an ndarray or None expected)")
                    d["_buffers"][name] = value
                    _bump()
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        SETTINGS[0] += 1
        d = self.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            if name in d.get(key, ()):
                del d[key][name]
                d["_non_persistent"].discard(name)
                _bump()
        object.__delattr__(self, name)

    def _check_name(self, name, what):
        if not isinstance(name, str):
            raise TypeError(f"{what} name must be a str, got {type(name).__name__}")
        if "." in name or name == "":
            raise ValueError(f"{what} name must be a non-empty string without '.', got {name!r}")
        if hasattr(self, name) and not (name in self._parameters or name in self._buffers
                                        or name in self._modules):
            raise KeyError(f"attribute '{name}' already exists")

    def register_parameter(self, name, param):
        self._check_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign {type(param).__name__} as parameter '{name}' (Parameter or None expected)")
        self._modules.pop(name, None)
        self._buffers.pop(name, None)
        self._parameters[name] = param
        object.__setattr__(self, name, param)
        _bump()

    def register_buffer(self, name, tensor, persistent=True):
        self._check_name(name, "buffer")
        if tensor is not None and not isinstance(tensor, np.ndarray):
            raise TypeError(f"cannot assign {type(tensor).__name__} as buffer '{name}' (ndarray or None expected)")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)
        object.__setattr__(self, name, tensor)
        _bump()

    def add_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_name(name, "module")
        self._parameters.pop(name, None)
        self._buffers.pop(name, None)
        self._modules[name] = module
        object.__setattr__(self, name, module)
        _bump()

    register_module = add_module

    # -- computation -------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def backward(self, grad_out, need_input_grad=True):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- traversal ---------------------------------------------------------
    def named_children(self):
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is None:
                continue
            sub = prefix + ("." if prefix else "") + name
            yield from m.named_modules(memo, sub, remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def _named_members(self, attr, prefix, recurse):
        memo = set()
        mods = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mprefix, m in mods:
            for k, v in getattr(m, attr).items():
                if v is None or id(v) in memo:
                    continue
                memo.add(id(v))
                yield mprefix + ("." if mprefix else "") + k, v

    def named_parameters(self, prefix="", recurse=True):
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True):
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn):
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # -- state -------------------------------------------------------------
    def _state_targets(self, prefix, out):
        """Fill ``out`` with key -> (module, name, kind) in PyTorch's state-dict order."""
        for k, p in self._parameters.items():
            if p is not None:
                out[prefix + k] = (self, k, "parameter")
        for k, b in self._buffers.items():
            if b is not None and k not in self._non_persistent:
                out[prefix + k] = (self, k, "buffer")
        for k, m in self._modules.items():
            if m is not None:
                m._state_targets(prefix + k + ".", out)
        return out

    def state_dict(self, *, prefix="", keep_vars=False):
        """Parameters and persistent buffers by PyTorch's key names (copies unless ``keep_vars``)."""
        out = {}
        for key, (m, name, kind) in self._state_targets(prefix, {}).items():
            arr = m._parameters[name].data if kind == "parameter" else m._buffers[name]
            out[key] = arr if keep_vars else arr.copy()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters and buffers, casting to their dtypes.

        Accepts ``{k: v.numpy() for k, v in torch_module.state_dict().items()}``.
        Raises ValueError naming the key when a shape differs, and (when
        ``strict``) when keys are missing or unexpected; nothing is changed
        unless every entry is valid. Returns ``(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "items") or not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        targets = self._state_targets("", {})
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing key(s): " + ", ".join(repr(k) for k in missing))
            if unexpected:
                parts.append("unexpected key(s): " + ", ".join(repr(k) for k in unexpected))
            raise ValueError(f"error loading state_dict into {type(self).__name__}: " + "; ".join(parts))
        pending = []
        for key, (m, name, kind) in targets.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            if isinstance(value, Parameter):
                value = value.data
            try:
                value = np.asarray(value)
            except Exception as exc:  # e.g. an object numpy cannot read
                raise TypeError(f"state_dict[{key!r}] cannot be read as an array: {exc}") from None
            if value.dtype.kind not in "fiub":
                raise TypeError(f"state_dict[{key!r}] must be numeric, got dtype {value.dtype}")
            target = m._parameters[name].data if kind == "parameter" else m._buffers[name]
            if value.shape != target.shape:
                raise ValueError(f"size mismatch for {key}: copying an array with shape {value.shape}, "
                                 f"the shape in the current model is {target.shape}")
            pending.append((target, value))
        for target, value in pending:
            np.copyto(target, value, casting="unsafe")
        _bump()
        return _IncompatibleKeys(missing, unexpected)

    # -- modes and dtypes --------------------------------------------------
    def train(self, mode=True):
        if not isinstance(mode, (bool, np.bool_)):
            raise TypeError(f"training mode must be a bool, got {mode!r}")
        mode = bool(mode)
        for m in self.modules():
            m.__dict__["training"] = mode
        _bump()
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Set every parameter's gradient to None (as PyTorch does), or with
        ``set_to_none=False`` to zeros in place."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is None:
                p.grad = np.zeros_like(p.data)
            else:
                p.grad.fill(0)

    def to(self, dtype):
        """Cast every floating parameter, gradient and buffer to ``dtype`` (float32 or float64)."""
        dt = _check_dtype(dtype)
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None and p.data.dtype != dt:
                    p.data = p.data.astype(dt)
                    if p.grad is not None:
                        p.grad = p.grad.astype(dt)
            for k, b in list(m._buffers.items()):
                if b is not None and b.dtype.kind == "f" and b.dtype != dt:
                    b = b.astype(dt)
                    m._buffers[k] = b
                    object.__setattr__(m, k, b)
            m._on_dtype_change(dt)
        _bump()
        return self

    def _on_dtype_change(self, dtype):
        """Hook for modules that hold floating arrays outside parameters and buffers."""

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    # -- printing ----------------------------------------------------------
    def extra_repr(self):
        return ""

    def _get_name(self):
        return type(self).__name__

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = []
        for key, m in self._modules.items():
            child_lines.append("(" + key + "): " + _addindent(repr(m), 2))
        lines = extra_lines + child_lines
        s = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                s += extra_lines[0]
            else:
                s += "\n  " + "\n  ".join(lines) + "\n"
        return s + ")"


class Sequential(Module):
    """Modules run one after the other; ``backward`` runs them in reverse.

    In eval mode, a Conv2d or Linear followed by BatchNorm and/or
    ReLU/LeakyReLU runs as one fused kernel call with the BatchNorm folded into
    the weights (set ``fused_inference = False`` on the instance to turn this
    off). In training mode a Conv2d or Linear followed directly by
    ReLU/LeakyReLU applies the activation in the kernel's epilogue and takes
    its gradient from the output (``fused_training = False`` turns this off).
    Folded weights are cached and recomputed after ``train()``/``eval()``,
    ``load_state_dict()`` and dtype changes; after editing parameters in place
    while in eval mode, call ``eval()`` again.
    """

    fused_inference = True
    fused_training = True

    def __init__(self, *args):
        super().__init__()
        d = self.__dict__
        d["_plan"] = None
        d["_plan_key"] = None
        d["_plan_shared"] = None   # the positions of the plan whose modules another one runs too
        d["_last_plan"] = None
        d["_saved"] = None         # {position: the state its forward left} of the last forward
        if len(args) == 1 and isinstance(args[0], dict):
            for name, m in args[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(args):
                self.add_module(str(i), m)

    def add_module(self, name, module):
        if not isinstance(module, Module):
            raise TypeError(f"Sequential takes Modules, got {type(module).__name__}")
        super().add_module(name, module)

    # -- container protocol --------------------------------------------------
    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))

    def _index(self, idx):
        n = len(self._modules)
        if isinstance(idx, (bool, np.bool_)) or not isinstance(idx, (int, np.integer)):
            raise TypeError(f"Sequential indices must be ints or slices, got {type(idx).__name__}")
        idx = int(idx)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range for a Sequential of length {n}")
        return idx % n

    def __getitem__(self, idx):
        items = list(self._modules.items())
        if isinstance(idx, slice):
            return Sequential(dict(items[idx]))
        return items[self._index(idx)][1]

    def __setitem__(self, idx, module):
        key = list(self._modules)[self._index(idx)]
        self.add_module(key, module)

    def __delitem__(self, idx):
        keys = list(self._modules)
        if isinstance(idx, slice):
            drop = keys[idx]
        else:
            drop = [keys[self._index(idx)]]
        for k in drop:
            del self._modules[k]
            object.__delattr__(self, k)
        # renumber, as PyTorch does
        mods = list(self._modules.values())
        for k in list(self._modules):
            object.__delattr__(self, k)
        self._modules.clear()
        for i, m in enumerate(mods):
            self.add_module(str(i), m)
        _bump()

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        if not isinstance(module, Module):
            raise TypeError(f"Sequential takes Modules, got {type(module).__name__}")
        n = len(self._modules)
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not -n <= index <= n:
            raise IndexError(f"index {index} is out of range for a Sequential of length {n}")
        if index < 0:
            index += n
        mods = list(self._modules.values())
        mods.insert(index, module)
        for k in list(self._modules):
            object.__delattr__(self, k)
        self._modules.clear()
        for i, m in enumerate(mods):
            self.add_module(str(i), m)
        return self

    # -- computation -------------------------------------------------------
    def _get_plan(self):
        key = (_VERSION[0], self.training, self.fused_inference, self.fused_training)
        if self._plan_key != key:
            from .fused import build_plan
            mods = [m for m in self._modules.values() if m is not None]
            fuse = self.fused_training if self.training else self.fused_inference
            plan = build_plan(mods, self.training) if fuse else mods
            d = self.__dict__
            d["_plan"] = plan
            d["_plan_shared"] = _shared_steps(plan)
            d["_plan_key"] = key
        return self._plan

    def forward(self, x):
        plan = self._plan if self._plan_key == (_VERSION[0], self.training, self.fused_inference,
                                                self.fused_training) else self._get_plan()
        shared = self._plan_shared
        d = self.__dict__
        if shared is None:
            for step in plan:
                x = step(x)
            d["_saved"] = None
        else:
            # a module run at several positions keeps only its last call's state for its
            # backward: the state each such position leaves is kept, and put back before
            # that position's backward (the gradients of every use then add up)
            saved = {}
            for i, step in enumerate(plan):
                x = step(x)
                if i in shared:
                    saved[i] = [(o, o.__dict__.copy()) for o in _members(step)]
            d["_saved"] = saved
        d["_last_plan"] = plan
        return x

    def backward(self, grad_out, need_input_grad=True):
        plan = self._last_plan
        if plan is None:
            raise RuntimeError("Sequential.backward() called before forward()")
        if not plan:
            return grad_out if need_input_grad else None
        g = grad_out
        saved = self._saved
        for i in range(len(plan) - 1, 0, -1):
            if saved is not None and i in saved:
                _restore(saved[i])
            g = plan[i].backward(g)
        if saved is not None and 0 in saved:
            _restore(saved[0])
        if need_input_grad:
            return plan[0].backward(g)
        return backward_without_input_grad(plan[0], g)
