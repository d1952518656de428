"""Optimisers and learning-rate schedulers against torch.optim."""
import json

import numpy as np
import pytest

import fastcnn
from fastcnn import nn, optim
from fastcnn.optim import lr_scheduler


class P:
    """A minimal parameter: ``.data`` and ``.grad``."""

    def __init__(self, data):
        self.data = data
        self.grad = None


SHAPES = [(4, 3, 3, 3), (4,), (7, 5), ()]   # () a 0-d (scalar) parameter

SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.8, weight_decay=1e-2, nesterov=True),
    dict(lr=0.05, weight_decay=1e-2, maximize=True),
    dict(lr=0.05, momentum=0.5, weight_decay=1e-3, dampening=0.1, maximize=True),
]
ADAM_CASES = [
    dict(lr=1e-2),
    dict(lr=1e-2, betas=(0.5, 0.999)),
    dict(lr=1e-2, betas=(0.3, 0.9), eps=1e-6),
    dict(lr=1e-2, weight_decay=1e-2),
    dict(lr=1e-2, amsgrad=True),
    dict(lr=1e-2, weight_decay=0.1, amsgrad=True, maximize=True),
]
CASES = ([("SGD", c) for c in SGD_CASES] + [("Adam", c) for c in ADAM_CASES]
         + [("AdamW", c) for c in ADAM_CASES] + [("AdamW", {})])


def _case_id(case):
    name, kw = case
    return name + "-" + ("-".join(f"{k}={v}" for k, v in kw.items()) or "defaults")


def _run_pair(torch, name, kw, dtype, steps=6, seed=0, groups=False):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    ours = [P(w.copy()) for w in init]
    theirs = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in init]
    if groups:
        opt = getattr(optim, name)([{"params": ours[:1]}, {"params": ours[1:], "lr": 0.003}], **kw)
        topt = getattr(torch.optim, name)([{"params": theirs[:1]}, {"params": theirs[1:], "lr": 0.003}],
                                          foreach=False, **kw)
    else:
        opt = getattr(optim, name)(ours, **kw)
        topt = getattr(torch.optim, name)(theirs, foreach=False, **kw)
    for gs in grads:
        opt.zero_grad()
        for p, g in zip(ours, gs):
            p.grad = g.copy()
        for p, g in zip(theirs, gs):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    return ours, theirs, opt, topt, grads


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_torch(torch, case, dtype):
    name, kw = case
    ours, theirs, _, _, grads = _run_pair(torch, name, kw, dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-6, atol=1e-6)
    for p, t in zip(ours, theirs):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, t.detach().numpy(), **tol)
    # the optimiser never writes into the gradients
    for p, g in zip(ours, grads[-1]):
        np.testing.assert_array_equal(p.grad, g)


@pytest.mark.torch
@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.01))])
def test_param_groups_match_torch(torch, name, kw):
    ours, theirs, opt, topt, _ = _run_pair(torch, name, kw, np.float64, groups=True)
    assert opt.param_groups[1]["lr"] == 0.003 and opt.param_groups[0]["lr"] == kw["lr"]
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.1, momentum=0.9)),
                                     ("Adam", dict(lr=0.01, amsgrad=True)), ("AdamW", dict(lr=0.01))])
def test_state_dict_structure_matches_torch(torch, name, kw):
    _, _, opt, topt, _ = _run_pair(torch, name, kw, np.float64, steps=2)
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sd["state"].keys() == tsd["state"].keys()
    for i in sd["state"]:
        assert sd["state"][i].keys() == tsd["state"][i].keys()
        for k, v in sd["state"][i].items():
            np.testing.assert_allclose(np.asarray(v), tsd["state"][i][k].numpy(), rtol=1e-12)
    for g, tg in zip(sd["param_groups"], tsd["param_groups"]):
        assert g["params"] == tg["params"]
        for k, v in g.items():
            assert tg[k] == v, k


@pytest.mark.torch
def test_load_torch_state_dict(torch):
    """Continue a torch Adam run from its converted state dict."""
    ours, theirs, opt, topt, _ = _run_pair(torch, "Adam", dict(lr=0.01), np.float64, steps=3)
    tsd = topt.state_dict()
    fresh = [P(t.detach().numpy().copy()) for t in theirs]
    opt2 = optim.Adam(fresh, lr=0.5)
    opt2.load_state_dict({"state": {i: {k: v.numpy() for k, v in s.items()} for i, s in tsd["state"].items()},
                          "param_groups": tsd["param_groups"]})
    assert opt2.param_groups[0]["lr"] == 0.01 and opt2.state[fresh[0]]["step"] == 3
    g = [np.ones_like(p.data) for p in fresh]
    for p, gg in zip(fresh, g):
        p.grad = gg
    for p, gg in zip(theirs, g):
        p.grad = torch.from_numpy(gg.copy())
    opt2.step()
    topt.step()
    for p, t in zip(fresh, theirs):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
                                     ("Adam", dict(lr=0.01, amsgrad=True)), ("AdamW", dict(lr=0.01))])
def test_state_dict_round_trip_is_bitwise(name, kw):
    rng = np.random.default_rng(3)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(6)]

    def run(split):
        ps = [P(w.copy()) for w in init]
        opt = getattr(optim, name)(ps, **kw)
        for t, gs in enumerate(grads):
            if t == split:
                sd = opt.state_dict()
                ps = [P(p.data.copy()) for p in ps]
                opt = getattr(optim, name)(ps, lr=123.0)
                opt.load_state_dict(sd)
            for p, g in zip(ps, gs):
                p.grad = g
            opt.step()
        return ps

    for a, b in zip(run(None), run(3)):
        assert np.array_equal(a.data, b.data)


def test_step_skips_params_without_grad_and_zero_grad():
    a, b = P(np.ones(3)), P(np.ones(3))
    opt = optim.SGD([a, b], lr=0.5, momentum=0.9)
    a.grad = np.ones(3)
    opt.step()
    np.testing.assert_array_equal(a.data, 0.5)
    np.testing.assert_array_equal(b.data, 1.0)
    assert b not in opt.state
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(a.grad, 0.0)
    opt.zero_grad()   # None by default, as in PyTorch
    assert a.grad is None


def test_frozen_parameters_are_not_updated():
    a = P(np.ones(3))
    a.requires_grad = False
    a.grad = np.ones(3)
    opt = optim.AdamW([a], lr=0.5)
    opt.step()
    np.testing.assert_array_equal(a.data, 1.0)
    assert a not in opt.state


def test_bad_arguments():
    p = P(np.zeros(3))
    with pytest.raises(ValueError, match="lr"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas\\[0\\]"):
        optim.Adam([p], betas=(1.0, 0.9))
    with pytest.raises(TypeError, match="betas"):
        optim.Adam([p], betas=0.9)
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])
    with pytest.raises(TypeError):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match=".data"):
        optim.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="more than one"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="unknown"):
        optim.SGD([{"params": [p], "momentun": 0.9}], lr=0.1)
    with pytest.raises(TypeError, match="lr"):
        optim.SGD([p], lr="0.1")
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.zeros(4)
    with pytest.raises(ValueError, match="shape"):
        opt.step()
    with pytest.raises(ValueError, match="parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})
    a = optim.Adam([P(np.zeros(3))])
    with pytest.raises(ValueError, match="shape"):
        a.load_state_dict({"state": {0: {"step": 1, "exp_avg": np.zeros(2), "exp_avg_sq": np.zeros(3)}},
                           "param_groups": a.state_dict()["param_groups"]})


# --- schedulers -----------------------------------------------------------------------------------

SCHED = [
    ("StepLR", dict(step_size=3)),
    ("StepLR", dict(step_size=2, gamma=0.5)),
    ("CosineAnnealingLR", dict(T_max=5)),
    ("CosineAnnealingLR", dict(T_max=4, eta_min=1e-3)),
]


@pytest.mark.torch
@pytest.mark.parametrize("name,kw", SCHED, ids=[f"{n}-{k}" for n, k in SCHED])
def test_scheduler_matches_torch(torch, name, kw):
    import warnings
    p = P(np.zeros(2))
    opt = optim.SGD([{"params": [p]}, {"params": [P(np.zeros(1))], "lr": 0.03}], lr=0.1)
    tp = torch.nn.Parameter(torch.zeros(2))
    topt = torch.optim.SGD([{"params": [tp]}, {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.03}],
                           lr=0.1)
    s = getattr(lr_scheduler, name)(opt, **kw)
    ts = getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    ours, theirs = [s.get_last_lr()], [ts.get_last_lr()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(13):
            opt.step()
            topt.step()
            s.step()
            ts.step()
            ours.append(s.get_last_lr())
            theirs.append(ts.get_last_lr())
    assert ours == theirs  # exact floats
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in topt.param_groups]


@pytest.mark.parametrize("name,kw", SCHED, ids=[f"{n}-{k}" for n, k in SCHED])
def test_scheduler_state_dict_resume(name, kw):
    def make():
        opt = optim.SGD([P(np.zeros(2))], lr=0.1)
        return opt, getattr(lr_scheduler, name)(opt, **kw)

    opt, s = make()
    straight = []
    for _ in range(9):
        s.step()
        straight.append(s.get_last_lr())
    opt, s = make()
    resumed = []
    for _ in range(4):
        s.step()
        resumed.append(s.get_last_lr())
    osd, ssd = json.loads(json.dumps(opt.state_dict())), json.loads(json.dumps(s.state_dict()))
    opt, s = make()
    opt.load_state_dict(osd)
    s.load_state_dict(ssd)
    for _ in range(5):
        s.step()
        resumed.append(s.get_last_lr())
    assert straight == resumed


def test_scheduler_bad_arguments():
    opt = optim.SGD([P(np.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="step_size"):
        lr_scheduler.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="T_max"):
        lr_scheduler.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(TypeError):
        lr_scheduler.StepLR(object(), step_size=2)
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(opt, step_size=2, last_epoch=3)


@pytest.mark.torch
@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
                                     ("Adam", dict(lr=1e-2, weight_decay=1e-3)),
                                     ("AdamW", dict(lr=1e-2, amsgrad=True))])
def test_lenet_training_steps_match_torch(torch, name, kw):
    """A LeNet trained a few steps in fastcnn and in PyTorch from the same weights ends with the same weights."""
    import fastcnn
    import fastcnn._random as R
    from fastcnn import nn
    tnn = torch.nn
    R.manual_seed(0)
    # no conv bias before BatchNorm: its gradient is pure rounding noise, which Adam would amplify
    ours = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 10)).double()
    theirs = tnn.Sequential(tnn.Conv2d(1, 4, 3, padding=1, bias=False), tnn.BatchNorm2d(4), tnn.ReLU(),
                            tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(4 * 4 * 4, 10)).double()
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    opt = getattr(optim, name)(ours.parameters(), **kw)
    topt = getattr(torch.optim, name)(theirs.parameters(), foreach=False, **kw)
    crit, tcrit = nn.CrossEntropyLoss(), tnn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    with fastcnn.threads(1):
        for _ in range(5):
            x = rng.random((8, 1, 8, 8))
            y = rng.integers(0, 10, 8)
            crit(ours(x), y)
            opt.zero_grad()
            ours.backward(crit.backward())
            opt.step()
            topt.zero_grad()
            tcrit(theirs(torch.from_numpy(x)), torch.from_numpy(y)).backward()
            topt.step()
    tsd = theirs.state_dict()
    for k, v in ours.state_dict().items():
        np.testing.assert_allclose(v, tsd[k].numpy(), rtol=1e-8, atol=1e-10, err_msg=k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,kw", [
    ("Adam", {}), ("Adam", dict(weight_decay=0.1, amsgrad=True)), ("AdamW", dict(weight_decay=0.05, maximize=True)),
    ("Adam", dict(betas=(0.3, 0.99))), ("AdamW", dict(amsgrad=True))])
def test_adam_compiled_update_equals_array_formulation(monkeypatch, cls, kw, dtype):
    """The one-pass compiled update and the array-expression update agree bit for bit
    (also through NaN and inf gradients), for any thread count."""
    import fastcnn.optim as O
    rng = np.random.default_rng(0)
    ps = [nn.Parameter(rng.standard_normal((70, 33)).astype(dtype)), nn.Parameter(rng.standard_normal(5).astype(dtype))]
    qs = [nn.Parameter(p.data.copy()) for p in ps]
    o1, o2 = getattr(O, cls)(ps, lr=1e-2, **kw), getattr(O, cls)(qs, lr=1e-2, **kw)
    fusable = O._fusable
    for step in range(5):
        for p, q in zip(ps, qs):
            g = rng.standard_normal(p.data.shape).astype(dtype)
            if step == 2:
                g.reshape(-1)[:3] = [np.nan, np.inf, 0]
            p.grad, q.grad = g.copy(), g.copy()
        with fastcnn.threads(1 + step % 3):
            o1.step()
        monkeypatch.setattr(O, "_fusable", lambda *a: False)
        with np.errstate(invalid="ignore"):
            o2.step()
        monkeypatch.setattr(O, "_fusable", fusable)
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(p.data, q.data)
        for k in o2.state[q]:
            if k != "step":
                np.testing.assert_array_equal(o1.state[p][k], o2.state[q][k])
    assert np.isnan(ps[0].data).any()   # the NaN gradient reached the parameter on both paths
