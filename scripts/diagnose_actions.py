"""Where a trained world model loses the latent action: one teacher-forced step on validation clips.

ΔtPSNR (`genie-robot eval`) is near zero both when the LAM's codes carry no motion and when
the dynamics model ignores them; sampling noise hides which. This script separates the two,
without sampling, against the baseline of copying the previous frame:

- LAM: PSNR of x_{t+1} from the LAM decoder given the inferred action, a random action, and
  the best of the 8 actions per transition (an upper bound on what the codes can say).
- Dynamics: next-frame token accuracy (frame t fully masked, real frames before it) and the
  PSNR of the decoded argmax frame, with inferred vs random actions.

    python scripts/diagnose_actions.py --run outputs/train/demo --data outputs/sim/fractal20220817_data/0.1.0
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def lam_step(lam: torch.nn.Module, x: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """The LAM decoder's prediction of frames 2..T ([B, T-1, C, H, W]) given chosen action ids."""
    return lam.decode(x, lam.vq.lookup(actions))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a training run with tokenizer/, lam/ and dynamics/")
    ap.add_argument("--data", required=True, help="the dataset directory (TFDS on-disk format)")
    ap.add_argument("--clips", type=int, default=45)
    ap.add_argument("overrides", nargs="*", help="more data config overrides, e.g. data.val_fraction=0.1")
    ap.add_argument("--json", action="store_true", help="accepted for symmetry: the output is always one JSON line")
    args = ap.parse_args()

    from genie_robot.config import load_config, typed
    from genie_robot.data.reader import DataConfig, read_clips
    from genie_robot.evaluation.metrics import psnr
    from genie_robot.inference.world_model import WorldModel

    wm = WorldModel.load(args.run)
    if wm.lam is None or wm.cfg.lam.input != "pixels":
        raise SystemExit(f"{args.run}: needs a pixel-input LAM")
    data = wm.match_data(typed(load_config([f"data.path={args.data}", *args.overrides]).data, DataConfig))
    frames, _ = read_clips(data, "val", args.clips, ["world_vector"])
    rng = np.random.default_rng(0)
    num_actions = wm.cfg.lam.num_actions
    r: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        r.setdefault(key, []).append(float(value))

    to_u8 = lambda t: (t.clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # noqa: E731
    with torch.no_grad():
        for clip in frames:
            x = torch.from_numpy(clip[None]).float() / 255
            inferred = wm.lam.infer_actions(x)
            random = torch.from_numpy(rng.integers(0, num_actions, inferred.shape))
            add("copy_previous_frame_psnr", psnr(clip[:-1], clip[1:]).mean())
            add("lam_psnr_inferred", psnr(to_u8(lam_step(wm.lam, x, inferred)[0]), clip[1:]).mean())
            add("lam_psnr_random", psnr(to_u8(lam_step(wm.lam, x, random)[0]), clip[1:]).mean())
            each = [psnr(to_u8(lam_step(wm.lam, x, torch.full_like(inferred, a))[0]), clip[1:])
                    for a in range(num_actions)]
            add("lam_psnr_best_of_all_actions", np.max(each, axis=0).mean())
            z = wm.tokenizer.encode(x)
            for t in range(1, z.shape[1]):
                add("copy_previous_frame_token_accuracy", (z[:, t - 1] == z[:, t]).float().mean())
                masked = z[:, : t + 1].clone()
                masked[:, t] = wm.dynamics.mask_id
                for name, a in (("inferred", inferred), ("random", random)):
                    ids = wm.dynamics(masked, a[:, :t])[:, t].argmax(-1)
                    add(f"dynamics_token_accuracy_{name}", (ids == z[:, t]).float().mean())
                    add(f"dynamics_psnr_{name}", psnr(to_u8(wm.tokenizer.decode(ids[:, None])[0]), clip[t][None])[0])
    out = {k: round(float(np.mean(v)), 4) for k, v in r.items()}
    out.update(run=args.run, clips=len(frames))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
