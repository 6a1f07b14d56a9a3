"""The per-action grid alone, and how far apart its rows end, for a checkpoint on the card's held-out contexts.

Issue 12's last line asks for a grid in which each latent action moves the arm a visibly different way. The full
`genie-robot eval` draws that grid among much else (about 15 minutes on 2 cores for the card's 50 clips, an hour
with planning). This draws only the grid, exactly as eval does (`genie_robot.evaluation.report.action_grid`: the
same contexts, picked evenly from the first `--clips` held-out clips, the same seeds, steps and temperature), and
prints eval's `grid_rollouts` as one JSON line: each action's motion from the context frame and its nearest other
action, mean absolute pixel difference (0-255) of the last imagined frames. So a retrained dynamics can be checked
against the shipped one in minutes; the pictures go to `--out`.

    python scripts/action_grid.py [--ckpt sim-rt1] [--contexts 3] [--out outputs/grid/sim-rt1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELDOUT = "outputs/heldout/fractal20220817_data/0.1.0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", default="sim-rt1", help="a reference name or run directory")
    ap.add_argument("--data", default=HELDOUT)
    ap.add_argument("--clips", type=int, default=50, help="the contexts are picked evenly from these (the card: 50)")
    ap.add_argument("--contexts", type=int, default=3)
    ap.add_argument("--horizon", type=int, default=6)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--temperature", type=float, default=None, help="default: the model's own (the card's)")
    ap.add_argument("--out", default=None, help="default: outputs/grid/<ckpt's name>")
    args = ap.parse_args()

    from genie_robot.data.reader import DataConfig, read_clips
    from genie_robot.evaluation.report import EvalConfig, action_grid
    from genie_robot.inference.world_model import WorldModel

    engine = WorldModel.load(args.ckpt)
    data = engine.match_data(DataConfig(path=args.data, val_fraction=1.0, action_keys=[]))
    frames, _ = read_clips(data, "val", args.clips, [])
    out = Path(args.out or f"outputs/grid/{Path(args.ckpt).name}")
    cfg = EvalConfig(out=str(out), steps=args.steps, grid_contexts=args.contexts, grid_horizon=args.horizon,
                     temperature=engine.temperature if args.temperature is None else args.temperature)
    out.mkdir(parents=True, exist_ok=True)
    pictures, distances = action_grid(engine, frames, cfg, out)
    print(json.dumps({"bench": "action_grid", "ckpt": args.ckpt, "clips": len(frames), "maskgit_steps": cfg.steps,
                      "temperature": cfg.temperature, **distances, "pictures": pictures}))


if __name__ == "__main__":
    main()
