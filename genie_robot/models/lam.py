"""Latent action model: infers one of 8 discrete actions between consecutive frames, unsupervised.

Encoder: frames x_1..x_T (patches plus one learned action token per frame) through a
causal ST-transformer; the action token of frame t+1 has seen x_1..x_{t+1} and becomes the
continuous latent of transition t, quantized to one of `num_actions` codes. Decoder:
frames x_1..x_{T-1} with the quantized action of each transition added to every token,
causal again, reconstructs x_2..x_T. With so few codes the only way to reconstruct well is
to put in them what changes between frames and cannot be predicted from the past: the
action. `input=tokens` runs the same model over tokenizer tokens (the paper's ablation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genie_robot.models.config import LAMConfig
from genie_robot.models.st_transformer import FiLM, PositionEmbedding, STTransformer, patchify, unpatchify
from genie_robot.models.vq import BinaryFSQ, MergedCodes, VectorQuantizer, VQOutput


@dataclass
class LAMOutput:
    recon: torch.Tensor  # pixels: [B, T-1, C, H, W] in (0, 1); tokens: logits [B, T-1, S, V]
    actions: torch.Tensor  # [B, T-1] action ids
    vq: VQOutput


class StepwiseBatchNorm(nn.Module):
    """Standardizes the action latents over the batch, separately for each transition index.

    An untrained encoder's latents share one large common component; without standardizing,
    every transition lands on the same code, the decoder learns to ignore it, and the LAM never
    recovers (collapse). Pooling the statistics over all transitions is not enough: the latent
    of transition t carries the encoder's time embedding, so codes end up naming the time step
    (which the decoder already knows) instead of the motion. Per-index statistics remove that.
    Clips shorter than the window use the first indices' running statistics (the encoder is
    causal, so transition t's latent does not depend on later frames).
    """

    def __init__(self, steps: int, dim: int):
        super().__init__()
        self.steps, self.dim = steps, dim
        self.bn = nn.BatchNorm1d(steps * dim, affine=False)

    def forward(self, z_BTC: torch.Tensor) -> torch.Tensor:
        b, t, c = z_BTC.shape
        flat = z_BTC.reshape(b, t * c)
        if self.training:
            if t != self.steps:
                raise ValueError(f"training needs clips of {self.steps + 1} frames, got {t + 1}")
            return self.bn(flat).view_as(z_BTC)
        if t > self.steps:
            raise ValueError(f"inference takes at most {self.steps + 1} frames, got {t + 1}")
        # One path for every length t (running statistics of the first t indices), so an
        # exported graph with a dynamic time axis computes exactly this.
        n = t * c
        return F.batch_norm(flat, self.bn.running_mean[:n], self.bn.running_var[:n], training=False,
                            eps=self.bn.eps).view_as(z_BTC)


class LatentActionModel(nn.Module):
    # The modules that decide which code a transition gets. A dynamics model trained on a LAM's
    # codes depends on these alone (its lineage digest covers them, `checkpoint.weights_digest`); the decoder
    # may be retrained around them (`freeze_codes`) without invalidating that dynamics model.
    CODE_MODULES = ("embed", "diff_embed", "action_token", "enc_pos", "encoder", "to_code", "pre_vq", "vq")

    def __init__(self, cfg: LAMConfig, frames: int, resolution: list[int], channels: int = 3,
                 token_vocab: int = 0, token_patch: int = 4):
        super().__init__()
        self.input, self.channels, self.hw = cfg.input, channels, (resolution[0], resolution[1])
        self.output = cfg.decoder_output
        enc, dec = cfg.encoder, cfg.decoder
        if cfg.input == "pixels":
            self.patch = cfg.patch
            tokens = (resolution[0] // cfg.patch) * (resolution[1] // cfg.patch)
            patch_dim = channels * cfg.patch**2
            self.embed = nn.Linear(patch_dim, enc.d_model)
            self.diff_embed = nn.Linear(patch_dim, enc.d_model) if cfg.encoder_input != "frames" else None
            self.dec_embed = nn.Linear(patch_dim, dec.d_model)
            self.head = nn.Linear(dec.d_model, patch_dim)
        else:
            self.diff_embed = None
            tokens = (resolution[0] // token_patch) * (resolution[1] // token_patch)
            self.embed = nn.Embedding(token_vocab, enc.d_model)
            self.dec_embed = nn.Embedding(token_vocab, dec.d_model)
            self.head = nn.Linear(dec.d_model, token_vocab)
        # --- encoder ---
        self.action_token = nn.Parameter(torch.randn(1, 1, 1, enc.d_model) * 0.02)
        self.enc_pos = PositionEmbedding(frames, tokens + 1, enc.d_model)
        self.encoder = STTransformer(enc)
        self.to_code = nn.Linear(enc.d_model, cfg.code_dim)
        self.pre_vq = StepwiseBatchNorm(frames - 1, cfg.code_dim)
        codes = cfg.quantizer_codes or cfg.num_actions
        self.vq = (BinaryFSQ(codes, cfg.code_dim, margin_weight=cfg.fsq_margin_weight)
                   if cfg.quantizer == "fsq" else
                   VectorQuantizer(codes, cfg.code_dim, entropy_weight=cfg.entropy_weight,
                                   normalize=cfg.quantizer == "vq"))
        if cfg.quantizer_codes:  # codes merged into num_actions actions (scripts/merge_actions.py)
            self.vq = MergedCodes(self.vq, cfg.num_actions)
        # --- decoder ---
        self.action_in = nn.Linear(cfg.code_dim, dec.d_model)
        self.film = FiLM(cfg.code_dim, dec) if cfg.action_conditioning == "film" else None
        self.dec_pos = PositionEmbedding(frames, tokens, dec.d_model)
        self.decoder = STTransformer(dec)
        self.codes_frozen = False

    def freeze_codes(self) -> LatentActionModel:
        """Train the decoder only: the code-deciding modules get no gradients and stay in eval mode
        (no batch-statistics updates, no VQ restarts), so every clip keeps exactly the codes it had."""
        self.codes_frozen = True
        for name in self.CODE_MODULES:
            module = getattr(self, name)
            if module is not None:
                module.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> LatentActionModel:
        super().train(mode)
        if self.codes_frozen:
            for name in self.CODE_MODULES:
                module = getattr(self, name)
                if isinstance(module, nn.Module):
                    module.eval()
        return self

    def _inputs(self, x: torch.Tensor, embed: nn.Module) -> torch.Tensor:
        """[B, T, S, D] embeddings of pixels in [0, 1] ([B,T,C,H,W]) or token ids ([B,T,S])."""
        return embed(patchify(x, self.patch)) if self.input == "pixels" else embed(x)

    def _encode(self, x: torch.Tensor) -> VQOutput:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.codes_frozen):
            return self._encode_with(x)

    def _encode_with(self, x: torch.Tensor) -> VQOutput:
        e = self._inputs(x, self.embed)
        if self.diff_embed is not None:  # frame t's change since frame t-1 (none for the first)
            diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)
            e = e + self.diff_embed(patchify(diff, self.patch))
        b, t, _, d = e.shape
        e = torch.cat([self.action_token.expand(b, t, 1, d), e], dim=2)
        h = self.encoder(self.enc_pos(e), at=0)  # the action token's outputs alone: [B, T, 1, D]
        z = self.to_code(h[:, 1:, 0])  # action token of frames 2..T: [B, T-1, code]
        return self.vq(self.pre_vq(z))

    def forward(self, x: torch.Tensor) -> LAMOutput:
        vq = self._encode(x)
        return LAMOutput(self.decode(x, vq.z_q), vq.indices, vq)

    def decode(self, x: torch.Tensor, actions_BTC: torch.Tensor) -> torch.Tensor:
        """Predictions of frames 2..T from frames 1..T-1 of x and action vectors [B, T-1, code_dim].

        Takes any actions, not only the inferred ones, so the codes' effect can be measured
        (`decode_ids`; the LAM's evaluation feeds every code in turn).
        """
        e = self._inputs(x[:, :-1], self.dec_embed)
        e = self.dec_pos(e) + self.action_in(actions_BTC)[:, :, None, :]
        film = self.film.blocks(actions_BTC) if self.film is not None else None
        out = self.head(self.decoder(e, film))
        if self.input == "pixels":
            # Around the previous frame (residual outputs): copying x_t costs nothing, so what the
            # decoder must learn, and the action must carry, is the change (model.lam.decoder_output).
            out = unpatchify(out, self.patch, self.channels, self.hw)
            if self.output == "pixels":
                out = torch.sigmoid(out)
            elif self.output == "logit_residual":
                out = torch.sigmoid(torch.logit(x[:, :-1].clamp(1e-3, 1 - 1e-3)) + out)
            else:
                out = x[:, :-1] + out
        return out

    def decode_ids(self, x: torch.Tensor, ids_BT: torch.Tensor) -> torch.Tensor:
        """`decode` with chosen action ids [B, T-1] instead of vectors."""
        return self.decode(x, self.vq.lookup(ids_BT))

    @torch.no_grad()
    def infer_actions(self, x: torch.Tensor) -> torch.Tensor:
        """Action ids [B, T-1] for the transitions of x (pixels in [0, 1] or token ids)."""
        return self._encode(x).indices
