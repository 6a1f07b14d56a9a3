"""What a planner's context length costs once the rollout outgrows the model's window (issue 18, item 3).

The dynamics' time embeddings are absolute positions in its window, so when context + horizon exceeds the
window the window slides with every imagined frame and the dynamics' cache of the frames it keeps is rebuilt
(genie_robot/core/rollout.py). world_model_node plans after its `context_frames` camera frames (8, sim-rt1's
window), so a horizon-4 plan pays that rebuild on every frame. This times `imagine` of `--candidates`
candidates x `--horizon` frames after each `--contexts` length, on real held-out frames, same actions and seed
for every length, median of `--repeats` calls; one JSON line per length, then a summary line.

    python scripts/bench_context_window.py [--export outputs/export/sim-rt1 | --ckpt sim-rt1]
        [--contexts 1,4,5,8] [--candidates 8] [--horizon 4] [--steps 4] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

HELDOUT = "outputs/heldout/fractal20220817_data/0.1.0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--export", help="an ONNX export directory (onnxruntime engine, as world_model_node runs)")
    src.add_argument("--ckpt", help="a reference name or run directory (torch engine)")
    ap.add_argument("--data", default=HELDOUT)
    ap.add_argument("--contexts", default="1,4,5,8")
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--horizon", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4, help="MaskGIT steps a frame (planning's default is 4)")
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    from genie_robot.data.reader import DataConfig, read_clips

    if args.ckpt:
        from genie_robot.inference.world_model import WorldModel

        engine, source = WorldModel.load(args.ckpt), f"torch {args.ckpt}"
    else:
        from genie_robot.runtime.engine import OnnxWorldModel

        export = args.export or "outputs/export/sim-rt1"
        engine, source = OnnxWorldModel(export), f"onnx {export}"
    contexts = [int(x) for x in args.contexts.split(",")]
    h, w = engine.cfg.resolution
    data = DataConfig(path=args.data, val_fraction=1.0, clip_frames=max(contexts), resolution=[h, w], batch_size=1,
                      action_keys=[])
    (clip,), _ = read_clips(data, "val", 1, [])
    actions = np.random.default_rng(0).integers(0, engine.cfg.lam.num_actions, (args.candidates, args.horizon))
    window = engine.cfg.frames
    rows = []
    for n in contexts:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            engine.imagine(clip[:n], actions, steps=args.steps, temperature=args.temperature, seed=0)
            times.append(time.perf_counter() - t0)
        rows.append({"context": n, "window": window, "slides": n + args.horizon > window,
                     "seconds": round(statistics.median(times), 2)})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"bench": "context_window", "engine": source, "candidates": args.candidates,
                      "horizon": args.horizon, "maskgit_steps": args.steps, "rows": rows}))


if __name__ == "__main__":
    main()
