"""fastcnn.nn and fastcnn.init: module API, state dicts, init, errors, gradients (no PyTorch needed)."""
import math

import numpy as np
import pytest

from conftest import numeric_grad

import fastcnn
from fastcnn import init
from fastcnn import nn, optim
from fastcnn._random import default_generator, get_rng_state, manual_seed, set_rng_state
from fastcnn.nn.module import Parameter


@pytest.fixture(autouse=True)
def _one_thread():
    fastcnn.set_num_threads(1)  # tiny problems; results do not depend on the thread count


def lenet(bn=True):
    layers = [nn.Conv2d(1, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)]
    return nn.Sequential(*layers)


# -- RNG and init -------------------------------------------------------------------
def test_manual_seed_makes_models_bitwise_reproducible():
    manual_seed(0)
    a = lenet().state_dict()
    manual_seed(0)
    b = lenet().state_dict()
    manual_seed(1)
    c = lenet().state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes()
    assert not np.array_equal(a["0.weight"], c["0.weight"])


def test_rng_state_round_trip():
    manual_seed(3)
    state = get_rng_state()
    x = default_generator().random(4)
    set_rng_state(state)
    assert np.array_equal(default_generator().random(4), x)


def test_manual_seed_rejects_bad_seeds():
    with pytest.raises(TypeError):
        manual_seed(1.5)
    with pytest.raises(ValueError):
        manual_seed(-1)


@pytest.mark.parametrize("make,fan_in", [
    (lambda: nn.Conv2d(3, 16, 3), 27),
    (lambda: nn.Conv2d(4, 8, (3, 5), groups=2), 2 * 15),
    (lambda: nn.ConvTranspose2d(128, 64, 4, 2, 1), 64 * 16),
    (lambda: nn.Linear(100, 30), 100),
], ids=["conv", "conv-groups", "convT", "linear"])
def test_default_init_is_pytorch_kaiming_uniform(make, fan_in):
    manual_seed(0)
    m = make()
    bound = 1 / math.sqrt(fan_in)
    for p in (m.weight, m.bias):
        assert p.dtype == np.float32
        assert np.abs(p.data).max() <= bound * (1 + 1e-6)
        assert np.abs(p.data).max() > 0.5 * bound
        assert np.array_equal(p.grad, np.zeros_like(p.data))


def test_init_functions(rng):
    a = np.empty((64, 32, 3, 3), dtype=np.float32)
    init.kaiming_normal_(a, nonlinearity="relu", generator=rng)
    assert a.std() == pytest.approx(math.sqrt(2 / (32 * 9)), rel=0.05)
    init.kaiming_uniform_(a, a=0, mode="fan_out", generator=rng)
    assert np.abs(a).max() <= math.sqrt(6 / (64 * 9)) + 1e-6
    init.xavier_uniform_(a, gain=2.0, generator=rng)
    assert np.abs(a).max() <= 2.0 * math.sqrt(6 / (32 * 9 + 64 * 9)) + 1e-6
    init.xavier_normal_(a, generator=rng)
    assert a.std() == pytest.approx(math.sqrt(2 / (32 * 9 + 64 * 9)), rel=0.05)
    init.normal_(a, 1.0, 0.02, generator=rng)
    assert a.mean() == pytest.approx(1.0, abs=1e-3) and a.std() == pytest.approx(0.02, rel=0.05)
    init.uniform_(a, -2, 3, generator=rng)
    assert a.min() >= -2 and a.max() <= 3
    init.constant_(a, 0.5)
    assert np.all(a == 0.5)
    init.zeros_(a)
    assert not a.any()
    p = Parameter(np.empty(3))
    assert init.ones_(p) is p and np.all(p.data == 1)
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)


def test_init_generator_reproducible_and_independent_of_global():
    a = init.normal_(np.empty(10), generator=np.random.default_rng(5))
    manual_seed(99)
    b = init.normal_(np.empty(10), generator=np.random.default_rng(5))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("call,exc", [
    (lambda: init.normal_(np.empty(3), std=-1), ValueError),
    (lambda: init.uniform_(np.empty(3), 2, 1), ValueError),
    (lambda: init.kaiming_uniform_(np.empty(3)), ValueError),
    (lambda: init.kaiming_uniform_(np.empty((3, 3)), mode="fan"), ValueError),
    (lambda: init.calculate_gain("swish"), ValueError),
    (lambda: init.zeros_([1.0, 2.0]), TypeError),
    (lambda: init.zeros_(np.zeros(3, dtype=np.int64)), TypeError),
    (lambda: init.normal_(np.empty(3), generator=0), TypeError),
])
def test_init_errors(call, exc):
    with pytest.raises(exc):
        call()


def test_dcgan_init():
    manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ConvTranspose2d(64, 32, 4, 2, 1),
                      nn.Linear(10, 10))
    lin = m[3].weight.data.copy()
    assert init.dcgan_init(m, generator=np.random.default_rng(0)) is m
    assert abs(m[0].weight.data.std() - 0.02) < 0.004
    assert abs(m[2].weight.data.std() - 0.02) < 0.002
    assert abs(m[1].weight.data.mean() - 1.0) < 0.01 and not m[1].bias.data.any()
    assert np.array_equal(m[3].weight.data, lin)


# -- Parameter and registration ------------------------------------------------------
def test_parameter():
    p = Parameter(np.ones((2, 3), dtype=np.float64))
    assert p.shape == (2, 3) and p.dtype == np.float64 and p.grad.dtype == np.float64
    assert not p.grad.any()
    assert Parameter([1, 2]).dtype == np.float32
    with pytest.raises(TypeError):
        Parameter(np.array(["a"]))
    assert "Parameter containing" in repr(p)
    # a 0-d (scalar) parameter stays 0-d, as its gradient, and an optimiser steps it
    s = Parameter(np.array(1.5, dtype=np.float32))
    assert s.shape == () and s.grad.shape == ()
    s.grad = np.array(0.5, dtype=np.float32)
    optim.SGD([s], lr=0.1).step()
    assert s.shape == () and s.data == np.float32(1.45)
    # a non-contiguous array is copied, a contiguous one kept
    a = np.ones((4, 6))
    assert Parameter(a).data is a and Parameter(a[:, ::2]).data.flags.c_contiguous


def test_registration_and_traversal():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
            self.head = nn.Linear(4, 2)
            self.scale = Parameter(np.ones(1, dtype=np.float32))
            self.register_buffer("steps", np.zeros(1))
            self.register_buffer("tmp", np.zeros(1), persistent=False)
            self.note = "not registered"

    net = Net()
    names = [k for k, _ in net.named_parameters()]
    assert names == ["scale", "body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias",
                     "head.weight", "head.bias"]
    assert [k for k, _ in net.named_buffers()] == ["steps", "tmp", "body.1.running_mean", "body.1.running_var",
                                                   "body.1.num_batches_tracked"]
    assert list(net.state_dict()) == ["scale", "steps", "body.0.weight", "body.0.bias", "body.1.weight",
                                      "body.1.bias", "body.1.running_mean", "body.1.running_var",
                                      "body.1.num_batches_tracked", "head.weight", "head.bias"]
    assert [type(m).__name__ for m in net.children()] == ["Sequential", "Linear"]
    assert [k for k, _ in net.named_modules()] == ["", "body", "body.0", "body.1", "head"]
    assert len(list(net.parameters())) == 7
    with pytest.raises(TypeError):
        net.head.weight = np.zeros((2, 4))
    net.head.bias = None
    assert "head.bias" not in net.state_dict()
    assert "bias=False" in repr(net.head)
    del net.head
    assert all(not k.startswith("head") for k in net.state_dict())

    class Bad(nn.Module):
        def __init__(self):
            self.w = Parameter(np.ones(1))

    with pytest.raises(AttributeError):
        Bad()


def test_shared_parameter_is_listed_once():
    lin = nn.Linear(3, 3)
    m = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(m.parameters())) == 2
    assert list(m.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


# -- state dict -------------------------------------------------------------------
def test_state_dict_keys_shapes_and_copies():
    m = lenet()
    sd = m.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                        "1.num_batches_tracked", "5.weight", "5.bias"]
    assert sd["1.num_batches_tracked"].dtype == np.int64 and sd["1.num_batches_tracked"].shape == ()
    assert sd["0.weight"].shape == (4, 1, 3, 3)
    sd["0.weight"][...] = 7
    assert not np.all(m[0].weight.data == 7)


def test_load_state_dict_round_trip_and_cast():
    manual_seed(0)
    a = lenet()
    manual_seed(1)
    b = lenet()
    sd = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in a.state_dict().items()}
    sd["1.num_batches_tracked"] = np.array(5)
    keys = b.load_state_dict(sd)
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    for k, v in b.state_dict().items():
        assert np.array_equal(v, sd[k])
    assert b[0].weight.dtype == np.float32
    assert b[1].num_batches_tracked.dtype == np.int64 and int(b[1].num_batches_tracked) == 5


def test_load_state_dict_errors_name_the_key():
    m = lenet()
    sd = m.state_dict()
    before = m[0].weight.data.copy()
    bad = dict(sd)
    bad["0.weight"] = np.zeros((8, 1, 3, 3))
    bad["0.bias"] = np.zeros(4) + 3
    with pytest.raises(ValueError, match=r"0\.weight.*\(8, 1, 3, 3\).*\(4, 1, 3, 3\)"):
        m.load_state_dict(bad)
    assert np.array_equal(m[0].weight.data, before) and not np.all(m[0].bias.data == 3)
    missing = dict(sd)
    del missing["1.running_var"]
    with pytest.raises(ValueError, match="1.running_var"):
        m.load_state_dict(missing)
    extra = dict(sd, **{"9.weight": np.zeros(1)})
    with pytest.raises(ValueError, match="9.weight"):
        m.load_state_dict(extra)
    keys = m.load_state_dict(dict(missing, **{"9.weight": np.zeros(1)}), strict=False)
    assert keys.missing_keys == ["1.running_var"] and keys.unexpected_keys == ["9.weight"]
    with pytest.raises(TypeError):
        m.load_state_dict([1, 2])
    with pytest.raises(TypeError):
        m.load_state_dict(dict(sd, **{"0.bias": np.array(["a", "b", "c", "d"])}))


# -- modes and dtypes ---------------------------------------------------------------
def test_train_eval_flags():
    m = lenet()
    assert m.training and m[1].training
    assert m.eval() is m
    assert not any(x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())
    with pytest.raises(TypeError):
        m.train("no")


def test_double_and_float(rng):
    m = lenet().double()
    for _, p in m.named_parameters():
        assert p.dtype == np.float64 and p.grad.dtype == np.float64
    assert m[1].running_mean.dtype == np.float64 and m[1].num_batches_tracked.dtype == np.int64
    y = m(rng.standard_normal((2, 1, 8, 8)).astype(np.float32))
    assert y.dtype == np.float64
    assert m.backward(np.ones_like(y)).dtype == np.float64
    m.float()
    assert m[0].weight.dtype == np.float32 and m(rng.standard_normal((2, 1, 8, 8))).dtype == np.float32
    assert m.to("float64") is m and m[5].bias.dtype == np.float64
    with pytest.raises(TypeError):
        m.to(np.int32)


def test_zero_grad():
    m = lenet()
    for p in m.parameters():
        p.grad += 1
    m.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in m.parameters())
    m.zero_grad()   # None by default, as in PyTorch
    assert all(p.grad is None for p in m.parameters())
    y = m(np.ones((2, 1, 8, 8), dtype=np.float32))
    m.backward(np.ones_like(y))
    assert all(p.grad is not None and p.grad.shape == p.shape for p in m.parameters())


# -- repr ---------------------------------------------------------------------------
def test_repr_matches_pytorch_format():
    m = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                      nn.Sequential(nn.Flatten(), nn.Linear(6272, 10, bias=False)),
                      nn.ConvTranspose2d(64, 1, 4, 2, 1, bias=False), nn.BatchNorm1d(10, momentum=None),
                      nn.LeakyReLU(0.2), nn.Dropout(0.25), nn.Upsample(scale_factor=2), nn.Softmax(dim=1),
                      nn.Unflatten(1, (128, 7, 7)), nn.AdaptiveAvgPool2d(1), nn.AvgPool2d(2), nn.Identity(),
                      nn.Conv2d(4, 8, 3, stride=2, dilation=2, groups=2, bias=False))
    assert repr(m) == """Sequential(
  (0): Conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
  (1): ReLU(inplace=True)
  (2): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
  (3): Sequential(
    (0): Flatten(start_dim=1, end_dim=-1)
    (1): Linear(in_features=6272, out_features=10, bias=False)
  )
  (4): ConvTranspose2d(64, 1, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), bias=False)
  (5): BatchNorm1d(10, eps=1e-05, momentum=None, affine=True, bias=True, track_running_stats=True)
  (6): LeakyReLU(negative_slope=0.2)
  (7): Dropout(p=0.25, inplace=False)
  (8): Upsample(scale_factor=2.0, mode='nearest')
  (9): Softmax(dim=1)
  (10): Unflatten(dim=1, unflattened_size=(128, 7, 7))
  (11): AdaptiveAvgPool2d(output_size=1)
  (12): AvgPool2d(kernel_size=2, stride=2, padding=0)
  (13): Identity()
  (14): Conv2d(4, 8, kernel_size=(3, 3), stride=(2, 2), dilation=(2, 2), groups=2, bias=False)
)"""
    assert repr(nn.CrossEntropyLoss(label_smoothing=0.1)) == "CrossEntropyLoss()"


# -- Sequential container -------------------------------------------------------------
def test_sequential_container():
    a, b, c = nn.ReLU(), nn.Tanh(), nn.Sigmoid()
    s = nn.Sequential(a, b)
    assert len(s) == 2 and s[0] is a and s[-1] is b and list(s) == [a, b]
    s.append(c)
    assert s[2] is c and len(s) == 3
    sl = s[1:]
    assert isinstance(sl, nn.Sequential) and list(sl) == [b, c] and list(sl._modules) == ["1", "2"]
    s[0] = nn.Identity()
    assert isinstance(s[0], nn.Identity)
    del s[0]
    assert list(s) == [b, c] and list(s._modules) == ["0", "1"]
    s.insert(0, a)
    assert list(s) == [a, b, c]
    with pytest.raises(IndexError):
        s[3]
    with pytest.raises(TypeError):
        s["x"]
    with pytest.raises(TypeError):
        nn.Sequential(a, lambda x: x)
    x = np.linspace(-2, 2, 6).reshape(2, 3)
    assert np.allclose(s(x), 1 / (1 + np.exp(-np.tanh(np.maximum(x, 0)))))
    empty = nn.Sequential()
    assert empty(x) is x and empty.backward(x) is x
    from collections import OrderedDict
    named = nn.Sequential(OrderedDict([("conv", nn.Conv2d(1, 2, 3)), ("act", nn.ReLU())]))
    assert list(named.state_dict()) == ["conv.weight", "conv.bias"] and named.conv is named[0]


# -- bad arguments --------------------------------------------------------------------
@pytest.mark.parametrize("make,exc", [
    (lambda: nn.Conv2d(0, 4, 3), ValueError),
    (lambda: nn.Conv2d(3, 4, 0), ValueError),
    (lambda: nn.Conv2d(3, 4, 3, stride=0), ValueError),
    (lambda: nn.Conv2d(3, 4, 3, padding=-1), ValueError),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError),
    (lambda: nn.Conv2d(4, 3, 3, groups=2), ValueError),
    (lambda: nn.Conv2d(3, 4, 3, padding_mode="mirror"), ValueError),
    (lambda: nn.ConvTranspose2d(3, 4, 3, padding_mode="reflect"), ValueError),
    (lambda: nn.Conv2d(3, 4, 3, padding="full"), ValueError),
    (lambda: nn.Conv2d(3, 4, 3, padding="same", stride=2), ValueError),
    (lambda: nn.Conv2d(3.0, 4, 3), TypeError),
    (lambda: nn.Conv2d(3, 4, 3, bias=1), TypeError),
    (lambda: nn.Conv2d(3, 4, 3, dtype=np.int32), TypeError),
    (lambda: nn.Conv2d(3, 4, 3, device="cuda"), ValueError),
    (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=2), ValueError),
    (lambda: nn.ConvTranspose2d(3, 4, 3, padding="same"), ValueError),
    (lambda: nn.Linear(-1, 3), ValueError),
    (lambda: nn.Linear(3, -2), ValueError),
    (lambda: nn.Linear(3, "4"), TypeError),
    (lambda: nn.MaxPool2d(2, padding=2), ValueError),
    (lambda: nn.MaxPool2d(0), ValueError),
    (lambda: nn.AvgPool2d(2, divisor_override=0), ValueError),
    (lambda: nn.AdaptiveAvgPool2d(0), ValueError),
    (lambda: nn.BatchNorm2d(0), ValueError),
    (lambda: nn.BatchNorm2d(4, momentum=1.5), ValueError),
    (lambda: nn.BatchNorm2d(4, eps=-1), ValueError),
    (lambda: nn.BatchNorm1d(4, affine="yes"), TypeError),
    (lambda: nn.Dropout(1.5), ValueError),
    (lambda: nn.Dropout(-0.1), ValueError),
    (lambda: nn.Upsample(scale_factor=-1.5), ValueError),
    (lambda: nn.Upsample(scale_factor=float("inf")), ValueError),
    (lambda: nn.Upsample(size=0), ValueError),
    (lambda: nn.Upsample(size=2.5), TypeError),
    (lambda: nn.Upsample(scale_factor=2, mode="bicubic"), ValueError),
    (lambda: nn.Upsample(scale_factor=2, align_corners=True), ValueError),
    (lambda: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=1), TypeError),
    (lambda: nn.Upsample(), ValueError),
    (lambda: nn.Unflatten(1, (2, -1, -1)), ValueError),
    (lambda: nn.Unflatten(1, 4), TypeError),
    (lambda: nn.LeakyReLU("a"), TypeError),
    (lambda: nn.ReLU(inplace=None), TypeError),
    (lambda: nn.CrossEntropyLoss(reduction="avg"), ValueError),
    (lambda: nn.CrossEntropyLoss(label_smoothing=2.0), ValueError),
    (lambda: nn.CrossEntropyLoss(weight=np.ones((2, 2))), ValueError),
    (lambda: nn.BCEWithLogitsLoss(pos_weight=np.array(["a"])), TypeError),
    (lambda: nn.CrossEntropyLoss(ignore_index=1.5), TypeError),
    (lambda: nn.MSELoss(reduction=None), ValueError),
])
def test_bad_constructor_arguments(make, exc):
    with pytest.raises(exc):
        make()


def test_bad_inputs_name_layer_and_shape():
    conv = nn.Conv2d(3, 16, 3)
    with pytest.raises(ValueError, match=r"Conv2d\(3, 16, \.\.\.\): expected input with 3 channels "
                                         r"\(N, 3, H, W\), got shape \(8, 1, 28, 28\)"):
        conv(np.zeros((8, 1, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match="3 channels"):
        conv(np.zeros((1, 28, 28), dtype=np.float32))
    assert conv(np.zeros((3, 5, 5), dtype=np.float32)).shape == (16, 3, 3)
    with pytest.raises(TypeError):
        conv([[1.0]])
    with pytest.raises(TypeError):
        conv(np.zeros((1, 3, 5, 5), dtype=np.int64))
    with pytest.raises(ValueError, match=r"Linear\(in_features=10.*10 features.*\(2, 12\)"):
        nn.Linear(10, 2)(np.zeros((2, 12), dtype=np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(4\).*\(N, 4, H, W\)"):
        nn.BatchNorm2d(4)(np.zeros((2, 3, 5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(4\)"):
        nn.BatchNorm1d(4)(np.zeros((2, 4, 5, 5), dtype=np.float32))
    bn = nn.BatchNorm1d(4)
    with pytest.raises(ValueError, match="more than 1 value"):
        bn(np.zeros((1, 4), dtype=np.float32))
    assert int(bn.num_batches_tracked) == 0
    with pytest.raises(ValueError, match="ConvTranspose2d"):
        nn.ConvTranspose2d(4, 2, 3)(np.zeros((1, 2, 5, 5), dtype=np.float32))
    with pytest.raises(ValueError):
        nn.Unflatten(1, (2, 3))(np.zeros((2, 7)))
    with pytest.raises(ValueError):
        nn.Flatten(2, 5)(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"Upsample\(scale_factor=0.1, mode='nearest'\): scale_factor 0.1 makes an "
                                         r"empty output \(0, 0\) of input spatial size \(2, 2\)"):
        nn.Upsample(scale_factor=0.1)(np.zeros((1, 1, 2, 2)))
    # one factor or size per spatial dimension: one of (N, C, L) input, two of (N, C, H, W)
    with pytest.raises(ValueError, match="scale_factor must be a number or 1 of them"):
        nn.Upsample(scale_factor=(2, 2))(np.zeros((1, 1, 2)))
    with pytest.raises(ValueError, match="scale_factor must be a number or 2 of them"):
        nn.Upsample(scale_factor=(2,))(np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match="size must be an int or 1 of them"):
        nn.Upsample(size=(4, 4))(np.zeros((1, 1, 2)))
    with pytest.raises(ValueError, match="expected 3-D"):
        nn.Upsample(scale_factor=2)(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="one per spatial dimension"):
        nn.Upsample(scale_factor=(2, 2, 2))
    with pytest.raises(ValueError):
        nn.MSELoss()(np.zeros(3), np.zeros(4))
    with pytest.raises(RuntimeError):
        nn.Conv2d(1, 1, 1).backward(np.zeros((1, 1, 1, 1), dtype=np.float32))
    with pytest.raises(RuntimeError):
        nn.Sequential(nn.ReLU()).backward(np.zeros(1))
    with pytest.raises(RuntimeError):
        nn.MSELoss().backward()


# -- gradients -------------------------------------------------------------------------
def _small_net(double=True):
    manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
                      nn.ConvTranspose2d(3, 2, 2, stride=2), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                      nn.Linear(2 * 3 * 3, 4), nn.BatchNorm1d(4), nn.Sigmoid(), nn.Unflatten(1, (1, 2, 2)),
                      nn.Upsample(scale_factor=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Softmax(dim=1))
    return m.double() if double else m


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_sequential_backward_matches_finite_differences(mode, rng):
    m = _small_net()
    m.train(mode == "train")
    x = rng.standard_normal((3, 2, 6, 6))
    r = rng.standard_normal((3, 1))
    for b in m.buffers():  # meaningful running statistics for eval mode
        if b.dtype.kind == "f":
            b += rng.uniform(0.1, 0.5, b.shape)
    state = {k: v.copy() for k, v in m.state_dict().items()}

    def f():
        m.load_state_dict(state)
        return float((m(x) * r).sum())

    f()
    m.zero_grad()
    dx = m.backward(np.broadcast_to(r, (3, 1)).copy())
    assert np.allclose(dx, numeric_grad(f, x), rtol=1e-6, atol=1e-8)
    for name in ("0.weight", "1.weight", "4.weight", "8.bias", "9.bias"):
        mod, attr = name.split(".")
        p = getattr(m[int(mod)], attr)
        f()
        m.zero_grad()
        m.backward(np.broadcast_to(r, (3, 1)).copy())
        g = p.grad.copy()
        assert np.allclose(g, numeric_grad(f, p.data), rtol=1e-6, atol=1e-8), name


def test_grads_accumulate_and_need_input_grad(rng):
    m = _small_net(double=False)
    x = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
    g = rng.standard_normal((3, 1)).astype(np.float32)
    m(x)
    dx = m.backward(g)
    once = {k: p.grad.copy() for k, p in m.named_parameters()}
    m(x)
    assert m.backward(g, need_input_grad=False) is None
    for k, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert dx.shape == x.shape


def test_accumulate_takes_owned_arrays_and_copies_the_rest():
    from fastcnn.nn.module import accumulate
    p = nn.Parameter(np.zeros((2, 3), np.float32))
    g = np.ones((2, 3), np.float32)
    accumulate(p, g)                       # not owned: a copy
    assert p.grad is not g and np.array_equal(p.grad, g)
    p.grad = None
    accumulate(p, g, owned=True)           # owned: becomes the gradient
    assert p.grad is g
    accumulate(p, np.full((2, 3), 2, np.float32), owned=True)
    assert p.grad is g and np.all(g == 3)
    # what cannot become the gradient is copied: a view, another dtype, a
    # non-contiguous or read-only array
    base = np.ones((2, 6), np.float32)
    ro = np.ones((2, 3), np.float32)
    ro.flags.writeable = False
    for other in (base[:, :3], np.ones((2, 3)), np.ones((3, 2), np.float32).T, ro):
        p.grad = None
        accumulate(p, other, owned=True)
        assert p.grad is not other and p.grad.dtype == np.float32 and p.grad.shape == (2, 3)
        assert p.grad.flags.writeable
        assert np.all(p.grad == 1)
    p.requires_grad = False
    p.grad = None
    accumulate(p, g, owned=True)
    assert p.grad is None


def test_layer_gradients_stay_their_own_over_steps(rng):
    """The arrays a layer's backward hands to its parameters are not written by later
    calls: two backward passes after zero_grad() give the same gradients as by hand."""
    m = _small_net(double=False)
    x = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
    g = rng.standard_normal((3, 1)).astype(np.float32)
    m.zero_grad()
    m(x)
    m.backward(g)
    first = {k: p.grad for k, p in m.named_parameters()}
    once = {k: v.copy() for k, v in first.items()}
    m(2 * x)
    m.backward(3 * g)
    second = {k: p.grad.copy() for k, p in m.named_parameters()}
    m.zero_grad()
    m(2 * x)
    m.backward(3 * g)
    for k, p in m.named_parameters():
        np.testing.assert_allclose(second[k], once[k] + p.grad, rtol=1e-5, atol=1e-6, err_msg=k)
        assert p.grad is not first[k]


def test_need_input_grad_with_custom_first_module():
    class Twice(nn.Module):
        def forward(self, x):
            return 2 * x

        def backward(self, g):
            return 2 * g

    m = nn.Sequential(Twice(), nn.Linear(3, 2))
    y = m(np.ones((1, 3), dtype=np.float32))
    assert m.backward(np.ones_like(y), need_input_grad=False) is None
    assert m.backward(np.ones_like(y)).shape == (1, 3)


# -- layers in detail ---------------------------------------------------------------------
def test_batchnorm_running_stats_and_cumulative_momentum(rng):
    bn = nn.BatchNorm1d(3, momentum=None)
    xs = [rng.standard_normal((8, 3)).astype(np.float32) * (i + 1) + i for i in range(3)]
    for x in xs:
        bn(x)
    assert int(bn.num_batches_tracked) == 3
    np.testing.assert_allclose(bn.running_mean, np.mean([x.mean(0) for x in xs], axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var, np.mean([x.var(0, ddof=1) for x in xs], axis=0) * 1 + 0,
                               rtol=1e-4)
    bn.eval()
    y = bn(xs[0])
    ref = (xs[0] - bn.running_mean) / np.sqrt(bn.running_var + 1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    y3 = nn.BatchNorm1d(3).eval()(np.ones((2, 3, 4), dtype=np.float32))
    assert y3.shape == (2, 3, 4)
    nt = nn.BatchNorm2d(3, track_running_stats=False, affine=False)
    assert nt.state_dict() == {} and list(nt.parameters()) == []
    out = nt.eval()(rng.standard_normal((4, 3, 2, 2)))
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-6)


def test_dropout_reproducible_and_eval_identity():
    x = np.ones((4, 50), dtype=np.float32)
    d = nn.Dropout(0.5)
    manual_seed(7)
    a = d(x)
    manual_seed(7)
    b = d(x)
    assert np.array_equal(a, b) and set(np.unique(a)) <= {0.0, 2.0}
    g = d.backward(np.ones_like(x))
    assert np.array_equal(g, b)
    d2 = nn.Dropout(0.5, generator=np.random.default_rng(1))
    d3 = nn.Dropout(0.5, generator=np.random.default_rng(1))
    assert np.array_equal(d2(x), d3(x))
    d.eval()
    assert d(x) is x and d.backward(x) is x


def test_reshapes_and_upsample():
    x = np.arange(2 * 12, dtype=np.float32).reshape(2, 12)
    u = nn.Unflatten(1, (3, -1))
    y = u(x)
    assert y.shape == (2, 3, 4) and u.backward(y).shape == (2, 12)
    f = nn.Flatten(0, 1)
    assert f(y).shape == (6, 4) and f.backward(f(y)).shape == (2, 3, 4)
    up = nn.Upsample(size=(4, 6))
    z = up(np.ones((1, 1, 2, 3), dtype=np.float32))
    assert z.shape == (1, 1, 4, 6)
    assert np.all(up.backward(z) == 4)
    lin = nn.Linear(4, 5)
    y = lin(np.ones((2, 3, 4), dtype=np.float32))
    assert y.shape == (2, 3, 5) and lin.backward(y).shape == (2, 3, 4)
    sm = nn.Softmax()
    assert np.allclose(sm(np.zeros((2, 4))).sum(1), 1)


def test_losses_return_floats_and_grads(rng):
    logits = rng.standard_normal((5, 3)).astype(np.float32)
    y = np.array([0, 2, 1, 1, 0])
    ce = nn.CrossEntropyLoss()
    loss = ce(logits, y)
    assert isinstance(loss, float)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert loss == pytest.approx(float(-np.log(p[np.arange(5), y]).mean()), rel=1e-5)
    g = ce.backward()
    onehot = np.eye(3)[y]
    np.testing.assert_allclose(g, (p - onehot) / 5, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ce.backward(2.0), 2 * g, rtol=1e-6)
    mse = nn.MSELoss(reduction="sum")
    t = rng.standard_normal((5, 3))
    assert mse(logits, t) == pytest.approx(float(((logits - t.astype(np.float32)) ** 2).sum()), rel=1e-5)
    np.testing.assert_allclose(mse.backward(), 2 * (logits - t.astype(np.float32)), rtol=1e-5, atol=1e-6)
    l1 = nn.L1Loss(reduction="none")
    v = l1(logits, t)
    assert isinstance(v, np.ndarray) and v.shape == (5, 3)
    bce = nn.BCEWithLogitsLoss()
    tb = (t > 0).astype(np.float32)
    s = 1 / (1 + np.exp(-logits))
    assert bce(logits, tb) == pytest.approx(float(-(tb * np.log(s) + (1 - tb) * np.log(1 - s)).mean()), rel=1e-5)
    np.testing.assert_allclose(bce.backward(), (s - tb) / 15, rtol=1e-4, atol=1e-6)


def test_copy_and_pickle_keep_registration(rng):
    import copy
    import pickle
    m = lenet()
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    m.eval()
    y = m(x)
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert list(clone.state_dict()) == list(m.state_dict())
        np.testing.assert_array_equal(clone(x), y)
        clone[0].weight.data += 1
        assert not np.array_equal(clone[0].weight.data, m[0].weight.data)


def test_design_example_training_steps_reduce_the_loss(rng):
    manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    crit = nn.CrossEntropyLoss()
    x = rng.standard_normal((12, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 12)
    losses = []
    for _ in range(20):
        logits = model(x)
        losses.append(crit(logits, y))
        model.zero_grad()
        assert model.backward(crit.backward(), need_input_grad=False) is None
        for p in model.parameters():
            p.data -= 0.1 * p.grad
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("make,x_shape,bad", [
    (lambda: nn.BatchNorm2d(3), (2, 3, 4, 5), [(2, 5, 4, 3), (120,)]),
    (lambda: nn.BatchNorm1d(3), (2, 3, 4), [(2, 3, 4, 1), (2, 4, 3)]),
    (lambda: nn.Sequential(nn.BatchNorm2d(3), nn.ReLU()), (2, 3, 4, 5), [(2, 5, 4, 3)]),
    (lambda: nn.Upsample(scale_factor=2), (1, 1, 2, 2), [(1, 1, 4, 6), (1, 1, 2, 2)]),
    (lambda: nn.AdaptiveAvgPool2d(2), (1, 1, 4, 4), [(1, 1, 3, 3), (1, 1, 4, 4)]),
    (lambda: nn.Linear(4, 3), (2, 5, 4), [(5, 2, 3), (10, 3)]),
    (lambda: nn.Linear(4, 3), (2, 4), [(3, 2), (6,)]),
    (lambda: nn.Flatten(), (2, 3, 2), [(3, 4), (2, 3, 2)]),
    (lambda: nn.Unflatten(1, (2, 3)), (2, 6), [(2, 3, 2), (2, 6)]),
])
def test_backward_rejects_grad_out_of_another_shape(make, x_shape, bad, rng):
    """A layer's backward takes a gradient of its output's shape, and names that shape
    when given another (however many elements it has)."""
    m = make()
    x = rng.standard_normal(x_shape).astype(np.float32)
    y = m(x)
    for shape in bad:
        with pytest.raises(ValueError, match=r"grad_out must have the shape of the layer's output"):
            m.backward(np.ones(shape, np.float32))
    gx = m.backward(np.ones(y.shape, np.float32))
    assert gx.shape == x.shape
