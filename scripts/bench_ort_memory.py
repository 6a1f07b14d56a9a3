"""CPU memory and speed of the onnxruntime engine under each `cpu_memory` mode (arena, shrink, off).

    python scripts/bench_ort_memory.py --export outputs/export/sim-rt1 [--samples 8 16] [--repeats 2]

Each mode runs in a fresh process (RSS is per process): load the export, then per sample count a CEM
plan (horizon 4, 2 iterations, 8 MaskGIT steps: make demo's plan through the node) `--repeats` times, then
a small 2-candidate rollout, reading the resident memory after each. One JSON line per mode, then a
summary line with each mode's plan time as a ratio of the arena's (taken in this one run). Why it exists:
onnxruntime's CPU arena keeps its largest call's buffers, and a node that planned once kept 2.6 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

CHILD = "--child"


def measure(export: str, mode: str, samples: list[int], repeats: int, threads: int) -> dict:
    import numpy as np

    from genie_robot.planning.cem import plan
    from genie_robot.runtime import OnnxWorldModel
    from genie_robot.runtime.service import rss_mb

    engine = OnnxWorldModel(export, providers=["CPUExecutionProvider"], threads=threads, cpu_memory=mode)
    h, w = engine.cfg.resolution
    rng = np.random.default_rng(0)
    context = rng.integers(0, 256, (engine.cfg.frames, 3, h, w), dtype=np.uint8)
    goal = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
    out = {"mode": mode, "rss_loaded_mb": round(rss_mb()), "plans": []}
    for n in samples:
        times = []
        for r in range(repeats):
            start = time.perf_counter()
            plan(engine, context, goal, horizon=4, num_samples=n, iterations=2, seed=r, steps=8, temperature=0.5)
            times.append(time.perf_counter() - start)
        out["plans"].append({"samples": n, "seconds": [round(t, 2) for t in times],
                             "median_s": round(statistics.median(times), 2), "rss_after_mb": round(rss_mb())})
    start = time.perf_counter()
    engine.imagine(context, rng.integers(0, 8, (2, 2)), steps=8, seed=0)
    out["small_rollout_s"] = round(time.perf_counter() - start, 2)
    out["rss_after_small_rollout_mb"] = round(rss_mb())
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main() -> None:
    from genie_robot.runtime.engine import CPU_MEMORY

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", required=True, help="an exported model (`genie-robot export`)")
    ap.add_argument("--samples", type=int, nargs="+", default=[8, 16], help="CEM candidates per iteration")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")
    ap.add_argument("--modes", nargs="+", choices=CPU_MEMORY, default=["arena", "shrink", "off"])
    ap.add_argument(CHILD, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.export, args.child, args.samples, args.repeats, args.threads)))
        return
    results = {}
    for mode in args.modes:
        cmd = [sys.executable, __file__, "--export", args.export, "--samples", *map(str, args.samples),
               "--repeats", str(args.repeats), "--threads", str(args.threads), CHILD, mode]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise SystemExit(f"{mode}: {r.stderr[-2000:]}")
        results[mode] = json.loads(r.stdout.strip().splitlines()[-1])
        print(json.dumps(results[mode]), flush=True)
    base = results.get("arena")
    summary = {"bench": "ort_cpu_memory", "export": args.export}
    for mode, res in results.items():
        summary[mode] = {"rss_after_plans_mb": res["plans"][-1]["rss_after_mb"], "peak_rss_mb": res["peak_rss_mb"]}
        if base:
            summary[mode]["plan_time_vs_arena"] = [round(p["median_s"] / b["median_s"], 3)
                                                   for p, b in zip(res["plans"], base["plans"], strict=True)]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
