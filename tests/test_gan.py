"""DCGAN builders and GANTrainer: shapes, initialisation, one step by hand and against PyTorch, resume."""
import os
import signal

import numpy as np
import pytest

import fastcnn
from fastcnn import _random, nn, optim
from fastcnn.gan import GANTrainer, TrainingInterrupted, dcgan_discriminator, dcgan_generator, dcgan_init_

manual_seed = getattr(fastcnn, "manual_seed", None) or _random.manual_seed


@pytest.mark.parametrize("size", [16, 28, 32, 64])
def test_builders_shapes_and_ranges(size, rng):
    nz = 12
    G = dcgan_generator(nz=nz, image_size=size, channels=1, ngf=4, seed=0)
    D = dcgan_discriminator(image_size=size, channels=1, ndf=4, seed=1)
    z = rng.standard_normal((5, nz)).astype(np.float32)
    x = G(z)
    assert x.shape == (5, 1, size, size) and x.dtype == np.float32
    assert np.all(x >= -1) and np.all(x <= 1)
    logits = D(x)
    assert logits.shape == (5, 1)
    G.eval()
    D.eval()
    assert G(z).shape == (5, 1, size, size)
    assert D(x).shape == (5, 1)


def test_rgb_and_radford_64_structure():
    G = dcgan_generator(nz=100, image_size=64, channels=3, ngf=8, seed=0)
    D = dcgan_discriminator(image_size=64, channels=3, ndf=8, seed=0)
    convt = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    conv = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert len(convt) == 5 and len(conv) == 5
    assert all(m.bias is None for m in convt + conv)
    assert [m.out_channels for m in convt] == [64, 32, 16, 8, 3]
    assert [m.out_channels for m in conv] == [8, 16, 32, 64, 1]
    # BatchNorm everywhere except G's output and D's input
    assert sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) == 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 3
    assert isinstance(list(G)[-1], nn.Tanh)
    assert isinstance(list(D)[1], nn.LeakyReLU) and list(D)[1].negative_slope == 0.2
    x = G(np.zeros((2, 100), np.float32))
    assert x.shape == (2, 3, 64, 64) and D(x).shape == (2, 1)


def test_dcgan28_matches_reference_workload():
    G = dcgan_generator(nz=100, image_size=28, ngf=64, seed=0)
    D = dcgan_discriminator(image_size=28, ndf=64, seed=0)
    kinds = [type(m).__name__ for m in G]
    assert kinds == ["Linear", "Unflatten", "BatchNorm2d", "ReLU", "ConvTranspose2d", "BatchNorm2d", "ReLU",
                     "ConvTranspose2d", "Tanh"]
    assert G[0].out_features == 128 * 7 * 7
    assert [type(m).__name__ for m in D] == ["Conv2d", "LeakyReLU", "Conv2d", "BatchNorm2d", "LeakyReLU",
                                               "Flatten", "Linear"]
    assert D[6].in_features == 6272


def test_dcgan_init_statistics_and_seeding():
    G = dcgan_generator(nz=100, image_size=32, ngf=32, seed=3)
    for m in G.modules():
        if isinstance(m, nn.ConvTranspose2d):
            assert abs(m.weight.data.std() - 0.02) < 0.003 and abs(m.weight.data.mean()) < 0.003
        if isinstance(m, nn.BatchNorm2d):
            assert abs(m.weight.data.mean() - 1) < 0.01 and np.all(m.bias.data == 0)
    G2 = dcgan_generator(nz=100, image_size=32, ngf=32, seed=3)
    for (k, a), (_, b) in zip(G.state_dict().items(), G2.state_dict().items()):
        assert np.array_equal(a, b), k
    manual_seed(5)
    a = dcgan_discriminator(image_size=16, ndf=8)
    manual_seed(5)
    b = dcgan_discriminator(image_size=16, ndf=8)
    assert all(np.array_equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))
    lin = dcgan_init_(nn.Linear(50, 40), generator=np.random.default_rng(0))
    assert np.all(lin.bias.data == 0) and abs(lin.weight.data.std() - 0.02) < 0.003


@pytest.mark.parametrize("kwargs,err", [
    (dict(image_size=20), ValueError), (dict(image_size=16.0), TypeError), (dict(nz=0), ValueError),
    (dict(ngf=-1), ValueError), (dict(channels=0), ValueError),
])
def test_generator_rejects_bad_arguments(kwargs, err):
    with pytest.raises(err):
        dcgan_generator(**kwargs)


def test_trainer_rejects_bad_arguments():
    G = dcgan_generator(nz=4, image_size=16, ngf=2, seed=0)
    D = dcgan_discriminator(image_size=16, ndf=2, seed=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        GANTrainer(G, D, 4, label_smoothing=1.0)
    with pytest.raises(TypeError):
        GANTrainer(G, "D", 4)
    tr = GANTrainer(G, D, 4)
    with pytest.raises(ValueError, match="real"):
        tr.step(np.zeros((2, 16, 16), np.float32))
    with pytest.raises(ValueError, match="image shape"):
        tr.step(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        tr.fit(np.zeros((4, 1, 16, 16), np.float32), epochs=1, batch_size=8, progress=False)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="lr_decay"):
            GANTrainer(G, D, 4, lr_decay=bad)


def test_lr_decay_schedule():
    data = _data()
    tr = _fresh(lr_decay=0.5)
    seen = []
    tr.fit(data, epochs=4, batch_size=16, progress=False,
           callback=lambda t, e, s: seen.append((t.opt_g.param_groups[0]["lr"], t.opt_d.param_groups[0]["lr"])))
    # epoch e of E trains at lr * min(1, (E - e) / (0.5 E))
    assert seen == [(1e-3, 1e-3), (1e-3, 1e-3), (1e-3, 1e-3), (0.5e-3, 0.5e-3)]
    # no decay: the optimisers' learning rates are left alone
    plain = _fresh()
    plain.opt_g.param_groups[0]["lr"] = 3e-4
    plain.fit(data, epochs=1, batch_size=16, progress=False)
    assert plain.opt_g.param_groups[0]["lr"] == 3e-4


def _pair(nz=6, size=16, ngf=4, ndf=4):
    return (dcgan_generator(nz=nz, image_size=size, ngf=ngf, seed=10),
            dcgan_discriminator(image_size=size, ndf=ndf, seed=11))


def _sig(x):
    return 1 / (1 + np.exp(-x.astype(np.float64)))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_step_equals_step_by_hand(smoothing, rng):
    nz, n = 6, 8
    real = rng.uniform(-1, 1, size=(n, 1, 16, 16)).astype(np.float32)
    G, D = _pair(nz)
    tr = GANTrainer(G, D, nz, lr=1e-3, seed=7, label_smoothing=smoothing)
    out = tr.step(real)

    G2, D2 = _pair(nz)
    og = optim.Adam(G2.parameters(), lr=1e-3, betas=(0.5, 0.999))
    od = optim.Adam(D2.parameters(), lr=1e-3, betas=(0.5, 0.999))
    crit = nn.BCEWithLogitsLoss()
    z = np.random.default_rng(7).standard_normal((n, nz)).astype(np.float32)
    fake = G2(z)
    od.zero_grad()
    lr_ = D2(real)
    l1 = crit(lr_, np.full((n, 1), 1 - smoothing, np.float32))
    D2.backward(crit.backward())
    lf = D2(fake)
    l2 = crit(lf, np.zeros((n, 1), np.float32))
    D2.backward(crit.backward())
    od.step()
    og.zero_grad()
    lg = D2(fake)
    l3 = crit(lg, np.ones((n, 1), np.float32))
    gx = D2.backward(crit.backward())
    G2.backward(gx)
    og.step()

    assert out["d_loss"] == pytest.approx(l1 + l2, rel=1e-6)
    assert out["g_loss"] == pytest.approx(l3, rel=1e-6)
    assert out["d_real"] == pytest.approx(_sig(lr_).mean(), rel=1e-6)
    assert out["d_fake"] == pytest.approx(_sig(lf).mean(), rel=1e-6)
    for a, b in ((G, G2), (D, D2)):
        for (k, u), (_, v) in zip(a.state_dict().items(), b.state_dict().items()):
            np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7, err_msg=k)
    # D's gradients from the generator pass were discarded, G's remain
    assert all(p.grad is None for p in D.parameters())


def _torch_pair(torch, G, D, nz_in, ngf, ndf, outputs=1, lr=2e-3):
    """The 16x16 DCGAN pair written in torch (float64) holding G's and D's weights, and their Adam optimisers."""
    tnn = torch.nn
    tG = tnn.Sequential(tnn.Linear(nz_in, 2 * ngf * 16), tnn.Unflatten(1, (2 * ngf, 4, 4)), tnn.BatchNorm2d(2 * ngf),
                        tnn.ReLU(), tnn.ConvTranspose2d(2 * ngf, ngf, 4, 2, 1), tnn.BatchNorm2d(ngf), tnn.ReLU(),
                        tnn.ConvTranspose2d(ngf, 1, 4, 2, 1), tnn.Tanh()).double()
    tD = tnn.Sequential(tnn.Conv2d(1, ndf, 4, 2, 1), tnn.LeakyReLU(0.2), tnn.Conv2d(ndf, 2 * ndf, 4, 2, 1),
                        tnn.BatchNorm2d(2 * ndf), tnn.LeakyReLU(0.2), tnn.Flatten(),
                        tnn.Linear(2 * ndf * 16, outputs)).double()
    tG.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in G.state_dict().items()})
    tD.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in D.state_dict().items()})
    return (tG, tD, torch.optim.Adam(tG.parameters(), lr=lr, betas=(0.5, 0.999)),
            torch.optim.Adam(tD.parameters(), lr=lr, betas=(0.5, 0.999)))


def _assert_same_state(G, D, tG, tD, atol):
    for ours, theirs in ((G, tG), (D, tD)):
        tsd = theirs.state_dict()
        for k, v in ours.state_dict().items():
            np.testing.assert_allclose(v, tsd[k].numpy(), rtol=1e-7, atol=atol, err_msg=k)


def test_step_matches_pytorch(torch, rng):
    """Two iterations in float64 against the same DCGAN step written with torch.autograd."""
    tnn = torch.nn
    nz, n, ngf, ndf = 5, 6, 3, 3
    G, D = _pair(nz, 16, ngf, ndf)
    G.double()
    D.double()
    tr = GANTrainer(G, D, nz, lr=2e-3, seed=3, dtype=np.float64)
    tG, tD, og, od = _torch_pair(torch, G, D, nz, ngf, ndf)
    bce = tnn.BCEWithLogitsLoss()
    zrng = np.random.default_rng(3)
    for it in range(2):
        real = rng.uniform(-1, 1, size=(n, 1, 16, 16))
        out = tr.step(real)
        z = torch.from_numpy(zrng.standard_normal((n, nz)).astype(np.float32).astype(np.float64))
        treal = torch.from_numpy(real)
        fake = tG(z)
        od.zero_grad()
        ld = bce(tD(treal), torch.ones(n, 1, dtype=torch.float64)) + \
            bce(tD(fake.detach()), torch.zeros(n, 1, dtype=torch.float64))
        ld.backward()
        od.step()
        og.zero_grad()
        lg = bce(tD(fake), torch.ones(n, 1, dtype=torch.float64))
        lg.backward()
        og.step()
        assert out["d_loss"] == pytest.approx(ld.item(), rel=1e-8)
        assert out["g_loss"] == pytest.approx(lg.item(), rel=1e-8)
    _assert_same_state(G, D, tG, tD, atol=1e-9)


def test_translate_moves_images_and_its_backward_is_the_adjoint(rng):
    from fastcnn.gan import _translate, _translate_backward
    x = rng.standard_normal((4, 2, 6, 5))
    moves = np.array([[0, 0], [1, -2], [-3, 1], [6, 0]])
    y = _translate(x, moves, -1.0)
    assert np.array_equal(y[0], x[0])
    assert np.array_equal(y[1, :, 1:, :3], x[1, :, :5, 2:])
    assert np.all(y[1, :, 0] == -1) and np.all(y[1, :, :, 3:] == -1)
    assert np.array_equal(y[2, :, :3, 1:], x[2, :, 3:, :4]) and np.all(y[2, :, 3:] == -1)
    assert np.all(y[3] == -1)                   # moved out entirely
    g = rng.standard_normal(y.shape)
    # <T x - T 0, g> == <x, T* g>: the backward is the adjoint of the linear part
    lhs = np.sum((y - _translate(np.zeros_like(x), moves, -1.0)) * g)
    assert lhs == pytest.approx(np.sum(x * _translate_backward(g, moves)), rel=1e-12)


def test_step_with_translation_matches_pytorch(torch, rng):
    """Differentiable augmentation: the same moves applied in torch, gradients by autograd (float64)."""
    tnn, F = torch.nn, torch.nn.functional
    nz, n, ngf, ndf, k = 5, 6, 3, 3, 2
    G, D = _pair(nz, 16, ngf, ndf)
    G.double()
    D.double()
    tr = GANTrainer(G, D, nz, lr=2e-3, seed=3, dtype=np.float64, translate=k)
    tG, tD, og, od = _torch_pair(torch, G, D, nz, ngf, ndf)
    bce = tnn.BCEWithLogitsLoss()
    zrng = np.random.default_rng(3)

    def move(x, m):   # out[i, :, y, x] = in[i, :, y - dy, x - dx], -1 outside
        p = F.pad(x, (k, k, k, k), value=-1.0)
        return torch.stack([p[i, :, k - dy:k - dy + 16, k - dx:k - dx + 16] for i, (dy, dx) in enumerate(m)])

    for it in range(2):
        real = rng.uniform(-1, 1, size=(n, 1, 16, 16))
        out = tr.step(real)
        z = torch.from_numpy(zrng.standard_normal((n, nz)).astype(np.float32).astype(np.float64))
        m = zrng.integers(-k, k + 1, size=(3, n, 2))
        fake = tG(z)
        od.zero_grad()
        ld = bce(tD(move(torch.from_numpy(real), m[0])), torch.ones(n, 1, dtype=torch.float64)) + \
            bce(tD(move(fake.detach(), m[1])), torch.zeros(n, 1, dtype=torch.float64))
        ld.backward()
        od.step()
        og.zero_grad()
        lg = bce(tD(move(fake, m[2])), torch.ones(n, 1, dtype=torch.float64))
        lg.backward()
        og.step()
        assert out["d_loss"] == pytest.approx(ld.item(), rel=1e-8)
        assert out["g_loss"] == pytest.approx(lg.item(), rel=1e-8)
    _assert_same_state(G, D, tG, tD, atol=1e-9)


def _data(n=48, seed=0):
    r = np.random.default_rng(seed)
    # blobs: a bright square somewhere, so D has something to learn
    x = -np.ones((n, 1, 16, 16), np.float32)
    for i in range(n):
        a, b = r.integers(0, 10, size=2)
        x[i, 0, a:a + 6, b:b + 6] = 1
    return x


def _fresh(seed=0, ema=None, translate=0, lr_decay=0.0, codes=0, code_weight=0.5):
    G = dcgan_generator(nz=6 + codes, image_size=16, ngf=4, seed=10)
    D = dcgan_discriminator(image_size=16, ndf=4, seed=11, codes=codes)
    return GANTrainer(G, D, 6, lr=1e-3, seed=seed, ema_decay=ema, translate=translate, lr_decay=lr_decay,
                      codes=codes, code_weight=code_weight)


def _same(t1, t2):
    nets = [(t1.G, t2.G), (t1.D, t2.D)] + ([(t1.G_ema, t2.G_ema)] if t1.G_ema is not None else [])
    for a, b in nets:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert np.array_equal(sa[k], sb[k]), k
    for o1, o2 in ((t1.opt_g, t2.opt_g), (t1.opt_d, t2.opt_d)):
        s1, s2 = o1.state_dict()["state"], o2.state_dict()["state"]
        for i in s1:
            for k in s1[i]:
                assert np.array_equal(np.asarray(s1[i][k]), np.asarray(s2[i][k])), (i, k)
    assert [h["d_loss"] for h in t1.history] == [h["d_loss"] for h in t2.history]
    assert t1.rng.bit_generator.state == t2.rng.bit_generator.state
    assert (t1.epoch, t1.steps, t1.batch_in_epoch) == (t2.epoch, t2.steps, t2.batch_in_epoch)


@pytest.mark.parametrize("ema,translate,lr_decay,codes", [(None, 0, 0.0, 0), (0.9, 0, 0.0, 0), (0.9, 2, 0.0, 0),
                                                         (None, 0, 0.7, 0), (0.9, 1, 0.0, 3)],
                         ids=["plain", "ema", "translate", "lr-decay", "codes"])
def test_resume_after_interruption_is_bitwise_identical(tmp_path, ema, translate, lr_decay, codes):
    data = _data()
    full = _fresh(ema=ema, translate=translate, lr_decay=lr_decay, codes=codes)
    full.fit(data, epochs=3, batch_size=16, progress=False)
    assert full.steps == 9 and len(full.history) == 9

    # interrupted in the middle of epoch 2 (max_steps), saved, then continued by new objects
    part = _fresh(ema=ema, translate=translate, lr_decay=lr_decay, codes=codes)
    part.fit(data, epochs=3, batch_size=16, progress=False, checkpoint_dir=tmp_path, max_steps=4)
    assert (part.epoch, part.batch_in_epoch) == (1, 1)
    resumed = _fresh(seed=99, ema=ema, codes=codes, code_weight=3.0)  # seed, translate, ...: from the checkpoint
    resumed.load(tmp_path)
    assert resumed.translate == translate and resumed.lr_decay == lr_decay and resumed.code_weight == 0.5
    resumed.fit(data, epochs=3, batch_size=16, progress=False, checkpoint_dir=tmp_path)
    _same(full, resumed)

    # at an epoch boundary, from the per-epoch checkpoint
    again = _fresh(ema=ema, translate=translate, lr_decay=lr_decay, codes=codes)
    again.load(tmp_path)
    assert again.epoch == 3
    again.fit(data, epochs=4, batch_size=16, progress=False)
    full.fit(data, epochs=4, batch_size=16, progress=False)
    _same(full, again)
    if ema is not None:
        # samples come from the averaged generator, which differs from the live one
        assert full.generator is full.G_ema
        z = np.random.default_rng(0).standard_normal((4, 6 + codes)).astype(np.float32)
        assert np.array_equal(full.sample(4, z=z), full.G_ema.eval()(z))
        assert not np.array_equal(full.G_ema.state_dict()["0.weight"], full.G.state_dict()["0.weight"])


def test_ctrl_c_saves_checkpoint_and_resume_matches(tmp_path):
    data = _data()
    full = _fresh()
    full.fit(data, epochs=2, batch_size=16, progress=False)

    t = _fresh()
    seen = []

    def press_ctrl_c(tr, stats):
        seen.append(tr.steps)
        if tr.steps == 2:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)   # (ignored where the tests run in the background)
    with pytest.raises(TrainingInterrupted) as info:
        t.fit(data, epochs=2, batch_size=16, progress=False, checkpoint_dir=tmp_path, step_callback=press_ctrl_c)
    assert info.value.checkpoint == os.path.join(str(tmp_path), "gan.npz")
    assert t.steps == 2 and os.path.isfile(info.value.checkpoint)
    assert signal.getsignal(signal.SIGINT) is before
    r = _fresh()
    r.load(tmp_path)
    r.fit(data, epochs=2, batch_size=16, progress=False)
    _same(full, r)


def test_callbacks_history_and_sample(tmp_path):
    data = _data(32)
    t = _fresh()
    epochs = []
    t.fit(data, epochs=2, batch_size=16, progress=True, callback=lambda tr, e, s: epochs.append((e, sorted(s))),
          checkpoint_dir=tmp_path)
    assert epochs == [(1, ["d_fake", "d_loss", "d_real", "g_loss"]), (2, ["d_fake", "d_loss", "d_real", "g_loss"])]
    assert {"step", "epoch", "d_loss", "g_loss", "d_real", "d_fake"} <= set(t.history[0])
    assert all(0 < h["d_real"] < 1 and 0 < h["d_fake"] < 1 for h in t.history)
    a = t.sample(10, seed=1)
    b = t.sample(10, seed=1)
    assert a.shape == (10, 1, 16, 16) and np.array_equal(a, b)
    assert t.G.training  # mode restored
    assert not np.array_equal(a, t.sample(10, seed=2))
    with pytest.raises(FileNotFoundError):
        t.load(tmp_path / "nope")
    other = GANTrainer(*_pair(7), 7)
    with pytest.raises(ValueError):
        other.load(tmp_path)


def test_short_training_on_digits_lowers_fid_several_fold():
    """Bounded run on the bundled digits (8x8 -> 16x16): FID on a trained classifier's features drops >= 4x."""
    pytest.importorskip("sklearn")
    from fastcnn import data
    from fastcnn.cli import recognition, train_classifier
    from fastcnn.metrics import compute_features, fid

    manual_seed(0)
    x, y = data.load_digits()
    x = np.clip(data.resize(x, 16), 0, 1)
    clf, acc = train_classifier(x[:1400], y[:1400], x[1400:], y[1400:], 16, epochs=4, seed=0, progress=False,
                                schedule=None)
    assert acc > 0.85
    real_feat = compute_features(clf, x[:1400])
    G = dcgan_generator(nz=16, image_size=16, ngf=16, seed=0)
    D = dcgan_discriminator(image_size=16, ndf=16, seed=1)
    t = GANTrainer(G, D, 16, lr=1e-3, seed=0)

    def score():
        s = (t.sample(500, seed=5) + 1) / 2
        return fid(compute_features(clf, s), real_feat), s

    f0, _ = score()
    t.fit(x[:1400] * 2 - 1, epochs=10, batch_size=32, progress=False, max_steps=150)
    f1, s = score()
    assert f1 < f0 / 4, (f0, f1)
    frac, classes, _ = recognition(clf, s)
    assert len(classes) >= 5


# --- categorical latent codes (InfoGAN) -------------------------------------------------------------

@pytest.mark.parametrize("size", [16, 28, 32, 64])
def test_discriminator_code_head(size, rng):
    plain = dcgan_discriminator(image_size=size, ndf=4, seed=1)
    D = dcgan_discriminator(image_size=size, ndf=4, seed=1, codes=3)
    # the same network but for the width of its last layer
    sp, sd = plain.state_dict(), D.state_dict()
    assert sp.keys() == sd.keys()
    last = [k for k in sp if k.endswith("weight")][-1]
    for k in sp:
        if k != last and not k.startswith(last.rsplit(".", 1)[0] + "."):
            assert np.array_equal(sp[k], sd[k]), k
    assert sd[last].shape[0] == 4 and sp[last].shape[0] == 1
    x = rng.uniform(-1, 1, size=(2, 1, size, size)).astype(np.float32)
    assert D(x).shape == (2, 4)
    for bad, err in ((1, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(err, match="codes"):
            dcgan_discriminator(image_size=size, ndf=4, codes=bad)


def test_latents_and_sample_with_codes():
    from fastcnn.gan import latents, sample
    z = latents(60, 4, seed=3, codes=5)
    assert z.shape == (60, 9) and z.dtype == np.float32
    oh = z[:, 4:]
    assert np.all(oh.sum(axis=1) == 1) and np.all((oh == 0) | (oh == 1))
    assert sorted(set(oh.argmax(axis=1))) == [0, 1, 2, 3, 4]
    assert np.array_equal(z[:, :4], latents(60, 4, seed=3))     # the normal draws come first, as without codes
    assert np.all(latents(6, 4, seed=3, codes=5, code=2)[:, 6] == 1)
    fixed = latents(3, 4, codes=5, code=[0, 4, 1])
    assert np.array_equal(fixed[:, 4:].argmax(axis=1), [0, 4, 1])
    for code in (5, -1, [1, 2], 1.5, [[1]]):
        with pytest.raises(ValueError, match="code"):
            latents(3, 4, codes=5, code=code)
    with pytest.raises(ValueError, match="no codes"):
        latents(3, 4, code=1)
    G = dcgan_generator(nz=9, image_size=16, ngf=2, seed=0)
    imgs = sample(G, 6, 4, seed=1, codes=5, code=3)
    assert np.array_equal(imgs, G.eval()(latents(6, 4, seed=1, codes=5, code=3)))
    G.train()
    with pytest.raises(ValueError, match=r"\(n, 9\)"):
        sample(G, 2, 4, z=np.zeros((2, 4), np.float32), codes=5)


def test_trainer_with_codes_rejects_a_plain_discriminator():
    G = dcgan_generator(nz=7, image_size=16, ngf=2, seed=0)
    tr = GANTrainer(G, dcgan_discriminator(image_size=16, ndf=2, seed=0), 4, codes=3)
    with pytest.raises(ValueError, match=r"\(N, 4\) outputs"):
        tr.step(_data(4))
    for bad in (1, -1):
        with pytest.raises(ValueError, match="codes"):
            GANTrainer(G, dcgan_discriminator(image_size=16, ndf=2, seed=0), 4, codes=bad)
    with pytest.raises(ValueError, match="code_weight"):
        GANTrainer(G, dcgan_discriminator(image_size=16, ndf=2, seed=0), 4, codes=3, code_weight=-1.0)
    with pytest.raises(TypeError, match="code_weight"):
        GANTrainer(G, dcgan_discriminator(image_size=16, ndf=2, seed=0), 4, codes=3, code_weight="2")


@pytest.mark.parametrize("translate", [0, 1])
def test_step_with_codes_matches_pytorch(torch, rng, translate):
    """InfoGAN's losses in float64 against torch.autograd: the code's cross-entropy on generated images,
    weighted, added to the discriminator's loss on the fake batch and to the generator's loss."""
    tnn, F = torch.nn, torch.nn.functional
    nz, n, ngf, ndf, k, w = 5, 6, 3, 3, 4, 0.7
    G = dcgan_generator(nz=nz + k, image_size=16, ngf=ngf, seed=10).double()
    D = dcgan_discriminator(image_size=16, ndf=ndf, seed=11, codes=k).double()
    tr = GANTrainer(G, D, nz, lr=2e-3, seed=3, dtype=np.float64, codes=k, code_weight=w, translate=translate)
    tG, tD, og, od = _torch_pair(torch, G, D, nz + k, ngf, ndf, outputs=1 + k)
    bce = tnn.BCEWithLogitsLoss()
    zrng = np.random.default_rng(3)

    def move(x, m):
        if not translate:
            return x
        p = F.pad(x, (1, 1, 1, 1), value=-1.0)
        return torch.stack([p[i, :, 1 - dy:17 - dy, 1 - dx:17 - dx] for i, (dy, dx) in enumerate(m)])

    for it in range(3):
        real = rng.uniform(-1, 1, size=(n, 1, 16, 16))
        out = tr.step(real)
        z = zrng.standard_normal((n, nz)).astype(np.float32).astype(np.float64)
        c = zrng.integers(0, k, size=n)
        m = zrng.integers(-1, 2, size=(3, n, 2)) if translate else [None] * 3
        zc = torch.from_numpy(np.concatenate([z, np.eye(k)[c]], axis=1))
        tc = torch.from_numpy(c)
        fake = tG(zc)
        od.zero_grad()
        d_real = tD(move(torch.from_numpy(real), m[0]))
        d_fake = tD(move(fake.detach(), m[1]))
        ld = bce(d_real[:, :1], torch.ones(n, 1, dtype=torch.float64)) + \
            bce(d_fake[:, :1], torch.zeros(n, 1, dtype=torch.float64))
        (ld + w * F.cross_entropy(d_fake[:, 1:], tc)).backward()
        od.step()
        og.zero_grad()
        d_gen = tD(move(fake, m[2]))
        lg = bce(d_gen[:, :1], torch.ones(n, 1, dtype=torch.float64))
        info = F.cross_entropy(d_gen[:, 1:], tc)
        (lg + w * info).backward()
        og.step()
        assert out["d_loss"] == pytest.approx(ld.item(), rel=1e-8)
        assert out["g_loss"] == pytest.approx(lg.item(), rel=1e-8)
        assert out["code_loss"] == pytest.approx(info.item(), rel=1e-8)
    # (a bias just before BatchNorm has a zero gradient: Adam moves it by rounding noise alone, ~1e-9)
    _assert_same_state(G, D, tG, tD, atol=1e-8)


def test_codes_are_learnt():
    """On images of two kinds (a bright square in the top or in the bottom half), the generator's code
    loss falls far below log(2), and the discriminator's code head tells the code of generated images."""
    r = np.random.default_rng(0)
    x = -np.ones((128, 1, 16, 16), np.float32)
    for i in range(128):
        a, b = (r.integers(0, 3) if i % 2 else r.integers(9, 11)), r.integers(0, 10)
        x[i, 0, a:a + 6, b:b + 6] = 1
    t = _fresh(codes=2, code_weight=1.0)
    t.fit(x, epochs=12, batch_size=32, progress=False)
    late = [h["code_loss"] for h in t.history[-8:]]
    assert np.mean(late) < 0.1 * np.log(2), late
    t.D.eval()
    for c in (0, 1):
        imgs = t.sample(100, seed=1, code=c)
        assert np.mean(t.D(imgs)[:, 1:].argmax(axis=1) == c) > 0.9
    # the same noise with the other code makes another image
    assert np.mean(np.abs(t.sample(100, seed=1, code=0) - t.sample(100, seed=1, code=1))) > 0.05
