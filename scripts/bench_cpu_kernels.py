"""What the compiled CPU engine's C++ kernels (genie_robot.models.cpu_kernels) buy, in one run (issue 18).

Compiles the MaskGIT frame graph of one model (random weights; cost does not depend on them) four times: with
no kernels (torch's SDPA, inductor's code for the norms, the cached attention and the sampler), with the
attention kernels only, with all of them (the sampler too) on a cache stored the plain way (each token's window
slots side by side), and with all of them on a cache stored with the slots outermost (`empty_cache`'s
`slots_outer`): what `WorldModel.compile` runs. Then times a
whole 25-step frame at batch 1 after `--past` cached frames, the variants taking turns (`--repeats` rounds of
`--calls` frames each), and checks that they drew the same tokens. One JSON line: median ms a frame per
variant and each one's speedup over none.

    python scripts/bench_cpu_kernels.py [--model peer1x_tiny] [--past 8] [--repeats 15] [--calls 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from genie_robot.config import model_config
from genie_robot.core.maskgit import keep_schedule
from genie_robot.inference.world_model import CompiledDynamics, DeviceSampledDynamics
from genie_robot.models import build, cpu_kernels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="peer1x_tiny")
    ap.add_argument("--past", type=int, default=8, help="frames in the cache (the context)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--calls", type=int, default=4, help="frames per variant per round")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = model_config(args.model)
    model = build(cfg, "dynamics").eval()
    s, v = cfg.tokens_per_frame(), cfg.tokenizer.num_codes
    rng = np.random.default_rng(0)
    keep, uniforms = keep_schedule(args.steps, s), rng.random((args.steps, 1, s))
    past = [rng.integers(0, v, (1, s)) for _ in range(args.past)]
    cpu_kernels.load()
    # Which calls go through the kernels is decided when a graph is traced, by `cpu_kernels.in_use`; dynamo guards
    # on that function, so each variant keeps its own compiled graph and the active one picks it.
    uses = cpu_kernels.in_use
    variants = {"none": lambda x, head_dim=None: False,
                "attention": lambda x, head_dim=None: head_dim is not None and uses(x, head_dim),
                "all_plain_cache": uses, "all": uses}
    runs = {}
    try:
        for name, fn in variants.items():
            cpu_kernels.in_use = fn
            backend = DeviceSampledDynamics(model, torch.device("cpu"), torch.float32, CompiledDynamics(model))
            backend.slots_outer = name == "all"  # the others keep each token's slots side by side, as eager does
            cache = backend.empty()
            with torch.no_grad():
                for t, ids in enumerate(past):
                    cache = backend.append(cache, ids, np.array([t % 8 - (t == 0)]), t)
            tokens = backend.sample_frame(cache, np.array([3]), args.past, uniforms, keep, 1.0)  # compiles
            runs[name] = (backend, cache, tokens)
        times = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                cpu_kernels.in_use = fn
                backend, cache, _ = runs[name]
                start = time.perf_counter()
                for _ in range(args.calls):
                    backend.sample_frame(cache, np.array([3]), args.past, uniforms, keep, 1.0)
                times[name].append((time.perf_counter() - start) / args.calls * 1000)
    finally:
        cpu_kernels.in_use = uses
    ms = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps({
        "bench": "cpu_kernels", "model": args.model, "past_frames": args.past, "maskgit_steps": args.steps,
        "threads": args.threads, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "ms_per_frame": {name: round(t, 2) for name, t in ms.items()},
        "speedup_over_none": {name: round(ms["none"] / t, 3) for name, t in ms.items()},
        "same_tokens_as_none": {name: float((run[2] == runs["none"][2]).mean()) for name, run in runs.items()},
    }))


if __name__ == "__main__":
    main()
