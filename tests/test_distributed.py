"""fastcnn.distributed on one process: the world of one, sharding, seeding, errors, and the
collective arithmetic (fused gradient averaging, synchronised BatchNorm) in a simulated world.

The multi-process tests live in tests/mpi (run by ``.ci/mpi.sh`` under ``mpirun -n 2``).
"""
import sys
import types

import numpy as np
import pytest

import fastcnn
import fastcnn.distributed as dist
from fastcnn import nn, optim
from fastcnn._random import manual_seed

LAUNCH_VARS = [v for group in dist._LAUNCH_VARS for v in group] + ["PMIX_NAMESPACE"]


@pytest.fixture
def clean_state(monkeypatch):
    """A fresh, uninitialised module state and no launcher variables; restored afterwards."""
    for v in LAUNCH_VARS:
        monkeypatch.delenv(v, raising=False)
    for k, v in list(dist._state.items()):
        monkeypatch.setitem(dist._state, k, v)
    dist._state.update(initialized=False, comm=None, MPI=None, rank=0, size=1, local_rank=0,
                       local_size=1, hook=None, share=None, sync_bn=None)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    yield dist._state


# -- a simulated world: every other rank holds exactly this rank's data ------------------------

class FakeMPI:
    SUM, MAX, MIN = "sum", "max", "min"
    IN_PLACE = object()
    COMM_TYPE_SHARED = 1


class MirrorComm:
    """An MPI communicator of ``size`` ranks whose other ranks all hold the same data as this one."""

    def __init__(self, size=2, rank=0):
        self.size, self.rank, self.aborted = size, rank, None

    def Get_size(self):
        return self.size

    def Get_rank(self):
        return self.rank

    def Allreduce(self, sendbuf, recvbuf, op=FakeMPI.SUM):
        assert sendbuf is FakeMPI.IN_PLACE
        assert recvbuf.flags.c_contiguous
        if op == FakeMPI.SUM:
            recvbuf *= self.size

    def Bcast(self, buf, root=0):
        assert buf.flags.c_contiguous

    def Barrier(self):
        pass

    def allgather(self, obj):
        return [obj] * self.size

    def bcast(self, obj, root=0):
        return obj

    def Abort(self, code):
        self.aborted = code


@pytest.fixture
def mirror(clean_state):
    comm = MirrorComm(2, 0)
    clean_state.update(initialized=True, comm=comm, MPI=FakeMPI, rank=0, size=2, local_rank=0, local_size=2)
    return comm


def _fake_mpi4py(monkeypatch, comm):
    mod = types.ModuleType("mpi4py")
    mpi = types.SimpleNamespace(COMM_WORLD=comm, SUM=FakeMPI.SUM, MAX=FakeMPI.MAX, MIN=FakeMPI.MIN,
                                IN_PLACE=FakeMPI.IN_PLACE, COMM_TYPE_SHARED=1)
    mod.MPI = mpi
    monkeypatch.setitem(sys.modules, "mpi4py", mod)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", mpi)


def _lenet(seed=0, bn=True):
    manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5)]
    return nn.Sequential(*layers).double()


# -- the world of one ---------------------------------------------------------------------------

def test_world_of_one_without_launch(clean_state, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # any import attempt would fail
    assert not dist.is_launched()
    assert not dist.is_initialized()
    assert dist.init() == 1
    assert dist.is_initialized()
    assert (dist.rank(), dist.world_size(), dist.local_rank(), dist.local_size()) == (0, 1, 0, 1)
    assert dist.is_root()
    dist.barrier()
    assert dist.allreduce_scalar(2.5) == 2.5
    assert dist.allreduce_scalar(2.5, "sum") == 2.5
    assert dist.allgather({"a": 1}) == [{"a": 1}]
    assert dist.broadcast_object([1, 2]) == [1, 2]
    np.testing.assert_array_equal(dist.allreduce_array(np.arange(3.0)), np.arange(3.0))


def test_world_of_one_model_calls_are_noops(clean_state):
    model = _lenet()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = model.state_dict()
    for p in model.parameters():
        p.grad[...] = 1.5
    assert dist.allreduce_gradients(model) == 0.0
    dist.broadcast_parameters(model)
    dist.broadcast_optimizer_state(opt)
    for p in model.parameters():
        assert np.all(p.grad == 1.5)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_context_off_without_launch(clean_state, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    for arg in (None, False):
        ctx = dist.context(arg)
        assert not ctx and not ctx.enabled and ctx.is_root and ctx.world_size == 1
        idx = np.arange(10)
        assert ctx.shard(idx) is idx
        assert ctx.last_shard(10) == (10, slice(0, 10))
        assert ctx.reduce_metrics({"loss": 1.25}) == {"loss": 1.25}
        assert ctx.sum(3.0) == 3.0
        assert ctx.any(True) and not ctx.any(False)
        model = _lenet()
        ctx.broadcast_model(model)
        ctx.sync_grads(model)
        ctx.sync_buffers(model)
        ctx.barrier()
    with pytest.raises(TypeError, match="distributed must be None, True or False"):
        dist.context("yes")


def test_launch_detection_from_environment(clean_state, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    assert dist.is_launched()
    assert dist._launch_info() == (4, 3, 2, 1)
    for v in LAUNCH_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "1")
    assert dist._launch_info() == (2, 1, None, None)


# -- a missing mpi4py -----------------------------------------------------------------------------

def test_missing_mpi4py_asked_for(clean_state, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"pip install fastcnn\[distributed\]"):
        dist.context(True)
    with pytest.raises(ImportError, match=r"pip install fastcnn\[distributed\]"):
        dist.init(force=True)


def test_missing_mpi4py_under_launch(clean_state, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    with pytest.raises(ImportError, match=r"pip install fastcnn\[distributed\]"):
        dist.init()
    with pytest.raises(ImportError, match="mpi4py is required"):
        dist.context(None)
    # distributed=False trains alone even under a launcher, without mpi4py
    assert not dist.context(False)


# -- init under a (simulated) launch: threads and abort-on-error ----------------------------------

def test_init_under_launch_sets_threads_and_excepthook(clean_state, monkeypatch):
    comm = MirrorComm(2, 1)
    _fake_mpi4py(monkeypatch, comm)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    from fastcnn import _threads
    monkeypatch.setattr(_threads, "default_num_threads", lambda: 8)
    monkeypatch.setattr(dist.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(dist.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    fastcnn.set_num_threads(8)
    previous_hook = sys.excepthook
    assert dist.init() == 2
    assert (dist.rank(), dist.world_size(), dist.local_size()) == (1, 2, 2)
    assert fastcnn.get_num_threads() == 4          # 8 cores / 2 ranks on this node
    assert sys.excepthook is dist._excepthook
    assert dist.context(None).enabled
    assert dist.init() == 2                        # again: harmless
    assert dist._state["hook"] is previous_hook


def test_init_keeps_explicit_thread_count(clean_state, monkeypatch):
    _fake_mpi4py(monkeypatch, MirrorComm(2, 0))
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    from fastcnn import _threads
    monkeypatch.setattr(_threads, "default_num_threads", lambda: 8)
    fastcnn.set_num_threads(3)
    dist.init()
    assert fastcnn.get_num_threads() == 3


def test_default_threads_per_rank(monkeypatch):
    monkeypatch.setattr(dist.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(dist.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert [dist._default_threads(k) for k in (1, 2, 4, 8, 16, 32)] == [16, 8, 4, 2, 1, 1]
    # a rank bound to one core by the launcher never gets more threads than cores it may use
    monkeypatch.setattr(dist.os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert dist._default_threads(2) == 1


def test_excepthook_reports_rank_and_aborts(mirror, capsys):
    try:
        raise RuntimeError("boom on purpose")
    except RuntimeError:
        dist._excepthook(*sys.exc_info())
    err = capsys.readouterr().err
    assert "rank 0 of 2" in err and "aborting all ranks" in err and "boom on purpose" in err
    assert mirror.aborted == 1


# -- sharding and sampler seeding -------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 7, 10, 11, 64])
@pytest.mark.parametrize("R", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True], ids=["pad", "drop_last"])
def test_sampler_shards_disjoint_and_covering(n, R, drop_last):
    shards = []
    for r in range(R):
        s = dist.DistributedSampler(n, num_replicas=R, rank=r, shuffle=True, seed=5, drop_last=drop_last)
        s.set_epoch(3)
        idx = s.indices()
        assert len(idx) == len(s) and idx.dtype == np.int64
        shards.append(idx)
    assert len({len(s) for s in shards}) == 1          # every rank takes the same number of steps
    allidx = np.concatenate(shards)
    if drop_last:
        assert len(allidx) == (n // R) * R
        assert len(np.unique(allidx)) == len(allidx)   # disjoint
    else:
        assert len(allidx) == -(-n // R) * R
        assert set(allidx.tolist()) == set(range(n))  # covering
        assert len(np.unique(allidx)) == n             # disjoint apart from the padding
    assert np.all((allidx >= 0) & (allidx < max(n, 1)))


def test_sampler_matches_torch_without_shuffle(torch):
    from torch.utils.data import DistributedSampler as TorchSampler
    for n, R, drop_last in [(10, 3, False), (10, 3, True), (11, 4, False), (8, 2, False), (5, 4, True)]:
        for r in range(R):
            ours = dist.DistributedSampler(n, num_replicas=R, rank=r, shuffle=False, drop_last=drop_last)
            theirs = TorchSampler(range(n), num_replicas=R, rank=r, shuffle=False, drop_last=drop_last)
            assert list(ours) == list(theirs), (n, R, r, drop_last)
            assert len(ours) == len(theirs)


def test_sampler_seeding():
    def shard(seed, epoch, r=0):
        s = dist.DistributedSampler(20, num_replicas=2, rank=r, seed=seed)
        s.set_epoch(epoch)
        return s.indices()

    np.testing.assert_array_equal(shard(1, 0), shard(1, 0))           # reproducible
    assert not np.array_equal(shard(1, 0), shard(1, 1))               # a new order each epoch
    assert not np.array_equal(shard(1, 0), shard(2, 0))               # the seed matters
    both = np.concatenate([shard(1, 4, 0), shard(1, 4, 1)])          # ranks share one permutation
    assert sorted(both.tolist()) == list(range(20))
    fixed = dist.DistributedSampler(20, num_replicas=2, rank=1, shuffle=False)
    assert list(fixed) == list(range(1, 20, 2))


def test_sampler_bad_arguments():
    with pytest.raises(ValueError, match="n must be"):
        dist.DistributedSampler(-1)
    with pytest.raises(ValueError, match="num_replicas"):
        dist.DistributedSampler(10, num_replicas=0)
    with pytest.raises(ValueError, match="rank must be"):
        dist.DistributedSampler(10, num_replicas=2, rank=2)
    with pytest.raises(TypeError, match="seed"):
        dist.DistributedSampler(10, seed=1.5)


@pytest.mark.parametrize("n", [0, 1, 5, 64, 65])
@pytest.mark.parametrize("R", [1, 2, 3, 8])
def test_batch_shards_cover_global_batch(n, R):
    bounds = [dist.shard_bounds(n, r, R) for r in range(R)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))      # contiguous, disjoint
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1


# -- collective arithmetic in a simulated world --------------------------------------------------

def test_fused_allreduce_averages(mirror):
    model = _lenet()
    model.float()
    model[-1].weight.data = model[-1].weight.data.astype(np.float64)    # two dtypes: two buffers
    model[-1].weight.grad = np.zeros_like(model[-1].weight.data)
    rng = np.random.default_rng(0)
    expected = []
    for p in model.parameters():
        p.grad[...] = rng.normal(size=p.shape)
        expected.append(p.grad.copy())
    model[0].bias.grad = None                                            # a missing gradient counts as 0
    expected[1][...] = 0
    assert dist.allreduce_gradients(model) >= 0
    for p, e in zip(model.parameters(), expected):
        np.testing.assert_allclose(p.grad, e, rtol=1e-6)
        assert p.grad.dtype == p.data.dtype
    ctx = dist.DistributedContext(True)
    local = ctx.shard(np.arange(7))
    assert list(local) == [0, 1, 2, 3]
    assert ctx.last_shard(4) == (7, slice(0, 4))
    ctx.sync_grads(model)                    # weighted by 4 of 7 samples on each mirrored rank
    for p, e in zip(model.parameters(), expected):
        np.testing.assert_allclose(p.grad, e * 8 / 7, rtol=1e-6)
    assert ctx.allreduce_calls == 1
    ctx.sync_grads(model, reduction="sum")   # losses summed over the batch: gradients add up
    for p, e in zip(model.parameters(), expected):
        np.testing.assert_allclose(p.grad, e * 16 / 7, rtol=1e-6)
    assert ctx.reduce_metrics({"loss": 0.5, "acc": 1.0}) == {"acc": 1.0, "loss": 0.5}
    assert ctx.sum(2.0) == 4.0
    with pytest.raises(ValueError, match="reduction"):
        ctx.sync_grads(model, reduction="max")


def test_broadcast_in_simulated_world(mirror):
    model = _lenet()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad[...] = 1.0
    opt.step()
    before = model.state_dict()
    dist.broadcast_parameters(model)
    dist.broadcast_optimizer_state(opt)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_broadcast_rejects_different_models(mirror, monkeypatch):
    model = _lenet()
    other = [("0.weight", (4, 1, 3, 3), "<f8")]
    monkeypatch.setattr(mirror, "allgather", lambda obj: [obj, other])
    with pytest.raises(ValueError, match="differ between ranks"):
        dist.broadcast_parameters(model)


@pytest.mark.parametrize("shape", [(6, 3, 4, 5), (8, 3)], ids=["2d", "1d"])
def test_sync_batchnorm_equals_batchnorm_on_global_batch(mirror, shape):
    """On a mirrored world the global batch is [x; x]: compare with one BatchNorm over it."""
    rng = np.random.default_rng(1)
    C = shape[1]
    Layer = nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
    ref = Layer(C).double()
    ref.weight.data[...] = rng.normal(size=C)
    ref.bias.data[...] = rng.normal(size=C)
    sync = dist.convert_sync_batchnorm(nn.Sequential(Layer(C).double()))
    sync.load_state_dict({"0." + k: v for k, v in ref.state_dict().items()})
    bn = sync[0]
    assert isinstance(bn, dist.SyncBatchNorm) and isinstance(bn, Layer)
    x = rng.normal(2.0, 3.0, size=shape)
    g = rng.normal(size=shape)
    for _ in range(2):
        y = sync(x)
        y_ref = ref(np.concatenate([x, x]))
        np.testing.assert_allclose(y, y_ref[:shape[0]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, ref.running_mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(bn.running_var, ref.running_var, rtol=0, atol=1e-12)
    assert int(bn.num_batches_tracked) == 2
    bn.weight.grad[...] = 0
    bn.bias.grad[...] = 0
    gx = sync.backward(g)
    gx_ref = ref.backward(np.concatenate([g, g]))
    np.testing.assert_allclose(gx, gx_ref[:shape[0]], rtol=0, atol=1e-12)
    # parameter gradients stay local (half of the global batch's), averaged later by allreduce
    np.testing.assert_allclose(bn.weight.grad, ref.weight.grad / 2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(bn.bias.grad, ref.bias.grad / 2, rtol=0, atol=1e-12)
    # evaluation mode: an ordinary BatchNorm with the running statistics
    sync.eval()
    ref.eval()
    np.testing.assert_allclose(sync(x), ref(x), rtol=0, atol=1e-12)


def test_sync_batchnorm_on_one_process_is_batchnorm(clean_state):
    model = _lenet(3)
    keys = list(model.state_dict())
    ref = _lenet(3)
    dist.convert_sync_batchnorm(model)
    assert list(model.state_dict()) == keys
    assert "SyncBatchNorm2d" in repr(model)
    x = np.random.default_rng(0).normal(size=(4, 1, 8, 8))
    np.testing.assert_array_equal(model(x), ref(x))
    g = np.ones((4, 5))
    np.testing.assert_array_equal(model.backward(g), ref.backward(g))


def test_training_loops_ask_for_mpi4py(clean_state, monkeypatch):
    from fastcnn.gan import GANTrainer, dcgan_discriminator, dcgan_generator
    from fastcnn.train import fit
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    x = np.zeros((8, 1, 8, 8))
    y = np.zeros(8, dtype=np.int64)
    model = _lenet(bn=False)
    with pytest.raises(ImportError, match=r"pip install fastcnn\[distributed\]"):
        fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), x, y, progress=False,
            distributed=True)
    trainer = GANTrainer(dcgan_generator(nz=4, image_size=16, ngf=2, seed=0),
                         dcgan_discriminator(image_size=16, ndf=2, seed=1), 4)
    with pytest.raises(ImportError, match=r"pip install fastcnn\[distributed\]"):
        trainer.fit(np.zeros((8, 1, 16, 16), dtype=np.float32), 1, batch_size=4, progress=False, distributed=True)
    # without a launch, the default trains alone and never imports mpi4py
    fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), x, y, progress=False)
    trainer.fit(np.zeros((8, 1, 16, 16), dtype=np.float32), 1, batch_size=4, progress=False)
    assert trainer.steps == 2
