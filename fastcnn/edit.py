"""Image editing with a trained generator: inpainting, reconstruction, interpolation.

Semantic inpainting follows Yeh et al. (2017), "Semantic Image Inpainting with
Deep Generative Models": search the latent space for the ``z`` whose image
``G(z)`` best matches the known pixels (a masked L1 or L2 *context* loss),
optionally plus a *prior* loss ``prior_weight * softplus(-D(G(z)))`` (the
non-saturating generator loss) that keeps ``G(z)`` realistic. Gradients
with respect to ``z`` come from ``G.backward`` (and ``D.backward``); ``z`` is
optimised with Adam. Known pixels are returned unchanged; the holes are filled
from ``G(z*)``. Both networks run in eval mode.

Masks: 1 = known pixel, 0 = missing. A mask may be (H, W), (1 or N, 1 or C, H, W).
"""
import numpy as np

__all__ = ["inpaint", "reconstruct", "interpolate", "center_mask", "box_mask", "latent_size"]


def latent_size(G):
    """The latent dimension ``nz`` a generator expects, read from its first layer."""
    from . import nn
    first = G
    while isinstance(first, nn.Sequential) and len(first):
        first = first[0]
    if isinstance(first, nn.Linear):
        return int(first.in_features)
    if isinstance(first, nn.Unflatten):
        size = tuple(first.unflattened_size)
        return int(size[0]) if size else 0
    if isinstance(first, nn.ConvTranspose2d):
        return int(first.in_channels)
    raise ValueError(f"cannot tell the latent size of a generator starting with {type(first).__name__}; pass nz=")


def _check_images(images):
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"images must be a float array in [-1, 1], got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_mask(mask, shape):
    m = np.asarray(mask)
    if m.dtype == bool:
        m = m.astype(np.float32)
    if m.dtype.kind not in "fiu":
        raise TypeError(f"mask must be numeric or bool (1 = known, 0 = missing), got dtype {m.dtype}")
    if m.ndim == 2:
        m = m[None, None]
    if m.ndim != 4 or m.shape[2:] != shape[2:] or m.shape[0] not in (1, shape[0]) or m.shape[1] not in (1, shape[1]):
        raise ValueError(f"mask must have shape (H, W) = {shape[2:]} or (1|N, 1|C, H, W) for images of shape "
                         f"{shape}, got {np.shape(mask)}")
    if not np.all((m == 0) | (m == 1)):
        raise ValueError("mask values must be 0 (missing) or 1 (known)")
    return np.ascontiguousarray(np.broadcast_to(m, shape), dtype=np.float32)


def center_mask(image_size, fraction=0.5, channels=1):
    """Mask (1, channels, H, W) with a centred missing box whose sides are ``fraction`` of the image's."""
    h, w = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    bh, bw = max(1, int(round(h * fraction))), max(1, int(round(w * fraction)))
    return box_mask((h, w), (w - bw) // 2, (h - bh) // 2, bw, bh, channels)


def box_mask(image_size, x, y, w, h, channels=1):
    """Mask (1, channels, H, W), 1 everywhere except the missing box at column ``x``, row ``y``, size ``w`` x ``h``."""
    H, W = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    x, y, w, h = (int(v) for v in (x, y, w, h))
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > W or y + h > H:
        raise ValueError(f"box x={x}, y={y}, w={w}, h={h} must lie inside the {W}x{H} image and be non-empty")
    m = np.ones((1, channels, H, W), dtype=np.float32)
    m[:, :, y:y + h, x:x + w] = 0
    return m


def _softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


class _Mode:
    """Put modules in eval mode for the block; restore their modes and parameter gradients afterwards."""

    def __init__(self, *modules):
        self.modules = [m for m in modules if m is not None]

    def __enter__(self):
        self.was = [m.training for m in self.modules]
        self.grads = [(p, None if p.grad is None else p.grad.copy())
                      for m in self.modules for p in m.parameters()]
        for m in self.modules:
            m.eval()

    def __exit__(self, *exc):
        for m, w in zip(self.modules, self.was):
            m.train(w)
        for p, g in self.grads:      # gradients of the networks' weights are left as they were
            p.grad = g
        return False


def _search_latent(G, target, mask, D, steps, lr, prior_weight, seed, restarts, loss, nz, codes=0):
    """Adam on z for every (image, restart) pair; returns (best z per image, best per-image loss)."""
    if loss not in ("l1", "l2"):
        raise ValueError(f"loss must be 'l1' or 'l2', got {loss!r}")
    steps = int(steps)
    restarts = int(restarts)
    if steps < 0 or restarts < 1:
        raise ValueError(f"steps must be >= 0 and restarts >= 1, got steps={steps}, restarts={restarts}")
    if not lr > 0 or prior_weight < 0:
        raise ValueError(f"lr must be > 0 and prior_weight >= 0, got lr={lr}, prior_weight={prior_weight}")
    nz = latent_size(G) if nz is None else int(nz)
    from .gan import _check_codes
    codes = _check_codes(codes)
    if codes >= nz:
        raise ValueError(f"codes must be below the generator's latent size {nz}, got {codes}")
    n = target.shape[0]
    rng = np.random.default_rng(seed)
    y = np.tile(target, (restarts, 1, 1, 1))
    m = np.tile(mask, (restarts, 1, 1, 1))
    count = np.maximum(m.reshape(len(m), -1).sum(axis=1), 1.0).reshape(-1, 1, 1, 1)
    z = rng.standard_normal((n * restarts, nz), dtype=np.float64).astype(np.float32)
    if codes:
        # the code part starts one-hot: an image's starts take distinct codes (in a random order) while they last
        order = np.argsort(rng.random((n, codes)), axis=1)
        start_codes = order[:, np.arange(restarts) % codes].T.reshape(-1)
        z[:, nz - codes:] = 0
        z[np.arange(n * restarts), nz - codes + start_codes] = 1
    b1, b2, eps = 0.9, 0.999, 1e-8
    mom = np.zeros_like(z)
    vel = np.zeros_like(z)
    use_prior = D is not None and prior_weight > 0

    def losses(x):
        r = (x - y) * m
        per = (np.abs(r) if loss == "l1" else r * r).reshape(len(r), -1).sum(axis=1) / count.ravel()
        if use_prior:
            logits = np.asarray(D(x), dtype=np.float64).reshape(len(x), -1)[:, 0]
            per = per + prior_weight * _softplus(-logits)
        return per

    with _Mode(G, D):
        for t in range(1, steps + 1):
            x = G(z)
            r = (x - y) * m
            gx = (np.sign(r) if loss == "l1" else 2.0 * r) * m / count
            if use_prior:
                logits = D(x)
                # d softplus(-l) / dl = -sigmoid(-l), for the real/fake logit (the first output) only
                gl = np.zeros(logits.shape, dtype=x.dtype)
                gl2 = gl.reshape(len(x), -1)
                gl2[:, 0] = -prior_weight * _sigmoid(-np.asarray(logits, dtype=np.float64).reshape(len(x), -1)[:, 0])
                gx = gx + D.backward(gl)
            gz = np.asarray(G.backward(np.ascontiguousarray(gx, dtype=x.dtype)), dtype=np.float32)
            mom = b1 * mom + (1 - b1) * gz
            vel = b2 * vel + (1 - b2) * gz * gz
            z = z - lr * (mom / (1 - b1 ** t)) / (np.sqrt(vel / (1 - b2 ** t)) + eps)
            z = z.astype(np.float32)
        final = losses(G(z))
    per = final.reshape(restarts, n)
    best = np.argmin(per, axis=0)
    zs = z.reshape(restarts, n, nz)[best, np.arange(n)]
    return zs, per[best, np.arange(n)]


def _generate(G, z):
    with _Mode(G):
        return G(np.ascontiguousarray(z, dtype=np.float32))


def inpaint(G, images, mask, D=None, steps=300, lr=0.05, prior_weight=0.003, seed=0, restarts=1,
            loss="l1", nz=None, return_latent=False, codes=0):
    """Fill the missing pixels of ``images`` (N, C, H, W) in [-1, 1] from a generator.

    ``mask``: 1 = known, 0 = missing (see module docs for shapes). Optimises
    one latent vector per image (``restarts`` random starts each, the best
    kept) for ``steps`` Adam steps of size ``lr`` on the masked ``loss``
    ('l1' as in Yeh et al., or 'l2'), plus ``prior_weight`` times the
    discriminator prior when ``D`` is given. Returns the images with the known
    pixels unchanged and the holes taken from ``G(z*)``; with
    ``return_latent``, returns ``(filled, z, generated)``. The prior reads
    ``D``'s first output per image as its real/fake logit (further outputs,
    such as InfoGAN code logits, are not used). ``codes=k``: the generator's
    input ends with a one-hot code of ``k`` values (``GANTrainer(codes=k)``);
    each start then begins at a one-hot code, distinct among an image's
    starts while there are codes left, and the search moves it freely.
    """
    x = _check_images(images)
    m = _check_mask(mask, x.shape)
    z, _ = _search_latent(G, x, m, D, steps, lr, float(prior_weight), seed, restarts, loss, nz, codes)
    gen = _generate(G, z)
    if gen.shape != x.shape:
        raise ValueError(f"the generator makes images of shape {gen.shape[1:]}, the images have {x.shape[1:]}")
    filled = m * x + (1 - m) * gen
    filled = filled.astype(np.float32)
    return (filled, z, gen) if return_latent else filled


def reconstruct(G, images, steps=300, lr=0.05, seed=0, restarts=1, loss="l2", nz=None, codes=0):
    """Project ``images`` into the latent space: returns ``(z, G(z))`` with ``G(z)`` closest to the images.

    ``codes``: as for :func:`inpaint`.
    """
    x = _check_images(images)
    m = np.ones_like(x)
    z, _ = _search_latent(G, x, m, None, steps, lr, 0.0, seed, restarts, loss, nz, codes)
    return z, _generate(G, z)


def interpolate(G, z0, z1, steps=8, mode="slerp"):
    """Images along the path from ``z0`` to ``z1`` (``steps`` points, ends included), shape (steps, C, H, W).

    ``mode``: 'slerp' (spherical, suited to Gaussian latents) or 'linear'.
    """
    if mode not in ("slerp", "linear"):
        raise ValueError(f"mode must be 'slerp' or 'linear', got {mode!r}")
    steps = int(steps)
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    a = np.asarray(z0, dtype=np.float64).reshape(-1)
    b = np.asarray(z1, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"z0 and z1 must have the same size, got {a.size} and {b.size}")
    nz = latent_size(G)
    if a.size != nz:
        raise ValueError(f"z0 and z1 must have {nz} elements (the generator's latent size), got {a.size}")
    t = np.linspace(0.0, 1.0, steps)[:, None]
    if mode == "linear":
        z = (1 - t) * a + t * b
    else:
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        cos = np.clip(a @ b / max(na * nb, 1e-12), -1.0, 1.0)
        omega = np.arccos(cos)
        so = np.sin(omega)
        if so < 1e-6:
            z = (1 - t) * a + t * b
        else:
            z = (np.sin((1 - t) * omega) / so) * a + (np.sin(t * omega) / so) * b
    return _generate(G, z.astype(np.float32))
