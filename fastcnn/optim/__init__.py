"""Optimisers with PyTorch's update rules: SGD, Adam and AdamW.

An optimiser holds parameters (objects with ``.data`` and ``.grad`` ndarrays)
in parameter groups, exactly like ``torch.optim``::

    opt = fastcnn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = fastcnn.optim.Adam([{"params": body.parameters()},
                              {"params": head.parameters(), "lr": 1e-2}], lr=1e-3)
    opt.zero_grad(); model.backward(crit.backward()); opt.step()

Each update is a handful of in-place NumPy operations over a whole parameter
(no Python loop over elements) in the parameter's dtype, following the
order of operations of PyTorch's single-tensor (``foreach=False``) code, so
the same weights and gradients give the same parameters after N steps.
``state_dict()`` has PyTorch's structure: ``{"state": {index: {...}},
"param_groups": [{..., "params": [indices]}]}``.
"""
import math

import numpy as np

from .._kernels import _pointwise
from ..functional._checks import n_threads
from . import lr_scheduler  # noqa: F401  (fastcnn.optim.lr_scheduler.StepLR, ...)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]


class _Required:
    def __repr__(self):
        return "<required parameter>"


required = _Required()


def _check_param(p, where):
    if not (hasattr(p, "data") and hasattr(p, "grad")):
        raise TypeError(f"{where}: expected parameters with .data and .grad, got {type(p).__name__}")
    if not isinstance(p.data, np.ndarray) or p.data.dtype.kind != "f":
        raise TypeError(f"{where}: parameter data must be a floating-point ndarray, "
                        f"got {type(p.data).__name__}"
                        + (f" of dtype {p.data.dtype}" if isinstance(p.data, np.ndarray) else ""))


def _check_hyper(name, value, minimum=0.0, maximum=None, open_max=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (value >= minimum) or (maximum is not None and (value >= maximum if open_max else value > maximum)):
        rng = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}{')' if open_max else ']'}"
        raise ValueError(f"{name} must be {rng}, got {value}")
    return value


class Optimizer:
    """Base class: parameter groups, ``zero_grad``, ``state_dict`` and ``load_state_dict``.

    Subclasses define ``defaults`` (passed to ``__init__``) and ``_update(group)``.
    ``state`` maps each parameter object to its dict of per-parameter state.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}
        self.param_groups = []
        self._scratch = {}
        if isinstance(params, dict) or hasattr(params, "data"):
            raise TypeError("params must be an iterable of parameters or of dicts (parameter groups), "
                            f"got {type(params).__name__}")
        try:
            groups = list(params)
        except TypeError:
            raise TypeError("params must be an iterable of parameters or of dicts, "
                            f"got {type(params).__name__}") from None
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, param_group):
        """Add a group (a dict with ``"params"`` and optional hyper-parameters) to the optimiser."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry")
        params = param_group["params"]
        params = [params] if hasattr(params, "data") else list(params)
        for p in params:
            _check_param(p, "optimizer")
        unknown = set(param_group) - set(self.defaults) - {"params", "initial_lr"}
        if unknown:
            raise ValueError(f"unknown option(s) in param_group: {sorted(unknown)}; "
                             f"expected some of {sorted(self.defaults)}")
        group = {"params": params}
        for k, v in self.defaults.items():
            if k in param_group:
                group[k] = param_group[k]
            elif v is required:
                raise ValueError(f"parameter group didn't specify a value of required option '{k}'")
            else:
                group[k] = v
        if "initial_lr" in param_group:
            group["initial_lr"] = param_group["initial_lr"]
        self._validate_group(group)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params):
            raise ValueError("a parameter appears more than once in the same parameter group")
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def _validate_group(self, group):
        group["lr"] = _check_hyper("lr", group["lr"])

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)

    def zero_grad(self, set_to_none=True):
        """Set the gradients to ``None`` (as PyTorch does), or with ``set_to_none=False``
        zero them in place."""
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad[...] = 0

    def step(self):
        """Update every parameter that has a gradient."""
        for group in self.param_groups:
            self._update(group)

    def _update(self, group):  # pragma: no cover - abstract
        raise NotImplementedError

    def _buffers(self, p, n):
        """``n`` scratch arrays shaped like ``p.data``, reused across parameters and steps."""
        key = p.data.dtype.str
        flat = self._scratch.get(key)
        size = p.data.size
        if flat is None or flat.shape[1] < size or flat.shape[0] < n:
            flat = np.empty((max(n, 0 if flat is None else flat.shape[0]),
                             max(size, 0 if flat is None else flat.shape[1])), dtype=p.data.dtype)
            self._scratch[key] = flat
        return [flat[i, :size].reshape(p.data.shape) for i in range(n)]

    @staticmethod
    def _grad(p):
        g = p.grad
        if g is None or not getattr(p, "requires_grad", True):
            return None
        if not isinstance(g, np.ndarray) or g.shape != p.data.shape:
            raise ValueError(f"gradient of shape {getattr(g, 'shape', None)} does not match "
                             f"its parameter of shape {p.data.shape}")
        return g

    # -- state dicts -----------------------------------------------------------------
    def state_dict(self):
        """``{"state": {index: {name: value}}, "param_groups": [...]}`` as in PyTorch.

        Arrays in ``state`` are the optimiser's own buffers (copy them to keep a snapshot).
        """
        index = {}
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                if p in self.state:
                    state[index[id(p)]] = dict(self.state[p])
        return {"state": state, "param_groups": groups}

    _array_state = ()

    def load_state_dict(self, state_dict):
        """Load a state from :meth:`state_dict` (also accepts PyTorch's, converted to numpy)."""
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict or "state" not in state_dict:
            raise ValueError("optimizer state_dict must be a dict with 'state' and 'param_groups'")
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        params_by_index = {}
        for i, (g, s) in enumerate(zip(self.param_groups, saved)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(f"parameter group {i}: loaded state has {len(s['params'])} parameters, "
                                 f"this optimizer has {len(g['params'])}")
            for p, idx in zip(g["params"], s["params"]):
                params_by_index[int(idx)] = p
        new_state = {}
        for idx, st in state_dict["state"].items():
            idx = int(idx)
            if idx not in params_by_index:
                raise ValueError(f"optimizer state refers to parameter {idx}, which is not in any group")
            p = params_by_index[idx]
            entry = {}
            for k, v in st.items():
                if k == "step":
                    entry[k] = int(np.asarray(v).item())
                elif k in self._array_state:
                    arr = np.asarray(v)
                    if arr.shape != p.data.shape:
                        raise ValueError(f"optimizer state '{k}' of parameter {idx} has shape {arr.shape}, "
                                         f"expected {p.data.shape}")
                    entry[k] = np.array(arr, dtype=p.data.dtype, order="C", copy=True)
                else:
                    entry[k] = v
            new_state[p] = entry
        new_groups = []
        for g, s in zip(self.param_groups, saved):
            ng = {k: (tuple(v) if isinstance(v, list) and k == "betas" else v)
                  for k, v in s.items() if k != "params" and (k in self.defaults or k == "initial_lr")}
            ng["params"] = g["params"]
            for k, v in self.defaults.items():
                ng.setdefault(k, v)
            self._validate_group(ng)
            new_groups.append(ng)
        self.state = new_state
        self.param_groups = new_groups


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay.

    ``buf = momentum * buf + (1 - dampening) * g`` (``buf = g`` at the first step), then
    ``p -= lr * (g + momentum * buf if nesterov else buf)``, with ``g = grad + weight_decay * p``
    (``-grad`` when ``maximize``), as ``torch.optim.SGD``.
    """

    _array_state = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def _validate_group(self, group):
        super()._validate_group(group)
        group["momentum"] = _check_hyper("momentum", group["momentum"])
        group["dampening"] = _check_hyper("dampening", group["dampening"], minimum=-math.inf)
        group["weight_decay"] = _check_hyper("weight_decay", group["weight_decay"])
        group["nesterov"] = bool(group["nesterov"])
        group["maximize"] = bool(group["maximize"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _update(self, group):
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        wd, nesterov, maximize = group["weight_decay"], group["nesterov"], group["maximize"]
        for p in group["params"]:
            g = self._grad(p)
            if g is None:
                continue
            w = p.data
            a, b = self._buffers(p, 2)
            # d = (-)grad + weight_decay * p; the gradient itself is never modified
            d = g
            if wd != 0:
                np.multiply(w, wd, out=a)
                (np.subtract if maximize else np.add)(a, g, out=a)
                d = a
            elif maximize:
                d = np.negative(g, out=a)
            if momentum != 0:
                st = self.state.setdefault(p, {})
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = st["momentum_buffer"] = np.array(d, dtype=w.dtype, copy=True)
                else:
                    buf *= momentum
                    if dampening == 0:
                        buf += d
                    else:
                        buf += np.multiply(d, 1 - dampening, out=b)
                if nesterov:
                    d = np.add(d, np.multiply(buf, momentum, out=b), out=a)
                else:
                    d = buf
            w -= np.multiply(d, lr, out=b)


def _fusable(*arrays):
    """Whether the compiled update applies: float arrays of one dtype, all C-contiguous."""
    dt = arrays[0].dtype
    return dt in (np.float32, np.float64) and all(
        a is None or (type(a) is np.ndarray and a.dtype == dt and a.flags.c_contiguous) for a in arrays)


class Adam(Optimizer):
    """Adam (``decoupled_weight_decay=False``) with optional AMSGrad, as ``torch.optim.Adam``.

    ``m = lerp(m, g, 1 - beta1)``, ``v = beta2 * v + (1 - beta2) * g * g``,
    ``p += -(lr / (1 - beta1**t)) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``,
    with ``g = grad + weight_decay * p``. AdamW instead multiplies ``p`` by
    ``1 - lr * weight_decay`` before the update.
    """

    _array_state = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, maximize=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def _validate_group(self, group):
        super()._validate_group(group)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        group["betas"] = (_check_hyper("betas[0]", betas[0], 0.0, 1.0, open_max=True),
                          _check_hyper("betas[1]", betas[1], 0.0, 1.0, open_max=True))
        group["eps"] = _check_hyper("eps", group["eps"])
        group["weight_decay"] = _check_hyper("weight_decay", group["weight_decay"])
        group["amsgrad"] = bool(group["amsgrad"])
        group["maximize"] = bool(group["maximize"])

    def _update(self, group):
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        wd, amsgrad, maximize = group["weight_decay"], group["amsgrad"], group["maximize"]
        for p in group["params"]:
            g = self._grad(p)
            if g is None:
                continue
            w = p.data
            st = self.state.get(p)
            if not st:
                st = self.state[p] = {"step": 0, "exp_avg": np.zeros_like(w), "exp_avg_sq": np.zeros_like(w)}
                if amsgrad:
                    st["max_exp_avg_sq"] = np.zeros_like(w)
            m, v = st["exp_avg"], st["exp_avg_sq"]
            st["step"] += 1
            step = st["step"]
            if amsgrad and st.get("max_exp_avg_sq") is None:
                st["max_exp_avg_sq"] = np.zeros_like(w)
            if _fusable(w, g, m, v, st.get("max_exp_avg_sq") if amsgrad else None):
                # the same operations, in the same order and precision, in one compiled pass
                bias_correction2 = 1 - beta2 ** step
                _pointwise.adam_update(
                    w.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                    st["max_exp_avg_sq"].reshape(-1) if amsgrad else None,
                    (1 - lr * wd) if self._decoupled else wd, 0 if wd == 0 else (2 if self._decoupled else 1),
                    1 - beta1, beta2, 1 - beta2, bias_correction2 ** 0.5, eps,
                    -(lr / (1 - beta1 ** step)), maximize, n_threads(w.size, grain=1 << 16))
                continue
            a, b = self._buffers(p, 2)
            if maximize:
                np.negative(g, out=a)
                g = a
            if wd != 0:
                if self._decoupled:
                    w *= 1 - lr * wd
                else:
                    np.multiply(w, wd, out=b)
                    np.add(g, b, out=a)
                    g = a
            # exp_avg.lerp_(g, 1 - beta1): torch's two-branch lerp formula
            weight = w.dtype.type(1 - beta1)
            np.subtract(g, m, out=b)
            if abs(weight) < 0.5:
                b *= weight
                m += b
            else:
                b *= 1 - weight
                np.subtract(g, b, out=m)
            # exp_avg_sq = beta2 * exp_avg_sq + ((1 - beta2) * g) * g
            v *= beta2
            np.multiply(g, 1 - beta2, out=b)
            b *= g
            v += b
            bias_correction1 = 1 - beta1 ** step
            bias_correction2 = 1 - beta2 ** step
            step_size = lr / bias_correction1
            bias_correction2_sqrt = bias_correction2 ** 0.5
            if amsgrad:
                vmax = st.get("max_exp_avg_sq")
                if vmax is None:
                    vmax = st["max_exp_avg_sq"] = np.zeros_like(w)
                np.maximum(vmax, v, out=vmax)
                v = vmax
            # denom = sqrt(v) / sqrt(bc2) + eps;  p += (-step_size * m) / denom
            np.sqrt(v, out=b)
            b /= bias_correction2_sqrt
            b += eps
            np.multiply(m, -step_size, out=a)
            a /= b
            w += a


class AdamW(Adam):
    """Adam with decoupled weight decay (``p *= 1 - lr * weight_decay``), as ``torch.optim.AdamW``."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)
