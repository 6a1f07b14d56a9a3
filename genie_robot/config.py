"""Compose configs from `configs/` with Hydra's compose API and type-check the parts we use.

The compose API (not `@hydra.main`) because ROS nodes pass `--ros-args`, which
`@hydra.main` rejects, and because one CLI dispatches several commands.
"""

from __future__ import annotations

import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import TypeVar

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from genie_robot.models.config import SAMPLING, ModelConfig

T = TypeVar("T")

# `${sampling:steps}` in configs/config.yaml: MaskGIT's defaults come from one place (SAMPLING), and
# the keys stay in the YAML, so `eval.temperature=1.0` overrides them as before.
OmegaConf.register_new_resolver("sampling", lambda key: getattr(SAMPLING, key), replace=True)


def config_dir() -> Path:
    """configs/ of a source checkout, else the copy `setup.py` installs under share/."""
    here = Path(__file__).resolve()
    candidates = [
        os.environ.get("GENIE_ROBOT_CONFIG_DIR"),
        here.parent.parent / "configs",  # source checkout / editable install
        # <prefix>/lib/pythonX.Y/site-packages/genie_robot: colcon and pip --prefix installs
        here.parents[4] / "share" / "genie_robot" / "configs" if len(here.parents) > 4 else None,
        Path(sys.prefix) / "share" / "genie_robot" / "configs",
    ]
    for c in candidates:
        if c and (Path(c) / "config.yaml").is_file():
            return Path(c)
    raise FileNotFoundError(
        "genie-robot configs not found: looked in $GENIE_ROBOT_CONFIG_DIR, the source tree's configs/ "
        f"and {Path(sys.prefix) / 'share/genie_robot/configs'}")


def load_config(overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides or []))


def model_config(name: str) -> ModelConfig:
    """configs/model/<name>.yaml alone, typed (what benchmarks of one model shape need, without the rest)."""
    with initialize_config_dir(config_dir=str(config_dir() / "model"), version_base="1.3"):
        return typed(compose(config_name=name), ModelConfig)


def typed(section: DictConfig, cls: type[T]) -> T:
    """Resolve a config section into dataclass `cls`; unknown or mistyped keys are errors."""
    container = OmegaConf.to_container(section, resolve=True)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(container) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {sorted(names)}")
    merged = OmegaConf.merge(OmegaConf.structured(cls), container)
    return OmegaConf.to_object(merged)
