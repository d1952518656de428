"""Smoke tests of the benchmark driver (``python -m fastcnn.bench``): no timing asserts."""
import json
import os
import subprocess
import sys

import pytest

from fastcnn.bench import main, runner, workloads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _table_lines(text):
    return [line for line in text.splitlines() if line.startswith("|")]


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_quick_run_prints_table_and_json(tmp_path):
    out_json = tmp_path / "bench.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, "-m", "fastcnn.bench", "--quick", "--repeat", "1", "--threads", "1",
         "--only", "xent-fwdbwd", "--peak-size", "128", "--json", str(out_json)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = _table_lines(proc.stdout)
    assert _cells(lines[0]) == runner.COLUMNS
    rows = {_cells(line)[0]: _cells(line) for line in lines[2:]}
    assert set(rows) == {"xent-fwdbwd"}
    for name, row in rows.items():
        assert len(row) == len(runner.COLUMNS)
        assert not row[1].startswith(("error", "skipped")), row
        assert row[1].endswith(("µs", "ms", " s"))
    for key in ("CPU:", "ISA path", "threads: 1", "date:", "numpy float32 matmul 128^3"):
        assert key in proc.stdout

    report = json.loads(out_json.read_text())
    assert report["mode"] == "table"
    assert report["machine"]["threads"] == 1
    assert report["peak_gflops"] > 0
    by_name = {r["workload"]: r for r in report["results"]}
    for r in by_name.values():
        assert len(r["times"]["fastcnn"]) == 1
        assert r["median"]["fastcnn"] > 0
        assert r["rss_mib"]["fastcnn"] > 0
        if runner.torch_available():
            assert r["median"]["torch"] > 0


def test_table_without_torch_says_na():
    peak = {"workload": "gemm-2048", "flops": 2 * 2048 ** 3, "median": {"numpy": 0.5}}
    res = [{"workload": "gemm-1024", "flops": 2 * 1024 ** 3, "median": {"fastcnn": 0.01, "numpy": 0.012},
            "rss_mib": {"fastcnn": 50.0}},
           {"workload": "lenet-train", "skipped": "fastcnn.nn not importable"},
           {"workload": "bn2d-fwdbwd", "error": "RuntimeError: boom"}]
    lines = _table_lines(runner.format_table(peak, res))
    assert _cells(lines[0]) == runner.COLUMNS
    gemm = _cells(lines[2])
    col = dict(zip(runner.COLUMNS, gemm))
    assert col["torch"] == "n/a" and col["speed-up vs torch"] == "n/a" and col["peak RSS torch"] == "n/a"
    assert col["GFLOP/s"] == f"{2 * 1024 ** 3 / 0.01 / 1e9:.1f}"
    assert col["% of numpy peak"].endswith("%")
    assert "skipped" in lines[3] and "error" in lines[4]


def test_scaling_table_format():
    res = [{"workload": "conv-cifar-fwdbwd", "median": {"1": 0.2, "2": 0.1}, "machine": {"1": 1.0, "2": 1.25},
            "times": {"1": [0.2] * 5, "2": [0.1] * 5}, "full_speed_rounds": 3,
            "full_speed_speedup": {"1": 1.0, "2": 1.96}},
           {"workload": "convT-fwdbwd", "median": {"1": 0.2, "2": 0.2}, "machine": {"1": 1.0, "2": 1.0},
            "times": {"1": [0.2] * 5, "2": [0.2] * 5}, "full_speed_rounds": 0,
            "full_speed_speedup": {"1": None, "2": None}},
           {"workload": "lenet-train", "median": {"1": 0.3, "2": 0.2}}]
    lines = _table_lines(runner.format_scaling(res, [1, 2]))
    assert _cells(lines[0]) == ["workload", "1 thread", "2 threads", "speed-up 1→2", "machine 1→2",
                                "speed-up 1→2, full-speed rounds"]
    assert _cells(lines[2])[-3:] == ["2.00×", "1.25×", "1.96× (3 of 5)"]
    assert _cells(lines[3])[-3:] == ["1.00×", "1.00×", "n/a (0 of 5)"]
    assert _cells(lines[4])[-3:] == ["1.50×", "n/a", "n/a"]


def test_scaling_run_reports_the_machine_probe(tmp_path):
    out_json = tmp_path / "scaling.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, "-m", "fastcnn.bench", "--scaling", "--quick", "--repeat", "2", "--threads", "2",
         "--only", "conv-batch1-fwdbwd", "--json", str(out_json)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = _table_lines(proc.stdout)
    assert _cells(lines[0])[-2:] == ["machine 1→2", "speed-up 1→2, full-speed rounds"]
    row = _cells(lines[2])
    assert row[0] == "conv-batch1-fwdbwd" and row[-3].endswith("×") and row[-2].endswith("×")
    assert row[-1].endswith("of 2)")
    assert "machine probe" in proc.stdout
    r = json.loads(out_json.read_text())["results"][0]
    assert len(r["times"]["2"]) == 2 and len(r["machine_times"]["2"]) == 2
    assert r["machine"]["1"] == 1.0 and r["machine"]["2"] > 0
    assert r["full_speed_rounds"] in (0, 1, 2)
    # a speed-up over the full-speed rounds exactly where there were any
    assert (r["full_speed_rounds"] == 0) == (r["full_speed_speedup"]["2"] is None)


def test_machine_probe_runs_every_isa_and_thread_count():
    import fastcnn
    from fastcnn._kernels import _gemm
    isa = fastcnn.get_isa()
    try:
        for name in fastcnn.supported_isas():
            fastcnn.set_isa(name)
            for n in (1, 2, 3):
                _gemm.ukr_probe(10, 256, n)
            _gemm.ukr_probe(0, 1, 1)
            _gemm.ukr_probe(3, 1, 2)
    finally:
        fastcnn.set_isa(isa)


def test_select_and_thread_counts():
    assert workloads.select("gemm") == ["gemm-1024", "gemm-2048"]
    assert workloads.select("maxpool-fwd") == ["maxpool-fwd"]
    assert workloads.select("maxpool-fwd*,xent") == ["maxpool-fwd", "maxpool-fwdbwd", "xent-fwdbwd"]
    assert workloads.select("conv-*-fwd") == [f"conv-{t}-fwd" for t in workloads.CONV_SHAPES]
    assert set(workloads.SCALING) >= {"conv-cifar-fwdbwd", "convT-fwdbwd", "lenet-train"}
    assert runner.thread_counts(1) == [1]
    assert runner.thread_counts(6) == [1, 2, 4, 6]
    assert runner.thread_counts(16) == [1, 2, 4, 8, 16]
    assert workloads.get("gemm-64").flops == 2 * 64 ** 3
    with pytest.raises(KeyError):
        workloads.get("nope")


def test_every_reference_workload_is_defined():
    names = set(workloads.WORKLOADS)
    for op in ("lenet1", "lenet2", "cifar", "dcgan-d", "batch1"):
        assert {f"conv-{op}-fwd", f"conv-{op}-fwdbwd"} <= names
        assert "numpy" in workloads.WORKLOADS[f"conv-{op}-fwd"].engines
    assert {"convT-fwd", "convT-fwdbwd", "maxpool-fwd", "maxpool-fwdbwd", "gemm-1024", "gemm-2048",
            "bn2d-fwdbwd", "xent-fwdbwd", "lenet-train", "lenet-infer-b1", "lenet-infer-b64",
            "dcgan28-iter", "dcgan64-iter"} <= names
    assert workloads.WORKLOADS["conv-cifar-fwdbwd"].flops == 3 * 2 * 64 * 64 * 32 * 32 * 64 * 9


def test_im2col_baseline_matches_fastcnn(rng):
    import numpy as np
    import fastcnn.functional as F
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 4, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    ref = F.conv2d(x, w, b, 2, 1)
    np.testing.assert_allclose(workloads.im2col_conv2d(x, w, b, 2, 1), ref, rtol=1e-4, atol=1e-4)


def test_cli_list_and_bad_pattern(capsys):
    assert main(["--list"]) == 0
    assert "dcgan64-iter" in capsys.readouterr().out
    assert main(["--only", "no-such-workload"]) == 2
    assert "no workload matches" in capsys.readouterr().err
