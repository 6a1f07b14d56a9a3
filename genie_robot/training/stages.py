"""The three training stages, in Genie's order: tokenizer, then LAM, then dynamics.

A stage owns its trainable model, any frozen models it needs (the dynamics stage tokenizes
frames and infers latent actions with the frozen tokenizer and LAM), its loss, and its
evaluation. The training loop is the same for all three.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import nn

from genie_robot.checkpoint import CheckpointError, load_frozen, unwrap
from genie_robot.metrics import kmeans, nmi, psnr, standardize
from genie_robot.models import ModelConfig, build, code_vector_loss, mask_tokens, token_loss
from genie_robot.models.config import EMBED_INITS
from genie_robot.reference import sha256

STAGES = ("tokenizer", "lam", "dynamics")


def to_unit(frames_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [B, T, C, H, W] -> float in [0, 1] on `device`."""
    return frames_u8.to(device, non_blocking=True).to(torch.get_default_dtype()).div_(255.0)


class Stage:
    """Interface: `model` to train, `loss` per micro-batch, `evaluate` on a fixed batch."""

    name: str
    model: nn.Module
    tokens_per_clip: int
    lineage: dict[str, str]  # digests of the frozen checkpoints this stage depends on
    # The same checkpoints' digests as lineages recorded them before `weights_digest` hashed only a
    # LAM's codes: a checkpoint naming these still matches.
    legacy_lineage: dict[str, str] = {}

    def loss(self, model: nn.Module, frames_u8: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, frames_u8: torch.Tensor) -> tuple[dict[str, float], dict[str, torch.Tensor],
                                                                          torch.Tensor]:
        """Metrics, pictures, and the code ids used (for codebook usage over a whole split)."""
        raise NotImplementedError

    def probe(self, ids: torch.Tensor, actions: dict[str, torch.Tensor]) -> dict[str, float]:
        """Metrics of `evaluate`'s code ids against the data's real actions (never trained on)."""
        return {}


class TokenizerStage(Stage):
    name = "tokenizer"

    def __init__(self, cfg: ModelConfig, device: torch.device, train_cfg):
        self.device, self.model, self.lineage = device, build(cfg, "tokenizer"), {}
        self.tokens_per_clip = cfg.frames * cfg.tokens_per_frame()
        if train_cfg.tokenizer_codes_frozen:
            if not (train_cfg.init_from or train_cfg.resume):
                raise CheckpointError("train.tokenizer_codes_frozen=true keeps the codes of a trained tokenizer: set "
                                      "train.init_from=<its checkpoint, run directory or reference name>")
            self.model.freeze_codes()

    def loss(self, model, frames_u8):
        x = to_unit(frames_u8, self.device)
        out = model(x)
        mse = F.mse_loss(out.recon, x)
        return mse + out.vq.loss, {"mse": mse.item(), "vq_loss": out.vq.loss.item(),
                                   "perplexity": out.vq.perplexity.item(), "codebook_usage": out.vq.usage.item()}

    @torch.no_grad()
    def evaluate(self, model, frames_u8):
        x = to_unit(frames_u8, self.device)
        out = model(x)
        used = out.vq.indices.unique().numel()
        clip_psnr = psnr(out.recon.flatten(1, 2), x.flatten(1, 2), peak=1.0)  # one MSE over each whole clip
        return ({"psnr": clip_psnr.mean().item(), "codes_used": float(used),
                 "perplexity": out.vq.perplexity.item()},
                {"reconstruction": torch.cat([x[0], out.recon[0].clamp(0, 1)], dim=-1)}, out.vq.indices)


def relative_weights(diff: torch.Tensor, floor: float) -> torch.Tensor:
    """`model.lam.relative_loss`: a weight per transition from the clips' frame differences diff [B, T-1, C, H, W],
    1 / (its mean squared frame change + floor x the batch's mean), normalized to mean 1 [B, T-1]. A transition's
    error then counts relative to how much its frame changed, so a small motion's direction costs as much to get
    wrong as a large one's; the floor keeps a still transition's weight finite (at most 1 / floor times the
    batch's mean)."""
    energy = diff.float().pow(2).mean((2, 3, 4))
    weight = 1 / (energy + floor * energy.mean()).clamp(min=1e-12)
    return weight / weight.mean()


class LAMStage(Stage):
    name = "lam"

    def __init__(self, cfg: ModelConfig, device: torch.device, train_cfg):
        self.device, self.cfg, self.model, self.lineage = device, cfg, build(cfg, "lam"), {}
        self.tokens_per_clip = cfg.frames * cfg.tokens_per_frame()
        if train_cfg.lam_codes_frozen:
            if not (train_cfg.init_from or train_cfg.resume):
                raise CheckpointError("train.lam_codes_frozen=true keeps the codes of a trained LAM: set "
                                      "train.init_from=<its checkpoint or run directory>")
            self.model.freeze_codes()
        self.tokenizer = None
        if cfg.lam.input == "tokens":
            self.tokenizer, digest, _ = load_frozen(train_cfg.tokenizer_ckpt, "tokenizer", cfg, device)
            self.lineage["tokenizer"] = digest

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.encode(x) if self.tokenizer is not None else x

    def loss(self, model, frames_u8):
        x = to_unit(frames_u8, self.device)
        inp = self._input(x)
        out = model(inp)
        if self.tokenizer is None:
            err = (out.recon - x[:, 1:]).pow(2)
            diff = x[:, 1:] - x[:, :-1]
            if self.cfg.lam.change_weight > 0:
                # Unchanged pixels keep weight 1 (copying them stays rewarded); changed ones weigh more.
                change = diff.abs().mean(2, keepdim=True)  # [B, T-1, 1, H, W]
                change = change / change.mean((3, 4), keepdim=True).clamp(min=1e-4)
                err = err * (1 + self.cfg.lam.change_weight * change)
            if self.cfg.lam.relative_loss > 0:
                err = err * relative_weights(diff, self.cfg.lam.relative_loss)[..., None, None, None]
            rec = err.mean()
        else:
            rec = F.cross_entropy(out.recon.flatten(0, 2), inp[:, 1:].flatten())
        return rec + out.vq.loss, {"recon_loss": rec.item(), "vq_loss": out.vq.loss.item(),
                                   "perplexity": out.vq.perplexity.item(), "codebook_usage": out.vq.usage.item()}

    @torch.no_grad()
    def evaluate(self, model, frames_u8):
        """Besides PSNR with the inferred actions, the question that matters: do the actions help?

        Next-frame PSNR of the decoder with a random action per transition, with the best of
        all actions per transition (what the codes could say at most), and of copying the
        previous frame. A LAM whose codes carry the motion beats random and copy by a margin.
        """
        x = to_unit(frames_u8, self.device)
        inp = self._input(x)
        lam = unwrap(model)
        out = lam(inp)
        metrics = {"actions_used": float(out.actions.unique().numel()), "perplexity": out.vq.perplexity.item()}
        images = {}
        if self.tokenizer is None:
            target = x[:, 1:]  # every metric: mean over transitions of the next frame's PSNR
            random = torch.randint(0, lam.vq.num_codes, out.actions.shape, device=x.device,
                                   generator=torch.Generator(device=x.device).manual_seed(0))
            each = torch.stack([psnr(lam.decode_ids(inp, torch.full_like(out.actions, a)), target, peak=1.0)
                                for a in range(lam.vq.num_codes)])  # [A, B, T-1]
            metrics.update(
                psnr=psnr(out.recon, target, peak=1.0).mean().item(),
                psnr_random_actions=psnr(lam.decode_ids(inp, random), target, peak=1.0).mean().item(),
                psnr_best_action=each.max(0).values.mean().item(),
                psnr_copy_previous_frame=psnr(x[:, :-1], target, peak=1.0).mean().item())
            images["next_frame"] = torch.cat([x[0, 1:], out.recon[0]], dim=-1)
        else:
            metrics["token_accuracy"] = (out.recon.argmax(-1) == inp[:, 1:]).float().mean().item()
        return metrics, images, out.actions

    def probe(self, ids, actions):
        """NMI between the codes and k-means clusters of the real `world_vector` (the arm's motion)."""
        if "world_vector" not in actions:
            return {}
        wv = actions["world_vector"][:, : ids.shape[1]].reshape(-1, actions["world_vector"].shape[-1])
        clusters = kmeans(standardize(wv.double().numpy()), self.cfg.lam.num_actions)
        return {"nmi_world_vector": nmi(ids.flatten().cpu().numpy(), clusters)}


class DynamicsStage(Stage):
    name = "dynamics"

    def __init__(self, cfg: ModelConfig, device: torch.device, train_cfg):
        self.device, self.cfg = device, cfg
        self.model = build(cfg, "dynamics")
        self.tokens_per_clip = cfg.frames * cfg.tokens_per_frame()
        self.tokenizer, tok_digest, _ = load_frozen(train_cfg.tokenizer_ckpt, "tokenizer", cfg, device)
        self.lam, lam_digest, self.lam_path = load_frozen(train_cfg.lam_ckpt, "lam", cfg, device)
        self.lineage = {"tokenizer": tok_digest, "lam": lam_digest}
        self.legacy_lineage = {"lam": sha256(self.lam_path / "model.safetensors")}
        if cfg.dynamics.target == "code_vector":  # saved with the weights; a resumed run's are the same
            self.model.set_codes(self.tokenizer.vq.codebook)
        share = EMBED_INITS[cfg.dynamics.embed_init]
        if share > 0:  # a resumed run's checkpoint overwrites this
            self.model.init_embeddings_from(self.tokenizer.vq.codebook, seed=train_cfg.seed, share=share)
        if cfg.lam.input == "tokens":
            lam_meta = json.loads((self.lam_path / "trainer.json").read_text())
            if lam_meta.get("lineage", {}).get("tokenizer") != tok_digest:
                raise CheckpointError(
                    f"LAM checkpoint {train_cfg.lam_ckpt} was trained on another tokenizer than "
                    f"{train_cfg.tokenizer_ckpt}")

    @torch.no_grad()
    def targets(self, clips: torch.Tensor | dict) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """(frames in [0, 1], their tokens, the latent actions between them). `clips` is uint8 frames, or a
        batch of tokenized clips (data.tokens: {"tokens", "actions"}), whose frames are not at hand (None)."""
        if isinstance(clips, dict):
            return None, clips["tokens"].to(self.device), clips["actions"].to(self.device)
        x = to_unit(clips, self.device)
        tokens = self.tokenizer.encode(x)
        actions = self.lam.infer_actions(tokens if self.cfg.lam.input == "tokens" else x)
        return x, tokens, actions

    @torch.no_grad()
    def _teacher(self, x: torch.Tensor, tokens: torch.Tensor, actions: torch.Tensor,
                 mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`model.dynamics.lam_teacher`: tokens and scored positions with the LAM decoder's targets.

        For a drawn share of the clips, the first masked frame k becomes the LAM decoder's
        prediction of frame k from real frame k-1 and the inferred action k-1, tokenized after the
        real frames 0..k-1 (the tokenizer is causal in time, so those keep their tokens). Only frame
        k is scored in those clips: the frames after it would be predicted from a past that is
        half teacher, half real. The other clips keep their real tokens and Genie's loss.
        """
        b, t = tokens.shape[:2]
        first = mask.any(-1).to(torch.uint8).argmax(1)  # clean_past: frames before it are whole
        teach = torch.rand(b, device=tokens.device) < self.cfg.dynamics.lam_teacher
        if not teach.any():
            return tokens, mask
        frame = torch.arange(t, device=tokens.device)[None]
        xt = x[teach]
        pred = self.lam.decode_ids(xt, actions[teach])  # frames 1..T-1, each from the real frame before
        later = (frame >= first[teach, None])[:, 1:, None, None, None]
        tokens = tokens.clone()
        tokens[teach] = self.tokenizer.encode(torch.cat([xt[:, :1], torch.where(later, pred, xt[:, 1:])], dim=1))
        return tokens, mask & ~(teach[:, None] & (frame > first[:, None]))[:, :, None]

    def loss(self, model, clips):
        x, tokens, actions = self.targets(clips)
        d = self.cfg.dynamics
        inp, mask = mask_tokens(tokens, self.model.mask_id, d.mask_rate_min, d.mask_rate_max, masking=d.masking)
        scored = mask
        if d.lam_teacher > 0:
            if x is None:
                raise ValueError("model.dynamics.lam_teacher > 0 needs the clips' frames: train from data.path, "
                                 "not data.tokens")
            tokens, scored = self._teacher(x, tokens, actions, mask)
            inp = tokens.masked_fill(mask, self.model.mask_id)
        soft = None
        if d.target != "code_vector" and d.code_smoothing_tokens == "changed":
            # the code differs from the frame before's (frame 0 is never masked)
            soft = (tokens != torch.cat([tokens[:, :1], tokens[:, :-1]], dim=1))[scored]
        loss, metrics = dynamics_loss(model, self.model, d, self.tokenizer.vq.codebook, inp, actions, tokens[scored],
                                      scored, soft)
        return loss, {k: v.item() for k, v in metrics.items()}

    @torch.no_grad()
    def evaluate(self, model, frames_u8):
        x, tokens, actions = self.targets(frames_u8)
        d = self.cfg.dynamics
        gen = torch.Generator(device=tokens.device).manual_seed(0)  # the same masks at every evaluation
        inp, mask = mask_tokens(tokens, self.model.mask_id, d.mask_rate_min, d.mask_rate_max, generator=gen,
                                masking=d.masking)
        acc = (model(inp, actions, mask).argmax(-1) == tokens[mask]).float().mean().item()
        # Next frame from the past and the action alone: the last frame fully masked, one pass.
        last = tokens.clone()
        last[:, -1] = self.model.mask_id
        pred = tokens.clone()
        pred[:, -1] = model(last, actions)[:, -1].argmax(-1)
        # The same with random actions: while training, whether the model uses its actions at all
        # (the two accuracies equal: it ignores them) is visible here, next to copying the last frame.
        random = torch.randint(0, self.cfg.lam.num_actions, actions.shape, device=actions.device, generator=gen)
        random_right = model(last, random)[:, -1].argmax(-1) == tokens[:, -1]
        right = pred[:, -1] == tokens[:, -1]
        # Where the frame changes (the arm's tokens, about 40% on the sim), copying scores nothing:
        # what the model gets right there it got from the action and the motion so far.
        changed = tokens[:, -1] != tokens[:, -2]
        copy_acc = 1 - changed.float().mean().item()
        frames = self.tokenizer.decode(pred[:1, -2:])[0]
        truth = self.tokenizer.decode(tokens[:1, -2:])[0]
        image = torch.cat([x[0, -2:], truth, frames], dim=-1)  # [2, C, H, 3W]: real | tokenized | predicted
        return ({"masked_accuracy": acc, "next_frame_token_accuracy": right.float().mean().item(),
                 "next_frame_token_accuracy_random_actions": random_right.float().mean().item(),
                 "next_frame_token_accuracy_copy_previous": copy_acc,
                 "next_frame_changed_token_accuracy": right[changed].float().mean().item(),
                 "next_frame_changed_token_accuracy_random_actions": random_right[changed].float().mean().item(),
                 "next_frame_psnr": psnr(frames[-1:], x[0, -1:], peak=1.0).mean().item()},
                {"next_frame": image}, actions)


def dynamics_loss(model: nn.Module, raw: nn.Module, d, codebook_VC: torch.Tensor, inp: torch.Tensor,
                  actions: torch.Tensor, target: torch.Tensor, scored: torch.Tensor | None = None,
                  soft: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The dynamics stage's loss at the `scored` positions (`target`: their tokens) and its metrics, as tensors.

    `model` runs the forward (wrapped for DDP/FSDP or not), `raw` is the DynamicsModel itself (its code buffers).
    `scored` None scores every position (`target` then all tokens, flattened): what the memory estimate runs
    (genie_robot.training.memory), on fake tensors where a boolean mask's count is unknown. `soft`: the tokens
    that get soft targets when `code_smoothing` > 0 (None: all of them).
    """
    if d.target == "code_vector":
        vectors, groups = model(inp, actions, scored, vectors=True)
        if scored is None:
            vectors, groups = vectors.flatten(0, 2), None if groups is None else groups.flatten(0, 2)
        loss = code_vector_loss(vectors, target, raw.codes)
        acc = (F.linear(vectors.detach(), raw.codes).argmax(-1) == target).float().mean()
        if groups is None:
            return loss, {"masked_accuracy": acc}
        true_group = raw.code_group[target]
        group_loss = F.cross_entropy(groups, true_group)
        group_acc = (groups.detach().argmax(-1) == true_group).float().mean()
        return loss + group_loss, {"masked_accuracy": acc, "code_vector_loss": loss, "group_loss": group_loss,
                                   "group_accuracy": group_acc}
    logits = model(inp, actions, scored)
    if scored is None:
        logits = logits.flatten(0, 2)
    loss = token_loss(logits, target, codebook_VC, d.code_smoothing, soft)
    return loss, {"masked_accuracy": (logits.argmax(-1) == target).float().mean()}


def make_stage(name: str, cfg: ModelConfig, device: torch.device, train_cfg) -> Stage:
    if name not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got '{name}'")
    return {"tokenizer": TokenizerStage, "lam": LAMStage, "dynamics": DynamicsStage}[name](cfg, device, train_cfg)
