"""Video tokenizer: an ST-ViViT VQ-VAE turning frames into discrete tokens and back.

Patches of `patch` x `patch` pixels become one token each; the encoder's ST-transformer
sees past frames through causal temporal attention (so token t never depends on frames
after t), the VQ maps each patch to one of `num_codes` codes, and a (larger) decoder
reconstructs pixels. Pixels are in [0, 1] at the interface and [-1, 1] inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genie_robot.models.config import TokenizerConfig
from genie_robot.models.st_transformer import PositionEmbedding, STTransformer, patchify, unpatchify
from genie_robot.models.vq import VectorQuantizer, VQOutput


@dataclass
class TokenizerOutput:
    recon: torch.Tensor  # [B, T, C, H, W] in [0, 1] (unclamped during training)
    vq: VQOutput


class VideoTokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig, frames: int, resolution: list[int], channels: int = 3):
        super().__init__()
        self.patch, self.channels, self.hw = cfg.patch, channels, (resolution[0], resolution[1])
        tokens = (resolution[0] // cfg.patch) * (resolution[1] // cfg.patch)
        patch_dim = channels * cfg.patch**2
        enc, dec = cfg.encoder, cfg.decoder
        # --- encoder ---
        self.embed = nn.Linear(patch_dim, enc.d_model)
        self.enc_pos = PositionEmbedding(frames, tokens, enc.d_model)
        self.encoder = STTransformer(enc)
        self.to_code = nn.Linear(enc.d_model, cfg.code_dim)
        self.vq = VectorQuantizer(cfg.num_codes, cfg.code_dim)
        # --- decoder ---
        self.from_code = nn.Linear(cfg.code_dim, dec.d_model)
        self.dec_pos = PositionEmbedding(frames, tokens, dec.d_model)
        self.decoder = STTransformer(dec)
        self.to_pixels = nn.Linear(dec.d_model, patch_dim)
        self.codes_frozen = False

    # What decides a frame's tokens: frozen, a later stage's dynamics (and a token-input LAM) stay valid.
    CODE_MODULES = ("embed", "enc_pos", "encoder", "to_code", "vq")

    def freeze_codes(self) -> VideoTokenizer:
        """Train the decoder only (fine-tuning to a new scene): the encoder and codebook get no gradients and
        stay in eval mode (no dead-code restarts), so every frame keeps exactly the tokens it had."""
        self.codes_frozen = True
        for name in self.CODE_MODULES:
            getattr(self, name).requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> VideoTokenizer:
        super().train(mode)
        if self.codes_frozen:
            for name in self.CODE_MODULES:
                getattr(self, name).eval()
        return self

    def _latents(self, frames_BTCHW: torch.Tensor) -> torch.Tensor:
        x = self.embed(patchify(frames_BTCHW * 2 - 1, self.patch))  # [B, T, S, D]
        return self.to_code(self.encoder(self.enc_pos(x)))

    def _pixels(self, z_BTSC: torch.Tensor) -> torch.Tensor:
        x = self.decoder(self.dec_pos(self.from_code(z_BTSC)))
        patches = self.to_pixels(x)
        return unpatchify(patches, self.patch, self.channels, self.hw) * 0.5 + 0.5

    def forward(self, frames_BTCHW: torch.Tensor) -> TokenizerOutput:
        vq = self.vq(self._latents(frames_BTCHW))
        return TokenizerOutput(self._pixels(vq.z_q), vq)

    @torch.no_grad()
    def encode(self, frames_BTCHW: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T, S] for frames in [0, 1]."""
        return self.vq.quantize(self._latents(frames_BTCHW))

    @torch.no_grad()
    def decode(self, tokens_BTS: torch.Tensor) -> torch.Tensor:
        """Frames [B, T, C, H, W] in [0, 1] from token ids."""
        return self._pixels(self.vq.lookup(tokens_BTS)).clamp(0, 1)
