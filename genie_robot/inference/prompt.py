"""`genie-robot imagine`: Genie's "one image in, a playable world out" from the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from genie_robot.core.image import fit_image
from genie_robot.inference.world_model import Limits, WorldModel
from genie_robot.pictures import save_gif


def parse_actions(text) -> list[int]:
    """'0,3,3,5' (or a list) -> [0, 3, 3, 5], with a clear error for anything else."""
    if text is None:
        raise ValueError("imagine needs actions=<ids>, e.g. actions=0,3,3,5")
    parts = list(text) if not isinstance(text, (str, int)) else str(text).split(",")
    try:
        return [int(str(p).strip()) for p in parts]
    except ValueError as e:
        raise ValueError(f"actions must be comma-separated integer ids like 0,3,3,5, got '{text}'") from e


def imagine_from_image(cfg: DictConfig) -> Path:
    """Writes a GIF: the prompt image (as the model sees it), then one imagined frame per action."""
    if cfg.prompt is None:
        raise ValueError("imagine needs prompt=<image file>")
    actions = parse_actions(cfg.actions)
    engine = WorldModel.load(cfg.ckpt, limits=Limits(max_batch=1, max_horizon=max(len(actions), 1)))
    frame = fit_image(cfg.prompt, engine.cfg.resolution)
    c = cfg.imagine
    temperature = None if c.temperature is None else float(c.temperature)  # None: the model's own
    out = engine.imagine(frame[None], np.array([actions]), steps=int(c.steps), temperature=temperature,
                         seed=int(c.seed))
    return save_gif(np.concatenate([frame[None], out.frames[0]]), c.out, fps=float(c.fps), scale=int(c.scale))
