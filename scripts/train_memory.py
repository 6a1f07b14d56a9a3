"""Which dynamics training batch fits a device: the step's peak memory, estimated on fake tensors.

One JSON line per estimate (sizes in GiB, by kind: parameters, gradients, optimizer state, activations,
temporaries); with `--budget-gib`, then the largest batch whose estimate fits the budget less `--headroom`
(genie_robot.training.memory says what the estimate counts and what it leaves out). No GPU needed: rt1_2.5b's
2.0B-parameter dynamics takes about a minute an estimate on 2 CPU cores.

    python scripts/train_memory.py --model rt1_2.5b --batches 1,2,4 [--no-checkpointing]
    python scripts/train_memory.py --model rt1_2.5b --budget-gib 78   # the lent H100's, about 78 GiB
    python scripts/train_memory.py --model sim_rt1 --batches 2,4 --measure   # against a real step on this CPU

`--measure` checks the estimate outside torch's accounting: each batch's real step (random weights) in a fresh
process whose allocator gives every tensor above 128 KiB its own mapping, returned when freed, so the resident
memory follows the live tensors; it prints the resident rise over the step next to the estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from genie_robot.config import model_config
from genie_robot.training.memory import GIB, dynamics_step_memory, largest_batch

PROBE = """
import json, resource, sys
from genie_robot.config import model_config
from genie_robot.training.memory import dynamics_step_memory
cfg, batch, checkpointing = model_config(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
estimate = dynamics_step_memory(cfg, batch, checkpointing)
available = int(next(l for l in open("/proc/meminfo") if l.startswith("MemAvailable")).split()[1]) * 1024
if estimate.total > 0.8 * available:
    sys.exit(f"the real step needs about {estimate.total / 2**30:.1f} GiB by the estimate; this machine has "
             f"{available / 2**30:.1f} GiB available: not measured (a smaller --model or --batches)")
base = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
dynamics_step_memory(cfg, batch, checkpointing, fake=False)
rise = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
print(json.dumps({**estimate.as_gib(), "estimate_mb": round(estimate.total / 1e6, 1),
                  "resident_rise_mb": round(rise / 1e6, 1), "rise_over_estimate": round(rise / estimate.total, 4)}))
"""


def measure(model: str, batch: int, checkpointing: bool) -> dict:
    """The estimate and the resident memory a real step adds, in a fresh process (Linux: /proc, glibc)."""
    r = subprocess.run([sys.executable, "-c", PROBE, model, str(batch), "1" if checkpointing else "0"],
                       capture_output=True, text=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    if r.returncode != 0:
        raise SystemExit(f"the real step of {model} at {batch} clips failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="rt1_2.5b")
    ap.add_argument("--batches", default="", help="comma-separated clips per step to estimate")
    ap.add_argument("--budget-gib", type=float, default=None, help="find the largest batch that fits this memory")
    ap.add_argument("--headroom", type=float, default=0.1, help="share of the budget kept for CUDA and the allocator")
    ap.add_argument("--no-checkpointing", action="store_true", help="without activation checkpointing")
    ap.add_argument("--measure", action="store_true",
                    help="also run each batch's real step on this CPU and report its resident memory")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if not batches and args.budget_gib is None:
        ap.error("give --batches, --budget-gib, or both")
    if args.budget_gib is not None and args.budget_gib <= 0:
        ap.error(f"--budget-gib must be positive, got {args.budget_gib}")
    cfg = model_config(args.model)
    checkpointing = not args.no_checkpointing
    for b in batches:
        if args.measure:
            print(json.dumps({"measure": "dynamics_step", **measure(args.model, b, checkpointing)}), flush=True)
        else:
            print(json.dumps({"estimate": "dynamics_step", **dynamics_step_memory(cfg, b, checkpointing).as_gib()}),
                  flush=True)
    if args.budget_gib is not None:
        best = largest_batch(cfg, args.budget_gib * GIB, checkpointing, args.headroom)
        print(json.dumps({"estimate": "largest_batch", "model": cfg.name, "budget_gib": args.budget_gib,
                          "headroom": args.headroom, "checkpointing": checkpointing,
                          "batch": best.batch if best else 0, "step": best.as_gib() if best else None}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
