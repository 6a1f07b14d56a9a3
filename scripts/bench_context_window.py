"""What a planner's context length costs once the rollout outgrows the model's window (issue 18, item 3).

The dynamics' time embeddings are absolute positions in its window, so when context + horizon exceeds the
window the window slides with every imagined frame and the dynamics' cache of the frames it keeps is rebuilt
(genie_robot/core/rollout.py). world_model_node planned after its `context_frames` camera frames (8, sim-rt1's
window), so a horizon-4 plan paid that rebuild on every frame; it now keeps the newest frames that fit
(`plan_context_frames`, WorldModelService.plan_context), as these figures suggested. This times `imagine` of
`--candidates` candidates x `--horizon` frames after each `--contexts` length, on real held-out frames, same actions
and seed for every length, median of `--repeats` calls. What the shorter context costs: with `--quality-clips N`, on N
held-out clips, the frame `--horizon` steps after the context's last frame imagined under the LAM's inferred
actions (one candidate, the same seed per clip at every length) against the real one, PSNR mean ± standard
error, and its paired difference to the longest context's. With `--plan-clips N`, what world_model_node's plan
does with it: on N held-out clips, `WorldModelService.plan` (CEM, `--plan-samples` x `--plan-iterations`, at
`--steps` MaskGIT steps) after the longest context toward the real frame `--horizon` steps later, its
`plan_context_frames` set to each length in turn: seconds a decision and the plan's goal cost (the pixel MSE of
its best candidate's last imagined frame to the goal, as the card's planning line), each mean ± standard
error, the cost also paired with the longest context's.
One JSON line per length, then a summary line.

    python scripts/bench_context_window.py [--export outputs/export/sim-rt1 | --ckpt sim-rt1]
        [--contexts 1,4,5,8] [--candidates 8] [--horizon 4] [--steps 4] [--repeats 1] [--quality-clips 0]
        [--plan-clips 0] [--plan-samples 8] [--plan-iterations 2]
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
    ap.add_argument("--plan-clips", type=int, default=0, help="held-out clips for the node's plan (0: none)")
    ap.add_argument("--plan-samples", type=int, default=8, help="CEM samples an iteration (make demo's plan: 8)")
    ap.add_argument("--plan-iterations", type=int, default=2, help="CEM iterations (make demo's plan: 2)")
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
    clips, _ = read_clips(data, "val", max(1, args.quality_clips, args.plan_clips), [])
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
    plans = plan_rows(engine, clips[: args.plan_clips], contexts, args) if args.plan_clips else []
    print(json.dumps({"bench": "context_window", "engine": source, "candidates": args.candidates,
                      "horizon": args.horizon, "maskgit_steps": args.steps, "quality_clips": len(future),
                      "rows": rows, "plan_clips": args.plan_clips, "plan_rows": plans}))


def plan_rows(engine, clips: np.ndarray, contexts: list[int], args) -> list[dict]:
    """world_model_node's plan after the clip's first max(contexts) frames, keeping each length in turn."""
    from genie_robot.metrics import mean_se
    from genie_robot.runtime.camera import Context, FrameBuffer
    from genie_robot.runtime.service import ServiceLimits, WorldModelService

    longest = max(contexts)
    limits = ServiceLimits(plan_maskgit_steps=args.steps, temperature=args.temperature)  # as the node's parameters
    service = WorldModelService(engine, limits, FrameBuffer(longest, 3.0))
    seconds = {n: [] for n in contexts}
    costs = {n: [] for n in contexts}
    for i, clip in enumerate(clips):
        ctx = Context(clip[:longest], tuple(k / 3 for k in range(longest)))
        for n in contexts:
            service.limits.plan_context_frames = n
            t0 = time.perf_counter()
            out, used = service.plan(clip[-1], ctx, args.horizon, args.plan_samples, args.plan_iterations, seed=i)
            seconds[n].append(time.perf_counter() - t0)
            assert len(used.frames) == n
            costs[n].append(out.cost)
    service.queue.close()
    rows = []
    for n in contexts:
        (s, s_se), (c, c_se) = mean_se(seconds[n]), mean_se(costs[n])
        d, d_se = mean_se(np.array(costs[n]) - np.array(costs[longest]))
        rows.append({"plan_context_frames": n, "slides": n + args.horizon > engine.cfg.frames,
                     "seconds": round(s, 2), "seconds_se": round(s_se, 2), "goal_cost": round(c, 5),
                     "goal_cost_se": round(c_se, 5), f"minus_context_{longest}": round(d, 5),
                     "diff_se": round(d_se, 5)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
