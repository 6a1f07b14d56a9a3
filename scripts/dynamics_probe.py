"""Does a dynamics checkpoint use its latent actions? A teacher-forced probe, cheap enough per checkpoint.

For held-out clips: the real tokens of frames 0..t-1, frame t fully masked, one forward pass
with the LAM's inferred actions and with random ones (t = 2, 4, 6 of the 8-frame window). Per
variant: PSNR of the decoded argmax frame against the real one, exact token accuracy, and,
on the tokens that change from frame t-1 to t (where copying scores nothing and only the
motion and the action can help), accuracy and negative log-likelihood of the true code. The
gap between inferred and random actions is what the action is worth to the model. These are
`genie-robot eval`'s teacher-forced figures (`genie_robot.evaluation.report.action_response`),
without its rollouts, on a dynamics checkpoint that need not be in a run directory yet.

    python scripts/dynamics_probe.py outputs/abl/soft0.01/dynamics/checkpoints/step_0000500 ... \\
        --data outputs/heldout/fractal20220817_data/0.1.0 --clips 16 [--transitions 1]

`--tokenizer-only` instead describes the tokens themselves: how many change between frames, how
many of those sit on patches whose pixels changed, and how alike neighbouring codes draw (every
token decoded as its k-th nearest other code, against the exact decode).

The tokenizer and LAM default to the shipped reference's (the ablations train dynamics on them).
Prints one JSON line per checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from genie_robot.checkpoint import load_frozen
from genie_robot.config import typed
from genie_robot.data.reader import DataConfig, read_clips
from genie_robot.evaluation.report import action_response
from genie_robot.inference.world_model import WorldModel
from genie_robot.metrics import psnr
from genie_robot.models import ModelConfig
from genie_robot.reference import resolve

TRANSITIONS = (2, 4, 6)  # frames predicted per clip: early, middle and late in the 8-frame window


def probe(dynamics_dir: str, tokenizer_dir: str, lam_dir: str, data: str, clips: int, seed: int,
          transitions: tuple[int, ...] = TRANSITIONS) -> dict:
    cpu = torch.device("cpu")
    cfg = typed(OmegaConf.load(Path(dynamics_dir) / "config.yaml").model, ModelConfig)
    modules = {name: load_frozen(path, name, cfg, cpu)[0]
               for name, path in (("tokenizer", tokenizer_dir), ("lam", lam_dir), ("dynamics", dynamics_dir))}
    engine = WorldModel(cfg, modules["tokenizer"], modules["dynamics"], lam=modules["lam"], source=dynamics_dir)
    frames, _ = read_clips(DataConfig(path=data, clip_frames=cfg.frames, resolution=cfg.resolution,
                                      val_fraction=1.0, batch_size=8), "val", clips, ["world_vector"])
    codes = np.stack([engine.infer_actions(clip) for clip in frames])
    result = action_response(engine, frames, codes, seed, transitions=transitions)
    out = {"checkpoint": dynamics_dir, "clips": len(frames), "transitions": list(transitions)}
    out.update({k: round(v, 4) for k, v in result.items() if not k.startswith("lam_")})
    return out


def describe_tokens(tokenizer_dir: str, data: str, clips: int) -> dict:
    """Token changes against pixel changes, and how far a neighbouring code draws from the exact one."""
    cpu = torch.device("cpu")
    cfg = typed(OmegaConf.load(Path(tokenizer_dir) / "config.yaml").model, ModelConfig)
    tokenizer, _, _ = load_frozen(tokenizer_dir, "tokenizer", cfg, cpu)
    frames, _ = read_clips(DataConfig(path=data, clip_frames=cfg.frames, resolution=cfg.resolution,
                                      val_fraction=1.0, batch_size=8), "val", clips, ["world_vector"])
    x = torch.from_numpy(frames).float() / 255
    p = cfg.tokenizer.patch
    with torch.no_grad():
        tokens = torch.cat([tokenizer.encode(x[i:i + 8]) for i in range(0, len(x), 8)])
        patches = x.unfold(3, p, p).unfold(4, p, p)  # [N, T, C, h, w, p, p]
        moved = ((patches[:, 1:] - patches[:, :-1]).abs().amax((2, 5, 6)).flatten(2) > 2 / 255)  # [N, T-1, S]
        flipped = tokens[:, 1:] != tokens[:, :-1]
        codes = F.normalize(tokenizer.vq.codebook.float(), dim=-1)
        sim = codes @ codes.T
        sim.fill_diagonal_(-2.0)
        near = sim.topk(16, dim=-1)
        exact = torch.cat([tokenizer.decode(tokens[i:i + 8]) for i in range(0, len(x), 8)])
        out = {"clips": len(x), "changed_token_fraction": flipped.float().mean().item(),
               "moved_patch_fraction": moved.float().mean().item(),
               "changed_token_fraction_on_still_patches": flipped[~moved].float().mean().item(),
               "changed_token_fraction_on_moved_patches": flipped[moved].float().mean().item(),
               "median_cosine_to_nearest_code": near.values[:, 0].median().item()}
        for k in (1, 4, 16):
            swapped = near.indices[tokens, k - 1]
            drawn = torch.cat([tokenizer.decode(swapped[i:i + 8]) for i in range(0, len(x), 8)])
            out[f"psnr_decoded_as_nearest_{k}_vs_exact"] = psnr(drawn.flatten(1, 2), exact.flatten(1, 2),
                                                                peak=1.0).mean().item()
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="*", help="dynamics checkpoint directories")
    ap.add_argument("--tokenizer-only", action="store_true", help="describe the tokens, probe no dynamics")
    ap.add_argument("--data", default="outputs/heldout/fractal20220817_data/0.1.0", help="held-out dataset")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--tokenizer", default=None, help="tokenizer checkpoint (default: the sim-rt1 reference's)")
    ap.add_argument("--lam", default=None, help="LAM checkpoint (default: the sim-rt1 reference's)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random actions")
    ap.add_argument("--transitions", type=int, nargs="+", default=list(TRANSITIONS),
                    help="frames t to predict from frames 0..t-1 (1: the rollouts' first step, after one frame)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    shipped = resolve("sim-rt1", complete=False)
    if args.tokenizer_only:
        print(json.dumps(describe_tokens(args.tokenizer or str(shipped / "tokenizer"), args.data, args.clips)))
        return
    if not args.checkpoints:
        ap.error("give dynamics checkpoint directories, or --tokenizer-only")
    for ckpt in args.checkpoints:
        print(json.dumps(probe(ckpt, args.tokenizer or str(shipped / "tokenizer"), args.lam or str(shipped / "lam"),
                               args.data, args.clips, args.seed, tuple(args.transitions))), flush=True)


if __name__ == "__main__":
    main()
