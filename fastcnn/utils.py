"""Image and log utilities: sample grids, before/after strips, loss curves.

Images are NCHW (or CHW / HW) numpy arrays with 1 or 3 channels. Pixel values
are mapped to 0..255 from ``value_range`` (default: ``(-1, 1)`` when the
array holds negative values, else ``(0, 1)``).
"""
import csv
import os

import numpy as np

__all__ = [
    "to_uint8", "make_grid", "save_grid", "make_strip", "save_strip", "save_image",
    "load_image", "write_csv", "plot_losses", "have_matplotlib",
]


def _as_nchw(images, name="images"):
    x = np.asarray(images)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{name} must be a numeric array, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), (C, H, W) or (H, W), got {x.shape}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have 1 or 3 channels, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image, got shape {x.shape}")
    return x


def to_uint8(images, value_range=None):
    """Map float images to uint8 0..255 (clipping) from ``value_range`` (lo, hi)."""
    x = np.asarray(images)
    if x.dtype == np.uint8:
        return x
    x = x.astype(np.float64)
    if value_range is None:
        value_range = (-1.0, 1.0) if x.size and float(np.nanmin(x)) < 0 else (0.0, 1.0)
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (lo, hi) with hi > lo, got {value_range}")
    y = (np.nan_to_num(x, nan=lo) - lo) / (hi - lo)
    return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)


def make_grid(images, nrow=8, padding=2, pad_value=0, value_range=None, scale=1):
    """Tile images into one uint8 array of shape (H, W) or (H, W, 3).

    ``nrow`` images per row; ``padding`` pixels of ``pad_value`` (0..255)
    between and around them; each image enlarged ``scale`` times (nearest).
    """
    x = _as_nchw(images)
    nrow = int(nrow)
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    if int(padding) < 0 or int(scale) < 1:
        raise ValueError(f"padding must be >= 0 and scale >= 1, got padding={padding}, scale={scale}")
    u = to_uint8(x, value_range)
    if scale > 1:
        u = u.repeat(scale, axis=2).repeat(scale, axis=3)
    n, c, h, w = u.shape
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    p = int(padding)
    grid = np.full((c, nrows * (h + p) + p, ncol * (w + p) + p), pad_value, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        y0, x0 = p + r * (h + p), p + col * (w + p)
        grid[:, y0:y0 + h, x0:x0 + w] = u[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_image(array, path):
    """Write a uint8 (H, W) or (H, W, 3) array as an image file (format from the extension)."""
    from PIL import Image
    path = os.fspath(path)
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path)
    return path


def save_grid(images, path, nrow=8, padding=2, pad_value=0, value_range=None, scale=1):
    """Save a grid of ``images`` (N, C, H, W) to ``path`` (PNG etc.); returns the path."""
    return save_image(make_grid(images, nrow, padding, pad_value, value_range, scale), path)


def make_strip(rows, padding=2, pad_value=255, value_range=None, scale=1):
    """Stack equally sized image batches as rows: e.g. ``[original, masked, filled]``.

    Each row is (N, C, H, W) with the same shape; the result shows image ``i``
    of every row in column ``i`` (a before/after comparison).
    """
    rows = [_as_nchw(r, f"rows[{i}]") for i, r in enumerate(rows)]
    if not rows:
        raise ValueError("rows must hold at least one image batch")
    shape = rows[0].shape
    for i, r in enumerate(rows):
        if r.shape != shape:
            raise ValueError(f"rows[{i}] has shape {r.shape}, expected {shape} like rows[0]")
    if value_range is None:
        value_range = (-1.0, 1.0) if any(float(r.min()) < 0 for r in rows) else (0.0, 1.0)
    return make_grid(np.concatenate(rows), nrow=shape[0], padding=padding, pad_value=pad_value,
                     value_range=value_range, scale=scale)


def save_strip(rows, path, padding=2, pad_value=255, value_range=None, scale=1):
    """Save a before/after strip (see :func:`make_strip`) to ``path``."""
    return save_image(make_strip(rows, padding, pad_value, value_range, scale), path)


def load_image(path, size=None, channels=1):
    """Read an image file as float32 (1, channels, H, W) in [0, 1], optionally resized to ``size``."""
    from PIL import Image
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such image file: {path}")
    img = Image.open(path)
    img = img.convert("L" if channels == 1 else "RGB")
    if size is not None:
        s = (size, size) if np.isscalar(size) else tuple(size)[::-1]
        img = img.resize(s, Image.BILINEAR)
    a = np.asarray(img, dtype=np.float32) / 255.0
    a = a[None, None] if channels == 1 else a.transpose(2, 0, 1)[None]
    return np.ascontiguousarray(a)


def write_csv(rows, path, fieldnames=None):
    """Write a list of dicts (one per line) to ``path`` as CSV; returns the path."""
    path = os.fspath(path)
    rows = list(rows)
    if fieldnames is None:
        fieldnames = []
        for r in rows:
            for k in r:
                if k not in fieldnames:
                    fieldnames.append(k)
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    os.replace(tmp, path)
    return path


def have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_losses(history, path, keys=("d_loss", "g_loss"), x_key="step", title="GAN losses"):
    """Plot loss curves from ``history`` (a list of dicts) to ``path``.

    With matplotlib installed, writes the image at ``path`` and returns
    ``(path, None)``. Without it, writes the values as CSV next to ``path``
    (same name, ``.csv``) and returns ``(csv_path, message)``.
    """
    path = os.fspath(path)
    history = list(history)
    if not have_matplotlib():
        csv_path = os.path.splitext(path)[0] + ".csv"
        write_csv(history, csv_path)
        return csv_path, (f"matplotlib is not installed (pip install fastcnn[plot]); "
                          f"wrote the loss values to {csv_path} instead of a plot")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [r.get(x_key, i) for i, r in enumerate(history)]
    for k in keys:
        ys = [r[k] for r in history if k in r]
        if ys:
            ax.plot(xs[:len(ys)], ys, label=k, linewidth=1)
    ax.set_xlabel(x_key)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path, None
