"""Vector quantization with a straight-through estimator, usage tracking and dead-code restarts.

Codes collapsing onto a few entries is the usual way a VQ-VAE (and a latent action model
with 8 codes) fails silently, so every forward reports perplexity and the fraction of the
codebook in use, and codes unused for a while are re-seeded from the current batch's
encoder outputs. Vectors are L2-normalised before lookup (cosine similarity), which keeps
codebook and encoder on one scale and makes collapse rarer. `normalize=False` keeps their length
(nearest code by Euclidean distance): the LAM's option for latents whose length is the motion's size,
where a "no motion" code near the origin has no direction for a cosine to find (docs/MODELS.md).

A tiny codebook (the LAM's 8 actions) can still settle on a few codes that restarts do not
dislodge: restarted codes are abandoned again within steps. For that case `entropy_weight`
adds MAGVIT-v2's entropy penalty on soft assignments: each vector should be confidently one
code (low per-sample entropy) while the batch as a whole spreads over all codes (high entropy
of the mean assignment). Under DDP the mean is taken over the global batch, so two processes
optimise the same objective as one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import nn


@dataclass
class VQOutput:
    z_q: torch.Tensor  # quantized, straight-through: gradients flow to the encoder
    indices: torch.Tensor  # [...] code ids
    loss: torch.Tensor  # codebook + beta * commitment (+ entropy_weight * entropy penalty)
    perplexity: torch.Tensor  # exp(entropy) of this batch's code histogram
    usage: torch.Tensor  # fraction of codes used recently (EMA)


@torch.no_grad()
def _track_usage(q: nn.Module, indices: torch.Tensor) -> torch.Tensor:
    """Perplexity of this batch's code histogram; in training the histogram also updates the
    quantizer's `ema_usage` (summed over ranks, so buffers stay equal)."""
    counts = torch.bincount(indices.flatten(), minlength=q.num_codes).float()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(counts)
    probs = counts / counts.sum().clamp(min=1)
    perplexity = torch.exp(-(probs * torch.log(probs.clamp(min=1e-10))).sum())
    if q.training:
        q.ema_usage.mul_(q.usage_decay).add_(probs, alpha=1 - q.usage_decay)
    return perplexity


class VectorQuantizer(nn.Module):
    def __init__(self, num_codes: int, code_dim: int, beta: float = 0.25, usage_decay: float = 0.95,
                 dead_fraction: float = 0.03, entropy_weight: float = 0.0, entropy_temperature: float = 0.1,
                 normalize: bool = True):
        """`dead_fraction`: a code is dead when its EMA share falls below this fraction of uniform use.
        `entropy_temperature`: softmax temperature on the similarities of the entropy penalty (`_similarity`).
        `normalize`: match on direction (cosine, L2-normalized vectors) or, if False, on Euclidean distance."""
        super().__init__()
        self.num_codes, self.code_dim, self.beta, self.normalize = num_codes, code_dim, beta, normalize
        self.entropy_weight, self.entropy_temperature = entropy_weight, entropy_temperature
        self.usage_decay, self.dead_fraction = usage_decay, dead_fraction
        self.codebook = nn.Parameter(self._unit(torch.randn(num_codes, code_dim)))
        self.register_buffer("ema_usage", torch.full((num_codes,), 1.0 / num_codes))
        # Codes start as random encoder outputs of the first training batch, not random vectors:
        # at initialization the encoder's outputs occupy a small cone, which random codes miss.
        self.register_buffer("initialized", torch.tensor(False))

    def _unit(self, v: torch.Tensor) -> torch.Tensor:
        return F.normalize(v, dim=-1) if self.normalize else v

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return self._unit(self.codebook)[indices]

    def _similarity(self, flat: torch.Tensor) -> torch.Tensor:
        """[N, K] scores of vectors [N, D] against every code, highest for the nearest: the cosine, or
        -|z - c|^2 / 2 without `normalize` (for unit vectors the cosine minus 1: the same softmax)."""
        codes = self._unit(self.codebook.float())
        if self.normalize:
            return flat @ codes.T
        return flat @ codes.T - 0.5 * (flat * flat).sum(-1, keepdim=True) - 0.5 * (codes * codes).sum(-1)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest code ids for vectors z [..., D] (no losses, no state changes)."""
        flat = self._unit(z.reshape(-1, self.code_dim).float())
        return self._similarity(flat).argmax(-1).view(z.shape[:-1])

    def forward(self, z: torch.Tensor) -> VQOutput:
        z = self._unit(z)
        if self.training and not bool(self.initialized):
            self._init_from(z.detach().reshape(-1, self.code_dim))
        indices = self.quantize(z)
        z_q = self.lookup(indices).to(z.dtype)
        loss = F.mse_loss(z_q, z.detach()) + self.beta * F.mse_loss(z, z_q.detach())
        if self.training and self.entropy_weight > 0:
            loss = loss + self.entropy_weight * self._entropy_penalty(z)
        perplexity = _track_usage(self, indices)
        if self.training:
            self._restart_dead_codes(z.detach().reshape(-1, self.code_dim))
        usage = (self.ema_usage > self.dead_fraction / self.num_codes).float().mean()
        z_q = z + (z_q - z).detach()  # straight-through estimator
        return VQOutput(z_q, indices, loss, perplexity, usage)

    def _entropy_penalty(self, z: torch.Tensor) -> torch.Tensor:
        """Mean per-sample assignment entropy minus the entropy of the batch's mean assignment."""
        flat = self._unit(z.reshape(-1, self.code_dim).float())
        log_p = F.log_softmax(self._similarity(flat) / self.entropy_temperature, dim=-1)
        per_sample = -(log_p.exp() * log_p).sum(-1).mean()
        mean_p = log_p.exp().sum(0)
        count = torch.tensor(float(log_p.shape[0]), device=z.device)
        if dist.is_available() and dist.is_initialized():
            mean_p = dist_nn.all_reduce(mean_p)  # differentiable: the global batch's assignment
            dist.all_reduce(count)
        mean_p = mean_p / count
        return per_sample + (mean_p * torch.log(mean_p.clamp(min=1e-10))).sum()

    @staticmethod
    def _gathered(z_flat: torch.Tensor) -> torch.Tensor:
        """All ranks' vectors in rank order: restarts draw from the global batch, as one process would."""
        if not (dist.is_available() and dist.is_initialized()):
            return z_flat
        parts = [torch.empty_like(z_flat) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, z_flat.contiguous())
        return torch.cat(parts)

    @torch.no_grad()
    def _init_from(self, z_flat: torch.Tensor) -> None:
        z_flat = self._gathered(z_flat)
        self._reseed(torch.arange(self.num_codes, device=z_flat.device), self._sample(z_flat, self.num_codes))
        self.initialized.fill_(True)

    @staticmethod
    def _sample(z_flat: torch.Tensor, n: int) -> torch.Tensor:
        """n distinct batch vectors when the batch has that many (distinct codes, no ties)."""
        if z_flat.shape[0] >= n:
            return z_flat[torch.randperm(z_flat.shape[0], device=z_flat.device)[:n]]
        return z_flat[torch.randint(0, z_flat.shape[0], (n,), device=z_flat.device)]

    @torch.no_grad()
    def _reseed(self, codes: torch.Tensor, vectors: torch.Tensor) -> None:
        # Tiny jitter only separates duplicates: larger noise would swamp the small spread of an
        # untrained encoder's outputs and make every vector pick the same code.
        new = vectors + 1e-4 * torch.randn_like(vectors)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(new, src=0)  # identical codebooks on every rank
        self.codebook.data[codes] = self._unit(new).to(self.codebook.dtype)
        self.ema_usage[codes] = 1.0 / self.num_codes

    @torch.no_grad()
    def _restart_dead_codes(self, z_flat: torch.Tensor) -> None:
        dead = (self.ema_usage < self.dead_fraction / self.num_codes).nonzero().flatten()
        if dead.numel() == 0 or self.dead_fraction <= 0:
            return
        self._reseed(dead, self._sample(self._gathered(z_flat), dead.numel()))


class BinaryFSQ(nn.Module):
    """Finite scalar quantization with two levels per dimension: TinyWorlds' LAM quantizer
    (`AlmondGod/tinyworlds`, 3 dimensions x 2 levels = 8 codes), `model.lam.quantizer=fsq`.

    Each dimension of the latent is quantized to its sign and the code id is the bits read as a
    binary number, so the latent must have log2(num_codes) dimensions. There is no codebook to
    collapse onto a few entries: the LAM standardizes its latents over the batch per transition
    (`StepwiseBatchNorm`, the role of TinyWorlds' batch-variance penalty), so each bit splits the
    batch near its middle and every code stays reachable without restarts or an entropy penalty.
    Gradients pass straight through a tanh of the latent. `margin_weight` > 0 adds a hinge that pushes
    each dimension at least 1 from the boundary at 0 (`model.lam.fsq_margin_weight`).
    """

    def __init__(self, num_codes: int, code_dim: int, usage_decay: float = 0.95, dead_fraction: float = 0.03,
                 margin_weight: float = 0.0):
        super().__init__()
        if num_codes != 2**code_dim:
            raise ValueError(f"binary FSQ codes the sign of each latent dimension: num_codes must be 2**code_dim "
                             f"({2**code_dim} for code_dim {code_dim}), got {num_codes}")
        self.num_codes, self.code_dim = num_codes, code_dim
        self.usage_decay, self.dead_fraction, self.margin_weight = usage_decay, dead_fraction, margin_weight
        self.register_buffer("bit_values", 2 ** torch.arange(code_dim), persistent=False)
        self.register_buffer("ema_usage", torch.full((num_codes,), 1.0 / num_codes))

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """The +-1 vector of each code id [...] -> [..., code_dim]."""
        bits = torch.div(indices[..., None], self.bit_values, rounding_mode="floor") % 2
        return bits.float() * 2 - 1

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        return ((z > 0).long() * self.bit_values).sum(-1)

    def forward(self, z: torch.Tensor) -> VQOutput:
        indices = self.quantize(z)
        soft = torch.tanh(z)
        z_q = soft + (self.lookup(indices).to(z.dtype) - soft).detach()  # straight-through
        perplexity = _track_usage(self, indices)
        usage = (self.ema_usage > self.dead_fraction / self.num_codes).float().mean()
        loss = self.margin_weight * F.relu(1 - z.abs()).mean() if self.margin_weight > 0 else z.new_zeros(())
        return VQOutput(z_q, indices, loss, perplexity, usage)


class MergedCodes(nn.Module):
    """A quantizer whose codes are merged into fewer actions, `model.lam.quantizer_codes` > `num_actions`.

    With 8 binary-FSQ codes on the sim data the still fifth of the transitions sits mid-way along one latent
    bit and is split over two codes, leaving six for the motions (docs/MODELS.md, "Six LAM recipes"). With
    16 codes there is room for every motion, and codes that mean the same thing can be found afterwards by
    what the decoder draws for them (`genie_robot.training.merge.merge_codes`): this module then maps each
    code to its action (`code_action`), and each action back to one code (`action_code`, its most used),
    whose vector stands for the action wherever one is decoded, in training too, so the decoder learns
    num_actions actions and no more. Until `set_merge` (or loading a merged checkpoint) it refuses to run:
    a code has no action yet.
    """

    def __init__(self, inner: nn.Module, num_actions: int, usage_decay: float = 0.95, dead_fraction: float = 0.03):
        super().__init__()
        if inner.num_codes <= num_actions:
            raise ValueError(f"merging needs more codes than actions, got {inner.num_codes} codes for {num_actions}")
        self.inner, self.num_codes, self.code_dim = inner, num_actions, inner.code_dim
        self.usage_decay, self.dead_fraction = usage_decay, dead_fraction
        self.register_buffer("code_action", torch.full((inner.num_codes,), -1, dtype=torch.long))
        self.register_buffer("action_code", torch.full((num_actions,), -1, dtype=torch.long))
        self.register_buffer("ema_usage", torch.full((num_actions,), 1.0 / num_actions))
        self.merged = False
        self.register_load_state_dict_post_hook(lambda module, _incompatible: module._refresh())

    def _refresh(self) -> None:
        self.merged = bool((self.code_action >= 0).all() and (self.action_code >= 0).all())

    @torch.no_grad()
    def set_merge(self, code_action: torch.Tensor, action_code: torch.Tensor) -> None:
        """code_action [codes]: each code's action; action_code [actions]: the code that stands for each."""
        q, a = self.inner.num_codes, self.num_codes
        code_action, action_code = torch.as_tensor(code_action).long(), torch.as_tensor(action_code).long()
        if code_action.shape != (q,) or action_code.shape != (a,):
            raise ValueError(f"a merge of {q} codes into {a} actions needs code_action of shape ({q},) and "
                             f"action_code of shape ({a},), got {tuple(code_action.shape)} and "
                             f"{tuple(action_code.shape)}")
        if code_action.min() < 0 or code_action.max() >= a or action_code.min() < 0 or action_code.max() >= q:
            raise ValueError(f"code_action must name actions 0-{a - 1} and action_code codes 0-{q - 1}")
        if not torch.equal(code_action[action_code], torch.arange(a)):
            raise ValueError("each action's standing code must be one of its own codes: code_action[action_code] "
                             f"is {code_action[action_code].tolist()}, expected 0-{a - 1} in order")
        self.code_action.copy_(code_action)
        self.action_code.copy_(action_code)
        self._refresh()

    def _check(self) -> None:
        if not self.merged:
            raise RuntimeError(
                f"this LAM's {self.inner.num_codes} quantizer codes are not merged into {self.num_codes} actions: "
                f"train the codes as a LAM of model.lam.num_actions={self.inner.num_codes} "
                "model.lam.quantizer_codes=0, then merge them with scripts/merge_actions.py (docs/MODELS.md)")

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """The vector of each action id [...] -> [..., code_dim]: its standing code's."""
        self._check()
        return self.inner.lookup(self.action_code[indices])

    def forward(self, z: torch.Tensor) -> VQOutput:
        self._check()
        out = self.inner(z)
        actions = self.code_action[out.indices]
        # Straight-through onto the action's standing code (the inner z_q's gradient path is kept).
        z_q = out.z_q + (self.inner.lookup(self.action_code[actions]).to(out.z_q.dtype) - out.z_q).detach()
        perplexity = _track_usage(self, actions)
        usage = (self.ema_usage > self.dead_fraction / self.num_codes).float().mean()
        return VQOutput(z_q, actions, out.loss, perplexity, usage)
