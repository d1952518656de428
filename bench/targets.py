"""Check the performance targets against the JSON written by ``fastcnn bench --json``.

    python -m fastcnn.bench --threads 2 --json table.json
    python -m fastcnn.bench --threads 2 --scaling --json scaling.json
    python bench/targets.py table.json [scaling.json]

Prints a Markdown table: target, measured figure, met or not.
"""
import json
import sys

# (what, workload, kind, threshold): kind "speedup" = torch/fastcnn >= threshold,
# "peak" = fastcnn GFLOP/s / numpy peak >= threshold, "latency" = fastcnn time <= threshold seconds
TARGETS = [
    ("conv lenet1 fwd+bwd vs PyTorch", "conv-lenet1-fwdbwd", "speedup", 3.0),
    ("conv cifar fwd+bwd vs PyTorch", "conv-cifar-fwdbwd", "speedup", 1.3),
    ("conv lenet2 fwd+bwd vs PyTorch", "conv-lenet2-fwdbwd", "speedup", 0.9),
    ("conv dcgan-d fwd+bwd vs PyTorch", "conv-dcgan-d-fwdbwd", "speedup", 0.9),
    ("convT fwd+bwd vs PyTorch", "convT-fwdbwd", "speedup", 0.9),
    ("conv lenet2 fwd+bwd GFLOP/s vs numpy 2048 matmul", "conv-lenet2-fwdbwd", "peak", 0.8),
    ("conv cifar fwd+bwd GFLOP/s vs numpy 2048 matmul", "conv-cifar-fwdbwd", "peak", 0.8),
    ("conv dcgan-d fwd+bwd GFLOP/s vs numpy 2048 matmul", "conv-dcgan-d-fwdbwd", "peak", 0.8),
    ("max-pool 2x2 fwd+bwd vs PyTorch", "maxpool-fwdbwd", "speedup", 10.0),
    ("BatchNorm2d fwd+bwd vs PyTorch", "bn2d-fwdbwd", "speedup", 2.0),
    ("cross-entropy fwd+bwd vs PyTorch", "xent-fwdbwd", "speedup", 3.0),
    ("LeNet train step (batch 64) vs PyTorch", "lenet-train", "speedup", 2.0),
    ("LeNet inference batch 1 latency", "lenet-infer-b1", "latency", 60e-6),
    ("LeNet inference batch 64 vs PyTorch", "lenet-infer-b64", "speedup", 1.5),
    ("DCGAN-28 iteration vs PyTorch", "dcgan28-iter", "speedup", 1.5),
    ("DCGAN-64 iteration vs PyTorch", "dcgan64-iter", "speedup", 1.0),
]


def _fmt_time(t):
    return f"{t * 1e6:.0f} µs" if t < 1e-3 else f"{t * 1e3:.2f} ms" if t < 1 else f"{t:.3f} s"


def check(table, scaling=None):
    rows = []
    res = {r["workload"]: r for r in table.get("results", [])}
    peak = table.get("peak_gflops")
    for what, name, kind, thr in TARGETS:
        r = res.get(name)
        med = (r or {}).get("median", {})
        fc, th = med.get("fastcnn"), med.get("torch")
        if not fc:
            rows.append((what, _target(kind, thr), "not measured", "?"))
            continue
        if kind == "speedup":
            if not th:
                rows.append((what, _target(kind, thr), "no PyTorch", "?"))
                continue
            v = th / fc
            rows.append((what, _target(kind, thr),
                         f"{v:.2f}× ({_fmt_time(fc)} vs {_fmt_time(th)})", "yes" if v >= thr else "no"))
        elif kind == "peak":
            v = r["flops"] / fc / 1e9 / peak if peak else None
            rows.append((what, _target(kind, thr),
                         f"{100 * v:.0f}% ({r['flops'] / fc / 1e9:.1f} of {peak:.1f} GFLOP/s)" if v else "?",
                         "yes" if v and v >= thr else "no"))
        else:
            rows.append((what, _target(kind, thr),
                         f"{_fmt_time(fc)}" + (f" (PyTorch {_fmt_time(th)})" if th else ""),
                         "yes" if fc <= thr else "no"))
    if scaling:
        counts = scaling["thread_counts"]
        if 1 in counts and 2 in counts:
            for r in scaling["results"]:
                if r["workload"].startswith("conv") and "median" in r:
                    v = r["median"]["1"] / r["median"]["2"]
                    rows.append((f"thread scaling 1→2, {r['workload']}", "≥ 1.9×", f"{v:.2f}×",
                                 "yes" if v >= 1.9 else "no"))
    lines = ["| target | required | measured | met |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _target(kind, thr):
    return {"speedup": f"≥ {thr:g}×", "peak": f"≥ {100 * thr:.0f}%", "latency": f"≤ {thr * 1e6:.0f} µs"}[kind]


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    with open(argv[0]) as f:
        table = json.load(f)
    scaling = None
    if len(argv) > 1:
        with open(argv[1]) as f:
            scaling = json.load(f)
    print(check(table, scaling))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
