#!/usr/bin/env python3
"""Summarise a Chrome trace written by `qat_bench --profile DIR` (LibTorch's Kineto profiler).

GPU kernels are grouped by the bench's phase annotations (phase_forward, phase_loss,
phase_backward, phase_optimizer) and by kernel name; prints per-phase GPU time and the top
kernels. Usage: trace_summary.py TRACE.json [--top N]
"""
import collections
import json
import sys


def main():
    path = sys.argv[1]
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 12
    events = json.load(open(path))["traceEvents"]
    phases = [(e["ts"], e["ts"] + e["dur"], e["name"]) for e in events
              if e.get("cat") == "gpu_user_annotation" and e.get("name", "").startswith("phase_")]
    kernels = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    per_phase = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0.0]))
    totals = collections.defaultdict(float)
    for k in kernels:
        mid = k["ts"] + k.get("dur", 0) / 2
        phase = next((n for s, e, n in phases if s <= mid <= e), "other")
        name = k["name"][:110]
        per_phase[phase][name][0] += 1
        per_phase[phase][name][1] += k.get("dur", 0) / 1000.0
        totals[phase] += k.get("dur", 0) / 1000.0
    print(f"{path}: GPU kernel time {sum(totals.values()):.1f} ms; " +
          ", ".join(f"{p} {t:.1f} ms" for p, t in sorted(totals.items())))
    for phase in sorted(per_phase):
        print(f"== {phase}: {totals[phase]:.1f} ms, {sum(c for c, _ in per_phase[phase].values())} kernels")
        for name, (count, ms) in sorted(per_phase[phase].items(), key=lambda kv: -kv[1][1])[:top]:
            print(f"  {ms:7.2f} ms  x{count:<4d} {name}")


if __name__ == "__main__":
    main()
