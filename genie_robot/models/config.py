"""Typed configs for the three Genie components, and the registry of sizes in configs/model/.

Only the top-level model takes a `ModelConfig`; sub-modules take the pieces they need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from genie_robot.models.st_transformer import STConfig


@dataclass
class TokenizerConfig:
    patch: int = 4
    num_codes: int = 1024
    code_dim: int = 32
    encoder: STConfig = field(default_factory=STConfig)
    decoder: STConfig = field(default_factory=STConfig)


@dataclass
class LAMConfig:
    input: str = "pixels"  # pixels | tokens (the paper's ablation: LAM over tokenizer tokens)
    patch: int = 16
    num_actions: int = 8
    code_dim: int = 32
    # Weight of the VQ's entropy penalty (genie_robot.models.vq): keeps all actions in use.
    entropy_weight: float = 0.0
    encoder: STConfig = field(default_factory=STConfig)
    decoder: STConfig = field(default_factory=STConfig)


@dataclass
class DynamicsConfig:
    transformer: STConfig = field(default_factory=STConfig)
    mask_rate_min: float = 0.5  # per-sample Bernoulli mask rate ~ U[min, max] on frames 2..T
    mask_rate_max: float = 1.0


@dataclass
class ModelConfig:
    name: str = "tiny"
    frames: int = 16  # context window (frames per clip)
    resolution: list[int] = field(default_factory=lambda: [64, 80])  # [H, W]
    channels: int = 3
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    lam: LAMConfig = field(default_factory=LAMConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    # The named size of each part (the paper's figure), checked by the parameter-count test.
    named_params: dict[str, float] = field(default_factory=dict)

    def tokens_per_frame(self) -> int:
        h, w = self.resolution
        return (h // self.tokenizer.patch) * (w // self.tokenizer.patch)

    def validate(self) -> None:
        h, w = self.resolution
        for part, patch in (("tokenizer", self.tokenizer.patch), ("lam", self.lam.patch)):
            if h % patch or w % patch:
                raise ValueError(
                    f"model '{self.name}': resolution {h}x{w} is not divisible by {part}.patch={patch}; "
                    f"choose H and W that are multiples of {patch} (data.resolution and model.resolution)")
        if self.lam.input not in ("pixels", "tokens"):
            raise ValueError(f"model.lam.input must be 'pixels' or 'tokens', got '{self.lam.input}'")
        for name, st in (("tokenizer.encoder", self.tokenizer.encoder), ("tokenizer.decoder", self.tokenizer.decoder),
                         ("lam.encoder", self.lam.encoder), ("lam.decoder", self.lam.decoder),
                         ("dynamics.transformer", self.dynamics.transformer)):
            st.validate(f"model.{name}")
        if not 0.0 < self.dynamics.mask_rate_min <= self.dynamics.mask_rate_max <= 1.0:
            raise ValueError("model.dynamics mask rates must satisfy 0 < min <= max <= 1")
