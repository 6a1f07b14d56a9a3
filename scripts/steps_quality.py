"""Quality against MaskGIT steps and temperature on held-out clips, and the planner's time per decision
(issue 18, item 3).

For each held-out clip (make demo's held-out set: sim seed 1001) and each (steps, temperature): `eval`'s
rollout, nothing else. From the clip's first frame, imagine 4 frames under the LAM's inferred actions and under
random ones (one `imagine` call, 2 candidates; the same seed per clip in every setting), then PSNR at t=4
against the real frame 4 for both, and ΔtPSNR = their difference. The clips, their inferred actions and the
random actions are the same in every setting. Each figure is a mean over clips with its standard error. The
wall time of the `imagine` calls is reported too. Then, at each `--plan-steps`, the CEM planner's wall time per
decision (eval's planning budget: horizon 4, 16 samples x 3 iterations) on `--plan-decisions` clips.

    python scripts/steps_quality.py [--ckpt sim-rt1] [--steps 2,4,8,12,25] [--temperatures 0.25,0.5,1.0]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

HELDOUT = "outputs/heldout/fractal20220817_data/0.1.0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", default="sim-rt1")
    ap.add_argument("--data", default=HELDOUT)
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--steps", default="2,4,8,12,25")
    ap.add_argument("--temperatures", default="0.25,0.5,1.0")
    ap.add_argument("--t", type=int, default=4)
    ap.add_argument("--plan-steps", default="4,8,25", help="MaskGIT steps at which to time planning decisions")
    ap.add_argument("--plan-decisions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="accepted; the last line is always JSON")
    args = ap.parse_args()

    from tqdm import tqdm

    from genie_robot.data.reader import DataConfig, read_clips
    from genie_robot.inference.world_model import WorldModel
    from genie_robot.metrics import mean_se, psnr
    from genie_robot.planning.cem import plan

    engine = WorldModel.load(args.ckpt)
    data = engine.match_data(DataConfig(path=args.data, val_fraction=1.0, action_keys=[]))
    frames, _ = read_clips(data, "val", args.clips, [])
    rng = np.random.default_rng(args.seed)
    inferred = [engine.infer_actions(clip)[: args.t] for clip in frames]
    random = [rng.integers(0, engine.cfg.lam.num_actions, args.t) for _ in frames]
    rows = []
    for temperature in [float(x) for x in args.temperatures.split(",")]:
        for steps in [int(x) for x in args.steps.split(",")]:
            inf_psnr, rnd_psnr, seconds = [], [], 0.0
            for i, clip in enumerate(tqdm(frames, desc=f"steps {steps}, temperature {temperature}", unit="clip")):
                t0 = time.perf_counter()
                gen = engine.imagine(clip[:1], np.stack([inferred[i], random[i]]), steps=steps,
                                     temperature=temperature, seed=args.seed * 100_003 + i)
                seconds += time.perf_counter() - t0
                target = clip[args.t][None]
                inf_psnr.append(psnr(gen.frames[0, args.t - 1][None], target)[0])
                rnd_psnr.append(psnr(gen.frames[1, args.t - 1][None], target)[0])
            psnr_m, psnr_se = mean_se(inf_psnr)
            delta_m, delta_se = mean_se(np.array(inf_psnr) - np.array(rnd_psnr))
            row = {"maskgit_steps": steps, "temperature": temperature, "clips": len(frames),
                   f"psnr_t{args.t}_inferred": round(psnr_m, 3), "psnr_se": round(psnr_se, 3),
                   f"delta_psnr_t{args.t}": round(delta_m, 3), "delta_se": round(delta_se, 3),
                   "imagine_s_per_clip": round(seconds / len(frames), 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    copy = mean_se([psnr(clip[:1], clip[args.t][None])[0] for clip in frames])
    decisions = []
    for steps in [int(x) for x in args.plan_steps.split(",")]:
        times = []
        for i in range(args.plan_decisions):
            clip = frames[i * len(frames) // args.plan_decisions]
            t0 = time.perf_counter()
            plan(engine, clip[:1], clip[args.t], horizon=args.t, num_samples=16, iterations=3, steps=steps,
                 seed=i)
            times.append(time.perf_counter() - t0)
        decisions.append({"maskgit_steps": steps, "seconds_per_decision_median": round(float(np.median(times)), 2),
                          "decisions": len(times)})
        print(json.dumps(decisions[-1]), flush=True)
    print(json.dumps({"bench": "steps_quality", "ckpt": args.ckpt, "data": args.data, "clips": len(frames),
                      "copy_first_frame_psnr": round(copy[0], 3), "rows": rows, "plan": decisions}))


if __name__ == "__main__":
    main()
