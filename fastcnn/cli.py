"""The ``fastcnn`` command: train GANs and classifiers, sample, inpaint, benchmark.

::

    fastcnn train-gan                          # bundled digits at 16x16, a few minutes on 2 cores
    fastcnn train-gan --data mnist:~/mnist --image-size 28 --epochs 10 --out runs/mnist
    fastcnn sample --checkpoint runs/gan --n 64 --out samples.png
    fastcnn inpaint --checkpoint runs/gan --test-index 0 --mask center --out inpaint.png
    fastcnn train-classifier --data digits --out runs/classifier
    fastcnn info
    fastcnn bench ...

Bad arguments give a one-line error on stderr and exit status 2.
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

__all__ = ["main"]

DEFAULT_OUT_GAN = "fastcnn-gan"
DEFAULT_OUT_CLASSIFIER = "fastcnn-classifier"


class UsageError(Exception):
    """A problem with the command's arguments or input files (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# --- argument types -------------------------------------------------------------------------------

def _int_at_least(minimum):
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
        return v
    parse.__name__ = f"integer >= {minimum}"
    return parse


def _positive_float(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not (v > 0 and np.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s}")
    return v


def _codes_arg(text):
    k = _int_at_least(0)(text)
    if k == 1:
        raise argparse.ArgumentTypeError("must be 0 (no code) or at least 2")
    return k


def _float_range(lo, hi, hi_open=True):
    def parse(s):
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
        if not (lo <= v and (v < hi if hi_open else v <= hi)):
            raise argparse.ArgumentTypeError(f"must be in [{lo}, {hi}{')' if hi_open else ']'}, got {s}")
        return v
    return parse


def _data_spec(s):
    """``digits``, ``mnist:DIR`` or ``fashion-mnist:DIR`` -> (kind, directory or None)."""
    if s == "digits":
        return ("digits", None)
    kind, sep, directory = s.partition(":")
    if kind in ("mnist", "fashion-mnist"):
        if not sep or not directory:
            raise argparse.ArgumentTypeError(f"{kind} needs a directory: {kind}:DIR")
        directory = os.path.expanduser(directory)
        if not os.path.isdir(directory):
            raise argparse.ArgumentTypeError(f"no such directory: {directory}")
        return (kind, os.path.abspath(directory))
    raise argparse.ArgumentTypeError(f"unknown dataset {s!r} (expected digits, mnist:DIR or fashion-mnist:DIR)")


def _mask_spec(s):
    if s == "center":
        return ("center",)
    if s.startswith("box:"):
        parts = s[4:].split(",")
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            vals = []
        if len(vals) != 4 or vals[0] < 0 or vals[1] < 0 or vals[2] < 1 or vals[3] < 1:
            raise argparse.ArgumentTypeError(f"box mask must be box:x,y,w,h with x, y >= 0 and w, h >= 1, got {s!r}")
        return ("box", *vals)
    raise argparse.ArgumentTypeError(f"unknown mask {s!r} (expected center or box:x,y,w,h)")


def _spec_name(spec):
    return spec[0] if spec[1] is None else f"{spec[0]}:{spec[1]}"


# --- datasets and the cached classifier ------------------------------------------------------------

def _load_dataset(spec, image_size):
    """Train and test images (float32 in [0, 1], (N, 1, S, S)) and int64 labels."""
    from . import data
    kind, directory = spec
    if kind == "digits":
        x, y = data.load_digits()
        x_tr, x_te, y_tr, y_te = data.train_test_split(x, y, test_size=0.2, seed=0, stratify=True)
    else:
        try:
            x_tr, y_tr = data.load_mnist(directory, "train")
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(f"cannot read {kind} from {directory}: {e}") from None
        try:
            x_te, y_te = data.load_mnist(directory, "t10k")
        except (FileNotFoundError, ValueError):
            x_tr, x_te, y_tr, y_te = data.train_test_split(x_tr, y_tr, test_size=0.1, seed=0)
    if x_tr.shape[-1] != image_size or x_tr.shape[-2] != image_size:
        x_tr = np.clip(data.resize(x_tr, image_size), 0, 1)
        x_te = np.clip(data.resize(x_te, image_size), 0, 1)
    return (np.ascontiguousarray(x_tr, dtype=np.float32), np.asarray(y_tr, dtype=np.int64),
            np.ascontiguousarray(x_te, dtype=np.float32), np.asarray(y_te, dtype=np.int64))


def _default_image_size(spec):
    return 16 if spec[0] == "digits" else 28


def build_classifier(image_size, channels=1, n_classes=10, seed=0):
    """A small CNN for the FID features: two conv-ReLU-pool stages, Linear(…, 128)-ReLU, Linear(128, classes)."""
    from . import nn
    from ._random import manual_seed  # noqa: F401
    gen = np.random.default_rng(seed)
    s = image_size // 4
    layers = [nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
              nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
              nn.Flatten(), nn.Linear(64 * s * s, 128), nn.ReLU(), nn.Linear(128, n_classes)]
    for m in layers:
        if hasattr(m, "reset_parameters") and hasattr(m, "weight"):
            m.reset_parameters(generator=gen)
    return nn.Sequential(*layers)


def _cache_dir():
    d = os.environ.get("FASTCNN_CACHE")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "fastcnn")
    return d


def _dataset_key(spec, image_size):
    if spec[1] is None:
        return f"{spec[0]}-{image_size}"
    h = hashlib.sha1(spec[1].encode("utf-8")).hexdigest()[:10]
    return f"{spec[0]}-{h}-{image_size}"


def train_classifier(x_tr, y_tr, x_te, y_te, image_size, epochs=12, batch_size=64, lr=1e-3, seed=0,
                     progress=True, schedule="cosine"):
    """Train :func:`build_classifier` with Adam; returns ``(model, test_accuracy)``.

    ``schedule="cosine"`` anneals the learning rate to 0 over the epochs; ``None`` keeps it constant.
    """
    from . import nn, optim
    from .optim.lr_scheduler import CosineAnnealingLR
    from .train import fit, evaluate
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    model = build_classifier(image_size, x_tr.shape[1], n_classes, seed)
    crit = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=lr)
    if schedule not in (None, "cosine"):
        raise ValueError(f"schedule must be None or 'cosine', got {schedule!r}")
    sched = CosineAnnealingLR(opt, T_max=epochs) if schedule == "cosine" else None
    fit(model, crit, opt, x_tr, y_tr, epochs=epochs, batch_size=batch_size, seed=seed, progress=progress,
        scheduler=sched)
    acc = evaluate(model, crit, x_te, y_te)["accuracy"]
    return model, float(acc)


def cached_classifier(spec, image_size, x_tr, y_tr, x_te, y_te, epochs=12, seed=0, progress=True, log=print):
    """The dataset's feature classifier: loaded from the cache, or trained and cached."""
    from . import checkpoint
    path = os.path.join(_cache_dir(), f"classifier-{_dataset_key(spec, image_size)}.npz")
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    config = {"kind": "fastcnn-classifier", "image_size": image_size, "channels": int(x_tr.shape[1]),
              "n_classes": n_classes, "data": _spec_name(spec), "epochs": epochs, "seed": seed,
              "schedule": "cosine"}
    if os.path.isfile(path):
        try:
            header = checkpoint.read_header(path)
            if header.get("config") == config:
                model = build_classifier(image_size, config["channels"], n_classes, seed)
                extra = checkpoint.load(model, path, restore_rng=False)
                model.eval()
                return model, float(extra.get("test_accuracy", float("nan"))), path, True
        except (ValueError, OSError):
            pass  # stale or damaged cache entry: train again
    log(f"training the feature classifier for {_spec_name(spec)} at {image_size}x{image_size} "
        f"({epochs} epochs; cached at {path}) ...")
    model, acc = train_classifier(x_tr, y_tr, x_te, y_te, image_size, epochs=epochs, seed=seed, progress=progress)
    model.eval()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        checkpoint.save(model, path, config=config, test_accuracy=acc)
    except OSError as e:
        log(f"warning: could not cache the classifier at {path}: {e}")
    return model, acc, path, False


def _softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def recognition(classifier, images01, threshold=0.9, logits=None):
    """(fraction of images classified with confidence >= threshold, sorted classes among them, counts).

    ``logits``: the classifier's outputs for ``images01`` when already known (then it is not run again).
    """
    from .train import predict
    if logits is None:
        logits = predict(classifier, images01)
    p = _softmax(np.asarray(logits, dtype=np.float64))
    conf, lab = p.max(axis=1), p.argmax(axis=1)
    ok = conf >= threshold
    classes = sorted(int(c) for c in np.unique(lab[ok]))
    counts = np.bincount(lab[ok], minlength=p.shape[1]).tolist()
    return float(ok.mean()), classes, counts


def _logits_from_features(classifier, feats):
    """The classifier's outputs from its penultimate-layer features (its last layer only), else None."""
    from . import nn
    last = list(classifier)[-1] if isinstance(classifier, nn.Sequential) else None
    if not isinstance(last, nn.Linear):
        return None
    was = last.training
    last.eval()
    try:
        return last(np.ascontiguousarray(feats, dtype=last.weight.data.dtype))
    finally:
        last.train(was)


# --- GAN construction from a config --------------------------------------------------------------

def _build_gan(cfg):
    from .gan import dcgan_discriminator, dcgan_generator
    codes = cfg.get("codes", 0)
    G = dcgan_generator(nz=cfg["nz"] + codes, image_size=cfg["image_size"], channels=cfg["channels"],
                        ngf=cfg["ngf"], seed=cfg["seed"])
    D = dcgan_discriminator(image_size=cfg["image_size"], channels=cfg["channels"], ndf=cfg["ndf"],
                            seed=cfg["seed"] + 1, codes=codes)
    return G, D


def _checkpoint_file(path):
    path = os.path.expanduser(path)
    f = path if path.endswith(".npz") else os.path.join(path, "checkpoint", "gan.npz")
    if not os.path.isfile(f) and not path.endswith(".npz") and os.path.isfile(os.path.join(path, "gan.npz")):
        f = os.path.join(path, "gan.npz")
    return f


def _load_gan(path):
    """(G, D, config) from a train-gan output directory or checkpoint file (G: the averaged one when kept)."""
    from . import checkpoint
    from .gan import _Pair
    f = _checkpoint_file(path)
    if not os.path.isfile(f):
        raise UsageError(f"no GAN checkpoint at {f} (give a train-gan --out directory or a .npz file)")
    try:
        cfg = checkpoint.read_header(f).get("config") or {}
    except ValueError as e:
        raise UsageError(str(e)) from None
    if cfg.get("kind") != "fastcnn-gan":
        raise UsageError(f"{f} is not a fastcnn GAN checkpoint")
    G, D = _build_gan(cfg)
    G_ema = _build_gan(cfg)[0] if cfg.get("ema") else None
    try:
        checkpoint.load(_Pair(G, D, G_ema), f, restore_rng=False)
    except ValueError as e:
        raise UsageError(str(e)) from None
    G = G_ema if G_ema is not None else G
    G.eval()
    D.eval()
    return G, D, cfg


# --- train-gan -------------------------------------------------------------------------------------

GAN_DEFAULTS = {
    # the no-argument run: bundled digits at 16x16, a few minutes on 2 cores
    "digits": dict(image_size=16, epochs=160, batch_size=32, lr=2e-4, lr_d=None, nz=32, ngf=32, ndf=32,
                   label_smoothing=0.0, ema=0.999, translate=1, lr_decay=0.0, codes=10, code_weight=2.0),
    "mnist": dict(image_size=28, epochs=10, batch_size=64, lr=2e-4, lr_d=None, nz=100, ngf=64, ndf=64,
                  label_smoothing=0.0, ema=0.999, translate=0, lr_decay=0.0, codes=10, code_weight=2.0),
}


def _add_train_gan(sub):
    p = sub.add_parser("train-gan", help="train a DCGAN (default: the bundled digits, 16x16, a few minutes)",
                       description="Train a DCGAN and write sample grids, losses, FID per epoch and checkpoints.")
    p.add_argument("--data", type=_data_spec, default=("digits", None),
                   help="digits (bundled, default), mnist:DIR or fashion-mnist:DIR (IDX files)")
    p.add_argument("--image-size", type=int, choices=(16, 28, 32, 64), default=None,
                   help="image size (default 16 for digits, 28 for MNIST)")
    p.add_argument("--epochs", type=_int_at_least(1), default=None)
    p.add_argument("--batch-size", type=_int_at_least(1), default=None)
    p.add_argument("--lr", type=_positive_float, default=None)
    p.add_argument("--lr-d", type=_positive_float, default=None,
                   help="discriminator learning rate (default: --lr)")
    p.add_argument("--nz", type=_int_at_least(1), default=None, help="latent size")
    p.add_argument("--ngf", type=_int_at_least(1), default=None, help="generator width")
    p.add_argument("--ndf", type=_int_at_least(1), default=None, help="discriminator width")
    p.add_argument("--label-smoothing", type=_float_range(0.0, 1.0), default=None,
                   help="one-sided label smoothing of the real targets")
    p.add_argument("--ema", type=_float_range(0.0, 1.0), default=None,
                   help="decay of the generator's weight average used for samples (0 = off)")
    p.add_argument("--translate", type=_int_at_least(0), default=None,
                   help="differentiable augmentation: move every image the discriminator sees by up to this "
                        "many pixels (default 1 for digits, 0 otherwise)")
    p.add_argument("--lr-decay", type=_float_range(0.0, 1.0, hi_open=False), default=None,
                   help="lower both learning rates linearly to zero over this last fraction of the epochs "
                        "(default 0: constant)")
    p.add_argument("--codes", type=_codes_arg, default=None,
                   help="categorical latent code of this many values, learnt without labels (InfoGAN; "
                        "default 10; 0: none)")
    p.add_argument("--code-weight", type=_float_range(0.0, float("inf")), default=None,
                   help="weight of the code's cross-entropy (default 2)")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--threads", type=_int_at_least(1), default=None)
    p.add_argument("--out", default=DEFAULT_OUT_GAN, help=f"output directory (default ./{DEFAULT_OUT_GAN})")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--fid-samples", type=_int_at_least(16), default=1000,
                   help="generated images per FID evaluation (default 1000)")
    p.add_argument("--fid-every", type=_int_at_least(1), default=1, help="evaluate FID every N epochs")
    p.add_argument("--classifier-epochs", type=_int_at_least(1), default=60,
                   help="epochs of the feature classifier (trained once per dataset and cached)")
    p.add_argument("--max-train", type=_int_at_least(1), default=None,
                   help="use at most this many training images")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=cmd_train_gan)


def _gan_config(args):
    spec = args.data
    d = GAN_DEFAULTS["digits" if spec[0] == "digits" else "mnist"]
    image_size = args.image_size or (d["image_size"] if spec[0] == "digits" else 28)
    val = lambda k: getattr(args, k) if getattr(args, k) is not None else d[k]  # noqa: E731
    return {"kind": "fastcnn-gan", "data": _spec_name(spec), "image_size": image_size, "channels": 1,
            "nz": val("nz"), "ngf": val("ngf"), "ndf": val("ndf"), "lr": val("lr"), "lr_d": val("lr_d"),
            "batch_size": val("batch_size"), "epochs": val("epochs"), "label_smoothing": val("label_smoothing"),
            "seed": args.seed, "max_train": args.max_train, "classifier_epochs": args.classifier_epochs,
            "ema": val("ema"), "translate": val("translate"), "lr_decay": val("lr_decay"),
            "codes": val("codes"), "code_weight": val("code_weight")}


def _spec_from_name(name):
    if name == "digits":
        return ("digits", None)
    kind, _, directory = name.partition(":")
    if not os.path.isdir(directory):
        raise UsageError(f"the checkpoint's dataset directory {directory} does not exist")
    return (kind, directory)


def cmd_train_gan(args, out=None):
    out = sys.stdout if out is None else out
    from . import utils
    from .checkpoint import read_header
    from .gan import GANTrainer, TrainingInterrupted
    from .metrics import compute_features, fid

    def say(*a):
        if root:
            print(*a, file=out, flush=True)

    if args.threads:
        import fastcnn
        fastcnn.set_num_threads(args.threads)
    from . import distributed
    root = distributed.context(None).is_root  # under mpirun: every rank trains, rank 0 reports and writes
    out_dir = os.path.expanduser(args.out)
    ckpt_dir = os.path.join(out_dir, "checkpoint")
    ckpt_file = os.path.join(ckpt_dir, "gan.npz")
    cfg = _gan_config(args)
    if args.resume:
        if not os.path.isfile(ckpt_file):
            raise UsageError(f"--resume: no checkpoint at {ckpt_file}")
        try:
            saved = read_header(ckpt_file).get("config") or {}
        except ValueError as e:
            raise UsageError(str(e)) from None
        if saved.get("kind") != "fastcnn-gan":
            raise UsageError(f"--resume: {ckpt_file} is not a GAN checkpoint")
        epochs = args.epochs if args.epochs is not None else saved["epochs"]
        cfg = dict(saved)
        cfg["epochs"] = epochs
    spec = _spec_from_name(cfg["data"]) if args.resume else args.data
    image_size = cfg["image_size"]

    x_tr, y_tr, x_te, y_te = _load_dataset(spec, image_size)
    t_all = time.perf_counter()
    progress = not args.quiet
    clf_epochs = cfg.get("classifier_epochs", args.classifier_epochs)
    classifier, clf_acc, clf_path, cached = cached_classifier(
        spec, image_size, x_tr, y_tr, x_te, y_te, epochs=clf_epochs, seed=0, progress=progress, log=say)
    if cfg.get("max_train"):
        x_tr, y_tr = x_tr[:cfg["max_train"]], y_tr[:cfg["max_train"]]
    if cfg["batch_size"] > len(x_tr):
        raise UsageError(f"--batch-size {cfg['batch_size']} exceeds the {len(x_tr)} training images")
    clf_conf, _, _ = recognition(classifier, x_te)
    say(f"feature classifier: test accuracy {clf_acc:.3f}, {clf_conf:.1%} of real test digits recognised with "
        f"confidence >= 0.9 ({'cached' if cached else 'trained'}; {clf_path})")

    os.makedirs(out_dir, exist_ok=True)
    G, D = _build_gan(cfg)
    trainer = GANTrainer(G, D, cfg["nz"], lr=cfg["lr"], lr_d=cfg.get("lr_d"), seed=cfg["seed"],
                         label_smoothing=cfg["label_smoothing"], config=cfg, ema_decay=cfg.get("ema") or None,
                         translate=cfg.get("translate", 0), lr_decay=cfg.get("lr_decay", 0.0),
                         codes=cfg.get("codes", 0), code_weight=cfg.get("code_weight", 1.0))
    if args.resume:
        try:
            trainer.load(ckpt_file)
        except ValueError as e:
            raise UsageError(str(e)) from None
        say(f"resuming from {ckpt_file} at epoch {trainer.epoch}, step {trainer.steps}")
    if root:
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)

    real = x_tr * 2 - 1
    real_feat = compute_features(classifier, x_tr)
    test_feat = compute_features(classifier, x_te)    # held-out images: the generator never saw them
    n_fid = args.fid_samples
    fixed_seed = 12345
    samples_dir = os.path.join(out_dir, "samples")

    def evaluate_gan(epoch):
        imgs = trainer.sample(n_fid, seed=fixed_seed)
        imgs01 = (imgs + 1) / 2
        feats = compute_features(classifier, imgs01)
        f = fid(feats, real_feat)
        frac, classes, _ = recognition(classifier, imgs01, logits=_logits_from_features(classifier, feats))
        row = {"epoch": epoch, "fid": f, "fid_test": fid(feats, test_feat), "recognised": frac,
               "classes": len(classes),
               "time_s": round(trainer.train_time, 3)}
        trainer.log["fid"] = [r for r in trainer.log.get("fid", []) if r["epoch"] < epoch] + [row]
        utils.write_csv(trainer.log["fid"], os.path.join(out_dir, "fid.csv"))
        return row, imgs

    if root and ("fid" not in trainer.log or not trainer.log["fid"]):
        row0, imgs0 = evaluate_gan(0)
        utils.save_grid(imgs0[:64], os.path.join(samples_dir, "epoch_000.png"), nrow=8, scale=2)
        say(f"epoch 0: FID {row0['fid']:.2f} (untrained generator)")

    total = cfg["epochs"]

    def on_epoch(tr, epoch, stats):
        if not root:
            return
        grid = tr.sample(64, seed=fixed_seed)
        utils.save_grid(grid, os.path.join(samples_dir, f"epoch_{epoch:03d}.png"), nrow=8, scale=2)
        msg = (f"epoch {epoch}/{total}: d_loss {stats.get('d_loss', float('nan')):.3f} "
               f"g_loss {stats.get('g_loss', float('nan')):.3f} D(x) {stats.get('d_real', float('nan')):.2f} "
               f"D(G(z)) {stats.get('d_fake', float('nan')):.2f}")
        if "code_loss" in stats:
            msg += f" code_loss {stats['code_loss']:.3f}"
        if epoch % args.fid_every == 0 or epoch == total:
            row, _ = evaluate_gan(epoch)
            msg += f"  FID {row['fid']:.2f}  recognised {row['recognised']:.0%}  classes {row['classes']}"
        if not args.quiet:
            say(msg)

    try:
        trainer.fit(real, epochs=total, batch_size=cfg["batch_size"], progress=progress, callback=on_epoch,
                    checkpoint_dir=ckpt_dir)
    except TrainingInterrupted as e:
        if not root:
            return 130
        utils.write_csv(trainer.history, os.path.join(out_dir, "losses.csv"))
        say(f"\ninterrupted at epoch {trainer.epoch + 1}, step {trainer.steps}; checkpoint saved to {e.checkpoint}")
        say(f"continue with: fastcnn train-gan --out {args.out} --resume")
        return 130

    if not root:
        return 0
    final = trainer.sample(64, seed=fixed_seed)
    utils.save_grid(final, os.path.join(out_dir, "samples.png"), nrow=8, scale=2)
    if trainer.codes:   # one row per value of the latent code, the same noise down each column
        by_code = np.concatenate([trainer.sample(10, seed=fixed_seed, code=c) for c in range(trainer.codes)])
        utils.save_grid(by_code, os.path.join(out_dir, "samples_by_code.png"), nrow=10, scale=2)
    utils.write_csv(trainer.history, os.path.join(out_dir, "losses.csv"))
    plot_path, note = utils.plot_losses(trainer.history, os.path.join(out_dir, "losses.png"))
    fids = trainer.log["fid"]
    first, last = fids[0], fids[-1]
    if last["epoch"] != trainer.epoch:
        last, _ = evaluate_gan(trainer.epoch)
    wall = time.perf_counter() - t_all
    ips = trainer.images_seen / trainer.train_time if trainer.train_time > 0 else float("nan")
    summary = {
        "epochs": trainer.epoch, "steps": trainer.steps, "train_time_s": trainer.train_time,
        "wall_time_s_this_run": wall, "images_per_s": ips, "fid_initial": first["fid"], "fid_final": last["fid"],
        "fid_ratio": last["fid"] / first["fid"] if first["fid"] > 0 else float("nan"),
        "fid_test_initial": first.get("fid_test"), "fid_test_final": last.get("fid_test"),
        "recognised": last["recognised"], "classes_present": last["classes"],
        "classifier_test_accuracy": clf_acc, "classifier_test_confident": clf_conf,
        "samples": os.path.join(out_dir, "samples.png"),
    }
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    say(f"done: {trainer.epoch} epochs, {trainer.steps} steps in {trainer.train_time:.1f} s of training "
        f"({wall:.1f} s in all this run), {ips:.0f} images/s")
    ft = (f" (against held-out digits {first['fid_test']:.2f} -> {last['fid_test']:.2f})"
          if first.get("fid_test") is not None and last.get("fid_test") is not None else "")
    say(f"FID {first['fid']:.2f} -> {last['fid']:.2f} ({summary['fid_ratio']:.1%} of initial){ft}; "
        f"recognised with confidence >= 0.9: {last['recognised']:.1%}; classes present: {last['classes']}/"
        f"{int(max(y_tr.max(), y_te.max())) + 1}")
    say(f"samples: {summary['samples']}; losses: {os.path.join(out_dir, 'losses.csv')}"
        + (f", plot {plot_path}" if note is None else f" ({note})"))
    return 0


# --- train-classifier ----------------------------------------------------------------------------

def _add_train_classifier(sub):
    p = sub.add_parser("train-classifier", help="train the CNN classifier used for FID and report its accuracy",
                       description="Train a small CNN classifier; print accuracy, per-class precision/recall/F1 "
                                   "and write a confusion-matrix image.")
    p.add_argument("--data", type=_data_spec, default=("digits", None))
    p.add_argument("--image-size", type=int, choices=(8, 16, 28, 32, 64), default=None)
    p.add_argument("--epochs", type=_int_at_least(1), default=12)
    p.add_argument("--batch-size", type=_int_at_least(1), default=64)
    p.add_argument("--lr", type=_positive_float, default=1e-3)
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--threads", type=_int_at_least(1), default=None)
    p.add_argument("--out", default=DEFAULT_OUT_CLASSIFIER)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train_classifier)


def confusion_image(cm, cell=24):
    """A uint8 RGB heat map of a confusion matrix (rows: true class, columns: predicted)."""
    cm = np.asarray(cm, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    v = (255 * (1 - norm)).astype(np.uint8)
    img = np.stack([v, v, np.full_like(v, 255)], axis=-1)
    return img.repeat(cell, axis=0).repeat(cell, axis=1)


def cmd_train_classifier(args, out=None):
    out = sys.stdout if out is None else out
    from . import checkpoint, utils
    from .metrics import classification_report, confusion_matrix
    from .train import predict

    if args.threads:
        import fastcnn
        fastcnn.set_num_threads(args.threads)
    spec = args.data
    image_size = args.image_size or _default_image_size(spec)
    x_tr, y_tr, x_te, y_te = _load_dataset(spec, image_size)
    if image_size % 4:
        raise UsageError(f"--image-size must be a multiple of 4, got {image_size}")
    t0 = time.perf_counter()
    model, acc = train_classifier(x_tr, y_tr, x_te, y_te, image_size, epochs=args.epochs,
                                  batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=not args.quiet)
    dt = time.perf_counter() - t0
    pred = predict(model, x_te).argmax(axis=1)
    out_dir = os.path.expanduser(args.out)
    os.makedirs(out_dir, exist_ok=True)
    cm = confusion_matrix(y_te, pred)
    utils.save_image(confusion_image(cm), os.path.join(out_dir, "confusion.png"))
    np.savetxt(os.path.join(out_dir, "confusion.csv"), cm, fmt="%d", delimiter=",")
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    checkpoint.save(model, os.path.join(out_dir, "classifier.npz"),
                    config={"kind": "fastcnn-classifier", "image_size": image_size, "channels": 1,
                            "n_classes": n_classes, "data": _spec_name(spec), "epochs": args.epochs,
                            "seed": args.seed},
                    test_accuracy=acc)
    print(f"trained in {dt:.1f} s ({args.epochs * len(x_tr) / dt:.0f} images/s); "
          f"test accuracy {acc:.4f} on {len(x_te)} images", file=out)
    print(classification_report(y_te, pred, digits=3), file=out)
    print(f"confusion matrix: {os.path.join(out_dir, 'confusion.png')} (csv alongside); "
          f"model: {os.path.join(out_dir, 'classifier.npz')}", file=out)
    return 0


# --- sample ------------------------------------------------------------------------------------------

def _add_sample(sub):
    p = sub.add_parser("sample", help="draw images from a trained GAN",
                       description="Draw a grid of images (or latent interpolations) from a train-gan checkpoint.")
    p.add_argument("--checkpoint", required=True, help="a train-gan --out directory or its checkpoint .npz")
    p.add_argument("--n", type=_int_at_least(1), default=64, help="number of images (rows with --interpolate)")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--interpolate", action="store_true", help="rows of slerp interpolations between random pairs")
    p.add_argument("--steps", type=_int_at_least(2), default=10, help="images per interpolation row")
    p.add_argument("--code", type=_int_at_least(0), default=None,
                   help="the latent code of every image (GANs trained with --codes; default: drawn at random)")
    p.add_argument("--scale", type=_int_at_least(1), default=2, help="enlarge each image this many times")
    p.add_argument("--out", required=True, help="output image (PNG)")
    p.set_defaults(func=cmd_sample)


def cmd_sample(args, out=None):
    out = sys.stdout if out is None else out
    from . import utils
    from .edit import interpolate
    from .gan import latents, sample
    G, _, cfg = _load_gan(args.checkpoint)
    codes = cfg.get("codes", 0)
    if args.code is not None and args.code >= codes:
        raise UsageError(f"--code {args.code}: the GAN has " + (f"codes 0 to {codes - 1}" if codes else "no codes"))
    if args.interpolate:
        ends = latents(2 * args.n, cfg["nz"], seed=args.seed, codes=codes, code=args.code)
        rows = [interpolate(G, ends[2 * i], ends[2 * i + 1], args.steps) for i in range(args.n)]
        utils.save_grid(np.concatenate(rows), args.out, nrow=args.steps, scale=args.scale)
        print(f"wrote {args.n} interpolations of {args.steps} steps to {args.out}", file=out)
    else:
        imgs = sample(G, args.n, cfg["nz"], seed=args.seed, codes=codes, code=args.code)
        utils.save_grid(imgs, args.out, nrow=int(np.ceil(np.sqrt(args.n))), scale=args.scale)
        print(f"wrote {args.n} samples to {args.out}", file=out)
    return 0


# --- inpaint -----------------------------------------------------------------------------------------

def _add_inpaint(sub):
    p = sub.add_parser("inpaint", help="fill a masked region with a trained GAN (Yeh et al. 2017)",
                       description="Semantic inpainting by latent optimisation. Writes a strip: original, "
                                   "masked, inpainted (and mean-image fill for reference).")
    p.add_argument("--checkpoint", required=True, help="a train-gan --out directory or its checkpoint .npz")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", help="an image file (converted to grey and resized to the GAN's size)")
    src.add_argument("--test-index", type=_int_at_least(0), default=None,
                     help="first held-out test image of the GAN's dataset (default 0)")
    p.add_argument("--count", type=_int_at_least(1), default=8, help="number of test images from --test-index")
    p.add_argument("--mask", type=_mask_spec, default=("center",), help="center (default) or box:x,y,w,h")
    p.add_argument("--steps", type=_int_at_least(1), default=400)
    p.add_argument("--lr", type=_positive_float, default=0.05)
    p.add_argument("--restarts", type=_int_at_least(1), default=4)
    p.add_argument("--prior-weight", type=_float_range(0.0, float("inf")), default=0.003)
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--scale", type=_int_at_least(1), default=3)
    p.add_argument("--out", required=True, help="output image (PNG)")
    p.set_defaults(func=cmd_inpaint)


def cmd_inpaint(args, out=None):
    out = sys.stdout if out is None else out
    from . import utils
    from .edit import box_mask, center_mask, inpaint
    G, D, cfg = _load_gan(args.checkpoint)
    size = cfg["image_size"]
    mean_fill = None
    if args.image is not None:
        if not os.path.isfile(args.image):
            raise UsageError(f"no such image file: {args.image}")
        try:
            x01 = utils.load_image(args.image, size=size)
        except Exception as e:  # Pillow's errors for unreadable files vary
            raise UsageError(f"cannot read image {args.image}: {e}") from None
    else:
        spec = _spec_from_name(cfg["data"])
        x_tr, _, x_te, _ = _load_dataset(spec, size)
        start = args.test_index or 0
        if start >= len(x_te):
            raise UsageError(f"--test-index {start} is out of range: the test set has {len(x_te)} images")
        x01 = x_te[start:start + args.count]
        mean_fill = x_tr.mean(axis=0, keepdims=True) * 2 - 1
    if args.mask[0] == "center":
        mask = center_mask(size)
    else:
        _, bx, by, bw, bh = args.mask
        if bx + bw > size or by + bh > size:
            raise UsageError(f"--mask box {bx},{by},{bw},{bh} does not fit in the {size}x{size} image")
        mask = box_mask(size, bx, by, bw, bh)
    x = (x01 * 2 - 1).astype(np.float32)
    t0 = time.perf_counter()
    filled = inpaint(G, x, mask, D=D, steps=args.steps, lr=args.lr, prior_weight=args.prior_weight,
                     seed=args.seed, restarts=args.restarts, codes=cfg.get("codes", 0))
    dt = time.perf_counter() - t0
    m = np.broadcast_to(mask, x.shape)
    hole = m == 0
    masked = np.where(hole, -1.0, x).astype(np.float32)
    rows = [x, masked, filled]
    err = float(np.mean(((filled - x) / 2)[hole] ** 2))
    msg = f"inpainted {len(x)} image(s) in {dt:.1f} s; hole MSE (pixels in [0, 1]) {err:.4f}"
    if mean_fill is not None:
        mf = np.where(hole, np.broadcast_to(mean_fill, x.shape), x).astype(np.float32)
        rows.append(mf)
        err_mean = float(np.mean(((mf - x) / 2)[hole] ** 2))
        msg += f"; mean-image fill {err_mean:.4f}"
    utils.save_strip(rows, args.out, value_range=(-1, 1), scale=args.scale)
    print(msg, file=out)
    print(f"wrote {args.out} (rows: original, masked, inpainted" + (", mean fill)" if mean_fill is not None else ")"),
          file=out)
    return 0


# --- info and bench ----------------------------------------------------------------------------------

def _add_info(sub):
    p = sub.add_parser("info", help="show the build configuration (instruction set, OpenMP, threads)")
    p.set_defaults(func=cmd_info)


def cmd_info(args, out=None):
    out = sys.stdout if out is None else out
    import fastcnn
    fastcnn.show_config(file=out)
    return 0


def _bench(argv):
    try:
        from . import bench
    except ImportError as e:
        print(f"fastcnn bench: error: the benchmark suite is not available ({e})", file=sys.stderr)
        return 2
    rc = bench.main(list(argv))
    return 0 if rc is None else int(rc)


# --- entry point -------------------------------------------------------------------------------------

def make_parser():
    parser = _Parser(prog="fastcnn", description="A fast CPU engine for CNNs and GANs.")
    import fastcnn
    parser.add_argument("--version", action="version", version=f"fastcnn {fastcnn.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train_gan(sub)
    _add_train_classifier(sub)
    _add_sample(sub)
    _add_inpaint(sub)
    _add_info(sub)
    sub.add_parser("bench", help="run the benchmarks (fastcnn bench --help)", add_help=False)
    return parser


def main(argv=None):
    """Run the ``fastcnn`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        return _bench(argv[1:])
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else (0 if e.code is None else 2)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"fastcnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nfastcnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
