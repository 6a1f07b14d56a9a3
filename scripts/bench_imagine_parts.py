"""Where a whole `imagine` call's time goes (issue 18): the torch engine's parts, timed inside real calls.

Random weights of one model config (cost does not depend on them), one context of `--context` frames, `--batch`
candidates of `--horizon` new frames, `--steps` MaskGIT steps; compiled by default (`WorldModel.compile`, what
the side-by-side benchmark times), `--eager` for the eager engine. After a warm-up call (it compiles), it times
`--calls` calls, adding up the wall time of each part as the call runs it: the LAM on the context, the
tokenizer's encode, the context's prefill, the MaskGIT frames, the appends of finished frames, the decode. One
JSON line: ms per call of each part, the rest (Python, conversions), the total and frames/s.

    python scripts/bench_imagine_parts.py [--model peer1x_tiny] [--context 8] [--horizon 4] [--batch 1]
        [--steps 25] [--calls 20] [--threads 2] [--eager]
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import time

import numpy as np
import torch

from genie_robot.config import model_config
from genie_robot.inference import world_model
from genie_robot.inference.world_model import Limits, WorldModel
from genie_robot.models import build

SPENT: dict[str, float] = collections.defaultdict(float)


def timed(name: str, fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - start
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="peer1x_tiny")
    ap.add_argument("--context", type=int, default=8)
    ap.add_argument("--horizon", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eager", action="store_true", help="the eager engine instead of WorldModel.compile's")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = model_config(args.model)
    parts = {c: build(cfg, c) for c in ("tokenizer", "lam", "dynamics")}
    world = WorldModel(cfg, parts["tokenizer"], parts["dynamics"], lam=parts["lam"],
                       limits=Limits(max_batch=args.batch, max_horizon=args.horizon))
    if not args.eager:
        world.compile()
    for name, attr in (("lam", "_lam_window"), ("encode", "_encode_window"), ("decode", "_decode_window")):
        setattr(world, attr, timed(name, getattr(world, attr)))
    backend = world_model.DeviceSampledDynamics if not args.eager else world_model.TorchDynamics
    for name in ("prefill", "append", "sample_frame", "logits"):
        if hasattr(backend, name):
            setattr(backend, name, timed("frames" if name in ("sample_frame", "logits") else name,
                                         getattr(backend, name)))
    rng = np.random.default_rng(0)
    h, w = cfg.resolution
    context = rng.integers(0, 256, (args.context, 3, h, w), dtype=np.uint8)
    actions = rng.integers(0, cfg.lam.num_actions, (args.batch, args.horizon))
    world.imagine(context, actions, steps=args.steps, seed=0)  # warm-up (compiles)
    SPENT.clear()
    start = time.perf_counter()
    for seed in range(args.calls):
        world.imagine(context, actions, steps=args.steps, seed=seed)
    total = (time.perf_counter() - start) / args.calls * 1000
    ms = {name: round(t / args.calls * 1000, 2) for name, t in SPENT.items()}
    print(json.dumps({"bench": "imagine_parts", "model": args.model, "compiled": not args.eager,
                      "context_frames": args.context, "horizon": args.horizon, "batch": args.batch,
                      "maskgit_steps": args.steps, "threads": args.threads, "ms_per_call": ms,
                      "rest_ms": round(total - sum(ms.values()), 2), "total_ms": round(total, 2),
                      "frames_per_s": round(args.batch * args.horizon / total * 1000, 2)}))


if __name__ == "__main__":
    main()
