"""`genie-robot fit-adapter`: fit the latent-to-robot action adapter from labelled clips, report held-out error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from genie_robot.data.reader import DataConfig, read_clips
from genie_robot.inference.world_model import WorldModel
from genie_robot.planning.adapter import ACTION_KEYS, fit, held_out_error


@dataclass
class AdapterConfig:
    method: str = "mean"        # mean (Genie's CoinRun recipe, per latent id) | ridge (id + previous id)
    train_clips: int = 200      # labelled training clips used (a "small number of labelled episodes")
    val_clips: int = 64         # held-out clips for the reported error
    ridge: float = 1.0


def _labelled(engine: WorldModel, data: DataConfig, split: str, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Latent action ids [T-1] and real actions [T-1, 7] per clip of `split`."""
    frames, real = read_clips(data, split, n, ACTION_KEYS)
    latent = [engine.infer_actions(clip) for clip in tqdm(frames, desc=f"latent actions ({split})", unit="clip")]
    return latent, list(real[:, :-1])  # entry t leads from frame t to t+1


def fit_adapter(engine: WorldModel, data: DataConfig, cfg: AdapterConfig) -> dict:
    """Fits on training clips, measures on validation clips, saves `<engine.source>/adapter.json`.

    `data` must already match the model's resolution and window (`WorldModel.match_data`).
    """
    ids, acts = _labelled(engine, data, "train", cfg.train_clips)
    adapter = fit(cfg.method, ids, acts, engine.cfg.lam.num_actions, cfg.ridge)
    val_ids, val_acts = _labelled(engine, data, "val", cfg.val_clips)
    adapter.info["held_out"] = held_out_error(adapter, val_ids, val_acts, np.concatenate(acts).mean(0))
    adapter.info["fitted_on"] = str(data.path)
    path = adapter.save(Path(engine.source) / "adapter.json")
    return {"adapter": str(path), "method": cfg.method, **adapter.info}
