"""The reference workloads, each built for fastcnn, PyTorch and (where it applies) NumPy.

A :class:`Workload` knows how to make its input data and, per engine, a
zero-argument callable that runs one repetition of the workload (one forward,
one forward+backward, one training step ...). The runner times these callables;
the pytest-benchmark files in ``bench/`` reuse them.

All data is float32, NCHW, drawn from a seeded ``numpy.random.Generator`` so
every engine sees the same numbers. Model workloads build the fastcnn model
first and copy its state dict into the PyTorch model, so both do the same work
on the same weights.
"""
import fnmatch
import math

import numpy as np

__all__ = ["Workload", "WORKLOADS", "SCALING", "get", "select", "gemm_workload", "ENGINES"]

ENGINES = ("fastcnn", "torch", "numpy")


class SkipWorkload(Exception):
    """Raised by a builder when the workload cannot run (a module is not importable)."""


class Workload:
    """One benchmark case.

    ``data(rng) -> dict`` makes the inputs; ``builders[engine](data, ctx) -> callable``
    makes the timed function (``ctx`` is shared by the engines of one process:
    the fastcnn builder of a model workload leaves its state dict there for the
    PyTorch builder). ``flops`` is the floating-point work of one call (None
    where GFLOP/s is not meaningful).
    """

    def __init__(self, name, group, description, data, builders, flops=None):
        self.name = name
        self.group = group
        self.description = description
        self.data = data
        self.builders = builders
        self.flops = flops

    @property
    def engines(self):
        return tuple(e for e in ENGINES if e in self.builders)

    def build(self, engine, data, ctx):
        return self.builders[engine](data, ctx)

    def __repr__(self):
        return f"Workload({self.name!r})"


# --------------------------------------------------------------------- helpers
def _f32(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _torch():
    import torch
    return torch


def _tensor(a, requires_grad=False):
    torch = _torch()
    t = torch.from_numpy(np.array(a, copy=True))
    if requires_grad:
        t.requires_grad_(True)
    return t


def _import_layers():
    """fastcnn.nn and fastcnn.optim, or SkipWorkload when they are not importable."""
    try:
        import fastcnn.nn as nn
        import fastcnn.optim as optim
    except ImportError as exc:  # the layer API is optional at this level
        raise SkipWorkload(f"fastcnn.nn/fastcnn.optim not importable ({exc})") from None
    return nn, optim


def im2col_conv2d(x, w, b, stride, pad):
    """Convolution forward as the textbook NumPy baseline: full-batch im2col, then one matmul."""
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    win = np.lib.stride_tricks.sliding_window_view(xp, (R, S), axis=(2, 3))[:, :, ::stride, ::stride]
    P, Q = win.shape[2], win.shape[3]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(N * P * Q, C * R * S)
    out = cols @ w.reshape(K, C * R * S).T
    if b is not None:
        out += b
    return np.ascontiguousarray(out.reshape(N, P, Q, K).transpose(0, 3, 1, 2))


# ------------------------------------------------------------ single operations
CONV_SHAPES = {
    # name: (input N, C, H, W), out K, kernel, stride, pad
    "lenet1": ((64, 1, 28, 28), 32, 3, 1, 1),
    "lenet2": ((64, 32, 14, 14), 64, 3, 1, 1),
    "cifar": ((64, 64, 32, 32), 64, 3, 1, 1),
    "dcgan-d": ((64, 64, 14, 14), 128, 4, 2, 1),
    "batch1": ((1, 64, 56, 56), 64, 3, 1, 1),
}

CONVT_SHAPE = ((64, 128, 7, 7), 64, 4, 2, 1)   # ConvTranspose2d(128, 64, 4, 2, 1)


def conv_flops(x_shape, k, r, stride, pad):
    N, C, H, W = x_shape
    P = (H + 2 * pad - r) // stride + 1
    Q = (W + 2 * pad - r) // stride + 1
    return 2 * N * k * P * Q * C * r * r


def _conv_workload(tag, spec, backward):
    x_shape, K, R, stride, pad = spec
    C = x_shape[1]
    fl = conv_flops(x_shape, K, R, stride, pad)
    N, _, H, W = x_shape
    P = (H + 2 * pad - R) // stride + 1

    def data(rng):
        bound = 1.0 / math.sqrt(C * R * R)
        return {"x": _f32(rng, x_shape), "w": _f32(rng, (K, C, R, R), bound),
                "b": _f32(rng, (K,), bound), "gy": _f32(rng, (N, K, P, P))}

    def fastcnn_build(d, ctx):
        import fastcnn.functional as F
        x, w, b, gy = d["x"], d["w"], d["b"], d["gy"]
        if not backward:
            return lambda: F.conv2d(x, w, b, stride, pad)

        def step():
            F.conv2d(x, w, b, stride, pad)
            return F.conv2d_backward(gy, x, w, stride, pad)
        return step

    def torch_build(d, ctx):
        torch = _torch()
        tF = torch.nn.functional
        x, w, b, gy = (_tensor(d[k], backward) for k in ("x", "w", "b", "gy"))
        if not backward:
            def fwd():
                with torch.no_grad():
                    return tF.conv2d(x, w, b, stride, pad)
            return fwd
        gy.requires_grad_(False)

        def step():
            y = tF.conv2d(x, w, b, stride, pad)
            return torch.autograd.grad(y, (x, w, b), gy)
        return step

    def numpy_build(d, ctx):
        x, w, b = d["x"], d["w"], d["b"]
        return lambda: im2col_conv2d(x, w, b, stride, pad)

    builders = {"fastcnn": fastcnn_build, "torch": torch_build}
    if not backward:
        builders["numpy"] = numpy_build
    kind = "fwdbwd" if backward else "fwd"
    desc = (f"Conv2d {x_shape[0]}x{C}x{H}x{W} -> {K}, {R}x{R}, stride {stride}, pad {pad}, "
            + ("forward + backward (data, weight, bias)" if backward else "forward"))
    return Workload(f"conv-{tag}-{kind}", "conv", desc, data, builders,
                    flops=(3 if backward else 1) * fl)


def _convt_workload(backward):
    (N, Cin, H, W), Cout, R, stride, pad = CONVT_SHAPE
    Ho = (H - 1) * stride - 2 * pad + R
    # the equivalent convolution (its backward-data) does the same multiply-adds
    fl = 2 * N * Cin * H * W * Cout * R * R

    def data(rng):
        bound = 1.0 / math.sqrt(Cout * R * R)
        return {"x": _f32(rng, (N, Cin, H, W)), "w": _f32(rng, (Cin, Cout, R, R), bound),
                "b": _f32(rng, (Cout,), bound), "gy": _f32(rng, (N, Cout, Ho, Ho))}

    def fastcnn_build(d, ctx):
        import fastcnn.functional as F
        x, w, b, gy = d["x"], d["w"], d["b"], d["gy"]
        if not backward:
            return lambda: F.conv_transpose2d(x, w, b, stride, pad)

        def step():
            F.conv_transpose2d(x, w, b, stride, pad)
            return F.conv_transpose2d_backward(gy, x, w, stride, pad)
        return step

    def torch_build(d, ctx):
        torch = _torch()
        tF = torch.nn.functional
        x, w, b = (_tensor(d[k], backward) for k in ("x", "w", "b"))
        gy = _tensor(d["gy"])
        if not backward:
            def fwd():
                with torch.no_grad():
                    return tF.conv_transpose2d(x, w, b, stride, pad)
            return fwd

        def step():
            y = tF.conv_transpose2d(x, w, b, stride, pad)
            return torch.autograd.grad(y, (x, w, b), gy)
        return step

    kind = "fwdbwd" if backward else "fwd"
    desc = (f"ConvTranspose2d {N}x{Cin}x{H}x{W} -> {Cout}, {R}x{R}, stride {stride}, pad {pad}, "
            + ("forward + backward" if backward else "forward"))
    return Workload(f"convT-{kind}", "convT", desc, data,
                    {"fastcnn": fastcnn_build, "torch": torch_build},
                    flops=(3 if backward else 1) * fl)


def _maxpool_workload(backward):
    shape = (64, 32, 28, 28)

    def data(rng):
        return {"x": _f32(rng, shape), "gy": _f32(rng, (64, 32, 14, 14))}

    def fastcnn_build(d, ctx):
        import fastcnn.functional as F
        x, gy = d["x"], d["gy"]
        if not backward:
            return lambda: F.max_pool2d(x, 2, 2)

        # the layer, as training runs it (it keeps each window's argmax in one byte)
        from fastcnn import nn
        pool = nn.MaxPool2d(2, 2)

        def step():
            pool(x)
            return pool.backward(gy)
        return step

    def torch_build(d, ctx):
        torch = _torch()
        tF = torch.nn.functional
        x = _tensor(d["x"], backward)
        gy = _tensor(d["gy"])
        if not backward:
            def fwd():
                with torch.no_grad():
                    return tF.max_pool2d(x, 2, 2)
            return fwd

        def step():
            y = tF.max_pool2d(x, 2, 2)
            return torch.autograd.grad(y, x, gy)
        return step

    kind = "fwdbwd" if backward else "fwd"
    return Workload(f"maxpool-{kind}", "pool",
                    "MaxPool2d 2x2/2 on 64x32x28x28, " + ("forward + backward" if backward else "forward"),
                    data, {"fastcnn": fastcnn_build, "torch": torch_build})


def gemm_workload(n):
    """Square float32 matmul n x n x n: fastcnn, PyTorch and numpy's matmul (its BLAS)."""

    def data(rng):
        return {"a": _f32(rng, (n, n)), "b": _f32(rng, (n, n))}

    def fastcnn_build(d, ctx):
        import fastcnn.functional as F
        a, b = d["a"], d["b"]
        return lambda: F.matmul(a, b)

    def torch_build(d, ctx):
        torch = _torch()
        a, b = _tensor(d["a"]), _tensor(d["b"])
        return lambda: torch.matmul(a, b)

    def numpy_build(d, ctx):
        a, b = d["a"], d["b"]
        return lambda: np.matmul(a, b)

    return Workload(f"gemm-{n}", "gemm", f"matmul {n}x{n}x{n} float32", data,
                    {"fastcnn": fastcnn_build, "torch": torch_build, "numpy": numpy_build},
                    flops=2 * n ** 3)


def _bn_workload():
    shape = (64, 64, 32, 32)
    C = shape[1]

    def data(rng):
        return {"x": _f32(rng, shape), "gy": _f32(rng, shape),
                "w": (1 + 0.1 * rng.standard_normal(C)).astype(np.float32),
                "b": (0.1 * rng.standard_normal(C)).astype(np.float32)}

    def fastcnn_build(d, ctx):
        import fastcnn.functional as F
        x, gy, w, b = d["x"], d["gy"], d["w"], d["b"]
        rm = np.zeros(C, np.float32)
        rv = np.ones(C, np.float32)

        def step():
            _, mean, invstd = F.batch_norm(x, rm, rv, w, b, training=True)
            return F.batch_norm_backward(gy, x, w, mean, invstd, training=True)
        return step

    def torch_build(d, ctx):
        torch = _torch()
        tF = torch.nn.functional
        x, w, b = (_tensor(d[k], True) for k in ("x", "w", "b"))
        gy = _tensor(d["gy"])
        rm = torch.zeros(C)
        rv = torch.ones(C)

        def step():
            y = tF.batch_norm(x, rm, rv, w, b, training=True)
            return torch.autograd.grad(y, (x, w, b), gy)
        return step

    return Workload("bn2d-fwdbwd", "norm",
                    "BatchNorm2d(64) training mode on 64x64x32x32, forward + backward", data,
                    {"fastcnn": fastcnn_build, "torch": torch_build})


def _xent_workload():
    N, C = 256, 10

    def data(rng):
        return {"logits": _f32(rng, (N, C)), "target": rng.integers(0, C, N).astype(np.int64)}

    def fastcnn_build(d, ctx):
        import fastcnn.functional as F
        logits, target = d["logits"], d["target"]

        def step():
            F.cross_entropy(logits, target)
            return F.cross_entropy_backward(logits, target)
        return step

    def torch_build(d, ctx):
        torch = _torch()
        tF = torch.nn.functional
        logits = _tensor(d["logits"], True)
        target = _tensor(d["target"])

        def step():
            loss = tF.cross_entropy(logits, target)
            return torch.autograd.grad(loss, logits)
        return step

    return Workload("xent-fwdbwd", "loss", "cross-entropy 256x10 (mean), forward + backward", data,
                    {"fastcnn": fastcnn_build, "torch": torch_build})


# ----------------------------------------------------------------------- models
def lenet(nn):
    """LeNet of the reference workloads, from ``nn`` (fastcnn.nn or torch.nn: same names)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))


def dcgan28(nn, nz=100):
    G = nn.Sequential(
        nn.Linear(nz, 128 * 7 * 7), nn.Unflatten(1, (128, 7, 7)), nn.BatchNorm2d(128), nn.ReLU(),
        nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh())
    D = nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(6272, 1))
    return G, D


def dcgan64(nn, nz=100, ngf=64, ndf=64, nc=3):
    """Radford et al.'s DCGAN for 64x64 images (no biases; the discriminator returns logits)."""
    G = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())
    D = nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False))
    return G, D


def _copy_state(fc_model, torch_model):
    """Load a fastcnn model's state dict into the same PyTorch architecture."""
    torch_model.load_state_dict({k: _tensor(v) for k, v in fc_model.state_dict().items()})


def _lenet_data(batch):
    def data(rng):
        return {"x": rng.random((batch, 1, 28, 28), dtype=np.float32),
                "y": rng.integers(0, 10, batch).astype(np.int64)}
    return data


def _lenet_train_workload():
    def fastcnn_build(d, ctx):
        nn, optim = _import_layers()
        model = lenet(nn)
        ctx["lenet"] = model.state_dict()
        crit = nn.CrossEntropyLoss()
        opt = optim.Adam(model.parameters(), lr=1e-3)
        x, y = d["x"], d["y"]

        def step():
            loss = crit(model(x), y)
            opt.zero_grad()
            # the input needs no gradient: PyTorch does not compute one either
            model.backward(crit.backward(), need_input_grad=False)
            opt.step()
            return loss
        return step

    def torch_build(d, ctx):
        torch = _torch()
        model = lenet(torch.nn)
        if "lenet" in ctx:
            model.load_state_dict({k: _tensor(v) for k, v in ctx["lenet"].items()})
        crit = torch.nn.CrossEntropyLoss()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y = _tensor(d["x"]), _tensor(d["y"])

        def step():
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            opt.step()
            return loss
        return step

    return Workload("lenet-train", "model",
                    "LeNet training step, batch 64: forward, cross-entropy, backward, Adam",
                    _lenet_data(64), {"fastcnn": fastcnn_build, "torch": torch_build})


def _lenet_infer_workload(batch):
    def fastcnn_build(d, ctx):
        nn, _ = _import_layers()
        model = lenet(nn)
        model.eval()
        ctx["lenet"] = model.state_dict()
        x = d["x"]
        return lambda: model(x)

    def torch_build(d, ctx):
        torch = _torch()
        model = lenet(torch.nn)
        if "lenet" in ctx:
            model.load_state_dict({k: _tensor(v) for k, v in ctx["lenet"].items()})
        model.eval()
        x = _tensor(d["x"])

        def fwd():
            with torch.inference_mode():
                return model(x)
        return fwd

    return Workload(f"lenet-infer-b{batch}", "model", f"LeNet inference (eval mode), batch {batch}",
                    _lenet_data(batch), {"fastcnn": fastcnn_build, "torch": torch_build})


def _gan_workload(name, make, image_shape, z_shape, desc):
    batch = image_shape[0]

    def data(rng):
        return {"real": rng.uniform(-1, 1, image_shape).astype(np.float32),
                "z": _f32(rng, z_shape)}

    def fastcnn_build(d, ctx):
        nn, optim = _import_layers()
        G, D = make(nn)
        ctx["G"], ctx["D"] = G.state_dict(), D.state_dict()
        crit = nn.BCEWithLogitsLoss()
        opt_g = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        real, z = d["real"], d["z"]
        out_shape = (batch, 1) if len(z_shape) == 2 else (batch, 1, 1, 1)
        ones = np.ones(out_shape, np.float32)
        zeros = np.zeros(out_shape, np.float32)

        def iteration():
            fake = G(z)
            # discriminator step on real and fake (gradients accumulate)
            opt_d.zero_grad()
            loss_real = crit(D(real), ones)
            D.backward(crit.backward(), need_input_grad=False)
            loss_fake = crit(D(fake), zeros)
            D.backward(crit.backward(), need_input_grad=False)
            opt_d.step()
            # generator step through the updated discriminator
            opt_g.zero_grad()
            loss_g = crit(D(fake), ones)
            G.backward(D.backward(crit.backward()), need_input_grad=False)
            opt_g.step()
            return loss_real + loss_fake, loss_g
        return iteration

    def torch_build(d, ctx):
        torch = _torch()
        G, D = make(torch.nn)
        if "G" in ctx:
            G.load_state_dict({k: _tensor(v) for k, v in ctx["G"].items()})
            D.load_state_dict({k: _tensor(v) for k, v in ctx["D"].items()})
        crit = torch.nn.BCEWithLogitsLoss()
        opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        real, z = _tensor(d["real"]), _tensor(d["z"])
        out_shape = (batch, 1) if len(z_shape) == 2 else (batch, 1, 1, 1)
        ones = torch.ones(out_shape)
        zeros = torch.zeros(out_shape)

        def iteration():
            fake = G(z)
            opt_d.zero_grad()
            loss_real = crit(D(real), ones)
            loss_real.backward()
            loss_fake = crit(D(fake.detach()), zeros)
            loss_fake.backward()
            opt_d.step()
            opt_g.zero_grad()
            loss_g = crit(D(fake), ones)
            loss_g.backward()
            opt_g.step()
            return loss_real + loss_fake, loss_g
        return iteration

    return Workload(name, "model", desc, data, {"fastcnn": fastcnn_build, "torch": torch_build})


# --------------------------------------------------------------------- registry
def _all():
    out = []
    for tag, spec in CONV_SHAPES.items():
        out.append(_conv_workload(tag, spec, backward=False))
        out.append(_conv_workload(tag, spec, backward=True))
    out += [_convt_workload(False), _convt_workload(True),
            _maxpool_workload(False), _maxpool_workload(True),
            gemm_workload(1024), gemm_workload(2048),
            _bn_workload(), _xent_workload(),
            _lenet_train_workload(), _lenet_infer_workload(1), _lenet_infer_workload(64),
            _gan_workload("dcgan28-iter", dcgan28, (64, 1, 28, 28), (64, 100),
                          "DCGAN-28 iteration, batch 64: D step on real+fake, then G step (Adam)"),
            _gan_workload("dcgan64-iter", dcgan64, (64, 3, 64, 64), (64, 100, 1, 1),
                          "DCGAN-64 (Radford et al.) iteration, batch 64: D step on real+fake, then G step")]
    return out


WORKLOADS = {w.name: w for w in _all()}

# workloads of the thread-scaling run: convolution forward+backward and the LeNet step
SCALING = [n for n in WORKLOADS if n.endswith("-fwdbwd") and n.startswith("conv")] + ["lenet-train"]


def get(name):
    """The workload called ``name`` (``gemm-N`` for any N is made on demand)."""
    if name in WORKLOADS:
        return WORKLOADS[name]
    if name.startswith("gemm-") and name[5:].isdigit() and int(name[5:]) > 0:
        return gemm_workload(int(name[5:]))
    raise KeyError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")


def _matches(name, pattern):
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


def select(patterns, names=None):
    """Workload names matching any of ``patterns`` (comma-separated substrings, globs or full names)."""
    names = list(WORKLOADS) if names is None else list(names)
    if not patterns:
        return names
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    # a pattern that is a workload's full name selects that workload only
    pats = [(p, p in names) for p in pats]
    return [n for n in names if any((n == p) if exact else _matches(n, p) for p, exact in pats)]
