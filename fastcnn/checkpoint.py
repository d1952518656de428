"""Checkpoints: a model's state dict (plus optimiser, scheduler, epoch and RNG states) in one ``.npz``.

::

    fastcnn.save(model, "run.npz", optimizer=opt, epoch=3, rng=gen, config={"width": 32}, note="best")
    extra = fastcnn.load(model, "run.npz", optimizer=opt, rng=gen)   # {"epoch": 3, "config": ..., "note": "best"}

The file is an ordinary ``.npz`` (zip) archive: every array is an entry
(``model/<key>``, ``optim/<index>/<name>``, ``extra/<name>``), and the entry
``__header__`` holds a UTF-8 JSON document with the format version, the model
config, the optimiser's and scheduler's structure, the epoch, the states of the
random generators and any extra JSON-serialisable values. Files are read with
``allow_pickle=False``, so loading never runs code. A save writes a temporary
file in the destination directory, flushes it to disk and renames it over the
destination, so a crash during a save leaves the previous checkpoint intact.
A damaged, truncated or mismatched file raises ``ValueError``.
"""
import io
import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

__all__ = ["save", "load", "read_header", "FORMAT_VERSION"]

FORMAT = "fastcnn-checkpoint"
FORMAT_VERSION = 1
_HEADER = "__header__"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


# --- JSON helpers -------------------------------------------------------------------------------

def _json_default(obj):
    if isinstance(obj, np.ndarray):  # small arrays inside RNG states (e.g. MT19937's key)
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _json_hook(d):
    if "__ndarray__" in d and "dtype" in d and len(d) == 2:
        return np.asarray(d["__ndarray__"], dtype=np.dtype(d["dtype"]))
    return d


def _dumps(obj, what):
    try:
        return json.dumps(obj, default=_json_default, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} cannot be stored in a checkpoint: {e} (values must be JSON-serialisable: "
                        "numbers, strings, bools, None, lists and dicts, or ndarrays as top-level extras)") from None


def _rng_state(gen, what):
    if not isinstance(gen, np.random.Generator):
        raise TypeError(f"{what} must be a numpy.random.Generator, got {type(gen).__name__}")
    return gen.bit_generator.state


def _check_rng_kind(gen, state, what):
    if not isinstance(state, dict) or gen.bit_generator.state["bit_generator"] != state.get("bit_generator"):
        kind = state.get("bit_generator") if isinstance(state, dict) else None
        raise ValueError(f"{what}: the checkpoint holds a {kind} state, the generator "
                         f"given is {gen.bit_generator.state['bit_generator']}")


def _set_rng_state(gen, state, what):
    _check_rng_kind(gen, state, what)
    gen.bit_generator.state = state


def _module_generators(model):
    """``{"<module path>.<attribute>": Generator}`` for every generator a submodule holds."""
    named = model.named_modules() if hasattr(model, "named_modules") else [("", model)]
    out = {}
    for name, m in named:
        for attr, value in vars(m).items():
            if isinstance(value, np.random.Generator):
                out[f"{name}.{attr}" if name else attr] = value
    return out


# --- save -------------------------------------------------------------------------------------------

def _encode_optimizer(optimizer, arrays):
    sd = optimizer.state_dict()
    state = {}
    for idx, st in sd["state"].items():
        entry = {}
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                name = f"optim/{idx}/{k}"
                arrays[name] = v
                entry[k] = {"__array__": name}
            else:
                entry[k] = v
        state[str(idx)] = entry
    return {"type": type(optimizer).__name__, "state": state, "param_groups": sd["param_groups"]}


def save(model, path, optimizer=None, *, scheduler=None, epoch=None, rng=None, config=None, **extra):
    """Write ``model``'s state (and optionally the training state) to ``path`` atomically.

    ``optimizer`` and ``scheduler``: their ``state_dict()`` is stored.
    ``epoch``: the number of completed epochs. ``rng``: a numpy Generator whose
    state is stored (e.g. the one shuffling the data). ``config``: a
    JSON-serialisable description of the model (e.g. its constructor
    arguments). ``**extra``: further values, JSON-serialisable or ndarrays,
    returned by :func:`load`. The state of fastcnn's global generator and of any
    generator held by a submodule are stored too. The file name is used as given.
    """
    path = os.fspath(path)
    if not hasattr(model, "state_dict"):
        raise TypeError(f"model must be a Module with state_dict(), got {type(model).__name__}")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer))):
        raise TypeError(f"epoch must be an int or None, got {type(epoch).__name__}")
    arrays = {}
    model_keys = []
    for k, v in model.state_dict().items():
        arrays["model/" + k] = np.asarray(v)
        model_keys.append(k)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "model_keys": model_keys,
              "config": config, "epoch": None if epoch is None else int(epoch)}
    try:
        from . import __version__
        header["fastcnn_version"] = __version__
    except ImportError:  # pragma: no cover
        pass
    if optimizer is not None:
        header["optimizer"] = _encode_optimizer(optimizer, arrays)
    if scheduler is not None:
        header["scheduler"] = {"type": type(scheduler).__name__, "state": scheduler.state_dict()}
    if rng is not None:
        header["rng_state"] = _rng_state(rng, "rng")
    from ._random import get_rng_state
    header["global_rng_state"] = get_rng_state()
    gens = _module_generators(model)
    if gens:
        header["module_rng_states"] = {k: g.bit_generator.state for k, g in gens.items()}
    json_extra, array_extra = {}, []
    for k, v in extra.items():
        if isinstance(v, np.ndarray):
            arrays["extra/" + k] = v
            array_extra.append(k)
        else:
            json_extra[k] = v
    header["extra"] = json_extra
    header["extra_arrays"] = array_extra
    text = _dumps(header, "the checkpoint header (config, extra values or a state)")
    entries = {_HEADER: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    for k, v in arrays.items():
        if v.dtype.hasobject:
            raise TypeError(f"{k} has dtype object; only numeric arrays can be stored")
        entries[k] = v
    _atomic_write(path, entries)


def _atomic_write(path, entries):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **entries)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            mode = _FILE_MODE
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)


# --- load -------------------------------------------------------------------------------------------

def _read(path):
    """Header dict and every array of the checkpoint, fully read and checked."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("not an .npz archive")
            if _HEADER not in z.files:
                raise ValueError("no checkpoint header (not a fastcnn checkpoint)")
            arrays = {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error,
            NotImplementedError, RuntimeError) as e:
        raise ValueError(f"{path}: corrupt, truncated or unreadable checkpoint ({type(e).__name__}: {e})") from e
    try:
        header = json.loads(arrays.pop(_HEADER).tobytes().decode("utf-8"), object_hook=_json_hook)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: corrupt checkpoint header ({e})") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fastcnn checkpoint (header format {header.get('format')!r})"
                         if isinstance(header, dict) else f"{path}: not a fastcnn checkpoint")
    version = header.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: bad checkpoint format version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {version} is newer than this fastcnn "
                         f"supports ({FORMAT_VERSION}); upgrade fastcnn")
    expected = {"model/" + k for k in header.get("model_keys", [])}
    missing = expected - set(arrays)
    if missing:
        raise ValueError(f"{path}: corrupt checkpoint, missing arrays {sorted(missing)}")
    return header, arrays


def read_header(path):
    """The checkpoint's JSON header (config, epoch, ...), without needing a model."""
    return _read(path)[0]


def _check_model(model, model_state, path, strict):
    try:
        current = model.state_dict(keep_vars=True)
    except TypeError:
        current = model.state_dict()
    missing = [k for k in current if k not in model_state]
    unexpected = [k for k in model_state if k not in current]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing key(s) {missing}")
        if unexpected:
            parts.append(f"unexpected key(s) {unexpected}")
        raise ValueError(f"{path}: checkpoint does not match the model {type(model).__name__}: "
                         + "; ".join(parts))
    for k, v in model_state.items():
        if k in current and np.shape(current[k]) != v.shape:
            raise ValueError(f"{path}: checkpoint does not match the model: {k} has shape {v.shape} "
                             f"in the file, {np.shape(current[k])} in the model")


def _decode_optimizer(blob, arrays, path):
    state = {}
    for idx, st in blob["state"].items():
        entry = {}
        for k, v in st.items():
            if isinstance(v, dict) and "__array__" in v:
                if v["__array__"] not in arrays:
                    raise ValueError(f"{path}: corrupt checkpoint, missing optimizer array {v['__array__']}")
                entry[k] = arrays[v["__array__"]]
            else:
                entry[k] = v
        state[int(idx)] = entry
    return {"state": state, "param_groups": blob["param_groups"]}


def load(model, path, optimizer=None, *, scheduler=None, rng=None, strict=True, restore_rng=True):
    """Load a checkpoint written by :func:`save` into ``model`` (and the given optimiser/scheduler/rng).

    Returns a dict with the extra values given to :func:`save`, plus ``"epoch"``
    and ``"config"`` when they were saved. Everything is read and checked
    before anything is changed. With ``restore_rng`` (default), fastcnn's
    global generator and the generators held by submodules get their saved
    states back, so training resumes bit for bit. Raises ``ValueError`` when
    the file is damaged or does not match the model or optimiser.
    """
    path = os.fspath(path)
    if not hasattr(model, "load_state_dict"):
        raise TypeError(f"model must be a Module with load_state_dict(), got {type(model).__name__}")
    header, arrays = _read(path)
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    _check_model(model, model_state, path, strict)
    opt_sd = sched_sd = None
    if optimizer is not None:
        blob = header.get("optimizer")
        if blob is None:
            raise ValueError(f"{path}: the checkpoint holds no optimizer state")
        if blob.get("type") != type(optimizer).__name__:
            raise ValueError(f"{path}: the checkpoint holds {blob.get('type')} state, "
                             f"the optimizer given is {type(optimizer).__name__}")
        opt_sd = _decode_optimizer(blob, arrays, path)
    if scheduler is not None:
        blob = header.get("scheduler")
        if blob is None:
            raise ValueError(f"{path}: the checkpoint holds no scheduler state")
        if blob.get("type") != type(scheduler).__name__:
            raise ValueError(f"{path}: the checkpoint holds {blob.get('type')} state, "
                             f"the scheduler given is {type(scheduler).__name__}")
        sched_sd = blob["state"]
    if rng is not None:
        _rng_state(rng, "rng")
        if "rng_state" not in header:
            raise ValueError(f"{path}: the checkpoint holds no rng state")
        _check_rng_kind(rng, header["rng_state"], "rng")
    module_gens = {}
    if restore_rng:
        saved = header.get("module_rng_states") or {}
        module_gens = {k: g for k, g in _module_generators(model).items() if k in saved}
        for name, gen in module_gens.items():
            _check_rng_kind(gen, saved[name], f"generator {name}")
    # everything checked: apply
    if opt_sd is not None:
        try:
            optimizer.load_state_dict(opt_sd)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: optimizer state does not match the optimizer: {e}") from e
    if sched_sd is not None:
        scheduler.load_state_dict(sched_sd)
    model.load_state_dict(model_state, strict=strict)
    if rng is not None:
        _set_rng_state(rng, header["rng_state"], "rng")
    if restore_rng:
        if header.get("global_rng_state") is not None:
            from ._random import set_rng_state
            set_rng_state(header["global_rng_state"])
        for name, gen in module_gens.items():
            _set_rng_state(gen, header["module_rng_states"][name], f"generator {name}")
    out = dict(header.get("extra") or {})
    for k in header.get("extra_arrays") or []:
        if "extra/" + k not in arrays:
            raise ValueError(f"{path}: corrupt checkpoint, missing extra array {k!r}")
        out[k] = arrays["extra/" + k]
    if header.get("epoch") is not None:
        out["epoch"] = header["epoch"]
    if header.get("config") is not None:
        out["config"] = header["config"]
    return out
