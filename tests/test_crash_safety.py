"""Crash safety of training with checkpoints: SIGKILL at random moments, then resume.

A training process (``fastcnn.fit`` with ``checkpoint=path, resume=True``, a
model whose checkpoint writes dominate each epoch) is killed with SIGKILL many
times at random moments, most of them during a checkpoint write. After every
kill the last complete checkpoint must load, its epoch must never go
backwards, and the next process resumes from it. When the run finally
completes, its parameters and optimiser state must equal those of an
uninterrupted run bit for bit. (tests/test_checkpoint.py covers kills of a
plain save loop; this file covers the training loop around it.)
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fastcnn import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 100

TRAINER = r"""
import sys
sys.path.insert(0, {root!r})
import numpy as np
import fastcnn
from fastcnn import nn, optim
from fastcnn.optim import lr_scheduler

fastcnn.set_num_threads(1)


def build():
    fastcnn.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    opt = optim.Adam(model.parameters(), lr=1e-3)
    sched = lr_scheduler.StepLR(opt, step_size=7, gamma=0.7)
    return model, opt, sched


rng = np.random.default_rng(0)
x = rng.random((16, 1, 8, 8), dtype=np.float32)
y = rng.integers(0, 10, 16)
model, opt, sched = build()
print("ready", flush=True)
fastcnn.fit(model, nn.CrossEntropyLoss(), opt, x, y, epochs={epochs}, batch_size=16, seed=5,
            progress=False, scheduler=sched, checkpoint={path!r}, resume=True)
print("done", flush=True)
"""


def _trainer(path):
    return [sys.executable, "-c", TRAINER.format(root=ROOT, epochs=EPOCHS, path=str(path))]


def _load(path):
    """Load the checkpoint into a fresh model and optimiser; returns (epoch, params, optimiser state)."""
    sys.path.insert(0, ROOT)
    import fastcnn
    from fastcnn import nn, optim
    fastcnn.manual_seed(123)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    opt = optim.Adam(model.parameters(), lr=0.5)
    extra = checkpoint.load(model, path, opt)
    state = {k: v.copy() for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    ostate = {f"{i}.{k}": np.array(v, copy=True) for i, st in osd["state"].items() for k, v in st.items()}
    return extra["epoch"], state, ostate


def _run_to_end(path, timeout=120):
    """Runs the trainer to the end; returns the seconds it spent training (after "ready")."""
    proc = subprocess.Popen(_trainer(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        t0 = time.perf_counter()
        out, err = proc.communicate(timeout=timeout)
        seconds = time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert line.strip() == b"ready" and b"done" in out
    return seconds


def test_sigkill_during_checkpoint_writes_then_resume_matches_uninterrupted(tmp_path):
    straight = tmp_path / "straight" / "run.npz"
    straight.parent.mkdir()
    train_s = _run_to_end(straight)
    epoch_ref, params_ref, opt_ref = _load(straight)
    assert epoch_ref == EPOCHS

    killed = tmp_path / "killed" / "run.npz"
    killed.parent.mkdir()
    rng = np.random.default_rng(2024)
    last_epoch, kills, mid_write, deadline = 0, 0, 0, time.time() + 45
    while kills < 30 and time.time() < deadline and not (kills >= 15 and mid_write >= 8):
        proc = subprocess.Popen(_trainer(killed), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = proc.stdout.readline()
            assert line.strip() == b"ready", proc.stderr.read().decode()[-3000:]
            # kill within the first tenth of a full run, so that many kills land
            # before the run completes, however fast this machine trains
            time.sleep(float(rng.uniform(0.0, 0.1 * train_s)))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        kills += 1
        debris = [f for f in os.listdir(killed.parent) if f.endswith(".tmp")]
        mid_write += bool(debris)
        for f in debris:  # a half-written temporary file: never the checkpoint itself
            os.unlink(killed.parent / f)
        assert set(os.listdir(killed.parent)) <= {"run.npz"}
        if killed.exists():
            epoch, _, _ = _load(killed)  # the last complete checkpoint always loads
            assert last_epoch <= epoch <= EPOCHS
            last_epoch = epoch
        if last_epoch == EPOCHS:
            break
    assert kills >= 5 and mid_write >= 1, (kills, mid_write)
    # finish the run from wherever it stopped
    _run_to_end(killed)
    epoch, params, opt_state = _load(killed)
    assert epoch == EPOCHS
    for k, v in params_ref.items():
        assert np.array_equal(params[k], v), f"{k} differs from the uninterrupted run"
    assert opt_state.keys() == opt_ref.keys()
    for k, v in opt_ref.items():
        assert np.array_equal(opt_state[k], v), f"optimiser state {k} differs from the uninterrupted run"
    print(f"crash safety: {kills} SIGKILLs ({mid_write} during a checkpoint write), "
          f"resumed to epoch {epoch}, final parameters identical")
