"""The ``fastcnn`` command: end to end on tiny settings, and argument errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastcnn.cli import main

pytest.importorskip("sklearn")
pytest.importorskip("PIL")

TINY = ["--epochs", "1", "--batch-size", "32", "--nz", "8", "--ngf", "4", "--ndf", "4", "--max-train", "128",
        "--fid-samples", "64", "--classifier-epochs", "1", "--quiet"]


@pytest.fixture
def run(capsys):
    def _run(*argv):
        rc = main(list(argv))
        out, err = capsys.readouterr()
        return rc, out, err
    return _run


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One classifier cache for the module (FASTCNN_CACHE points into a temporary directory)."""
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("FASTCNN_CACHE")
    os.environ["FASTCNN_CACHE"] = str(path)
    yield path
    if old is None:
        del os.environ["FASTCNN_CACHE"]
    else:
        os.environ["FASTCNN_CACHE"] = old


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("run") / "gan"
    import io
    from contextlib import redirect_stderr, redirect_stdout
    buf, ebuf = io.StringIO(), io.StringIO()
    with redirect_stdout(buf), redirect_stderr(ebuf):
        rc = main(["train-gan", "--out", str(out), *TINY])
    assert rc == 0, ebuf.getvalue()
    return out, buf.getvalue()


def test_train_gan_end_to_end(tmp_path, gan_run, cache, run):
    import shutil
    out = tmp_path / "gan"
    shutil.copytree(gan_run[0], out)
    stdout = gan_run[1]
    for name in ("samples.png", "samples_by_code.png", "losses.csv", "fid.csv", "config.json", "summary.json", "checkpoint/gan.npz",
                 "samples/epoch_000.png", "samples/epoch_001.png"):
        assert (out / name).is_file(), name
    assert (out / "losses.png").is_file() or "matplotlib is not installed" in stdout
    assert "FID" in stdout and "images/s" in stdout and "recognised" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["steps"] == 4
    assert summary["fid_initial"] > 0 and 0 <= summary["recognised"] <= 1
    assert summary["fid_test_initial"] > 0 and 0 <= summary["classifier_test_confident"] <= 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["translate"] == 1 and cfg["lr_d"] is None and cfg["codes"] == 10    # the digits defaults
    assert "code_loss" in (out / "losses.csv").read_text().splitlines()[0]
    fid_rows = (out / "fid.csv").read_text().strip().splitlines()
    assert fid_rows[0].startswith("epoch,fid") and len(fid_rows) == 3
    assert list(cache.glob("classifier-digits-16.npz"))

    # resume: continue to epoch 2 from the checkpoint, reusing the cached classifier
    rc, stdout2, err = run("train-gan", "--out", str(out), "--resume", "--epochs", "2", "--quiet")
    assert rc == 0, err
    assert "resuming" in stdout2 and "cached" in stdout2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["steps"] == 8
    assert len((out / "fid.csv").read_text().strip().splitlines()) == 4

    # sample and interpolate
    png = out / "s.png"
    rc, stdout, err = run("sample", "--checkpoint", str(out), "--n", "9", "--out", str(png))
    assert rc == 0 and png.is_file(), err
    from PIL import Image
    assert Image.open(png).size == (3 * 32 + 4 * 2, 3 * 32 + 4 * 2)
    rc, _, err = run("sample", "--checkpoint", str(out / "checkpoint" / "gan.npz"), "--interpolate", "--n", "2",
                     "--steps", "4", "--out", str(out / "i.png"))
    assert rc == 0 and (out / "i.png").is_file(), err
    rc, _, err = run("sample", "--checkpoint", str(out), "--n", "4", "--code", "7", "--out", str(out / "c.png"))
    assert rc == 0 and (out / "c.png").is_file(), err
    rc, _, err = run("sample", "--checkpoint", str(out), "--code", "10", "--out", str(out / "c.png"))
    assert rc == 2 and "codes 0 to 9" in err

    # inpaint test images and a user image
    rc, stdout, err = run("inpaint", "--checkpoint", str(out), "--test-index", "3", "--count", "2", "--steps", "5",
                          "--restarts", "1", "--out", str(out / "inp.png"))
    assert rc == 0 and (out / "inp.png").is_file(), err
    assert "hole MSE" in stdout and "mean-image fill" in stdout
    img = np.zeros((20, 20), np.uint8)
    img[5:15, 8:12] = 255
    Image.fromarray(img).save(out / "digit.png")
    rc, stdout, err = run("inpaint", "--checkpoint", str(out), "--image", str(out / "digit.png"), "--mask",
                          "box:2,2,6,6", "--steps", "3", "--restarts", "1", "--out", str(out / "inp2.png"))
    assert rc == 0 and (out / "inp2.png").is_file(), err


def test_train_classifier(tmp_path, run, cache):
    out = tmp_path / "clf"
    rc, stdout, err = run("train-classifier", "--epochs", "1", "--out", str(out), "--quiet")
    assert rc == 0, err
    assert "test accuracy" in stdout and "precision" in stdout
    assert (out / "confusion.png").is_file() and (out / "classifier.npz").is_file()


def test_info(run):
    rc, out, err = run("info")
    assert rc == 0 and out.strip()


def test_python_dash_m(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd()] + sys.path))
    p = subprocess.run([sys.executable, "-m", "fastcnn", "train-gan", "--epochs", "-3"], capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["train-gan", "--epochs", "-1"],
    ["train-gan", "--epochs", "two"],
    ["train-gan", "--batch-size", "0"],
    ["train-gan", "--lr", "-0.1"],
    ["train-gan", "--data", "cifar"],
    ["train-gan", "--data", "mnist"],
    ["train-gan", "--data", "mnist:/no/such/dir"],
    ["train-gan", "--image-size", "20"],
    ["train-gan", "--label-smoothing", "1.5"],
    ["train-gan", "--translate", "-1"],
    ["train-gan", "--lr-d", "0"],
    ["train-gan", "--codes", "1"],
    ["train-gan", "--codes", "-2"],
    ["train-gan", "--code-weight", "-1"],
    ["train-gan", "--bogus"],
    ["sample", "--out", "x.png"],
    ["sample", "--checkpoint", "/no/such/run", "--out", "x.png"],
    ["sample", "--checkpoint", "/no/such/run", "--n", "0", "--out", "x.png"],
    ["inpaint", "--checkpoint", "/no/such/run", "--out", "x.png"],
    ["inpaint", "--checkpoint", "/no/such/run", "--mask", "box:1,2", "--out", "x.png"],
    ["inpaint", "--checkpoint", "/no/such/run", "--mask", "ring", "--out", "x.png"],
    ["frobnicate"],
    [],
], ids=lambda a: " ".join(a) or "no-command")
def test_bad_arguments_exit_2_with_one_line(argv, run, tmp_path, cache):
    rc, out, err = run(*argv)
    assert rc == 2
    if argv:
        assert len(err.strip().splitlines()) == 1, err
        assert "error" in err
    assert "Traceback" not in err


def test_resume_without_checkpoint_and_bad_inputs(tmp_path, run, gan_run):
    rc, _, err = run("train-gan", "--out", str(tmp_path / "empty"), "--resume")
    assert rc == 2 and "no checkpoint" in err and len(err.strip().splitlines()) == 1
    out, _ = gan_run
    rc, _, err = run("inpaint", "--checkpoint", str(out), "--image", str(tmp_path / "none.png"), "--out",
                     str(tmp_path / "o.png"))
    assert rc == 2 and "no such image" in err
    rc, _, err = run("inpaint", "--checkpoint", str(out), "--test-index", "100000", "--out", str(tmp_path / "o.png"))
    assert rc == 2 and "out of range" in err
    rc, _, err = run("inpaint", "--checkpoint", str(out), "--mask", "box:10,10,8,8", "--test-index", "0",
                     "--out", str(tmp_path / "o.png"))
    assert rc == 2 and "does not fit" in err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a checkpoint")
    rc, _, err = run("sample", "--checkpoint", str(bad), "--out", str(tmp_path / "o.png"))
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bench_dispatches(monkeypatch, run):
    import types
    calls = []
    fake = types.ModuleType("fastcnn.bench")
    fake.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "fastcnn.bench", fake)
    import fastcnn
    monkeypatch.setattr(fastcnn, "bench", fake, raising=False)
    rc, _, _ = run("bench", "--quick", "conv")
    assert rc == 0 and calls == [["--quick", "conv"]]
