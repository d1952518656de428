"""``fit`` and ``GANTrainer.fit`` on 2 ranks against one process on the same global batches.

Run: ``mpirun -n 2 python -m pytest tests/mpi/mpi_test_train.py -q -p no:cacheprovider``.
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _mpi_helpers import agree, data, lenet, same_on_all_ranks, state_diff  # noqa: E402

from fastcnn import distributed as dist  # noqa: E402
from fastcnn import nn, optim  # noqa: E402
from fastcnn.train import fit  # noqa: E402

if not dist.is_launched():  # pragma: no cover
    pytest.skip("needs an MPI launch (mpirun -n 2)", allow_module_level=True)

dist.init()
ME = dist.rank()


@pytest.mark.parametrize("opt_name, batch, shuffle", [("sgd", 10, True), ("adam", 7, True), ("sgd", 9, False)],
                         ids=["sgd-even", "adam-uneven", "sgd-noshuffle"])
def test_fit_on_ranks_equals_one_process(opt_name, batch, shuffle, tmp_path):
    x, y = data(60)
    xv, yv = data(20, seed=1)

    def run(distributed):
        model = dist.convert_sync_batchnorm(lenet(seed=3))
        opt = (optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if opt_name == "sgd"
               else optim.Adam(model.parameters(), lr=2e-3))
        hist = fit(model, nn.CrossEntropyLoss(), opt, x, y, epochs=2, batch_size=batch, shuffle=shuffle, seed=5,
                   validation_data=(xv, yv), progress=False, distributed=distributed)
        return model.state_dict(), hist

    got, hist = run(True)
    agree(same_on_all_ranks(list(got.values())), "ranks diverged")
    diff = hdiff = None
    if ME == 0:
        ref, ref_hist = run(False)
        diff = state_diff(got, ref)
        hdiff = max(abs(a - b) for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                    for a, b in zip(hist[k], ref_hist[k]))
    diff, hdiff = dist.broadcast_object((diff, hdiff))
    agree(diff < 1e-10, f"parameters differ from one process by {diff:.3g}")
    agree(hdiff < 1e-10, f"metrics differ from one process by {hdiff:.3g}")


@pytest.mark.parametrize("batch,codes", [(6, 0), (7, 0), (7, 3)], ids=["even", "uneven", "uneven-codes"])
def test_gan_fit_on_ranks_equals_one_process(batch, codes, tmp_path):
    from fastcnn.gan import GANTrainer, dcgan_discriminator, dcgan_generator
    real = np.random.default_rng(0).uniform(-1, 1, (21, 1, 32, 32))

    def run(distributed, ckpt=None):
        G = dist.convert_sync_batchnorm(dcgan_generator(nz=8 + codes, image_size=32, ngf=4, seed=0).double())
        D = dist.convert_sync_batchnorm(dcgan_discriminator(image_size=32, ndf=4, seed=1, codes=codes).double())
        trainer = GANTrainer(G, D, 8, seed=3, dtype=np.float64, codes=codes)
        trainer.fit(real, epochs=2, batch_size=batch, progress=False, distributed=distributed, checkpoint_dir=ckpt)
        sd = {"G." + k: v for k, v in G.state_dict().items()}
        sd.update({"D." + k: v for k, v in D.state_dict().items()})
        return sd, trainer.history

    ckpt = dist.broadcast_object(str(tmp_path))
    got, hist = run(True, ckpt)
    agree(same_on_all_ranks(list(got.values())), "ranks diverged")
    agree(len(hist) == 2 * (21 // batch))
    agree(os.path.isfile(os.path.join(ckpt, "gan.npz")) if ME == 0 else True, "rank 0 wrote no checkpoint")
    diff = hdiff = None
    if ME == 0:
        ref, ref_hist = run(False)
        diff = state_diff(got, ref)
        hdiff = max(abs(a[k] - b[k]) for a, b in zip(hist, ref_hist) for k in a if k not in ("step", "epoch"))
    diff, hdiff = dist.broadcast_object((diff, hdiff))
    agree(diff < 1e-10, f"GAN parameters differ from one process by {diff:.3g}")
    agree(hdiff < 1e-10, f"GAN losses differ from one process by {hdiff:.3g}")
