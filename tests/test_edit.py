"""Inpainting, reconstruction and interpolation with a generator."""
import numpy as np
import pytest

from fastcnn.edit import box_mask, center_mask, inpaint, interpolate, latent_size, reconstruct
from fastcnn.gan import dcgan_discriminator, dcgan_generator


@pytest.fixture(scope="module")
def nets():
    G = dcgan_generator(nz=8, image_size=16, ngf=8, seed=0)
    D = dcgan_discriminator(image_size=16, ndf=4, seed=1)
    # give the BatchNorm layers running statistics, as after training
    rng = np.random.default_rng(0)
    for _ in range(5):
        G(rng.standard_normal((32, 8)).astype(np.float32))
    G.eval()
    D.eval()
    return G, D


def _own_images(G, n=6, seed=42):
    z = np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)
    G.eval()
    return G(z)


def test_masks():
    m = center_mask(16)
    assert m.shape == (1, 1, 16, 16)
    assert m.sum() == 256 - 64 and np.all(m[0, 0, 4:12, 4:12] == 0)
    b = box_mask(16, 2, 3, 5, 4)
    assert np.all(b[0, 0, 3:7, 2:7] == 0) and b.sum() == 256 - 20
    with pytest.raises(ValueError, match="inside"):
        box_mask(16, 14, 0, 4, 4)
    with pytest.raises(ValueError, match="fraction"):
        center_mask(16, 1.5)


def test_inpaint_keeps_known_pixels_and_beats_blank_fill(nets):
    G, D = nets
    x = _own_images(G)
    mask = center_mask(16)
    filled, z, gen = inpaint(G, x, mask, steps=150, lr=0.1, restarts=3, seed=0, return_latent=True)
    known = np.broadcast_to(mask, x.shape) == 1
    hole = ~known
    assert filled.shape == x.shape and filled.dtype == np.float32
    assert np.array_equal(filled[known], x[known])          # exactly
    assert np.array_equal(filled[hole], gen[hole])
    assert z.shape == (6, 8)
    err = np.mean((filled[hole] - x[hole]) ** 2)
    blank = np.mean((0.0 - x[hole]) ** 2)                   # blank (mid-grey) fill
    dark = np.mean((-1.0 - x[hole]) ** 2)                   # background fill
    assert err < 0.5 * min(blank, dark), (err, blank, dark)


def test_inpaint_with_discriminator_prior_and_l2(nets):
    G, D = nets
    x = _own_images(G, n=3)
    mask = box_mask(16, 0, 0, 16, 6)
    before = [p.grad.copy() for p in list(G.parameters()) + list(D.parameters())]
    filled = inpaint(G, x, mask, D=D, steps=40, lr=0.1, prior_weight=0.01, loss="l2", seed=1)
    known = np.broadcast_to(mask, x.shape) == 1
    assert np.array_equal(filled[known], x[known])
    assert np.all(np.isfinite(filled))
    # the networks' gradients and modes are left as they were
    after = [p.grad for p in list(G.parameters()) + list(D.parameters())]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert not G.training and not D.training


def test_inpaint_is_seeded(nets):
    G, _ = nets
    x = _own_images(G, n=2)
    a = inpaint(G, x, center_mask(16), steps=10, seed=3)
    b = inpaint(G, x, center_mask(16), steps=10, seed=3)
    assert np.array_equal(a, b)


def test_inpaint_rejects_bad_masks(nets):
    G, _ = nets
    x = _own_images(G, n=2)
    with pytest.raises(ValueError, match="mask must have shape"):
        inpaint(G, x, np.ones((8, 8)), steps=1)
    with pytest.raises(ValueError, match="0 \\(missing\\) or 1"):
        inpaint(G, x, np.full((16, 16), 0.5), steps=1)
    with pytest.raises(ValueError, match="mask must have shape"):
        inpaint(G, x, np.ones((3, 1, 16, 16)), steps=1)
    with pytest.raises(ValueError, match="images"):
        inpaint(G, np.zeros((16, 16), np.float32), np.ones((16, 16)), steps=1)
    with pytest.raises(ValueError, match="loss"):
        inpaint(G, x, np.ones((16, 16)), steps=1, loss="huber")
    # boolean and per-image masks are accepted
    m = np.ones((2, 1, 16, 16), bool)
    m[1, :, :8] = False
    out = inpaint(G, x, m, steps=2)
    assert np.array_equal(out[0], x[0])


def test_reconstruct_projects_own_images(nets):
    G, _ = nets
    x = _own_images(G, n=4)
    z, rec = reconstruct(G, x, steps=150, lr=0.1, restarts=2, seed=0)
    assert z.shape == (4, 8) and rec.shape == x.shape
    start = G(np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32))
    assert np.mean((rec - x) ** 2) < 0.25 * np.mean((start - x) ** 2)


def test_interpolate(nets):
    G, _ = nets
    assert latent_size(G) == 8
    rng = np.random.default_rng(0)
    z0, z1 = rng.standard_normal(8), rng.standard_normal(8)
    for mode in ("slerp", "linear"):
        seq = interpolate(G, z0, z1, steps=5, mode=mode)
        assert seq.shape == (5, 1, 16, 16)
        ends = G(np.stack([z0, z1]).astype(np.float32))
        np.testing.assert_allclose(seq[0], ends[0], atol=1e-5)
        np.testing.assert_allclose(seq[-1], ends[1], atol=1e-5)
    lin = interpolate(G, z0, z1, steps=3, mode="linear")
    sl = interpolate(G, z0, z1, steps=3, mode="slerp")
    assert not np.allclose(lin[1], sl[1])
    with pytest.raises(ValueError, match="mode"):
        interpolate(G, z0, z1, mode="cubic")
    with pytest.raises(ValueError, match="8 elements"):
        interpolate(G, np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="steps"):
        interpolate(G, z0, z1, steps=1)


def test_inpaint_with_a_latent_code():
    """Generators with a one-hot code at the end of their input (GANTrainer(codes=k)): the starts begin
    one-hot, and the discriminator prior reads only the real/fake logit of a discriminator with a code head."""
    from fastcnn import nn
    k = 3
    G = dcgan_generator(nz=6 + k, image_size=16, ngf=4, seed=0).eval()
    D = dcgan_discriminator(image_size=16, ndf=4, seed=1, codes=k).eval()
    plain = dcgan_discriminator(image_size=16, ndf=4, seed=1).eval()
    plain.load_state_dict({n: (v[:1] if n.startswith("6.") else v) for n, v in D.state_dict().items()})
    assert isinstance(D[6], nn.Linear)
    x = G(np.random.default_rng(3).standard_normal((3, 6 + k)).astype(np.float32))
    mask = center_mask(16)
    _, z0, _ = inpaint(G, x, mask, steps=0, codes=k, restarts=2, return_latent=True)
    assert np.all(z0[:, -k:].sum(axis=1) == 1) and np.all((z0[:, -k:] == 0) | (z0[:, -k:] == 1))
    a = inpaint(G, x, mask, D=D, steps=15, prior_weight=0.5, codes=k, seed=2)
    b = inpaint(G, x, mask, D=plain, steps=15, prior_weight=0.5, codes=k, seed=2)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    c = inpaint(G, x, mask, steps=15, codes=k, seed=2)
    assert not np.allclose(a, c)                             # the prior does act
    z, rec = reconstruct(G, x, steps=0, codes=k)
    assert z.shape == (3, 6 + k) and np.all(z[:, -k:].sum(axis=1) == 1)
    for bad, err in ((1, ValueError), (6 + k, ValueError), (-1, ValueError), (2.0, TypeError)):
        with pytest.raises(err, match="codes"):
            inpaint(G, x, mask, steps=1, codes=bad)
