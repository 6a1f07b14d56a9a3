"""Genie's three components over one ST-transformer; `build` makes any of them from a ModelConfig."""

from __future__ import annotations

from torch import nn

from genie_robot.models.config import DynamicsConfig, LAMConfig, ModelConfig, TokenizerConfig
from genie_robot.models.dynamics import DynamicsModel, mask_tokens
from genie_robot.models.lam import LatentActionModel
from genie_robot.models.st_transformer import STConfig, STTransformer
from genie_robot.models.tokenizer import VideoTokenizer

COMPONENTS = ("tokenizer", "lam", "dynamics")


def build(cfg: ModelConfig, component: str) -> nn.Module:
    """One component, as the config sizes it (works on the `meta` device for counting)."""
    cfg.validate()
    if component == "tokenizer":
        return VideoTokenizer(cfg.tokenizer, cfg.frames, cfg.resolution, cfg.channels)
    if component == "lam":
        return LatentActionModel(cfg.lam, cfg.frames, cfg.resolution, cfg.channels,
                                 token_vocab=cfg.tokenizer.num_codes, token_patch=cfg.tokenizer.patch)
    if component == "dynamics":
        return DynamicsModel(cfg.dynamics, cfg.frames, cfg.tokens_per_frame(), cfg.tokenizer.num_codes,
                             cfg.lam.num_actions)
    raise ValueError(f"unknown component '{component}' (one of {COMPONENTS})")


__all__ = [
    "COMPONENTS", "DynamicsConfig", "DynamicsModel", "LAMConfig", "LatentActionModel", "ModelConfig",
    "STConfig", "STTransformer", "TokenizerConfig", "VideoTokenizer", "build", "mask_tokens",
]
