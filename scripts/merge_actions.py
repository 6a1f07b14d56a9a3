"""A LAM of fewer actions from a LAM trained with more codes: codes that the decoder draws alike are merged.

The codes are trained as a LAM of 16 actions (binary FSQ, code_dim 4: room for "still" and every motion);
this script measures what each code does on training clips (`genie_robot.training.merge.code_effects`),
merges them into `--actions` actions (`merge_codes`), and writes a checkpoint directory of a LAM with
`model.lam.num_actions=<actions> model.lam.quantizer_codes=<codes>` (the same weights; the merge in
`vq.code_action` / `vq.action_code`), for `train.init_from=<out> train.lam_codes_frozen=true` (its decoder
retrained around the merged actions) or `train.lam_ckpt=<out>`. Action 0 is the one that changes the frame
least.

    python scripts/merge_actions.py --lam outputs/train/sim_rt1/codes16/lam --out outputs/train/sim_rt1/codes/lam

`--tokens IN --tokens-out OUT` also carries a token file that the unmerged LAM labelled over to the merged
actions (merging moves no transition to another code, so its actions are only renamed) instead of
tokenizing again. The distances, usage and groups go to <out>/merge.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SIM_TRAIN = "outputs/sim/fractal20220817_data/0.1.0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lam", type=Path, required=True, help="LAM stage directory or checkpoint (unmerged codes)")
    ap.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    ap.add_argument("--actions", type=int, default=8)
    ap.add_argument("--data", default=SIM_TRAIN, help="RLDS dataset whose training clips show the codes' effects")
    ap.add_argument("--clips", type=int, default=150)
    ap.add_argument("--min-share", type=float, default=0.03,
                    help="codes used by fewer transitions join their nearest code instead of becoming an action")
    ap.add_argument("--tokens", type=Path, default=None, help="token file labelled by --lam")
    ap.add_argument("--tokens-out", type=Path, default=None, help="where the relabelled token file goes")
    args = ap.parse_args()
    if (args.tokens is None) != (args.tokens_out is None):
        raise SystemExit("--tokens and --tokens-out go together")

    import torch
    from omegaconf import OmegaConf
    from safetensors.torch import load_file, save_file

    from genie_robot.checkpoint import stage_checkpoint, weights_digest
    from genie_robot.config import typed
    from genie_robot.data.reader import DataConfig, read_clips
    from genie_robot.data.token_clips import TokenClips, write_token_clips
    from genie_robot.models import ModelConfig, build
    from genie_robot.training.merge import code_effects, group_change, merge_codes

    ckpt = stage_checkpoint(args.lam)
    if ckpt is None or not (ckpt / "model.safetensors").is_file():
        raise SystemExit(f"--lam {args.lam}: no LAM checkpoint there (model.safetensors and config.yaml)")
    raw = OmegaConf.load(ckpt / "config.yaml")
    cfg = typed(raw.model, ModelConfig)
    if cfg.lam.quantizer_codes:
        raise SystemExit(f"--lam {ckpt} is already merged ({cfg.lam.quantizer_codes} codes into "
                         f"{cfg.lam.num_actions} actions)")
    if args.actions >= cfg.lam.num_actions:
        raise SystemExit(f"--actions {args.actions}: the LAM has only {cfg.lam.num_actions} codes to merge")
    lam = build(cfg, "lam")
    state = load_file(ckpt / "model.safetensors")
    lam.load_state_dict(state)
    data = DataConfig(path=args.data, resolution=list(cfg.resolution), clip_frames=cfg.frames)
    frames, _ = read_clips(data, "train", args.clips, [])
    effects = code_effects(lam, frames)
    code_action, action_code = merge_codes(effects, args.actions, args.min_share)

    merged_cfg = OmegaConf.merge(raw, {"model": {"lam": {"num_actions": args.actions,
                                                         "quantizer_codes": cfg.lam.num_actions}}})
    merged = build(typed(merged_cfg.model, ModelConfig), "lam")
    keys = merged.load_state_dict({(f"vq.inner.{k[3:]}" if k.startswith("vq.") else k): v
                                   for k, v in state.items()}, strict=False)
    if set(keys.missing_keys) - {"vq.code_action", "vq.action_code", "vq.ema_usage"} or keys.unexpected_keys:
        raise SystemExit(f"the merged LAM does not fit {ckpt}'s weights (missing {sorted(keys.missing_keys)}, "
                         f"unexpected {sorted(keys.unexpected_keys)}): not a LAM checkpoint of this code")
    merged.vq.set_merge(torch.from_numpy(code_action), torch.from_numpy(action_code))
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in merged.state_dict().items()}, str(tmp))
    tmp.replace(args.out / "model.safetensors")
    (args.out / "config.yaml").write_text(OmegaConf.to_yaml(merged_cfg))

    groups = [np.flatnonzero(code_action == a).tolist() for a in range(args.actions)]
    report = {"lam": str(ckpt), "data": args.data, "clips": len(frames), "min_share": args.min_share,
              "usage": effects.usage.tolist(), "change": np.round(effects.change, 2).tolist(),
              "distance": np.round(effects.distance, 2).tolist(), "groups": groups,
              "action_code": action_code.tolist(), "code_action": code_action.tolist()}
    print(f"{ckpt}: {len(effects.usage)} codes on {len(frames)} training clips -> {args.actions} actions")
    print("action | codes | transitions | decoded frame change (0-255)")
    for a, members in enumerate(groups):
        print(f"{a} | {members} (stands as {action_code[a]}) | {int(effects.usage[members].sum())} | "
              f"{group_change(effects, members):.1f}")

    if args.tokens is not None:
        tokens = TokenClips(args.tokens)
        lineage = tokens.meta.get("lineage", {})
        if lineage.get("lam") != weights_digest(ckpt, "lam"):
            raise SystemExit(f"--tokens {args.tokens} was not labelled by --lam {ckpt} (lineage {lineage})")
        with np.load(args.tokens) as f:
            val_actions = {k[len("val_action_"):]: f[k] for k in f.files if k.startswith("val_action_")}
            train_actions = code_action[f["train_actions"].astype(np.int64)]
            meta = {k: v for k, v in tokens.meta.items() if k != "format"}
            meta |= {"lineage": lineage | {"lam": weights_digest(args.out, "lam")}, "lam_ckpt": str(args.out)}
            write_token_clips(args.tokens_out, f["train_tokens"], train_actions, f["val_frames"], val_actions, meta)
        report["tokens"] = {"in": str(args.tokens), "out": str(args.tokens_out)}
        print(f"{args.tokens} relabelled -> {args.tokens_out}")
    (args.out / "merge.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
