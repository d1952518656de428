"""fastcnn.nn against torch.nn: same weights give the same outputs, gradients, state dicts and reprs."""
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import nn
from fastcnn._random import manual_seed

TOLS = {np.float64: dict(rtol=1e-8, atol=1e-10), np.float32: dict(rtol=1e-4, atol=1e-5)}
IDS = {np.float64: "f64", np.float32: "f32"}


@pytest.fixture(autouse=True)
def _one_thread():
    fastcnn.set_num_threads(1)  # small problems; results do not depend on the thread count


def build_lenet(ns, c=4, hidden=16):
    return ns.Sequential(
        ns.Conv2d(1, c, 3, padding=1), ns.BatchNorm2d(c), ns.ReLU(), ns.MaxPool2d(2),
        ns.Conv2d(c, 2 * c, 3, padding=1), ns.ReLU(), ns.MaxPool2d(2),
        ns.Flatten(), ns.Linear(2 * c * 7 * 7, hidden), ns.ReLU(), ns.Linear(hidden, 10))


def build_generator(ns, nz=16, ngf=8):
    return ns.Sequential(
        ns.Linear(nz, 2 * ngf * 7 * 7), ns.Unflatten(1, (2 * ngf, 7, 7)), ns.BatchNorm2d(2 * ngf), ns.ReLU(),
        ns.ConvTranspose2d(2 * ngf, ngf, 4, 2, 1), ns.BatchNorm2d(ngf), ns.ReLU(),
        ns.ConvTranspose2d(ngf, 1, 4, 2, 1), ns.Tanh())


def build_discriminator(ns, ndf=8):
    return ns.Sequential(
        ns.Conv2d(1, ndf, 4, 2, 1), ns.LeakyReLU(0.2),
        ns.Conv2d(ndf, 2 * ndf, 4, 2, 1), ns.BatchNorm2d(2 * ndf), ns.LeakyReLU(0.2),
        ns.Flatten(), ns.Linear(2 * ndf * 7 * 7, 1))


def twins(torch, build, dtype):
    """(fastcnn model, torch model) with torch's weights loaded into fastcnn."""
    torch.manual_seed(0)
    tm = build(torch.nn).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for m in tm.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
    fm = build(nn)
    if dtype == np.float64:
        fm.double()
    fm.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    return fm, tm


def compare(torch, fm, tm, x, dtype, train, loss="sum-sq"):
    fm.train(train)
    tm.train(train)
    tm.zero_grad()
    tol = TOLS[dtype]
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = tm(xt)
    y = fm(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol, err_msg="output")
    r = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    (yt * torch.from_numpy(r)).sum().backward()
    fm.zero_grad()
    dx = fm.backward(r)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol, err_msg="input grad")
    tparams = dict(tm.named_parameters())
    # float32: gradients that cancel to ~0 (a bias before BatchNorm) carry rounding noise of the
    # model's gradient scale, so absolute tolerances scale with the largest parameter gradient
    scale = max([1.0] + [float(p.grad.abs().max()) for p in tm.parameters()])
    ptol = dict(tol, atol=tol["atol"] * scale) if dtype == np.float32 else tol
    for name, p in fm.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), **ptol, err_msg=name)
    tstate = tm.state_dict()
    for k, v in fm.state_dict().items():
        np.testing.assert_allclose(v, tstate[k].numpy(), **tol, err_msg=k)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=IDS.get)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("which", ["lenet", "G", "D"])
def test_models_match_pytorch(torch, which, train, dtype):
    rng = np.random.default_rng(0)
    if which == "lenet":
        fm, tm = twins(torch, build_lenet, dtype)
        x = rng.standard_normal((3, 1, 28, 28)).astype(dtype)
    elif which == "G":
        fm, tm = twins(torch, build_generator, dtype)
        x = rng.standard_normal((3, 16)).astype(dtype)
    else:
        fm, tm = twins(torch, build_discriminator, dtype)
        x = rng.uniform(-1, 1, (3, 1, 28, 28)).astype(dtype)
    compare(torch, fm, tm, x, dtype, train)
    # a second batch: running statistics and num_batches_tracked keep matching
    compare(torch, fm, tm, x[::-1].copy() * 0.5, dtype, train)


def test_lenet_loss_and_input_gradient_match_pytorch(torch):
    fm, tm = twins(torch, build_lenet, np.float64)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 1, 28, 28))
    y = np.array([1, 7, 3, 3])
    crit, tcrit = nn.CrossEntropyLoss(label_smoothing=0.1), torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    xt = torch.from_numpy(x).requires_grad_(True)
    lt = tcrit(tm(xt), torch.from_numpy(y))
    lt.backward()
    loss = crit(fm(x), y)
    dx = fm.backward(crit.backward())
    assert loss == pytest.approx(lt.item(), rel=1e-10)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-8, atol=1e-12)


def test_state_dict_round_trip_both_ways(torch):
    manual_seed(3)
    fm = build_lenet(nn)
    fm(np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32))  # move BN stats
    tm = build_lenet(torch.nn)
    missing = tm.load_state_dict({k: torch.from_numpy(v) for k, v in fm.state_dict().items()})
    assert not missing.missing_keys and not missing.unexpected_keys
    back = build_lenet(nn)
    back.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    a, b = fm.state_dict(), back.state_dict()
    assert list(a) == list(tm.state_dict()) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == tuple(tm.state_dict()[k].shape)
        assert np.array_equal(a[k], b[k]), k
    direct = build_lenet(nn)  # torch tensors are read as arrays too
    direct.load_state_dict(tm.state_dict())
    for k, v in direct.state_dict().items():
        assert np.array_equal(v, a[k]), k
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    fm.eval(), back.eval()
    assert np.array_equal(fm(x), back(x))


@pytest.mark.parametrize("make", [
    lambda ns: build_lenet(ns),
    lambda ns: build_generator(ns),
    lambda ns: build_discriminator(ns),
    lambda ns: ns.Sequential(ns.Conv2d(3, 8, (3, 5), stride=(2, 1), padding=2,
                                       dilation=2, groups=1, bias=False),
                             ns.Conv2d(8, 8, 3, padding="same", groups=4),
                             ns.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, groups=2),
                             ns.BatchNorm2d(4, eps=1e-3, momentum=None, affine=False),
                             ns.BatchNorm1d(4, track_running_stats=False),
                             ns.MaxPool2d(3, 2, 1, ceil_mode=True), ns.MaxPool2d((2, 3)),
                             ns.AvgPool2d(3, stride=2, padding=1), ns.AdaptiveAvgPool2d((1, 1)),
                             ns.Dropout(0.3), ns.Upsample(scale_factor=2), ns.ReLU(inplace=True),
                             ns.LeakyReLU(), ns.Sigmoid(), ns.Softmax(dim=-1), ns.LogSoftmax(1),
                             ns.Identity(), ns.Flatten(2), ns.Unflatten(-1, (2, 2)),
                             ns.Sequential(ns.Linear(3, 4, bias=False), ns.Sequential())),
], ids=["lenet", "G", "D", "many"])
def test_repr_matches_pytorch(torch, make):
    assert repr(make(nn)) == repr(make(torch.nn))


def _layer_cases():
    return [
        ("conv", lambda ns: ns.Conv2d(4, 6, 3, stride=2, padding=1), (2, 4, 9, 9)),
        ("conv-dil-groups", lambda ns: ns.Conv2d(4, 6, (3, 2), padding=(2, 1), dilation=2, groups=2,
                                                 bias=False), (2, 4, 8, 7)),
        ("conv-same", lambda ns: ns.Conv2d(3, 5, 3, padding="same"), (2, 3, 6, 6)),
        # an odd total padding: one more row and column after than before
        ("conv-same-even", lambda ns: ns.Conv2d(3, 5, (2, 4), padding="same"), (2, 3, 6, 7)),
        ("conv-same-dilated", lambda ns: ns.Conv2d(3, 5, 2, padding="same", dilation=3), (2, 3, 5, 6)),
        ("convT", lambda ns: ns.ConvTranspose2d(4, 6, 4, 2, 1), (2, 4, 5, 5)),
        ("convT-op-groups", lambda ns: ns.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                                          groups=2, dilation=1), (2, 4, 4, 5)),
        ("linear", lambda ns: ns.Linear(7, 5), (3, 7)),
        ("linear-3d", lambda ns: ns.Linear(7, 5, bias=False), (2, 3, 7)),
        ("maxpool", lambda ns: ns.MaxPool2d(3, 2, 1), (2, 3, 7, 7)),
        ("maxpool-ceil", lambda ns: ns.MaxPool2d(2, ceil_mode=True), (2, 3, 7, 7)),
        ("avgpool", lambda ns: ns.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 7, 7)),
        ("avgpool-divisor", lambda ns: ns.AvgPool2d(3, 2, 1, ceil_mode=True, divisor_override=5), (2, 3, 7, 8)),
        ("avgpool-divisor-neg", lambda ns: ns.AvgPool2d(2, divisor_override=-3), (2, 3, 4, 6)),
        ("adaptive", lambda ns: ns.AdaptiveAvgPool2d(1), (2, 3, 5, 4)),
        ("adaptive-none", lambda ns: ns.AdaptiveAvgPool2d((None, 3)), (2, 3, 5, 7)),
        ("adaptive-none-h", lambda ns: ns.AdaptiveAvgPool2d((2, None)), (2, 3, 5, 4)),
        ("bn2d", lambda ns: ns.BatchNorm2d(3), (4, 3, 5, 5)),
        ("bn2d-momentum-none", lambda ns: ns.BatchNorm2d(3, momentum=None, affine=False), (4, 3, 2, 2)),
        ("bn1d", lambda ns: ns.BatchNorm1d(3, eps=1e-3, momentum=0.3), (5, 3)),
        ("bn1d-no-bias", lambda ns: ns.BatchNorm1d(3, bias=False), (5, 3)),
        ("bn1d-3d", lambda ns: ns.BatchNorm1d(3), (4, 3, 6)),
        ("bn-no-stats", lambda ns: ns.BatchNorm2d(3, track_running_stats=False), (4, 3, 3, 3)),
        ("relu", lambda ns: ns.ReLU(), (3, 8)),
        ("leaky", lambda ns: ns.LeakyReLU(0.2), (3, 8)),
        ("tanh", lambda ns: ns.Tanh(), (3, 8)),
        ("sigmoid", lambda ns: ns.Sigmoid(), (3, 8)),
        ("softmax", lambda ns: ns.Softmax(dim=1), (3, 8)),
        ("logsoftmax", lambda ns: ns.LogSoftmax(dim=-1), (3, 4, 8)),
        ("flatten", lambda ns: ns.Flatten(), (2, 3, 4, 5)),
        ("unflatten", lambda ns: ns.Unflatten(1, (2, 3)), (4, 6)),
        ("upsample", lambda ns: ns.Upsample(scale_factor=2), (2, 3, 4, 5)),
        ("upsample-size", lambda ns: ns.Upsample(size=(8, 15)), (2, 3, 4, 5)),
        ("upsample-pair", lambda ns: ns.Upsample(scale_factor=(2, 3)), (2, 3, 4, 5)),
        # (N, C, L) input: the last dimension only
        ("upsample-1d", lambda ns: ns.Upsample(scale_factor=3), (2, 3, 5)),
        ("upsample-1d-one", lambda ns: ns.Upsample(scale_factor=(2,)), (1, 4, 3)),
        ("upsample-1d-size", lambda ns: ns.Upsample(size=10), (2, 3, 5)),
        # any size or factor, and mode 'nearest-exact'
        ("upsample-fraction", lambda ns: ns.Upsample(scale_factor=1.5), (2, 3, 4, 5)),
        ("upsample-down", lambda ns: ns.Upsample(size=(3, 2)), (2, 3, 5, 7)),
        ("upsample-exact", lambda ns: ns.Upsample(scale_factor=(0.7, 2.5), mode="nearest-exact"), (2, 3, 5, 6)),
        ("upsample-recompute", lambda ns: ns.Upsample(scale_factor=1.7, recompute_scale_factor=True), (1, 2, 6, 6)),
        ("upsample-1d-fraction", lambda ns: ns.Upsample(scale_factor=1.5), (2, 3, 5)),
        ("upsample-bilinear", lambda ns: ns.Upsample(scale_factor=2, mode="bilinear"), (2, 3, 4, 5)),
        ("upsample-bilinear-corners", lambda ns: ns.Upsample(size=(7, 9), mode="bilinear", align_corners=True),
         (2, 3, 4, 5)),
        ("upsample-linear", lambda ns: ns.Upsample(scale_factor=1.5, mode="linear"), (2, 3, 5)),
        ("dropout-eval", lambda ns: ns.Dropout(0.5).eval(), (3, 8)),
        ("identity", lambda ns: ns.Identity(), (3, 8)),
    ]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=IDS.get)
@pytest.mark.parametrize("name,make,shape", _layer_cases(), ids=[c[0] for c in _layer_cases()])
def test_layers_match_pytorch(torch, name, make, shape, dtype):
    torch.manual_seed(0)
    tm = make(torch.nn).to(torch.float64 if dtype == np.float64 else torch.float32)
    fm = make(nn).to(dtype)
    fm.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    compare(torch, fm, tm, x, dtype, train=tm.training)
    if any(isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d) for m in tm.modules()):
        compare(torch, fm, tm, x * 2 + 1, dtype, train=False)


def test_float32_input_to_double_model_matches_pytorch(torch):
    fm, tm = twins(torch, build_discriminator, np.float64)
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    y = fm(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, tm(torch.from_numpy(x.astype(np.float64))).detach().numpy(), rtol=1e-10)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_match_pytorch(torch, reduction):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5))
    labels = rng.integers(0, 5, 6)
    w = rng.uniform(0.5, 2, 5)
    t = rng.standard_normal((6, 5))
    tb = rng.uniform(0, 1, (6, 5))
    cases = [
        (nn.CrossEntropyLoss(reduction=reduction), torch.nn.CrossEntropyLoss(reduction=reduction), labels),
        (nn.CrossEntropyLoss(w, reduction=reduction, label_smoothing=0.2),
         torch.nn.CrossEntropyLoss(torch.from_numpy(w), reduction=reduction, label_smoothing=0.2), labels),
        (nn.BCEWithLogitsLoss(reduction=reduction), torch.nn.BCEWithLogitsLoss(reduction=reduction), tb),
        (nn.MSELoss(reduction=reduction), torch.nn.MSELoss(reduction=reduction), t),
        (nn.L1Loss(reduction=reduction), torch.nn.L1Loss(reduction=reduction), t),
    ]
    for crit, tcrit, target in cases:
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        lt = tcrit(xt, torch.from_numpy(target))
        loss = crit(x, target)
        if reduction == "none":
            go = rng.standard_normal(lt.shape)
            lt.backward(torch.from_numpy(go))
            g = crit.backward(go)
            np.testing.assert_allclose(loss, lt.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=repr(crit))
        else:
            lt.backward()
            g = crit.backward()
            assert isinstance(loss, float)
            assert loss == pytest.approx(lt.item(), rel=1e-10), repr(crit)
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=repr(crit))


def _random_stack(seed):
    """A random conv stack: conv (+BN) + activation + 2x2 max pool blocks (pooled by the
    kernel in eval mode where one can: one input channel, or Winograd widths), then a
    Linear; odd sizes, one image or a few."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 4))
    c_in = int(rng.choice([1, 1, 3, 16, 17]))
    h, w = (int(v) for v in rng.integers(4, 19, size=2))
    specs, c, hh, ww = [], c_in, h, w
    for _ in range(int(rng.integers(1, 3))):
        k = int(rng.choice([1, 5, 16, 24, 33]))
        pad = int(rng.integers(0, 3))
        if hh + 2 * pad - 2 < 2 or ww + 2 * pad - 2 < 2:
            break
        bn = bool(rng.integers(0, 2))
        act = str(rng.choice(["relu", "leaky", "none"]))
        specs.append((c, k, pad, bn, act))
        c, hh, ww = k, (hh + 2 * pad - 2) // 2, (ww + 2 * pad - 2) // 2
        if hh < 1 or ww < 1:
            specs.pop()
            break
        c_last, h_last, w_last = c, hh, ww
    if not specs:
        return None
    c, hh, ww = c_last, h_last, w_last

    def build(ns):
        mods = []
        for ci, k, pad, bn, act in specs:
            mods.append(ns.Conv2d(ci, k, 3, padding=pad))
            if bn:
                mods.append(ns.BatchNorm2d(k))
            if act == "relu":
                mods.append(ns.ReLU())
            elif act == "leaky":
                mods.append(ns.LeakyReLU(0.1))
            mods.append(ns.MaxPool2d(2))
        mods += [ns.Flatten(), ns.Linear(c * hh * ww, 3)]
        return ns.Sequential(*mods)

    return build, (n, c_in, h, w), int(rng.integers(1, 4))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=IDS.get)
@pytest.mark.parametrize("seed", range(24))
def test_random_conv_pool_stacks_match_pytorch(torch, seed, dtype):
    """Random conv + BN + activation + max pool stacks in eval mode (fused and pooled
    blocks, their kept kernel calls on a repeated call) and in training mode, against
    PyTorch: outputs, input gradients, parameter gradients."""
    case = _random_stack(seed)
    if case is None:
        pytest.skip("no valid stack for this seed")
    build, shape, nt = case
    fastcnn.set_num_threads(nt)
    fm, tm = twins(torch, build, dtype)
    x = np.random.default_rng(seed + 100).standard_normal(shape).astype(dtype)
    compare(torch, fm, tm, x, dtype, train=False)
    compare(torch, fm, tm, x, dtype, train=False)   # the kept kernel calls
    compare(torch, fm, tm, x[:1].copy(), dtype, train=False)
    compare(torch, fm, tm, x, dtype, train=True)


def _pool_size(n, k, s, p, d, ceil):
    o = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    return o - 1 if ceil and (o - 1) * s >= n + p else o


def _random_layer(rng, n, c, h, w):
    """(make(ns), channels, height, width) of one random layer or block for an input of
    (n, c, h, w), or None where the draw does not fit it."""
    kind = str(rng.choice(["conv", "conv", "convt", "block", "block", "maxpool", "avgpool", "adaptive",
                           "bn", "act", "upsample"]))
    ints = lambda lo, hi: (int(rng.integers(lo, hi)), int(rng.integers(lo, hi)))   # noqa: E731
    if kind in ("conv", "convt"):
        g = int(rng.choice([1, 1, 2, 3]))
        g = g if c % g == 0 else 1
        k = g * int(rng.integers(1, 4))
        (R, S), st, dil = ints(1, 6), ints(1, 4), ints(1, 3)
        bias = bool(rng.random() < 0.7)
        if kind == "convt":
            pad = (int(rng.integers(0, R)), int(rng.integers(0, S)))
            op = (int(rng.integers(0, max(st[0], dil[0]))), int(rng.integers(0, max(st[1], dil[1]))))
            oh = (h - 1) * st[0] - 2 * pad[0] + dil[0] * (R - 1) + op[0] + 1
            ow = (w - 1) * st[1] - 2 * pad[1] + dil[1] * (S - 1) + op[1] + 1
            if not (1 <= oh <= 40 and 1 <= ow <= 40):
                return None
            return lambda ns: ns.ConvTranspose2d(c, k, (R, S), st, pad, op, g, bias, dil), k, oh, ow
        mode = str(rng.choice(["zeros", "zeros", "reflect", "replicate", "circular"]))
        if st == (1, 1) and rng.random() < 0.25:
            pad = str(rng.choice(["same", "valid"]))
            mode = "zeros"
            ph, pw = (0, 0) if pad == "valid" else (dil[0] * (R - 1), dil[1] * (S - 1))
        else:
            pad = (int(rng.integers(0, R + 1)), int(rng.integers(0, S + 1)))
            if mode != "zeros":
                pad = (min(pad[0], h - 1), min(pad[1], w - 1))
            ph, pw = 2 * pad[0], 2 * pad[1]
        oh = (h + ph - dil[0] * (R - 1) - 1) // st[0] + 1
        ow = (w + pw - dil[1] * (S - 1) - 1) // st[1] + 1
        if oh < 1 or ow < 1:
            return None
        return lambda ns: ns.Conv2d(c, k, (R, S), st, pad, dil, g, bias, mode), k, oh, ow
    if kind == "block":
        # conv [+ BN] + activation [+ 2x2 max pool]: the fused blocks of Sequential
        k = int(rng.choice([1, 3, 8, 16, 17, 32]))
        R = int(rng.choice([1, 2, 3, 3, 3, 4]))
        st, pad = (1, 1) if R == 3 and rng.random() < 0.5 else (int(rng.choice([1, 1, 2])), int(rng.integers(0, R)))
        oh, ow = (h + 2 * pad - R) // st + 1, (w + 2 * pad - R) // st + 1
        if oh < 1 or ow < 1:
            return None
        bn = rng.random() < 0.5 and n * oh * ow > 1
        act = str(rng.choice(["relu", "leaky", "negative", "none"]))
        pool = act != "none" and rng.random() < 0.6 and oh >= 2 and ow >= 2
        bias = bool(rng.random() < 0.7)

        def block(ns):
            mods = [ns.Conv2d(c, k, R, st, pad, bias=bias)] + ([ns.BatchNorm2d(k)] if bn else [])
            if act != "none":
                mods.append(ns.ReLU() if act == "relu" else ns.LeakyReLU(0.1 if act == "leaky" else -0.3))
            return ns.Sequential(*mods, *([ns.MaxPool2d(2)] if pool else []))
        return block, k, (oh // 2 if pool else oh), (ow // 2 if pool else ow)
    if kind in ("maxpool", "avgpool"):
        (R, S), st = ints(1, 5), ints(1, 4)
        pad = (int(rng.integers(0, R // 2 + 1)), int(rng.integers(0, S // 2 + 1)))
        dil = ints(1, 3) if kind == "maxpool" else (1, 1)
        ceil = bool(rng.random() < 0.4)
        oh, ow = _pool_size(h, R, st[0], pad[0], dil[0], ceil), _pool_size(w, S, st[1], pad[1], dil[1], ceil)
        if oh < 1 or ow < 1:
            return None
        if kind == "avgpool":
            cip, div = bool(rng.random() < 0.5), (None if rng.random() < 0.7 else int(rng.integers(1, 7)))
            return lambda ns: ns.AvgPool2d((R, S), st, pad, ceil, cip, div), c, oh, ow
        # (no window of padding only: PyTorch's backward writes past its input there)
        for n_in, k_, s_, p_, d_, o in ((h, R, st[0], pad[0], dil[0], oh), (w, S, st[1], pad[1], dil[1], ow)):
            if any(all(not 0 <= q * s_ - p_ + d_ * i < n_in for i in range(k_)) for q in range(o)):
                return None
        return lambda ns: ns.MaxPool2d((R, S), st, pad, dil, ceil_mode=ceil), c, oh, ow
    if kind == "adaptive":
        oh, ow = int(rng.integers(1, h + 3)), int(rng.integers(1, w + 3))
        return lambda ns: ns.AdaptiveAvgPool2d((oh, ow)), c, oh, ow
    if kind == "bn":
        if n * h * w < 2:
            return None
        momentum, affine = float(rng.choice([0.1, 0.5])), bool(rng.random() < 0.8)
        return lambda ns: ns.BatchNorm2d(c, momentum=momentum, affine=affine), c, h, w
    if kind == "act":
        name = str(rng.choice(["ReLU", "LeakyReLU", "Tanh", "Sigmoid"]))
        slope = float(rng.choice([0.2, -0.3, 1.5]))
        return (lambda ns: ns.LeakyReLU(slope)) if name == "LeakyReLU" else (lambda ns: getattr(ns, name)()), c, h, w
    if rng.random() < 0.5:
        f = int(rng.integers(1, 4))
        if h * f > 40 or w * f > 40:
            return None
        return lambda ns: ns.Upsample(scale_factor=f), c, h * f, w * f
    # bilinear, to a size or by a factor (nearest to other sizes has its own tests: in float64
    # PyTorch's backward reads positions in float32 arithmetic, its forward in float64)
    oh, ow = int(rng.integers(1, 2 * h + 3)), int(rng.integers(1, 2 * w + 3))
    ac = [None, True, False][int(rng.integers(0, 3))]
    if rng.random() < 0.5:
        return lambda ns: ns.Upsample(size=(oh, ow), mode="bilinear", align_corners=ac), c, oh, ow
    f = (float(rng.choice([0.5, 1.5, 2.0, 2.5])), float(rng.choice([0.7, 1.0, 1.5, 3.0])))
    oh, ow = int(h * f[0]), int(w * f[1])
    if oh < 1 or ow < 1:
        return None
    return lambda ns: ns.Upsample(scale_factor=f, mode="bilinear", align_corners=ac), c, oh, ow


def _random_layer_stack(seed):
    """A random Sequential of one to four layers and blocks of every kind (convolutions
    with any padding mode, groups, dilation and stride, transposed ones with output
    padding, pools in ceil mode, fused conv blocks, BatchNorm, upsampling), sometimes
    ending in Flatten + Linear (+ BatchNorm1d + ReLU + Linear): (build, input shape)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5))
    if rng.random() < 0.5:
        c, h, w = int(rng.integers(1, 7)), int(rng.integers(1, 13)), int(rng.integers(1, 13))
    else:
        c = int(rng.integers(16, 40))
        h = w = int(rng.integers(4, 20))
    shape, layers = (n, c, h, w), []
    for _ in range(int(rng.integers(1, 5))):
        for _ in range(20):
            drawn = _random_layer(rng, n, c, h, w)
            if drawn is not None:
                break
        if drawn is None:
            break
        make, c, h, w = drawn
        layers.append(make)
    head = int(rng.choice([0, 0, 1, 2])) if layers else 1
    features = c * h * w

    def build(ns):
        mods = [make(ns) for make in layers]
        if head == 1:
            mods += [ns.Flatten(), ns.Linear(features, 3)]
        elif head == 2:
            mods += [ns.Flatten(), ns.Linear(features, 7)] + ([ns.BatchNorm1d(7)] if n > 1 else [])
            mods += [ns.ReLU(), ns.Linear(7, 2)]
        return ns.Sequential(*mods)
    return build, shape


@pytest.mark.parametrize("seed", range(60))
def test_random_layer_stacks_match_pytorch(torch, seed):
    """Random stacks of every layer kind in float64, against PyTorch: outputs, input and
    parameter gradients and running statistics in training and in eval mode (fused
    blocks and their kept kernel calls, a batch of another size), two threads for odd
    seeds."""
    build, shape = _random_layer_stack(seed)
    fastcnn.set_num_threads(1 + seed % 2)
    fm, tm = twins(torch, build, np.float64)
    x = np.random.default_rng(seed + 1000).standard_normal(shape)
    for train in (True, False, False):
        compare(torch, fm, tm, x, np.float64, train=train)
    if shape[0] > 1:
        compare(torch, fm, tm, x[:1].copy(), np.float64, train=False)
        compare(torch, fm, tm, x, np.float64, train=False)
        compare(torch, fm, tm, x, np.float64, train=True)


def _same_even_stack(ns):
    return ns.Sequential(ns.Conv2d(3, 8, 2, padding="same"), ns.ReLU(), ns.MaxPool2d(2),
                         ns.Conv2d(8, 16, 4, padding="same"), ns.BatchNorm2d(16), ns.ReLU(), ns.MaxPool2d(2),
                         ns.Conv2d(16, 4, (2, 3), padding="same", dilation=(3, 1)), ns.Tanh(), ns.Flatten(),
                         ns.Linear(4 * 3 * 3, 5))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=IDS.get)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_same_padding_of_even_kernels_in_fused_stacks_matches_pytorch(torch, train, dtype):
    """padding='same' with an even kernel (one more row and column after than before) in the
    kernels that pool as they store, in folded BatchNorm and in training."""
    torch.manual_seed(0)
    tm = _same_even_stack(torch.nn).to(torch.float64 if dtype == np.float64 else torch.float32)
    fm = _same_even_stack(nn).to(dtype)
    fm.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 13)).astype(dtype)
    for _ in range(2):
        compare(torch, fm, tm, x, dtype, train)


def _shared_cases(ns):
    """Sequentials that run one module at several positions (shared weights, a shared
    activation, normalisation or block), as PyTorch allows: the gradients of every use add up."""
    lin, conv, tanh = ns.Linear(6, 6), ns.Conv2d(3, 3, 3, padding=1), ns.Tanh()
    bn, block = ns.BatchNorm2d(3), ns.Sequential(ns.Conv2d(3, 3, 3, padding=1), ns.ReLU())
    return {
        "linear": (ns.Sequential(lin, ns.Tanh(), lin), (3, 6)),
        "linear-relu": (ns.Sequential(lin, ns.ReLU(), lin, ns.ReLU()), (3, 6)),
        "conv": (ns.Sequential(conv, ns.Tanh(), conv), (2, 3, 5, 5)),
        "tanh": (ns.Sequential(ns.Linear(5, 5), tanh, ns.Linear(5, 5), tanh), (3, 5)),
        "batchnorm": (ns.Sequential(ns.Conv2d(3, 3, 3, padding=1), bn, ns.Tanh(), ns.Conv2d(3, 3, 1), bn),
                      (4, 3, 6, 6)),
        "block": (ns.Sequential(block, ns.Tanh(), block), (2, 3, 7, 7)),
        "nested": (ns.Sequential(ns.Sequential(conv, ns.Tanh()), ns.Sequential(conv, ns.Sigmoid())),
                   (2, 3, 4, 4)),
    }


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=IDS.get)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(_shared_cases(nn)))
def test_modules_used_twice_match_pytorch(torch, name, train, dtype):
    torch.manual_seed(0)
    tm, shape = _shared_cases(torch.nn)[name]
    tm = tm.to(torch.float64 if dtype == np.float64 else torch.float32)
    fm = _shared_cases(nn)[name][0].to(dtype)
    fm.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    for _ in range(2):   # the second call reuses the plan and what the first kept
        compare(torch, fm, tm, x, dtype, train)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (0, 3), (2, 3, 0, 4)], ids=["2d", "1d", "no-pixels"])
def test_batchnorm_of_an_empty_batch_matches_pytorch(torch, shape, train):
    """An empty batch: an empty output and input gradient, zero parameter gradients, the
    running statistics as they were (the batch count still advances in training)."""
    make = (lambda ns: ns.BatchNorm2d(3)) if len(shape) == 4 else (lambda ns: ns.BatchNorm1d(3))
    tm, fm = make(torch.nn).double().train(train), make(nn).double().train(train)
    xt = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    yt = tm(xt)
    yt.sum().backward()
    y = fm(np.zeros(shape))
    assert y.shape == tuple(yt.shape)
    fm.zero_grad()
    gx = fm.backward(np.ones(shape))
    assert gx.shape == shape
    for name, p in fm.named_parameters():
        np.testing.assert_array_equal(p.grad, dict(tm.named_parameters())[name].grad.numpy())
    for k, v in fm.state_dict().items():
        np.testing.assert_array_equal(v, tm.state_dict()[k].numpy(), err_msg=k)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index,smoothing,weighted", [(-100, 0.0, False), (-100, 0.1, True), (2, 0.0, True),
                                                             (0, 0.3, False), (-1, 0.0, True)])
def test_cross_entropy_ignore_index_matches_pytorch(torch, reduction, ignore_index, smoothing, weighted):
    """Rows labelled ignore_index (PyTorch's default -100, a class, another negative) count
    for nothing; every row ignored: the mean is nan and the gradient zero."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 5))
    labels = rng.integers(0, 5, 9)
    labels[[1, 4, 5]] = ignore_index
    w = rng.uniform(0.5, 2, 5) if weighted else None
    kw = dict(reduction=reduction, label_smoothing=smoothing, ignore_index=ignore_index)
    for target in (labels, np.full(9, ignore_index)):
        crit = nn.CrossEntropyLoss(w, **kw)
        tcrit = torch.nn.CrossEntropyLoss(None if w is None else torch.from_numpy(w), **kw)
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        lt = tcrit(xt, torch.from_numpy(target))
        loss = crit(x, target)
        go = rng.standard_normal(9) if reduction == "none" else None
        lt.backward(None if go is None else torch.from_numpy(go))
        g = crit.backward(go)
        np.testing.assert_allclose(loss, lt.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
        assert not g[target == ignore_index].any()
        if reduction != "none":
            f = F.cross_entropy(x, target, w, reduction, smoothing, ignore_index)
            np.testing.assert_allclose(f, loss, rtol=0, atol=0)
    # a label out of range that is not ignore_index is still an error, named by its position
    bad = labels.copy()
    bad[7] = 5
    with pytest.raises(ValueError, match="got 5 at position 7"):
        F.cross_entropy(x, bad, ignore_index=ignore_index)
    with pytest.raises(ValueError, match="got 5 at position 7"):
        F.cross_entropy_backward(x, bad, ignore_index=ignore_index)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=IDS.get)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weights", ["pos", "weight", "both", "pos-scalar", "weight-rows"])
def test_bce_with_logits_weights_match_pytorch(torch, weights, reduction, dtype):
    """BCEWithLogitsLoss with pos_weight (one per class) and weight (an element's, broadcast)."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((6, 4)) * 4).astype(dtype)
    t = rng.uniform(0, 1, (6, 4)).astype(dtype)
    pw = rng.uniform(0.5, 3, 4).astype(dtype) if weights in ("pos", "both") else \
        np.array([2.5], dtype) if weights == "pos-scalar" else None
    w = rng.uniform(0, 2, (6, 4)).astype(dtype) if weights in ("weight", "both") else \
        rng.uniform(0, 2, (6, 1)).astype(dtype) if weights == "weight-rows" else None
    tt = lambda a: None if a is None else torch.from_numpy(a)  # noqa: E731
    crit = nn.BCEWithLogitsLoss(w, reduction, pw)
    tcrit = torch.nn.BCEWithLogitsLoss(tt(w), reduction=reduction, pos_weight=tt(pw))
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    lt = tcrit(xt, torch.from_numpy(t))
    loss = crit(x, t)
    go = rng.standard_normal(x.shape).astype(dtype) if reduction == "none" else None
    lt.backward(tt(go))
    g = crit.backward(go)
    tol = TOLS[dtype]
    np.testing.assert_allclose(loss, lt.detach().numpy(), **tol)
    np.testing.assert_allclose(g, xt.grad.numpy(), **tol)
    assert g.dtype == dtype
    sd = {k: v.numpy() for k, v in tcrit.state_dict().items()}
    assert sorted(crit.state_dict()) == sorted(sd)
    with pytest.raises(ValueError, match="pos_weight of shape"):
        nn.BCEWithLogitsLoss(pos_weight=np.ones(3))(x, t)


@pytest.mark.parametrize("make", [lambda ns: ns.ReLU(inplace=True), lambda ns: ns.LeakyReLU(0.2, inplace=True)],
                         ids=["relu", "leaky_relu"])
@pytest.mark.parametrize("layout", ["transposed", "strided"])
def test_inplace_activation_of_a_non_contiguous_input_matches_pytorch(torch, make, layout):
    """In place on a non-contiguous array: the array itself holds the output afterwards."""
    base = np.random.default_rng(0).standard_normal((3, 4, 10))
    x = base.transpose(0, 2, 1) if layout == "transposed" else base[:, ::2, ::3]
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = make(torch.nn)(xt.clone())
    yt.backward(torch.ones_like(yt))
    m = make(nn)
    y = m(x)
    assert y is x
    np.testing.assert_array_equal(x, yt.detach().numpy())
    np.testing.assert_array_equal(m.backward(np.ones(x.shape)), xt.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=IDS.get)
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("kw,shape", [
    (dict(kernel_size=3, padding=1), (2, 3, 6, 7)),
    (dict(kernel_size=(3, 5), padding=(2, 1), stride=2), (2, 3, 7, 5)),
    (dict(kernel_size=4, padding="same", dilation=(1, 2)), (1, 3, 8, 9)),
    (dict(kernel_size=3, padding=2, groups=3), (2, 3, 5, 5)),
    (dict(kernel_size=3, padding=1), (3, 4, 4)),     # unbatched
], ids=["pad1", "strided", "same-even", "groups", "unbatched"])
def test_conv_padding_modes_match_pytorch(torch, kw, shape, mode, dtype):
    """Conv2d's reflect, replicate and circular padding (with a BatchNorm and ReLU after it,
    in training and in eval mode), against torch."""
    make = lambda ns: ns.Sequential(ns.Conv2d(3, 6, padding_mode=mode, **kw), ns.BatchNorm2d(6), ns.ReLU())  # noqa
    if len(shape) == 3:
        make = lambda ns: ns.Conv2d(3, 6, padding_mode=mode, **kw)  # noqa: E731
    torch.manual_seed(0)
    tm = make(torch.nn).to(torch.float64 if dtype == np.float64 else torch.float32)
    fm = make(nn).to(dtype)
    fm.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    assert repr(fm) == repr(tm)
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    for train in (True, False):
        compare(torch, fm, tm, x, dtype, train)


def test_conv_padding_mode_errors():
    with pytest.raises(ValueError, match="less than the input's width 2"):
        nn.Conv2d(1, 1, 5, padding=2, padding_mode="reflect")(np.zeros((1, 1, 4, 2)))
    with pytest.raises(ValueError, match="at most the input's height 1"):
        nn.Conv2d(1, 1, 5, padding=2, padding_mode="circular")(np.zeros((1, 1, 1, 5)))
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        nn.Conv2d(1, 1, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        nn.ConvTranspose2d(1, 1, 3, padding_mode="reflect")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (3, 4, 6), (2, 3, 1, 2, 2)], ids=["2d", "1d", "3d"])
def test_cross_entropy_of_spatial_logits_matches_pytorch(torch, shape, reduction):
    """Logits (N, C, d1, ...) against labels (N, d1, ...): every position a row (with class
    weights, label smoothing and ignored positions)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    C = shape[1]
    labels = rng.integers(0, C, shape[:1] + shape[2:])
    labels.reshape(-1)[::5] = -100
    w = rng.uniform(0.5, 2, C)
    crit = nn.CrossEntropyLoss(w, reduction=reduction, label_smoothing=0.1)
    tcrit = torch.nn.CrossEntropyLoss(torch.from_numpy(w), reduction=reduction, label_smoothing=0.1)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    lt = tcrit(xt, torch.from_numpy(labels))
    loss = crit(x, labels)
    go = rng.standard_normal(labels.shape) if reduction == "none" else None
    lt.backward(None if go is None else torch.from_numpy(go))
    g = crit.backward(go)
    np.testing.assert_allclose(loss, lt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="target must have shape"):
        F.cross_entropy(x, labels[..., :1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=IDS.get)
def test_functional_losses_unreduced_match_pytorch(torch, dtype):
    """reduction='none' in fastcnn.functional: the unreduced losses, and gradients scaled by an
    array of the loss's shape (or a number)."""
    rng = np.random.default_rng(0)
    tol = TOLS[dtype]
    TF = torch.nn.functional
    x = rng.standard_normal((4, 3, 5)).astype(dtype)
    labels = rng.integers(0, 3, (4, 5))
    labels[0, 0] = -100
    w = rng.uniform(0.5, 2, 3).astype(dtype)
    t = rng.uniform(0, 1, x.shape).astype(dtype)
    pw = rng.uniform(0.5, 2, 5).astype(dtype)
    cases = [
        (lambda a: F.cross_entropy(a, labels, w, "none", 0.1),
         lambda a, go: F.cross_entropy_backward(a, labels, w, "none", 0.1, go),
         lambda a: TF.cross_entropy(a, torch.from_numpy(labels), torch.from_numpy(w), reduction="none",
                                    label_smoothing=0.1)),
        (lambda a: F.cross_entropy(a[:, :, 0], labels[:, 0], None, "none"),
         lambda a, go: F.cross_entropy_backward(a[:, :, 0], labels[:, 0], None, "none", 0.0, go),
         lambda a: TF.cross_entropy(a[:, :, 0], torch.from_numpy(labels[:, 0]), reduction="none")),
        (lambda a: F.mse_loss(a, t, "none"), lambda a, go: F.mse_loss_backward(a, t, "none", go),
         lambda a: TF.mse_loss(a, torch.from_numpy(t), reduction="none")),
        (lambda a: F.l1_loss(a, t, "none"), lambda a, go: F.l1_loss_backward(a, t, "none", go),
         lambda a: TF.l1_loss(a, torch.from_numpy(t), reduction="none")),
        (lambda a: F.binary_cross_entropy_with_logits(a, t, "none"),
         lambda a, go: F.binary_cross_entropy_with_logits_backward(a, t, "none", go),
         lambda a: TF.binary_cross_entropy_with_logits(a, torch.from_numpy(t), reduction="none")),
        (lambda a: F.binary_cross_entropy_with_logits(a, t, "none", pos_weight=pw),
         lambda a, go: F.binary_cross_entropy_with_logits_backward(a, t, "none", go, pos_weight=pw),
         lambda a: TF.binary_cross_entropy_with_logits(a, torch.from_numpy(t), reduction="none",
                                                       pos_weight=torch.from_numpy(pw))),
    ]
    for ours, ours_grad, theirs in cases:
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        lt = theirs(xt)
        loss = ours(x)
        assert loss.shape == tuple(lt.shape) and loss.dtype == dtype
        np.testing.assert_allclose(loss, lt.detach().numpy(), **tol)
        go = rng.standard_normal(loss.shape).astype(dtype)
        lt.backward(torch.from_numpy(go))
        g = ours_grad(x, go)
        if g.shape != x.shape:   # the gradient of a slice of x
            g = np.pad(g[:, :, None], ((0, 0), (0, 0), (0, 4)))
        np.testing.assert_allclose(g, xt.grad.numpy(), **tol)
        with pytest.raises(ValueError, match="grad_output must have the loss's shape"):
            ours_grad(x, np.ones(loss.shape + (2,), dtype))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_of_one_unbatched_row_matches_pytorch(torch, reduction):
    """Logits (C,) against a 0-d label, as PyTorch takes them."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(5)
    w = rng.uniform(0.5, 2, 5)
    for label in (np.array(3), np.array(-100)):
        crit = nn.CrossEntropyLoss(w, reduction=reduction, label_smoothing=0.2)
        tcrit = torch.nn.CrossEntropyLoss(torch.from_numpy(w), reduction=reduction, label_smoothing=0.2)
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        lt = tcrit(xt, torch.from_numpy(label))
        loss = crit(x, label)
        lt.backward(torch.tensor(1.5, dtype=torch.float64) if reduction == "none" else None)
        g = crit.backward(np.array(1.5) if reduction == "none" else None)
        np.testing.assert_allclose(loss, lt.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
        assert g.shape == (5,) and np.shape(loss) == ()


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=IDS.get)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4, 2), (5,)], ids=["rows", "spatial", "one-row"])
def test_cross_entropy_with_class_probabilities_matches_pytorch(torch, shape, reduction, dtype):
    """A float target of the logits' shape: class probabilities (with class weights and
    label smoothing); 'mean' divides by the rows, not by their weights."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    ax = 0 if len(shape) == 1 else 1
    p = rng.uniform(0, 1, shape)
    p = (p / p.sum(axis=ax, keepdims=True)).astype(dtype)
    w = rng.uniform(0.5, 2, shape[ax]).astype(dtype)
    for weight, ls in ((None, 0.0), (w, 0.2)):
        crit = nn.CrossEntropyLoss(weight, reduction=reduction, label_smoothing=ls)
        tcrit = torch.nn.CrossEntropyLoss(None if weight is None else torch.from_numpy(weight),
                                          reduction=reduction, label_smoothing=ls)
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        lt = tcrit(xt, torch.from_numpy(p))
        loss = crit(x, p)
        go = rng.standard_normal(lt.shape).astype(dtype) if reduction == "none" else None
        lt.backward(None if go is None else torch.from_numpy(go))
        g = crit.backward(go)
        np.testing.assert_allclose(loss, lt.detach().numpy(), **TOLS[dtype])
        np.testing.assert_allclose(g, xt.grad.numpy(), **TOLS[dtype])
        assert g.dtype == dtype
    with pytest.raises(ValueError, match="must have the logits' shape"):
        F.cross_entropy(x, p[..., :1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=IDS.get)
@pytest.mark.parametrize("features,shape", [((0, 5), (3, 0)), ((5, 0), (3, 5)), ((0, 0), (2, 0)), ((0, 4), (2, 3, 0)),
                                            ((0, 5), (0,))])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_linear_of_zero_features_matches_pytorch(torch, features, shape, bias, train, dtype):
    """Linear with no input features (the output is the bias) or no output features (an
    empty output), as PyTorch: outputs, gradients, and a step of Adam."""
    i, o = features
    if bias:
        assert not nn.Linear(i, o).bias.data.any()   # PyTorch's default init: U(-0, 0) without fan-in
    fm, tm = twins(torch, lambda ns: ns.Sequential(ns.Linear(i, o, bias=bias), ns.ReLU(), ns.Linear(o, 2)), dtype)
    fm.train(train)
    tm.train(train)
    x = np.random.default_rng(0).random(shape).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = tm(xt)
    y = fm(x)
    assert y.shape == tuple(yt.shape) and y.dtype == dtype
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOLS[dtype])
    g = np.cos(np.arange(y.size)).reshape(y.shape).astype(dtype)
    yt.backward(torch.tensor(g))
    gx = fm.backward(g)
    assert gx.shape == x.shape
    np.testing.assert_allclose(gx, xt.grad.numpy(), **TOLS[dtype])
    for (name, p), tp in zip(fm.named_parameters(), tm.parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), **TOLS[dtype], err_msg=name)
    opt, topt = fastcnn.optim.Adam(fm.parameters(), lr=0.1), torch.optim.Adam(tm.parameters(), lr=0.1)
    opt.step()
    topt.step()
    for (name, p), tp in zip(fm.named_parameters(), tm.parameters()):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **TOLS[dtype], err_msg=name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=IDS.get)
@pytest.mark.parametrize("kw,shape,output_size", [
    (dict(stride=2, padding=1), (2, 4, 5, 6), (10, 12)),
    (dict(stride=2, padding=1), (2, 4, 5, 6), (9, 11)),
    (dict(stride=3, padding=(0, 2), dilation=(2, 1)), (1, 4, 4, 3), (1, 6, 15, 6)),   # the whole shape
    (dict(stride=(3, 2), output_padding=(2, 1)), (2, 4, 3, 5), [9, 11]),    # output_padding overridden
    (dict(stride=2, groups=2), (4, 5, 5), (4, 12, 12)),                   # unbatched: (C, H, W)
    (dict(stride=2, groups=2), (4, 5, 5), np.array([11, 11])),
])
def test_conv_transpose2d_output_size_matches_pytorch(torch, kw, shape, output_size, dtype):
    """ConvTranspose2d(x, output_size=...): the output padding that gives that size, as
    PyTorch; outputs and gradients."""
    fm, tm = twins(torch, lambda ns: ns.ConvTranspose2d(4, 6, 3, **kw), dtype)
    x = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = tm(xt, output_size=list(output_size))
    y = fm(x, output_size=output_size)
    assert y.shape == tuple(yt.shape) and tuple(y.shape[-2:]) == tuple(output_size)[-2:]
    np.testing.assert_allclose(y, yt.detach().numpy(), **TOLS[dtype])
    g = np.cos(np.arange(y.size)).reshape(y.shape).astype(dtype)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(fm.backward(g), xt.grad.numpy(), **TOLS[dtype])
    np.testing.assert_allclose(fm.weight.grad, tm.weight.grad.numpy(), **TOLS[dtype])
    np.testing.assert_allclose(fm.bias.grad, tm.bias.grad.numpy(), **TOLS[dtype])
    assert fm(x).shape == tm(xt).shape   # without output_size: the layer's output_padding again


def test_conv_transpose2d_output_size_out_of_range(torch):
    fm = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    tm = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    x = np.zeros((1, 2, 4, 4), np.float32)
    for size in [(6, 7), (8, 9)]:
        with pytest.raises(ValueError, match="requested an output size of"):
            tm(torch.from_numpy(x), output_size=list(size))
        with pytest.raises(ValueError, match=r"requested an output size of \(\d+, \d+\), but valid sizes range "
                                             r"from \(7, 7\) to \(8, 8\)"):
            fm(x, output_size=size)
    with pytest.raises(ValueError, match="output_size must have 2 or 4 elements"):
        fm(x, output_size=(1, 8, 8))
    with pytest.raises(TypeError, match="output_size"):
        fm(x, output_size=8)
