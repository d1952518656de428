"""One benchmark process: builds one workload, times it, prints a JSON line.

Run by the benchmark driver as ``python -m fastcnn.bench._child SPEC`` so that
every workload has a process (and a peak resident memory) of its own. The
thread counts of fastcnn, OpenMP, the BLAS of numpy and PyTorch are set by the
driver through the environment and again here.

Modes:

* ``time``: builds the engines in the order fastcnn, numpy, torch (PyTorch is
  imported only after fastcnn's peak memory has been read, so that figure is
  fastcnn's own), warms each up, picks per engine an inner loop count that
  makes a timed sample at least ``target`` seconds long, then times the
  engines alternately, ``repeat`` rounds.
* ``rss``: builds and runs one engine only and reports the process peak.
* ``scaling``: fastcnn only, alternating the thread counts of ``threads_list``
  inside one process; before and after each sample, the same thread count
  runs a fixed compute-only probe, whose speed-up tells how many cores the
  machine gave at that moment.
"""
import gc
import json
import math
import resource
import sys
import time

MARK = "@@FASTCNN-BENCH@@"


def _maxrss_mib():
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _once(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


SLOW_CALL_S = 1.0   # calls longer than this get one warm-up call and at most 5 timed samples
FULL_SPEED = 0.9    # a scaling round is at full speed where every probe ran at least this fraction of the fastest

# Pause after an engine's sample before the next engine's: numpy's OpenBLAS
# worker threads keep spinning for about 0.1 s after each call, and on a
# machine with as many cores as threads they would take a core from whichever
# engine runs next.
SETTLE_AFTER_S = {"numpy": 0.25}


def _warm_up(fn, calls):
    """Runs ``fn`` ``calls`` times (at least once; once if a call is slow); returns the fastest time."""
    best = _once(fn)
    for _ in range(calls - 1):
        if best > SLOW_CALL_S:
            break
        best = min(best, _once(fn))
    return best


def _inner_count(fn, target, t=None, max_inner=100000):
    """Calls per timed sample so that a sample lasts at least ``target`` seconds."""
    t = max(_once(fn) if t is None else t, 1e-7)
    if t >= target:
        return 1
    # a second look, to be robust to one slow call
    t = max(min(t, _once(fn)), 1e-7)
    return int(min(max_inner, max(1, math.ceil(target / t))))


def _sample(fn, inner):
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def _median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _set_threads(n, torch=None):
    import fastcnn
    fastcnn.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n)
    except ImportError:
        pass
    if torch is not None:
        torch.set_num_threads(n)


def _run_time(spec, out):
    import numpy as np
    import fastcnn
    from . import workloads

    threads = spec["threads"]
    _set_threads(threads)
    out["rss_base_mib"] = _maxrss_mib()
    w = workloads.get(spec["workload"])
    engines = [e for e in spec["engines"] if e in w.builders]
    data = w.data(np.random.default_rng(spec.get("seed", 0)))
    ctx = {}
    fns = {}
    warm = {}
    warmup = spec["warmup"]
    for engine in engines:
        if engine == "torch":
            t0 = time.perf_counter()
            import torch
            out["torch_import_s"] = time.perf_counter() - t0
            out["torch_version"] = torch.__version__
            _set_threads(threads, torch)
        try:
            fn = w.build(engine, data, ctx)
        except workloads.SkipWorkload as exc:
            if engine == "fastcnn":
                out["skipped"] = str(exc)
                return
            out.setdefault("notes", []).append(f"{engine}: {exc}")
            continue
        warm[engine] = _warm_up(fn, warmup)
        fns[engine] = fn
        if engine in SETTLE_AFTER_S:
            time.sleep(SETTLE_AFTER_S[engine])
        if engine == "fastcnn":
            out["rss_mib"] = {"fastcnn": _maxrss_mib()}
    out["fastcnn_version"] = fastcnn.__version__
    target = spec["target"]
    inner = {e: _inner_count(fn, target, warm[e]) for e, fn in fns.items()}
    times = {e: [] for e in fns}
    repeat = spec["repeat"]
    if min(warm.values()) > SLOW_CALL_S:
        repeat = min(repeat, 5)
    out["repeat"] = repeat
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            for e, fn in fns.items():
                times[e].append(_sample(fn, inner[e]))
                if e in SETTLE_AFTER_S:
                    time.sleep(SETTLE_AFTER_S[e])
    finally:
        gc.enable()
    out["inner"] = inner
    out["times"] = times
    out["median"] = {e: _median(t) for e, t in times.items()}
    out["min"] = {e: min(t) for e, t in times.items()}
    out["flops"] = w.flops


def _run_rss(spec, out):
    import numpy as np
    from . import workloads

    engine = spec["engines"][0]
    torch = None
    if engine == "torch":
        import torch
    _set_threads(spec["threads"], torch)
    out["rss_base_mib"] = _maxrss_mib()
    w = workloads.get(spec["workload"])
    data = w.data(np.random.default_rng(spec.get("seed", 0)))
    try:
        fn = w.build(engine, data, {})
    except workloads.SkipWorkload as exc:
        out["skipped"] = str(exc)
        return
    for _ in range(max(2, spec["warmup"])):
        fn()
    out["rss_mib"] = {engine: _maxrss_mib()}


def _run_scaling(spec, out):
    import numpy as np
    import fastcnn
    from . import workloads

    counts = spec["threads_list"]
    w = workloads.get(spec["workload"])
    data = w.data(np.random.default_rng(spec.get("seed", 0)))
    _set_threads(max(counts))
    try:
        fn = w.build("fastcnn", data, {})
    except workloads.SkipWorkload as exc:
        out["skipped"] = str(exc)
        return
    inner = {}
    for n in counts:
        fastcnn.set_num_threads(n)
        inner[n] = _inner_count(fn, spec["target"], _warm_up(fn, spec["warmup"]))
    probe = _machine_probe(spec["target"] / 4)
    times = {n: [] for n in counts}
    machine = {n: [] for n in counts}   # per round: the slower of the probes before and after the sample
    gc.collect()
    gc.disable()
    try:
        for _ in range(spec["repeat"]):
            for n in counts:
                fastcnn.set_num_threads(n)
                before = probe(n)
                times[n].append(_sample(fn, inner[n]))
                machine[n].append(max(before, probe(n)))
    finally:
        gc.enable()
    out["times"] = {str(n): t for n, t in times.items()}
    out["median"] = {str(n): _median(t) for n, t in times.items()}
    out["machine_times"] = {str(n): t for n, t in machine.items()}
    base = counts[0]
    out["machine"] = {str(n): n / base * _median(machine[base]) / _median(machine[n]) for n in counts}
    # rounds in which every probe ran each of its threads at full speed (at
    # least FULL_SPEED of the fastest probe's speed): the workload's speed-up
    # there is its own, not the machine's
    fastest = min(min(t) for t in machine.values())
    full = [i for i in range(spec["repeat"]) if all(machine[n][i] <= fastest / FULL_SPEED for n in counts)]
    out["full_speed_rounds"] = len(full)
    out["full_speed_speedup"] = {
        str(n): _median([times[base][i] / times[n][i] for i in full]) if full else None for n in counts}
    out["flops"] = w.flops


def _machine_probe(target):
    """A call ``probe(n)`` that times the same fixed compute (float32
    micro-kernel calls on panels held in each core's own cache) on each of n
    threads, about ``target`` seconds on one thread: its time stays that while
    the machine gives n full cores. A short untimed call first wakes the
    threads, as a workload's back-to-back calls find them awake."""
    from fastcnn._kernels import _gemm
    reps = 1000
    t = _warm_up(lambda: _gemm.ukr_probe(reps), 2)
    reps = max(1, int(reps * target / max(t, 1e-7)))
    wake = max(1, reps // 50)

    def probe(n):
        _gemm.ukr_probe(wake, n_threads=n)
        return _sample(lambda: _gemm.ukr_probe(reps, n_threads=n), 1)
    return probe


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    out = {"workload": spec["workload"], "mode": spec["mode"]}
    try:
        {"time": _run_time, "rss": _run_rss, "scaling": _run_scaling}[spec["mode"]](spec, out)
    except Exception as exc:  # reported in the table; the run goes on
        import traceback
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    sys.stdout.write("\n" + MARK + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
