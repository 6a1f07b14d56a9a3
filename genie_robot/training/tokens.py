"""`genie-robot tokenize-data`: the dynamics stage's clips tokenized once, for `data.tokens`.

Reads the training split of `data.path` (and of each `tokens.extra` dataset) clip by clip with
the same cutting the trainer uses (`data.clip_hop`), runs the frozen tokenizer and LAM of
`train.tokenizer_ckpt` / `train.lam_ckpt` exactly as `DynamicsStage` does at every step, and
writes their tokens and latent actions, with `data.path`'s val clips as frames, to one file
(genie_robot.data.token_clips). The dynamics stage then trains from that file anywhere torch
runs, which is how a GPU without TensorFlow or the JPEGs trains the reference's dynamics.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from genie_robot import reference
from genie_robot.config import typed
from genie_robot.data.reader import ClipDataset, DataConfig
from genie_robot.data.token_clips import write_token_clips
from genie_robot.models import ModelConfig
from genie_robot.training.stages import DynamicsStage
from genie_robot.training.trainer import TrainConfig


def _frozen(value: str | None, component: str) -> str:
    if not value:
        raise ValueError(f"train.{component}_ckpt is not set: name the frozen {component} to tokenize with")
    if reference.is_reference_name(value):
        return str(reference.resolve(value, complete=False) / component)
    return value


def _clips(stage: DynamicsStage, cfg: DataConfig, split: str, what: str,
           keep_frames: bool = False) -> tuple[np.ndarray, ...]:
    """(tokens, latent actions, frames or None, real actions) of every clip of one split, in the dataset's order."""
    tokens, actions, frames, real = [], [], [], []
    for batch in tqdm(ClipDataset(cfg, split), desc=what, unit="batch", dynamic_ncols=True):
        _, tok, act = stage.targets(batch["frames"])
        tokens.append(tok.cpu().numpy().astype(np.uint16))
        actions.append(act.cpu().numpy().astype(np.uint8))
        if keep_frames:
            frames.append(batch["frames"].numpy())
            real.append({k: v.numpy() for k, v in batch["actions"].items()})
    if not tokens:
        raise ValueError(f"{cfg.path}: no {split} clips of {cfg.clip_frames} frames")
    if not keep_frames:
        return np.concatenate(tokens), np.concatenate(actions), None, None
    return (np.concatenate(tokens), np.concatenate(actions), np.concatenate(frames),
            {k: np.concatenate([r[k] for r in real]) for k in real[0]})


@torch.no_grad()
def tokenize_data(cfg: DictConfig) -> dict:
    """Writes `tokens.out`; returns what it wrote (clips per source, the file, its lineage)."""
    mcfg, dcfg = typed(cfg.model, ModelConfig), typed(cfg.data, DataConfig)
    tcfg = typed(cfg.train, TrainConfig)
    tcfg.tokenizer_ckpt = _frozen(tcfg.tokenizer_ckpt, "tokenizer")
    tcfg.lam_ckpt = _frozen(tcfg.lam_ckpt, "lam")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    stage = DynamicsStage(mcfg, device, tcfg)
    clip = replace(dcfg, shuffle=False, repeat=False, drop_remainder=False, tokens=None)
    sources, tokens, actions = [], [], []
    for path in [dcfg.path, *map(str, cfg.tokens.extra or [])]:
        tok, act, _, _ = _clips(stage, replace(clip, path=path), "train", f"tokenize {Path(path).parts[-3:]}")
        tokens.append(tok)
        actions.append(act)
        sources.append({"path": path, "split": "train", "clips": len(tok), "clip_hop": clip.hop,
                        "val_fraction": clip.val_fraction})
    # The val split of data.path as the trainer's evaluation reads it: clips that do not overlap.
    _, _, val_frames, val_actions = _clips(stage, replace(clip, clip_hop=None), "val", "val clips", keep_frames=True)
    grid = [mcfg.resolution[0] // mcfg.tokenizer.patch, mcfg.resolution[1] // mcfg.tokenizer.patch]
    meta = {"model": mcfg.name, "frames": mcfg.frames, "resolution": list(mcfg.resolution), "grid": grid,
            "lineage": stage.lineage, "tokenizer_ckpt": tcfg.tokenizer_ckpt, "lam_ckpt": tcfg.lam_ckpt,
            "sources": sources, "val": {"path": dcfg.path, "clips": len(val_frames)}}
    out = write_token_clips(Path(cfg.tokens.out), np.concatenate(tokens), np.concatenate(actions), val_frames,
                            val_actions, meta)
    return {"out": str(out), "bytes": out.stat().st_size, "train_clips": sum(s["clips"] for s in sources), **meta}
