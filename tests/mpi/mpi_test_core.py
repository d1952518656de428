"""Collectives, sharding and gradient averaging on a real MPI world.

Run: ``mpirun -n 2 python -m pytest tests/mpi/mpi_test_core.py -q -p no:cacheprovider``
(``.ci/mpi.sh`` does this). Not collected by a plain ``pytest tests`` run.
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _mpi_helpers import agree, data, lenet, same_on_all_ranks, state_diff  # noqa: E402

from fastcnn import distributed as dist  # noqa: E402
from fastcnn import nn, optim  # noqa: E402

if not dist.is_launched():  # pragma: no cover - guarded by the file name too
    pytest.skip("needs an MPI launch (mpirun -n 2)", allow_module_level=True)

dist.init()
R = dist.world_size()
ME = dist.rank()


def test_world():
    agree(R >= 2, "launch with at least 2 ranks")
    ranks = dist.allgather(ME)
    agree(ranks == list(range(R)))
    agree(dist.allreduce_scalar(ME, "sum") == sum(range(R)))
    agree(dist.allreduce_scalar(ME, "max") == R - 1)
    agree(dist.allreduce_scalar(2.0, "mean") == 2.0)
    agree(dist.broadcast_object({"r": ME})["r"] == 0)
    dist.barrier()


@pytest.mark.parametrize("n, drop_last", [(103, False), (103, True), (64, False)])
def test_sampler_shards_disjoint_and_covering(n, drop_last):
    sampler = dist.DistributedSampler(n, shuffle=True, seed=11, drop_last=drop_last)
    sampler.set_epoch(2)
    shards = dist.allgather(sampler.indices().tolist())
    agree(len({len(s) for s in shards}) == 1, "shards differ in length")
    flat = [i for s in shards for i in s]
    if drop_last:
        agree(len(set(flat)) == len(flat) == (n // R) * R, "drop_last shards overlap")
    else:
        agree(set(flat) == set(range(n)), "shards do not cover the data set")
        agree(len(flat) - len(set(flat)) == (-n) % R, "more repeats than the padding")
    batch_parts = dist.allgather(dist.context(True).shard(np.arange(7)).tolist())
    agree(sum(batch_parts, []) == list(range(7)), "batch shards do not tile the global batch")


def test_broadcast_parameters_and_optimizer_state():
    model = lenet(seed=100 + ME)                      # different weights on every rank
    opt = optim.Adam(model.parameters(), lr=1e-2)
    if ME == 0:                                       # only the root has optimiser state
        rng = np.random.default_rng(0)
        for _ in range(2):
            for p in model.parameters():
                p.grad[...] = rng.normal(size=p.shape)
            opt.step()
        model[1].running_mean[...] = 3.0
    agree(not same_on_all_ranks([p.data for p in model.parameters()]))
    dist.broadcast_parameters(model)
    dist.broadcast_optimizer_state(opt)
    sd = model.state_dict()
    agree(same_on_all_ranks(list(sd.values())), "parameters or buffers differ after broadcast")
    ost = opt.state_dict()
    arrays = [v for i in sorted(ost["state"]) for k, v in sorted(ost["state"][i].items()) if k != "step"]
    steps = [ost["state"][i]["step"] for i in sorted(ost["state"])]
    agree(len(arrays) == 2 * len(list(model.parameters())), "optimiser state missing after broadcast")
    agree(same_on_all_ranks(arrays) and steps == [2] * len(steps), "optimiser state differs after broadcast")


def _train(model, opt, x, y, batches, ctx):
    crit = nn.CrossEntropyLoss()
    for idx in batches:
        part = ctx.shard(idx)
        out = model(x[part])
        crit(out, y[part])
        opt.zero_grad()
        model.backward(crit.backward())
        ctx.sync_grads(model)
        opt.step()
    return model.state_dict()


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("batch", [12, 7], ids=["even", "uneven"])
def test_ranks_equal_one_process_on_global_batch(opt_name, batch):
    """R ranks x batch B/R (synchronised BatchNorm) == 1 process x batch B, float64, after several steps."""
    x, y = data(64)
    order = np.random.default_rng(3).permutation(64)
    batches = [order[i:i + batch] for i in range(0, 5 * batch, batch)]

    def make():
        model = lenet(seed=1)
        if opt_name == "sgd":
            opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        else:
            opt = optim.Adam(model.parameters(), lr=1e-3)
        return model, opt

    model, opt = make()
    dist.convert_sync_batchnorm(model)
    ctx = dist.context(True)
    ctx.broadcast_model(model, opt)
    got = _train(model, opt, x, y, batches, ctx)
    agree(same_on_all_ranks(list(got.values())), "ranks diverged")
    diff = None
    if ME == 0:
        ref_model, ref_opt = make()
        ref = _train(ref_model, ref_opt, x, y, batches, dist.context(False))
        diff = state_diff(got, ref)
    diff = dist.broadcast_object(diff)
    agree(diff < 1e-10, f"distributed training differs from one process by {diff:.3g}")
    agree(ctx.allreduce_calls == len(batches))


def test_per_rank_batchnorm_by_default():
    """Without synchronisation each rank normalises its own part (statistics differ from the global batch)."""
    x, _ = data(16)
    model = lenet(seed=2)
    ctx = dist.context(True)
    out = model(x[ctx.shard(np.arange(16))])
    ref = lenet(seed=2)(x)[ctx.local_slice(16)]
    agree(np.max(np.abs(out - ref)) > 1e-6, "plain BatchNorm should use per-rank statistics")
    dist.convert_sync_batchnorm(model)
    agree(np.max(np.abs(model(x[ctx.shard(np.arange(16))]) - ref)) < 1e-12,
          "synchronised BatchNorm should use the global batch's statistics")
