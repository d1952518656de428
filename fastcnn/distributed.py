"""Data-parallel training across processes and machines on MPI (through mpi4py).

Launch any fastcnn training script (or the ``fastcnn`` command) with
``mpirun``; each process ("rank") holds a full copy of the model, trains on
its share of every batch, and the gradients are averaged across ranks before
each optimiser step, so all copies stay identical::

    mpirun -n 4 fastcnn train-gan --epochs 20
    mpirun -n 8 --hostfile hosts python my_training.py

Without an MPI launch everything here is a no-op world of one process, and
mpi4py is not even imported. The building blocks, for custom loops::

    import fastcnn.distributed as dist
    dist.init()                                   # detects the launch
    dist.broadcast_parameters(model)              # same initial weights everywhere
    sampler = dist.DistributedSampler(len(x), shuffle=True, seed=0)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for idx in np.array_split(sampler.indices(), steps):
            ...forward / backward on x[idx]...
            dist.allreduce_gradients(model)       # average .grad over ranks
            opt.step()

``fastcnn.train.fit`` and ``fastcnn.gan.GANTrainer.fit`` do all of this
themselves (``distributed=None`` detects the launch), through the small
:func:`context` object below. There, ``batch_size`` is the *global* batch:
each of R ranks takes about ``batch_size / R`` samples of every batch, and the
gradients are combined weighted by the samples each rank saw, so a run on R
ranks follows the same trajectory as a run on one process (up to rounding).
"""
import os
import sys
import threading

import numpy as np

__all__ = [
    "init", "is_initialized", "is_launched", "rank", "world_size", "local_rank", "local_size",
    "is_root", "barrier", "broadcast_parameters", "broadcast_optimizer_state", "broadcast_object",
    "allreduce_gradients", "allreduce_array", "allreduce_scalar", "allgather", "DistributedSampler",
    "SyncBatchNorm", "convert_sync_batchnorm", "set_batch_share", "context", "DistributedContext", "shard_bounds",
]

_INSTALL_HINT = ("mpi4py is required for distributed training: install it with "
                 "`pip install fastcnn[distributed]` (or `pip install mpi4py`; it needs an MPI library "
                 "such as Open MPI: `apt-get install openmpi-bin libopenmpi-dev`)")

# Environment variables that MPI launchers set in every process they start:
# (size variable, rank variable, local size variable, local rank variable).
_LAUNCH_VARS = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS", "MPI_LOCALRANKID"),           # MPICH / Intel MPI (Hydra)
    ("PMIX_SIZE", "PMIX_RANK", "PMIX_LOCAL_SIZE", "PMIX_LOCAL_RANK"),          # PMIx launchers
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_RANK"),
)

_state = {"initialized": False, "comm": None, "MPI": None, "rank": 0, "size": 1,
          "local_rank": 0, "local_size": 1, "hook": None, "share": None, "sync_bn": None}
_lock = threading.Lock()


def _env_int(name):
    v = os.environ.get(name, "").strip()
    try:
        return int(v)
    except ValueError:
        return None


def _launch_info():
    """``(size, rank, local_size, local_rank)`` from the launcher's environment, or None."""
    for size_var, rank_var, lsize_var, lrank_var in _LAUNCH_VARS:
        size = _env_int(size_var)
        if size is not None and size >= 1:
            rank_ = _env_int(rank_var) or 0
            lsize = _env_int(lsize_var)
            lrank = _env_int(lrank_var)
            return size, rank_, lsize, lrank
    if os.environ.get("PMIX_RANK") is not None and os.environ.get("PMIX_NAMESPACE"):
        return None, _env_int("PMIX_RANK") or 0, None, None  # size known only after MPI init
    return None


def is_launched():
    """True when this process was started by an MPI launcher (``mpirun``, ``mpiexec``, ``srun``...)."""
    return _launch_info() is not None


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT + f" [{exc}]") from exc
    return MPI


def _default_threads(local_size):
    """``cores / ranks on this node``, never more than the CPUs this process may run on."""
    cores = os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = cores
    return max(1, min(allowed, cores // max(1, local_size)))


def _excepthook(exc_type, exc, tb):
    """Print the error with the rank, then abort every rank of the job (no rank is left waiting)."""
    import traceback
    st = _state
    try:
        sys.stderr.write(f"\nfastcnn.distributed: rank {st['rank']} of {st['size']} failed with "
                         f"{exc_type.__name__}; aborting all ranks.\n")
        traceback.print_exception(exc_type, exc, tb)
        sys.stderr.flush()
    finally:
        previous = st["hook"]
        comm = st["comm"]
        if comm is not None and st["size"] > 1:
            comm.Abort(1)
        elif previous is not None and previous is not _excepthook:
            previous(exc_type, exc, tb)


def init(force=False, set_threads=True, abort_on_error=True):
    """Join the MPI job when the process was launched by ``mpirun`` (or when ``force``).

    Without a launch (and without ``force``) this sets up a world of one
    process and never imports mpi4py. Under a launch it imports mpi4py
    (raising ImportError naming ``pip install fastcnn[distributed]`` when it is
    missing), sets each rank's OpenMP threads to ``cores / ranks on this node``
    unless ``OMP_NUM_THREADS`` is set or the thread count was already changed,
    and (``abort_on_error``) installs a ``sys.excepthook`` that prints an
    uncaught exception with its rank and aborts the whole job, so the other
    ranks never hang in a collective call. Calling it again is harmless.
    Returns the world size.
    """
    with _lock:
        st = _state
        if st["initialized"] and (st["comm"] is not None or not force):
            return st["size"]
        info = _launch_info()
        if info is None and not force:
            st.update(initialized=True, comm=None, MPI=None, rank=0, size=1, local_rank=0, local_size=1)
            return 1
        MPI = _import_mpi()
        comm = MPI.COMM_WORLD
        size = comm.Get_size()
        rank_ = comm.Get_rank()
        lsize = lrank = None
        if info is not None:
            _, _, lsize, lrank = info
        if lsize is None or lrank is None:
            try:
                node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank_)
                lsize, lrank = node.Get_size(), node.Get_rank()
                node.Free()
            except Exception:  # pragma: no cover - very old MPI
                lsize, lrank = 1, 0
        st.update(initialized=True, comm=comm, MPI=MPI, rank=rank_, size=size,
                  local_rank=lrank, local_size=lsize)
        if set_threads and size > 1:
            from . import _threads
            if not os.environ.get("OMP_NUM_THREADS", "").strip() and \
                    _threads.get_num_threads() == _threads.default_num_threads():
                _threads.set_num_threads(_default_threads(lsize))
        if abort_on_error and size > 1 and sys.excepthook is not _excepthook:
            st["hook"] = sys.excepthook
            sys.excepthook = _excepthook
        return size


def _ensure():
    if not _state["initialized"]:
        init()
    return _state


def is_initialized():
    """True once :func:`init` has run (it runs on first use of any function here)."""
    return _state["initialized"]


def rank():
    """This process's rank in ``0 .. world_size() - 1`` (0 without a launch)."""
    return _ensure()["rank"]


def world_size():
    """The number of processes in the job (1 without a launch)."""
    return _ensure()["size"]


def local_rank():
    """This process's rank among the ranks on the same machine."""
    return _ensure()["local_rank"]


def local_size():
    """The number of ranks on this machine."""
    return _ensure()["local_size"]


def is_root(root=0):
    """True on rank ``root`` (the rank that prints and writes checkpoints)."""
    return rank() == root


def _comm():
    st = _ensure()
    return st["comm"] if st["size"] > 1 else None


def barrier():
    """Wait until every rank gets here."""
    comm = _comm()
    if comm is not None:
        comm.Barrier()


# -- collectives on arrays -----------------------------------------------------------------------

_MAX_COUNT = 1 << 30  # elements per MPI call (MPI counts are C ints)


def _allreduce_inplace(buf, op=None):
    """In-place sum (or ``op``) of a contiguous 1-D array over all ranks, in chunks of at most 2**30."""
    st = _state
    comm, MPI = st["comm"], st["MPI"]
    op = MPI.SUM if op is None else op
    for start in range(0, buf.size, _MAX_COUNT):
        part = buf[start:start + _MAX_COUNT]
        comm.Allreduce(MPI.IN_PLACE, part, op=op)
    return buf


def _bcast_inplace(buf, root):
    comm = _state["comm"]
    for start in range(0, buf.size, _MAX_COUNT):
        comm.Bcast(buf[start:start + _MAX_COUNT], root=root)
    return buf


def allreduce_array(x, op="sum"):
    """Element-wise ``op`` ('sum', 'mean', 'max', 'min') of an array over all ranks; returns a new array."""
    out = np.array(x, copy=True, order="C")
    comm = _comm()
    if comm is None:
        return out
    MPI = _state["MPI"]
    mpi_op = {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}.get(op)
    if mpi_op is None:
        raise ValueError(f"op must be one of 'sum', 'mean', 'max', 'min', got {op!r}")
    flat = out.reshape(-1)
    if out.dtype == np.bool_:
        raise TypeError("allreduce_array: boolean arrays are not supported, cast to int first")
    _allreduce_inplace(flat, mpi_op)
    if op == "mean":
        if out.dtype.kind != "f":
            out = out / world_size()
        else:
            out /= world_size()
    return out


def allreduce_scalar(value, op="mean"):
    """A number combined over all ranks by ``op`` ('mean', 'sum', 'max', 'min'); returns a float."""
    return float(allreduce_array(np.array([float(value)], dtype=np.float64), op)[0])


def allgather(obj):
    """A list of every rank's ``obj`` (any picklable value; meant for small things such as metrics)."""
    comm = _comm()
    if comm is None:
        return [obj]
    return comm.allgather(obj)


def broadcast_object(obj, root=0):
    """``obj`` from rank ``root`` on every rank (pickled; meant for small things such as RNG states)."""
    comm = _comm()
    if comm is None:
        return obj
    return comm.bcast(obj, root=root)


# -- fused buffers ------------------------------------------------------------------------------

class _FusedBuffer:
    """One contiguous buffer per dtype for a fixed list of arrays (the layout is cached)."""

    def __init__(self, shapes_dtypes):
        self.layout = []          # (dtype index, offset, size, shape) per array
        self.buffers = []
        sizes = {}
        order = []
        for shape, dtype in shapes_dtypes:
            dt = np.dtype(dtype)
            if dt not in sizes:
                sizes[dt] = 0
                order.append(dt)
            n = int(np.prod(shape, dtype=np.int64))
            self.layout.append((order.index(dt), sizes[dt], n, shape))
            sizes[dt] += n
        self.buffers = [np.empty(sizes[dt], dtype=dt) for dt in order]

    def pack(self, arrays, scales=None):
        for i, ((b, off, n, _), a) in enumerate(zip(self.layout, arrays)):
            dst = self.buffers[b][off:off + n]
            if a is None:
                dst.fill(0)
            elif scales is not None and scales != 1.0:
                np.multiply(a.reshape(-1), scales, out=dst)
            else:
                dst[...] = a.reshape(-1)

    def unpack(self, arrays, scale=None):
        for (b, off, n, shape), a in zip(self.layout, arrays):
            src = self.buffers[b][off:off + n]
            if scale is not None:
                np.multiply(src, scale, out=a.reshape(-1), casting="unsafe")
            else:
                a.reshape(-1)[...] = src


_fused_cache = {}


def _fused_for(key, arrays):
    fb = _fused_cache.get(key)
    sig = tuple((a.shape, a.dtype.str) for a in arrays)
    if fb is None or fb[0] != sig:
        if len(_fused_cache) > 16:
            _fused_cache.clear()
        fb = (sig, _FusedBuffer([(a.shape, a.dtype) for a in arrays]))
        _fused_cache[key] = fb
    return fb[1]


def _params_of(model_or_params):
    if hasattr(model_or_params, "parameters") and callable(model_or_params.parameters):
        return list(model_or_params.parameters())
    return list(model_or_params)


def allreduce_gradients(model, weight=None, total=None):
    """Average every parameter's ``.grad`` over all ranks, in place, in one fused buffer per dtype.

    ``model`` is a Module or an iterable of parameters (same order on every
    rank). With ``weight`` (this rank's share of the global batch, e.g. the
    number of samples it saw), the result is the weighted average
    ``sum_r weight_r * grad_r / sum_r weight_r`` instead of the plain mean
    (pass ``total``, the sum of all ranks' weights, when it is known, to save
    one collective call).
    A missing gradient (``None``) counts as zero. Returns the seconds spent.
    """
    import time
    comm = _comm()
    if comm is None:
        return 0.0
    t0 = time.perf_counter()
    params = [p for p in _params_of(model) if getattr(p, "requires_grad", True)]
    if not params:
        return 0.0
    grads = []
    for p in params:
        g = p.grad
        if g is not None and (not isinstance(g, np.ndarray) or g.shape != p.data.shape):
            raise ValueError(f"gradient of shape {getattr(g, 'shape', None)} does not match its parameter "
                             f"of shape {p.data.shape}")
        grads.append(g)
    key = ("grad",) + tuple(id(p) for p in params)
    fb = _fused_for(key, [p.data for p in params])
    R = _state["size"]
    if weight is None:
        fb.pack(grads)
        for buf in fb.buffers:
            _allreduce_inplace(buf)
        scale = 1.0 / R
    else:
        w = float(weight)
        total = allreduce_scalar(w, "sum") if total is None else float(total)
        if total <= 0:
            raise ValueError("allreduce_gradients: the weights of all ranks sum to zero")
        fb.pack(grads, w)
        for buf in fb.buffers:
            _allreduce_inplace(buf)
        scale = 1.0 / total
    for p in params:
        if p.grad is None:
            p.grad = np.zeros_like(p.data)
    fb.unpack([p.grad for p in params], scale)
    return time.perf_counter() - t0


def _scale_grads(model, factor):
    for p in _params_of(model):
        if p.grad is not None:
            p.grad *= factor


def _check_same_structure(items, what):
    """Raise a clear error on every rank when the ranks' arrays differ in names, shapes or dtypes."""
    sig = [(k, tuple(a.shape), a.dtype.str) for k, a in items]
    sigs = allgather(sig)
    for r, s in enumerate(sigs):
        if s != sigs[0]:
            diff = next(((a, b) for a, b in zip(sigs[0], s) if a != b), None)
            detail = (f"rank 0 has {diff[0]}, rank {r} has {diff[1]}" if diff is not None
                      else f"rank 0 has {len(sigs[0])} entries, rank {r} has {len(s)}")
            raise ValueError(f"{what} differ between ranks ({detail}); every rank must build the same model")


def broadcast_parameters(model, root=0):
    """Copy every parameter and buffer of ``model`` from rank ``root`` to all ranks, in place."""
    comm = _comm()
    if comm is None:
        return model
    items = [(k, p.data) for k, p in model.named_parameters()]
    items += [(k, b) for k, b in model.named_buffers() if isinstance(b, np.ndarray)]
    _check_same_structure(items, "model parameters")
    arrays = [a for _, a in items]
    for a in arrays:
        if not a.flags.c_contiguous or not a.flags.writeable:
            raise ValueError("broadcast_parameters needs C-contiguous, writeable parameters and buffers")
    fb = _FusedBuffer([(a.shape, a.dtype) for a in arrays])
    fb.pack(arrays)
    for buf in fb.buffers:
        _bcast_inplace(buf, root)
    fb.unpack(arrays)
    return model


def broadcast_optimizer_state(optimizer, root=0):
    """Make every rank's optimiser state (moments, step counts, hyper-parameters) equal rank ``root``'s."""
    comm = _comm()
    if comm is None:
        return optimizer
    me = rank()
    skeleton = arrays = None
    if me == root:
        sd = optimizer.state_dict()
        arrays = []
        state = {}
        for idx, st in sd["state"].items():
            entry = {}
            for k, v in st.items():
                if isinstance(v, np.ndarray) and v.ndim > 0:
                    entry[k] = ("__array__", len(arrays), v.shape, v.dtype.str)
                    arrays.append(np.ascontiguousarray(v))
                else:
                    entry[k] = v
            state[idx] = entry
        skeleton = {"state": state, "param_groups": sd["param_groups"]}
    skeleton = comm.bcast(skeleton, root=root)
    specs = [v for st in skeleton["state"].values() for v in st.values()
             if isinstance(v, tuple) and len(v) == 4 and v[0] == "__array__"]
    specs.sort(key=lambda s: s[1])
    if me != root:
        arrays = [np.empty(shape, dtype=np.dtype(dt)) for _, _, shape, dt in specs]
    if arrays:
        fb = _FusedBuffer([(a.shape, a.dtype) for a in arrays])
        fb.pack(arrays)
        for buf in fb.buffers:
            _bcast_inplace(buf, root)
        if me != root:
            fb.unpack(arrays)
    if me != root:
        state = {}
        for idx, st in skeleton["state"].items():
            state[idx] = {k: (arrays[v[1]] if isinstance(v, tuple) and len(v) == 4 and v[0] == "__array__" else v)
                          for k, v in st.items()}
        optimizer.load_state_dict({"state": state, "param_groups": skeleton["param_groups"]})
    return optimizer


# -- data sharding ------------------------------------------------------------------------------

def shard_bounds(n, rank_=None, size=None):
    """``(start, stop)`` of this rank's contiguous part of ``n`` items split as evenly as possible."""
    r = rank() if rank_ is None else int(rank_)
    R = world_size() if size is None else int(size)
    base, extra = divmod(int(n), R)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


class DistributedSampler:
    """Per-rank shards of ``range(n)``, reshuffled each epoch by a seed shared by all ranks.

    As ``torch.utils.data.DistributedSampler``: every epoch all ranks draw the
    same permutation (``seed + epoch``), pad it by repeating its first indices
    to a multiple of the world size (or, with ``drop_last``, cut it to one),
    and rank ``r`` takes every R-th index starting at ``r``. The shards are
    disjoint and together cover the data set (padding repeats a few samples).
    """

    def __init__(self, n, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        import numbers
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        R = world_size() if num_replicas is None else num_replicas
        if isinstance(R, bool) or not isinstance(R, numbers.Integral) or R < 1:
            raise ValueError(f"num_replicas must be a positive int, got {R!r}")
        r = globals()["rank"]() if rank is None else rank
        if isinstance(r, bool) or not isinstance(r, numbers.Integral) or not 0 <= r < R:
            raise ValueError(f"rank must be an int in [0, {R - 1}], got {r!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.n, self.num_replicas, self.rank = int(n), int(R), int(r)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        if self.drop_last:
            self.num_samples = self.n // R
        else:
            self.num_samples = -(-self.n // R)
        self.total_size = self.num_samples * R

    def set_epoch(self, epoch):
        """Choose the epoch's permutation (call it at the start of every epoch when shuffling)."""
        self.epoch = int(epoch)

    def indices(self):
        """This rank's indices for the current epoch (an int64 array of ``len(self)`` entries)."""
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(self.n)
        else:
            order = np.arange(self.n)
        if not self.drop_last:
            pad = self.total_size - self.n
            if pad > 0 and self.n > 0:
                order = np.concatenate([order, np.resize(order, pad)])
        else:
            order = order[:self.total_size]
        return order[self.rank:self.total_size:self.num_replicas].astype(np.int64)

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.num_samples

    def __repr__(self):
        return (f"DistributedSampler(n={self.n}, num_replicas={self.num_replicas}, rank={self.rank}, "
                f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last})")


# -- synchronised batch normalisation -----------------------------------------------------------

class SyncBatchNorm:
    """Mixin for BatchNorm layers whose training statistics are those of the global batch.

    In training mode, forward sums each channel's count and sum over all ranks,
    then the squared deviations from the global mean, and normalises with the
    global mean and (biased) variance; the running statistics get the global
    unbiased variance. Backward sums each channel's ``sum(g)`` and
    ``sum(g * x_hat)`` over ranks, so every rank's input gradient is the one a
    single process would compute on the whole batch. Weight and bias
    gradients stay local (:func:`allreduce_gradients` averages them). On one
    process, and in eval mode, the layer is an ordinary BatchNorm. Use
    :func:`convert_sync_batchnorm` to switch a model's BatchNorm layers.

    A training loop run with ``distributed=False`` on a multi-rank job (its
    :func:`context` is off) turns the synchronisation off, so that rank can
    train alone; the next distributed context turns it back on.
    """

    def forward(self, x):
        if not self.training or _comm() is None or _state.get("sync_bn") is False:
            self._sync_ctx = None
            return super().forward(x)
        x = self._prep(x)
        shape = x.shape
        xc = x.reshape(shape[0], shape[1], int(np.prod(shape[2:], dtype=np.int64)))
        C = shape[1]
        local = np.empty(2 * C, dtype=np.float64)
        local[:C] = xc.shape[0] * xc.shape[2]
        local[C:] = xc.sum(axis=(0, 2), dtype=np.float64)
        tot = allreduce_array(local)
        count = tot[:C]
        if count[0] <= 1:
            raise ValueError(f"{type(self).__name__}({self.num_features}): expected more than 1 value per "
                             f"channel over all ranks when using batch statistics, got {int(count[0])}")
        mean = tot[C:] / count
        centred = xc - mean.astype(x.dtype)[None, :, None]
        sq = np.einsum("ncl,ncl->c", centred, centred, dtype=np.float64) if centred.size else np.zeros(C)
        var = allreduce_array(sq) / count
        invstd = 1.0 / np.sqrt(var + self.eps)
        if self.track_running_stats:
            nbt = self.num_batches_tracked
            nbt += 1
            factor = 1.0 / float(nbt) if self.momentum is None else self.momentum
            rm, rv = self.running_mean, self.running_var
            rm[...] = factor * mean + (1.0 - factor) * rm
            rv[...] = factor * var * (count / (count - 1.0)) + (1.0 - factor) * rv
        xhat = centred * invstd.astype(x.dtype)[None, :, None]
        if self.weight is not None:
            y = xhat * self.weight.data[None, :, None] + self.bias.data[None, :, None]
        else:
            y = xhat.copy()
        self._ctx = None
        self._sync_ctx = (xhat, invstd.astype(x.dtype), count[0], shape)
        return y.reshape(shape).astype(x.dtype, copy=False)

    def backward(self, grad_out, need_input_grad=True):
        sctx = getattr(self, "_sync_ctx", None)
        if sctx is None:
            return super().backward(grad_out, need_input_grad)
        xhat, invstd, count, shape = sctx
        g = np.asarray(grad_out, dtype=xhat.dtype).reshape(xhat.shape)
        C = xhat.shape[1]
        local = np.empty(2 * C, dtype=np.float64)
        local[:C] = g.sum(axis=(0, 2), dtype=np.float64)
        local[C:] = np.einsum("ncl,ncl->c", g, xhat, dtype=np.float64) if g.size else 0.0
        w = self.weight
        if w is not None and w.requires_grad:
            from .nn.module import accumulate
            accumulate(w, local[C:].astype(w.data.dtype))
            accumulate(self.bias, local[:C].astype(w.data.dtype))
        # Each rank's loss is averaged over its own part of the batch, and the
        # gradients are later combined weighted by share = part / global batch:
        # the global sums take the shares in, the local formula takes them out.
        share = _batch_share()
        tot = allreduce_array(local * share)
        if not need_input_grad:
            return None
        inv = 1.0 / (share * count) if share > 0 else 0.0
        sum_g = (tot[:C] * inv).astype(xhat.dtype)[None, :, None]
        sum_gx = (tot[C:] * inv).astype(xhat.dtype)[None, :, None]
        scale = invstd if w is None else invstd * w.data
        gx = (g - sum_g - xhat * sum_gx) * scale[None, :, None]
        return gx.reshape(shape)


def _batch_share():
    """This rank's share of the global batch (set by :meth:`DistributedContext.shard`; 1/R by default)."""
    share = _state.get("share")
    if share is None:
        return 1.0 / _state["size"]
    local, total = share
    return local / total if total else 1.0 / _state["size"]


def set_batch_share(local, total):
    """Tell synchronised BatchNorm that this rank holds ``local`` of the ``total`` samples of the batch.

    Only needed in custom loops whose ranks hold unequal parts of a batch
    (and that pass ``weight=local`` to :func:`allreduce_gradients`);
    :meth:`DistributedContext.shard` calls it. ``None`` resets equal shares.
    """
    _state["share"] = None if local is None else (int(local), int(total))


_sync_classes = {}


def _sync_class(cls):
    sc = _sync_classes.get(cls)
    if sc is None:
        sc = type("Sync" + cls.__name__, (SyncBatchNorm, cls), {"__doc__": SyncBatchNorm.__doc__})
        _sync_classes[cls] = sc
    return sc


def convert_sync_batchnorm(model):
    """Switch every BatchNorm1d/BatchNorm2d inside ``model`` to synchronised BatchNorm, in place.

    Parameters, buffers and state-dict keys are unchanged (a checkpoint loads
    either way). Returns ``model``.
    """
    from .nn import layers
    base = layers._BatchNorm
    for m in model.modules():
        if isinstance(m, base) and not isinstance(m, SyncBatchNorm):
            m.__dict__["_sync_ctx"] = None
            m.__class__ = _sync_class(type(m))
    from .nn import module as _module
    _module._bump()
    return model


# -- the hook used by the training loops --------------------------------------------------------

class DistributedContext:
    """What a training loop needs to run data-parallel; a no-op object on one process.

    ``shard(batch)`` -> this rank's part of a global batch of indices (and
    remembers its share), ``sync_grads(model)`` -> average the gradients
    weighted by those shares, ``broadcast_model(model, optimizer)``,
    ``reduce_metrics(dict)`` -> sample-weighted means over ranks,
    ``is_root`` (print and write files only there), ``broadcast_object``,
    ``barrier``. ``enabled`` is False on one process.
    """

    def __init__(self, enabled):
        self.enabled = bool(enabled) and world_size() > 1
        if _state["size"] > 1:
            _state["sync_bn"] = self.enabled
        self.rank = rank() if self.enabled else 0
        self.world_size = world_size() if self.enabled else 1
        self.is_root = self.rank == 0
        self._share = None
        self.allreduce_seconds = 0.0
        self.allreduce_calls = 0

    def __bool__(self):
        return self.enabled

    def __repr__(self):
        return f"DistributedContext(enabled={self.enabled}, rank={self.rank}, world_size={self.world_size})"

    def local_slice(self, n):
        """The slice of a global batch of ``n`` items that this rank processes."""
        if not self.enabled:
            return slice(0, n)
        start, stop = shard_bounds(n, self.rank, self.world_size)
        return slice(start, stop)

    def shard(self, batch):
        """This rank's contiguous part of ``batch`` (an index array or any sliceable of global-batch length).

        Parts differ in length by at most one; a part can be empty when the
        batch is smaller than the world size. The share is remembered for the
        next :meth:`sync_grads`.
        """
        n = len(batch)
        if not self.enabled:
            self._share = (n, n)
            return batch
        part = batch[self.local_slice(n)]
        self._share = (len(part), n)
        set_batch_share(len(part), n)
        return part

    def last_shard(self, n):
        """``(global batch size, slice)`` of the last :meth:`shard` call, for a local batch of ``n``.

        Lets a loop draw per-sample randomness for the whole global batch (as
        one process would) and keep its own part: ``z = draw(N)[part]``.
        Without a matching shard (or on one process): ``(n, slice(0, n))``.
        """
        if not self.enabled or self._share is None or self._share[0] != n:
            return n, slice(0, n)
        return self._share[1], self.local_slice(self._share[1])

    def sync_grads(self, model, weight=None, reduction="mean"):
        """Combine the gradients of all ranks before the optimiser step.

        ``reduction="mean"`` (losses averaged over the batch): weighted by this
        rank's share of the last :meth:`shard`ed batch (or ``weight``), so
        unequal parts give the gradient of the whole batch's mean loss.
        ``reduction="sum"``: the plain sum over ranks.
        """
        if not self.enabled:
            return
        if reduction == "sum":
            self.allreduce_seconds += allreduce_gradients(model, 1.0)
            _scale_grads(model, self.world_size)
        elif reduction == "mean":
            total = None
            if weight is None and self._share is not None:
                weight, total = self._share
            self.allreduce_seconds += allreduce_gradients(model, weight, total)
        else:
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.allreduce_calls += 1

    def sync_buffers(self, model):
        """Average the floating-point buffers (BatchNorm running statistics) over ranks, in place."""
        if not self.enabled:
            return
        bufs = [b for _, b in model.named_buffers() if isinstance(b, np.ndarray) and b.dtype.kind == "f"]
        if not bufs:
            return
        fb = _FusedBuffer([(b.shape, b.dtype) for b in bufs])
        fb.pack(bufs)
        for buf in fb.buffers:
            _allreduce_inplace(buf)
        fb.unpack(bufs, 1.0 / self.world_size)

    def any(self, flag):
        """True on every rank when ``flag`` is true on at least one (e.g. a stop request)."""
        if not self.enabled:
            return bool(flag)
        return allreduce_scalar(1.0 if flag else 0.0, "max") > 0

    def broadcast_model(self, model, optimizer=None, root=0):
        """Start every rank from rank ``root``'s weights (and optimiser state)."""
        if not self.enabled:
            return
        broadcast_parameters(model, root)
        if optimizer is not None:
            broadcast_optimizer_state(optimizer, root)

    def reduce_metrics(self, metrics, weight=None):
        """Means over ranks of a dict of numbers, weighted by ``weight`` (default: the last shard's size)."""
        if not self.enabled:
            return dict(metrics)
        if weight is None:
            weight = self._share[0] if self._share is not None else 1.0
        keys = list(metrics)  # every rank builds its dict in the same order
        local = np.array([float(weight)] + [float(weight) * float(metrics[k]) for k in keys])
        tot = allreduce_array(local)
        if tot[0] == 0:
            return {k: float(metrics[k]) for k in keys}
        return {k: float(v / tot[0]) for k, v in zip(keys, tot[1:])}

    def sum(self, value):
        """``value`` (a number or array) summed over ranks."""
        if not self.enabled:
            return value
        if np.ndim(value) == 0:
            return allreduce_scalar(value, "sum")
        return allreduce_array(value, "sum")

    def broadcast_object(self, obj, root=0):
        return broadcast_object(obj, root) if self.enabled else obj

    def barrier(self):
        if self.enabled:
            barrier()


def context(distributed=None):
    """The :class:`DistributedContext` for a training loop.

    ``distributed=None`` joins the MPI job when the process was launched by
    ``mpirun`` (else runs alone), ``True`` requires mpi4py (an ImportError
    names ``pip install fastcnn[distributed]`` when it is missing), ``False``
    trains alone even under ``mpirun``.
    """
    if distributed is None:
        enabled = is_launched()
    elif isinstance(distributed, (bool, np.bool_)):
        enabled = bool(distributed)
    elif isinstance(distributed, DistributedContext):
        return distributed
    else:
        raise TypeError(f"distributed must be None, True or False, got {distributed!r}")
    if not enabled:
        return DistributedContext(False)
    init(force=True)
    return DistributedContext(True)
