"""Datasets (bundled digits, IDX files), batching, splitting, resizing and scaling."""
import gzip
import struct

import numpy as np
import pytest

from fastcnn import data


def write_idx(path, arr, code=0x08, compress=False, magic=None, dims=None, extra=b""):
    arr = np.asarray(arr)
    dims = arr.shape if dims is None else dims
    head = (magic if magic is not None else struct.pack(">HBB", 0, code, len(dims)))
    head += struct.pack(f">{len(dims)}I", *dims)
    dt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    payload = head + arr.astype(dt).tobytes() + extra
    if compress:
        payload = gzip.compress(payload)
    with open(path, "wb") as f:
        f.write(payload)
    return path


def test_load_digits():
    x, y = data.load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    from sklearn.datasets import load_digits
    np.testing.assert_array_equal(x.reshape(-1, 64) * 16, load_digits().data)
    flat, _ = data.load_digits(return_images=False)
    assert flat.shape == (1797, 64)


def test_load_digits_without_sklearn(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"fastcnn\[data\]"):
        data.load_digits()


@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16),
                                        (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)])
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_load_idx_round_trip(tmp_path, code, dtype, compress):
    rng = np.random.default_rng(0)
    arr = (rng.integers(0, 100, size=(3, 4, 5))).astype(dtype)
    p = write_idx(tmp_path / "a.idx", arr, code=code, compress=compress)
    out = data.load_idx(p)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 1  # writable


def test_load_idx_errors(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    with pytest.raises(ValueError, match="magic"):
        data.load_idx(write_idx(tmp_path / "m", arr, magic=b"\x01\x00\x08\x03"))
    with pytest.raises(ValueError, match="magic"):
        data.load_idx(write_idx(tmp_path / "t", arr, magic=b"\x00\x00\x07\x03"))
    with pytest.raises(ValueError, match="truncated"):
        data.load_idx(write_idx(tmp_path / "s", arr, dims=(2, 3, 5)))
    with pytest.raises(ValueError, match="trailing"):
        data.load_idx(write_idx(tmp_path / "e", arr, extra=b"\x00"))
    with pytest.raises(ValueError, match="header"):
        (tmp_path / "h").write_bytes(b"\x00\x00\x08\x03\x00\x00")
        data.load_idx(tmp_path / "h")
    with pytest.raises(ValueError, match="not an IDX"):
        (tmp_path / "z").write_bytes(b"\x00")
        data.load_idx(tmp_path / "z")
    good = gzip.compress(struct.pack(">HBB", 0, 8, 1) + struct.pack(">I", 100) + bytes(100))
    (tmp_path / "g.gz").write_bytes(good[:-20])
    with pytest.raises(ValueError, match="gzip"):
        data.load_idx(tmp_path / "g.gz")
    with pytest.raises(FileNotFoundError):
        data.load_idx(tmp_path / "missing")


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_load_mnist(tmp_path, compress):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    lbls = rng.integers(0, 10, size=5, dtype=np.uint8)
    sfx = ".gz" if compress else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{sfx}", imgs, compress=compress)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", lbls, compress=compress)
    x, y = data.load_mnist(tmp_path, kind="t10k")
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[:, 0] * 255, imgs, atol=1e-4)
    np.testing.assert_array_equal(y, lbls)
    xr, _ = data.load_mnist(str(tmp_path), kind="t10k", normalize=False)
    assert xr.dtype == np.uint8
    with pytest.raises(FileNotFoundError, match="train"):
        data.load_mnist(tmp_path, kind="train")
    with pytest.raises(ValueError, match="kind"):
        data.load_mnist(tmp_path, kind="test")
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", lbls[:4], compress=compress)
    with pytest.raises(ValueError, match="4 labels"):
        data.load_mnist(tmp_path, kind="t10k")


def test_iterate_batches_and_loader():
    x = np.arange(10)[:, None] * np.ones((1, 3))
    y = np.arange(10)
    batches = list(data.iterate_batches(x, y, batch_size=4))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    assert [len(b) for b in data.iterate_batches(x, batch_size=3, drop_last=True)] == [3, 3, 3]
    s1 = np.concatenate([b[1] for b in data.iterate_batches(x, y, 4, shuffle=True, rng=7)])
    s2 = np.concatenate([b[1] for b in data.iterate_batches(x, y, 4, shuffle=True, rng=np.random.default_rng(7))])
    np.testing.assert_array_equal(s1, s2)
    assert sorted(s1) == list(range(10)) and not np.array_equal(s1, y)
    for xb, yb in data.iterate_batches(x, y, 4, shuffle=True, rng=3):
        np.testing.assert_array_equal(xb[:, 0], yb)
    dl = data.DataLoader(x, y, batch_size=4, shuffle=True, seed=0)
    assert len(dl) == 3 and len(data.DataLoader(x, batch_size=4, drop_last=True)) == 2
    e1 = np.concatenate([b for _, b in dl])
    e2 = np.concatenate([b for _, b in dl])
    assert not np.array_equal(e1, e2)  # a new permutation at each pass
    dl2 = data.DataLoader(x, y, batch_size=4, shuffle=True, seed=0)
    np.testing.assert_array_equal(np.concatenate([b for _, b in dl2]), e1)
    with pytest.raises(ValueError, match="batch_size"):
        list(data.iterate_batches(x, y, batch_size=0))
    with pytest.raises(TypeError, match="batch_size"):
        data.DataLoader(x, y, batch_size=2.0)
    with pytest.raises(ValueError, match="one entry per sample"):
        data.DataLoader(x, y[:3])
    with pytest.raises(TypeError, match="rng"):
        list(data.iterate_batches(x, y, shuffle=True, rng="seed"))


def test_iterate_batches_default_generator_is_seeded():
    import fastcnn._random as R
    x = np.arange(20)
    R.manual_seed(5)
    a = np.concatenate(list(data.iterate_batches(x, batch_size=6, shuffle=True)))
    R.manual_seed(5)
    b = np.concatenate(list(data.iterate_batches(x, batch_size=6, shuffle=True)))
    np.testing.assert_array_equal(a, b)


def test_train_test_split():
    x = np.arange(100).reshape(50, 2)
    y = np.repeat(np.arange(5), 10)
    xtr, xte, ytr, yte = data.train_test_split(x, y, test_size=0.2, seed=0)
    assert len(xtr) == 40 and len(xte) == 10
    assert sorted(np.concatenate([xtr[:, 0], xte[:, 0]])) == list(range(0, 100, 2))
    np.testing.assert_array_equal(xtr[:, 0] // 2 // 10, ytr)
    again = data.train_test_split(x, y, test_size=0.2, seed=0)
    for a, b in zip((xtr, xte, ytr, yte), again):
        np.testing.assert_array_equal(a, b)
    _, _, ytr, yte = data.train_test_split(x, y, test_size=0.3, seed=1, stratify=True)
    assert np.bincount(yte).tolist() == [3] * 5 and np.bincount(ytr).tolist() == [7] * 5
    xtr, xte = data.train_test_split(x, test_size=7, shuffle=False)
    np.testing.assert_array_equal(xte, x[-7:])
    with pytest.raises(ValueError, match="test_size"):
        data.train_test_split(x, y, test_size=1.5)
    with pytest.raises(ValueError, match="empty"):
        data.train_test_split(x, y, test_size=50)
    with pytest.raises(ValueError, match="stratify"):
        data.train_test_split(x, test_size=0.2, stratify=True)


@pytest.mark.torch
@pytest.mark.parametrize("mode,align", [("nearest", False), ("bilinear", False), ("bilinear", True)])
@pytest.mark.parametrize("size", [(16, 16), (11, 5), (3, 4)])
def test_resize_matches_torch(torch, mode, align, size):
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 8, 7)).astype(np.float32)
    kw = {} if mode == "nearest" else {"align_corners": align}
    expected = torch.nn.functional.interpolate(torch.from_numpy(x), size=size, mode=mode, **kw).numpy()
    out = data.resize(x, size, mode=mode, align_corners=align)
    assert out.dtype == np.float32 and out.shape == (2, 3) + size
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_resize_shapes_and_errors():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    out = data.resize(img, 8, mode="nearest")
    assert out.dtype == np.float32 and out.shape == (8, 8)
    np.testing.assert_array_equal(out, np.repeat(np.repeat(img, 2, 0), 2, 1))
    assert data.resize(np.zeros((3, 4, 4)), (2, 6)).shape == (3, 2, 6)
    const = data.resize(np.full((1, 1, 8, 8), 0.25, np.float64), 16)
    assert const.dtype == np.float64
    np.testing.assert_allclose(const, 0.25)
    with pytest.raises(ValueError, match="size"):
        data.resize(img, 0)
    with pytest.raises(ValueError, match="mode"):
        data.resize(img, 4, mode="bicubic")
    with pytest.raises(ValueError, match="2 dimensions"):
        data.resize(np.zeros(4), 4)


def test_scale():
    u = np.array([0, 51, 255], dtype=np.uint8)
    np.testing.assert_allclose(data.scale(u), [0, 0.2, 1])
    np.testing.assert_allclose(data.scale(u, to=(-1, 1)), [-1, -0.6, 1], atol=1e-6)
    f = np.array([0.0, 0.5, 1.0], dtype=np.float32)
    out = data.scale(f, to=(-1, 1))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [-1, 0, 1])
    np.testing.assert_allclose(data.scale(np.array([2.0, 4.0]), source="minmax"), [0, 1])
    np.testing.assert_allclose(data.scale(np.array([-1.0, 1.0]), to=(0, 1), source=(-1, 1)), [0, 1])
    with pytest.raises(ValueError, match="to"):
        data.scale(f, to=(1, 0))
    with pytest.raises(ValueError, match="source"):
        data.scale(f, source="auto")
