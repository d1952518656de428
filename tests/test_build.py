"""Build configuration: OpenMP on in the normal build, config reporting, env switches."""
import os
import subprocess
import sys

import fastcnn


def test_openmp_enabled_in_normal_build():
    expect_serial = os.environ.get("FASTCNN_EXPECT_NO_OPENMP", "") not in ("", "0")
    assert fastcnn.config()["openmp"] is (not expect_serial)


def test_config_and_show_config(capsys):
    cfg = fastcnn.config()
    for key in ("version", "isa", "openmp", "num_threads", "compiler"):
        assert key in cfg
    assert cfg["isa"] in ("avx512", "avx2", "generic")
    fastcnn.show_config()
    out = capsys.readouterr().out
    assert "isa" in out and cfg["isa"] in out and "openmp" in out


def test_default_threads_follow_omp_num_threads():
    code = "import fastcnn; print(fastcnn.get_num_threads())"
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"
    env.pop("OMP_NUM_THREADS")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) == len(os.sched_getaffinity(0))


def test_fastcnn_isa_environment_switch():
    code = "import fastcnn; print(fastcnn.get_isa())"
    env = dict(os.environ, FASTCNN_ISA="generic")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "generic"
    unsupported = [i for i in ("avx512", "avx2") if i not in fastcnn.supported_isas()]
    if unsupported:
        env["FASTCNN_ISA"] = unsupported[0]
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert r.returncode != 0 and "not supported" in r.stderr
