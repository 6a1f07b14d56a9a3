"""A dynamics model carried over to a new LAM's codes, as the start of its fine-tuning.

A LAM retrained from scratch numbers its codes anew and draws their borders elsewhere, so a dynamics model
trained on the old codes reads every new code as some other motion. Retraining the dynamics from scratch
costs what it cost the first time (for sim-rt1 a GPU lease). This script gives each new code a starting
embedding that already means roughly the right motion: the mean of the old codes' embeddings, weighted by
how often the old code labelled the transitions the new code labels. Both token files must hold the same
clips in the same order (`genie-robot tokenize-data` with the same data, `data.clip_hop` and tokenizer,
once per LAM); the tokens are compared to make sure. The rest of the weights are copied unchanged; the
result is a checkpoint directory for `train.init_from=<out> train.init_from_other_lineage=true`.

    python scripts/remap_actions.py --dynamics genie_robot/references/sim-rt1/dynamics \\
        --old-tokens outputs/tokens/sim_rt1.npz --new-tokens outputs/tokens/new_lam.npz --out outputs/remap

Prints the co-occurrence table and writes it to <out>/remap.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

EMBED = "action_embed.weight"


def cooccurrence(old: np.ndarray, new: np.ndarray, num_actions: int) -> np.ndarray:
    """[new, old] counts of transitions labelled new code i by the new LAM and old code j by the old one."""
    counts = np.zeros((num_actions, num_actions), np.int64)
    np.add.at(counts, (new.reshape(-1).astype(np.int64), old.reshape(-1).astype(np.int64)), 1)
    return counts


def remapped_embeddings(old_embed: torch.Tensor, counts: np.ndarray) -> torch.Tensor:
    """Each new code's row: the old rows weighted by the co-occurrence; a new code that labels nothing
    keeps the mean of the old rows. Extra rows past the codes (a `prepend` model's "no action") are kept."""
    n = counts.shape[0]
    weights = counts.astype(np.float64)
    empty = weights.sum(1) == 0
    weights[empty] = 1.0
    weights /= weights.sum(1, keepdims=True)
    out = old_embed.clone().float()
    out[:n] = torch.from_numpy(weights).float() @ old_embed[:n].float()
    return out.to(old_embed.dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dynamics", type=Path, required=True, help="checkpoint directory of the old dynamics")
    ap.add_argument("--old-tokens", type=Path, required=True, help="token file labelled by the old LAM")
    ap.add_argument("--new-tokens", type=Path, required=True, help="token file labelled by the new LAM")
    ap.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    args = ap.parse_args()
    weights = args.dynamics / "model.safetensors"
    if not weights.is_file():
        raise SystemExit(f"--dynamics {args.dynamics}: no model.safetensors there")
    old, new = np.load(args.old_tokens), np.load(args.new_tokens)
    for name, f in (("--old-tokens", old), ("--new-tokens", new)):
        missing = [k for k in ("train_tokens", "train_actions") if k not in f.files]
        if missing:
            raise SystemExit(f"{name}: {missing} missing: not a `genie-robot tokenize-data` file")
    if old["train_tokens"].shape != new["train_tokens"].shape or not np.array_equal(old["train_tokens"],
                                                                                     new["train_tokens"]):
        raise SystemExit(f"{args.old_tokens} and {args.new_tokens} do not hold the same clips (their tokens differ: "
                         f"{old['train_tokens'].shape} vs {new['train_tokens'].shape}); tokenize the same data with "
                         "the same tokenizer and data.clip_hop")
    state = load_file(weights)
    if EMBED not in state:
        raise SystemExit(f"{weights} has no {EMBED}: not a dynamics model")
    config = args.dynamics / "config.yaml"
    if not config.is_file():
        raise SystemExit(f"--dynamics {args.dynamics}: no config.yaml there")
    num_actions = int(OmegaConf.load(config).model.lam.num_actions)
    used = int(max(old["train_actions"].max(), new["train_actions"].max())) + 1
    if used > num_actions:
        raise SystemExit(f"the token files use {used} action codes; {config} has model.lam.num_actions {num_actions}")
    counts = cooccurrence(old["train_actions"], new["train_actions"], num_actions)
    state[EMBED] = remapped_embeddings(state[EMBED], counts)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "trainer.json"):
        if (args.dynamics / name).is_file():
            shutil.copy(args.dynamics / name, args.out / name)
    tmp = args.out / "model.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(args.out / "model.safetensors")
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    report = {"dynamics": str(args.dynamics), "old_tokens": str(args.old_tokens), "new_tokens": str(args.new_tokens),
              "cooccurrence_new_by_old": counts.tolist()}
    (args.out / "remap.json").write_text(json.dumps(report, indent=1))
    print("new code: transitions, share of each old code")
    for i, row in enumerate(share):
        print(f"{i}: {int(counts[i].sum()):6d}  " + " ".join(f"{v:.2f}" for v in row))


if __name__ == "__main__":
    main()
