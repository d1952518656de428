"""Throughput of data-parallel training on R ranks (not a test; figures for the docs).

    python tests/mpi/scaling_bench.py --model lenet                  # 1 process
    mpirun -n 2 python tests/mpi/scaling_bench.py --model lenet      # 2 ranks
    mpirun -n 2 python tests/mpi/scaling_bench.py --model dcgan28

Global batch 64 (each of R ranks takes 64/R), Adam, float32, 1 OpenMP thread
per rank unless --threads is given. Prints images/s and the time spent in the
gradient allreduce per step (rank 0's view).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import fastcnn  # noqa: E402
from fastcnn import distributed as dist  # noqa: E402
from fastcnn import nn, optim  # noqa: E402
from fastcnn._random import manual_seed  # noqa: E402


def lenet():
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("lenet", "dcgan28", "allreduce"), default="lenet",
                    help="'allreduce': time allreduce_gradients alone on LeNet's and DCGAN-28's gradients")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    ctx = dist.context(None)
    sync_cpu = [0.0]
    if ctx:
        # wait for every rank before the allreduce, so that its time is the transfer alone
        # (not the wait for a slower rank); the barrier adds a few microseconds per step
        sync = ctx.sync_grads

        def sync_after_barrier(model, *a, **k):
            c0 = time.process_time()
            dist.barrier()
            out = sync(model, *a, **k)
            sync_cpu[0] += time.process_time() - c0
            return out
        ctx.sync_grads = sync_after_barrier
    fastcnn.set_num_threads(args.threads)
    manual_seed(0)
    rng = np.random.default_rng(0)
    B = args.batch
    if args.model == "allreduce":
        from fastcnn.gan import dcgan_discriminator, dcgan_generator
        for name, model in [("lenet", lenet()), ("dcgan28 G+D", nn.Sequential(
                dcgan_generator(nz=100, image_size=28, ngf=64, seed=0), dcgan_discriminator(image_size=28, ndf=64)))]:
            ts = []
            for _ in range(args.steps):
                dist.barrier()
                ts.append(dist.allreduce_gradients(model))
            mb = sum(p.size for p in model.parameters()) * 4 / 1e6
            if ctx.is_root:
                print(f"allreduce_gradients, {name} ({mb:.2f} MB float32) on {ctx.world_size} ranks: "
                      f"median {1e3 * np.median(ts):.2f} ms, min {1e3 * np.min(ts):.2f} ms", flush=True)
        return
    if args.model == "lenet":
        model = lenet()
        opt = optim.Adam(model.parameters(), lr=1e-3)
        crit = nn.CrossEntropyLoss()
        x = rng.random((B, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, B)
        ctx.broadcast_model(model, opt)
        nparams = sum(p.size for p in model.parameters())

        def step():
            idx = ctx.shard(np.arange(B))
            out = model(x[idx])
            crit(out, y[idx])
            opt.zero_grad()
            model.backward(crit.backward(), need_input_grad=False)
            ctx.sync_grads(model)
            opt.step()
    else:
        from fastcnn.gan import GANTrainer, dcgan_discriminator, dcgan_generator
        G = dcgan_generator(nz=100, image_size=28, channels=1, ngf=64, seed=0)
        D = dcgan_discriminator(image_size=28, channels=1, ndf=64, seed=1)
        trainer = GANTrainer(G, D, 100, seed=0)
        trainer._dist = ctx
        ctx.broadcast_model(G, trainer.opt_g)
        ctx.broadcast_model(D, trainer.opt_d)
        real = rng.uniform(-1, 1, (B, 1, 28, 28)).astype(np.float32)
        nparams = sum(p.size for p in G.parameters()) + sum(p.size for p in D.parameters())

        def step():
            trainer.step(real[ctx.shard(np.arange(B))])

    for _ in range(args.warmup):
        step()
    ctx.barrier()
    ctx.allreduce_seconds, ctx.allreduce_calls = 0.0, 0
    sync_cpu[0] = 0.0
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    ctx.barrier()
    dt = time.perf_counter() - t0
    cpu = (time.process_time() - c0 - sync_cpu[0]) / args.steps  # this rank's compute, without MPI waits
    cpu = max(dist.allgather(cpu))
    ar = ctx.allreduce_seconds / args.steps
    if ctx.is_root:
        print(f"{args.model}: {ctx.world_size} rank(s) x {fastcnn.get_num_threads()} thread(s), global batch {B}: "
              f"{B * args.steps / dt:.0f} images/s, {1e3 * dt / args.steps:.1f} ms/step, "
              f"allreduce {1e3 * ar:.2f} ms/step ({ctx.allreduce_calls // max(args.steps, 1)} per step, "
              f"{nparams * 4 / 1e6:.2f} MB of float32 gradients); compute CPU time per step and rank "
              f"{1e3 * cpu:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
