"""Training loop: ``fit``, ``evaluate`` and ``predict`` in batches, callbacks, ``History``.

::

    from fastcnn.train import fit, evaluate, predict
    hist = fit(model, nn.CrossEntropyLoss(), opt, x_train, y_train, epochs=10, batch_size=64,
               validation_data=(x_val, y_val), seed=0, checkpoint="run.npz", resume=True)
    hist["val_accuracy"][-1]; evaluate(model, crit, x_test, y_test); predict(model, x_test)

``fit`` shows a progress bar (tqdm, when installed) with the running loss,
accuracy and images per second. With ``checkpoint=path`` it saves the whole
training state after every epoch; ``resume=True`` continues from that file,
bit for bit as if the run had never stopped.
"""
import math
import os
import sys
import threading
import time
import weakref

import numpy as np

from . import checkpoint as _ckpt

__all__ = ["fit", "evaluate", "predict", "History", "Callback", "EarlyStopping", "LambdaCallback"]


class History(dict):
    """Per-epoch metrics: ``{"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...], "lr": [...]}``.

    A dict of lists (one entry per epoch; ``hist.epoch`` lists the epoch
    indices). ``hist.history`` is the dict itself, as in Keras.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch = []

    @property
    def history(self):
        return self

    def append(self, epoch, logs):
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.setdefault(k, []).append(v)

    def __repr__(self):
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.items() if v and isinstance(v[-1], float))
        return f"History(epochs={len(self.epoch)}{', ' + last if last else ''})"


class Callback:
    """Base class of ``fit`` callbacks; override the hooks you need.

    ``self.model``, ``self.optimizer`` and ``self.history`` are set before
    training starts. Set ``self.stop_training = True`` to end training after
    the current epoch.
    """

    stop_training = False

    def set_context(self, model, optimizer, history):
        self.model, self.optimizer, self.history = model, optimizer, history

    def on_train_begin(self, logs):
        pass

    def on_epoch_begin(self, epoch, logs):
        pass

    def on_batch_end(self, batch, logs):
        pass

    def on_epoch_end(self, epoch, logs):
        pass

    def on_train_end(self, logs):
        pass


class LambdaCallback(Callback):
    """A callback from plain functions, e.g. ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, on_train_begin=None, on_epoch_begin=None, on_batch_end=None, on_epoch_end=None,
                 on_train_end=None):
        for name, fn in list(locals().items()):
            if name != "self" and fn is not None:
                if not callable(fn):
                    raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
                setattr(self, name, fn)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    ``mode`` is ``"min"``, ``"max"`` or ``"auto"`` (max for accuracies). With
    ``restore_best_weights``, the model gets the weights of the best epoch back
    when training stops.
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best_weights=False):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, abs(float(min_delta))
        self.mode = ("max" if "acc" in monitor else "min") if mode == "auto" else mode
        self.restore_best_weights = restore_best_weights
        self.best, self.wait, self.best_weights, self.stopped_epoch = None, 0, None, None

    def on_epoch_end(self, epoch, logs):
        value = logs.get(self.monitor)
        if value is None:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which fit does not report; "
                             f"available: {sorted(logs)}")
        better = (self.best is None or (value < self.best - self.min_delta if self.mode == "min"
                                        else value > self.best + self.min_delta))
        if better:
            self.best, self.wait = value, 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stop_training = True
            self.stopped_epoch = epoch
            if self.restore_best_weights and self.best_weights is not None:
                self.model.load_state_dict(self.best_weights)


# --- per-model locks for predict ---------------------------------------------------------------------

_LOCKS = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _model_lock(model):
    """One re-entrant lock per model object: modules keep per-call state between forward and backward."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


class _mode:
    """Set a model's training mode for a block and restore it afterwards (no-op if already set)."""

    def __init__(self, model, training):
        self.model, self.training = model, training

    def __enter__(self):
        self.previous = getattr(self.model, "training", self.training)
        if self.previous != self.training:
            self.model.train(self.training)

    def __exit__(self, *exc):
        if self.previous != self.training:
            self.model.train(self.previous)


# --- helpers -------------------------------------------------------------------------------------------

def _check_xy(x, y, name="x"):
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{name} must have a leading batch dimension and at least one feature "
                         f"dimension, got shape {x.shape}")
    if y is not None:
        y = np.asarray(y)
        if y.ndim < 1 or len(y) != len(x):
            raise ValueError(f"targets must have one entry per sample: {name} has {len(x)} samples, "
                             f"the targets have shape {y.shape}")
    return x, y


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)


def _correct(out, y, loss):
    """Number of correct predictions in a batch, or None when accuracy does not apply."""
    if y.dtype.kind in "iu" and out.ndim == 2 and out.shape[1] > 1 and y.ndim == 1:
        return int(np.count_nonzero(out.argmax(axis=1) == y))
    if type(loss).__name__ == "BCEWithLogitsLoss" and out.size == y.size:
        return int(np.count_nonzero((out.reshape(-1) > 0) == (y.reshape(-1) > 0.5)))
    return None


def _backward(model, grad):
    """``model.backward(grad)`` without the gradient with respect to the input when supported."""
    try:
        from .nn.module import backward_without_input_grad
    except ImportError:  # pragma: no cover
        return model.backward(grad)
    return backward_without_input_grad(model, grad)


def _reduction_weight(loss, n):
    return 1 if getattr(loss, "reduction", "mean") == "sum" else n


def _callbacks(callbacks):
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or callable(callbacks) and not isinstance(callbacks, (list, tuple)):
        callbacks = [callbacks]
    out = []
    for cb in callbacks:
        if isinstance(cb, Callback):
            out.append(cb)
        elif callable(cb):
            out.append(LambdaCallback(on_epoch_end=cb))
        else:
            raise TypeError(f"callbacks must be Callback objects or functions (epoch, logs), "
                            f"got {type(cb).__name__}")
    return out


def _progress_bar(enabled, total, desc):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="img", unit_scale=False, leave=True, dynamic_ncols=True,
                mininterval=0.2, file=sys.stderr)


def _fmt(logs):
    return {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in logs.items() if k != "lr"}


# --- evaluate / predict ------------------------------------------------------------------------------

def predict(model, x, batch_size=256):
    """``model(x)`` in eval mode, batch by batch, returned as one array.

    Thread-safe: several threads may call ``predict`` on the same model at
    once. Modules keep per-call state between forward and backward, so calls
    on one model are serialised by a per-model lock (different models run in
    parallel; the kernels release the GIL). A model in training mode is put
    in eval mode for the call and restored afterwards.
    """
    x, _ = _check_xy(x, None)
    batch_size = _check_batch_size(batch_size)
    n = len(x)
    if n == 0:
        raise ValueError("x has no samples")
    out = None
    with _model_lock(model), _mode(model, False):
        for i in range(0, n, batch_size):
            yb = model(x[i:i + batch_size])
            if out is None:
                out = np.empty((n,) + yb.shape[1:], dtype=yb.dtype)
            out[i:i + len(yb)] = yb
    return out


def evaluate(model, loss, x, y, batch_size=256):
    """Mean loss (and accuracy for classification) over ``(x, y)`` in eval mode: ``{"loss": ..., "accuracy": ...}``."""
    x, y = _check_xy(x, y)
    batch_size = _check_batch_size(batch_size)
    n = len(x)
    if n == 0:
        raise ValueError("x has no samples")
    total, correct = 0.0, 0
    has_acc = True
    with _model_lock(model), _mode(model, False):
        for i in range(0, n, batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            out = model(xb)
            total += float(loss(out, yb)) * _reduction_weight(loss, len(xb))
            c = _correct(out, yb, loss)
            has_acc = has_acc and c is not None
            correct += c or 0
    logs = {"loss": total / n}
    if has_acc:
        logs["accuracy"] = correct / n
    return logs


# --- fit -------------------------------------------------------------------------------------------------

def _json_history(history):
    return {"epoch": list(history.epoch), "metrics": {k: list(v) for k, v in history.items()}}


def fit(model, loss, optimizer, x, y, epochs=1, batch_size=32, validation_data=None, shuffle=True, seed=None,
        callbacks=None, progress=True, scheduler=None, checkpoint=None, resume=False, distributed=None):
    """Train ``model`` on ``(x, y)`` for ``epochs`` epochs; return a :class:`History`.

    Each step: ``out = model(xb)``, ``loss(out, yb)``, ``optimizer.zero_grad()``,
    ``model.backward(loss.backward())``, ``optimizer.step()``. After each epoch:
    validation on ``validation_data=(x_val, y_val)``, ``scheduler.step()``,
    callbacks, and, with ``checkpoint=path``, an atomic save of the model,
    optimiser, scheduler, epoch, history and random states.

    ``shuffle`` draws a new order each epoch from ``numpy.random.default_rng(seed)``
    (from fastcnn's global generator when ``seed`` is None). ``resume=True``
    continues from ``checkpoint`` when that file exists (``resume`` may also be
    the path of another checkpoint); ``epochs`` is the total number of epochs,
    so an interrupted ``fit(..., epochs=10, checkpoint=p, resume=True)`` simply
    runs again with the same arguments and finishes bit for bit like an
    uninterrupted run.

    ``distributed`` (None: detect an ``mpirun`` launch; True; False) trains
    data-parallel over MPI ranks (:mod:`fastcnn.distributed`): ``batch_size``
    is the global batch, split across ranks; weights and optimiser state start
    from rank 0's; gradients are averaged before each step; metrics are global;
    only rank 0 shows progress and writes the checkpoint (every rank reads it
    on resume, so it must be on a shared file system across machines).
    """
    x, y = _check_xy(x, y)
    batch_size = _check_batch_size(batch_size)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if len(x) == 0:
        raise ValueError("x has no samples")
    for name in ("forward", "backward", "train"):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"model must be a Module (with {name}()), got {type(model).__name__}")
    if not callable(getattr(loss, "backward", None)):
        raise TypeError(f"loss must be a loss module with backward(), got {type(loss).__name__}")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (x_val, y_val)")
        validation_data = _check_xy(*validation_data, name="validation x")
    cbs = _callbacks(callbacks)
    from . import distributed as _dist
    ctx = _dist.context(distributed)
    progress = progress and ctx.is_root

    history = History()
    start_epoch = 0
    rng = np.random.default_rng(seed) if seed is not None else None
    resume_path = checkpoint if resume is True else (resume or None)
    if resume_path is not None and not isinstance(resume_path, (str, os.PathLike)):
        raise TypeError(f"resume must be a bool or a checkpoint path, got {type(resume).__name__}")
    if resume is True and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=path (or give resume=path)")
    if resume_path is not None and os.path.exists(resume_path):
        header = _ckpt.read_header(resume_path)
        saved = (header.get("extra") or {}).get("fit_state")
        if not isinstance(saved, dict) or header.get("epoch") is None:
            raise ValueError(f"{resume_path}: not a checkpoint written by fit (no training state)")
        if rng is None and saved.get("seeded"):
            raise ValueError(f"{resume_path}: the run was seeded; pass the same seed to resume it")
        extra = _ckpt.load(model, resume_path, optimizer, scheduler=scheduler, rng=rng)
        start_epoch = int(extra["epoch"])
        history.epoch.extend(saved["history"]["epoch"])
        for k, v in saved["history"]["metrics"].items():
            history[k] = list(v)
    if rng is None:
        from ._random import default_generator
        rng = default_generator()  # after a resume: the restored global generator
    ctx.broadcast_model(model, optimizer)  # every rank starts from rank 0's state

    for cb in cbs:
        cb.set_context(model, optimizer, history)
        cb.on_train_begin({})
    batch_hooks = [cb for cb in cbs if type(cb).on_batch_end is not Callback.on_batch_end
                   or "on_batch_end" in vars(cb)]
    n = len(x)
    n_batches = -(-n // batch_size)
    try:
        for epoch in range(start_epoch, epochs):
            for cb in cbs:
                cb.on_epoch_begin(epoch, {})
            order = rng.permutation(n) if shuffle else None
            if ctx and order is not None:
                order = ctx.broadcast_object(order)
            bar = _progress_bar(progress, n, f"Epoch {epoch + 1}/{epochs}")
            total, correct, seen, has_acc = 0.0, 0, 0, True
            t0 = time.perf_counter()
            model.train()
            for b in range(n_batches):
                if ctx:  # this rank's part of the global batch
                    gidx = order[b * batch_size:(b + 1) * batch_size] if order is not None else \
                        np.arange(b * batch_size, min(n, (b + 1) * batch_size))
                    if len(gidx) < ctx.world_size:
                        continue  # fewer samples than ranks: skipped on every rank
                    idx = ctx.shard(gidx)
                    xb, yb = x[idx], y[idx]
                elif order is None:
                    xb, yb = x[b * batch_size:(b + 1) * batch_size], y[b * batch_size:(b + 1) * batch_size]
                else:
                    idx = order[b * batch_size:(b + 1) * batch_size]
                    xb, yb = x[idx], y[idx]
                out = model(xb)
                lval = float(loss(out, yb))
                optimizer.zero_grad()
                _backward(model, loss.backward())
                ctx.sync_grads(model, reduction="sum" if getattr(loss, "reduction", "mean") == "sum" else "mean")
                optimizer.step()
                m = len(xb)
                seen += m
                total += lval * _reduction_weight(loss, m)
                c = _correct(out, yb, loss)
                has_acc = has_acc and c is not None
                correct += c or 0
                if not math.isfinite(lval):
                    raise FloatingPointError(f"loss became {lval} at epoch {epoch + 1}, batch {b + 1}")
                if batch_hooks:
                    blogs = {"loss": lval, "size": m}
                    for cb in batch_hooks:
                        cb.on_batch_end(b, blogs)
                if bar is not None:
                    post = {"loss": f"{total / seen:.4f}"}
                    if has_acc:
                        post["acc"] = f"{correct / seen:.4f}"
                    bar.set_postfix(post, refresh=False)
                    bar.update(ctx.last_shard(m)[0])
            elapsed = time.perf_counter() - t0
            if ctx:
                total, correct = ctx.sum(total), int(ctx.sum(correct))
                ctx.sync_buffers(model)  # per-rank BatchNorm statistics: their mean
            logs = {"loss": total / n}
            if has_acc:
                logs["accuracy"] = correct / n
            if validation_data is not None:
                v = evaluate(model, loss, *validation_data, batch_size=max(batch_size, 256))
                logs.update({"val_" + k: val for k, val in v.items()})
            logs["lr"] = float(optimizer.param_groups[0]["lr"])
            logs["images_per_s"] = n / elapsed if elapsed > 0 else float("inf")
            if scheduler is not None:
                scheduler.step()
            history.append(epoch, logs)
            if bar is not None:
                bar.set_postfix(_fmt({k: v for k, v in logs.items() if k != "images_per_s"}), refresh=False)
                bar.close()
            elif progress:
                print(f"Epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k}={v}" for k, v in _fmt(logs).items()),
                      file=sys.stderr)
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            if checkpoint is not None and ctx.is_root:
                _ckpt.save(model, checkpoint, optimizer, scheduler=scheduler, epoch=epoch + 1, rng=rng,
                           fit_state={"history": _json_history(history), "seeded": seed is not None})
            if any(cb.stop_training for cb in cbs):
                break
    finally:
        for cb in cbs:
            cb.on_train_end({})
    return history
