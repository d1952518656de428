"""Frechet distance: the textbook formula, stability, and features from a fastcnn classifier."""
import numpy as np
import pytest

from fastcnn import nn
from fastcnn.metrics import compute_features, feature_extractor, fid, fid_score, frechet_distance


def _textbook(a, b):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy_linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("d,n1,n2", [(4, 50, 60), (16, 200, 300), (32, 500, 400)], ids=lambda v: str(v))
def test_fid_matches_scipy_sqrtm(d, n1, n2):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(n1, d)) @ rng.normal(size=(d, d))
    b = rng.normal(size=(n2, d)) @ rng.normal(size=(d, d)) * 0.7 + rng.normal(size=d)
    expected = _textbook(a, b)
    assert fid(a, b) == pytest.approx(expected, rel=1e-7, abs=1e-7)


def test_fid_of_a_set_with_itself_is_zero(rng):
    a = rng.normal(size=(300, 24))
    assert abs(fid(a, a)) < 1e-8
    assert fid(a, a.copy()) >= 0.0


def test_fid_symmetric_and_mean_shift(rng):
    a = rng.normal(size=(400, 8))
    b = rng.normal(size=(500, 8)) * 1.5
    assert fid(a, b) == pytest.approx(fid(b, a), rel=1e-9)
    shift = np.arange(8.0)
    # a pure mean shift adds |shift|^2
    assert fid(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_fid_rank_deficient_covariances(rng):
    # fewer samples than features, and features that are exact copies of each other:
    # covariances of low rank; the eigendecomposition route stays real, finite and >= 0
    base = rng.normal(size=(20, 5))
    a = np.concatenate([base, base, np.zeros((20, 10))], axis=1)          # rank 5 of 20
    b = np.concatenate([base * 2, base, np.ones((20, 10))], axis=1)
    d = fid(a, b)
    assert np.isfinite(d) and d > 0
    assert abs(fid(a, a)) < 1e-8
    c = rng.normal(size=(10, 64))                                         # n < d
    e = rng.normal(size=(12, 64))
    v = fid(c, e)
    assert np.isfinite(v) and v > 0


def test_frechet_distance_of_known_gaussians():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([0.0], [[4.0]], [1.0], [[9.0]]) == pytest.approx(1.0 + 1.0)
    # diagonal covariances
    d = frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.ones(2), np.diag([4.0, 16.0]))
    assert d == pytest.approx(2.0 + (1 - 2) ** 2 + (2 - 4) ** 2)


@pytest.mark.parametrize("a,b,match", [
    (np.zeros((10,)), np.zeros((10, 2)), "features_a"),
    (np.zeros((10, 3)), np.zeros((10, 4)), "same number of features"),
    (np.zeros((1, 3)), np.zeros((10, 3)), "at least 2"),
    (np.full((5, 2), np.nan), np.zeros((5, 2)), "NaN"),
])
def test_fid_rejects_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        fid(a, b)


def _classifier():
    gen = np.random.default_rng(0)
    layers = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
              nn.Linear(4 * 4 * 4, 12), nn.ReLU(), nn.Linear(12, 10)]
    for m in layers:
        if hasattr(m, "reset_parameters") and hasattr(m, "weight"):
            m.reset_parameters(generator=gen)
    return nn.Sequential(*layers)


def test_fid_score_uses_penultimate_features(rng):
    model = _classifier()
    x = rng.uniform(0, 1, size=(40, 1, 8, 8)).astype(np.float32)
    y = rng.uniform(0, 1, size=(30, 1, 8, 8)).astype(np.float32) ** 2
    feats = feature_extractor(model)
    assert len(feats) == len(model) - 1
    model.eval()
    manual = x
    for m in list(model)[:-1]:
        manual = m(manual)
    model.train()
    got = compute_features(model, x, batch_size=16)
    assert got.shape == (40, 12)
    np.testing.assert_allclose(got, manual, rtol=1e-5, atol=1e-6)
    assert model.training  # mode restored
    s = fid_score(x, y, model)
    assert s == pytest.approx(fid(compute_features(model, x), compute_features(model, y)), rel=1e-9)
    assert fid_score(x, x, model) < 1e-6
    # any callable giving (N, d) features works too
    assert fid_score(x, y, lambda v: v.reshape(len(v), -1)[:, :5]) > 0


def test_fid_score_rejects_bad_models():
    with pytest.raises(TypeError, match="feature_model"):
        fid_score(np.zeros((4, 1, 8, 8), np.float32), np.zeros((4, 1, 8, 8), np.float32), 3)
    with pytest.raises(ValueError, match="last Linear"):
        feature_extractor(nn.Sequential(nn.Linear(3, 2)))
