"""`genie-robot fit-adapter`: fit the latent-to-robot action adapter from labelled clips, report held-out error."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from genie_robot.data.reader import ClipDataset, DataConfig
from genie_robot.inference.world_model import WorldModel
from genie_robot.planning.adapter import ACTION_KEYS, fit, held_out_error


@dataclass
class AdapterConfig:
    method: str = "mean"        # mean (Genie's CoinRun recipe, per latent id) | ridge (id + previous id)
    train_clips: int = 200      # labelled training clips used (a "small number of labelled episodes")
    val_clips: int = 64         # held-out clips for the reported error
    ridge: float = 1.0


def _labelled(engine: WorldModel, data: DataConfig, split: str, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    ids, acts = [], []
    missing = [k for k in ACTION_KEYS if k not in data.action_keys]
    if missing:
        raise ValueError(f"the adapter needs data.action_keys to include {missing}")
    ds = ClipDataset(replace(data, shuffle=False, drop_remainder=False, repeat=False), split)
    with tqdm(total=n, desc=f"latent actions ({split})", unit="clip") as bar:
        for batch in ds:
            frames = batch["frames"].numpy()
            real = np.concatenate([batch["actions"][k].numpy() for k in ACTION_KEYS], axis=-1)
            latent = engine.infer_actions(frames)
            for i in range(len(frames)):
                ids.append(latent[i])
                acts.append(real[i, :-1])  # entry t leads from frame t to t+1
            bar.update(len(frames))
            if len(ids) >= n:
                break
    if not ids:
        raise ValueError(f"{data.path} has no {split} clips of {data.clip_frames} frames")
    return ids[:n], acts[:n]


def fit_adapter(ckpt: str, data: DataConfig, cfg: AdapterConfig) -> dict:
    engine = WorldModel.load(ckpt)
    data = replace(data, resolution=list(engine.cfg.resolution), clip_frames=engine.cfg.frames)
    ids, acts = _labelled(engine, data, "train", cfg.train_clips)
    adapter = fit(cfg.method, ids, acts, engine.cfg.lam.num_actions, cfg.ridge)
    val_ids, val_acts = _labelled(engine, data, "val", cfg.val_clips)
    adapter.info["held_out"] = held_out_error(adapter, val_ids, val_acts, np.concatenate(acts).mean(0))
    adapter.info["fitted_on"] = str(data.path)
    path = adapter.save(Path(ckpt) / "adapter.json")
    return {"adapter": str(path), "method": cfg.method, **adapter.info}
