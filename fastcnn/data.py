"""Datasets and batching: the bundled 8x8 digits, MNIST-format IDX files, seeded batches.

Images are NCHW ``float32`` arrays, labels ``int64``::

    x, y = fastcnn.data.load_digits()                     # (1797, 1, 8, 8) in [0, 1]
    x = fastcnn.data.resize(x, 16)                        # (1797, 1, 16, 16), bilinear
    x_tr, x_te, y_tr, y_te = fastcnn.data.train_test_split(x, y, test_size=0.2, seed=0)
    for xb, yb in fastcnn.data.DataLoader(x_tr, y_tr, batch_size=64, shuffle=True, seed=0):
        ...
"""
import gzip
import os
import struct

import numpy as np

__all__ = [
    "load_digits", "load_idx", "load_mnist", "iterate_batches", "DataLoader",
    "resize", "scale", "train_test_split",
]

# IDX element type code -> big-endian dtype
_IDX_TYPES = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


def _resolve_rng(rng, seed=None, name="rng"):
    if rng is not None and seed is not None:
        raise ValueError(f"give either {name} or seed, not both")
    if rng is None:
        rng = seed
    if rng is None:
        from ._random import default_generator
        return default_generator()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"{name} must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


# --- datasets ---------------------------------------------------------------------------------------

def load_digits(return_images=True):
    """The 1,797 8x8 handwritten digits bundled with scikit-learn.

    Returns ``(x, y)``: ``x`` float32 of shape ``(1797, 1, 8, 8)`` scaled to [0, 1]
    (the raw values are 0..16), ``y`` int64 labels 0..9. Needs scikit-learn
    (``pip install fastcnn[data]``); no download, the data ship with it.
    With ``return_images=False``, ``x`` is flat: ``(1797, 64)``.
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as e:
        raise ImportError("fastcnn.data.load_digits() needs scikit-learn, which bundles the data: "
                          "pip install 'fastcnn[data]' (or pip install scikit-learn)") from e
    d = _sk_load_digits()
    x = (np.asarray(d.images, dtype=np.float32) / np.float32(16.0))
    x = x.reshape(-1, 1, 8, 8) if return_images else x.reshape(-1, 64)
    return np.ascontiguousarray(x), np.asarray(d.target, dtype=np.int64)


def _read_bytes(path):
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(0)
        if head == b"\x1f\x8b":
            try:
                with gzip.GzipFile(fileobj=f) as g:
                    return g.read()
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                raise ValueError(f"{path}: corrupt or truncated gzip file ({e})") from e
        return f.read()


def load_idx(path):
    """Read an IDX file (the MNIST / Fashion-MNIST format), raw or gzip-compressed.

    Returns a native-endian ndarray with the file's dimensions and element type
    (uint8 for MNIST). The magic number, the dimensions and the file size are
    checked; anything inconsistent raises ``ValueError`` naming the file.
    """
    path = os.fspath(path)
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(buf)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", buf[:4])
    if zero != 0 or code not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number 0x{buf[:4].hex()}; expected "
                         f"00 00, a type code in {[hex(c) for c in _IDX_TYPES]}, and the number of dimensions)")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise ValueError(f"{path}: truncated IDX header (needs {header} bytes, file has {len(buf)})")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    dtype = _IDX_TYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(buf) != expected:
        what = "truncated" if len(buf) < expected else "has trailing bytes"
        raise ValueError(f"{path}: IDX data {what}: dimensions {dims} of {dtype.name} need "
                         f"{expected} bytes, file has {len(buf)}")
    arr = np.frombuffer(buf, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


_MNIST_NAMES = {
    "images": ("{kind}-images-idx3-ubyte", "{kind}-images.idx3-ubyte"),
    "labels": ("{kind}-labels-idx1-ubyte", "{kind}-labels.idx1-ubyte"),
}


def _find_mnist_file(directory, kind, what):
    tried = []
    for pattern in _MNIST_NAMES[what]:
        for suffix in ("", ".gz"):
            p = os.path.join(directory, pattern.format(kind=kind) + suffix)
            tried.append(os.path.basename(p))
            if os.path.isfile(p):
                return p
    raise FileNotFoundError(f"no MNIST {what} file for kind={kind!r} in {directory!r}; looked for {tried}")


def load_mnist(directory, kind="train", normalize=True):
    """Load MNIST or Fashion-MNIST from the IDX files in ``directory``.

    ``kind`` is ``"train"`` or ``"t10k"``; files may be gzip-compressed
    (``train-images-idx3-ubyte.gz`` ...). Returns ``(x, y)``: ``x`` of shape
    ``(N, 1, 28, 28)``, float32 in [0, 1] (uint8 0..255 with
    ``normalize=False``), and int64 labels.
    """
    if kind not in ("train", "t10k"):
        raise ValueError(f"kind must be 'train' or 't10k', got {kind!r}")
    directory = os.fspath(directory)
    img_path = _find_mnist_file(directory, kind, "images")
    lbl_path = _find_mnist_file(directory, kind, "labels")
    images, labels = load_idx(img_path), load_idx(lbl_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{img_path}: expected uint8 images of 3 dimensions (N, H, W), "
                         f"got {images.dtype} of shape {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{lbl_path}: expected uint8 labels of 1 dimension, got {labels.dtype} "
                         f"of shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels")
    x = images[:, None, :, :]
    x = x.astype(np.float32) / np.float32(255.0) if normalize else np.ascontiguousarray(x)
    return x, labels.astype(np.int64)


# --- batching ---------------------------------------------------------------------------------------

def _check_xy(x, y):
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError("x must have a leading sample dimension")
    if y is not None:
        y = np.asarray(y)
        if y.ndim < 1 or len(y) != len(x):
            raise ValueError(f"y must have one entry per sample of x: len(x) = {len(x)}, "
                             f"y has shape {y.shape}")
    return x, y


def iterate_batches(x, y=None, batch_size=32, shuffle=False, rng=None, drop_last=False):
    """Yield ``x`` batches (or ``(x, y)`` pairs) of ``batch_size`` samples.

    With ``shuffle``, the order is a permutation drawn from ``rng`` (a
    ``numpy.random.Generator`` or an int seed; default: fastcnn's global
    generator). The last batch is smaller unless ``drop_last``.
    """
    x, y = _check_xy(x, y)
    batch_size = _check_int(batch_size, "batch_size", 1)
    n = len(x)
    order = _resolve_rng(rng).permutation(n) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        if order is None:
            sl = slice(i, min(i + batch_size, n))
            xb, yb = x[sl], (None if y is None else y[sl])
        else:
            idx = order[i:i + batch_size]
            xb, yb = x[idx], (None if y is None else y[idx])
        yield xb if y is None else (xb, yb)


class DataLoader:
    """An iterable over batches of in-memory arrays, reshuffled at each pass.

    ``DataLoader(x, y, batch_size=64, shuffle=True, seed=0)``: every ``iter()``
    draws a new permutation from the loader's own generator, so a seeded run
    sees the same sequence of batches. ``len(loader)`` is the number of batches.
    """

    def __init__(self, x, y=None, batch_size=32, shuffle=False, seed=None, rng=None, drop_last=False):
        self.x, self.y = _check_xy(x, y)
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.rng = _resolve_rng(rng, seed)

    def __len__(self):
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        return iterate_batches(self.x, self.y, self.batch_size, self.shuffle, self.rng, self.drop_last)

    def __repr__(self):
        return (f"DataLoader(n={len(self.x)}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last})")


def train_test_split(x, y=None, test_size=0.25, seed=None, shuffle=True, stratify=False):
    """Split arrays into train and test parts: ``x_train, x_test[, y_train, y_test]``.

    ``test_size`` is a fraction in (0, 1) or a number of samples (the test part
    gets ``ceil(test_size * n)`` samples, as scikit-learn). ``seed`` (an int or
    a Generator) makes the split reproducible; ``stratify=True`` keeps the class
    proportions of ``y`` in both parts.
    """
    x, y = _check_xy(x, y)
    n = len(x)
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.integer, np.floating)):
        raise TypeError(f"test_size must be a float or an int, got {type(test_size).__name__}")
    if isinstance(test_size, (float, np.floating)):
        if not 0 < test_size < 1:
            raise ValueError(f"a float test_size must be in (0, 1), got {test_size}")
        n_test = int(np.ceil(test_size * n))
    else:
        n_test = int(test_size)
    if not 0 < n_test < n:
        raise ValueError(f"test_size={test_size} leaves an empty train or test part for {n} samples")
    if stratify:
        if y is None:
            raise ValueError("stratify=True needs y")
        if not shuffle:
            raise ValueError("stratify=True needs shuffle=True")
        rng = _resolve_rng(seed, name="seed")
        classes, y_idx = np.unique(y, return_inverse=True)
        counts = np.bincount(y_idx)
        # per-class test counts by largest remainder, so they add up to n_test
        exact = counts * (n_test / n)
        per = np.floor(exact).astype(np.int64)
        order = np.argsort(-(exact - per), kind="stable")
        per[order[:n_test - per.sum()]] += 1
        test_idx = []
        for c, k in enumerate(per):
            members = np.flatnonzero(y_idx == c)
            test_idx.append(rng.permutation(members)[:k])
        test_idx = np.sort(np.concatenate(test_idx))
        mask = np.ones(n, dtype=bool)
        mask[test_idx] = False
        train_idx = np.flatnonzero(mask)
        train_idx, test_idx = rng.permutation(train_idx), rng.permutation(test_idx)
    else:
        idx = _resolve_rng(seed, name="seed").permutation(n) if shuffle else np.arange(n)
        test_idx, train_idx = idx[:n_test], idx[n_test:]
        if not shuffle:
            train_idx, test_idx = idx[:n - n_test], idx[n - n_test:]
    out = [x[train_idx], x[test_idx]]
    if y is not None:
        out += [y[train_idx], y[test_idx]]
    return tuple(out)


# --- image transforms -------------------------------------------------------------------------------

def _interp_matrix(n_in, n_out, mode, align_corners, dtype):
    """(n_out, n_in) matrix of one axis of PyTorch's ``interpolate``."""
    m = np.zeros((n_out, n_in), dtype=np.float64)
    dst = np.arange(n_out, dtype=np.float64)
    if mode == "nearest":
        src = np.minimum(np.floor(dst * (n_in / n_out)).astype(np.int64), n_in - 1)
        m[np.arange(n_out), src] = 1.0
        return m.astype(dtype)
    if align_corners:
        s = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = dst * s
    else:
        src = np.maximum((dst + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - lam)
    np.add.at(m, (rows, i1), lam)
    return m.astype(dtype)


def resize(images, size, mode="bilinear", align_corners=False):
    """Resize the last two (spatial) axes of ``images`` to ``size`` (an int or ``(H, W)``).

    ``mode`` is ``"bilinear"`` or ``"nearest"``, with the sampling of PyTorch's
    ``F.interpolate(..., size=size)`` (``align_corners`` as there). Works on
    ``(H, W)``, ``(C, H, W)`` and ``(N, C, H, W)`` arrays; floating inputs keep
    their dtype, integer inputs give float32.
    """
    images = np.asarray(images)
    if images.ndim < 2:
        raise ValueError(f"images must have at least 2 dimensions (H, W), got shape {images.shape}")
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in size)):
        raise ValueError(f"size must be a positive int or a pair of positive ints, got {size!r}")
    dtype = images.dtype if images.dtype.kind == "f" else np.dtype(np.float32)
    h, w = images.shape[-2:]
    if h == 0 or w == 0:
        raise ValueError(f"images have an empty spatial size {images.shape[-2:]}")
    mh = _interp_matrix(h, size[0], mode, align_corners, dtype)
    mw = _interp_matrix(w, size[1], mode, align_corners, dtype)
    x = images.astype(dtype, copy=False)
    out = np.matmul(np.matmul(mh, x), mw.T)
    return np.ascontiguousarray(out, dtype=dtype)


def scale(images, to=(0, 1), source=None, dtype=np.float32):
    """Map pixel values linearly from ``source`` to the range ``to`` (e.g. ``(-1, 1)`` for a tanh GAN).

    ``source`` defaults to the input's natural range: ``(0, 255)`` for uint8
    (the full range for other integer types) and ``(0, 1)`` for floats;
    ``source="minmax"`` uses the data's own minimum and maximum.
    """
    images = np.asarray(images)
    for name, r in (("to", to), ("source", source)):
        if r is None or (name == "source" and isinstance(r, str)):
            continue
        if not isinstance(r, (tuple, list)) or len(r) != 2 or not r[1] > r[0]:
            raise ValueError(f"{name} must be a pair (low, high) with high > low, got {r!r}")
    if source is None:
        if images.dtype.kind in "ui":
            info = np.iinfo(images.dtype)
            source = (0, 255) if images.dtype == np.uint8 else (info.min, info.max)
        elif images.dtype.kind == "f":
            source = (0.0, 1.0)
        else:
            raise TypeError(f"images must be numeric, got dtype {images.dtype}")
    elif isinstance(source, str):
        if source != "minmax":
            raise ValueError(f"source must be a pair, None or 'minmax', got {source!r}")
        lo, hi = float(images.min()), float(images.max())
        source = (lo, hi if hi > lo else lo + 1.0)
    a = (to[1] - to[0]) / (source[1] - source[0])
    out = images.astype(dtype, copy=True)
    t = np.dtype(dtype).type
    out -= t(source[0])
    out *= t(a)
    out += t(to[0])
    return out
