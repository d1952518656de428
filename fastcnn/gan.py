"""DCGAN builders and a GAN trainer.

::

    import fastcnn as fc
    from fastcnn.gan import dcgan_generator, dcgan_discriminator, GANTrainer
    G = dcgan_generator(nz=64, image_size=16, ngf=32, seed=0)
    D = dcgan_discriminator(image_size=16, ndf=32, seed=1)
    trainer = GANTrainer(G, D, nz=64, seed=0)
    trainer.fit(images, epochs=20, batch_size=64)      # images (N, 1, 16, 16) in [-1, 1]
    samples = trainer.sample(64, seed=0)                # (64, 1, 16, 16) in [-1, 1]

Two families of architectures, both with BatchNorm, ReLU in the generator,
LeakyReLU(0.2) in the discriminator and a tanh output:

* ``image_size`` 16 and 28: ``Linear -> Unflatten -> BatchNorm2d -> ReLU ->
  ConvTranspose2d -> BatchNorm2d -> ReLU -> ConvTranspose2d -> Tanh``, and a
  discriminator ``Conv2d -> LeakyReLU -> Conv2d -> BatchNorm2d -> LeakyReLU ->
  Flatten -> Linear`` (the DCGAN-28 reference workload for 28x28 images).
* ``image_size`` 32 and 64: Radford et al.'s all-convolutional networks
  (64: five transposed convolutions and five convolutions; 32: four of each),
  no biases, BatchNorm everywhere except at the generator's output and the
  discriminator's input.

All weights are initialised as in DCGAN: N(0, 0.02) for (transposed)
convolution and linear weights, N(1, 0.02) for BatchNorm weights, zero biases.
"""
import copy
import os
import signal
import sys
import threading
import time

import numpy as np

from . import nn
from ._random import resolve

__all__ = ["dcgan_generator", "dcgan_discriminator", "dcgan_init_", "GANTrainer", "SUPPORTED_IMAGE_SIZES",
           "sample", "latents"]

SUPPORTED_IMAGE_SIZES = (16, 28, 32, 64)


def _check_positive_int(v, name):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {v!r}")
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return int(v)


def _check_codes(codes):
    if isinstance(codes, (bool, np.bool_)) or not isinstance(codes, (int, np.integer)):
        raise TypeError(f"codes must be an int, got {codes!r}")
    if codes < 0 or codes == 1:
        raise ValueError(f"codes must be 0 (none) or at least 2, got {codes}")
    return int(codes)


def _check_image_size(image_size):
    if isinstance(image_size, (bool, np.bool_)) or not isinstance(image_size, (int, np.integer)):
        raise TypeError(f"image_size must be an int, got {image_size!r}")
    if int(image_size) not in SUPPORTED_IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {image_size}")
    return int(image_size)


def _generator_rng(seed, generator):
    if seed is not None and generator is not None:
        raise ValueError("give either seed or generator, not both")
    if seed is not None:
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        return np.random.default_rng(int(seed))
    return resolve(generator)


def dcgan_init_(module, std=0.02, generator=None):
    """DCGAN initialisation of every sub-module, in place; returns ``module``.

    Conv2d, ConvTranspose2d and Linear weights ~ N(0, std), their biases 0;
    BatchNorm weights ~ N(1, std), biases 0. Draws come from ``generator``
    (a ``numpy.random.Generator``), else from the global generator seeded by
    :func:`fastcnn.manual_seed`.
    """
    gen = resolve(generator)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            w = m.weight.data
            w[...] = gen.normal(0.0, std, size=w.shape)
            if m.bias is not None:
                m.bias.data[...] = 0
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.weight is not None:
            m.weight.data[...] = gen.normal(1.0, std, size=m.weight.data.shape)
            m.bias.data[...] = 0
    return module


def dcgan_generator(nz=100, image_size=28, channels=1, ngf=64, seed=None, generator=None):
    """DCGAN generator: ``(N, nz)`` latent vectors to ``(N, channels, image_size, image_size)`` in [-1, 1].

    ``image_size`` is 16, 28, 32 or 64; ``ngf`` sets the width (the last
    hidden layer has ``ngf`` channels). Weights are drawn from ``seed`` or
    ``generator`` (else the global generator, see :func:`fastcnn.manual_seed`).
    """
    nz = _check_positive_int(nz, "nz")
    image_size = _check_image_size(image_size)
    channels = _check_positive_int(channels, "channels")
    ngf = _check_positive_int(ngf, "ngf")
    gen = _generator_rng(seed, generator)
    if image_size in (16, 28):
        s = image_size // 4
        layers = [
            nn.Linear(nz, 2 * ngf * s * s), nn.Unflatten(1, (2 * ngf, s, s)), nn.BatchNorm2d(2 * ngf), nn.ReLU(),
            nn.ConvTranspose2d(2 * ngf, ngf, 4, 2, 1), nn.BatchNorm2d(ngf), nn.ReLU(),
            nn.ConvTranspose2d(ngf, channels, 4, 2, 1), nn.Tanh(),
        ]
    else:
        mult = image_size // 8          # 64 -> 8, 32 -> 4
        layers = [nn.Unflatten(1, (nz, 1, 1)),
                  nn.ConvTranspose2d(nz, ngf * mult, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * mult), nn.ReLU()]
        while mult > 1:
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(ngf * mult // 2), nn.ReLU()]
            mult //= 2
        layers += [nn.ConvTranspose2d(ngf, channels, 4, 2, 1, bias=False), nn.Tanh()]
    return dcgan_init_(nn.Sequential(*layers), generator=gen)


def dcgan_discriminator(image_size=28, channels=1, ndf=64, seed=None, generator=None, codes=0):
    """DCGAN discriminator: ``(N, channels, image_size, image_size)`` images to ``(N, 1)`` logits.

    ``image_size`` is 16, 28, 32 or 64; ``ndf`` is the width of the first layer.
    With ``codes=k`` the last layer gives ``1 + k`` outputs: the real/fake
    logit, then the logits of a ``k``-way latent code (InfoGAN's recognition
    head, sharing every other layer; see :class:`GANTrainer`).
    """
    image_size = _check_image_size(image_size)
    channels = _check_positive_int(channels, "channels")
    ndf = _check_positive_int(ndf, "ndf")
    codes = _check_codes(codes)
    gen = _generator_rng(seed, generator)
    if image_size in (16, 28):
        s = image_size // 4
        layers = [
            nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(ndf, 2 * ndf, 4, 2, 1), nn.BatchNorm2d(2 * ndf), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * ndf * s * s, 1 + codes),
        ]
    else:
        layers = [nn.Conv2d(channels, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
        mult, size = 1, image_size // 2
        while size > 4:
            layers += [nn.Conv2d(ndf * mult, ndf * mult * 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(ndf * mult * 2), nn.LeakyReLU(0.2)]
            mult *= 2
            size //= 2
        layers += [nn.Conv2d(ndf * mult, 1 + codes, 4, 1, 0, bias=False), nn.Flatten()]
    return dcgan_init_(nn.Sequential(*layers), generator=gen)


def _sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


class _Pair(nn.Module):
    """Both networks as one module (state-dict keys ``generator.*``, ``discriminator.*``, ``generator_ema.*``)."""

    def __init__(self, G, D, G_ema=None):
        super().__init__()
        self.generator = G
        self.discriminator = D
        if G_ema is not None:
            self.generator_ema = G_ema


class _OptimizerPair:
    """Two optimisers seen as one (parameter groups of the first, then of the second)."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    @staticmethod
    def _nparams(sd):
        return sum(len(g["params"]) for g in sd["param_groups"])

    def state_dict(self):
        a, b = self.first.state_dict(), self.second.state_dict()
        off = self._nparams(a)
        state = {int(k): v for k, v in a["state"].items()}
        state.update({int(k) + off: v for k, v in b["state"].items()})
        groups = [dict(g) for g in a["param_groups"]]
        for g in b["param_groups"]:
            g = dict(g)
            g["params"] = [int(i) + off for i in g["params"]]
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd):
        na = len(self.first.param_groups)
        ga, gb = sd["param_groups"][:na], sd["param_groups"][na:]
        ids_a = {int(i) for g in ga for i in g["params"]}
        off = min((int(i) for g in gb for i in g["params"]), default=0)
        sa = {"state": {int(k): v for k, v in sd["state"].items() if int(k) in ids_a}, "param_groups": ga}
        gb2 = []
        for g in gb:
            g = dict(g)
            g["params"] = [int(i) - off for i in g["params"]]
            gb2.append(g)
        sb = {"state": {int(k) - off: v for k, v in sd["state"].items() if int(k) not in ids_a},
              "param_groups": gb2}
        self.first.load_state_dict(sa)
        self.second.load_state_dict(sb)


class _SigintFlag:
    """Within ``with``: Ctrl-C sets ``.set`` instead of raising (a second Ctrl-C raises at once)."""

    def __init__(self):
        self.set = False
        self._old = None

    def _handler(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._old = signal.signal(signal.SIGINT, self._handler)
            except (ValueError, OSError):
                self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :meth:`GANTrainer.fit` after Ctrl-C, once a consistent checkpoint is written."""

    def __init__(self, checkpoint=None):
        super().__init__("training interrupted" + (f"; checkpoint saved to {checkpoint}" if checkpoint else ""))
        self.checkpoint = checkpoint


def _translate(x, shifts, fill):
    """Each image ``x[i]`` moved by ``shifts[i] = (dy, dx)`` pixels; uncovered pixels get ``fill``."""
    n, _, h, w = x.shape
    out = np.full_like(x, fill)
    for i in range(n):
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        out[i, :, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            x[i, :, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def _translate_backward(grad_out, shifts):
    """The adjoint of :func:`_translate`: the gradient moved back, zero where the fill came in."""
    return _translate(grad_out, -np.asarray(shifts), 0)


def _as_images(x, name):
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array, got dtype {x.dtype}")
    return x


class GANTrainer:
    """Adversarial training of a generator ``G`` and a discriminator ``D``.

    Each :meth:`step` trains ``D`` on a real batch (target 1, or
    ``1 - label_smoothing``) and a generated batch (target 0), accumulating
    gradients before one optimiser step, then trains ``G`` with the
    non-saturating loss (``D(G(z))`` against target 1; the gradient flows
    back through ``D`` into ``G``, and ``D``'s parameter gradients from that
    pass are discarded). Both optimisers are Adam. Latent vectors are
    ``N(0, 1)`` draws from a generator seeded by ``seed``.

    ``lr_d`` gives the discriminator its own learning rate (default ``lr``).
    ``translate=k`` (differentiable augmentation, Zhao et al. 2020) moves
    every image the discriminator sees, real or generated, by a random
    number of pixels in ``[-k, k]`` along each axis (the uncovered border
    takes the value -1, the images' background); the generator's gradient
    goes back through the same move. It keeps a discriminator from
    memorising a small training set. ``ema_decay`` keeps an exponential
    moving average of the generator's weights (:attr:`G_ema`), used for
    sampling. ``lr_decay=f`` lowers both learning rates linearly to zero over
    the last fraction ``f`` of the epochs given to :meth:`fit` (set at the
    start of each epoch).

    ``codes=k`` adds a categorical latent code (InfoGAN, Chen et al. 2016):
    the generator's input is ``nz`` normal draws followed by a one-hot vector
    of a code drawn uniformly from ``k`` (so ``G`` takes ``nz + k`` inputs),
    and the discriminator gives ``1 + k`` outputs (build it with
    ``dcgan_discriminator(..., codes=k)``): the real/fake logit, then logits
    that predict the code of a generated image. Both networks also minimise
    ``code_weight`` times that prediction's cross-entropy on generated
    images (the discriminator in its pass on the fake batch, the generator
    in its own), a lower bound on the mutual information between code and
    image. No labels are used; each code comes to stand for one kind of
    image, which keeps samples away from the blends between kinds.
    """

    def __init__(self, G, D, nz, lr=2e-4, betas=(0.5, 0.999), seed=0, label_smoothing=0.0,
                 lr_d=None, dtype=np.float32, config=None, ema_decay=None, translate=0, lr_decay=0.0,
                 codes=0, code_weight=1.0):
        from . import optim
        if not isinstance(G, nn.Module) or not isinstance(D, nn.Module):
            raise TypeError("G and D must be fastcnn.nn.Module instances")
        self.G, self.D = G, D
        self.nz = _check_positive_int(nz, "nz")
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = int(seed)
        ls = float(label_smoothing)
        if not 0.0 <= ls < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = ls
        self.lr = float(lr)
        self.lr_d = float(lr if lr_d is None else lr_d)
        if not (self.lr > 0 and self.lr_d > 0):
            raise ValueError(f"lr must be > 0, got {lr}" + (f" (lr_d {lr_d})" if lr_d is not None else ""))
        self.betas = (float(betas[0]), float(betas[1]))
        self.dtype = np.dtype(dtype)
        self.config = config       # JSON-serialisable description stored in checkpoints (e.g. builder arguments)
        if ema_decay is not None:
            ema_decay = float(ema_decay)
            if not 0.0 < ema_decay < 1.0:
                raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay}")
        self.ema_decay = ema_decay
        if isinstance(translate, (bool, np.bool_)) or not isinstance(translate, (int, np.integer)) or translate < 0:
            raise ValueError(f"translate must be a non-negative int, got {translate!r}")
        self.translate = int(translate)
        lr_decay = float(lr_decay)
        if not 0.0 <= lr_decay <= 1.0:
            raise ValueError(f"lr_decay must be in [0, 1], got {lr_decay}")
        self.lr_decay = lr_decay
        self.codes = _check_codes(codes)
        if isinstance(code_weight, (bool, np.bool_)) or not isinstance(code_weight, (int, float, np.number)):
            raise TypeError(f"code_weight must be a number, got {code_weight!r}")
        code_weight = float(code_weight)
        if not code_weight >= 0.0:
            raise ValueError(f"code_weight must be >= 0, got {code_weight}")
        self.code_weight = code_weight
        self.G_ema = copy.deepcopy(G) if ema_decay is not None else None
        self.opt_g = optim.Adam(G.parameters(), lr=self.lr, betas=self.betas)
        self.opt_d = optim.Adam(D.parameters(), lr=self.lr_d, betas=self.betas)
        self.criterion = nn.BCEWithLogitsLoss()
        self.code_criterion = nn.CrossEntropyLoss()
        self.rng = np.random.default_rng(self.seed)
        self.epoch = 0             # completed epochs
        self.batch_in_epoch = 0    # completed batches of the current epoch
        self.steps = 0             # completed steps in all
        self.history = []          # one dict per step
        self.log = {}              # JSON-serialisable user state saved with checkpoints
        self.train_time = 0.0      # seconds spent in fit()
        self.images_seen = 0

    # -- one iteration -----------------------------------------------------
    def _noise(self, n):
        """(latent vectors, codes): ``n`` rows of ``nz`` normal draws (then the one-hot code when ``codes``)."""
        z = self.rng.standard_normal((n, self.nz), dtype=np.float64).astype(self.dtype)
        if not self.codes:
            return z, None
        c = self.rng.integers(0, self.codes, size=n)
        return _with_codes(z, c, self.codes), c

    def _d_loss(self, logits, target, codes=None):
        """Loss of the discriminator's outputs and its gradient: the real/fake logit's
        binary cross-entropy against ``target``, plus the weighted code cross-entropy
        when ``codes`` is given. Returns (adversarial loss, code loss, gradient)."""
        if not self.codes:
            loss = self.criterion(logits, target)
            return loss, 0.0, self.criterion.backward()
        k = self.codes
        if logits.ndim != 2 or logits.shape[1] != 1 + k:
            raise ValueError(f"with codes={k} the discriminator must give (N, {1 + k}) outputs (its real/fake "
                             f"logit, then {k} code logits; dcgan_discriminator(..., codes={k})), "
                             f"got {logits.shape}")
        grad = np.zeros_like(logits)
        loss = self.criterion(np.ascontiguousarray(logits[:, :1]), target)
        grad[:, :1] = self.criterion.backward()
        code_loss = 0.0
        if codes is not None:
            code_loss = self.code_criterion(np.ascontiguousarray(logits[:, 1:]), codes)
            grad[:, 1:] = self.code_criterion.backward() * grad.dtype.type(self.code_weight)
        return loss, code_loss, grad

    def step(self, real):
        """One iteration on the real batch ``real`` (N, C, H, W) in [-1, 1].

        Returns ``{"d_loss", "g_loss", "d_real", "d_fake"}`` (floats): the
        discriminator loss on real plus fake, the generator's non-saturating
        loss, and the mean ``sigmoid(D(x))`` on the real and on the generated
        batch (before the discriminator's update). With ``codes``, also
        ``"code_loss"``: the code's cross-entropy in the generator's pass.
        """
        real = _as_images(real, "real")
        real = np.ascontiguousarray(real, dtype=self.dtype)
        n = real.shape[0]
        G, D, crit = self.G, self.D, self.criterion
        G.train()
        D.train()
        ctx = getattr(self, "_dist", None)  # set by fit() when training over MPI ranks
        total, part = ctx.last_shard(n) if ctx else (n, slice(0, n))
        z, c = self._noise(total)
        z = z[part]                       # this rank's rows of the global batch's latents
        c = c[part] if c is not None else None
        fake = G(z)
        if fake.shape[1:] != real.shape[1:]:
            raise ValueError(f"real batch has image shape {real.shape[1:]}, the generator makes {fake.shape[1:]}")
        ones = np.ones((n, 1), dtype=self.dtype)
        zeros = np.zeros((n, 1), dtype=self.dtype)
        real_t = np.full((n, 1), 1.0 - self.label_smoothing, dtype=self.dtype) if self.label_smoothing else ones

        k = self.translate
        if k:   # one move per image and pass, drawn for the global batch (this rank takes its rows)
            moves = self.rng.integers(-k, k + 1, size=(3, total, 2))[:, part]
            aug = lambda x, i: _translate(x, moves[i], -1.0)  # noqa: E731
        else:
            aug = lambda x, i: x  # noqa: E731

        # discriminator: real and fake gradients accumulate, then one step
        self.opt_d.zero_grad()
        logit_real = D(aug(real, 0))
        loss_real, _, grad = self._d_loss(logit_real, real_t)
        D.backward(grad, need_input_grad=False)
        logit_fake = D(aug(fake, 1))
        loss_fake, code_d, grad = self._d_loss(logit_fake, zeros, c)
        D.backward(grad, need_input_grad=False)
        if ctx:
            ctx.sync_grads(D)
        self.opt_d.step()

        # generator: non-saturating loss through the updated discriminator
        self.opt_g.zero_grad()
        logit_gen = D(aug(fake, 2))
        g_loss, code_g, grad = self._d_loss(logit_gen, ones, c)
        grad_fake = D.backward(grad)
        if k:
            grad_fake = _translate_backward(grad_fake, moves[2])
        self.opt_d.zero_grad()          # D's gradients from the generator pass are not applied
        G.backward(grad_fake, need_input_grad=False)
        if ctx:
            ctx.sync_grads(G)
        self.opt_g.step()

        self.steps += 1
        if self.G_ema is not None:
            self._update_ema()
        out = {"d_loss": float(loss_real + loss_fake), "g_loss": float(g_loss),
               "d_real": float(_sigmoid(logit_real[:, :1]).mean()),
               "d_fake": float(_sigmoid(logit_fake[:, :1]).mean())}
        if self.codes:
            out["code_loss"] = float(code_g)   # the generator's code cross-entropy
        return out

    def _update_ema(self):
        # warm-up: the average starts close to the live weights
        d = min(self.ema_decay, (1.0 + self.steps) / (10.0 + self.steps))
        for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
            pe.data *= pe.data.dtype.type(d)
            pe.data += pe.data.dtype.type(1.0 - d) * p.data
        for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
            be[...] = b

    def _set_lr(self, epoch, epochs):
        """Learning rates for ``epoch`` (0-based) of ``epochs``: constant, then the linear decay."""
        span = self.lr_decay * epochs
        f = min(1.0, (epochs - epoch) / span) if span > 0 else 1.0
        for opt, base in ((self.opt_g, self.lr), (self.opt_d, self.lr_d)):
            for g in opt.param_groups:
                g["lr"] = base * f

    # -- sampling ------------------------------------------------------------
    @property
    def generator(self):
        """The generator used for sampling: :attr:`G_ema` when kept, else :attr:`G`."""
        return self.G_ema if self.G_ema is not None else self.G

    def sample(self, n, seed=0, z=None, batch_size=256, code=None):
        """``n`` images from the generator in eval mode (latents from ``seed``, or ``z`` when given).

        With ``codes``, each image's code is drawn uniformly, or is ``code``
        (an int, or one per image) when given.
        """
        return sample(self.generator, n, self.nz, seed=seed, z=z, batch_size=batch_size, dtype=self.dtype,
                      codes=self.codes, code=code)

    # -- training loop -------------------------------------------------------
    def _epoch_order(self, epoch, n):
        return np.random.default_rng([self.seed, 0x5EED, int(epoch)]).permutation(n)

    def fit(self, data, epochs, batch_size=64, progress=True, callback=None, checkpoint_dir=None,
            checkpoint_every=1, step_callback=None, max_steps=None, distributed=None):
        """Train until ``epochs`` epochs are complete (continuing from :attr:`epoch` after a resume).

        ``data``: images (N, C, H, W) in [-1, 1]; each epoch visits them in a
        seeded random order in batches of ``batch_size`` (the last partial
        batch is dropped). ``callback(trainer, epoch, stats)`` runs after each
        epoch (``stats``: mean losses of the epoch); ``step_callback(trainer,
        stats)`` after each step. With ``checkpoint_dir``, a checkpoint is
        written every ``checkpoint_every`` epochs and at the end. Ctrl-C stops
        at the next step boundary, writes a checkpoint (when ``checkpoint_dir``
        is given) and raises :class:`TrainingInterrupted`. ``max_steps``
        bounds the number of steps taken by this call. Returns :attr:`history`.

        ``distributed`` (None: detect an ``mpirun`` launch; True; False) trains
        data-parallel over MPI ranks (:mod:`fastcnn.distributed`): every rank
        holds ``data``, ``batch_size`` is the global batch (each rank takes its
        part, and its rows of the batch's latent vectors), both networks and
        optimisers start from rank 0's, gradients are averaged before each
        optimiser step, statistics are averaged over ranks, and only rank 0
        shows progress and writes checkpoints. Callbacks run on every rank.
        """
        data = _as_images(data, "data")
        epochs = int(epochs)
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        batch_size = _check_positive_int(batch_size, "batch_size")
        n = data.shape[0]
        if batch_size > n:
            raise ValueError(f"batch_size ({batch_size}) must not exceed the number of images ({n})")
        per_epoch = n // batch_size
        from . import distributed as _dist
        ctx = self._dist = _dist.context(distributed)
        if ctx:
            if batch_size < ctx.world_size:
                raise ValueError(f"batch_size ({batch_size}) must be at least the number of ranks "
                                 f"({ctx.world_size})")
            progress = progress and ctx.is_root
            ctx.broadcast_model(self.G, self.opt_g)
            ctx.broadcast_model(self.D, self.opt_d)
            if getattr(self, "G_ema", None) is not None:
                ctx.broadcast_model(self.G_ema)
            self.rng.bit_generator.state = ctx.broadcast_object(self.rng.bit_generator.state)
        bar = None
        if progress:
            bar = _progress(total=max(0, (epochs - self.epoch) * per_epoch - self.batch_in_epoch), desc="train-gan")
        taken = 0
        t_start = time.perf_counter()
        try:
            with _SigintFlag() as flag:
                while self.epoch < epochs:
                    if self.lr_decay > 0:
                        self._set_lr(self.epoch, epochs)
                    order = self._epoch_order(self.epoch, n)
                    sums = {}
                    while self.batch_in_epoch < per_epoch:
                        if ctx and ctx.any(flag.set):
                            flag.set = True  # a stop on any rank stops every rank
                        if flag.set or (max_steps is not None and taken >= max_steps):
                            break
                        b = self.batch_in_epoch
                        t0 = time.perf_counter()
                        part = ctx.shard(order[b * batch_size:(b + 1) * batch_size])  # all of it on one process
                        stats = ctx.reduce_metrics(self.step(data[part]))
                        dt = time.perf_counter() - t0
                        self.batch_in_epoch += 1
                        self.images_seen += batch_size
                        taken += 1
                        rec = {"step": self.steps, "epoch": self.epoch + 1}
                        rec.update(stats)
                        self.history.append(rec)
                        for k, v in stats.items():
                            sums[k] = sums.get(k, 0.0) + v
                        if bar is not None:
                            bar.update(1, d_loss=stats["d_loss"], g_loss=stats["g_loss"],
                                       D_x=stats["d_real"], D_Gz=stats["d_fake"], img_s=batch_size / max(dt, 1e-9))
                        if step_callback is not None:
                            step_callback(self, stats)
                    if flag.set or self.batch_in_epoch < per_epoch:
                        break
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    ctx.sync_buffers(self.G)  # per-rank BatchNorm statistics: their mean
                    ctx.sync_buffers(self.D)
                    ep_hist = [h for h in self.history if h["epoch"] == self.epoch]
                    ep_stats = {k: float(np.mean([h[k] for h in ep_hist]))
                                for k in ("d_loss", "g_loss", "d_real", "d_fake", "code_loss")
                                if k in ep_hist[0]} if ep_hist else {}
                    self.train_time += time.perf_counter() - t_start
                    t_start = time.perf_counter()
                    if callback is not None:
                        callback(self, self.epoch, ep_stats)
                    if checkpoint_dir is not None and ctx.is_root and \
                            (self.epoch % checkpoint_every == 0 or self.epoch == epochs):
                        self.save(checkpoint_dir)
                self.train_time += time.perf_counter() - t_start
                t_start = time.perf_counter()
                if flag.set:
                    path = self.save(checkpoint_dir) if checkpoint_dir is not None and ctx.is_root else None
                    raise TrainingInterrupted(path)
        finally:
            self._dist = None
            if bar is not None:
                bar.close()
        if checkpoint_dir is not None and max_steps is not None and self.batch_in_epoch and ctx.is_root:
            self.save(checkpoint_dir)
        return self.history

    # -- checkpoints ---------------------------------------------------------
    CHECKPOINT_NAME = "gan.npz"

    def _checkpoint_path(self, path):
        path = os.fspath(path)
        if path.endswith(".npz"):
            return path
        return os.path.join(path, self.CHECKPOINT_NAME)

    def state(self):
        """The trainer's own state (JSON-serialisable): counters, RNG state, history, log."""
        return {
            "nz": self.nz, "seed": self.seed, "lr": self.lr, "lr_d": self.lr_d, "betas": list(self.betas),
            "label_smoothing": self.label_smoothing, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "steps": self.steps, "rng_state": _jsonable(self.rng.bit_generator.state),
            "history": self.history, "log": self.log, "train_time": self.train_time,
            "images_seen": self.images_seen, "ema_decay": self.ema_decay, "translate": self.translate,
            "lr_decay": self.lr_decay, "codes": self.codes, "code_weight": self.code_weight,
        }

    def save(self, path, **extra):
        """Write both networks, both optimisers, the RNG state and the counters to ``path``.

        ``path`` is a ``.npz`` file or a directory (then ``path/gan.npz``).
        The write is atomic (temporary file, then rename). Returns the file's path.
        """
        from . import checkpoint
        file = self._checkpoint_path(path)
        d = os.path.dirname(file)
        if d:
            os.makedirs(d, exist_ok=True)
        checkpoint.save(_Pair(self.G, self.D, self.G_ema), file, optimizer=_OptimizerPair(self.opt_g, self.opt_d),
                        config=self.config, epoch=self.epoch, gan_trainer=self.state(), **extra)
        return file

    def load(self, path):
        """Restore what :meth:`save` wrote; training then continues exactly where it stopped."""
        from . import checkpoint
        file = self._checkpoint_path(path)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"no GAN checkpoint at {file}")
        extra = checkpoint.load(_Pair(self.G, self.D, self.G_ema), file,
                                optimizer=_OptimizerPair(self.opt_g, self.opt_d))
        raw = extra.get("gan_trainer") if isinstance(extra, dict) else None
        if raw is None:
            raise ValueError(f"{file} is not a GAN trainer checkpoint (no trainer state)")
        st = raw
        if int(st["nz"]) != self.nz:
            raise ValueError(f"checkpoint was written with nz={st['nz']}, this trainer has nz={self.nz}")
        if int(st.get("codes", 0)) != self.codes:
            raise ValueError(f"checkpoint was written with codes={st.get('codes', 0)}, this trainer has "
                             f"codes={self.codes}")
        self.seed = int(st["seed"])
        self.label_smoothing = float(st["label_smoothing"])
        self.translate = int(st.get("translate", self.translate))
        self.lr_decay = float(st.get("lr_decay", self.lr_decay))
        self.code_weight = float(st.get("code_weight", self.code_weight))
        self.epoch = int(st["epoch"])
        self.batch_in_epoch = int(st["batch_in_epoch"])
        self.steps = int(st["steps"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = _from_jsonable(st["rng_state"])
        self.history = list(st["history"])
        self.log = dict(st["log"])
        self.train_time = float(st.get("train_time", 0.0))
        self.images_seen = int(st.get("images_seen", 0))
        return extra


def _jsonable(state):
    """A bit generator state as plain JSON types (ints may be beyond 64 bits; stored as strings)."""
    if isinstance(state, dict):
        return {k: _jsonable(v) for k, v in state.items()}
    if isinstance(state, (int, np.integer)) and not isinstance(state, bool):
        return {"__int__": str(int(state))}
    if isinstance(state, np.ndarray):
        return {"__array__": state.tolist(), "dtype": str(state.dtype)}
    return state


def _from_jsonable(state):
    if isinstance(state, dict):
        if "__int__" in state:
            return int(state["__int__"])
        if "__array__" in state:
            return np.asarray(state["__array__"], dtype=state["dtype"])
        return {k: _from_jsonable(v) for k, v in state.items()}
    return state


def _with_codes(z, codes, k):
    """``z`` (n, nz) with the one-hot vectors of ``codes`` (n,) from ``k`` appended."""
    out = np.zeros((z.shape[0], z.shape[1] + k), dtype=z.dtype)
    out[:, :z.shape[1]] = z
    out[np.arange(z.shape[0]), z.shape[1] + np.asarray(codes)] = 1
    return out


def latents(n, nz, seed=0, codes=0, code=None, dtype=np.float32):
    """``n`` generator inputs: ``nz`` normal draws each, then with ``codes=k``
    the one-hot vector of a code drawn uniformly from ``k`` (or of ``code``:
    an int, or one per row)."""
    n = _check_positive_int(n, "n")
    codes = _check_codes(codes)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, nz), dtype=np.float64).astype(dtype)
    if not codes:
        if code is not None:
            raise ValueError("code is given but the generator has no codes (codes=0)")
        return z
    if code is None:
        c = rng.integers(0, codes, size=n)
    else:
        c = np.asarray(code)
        if c.dtype.kind not in "iu" or c.ndim > 1 or (c.ndim == 1 and c.shape[0] != n):
            raise ValueError(f"code must be an int or {n} ints, got {code!r}")
        if np.any((c < 0) | (c >= codes)):
            raise ValueError(f"code must be in [0, {codes}), got {code!r}")
        c = np.broadcast_to(c, (n,))
    return _with_codes(z, c, codes)


def sample(G, n, nz, seed=0, z=None, batch_size=256, dtype=np.float32, codes=0, code=None):
    """``n`` images from ``G`` in eval mode (its mode is restored afterwards).

    Inputs come from :func:`latents` (``nz`` normal draws, then a one-hot code
    of ``codes`` when given), or are ``z`` of shape (n, nz + codes).
    """
    if z is None:
        z = latents(n, nz, seed=seed, codes=codes, code=code, dtype=dtype)
    else:
        z = np.ascontiguousarray(z, dtype=dtype)
        if z.ndim != 2 or z.shape[1] != nz + codes:
            raise ValueError(f"z must have shape (n, {nz + codes}), got {z.shape}")
    was = G.training
    G.eval()
    try:
        out = [G(z[i:i + batch_size]) for i in range(0, len(z), batch_size)]
    finally:
        G.train(was)
    return np.concatenate(out)


class _progress:
    """A tqdm bar when tqdm is installed, else a line every few seconds on stderr."""

    def __init__(self, total, desc):
        self.total, self.desc, self.n = total, desc, 0
        self._t0 = self._last = time.perf_counter()
        self._img = 0.0
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)
        except ImportError:
            self.bar = None

    def update(self, k, **stats):
        self.n += k
        if self.bar is not None:
            self.bar.update(k)
            if self.n % 5 == 0 or self.n == self.total:
                self.bar.set_postfix({key: (f"{v:.0f}" if key == "img_s" else f"{v:.3f}") for key, v in stats.items()},
                                     refresh=False)
        else:
            now = time.perf_counter()
            if now - self._last > 5 or self.n == self.total:
                self._last = now
                s = " ".join(f"{key}={v:.3f}" for key, v in stats.items() if key != "img_s")
                print(f"{self.desc}: {self.n}/{self.total} {s}", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
