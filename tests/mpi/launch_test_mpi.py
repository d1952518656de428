"""Tests that start ``mpirun`` themselves: abort on error, checkpoint resume on 1 or 2 ranks,
and the ``fastcnn train-gan`` command under mpirun.

Run: ``python -m pytest tests/mpi/launch_test_mpi.py -q`` (``.ci/mpi.sh`` does this). Skips when
Open MPI or mpi4py is missing, unless FASTCNN_REQUIRE_MPI=1. Not collected by ``pytest tests``.
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REQUIRE = os.environ.get("FASTCNN_REQUIRE_MPI", "") not in ("", "0")


def _mpirun():
    cmd = os.environ.get("FASTCNN_MPIRUN")
    if cmd:
        return shlex.split(cmd)
    cmd = ["mpirun", "-n", "2", "--oversubscribe"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd


def _available():
    if shutil.which("mpirun") is None:
        return "mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py not installed (pip install fastcnn[distributed])"
    return None


_why = _available()
if _why:
    if REQUIRE:
        raise RuntimeError(f"FASTCNN_REQUIRE_MPI=1 but {_why}")
    pytest.skip(_why, allow_module_level=True)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in [k for k in env if k.startswith(("OMPI_COMM_WORLD", "PMI_", "PMIX_"))]:
        del env[k]
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run(args, mpi, timeout=120, cwd=None):
    cmd = (_mpirun() + ["-x", "PYTHONPATH", "-x", "OMP_NUM_THREADS"] if mpi else []) + [sys.executable] + args
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=cwd or ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    return p, time.monotonic() - t0


def test_failing_rank_aborts_the_whole_job():
    """Rank 1 raises while rank 0 waits in a collective: the job ends non-zero with a clear message."""
    script = os.path.join(HERE, "_train_run.py")
    p, elapsed = _run([script, "--epochs", "1", "--fail-on-rank", "1"], mpi=True, timeout=90)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert "rank 1 of 2 failed with RuntimeError" in out, out
    assert "deliberate failure on rank 1" in out, out
    assert "finished" not in out, out


def test_checkpoint_from_rank0_resumes_on_one_or_two_ranks(tmp_path):
    script = os.path.join(HERE, "_train_run.py")
    a, b = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    p, _ = _run([script, "--epochs", "1", "--checkpoint", a], mpi=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("finished") == 2
    shutil.copy(a, b)
    runs = {
        "resumed on 1": ([script, "--epochs", "2", "--checkpoint", a, "--resume"], False),
        "resumed on 2": ([script, "--epochs", "2", "--checkpoint", b, "--resume"], True),
        "uninterrupted on 1": ([script, "--epochs", "2"], False),
    }
    params = {}
    for name, (args, mpi) in runs.items():
        out = str(tmp_path / (name.replace(" ", "_") + ".npz"))
        p, _ = _run(args + ["--out", out], mpi=mpi)
        assert p.returncode == 0, name + "\n" + p.stdout + p.stderr
        with np.load(out) as f:
            params[name] = {k: f[k] for k in f.files}
    ref = params["uninterrupted on 1"]
    for name in ("resumed on 1", "resumed on 2"):
        for k, v in ref.items():
            np.testing.assert_allclose(params[name][k], v, rtol=0, atol=1e-10, err_msg=f"{name}: {k}")


def test_cli_train_gan_under_mpirun(tmp_path):
    out = tmp_path / "gan"
    env_cache = tmp_path / "cache"
    os.environ["FASTCNN_CACHE"] = str(env_cache)
    try:
        p, _ = _run(["-m", "fastcnn", "train-gan", "--epochs", "1", "--max-train", "128", "--batch-size", "32",
                     "--nz", "8", "--ngf", "8", "--ndf", "8", "--fid-samples", "64", "--classifier-epochs", "1",
                     "--quiet", "--out", str(out)], mpi=True, timeout=240)
    finally:
        del os.environ["FASTCNN_CACHE"]
    text = p.stdout + p.stderr
    assert p.returncode == 0, text
    assert p.stdout.count("done:") == 1, text          # the summary is printed by rank 0 only
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["steps"] == 4
    assert (out / "samples.png").is_file() and (out / "checkpoint" / "gan.npz").is_file()
