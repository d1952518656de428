"""A small distributed ``fit`` run used by the launcher tests (run alone or under mpirun).

python tests/mpi/_train_run.py --epochs 2 --checkpoint run.npz --resume --out params.npz
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _mpi_helpers import data, lenet  # noqa: E402

from fastcnn import distributed as dist  # noqa: E402
from fastcnn import nn, optim  # noqa: E402
from fastcnn.train import fit  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--fail-on-rank", type=int, default=None)
    args = ap.parse_args()
    x, y = data(60)
    model = dist.convert_sync_batchnorm(lenet(seed=4))
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if args.fail_on_rank is not None:
        dist.init()
        if dist.rank() == args.fail_on_rank:
            raise RuntimeError(f"deliberate failure on rank {dist.rank()}")
    fit(model, nn.CrossEntropyLoss(), opt, x, y, epochs=args.epochs, batch_size=10, seed=7, progress=False,
        checkpoint=args.checkpoint, resume=args.resume)
    if args.out and dist.is_root():
        np.savez(args.out, **model.state_dict())
    print(f"rank {dist.rank()} of {dist.world_size()} finished", flush=True)


if __name__ == "__main__":
    main()
