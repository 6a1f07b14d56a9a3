"""Genie's three components over one ST-transformer; `build` makes any of them from a ModelConfig.

The configs import without torch (the onnxruntime engine uses them); the modules load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from genie_robot.models.config import DynamicsConfig, LAMConfig, ModelConfig, STConfig, TokenizerConfig

if TYPE_CHECKING:
    from torch import nn

COMPONENTS = ("tokenizer", "lam", "dynamics")
_LAZY = {
    "DynamicsModel": "dynamics", "mask_tokens": "dynamics", "code_targets": "dynamics", "token_loss": "dynamics",
    "code_vector_loss": "dynamics",
    "LatentActionModel": "lam",
    "STTransformer": "st_transformer", "VideoTokenizer": "tokenizer",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"genie_robot.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'genie_robot.models' has no attribute '{name}'")


def build(cfg: ModelConfig, component: str) -> nn.Module:
    """One component, as the config sizes it (works on the `meta` device for counting)."""
    from genie_robot.models.dynamics import DynamicsModel
    from genie_robot.models.lam import LatentActionModel
    from genie_robot.models.tokenizer import VideoTokenizer

    cfg.validate()
    if component == "tokenizer":
        return VideoTokenizer(cfg.tokenizer, cfg.frames, cfg.resolution, cfg.channels)
    if component == "lam":
        return LatentActionModel(cfg.lam, cfg.frames, cfg.resolution, cfg.channels,
                                 token_vocab=cfg.tokenizer.num_codes, token_patch=cfg.tokenizer.patch)
    if component == "dynamics":
        return DynamicsModel(cfg.dynamics, cfg.frames, cfg.tokens_per_frame(), cfg.tokenizer.num_codes,
                             cfg.lam.num_actions, code_dim=cfg.tokenizer.code_dim)
    raise ValueError(f"unknown component '{component}' (one of {COMPONENTS})")


__all__ = [
    "COMPONENTS", "DynamicsConfig", "DynamicsModel", "LAMConfig", "LatentActionModel", "ModelConfig",
    "STConfig", "STTransformer", "TokenizerConfig", "VideoTokenizer", "build", "code_targets", "code_vector_loss",
    "mask_tokens", "token_loss",
]
