"""Checkpoints: round trip, resume equals uninterrupted (bitwise), crash safety, damaged files."""
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import fastcnn
import fastcnn._random as R
from fastcnn import checkpoint, nn, optim
from fastcnn.optim import lr_scheduler
from fastcnn.train import fit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is the fastest setting; one resume test runs threaded."""
    fastcnn.set_num_threads(1)


def small_net(seed, dropout_generator=None):
    R.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.2, generator=dropout_generator), nn.Linear(4 * 4 * 4, 10))


def toy_data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64)


def params(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def test_round_trip(tmp_path):
    model = small_net(0)
    opt = optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x, y = toy_data(16)
    crit = nn.CrossEntropyLoss()
    model(x)
    crit(model(x), y)
    model.backward(crit.backward())
    opt.step()
    sched.step()
    gen = np.random.default_rng(42)
    gen.random(3)
    p = tmp_path / "ck.npz"
    checkpoint.save(model, p, opt, scheduler=sched, epoch=7, rng=gen, config={"width": 4},
                    note="hello", scores=[1.5, 2.5], table=np.arange(6.0).reshape(2, 3))
    expected_draw = np.random.default_rng(42)
    expected_draw.random(3)

    model2 = small_net(1)
    opt2 = optim.Adam(model2.parameters(), lr=0.5)
    sched2 = lr_scheduler.StepLR(opt2, step_size=5)
    gen2 = np.random.default_rng(0)
    extra = checkpoint.load(model2, p, opt2, scheduler=sched2, rng=gen2)
    assert extra["epoch"] == 7 and extra["config"] == {"width": 4}
    assert extra["note"] == "hello" and extra["scores"] == [1.5, 2.5]
    np.testing.assert_array_equal(extra["table"], np.arange(6.0).reshape(2, 3))
    for k, v in model.state_dict().items():
        assert np.array_equal(v, model2.state_dict()[k]), k
        assert model2.state_dict()[k].dtype == v.dtype
    sd, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd["param_groups"] == sd2["param_groups"]
    for i in sd["state"]:
        for k, v in sd["state"][i].items():
            assert np.array_equal(v, sd2["state"][i][k])
    assert sched2.state_dict() == sched.state_dict()
    assert gen2.random() == expected_draw.random()
    header = checkpoint.read_header(p)
    assert header["format_version"] == checkpoint.FORMAT_VERSION and header["epoch"] == 7
    # plain npz, loadable without pickle
    with np.load(p, allow_pickle=False) as z:
        assert "model/0.weight" in z.files and "__header__" in z.files
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_global_and_module_generators_restored(tmp_path):
    gen = np.random.default_rng(5)
    model = small_net(0, dropout_generator=gen)
    R.manual_seed(11)
    p = tmp_path / "g.npz"
    checkpoint.save(model, p)
    a_global, a_mod = R.default_generator().random(4), gen.random(4)
    R.manual_seed(99)
    gen.random(10)
    checkpoint.load(model, p)
    np.testing.assert_array_equal(R.default_generator().random(4), a_global)
    np.testing.assert_array_equal(model[5].generator.random(4), a_mod)
    R.manual_seed(99)
    before = R.default_generator().bit_generator.state
    checkpoint.load(model, p, restore_rng=False)
    assert R.default_generator().bit_generator.state == before


def test_mismatch_and_bad_arguments(tmp_path):
    model = small_net(0)
    p = tmp_path / "m.npz"
    checkpoint.save(model, p, optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    other = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    with pytest.raises(ValueError, match="unexpected key"):
        checkpoint.load(other, p)
    wider = nn.Sequential(nn.Conv2d(1, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Dropout(0.2), nn.Linear(80, 10))
    with pytest.raises(ValueError, match="0.weight"):
        checkpoint.load(wider, p)
    with pytest.raises(ValueError, match="SGD"):
        checkpoint.load(model, p, optim.Adam(model.parameters()))
    with pytest.raises(ValueError, match="no scheduler"):
        checkpoint.load(model, p, scheduler=lr_scheduler.StepLR(optim.SGD(model.parameters(), lr=1), 2))
    with pytest.raises(ValueError, match="no rng"):
        checkpoint.load(model, p, rng=np.random.default_rng())
    with pytest.raises(ValueError, match="parameter groups"):
        checkpoint.load(model, p, optim.SGD([{"params": list(model.parameters())[:2]},
                                             {"params": list(model.parameters())[2:]}], lr=0.1))
    with pytest.raises(TypeError, match="JSON"):
        checkpoint.save(model, tmp_path / "x.npz", bad=object())
    with pytest.raises(TypeError, match="epoch"):
        checkpoint.save(model, tmp_path / "x.npz", epoch=1.5)
    with pytest.raises(TypeError, match="rng"):
        checkpoint.save(model, tmp_path / "x.npz", rng=42)
    with pytest.raises(FileNotFoundError):
        checkpoint.load(model, tmp_path / "missing.npz")
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_damaged_files_raise_value_error(tmp_path):
    model = small_net(0)
    p = tmp_path / "good.npz"
    checkpoint.save(model, p, optim.Adam(model.parameters()), epoch=1)
    raw = p.read_bytes()
    before = params(model)
    cases = {
        "truncated": raw[: len(raw) // 2],
        "empty": b"",
        "garbage": b"not a checkpoint at all" * 10,
        "flipped": raw[:200] + bytes([raw[200] ^ 0xFF]) + raw[201:],
    }
    for name, blob in cases.items():
        bad = tmp_path / f"{name}.npz"
        bad.write_bytes(blob)
        with pytest.raises(ValueError, match="checkpoint"):
            checkpoint.load(model, bad)
    # a plain npz without a header, a foreign header, a newer format, a pickled array
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a fastcnn checkpoint"):
        checkpoint.load(model, tmp_path / "plain.npz")
    for name, header in [("foreign", {"format": "other"}),
                         ("newer", {"format": "fastcnn-checkpoint", "format_version": 99})]:
        h = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        np.savez(tmp_path / f"{name}.npz", __header__=h)
        with pytest.raises(ValueError, match="newer" if name == "newer" else "not a fastcnn"):
            checkpoint.load(model, tmp_path / f"{name}.npz")
    with zipfile.ZipFile(tmp_path / "pickled.npz", "w") as z:
        with z.open("__header__.npy", "w") as f:
            np.lib.format.write_array(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="checkpoint"):
        checkpoint.load(model, tmp_path / "pickled.npz")
    for k, v in model.state_dict().items():  # nothing was changed by the failed loads
        assert np.array_equal(v, before[k])


def _train(model, opt, sched, x, y, epochs, path=None, resume=False, seed=3):
    return fit(model, nn.CrossEntropyLoss(), opt, x, y, epochs=epochs, batch_size=16, seed=seed,
               progress=False, scheduler=sched, checkpoint=path, resume=resume,
               validation_data=(x[:32], y[:32]))


@pytest.mark.parametrize("opt_name,seed,n_threads", [("SGD", 3, 1), ("Adam", 3, 1), ("Adam", None, 1),
                                                     ("SGD", None, 2)],
                         ids=["SGD-seeded", "Adam-seeded", "Adam-global-rng", "SGD-global-rng-2-threads"])
def test_resume_equals_uninterrupted(tmp_path, opt_name, seed, n_threads):
    fastcnn.set_num_threads(n_threads)
    x, y = toy_data()

    def make(init_seed):
        model = small_net(init_seed)
        if opt_name == "SGD":
            opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
        else:
            opt = optim.Adam(model.parameters(), lr=0.01)
        return model, opt, lr_scheduler.CosineAnnealingLR(opt, T_max=3)

    # uninterrupted: 3 epochs
    model, opt, sched = make(0)
    R.manual_seed(100)
    hist = _train(model, opt, sched, x, y, 3, seed=seed)
    straight = params(model)

    # interrupted after 1 epoch, then fresh objects resume from the file
    path = tmp_path / "run.npz"
    model, opt, sched = make(0)
    R.manual_seed(100)
    _train(model, opt, sched, x, y, 1, path=path, seed=seed)
    assert checkpoint.read_header(path)["epoch"] == 1
    model, opt, sched = make(7)  # different initial weights: everything must come from the file
    R.manual_seed(555)  # a different global random state: restored from the file too
    hist2 = _train(model, opt, sched, x, y, 3, path=path, resume=True, seed=seed)
    for k, v in straight.items():
        assert np.array_equal(model.state_dict()[k], v), k
    assert hist2["loss"] == hist["loss"] and hist2["val_accuracy"] == hist["val_accuracy"]
    assert hist2.epoch == [0, 1, 2] and checkpoint.read_header(path)["epoch"] == 3
    # resuming a finished run trains no more
    before = params(model)
    _train(model, opt, sched, x, y, 3, path=path, resume=True, seed=seed)
    for k, v in before.items():
        assert np.array_equal(model.state_dict()[k], v)


def test_resume_seeded_run_needs_seed(tmp_path):
    x, y = toy_data(32)
    model = small_net(0)
    opt = optim.SGD(model.parameters(), lr=0.01)
    path = tmp_path / "s.npz"
    _train(model, opt, None, x, y, 1, path=path, seed=1)
    with pytest.raises(ValueError, match="seed"):
        _train(model, opt, None, x, y, 2, path=path, resume=True, seed=None)
    with pytest.raises(ValueError, match="not a checkpoint written by fit"):
        checkpoint.save(model, tmp_path / "plain.npz", opt, epoch=1)
        _train(model, opt, None, x, y, 2, resume=tmp_path / "plain.npz", seed=1)


_SAVER = r"""
import sys, numpy as np
sys.path.insert(0, {root!r})
from fastcnn import checkpoint, nn
import fastcnn._random as R
R.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.Linear(512, 10))
i = 0
print("ready", flush=True)
while True:
    i += 1
    for p in model.parameters():
        p.data[...] = i
    checkpoint.save(model, {path!r}, epoch=i)
"""


def test_kill_during_save_keeps_last_checkpoint(tmp_path):
    path = str(tmp_path / "live.npz")
    code = _SAVER.format(root=ROOT, path=path)
    rng = np.random.default_rng(0)
    for trial in range(4):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout.readline().strip() == b"ready", proc.stderr.read().decode()
            deadline = time.time() + 30
            while not os.path.exists(path) and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(0.05 + 0.3 * rng.random())
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.Linear(512, 10))
        extra = checkpoint.load(model, path)  # always the last complete file
        epoch = extra["epoch"]
        assert epoch >= 1
        for p in model.parameters():
            assert np.all(p.data == epoch)
    # leftover temporary files from killed saves are the only debris, never the checkpoint itself
    assert all(f == "live.npz" or f.endswith(".tmp") for f in os.listdir(tmp_path))
