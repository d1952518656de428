"""Fused eval-mode inference in Sequential: equal to the unfused path, cache invalidation, backward."""
import copy

import numpy as np
import pytest

import fastcnn
from fastcnn import nn
from fastcnn._random import manual_seed
from fastcnn.nn.fused import FusedBlock, NormActBlock


@pytest.fixture(autouse=True)
def _one_thread():
    fastcnn.set_num_threads(1)


def randomise_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if m.running_mean is not None:
                m.running_mean[...] = rng.uniform(-0.5, 0.5, m.num_features)
                m.running_var[...] = rng.uniform(0.5, 2.0, m.num_features)
            if m.weight is not None:
                m.weight.data[...] = rng.uniform(0.5, 1.5, m.num_features)
            if m.bias is not None:
                m.bias.data[...] = rng.uniform(-0.5, 0.5, m.num_features)
    return model


def build(dtype):
    manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),  # conv+bn+relu
        nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6, affine=False), nn.LeakyReLU(0.2),
        nn.Conv2d(6, 6, 3, padding=1, groups=2), nn.BatchNorm2d(6),                    # conv+bn
        nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.Dropout(0.5), nn.ReLU(),           # conv+relu
        nn.Flatten(), nn.Linear(8 * 4 * 4, 12), nn.BatchNorm1d(12, bias=False), nn.LeakyReLU(0.1),
        nn.Identity(), nn.Linear(12, 10), nn.ReLU(inplace=True), nn.Linear(10, 3))
    return randomise_bn(m).to(dtype)


def kinds(model):
    return [type(s).__name__ for s in model._get_plan()]


def test_plan_fuses_expected_blocks():
    m = build(np.float32).eval()
    # in eval mode a layer on its own (the last Linear) is a block of one
    # (the Flatten goes into the Linear block after it)
    assert kinds(m) == ["FusedBlock"] * 7
    plan = m._get_plan()
    assert [len(s.modules) for s in plan if isinstance(s, FusedBlock)] == [4, 3, 2, 2, 3, 2, 1]
    assert type(plan[0].pool) is nn.MaxPool2d
    assert plan[4].flatten is m[12] and plan[4].layer is m[13]
    assert all(s.flatten is None for i, s in enumerate(plan) if i != 4)
    m.train()
    # training: an activation right after a Conv2d / Linear is fused (never BatchNorm), and
    # one right after a BatchNorm goes into the BatchNorm's pass
    assert kinds(m) == ["Conv2d", "NormActBlock", "MaxPool2d", "Conv2d", "NormActBlock", "Conv2d", "BatchNorm2d",
                        "Conv2d", "Dropout", "ReLU", "Flatten", "Linear", "NormActBlock", "FusedBlock", "Linear"]
    assert [s.modules for s in m._get_plan() if isinstance(s, NormActBlock)] == [[m[1], m[2]], [m[5], m[6]],
                                                                                  [m[14], m[15]]]
    m.fused_training = False
    assert kinds(m) == [type(x).__name__ for x in m]
    m.eval()
    m[1].train()  # a BatchNorm in training mode is not folded
    assert kinds(m)[:3] == ["FusedBlock", "NormActBlock", "MaxPool2d"]
    assert m._get_plan()[0].modules == [m[0]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_fused_equals_unfused(dtype):
    m = build(dtype).eval()
    x = np.random.default_rng(1).standard_normal((5, 1, 16, 16)).astype(dtype)
    fused = m(x)
    m.fused_inference = False
    plain = m(x)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
    assert fused.dtype == plain.dtype == dtype
    np.testing.assert_allclose(fused, plain, **tol)
    # batch of one, and a float32 input to a float64 model
    np.testing.assert_allclose(m(x[:1]), plain[:1], **tol)
    x32 = x[:1].astype(np.float32)
    ref = m(x32.astype(dtype))
    m.fused_inference = True
    np.testing.assert_allclose(m(x32), ref, **tol)


def test_backward_through_fused_blocks_equals_unfused():
    m = build(np.float64).eval()
    x = np.random.default_rng(2).standard_normal((3, 1, 16, 16))
    r = np.random.default_rng(3).standard_normal((3, 3))
    grads = []
    for fuse in (True, False):
        m.fused_inference = fuse
        m.zero_grad()
        m(x)
        dx = m.backward(r)
        grads.append((dx, {k: p.grad.copy() for k, p in m.named_parameters()}))
    (dx1, g1), (dx2, g2) = grads
    np.testing.assert_allclose(dx1, dx2, rtol=1e-9, atol=1e-12)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-9, atol=1e-12, err_msg=k)
    m.fused_inference = True
    m(x)
    assert m.backward(r, need_input_grad=False) is None


def test_folded_weights_follow_parameter_changes():
    m = build(np.float64)
    x = np.random.default_rng(4).standard_normal((2, 1, 16, 16))

    def unfused():
        m.fused_inference = False
        y = m(x)
        m.fused_inference = True
        return y

    m.eval()
    m(x)
    # a training step in train mode (weights updated in place), then eval() again
    m.train()
    m(x)
    for p in m.parameters():
        p.data -= 0.01 * np.sign(p.data)
    m.eval()
    np.testing.assert_allclose(m(x), unfused(), rtol=1e-10, atol=1e-12)
    # load_state_dict while in eval mode
    sd = m.state_dict()
    sd["1.running_var"] = sd["1.running_var"] * 3
    sd["0.weight"] = sd["0.weight"] * -1
    m.load_state_dict(sd)
    np.testing.assert_allclose(m(x), unfused(), rtol=1e-10, atol=1e-12)
    # arrays replaced rather than edited
    m[1].weight.data = m[1].weight.data * 2
    m[13].weight.data = m[13].weight.data + 1
    np.testing.assert_allclose(m(x), unfused(), rtol=1e-10, atol=1e-12)
    # in-place edits in eval mode: weights, BatchNorm affine and running statistics
    m(x)
    m[0].weight.data += 0.5
    np.testing.assert_allclose(m(x), unfused(), rtol=1e-10, atol=1e-12)
    m[1].weight.data *= 2
    m[5].running_mean[:] += 0.3
    np.testing.assert_allclose(m(x), unfused(), rtol=1e-10, atol=1e-12)
    m[13].bias.data[0] -= 1.0
    m[14].running_var[2] *= 4
    np.testing.assert_allclose(m(x), unfused(), rtol=1e-10, atol=1e-12)
    # an optimiser step on a model left in eval mode
    m.zero_grad()
    m(x)
    m.backward(np.ones((2, 3)))
    fastcnn.optim.SGD(m.parameters(), lr=0.1).step()
    np.testing.assert_allclose(m(x), unfused(), rtol=1e-10, atol=1e-12)
    # dtype change
    m.float()
    np.testing.assert_allclose(m(x.astype(np.float32)), unfused(), rtol=1e-4, atol=1e-5)


def test_linear_fusion_falls_back_for_3d_input():
    manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).double().eval()
    x = np.random.default_rng(0).standard_normal((2, 5, 4))
    y = m(x)
    ref = np.maximum(x @ m[0].weight.data.T + m[0].bias.data, 0)
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    assert m.backward(np.ones_like(y)).shape == x.shape


def test_no_fusion_without_running_stats_or_negative_slope():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False),
                      nn.Linear(3, 3), nn.LeakyReLU(-0.5)).eval()
    plan = m._get_plan()
    assert plan[0].modules == [m[0]] and plan[1] is m[1]
    assert plan[2].modules == [m[2]] and plan[3] is m[3]


@pytest.mark.parametrize("first_act", ["relu", "leaky"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_training_fusion_equals_unfused(dtype, first_act):
    def make():
        manual_seed(3)
        return nn.Sequential(
            nn.Conv2d(2, 5, 3, padding=1), nn.ReLU() if first_act == "relu" else nn.LeakyReLU(0.3),
            nn.MaxPool2d(2),
            nn.Conv2d(5, 6, 3, stride=2, padding=1, bias=False), nn.LeakyReLU(0.2),
            nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
            nn.Flatten(), nn.Linear(6 * 3 * 3, 7), nn.ReLU(), nn.Linear(7, 3), nn.LeakyReLU(0.1)).to(dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 16, 16)).astype(dtype)
    x[0, 0, :4] = -1.0   # windows where every activation is negative
    x[1, 1, 2:5, 3] = np.nan
    g = rng.standard_normal((4, 3)).astype(dtype)
    fused, plain = make(), make()
    plain.fused_training = False
    plan = fused._get_plan()
    assert sum(isinstance(s, FusedBlock) for s in plan) == 4
    # LeakyReLU before overlapping windows keeps its own pool
    assert [s.pool is not None for s in plan if isinstance(s, FusedBlock)] == [True, False, False, False]
    for _ in range(2):  # gradients accumulate alike
        np.testing.assert_array_equal(fused(x), plain(x))
        np.testing.assert_array_equal(fused.backward(g), plain.backward(g))
    fused.eval()
    plain.eval()
    np.testing.assert_array_equal(fused(x), plain(x))
    np.testing.assert_array_equal(fused.backward(g), plain.backward(g))
    fused.train()
    plain.train()
    for (k, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters()):
        np.testing.assert_array_equal(a.grad, b.grad, err_msg=k)
    fused.zero_grad()
    plain.zero_grad()
    fused(x)
    plain(x)
    assert fused.backward(g, need_input_grad=False) is None
    plain.backward(g, need_input_grad=False)
    for (k, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters()):
        np.testing.assert_array_equal(a.grad, b.grad, err_msg=k)


def test_kept_kernel_calls_follow_copies_settings_and_weights():
    """An eval-mode block keeps its checked kernel call for inputs of one shape; copies,
    pickles, changed settings, thread counts and weights must not reuse a stale one."""
    import copy
    import pickle
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 3)).eval()
    x = np.random.default_rng(7).standard_normal((2, 1, 8, 8)).astype(np.float32)

    def unfused(model, inp):
        model.fused_inference = False
        try:
            return model(inp)
        finally:
            model.fused_inference = True

    y = m(x)
    np.testing.assert_allclose(m(x), y, rtol=0, atol=0)
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        clone[0].weight.data += 1
        clone[6].bias.data[...] = 5
        np.testing.assert_allclose(clone(x), unfused(clone, x), rtol=1e-5, atol=1e-5)
        assert not np.allclose(clone(x), y)
    np.testing.assert_array_equal(m(x), y)
    m[3].weight.data *= 2                          # in place
    np.testing.assert_allclose(m(x), unfused(m, x), rtol=1e-5, atol=1e-5)
    m[3].padding = 0                               # a changed setting
    m[3]._pad = (0, 0)
    m[6] = nn.Linear(16 * 2 * 2, 3)
    m.eval()
    np.testing.assert_allclose(m(x), unfused(m, x), rtol=1e-5, atol=1e-5)
    m[2].kernel_size = m[2].stride = 1             # the pool's
    m[6] = nn.Linear(16 * 6 * 6, 3)
    m.eval()
    out = m(x)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, unfused(m, x), rtol=1e-5, atol=1e-5)
    for nt in (2, 1):
        fastcnn.set_num_threads(nt)
        np.testing.assert_allclose(m(x), out, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(m(x[:1]), out[:1], rtol=1e-5, atol=1e-6)   # another shape


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_flatten_in_a_linear_block(training, rng):
    """Flatten + Linear + ReLU as one block: outputs and gradients equal the modules', kept calls
    follow the input's shape (a batch of none included), and the input gradient has the input's shape."""
    manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 4, 6), nn.ReLU(),
                      nn.Linear(6, 2)).double().train(training)
    plan = m._get_plan()
    assert [type(s).__name__ for s in plan] == (["FusedBlock"] * 3 if not training else
                                                ["FusedBlock", "FusedBlock", "Linear"])
    assert plan[1].flatten is m[2] and "Flatten" in repr(plan[1])
    for n in (4, 4, 1, 0, 0, 3):
        x = rng.standard_normal((n, 2, 5, 4))
        g = rng.standard_normal((n, 2))
        for p in m.parameters():
            p.grad[...] = 0
        y = m(x)
        gx = m.backward(g)
        grads = [p.grad.copy() for p in m.parameters()]
        m.fused_inference = m.fused_training = False
        for p in m.parameters():
            p.grad[...] = 0
        y2 = m(x)
        gx2 = m.backward(g)
        m.fused_inference = m.fused_training = True
        assert y.shape == (n, 2) and gx.shape == x.shape
        np.testing.assert_allclose(y, y2, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(gx, gx2, rtol=1e-12, atol=1e-12)
        for a, b in zip(grads, (p.grad for p in m.parameters())):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="Linear"):
        m(rng.standard_normal((2, 2, 5, 5)))                        # 75 features where 60 are expected


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_blocks_follow_settings_changed_after_a_call(training, rng):
    """A setting changed between calls (padding, the pool's ceil mode, the activation's slope,
    a negative one included) is used by the next call, as by the modules one by one."""
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float64)
    m = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.LeakyReLU(0.2), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(5 * 4 * 4, 4), nn.LeakyReLU(0.1)).to(np.float64)
    m.train(training)
    ref = copy.deepcopy(m)
    ref.fused_inference = ref.fused_training = False
    g = rng.standard_normal((2, 4))

    def check():
        y, yr = m(x), ref(x)
        np.testing.assert_allclose(y, yr, rtol=1e-10, atol=1e-12)
        if training:
            for mod in (m, ref):
                mod.zero_grad()
            np.testing.assert_allclose(m.backward(g), ref.backward(g), rtol=1e-10, atol=1e-12)
            for p, pr in zip(m.parameters(), ref.parameters()):
                np.testing.assert_allclose(p.grad, pr.grad, rtol=1e-10, atol=1e-12)
        return y

    check()
    for mod in (m, ref):
        mod[1].negative_slope = 0.5
    check()
    for mod in (m, ref):
        mod[5].negative_slope = -0.3     # negative: the modules run one by one
    check()

    def new_linear(in_features):
        # the pooled map's size changed: a Linear that takes it, the same in both models
        for mod in (m, ref):
            mod[4] = nn.Linear(in_features, 4).to(np.float64)
        ref[4].load_state_dict(m[4].state_dict())
        m.train(training)
        ref.train(training)

    for mod in (m, ref):
        mod[2].ceil_mode = True
    new_linear(5 * 5 * 5)
    check()
    for mod in (m, ref):
        mod[0]._pad = (0, 0)
        mod[0].padding = (0, 0)
        mod[2].ceil_mode = False
    new_linear(5 * 3 * 3)
    check()


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_batchnorm_activation_block_equals_the_modules(training, dtype):
    """BatchNorm + ReLU / LeakyReLU run as one pass: the outputs, running statistics and
    every gradient equal those of the modules one by one; a slope changed after a call
    is followed, a negative one runs the modules one by one."""
    rng = np.random.default_rng(3)

    def make():
        manual_seed(0)
        # (after a transposed convolution or a Tanh, eval mode has no layer to fold a BatchNorm into)
        return randomise_bn(nn.Sequential(
            nn.ConvTranspose2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(6, 4, 3, stride=2), nn.BatchNorm2d(4, affine=False), nn.ReLU(inplace=True),
            nn.Flatten(), nn.Linear(1156, 10), nn.Tanh(), nn.BatchNorm1d(10), nn.ReLU(),
            nn.Linear(10, 2))).to(dtype)

    x = rng.standard_normal((7, 3, 8, 8)).astype(dtype)
    g = rng.standard_normal((7, 2)).astype(dtype)
    fused, plain = make().train(training), make().train(training)
    plain.fused_training = plain.fused_inference = False
    assert sum(isinstance(s, NormActBlock) for s in fused._get_plan()) == 3
    for slope in (0.2, 0.05, -0.3):
        fused[2].negative_slope = plain[2].negative_slope = slope
        for m in (fused, plain):
            m.zero_grad()
        y1, y2 = fused(x), plain(x)
        assert np.array_equal(y1, y2)
        gx1, gx2 = fused.backward(g), plain.backward(g)
        assert np.array_equal(gx1, gx2)
        for (k, p1), (_, p2) in zip(fused.named_parameters(), plain.named_parameters()):
            assert np.array_equal(p1.grad, p2.grad), (k, slope)
        for (k, b1), (_, b2) in zip(fused.named_buffers(), plain.named_buffers()):
            assert np.array_equal(b1, b2), (k, slope)


def test_batchnorm_activation_block_needs_a_forward():
    m = nn.Sequential(nn.BatchNorm1d(3), nn.ReLU())
    step = m._get_plan()[0]
    assert isinstance(step, NormActBlock)
    with pytest.raises(RuntimeError, match="forward"):
        step.backward(np.ones((2, 3), np.float32))


def test_batchnorm_subclass_keeps_its_own_forward():
    """A BatchNorm subclass (a synchronised BatchNorm, say) is not fused with the activation
    after it: its own forward and backward run."""
    calls = []

    class Traced(nn.BatchNorm2d):
        def forward(self, x):
            calls.append("forward")
            return super().forward(x)

        def backward(self, grad_out, need_input_grad=True):
            calls.append("backward")
            return super().backward(grad_out, need_input_grad)

    m = nn.Sequential(nn.Conv2d(2, 3, 3), Traced(3), nn.ReLU())
    assert not any(isinstance(s, NormActBlock) for s in m._get_plan())
    y = m(np.ones((2, 2, 5, 5), np.float32))
    m.backward(np.ones_like(y))
    assert calls == ["forward", "backward"]
