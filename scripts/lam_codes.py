"""What a LAM's codes label, on the card's held-out clips, without training a dynamics model on them.

Issue 12's grid needs eight codes that each move the arm a different way, and a dynamics model on new codes
costs a GPU lease; so a LAM recipe is first checked here. For each code: how many held-out transitions it
labels, how much the real frame changes across them (mean absolute difference, 0-255), the norm of their mean
real world_vector (near zero: still, or motions in differing directions), and where its transitions sit in the
LAM's standardized latent (the quantizer's input); then the same for the lowest fifth of transitions by frame
change (the arm still or out of view), which shows whether "still" has one code or sits on a boundary between
two; and NMI against k-means clusters of world_vector, as eval computes it.

    python scripts/lam_codes.py --lam outputs/abl/lam_rel/lam [--clips 50] [--json out.json]

`--lam` is a LAM stage directory (its latest checkpoint) or a reference name (its lam/).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HELDOUT = "outputs/heldout/fractal20220817_data/0.1.0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lam", default="sim-rt1", help="a LAM stage directory or a reference name")
    ap.add_argument("--data", default=HELDOUT)
    ap.add_argument("--clips", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0, help="k-means seed (eval's default)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch
    from omegaconf import OmegaConf

    from genie_robot import reference
    from genie_robot.checkpoint import load_weights, stage_checkpoint
    from genie_robot.config import typed
    from genie_robot.data.reader import DataConfig, read_clips
    from genie_robot.evaluation.report import mean_world_vector, pixel_change
    from genie_robot.metrics import kmeans, nmi, standardize
    from genie_robot.models import ModelConfig, build

    root = reference.resolve(args.lam, complete=False) / "lam" if reference.is_reference_name(args.lam) else Path(
        args.lam)
    ckpt = stage_checkpoint(root) or root
    if not (ckpt / "model.safetensors").is_file():
        raise SystemExit(f"--lam {args.lam}: no LAM checkpoint at {ckpt}")
    cfg = typed(OmegaConf.load(ckpt / "config.yaml").model, ModelConfig)
    lam = build(cfg, "lam")
    load_weights(ckpt, lam)
    lam.eval()
    data = DataConfig(path=args.data, val_fraction=1.0, resolution=list(cfg.resolution), clip_frames=cfg.frames)
    frames, acts = read_clips(data, "val", args.clips, ["world_vector"])
    latents: list[torch.Tensor] = []
    hook = lam.pre_vq.register_forward_hook(lambda _m, _i, out: latents.append(out.detach()[0]))
    codes = []
    with torch.no_grad():
        for clip in frames:
            codes.append(lam.infer_actions(torch.from_numpy(clip[None]).float() / 255)[0].numpy())
    hook.remove()
    z, c = torch.cat(latents).numpy(), np.concatenate(codes)
    wv = acts[:, :-1].reshape(-1, 3)  # entry t leads from frame t to t+1
    change = pixel_change(frames)

    def vec(v: np.ndarray) -> list[float]:
        return [round(float(x), 2) for x in v]

    # eval's per-code rows (count, mean world_vector and its spread, frame change), plus the mean's norm and
    # where the code's transitions sit in the latent.
    rows = [row | ({"mean_world_vector_norm": round(float(np.linalg.norm(wv[c == row["action"]].mean(0))), 4),
                    "latent_mean": vec(z[c == row["action"]].mean(0))} if row["count"] else {})
            for row in mean_world_vector(c, wv, change, cfg.lam.num_actions)]
    still = change <= np.percentile(change, 20)
    clusters = kmeans(standardize(wv), cfg.lam.num_actions, seed=args.seed)
    report = {"lam": str(ckpt), "clips": len(frames), "transitions": len(c),
              "nmi_world_vector_clusters": round(nmi(c, clusters), 3),
              "codes": rows,
              "still": {"frame_change_at_most": round(float(np.percentile(change, 20)), 2),
                        "codes": np.bincount(c[still], minlength=cfg.lam.num_actions).tolist(),
                        "latent_mean": vec(z[still].mean(0)), "latent_std": vec(z[still].std(0))}}
    print(f"{ckpt}: {len(c)} transitions of {len(frames)} held-out clips, NMI {report['nmi_world_vector_clusters']}")

    def short(v: list[float] | None) -> str:  # a VQ's latent has 32 dimensions: the first 4
        return "-" if v is None else str(v[:4])[:-1] + (", ...]" if len(v) > 4 else "]")

    print("code | transitions | frame change | |mean world_vector| | latent mean")
    for r in rows:
        print(f"{r['action']} | {r['count']} | {r['mean_pixel_change']} | {r.get('mean_world_vector_norm', '-')} | "
              f"{short(r.get('latent_mean'))}")
    s = report["still"]
    print(f"lowest fifth by frame change (<= {s['frame_change_at_most']}): codes {s['codes']}, latent mean "
          f"{short(s['latent_mean'])} std {short(s['latent_std'])}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
