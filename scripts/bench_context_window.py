"""What a planner's context length costs once the rollout outgrows the model's window (issue 18, item 3).

The dynamics' time embeddings are absolute positions in its window, so when context + horizon exceeds the
window the window slides with every imagined frame and the dynamics' cache of the frames it keeps is rebuilt
(genie_robot/core/rollout.py). world_model_node plans after its `context_frames` camera frames (8, sim-rt1's
window), so a horizon-4 plan pays that rebuild on every frame. This times `imagine` of `--candidates`
candidates x `--horizon` frames after each `--contexts` length, on real held-out frames, same actions and seed
for every length, median of `--repeats` calls. What the shorter context costs: with `--quality-clips N`, on N
held-out clips, the frame `--horizon` steps after the context's last frame imagined under the LAM's inferred
actions (one candidate, the same seed per clip at every length) against the real one, PSNR mean ± standard
error, and its paired difference to the longest context's. One JSON line per length, then a summary line.

    python scripts/bench_context_window.py [--export outputs/export/sim-rt1 | --ckpt sim-rt1]
        [--contexts 1,4,5,8] [--candidates 8] [--horizon 4] [--steps 4] [--repeats 1] [--quality-clips 0]
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
    ap.add_argument("--quality-clips", type=int, default=0, help="held-out clips for the PSNR comparison (0: none)")
    args = ap.parse_args()

    from genie_robot.data.reader import DataConfig, read_clips
    from genie_robot.metrics import mean_se, psnr

    if args.ckpt:
        from genie_robot.inference.world_model import WorldModel

        engine, source = WorldModel.load(args.ckpt), f"torch {args.ckpt}"
    else:
        from genie_robot.runtime.engine import OnnxWorldModel

        export = args.export or "outputs/export/sim-rt1"
        engine, source = OnnxWorldModel(export), f"onnx {export}"
    contexts = [int(x) for x in args.contexts.split(",")]
    h, w = engine.cfg.resolution
    longest = max(contexts)
    data = DataConfig(path=args.data, val_fraction=1.0, clip_frames=longest + args.horizon, resolution=[h, w],
                      batch_size=1, action_keys=[])
    clips, _ = read_clips(data, "val", max(1, args.quality_clips), [])
    clip = clips[0]
    # Quality: the same future (frames longest .. longest+horizon-1) after each context length.
    future = [engine.infer_actions(c[longest - 1:]) for c in clips[: args.quality_clips]]
    scores = {}
    for n in contexts:
        scores[n] = np.array([psnr(engine.imagine(c[longest - n:longest], a[None], steps=args.steps,
                                                  temperature=args.temperature, seed=i).frames[0, -1][None],
                                   c[-1][None])[0]
                              for i, (c, a) in enumerate(zip(clips[: len(future)], future, strict=True))])
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
        if args.quality_clips:
            (m, m_se), (d, d_se) = mean_se(scores[n]), mean_se(scores[n] - scores[longest])
            rows[-1].update({f"psnr_t{args.horizon}": round(m, 3), "psnr_se": round(m_se, 3),
                             f"psnr_minus_context_{longest}": round(d, 3), "diff_se": round(d_se, 3)})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"bench": "context_window", "engine": source, "candidates": args.candidates,
                      "horizon": args.horizon, "maskgit_steps": args.steps, "quality_clips": len(future),
                      "rows": rows}))


if __name__ == "__main__":
    main()
