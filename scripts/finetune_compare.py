"""Held-out next-frame error of two world models on the same clips, paired by clip.

For the fine-tuning benchmark (docs/BENCHMARKS.md "Fine-tuning sim-rt1 on a converted bag"): each model
predicts every frame of each held-out clip from the real frames before it and its LAM's inferred actions
(teacher-forced, one pass, argmax: `genie_robot.evaluation.report.action_response`), and its tokenizer
reconstructs the clip. Prints one JSON object: per model the mean and standard deviation over clips, and
for each figure the paired difference (second minus first) with its standard error and how many clips
improved.

    python scripts/finetune_compare.py sim-rt1 outputs/finetune_workshop/runs/dynamics_only \\
        --data outputs/finetune_workshop/heldout/fractal20220817_data/0.1.0 --clips 48
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from genie_robot.data.reader import DataConfig, read_clips
from genie_robot.evaluation.report import action_response
from genie_robot.inference.world_model import WorldModel
from genie_robot.metrics import psnr

FIGURES = ("dynamics_next_frame_psnr_inferred", "dynamics_next_frame_token_accuracy_inferred",
           "dynamics_changed_token_nll_inferred", "tokenizer_psnr")


def per_clip(ckpt: str, data: str, clips: int) -> dict[str, list[float]]:
    engine = WorldModel.load(ckpt)
    cfg = engine.match_data(DataConfig(path=data, val_fraction=1.0, action_keys=[]))  # video only is enough
    frames, _ = read_clips(cfg, "val", clips, [])
    codes = np.stack([engine.infer_actions(clip) for clip in frames])
    rows = action_response(engine, frames, codes, seed=0, per_clip=True)["per_clip"]
    rows["tokenizer_psnr"] = [float(np.mean(psnr(engine.decode(engine.encode(clip)), clip))) for clip in frames]
    return {k: rows[k] for k in FIGURES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("first", help="run directory or reference name (the baseline)")
    ap.add_argument("second", help="run directory or reference name")
    ap.add_argument("--data", required=True, help="held-out dataset version directory")
    ap.add_argument("--clips", type=int, default=48)
    args = ap.parse_args()
    a, b = per_clip(args.first, args.data, args.clips), per_clip(args.second, args.data, args.clips)
    out = {"first": args.first, "second": args.second, "data": args.data, "clips": len(a[FIGURES[0]])}
    for key in FIGURES:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        d = y - x
        out[key] = {"first": round(float(x.mean()), 4), "first_std": round(float(x.std()), 4),
                    "second": round(float(y.mean()), 4), "second_std": round(float(y.std()), 4),
                    "difference": round(float(d.mean()), 4),
                    "difference_se": round(float(d.std(ddof=1) / np.sqrt(len(d))), 4),
                    "clips_higher": int((d > 0).sum())}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
