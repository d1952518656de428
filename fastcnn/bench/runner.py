"""The benchmark driver behind ``fastcnn bench`` and ``python -m fastcnn.bench``.

Every workload runs in a child process of its own (``fastcnn.bench._child``),
so its peak resident memory is its own and one failing workload does not stop
the run. The driver collects the children's JSON results and prints a
Markdown table.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

from . import workloads as W
from ._child import FULL_SPEED, MARK

__all__ = ["main", "run", "format_table", "format_scaling", "machine_info", "COLUMNS"]

COLUMNS = ["workload", "fastcnn", "torch", "numpy", "speed-up vs torch", "GFLOP/s",
           "torch GFLOP/s", "% of numpy peak", "peak RSS fastcnn", "peak RSS torch"]

_PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ------------------------------------------------------------------ machine
def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_mhz():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("cpu mhz"):
                    return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def cpus_available():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _loadavg():
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def _version(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return None


def torch_available():
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def machine_info(threads):
    """The header facts: CPU, ISA path, cores, threads, versions, date, load."""
    import numpy as np
    import fastcnn
    info = {"cpu": _cpu_model(), "cpus_available": cpus_available(), "threads": threads,
            "fastcnn": fastcnn.__version__, "numpy": np.__version__,
            "torch": _version("torch") if torch_available() else None,
            "python": platform.python_version(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "loadavg_start": _loadavg()}
    try:
        cfg = fastcnn.config()
        info.update(isa=cfg.get("isa"), openmp=cfg.get("openmp"), compiler=cfg.get("compiler"))
    except Exception as exc:  # the header is informative only
        info.update(isa=f"unknown ({exc})", openmp=None, compiler=None)
    mhz = _cpu_mhz()
    if mhz and info.get("isa") in ("avx2", "avx512"):
        # 2 FMA units per core: 2 x (8 or 16 float32 lanes) x 2 FLOP per cycle
        per_cycle = 32 if info["isa"] == "avx2" else 64
        info["fma_peak_gflops"] = threads * mhz / 1000.0 * per_cycle
        info["fma_peak_note"] = (f"{threads} cores x {mhz / 1000:.2f} GHz (reported) x {per_cycle} "
                                 "FLOP/cycle, assuming two FMA units of the full vector width"
                                 + ("; CPUs that run 512-bit FMAs as two 256-bit halves (AMD Zen 4) "
                                    "reach half of it" if info["isa"] == "avx512" else ""))
    return info


# -------------------------------------------------------------- children
def _child_env(threads):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = str(threads)
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PKG_ROOT + (os.pathsep + pp if pp else "")
    return env


def run_child(spec, timeout=900):
    """Run one child process; returns its result dict (with 'error' on failure)."""
    env = _child_env(spec["threads"] if spec["mode"] != "scaling" else max(spec["threads_list"]))
    cmd = [sys.executable, "-m", "fastcnn.bench._child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"workload": spec["workload"], "error": f"timed out after {timeout} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
    return {"workload": spec["workload"],
            "error": f"child exited with {proc.returncode}: " + " | ".join(tail)}


def _settings(args):
    if args.quick:
        s = {"repeat": 3, "warmup": 1, "target": 0.005}
    else:
        s = {"repeat": 7, "warmup": 2, "target": 0.02}
    if args.repeat is not None:
        s["repeat"] = args.repeat
    return s


def _progress(msg, quiet):
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def run(names, threads, settings, use_torch=True, torch_rss=True, peak_size=2048, quiet=False):
    """Run the workloads ``names``; returns (peak result, list of results).

    numpy's matmul of ``peak_size`` is measured at the start and at the end of
    the run (and by the ``gemm-<peak_size>`` workload when it runs); the peak is
    the best of these, so one measurement disturbed by other processes does
    not set the scale.
    """
    t_start = time.perf_counter()
    peak_spec = dict(settings, mode="time", workload=f"gemm-{peak_size}", engines=["numpy"], threads=threads)
    _progress(f"reference: numpy matmul {peak_size}^3 ...", quiet)
    peaks = [run_child(peak_spec)]
    results = []
    for i, name in enumerate(names, 1):
        t0 = time.perf_counter()
        engines = ["fastcnn", "numpy"] + (["torch"] if use_torch else [])
        r = run_child(dict(settings, mode="time", workload=name, engines=engines, threads=threads))
        if use_torch and torch_rss and "error" not in r and "skipped" not in r:
            rr = run_child(dict(settings, mode="rss", workload=name, engines=["torch"], threads=threads))
            if "rss_mib" in rr:
                r.setdefault("rss_mib", {}).update(rr["rss_mib"])
                r["rss_base_torch_mib"] = rr.get("rss_base_mib")
        results.append(r)
        if name == f"gemm-{peak_size}" and "numpy" in r.get("median", {}):
            peaks.append(r)
        status = r.get("error") or r.get("skipped") or "ok"
        _progress(f"[{i}/{len(names)}] {name}: {status} ({time.perf_counter() - t0:.1f} s, "
                  f"total {time.perf_counter() - t_start:.0f} s)", quiet)
    _progress(f"reference: numpy matmul {peak_size}^3 again ...", quiet)
    peaks.append(run_child(peak_spec))
    measured = [p for p in peaks if peak_gflops(p)]
    peak = dict(max(measured, key=peak_gflops) if measured else peaks[0])
    peak["all_gflops"] = [peak_gflops(p) for p in measured]
    return peak, results


def run_scaling(names, counts, settings, quiet=False):
    results = []
    for i, name in enumerate(names, 1):
        t0 = time.perf_counter()
        r = run_child(dict(settings, mode="scaling", workload=name, threads_list=counts))
        results.append(r)
        _progress(f"[{i}/{len(names)}] scaling {name}: {r.get('error') or r.get('skipped') or 'ok'} "
                  f"({time.perf_counter() - t0:.1f} s)", quiet)
    return results


def thread_counts(max_threads):
    """1, 2, 4, ... below ``max_threads``, then ``max_threads``."""
    counts, n = [], 1
    while n < max_threads:
        counts.append(n)
        n *= 2
    counts.append(max_threads)
    return counts


# ------------------------------------------------------------- formatting
def fmt_time(t):
    if t is None:
        return "n/a"
    if t < 1e-3:
        return f"{t * 1e6:.1f} µs"
    if t < 1.0:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.3f} s"


def peak_gflops(peak):
    t = (peak.get("median") or {}).get("numpy")
    return peak["flops"] / t / 1e9 if t and peak.get("flops") else None


def _row(r, peak):
    name = r.get("workload", "?")
    if "error" in r:
        return [name, f"error: {r['error']}"] + [""] * (len(COLUMNS) - 2)
    if "skipped" in r:
        return [name, f"skipped: {r['skipped']}"] + [""] * (len(COLUMNS) - 2)
    med = r.get("median", {})
    fc, th, npb = med.get("fastcnn"), med.get("torch"), med.get("numpy")
    fl = r.get("flops")
    gf = fl / fc / 1e9 if fl and fc else None
    tgf = fl / th / 1e9 if fl and th else None
    rss = r.get("rss_mib", {})
    return [name, fmt_time(fc), fmt_time(th), fmt_time(npb) if npb else "-",
            f"{th / fc:.2f}×" if fc and th else "n/a",
            f"{gf:.1f}" if gf else "-",
            f"{tgf:.1f}" if tgf else ("-" if not fl else "n/a"),
            f"{100 * gf / peak:.0f}%" if gf and peak else "-",
            f"{rss['fastcnn']:.0f} MiB" if "fastcnn" in rss else "-",
            f"{rss['torch']:.0f} MiB" if "torch" in rss else ("n/a" if th is None else "-")]


def _md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_REPORTED_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_PROC_BIND", "OMP_PLACES", "FASTCNN_ISA")


def _rss_baselines(results):
    fc = [r["rss_base_mib"] for r in results if r.get("rss_base_mib")]
    th = [r["rss_base_torch_mib"] for r in results if r.get("rss_base_torch_mib")]
    return (min(fc) if fc else None), (min(th) if th else None)


def format_header(info, peak=None, settings=None, results=None, scaling=False):
    la = info.get("loadavg_start")
    lines = [f"- CPU: {info['cpu']} ({info['cpus_available']} cores available to this process, "
             f"{os.cpu_count()} online)",
             f"- fastcnn {info['fastcnn']} (ISA path {info.get('isa')}, OpenMP {info.get('openmp')}, "
             f"compiler {info.get('compiler')}), numpy {info['numpy']}, "
             f"torch {info['torch'] or 'n/a (not installed)'}, Python {info['python']}",
             (f"- thread counts: {', '.join(map(str, info['thread_counts']))} (fastcnn only)" if scaling else
              f"- threads: {info['threads']} (fastcnn, PyTorch and numpy's BLAS alike)"),
             f"- date: {info['date']}"]
    if la:
        end = info.get("loadavg_end")
        lines.append(f"- load average at start: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}"
                     + (f"; at end: {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}" if end else ""))
    if peak is not None:
        pg = peak_gflops(peak)
        allg = peak.get("all_gflops") or []
        lines.append(f"- numpy float32 matmul {peak['workload'][5:]}^3 in this run: "
                     + (f"{pg:.1f} GFLOP/s, the '% of numpy peak' reference (best of "
                        + ", ".join(f"{g:.1f}" for g in allg) + " measured at the start, in the gemm "
                        "workload where it ran, and at the end)" if pg and len(allg) > 1 else
                        f"{pg:.1f} GFLOP/s (the '% of numpy peak' reference)" if pg else
                        f"not measured ({peak.get('error', 'unknown error')})"))
    if info.get("fma_peak_gflops"):
        lines.append(f"- nominal FMA peak: {info['fma_peak_gflops']:.0f} GFLOP/s ({info['fma_peak_note']})")
    if results:
        fc, th = _rss_baselines(results)
        if fc:
            lines.append(f"- peak RSS is the whole process's, interpreter included: {fc:.0f} MiB after "
                         "importing numpy and fastcnn" + (f", {th:.0f} MiB after importing torch" if th else ""))
    env = [f"{k}={os.environ[k]}" for k in _REPORTED_ENV if os.environ.get(k)]
    if env:
        lines.append("- environment: " + ", ".join(env))
    if settings:
        what = ("thread counts alternating (1, 2, ..., 1, 2, ...) in one process per workload; before and "
                "after each sample, the machine probe at the same thread count: the float32 "
                "micro-kernel on panels held in each core's own cache, the same work on every thread, no "
                "memory traffic; 'machine 1→n' is n times its time on 1 thread over its time on n (medians "
                "of the slower probe of each sample), how many cores' compute the machine gave while the "
                "workload was measured; 'full-speed rounds' are the rounds (one sample at each thread "
                f"count) in which every probe ran at least {FULL_SPEED:.0%} of the fastest probe's speed, "
                "and the speed-up there is the median of those rounds' own" if scaling
                else "engines alternating (fastcnn, numpy, torch, fastcnn, ...) in one process per workload, "
                     "with a 0.25 s pause after each numpy sample (OpenBLAS's worker threads spin for "
                     "about 0.1 s after a call)")
        lines.append(f"- medians of {settings['repeat']} timed samples, {what}; each sample >= "
                     f"{settings['target'] * 1e3:.0f} ms (inner loop), after {settings['warmup']} "
                     "warm-up call(s) (workloads slower than 1 s per call: 1 warm-up call, at most 5 samples); "
                     "times are per call")
    return "\n".join(lines)


def format_table(peak, results):
    pg = peak_gflops(peak) if peak else None
    return _md_table(COLUMNS, [_row(r, pg) for r in results])


def format_scaling(results, counts):
    header = ["workload"] + [f"{n} thread{'s' if n > 1 else ''}" for n in counts] + \
             [f"speed-up 1→{n}" for n in counts[1:]] + [f"machine 1→{n}" for n in counts[1:]] + \
             [f"speed-up 1→{n}, full-speed rounds" for n in counts[1:]]
    rows = []
    for r in results:
        name = r.get("workload", "?")
        if "error" in r or "skipped" in r:
            msg = f"error: {r['error']}" if "error" in r else f"skipped: {r['skipped']}"
            rows.append([name, msg] + [""] * (len(header) - 2))
            continue
        med = r["median"]
        base = med[str(counts[0])]
        mach = r.get("machine") or {}
        full = r.get("full_speed_speedup") or {}
        rounds = f"{r.get('full_speed_rounds', 0)} of {len(r['times'][str(counts[0])])}" if "times" in r else ""
        rows.append([name] + [fmt_time(med[str(n)]) for n in counts]
                    + [f"{base / med[str(n)]:.2f}×" for n in counts[1:]]
                    + [f"{mach[str(n)]:.2f}×" if mach.get(str(n)) else "n/a" for n in counts[1:]]
                    + [f"{full[str(n)]:.2f}× ({rounds})" if full.get(str(n)) else
                       f"n/a ({rounds})" if rounds else "n/a" for n in counts[1:]])
    return _md_table(header, rows)


# -------------------------------------------------------------------- CLI
def build_parser(prog="fastcnn bench"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark fastcnn against PyTorch and NumPy on the reference workloads "
                    "(each workload in its own process) and print a Markdown table.")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for every engine (default: the CPUs available to this process)")
    p.add_argument("--only", metavar="PATTERN", default=None,
                   help="comma-separated substrings or globs of workload names, e.g. 'gemm' or 'conv-*-fwd'")
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions and short samples, no separate PyTorch memory run")
    p.add_argument("--repeat", type=int, default=None, metavar="N",
                   help="timed samples per engine (default 7, 3 with --quick)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write all results as JSON to FILE")
    p.add_argument("--scaling", action="store_true",
                   help="thread scaling of fastcnn on the convolution forward+backward workloads "
                        "and the LeNet step: 1, 2, 4, ... up to --threads")
    p.add_argument("--no-torch", action="store_true", help="do not run PyTorch even if it is installed")
    p.add_argument("--peak-size", type=int, default=2048, metavar="N",
                   help="size of the numpy matmul measured as the machine's practical peak (default 2048)")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    return p


def main(argv=None, prog="fastcnn bench"):
    """Entry point of ``fastcnn bench``; returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    if args.list:
        for name, w in W.WORKLOADS.items():
            print(f"{name:20s} {w.description}")
        return 0
    threads = args.threads if args.threads is not None else cpus_available()
    if threads < 1:
        print("error: --threads must be >= 1", file=sys.stderr)
        return 2
    if args.repeat is not None and args.repeat < 1:
        print("error: --repeat must be >= 1", file=sys.stderr)
        return 2
    if args.peak_size < 1:
        print("error: --peak-size must be >= 1", file=sys.stderr)
        return 2
    settings = _settings(args)
    use_torch = torch_available() and not args.no_torch
    info = machine_info(threads)
    if not use_torch:
        info["torch"] = None
    report = {"machine": info, "settings": settings}

    if args.scaling:
        names = W.select(args.only, W.SCALING)
        if not names:
            print(f"error: no scaling workload matches {args.only!r}; "
                  f"scaling workloads: {', '.join(W.SCALING)}", file=sys.stderr)
            return 2
        counts = thread_counts(threads)
        info["thread_counts"] = counts
        results = run_scaling(names, counts, settings)
        info["loadavg_end"] = _loadavg()
        print("## fastcnn thread scaling\n")
        print(format_header(info, settings=settings, scaling=True))
        print()
        print(format_scaling(results, counts))
        report.update(mode="scaling", thread_counts=counts, results=results)
    else:
        names = W.select(args.only)
        if not names:
            print(f"error: no workload matches {args.only!r}; see --list", file=sys.stderr)
            return 2
        peak, results = run(names, threads, settings, use_torch=use_torch,
                            torch_rss=not args.quick, peak_size=args.peak_size)
        info["loadavg_end"] = _loadavg()
        print("## fastcnn benchmark\n")
        print(format_header(info, peak, settings, results))
        print()
        print(format_table(peak, results))
        report.update(mode="table", peak=peak, peak_gflops=peak_gflops(peak), results=results)
    if args.json:
        for r in report["results"]:
            r.pop("traceback", None) if not r.get("error") else None
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    failed = [r for r in report["results"] if "error" in r]
    return 1 if failed and len(failed) == len(report["results"]) else 0
