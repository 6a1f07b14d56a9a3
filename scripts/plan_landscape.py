"""How a plan's cost depends on the latent actions, on eval's planning clips (why CEM hardly beats random search).

    python scripts/plan_landscape.py --ckpt sim-rt1 --clips 0 7 14 3 [--sequences 96] [--temperature 0.5]

For each chosen planning clip (eval's picks: 20 clips spread over the held-out set, context its first frame,
goal its frame 4), `--sequences` random action sequences of length 4 are imagined twice with different
sampling seeds. One JSON line per clip: the spread of the pixel cost between sequences (std of each
sequence's mean), the spread between two rollouts of one sequence (mean |difference| / sqrt 2), the best
of the first 16 / 48 / all sequences (what random search of that budget finds), and each step's share
of the variance between sequences explained by its action alone (main effects).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from genie_robot.data.reader import DataConfig
from genie_robot.evaluation.report import ACTION_KEYS, read_clips
from genie_robot.inference.world_model import WorldModel
from genie_robot.planning.cem import goal_cost

HORIZON, BATCH = 4, 16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="sim-rt1")
    ap.add_argument("--data", default="outputs/heldout/fractal20220817_data/0.1.0")
    ap.add_argument("--clips", type=int, nargs="+", default=[0, 7, 14, 3], help="indices into eval's 20 planning clips")
    ap.add_argument("--sequences", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=8, help="MaskGIT steps (eval.plan_steps)")
    args = ap.parse_args()

    engine = WorldModel.load(args.ckpt)
    data = engine.match_data(DataConfig(path=args.data, val_fraction=1.0))
    frames, _ = read_clips(data, "val", 20, ACTION_KEYS)
    picks = np.linspace(0, len(frames) - 1, 20).round().astype(int)  # as eval's planning
    n_actions = engine.cfg.lam.num_actions
    for i in args.clips:
        ctx, goal = frames[picks[i], :1], frames[picks[i], HORIZON]
        seqs = np.random.default_rng(i).integers(0, n_actions, (args.sequences, HORIZON))
        rolls = []
        for seed in (1, 2):
            rng = np.random.default_rng(seed)
            costs = []
            for k in range(0, len(seqs), BATCH):
                out = engine.imagine(ctx, seqs[k : k + BATCH], steps=args.steps, temperature=args.temperature, rng=rng)
                costs.append(goal_cost(engine, out.frames[:, -1], out.tokens[:, -1], goal, None, "pixel"))
            rolls.append(np.concatenate(costs))
        c = np.mean(rolls, axis=0)
        effects = [float(np.var([c[seqs[:, t] == a].mean() for a in range(n_actions) if (seqs[:, t] == a).any()])
                         / c.var()) for t in range(HORIZON)]
        print(json.dumps({
            "clip": i, "spread_between_sequences": round(float(c.std()), 5),
            "spread_between_rollouts": round(float(np.abs(rolls[0] - rolls[1]).mean() / np.sqrt(2)), 5),
            "best_of": {n: round(float(rolls[0][:n].min()), 5) for n in (16, 48, len(seqs))},
            "main_effect_share_per_step": [round(e, 2) for e in effects]}), flush=True)


if __name__ == "__main__":
    main()
